"""The Python hat-juggler client against Tether's gateway: 0.7.6 from target/interop-venv,
or 0.6.26 from target/interop-venv06 with JUGGLER_WS_PATH=/ws06 (same API, other wire).

Usage: [JUGGLER_WS_PATH=/ws] juggler_client.py PORT SCENARIO. Prints `OK <what>` per
check, `READY` where the Rust side must act, `FAIL: <why>` (exit 1) on a mismatch.
Scenarios:
  requests  routes, failures, empty-name echo, SET, a message over 64 KiB
  inflight  500 requests in flight at once, every answer checked
  app       an application's own request handler: add, fail, set_mine (its state is this
            connection's, flushed before the answer), notify_me, then bye (it closes us)
  notify    subscribe to /news/, print READY, expect the publish the Rust side makes
  demo      against `tether serve`: /echo, then subscribe to /demo/, READY, expect a
            publish of {"k": 1} on /demo/x
  auth      Basic auth: alice/secret gets in and is served, alice/wrong gets 401
  wss CA    over TLS: a context trusting CA (a PEM file) is served; a default verifying
            context refuses the unknown certificate
  state N   READY, then expect the mirrored state to become {"a": 3, "b": 2} after
            exactly N changes (one per state message), with no more within 0.5 s
"""
import asyncio
import os
import sys

from hat import juggler

WAIT = 10.0
WS_PATH = os.environ.get('JUGGLER_WS_PATH', '/ws')


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    print(f"OK {what}", flush=True)


async def fails(client, name, data, needle):
    try:
        got = await asyncio.wait_for(client.send(name, data), WAIT)
    except juggler.JugglerError as e:
        check(needle in str(e.data), f"{name!r} fails with {e.data!r}")
        return
    check(False, f"{name!r} should fail, answered {got!r}")


async def requests(client):
    got = await asyncio.wait_for(client.send('/echo', {'a': 1, 'u': 'čž😀'}), WAIT)
    check(got == {'a': 1, 'u': 'čž😀'}, f"/echo answered {got!r}")
    got = await asyncio.wait_for(client.send('', {'ping': 1}), WAIT)
    check(got == {'ping': 1}, f"empty name echoes, got {got!r}")
    got = await asyncio.wait_for(client.send('SET /method', None), WAIT)
    check(got == 'set', f"SET /method answered {got!r}")
    got = await asyncio.wait_for(client.send('/method', None), WAIT)
    check(got == 'get', f"/method answered {got!r}")
    await fails(client, '/fail', 1, 'status 2')
    await fails(client, '/missing', 1, 'status 3')
    await fails(client, 'nonsense', 1, 'name a route')
    await fails(client, 'subscribe', 7, 'list of URLs')
    big = 'x' * 200_000
    got = await asyncio.wait_for(client.send('/echo', big), WAIT)
    check(got == big, "a 200 000-character message both ways")


async def inflight(client):
    got = await asyncio.wait_for(
        asyncio.gather(*(client.send('/echo', {'i': i}) for i in range(500))), WAIT)
    check(got == [{'i': i} for i in range(500)], "500 requests in flight, each answered")


async def app(client, inbox):
    got = await asyncio.wait_for(client.send('add', {'a': 1, 'b': 2}), WAIT)
    check(got == 3, f"add answered {got!r}")
    await fails(client, 'fail', None, 'boom')
    got = await asyncio.wait_for(client.send('set_mine', 5), WAIT)
    check(got is None and client.state.data == {'mine': 5},
          f"the state came before the answer: {client.state.data!r}")
    got = await asyncio.wait_for(client.send('notify_me', 7), WAIT)
    name, data = await asyncio.wait_for(inbox.get(), WAIT)
    check((name, data) == ('hello', 7), f"notify {name} {data!r}")
    await asyncio.wait_for(client.send('bye', None), WAIT)
    await asyncio.wait_for(client.wait_closed(), WAIT)
    check(True, "closed by the application")


async def notify(client, inbox):
    got = await asyncio.wait_for(client.send('subscribe', ['/news/']), WAIT)
    check(got is None, "subscribed")
    print("READY", flush=True)
    name, data = await asyncio.wait_for(inbox.get(), WAIT)
    check((name, data) == ('/news/a', {'n': 1}), f"notify {name} {data!r}")
    got = await asyncio.wait_for(client.send('unsubscribe', ['/news/']), WAIT)
    check(got is None, "unsubscribed")


async def demo(client, inbox):
    got = await asyncio.wait_for(client.send('/echo', {'a': 1}), WAIT)
    check(got == {'a': 1}, f"/echo answered {got!r}")
    await asyncio.wait_for(client.send('subscribe', ['/demo/']), WAIT)
    print("READY", flush=True)
    name, data = await asyncio.wait_for(inbox.get(), WAIT)
    check((name, data) == ('/demo/x', {'k': 1}), f"notify {name} {data!r}")


async def state(client, changes, expected):
    print("READY", flush=True)
    want = {'a': 3, 'b': 2}
    deadline = asyncio.get_running_loop().time() + WAIT
    while client.state.data != want and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    check(client.state.data == want, f"state {client.state.data!r}")
    await asyncio.sleep(0.5)
    check(len(changes) == expected, f"{len(changes)} state messages, expected {expected}: {changes!r}")


async def auth(port):
    import aiohttp
    url = f'ws://127.0.0.1:{port}{WS_PATH}'
    try:
        await juggler.connect(url, auth=aiohttp.BasicAuth('alice', 'wrong'))
        check(False, "a wrong password got in")
    except aiohttp.WSServerHandshakeError as e:
        check(e.status == 401, f"wrong password refused with {e.status}")
    client = await juggler.connect(url, auth=aiohttp.BasicAuth('alice', 'secret'))
    got = await asyncio.wait_for(client.send('/echo', [1]), WAIT)
    check(got == [1], f"authenticated /echo answered {got!r}")
    await client.async_close()
    print("DONE", flush=True)


async def wss(port, cafile):
    import ssl
    import aiohttp
    url = f'wss://127.0.0.1:{port}{WS_PATH}'
    try:
        await juggler.connect(url, ssl_ctx=ssl.create_default_context())
        check(False, "an untrusted certificate was accepted")
    except aiohttp.ClientConnectorCertificateError:
        check(True, "an untrusted certificate is refused")
    client = await juggler.connect(url, ssl_ctx=ssl.create_default_context(cafile=cafile))
    got = await asyncio.wait_for(client.send('/echo', {'tls': True}), WAIT)
    check(got == {'tls': True}, f"/echo over wss answered {got!r}")
    await client.async_close()
    print("DONE", flush=True)


async def main():
    port, scenario = sys.argv[1], sys.argv[2]
    if scenario == 'auth':
        return await auth(port)
    if scenario == 'wss':
        return await wss(port, sys.argv[3])
    inbox = asyncio.Queue()
    client = await juggler.connect(f'ws://127.0.0.1:{port}{WS_PATH}',
                                   notify_cb=lambda _c, name, data: inbox.put_nowait((name, data)))
    changes = []
    client.state.register_change_cb(lambda data: changes.append(data))
    try:
        if scenario == 'requests':
            await requests(client)
        elif scenario == 'inflight':
            await inflight(client)
        elif scenario == 'app':
            await app(client, inbox)
        elif scenario == 'notify':
            await notify(client, inbox)
        elif scenario == 'demo':
            await demo(client, inbox)
        elif scenario == 'state':
            await state(client, changes, int(sys.argv[3]))
        else:
            check(False, f"unknown scenario {scenario}")
    finally:
        await client.async_close()
    print("DONE", flush=True)


asyncio.run(main())
