//! TCP allocations (RFC 6062) in the daemon, over real loopback TCP: a
//! control connection allocates a TCP relayed address, Connect reaches a
//! TCP peer from it, a ConnectionBind on a new client data connection
//! splices it to the peer, bytes flow both ways; a peer that connects to the
//! relayed address is announced (ConnectionAttempt) and bound the same way;
//! 447 for a peer that refuses; closing the control connection ends it all.
//! The client side is written by hand here (`p2p_turn::TurnClient` relays
//! UDP only). Every wait is bounded.

mod common;

use std::net::SocketAddr;

use common::*;
use p2p_stun::attr::{
    ConnectionId, ErrorCode, Nonce, PasswordAlgorithm, Realm, RequestedTransport, Username,
    XorPeerAddress, XorRelayedAddress, PROTO_TCP,
};
use p2p_stun::{
    next_frame_len, Key, Message, MessageBuilder, MessageClass, MessageType, Method, TransactionId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Attrs<'a> = &'a dyn Fn(&mut MessageBuilder<&mut Vec<u8>>);

/// One TCP connection to the server speaking STUN by hand, with long-term
/// credentials (MD5) and the 401 dance done once per connection.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    nonce: Option<String>,
    next_tid: u8,
    /// Indications read while waiting for a response.
    indications: Vec<Vec<u8>>,
}

impl Conn {
    async fn open(server: SocketAddr) -> Conn {
        Conn {
            s: TcpStream::connect(server).await.unwrap(),
            buf: Vec::new(),
            nonce: None,
            next_tid: 1,
            indications: Vec::new(),
        }
    }

    async fn read_msg(&mut self) -> Vec<u8> {
        loop {
            if let Ok(Some(len)) = next_frame_len(&self.buf) {
                if len <= self.buf.len() {
                    return self.buf.drain(..len).collect();
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(STEP, self.s.read(&mut chunk))
                .await
                .expect("a message in time")
                .unwrap();
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn send(&mut self, method: Method, attrs: Attrs<'_>, signed: bool) -> Vec<u8> {
        let tid = TransactionId::new([self.next_tid; 12]);
        self.next_tid += 1;
        let mut req = Vec::new();
        let mut b = MessageBuilder::new(
            &mut req,
            MessageType::new(method, MessageClass::Request),
            tid,
        )
        .unwrap();
        attrs(&mut b);
        if signed {
            let key =
                Key::long_term("alice", "example.org", "secret", PasswordAlgorithm::Md5).unwrap();
            b.add(&Username::new("alice").unwrap()).unwrap();
            b.add(&Realm::new("example.org").unwrap()).unwrap();
            b.add(&Nonce::new(self.nonce.as_deref().unwrap()).unwrap())
                .unwrap();
            b.add_message_integrity(&key).unwrap();
        }
        self.s.write_all(&req).await.unwrap();
        loop {
            let m = self.read_msg().await;
            let msg = Message::decode(&m).unwrap();
            if msg.typ().class == MessageClass::Indication {
                self.indications.push(m);
                continue;
            }
            assert_eq!(msg.transaction_id(), tid);
            return m;
        }
    }

    /// A signed request; the response.
    async fn request(&mut self, method: Method, attrs: Attrs<'_>) -> Vec<u8> {
        if self.nonce.is_none() {
            let challenge = self.send(method, attrs, false).await;
            let m = Message::decode(&challenge).unwrap();
            assert_eq!(m.get::<ErrorCode>().unwrap().unwrap().code(), 401);
            self.nonce = Some(m.get::<Nonce>().unwrap().unwrap().as_str().to_owned());
        }
        self.send(method, attrs, true).await
    }
}

fn code(resp: &[u8]) -> Option<u16> {
    let m = Message::decode(resp).unwrap();
    (m.typ().class == MessageClass::Error).then(|| m.get::<ErrorCode>().unwrap().unwrap().code())
}

fn connection_id(m: &[u8]) -> u32 {
    Message::decode(m)
        .unwrap()
        .get::<ConnectionId>()
        .unwrap()
        .expect("CONNECTION-ID")
        .0
}

/// A TCP peer on 127.0.0.1: hands over each accepted connection.
async fn tcp_peer() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(TcpStream, SocketAddr)>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(x) = l.accept().await {
            let _ = tx.send(x);
        }
    });
    (addr, rx)
}

async fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    tokio::time::timeout(STEP, s.read_exact(&mut v))
        .await
        .expect("bytes in time")
        .unwrap();
    v
}

/// A bound client data connection: raw bytes, some perhaps read already
/// with the ConnectionBind response.
struct Data {
    s: TcpStream,
    early: Vec<u8>,
}

