//! Issue 16, a resumed peer knows whether its membership survived: a
//! client that comes back with its resume token joins its room again and
//! `joined` says `resumed: true` when its id was still a member (it came
//! back within the reap time of the cluster) or `resumed: false` when it
//! was not (reaped, or on one node its connection closed), and a newcomer
//! may have taken its place meanwhile. A `p2p-connect` peer whose
//! membership did not survive goes on as a newcomer: it offers to the peer
//! it finds, which waited as the first in the room. Also: `hideHosts`
//! crosses the nodes of a cluster. Real `redis-server` and `p2p serve`
//! processes on loopback.

mod common_cluster;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common_cluster::{free_port, next_matching, redis_cli, Gate, Node, Redis, STEP};
use p2p_connect::{Connection, ConnectionEvent, Peer, PeerConfig, ReconnectPolicy};
use p2p_signaling::{PeerInfo, ServerMsg, SignalingClient};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const BOUND: Duration = Duration::from_secs(40);

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(BOUND, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result within {BOUND:?}"),
    }
}

/// The address of a node's signaling URL `ws://<addr>/...`.
fn signaling_addr(node: &Node) -> SocketAddr {
    let rest = node.url.strip_prefix("ws://").expect("ws:// URL");
    rest.split('/').next().expect("host").parse().expect("addr")
}

/// A `p2p-connect` peer of room `room` that tries `urls` in order.
fn config(urls: &[String], room: &str, seed: u64) -> PeerConfig {
    let mut c = PeerConfig::new(urls[0].as_str(), room)
        .local_addresses([LOOPBACK])
        .include_loopback(true)
        .connect_timeout(Duration::from_secs(20))
        .peer_timeout(Duration::from_secs(30));
    for u in &urls[1..] {
        c = c.signaling_fallback(u.as_str());
    }
    let mut p = ReconnectPolicy::new();
    p.rng_seed = Some(seed);
    c.reconnect = p;
    c
}

/// Reads events until the connection is up; returns those read.
async fn until_connected(what: &str, c: &Connection) -> Vec<ConnectionEvent> {
    bounded(what, async {
        let mut seen = Vec::new();
        while let Some(e) = c.next_event().await {
            let done = matches!(e, ConnectionEvent::Connected(_));
            seen.push(e);
            if done {
                return seen;
            }
        }
        panic!("{what}: the connection closed; events: {seen:?}");
    })
    .await
}

