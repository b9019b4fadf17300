//! The STUN/TURN TCP port under abuse (issue 18.2), on loopback with a
//! one-second idle timeout: bytes alone and error answers are not progress,
//! an unauthenticated TURN request does not raise the timeout, a connection
//! that holds an allocation outlives it, one address is held to its
//! share of the connections while a light address still gets in, and a
//! TURN client that stops reading is closed by the write timeout while its
//! queue drops what does not fit. Every wait is bounded.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use p2p_server::Config;
use p2p_stun::attr::{RequestedTransport, PROTO_UDP};
use p2p_stun::{Message, MessageBuilder, MessageClass, MessageType, Method, TransactionId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn request(method: Method, id: u8) -> Vec<u8> {
    let mut v = Vec::new();
    let mut b = MessageBuilder::new(
        &mut v,
        MessageType::new(method, MessageClass::Request),
        TransactionId::new([id; 12]),
    )
    .unwrap();
    if method == Method::ALLOCATE {
        b.add(&RequestedTransport(PROTO_UDP)).unwrap();
    }
    v
}

/// A server with `stun` added to its `[stun]` section and `rest` after.
async fn serve(stun: &str, rest: &str) -> Running {
    let text = format!(
        "[stun]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\ntcp_idle_timeout_secs = 1\n{stun}\n[metrics]\nlisten = \"127.0.0.1:0\"\n{rest}"
    );
    start_cfg(Config::from_toml_str(&text).unwrap()).await
}

async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(from, 0)).unwrap();
    s.connect(to).await.unwrap()
}

/// Read one STUN message; `None` when the connection ends (or nothing
/// comes within `STEP`).
async fn read_msg(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = [0u8; 20];
    tokio::time::timeout(STEP, s.read_exact(&mut head))
        .await
        .ok()?
        .ok()?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut v = head.to_vec();
    v.resize(20 + len, 0);
    s.read_exact(&mut v[20..]).await.ok()?;
    Some(v)
}

/// Whether the connection answers a Binding request.
async fn served(s: &mut TcpStream) -> bool {
    if s.write_all(&request(Method::BINDING, 9)).await.is_err() {
        return false;
    }
    read_msg(s)
        .await
        .is_some_and(|m| Message::decode(&m).is_ok_and(|m| m.typ().class == MessageClass::Success))
}

