//! Two `Session`s on the `p2p-netsim` virtual network, with a TURN server
//! (which answers STUN Binding too) on the public side, and signalling
//! relayed between them by the harness with a fixed delay.
//!
//! - [`SessionNode`]: a `Session` and its host address as a netsim node. It
//!   records every event with its time, the first `SelectedPair`, the data it
//!   received, and once the encrypted connection is up (DTLS, then the data
//!   channels' association) A opens a channel `ping` and both send a small
//!   message on it every [`PING_EVERY`] so that data flows both ways.
//! - [`TurnNode`]: a `TurnServer` on a public IP, relaying from the same IP.
//! - [`Pair`]: the simulation plus the signalling channel; [`run_pair`]
//!   connects two placements and reports the path and the time it took.
#![allow(dead_code, unreachable_pub, clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use p2p_connect::{
    CandidateKind, ChannelEvent, ChannelId, ChannelOptions, DtlsRole, Fingerprint, HardNatEvent,
    IceConfig, IceState, NatReport, ProbeSockets, Reliability, RemoteSecurity, Session,
    SessionConfig, SessionEvent, SessionOutput, Transmit, Transport, TurnServerConfig,
};
use p2p_netsim::{
    Behaviour, Firewall, HostId, LinkConfig, NatConfig, NatId, Node, PortAllocation,
    PortMapService, Realm, Sim,
};
use p2p_turn::{
    Cidr, Machine, PeerPolicy, ServerConfig, ServerOutput, SocketRequest, StaticUsers, TurnServer,
};

/// The public STUN/TURN server.
pub const SERVER_IP: &str = "203.0.113.1";
/// Its IPv6 address (it is dual-stack).
pub const SERVER_IP6: &str = "2001:db8:ff::1";
/// Its listening port (STUN Binding and TURN).
pub const SERVER_PORT: u16 = 3478;
/// Its RFC 5780 alternate address (OTHER-ADDRESS in its Binding answers).
pub const SERVER_OTHER: &str = "203.0.113.2:3479";
/// The first port the harness "binds" for birthday probing.
pub const PROBE_PORTS: u16 = 40000;
/// How often a node with a selected path sends a ping.
pub const PING_EVERY: Duration = Duration::from_millis(200);

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test socket address")
}

pub fn server_addr() -> SocketAddr {
    SocketAddr::new(ip(SERVER_IP), SERVER_PORT)
}

/// The server's IPv6 address and port.
pub fn server_addr6() -> SocketAddr {
    SocketAddr::new(ip(SERVER_IP6), SERVER_PORT)
}

// ------------------------------------------------------------------ signalling

/// What the application would carry over the signalling channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// ICE ufrag and password (at start, and after a restart), and the
    /// fingerprint of the DTLS certificate.
    Credentials(String, String, Fingerprint),
    /// A trickled candidate (SDP `candidate:` value).
    Candidate(String),
    /// End-of-candidates.
    EndOfCandidates,
    /// Our NAT's mapping behaviour (both sides run with hard-NAT traversal:
    /// the ICE option token is agreed).
    Nat(NatReport),
    /// Our fresh socket's predicted address (port prediction).
    Predict(SocketAddr),
}

/// The candidate type named in an SDP `candidate:` line.
pub fn candidate_kind(line: &str) -> Option<CandidateKind> {
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == "typ" {
            return match it.next()? {
                "host" => Some(CandidateKind::Host),
                "srflx" => Some(CandidateKind::ServerReflexive),
                "prflx" => Some(CandidateKind::PeerReflexive),
                "relay" => Some(CandidateKind::Relayed),
                _ => None,
            };
        }
    }
    None
}

// ------------------------------------------------------------------ nodes

/// A `Session` on the virtual network.
pub struct SessionNode {
    pub name: &'static str,
    pub session: Session,
    /// The ICE controlling side (the offerer: the DTLS server, which opens
    /// the `ping` channel).
    pub controlling: bool,
    /// The channel the pings go on, once open.
    pub channel: Option<ChannelId>,
    /// Transmits of the session, for the network.
    transmits: VecDeque<Transmit>,
    /// Signals from the peer, with the time they are due (sorted).
    inbox: VecDeque<(Instant, Signal)>,
    /// Signals for the peer, taken by the harness after every step.
    pub outbox: Vec<Signal>,
    pub events: Vec<(Instant, SessionEvent)>,
    pub first_selected: Option<Instant>,
    /// When the first connectivity check went out.
    pub first_check: Option<Instant>,
    pub received: Vec<(Instant, Vec<u8>)>,
    /// Errors from applying the peer's signals (must stay empty).
    pub signal_errors: Vec<String>,
    /// Send pings once a path is selected.
    pub pinging: bool,
    next_ping: Option<Instant>,
    pub pings_sent: u32,
    /// Messages sent at once, in the same step, when the channel opens (an
    /// application that writes as soon as it connects).
    pub burst_on_select: u32,
    /// When the data channels' association came up.
    pub established: Option<Instant>,
    /// The application takes each message as it arrives (releases its
    /// bytes to the session at once); false: it takes none.
    pub reading: bool,
    /// Probing sockets asked for (bound at once) and closed.
    pub probe_sockets: (usize, usize),
}

