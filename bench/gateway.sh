#!/usr/bin/env bash
# Gateway benchmarks, side by side on this machine (docs/benchmarks.md):
#  1. the routing decision (City lookup + node scoring) per request;
#  2. GET /rtc/validate (token check) through the gateway vs a bare hyper handler,
#     both loaded with the same wrk run (2 threads, 64 connections, 10 s), 3 runs
#     each, taken in turn; the median requests/s and their ratio are printed.
# The servers are pinned to core 0 and wrk to core 1, so they do not share a core.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -p meridian-bench
BIN=target/release/meridian-bench
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}

taskset -c 0 "$BIN" route
taskset -c 0 "$BIN" route --explain

TOKEN_FILE=$(mktemp)
taskset -c 0 "$BIN" serve-gateway --addr 127.0.0.1:7990 > "$TOKEN_FILE" &
GW=$!
taskset -c 0 "$BIN" serve-bare --addr 127.0.0.1:7991 > /dev/null &
BARE=$!
trap 'kill $GW $BARE 2>/dev/null || true; rm -f "$TOKEN_FILE"' EXIT
for _ in $(seq 1 50); do [ -s "$TOKEN_FILE" ] && break; sleep 0.1; done
TOKEN=$(head -n1 "$TOKEN_FILE")
curl -sf "http://127.0.0.1:7990/rtc/validate?access_token=$TOKEN" >/dev/null || { echo "gateway not answering 200"; exit 1; }

rps() { taskset -c 1 wrk -t2 -c64 -d"$DURATION" "$1" | awk '/Requests\/sec/ {print $2}'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
gw=(); bare=()
for _ in $(seq 1 "$RUNS"); do
  gw+=("$(rps "http://127.0.0.1:7990/rtc/validate?access_token=$TOKEN")")
  bare+=("$(rps "http://127.0.0.1:7991/")")
done
GW_MED=$(printf '%s\n' "${gw[@]}" | median)
BARE_MED=$(printf '%s\n' "${bare[@]}" | median)
echo "validate: gateway /rtc/validate ${gw[*]} req/s (median $GW_MED)"
echo "validate: bare hyper handler   ${bare[*]} req/s (median $BARE_MED)"
awk -v g="$GW_MED" -v b="$BARE_MED" 'BEGIN { printf "validate: gateway/bare ratio %.2f\n", g / b }'
