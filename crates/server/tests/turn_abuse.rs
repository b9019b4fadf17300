//! TURN in the daemon under abuse (issue 18.3 and 18.4), on loopback:
//! wrong passwords past the burst are dropped unanswered and counted, and
//! REST users are held to their share so that a static user still
//! allocates. Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use common::*;
use p2p_stun::attr::{
    ErrorCode, Nonce, PasswordAlgorithm, Realm, RequestedTransport, Username, PROTO_UDP,
};
use p2p_stun::{Key, Message, MessageBuilder, MessageClass, MessageType, Method, TransactionId};
use p2p_turn::RestSecret;
use tokio::net::UdpSocket;

/// An Allocate, signed with `password` when a nonce is given.
fn allocate(id: u32, signed: Option<(&str, &str)>) -> Vec<u8> {
    let mut t = [0u8; 12];
    t[..4].copy_from_slice(&id.to_be_bytes());
    let mut v = Vec::new();
    let mut b = MessageBuilder::new(
        &mut v,
        MessageType::new(Method::ALLOCATE, MessageClass::Request),
        TransactionId::new(t),
    )
    .unwrap();
    b.add(&RequestedTransport(PROTO_UDP)).unwrap();
    if let Some((nonce, password)) = signed {
        let key = Key::long_term("alice", "example.org", password, PasswordAlgorithm::Md5).unwrap();
        b.add(&Username::new("alice").unwrap()).unwrap();
        b.add(&Realm::new("example.org").unwrap()).unwrap();
        b.add(&Nonce::new(nonce).unwrap()).unwrap();
        b.add_message_integrity(&key).unwrap();
    }
    v
}

/// The answer to `req`, if one comes within 300 ms.
async fn ask(s: &UdpSocket, to: SocketAddr, req: &[u8]) -> Option<Vec<u8>> {
    s.send_to(req, to).await.unwrap();
    let mut b = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_millis(300), s.recv(&mut b))
        .await
        .ok()?
        .ok()?;
    b.truncate(n);
    Some(b)
}

#[tokio::test]
async fn guesses_past_the_burst_are_dropped_unanswered_and_counted() {
    tokio::time::timeout(BOUND, async {
        let srv = start(&OPEN.replace(
            "[turn.users]",
            "auth_failure_burst = 3\nauth_failures_per_minute = 1\n[turn.users]",
        ))
        .await;
        // The guesser on an address of its own (the limit is per address).
        let s = UdpSocket::bind("127.0.0.2:0").await.unwrap();
        let challenge = ask(&s, srv.udp, &allocate(0, None)).await.expect("a 401");
        let m = Message::decode(&challenge).unwrap();
        let nonce = m.get::<Nonce>().unwrap().unwrap().as_str().to_owned();
        let mut answered = 0;
        for k in 1..=10 {
            let guess = format!("guess-{k}");
            if let Some(r) = ask(&s, srv.udp, &allocate(k, Some((&nonce, &guess)))).await {
                let m = Message::decode(&r).unwrap();
                assert_eq!(m.get::<ErrorCode>().unwrap().unwrap().code(), 401);
                answered += 1;
            }
        }
        assert_eq!(answered, 3, "the burst, then nothing");
        // The right password is not even checked now.
        let right = allocate(11, Some((&nonce, "secret")));
        assert_eq!(ask(&s, srv.udp, &right).await, None);
        // Another address is served.
        let mut other = Client::udp(srv.udp, "bob", "hunter2", |_| {}).await;
        let _ = other.allocate().await.expect("allocated");
        let m = scrape(srv.metrics.unwrap()).await;
        assert_eq!(
            sample(&m, "p2p_turn_auth_failures_total{transport=\"udp\"}"),
            3
        );
        assert_eq!(sample(&m, "p2p_turn_auth_throttled_total"), 8);
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn rest_users_are_held_to_their_share_and_the_static_user_still_allocates() {
    tokio::time::timeout(BOUND, async {
        // 20 relay ports, REST users at most half; no reserve, to see the
        // share alone.
        let srv = start(&OPEN.replace(
            "[turn.users]",
            "auth_secret = \"north\"\nmin_port = 41200\nmax_port = 41219\nreserved_percent = 0\nrest_share_percent = 50\n[turn.users]",
        ))
        .await;
        let secret = RestSecret::new("north");
        let mut codes = Vec::new();
        let mut farmed = Vec::new();
        for k in 0..12 {
            let expiry = SystemTime::now() + Duration::from_secs(600);
            let user = RestSecret::username(expiry, &format!("farmer{k}"));
            let mut c = Client::udp(srv.udp, &user, &secret.password(&user), |_| {}).await;
            match c.allocate().await {
                Ok(_) => farmed.push(c),
                Err(code) => codes.push(code),
            }
        }
        assert_eq!(farmed.len(), 10);
        assert_eq!(codes, [Some(486), Some(486)]);
        let mut alice = Client::udp(srv.udp, "alice", "secret", |_| {}).await;
        alice.allocate().await.expect("the static user allocates");
        let m = scrape(srv.metrics.unwrap()).await;
        assert_eq!(
            sample(&m, "p2p_turn_allocations_refused_total{reason=\"rest_share\"}"),
            2
        );
        srv.stop().await;
    })
    .await
    .expect("in time");
}
