//! The server and the client on loopback: Binding over UDP, TCP and TLS,
//! RFC 5780 discovery against 127.0.0.1 + 127.0.0.2 (no NAT on loopback),
//! malformed datagrams counted, shutdown. Every step is bounded in time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use p2p_cli::client::{probe_timers, tcp_binding, tls_binding, udp_binding};
use p2p_cli::natdisc::{discover, Behaviour};
use p2p_server::{Config, Server};
use tokio::net::UdpSocket;

const BOUND: Duration = Duration::from_secs(20);

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("p2p-loopback-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_over_udp_tcp_tls_and_nat_type_on_loopback() {
    let dir = TempDir::new();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.0.join("cert.pem");
    let key = dir.0.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();

    let config = Config::from_toml_str(&format!(
        r#"
        [stun]
        listen = ["127.0.0.1:0"]
        alt_listen = "127.0.0.2:0"
        software = "loopback test"
        workers = 2
        [tls]
        listen = ["127.0.0.1:0"]
        cert = "{}"
        key = "{}"
        "#,
        cert.display(),
        key.display()
    ))
    .unwrap();
    let server = Server::bind(&config).await.unwrap();
    let addrs = server.local_addrs().clone();
    let counters = server.counters();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let primary = addrs.udp[0];
    let alternate = addrs.alternate.unwrap();
    assert_eq!(addrs.udp.len(), 4);
    assert_eq!(alternate.ip().to_string(), "127.0.0.2");
    assert_eq!(addrs.tcp[0], primary, "TCP on the UDP port");

    tokio::time::timeout(BOUND, async {
        // UDP.
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = sock.local_addr().unwrap();
        let r = udp_binding(&sock, primary, None, probe_timers())
            .await
            .unwrap()
            .expect("answered");
        assert_eq!(r.mapped, Some(local));
        assert_eq!(r.software.as_deref(), Some("loopback test"));
        assert_eq!(r.other, Some(alternate));
        assert_eq!(r.origin, Some(primary));

        // TCP.
        let r = tcp_binding(primary, probe_timers()).await.unwrap();
        assert_eq!(r.mapped.map(|m| m.ip()), Some(local.ip()));
        assert_eq!(r.error, None);

        // TLS.
        let pem = ck.cert.pem();
        let r = tls_binding(addrs.tls[0], "localhost", pem.as_bytes(), probe_timers())
            .await
            .unwrap();
        assert_eq!(r.mapped.map(|m| m.ip()), Some(local.ip()));
        assert_eq!(r.software.as_deref(), Some("loopback test"));

        // Malformed datagrams are dropped and counted; the server goes on.
        let before = counters.snapshot().malformed;
        for junk in [&b"hello"[..], &[0u8; 20][..3], &[0xff; 64][..]] {
            sock.send_to(junk, primary).await.unwrap();
        }
        let r = udp_binding(&sock, primary, None, probe_timers())
            .await
            .unwrap();
        assert!(r.is_some(), "still answering after junk");
        // The junk was sent first on the same path; give the workers a moment.
        for _ in 0..50 {
            if counters.snapshot().malformed >= before + 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(counters.snapshot().malformed, before + 3);

        // RFC 5780 discovery: no NAT on loopback.
        let report = discover(primary, None, probe_timers()).await.unwrap();
        assert!(!report.nat, "{report:?}");
        assert_eq!(report.mapping, Behaviour::EndpointIndependent);
        assert_eq!(report.filtering, Behaviour::EndpointIndependent);
        assert!(report.port_preserved);
        assert!(report.hairpinning);
        assert_eq!(report.other_address, alternate);
    })
    .await
    .expect("loopback test finished in time");

    stop.send(()).unwrap();
    let stats = tokio::time::timeout(BOUND, running).await.unwrap().unwrap();
    assert!(stats.answered >= 8, "{stats}");
    assert_eq!(stats.tcp_connections, 2);
}

#[tokio::test]
async fn nat_type_names_a_server_without_rfc5780() {
    let server = Server::bind(
        &Config::from_toml_str("[stun]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\ntcp = false")
            .unwrap(),
    )
    .await
    .unwrap();
    let primary: SocketAddr = server.local_addrs().udp[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let err = tokio::time::timeout(BOUND, discover(primary, None, probe_timers()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("OTHER-ADDRESS"), "{err}");
    stop.send(()).unwrap();
    let _ = tokio::time::timeout(BOUND, running).await.unwrap();
}
