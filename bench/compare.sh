#!/usr/bin/env bash
# Measures Tether side by side with its floors (raw TCP/UDP written on the same runtime),
# NATS (nats-server driven by async-nats), the Python vsoa server and the Python
# hat-juggler server (both driven by the same Tether load generator), and writes
# docs/benchmarks.md.
#
# Usage: bench/compare.sh [RUNS]        RUNS interleaved runs (default 3), median reported
#        QUICK=1 bench/compare.sh 1     tiny configuration: a smoke test that every scenario
#                                       and peer works (writes target/bench-smoke.md instead)
#
# Installs what it needs through interop/setup.sh: the pinned Python peers and Debian's
# nats-server (apt-get, as root). Every server it starts listens on 127.0.0.1 only and is
# stopped by its process id on exit; every run is bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
quick="${QUICK:-0}"

# Installs the peers, Debian's nats-server among them.
interop/setup.sh >&2
py="$PWD/target/interop-venv/bin/python"
py06="$PWD/target/interop-venv06/bin/python"

if [ "$quick" = 1 ]; then
  cargo build -p tether-cli --features nats -j2 >&2
  bin=target/debug/tether
  report=target/bench-smoke.md
  lat=(--count 300); thr=(--count 3000); pub=(--count 5000); fan=(--count 500)
  pylat=(--count 100); pythr=(--count 500); pypub=(--count 500)
  wsrpc=(--count 2000); pyws=(--count 300); fanout=(--clients 20 --rate 10 --secs 1)
  dg=(--count 2000); bulk=(--bytes 4194304); rc=(--count 2); conns=(--count 200 --hold-secs 0)
  fo1=(--count 5000); fo20=(--count 1000); fo100=(--count 200); fop=(--count 500); fol=(--count 500 --rate 5000)
  fed1=(--count 5000); fed20=(--count 1000); fedlat=(--count 200); fedthr=(--count 2000)
else
  cargo build --release -p tether-cli --features nats -j2 >&2
  bin=target/release/tether
  report=docs/benchmarks.md
  lat=(--count 20000); thr=(--count 200000); pub=(--count 1000000); fan=(--count 30000)
  pylat=(--count 5000); pythr=(--count 20000); pypub=(--count 100000)
  wsrpc=(--count 100000); pyws=(--count 5000); fanout=(--clients 1000 --rate 10 --secs 10)
  dg=(--count 200000); bulk=(--bytes 1073741824); rc=(--count 20); conns=(--count 10000 --hold-secs 2)
  fo1=(--count 1000000); fo20=(--count 150000); fo100=(--count 30000); fop=(--count 50000)
  fol=(--count 30000 --rate 10000)
  fed1=(--count 300000); fed20=(--count 100000); fedlat=(--count 5000); fedthr=(--count 100000)
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

nats_port=$(free_port)
nats-server -a 127.0.0.1 -p "$nats_port" >"$tmp/nats.log" 2>&1 &
nats_pid=$!
pids+=($nats_pid)
nats="nats://127.0.0.1:$nats_port"

# `tether serve` in its own process, as users run it, for the scenarios across processes:
# its default runtime, and one and two threads for RPC. Sets $serve_url and $serve_pid.
start_serve() {
  local name=$1; shift
  "$bin" serve --listen 127.0.0.1:0 --files-root "$tmp/files" "$@" \
    >"$tmp/$name.out" 2>"$tmp/$name.err" &
  serve_pid=$!
  pids+=($serve_pid)
  for _ in $(seq 100); do grep -q '^tether: VSOA server on' "$tmp/$name.out" 2>/dev/null && break; sleep 0.1; done
  serve_url=$(sed -n 's|^tether: VSOA server on \(vsoa://[0-9.:]*\).*|\1|p' "$tmp/$name.out")
  [ -n "$serve_url" ] || { echo "compare: tether serve ($name) did not start:" >&2; cat "$tmp/$name.err" >&2; exit 1; }
}
start_serve serve1 --no-gateway --threads 1
serve1_url=$serve_url
start_serve serve2 --no-gateway --threads 2
serve2_url=$serve_url
start_serve serve --gateway 127.0.0.1:0 --relay /bench/ --relay-rate 0
serve_ws=$(sed -n 's|^tether: gateway on \(ws://[0-9.:]*/ws\).*|\1|p' "$tmp/serve.out")
serve_ws06="${serve_ws}06"

