//! Two nodes over a store simulated in memory; resume tokens.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::rooms::{Limits, ResumeConfig};
use crate::ClientMsg;

/// The shared store as the Redis backend keeps it: members per room,
/// events to every node watching a room, relays to one node.
#[derive(Default)]
struct Store {
    rooms: HashMap<String, Vec<ClusterMember>>,
    relays: usize,
}

type Delivered = Vec<(usize, ConnId, ServerMsg)>;

impl Store {
    /// Moves every node's operations through the store until nothing moves;
    /// returns what the nodes delivered, as (node index, conn, message).
    fn pump(&mut self, nodes: &mut [Rooms]) -> Delivered {
        let mut delivered = Vec::new();
        for _ in 0..100 {
            let mut events: Vec<(usize, ClusterEvent)> = Vec::new();
            for (i, n) in nodes.iter_mut().enumerate() {
                let me = n.cluster.as_ref().expect("cluster").node.clone();
                while let Some(op) = n.poll_cluster() {
                    match op {
                        ClusterOp::Join {
                            conn,
                            room,
                            peer,
                            max_room_size,
                        } => {
                            let members = self.rooms.entry(room.clone()).or_default();
                            // As the Redis script: a member already
                            // there (it resumed) is taken over.
                            let present = members.iter().any(|m| m.peer.id == peer.id);
                            let result = if !present && members.len() >= max_room_size {
                                Err(JoinRefusal::RoomFull)
                            } else {
                                let before = members.clone();
                                let m = ClusterMember {
                                    peer,
                                    node: me.clone(),
                                };
                                members.retain(|x| x.peer.id != m.peer.id);
                                members.push(m.clone());
                                for j in 0..2 {
                                    events.push((
                                        j,
                                        ClusterEvent::MemberJoined {
                                            room: room.clone(),
                                            member: m.clone(),
                                        },
                                    ));
                                }
                                Ok(before)
                            };
                            events.push((i, ClusterEvent::JoinResult { conn, room, result }));
                        }
                        ClusterOp::Leave { room, peer_id, .. } => {
                            if let Some(members) = self.rooms.get_mut(&room) {
                                members.retain(|x| !(x.peer.id == peer_id && x.node == me));
                            }
                            for j in 0..2 {
                                events.push((
                                    j,
                                    ClusterEvent::MemberLeft {
                                        room: room.clone(),
                                        peer_id: peer_id.clone(),
                                        node: me.clone(),
                                    },
                                ));
                            }
                        }
                        ClusterOp::Relay { node, to, msg } => {
                            self.relays += 1;
                            let j = if node == "a" { 0 } else { 1 };
                            let json = msg.to_json();
                            events.push((j, ClusterEvent::Deliver { to, json }));
                        }
                    }
                }
            }
            if events.is_empty() {
                return delivered;
            }
            for (j, e) in events {
                for (c, m) in nodes[j].cluster_event(e) {
                    delivered.push((j, c, m));
                }
            }
        }
        panic!("the store did not settle in 100 rounds");
    }
}

fn nodes() -> Vec<Rooms> {
    vec![
        Rooms::new(Limits::default())
            .with_cluster("a")
            .with_peer_id_prefix("a"),
        Rooms::new(Limits::default())
            .with_cluster("b")
            .with_peer_id_prefix("b"),
    ]
}

fn join(n: &mut Rooms, conn: ConnId, now: Instant, room: &str) -> Out {
    n.handle(
        conn,
        now,
        ClientMsg::Join {
            room: room.into(),
            token: None,
            name: None,
            hide_hosts: false,
            version: None,
            id: Some(1),
        },
    )
}

