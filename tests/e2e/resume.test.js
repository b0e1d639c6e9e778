// A signal blip resumes the session instead of rejoining: livekit-client's
// `simulateScenario('signal-reconnect')` drops alice's WebSocket; she resumes
// (`reconnect=1&sid=…`) on the same node and keeps her participant sid, bob
// sees no leave and no join, media flows both ways afterwards, and reliable
// data sent before and after arrives once each (last_message_seq).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMeridian, launchBrowser, sdkToken, join, waitForMedia, serverLog } from './harness.js';

const ROOM = 'e2e-resume';
let server, browser;
before(async () => {
  server = await startMeridian({ port: 7970, sfuPort: 7971, turnPort: 3555, turnTlsPort: 5455 });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Records the room events named in `names` on `page` into window.__events. */
async function record(page, names) {
  await page.evaluate(names => {
    window.__events = [];
    for (const name of names) {
      window.meridian.room().on(name, (...args) => window.__events.push({ name, identity: args[0]?.identity, at: Date.now() }));
    }
  }, names);
}

test('a dropped signal connection resumes: same participant, nobody notices, media flows', async t => {
  const a = await join(browser, server, await sdkToken(ROOM, 'alice'));
  const b = await join(browser, server, await sdkToken(ROOM, 'bob'));
  const context = () => '\n--- alice console:\n' + a.consoleLines.slice(-30).join('\n') + '\n--- server:\n'
    + serverLog(server, 40);
  try {
    await waitForMedia(b.page, 'alice');
    await waitForMedia(a.page, 'bob');
    const sidBefore = await a.page.evaluate(() => window.meridian.room().localParticipant.sid);
    await record(a.page, ['signalReconnecting', 'reconnecting', 'reconnected', 'disconnected']);
    await record(b.page, ['participantDisconnected', 'participantConnected']);

    // Reliable data across the blip: ReconnectResponse.last_message_seq says how
    // far the node got, and each message reaches bob once, in order.
    for (let i = 1; i <= 5; i++) await a.page.evaluate(i => window.meridian.sendData(`m${i}`), i);
    await b.page.waitForFunction(() => window.meridian.received.length >= 5, null, { timeout: 10_000 });
    await a.page.evaluate(() => {
      const client = window.meridian.room().engine.client;
      const reconnect = client.reconnect.bind(client);
      client.reconnect = async (...args) => { const r = await reconnect(...args); window.__reconnect = r; return r; };
    });

    const started = Date.now();
    await a.page.evaluate(() => window.meridian.room().simulateScenario('signal-reconnect'));
    await a.page.waitForFunction(() => window.__events.some(e => e.name === 'reconnected'), null, { timeout: 20_000 })
      .catch(e => { throw new Error(`alice reconnects: ${e.message}${context()}`); });
    const resumedMs = Date.now() - started;
    const aliceEvents = await a.page.evaluate(() => window.__events.map(e => e.name));
    t.diagnostic(`resumed in ${resumedMs} ms; alice saw ${JSON.stringify(aliceEvents)}`);
    assert.ok(aliceEvents.includes('signalReconnecting'), `a resume, not a full reconnect: ${aliceEvents}${context()}`);
    assert.ok(!aliceEvents.includes('reconnecting') && !aliceEvents.includes('disconnected'), `no full reconnect: ${aliceEvents}${context()}`);
    const sidAfter = await a.page.evaluate(() => window.meridian.room().localParticipant.sid);
    assert.equal(sidAfter, sidBefore, 'the same participant');

    await waitForMedia(b.page, 'alice');
    await waitForMedia(a.page, 'bob');
    const lastSeq = await a.page.evaluate(() => window.__reconnect?.lastMessageSeq ?? -1);
    assert.ok(lastSeq >= 5, `ReconnectResponse.last_message_seq counts the 5 messages sent: ${lastSeq}`);
    for (let i = 6; i <= 8; i++) await a.page.evaluate(i => window.meridian.sendData(`m${i}`), i);
    await b.page.waitForFunction(() => window.meridian.received.length >= 8, null, { timeout: 10_000 }).catch(() => {});
    const texts = (await b.page.evaluate(() => window.meridian.received)).map(m => m.text);
    assert.deepEqual(texts, ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8'], 'reliable data once each, in order');
    const bobEvents = await b.page.evaluate(() => window.__events);
    assert.deepEqual(bobEvents, [], 'bob saw alice neither leave nor join');
  } finally {
    await a.context.close();
    await b.context.close();
  }
});
