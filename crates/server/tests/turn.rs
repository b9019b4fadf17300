//! TURN in the daemon, on loopback, with `p2p_turn::TurnClient` as the
//! client: allocate, permission, Send/Data and ChannelData round trips over
//! UDP, TCP and TLS; the default peer policy (403) and `allow_peer`; a
//! stale nonce recovered; wrong credentials (401, the same for a wrong
//! password and an unknown user); the per-user quota (486); REST API
//! credentials; the metrics endpoint. Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use p2p_server::Config;
use p2p_stun::attr::PasswordAlgorithm;
use p2p_turn::Machine;
use p2p_turn::{ClientEvent, RestSecret, Transport};
use tokio::net::TcpStream;
async fn round_trip(
    c: &mut Client,
    peer: SocketAddr,
    peer_saw: &mut tokio::sync::mpsc::UnboundedReceiver<SocketAddr>,
) {
    let relayed = c.allocate().await.expect("allocated");
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    c.permit(peer).await.expect("permission");
    c.echo(peer, b"by Send indication").await;
    assert_eq!(
        peer_saw.recv().await,
        Some(relayed),
        "the peer hears the relayed address"
    );
    let n = c.bind(peer).await;
    assert!((0x4000..=0x4FFF).contains(&n));
    c.echo(peer, b"by ChannelData").await;
    c.echo(peer, &[7u8; 1201]).await; // odd length: padding over streams
}

