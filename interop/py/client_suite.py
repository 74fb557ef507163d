"""The Python vsoa 1.0.4 client against `tether serve --password pw`.

Usage: client_suite.py PORT SCENARIO. Exits 0 and prints OK, or prints FAIL: reason.
"""
import base64
import sys
import threading
import time

import vsoa
from common import WAIT, Inbox, check, connect, fetch, publish, subscribe, unsubscribe

PW = 'pw'

MATRIX_URLS = ['/', '/a', '/a/', '/ab', '/a/b', '/a/b/', '/a/b/c', '/b', '/a/bc']
MATRIX = [('/', 'YYYYYYYYY'), ('/a', '.Y.......'), ('/a/', '.YY.YYY.Y'),
          ('/a/b/', '....YYY..'), ('/a/b', '....Y....')]


def login(port):
    c = vsoa.Client()
    check(c.connect(f'vsoa://127.0.0.1:{port}', passwd=PW, timeout=WAIT) == 0, "right password")
    c.close()
    # Python reports a status-1 handshake reply as INVALID_RESPONDING (5), never 6.
    c = vsoa.Client()
    check(c.connect(f'vsoa://127.0.0.1:{port}', passwd='wrong', timeout=WAIT) == 5, "wrong password")
    c = vsoa.Client()
    check(c.connect(f'vsoa://127.0.0.1:{port}', timeout=WAIT) == 5, "missing password")


def rpc(port):
    c = connect(port, PW)
    h, p = fetch(c, '/echo', payload={'param': {'hello': 'world', 'n': [1, 2.5, None]}, 'data': b'\x00\x01\xff'})
    check(h.status == 0 and h.seqno is not None, f"status {h.status}")
    check(p.param == {'hello': 'world', 'n': [1, 2.5, None]}, f"param {p.param}")
    check(bytes(p.data) == b'\x00\x01\xff', f"data {p.data}")
    h, p = fetch(c, '/echo', method='set', payload={'param': 'str'})
    check(h.status == 0 and p.param == 'str', f"SET echo {p.param}")
    # A param that is not JSON is passed through byte for byte.
    raw = b'\x00not json\xff\xfe'
    h, p = fetch(c, '/echo', payload={'param': raw})
    check(bytes(p.param) == raw, f"raw param came back as {p.param!r}")
    h, p = fetch(c, '/nosuch')
    check(h.status == 3, f"unknown URL status {h.status}")
    # The largest payload VSOA allows: url + param + data = 262124 bytes.
    big = bytes(i % 251 for i in range(262124 - len('/echo')))
    h, p = fetch(c, '/echo', payload={'data': big})
    check(h.status == 0 and bytes(p.data) == big, "256 KiB echo")
    pong = Inbox()
    c.ping(callback=lambda cli, ok: pong.put(ok), timeout=WAIT)
    check(pong.wait_for(1, "ping")[0] is True, "ping")


def in_flight(port):
    c = connect(port, PW)
    n = 500
    replies = Inbox()
    for i in range(n):
        ok = c.call('/echo', payload={'param': {'i': i}},
                    callback=lambda cli, h, p, i=i: replies.put((i, h.status if h else None, p.param if p else None)),
                    timeout=WAIT)
        check(ok, f"call {i} not sent")
    got = replies.wait_for(n, "replies in flight")
    for i, status, param in got:
        check(status == 0 and param == {'i': i}, f"reply {i}: {status} {param}")


