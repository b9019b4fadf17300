//! Hard-NAT traversal in the session (issue 14): birthday probing between
//! a peer whose NAT maps endpoint-independently and one whose NAT does
//! not, which standard ICE relays when the easy side filters by address
//! and port.
//!
//! 1. **Our mapping.** With [`SessionConfig::hard_nat`], the session sends
//!    a Binding request from its first IPv4 host socket to the first IPv4
//!    STUN server, then one to a second server address: the server's RFC
//!    5780 OTHER-ADDRESS when its answer carries one, else the next IPv4
//!    STUN server of another IP. The same mapped address twice is
//!    endpoint-independent mapping; two are not. [`SessionEvent::NatMapping`]
//!    reports it, with the socket and its mapped address: the application
//!    signals it to the peer only when both announced the ICE option
//!    token (p2p-connect's `Negotiation` does, as a candidate extension
//!    attribute), and gives the peer's to [`Session::set_peer_nat`].
//! 2. **ICE's fair chance.** Nothing more happens while ICE may still find
//!    a direct path: probing starts [`FAIR_CHANCE`] after the peer's
//!    credentials came (the checks began), and only when the selected pair
//!    is relayed or there is none.
//! 3. **Probing.** The endpoint-dependent ("hard") side asks for
//!    [`p2p_ice::MAX_SOCKETS`] sockets ([`SessionOutput::Sockets`]) and,
//!    once [`Session::sockets_bound`] hands them over, sends one
//!    authenticated Binding request from each to the easy side's mapped
//!    address; the easy side probes random ports of the hard side's IP
//!    with authenticated checks, 200/s, at most [`p2p_ice::MAX_PROBES`],
//!    for at most 10 s ([`p2p_ice::BirthdayProber`]).
//! 4. **The path.** The first success is handed to the ICE agent as a
//!    discovered pair ([`p2p_ice::IceAgent::add_discovered_pair`]): checked
//!    at once, valid, nominated by the controlling side over the relay.
//!    The sockets not used are closed ([`ProbeSockets::Close`]).
//!
//! Never under a relay-only policy (nothing is learnt, asked or probed),
//! never before the peer's mapping was given (the token agreed).
//!
//! [`SessionConfig::hard_nat`]: super::SessionConfig::hard_nat

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2p_ice::{
    BirthdayConfig, BirthdayEvent, BirthdayOutput, BirthdayProber, BirthdayRole, CandidateKind,
    MAX_SOCKETS,
};
use p2p_proto::{Datagram, Machine, Transmit};
use p2p_stun::attr::{OtherAddress, XorMappedAddress};
use p2p_stun::{Message, MessageBuilder, MessageClass, MessageType, Method, TransactionId};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::{Session, SessionEvent, SessionOutput};

/// How long ordinary ICE has, from the peer's credentials, before birthday
/// probing may begin (the netsim matrix's direct paths through a learnt
/// peer-reflexive address are all selected within it).
pub const FAIR_CHANCE: Duration = Duration::from_secs(3);

/// Retransmission of the mapping requests: every 500 ms, 3 tries.
const DETECT_RTO: Duration = Duration::from_millis(500);
const DETECT_TRIES: u32 = 3;

/// How a NAT maps (RFC 4787 §4.1), as far as probing cares.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatMapping {
    /// One external address per socket, whatever the destination (EIM):
    /// the "easy" side.
    EndpointIndependent,
    /// A new external address per destination IP, or IP and port (ADM,
    /// APDM): the "hard" side.
    EndpointDependent,
}

/// How an endpoint-dependent NAT picks the port of a new mapping, as far
/// as two mappings tell (RFC 4787 §4.2.1).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortPattern {
    /// No pattern seen (random ports, or not endpoint-dependent).
    Unknown,
    /// The next mapping takes the next port (the second mapping's port
    /// was the first's plus 1 to 4).
    Sequential,
    /// A socket's first mapping keeps the socket's port.
    Preserving,
}

/// One side's mapping behaviour, as its gathering found it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatReport {
    /// The behaviour.
    pub mapping: NatMapping,
    /// How an endpoint-dependent NAT allocates ports (port prediction).
    pub ports: PortPattern,
    /// The socket it was learnt from (the one that probes on the easy side).
    pub local: SocketAddr,
    /// That socket's server-reflexive address (towards the first server):
    /// on the easy side, where the hard side sends; on the hard side, its
    /// public IP, where the easy side probes.
    pub mapped: SocketAddr,
}

