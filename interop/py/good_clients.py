"""The good clients of the fault suite, real peers in one process, checking everything.

Usage: good_clients.py VSOA_PORT GATEWAY_PORT CLEVER_PORT SP_PORT PASSWORD N

While the test throws faults at `tether serve`:
  * a Python vsoa 1.0.4 subscriber of /p/ and a hat-juggler 0.7.6 client subscribed to /p/
    must each receive the N numbered publishes (param 0..N-1 on /p/x) exactly once and in
    order;
  * a Python vsoa caller makes N /echo calls, a hat-juggler client N/5 /echo requests,
    and a clever-show peer speaking as the original messaging.py (its frames, its
    four-character request ids, no "error-responses" header) N/5 echo requests, and a
    socket_protocol peer framed from its wire spec N/5 read requests: every reply is
    checked.
Prints READY once both subscriptions are made (the test then starts publishing), DONE at
the end, or FAIL: reason (exit 1).
"""
import asyncio
import socket
import sys
import threading
import time

import vsoa
from common import check, connect, fetch, subscribe
from hat import juggler
from wire_peers import clever_echo, sp_echo

WAIT = 60.0


def vsoa_caller(port, pw, n, errors):
    c = connect(port, pw)
    for i in range(n):
        h, p = fetch(c, '/echo', payload={'param': {'i': i}})
        if h.status != 0 or p.param != {'i': i}:
            errors.append(f"vsoa /echo {i}: status {h.status} param {p.param!r}")
            return
    print(f"OK vsoa: {n} echo calls", flush=True)


def wire_caller(what, echo):
    """n requests over one TCP connection, each answer checked by echo(sock, i)."""
    def run(port, n, errors):
        s = socket.create_connection(('127.0.0.1', port), timeout=WAIT)
        for i in range(n):
            wrong = echo(s, i)
            if wrong:
                errors.append(wrong)
                return
        s.close()
        print(f"OK {what}: {n} requests", flush=True)
    run.__name__ = what
    return run


def numbered(got, n, what, errors):
    if got != list(range(n)):
        missing = sorted(set(range(n)) - set(got))
        errors.append(f"{what}: {len(got)} publishes, missing {missing[:5]}, "
                      f"out of order or duplicated: {got[:3]}...")
    else:
        print(f"OK {what}: {n} publishes once and in order", flush=True)


def guarded(target, errors):
    """Runs a thread's work; a failure (check() exits only its thread) becomes an error."""
    def run(*args):
        try:
            target(*args)
        except BaseException as e:  # check() raises SystemExit
            errors.append(f"{target.__name__}: {e!r}")
    return run


async def main():
    vport, gport, cport, sport, pw, n = sys.argv[1:7]
    n = int(n)
    errors = []

    sub = connect(vport, pw)
    vsoa_got = []
    sub.onmessage = lambda cli, url, payload, quick: vsoa_got.append(payload.param) \
        if url == '/p/x' else errors.append(f"vsoa: publish on {url}")
    subscribe(sub, '/p/')

    jug_got = []
    client = await juggler.connect(
        f'ws://127.0.0.1:{gport}/ws',
        notify_cb=lambda _c, name, data: jug_got.append(data) if name == '/p/x'
        else errors.append(f"juggler: notify {name}"))
    check(await asyncio.wait_for(client.send('subscribe', ['/p/']), WAIT) is None,
          "juggler subscribed")
    print("READY", flush=True)

    threads = [threading.Thread(target=guarded(vsoa_caller, errors), args=(vport, pw, n, errors)),
               threading.Thread(target=guarded(wire_caller("clever-show as the original",
                                                           clever_echo), errors),
                                args=(int(cport), n // 5, errors)),
               threading.Thread(target=guarded(wire_caller("socket_protocol", sp_echo), errors),
                                args=(int(sport), n // 5, errors))]
    for t in threads:
        t.start()
    for i in range(n // 5):
        got = await asyncio.wait_for(client.send('/echo', {'j': i}), WAIT)
        check(got == {'j': i}, f"juggler /echo {i} answered {got!r}")
    print(f"OK juggler: {n // 5} echo requests", flush=True)
    deadline = time.monotonic() + WAIT
    while (len(vsoa_got) < n or len(jug_got) < n) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # anything more would be a duplicate
    for t in threads:
        await asyncio.get_running_loop().run_in_executor(None, t.join, WAIT)
    numbered(vsoa_got, n, "vsoa subscriber", errors)
    numbered(jug_got, n, "juggler subscriber", errors)
    await client.async_close()
    sub.close()
    check(not errors, "; ".join(errors))
    print("DONE", flush=True)


asyncio.run(main())
