//! Issue 16, clients that survive a node: `p2p-connect` peers given
//! several signaling URLs meet across the nodes of a cluster (a real
//! `redis-server`); one whose node dies before the other peer came
//! resumes on another node (same peer id, same room) and the pair still
//! connects; when its node dies during the session, it moves again and
//! the established path carries on, both ways.

mod common_cluster;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bytes::Bytes;
use common_cluster::{free_port, Node, Redis};
use p2p_connect::{ChannelOptions, Connection, ConnectionEvent, Peer, PeerConfig, ReconnectPolicy};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const BOUND: Duration = Duration::from_secs(30);

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(BOUND, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result within {BOUND:?}"),
    }
}

/// A peer that tries `urls` in order.
fn config(urls: &[&str], seed: u64) -> PeerConfig {
    let mut c = PeerConfig::new(urls[0], "cluster-room")
        .local_addresses([LOOPBACK])
        .include_loopback(true)
        .connect_timeout(Duration::from_secs(20))
        .peer_timeout(Duration::from_secs(20));
    for u in &urls[1..] {
        c = c.signaling_fallback(*u);
    }
    let mut p = ReconnectPolicy::new();
    p.rng_seed = Some(seed);
    c.reconnect = p;
    c
}

async fn deliver(from: &Connection, to: &Connection, msg: &[u8]) {
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
    assert_eq!(&m.data[..], msg);
}

/// Reads events until `pred` matches one; returns those read.
async fn until_event(
    what: &str,
    c: &Connection,
    mut pred: impl FnMut(&ConnectionEvent) -> bool,
) -> Vec<ConnectionEvent> {
    bounded(what, async {
        let mut seen = Vec::new();
        while let Some(e) = c.next_event().await {
            let done = pred(&e);
            seen.push(e);
            if done {
                return seen;
            }
        }
        panic!("{what}: the connection closed; events: {seen:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_several_urls_meet_across_nodes_and_outlive_two_node_deaths() {
    let redis = Redis::start(free_port());
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node::start(&redis.url(), &format!("c{i}"), &[]))
        .collect();
    let url: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    // B comes first, on node 1 (then 2, then 0).
    let b_cfg = config(&[&url[1], &url[2], &url[0]], 2);
    let b_task = tokio::spawn(async move { Peer::new(b_cfg).unwrap().connect().await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Its node dies while it waits for the other peer: it resumes on node 2.
    nodes[1].kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // A comes on node 0 and meets B, now on node 2.
    let a = bounded(
        "A",
        Peer::new(config(&[&url[0], &url[2]], 1)).unwrap().connect(),
    )
    .await;
    let b = bounded("B", b_task).await.expect("B's task");
    let (a, b) = match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => panic!("A: {:?}, B: {:?}", a.err(), b.err()),
    };
    // B's own id, as A knows it (Connection::peer_id is the other's).
    let b_id = a.peer_id().to_owned();
    let seen = until_event("B connected", &b, |e| {
        matches!(e, ConnectionEvent::Connected(_))
    })
    .await;
    assert!(
        seen.iter().any(|e| matches!(
            e,
            ConnectionEvent::SignalingRestored { url: u, peer_id } if *u == url[2] && *peer_id == b_id
        )),
        "B resumed on node 2 with its id: {seen:?}"
    );
    until_event("A connected", &a, |e| {
        matches!(e, ConnectionEvent::Connected(_))
    })
    .await;
    deliver(&a, &b, b"across nodes").await;
    deliver(&b, &a, b"and back").await;

    // B's second node dies during the session: B moves to node 0; the
    // path does not notice.
    nodes[2].kill();
    let seen = until_event("B restored again", &b, |e| {
        matches!(e, ConnectionEvent::SignalingRestored { .. })
    })
    .await;
    assert!(
        matches!(seen.last(), Some(ConnectionEvent::SignalingRestored { url: u, peer_id }) if *u == url[0] && *peer_id == b_id),
        "{seen:?}"
    );
    deliver(&a, &b, b"after the second death").await;
    deliver(&b, &a, b"still here").await;
    assert_eq!(a.closed(), None);
    assert_eq!(b.closed(), None);
    a.close().await;
    b.close().await;
}
