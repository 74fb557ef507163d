"""Python vsoa.lookup against a Tether position server whose application answers queries
itself (PositionServer::on_query, the seed's Position(onquery)).

Usage: position_query.py POS_PORT. The Rust side answers `myserver` with 127.0.0.1:3005,
leaves `tabled` to its table (127.0.0.1:4000) and denies `hidden` (also in the table).
Prints OK lines, then DONE.
"""
import sys

import vsoa
from common import check


def ok(cond, what):
    check(cond, what)
    print(f"OK {what}", flush=True)


vsoa.pos('127.0.0.1', int(sys.argv[1]))
got = vsoa.lookup('myserver')
ok(got == ('127.0.0.1', 3005), f"the callback's answer: {got}")
got = vsoa.lookup('tabled')
ok(got == ('127.0.0.1', 4000), f"the table's answer: {got}")
got = vsoa.lookup('hidden')
ok(got is None, f"a name the callback denies: {got}")
print("DONE", flush=True)
