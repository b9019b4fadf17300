//! What a data channel costs to set up and to keep (issue 13, "Speed"):
//!
//! 1. Time to the first message, in round trips, on `p2p-netsim` with a
//!    50 ms path RTT (12.5 ms on each access link), in simulated time, on
//!    the harness of the NAT matrix (`crates/connect/tests/common`): two
//!    public peers; the offerer opens a channel and sends one message as
//!    soon as its association is up (what `Peer::connect` followed by
//!    `open_channel` and `send` does). Counted from the first selected
//!    pair (either side) to the message delivered at the peer, with the
//!    DTLS and SCTP milestones between. Deterministic.
//! 2. Open-a-channel time on loopback with the real driver: `open_channel`
//!    and one message on a connected pair, until the peer has both.
//! 3. Memory: live heap (a counting allocator) and RSS, before and after
//!    `--connections` connected pairs on loopback (one in-process
//!    signaling server), then before and after `--channels` idle channels
//!    opened on one connection. Figures are per connection end (one
//!    `Connection`) and per channel end.
//!
//! `channel_setup [--connections N] [--channels N]` prints Markdown;
//! `cargo xtask bench channel` runs it after `channel_bench`.
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

#[path = "../../../crates/connect/tests/common/mod.rs"]
mod common;

#[path = "../counting.rs"]
mod counting;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{Opts, Pair, Placement, SessionNode};
use counting::rss;
use p2p_connect::{ChannelEvent, ChannelOptions, Peer, PeerConfig, SessionEvent};

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

const RTT: Duration = Duration::from_millis(50);

fn first(n: &SessionNode, f: impl Fn(&SessionEvent) -> bool) -> Option<Instant> {
    n.has_event(f)
}

fn rtts(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() / RTT.as_secs_f64())
}

/// Section 1: the netsim run.
fn first_message() -> Result<(), String> {
    let opts = Opts {
        link: p2p_netsim::LinkConfig {
            latency: RTT / 4,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut p = Pair::new(Placement::Public, Placement::Public, opts);
    p.node_a_mut().pinging = false;
    p.node_b_mut().pinging = false;
    p.node_a_mut().burst_on_select = 1;
    p.run_until(|p| !p.node_b().received.is_empty(), Duration::from_secs(30))?;
    let (a, b) = (p.node_a(), p.node_b());
    let selected = [a.first_selected, b.first_selected]
        .into_iter()
        .flatten()
        .min()
        .ok_or("no pair selected")?;
    let check = [a.first_check, b.first_check]
        .into_iter()
        .flatten()
        .min()
        .ok_or("no check")?;
    let since = |t: Option<Instant>| t.map_or("–".to_string(), |t| rtts(t - selected));
    let secured = |n: &SessionNode| first(n, |e| matches!(e, SessionEvent::Secured { .. }));
    let up = |n: &SessionNode| {
        first(n, |e| {
            matches!(e, SessionEvent::Channel(ChannelEvent::Connected))
        })
    };
    let delivered = b.received.first().map(|(t, _)| *t);
    println!("## Time to the first message (netsim, path RTT 50 ms)\n");
    println!(
        "Two public peers, 12.5 ms on each access link; A offers (DTLS server, \
         ICE controlling), B answers (DTLS client); A opens a channel and sends \
         one message when its association is up. Round trips counted from the \
         first selected pair (either side).\n"
    );
    println!("| milestone | A | B |");
    println!("|---|---:|---:|");
    println!("| first check sent | −{} | |", rtts(selected - check));
    println!(
        "| pair selected | {} | {} |",
        since(a.first_selected),
        since(b.first_selected)
    );
    println!(
        "| DTLS up (Secured) | {} | {} |",
        since(secured(a)),
        since(secured(b))
    );
    println!(
        "| SCTP association up | {} | {} |",
        since(up(a)),
        since(up(b))
    );
    println!(
        "| first message delivered (at B) | | **{}** |\n",
        since(delivered)
    );
    Ok(())
}

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn signaling() -> Result<String, String> {
    let toml = "[signaling]\nlisten = \"127.0.0.1:0\"\npage = false\n";
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

async fn pair(
    url: &str,
    room: &str,
) -> Result<(p2p_connect::Connection, p2p_connect::Connection), String> {
    let cfg = || {
        PeerConfig::new(url, room)
            .local_addresses([LOOPBACK])
            .connect_timeout(Duration::from_secs(20))
            .peer_timeout(Duration::from_secs(20))
    };
    let first = tokio::spawn(Peer::new(cfg()).map_err(|e| e.to_string())?.connect());
    let b = Peer::new(cfg())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("second peer: {e}"))?;
    let a = first
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("first peer: {e}"))?;
    Ok((a, b))
}

/// Let background work settle (driver tasks, timers) before a reading:
/// long enough for the connections' checks to be over and their socket
/// readers to have let go of their receive buffers (held while datagrams
/// flow, 200-400 ms after the last), short of the next consent check.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// Live heap and RSS, each the median of 11 readings 0.5 s apart: over
/// one consent period (5 s), so that the receive buffers a socket reader
/// holds for a moment after each consent check (driver/net.rs) count as
/// often as they are held.
async fn reading() -> (isize, isize) {
    let (mut heap, mut res) = (Vec::new(), Vec::new());
    for i in 0..11 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        heap.push(counting::live());
        res.push(rss());
    }
    heap.sort_unstable();
    res.sort_unstable();
    (heap[5], res[5])
}

