//! Answers over UDP: bursts from two plain clients (no UDP_GRO) each come
//! back as one datagram per request, intact, whether the server sent them
//! one by one or as UDP GSO trains (which the receiving socket splits).

use std::collections::HashSet;
use std::net::UdpSocket;
use std::time::Duration;

use p2p_server::{Config, Server};
use p2p_stun::attr::XorMappedAddress;
use p2p_stun::{Message, MessageBuilder, MessageClass, MessageType, Method, TransactionId};

const BOUND: Duration = Duration::from_secs(20);
/// Requests per client per burst: together more than one server batch.
const BURST: u8 = 24;
const ROUNDS: u8 = 3;

fn tid(client: u8, round: u8, k: u8) -> TransactionId {
    TransactionId::new([client, round, k, 0xAB, 1, 2, 3, 4, 5, 6, 7, 8])
}

fn request(id: TransactionId) -> Vec<u8> {
    let mut v = Vec::new();
    let b = MessageBuilder::new(
        &mut v,
        MessageType::new(Method::BINDING, MessageClass::Request),
        id,
    )
    .unwrap();
    b.finish();
    v
}

/// Send every burst from both clients, interleaved, then read each answer.
fn exchange(server: std::net::SocketAddr) {
    let clients = [
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    ];
    for round in 0..ROUNDS {
        for k in 0..BURST {
            for (c, s) in clients.iter().enumerate() {
                s.send_to(&request(tid(c as u8, round, k)), server).unwrap();
            }
        }
        for (c, s) in clients.iter().enumerate() {
            let me = s.local_addr().unwrap();
            s.set_read_timeout(Some(BOUND)).unwrap();
            let mut want: HashSet<TransactionId> =
                (0..BURST).map(|k| tid(c as u8, round, k)).collect();
            let mut buf = [0u8; 2048];
            while !want.is_empty() {
                let (n, from) = s.recv_from(&mut buf).unwrap();
                assert_eq!(from, server);
                // One whole STUN message per datagram, not a train.
                let m = Message::decode(&buf[..n]).unwrap();
                assert_eq!(
                    m.typ(),
                    MessageType::new(Method::BINDING, MessageClass::Success)
                );
                assert!(
                    want.remove(&m.transaction_id()),
                    "unexpected or repeated answer"
                );
                let XorMappedAddress(mapped) = m.get::<XorMappedAddress>().unwrap().unwrap();
                assert_eq!(mapped, me);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_come_back_one_datagram_per_answer() {
    let cfg =
        Config::from_toml_str("[stun]\nlisten = [\"127.0.0.1:0\"]\ntcp = false\nworkers = 2\n")
            .unwrap();
    let server = Server::bind(&cfg).await.unwrap();
    let addr = server.local_addrs().udp[0];
    let counters = server.counters();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    tokio::time::timeout(BOUND, tokio::task::spawn_blocking(move || exchange(addr)))
        .await
        .unwrap()
        .unwrap();
    let snap = counters.snapshot();
    let _ = stop.send(());
    let _ = tokio::time::timeout(BOUND, running).await;
    let total = u64::from(BURST) * u64::from(ROUNDS) * 2;
    assert_eq!(snap.answered, total, "{snap:?}");
    assert_eq!(snap.send_errors, 0, "{snap:?}");
}