impl SessionNode {
    pub fn new(name: &'static str, session: Session, controlling: bool) -> Self {
        SessionNode {
            name,
            session,
            controlling,
            channel: None,
            transmits: VecDeque::new(),
            established: None,
            inbox: VecDeque::new(),
            outbox: Vec::new(),
            events: Vec::new(),
            first_selected: None,
            first_check: None,
            received: Vec::new(),
            signal_errors: Vec::new(),
            pinging: true,
            next_ping: None,
            pings_sent: 0,
            burst_on_select: 0,
            reading: true,
            probe_sockets: (0, 0),
        }
    }

    /// Send a binary message on `id`.
    pub fn send_binary_on(
        &mut self,
        now: Instant,
        id: ChannelId,
        data: &[u8],
    ) -> Result<(), p2p_connect::SessionError> {
        let r = self.session.send(now, id, data, true);
        self.drain(now);
        r
    }

    /// The application takes every message it holds on `id`.
    pub fn take_all(&mut self, now: Instant, id: ChannelId) {
        let unread = self.session.unread(id);
        self.session.release(now, id, unread);
        self.drain(now);
    }

    /// Start the session (gathering, allocations) at `now`.
    pub fn start(&mut self, now: Instant) {
        self.session.handle_timeout(now);
        self.drain(now);
    }

    /// Our credentials and fingerprint, as signalled.
    pub fn credentials(&self) -> Signal {
        let (u, p) = self.session.local_credentials();
        Signal::Credentials(u.to_owned(), p.to_owned(), self.session.local_fingerprint())
    }

    /// ICE restart: new credentials go out first, then the candidates.
    pub fn restart(&mut self, now: Instant) {
        self.session.restart(now);
        let c = self.credentials();
        self.outbox.push(c);
        self.drain(now);
    }

    /// Send one string message on the `ping` channel.
    pub fn send(&mut self, now: Instant, text: &str) -> Result<(), p2p_connect::SessionError> {
        let id = self.channel.ok_or(p2p_connect::SessionError::Closed)?;
        let r = self.session.send(now, id, text.as_bytes(), false);
        self.drain(now);
        r
    }

    /// Open a channel at `now` (the outputs are drained); its id, once the
    /// DTLS role is known.
    pub fn open(&mut self, now: Instant, options: ChannelOptions) -> Option<ChannelId> {
        let id = match self.session.open_channel(now, options) {
            Ok(id) => id,
            Err(e) => {
                self.signal_errors.push(format!("open: {e}"));
                None
            }
        };
        self.drain(now);
        id
    }

    /// Send one string message on channel `id` at `now`.
    pub fn send_on(
        &mut self,
        now: Instant,
        id: ChannelId,
        text: &str,
    ) -> Result<(), p2p_connect::SessionError> {
        let r = self.session.send(now, id, text.as_bytes(), false);
        self.drain(now);
        r
    }

