// Two livekit-client participants in Chromium join through the gateway URL, publish
// camera and microphone, and each decodes the other's video and receives audio:
// once over direct ICE, once with iceTransportPolicy 'relay' through the TURN relay.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMeridian, launchBrowser, apiToken, sdkToken, join, waitForMedia, serverLog } from './harness.js';

let server, browser;
before(async () => {
  server = await startMeridian();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

async function twoParticipants(room, connectOptions, roomOptions) {
  const alice = await apiToken(server, room, 'alice');
  assert.equal(alice.url, server.wsUrl, 'the API returns the gateway URL');
  const bobToken = await sdkToken(room, 'bob');
  const a = await join(browser, server, alice.token, connectOptions, roomOptions);
  const b = await join(browser, server, bobToken, connectOptions, roomOptions);
  try {
    const atA = await waitForMedia(a.page, 'bob');
    const atB = await waitForMedia(b.page, 'alice');
    return { a, b, atA, atB };
  } catch (e) {
    e.message += '\n--- alice console:\n' + a.consoleLines.slice(-30).join('\n') + '\n--- bob console:\n' + b.consoleLines.slice(-30).join('\n')
      + '\n' + serverLog(server, 60);
    throw e;
  }
}

test('two browsers exchange video and audio through the gateway', async () => {
  const { a, b, atA, atB } = await twoParticipants('e2e-direct');
  assert.equal(atA.now.video.mimeType, 'video/VP8', 'VP8 by default');
  assert.ok(atA.now.video.framesDecoded > atA.first.video.framesDecoded, 'alice decodes a growing number of bob\'s frames');
  assert.ok(atB.now.video.framesDecoded > atB.first.video.framesDecoded, 'bob decodes a growing number of alice\'s frames');
  const region = await a.page.evaluate(() => window.meridian.room().engine.latestJoinResponse.serverInfo.region);
  assert.equal(region, 'local');

  // Data packets (chat) go through the SFU to the others, stamped with the sender.
  await a.page.evaluate(() => window.meridian.sendData('hello from alice'));
  await b.page.waitForFunction(() => window.meridian.received.some(m => m.text === 'hello from alice'), null, { timeout: 10_000 });
  const got = await b.page.evaluate(() => window.meridian.received.find(m => m.text === 'hello from alice'));
  assert.equal(got.from, 'alice', 'the packet names its sender');
  await a.context.close();
  await b.context.close();
});

// A camera published on a connected PC sends media within a round trip of our
// answer, racing webrtc-rs starting the receivers of its simulcast layers; a layer
// that lost the race never fired on_track (engine::await_receivers). Unpublishing
// also reuses the subscriber's transceiver for the next down-track.
test('a camera republished mid-call reaches the other side every time', async () => {
  const { a, b } = await twoParticipants('e2e-republish');
  for (let round = 1; round <= 5; round++) {
    const trackSid = await b.page.evaluate(() => window.meridian.republishCamera());
    try {
      await waitForMedia(a.page, 'bob', { videoTrackSid: trackSid, timeoutMs: 15_000 });
    } catch (e) {
      e.message = `round ${round}, ${trackSid}: ${e.message}\n` + serverLog(server, 40);
      throw e;
    }
  }
  await a.context.close();
  await b.context.close();
});

test('H.264 video is forwarded too', async () => {
  const { a, b, atA } = await twoParticipants('e2e-h264', {}, { publishDefaults: { videoCodec: 'h264' } });
  assert.equal(atA.now.video.mimeType, 'video/H264', 'the subscriber decodes H.264');
  await a.context.close();
  await b.context.close();
});

test('with iceTransportPolicy relay, media flows through the TURN relay', async () => {
  const opts = { rtcConfig: { iceTransportPolicy: 'relay' } };
  const { a, b } = await twoParticipants('e2e-relay', opts);
  for (const p of [a, b]) {
    const types = await p.page.evaluate(() => window.meridian.selectedCandidateTypes());
    assert.deepEqual([...new Set(types)], ['relay'], 'the subscriber PC runs over a relayed candidate');
  }
  await a.context.close();
  await b.context.close();
});
