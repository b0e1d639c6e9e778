// LiveKit's RoomService at /twirp/livekit.RoomService/*, driven by
// livekit-server-sdk's RoomServiceClient (JSON bodies) and LiveKit's Python
// livekit-api (protobuf bodies), against two livekit-client participants in
// Chromium: every method a backend uses, seen from the participants' side
// (metadata, data, mutes, publish permission revoked and granted back, removal
// and room deletion with LiveKit's disconnect reasons), and the refusals
// (grants that do not cover the call, a room that does not exist).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { RoomServiceClient, AccessToken, DataPacket_Kind, TrackSource } from 'livekit-server-sdk';
import { startMeridian, launchBrowser, sdkToken, join, waitForMedia, API_KEY, API_SECRET, serverLog } from './harness.js';

const PYTHON = process.env.PYTHON || 'python3';
const ROOM = 'e2e-room-service';
// LiveKit's DisconnectReason values (livekit_models.proto), as livekit-client reports them.
const PARTICIPANT_REMOVED = 4, ROOM_DELETED = 5;

let server, browser, rooms;
before(async () => {
  server = await startMeridian({ port: 7930, sfuPort: 7931, turnPort: 3515, turnTlsPort: 5415 });
  browser = await launchBrowser();
  rooms = new RoomServiceClient(server.url, API_KEY, API_SECRET);
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Polls `fn` in `page` until it returns truthy; returns that value. */
async function until(page, fn, arg, what, timeout = 10_000) {
  const handle = await page.waitForFunction(fn, arg, { timeout }).catch(e => {
    throw new Error(`${what}: ${e.message}`);
  });
  return handle.jsonValue();
}

/** RoomService with protobuf bodies, through LiveKit's Python livekit-api. */
function pythonCalls(room) {
  const out = execFileSync(PYTHON, ['python/room_service_pb.py', '--url', server.url, '--api-key', API_KEY,
    '--api-secret', API_SECRET, '--room', room], { encoding: 'utf8', timeout: 60_000 });
  return JSON.parse(out.trim().split('\n').pop());
}

test('RoomService lists, updates, mutes, revokes, removes and deletes as LiveKit\'s does', async t => {
  const a = await join(browser, server, await sdkToken(ROOM, 'alice'));
  const b = await join(browser, server, await sdkToken(ROOM, 'bob'));
  const context = () => '\n--- alice console:\n' + a.consoleLines.slice(-20).join('\n') + '\n--- bob console:\n'
    + b.consoleLines.slice(-20).join('\n') + '\n' + serverLog(server, 40);
  try {
    await waitForMedia(b.page, 'alice');

    // Listing: the room with both, and each participant with its tracks.
    const listed = (await rooms.listRooms()).find(r => r.name === ROOM);
    assert.ok(listed, 'listRooms has the live room');
    assert.equal(listed.numParticipants, 2);
    const people = (await rooms.listParticipants(ROOM)).map(p => p.identity).sort();
    assert.deepEqual(people, ['alice', 'bob']);
    const alice = await rooms.getParticipant(ROOM, 'alice');
    const camera = alice.tracks.find(tr => tr.source === TrackSource.CAMERA);
    assert.ok(camera, `alice publishes a camera: ${JSON.stringify(alice.tracks)}`);

    // Metadata, name and attributes set by the server reach the others.
    await rooms.updateParticipant(ROOM, 'bob', { metadata: 'vip', name: 'Bob B', attributes: { seat: '12' } });
    const seen = await until(a.page, () => {
      const p = window.meridian.room().remoteParticipants.get('bob');
      return p?.metadata === 'vip' && p.attributes.seat === '12' && { name: p.name, metadata: p.metadata };
    }, null, 'alice sees bob\'s new metadata and attributes');
    assert.deepEqual(seen, { name: 'Bob B', metadata: 'vip' });
    await rooms.updateRoomMetadata(ROOM, 'topic: demo');
    await until(b.page, () => window.meridian.room().metadata === 'topic: demo', null, 'bob sees the room metadata');

    // Data from the server, to bob only.
    await rooms.sendData(ROOM, new TextEncoder().encode('from the backend'), DataPacket_Kind.RELIABLE,
      { destinationIdentities: ['bob'] });
    await until(b.page, () => window.meridian.received.some(m => m.text === 'from the backend'), null, 'bob gets the data');
    assert.ok(!(await a.page.evaluate(() => window.meridian.received.some(m => m.text === 'from the backend'))),
      'alice, not named, does not');

    // Subscriptions set by the server: bob loses alice's camera, then has it again.
    await rooms.updateSubscriptions(ROOM, 'bob', [camera.sid], false);
    await until(b.page, () => !window.meridian.room().remoteParticipants.get('alice')
      ?.getTrackPublication('camera')?.isSubscribed, null, 'bob is unsubscribed from the camera');
    await rooms.updateSubscriptions(ROOM, 'bob', [camera.sid], true);
    await waitForMedia(b.page, 'alice', { videoTrackSid: camera.sid });

    // A server mute: alice's client mutes its camera, and bob sees it muted.
    const muted = await rooms.mutePublishedTrack(ROOM, 'alice', camera.sid, true);
    assert.equal(muted.muted, true);
    await until(a.page, sid => window.meridian.room().localParticipant.getTrackPublication('camera')?.isMuted
      && window.meridian.room().localParticipant.getTrackPublication('camera')?.trackSid === sid, camera.sid,
      'alice\'s client mutes its camera');
    await until(b.page, () => window.meridian.room().remoteParticipants.get('alice')
      ?.getTrackPublication('camera')?.isMuted, null, 'bob sees the camera muted');

    // Remote unmute is LiveKit's opt-in; the client unmutes itself.
    await assert.rejects(rooms.mutePublishedTrack(ROOM, 'alice', camera.sid, false), /remote unmute/);
    await a.page.evaluate(() => window.meridian.room().localParticipant.getTrackPublication('camera').unmute());
    await until(b.page, () => window.meridian.room().remoteParticipants.get('alice')
      ?.getTrackPublication('camera')?.isMuted === false, null, 'bob sees the camera unmuted');

    // Publish permission revoked: the camera is unpublished; granted back, a new one flows.
    await rooms.updateParticipant(ROOM, 'alice', { permission: { canPublish: false, canSubscribe: true, canPublishData: true } });
    await until(a.page, () => window.meridian.room().localParticipant.permissions?.canPublish === false, null,
      'alice\'s client hears it may not publish');
    await until(b.page, () => window.meridian.room().remoteParticipants.get('alice')?.trackPublications.size === 0, null,
      'camera and microphone are gone at bob');
    await rooms.updateParticipant(ROOM, 'alice', { permission: { canPublish: true, canSubscribe: true, canPublishData: true } });
    await until(a.page, () => window.meridian.room().localParticipant.permissions?.canPublish === true, null,
      'alice\'s client hears it may publish again');
    const again = await a.page.evaluate(async () => {
      await window.meridian.room().localParticipant.setMicrophoneEnabled(true);
      return window.meridian.republishCamera();
    });
    await waitForMedia(b.page, 'alice', { videoTrackSid: again });

    // The same service over protobuf, from LiveKit's Python server SDK.
    const py = pythonCalls(ROOM);
    t.diagnostic(`python livekit-api: ${JSON.stringify(py)}`);
    assert.equal(py.error, undefined, `python livekit-api: ${py.error}`);
    assert.deepEqual(py.participants, ['alice', 'bob']);
    assert.equal(py.room_metadata, 'topic: demo');
    assert.equal(py.bob_metadata, 'vip');
    assert.equal(py.not_admin, 'unauthenticated');
    assert.equal(py.no_such_room, 'not_found');

    // Removal and deletion, with LiveKit's reasons.
    await rooms.removeParticipant(ROOM, 'bob');
    const reasonBob = await until(b.page, () => window.meridian.disconnectReason() !== undefined
      && window.meridian.disconnectReason(), null, 'bob is disconnected');
    assert.equal(reasonBob, PARTICIPANT_REMOVED, 'bob hears why');
    await assert.rejects(rooms.getParticipant(ROOM, 'bob'), /not exist|not_found/i, 'bob is gone');
    await rooms.deleteRoom(ROOM);
    const reasonAlice = await until(a.page, () => window.meridian.disconnectReason() !== undefined
      && window.meridian.disconnectReason(), null, 'alice is disconnected');
    assert.equal(reasonAlice, ROOM_DELETED, 'alice hears why');
    assert.ok(!(await rooms.listRooms()).some(r => r.name === ROOM), 'the room is gone');
  } catch (e) {
    e.message += context();
    throw e;
  } finally {
    await a.context.close();
    await b.context.close();
  }
});

test('RoomService refuses grants that do not cover the call, and rooms that do not exist', async () => {
  const scoped = new AccessToken(API_KEY, API_SECRET, { ttl: '10m' });
  scoped.addGrant({ roomAdmin: true, room: 'some-other-room' });
  const jwt = await scoped.toJwt();
  const call = (method, body, token = jwt) => fetch(`${server.url}/twirp/livekit.RoomService/${method}`, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify(body),
  });
  for (const [method, body] of [['ListRooms', {}], ['CreateRoom', { name: 'x' }], ['ListParticipants', { room: ROOM }]]) {
    const res = await call(method, body);
    assert.equal(res.status, 401, method);
    assert.deepEqual(await res.json(), { code: 'unauthenticated', msg: 'permissions denied' }, method);
  }
  const admin = new AccessToken(API_KEY, API_SECRET, { ttl: '10m' });
  admin.addGrant({ roomAdmin: true, room: 'nobody-here', roomCreate: true, roomList: true });
  const adminJwt = await admin.toJwt();
  const missing = await call('ListParticipants', { room: 'nobody-here' }, adminJwt);
  assert.equal(missing.status, 404);
  assert.deepEqual(await missing.json(), { code: 'not_found', msg: 'requested room does not exist' });
  const noToken = await fetch(`${server.url}/twirp/livekit.RoomService/ListRooms`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  assert.equal(noToken.status, 401);
  const badRoute = await call('NoSuchMethod', {}, adminJwt);
  assert.equal(badRoute.status, 404);
  assert.equal((await badRoute.json()).code, 'bad_route');

  // CreateRoom records a room that listRooms then shows, before anyone joins.
  const created = await new RoomServiceClient(server.url, API_KEY, API_SECRET).createRoom({ name: 'e2e-created' });
  assert.match(created.sid, /^RM_/);
  assert.ok((await rooms.listRooms(['e2e-created'])).some(r => r.name === 'e2e-created' && r.sid === created.sid));
  await rooms.deleteRoom('e2e-created');
  assert.deepEqual(await rooms.listRooms(['e2e-created']), []);
});
