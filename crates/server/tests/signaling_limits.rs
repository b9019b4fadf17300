//! The daemon's signaling port under its limits, on loopback with bounded
//! waits: per-address limits answered with 503 while another address gets
//! in, a request head sent too slowly closed at the deadline, TURN
//! credentials rate limited per address, a static TURN user shared only when
//! named, room-token guessing held per address, `https://` and `wss://`
//! with a test certificate, and the signaling and process families on the
//! metrics endpoint.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use p2p_server::{Config, Server};
use p2p_signaling::{ClientMsg, RelayUnavailable, ServerMsg, SignalingClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

const STEP: Duration = Duration::from_secs(5);

struct Running {
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start(toml: &str) -> Running {
    let config = Config::from_toml_str(&format!(
        "[stun]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\n{toml}"
    ))
    .expect("config");
    let server = Server::bind(&config).await.expect("bind");
    let addr = server.local_addrs().signaling.expect("signaling bound");
    let metrics = server.local_addrs().metrics;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Running {
        addr,
        metrics,
        stop,
        task,
    }
}

impl Running {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        timeout(Duration::from_secs(15), self.task)
            .await
            .expect("server stops in time")
            .expect("server task");
    }
}

/// A TCP connection to `to` from `from` (any address of 127/8).
async fn tcp_from(from: &str, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::new(from.parse::<IpAddr>().expect("ip"), 0))
        .expect("bind");
    timeout(STEP, sock.connect(to))
        .await
        .expect("connect in time")
        .expect("connect")
}

