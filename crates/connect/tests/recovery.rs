//! The driver recovers from a signaling server that goes away: it
//! reconnects with backoff, takes its peer id back (the resume token),
//! joins the room again, and the offerer restarts ICE, which allocates
//! again on a TURN server that lost our allocation (issue 18, item 6).

mod live;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use live::{bounded, deliver, pair, until_event, LOOPBACK};
use p2p_connect::{CloseReason, ConnectionEvent, PeerConfig, Policy, ReconnectPolicy};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A daemon (STUN, TURN with a REST secret, signaling) on loopback, on
/// the given ports (0: any); stopped through the sender.
struct Daemon {
    url: String,
    udp: SocketAddr,
    signaling: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

async fn start(udp: SocketAddr, signaling: SocketAddr) -> Daemon {
    let toml = format!(
        r#"
[stun]
listen = ["{udp}"]
workers = 1
[turn]
realm = "test"
auth_secret = "recovery-secret"
allow_peer = ["127.0.0.0/8"]
[signaling]
listen = "{signaling}"
page = false
"#
    );
    let config = p2p_server::Config::from_toml_str(&toml).unwrap();
    let mut last = None;
    for _ in 0..50 {
        match p2p_server::Server::bind(&config).await {
            Ok(server) => {
                let addrs = server.local_addrs().clone();
                let (stop, stopped) = oneshot::channel::<()>();
                let task = tokio::spawn(async move {
                    server
                        .run(async {
                            let _ = stopped.await;
                        })
                        .await;
                });
                let sig = addrs.signaling.expect("signaling");
                return Daemon {
                    url: format!("ws://{sig}/ws"),
                    udp: addrs.udp[0],
                    signaling: sig,
                    stop: Some(stop),
                    task,
                };
            }
            Err(e) => {
                last = Some(e);
                // Fixed ports may still be held a moment after a stop.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("bind: {last:?}");
}

impl Daemon {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = bounded("the daemon stops", self.task).await;
    }
}

fn config(url: &str, room: &str) -> PeerConfig {
    let mut c = PeerConfig::new(url, room)
        .local_addresses([LOOPBACK])
        .policy(Policy::RelayOnly)
        .connect_timeout(Duration::from_secs(20))
        .peer_timeout(Duration::from_secs(15));
    let mut p = ReconnectPolicy::new();
    p.rng_seed = Some(1);
    c.reconnect = p;
    c
}

#[tokio::test]
async fn a_relay_only_session_resumes_after_the_daemon_restarts() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let d = start(any, any).await;
    let (udp, sig, url) = (d.udp, d.signaling, d.url.clone());
    let (a, b) = pair(config(&url, "restart"), config(&url, "restart")).await;
    deliver(&a, &b, b"before").await;
    let (a_id, b_id) = (b.peer_id().to_owned(), a.peer_id().to_owned());
    // Skip the events of the start.
    until_event("a connected", &a, |e| {
        matches!(e, ConnectionEvent::Connected(_))
    })
    .await;
    until_event("b connected", &b, |e| {
        matches!(e, ConnectionEvent::Connected(_))
    })
    .await;

    // The daemon goes away (its TURN allocations with it) and comes back
    // on the same ports a moment later.
    d.stop().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let restarted_at = Instant::now();
    let d = start(udp, sig).await;

    for (c, id) in [(&a, &a_id), (&b, &b_id)] {
        let seen = until_event("signaling restored", c, |e| {
            matches!(e, ConnectionEvent::SignalingRestored { .. })
        })
        .await;
        assert!(
            seen.iter()
                .any(|e| matches!(e, ConnectionEvent::SignalingInterrupted)),
            "{seen:?}"
        );
        // The resume token took the same peer id back.
        assert!(
            matches!(seen.last(), Some(ConnectionEvent::SignalingRestored { peer_id, .. }) if peer_id == id),
            "{seen:?}"
        );
    }
    // Both allocate again on the restarted server and select a new path.
    for c in [&a, &b] {
        let seen = until_event("a new path", c, |e| {
            matches!(e, ConnectionEvent::PathChanged(_))
        })
        .await;
        assert!(
            seen.iter()
                .any(|e| matches!(e, ConnectionEvent::TurnAllocated { .. })),
            "{seen:?}"
        );
    }
    deliver(&a, &b, b"after the restart").await;
    deliver(&b, &a, b"and back").await;
    let took = restarted_at.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "resumed {took:?} after the restart"
    );
    assert_eq!(a.closed(), None);
    a.close().await;
    b.close().await;
    d.stop().await;
}

#[tokio::test]
async fn a_session_whose_server_never_returns_ends_with_the_reason() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let d = start(any, any).await;
    let url = d.url.clone();
    let cfg = |room| {
        let mut c = config(&url, room);
        c.reconnect.give_up_after = Duration::from_secs(2);
        c.ice = c.ice.clone().with_consent_timeout(Duration::from_secs(3));
        c
    };
    let (a, b) = pair(cfg("gone"), cfg("gone")).await;
    deliver(&a, &b, b"before").await;
    d.stop().await;
    let seen = until_event("closed", &a, |e| matches!(e, ConnectionEvent::Closed(_))).await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, ConnectionEvent::SignalingLost)),
        "{seen:?}"
    );
    assert_eq!(a.closed(), Some(CloseReason::ConsentLost));
    drop(b);
}
