// Active speakers: alice's fake microphone plays a loud tone, bob's silence
// (Chromium's --use-file-for-fake-audio-capture, files made by ffmpeg). The
// node reads the RFC 6464 audio levels in their RTP and sends LiveKit's
// SpeakersChanged; livekit-client fires ActiveSpeakersChanged: alice speaks,
// bob never does, and alice muting her microphone ends it. On the way, both
// hear LiveKit's ConnectionQualityUpdate: EXCELLENT on a clean link.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import { startMeridian, launchBrowser, sdkToken, join, waitForMedia } from './harness.js';

const ROOM = 'e2e-speakers';
let server, loud, quiet;

/** A 48 kHz mono WAV from ffmpeg's lavfi source `source`. */
function wav(dir, name, source) {
  const path = joinPath(dir, name);
  execFileSync('ffmpeg', ['-loglevel', 'error', '-y', '-f', 'lavfi', '-i', source, '-ac', '1', '-ar', '48000', path]);
  return path;
}

before(async () => {
  const dir = mkdtempSync(joinPath(tmpdir(), 'meridian-speakers-'));
  const tone = wav(dir, 'tone.wav', 'sine=frequency=440:sample_rate=48000:duration=5');
  const silence = wav(dir, 'silence.wav', 'anullsrc=channel_layout=mono:sample_rate=48000:duration=5');
  server = await startMeridian({ port: 7985, sfuPort: 7986, turnPort: 3575, turnTlsPort: 5475 });
  loud = await launchBrowser([`--use-file-for-fake-audio-capture=${tone}`]);
  quiet = await launchBrowser([`--use-file-for-fake-audio-capture=${silence}`]);
});
after(async () => {
  for (const b of [loud, quiet]) await b?.close();
  await server?.stop();
});

// Chromium's processing would treat a steady tone as noise; the levels are
// what the encoder sends either way.
const raw = { audioCaptureDefaults: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } };

/** Records livekit-client's ActiveSpeakersChanged on `page` (identities per event). */
const record = page => page.evaluate(() => {
  window.__speakers = [];
  window.meridian.room().on('activeSpeakersChanged', speakers => window.__speakers.push(speakers.map(s => s.identity)));
});
const events = page => page.evaluate(() => window.__speakers);

test('the participant making sound is an active speaker, the silent one never', async t => {
  const a = await join(loud, server, await sdkToken(ROOM, 'alice'), {}, raw);
  const b = await join(quiet, server, await sdkToken(ROOM, 'bob'), {}, raw);
  try {
    await record(b.page);
    await record(a.page);
    await waitForMedia(b.page, 'alice');
    // The first SpeakersChanged can come before the listener above is on, so
    // read livekit-client's state, which every one of them updates.
    await b.page.waitForFunction(() => window.meridian.room().activeSpeakers.some(p => p.identity === 'alice'), null,
      { timeout: 15_000 })
      .catch(async e => { throw new Error(`bob hears alice speak: ${e.message}; events ${JSON.stringify(await events(b.page))}`); });
    await a.page.waitForFunction(() => window.meridian.room().localParticipant.isSpeaking, null, { timeout: 5_000 })
      .catch(e => { throw new Error(`alice hears of herself: ${e.message}`); });

    // The demo page outlines the speaker's tile.
    await b.page.waitForFunction(() => [...document.querySelectorAll('.tile.speaking span')]
      .some(s => s.textContent.startsWith('alice')), null, { timeout: 5_000 })
      .catch(e => { throw new Error(`bob's page marks alice's tile speaking: ${e.message}`); });

    // Connection quality on a clean loopback link: EXCELLENT both ways, on the tile too.
    await b.page.waitForFunction(() => window.meridian.room().remoteParticipants.get('alice')?.connectionQuality === 'excellent'
      && window.meridian.room().localParticipant.connectionQuality === 'excellent', null, { timeout: 15_000 })
      .catch(async e => {
        const q = await b.page.evaluate(() => [window.meridian.room().remoteParticipants.get('alice')?.connectionQuality,
          window.meridian.room().localParticipant.connectionQuality]);
        throw new Error(`bob hears connection quality: ${e.message}; alice, bob: ${q}`);
      });
    await b.page.waitForFunction(() => [...document.querySelectorAll('.tile i')].some(i => i.dataset.quality === 'excellent'),
      null, { timeout: 5_000 });

    await a.page.evaluate(() => window.meridian.room().localParticipant.setMicrophoneEnabled(false));
    await b.page.waitForFunction(() => !window.meridian.room().activeSpeakers.some(p => p.identity === 'alice')
      && window.__speakers.length > 0, null, { timeout: 10_000 }).catch(async e => {
      throw new Error(`alice muted stops speaking: ${e.message}; events ${JSON.stringify(await events(b.page))}`);
    });
    const seen = await events(b.page);
    t.diagnostic(`bob saw ${JSON.stringify(seen)}`);
    assert.ok(seen.every(s => !s.includes('bob')), `silent bob is never a speaker: ${JSON.stringify(seen)}`);
    assert.equal(await b.page.evaluate(() => window.meridian.room().localParticipant.isSpeaking), false, 'bob is not speaking');
  } finally {
    for (const p of [a, b]) await p.context.close();
  }
});
