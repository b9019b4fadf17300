// A Chromium tab of `p2p serve`'s page and `p2p connect` meet in one room and
// chat over a WebRTC data channel (DTLS, SCTP): the browser is the other
// peer of our stack. Run by xtask/scripts/browser.sh; prints one JSON line
// per run and exits non-zero on the first failed check.
//
//   node cli.mjs --base http://127.0.0.1:8080 --p2p target/debug/p2p \
//        --order tab-first|cli-first [--policy all|relay] [--tamper]
//        [--file to-cli|from-cli]
//
// Checks: the tab's data channel opens; lines go both ways, and a 64 KiB
// message each way; getStats shows the DTLS transport connected with the
// certificate whose fingerprint `p2p connect` reports as its own. With
// --tamper the page alters one hex digit of the fingerprint our side
// signaled: the connection must fail on both sides and deliver nothing.
// With --file, a file instead of chat: the tab sends 3 MiB to `p2p receive`,
// or `p2p send` sends 3 MiB of random bytes to the tab; the SHA-256 both
// sides report must be that of the bytes, and the file on disk intact.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

function arg(name, fallback) {
  const i = process.argv.indexOf('--' + name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const flag = (name) => process.argv.includes('--' + name);

// A promise's value, or 'timeout' after ms; the timer is cleared either way
// (a pending timer would keep node alive for its whole length).
async function within(promise, ms) {
  let timer;
  const late = new Promise((r) => { timer = setTimeout(() => r('timeout'), ms); });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

const base = arg('base', 'http://127.0.0.1:8080');
const p2p = arg('p2p', 'target/debug/p2p');
const order = arg('order', 'tab-first');
const policy = arg('policy', 'all');
const tamper = flag('tamper');
const file = arg('file', null);
const FILE_SIZE = 3 * 1024 * 1024 + 123;
const fileDir = mkdtempSync(join(tmpdir(), 'p2p-file-'));
const executablePath = arg('chromium', '/usr/bin/chromium');
const STEP_MS = Number(arg('timeout-ms', '30000'));
const relay = policy === 'relay';
// --mdns ADDRESS: Chromium keeps its default (host candidates named
// <uuid>.local); the path `p2p connect` ends on must be host, to the tab's
// ADDRESS, learnt from the resolved name (its log says so). --p2p-log
// sets RUST_LOG for the child (P2P_CLI_LOG does too).
const mdns = arg('mdns', '');
// --no-path: the network leaves no path (a control run): both sides must
// give up, as with --tamper, and nothing is delivered.
const noPath = flag('no-path');
// --ice-tcp: p2p connect gathers ICE-TCP candidates too; the tab's UDP is
// blocked by the caller, so the path must run over TCP: ICE-TCP (both
// ends tcp) or the tab's TURN over TCP. The result says which (via).
const iceTcp = flag('ice-tcp');
// --hidden ADDRESS: the page asks its peer to hide its host addresses
// (&hide=1, hideHosts in its join) and p2p connect, at ADDRESS, does so
// by itself (no --mdns-hide): every host candidate it signals is a .local
// name and ADDRESS never appears in them. The caller drops p2p connect's
// own checks, so the path can only open by Chromium's checks to the
// address it resolved our name to: the tab's selected pair must have a
// host remote.
const hidden = arg('hidden', '');
const tag = `[${order} ${policy}${tamper ? ' tamper' : ''}${mdns ? ' mdns' : ''}${file ? ' file ' + file : ''}]`;

function fail(msg) {
  throw new Error(`${tag} ${msg}`);
}

// `p2p connect` as a child: stdout lines, JSON events from stderr.
function startCli(room) {
  const net = ['--signaling', base.replace(/^http/, 'ws') + '/ws', '--room', room,
    '--loopback', '--no-port-mapping', '--json', '--name', 'cli', '--timeout', '15', '--peer-timeout', '30'];
  const args = file === 'to-cli' ? ['receive', '--out', fileDir, ...net]
    : file === 'from-cli' ? ['send', join(fileDir, 'from-cli.bin'), ...net]
      : ['connect', ...net, '--expect-lines', tamper || noPath ? '1' : '3'];
  if (relay) args.push('--relay-only');
  // The name may resolve after the path is up (the tab's check can come
  // first): stay long enough for the answer on a loaded machine.
  if ((mdns || hidden) && !file) args.push('--linger-ms', '3000');
  if (iceTcp) args.push('--ice-tcp');
  const log = mdns || hidden ? 'warn,p2p_connect=debug' : (process.env.P2P_CLI_LOG || 'warn');
  const child = spawn(p2p, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: log } });
  const cli = { child, lines: [], events: [], stderr: '', exit: null };
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

async function until(what, pred) {
  const deadline = Date.now() + STEP_MS;
  while (Date.now() < deadline) {
    const v = await pred();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  fail(`timed out waiting for ${what}`);
}

async function waitFor(page, what, predicate, a) {
  try {
    await page.waitForFunction(predicate, a, { timeout: STEP_MS, polling: 100 });
  } catch (e) {
    const state = await page.evaluate(() => window.p2pTest && window.p2pTest.state()).catch(() => null);
    const short = JSON.stringify(state, (k, v) => (typeof v === 'string' && v.length > 80 ? `${v.slice(0, 20)}… (${v.length} bytes)` : v));
    fail(`timed out waiting for ${what}; page state: ${short}; p2p connect said: ${cli ? cli.stderr.slice(-600) : ''}`);
  }
}

const profile = mkdtempSync(join(tmpdir(), 'p2p-chromium-'));
let context;
let cli;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run',
      ...(mdns || hidden ? [] : ['--disable-features=WebRtcHideLocalIpsWithMdns', '--allow-loopback-in-peer-connection'])],
  });
  const room = `cli-${order}-${policy}-${tamper ? 't' : 'ok'}-${file || 'chat'}-${process.pid}`;
  if (file === 'from-cli') writeFileSync(join(fileDir, 'from-cli.bin'), randomBytes(FILE_SIZE));
  const url = `${base}/?room=${room}&name=tab${relay ? '&relay=1' : ''}${tamper ? '&tamper=1' : ''}${hidden ? '&hide=1' : ''}`;
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`page error: ${e}`));
  const openPage = async () => {
    await page.goto(url, { timeout: STEP_MS });
    await waitFor(page, 'the page in the room', () => window.p2pTest && window.p2pTest.state().signaling === 'in room');
  };
  if (order === 'tab-first') {
    await openPage();
    cli = startCli(room);
  } else {
    cli = startCli(room);
    await until('p2p connect in the room', () => cli.events.some((e) => e.event === 'joined'));
    await openPage();
  }

  if (file) {
    await waitFor(page, 'the connection', () => window.p2pTest.state().connection === 'connected');
    const ready = await until('p2p ready', () => cli.events.find((e) => e.event === 'ready'));
    let want, tabSaw;
    if (file === 'to-cli') {
      const r = await page.evaluate((n) => window.p2pTest.sendFile('from-tab.bin', n, 5), FILE_SIZE);
      if (!r.ok) fail(`the tab could not send: ${r.error}`);
      const bytes = Buffer.alloc(FILE_SIZE);
      for (let i = 0; i < FILE_SIZE; i++) bytes[i] = (i * 7 + 5) & 255;
      want = createHash('sha256').update(bytes).digest('hex');
      tabSaw = r.sha256;
    } else {
      want = createHash('sha256').update(readFileSync(join(fileDir, 'from-cli.bin'))).digest('hex');
      await waitFor(page, 'the tab to receive the file', () => window.p2pTest.files().some((f) => f.ok || f.error));
      const f = (await page.evaluate(() => window.p2pTest.files()))[0];
      if (!f.ok) fail(`the tab did not receive the file: ${f.error}`);
      if (f.name !== 'from-cli.bin' || f.size !== FILE_SIZE) fail(`the tab got ${f.name}, ${f.size} bytes`);
      tabSaw = f.sha256;
    }
    const code = await within(cli.exited, STEP_MS);
    if (code !== 0) fail(`p2p ${file === 'to-cli' ? 'receive' : 'send'} exited ${code}: ${cli.stderr.slice(-500)}`);
    const done = cli.events.find((e) => e.event === 'done');
    if (!done || done.sha256 !== want) fail(`p2p reported ${JSON.stringify(done)}, the bytes hash to ${want}`);
    if (tabSaw !== want) fail(`the tab computed sha256 ${tabSaw}, the bytes hash to ${want}`);
    if (file === 'to-cli') {
      const onDisk = createHash('sha256').update(readFileSync(join(fileDir, 'from-tab.bin'))).digest('hex');
      if (onDisk !== want) fail(`the file on disk hashes to ${onDisk}, want ${want}`);
    }
    console.log(JSON.stringify({ order, policy, file, bytes: FILE_SIZE, sha256: want.slice(0, 16) + '…',
      cli: `${ready.local_kind}/${ready.remote_kind}` }));
  } else if (tamper || noPath) {
    // Neither side may connect, and nothing is delivered.
    const code = await within(cli.exited, STEP_MS * 2);
    if (code === 'timeout') fail('p2p connect did not give up');
    if (code === 0) fail('p2p connect exited 0 although the fingerprint was altered');
    const state = await page.evaluate(() => window.p2pTest.state());
    if (state.channel === 'open') fail('the page opened a data channel with an altered fingerprint');
    if (state.received.length > 0 || cli.lines.length > 0) fail('something was delivered');
    const d = await page.evaluate(() => window.p2pTest.dtls());
    if (d && d.dtlsState === 'connected') fail(`DTLS connected: ${JSON.stringify(d)}`);
    const why = cli.stderr.split('\n').filter((l) => /fail|error|refused|fingerprint/i.test(l)).slice(-2);
    console.log(JSON.stringify({ order, policy, tamper, noPath, cliExit: code, dtls: d && d.dtlsState, cli: why }));
  } else {
    await waitFor(page, 'the data channel', () => window.p2pTest.state().channel === 'open');
    // The tab's selected pair, read while the connection is surely up (p2p
    // connect leaves once the lines are through, and the tab then closes).
    const pair = await until('a selected pair', () => page.evaluate(() => window.p2pTest.selectedPair()));
    const ready = await until('p2p connect ready', () => cli.events.find((e) => e.event === 'ready'));
    // Lines both ways, one of them 64 KiB.
    const big = 'b'.repeat(64 * 1024);
    const fromTab = ['hello from the tab', 'second line from the tab', 'B' + big.slice(1)];
    for (const m of fromTab) {
      if (!await page.evaluate((t) => window.p2pTest.send(t), m)) fail('the page could not send');
    }
    const fromCli = ['hello from p2p connect', 'second line from p2p connect', 'C' + big.slice(1)];
    cli.child.stdin.write(fromCli.join('\n') + '\n');
    await until('p2p connect to print the tab\'s lines', () => cli.lines.length >= 3);
    for (const [i, m] of fromTab.entries()) {
      if (cli.lines[i] !== m) fail(`p2p connect line ${i}: ${JSON.stringify(cli.lines[i].slice(0, 80))} (${cli.lines[i].length} bytes)`);
    }
    await waitFor(page, 'the tab to receive the lines', (n) => window.p2pTest.received().length >= n, fromCli.length);
    const got = await page.evaluate(() => window.p2pTest.received());
    for (const [i, m] of fromCli.entries()) {
      if (got[i] !== m) fail(`the tab's message ${i}: ${JSON.stringify(String(got[i]).slice(0, 80))}`);
    }
    // getStats: DTLS connected, with the certificate p2p connect says is its own.
    const d = await until('DTLS stats', () => page.evaluate(() => window.p2pTest.dtls()));
    if (d.dtlsState !== 'connected') fail(`dtlsState ${d.dtlsState}`);
    const [alg, hex] = ready.local_fingerprint.split(' ');
    if ((d.remoteFingerprintAlgorithm || '').toLowerCase() !== alg || (d.remoteFingerprint || '').toUpperCase() !== hex.toUpperCase()) {
      fail(`the browser saw certificate ${d.remoteFingerprintAlgorithm} ${d.remoteFingerprint}, p2p connect says ${ready.local_fingerprint}`);
    }
    if (relay && (pair.local.type !== 'relay' || ready.local_kind !== 'relay')) {
      fail(`relay-only, yet ${pair.local.type} / ${ready.local_kind}`);
    }
    let via;
    if (iceTcp) {
      const paths = cli.events.filter((e) => e.event === 'connected' || e.event === 'path_changed');
      const last = paths[paths.length - 1] || ready;
      if (last.transport === 'tcp' && pair.local.protocol === 'tcp') via = 'ICE-TCP';
      else if (pair.local.type === 'relay' && pair.local.relayProtocol === 'tcp') via = 'TURN-TCP';
      else fail(`the tab's UDP is blocked, yet it is on ${pair.local.protocol} ${pair.local.type} and p2p connect on ${last.transport} ${last.local_kind}`);
    }
    const code = await within(cli.exited, STEP_MS);
    if (code !== 0) fail(`p2p connect exited ${code}: ${cli.stderr.slice(-500)}`);
    let resolved;
    if (mdns) {
      // The tab named its host candidate; we resolved it and ended on it.
      const named = cli.stderr.split('\n').filter((l) => /remote candidate .*\.local .*typ host/.test(l));
      if (named.length === 0) fail(`the tab signalled no .local host candidate: ${cli.stderr.slice(-800)}`);
      resolved = cli.stderr.split('\n').find((l) => /mDNS: \S+\.local is \[/.test(l));
      if (!resolved || !resolved.includes(mdns)) fail(`the name did not resolve to ${mdns}: ${cli.stderr.slice(-800)}`);
      // The last path p2p connect reported (a late relabel included).
      const paths = cli.events.filter((e) => e.event === 'connected' || e.event === 'path_changed');
      const last = paths[paths.length - 1] || ready;
      if (last.remote_kind !== 'host' || !String(last.remote_address).startsWith(mdns + ':')) {
        fail(`p2p connect ended on ${last.remote_kind} ${last.remote_address}, not host ${mdns}`);
      }
      resolved = resolved.replace(/^.*mDNS: /, '');
    }
    let hiddenAs;
    if (hidden) {
      // We signalled names only, because the page asked.
      const ours = cli.stderr.split('\n').filter((l) => l.includes('"event":"local_candidate"'));
      if (!cli.stderr.includes('the peer asks us to hide our host addresses')) fail(`p2p connect did not hear the page's request: ${cli.stderr.slice(-800)}`);
      if (!ours.some((l) => /\.local/.test(l))) fail(`p2p connect signalled no .local name: ${ours.join('\n')}`);
      if (ours.some((l) => l.includes(hidden))) fail(`p2p connect gave its address away: ${ours.join('\n')}`);
      // Our checks were dropped: Chromium's check to the address it
      // resolved our name to opened the path.
      if (pair.remote.type !== 'host') fail(`the tab's pair has a ${pair.remote.type} remote, not host: ${JSON.stringify(pair)}`);
      hiddenAs = ours.map((l) => (l.match(/[0-9a-f-]{36}\.local/) || [])[0]).filter(Boolean)[0];
    }
    console.log(JSON.stringify({
      ...(mdns ? { mdns: resolved } : {}),
      ...(hidden ? { hidden: hiddenAs, tabRemote: `${pair.remote.type} ${pair.remote.address}:${pair.remote.port}` } : {}),
      ...(iceTcp ? { via, tab: `${pair.local.protocol} ${pair.local.type} -> ${pair.remote.protocol} ${pair.remote.type}` } : {}),
      order, policy, dtls: d.dtlsState, tls: d.tlsVersion, cipher: d.cipher,
      pair: `${pair.local.type}/${pair.remote.type}`, cli: `${ready.local_kind}/${ready.remote_kind}`,
      fingerprint: ready.local_fingerprint.slice(0, 20) + '…',
    }));
  }
} finally {
  if (cli && process.env.P2P_CLI_STDERR) {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(process.env.P2P_CLI_STDERR, cli.stderr);
  }
  if (cli && cli.exit === null) cli.child.kill('SIGKILL');
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  rmSync(fileDir, { recursive: true, force: true });
}
