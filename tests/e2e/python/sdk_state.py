#!/usr/bin/env python3
"""Participant state through LiveKit's Python SDK (`livekit`, LiveKit's Rust SDK
inside), as LiveKit's server would answer it:

- alice's token carries attributes and `canUpdateOwnMetadata`; she sets her
  metadata, name and attributes, and bob sees each change;
- bob's token allows neither metadata updates nor any source but the
  microphone: his metadata update is refused with a reason (not left to time
  out), his camera is refused, his microphone reaches alice;
- a second session as alice evicts the first with DUPLICATE_IDENTITY.

Prints one JSON report on stdout: `checks` (name -> true/false), `seen` (what
each side saw) and `error` naming the failed checks; exits 1 when any failed.
"""
import asyncio
import time

from livekit import api, rtc
from livekit.rtc._ffi_client import FfiClient
from livekit.rtc._proto import ffi_pb2 as proto_ffi

from checks import disconnect_all, run, until

SAMPLE_RATE = 48_000


def token(args, identity, *, attributes=None, **grants):
    t = (
        api.AccessToken(args.api_key, args.api_secret)
        .with_identity(identity)
        .with_name(identity)
        .with_grants(api.VideoGrants(room_join=True, room=args.room, **grants))
    )
    if attributes:
        t = t.with_attributes(attributes)
    return t.to_jwt()


async def local_update(participant, field, value):
    """One of the SDK's `set_local_metadata|name|attributes` requests; returns the
    error the SDK reports for it (None on success). The Python wrappers drop it."""
    req = proto_ffi.FfiRequest()
    body = getattr(req, field)
    body.local_participant_handle = participant._ffi_handle.handle
    if field == "set_local_attributes":
        for k, v in value.items():
            entry = body.attributes.add()
            entry.key, entry.value = k, v
    else:
        setattr(body, field.removeprefix("set_local_"), value)
    queue = FfiClient.instance.queue.subscribe()
    try:
        resp = FfiClient.instance.request(req)
        async_id = getattr(resp, field).async_id
        event = await queue.wait_for(lambda e: getattr(e, field).async_id == async_id)
        cb = getattr(event, field)
        return cb.error if cb.HasField("error") else None
    finally:
        FfiClient.instance.queue.unsubscribe(queue)


def view(room, identity):
    p = next((p for p in room.remote_participants.values() if p.identity == identity), None)
    if p is None:
        return None
    return {"sid": p.sid, "name": p.name, "metadata": p.metadata, "attributes": dict(p.attributes)}


async def scenario(args, checks, seen):
    alice, bob, alice2 = rtc.Room(), rtc.Room(), rtc.Room()
    events = {"bob": [], "alice": []}
    for name, room in (("bob", bob), ("alice", alice)):
        for ev in ("participant_metadata_changed", "participant_name_changed", "participant_attributes_changed"):
            room.on(ev, lambda *a, ev=ev, name=name: events[name].append(ev))
    subscribed = []
    alice.on("track_subscribed", lambda track, pub, participant: subscribed.append(
        [participant.identity, rtc.TrackKind.Name(track.kind), rtc.TrackSource.Name(pub.source)]))
    disconnected = asyncio.get_running_loop().create_future()
    alice.on("disconnected", lambda reason: disconnected.done() or disconnected.set_result(reason))
    rooms = [alice, bob, alice2]
    try:
        await alice.connect(args.url, token(args, "alice", attributes={"role": "host"}, can_update_own_metadata=True))
        await bob.connect(args.url, token(args, "bob", can_publish_sources=["microphone"]))

        checks["token attributes reach others"] = await until(
            lambda: (view(bob, "alice") or {}).get("attributes") == {"role": "host"}, 5)

        errors = [
            await local_update(alice.local_participant, "set_local_metadata", "m1"),
            await local_update(alice.local_participant, "set_local_name", "Alice A"),
            await local_update(alice.local_participant, "set_local_attributes", {"role": "host", "mood": "happy"}),
        ]
        seen["alice_update_errors"] = errors
        checks["allowed updates succeed"] = errors == [None, None, None]
        want = {"name": "Alice A", "metadata": "m1", "attributes": {"role": "host", "mood": "happy"}}
        checks["others see name, metadata and attributes"] = await until(
            lambda: {k: v for k, v in (view(bob, "alice") or {}).items() if k != "sid"} == want, 5)
        checks["the participant sees its own change"] = alice.local_participant.metadata == "m1"
        checks["each change fires its event"] = {"participant_metadata_changed", "participant_name_changed",
                                                 "participant_attributes_changed"} <= set(events["bob"])

        started = time.monotonic()
        refused = await local_update(bob.local_participant, "set_local_metadata", "sneaky")
        seen["bob_update_error"] = refused
        seen["bob_update_refused_in_s"] = round(time.monotonic() - started, 3)
        # The SDK gives up on a request after 5 s; an answer comes at once.
        checks["a refused update gets an answer with the reason"] = (
            refused is not None and "permission" in refused.lower() and time.monotonic() - started < 4)
        await asyncio.sleep(0.5)
        checks["nobody sees a refused update"] = (view(alice, "bob") or {}).get("metadata") == ""

        camera = rtc.LocalVideoTrack.create_video_track("camera", rtc.VideoSource(160, 120))
        try:
            await bob.local_participant.publish_track(camera, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))
            seen["camera"] = "published"
        except Exception as e:  # what the SDK says of the refusal
            seen["camera"] = f"refused: {type(e).__name__}: {e}"
        checks["a source outside canPublishSources is refused"] = seen["camera"].startswith("refused")
        audio = rtc.AudioSource(SAMPLE_RATE, 1)
        mic = rtc.LocalAudioTrack.create_audio_track("microphone", audio)
        await bob.local_participant.publish_track(mic, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        checks["a listed source is published and subscribed"] = await until(
            lambda: ["bob", "KIND_AUDIO", "SOURCE_MICROPHONE"] in subscribed, 10)
        seen["alice_subscribed"] = subscribed
        checks["nothing but the microphone reaches others"] = all(s[2] == "SOURCE_MICROPHONE" for s in subscribed)

        old_sid = alice.local_participant.sid
        await alice2.connect(args.url, token(args, "alice", can_update_own_metadata=True))
        try:
            reason = await asyncio.wait_for(disconnected, 10)
            seen["first_alice_disconnected"] = rtc.DisconnectReason.Name(reason)
        except asyncio.TimeoutError:
            seen["first_alice_disconnected"] = None
        checks["the same identity evicts the old session"] = seen["first_alice_disconnected"] == "DUPLICATE_IDENTITY"
        checks["others see the new session"] = await until(
            lambda: (view(bob, "alice") or {}).get("sid") not in (None, old_sid), 5)
        seen["bob_sees"] = {p.identity: view(bob, p.identity) for p in bob.remote_participants.values()}
        seen["events"] = events
    finally:
        await disconnect_all(rooms)


if __name__ == "__main__":
    run(__doc__, scenario, room="python-sdk-state", timeout=60)
