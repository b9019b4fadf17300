//! The attacks on the TURN server: credential farming into relay
//! allocations (issue 18.3), password guessing (18.4), and clients that
//! stop reading what their allocations relay (18.1 on the TURN port).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::daemon::{ip, mib, Daemon, RssPeak};
use super::stun::{turn_args, ALICE};
use super::turnc::{self, Signed};
use super::ws::{field, Ws};
use super::{Ctx, Report, STEP};
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
    let args = |more: &[&'static str]| {
        let mut v = vec![
            "--auth-secret".to_owned(),
            "abuse-secret".to_owned(),
            "--turn-credentials".to_owned(),
            "welcome".to_owned(),
            "--credential-burst".to_owned(),
            "1000000".to_owned(),
            "--credential-rate".to_owned(),
            "1000000".to_owned(),
            "--min-port".to_owned(),
            min_port.to_string(),
            "--max-port".to_owned(),
            max_port.to_string(),
        ];
        v.extend(more.iter().map(|s| (*s).to_owned()));
        v
    };
    // As before: REST users may take every allocation, no reserve.
    let (before, before_static) = {
        let more = args(&["--rest-share", "100", "--turn-reserve", "0"]);
        let more: Vec<&str> = more.iter().map(String::as_str).collect();
        let b = Daemon::start(ctx, "turn-farming-before", &turn_args(&more))?;
        let f = farm_and_allocate(&b, welcomes);
        (f, turnc::legit_turn(ctx, b.udp, ALICE, false))
    };
    let more = args(&[]);
    let more: Vec<&str> = more.iter().map(String::as_str).collect();
    let mut d = Daemon::start(ctx, "turn-farming", &turn_args(&more))?;
    let mut r = Report::new(
        "turn-farming",
        format!("relay ports {min_port}-{max_port} ({ports}: the capacity, turn.total_quota = 0); defaults: turn.rest_share_percent = 80 (static users and a secret), reserved_percent = 10 (within the share too), reserve_below = 4, user_quota = 10; signaling opened up as before its fix (turn_credentials = welcome, no rate)"),
    );
    let Farmed {
        creds,
        farm_time,
        granted,
        codes,
        alloc_time,
        spare,
    } = farm_and_allocate(&d, welcomes);
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
        format!("{creds} in {:.1} s", farm_time.as_secs_f64()),
    );
    r.figure(
        "as before (turn.rest_share_percent = 100, reserved_percent = 0): the farmer's allocations / the static user",
        format!(
            "{} of {ports} ({}) / {}",
            before.granted,
            codes_text(&before.codes),
            match &before_static {
                Ok(_) => "allocated".to_owned(),
                Err(e) => format!("refused: {}", e.lines().last().unwrap_or("")),
            }
        ),
    );
    r.figure(
        "allocations the farmer got from one address (share of the capacity)",
        format!(
            "{granted} of {ports} ({:.0} %) in {:.1} s; then refused: {}",
            f64::from(granted) * 100.0 / f64::from(ports),
            alloc_time.as_secs_f64(),
            codes_text(&codes)
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
        "as before, farmed credentials take the relay ports (95 % at least: other programs may hold a few) and the static user is refused",
        before.granted * 100 >= ports * 95 && before_static.is_err(),
    );
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
    let g = guess(&d, n)?;
    let (answered, right_answered, send_time, elapsed) =
        (g.answered, g.right, g.send_time, g.elapsed.as_secs_f64());
    let started = g.started;
    // The static user from its own address.
    let legit = turnc::legit_turn(ctx, d.udp, ALICE, false);
    let m = |s: &str| d.metric_or_zero(s);
    let failures = m("p2p_turn_auth_failures_total{transport=\"udp\"}");
    let throttled = m("p2p_turn_auth_throttled_total");
    // As before: the limit off (what was measured before the fix), while
    // the summary's window runs out.
    let before_n = n / 4;
    let before = {
        let d = Daemon::start_logged(
            ctx,
            "password-guessing-before",
            "info",
            &turn_args(&["--auth-failure-rate", "0"]),
        )?;
        guess(&d, before_n)?
    };
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
        "as before (turn.auth_failures_per_minute = 0, no limit): guesses sent / answered 401 / the right one (n/2)",
        format!(
            "{before_n} in {:.1} s / {} / {}",
            before.send_time.as_secs_f64(),
            before.answered,
            if before.right { "ALLOCATED" } else { "not answered" }
        ),
    );
    r.figure(
        "answered (401) / reached the server (failures + throttled)",
        format!("{answered} / {}", failures + throttled),
    );
    r.figure(
        "guessing rate allowed",
        format!(
            "{answered} answers in {elapsed:.1} s (burst 20, then 1 a second); without the limit every guess ({:.0}/s)",
            f64::from(before_n) / before.elapsed.as_secs_f64()
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
        "as before, without the limit, every guess is answered (90 % at least: UDP) and the right one allocates",
        before.answered * 10 >= u64::from(before_n) * 9 && before.right,
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

/// Issue 18.1 on the TURN port: TURN clients over TCP that allocate, permit
/// a peer and stop reading while the peer sends to their relayed addresses
/// as fast as a paced flood goes. What the TURN server relays to a
/// connection waits in a queue bounded in bytes (past it, packets are
/// dropped as UDP would), and a write that cannot finish within the idle
/// timeout closes the connection, which ends its allocation. Memory stays
/// bounded, and a legitimate TURN client is served meanwhile.
pub(super) fn turn_slow_readers(ctx: &Ctx) -> Result<Report, String> {
    let n: usize = if ctx.short { 5 } else { 10 };
    let idle: u64 = if ctx.short { 4 } else { 30 };
    let idle_s = idle.to_string();
    let mut d = Daemon::start(
        ctx,
        "turn-slow-readers",
        &turn_args(&["--tcp-idle-timeout", &idle_s, "--user", "mallory:pw"]),
    )?;
    let mut r = Report::new(
        "turn-slow-readers",
        format!("stun.tcp_idle_timeout_secs = {idle} (also the write timeout of a TCP/TLS connection); what is relayed to a connection waits in a queue of at most 1 MiB (or 1024 messages), dropped past it"),
    );
    turnc::legit_turn(ctx, d.tcp, ALICE, true).map_err(|e| format!("warm-up: {e}"))?;
    thread::sleep(Duration::from_millis(300));
    let base = d.rss();
    let peer = std::net::UdpSocket::bind(SocketAddr::new(ip(0, 10, 200), 0))
        .map_err(|e| format!("peer socket: {e}"))?;
    let peer_addr = peer.local_addr().map_err(|e| e.to_string())?;
    let mut readers = Vec::new();
    let mut relayed = Vec::new();
    for k in 0..n {
        // A 4 KiB receive buffer: the kernel holds little for them.
        let (s, a) = turnc::tcp_relay(d.tcp, ip(0, 10, 1), Some(4096), "mallory", "pw", peer_addr)
            .map_err(|e| format!("slow reader {k}: {e}"))?;
        readers.push(s);
        relayed.push(a);
    }
    let peak = RssPeak::start(d.child.id());
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, sent) = (stop.clone(), sent.clone());
        thread::spawn(move || {
            let payload = [0x5au8; 1200];
            while !stop.load(Relaxed) {
                for a in relayed.iter().cycle().take(3 * relayed.len()) {
                    if peer.send_to(&payload, a).is_ok() {
                        sent.fetch_add(1, Relaxed);
                    }
                }
                // Paced: about 3.6 MB/s to each relayed address.
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let started = Instant::now();
    let write_timeouts =
        |d: &Daemon| d.metric_or_zero("p2p_stream_closed_total{reason=\"write_timeout\"}");
    // A legitimate TURN client once the slow readers' queues are full.
    thread::sleep(Duration::from_millis(1500));
    let legit = turnc::legit_turn(ctx, d.tcp, ALICE, true);
    let deadline = started + Duration::from_secs(idle + 15);
    let mut all_closed = None;
    while Instant::now() < deadline {
        if write_timeouts(&d) >= n as u64 {
            all_closed = Some(started.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Relaxed);
    let _ = flood.join();
    let peak = peak.finish();
    thread::sleep(Duration::from_millis(500));
    let after = d.rss();
    let m = |s: &str| d.metric_or_zero(s);
    let closed = write_timeouts(&d);
    let dropped = m("p2p_turn_dropped_total{reason=\"send_failed\"}");
    let tcp_allocations = m("p2p_turn_allocations{transport=\"tcp\"}");
    let sent = sent.load(Relaxed);
    drop(readers);
    let growth = peak.saturating_sub(base);
    let bound = n as u64 * 2 * 1024 * 1024 + 24 * 1024 * 1024;
    let limit = Duration::from_secs(idle + 6);
    r.figure("TURN clients over TCP that stop reading", n);
    r.figure(
        "datagrams of 1200 bytes a peer sent to their relayed addresses",
        format!("{sent} ({:.1} MB)", sent as f64 * 1200.0 / 1e6),
    );
    r.figure(
        "dropped at the full queues (metrics: send_failed)",
        format!("{dropped} ({:.1} MB)", dropped as f64 * 1200.0 / 1e6),
    );
    r.figure(
        "daemon RSS: before / peak / after",
        format!("{} / {} / {}", mib(base), mib(peak), mib(after)),
    );
    r.figure("peak RSS growth per slow reader", mib(growth / n as u64));
    r.figure(
        "every slow reader closed (write timeout) after the flood began",
        all_closed.map_or("NOT ALL".to_owned(), |t| {
            format!("{:.1} s", t.as_secs_f64())
        }),
    );
    r.figure(
        "closed by the metrics: write_timeout / TCP allocations left",
        format!("{closed} / {tcp_allocations}"),
    );
    r.figure(
        "legitimate TURN client over TCP during the flood (allocate, relay 3, delete)",
        match &legit {
            Ok(t) => format!("served in {:.2} s", t.as_secs_f64()),
            Err(e) => format!("FAILED: {e}"),
        },
    );
    r.check(
        format!(
            "every slow reader closed by the write timeout within {} s of the flood ({closed}/{n})",
            limit.as_secs()
        ),
        all_closed.is_some_and(|t| t <= limit),
    );
    r.check("their allocations ended with them", tcp_allocations == 0);
    r.check(
        "what did not fit the queues was dropped, not held",
        dropped > 0,
    );
    r.check(
        format!(
            "peak RSS growth {} ≤ {} (2 MiB per slow reader + 24 MiB)",
            mib(growth),
            mib(bound)
        ),
        growth <= bound,
    );
    r.check(
        "a legitimate TURN client over TCP is served meanwhile",
        legit.is_ok(),
    );
    r.check("the daemon is still running", d.alive());
    Ok(r)
}

/// What one round of guessing got.
struct Guessed {
    started: Instant,
    send_time: Duration,
    elapsed: Duration,
    /// Wrong guesses answered 401.
    answered: u64,
    /// Whether the right password (guess n/2) allocated.
    right: bool,
}

/// Send `n` signed Allocates from one socket as fast as it goes, the right
/// password (alice's) as guess n/2 and wrong ones otherwise; count the
/// answers until a second after the last.
fn guess(d: &Daemon, n: u32) -> Result<Guessed, String> {
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
    let elapsed = started.elapsed();
    stop.store(true, Relaxed);
    let _ = reader.join();
    Ok(Guessed {
        started,
        send_time,
        elapsed,
        answered: answered.load(Relaxed),
        right: successes.load(Relaxed) > 0,
    })
}

/// What a farmer got: REST credentials from welcomes, then allocations.
struct Farmed {
    /// Credentials collected.
    creds: usize,
    farm_time: Duration,
    /// Allocations granted from one address.
    granted: u32,
    /// The refusals that ended it, by error code.
    codes: BTreeMap<u16, u32>,
    alloc_time: Duration,
    /// One credential kept back, for a light user from another address.
    spare: Option<(String, String)>,
}

/// Collect `welcomes` REST credentials (one per welcome), then allocate
/// with them from one address, each 5-tuple on a port of its own, ten a
/// user (its quota), until 20 refusals in a row.
fn farm_and_allocate(d: &Daemon, welcomes: usize) -> Farmed {
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
    let n = creds.len();
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
    Farmed {
        creds: n,
        farm_time,
        granted,
        codes,
        alloc_time: started.elapsed(),
        spare,
    }
}

/// "20× 486" and the like.
fn codes_text(codes: &BTreeMap<u16, u32>) -> String {
    codes
        .iter()
        .map(|(c, n)| format!("{n}× {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}
