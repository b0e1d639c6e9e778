// A network that lets no UDP through and has no TURN relay to fall back on:
// every UDP datagram and TCP to the relay's ports are dropped (nftables,
// inside this test's own network namespace), so two livekit-client
// participants can reach the SFU only over ICE/TCP, to the passive TCP
// candidate of its one TCP media port (RFC 6544, LiveKit's rtc.tcp_port).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMeridian, launchBrowser, sdkToken, join, waitForMedia, serverLog, dropOutput } from './harness.js';

const TURN_PORT = 3492;
const TURNS_PORT = 5392;
let server, browser, blocked;

before(async () => {
  server = await startMeridian({ port: 7940, sfuPort: 7941, turnPort: TURN_PORT, turnTlsPort: TURNS_PORT });
  browser = await launchBrowser();
  blocked = dropOutput('meridian_ice_tcp', [['meta', 'l4proto', 'udp'], ['tcp', 'dport', `{ ${TURN_PORT}, ${TURNS_PORT} }`]]);
});
after(async () => {
  blocked?.remove();
  await browser?.close();
  await server?.stop();
});

test('with UDP and the TURN relay blocked, media flows over ICE/TCP to the SFU', async () => {
  const a = await join(browser, server, await sdkToken('e2e-ice-tcp', 'alice'));
  const b = await join(browser, server, await sdkToken('e2e-ice-tcp', 'bob'));
  try {
    const atA = await waitForMedia(a.page, 'bob');
    assert.ok(atA.now.video.framesDecoded > atA.first.video.framesDecoded, 'alice decodes bob\'s video');
    await waitForMedia(b.page, 'alice');
    for (const p of [a, b]) {
      for (const which of ['subscriber', 'publisher']) {
        const selected = await p.page.evaluate(w => window.meridian.selectedCandidates(w), which);
        assert.ok(selected.length > 0, `the ${which} PC has a selected pair`);
        for (const c of selected) {
          // Chromium's active TCP candidate has port 9; the connection's own
          // port makes the pair's local candidate peer-reflexive.
          assert.ok(['host', 'prflx'].includes(c.candidateType), `the ${which} PC reaches the SFU directly, not relayed: ${c.candidateType}`);
          assert.equal(c.protocol, 'tcp', `the ${which} PC's only way is TCP`);
        }
      }
    }
  } catch (e) {
    e.message += '\n--- alice console:\n' + a.consoleLines.slice(-30).join('\n')
      + '\n' + serverLog(server, 60);
    throw e;
  } finally {
    await a.context.close();
    await b.context.close();
  }
});
