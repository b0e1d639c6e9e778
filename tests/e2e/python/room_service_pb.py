#!/usr/bin/env python3
"""RoomService over protobuf bodies, through LiveKit's Python server SDK
(`livekit-api`, which sends `application/protobuf`): lists the participants of
a live room, reads it and one participant back, and checks two refusals (a
token that does not administer the room, a room that does not exist).

Prints one JSON report on stdout: participants, room_metadata, bob_metadata,
not_admin and no_such_room (the Twirp codes of the refusals), and error when a
call failed unexpectedly; exits 1 then.
"""
import argparse
import asyncio
import json
import sys
import warnings

from livekit import api
from livekit.api.twirp_client import ServerError


async def code_of(call):
    try:
        await call
    except ServerError as e:
        return e.code
    return "ok"


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="gateway URL, e.g. http://127.0.0.1:7930")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--api-secret", required=True)
    parser.add_argument("--room", required=True)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="The HMAC key is")
    report = {}
    lk = api.LiveKitAPI(args.url, args.api_key, args.api_secret)
    try:
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room=args.room))
        report["participants"] = sorted(p.identity for p in listed.participants)
        rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[args.room]))
        report["room_metadata"] = rooms.rooms[0].metadata if rooms.rooms else None
        bob = await lk.room.get_participant(api.RoomParticipantIdentity(room=args.room, identity="bob"))
        report["bob_metadata"] = bob.metadata
        report["no_such_room"] = await code_of(
            lk.room.list_participants(api.ListParticipantsRequest(room=args.room + "-nobody")))
    except Exception as e:
        report["error"] = f"{type(e).__name__}: {e}"
    finally:
        await lk.aclose()
    # A token that administers another room only.
    token = api.AccessToken(args.api_key, args.api_secret).with_grants(
        api.VideoGrants(room_admin=True, room="another-room")).to_jwt()
    other = api.LiveKitAPI(args.url, args.api_key, args.api_secret)
    try:
        req = api.ListParticipantsRequest(room=args.room)
        report["not_admin"] = await code_of(
            other.room._client.request("RoomService", "ListParticipants", req,
                                       {"Authorization": f"Bearer {token}"}, api.ListParticipantsResponse))
    except Exception as e:
        report.setdefault("error", f"{type(e).__name__}: {e}")
    finally:
        await other.aclose()
    print(json.dumps(report), flush=True)
    return 1 if "error" in report else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
