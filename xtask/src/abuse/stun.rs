//! The attacks on the STUN/TURN port: TCP slowloris and header-pinned
//! buffers (issue 18.2), one address taking every TCP slot (18.2), TURN
//! credential farming into relay allocations (18.3), password guessing
//! (18.4).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::daemon::{ip, median, mib, Daemon, RssPeak};
use super::turnc::{self, Signed};
use super::ws::{self, field, Ws};
use super::{Ctx, Report, STEP};

const REALM: &str = "abuse.test";
const ALICE: &str = "alice:abuse-pw";

/// The TURN daemon every attack here starts: a static user, relaying to
/// loopback allowed (the legitimate client's echo peer is on 127.0.0.1).
fn turn_args<'a>(more: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--realm",
        REALM,
        "--user",
        ALICE,
        "--allow-peer",
        "127.0.0.0/8",
    ];
    v.extend_from_slice(more);
    v
}

/// An Allocate header announcing 65,532 bytes of attributes.
fn big_header() -> Vec<u8> {
    let mut h = turnc::allocate(9, None);
    h.truncate(20);
    h[2..4].copy_from_slice(&65_532u16.to_be_bytes());
    h
}

/// Whether the server closed `s` (non-blocking peek).
fn is_closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 256];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    }
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// Issue 18.2: connections that send a byte at a time (before, every byte
/// restarted the 30 s idle timeout, so one byte every 5 s kept them open),
/// and connections that send one unauthenticated Allocate (before, it
/// raised their timeout to 3,660 s) then a header announcing 65,532 bytes
/// (before, a 64 KiB buffer for that hour). Each must close at the idle
/// timeout, memory must stay bounded, and a legitimate TCP client must be
/// served meanwhile.
pub(super) fn stun_slowloris(ctx: &Ctx) -> Result<Report, String> {
    let (trickle_n, pinned_n) = if ctx.short { (400, 200) } else { (2000, 1000) };
    let (idle, tick) = if ctx.short { (4u64, 1u64) } else { (30, 5) };
    let idle_s = idle.to_string();
    let mut d = Daemon::start(
        ctx,
        "stun-slowloris",
        &turn_args(&["--tcp-idle-timeout", &idle_s]),
    )?;
    let mut r = Report::new(
        "stun-slowloris",
        format!("stun.tcp_idle_timeout_secs = {idle} (progress only: a success answered, or any frame while holding an allocation; a frame under way must arrive whole within it); turn.max_lifetime_secs = 3600 (the timeout of a connection holding an allocation); frame buffers grow with what arrived (p2p_stun::StreamFramer)"),
    );
    turnc::legit_turn(ctx, d.tcp, ALICE, true).map_err(|e| format!("warm-up: {e}"))?;
    thread::sleep(Duration::from_millis(300));
    let base = d.rss();
    let peak = RssPeak::start(d.child.id());
    // Pinned: an unauthenticated Allocate (answered 401), then a header
    // announcing 65,532 bytes and one byte of it.
    let mut pinned = Vec::new();
    for i in 0..pinned_n {
        let from = ip(0, 3, (i / 60 + 1) as u8);
        let Ok(mut s) = ws::tcp(d.tcp, from, None) else {
            continue;
        };
        let mut msg = turnc::allocate(i as u32, None);
        if s.write_all(&msg).is_err() {
            continue;
        }
        let challenged = turnc::read_stun(&mut s).is_ok_and(|a| turnc::outcome(&a) == Err(401));
        msg = big_header();
        msg.push(0);
        if challenged && s.write_all(&msg).is_ok() {
            let _ = s.set_nonblocking(true);
            pinned.push((s, Instant::now()));
        }
    }
    thread::sleep(Duration::from_millis(500));
    let pinned_rss = d.rss();
    // Trickled: one byte of a header now, one more every tick.
    let header = big_header();
    let mut trickle = Vec::new();
    for i in 0..trickle_n {
        let from = ip(0, 2, (i / 60 + 1) as u8);
        let Ok(mut s) = ws::tcp(d.tcp, from, None) else {
            continue;
        };
        if s.write_all(&header[..1]).is_ok() {
            let _ = s.set_nonblocking(true);
            trickle.push((s, Instant::now(), 1usize));
        }
    }
    thread::sleep(Duration::from_millis(500));
    let held_rss = d.rss();
    let held = pinned.len() + trickle.len();
    // Legitimate clients meanwhile: a TURN allocation over TCP, relaying,
    // and Bindings over TCP.
    let legit_turn = turnc::legit_turn(ctx, d.tcp, ALICE, true);
    let legit_bindings: Vec<Result<Duration, String>> = (0..7)
        .map(|_| turnc::tcp_binding(d.tcp, ip(0, 0, 1)))
        .collect();
    // Trickle on, and watch both kinds close.
    let deadline = Instant::now() + Duration::from_secs(idle + 3 * tick + 10);
    let mut trickle_lived = Vec::new();
    let mut pinned_lived = Vec::new();
    let mut bytes_trickled = 0u64;
    let mut next_tick = Instant::now() + Duration::from_secs(tick);
    while (!trickle.is_empty() || !pinned.is_empty()) && Instant::now() < deadline {
        let now = Instant::now();
        let write = now >= next_tick;
        if write {
            next_tick += Duration::from_secs(tick);
        }
        trickle.retain_mut(|(s, opened, sent)| {
            if is_closed(s) {
                trickle_lived.push(opened.elapsed().as_secs_f64());
                return false;
            }
            if write && *sent < header.len() - 1 {
                if s.write_all(&header[*sent..*sent + 1]).is_err() {
                    trickle_lived.push(opened.elapsed().as_secs_f64());
                    return false;
                }
                *sent += 1;
                bytes_trickled += 1;
            }
            true
        });
        pinned.retain_mut(|(s, since)| {
            if is_closed(s) {
                pinned_lived.push(since.elapsed().as_secs_f64());
                return false;
            }
            true
        });
        thread::sleep(Duration::from_millis(100));
    }
    let still_open = trickle.len() + pinned.len();
    drop(trickle);
    drop(pinned);
    let peak = peak.finish();
    thread::sleep(Duration::from_millis(500));
    let after = d.rss();
    let slow_frame = d.metric_or_zero("p2p_stream_closed_total{reason=\"slow_frame\"}");
    let idle_closed = d.metric_or_zero("p2p_stream_closed_total{reason=\"idle\"}");
    let per_pinned = pinned_rss.saturating_sub(base) / pinned_n.max(1) as u64;
    let per_trickle = held_rss.saturating_sub(pinned_rss) / trickle_n.max(1) as u64;
    let growth = peak.saturating_sub(base);
    let bound = held as u64 * 16 * 1024 + 24 * 1024 * 1024;
    let limit = (idle + tick + 2) as f64;
    r.figure(
        "connections sending a byte every tick (one header byte each)",
        format!("{trickle_n} (a byte every {tick} s; {bytes_trickled} bytes in all)"),
    );
    r.figure(
        "connections pinning a 65,532-byte frame after an unauthenticated Allocate (401)",
        pinned_n,
    );
    r.figure(
        "daemon RSS: before / pinned held / all held / peak / after",
        format!(
            "{} / {} / {} / {} / {}",
            mib(base),
            mib(pinned_rss),
            mib(held_rss),
            mib(peak),
            mib(after)
        ),
    );
    r.figure(
        "RSS per pinned connection / per trickling connection",
        format!(
            "{:.1} KiB / {:.1} KiB (a 64 KiB buffer each before)",
            per_pinned as f64 / 1024.0,
            per_trickle as f64 / 1024.0
        ),
    );
    r.figure(
        "trickling closed / median / last after",
        format!(
            "{} / {:.1} s / {:.1} s",
            trickle_lived.len(),
            median(trickle_lived.clone()),
            max(&trickle_lived)
        ),
    );
    r.figure(
        "pinned closed / median / last after (since their 401)",
        format!(
            "{} / {:.1} s / {:.1} s (3,660 s before)",
            pinned_lived.len(),
            median(pinned_lived.clone()),
            max(&pinned_lived)
        ),
    );
    r.figure(
        "closed by the metrics: slow_frame / idle",
        format!("{slow_frame} / {idle_closed}"),
    );
    r.figure(
        "legitimate TURN client over TCP meanwhile (allocate, relay 3, delete)",
        match &legit_turn {
            Ok(t) => format!("served in {:.2} s", t.as_secs_f64()),
            Err(e) => format!("FAILED: {e}"),
        },
    );
    let legit_ok = legit_bindings.iter().filter(|b| b.is_ok()).count();
    r.figure(
        "legitimate Bindings over TCP meanwhile",
        format!("{legit_ok} of 7 served"),
    );
    r.check(
        format!(
            "every connection was held ({held}/{})",
            trickle_n + pinned_n
        ),
        held == trickle_n + pinned_n,
    );
    r.check(
        format!(
            "every trickling connection closed within the idle timeout + a tick + 2 s ({limit} s)"
        ),
        trickle_lived.len() == trickle_n && max(&trickle_lived) <= limit,
    );
    r.check(
        format!(
            "every pinned connection closed within the idle timeout + a tick + 2 s ({limit} s)"
        ),
        pinned_lived.len() == pinned_n && max(&pinned_lived) <= limit,
    );
    r.check("none left open", still_open == 0);
    r.check(
        "the metrics count them all as slow_frame",
        slow_frame == held as u64,
    );
    r.check(
        format!(
            "peak RSS growth {} ≤ {} (16 KiB per connection + 24 MiB)",
            mib(growth),
            mib(bound)
        ),
        growth <= bound,
    );
    r.check(
        "a pinned connection costs at most 16 KiB of RSS (not a 64 KiB buffer)",
        per_pinned <= 16 * 1024,
    );
    r.check(
        "a legitimate TURN client over TCP is served, and 7 of 7 Bindings",
        legit_turn.is_ok() && legit_ok == 7,
    );
    r.check("the daemon is still running", d.alive());
    Ok(r)
}

