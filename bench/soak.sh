#!/usr/bin/env bash
# Memory soak (issue 11): does the SFU give memory back after participants leave?
#
# A release `meridian dev` takes CYCLES runs of `meridian-loadtest` through its
# gateway; each run joins ROOMS rooms of one publisher (VP8 and Opus clips from
# bench/clips.sh) and SUBS subscribers, forwards for DURATION seconds and leaves.
# So CYCLES x ROOMS x (1 + SUBS) join/publish/leave cycles in all (default
# 10 x 10 x 3 = 300). Printed: the process's RSS after a warm-up run (the
# baseline), after each run, and SETTLE seconds after the last; the rooms,
# participants, tracks and TURN allocations gauges from /metrics at the end
# (all must be 0); and the end's distance from the baseline.
#
# MALLOC_ARENA_MAX and other glibc tunables pass through to the SFU process, to
# tell state we keep from memory the allocator keeps.
#
# Defaults: CYCLES=10 ROOMS=10 SUBS=2 DURATION=2 SETTLE=5.
set -euo pipefail
cd "$(dirname "$0")/.."
CYCLES=${CYCLES:-10}
ROOMS=${ROOMS:-10}
SUBS=${SUBS:-2}
DURATION=${DURATION:-2}
SETTLE=${SETTLE:-5}
OUT=$(realpath -m "${OUT:-target/soak}")
mkdir -p "$OUT"
cargo build --release -p meridian -p meridian-bench --bin meridian --bin meridian-loadtest
bash bench/clips.sh "$OUT/clips" 3 640x360 500 >/dev/null

PORT=7985
KEY=soakkey
SECRET=soak-secret-of-some-length
RUST_LOG=warn target/release/meridian dev --port $PORT --sfu-port 7986 --turn-port 3485 --turn-tls-port 5385 \
  --api-key $KEY --api-secret $SECRET >"$OUT/meridian.log" 2>&1 &
SFU=$!
trap 'kill $SFU 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q "Meridian dev is up" "$OUT/meridian.log" && break; sleep 0.1; done
grep -q "Meridian dev is up" "$OUT/meridian.log" || { cat "$OUT/meridian.log"; exit 1; }

rss() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$SFU/status"; }
gauge() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 ~ "^"m"[{ ]" || $1 == m {s += $2} END {print s + 0}'; }
cycle() {
  target/release/meridian-loadtest --url "ws://127.0.0.1:$PORT" --api-key $KEY --api-secret $SECRET \
    --rooms "$ROOMS" --publishers 1 --subscribers "$SUBS" --duration "$DURATION" \
    --video "$OUT/clips/video.ivf" --audio "$OUT/clips/audio.ogg" >"$OUT/cycle.log" 2>&1 \
    || { echo "load test failed:"; tail -5 "$OUT/cycle.log"; exit 1; }
}

echo "start: $(rss) MiB"
cycle
sleep "$SETTLE"
BASE=$(rss)
echo "baseline (after a warm-up run and ${SETTLE} s): $BASE MiB"
PEAK=$BASE
for i in $(seq 1 "$CYCLES"); do
  cycle
  NOW=$(rss)
  PEAK=$(awk -v a="$PEAK" -v b="$NOW" 'BEGIN {print (b > a) ? b : a}')
  echo "after run $i ($((i * ROOMS * (1 + SUBS))) participants): $NOW MiB"
done
sleep "$SETTLE"
END=$(rss)
echo "after ${SETTLE} s: $END MiB"
for g in meridian_sfu_rooms meridian_sfu_participants meridian_sfu_tracks meridian_turn_allocations; do
  echo "$g $(gauge $g)"
done
awk -v b="$BASE" -v p="$PEAK" -v e="$END" -v n=$((CYCLES * ROOMS * (1 + SUBS))) \
  'BEGIN {printf "participants %d, baseline %.1f MiB, peak %.1f MiB, end %.1f MiB, end - baseline %+.1f MiB (%+.0f%%)\n", n, b, p, e, e - b, 100 * (e - b) / b}'
