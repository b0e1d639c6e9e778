#!/usr/bin/env bash
# SFU load (issue 5): Meridian and Janus side by side under the same loads from
# the same load tester (`meridian-loadtest`), with media made by ffmpeg
# (bench/clips.sh: 720p video, VP8 or H.264 (CODEC), at KBPS, Opus in 20 ms pages):
#  - livestream: one publisher of video and audio, SUBSCRIBERS subscribers;
#  - audio room: 10 audio publishers (each hears the other 9), AUDIO_SUBSCRIBERS
#    more audio-only subscribers;
#  - meeting: N publishers of video and audio, each subscribed to all the others
#    (MEETING).
# Meridian is a release `meridian dev`, joined through its gateway (LiveKit
# protocol). Janus is Debian's Janus 1.1.2 with the VideoRoom plugin
# (bench/janus-config.sh), joined over its WebSocket API. Both run at once, pinned
# to core 0; the load tester runs on core 1. Each step runs RUNS times per SFU,
# taking the two in turn, and a table of medians with Meridian/Janus ratios is
# printed at the end (bench/loadtest_table.py). Every run writes JSON to OUT.
#
# Everything runs in a network namespace of its own (unshare -n) with loopback
# and a veth pair (10.99.0.1, 10.99.0.2): Janus does not gather ICE candidates on
# loopback interfaces, so it uses the veth addresses, which the kernel delivers
# locally just like loopback.
#
# TARGETS may add `str0m`: issue 13's engine spike (spike/, a minimal str0m
# forwarder on one UDP port, WHIP/WHEP signalling), pinned to core 0 like the
# others; it has one publisher per room, so it runs the livestream steps only.
#
# TARGETS may add `before` with MERIDIAN_BEFORE set to another release `meridian`
# binary (an earlier commit's, built by hand): it runs beside the current one, on
# core 0 too, so a change is measured before and after in one sitting. Build it
# in a worktree with a CARGO_TARGET_DIR of its own: sharing this checkout's
# leaves the workspace crates' artifacts looking fresh for the other sources.
#
# MERIDIAN_LOG sets the node's RUST_LOG (default warn), to see what its congestion
# control did in $OUT/meridian.log.
#
# Defaults: SUBSCRIBERS="1 10 40", AUDIO_SUBSCRIBERS="0 30", MEETING="2 8",
# DURATION=10, RUNS=3, TARGETS="meridian janus", CODEC=vp8 (or h264), KBPS=1500.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${LOADTEST_IN_NETNS:-}" ]; then
  cargo build --release -p meridian -p meridian-bench --bin meridian --bin meridian-loadtest
  case " ${TARGETS:-} " in *" str0m "*) cargo build --release -p meridian-str0m-spike ;; esac
  command -v janus >/dev/null || { apt-get update -qq && apt-get install -y -qq janus >/dev/null; }
  exec env LOADTEST_IN_NETNS=1 unshare -n bash "$0" "$@"
fi
ip link set lo up
ip link add v0 type veth peer name v1
ip addr add 10.99.0.1/24 dev v0
ip addr add 10.99.0.2/24 dev v1
ip link set v0 up
ip link set v1 up

