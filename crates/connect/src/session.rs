//! The sans-IO `Session`: one ICE agent, its STUN servers and its TURN
//! allocations, behind one datagram interface.
//!
//! The agent knows STUN only. The session owns a [`TurnClient`] per TURN
//! server; when an allocation succeeds its relayed address becomes a local
//! candidate of the agent, and every transmit the agent makes from that
//! address is wrapped (a Send indication, or ChannelData once a channel is
//! bound) and sent to the TURN server instead. What arrives from a TURN
//! server is unwrapped and handed to the agent as if it had arrived on the
//! relayed address. Application data travels the same way, so the caller
//! sees one path whatever its type.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2p_ice::{
    Candidate, CandidateKind, IceAgent, IceConfig, IceError, IceEvent, IceOutput, IceState,
};
use p2p_proto::{Handled, Machine};
use p2p_turn::{ClientConfig, ClientEvent, ClientOutput, ClientState, TurnClient};

pub use p2p_turn::Transport;

/// A TURN server the session allocates on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnServerConfig {
    /// The server's address.
    pub server: SocketAddr,
    /// How to reach it: UDP, TCP or TLS (the relayed side is always UDP).
    pub transport: Transport,
    /// Long-term credential username (or REST `expiry:user`).
    pub username: String,
    /// Long-term credential password.
    pub password: String,
}

/// What a [`Session`] is made of.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The ICE agent's configuration (role, timers, relay-only policy, seed).
    pub ice: IceConfig,
    /// Local host addresses (bound sockets) to use as host candidates.
    pub hosts: Vec<SocketAddr>,
    /// STUN servers for server-reflexive candidates.
    pub stun_servers: Vec<SocketAddr>,
    /// TURN servers for relayed candidates.
    pub turn_servers: Vec<TurnServerConfig>,
    /// Seed for the TURN clients' transaction ids; `None` for OS entropy.
    pub rng_seed: Option<u64>,
}

impl SessionConfig {
    /// A configuration with the given ICE settings and nothing else.
    pub fn new(ice: IceConfig) -> Self {
        SessionConfig {
            ice,
            hosts: Vec::new(),
            stun_servers: Vec::new(),
            turn_servers: Vec::new(),
            rng_seed: None,
        }
    }
}

/// A datagram that arrived on one of the caller's sockets.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// UDP, or the TCP/TLS connection to a TURN server.
    pub transport: Transport,
    /// The local address it arrived on (a host socket).
    pub local: SocketAddr,
    /// Where it came from.
    pub remote: SocketAddr,
    /// The payload.
    pub contents: &'a [u8],
}

/// A datagram to send from one of the caller's sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// UDP, or the TCP/TLS connection to a TURN server (`destination`).
    pub transport: Transport,
    /// The local socket to send from.
    pub source: SocketAddr,
    /// Where to.
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
}

/// One end of the selected path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathEnd {
    /// host, srflx, prflx or relay.
    pub kind: CandidateKind,
    /// The candidate's address.
    pub address: SocketAddr,
}

/// What the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A local candidate to send to the peer (its `Display` is the SDP
    /// `candidate:` value, written by p2p-sdp).
    LocalCandidate(Candidate),
    /// Every local candidate is out: send end-of-candidates.
    GatheringComplete,
    /// The ICE state changed.
    StateChanged(IceState),
    /// A (new) path is selected.
    SelectedPair {
        /// Our end.
        local: PathEnd,
        /// The peer's end.
        remote: PathEnd,
    },
    /// A TURN allocation succeeded.
    TurnAllocated {
        /// The TURN server.
        server: SocketAddr,
        /// The relayed address.
        relayed: SocketAddr,
    },
    /// A TURN allocation failed (bad credentials, quota, no answer ...).
    TurnFailed {
        /// The TURN server.
        server: SocketAddr,
        /// The STUN error code, `None` when the server never answered.
        code: Option<u16>,
        /// What went wrong.
        reason: String,
    },
    /// Consent was lost on the selected path (RFC 7675).
    ConsentLost,
    /// Application data from the peer.
    Data(Vec<u8>),
    /// [`Session::close`] is done: every TURN server confirmed the deletion
    /// of its allocation, or [`CLOSE_TIMEOUT`] passed. Nothing more will be
    /// sent; the caller may drop the session and its sockets.
    Closed,
}