    /// The messages received on channel `id`, in order, as text.
    pub fn messages_on(&self, id: ChannelId) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                SessionEvent::Channel(ChannelEvent::Message { id: i, data, .. }) if *i == id => {
                    Some(String::from_utf8_lossy(data).into_owned())
                }
                _ => None,
            })
            .collect()
    }

    /// When each `SelectedPair` came, with its kinds (local, remote).
    pub fn path_changes(&self) -> Vec<(Instant, CandidateKind, CandidateKind)> {
        self.events
            .iter()
            .filter_map(|(t, e)| match e {
                SessionEvent::SelectedPair { local, remote } => Some((*t, local.kind, remote.kind)),
                _ => None,
            })
            .collect()
    }

    /// Close the session (delete its TURN allocations) at `now`.
    pub fn close(&mut self, now: Instant) {
        self.pinging = false;
        self.session.close(now);
        self.drain(now);
    }

    /// Queue a signal from the peer for `at`.
    pub fn deliver_at(&mut self, at: Instant, s: Signal) {
        let pos = self.inbox.partition_point(|(t, _)| *t <= at);
        self.inbox.insert(pos, (at, s));
    }

    pub fn selected_kinds(&self) -> Option<(CandidateKind, CandidateKind)> {
        self.session.selected_path().map(|(l, r)| (l.kind, r.kind))
    }

    /// Number of `SelectedPair` events so far.
    pub fn selections(&self) -> usize {
        self.events
            .iter()
            .filter(|(_, e)| matches!(e, SessionEvent::SelectedPair { .. }))
            .count()
    }

    pub fn has_event(&self, f: impl Fn(&SessionEvent) -> bool) -> Option<Instant> {
        self.events.iter().find(|(_, e)| f(e)).map(|(t, _)| *t)
    }

    /// Connectivity checks sent (not counting retransmissions).
    pub fn checks_sent(&self) -> u32 {
        self.session
            .agent()
            .stats()
            .pairs
            .iter()
            .map(|p| p.checks_sent)
            .sum()
    }

    fn drain(&mut self, now: Instant) {
        if self.first_check.is_none() && self.checks_sent() > 0 {
            self.first_check = Some(now);
        }
        while let Some(o) = self.session.poll_output() {
            let e = match o {
                SessionOutput::Transmit(t) => {
                    self.transmits.push_back(t);
                    continue;
                }
                SessionOutput::Event(e) => e,
                SessionOutput::Sockets(ProbeSockets::Bind { ip, count }) => {
                    // The virtual network needs no socket: ports are names.
                    let start = PROBE_PORTS + self.probe_sockets.0 as u16;
                    let ports = (0..count as u16).map(|i| SocketAddr::new(ip, start + i));
                    self.probe_sockets.0 += count;
                    self.session.sockets_bound(now, ports.collect());
                    continue;
                }
                SessionOutput::Sockets(ProbeSockets::Close(s)) => {
                    self.probe_sockets.1 += s.len();
                    continue;
                }
                other => panic!("unexpected output {other:?}"),
            };
            match &e {
                SessionEvent::LocalCandidate(c) => {
                    self.outbox.push(Signal::Candidate(c.to_string()))
                }
                SessionEvent::GatheringComplete => self.outbox.push(Signal::EndOfCandidates),
                SessionEvent::NatMapping(r) => self.outbox.push(Signal::Nat(*r)),
                SessionEvent::PortPrediction(a) => self.outbox.push(Signal::Predict(*a)),
                SessionEvent::SelectedPair { .. } => {
                    self.first_selected.get_or_insert(now);
                }
                SessionEvent::Channel(ChannelEvent::Connected) => {
                    self.established.get_or_insert(now);
                    if self.controlling && self.channel.is_none() {
                        // Datagram semantics, as the pings had before the
                        // path was encrypted: a lost ping is lost, none
                        // waits for another.
                        let options = ChannelOptions::new("ping")
                            .with_ordered(false)
                            .with_reliability(Reliability::MaxRetransmits(0));
                        match self.session.open_channel(now, options) {
                            Ok(id) => self.channel = id,
                            Err(e) => self.signal_errors.push(format!("open: {e}")),
                        }
                        if let Some(id) = self.channel {
                            for i in 1..=self.burst_on_select {
                                let msg = format!("burst {} #{i}", self.name);
                                if let Err(e) = self.session.send(now, id, msg.as_bytes(), false) {
                                    self.signal_errors.push(format!("burst: {e}"));
                                }
                            }
                        }
                    }
                    if self.pinging {
                        self.next_ping = Some(now);
                    }
                }
                SessionEvent::Channel(ChannelEvent::ChannelOpened { id, .. }) => {
                    self.channel = Some(*id);
                }
                SessionEvent::Channel(ChannelEvent::Message { id, data, .. }) => {
                    if self.reading {
                        self.session.release(now, *id, data.len());
                    }
                    self.received.push((now, data.clone()))
                }
                _ => {}
            }
            self.events.push((now, e));
        }
    }

    /// Apply a signal of the peer.
    pub fn apply(&mut self, now: Instant, s: Signal) {
        let r = match s {
            Signal::Credentials(u, p, fingerprint) => {
                // The harness's offer/answer: A offers (actpass), B answers
                // active, so B is the DTLS client.
                let role = if self.controlling {
                    DtlsRole::Server
                } else {
                    DtlsRole::Client
                };
                self.session.set_remote_security(
                    now,
                    RemoteSecurity {
                        role,
                        fingerprints: vec![fingerprint],
                        sctp_port: 5000,
                        max_message_size: None,
                    },
                );
                self.session.set_remote_credentials(now, &u, &p)
            }
            // Signalled as text, read once with p2p-sdp's grammar.
            Signal::Candidate(c) => match c.parse() {
                Ok(c) => self.session.add_remote_candidate(now, c),
                Err(e) => {
                    self.signal_errors.push(format!("{c}: {e}"));
                    Ok(())
                }
            },
            Signal::EndOfCandidates => {
                self.session.end_of_remote_candidates(now);
                Ok(())
            }
            Signal::Nat(r) => {
                self.session.set_peer_nat(now, r);
                Ok(())
            }
            Signal::Predict(a) => {
                self.session.set_peer_prediction(now, a);
                Ok(())
            }
        };
        if let Err(e) = r {
            self.signal_errors.push(e.to_string());
        }
    }
}

