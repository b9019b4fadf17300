//! TURN in the daemon, on loopback: an allocation over TCP ends with its
//! connection (RFC 8656 §3.1), the per-allocation bandwidth cap
//! (`max_bps`) drops the excess, and the total allocation quota answers
//! 508 (the per-user quota, 486, is in `turn.rs`). Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::net::UdpSocket;

/// Scrape until `series` reads `want` (bounded by `STEP`).
async fn wait_metric(metrics: SocketAddr, series: &str, want: u64) -> String {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let m = scrape(metrics).await;
        if sample(&m, series) == want {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never reached {want}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn closing_the_tcp_connection_ends_the_allocation_and_frees_its_port() {
    tokio::time::timeout(BOUND, async {
        let srv = start(&OPEN.replace("[turn.users]", "user_quota = 1\n[turn.users]")).await;
        let metrics = srv.metrics.unwrap();
        let (peer, _saw) = echo_peer().await;
        let mut c = Client::tcp(srv.tcp.unwrap(), "alice", "secret").await;
        let relayed = c.allocate().await.expect("allocated");
        c.permit(peer).await.expect("permission");
        c.echo(peer, b"before the close").await;
        assert_eq!(
            sample(
                &scrape(metrics).await,
                "p2p_turn_allocations{transport=\"tcp\"}"
            ),
            1
        );

        drop(c); // closes the connection without a Refresh(0)
        let m = wait_metric(metrics, "p2p_turn_allocations_closed_total", 1).await;
        assert_eq!(sample(&m, "p2p_turn_allocations{transport=\"tcp\"}"), 0);
        assert_eq!(sample(&m, "p2p_turn_allocations_deleted_total"), 0);
        assert_eq!(sample(&m, "p2p_turn_allocations_expired_total"), 0);

        // The relayed port is closed (its socket is dropped once the
        // aborted reader task is gone).
        let mut rebound = false;
        for _ in 0..250 {
            if UdpSocket::bind(relayed).await.is_ok() {
                rebound = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(rebound, "{relayed} is still bound");

        // The user quota of 1 is free again for a new connection.
        let mut again = Client::tcp(srv.tcp.unwrap(), "alice", "secret").await;
        again
            .allocate()
            .await
            .expect("a new allocation after the close");
        srv.stop().await;
    })
    .await
    .expect("in time");
}

/// A UDP peer that counts what it receives and answers nothing.
async fn sink_peer() -> (SocketAddr, tokio::sync::watch::Receiver<usize>) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        let mut b = vec![0u8; 65536];
        let mut n = 0;
        while s.recv_from(&mut b).await.is_ok() {
            n += 1;
            let _ = tx.send(n);
        }
    });
    (addr, rx)
}

/// Twenty 1000-byte datagrams against a cap of 1000 bytes/s, by Send
/// indication or over a channel.
async fn burst_against_the_cap(over_a_channel: bool) {
    tokio::time::timeout(BOUND, async {
        // 1000 bytes/s with the daemon's smallest bucket, 4096 bytes: a
        // burst of twenty 1000-byte datagrams passes four, at most a few
        // more as the bucket refills while the test runs.
        let srv = start(&OPEN.replace("[turn.users]", "max_bps = 1000\n[turn.users]")).await;
        let metrics = srv.metrics.unwrap();
        let (peer, got) = sink_peer().await;
        let mut c = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
        c.allocate().await.expect("allocated");
        c.permit(peer).await.expect("permission");
        if over_a_channel {
            c.bind(peer).await;
        }
        let started = std::time::Instant::now();
        for _ in 0..20 {
            c.turn.send_to(peer, &[0x5a; 1000]).unwrap();
        }
        c.flush().await;
        // Every datagram is either relayed or dropped for bandwidth.
        let deadline = tokio::time::Instant::now() + STEP;
        let (relayed, dropped) = loop {
            let m = scrape(metrics).await;
            let relayed = sample(
                &m,
                "p2p_turn_relayed_packets_to_peer_total{transport=\"udp\"}",
            );
            let dropped = sample(&m, "p2p_turn_dropped_total{reason=\"bandwidth\"}");
            if relayed + dropped == 20 {
                break (relayed, dropped);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{relayed} relayed, {dropped} dropped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // What may have refilled since the burst: 1000 bytes a second.
        let slack = started.elapsed().as_secs() + 1;
        assert!(relayed >= 4, "the 4096-byte burst passes: {relayed}");
        assert!(
            relayed <= 4 + slack,
            "{relayed} relayed in {:?}",
            started.elapsed()
        );
        assert!(dropped >= 16 - slack, "{dropped} dropped");
        // The peer got exactly what was relayed.
        let mut got = got;
        let deadline = tokio::time::Instant::now() + STEP;
        while *got.borrow() < relayed as usize {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the peer got {}",
                *got.borrow()
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), got.changed()).await;
        }
        assert_eq!(*got.borrow(), relayed as usize);
        // A capped allocation's channels stay on the checked path.
        let m = scrape(metrics).await;
        assert_eq!(sample(&m, "p2p_turn_fast_path_packets_total"), 0);
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn max_bps_drops_what_exceeds_the_allocation_bandwidth() {
    burst_against_the_cap(false).await;
}

#[tokio::test]
async fn max_bps_caps_channel_data_too() {
    burst_against_the_cap(true).await;
}

#[tokio::test]
async fn the_total_quota_answers_508() {
    tokio::time::timeout(BOUND, async {
        let srv = start(&OPEN.replace("[turn.users]", "total_quota = 2\n[turn.users]")).await;
        let mut alice = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
        alice.allocate().await.expect("first allocation");
        let mut bob = Client::tcp(srv.tcp.unwrap(), "bob", "hunter2").await;
        bob.allocate().await.expect("second allocation");
        // A third, whoever asks and however: the server is full.
        let mut third = Client::udp(srv.udp, "bob", "hunter2", |_| {}).await;
        assert_eq!(third.allocate().await, Err(Some(508)));
        let mut fourth = Client::tcp(srv.tcp.unwrap(), "alice", "secret").await;
        assert_eq!(fourth.allocate().await, Err(Some(508)));
        // A deleted allocation frees a place.
        alice.close().await;
        let mut fifth = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
        fifth.allocate().await.expect("after one was deleted");
        srv.stop().await;
    })
    .await
    .expect("in time");
}
