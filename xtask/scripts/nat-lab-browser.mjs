// One row of the browser NAT lab (xtask/scripts/nat-lab-browser.sh, which
// runs this inside the browser's namespace): a headless Chromium tab of
// `p2p serve`'s page and `p2p connect` (started in the other namespace with
// `ip netns exec`) meet in one room, each behind its own NAT, and chat over
// an encrypted WebRTC data channel.
//
//   node nat-lab-browser.mjs --base http://203.0.113.10:8080 --p2p target/debug/p2p \
//     --p2p-ns p2pweb-c3 --order tab-first|cli-first --want direct|relay \
//     [--mdns on|off] [--room NAME] [--chromium /usr/bin/chromium] [--timeout-ms 30000]
//
// --order: who joins the room first; the other one offers and controls ICE.
// Checks, in order; any failure exits 1:
//   1. the tab's data channel opens and `p2p connect --json` says ready;
//   2. lines from p2p connect reach the tab intact (ASCII, UTF-8, 64 KiB);
//   3. the tab's getStats, read then (the connection is up and carrying
//      data): DTLS connected; the certificate the tab sees is the one p2p
//      connect reports as its own, and the tab's own certificate is the one
//      p2p connect reports for the peer;
//   4. lines from the tab reach p2p connect intact, and it exits 0;
//   5. the paths: the tab's selected candidate pair (from 3) and p2p
//      connect's (its "ready" line, or the last "path_changed" after it)
//      both fit --want (direct: srflx or prflx at both ends; relay: an end
//      relayed), and they are one path: the tab's local address is the
//      remote address p2p connect selected, and the other way round (where
//      getStats shows it: Chromium hides a remote peer-reflexive address);
//   6. the tab's host candidates reached p2p connect as random .local names
//      (--mdns on, Chromium's default; p2p connect skips them) or as the
//      LAN address (--mdns off).
// 1-4 stop the run at the first failure (the error on stderr); 5 and 6 are
// all reported. The last stdout line is a JSON summary: both sides' paths,
// "ok" and "why". Each step's time goes to stderr.

import { spawn } from 'node:child_process';
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

const base = arg('base', 'http://203.0.113.10:8080');
const p2p = arg('p2p', 'target/debug/p2p');
const p2pNs = arg('p2p-ns', null);
const order = arg('order', 'tab-first');
const want = arg('want', 'direct');
const mdns = arg('mdns', 'on') === 'on';
const executablePath = arg('chromium', '/usr/bin/chromium');
const STEP_MS = Number(arg('timeout-ms', '30000'));
const room = arg('room', `natlab-web-${process.pid}`);
if (!p2pNs) throw new Error('--p2p-ns is required');

function fail(msg) {
  throw new Error(msg);
}
// Each step's time on stderr (the row's log), to see where a slow row went.
const t0 = Date.now();
const step = (what) => console.error(`[${((Date.now() - t0) / 1000).toFixed(1)} s] ${what}`);

// `p2p connect` in the other namespace: stdout lines, JSON events from stderr.
function startCli() {
  const args = ['netns', 'exec', p2pNs, p2p, 'connect', '--signaling', base.replace(/^http/, 'ws') + '/ws',
    '--room', room, '--json', '--name', 'cli', '--timeout', '30', '--peer-timeout', '30',
    '--expect-lines', String(FROM_TAB.length)];
  const child = spawn('ip', args, { stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.P2P_CLI_LOG || 'warn' } });
  const cli = { child, lines: [], events: [], stderr: '', exit: null };
  // Whole characters only: a UTF-8 sequence may straddle two chunks.
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
    let i;
    while ((i = out.indexOf('\n')) >= 0) { cli.lines.push(out.slice(0, i)); out = out.slice(i + 1); }
  });
  let err = '';
  child.stderr.on('data', (d) => {
    cli.stderr += d;
    err += d;
    let i;
    while ((i = err.indexOf('\n')) >= 0) {
      const l = err.slice(0, i); err = err.slice(i + 1);
      try { cli.events.push(JSON.parse(l)); } catch { /* a plain line */ }
    }
  });
  cli.exited = new Promise((resolve) => child.on('exit', (code) => { cli.exit = code; resolve(code); }));
  return cli;
}

