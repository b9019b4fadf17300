//! mDNS resolution (RFC 6762) of the `.local` names browsers put in their
//! host candidates (draft-ietf-mmusic-mdns-ice-candidates), as a sans-IO
//! machine.
//!
//! A browser hides its local addresses behind `<uuid>.local` names and
//! answers mDNS queries for them on the LAN. [`MdnsResolver`] asks for such
//! names with one-shot queries to the mDNS group and hands out each name's
//! addresses as soon as an answer names them, or gives up after a bounded
//! wait ([`MdnsConfig::timeout`]). It owns no socket and reads no clock: it
//! is a [`p2p_proto::Machine`] like every machine of the stack. The driver
//! owns the socket (port 5353 joined to 224.0.0.251 where it can bind it,
//! an ephemeral one otherwise: then it is a one-shot querier that
//! responders answer by unicast, RFC 6762 §6.7); the
//! [`Negotiation`](crate::Negotiation) holds the candidates that wait for a
//! name and pairs them once it resolves.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use p2p_connect::mdns::{self, AddressRecord, MdnsConfig, MdnsEvent, MdnsOutput, MdnsResolver};
//! use p2p_proto::{Datagram, Machine, Transport};
//!
//! let local = "0.0.0.0:5353".parse()?;
//! let mut r = MdnsResolver::new(MdnsConfig::new(local));
//! let t0 = Instant::now();
//! r.handle_timeout(t0);
//! r.resolve(t0, "4f1b0c9e-2d3a-4e5f-8a7b-6c5d4e3f2a1b.local")?;
//! let query = r.poll_output().and_then(MdnsOutput::transmit).expect("a query");
//! assert_eq!(query.destination, mdns::MDNS_V4);
//!
//! // The browser's responder answers on the group.
//! let answer = mdns::encode_response(&[AddressRecord {
//!     name: "4f1b0c9e-2d3a-4e5f-8a7b-6c5d4e3f2a1b.local".into(),
//!     address: "192.168.1.7".parse()?,
//!     ttl: 120,
//! }])?;
//! let from = "192.168.1.7:5353".parse()?;
//! r.handle_input(t0 + Duration::from_millis(3), Datagram::new(Transport::Udp, from, local, &answer));
//! match r.poll_output() {
//!     Some(MdnsOutput::Event(MdnsEvent::Resolved { addresses, .. })) => {
//!         assert_eq!(addresses, vec!["192.168.1.7".parse::<std::net::IpAddr>()?]);
//!     }
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod message;
mod responder;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2p_proto::{Datagram, Handled, Machine, Output, Transmit, Transport};

pub use message::{
    decode_answers, decode_questions, encode_query, encode_response, is_mdns_name, normalize,
    AddressQuestion, AddressRecord, MdnsError, MAX_NAMES_PER_QUERY, MDNS_PORT, MDNS_V4,
    MDNS_V6_GROUP,
};
pub use responder::{hide_address, MdnsResponder, ANSWER_TTL};

/// How long a name is asked for before it is given up on, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The wait before the first repeated query (RFC 6762 §5.2: at least one
/// second, then doubling).
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Most names resolved and remembered at once; a peer that signals more
/// names than this is not asked about the rest.
pub const MAX_NAMES: usize = 64;

/// How an [`MdnsResolver`] is set up. Start from [`MdnsConfig::new`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsConfig {
    /// The address of the driver's mDNS socket: queries leave from it and
    /// answers arrive on it. Its family picks the group queried.
    pub local: SocketAddr,
    /// How long a name is asked for before [`MdnsEvent::Unresolved`].
    /// Default [`DEFAULT_TIMEOUT`] (5 s).
    pub timeout: Duration,
}

