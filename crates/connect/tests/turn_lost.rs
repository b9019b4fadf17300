//! A TURN allocation over TCP whose connection the server side closes in
//! the middle of a session (RFC 6062 / RFC 8656 §3.1: a TCP allocation
//! lives on its connection). The `p2p-server` daemon's TURN sits behind a
//! small TCP proxy the test can cut: the driver's reader sees the end, the
//! application gets `ConnectionEvent::TurnFailed`, the relayed candidates
//! are lost in ICE, and a session that depended on them ends at once with
//! `CloseReason::RelayLost` instead of after consent's 30 s. Every wait is
//! bounded.

mod live;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use live::{
    bounded, daemon, deliver, last_turn_failed, pair, until_event_timed as until_event, LOOPBACK,
    SECRET,
};
use p2p_connect::{CandidateKind, CloseReason, ConnectionEvent, IceServerUri, PeerConfig, Policy};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy to `upstream` that [`Proxy::cut`] ends: every connection
/// through it is closed and no new one is accepted. [`Proxy::drop_all`]
/// closes the connections it has and goes on accepting.
struct Proxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    drops: watch::Sender<u64>,
    accepted: Arc<AtomicUsize>,
}

impl Proxy {
    async fn new(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, rx) = watch::channel(false);
        let (drops, drops_rx) = watch::channel(0u64);
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut stop = rx.clone();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((mut client, _)) = r else { return };
                        count.fetch_add(1, Ordering::Relaxed);
                        let mut stop = rx.clone();
                        let mut dropped = drops_rx.clone();
                        dropped.mark_unchanged();
                        tokio::spawn(async move {
                            let Ok(mut up) = TcpStream::connect(upstream).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut up) => {}
                                _ = stop.wait_for(|c| *c) => {}
                                _ = dropped.changed() => {}
                            }
                            // Both sockets close here.
                        });
                    }
                    // The listener closes: a new connection is refused.
                    _ = stop.wait_for(|c| *c) => return,
                }
            }
        });
        Proxy {
            addr,
            cut,
            drops,
            accepted,
        }
    }

    fn cut(&self) {
        let _ = self.cut.send(true);
    }

    /// Closes every connection through it; new ones are accepted.
    fn drop_all(&self) {
        self.drops.send_modify(|n| *n += 1);
    }
}

/// A peer's configuration with TURN over TCP at `turn`.
fn config(url: &str, room: &str, turn: SocketAddr, policy: Policy) -> PeerConfig {
    let username = "4000000000:tcp-lost";
    let password = p2p_signaling::rest_credential(SECRET.as_bytes(), username);
    let uri: IceServerUri = format!("turn:{turn}?transport=tcp").parse().unwrap();
    PeerConfig::new(url, room)
        .local_addresses([LOOPBACK])
        .include_loopback(true)
        .policy(policy)
        .ice_server(uri.with_credentials(username, password))
        .connect_timeout(Duration::from_secs(15))
        .peer_timeout(Duration::from_secs(15))
}

