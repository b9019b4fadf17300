//! The TURN server (RFC 8656) on tokio: [`TurnService`], which a Rust
//! program embeds (and `p2p serve` uses for its TURN part).
//!
//! One task owns a [`p2p_turn::TurnServer`] and the sockets it asks for (one
//! UDP socket per relayed address, [`p2p_turn::SocketRequest`]), and is fed
//! through a channel by the UDP workers, the TCP/TLS connections and the
//! relayed sockets' readers. Binding stays with the STUN responder (RFC
//! 5780); TURN methods and ChannelData come here (see
//! `goes_to_turn_server`).
//!
//! TCP allocations (RFC 6062): a TCP relayed address is a listening socket
//! whose accept loop hands peers to this task; Connect opens a connection
//! from the relayed address in a task of its own. This task holds peer
//! connections until a ConnectionBind binds them, then hands each one to its
//! client data connection's task (`ToConnection::Splice`), which copies
//! bytes both ways until either side closes.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use p2p_stun::{classify, peek_type, PacketKind};
use p2p_turn::{is_turn_method, Transport};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::fastpath::{FastPath, TcpMeter};

mod authlog;
mod creds;
mod pool;
mod relayed;
mod send;
mod service;
mod setup;
mod task;
mod tcp_relay;

pub(crate) use creds::{Creds, SecretRing};
pub(crate) use pool::BufPool;
pub use service::{TurnService, TurnServiceBuilder, TurnServiceError};
pub(crate) use setup::{check_limits, prepare, TurnSetup};

/// Depth of each TCP/TLS connection's outgoing queue.
pub(crate) const CONN_QUEUE: usize = 1024;
/// Bytes one TCP/TLS connection's outgoing queue may hold: what the TURN
/// task has for a client that does not read is dropped past it (as a full
/// UDP socket drops), so that such a client costs at most this much.
pub(crate) const CONN_QUEUE_BYTES: usize = 1024 * 1024;

/// What the TURN task sends a TCP/TLS client connection's task.
pub(crate) enum ToConnection {
    /// A framed message to write.
    Write(Vec<u8>),
    /// The connection now holds an allocation (true), or no longer does
    /// (false): it may stay silent for the allocation's lifetime, not only
    /// the idle timeout.
    Allocated(bool),
    /// The connection is now an RFC 6062 client data connection bound to
    /// `peer`: relay raw bytes both ways until either closes or `kill` fires
    /// (its sender dropped).
    Splice {
        peer: TcpStream,
        kill: oneshot::Receiver<()>,
        /// The allocation's traffic and bandwidth cap.
        meter: Arc<TcpMeter>,
    },
}

/// A TCP/TLS connection's outgoing queue, bounded in messages
/// ([`CONN_QUEUE`]) and in bytes ([`CONN_QUEUE_BYTES`]); cheap to clone.
#[derive(Clone)]
pub(crate) struct ConnQueue {
    tx: mpsc::Sender<ToConnection>,
    queued: Arc<AtomicUsize>,
}

/// The connection's end of its [`ConnQueue`].
pub(crate) struct ConnReceiver {
    rx: mpsc::Receiver<ToConnection>,
    queued: Arc<AtomicUsize>,
}