impl Data {
    async fn read(&mut self, n: usize) -> Vec<u8> {
        let mut v: Vec<u8> = self.early.drain(..n.min(self.early.len())).collect();
        let have = v.len();
        v.extend(read_exact(&mut self.s, n - have).await);
        v
    }
}

/// A control connection with a TCP allocation (RFC 6062 §5.1), and its
/// relayed address.
async fn tcp_allocation(server: SocketAddr) -> (Conn, SocketAddr) {
    let mut control = Conn::open(server).await;
    let resp = control
        .request(Method::ALLOCATE, &|b| {
            b.add(&RequestedTransport(PROTO_TCP)).unwrap();
        })
        .await;
    assert_eq!(code(&resp), None, "TCP allocation");
    let relayed = Message::decode(&resp)
        .unwrap()
        .get::<XorRelayedAddress>()
        .unwrap()
        .unwrap()
        .0;
    (control, relayed)
}

/// Bind a new data connection to `id`; it then carries raw bytes.
async fn bind_data(server: SocketAddr, id: u32) -> Data {
    let mut data = Conn::open(server).await;
    let resp = data
        .request(Method::CONNECTION_BIND, &|b| {
            b.add(&ConnectionId(id)).unwrap();
        })
        .await;
    assert_eq!(code(&resp), None, "ConnectionBind succeeds");
    Data {
        s: data.s,
        early: data.buf,
    }
}

