// A network that lets only TLS out: UDP and plain TCP to the TURN relay are dropped
// (nftables, inside this test's own network namespace), so two livekit-client
// participants with iceTransportPolicy 'relay' must reach the relay over TURN/TLS
// (the `turns:` URL of JoinResponse.ice_servers) and still exchange media.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMeridian, launchBrowser, sdkToken, join, waitForMedia, serverLog, dropOutput } from './harness.js';

const TURN_PORT = 3490;
const TURNS_PORT = 5390;
let server, browser, blocked;

before(async () => {
  server = await startMeridian({ port: 7900, sfuPort: 7901, turnPort: TURN_PORT, turnTlsPort: TURNS_PORT });
  // `meridian dev`'s TURN certificate is self-signed; Chromium checks TURN/TLS
  // certificates like any other, so this browser is told to accept it.
  browser = await launchBrowser(['--ignore-certificate-errors']);
  // Only the client's way to the relay is cut: the relay still reaches the SFU over UDP.
  blocked = dropOutput('meridian_turn_tls_only', [['udp', 'dport', String(TURN_PORT)], ['tcp', 'dport', String(TURN_PORT)]]);
});
after(async () => {
  blocked?.remove();
  await browser?.close();
  await server?.stop();
});

test('with UDP and TCP blocked, media flows through the relay over TLS', async () => {
  const opts = { rtcConfig: { iceTransportPolicy: 'relay' } };
  const a = await join(browser, server, await sdkToken('e2e-tls', 'alice'), opts);
  const b = await join(browser, server, await sdkToken('e2e-tls', 'bob'), opts);
  try {
    const urls = await a.page.evaluate(() => window.meridian.room().engine.latestJoinResponse.iceServers.flatMap(s => s.urls));
    assert.deepEqual(urls.map(u => u.split(':')[0] + '?' + u.split('?')[1]),
      ['turn?transport=udp', 'turn?transport=tcp', 'turns?transport=tcp'], 'the join response lists UDP, TCP and TLS');
    const atA = await waitForMedia(a.page, 'bob');
    assert.ok(atA.now.video.framesDecoded > atA.first.video.framesDecoded, 'alice decodes bob\'s video');
    await waitForMedia(b.page, 'alice');
    for (const p of [a, b]) {
      const selected = await p.page.evaluate(() => window.meridian.selectedCandidates());
      assert.ok(selected.length > 0, 'a pair is selected');
      for (const c of selected) {
        assert.equal(c.candidateType, 'relay');
        assert.equal(c.relayProtocol, 'tls', 'the only way out is TURN over TLS');
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
