#!/usr/bin/env bash
# Installs the pinned real peers the interop tests drive:
#   Python vsoa and hat-juggler (interop/requirements.txt) into target/interop-venv,
#   hat-juggler 0.6 (interop/requirements06.txt) into target/interop-venv06,
#   npm vsoa, @hat-open/juggler and playwright-core (interop/package-lock.json) into
#   interop/node_modules; Debian's chromium and nats-server (apt-get, as root) if missing.
# Idempotent and quick when already installed. Fails loudly with the reason.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/interop-venv"
req="$root/interop/requirements.txt"

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null; then
  echo "interop setup: $python not found; the Python peers need Python >= 3.10" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "interop setup: creating $venv"
  "$python" -m venv "$venv"
fi
if ! cmp -s "$req" "$venv/.installed-requirements" 2>/dev/null; then
  echo "interop setup: pip install -r interop/requirements.txt"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$venv/.installed-requirements"
fi
"$venv/bin/python" -c 'import vsoa, importlib.metadata as m; assert vsoa.__version__ == "1.0.4", vsoa.__version__; assert m.version("hat-juggler") == "0.7.6", m.version("hat-juggler")' \
  || { echo "interop setup: Python vsoa 1.0.4 and hat-juggler 0.7.6 are not importable from $venv" >&2; exit 1; }
# hat-juggler 0.6 (the wire before segments and pings) in a venv of its own: one venv
# cannot hold two versions of a package.
venv06="$root/target/interop-venv06"
req06="$root/interop/requirements06.txt"
if [ ! -x "$venv06/bin/python" ]; then
  echo "interop setup: creating $venv06"
  "$python" -m venv "$venv06"
fi
if ! cmp -s "$req06" "$venv06/.installed-requirements" 2>/dev/null; then
  echo "interop setup: pip install -r interop/requirements06.txt"
  "$venv06/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req06"
  cp "$req06" "$venv06/.installed-requirements"
fi
"$venv06/bin/python" -c 'import importlib.metadata as m; from hat import juggler; assert m.version("hat-juggler") == "0.6.26", m.version("hat-juggler")' \
  || { echo "interop setup: hat-juggler 0.6.26 is not importable from $venv06" >&2; exit 1; }

if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  echo "interop setup: node and npm are required for the npm vsoa peer" >&2
  exit 1
fi
lock="$root/interop/package-lock.json"
stamp="$root/interop/node_modules/.installed-lock"
if ! cmp -s "$lock" "$stamp" 2>/dev/null; then
  echo "interop setup: npm ci (interop/)"
  (cd "$root/interop" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$lock" "$stamp"
fi
(cd "$root/interop" && node -e 'for (const [p, want] of [["vsoa", "1.5.1"], ["@hat-open/juggler", "0.7.0"], ["hat-open-juggler-06", "0.6.18"]]) { const v = require(p + "/package.json").version; if (v !== want) { console.error(p + " is " + v); process.exit(1) } }') \
  || { echo "interop setup: npm vsoa 1.5.1, @hat-open/juggler 0.7.0 and 0.6.18 are not installed in interop/node_modules" >&2; exit 1; }
# Debian's Chromium for the dashboard test (playwright-core drives it; nothing downloads
# a browser of its own).
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "interop setup: installing Debian's chromium"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || { echo "interop setup: cannot install Debian's chromium" >&2; exit 1; }
  else
    echo "interop setup: chromium is missing; install Debian's chromium (needs root)" >&2
    exit 1
  fi
fi
# Debian's nats-server: the federation tests' cluster and bench/compare.sh's NATS peer.
if ! command -v nats-server >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "interop setup: installing Debian's nats-server"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null; } \
      || { echo "interop setup: cannot install Debian's nats-server" >&2; exit 1; }
  else
    echo "interop setup: nats-server is missing; install Debian's nats-server (needs root)" >&2
    exit 1
  fi
fi
echo "interop setup: Python vsoa 1.0.4, hat-juggler 0.7.6 and 0.6.26, npm vsoa 1.5.1, @hat-open/juggler 0.7.0 and 0.6.18, playwright-core 1.64.1, $(chromium --version 2>/dev/null | head -1) and nats-server $(nats-server --version 2>/dev/null | sed 's/.*v//') ready"
