"""A Python vsoa 1.0.4 robot against `tether serve --password pw`, across a server restart.

Usage: robot.py PORT. Prints `CONNECTED n` on each connection; after the second one it
checks an RPC through the new link and prints OK. The test restarts the server in between.
"""
import sys
import threading

import vsoa
from common import WAIT, check

port = int(sys.argv[1])
connected = threading.Semaphore(0)
count = 0


def onconnect(client, up, info):
    global count
    if up:
        count += 1
        print(f"CONNECTED {count}", flush=True)
        connected.release()
    else:
        print("DISCONNECTED", flush=True)


c = vsoa.Client()
c.onconnect = onconnect
c.robot(f'vsoa://127.0.0.1:{port}', passwd='pw', keepalive=0.2, conn_timeout=2.0, reconn_delay=0.1)
for n in (1, 2):
    check(connected.acquire(timeout=WAIT * 3), f"connection {n} did not come")
header, payload, err = c.fetch('/echo', payload={'param': {'after': 'restart'}}, timeout=WAIT)
check(err == 0 and header.status == 0 and payload.param == {'after': 'restart'}, f"echo after restart: {err}")
print("OK", flush=True)
