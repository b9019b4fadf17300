//! The one vocabulary of the p2p stack's sans-IO machines.
//!
//! Every protocol machine of the stack (the TURN server and client, the ICE
//! agent, DTLS, data channels, the `Session` and `Negotiation` of
//! `p2p-connect`) is driven the same way, with the types of this
//! crate:
//!
//! - a [`Datagram`] that arrived goes in with [`Machine::handle_input`], with
//!   the instant it arrived;
//! - [`Machine::handle_timeout`] is called when the instant
//!   [`Machine::poll_timeout`] asked for has come (calling it early is
//!   harmless);
//! - after **every** `handle_*` call or command, [`Machine::poll_output`] is
//!   drained until `None`: each machine has one output enum (a [`Transmit`]
//!   to send, events, requests for sockets …) and hands them out in the
//!   order it needs, so the driver never has to know an order;
//! - commands that may start timers take `now`; none take it to ignore it.
//!
//! This crate owns no socket and reads no clock. It is the vocabulary, not a
//! runtime: a tokio driver, a test on a simulated clock and a virtual network
//! all drive machines through the same four calls, so the same loop drives
//! any of them (see [`Machine`]).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use p2p_proto::{Datagram, Handled, Machine, Output, Transmit, Transport};
//!
//! /// A toy machine: echoes every datagram after 10 ms.
//! #[derive(Default)]
//! struct Echo { due: Vec<(Instant, Transmit)>, out: Vec<Transmit> }
//! enum EchoOutput { Transmit(Transmit) }
//! impl Output for EchoOutput {
//!     fn into_transmit(self) -> Result<Transmit, Self> {
//!         match self { EchoOutput::Transmit(t) => Ok(t) }
//!     }
//! }
//! impl Machine for Echo {
//!     type Output = EchoOutput;
//!     fn handle_input(&mut self, now: Instant, d: Datagram<'_>) -> Handled {
//!         self.due.push((now + Duration::from_millis(10), d.reply(d.contents.to_vec())));
//!         Handled::Taken
//!     }
//!     fn handle_timeout(&mut self, now: Instant) {
//!         let (ready, later) = self.due.drain(..).partition(|(t, _)| *t <= now);
//!         self.due = later;
//!         self.out.extend(ready.into_iter().map(|(_, t): (Instant, Transmit)| t));
//!     }
//!     fn poll_output(&mut self) -> Option<EchoOutput> { self.out.pop().map(EchoOutput::Transmit) }
//!     fn poll_timeout(&self) -> Option<Instant> { self.due.iter().map(|(t, _)| *t).min() }
//! }
//!
//! let t0 = Instant::now();
//! let mut echo = Echo::default();
//! let ping = Datagram::new(Transport::Udp, "192.0.2.1:1000".parse()?, "192.0.2.2:2000".parse()?, b"ping");
//! assert_eq!(echo.handle_input(t0, ping), Handled::Taken);
//! assert!(echo.poll_output().is_none());
//! let when = echo.poll_timeout().unwrap();
//! echo.handle_timeout(when);
//! let t = echo.poll_output().unwrap().into_transmit().ok().unwrap();
//! assert_eq!((t.destination, &t.contents[..]), ("192.0.2.1:1000".parse()?, &b"ping"[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Instant;

/// How a datagram travels between a local and a remote address.
///
/// A stream transport (TCP, TLS) carries framed messages: the driver frames
/// the byte stream and hands the machine one whole message at a time, as one
/// [`Datagram`]; a machine's [`Transmit`] on a stream transport is one whole
/// message for the driver to write on the connection of its 5-tuple.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// UDP datagrams.
    Udp,
    /// Framed messages on a TCP connection.
    Tcp,
    /// Framed messages on a TLS connection (over TCP).
    Tls,
}

impl Transport {
    /// Whether the transport is a reliable, ordered stream (no
    /// retransmissions needed; TURN pads ChannelData to four bytes).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The lower-case name: `udp`, `tcp`, `tls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transport name that is not `udp`, `tcp` or `tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownTransport;

impl fmt::Display for UnknownTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown transport (expected udp, tcp or tls)")
    }
}

