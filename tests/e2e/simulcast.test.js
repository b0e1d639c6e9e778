// Per-subscriber simulcast: alice publishes 640x360 with a 320x180 layer
// beside it; each subscriber gets the layer it asks for. Bob, with no
// settings, gets the top one; asking for LOW he drops to 320x180 and for HIGH
// climbs back; carol says her tile is 320x180 (what adaptive stream sends) and
// gets the small layer while bob keeps the large one. Switches keep decoding
// (no decoder errors: framesDecoded keeps growing, freezes stay few). With
// dynacast on, the layer nobody watches stops being encoded (after LiveKit's
// 5 s pause delay) and comes back at once when someone asks for it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMeridian, launchBrowser, sdkToken, join, waitForMedia, sleep, receivedVideo, untilWidth as untilAliceWidth } from './harness.js';

const ROOM = 'e2e-simulcast';
let server, browser;
before(async () => {
  server = await startMeridian({ port: 7980, sfuPort: 7981, turnPort: 3565, turnTlsPort: 5465 });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

const capture = { videoCaptureDefaults: { resolution: { width: 640, height: 360, frameRate: 30 } } };

const received = page => receivedVideo(page, 'alice');
const untilWidth = (page, pred, what, timeoutMs) => untilAliceWidth(page, 'alice', pred, what, timeoutMs);

/** Sends UpdateTrackSettings for alice's camera from `page` through livekit-client's own calls. */
const setQuality = (page, quality) => page.evaluate(q => {
  const pub = window.meridian.room().remoteParticipants.get('alice').getTrackPublication('camera');
  pub.setVideoQuality(q);
}, quality);

test('each subscriber gets the simulcast layer it asks for, and switches cleanly', async t => {
  const a = await join(browser, server, await sdkToken(ROOM, 'alice'), {}, capture);
  const b = await join(browser, server, await sdkToken(ROOM, 'bob'), {}, capture);
  const c = await join(browser, server, await sdkToken(ROOM, 'carol'), {}, capture);
  try {
    await waitForMedia(b.page, 'alice');
    await waitForMedia(c.page, 'alice');
    const layers = await a.page.evaluate(() => window.meridian.room().localParticipant.getTrackPublication('camera')
      .track.sender.getParameters().encodings.map(e => e.rid));
    t.diagnostic(`alice sends layers ${JSON.stringify(layers)}`);
    assert.ok(layers.length >= 2, `alice publishes simulcast: ${layers}`);

    const top = await untilWidth(b.page, w => w > 320, 'arrives above 320 wide');
    t.diagnostic(`bob, no settings: ${top.frameWidth}x${top.frameHeight}`);

    // Carol's tile is small: the low layer; bob keeps the top.
    await c.page.evaluate(() => window.meridian.room().remoteParticipants.get('alice').getTrackPublication('camera')
      .setVideoDimensions({ width: 320, height: 180 }));
    const small = await untilWidth(c.page, w => w > 0 && w <= 320, 'drops to 320 wide for a 320x180 tile');
    const still = await received(b.page);
    assert.ok(still.frameWidth > 320, `bob is not moved by carol's tile: ${JSON.stringify(still)}`);
    t.diagnostic(`carol, 320x180 tile: ${small.frameWidth}x${small.frameHeight}`);

    // Bob asks for LOW (VideoQuality 0), then HIGH (2).
    await setQuality(b.page, 0);
    const low = await untilWidth(b.page, w => w > 0 && w <= 320, 'drops to 320 wide on LOW');
    await setQuality(b.page, 2);
    const high = await untilWidth(b.page, w => w > 320, 'climbs back above 320 wide on HIGH');
    t.diagnostic(`bob LOW ${low.frameWidth}x${low.frameHeight}, HIGH ${high.frameWidth}x${high.frameHeight}; `
      + `freezes ${high.freezeCount}, PLIs ${high.pliCount}, dropped ${high.framesDropped}`);
    assert.ok(high.framesDecoded > low.framesDecoded, 'decoding went on through the switches');
    assert.ok(high.freezeCount <= 3, `switches freeze at most briefly: ${JSON.stringify(high)}`);
  } finally {
    for (const p of [a, b, c]) await p.context.close();
  }
});

/** Which of alice's camera encodings (by rid) are active, as her browser sends them. */
const activeLayers = page => page.evaluate(() => Object.fromEntries(window.meridian.room().localParticipant
  .getTrackPublication('camera').track.sender.getParameters().encodings.map(e => [e.rid, e.active !== false])));

async function untilActive(page, want, what, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await activeLayers(page);
    if (Object.entries(want).every(([rid, on]) => last[rid] === on)) return Date.now();
    await sleep(200);
  }
  throw new Error(`${what}: alice's encodings ${JSON.stringify(last)}, wanted ${JSON.stringify(want)}`);
}

test('dynacast: a layer nobody watches stops being sent, and comes back when someone asks', async t => {
  const dynacast = { ...capture, dynacast: true };
  const a = await join(browser, server, await sdkToken(`${ROOM}-dynacast`, 'alice'), {}, dynacast);
  const b = await join(browser, server, await sdkToken(`${ROOM}-dynacast`, 'bob'), {}, dynacast);
  try {
    await waitForMedia(b.page, 'alice');
    assert.deepEqual(await activeLayers(a.page), { q: true, h: true }, 'bob watches the top: both layers are sent');
    await setQuality(b.page, 0);
    const asked = Date.now();
    const off = await untilActive(a.page, { q: true, h: false }, 'the top layer turns off after the pause delay', 15_000);
    t.diagnostic(`h off ${off - asked} ms after bob asked for LOW`);
    assert.ok(off - asked >= 4000, `not before LiveKit's 5 s pause delay: ${off - asked} ms`);
    await untilWidth(b.page, w => w > 0 && w <= 320, 'bob decodes the low layer');
    await setQuality(b.page, 2);
    const back = Date.now();
    const on = await untilActive(a.page, { q: true, h: true }, 'the top layer comes back at once', 5_000);
    t.diagnostic(`h on ${on - back} ms after bob asked for HIGH`);
    await untilWidth(b.page, w => w > 320, 'bob decodes the top layer again');
  } finally {
    for (const p of [a, b]) await p.context.close();
  }
});
