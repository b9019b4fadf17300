//! The tokio driver over real loopback sockets: an in-process signaling
//! server (and, for the relayed path, the `p2p-server` daemon with TURN),
//! two peers, datagrams both ways; and the typed errors. Every wait is
//! bounded by a tokio timeout.

mod live;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use live::{bind, bounded, daemon, daemon_with, deliver, pair, until_event, LOOPBACK};

use p2p_connect::{
    CandidateKind, ChannelOptions, ConnectError, Connection, ConnectionEvent, IceServerUri, Peer,
    PeerConfig, Policy, RelayUnavailable,
};
use p2p_signaling::{Limits, ServerConfig, ServerMsg, SignalingClient};

/// A signaling server on 127.0.0.1:0; returns its URL.
async fn signaling(limits: Limits) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let config = ServerConfig {
        limits,
        ..ServerConfig::default()
    };
    tokio::spawn(p2p_signaling::serve(
        listener,
        config,
        std::future::pending(),
    ));
    url
}

fn config(url: &str, room: &str) -> PeerConfig {
    PeerConfig::new(url, room)
        .local_addresses([LOOPBACK])
        .connect_timeout(Duration::from_secs(15))
        .peer_timeout(Duration::from_secs(15))
}

async fn events_until_connected(c: &mut Connection) -> Vec<ConnectionEvent> {
    let mut v = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), c.next_event()).await {
        let done = matches!(e, ConnectionEvent::Connected(_));
        v.push(e);
        if done {
            break;
        }
    }
    v
}

#[tokio::test]
async fn two_peers_connect_on_the_host_path_and_exchange_both_ways() {
    let url = signaling(Limits::default()).await;
    let (mut a, b) = pair(config(&url, "host"), config(&url, "host")).await;
    // The first in the room answers; the newcomer offers and controls.
    assert!(!a.is_controlling() && b.is_controlling());
    for c in [&a, &b] {
        let p = c.selected_path().expect("a selected path");
        assert_eq!(p.local.kind, CandidateKind::Host, "{p:?}");
        // The peer's host address: learnt as peer-reflexive when its check
        // arrives before its trickled candidate (a race on a busy machine),
        // as host otherwise. Either way the path is the direct one.
        assert!(
            matches!(
                p.remote.kind,
                CandidateKind::Host | CandidateKind::PeerReflexive
            ),
            "{p:?}"
        );
        assert_eq!(p.local.address.ip(), LOOPBACK);
        assert_eq!(p.remote.address.ip(), LOOPBACK);
    }
    deliver(&a, &b, b"from a").await;
    deliver(&b, &a, b"from b").await;

    let ev = events_until_connected(&mut a).await;
    assert!(
        matches!(ev.first(), Some(ConnectionEvent::SignalingConnected { .. })),
        "{ev:?}"
    );
    assert!(ev.iter().any(|e| matches!(
        e,
        ConnectionEvent::PeerFound {
            controlling: false,
            ..
        }
    )));
    assert!(ev
        .iter()
        .any(|e| matches!(e, ConnectionEvent::LocalCandidate(_))));
    assert!(ev
        .iter()
        .any(|e| matches!(e, ConnectionEvent::RemoteCandidate(_))));
    assert!(
        matches!(ev.last(), Some(ConnectionEvent::Connected(_))),
        "{ev:?}"
    );

    let stats = b.stats().await.unwrap();
    assert!(stats.pairs.iter().any(|p| p.selected), "{stats}");

    // b closes: a hears the bye.
    b.close().await;
    let closed = bounded("a closed", async {
        while let Some(e) = a.next_event().await {
            if let ConnectionEvent::Closed(r) = e {
                return Some(r);
            }
        }
        None
    })
    .await;
    assert_eq!(closed, Some(p2p_connect::CloseReason::PeerClosed));
    // Waiting for a channel says why it ended.
    assert_eq!(
        bounded("a accept ends", a.accept_channel())
            .await
            .map(|c| c.label().to_owned()),
        Err(p2p_connect::CloseReason::PeerClosed)
    );
    assert_eq!(a.closed(), Some(p2p_connect::CloseReason::PeerClosed));
}

