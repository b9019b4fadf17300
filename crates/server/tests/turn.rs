//! TURN in the daemon, on loopback, with `p2p_turn::TurnClient` as the
//! client: allocate, permission, Send/Data and ChannelData round trips over
//! UDP, TCP and TLS; the default peer policy (403) and `allow_peer`; a
//! stale nonce recovered; wrong credentials (401, the same for a wrong
//! password and an unknown user); the per-user quota (486); REST API
//! credentials; the metrics endpoint. Every wait is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use p2p_server::{Config, Server};
use p2p_stun::attr::PasswordAlgorithm;
use p2p_stun::next_frame_len;
use p2p_turn::{ClientConfig, ClientEvent, Datagram, RestSecret, Transport, TurnClient};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const STEP: Duration = Duration::from_secs(5);
const BOUND: Duration = Duration::from_secs(30);

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

enum Link {
    Udp(UdpSocket),
    Stream(Box<dyn Stream>, Vec<u8>, usize),
}

/// A TURN client on a socket, driven by hand.
struct Client {
    turn: TurnClient,
    link: Link,
    server: SocketAddr,
    local: SocketAddr,
    transport: Transport,
    /// Events the last `until` skipped.
    seen: Vec<ClientEvent>,
}

impl Client {
    async fn udp(
        server: SocketAddr,
        user: &str,
        pass: &str,
        tweak: impl FnOnce(&mut ClientConfig),
    ) -> Client {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = s.local_addr().unwrap();
        let mut cfg = ClientConfig::new(local, server, user, pass);
        tweak(&mut cfg);
        Client {
            turn: TurnClient::new(cfg),
            link: Link::Udp(s),
            server,
            local,
            transport: Transport::Udp,
            seen: Vec::new(),
        }
    }

    async fn stream(
        s: Box<dyn Stream>,
        local: SocketAddr,
        server: SocketAddr,
        transport: Transport,
        user: &str,
        pass: &str,
    ) -> Client {
        let mut cfg = ClientConfig::new(local, server, user, pass);
        cfg.transport = transport;
        Client {
            turn: TurnClient::new(cfg),
            link: Link::Stream(s, vec![0u8; 70_000], 0),
            server,
            local,
            transport,
            seen: Vec::new(),
        }
    }

    async fn tcp(server: SocketAddr, user: &str, pass: &str) -> Client {
        let s = TcpStream::connect(server).await.unwrap();
        let local = s.local_addr().unwrap();
        Client::stream(Box::new(s), local, server, Transport::Tcp, user, pass).await
    }

    async fn flush(&mut self) {
        while let Some(t) = self.turn.poll_transmit() {
            match &mut self.link {
                Link::Udp(s) => {
                    s.send_to(&t.contents, t.destination).await.unwrap();
                }
                Link::Stream(s, _, _) => s.write_all(&t.contents).await.unwrap(),
            }
        }
    }

    async fn recv(&mut self) -> Vec<Vec<u8>> {
        match &mut self.link {
            Link::Udp(s) => {
                let mut b = vec![0u8; 65536];
                let (n, _) = s.recv_from(&mut b).await.unwrap();
                b.truncate(n);
                vec![b]
            }
            Link::Stream(s, buf, filled) => {
                let n = s.read(&mut buf[*filled..]).await.unwrap();
                assert!(n > 0, "the server closed the connection");
                *filled += n;
                let mut out = Vec::new();
                let mut at = 0;
                while let Ok(Some(len)) = next_frame_len(&buf[at..*filled]) {
                    if at + len > *filled {
                        break;
                    }
                    out.push(buf[at..at + len].to_vec());
                    at += len;
                }
                buf.copy_within(at..*filled, 0);
                *filled -= at;
                out
            }
        }
    }