fn is_turn_failed(e: &ConnectionEvent) -> bool {
    matches!(e, ConnectionEvent::TurnFailed { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_session_reports_turn_failed_when_the_turn_tcp_connection_drops_and_keeps_working()
{
    let (url, turn) = daemon().await;
    let proxy = Proxy::new(turn).await;
    let cfg = || config(&url, "direct-turn-lost", proxy.addr, Policy::default());
    let (a, b) = pair(cfg(), cfg()).await;
    for (name, c) in [("a", &a), ("b", &b)] {
        let p = c.selected_path().expect("a selected path");
        // Direct: the peer's host candidate, or the same address learnt
        // as peer-reflexive when its check came before its candidate.
        assert!(
            p.local.kind == CandidateKind::Host
                && matches!(
                    p.remote.kind,
                    CandidateKind::Host | CandidateKind::PeerReflexive
                ),
            "{name}: {:?} -> {:?}",
            p.local.kind,
            p.remote.kind
        );
        until_event(
            name,
            c,
            |e| matches!(e, ConnectionEvent::TurnAllocated { server, .. } if *server == proxy.addr),
        )
        .await;
    }
    assert_eq!(
        proxy.accepted.load(Ordering::Relaxed),
        2,
        "one TCP connection each"
    );
    let cut_at = Instant::now();
    proxy.cut();
    for (name, c) in [("a", &a), ("b", &b)] {
        let seen = until_event(name, c, is_turn_failed).await;
        let (at, server, code, reason) = last_turn_failed(&seen);
        assert!(server.contains(&proxy.addr.to_string()), "{name}: {server}");
        assert_eq!(code, None, "{name}");
        assert!(reason.contains("closed"), "{name}: {reason}");
        let took = at.duration_since(cut_at);
        assert!(
            took < Duration::from_secs(2),
            "{name}: said {took:?} after the cut"
        );
        assert!(
            !seen
                .iter()
                .any(|(_, e)| matches!(e, ConnectionEvent::Closed(_))),
            "{name}: {seen:?}"
        );
    }
    // The direct path carries on, both ways.
    deliver(&a, &b, b"still direct from a").await;
    deliver(&b, &a, b"still direct from b").await;
    assert_eq!(a.closed(), None);
    assert_eq!(b.closed(), None);
    bounded("a closes", a.close()).await;
    bounded("b closes", b.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_session_whose_turn_tcp_connection_drops_ends_at_once_with_relay_lost() {
    let (url, turn) = daemon().await;
    // One proxy per peer: only a's connection to the server is cut.
    let (proxy_a, proxy_b) = (Proxy::new(turn).await, Proxy::new(turn).await);
    let (a, b) = pair(
        config(&url, "relay-turn-lost", proxy_a.addr, Policy::RelayOnly),
        config(&url, "relay-turn-lost", proxy_b.addr, Policy::RelayOnly),
    )
    .await;
    let p = a.selected_path().expect("a selected path");
    assert_eq!(p.local.kind, CandidateKind::Relayed);
    deliver(&a, &b, b"relayed from a").await;
    let cut_at = Instant::now();
    proxy_a.cut();
    let seen = until_event("a", &a, |e| matches!(e, ConnectionEvent::Closed(_))).await;
    let failed = seen
        .iter()
        .position(|(_, e)| is_turn_failed(e))
        .unwrap_or_else(|| panic!("a: no TurnFailed before the close: {seen:?}"));
    let Some((closed_at, ConnectionEvent::Closed(reason))) = seen.last() else {
        unreachable!("until_event ends on the match");
    };
    assert!(failed < seen.len() - 1, "TurnFailed comes first: {seen:?}");
    match reason {
        CloseReason::RelayLost(why) => {
            assert!(why.contains(&proxy_a.addr.to_string()), "{why}");
        }
        other => panic!("a closed for another reason: {other:?}; {seen:?}"),
    }
    let took = closed_at.duration_since(cut_at);
    assert!(
        took < Duration::from_secs(2),
        "a ended {took:?} after the cut"
    );
    assert!(matches!(a.closed(), Some(CloseReason::RelayLost(_))));
    // The peer learns too (its relay lives on, a's is gone), well before
    // consent's 30 s.
    until_event("b", &b, |e| matches!(e, ConnectionEvent::Closed(_))).await;
    bounded("a closes", a.close()).await;
    bounded("b closes", b.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_the_turn_tcp_connection_dropped_dials_the_server_again_and_allocates() {
    let (url, turn) = daemon().await;
    let proxy = Proxy::new(turn).await;
    let cfg = || config(&url, "turn-redial", proxy.addr, Policy::default());
    let (a, b) = pair(cfg(), cfg()).await;
    for (name, c) in [("a", &a), ("b", &b)] {
        until_event(
            name,
            c,
            |e| matches!(e, ConnectionEvent::TurnAllocated { server, .. } if *server == proxy.addr),
        )
        .await;
    }
    assert_eq!(proxy.accepted.load(Ordering::Relaxed), 2);
    // The server side closes both connections; the proxy still accepts.
    proxy.drop_all();
    for (name, c) in [("a", &a), ("b", &b)] {
        until_event(name, c, is_turn_failed).await;
    }
    assert_eq!(a.closed(), None);
    // A restart gathers again: its Allocate to the same server goes over
    // a new connection, dialled on demand, and is answered (before, it
    // was dropped with no connection to carry it).
    let restarted = bounded("a restarts", a.restart_ice()).await;
    assert_eq!(restarted, Ok(true));
    let seen = until_event(
        "a",
        &a,
        |e| matches!(e, ConnectionEvent::TurnAllocated { server, .. } if *server == proxy.addr),
    )
    .await;
    assert!(
        !seen.iter().any(|(_, e)| is_turn_failed(e)),
        "a: the new allocation failed first: {seen:?}"
    );
    assert!(
        proxy.accepted.load(Ordering::Relaxed) >= 3,
        "a dialled the server again"
    );
    deliver(&a, &b, b"after the restart from a").await;
    deliver(&b, &a, b"after the restart from b").await;
    bounded("a closes", a.close()).await;
    bounded("b closes", b.close()).await;
}
