//! `p2p demo`: the whole stack on loopback in one process. Starts the
//! daemon (STUN, TURN with REST credentials, signaling), two peers in one
//! room, connects them, exchanges messages and prints a report.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use p2p_connect::{
    CandidateKind, ChannelOptions, ConnectionEvent, IceStats, Peer, PeerConfig, Policy,
};
use p2p_server::{Config, Server};
use rand::Rng;

use crate::connect_cmd::describe;

type AnyError = Box<dyn std::error::Error>;

pub(crate) const EXAMPLES: &str = "\
Examples:
  p2p demo                       # a direct path, with the timeline
  p2p demo --relay-only -q       # through TURN, the report only
  p2p demo --show-checks         # the ICE checks as they run";

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Use relayed candidates only: the path goes through the TURN server.
    #[arg(long)]
    relay_only: bool,
    /// Print the ICE check list as the checks run.
    #[arg(long)]
    show_checks: bool,
    /// Messages alice sends to bob (bob echoes each).
    #[arg(long, value_name = "N", default_value_t = 10)]
    messages: u32,
    /// Print only the report, not the timeline.
    #[arg(long, short)]
    quiet: bool,
}

/// A line of the timeline, printed as it happens.
fn timeline(t0: Instant, who: &str, quiet: bool) -> impl FnMut(&ConnectionEvent) + Send {
    let who = who.to_owned();
    move |e| {
        if quiet {
            return;
        }
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if let ConnectionEvent::CheckList(stats) = e {
            println!("{ms:>8.1} ms  {who:<5}  check list:");
            for line in stats.to_string().lines() {
                println!("                    {line}");
            }
        } else if let Some(line) = describe(e) {
            println!("{ms:>8.1} ms  {who:<5}  {line}");
        }
    }
}

fn candidates(stats: &IceStats) -> String {
    let mut s = String::new();
    for c in &stats.local_candidates {
        if c.kind() == CandidateKind::PeerReflexive {
            continue;
        }
        if !s.is_empty() {
            s.push_str(", ");
        }
        let _ = write!(s, "{} {}", c.kind(), c.address());
    }
    if s.is_empty() {
        s.push_str("(none)");
    }
    s
}

struct Echo {
    received: u64,
    sent: u64,
}