#[tokio::test]
async fn udp_send_data_and_channel_data_round_trip_and_metrics() {
    tokio::time::timeout(BOUND, async {
        let srv = start(OPEN).await;
        let (peer, mut saw) = echo_peer().await;
        let mut c = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
        round_trip(&mut c, peer, &mut saw).await;

        let m = scrape(srv.metrics.unwrap()).await;
        assert_eq!(sample(&m, "p2p_turn_enabled"), 1);
        assert_eq!(sample(&m, "p2p_turn_allocations{transport=\"udp\"}"), 1);
        assert_eq!(sample(&m, "p2p_turn_permissions{transport=\"udp\"}"), 1);
        assert_eq!(sample(&m, "p2p_turn_channels{transport=\"udp\"}"), 1);
        assert_eq!(
            sample(
                &m,
                "p2p_turn_relayed_packets_to_peer_total{transport=\"udp\"}"
            ),
            3
        );
        assert_eq!(
            sample(
                &m,
                "p2p_turn_relayed_packets_to_client_total{transport=\"udp\"}"
            ),
            3
        );
        assert_eq!(
            sample(
                &m,
                "p2p_turn_relayed_bytes_to_peer_total{transport=\"udp\"}"
            ),
            (18 + 14 + 1201) as u64
        );
        assert_eq!(
            sample(
                &m,
                "p2p_turn_relayed_packets_to_peer_total{transport=\"tcp\"}"
            ),
            0
        );
        assert_eq!(
            sample(&m, "p2p_turn_auth_failures_total{transport=\"udp\"}"),
            0
        );
        // The two ChannelData echoes went both ways on the fast path (and
        // are in the totals above).
        assert_eq!(sample(&m, "p2p_turn_fast_path_packets_total"), 4);

        c.close().await;
        let m = scrape(srv.metrics.unwrap()).await;
        assert_eq!(sample(&m, "p2p_turn_allocations{transport=\"udp\"}"), 0);
        assert_eq!(sample(&m, "p2p_turn_allocations_deleted_total"), 1);
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn without_the_fast_path_channel_data_goes_through_the_turn_task() {
    tokio::time::timeout(BOUND, async {
        let srv =
            start(&OPEN.replace("[turn.users]", "relay_fast_path = false\n[turn.users]")).await;
        let (peer, mut saw) = echo_peer().await;
        let mut c = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
        round_trip(&mut c, peer, &mut saw).await;
        let m = scrape(srv.metrics.unwrap()).await;
        assert_eq!(sample(&m, "p2p_turn_fast_path_packets_total"), 0);
        assert_eq!(
            sample(
                &m,
                "p2p_turn_relayed_packets_to_client_total{transport=\"udp\"}"
            ),
            3
        );
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn the_fast_path_ends_with_the_allocation() {
    tokio::time::timeout(BOUND, async {
        let srv = start(OPEN).await;
        let metrics = srv.metrics.unwrap();
        let (peer, mut saw) = echo_peer().await;
        let mut c = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
        round_trip(&mut c, peer, &mut saw).await;
        let channel = c.turn.channel(peer).expect("a channel");
        c.close().await;
        while saw.try_recv().is_ok() {} // what the round trip left
        let fast = sample(&scrape(metrics).await, "p2p_turn_fast_path_packets_total");
        // ChannelData on the old channel, by hand: no route may relay it.
        let mut cd = channel.to_be_bytes().to_vec();
        cd.extend_from_slice(&4u16.to_be_bytes());
        cd.extend_from_slice(b"late");
        let Link::Udp(sock) = &c.link else {
            unreachable!("a UDP client")
        };
        sock.send_to(&cd, srv.udp).await.unwrap();
        // The checked path drops it for want of an allocation.
        let series = "p2p_turn_dropped_total{reason=\"no_allocation\"}";
        let deadline = tokio::time::Instant::now() + STEP;
        let m = loop {
            let m = scrape(metrics).await;
            if sample(&m, series) == 1 {
                break m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never dropped:\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(sample(&m, "p2p_turn_fast_path_packets_total"), fast);
        if let Ok(from) = saw.try_recv() {
            panic!("the peer heard from {from} after the allocation ended");
        }
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn md5_and_userhash_clients_are_served() {
    tokio::time::timeout(BOUND, async {
        let srv = start(OPEN).await;
        let (peer, _saw) = echo_peer().await;
        let mut md5 = Client::udp(srv.udp, "alice", "secret", |c| {
            c.password_algorithms = vec![PasswordAlgorithm::Md5];
        })
        .await;
        md5.allocate().await.expect("MD5 allocation");
        md5.permit(peer).await.unwrap();
        md5.echo(peer, b"md5").await;
        let mut hashed = Client::udp(srv.udp, "bob", "hunter2", |c| c.use_userhash = true).await;
        hashed.allocate().await.expect("USERHASH allocation");
        hashed.permit(peer).await.unwrap();
        hashed.echo(peer, b"userhash").await;
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn tcp_send_data_and_channel_data_round_trip() {
    tokio::time::timeout(BOUND, async {
        let srv = start(OPEN).await;
        let (peer, mut saw) = echo_peer().await;
        let mut c = Client::tcp(srv.tcp.unwrap(), "alice", "secret").await;
        round_trip(&mut c, peer, &mut saw).await;
        let m = scrape(srv.metrics.unwrap()).await;
        assert_eq!(sample(&m, "p2p_turn_allocations{transport=\"tcp\"}"), 1);
        assert_eq!(
            sample(
                &m,
                "p2p_turn_relayed_packets_to_client_total{transport=\"tcp\"}"
            ),
            3
        );
        // Binding still goes to the STUN responder on the same connection's port.
        c.close().await;
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn tls_round_trip() {
    tokio::time::timeout(BOUND, async {
        let dir = std::env::temp_dir().join(format!("p2p-turn-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        let text = format!(
            "[stun]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\n[tls]\nlisten = [\"127.0.0.1:0\"]\ncert = {:?}\nkey = {:?}\n{OPEN}",
            cert.display().to_string(),
            key.display().to_string()
        );
        let srv = start_cfg(Config::from_toml_str(&text).unwrap()).await;
        let server = srv.tls.unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let tcp = TcpStream::connect(server).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let s = connector.connect(name, tcp).await.unwrap();
        let mut c = Client::stream(Box::new(s), local, server, Transport::Tls, "alice", "secret").await;
        let (peer, mut saw) = echo_peer().await;
        round_trip(&mut c, peer, &mut saw).await;
        c.close().await;
        srv.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn loopback_peers_are_refused_by_default_and_deny_wins() {
    tokio::time::timeout(BOUND, async {
        let srv = start("[turn]\nrealm = \"example.org\"\n[turn.users]\nalice = \"secret\"\n").await;
        let (peer, _saw) = echo_peer().await;
        let mut c = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
        c.allocate().await.expect("allocated");
        // 127.0.0.1 is the relay IP (relay to relay is allowed, see
        // relay_to_relay_on_one_server_but_not_to_its_own_ports); other
        // loopback and private addresses are refused.
        let other_loopback: SocketAddr = "127.0.0.5:9".parse().unwrap();
        assert_eq!(c.permit(other_loopback).await, Err(Some(403)));
        let private: SocketAddr = "10.1.2.3:9".parse().unwrap();
        assert_eq!(c.permit(private).await, Err(Some(403)));
        srv.stop().await;

        let srv = start(
            "[turn]\nrealm = \"example.org\"\nallow_peer = [\"127.0.0.0/8\"]\ndeny_peer = [\"127.0.0.2/32\"]\n[turn.users]\nalice = \"secret\"\n",
        )
        .await;
        let mut c = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
        c.allocate().await.expect("allocated");
        c.permit(peer).await.expect("127.0.0.1 allowed");
        let denied: SocketAddr = "127.0.0.2:9".parse().unwrap();
        assert_eq!(c.permit(denied).await, Err(Some(403)));
        srv.stop().await;
    })
    .await
    .expect("in time");
}

/// Two clients both forced to TURN reach each other's relayed addresses
/// through one server, while the server's own listening ports stay closed
/// to relayed data (CVE-2020-26262). This server relays on 127.0.0.1, so
/// it takes 127.0.0.0/8 allowed: with the default policy a loopback relay
/// IP is refused like any loopback peer (the sans-IO test
/// `relay_to_relay_works_and_own_service_ports_stay_closed` covers a public
/// relay IP with the default policy).
#[tokio::test]
async fn relay_to_relay_on_one_server_but_not_to_its_own_ports() {
    tokio::time::timeout(BOUND, async {
        let users = "[turn.users]\nalice = \"secret\"\nbob = \"hunter2\"\n";
        {
            let srv = start(&format!("[turn]\nrealm = \"example.org\"\n{users}")).await;
            let mut a = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
            let mut b = Client::udp(srv.udp, "bob", "hunter2", |_| {}).await;
            a.allocate().await.expect("allocated");
            let rb = b.allocate().await.expect("allocated");
            assert_eq!(a.permit(rb).await, Err(Some(403)), "loopback stays refused");
            srv.stop().await;
        }
        {
            let toml = OPEN.to_owned();
            let srv = start(&toml).await;
            let mut a = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
            let mut b = Client::udp(srv.udp, "bob", "hunter2", |_| {}).await;
            let ra = a.allocate().await.expect("allocated");
            let rb = b.allocate().await.expect("allocated");
            a.permit(rb).await.expect("the relay IP is permitted");
            b.permit(ra).await.expect("the relay IP is permitted");
            let data_from = |from: SocketAddr, want: &'static [u8]| {
                move |e: &ClientEvent| match e {
                    ClientEvent::Data { peer, data } if *peer == from && data == want => Some(()),
                    _ => None,
                }
            };
            // a → b by Send indication, b → a over a channel.
            a.turn.send_to(rb, b"to bob").unwrap();
            a.flush().await;
            b.until("alice's data", data_from(ra, b"to bob")).await;
            b.bind(ra).await;
            b.turn.send_to(ra, b"to alice").unwrap();
            b.flush().await;
            a.until("bob's data", data_from(rb, b"to alice")).await;

            // Data to the server's own listening port is dropped: what
            // follows it arrives, and the drop is counted by then.
            let dropped = "p2p_turn_dropped_total{reason=\"no_permission\"}";
            let before = sample(&scrape(srv.metrics.unwrap()).await, dropped);
            a.turn.send_to(srv.udp, b"attack").unwrap();
            // The metrics port was configured as port 0: known only once
            // bound, and still never a peer (with 127.0.0.0/8 allowed too).
            let metrics = srv.metrics.unwrap();
            a.turn.send_to(metrics, b"attack").unwrap();
            a.turn.send_to(rb, b"after").unwrap();
            a.flush().await;
            b.until("alice's next data", data_from(ra, b"after")).await;
            let after = sample(&scrape(srv.metrics.unwrap()).await, dropped);
            assert_eq!(after, before + 2, "{toml}");
            srv.stop().await;
        }
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_stale_nonce_is_recovered() {
    tokio::time::timeout(BOUND, async {
        let text = "[turn]\nrealm = \"example.org\"\nallow_peer = [\"127.0.0.0/8\"]\nnonce_lifetime_secs = 1\n[turn.users]\nalice = \"secret\"\n";
        let srv = start(text).await;
        let (peer, _saw) = echo_peer().await;
        let mut c = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
        c.allocate().await.expect("allocated");
        let before = sample(&scrape(srv.metrics.unwrap()).await, "p2p_turn_error_responses_total");
        // Let the nonce go stale (its lifetime is counted in whole seconds).
        tokio::time::sleep(Duration::from_millis(2100)).await;
        c.permit(peer).await.expect("permission after 438");
        c.echo(peer, b"after a stale nonce").await;
        let after = sample(&scrape(srv.metrics.unwrap()).await, "p2p_turn_error_responses_total");
        assert_eq!(after, before + 1, "exactly one 438 was answered");
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn wrong_credentials_get_a_plain_401() {
    tokio::time::timeout(BOUND, async {
        let srv = start(OPEN).await;
        let mut wrong_pass = Client::udp(srv.udp, "alice", "nope", |_| {}).await;
        assert_eq!(wrong_pass.allocate().await, Err(Some(401)));
        let mut no_user = Client::tcp(srv.tcp.unwrap(), "mallory", "secret").await;
        assert_eq!(no_user.allocate().await, Err(Some(401)));
        // The two failures look alike to the client: same code, same reason.
        let reason = |c: &Client| {
            c.seen.iter().find_map(|e| match e {
                ClientEvent::AllocationFailed { reason, .. } => Some(reason.clone()),
                _ => None,
            })
        };
        assert_eq!(reason(&wrong_pass), reason(&no_user));
        let m = scrape(srv.metrics.unwrap()).await;
        assert_eq!(
            sample(&m, "p2p_turn_auth_failures_total{transport=\"udp\"}"),
            1
        );
        assert_eq!(
            sample(&m, "p2p_turn_auth_failures_total{transport=\"tcp\"}"),
            1
        );
        assert_eq!(sample(&m, "p2p_turn_allocations{transport=\"udp\"}"), 0);
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn the_user_quota_answers_486() {
    tokio::time::timeout(BOUND, async {
        let srv = start(&OPEN.replace("[turn.users]", "user_quota = 1\n[turn.users]")).await;
        let mut first = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
        first.allocate().await.expect("first allocation");
        let mut second = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
        assert_eq!(second.allocate().await, Err(Some(486)));
        // Another user is not affected.
        let mut bob = Client::udp(srv.udp, "bob", "hunter2", |_| {}).await;
        bob.allocate().await.expect("bob's allocation");
        // Freed quota can be used again.
        first.close().await;
        let mut third = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
        third.allocate().await.expect("after the first was deleted");
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn rest_api_credentials_work_and_expire() {
    tokio::time::timeout(BOUND, async {
        let srv = start("[turn]\nrealm = \"example.org\"\nauth_secret = \"s3cret\"\nallow_peer = [\"127.0.0.0/8\"]\n").await;
        let rest = RestSecret::new("s3cret");
        let user = RestSecret::username(SystemTime::now() + Duration::from_secs(3600), "alice");
        let (peer, _saw) = echo_peer().await;
        let mut c = Client::udp(srv.udp, &user, &rest.password(&user), |_| {}).await;
        c.allocate().await.expect("REST allocation");
        c.permit(peer).await.unwrap();
        c.echo(peer, b"rest").await;
        let old = RestSecret::username(SystemTime::now() - Duration::from_secs(10), "alice");
        let mut expired = Client::udp(srv.udp, &old, &rest.password(&old), |_| {}).await;
        assert_eq!(expired.allocate().await, Err(Some(401)));
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn without_turn_settings_turn_stays_off_and_allocate_is_400() {
    tokio::time::timeout(BOUND, async {
        // (A realm without users or a secret is refused at start: see
        // config::effect's tests.)
        let srv = start("").await;
        let mut c = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
        assert_eq!(c.allocate().await, Err(Some(400)));
        let m = scrape(srv.metrics.unwrap()).await;
        assert_eq!(sample(&m, "p2p_turn_enabled"), 0);
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn external_ip_is_advertised_while_the_relay_ip_is_bound() {
    tokio::time::timeout(BOUND, async {
        // 127.0.0.1 plays the internal address, 127.0.0.3 the public one
        // (not bound by the server: it only appears in XOR-RELAYED-ADDRESS).
        let srv = start(
            "[turn]\nrealm = \"example.org\"\nrelay_ip = [\"127.0.0.1\"]\nexternal_ip = [\"127.0.0.3\"]\nallow_peer = [\"127.0.0.0/8\"]\n[turn.users]\nalice = \"secret\"\n",
        )
        .await;
        let (peer, mut saw) = echo_peer().await;
        let mut c = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
        let relayed = c.allocate().await.expect("allocated");
        assert_eq!(relayed.ip().to_string(), "127.0.0.3");
        c.permit(peer).await.unwrap();
        c.echo(peer, b"through the mapped relay").await;
        let from = saw.recv().await.unwrap();
        assert_eq!(from, SocketAddr::new("127.0.0.1".parse().unwrap(), relayed.port()));
        srv.stop().await;
    })
    .await
    .expect("in time");
}

/// The neighbours in `seqs` (sequence numbers in arrival order) where the
/// later one was sent first.
fn overtaken(seqs: &[u32]) -> Vec<(u32, u32)> {
    seqs.windows(2)
        .filter(|w| w[1] <= w[0])
        .map(|w| (w[0], w[1]))
        .collect()
}

/// A peer streams numbered datagrams while the client binds a channel: the
/// first ones come as Data indications through the TURN task, the later
/// ones as ChannelData, most on the fast path once the route is up. None
/// may overtake one the peer sent before it (the route coming up must not
/// let the fast path pass datagrams still queued for the TURN task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_coming_up_keeps_the_peers_datagrams_in_order() {
    /// At most this many datagrams, for at most 8 s.
    const MAX: u32 = 2_000_000;
    tokio::time::timeout(BOUND, async {
        let srv = start(OPEN).await;
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer_addr = peer.local_addr().unwrap();
        let mut c = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
        let relayed = c.allocate().await.expect("allocated");
        c.permit(peer_addr).await.expect("permission");
        // Its own thread: the stream does not wait for the runtime. It
        // runs until the client has seen enough over the channel.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let blaster = std::thread::spawn(move || {
            let began = std::time::Instant::now();
            for seq in 0..MAX {
                if stopped.load(std::sync::atomic::Ordering::Relaxed)
                    || began.elapsed() > Duration::from_secs(8)
                {
                    break;
                }
                let mut d = seq.to_be_bytes().to_vec();
                d.resize(64, 0);
                peer.send_to(&d, relayed).unwrap();
                if seq % 64 == 63 {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        });
        // The channel is asked for once the stream is flowing.
        let mut got: Vec<u32> = Vec::new();
        let mut bound = false;
        let mut over_channel = 0u32;
        // Until a quiet spell after the stream (UDP may lose some).
        let mut heard = tokio::time::Instant::now();
        let quiet = |heard: tokio::time::Instant| heard.elapsed() > Duration::from_millis(500);
        while !(blaster.is_finished() && quiet(heard)) {
            if over_channel >= 500 {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if !bound && got.len() >= 50 {
                c.turn.bind_channel(Instant::now(), peer_addr).unwrap();
                bound = true;
            }
            c.flush().await;
            let wake = tokio::time::sleep(Duration::from_millis(50));
            tokio::select! {
                frames = c.recv() => {
                    heard = tokio::time::Instant::now();
                    let now = Instant::now();
                    for f in frames {
                        if f.first().is_some_and(|b| b & 0xC0 == 0x40) {
                            over_channel += 1;
                        }
                        let d = p2p_turn::Datagram::udp(c.server, c.local, &f);
                        let _ = c.turn.handle_input(now, d);
                    }
                }
                () = wake => c.turn.handle_timeout(Instant::now()),
            }
            c.flush().await;
            while let Some(e) = c.inbox.pop_front() {
                if let ClientEvent::Data { data, .. } = e {
                    got.push(u32::from_be_bytes(data[..4].try_into().unwrap()));
                }
            }
        }
        blaster.join().unwrap();
        assert!(bound, "the stream never reached the client");
        assert!(over_channel > 0, "no ChannelData arrived");
        let behind = overtaken(&got);
        assert!(behind.is_empty(), "overtaken (earlier, later): {behind:?}");
        srv.stop().await;
    })
    .await
    .expect("in time");
}

/// A client streams numbered ChannelData as fast as it can: the peer gets
/// them in the order sent, whichever worker thread reads and relays them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_channel_data_reaches_the_peer_in_order() {
    const N: u32 = 20_000;
    tokio::time::timeout(BOUND, async {
        let srv = start(OPEN).await;
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer_addr = peer.local_addr().unwrap();
        peer.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let listener = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut b = [0u8; 2048];
            while let Ok((n, _)) = peer.recv_from(&mut b) {
                if n >= 4 {
                    got.push(u32::from_be_bytes(b[..4].try_into().unwrap()));
                }
            }
            got
        });
        let mut c = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
        c.allocate().await.expect("allocated");
        c.permit(peer_addr).await.expect("permission");
        let channel = c.bind(peer_addr).await;
        let Link::Udp(sock) = &c.link else {
            unreachable!("a UDP client")
        };
        for seq in 0..N {
            let mut cd = channel.to_be_bytes().to_vec();
            cd.extend_from_slice(&64u16.to_be_bytes());
            cd.extend_from_slice(&seq.to_be_bytes());
            cd.resize(4 + 64, 0);
            sock.send_to(&cd, srv.udp).await.unwrap();
        }
        let got = tokio::task::spawn_blocking(move || listener.join().unwrap())
            .await
            .unwrap();
        assert!(got.len() > 100, "only {} arrived", got.len());
        let behind = overtaken(&got);
        assert!(
            behind.is_empty(),
            "{} of {} overtaken, e.g. {:?}",
            behind.len(),
            got.len(),
            &behind[..behind.len().min(8)]
        );
        srv.stop().await;
    })
    .await
    .expect("in time");
}