impl Node for SessionNode {
    fn handle_input(&mut self, now: Instant, d: p2p_netsim::Datagram<'_>) {
        let transport = match d.transport {
            p2p_netsim::Transport::Udp => Transport::Udp,
            _ => Transport::Tcp,
        };
        let d = p2p_connect::Datagram::new(transport, d.source, d.destination, d.contents);
        let _ = self.session.handle_input(now, d);
        self.drain(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        while self.inbox.front().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, s)) = self.inbox.pop_front() {
                self.apply(now, s);
                self.drain(now);
            }
        }
        if self.session.poll_timeout().is_some_and(|t| t <= now) {
            self.session.handle_timeout(now);
            self.drain(now);
        }
        if self.next_ping.is_some_and(|t| t <= now) {
            self.next_ping = None;
            if self.pinging {
                // No path or no channel yet (a restart, or the peer's
                // channel not open here yet): try again at the next tick.
                if self.session.selected_path().is_some() && self.channel.is_some() {
                    self.pings_sent += 1;
                    let msg = format!("ping {} #{}", self.name, self.pings_sent);
                    if let Err(e) = self.send(now, &msg) {
                        self.signal_errors.push(format!("ping: {e}"));
                    }
                }
                self.next_ping = Some(now + PING_EVERY);
            }
        }
    }

    fn poll_transmit(&mut self, _now: Instant) -> Option<p2p_netsim::Transmit> {
        let t = self.transmits.pop_front()?;
        Some(on_the_wire(
            t.transport,
            t.source,
            t.destination,
            t.contents,
        ))
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        [
            self.session.poll_timeout(),
            self.inbox.front().map(|(t, _)| *t),
            self.next_ping.filter(|_| self.pinging),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// A (controlling, the offerer) and B as nodes, each with the other's
/// credentials and fingerprint (an offer/answer done before anything is
/// sent), started at `t0`.
pub fn offer_answer(t0: Instant, a: Session, b: Session) -> (SessionNode, SessionNode) {
    let mut na = SessionNode::new("A", a, true);
    let mut nb = SessionNode::new("B", b, false);
    let (ca, cb) = (na.credentials(), nb.credentials());
    na.apply(t0, cb);
    nb.apply(t0, ca);
    assert!(na.signal_errors.is_empty() && nb.signal_errors.is_empty());
    na.start(t0);
    nb.start(t0);
    (na, nb)
}

/// A TURN server (answering STUN Binding too) on a public IP, relaying from
/// the same IP.
pub struct TurnNode {
    pub server: TurnServer<StaticUsers>,
}

impl TurnNode {
    /// The server at [`SERVER_IP`]: users alice/secret and bob/builder,
    /// relayed ports 50000-50999. Peer policy: the secure default plus the
    /// server's own IP, so that two allocations of this server can relay to
    /// each other (relay-to-relay; the default refuses the server's own
    /// addresses as peers).
    pub fn new(t0: Instant) -> Self {
        let (own, own6) = (ip(SERVER_IP), ip(SERVER_IP6));
        let mut config = ServerConfig::new("sim.example");
        config.rng_seed = Some(99);
        config.other_address = Some(sa(SERVER_OTHER));
        config.peer_policy = PeerPolicy::new()
            .allow(Cidr::host(own))
            .allow(Cidr::host(own6));
        config.relayed_ips = vec![own, own6];
        config.relayed_ports = 50000..=50999;
        let users = StaticUsers::new()
            .with_user("alice", "secret")
            .with_user("bob", "builder");
        TurnNode {
            server: TurnServer::new(config, users, (t0, SystemTime::UNIX_EPOCH)),
        }
    }
}

impl Node for TurnNode {
    fn handle_input(&mut self, now: Instant, d: p2p_netsim::Datagram<'_>) {
        let transport = match d.transport {
            p2p_netsim::Transport::Udp => Transport::Udp,
            _ => Transport::Tcp,
        };
        let _ = self.server.handle_input(
            now,
            p2p_turn::Datagram::new(transport, d.source, d.destination, d.contents),
        );
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.server.handle_timeout(now);
    }

    /// Relayed sockets "bind" at once: the virtual network needs none.
    fn poll_transmit(&mut self, now: Instant) -> Option<p2p_netsim::Transmit> {
        while let Some(o) = self.server.poll_output() {
            match o {
                ServerOutput::Transmit(t) => {
                    return Some(on_the_wire(
                        t.transport,
                        t.source,
                        t.destination,
                        t.contents,
                    ))
                }
                ServerOutput::Socket(
                    SocketRequest::BindUdp { relayed: a }
                    | SocketRequest::ReserveUdp { reserved: a }
                    | SocketRequest::ListenTcp { relayed: a },
                ) => self.server.bind_result(now, a, true),
                _ => {}
            }
        }
        None
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.server.poll_timeout()
    }
}

/// A transmit of the session or the TURN server as the virtual network
/// carries it (TLS travels as TCP).
fn on_the_wire(
    transport: Transport,
    source: SocketAddr,
    destination: SocketAddr,
    contents: Vec<u8>,
) -> p2p_netsim::Transmit {
    let transport = match transport {
        Transport::Udp => p2p_netsim::Transport::Udp,
        _ => p2p_netsim::Transport::Tcp,
    };
    p2p_netsim::Transmit::new(transport, source, destination, contents)
}

// ------------------------------------------------------------------ placements

/// Where a peer sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// A public address, no NAT, no firewall.
    Public,
    /// Behind its own NAT with this (mapping, filtering).
    Nat(Behaviour, Behaviour),
    /// (Peer B only) on peer A's LAN, behind the same NAT; A must be `Nat`.
    SameLanAsA,
    /// A public address behind a firewall that drops all UDP: TURN over TCP.
    UdpBlocked,
    /// IPv6 only, a global address, no firewall.
    V6Public,
    /// IPv6 only, behind a home router's RFC 6092 stateful firewall: no
    /// NAT66, address-and-port-dependent filtering (what Linux conntrack
    /// does with `ESTABLISHED,RELATED`).
    V6Firewall,
    /// A dual-stack home router: IPv4 behind its NAT (EIM, APDF), IPv6
    /// behind its firewall (as [`Placement::V6Firewall`]).
    DualStack,
    /// A public address behind a firewall that drops all UDP and lets TCP
    /// connections out, none in: TURN over TCP, and ICE-TCP's active
    /// candidate when the run asks for ICE-TCP.
    TcpOutOnly,
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Public => f.write_str("public"),
            Placement::Nat(m, fl) => write!(f, "{}/{}", m.mapping_name(), fl.filtering_name()),
            Placement::SameLanAsA => f.write_str("same LAN"),
            Placement::UdpBlocked => f.write_str("UDP blocked"),
            Placement::V6Public => f.write_str("IPv6 public"),
            Placement::V6Firewall => f.write_str("IPv6 firewall"),
            Placement::DualStack => f.write_str("dual-stack EIM/APDF + IPv6 firewall"),
            Placement::TcpOutOnly => f.write_str("UDP blocked, TCP out only"),
        }
    }
}

