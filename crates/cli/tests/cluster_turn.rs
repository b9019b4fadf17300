//! Issue 16, TURN as a fleet: two `p2p serve` nodes on one real
//! `redis-server` share their REST secrets and publish their load; the
//! ICE servers a node hands out name the fleet's nodes with room; a node
//! at its quota answers Allocate with 300 Try Alternate and our TURN
//! client (and coturn's turnutils_uclient) allocates on the other node,
//! over TCP too (`p2p-connect` peers relay-only through `turn:…?transport=tcp`
//! connect through the other node); a secret rotated through Redis keeps
//! old and new credentials working until the old one is dropped.

mod common_cluster;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common_cluster::{free_port, redis_cli, wait_metric, Node, Redis, STEP};
use p2p_connect::{
    CandidateKind, ChannelOptions, Connection, ConnectionEvent, IceServerUri, Peer, PeerConfig,
    Policy,
};
use p2p_signaling::{rest_credential, SignalingClient};
use p2p_turn::{
    ClientConfig, ClientEvent, ClientOutput, Datagram, Machine, RestSecret, TurnClient,
};
use tokio::net::UdpSocket;

/// A TURN node of the fleet with a total quota.
fn turn_node(redis: &Redis, id: &str, quota: u32) -> Node {
    let quota = quota.to_string();
    Node::start(
        &redis.url(),
        id,
        &[
            "--realm",
            "fleet.test",
            "--auth-secret",
            "first-secret",
            "--total-quota",
            &quota,
            "--allow-peer",
            "127.0.0.0/8",
            // Welcomes come often from one address here.
            "--turn-credentials",
            "welcome",
            "--credential-rate",
            "100000",
            "--credential-burst",
            "100000",
        ],
    )
}

/// REST credentials for `secret`, valid for an hour.
fn creds(secret: &str) -> (String, String) {
    let user = RestSecret::username(SystemTime::now() + Duration::from_secs(3600), "t");
    let pass = RestSecret::new(secret.as_bytes()).password(&user);
    (user, pass)
}

/// Runs one TurnClient over a real UDP socket until it allocates or fails
/// (at most [`STEP`]); returns its events. The client stays allocated
/// (returned) so that the node's count holds.
async fn allocate(server: SocketAddr, user: &str, pass: &str) -> (TurnClient, Vec<ClientEvent>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let local = sock.local_addr().expect("addr");
    let mut client = TurnClient::new(ClientConfig::new(local, server, user, pass));
    let mut events = Vec::new();
    let until = tokio::time::Instant::now() + STEP;
    let mut buf = vec![0u8; 2048];
    client.handle_timeout(Instant::now());
    loop {
        while let Some(o) = client.poll_output() {
            match o {
                ClientOutput::Transmit(t) => {
                    sock.send_to(&t.contents, t.destination)
                        .await
                        .expect("send");
                }
                ClientOutput::Event(e) => events.push(e),
                _ => {}
            }
        }
        if events.iter().any(|e| {
            matches!(
                e,
                ClientEvent::Allocated { .. } | ClientEvent::AllocationFailed { .. }
            )
        }) {
            return (client, events);
        }
        let wake = client
            .poll_timeout()
            .map_or(until, tokio::time::Instant::from_std)
            .min(until);
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, from) = r.expect("recv");
                let d = Datagram::new(p2p_turn::Transport::Udp, from, local, &buf[..n]);
                let _ = client.handle_input(Instant::now(), d);
            }
            () = tokio::time::sleep_until(wake) => {
                assert!(tokio::time::Instant::now() < until, "no answer: {events:?}");
                client.handle_timeout(Instant::now());
            }
        }
    }
}

fn allocated(events: &[ClientEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, ClientEvent::Allocated { .. }))
}

/// The `turn:` URLs of a welcome from `node`, and its TURN username and
/// credential.
async fn welcome(node: &Node) -> (Vec<String>, String, String) {
    let c = tokio::time::timeout(STEP, SignalingClient::connect(&node.url))
        .await
        .expect("in time")
        .expect("connect");
    let turn = c
        .ice_servers()
        .iter()
        .find(|s| s.username.is_some())
        .expect("a TURN server with credentials")
        .clone();
    (
        turn.urls,
        turn.username.unwrap_or_default(),
        turn.credential.unwrap_or_default(),
    )
}

