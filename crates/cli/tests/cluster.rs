//! Issue 16: three `p2p serve` nodes on one real `redis-server`, on
//! loopback, behave as one signaling service: pairs of peers on different
//! nodes meet and exchange; a node killed with SIGKILL loses only its own
//! sockets (its peers resume on another node and meet again within 5 s);
//! Redis restarted under load crashes no node and misroutes nothing; a
//! burst of messages across nodes arrives whole and in order, and one
//! sender's messages keep their order while others interleave.

mod common_cluster;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common_cluster::{free_port, join, next_matching, Node, Redis, STEP};
use p2p_signaling::{IceCandidate, ServerMsg, SignalingClient};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

fn three_nodes(redis: &Redis) -> Vec<Node> {
    (0..3)
        .map(|i| Node::start(&redis.url(), &format!("n{i}"), &[]))
        .collect()
}

/// `b` offers to `a`, `a` answers; each checks the sender and the room's
/// tag in the SDP.
async fn exchange(
    a: &mut SignalingClient,
    b: &mut SignalingClient,
    tag: &str,
    seen: &mut Vec<ServerMsg>,
) -> Result<(), String> {
    let (a_id, b_id) = (a.peer_id().to_owned(), b.peer_id().to_owned());
    let sdp = format!("v=0\r\ns={tag}\r\n");
    b.send_offer(&a_id, &sdp).await.map_err(|e| e.to_string())?;
    let got = next_matching(a, STEP, seen, |m| matches!(m, ServerMsg::Offer { .. }))
        .await
        .ok_or_else(|| format!("{tag}: no offer"))?;
    match got {
        ServerMsg::Offer { from, sdp: s } if from == b_id && s == sdp => {}
        other => return Err(format!("{tag}: wrong offer {other:?}")),
    }
    a.send_answer(&b_id, &sdp)
        .await
        .map_err(|e| e.to_string())?;
    let got = next_matching(b, STEP, seen, |m| matches!(m, ServerMsg::Answer { .. }))
        .await
        .ok_or_else(|| format!("{tag}: no answer"))?;
    match got {
        ServerMsg::Answer { from, sdp: s } if from == a_id && s == sdp => Ok(()),
        other => Err(format!("{tag}: wrong answer {other:?}")),
    }
}