#[tokio::test]
async fn relay_only_peers_connect_through_turn_with_the_welcome_credentials() {
    let (url, _) = daemon().await;
    let cfg = |room| config(&url, room).policy(Policy::RelayOnly);
    let (mut a, b) = pair(cfg("relay"), cfg("relay")).await;
    for c in [&a, &b] {
        let p = c.selected_path().expect("a selected path");
        assert_eq!(
            (p.local.kind, p.remote.kind),
            (CandidateKind::Relayed, CandidateKind::Relayed)
        );
    }
    deliver(&a, &b, b"relayed from a").await;
    deliver(&b, &a, b"relayed from b").await;
    let ev = events_until_connected(&mut a).await;
    assert!(
        ev.iter()
            .any(|e| matches!(e, ConnectionEvent::TurnAllocated { .. })),
        "{ev:?}"
    );
    a.close().await;
    b.close().await;
}

/// `Connection::close` deletes the TURN allocations before it returns: the
/// server allows two allocations in all, and three relay-only connections
/// in a row each get theirs. Without the deletion the second pair would be
/// refused (508) until the first allocations expired, ten minutes later.
#[tokio::test]
async fn close_deletes_the_turn_allocations_so_the_quota_is_free_again() {
    let (url, _) = daemon_with("total_quota = 2").await;
    for round in 0..3 {
        let room = format!("quota-{round}");
        let cfg = || config(&url, &room).policy(Policy::RelayOnly);
        let (a, b) = pair(cfg(), cfg()).await;
        deliver(&a, &b, b"relayed from a").await;
        deliver(&b, &a, b"relayed from b").await;
        bounded("a closes", a.close()).await;
        bounded("b closes", b.close()).await;
    }
}

#[tokio::test]
async fn relay_only_over_turn_tcp() {
    let (url, turn) = daemon().await;
    let username = "4000000000:tcp-test";
    let password = p2p_signaling::rest_credential(b"driver-test-secret", username);
    let uri: IceServerUri = format!("turn:{turn}?transport=tcp").parse().unwrap();
    let cfg = |room| {
        config(&url, room)
            .policy(Policy::RelayOnly)
            .ice_server(uri.clone().with_credentials(username, password.clone()))
    };
    let (a, b) = pair(cfg("tcp"), cfg("tcp")).await;
    let p = a.selected_path().expect("a selected path");
    assert_eq!(p.local.kind, CandidateKind::Relayed);
    deliver(&a, &b, b"over tcp").await;
    deliver(&b, &a, b"back over tcp").await;
}

#[tokio::test]
async fn wrong_turn_credentials_are_reported_as_turn_refused() {
    let (url, turn) = daemon().await;
    let uri: IceServerUri = format!("turn:{turn}").parse().unwrap();
    let cfg = |room| {
        config(&url, room)
            .policy(Policy::RelayOnly)
            .ice_server(uri.clone().with_credentials("4000000000:x", "wrong"))
    };
    let a = tokio::spawn(Peer::new(cfg("refused")).unwrap().connect());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let b = bounded("b", Peer::new(cfg("refused")).unwrap().connect()).await;
    match b {
        Err(ConnectError::TurnRefused { code, .. }) => assert_eq!(code, Some(401)),
        other => panic!("expected TurnRefused, got {other:?}"),
    }
    let a = bounded("a", a).await.unwrap();
    assert!(
        matches!(
            a,
            Err(ConnectError::TurnRefused { .. } | ConnectError::PeerLeft { .. })
        ),
        "{a:?}"
    );
}

#[tokio::test]
async fn a_full_room_is_refused() {
    let limits = Limits {
        max_room_size: 1,
        ..Limits::default()
    };
    let url = signaling(limits).await;
    let first = tokio::spawn(Peer::new(config(&url, "small")).unwrap().connect());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = bounded(
        "second",
        Peer::new(config(&url, "small")).unwrap().connect(),
    )
    .await;
    match second {
        Err(ConnectError::RoomFull { room }) => assert_eq!(room, "small"),
        other => panic!("expected RoomFull, got {other:?}"),
    }
    first.abort();
}