/// Opens connections from `from` until `attempts` were tried; each counts
/// as admitted when it gets a Binding answered. Returns the admitted ones
/// and the number refused.
fn open_tcp(d: &Daemon, from: IpAddr, attempts: usize, held: &mut Vec<TcpStream>) -> usize {
    let mut refused = 0;
    for k in 0..attempts {
        let ok = ws::tcp(d.tcp, from, Some(4096)).ok().and_then(|mut s| {
            s.write_all(&turnc::binding(k as u32)).ok()?;
            let a = turnc::read_stun(&mut s).ok()?;
            turnc::outcome(&a).ok()?;
            Some(s)
        });
        match ok {
            Some(s) => held.push(s),
            None => refused += 1,
        }
    }
    refused
}

/// Issue 18.2: one address opens every TCP slot (before, it took all
/// 4,096 and legitimate TCP clients failed 7 of 7 times), then many
/// addresses fill the slots up to the reserve. A legitimate client from
/// another address is served at both moments; a heavy address is refused
/// the reserve.
pub(super) fn stun_flood(ctx: &Ctx) -> Result<Report, String> {
    let max = if ctx.short { 800usize } else { 4096 };
    let per_ip = 64usize;
    let reserved = (max * 10).div_ceil(100);
    let max_s = max.to_string();
    let mut d = Daemon::start(
        ctx,
        "stun-flood",
        &turn_args(&["--max-connections", &max_s]),
    )?;
    let mut r = Report::new(
        "stun-flood",
        format!("stun.max_connections = {max}; defaults: max_connections_per_ip = 64 (IPv6 by ipv6_prefix = 64), reserved_percent = 10 (slots kept for addresses holding fewer than reserve_below = 4)"),
    );
    turnc::legit_turn(ctx, d.tcp, ALICE, true).map_err(|e| format!("warm-up: {e}"))?;
    thread::sleep(Duration::from_millis(300));
    let base = d.rss();
    let mut held = Vec::new();
    let started = Instant::now();
    let refused_one = open_tcp(&d, ip(0, 5, 1), max, &mut held);
    let one_time = started.elapsed();
    let admitted_one = held.len();
    let legit_one: Vec<bool> = (0..7)
        .map(|_| turnc::tcp_binding(d.tcp, ip(0, 0, 1)).is_ok())
        .collect();
    let legit_turn_one = turnc::legit_turn(ctx, d.tcp, ALICE, true);
    // Many addresses, up to the general slots.
    let general = max - reserved;
    let mut k = 0u8;
    while held.len() < general && k < 250 {
        k += 1;
        let want = (general - held.len()).min(per_ip);
        open_tcp(&d, ip(0, 6, k), want, &mut held);
    }
    thread::sleep(Duration::from_millis(500));
    let open = held.len();
    let full = d.rss();
    let per_conn = full.saturating_sub(base) / open.max(1) as u64;
    // At the cap: a heavy address is refused, a light one served.
    let mut heavy = Vec::new();
    let heavy_refused = open_tcp(&d, ip(0, 6, k), 1, &mut heavy);
    let legit_cap: Vec<bool> = (0..7)
        .map(|_| turnc::tcp_binding(d.tcp, ip(0, 0, 1)).is_ok())
        .collect();
    let legit_turn_cap = turnc::legit_turn(ctx, d.tcp, ALICE, true);
    let m = |s: &str| d.metric_or_zero(s);
    let refused_per_ip = m("p2p_stream_connections_refused_total{reason=\"per_ip\"}");
    let refused_reserved = m("p2p_stream_connections_refused_total{reason=\"reserved\"}");
    let tcp_open = m("p2p_stream_connections");
    let addresses = m("p2p_stream_addresses");
    let count = |v: &[bool]| v.iter().filter(|b| **b).count();
    r.figure(
        "connections tried from one address / admitted / refused",
        format!(
            "{max} / {admitted_one} / {refused_one} (in {:.1} s)",
            one_time.as_secs_f64()
        ),
    );
    r.figure(
        "legitimate Bindings over TCP from another address meanwhile (0 of 7 before)",
        format!("{} of 7", count(&legit_one)),
    );
    r.figure(
        "idle TCP connections held from many addresses (general slots)",
        format!(
            "{open} from {} addresses (metrics: {tcp_open} open, {addresses} addresses)",
            k as usize + 1
        ),
    );
    r.figure(
        "daemon RSS: before / with them",
        format!("{} / {}", mib(base), mib(full)),
    );
    r.figure(
        "RSS per idle TCP connection",
        format!("{:.1} KiB", per_conn as f64 / 1024.0),
    );
    r.figure(
        "at the cap: a heavy address / a light one (7 Bindings) / a TURN client",
        format!(
            "{} / {} of 7 / {}",
            if heavy_refused == 1 {
                "refused"
            } else {
                "ADMITTED"
            },
            count(&legit_cap),
            match &legit_turn_cap {
                Ok(t) => format!("served in {:.2} s", t.as_secs_f64()),
                Err(e) => format!("FAILED: {e}"),
            }
        ),
    );
    r.figure(
        "refused by the metrics: per_ip / reserved",
        format!("{refused_per_ip} / {refused_reserved}"),
    );
    r.check(
        format!("one address is held to {per_ip} connections"),
        admitted_one == per_ip && refused_one == max - per_ip,
    );
    r.check(
        "a legitimate TCP client is served 7 of 7 times and a TURN client allocates while one address floods",
        count(&legit_one) == 7 && legit_turn_one.is_ok(),
    );
    r.check(
        format!("the general slots fill ({general})"),
        open == general,
    );
    r.check("the metrics see every connection", tcp_open == open as u64);
    r.check(
        "an idle TCP connection costs at most 16 KiB of RSS",
        per_conn <= 16 * 1024,
    );
    r.check(
        "a heavy address is refused the reserved slots",
        heavy_refused == 1 && refused_reserved >= 1,
    );
    r.check(
        "a light address is served at the cap: 7 of 7 Bindings and a TURN client",
        count(&legit_cap) == 7 && legit_turn_cap.is_ok(),
    );
    r.check(
        "the metrics count the per-address refusals",
        refused_per_ip >= (max - per_ip) as u64,
    );
    r.check("the daemon is still running", d.alive());
    drop(held);
    Ok(r)
}

