// Node loss: a gateway and two SFU nodes (regions eu-west and us-west) run as
// separate processes on a private Postgres. Two livekit-client participants meet
// on eu-west; its node is SIGKILLed mid-call; both reconnect through the gateway
// by themselves (told by the gateway to rejoin, not to resume), land on
// us-west, and decode each other's video again. The time
// from the kill to growing frames on both sides is printed (docs/benchmarks.md).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, sdkToken, join, waitForMedia, startPostgres, startRole, API_KEY, API_SECRET } from './harness.js';

let pg, gateway, eu, us, browsers;
const GATEWAY = 7900;
const env = () => ({ DATABASE_URL: pg.url, MERIDIAN_API_KEY: API_KEY, MERIDIAN_API_SECRET: API_SECRET });

before(async () => {
  pg = await startPostgres();
  const sfu = (region, port) => ['sfu', '--sfu-region', region, '--sfu-node-id', `${region}-1`, '--sfu-listen', `127.0.0.1:${port}`,
    '--sfu-include-loopback', 'true', '--sfu-drain-grace', '1'];
  eu = await startRole('failover-sfu-eu', sfu('eu-west', 7901), env(), 'SFU node up');
  us = await startRole('failover-sfu-us', sfu('us-west', 7902), env(), 'SFU node up');
  gateway = await startRole('failover-gateway', ['gateway', '--gateway-listen', `127.0.0.1:${GATEWAY}`, '--gateway-plain-http', 'true',
    '--gateway-default-region', 'eu-west', '--gateway-client-js', '../../web/node_modules/livekit-client/dist/livekit-client.umd.js'], env(), 'gateway up');
  // One browser each: on a full reconnect livekit-client restarts the camera,
  // and two pages of one browser restarting Chromium's one fake capture device
  // at once now and then left a camera that sent nothing.
  browsers = [await launchBrowser(), await launchBrowser()];
});
after(async () => {
  for (const b of browsers ?? []) await b.close();
  for (const p of [gateway, eu, us]) await p?.stop();
  await pg?.stop();
});

const server = { url: `http://127.0.0.1:${GATEWAY}`, wsUrl: `ws://127.0.0.1:${GATEWAY}` };
const region = page => page.evaluate(() => window.meridian.room().engine.latestJoinResponse.serverInfo.region);

test('when the node hosting a call dies, both participants recover on the other region', async () => {
  const a = await join(browsers[0], server, await sdkToken('failover', 'alice'));
  const b = await join(browsers[1], server, await sdkToken('failover', 'bob'));
  await waitForMedia(a.page, 'bob');
  await waitForMedia(b.page, 'alice');
  assert.equal(await region(a.page), 'eu-west');
  // Signal sockets opened after the kill: the gateway tells each client its node
  // died (LeaveRequest RECONNECT), so none spends a round trip on a resume.
  const opened = [];
  for (const p of [a.page, b.page]) p.on('websocket', ws => opened.push(ws.url()));

  const killedAt = Date.now();
  eu.kill('SIGKILL');
  // Media counted from the old node can still grow for a moment after the kill,
  // so media is awaited only once each client is back, on the other region.
  const recovered = async (page, from) => {
    await page.waitForFunction(() => window.meridian.room()?.engine?.latestJoinResponse?.serverInfo?.region === 'us-west'
      && window.meridian.room().state === 'connected', null, { timeout: 45_000, polling: 100 });
    return waitForMedia(page, from, { timeoutMs: 45_000 });
  };
  try {
    await Promise.all([recovered(a.page, 'bob'), recovered(b.page, 'alice')]);
  } catch (e) {
    for (const [who, p] of [['alice', a], ['bob', b]]) {
      e.message += `\n--- ${who} sends: ` + JSON.stringify(await p.page.evaluate(() => window.meridian.outbound()).catch(err => String(err)));
    }
    e.message += '\n--- alice console:\n' + a.consoleLines.slice(-40).join('\n') + '\n--- bob console:\n' + b.consoleLines.slice(-40).join('\n');
    throw e;
  }
  const recoveredMs = Date.now() - killedAt;
  console.log(`failover: frames decoding again on both sides ${recoveredMs} ms after the kill`);
  assert.ok(opened.length >= 2 && opened.every(url => !/[?&]reconnect=1/.test(url)),
    `straight to a full rejoin, no resume attempt: ${JSON.stringify(opened)}`);
  assert.equal(await region(a.page), 'us-west', 'alice reconnected to the surviving region');
  assert.equal(await region(b.page), 'us-west', 'bob reconnected to the surviving region');
  await a.context.close();
  await b.context.close();
});
