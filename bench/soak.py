#!/usr/bin/env python3
"""A soak of `tether serve`: mixed load from real Python vsoa clients, faults injected
periodically, the server's memory and descriptors sampled every few seconds.

Usage: bench/soak.py [--duration SECS] [--tether PATH] [--out FILE.jsonl] [--svg FILE.svg]
(run with the interop venv's Python: target/interop-venv/bin/python; bench/soak.sh does).

Load, all the time, from real peers and peers framed from the wire:
  * callers, one after another, each reply checked, latency measured: a Python vsoa client
    (/echo), a hat-juggler client over the gateway (/echo), a clever-show peer framed as
    the original messaging.py (echo), a socket_protocol peer (read requests);
  * a publisher: numbered publishes through SET /publish, and two subscribers (a Python
    vsoa client, and the hat-juggler client subscribed over the gateway) that check each
    number arrives once and in order; at the end each must have every publish.
Faults, one kind every few seconds, in turn: connections with random bytes on every TCP
listener, connections reset by the hundred, random datagrams to the quick port, a
subscriber that never reads (replaced by a new one each time), slowloris connections.
Every sample is a JSON line; the last line is the summary. Loopback only, bounded.
"""
import argparse
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time

import vsoa

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'interop', 'py'))
from wire_peers import clever_echo, sp_echo  # noqa: E402

PW = 'soak'


def start_server(tether, files):
    cmd = [tether, 'serve', '--listen', '127.0.0.1:0', '--gateway', '127.0.0.1:0',
           '--clever-show', '127.0.0.1:0', '--socket-protocol', '127.0.0.1:0',
           '--password', PW, '--files-root', files]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ports = {}
    for key, prefix in [('vsoa', 'tether: VSOA server on'), ('gateway', 'tether: gateway on'),
                        ('clever', 'tether: clever-show on'), ('sp', 'tether: socket_protocol on')]:
        line = proc.stdout.readline()
        if not line.startswith(prefix):
            raise SystemExit(f"unexpected line {line!r}")
        ports[key] = int(re.search(r'(\d+)\D*$', line).group(1))
    return proc, ports


def client(port):
    c = vsoa.Client()
    if c.connect(f'vsoa://127.0.0.1:{port}', passwd=PW, timeout=10) != 0:
        raise SystemExit("the good client cannot connect")
    threading.Thread(target=c.run, daemon=True).start()
    return c


KINDS = ('vsoa', 'juggler', 'clever', 'sp')


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = {k: 0 for k in KINDS}
        self.latencies = {k: [] for k in KINDS}
        self.errors = 0
        self.last_error = None
        self.published = 0
        self.received = {}
        self.expected = {}
        self.lost = 0
        self.duplicated = 0
        self.faults = 0
        self.juggler_ready = threading.Event()

    def take(self):
        with self.lock:
            out = self.calls, {k: sorted(v) for k, v in self.latencies.items()}
            self.calls = {k: 0 for k in KINDS}
            self.latencies = {k: [] for k in KINDS}
            return out

    def call(self, kind, dt, wrong):
        with self.lock:
            if wrong:
                self.errors += 1
                self.last_error = wrong
            else:
                self.calls[kind] += 1
                self.latencies[kind].append(dt)

    def numbered(self, who, n):
        with self.lock:
            self.received[who] = self.received.get(who, 0) + 1
            want = self.expected.get(who, 0)
            if n < want:
                self.duplicated += 1
            elif n > want:
                self.lost += n - want
            self.expected[who] = max(want, n + 1)


def caller(port, stats, stop):
    c = client(port)
    i = 0
    while not stop.is_set():
        t = time.perf_counter()
        header, reply, err = c.fetch('/echo', payload={'param': {'i': i}}, timeout=10)
        ok = err == 0 and header is not None and header.status == 0 and reply.param == {'i': i}
        stats.call('vsoa', time.perf_counter() - t, None if ok else f"vsoa /echo {i}: {err}")
        i += 1


def wire_caller(kind, echo):
    def run(port, stats, stop):
        s = socket.create_connection(('127.0.0.1', port), timeout=10)
        i = 0
        while not stop.is_set():
            t = time.perf_counter()
            try:
                wrong = echo(s, i)
            except (OSError, ValueError) as e:
                stats.call(kind, 0, f"{kind} {i}: {e!r}")
                return
            stats.call(kind, time.perf_counter() - t, wrong)
            i += 1
        s.close()
    return run