#[tokio::test]
async fn a_third_peer_in_a_paired_room_is_told_it_is_busy_at_once() {
    let url = signaling(Limits::default()).await;
    let (a, b) = pair(config(&url, "pair"), config(&url, "pair")).await;
    let started = std::time::Instant::now();
    let third = bounded("third", Peer::new(config(&url, "pair")).unwrap().connect()).await;
    match third {
        Err(e @ ConnectError::RoomBusy { .. }) => {
            assert!(e.to_string().contains("room \"pair\" is busy"), "{e}");
            assert!(e.to_string().contains("another room"), "{e}");
        }
        other => panic!("expected RoomBusy, got {other:?}"),
    }
    // Told at the join, not after an ICE timeout (15 s here).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The pair is undisturbed.
    deliver(&a, &b, b"still a pair").await;
}

#[tokio::test]
async fn an_unreachable_signaling_server_is_reported() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    drop(l);
    let r = bounded("connect", Peer::new(config(&url, "x")).unwrap().connect()).await;
    match r {
        Err(ConnectError::SignalingUnreachable { url: u, .. }) => assert_eq!(u, url),
        other => panic!("expected SignalingUnreachable, got {other:?}"),
    }
}

/// A scripted peer in room `room`: joins, answers the offer with
/// credentials, trickles the candidate `lines`, then ends its candidates.
async fn scripted_answerer(
    url: &str,
    room: &str,
    lines: Vec<String>,
) -> tokio::task::JoinHandle<()> {
    let mut fake = SignalingClient::connect(url).await.unwrap();
    fake.join(room, None, None).await.unwrap();
    tokio::spawn(async move {
        while let Ok(Some(m)) = fake.recv().await {
            if let ServerMsg::Offer { from, sdp } = m {
                let offer: p2p_sdp::SessionDescription = sdp.parse().unwrap();
                let params = p2p_sdp::DataChannelParams::new(
                    p2p_sdp::Ufrag::new("fake").unwrap(),
                    p2p_sdp::Pwd::new("fakefakefakefakefakefake").unwrap(),
                    p2p_sdp::Fingerprint::new("sha-256", vec![0; 32]).unwrap(),
                    p2p_sdp::Setup::Active,
                    1,
                );
                let answer =
                    p2p_sdp::SessionDescription::answer_data_channel(&offer, &params).unwrap();
                fake.send_answer(&from, &answer.to_string()).await.unwrap();
                for line in &lines {
                    fake.send_candidate(&from, p2p_signaling::IceCandidate::new(line.clone()))
                        .await
                        .unwrap();
                }
                fake.send_end_of_candidates(&from).await.unwrap();
            }
        }
    })
}

/// A scripted peer answers with one candidate pointing at a socket that
/// never answers. Every check fails: NoPath lists what was tried.
#[tokio::test]
async fn no_path_lists_the_candidates_tried() {
    let url = signaling(Limits::default()).await;
    let black_hole = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let hole = black_hole.local_addr().unwrap();
    let line = format!(
        "candidate:1 1 udp 2130706431 {} {} typ host",
        hole.ip(),
        hole.port()
    );
    let fake_task = scripted_answerer(&url, "nopath", vec![line]).await;
    let mut cfg = config(&url, "nopath");
    cfg.ice.check_retransmits.rto = Duration::from_millis(50);
    cfg.ice.check_retransmits.max_transmits = 2;
    let r = bounded("connect", Peer::new(cfg).unwrap().connect()).await;
    match r {
        Err(ConnectError::NoPath { local, remote }) => {
            assert!(
                local.iter().any(|l| l.starts_with("host 127.0.0.1:")),
                "{local:?}"
            );
            assert_eq!(remote, vec![format!("host {hole}")]);
        }
        other => panic!("expected NoPath, got {other:?}"),
    }
    fake_task.abort();
}

/// A browser hides its host address behind an mDNS name. The driver does
/// not resolve such names yet: it skips that candidate (a debug log says
/// so) and goes on with the next one, which is checked.
#[tokio::test]
async fn an_mdns_candidate_is_skipped_and_the_next_one_is_still_checked() {
    let url = signaling(Limits::default()).await;
    let black_hole = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let hole = black_hole.local_addr().unwrap();
    let lines = vec![
        "candidate:2 1 udp 2122260223 6c0b3b8a-5d6e-4d4b-9f5e-7f2b8a7c9d10.local 54323 typ host"
            .to_owned(),
        format!(
            "candidate:1 1 udp 2130706431 {} {} typ host",
            hole.ip(),
            hole.port()
        ),
    ];
    let fake_task = scripted_answerer(&url, "mdns", lines).await;
    let mut cfg = config(&url, "mdns");
    cfg.ice.check_retransmits.rto = Duration::from_millis(50);
    cfg.ice.check_retransmits.max_transmits = 2;
    let r = bounded("connect", Peer::new(cfg).unwrap().connect()).await;
    match r {
        Err(ConnectError::NoPath { remote, .. }) => {
            assert_eq!(remote, vec![format!("host {hole}")]);
        }
        other => panic!("expected NoPath, got {other:?}"),
    }
    fake_task.abort();
}

