//! The daemon's signaling port on loopback: the page at `/` and the
//! WebSocket at `/ws` on one port, two peers relaying offer/answer/candidates
//! while a third room sees nothing, malformed, oversized and flooding clients
//! answered with errors, a peer vanishing mid-offer, the ICE servers (with
//! TURN REST credentials) in the welcome, and shutdown. Every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use p2p_server::{Config, Server};
use p2p_signaling::{
    rest_credential, ClientMsg, ErrorCode, IceCandidate, ServerMsg, SignalingTransport, WsTransport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const STEP: Duration = Duration::from_secs(5);

struct Running {
    addr: SocketAddr,
    stun: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A daemon on loopback with `sections` (TOML) and `signaling` (keys of
/// `[signaling]` besides `listen`).
async fn start(sections: &str, signaling: &str) -> Running {
    let config = Config::from_toml_str(&format!(
        "[stun]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\n{sections}\n[signaling]\nlisten = \"127.0.0.1:0\"\n{signaling}\n"
    ))
    .expect("config");
    start_with(config).await
}

async fn start_with(config: Config) -> Running {
    let server = Server::bind(&config).await.expect("bind");
    let addr = server.local_addrs().signaling.expect("signaling bound");
    let stun = server.local_addrs().udp[0];
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
        stun,
        stop,
        task,
    }
}

impl Running {
    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        timeout(Duration::from_secs(15), self.task)
            .await
            .expect("server stops in time")
            .expect("server task");
    }
}

async fn connect(url: &str) -> (WsTransport, String) {
    let mut t = timeout(STEP, WsTransport::connect(url))
        .await
        .expect("connect in time")
        .expect("connect");
    match next(&mut t).await {
        ServerMsg::Welcome { peer_id, .. } => (t, peer_id),
        other => panic!("expected welcome, got {other:?}"),
    }
}

async fn next(t: &mut WsTransport) -> ServerMsg {
    timeout(STEP, t.recv())
        .await
        .expect("message in time")
        .expect("transport ok")
        .expect("connection open")
}

async fn send(t: &mut WsTransport, msg: ClientMsg) {
    timeout(STEP, t.send(msg))
        .await
        .expect("send in time")
        .expect("send ok");
}

async fn send_text(t: &mut WsTransport, text: String) {
    timeout(STEP, t.send_text(text))
        .await
        .expect("send in time")
        .expect("send ok");
}

fn join(room: &str) -> ClientMsg {
    ClientMsg::from_json(&format!(r#"{{"type":"join","room":"{room}"}}"#)).expect("join")
}

fn ping(id: u64) -> ClientMsg {
    ClientMsg::Ping { id: Some(id) }
}

fn error_code(msg: &ServerMsg) -> ErrorCode {
    match msg {
        ServerMsg::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The next message must be the `pong` for `id`: nothing else was queued.
async fn expect_only_pong(t: &mut WsTransport, id: u64) {
    send(t, ping(id)).await;
    match next(t).await {
        ServerMsg::Pong { id: Some(got) } if got == id => {}
        other => panic!("expected pong {id} and nothing before it, got {other:?}"),
    }
}

async fn http_get(addr: SocketAddr, request: &str) -> String {
    let mut s = timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    timeout(STEP, s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("read");
    String::from_utf8(out).expect("utf-8 response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_and_websocket_share_one_port() {
    let server = start("", "").await;
    let page = http_get(server.addr, "GET /?room=a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = page.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("text/html"), "{head}");
    assert!(body.contains("new RTCPeerConnection"));
    assert!(body.contains("window.p2pTest"));
    let missing = http_get(server.addr, "GET /nothing HTTP/1.1\r\n\r\n").await;
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
    let garbage = http_get(server.addr, "\x16\x03\x01 hello\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    // The WebSocket on /ws and on any other path, on the same port.
    let (_a, _) = connect(&server.url()).await;
    let (_b, _) = connect(&format!("ws://{}/", server.addr)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_relay_while_another_room_sees_nothing() {
    let server = start("", "").await;
    let url = server.url();
    let (mut alice, alice_id) = connect(&url).await;
    let (mut bob, bob_id) = connect(&url).await;
    let (mut carol, _carol_id) = connect(&url).await;
    send(&mut alice, join("north")).await;
    assert!(matches!(next(&mut alice).await, ServerMsg::Joined { peers, .. } if peers.is_empty()));
    send(&mut carol, join("south")).await;
    assert!(matches!(next(&mut carol).await, ServerMsg::Joined { peers, .. } if peers.is_empty()));
    send(&mut bob, join("north")).await;
    match next(&mut bob).await {
        ServerMsg::Joined { peers, .. } => {
            assert_eq!(peers.len(), 1);
            assert_eq!(peers[0].id, alice_id);
        }
        other => panic!("expected joined, got {other:?}"),
    }
    assert!(
        matches!(next(&mut alice).await, ServerMsg::PeerJoined { peer, .. } if peer.id == bob_id)
    );

    // The newcomer offers; the other answers; candidates both ways.
    let offer = ClientMsg::Offer {
        to: alice_id.clone(),
        sdp: "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".into(),
        id: None,
    };
    send(&mut bob, offer).await;
    match next(&mut alice).await {
        ServerMsg::Offer { from, sdp } => {
            assert_eq!(from, bob_id);
            assert!(sdp.starts_with("v=0"));
        }
        other => panic!("expected offer, got {other:?}"),
    }
    let answer = ClientMsg::Answer {
        to: bob_id.clone(),
        sdp: "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".into(),
        id: None,
    };
    send(&mut alice, answer).await;
    assert!(matches!(next(&mut bob).await, ServerMsg::Answer { from, .. } if from == alice_id));
    let cand = "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host";
    send_text(
        &mut alice,
        format!(r#"{{"type":"candidate","to":"{bob_id}","candidate":"{cand}","sdpMid":"0","sdpMLineIndex":0}}"#),
    )
    .await;
    match next(&mut bob).await {
        ServerMsg::Candidate { from, candidate } => {
            assert_eq!(from, alice_id);
            assert_eq!(
                candidate,
                IceCandidate {
                    sdp_mid: Some("0".into()),
                    sdp_m_line_index: Some(0),
                    ..IceCandidate::new(cand)
                }
            );
        }
        other => panic!("expected candidate, got {other:?}"),
    }
    send_text(
        &mut bob,
        format!(r#"{{"type":"end-of-candidates","to":"{alice_id}"}}"#),
    )
    .await;
    assert!(
        matches!(next(&mut alice).await, ServerMsg::EndOfCandidates { from } if from == bob_id)
    );

    // Carol, in another room, cannot address them and heard nothing.
    send_text(
        &mut carol,
        format!(r#"{{"type":"offer","to":"{alice_id}","sdp":"v=0","id":5}}"#),
    )
    .await;
    assert_eq!(error_code(&next(&mut carol).await), ErrorCode::UnknownPeer);
    expect_only_pong(&mut carol, 1).await;
    expect_only_pong(&mut alice, 2).await;
    expect_only_pong(&mut bob, 3).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_get_errors() {
    let server = start("", "max_message_size = 1024").await;
    let server_url = server.url();
    let (mut t, _) = connect(&server_url).await;
    let cases: &[(&str, ErrorCode)] = &[
        ("not json", ErrorCode::BadJson),
        ("[1,2]", ErrorCode::BadJson),
        (r#"{"type":"teleport"}"#, ErrorCode::UnknownType),
        (r#"{"room":"x"}"#, ErrorCode::UnknownType),
        (r#"{"type":"join","room":""}"#, ErrorCode::BadRequest),
        (r#"{"type":"join"}"#, ErrorCode::BadRequest),
        (
            r#"{"type":"offer","to":"p1","sdp":"v=0"}"#,
            ErrorCode::NotInRoom,
        ),
        (r#"{"type":"join","room":"m"}"#, ErrorCode::BadRequest),
        (
            r#"{"type":"candidate","to":"p1","candidate":"x"}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"type":"offer","to":"p1","sdp":""}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"type":"offer","to":"p404","sdp":"v=0"}"#,
            ErrorCode::UnknownPeer,
        ),
    ];
    for (text, code) in cases {
        send_text(&mut t, (*text).to_owned()).await;
        let reply = next(&mut t).await;
        if text.contains(r#""room":"m""#) {
            assert!(matches!(reply, ServerMsg::Joined { .. }), "{reply:?}");
            continue;
        }
        assert_eq!(error_code(&reply), *code, "{text}");
    }
    timeout(STEP, t.send_binary(vec![1, 2, 3]))
        .await
        .expect("in time")
        .expect("sent");
    assert_eq!(error_code(&next(&mut t).await), ErrorCode::BadRequest);
    // Over the limit, under the hard cap: an error, and the connection stays.
    send_text(
        &mut t,
        format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(1500)),
    )
    .await;
    assert_eq!(error_code(&next(&mut t).await), ErrorCode::MessageTooLarge);
    expect_only_pong(&mut t, 9).await;

    // Over the hard cap (twice the limit): close 1009.
    let (mut raw, _) = timeout(STEP, tokio_tungstenite::connect_async(server_url.as_str()))
        .await
        .expect("in time")
        .expect("connect");
    let welcome = timeout(STEP, raw.next()).await.expect("in time");
    assert!(matches!(welcome, Some(Ok(Message::Text(_)))));
    let _ = raw.send(Message::text("y".repeat(5000))).await;
    let mut code = None;
    while let Ok(Some(frame)) = timeout(STEP, raw.next()).await {
        match frame {
            Ok(Message::Close(Some(f))) => {
                code = Some(f.code);
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    assert_eq!(code, Some(CloseCode::Size));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_connection_is_rate_limited() {
    let server = start("", "rate_per_second = 2\nburst = 10").await;
    let url = server.url();
    let (mut flooder, _) = connect(&url).await;
    let (mut calm, _) = connect(&url).await;
    const SENT: u64 = 60;
    for i in 0..SENT {
        send(&mut flooder, ping(i)).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    for _ in 0..SENT {
        match next(&mut flooder).await {
            ServerMsg::Pong { .. } => pongs += 1,
            ServerMsg::Error {
                code: ErrorCode::RateLimited,
                ..
            } => limited += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pongs + limited, SENT);
    // A burst of 10 and 2/s: far fewer than 60 get through in the few
    // seconds at most that sending took.
    assert!((10..40).contains(&pongs), "pongs={pongs} limited={limited}");
    // Another connection is not slowed by it.
    expect_only_pong(&mut calm, 1).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_vanishing_mid_offer_is_reported_as_left() {
    let server = start("", "").await;
    let url = server.url();
    let (mut alice, alice_id) = connect(&url).await;
    let (mut bob, bob_id) = connect(&url).await;
    send(&mut alice, join("r")).await;
    let _ = next(&mut alice).await;
    send(&mut bob, join("r")).await;
    let _ = next(&mut bob).await;
    let _ = next(&mut alice).await; // peer-joined
    send_text(
        &mut bob,
        format!(r#"{{"type":"offer","to":"{alice_id}","sdp":"v=0\r\n"}}"#),
    )
    .await;
    // Bob's TCP connection goes away without a close frame.
    drop(bob);
    assert!(matches!(next(&mut alice).await, ServerMsg::Offer { from, .. } if from == bob_id));
    match next(&mut alice).await {
        ServerMsg::PeerLeft { room, peer_id } => {
            assert_eq!(room, "r");
            assert_eq!(peer_id, bob_id);
        }
        other => panic!("expected peer-left, got {other:?}"),
    }
    // Relaying to the vanished peer is an error, not a crash.
    send_text(
        &mut alice,
        format!(r#"{{"type":"answer","to":"{bob_id}","sdp":"v=0\r\n"}}"#),
    )
    .await;
    assert_eq!(error_code(&next(&mut alice).await), ErrorCode::UnknownPeer);
    server.shutdown().await;
}

/// The welcome carries this daemon's STUN URL; the TURN REST credentials
/// come with `joined` (the default policy), fresh for the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_rest_credentials_come_with_joined() {
    let server = start(
        "[turn]\nrealm = \"example.org\"\nauth_secret = \"north-secret\"",
        "",
    )
    .await;
    let mut t = timeout(STEP, WsTransport::connect(&server.url()))
        .await
        .expect("in time")
        .expect("connect");
    let ServerMsg::Welcome {
        peer_id,
        ice_servers,
        ..
    } = next(&mut t).await
    else {
        panic!("expected welcome");
    };
    let port = server.stun.port();
    assert_eq!(ice_servers.len(), 1, "{ice_servers:?}");
    assert_eq!(ice_servers[0].urls, [format!("stun:127.0.0.1:{port}")]);
    assert_eq!(ice_servers[0].credential, None);
    send(&mut t, join("r")).await;
    let ServerMsg::Joined {
        ice_servers: Some(ice_servers),
        relay_unavailable: None,
        ..
    } = next(&mut t).await
    else {
        panic!("expected joined with ICE servers");
    };
    let s = &ice_servers[0];
    assert_eq!(
        s.urls,
        [
            format!("stun:127.0.0.1:{port}"),
            format!("turn:127.0.0.1:{port}?transport=udp"),
            format!("turn:127.0.0.1:{port}?transport=tcp"),
        ]
    );
    let username = s.username.as_deref().expect("a username");
    let (expiry, user) = username.split_once(':').expect("expiry:user");
    assert_eq!(user, format!("p2p-{peer_id}"));
    let expiry: u64 = expiry.parse().expect("expiry in Unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // Default ttl one hour (allowing for a slow test machine).
    assert!(
        expiry > now + 3500 && expiry <= now + 3600,
        "{expiry} vs {now}"
    );
    assert_eq!(
        s.credential.as_deref(),
        Some(rest_credential(b"north-secret", username).as_str())
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_websockets_with_going_away() {
    let server = start("", "").await;
    let (mut raw, _) = timeout(
        STEP,
        tokio_tungstenite::connect_async(server.url().as_str()),
    )
    .await
    .expect("in time")
    .expect("connect");
    let welcome = timeout(STEP, raw.next()).await.expect("in time");
    assert!(matches!(welcome, Some(Ok(Message::Text(_)))));
    let reader = tokio::spawn(async move {
        while let Some(frame) = raw.next().await {
            if let Ok(Message::Close(f)) = frame {
                return f.map(|f| f.code);
            }
        }
        None
    });
    server.shutdown().await;
    let code = timeout(STEP, reader)
        .await
        .expect("in time")
        .expect("reader");
    assert_eq!(code, Some(CloseCode::Away));
}
