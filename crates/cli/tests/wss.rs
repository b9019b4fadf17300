//! `wss://` end to end through the real binary: `p2p serve` with a test
//! certificate (its own for the signaling port) and two p2p-connect peers
//! that trust the test CA meet over TLS and connect; a peer without the CA
//! is refused. Also the one rule for busy ports: a signaling port that is
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
    let dir = std::env::temp_dir().join(format!("p2p-wss-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
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