/// The path a connection ends on, named by its "least direct" end as seen
/// by A: relay if either end is relayed, else prflx if either end is
/// peer-reflexive, else srflx if either end is server-reflexive, else host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathKind {
    Host,
    Srflx,
    Prflx,
    Relay,
}

impl PathKind {
    pub fn of(local: CandidateKind, remote: CandidateKind) -> PathKind {
        let k = [local, remote];
        if k.contains(&CandidateKind::Relayed) {
            PathKind::Relay
        } else if k.contains(&CandidateKind::PeerReflexive) {
            PathKind::Prflx
        } else if k.contains(&CandidateKind::ServerReflexive) {
            PathKind::Srflx
        } else {
            PathKind::Host
        }
    }
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathKind::Host => "host",
            PathKind::Srflx => "srflx",
            PathKind::Prflx => "prflx",
            PathKind::Relay => "relay",
        })
    }
}

pub fn kind_name(k: CandidateKind) -> &'static str {
    k.sdp_name()
}

// ------------------------------------------------------------------ the harness

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct Opts {
    pub seed: u64,
    /// One-way delay of the signalling channel.
    pub signaling_delay: Duration,
    /// Every host's access link.
    pub link: LinkConfig,
    pub ice_a: IceConfig,
    pub ice_b: IceConfig,
    /// Port allocation of every NAT.
    pub port_allocation: PortAllocation,
    /// Candidates of these kinds are signalled this much later (a better
    /// path appearing late); end-of-candidates waits for them.
    pub hold_back: Option<(Duration, Vec<CandidateKind>)>,
    /// Give up connecting after this much simulated time.
    pub max_connect: Duration,
    /// ICE-TCP: every host also has a passive TCP candidate (port + 2000)
    /// and an active one.
    pub ice_tcp: bool,
    /// Allocations over IPv4 ask for an IPv6 relayed address too (RFC 8656
    /// ADDITIONAL-ADDRESS-FAMILY).
    pub dual_family: bool,
    /// Whether B has the TURN server (A always has).
    pub turn_b: bool,
    /// Hard-NAT traversal on both sides (`SessionConfig::hard_nat`; the
    /// harness signals the mapping behaviours as if the token were agreed).
    pub hard_nat: bool,
    /// Whether the mapping behaviours reach the peer (false: as when the
    /// ICE option token is not agreed).
    pub nat_signals: bool,
    /// The router of A's NAT (0) or B's (1) serves a port-mapping
    /// protocol; when either does, both sessions ask their router.
    pub router_help: [Option<RouterHelp>; 2],
}

/// A port-mapping protocol a router serves (miniupnpd's two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterHelp {
    /// PCP (RFC 6887), and NAT-PMP for older clients.
    Pcp,
    /// NAT-PMP (RFC 6886) only: a PCP client falls back to it.
    NatPmp,
}

impl RouterHelp {
    /// The router's service on `gateway`.
    pub fn service(self, gateway: IpAddr) -> PortMapService {
        PortMapService {
            pcp: self == RouterHelp::Pcp,
            ..PortMapService::new(gateway)
        }
    }
}

impl fmt::Display for RouterHelp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouterHelp::Pcp => "PCP",
            RouterHelp::NatPmp => "NAT-PMP",
        })
    }
}

/// The LAN address of A's (0) or B's (1) router.
pub fn gateway(side: usize) -> IpAddr {
    ip(if side == 0 { "10.0.1.1" } else { "10.0.2.1" })
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            seed: 1,
            signaling_delay: Duration::from_millis(50),
            link: LinkConfig::default(),
            ice_a: IceConfig::controlling(),
            ice_b: IceConfig::controlled(),
            port_allocation: PortAllocation::Preserving,
            hold_back: None,
            max_connect: Duration::from_secs(60),
            ice_tcp: false,
            dual_family: false,
            turn_b: true,
            router_help: [None, None],
            hard_nat: false,
            nat_signals: true,
        }
    }
}

/// Two sessions, a TURN server and the signalling channel between them.
pub struct Pair {
    pub sim: Sim,
    pub a: HostId,
    pub b: HostId,
    pub server: HostId,
    pub nat_a: Option<NatId>,
    pub nat_b: Option<NatId>,
    pub opts: Opts,
    /// When the last held-back candidate of each side is due (end-of-
    /// candidates must not overtake it).
    last_due: [Option<Instant>; 2],
    /// Signalling sent: (at, from A?, signal).
    pub signals: Vec<(Instant, bool, Signal)>,
}

