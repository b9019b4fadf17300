//! A real peer: OpenSSL's `s_server -dtls1_2` and `s_client -dtls1_2` over
//! loopback UDP, each with its own ECDSA P-256 certificate made by
//! `openssl req`, checked against its fingerprint as `openssl x509
//! -fingerprint` prints it.
//!
//! Without an `openssl` command these tests say so and pass, except under
//! CI (`CI=true`), where a missing `openssl` is a failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use p2p_dtls::{
    Certificate, CloseReason, DtlsConfig, DtlsEndpoint, DtlsEvent, DtlsOutput, DtlsRole,
    DtlsVersion, Fingerprint,
};
use p2p_proto::{Datagram, FiveTuple, Machine, Transport};

/// Whether `openssl` runs; under CI its absence fails the test.
fn have_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no `openssl` command: install the openssl package"
        );
        eprintln!("skipped: no `openssl` command on this machine");
    }
    ok
}

/// A scratch directory of this test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p2p-dtls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An ECDSA P-256 certificate and key made by `openssl req`, and its
/// fingerprint as `openssl x509 -fingerprint -sha256` prints it.
fn openssl_certificate(dir: &Path) -> (PathBuf, PathBuf, Fingerprint) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args([
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=openssl",
            "-days",
            "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    // "sha256 Fingerprint=AB:CD:…"
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.trim().rsplit('=').next().unwrap();
    let fingerprint = Fingerprint::parse(&format!("sha-256 {hex}")).unwrap();
    (cert, key, fingerprint)
}

/// A free loopback UDP port (closed again; OpenSSL binds it next).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Lines of a child's stdout as they come.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Kills the child when dropped (on a failed assertion too).
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Drives `ep` on `sock` in real time until `done` says so or `limit`
/// passes. With no path remote yet (a server), the first datagram's
/// source becomes it.
fn drive(
    ep: &mut DtlsEndpoint,
    sock: &UdpSocket,
    events: &mut Vec<DtlsEvent>,
    limit: Duration,
    mut done: impl FnMut(&DtlsEndpoint, &[DtlsEvent]) -> bool,
) {
    let end = Instant::now() + limit;
    let local = sock.local_addr().unwrap();
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        while let Some(o) = ep.poll_output() {
            match o {
                DtlsOutput::Transmit(t) => {
                    if std::env::var("DEBUG_DTLS").is_ok() {
                        eprintln!("SEND {:?}", &t.contents[..t.contents.len().min(16)]);
                    }
                    sock.send_to(&t.contents, t.destination).unwrap();
                }
                DtlsOutput::Event(e) => events.push(e),
                other => panic!("unexpected {other:?}"),
            }
        }
        if done(ep, events) {
            return;
        }
        let now = Instant::now();
        let wait = ep
            .poll_timeout()
            .map_or(Duration::from_millis(50), |t| {
                t.saturating_duration_since(now)
            })
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        sock.set_read_timeout(Some(wait)).unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            if std::env::var("DEBUG_DTLS").is_ok() {
                eprintln!("RECV {:?}", &buf[..n.min(16)]);
            }
            if ep.path().remote.port() == 0 {
                ep.set_path(FiveTuple::new(Transport::Udp, local, from));
            }
            let _ = ep.handle_input(Instant::now(), Datagram::udp(from, local, &buf[..n]));
        }
        if ep.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            ep.handle_timeout(Instant::now());
        }
    }
}