#[tokio::test]
async fn a_peer_that_leaves_before_connecting_is_reported() {
    let url = signaling(Limits::default()).await;
    let mut fake = SignalingClient::connect(&url).await.unwrap();
    fake.join("leaver", None, None).await.unwrap();
    let connecting = tokio::spawn(Peer::new(config(&url, "leaver")).unwrap().connect());
    // Wait until the peer joined, then leave.
    bounded("peer joins", fake.wait_for_peer()).await.unwrap();
    fake.leave(None).await.unwrap();
    let r = bounded("connect", connecting).await.unwrap();
    assert!(matches!(r, Err(ConnectError::PeerLeft { .. })), "{r:?}");
}

#[tokio::test]
async fn relay_only_without_a_turn_server_fails_at_the_join_with_the_servers_reason() {
    // A signaling server that hands out no TURN credentials: a lone
    // relay-only peer is told at once, without waiting for a peer.
    let url = signaling(Limits::default()).await;
    let lone = bounded(
        "lone",
        Peer::new(config(&url, "cfg").policy(Policy::RelayOnly))
            .unwrap()
            .connect(),
    )
    .await;
    match lone {
        Err(e @ ConnectError::NoRelay { .. }) => {
            let ConnectError::NoRelay { reason } = &e else {
                unreachable!()
            };
            assert_eq!(*reason, Some(RelayUnavailable::NotOffered), "{e}");
            assert!(e.to_string().contains("not-offered"), "{e}");
            assert!(e.to_string().contains("--turn URI"), "{e}");
        }
        other => panic!("expected NoRelay, got {other:?}"),
    }
    // A TURN server of its own is enough (it is not reached here: the
    // lone peer waits for a peer instead of failing).
    let own = Peer::new(
        config(&url, "cfg2").policy(Policy::RelayOnly).ice_server(
            "turn:127.0.0.1:9"
                .parse::<IceServerUri>()
                .unwrap()
                .with_credentials("u", "p"),
        ),
    )
    .unwrap()
    .connect();
    let waited = tokio::time::timeout(Duration::from_millis(300), own).await;
    assert!(
        waited.is_err(),
        "a configured TURN server still failed: {waited:?}"
    );
}

#[test]
fn turn_servers_need_credentials() {
    let uri: IceServerUri = "turn:127.0.0.1".parse().unwrap();
    let r = Peer::new(PeerConfig::new("ws://127.0.0.1:1/", "r").ice_server(uri));
    assert!(matches!(r, Err(ConnectError::BadIceServer(_))), "{r:?}");
}

/// [`deliver`], after a restart or a path change (the same: each message
/// goes on a channel of its own).
async fn deliver_fresh(from: &Connection, to: &Connection, msg: &[u8]) {
    deliver(from, to, msg).await;
}

