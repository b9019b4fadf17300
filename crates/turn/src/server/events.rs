//! What the server reports: events, counters, traffic, views of allocations.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::types::FiveTuple;

/// Traffic of one allocation, reported when it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Application bytes relayed from the client to peers.
    pub bytes_to_peer: u64,
    /// Packets relayed from the client to peers.
    pub packets_to_peer: u64,
    /// Application bytes relayed from peers to the client.
    pub bytes_to_client: u64,
    /// Packets relayed from peers to the client.
    pub packets_to_client: u64,
    /// Packets dropped by the bandwidth cap.
    pub dropped_bandwidth: u64,
}

/// Server-wide counters, for metrics. Read with [`TurnServer::counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Allocations alive now.
    pub allocations_active: u64,
    /// Allocations created since start.
    pub allocations_created: u64,
    /// Allocations deleted by the client (Refresh with lifetime 0).
    pub allocations_deleted: u64,
    /// Allocations that expired.
    pub allocations_expired: u64,
    /// Allocations deleted because their TCP/TLS connection closed
    /// ([`TurnServer::connection_closed`]).
    pub allocations_closed: u64,
    /// TURN requests received (Allocate, Refresh, CreatePermission, ChannelBind).
    pub requests: u64,
    /// Error responses sent (401 challenges included).
    pub error_responses: u64,
    /// Requests whose credentials were wrong (not the first 401 challenge).
    pub auth_failures: u64,
    /// Application bytes relayed client → peer.
    pub bytes_to_peer: u64,
    /// Packets relayed client → peer.
    pub packets_to_peer: u64,
    /// Application bytes relayed peer → client.
    pub bytes_to_client: u64,
    /// Packets relayed peer → client.
    pub packets_to_client: u64,
    /// Packets dropped: no allocation for the 5-tuple or relayed address.
    pub dropped_no_allocation: u64,
    /// Packets dropped: no permission (or no channel) for the peer.
    pub dropped_no_permission: u64,
    /// Packets dropped by a bandwidth cap.
    pub dropped_bandwidth: u64,
    /// Datagrams dropped as malformed or unexpected.
    pub dropped_malformed: u64,
    /// RFC 6062 peer connections established (Connect succeeded, or a peer
    /// with a permission connected to a TCP relayed address).
    pub peer_connections: u64,
    /// RFC 6062 peer connections bound to a client data connection.
    pub peer_connections_bound: u64,
}

/// Why a request failed authentication (the client only ever sees a plain
/// 401: it is not told which part was wrong).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No such user, or its credential is not valid now (e.g. an expired
    /// REST username), or a USERHASH that matches no one.
    UnknownUser,
    /// The MESSAGE-INTEGRITY(-SHA256) did not verify (wrong password).
    BadIntegrity,
    /// The REALM is not the server's.
    WrongRealm,
}

/// What the server wants the application (metrics, logs) to know.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// An Allocate succeeded.
    AllocationCreated {
        /// The username.
        user: String,
        /// The allocation's 5-tuple.
        five_tuple: FiveTuple,
        /// Its relayed addresses (two for a dual-stack allocation).
        relayed: Vec<SocketAddr>,
        /// The lifetime granted.
        lifetime: Duration,
    },
    /// A Refresh extended an allocation.
    AllocationRefreshed {
        /// The username.
        user: String,
        /// The allocation's 5-tuple.
        five_tuple: FiveTuple,
        /// The new lifetime.
        lifetime: Duration,
    },
    /// The client deleted its allocation (Refresh with lifetime 0).
    AllocationDeleted {
        /// The username.
        user: String,
        /// The allocation's 5-tuple.
        five_tuple: FiveTuple,
        /// Its relayed addresses, now released.
        relayed: Vec<SocketAddr>,
        /// What it relayed.
        traffic: Traffic,
    },
    /// An allocation's lifetime ran out.
    AllocationExpired {
        /// The username.
        user: String,
        /// The allocation's 5-tuple.
        five_tuple: FiveTuple,
        /// Its relayed addresses, now released.
        relayed: Vec<SocketAddr>,
        /// What it relayed.
        traffic: Traffic,
    },
    /// The TCP/TLS connection of an allocation closed, so the allocation
    /// ended with it (RFC 8656 §3.1: an allocation over TCP lives as long as
    /// its connection).
    AllocationClosed {
        /// The username.
        user: String,
        /// The allocation's 5-tuple.
        five_tuple: FiveTuple,
        /// Its relayed addresses, now released.
        relayed: Vec<SocketAddr>,
        /// What it relayed.
        traffic: Traffic,
    },
    /// A new permission (not a refresh of one).
    PermissionCreated {
        /// The allocation's 5-tuple.
        five_tuple: FiveTuple,
        /// The peer IP.
        peer: IpAddr,
    },
    /// A new channel binding (not a refresh of one).
    ChannelBound {
        /// The allocation's 5-tuple.
        five_tuple: FiveTuple,
        /// The channel number.
        channel: u16,
        /// The peer.
        peer: SocketAddr,
    },
    /// A request carried wrong credentials.
    AuthFailed {
        /// Who sent it.
        remote: SocketAddr,
        /// The username it claimed, when it sent one.
        username: Option<String>,
        /// What was wrong.
        reason: AuthFailure,
    },
}

/// A read-only view of an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationInfo {
    /// The username that made it.
    pub user: String,
    /// Its relayed addresses.
    pub relayed: Vec<SocketAddr>,
    /// When it expires.
    pub expires: Instant,
    /// Permissions alive at the time asked.
    pub permissions: usize,
    /// Channels alive at the time asked.
    pub channels: usize,
    /// What it relayed so far.
    pub traffic: Traffic,
}
