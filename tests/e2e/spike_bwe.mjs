// Issue 13's engine spike, checked by hand (not a test): does str0m's send-side
// bandwidth estimate follow a capped link to a real browser, and climb back
// with padding probes when the cap is lifted? Chromium publishes to the spike
// from the main namespace; a second Chromium subscribes from a namespace of
// its own behind a veth pair, whose egress towards it is capped by tbf for a
// while. The spike (started here with --bwe) prints each subscriber estimate;
// this prints the timeline with what the subscriber decoded.
//
// Usage (as root, in a namespace of its own: unshare -n, lo up):
//   cd tests/e2e && node spike_bwe.mjs ../../target/release/meridian-str0m-spike
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import { launchBrowser } from './harness.js';

const NS = 'meridian-spike-bwe';
const HOST = '198.51.100.1', SUB = '198.51.100.2';
const CAP = process.env.CAP || '300kbit';
const run = (cmd, ...args) => execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
const quietly = f => { try { f(); } catch { /* not there */ } };
const sleep = ms => new Promise(r => setTimeout(r, ms));

quietly(() => run('ip', 'netns', 'del', NS));
quietly(() => run('ip', 'link', 'del', 'bwe0'));
run('ip', 'netns', 'add', NS);
run('ip', 'link', 'add', 'bwe0', 'type', 'veth', 'peer', 'name', 'bwe1');
run('ip', 'link', 'set', 'bwe1', 'netns', NS);
run('ip', 'addr', 'add', `${HOST}/24`, 'dev', 'bwe0');
run('ip', 'link', 'set', 'bwe0', 'up');
run('ip', 'netns', 'exec', NS, 'ip', 'addr', 'add', `${SUB}/24`, 'dev', 'bwe1');
run('ip', 'netns', 'exec', NS, 'ip', 'link', 'set', 'bwe1', 'up');
run('ip', 'netns', 'exec', NS, 'ip', 'link', 'set', 'lo', 'up');

const t0 = Date.now();
const at = () => ((Date.now() - t0) / 1000).toFixed(1);
const spike = spawn(process.argv[2], ['--http', `${HOST}:7900`, '--udp', `${HOST}:7901`, '--bwe'], { stdio: ['ignore', 'pipe', 'inherit'] });
let estimate = '-';
spike.stdout.on('data', d => { for (const line of d.toString().split('\n')) { const m = line.match(/^bwe \S+ (\d+)/); if (m) estimate = m[1]; } });
await sleep(500);

const dir = mkdtempSync(joinPath(tmpdir(), 'spike-bwe-'));
const wrapper = joinPath(dir, 'chromium-in-ns');
writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${NS} ${process.env.CHROMIUM || '/usr/bin/chromium'} "$@"\n`);
chmodSync(wrapper, 0o755);
const base = `http://${HOST}:7900`;
const flags = [`--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE ${HOST}`, `--unsafely-treat-insecure-origin-as-secure=${base}`];
const main = await launchBrowser(flags);
const behind = await launchBrowser(flags, wrapper);
try {
  const negotiate = `async (pc, path) => {
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise(r => { if (pc.iceGatheringState === 'complete') r(); pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r(); });
    const res = await fetch(path, { method: 'POST', body: pc.localDescription.sdp });
    if (res.status !== 201) throw new Error(path + ': ' + res.status + ' ' + await res.text());
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  }`;
  const publisher = await (await main.newContext()).newPage();
  await publisher.goto(base + '/');
  await publisher.evaluate(`(async () => {
    const negotiate = ${negotiate};
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 }, audio: true });
    window.pc = new RTCPeerConnection();
    for (const t of stream.getTracks()) window.pc.addTransceiver(t, { direction: 'sendonly' });
    await negotiate(window.pc, '/whip/bwe');
  })()`);
  const subscriber = await (await behind.newContext()).newPage();
  await subscriber.goto(base + '/');
  await subscriber.evaluate(`(async () => {
    const negotiate = ${negotiate};
    window.pc = new RTCPeerConnection();
    window.pc.addTransceiver('video', { direction: 'recvonly' });
    window.pc.addTransceiver('audio', { direction: 'recvonly' });
    await negotiate(window.pc, '/whep/bwe');
  })()`);
  const stats = () => subscriber.evaluate(`(async () => {
    let v = {};
    (await window.pc.getStats()).forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'video') v = s; });
    return { frames: v.framesDecoded || 0, bytes: v.bytesReceived || 0, freezes: v.freezeCount || 0 };
  })()`);
  let last = await stats(), lastAt = Date.now();
  const phase = async (name, seconds) => {
    for (let i = 0; i < seconds; i++) {
      await sleep(1000);
      const now = await stats(), t = Date.now();
      const kbps = Math.round((now.bytes - last.bytes) * 8 / (t - lastAt));
      console.log(`${at()} s  ${name.padEnd(8)} estimate ${estimate} kbit/s  received ${kbps} kbit/s  frames +${now.frames - last.frames}  freezes ${now.freezes}`);
      last = now; lastAt = t;
    }
  };
  await phase('open', 15);
  run('tc', 'qdisc', 'add', 'dev', 'bwe0', 'root', 'tbf', 'rate', CAP, 'burst', '8kb', 'latency', '100ms');
  await phase(`cap ${CAP}`, 20);
  run('tc', 'qdisc', 'del', 'dev', 'bwe0', 'root');
  await phase('lifted', 25);
} finally {
  await main.close();
  await behind.close();
  spike.kill();
  quietly(() => run('ip', 'link', 'del', 'bwe0'));
  quietly(() => run('ip', 'netns', 'del', NS));
}
