#!/usr/bin/env bash
# SFU load (issue 5), through the gateway of a release `meridian dev`, with media
# made by ffmpeg (bench/clips.sh: 720p VP8 at ~1.5 Mbit/s, Opus in 20 ms pages):
#  - livestream: one video publisher, SUBSCRIBERS subscribers;
#  - audio room: 10 audio publishers (each hears the other 9), AUDIO_SUBSCRIBERS
#    more audio-only subscribers;
#  - meeting: N video publishers, each subscribed to all the others (MEETING).
# Video and audio are not combined: see docs/benchmarks.md. Prints one line per step from
# `meridian-loadtest` (forwarded packets/s, loss, forwarding delay p50/p99,
# jitter, SFU CPU seconds, RSS and CPU µs per received packet) and writes JSON
# next to it. The server is pinned to core 0, the load tester to core 1.
# Defaults: SUBSCRIBERS="1 5 10 20 40", AUDIO_SUBSCRIBERS="0 10 30", MEETING="2 4 6 8",
# DURATION=10.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p meridian -p meridian-bench --bin meridian --bin meridian-loadtest
SUBSCRIBERS=${SUBSCRIBERS:-"1 5 10 20 40"}
AUDIO_SUBSCRIBERS=${AUDIO_SUBSCRIBERS:-"0 10 30"}
MEETING=${MEETING:-"2 4 6 8"}
DURATION=${DURATION:-10}
OUT=${OUT:-target/loadtest}
mkdir -p "$OUT"
bash bench/clips.sh "$OUT/clips" 10
RUST_LOG=warn taskset -c 0 target/release/meridian dev --port 7995 --sfu-port 7996 --turn-port 3495 \
  --turn-tls-port 5395 --api-key loadkey --api-secret loadtest-secret-of-some-length >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do grep -q "Meridian dev is up" "$OUT/server.log" && break; sleep 0.2; done
load() { # name publishers subscribers media-flags...
  local name=$1 pubs=$2 subs=$3; shift 3
  printf '%s, %s publishers, %s subscribers: ' "$name" "$pubs" "$subs"
  taskset -c 1 target/release/meridian-loadtest --url ws://127.0.0.1:7995 --api-key loadkey \
    --api-secret loadtest-secret-of-some-length --publishers "$pubs" --subscribers "$subs" --duration "$DURATION" \
    --sfu-pid "$SERVER" --json "$OUT/$name-$pubs-$subs.json" "$@"
}
for n in $SUBSCRIBERS; do load livestream 1 "$n" --video "$OUT/clips/video.ivf"; done
for n in $AUDIO_SUBSCRIBERS; do load audio-room 10 "$n" --audio "$OUT/clips/audio.ogg"; done
for n in $MEETING; do load meeting "$n" 0 --video "$OUT/clips/video.ivf"; done
