"""A Python vsoa 1.0.4 server for the Rust client to talk to.

Usage: server.py [PASSWORD [PORT]]. With PY_TLS_CERT and PY_TLS_KEY set, it serves TLS. Prints `READY <port>` once it accepts connections, then serves
until stdin closes. Routes: /echo (param and data back), /status/201 (status 201),
/publish (SET {"url","param","count","quick"}: publishes count messages, param {"i": n, ...}).
/stream/echo opens a stream that echoes what it receives.
Every datagram is echoed to its sender. Unknown URLs get Python's own answer.
"""
import os
import socket
import sys
import threading
import time

import vsoa


def free_port():
    """A port free for both TCP and UDP (the server binds both)."""
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(('127.0.0.1', 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(('127.0.0.1', port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise SystemExit("no free port")


passwd = sys.argv[1] if len(sys.argv) > 1 else ''
server = vsoa.Server({'name': 'pyserver'}, passwd=passwd)


@server.command('/echo')
def echo(cli, request, payload):
    cli.reply(request.seqno, payload)


@server.command('/status/201')
def status(cli, request, payload):
    cli.reply(request.seqno, status=201)


@server.command('/publish')
def publish(cli, request, payload):
    args = payload.param
    for i in range(args.get('count', 1)):
        server.publish(args['url'], {'param': {'i': i, 'p': args.get('param')}}, quick=args.get('quick', False))
    cli.reply(request.seqno)


@server.command('/stream/echo')
def stream_echo(cli, request, payload):
    def ondata(stream, data):
        stream.send(data)
    stream = server.create_stream(lambda s, linked: None, ondata)
    cli.reply(request.seqno, tunid=stream.tunid)


def ondata(cli, url, payload, quick):
    cli.datagram(url, payload, quick)


server.ondata = ondata

port = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] != '0' else free_port()
# TLS when asked through the environment (certificate and key in PEM files).
sslopt = None
if os.environ.get('PY_TLS_CERT'):
    sslopt = {'cert': os.environ['PY_TLS_CERT'], 'key': os.environ['PY_TLS_KEY'], 'load_default_certs': False}
threading.Thread(target=server.run, args=('127.0.0.1', port, sslopt), daemon=True).start()
deadline = time.monotonic() + 10
while True:
    try:
        socket.create_connection(('127.0.0.1', port), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise SystemExit("server did not start")
        time.sleep(0.02)
print(f"READY {port}", flush=True)
sys.stdin.read()
