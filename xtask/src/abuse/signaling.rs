//! The attacks on the signaling port: slow readers (issue 18.1), an idle
//! flood (18.5), slowloris heads and pinned frames (the build list of 18),
//! credential farming (18.3).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::daemon::{ip, joined, legit_exchange, median, mib, Daemon, RssPeak};
use super::ws::{self, Frame, Ws};
use super::{Ctx, Report, STEP};

/// Issue 18.1: a receiver stops reading while a peer floods it with large
/// offers (at the default message rate). Each must be closed (queue
/// overflow or write timeout) within seconds, its memory bounded meanwhile,
/// and a legitimate pair must keep meeting.
pub(super) fn slow_readers(ctx: &Ctx) -> Result<Report, String> {
    let n = if ctx.short { 5 } else { 20 };
    let window = Duration::from_secs(if ctx.short { 6 } else { 12 });
    let mut d = Daemon::start(ctx, "slow-readers", &[])?;
    let mut r = Report::new(
        "slow-readers",
        "defaults: signaling.max_queued_bytes = 1 MiB, max_queued_messages = 256, write_timeout_secs = 10; message rate 20/s, burst 50",
    );
    legit_exchange(&d, ip(0, 0, 2), ip(0, 0, 4), "warm-up")?;
    let base = d.rss();
    let sdp = format!("v=0\\r\\n{}", "a=x-padding-line\\r\\n".repeat(3000));
    let mut pairs = Vec::new();
    for i in 0..n {
        let room = format!("slow-{i}");
        let (slow, slow_id) = joined(&d, ip(0, 0, 1), Some(4096), &room)?;
        let (flooder, _) = joined(&d, ip(0, 0, 3), None, &room)?;
        pairs.push((slow, slow_id, flooder));
    }
    let peak = RssPeak::start(d.child.id());
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let mut floods = Vec::new();
    let mut slows = Vec::new();
    for (slow, slow_id, mut flooder) in pairs {
        slows.push(slow);
        let (sdp, sent) = (sdp.clone(), sent.clone());
        floods.push(thread::spawn(move || -> Option<Duration> {
            let offer = ws::text_frame(&format!(
                r#"{{"type":"offer","to":"{slow_id}","sdp":"{sdp}"}}"#
            ));
            let left = format!("\"peerId\":\"{slow_id}\"");
            let mut k = 0u32;
            while started.elapsed() < window {
                // A burst of 45, then 18 a second: under the default limits.
                if k >= 45 {
                    thread::sleep(Duration::from_millis(55));
                }
                if flooder.send_raw(&offer).is_err() {
                    return None;
                }
                k += 1;
                sent.fetch_add(1, Relaxed);
                match flooder.drain() {
                    Ok(msgs) => {
                        if msgs
                            .iter()
                            .any(|m| m.contains("peer-left") && m.contains(&left))
                        {
                            return Some(started.elapsed());
                        }
                    }
                    Err(_) => return None,
                }
            }
            None
        }));
    }
    // A legitimate pair meets again and again during the flood.
    let mut legit = Vec::new();
    let mut legit_failures = 0;
    let mut k = 0;
    while started.elapsed() < window {
        match legit_exchange(&d, ip(0, 0, 2), ip(0, 0, 4), &format!("legit-{k}")) {
            Ok(t) => legit.push(t.as_secs_f64()),
            Err(e) => {
                eprintln!("abuse: legitimate exchange failed: {e}");
                legit_failures += 1;
            }
        }
        k += 1;
        thread::sleep(Duration::from_millis(300));
    }
    let closed: Vec<f64> = floods
        .into_iter()
        .filter_map(|t| t.join().ok().flatten())
        .map(|t| t.as_secs_f64())
        .collect();
    let peak = peak.finish();
    // Each slow reader, reading at last, must find its connection over.
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for mut s in slows {
        let deadline = Instant::now() + STEP;
        let end = loop {
            match s.recv(deadline.saturating_duration_since(Instant::now())) {
                Ok(Some(Frame::Text(_))) => continue,
                Ok(Some(Frame::Close(c))) => break format!("close {}", c.unwrap_or(0)),
                Ok(Some(Frame::End)) | Err(_) => break "end of stream".to_owned(),
                Ok(None) => break "still open".to_owned(),
            }
        };
        *codes.entry(end).or_default() += 1;
    }
    let slow_closes = d
        .metric_or_zero("p2p_signaling_websockets_closed_total{reason=\"slow_reader\"}")
        + d.metric_or_zero("p2p_signaling_websockets_closed_total{reason=\"write_timeout\"}");
    let after = d.rss();
    let growth = peak.saturating_sub(base);
    let bound = n as u64 * 3 * 1024 * 1024 + 24 * 1024 * 1024;
    let max_close = closed.iter().copied().fold(0.0, f64::max);
    let legit_max = legit.iter().copied().fold(0.0, f64::max);
    r.figure("slow readers (each with a flooder)", n);
    r.figure("offers of 54 KB sent", sent.load(Relaxed));
    r.figure(
        "daemon RSS: before / peak / after",
        format!("{} / {} / {}", mib(base), mib(peak), mib(after)),
    );
    r.figure(
        "peak RSS growth per slow reader",
        format!(
            "{} (before: 22–30 MB each, held for ever; issue 18.1)",
            mib(growth / n as u64)
        ),
    );
    r.figure(
        "time to close a slow reader (flooder hears peer-left): median / max",
        format!(
            "{:.2} s / {:.2} s (before: never)",
            median(closed.clone()),
            max_close
        ),
    );
    r.figure(
        "closed as slow_reader or write_timeout (metrics)",
        slow_closes,
    );
    let ends: Vec<String> = codes.iter().map(|(k, v)| format!("{v}× {k}")).collect();
    r.figure(
        "what a slow reader finds when it reads again",
        ends.join(", "),
    );
    r.figure(
        "legitimate offer/answer exchanges during the flood: count / max time",
        format!("{} / {:.3} s", legit.len(), legit_max),
    );
    r.check(
        format!("every slow reader closed ({}/{n})", closed.len()),
        closed.len() == n,
    );
    r.check(
        "each within 12 s (write timeout 10 s + 1 s close grace + margin)",
        max_close <= 12.0,
    );
    r.check(
        format!("the metrics count {n} slow closes"),
        slow_closes == n as u64,
    );
    r.check(
        "every slow reader's connection is over (close 1008 or end of stream)",
        !codes.contains_key("still open")
            && codes
                .keys()
                .all(|k| k == "close 1008" || k == "end of stream"),
    );
    r.check(
        format!(
            "peak RSS growth {} ≤ {} (3 MiB per slow reader + 24 MiB)",
            mib(growth),
            mib(bound)
        ),
        growth <= bound,
    );
    r.check(
        "a legitimate pair met every time, each exchange under 5 s (a robustness bound, not a speed target)",
        legit_failures == 0 && !legit.is_empty() && legit_max < 5.0,
    );
    r.check("the daemon is still running", d.alive());
    Ok(r)
}