SUBSCRIBERS=${SUBSCRIBERS:-"1 10 40"}
AUDIO_SUBSCRIBERS=${AUDIO_SUBSCRIBERS:-"0 30"}
MEETING=${MEETING:-"2 8"}
DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
TARGETS=${TARGETS:-"meridian janus"}
CODEC=${CODEC:-vp8}
KBPS=${KBPS:-1500}
OUT=${OUT:-target/loadtest}
OUT=$(realpath -m "$OUT")
mkdir -p "$OUT/runs"
rm -f "$OUT"/runs/*.json
CLIPS="$OUT/clips-$KBPS"
bash bench/clips.sh "$CLIPS" 10 1280x720 "$KBPS"
case $CODEC in
  vp8) VIDEO="$CLIPS/video.ivf" ;;
  h264) VIDEO="$CLIPS/video.h264" ;;
  *) echo "CODEC must be vp8 or h264" >&2; exit 2 ;;
esac

RUST_LOG="${MERIDIAN_LOG:-warn}" taskset -c 0 target/release/meridian dev --port 7995 --sfu-port 7996 --turn-port 3495 \
  --turn-tls-port 5395 --api-key loadkey --api-secret loadtest-secret-of-some-length >"$OUT/meridian.log" 2>&1 &
MERIDIAN=$!
bash bench/janus-config.sh "$OUT/janus" 8188 10.99.0.1
taskset -c 0 janus --configs-folder "$OUT/janus" --config "$OUT/janus/janus.jcfg" >"$OUT/janus.log" 2>&1 &
JANUS=$!
BEFORE=
case " $TARGETS " in
  *" before "*)
    [ -x "${MERIDIAN_BEFORE:-}" ] || { echo "TARGETS has before: set MERIDIAN_BEFORE to a meridian binary" >&2; exit 2; }
    RUST_LOG=warn taskset -c 0 "$MERIDIAN_BEFORE" dev --port 7985 --sfu-port 7986 --turn-port 3485 \
      --turn-tls-port 5385 --api-key loadkey --api-secret loadtest-secret-of-some-length >"$OUT/before.log" 2>&1 &
    BEFORE=$!
    ;;
esac
SPIKE=
case " $TARGETS " in
  *" str0m "*)
    RUST_LOG=warn taskset -c 0 target/release/meridian-str0m-spike --http 127.0.0.1:7900 --udp 127.0.0.1:7901 \
      >"$OUT/str0m.log" 2>&1 &
    SPIKE=$!
    ;;
esac
trap 'kill $MERIDIAN $JANUS $SPIKE $BEFORE 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do grep -q "Meridian dev is up" "$OUT/meridian.log" && break; sleep 0.2; done
if [ -n "$BEFORE" ]; then
  for _ in $(seq 1 50); do grep -q "Meridian dev is up" "$OUT/before.log" && break; sleep 0.2; done
fi
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/8188) 2>/dev/null && break; sleep 0.2; done
if [ -n "$SPIKE" ]; then
  for _ in $(seq 1 50); do grep -q "spike up" "$OUT/str0m.log" && break; sleep 0.2; done
fi

load() { # name publishers subscribers media-flags...
  local name=$1 pubs=$2 subs=$3; shift 3
  for run in $(seq 1 "$RUNS"); do
    for target in $TARGETS; do
      local args
      if [ "$target" = str0m ]; then
        [ "$pubs" = 1 ] || continue
        args=(--target whip --url http://127.0.0.1:7900 --sfu-pid "$SPIKE")
      elif [ "$target" = before ]; then
        args=(--url ws://127.0.0.1:7985 --api-key loadkey --api-secret loadtest-secret-of-some-length --sfu-pid "$BEFORE")
      elif [ "$target" = janus ]; then
        args=(--target janus --url ws://127.0.0.1:8188 --sfu-pid "$JANUS")
      else
        args=(--url ws://127.0.0.1:7995 --api-key loadkey --api-secret loadtest-secret-of-some-length --sfu-pid "$MERIDIAN")
      fi
      printf '%s %s, %s publishers, %s subscribers, run %s: ' "$target" "$name" "$pubs" "$subs" "$run"
      taskset -c 1 target/release/meridian-loadtest "${args[@]}" --publishers "$pubs" --subscribers "$subs" \
        --duration "$DURATION" --json "$OUT/runs/$target.$name.$pubs.$subs.$run.json" "$@" \
        || echo "(failed)"
    done
  done
}
for n in $SUBSCRIBERS; do load livestream 1 "$n" --video "$VIDEO" --audio "$CLIPS/audio.ogg"; done
for n in $AUDIO_SUBSCRIBERS; do load audio-room 10 "$n" --audio "$CLIPS/audio.ogg"; done
for n in $MEETING; do load meeting "$n" 0 --video "$VIDEO" --audio "$CLIPS/audio.ogg"; done
python3 bench/loadtest_table.py "$OUT/runs"
