//! A real `redis-server` and `p2p serve` nodes as child processes on
//! loopback, for the cluster tests. Everything is killed when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use p2p_signaling::{ClientError, ServerMsg, SignalingClient};

/// Every step of a test waits at most this long.
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `redis-server` on 127.0.0.1, without persistence.
pub(crate) struct Redis {
    child: Option<Child>,
    pub(crate) port: u16,
}

impl Redis {
    pub(crate) fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (Debian: apt-get install redis-server)")
            });
        let until = Instant::now() + STEP;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < until,
                "redis-server did not listen on {port}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child: Some(child),
            port,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL, and wait for it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `p2p serve` node of the cluster.
pub(crate) struct Node {
    child: Option<Child>,
    pub(crate) id: String,
    pub(crate) url: String,
    pub(crate) metrics: SocketAddr,
    /// Its STUN/TURN UDP address.
    pub(crate) udp: Option<SocketAddr>,
    /// Its STUN/TURN TLS address, when it serves TLS.
    pub(crate) tls: Option<SocketAddr>,
}

impl Node {
    pub(crate) fn start(redis: &str, id: &str, extra: &[&str]) -> Node {
        Node::start_with(Some(redis), id, extra)
    }

    /// A `p2p serve` of its own, in no cluster.
    pub(crate) fn start_alone(extra: &[&str]) -> Node {
        Node::start_with(None, "alone", extra)
    }

    fn start_with(redis: Option<&str>, id: &str, extra: &[&str]) -> Node {
        // A node without signaling prints no signaling URL and takes no
        // signaling flags.
        let no_signaling = extra.contains(&"--no-signaling");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_p2p"));
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).args([
            "--metrics",
            "127.0.0.1:0",
            "--log",
            "warn",
        ]);
        if let Some(redis) = redis {
            cmd.args(["--redis", redis, "--node-id", id]);
        }
        if !no_signaling {
            cmd.args(["--signaling", "127.0.0.1:0", "--no-page"])
                // The tests' clients all come from 127.0.0.1.
                .args(["--signaling-max-per-ip", "5000"]);
        }
        let mut child = cmd
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("p2p serve");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut url, mut metrics, mut udp) = (no_signaling.then(String::new), None, None);
        // The TLS line comes before the metrics line, when TLS is served.
        let mut tls = None;
        let until = Instant::now() + STEP;
        while url.is_none() || metrics.is_none() {
            let left = until.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("node {id} did not start"));
            if let Some(rest) = line.strip_prefix("p2p serve: signaling on ") {
                url = rest.split_whitespace().next().map(str::to_owned);
            }
            if let Some(rest) = line.strip_prefix("p2p serve: STUN over TLS on ") {
                tls = rest.split(',').next().and_then(|a| a.trim().parse().ok());
            }
            if let Some(rest) = line.strip_prefix("p2p serve: STUN over UDP on ") {
                udp = rest.split(',').next().and_then(|a| a.trim().parse().ok());
            }
            if let Some(rest) = line.strip_prefix("p2p serve: metrics on http://") {
                metrics = rest.split('/').next().and_then(|a| a.parse().ok());
            }
        }
        Node {
            child: Some(child),
            id: id.to_owned(),
            url: url.expect("url"),
            metrics: metrics.expect("metrics"),
            udp,
            tls,
        }
    }

    /// SIGKILL: the node dies without a word to Redis.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process still runs.
    pub(crate) fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// One value of the metrics endpoint.
    pub(crate) fn metric(&self, series: &str) -> Option<f64> {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect_timeout(&self.metrics, STEP).ok()?;
        s.set_read_timeout(Some(STEP)).ok()?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits (at most [`STEP`]) until `node`'s `series` satisfies `pred`;
/// returns the last value seen.
pub(crate) fn wait_metric(node: &Node, series: &str, pred: impl Fn(f64) -> bool) -> f64 {
    let until = Instant::now() + STEP;
    loop {
        let v = node.metric(series).unwrap_or(f64::NAN);
        if pred(v) || Instant::now() > until {
            return v;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `redis-cli` against `redis` (it comes with redis-server).
pub(crate) fn redis_cli(redis: &Redis, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Connects and joins `room`; returns the client and the peers there.
pub(crate) async fn join(
    url: &str,
    room: &str,
) -> Result<(SignalingClient, Vec<String>), ClientError> {
    let mut c = tokio::time::timeout(STEP, SignalingClient::connect(url))
        .await
        .map_err(|_| ClientError::Closed)??;
    let peers = tokio::time::timeout(STEP, c.join(room, None, None))
        .await
        .map_err(|_| ClientError::Closed)??;
    Ok((c, peers.into_iter().map(|p| p.id).collect()))
}

/// The next message that `pred` accepts (others are returned in `skipped`).
pub(crate) async fn next_matching(
    c: &mut SignalingClient,
    within: Duration,
    skipped: &mut Vec<ServerMsg>,
    pred: impl Fn(&ServerMsg) -> bool,
) -> Option<ServerMsg> {
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, c.recv()).await {
            Ok(Ok(Some(m))) if pred(&m) => return Some(m),
            Ok(Ok(Some(m))) => skipped.push(m),
            _ => return None,
        }
    }
}

/// A TCP forwarder on a loopback port of its own to `target`, that a test
/// can cut (its port closed, every connection through it dropped: the
/// client sees its server go away and cannot come back) and open again.
pub(crate) struct Gate {
    pub(crate) port: u16,
    target: SocketAddr,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Gate {
    /// A gate to `target`, open.
    pub(crate) async fn open_to(target: SocketAddr) -> Gate {
        let g = Gate {
            port: free_port(),
            target,
            tasks: Default::default(),
        };
        g.open().await;
        g
    }

    /// `ws://` through the gate, for a signaling URL `ws://<target>/...`.
    pub(crate) fn url(&self, through: &str) -> String {
        through.replacen(
            &self.target.to_string(),
            &format!("127.0.0.1:{}", self.port),
            1,
        )
    }

    /// Listens again (the port was closed by [`Gate::cut`]).
    pub(crate) async fn open(&self) {
        let until = Instant::now() + STEP;
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < until, "gate port {}: {e}", self.port);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let (target, tasks) = (self.target, self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let pipe = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                tasks.lock().expect("gate").push(pipe.abort_handle());
            }
        });
        self.tasks.lock().expect("gate").push(accept.abort_handle());
    }

    /// Closes the port and drops every connection through it.
    pub(crate) fn cut(&self) {
        for t in self.tasks.lock().expect("gate").drain(..) {
            t.abort();
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.cut();
    }
}
