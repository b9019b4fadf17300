//! TCP relaying (RFC 6062): what the sans-IO server asks its driver to do
//! with TCP connections to peers.

use std::net::SocketAddr;

use crate::types::FiveTuple;

/// A socket operation of a TCP allocation (RFC 6062) that the driver
/// performs for the [`TurnServer`](crate::TurnServer). Read them with
/// [`TurnServer::poll_command`](crate::TurnServer::poll_command) after
/// sending the queued transmits. A peer connection is named by its
/// CONNECTION-ID (`id`).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpCommand {
    /// Open a TCP connection from the relayed address `relayed` to `peer`
    /// (a Connect request, RFC 6062 §5.2), giving up after 30 s at least,
    /// then report with
    /// [`TurnServer::tcp_connect_result`](crate::TurnServer::tcp_connect_result).
    /// Hold the connection unread until [`TcpCommand::Splice`] or
    /// [`TcpCommand::Close`] names it.
    Connect {
        /// The connection id.
        id: u32,
        /// The relayed transport address to connect from.
        relayed: SocketAddr,
        /// The peer to connect to.
        peer: SocketAddr,
    },
    /// The client data connection `client` is now bound to the peer
    /// connection `id` (a ConnectionBind succeeded, RFC 6062 §5.4): after
    /// writing the queued success response on it, stop framing STUN there
    /// and relay raw bytes both ways between the two connections. When
    /// either side closes, close the other and call
    /// [`TurnServer::connection_closed`](crate::TurnServer::connection_closed)
    /// for `client`.
    Splice {
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
    Close {
        /// The peer connection.
        id: u32,
    },
}
