//! What the server counts, shared with whoever renders it (the daemon's
//! Prometheus endpoint).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::addr::{AddrStats, AddrTable};
use crate::rooms::{RoomStats, Rooms};

/// Why the server ended a WebSocket connection (or saw it end).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client closed it, or the connection was lost.
    Client,
    /// A read or write failed.
    Error,
    /// No message and no pong for the idle timeout (close 1008).
    Idle,
    /// The client read too slowly: its queue of outgoing messages overflowed
    /// (close 1008).
    Slow,
    /// One write to the client did not complete within the write timeout
    /// (close 1008).
    WriteTimeout,
    /// A message from the client stayed unfinished (a frame cut short, a
    /// fragmented message without its last fragment) for the message
    /// timeout (close 1008).
    SlowMessage,
    /// A frame above the hard cap (close 1009).
    TooLarge,
    /// The server holds its maximum number of WebSockets (close 1013).
    Full,
    /// The server is shutting down (close 1001).
    Shutdown,
}

impl CloseReason {
    /// Every reason, in the order of [`MetricsSnapshot::closed`].
    pub const ALL: [CloseReason; 9] = [
        CloseReason::Client,
        CloseReason::Error,
        CloseReason::Idle,
        CloseReason::Slow,
        CloseReason::WriteTimeout,
        CloseReason::SlowMessage,
        CloseReason::TooLarge,
        CloseReason::Full,
        CloseReason::Shutdown,
    ];

    /// A short name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Error => "error",
            CloseReason::Idle => "idle",
            CloseReason::Slow => "slow_reader",
            CloseReason::WriteTimeout => "write_timeout",
            CloseReason::SlowMessage => "slow_message",
            CloseReason::TooLarge => "too_large",
            CloseReason::Full => "full",
            CloseReason::Shutdown => "shutdown",
        }
    }

    /// The close frame the server sends for this reason, if any.
    pub(crate) fn close_frame(self) -> Option<(CloseCode, &'static str)> {
        match self {
            CloseReason::Client | CloseReason::Error => None,
            CloseReason::Idle => Some((CloseCode::Policy, "idle timeout")),
            CloseReason::Slow => Some((CloseCode::Policy, "too slow")),
            CloseReason::WriteTimeout => Some((CloseCode::Policy, "write timeout")),
            CloseReason::SlowMessage => Some((CloseCode::Policy, "message too slow")),
            CloseReason::TooLarge => Some((CloseCode::Size, "message too large")),
            CloseReason::Full => Some((CloseCode::Again, "too many connections")),
            CloseReason::Shutdown => Some((CloseCode::Away, "server shutting down")),
        }
    }

    fn index(self) -> usize {
        CloseReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(0)
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The signaling server's counters and gauges, shared between the server's
/// tasks and a reader (cheap to clone). Put one in
/// [`ServerConfig::metrics`](super::ServerConfig::metrics), keep a clone,
/// and read it with [`snapshot`](Metrics::snapshot).
#[derive(Clone, Default)]
pub struct Metrics(Arc<Inner>);

#[derive(Default)]
struct Inner {
    rooms: Mutex<RoomsGauges>,
    addrs: Mutex<AddrGauges>,
    closed: [AtomicU64; CloseReason::ALL.len()],
    handshake_failures: AtomicU64,
    handshake_timeouts: AtomicU64,
    cluster_ops_dropped: AtomicU64,
}

#[derive(Default, Clone)]
struct RoomsGauges {
    stats: RoomStats,
    websockets: usize,
    rooms: usize,
    members: usize,
}

#[derive(Default, Clone, Copy)]
struct AddrGauges {
    stats: AddrStats,
    open: usize,
    addresses: usize,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Metrics").finish_non_exhaustive()
    }
}

/// The metrics at one moment.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// The rooms' counts: connections, messages relayed and refused by
    /// code, credentials handed out and withheld.
    pub rooms: RoomStats,
    /// WebSockets open (clients that got a welcome).
    pub websockets: usize,
    /// Rooms with at least one member.
    pub room_count: usize,
    /// Room memberships.
    pub members: usize,
    /// Admissions of TCP connections by address: admitted and refused by
    /// reason (only where the caller uses [`Acceptor::admit`](super::Acceptor::admit)).
    pub admission: AddrStats,
    /// TCP connections admitted and still open.
    pub tcp_open: usize,
    /// Distinct client addresses (keys) with a connection open.
    pub addresses: usize,
    /// WebSockets ended, by reason, in the order of [`CloseReason::ALL`].
    pub closed: [u64; CloseReason::ALL.len()],
    /// WebSocket opening handshakes that failed.
    pub handshake_failures: u64,
    /// WebSocket opening handshakes that timed out.
    pub handshake_timeouts: u64,
    /// Operations for a cluster's store dropped because its queue was full.
    pub cluster_ops_dropped: u64,
}

impl MetricsSnapshot {
    /// WebSockets ended for `reason`.
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        self.closed[reason.index()]
    }
}

impl Metrics {
    /// Fresh metrics, all zero.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Read everything now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let rooms = self
            .0
            .rooms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let addrs = *self.0.addrs.lock().unwrap_or_else(PoisonError::into_inner);
        MetricsSnapshot {
            rooms: rooms.stats,
            websockets: rooms.websockets,
            room_count: rooms.rooms,
            members: rooms.members,
            admission: addrs.stats,
            tcp_open: addrs.open,
            addresses: addrs.addresses,
            closed: std::array::from_fn(|i| self.0.closed[i].load(Relaxed)),
            handshake_failures: self.0.handshake_failures.load(Relaxed),
            handshake_timeouts: self.0.handshake_timeouts.load(Relaxed),
            cluster_ops_dropped: self.0.cluster_ops_dropped.load(Relaxed),
        }
    }

    pub(crate) fn store_rooms(&self, rooms: &Rooms) {
        let mut g = self.0.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        g.stats.clone_from(rooms.stats());
        g.websockets = rooms.connection_count();
        g.rooms = rooms.room_count();
        g.members = rooms.member_count();
    }

    pub(crate) fn store_addrs(&self, table: &AddrTable) {
        let mut g = self.0.addrs.lock().unwrap_or_else(PoisonError::into_inner);
        g.stats = table.stats();
        g.open = table.open();
        g.addresses = table.addresses();
    }

    pub(crate) fn cluster_op_dropped(&self) {
        self.0.cluster_ops_dropped.fetch_add(1, Relaxed);
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        self.0.closed[reason.index()].fetch_add(1, Relaxed);
    }

    pub(crate) fn handshake_failed(&self, timed_out: bool) {
        if timed_out {
            self.0.handshake_timeouts.fetch_add(1, Relaxed);
        } else {
            self.0.handshake_failures.fetch_add(1, Relaxed);
        }
    }
}