# Federation: two nats-servers in one cluster, a `tether serve --nats` on each (fa on nA, fb
# on nB: everything between them crosses the route), and the same `tether serve` without
# --nats, for the cost of federation on local traffic.
natsA_port=$(free_port); natsB_port=$(free_port); routeA=$(free_port); routeB=$(free_port)
nats_conf() { # NAME PORT ROUTE_PORT PEER_ROUTE_PORT
  printf 'server_name: bench%s\nlisten: 127.0.0.1:%s\ncluster {\n  name: bench\n  listen: 127.0.0.1:%s\n  no_advertise: true\n  routes: [nats-route://127.0.0.1:%s]\n}\n' "$@"
}
nats_conf A "$natsA_port" "$routeA" "$routeB" >"$tmp/natsA.conf"
nats_conf B "$natsB_port" "$routeB" "$routeA" >"$tmp/natsB.conf"
for n in A B; do
  nats-server -c "$tmp/nats$n.conf" >"$tmp/nats$n.log" 2>&1 &
  pids+=($!)
done
natsA="nats://127.0.0.1:$natsA_port"; natsB="nats://127.0.0.1:$natsB_port"
for n in A B; do
  for _ in $(seq 100); do grep -q 'Route connection created' "$tmp/nats$n.log" && break; sleep 0.1; done
done
fedcommon=(--no-gateway --relay /bench/ --relay-rate 0)
start_serve fedplain "${fedcommon[@]}"
fedplain_url=$serve_url; fedplain_pid=$serve_pid
start_serve feda "${fedcommon[@]}" --nats "$natsA" --node fa --echo-route /fed/a/echo
feda_url=$serve_url; feda_pid=$serve_pid
start_serve fedb "${fedcommon[@]}" --nats "$natsB" --node fb --echo-route /fed/b/echo
fedb_url=$serve_url

# Starts a Python peer script of interop/py that prints `READY <port>` and serves until its
# stdin closes (a `sleep` holding a fifo keeps it open; both are stopped on exit). Sets $port.
start_py() {
  local name=$1; shift
  local python="$py"
  if [ "$name" = juggler06 ]; then python="$py06"; fi
  mkfifo "$tmp/$name.in"
  (cd interop/py && exec "$python" "$@" <"$tmp/$name.in" >"$tmp/$name.out" 2>"$tmp/$name.err") &
  pids+=($!)
  sleep 7200 >"$tmp/$name.in" &
  pids+=($!)
  for _ in $(seq 100); do grep -q '^READY' "$tmp/$name.out" 2>/dev/null && break; sleep 0.1; done
  port=$(sed -n 's/^READY \([0-9]*\).*/\1/p' "$tmp/$name.out")
  [ -n "$port" ] || { echo "compare: $name did not start:" >&2; cat "$tmp/$name.err" >&2; exit 1; }
}
start_py vsoa server.py '' 0
pyurl="vsoa://127.0.0.1:$port"
start_py juggler juggler_server.py
jugurl="ws://127.0.0.1:$port/ws"
start_py juggler06 juggler_server.py
jug06url="ws://127.0.0.1:$port/ws"
for _ in $(seq 50); do grep -q 'Server is ready' "$tmp/nats.log" && break; sleep 0.1; done

