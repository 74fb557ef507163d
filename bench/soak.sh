#!/usr/bin/env bash
# A soak of `tether serve` (not part of the test command): DURATION seconds (default 600)
# of mixed load from real Python vsoa and hat-juggler clients, clever-show and
# socket_protocol peers framed from the wire, with faults injected periodically; memory,
# descriptors, throughput and latency sampled every 5 s into bench/soak.jsonl and drawn in
# docs/soak.svg. Exits non-zero if anything was lost, duplicated or failed, or if resident
# memory grew more than 10 % after the first minute. Loopback only.
# Usage: bench/soak.sh [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
interop/setup.sh >/dev/null
cargo build --release -p tether-cli -j2 >&2
exec target/interop-venv/bin/python bench/soak.py --duration "${1:-600}" --tether target/release/tether