def juggler_client(port, stats, stop):
    """A hat-juggler client: subscribed to /soak/ over the gateway, calling /echo."""
    import asyncio
    from hat import juggler

    async def run():
        client = await juggler.connect(
            f'ws://127.0.0.1:{port}/ws',
            notify_cb=lambda _c, name, data: stats.numbered('juggler', data['n']))
        await asyncio.wait_for(client.send('subscribe', ['/soak/']), 10)
        stats.juggler_ready.set()
        i = 0
        while not stop.is_set():
            t = time.perf_counter()
            try:
                got = await asyncio.wait_for(client.send('/echo', {'j': i}), 10)
                wrong = None if got == {'j': i} else f"juggler /echo {i}: {got!r}"
            except Exception as e:
                wrong = f"juggler /echo {i}: {e!r}"
            stats.call('juggler', time.perf_counter() - t, wrong)
            i += 1
        await asyncio.sleep(1.5)  # the last publishes arrive
        await client.async_close()
    asyncio.run(run())


def publisher(port, stats, stop):
    pub = client(port)
    sub = vsoa.Client()
    if sub.connect(f'vsoa://127.0.0.1:{port}', passwd=PW, timeout=10) != 0:
        raise SystemExit("the subscriber cannot connect")
    sub.onmessage = lambda cli, url, payload, quick: stats.numbered('vsoa', payload.param['n'])
    done = threading.Event()
    sub.subscribe('/soak/', callback=lambda cli, ok: done.set(), timeout=10)
    threading.Thread(target=sub.run, daemon=True).start()
    done.wait(10)
    stats.juggler_ready.wait(10)
    n = 0
    while not stop.is_set():
        header, reply, err = pub.fetch('/publish', method='set',
                                       payload={'param': {'url': '/soak/n', 'param': {'n': n}}},
                                       timeout=10)
        with stats.lock:
            if err != 0 or header is None or header.status != 0:
                stats.errors += 1
                stats.last_error = f"/publish {n}: {err}"
            else:
                stats.published += 1
        n += 1
        time.sleep(0.001)
    time.sleep(1)  # the last publishes arrive


def garbage(ports, rng):
    for key in ('vsoa', 'gateway', 'clever', 'sp'):
        for _ in range(50):
            try:
                s = socket.create_connection(('127.0.0.1', ports[key]), timeout=2)
                s.sendall(rng.randbytes(rng.randint(1, 4096)))
                s.close()
            except OSError:
                pass


def resets(ports, rng):
    for _ in range(500):
        try:
            s = socket.create_connection(('127.0.0.1', ports['vsoa']), timeout=2)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            s.close()
        except OSError:
            pass


def datagrams(ports, rng):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(500):
        u.sendto(rng.randbytes(rng.randint(1, 1400)), ('127.0.0.1', ports['vsoa']))
    u.close()


stalled = []


def stalled_subscriber(ports, rng):
    # Connects and subscribes but never runs its loop: never reads.
    for old in stalled:
        try:
            old.close()
        except Exception:
            pass
    stalled.clear()
    c = vsoa.Client()
    if c.connect(f'vsoa://127.0.0.1:{ports["vsoa"]}', passwd=PW, timeout=10) == 0:
        c.subscribe('/soak/')
        stalled.append(c)


def slowloris(ports, rng):
    socks = []
    for key in ('vsoa', 'gateway', 'clever', 'sp'):
        for _ in range(10):
            try:
                socks.append(socket.create_connection(('127.0.0.1', ports[key]), timeout=2))
            except OSError:
                pass
    for b in b'GET / HTTP/1.1\r\nX: ':
        for s in socks:
            try:
                s.send(bytes([b]))
            except OSError:
                pass
        time.sleep(0.05)
    for s in socks:
        s.close()


FAULTS = [garbage, resets, datagrams, stalled_subscriber, slowloris]


def sample(pid):
    rss = 0
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                rss = int(line.split()[1]) * 1024
    fds = len(os.listdir(f'/proc/{pid}/fd'))
    return rss, fds


def pct(xs, q):
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1e6, 1) if xs else None


COLOURS = {'vsoa': '#2a6', 'juggler': '#36c', 'clever': '#c63', 'sp': '#939'}