impl Pair {
    pub fn new(a: Placement, b: Placement, opts: Opts) -> Pair {
        assert!(a != Placement::SameLanAsA, "A cannot be on its own LAN");
        let t0 = Instant::now();
        let mut sim = Sim::new(t0, opts.seed);
        sim.set_default_link(opts.link.clone());
        let server = sim.add_host(
            [ip(SERVER_IP), ip(SERVER_IP6), sa(SERVER_OTHER).ip()],
            Realm::Public,
            TurnNode::new(t0),
        );

        let mut nat_a = None;
        let mut nat_b = None;
        let nat = |sim: &mut Sim, exts: &[&str], m: Behaviour, f: Behaviour| {
            let mut c = NatConfig::new(ip(exts[0]), m, f);
            c.external_ips = exts.iter().map(|e| ip(e)).collect();
            c.port_allocation = opts.port_allocation;
            sim.add_nat(c)
        };
        let helped = opts.router_help;
        let helped_nat = |sim: &mut Sim, ext: &str, m: Behaviour, f: Behaviour, side: usize| {
            let mut c = NatConfig::new(ip(ext), m, f);
            c.port_allocation = opts.port_allocation;
            c.port_mapping = helped[side].map(|h| h.service(gateway(side)));
            sim.add_nat(c)
        };
        // (host addresses, realm, TURN transport), for A (0) or B (1).
        let mut place = |sim: &mut Sim, p: Placement, side: usize| {
            let n = |v4: &str, v6: &str| {
                let port = 5000 + 1000 * side as u16;
                let v4 = SocketAddr::new(ip(v4), port);
                let v6 = SocketAddr::new(ip(v6), port);
                (v4, v6)
            };
            let (ext, lan, v6) = if side == 0 {
                ("198.51.100.1", "10.0.1.2", "2001:db8:1::2")
            } else {
                ("198.51.100.2", "10.0.2.2", "2001:db8:2::2")
            };
            match p {
                Placement::Public => {
                    let a = if side == 0 {
                        "198.51.100.10"
                    } else {
                        "198.51.100.20"
                    };
                    (vec![n(a, v6).0], Realm::Public, Transport::Udp)
                }
                Placement::Nat(m, f) => {
                    let id = helped_nat(sim, ext, m, f, side);
                    if side == 0 {
                        nat_a = Some(id)
                    } else {
                        nat_b = Some(id)
                    }
                    (vec![n(lan, v6).0], Realm::Nat(id), Transport::Udp)
                }
                Placement::SameLanAsA => {
                    let id = nat_a.expect("same LAN needs A behind a NAT");
                    nat_b = Some(id);
                    (vec![sa("10.0.1.3:6000")], Realm::Nat(id), Transport::Udp)
                }
                Placement::UdpBlocked => {
                    let a = if side == 0 {
                        "192.0.2.10"
                    } else {
                        "192.0.2.20"
                    };
                    let realm = Realm::Firewall(Firewall {
                        udp_blocked: true,
                        ..Firewall::default()
                    });
                    (vec![n(a, v6).0], realm, Transport::Tcp)
                }
                Placement::V6Public => (vec![n(lan, v6).1], Realm::Public, Transport::Udp),
                Placement::TcpOutOnly => {
                    let a = if side == 0 {
                        "192.0.2.10"
                    } else {
                        "192.0.2.20"
                    };
                    let realm = Realm::Firewall(Firewall {
                        udp_blocked: true,
                        tcp_out_only: true,
                    });
                    (vec![n(a, v6).0], realm, Transport::Tcp)
                }
                Placement::V6Firewall | Placement::DualStack => {
                    // The host's own IPv6 address is the router's "external"
                    // one: no translation, the filter alone.
                    let (m, f) = (
                        Behaviour::EndpointIndependent,
                        Behaviour::AddressAndPortDependent,
                    );
                    let (hosts, exts) = if p == Placement::DualStack {
                        (vec![n(lan, v6).0, n(lan, v6).1], vec![ext, v6])
                    } else {
                        (vec![n(lan, v6).1], vec![v6])
                    };
                    let id = nat(sim, &exts, m, f);
                    if side == 0 {
                        nat_a = Some(id)
                    } else {
                        nat_b = Some(id)
                    }
                    (hosts, Realm::Nat(id), Transport::Udp)
                }
            }
        };
        let (ice_tcp, dual_family, hard_nat) = (opts.ice_tcp, opts.dual_family, opts.hard_nat);
        let (addr_a, realm_a, tr_a) = place(&mut sim, a, 0);
        let (addr_b, realm_b, tr_b) = place(&mut sim, b, 1);

        // With router help in the run, both sides ask their router (as
        // `p2p connect` does by default); a router without the service
        // answers nothing.
        let ask = opts.router_help.iter().any(Option::is_some);
        let nat_side = [
            matches!(a, Placement::Nat(..)),
            matches!(b, Placement::Nat(..)),
        ];
        let session = |ice: &IceConfig,
                       hosts: &[SocketAddr],
                       tr: Transport,
                       user: &str,
                       pw: &str,
                       seed: u64,
                       with_turn: bool,
                       side: usize| {
            let mut c = SessionConfig::new(ice.clone().with_seed(seed));
            c.hosts = hosts.to_vec();
            if ask && nat_side[side] {
                c.port_mapping = hosts
                    .iter()
                    .filter(|h| h.is_ipv4())
                    .map(|h| (*h, gateway(side)))
                    .collect();
            }
            if ice_tcp {
                for h in hosts {
                    let passive = SocketAddr::new(h.ip(), h.port() + 2000);
                    c.tcp_hosts.push((passive, p2p_ice::TcpType::Passive));
                    c.tcp_hosts.push((*h, p2p_ice::TcpType::Active));
                }
            }
            let v4 = hosts.iter().any(SocketAddr::is_ipv4);
            let v6 = hosts.iter().any(SocketAddr::is_ipv6);
            c.stun_servers = [(v4, server_addr()), (v6, server_addr6())]
                .into_iter()
                .filter_map(|(has, s)| has.then_some(s))
                .collect();
            // One allocation, over IPv4 when the host has it.
            let turn = if v4 { server_addr() } else { server_addr6() };
            if with_turn {
                let t = TurnServerConfig::new(turn, tr, user, pw).with_dual_family(dual_family);
                c.turn_servers = vec![t];
            }
            c.rng_seed = Some(seed);
            c.hard_nat = hard_nat;
            Session::new(c).expect("session")
        };
        let sa_ = session(
            &opts.ice_a,
            &addr_a,
            tr_a,
            "alice",
            "secret",
            opts.seed * 1000 + 1,
            true,
            0,
        );
        let sb_ = session(
            &opts.ice_b,
            &addr_b,
            tr_b,
            "bob",
            "builder",
            opts.seed * 1000 + 2,
            opts.turn_b,
            1,
        );
        let (na, nb) = offer_answer(t0, sa_, sb_);
        let a = sim.add_host(addr_a.iter().map(SocketAddr::ip), realm_a, na);
        let b = sim.add_host(addr_b.iter().map(SocketAddr::ip), realm_b, nb);
        let mut pair = Pair {
            sim,
            a,
            b,
            server,
            nat_a,
            nat_b,
            opts,
            last_due: [None, None],
            signals: Vec::new(),
        };
        pair.relay_signals();
        pair
    }

