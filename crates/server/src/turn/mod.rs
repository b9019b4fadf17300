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
use std::sync::Arc;

use p2p_stun::{classify, MessageType, PacketKind};
use p2p_turn::{is_turn_method, Transport};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::fastpath::{FastPath, TcpMeter};

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
pub(crate) use setup::{prepare, TurnSetup};

/// Depth of each TCP/TLS connection's outgoing queue.
pub(crate) const CONN_QUEUE: usize = 1024;

/// What the TURN task sends a TCP/TLS client connection's task.
pub(crate) enum ToConnection {
    /// A framed message to write.
    Write(Vec<u8>),
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

/// Whether a packet that arrived on a listening address goes to the TURN
/// server: ChannelData, or a STUN message of a TURN method (Binding stays
/// with the STUN responder).
pub(crate) fn goes_to_turn_server(b: &[u8]) -> bool {
    match classify(b) {
        PacketKind::ChannelData => true,
        PacketKind::Stun if b.len() >= 2 => {
            is_turn_method(MessageType::from_u16(u16::from_be_bytes([b[0], b[1]])).method)
        }
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
        conn: Option<mpsc::Sender<ToConnection>>,
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
    Alternates(Vec<SocketAddr>),
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
        conn: &mpsc::Sender<ToConnection>,
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

    /// Sets where Allocates beyond the total quota are redirected.
    pub(crate) async fn set_alternates(&self, servers: Vec<SocketAddr>) {
        let _ = self.tx.send(Inbound::Alternates(servers)).await;
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
    use p2p_stun::{ChannelData, MessageBuilder, MessageClass, Method, TransactionId};

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