impl std::error::Error for UnknownTransport {}

impl FromStr for Transport {
    type Err = UnknownTransport;

    /// `udp`, `tcp` or `tls`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            "tls" => Ok(Transport::Tls),
            _ => Err(UnknownTransport),
        }
    }
}

/// The 5-tuple of a flow as one end sees it: its own address, the other
/// end's, and the transport (RFC 8656 §2 names a TURN allocation by it; the
/// server's `local` is its listening address and `remote` the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    /// The transport.
    pub transport: Transport,
    /// This end's address.
    pub local: SocketAddr,
    /// The other end's address.
    pub remote: SocketAddr,
}

impl FiveTuple {
    /// A 5-tuple.
    pub fn new(transport: Transport, local: SocketAddr, remote: SocketAddr) -> Self {
        FiveTuple {
            transport,
            local,
            remote,
        }
    }
}

impl fmt::Display for FiveTuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} <-> {}", self.transport, self.local, self.remote)
    }
}

/// A datagram that arrived: from `source` (as the network shows it) to
/// `destination` (the local address it arrived on). The bytes are borrowed
/// for the call; a machine copies what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// How it came.
    pub transport: Transport,
    /// The sender.
    pub source: SocketAddr,
    /// The local address it arrived on.
    pub destination: SocketAddr,
    /// The bytes (one whole message on a stream transport).
    pub contents: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// A datagram.
    pub fn new(
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &'a [u8],
    ) -> Self {
        Datagram {
            transport,
            source,
            destination,
            contents,
        }
    }

    /// A UDP datagram.
    pub fn udp(source: SocketAddr, destination: SocketAddr, contents: &'a [u8]) -> Self {
        Datagram::new(Transport::Udp, source, destination, contents)
    }

    /// Its 5-tuple as the receiver sees it (`local` = `destination`).
    pub fn five_tuple(&self) -> FiveTuple {
        FiveTuple::new(self.transport, self.destination, self.source)
    }

    /// A transmit back to the sender on the same 5-tuple.
    pub fn reply(&self, contents: Vec<u8>) -> Transmit {
        Transmit::new(self.transport, self.destination, self.source, contents)
    }
}

/// A datagram to send: from `source` (a local address: the socket, or the
/// connection's 5-tuple on a stream transport) to `destination`.
#[derive(Clone, PartialEq, Eq)]
pub struct Transmit {
    /// How to send it.
    pub transport: Transport,
    /// The local address to send from.
    pub source: SocketAddr,
    /// Where to send it.
    pub destination: SocketAddr,
    /// The bytes (one whole message on a stream transport).
    pub contents: Vec<u8>,
}

impl Transmit {
    /// A transmit.
    pub fn new(
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
        contents: impl Into<Vec<u8>>,
    ) -> Self {
        Transmit {
            transport,
            source,
            destination,
            contents: contents.into(),
        }
    }

    /// A UDP transmit.
    pub fn udp(source: SocketAddr, destination: SocketAddr, contents: impl Into<Vec<u8>>) -> Self {
        Transmit::new(Transport::Udp, source, destination, contents)
    }

    /// A transmit of one message on a TCP connection.
    pub fn tcp(source: SocketAddr, destination: SocketAddr, contents: impl Into<Vec<u8>>) -> Self {
        Transmit::new(Transport::Tcp, source, destination, contents)
    }

    /// Its 5-tuple as the sender sees it (`local` = `source`).
    pub fn five_tuple(&self) -> FiveTuple {
        FiveTuple::new(self.transport, self.source, self.destination)
    }

    /// The datagram its destination receives when nothing on the way
    /// rewrites addresses (a loopback or a test network without NAT).
    pub fn as_datagram(&self) -> Datagram<'_> {
        Datagram::new(
            self.transport,
            self.source,
            self.destination,
            &self.contents,
        )
    }
}

impl fmt::Debug for Transmit {
    /// The addresses and the length, not the bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transmit")
            .field("transport", &self.transport)
            .field("source", &self.source)
            .field("destination", &self.destination)
            .field("len", &self.contents.len())
            .finish()
    }
}

