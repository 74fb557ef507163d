"""The Python vsoa client over TLS against `tether serve --tls-cert ... [--tls-client-ca ...]`.

Usage: tls_client.py PORT CA [CERT KEY]. Prints OK when the TLS login and an echo work; with
EXPECT_FAIL=1 in the environment, prints OK when the connection is refused instead.
"""
import os
import sys
import threading

import vsoa
from common import WAIT, check

port, ca = int(sys.argv[1]), sys.argv[2]
sslopt = {'ca_cert': ca, 'hostname': 'localhost', 'load_default_certs': False}
if len(sys.argv) > 4:
    sslopt['cert'], sslopt['key'] = sys.argv[3], sys.argv[4]
c = vsoa.Client()
err = c.connect(f'vsoa://127.0.0.1:{port}', timeout=WAIT, sslopt=sslopt)
if os.environ.get('EXPECT_FAIL') == '1':
    check(err != 0, "a connection that should fail succeeded")
    print("OK", flush=True)
    sys.exit(0)
check(err == 0, f"TLS connect returned {err}")
threading.Thread(target=c.run, daemon=True).start()
header, payload, e = c.fetch('/echo', payload={'param': {'over': 'tls'}}, timeout=WAIT)
check(e == 0 and header.status == 0 and payload.param == {'over': 'tls'}, f"echo over TLS: {e}")
print("OK", flush=True)