impl NatReport {
    /// A report of `mapping` learnt on `local`, mapped to `mapped`.
    pub fn new(mapping: NatMapping, local: SocketAddr, mapped: SocketAddr) -> Self {
        NatReport {
            mapping,
            ports: PortPattern::Unknown,
            local,
            mapped,
        }
    }

    /// The same report with `ports`.
    pub fn with_ports(mut self, ports: PortPattern) -> Self {
        self.ports = ports;
        self
    }

    /// The token signalled for it: `eim`, `edm`, `edm-seq`, `edm-pres`.
    pub fn token(&self) -> &'static str {
        match (self.mapping, self.ports) {
            (NatMapping::EndpointIndependent, _) => "eim",
            (_, PortPattern::Sequential) => "edm-seq",
            (_, PortPattern::Preserving) => "edm-pres",
            _ => "edm",
        }
    }

    /// The behaviour and port pattern a token names.
    pub fn parse_token(s: &str) -> Option<(NatMapping, PortPattern)> {
        Some(match s {
            "eim" => (NatMapping::EndpointIndependent, PortPattern::Unknown),
            "edm" => (NatMapping::EndpointDependent, PortPattern::Unknown),
            "edm-seq" => (NatMapping::EndpointDependent, PortPattern::Sequential),
            "edm-pres" => (NatMapping::EndpointDependent, PortPattern::Preserving),
            _ => return None,
        })
    }
}

/// Sockets the session asks the caller for, or gives back.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeSockets {
    /// Bind up to `count` UDP sockets on `ip` (any ports), read them as the
    /// host sockets are read, and hand their addresses to
    /// [`Session::sockets_bound`] (fewer, or none, if the system refuses).
    Bind {
        /// The local IP (that of the host socket whose NAT is "hard").
        ip: IpAddr,
        /// How many (at most [`p2p_ice::MAX_SOCKETS`]).
        count: usize,
    },
    /// Close these sockets (probing ended; the one that found the path, if
    /// any, stays).
    Close(Vec<SocketAddr>),
}

/// What birthday probing did.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HardNatEvent {
    /// Probing began, as the hard side (sockets open towards the peer) or
    /// the easy side (random ports probed).
    Probing {
        /// We are the endpoint-dependent side.
        hard: bool,
    },
    /// A path: our socket `local`, the peer's `remote`; handed to ICE.
    Found {
        /// Our socket.
        local: SocketAddr,
        /// The peer's address as we see it.
        remote: SocketAddr,
        /// Requests we sent (probes on the easy side, one per socket on
        /// the hard side).
        sent: u32,
    },
    /// Port prediction (both sides endpoint-dependent, ports sequential or
    /// preserved): our fresh socket `local` checks the peer's predicted
    /// address `remote`, as the peer checks ours; handed to ICE.
    Predicted {
        /// Our socket.
        local: SocketAddr,
        /// The peer's predicted address.
        remote: SocketAddr,
    },
    /// Nothing before the deadline or the end of the probes.
    GaveUp {
        /// Requests we sent.
        sent: u32,
    },
}

/// A Binding request of the mapping detection.
#[derive(Debug)]
pub(super) struct Ask {
    /// The socket it goes from.
    pub(super) from: SocketAddr,
    /// For the mapping detection (false) or a port prediction (true).
    pub(super) predict: bool,
    pub(super) to: SocketAddr,
    pub(super) tid: TransactionId,
    tries: u32,
    next: Instant,
}

#[derive(Debug)]
pub(super) enum Phase {
    /// Not probing (yet).
    Idle,
    /// The hard side asked for sockets.
    Asked,
    /// The prober runs; the hard side's sockets.
    Running(Box<BirthdayProber>, Vec<SocketAddr>),
    /// Port prediction with our fresh socket.
    Predicting(SocketAddr),
    /// Found or gave up (or could not start).
    Done,
}

/// The session's hard-NAT part.
#[derive(Debug)]
pub(super) struct HardNat {
    pub(super) enabled: bool,
    rng: StdRng,
    seed: Option<u64>,
    /// The socket the mapping is learnt from, and the servers to ask.
    socket: Option<SocketAddr>,
    servers: Vec<SocketAddr>,
    pub(super) ask: Option<Ask>,
    first: Option<SocketAddr>,
    /// The second server address asked (where a prediction measures).
    pub(super) second: Option<SocketAddr>,
    pub(super) ours: Option<NatReport>,
    peer: Option<NatReport>,
    /// Our predicted address and the peer's (port prediction).
    pub(super) predicted: Option<SocketAddr>,
    pub(super) peer_predicted: Option<SocketAddr>,
    started: Option<Instant>,
    /// When the peer's credentials came (checks began).
    pub(super) creds_at: Option<Instant>,
    pub(super) phase: Phase,
    /// Probing began (sockets asked for, or probes sent).
    pub(super) ran: bool,
    /// Sockets closed after probing: what still arrives there is dropped.
    closed: Vec<SocketAddr>,
}

