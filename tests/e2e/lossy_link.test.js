// Loss recovery: bob's browser runs in a network namespace of its own, behind a
// veth pair on which, once the call is up, nftables drops 5 % of UDP packets
// each way (this kernel has no netem; `numgen random` does the same). Alice
// publishes from the main namespace. Bob keeps decoding her video: his NACKs are answered (nackCount
// rises, so loss was there and was repaired), he decodes at least 80 % of the
// frames alice sends, and freezes stay few.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startMeridian, launchBrowser, browserNamespace, sdkToken, join, waitForMedia, sleep } from './harness.js';

const NS = 'meridian-lossy';
const HOST = '198.51.100.1', BOB = '198.51.100.2';
const TABLE = 'meridian_lossy';
const LOSS_PERCENT = 5;
let server, main, behind, namespace;

const run = (cmd, ...args) => execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
const quietly = f => { try { f(); } catch { /* not there */ } };

before(async () => {
  quietly(() => run('nft', 'delete', 'table', 'inet', TABLE));
  const origin = `http://${HOST}:7990`;
  namespace = browserNamespace({ ns: NS, veth: 'lossy', host: HOST, peer: BOB, origin });
  server = await startMeridian({ port: 7990, sfuPort: 7991, turnPort: 3585, turnTlsPort: 5485, bind: HOST });
  // Bob's Chromium starts inside the namespace; Playwright drives it over its stdio pipe.
  main = await launchBrowser(namespace.flags);
  behind = await launchBrowser(namespace.flags, namespace.wrapper);
});
after(async () => {
  for (const b of [main, behind]) await b?.close();
  await server?.stop();
  quietly(() => run('nft', 'delete', 'table', 'inet', TABLE));
  namespace?.remove();
});

/** From now on, 5 % of UDP to and from bob's namespace is dropped; TCP (signalling) is not. */
function startLoss() {
  run('nft', 'add', 'table', 'inet', TABLE);
  run('nft', 'add', 'chain', 'inet', TABLE, 'out', '{ type filter hook output priority 0 ; }');
  run('nft', 'add', 'chain', 'inet', TABLE, 'in', '{ type filter hook input priority 0 ; }');
  run('nft', 'add', 'rule', 'inet', TABLE, 'out', 'ip', 'daddr', BOB, 'meta', 'l4proto', 'udp',
    'numgen', 'random', 'mod', '100', '<', String(LOSS_PERCENT), 'counter', 'drop');
  run('nft', 'add', 'rule', 'inet', TABLE, 'in', 'ip', 'saddr', BOB, 'meta', 'l4proto', 'udp',
    'numgen', 'random', 'mod', '100', '<', String(LOSS_PERCENT), 'counter', 'drop');
}

/** alice's video at bob, from getStats. */
const video = page => page.evaluate(async () => {
  const pub = window.meridian.room().remoteParticipants.get('alice')?.getTrackPublication('camera');
  const report = pub?.track?.receiver ? await pub.track.receiver.getStats() : new Map();
  let v;
  report.forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'video') v = s; });
  return v && { framesDecoded: v.framesDecoded, nackCount: v.nackCount, packetsLost: v.packetsLost,
    packetsReceived: v.packetsReceived, freezeCount: v.freezeCount || 0, frameWidth: v.frameWidth };
});

/** Frames alice's camera has sent on its largest layer (what bob, with no settings, gets). */
const sent = page => page.evaluate(async () => {
  const report = await window.meridian.room().localParticipant.getTrackPublication('camera').track.sender.getStats();
  let best = { frameWidth: 0, framesSent: 0 };
  report.forEach(s => { if (s.type === 'outbound-rtp' && (s.frameWidth || 0) >= best.frameWidth) best = s; });
  return best.framesSent || 0;
});

test(`with ${LOSS_PERCENT} % loss each way, video keeps decoding: NACKs are answered`, async t => {
  const server_ = { url: server.url, wsUrl: server.wsUrl };
  const capture = { videoCaptureDefaults: { resolution: { width: 640, height: 360, frameRate: 30 } } };
  const a = await join(main, server_, await sdkToken('e2e-lossy', 'alice'), {}, capture);
  const b = await join(behind, server_, await sdkToken('e2e-lossy', 'bob'), {}, capture);
  try {
    await waitForMedia(b.page, 'alice', { timeoutMs: 45_000 });
    // The call is up; now the link turns lossy.
    startLoss();
    await sleep(2_000);
    const [before, sentBefore] = [await video(b.page), await sent(a.page)];
    await sleep(10_000);
    const [after, sentAfter] = [await video(b.page), await sent(a.page)];
    const drops = execFileSync('nft', ['list', 'table', 'inet', TABLE]).toString().match(/packets \d+/g);
    const frames = after.framesDecoded - before.framesDecoded;
    const framesSent = sentAfter - sentBefore;
    t.diagnostic(`10 s at ${LOSS_PERCENT} % loss: ${frames} frames decoded of ${framesSent} sent, NACKs ${before.nackCount} -> ${after.nackCount}, `
      + `lost ${after.packetsLost}, freezes ${after.freezeCount}, ${after.frameWidth} wide; nft dropped ${drops}`);
    assert.ok(after.nackCount > before.nackCount, `bob NACKed lost packets: ${JSON.stringify([before, after])}`);
    assert.ok(framesSent > 0 && frames >= 0.8 * framesSent, `frames kept coming: ${frames} decoded of ${framesSent} sent`);
    assert.ok(after.freezeCount - before.freezeCount <= 5, `freezes stay few: ${JSON.stringify([before, after])}`);
  } finally {
    for (const p of [a, b]) await p.context.close();
  }
});
