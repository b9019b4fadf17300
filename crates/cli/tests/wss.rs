//! `wss://` end to end through the real binary: `p2p serve` with a test
//! certificate (its own for the signaling port) and two p2p-connect peers
//! that trust the test CA meet over TLS and connect; a peer without the CA
//! is refused; two `p2p connect` processes chat over `wss://` with
//! `--tls-ca` or the system's trust store, each line arriving with its
//! sender's `--name`, and one without the CA is told what to trust. Also the one rule for busy ports: a signaling port that is
//! taken stops `p2p serve` with the fix in the message.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use p2p_connect::{Peer, PeerConfig};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const BOUND: Duration = Duration::from_secs(20);

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `p2p serve ARGS` and returns it with the line it printed that
/// starts with `p2p serve: signaling on `.
fn serve(args: &[&str]) -> (Serve, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_p2p"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--signaling", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("p2p runs");
    let out = child.stdout.take().expect("stdout");
    let serve = Serve(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with("p2p serve: signaling on ") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(BOUND)
        .expect("p2p serve announces its signaling port");
    (serve, line)
}

struct Cert {
    ca: Vec<u8>,
    dir: std::path::PathBuf,
}

impl Cert {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().expect("utf-8 path").to_owned()
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cert() -> Cert {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("cert");
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("p2p-wss-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("ca");
    // A CA that signed nothing here, with a name of its own.
    let other_key = rcgen::KeyPair::generate().expect("key");
    let mut other = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    other
        .distinguished_name
        .push(rcgen::DnType::CommonName, "some other CA");
    let other = other.self_signed(&other_key).expect("other ca");
    std::fs::write(dir.join("other-ca.pem"), other.pem()).expect("other ca");
    std::fs::write(dir.join("cert.pem"), leaf.pem()).expect("cert");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("key");
    Cert {
        ca: ca.der().to_vec(),
        dir,
    }
}

fn peer(url: &str, roots: Vec<Vec<u8>>) -> PeerConfig {
    let mut c = PeerConfig::new(url, "wss-room")
        .local_addresses([LOOPBACK])
        .connect_timeout(BOUND)
        .peer_timeout(BOUND);
    c.tls_roots = roots;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_meet_over_wss_through_p2p_serve() {
    let cert = cert();
    let c = cert.dir.join("cert.pem");
    let k = cert.dir.join("key.pem");
    let (_serve, line) = serve(&[
        "--signaling-cert",
        c.to_str().expect("path"),
        "--signaling-key",
        k.to_str().expect("path"),
        "--no-page",
    ]);
    // "p2p serve: signaling on wss://127.0.0.1:PORT/ws (no browser page)"
    let port = line
        .split("wss://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no wss:// URL in {line:?}"));
    assert!(line.ends_with("(no browser page)"), "{line}");
    let url = format!("wss://localhost:{port}/ws");

    // Without the CA: refused with a TLS error, before any room is joined.
    let refused = tokio::time::timeout(
        BOUND,
        Peer::new(peer(&url, Vec::new())).expect("peer").connect(),
    )
    .await
    .expect("in time");
    assert!(refused.is_err(), "a peer without trust roots got through");

    let first = tokio::spawn(
        Peer::new(peer(&url, vec![cert.ca.clone()]))
            .expect("peer")
            .connect(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::time::timeout(
        BOUND,
        Peer::new(peer(&url, vec![cert.ca.clone()]))
            .expect("peer")
            .connect(),
    )
    .await
    .expect("second in time");
    assert!(second.is_ok(), "second peer: {:?}", second.err());
    let first = tokio::time::timeout(BOUND, first)
        .await
        .expect("first in time")
        .expect("task");
    assert!(first.is_ok(), "first peer: {:?}", first.err());
}

/// The `wss://localhost:PORT/ws` URL in `p2p serve`'s signaling line.
fn wss_url(line: &str) -> String {
    let port = line
        .split("wss://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no wss:// URL in {line:?}"));
    format!("wss://localhost:{port}/ws")
}

/// `p2p connect` as `name` in `room` on loopback, `--json`, exiting after
/// one line; `line` is written to its stdin, which then closes.
fn chat(url: &str, room: &str, name: &str, extra: &[&str], line: &str) -> Child {
    chat_env(url, room, name, extra, line, None)
}

/// [`chat`] with `SSL_CERT_FILE` set to `cert_file` (the system trust
/// store it reads instead of the machine's).
fn chat_env(
    url: &str,
    room: &str,
    name: &str,
    extra: &[&str],
    line: &str,
    cert_file: Option<&str>,
) -> Child {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_p2p"));
    if let Some(f) = cert_file {
        cmd.env("SSL_CERT_FILE", f).env_remove("SSL_CERT_DIR");
    }
    let mut child = cmd
        .args([
            "connect",
            "--signaling",
            url,
            "--room",
            room,
            "--name",
            name,
        ])
        .args(["--loopback", "--bind", "127.0.0.1", "--json"])
        .args([
            "--expect-lines",
            "1",
            "--timeout",
            "15",
            "--peer-timeout",
            "20",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("p2p runs");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{line}").expect("stdin");
    drop(stdin);
    child
}

/// Waits (bounded) for `child` to end: (exit code, stdout, stderr).
fn finish(mut child: Child) -> (Option<i32>, String, String) {
    use std::io::Read;
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = std::time::Instant::now() + 2 * BOUND;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("p2p connect still runs after {:?}", 2 * BOUND);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code(),
        out.join().expect("stdout thread"),
        err.join().expect("stderr thread"),
    )
}

/// The `--json` event lines of `stderr` whose `event` is `name`.
fn events(stderr: &str, name: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == name)
        .collect()
}

#[test]
fn p2p_connect_chats_over_wss_with_tls_ca_and_lines_carry_the_senders_name() {
    let cert = cert();
    let (_serve, line) = serve(&[
        "--signaling-cert",
        &cert.path("cert.pem"),
        "--signaling-key",
        &cert.path("key.pem"),
    ]);
    let url = wss_url(&line);

    // A trust store without the test CA: a TLS error that says which
    // option fixes it, before any room is joined.
    let other = cert.path("other-ca.pem");
    let lone = chat_env(&url, "wss-chat", "carol", &[], "unseen", Some(&other));
    let (code, _, err) = finish(lone);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(err.contains("--tls-ca FILE"), "{err}");
    assert!(events(&err, "joined").is_empty(), "{err}");

    // alice trusts the CA with --tls-ca; bob through the system's trust
    // store (SSL_CERT_FILE), the default without --tls-ca, and gives the
    // page's https:// URL, as people copy it from the browser.
    let ca = cert.path("ca.pem");
    let page = url.replace("wss://", "https://").replace("/ws", "/");
    let alice = chat(
        &url,
        "wss-chat",
        "alice",
        &["--tls-ca", &ca],
        "hello from alice",
    );
    std::thread::sleep(Duration::from_millis(200));
    let bob = chat_env(&page, "wss-chat", "bob", &[], "hello from bob", Some(&ca));
    let (a_code, a_out, a_err) = finish(alice);
    let (b_code, b_out, b_err) = finish(bob);
    assert_eq!(a_code, Some(0), "alice: {a_err}");
    assert_eq!(b_code, Some(0), "bob: {b_err}");
    assert_eq!(a_out.trim(), "hello from bob", "alice's stdout");
    assert_eq!(b_out.trim(), "hello from alice", "bob's stdout");
    for (me, other, err) in [("alice", "bob", &a_err), ("bob", "alice", &b_err)] {
        let messages = events(err, "message");
        assert_eq!(messages.len(), 1, "{me}: {err}");
        assert_eq!(messages[0]["from"], other, "{me}: {err}");
        let ready = events(err, "ready");
        assert_eq!(ready.len(), 1, "{me}: {err}");
        assert_eq!(ready[0]["peer_name"], other, "{me}: {err}");
    }
}

#[test]
fn a_busy_signaling_port_stops_p2p_serve_with_the_fix() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_p2p"))
        .args(["serve", "--listen", "127.0.0.1:0", "--signaling", &addr])
        .output()
        .expect("p2p runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot bind signaling"), "{err}");
    assert!(err.contains("--no-signaling"), "{err}");
}
