"""Helpers for the Python vsoa peer scripts: checks that fail loudly, waits with timeouts."""
import sys
import threading
import time

import vsoa

WAIT = 10.0


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)


def connect(port, passwd=''):
    """A connected Python vsoa client with its loop running in a thread."""
    c = vsoa.Client()
    err = c.connect(f'vsoa://127.0.0.1:{port}', passwd=passwd, timeout=WAIT)
    check(err == 0, f"connect returned {err}")
    threading.Thread(target=c.run, daemon=True).start()
    return c


class Inbox:
    """Collects messages delivered by a callback; waits for a count with a deadline."""

    def __init__(self):
        self.items = []
        self.cond = threading.Condition()

    def put(self, item):
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def wait_for(self, n, what):
        deadline = time.monotonic() + WAIT
        with self.cond:
            while len(self.items) < n:
                left = deadline - time.monotonic()
                check(left > 0, f"{what}: got {len(self.items)} of {n}")
                self.cond.wait(left)
            return list(self.items)


def subscribe(c, urls):
    done = Inbox()
    c.subscribe(urls, callback=lambda cli, ok: done.put(ok), timeout=WAIT)
    check(done.wait_for(1, f"subscribe {urls}")[0] is True, f"subscribe {urls} failed")


def unsubscribe(c, urls):
    done = Inbox()
    c.unsubscribe(urls, callback=lambda cli, ok: done.put(ok), timeout=WAIT)
    check(done.wait_for(1, f"unsubscribe {urls}")[0] is True, f"unsubscribe {urls} failed")


def fetch(c, url, method=0, payload=None):
    header, reply, err = c.fetch(url, method=method, payload=payload, timeout=WAIT)
    check(err == 0 and header is not None, f"fetch {url}: error {err}")
    return header, reply


def publish(c, url, param=None, data_b64=None):
    """Asks `tether serve`'s /publish route to publish."""
    args = {'url': url}
    if param is not None:
        args['param'] = param
    if data_b64 is not None:
        args['data'] = data_b64
    header, reply = fetch(c, '/publish', method='set', payload={'param': args})
    check(header.status == 0, f"/publish {url}: status {header.status}")
    return reply