/// ICE restart in the driver, started by either side: the new credentials
/// cross in `ice-restart` messages, both sides gather again (the TURN
/// allocation is renewed: the server refuses a second one on the same
/// 5-tuple, so the old one is kept and its relayed candidate signalled
/// again), check anew and select a path again; data flows after it.
#[tokio::test]
async fn ice_restart_from_either_side_reconnects() {
    let (url, _) = daemon().await;
    let checking = |mut c: PeerConfig| {
        c.check_list_interval = Some(Duration::from_millis(50));
        c
    };
    let (a, b) = pair(
        checking(config(&url, "restart")),
        checking(config(&url, "restart")),
    )
    .await;
    deliver(&a, &b, b"before").await;
    for c in [&a, &b] {
        until_event("connected", c, |e| {
            matches!(e, ConnectionEvent::Connected(_))
        })
        .await;
    }
    // The controlled side (a) restarts, then the controlling one (b).
    for (round, starter) in [(1, 'a'), (2, 'b')] {
        let c = if starter == 'a' { &a } else { &b };
        assert!(c.restart_ice().await.unwrap(), "round {round}");
        for (name, c) in [("a", &a), ("b", &b)] {
            let ev = until_event(name, c, |e| matches!(e, ConnectionEvent::Restarting)).await;
            assert!(!ev.is_empty());
            let mut ev =
                until_event(name, c, |e| matches!(e, ConnectionEvent::PathChanged(_))).await;
            assert!(c.selected_path().is_some());
            // The kept allocation's relayed candidate is signalled again
            // once the TURN server has answered, which may come before or
            // after the host path is selected; the check list that found
            // the new path follows it.
            let relay = |e: &ConnectionEvent| matches!(e, ConnectionEvent::LocalCandidate(l) if l.contains("typ relay"));
            let (mut seen_relay, mut seen_list) = (ev.iter().any(relay), false);
            ev.extend(
                until_event(name, c, |e| {
                    seen_relay |= relay(e);
                    seen_list |= matches!(e, ConnectionEvent::CheckList(_));
                    seen_relay && seen_list
                })
                .await,
            );
            assert!(
                ev.iter().any(relay),
                "round {round}, {name}: no relayed candidate signalled again: {ev:?}"
            );
            assert!(
                !ev.iter().any(|e| matches!(
                    e,
                    ConnectionEvent::TurnFailed { .. } | ConnectionEvent::TurnAllocated { .. }
                )),
                "round {round}, {name}: the allocation should be kept: {ev:?}"
            );
            let Some(stats) = ev.iter().rev().find_map(|e| match e {
                ConnectionEvent::CheckList(stats) => Some(stats),
                _ => None,
            }) else {
                unreachable!("until_event ended on a check list or after one")
            };
            assert!(
                stats.pairs.iter().any(|p| p.selected),
                "round {round}, {name}: {stats}"
            );
        }
        deliver_fresh(&a, &b, format!("a after restart {round}").as_bytes()).await;
        deliver_fresh(&b, &a, format!("b after restart {round}").as_bytes()).await;
    }
    a.close().await;
    b.close().await;
}

/// The daemon as [`daemon`] does, plus TURN over TLS with a self-signed
/// certificate for `localhost`. Returns (signaling URL, TLS address, the
/// certificate in DER).
async fn daemon_tls() -> (String, SocketAddr, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("p2p-connect-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let toml = format!(
        r#"
[stun]
listen = ["127.0.0.1:0"]
workers = 1
[tls]
listen = ["127.0.0.1:0"]
cert = {:?}
key = {:?}
[turn]
realm = "test"
auth_secret = "driver-test-secret"
allow_peer = ["127.0.0.0/8"]
[signaling]
listen = "127.0.0.1:0"
page = false
"#,
        cert.display().to_string(),
        key.display().to_string()
    );
    let config = p2p_server::Config::from_toml_str(&toml).unwrap();
    let server = bind(&config).await;
    let addrs = server.local_addrs().clone();
    tokio::spawn(server.run(std::future::pending()));
    // The server has read its certificate and key.
    let _ = std::fs::remove_dir_all(&dir);
    let sig = addrs.signaling.expect("signaling is served");
    (
        format!("ws://{sig}/ws"),
        addrs.tls[0],
        ck.cert.der().to_vec(),
    )
}

/// `turns:` (TURN over TLS, RFC 7065) with the server's self-signed
/// certificate as the trust root: both peers relay over TLS, and without
/// the root the server is refused (reported as a TURN failure).
#[tokio::test]
async fn relay_only_over_turns() {
    let (url, tls, der) = daemon_tls().await;
    let username = "4000000000:tls-test";
    let password = p2p_signaling::rest_credential(b"driver-test-secret", username);
    let uri: IceServerUri = format!("turns:localhost:{}", tls.port()).parse().unwrap();
    let cfg = |room: &str, roots: Vec<Vec<u8>>| {
        let mut c = config(&url, room)
            .policy(Policy::RelayOnly)
            .ice_server(uri.clone().with_credentials(username, password.clone()));
        c.tls_roots = roots;
        c
    };
    let (a, b) = pair(cfg("tls", vec![der.clone()]), cfg("tls", vec![der.clone()])).await;
    for c in [&a, &b] {
        let p = c.selected_path().expect("a selected path");
        assert_eq!(
            (p.local.kind, p.remote.kind),
            (CandidateKind::Relayed, CandidateKind::Relayed)
        );
    }
    deliver(&a, &b, b"over tls").await;
    deliver(&b, &a, b"back over tls").await;
    a.close().await;
    b.close().await;

    // No trust root: the TLS connection is refused before any TURN.
    let first = tokio::spawn(Peer::new(cfg("untrusted", Vec::new())).unwrap().connect());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = bounded(
        "untrusted",
        Peer::new(cfg("untrusted", Vec::new())).unwrap().connect(),
    )
    .await;
    match second {
        Err(ConnectError::TurnRefused {
            code: None, reason, ..
        }) => {
            assert!(reason.contains("cannot connect"), "{reason}");
        }
        other => panic!("expected TurnRefused, got {other:?}"),
    }
    let first = bounded("first untrusted", first).await.unwrap();
    assert!(
        matches!(
            first,
            Err(ConnectError::TurnRefused { .. } | ConnectError::PeerLeft { .. })
        ),
        "{first:?}"
    );
}

