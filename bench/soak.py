#!/usr/bin/env python3
"""A soak of `tether serve`: mixed load from real Python vsoa clients, faults injected
periodically, the server's memory and descriptors sampled every few seconds.

Usage: bench/soak.py [--duration SECS] [--tether PATH] [--out FILE.jsonl] [--svg FILE.svg]
(run with the interop venv's Python: target/interop-venv/bin/python; bench/soak.sh does).

Load, all the time:
  * a caller: /echo calls one after another, each reply checked, latency measured;
  * a publisher: numbered publishes through SET /publish, and a subscriber (another
    client) that checks each number arrives once and in order.
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


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = 0
        self.latencies = []
        self.errors = 0
        self.published = 0
        self.received = 0
        self.lost = 0
        self.duplicated = 0
        self.faults = 0

    def take(self):
        with self.lock:
            out = (self.calls, sorted(self.latencies))
            self.calls, self.latencies = 0, []
            return out


def caller(port, stats, stop):
    c = client(port)
    i = 0
    while not stop.is_set():
        t = time.perf_counter()
        header, reply, err = c.fetch('/echo', payload={'param': {'i': i}}, timeout=10)
        dt = time.perf_counter() - t
        with stats.lock:
            if err != 0 or header is None or header.status != 0 or reply.param != {'i': i}:
                stats.errors += 1
            else:
                stats.calls += 1
                stats.latencies.append(dt)
        i += 1


def publisher(port, stats, stop):
    pub = client(port)
    sub = vsoa.Client()
    if sub.connect(f'vsoa://127.0.0.1:{port}', passwd=PW, timeout=10) != 0:
        raise SystemExit("the subscriber cannot connect")
    expected = [0]

    def onmessage(cli, url, payload, quick):
        n = payload.param['n']
        with stats.lock:
            stats.received += 1
            if n < expected[0]:
                stats.duplicated += 1
            elif n > expected[0]:
                stats.lost += n - expected[0]
            expected[0] = max(expected[0], n + 1)

    sub.onmessage = onmessage
    done = threading.Event()
    sub.subscribe('/soak/', callback=lambda cli, ok: done.set(), timeout=10)
    threading.Thread(target=sub.run, daemon=True).start()
    done.wait(10)
    n = 0
    while not stop.is_set():
        header, reply, err = pub.fetch('/publish', method='set',
                                       payload={'param': {'url': '/soak/n', 'param': {'n': n}}},
                                       timeout=10)
        with stats.lock:
            if err != 0 or header is None or header.status != 0:
                stats.errors += 1
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


def svg(samples, path):
    """Four small line charts: memory, descriptors, calls/s, p50/p99 latency."""
    charts = [('resident memory (MiB)', [s['rss'] / 2**20 for s in samples]),
              ('open descriptors', [s['fds'] for s in samples]),
              ('echo calls/s', [s['calls_per_s'] for s in samples]),
              ('echo p99 latency (us)', [s['p99_us'] or 0 for s in samples])]
    w, h, pad = 360, 150, 34
    t = [s['t'] for s in samples]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w}" height="{2 * h}" '
           'font-family="sans-serif" font-size="11">']
    for k, (title, ys) in enumerate(charts):
        x0, y0 = (k % 2) * w, (k // 2) * h
        top = max(ys) * 1.1 or 1
        pts = ' '.join(f'{x0 + pad + (ti / (t[-1] or 1)) * (w - 2 * pad):.1f},'
                       f'{y0 + h - pad - (y / top) * (h - 2 * pad):.1f}' for ti, y in zip(t, ys))
        out.append(f'<text x="{x0 + pad}" y="{y0 + 16}" font-weight="bold">{title}</text>')
        out.append(f'<line x1="{x0 + pad}" y1="{y0 + h - pad}" x2="{x0 + w - pad}" '
                   f'y2="{y0 + h - pad}" stroke="#888"/>')
        out.append(f'<text x="{x0 + 2}" y="{y0 + pad}">{top:.0f}</text>')
        out.append(f'<text x="{x0 + 2}" y="{y0 + h - pad}">0</text>')
        out.append(f'<text x="{x0 + w - pad - 40}" y="{y0 + h - pad + 14}">{t[-1]:.0f} s</text>')
        out.append(f'<polyline fill="none" stroke="#2a6" stroke-width="1.5" points="{pts}"/>')
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
    workers = [threading.Thread(target=caller, args=(ports['vsoa'], stats, stop)),
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
                 'calls_per_s': round(calls / (time.monotonic() - t0), 1),
                 'p50_us': pct(lat, 0.5), 'p99_us': pct(lat, 0.99),
                 'published': stats.published, 'received': stats.received,
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
        'duplicated': stats.duplicated, 'errors': stats.errors,
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
    ok = summary['lost'] == 0 and summary['duplicated'] == 0 and summary['errors'] == 0 \
        and summary['rss_max_after_warmup'] <= base['rss'] * 1.1
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