impl ConnQueue {
    /// A queue and its receiving end.
    pub(crate) fn new() -> (ConnQueue, ConnReceiver) {
        let (tx, rx) = mpsc::channel(CONN_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        (
            ConnQueue {
                tx,
                queued: queued.clone(),
            },
            ConnReceiver { rx, queued },
        )
    }

    /// Queue `m` without waiting; false (and `m` dropped) when the queue is
    /// full in messages or bytes, or the connection is gone.
    pub(crate) fn push(&self, m: ToConnection) -> bool {
        let n = match &m {
            ToConnection::Write(b) => b.len(),
            _ => 0,
        };
        if n > 0 && self.queued.load(Ordering::Relaxed) + n > CONN_QUEUE_BYTES {
            return false;
        }
        let ok = self.tx.try_send(m).is_ok();
        if ok {
            self.queued.fetch_add(n, Ordering::Relaxed);
        }
        ok
    }
}

impl ConnReceiver {
    /// The next message (`None` once every sender is gone).
    pub(crate) async fn recv(&mut self) -> Option<ToConnection> {
        let m = self.rx.recv().await?;
        if let ToConnection::Write(b) = &m {
            self.queued.fetch_sub(b.len(), Ordering::Relaxed);
        }
        Some(m)
    }
}

/// Whether a packet that arrived on a listening address goes to the TURN
/// server: ChannelData, or a STUN message of a TURN method (Binding stays
/// with the STUN responder).
pub(crate) fn goes_to_turn_server(b: &[u8]) -> bool {
    match classify(b) {
        PacketKind::ChannelData => true,
        PacketKind::Stun => peek_type(b).is_some_and(|t| is_turn_method(t.method)),
        _ => false,
    }
}

/// What the TURN task is sent.
pub(crate) enum Inbound {
    /// A packet from a client on a listening address. `conn` is the
    /// connection's outgoing queue for TCP/TLS.
    FromClient {
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: Vec<u8>,
        conn: Option<ConnQueue>,
    },
    /// A datagram from a peer on a relayed address.
    FromPeer {
        relayed: SocketAddr,
        peer: SocketAddr,
        bytes: Vec<u8>,
    },
    /// A peer connected to a TCP relayed address (RFC 6062 §5.3).
    PeerAccepted {
        relayed: SocketAddr,
        peer: SocketAddr,
        stream: TcpStream,
    },
    /// A connection to a peer asked by Connect is up, or failed.
    PeerConnected {
        id: u32,
        stream: io::Result<TcpStream>,
    },
    /// A TCP/TLS connection closed.
    Closed {
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
    },
    /// Asked by the metrics endpoint.
    Stats(oneshot::Sender<TurnStats>),
    /// Where Allocates beyond the total quota are redirected (300), from
    /// the cluster's load figures.
    Alternates(Vec<SocketAddr>, Vec<SocketAddr>),
    /// A configuration reload (SIGHUP): new credentials and peer rules;
    /// every allocation stays.
    Reload {
        credentials: task::Credentials,
        peer_policy: p2p_turn::PeerPolicy,
        done: oneshot::Sender<()>,
    },
    /// Stop: end every allocation, close every socket, then say so.
    Stop(oneshot::Sender<TurnStats>),
}

/// The way into the TURN task; cheap to clone.
#[derive(Clone)]
pub(crate) struct TurnHandle {
    tx: mpsc::Sender<Inbound>,
    pool: Arc<BufPool>,
    /// The relay fast path, when on.
    fast: Option<Arc<FastPath>>,
}

impl TurnHandle {
    /// The relay fast path, when on: the UDP workers stage ChannelData
    /// there before handing anything over.
    pub(crate) fn fast(&self) -> Option<&FastPath> {
        self.fast.as_deref()
    }

    /// Hand a UDP datagram from a listening socket over (dropped when the
    /// queue is full). False when it was dropped.
    pub(crate) fn udp(&self, local: SocketAddr, remote: SocketAddr, bytes: &[u8]) -> bool {
        self.tx
            .try_send(Inbound::FromClient {
                transport: Transport::Udp,
                local,
                remote,
                bytes: self.pool.copy_of(bytes),
                conn: None,
            })
            .is_ok()
    }

    /// Hand one framed message of a TCP/TLS connection over; waits when the
    /// queue is full (the stream pushes back).
    pub(crate) async fn stream(
        &self,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
        conn: &ConnQueue,
    ) -> bool {
        self.tx
            .send(Inbound::FromClient {
                transport,
                local,
                remote,
                bytes: self.pool.copy_of(bytes),
                conn: Some(conn.clone()),
            })
            .await
            .is_ok()
    }

    /// Say that a connection closed (its allocation ends with it). Waits
    /// for room in the queue: this message must not be lost.
    pub(crate) async fn closed(&self, transport: Transport, local: SocketAddr, remote: SocketAddr) {
        let _ = self
            .tx
            .send(Inbound::Closed {
                transport,
                local,
                remote,
            })
            .await;
    }