out="$tmp/results.jsonl"
run() { echo "+ tether bench $*" >&2; "$bin" bench "$@" >>"$out"; }
for _ in $(seq "$runs"); do
  for t in 1 2; do
    # The short scenarios three times each: on this VM a process lands in a fast or a slow
    # mode for its whole life (seen: ping-pong p50 12.4 or 15.2 us), so more samples.
    for _ in 1 2 3; do
      run --threads "$t" floor-tcp --size 64 "${lat[@]}"
      run --threads "$t" rpc-latency --size 64 "${lat[@]}"
      run --threads "$t" pub-throughput --size 32 --subscribers 1 "${pub[@]}"
      run --threads "$t" pub-throughput --size 32 --subscribers 100 "${fan[@]}"
    done
    run --threads "$t" rpc-throughput --size 64 --in-flight 256 "${thr[@]}"
    run --threads "$t" floor-udp --size 64 "${dg[@]}"
    run --threads "$t" quick-rate --size 64 "${dg[@]}"
    run --threads "$t" floor-tcp-copy "${bulk[@]}"
    run --threads "$t" stream "${bulk[@]}"
    run --threads "$t" reconnect "${rc[@]}"
    run --threads "$t" floor-ws --in-flight 64 "${wsrpc[@]}"
    run --threads "$t" ws-rpc --in-flight 64 "${wsrpc[@]}"
  done
  # Across processes, Tether and NATS back to back for each S (their ratio is taken per pair).
  for s in 1 20 100; do
    case $s in 1) n=("${fo1[@]}");; 20) n=("${fo20[@]}");; *) n=("${fo100[@]}");; esac
    run fanout --url "$serve_url" --via relay --subscribers "$s" --server-pid "$serve_pid" "${n[@]}"
    run fanout --url "$nats" --via nats --subscribers "$s" --server-pid "$nats_pid" "${n[@]}"
  done
  # Latency at a rate both carry easily (the runs above measure mostly queueing).
  run fanout --url "$serve_url" --via relay --subscribers 20 --server-pid "$serve_pid" "${fol[@]}"
  run fanout --url "$nats" --via nats --subscribers 20 --server-pid "$nats_pid" "${fol[@]}"
  run fanout --url "$serve_url" --via publish --subscribers 20 --server-pid "$serve_pid" "${fop[@]}"
  for c in 1 8; do
    run rpc-throughput --url "$serve1_url" --tag serve-threads-1 --connections "$c" --in-flight 256 "${thr[@]}"
    run rpc-throughput --url "$serve2_url" --tag serve-threads-2 --connections "$c" --in-flight 256 "${thr[@]}"
  done
  run ws-rpc --url "$jugurl" --in-flight 64 "${pyws[@]}"
  run ws-rpc --url "$serve_ws" --tag serve --in-flight 64 "${wsrpc[@]}"
  run ws-rpc --url "$jug06url" --wire 0.6 --in-flight 64 "${pyws[@]}"
  run ws-rpc --url "$serve_ws06" --wire 0.6 --tag serve --in-flight 64 "${wsrpc[@]}"
  run ws-fanout "${fanout[@]}"
  run nats-rpc --url "$nats" --size 64 --in-flight 1 "${lat[@]}"
  run nats-rpc --url "$nats" --size 64 --in-flight 256 "${thr[@]}"
  run nats-pub --url "$nats" --size 32 --subscribers 1 "${pub[@]}"
  run nats-pub --url "$nats" --size 32 --subscribers 100 "${fan[@]}"
  run rpc-latency --url "$pyurl" --size 64 "${pylat[@]}"
  run rpc-throughput --url "$pyurl" --size 64 --in-flight 256 "${pythr[@]}"
  run pub-throughput --url "$pyurl" --subscribers 1 "${pypub[@]}"
  run connections "${conns[@]}"
  # Federation, each figure beside the same on one node and beside NATS across the route.
  for s in 1 20; do
    case $s in 1) n=("${fed1[@]}");; *) n=("${fed20[@]}");; esac
    run --tag fed-plain fanout --url "$fedplain_url" --via relay --subscribers "$s" --server-pid "$fedplain_pid" "${n[@]}"
    run --tag fed-local fanout --url "$feda_url" --via relay --subscribers "$s" --server-pid "$feda_pid" "${n[@]}"
    run --tag fed-cross fanout --url "$feda_url" --sub-url "$fedb_url" --via relay --subscribers "$s" --server-pid "$feda_pid" "${n[@]}"
    run --tag fed-route fanout --url "$natsA" --sub-url "$natsB" --via nats --subscribers "$s" "${n[@]}"
  done
  run --tag fed-cross rpc-latency --url "$feda_url" --path /fed/b/echo --size 64 "${fedlat[@]}"
  run --tag fed-local rpc-latency --url "$feda_url" --path /fed/a/echo --size 64 "${fedlat[@]}"
  run --tag fed-route nats-rpc --url "$natsA" --responder-url "$natsB" --size 64 --in-flight 1 "${fedlat[@]}"
  run --tag fed-cross rpc-throughput --url "$feda_url" --path /fed/b/echo --size 64 --in-flight 256 "${fedthr[@]}"
  run --tag fed-local rpc-throughput --url "$feda_url" --path /fed/a/echo --size 64 --in-flight 256 "${fedthr[@]}"
  run --tag fed-route nats-rpc --url "$natsA" --responder-url "$natsB" --size 64 --in-flight 256 "${fedthr[@]}"
done

mkdir -p "$(dirname "$report")"
# The raw results stay beside the report, so it can be checked (or re-rendered) from them.
cp "$out" "${report%.md}.jsonl"
python3 bench/report.py "${report%.md}.jsonl" "$runs" "$quick" >"$report"
echo "compare: wrote $report and ${report%.md}.jsonl" >&2