    pub fn node_a(&self) -> &SessionNode {
        self.sim.node::<SessionNode>(self.a)
    }

    pub fn node_b(&self) -> &SessionNode {
        self.sim.node::<SessionNode>(self.b)
    }

    pub fn node_a_mut(&mut self) -> &mut SessionNode {
        self.sim.node_mut::<SessionNode>(self.a)
    }

    pub fn node_b_mut(&mut self) -> &mut SessionNode {
        self.sim.node_mut::<SessionNode>(self.b)
    }

    pub fn turn(&self) -> &TurnNode {
        self.sim.node::<TurnNode>(self.server)
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }

    /// Move what each side signalled to the other, due after the delay.
    pub fn relay_signals(&mut self) {
        let now = self.sim.now();
        for from_a in [true, false] {
            let (from, to, side) = if from_a {
                (self.a, self.b, 0)
            } else {
                (self.b, self.a, 1)
            };
            let out = std::mem::take(&mut self.sim.node_mut::<SessionNode>(from).outbox);
            for s in out {
                let mut due = now + self.opts.signaling_delay;
                match &s {
                    Signal::Candidate(c) => {
                        if let Some((extra, kinds)) = &self.opts.hold_back {
                            if candidate_kind(c).is_some_and(|k| kinds.contains(&k)) {
                                due += *extra;
                                self.last_due[side] = Some(due);
                            }
                        }
                    }
                    Signal::EndOfCandidates => {
                        if let Some(l) = self.last_due[side] {
                            due = due.max(l);
                        }
                    }
                    Signal::Credentials(..) => self.last_due[side] = None,
                    Signal::Nat(_) | Signal::Predict(_) if !self.opts.nat_signals => continue,
                    Signal::Nat(_) | Signal::Predict(_) => {}
                }
                self.signals.push((now, from_a, s.clone()));
                self.sim.node_mut::<SessionNode>(to).deliver_at(due, s);
            }
        }
    }

    /// One simulation step, then signalling.
    pub fn step(&mut self) -> bool {
        let progressed = self.sim.step();
        self.relay_signals();
        progressed
    }

    /// Step until `pred` holds; the simulated time it took, or a report.
    pub fn run_until(
        &mut self,
        mut pred: impl FnMut(&Pair) -> bool,
        max: Duration,
    ) -> Result<Duration, String> {
        let start = self.sim.now();
        let mut steps = 0u32;
        loop {
            if pred(self) {
                return Ok(self.sim.now() - start);
            }
            if self.sim.now() - start > max || steps > 2_000_000 {
                return Err(self.report(&format!(
                    "not done after {:?} ({steps} steps)",
                    self.sim.now() - start
                )));
            }
            if !self.step() {
                return Err(self.report("network idle"));
            }
            steps += 1;
        }
    }

    /// Run for at least `d` of simulated time (signalling included); the
    /// clock stops at the first event at or after the end.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.sim.now() + d;
        while self.sim.now() < end {
            if !self.step() {
                break;
            }
        }
    }

    /// Both sides have a selected path and have received data.
    pub fn connected(&self) -> bool {
        let (a, b) = (self.node_a(), self.node_b());
        a.session.selected_path().is_some()
            && b.session.selected_path().is_some()
            && !a.received.is_empty()
            && !b.received.is_empty()
    }

    /// A readable account of a run that went wrong.
    pub fn report(&self, why: &str) -> String {
        let mut s = format!("{why} at {:?}\n", self.sim.elapsed());
        for n in [self.node_a(), self.node_b()] {
            s += &format!(
                "--- {} state {} errors {:?}\n{}",
                n.name,
                n.session.state(),
                n.signal_errors,
                n.session.agent().stats()
            );
            for (t, e) in &n.events {
                if !matches!(e, SessionEvent::Channel(ChannelEvent::Message { .. })) {
                    s += &format!("  {:?} {e:?}\n", *t - self.sim.t0());
                }
            }
        }
        let drops = self.sim.drops();
        s += &format!("--- {} drops, last ones:\n", drops.len());
        for d in drops.iter().rev().take(20).rev() {
            s += &format!("  {d}\n");
        }
        s
    }
}

