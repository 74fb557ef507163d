"""A Python vsoa.Position server: knows `pyname` -> 127.0.0.1:4242, nothing else.

Prints `READY <port>` once it answers, then serves until stdin closes.
"""
import json
import socket
import sys
import threading
import time

import vsoa


def onquery(query, reply):
    if query.get('name') == 'pyname':
        reply({'addr': '127.0.0.1', 'port': 4242, 'domain': socket.AF_INET})
    else:
        reply(None)


probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe.bind(('127.0.0.1', 0))
port = probe.getsockname()[1]
probe.close()
threading.Thread(target=vsoa.Position(onquery).run, args=('127.0.0.1', port), daemon=True).start()
ask = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ask.settimeout(0.05)
deadline = time.monotonic() + 10
while True:
    ask.sendto(json.dumps({'name': 'pyname', 'domain': 2}).encode(), ('127.0.0.1', port))
    try:
        ask.recvfrom(4096)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise SystemExit("position server did not start")
print(f"READY {port}", flush=True)
sys.stdin.read()
