#!/usr/bin/env python3
"""A signal resume through LiveKit's Python SDK (`livekit`, LiveKit's Rust SDK
inside): the publisher's signal connection is dropped with the SDK's own
`simulate_scenario(SIMULATE_SIGNAL_RECONNECT)` (a resume that keeps its peer
connections); it comes back as the same participant, the subscriber sees no
leave and no join, and video keeps arriving.

Prints one JSON report on stdout: `checks`, `seen` (events each side saw, the
time to `reconnected`) and `error` naming the failed checks; exits 1 then.
"""
import asyncio
import time

from livekit import api, rtc
from livekit.rtc._proto.room_pb2 import SimulateScenarioKind

from checks import disconnect_all, run, until
from sdk_call import send_video, video_frames


def token(args, identity):
    grants = api.VideoGrants(room_join=True, room=args.room)
    return api.AccessToken(args.api_key, args.api_secret).with_identity(identity).with_grants(grants).to_jwt()


async def scenario(args, checks, seen):
    pub, sub = rtc.Room(), rtc.Room()
    pub_events, sub_events, tasks = [], [], []
    frames = {"n": 0}
    for name in ("reconnecting", "reconnected", "disconnected"):
        pub.on(name, lambda *a, name=name: pub_events.append(name))
    for name in ("participant_connected", "participant_disconnected"):
        sub.on(name, lambda p, name=name: sub_events.append([name, p.identity]))

    async def count(track):
        stream = rtc.VideoStream(track)
        async for _ in stream:
            frames["n"] += 1

    sub.on("track_subscribed", lambda track, pub_, p: track.kind == rtc.TrackKind.KIND_VIDEO
           and tasks.append(asyncio.ensure_future(count(track))))
    stop = asyncio.Event()
    try:
        await sub.connect(args.url, token(args, "watcher"))
        await pub.connect(args.url, token(args, "speaker"))
        source = rtc.VideoSource(320, 240)
        tasks.append(asyncio.ensure_future(send_video(source, video_frames(320, 240, 30), 20, stop)))
        await pub.local_participant.publish_track(
            rtc.LocalVideoTrack.create_video_track("camera", source),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=False))
        checks["video flows before"] = await until(lambda: frames["n"] >= 20, 15)
        sid_before = pub.local_participant.sid
        sub_events.clear()  # the speaker's own join, before the drop

        started = time.monotonic()
        await pub.simulate_scenario(SimulateScenarioKind.SIMULATE_SIGNAL_RECONNECT)
        checks["the publisher reconnects"] = await until(lambda: "reconnected" in pub_events, 20)
        seen["reconnected_after_s"] = round(time.monotonic() - started, 3)
        checks["as the same participant"] = pub.local_participant.sid == sid_before
        after = frames["n"]
        checks["video flows after"] = await until(lambda: frames["n"] >= after + 20, 15)
        await asyncio.sleep(0.5)
        seen["publisher_events"], seen["subscriber_events"] = list(pub_events), list(sub_events)
        checks["the subscriber saw no leave and no join"] = sub_events == []
        checks["no disconnect"] = "disconnected" not in pub_events
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await disconnect_all((pub, sub))


if __name__ == "__main__":
    run(__doc__, scenario, room="python-sdk-resume", timeout=60)