fn url_of(a: SocketAddr) -> String {
    format!("turn:{}:{}?transport=udp", a.ip(), a.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_redirects_to_a_node_with_room_and_welcome_names_the_fleet() {
    let redis = Redis::start(free_port());
    let a = turn_node(&redis, "full", 1);
    let b = turn_node(&redis, "roomy", 10);
    let (a_udp, b_udp) = (a.udp.expect("a udp"), b.udp.expect("b udp"));
    // Each node reads both loads.
    assert_eq!(wait_metric(&a, "p2p_cluster_turn_nodes", |v| v == 2.0), 2.0);
    assert_eq!(wait_metric(&b, "p2p_cluster_turn_nodes", |v| v == 2.0), 2.0);
    // A has room: it names itself first, then B.
    let (urls, _, _) = welcome(&a).await;
    let first_b = urls.iter().position(|u| *u == url_of(b_udp));
    let first_a = urls.iter().position(|u| *u == url_of(a_udp));
    assert!(
        matches!((first_a, first_b), (Some(i), Some(j)) if i < j),
        "{urls:?}"
    );
    // A knows where to send what it cannot take.
    assert_eq!(
        wait_metric(&a, "p2p_cluster_turn_alternates", |v| v == 1.0),
        1.0
    );
    // The first allocation fills A; the second is redirected to B.
    let (user, pass) = creds("first-secret");
    let (_one, ev) = allocate(a_udp, &user, &pass).await;
    assert!(allocated(&ev), "{ev:?}");
    let (two, ev) = allocate(a_udp, &user, &pass).await;
    assert!(
        ev.contains(&ClientEvent::Redirected {
            from: a_udp,
            to: b_udp,
            domain: None,
        }),
        "{ev:?}"
    );
    assert!(allocated(&ev), "{ev:?}");
    assert_eq!(two.server(), b_udp);
    assert_eq!(
        wait_metric(&a, "p2p_cluster_turn_redirects_total", |v| v == 1.0),
        1.0
    );
    assert_eq!(
        wait_metric(&b, "p2p_cluster_turn_allocations", |v| v == 1.0),
        1.0
    );
    // coturn's turnutils_uclient follows the 300 too (its probe Allocate
    // learns the alternate, its real one goes there) and relays through B
    // without loss.
    let peer_port = free_port();
    let mut peer = std::process::Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("turnutils_peer (Debian: coturn)");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("timeout")
            .args(["60", "turnutils_uclient", "-u", "uc", "-W", "first-secret"])
            .args([
                "-p",
                &a_udp.port().to_string(),
                "-s",
                "-c",
                "-e",
                "127.0.0.1",
            ])
            .args([
                "-r",
                &peer_port.to_string(),
                "-n",
                "20",
                "-m",
                "1",
                "-l",
                "120",
            ])
            .arg("127.0.0.1")
            .output()
            .expect("turnutils_uclient (Debian: coturn)")
    })
    .await
    .expect("uclient");
    let _ = peer.kill();
    let _ = peer.wait();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("tot_send_msgs=20, tot_recv_msgs=20"),
        "turnutils_uclient: {text}"
    );
    assert!(
        wait_metric(&a, "p2p_cluster_turn_redirects_total", |v| v >= 2.0) >= 2.0,
        "uclient was redirected"
    );
    // A is full now: once its load is published, it hands out B, not itself.
    let until = Instant::now() + STEP;
    let urls = loop {
        let (urls, _, _) = welcome(&a).await;
        if !urls.contains(&url_of(a_udp)) || Instant::now() > until {
            break urls;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!urls.contains(&url_of(a_udp)), "{urls:?}");
    assert!(urls.contains(&url_of(b_udp)), "{urls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_keeps_old_and_new_credentials_until_the_old_is_dropped() {
    let redis = Redis::start(free_port());
    let a = turn_node(&redis, "r1", 0);
    let b = turn_node(&redis, "r2", 0);
    let b_udp = b.udp.expect("b udp");
    // The first node seeded the cluster's list with its secret.
    assert_eq!(
        wait_metric(&b, "p2p_cluster_turn_secrets", |v| v == 1.0),
        1.0
    );
    assert_eq!(
        redis_cli(&redis, &["LRANGE", "p2p:turn-secrets", "0", "-1"]),
        "first-secret"
    );
    let (old_user, old_pass) = creds("first-secret");
    let (new_user, new_pass) = creds("second-secret");
    let (_c, ev) = allocate(b_udp, &new_user, &new_pass).await;
    assert!(
        ev.iter().any(|e| matches!(
            e,
            ClientEvent::AllocationFailed {
                code: Some(401),
                ..
            }
        )),
        "a secret not yet shared is refused: {ev:?}"
    );
    // Rotate: the new secret first (it signs), the old one still accepted.
    redis_cli(&redis, &["LPUSH", "p2p:turn-secrets", "second-secret"]);
    for n in [&a, &b] {
        assert_eq!(
            wait_metric(n, "p2p_cluster_turn_secrets", |v| v == 2.0),
            2.0
        );
    }
    let (_c1, ev) = allocate(b_udp, &old_user, &old_pass).await;
    assert!(
        allocated(&ev),
        "old credentials during the rotation: {ev:?}"
    );
    let (_c2, ev) = allocate(b_udp, &new_user, &new_pass).await;
    assert!(
        allocated(&ev),
        "new credentials during the rotation: {ev:?}"
    );
    // What a node hands out is signed with the new secret.
    let (_, user, credential) = welcome(&a).await;
    assert_eq!(credential, rest_credential(b"second-secret", &user));
    // The old credentials' lifetime is over: drop the old secret.
    redis_cli(&redis, &["LREM", "p2p:turn-secrets", "0", "first-secret"]);
    assert_eq!(
        wait_metric(&b, "p2p_cluster_turn_secrets", |v| v == 1.0),
        1.0
    );
    let (_c3, ev) = allocate(b_udp, &old_user, &old_pass).await;
    assert!(
        ev.iter().any(|e| matches!(
            e,
            ClientEvent::AllocationFailed {
                code: Some(401),
                ..
            }
        )),
        "old credentials after the old secret is dropped: {ev:?}"
    );
    let (_c4, ev) = allocate(b_udp, &new_user, &new_pass).await;
    assert!(allocated(&ev), "{ev:?}");
}

/// A relay-only `p2p-connect` peer whose one TURN server is `uri`, with
/// REST credentials of `secret`.
fn relay_only_through(signaling: &str, uri: &str, secret: &str, roots: Vec<Vec<u8>>) -> PeerConfig {
    let (user, pass) = creds(secret);
    let uri: IceServerUri = uri.parse().expect("a TURN URI");
    let mut c = PeerConfig::new(signaling, "redirected")
        .local_addresses([IpAddr::V4(Ipv4Addr::LOCALHOST)])
        .include_loopback(true)
        .policy(Policy::RelayOnly)
        .ice_server(uri.with_credentials(user, pass))
        .connect_timeout(Duration::from_secs(20))
        .peer_timeout(Duration::from_secs(20));
    c.tls_roots = roots;
    c
}

/// The events of `c` up to its `Connected` (the stream keeps those of the
/// way there).
async fn events_until_connected(c: &Connection) -> Vec<ConnectionEvent> {
    let mut seen = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(e) = c.next_event().await {
            let done = matches!(e, ConnectionEvent::Connected(_));
            seen.push(e);
            if done {
                return;
            }
        }
    })
    .await;
    assert!(all.is_ok(), "not connected: {seen:?}");
    seen
}

