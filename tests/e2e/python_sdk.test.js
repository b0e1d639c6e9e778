// LiveKit's Python SDK (`livekit` on PyPI: LiveKit's Rust SDK and libwebrtc, the core
// of LiveKit Agents and of the Unity, C++ and @livekit/rtc-node SDKs) joins
// `meridian dev` through the gateway: it sends the token as `Authorization: Bearer`,
// not in the URL. One participant publishes generated 320x240 video and a tone, the
// other counts the decoded frames (python/sdk_call.py prints a JSON report); then
// the same at 1280x720 with simulcast, which must arrive at the top layer. Then
// participant state: metadata, name and attributes set by the participant, the
// grants that allow or refuse them, and a second session of the same identity
// (python/sdk_state.py). Then subscriptions: auto_subscribe off, subscribing,
// disabling, permissions revoked and granted back, unsubscribing, read off the
// node's forwarded bytes (python/sdk_subscribe.py). Then a signal resume the
// other side does not notice (python/sdk_resume.py).
// libwebrtc there skips loopback adapters when gathering ICE candidates, so the
// stack binds a veth address in this test's own network namespace (the suite runs
// under `unshare -n`, see scripts/test); a documentation range (RFC 5737) keeps it
// clear of any real network.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync } from 'node:fs';
import { startMeridian, API_KEY, API_SECRET, serverLog } from './harness.js';

const PYTHON = process.env.PYTHON || 'python3';
const BIND = '192.0.2.10';
const PEER = '192.0.2.11';
const WIDTH = 320, HEIGHT = 240, FPS = 20, MIN_FRAMES = 60;

/** Why this test cannot run here, or null. Under CI=true a reason fails the test. */
function missing() {
  try {
    execFileSync(PYTHON, ['-c', 'import livekit.rtc, livekit.api'], { stdio: 'pipe' });
  } catch (e) {
    return `LiveKit's Python SDK is not installed (${PYTHON}: ${e.stderr?.toString().trim().split('\n').pop() || e.message}); `
      + 'scripts/setup installs it (pip install livekit==1.2.1 livekit-api==1.2.2)';
  }
  // The veth pair must not land on the host's network: only in a namespace of our
  // own, which has nothing but lo (and the pair, if a killed run left it behind).
  const others = readFileSync('/proc/self/net/dev', 'utf8').split('\n').slice(2)
    .map(line => line.split(':')[0].trim()).filter(name => name && !['lo', 't0', 't1'].includes(name));
  if (others.length) {
    return `the network has ${others.join(', ')}: run it in a namespace of its own (\`unshare -n\`, as scripts/test does)`;
  }
  return null;
}

const reason = missing();
const skip = reason && process.env.CI !== 'true' ? `SKIPPED: ${reason}` : false;

let server;
before(async () => {
  if (reason) return;
  try { execFileSync('ip', ['link', 'del', 't0'], { stdio: 'ignore' }); } catch { /* none left over */ }
  execFileSync('ip', ['link', 'add', 't0', 'type', 'veth', 'peer', 'name', 't1']);
  execFileSync('ip', ['addr', 'add', `${BIND}/24`, 'dev', 't0']);
  execFileSync('ip', ['addr', 'add', `${PEER}/24`, 'dev', 't1']);
  execFileSync('ip', ['link', 'set', 't0', 'up']);
  execFileSync('ip', ['link', 'set', 't1', 'up']);
  server = await startMeridian({ port: 7910, sfuPort: 7911, turnPort: 3495, turnTlsPort: 5395, bind: BIND });
});
after(async () => {
  await server?.stop();
  try { execFileSync('ip', ['link', 'del', 't0'], { stdio: 'ignore' }); } catch { /* not created */ }
});

/** Runs python/`script`; resolves with its report, its exit code and its log. */
function sdkRun(script, args) {
  mkdirSync('artifacts', { recursive: true });
  const log = createWriteStream(`artifacts/python-${script.replace(/\.py$/, '')}.log`);
  const child = spawn(PYTHON, [`python/${script}`, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  child.stdout.on('data', d => { out += d; });
  child.stderr.on('data', d => { err += d; log.write(d); });
  return new Promise((resolve, reject) => {
    // The script bounds itself (timeout + 15 s); this is the backstop.
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', code => {
      clearTimeout(timer);
      log.end();
      let report = null;
      try { report = JSON.parse(out.trim().split('\n').pop()); } catch { /* reported below */ }
      resolve({ report, code, out, err });
    });
  });
}

