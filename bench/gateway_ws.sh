#!/usr/bin/env bash
# Signal WebSockets held open through the gateway (docs/benchmarks.md, issue 5):
#  - the gateway's memory per proxied connection: its RSS with 0, 1 000 and
#    10 000 (or as many as the descriptor limit allows) signal WebSockets open
#    through it to a node;
#  - join rate: WebSockets opened per second through the gateway (token check,
#    routing, upstream connect, splice) vs straight to the node.
# The node is `meridian-bench null-node`, which accepts and holds WebSockets without
# a word, so the figures are the gateway's own. The gateway is pinned to core 0,
# the node and the client to core 1. RUNS runs of the join rate (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p meridian-bench
BIN=target/release/meridian-bench
RUNS=${RUNS:-3}
# The gateway holds two descriptors per proxied connection (client and node).
# Raise the soft limit as far as the hard one allows; where that is under 20 100
# (this machine's container: 20 000), the largest step is cut to fit.
ulimit -n "$(ulimit -Hn)"
LARGE=$(( ( $(ulimit -n) - 200 ) / 2 ))
[ "$LARGE" -gt 10000 ] && LARGE=10000
GW=127.0.0.1:7993
NODE=127.0.0.1:7994
WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

taskset -c 1 "$BIN" null-node --addr "$NODE" >/dev/null &
PIDS+=($!)
taskset -c 0 "$BIN" serve-gateway --addr "$GW" --node "$NODE" --max-connections 30000 >"$WORK/token" &
GW_PID=$!
PIDS+=("$GW_PID")
for _ in $(seq 1 50); do [ -s "$WORK/token" ] && break; sleep 0.1; done
TOKEN=$(head -n1 "$WORK/token")
sleep 2.5 # the node's first heartbeat
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "connections | gateway RSS MiB | per connection KiB"
base=$(rss_kb "$GW_PID")
awk -v b="$base" 'BEGIN { printf "0 | %.1f | -\n", b / 1024 }'
for n in 1000 "$LARGE"; do
  taskset -c 1 "$BIN" hold --url "ws://$GW/rtc?access_token=$TOKEN" --connections "$n" --hold 6 >"$WORK/hold" 2>&1 &
  HOLD=$!
  for _ in $(seq 1 120); do grep -q opened "$WORK/hold" && break; sleep 0.5; done
  grep -q "opened $n of" "$WORK/hold" || { cat "$WORK/hold"; echo "not all connections opened"; exit 1; }
  sleep 1
  now=$(rss_kb "$GW_PID")
  awk -v n="$n" -v r="$now" -v b="$base" 'BEGIN { printf "%d | %.1f | %.1f\n", n, r / 1024, (r - b) / n }'
  wait "$HOLD"
  sleep 2
done

through=(); direct=()
for _ in $(seq 1 "$RUNS"); do
  through+=("$(taskset -c 1 "$BIN" hold --url "ws://$GW/rtc?access_token=$TOKEN" --connections 2000 --hold 0 | awk '{print $8}' | tr -d '(')")
  sleep 1
  direct+=("$(taskset -c 1 "$BIN" hold --url "ws://$NODE/rtc?access_token=$TOKEN" --connections 2000 --hold 0 | awk '{print $8}' | tr -d '(')")
  sleep 1
done
T=$(printf '%s\n' "${through[@]}" | median)
D=$(printf '%s\n' "${direct[@]}" | median)
echo "join rate through the gateway: ${through[*]} per second (median $T)"
echo "join rate straight to the node: ${direct[*]} per second (median $D)"
awk -v t="$T" -v d="$D" 'BEGIN { printf "through/direct ratio %.2f\n", t / d }'