    /// The TURN task's statistics now (`None` if it is gone).
    pub(crate) async fn stats(&self) -> Option<TurnStats> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Inbound::Stats(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Sets where Allocates beyond the total quota are redirected: over
    /// UDP and TCP to `servers`, over TLS to `tls`.
    pub(crate) async fn set_alternates(&self, servers: Vec<SocketAddr>, tls: Vec<SocketAddr>) {
        let _ = self.tx.send(Inbound::Alternates(servers, tls)).await;
    }

    /// Give the TURN task the users, secret and peer rules of `turn` (a
    /// reload, SIGHUP); returns once it has them. Allocations stay. `ring`:
    /// the cluster's REST secrets on a node of a cluster (kept).
    pub(crate) async fn reload(
        &self,
        turn: &crate::config::TurnConfig,
        ring: Option<SecretRing>,
    ) -> Result<(), crate::ServerError> {
        let (credentials, peer_policy) = setup::reload_parts(turn, ring)?;
        let (done, rx) = oneshot::channel();
        let m = Inbound::Reload {
            credentials,
            peer_policy,
            done,
        };
        if self.tx.send(m).await.is_err() || rx.await.is_err() {
            return Err(crate::ServerError::Reload(
                "the TURN task has stopped".to_owned(),
            ));
        }
        Ok(())
    }

    /// Stop the TURN task: every allocation ends, every socket it opened is
    /// closed; its last statistics (`None` if it was gone).
    pub(crate) async fn stop(&self) -> Option<TurnStats> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Inbound::Stop(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// Per client transport (udp, tcp, tls) figures.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TransportStats {
    pub(crate) allocations: u64,
    pub(crate) allocations_created: u64,
    pub(crate) permissions: u64,
    pub(crate) channels: u64,
    pub(crate) requests: u64,
    pub(crate) auth_failures: u64,
    pub(crate) bytes_to_peer: u64,
    pub(crate) packets_to_peer: u64,
    pub(crate) bytes_to_client: u64,
    pub(crate) packets_to_client: u64,
    /// Packets (datagrams or frames) from clients to the TURN server.
    pub(crate) client_packets_in: u64,
    /// Packets from the TURN server to clients.
    pub(crate) client_packets_out: u64,
}

/// What the metrics endpoint shows of TURN.
#[derive(Debug, Clone, Default)]
pub(crate) struct TurnStats {
    pub(crate) counters: p2p_turn::Counters,
    /// Indexed by [`transport_index`].
    pub(crate) by_transport: [TransportStats; 3],
    /// Packets dropped because a queue was full or a send failed.
    pub(crate) send_errors: u64,
    /// Packets relayed on the fast path (both directions; included in the
    /// relayed counters too).
    pub(crate) fast_path_packets: u64,
}

pub(crate) const TRANSPORTS: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

pub(crate) fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2p_stun::{ChannelData, MessageBuilder, MessageClass, MessageType, Method, TransactionId};

    fn msg(method: Method, class: MessageClass) -> Vec<u8> {
        let mut v = Vec::new();
        MessageBuilder::new(
            &mut v,
            MessageType::new(method, class),
            TransactionId::new([3; 12]),
        )
        .unwrap();
        v
    }

    #[test]
    fn turn_methods_and_channel_data_are_routed_binding_is_not() {
        assert!(goes_to_turn_server(&msg(
            Method::ALLOCATE,
            MessageClass::Request
        )));
        assert!(goes_to_turn_server(&msg(
            Method::REFRESH,
            MessageClass::Request
        )));
        assert!(goes_to_turn_server(&msg(
            Method::SEND,
            MessageClass::Indication
        )));
        assert!(goes_to_turn_server(&msg(
            Method::CREATE_PERMISSION,
            MessageClass::Request
        )));
        assert!(!goes_to_turn_server(&msg(
            Method::BINDING,
            MessageClass::Request
        )));
        assert!(!goes_to_turn_server(&msg(
            Method::BINDING,
            MessageClass::Indication
        )));
        let mut cd = Vec::new();
        ChannelData::new(0x4001, b"x")
            .unwrap()
            .encode(&mut cd, false)
            .unwrap();
        assert!(goes_to_turn_server(&cd));
        assert!(!goes_to_turn_server(&[]));
        assert!(!goes_to_turn_server(&[0x00]));
        assert!(!goes_to_turn_server(&[0x80, 0, 0, 0]));
    }
}