/// A pair in room `r<i>`: `a` on node `i % 3`, `b` on the next one.
async fn meet(urls: &[String], i: usize) -> Result<(SignalingClient, SignalingClient), String> {
    let room = format!("r{i}");
    let (mut a, _) = join(&urls[i % 3], &room).await.map_err(|e| e.to_string())?;
    let (mut b, peers) = join(&urls[(i + 1) % 3], &room)
        .await
        .map_err(|e| e.to_string())?;
    if peers != [a.peer_id().to_owned()] {
        return Err(format!(
            "{room}: joined listed {peers:?}, not {}",
            a.peer_id()
        ));
    }
    let mut seen = Vec::new();
    exchange(&mut a, &mut b, &room, &mut seen).await?;
    Ok((a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_pairs_meet_and_exchange_across_three_nodes() {
    let redis = Redis::start(free_port());
    let nodes = three_nodes(&redis);
    let urls: Arc<Vec<String>> = Arc::new(nodes.iter().map(|n| n.url.clone()).collect());
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(25));
    let mut tasks = JoinSet::new();
    for i in 0..500 {
        let (urls, gate) = (urls.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("gate");
            meet(&urls, i).await.map(drop)
        });
    }
    let mut failures = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r.expect("task") {
                failures.push(e);
            }
        }
    })
    .await;
    assert!(all.is_ok(), "500 pairs not done in 180 s");
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    eprintln!(
        "500 pairs across 3 nodes in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Every pair spans two nodes: each offer and answer crossed once.
    let relayed: f64 = nodes
        .iter()
        .filter_map(|n| n.metric("p2p_cluster_relayed_out_total"))
        .sum();
    assert_eq!(relayed, 1000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_only_its_sockets_and_its_peers_meet_again_within_5_s() {
    let redis = Redis::start(free_port());
    let mut nodes = three_nodes(&redis);
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let mut pairs = Vec::new();
    for i in 0..30 {
        pairs.push(meet(&urls, i).await.expect("meet"));
    }
    let kill_at = Instant::now();
    nodes[2].kill();
    let mut untouched = 0;
    let mut worst = Duration::ZERO;
    for (i, (a, b)) in pairs.iter_mut().enumerate() {
        let room = format!("r{i}");
        let mut seen = Vec::new();
        // Which member was on the dead node (a on i % 3, b on the next).
        let dead_is_a = i % 3 == 2;
        let dead_is_b = (i + 1) % 3 == 2;
        if !dead_is_a && !dead_is_b {
            exchange(a, b, &room, &mut seen)
                .await
                .expect("untouched pair");
            assert!(
                !seen.iter().any(|m| matches!(m, ServerMsg::PeerLeft { .. })),
                "{room}: {seen:?}"
            );
            untouched += 1;
            continue;
        }
        let (dead, survivor) = if dead_is_a { (a, b) } else { (b, a) };
        let token = dead.resume_token().expect("a resume token").to_owned();
        let id = dead.peer_id().to_owned();
        // The moved peer comes back on node 0 with its token.
        let mut moved = SignalingClient::connect(&urls[0]).await.expect("connect");
        moved.resume(&token).await.expect("resumed");
        assert_eq!(moved.peer_id(), id);
        let peers = moved.join(&room, None, None).await.expect("join");
        assert!(
            peers.iter().any(|p| p.id == survivor.peer_id()),
            "{peers:?}"
        );
        let back = next_matching(
            survivor,
            STEP,
            &mut seen,
            |m| matches!(m, ServerMsg::PeerJoined { peer, .. } if peer.id == id),
        )
        .await;
        assert!(
            back.is_some(),
            "{room}: the survivor never saw {id} again: {seen:?}"
        );
        worst = worst.max(kill_at.elapsed());
        if dead_is_a {
            exchange(&mut moved, survivor, &room, &mut seen).await
        } else {
            exchange(survivor, &mut moved, &room, &mut seen).await
        }
        .expect("they meet again");
        *dead = moved;
    }
    assert_eq!(untouched, 10);
    eprintln!(
        "the last peer of the dead node met again {:.2} s after the kill",
        worst.as_secs_f64()
    );
    assert!(worst < Duration::from_secs(5), "took {worst:?}");
    // The dead node's members that did not come back are reaped: a lone
    // member on node 0 sees its partner on node 2 leave within the expiry.
    let (mut lone, _) = join(&urls[0], "lonely").await.expect("join");
    let (_gone, _) = join(&urls[1], "lonely").await.expect("join");
    let mut seen = Vec::new();
    next_matching(&mut lone, STEP, &mut seen, |m| {
        matches!(m, ServerMsg::PeerJoined { .. })
    })
    .await
    .expect("peer-joined");
    let mut n1 = nodes.remove(1);
    let killed = Instant::now();
    n1.kill();
    next_matching(&mut lone, STEP, &mut seen, |m| {
        matches!(m, ServerMsg::PeerLeft { .. })
    })
    .await
    .expect("the dead node's member left");
    let took = killed.elapsed();
    eprintln!("peer-left {:.2} s after the node died", took.as_secs_f64());
    assert!(took < Duration::from_secs(5), "peer-left after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_under_load_crashes_no_node_and_misroutes_nothing() {
    let port = free_port();
    let mut redis = Redis::start(port);
    let mut nodes = three_nodes(&redis);
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let misrouted = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let restart_at = Duration::from_secs(2);
    let back_at = Duration::from_secs(3);
    let end_at = Duration::from_secs(9);
    let mut tasks = JoinSet::new();
    for i in 0..30 {
        let (a, b) = meet(&urls, i).await.expect("meet");
        let (misrouted, received) = (misrouted.clone(), received.clone());
        tasks.spawn(async move {
            let (mut a, mut b) = (a, b);
            let a_id = a.peer_id().to_owned();
            let b_id = b.peer_id().to_owned();
            let mut after_restart = 0u64;
            let mut seq = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while start.elapsed() < end_at {
                tokio::select! {
                    _ = tick.tick() => {
                        seq += 1;
                        let mut c = IceCandidate::new("candidate:1 1 udp 1 127.0.0.1 9 typ host");
                        c.username_fragment = Some(format!("r{i}-{seq}"));
                        let _ = b.send_candidate(&a_id, c).await;
                    }
                    m = a.recv() => match m {
                        Ok(Some(ServerMsg::Candidate { from, candidate })) => {
                            let tag = candidate.username_fragment.unwrap_or_default();
                            if from != b_id || !tag.starts_with(&format!("r{i}-")) {
                                misrouted.fetch_add(1, Relaxed);
                            }
                            received.fetch_add(1, Relaxed);
                            if start.elapsed() > back_at + Duration::from_secs(3) {
                                after_restart += 1;
                            }
                        }
                        Ok(Some(_)) => {}
                        _ => break,
                    },
                }
            }
            after_restart
        });
    }
    tokio::time::sleep(restart_at.saturating_sub(start.elapsed())).await;
    redis.kill();
    tokio::time::sleep(back_at.saturating_sub(start.elapsed())).await;
    let redis = Redis::start(port);
    let mut resumed = 0;
    while let Some(r) = tasks.join_next().await {
        if r.expect("task") > 0 {
            resumed += 1;
        }
    }
    for n in &mut nodes {
        assert!(n.alive(), "node {} died", n.id);
    }
    assert_eq!(misrouted.load(Relaxed), 0);
    assert!(received.load(Relaxed) > 0);
    eprintln!("{resumed} of 30 cross-node pairs delivered again after Redis came back");
    assert_eq!(resumed, 30);
    // New pairs meet across nodes after the restart.
    for i in 100..103 {
        meet(&urls, i).await.expect("a new pair after the restart");
    }
    drop(redis);
}

/// Nodes whose clients may send back to back (the default rate limit,
/// 20/s with bursts of 50, would hold the senders back).
fn fast_nodes(redis: &Redis, n: usize) -> Vec<Node> {
    let fast = ["--signaling-rate", "100000", "--signaling-burst", "100000"];
    (0..n)
        .map(|i| Node::start(&redis.url(), &format!("n{i}"), &fast))
        .collect()
}

/// About 7 KB of JSON: a hundred fit the receiver's queue (1 MiB) at once.
fn burst_sdp(i: usize) -> String {
    format!("v=0\r\ns=burst-{i}\r\n{}", "a=x\r\n".repeat(1000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_100_cross_node_offers_reaches_a_reading_receiver_whole_and_in_order() {
    let redis = Redis::start(free_port());
    let nodes = fast_nodes(&redis, 2);
    let (mut rx, _) = join(&nodes[0].url, "burst").await.expect("join");
    let (mut tx, peers) = join(&nodes[1].url, "burst").await.expect("join");
    assert_eq!(peers, [rx.peer_id().to_owned()]);
    let to = rx.peer_id().to_owned();
    // Sent back to back: the sender's node pipelines them to Redis, the
    // receiver's node gets them from one read and hands them over at once.
    let sender = tokio::spawn(async move {
        for i in 0..100 {
            tx.send_offer(&to, &burst_sdp(i)).await.expect("send");
        }
        tx
    });
    let mut i = 0;
    while i < 100 {
        match tokio::time::timeout(STEP, rx.recv()).await {
            Ok(Ok(Some(ServerMsg::Offer { sdp, .. }))) => {
                assert!(
                    sdp == burst_sdp(i),
                    "offer {i} out of order or cut: {:?} ({} bytes)",
                    sdp.lines().nth(1),
                    sdp.len()
                );
                i += 1;
            }
            Ok(Ok(Some(ServerMsg::PeerJoined { .. }))) => {}
            other => panic!("offer {i}: {other:?}"),
        }
    }
    let _tx = sender.await.expect("sender");
    let slow = nodes[0].metric("p2p_signaling_websockets_closed_total{reason=\"slow_reader\"}");
    assert_eq!(slow, Some(0.0));
    assert_eq!(
        nodes[1].metric("p2p_cluster_relayed_out_total"),
        Some(100.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_senders_messages_cross_nodes_in_send_order_while_other_senders_interleave() {
    let redis = Redis::start(free_port());
    let nodes = fast_nodes(&redis, 3);
    // The receiver on n0; the sender under test on n1; others on n1 (its
    // node), n2 (a third node) and n0 (the receiver's own).
    let (mut rx, _) = join(&nodes[0].url, "order").await.expect("join");
    let to = rx.peer_id().to_owned();
    let mut senders = Vec::new();
    for node in [1, 1, 2, 0] {
        let (c, _) = join(&nodes[node].url, "order").await.expect("join");
        senders.push(c);
    }
    let ids: Vec<String> = senders.iter().map(|c| c.peer_id().to_owned()).collect();
    const EACH: u64 = 200;
    let mut tasks = JoinSet::new();
    for mut c in senders {
        let to = to.clone();
        tasks.spawn(async move {
            // Paced (500 messages/s each), so that the senders' messages
            // mix and the receiver is not a slow reader.
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            for seq in 0..EACH {
                tick.tick().await;
                let mut cand = IceCandidate::new("candidate:1 1 udp 1 127.0.0.1 9 typ host");
                cand.username_fragment = Some(seq.to_string());
                c.send_candidate(&to, cand).await.expect("send");
            }
            c
        });
    }
    let mut next = vec![0u64; ids.len()];
    let (mut last, mut switches) = (None, 0);
    let total = EACH * ids.len() as u64;
    let mut got = 0;
    while got < total {
        let m = tokio::time::timeout(STEP, rx.recv()).await;
        let Ok(Ok(Some(m))) = m else {
            panic!("after {got} of {total}: {m:?} (expected next {next:?})");
        };
        let ServerMsg::Candidate { from, candidate } = m else {
            continue;
        };
        let k = ids.iter().position(|i| *i == from).expect("a known sender");
        let seq: u64 = candidate
            .username_fragment
            .and_then(|u| u.parse().ok())
            .expect("numbered");
        assert_eq!(
            seq, next[k],
            "sender {k} ({from}): {seq} came when {} was due",
            next[k]
        );
        next[k] += 1;
        got += 1;
        if last.is_some_and(|l| l != k) {
            switches += 1;
        }
        last = Some(k);
    }
    while tasks.join_next().await.is_some() {}
    // The senders really interleaved at the receiver.
    assert!(switches >= 50, "only {switches} switches between senders");
    // Three of the four senders crossed nodes: one PUBLISH per message.
    let relayed: f64 = nodes
        .iter()
        .filter_map(|n| n.metric("p2p_cluster_relayed_out_total"))
        .sum();
    assert_eq!(relayed, (3 * EACH) as f64);
}

/// `p2p serve` with `args`: its exit status and stderr (killed after 20 s).
fn serve_fails(args: &[&str]) -> (bool, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_p2p"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--signaling",
            "127.0.0.1:0",
        ])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("p2p serve");
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    (status.is_some_and(|s| !s.success()), err)
}

#[test]
fn a_wrong_or_unreachable_redis_url_stops_serve_at_start_with_the_reason() {
    let (failed, err) = serve_fails(&["--redis", "http://127.0.0.1:6379"]);
    assert!(failed, "a non-redis URL must stop p2p serve: {err}");
    assert!(err.contains("redis://HOST:PORT"), "{err}");
    let (failed, err) = serve_fails(&["--redis", "redis://127.0.0.1:notaport/"]);
    assert!(failed, "a malformed URL must stop p2p serve: {err}");
    assert!(err.contains("cluster"), "{err}");
    // Nothing listens on this port: refused at once, or no answer in 3 s.
    let port = free_port();
    let started = Instant::now();
    let (failed, err) = serve_fails(&["--redis", &format!("redis://127.0.0.1:{port}/")]);
    assert!(failed, "an unreachable Redis must stop p2p serve: {err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
