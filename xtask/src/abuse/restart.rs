//! Issue 18, item 6: the daemon dies (SIGKILL) under a relay-only session
//! and comes back 3.8 s later on the same ports. Both `p2p connect` peers
//! must reconnect to signaling (backoff, resume token), allocate again on
//! the restarted TURN server (ICE restart) and deliver lines again; the
//! figure is how long after the restart the first line arrived.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::daemon::Daemon;
use super::{Ctx, Report};

const SECRET: &str = "abuse-restart-secret";

/// A UDP and a TCP port free on 127.0.0.1 (both the same number, as the
/// daemon's STUN/TURN listens on both), and another TCP port.
fn free_ports() -> Result<(u16, u16), String> {
    for _ in 0..50 {
        let u = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = u.local_addr().map_err(|e| e.to_string())?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let s = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let sig = s.local_addr().map_err(|e| e.to_string())?.port();
        return Ok((port, sig));
    }
    Err("no free port pair".into())
}

/// One `p2p connect` peer; its stdout lines arrive on `lines`, with when.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Client {
    fn start(ctx: &Ctx, name: &str, url: &str) -> Result<Client, String> {
        let log = ctx.work.join(format!("restart-{name}.log"));
        let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Command::new(&ctx.bin)
            .args(["connect", "--signaling", url, "--room", "restart-room"])
            .args([
                "--relay-only",
                "--loopback",
                "--bind",
                "127.0.0.1",
                "--json",
            ])
            .args(["--name", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start p2p connect: {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), line));
            }
        });
        Ok(Client {
            stdin: child.stdin.take(),
            child,
            lines,
        })
    }

    fn send(&mut self, line: &str) -> bool {
        match self.stdin.as_mut() {
            Some(s) => writeln!(s, "{line}").and_then(|()| s.flush()).is_ok(),
            None => false,
        }
    }

    /// Ends stdin and waits (bounded) for the exit status.
    fn finish(mut self, within: Duration) -> Option<bool> {
        self.stdin = None;
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st.success());
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a line on `c` that `pred` accepts; returns when it came.
fn wait_line(c: &Client, within: Duration, pred: impl Fn(&str) -> bool) -> Option<Instant> {
    let until = Instant::now() + within;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match c.lines.recv_timeout(left) {
            Ok((at, l)) if pred(&l) => return Some(at),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

pub(super) fn restart_recovery(ctx: &Ctx) -> Result<Report, String> {
    let gap = Duration::from_millis(3800);
    let (port, sig) = free_ports()?;
    let listen = format!("127.0.0.1:{port}");
    let signaling = format!("127.0.0.1:{sig}");
    let args = [
        "--realm",
        "abuse",
        "--auth-secret",
        SECRET,
        "--allow-peer",
        "127.0.0.0/8",
    ];
    let mut d = Daemon::start_at(ctx, "restart-1", &listen, &signaling, &args)?;
    let url = format!("ws://{signaling}/ws");
    let mut r = Report::new(
        "restart-recovery",
        "p2p connect --relay-only (defaults: reconnect with backoff 250 ms doubling to 4 s, give up after 60 s); the daemon killed with SIGKILL and started again on the same ports 3.8 s later, same --auth-secret",
    );
    let mut alice = Client::start(ctx, "alice", &url)?;
    thread::sleep(Duration::from_millis(300));
    let mut bob = Client::start(ctx, "bob", &url)?;
    // Before: a line gets through.
    let mut delivered_before = false;
    for i in 0..100 {
        alice.send(&format!("before {i}"));
        if wait_line(&bob, Duration::from_millis(200), |l| {
            l.starts_with("before ")
        })
        .is_some()
        {
            delivered_before = true;
            break;
        }
    }
    r.check("a line is delivered before the restart", delivered_before);
    if !delivered_before {
        return Ok(r);
    }
    // The daemon dies at once, and comes back after the gap.
    let _ = d.child.kill();
    let _ = d.child.wait();
    let killed = Instant::now();
    thread::sleep(gap);
    drop(d);
    let d = Daemon::start_at(ctx, "restart-2", &listen, &signaling, &args)?;
    let restarted = Instant::now();
    r.figure(
        "daemon down for",
        format!("{:.1} s", (restarted - killed).as_secs_f64()),
    );
    // Lines keep being typed; the first one delivered after the restart
    // says the session is back (one every 100 ms, for at most 30 s).
    let mut resumed = None;
    for i in 0..300 {
        alice.send(&format!("after {i}"));
        if let Some(at) = wait_line(&bob, Duration::from_millis(100), |l| {
            l.starts_with("after ")
        }) {
            resumed = Some(at);
            break;
        }
    }
    let took = resumed.map(|at| at.saturating_duration_since(restarted));
    r.figure(
        "first line delivered after the restart",
        took.map_or("never (30 s)".to_owned(), |t| {
            format!("{:.2} s", t.as_secs_f64())
        }),
    );
    r.check(
        "the session resumes within 10 s of the restart",
        took.is_some_and(|t| t <= Duration::from_secs(10)),
    );
    // And both ways.
    let mut back = false;
    for i in 0..50 {
        bob.send(&format!("back {i}"));
        if wait_line(&alice, Duration::from_millis(100), |l| {
            l.starts_with("back ")
        })
        .is_some()
        {
            back = true;
            break;
        }
    }
    r.check("lines flow the other way too", back);
    let alice_ok = alice.finish(Duration::from_secs(10));
    let bob_ok = bob.finish(Duration::from_secs(10));
    r.check(
        "both peers exit with status 0 when the chat ends",
        alice_ok == Some(true) && bob_ok == Some(true),
    );
    drop(d);
    Ok(r)
}
