//! What the server reports: events, counters, traffic, views of allocations.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2p_proto::{FiveTuple, Output, Transmit};
use p2p_stun::Method;

use super::RouteUpdate;
#[cfg(doc)]
use super::{ServerConfig, TurnServer};

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

/// Server-wide counters, for metrics. Read with [`TurnServer::counters`]
/// (every transport) or [`TurnServer::transport_counters`] (what came from
/// or went to clients over one transport, peer traffic counted under its
/// allocation's).
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
    /// Allocations ended by [`TurnServer::shutdown`].
    pub allocations_stopped: u64,
    /// TURN requests received (Allocate, Refresh, CreatePermission, ChannelBind).
    pub requests: u64,
    /// Error responses sent (401 challenges included).
    pub error_responses: u64,
    /// Requests whose credentials were wrong (not the first 401 challenge).
    pub auth_failures: u64,
    /// Requests with credentials dropped unchecked and unanswered: their
    /// client address had used up its authentication failures
    /// ([`ServerConfig::auth_failure_limit`]).
    pub auth_throttled: u64,
    /// Allocates refused with 486: the user's quota
    /// ([`ServerConfig::user_quota`]).
    pub refused_user_quota: u64,
    /// Allocates refused with 508: the total quota
    /// ([`ServerConfig::total_quota`]).
    pub refused_total_quota: u64,
    /// Allocates refused with 508: only the reserve is left and the
    /// client's address holds too many ([`ServerConfig::reserved_percent`]).
    pub refused_reserve: u64,
    /// Allocates refused with 486: ephemeral users hold their share
    /// ([`ServerConfig::ephemeral_share_percent`]).
    pub refused_ephemeral_share: u64,
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
    /// Allocates beyond the total quota answered 300 Try Alternate (see
    /// `TurnServer::set_alternate_servers`).
    pub redirects: u64,
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, o: Counters) {
        self.allocations_active += o.allocations_active;
        self.allocations_created += o.allocations_created;
        self.allocations_deleted += o.allocations_deleted;
        self.allocations_expired += o.allocations_expired;
        self.allocations_closed += o.allocations_closed;
        self.allocations_stopped += o.allocations_stopped;
        self.requests += o.requests;
        self.error_responses += o.error_responses;
        self.auth_failures += o.auth_failures;
        self.auth_throttled += o.auth_throttled;
        self.refused_user_quota += o.refused_user_quota;
        self.refused_total_quota += o.refused_total_quota;
        self.refused_reserve += o.refused_reserve;
        self.refused_ephemeral_share += o.refused_ephemeral_share;
        self.bytes_to_peer += o.bytes_to_peer;
        self.packets_to_peer += o.packets_to_peer;
        self.bytes_to_client += o.bytes_to_client;
        self.packets_to_client += o.packets_to_client;
        self.dropped_no_allocation += o.dropped_no_allocation;
        self.dropped_no_permission += o.dropped_no_permission;
        self.dropped_bandwidth += o.dropped_bandwidth;
        self.dropped_malformed += o.dropped_malformed;
        self.peer_connections += o.peer_connections;
        self.peer_connections_bound += o.peer_connections_bound;
        self.redirects += o.redirects;
    }
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

/// Why an allocation ended.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The client deleted it (Refresh with lifetime 0).
    Deleted,
    /// Its lifetime ran out.
    Expired,
    /// Its TCP/TLS connection closed (RFC 8656 §3.1: an allocation over TCP
    /// lives as long as its connection; [`TurnServer::connection_closed`]).
    ConnectionClosed,
    /// The server was stopped ([`TurnServer::shutdown`]).
    Stopped,
}

impl EndReason {
    /// A word for logs: `deleted`, `expired`, `closed`, `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Deleted => "deleted",
            EndReason::Expired => "expired",
            EndReason::ConnectionClosed => "closed",
            EndReason::Stopped => "stopped",
        }
    }
}

/// What the server wants the application (metrics, logs) to know.
///
/// A 5-tuple here is the server's view: `local` is the listening address
/// the client talks to, `remote` the client's address as the server sees
/// it.
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
    /// An allocation ended: its relayed addresses are released (each with a
    /// [`SocketRequest::Release`] before this event).
    AllocationEnded {
        /// The username.
        user: String,
        /// The allocation's 5-tuple.
        five_tuple: FiveTuple,
        /// Its relayed addresses, now released.
        relayed: Vec<SocketAddr>,
        /// What it relayed (through the server; a driver that relays on a
        /// fast path adds its own count).
        traffic: Traffic,
        /// Why it ended.
        reason: EndReason,
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
    /// A request carried wrong credentials (answered with a plain 401).
    AuthFailed {
        /// Where it came from.
        five_tuple: FiveTuple,
        /// The username it claimed, when it sent one.
        username: Option<String>,
        /// What was wrong.
        reason: AuthFailure,
    },
    /// The peer policy refused a peer of a CreatePermission, ChannelBind or
    /// Connect (answered 403, also reported as [`ServerEvent::RequestRefused`]):
    /// which peer, and the rule, so that an operator can tell a deny-list
    /// entry from a default refusal and open a block on purpose.
    PeerRefused {
        /// The allocation's 5-tuple.
        five_tuple: FiveTuple,
        /// The allocation's user.
        user: String,
        /// The peer IP.
        peer: IpAddr,
        /// The rule that refused it.
        rule: crate::PeerRefusal,
    },
    /// A request was refused with an error response other than the 401
    /// and 438 of the credential dance (400, 403, 420, 437, 440, 441, 442,
    /// 443, 446, 447, 486, 508).
    RequestRefused {
        /// Where it came from.
        five_tuple: FiveTuple,
        /// The user, when the request was authenticated.
        user: Option<String>,
        /// The request's method.
        method: Method,
        /// The STUN error code.
        code: u16,
    },
}

