//! `p2p-connect` on loopback: the time from `connect()` to the first
//! message delivered on a data channel, then messages/s and Mbit/s once
//! connected on a reliable ordered channel (DTLS, SCTP), for the direct
//! (host) path and the relayed (TURN over UDP) path.
//!
//! A `p2p-server` runs in-process (STUN, TURN with a REST secret and
//! loopback peers allowed, signaling). Two peers meet in a room with the
//! servers of the welcome; the relayed case sets the relay-only policy.
//! The sender sends as fast as the channel takes messages (its buffered
//! amount applies back-pressure); the receiver counts what arrives. The
//! channel is reliable: every message arrives.
//!
//! `connect_bench [--runs N] [--seconds S] [--size BYTES]` prints a Markdown
//! table; `cargo xtask bench connect` runs it and writes
//! `target/bench-connect.md`. Every wait is bounded.
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2p_connect::{CandidateKind, Channel, ChannelOptions, Connection, Peer, PeerConfig, Policy};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const BOUND: Duration = Duration::from_secs(30);

struct Args {
    runs: usize,
    seconds: f64,
    size: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        runs: 5,
        seconds: 2.0,
        size: 1200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{k} {v}: {e}");
        match k.as_str() {
            "--runs" => a.runs = v.parse().map_err(|e| bad(&e))?,
            "--seconds" => a.seconds = v.parse().map_err(|e| bad(&e))?,
            "--size" => a.size = v.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    if a.runs == 0 || a.size == 0 || a.size > 60_000 || !(a.seconds > 0.0 && a.seconds <= 60.0) {
        return Err("--runs ≥ 1, 0 < --size ≤ 60000, 0 < --seconds ≤ 60".into());
    }
    Ok(a)
}

/// The daemon: STUN, TURN (REST secret, loopback peers allowed), signaling.
async fn daemon() -> Result<String, String> {
    let toml = r#"
[stun]
listen = ["127.0.0.1:0"]
workers = 1
[turn]
realm = "bench"
auth_secret = "connect-bench-secret"
allow_peer = ["127.0.0.0/8"]
[signaling]
listen = "127.0.0.1:0"
page = false
"#;
    let config = p2p_server::Config::from_toml_str(toml).map_err(|e| e.to_string())?;
    let server = p2p_server::Server::bind(&config)
        .await
        .map_err(|e| e.to_string())?;
    let sig = server
        .local_addrs()
        .signaling
        .ok_or("signaling is not served")?;
    tokio::spawn(server.run(std::future::pending()));
    Ok(format!("ws://{sig}/ws"))
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(BOUND, f)
        .await
        .map_err(|_| format!("{what}: nothing within {BOUND:?}"))
}

/// Both peers connect; returns them, a channel B opened (A's end and
/// B's) and the time from the first `connect()` call to the first message
/// delivered (B → A).
async fn meet(
    url: &str,
    room: &str,
    policy: Policy,
) -> Result<(Connection, Connection, Channel, Channel, Duration), String> {
    let cfg = || {
        PeerConfig::new(url, room)
            .local_addresses([LOOPBACK])
            .policy(policy)
            .connect_timeout(Duration::from_secs(20))
            .peer_timeout(Duration::from_secs(20))
    };
    let start = Instant::now();
    let first = tokio::spawn(Peer::new(cfg()).map_err(|e| e.to_string())?.connect());
    let second = Peer::new(cfg()).map_err(|e| e.to_string())?.connect();
    let b = bounded("second peer", second)
        .await?
        .map_err(|e| format!("second peer: {e}"))?;
    let a = bounded("first peer", first)
        .await?
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("first peer: {e}"))?;
    let cb = b
        .open_channel(ChannelOptions::new("bench"))
        .await
        .map_err(|e| e.to_string())?;
    cb.send(&b"first"[..]).await.map_err(|e| e.to_string())?;
    let ca = bounded("the channel", a.accept_channel())
        .await?
        .map_err(|e| e.to_string())?;
    bounded("the first message", ca.recv())
        .await?
        .map_err(|e| e.to_string())?;
    Ok((a, b, ca, cb, start.elapsed()))
}

struct Throughput {
    sent: u64,
    received: u64,
    elapsed: Duration,
}

/// A sends `size`-byte messages to B for `seconds` on the channel; B
/// counts them.
async fn blast(
    (a, b): (Connection, Connection),
    (ca, cb): (Channel, Channel),
    size: usize,
    seconds: f64,
) -> Result<Throughput, String> {
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = {
        let (received, stop) = (received.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(100), cb.recv()).await {
                    Ok(Ok(m)) if m.data.len() == size => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(_)) | Err(_) => {}
                    Ok(Err(_)) => break,
                }
            }
        })
    };
    let payload = p2p_connect::Bytes::from(vec![0x5a; size]);
    let run = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < run {
        // Batches between clock reads; `send` waits while too much is
        // unacknowledged.
        for _ in 0..64 {
            ca.send(payload.clone()).await.map_err(|e| e.to_string())?;
            sent += 1;
        }
    }
    let elapsed = start.elapsed();
    // Let the last ones arrive.
    for _ in 0..100 {
        if received.load(Ordering::Relaxed) >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = bounded("counter", counter).await?;
    a.close().await;
    b.close().await;
    Ok(Throughput {
        sent,
        received: received.load(Ordering::Relaxed),
        elapsed,
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

async fn bench(a: &Args) -> Result<(), String> {
    let url = daemon().await?;
    println!(
        "| path | runs | connect → first message, median (min–max) ms | messages/s received | Mbit/s received (payload) | delivered |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, policy, kind) in [
        ("direct (host ↔ host)", Policy::All, CandidateKind::Host),
        (
            "relayed (TURN/UDP, relay-only)",
            Policy::RelayOnly,
            CandidateKind::Relayed,
        ),
    ] {
        let mut firsts = Vec::new();
        let mut rates = Vec::new();
        let mut mbits = Vec::new();
        let (mut sent, mut received) = (0u64, 0u64);
        for run in 0..a.runs {
            let room = format!("bench-{name}-{run}");
            let (a_conn, b_conn, ca, cb, first) = meet(&url, &room, policy).await?;
            let got = a_conn.selected_path().ok_or("no selected path")?;
            if got.local.kind != kind {
                return Err(format!("{name}: connected over {got}, not {kind}"));
            }
            firsts.push(first.as_secs_f64() * 1000.0);
            let t = blast((a_conn, b_conn), (ca, cb), a.size, a.seconds).await?;
            let secs = t.elapsed.as_secs_f64();
            rates.push(t.received as f64 / secs);
            mbits.push(t.received as f64 * a.size as f64 * 8.0 / secs / 1e6);
            sent += t.sent;
            received += t.received;
        }
        let (lo, hi) = firsts
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
        println!(
            "| {name} | {} | {:.1} ({lo:.1}–{hi:.1}) | {:.0} | {:.1} | {:.1} % |",
            a.runs,
            median(&mut firsts),
            median(&mut rates),
            median(&mut mbits),
            if sent == 0 {
                0.0
            } else {
                received as f64 * 100.0 / sent as f64
            }
        );
    }
    println!();
    println!(
        "Loopback, one process: p2p-server (STUN, TURN, signaling) and both peers on a tokio runtime with 2 worker threads; {}-byte messages on a reliable ordered data channel (DTLS, SCTP) for {} s per run; medians over the runs. Built with --release.",
        a.size, a.seconds
    );
    Ok(())
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("connect_bench: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("connect_bench: runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(bench(&a)) {
        eprintln!("connect_bench: {e}");
        std::process::exit(1);
    }
}
