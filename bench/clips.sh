#!/usr/bin/env bash
# Makes the load tester's media with Debian's ffmpeg (issue 5): a 720p VP8 clip at
# about 1.5 Mbit/s with a keyframe every 2 s (IVF), and Opus audio in 20 ms Ogg
# pages, both SECONDS long (default 10) from ffmpeg's test sources.
# Usage: bench/clips.sh OUT_DIR [SECONDS] [SIZE]   -> OUT_DIR/video.ivf, OUT_DIR/audio.ogg
set -euo pipefail
out=${1:?usage: bench/clips.sh OUT_DIR [SECONDS] [SIZE]}
secs=${2:-10}
size=${3:-1280x720}
command -v ffmpeg >/dev/null || { apt-get update -qq && apt-get install -y -qq ffmpeg >/dev/null; }
mkdir -p "$out"
[ -s "$out/video.ivf" ] || ffmpeg -loglevel error -y -f lavfi -i "testsrc2=size=$size:rate=30" -t "$secs" \
  -c:v libvpx -b:v 1500k -minrate 1500k -maxrate 1500k -g 60 -deadline realtime -cpu-used 8 -auto-alt-ref 0 \
  "$out/video.ivf"
[ -s "$out/audio.ogg" ] || ffmpeg -loglevel error -y -f lavfi -i "sine=frequency=440:sample_rate=48000" -t "$secs" \
  -c:a libopus -b:a 32k -page_duration 20000 "$out/audio.ogg"