async fn get(mut s: TcpStream, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    timeout(STEP, s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

async fn scrape(addr: SocketAddr) -> String {
    let s = timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("in time")
        .expect("connect");
    get(s, "/metrics").await
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
}

async fn ws_from(from: &str, to: SocketAddr) -> SignalingClient {
    let tcp = tcp_from(from, to).await;
    let (ws, _) = timeout(
        STEP,
        tokio_tungstenite::client_async(format!("ws://{to}/ws"), tcp),
    )
    .await
    .expect("in time")
    .expect("handshake");
    // Wrap the raw WebSocket in the protocol client.
    timeout(STEP, SignalingClient::new(Box::new(Raw(ws))))
        .await
        .expect("welcome in time")
        .expect("welcome")
}

/// A `SignalingTransport` over a WebSocket made by the test (to choose the
/// local address).
struct Raw(tokio_tungstenite::WebSocketStream<TcpStream>);

#[async_trait::async_trait]
impl p2p_signaling::SignalingTransport for Raw {
    async fn send(&mut self, msg: ClientMsg) -> Result<(), p2p_signaling::TransportError> {
        use futures_util::SinkExt;
        self.0
            .send(tokio_tungstenite::tungstenite::Message::text(msg.to_json()))
            .await
            .map_err(|_| p2p_signaling::TransportError::Closed)
    }

    async fn recv(&mut self) -> Result<Option<ServerMsg>, p2p_signaling::TransportError> {
        use futures_util::StreamExt;
        loop {
            match self.0.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                    return ServerMsg::from_json(t.as_str())
                        .map(Some)
                        .map_err(p2p_signaling::TransportError::InvalidMessage)
                }
                Some(Ok(_)) => continue,
                _ => return Ok(None),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_503_past_its_limit_while_another_is_served() {
    let server = start(
        "[signaling]\nlisten = \"127.0.0.1:0\"\nmax_connections_per_ip = 2\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    )
    .await;
    let held = [
        tcp_from("127.0.0.1", server.addr).await,
        tcp_from("127.0.0.1", server.addr).await,
    ];
    // The refused connection is answered and closed at once, before its
    // request is read: a client that has not written yet reads the 503
    // (one that has may see a reset instead, its request unread).
    let mut third = tcp_from("127.0.0.1", server.addr).await;
    let mut answer = Vec::new();
    timeout(STEP, third.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("too many connections from your address"));
    let other = tcp_from("127.0.0.2", server.addr).await;
    let page = get(other, "/").await;
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    let m = scrape(server.metrics.expect("metrics")).await;
    assert_eq!(
        sample(
            &m,
            "p2p_signaling_connections_refused_total{reason=\"per_ip\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(sample(&m, "p2p_signaling_connections"), Some(2.0), "{m}");
    drop(held);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_sent_too_slowly_is_closed_at_the_deadline() {
    let server = start("[signaling]\nlisten = \"127.0.0.1:0\"\nhandshake_timeout_secs = 1\n").await;
    let mut s = tcp_from("127.0.0.1", server.addr).await;
    s.write_all(b"GET / HT").await.expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = timeout(STEP, s.read(&mut buf))
        .await
        .expect("closed within the step")
        .unwrap_or(0);
    assert_eq!(n, 0, "no answer to half a head");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "{after:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_credentials_are_rate_limited_per_address() {
    let server = start(
        "[turn]\nrealm = \"r\"\nauth_secret = \"s\"\n[signaling]\nlisten = \"127.0.0.1:0\"\ncredential_burst = 2\ncredentials_per_minute = 1\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    )
    .await;
    let mut got = Vec::new();
    for i in 0..4 {
        let mut c = ws_from("127.0.0.1", server.addr).await;
        timeout(STEP, c.join(&format!("r{i}"), None, None))
            .await
            .expect("in time")
            .expect("join");
        let has = c.ice_servers().iter().any(|s| s.credential.is_some());
        got.push((has, c.relay_unavailable()));
    }
    assert_eq!(
        got,
        [
            (true, None),
            (true, None),
            (false, Some(RelayUnavailable::RateLimited)),
            (false, Some(RelayUnavailable::RateLimited)),
        ]
    );
    // Another address has its own allowance.
    let mut c = ws_from("127.0.0.2", server.addr).await;
    timeout(STEP, c.join("other", None, None))
        .await
        .expect("in time")
        .expect("join");
    assert!(c.ice_servers().iter().any(|s| s.credential.is_some()));
    let m = scrape(server.metrics.expect("metrics")).await;
    assert_eq!(
        sample(&m, "p2p_signaling_turn_credentials_issued_total"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "p2p_signaling_turn_credentials_withheld_total{reason=\"rate_limited\"}"
        ),
        Some(2.0),
        "{m}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_token_guessing_is_held_per_address_even_for_the_right_token() {
    let server = start(
        "[signaling]\nlisten = \"127.0.0.1:0\"\n[signaling.room_tokens]\nvip = \"gold\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    )
    .await;
    let code_of = |r: Result<Vec<p2p_signaling::PeerInfo>, p2p_signaling::ClientError>| match r {
        Err(p2p_signaling::ClientError::Server { code, .. }) => Some(code),
        Ok(_) => None,
        Err(e) => panic!("unexpected {e}"),
    };
    // The default burst is ten wrong tokens per address.
    for i in 0..10 {
        let mut c = ws_from("127.0.0.1", server.addr).await;
        let r = timeout(STEP, c.join("vip", Some(&format!("guess{i}")), None))
            .await
            .expect("in time");
        assert_eq!(code_of(r), Some(p2p_signaling::ErrorCode::Unauthorized));
    }
    let mut c = ws_from("127.0.0.1", server.addr).await;
    let r = timeout(STEP, c.join("vip", Some("gold"), None))
        .await
        .expect("in time");
    assert_eq!(code_of(r), Some(p2p_signaling::ErrorCode::RateLimited));
    // Another address joins with the right token.
    let mut c = ws_from("127.0.0.2", server.addr).await;
    let r = timeout(STEP, c.join("vip", Some("gold"), None))
        .await
        .expect("in time");
    assert_eq!(code_of(r), None);
    let m = scrape(server.metrics.expect("metrics")).await;
    assert_eq!(
        sample(&m, "p2p_signaling_joins_refused_guessing_total"),
        Some(1.0),
        "{m}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_turn_users_are_shared_only_when_named() {
    let users = "[turn]\nrealm = \"r\"\n[turn.users]\nguest = \"guest-pw\"\nadmin = \"admin-pw\"\n";
    let server = start(&format!("{users}[signaling]\nlisten = \"127.0.0.1:0\"\n")).await;
    let mut c = ws_from("127.0.0.1", server.addr).await;
    timeout(STEP, c.join("r", None, None))
        .await
        .expect("in time")
        .expect("join");
    assert!(c.ice_servers().iter().all(|s| s.credential.is_none()));
    assert_eq!(c.relay_unavailable(), Some(RelayUnavailable::NotOffered));
    server.shutdown().await;

    let server = start(&format!(
        "{users}[signaling]\nlisten = \"127.0.0.1:0\"\nturn_user = \"guest\"\n"
    ))
    .await;
    let mut c = ws_from("127.0.0.1", server.addr).await;
    timeout(STEP, c.join("r", None, None))
        .await
        .expect("in time")
        .expect("join");
    let turn = c
        .ice_servers()
        .iter()
        .find(|s| s.credential.is_some())
        .expect("a TURN entry");
    assert_eq!(turn.username.as_deref(), Some("guest"));
    assert_eq!(turn.credential.as_deref(), Some("guest-pw"));
    assert!(turn.urls.iter().all(|u| u.starts_with("turn:")));
    assert_eq!(c.relay_unavailable(), None);
    server.shutdown().await;
}

/// A CA and a certificate for `localhost` it signed, written as PEM files.
struct TestCert {
    ca: rustls::pki_types::CertificateDer<'static>,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn test_cert() -> TestCert {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("cert");
    let dir = std::env::temp_dir().join(format!(
        "p2p-signaling-tls-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).expect("cert");
    std::fs::write(&k, key.serialize_pem()).expect("key");
    TestCert {
        ca: ca.der().clone(),
        cert: c,
        key: k,
        _dir: TempDir(dir),
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn client_tls(ca: &rustls::pki_types::CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_the_websocket_are_served_over_tls() {
    let cert = test_cert();
    let server = start(&format!(
        "[signaling]\nlisten = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n",
        cert.cert, cert.key
    ))
    .await;
    let tls = client_tls(&cert.ca);
    // https://localhost:PORT/ serves the page.
    let tcp = tcp_from("127.0.0.1", server.addr).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut stream = timeout(
        STEP,
        tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp),
    )
    .await
    .expect("in time")
    .expect("TLS handshake");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut page = Vec::new();
    let _ = timeout(STEP, stream.read_to_end(&mut page))
        .await
        .expect("in time");
    let page = String::from_utf8_lossy(&page);
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("RTCPeerConnection"));
    // wss:// with the test CA: two peers meet.
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let mut a = timeout(STEP, SignalingClient::connect_with(&url, Some(tls.clone())))
        .await
        .expect("in time")
        .expect("wss");
    let mut b = timeout(STEP, SignalingClient::connect_with(&url, Some(tls)))
        .await
        .expect("in time")
        .expect("wss");
    timeout(STEP, a.join("secure", None, None))
        .await
        .expect("in time")
        .expect("join");
    let peers = timeout(STEP, b.join("secure", None, None))
        .await
        .expect("in time")
        .expect("join");
    assert_eq!(peers.len(), 1);
    // Plain ws:// to a TLS port gets nowhere.
    let plain = timeout(
        STEP,
        SignalingClient::connect(&format!("ws://127.0.0.1:{}/ws", server.addr.port())),
    )
    .await
    .expect("in time");
    assert!(plain.is_err());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_signaling_rooms_members_and_the_process() {
    let server =
        start("[signaling]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n").await;
    let mut a = ws_from("127.0.0.1", server.addr).await;
    let mut b = ws_from("127.0.0.1", server.addr).await;
    timeout(STEP, a.join("m", None, None))
        .await
        .expect("in time")
        .expect("join");
    timeout(STEP, b.join("m", None, None))
        .await
        .expect("in time")
        .expect("join");
    b.send_offer(a.peer_id(), "v=0\r\n").await.expect("offer");
    b.send_offer("p999", "v=0\r\n").await.expect("offer");
    let metrics = server.metrics.expect("metrics");
    let deadline = Instant::now() + STEP;
    let m = loop {
        let m = scrape(metrics).await;
        if sample(
            &m,
            "p2p_signaling_messages_refused_total{reason=\"unknown-peer\"}",
        ) == Some(1.0)
        {
            break m;
        }
        assert!(Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for (series, want) in [
        ("p2p_signaling_enabled", 1.0),
        ("p2p_signaling_websockets", 2.0),
        ("p2p_signaling_rooms", 1.0),
        ("p2p_signaling_members", 2.0),
        ("p2p_signaling_addresses", 1.0),
        ("p2p_signaling_messages_relayed_total{type=\"offer\"}", 1.0),
        ("p2p_signaling_websockets_opened_total", 2.0),
        ("p2p_build_info{version=\"0.1.0\"}", 1.0),
    ] {
        assert_eq!(sample(&m, series), Some(want), "{series}\n{m}");
    }
    let rss = sample(&m, "process_resident_memory_bytes").expect("rss");
    assert!(rss > 1e6, "{rss}");
    assert!(sample(&m, "process_open_fds").expect("fds") > 5.0);
    server.shutdown().await;
}
