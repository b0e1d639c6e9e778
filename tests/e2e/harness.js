// Shared harness for the browser tests: start `meridian dev`, launch Debian's
// Chromium with fake media, mint tokens, and poll WebRTC stats.
import { spawn, execFileSync } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import { chromium } from 'playwright-core';
import { AccessToken } from 'livekit-server-sdk';

export const API_KEY = 'devkey';
export const API_SECRET = 'e2e-secret-not-for-production';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** Starts `meridian dev` on the given ports (every listener on `bind`); resolves once it says it is up. */
export async function startMeridian({ port = 7880, sfuPort = 7881, turnPort = 3478, turnTlsPort = turnPort + 1871, turnSecret, bind = '127.0.0.1', extraArgs = [], extraEnv = {} } = {}) {
  const bin = process.env.MERIDIAN_BIN || '../../target/debug/meridian';
  const env = { ...process.env, ...extraEnv, RUST_LOG: process.env.RUST_LOG || 'info,webrtc=warn,webrtc_ice=warn,dtls=error,webrtc_dtls=error,turn=warn' };
  delete env.DATABASE_URL; // the dev job runs on its memory store
  const args = ['dev', '--port', String(port), '--sfu-port', String(sfuPort), '--turn-port', String(turnPort),
    '--turn-tls-port', String(turnTlsPort), '--api-key', API_KEY, '--api-secret', API_SECRET, '--bind', bind];
  if (turnSecret) args.push('--turn-secret', turnSecret);
  args.push(...extraArgs);
  const child = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs = [];
  // Every run keeps the server's log in artifacts/ for a look after a failure.
  mkdirSync('artifacts', { recursive: true });
  const logFile = createWriteStream(`artifacts/meridian-${port}.log`);
  child.stderr.on('data', d => { logs.push(d.toString()); logFile.write(d); });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('meridian dev did not start in 30 s:\n' + logs.join(''))), 30_000);
    child.stdout.on('data', d => { if (d.toString().includes('Meridian dev is up')) { clearTimeout(timer); resolve(); } });
    child.on('exit', code => { clearTimeout(timer); reject(new Error(`meridian dev exited with ${code}:\n${logs.join('')}`)); });
  });
  return {
    url: `http://${bind}:${port}`,
    wsUrl: `ws://${bind}:${port}`,
    logs,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGINT');
      await new Promise(r => { const t = setTimeout(() => { child.kill('SIGKILL'); r(); }, 5000); child.on('exit', () => { clearTimeout(t); r(); }); });
    },
  };
}

export async function launchBrowser(extraArgs = [], executablePath = CHROMIUM) {
  return chromium.launch({
    executablePath,
    args: [
      '--headless=new', '--no-sandbox', '--disable-gpu',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
      '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-quic',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
      ...extraArgs,
    ],
  });
}

const run = (cmd, ...args) => execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
const quietly = f => { try { f(); } catch { /* not there */ } };

/**
 * nftables table `table` (inet) with an output chain that drops what each of
 * `rules` matches (each rule an array of nft words, e.g. ['tcp', 'dport', '3478']),
 * in this network namespace; whatever is left of an earlier run is removed
 * first. Returns `remove()`, which deletes the table.
 */
export function dropOutput(table, rules) {
  quietly(() => run('nft', 'delete', 'table', 'inet', table));
  run('nft', 'add', 'table', 'inet', table);
  run('nft', 'add', 'chain', 'inet', table, 'out', '{ type filter hook output priority 0 ; }');
  for (const r of rules) run('nft', 'add', 'rule', 'inet', table, 'out', ...r, 'drop');
  return { remove: () => quietly(() => run('nft', 'delete', 'table', 'inet', table)) };
}