    /// Drive until `pick` takes an event (panics after `STEP`).
    async fn until<R>(&mut self, what: &str, mut pick: impl FnMut(&ClientEvent) -> Option<R>) -> R {
        let deadline = Instant::now() + STEP;
        loop {
            self.flush().await;
            while let Some(e) = self.turn.poll_event() {
                if let Some(r) = pick(&e) {
                    return r;
                }
                self.seen.push(e);
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; saw {:?}",
                self.seen
            );
            let wake = self
                .turn
                .poll_timeout()
                .map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                frames = self.recv() => {
                    let now = Instant::now();
                    for f in frames {
                        self.turn.handle_input(now, Datagram {
                            transport: self.transport,
                            local: self.local,
                            remote: self.server,
                            bytes: &f,
                        });
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => self.turn.handle_timeout(Instant::now()),
            }
        }
    }

    /// Allocate; the relayed address, or the error code.
    async fn allocate(&mut self) -> Result<SocketAddr, Option<u16>> {
        self.turn.allocate(Instant::now()).unwrap();
        self.until("the allocation", |e| match e {
            ClientEvent::Allocated { relayed, .. } => Some(Ok(relayed[0])),
            ClientEvent::AllocationFailed { code, .. } => Some(Err(*code)),
            _ => None,
        })
        .await
    }

    async fn permit(&mut self, peer: SocketAddr) -> Result<(), Option<u16>> {
        self.turn
            .create_permission(Instant::now(), &[peer.ip()])
            .unwrap();
        self.until("the permission", |e| match e {
            ClientEvent::PermissionCreated { .. } => Some(Ok(())),
            ClientEvent::PermissionFailed { code, .. } => Some(Err(*code)),
            _ => None,
        })
        .await
    }

    async fn bind(&mut self, peer: SocketAddr) -> u16 {
        let n = self.turn.bind_channel(Instant::now(), peer).unwrap();
        self.until("the channel", |e| match e {
            ClientEvent::ChannelBound { .. } => Some(()),
            ClientEvent::ChannelBindFailed { code, .. } => panic!("ChannelBind failed: {code:?}"),
            _ => None,
        })
        .await;
        n
    }

    async fn echo(&mut self, peer: SocketAddr, data: &[u8]) {
        self.turn.send_to(Instant::now(), peer, data).unwrap();
        self.until("the echo", |e| match e {
            ClientEvent::Data { peer: p, data: d } if *p == peer && d == data => Some(()),
            _ => None,
        })
        .await;
    }

    async fn close(&mut self) {
        self.turn.close(Instant::now()).unwrap();
        self.until("the deletion", |e| {
            matches!(e, ClientEvent::Deleted).then_some(())
        })
        .await;
    }
}

/// A UDP echo on 127.0.0.1; it also reports the source of what it got.
async fn echo_peer() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<SocketAddr>) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut b = vec![0u8; 65536];
        while let Ok((n, from)) = s.recv_from(&mut b).await {
            let _ = tx.send(from);
            let _ = s.send_to(&b[..n], from).await;
        }
    });
    (addr, rx)
}

struct Running {
    udp: SocketAddr,
    tcp: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<p2p_server::CounterSnapshot>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(BOUND, self.task).await;
    }
}

async fn start(toml: &str) -> Running {
    let text = format!(
        "[stun]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\n[metrics]\nlisten = \"127.0.0.1:0\"\n{toml}"
    );
    start_cfg(Config::from_toml_str(&text).unwrap()).await
}

async fn start_cfg(cfg: Config) -> Running {
    let server = Server::bind(&cfg).await.unwrap();
    let a = server.local_addrs().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Running {
        udp: a.udp[0],
        tcp: a.tcp.first().copied(),
        tls: a.tls.first().copied(),
        metrics: a.metrics,
        stop: Some(stop),
        task,
    }
}

const OPEN: &str = "[turn]\nrealm = \"example.org\"\nallow_peer = [\"127.0.0.0/8\"]\n[turn.users]\nalice = \"secret\"\nbob = \"hunter2\"\n";

async fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    out
}

fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

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
        assert_eq!(c.permit(peer).await, Err(Some(403)));
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
async fn without_users_turn_stays_off_and_allocate_is_400() {
    tokio::time::timeout(BOUND, async {
        let srv = start("[turn]\nrealm = \"example.org\"\n").await;
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
