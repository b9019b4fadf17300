//! The attacks on the STUN/TURN port's TCP connections: slowloris and
//! header-pinned buffers (issue 18.2), one address taking every TCP slot
//! (18.2). The TURN attacks are in `turn.rs`.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::daemon::{ip, median, mib, Daemon, RssPeak};
use super::turnc;
use super::ws;
use super::{Ctx, Report};

pub(super) const REALM: &str = "abuse.test";
pub(super) const ALICE: &str = "alice:abuse-pw";

/// The TURN daemon every attack here starts: a static user, relaying to
/// loopback allowed (the legitimate client's echo peer is on 127.0.0.1).
pub(super) fn turn_args<'a>(more: &[&'a str]) -> Vec<&'a str> {
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
    // As before: no per-address limit, no reserve.
    let (before_took, before_legit) = {
        let b = Daemon::start(
            ctx,
            "stun-flood-before",
            &turn_args(&[
                "--max-connections",
                &max_s,
                "--max-per-ip",
                &max_s,
                "--reserve",
                "0",
            ]),
        )?;
        let mut held = Vec::new();
        open_tcp(&b, ip(0, 5, 1), max, &mut held);
        let legit = (0..7)
            .filter(|_| turnc::tcp_binding(b.tcp, ip(0, 0, 1)).is_ok())
            .count();
        (held.len(), legit)
    };
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
        "as before (max_connections_per_ip = max_connections, reserved_percent = 0): one address took / legitimate Bindings served",
        format!("{before_took} of {max} / {before_legit} of 7"),
    );
    r.figure(
        "legitimate Bindings over TCP from another address meanwhile",
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
        "as before, without the limits, one address takes every slot and a legitimate client fails 7 of 7",
        before_took == max && before_legit == 0,
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