/// Wait until the server closes `s` (reading and dropping whatever comes);
/// how long it took from `since`.
async fn closed_after(s: &mut TcpStream, since: Instant) -> Duration {
    let mut b = [0u8; 512];
    loop {
        match tokio::time::timeout(STEP, s.read(&mut b)).await {
            Ok(Ok(0) | Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("still open after {:?}", since.elapsed()),
        }
    }
}

#[tokio::test]
async fn a_byte_at_a_time_does_not_keep_a_connection_open() {
    tokio::time::timeout(BOUND, async {
        let srv = serve("", "").await;
        let mut s = TcpStream::connect(srv.tcp.unwrap()).await.unwrap();
        let started = Instant::now();
        // A Binding header announcing 1000 bytes, one byte every 200 ms
        // (before, each byte restarted the idle timeout).
        let mut frame = request(Method::BINDING, 1);
        frame[2..4].copy_from_slice(&1000u16.to_be_bytes());
        let (mut r, mut w) = s.split();
        let writer = async {
            for b in frame.iter().cycle().take(40) {
                if w.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let reader = async {
            let mut b = [0u8; 64];
            loop {
                match r.read(&mut b).await {
                    Ok(0) | Err(_) => return started.elapsed(),
                    Ok(_) => {}
                }
            }
        };
        let lived = tokio::select! {
            t = reader => t,
            () = writer => panic!("open after 8 s of bytes"),
        };
        assert!(
            lived >= Duration::from_millis(900) && lived < Duration::from_millis(2500),
            "{lived:?}"
        );
        let m = scrape(srv.metrics.unwrap()).await;
        assert_eq!(
            sample(&m, "p2p_stream_closed_total{reason=\"slow_frame\"}"),
            1
        );
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn errors_are_not_progress_and_an_unauthenticated_allocate_does_not_raise_the_timeout() {
    tokio::time::timeout(BOUND, async {
        let srv = serve("", OPEN).await;
        let to = srv.tcp.unwrap();
        // Unauthenticated Allocates every 300 ms, each answered 401 (before,
        // the first one raised the timeout to 3,660 s).
        let mut guesser = TcpStream::connect(to).await.unwrap();
        // Bindings every 300 ms, each answered with success: progress.
        let mut binder = TcpStream::connect(to).await.unwrap();
        let started = Instant::now();
        let mut closed = None;
        for k in 0..10u8 {
            if closed.is_none() {
                let alive = guesser
                    .write_all(&request(Method::ALLOCATE, k))
                    .await
                    .is_ok()
                    && read_msg(&mut guesser).await.is_some();
                if !alive {
                    closed = Some(started.elapsed());
                }
            }
            assert!(served(&mut binder).await, "the binder was closed at {k}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let closed = closed.expect("the 401s kept the connection open");
        assert!(closed < Duration::from_millis(2000), "{closed:?}");
        let m = scrape(srv.metrics.unwrap()).await;
        assert_eq!(sample(&m, "p2p_stream_closed_total{reason=\"idle\"}"), 1);
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_connection_that_holds_an_allocation_outlives_the_idle_timeout() {
    tokio::time::timeout(BOUND, async {
        let srv = serve("", OPEN).await;
        let (peer, _saw) = echo_peer().await;
        let mut c = Client::tcp(srv.tcp.unwrap(), "alice", "secret").await;
        c.allocate().await.expect("allocated");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        c.permit(peer).await.expect("still connected");
        c.echo(peer, b"after two idle timeouts").await;
        let m = scrape(srv.metrics.unwrap()).await;
        assert_eq!(sample(&m, "p2p_stream_closed_total{reason=\"idle\"}"), 0);
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn one_address_is_held_to_its_share_and_a_light_address_still_gets_in() {
    tokio::time::timeout(BOUND, async {
        // 10 slots, 6 per address, 2 kept for addresses holding fewer than 2.
        let srv = serve(
            "max_connections = 10\nmax_connections_per_ip = 6\nreserved_percent = 20\nreserve_below = 2",
            "",
        )
        .await;
        let to = srv.tcp.unwrap();
        let ip = |d: u8| IpAddr::from([127, 0, 0, d]);
        let mut held = Vec::new();
        for _ in 0..6 {
            let mut s = connect_from(ip(1), to).await;
            assert!(served(&mut s).await);
            held.push(s);
        }
        let mut over = connect_from(ip(1), to).await;
        assert!(!served(&mut over).await, "past the per-address limit");
        for _ in 0..2 {
            let mut s = connect_from(ip(2), to).await;
            assert!(served(&mut s).await);
            held.push(s);
        }
        // 8 of 10 taken: the last 2 are for light addresses only.
        let mut heavy = connect_from(ip(2), to).await;
        assert!(!served(&mut heavy).await, "a heavy address in the reserve");
        let mut light = connect_from(ip(3), to).await;
        assert!(served(&mut light).await, "a light address in the reserve");
        let m = scrape(srv.metrics.unwrap()).await;
        let refused = |r: &str| sample(&m, &format!("p2p_stream_connections_refused_total{{reason=\"{r}\"}}"));
        assert_eq!((refused("per_ip"), refused("reserved"), refused("full")), (1, 1, 0));
        assert_eq!(sample(&m, "p2p_stream_connections"), 9);
        assert_eq!(sample(&m, "p2p_stream_addresses"), 3);
        // A connection that leaves gives its slot back.
        drop(held.pop());
        let deadline = Instant::now() + STEP;
        while sample(&scrape(srv.metrics.unwrap()).await, "p2p_stream_connections") != 8 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut again = connect_from(ip(2), to).await;
        assert!(served(&mut again).await);
        let since = Instant::now();
        drop(over);
        drop(heavy);
        // Idle connections go at the idle timeout, the light one too.
        let lived = closed_after(&mut light, since).await;
        assert!(lived < Duration::from_millis(2500), "{lived:?}");
        srv.stop().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_turn_client_that_stops_reading_is_closed_by_the_write_timeout_and_the_rest_dropped() {
    tokio::time::timeout(BOUND, async {
        let srv = serve("", OPEN).await;
        let metrics = srv.metrics.unwrap();
        let mut c = Client::tcp(srv.tcp.unwrap(), "alice", "secret").await;
        let relayed = c.allocate().await.expect("allocated");
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.permit(peer.local_addr().unwrap())
            .await
            .expect("permitted");
        // The client reads nothing more while the peer sends to its relay:
        // the kernel's buffers fill, then the connection's queue (its
        // bound drops the rest), then a write waits past the timeout (1 s).
        let started = Instant::now();
        let payload = [7u8; 1200];
        let closed = loop {
            for _ in 0..64 {
                let _ = peer.send_to(&payload, relayed).await;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            let m = scrape(metrics).await;
            if sample(&m, "p2p_stream_closed_total{reason=\"write_timeout\"}") == 1 {
                break started.elapsed();
            }
            assert!(started.elapsed() < 2 * STEP, "still open");
        };
        let m = scrape(metrics).await;
        assert!(sample(&m, "p2p_turn_dropped_total{reason=\"send_failed\"}") > 0);
        assert!(closed >= Duration::from_secs(1), "{closed:?}");
        // The allocation ends with its connection.
        let deadline = Instant::now() + STEP;
        while sample(
            &scrape(metrics).await,
            "p2p_turn_allocations{transport=\"tcp\"}",
        ) != 0
        {
            assert!(
                Instant::now() < deadline,
                "the allocation outlived its connection"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(c);
        srv.stop().await;
    })
    .await
    .expect("in time");
}