fn kib(b: f64) -> String {
    format!("{:.1}", b / 1024.0)
}

/// Sections 2 and 3.
async fn real(connections: usize, channels: usize) -> Result<(), String> {
    let url = signaling().await?;
    // Warm up (the runtime, the TLS and crypto tables, the first pair).
    let (wa, wb) = pair(&url, "warm").await?;

    // Open-a-channel time.
    let mut opens = Vec::new();
    let mut kept = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let c = wa
            .open_channel(ChannelOptions::new(format!("open{i}")))
            .await
            .map_err(|e| e.to_string())?;
        c.send(&b"x"[..]).await.map_err(|e| e.to_string())?;
        let r = wb.accept_channel().await.map_err(|e| e.to_string())?;
        r.recv().await.map_err(|e| e.to_string())?;
        opens.push(t.elapsed());
        kept.push((c, r));
    }
    opens.sort();
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
    println!("## Opening a channel on loopback (real driver)\n");
    println!(
        "`open_channel` + one message on a connected pair until the peer has \
         accepted the channel and read the message (DCEP OPEN with the data, \
         20 times): median {} ms (min {}, max {}).\n",
        ms(opens[opens.len() / 2]),
        ms(opens[0]),
        ms(opens[opens.len() - 1])
    );

    // Memory per connection.
    settle().await;
    let (h0, r0) = reading().await;
    let mut held = Vec::new();
    for i in 0..connections {
        held.push(pair(&url, &format!("mem{i}")).await?);
    }
    settle().await;
    let (h1, r1) = reading().await;
    let ends = (2 * connections) as f64;
    println!("## Memory\n");
    println!("| what | heap per end, KiB | RSS per end, KiB |");
    println!("|---|---:|---:|");
    println!(
        "| an open connection (idle, {connections} pairs on loopback) | {} | {} |",
        kib((h1 - h0) as f64 / ends),
        kib((r1 - r0) as f64 / ends)
    );

    // Memory per idle channel.
    let (a, b) = held.first().ok_or("no connection")?;
    settle().await;
    let (h2, r2) = reading().await;
    let mut chans = Vec::new();
    for i in 0..channels {
        let c = a
            .open_channel(ChannelOptions::new(format!("idle{i}")))
            .await
            .map_err(|e| e.to_string())?;
        let r = b.accept_channel().await.map_err(|e| e.to_string())?;
        chans.push((c, r));
    }
    settle().await;
    let (h3, r3) = reading().await;
    let ends = (2 * channels) as f64;
    println!(
        "| an idle channel ({channels} on one connection) | {} | {} |\n",
        kib((h3 - h2) as f64 / ends),
        kib((r3 - r2) as f64 / ends)
    );
    println!(
        "Heap: bytes allocated and not freed (a counting allocator), so the \
         figure includes the driver's tasks and queues; RSS also counts \
         allocator slack (freed blocks the allocator keeps). Each reading is \
         the median of 11 over 5 s (one consent period). Socket buffers live \
         in the kernel and are in neither.\n"
    );
    drop(chans);
    drop(kept);
    for (a, b) in held {
        a.close().await;
        b.close().await;
    }
    wa.close().await;
    wb.close().await;
    Ok(())
}

fn main() {
    // Live bytes from the start: each figure is a difference of two
    // readings taken later.
    counting::count(true);
    let mut connections = 20usize;
    let mut channels = 200usize;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().and_then(|v| v.parse().ok());
        match (k.as_str(), v) {
            ("--connections", Some(n)) if (1..=200).contains(&n) => connections = n,
            ("--channels", Some(n)) if (1..=2000).contains(&n) => channels = n,
            _ => {
                eprintln!("channel_setup [--connections 1-200] [--channels 1-2000]");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = first_message() {
        eprintln!("channel_setup: first message: {e}");
        std::process::exit(1);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("channel_setup: {e}");
            std::process::exit(1);
        }
    };
    let r = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(180), real(connections, channels))
            .await
            .unwrap_or_else(|_| Err("not done within 180 s".into()))
    });
    if let Err(e) = r {
        eprintln!("channel_setup: {e}");
        std::process::exit(1);
    }
}
