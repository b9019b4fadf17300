// Two Chromium peers side by side (issue 13, "Speed": "put two Chromium
// tabs beside it"): two RTCPeerConnections in one headless Chromium page,
// signalled in-page (offer, answer and every trickled candidate handed
// over directly, no server), so what is measured is Chromium's own ICE,
// DTLS, SCTP and DCEP on this machine:
//
//   setup: from `new RTCPeerConnection` (both) to the first message of a
//          channel read by the other peer (what `channel_setup`'s
//          "connect() to the first message" measures for ours, minus the
//          signaling server);
//   open:  on a connected pair, `createDataChannel` plus one message sent
//          at `open` until the other peer has read it (ours: `open_channel`
//          plus one message until the peer has read it).
//
// Prints one JSON line: {"setup_ms":[...], "open_ms":[...], "version":"..."}.
// Usage: node chromium_channel.mjs [--chromium PATH] [--runs N]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

function arg(name, fallback) {
  const i = process.argv.indexOf('--' + name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const executablePath = arg('chromium', '/usr/bin/chromium');
const runs = Math.max(1, Math.min(200, Number(arg('runs', '20'))));

const profile = mkdtempSync(join(tmpdir(), 'p2p-chromium-bench-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    // Plain host candidates: the two peers are in one page and must not
    // depend on an mDNS responder that this machine may not run.
    args: ['--headless', '--no-sandbox', '--disable-features=WebRtcHideLocalIpsWithMdns'],
  });
  const page = context.pages()[0] || (await context.newPage());
  await page.goto('about:blank');
  const result = await page.evaluate(async (runs) => {
    const STEP_MS = 10000;
    const within = (p, what) =>
      Promise.race([
        p,
        new Promise((_, reject) => setTimeout(() => reject(new Error('timed out: ' + what)), STEP_MS)),
      ]);
    async function pair() {
      const a = new RTCPeerConnection();
      const b = new RTCPeerConnection();
      a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
      b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
      return [a, b];
    }
    // One channel from a to b and one message over it; resolves when b
    // has read the message.
    function oneMessage(a, b, label) {
      return new Promise((resolve) => {
        b.addEventListener('datachannel', function on(e) {
          if (e.channel.label !== label) return;
          b.removeEventListener('datachannel', on);
          e.channel.onmessage = () => resolve();
        });
        const ch = a.createDataChannel(label);
        ch.onopen = () => ch.send('hello');
      });
    }
    const setup = [];
    const open = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const [a, b] = await pair();
      const first = oneMessage(a, b, 'first');
      const offer = await a.createOffer();
      await a.setLocalDescription(offer);
      await b.setRemoteDescription(offer);
      const answer = await b.createAnswer();
      await b.setLocalDescription(answer);
      await a.setRemoteDescription(answer);
      await within(first, 'first message of run ' + i);
      setup.push(performance.now() - t0);
      const t1 = performance.now();
      await within(oneMessage(a, b, 'second'), 'second channel of run ' + i);
      open.push(performance.now() - t1);
      a.close();
      b.close();
    }
    return { setup_ms: setup, open_ms: open, version: navigator.userAgent };
  }, runs);
  console.log(JSON.stringify(result));
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