const big = (c) => c + 'x'.repeat(64 * 1024 - 1);
const FROM_TAB = ['hello from the tab', 'héllo wörld ✓ from the tab', big('T')];
const FROM_CLI = ['hello from p2p connect', 'héllo wörld ✓ from p2p connect', big('C')];

// A promise's value, or `otherwise` after ms; the timer does not outlive
// it (a pending timer would keep node running to its end).
async function within(promise, ms, otherwise) {
  let timer;
  const late = new Promise((r) => { timer = setTimeout(() => r(otherwise), ms); });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function until(what, pred) {
  const deadline = Date.now() + STEP_MS;
  while (Date.now() < deadline) {
    const v = await pred();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  fail(`timed out after ${STEP_MS} ms waiting for ${what}; p2p connect said: ${cli ? cli.stderr.slice(-800) : '-'}`);
}

async function waitFor(page, what, predicate, a) {
  try {
    await page.waitForFunction(predicate, a, { timeout: STEP_MS, polling: 100 });
  } catch (e) {
    const state = await page.evaluate(() => window.p2pTest && window.p2pTest.state()).catch(() => null);
    const short = JSON.stringify(state, (k, v) => (typeof v === 'string' && v.length > 80 ? `${v.slice(0, 20)}… (${v.length} bytes)` : v));
    fail(`timed out waiting for ${what}; page state: ${short}; p2p connect said: ${cli ? cli.stderr.slice(-800) : '-'}`);
  }
}

// Keeps every RTCPeerConnection the page makes, so that getStats can be
// read beyond what the page's p2pTest exposes (the tab's own certificate).
function capturePeerConnections() {
  const Native = window.RTCPeerConnection;
  window.__p2pLabPcs = [];
  window.RTCPeerConnection = function (...a) {
    const pc = new Native(...a);
    window.__p2pLabPcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
}

// The tab's view from getStats: selected pair, DTLS state, both certificates.
function tabStats() {
  const pc = (window.__p2pLabPcs || []).filter((p) => p.connectionState !== 'closed').pop();
  if (!pc) return null;
  return pc.getStats().then((stats) => {
    let t = null;
    stats.forEach((r) => { if (r.type === 'transport' && r.selectedCandidatePairId) t = r; });
    if (!t) return null;
    const pair = stats.get(t.selectedCandidatePairId);
    if (!pair) return null;
    const cand = (id) => {
      const c = stats.get(id) || {};
      return { type: c.candidateType, address: c.address || c.ip || null, port: c.port,
        protocol: c.protocol, relayProtocol: c.relayProtocol || null };
    };
    const cert = (id) => {
      const c = id ? stats.get(id) : null;
      return c ? `${c.fingerprintAlgorithm} ${c.fingerprint}` : null;
    };
    return {
      dtlsState: t.dtlsState, iceRole: t.iceRole, tlsVersion: t.tlsVersion, cipher: t.dtlsCipher,
      localCert: cert(t.localCertificateId), remoteCert: cert(t.remoteCertificateId),
      pair: { state: pair.state, nominated: !!pair.nominated, local: cand(pair.localCandidateId),
        remote: cand(pair.remoteCandidateId) },
    };
  });
}

// Whether a pair of kinds fits the wanted path (as nat-lab-ice.sh's kinds_ok).
function fits(local, remote) {
  if (want === 'relay') return local === 'relay' || remote === 'relay';
  if (want === 'direct') {
    return ['srflx', 'prflx'].includes(local) && ['srflx', 'prflx'].includes(remote);
  }
  return false;
}

const sameFp = (a, b) => !!a && !!b && a.toLowerCase() === b.toLowerCase();
const kinds = (l, r) => `${l}-${r}`;

const profile = mkdtempSync(join(tmpdir(), 'p2p-chromium-'));
let context;
let cli;
// Stopped by the lab (its cleanup, Ctrl-C): p2p connect and Chromium go too.
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, async () => {
    if (cli && cli.exit === null) cli.child.kill('SIGKILL');
    if (context) await within(context.close().catch(() => {}), 3000);
    rmSync(profile, { recursive: true, force: true });
    process.exit(sig === 'SIGTERM' ? 143 : 130);
  });
}
try {
  const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'];
  // Chromium hides a page's host addresses behind random mDNS names unless
  // told not to; p2p connect skips such candidates (it resolves no mDNS).
  if (!mdns) args.push('--disable-features=WebRtcHideLocalIpsWithMdns');
  step('launching Chromium');
  context = await chromium.launchPersistentContext(profile, { executablePath, headless: true, args });
  step('Chromium up');
  await context.addInitScript(capturePeerConnections);
  const url = `${base}/?room=${room}&name=tab`;
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`page error: ${e}`));
  const openPage = async () => {
    await page.goto(url, { timeout: STEP_MS });
    await waitFor(page, 'the page in the room', () => window.p2pTest && window.p2pTest.state().signaling === 'in room');
  };
  if (order === 'tab-first') {
    await openPage();
    cli = startCli();
  } else {
    cli = startCli();
    await until('p2p connect in the room', () => cli.events.some((e) => e.event === 'joined'));
    await openPage();
  }

  step('both in the room');
  await waitFor(page, 'the data channel', () => window.p2pTest.state().channel === 'open');
  step('data channel open');
  const ready = await until('p2p connect ready', () => cli.events.find((e) => e.event === 'ready'));

  // p2p connect -> tab.
  cli.child.stdin.write(FROM_CLI.join('\n') + '\n');
  await waitFor(page, 'the tab to receive p2p connect\'s lines', (n) => window.p2pTest.received().length >= n, FROM_CLI.length);
  const got = await page.evaluate(() => window.p2pTest.received());
  for (const [i, m] of FROM_CLI.entries()) {
    if (got[i] !== m) fail(`the tab's message ${i}: ${JSON.stringify(String(got[i]).slice(0, 80))} (${String(got[i]).length} chars)`);
  }

  step('p2p connect -> tab: lines intact');
  // getStats while the connection is up and carrying data.
  let tab = await until('getStats: a selected pair', () => page.evaluate(tabStats));
  // Relay first, upgrade later: p2p connect may renominate a better pair
  // just as the tab's stats are read. Read them again (bounded: 5 s) until
  // the tab's end is the remote end of p2p connect's latest path; if they
  // never agree, the check below reports the last reading.
  const sync = Date.now() + 5000;
  for (;;) {
    const paths = cli.events.filter((e) => e.event === 'ready' || e.event === 'path_changed');
    const latest = paths[paths.length - 1];
    const local = tab.pair.local;
    if (!latest || (local.address && `${local.address}:${local.port}` === latest.remote_address)) break;
    if (Date.now() > sync) break;
    await new Promise((r) => setTimeout(r, 100));
    tab = await until('getStats: a selected pair', () => page.evaluate(tabStats));
  }
  if (tab.dtlsState !== 'connected') fail(`the tab's DTLS transport is ${tab.dtlsState}`);
  if (!sameFp(tab.remoteCert, ready.local_fingerprint)) {
    fail(`the tab sees certificate ${tab.remoteCert}; p2p connect says its own is ${ready.local_fingerprint}`);
  }
  if (!sameFp(tab.localCert, ready.remote_fingerprint)) {
    fail(`the tab's certificate is ${tab.localCert}; p2p connect says the peer's is ${ready.remote_fingerprint}`);
  }

  // tab -> p2p connect; it exits 0 once they are all in (--expect-lines).
  for (const m of FROM_TAB) {
    if (!await page.evaluate((t) => window.p2pTest.send(t), m)) fail('the tab could not send');
  }
  await until('p2p connect to print the tab\'s lines', () => cli.lines.length >= FROM_TAB.length);
  for (const [i, m] of FROM_TAB.entries()) {
    if (cli.lines[i] !== m) fail(`p2p connect's line ${i}: ${JSON.stringify(cli.lines[i].slice(0, 80))} (${cli.lines[i].length} chars)`);
  }
  step('tab -> p2p connect: lines intact');
  const code = await within(cli.exited, STEP_MS, 'timeout');
  if (code !== 0) fail(`p2p connect exited ${code}: ${cli.stderr.slice(-800)}`);

  step(`p2p connect exited ${code}`);
  // The paths: p2p connect's last selected one, the tab's from getStats.
  const paths = cli.events.filter((e) => e.event === 'ready' || e.event === 'path_changed');
  const last = paths[paths.length - 1];
  const cliPath = paths.map((e) => kinds(e.local_kind, e.remote_kind)).join(' then ');
  const p = tab.pair;
  const tabPath = kinds(p.local.type, p.remote.type);
  const addr = (c) => (c.address ? `${c.address}:${c.port}` : null);
  const problems = [];
  if (!fits(last.local_kind, last.remote_kind)) problems.push(`p2p connect on ${cliPath}, wanted ${want}`);
  if (!fits(p.local.type, p.remote.type)) problems.push(`the tab on ${tabPath}, wanted ${want}`);
  if (addr(p.local) !== last.remote_address) {
    problems.push(`the tab's end is ${addr(p.local)}, p2p connect's remote end ${last.remote_address}`);
  }
  if (addr(p.remote) !== null && addr(p.remote) !== last.local_address) {
    problems.push(`the tab's remote end is ${addr(p.remote)}, p2p connect's own end ${last.local_address}`);
  }
  // The tab's host candidates as p2p connect received them: random .local
  // names with Chromium's default, the LAN address with mDNS hiding off.
  const hosts = [...new Set(cli.events.filter((e) => e.event === 'remote_candidate')
    .map((e) => (/remote host (\S+):\d+$/.exec(e.text) || [])[1]).filter(Boolean))];
  const named = hosts.filter((h) => h.endsWith('.local'));
  if (mdns && (named.length === 0 || named.length !== hosts.length)) {
    problems.push(`Chromium hides its host addresses by default, yet p2p connect got host candidates ${JSON.stringify(hosts)}`);
  }
  if (!mdns && (hosts.length === 0 || named.length > 0)) {
    problems.push(`with mDNS hiding off, p2p connect got host candidates ${JSON.stringify(hosts)}`);
  }
  console.log(JSON.stringify({
    ok: problems.length === 0, why: problems.join('; '),
    order, want, mdns, controlling: order === 'tab-first' ? 'p2p connect' : 'tab',
    tab: { path: tabPath, local: `${p.local.type} ${addr(p.local)}${p.local.relayProtocol ? ' over ' + p.local.relayProtocol : ''}`,
      remote: `${p.remote.type} ${addr(p.remote) || '(address hidden)'}`, iceRole: tab.iceRole,
      dtls: tab.dtlsState, tls: tab.tlsVersion, cipher: tab.cipher },
    cli: { path: cliPath, local: `${last.local_kind} ${last.local_address}`, remote: `${last.remote_kind} ${last.remote_address}`,
      ice_ms: ready.ice_ms, tab_hosts: hosts },
    fingerprints: { p2p: ready.local_fingerprint.slice(0, 28) + '…', tab: tab.localCert.slice(0, 28) + '…' },
  }));
  if (problems.length) process.exitCode = 1;
} finally {
  if (cli && process.env.P2P_CLI_STDERR) {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(process.env.P2P_CLI_STDERR, cli.stderr);
  }
  if (cli && cli.exit === null) cli.child.kill('SIGKILL');
  if (context) await context.close().catch(() => {});
  step('Chromium closed');
  rmSync(profile, { recursive: true, force: true });
}
