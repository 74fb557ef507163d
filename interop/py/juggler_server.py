"""A Python hat-juggler server (0.7.6, or 0.6.26 run from target/interop-venv06: the same
API) for Tether's juggler client to talk to.

Usage: juggler_server.py. Prints `READY <port>` once it listens on 127.0.0.1, serves until
stdin closes. Requests: add {a, b} -> a + b; fail -> raises Exception('boom');
notify_me N -> notify('hello', {'x': N}) then null; set_state {path, value} -> sets the
connection's state (autoflush 0). Empty names are echoed by hat-juggler itself.
"""
import asyncio
import socket
import sys

from hat import juggler


async def request_cb(conn, name, data):
    if name == 'add':
        return data['a'] + data['b']
    if name == 'fail':
        raise Exception('boom')
    if name == 'notify_me':
        await conn.notify('hello', {'x': data})
        return None
    if name == 'set_state':
        conn.state.set(data['path'], data['value'])
        return None
    raise Exception(f'unknown request {name}')


async def main():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    server = await juggler.listen('127.0.0.1', port, request_cb=request_cb, autoflush_delay=0)
    print(f"READY {port}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.async_close()


asyncio.run(main())