#[test]
fn peers_on_two_nodes_meet_and_exchange_through_one_relay_each() {
    let now = Instant::now();
    let mut store = Store::default();
    let mut n = nodes();
    let (alice, _) = n[0].connect(now).expect("connect");
    let (bob, _) = n[1].connect(now).expect("connect");
    // A cluster join is answered once the store admitted it.
    assert!(join(&mut n[0], alice, now, "r").is_empty());
    let got = store.pump(&mut n);
    assert!(
        matches!(&got[..], [(0, c, ServerMsg::Joined { peers, .. })] if *c == alice && peers.is_empty())
    );
    assert!(join(&mut n[1], bob, now, "r").is_empty());
    let got = store.pump(&mut n);
    assert!(
        got.iter().any(|(j, c, m)| *j == 1
            && *c == bob
            && matches!(m, ServerMsg::Joined { peers, .. } if peers.len() == 1 && peers[0].id == "a1")),
        "{got:?}"
    );
    assert!(got.iter().any(|(j, c, m)| *j == 0
        && *c == alice
        && matches!(m, ServerMsg::PeerJoined { peer, .. } if peer.id == "b1")));
    let offer = ClientMsg::Offer {
        to: "a1".into(),
        sdp: "v=0".into(),
        id: None,
    };
    assert!(n[1].handle(bob, now, offer).is_empty());
    let got = store.pump(&mut n);
    assert_eq!(store.relays, 1);
    assert!(
        matches!(&got[..], [(0, c, ServerMsg::Offer { from, .. })] if *c == alice && from == "b1"),
        "{got:?}"
    );
    assert_eq!(n[0].stats().cluster_delivered, 1);
    assert_eq!(n[1].stats().cluster_relayed, 1);
}

#[test]
fn nothing_crosses_rooms_between_nodes() {
    let now = Instant::now();
    let mut store = Store::default();
    let mut n = nodes();
    let (alice, _) = n[0].connect(now).expect("connect");
    let (bob, _) = n[1].connect(now).expect("connect");
    join(&mut n[0], alice, now, "r1");
    join(&mut n[1], bob, now, "r2");
    store.pump(&mut n);
    // Bob cannot address Alice: no shared room, so no relay either.
    let out = n[1].handle(
        bob,
        now,
        ClientMsg::Offer {
            to: "a1".into(),
            sdp: "v=0".into(),
            id: Some(4),
        },
    );
    assert!(
        matches!(&out[..], [(c, ServerMsg::Error { code: ErrorCode::UnknownPeer, .. })] if *c == bob)
    );
    assert_eq!(store.relays, 0);
    // A forged delivery from another node is refused by the receiver too.
    let forged = ClusterEvent::Deliver {
        to: "a1".into(),
        json: ServerMsg::Bye { from: "b1".into() }.to_json(),
    };
    assert!(n[0].cluster_event(forged).is_empty());
    assert_eq!(n[0].stats().cluster_refused, 1);
}

#[test]
fn a_room_is_full_across_nodes() {
    let now = Instant::now();
    let mut store = Store::default();
    let mut n = nodes();
    for i in 0..8 {
        let (c, _) = n[i % 2].connect(now).expect("connect");
        join(&mut n[i % 2], c, now, "r");
        store.pump(&mut n);
    }
    let (late, _) = n[0].connect(now).expect("connect");
    let out = join(&mut n[0], late, now, "r");
    let got = store.pump(&mut n);
    let all: Vec<&ServerMsg> = out
        .iter()
        .map(|(_, m)| m)
        .chain(got.iter().filter(|(_, c, _)| *c == late).map(|(_, _, m)| m))
        .collect();
    assert!(
        all.iter().any(|m| matches!(
            m,
            ServerMsg::Error {
                code: ErrorCode::RoomFull,
                ..
            }
        )),
        "{all:?}"
    );
}

#[test]
fn a_member_leaving_on_one_node_is_a_peer_left_on_the_other() {
    let now = Instant::now();
    let mut store = Store::default();
    let mut n = nodes();
    let (alice, _) = n[0].connect(now).expect("connect");
    let (bob, _) = n[1].connect(now).expect("connect");
    join(&mut n[0], alice, now, "r");
    join(&mut n[1], bob, now, "r");
    store.pump(&mut n);
    let out = n[1].disconnect(bob);
    assert!(out.is_empty());
    let got = store.pump(&mut n);
    assert!(
        matches!(&got[..], [(0, c, ServerMsg::PeerLeft { peer_id, .. })] if *c == alice && peer_id == "b1"),
        "{got:?}"
    );
    assert!(n[0].remote_members("r").is_empty());
}

