// LiveKit's webhooks from `meridian dev --webhook-url https://…`, to an HTTPS
// receiver whose certificate a private CA signed (trusted through
// SSL_CERT_FILE, as with OpenSSL), that verifies each delivery with livekit-server-sdk's WebhookReceiver and fails
// the first attempts on purpose: every event arrives, signed over its body,
// once accepted, and in order for its room (room_started first, each
// participant joined before it left, each track published before it was
// unpublished, one whose PCs never connected reported as
// participant_connection_aborted, room_finished last).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:https';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import { WebhookReceiver } from 'livekit-server-sdk';
import { startMeridian, launchBrowser, sdkToken, join, waitForMedia, sleep, API_KEY, API_SECRET, serverLog } from './harness.js';

const HOOK_PORT = 7959;
const FAIL_FIRST = 3;
const ROOM = 'e2e-webhooks';

let server, browser, hooks;
const attempts = [];   // every request: { status, id, event }
const accepted = [];   // events answered 200, in arrival order
const refusedBodies = [];

/** A CA and a certificate for 127.0.0.1 it signed, made with openssl. */
function privateCa() {
  const dir = mkdtempSync(joinPath(tmpdir(), 'meridian-webhook-ca-'));
  const at = name => joinPath(dir, name);
  const openssl = args => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', at('ca.key'), '-out', at('ca.pem'), '-days', '1', '-subj', '/CN=meridian e2e CA']);
  openssl(['req', ...ec, '-keyout', at('leaf.key'), '-out', at('leaf.csr'), '-subj', '/CN=127.0.0.1']);
  writeFileSync(at('leaf.ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
  openssl(['x509', '-req', '-in', at('leaf.csr'), '-CA', at('ca.pem'), '-CAkey', at('ca.key'), '-CAcreateserial',
    '-out', at('leaf.pem'), '-days', '1', '-extfile', at('leaf.ext')]);
  return { ca: at('ca.pem'), key: readFileSync(at('leaf.key')), cert: readFileSync(at('leaf.pem')) };
}

before(async () => {
  const receiver = new WebhookReceiver(API_KEY, API_SECRET);
  const tls = privateCa();
  hooks = createServer({ key: tls.key, cert: tls.cert }, (req, res) => {
    let body = '';
    req.on('data', d => { body += d; });
    req.on('end', async () => {
      let event;
      try {
        event = await receiver.receive(body, req.headers.authorization);
      } catch (e) {
        refusedBodies.push(`${e.message}: ${body.slice(0, 200)}`);
        res.writeHead(401).end();
        return;
      }
      const status = attempts.length < FAIL_FIRST ? 503 : 200;
      attempts.push({ status, id: event.id, event: event.event, type: req.headers['content-type'] });
      if (status === 200) accepted.push(event);
      res.writeHead(status).end();
    });
  });
  await new Promise(r => hooks.listen(HOOK_PORT, '127.0.0.1', r));
  server = await startMeridian({ port: 7950, sfuPort: 7951, turnPort: 3535, turnTlsPort: 5435,
    extraArgs: ['--webhook-url', `https://127.0.0.1:${HOOK_PORT}/livekit/webhook`], extraEnv: { SSL_CERT_FILE: tls.ca } });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
  await new Promise(r => hooks?.close(r));
});

test('webhooks arrive signed, once, in order per room, through failed attempts', async t => {
  const a = await join(browser, server, await sdkToken(ROOM, 'alice'));
  const b = await join(browser, server, await sdkToken(ROOM, 'bob'));
  await waitForMedia(b.page, 'alice');
  // Carol opens the signal socket and goes away before any PC connects: once
  // her resume window is over she is participant_connection_aborted.
  const carol = await sdkToken(ROOM, 'carol');
  const first = await a.page.evaluate(([url, token]) => new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}/rtc?access_token=${token}&auto_subscribe=1&protocol=15`);
    ws.binaryType = 'arraybuffer';
    ws.onmessage = m => { ws.close(); resolve(m.data.byteLength); };
    ws.onerror = () => reject(new Error('carol: WebSocket error'));
  }), [server.wsUrl, carol]);
  assert.ok(first > 0, 'carol got her JoinResponse');
  await a.context.close();
  await b.context.close();
  const deadline = Date.now() + 60_000;
  while (!accepted.some(e => e.event === 'room_finished') && Date.now() < deadline) await sleep(200);
  const context = `\naccepted: ${JSON.stringify(accepted.map(e => [e.event, e.participant?.identity, e.track?.type]))}`
    + `\nattempts: ${JSON.stringify(attempts.slice(0, 10))}\nrefused: ${refusedBodies.join('\n')}`
    + '\n' + serverLog(server, 40);
  t.diagnostic(`${accepted.length} events accepted after ${attempts.length} attempts (${FAIL_FIRST} refused on purpose)`);

  assert.deepEqual(refusedBodies, [], `every delivery verifies with WebhookReceiver${context}`);
  assert.ok(accepted.some(e => e.event === 'room_finished'), `room_finished arrives${context}`);
  assert.ok(attempts.every(a => a.type === 'application/webhook+json'), 'Content-Type: application/webhook+json');
  const ids = accepted.map(e => e.id);
  assert.equal(new Set(ids).size, ids.length, `each event is accepted once${context}`);
  assert.ok(ids.every(id => /^EV_[A-Za-z0-9]{12}$/.test(id)), 'ids are EV_…');
  assert.ok(accepted.every(e => Number(e.createdAt) > 1_700_000_000), 'created_at is set (Unix seconds)');
  assert.equal(attempts[0].id, attempts[FAIL_FIRST].id, `the refused event is the one retried${context}`);

  const events = accepted.filter(e => e.room?.name === ROOM);
  const names = events.map(e => e.event);
  assert.equal(names[0], 'room_started', `room_started first${context}`);
  assert.equal(names[names.length - 1], 'room_finished', `room_finished last${context}`);
  const at = (event, pred = () => true) => events.findIndex(e => e.event === event && pred(e));
  const aborted = at('participant_connection_aborted', e => e.participant?.identity === 'carol');
  assert.ok(aborted > 0, `carol's connection aborted${context}`);
  assert.equal(events.filter(e => e.participant?.identity === 'carol').length, 1,
    `carol, never connected, is neither joined nor left${context}`);
  for (const who of ['alice', 'bob']) {
    const joined = at('participant_joined', e => e.participant?.identity === who);
    const left = at('participant_left', e => e.participant?.identity === who);
    assert.ok(joined > 0 && left > joined, `${who} joined, then left${context}`);
    for (const kind of [0, 1]) { // TrackType AUDIO, VIDEO
      const published = at('track_published', e => e.participant?.identity === who && (e.track?.type ?? 0) === kind);
      const unpublished = at('track_unpublished', e => e.participant?.identity === who && (e.track?.type ?? 0) === kind);
      assert.ok(published > 0 && unpublished > published, `${who}'s track of type ${kind} published, then unpublished${context}`);
    }
  }
});
