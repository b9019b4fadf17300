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
use std::time::Instant;

use p2p_ice::{Candidate, CandidateKind, IceAgent, IceConfig, IceEvent, IceState, Input};
use p2p_turn::{ClientConfig, ClientEvent, TurnClient};

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
    /// A local candidate to send to the peer, as an SDP `candidate:` value.
    LocalCandidate(String),
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
}

/// Why a command was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The ICE agent refused it.
    #[error("ice: {0}")]
    Ice(#[from] p2p_ice::IceError),
    /// A candidate line did not parse.
    #[error("bad candidate: {0}")]
    Candidate(#[from] p2p_ice::ParseCandidateError),
    /// No path is selected yet.
    #[error("not connected")]
    NotConnected,
    /// The relay refused to carry the data.
    #[error("relay: {0}")]
    Relay(#[from] p2p_turn::ClientError),
}

#[derive(Debug)]
struct Relay {
    config: TurnServerConfig,
    local: SocketAddr,
    client: TurnClient,
    relayed: Option<SocketAddr>,
    permitted: HashSet<IpAddr>,
    done: bool,
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
    relays: Vec<Relay>,
    by_relayed: HashMap<SocketAddr, usize>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SessionEvent>,
    gathering_ended: bool,
    started: bool,
    now: Option<Instant>,
}

impl Session {
    /// A session; nothing is sent before [`Session::start`].
    pub fn new(config: SessionConfig) -> Result<Self, SessionError> {
        let mut agent = IceAgent::new(config.ice.clone());
        let relay_only = config.ice.relay_only;
        for host in &config.hosts {
            if !relay_only {
                agent.add_local_candidate(Candidate::host(*host))?;
            }
        }
        if !relay_only {
            for s in &config.stun_servers {
                agent.add_stun_server(*s);
            }
        }
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
            let mut cc = ClientConfig::new(local, t.server, &t.username, &t.password);
            cc.transport = t.transport;
            cc.rng_seed = config.rng_seed.map(|s| s.wrapping_add(i as u64 + 1));
            relays.push(Relay {
                config: t.clone(),
                local,
                client: TurnClient::new(cc),
                relayed: None,
                permitted: HashSet::new(),
                done: false,
            });
        }
        Ok(Session {
            agent,
            relays,
            by_relayed: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            gathering_ended: false,
            started: false,
            now: None,
        })
    }

    /// Start gathering (STUN requests, TURN allocations) and checking.
    pub fn start(&mut self, now: Instant) {
        if self.started {
            return;
        }
        self.started = true;
        self.now = Some(now);
        for r in &mut self.relays {
            if r.client.allocate(now).is_err() {
                r.done = true;
            }
        }
        self.agent.handle_timeout(now);
        self.pump(now);
    }

    /// Our ICE username fragment and password, to send to the peer.
    pub fn local_credentials(&self) -> (&str, &str) {
        let c = self.agent.local_credentials();
        (&c.ufrag, &c.pwd)
    }

    /// The peer's ICE username fragment and password.
    pub fn set_remote_credentials(&mut self, ufrag: &str, pwd: &str) -> Result<(), SessionError> {
        self.agent.set_remote_credentials(ufrag, pwd)?;
        Ok(())
    }

    /// A candidate the peer signalled (an SDP `candidate:` value, with or
    /// without `a=`).
    pub fn add_remote_candidate(&mut self, now: Instant, line: &str) -> Result<(), SessionError> {
        let c: Candidate = line.parse()?;
        self.agent.add_remote_candidate(c)?;
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
    pub fn restart(&mut self, now: Instant) {
        self.agent.restart();
        self.pump(now);
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
        let t = self
            .agent
            .send(now, data.to_vec())
            .ok_or(SessionError::NotConnected)?;
        self.route(now, t)?;
        self.pump(now);
        Ok(())
    }

    /// A datagram arrived on one of the caller's sockets.
    pub fn handle_input(&mut self, now: Instant, d: Datagram<'_>) {
        self.now = Some(now);
        if let Some(r) = self
            .relays
            .iter_mut()
            .find(|r| r.config.server == d.remote && r.local == d.local)
        {
            let turn = p2p_turn::Datagram {
                transport: d.transport,
                local: d.local,
                remote: d.remote,
                bytes: d.contents,
            };
            if r.client.handle_input(now, turn) {
                self.pump(now);
                return;
            }
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
        let input = self.agent.handle_input(
            now,
            p2p_ice::Datagram {
                source,
                destination,
                contents,
            },
        );
        if input == Input::NotIce && !p2p_stun::is_stun(contents) {
            let from_peer = self
                .agent
                .selected_pair()
                .is_some_and(|(l, r)| r.address() == source && local_address(l) == destination);
            if from_peer {
                self.events.push_back(SessionEvent::Data(contents.to_vec()));
            }
        }
    }

    /// The time asked for by [`Session::poll_timeout`] came.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        self.agent.handle_timeout(now);
        for r in &mut self.relays {
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
        self.relays
            .iter()
            .filter_map(|r| r.client.poll_timeout())
            .chain(self.agent.poll_timeout())
            .min()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Send a transmit of the agent: directly from a host base, or wrapped
    /// through the TURN client that owns its relayed source address.
    fn route(&mut self, now: Instant, t: p2p_ice::Transmit) -> Result<(), SessionError> {
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
                let r = &mut self.relays[i];
                if r.client.channel(t.destination).is_none()
                    && r.permitted.insert(t.destination.ip())
                {
                    r.client.create_permission(now, &[t.destination.ip()])?;
                }
                r.client.send_to(now, t.destination, &t.contents)?;
                Ok(())
            }
        }
    }

    /// Move everything between the agent, the TURN clients and the queues
    /// until nothing moves.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            for i in 0..self.relays.len() {
                while let Some(e) = self.relays[i].client.poll_event() {
                    moved = true;
                    self.turn_event(now, i, e);
                }
                while let Some(t) = self.relays[i].client.poll_transmit() {
                    moved = true;
                    self.transmits.push_back(Transmit {
                        transport: t.transport,
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents,
                    });
                }
            }
            while let Some(t) = self.agent.poll_transmit() {
                moved = true;
                // A relay that refuses (family mismatch, too large) loses this
                // one datagram; ICE retransmits and fails the pair in time.
                let _ = self.route(now, t);
            }
            while let Some(e) = self.agent.poll_event() {
                moved = true;
                self.ice_event(now, e);
            }
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

    fn turn_event(&mut self, now: Instant, i: usize, e: ClientEvent) {
        let server = self.relays[i].config.server;
        match e {
            ClientEvent::Allocated {
                relayed, mapped, ..
            } => {
                self.relays[i].done = true;
                for addr in relayed {
                    self.relays[i].relayed.get_or_insert(addr);
                    self.by_relayed.insert(addr, i);
                    let related = mapped.or(Some(self.relays[i].local));
                    if self
                        .agent
                        .add_local_candidate(Candidate::relayed(addr, related, server.ip()))
                        .is_ok()
                    {
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
                if !was_allocated {
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
            ClientEvent::PermissionFailed { peers, .. } => {
                for p in peers {
                    self.relays[i].permitted.remove(&p);
                }
            }
            _ => {}
        }
    }

    fn ice_event(&mut self, now: Instant, e: IceEvent) {
        match e {
            IceEvent::LocalCandidate(c) => {
                self.events
                    .push_back(SessionEvent::LocalCandidate(c.to_sdp()));
            }
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

/// The address a local candidate's datagrams arrive on: its base, or the
/// relayed address itself.
fn local_address(c: &Candidate) -> SocketAddr {
    if c.kind() == CandidateKind::Relayed {
        c.address()
    } else {
        c.base()
    }
}