def matrix(port):
    pub = connect(port, PW)
    clients = []
    for pattern, row in MATRIX:
        c = connect(port, PW)
        box = Inbox()
        c.onmessage = lambda cli, url, payload, quick, box=box: box.put(url)
        subscribe(c, pattern)
        clients.append((pattern, row, c, box))
    # The list form, on one more client.
    lc = connect(port, PW)
    lbox = Inbox()
    lc.onmessage = lambda cli, url, payload, quick: lbox.put(url)
    subscribe(lc, ['/a', '/b/'])
    for url in MATRIX_URLS:
        publish(pub, url, param={'u': url})
    publish(pub, '/zz-end')
    for pattern, row, c, box in clients:
        want = [u for u, y in zip(MATRIX_URLS, row) if y == 'Y']
        n = len(want) + (1 if pattern == '/' else 0)
        got = [u for u in box.wait_for(n, f"matrix {pattern}") if u != '/zz-end']
        check(got == want, f"subscription {pattern}: got {got}, want {want}")
    # '/b/' matches '/b'; '/a' matches '/a'.
    got = lbox.wait_for(2, "list subscription")
    check(got == ['/a', '/b'], f"list form got {got}")
    # Unsubscribe one of the two, then publish both again: only '/b' arrives.
    unsubscribe(lc, '/a')
    publish(pub, '/a')
    publish(pub, '/b')
    got = lbox.wait_for(3, "after unsubscribe")
    check(got[2:] == ['/b'], f"after unsubscribe got {got}")


def order(port):
    sub = connect(port, PW)
    box = Inbox()
    sub.onmessage = lambda cli, url, payload, quick: box.put(payload.param)
    subscribe(sub, '/seq')
    pub = connect(port, PW)
    n = 2000
    done = Inbox()
    for i in range(n):
        args = {'url': '/seq', 'param': i}
        pub.call('/publish', method='set', payload={'param': args},
                 callback=lambda cli, h, p: done.put(h.status if h else None), timeout=WAIT)
    statuses = done.wait_for(n, "publish calls")
    check(all(s == 0 for s in statuses), "every /publish answered 0")
    got = box.wait_for(n, "ordered publishes")
    check(got == list(range(n)), "publishes arrive in order, none lost or duplicated")


def datagram(port):
    c = connect(port, PW)
    box = Inbox()
    c.ondata = lambda cli, url, payload, quick: box.put((url, payload.param, bytes(payload.data or b''), quick))
    check(c.datagram('/dg', {'param': {'d': 1}, 'data': b'abc'}) is not False, "datagram send")
    got = box.wait_for(1, "datagram echo")[0]
    check(got == ('/dg', {'d': 1}, b'abc', False), f"datagram echo {got}")


def binary_publish(port):
    sub = connect(port, PW)
    box = Inbox()
    sub.onmessage = lambda cli, url, payload, quick: box.put((url, payload.param, bytes(payload.data or b'')))
    subscribe(sub, '/bin/')
    publish(sub, '/bin/x', param={'v': 1}, data_b64=base64.b64encode(b'\x00\x01\x02').decode())
    got = box.wait_for(1, "binary publish")[0]
    check(got == ('/bin/x', {'v': 1}, b'\x00\x01\x02'), f"binary publish {got}")


def quick(port):
    c = connect(port, PW)
    msgs = Inbox()
    c.onmessage = lambda cli, url, payload, quick: msgs.put((url, payload.param, quick))
    subscribe(c, '/q/')
    reply = publish_quick(c, '/q/x', {'v': 1})
    check(reply.param == {'quick': True, 'sent': 1, 'dropped': 0}, f"quick publish report {reply.param}")
    got = msgs.wait_for(1, "quick publish")[0]
    check(got == ('/q/x', {'v': 1}, True), f"quick publish arrived as {got}")
    dgs = Inbox()
    c.ondata = lambda cli, url, payload, quick: dgs.put((url, payload.param, bytes(payload.data or b''), quick))
    check(c.datagram('/dq', {'param': {'d': 2}, 'data': b'xy'}, quick=True) is not False, "quick datagram send")
    got = dgs.wait_for(1, "quick datagram echo")[0]
    check(got == ('/dq', {'d': 2}, b'xy', True), f"quick datagram echo {got}")