/// Opens WebSockets from `from` until `want` are held or the server
/// refuses; returns them and the number refused.
fn open_idle(d: &Daemon, from: IpAddr, attempts: usize, held: &mut Vec<Ws>) -> usize {
    let mut refused = 0;
    for _ in 0..attempts {
        match Ws::connect(d.signaling, from, Some(4096)) {
            Ok(mut c) => {
                if c.wait_for("\"welcome\"", STEP).is_some() {
                    held.push(c);
                } else {
                    refused += 1;
                }
            }
            Err(_) => refused += 1,
        }
    }
    refused
}

/// Issue 18.5: idle WebSockets from one address (held to its limit), then
/// from many up to the general slots; the memory of an idle connection is
/// measured, and a legitimate client still gets a reserved slot while the
/// heavy addresses are refused.
pub(super) fn idle_flood(ctx: &Ctx) -> Result<Report, String> {
    let (max, one_ip) = if ctx.short {
        (400usize, 200usize)
    } else {
        (2000, 1000)
    };
    let per_ip = 64usize;
    let reserved = (max * 10).div_ceil(100);
    let max_s = max.to_string();
    let mut d = Daemon::start(ctx, "idle-flood", &["--signaling-max-connections", &max_s])?;
    let mut r = Report::new(
        "idle-flood",
        format!("signaling.max_connections = {max}; defaults: max_connections_per_ip = 64, reserved_percent = 10 (slots kept for addresses holding fewer than reserve_below = 4)"),
    );
    legit_exchange(&d, ip(0, 0, 2), ip(0, 0, 4), "warm-up")?;
    thread::sleep(Duration::from_millis(300));
    let base = d.rss();
    let mut held = Vec::new();
    // One address.
    let refused_one = open_idle(&d, ip(0, 0, 1), one_ip, &mut held);
    let admitted_one = held.len();
    // Many addresses, up to the general slots.
    let general = max - reserved;
    let mut k = 0u8;
    while held.len() < general && k < 250 {
        k += 1;
        let want = (general - held.len()).min(per_ip);
        open_idle(&d, ip(0, 1, k), want, &mut held);
    }
    thread::sleep(Duration::from_millis(500));
    let open = held.len();
    let full = d.rss();
    let per_conn = full.saturating_sub(base) / open.max(1) as u64;
    let tcp_open = d.metric_or_zero("p2p_signaling_connections");
    // At the cap of general slots: a heavy address (the last one filled,
    // holding more than reserve_below and fewer than its limit) is refused,
    // a light one gets a reserved slot and is served.
    let heavy = Ws::connect(d.signaling, ip(0, 1, k), None)
        .ok()
        .and_then(|mut c| c.wait_for("\"welcome\"", STEP));
    let legit = legit_exchange(&d, ip(0, 0, 2), ip(0, 0, 4), "legit-at-cap");
    let refused_per_ip =
        d.metric_or_zero("p2p_signaling_connections_refused_total{reason=\"per_ip\"}");
    let refused_reserved =
        d.metric_or_zero("p2p_signaling_connections_refused_total{reason=\"reserved\"}");
    r.figure(
        "connections tried from one address / admitted / refused",
        format!("{one_ip} / {admitted_one} / {refused_one}"),
    );
    r.figure("idle WebSockets held (general slots)", open);
    r.figure(
        "daemon RSS: before / with them",
        format!("{} / {}", mib(base), mib(full)),
    );
    r.figure(
        "RSS per idle WebSocket",
        format!("{:.1} KiB (was about 138 KB)", per_conn as f64 / 1024.0),
    );
    r.figure(
        "refused by the metrics: per_ip / reserved",
        format!("{refused_per_ip} / {refused_reserved}"),
    );
    r.figure(
        "legitimate pair at the cap",
        match &legit {
            Ok(t) => format!("served in {:.3} s", t.as_secs_f64()),
            Err(e) => format!("FAILED: {e}"),
        },
    );
    r.check(
        format!("one address is held to {per_ip} connections"),
        admitted_one == per_ip && refused_one == one_ip - per_ip,
    );
    r.check(
        format!("the general slots fill ({general})"),
        open == general,
    );
    r.check("the metrics see every connection", tcp_open == open as u64);
    r.check(
        "an idle WebSocket costs at most 32 KiB of RSS",
        per_conn <= 32 * 1024,
    );
    r.check(
        "a heavy address is refused the reserved slots",
        heavy.is_none() && refused_reserved >= 1,
    );
    r.check(
        "a legitimate pair from other addresses is served at the cap",
        legit.is_ok(),
    );
    r.check("the daemon is still running", d.alive());
    drop(held);
    Ok(r)
}

