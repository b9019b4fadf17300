//! SIGHUP through the real binary: `p2p serve --config FILE` reads the
//! file again and puts the new certificate, TURN users, REST secret and
//! peer rules in place while a TURN allocation keeps relaying and a
//! signaling room keeps its peers; a key that needs a restart is named; a
//! file that does not load changes nothing.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use p2p_signaling::{ServerMsg, SignalingClient};
use p2p_turn::{ClientConfig, ClientEvent, ClientOutput, Datagram, Machine, TurnClient};
use tokio::net::UdpSocket;

/// A TURN client on a UDP socket of its own, driven until an event says so.
struct Turn {
    sock: UdpSocket,
    local: SocketAddr,
    client: TurnClient,
}

impl Turn {
    async fn allocate(server: SocketAddr, user: &str, password: &str) -> Result<Turn, String> {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = sock.local_addr().unwrap();
        let client = TurnClient::new(ClientConfig::new(local, server, user, password));
        let mut t = Turn {
            sock,
            local,
            client,
        };
        t.client.handle_timeout(Instant::now());
        match t
            .until(|e| {
                matches!(
                    e,
                    ClientEvent::Allocated { .. } | ClientEvent::AllocationFailed { .. }
                )
            })
            .await
        {
            ClientEvent::Allocated { .. } => Ok(t),
            other => Err(format!("{other:?}")),
        }
    }