def stream(port):
    c = connect(port, PW)
    # Echo: write through the stream opened by our server, read it all back.
    h, _ = fetch(c, '/stream/echo')
    check(h.status == 0 and h.tunid, f"/stream/echo reply {dict(h)}")
    data = bytes(i % 256 for i in range(200_000))
    got = bytearray()
    done = threading.Event()
    linked = Inbox()

    def ondata(s, chunk):
        got.extend(chunk)
        if len(got) >= len(data):
            done.set()

    st = c.create_stream(h.tunid, onlink=lambda s, up: linked.put(up), ondata=ondata, timeout=WAIT)
    check(linked.wait_for(1, "stream link")[0] is True, "stream did not link")
    sent = 0
    while sent < len(data):
        n = st.send(data[sent:sent + 65536])
        check(n and n > 0, f"stream send returned {n}")
        sent += n
    check(done.wait(WAIT), f"echo: got {len(got)} of {len(data)} bytes")
    check(bytes(got) == data, "echoed stream bytes differ")
    st.close()
    # Blob: the server writes, then closes; Python sees the unlink.
    h, _ = fetch(c, '/stream/blob', payload={'param': {'size': 100_000}})
    check(h.status == 0 and h.tunid, f"/stream/blob reply {dict(h)}")
    blob = bytearray()
    events = Inbox()
    c.create_stream(h.tunid, onlink=lambda s, up: events.put(up), ondata=lambda s, chunk: blob.extend(chunk), timeout=WAIT)
    check(events.wait_for(2, "blob stream link and close") == [True, False], "blob stream events")
    check(len(blob) == 100_000 and all(b == i % 251 for i, b in enumerate(blob)), f"blob of {len(blob)} bytes")


def relay(port):
    """Needs `tether serve --relay /r/`: this client publishes with datagrams alone."""
    sub = connect(port, PW)
    box = Inbox()
    sub.onmessage = lambda cli, url, payload, quick: box.put((url, payload.param, quick))
    subscribe(sub, '/r/')
    pub = connect(port, PW)
    n = 1000
    for i in range(n):
        check(pub.datagram('/r/py', {'param': {'i': i}}) is not False, f"datagram {i} sent")
    got = box.wait_for(n, "relayed datagrams")
    check(got == [('/r/py', {'i': i}, False) for i in range(n)],
          "every relayed datagram arrives once, in order, as a reliable publish")
    for i in range(20):
        check(pub.datagram('/r/pyq', {'param': {'i': i}}, quick=True) is not False, "quick sent")
        time.sleep(0.002)
    got = box.wait_for(n + 20, "relayed quick datagrams")[n:]
    check(got == [('/r/pyq', {'i': i}, True) for i in range(20)],
          f"quick datagrams arrive as quick publishes: {got[:3]}")


def repassword(port):
    """Against a library server whose password the Rust side changes from 'pw' to 'new'
    at READY: the client logged in before stays served, new logins need the new one."""
    before = connect(port, PW)
    print("READY", flush=True)
    deadline = time.time() + WAIT
    while True:
        c = vsoa.Client()
        if c.connect(f'vsoa://127.0.0.1:{port}', passwd='new', timeout=WAIT) == 0:
            break
        check(time.time() < deadline, "the new password never worked")
        time.sleep(0.05)
    c.close()
    print("OK the new password logs in", flush=True)
    c = vsoa.Client()
    check(c.connect(f'vsoa://127.0.0.1:{port}', passwd=PW, timeout=WAIT) == 5, "the old password still works")
    print("OK the old password is refused", flush=True)
    h, p = fetch(before, '/echo', payload={'param': {'still': 'here'}})
    check(h.status == 0 and p.param == {'still': 'here'}, f"the client from before: {h.status}")
    print("OK the client logged in before is still served", flush=True)
    print("DONE", flush=True)


def publish_quick(c, url, param):
    header, reply = fetch(c, '/publish', method='set', payload={'param': {'url': url, 'param': param, 'quick': True}})
    check(header.status == 0, f"/publish quick {url}: status {header.status}")
    return reply


SCENARIOS = {f.__name__: f for f in [login, rpc, in_flight, matrix, order, datagram, binary_publish, quick, stream, relay, repassword]}

if __name__ == '__main__':
    port, scenario = int(sys.argv[1]), sys.argv[2]
    SCENARIOS[scenario](port)
    print("OK", flush=True)
