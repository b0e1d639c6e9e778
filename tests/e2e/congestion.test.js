// Congestion control per subscriber (issue 13 item 3): bob's browser runs in a
// network namespace of its own, behind a veth pair whose egress towards him is
// shaped by tbf. Alice publishes 640x360 with a 320x180 layer beside it from
// the main namespace. Unconstrained, bob's large tile decodes the top layer;
// capped at 300 kbit/s, the SFU's bandwidth estimate for bob falls and he gets
// the low layer within seconds, still decoding; at 32 kbit/s not even that
// fits: his video is paused (StreamStateUpdate, livekit-client's
// TrackStreamStateChanged) while audio goes on; lifted, it resumes and climbs
// back to the top layer (the SFU probes with padding towards it).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startMeridian, launchBrowser, browserNamespace, sdkToken, join, waitForMedia, sleep, receivedVideo, untilWidth, serverLog } from './harness.js';

const NS = 'meridian-cc';
const HOST = '198.51.100.5', BOB = '198.51.100.6';
const DEV = 'cc0';
let server, main, behind, namespace;

before(async () => {
  namespace = browserNamespace({ ns: NS, veth: 'cc', host: HOST, peer: BOB, origin: `http://${HOST}:7995` });
  server = await startMeridian({ port: 7995, sfuPort: 7996, turnPort: 3595, turnTlsPort: 5495, bind: HOST });
  main = await launchBrowser(namespace.flags);
  behind = await launchBrowser(namespace.flags, namespace.wrapper);
});
after(async () => {
  for (const b of [main, behind]) await b?.close();
  await server?.stop();
  namespace?.remove();
});

/** Shapes what goes to bob to `rate` (tbf), or lifts the shaping when `rate` is null. */
function shape(rate) {
  try { execFileSync('tc', ['qdisc', 'del', 'dev', DEV, 'root'], { stdio: 'ignore' }); } catch { /* none yet */ }
  if (rate) execFileSync('tc', ['qdisc', 'add', 'dev', DEV, 'root', 'tbf', 'rate', rate, 'burst', '16kbit', 'latency', '300ms']);
}

/** livekit-client's stream state of alice's camera at bob ('active' or 'paused'). */
const streamState = page => page.evaluate(() =>
  window.meridian.room().remoteParticipants.get('alice')?.getTrackPublication('camera')?.track?.streamState);

async function until(f, what, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await f();
    if (last.ok) return last;
    await sleep(300);
  }
  throw new Error(`${what} within ${timeoutMs} ms; last ${JSON.stringify(last)}\n${serverLog(server)}`);
}

const audioPackets = async page => (await page.evaluate(() => window.meridian.stats())).audio.find(a => a.identity === 'alice')?.packetsReceived || 0;

test('a capped link gets the low layer, a starved one pauses video, and both climb back', async t => {
  const capture = { videoCaptureDefaults: { resolution: { width: 640, height: 360, frameRate: 30 } } };
  const a = await join(main, server, await sdkToken('e2e-cc', 'alice'), {}, capture);
  const b = await join(behind, server, await sdkToken('e2e-cc', 'bob'), {}, capture);
  try {
    await waitForMedia(b.page, 'alice', { timeoutMs: 45_000 });
    const top = await untilWidth(b.page, 'alice', w => w > 320, 'decodes the top layer unconstrained', 30_000);
    t.diagnostic(`unconstrained: ${top.frameWidth}x${top.frameHeight}`);

    shape('300kbit');
    let since = Date.now();
    const low = await untilWidth(b.page, 'alice', w => w > 0 && w <= 320, 'falls to the low layer at 300 kbit/s', 20_000);
    t.diagnostic(`300 kbit/s: ${low.frameWidth}x${low.frameHeight} after ${Date.now() - since} ms`);
    await sleep(5_000);
    const held = await receivedVideo(b.page, 'alice');
    t.diagnostic(`5 s later: ${held.framesDecoded - low.framesDecoded} frames decoded, ${held.frameWidth} wide, `
      + `freezes ${low.freezeCount} -> ${held.freezeCount}`);
    assert.ok(held.frameWidth <= 320, `stays on the low layer under the cap: ${JSON.stringify(held)}`);
    assert.ok(held.framesDecoded - low.framesDecoded >= 25, `keeps decoding under the cap: ${JSON.stringify([low, held])}`);

    shape('32kbit');
    since = Date.now();
    await until(async () => ({ ok: await streamState(b.page) === 'paused' }), 'video paused at 32 kbit/s', 30_000);
    t.diagnostic(`32 kbit/s: paused after ${Date.now() - since} ms`);
    assert.ok(await b.page.evaluate(() => document.querySelectorAll('.tile.paused').length === 1),
      'the demo page says on alice\'s tile that her video is paused');
    const heard = await audioPackets(b.page);
    await sleep(3_000);
    const heardLater = await audioPackets(b.page);
    t.diagnostic(`audio while paused: ${heardLater - heard} packets in 3 s`);
    assert.ok(heardLater - heard >= 30, `audio goes on while video is paused: ${heard} -> ${heardLater}`);

    shape(null);
    since = Date.now();
    await until(async () => ({ ok: await streamState(b.page) === 'active' }), 'video resumed once lifted', 20_000);
    const back = await untilWidth(b.page, 'alice', w => w > 320, 'climbs back to the top layer once lifted', 40_000);
    t.diagnostic(`lifted: top layer again after ${Date.now() - since} ms; freezes ${back.freezeCount}, `
      + `PLIs ${back.pliCount}, dropped ${back.framesDropped}`);
  } finally {
    shape(null);
    for (const p of [a, b]) await p.context.close();
  }
});
