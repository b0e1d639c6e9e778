#!/usr/bin/env bash
# SFU load (issue 5), first scenario: livestream, one 720p VP8 publisher (~1.5
# Mbit/s, ffmpeg-made clip) and growing numbers of subscribers, through the
# gateway of a release `meridian dev`. Prints one line per step from
# `meridian-loadtest` (forwarded packets/s, loss, forwarding delay p50/p99,
# jitter, SFU CPU seconds, RSS and CPU µs per received packet) and writes JSON
# next to it. The server is pinned to core 0, the load tester to core 1.
# SUBSCRIBERS="1 5 10 20" and DURATION=10 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p meridian -p meridian-bench --bin meridian --bin meridian-loadtest
SUBSCRIBERS=${SUBSCRIBERS:-"1 5 10 20"}
DURATION=${DURATION:-10}
OUT=${OUT:-target/loadtest}
mkdir -p "$OUT"
bash bench/clips.sh "$OUT/clips" 10
RUST_LOG=warn taskset -c 0 target/release/meridian dev --port 7995 --sfu-port 7996 --turn-port 3495 \
  --turn-tls-port 5395 --api-key loadkey --api-secret loadtest-secret-of-some-length >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do grep -q "Meridian dev is up" "$OUT/server.log" && break; sleep 0.2; done
for n in $SUBSCRIBERS; do
  printf 'livestream 1 publisher, %s subscribers: ' "$n"
  taskset -c 1 target/release/meridian-loadtest --url ws://127.0.0.1:7995 --api-key loadkey \
    --api-secret loadtest-secret-of-some-length --publishers 1 --subscribers "$n" --duration "$DURATION" \
    --video "$OUT/clips/video.ivf" --sfu-pid "$SERVER" --json "$OUT/livestream-$n.json"
done