/**
 * A network namespace `ns` reached from this one over a veth pair: `host` is
 * this side's address (on `${veth}0`), `peer` the namespace's (on `${veth}1`),
 * both in a /24. What is left of an earlier run is removed first. Returns the
 * path of a Chromium wrapper that runs inside the namespace (for
 * `launchBrowser`), the Chromium flags that let it reach `origin` on `host`
 * (the harness maps every other name to nowhere; a plain-HTTP origin must count
 * as secure, or the page gets no camera), and `remove()`.
 */
export function browserNamespace({ ns, veth, host, peer, origin }) {
  quietly(() => run('ip', 'netns', 'del', ns));
  quietly(() => run('ip', 'link', 'del', `${veth}0`));
  run('ip', 'netns', 'add', ns);
  run('ip', 'link', 'add', `${veth}0`, 'type', 'veth', 'peer', 'name', `${veth}1`);
  run('ip', 'link', 'set', `${veth}1`, 'netns', ns);
  run('ip', 'addr', 'add', `${host}/24`, 'dev', `${veth}0`);
  run('ip', 'link', 'set', `${veth}0`, 'up');
  run('ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', `${peer}/24`, 'dev', `${veth}1`);
  run('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', `${veth}1`, 'up');
  run('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
  const dir = mkdtempSync(joinPath(tmpdir(), `${ns}-`));
  const wrapper = joinPath(dir, 'chromium-in-ns');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${CHROMIUM} "$@"\n`);
  chmodSync(wrapper, 0o755);
  const flags = [`--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE ${host}`,
    `--unsafely-treat-insecure-origin-as-secure=${origin}`];
  return {
    wrapper,
    flags,
    remove() {
      quietly(() => run('ip', 'link', 'del', `${veth}0`));
      quietly(() => run('ip', 'netns', 'del', ns));
    },
  };
}

/** `identity`'s video as `page` decodes it (the demo page's stats). */
export const receivedVideo = (page, identity) =>
  page.evaluate(async who => (await window.meridian.stats()).video.find(v => v.identity === who), identity);

/** Waits until `identity`'s video at `page` is decoded at a width `pred` accepts, and still growing. */
export async function untilWidth(page, identity, pred, what, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await receivedVideo(page, identity);
    if (last && pred(last.frameWidth)) {
      await sleep(1000);
      const later = await receivedVideo(page, identity);
      if (pred(later.frameWidth) && later.framesDecoded > last.framesDecoded) return later;
    }
    await sleep(300);
  }
  throw new Error(`${what}: ${identity}'s video never ${what} within ${timeoutMs} ms; last ${JSON.stringify(last)}`);
}

/** Mints a token through the gateway's HTTPS API (POST /v1/tokens, Basic auth). */
export async function apiToken(server, room, identity) {
  const res = await fetch(`${server.url}/v1/tokens`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: 'Basic ' + Buffer.from(`${API_KEY}:${API_SECRET}`).toString('base64'),
    },
    body: JSON.stringify({ room, identity, name: identity }),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`POST /v1/tokens: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

/** Mints a token with livekit-server-sdk, as an app backend on LiveKit would. */
export async function sdkToken(room, identity) {
  const at = new AccessToken(API_KEY, API_SECRET, { identity, name: identity, ttl: '1h' });
  at.addGrant({ roomJoin: true, room, canPublish: true, canSubscribe: true });
  return at.toJwt();
}

/** Opens the demo page in a new context and joins with `token`. */
export async function join(browser, server, token, connectOptions = {}, roomOptions = {}) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const consoleLines = [];
  page.on('console', m => consoleLines.push(`[${m.type()}] ${m.text()}`));
  await page.goto(server.url + '/');
  await page.evaluate(async ([url, token, opts, roomOpts]) => { await window.meridian.joinWithToken(url, token, opts, roomOpts); },
    [server.wsUrl, token, connectOptions, roomOptions]);
  return { page, context, consoleLines };
}

// A server's log for a failure message: its warnings and errors first (the part a
// truncated CI excerpt keeps), then its last `tail` lines.
export function serverLog(server, tail = 40) {
  const lines = server.logs.join('').split('\n');
  const warnings = lines.filter(l => / (WARN|ERROR) /.test(l)).slice(-20);
  return `--- server warnings (${warnings.length} shown):\n${warnings.join('\n')}\n--- server, last ${tail} lines:\n`
    + lines.slice(-tail).join('\n');
}

export const sleep = ms => new Promise(r => setTimeout(r, ms));

/** Polls `page`'s stats until it decodes video (growing) and receives audio from
 * `identity`; with `videoTrackSid`, video of that track only. */
export async function waitForMedia(page, identity, { timeoutMs = 30_000, videoTrackSid } = {}) {
  const deadline = Date.now() + timeoutMs;
  let first = null, last = null;
  while (Date.now() < deadline) {
    last = await page.evaluate(() => window.meridian.stats());
    const video = last.video.find(v => v.identity === identity && v.framesDecoded > 0 && (!videoTrackSid || v.trackSid === videoTrackSid));
    const audio = last.audio.find(a => a.identity === identity && a.packetsReceived > 0);
    if (video && audio) {
      if (!first) first = { video, audio };
      else if (video.framesDecoded > first.video.framesDecoded && audio.packetsReceived > first.audio.packetsReceived) {
        return { first, now: { video, audio } };
      }
    }
    await sleep(500);
  }
  throw new Error(`no growing media from ${identity} within ${timeoutMs} ms; last stats ${JSON.stringify(last)}`);
}

/** A private Postgres for multi-process tests in the namespace (the machine's is outside it). */
export async function startPostgres(port = 5499) {
  const { readdirSync, mkdtempSync, chownSync } = await import('node:fs');
  const { execFileSync } = await import('node:child_process');
  const { tmpdir } = await import('node:os');
  const version = readdirSync('/usr/lib/postgresql').sort().pop();
  const bin = `/usr/lib/postgresql/${version}/bin`;
  const dir = mkdtempSync(`${tmpdir()}/meridian-pg-`);
  const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
  chownSync(dir, uid, gid);
  execFileSync('runuser', ['-u', 'postgres', '--', `${bin}/initdb`, '-D', `${dir}/data`, '-A', 'trust', '-U', 'postgres'], { stdio: 'ignore' });
  const child = spawn('runuser', ['-u', 'postgres', '--', `${bin}/postgres`, '-D', `${dir}/data`, '-k', dir, '-p', String(port),
    '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    try { execFileSync(`${bin}/pg_isready`, ['-h', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' }); break; } catch {
      if (Date.now() > deadline) throw new Error('private Postgres did not start');
      await sleep(200);
    }
  }
  const stop = async () => {
    try {
      execFileSync('runuser', ['-u', 'postgres', '--', `${bin}/pg_ctl`, 'stop', '-D', `${dir}/data`, '-m', 'immediate', '-w'], { stdio: 'ignore' });
    } catch { child.kill('SIGKILL'); }
  };
  return { url, stop };
}

/** Starts one `meridian` role process; resolves once its log says `readyText`. */
export async function startRole(name, args, env, readyText) {
  const bin = process.env.MERIDIAN_BIN || '../../target/debug/meridian';
  mkdirSync('artifacts', { recursive: true });
  const logFile = createWriteStream(`artifacts/${name}.log`);
  const child = spawn(bin, args, { env: { ...process.env, RUST_LOG: 'info,webrtc=warn,webrtc_ice=warn,dtls=error,webrtc_dtls=error', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let seen = '';
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} not ready in 30 s:\n${seen}`)), 30_000);
    child.stderr.on('data', d => { logFile.write(d); seen += d.toString(); if (seen.includes(readyText)) { clearTimeout(timer); resolve(); } });
    child.on('exit', code => { clearTimeout(timer); reject(new Error(`${name} exited with ${code}:\n${seen}`)); });
  });
  const exited = new Promise(r => child.on('exit', r));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  return { child, kill: sig => child.kill(sig), stop };
}
