"""Real peers on the nodes of a Tether federation (crates/tether-cli/tests/it/federation.rs).

Usage:
  federation_peer.py vsoa PORT PATTERNS_JSON     one Python vsoa client per pattern on the
                                                 node at PORT ('+'-joined patterns share one
                                                 client); READY once all subscribed
  federation_peer.py toggle PORT PATTERNS_JSON   as vsoa, and the first client unsubscribes
                                                 and resubscribes '/' every 10 ms until DUMP
  federation_peer.py stall PORT PATTERNS_JSON    one client per pattern that stops reading at
                                                 its first message (its callback never returns)
  federation_peer.py juggler PORT PATTERNS_JSON  one hat-juggler client on the gateway at
                                                 PORT subscribed to all patterns; READY
  federation_peer.py call PORT CALLS_JSON        one Python vsoa client making each call
                                                 [url, method, param] or [url, method, param,
                                                 N] (N bytes of data, i % 251) in order; prints
                                                 REPLY [url, status, param] per call, and
                                                 DATA [url, bytes back, same as sent] with N
  federation_peer.py blob PORT [URL, SIZE]       one Python vsoa client calls URL with param
                                                 {"blob": SIZE}, reads the stream it opens to
                                                 its end and checks every byte (i % 251)

Subscribers collect every message and, when stdin says `DUMP N`, wait until N messages
arrived in all (at most WAIT seconds) and 0.3 s more (so that extra copies show), then
print `MSGS {"<pattern>": [[url, param], ...]}` in arrival order, `OK dumped` and DONE.
"""
import asyncio
import json
import sys
import time

import threading

from common import WAIT, Inbox, check, connect, subscribe, unsubscribe


def wanted():
    """Blocks until stdin says `DUMP N`; returns N."""
    for line in sys.stdin:
        if line.startswith('DUMP '):
            return int(line.split()[1])
    check(False, "stdin closed before DUMP")


def vsoa_subscribers(port, patterns, toggle=False, stall=False):
    boxes = {}
    clients = []
    for key in patterns:
        box = Inbox()
        c = connect(port)
        if stall:
            c.onmessage = lambda cli, url, payload, quick: time.sleep(3600)
        else:
            c.onmessage = lambda cli, url, payload, quick, box=box: box.put([url, payload.param])
        subscribe(c, key.split('+') if '+' in key else key)
        boxes[key] = box
        clients.append(c)
    stop = threading.Event()
    toggles = [0]

    def toggler():
        while not stop.is_set():
            unsubscribe(clients[0], '/')
            time.sleep(0.01)
            subscribe(clients[0], '/')
            time.sleep(0.01)
            toggles[0] += 1

    if toggle:
        threading.Thread(target=toggler, daemon=True).start()
    print("READY", flush=True)
    total = wanted()
    deadline = time.monotonic() + WAIT
    while sum(len(b.items) for b in boxes.values()) < total and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    time.sleep(0.3)
    if toggle:
        print(f"TOGGLED {toggles[0]}", flush=True)
    print("MSGS " + json.dumps({k: b.items for k, b in boxes.items()}), flush=True)
    print("OK dumped", flush=True)
    for c in clients:
        c.close()


async def juggler_subscriber(port, patterns):
    from hat import juggler
    got = []
    client = await juggler.connect(f'ws://127.0.0.1:{port}/ws',
                                   notify_cb=lambda _c, name, data: got.append([name, data]))
    await asyncio.wait_for(client.send('subscribe', patterns), WAIT)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    total = await loop.run_in_executor(None, wanted)
    deadline = loop.time() + WAIT
    while len(got) < total and loop.time() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    print("MSGS " + json.dumps({'+'.join(patterns): got}), flush=True)
    print("OK dumped", flush=True)
    await client.async_close()


def calls(port, todo):
    c = connect(port)
    for url, method, param, *size in todo:
        payload = {'param': param}
        if size:
            payload['data'] = bytes(i % 251 for i in range(size[0]))
        header, reply, err = c.fetch(url, method=method, payload=payload, timeout=WAIT)
        check(err == 0 and header is not None, f"fetch {url}: error {err}")
        print("REPLY " + json.dumps([url, header.status, reply.param if reply else None]), flush=True)
        if size:
            back = bytes(reply.data or b'') if reply else b''
            print("DATA " + json.dumps([url, len(back), back == payload['data']]), flush=True)
    print("OK called", flush=True)
    c.close()


def blob(port, url, size):
    c = connect(port)
    header, reply, err = c.fetch(url, payload={'param': {'blob': size}}, timeout=WAIT)
    check(err == 0 and header is not None and header.status == 0, f"fetch {url}: {err} {header}")
    check(header.tunid, f"{url} opened no stream: {dict(header)}")
    print("NODE " + json.dumps(reply.param['node']), flush=True)
    got = bytearray()
    events = Inbox()
    c.create_stream(header.tunid, onlink=lambda s, up: events.put(up),
                    ondata=lambda s, chunk: got.extend(chunk), timeout=WAIT)
    check(events.wait_for(2, "stream link and close") == [True, False], "stream events")
    check(len(got) == size, f"{len(got)} bytes of {size}")
    pattern = bytes(i % 251 for i in range(251 * 256))
    for off in range(0, size, len(pattern)):
        chunk = got[off:off + len(pattern)]
        check(chunk == pattern[:len(chunk)], f"bytes differ at {off}")
    print(f"OK {size} bytes through the stream", flush=True)
    c.close()


if __name__ == '__main__':
    mode, port, arg = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    if mode in ('vsoa', 'toggle', 'stall'):
        vsoa_subscribers(port, arg, toggle=mode == 'toggle', stall=mode == 'stall')
    elif mode == 'juggler':
        asyncio.run(juggler_subscriber(port, arg))
    elif mode == 'call':
        calls(port, arg)
    elif mode == 'blob':
        blob(port, *arg)
    else:
        check(False, f"unknown mode {mode}")
    print("DONE", flush=True)
