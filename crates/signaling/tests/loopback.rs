//! The server and the WebSocket client over loopback: two peers meet and
//! relay offer/answer/candidates, bad input gets errors on a connection that
//! stays usable, and a peer in another room sees nothing. Every wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use p2p_signaling::{
    serve, ClientMsg, ErrorCode, IceCandidate, IceServer, Limits, PeerInfo, RelayUnavailable,
    ServerConfig, ServerMsg, SignalingClient, SignalingTransport, StaticIceServers, WsTransport,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(5);

struct Server {
    url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(config: ServerConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/", listener.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, config, async move {
        let _ = stopped.await;
    }));
    Server { url, stop, task }
}

impl Server {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        let result = timeout(STEP, self.task)
            .await
            .expect("server stops in time");
        result.expect("server task").expect("serve returns Ok");
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

fn error_code(msg: &ServerMsg) -> (ErrorCode, Option<u64>) {
    match msg {
        ServerMsg::Error { code, id, .. } => (*code, *id),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn welcome(t: &mut WsTransport) -> String {
    match next(t).await {
        ServerMsg::Welcome {
            version, peer_id, ..
        } => {
            assert_eq!(version, p2p_signaling::PROTOCOL_VERSION);
            peer_id
        }
        other => panic!("expected welcome, got {other:?}"),
    }
}

fn join(room: &str, name: &str) -> ClientMsg {
    ClientMsg::Join {
        room: room.into(),
        token: None,
        name: Some(name.into()),
        hide_hosts: false,
        version: Some(1),
        id: Some(1),
    }
}

async fn trickle(
    from: &mut WsTransport,
    to: &mut WsTransport,
    from_id: &str,
    to_id: &str,
    cand: &IceCandidate,
) {
    send(
        from,
        ClientMsg::Candidate {
            to: to_id.into(),
            candidate: cand.clone(),
            id: None,
        },
    )
    .await;
    send(
        from,
        ClientMsg::EndOfCandidates {
            to: to_id.into(),
            id: None,
        },
    )
    .await;
    assert_eq!(
        next(to).await,
        ServerMsg::Candidate {
            from: from_id.into(),
            candidate: cand.clone()
        }
    );
    assert_eq!(
        next(to).await,
        ServerMsg::EndOfCandidates {
            from: from_id.into()
        }
    );
}

#[tokio::test]
async fn two_peers_meet_and_a_third_room_sees_nothing() {
    let stun = IceServer::new(["stun:127.0.0.1:3478"]);
    let server = start(ServerConfig {
        ice_servers: Arc::new(StaticIceServers(vec![stun.clone()])),
        limits: Limits {
            max_message_size: 4096,
            ..Limits::default()
        },
        max_frame_size: Some(16 * 1024),
        ..ServerConfig::default()
    })
    .await;

    let mut alice = WsTransport::connect(&server.url)
        .await
        .expect("alice connects");
    let ServerMsg::Welcome {
        peer_id: pa,
        ice_servers,
        ..
    } = next(&mut alice).await
    else {
        panic!("no welcome");
    };
    assert_eq!(ice_servers, vec![stun]);
    let mut bob = WsTransport::connect(&server.url)
        .await
        .expect("bob connects");
    let pb = welcome(&mut bob).await;
    let mut carol = WsTransport::connect(&server.url)
        .await
        .expect("carol connects");
    let pc = welcome(&mut carol).await;

    send(&mut carol, join("elsewhere", "carol")).await;
    assert!(matches!(next(&mut carol).await, ServerMsg::Joined { peers, .. } if peers.is_empty()));

    send(&mut alice, join("demo", "alice")).await;
    assert!(
        matches!(next(&mut alice).await, ServerMsg::Joined { peers, id: Some(1), .. } if peers.is_empty())
    );
    send(&mut bob, join("demo", "bob")).await;
    assert_eq!(
        next(&mut bob).await,
        ServerMsg::Joined {
            room: "demo".into(),
            peer_id: pb.clone(),
            peers: vec![PeerInfo {
                id: pa.clone(),
                name: Some("alice".into()),
                hide_hosts: false,
            }],
            ice_servers: None,
            relay_unavailable: Some(RelayUnavailable::NotOffered),
            resumed: None,
            id: Some(1),
        }
    );
    assert_eq!(
        next(&mut alice).await,
        ServerMsg::PeerJoined {
            room: "demo".into(),
            peer: PeerInfo {
                id: pb.clone(),
                name: Some("bob".into()),
                hide_hosts: false,
            }
        }
    );

    // Offer, answer, trickled candidates, end-of-candidates.
    let sdp_offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
    send(
        &mut bob,
        ClientMsg::Offer {
            to: pa.clone(),
            sdp: sdp_offer.into(),
            id: None,
        },
    )
    .await;
    assert_eq!(
        next(&mut alice).await,
        ServerMsg::Offer {
            from: pb.clone(),
            sdp: sdp_offer.into()
        }
    );
    send(
        &mut alice,
        ClientMsg::Answer {
            to: pb.clone(),
            sdp: "v=0\r\n".into(),
            id: None,
        },
    )
    .await;
    assert_eq!(
        next(&mut bob).await,
        ServerMsg::Answer {
            from: pa.clone(),
            sdp: "v=0\r\n".into()
        }
    );
    let cand = IceCandidate {
        candidate: "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: Some("abcd".into()),
    };
    trickle(&mut alice, &mut bob, &pa, &pb, &cand).await;
    trickle(&mut bob, &mut alice, &pb, &pa, &cand).await;

    // Bad input: each gets an error and the connection stays usable.
    alice.send_text("{not json").await.expect("send");
    assert_eq!(
        error_code(&next(&mut alice).await),
        (ErrorCode::BadJson, None)
    );
    alice
        .send_text(r#"{"type":"teleport","id":3}"#)
        .await
        .expect("send");
    assert_eq!(
        error_code(&next(&mut alice).await),
        (ErrorCode::UnknownType, Some(3))
    );
    alice.send_binary(vec![1, 2, 3]).await.expect("send");
    assert_eq!(
        error_code(&next(&mut alice).await),
        (ErrorCode::BadRequest, None)
    );
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(5000));
    alice.send_text(big).await.expect("send");
    assert_eq!(
        error_code(&next(&mut alice).await),
        (ErrorCode::MessageTooLarge, None)
    );
    // Cross-room: alice cannot reach carol.
    send(
        &mut alice,
        ClientMsg::Offer {
            to: pc.clone(),
            sdp: "v=0".into(),
            id: Some(4),
        },
    )
    .await;
    assert_eq!(
        error_code(&next(&mut alice).await),
        (ErrorCode::UnknownPeer, Some(4))
    );
    send(&mut alice, ClientMsg::Ping { id: Some(5) }).await;
    assert_eq!(next(&mut alice).await, ServerMsg::Pong { id: Some(5) });
    send(
        &mut alice,
        ClientMsg::Bye {
            to: pb.clone(),
            id: None,
        },
    )
    .await;
    assert_eq!(next(&mut bob).await, ServerMsg::Bye { from: pa.clone() });

    // Carol saw nothing of it: her next message is the pong to her ping.
    send(&mut carol, ClientMsg::Ping { id: Some(99) }).await;
    assert_eq!(next(&mut carol).await, ServerMsg::Pong { id: Some(99) });

    // Alice hangs up: bob is told, carol is not.
    alice.close().await.expect("close");
    assert_eq!(
        next(&mut bob).await,
        ServerMsg::PeerLeft {
            room: "demo".into(),
            peer_id: pa.clone()
        }
    );
    send(&mut carol, ClientMsg::Ping { id: Some(100) }).await;
    assert_eq!(next(&mut carol).await, ServerMsg::Pong { id: Some(100) });

    // A frame over the WebSocket hard cap ends that connection only.
    let huge = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(20_000));
    let _ = carol.send_text(huge).await;
    let end = timeout(STEP, carol.recv()).await.expect("closed in time");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    // Bob (another room) is not told; his next message is his own pong.
    send(&mut bob, ClientMsg::Ping { id: Some(7) }).await;
    assert_eq!(next(&mut bob).await, ServerMsg::Pong { id: Some(7) });

    // Shutdown closes the remaining clients.
    server.shutdown().await;
    let end = timeout(STEP, bob.recv()).await.expect("closed in time");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}

#[tokio::test]
async fn signaling_client_over_websocket() {
    let server = start(ServerConfig {
        auth: p2p_signaling::Auth::global("letmein"),
        ..ServerConfig::default()
    })
    .await;
    let mut alice = timeout(STEP, SignalingClient::connect(&server.url))
        .await
        .expect("in time")
        .expect("alice connects");
    let mut bob = timeout(STEP, SignalingClient::connect(&server.url))
        .await
        .expect("in time")
        .expect("bob connects");
    assert!(alice.ice_servers().is_empty());

    let refused = timeout(STEP, alice.join("r", None, None))
        .await
        .expect("in time");
    assert!(
        matches!(
            refused,
            Err(p2p_signaling::ClientError::Server {
                code: ErrorCode::Unauthorized,
                ..
            })
        ),
        "{refused:?}"
    );
    let peers = timeout(STEP, alice.join("r", Some("letmein"), Some("alice")))
        .await
        .expect("in time")
        .expect("alice joins");
    assert!(peers.is_empty());
    let peers = timeout(STEP, bob.join("r", Some("letmein"), None))
        .await
        .expect("in time")
        .expect("bob joins");
    assert_eq!(peers.len(), 1);
    let to_alice = timeout(STEP, bob.wait_for_peer())
        .await
        .expect("in time")
        .expect("peer");
    assert_eq!(to_alice.id, alice.peer_id());
    let to_bob = timeout(STEP, alice.wait_for_peer())
        .await
        .expect("in time")
        .expect("peer");
    assert_eq!(to_bob.id, bob.peer_id());

    bob.send_offer(&to_alice.id, "v=0\r\n")
        .await
        .expect("offer");
    let got = timeout(STEP, alice.recv())
        .await
        .expect("in time")
        .expect("recv");
    assert_eq!(
        got,
        Some(ServerMsg::Offer {
            from: to_bob.id.clone(),
            sdp: "v=0\r\n".into()
        })
    );
    alice
        .send_ice_restart(&to_bob.id, "ufr2", "pwd-of-twenty-two-char")
        .await
        .expect("restart");
    let got = timeout(STEP, bob.recv())
        .await
        .expect("in time")
        .expect("recv");
    assert_eq!(
        got,
        Some(ServerMsg::IceRestart {
            from: to_alice.id.clone(),
            ufrag: "ufr2".into(),
            pwd: "pwd-of-twenty-two-char".into()
        })
    );
    drop(alice);
    let got = timeout(STEP, bob.recv())
        .await
        .expect("in time")
        .expect("recv");
    assert_eq!(
        got,
        Some(ServerMsg::PeerLeft {
            room: "r".into(),
            peer_id: to_alice.id
        })
    );
    assert!(bob.peers().is_empty());
    server.shutdown().await;
}

/// `Server` + `Acceptor::serve_after`: a front reads the upgrade request
/// head itself (in two reads, as a real one might) and hands the stream on
/// with those bytes; two peers meet through it, and `stop` closes them with
/// 1001.
#[tokio::test]
async fn connections_handed_in_after_the_head_was_read() {
    use tokio::io::AsyncReadExt;

    let server = p2p_signaling::Server::start(ServerConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/signal", listener.local_addr().expect("addr"));
    let acceptor = server.acceptor();
    let front = tokio::spawn(async move {
        for _ in 0..2 {
            let (mut stream, addr) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut chunk = [0u8; 7];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut chunk).await.expect("read head");
                assert!(n > 0, "client closed before its head ended");
                head.extend_from_slice(&chunk[..n]);
            }
            let acceptor = acceptor.clone();
            tokio::spawn(async move { acceptor.serve_after(head, stream, addr).await });
        }
    });

    let mut alice = WsTransport::connect(&url).await.expect("alice connects");
    let pa = welcome(&mut alice).await;
    let mut bob = WsTransport::connect(&url).await.expect("bob connects");
    let pb = welcome(&mut bob).await;
    timeout(STEP, front)
        .await
        .expect("front in time")
        .expect("front");
    assert_ne!(pa, pb);

    send(&mut alice, join("handed", "alice")).await;
    assert!(matches!(next(&mut alice).await, ServerMsg::Joined { .. }));
    send(&mut bob, join("handed", "bob")).await;
    assert!(matches!(next(&mut bob).await, ServerMsg::Joined { .. }));
    match next(&mut alice).await {
        ServerMsg::PeerJoined { peer, .. } => assert_eq!(peer.id, pb),
        other => panic!("expected peer-joined, got {other:?}"),
    }

    server.stop();
    // Both see the connection end (a close frame, then the end of the stream).
    for t in [&mut alice, &mut bob] {
        let end = timeout(STEP, t.recv()).await.expect("closed in time");
        assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    }
    timeout(STEP, server.finish())
        .await
        .expect("finishes in time");
}