/// A TURN-only daemon (no signaling) on loopback address `ip` whose relayed
/// ports are `ports`, stopped when the returned sender is dropped or fired.
async fn turn_daemon(
    ip: &str,
    ports: (u16, u16),
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let toml = format!(
        r#"
[stun]
listen = ["{ip}:0"]
workers = 1
[turn]
realm = "test"
auth_secret = "driver-test-secret"
allow_peer = ["127.0.0.0/8"]
min_port = {}
max_port = {}
"#,
        ports.0, ports.1
    );
    let config = p2p_server::Config::from_toml_str(&toml).unwrap();
    let server = bind(&config).await;
    let addr = server.local_addrs().udp[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// The path dies while signaling stays up: both peers relay through two
/// TURN servers; the one carrying a's end of the selected pair is stopped.
/// Consent fails, the driver restarts ICE by itself (no `restart_ice`
/// call), gathers again (the stopped server's allocations fail, the other's
/// are kept) and the peers carry on through the surviving server.
#[tokio::test]
async fn a_dead_path_is_restarted_by_the_driver_through_another_relay() {
    let url = signaling(Limits::default()).await;
    // Two servers on two addresses, as two real TURN servers are: relayed
    // candidates from servers at one IP share a foundation (RFC 8445
    // §5.1.1.3), and the frozen algorithm would then check the survivor's
    // pairs only after the dead one's failed.
    let (x, stop_x) = turn_daemon("127.0.0.1", (41000, 41499)).await;
    let (y, stop_y) = turn_daemon("127.0.0.2", (41500, 41999)).await;
    let username = "4000000000:restart";
    let password = p2p_signaling::rest_credential(b"driver-test-secret", username);
    let uri = |addr: SocketAddr| {
        format!("turn:{addr}")
            .parse::<IceServerUri>()
            .unwrap()
            .with_credentials(username, password.clone())
    };
    let cfg = || {
        let mut c = config(&url, "dead-path")
            .policy(Policy::RelayOnly)
            .ice_server(uri(x))
            .ice_server(uri(y));
        c.ice.consent_interval = Duration::from_millis(200);
        c.ice.disconnected_timeout = Duration::from_millis(800);
        c.ice.consent_timeout = Duration::from_millis(1500);
        c
    };
    let (a, b) = pair(cfg(), cfg()).await;
    deliver(&a, &b, b"before").await;
    let before = a.selected_path().expect("a selected path");
    assert_eq!(before.local.kind, CandidateKind::Relayed);
    let on_x = |p: u16| (41000..41500).contains(&p);
    let x_ip: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(
        before.local.address.ip() == x_ip,
        on_x(before.local.address.port()),
        "{before:?}"
    );
    let (dead, alive) = if on_x(before.local.address.port()) {
        (stop_x, stop_y)
    } else {
        (stop_y, stop_x)
    };
    dead.send(()).unwrap();

    for (name, c) in [("a", &a), ("b", &b)] {
        let ev = until_event(name, c, |e| matches!(e, ConnectionEvent::PathChanged(_))).await;
        assert!(
            ev.iter().any(|e| matches!(e, ConnectionEvent::Restarting)),
            "{name}: no restart before the new path: {ev:?}"
        );
    }
    let after = a.selected_path().expect("a new path");
    assert_eq!(after.local.kind, CandidateKind::Relayed);
    assert_ne!(
        on_x(after.local.address.port()),
        on_x(before.local.address.port()),
        "a's new path must use the other relay: {before:?} then {after:?}"
    );
    deliver_fresh(&a, &b, b"after the restart").await;
    deliver_fresh(&b, &a, b"and back").await;
    a.close().await;
    b.close().await;
    drop(alive);
}

#[tokio::test]
async fn ice_tcp_gathers_tcp_candidates_and_checks_them_over_real_connections() {
    let url = signaling(Limits::default()).await;
    let tcp = |c: PeerConfig| c.ice_tcp(true);
    let (a, b) = pair(tcp(config(&url, "ice-tcp")), tcp(config(&url, "ice-tcp"))).await;
    // UDP ranks above TCP: the host path over UDP is selected.
    for c in [&a, &b] {
        let p = c.selected_path().expect("a selected path");
        assert_eq!(p.local.transport, p2p_connect::Transport::Udp, "{p:?}");
    }
    deliver(&a, &b, b"over udp").await;
    // Each side signalled a passive TCP candidate on a listener and an
    // active one on port 9; the active -> passive pairs were checked over
    // real connections (RFC 4571 framing both ways) and answered.
    let valid_tcp = bounded("a TCP pair answered", async {
        loop {
            let s = b.stats().await.unwrap();
            let tcp = |c: &p2p_connect::Candidate| c.transport() == p2p_connect::Transport::Tcp;
            let locals: Vec<_> = s.local_candidates.iter().filter(|c| tcp(c)).collect();
            assert_eq!(locals.len(), 2, "{s}");
            if s.pairs
                .iter()
                .any(|p| tcp(&p.local) && p.responses_received > 0)
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        valid_tcp
            .pairs
            .iter()
            .any(|p| p.valid && p.local.transport() == p2p_connect::Transport::Tcp),
        "{valid_tcp}"
    );
}

/// A receiver that stops calling `recv` holds the sender back: the
/// sender's `send` stops returning once what it handed over fills the
/// receiver's queue (1 MiB), SCTP's window (1 MiB) and its own high water
/// (1 MiB), so the receiver's memory stays bounded; once `recv` runs
/// again, every message arrives, in order.
#[tokio::test]
async fn a_receiver_that_stops_reading_holds_the_sender_back_and_loses_nothing() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    const MSG: usize = 16 * 1024;
    const COUNT: u64 = 512; // 8 MiB
    let url = signaling(Limits::default()).await;
    let (a, b) = pair(config(&url, "slow"), config(&url, "slow")).await;
    let tx = a
        .open_channel(ChannelOptions::new("bulk"))
        .await
        .expect("open");
    let rx = bounded("the channel", b.accept_channel())
        .await
        .expect("accepted");
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for i in 0..COUNT {
                let mut m = vec![(i % 251) as u8; MSG];
                m[..8].copy_from_slice(&i.to_be_bytes());
                if tx.send(m).await.is_err() {
                    break;
                }
                sent.store(i + 1, Ordering::Relaxed);
            }
            tx
        })
    };
    // Nobody reads for a while: the sender stalls well short of 8 MiB.
    let mut stalled = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sent.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        if sent.load(Ordering::Relaxed) == now && now > 0 {
            stalled = now;
            break;
        }
    }
    let bound = p2p_connect::HIGH_WATER + 2 * p2p_connect::DEFAULT_RECEIVE_QUEUE_LIMIT;
    assert!(
        stalled > 0 && stalled as usize * MSG <= bound + 4 * MSG,
        "the sender handed over {} bytes",
        stalled as usize * MSG
    );
    // The reader resumes: all of it, in order.
    for i in 0..COUNT {
        let m = bounded("a message", rx.recv()).await.expect("received");
        assert_eq!(m.data.len(), MSG);
        assert_eq!(m.data[..8], i.to_be_bytes(), "message {i} out of order");
        assert!(m.data[8..].iter().all(|b| *b == (i % 251) as u8));
    }
    let _tx = bounded("the sender", sender).await.unwrap();
    assert_eq!(sent.load(Ordering::Relaxed), COUNT);
}