/// What a machine made of a datagram given to [`Machine::handle_input`].
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Handled {
    /// The machine took it (it may still have dropped it as invalid, and
    /// counted that).
    Taken,
    /// Not this machine's: hand it to whatever else reads this socket (for
    /// an ICE agent, a datagram that is not a STUN Binding message; for a
    /// TURN client, one that is not from its server).
    NotMine,
}

impl Handled {
    /// Whether the machine took it.
    pub fn is_taken(self) -> bool {
        self == Handled::Taken
    }
}

/// One output of a machine: a [`Transmit`], or something machine-specific
/// (an event, a request for a socket …). Implemented by every machine's
/// output enum, so that a generic loop can send the transmits and hand the
/// rest on.
pub trait Output: Sized {
    /// The transmit this output is, or the output itself when it is
    /// something else.
    fn into_transmit(self) -> Result<Transmit, Self>;
}

/// The one drive contract of the stack's sans-IO machines.
///
/// A machine owns no socket, reads no clock and spawns nothing. Drive it so:
///
/// 1. feed every datagram that arrives for it to [`handle_input`](Machine::handle_input)
///    (with the instant it arrived); feed commands (each machine's own
///    methods) with `now`;
/// 2. after **every** such call, drain [`poll_output`](Machine::poll_output)
///    until `None`: send each [`Transmit`] from its `source`, act on the rest;
///    the machine hands them out in the order it needs them acted on;
/// 3. read [`poll_timeout`](Machine::poll_timeout) and call
///    [`handle_timeout`](Machine::handle_timeout) at that instant (or
///    earlier: it is harmless), then drain again.
///
/// A machine that has nothing to do returns `None` from both polls. Making
/// a second call before draining loses nothing, but lets the queues grow.
pub trait Machine {
    /// What [`poll_output`](Machine::poll_output) hands out: one enum per
    /// machine.
    type Output: Output;

    /// A datagram arrived at `now`.
    fn handle_input(&mut self, now: Instant, datagram: Datagram<'_>) -> Handled;

    /// The instant [`poll_timeout`](Machine::poll_timeout) asked for came.
    fn handle_timeout(&mut self, now: Instant);

    /// The next output, in the order the machine needs them acted on.
    fn poll_output(&mut self) -> Option<Self::Output>;

    /// When to call [`handle_timeout`](Machine::handle_timeout) next, if ever.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Drain every output: transmits to `send`, the rest to `other`. A
    /// convenience for drivers and tests; the same as looping on
    /// [`poll_output`](Machine::poll_output).
    fn drain(&mut self, mut send: impl FnMut(Transmit), mut other: impl FnMut(Self::Output)) {
        while let Some(o) = self.poll_output() {
            match o.into_transmit() {
                Ok(t) => send(t),
                Err(o) => other(o),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names_round_trip() {
        for t in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            assert_eq!(t.to_string().parse::<Transport>(), Ok(t));
            assert_eq!(t.as_str().to_uppercase().parse::<Transport>(), Ok(t));
        }
        assert_eq!("sctp".parse::<Transport>(), Err(UnknownTransport));
        assert!(!Transport::Udp.is_reliable());
        assert!(Transport::Tcp.is_reliable() && Transport::Tls.is_reliable());
    }

    #[test]
    fn a_reply_goes_back_on_the_same_five_tuple() {
        let (a, b) = (
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:2".parse().unwrap(),
        );
        let d = Datagram::new(Transport::Tcp, a, b, b"x");
        let t = d.reply(b"y".to_vec());
        assert_eq!(
            (t.source, t.destination, t.transport),
            (b, a, Transport::Tcp)
        );
        assert_eq!(d.five_tuple(), t.five_tuple());
        assert_eq!(t.as_datagram().five_tuple().local, a);
    }

    #[test]
    fn debug_of_a_transmit_shows_the_length_not_the_bytes() {
        let t = Transmit::udp(
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:2".parse().unwrap(),
            vec![7; 1000],
        );
        let s = format!("{t:?}");
        assert!(s.contains("len: 1000") && !s.contains("7, 7"), "{s}");
    }
}
