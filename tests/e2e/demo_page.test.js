// The demo page as a person uses it: two tabs type a room and a name, press Join,
// and each shows the other's camera. Leaves a screenshot in artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { startMeridian, launchBrowser, waitForMedia } from './harness.js';

let server, browser;
before(async () => {
  server = await startMeridian({ port: 7890, sfuPort: 7891, turnPort: 3479 });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

async function openAndJoin(name) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 600 } });
  const page = await context.newPage();
  await page.goto(server.url + '/');
  await page.fill('#room', 'demo-ui');
  await page.fill('#name', name);
  await page.click('#joinBtn');
  await page.waitForSelector('#leaveBtn:not([disabled])', { timeout: 20_000 });
  return { page, context };
}

test('two tabs on the demo page see each other', async () => {
  const ana = await openAndJoin('ana');
  const ben = await openAndJoin('ben');
  await waitForMedia(ana.page, 'ben');
  await waitForMedia(ben.page, 'ana');
  const status = await ana.page.textContent('#status');
  assert.match(status, /connected to demo-ui \(region local\)/);
  // Two tiles: own camera and ben's, each with a playing video element.
  await ana.page.waitForFunction(() => [...document.querySelectorAll('.tile video')].filter(v => v.videoWidth > 0).length >= 2,
    null, { timeout: 15_000 });
  mkdirSync('artifacts', { recursive: true });
  await ana.page.screenshot({ path: 'artifacts/demo-page.png' });
  await ana.context.close();
  await ben.context.close();
});