def svg(samples, path):
    """Four small line charts: memory, descriptors, calls/s and p99 latency per peer."""
    one = '#2a6'
    charts = [('resident memory (MiB)', {'': [s['rss'] / 2**20 for s in samples]}),
              ('open descriptors', {'': [s['fds'] for s in samples]}),
              ('calls/s per peer', {k: [s['calls_per_s'][k] for s in samples] for k in KINDS}),
              ('p99 latency per peer (us)',
               {k: [s['p99_us'][k] or 0 for s in samples] for k in KINDS})]
    w, h, pad = 360, 150, 34
    t = [s['t'] for s in samples]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w}" height="{2 * h}" '
           'font-family="sans-serif" font-size="11">']
    for c, (title, series) in enumerate(charts):
        x0, y0 = (c % 2) * w, (c // 2) * h
        top = max(max(ys) for ys in series.values()) * 1.1 or 1
        out.append(f'<text x="{x0 + pad}" y="{y0 + 16}" font-weight="bold">{title}</text>')
        out.append(f'<line x1="{x0 + pad}" y1="{y0 + h - pad}" x2="{x0 + w - pad}" '
                   f'y2="{y0 + h - pad}" stroke="#888"/>')
        out.append(f'<text x="{x0 + 2}" y="{y0 + pad}">{top:.0f}</text>')
        out.append(f'<text x="{x0 + 2}" y="{y0 + h - pad}">0</text>')
        out.append(f'<text x="{x0 + w - pad - 40}" y="{y0 + h - pad + 14}">{t[-1]:.0f} s</text>')
        for j, (name, ys) in enumerate(series.items()):
            colour = COLOURS.get(name, one)
            pts = ' '.join(f'{x0 + pad + (ti / (t[-1] or 1)) * (w - 2 * pad):.1f},'
                           f'{y0 + h - pad - (y / top) * (h - 2 * pad):.1f}'
                           for ti, y in zip(t, ys))
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                       f'points="{pts}"/>')
            if name:
                out.append(f'<text x="{x0 + pad + 60 * j}" y="{y0 + h - 6}" '
                           f'fill="{colour}">{name}</text>')
    out.append('</svg>')
    with open(path, 'w') as f:
        f.write('\n'.join(out) + '\n')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--duration', type=float, default=600)
    ap.add_argument('--tether', default='target/release/tether')
    ap.add_argument('--out', default='bench/soak.jsonl')
    ap.add_argument('--svg', default='docs/soak.svg')
    ap.add_argument('--every', type=float, default=5.0, help='seconds between samples')
    args = ap.parse_args()
    files = f'/tmp/tether-soak-{os.getpid()}'
    proc, ports = start_server(args.tether, files)
    stats, stop = Stats(), threading.Event()
    workers = [threading.Thread(target=juggler_client, args=(ports['gateway'], stats, stop)),
               threading.Thread(target=caller, args=(ports['vsoa'], stats, stop)),
               threading.Thread(target=wire_caller('clever', clever_echo),
                                args=(ports['clever'], stats, stop)),
               threading.Thread(target=wire_caller('sp', sp_echo), args=(ports['sp'], stats, stop)),
               threading.Thread(target=publisher, args=(ports['vsoa'], stats, stop))]
    for w in workers:
        w.start()
    rng = random.Random(7)
    samples, start, k = [], time.monotonic(), 0
    next_fault = start + 2
    try:
        while time.monotonic() - start < args.duration:
            t0 = time.monotonic()
            while time.monotonic() - t0 < args.every:
                if time.monotonic() >= next_fault:
                    FAULTS[k % len(FAULTS)](ports, rng)
                    with stats.lock:
                        stats.faults += 1
                    k += 1
                    next_fault = time.monotonic() + 3
                time.sleep(0.05)
            calls, lat = stats.take()
            rss, fds = sample(proc.pid)
            s = {'t': round(time.monotonic() - start, 1), 'rss': rss, 'fds': fds,
                 'calls_per_s': {k: round(calls[k] / (time.monotonic() - t0), 1)
                                 for k in KINDS},
                 'p50_us': {k: pct(lat[k], 0.5) for k in KINDS},
                 'p99_us': {k: pct(lat[k], 0.99) for k in KINDS},
                 'published': stats.published, 'received': dict(stats.received),
                 'lost': stats.lost, 'duplicated': stats.duplicated, 'errors': stats.errors,
                 'faults': stats.faults}
            samples.append(s)
            print(json.dumps(s), flush=True)
    finally:
        stop.set()
        for w in workers:
            w.join(15)
        proc.terminate()
        proc.wait(10)
    warm = [s for s in samples if s['t'] >= 60] or samples
    base = warm[0]
    summary = {
        'summary': True, 'seconds': samples[-1]['t'], 'faults': stats.faults,
        'published': stats.published, 'received': stats.received, 'lost': stats.lost,
        'duplicated': stats.duplicated, 'errors': stats.errors, 'last_error': stats.last_error,
        'rss_after_warmup': base['rss'], 'rss_max_after_warmup': max(s['rss'] for s in warm),
        'rss_last': samples[-1]['rss'],
        'fds_after_warmup': base['fds'], 'fds_max_after_warmup': max(s['fds'] for s in warm),
        'fds_last': samples[-1]['fds'],
    }
    print(json.dumps(summary), flush=True)
    with open(args.out, 'w') as f:
        for s in samples + [summary]:
            f.write(json.dumps(s) + '\n')
    svg(samples, args.svg)
    everything = all(stats.received.get(who) == stats.published for who in ('vsoa', 'juggler'))
    ok = everything and summary['lost'] == 0 and summary['duplicated'] == 0 \
        and summary['errors'] == 0 \
        and summary['rss_max_after_warmup'] <= base['rss'] * 1.1
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