/// Request heads sent too slowly; WebSocket frames sent all but their last
/// byte; fragmented messages whose last fragment never comes, with pongs
/// between (which a client may send, and which count as activity). The
/// server holds what came of each message (up to the frame cap); all are
/// bounded in time (the head and message timeouts) and in count (the
/// per-address limit); memory stays under a stated bound and a legitimate
/// pair is served meanwhile.
pub(super) fn slowloris(ctx: &Ctx) -> Result<Report, String> {
    let (heads, pinned) = if ctx.short {
        (120usize, 120usize)
    } else {
        (600, 600)
    };
    let (head_timeout, message_timeout) = (3u64, 4u64);
    let mut d = Daemon::start(
        ctx,
        "slowloris",
        &[
            "--signaling-handshake-timeout",
            &head_timeout.to_string(),
            "--signaling-message-timeout",
            &message_timeout.to_string(),
        ],
    )?;
    let mut r = Report::new(
        "slowloris",
        format!("signaling.handshake_timeout_secs = {head_timeout}, message_timeout_secs = {message_timeout}; per address 64; frame hard cap 128 KiB (twice max_message_size); idle timeout 60 s"),
    );
    legit_exchange(&d, ip(0, 0, 2), ip(0, 0, 4), "warm-up")?;
    let base = d.rss();
    let peak = RssPeak::start(d.child.id());
    // Slow heads, from as many addresses as the per-address limit needs.
    let mut slow_heads = Vec::new();
    for i in 0..heads {
        let from = ip(0, 2, (i / 60 + 1) as u8);
        if let Ok(mut s) = ws::tcp(d.signaling, from, None) {
            let _ = s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Slow: ");
            slow_heads.push(s);
        }
    }
    let heads_sent = Instant::now();
    // Held messages: half frames cut short by one byte, half first
    // fragments of 120 KiB.
    let mut cut = Vec::new();
    let mut fragments = Vec::new();
    for i in 0..pinned {
        let from = ip(0, 3, (i / 60 + 1) as u8);
        if let Ok(mut c) = Ws::connect(d.signaling, from, Some(4096)) {
            if c.wait_for("\"welcome\"", STEP).is_some() {
                if i % 2 == 0 {
                    let _ = c.send_partial_frame(120 * 1024);
                    cut.push((c, Instant::now()));
                } else {
                    let _ = c.send_first_fragment(120 * 1024);
                    fragments.push((c, Instant::now()));
                }
            }
        }
    }
    let held = cut.len() + fragments.len();
    thread::sleep(Duration::from_millis(500));
    let held_rss = d.rss();
    let legit_during = legit_exchange(&d, ip(0, 0, 2), ip(0, 0, 4), "legit-during");
    // The fragmented ones keep sending pongs until they find the
    // connection closed.
    let pinger = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(message_timeout + 8);
        let mut open: Vec<(Ws, Instant, u32)> =
            fragments.into_iter().map(|(c, t)| (c, t, 0)).collect();
        let mut lived = Vec::new();
        while !open.is_empty() && Instant::now() < deadline {
            open.retain_mut(|(c, since, failures)| {
                if c.send_pong().is_err()
                    || matches!(
                        c.recv(Duration::ZERO),
                        Ok(Some(Frame::Close(_) | Frame::End)) | Err(_)
                    )
                {
                    *failures += 1;
                }
                if *failures > 0 {
                    lived.push(since.elapsed().as_secs_f64());
                    false
                } else {
                    true
                }
            });
            thread::sleep(Duration::from_millis(500));
        }
        (lived, open.len())
    });
    // The slow heads end at the head timeout.
    let mut head_closed = Vec::new();
    for mut s in slow_heads {
        let _ = s.set_read_timeout(Some(Duration::from_secs(head_timeout + 5)));
        let mut b = [0u8; 64];
        if matches!(s.read(&mut b), Ok(0) | Err(_)) {
            head_closed.push(heads_sent.elapsed().as_secs_f64());
        }
    }
    // The frames cut short end at the message timeout.
    let mut cut_lived = Vec::new();
    for (mut c, since) in cut {
        let deadline = since + Duration::from_secs(message_timeout + 7);
        loop {
            match c.recv(deadline.saturating_duration_since(Instant::now())) {
                Ok(Some(Frame::Text(_))) => continue,
                Ok(Some(Frame::Close(_) | Frame::End)) | Err(_) => {
                    cut_lived.push(since.elapsed().as_secs_f64());
                    break;
                }
                Ok(None) => break,
            }
        }
    }
    let (frag_lived, frag_open) = pinger.join().map_err(|_| "the pinger panicked")?;
    let peak = peak.finish();
    let slow_message =
        d.metric_or_zero("p2p_signaling_websockets_closed_total{reason=\"slow_message\"}");
    let growth = peak.saturating_sub(base);
    let bound = (pinned as u64) * 300 * 1024 + (heads as u64) * 16 * 1024 + 24 * 1024 * 1024;
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    r.figure("slow request heads held", heads);
    r.figure(
        "WebSockets holding 120 KiB of an unfinished message (cut frame / fragment + pongs)",
        format!(
            "{held} ({} / {})",
            held - (frag_lived.len() + frag_open),
            frag_lived.len() + frag_open
        ),
    );
    r.figure(
        "daemon RSS: before / held / peak",
        format!("{} / {} / {}", mib(base), mib(held_rss), mib(peak)),
    );
    r.figure(
        "RSS per held message (with the slow heads)",
        format!(
            "{:.1} KiB",
            held_rss.saturating_sub(base) as f64 / held.max(1) as f64 / 1024.0
        ),
    );
    r.figure(
        "slow heads closed / last after",
        format!("{} / {:.1} s", head_closed.len(), max(&head_closed)),
    );
    r.figure(
        "cut frames closed / last after",
        format!("{} / {:.1} s", cut_lived.len(), max(&cut_lived)),
    );
    r.figure(
        "fragments with pongs closed / last after",
        format!("{} / {:.1} s", frag_lived.len(), max(&frag_lived)),
    );
    r.figure("closed as slow_message (metrics)", slow_message);
    r.figure(
        "legitimate pair while they were held",
        match &legit_during {
            Ok(t) => format!("served in {:.3} s", t.as_secs_f64()),
            Err(e) => format!("FAILED: {e}"),
        },
    );
    let limit = (message_timeout + 5) as f64;
    r.check(
        format!(
            "every slow head closed within the head timeout + 4 s ({}/{heads})",
            head_closed.len()
        ),
        head_closed.len() == heads && max(&head_closed) <= (head_timeout + 4) as f64,
    );
    r.check(
        format!(
            "every held message closed within the message timeout + 5 s ({}/{held})",
            cut_lived.len() + frag_lived.len()
        ),
        held == pinned
            && frag_open == 0
            && cut_lived.len() + frag_lived.len() == held
            && max(&cut_lived) <= limit
            && max(&frag_lived) <= limit,
    );
    r.check(
        "the metrics count them as slow_message",
        slow_message == held as u64,
    );
    r.check(
        format!(
            "peak RSS growth {} ≤ {} (300 KiB per held message: the frame buffer and the message being assembled, each up to the 128 KiB cap; 16 KiB per slow head; + 24 MiB)",
            mib(growth),
            mib(bound)
        ),
        growth <= bound,
    );
    r.check(
        "a legitimate pair is served meanwhile",
        legit_during.is_ok(),
    );
    r.check("the daemon is still running", d.alive());
    Ok(r)
}

