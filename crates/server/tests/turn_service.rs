//! The embeddable TURN server (`TurnService`) in a test's own tokio
//! program, on loopback: sockets the program binds, its own credential
//! store, the event stream, relayed ports the OS refuses, and `stop`.
//! Every wait is bounded.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use p2p_server::{TurnService, TurnServiceError};
use p2p_stun::attr::PasswordAlgorithm;
use p2p_stun::Key;
use p2p_turn::{
    AuthFailure, CredentialStore, EndReason, Machine, PeerPolicy, ServerEvent, StaticUsers,
};
use tokio::net::{TcpListener, UdpSocket};

/// A credential store of the program's own: one user whose password is
/// its name backwards.
struct Backwards;

impl CredentialStore for Backwards {
    fn key(&self, user: &str, realm: &str, alg: PasswordAlgorithm, _: SystemTime) -> Option<Key> {
        let password: String = user.chars().rev().collect();
        (user == "alice").then(|| Key::long_term(user, realm, &password, alg).ok())?
    }
}

async fn service(
    udp: bool,
    tcp: bool,
    tweak: impl FnOnce(p2p_server::TurnServiceBuilder) -> p2p_server::TurnServiceBuilder,
) -> TurnService {
    let mut b = TurnService::builder("example.org").credentials(Backwards);
    if udp {
        b = b.udp_socket(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    if tcp {
        b = b.tcp_listener(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    b.config_mut().peer_policy = PeerPolicy::new().allow("127.0.0.0/8".parse().unwrap());
    tweak(b).start().unwrap()
}

/// The next event (bounded by `STEP`).
async fn event(s: &mut TurnService) -> ServerEvent {
    tokio::time::timeout(STEP, s.next_event())
        .await
        .expect("an event in time")
        .expect("the service runs")
}

#[tokio::test]
async fn an_embedded_service_relays_and_reports_what_happens() {
    tokio::time::timeout(BOUND, async {
        let mut turn = service(true, false, |b| b).await;
        let server = turn.local_addrs()[0];
        let (peer, saw) = echo_peer().await;
        let mut saw = saw;

        // Wrong password: refused, and said so.
        let mut eve = Client::udp(server, "alice", "wrong", |_| {}).await;
        assert_eq!(eve.allocate().await, Err(Some(401)));
        assert!(matches!(
            event(&mut turn).await,
            ServerEvent::AuthFailed { reason: AuthFailure::BadIntegrity, username: Some(u), .. } if u == "alice"
        ));

        let mut c = Client::udp(server, "alice", "ecila", |_| {}).await;
        let relayed = c.allocate().await.expect("allocated");
        assert_eq!(relayed.ip(), server.ip(), "relayed on the socket's IP");
        match event(&mut turn).await {
            ServerEvent::AllocationCreated {
                user,
                five_tuple,
                relayed: r,
                ..
            } => {
                assert_eq!(user, "alice");
                assert_eq!((five_tuple.local, five_tuple.remote), (server, c.local));
                assert_eq!(r, [relayed]);
            }
            other => panic!("{other:?}"),
        }
        c.permit(peer).await.expect("a permission");
        assert!(matches!(
            event(&mut turn).await,
            ServerEvent::PermissionCreated { peer: p, .. } if p == peer.ip()
        ));
        c.echo(peer, b"by Send indication").await;
        assert_eq!(saw.recv().await, Some(relayed), "the peer sees the relayed address");
        let channel = c.bind(peer).await;
        assert!(matches!(
            event(&mut turn).await,
            ServerEvent::ChannelBound { channel: n, .. } if n == channel
        ));
        c.echo(peer, b"over the channel").await;
        c.close().await;
        match event(&mut turn).await {
            ServerEvent::AllocationEnded {
                reason,
                traffic,
                relayed: r,
                ..
            } => {
                assert_eq!(reason, EndReason::Deleted);
                assert_eq!(r, [relayed]);
                // Both echoes both ways, whichever path relayed them.
                assert_eq!((traffic.packets_to_peer, traffic.packets_to_client), (2, 2));
            }
            other => panic!("{other:?}"),
        }
        // The relayed socket is closed.
        let mut rebound = false;
        for _ in 0..250 {
            if UdpSocket::bind(relayed).await.is_ok() {
                rebound = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(rebound, "{relayed} is still bound");
        let k = turn.stop().await;
        assert_eq!((k.allocations_created, k.allocations_deleted), (1, 1));
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn stop_ends_every_allocation_and_closes_its_sockets() {
    tokio::time::timeout(BOUND, async {
        let mut turn = service(true, true, |b| b).await;
        let (udp, tcp) = (turn.local_addrs()[0], turn.local_addrs()[1]);
        let mut a = Client::udp(udp, "alice", "ecila", |_| {}).await;
        let ra = a.allocate().await.expect("over UDP");
        let mut b = Client::tcp(tcp, "alice", "ecila").await;
        let rb = b.allocate().await.expect("over TCP");
        let k = turn.stop().await;
        assert_eq!(k.allocations_stopped, 2);
        let mut ended = Vec::new();
        while let Some(e) = turn.next_event().await {
            if let ServerEvent::AllocationEnded {
                reason, relayed, ..
            } = e
            {
                assert_eq!(reason, EndReason::Stopped);
                ended.extend(relayed);
            }
        }
        ended.sort();
        let mut want = vec![ra, rb];
        want.sort();
        assert_eq!(ended, want);
        for r in [ra, rb] {
            let mut rebound = false;
            for _ in 0..250 {
                if UdpSocket::bind(r).await.is_ok() {
                    rebound = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(rebound, "{r} is still bound");
        }
        // The listening sockets are no longer served.
        let mut late = Client::udp(udp, "alice", "ecila", |_| {}).await;
        late.turn.handle_timeout(std::time::Instant::now());
        late.flush().await;
        let mut buf = [0u8; 100];
        let s = match &late.link {
            Link::Udp(s) => s,
            Link::Stream(..) => unreachable!(),
        };
        assert!(
            tokio::time::timeout(Duration::from_millis(300), s.recv_from(&mut buf))
                .await
                .is_err(),
            "no answer after stop"
        );
        assert_eq!(turn.stop().await.allocations_created, 0, "stopping twice");
    })
    .await
    .expect("in time");
}

/// Two adjacent free loopback ports.
fn adjacent_free_ports() -> u16 {
    for _ in 0..100 {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < 65535 && std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two adjacent free ports");
}

#[tokio::test]
async fn a_relay_port_another_program_holds_is_skipped() {
    tokio::time::timeout(BOUND, async {
        let p = adjacent_free_ports();
        // Another program holds the first of the two ports.
        let other = std::net::UdpSocket::bind(("127.0.0.1", p)).unwrap();
        let mut turn = service(true, false, |b| b.relay_ports(p..=p + 1)).await;
        let server = turn.local_addrs()[0];
        let mut c = Client::udp(server, "alice", "ecila", |_| {}).await;
        let relayed = c.allocate().await.expect("allocated on the other port");
        assert_eq!(relayed.port(), p + 1);
        // The range is used up (the held port is skipped for a while): 508.
        let mut d = Client::udp(server, "alice", "ecila", |_| {}).await;
        assert_eq!(d.allocate().await, Err(Some(508)));
        drop(other);
        turn.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_relay_ip_can_be_advertised_as_another() {
    tokio::time::timeout(BOUND, async {
        let public: IpAddr = "192.0.2.7".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let mut turn = service(true, false, |b| b.relay_ip_advertised_as(lo, public)).await;
        let server = turn.local_addrs()[0];
        let mut c = Client::udp(server, "alice", "ecila", |_| {}).await;
        let relayed = c.allocate().await.expect("allocated");
        assert_eq!(relayed.ip(), public);
        // The socket is on the relay IP, same port.
        assert!(UdpSocket::bind(SocketAddr::new(lo, relayed.port()))
            .await
            .is_err());
        turn.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn turn_over_tls_on_a_listener_of_the_program() {
    tokio::time::timeout(BOUND, async {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
        let server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut turn = service(false, false, |b| {
            b.tls_listener(listener, Arc::new(server_tls))
        })
        .await;
        let server = turn.local_addrs()[0];

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let tcp = tokio::net::TcpStream::connect(server).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let s = connector.connect(name, tcp).await.unwrap();
        let mut c = Client::stream(
            Box::new(s),
            local,
            server,
            p2p_turn::Transport::Tls,
            "alice",
            "ecila",
        )
        .await;
        let (peer, _saw) = echo_peer().await;
        c.allocate().await.expect("allocated over TLS");
        c.permit(peer).await.expect("a permission");
        c.echo(peer, b"over TLS").await;
        assert!(matches!(
            event(&mut turn).await,
            ServerEvent::AllocationCreated { five_tuple, .. } if five_tuple.transport == p2p_turn::Transport::Tls
        ));
        turn.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_service_needs_a_socket_credentials_and_a_relay_ip() {
    let udp = || async { UdpSocket::bind("127.0.0.1:0").await.unwrap() };
    let e = TurnService::builder("r")
        .credentials(StaticUsers::new())
        .start()
        .unwrap_err();
    assert!(matches!(e, TurnServiceError::NoSocket), "{e}");
    let e = TurnService::builder("r")
        .udp_socket(udp().await)
        .start()
        .unwrap_err();
    assert!(matches!(e, TurnServiceError::NoCredentials), "{e}");
    let e = TurnService::builder("r")
        .udp_socket(UdpSocket::bind("0.0.0.0:0").await.unwrap())
        .credentials(StaticUsers::new())
        .start()
        .unwrap_err();
    assert!(matches!(e, TurnServiceError::NoRelayIp), "{e}");
    let mut ok = TurnService::builder("r")
        .udp_socket(UdpSocket::bind("0.0.0.0:0").await.unwrap())
        .credentials(StaticUsers::new())
        .relay_ip("127.0.0.1".parse().unwrap())
        .start()
        .unwrap();
    ok.stop().await;
}