/// What [`run_pair`] found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The final selected pair at A (local, remote).
    pub a: (CandidateKind, CandidateKind),
    /// The final selected pair at B (local, remote).
    pub b: (CandidateKind, CandidateKind),
    /// The path kind at A's final pair.
    pub path: PathKind,
    /// Simulated time until both sides had a selected pair.
    pub connect: Duration,
    /// Simulated time until data had crossed both ways.
    pub data: Duration,
    /// Connectivity checks sent by A and by B.
    pub checks: (u32, u32),
    /// `SelectedPair` events at A (more than one: the path switched).
    pub selections_a: usize,
    /// The path A's first selected pair was on (relay first, upgrade
    /// later: it may be worse than the final one).
    pub first_path: PathKind,
    /// Simulated time until A selected its final pair.
    pub final_at: Duration,
    /// A's selected pair runs over TCP (ICE-TCP).
    pub tcp: bool,
    /// Birthday probing: requests sent by the side that probed random
    /// ports and by the side that opened sockets (0, 0: no probing).
    pub probes: (u32, u32),
    /// Simulated time until A selected its final pair, when it replaced
    /// another (birthday probing turned a relayed path direct).
    pub upgraded: Option<Duration>,
}

/// Connect peer A (controlling) at `a` with peer B (controlled) at `b`:
/// run until both have a selected pair and data crossed both ways, then
/// 15 s more for the checks to finish (a better pair may be nominated
/// late), and report the path they ended on.
pub fn run_pair(a: Placement, b: Placement, opts: Opts) -> Outcome {
    let max = opts.max_connect;
    let mut p = Pair::new(a, b, opts);
    let data = p
        .run_until(Pair::connected, max)
        .unwrap_or_else(|e| panic!("{a} vs {b}: {e}"));
    let t0 = p.sim.t0();
    let connect = match (p.node_a().first_selected, p.node_b().first_selected) {
        (Some(x), Some(y)) => x.max(y) - t0,
        _ => unreachable!("connected"),
    };
    p.run_for(Duration::from_secs(15));
    let (na, nb) = (p.node_a(), p.node_b());
    let ka = na
        .selected_kinds()
        .unwrap_or_else(|| panic!("{a} vs {b}: A lost its path\n{}", p.report("settle")));
    let kb = nb
        .selected_kinds()
        .unwrap_or_else(|| panic!("{a} vs {b}: B lost its path\n{}", p.report("settle")));
    assert!(
        na.signal_errors.is_empty() && nb.signal_errors.is_empty(),
        "{a} vs {b}: signalling errors {:?} {:?}",
        na.signal_errors,
        nb.signal_errors
    );
    // Data kept flowing while settling: the last ping each side received
    // is recent.
    let now = p.sim.now();
    for n in [na, nb] {
        let last = n.received.last().map(|(t, _)| *t).unwrap_or(t0);
        assert!(
            now - last < Duration::from_secs(1),
            "{a} vs {b}: {} received no data for {:?}\n{}",
            n.name,
            now - last,
            p.report("data stopped")
        );
    }
    let probes = [na, nb].iter().fold((0, 0), |acc, n| {
        let hard = n
            .has_event(|e| {
                matches!(
                    e,
                    SessionEvent::HardNat(HardNatEvent::Probing { hard: true })
                )
            })
            .is_some();
        let sent = n
            .events
            .iter()
            .find_map(|(_, e)| match e {
                SessionEvent::HardNat(
                    HardNatEvent::Found { sent, .. } | HardNatEvent::GaveUp { sent },
                ) => Some(*sent),
                _ => None,
            })
            .unwrap_or(0);
        if hard {
            (acc.0, acc.1 + sent)
        } else {
            (acc.0 + sent, acc.1)
        }
    });
    let upgraded = (na.selections() > 1)
        .then(|| {
            na.events
                .iter()
                .rev()
                .find(|(_, e)| matches!(e, SessionEvent::SelectedPair { .. }))
                .map(|(t, _)| *t - t0)
        })
        .flatten();
    Outcome {
        probes,
        upgraded,
        a: ka,
        b: kb,
        path: PathKind::of(ka.0, ka.1),
        connect,
        data,
        checks: (na.checks_sent(), nb.checks_sent()),
        selections_a: na.selections(),
        first_path: na
            .path_changes()
            .first()
            .map_or(PathKind::Relay, |c| PathKind::of(c.1, c.2)),
        final_at: na
            .path_changes()
            .last()
            .map_or(Duration::ZERO, |c| c.0 - t0),
        tcp: na
            .session
            .agent()
            .selected_pair()
            .is_some_and(|(l, _)| l.transport() == Transport::Tcp),
    }
}

/// `IceState`s at which a session has a usable path.
pub fn is_up(s: IceState) -> bool {
    matches!(s, IceState::Connected | IceState::Completed)
}