impl MdnsConfig {
    /// A resolver querying from `local`, with the defaults listed on each
    /// field.
    pub fn new(local: SocketAddr) -> Self {
        MdnsConfig {
            local,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Set [`MdnsConfig::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// What the resolver found out.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MdnsEvent {
    /// `name` (normalized: lower case, no trailing dot) is at `addresses`.
    Resolved {
        /// The name.
        name: String,
        /// Its addresses, as the first answer that named it gave them.
        addresses: Vec<IpAddr>,
    },
    /// No answer named `name` within [`MdnsConfig::timeout`].
    Unresolved {
        /// The name.
        name: String,
    },
}

/// One output of the resolver.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MdnsOutput {
    /// A query to send from [`MdnsConfig::local`] to the mDNS group.
    Transmit(Transmit),
    /// A name resolved or given up on.
    Event(MdnsEvent),
}

impl MdnsOutput {
    /// The transmit, if this is one.
    pub fn transmit(self) -> Option<Transmit> {
        match self {
            MdnsOutput::Transmit(t) => Some(t),
            MdnsOutput::Event(_) => None,
        }
    }
}

impl Output for MdnsOutput {
    fn into_transmit(self) -> Result<Transmit, Self> {
        match self {
            MdnsOutput::Transmit(t) => Ok(t),
            other => Err(other),
        }
    }
}

#[derive(Debug)]
struct Pending {
    name: String,
    deadline: Instant,
    next_query: Instant,
    interval: Duration,
}

/// Resolves `.local` names with one-shot mDNS queries, each within a
/// bounded wait (see the module documentation).
///
/// It follows the house contract: created idle, it starts at its first
/// [`handle_timeout`](Machine::handle_timeout) (names asked for before are
/// queried then). A name is queried at once, again one second later, then
/// at doubling intervals until it resolves or [`MdnsConfig::timeout`]
/// passes. Answers are read from every response that reaches the socket
/// (any responder may answer, RFC 6762 §6); a resolved name is remembered
/// for the resolver's life (browsers' names are per session) unless a
/// goodbye (TTL 0) withdraws it.
#[derive(Debug)]
pub struct MdnsResolver {
    config: MdnsConfig,
    started: bool,
    pending: Vec<Pending>,
    cache: Vec<(String, Vec<IpAddr>)>,
    outputs: VecDeque<MdnsOutput>,
}

impl MdnsResolver {
    /// An idle resolver.
    pub fn new(config: MdnsConfig) -> Self {
        MdnsResolver {
            config,
            started: false,
            pending: Vec::new(),
            cache: Vec::new(),
            outputs: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MdnsConfig {
        &self.config
    }

    /// Whether a name is being asked for.
    pub fn is_resolving(&self, name: &str) -> bool {
        let n = normalize(name);
        self.pending.iter().any(|p| p.name == n)
    }

    /// Ask for `name`: a remembered name resolves at once (the event is
    /// queued), a new one is queried from `now` on. [`MdnsError::BadName`]
    /// for a name that is not an mDNS host name; a name asked for while
    /// [`MAX_NAMES`] others are pending or remembered is given up on at
    /// once ([`MdnsEvent::Unresolved`]).
    pub fn resolve(&mut self, now: Instant, name: &str) -> Result<(), MdnsError> {
        if !is_mdns_name(name) {
            return Err(MdnsError::BadName(name.to_owned()));
        }
        let name = normalize(name);
        if let Some((_, addresses)) = self.cache.iter().find(|(n, _)| *n == name) {
            let addresses = addresses.clone();
            self.event(MdnsEvent::Resolved { name, addresses });
            return Ok(());
        }
        if self.pending.iter().any(|p| p.name == name) {
            return Ok(());
        }
        if self.pending.len() + self.cache.len() >= MAX_NAMES {
            self.event(MdnsEvent::Unresolved { name });
            return Ok(());
        }
        self.pending.push(Pending {
            name,
            deadline: now + self.config.timeout,
            next_query: now,
            interval: FIRST_RETRY,
        });
        if self.started {
            self.send_due(now);
        }
        Ok(())
    }

    fn event(&mut self, e: MdnsEvent) {
        self.outputs.push_back(MdnsOutput::Event(e));
    }

    fn destination(&self) -> SocketAddr {
        match self.config.local {
            SocketAddr::V4(_) => MDNS_V4,
            SocketAddr::V6(a) => SocketAddr::V6(std::net::SocketAddrV6::new(
                MDNS_V6_GROUP,
                MDNS_PORT,
                0,
                a.scope_id(),
            )),
        }
    }

    /// One query (or a few, [`MAX_NAMES_PER_QUERY`] names each) for every
    /// name whose next query is due.
    fn send_due(&mut self, now: Instant) {
        let due: Vec<String> = self
            .pending
            .iter_mut()
            .filter(|p| p.next_query <= now)
            .map(|p| {
                p.next_query = now + p.interval;
                p.interval *= 2;
                p.name.clone()
            })
            .collect();
        let destination = self.destination();
        for chunk in due.chunks(MAX_NAMES_PER_QUERY) {
            let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
            match encode_query(&names) {
                Ok(bytes) => self.outputs.push_back(MdnsOutput::Transmit(Transmit::udp(
                    self.config.local,
                    destination,
                    bytes,
                ))),
                // The names were checked when asked for.
                Err(e) => tracing::debug!("mDNS query for {names:?}: {e}"),
            }
        }
    }

    fn answers(&mut self, records: Vec<AddressRecord>) {
        for r in &records {
            if r.ttl == 0 {
                self.cache.retain(|(n, _)| *n != r.name);
            }
        }
        let mut resolved: Vec<(String, Vec<IpAddr>)> = Vec::new();
        for r in records {
            let usable = !(r.address.is_unspecified() || r.address.is_multicast())
                && r.address != IpAddr::V4(std::net::Ipv4Addr::BROADCAST);
            if r.ttl == 0 || !usable || !self.pending.iter().any(|p| p.name == r.name) {
                continue;
            }
            match resolved.iter_mut().find(|(n, _)| *n == r.name) {
                Some((_, a)) if !a.contains(&r.address) => a.push(r.address),
                Some(_) => {}
                None => resolved.push((r.name, vec![r.address])),
            }
        }
        for (name, addresses) in resolved {
            self.pending.retain(|p| p.name != name);
            self.cache.push((name.clone(), addresses.clone()));
            self.event(MdnsEvent::Resolved { name, addresses });
        }
    }
}

impl Machine for MdnsResolver {
    type Output = MdnsOutput;

    /// A datagram on the mDNS socket: the address records of a response
    /// resolve the names asked for. [`Handled::Taken`] for anything that
    /// reached [`MdnsConfig::local`] over UDP (a query of another host, a
    /// malformed message: read and dropped), [`Handled::NotMine`] for the
    /// rest.
    fn handle_input(&mut self, _now: Instant, datagram: Datagram<'_>) -> Handled {
        if datagram.transport != Transport::Udp || datagram.destination != self.config.local {
            return Handled::NotMine;
        }
        match decode_answers(datagram.contents) {
            Ok(records) => self.answers(records),
            Err(e) => tracing::trace!("mDNS from {}: {e}", datagram.source),
        }
        Handled::Taken
    }

    /// Repeat the queries that are due; give up on names past their
    /// deadline. The first call starts the resolver.
    fn handle_timeout(&mut self, now: Instant) {
        self.started = true;
        let mut expired = Vec::new();
        self.pending.retain(|p| {
            let keep = now < p.deadline;
            if !keep {
                expired.push(p.name.clone());
            }
            keep
        });
        for name in expired {
            self.event(MdnsEvent::Unresolved { name });
        }
        self.send_due(now);
    }

    fn poll_output(&mut self) -> Option<MdnsOutput> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.pending
            .iter()
            .map(|p| p.next_query.min(p.deadline))
            .min()
    }
}

#[cfg(test)]
mod tests;
