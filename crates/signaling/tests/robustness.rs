//! The server under abuse, over loopback with bounded waits: a client that
//! stops reading is closed (queue overflow, or write timeout) and frees what
//! it held, a server shutting down is not held up by it, one address is held
//! to its share of connections while another still gets in, and `wss://`
//! works with the caller's trust roots (and only with them).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use p2p_signaling::{
    serve, AddrLimits, ClientMsg, CloseReason, Limits, Metrics, ServerConfig, ServerMsg,
    SignalingClient, SignalingTransport, TransportError, WsTransport,
};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const STEP: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    url: String,
    metrics: Metrics,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(mut config: ServerConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let metrics = Metrics::new();
    config.metrics = metrics.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, config, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        url: format!("ws://{addr}/"),
        metrics,
        stop,
        task,
    }
}

/// A raw WebSocket from `from` (any 127/8 address works on Linux) with a
/// small receive buffer, which the test may simply stop polling.
async fn raw_ws(to: SocketAddr, from: IpAddr) -> Result<WebSocketStream<TcpStream>, String> {
    let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    sock.set_recv_buffer_size(4096).map_err(|e| e.to_string())?;
    sock.bind(SocketAddr::new(from, 0))
        .map_err(|e| e.to_string())?;
    let tcp = sock.connect(to).await.map_err(|e| e.to_string())?;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{to}/"), tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

async fn next_raw(ws: &mut WebSocketStream<TcpStream>) -> ServerMsg {
    loop {
        match timeout(STEP, ws.next()).await.expect("message in time") {
            Some(Ok(Message::Text(t))) => return ServerMsg::from_json(t.as_str()).expect("valid"),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

async fn send_raw(ws: &mut WebSocketStream<TcpStream>, msg: ClientMsg) {
    use futures_util::SinkExt;
    timeout(STEP, ws.send(Message::text(msg.to_json())))
        .await
        .expect("send in time")
        .expect("send");
}

fn join(room: &str) -> ClientMsg {
    ClientMsg::Join {
        room: room.into(),
        token: None,
        name: None,
        hide_hosts: false,
        version: None,
        id: None,
    }
}

/// A receiver that reads its welcome and joined, then stops reading; a
/// flooder in its room that sends it `count` offers of 56 KB. Returns the
/// receiver (never read again by the caller until it wants) and the flooder.
async fn slow_reader_and_flooder(
    server: &Running,
    count: usize,
) -> (WebSocketStream<TcpStream>, WsTransport, String) {
    let mut slow = raw_ws(server.addr, "127.0.0.1".parse().expect("ip"))
        .await
        .expect("slow reader connects");
    let ServerMsg::Welcome {
        peer_id: slow_id, ..
    } = next_raw(&mut slow).await
    else {
        panic!("no welcome");
    };
    send_raw(&mut slow, join("flood")).await;
    assert!(matches!(
        next_raw(&mut slow).await,
        ServerMsg::Joined { .. }
    ));
    let mut flooder = WsTransport::connect(&server.url).await.expect("flooder");
    timeout(STEP, flooder.recv()).await.expect("welcome").ok();
    timeout(STEP, flooder.send(join("flood")))
        .await
        .expect("in time")
        .expect("join");
    let sdp = format!("v=0\r\n{}", "a=x\r\n".repeat(8_000));
    for _ in 0..count {
        let offer = ClientMsg::Offer {
            to: slow_id.clone(),
            sdp: sdp.clone(),
            id: None,
        };
        timeout(STEP, flooder.send(offer))
            .await
            .expect("flooder sends in time")
            .expect("send");
    }
    (slow, flooder, slow_id)
}

/// Waits until the flooder hears that the slow reader left.
async fn peer_left(flooder: &mut WsTransport, slow_id: &str) -> Duration {
    let started = Instant::now();
    loop {
        match timeout(STEP, flooder.recv()).await {
            Ok(Ok(Some(ServerMsg::PeerLeft { peer_id, .. }))) if peer_id == slow_id => {
                return started.elapsed()
            }
            Ok(Ok(Some(_))) => continue,
            other => panic!("no peer-left for the slow reader: {other:?}"),
        }
    }
}

/// Drains a connection the server closed: it must end (a close frame or the
/// end of the stream) within `within`. Returns the close code, if one came.
async fn drained(mut ws: WebSocketStream<TcpStream>, within: Duration) -> Option<u16> {
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("the server did not close the connection within {within:?}"),
            Ok(Some(Ok(Message::Close(Some(f))))) => return Some(u16::from(f.code)),
            Ok(Some(Ok(Message::Close(None)))) | Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

fn generous_limits() -> Limits {
    Limits {
        rate_per_second: 1000.0,
        burst: 1000.0,
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_when_its_queue_overflows() {
    let server = start(ServerConfig {
        limits: generous_limits(),
        max_queued_bytes: 256 * 1024,
        write_timeout: Duration::from_secs(30),
        ..ServerConfig::default()
    })
    .await;
    let (slow, mut flooder, slow_id) = slow_reader_and_flooder(&server, 200).await;
    let after = peer_left(&mut flooder, &slow_id).await;
    assert!(after < STEP, "{after:?}");
    let m = server.metrics.snapshot();
    assert_eq!(m.closed_for(CloseReason::Slow), 1, "{m:?}");
    // The connection itself is gone within a few seconds: what the reader
    // finds, once it reads again, ends with the close frame (1008) if the
    // socket took it, or with the end of the stream.
    let code = drained(slow, Duration::from_secs(5)).await;
    assert!(matches!(code, None | Some(1008)), "{code:?}");
    // The flooder was not hurt: it still gets answers.
    timeout(STEP, flooder.send(ClientMsg::Ping { id: Some(9) }))
        .await
        .expect("in time")
        .expect("ping");
    loop {
        match timeout(STEP, flooder.recv()).await.expect("pong in time") {
            Ok(Some(ServerMsg::Pong { id: Some(9) })) => break,
            Ok(Some(_)) => continue,
            other => panic!("flooder lost: {other:?}"),
        }
    }
    let _ = server.stop.send(());
    timeout(STEP, server.task)
        .await
        .expect("stops")
        .expect("task")
        .expect("ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_by_the_write_timeout() {
    // A queue too large to overflow: the write timeout closes it.
    let server = start(ServerConfig {
        limits: generous_limits(),
        outbound_queue: 100_000,
        max_queued_bytes: 1 << 30,
        write_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    })
    .await;
    let (slow, mut flooder, slow_id) = slow_reader_and_flooder(&server, 200).await;
    peer_left(&mut flooder, &slow_id).await;
    let m = server.metrics.snapshot();
    assert_eq!(m.closed_for(CloseReason::WriteTimeout), 1, "{m:?}");
    assert_eq!(m.closed_for(CloseReason::Slow), 0, "{m:?}");
    let code = drained(slow, Duration::from_secs(5)).await;
    assert!(matches!(code, None | Some(1008)), "{code:?}");
    let _ = server.stop.send(());
    let _ = timeout(STEP, server.task).await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_not_held_up_by_a_client_that_does_not_read() {
    let server = start(ServerConfig {
        limits: generous_limits(),
        outbound_queue: 100_000,
        max_queued_bytes: 1 << 30,
        write_timeout: Duration::from_secs(300),
        ..ServerConfig::default()
    })
    .await;
    let (slow, flooder, _) = slow_reader_and_flooder(&server, 100).await;
    // Let the writer block on the full socket.
    sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let _ = server.stop.send(());
    timeout(Duration::from_secs(5), server.task)
        .await
        .expect("serve returns within 5 s although a writer is blocked")
        .expect("task")
        .expect("ok");
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert!(server.metrics.snapshot().closed_for(CloseReason::Shutdown) >= 1);
    drop((slow, flooder));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_is_held_to_its_share_and_another_still_connects() {
    let server = start(ServerConfig {
        addr_limits: AddrLimits::new()
            .with_max_connections(6)
            .with_max_per_addr(3)
            .with_reserve(0, 1),
        ..ServerConfig::default()
    })
    .await;
    let one: IpAddr = "127.0.0.1".parse().expect("ip");
    let two: IpAddr = "127.0.0.2".parse().expect("ip");
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut ws = raw_ws(server.addr, one).await.expect("under the limit");
        assert!(matches!(next_raw(&mut ws).await, ServerMsg::Welcome { .. }));
        held.push(ws);
    }
    // The fourth from the same address is closed before its handshake.
    let refused = timeout(STEP, raw_ws(server.addr, one))
        .await
        .expect("in time");
    assert!(refused.is_err(), "the fourth connection got through");
    let mut other = raw_ws(server.addr, two).await.expect("another address");
    assert!(matches!(
        next_raw(&mut other).await,
        ServerMsg::Welcome { .. }
    ));
    let m = server.metrics.snapshot();
    assert_eq!(m.admission.refused_per_addr, 1, "{m:?}");
    assert_eq!((m.tcp_open, m.addresses), (4, 2), "{m:?}");
    // Closing one frees its slot.
    drop(held.pop());
    let deadline = Instant::now() + STEP;
    while server.metrics.snapshot().tcp_open != 3 {
        assert!(Instant::now() < deadline, "the slot was not freed");
        sleep(Duration::from_millis(20)).await;
    }
    let mut again = raw_ws(server.addr, one).await.expect("a freed slot");
    assert!(matches!(
        next_raw(&mut again).await,
        ServerMsg::Welcome { .. }
    ));
    let _ = server.stop.send(());
    let _ = timeout(STEP, server.task).await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_configuration_that_cannot_take_effect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = ServerConfig {
        max_queued_bytes: 1000,
        ..ServerConfig::default()
    };
    let err = serve(listener, config, std::future::pending())
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("max_queued_bytes"), "{err}");
}

/// A TLS front (as the daemon has) before the signaling server, with a
/// certificate for `localhost` from a test CA.
struct TlsServer {
    url: String,
    ca: rustls::pki_types::CertificateDer<'static>,
    server: p2p_signaling::Server,
}

async fn tls_server() -> TlsServer {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = p2p_signaling::Server::start(ServerConfig::default());
    let handoff = server.acceptor();
    tokio::spawn(async move {
        while let Ok((tcp, addr)) = listener.accept().await {
            let (tls, handoff) = (acceptor.clone(), handoff.clone());
            tokio::spawn(async move {
                if let Ok(stream) = tls.accept(tcp).await {
                    handoff.serve(stream, addr).await;
                }
            });
        }
    });
    TlsServer {
        url: format!("wss://localhost:{port}/ws"),
        ca: ca.der().clone(),
        server,
    }
}

fn client_tls(roots: &[rustls::pki_types::CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(store)
            .with_no_client_auth(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_works_with_the_callers_roots_and_only_with_them() {
    let s = tls_server().await;
    let tls = client_tls(std::slice::from_ref(&s.ca));
    let mut a = timeout(
        STEP,
        SignalingClient::connect_with(&s.url, Some(tls.clone())),
    )
    .await
    .expect("in time")
    .expect("wss connects with the test CA");
    let mut b = timeout(STEP, SignalingClient::connect_with(&s.url, Some(tls)))
        .await
        .expect("in time")
        .expect("second client");
    timeout(STEP, a.join("tls", None, None))
        .await
        .expect("in time")
        .expect("join");
    let peers = timeout(STEP, b.join("tls", None, None))
        .await
        .expect("in time")
        .expect("join");
    assert_eq!(peers[0].id, a.peer_id());
    b.send_offer(a.peer_id(), "v=0\r\n").await.expect("offer");
    loop {
        match timeout(STEP, a.recv())
            .await
            .expect("in time")
            .expect("recv")
        {
            Some(ServerMsg::Offer { sdp, .. }) => {
                assert_eq!(sdp, "v=0\r\n");
                break;
            }
            Some(_) => continue,
            None => panic!("closed"),
        }
    }

    // No roots: a clear error before any byte is sent.
    let none = SignalingClient::connect(&s.url).await;
    assert!(
        matches!(
            none,
            Err(p2p_signaling::ClientError::Transport(
                TransportError::TlsNotConfigured
            ))
        ),
        "{none:?}"
    );
    // Roots that do not include the server's CA: the handshake fails.
    let other_key = rcgen::KeyPair::generate().expect("key");
    let other = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&other_key)
        .expect("cert");
    let wrong = client_tls(&[other.der().clone()]);
    let refused = timeout(STEP, SignalingClient::connect_with(&s.url, Some(wrong)))
        .await
        .expect("in time");
    assert!(
        matches!(
            refused,
            Err(p2p_signaling::ClientError::Transport(TransportError::Tls(
                _
            )))
        ),
        "{refused:?}"
    );
    s.server.stop();
    timeout(STEP, s.server.finish()).await.expect("finishes");
}

/// A WebSocket handshake by hand, so that the test can then write any
/// bytes (frames cut short, fragments).
async fn raw_handshake(to: SocketAddr) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(to).await.expect("connect");
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        timeout(STEP, s.read_exact(&mut b))
            .await
            .expect("in time")
            .expect("read");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

/// A masked client frame header for `len` payload bytes.
fn header(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
    if len < 126 {
        f.push(0x80 | len as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f
}

/// Reads until the server closes; returns when.
async fn closed_after(s: &mut TcpStream, started: Instant) -> Duration {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    loop {
        match timeout(STEP, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server did not close the connection"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_left_unfinished_is_closed_at_the_message_timeout_even_with_pongs() {
    use tokio::io::AsyncWriteExt;
    let server = start(ServerConfig {
        message_timeout: Duration::from_millis(600),
        ..ServerConfig::default()
    })
    .await;
    // A frame cut short: its header and half its payload.
    let mut cut = raw_handshake(server.addr).await;
    let started = Instant::now();
    let mut f = header(true, 1, 1000);
    f.extend(std::iter::repeat_n(b' ', 500));
    cut.write_all(&f).await.expect("write");
    let after = closed_after(&mut cut, started).await;
    assert!(
        after >= Duration::from_millis(500) && after < Duration::from_secs(3),
        "{after:?}"
    );
    // A fragmented message whose last fragment never comes, the client
    // answering (unsolicited) pongs all along: closed all the same.
    let mut frag = raw_handshake(server.addr).await;
    let started = Instant::now();
    let mut first = header(false, 1, 10);
    first.extend_from_slice(b"{\"type\":\"p");
    frag.write_all(&first).await.expect("write");
    let pongs = async {
        loop {
            if frag.write_all(&header(true, 0xA, 0)).await.is_err() {
                break;
            }
            sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = timeout(Duration::from_secs(3), pongs).await;
    let m = server.metrics.snapshot();
    assert_eq!(m.closed_for(CloseReason::SlowMessage), 2, "{m:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    // A client whose messages do finish is not touched.
    let mut fine = WsTransport::connect(&server.url).await.expect("connect");
    timeout(STEP, fine.recv()).await.expect("welcome").ok();
    sleep(Duration::from_millis(900)).await;
    timeout(STEP, fine.send(ClientMsg::Ping { id: Some(1) }))
        .await
        .expect("in time")
        .expect("still open");
    let _ = server.stop.send(());
    let _ = timeout(STEP, server.task).await.expect("stops");
}
