//! Helpers of the tests that run the driver over real loopback sockets:
//! bounded waits, a pair of connected peers, a message across, events
//! until one matches. Every wait is bounded by [`BOUND`].
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use p2p_connect::{ChannelOptions, Connection, ConnectionEvent, Peer, PeerConfig};

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The TURN REST secret of [`daemon`].
pub const SECRET: &str = "driver-test-secret";
/// The longest any one wait of these tests may take (a daemon restart
/// included) before the test fails.
pub const BOUND: Duration = Duration::from_secs(30);

pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(BOUND, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result within {BOUND:?}"),
    }
}

/// Two peers connected through the room both configurations name: the
/// first joins, then the second.
pub async fn pair(a: PeerConfig, b: PeerConfig) -> (Connection, Connection) {
    let first = tokio::spawn(Peer::new(a).unwrap().connect());
    // Let the first one join before the second.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = bounded("second peer", Peer::new(b).unwrap().connect())
        .await
        .unwrap_or_else(|e| panic!("second peer: {e}"));
    let first = bounded("first peer", first)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("first peer: {e}"));
    (first, second)
}

/// `from` opens a new data channel and sends `msg` on it; `to` takes the
/// channel and receives exactly `msg` (a reliable channel over the
/// encrypted path: no retry).
pub async fn deliver(from: &Connection, to: &Connection, msg: &[u8]) {
    let label = format!("deliver {}", String::from_utf8_lossy(msg));
    let sent = from
        .open_channel(ChannelOptions::new(label.clone()))
        .await
        .expect("open");
    sent.send(Bytes::copy_from_slice(msg)).await.expect("sent");
    let got = bounded("the channel", to.accept_channel())
        .await
        .expect("accepted");
    assert_eq!(got.label(), label);
    let m = bounded("the message", got.recv()).await.expect("received");
    assert_eq!((&m.data[..], m.binary), (msg, true));
}

/// Reads `c`'s events (from the first one) until `pred` matches one;
/// returns those read with when each came, the match last.
pub async fn until_event_timed(
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

/// [`until_event_timed`] without the times.
pub async fn until_event(
    what: &str,
    c: &Connection,
    pred: impl FnMut(&ConnectionEvent) -> bool,
) -> Vec<ConnectionEvent> {
    until_event_timed(what, c, pred)
        .await
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

/// Binds the daemon. Its TCP listener takes the port the OS gave its UDP
/// socket, which a parallel test may hold already (AddrInUse): try again
/// with a new port, a few times.
pub async fn bind(config: &p2p_server::Config) -> p2p_server::Server {
    let mut last = None;
    for _ in 0..10 {
        match p2p_server::Server::bind(config).await {
            Ok(s) => return s,
            Err(e) => last = Some(e),
        }
    }
    panic!("bind: {last:?}");
}

/// The daemon with STUN, TURN (REST secret, loopback peers allowed) and
/// signaling on loopback. Returns (signaling URL, STUN/TURN address).
pub async fn daemon() -> (String, SocketAddr) {
    daemon_with("").await
}

/// [`daemon`] with more `[turn]` settings.
pub async fn daemon_with(turn: &str) -> (String, SocketAddr) {
    let toml = format!(
        r#"
[stun]
listen = ["127.0.0.1:0"]
workers = 1
[turn]
realm = "test"
auth_secret = "{SECRET}"
allow_peer = ["127.0.0.0/8"]
{turn}
[signaling]
listen = "127.0.0.1:0"
page = false
"#
    );
    let config = p2p_server::Config::from_toml_str(&toml).unwrap();
    let server = bind(&config).await;
    let addrs = server.local_addrs().clone();
    tokio::spawn(server.run(std::future::pending()));
    let sig = addrs.signaling.expect("signaling is served");
    (format!("ws://{sig}/ws"), addrs.udp[0])
}

/// The last of `seen`, a [`ConnectionEvent::TurnFailed`]: when it came,
/// its server, code and reason.
pub fn last_turn_failed(seen: &[(Instant, ConnectionEvent)]) -> (Instant, &str, Option<u16>, &str) {
    match seen.last() {
        Some((
            at,
            ConnectionEvent::TurnFailed {
                server,
                code,
                reason,
            },
        )) => (*at, server, *code, reason),
        other => panic!("not a TurnFailed: {other:?}"),
    }
}