test('LiveKit\'s Python SDK publishes video through the gateway to another Python SDK participant', { skip }, async t => {
  assert.equal(reason, null, reason);
  const started = Date.now();
  const { report, code, out, err } = await sdkRun('sdk_call.py', ['--url', server.wsUrl, '--api-key', API_KEY, '--api-secret', API_SECRET,
    '--room', 'e2e-python-sdk', '--width', String(WIDTH), '--height', String(HEIGHT), '--fps', String(FPS),
    '--min-frames', String(MIN_FRAMES), '--timeout', '60']);
  const context = () => `\nreport: ${JSON.stringify(report) ?? out}\n--- SDK (artifacts/python-sdk.log):\n`
    + err.split('\n').slice(-40).join('\n') + '\n' + serverLog(server, 60);
  assert.ok(report, `sdk_call.py printed no report (exit ${code})${context()}`);
  t.diagnostic(`frames ${report.frames} at ${report.width}x${report.height} (sizes ${JSON.stringify(report.sizes)}), `
    + `audio frames ${report.audio_frames}, first frame ${report.first_frame_s} s after publishing, `
    + `connect ${JSON.stringify(report.connect_s)}, ${Date.now() - started} ms in all`);
  assert.equal(report.error, undefined, `the call failed: ${report.error}${context()}`);
  assert.equal(code, 0, `sdk_call.py exited with ${code}${context()}`);

  assert.ok(report.frames >= MIN_FRAMES, `the subscriber decodes at least ${MIN_FRAMES} frames${context()}`);
  assert.deepEqual([report.width, report.height], [WIDTH, HEIGHT], `frames arrive at the published size${context()}`);
  assert.deepEqual(report.subscriber_saw, ['py-publisher'], 'the subscriber sees the publisher');
  assert.deepEqual(report.publisher_saw, ['py-subscriber'], 'the publisher sees the subscriber');
  const kinds = report.tracks.filter(tr => tr.from === 'py-publisher').map(tr => tr.kind).sort();
  assert.deepEqual(kinds, ['KIND_AUDIO', 'KIND_VIDEO'], `the subscriber is subscribed to both tracks${context()}`);
  assert.ok(report.audio_frames > 0, `audio arrives too${context()}`);
});

// Issue 13: with webrtc-rs's shared track per published track, this reached the
// subscriber at 320x180 for the whole call. Each down-track now gets the top
// layer the publisher sends (the subscriber asks for no other).
test('LiveKit\'s Python SDK publishing 1280x720 simulcast reaches its subscriber at 1280x720', { skip }, async t => {
  assert.equal(reason, null, reason);
  const { report, code, out, err } = await sdkRun('sdk_call.py', ['--url', server.wsUrl, '--api-key', API_KEY, '--api-secret', API_SECRET,
    '--room', 'e2e-python-sdk-720p', '--width', '1280', '--height', '720', '--fps', '15', '--simulcast',
    '--min-frames', '150', '--timeout', '60']);
  const context = () => `\nreport: ${JSON.stringify(report) ?? out}\n--- SDK:\n`
    + err.split('\n').slice(-40).join('\n') + '\n' + serverLog(server, 60);
  assert.ok(report, `sdk_call.py printed no report (exit ${code})${context()}`);
  t.diagnostic(`frames ${report.frames}, sizes ${JSON.stringify(report.sizes)}, first frame ${report.first_frame_s} s after publishing`);
  assert.equal(report.error, undefined, `the call failed: ${report.error}${context()}`);
  assert.deepEqual([report.width, report.height], [1280, 720], `the last frames are the top layer's${context()}`);
  assert.ok((report.sizes['1280x720'] || 0) >= 30, `at least 2 s of the top layer arrive${context()}`);
});