#[tokio::test]
async fn tcp_allocation_connect_accept_bind_and_relay() {
    tokio::time::timeout(BOUND, async {
        let srv = start(OPEN).await;
        let server = srv.tcp.unwrap();
        let (peer, mut accepted) = tcp_peer().await;

        let (mut control, relayed) = tcp_allocation(server).await;
        assert_eq!(relayed.ip().to_string(), "127.0.0.1");

        // Connect: the server connects to the peer from the relayed address.
        let connect = |p: SocketAddr| {
            move |b: &mut MessageBuilder<&mut Vec<u8>>| {
                b.add(&XorPeerAddress(p)).unwrap();
            }
        };
        let resp = control.request(Method::CONNECT, &connect(peer)).await;
        assert_eq!(code(&resp), None, "Connect succeeds");
        let id = connection_id(&resp);
        let (mut at_peer, seen_from) = tokio::time::timeout(STEP, accepted.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen_from, relayed, "the peer sees the relayed address");
        // A second Connect to the same peer: 446.
        let resp = control.request(Method::CONNECT, &connect(peer)).await;
        assert_eq!(code(&resp), Some(446));
        // The peer writes before the bind: buffered, not lost.
        at_peer.write_all(b"early from peer").await.unwrap();

        let mut data = bind_data(server, id).await;
        assert_eq!(data.read(15).await, b"early from peer");
        data.s.write_all(b"to the peer").await.unwrap();
        assert_eq!(read_exact(&mut at_peer, 11).await, b"to the peer");
        let big = vec![0xabu8; 100_000];
        at_peer.write_all(&big).await.unwrap();
        assert_eq!(data.read(big.len()).await, big);

        // A peer connecting to the relayed address, with a permission.
        let resp = control
            .request(Method::CREATE_PERMISSION, &connect(peer))
            .await;
        assert_eq!(code(&resp), None);
        let mut incoming = TcpStream::connect(relayed).await.unwrap();
        let attempt = control.read_msg().await;
        let m = Message::decode(&attempt).unwrap();
        assert_eq!(
            m.typ(),
            MessageType::new(Method::CONNECTION_ATTEMPT, MessageClass::Indication)
        );
        assert_eq!(
            m.get::<XorPeerAddress>().unwrap(),
            Some(XorPeerAddress(incoming.local_addr().unwrap()))
        );
        let id2 = connection_id(&attempt);
        assert_ne!(id2, id);
        let mut data2 = bind_data(server, id2).await;
        incoming.write_all(b"hello relay").await.unwrap();
        assert_eq!(data2.read(11).await, b"hello relay");
        data2.s.write_all(b"hello peer").await.unwrap();
        assert_eq!(read_exact(&mut incoming, 10).await, b"hello peer");

        // A peer that refuses: 447.
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let resp = control.request(Method::CONNECT, &connect(closed)).await;
        assert_eq!(code(&resp), Some(447));

        // The control connection closes: the allocation and both relays end.
        drop(control);
        for s in [&mut data.s, &mut data2.s] {
            let mut b = [0u8; 16];
            let n = tokio::time::timeout(STEP, s.read(&mut b))
                .await
                .expect("closed in time");
            assert!(matches!(n, Ok(0) | Err(_)), "the data connection is closed");
        }
        let mut b = [0u8; 16];
        let n = tokio::time::timeout(STEP, at_peer.read(&mut b))
            .await
            .expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)), "the peer connection is closed");
        let m = scrape(srv.metrics.unwrap()).await;
        assert_eq!(sample(&m, "p2p_turn_allocations_closed_total"), 1);
        // What the relays carried, by the allocation's transport.
        assert_eq!(
            sample(
                &m,
                "p2p_turn_relayed_bytes_to_peer_total{transport=\"tcp\"}"
            ),
            11 + 10
        );
        assert_eq!(
            sample(
                &m,
                "p2p_turn_relayed_bytes_to_client_total{transport=\"tcp\"}"
            ),
            15 + 100_000 + 11
        );
        assert_eq!(sample(&m, "p2p_turn_fast_path_packets_total"), 0);
        assert_eq!(sample(&m, "p2p_turn_tcp_peer_connections_total"), 2);
        assert_eq!(sample(&m, "p2p_turn_tcp_peer_connections_bound_total"), 2);
        assert!(
            TcpStream::connect(relayed).await.is_err(),
            "the relayed address no longer listens"
        );
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_peer_without_permission_is_refused() {
    tokio::time::timeout(BOUND, async {
        let srv = start(OPEN).await;
        let server = srv.tcp.unwrap();
        let (mut control, relayed) = tcp_allocation(server).await;
        // No permission: the connection is accepted and closed at once,
        // and the client hears nothing.
        let mut s = TcpStream::connect(relayed).await.unwrap();
        let mut b = [0u8; 4];
        let n = tokio::time::timeout(STEP, s.read(&mut b))
            .await
            .expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)));
        let resp = control.request(Method::REFRESH, &|_| {}).await;
        assert_eq!(code(&resp), None);
        assert!(control.indications.is_empty(), "no ConnectionAttempt");
        let m = scrape(srv.metrics.unwrap()).await;
        assert_eq!(
            sample(&m, "p2p_turn_dropped_total{reason=\"no_permission\"}"),
            1
        );
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn max_bps_holds_a_tcp_relay_to_its_rate() {
    tokio::time::timeout(BOUND, async {
        // 50 000 bytes/s with a 50 000-byte bucket: 150 000 bytes need at
        // least two seconds, whichever way they go.
        let srv = start(&OPEN.replace("[turn.users]", "max_bps = 50000\n[turn.users]")).await;
        let server = srv.tcp.unwrap();
        let (peer, mut accepted) = tcp_peer().await;
        let (mut control, _) = tcp_allocation(server).await;
        let resp = control
            .request(Method::CONNECT, &|b| {
                b.add(&XorPeerAddress(peer)).unwrap();
            })
            .await;
        assert_eq!(code(&resp), None, "Connect succeeds");
        let id = connection_id(&resp);
        let (mut at_peer, _) = tokio::time::timeout(STEP, accepted.recv())
            .await
            .unwrap()
            .unwrap();
        let mut data = bind_data(server, id).await;
        let started = std::time::Instant::now();
        let half = vec![0x5au8; 75_000];
        data.s.write_all(&half).await.unwrap();
        assert_eq!(read_exact(&mut at_peer, half.len()).await, half);
        at_peer.write_all(&half).await.unwrap();
        assert_eq!(data.read(half.len()).await, half);
        let took = started.elapsed();
        assert!(
            took >= std::time::Duration::from_millis(1900),
            "150 000 bytes at 50 000 bytes/s (after a 50 000-byte burst) took {took:?}"
        );
        let m = scrape(srv.metrics.unwrap()).await;
        assert_eq!(
            sample(
                &m,
                "p2p_turn_relayed_bytes_to_peer_total{transport=\"tcp\"}"
            ),
            75_000
        );
        drop(control);
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn max_tcp_connections_caps_the_peer_connections_of_an_allocation() {
    tokio::time::timeout(BOUND, async {
        let srv =
            start(&OPEN.replace("[turn.users]", "max_tcp_connections = 1\n[turn.users]")).await;
        let server = srv.tcp.unwrap();
        let (first, _a) = tcp_peer().await;
        let (second, _b) = tcp_peer().await;
        let (mut control, _) = tcp_allocation(server).await;
        let connect = |p: SocketAddr| {
            move |b: &mut MessageBuilder<&mut Vec<u8>>| {
                b.add(&XorPeerAddress(p)).unwrap();
            }
        };
        let resp = control.request(Method::CONNECT, &connect(first)).await;
        assert_eq!(code(&resp), None, "the first connection");
        let resp = control.request(Method::CONNECT, &connect(second)).await;
        assert_eq!(code(&resp), Some(508), "one connection at most");
        drop(control);
        srv.stop().await;
    })
    .await
    .expect("in time");
}
