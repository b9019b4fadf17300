//! What the client reports and hands out: its state, errors, events and outputs.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use p2p_proto::{Output, Transmit};
use p2p_stun::attr::AddressFamily;

#[cfg(doc)]
use super::{ClientConfig, TurnClient};

/// Where the client's allocation stands.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Not started: no `handle_timeout` yet.
    Idle,
    /// Allocate in flight.
    Allocating,
    /// The allocation exists.
    Allocated,
    /// A Refresh with lifetime 0 is in flight.
    Deleting,
    /// The allocation was deleted.
    Closed,
    /// Allocation failed or was lost (see [`ClientEvent::AllocationFailed`]).
    Failed,
}

/// Misuse of the client's commands.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The command needs an allocation.
    #[error("there is no allocation")]
    NotAllocated,
    /// No permission was asked for the peer's IP.
    #[error("no permission for this peer")]
    NoPermission,
    /// The allocation has no relayed address of the peer's family.
    #[error("no relayed address of the peer's address family")]
    FamilyMismatch,
    /// All 4096 channel numbers are in use.
    #[error("no free channel number")]
    NoChannelAvailable,
    /// The data does not fit one message.
    #[error("data too large for one message")]
    TooLarge,
    /// The request could not be encoded (e.g. an over-long username).
    #[error("the request could not be encoded")]
    Encode,
}

/// What the client wants the application to know.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The allocation exists.
    Allocated {
        /// Relayed addresses (two for a dual-stack allocation).
        relayed: Vec<SocketAddr>,
        /// The client's address as the server saw it.
        mapped: Option<SocketAddr>,
        /// The lifetime granted.
        lifetime: Duration,
        /// The RESERVATION-TOKEN for the next port, with EVEN-PORT R.
        reservation_token: Option<[u8; 8]>,
        /// One family of a dual-stack request failed: (family, code).
        family_error: Option<(AddressFamily, u16)>,
    },
    /// Allocate failed, or a Refresh failed and the allocation is lost.
    AllocationFailed {
        /// The STUN error code; `None` when the server never answered.
        code: Option<u16>,
        /// The server's reason phrase, or what went wrong.
        reason: String,
    },
    /// The server answered the Allocate with 300 Try Alternate and an
    /// ALTERNATE-SERVER (RFC 8489 §10): the client now talks to `to` (its
    /// transmits go there, [`TurnClient::server`] says so) and allocates
    /// there, over the same transport. Over TCP and TLS the driver opens a
    /// connection to `to` (the Allocate for it comes right after this
    /// event) and may close the one to `from`. A client follows at most
    /// [`MAX_REDIRECTS`](crate::MAX_REDIRECTS) and never returns to a
    /// server it left.
    Redirected {
        /// The server that redirected.
        from: SocketAddr,
        /// The server now used.
        to: SocketAddr,
        /// Over TLS, the ALTERNATE-DOMAIN the 300 carried: check `to`'s
        /// certificate against it. `None`: against the name `from`'s was
        /// checked against (RFC 8489 §10).
        domain: Option<String>,
    },
    /// A Refresh succeeded.
    Refreshed {
        /// The new lifetime.
        lifetime: Duration,
    },
    /// The allocation was deleted by [`TurnClient::close`] (also reported
    /// when the server did not answer: it expires by itself).
    Deleted,
    /// CreatePermission succeeded for these peers (first time or refresh).
    PermissionCreated {
        /// The peer IPs.
        peers: Vec<IpAddr>,
    },
    /// CreatePermission failed; the permissions are dropped.
    /// [`refusal_reason`] says what the code means.
    PermissionFailed {
        /// The peer IPs.
        peers: Vec<IpAddr>,
        /// The STUN error code (403: the server refuses these peers); `None`
        /// on timeout.
        code: Option<u16>,
    },
    /// A channel is bound (first time only, not on refreshes).
    ChannelBound {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
    },
    /// ChannelBind failed; the channel is dropped.
    ChannelBindFailed {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
        /// The STUN error code; `None` on timeout.
        code: Option<u16>,
    },
    /// Data from a peer (a Data indication or ChannelData).
    Data {
        /// The peer.
        peer: SocketAddr,
        /// The application data.
        data: Vec<u8>,
    },
    /// A Connect succeeded (RFC 6062 §4.3): the server holds a TCP
    /// connection to the peer. Open a new connection to the server and send
    /// [`TurnClient::connection_bind`] for it within 30 s.
    PeerConnected {
        /// The peer.
        peer: SocketAddr,
        /// The CONNECTION-ID.
        connection_id: u32,
    },
    /// A Connect failed (446: already connected, 447: the peer could not
    /// be reached, `None`: no answer).
    ConnectFailed {
        /// The peer.
        peer: SocketAddr,
        /// The STUN error code.
        code: Option<u16>,
    },
    /// A peer connected to the TCP relayed address (a ConnectionAttempt
    /// indication, RFC 6062 §4.4): bind it as for
    /// [`ClientEvent::PeerConnected`].
    ConnectionAttempt {
        /// The peer.
        peer: SocketAddr,
        /// The CONNECTION-ID.
        connection_id: u32,
    },
    /// A ConnectionBind succeeded (RFC 6062 §4.3): the data connection at
    /// `local` now carries the peer's bytes, unframed, both ways.
    ConnectionBound {
        /// The CONNECTION-ID.
        connection_id: u32,
        /// The data connection's local address.
        local: SocketAddr,
    },
    /// A ConnectionBind failed (`None`: no answer); close the data
    /// connection.
    ConnectionBindFailed {
        /// The CONNECTION-ID.
        connection_id: u32,
        /// The data connection's local address.
        local: SocketAddr,
        /// The STUN error code.
        code: Option<u16>,
    },
}

/// One output of the [`TurnClient`], in the order the application acts on
/// them: events first (so that what it does about one, such as asking for
/// a permission once allocated, goes out with this drain), then transmits,
/// requests before data (a Send indication or ChannelData queued right
/// after a CreatePermission or ChannelBind reaches the server after the
/// request that makes it valid).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOutput {
    /// Something for the application.
    Event(ClientEvent),
    /// A packet to send from its `source` (the client's local address, or
    /// an RFC 6062 data connection's) to the server.
    Transmit(Transmit),
}

impl Output for ClientOutput {
    fn into_transmit(self) -> Result<Transmit, Self> {
        match self {
            ClientOutput::Transmit(t) => Ok(t),
            other => Err(other),
        }
    }
}

/// What a TURN server's error code means for a request about peers
/// (CreatePermission, ChannelBind, Connect), in words for a person: 403
/// says the server's peer policy refuses the peer's address, not that the
/// credentials were wrong.
///
/// ```
/// let why = p2p_turn::refusal_reason(403);
/// assert!(why.contains("peer policy"));
/// ```
pub fn refusal_reason(code: u16) -> &'static str {
    match code {
        400 => "the server found the request malformed (400)",
        401 => "the credentials were refused (401)",
        403 => "the server's peer policy refuses this peer's address (403): TURN servers refuse loopback, private and their own addresses unless told otherwise (on p2p serve: --allow-peer CIDR)",
        437 => "the allocation is gone (437): it expired or the server restarted",
        438 => "the server's nonce went stale (438) and the retry failed",
        441 => "the credentials differ from the allocation's (441)",
        443 => "the peer's address family is not the relayed address's (443)",
        446 => "a connection to this peer already exists (446)",
        447 => "the server could not connect to the peer (447)",
        486 => "the user holds all the allocations its quota allows (486)",
        508 => "the server is out of capacity (508)",
        _ => "the server refused it",
    }
}