impl HardNat {
    /// `enabled`: learn the mapping and probe when asked (never under a
    /// relay-only policy: the caller passes false).
    pub(super) fn new(
        enabled: bool,
        hosts: &[SocketAddr],
        stun: &[SocketAddr],
        seed: Option<u64>,
    ) -> Self {
        let socket = hosts.iter().find(|h| h.is_ipv4()).copied();
        HardNat {
            enabled: enabled && socket.is_some(),
            rng: match seed {
                Some(s) => StdRng::seed_from_u64(s ^ 0xb1d7),
                None => StdRng::from_entropy(),
            },
            seed,
            socket,
            servers: stun.iter().filter(|s| s.is_ipv4()).copied().collect(),
            ask: None,
            first: None,
            second: None,
            predicted: None,
            peer_predicted: None,
            ours: None,
            peer: None,
            started: None,
            creds_at: None,
            phase: Phase::Idle,
            ran: false,
            closed: Vec::new(),
        }
    }

    /// Probing ran or runs (for tests and statistics).
    pub(super) fn probing(&self) -> bool {
        self.ran
    }
}

/// A Binding request, or `None` when it cannot be encoded.
fn binding(tid: TransactionId) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(28);
    let mut b = MessageBuilder::new(
        &mut buf,
        MessageType::new(Method::BINDING, MessageClass::Request),
        tid,
    )
    .ok()?;
    b.add_fingerprint().ok()?;
    b.finish();
    Some(buf)
}

impl Session {
    /// The peer's mapping behaviour, as it signalled it: give it only when
    /// both peers announced the hard-NAT ICE option token. Probing may
    /// start from then on (see the module documentation).
    pub fn set_peer_nat(&mut self, now: Instant, peer: NatReport) {
        if !self.hardnat.enabled {
            return;
        }
        self.hardnat.peer = Some(peer);
        self.hardnat_step(now);
        self.pump(now);
    }

    /// Our mapping behaviour, once learnt.
    pub fn nat_report(&self) -> Option<NatReport> {
        self.hardnat.ours
    }

    /// The peer's, once given ([`Session::set_peer_nat`]).
    pub fn peer_nat_report(&self) -> Option<NatReport> {
        self.hardnat.peer
    }

    /// Whether birthday probing began (it never does under a relay-only
    /// policy or without [`SessionConfig::hard_nat`](super::SessionConfig::hard_nat)).
    pub fn hard_nat_probing(&self) -> bool {
        self.hardnat.probing()
    }

    /// The sockets a [`ProbeSockets::Bind`] asked for, bound (maybe fewer,
    /// maybe none). Probing starts with them.
    pub fn sockets_bound(&mut self, now: Instant, sockets: Vec<SocketAddr>) {
        if !matches!(self.hardnat.phase, Phase::Asked) {
            if !sockets.is_empty() {
                self.out
                    .push_back(SessionOutput::Sockets(ProbeSockets::Close(sockets)));
            }
            return;
        }
        let (Some(peer), Some(creds)) = (self.hardnat.peer, self.probe_credentials()) else {
            self.hardnat.phase = Phase::Done;
            return;
        };
        if sockets.is_empty() || self.closing.is_some() {
            self.hardnat.phase = Phase::Done;
            return;
        }
        if peer.mapping == NatMapping::EndpointDependent {
            self.start_prediction(now, sockets);
            self.pump(now);
            return;
        }
        let role = BirthdayRole::Hard {
            sockets: sockets.iter().take(MAX_SOCKETS).copied().collect(),
            easy: peer.mapped,
        };
        self.start_prober(now, role, creds, sockets);
        self.pump(now);
    }

    fn probe_credentials(&self) -> Option<((String, String), (String, String))> {
        let l = self.agent.local_credentials();
        let r = self.agent.remote_credentials()?;
        Some((
            (l.ufrag.clone(), l.pwd.clone()),
            (r.ufrag.clone(), r.pwd.clone()),
        ))
    }

    fn start_prober(
        &mut self,
        now: Instant,
        role: BirthdayRole,
        creds: ((String, String), (String, String)),
        sockets: Vec<SocketAddr>,
    ) {
        let hard = matches!(role, BirthdayRole::Hard { .. });
        let mut config = BirthdayConfig::new(role, creds.0, creds.1);
        config.rng_seed = self.hardnat.seed.map(|s| s.wrapping_add(0xb17d));
        match BirthdayProber::new(config) {
            Ok(mut p) => {
                p.handle_timeout(now);
                self.hardnat.phase = Phase::Running(Box::new(p), sockets);
                self.event(SessionEvent::HardNat(HardNatEvent::Probing { hard }));
            }
            Err(_) => self.hardnat.phase = Phase::Done,
        }
    }