/// A socket the server needs its driver to open or close: the server owns
/// no socket, so relayed addresses (RFC 8656) and RFC 6062 TCP connections
/// are asked for here and their outcome is handed back
/// ([`TurnServer::bind_result`], [`TurnServer::tcp_connect_result`],
/// [`TurnServer::tcp_peer_connected`], [`TurnServer::tcp_peer_closed`],
/// [`TurnServer::connection_closed`]).
///
/// Addresses here are the relayed addresses the server hands to clients;
/// a driver behind a 1:1 NAT binds the same port on its own IP.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketRequest {
    /// Bind a UDP socket on `relayed` (for an Allocate), then say how it
    /// went with [`TurnServer::bind_result`]; the Allocate is answered
    /// once every address it waits for is bound. Read the socket: every
    /// datagram goes to [`handle_input`](p2p_proto::Machine::handle_input) with `destination` =
    /// `relayed`. When you hold a socket on `relayed` for a
    /// [`SocketRequest::ReserveUdp`], read that one.
    BindUdp {
        /// The relayed address.
        relayed: SocketAddr,
    },
    /// Bind a UDP socket on `reserved` and hold it unread (the port after
    /// an EVEN-PORT allocation's, kept for its RESERVATION-TOKEN, RFC 8656
    /// §7.2); report with [`TurnServer::bind_result`]. A later
    /// [`SocketRequest::BindUdp`] or [`SocketRequest::Release`] names it.
    ReserveUdp {
        /// The reserved address.
        reserved: SocketAddr,
    },
    /// Bind a TCP listening socket on `relayed` (an RFC 6062 allocation),
    /// report with [`TurnServer::bind_result`], and hand each peer that
    /// connects to [`TurnServer::tcp_peer_connected`].
    ListenTcp {
        /// The TCP relayed address.
        relayed: SocketAddr,
    },
    /// Close the socket on `relayed` (bound, held or listening): its
    /// allocation or reservation ended, or the Allocate that asked for it
    /// no longer needs it.
    Release {
        /// The address.
        relayed: SocketAddr,
    },
    /// Open a TCP connection from the relayed address `relayed` to `peer`
    /// (a Connect request, RFC 6062 §5.2), giving up after 30 s at least,
    /// then report with [`TurnServer::tcp_connect_result`]. Hold the
    /// connection unread until [`SocketRequest::SpliceTcp`] or
    /// [`SocketRequest::CloseTcp`] names it. A peer connection is named by
    /// its CONNECTION-ID (`id`).
    ConnectTcp {
        /// The connection id.
        id: u32,
        /// The relayed transport address to connect from.
        relayed: SocketAddr,
        /// The peer to connect to.
        peer: SocketAddr,
    },
    /// The client data connection `client` is now bound to the peer
    /// connection `id` (a ConnectionBind succeeded, RFC 6062 §5.4): after
    /// writing the success response (handed out before this request) on
    /// it, stop framing STUN there and relay raw bytes both ways between
    /// the two connections. When either side closes, close the other and
    /// call [`TurnServer::connection_closed`] for `client`.
    SpliceTcp {
        /// The peer connection.
        id: u32,
        /// The client data connection.
        client: FiveTuple,
        /// The allocation's 5-tuple (its control connection): what the
        /// relayed bytes count against (traffic, bandwidth cap).
        allocation: FiveTuple,
    },
    /// Close the peer connection `id`, and its client data connection if it
    /// is spliced (the allocation ended, the 30-second ConnectionBind
    /// timeout ran out, or the other side closed).
    CloseTcp {
        /// The peer connection.
        id: u32,
    },
}

/// One output of the [`TurnServer`], in the order the driver must act on
/// them (the server hands them out so; a driver acts on each as it comes):
///
/// 1. [`ServerOutput::Route`]: a ChannelBind answer must not reach the
///    client (whose next ChannelData would then miss the route) before its
///    route is published, and a route goes down before its socket closes;
/// 2. [`ServerOutput::Transmit`]: send it, then give its buffer back with
///    [`TurnServer::recycle`];
/// 3. [`ServerOutput::Socket`]: after the transmits, so that a
///    [`SocketRequest::SpliceTcp`] follows the ConnectionBind response it
///    goes with on the same connection;
/// 4. [`ServerOutput::Event`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOutput {
    /// A route of the driver's fast path changed
    /// ([`ServerConfig::export_routes`]).
    Route(RouteUpdate),
    /// A datagram (or, on TCP/TLS, one framed message) to send from
    /// `source`: a listening address, or a relayed address for data to
    /// peers.
    Transmit(Transmit),
    /// A socket to open or close.
    Socket(SocketRequest),
    /// Something for logs and metrics.
    Event(ServerEvent),
}

impl Output for ServerOutput {
    fn into_transmit(self) -> Result<Transmit, Self> {
        match self {
            ServerOutput::Transmit(t) => Ok(t),
            other => Err(other),
        }
    }
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
