//! `SignalingClient` over the in-process `MemoryHub`: the same protocol and
//! checks as the WebSocket server, on tokio's (paused) clock.

use std::time::Duration;

use p2p_signaling::{
    ClientError, ErrorCode, IceCandidate, Limits, MemoryHub, PeerInfo, ServerMsg, SignalingClient,
    SignalingTransport,
};

async fn client(hub: &MemoryHub) -> SignalingClient {
    let t = hub.connect().expect("connect");
    SignalingClient::new(Box::new(t)).await.expect("welcome")
}

#[tokio::test(start_paused = true)]
async fn two_clients_meet_and_trickle() {
    let hub = MemoryHub::new(Limits::default());
    let mut alice = client(&hub).await;
    let mut bob = client(&hub).await;
    assert_eq!((alice.peer_id(), bob.peer_id()), ("p1", "p2"));

    assert!(alice
        .join("demo", None, Some("alice"))
        .await
        .expect("join")
        .is_empty());
    let peers = bob.join("demo", None, Some("bob")).await.expect("join");
    assert_eq!(
        peers,
        vec![PeerInfo {
            id: "p1".into(),
            name: Some("alice".into()),
            hide_hosts: false,
        }]
    );
    assert_eq!(bob.wait_for_peer().await.expect("peer").id, "p1");
    assert_eq!(alice.wait_for_peer().await.expect("peer").id, "p2");

    bob.send_offer("p1", "v=0\r\n").await.expect("offer");
    let cand = IceCandidate::new("candidate:1 1 udp 2130706431 10.0.0.2 5000 typ host");
    bob.send_candidate("p1", cand.clone())
        .await
        .expect("candidate");
    bob.send_end_of_candidates("p1").await.expect("eoc");
    assert_eq!(
        alice.recv().await.expect("recv"),
        Some(ServerMsg::Offer {
            from: "p2".into(),
            sdp: "v=0\r\n".into()
        })
    );
    assert_eq!(
        alice.recv().await.expect("recv"),
        Some(ServerMsg::Candidate {
            from: "p2".into(),
            candidate: cand
        })
    );
    assert_eq!(
        alice.recv().await.expect("recv"),
        Some(ServerMsg::EndOfCandidates { from: "p2".into() })
    );
    alice.send_answer("p2", "v=0\r\n").await.expect("answer");
    alice.send_bye("p2").await.expect("bye");
    assert!(matches!(
        bob.recv().await,
        Ok(Some(ServerMsg::Answer { .. }))
    ));
    assert_eq!(
        bob.recv().await.expect("recv"),
        Some(ServerMsg::Bye { from: "p1".into() })
    );

    drop(alice);
    assert_eq!(
        bob.recv().await.expect("recv"),
        Some(ServerMsg::PeerLeft {
            room: "demo".into(),
            peer_id: "p1".into()
        })
    );
    assert!(bob.peers().is_empty());
    assert_eq!(hub.connection_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn messages_arriving_during_join_are_buffered_in_order() {
    let hub = MemoryHub::new(Limits::default());
    let mut alice = client(&hub).await;
    let mut bob = client(&hub).await;
    alice.join("r1", None, None).await.expect("join");
    bob.join("r1", None, None).await.expect("join");
    bob.send_offer("p1", "v=0").await.expect("offer");
    // Alice's second join sees peer-joined and the offer before its joined.
    alice.join("r2", None, None).await.expect("join");
    assert!(matches!(
        alice.recv().await,
        Ok(Some(ServerMsg::PeerJoined { .. }))
    ));
    assert!(matches!(
        alice.recv().await,
        Ok(Some(ServerMsg::Offer { .. }))
    ));
    assert_eq!(alice.peers().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn join_errors_surface_with_their_code() {
    let hub = MemoryHub::new(Limits {
        max_room_size: 1,
        ..Limits::default()
    });
    let mut alice = client(&hub).await;
    let mut bob = client(&hub).await;
    alice.join("r", None, None).await.expect("join");
    let err = bob.join("r", None, None).await;
    assert!(
        matches!(
            err,
            Err(ClientError::Server {
                code: ErrorCode::RoomFull,
                ..
            })
        ),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_connections_are_closed_on_the_paused_clock() {
    let hub = MemoryHub::new(Limits {
        idle_timeout: Duration::from_secs(30),
        ..Limits::default()
    });
    let mut alice = hub.connect().expect("connect");
    let mut bob = client(&hub).await;
    assert!(matches!(
        alice.recv().await,
        Ok(Some(ServerMsg::Welcome { .. }))
    ));
    alice
        .send_text(r#"{"type":"join","room":"r"}"#)
        .expect("send");
    assert!(matches!(
        alice.recv().await,
        Ok(Some(ServerMsg::Joined { .. }))
    ));
    bob.join("r", None, None).await.expect("join");
    tokio::time::advance(Duration::from_secs(20)).await;
    bob.send(p2p_signaling::ClientMsg::Ping { id: None })
        .await
        .expect("ping");
    tokio::time::advance(Duration::from_secs(15)).await;
    // Bob's ping at 20 s kept him; alice (silent since 0 s) is expired on bob's next send.
    bob.send(p2p_signaling::ClientMsg::Ping { id: Some(2) })
        .await
        .expect("ping");
    assert!(matches!(
        alice.recv().await,
        Ok(Some(ServerMsg::PeerJoined { .. }))
    ));
    assert!(matches!(
        alice.recv().await,
        Ok(Some(ServerMsg::Error {
            code: ErrorCode::IdleTimeout,
            ..
        }))
    ));
    assert!(matches!(alice.recv().await, Ok(None)));
    assert!(matches!(
        bob.recv().await,
        Ok(Some(ServerMsg::Pong { id: None }))
    ));
    assert_eq!(
        bob.recv().await.expect("recv"),
        Some(ServerMsg::PeerLeft {
            room: "r".into(),
            peer_id: "p1".into()
        })
    );
    assert!(matches!(
        bob.recv().await,
        Ok(Some(ServerMsg::Pong { id: Some(2) }))
    ));
    assert!(alice.send_text(r#"{"type":"ping"}"#).is_err());
}
