// Issue 13's engine spike, checked by hand (not a test: the spike is never
// shipped; docs/benchmarks.md, sitting 7, and docs/decisions.md §24 say how it ran):
// Chromium publishes its fake camera and microphone to the str0m spike over
// WHIP and a second page subscribes over WHEP; both are plain
// RTCPeerConnections. Prints what the subscriber decoded.
//
// Usage (in a namespace with loopback only, like the browser tests):
//   target/debug/meridian-str0m-spike --http 127.0.0.1:7900 --udp 127.0.0.1:7901 &
//   cd tests/e2e && node spike_interop.mjs http://127.0.0.1:7900
import { launchBrowser } from './harness.js';

const base = process.argv[2] || 'http://127.0.0.1:7900';
const browser = await launchBrowser();
try {
  const open = async () => { const page = await (await browser.newContext()).newPage(); await page.goto(base + '/'); return page; };
  const negotiate = `async (pc, path) => {
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise(r => { if (pc.iceGatheringState === 'complete') r(); pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r(); });
    const res = await fetch(path, { method: 'POST', body: pc.localDescription.sdp });
    if (res.status !== 201) throw new Error(path + ': ' + res.status + ' ' + await res.text());
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  }`;
  const publisher = await open();
  await publisher.evaluate(`(async () => {
    const negotiate = ${negotiate};
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 }, audio: true });
    window.pc = new RTCPeerConnection();
    for (const t of stream.getTracks()) window.pc.addTransceiver(t, { direction: 'sendonly' });
    await negotiate(window.pc, '/whip/interop');
  })()`);
  const subscriber = await open();
  await subscriber.evaluate(`(async () => {
    const negotiate = ${negotiate};
    window.pc = new RTCPeerConnection();
    window.pc.addTransceiver('video', { direction: 'recvonly' });
    window.pc.addTransceiver('audio', { direction: 'recvonly' });
    await negotiate(window.pc, '/whep/interop');
  })()`);
  const stats = async () => subscriber.evaluate(`(async () => {
    const out = {};
    (await window.pc.getStats()).forEach(s => {
      if (s.type === 'inbound-rtp') out[s.kind] = { packets: s.packetsReceived, frames: s.framesDecoded, width: s.frameWidth, height: s.frameHeight, nacks: s.nackCount, plis: s.pliCount };
      if (s.type === 'candidate-pair' && s.nominated) out.pair = s.state;
    });
    return out;
  })()`);
  let last;
  for (let i = 0; i < 20; i++) {
    await new Promise(r => setTimeout(r, 500));
    last = await stats();
    if ((last.video?.frames || 0) > 60 && (last.audio?.packets || 0) > 100) break;
  }
  console.log(JSON.stringify(last));
  const ok = (last.video?.frames || 0) > 60 && (last.audio?.packets || 0) > 100;
  console.log(ok ? 'spike interop: Chromium to Chromium through str0m: video decoded, audio received' : 'spike interop: FAILED');
  process.exitCode = ok ? 0 : 1;
} finally {
  await browser.close();
}