    /// Start the mapping detection, retransmit it, start probing when its
    /// time came, run the prober's timers.
    pub(super) fn hardnat_timeout(&mut self, now: Instant) {
        if !self.hardnat.enabled {
            return;
        }
        if self.hardnat.started.is_none() {
            self.hardnat.started = Some(now);
            if let (Some(from), Some(to)) = (self.hardnat.socket, self.hardnat.servers.first()) {
                self.ask_mapping(now, from, *to, false, 0);
            }
        }
        if let Some(a) = &self.hardnat.ask {
            if now >= a.next {
                let (from, to, predict, tries) = (a.from, a.to, a.predict, a.tries);
                if tries >= DETECT_TRIES {
                    self.hardnat.ask = None;
                } else {
                    self.ask_mapping(now, from, to, predict, tries);
                }
            }
        }
        if let Phase::Running(p, _) = &mut self.hardnat.phase {
            if p.poll_timeout().is_some_and(|t| t <= now) {
                p.handle_timeout(now);
            }
        }
        self.hardnat_step(now);
    }

    pub(super) fn ask_mapping(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        predict: bool,
        tries: u32,
    ) {
        let tid = TransactionId::random(&mut self.hardnat.rng);
        self.hardnat.ask = Some(Ask {
            from,
            predict,
            to,
            tid,
            tries: tries + 1,
            next: now + DETECT_RTO,
        });
        if let Some(b) = binding(tid) {
            self.out
                .push_back(SessionOutput::Transmit(Transmit::udp(from, to, b)));
        }
    }

    /// Its next timer.
    pub(super) fn hardnat_poll_timeout(&self) -> Option<Instant> {
        let h = &self.hardnat;
        if !h.enabled {
            return None;
        }
        let start = match (h.creds_at, &h.phase, h.ours, h.peer) {
            (Some(s), Phase::Idle, Some(_), Some(_))
                if self.agent.remote_credentials().is_some() =>
            {
                Some(s + FAIR_CHANCE)
            }
            _ => None,
        };
        let prober = match &h.phase {
            Phase::Running(p, _) => p.poll_timeout(),
            _ => None,
        };
        [h.ask.as_ref().map(|a| a.next), start, prober]
            .into_iter()
            .flatten()
            .min()
    }

    /// A datagram for the detection or the prober (or for a socket closed
    /// after probing): whether it was taken.
    pub(super) fn hardnat_input(&mut self, now: Instant, d: Datagram<'_>) -> bool {
        if !self.hardnat.enabled {
            return false;
        }
        if self.hardnat.closed.contains(&d.destination) {
            return true;
        }
        if let Some(a) = &self.hardnat.ask {
            if d.destination == a.from && d.source == a.to {
                if let Ok(m) = Message::decode(d.contents) {
                    if m.transaction_id() == a.tid && m.typ().class == MessageClass::Success {
                        let predict = a.predict;
                        let mapped = m.get::<XorMappedAddress>().ok().flatten().map(|x| x.0);
                        let other = m.get::<OtherAddress>().ok().flatten().map(|x| x.0);
                        self.hardnat.ask = None;
                        match mapped {
                            Some(mapped) if predict => self.measured(now, mapped),
                            Some(mapped) => self.mapping_answer(now, mapped, other),
                            None => {}
                        }
                        return true;
                    }
                }
            }
        }
        if let Phase::Running(p, _) = &mut self.hardnat.phase {
            if p.handle_input(now, d).is_taken() {
                return true;
            }
        }
        false
    }

    fn mapping_answer(&mut self, now: Instant, mapped: SocketAddr, other: Option<SocketAddr>) {
        let Some(socket) = self.hardnat.socket else {
            return;
        };
        match self.hardnat.first {
            None => {
                self.hardnat.first = Some(mapped);
                let first_server = self.hardnat.servers.first().copied();
                // A second server address of another IP: the first
                // server's OTHER-ADDRESS, else the next configured server.
                let second = other.filter(|o| o.is_ipv4()).or_else(|| {
                    self.hardnat
                        .servers
                        .iter()
                        .find(|s| Some(s.ip()) != first_server.map(|f| f.ip()))
                        .copied()
                });
                if let Some(to) = second {
                    self.hardnat.second = Some(to);
                    self.ask_mapping(now, socket, to, false, 0);
                }
            }
            Some(first) => {
                let (mapping, ports) = if first == mapped {
                    (NatMapping::EndpointIndependent, PortPattern::Unknown)
                } else if first.port() == socket.port() {
                    (NatMapping::EndpointDependent, PortPattern::Preserving)
                } else if (1..=4).contains(&mapped.port().wrapping_sub(first.port())) {
                    (NatMapping::EndpointDependent, PortPattern::Sequential)
                } else {
                    (NatMapping::EndpointDependent, PortPattern::Unknown)
                };
                let report = NatReport::new(mapping, socket, first).with_ports(ports);
                self.hardnat.ours = Some(report);
                self.event(SessionEvent::NatMapping(report));
            }
        }
    }