/// `first` waits in its room through `gate`; the gate is cut (its
/// signaling connection is gone and cannot come back) until `meanwhile`
/// made its membership go; then `newcomer` joins and waits, the gate
/// opens, `first` resumes, finds the newcomer, and the two must connect:
/// `first` offers (its membership did not survive), the newcomer answers.
/// Before `resumed` in `joined`, both waited for an offer.
async fn away_while_a_newcomer_arrives(
    first: PeerConfig,
    gate: &Gate,
    meanwhile: impl Future<Output = ()>,
    newcomer: PeerConfig,
) {
    let first = tokio::spawn(async move { Peer::new(first).unwrap().connect().await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    gate.cut();
    meanwhile.await;
    let newcomer = tokio::spawn(async move { Peer::new(newcomer).unwrap().connect().await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    gate.open().await;
    let first = bounded("the first peer", first).await.expect("task");
    let newcomer = bounded("the newcomer", newcomer).await.expect("task");
    let (first, newcomer) = match (first, newcomer) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => panic!("first: {:?}, newcomer: {:?}", a.err(), b.err()),
    };
    let seen = until_connected("the first peer connects", &first).await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, ConnectionEvent::SignalingRestored { .. })),
        "the first peer came back through the gate: {seen:?}"
    );
    until_connected("the newcomer connects", &newcomer).await;
    first.close().await;
    newcomer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_node_a_peer_that_lost_its_membership_offers_to_the_newcomer_it_finds() {
    let node = Node::start_alone(&[]);
    let gate = Gate::open_to(signaling_addr(&node)).await;
    let room = "one-node-rejoin";
    away_while_a_newcomer_arrives(
        config(&[gate.url(&node.url)], room, 1),
        &gate,
        // On one node the membership goes with the connection.
        async {},
        config(std::slice::from_ref(&node.url), room, 2),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_away_longer_than_the_reap_time_offers_to_the_newcomer_that_took_its_place() {
    let redis = Redis::start(free_port());
    let mut n0 = Node::start(&redis.url(), "r0", &[]);
    let n1 = Node::start(&redis.url(), "r1", &[]);
    let gate = Gate::open_to(signaling_addr(&n1)).await;
    let room = "reaped-rejoin";
    let redis = &redis;
    away_while_a_newcomer_arrives(
        // The first peer waits on node 0; its way to node 1 is shut while
        // node 0 dies and its members are reaped.
        config(&[n0.url.clone(), gate.url(&n1.url)], room, 3),
        &gate,
        async move {
            n0.kill();
            let key = format!("p2p:room:{room}");
            let until = Instant::now() + STEP;
            while redis_cli(redis, &["HLEN", &key]) != "0" {
                assert!(Instant::now() < until, "node 0's member was never reaped");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
        config(std::slice::from_ref(&n1.url), room, 4),
    )
    .await;
}

/// Connects to `url`, resumes with `token`, joins `room`: the client, the
/// peers listed and whether its membership survived.
async fn resume_and_join(
    url: &str,
    token: &str,
    room: &str,
) -> (SignalingClient, Vec<PeerInfo>, Option<bool>) {
    let mut c = SignalingClient::connect(url).await.expect("connect");
    c.resume(token).await.expect("resumed");
    let peers = c.join(room, None, None).await.expect("join");
    let kept = c.membership_kept();
    (c, peers, kept)
}

async fn joined(url: &str, room: &str, hide: bool) -> (SignalingClient, Vec<PeerInfo>) {
    let mut c = SignalingClient::connect(url).await.expect("connect");
    c.ask_peers_to_hide_hosts(hide);
    let peers = c.join(room, None, Some("someone")).await.expect("join");
    (c, peers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_peer_is_told_whether_its_membership_survived_its_dead_node() {
    let redis = Redis::start(free_port());
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node::start(&redis.url(), &format!("m{i}"), &[]))
        .collect();
    let url: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    // Two peers on node 0, each with a partner on node 1.
    let (quick, _) = joined(&url[0], "kept", false).await;
    let (mut quick_partner, _) = joined(&url[1], "kept", false).await;
    let (slow, _) = joined(&url[0], "reaped", false).await;
    let (mut slow_partner, _) = joined(&url[1], "reaped", false).await;
    let (quick_id, slow_id) = (quick.peer_id().to_owned(), slow.peer_id().to_owned());
    let quick_token = quick.resume_token().expect("token").to_owned();
    let slow_token = slow.resume_token().expect("token").to_owned();
    // A peer that was never away is told nothing.
    assert_eq!(quick_partner.membership_kept(), None);
    nodes[0].kill();
    drop((quick, slow));

    // Back at once, on node 2: still a member; the partner saw it move,
    // never leave.
    let (_quick, peers, kept) = resume_and_join(&url[2], &quick_token, "kept").await;
    assert_eq!(kept, Some(true));
    let ids: Vec<&str> = peers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, [quick_partner.peer_id()], "no entry of itself");
    let mut seen = Vec::new();
    next_matching(
        &mut quick_partner,
        STEP,
        &mut seen,
        |m| matches!(m, ServerMsg::PeerJoined { peer, .. } if peer.id == quick_id),
    )
    .await
    .expect("peer-joined for the moved peer");
    assert!(
        !seen.iter().any(|m| matches!(m, ServerMsg::PeerLeft { .. })),
        "{seen:?}"
    );

    // Away longer than the reap time: the partner saw it leave, and a
    // newcomer took its place meanwhile.
    let mut seen = Vec::new();
    next_matching(
        &mut slow_partner,
        STEP,
        &mut seen,
        |m| matches!(m, ServerMsg::PeerLeft { peer_id, .. } if *peer_id == slow_id),
    )
    .await
    .expect("the dead node's member was reaped");
    let (mut newcomer, peers) = joined(&url[1], "reaped", false).await;
    assert_eq!(peers.len(), 1, "{peers:?}");
    let (mut back, peers, kept) = resume_and_join(&url[2], &slow_token, "reaped").await;
    assert_eq!(kept, Some(false));
    assert_eq!(back.peer_id(), slow_id);
    let mut ids: Vec<String> = peers.into_iter().map(|p| p.id).collect();
    ids.sort();
    let mut want = vec![
        slow_partner.peer_id().to_owned(),
        newcomer.peer_id().to_owned(),
    ];
    want.sort();
    assert_eq!(ids, want);
    for c in [&mut slow_partner, &mut newcomer] {
        next_matching(
            c,
            STEP,
            &mut seen,
            |m| matches!(m, ServerMsg::PeerJoined { peer, .. } if peer.id == slow_id),
        )
        .await
        .expect("peer-joined for the returning peer");
    }
    // As a newcomer, it offers; the one that waited answers.
    let to = newcomer.peer_id().to_owned();
    back.send_offer(&to, "v=0\r\n").await.expect("offer");
    let got = next_matching(&mut newcomer, STEP, &mut seen, |m| {
        matches!(m, ServerMsg::Offer { .. })
    })
    .await;
    assert!(
        matches!(&got, Some(ServerMsg::Offer { from, .. }) if *from == slow_id),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hide_hosts_reaches_the_peers_of_other_nodes() {
    let redis = Redis::start(free_port());
    let nodes: Vec<Node> = (0..2)
        .map(|i| Node::start(&redis.url(), &format!("h{i}"), &[]))
        .collect();
    let (mut hider, _) = joined(&nodes[0].url, "hidden", true).await;
    let (mut plain, peers) = joined(&nodes[1].url, "hidden", false).await;
    // In `joined` on the other node: the request and the name.
    assert_eq!(
        peers,
        [PeerInfo {
            id: hider.peer_id().to_owned(),
            name: Some("someone".into()),
            hide_hosts: true,
        }]
    );
    // In `peer-joined` on the other node, both ways.
    let mut seen = Vec::new();
    let got = next_matching(&mut hider, STEP, &mut seen, |m| {
        matches!(m, ServerMsg::PeerJoined { .. })
    })
    .await;
    assert!(
        matches!(&got, Some(ServerMsg::PeerJoined { peer, .. }) if peer.id == plain.peer_id() && !peer.hide_hosts),
        "{got:?}"
    );
    let (other_hider, _) = joined(&nodes[0].url, "hidden", true).await;
    let got = next_matching(&mut plain, STEP, &mut seen, |m| {
        matches!(m, ServerMsg::PeerJoined { .. })
    })
    .await;
    assert!(
        matches!(&got, Some(ServerMsg::PeerJoined { peer, .. }) if peer.id == other_hider.peer_id() && peer.hide_hosts && peer.name.as_deref() == Some("someone")),
        "{got:?}"
    );
}
