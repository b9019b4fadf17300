//! The daemon under attack (`p2p serve` started on ephemeral loopback
//! ports, its RSS and metrics read while it runs) and the clients every
//! attack uses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use super::ws::{field, Ws};
use super::{Ctx, STEP};

/// A `p2p serve` started for one attack; killed when dropped.
pub(super) struct Daemon {
    pub(super) child: Child,
    pub(super) signaling: SocketAddr,
    /// The STUN/TURN port over UDP and TCP.
    pub(super) udp: SocketAddr,
    pub(super) tcp: SocketAddr,
    metrics: SocketAddr,
    /// Where its stderr (the log) goes.
    pub(super) log: std::path::PathBuf,
}

impl Daemon {
    /// `p2p serve` on ephemeral loopback ports with `args`; waits for its
    /// banner to name the signaling and metrics ports.
    pub(super) fn start(ctx: &Ctx, name: &str, args: &[&str]) -> Result<Daemon, String> {
        Daemon::start_logged(ctx, name, "warn", args)
    }

    /// [`Daemon::start`] with the log filter `level`.
    pub(super) fn start_logged(
        ctx: &Ctx,
        name: &str,
        level: &str,
        args: &[&str],
    ) -> Result<Daemon, String> {
        Daemon::launch(ctx, name, "127.0.0.1:0", "127.0.0.1:0", level, args)
    }

    /// [`Daemon::start`] with the STUN/TURN and signaling addresses given
    /// (to restart a daemon where it was).
    pub(super) fn start_at(
        ctx: &Ctx,
        name: &str,
        listen: &str,
        signaling: &str,
        args: &[&str],
    ) -> Result<Daemon, String> {
        Daemon::launch(ctx, name, listen, signaling, "warn", args)
    }

    /// `p2p serve` on `listen` and `signaling` with the log filter `level`.
    fn launch(
        ctx: &Ctx,
        name: &str,
        listen: &str,
        signaling: &str,
        level: &str,
        args: &[&str],
    ) -> Result<Daemon, String> {
        let log = ctx.work.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Command::new(&ctx.bin)
            .args(["serve", "--listen", listen, "--signaling", signaling])
            .args(["--metrics", "127.0.0.1:0", "--log", level])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", ctx.bin.display()))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut signaling, mut metrics, mut udp, mut tcp) = (None, None, None, None);
        let deadline = Instant::now() + Duration::from_secs(15);
        while signaling.is_none() || metrics.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let logged = std::fs::read_to_string(&log).unwrap_or_default();
                    return Err(format!("p2p serve {args:?} did not start:\n{logged}"));
                }
            };
            let addr_after = |marker: &str| {
                line.split(marker)
                    .nth(1)
                    .and_then(|r| r.split('/').next())
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            };
            if line.starts_with("p2p serve: signaling on ") {
                signaling = addr_after("://");
            }
            if line.starts_with("p2p serve: metrics on ") {
                metrics = addr_after("http://");
            }
            if let Some(a) = line.strip_prefix("p2p serve: STUN over UDP on ") {
                udp = a.split(',').next().and_then(|a| a.trim().parse().ok());
            }
            if let Some(a) = line.strip_prefix("p2p serve: STUN over TCP on ") {
                tcp = a.split(',').next().and_then(|a| a.trim().parse().ok());
            }
        }
        Ok(Daemon {
            child,
            signaling: signaling.ok_or("no signaling address")?,
            udp: udp.ok_or("no STUN UDP address")?,
            tcp: tcp.ok_or("no STUN TCP address")?,
            metrics: metrics.ok_or("no metrics address")?,
            log,
        })
    }

    /// Resident memory, bytes.
    pub(super) fn rss(&self) -> u64 {
        rss_of(self.child.id())
    }

    /// One sample of the metrics endpoint.
    pub(super) fn metric(&self, series: &str) -> Option<f64> {
        let text = http_get(self.metrics, "/metrics").ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.parse().ok())
    }

    pub(super) fn metric_or_zero(&self, series: &str) -> u64 {
        self.metric(series).map_or(0, |v| v as u64)
    }

    pub(super) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Samples a process's RSS every 50 ms until dropped; keeps the peak.
pub(super) struct RssPeak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RssPeak {
    pub(super) fn start(pid: u32) -> RssPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_of(pid)));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = thread::spawn(move || {
            while !s.load(Relaxed) {
                p.fetch_max(rss_of(pid), Relaxed);
                thread::sleep(Duration::from_millis(50));
            }
        });
        RssPeak {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    pub(super) fn finish(mut self) -> u64 {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Relaxed)
    }
}

pub(super) fn http_get(to: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&to, STEP)?;
    s.set_read_timeout(Some(STEP))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {to}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

pub(super) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub(super) fn ip(a: u8, b: u8, c: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, a, b, c))
}

// ------------------------------------------------------------- clients

/// A client that got its welcome and joined `room`; returns it and its
/// peer id.
pub(super) fn joined(
    d: &Daemon,
    from: IpAddr,
    rcvbuf: Option<usize>,
    room: &str,
) -> Result<(Ws, String), String> {
    let mut c =
        Ws::connect(d.signaling, from, rcvbuf).map_err(|e| format!("connect from {from}: {e}"))?;
    let welcome = c.wait_for("\"welcome\"", STEP).ok_or("no welcome")?;
    let id = field(&welcome, "peerId")
        .ok_or("welcome without peerId")?
        .to_owned();
    c.send_text(&format!(r#"{{"type":"join","room":"{room}"}}"#))
        .map_err(|e| e.to_string())?;
    c.wait_for("\"joined\"", STEP).ok_or("no joined")?;
    Ok((c, id))
}

/// A legitimate pair from `a` and `b` meets in a room of its own and
/// swaps an offer and an answer; returns how long the exchange took.
pub(super) fn legit_exchange(
    d: &Daemon,
    a: IpAddr,
    b: IpAddr,
    room: &str,
) -> Result<Duration, String> {
    let started = Instant::now();
    let (mut alice, alice_id) = joined(d, a, None, room)?;
    let (mut bob, bob_id) = joined(d, b, None, room)?;
    bob.send_text(&format!(
        r#"{{"type":"offer","to":"{alice_id}","sdp":"v=0\r\n"}}"#
    ))
    .map_err(|e| e.to_string())?;
    alice
        .wait_for("\"offer\"", STEP)
        .ok_or("alice got no offer")?;
    alice
        .send_text(&format!(
            r#"{{"type":"answer","to":"{bob_id}","sdp":"v=0\r\n"}}"#
        ))
        .map_err(|e| e.to_string())?;
    bob.wait_for("\"answer\"", STEP)
        .ok_or("bob got no answer")?;
    Ok(started.elapsed())
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