fn data(events: &[DtlsEvent]) -> Vec<u8> {
    events
        .iter()
        .flat_map(|e| match e {
            DtlsEvent::Data(d) => d.clone(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn our_client_talks_to_openssl_s_server_and_checks_its_fingerprint() {
    if !have_openssl() {
        return;
    }
    let dir = scratch("client");
    let (cert, key, openssl_fp) = openssl_certificate(&dir);
    // Our loader reads OpenSSL's PEM and agrees on the fingerprint.
    let loaded = Certificate::from_pem(
        &std::fs::read_to_string(&cert).unwrap(),
        &std::fs::read_to_string(&key).unwrap(),
    )
    .unwrap();
    assert_eq!(loaded.fingerprint(), openssl_fp);

    for (right, what) in [(true, "right fingerprint"), (false, "wrong fingerprint")] {
        let port = free_port();
        let mut server = Command::new("openssl")
            .args(["s_server", "-dtls1_2", "-naccept", "1", "-verify", "1"])
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = lines(&mut server);
        let mut server = Reaper(server);
        // Wait for it to listen.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            match out.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.contains("ACCEPT") => break,
                _ => {}
            }
        }

        let ours = Certificate::generate().unwrap();
        let expected = if right {
            openssl_fp.clone()
        } else {
            Certificate::generate().unwrap().fingerprint()
        };
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let path = FiveTuple::new(
            Transport::Udp,
            sock.local_addr().unwrap(),
            SocketAddr::from(([127, 0, 0, 1], port)),
        );
        let config = DtlsConfig::new(ours, DtlsRole::Client, vec![expected]);
        // The default: a ClientHello for DTLS 1.2 and 1.3, which OpenSSL
        // 3.0 (DTLS 1.2 only) must read as 1.2.
        assert!(config.dtls13);
        let mut ep = DtlsEndpoint::new(config, path).unwrap();
        ep.handle_timeout(Instant::now());
        let mut events = Vec::new();
        drive(
            &mut ep,
            &sock,
            &mut events,
            Duration::from_secs(10),
            |ep, _| ep.is_connected() || ep.is_closed(),
        );
        if !right {
            assert!(
                matches!(events[..], [DtlsEvent::Closed(CloseReason::FingerprintMismatch { ref peer })] if *peer == openssl_fp),
                "{what}: {events:?}"
            );
            // OpenSSL read our bad_certificate alert (and, with -naccept 1,
            // exits).
            let mut err = String::new();
            let waited = Instant::now();
            while server.0.try_wait().unwrap().is_none()
                && waited.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = server.0.kill();
            server
                .0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert!(
                err.contains("alert bad certificate") || err.contains("number 42"),
                "{err}"
            );
            continue;
        }
        if !ep.is_connected() {
            let _ = server.0.kill();
            let mut err = String::new();
            server
                .0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            let rest: Vec<String> = out.try_iter().collect();
            panic!(
                "{what}: {events:?} {:?}\n{err}\n{rest:?}",
                ep.close_detail()
            );
        }
        assert_eq!(ep.version(), Some(DtlsVersion::Dtls12));
        assert_eq!(ep.peer_certificate(), Some(loaded.der()));
        // s_server prints what it reads and sends its stdin.
        ep.send(Instant::now(), b"hello openssl\n").unwrap();
        drive(
            &mut ep,
            &sock,
            &mut events,
            Duration::from_millis(100),
            |_, _| false,
        );
        let got = (0..100)
            .map_while(|_| out.recv_timeout(Duration::from_secs(5)).ok())
            .find(|l| l.contains("hello openssl"));
        assert_eq!(got.as_deref(), Some("hello openssl"), "{what}");
        let mut stdin = server.0.stdin.take().unwrap();
        stdin.write_all(b"hello p2p-dtls\n").unwrap();
        stdin.flush().unwrap();
        drive(
            &mut ep,
            &sock,
            &mut events,
            Duration::from_secs(10),
            |_, ev| data(ev).ends_with(b"\n"),
        );
        assert_eq!(data(&events), b"hello p2p-dtls\n", "{what}: {events:?}");
        ep.close(Instant::now());
        drive(
            &mut ep,
            &sock,
            &mut events,
            Duration::from_secs(1),
            |_, _| false,
        );
        assert!(matches!(
            events.last(),
            Some(DtlsEvent::Closed(CloseReason::LocalClose))
        ));
        // s_server saw our close_notify: it ends the connection and, with
        // -naccept 1, exits.
        let closed = (0..100)
            .map_while(|_| out.recv_timeout(Duration::from_secs(5)).ok())
            .any(|l| l.contains("CONNECTION CLOSED") || l.contains("DONE"));
        assert!(closed, "{what}: s_server did not see the close");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// s_client against our server; `signaled` is what our server was told
/// of s_client's certificate. The running child and our endpoint.
fn s_client_to_our_server(
    cert: &Path,
    key: &Path,
    signaled: Fingerprint,
) -> (
    Reaper,
    mpsc::Receiver<String>,
    DtlsEndpoint,
    UdpSocket,
    Vec<DtlsEvent>,
) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    let mut client = Command::new("openssl")
        .args(["s_client", "-dtls1_2", "-quiet", "-no_ign_eof"])
        .args(["-connect", &local.to_string()])
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(&mut client);
    let client = Reaper(client);
    // The remote port is learned from the ClientHello.
    let path = FiveTuple::new(Transport::Udp, local, SocketAddr::from(([127, 0, 0, 1], 0)));
    let config = DtlsConfig::new(
        Certificate::generate().unwrap(),
        DtlsRole::Server,
        vec![signaled],
    );
    let mut ep = DtlsEndpoint::new(config, path).unwrap();
    ep.handle_timeout(Instant::now());
    let mut events = Vec::new();
    drive(
        &mut ep,
        &sock,
        &mut events,
        Duration::from_secs(10),
        |ep, _| ep.is_connected() || ep.is_closed(),
    );
    (client, out, ep, sock, events)
}

#[test]
fn our_server_refuses_an_openssl_client_with_another_fingerprint() {
    if !have_openssl() {
        return;
    }
    let dir = scratch("refuse");
    let (cert, key, openssl_fp) = openssl_certificate(&dir);
    let other = Certificate::generate().unwrap().fingerprint();
    let (mut client, _out, ep, _sock, events) = s_client_to_our_server(&cert, &key, other);
    assert_eq!(
        events,
        vec![DtlsEvent::Closed(CloseReason::FingerprintMismatch {
            peer: openssl_fp
        })]
    );
    assert!(!ep.is_connected());
    // s_client read our bad_certificate alert and gave up.
    let waited = Instant::now();
    while client.0.try_wait().unwrap().is_none() && waited.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = client.0.kill();
    let mut err = String::new();
    client
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("alert bad certificate") || err.contains("number 42"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn openssl_s_client_talks_to_our_server_and_is_checked_against_its_fingerprint() {
    if !have_openssl() {
        return;
    }
    let dir = scratch("server");
    let (cert, key, openssl_fp) = openssl_certificate(&dir);
    let (mut client, out, mut ep, sock, mut events) =
        s_client_to_our_server(&cert, &key, openssl_fp.clone());
    assert!(ep.is_connected(), "{events:?} {:?}", ep.close_detail());
    assert!(
        matches!(&events[0], DtlsEvent::Connected { remote_fingerprint, .. } if *remote_fingerprint == openssl_fp)
    );

    // s_client sends its stdin; it prints what we send.
    let mut stdin = client.0.stdin.take().unwrap();
    stdin.write_all(b"hello from openssl\n").unwrap();
    stdin.flush().unwrap();
    drive(
        &mut ep,
        &sock,
        &mut events,
        Duration::from_secs(10),
        |_, ev| data(ev).ends_with(b"\n"),
    );
    assert_eq!(data(&events), b"hello from openssl\n");
    ep.send(Instant::now(), b"hello from p2p-dtls\n").unwrap();
    drive(
        &mut ep,
        &sock,
        &mut events,
        Duration::from_millis(100),
        |_, _| false,
    );
    let line = out.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(line, "hello from p2p-dtls");
    // Closing s_client's stdin makes it send close_notify.
    drop(stdin);
    drive(
        &mut ep,
        &sock,
        &mut events,
        Duration::from_secs(5),
        |ep, _| ep.is_closed(),
    );
    assert_eq!(
        ep.close_reason(),
        Some(&CloseReason::PeerClosed),
        "{events:?}"
    );
    drop(client);
    let _ = std::fs::remove_dir_all(dir);
}
