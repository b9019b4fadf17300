//! The real `p2p` binary as a child process: start it, read what it says,
//! signal it, stop it. Every wait is bounded.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BOUND: Duration = Duration::from_secs(20);

pub fn p2p() -> Command {
    Command::new(env!("CARGO_BIN_EXE_p2p"))
}

/// `p2p ARGS`, run to its end; one still running after [`BOUND`] (a
/// daemon that should have refused to start) is killed and fails the test.
pub fn run(args: &[&str]) -> Output {
    let mut child = p2p()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("p2p runs");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("p2p {args:?} still runs after {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().expect("stdout thread"),
        stderr: err.join().expect("stderr thread"),
    }
}

/// A running `p2p serve`: its stdout lines as they come, its stderr kept.
pub struct Daemon {
    child: Child,
    lines: Receiver<String>,
    /// Every stdout line so far.
    pub seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// `p2p serve ARGS`; returns once it said where signaling is, or (with
    /// `--no-signaling`) how TURN runs.
    pub fn start(args: &[&str]) -> Daemon {
        let mut child = p2p()
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("p2p runs");
        let out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let keep = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                keep.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut d = Daemon {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        };
        let last = if args.contains(&"--no-signaling") {
            "p2p serve: TURN "
        } else {
            "p2p serve: signaling on "
        };
        d.line(last);
        d
    }

    /// The next stdout line that starts with `prefix` (lines before it are
    /// kept in `seen`).
    pub fn line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "p2p serve never said {prefix:?}; stdout: {:?}; stderr: {}",
                    self.seen,
                    self.stderr()
                ),
            }
        }
    }

    /// The address after `prefix` in a line already seen (the first one).
    pub fn addr(&self, prefix: &str) -> SocketAddr {
        let l = self
            .seen
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in {:?}", self.seen));
        l[prefix.len()..]
            .split([',', ' ', '/'])
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {l:?}"))
    }

    /// The signaling URL, `ws://IP:PORT/ws`.
    pub fn ws_url(&self) -> String {
        let l = self
            .seen
            .iter()
            .find(|l| l.starts_with("p2p serve: signaling on "))
            .expect("signaling line");
        l["p2p serve: signaling on ".len()..]
            .split([',', ' '])
            .next()
            .expect("url")
            .to_owned()
    }

    pub fn udp(&self) -> SocketAddr {
        self.addr("p2p serve: STUN over UDP on ")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal by name (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait until stderr contains `text`.
    pub fn wait_stderr(&self, text: &str) -> String {
        let deadline = Instant::now() + BOUND;
        while Instant::now() < deadline {
            let s = self.stderr();
            if s.contains(text) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("stderr never said {text:?}: {}", self.stderr());
    }
}

/// A directory removed at drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("p2p-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA and a leaf certificate for `localhost` it signed: (CA DER, leaf
/// PEM, key PEM).
pub fn ca_and_leaf() -> (Vec<u8>, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.der().to_vec(), leaf.pem(), key.serialize_pem())
}

/// Whether a TLS handshake with `addr` as `localhost`, trusting only
/// `ca`, succeeds.
pub async fn tls_trusts(addr: SocketAddr, ca: &[u8]) -> bool {
    let config = p2p_connect::tls_client_config([ca.to_vec().into()]).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(
        BOUND,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .is_ok()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A `p2p` child (`connect`, `send`, `receive` with `--json`) whose stderr
/// is read as JSON event lines as they come; killed when dropped.
pub struct JsonProc {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    /// The JSON lines of its stderr, as they come.
    pub events: Receiver<serde_json::Value>,
}

impl Drop for JsonProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl JsonProc {
    /// `p2p ARGS` with its stdin piped, its stdout ignored and its stderr
    /// read as JSON lines.
    pub fn spawn(args: &[&str]) -> JsonProc {
        let mut child = p2p()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("p2p runs");
        let stdin = child.stdin.take();
        let err = child.stderr.take().expect("stderr");
        let (tx, events) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        JsonProc {
            child,
            stdin,
            events,
        }
    }

    /// Events until one satisfies `done` (it included), within `bound`.
    pub fn events_until(
        &self,
        what: &str,
        bound: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let end = Instant::now() + bound;
        let mut seen = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    let stop = done(&v);
                    seen.push(v);
                    if stop {
                        return seen;
                    }
                }
                Err(e) => panic!("no {what}: {e}; saw {seen:#?}"),
            }
        }
    }

    /// The first event named `name`, waiting at most `bound`.
    pub fn wait_event(&self, name: &str, bound: Duration) -> serde_json::Value {
        let mut seen = self.events_until(&format!("{name} event"), bound, |v| v["event"] == name);
        seen.pop().expect("events_until ends on the match")
    }

    /// Writes `line` to its stdin.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write");
        stdin.flush().expect("flush");
    }

    /// The exit status, waiting at most `bound`.
    pub fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let end = Instant::now() + bound;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(Instant::now() < end, "p2p did not exit within {bound:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends it a signal (`-INT`, `-TERM`, `-KILL`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success());
    }
}
