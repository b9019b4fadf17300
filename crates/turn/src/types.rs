//! The packets that go in and out of the machines, shared by server and client.

use std::fmt;
use std::net::SocketAddr;

use p2p_stun::Method;

/// The transport between a TURN client and the server's listening address.
///
/// Relayed traffic between the server and peers is UDP (RFC 8656), or TCP
/// for an RFC 6062 allocation (whose bytes the driver splices itself, see
/// [`TcpCommand`](crate::TcpCommand)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// UDP datagrams.
    Udp,
    /// One framed message on a TCP connection (the driver frames the stream
    /// with [`p2p_stun::next_frame_len`] and feeds whole messages).
    Tcp,
    /// Like [`Transport::Tcp`], over TLS.
    Tls,
}

impl Transport {
    /// Whether the transport is a reliable stream (retransmissions off,
    /// ChannelData padded to four bytes).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

/// A packet that arrived: on `local` (one of the machine's addresses), from
/// `remote`. The bytes are borrowed; nothing is kept after the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// How it came.
    pub transport: Transport,
    /// The local address it arrived on: for the server, a listening address or
    /// a relayed address.
    pub local: SocketAddr,
    /// The sender.
    pub remote: SocketAddr,
    /// The packet (one whole message on stream transports).
    pub bytes: &'a [u8],
}

/// A packet to send: from `source` (for the server, a listening address or a
/// relayed address) to `destination`.
#[derive(Clone, PartialEq, Eq)]
pub struct Transmit {
    /// How to send it.
    pub transport: Transport,
    /// The local address to send from.
    pub source: SocketAddr,
    /// Where to send it.
    pub destination: SocketAddr,
    /// The bytes. The server takes these buffers from a pool: hand them back
    /// with [`TurnServer::recycle`](crate::TurnServer::recycle) after sending
    /// so that the relay path does not allocate.
    pub contents: Vec<u8>,
}

impl fmt::Debug for Transmit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transmit")
            .field("transport", &self.transport)
            .field("source", &self.source)
            .field("destination", &self.destination)
            .field("len", &self.contents.len())
            .finish()
    }
}

/// The 5-tuple that names an allocation (RFC 8656 §2): the client's address
/// as the server sees it, the server's listening address, and the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    /// The client's (server-reflexive) address.
    pub client: SocketAddr,
    /// The server's listening address the client talks to.
    pub server: SocketAddr,
    /// The transport between them.
    pub transport: Transport,
}

impl fmt::Display for FiveTuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.transport, self.client, self.server)
    }
}

/// Whether a STUN method belongs to TURN (RFC 8656, RFC 6062) rather than to
/// plain STUN (Binding). A daemon that answers Binding itself routes only
/// these to [`TurnServer`](crate::TurnServer); the server answers Binding
/// too unless [`ServerConfig::answer_binding`](crate::ServerConfig::answer_binding)
/// is off.
pub fn is_turn_method(method: Method) -> bool {
    matches!(
        method,
        Method::ALLOCATE
            | Method::REFRESH
            | Method::SEND
            | Method::DATA
            | Method::CREATE_PERMISSION
            | Method::CHANNEL_BIND
            | Method::CONNECT
            | Method::CONNECTION_BIND
            | Method::CONNECTION_ATTEMPT
    )
}
