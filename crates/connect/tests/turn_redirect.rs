//! A TURN server that answers 300 Try Alternate over TCP with an
//! alternate that cannot be reached: the driver's connection there fails
//! at once, and so does that TURN allocation attempt
//! (`ConnectionEvent::TurnFailed` naming the alternate), well before the
//! TURN client's 39.5 s reliable-transport timeout; the session goes on
//! with its other candidates and the peers connect. Every wait is bounded.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2p_connect::{Connection, ConnectionEvent, IceServerUri, Peer, PeerConfig};
use p2p_signaling::ServerConfig;
use p2p_stun::attr::{AlternateServer, ErrorCode};
use p2p_stun::{Message, MessageBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const BOUND: Duration = Duration::from_secs(20);

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(BOUND, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result within {BOUND:?}"),
    }
}

/// A signaling server on 127.0.0.1:0; returns its URL.
async fn signaling() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn(p2p_signaling::serve(
        listener,
        ServerConfig::default(),
        std::future::pending(),
    ));
    url
}

/// A TCP port of 127.0.0.1 where nothing listens.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A TURN server over TCP that answers every request with 300 Try
/// Alternate naming `alternate` (unsigned, as to a first Allocate);
/// returns its address and the count of requests it answered.
async fn redirecting_turn(alternate: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 20];
                while s.read_exact(&mut head).await.is_ok() {
                    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
                    let mut req = head.to_vec();
                    req.resize(20 + len, 0);
                    if s.read_exact(&mut req[20..]).await.is_err() {
                        return;
                    }
                    let Ok(msg) = Message::decode(&req) else {
                        return;
                    };
                    let mut out = Vec::new();
                    let mut b =
                        MessageBuilder::new(&mut out, msg.typ().error(), msg.transaction_id())
                            .unwrap();
                    b.add(&ErrorCode::from_code(300).unwrap()).unwrap();
                    b.add(&AlternateServer(alternate)).unwrap();
                    b.finish();
                    count.fetch_add(1, Ordering::Relaxed);
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, answered)
}

/// The events of `c` until `pred` matches one, with when each came.
async fn until_event(
    what: &str,
    c: &Connection,
    mut pred: impl FnMut(&ConnectionEvent) -> bool,
) -> Vec<(Instant, ConnectionEvent)> {
    bounded(what, async {
        let mut seen = Vec::new();
        while let Some(e) = c.next_event().await {
            let done = pred(&e);
            seen.push((Instant::now(), e));
            if done {
                return seen;
            }
        }
        panic!("{what}: the connection closed; events: {seen:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_an_unreachable_turn_server_fails_that_allocation_at_once_and_the_peers_connect(
) {
    let url = signaling().await;
    let unreachable = closed_port();
    let (turn, answered) = redirecting_turn(unreachable).await;
    let config = || {
        let uri: IceServerUri = format!("turn:{turn}?transport=tcp").parse().unwrap();
        PeerConfig::new(url.as_str(), "redirected-nowhere")
            .local_addresses([LOOPBACK])
            .include_loopback(true)
            .ice_server(uri.with_credentials("u", "p"))
            .connect_timeout(Duration::from_secs(15))
            .peer_timeout(Duration::from_secs(15))
    };
    let first = tokio::spawn(Peer::new(config()).unwrap().connect());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = bounded("second peer", Peer::new(config()).unwrap().connect())
        .await
        .unwrap_or_else(|e| panic!("second peer: {e}"));
    let first = bounded("first peer", first)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("first peer: {e}"));
    for (name, c) in [("first", &first), ("second", &second)] {
        let seen = until_event(name, c, |e| matches!(e, ConnectionEvent::TurnFailed { .. })).await;
        let redirected = seen
            .iter()
            .find_map(|(at, e)| {
                matches!(e, ConnectionEvent::TurnRedirected { from, to } if *from == turn && *to == unreachable)
                    .then_some(*at)
            })
            .unwrap_or_else(|| panic!("{name}: no redirect to {unreachable}: {seen:?}"));
        let Some((
            failed_at,
            ConnectionEvent::TurnFailed {
                server,
                code,
                reason,
            },
        )) = seen.last()
        else {
            unreachable!("until_event ends on the match");
        };
        assert_eq!(*code, None, "{name}");
        assert!(
            server.contains(&unreachable.to_string()),
            "{name}: the failure names the alternate: {server}"
        );
        assert!(reason.contains("connect"), "{name}: {reason}");
        let took = failed_at.duration_since(redirected);
        assert!(
            took < Duration::from_secs(2),
            "{name}: gave up {took:?} after the redirect"
        );
        // ICE was not held up: the peers connect over their host addresses.
        until_event(name, c, |e| matches!(e, ConnectionEvent::Connected(_))).await;
    }
    assert!(
        answered.load(Ordering::Relaxed) >= 2,
        "both were redirected"
    );
    first.close().await;
    second.close().await;
}
