#!/usr/bin/env python3
"""Subscriptions through LiveKit's Python SDK (`livekit`, LiveKit's Rust SDK
inside), as LiveKit's server would serve them. A publisher sends video and a
tone; a subscriber joins with `auto_subscribe=False` and:

- gets nothing until it subscribes, then only the video it chose, and the
  publisher hears `TrackSubscribed` (`wait_for_subscription`);
- disables the track (`UpdateTrackSettings{disabled}`): forwarding stops, then
  resumes when it enables it again;
- loses it when the publisher revokes its permission
  (`SubscriptionPermission`), and gets it back when it is granted again;
- unsubscribes: forwarding stops.

"Forwarding stops" is read off the node, not the SDK (which drops an
unsubscribed track on its own): `meridian_sfu_forwarded_bytes_total` on the
gateway's `/metrics` does not grow. Frames are counted where the SDK still
decodes them. Prints one JSON report on stdout: `checks` (name -> true/false),
`seen`, and `error` naming the failed checks; exits 1 when any failed.
"""
import asyncio
import urllib.request

from livekit import api, rtc
from livekit.rtc._ffi_client import FfiClient
from livekit.rtc._proto import ffi_pb2 as proto_ffi

from checks import disconnect_all, run, until

from sdk_call import SAMPLE_RATE, send_audio, send_video, video_frames

# Bytes a stopped track may still show over the quiet window: packets in flight
# when it stopped. A flowing 320x240 track forwards tens of kilobytes a second.
QUIET_BYTES = 3000


def token(args, identity):
    grants = api.VideoGrants(room_join=True, room=args.room)
    return api.AccessToken(args.api_key, args.api_secret).with_identity(identity).with_grants(grants).to_jwt()


def forwarded_bytes(metrics_url):
    with urllib.request.urlopen(metrics_url, timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("meridian_sfu_forwarded_bytes_total"))


async def quiet(args, frames, seconds=2.0):
    """Bytes the node forwards, and frames the subscriber decodes, over
    `seconds`, after a second to settle."""
    await asyncio.sleep(1.0)
    before, decoded = await asyncio.to_thread(forwarded_bytes, args.metrics_url), frames.count
    await asyncio.sleep(seconds)
    return await asyncio.to_thread(forwarded_bytes, args.metrics_url) - before, frames.count - decoded


def set_enabled(publication, enabled):
    """`RemoteTrackPublication.set_enabled` of the Rust SDK (UpdateTrackSettings);
    the Python SDK has no wrapper for it."""
    req = proto_ffi.FfiRequest()
    req.enable_remote_track_publication.track_publication_handle = publication._ffi_handle.handle
    req.enable_remote_track_publication.enabled = enabled
    FfiClient.instance.request(req)


class Frames:
    def __init__(self):
        self.count = 0


async def count_video(track, frames):
    stream = rtc.VideoStream(track)
    try:
        async for _ in stream:
            frames.count += 1
    finally:
        await stream.aclose()


async def scenario(args, checks, seen):
    pub, sub = rtc.Room(), rtc.Room()
    frames, tasks, subscribed, unsubscribed = Frames(), [], [], []

    @sub.on("track_subscribed")
    def on_subscribed(track, publication, participant):
        subscribed.append(rtc.TrackKind.Name(track.kind))
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            tasks.append(asyncio.ensure_future(count_video(track, frames)))

    sub.on("track_unsubscribed", lambda track, publication, participant: unsubscribed.append(rtc.TrackKind.Name(track.kind)))
    stop = asyncio.Event()
    try:
        await sub.connect(args.url, token(args, "viewer"), rtc.RoomOptions(auto_subscribe=False))
        await pub.connect(args.url, token(args, "presenter"))
        video = rtc.VideoSource(320, 240)
        audio = rtc.AudioSource(SAMPLE_RATE, 1)
        tasks.append(asyncio.ensure_future(send_video(video, video_frames(320, 240, 30), 20, stop)))
        tasks.append(asyncio.ensure_future(send_audio(audio, stop)))
        vtrack = rtc.LocalVideoTrack.create_video_track("camera", video)
        vlocal = await pub.local_participant.publish_track(
            vtrack, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=False))
        await pub.local_participant.publish_track(
            rtc.LocalAudioTrack.create_audio_track("microphone", audio),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))

        def publications():
            p = next((p for p in sub.remote_participants.values() if p.identity == "presenter"), None)
            return list(p.track_publications.values()) if p else []
        checks["the subscriber hears of both tracks"] = await until(lambda: len(publications()) == 2, 10)
        idle, _ = await quiet(args, frames)
        seen["bytes_before_subscribing"] = idle
        checks["auto_subscribe off subscribes to nothing"] = not subscribed and idle < QUIET_BYTES

        vpub = next(p for p in publications() if p.kind == rtc.TrackKind.KIND_VIDEO)
        vpub.set_subscribed(True)
        checks["subscribing brings the video"] = await until(lambda: frames.count >= 20, 15)
        try:
            await asyncio.wait_for(vlocal.wait_for_subscription(), 10)
            checks["the publisher hears TrackSubscribed"] = True
        except asyncio.TimeoutError:
            checks["the publisher hears TrackSubscribed"] = False
        await asyncio.sleep(1)
        seen["subscribed"] = list(subscribed)
        checks["only the chosen track is subscribed"] = subscribed == ["KIND_VIDEO"]

        set_enabled(vpub, False)
        stopped, decoded = await quiet(args, frames)
        seen["bytes_while_disabled"], seen["frames_while_disabled"] = stopped, decoded
        checks["a disabled track is not forwarded"] = stopped < QUIET_BYTES and decoded == 0
        set_enabled(vpub, True)
        resumed_from = frames.count
        checks["enabling it again resumes the video"] = await until(lambda: frames.count >= resumed_from + 20, 15)

        pub.local_participant.set_track_subscription_permissions(allow_all_participants=False)
        revoked, _ = await quiet(args, frames)
        seen["bytes_while_not_allowed"] = revoked
        checks["revoking permission stops the video"] = revoked < QUIET_BYTES
        pub.local_participant.set_track_subscription_permissions(allow_all_participants=True)
        regranted_from = frames.count
        checks["granting it back brings it back"] = await until(lambda: frames.count >= regranted_from + 20, 15)
        seen["subscribed_after_regrant"] = list(subscribed)
        seen["unsubscribed_after_regrant"] = list(unsubscribed)

        vpub.set_subscribed(False)
        gone, _ = await quiet(args, frames)
        seen["bytes_after_unsubscribing"] = gone
        checks["unsubscribing stops the video"] = gone < QUIET_BYTES
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await disconnect_all((pub, sub))


if __name__ == "__main__":
    run(__doc__, scenario, room="python-sdk-subscribe", timeout=90,
                extra_args=[("--metrics-url", {"required": True,
                             "help": "the gateway's /metrics, e.g. http://192.0.2.10:7910/metrics"})])