/// Issue 18.3, the TURN side: a farmer collects REST credentials (here the
/// way it did before the signaling fix: one with every welcome, no rate)
/// and allocates with them from one address as fast as it can (before,
/// 16,384 allocations in 2.6 s took the whole relay range and the static
/// user got 508). REST users together are held to their share, one
/// address to the share less its reserve; the static user and a REST user
/// from another address still allocate.
pub(super) fn turn_farming(ctx: &Ctx) -> Result<Report, String> {
    let (ports, welcomes) = if ctx.short {
        (500u32, 400usize)
    } else {
        (2000, 1700)
    };
    let (min_port, max_port) = (24000u32, 24000 + ports - 1);
    let (lo, hi) = (min_port.to_string(), max_port.to_string());
    let mut d = Daemon::start(
        ctx,
        "turn-farming",
        &turn_args(&[
            "--auth-secret",
            "abuse-secret",
            "--turn-credentials",
            "welcome",
            "--credential-burst",
            "1000000",
            "--credential-rate",
            "1000000",
            "--min-port",
            &lo,
            "--max-port",
            &hi,
        ]),
    )?;
    let mut r = Report::new(
        "turn-farming",
        format!("relay ports {min_port}-{max_port} ({ports}: the capacity, turn.total_quota = 0); defaults: turn.rest_share_percent = 80 (static users and a secret), reserved_percent = 10 (within the share too), reserve_below = 4, user_quota = 10; signaling opened up as before its fix (turn_credentials = welcome, no rate)"),
    );
    // Farm.
    let started = Instant::now();
    let mut creds: Vec<(String, String)> = Vec::new();
    for _ in 0..welcomes {
        let Ok(mut c) = Ws::connect(d.signaling, ip(0, 0, 9), None) else {
            continue;
        };
        if let Some(w) = c.wait_for("\"welcome\"", STEP) {
            if let (Some(u), Some(p)) = (field(&w, "username"), field(&w, "credential")) {
                creds.push((u.to_owned(), p.to_owned()));
            }
        }
    }
    let farm_time = started.elapsed();
    // Allocate from one address, each 5-tuple on a port of its own, ten a
    // user (its quota), until 20 refusals in a row.
    let started = Instant::now();
    let mut codes: BTreeMap<u16, u32> = BTreeMap::new();
    let (mut granted, mut streak, mut i) = (0u32, 0, 0u32);
    let spare = creds.pop();
    while streak < 20 && (i / 10) < creds.len() as u32 && i < 30_000 {
        let (user, pass) = &creds[(i / 10) as usize];
        let from = SocketAddr::new(ip(0, 8, 1), 10_000 + i as u16);
        let result = turnc::udp(from)
            .map_err(|_| 0u16)
            .and_then(|s| turnc::udp_allocate(&s, d.udp, i * 2, user, pass));
        i += 1;
        match result {
            Ok(()) => {
                granted += 1;
                streak = 0;
            }
            Err(c) => {
                *codes.entry(c).or_default() += 1;
                streak += 1;
            }
        }
    }
    let alloc_time = started.elapsed();
    // A REST user from another address, and the static user.
    let light = spare.map(|(user, pass)| {
        turnc::udp(SocketAddr::new(ip(0, 8, 2), 0))
            .map_err(|_| 0)
            .and_then(|s| turnc::udp_allocate(&s, d.udp, 1, &user, &pass))
    });
    let static_user = turnc::legit_turn(ctx, d.udp, ALICE, false);
    let m = |s: &str| d.metric_or_zero(s);
    let refused_share = m("p2p_turn_allocations_refused_total{reason=\"rest_share\"}");
    let share = ports * 80 / 100;
    let farmer_limit = share - (share * 10).div_ceil(100);
    r.figure(
        "REST credentials farmed from welcomes",
        format!("{} in {:.1} s", creds.len() + 1, farm_time.as_secs_f64()),
    );
    r.figure(
        "allocations the farmer got from one address (share of the capacity)",
        format!(
            "{granted} of {ports} ({:.0} %) in {:.1} s; then refused: {}",
            f64::from(granted) * 100.0 / f64::from(ports),
            alloc_time.as_secs_f64(),
            codes
                .iter()
                .map(|(c, n)| format!("{n}× {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    r.figure(
        "a REST user from another address / the static user (p2p turn)",
        format!(
            "{} / {}",
            match &light {
                Some(Ok(())) => "allocated".to_owned(),
                Some(Err(c)) => format!("FAILED: {c}"),
                None => "no credential left".to_owned(),
            },
            match &static_user {
                Ok(t) => format!("allocated and relayed in {:.2} s", t.as_secs_f64()),
                Err(e) => format!("FAILED: {e}"),
            }
        ),
    );
    r.figure("refused by the metrics: rest_share", refused_share);
    r.check(
        format!("the farmer got at most the REST share less its reserve ({granted} ≤ {farmer_limit} of {ports})"),
        granted <= farmer_limit && granted > 0,
    );
    r.check(
        "it was then refused with 486 (the REST share)",
        codes.keys().all(|c| *c == 486) && refused_share >= 1,
    );
    r.check(
        "a REST user from another address still allocates",
        matches!(light, Some(Ok(()))),
    );
    r.check(
        "the static user still allocates and relays",
        static_user.is_ok(),
    );
    r.check("the daemon is still running", d.alive());
    Ok(r)
}

/// Issue 18.4: wrong-password Allocates from one socket as fast as it can
/// send them (before, 100,000 in 5.1 s, all answered 401, each logged at
/// INFO: 25 MB of log). Past the burst, the server drops them unanswered
/// and unchecked (the right password too); the failures are logged as one
/// summary per 10 s; the static user from another address is served.
pub(super) fn password_guessing(ctx: &Ctx) -> Result<Report, String> {
    let n: u32 = if ctx.short { 20_000 } else { 100_000 };
    let mut d = Daemon::start_logged(ctx, "password-guessing", "info", &turn_args(&[]))?;
    let mut r = Report::new(
        "password-guessing",
        "defaults: turn.auth_failure_burst = 20, auth_failures_per_minute = 60 per client address (IPv6 by stun.ipv6_prefix), in a fixed table (2 × 16,384 leaky counters, 256 KiB); past it, requests with credentials are dropped unanswered and unchecked; failures logged at INFO as one summary per 10 s; the daemon logs at info",
    );
    let s = turnc::udp(SocketAddr::new(ip(0, 7, 1), 0)).map_err(|e| e.to_string())?;
    let first = turnc::ask(&s, d.udp, &turnc::allocate(0, None)).ok_or("no challenge")?;
    let (realm, nonce) = turnc::challenge(&first).ok_or("not a challenge")?;
    let answered = Arc::new(AtomicU64::new(0));
    let successes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let s = s.try_clone().map_err(|e| e.to_string())?;
        let (answered, successes, stop) = (answered.clone(), successes.clone(), stop.clone());
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        thread::spawn(move || {
            let mut b = [0u8; 2048];
            while !stop.load(Relaxed) {
                if let Ok(n) = s.recv(&mut b) {
                    match turnc::outcome(&b[..n]) {
                        Err(401) => answered.fetch_add(1, Relaxed),
                        Ok(()) => successes.fetch_add(1, Relaxed),
                        Err(_) => 0,
                    };
                }
            }
        })
    };
    let started = Instant::now();
    for k in 1..=n {
        // Halfway, the right password: a guess that would succeed.
        let password = if k == n / 2 {
            "abuse-pw".to_owned()
        } else {
            format!("guess-{k}")
        };
        let signed = Signed {
            user: "alice",
            password: &password,
            realm: &realm,
            nonce: &nonce,
        };
        let _ = s.send_to(&turnc::allocate(k, Some(&signed)), d.udp);
    }
    let send_time = started.elapsed();
    thread::sleep(Duration::from_secs(1));
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    let _ = reader.join();
    let answered = answered.load(Relaxed);
    let right_answered = successes.load(Relaxed) > 0;
    // The static user from its own address.
    let legit = turnc::legit_turn(ctx, d.udp, ALICE, false);
    let m = |s: &str| d.metric_or_zero(s);
    let failures = m("p2p_turn_auth_failures_total{transport=\"udp\"}");
    let throttled = m("p2p_turn_auth_throttled_total");
    // The summary comes once its 10 s window is over.
    let window_end = started + Duration::from_secs(11);
    thread::sleep(window_end.saturating_duration_since(Instant::now()));
    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
    let per_failure = log
        .lines()
        .filter(|l| l.contains("turn authentication failed"))
        .count();
    let summaries: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("turn authentication failures:"))
        .collect();
    let allowed = 20.0 + elapsed + 2.0;
    r.figure(
        "wrong-password Allocates sent from one socket",
        format!(
            "{n} in {:.1} s ({:.0}/s)",
            send_time.as_secs_f64(),
            f64::from(n) / send_time.as_secs_f64()
        ),
    );
    r.figure(
        "answered (401) / reached the server (failures + throttled)",
        format!("{answered} / {}", failures + throttled),
    );
    r.figure(
        "guessing rate allowed",
        format!(
            "{answered} answers in {elapsed:.1} s (burst 20, then 1 a second); was every guess"
        ),
    );
    r.figure(
        "the right password, sent as guess n/2 (past the limit)",
        if right_answered {
            "ALLOCATED"
        } else {
            "dropped unchecked"
        },
    );
    r.figure(
        "the static user from another address (p2p turn)",
        match &legit {
            Ok(t) => format!("allocated and relayed in {:.2} s", t.as_secs_f64()),
            Err(e) => format!("FAILED: {e}"),
        },
    );
    r.figure(
        "daemon log at info: bytes / per-failure lines / summary lines",
        format!(
            "{} / {per_failure} / {} (25 MB per 100k guesses before)",
            log.len(),
            summaries.len()
        ),
    );
    if let Some(line) = summaries.first() {
        let text = line
            .split("turn authentication failures:")
            .nth(1)
            .unwrap_or("");
        r.figure(
            "the summary",
            format!("turn authentication failures:{text}"),
        );
    }
    r.check(
        format!("the guesser got at most burst + rate × time answers ({answered} ≤ {allowed:.0})"),
        (answered as f64) <= allowed && answered >= 20,
    );
    r.check(
        "the right password among the guesses past the limit is not answered",
        !right_answered,
    );
    r.check(
        "the metrics count the failures and the throttled requests",
        failures == answered && throttled > 0,
    );
    r.check(
        "the static user from another address is served",
        legit.is_ok(),
    );
    r.check(
        "no line per failure at info; one summary per 10 s window",
        per_failure == 0 && !summaries.is_empty() && summaries.len() <= 2,
    );
    r.check("the log stays under 64 KiB", log.len() < 64 * 1024);
    r.check("the daemon is still running", d.alive());
    Ok(r)
}