/// How long [`Session::close`] waits for the TURN servers to confirm the
/// deletion of the allocations before it reports [`SessionEvent::Closed`]
/// anyway (an allocation not deleted expires by itself at the end of its
/// lifetime).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a command was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The ICE agent refused it.
    #[error("ice: {0}")]
    Ice(#[from] p2p_ice::IceError),
    /// No path is selected yet.
    #[error("not connected")]
    NotConnected,
    /// The relay refused to carry the data.
    #[error("relay: {0}")]
    Relay(#[from] p2p_turn::ClientError),
    /// [`Session::close`] was called.
    #[error("the session is closed")]
    Closed,
}

#[derive(Debug)]
struct Relay {
    config: TurnServerConfig,
    local: SocketAddr,
    client: TurnClient,
    relayed: Option<SocketAddr>,
    /// Left out of the ICE generation a restart began until the restart's
    /// probe shows the allocation alive (see [`Session::restart`]).
    withheld: bool,
    permitted: HashSet<IpAddr>,
    /// Peers the server refused permissions for (403).
    refused: HashSet<IpAddr>,
    done: bool,
    /// A restart's re-allocation on behalf of relay `k`: if the server
    /// grants it, relay `k`'s allocation is gone (the NAT mapping changed,
    /// so the server saw a new 5-tuple) and this one replaces it; a 437
    /// (allocation mismatch) says relay `k` is still alive on our 5-tuple.
    probe_for: Option<usize>,
    /// Replaced or given up: not fed, not driven, not demultiplexed to.
    retired: bool,
}

impl Relay {
    fn new(config: TurnServerConfig, local: SocketAddr, seed: Option<u64>) -> Relay {
        let mut cc = ClientConfig::new(local, config.server, &config.username, &config.password);
        cc.transport = config.transport;
        cc.rng_seed = seed;
        Relay {
            config,
            local,
            client: TurnClient::new(cc),
            relayed: None,
            withheld: false,
            permitted: HashSet::new(),
            refused: HashSet::new(),
            done: false,
            probe_for: None,
            retired: false,
        }
    }

    /// The relayed candidate for one of this allocation's addresses (its
    /// related address is the server-reflexive one the server saw).
    fn candidate(&self, relayed: SocketAddr) -> Candidate {
        let related = self.client.mapped_address().or(Some(self.local));
        Candidate::relayed(relayed, related, self.config.server.ip())
    }

    /// Whether a datagram from the network belongs to this relay's server
    /// connection: same server address, local socket and transport.
    fn owns(&self, d: &Datagram<'_>) -> bool {
        !self.retired
            && self.config.server == d.remote
            && self.local == d.local
            && self.config.transport == d.transport
    }
}

/// ICE agent + STUN + TURN clients + demultiplexing, sans-IO.
///
/// Drive contract (as for every machine of this stack): call
/// [`Session::start`] once, then after every `handle_*` call or command drain
/// [`Session::poll_transmit`] (send each from its `source` socket), then
/// [`Session::poll_timeout`] (call [`Session::handle_timeout`] then), then
/// [`Session::poll_event`]. Do not make a second call before draining.
#[derive(Debug)]
pub struct Session {
    agent: IceAgent,
    /// Host sockets and STUN servers, given to the agent at [`Session::start`].
    hosts: Vec<SocketAddr>,
    stun_servers: Vec<SocketAddr>,
    relays: Vec<Relay>,
    by_relayed: HashMap<SocketAddr, usize>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SessionEvent>,
    gathering_ended: bool,
    started: bool,
    now: Option<Instant>,
    rng_seed: Option<u64>,
    /// [`Session::close`] was called: when to give up waiting for the
    /// TURN servers.
    closing: Option<Instant>,
    /// [`SessionEvent::Closed`] was queued.
    closed: bool,
}

impl Session {
    /// A session; nothing is sent before [`Session::start`].
    pub fn new(config: SessionConfig) -> Result<Self, SessionError> {
        let agent = IceAgent::new(config.ice.clone());
        let (hosts, stun_servers) = if config.ice.relay_only {
            (Vec::new(), Vec::new())
        } else {
            (config.hosts.clone(), config.stun_servers.clone())
        };
        let mut relays = Vec::new();
        for (i, t) in config.turn_servers.iter().enumerate() {
            // Reach the TURN server from the first host socket of its family.
            let Some(local) = config
                .hosts
                .iter()
                .find(|h| h.is_ipv4() == t.server.is_ipv4())
                .copied()
            else {
                continue;
            };
            let seed = config.rng_seed.map(|s| s.wrapping_add(i as u64 + 1));
            relays.push(Relay::new(t.clone(), local, seed));
        }
        Ok(Session {
            agent,
            hosts,
            stun_servers,
            relays,
            by_relayed: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            gathering_ended: false,
            started: false,
            now: None,
            rng_seed: config.rng_seed,
            closing: None,
            closed: false,
        })
    }

    /// Start gathering (STUN requests, TURN allocations) and checking.
    pub fn start(&mut self, now: Instant) {
        if self.started || self.closing.is_some() {
            return;
        }
        self.started = true;
        self.now = Some(now);
        for host in &self.hosts {
            // A host given twice is redundant: the agent keeps one.
            let _ = self.agent.add_local_candidate(now, Candidate::host(*host));
        }
        for s in &self.stun_servers {
            self.agent.add_stun_server(now, *s);
        }
        for r in &mut self.relays {
            // A TURN client starts allocating at its first handle_timeout.
            r.client.handle_timeout(now);
        }
        self.agent.handle_timeout(now);
        self.pump(now);
    }

    /// Our ICE username fragment and password, to send to the peer.
    pub fn local_credentials(&self) -> (&str, &str) {
        let c = self.agent.local_credentials();
        (&c.ufrag, &c.pwd)
    }

    /// The peer's ICE username fragment and password (checks may start
    /// from `now` on).
    pub fn set_remote_credentials(
        &mut self,
        now: Instant,
        ufrag: &str,
        pwd: &str,
    ) -> Result<(), SessionError> {
        self.agent.set_remote_credentials(now, ufrag, pwd)?;
        Ok(())
    }

    /// A candidate the peer signalled. Its `candidate:` line is parsed once,
    /// by the caller, with p2p-sdp, and converted with
    /// [`Candidate::from_sdp`] (which says when its address is an mDNS name
    /// to resolve first).
    pub fn add_remote_candidate(
        &mut self,
        now: Instant,
        candidate: Candidate,
    ) -> Result<(), SessionError> {
        self.agent.add_remote_candidate(now, candidate)?;
        self.permit_remotes(now);
        self.pump(now);
        Ok(())
    }

    /// The peer signalled end-of-candidates.
    pub fn end_of_remote_candidates(&mut self, now: Instant) {
        self.agent.end_of_remote_candidates();
        self.pump(now);
    }

    /// ICE restart: new local credentials (send them to the peer), new checks;
    /// the current path keeps carrying data until a new one is selected.
    ///
    /// A restart gathers again, since a network change may have changed
    /// the NAT mapping: the STUN servers are asked for the server-reflexive
    /// address again, and every TURN allocation is checked by allocating
    /// again from the same socket. Until that probe is answered the old
    /// relayed candidate is withheld from the new generation (not
    /// signalled, not checked; a path through it keeps carrying data). The
    /// server answers 437 (allocation mismatch) while the old allocation
    /// lives on our 5-tuple: it is kept and its relayed candidate signalled
    /// again (so is it on any other refusal: the server is up). If it grants
    /// the new one, the old allocation is gone (the server now sees us from
    /// another address): the new relayed candidate replaces the old one. If
    /// the server does not answer at all, the old candidate stays withheld
    /// ([`SessionEvent::TurnFailed`] with no code says so): a dead server's
    /// address is not offered to the peer. Its allocation keeps being
    /// refreshed and is probed again at the next restart. A TURN server
    /// that failed before is tried again.
    /// [`SessionEvent::GatheringComplete`] waits for all of it.
    pub fn restart(&mut self, now: Instant) {
        if self.closing.is_some() {
            return;
        }
        self.now = Some(now);
        // Every allocation is checked or made again (one still being made
        // is waited for), and its relayed candidates are left out of the
        // new generation meanwhile.
        let mut withheld = Vec::new();
        let mut regathering = false;
        for i in 0..self.relays.len() {
            if self.relays[i].retired || self.relays[i].probe_for.is_some() {
                continue;
            }
            let seed = self.next_seed();
            let probing = self
                .relays
                .iter()
                .any(|p| p.probe_for == Some(i) && !p.retired);
            let r = &mut self.relays[i];
            let state = r.client.state();
            if matches!(
                state,
                ClientState::Allocated | ClientState::Failed | ClientState::Closed
            ) {
                regathering = true;
                withheld.extend(
                    r.client
                        .relayed_addresses()
                        .iter()
                        .chain(&r.relayed)
                        .map(|a| (*a, *a)),
                );
            }
            let replacement = match state {
                ClientState::Allocated => {
                    r.withheld = true;
                    (!probing).then(|| {
                        let mut probe = Relay::new(r.config.clone(), r.local, seed);
                        probe.probe_for = Some(i);
                        probe
                    })
                }
                ClientState::Failed | ClientState::Closed => {
                    // Lost or refused before: try again with a new client.
                    r.retired = true;
                    r.done = true;
                    Some(Relay::new(r.config.clone(), r.local, seed))
                }
                _ => {
                    regathering |= !r.done;
                    None
                }
            };
            if let Some(mut relay) = replacement {
                relay.client.handle_timeout(now);
                self.relays.push(relay);
            }
        }
        // Said before the agent restarts, so that it does not end gathering.
        if regathering {
            self.agent.expect_more_local_candidates();
            self.gathering_ended = false;
        }
        self.agent.restart_withholding(now, &withheld);
        self.agent.handle_timeout(now);
        self.pump(now);
    }

    /// The seed of the next TURN client created (by a restart).
    fn next_seed(&self) -> Option<u64> {
        self.rng_seed
            .map(|s| s.wrapping_add(0x1000 + self.relays.len() as u64))
    }

    /// The ICE state.
    pub fn state(&self) -> IceState {
        self.agent.state()
    }

    /// The selected path, if any.
    pub fn selected_path(&self) -> Option<(PathEnd, PathEnd)> {
        self.agent.selected_pair().map(|(l, r)| (end(l), end(r)))
    }

    /// The ICE agent, for statistics and the check list.
    pub fn agent(&self) -> &IceAgent {
        &self.agent
    }

    /// Send application data to the peer over the selected path.
    pub fn send(&mut self, now: Instant, data: &[u8]) -> Result<(), SessionError> {
        if self.closing.is_some() {
            return Err(SessionError::Closed);
        }
        self.agent.send(now, data.to_vec()).map_err(|e| match e {
            IceError::NotConnected => SessionError::NotConnected,
            e => SessionError::Ice(e),
        })?;
        // The data is the agent's last output: a relay's refusal to carry
        // it reaches the caller.
        let (_, routed) = self.drain_agent(now);
        self.pump(now);
        routed
    }

    /// A datagram arrived on one of the caller's sockets.
    pub fn handle_input(&mut self, now: Instant, d: Datagram<'_>) {
        self.now = Some(now);
        // From a TURN server: the client of that server, local socket and
        // transport (two configurations may name one server over UDP and
        // TCP). During a restart an old allocation and its probe share the
        // connection; the probe only takes answers to its own requests.
        let turn = p2p_turn::Datagram::new(d.transport, d.remote, d.local, d.contents);
        for r in self.relays.iter_mut().filter(|r| r.owns(&d)) {
            if r.client.handle_input(now, turn).is_taken() {
                self.pump(now);
                return;
            }
        }
        if self.closing.is_some() {
            return;
        }
        self.agent_input(now, d.remote, d.local, d.contents);
        self.pump(now);
    }

    fn agent_input(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        let input = self
            .agent
            .handle_input(now, p2p_proto::Datagram::udp(source, destination, contents));
        if input == Handled::NotMine && !p2p_stun::is_stun(contents) {
            // The selected pair, or any pair being checked: the controlling
            // peer may send on the pair it nominated before we select it
            // (RFC 8445 §12.2).
            if self.agent.accepts_data(destination, source) {
                self.events.push_back(SessionEvent::Data(contents.to_vec()));
            }
        }
    }

    /// The time asked for by [`Session::poll_timeout`] came.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        if self.closing.is_none() {
            self.agent.handle_timeout(now);
        }
        // Before `start` the TURN clients stay idle (their first
        // handle_timeout starts them).
        let started = self.started;
        for r in self.relays.iter_mut().filter(|r| !r.retired && started) {
            r.client.handle_timeout(now);
        }
        self.pump(now);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When to call [`Session::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let relays = self
            .relays
            .iter()
            .filter(|r| !r.retired)
            .filter_map(|r| r.client.poll_timeout());
        match self.closing {
            Some(deadline) => relays.chain(Some(deadline)).min(),
            None => relays.chain(self.agent.poll_timeout()).min(),
        }
    }

    /// Close the session: delete every TURN allocation (a Refresh with
    /// LIFETIME 0, RFC 8656 §8) so that it stops counting
    /// against the user's quota at once, and stop checking, sending
    /// keepalives and delivering data. An allocation still being made is
    /// deleted as soon as it is granted.
    ///
    /// Keep driving the session (drain the transmits, feed the servers'
    /// answers, call [`Session::handle_timeout`]) until
    /// [`SessionEvent::Closed`]: every server confirmed, or
    /// [`CLOSE_TIMEOUT`] passed. Calling it again does nothing.
    pub fn close(&mut self, now: Instant) {
        if self.closing.is_some() {
            return;
        }
        self.now = Some(now);
        self.closing = Some(now + CLOSE_TIMEOUT);
        for r in self.relays.iter_mut().filter(|r| !r.retired) {
            // Best effort: a request that cannot be encoded leaves the
            // allocation to expire; the timeout ends the wait. One still
            // being granted is deleted by the client once granted.
            let _ = r.client.close(now);
        }
        // Whatever the agent had queued is not sent any more.
        while self.agent.poll_output().is_some() {}
        self.pump(now);
    }

    /// Whether [`SessionEvent::Closed`] was reported.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Every live TURN client has no allocation left (deleted, failed, or
    /// never made).
    fn allocations_gone(&self) -> bool {
        self.relays.iter().filter(|r| !r.retired).all(|r| {
            matches!(
                r.client.state(),
                ClientState::Idle | ClientState::Closed | ClientState::Failed
            )
        })
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Send a transmit of the agent: directly from a host base, or wrapped
    /// through the TURN client that owns its relayed source address.
    fn route(&mut self, now: Instant, t: p2p_proto::Transmit) -> Result<(), SessionError> {
        match self.by_relayed.get(&t.source) {
            None => {
                self.transmits.push_back(Transmit {
                    transport: Transport::Udp,
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents,
                });
                Ok(())
            }
            Some(&i) => {
                if self.relays[i].client.channel(t.destination).is_none() {
                    self.permit(now, i, &[t.destination.ip()])?;
                }
                self.relays[i].client.send_to(t.destination, &t.contents)?;
                Ok(())
            }
        }
    }

    /// Ask relay `i` for permissions to the `ips` it has none for yet. (The
    /// TURN client puts each CreatePermission on the wire before data
    /// queued after it, so a check sent right away is not dropped.)
    fn permit(&mut self, now: Instant, i: usize, ips: &[IpAddr]) -> Result<(), SessionError> {
        let r = &mut self.relays[i];
        let new: Vec<IpAddr> = ips
            .iter()
            .copied()
            .filter(|ip| {
                r.relayed.is_some_and(|a| a.is_ipv4() == ip.is_ipv4())
                    && !r.permitted.contains(ip)
                    && !r.refused.contains(ip)
            })
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        // One request per IP: the server refuses a whole request (403)
        // when one of its peers is forbidden (a private address, say).
        for ip in new {
            r.client.create_permission(now, &[ip])?;
            r.permitted.insert(ip);
        }
        Ok(())
    }

    /// Permissions on every allocation for the peer's candidate IPs, asked
    /// as soon as the candidates are known, so that the peer's checks to our
    /// relayed candidates pass the relay even before our own checks go out.
    fn permit_remotes(&mut self, now: Instant) {
        let ips: Vec<IpAddr> = self
            .agent
            .remote_candidates()
            .iter()
            .map(|c| c.address().ip())
            .collect();
        for i in 0..self.relays.len() {
            let r = &self.relays[i];
            if r.retired || r.client.state() != ClientState::Allocated {
                continue;
            }
            // A refusal (403 for a peer the server will not relay to) comes
            // back as PermissionFailed and is forgotten there.
            let _ = self.permit(now, i, &ips);
        }
    }

    /// Move everything between the agent, the TURN clients and the queues
    /// until nothing moves.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            for i in 0..self.relays.len() {
                // Events first, then transmits (requests before data).
                while let Some(o) = self.relays[i].client.poll_output() {
                    moved = true;
                    match o {
                        ClientOutput::Event(e) => self.turn_event(now, i, e),
                        ClientOutput::Transmit(t) => self.transmits.push_back(Transmit {
                            transport: t.transport,
                            source: t.source,
                            destination: t.destination,
                            contents: t.contents,
                        }),
                        _ => {}
                    }
                }
            }
            if let Some(deadline) = self.closing {
                // Closing: the agent is silent; only the deletions go out.
                if !self.closed && (now >= deadline || self.allocations_gone()) {
                    self.closed = true;
                    self.events.push_back(SessionEvent::Closed);
                }
                if !moved {
                    break;
                }
                continue;
            }
            // A relay that refuses (family mismatch, too large) loses this
            // one datagram; ICE retransmits and fails the pair in time.
            let (drained, _) = self.drain_agent(now);
            moved |= drained;
            if !self.gathering_ended && self.started && self.relays.iter().all(|r| r.done) {
                self.gathering_ended = true;
                self.agent.end_of_local_candidates();
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }

    /// Route the agent's transmits and act on its events, in the order the
    /// agent made them. Returns whether there was any, and the outcome of
    /// routing the last transmit.
    fn drain_agent(&mut self, now: Instant) -> (bool, Result<(), SessionError>) {
        let (mut moved, mut routed) = (false, Ok(()));
        while let Some(out) = self.agent.poll_output() {
            moved = true;
            match out {
                IceOutput::Transmit(t) => routed = self.route(now, t),
                IceOutput::Event(e) => self.ice_event(now, e),
                _ => {}
            }
        }
        (moved, routed)
    }

    fn turn_event(&mut self, now: Instant, i: usize, e: ClientEvent) {
        let server = self.relays[i].config.server;
        if self.relays[i].retired {
            return;
        }
        if self.closing.is_some() {
            // Nothing matters any more: the deletions' outcomes show in the
            // clients' states.
            return;
        }
        if let Some(k) = self.relays[i].probe_for {
            match e {
                ClientEvent::Allocated { .. } => {
                    // The old allocation is gone: this one replaces it.
                    let old: Vec<SocketAddr> = self
                        .by_relayed
                        .iter()
                        .filter(|(_, j)| **j == k)
                        .map(|(a, _)| *a)
                        .collect();
                    for a in old {
                        self.agent.retire_local_candidate(a, a);
                    }
                    self.relays[k].retired = true;
                    self.relays[k].done = true;
                    self.relays[i].probe_for = None;
                }
                ClientEvent::AllocationFailed { code: None, reason } => {
                    // No answer: the server (or the way to it) is down, and
                    // the old allocation with it as far as we can tell.
                    // Its candidate stays withheld.
                    self.relays[i].retired = true;
                    self.relays[i].done = true;
                    self.events.push_back(SessionEvent::TurnFailed {
                        server,
                        code: None,
                        reason: format!("{reason} (checking the allocation at a restart)"),
                    });
                    return;
                }
                ClientEvent::AllocationFailed { code: Some(_), .. } => {
                    // 437: the old allocation lives on our 5-tuple. Any
                    // other refusal (quota, say) still shows the server
                    // up: keep the old allocation, offer its candidate again.
                    self.relays[i].retired = true;
                    self.relays[i].done = true;
                    self.offer_again(now, k);
                    return;
                }
                _ => return,
            }
        }
        match e {
            ClientEvent::Allocated { relayed, .. } => {
                self.relays[i].done = true;
                for addr in relayed {
                    self.relays[i].relayed.get_or_insert(addr);
                    self.by_relayed.insert(addr, i);
                    self.permit_remotes(now);
                    let c = self.relays[i].candidate(addr);
                    if self.agent.add_local_candidate(now, c).is_ok() {
                        self.events.push_back(SessionEvent::TurnAllocated {
                            server,
                            relayed: addr,
                        });
                    }
                }
            }
            ClientEvent::AllocationFailed { code, reason } => {
                let was_allocated = self.relays[i].relayed.is_some();
                self.relays[i].done = true;
                if was_allocated {
                    // A refresh failed: the allocation is lost.
                    let old: Vec<SocketAddr> = self
                        .by_relayed
                        .iter()
                        .filter(|(_, j)| **j == i)
                        .map(|(a, _)| *a)
                        .collect();
                    for a in old {
                        self.agent.retire_local_candidate(a, a);
                    }
                } else {
                    self.events.push_back(SessionEvent::TurnFailed {
                        server,
                        code,
                        reason,
                    });
                }
            }
            ClientEvent::Data { peer, data } => {
                if let Some(relayed) = self.relays[i].relayed {
                    self.agent_input(now, peer, relayed, &data);
                }
            }
            ClientEvent::PermissionFailed { peers, code } => {
                for p in peers {
                    self.relays[i].permitted.remove(&p);
                    if code == Some(403) {
                        // The server will not relay there: do not ask again.
                        self.relays[i].refused.insert(p);
                    }
                }
            }
            _ => {}
        }
    }

    /// Relay `k`'s allocation proved alive after a restart withheld its
    /// relayed candidates: add them to the new generation.
    fn offer_again(&mut self, now: Instant, k: usize) {
        let r = &mut self.relays[k];
        if !r.withheld || r.retired || r.client.state() != ClientState::Allocated {
            return;
        }
        r.withheld = false;
        let r = &self.relays[k];
        for a in r.client.relayed_addresses() {
            let _ = self.agent.add_local_candidate(now, r.candidate(*a));
        }
    }

    fn ice_event(&mut self, now: Instant, e: IceEvent) {
        match e {
            IceEvent::LocalCandidate(c) => self.events.push_back(SessionEvent::LocalCandidate(c)),
            IceEvent::GatheringComplete => self.events.push_back(SessionEvent::GatheringComplete),
            IceEvent::StateChanged(s) => self.events.push_back(SessionEvent::StateChanged(s)),
            IceEvent::SelectedPair { local, remote } => {
                // A relayed path carries every datagram: bind a channel so
                // they travel as ChannelData (4 bytes of overhead, not 36).
                if local.kind() == CandidateKind::Relayed {
                    if let Some(&i) = self.by_relayed.get(&local.address()) {
                        let _ = self.relays[i].client.bind_channel(now, remote.address());
                    }
                }
                self.events.push_back(SessionEvent::SelectedPair {
                    local: end(&local),
                    remote: end(&remote),
                });
            }
            IceEvent::ConsentLost => self.events.push_back(SessionEvent::ConsentLost),
            _ => {}
        }
    }
}

fn end(c: &Candidate) -> PathEnd {
    PathEnd {
        kind: c.kind(),
        address: c.address(),
    }
}