/// Issue 18.3: one address opens connection after connection to collect
/// TURN credentials. The default policy hands them only with `joined`, at
/// most 20 at once and 10 a minute per address; another address still
/// gets them.
pub(super) fn credential_farming(ctx: &Ctx) -> Result<Report, String> {
    let attempts = if ctx.short { 300 } else { 1700 };
    let (burst, per_minute) = (20.0, 10.0);
    let mut d = Daemon::start(
        ctx,
        "credential-farming",
        &["--realm", "abuse.test", "--auth-secret", "abuse-secret"],
    )?;
    let mut r = Report::new(
        "credential-farming",
        "defaults: signaling.turn_credentials = join, credentials_per_minute = 10, credential_burst = 20, credential_ttl_secs = 3600; turn.user_quota = 10",
    );
    let started = Instant::now();
    let (mut granted, mut in_welcome, mut withheld, mut failed) = (0u32, 0u32, 0u32, 0u32);
    for i in 0..attempts {
        let mut c = match Ws::connect(d.signaling, ip(0, 0, 1), None) {
            Ok(c) => c,
            Err(_) => {
                failed += 1;
                continue;
            }
        };
        let Some(welcome) = c.wait_for("\"welcome\"", STEP) else {
            failed += 1;
            continue;
        };
        if welcome.contains("\"credential\"") {
            in_welcome += 1;
        }
        let _ = c.send_text(&format!(r#"{{"type":"join","room":"farm-{i}"}}"#));
        match c.wait_for("\"joined\"", STEP) {
            Some(j) if j.contains("\"credential\"") => granted += 1,
            Some(j) if j.contains("rate-limited") => withheld += 1,
            _ => failed += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = burst + per_minute * elapsed / 60.0;
    // Another address is not affected.
    let legit = {
        let mut c = Ws::connect(d.signaling, ip(0, 0, 5), None).map_err(|e| e.to_string())?;
        c.wait_for("\"welcome\"", STEP).ok_or("no welcome")?;
        let _ = c.send_text(r#"{"type":"join","room":"legit"}"#);
        c.wait_for("\"joined\"", STEP)
            .is_some_and(|j| j.contains("\"credential\""))
    };
    let issued = d.metric_or_zero("p2p_signaling_turn_credentials_issued_total");
    let metric_withheld =
        d.metric_or_zero("p2p_signaling_turn_credentials_withheld_total{reason=\"rate_limited\"}");
    let user_quota = 10.0;
    let ports = 65535.0 - 49152.0 + 1.0;
    r.figure(
        "connections from one address",
        format!(
            "{attempts} in {elapsed:.1} s ({:.0}/s)",
            attempts as f64 / elapsed
        ),
    );
    r.figure(
        "TURN credentials it got (in welcome / in joined)",
        format!(
            "{in_welcome} / {granted} (before: one in every welcome, 1,700 in 0.7 s; turn-farming measures that setting)"
        ),
    );
    r.figure(
        "withheld (rate-limited) / failed",
        format!("{withheld} / {failed}"),
    );
    r.figure(
        "allowed by the rate (burst + rate × time)",
        format!("{allowed:.1}"),
    );
    r.figure(
        "relay allocations those credentials open at most (× turn.user_quota 10) / share of the 16384 relay ports",
        format!("{:.0} / {:.1} %", f64::from(granted) * user_quota, f64::from(granted) * user_quota / ports * 100.0),
    );
    r.figure(
        "metrics: issued / withheld",
        format!("{issued} / {metric_withheld}"),
    );
    r.check(
        "no welcome carries credentials (policy join)",
        in_welcome == 0,
    );
    r.check(
        format!("the farmer got at most burst + rate × time ({granted} ≤ {allowed:.1})"),
        f64::from(granted) <= allowed.floor() + 1.0,
    );
    r.check(
        "every other join was answered, rate-limited",
        failed == 0 && granted + withheld == attempts,
    );
    r.check("another address still gets credentials", legit);
    r.check(
        "the metrics agree",
        metric_withheld == u64::from(withheld) && issued > u64::from(granted),
    );
    r.check("the daemon is still running", d.alive());
    Ok(r)
}
