// Two Chromium tabs open the page of `p2p serve`, meet in one room through
// its signaling server, connect with RTCPeerConnection and chat over a data
// channel. Run by xtask/scripts/browser.sh; it prints one JSON line per run
// and exits non-zero on the first failed check.
//
//   node chat.mjs --base http://127.0.0.1:8080 --policy relay|all \
//        [--metrics http://127.0.0.1:9100/metrics] [--chromium /usr/bin/chromium]
//
// With --policy relay both pages set iceTransportPolicy 'relay': the selected
// pair must be relay/relay and the server's TURN metrics must count the chat
// bytes as relayed. With --policy all the pages may connect any way; the
// selected pair's types are reported.
//
// With --expect no-relay (and --policy relay) one page is opened against a
// server that hands out no TURN credentials (static users it does not
// share): the page must say why relaying cannot work, within the step,
// instead of waiting at "ICE state new".

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
// playwright-core is installed by browser.sh outside the source tree; it
// passes the directory in NODE_PATH, which createRequire honours.
const { chromium } = require('playwright-core');

function arg(name, fallback) {
  const i = process.argv.indexOf('--' + name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const base = arg('base', 'http://127.0.0.1:8080');
const policy = arg('policy', 'all');
const metricsUrl = arg('metrics', '');
const executablePath = arg('chromium', '/usr/bin/chromium');
const STEP_MS = Number(arg('timeout-ms', '30000'));
const relay = policy === 'relay';
const expectNoRelay = arg('expect', '') === 'no-relay';

function fail(msg) {
  throw new Error(`[${policy}] ${msg}`);
}

async function relayedBytes() {
  const res = await fetch(metricsUrl);
  if (!res.ok) fail(`metrics: HTTP ${res.status}`);
  const text = await res.text();
  let total = 0;
  let seen = false;
  for (const line of text.split('\n')) {
    const m = line.match(/^p2p_turn_relayed_bytes_to_(peer|client)_total(\{[^}]*\})?\s+([0-9.e+]+)$/);
    if (m) {
      total += Number(m[3]);
      seen = true;
    }
  }
  if (!seen) fail('metrics: no p2p_turn_relayed_bytes_*_total in ' + metricsUrl);
  return total;
}

async function waitFor(page, what, predicate, arg) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: STEP_MS, polling: 100 });
  } catch (e) {
    const state = await page.evaluate(() => window.p2pTest && window.p2pTest.state()).catch(() => null);
    fail(`timed out waiting for ${what}; page state: ${JSON.stringify(state)}`);
  }
}

const profile = mkdtempSync(join(tmpdir(), 'p2p-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      // Host candidates with real addresses rather than mDNS names, and the
      // loopback interface usable, so that two tabs on one host connect.
      '--disable-features=WebRtcHideLocalIpsWithMdns',
      '--allow-loopback-in-peer-connection',
    ],
  });
  const room = `browser-${policy}-${process.pid}`;
  const url = `${base}/?room=${room}${relay ? '&relay=1' : ''}`;
  if (expectNoRelay) {
    const page = await context.newPage();
    await page.goto(url, { timeout: STEP_MS });
    await waitFor(page, 'the page to say why relay cannot work',
      () => window.p2pTest && window.p2pTest.state().relayProblem);
    const state = await page.evaluate(() => window.p2pTest.state());
    const shown = await page.textContent('#relay');
    if (!shown.includes('no TURN credentials')) fail(`the page shows "${shown}"`);
    if (state.ice !== 'relay unavailable') fail(`ICE state ${state.ice}`);
    console.log(JSON.stringify({ policy, relayProblem: state.relayProblem }));
  } else {
    await twoPages(context, url);
  }
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}

// Two pages in one room connect and chat.
async function twoPages(context, url) {
  const before = relay && metricsUrl ? await relayedBytes() : 0;

  const pages = [];
  for (let i = 0; i < 2; i++) {
    const page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') console.error(`page ${i}: ${m.text()}`); });
    page.on('pageerror', (e) => console.error(`page ${i} error: ${e}`));
    await page.goto(url, { timeout: STEP_MS });
    await waitFor(page, `page ${i} in the room`, () => window.p2pTest && window.p2pTest.state().signaling === 'in room');
    pages.push(page);
  }
  for (const [i, page] of pages.entries()) {
    await waitFor(page, `page ${i}'s data channel`, () => window.p2pTest.state().channel === 'open');
  }

  // Chat both ways, with enough bytes that the relay counters must move.
  const payload = 'x'.repeat(2000);
  const messages = [`hello from page 0 ${payload}`, `hello from page 1 ${payload}`];
  for (const [i, page] of pages.entries()) {
    const ok = await page.evaluate((text) => window.p2pTest.send(text), messages[i]);
    if (!ok) fail(`page ${i} could not send`);
  }
  for (const [i, page] of pages.entries()) {
    await waitFor(page, `page ${i} to receive`, (text) => window.p2pTest.received().includes(text), messages[1 - i]);
  }

  const pairs = [];
  for (const [i, page] of pages.entries()) {
    let pair = null;
    const deadline = Date.now() + STEP_MS;
    while (!pair && Date.now() < deadline) {
      pair = await page.evaluate(() => window.p2pTest.selectedPair());
      if (!pair) await new Promise((r) => setTimeout(r, 200));
    }
    if (!pair) fail(`page ${i}: no selected candidate pair in getStats`);
    pairs.push(pair);
    const shown = await page.textContent('#pair');
    if (!shown.includes(pair.local.type)) fail(`page ${i} shows "${shown}", not the pair's types`);
    const state = await page.evaluate(() => window.p2pTest.state());
    if (state.ice !== 'connected' && state.ice !== 'completed') fail(`page ${i}: ICE state ${state.ice}`);
  }

  const result = {
    policy,
    pairs: pairs.map((p) => `${p.local.type}/${p.remote.type} ${p.local.protocol}` +
      ` ${p.local.address}:${p.local.port} -> ${p.remote.address}:${p.remote.port}`),
  };
  if (relay) {
    for (const [i, p] of pairs.entries()) {
      if (p.local.type !== 'relay' || p.remote.type !== 'relay') {
        fail(`page ${i}: selected pair is ${p.local.type}/${p.remote.type}, not relay/relay`);
      }
    }
    if (metricsUrl) {
      const after = await relayedBytes();
      result.relayedBytes = after - before;
      // Two chat messages of over 2000 bytes each went through the relay
      // (twice: client to peer, then peer to client).
      if (after - before < 4000) fail(`the TURN metrics counted only ${after - before} relayed bytes`);
    }
  }
  console.log(JSON.stringify(result));
}