    /// Drive the client until `done` takes an event; bounded in time.
    async fn until(&mut self, mut done: impl FnMut(&ClientEvent) -> bool) -> ClientEvent {
        let deadline = tokio::time::Instant::now() + BOUND;
        let mut buf = [0u8; 2048];
        loop {
            while let Some(o) = self.client.poll_output() {
                match o {
                    ClientOutput::Transmit(t) => {
                        self.sock.send_to(&t.contents, t.destination).await.unwrap();
                    }
                    ClientOutput::Event(e) if done(&e) => return e,
                    _ => {}
                }
            }
            let wake = self.client.poll_timeout().map_or(deadline, |t| {
                tokio::time::Instant::from_std(t).min(deadline)
            });
            assert!(
                tokio::time::Instant::now() < deadline,
                "no such TURN event in time"
            );
            tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    let (n, from) = r.unwrap();
                    let _ = self.client.handle_input(
                        Instant::now(),
                        Datagram::udp(from, self.local, &buf[..n]),
                    );
                }
                () = tokio::time::sleep_until(wake) => self.client.handle_timeout(Instant::now()),
            }
        }
    }

    /// CreatePermission for `ip`: `None` when granted, else the code.
    async fn permit(&mut self, ip: IpAddr) -> Option<Option<u16>> {
        self.client
            .create_permission(Instant::now(), &[ip])
            .unwrap();
        match self
            .until(|e| {
                matches!(
                    e,
                    ClientEvent::PermissionCreated { .. } | ClientEvent::PermissionFailed { .. }
                )
            })
            .await
        {
            ClientEvent::PermissionFailed { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Send `data` to the echo peer and wait for it to come back.
    async fn echo(&mut self, peer: SocketAddr, data: &[u8]) {
        self.client.send_to(peer, data).unwrap();
        let got = self
            .until(|e| matches!(e, ClientEvent::Data { peer: p, .. } if *p == peer))
            .await;
        assert!(matches!(got, ClientEvent::Data { data: d, .. } if d == data));
    }
}

fn config(
    users: &str,
    secret: &str,
    extra_turn: &str,
    cert: &str,
    key: &str,
    stun: &str,
) -> String {
    format!(
        r#"
[stun]
listen = ["127.0.0.1:0"]
{stun}
[tls]
listen = ["127.0.0.1:0"]
cert = "{cert}"
key = "{key}"
[turn]
realm = "example.org"
users = [{users}]
auth_secret = "{secret}"
allow_peer = ["127.0.0.0/8"]
{extra_turn}
[signaling]
listen = "127.0.0.1:0"
"#
    )
}

/// The TURN credentials a new member of `room` is handed.
async fn handed_credentials(url: &str, room: &str) -> (String, String) {
    let mut c = SignalingClient::connect(url).await.unwrap();
    c.join(room, None, None).await.unwrap();
    let s = c
        .ice_servers()
        .iter()
        .find(|s| s.username.is_some())
        .expect("TURN credentials handed out");
    (s.username.clone().unwrap(), s.credential.clone().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_cert_users_secret_and_peer_rules_while_an_allocation_and_a_room_live() {
    let dir = TempDir::new("reload");
    let (ca1, cert1, key1) = ca_and_leaf();
    let (ca2, cert2, key2) = ca_and_leaf();
    let cert = dir.write("cert.pem", &cert1);
    let key = dir.write("key.pem", &key1);
    let file = dir.write(
        "p2p.toml",
        &config("\"alice:secret\"", "first-secret", "", &cert, &key, ""),
    );
    let mut d = Daemon::start(&["--config", &file]);
    let server = d.udp();
    let tls = d.addr("p2p serve: STUN over TLS on ");
    let url = d.ws_url();

    // Before: the first certificate; alice relays through an allocation;
    // two peers share a room; 127.0.0.5 may be a peer.
    assert!(tls_trusts(tls, &ca1).await);
    assert!(!tls_trusts(tls, &ca2).await);
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer = echo.local_addr().unwrap();
    let echo_task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    let mut alice = Turn::allocate(server, "alice", "secret").await.unwrap();
    assert_eq!(alice.permit(peer.ip()).await, None);
    alice.echo(peer, b"before the reload").await;
    assert_eq!(alice.permit("127.0.0.5".parse().unwrap()).await, None);
    assert!(Turn::allocate(server, "bob", "hunter2").await.is_err());
    let mut a = SignalingClient::connect(&url).await.unwrap();
    let mut b = SignalingClient::connect(&url).await.unwrap();
    a.join("kept", None, None).await.unwrap();
    let b_peers = b.join("kept", None, None).await.unwrap();
    assert_eq!(b_peers.len(), 1);
    let (old_user, old_pass) = handed_credentials(&url, "creds-before").await;

    // The reload: a new certificate in the same files, bob added, a new
    // REST secret, 127.0.0.5 denied, and a key that needs a restart.
    std::fs::write(&cert, &cert2).unwrap();
    std::fs::write(&key, &key2).unwrap();
    std::fs::write(
        &file,
        config(
            "\"alice:secret\", \"bob:hunter2\"",
            "second-secret",
            "deny_peer = [\"127.0.0.5/32\"]",
            &cert,
            &key,
            "max_padding = 100",
        ),
    )
    .unwrap();
    d.signal("HUP");
    let said = d.line("p2p serve: SIGHUP: ");
    for w in [
        "the TLS certificate",
        "the TURN users, secret and peer rules",
        "the ICE servers handed out",
        "stun.max_padding",
    ] {
        assert!(said.contains(w), "{said}");
    }

    // After: the allocation still relays, and asks for more.
    alice.echo(peer, b"after the reload").await;
    assert_eq!(
        alice.permit("127.0.0.5".parse().unwrap()).await,
        Some(Some(403)),
        "the new deny rule applies to a live allocation"
    );
    assert_eq!(alice.permit("127.0.0.6".parse().unwrap()).await, None);
    // The new certificate; the new user; the new secret in TURN and in
    // what signaling hands out; the old secret's credentials refused.
    assert!(tls_trusts(tls, &ca2).await);
    assert!(!tls_trusts(tls, &ca1).await);
    Turn::allocate(server, "bob", "hunter2").await.unwrap();
    let (user, pass) = handed_credentials(&url, "creds-after").await;
    Turn::allocate(server, &user, &pass).await.unwrap();
    assert!(Turn::allocate(server, &old_user, &old_pass).await.is_err());
    // The room kept both peers: an offer goes from one to the other.
    a.send_offer(b.peer_id(), "v=0 kept").await.unwrap();
    let got = tokio::time::timeout(BOUND, async {
        loop {
            match b.recv().await.unwrap() {
                Some(ServerMsg::Offer { sdp, .. }) => break sdp,
                Some(_) => continue,
                None => panic!("b's connection closed"),
            }
        }
    })
    .await
    .expect("the offer in time");
    assert_eq!(got, "v=0 kept");

    // A file that does not load changes nothing.
    std::fs::write(&file, "[stun\n").unwrap();
    d.signal("HUP");
    let said = d.line("p2p serve: SIGHUP: ");
    assert!(said.contains("reload refused, nothing changed"), "{said}");
    alice.echo(peer, b"after a refused reload").await;
    assert!(tls_trusts(tls, &ca2).await);

    // A refused reload does not stop the daemon.
    tokio::time::sleep(Duration::from_millis(50)).await;
    alice.echo(peer, b"still").await;
    echo_task.abort();
}