/// A CA and a certificate for `localhost` signed by it, in files for
/// `p2p serve --tls-cert/--tls-key`. Removed when dropped.
struct Cert {
    ca: Vec<u8>,
    dir: std::path::PathBuf,
}

impl Cert {
    fn new() -> Cert {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .signed_by(&key, &ca, &ca_key)
            .expect("cert");
        let dir = std::env::temp_dir().join(format!("p2p-cluster-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("cert.pem"), leaf.pem()).expect("cert");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("key");
        Cert {
            ca: ca.der().to_vec(),
            dir,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().expect("utf-8 path").to_owned()
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Two TURN nodes, A full after one allocation, B with room; two
/// relay-only `p2p-connect` peers whose one TURN server is A over TCP
/// (or `turns:`, TLS, with both nodes on one certificate for localhost)
/// are redirected by A, allocate on B over a new connection of the same
/// transport, connect through B and exchange data.
async fn peers_redirected_over(tls: bool) {
    let redis = Redis::start(free_port());
    let cert = tls.then(Cert::new);
    let tls_args: Vec<String> = cert.as_ref().map_or_else(Vec::new, |c| {
        vec![
            "--tls-cert".into(),
            c.path("cert.pem"),
            "--tls-key".into(),
            c.path("key.pem"),
            "--tls-listen".into(),
            "127.0.0.1:0".into(),
        ]
    });
    let node = |id: &str, quota: &str| {
        let mut args: Vec<&str> = vec![
            "--realm",
            "fleet.test",
            "--auth-secret",
            "first-secret",
            "--total-quota",
            quota,
            "--allow-peer",
            "127.0.0.0/8",
        ];
        args.extend(tls_args.iter().map(String::as_str));
        Node::start(&redis.url(), id, &args)
    };
    let a = node("full", "1");
    let b = node("roomy", "10");
    let (a_udp, b_udp) = (a.udp.expect("a udp"), b.udp.expect("b udp"));
    // Where the peers reach A, and where B is expected to be reached.
    let (uri, from, to) = if tls {
        let (a_tls, b_tls) = (a.tls.expect("a tls"), b.tls.expect("b tls"));
        (
            format!("turns:localhost:{}?transport=tcp", a_tls.port()),
            a_tls,
            b_tls,
        )
    } else {
        // A's TCP port is its UDP port.
        (format!("turn:{a_udp}?transport=tcp"), a_udp, b_udp)
    };
    assert_eq!(
        wait_metric(&a, "p2p_cluster_turn_alternates", |v| v == 1.0),
        1.0
    );
    // One allocation fills A.
    let (user, pass) = creds("first-secret");
    let (_filler, ev) = allocate(a_udp, &user, &pass).await;
    assert!(allocated(&ev), "{ev:?}");
    let roots = cert.as_ref().map_or_else(Vec::new, |c| vec![c.ca.clone()]);
    let cfg = relay_only_through(&a.url, &uri, "first-secret", roots);
    let first = tokio::spawn(Peer::new(cfg.clone()).expect("peer").connect());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = Peer::new(cfg).expect("peer").connect().await;
    let first = first.await.expect("task");
    let (x, y) = match (first, second) {
        (Ok(x), Ok(y)) => (x, y),
        (x, y) => panic!("tls {tls}: first: {:?}, second: {:?}", x.err(), y.err()),
    };
    for c in [&x, &y] {
        let seen = events_until_connected(c).await;
        assert!(
            seen.contains(&ConnectionEvent::TurnRedirected { from, to }),
            "tls {tls}: {seen:?}"
        );
        assert!(
            seen.iter().any(|e| matches!(
                e,
                ConnectionEvent::TurnAllocated { server, .. } if *server == to
            )),
            "tls {tls}: {seen:?}"
        );
        let path = c.selected_path().expect("a path");
        assert_eq!(path.local.kind, CandidateKind::Relayed);
    }
    // Data flows through B's relays.
    let sent = x
        .open_channel(ChannelOptions::new("via B"))
        .await
        .expect("open");
    sent.send(Bytes::from_static(b"redirected, through B"))
        .await
        .expect("sent");
    let got = tokio::time::timeout(STEP, y.accept_channel())
        .await
        .expect("in time")
        .expect("accepted");
    let m = tokio::time::timeout(STEP, got.recv())
        .await
        .expect("in time")
        .expect("received");
    assert_eq!(&m.data[..], b"redirected, through B");
    assert!(wait_metric(&a, "p2p_cluster_turn_redirects_total", |v| v >= 2.0) >= 2.0);
    assert_eq!(
        wait_metric(&b, "p2p_cluster_turn_allocations", |v| v == 2.0),
        2.0
    );
    x.close().await;
    y.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_redirects_p2p_connect_peers_over_tcp_and_they_connect_through_the_other() {
    peers_redirected_over(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_redirects_turns_peers_to_the_other_nodes_tls_port() {
    peers_redirected_over(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_signaling_joins_the_fleet_is_redirected_to_and_handed_out() {
    let redis = Redis::start(free_port());
    // A serves TURN only; B serves signaling and TURN, and is full after
    // one allocation.
    let a = Node::start(
        &redis.url(),
        "turn-only",
        &[
            "--no-signaling",
            "--realm",
            "fleet.test",
            "--auth-secret",
            "first-secret",
            "--total-quota",
            "10",
            "--allow-peer",
            "127.0.0.0/8",
        ],
    );
    let b = turn_node(&redis, "signaling-full", 1);
    let (a_udp, b_udp) = (a.udp.expect("a udp"), b.udp.expect("b udp"));
    for n in [&a, &b] {
        assert_eq!(wait_metric(n, "p2p_cluster_turn_nodes", |v| v == 2.0), 2.0);
    }
    assert_eq!(
        wait_metric(&b, "p2p_cluster_turn_alternates", |v| v == 1.0),
        1.0
    );
    let (user, pass) = creds("first-secret");
    let (_one, ev) = allocate(b_udp, &user, &pass).await;
    assert!(allocated(&ev), "{ev:?}");
    let (two, ev) = allocate(b_udp, &user, &pass).await;
    assert!(
        ev.contains(&ClientEvent::Redirected {
            from: b_udp,
            to: a_udp,
            domain: None,
        }),
        "{ev:?}"
    );
    assert!(allocated(&ev), "{ev:?}");
    assert_eq!(two.server(), a_udp);
    assert_eq!(
        wait_metric(&a, "p2p_cluster_turn_allocations", |v| v == 1.0),
        1.0
    );
    // B, full, hands out A.
    let until = Instant::now() + STEP;
    let urls = loop {
        let (urls, _, _) = welcome(&b).await;
        if (urls.contains(&url_of(a_udp)) && !urls.contains(&url_of(b_udp)))
            || Instant::now() > until
        {
            break urls;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(urls.contains(&url_of(a_udp)), "{urls:?}");
    assert!(!urls.contains(&url_of(b_udp)), "{urls:?}");
}
