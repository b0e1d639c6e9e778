#!/usr/bin/env python3
"""Two participants on LiveKit's Python SDK (`livekit`, LiveKit's Rust SDK and
libwebrtc inside) in one call: a publisher sends generated video (and a tone),
a subscriber counts the decoded frames. Prints one JSON report on stdout and
exits 1, with `error` in the report, when the subscriber did not get
`--min-frames` video frames within `--timeout` seconds.

The SDK sends the join token as `Authorization: Bearer`, not in the URL, so this
is also the test of that path through the gateway.

Report fields:
  frames, width, height            video frames the subscriber decoded, last size
  sizes                            every size seen, "WxH": count
  audio_frames                     audio frames the subscriber received
  first_frame_s                    from the publish call returning to the first frame
  connect_s                        each side's `Room.connect`, seconds
  publisher_saw, subscriber_saw    identities in each side's `remote_participants`
  tracks                           what the subscriber saw published (kind, mime, size)
  error                            why it failed (absent on success)
"""
import argparse
import array
import asyncio
import json
import logging
import math
import os
import sys
import time
import warnings

from livekit import api, rtc

from checks import disconnect_all, exit_now

PUBLISHER = "py-publisher"
SUBSCRIBER = "py-subscriber"
SAMPLE_RATE = 48_000
AUDIO_FRAME_MS = 10


def token(args, identity):
    grants = api.VideoGrants(room_join=True, room=args.room, can_publish=True, can_subscribe=True)
    return (
        api.AccessToken(args.api_key, args.api_secret)
        .with_identity(identity)
        .with_name(identity)
        .with_grants(grants)
        .to_jwt()
    )