/// A message over the peer's max-message-size (RFC 8841) is refused by
/// `send` with its length and the limit, in the middle of a stream of
/// messages under it: nothing of it is sent, and every message around it
/// arrives once, in order.
#[tokio::test]
async fn a_message_over_the_peers_limit_is_refused_and_the_messages_around_it_arrive_in_order() {
    use p2p_connect::SendError;
    const MSG: usize = 16 * 1024;
    const LIMIT: u32 = 32 * 1024;
    let url = signaling(Limits::default()).await;
    let mut small = config(&url, "limit");
    small.max_message_size = LIMIT;
    let (a, b) = pair(config(&url, "limit"), small).await;
    let tx = a
        .open_channel(ChannelOptions::new("sized"))
        .await
        .expect("open");
    let rx = bounded("the channel", b.accept_channel())
        .await
        .expect("accepted");
    let msg = |i: u8| vec![i; MSG];
    for i in 0..40u8 {
        bounded("a send", tx.send(msg(i))).await.expect("queued");
        if i == 20 {
            let big = vec![0xee; LIMIT as usize + 1];
            let r = bounded("the large send", tx.send(big)).await;
            assert_eq!(
                r,
                Err(SendError::TooLarge {
                    len: LIMIT as usize + 1,
                    max: LIMIT
                })
            );
        }
    }
    for i in 0..40u8 {
        let m = bounded("a message", rx.recv()).await.expect("received");
        assert_eq!(m.data, msg(i), "message {i}");
    }
    // Nothing else: the refused message was not sent.
    let extra = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
    assert!(extra.is_err(), "an unexpected message: {extra:?}");
}

