use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::*;
use crate::ice_servers::RestCredentialIceServers;
use crate::msg::{IceCandidate, IceServer};

struct Harness {
    rooms: Rooms,
    t0: Instant,
}

impl Harness {
    fn new(limits: Limits) -> Harness {
        Harness {
            rooms: Rooms::new(limits),
            t0: Instant::now(),
        }
    }

    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    fn connect(&mut self) -> (ConnId, String) {
        let (c, _) = self.rooms.connect(self.t0).expect("connect");
        let id = self.rooms.peer_id(c).expect("peer id").to_owned();
        (c, id)
    }

    fn text(&mut self, c: ConnId, json: &str) -> Out {
        self.rooms.handle_text(c, self.t0, json)
    }

    fn join(&mut self, c: ConnId, room: &str) -> Out {
        self.text(c, &format!(r#"{{"type":"join","room":"{room}"}}"#))
    }

    fn offer(&mut self, c: ConnId, to: &str) -> Out {
        self.text(
            c,
            &format!(r#"{{"type":"offer","to":"{to}","sdp":"v=0","id":5}}"#),
        )
    }
}

fn error_of(out: &Out) -> (ConnId, ErrorCode, Option<u64>) {
    match out.as_slice() {
        [(c, ServerMsg::Error { code, id, .. })] => (*c, *code, *id),
        other => panic!("expected exactly one error, got {other:?}"),
    }
}

fn peer_left(room: &str, peer: &str) -> ServerMsg {
    ServerMsg::PeerLeft {
        room: room.into(),
        peer_id: peer.into(),
    }
}

#[test]
fn welcome_carries_version_peer_id_and_ice_servers_at_wall_time() {
    let t0 = Instant::now();
    let wall0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let provider = RestCredentialIceServers {
        urls: vec!["turn:turn.example.org:3478".into()],
        secret: "north-secret".into(),
        ttl: Duration::from_secs(3600),
        user_prefix: "demo-".into(),
    };
    let limits = Limits {
        credential_policy: CredentialPolicy::Welcome,
        ..Limits::default()
    };
    let mut rooms = Rooms::new(limits).with_ice_servers(Arc::new(provider), (t0, wall0));
    let (c, welcome) = rooms.connect(t0).expect("connect");
    assert_eq!(c, ConnId(1));
    assert_eq!(
        welcome,
        ServerMsg::Welcome {
            version: 1,
            peer_id: "p1".into(),
            ice_servers: vec![IceServer::with_credentials(
                ["turn:turn.example.org:3478"],
                "1700003600:demo-p1",
                "MueVC4ao7ui/0pcsfAn+aYP07Ww=",
            )],
            relay_unavailable: None,
            resume_token: None,
        }
    );
    // Ten simulated seconds later the expiry moves with the wall clock.
    let (_, welcome) = rooms
        .connect(t0 + Duration::from_secs(10))
        .expect("connect");
    let ServerMsg::Welcome { ice_servers, .. } = welcome else {
        panic!("not a welcome");
    };
    assert_eq!(
        ice_servers[0].username.as_deref(),
        Some("1700003610:demo-p2")
    );
}

#[test]
fn welcome_without_provider_has_no_ice_servers() {
    let mut h = Harness::new(Limits::default());
    let (_, welcome) = h.rooms.connect(h.t0).expect("connect");
    assert_eq!(
        welcome,
        ServerMsg::Welcome {
            version: PROTOCOL_VERSION,
            peer_id: "p1".into(),
            ice_servers: vec![],
            relay_unavailable: None,
            resume_token: None,
        }
    );
}

#[test]
fn join_lists_present_peers_and_announces_the_newcomer() {
    let mut h = Harness::new(Limits::default());
    let (a, _) = h.connect();
    let (b, _) = h.connect();
    let (c, _) = h.connect();
    let out = h.text(a, r#"{"type":"join","room":"lobby","name":"alice","id":1}"#);
    assert_eq!(
        out,
        vec![(
            a,
            ServerMsg::Joined {
                room: "lobby".into(),
                peer_id: "p1".into(),
                peers: vec![],
                ice_servers: None,
                relay_unavailable: Some(RelayUnavailable::NotOffered),
                resumed: None,
                id: Some(1),
            }
        )]
    );
    h.text(b, r#"{"type":"join","room":"lobby"}"#);
    let out = h.text(c, r#"{"type":"join","room":"lobby","name":"carol"}"#);
    let carol = PeerInfo {
        id: "p3".into(),
        name: Some("carol".into()),
        hide_hosts: false,
    };
    assert_eq!(
        out,
        vec![
            (
                c,
                ServerMsg::Joined {
                    room: "lobby".into(),
                    peer_id: "p3".into(),
                    peers: vec![
                        PeerInfo {
                            id: "p1".into(),
                            name: Some("alice".into()),
                            hide_hosts: false,
                        },
                        PeerInfo {
                            id: "p2".into(),
                            name: None,
                            hide_hosts: false,
                        },
                    ],
                    ice_servers: None,
                    relay_unavailable: Some(RelayUnavailable::NotOffered),
                    resumed: None,
                    id: None,
                }
            ),
            (
                a,
                ServerMsg::PeerJoined {
                    room: "lobby".into(),
                    peer: carol.clone()
                }
            ),
            (
                b,
                ServerMsg::PeerJoined {
                    room: "lobby".into(),
                    peer: carol
                }
            ),
        ]
    );
    assert_eq!(h.rooms.room_members("lobby"), ["p1", "p2", "p3"]);
    assert_eq!(h.rooms.room_count(), 1);
}

#[test]
fn a_peer_asking_to_hide_hosts_is_listed_so_to_the_others_both_ways() {
    let mut h = Harness::new(Limits::default());
    let (page, _) = h.connect();
    let (cli, _) = h.connect();
    h.text(
        page,
        r#"{"type":"join","room":"r","name":"page","hideHosts":true}"#,
    );
    let out = h.join(cli, "r");
    let asks = PeerInfo {
        id: "p1".into(),
        name: Some("page".into()),
        hide_hosts: true,
    };
    match &out[0].1 {
        ServerMsg::Joined { peers, .. } => assert_eq!(peers, &vec![asks]),
        other => panic!("{other:?}"),
    }
    // The other way round: the asker joins second, the one there hears it.
    let (later, _) = h.connect();
    h.join(later, "s");
    let (asker, _) = h.connect();
    let out = h.text(asker, r#"{"type":"join","room":"s","hideHosts":true}"#);
    let told = out.iter().find(|(c, _)| *c == later).expect("peer-joined");
    match &told.1 {
        ServerMsg::PeerJoined { peer, .. } => assert!(peer.hide_hosts, "{peer:?}"),
        other => panic!("{other:?}"),
    }
    // On the wire: "hideHosts", and absent when false.
    let wire = serde_json::to_string(&told.1).unwrap();
    assert!(wire.contains(r#""hideHosts":true"#), "{wire}");
    let plain = serde_json::to_string(&PeerInfo {
        id: "p9".into(),
        name: None,
        hide_hosts: false,
    })
    .unwrap();
    assert_eq!(plain, r#"{"id":"p9"}"#);
}

#[test]
fn room_full_at_default_size_of_eight() {
    let mut h = Harness::new(Limits::default());
    for _ in 0..8 {
        let (c, _) = h.connect();
        assert!(matches!(h.join(c, "r")[0].1, ServerMsg::Joined { .. }));
    }
    let (ninth, _) = h.connect();
    let out = h.text(ninth, r#"{"type":"join","room":"r","id":9}"#);
    assert_eq!(error_of(&out), (ninth, ErrorCode::RoomFull, Some(9)));
    assert_eq!(h.rooms.room_members("r").len(), 8);
}

#[test]
fn room_full_with_configured_size_two_and_a_slot_frees_on_leave() {
    let mut h = Harness::new(Limits {
        max_room_size: 2,
        ..Limits::default()
    });
    let (a, _) = h.connect();
    let (b, _) = h.connect();
    let (c, _) = h.connect();
    h.join(a, "r");
    h.join(b, "r");
    assert_eq!(error_of(&h.join(c, "r")).1, ErrorCode::RoomFull);
    h.text(a, r#"{"type":"leave","room":"r"}"#);
    assert!(matches!(h.join(c, "r")[0].1, ServerMsg::Joined { .. }));
}

#[test]
fn joining_twice_is_already_joined() {
    let mut h = Harness::new(Limits::default());
    let (a, _) = h.connect();
    h.join(a, "r");
    assert_eq!(error_of(&h.join(a, "r")).1, ErrorCode::AlreadyJoined);
    assert_eq!(h.rooms.room_members("r"), ["p1"]);
}

#[test]
fn too_many_rooms_per_connection_and_per_server() {
    let mut h = Harness::new(Limits {
        max_rooms_per_conn: 2,
        max_rooms: 3,
        ..Limits::default()
    });
    let (a, _) = h.connect();
    let (b, _) = h.connect();
    h.join(a, "r1");
    h.join(a, "r2");
    assert_eq!(error_of(&h.join(a, "r3")).1, ErrorCode::TooManyRooms);
    h.join(b, "r3");
    // The server holds three rooms: a fourth cannot be created, an existing one can be joined.
    assert_eq!(error_of(&h.join(b, "r4")).1, ErrorCode::TooManyRooms);
    assert!(matches!(h.join(b, "r1")[0].1, ServerMsg::Joined { .. }));
}

#[test]
fn max_connections_refuses_the_next_connect() {
    let mut h = Harness::new(Limits {
        max_connections: 2,
        ..Limits::default()
    });
    let (a, _) = h.connect();
    h.connect();
    assert_eq!(
        h.rooms.connect(h.t0).map(|(c, _)| c),
        Err(ConnectError::TooManyConnections)
    );
    h.rooms.disconnect(a);
    assert!(h.rooms.connect(h.t0).is_ok());
}

#[test]
fn nothing_crosses_rooms() {
    let mut h = Harness::new(Limits::default());
    let (a, pa) = h.connect();
    let (b, pb) = h.connect();
    let (c, pc) = h.connect();
    h.join(a, "r1");
    let out = h.join(c, "r2");
    assert_eq!(out.len(), 1, "no peer-joined leaks into r1: {out:?}");
    let out = h.join(b, "r1");
    assert!(out.iter().all(|(to, _)| *to != c), "{out:?}");

    // a -> c (other room): unknown-peer, and c receives nothing.
    let out = h.offer(a, &pc);
    assert_eq!(error_of(&out), (a, ErrorCode::UnknownPeer, Some(5)));
    // c -> a and c -> b likewise.
    assert_eq!(error_of(&h.offer(c, &pa)).1, ErrorCode::UnknownPeer);
    assert_eq!(error_of(&h.offer(c, &pb)).1, ErrorCode::UnknownPeer);
    // a -> b (same room) works.
    assert_eq!(
        h.offer(a, &pb),
        vec![(
            b,
            ServerMsg::Offer {
                from: pa.clone(),
                sdp: "v=0".into()
            }
        )]
    );
    // Leaving c's room is not notified to r1.
    let out = h.text(c, r#"{"type":"leave"}"#);
    assert_eq!(
        out,
        vec![(
            c,
            ServerMsg::Left {
                room: "r2".into(),
                id: None
            }
        )]
    );
}

#[test]
fn a_peer_in_two_rooms_reaches_both_but_they_do_not_reach_each_other() {
    let mut h = Harness::new(Limits::default());
    let (a, pa) = h.connect();
    let (b, pb) = h.connect();
    let (c, pc) = h.connect();
    h.join(a, "r1");
    h.join(a, "r2");
    h.join(b, "r1");
    h.join(c, "r2");
    assert_eq!(h.offer(a, &pb)[0].0, b);
    assert_eq!(h.offer(a, &pc)[0].0, c);
    assert_eq!(h.offer(b, &pa)[0].0, a);
    assert_eq!(error_of(&h.offer(b, &pc)).1, ErrorCode::UnknownPeer);
}

#[test]
fn unknown_peer_and_self_are_rejected() {
    let mut h = Harness::new(Limits::default());
    let (a, pa) = h.connect();
    h.join(a, "r");
    assert_eq!(error_of(&h.offer(a, "p999")).1, ErrorCode::UnknownPeer);
    assert_eq!(error_of(&h.offer(a, &pa)).1, ErrorCode::UnknownPeer);
}

#[test]
fn relaying_needs_a_room() {
    let mut h = Harness::new(Limits::default());
    let (a, _) = h.connect();
    let (_, pb) = h.connect();
    assert_eq!(
        error_of(&h.offer(a, &pb)),
        (a, ErrorCode::NotInRoom, Some(5))
    );
    let out = h.text(a, r#"{"type":"leave","id":2}"#);
    assert_eq!(error_of(&out), (a, ErrorCode::NotInRoom, Some(2)));
    h.join(a, "r");
    let out = h.text(a, r#"{"type":"leave","room":"elsewhere"}"#);
    assert_eq!(error_of(&out).1, ErrorCode::NotInRoom);
}

#[test]
fn every_relayed_type_arrives_with_from() {
    let mut h = Harness::new(Limits::default());
    let (a, pa) = h.connect();
    let (b, pb) = h.connect();
    h.join(a, "r");
    h.join(b, "r");
    let cand = IceCandidate {
        candidate: "candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: Some("abcd".into()),
    };
    let cases = vec![
        (
            ClientMsg::Offer {
                to: pb.clone(),
                sdp: "v=0 offer".into(),
                id: None,
            },
            ServerMsg::Offer {
                from: pa.clone(),
                sdp: "v=0 offer".into(),
            },
        ),
        (
            ClientMsg::Answer {
                to: pb.clone(),
                sdp: "v=0 answer".into(),
                id: None,
            },
            ServerMsg::Answer {
                from: pa.clone(),
                sdp: "v=0 answer".into(),
            },
        ),
        (
            ClientMsg::Candidate {
                to: pb.clone(),
                candidate: cand.clone(),
                id: Some(1),
            },
            ServerMsg::Candidate {
                from: pa.clone(),
                candidate: cand,
            },
        ),
        (
            ClientMsg::EndOfCandidates {
                to: pb.clone(),
                id: None,
            },
            ServerMsg::EndOfCandidates { from: pa.clone() },
        ),
        (
            ClientMsg::IceRestart {
                to: pb.clone(),
                ufrag: "u2".into(),
                pwd: "p2-password-of-22-chars".into(),
                id: None,
            },
            ServerMsg::IceRestart {
                from: pa.clone(),
                ufrag: "u2".into(),
                pwd: "p2-password-of-22-chars".into(),
            },
        ),
        (
            ClientMsg::Bye {
                to: pb.clone(),
                id: None,
            },
            ServerMsg::Bye { from: pa.clone() },
        ),
    ];
    for (sent, want) in cases {
        // Both entry points: parsed messages and text frames.
        assert_eq!(
            h.rooms.handle(a, h.t0, sent.clone()),
            vec![(b, want.clone())]
        );
        assert_eq!(h.text(a, &sent.to_json()), vec![(b, want)]);
    }
}

#[test]
fn invalid_payloads_are_bad_request_with_the_request_id() {
    let mut h = Harness::new(Limits::default());
    let (a, _) = h.connect();
    let (b, pb) = h.connect();
    h.join(a, "r");
    h.join(b, "r");
    let long = "x".repeat(2000);
    let cases = [
        format!(r#"{{"type":"candidate","to":"{pb}","candidate":"","id":7}}"#),
        format!(r#"{{"type":"candidate","to":"{pb}","candidate":"candidate:{long}","id":7}}"#),
        format!(r#"{{"type":"candidate","to":"{pb}","candidate":"typ host","id":7}}"#),
        format!(r#"{{"type":"candidate","to":"{pb}","candidate":"candidate:1\r\na=x","id":7}}"#),
        format!(r#"{{"type":"offer","to":"{pb}","sdp":"  ","id":7}}"#),
        format!(r#"{{"type":"answer","to":"{pb}","sdp":"","id":7}}"#),
        format!(r#"{{"type":"ice-restart","to":"{pb}","ufrag":"","pwd":"x","id":7}}"#),
        format!(r#"{{"type":"ice-restart","to":"{pb}","ufrag":"u","pwd":"{long}","id":7}}"#),
        format!(r#"{{"type":"candidate","to":"{pb}","id":7}}"#),
        r#"{"type":"join","room":"","id":7}"#.to_owned(),
        format!(r#"{{"type":"join","room":"{long}","id":7}}"#),
        r#"{"type":"join","room":"a\nb","id":7}"#.to_owned(),
        format!(r#"{{"type":"join","room":"r2","name":"{long}","id":7}}"#),
    ];
    for case in &cases {
        let out = h.text(a, case);
        assert_eq!(
            error_of(&out),
            (a, ErrorCode::BadRequest, Some(7)),
            "{case}"
        );
    }
}

#[test]
fn malformed_frames_get_errors_and_the_connection_stays_usable() {
    let mut h = Harness::new(Limits::default());
    let (a, _) = h.connect();
    let cases: &[(&str, ErrorCode, Option<u64>)] = &[
        ("not json", ErrorCode::BadJson, None),
        ("[]", ErrorCode::BadJson, None),
        (
            "{\"type\":\"teleport\",\"id\":3}",
            ErrorCode::UnknownType,
            Some(3),
        ),
        ("{\"id\":4}", ErrorCode::UnknownType, Some(4)),
        ("{\"type\":\"welcome\"}", ErrorCode::UnknownType, None),
        (
            "{\"type\":\"offer\",\"id\":5}",
            ErrorCode::BadRequest,
            Some(5),
        ),
    ];
    for (text, code, id) in cases {
        assert_eq!(error_of(&h.text(a, text)), (a, *code, *id), "{text}");
    }
    assert_eq!(
        h.rooms.handle_binary(a, h.t0),
        vec![(
            a,
            ServerMsg::error(
                ErrorCode::BadRequest,
                "binary frames are not supported; send JSON in text frames",
                None
            )
        )]
    );
    assert_eq!(
        h.text(a, r#"{"type":"ping","id":42}"#),
        vec![(a, ServerMsg::Pong { id: Some(42) })]
    );
}

#[test]
fn message_too_large_is_refused_before_parsing() {
    let mut h = Harness::new(Limits {
        max_message_size: 100,
        ..Limits::default()
    });
    let (a, _) = h.connect();
    let big = format!(r#"{{"type":"ping","id":1,"pad":"{}"}}"#, "x".repeat(100));
    assert_eq!(
        error_of(&h.text(a, &big)),
        (a, ErrorCode::MessageTooLarge, None)
    );
    let just = format!(r#"{{"type":"ping","id":1,"pad":"{}"}}"#, "x".repeat(69));
    assert_eq!(just.len(), 100);
    assert_eq!(h.text(a, &just), vec![(a, ServerMsg::Pong { id: Some(1) })]);
}

#[test]
fn rate_limit_is_a_token_bucket_on_the_injected_clock() {
    let mut h = Harness::new(Limits {
        rate_per_second: 2.0,
        burst: 3.0,
        ..Limits::default()
    });
    let (a, _) = h.connect();
    let ping = r#"{"type":"ping"}"#;
    let pong = vec![(a, ServerMsg::Pong { id: None })];
    let at = |h: &Harness, s: f64| h.at(s);
    for _ in 0..3 {
        assert_eq!(h.rooms.handle_text(a, at(&h, 0.0), ping), pong);
    }
    let out = h.rooms.handle_text(a, at(&h, 0.0), ping);
    assert_eq!(error_of(&out), (a, ErrorCode::RateLimited, None));
    // Bad JSON and binary frames also cost a token.
    assert_eq!(
        error_of(&h.rooms.handle_text(a, at(&h, 0.0), "x")).1,
        ErrorCode::RateLimited
    );
    assert_eq!(
        error_of(&h.rooms.handle_binary(a, at(&h, 0.0))).1,
        ErrorCode::RateLimited
    );
    // 0.4 s refills 0.8 of a token: still limited.
    assert_eq!(
        error_of(&h.rooms.handle_text(a, at(&h, 0.4), ping)).1,
        ErrorCode::RateLimited
    );
    // 0.5 s refills one token: one message passes, the next does not.
    assert_eq!(h.rooms.handle_text(a, at(&h, 0.5), ping), pong);
    assert_eq!(
        error_of(&h.rooms.handle_text(a, at(&h, 0.5), ping)).1,
        ErrorCode::RateLimited
    );
    // A long pause refills to the burst, not beyond.
    for _ in 0..3 {
        assert_eq!(h.rooms.handle_text(a, at(&h, 100.0), ping), pong);
    }
    assert_eq!(
        error_of(&h.rooms.handle_text(a, at(&h, 100.0), ping)).1,
        ErrorCode::RateLimited
    );
    // Limits are per connection.
    let (b, _) = h.connect();
    assert_eq!(
        h.rooms.handle_text(b, at(&h, 100.0), ping),
        vec![(b, ServerMsg::Pong { id: None })]
    );
}

#[test]
fn rate_limited_relay_does_not_reach_the_peer() {
    let mut h = Harness::new(Limits {
        rate_per_second: 1.0,
        burst: 2.0,
        ..Limits::default()
    });
    let (a, _) = h.connect();
    let (b, pb) = h.connect();
    h.join(a, "r");
    h.join(b, "r");
    assert_eq!(h.offer(a, &pb)[0].0, b);
    let out = h.offer(a, &pb);
    assert_eq!(error_of(&out), (a, ErrorCode::RateLimited, None));
}

#[test]
fn idle_connections_time_out_and_their_peers_are_told() {
    let mut h = Harness::new(Limits {
        idle_timeout: Duration::from_secs(60),
        ..Limits::default()
    });
    let (a, pa) = h.connect();
    let (b, _) = h.connect();
    h.join(a, "r");
    h.join(b, "r");
    assert_eq!(h.rooms.poll_timeout(), Some(h.at(60.0)));
    // b shows life at 30 s (a WebSocket pong), a does not.
    h.rooms.touch(b, h.at(30.0));
    assert_eq!(h.rooms.handle_timeout(h.at(59.9)), vec![]);
    assert_eq!(h.rooms.poll_close(), None);
    let out = h.rooms.handle_timeout(h.at(60.0));
    assert_eq!(
        out,
        vec![
            (
                a,
                ServerMsg::error(ErrorCode::IdleTimeout, "idle for too long", None)
            ),
            (b, peer_left("r", &pa)),
        ]
    );
    assert_eq!(h.rooms.poll_close(), Some(a));
    assert_eq!(h.rooms.poll_close(), None);
    assert_eq!(h.rooms.poll_timeout(), Some(h.at(90.0)));
    // a is gone: its frames are ignored and it cannot be addressed.
    assert_eq!(
        h.rooms.handle_text(a, h.at(61.0), r#"{"type":"ping"}"#),
        vec![]
    );
    assert_eq!(h.rooms.connection_count(), 1);
    let out = h
        .rooms
        .handle_text(b, h.at(61.0), &format!(r#"{{"type":"bye","to":"{pa}"}}"#));
    assert_eq!(error_of(&out).1, ErrorCode::UnknownPeer);
    // b's message at 61 s moved its deadline to 121 s.
    assert_eq!(h.rooms.poll_timeout(), Some(h.at(121.0)));
    assert_eq!(h.rooms.handle_timeout(h.at(120.0)), vec![]);
    assert_eq!(h.rooms.handle_timeout(h.at(121.0)).len(), 1);
    assert_eq!(h.rooms.poll_close(), Some(b));
    assert_eq!(h.rooms.poll_timeout(), None);
    assert_eq!(h.rooms.room_count(), 0);
}

#[test]
fn leave_and_disconnect_notify_peer_left() {
    let mut h = Harness::new(Limits::default());
    let (a, pa) = h.connect();
    let (b, pb) = h.connect();
    let (c, _) = h.connect();
    h.join(a, "r");
    h.join(b, "r");
    h.join(c, "r");
    let out = h.text(a, r#"{"type":"leave","room":"r","id":8}"#);
    assert_eq!(
        out,
        vec![
            (
                a,
                ServerMsg::Left {
                    room: "r".into(),
                    id: Some(8)
                }
            ),
            (b, peer_left("r", &pa)),
            (c, peer_left("r", &pa)),
        ]
    );
    // a is still connected but no longer reachable from r.
    assert_eq!(error_of(&h.offer(b, &pa)).1, ErrorCode::UnknownPeer);
    assert_eq!(h.rooms.disconnect(b), vec![(c, peer_left("r", &pb))]);
    assert_eq!(
        h.rooms.disconnect(b),
        vec![],
        "second disconnect is a no-op"
    );
    assert_eq!(h.rooms.room_members("r"), ["p3"]);
    assert_eq!(h.rooms.disconnect(c), vec![]);
    assert_eq!(h.rooms.room_count(), 0);
    assert_eq!(h.rooms.connection_count(), 1);
}

#[test]
fn leave_without_room_leaves_all() {
    let mut h = Harness::new(Limits::default());
    let (a, pa) = h.connect();
    let (b, _) = h.connect();
    h.join(a, "r1");
    h.join(a, "r2");
    h.join(b, "r2");
    let out = h.text(a, r#"{"type":"leave"}"#);
    assert_eq!(
        out,
        vec![
            (
                a,
                ServerMsg::Left {
                    room: "r1".into(),
                    id: None
                }
            ),
            (
                a,
                ServerMsg::Left {
                    room: "r2".into(),
                    id: None
                }
            ),
            (b, peer_left("r2", &pa)),
        ]
    );
    assert_eq!(h.rooms.room_count(), 1);
}

#[test]
fn global_token_guards_every_room_without_its_own() {
    let mut h = Harness::new(Limits::default());
    h.rooms = Rooms::new(Limits::default()).with_auth(Auth::global("s3cret"));
    let (a, _) = h.connect();
    let out = h.text(a, r#"{"type":"join","room":"r","id":1}"#);
    assert_eq!(error_of(&out), (a, ErrorCode::Unauthorized, Some(1)));
    let out = h.text(a, r#"{"type":"join","room":"r","token":"s3cre"}"#);
    assert_eq!(error_of(&out).1, ErrorCode::Unauthorized);
    let out = h.text(a, r#"{"type":"join","room":"r","token":"s3cret"}"#);
    assert!(matches!(out[0].1, ServerMsg::Joined { .. }));
}

#[test]
fn room_tokens_override_the_global_one_and_leave_other_rooms_open() {
    let mut h = Harness::new(Limits::default());
    h.rooms = Rooms::new(Limits::default()).with_auth(Auth::open().with_room_token("vip", "gold"));
    let (a, _) = h.connect();
    assert!(matches!(h.join(a, "public")[0].1, ServerMsg::Joined { .. }));
    assert_eq!(error_of(&h.join(a, "vip")).1, ErrorCode::Unauthorized);
    let out = h.text(a, r#"{"type":"join","room":"vip","token":"gold"}"#);
    assert!(matches!(out[0].1, ServerMsg::Joined { .. }));

    let mut h = Harness::new(Limits::default());
    h.rooms = Rooms::new(Limits::default())
        .with_auth(Auth::global("silver").with_room_token("vip", "gold"));
    let (a, _) = h.connect();
    let out = h.text(a, r#"{"type":"join","room":"vip","token":"silver"}"#);
    assert_eq!(error_of(&out).1, ErrorCode::Unauthorized);
    let out = h.text(a, r#"{"type":"join","room":"lobby","token":"gold"}"#);
    assert_eq!(error_of(&out).1, ErrorCode::Unauthorized);
    let out = h.text(a, r#"{"type":"join","room":"lobby","token":"silver"}"#);
    assert!(matches!(out[0].1, ServerMsg::Joined { .. }));
}

#[test]
fn unauthorized_is_answered_before_room_full_so_nothing_leaks() {
    let mut h = Harness::new(Limits {
        max_room_size: 1,
        ..Limits::default()
    });
    h.rooms = Rooms::new(h.rooms.limits().clone()).with_auth(Auth::global("t"));
    let (a, _) = h.connect();
    let (b, _) = h.connect();
    h.text(a, r#"{"type":"join","room":"r","token":"t"}"#);
    assert_eq!(error_of(&h.join(b, "r")).1, ErrorCode::Unauthorized);
    let out = h.text(b, r#"{"type":"join","room":"r","token":"t"}"#);
    assert_eq!(error_of(&out).1, ErrorCode::RoomFull);
}

#[test]
fn an_empty_configured_token_never_matches() {
    let auth = Auth::open().with_room_token("r", "");
    assert!(!auth.allows("r", None));
    assert!(!auth.allows("r", Some("")));
    assert!(auth.allows("other", None));
}

#[test]
fn auth_debug_hides_tokens() {
    let auth = Auth::global("topsecret").with_room_token("vip", "gold");
    let s = format!("{auth:?}");
    assert!(
        !s.contains("topsecret") && !s.contains("gold") && s.contains("vip"),
        "{s}"
    );
}

#[test]
fn version_is_checked_on_join() {
    let mut h = Harness::new(Limits::default());
    let (a, _) = h.connect();
    let out = h.text(a, r#"{"type":"join","room":"r","version":2,"id":3}"#);
    assert_eq!(error_of(&out), (a, ErrorCode::VersionMismatch, Some(3)));
    let out = h.text(a, r#"{"type":"join","room":"r","version":1}"#);
    assert!(matches!(out[0].1, ServerMsg::Joined { .. }));
}

#[test]
fn ping_needs_no_room_and_echoes_the_id() {
    let mut h = Harness::new(Limits::default());
    let (a, _) = h.connect();
    assert_eq!(
        h.rooms.handle(a, h.t0, ClientMsg::Ping { id: Some(1) }),
        vec![(a, ServerMsg::Pong { id: Some(1) })]
    );
}

#[test]
fn unknown_connections_get_nothing() {
    let mut h = Harness::new(Limits::default());
    let ghost = ConnId(77);
    assert_eq!(h.text(ghost, r#"{"type":"ping"}"#), vec![]);
    assert_eq!(h.rooms.handle_binary(ghost, h.t0), vec![]);
    assert_eq!(h.rooms.disconnect(ghost), vec![]);
    h.rooms.touch(ghost, h.t0);
    assert_eq!(h.rooms.poll_timeout(), None);
}

#[test]
fn time_going_backwards_does_not_panic_or_refill() {
    let mut h = Harness::new(Limits {
        rate_per_second: 1.0,
        burst: 1.0,
        ..Limits::default()
    });
    let (a, _) = h.connect();
    let later = h.at(10.0);
    assert_eq!(h.rooms.handle_text(a, later, r#"{"type":"ping"}"#).len(), 1);
    let out = h.rooms.handle_text(a, h.t0, r#"{"type":"ping"}"#);
    assert_eq!(error_of(&out).1, ErrorCode::RateLimited);
}

/// A REST provider with a STUN and a TURN URL in one entry, as the daemon
/// configures it.
fn rest_rooms(policy: CredentialPolicy, auth: Auth) -> (Rooms, Instant) {
    let t0 = Instant::now();
    let wall0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let provider = RestCredentialIceServers {
        urls: vec![
            "stun:192.0.2.1:3478".into(),
            "turn:192.0.2.1:3478?transport=udp".into(),
        ],
        secret: "north-secret".into(),
        ttl: Duration::from_secs(3600),
        user_prefix: "p2p-".into(),
    };
    let limits = Limits {
        credential_policy: policy,
        credentials_per_minute: 6.0,
        credential_burst: 3.0,
        ..Limits::default()
    };
    let rooms = Rooms::new(limits)
        .with_auth(auth)
        .with_ice_servers(Arc::new(provider), (t0, wall0));
    (rooms, t0)
}

fn welcome_servers(msg: &ServerMsg) -> (Vec<IceServer>, Option<RelayUnavailable>) {
    match msg {
        ServerMsg::Welcome {
            ice_servers,
            relay_unavailable,
            resume_token: None,
            ..
        } => (ice_servers.clone(), *relay_unavailable),
        other => panic!("expected a welcome, got {other:?}"),
    }
}

fn joined_servers(out: &Out) -> (Option<Vec<IceServer>>, Option<RelayUnavailable>) {
    match out.first() {
        Some((
            _,
            ServerMsg::Joined {
                ice_servers,
                relay_unavailable,
                ..
            },
        )) => (ice_servers.clone(), *relay_unavailable),
        other => panic!("expected joined, got {other:?}"),
    }
}

fn key(ip: &str) -> Option<AddrKey> {
    Some(AddrKey::new(ip.parse().expect("ip"), 64))
}

#[test]
fn by_default_credentials_come_with_joined_and_the_welcome_keeps_only_stun() {
    let (mut rooms, t0) = rest_rooms(CredentialPolicy::default(), Auth::open());
    let (c, welcome) = rooms
        .connect_from(t0, key("198.51.100.1"))
        .expect("connect");
    assert_eq!(
        welcome_servers(&welcome),
        (vec![IceServer::new(["stun:192.0.2.1:3478"])], None)
    );
    let out = rooms.handle_text(c, t0, r#"{"type":"join","room":"r"}"#);
    let (servers, withheld) = joined_servers(&out);
    assert_eq!(withheld, None);
    let servers = servers.expect("joined carries the servers");
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0].username.as_deref(), Some("1700003600:p2p-p1"));
    assert_eq!(rooms.stats().credentials_issued, 1);
}

#[test]
fn the_welcome_policy_hands_credentials_to_every_connection() {
    let (mut rooms, t0) = rest_rooms(CredentialPolicy::Welcome, Auth::open());
    let (c, welcome) = rooms
        .connect_from(t0, key("198.51.100.1"))
        .expect("connect");
    let (servers, withheld) = welcome_servers(&welcome);
    assert_eq!(withheld, None);
    assert!(servers[0].credential.is_some());
    // The join then carries nothing about ICE servers.
    let out = rooms.handle_text(c, t0, r#"{"type":"join","room":"r"}"#);
    assert_eq!(joined_servers(&out), (None, None));
}

#[test]
fn the_token_policy_hands_credentials_only_with_joins_that_needed_a_token() {
    let auth = Auth::open().with_room_token("private", "s3cret");
    let (mut rooms, t0) = rest_rooms(CredentialPolicy::Token, auth);
    let (c, _) = rooms
        .connect_from(t0, key("198.51.100.1"))
        .expect("connect");
    let out = rooms.handle_text(c, t0, r#"{"type":"join","room":"open"}"#);
    assert_eq!(
        joined_servers(&out),
        (None, Some(RelayUnavailable::TokenRequired))
    );
    let out = rooms.handle_text(
        c,
        t0,
        r#"{"type":"join","room":"private","token":"s3cret"}"#,
    );
    let (servers, withheld) = joined_servers(&out);
    assert_eq!(withheld, None);
    assert!(servers.expect("servers")[0].credential.is_some());
    assert_eq!(rooms.stats().credentials_withheld_token, 1);
    assert_eq!(rooms.stats().credentials_issued, 1);
}

#[test]
fn the_never_policy_and_a_provider_without_turn_say_relay_is_not_offered() {
    let (mut rooms, t0) = rest_rooms(CredentialPolicy::Never, Auth::open());
    let (c, welcome) = rooms.connect(t0).expect("connect");
    assert_eq!(welcome_servers(&welcome).0.len(), 1);
    let out = rooms.handle_text(c, t0, r#"{"type":"join","room":"r"}"#);
    assert_eq!(
        joined_servers(&out),
        (None, Some(RelayUnavailable::NotOffered))
    );
    // A STUN-only provider under the welcome policy says so in the welcome.
    let limits = Limits {
        credential_policy: CredentialPolicy::Welcome,
        ..Limits::default()
    };
    let stun = StaticIceServers(vec![IceServer::new(["stun:192.0.2.1:3478"])]);
    let mut rooms = Rooms::new(limits).with_ice_servers(Arc::new(stun), (t0, UNIX_EPOCH));
    let (_, welcome) = rooms.connect(t0).expect("connect");
    assert_eq!(
        welcome_servers(&welcome),
        (
            vec![IceServer::new(["stun:192.0.2.1:3478"])],
            Some(RelayUnavailable::NotOffered)
        )
    );
    assert_eq!(rooms.stats().credentials_issued, 0);
}

#[test]
fn credentials_are_rate_limited_per_address_and_refill_with_time() {
    // Burst 3, 6 per minute (one every 10 s).
    let (mut rooms, t0) = rest_rooms(CredentialPolicy::Join, Auth::open());
    let farm = |rooms: &mut Rooms, from: &str, at: Instant, room: &str| {
        let (c, _) = rooms.connect_from(at, key(from)).expect("connect");
        let out = rooms.handle_text(c, at, &format!(r#"{{"type":"join","room":"{room}"}}"#));
        joined_servers(&out).1
    };
    for i in 0..3 {
        assert_eq!(farm(&mut rooms, "198.51.100.1", t0, &format!("r{i}")), None);
    }
    for i in 3..10 {
        assert_eq!(
            farm(&mut rooms, "198.51.100.1", t0, &format!("r{i}")),
            Some(RelayUnavailable::RateLimited)
        );
    }
    // Another address has its own bucket; the hosts of one IPv6 /64 share
    // one.
    assert_eq!(farm(&mut rooms, "198.51.100.2", t0, "x"), None);
    assert_eq!(farm(&mut rooms, "2001:db8:0:1::1", t0, "y"), None);
    assert_eq!(farm(&mut rooms, "2001:db8:0:1::2", t0, "y2"), None);
    assert_eq!(farm(&mut rooms, "2001:db8:0:1::3", t0, "y3"), None);
    assert_eq!(
        farm(&mut rooms, "2001:db8:0:1::4", t0, "y4"),
        Some(RelayUnavailable::RateLimited)
    );
    // Ten seconds refill one credential.
    let later = t0 + Duration::from_secs(10);
    assert_eq!(farm(&mut rooms, "198.51.100.1", later, "z1"), None);
    assert_eq!(
        farm(&mut rooms, "198.51.100.1", later, "z2"),
        Some(RelayUnavailable::RateLimited)
    );
    let s = rooms.stats();
    assert_eq!(s.credentials_issued, 3 + 1 + 3 + 1);
    assert_eq!(s.credentials_withheld_rate, 7 + 1 + 1);
}

#[test]
fn stats_count_relayed_messages_errors_and_idle_closes() {
    let mut h = Harness::new(Limits {
        idle_timeout: Duration::from_secs(30),
        ..Limits::default()
    });
    let (a, _) = h.connect();
    let (b, bid) = h.connect();
    h.join(a, "r");
    h.join(b, "r");
    h.offer(a, &bid);
    h.offer(a, &bid);
    h.offer(a, "p99");
    h.text(a, "not json");
    h.rooms.handle_binary(a, h.t0);
    let out = h.rooms.handle_timeout(h.at(31.0));
    assert!(!out.is_empty());
    let s = h.rooms.stats().clone();
    assert_eq!(s.connections_accepted, 2);
    assert_eq!(s.relayed_of("offer"), 2);
    assert_eq!(s.relayed_of("answer"), 0);
    assert_eq!(s.errors_of(ErrorCode::UnknownPeer), 1);
    assert_eq!(s.errors_of(ErrorCode::BadJson), 1);
    assert_eq!(s.errors_of(ErrorCode::BadRequest), 1);
    assert_eq!(s.errors_of(ErrorCode::IdleTimeout), 2);
    assert_eq!(s.idle_closed, 2);
    assert_eq!(s.messages_received, 2 + 3 + 2);
    assert_eq!(h.rooms.member_count(), 0);
}

#[test]
fn member_count_sums_the_rooms() {
    let mut h = Harness::new(Limits::default());
    let (a, _) = h.connect();
    let (b, _) = h.connect();
    h.join(a, "r1");
    h.join(a, "r2");
    h.join(b, "r1");
    assert_eq!(h.rooms.room_count(), 2);
    assert_eq!(h.rooms.member_count(), 3);
}

#[test]
fn an_address_that_guesses_room_tokens_is_held_even_when_it_guesses_right() {
    // Defaults: 10 wrong tokens in a burst, then 6 a minute.
    let t0 = Instant::now();
    let mut rooms =
        Rooms::new(Limits::default()).with_auth(Auth::open().with_room_token("vip", "gold"));
    let mut attempt = |from: &str, at: Instant, room: &str, token: &str| -> Out {
        let (c, _) = rooms.connect_from(at, key(from)).expect("connect");
        rooms.handle_text(
            c,
            at,
            &format!(r#"{{"type":"join","room":"{room}","token":"{token}"}}"#),
        )
    };
    for i in 0..10 {
        let out = attempt("198.51.100.7", t0, "vip", &format!("guess{i}"));
        assert_eq!(error_of(&out).1, ErrorCode::Unauthorized, "guess {i}");
    }
    // The right token from the same address is now refused unchecked, with
    // the wait; so is a wrong one.
    let out = attempt("198.51.100.7", t0, "vip", "gold");
    assert_eq!(error_of(&out).1, ErrorCode::RateLimited);
    let ServerMsg::Error { message, .. } = &out[0].1 else {
        panic!("expected an error, got {out:?}");
    };
    assert!(message.contains("try again in 10 s"), "{message}");
    assert_eq!(
        error_of(&attempt("198.51.100.7", t0, "vip", "nope")).1,
        ErrorCode::RateLimited
    );
    // Rooms without a token, and other addresses, are not affected.
    assert!(matches!(
        attempt("198.51.100.7", t0, "lobby", "")[0].1,
        ServerMsg::Joined { .. }
    ));
    assert!(matches!(
        attempt("198.51.100.8", t0, "vip", "gold")[0].1,
        ServerMsg::Joined { .. }
    ));
    // Ten seconds give the address one more try.
    let later = t0 + Duration::from_secs(10);
    assert!(matches!(
        attempt("198.51.100.7", later, "vip", "gold")[0].1,
        ServerMsg::Joined { .. }
    ));
    assert_eq!(rooms.stats().joins_refused_guessing, 2);
}