def video_frames(width, height, count):
    """`count` RGBA frames of a white bar sweeping across a dark background, so
    the encoder has motion to code (a still image shrinks to keyframes only)."""
    bar = max(width // 8, 1)
    frames = []
    for i in range(count):
        x0 = (i * width // count) % width
        row = bytearray(b"\x20\x40\x80\xff" * width)
        for x in range(x0, min(x0 + bar, width)):
            row[4 * x : 4 * x + 4] = b"\xff\xff\xff\xff"
        data = bytes(row) * height
        frames.append(rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, data))
    return frames


def tone_frame():
    """10 ms of a 440 Hz tone, mono int16."""
    n = SAMPLE_RATE * AUDIO_FRAME_MS // 1000
    samples = array.array("h", (int(8000 * math.sin(2 * math.pi * 440 * i / SAMPLE_RATE)) for i in range(n)))
    return rtc.AudioFrame(samples.tobytes(), SAMPLE_RATE, 1, n)


class Received:
    """What the subscriber got; filled by the stream tasks."""

    def __init__(self):
        self.frames = 0
        self.width = 0
        self.height = 0
        self.sizes = {}
        self.audio_frames = 0
        self.first_frame_at = None
        self.tracks = []
        self.enough = asyncio.Event()


async def count_video(track, got, min_frames):
    stream = rtc.VideoStream(track)
    try:
        async for event in stream:
            if got.first_frame_at is None:
                got.first_frame_at = time.monotonic()
            got.frames += 1
            got.width, got.height = event.frame.width, event.frame.height
            size = f"{got.width}x{got.height}"
            got.sizes[size] = got.sizes.get(size, 0) + 1
            if got.frames >= min_frames:
                got.enough.set()
    finally:
        await stream.aclose()


async def count_audio(track, got):
    stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
    try:
        async for _ in stream:
            got.audio_frames += 1
    finally:
        await stream.aclose()


async def send_video(source, frames, fps, stop):
    interval = 1.0 / fps
    i = 0
    while not stop.is_set():
        source.capture_frame(frames[i % len(frames)], timestamp_us=int(time.monotonic() * 1e6))
        i += 1
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            pass


async def send_audio(source, stop):
    frame = tone_frame()
    while not stop.is_set():
        # Waits while the source's queue (1 s) is full, which paces the loop.
        await source.capture_frame(frame)


async def call(args, report):
    got = Received()
    tasks = []
    sub = rtc.Room()
    pub = rtc.Room()

    @sub.on("track_subscribed")
    def on_track(track, publication, participant):
        got.tracks.append({
            "from": participant.identity,
            "kind": rtc.TrackKind.Name(track.kind),
            "mime": publication.mime_type,
            "width": publication.width,
            "height": publication.height,
        })
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            tasks.append(asyncio.ensure_future(count_video(track, got, args.min_frames)))
        elif track.kind == rtc.TrackKind.KIND_AUDIO:
            tasks.append(asyncio.ensure_future(count_audio(track, got)))

    stop = asyncio.Event()
    try:
        t0 = time.monotonic()
        await sub.connect(args.url, token(args, SUBSCRIBER))
        t1 = time.monotonic()
        await pub.connect(args.url, token(args, PUBLISHER))
        t2 = time.monotonic()
        report["connect_s"] = {SUBSCRIBER: round(t1 - t0, 3), PUBLISHER: round(t2 - t1, 3)}

        video = rtc.VideoSource(args.width, args.height)
        vtrack = rtc.LocalVideoTrack.create_video_track("camera", video)
        audio = rtc.AudioSource(SAMPLE_RATE, 1)
        atrack = rtc.LocalAudioTrack.create_audio_track("microphone", audio)
        frames = video_frames(args.width, args.height, 30)
        tasks.append(asyncio.ensure_future(send_video(video, frames, args.fps, stop)))
        tasks.append(asyncio.ensure_future(send_audio(audio, stop)))

        vopts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=args.simulcast)
        published = time.monotonic()
        await pub.local_participant.publish_track(vtrack, vopts)
        await pub.local_participant.publish_track(atrack, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        try:
            await asyncio.wait_for(got.enough.wait(), max(args.deadline - time.monotonic(), 0.1))
        except asyncio.TimeoutError:
            report["error"] = f"{got.frames} video frames arrived, wanted {args.min_frames}"
        if got.first_frame_at is not None:
            report["first_frame_s"] = round(got.first_frame_at - published, 3)
    finally:
        report.update({
            "frames": got.frames,
            "width": got.width,
            "height": got.height,
            "sizes": got.sizes,
            "audio_frames": got.audio_frames,
            "tracks": got.tracks,
            "publisher_saw": sorted(p.identity for p in pub.remote_participants.values()),
            "subscriber_saw": sorted(p.identity for p in sub.remote_participants.values()),
        })
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await disconnect_all((pub, sub))


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="gateway WebSocket URL, e.g. ws://192.0.2.10:7910")
    parser.add_argument("--api-key", default=os.environ.get("LIVEKIT_API_KEY", "devkey"))
    parser.add_argument("--api-secret", default=os.environ.get("LIVEKIT_API_SECRET", "secret"))
    parser.add_argument("--room", default="python-sdk")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=float, default=20)
    parser.add_argument("--simulcast", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--min-frames", type=int, default=60, help="frames the subscriber must decode")
    parser.add_argument("--timeout", type=float, default=60, help="seconds for the whole call")
    args = parser.parse_args()
    # Test secrets may be shorter than PyJWT recommends; the warning is noise here.
    warnings.filterwarnings("ignore", message="The HMAC key is")
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("SDK_LOG", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")

    report = {"url": args.url, "published": {"width": args.width, "height": args.height, "fps": args.fps}}
    start = time.monotonic()
    args.deadline = start + args.timeout
    try:
        # The call's own waits end at the deadline; this bounds connect and leave too.
        await asyncio.wait_for(call(args, report), args.timeout + 15)
    except asyncio.TimeoutError:
        report.setdefault("error", f"no result within {args.timeout + 15} s")
    except Exception as e:
        report.setdefault("error", f"{type(e).__name__}: {e}")
    report["elapsed_s"] = round(time.monotonic() - start, 3)
    print(json.dumps(report), flush=True)
    return 1 if "error" in report else 0


if __name__ == "__main__":
    exit_now(asyncio.run(main()))