/// A STUN server over TCP only (nothing on UDP): it answers each Binding
/// request with `ip` and the port the connection came from (the mapping
/// of a NAT that keeps ports) and tells where each connection came from.
async fn tcp_stun(ip: IpAddr) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<SocketAddr>) {
    use p2p_stun::attr::XorMappedAddress;
    use p2p_stun::{Message, MessageBuilder};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, from)) = l.accept().await {
            let _ = tx.send(from);
            tokio::spawn(async move {
                let mut head = [0u8; 20];
                while s.read_exact(&mut head).await.is_ok() {
                    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
                    let mut msg = head.to_vec();
                    msg.resize(20 + len, 0);
                    if s.read_exact(&mut msg[20..]).await.is_err() {
                        return;
                    }
                    let Ok(req) = Message::decode(&msg) else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut b =
                        MessageBuilder::new(&mut buf, req.typ().success(), req.transaction_id())
                            .unwrap();
                    let mapped = SocketAddr::new(ip, from.port());
                    b.add(&XorMappedAddress(mapped)).unwrap();
                    b.finish();
                    if s.write_all(&buf).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn a_passive_tcp_candidate_asks_stun_over_tcp_from_its_own_port_and_signals_the_mapping() {
    let url = signaling(Limits::default()).await;
    let nat: IpAddr = "192.0.2.77".parse().unwrap();
    let (stun, mut came_from) = tcp_stun(nat).await;
    let uri: IceServerUri = format!("stun:{stun}").parse().unwrap();
    let cfg = |room| config(&url, room).ice_tcp(true).ice_server(uri.clone());
    let (a, b) = pair(cfg("tcp-srflx"), cfg("tcp-srflx")).await;
    deliver(&a, &b, b"still over udp").await;
    let srflx = bounded("a server-reflexive TCP candidate", async {
        loop {
            let s = b.stats().await.unwrap();
            if let Some(c) = s.local_candidates.iter().find(|c| {
                c.kind() == CandidateKind::ServerReflexive
                    && c.transport() == p2p_connect::Transport::Tcp
            }) {
                return c.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // Its base is b's passive listener, its port the listener's own (the
    // connection to the server left from there), its type passive.
    let line = srflx.to_string();
    assert!(line.contains("tcptype passive"), "{line}");
    assert_eq!(srflx.address(), SocketAddr::new(nat, srflx.base().port()));
    let s = b.stats().await.unwrap();
    assert!(
        s.local_candidates
            .iter()
            .any(|c| c.kind() == CandidateKind::Host
                && c.transport() == p2p_connect::Transport::Tcp
                && c.address() == srflx.base()),
        "{s}"
    );
    let mut sources = Vec::new();
    while let Ok(from) = came_from.try_recv() {
        sources.push(from);
    }
    assert!(
        sources.contains(&srflx.base()),
        "connections from {sources:?}"
    );
}
