//! The server as a node of a cluster, over loopback, with the test playing
//! the shared store on the other end of the [`ClusterLink`]: messages from
//! other nodes reach a reading client whole and in order however many come
//! at once (each counts as the bytes it is, not as the largest message
//! allowed), and a client that stops reading is still closed as too slow
//! (1008) when what other nodes send it piles up. Every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use p2p_signaling::{
    serve, ClientMsg, CloseReason, ClusterAttach, ClusterEvent, ClusterLink, ClusterMember,
    ClusterOp, Limits, Metrics, PeerInfo, ServerConfig, ServerMsg, SignalingClient,
};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const STEP: Duration = Duration::from_secs(10);

/// The peer of the other node that sends.
const REMOTE: &str = "q1";

/// A node and the store's end of its link.
struct Node {
    addr: SocketAddr,
    url: String,
    metrics: Metrics,
    ops: mpsc::Receiver<ClusterOp>,
    events: mpsc::Sender<ClusterEvent>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start() -> Node {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let metrics = Metrics::new();
    let (ops_tx, ops) = mpsc::channel(1024);
    let (events, events_rx) = mpsc::channel(1024);
    let config = ServerConfig {
        limits: Limits {
            rate_per_second: 1000.0,
            burst: 1000.0,
            ..Limits::default()
        },
        metrics: metrics.clone(),
        cluster: Some(ClusterAttach::new(ClusterLink {
            node: "here".into(),
            ops: ops_tx,
            events: events_rx,
        })),
        ..ServerConfig::default()
    };
    // The default queue: 256 messages, 1 MiB.
    assert_eq!(config.max_queued_bytes, 1024 * 1024);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, config, async move {
        let _ = stopped.await;
    }));
    Node {
        addr,
        url: format!("ws://{addr}/"),
        metrics,
        ops,
        events,
        stop,
        task,
    }
}

impl Node {
    /// Answers the join the node asks the store for: the room already
    /// holds [`REMOTE`], a peer of node `there`.
    async fn admit(&mut self) {
        let op = timeout(STEP, self.ops.recv())
            .await
            .expect("a join for the store in time")
            .expect("the link is open");
        let ClusterOp::Join { conn, room, .. } = op else {
            panic!("not a join: {op:?}");
        };
        let remote = ClusterMember {
            peer: PeerInfo {
                id: REMOTE.into(),
                name: None,
                hide_hosts: false,
            },
            node: "there".into(),
        };
        let result = ClusterEvent::JoinResult {
            conn,
            room,
            result: Ok(vec![remote]),
        };
        self.events.send(result).await.expect("the node listens");
    }

    /// `count` offers from [`REMOTE`] to `to`, handed over at once as the
    /// store does after one read from Redis; offer `i` carries `sdp(i)`.
    async fn burst(&self, to: &str, count: usize, sdp: impl Fn(usize) -> String) {
        for i in 0..count {
            let msg = ServerMsg::Offer {
                from: REMOTE.into(),
                sdp: sdp(i),
            };
            let ev = ClusterEvent::Deliver {
                to: to.to_owned(),
                json: msg.to_json(),
            };
            self.events.send(ev).await.expect("the node listens");
        }
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        timeout(STEP, self.task)
            .await
            .expect("stops in time")
            .expect("task")
            .expect("ok");
    }
}

/// About 7 KB of JSON: a hundred of them hold 0.7 MiB, under the queue's
/// 1 MiB, where counting each at the largest message allowed (64 KiB)
/// made 6.4 MiB.
fn offer_sdp(i: usize) -> String {
    format!("v=0\r\ns=burst-{i}\r\n{}", "a=x\r\n".repeat(1000))
}

// One thread: the node's task takes the whole burst before the client's
// writer runs, as when one read from Redis brought it (with more threads
// the writer may drain it as it comes, and the burst would not show).
#[tokio::test(flavor = "current_thread")]
async fn a_burst_of_100_messages_from_another_node_reaches_a_reading_client_whole_and_in_order() {
    let mut node = start().await;
    let mut client = SignalingClient::connect(&node.url).await.expect("connect");
    let (peers, ()) = tokio::join!(client.join("r", None, None), node.admit());
    let peers = peers.expect("joined");
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].id, REMOTE);
    let me = client.peer_id().to_owned();
    // Queued before the node's task runs again (the link holds 1024).
    node.burst(&me, 100, offer_sdp).await;
    for i in 0..100 {
        match timeout(STEP, client.recv()).await.expect("in time") {
            Ok(Some(ServerMsg::Offer { from, sdp })) => {
                assert_eq!(from, REMOTE);
                assert!(sdp == offer_sdp(i), "offer {i} arrived out of order or cut");
            }
            other => panic!("offer {i}: {other:?}"),
        }
    }
    let m = node.metrics.snapshot();
    assert_eq!(m.closed_for(CloseReason::Slow), 0, "{m:?}");
    node.shutdown().await;
}

/// A raw WebSocket with a small receive buffer, which the test may simply
/// stop polling.
async fn raw_ws(to: SocketAddr) -> WebSocketStream<TcpStream> {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let tcp = sock.connect(to).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{to}/"), tcp)
        .await
        .expect("handshake");
    ws
}

async fn next_raw(ws: &mut WebSocketStream<TcpStream>) -> ServerMsg {
    loop {
        match timeout(STEP, ws.next()).await.expect("message in time") {
            Some(Ok(Message::Text(t))) => return ServerMsg::from_json(t.as_str()).expect("valid"),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_when_messages_from_another_node_pile_up() {
    use futures_util::SinkExt;
    let mut node = start().await;
    let mut slow = raw_ws(node.addr).await;
    let ServerMsg::Welcome { peer_id, .. } = next_raw(&mut slow).await else {
        panic!("no welcome");
    };
    let join = ClientMsg::Join {
        room: "r".into(),
        token: None,
        name: None,
        version: None,
        id: None,
        hide_hosts: false,
    };
    timeout(STEP, slow.send(Message::text(join.to_json())))
        .await
        .expect("in time")
        .expect("join sent");
    node.admit().await;
    assert!(matches!(
        next_raw(&mut slow).await,
        ServerMsg::Joined { .. }
    ));
    // 200 offers of 56 KB of JSON (under the 64 KiB a sender's node
    // lets through): 11 MB for a client that reads nothing more.
    node.burst(&peer_id, 200, |i| {
        format!("v=0\r\ns=flood-{i}\r\n{}", "a=x\r\n".repeat(8_000))
    })
    .await;
    // The node drops it as too slow and tells the store it left.
    let left = timeout(STEP, async {
        loop {
            match node.ops.recv().await {
                Some(ClusterOp::Leave { peer_id: p, .. }) if p == peer_id => return,
                Some(_) => continue,
                None => panic!("the link closed"),
            }
        }
    })
    .await;
    assert!(left.is_ok(), "the slow reader was never dropped");
    let m = node.metrics.snapshot();
    assert_eq!(m.closed_for(CloseReason::Slow), 1, "{m:?}");
    drop(slow);
    node.shutdown().await;
}
