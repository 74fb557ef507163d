"""Captures what a real hat-juggler 0.6.26 server sends, frame by frame, for the 0.6 test
vectors of Tether's gateway (crates/tether-gateway/tests/it/vectors/juggler06.json).

Usage (in the 0.6 venv, target/interop-venv06): juggler06_capture.py. Runs the server on
127.0.0.1 with one shared state {"init": true} and autoflush 0, connects a raw aiohttp
WebSocket, and prints one JSON document: the frames sent and received at each step.
Request names: set_state {path, value} sets the shared state; notify_me N sends notify
/news/a {"n": N}. Empty and null names are echoed by hat-juggler itself.
"""
import asyncio
import json
import socket

import aiohttp
from hat import juggler
from hat import json as hat_json

WAIT = 10.0
STATE_SETS = [(['a'], 1), (['b'], [1, 2, {'c': 'ž'}]), (['a'], {'x': None}), ([], {'only': True})]


async def main():
    state = hat_json.Storage({'init': True})

    async def request_cb(conn, name, data):
        if name == 'set_state':
            state.set(data['path'], data['value'])
            return None
        if name == 'notify_me':
            await conn.notify('/news/a', {'n': data})
            return None
        raise Exception(f'unknown request {name}')

    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    server = await juggler.listen('127.0.0.1', port, request_cb=request_cb,
                                  autoflush_delay=0, state=state)
    out = {'server': 'hat-juggler 0.6.26', 'steps': []}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f'ws://127.0.0.1:{port}/ws', max_msg_size=0) as ws:
            async def receive(n):
                frames = []
                for _ in range(n):
                    msg = await asyncio.wait_for(ws.receive(), WAIT)
                    assert msg.type == aiohttp.WSMsgType.TEXT, msg
                    frames.append(msg.data)
                return frames

            out['steps'].append({'send': None, 'receive': await receive(1)})
            sends = [
                json.dumps({'type': 'request', 'id': 1, 'name': '', 'data': {'a': [1, 'ž', 2.5, None], 'big': 12345678901234567890}}),
                json.dumps({'type': 'request', 'id': 2, 'name': None, 'data': 'čž😀'}),
                json.dumps({'type': 'request', 'id': 'x', 'name': '', 'data': [{'deep': [[]]}, {}, -0.0, 1e300]}),
            ]
            for frame in sends:
                await ws.send_str(frame)
                out['steps'].append({'send': frame, 'receive': await receive(1)})
            for i, (path, value) in enumerate(STATE_SETS):
                frame = json.dumps({'type': 'request', 'id': 10 + i, 'name': 'set_state',
                                    'data': {'path': path, 'value': value}})
                await ws.send_str(frame)
                got = await receive(2)
                # The state frame and the response come from two tasks: keep the state one.
                state_frames = [f for f in got if json.loads(f)['type'] == 'state']
                out['steps'].append({'send': frame, 'set': {'path': path, 'value': value},
                                     'receive': state_frames})
            frame = json.dumps({'type': 'request', 'id': 20, 'name': 'notify_me', 'data': 1})
            await ws.send_str(frame)
            got = await receive(2)
            out['steps'].append({'send': frame, 'notify': True,
                                 'receive': [f for f in got if json.loads(f)['type'] == 'notify']})
    await server.async_close()
    print(json.dumps(out, indent=1, ensure_ascii=False))


asyncio.run(main())