test('LiveKit\'s Python SDK sets its own metadata, name and attributes as its grants allow', { skip }, async t => {
  assert.equal(reason, null, reason);
  const { report, code, out, err } = await sdkRun('sdk_state.py', ['--url', server.wsUrl, '--api-key', API_KEY,
    '--api-secret', API_SECRET, '--room', 'e2e-python-state', '--timeout', '60']);
  const context = () => `\nreport: ${JSON.stringify(report) ?? out}\n--- SDK (artifacts/python-sdk_state.log):\n`
    + err.split('\n').slice(-40).join('\n') + '\n' + serverLog(server, 60);
  assert.ok(report, `sdk_state.py printed no report (exit ${code})${context()}`);
  t.diagnostic(`checks ${JSON.stringify(report.checks)}; refused update answered in ${report.seen.bob_update_refused_in_s} s; `
    + `camera: ${report.seen.camera}; ${report.elapsed_s} s in all`);
  assert.equal(report.error, undefined, `the scenario failed: ${report.error}${context()}`);
  assert.equal(code, 0, `sdk_state.py exited with ${code}${context()}`);
  for (const name of ['token attributes reach others', 'allowed updates succeed', 'others see name, metadata and attributes',
    'the participant sees its own change', 'a refused update gets an answer with the reason', 'nobody sees a refused update',
    'a source outside canPublishSources is refused', 'a listed source is published and subscribed',
    'the same identity evicts the old session', 'others see the new session']) {
    assert.equal(report.checks[name], true, `${name}${context()}`);
  }
});

test('LiveKit\'s Python SDK subscribes only to what it chooses, and what it drops stops', { skip }, async t => {
  assert.equal(reason, null, reason);
  const { report, code, out, err } = await sdkRun('sdk_subscribe.py', ['--url', server.wsUrl, '--metrics-url', `${server.url}/metrics`,
    '--api-key', API_KEY, '--api-secret', API_SECRET, '--room', 'e2e-python-subscribe', '--timeout', '90']);
  const context = () => `\nreport: ${JSON.stringify(report) ?? out}\n--- SDK (artifacts/python-sdk_subscribe.log):\n`
    + err.split('\n').slice(-40).join('\n') + '\n' + serverLog(server, 60);
  assert.ok(report, `sdk_subscribe.py printed no report (exit ${code})${context()}`);
  t.diagnostic(`checks ${JSON.stringify(report.checks)}; seen ${JSON.stringify(report.seen)}; ${report.elapsed_s} s in all`);
  assert.equal(report.error, undefined, `the scenario failed: ${report.error}${context()}`);
  assert.equal(code, 0, `sdk_subscribe.py exited with ${code}${context()}`);
  for (const name of ['the subscriber hears of both tracks', 'auto_subscribe off subscribes to nothing',
    'subscribing brings the video', 'the publisher hears TrackSubscribed', 'only the chosen track is subscribed',
    'a disabled track is not forwarded', 'enabling it again resumes the video', 'revoking permission stops the video',
    'granting it back brings it back', 'unsubscribing stops the video']) {
    assert.equal(report.checks[name], true, `${name}${context()}`);
  }
});

test('LiveKit\'s Python SDK resumes a dropped signal connection and the other side notices nothing', { skip }, async t => {
  assert.equal(reason, null, reason);
  const { report, code, out, err } = await sdkRun('sdk_resume.py', ['--url', server.wsUrl, '--api-key', API_KEY,
    '--api-secret', API_SECRET, '--room', 'e2e-python-resume', '--timeout', '60']);
  const context = () => `\nreport: ${JSON.stringify(report) ?? out}\n--- SDK (artifacts/python-sdk_resume.log):\n`
    + err.split('\n').slice(-40).join('\n') + '\n' + serverLog(server, 60);
  assert.ok(report, `sdk_resume.py printed no report (exit ${code})${context()}`);
  t.diagnostic(`checks ${JSON.stringify(report.checks)}; seen ${JSON.stringify(report.seen)}`);
  assert.equal(report.error, undefined, `the scenario failed: ${report.error}${context()}`);
  assert.equal(code, 0, `sdk_resume.py exited with ${code}${context()}`);
  for (const name of ['video flows before', 'the publisher reconnects', 'as the same participant', 'video flows after',
    'the subscriber saw no leave and no join', 'no disconnect']) {
    assert.equal(report.checks[name], true, `${name}${context()}`);
  }
});
