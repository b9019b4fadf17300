//! STUN over TCP on loopback: framing across writes, garbage closes the
//! connection and is counted, the connection cap refuses the extra one.

use std::time::Duration;

use p2p_server::{Config, Server};
use p2p_stun::attr::XorMappedAddress;
use p2p_stun::{Message, MessageBuilder, MessageClass, MessageType, Method, TransactionId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BOUND: Duration = Duration::from_secs(10);

fn request(id: u8) -> Vec<u8> {
    let mut v = Vec::new();
    let mut b = MessageBuilder::new(
        &mut v,
        MessageType::new(Method::BINDING, MessageClass::Request),
        TransactionId::new([id; 12]),
    )
    .unwrap();
    b.add_fingerprint().unwrap();
    v
}

/// Read one STUN message (header, then the declared length).
async fn read_msg(s: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 20];
    s.read_exact(&mut head).await.unwrap();
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut v = head.to_vec();
    v.resize(20 + len, 0);
    s.read_exact(&mut v[20..]).await.unwrap();
    v
}

#[tokio::test]
async fn tcp_framing_garbage_and_connection_cap() {
    let cfg = Config::from_toml_str(
        "[stun]\nlisten = [\"127.0.0.1:0\"]\nudp = false\nmax_connections = 1\n",
    )
    .unwrap();
    let server = Server::bind(&cfg).await.unwrap();
    let addr = server.local_addrs().tcp[0];
    let counters = server.counters();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    tokio::time::timeout(BOUND, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let me = s.local_addr().unwrap();
        // Two requests in one write, the second split across two writes.
        let (a, b) = (request(1), request(2));
        let mut first = a.clone();
        first.extend_from_slice(&b[..7]);
        s.write_all(&first).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.write_all(&b[7..]).await.unwrap();
        for id in [1, 2] {
            let resp = read_msg(&mut s).await;
            let m = Message::decode(&resp).unwrap();
            assert_eq!(m.transaction_id(), TransactionId::new([id; 12]));
            assert_eq!(m.get::<XorMappedAddress>().unwrap().unwrap().0, me);
        }

        // The cap is one connection: another is accepted by the kernel and
        // closed at once.
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(extra.read(&mut buf).await.unwrap_or(0), 0);

        // Garbage: the stream is out of sync, the server closes it.
        s.write_all(&[0xff; 8]).await.unwrap();
        assert_eq!(s.read(&mut buf).await.unwrap_or(0), 0);
    })
    .await
    .expect("in time");

    stop.send(()).unwrap();
    let stats = tokio::time::timeout(BOUND, running).await.unwrap().unwrap();
    assert_eq!(stats.answered, 2, "{stats}");
    assert_eq!(stats.malformed, 1, "{stats}");
    assert_eq!(stats.tcp_refused, 1, "{stats}");
    assert_eq!(counters.snapshot(), stats);
}
