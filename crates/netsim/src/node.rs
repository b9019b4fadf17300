//! The node trait and the packet types that cross the virtual network.

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

/// Transport protocol a datagram is marked with.
///
/// The simulator moves datagrams, not byte streams: a `Tcp` datagram stands for
/// one framed message on a TCP connection (for instance a STUN message or a
/// ChannelData frame on TURN-over-TCP). `Tcp` datagrams are never lost,
/// duplicated or reordered by a link, and they pass a firewall that blocks UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// A UDP datagram: subject to loss, duplication, jitter and reordering.
    Udp,
    /// One message on a TCP connection: delivered reliably and in order.
    Tcp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Udp => f.write_str("udp"),
            Protocol::Tcp => f.write_str("tcp"),
        }
    }
}

/// A datagram handed to a [`Node`]: it arrived at `destination` (an address the
/// node owns) from `source` (as seen after any NAT translation on the way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Protocol the datagram was sent with.
    pub proto: Protocol,
    /// Where it came from, as the receiver sees it (NAT-translated).
    pub source: SocketAddr,
    /// The local address it arrived on.
    pub destination: SocketAddr,
    /// Payload bytes.
    pub contents: Vec<u8>,
}

/// A datagram a [`Node`] wants to send: from `source` (one of its own IPs, any
/// port) to `destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Protocol to send with.
    pub proto: Protocol,
    /// Local address to send from; its IP must be one the host owns.
    pub source: SocketAddr,
    /// Remote address to send to.
    pub destination: SocketAddr,
    /// Payload bytes.
    pub contents: Vec<u8>,
}

impl Transmit {
    /// A UDP transmit.
    pub fn udp(source: SocketAddr, destination: SocketAddr, contents: impl Into<Vec<u8>>) -> Self {
        Transmit {
            proto: Protocol::Udp,
            source,
            destination,
            contents: contents.into(),
        }
    }

    /// A TCP-marked transmit (reliable, in order, passes UDP-blocking firewalls).
    pub fn tcp(source: SocketAddr, destination: SocketAddr, contents: impl Into<Vec<u8>>) -> Self {
        Transmit {
            proto: Protocol::Tcp,
            source,
            destination,
            contents: contents.into(),
        }
    }

    pub(crate) fn into_datagram(self) -> Datagram {
        Datagram {
            proto: self.proto,
            source: self.source,
            destination: self.destination,
            contents: self.contents,
        }
    }
}

/// A participant in the simulation: usually a thin test adapter over a sans-IO
/// machine (an ICE agent, a TURN server, a `Session`).
///
/// Drive contract, as the [`Sim`](crate::Sim) calls it:
/// 1. `poll_transmit(now)` is drained until it returns `None`, at the start of
///    every step, for every host in the order the hosts were added.
/// 2. `poll_timeout()` is asked for the next deadline; the clock jumps to the
///    earliest deadline or packet arrival of the whole network.
/// 3. `handle_input(now, dgram)` is called for each datagram due at `now`, then
///    `handle_timeout(now)` for each node whose deadline is `<= now`.
///
/// A node whose `poll_timeout` keeps returning a past instant after
/// `handle_timeout` livelocks the simulation at one instant;
/// [`Sim::run_until`](crate::Sim::run_until) bounds that with `max_steps`.
pub trait Node {
    /// A datagram arrived on one of the host's addresses.
    fn handle_input(&mut self, now: Instant, dgram: Datagram);
    /// The deadline returned by [`Node::poll_timeout`] has come.
    fn handle_timeout(&mut self, now: Instant);
    /// Next datagram to send, if any.
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit>;
    /// When [`Node::handle_timeout`] should next be called, if ever.
    fn poll_timeout(&mut self) -> Option<Instant>;
}

/// Object-safe view of a node that can also be downcast (`Sim::node::<T>`).
pub(crate) trait AnyNode {
    fn as_node(&mut self) -> &mut dyn Node;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Node + Any> AnyNode for T {
    fn as_node(&mut self) -> &mut dyn Node {
        self
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
