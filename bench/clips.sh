#!/usr/bin/env bash
# Makes the load tester's media with Debian's ffmpeg (issue 5), SECONDS long
# (default 10) from ffmpeg's test sources, video at KBPS (default 1500) with a
# keyframe every 2 s:
#  - video.ivf: VP8 (libvpx, realtime);
#  - video.h264: H.264 constrained baseline, level 3.1, one slice per frame, no
#    B-frames (libx264, Annex B), 30 fps;
#  - audio.ogg: Opus in 20 ms Ogg pages.
# Usage: bench/clips.sh OUT_DIR [SECONDS] [SIZE] [KBPS]
set -euo pipefail
out=${1:?usage: bench/clips.sh OUT_DIR [SECONDS] [SIZE] [KBPS]}
secs=${2:-10}
size=${3:-1280x720}
kbps=${4:-1500}
command -v ffmpeg >/dev/null || { apt-get update -qq && apt-get install -y -qq ffmpeg >/dev/null; }
mkdir -p "$out"
src=(-f lavfi -i "testsrc2=size=$size:rate=30" -t "$secs")
[ -s "$out/video.ivf" ] || ffmpeg -loglevel error -y "${src[@]}" \
  -c:v libvpx -b:v "${kbps}k" -minrate "${kbps}k" -maxrate "${kbps}k" -g 60 -deadline realtime -cpu-used 8 \
  -auto-alt-ref 0 "$out/video.ivf"
[ -s "$out/video.h264" ] || ffmpeg -loglevel error -y "${src[@]}" \
  -c:v libx264 -profile:v baseline -level 3.1 -pix_fmt yuv420p -preset veryfast -tune zerolatency \
  -b:v "${kbps}k" -maxrate "${kbps}k" -bufsize "$((kbps / 2))k" -g 60 -x264-params scenecut=0:slices=1 \
  -f h264 "$out/video.h264"
[ -s "$out/audio.ogg" ] || ffmpeg -loglevel error -y -f lavfi -i "sine=frequency=440:sample_rate=48000" -t "$secs" \
  -c:a libopus -b:a 32k -page_duration 20000 "$out/audio.ogg"