    /// Start probing when everything says so.
    fn hardnat_step(&mut self, now: Instant) {
        let h = &self.hardnat;
        let (Some(checking), Some(ours), Some(peer)) = (h.creds_at, h.ours, h.peer) else {
            return;
        };
        if !matches!(h.phase, Phase::Idle) {
            return;
        }
        if self.closing.is_some() || self.close_asked {
            self.hardnat.phase = Phase::Done;
            return;
        }
        use NatMapping::{EndpointDependent as Edm, EndpointIndependent as Eim};
        let predictable = |r: NatReport| r.ports != PortPattern::Unknown;
        let hard = match (ours.mapping, peer.mapping) {
            (Eim, Edm) => Some(false),
            (Edm, Eim) => Some(true),
            (Edm, Edm) if predictable(ours) && predictable(peer) => None,
            _ => {
                // Nothing to do beyond ICE: no timer either.
                self.hardnat.phase = Phase::Done;
                return;
            }
        };
        // ICE's fair chance: a direct selected pair ends the question.
        let direct = self
            .agent
            .selected_pair()
            .map(|(l, r)| l.kind() != CandidateKind::Relayed && r.kind() != CandidateKind::Relayed);
        if direct == Some(true) {
            self.hardnat.phase = Phase::Done;
            return;
        }
        if now < checking + FAIR_CHANCE || self.agent.remote_credentials().is_none() {
            return;
        }
        self.hardnat.ran = true;
        if hard != Some(false) {
            // The hard side's 256 sockets, or one fresh socket to predict.
            self.hardnat.phase = Phase::Asked;
            self.out
                .push_back(SessionOutput::Sockets(ProbeSockets::Bind {
                    ip: ours.local.ip(),
                    count: if hard.is_some() { MAX_SOCKETS } else { 1 },
                }));
        } else if let Some(creds) = self.probe_credentials() {
            let role = BirthdayRole::Easy {
                local: ours.local,
                hard_ip: peer.mapped.ip(),
            };
            self.start_prober(now, role, creds, Vec::new());
        }
    }

    /// The prober's transmits out; its outcome to the agent and the
    /// application; unused sockets closed. Whether anything moved.
    pub(super) fn drain_hardnat(&mut self, now: Instant) -> bool {
        let Phase::Running(p, _) = &mut self.hardnat.phase else {
            return false;
        };
        let mut moved = false;
        let mut outcome = None;
        while let Some(o) = p.poll_output() {
            moved = true;
            match o {
                BirthdayOutput::Transmit(t) => self.out.push_back(SessionOutput::Transmit(t)),
                BirthdayOutput::Event(e) => outcome = Some(e),
                _ => {}
            }
        }
        let Some(e) = outcome else {
            return moved;
        };
        let Phase::Running(_, sockets) = std::mem::replace(&mut self.hardnat.phase, Phase::Done)
        else {
            return moved;
        };
        let (keep, event) = match e {
            BirthdayEvent::Found {
                local,
                remote,
                sent,
            } => {
                if let Err(err) = self.agent.add_discovered_pair(now, local, remote) {
                    tracing::debug!("birthday path {local} -> {remote}: {err}");
                }
                (
                    Some(local),
                    HardNatEvent::Found {
                        local,
                        remote,
                        sent,
                    },
                )
            }
            BirthdayEvent::GaveUp { sent } => (None, HardNatEvent::GaveUp { sent }),
            _ => (None, HardNatEvent::GaveUp { sent: 0 }),
        };
        let close: Vec<SocketAddr> = sockets.into_iter().filter(|s| Some(*s) != keep).collect();
        if !close.is_empty() {
            self.hardnat.closed.extend(close.iter().copied());
            self.out
                .push_back(SessionOutput::Sockets(ProbeSockets::Close(close)));
        }
        self.event(SessionEvent::HardNat(event));
        true
    }
}