pub(crate) async fn run(a: DemoArgs) -> Result<(), AnyError> {
    let t0 = Instant::now();
    // The daemon: STUN + TURN (REST secret, loopback peers allowed) +
    // signaling, all on loopback, ephemeral ports.
    let mut cfg = Config::default();
    cfg.stun.listen = vec![(Ipv4Addr::LOCALHOST, 0).into()];
    cfg.stun.workers = Some(1);
    cfg.turn.realm = Some("p2p-demo".into());
    let secret: u64 = rand::thread_rng().gen();
    cfg.turn.auth_secret = Some(format!("{secret:016x}"));
    cfg.turn.allow_peer = vec!["127.0.0.0/8".into()];
    cfg.signaling.listen = vec![(Ipv4Addr::LOCALHOST, 0).into()];
    cfg.signaling.page = false;
    let server = Server::bind(&cfg).await?;
    let addrs = server.local_addrs().clone();
    let sig = addrs
        .signaling
        .ok_or("the daemon did not start its signaling server")?;
    let url = format!("ws://{sig}/ws");
    let udp = addrs.udp.first().copied().ok_or("no STUN/TURN socket")?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(server.run(async {
        let _ = stop_rx.await;
    }));
    println!("p2p demo: daemon up: STUN and TURN on udp/tcp {udp}, signaling on {url}");
    println!(
        "p2p demo: two peers, alice and bob, meet in one room{}",
        if a.relay_only { ", relay-only" } else { "" }
    );

    let room = format!("demo-{:08x}", rand::thread_rng().gen::<u32>());
    let peer_config = || {
        let mut c = PeerConfig::new(url.clone(), room.clone())
            .local_addresses([IpAddr::V4(Ipv4Addr::LOCALHOST)])
            .connect_timeout(Duration::from_secs(15))
            .peer_timeout(Duration::from_secs(10));
        if a.relay_only {
            c = c.policy(Policy::RelayOnly);
        }
        if a.show_checks {
            c.check_list_interval = Some(Duration::from_millis(100));
        }
        c
    };
    let alice_peer = Peer::new(peer_config())?;
    let bob_peer = Peer::new(peer_config())?;

    // Alice joins first and waits; bob arrives and offers.
    let (joined_tx, joined_rx) = tokio::sync::oneshot::channel();
    let joined_tx = Arc::new(Mutex::new(Some(joined_tx)));
    let mut alice_line = timeline(t0, "alice", a.quiet);
    let alice = tokio::spawn(alice_peer.connect_with(move |e| {
        if matches!(e, ConnectionEvent::Joined { .. }) {
            if let Some(tx) = joined_tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = tx.send(());
            }
        }
        alice_line(e);
    }));
    let _ = tokio::time::timeout(Duration::from_secs(10), joined_rx).await;
    let meet = Instant::now();
    let bob = bob_peer.connect_with(timeline(t0, "bob", a.quiet)).await;
    let alice = alice.await?;
    let (alice, bob) = match (alice, bob) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) => return Err(format!("alice: {e}").into()),
        (_, Err(e)) => return Err(format!("bob: {e}").into()),
    };
    let time_to_connect = meet.elapsed();

    // Messages, on a reliable ordered data channel bob opens (he offered):
    // alice sends, bob echoes.
    let bob_chat = bob.open_channel(ChannelOptions::new("echo")).await?;
    let alice_chat = alice.accept_channel().await?;
    let (echo_stop_tx, mut echo_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let echo = tokio::spawn(async move {
        let mut st = Echo {
            received: 0,
            sent: 0,
        };
        loop {
            tokio::select! {
                got = bob_chat.recv() => match got {
                    Ok(m) => {
                        st.received += 1;
                        if bob_chat.send_text(m.text().into_owned()).await.is_ok() {
                            st.sent += 1;
                        }
                    }
                    Err(_) => break,
                },
                _ = &mut echo_stop_rx => break,
            }
        }
        st
    });
    let mut rtts = Vec::new();
    let mut sent = 0u64;
    for i in 0..a.messages {
        let msg = format!("message {i} from alice");
        let t = Instant::now();
        alice_chat.send_text(msg.clone()).await?;
        sent += 1;
        let deadline = t + Duration::from_millis(2000);
        match tokio::time::timeout_at(deadline.into(), alice_chat.recv()).await {
            Ok(Ok(m)) if m.data == msg.as_bytes() => rtts.push(t.elapsed()),
            Ok(Ok(m)) => return Err(format!("echo out of order: {:?}", m.text()).into()),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    let _ = echo_stop_tx.send(());
    let echo = echo.await?;

    let sa = alice.stats().await?;
    let sb = bob.stats().await?;
    let path = alice.selected_path();
    alice.close().await;
    bob.close().await;
    let _ = stop_tx.send(());
    let _ = daemon.await;

    println!();
    println!("p2p demo report");
    println!("  candidates (alice): {}", candidates(&sa));
    println!("  candidates (bob):   {}", candidates(&sb));
    match &path {
        Some(p) => println!("  selected pair:      {p}  (alice's view)"),
        None => println!("  selected pair:      (none)"),
    }
    println!(
        "  time to connect:    {:.1} ms (from bob joining to both connected)",
        time_to_connect.as_secs_f64() * 1000.0
    );
    if rtts.is_empty() {
        println!("  round-trip time:    (no echo came back)");
    } else {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let min = rtts.iter().min().copied().unwrap_or_default();
        let max = rtts.iter().max().copied().unwrap_or_default();
        let avg = rtts.iter().sum::<Duration>() / rtts.len() as u32;
        println!(
            "  round-trip time:    min {:.3} / avg {:.3} / max {:.3} ms over {} echoes",
            ms(min),
            ms(avg),
            ms(max),
            rtts.len()
        );
    }
    println!(
        "  messages:           alice sent {sent}, bob received {} and echoed {}, alice received {} (a reliable data channel over DTLS)",
        echo.received,
        echo.sent,
        rtts.len()
    );
    if a.show_checks {
        println!("  final check list (alice):");
        for line in sa.to_string().lines() {
            println!("    {line}");
        }
    }
    if a.relay_only
        && path
            .as_ref()
            .is_some_and(|p| p.local.kind != CandidateKind::Relayed)
    {
        return Err("relay-only, yet the selected path is not relayed".into());
    }
    if (rtts.len() as u64) < sent {
        return Err(format!(
            "{} of the {sent} messages came back on a reliable channel",
            rtts.len()
        )
        .into());
    }
    Ok(())
}
