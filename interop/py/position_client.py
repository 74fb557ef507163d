"""Python vsoa.lookup against our position service.

Usage: position_client.py POS_PORT NAME ADDR PORT. Prints OK when NAME resolves to
(ADDR, PORT) and an unknown name resolves to nothing.
"""
import sys

import vsoa
from common import check

pos_port, name, addr, port = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
vsoa.pos('127.0.0.1', pos_port)
got = vsoa.lookup(name)
check(got == (addr, port), f"lookup {name} gave {got}")
check(vsoa.lookup('nobody-by-this-name') is None, "an unknown name resolved")
print("OK", flush=True)