#[test]
fn a_peer_that_resumes_on_another_node_keeps_its_id_and_is_announced_again() {
    let now = Instant::now();
    let epoch = (now, SystemTime::now());
    let key = ResumeConfig::new(b"shared".to_vec());
    let mut store = Store::default();
    let mut n = vec![
        Rooms::new(Limits::default())
            .with_cluster("a")
            .with_peer_id_prefix("a")
            .with_resume(key.clone())
            .with_epoch(epoch),
        Rooms::new(Limits::default())
            .with_cluster("b")
            .with_peer_id_prefix("b")
            .with_resume(key)
            .with_epoch(epoch),
    ];
    let (alice, _) = n[0].connect(now).expect("connect");
    let (bob, welcome) = n[0].connect(now).expect("connect");
    let ServerMsg::Welcome {
        resume_token: Some(token),
        ..
    } = welcome
    else {
        panic!("no resume token in {welcome:?}");
    };
    join(&mut n[0], alice, now, "r");
    join(&mut n[0], bob, now, "r");
    store.pump(&mut n);
    // Bob's node is gone for him; he comes back on node b.
    let later = now + Duration::from_secs(1);
    let (bob2, _) = n[1].connect(later).expect("connect");
    let out = n[1].handle(bob2, later, ClientMsg::Resume { token, id: Some(9) });
    assert!(
        matches!(&out[..], [(c, ServerMsg::Resumed { peer_id, id: Some(9), .. })] if *c == bob2 && peer_id == "a2"),
        "{out:?}"
    );
    join(&mut n[1], bob2, later, "r");
    let got = store.pump(&mut n);
    // Alice hears that a2 joined again (from node b), and node a let go of
    // the connection that held a2.
    assert!(
        got.iter().any(|(j, c, m)| *j == 0
            && *c == alice
            && matches!(m, ServerMsg::PeerJoined { peer, .. } if peer.id == "a2")),
        "{got:?}"
    );
    assert_eq!(n[0].poll_close(), Some(bob));
    // Back before its node let go: it is told its membership survived, and
    // is not listed among the peers itself.
    let joined: Vec<_> = got
        .iter()
        .filter_map(|(j, c, m)| match m {
            ServerMsg::Joined { peers, resumed, .. } if *j == 1 && *c == bob2 => {
                Some((peers.clone(), *resumed))
            }
            _ => None,
        })
        .collect();
    let ids = |peers: &[PeerInfo]| peers.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
    assert!(
        matches!(&joined[..], [(peers, Some(true))] if ids(peers) == ["a1"]),
        "{joined:?}"
    );
}

/// Node `a` of two, with resume tokens; node `b` the same.
fn resuming_nodes(now: Instant) -> Vec<Rooms> {
    let epoch = (now, SystemTime::now());
    let key = ResumeConfig::new(b"shared".to_vec());
    ["a", "b"]
        .into_iter()
        .map(|name| {
            Rooms::new(Limits::default())
                .with_cluster(name)
                .with_peer_id_prefix(name)
                .with_resume(key.clone())
                .with_epoch(epoch)
        })
        .collect()
}

fn token_of(welcome: &ServerMsg) -> String {
    match welcome {
        ServerMsg::Welcome {
            resume_token: Some(t),
            ..
        } => t.clone(),
        other => panic!("no resume token in {other:?}"),
    }
}

