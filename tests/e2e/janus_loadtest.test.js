// The load tester's Janus adapter against a real Janus 1.1.2 (Debian's `janus`,
// VideoRoom plugin): one publisher sends an ffmpeg-made VP8 clip, two
// subscribers receive it through Janus, and the load tester's report shows the
// media arrived and was measured. This checks the instrument that
// bench/loadtest.sh compares Meridian with; no timing is asserted.
// Janus does not gather ICE candidates on loopback, so it gets a veth address in
// this test's own network namespace (the suite runs under `unshare -n`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { join as joinPath } from 'node:path';
import { promisify } from 'node:util';

const PORT = 8198;
const ICE_IP = '10.99.1.1';
const LOADTEST = process.env.LOADTEST_BIN || '../../target/debug/meridian-loadtest';
let dir, janus, janusLog = '';

before(async () => {
  dir = mkdtempSync(joinPath(tmpdir(), 'meridian-janus-'));
  execFileSync('ip', ['link', 'add', 'jv0', 'type', 'veth', 'peer', 'name', 'jv1']);
  execFileSync('ip', ['addr', 'add', `${ICE_IP}/24`, 'dev', 'jv0']);
  execFileSync('ip', ['addr', 'add', '10.99.1.2/24', 'dev', 'jv1']);
  execFileSync('ip', ['link', 'set', 'jv0', 'up']);
  execFileSync('ip', ['link', 'set', 'jv1', 'up']);
  execFileSync('bash', ['../../bench/janus-config.sh', `${dir}/janus`, String(PORT), ICE_IP]);
  execFileSync('bash', ['../../bench/clips.sh', `${dir}/clips`, '3', '320x240']);
  janus = spawn('janus', ['--configs-folder', `${dir}/janus`, '--config', `${dir}/janus/janus.jcfg`],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  const seen = d => { janusLog += d.toString(); };
  janus.stdout.on('data', seen);
  janus.stderr.on('data', seen);
  // Ready once its WebSocket port accepts connections (at debug level 3 it says nothing).
  const deadline = Date.now() + 20_000;
  while (!(await accepts(PORT))) {
    if (janus.exitCode !== null) throw new Error(`Janus exited with ${janus.exitCode}:\n${janusLog}`);
    if (Date.now() > deadline) throw new Error(`Janus not listening in 20 s:\n${janusLog}`);
    await new Promise(r => setTimeout(r, 200));
  }
});
function accepts(port) {
  return new Promise(resolve => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

after(() => {
  janus?.kill('SIGKILL');
  try { execFileSync('ip', ['link', 'del', 'jv0']); } catch { /* not created */ }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('meridian-loadtest measures a tiny livestream through Janus VideoRoom', async () => {
  const json = `${dir}/report.json`;
  try {
    await promisify(execFile)(LOADTEST, ['--target', 'janus', '--url', `ws://127.0.0.1:${PORT}`,
      '--publishers', '1', '--subscribers', '2', '--duration', '3', '--video', `${dir}/clips/video.ivf`,
      '--sfu-pid', String(janus.pid), '--json', json], { timeout: 90_000 });
  } catch (e) {
    e.message += `\n--- janus:\n${janusLog.split('\n').slice(-40).join('\n')}`;
    throw e;
  }
  const report = JSON.parse(readFileSync(json, 'utf8'));
  assert.equal(report.participants, 3);
  assert.equal(report.tracks_received, 2, `each subscriber receives the video: ${JSON.stringify(report)}`);
  assert.ok(report.packets > 100 && report.frames > 30, `video arrives: ${JSON.stringify(report)}`);
  assert.ok(report.loss_percent < 5, JSON.stringify(report));
  // Janus rewrites sequence numbers; a delay is measured only if the shift was learned.
  assert.ok(report.delay_p50_ms > 0 && report.delay_p99_ms >= report.delay_p50_ms, JSON.stringify(report));
  assert.ok(report.sfu_cpu_seconds > 0, 'Janus\'s CPU is read from /proc');
});
