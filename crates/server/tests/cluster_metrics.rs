//! Two nodes of a cluster in one process (as the cluster bench runs them)
//! on a real `redis-server` (loopback): each node's metrics endpoint shows
//! its own cluster counters, not the process's first node's. Every wait is
//! bounded.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use p2p_server::{Config, Server};
use p2p_signaling::{IceCandidate, ServerMsg, SignalingClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(10);

/// `redis-server` on a free loopback port, killed when dropped.
struct Redis(Child, u16);

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (Debian: apt-get install redis-server)")
            });
        let redis = Redis(child, port);
        let until = Instant::now() + STEP;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node `id` of the cluster on `redis`: its signaling URL and metrics
/// address. It runs until the runtime ends.
async fn node(redis: &Redis, id: &str) -> (String, SocketAddr) {
    let toml = format!(
        "[stun]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\n\
         [signaling]\nlisten = \"127.0.0.1:0\"\npage = false\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\
         [cluster]\nredis = \"redis://127.0.0.1:{}/\"\nnode_id = \"{id}\"\n",
        redis.1
    );
    let config = Config::from_toml_str(&toml).expect("config");
    let server = Server::bind(&config).await.expect("bind");
    let sig = server.local_addrs().signaling.expect("signaling");
    let metrics = server.local_addrs().metrics.expect("metrics");
    tokio::spawn(server.run(std::future::pending()));
    (format!("ws://{sig}/ws"), metrics)
}

/// One sample of `series` on the metrics endpoint at `addr`.
/// The series once it shows `want`, or what it shows after a bounded
/// wait (50 reads, 20 ms apart) for the caller's assertion to report.
async fn metric_reaching(addr: SocketAddr, series: &str, want: f64) -> f64 {
    let mut last = metric(addr, series).await;
    for _ in 0..50 {
        if last == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        last = metric(addr, series).await;
    }
    last
}

async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let mut s = timeout(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut text = String::new();
    timeout(STEP, s.read_to_string(&mut text))
        .await
        .expect("answer in time")
        .expect("answer");
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_in_one_process_each_count_their_own_cluster_traffic() {
    let redis = Redis::start();
    let (url_a, metrics_a) = node(&redis, "metrics-a").await;
    let (url_b, metrics_b) = node(&redis, "metrics-b").await;
    let mut rx = timeout(STEP, SignalingClient::connect(&url_a))
        .await
        .expect("in time")
        .expect("connect to a");
    timeout(STEP, rx.join("r", None, None))
        .await
        .expect("in time")
        .expect("join on a");
    let mut tx = timeout(STEP, SignalingClient::connect(&url_b))
        .await
        .expect("in time")
        .expect("connect to b");
    let peers = timeout(STEP, tx.join("r", None, None))
        .await
        .expect("in time")
        .expect("join on b");
    assert_eq!(peers.len(), 1, "b's peer sees a's");
    let to = rx.peer_id().to_owned();
    const SENT: usize = 7;
    for _ in 0..SENT {
        let c = IceCandidate::new("candidate:1 1 udp 1 127.0.0.1 9 typ host");
        tx.send_candidate(&to, c).await.expect("send");
    }
    let mut got = 0;
    while got < SENT {
        match timeout(STEP, rx.recv()).await.expect("in time") {
            Ok(Some(ServerMsg::Candidate { .. })) => got += 1,
            Ok(Some(_)) => {}
            other => panic!("a's peer: {other:?} after {got} candidates"),
        }
    }
    // Every candidate was published by b, none by a: each node shows its
    // own store's counters (they were one process-wide set, the first
    // node's, shown by both).
    let sent = SENT as f64;
    // b counts a message once Redis has answered its PUBLISH, which may
    // be just after a's subscriber has already handed it on.
    assert_eq!(
        metric_reaching(metrics_b, "p2p_cluster_published_total", sent).await,
        sent
    );
    assert_eq!(metric(metrics_a, "p2p_cluster_published_total").await, 0.0);
    assert_eq!(
        metric_reaching(metrics_b, "p2p_cluster_relayed_out_total", sent).await,
        sent
    );
    assert_eq!(
        metric(metrics_a, "p2p_cluster_relayed_in_total").await,
        sent
    );
    // Those ready at once shared PUBLISHes, all b's.
    let publishes_b = metric(metrics_b, "p2p_cluster_publishes_total").await;
    assert!(
        (1.0..=sent).contains(&publishes_b),
        "{publishes_b} publishes"
    );
    assert_eq!(metric(metrics_a, "p2p_cluster_publishes_total").await, 0.0);
}