#[test]
fn a_peer_back_after_its_node_was_reaped_is_told_its_membership_did_not_survive() {
    let now = Instant::now();
    let mut store = Store::default();
    let mut n = resuming_nodes(now);
    let (bob, welcome) = n[0].connect(now).expect("connect");
    let token = token_of(&welcome);
    let (alice, _) = n[1].connect(now).expect("connect");
    join(&mut n[0], bob, now, "r");
    join(&mut n[1], alice, now, "r");
    let got = store.pump(&mut n);
    // A join that did not follow a resume says nothing.
    assert!(
        got.iter()
            .any(|(_, c, m)| *c == alice && matches!(m, ServerMsg::Joined { resumed: None, .. })),
        "{got:?}"
    );
    // Node a dies; the store reaps its member: alice hears it leave.
    store
        .rooms
        .get_mut("r")
        .expect("room")
        .retain(|m| m.node != "a");
    let left = n[1].cluster_event(ClusterEvent::MemberLeft {
        room: "r".into(),
        peer_id: "a1".into(),
        node: "a".into(),
    });
    assert!(
        matches!(&left[..], [(c, ServerMsg::PeerLeft { peer_id, .. })] if *c == alice && peer_id == "a1")
    );
    // A newcomer takes its place, then bob comes back on node b.
    let later = now + Duration::from_secs(5);
    let (carol, _) = n[1].connect(later).expect("connect");
    join(&mut n[1], carol, later, "r");
    store.pump(&mut n);
    let (bob2, _) = n[1].connect(later).expect("connect");
    n[1].handle(bob2, later, ClientMsg::Resume { token, id: None });
    join(&mut n[1], bob2, later, "r");
    let got = store.pump(&mut n);
    let joined: Vec<_> = got
        .iter()
        .filter_map(|(_, c, m)| match m {
            ServerMsg::Joined { peers, resumed, .. } if *c == bob2 => Some((
                peers.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
                *resumed,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        joined,
        [(vec!["b1".to_owned(), "b2".to_owned()], Some(false))]
    );
    // Both hear it join as a newcomer.
    for who in [alice, carol] {
        assert!(
            got.iter().any(|(_, c, m)| *c == who
                && matches!(m, ServerMsg::PeerJoined { peer, .. } if peer.id == "a1")),
            "{got:?}"
        );
    }
}

#[test]
fn a_peer_resumed_on_the_node_that_mirrored_it_is_not_counted_twice_in_a_full_room() {
    let now = Instant::now();
    let mut store = Store::default();
    let mut n = resuming_nodes(now);
    for r in &mut n {
        r.limits.max_room_size = 2;
    }
    let (bob, welcome) = n[0].connect(now).expect("connect");
    let token = token_of(&welcome);
    let (alice, _) = n[1].connect(now).expect("connect");
    join(&mut n[0], bob, now, "r");
    join(&mut n[1], alice, now, "r");
    store.pump(&mut n);
    // Bob comes back on alice's node, which still mirrors him from node a.
    let (bob2, _) = n[1].connect(now).expect("connect");
    n[1].handle(bob2, now, ClientMsg::Resume { token, id: None });
    assert!(join(&mut n[1], bob2, now, "r").is_empty(), "not refused");
    let got = store.pump(&mut n);
    assert!(
        got.iter().any(|(_, c, m)| *c == bob2
            && matches!(m, ServerMsg::Joined { peers, resumed: Some(true), .. } if peers.len() == 1 && peers[0].id == "b1")),
        "{got:?}"
    );
}

#[test]
fn a_resume_token_is_refused_after_a_join_and_when_forged() {
    let now = Instant::now();
    let mut rooms = Rooms::new(Limits::default())
        .with_resume(ResumeConfig::new(b"k".to_vec()))
        .with_epoch((now, SystemTime::now()));
    let (a, welcome) = rooms.connect(now).expect("connect");
    let ServerMsg::Welcome {
        resume_token: Some(token),
        ..
    } = welcome
    else {
        panic!("no token");
    };
    let (b, _) = rooms.connect(now).expect("connect");
    let forged = token.replacen("p1.", "p2.", 1);
    let out = rooms.handle(
        b,
        now,
        ClientMsg::Resume {
            token: forged,
            id: Some(1),
        },
    );
    assert!(matches!(
        &out[..],
        [(
            _,
            ServerMsg::Error {
                code: ErrorCode::ResumeRefused,
                ..
            }
        )]
    ));
    join(&mut rooms, b, now, "r");
    let out = rooms.handle(b, now, ClientMsg::Resume { token, id: Some(2) });
    assert!(matches!(
        &out[..],
        [(
            _,
            ServerMsg::Error {
                code: ErrorCode::ResumeRefused,
                ..
            }
        )]
    ));
    assert_eq!(rooms.peer_id(a), Some("p1"));
    assert_eq!(rooms.peer_id(b), Some("p2"));
}

#[test]
fn a_resume_takes_the_id_from_a_stale_local_connection() {
    let now = Instant::now();
    let mut rooms = Rooms::new(Limits::default())
        .with_resume(ResumeConfig::new(b"k".to_vec()))
        .with_epoch((now, SystemTime::now()));
    let (a, _) = rooms.connect(now).expect("connect");
    let (b, welcome) = rooms.connect(now).expect("connect");
    let ServerMsg::Welcome {
        resume_token: Some(token),
        ..
    } = welcome
    else {
        panic!("no token");
    };
    join(&mut rooms, a, now, "r");
    join(&mut rooms, b, now, "r");
    let (b2, _) = rooms.connect(now).expect("connect");
    let out = rooms.handle(b2, now, ClientMsg::Resume { token, id: None });
    // The stale connection leaves (Alice hears it) and is closed.
    assert!(out.iter().any(
        |(c, m)| *c == a && matches!(m, ServerMsg::PeerLeft { peer_id, .. } if peer_id == "p2")
    ));
    assert_eq!(rooms.poll_close(), Some(b));
    assert_eq!(rooms.peer_id(b2), Some("p2"));
    let out = join(&mut rooms, b2, now, "r");
    assert!(out.iter().any(
        |(c, m)| *c == a && matches!(m, ServerMsg::PeerJoined { peer, .. } if peer.id == "p2")
    ));
    // On one node a membership never outlives its connection: the resumed
    // peer is told so (alice got peer-left, and now peer-joined).
    assert!(
        out.iter().any(|(c, m)| *c == b2
            && matches!(m, ServerMsg::Joined { resumed: Some(false), peers, .. } if peers.len() == 1)),
        "{out:?}"
    );
}

#[test]
fn a_relayed_messages_type_and_sender_are_read_as_written_and_any_other_spelling_parsed() {
    use super::relayed_header;
    use crate::msg::IceCandidate;
    use std::borrow::Cow;
    let mut cand = IceCandidate::new("candidate:1 1 udp 1 10.0.0.1 9 typ host");
    cand.sdp_mid = Some("0".into());
    cand.sdp_m_line_index = Some(0);
    cand.username_fragment = Some("uf".into());
    let from = || "pab2cd-17".to_owned();
    let written = [
        ServerMsg::Offer {
            from: from(),
            sdp: "v=0\r\n".into(),
        },
        ServerMsg::Answer {
            from: from(),
            sdp: "v=0\r\n".into(),
        },
        ServerMsg::Candidate {
            from: from(),
            candidate: cand,
        },
        ServerMsg::EndOfCandidates { from: from() },
        ServerMsg::IceRestart {
            from: from(),
            ufrag: "u".into(),
            pwd: "p".into(),
        },
        ServerMsg::Bye { from: from() },
    ];
    for (i, msg) in written.iter().enumerate() {
        let json = msg.to_json();
        // As this crate writes it: read without parsing (borrowed).
        assert_eq!(
            relayed_header(&json),
            Some((i, Cow::Borrowed("pab2cd-17"))),
            "{json}"
        );
    }
    // Another spelling: parsed, same answer.
    let (i, f) = relayed_header(r#"{ "from": "b1", "type": "bye" }"#).expect("a bye");
    assert_eq!((i, f.as_ref()), (5, "b1"));
    assert!(
        matches!(relayed_header(r#"{"type":"bye","from":"b\u0031"}"#), Some((5, Cow::Owned(f))) if f == "b1")
    );
    // Not a relayed message, or not a message: nothing to deliver.
    let pong = ServerMsg::Pong { id: None }.to_json();
    assert_eq!(relayed_header(&pong), None);
    assert_eq!(
        relayed_header(r#"{"type":"peer-left","room":"r","peerId":"b1"}"#),
        None
    );
    assert_eq!(relayed_header(r#"{"type":"bye""#), None);
    assert_eq!(relayed_header(""), None);
}

#[test]
fn a_message_from_another_node_is_delivered_as_the_json_it_came_in_and_counted_by_type() {
    let now = Instant::now();
    let mut store = Store::default();
    let mut n = nodes();
    let (alice, _) = n[0].connect(now).expect("connect");
    let (bob, _) = n[1].connect(now).expect("connect");
    join(&mut n[0], alice, now, "r");
    join(&mut n[1], bob, now, "r");
    store.pump(&mut n);
    let json = ServerMsg::Candidate {
        from: "b1".into(),
        candidate: crate::msg::IceCandidate::new("candidate:1 1 udp 1 10.0.0.1 9 typ host"),
    }
    .to_json();
    assert_eq!(n[0].cluster_deliver("a1", &json), Some(alice));
    assert_eq!(n[0].stats().cluster_delivered, 1);
    assert_eq!(n[0].stats().relayed_of("candidate"), 1);
    // Not here, or not a relayed message: nothing, and no delivery counted.
    assert_eq!(n[0].cluster_deliver("a9", &json), None);
    let welcome = n[0].connect(now).expect("connect").1.to_json();
    assert_eq!(n[0].cluster_deliver("a1", &welcome), None);
    assert_eq!(n[0].stats().cluster_delivered, 1);
    // From a peer that shares no room with the addressee: refused.
    let stranger = ServerMsg::Bye { from: "b7".into() }.to_json();
    assert_eq!(n[0].cluster_deliver("a1", &stranger), None);
    assert_eq!(n[0].stats().cluster_refused, 1);
}
