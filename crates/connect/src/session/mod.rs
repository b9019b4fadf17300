//! The sans-IO `Session`: one ICE agent, its STUN servers and its TURN
//! allocations, and above the path they find, DTLS and the SCTP
//! association of the data channels: one encrypted connection behind one
//! datagram interface.
//!
//! The agent knows STUN only. The session owns a `TurnClient` per TURN
//! server; when an allocation succeeds its relayed address becomes a local
//! candidate of the agent, and every transmit made from that address is
//! wrapped (a Send indication, or ChannelData once a channel is bound) and
//! sent to the TURN server instead. What arrives from a TURN server is
//! unwrapped and handled as if it had arrived on the relayed address.
//!
//! What arrives is told apart by its first byte (RFC 7983): STUN (0..=3)
//! goes to the agent, DTLS (20..=63) on a pair ICE checks or selected goes
//! to the DTLS endpoint, whose plaintext is the SCTP association's input.
//! There is no plaintext mode: application data exists only as messages of
//! data channels ([`Session::open_channel`], [`SessionEvent::Channel`]).

mod hardnat;
mod portmap;
mod predict;
mod relays;
mod secure;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2p_datachannel::{ChannelError, ChannelEvent, ChannelId, ChannelOptions};
use p2p_dtls::{Certificate, CertificateError, DtlsVersion, Fingerprint};
use p2p_ice::{Candidate, CandidateKind, IceAgent, IceConfig, IceEvent, IceOutput, IceState};
use p2p_portmap::PortMapper;
use p2p_proto::{Datagram, FiveTuple, Handled, Machine, Output, Transmit, Transport};
use p2p_turn::ClientOutput;

pub use hardnat::{HardNatEvent, NatMapping, NatReport, PortPattern, ProbeSockets, FAIR_CHANCE};
use relays::Relay;
pub use secure::{RemoteSecurity, SecureEnd};
use secure::{Secure, SecureConfig, SecureOut};

/// A TURN server the session allocates on.
#[non_exhaustive]
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
    /// Over IPv4, ask for an IPv6 relayed address besides the IPv4 one
    /// (RFC 8656 ADDITIONAL-ADDRESS-FAMILY): two relayed candidates, so a
    /// peer with IPv6 only reaches us through the relay. A server without
    /// IPv6 relays grants IPv4 alone. Default off.
    pub dual_family: bool,
}

impl TurnServerConfig {
    /// A TURN server reached over `transport` with these credentials.
    pub fn new(
        server: SocketAddr,
        transport: Transport,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        TurnServerConfig {
            server,
            transport,
            username: username.into(),
            password: password.into(),
            dual_family: false,
        }
    }

    /// Sets [`TurnServerConfig::dual_family`].
    pub fn with_dual_family(mut self, yes: bool) -> Self {
        self.dual_family = yes;
        self
    }
}

/// The `a=max-message-size` we advertise by default (Chromium's).
pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 256 * 1024;

/// What a [`Session`] is made of.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The ICE agent's configuration (role, timers, relay-only policy, seed).
    pub ice: IceConfig,
    /// Local host addresses (bound sockets) to use as host candidates.
    pub hosts: Vec<SocketAddr>,
    /// Host candidates over TCP (ICE-TCP, RFC 6544): a passive one at the
    /// address of a listening socket (its connections' datagrams come in
    /// with that address as destination), an active one from the IP of its
    /// address (the port is ignored: transmits carry `IP:9`, and the caller
    /// opens or reuses a connection from that IP; see
    /// [`p2p_ice::Candidate::host_tcp`]). Empty by default.
    pub tcp_hosts: Vec<(SocketAddr, p2p_ice::TcpType)>,
    /// STUN servers for server-reflexive candidates.
    pub stun_servers: Vec<SocketAddr>,
    /// TURN servers for relayed candidates.
    pub turn_servers: Vec<TurnServerConfig>,
    /// The DTLS certificate; `None`: a new ECDSA P-256 one is made.
    pub certificate: Option<Certificate>,
    /// Our `a=sctp-port` (default 5000).
    pub sctp_port: u16,
    /// The largest message we accept (our `a=max-message-size`; 0: no
    /// limit). Default [`DEFAULT_MAX_MESSAGE_SIZE`].
    pub max_message_size: u32,
    /// How many bytes of a channel's received messages may wait for the
    /// application before the channel stops reading, so that SCTP's window
    /// closes and the peer's sender waits (its buffered amount grows)
    /// rather than our memory: report what was taken with
    /// [`Session::release`]. Default
    /// [`DEFAULT_RECEIVE_QUEUE_LIMIT`](p2p_datachannel::DEFAULT_RECEIVE_QUEUE_LIMIT)
    /// (1 MiB); `None`: no bound, `release` not needed.
    pub receive_queue_limit: Option<usize>,
    /// Seed for the TURN clients, DTLS and SCTP; `None` for OS entropy.
    pub rng_seed: Option<u64>,
    /// Host sockets whose port to have mapped on the local router, each
    /// with the router to ask (PCP, then NAT-PMP, on its port 5351): a
    /// mapping the router grants is offered as a server-reflexive
    /// candidate and deleted on close. Empty (the default): nothing is
    /// asked. Ignored by a relay-only policy.
    pub port_mapping: Vec<(SocketAddr, IpAddr)>,
    /// A port mapping is being sought outside the session (the driver's
    /// UPnP IGD search): gathering holds end-of-candidates until its
    /// outcome ([`Session::add_port_mapping`] or
    /// [`Session::no_port_mapping`]), 1 s at most from the start, as for
    /// a router that does not answer PCP. Default off; ignored by a
    /// relay-only policy.
    pub external_port_mapping: bool,
    /// Hard-NAT traversal (issue 14): learn our NAT's mapping behaviour
    /// while gathering ([`SessionEvent::NatMapping`]) and, once the peer's
    /// is given ([`Session::set_peer_nat`]: only when both peers announced
    /// the ICE option token), birthday-probe when one side maps
    /// endpoint-independently and the other does not and ICE found no
    /// direct path (`session/hardnat.rs`). Default off; ignored by a
    /// relay-only policy.
    pub hard_nat: bool,
}

impl SessionConfig {
    /// A configuration with the given ICE settings and the defaults listed
    /// on each field.
    pub fn new(ice: IceConfig) -> Self {
        SessionConfig {
            ice,
            hosts: Vec::new(),
            tcp_hosts: Vec::new(),
            stun_servers: Vec::new(),
            turn_servers: Vec::new(),
            certificate: None,
            sctp_port: p2p_datachannel::DEFAULT_SCTP_PORT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            receive_queue_limit: Some(p2p_datachannel::DEFAULT_RECEIVE_QUEUE_LIMIT),
            rng_seed: None,
            port_mapping: Vec::new(),
            external_port_mapping: false,
            hard_nat: false,
        }
    }
}

/// One end of the selected path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathEnd {
    /// host, srflx, prflx or relay.
    pub kind: CandidateKind,
    /// The candidate's address.
    pub address: SocketAddr,
    /// The candidate's transport: UDP, or TCP on an ICE-TCP path (RFC
    /// 6544). A relayed end is UDP whatever carries it to its server.
    pub transport: Transport,
}

/// What the application should know.
#[non_exhaustive]
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
    /// The router mapped a port to one of our sockets
    /// ([`SessionConfig::port_mapping`]): `external` is offered as a
    /// server-reflexive candidate.
    PortMapped {
        /// Our socket.
        internal: SocketAddr,
        /// The router's external address and port that forwards to it.
        external: SocketAddr,
    },
    /// The router mapped nothing (it offers no PCP or NAT-PMP, it refused,
    /// or a mapping could not be renewed).
    PortMapFailed {
        /// The router asked.
        gateway: IpAddr,
        /// What went wrong.
        reason: String,
    },
    /// Our NAT's mapping behaviour, learnt while gathering
    /// ([`SessionConfig::hard_nat`]): signal it to the peer if (and only
    /// if) both announced the hard-NAT ICE option token.
    NatMapping(NatReport),
    /// Birthday probing began, found a path (handed to ICE) or gave up.
    HardNat(HardNatEvent),
    /// Port prediction: the address our fresh socket's first mapping
    /// towards the peer should get; signal it to the peer (as
    /// [`SessionEvent::NatMapping`]: only with the token agreed), which
    /// gives it to [`Session::set_peer_prediction`].
    PortPrediction(SocketAddr),
    /// A TURN server at its quota sent us to another (300 Try Alternate,
    /// RFC 8489 §10): the allocation is asked of `to`, over the same
    /// transport. Over TCP or TLS, open a connection to `to` now (the
    /// Allocate for it is the next transmit to `to`), checking its
    /// certificate against `domain` or, when `None`, against the name
    /// `from`'s was checked against.
    TurnRedirected {
        /// The server that redirected.
        from: SocketAddr,
        /// The server now used.
        to: SocketAddr,
        /// The transport, the same for both.
        transport: Transport,
        /// The ALTERNATE-DOMAIN of a redirect over TLS.
        domain: Option<String>,
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
    /// DTLS is up: the peer's certificate matched the fingerprint it
    /// signaled.
    Secured {
        /// The fingerprint the peer's certificate matched.
        remote_fingerprint: Fingerprint,
        /// The DTLS version spoken.
        version: DtlsVersion,
    },
    /// A data channel event: the association is up
    /// ([`ChannelEvent::Connected`]), a channel opened (ours or the
    /// peer's), a message, a buffered amount that fell low, a channel
    /// closed.
    Channel(ChannelEvent),
    /// The encrypted connection ended from the far side or failed (the
    /// peer closed, its certificate did not match, the handshake or the
    /// association failed, the peer fell silent). Close the session.
    Ended(SecureEnd),
    /// [`Session::close`] is done: every TURN server confirmed the deletion
    /// of its allocation, or [`CLOSE_TIMEOUT`] passed. Nothing more will be
    /// sent; the caller may drop the session and its sockets.
    Closed,
}

/// What [`Session::poll_output`](Machine::poll_output) hands out, in the
/// order to act on it.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutput {
    /// A datagram to send from one of our sockets (`source`), or a message
    /// on the TCP/TLS connection to a TURN server (`destination`).
    Transmit(Transmit),
    /// Sockets to bind (then [`Session::sockets_bound`]) or to close, for
    /// birthday probing ([`SessionConfig::hard_nat`]).
    Sockets(ProbeSockets),
    /// Something the application should know.
    Event(SessionEvent),
}

impl Output for SessionOutput {
    fn into_transmit(self) -> Result<Transmit, Self> {
        match self {
            SessionOutput::Transmit(t) => Ok(t),
            other => Err(other),
        }
    }
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
    /// The relay refused to carry the data.
    #[error("relay: {0}")]
    Relay(#[from] p2p_turn::ClientError),
    /// A data channel command was refused.
    #[error("{0}")]
    Channel(#[from] ChannelError),
    /// The DTLS certificate could not be made.
    #[error("certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// [`Session::close`] was called.
    #[error("the session is closed")]
    Closed,
}

/// ICE agent + STUN + TURN clients + DTLS + data channels +
/// demultiplexing, sans-IO.
///
/// It follows the house contract ([`p2p_proto::Machine`]): it starts at its
/// first [`handle_timeout`](Machine::handle_timeout) (gathering, TURN
/// allocations, checks); after every call or command drain
/// [`poll_output`](Machine::poll_output), sending each transmit from its
/// `source` socket (or on the TURN server's TCP/TLS connection named by
/// its `destination`).
#[derive(Debug)]
pub struct Session {
    agent: IceAgent,
    /// Host sockets and STUN servers, given to the agent when it starts.
    hosts: Vec<SocketAddr>,
    tcp_hosts: Vec<(SocketAddr, p2p_ice::TcpType)>,
    stun_servers: Vec<SocketAddr>,
    relays: Vec<Relay>,
    /// Port mappers, one per IPv4 host socket, when a gateway is known.
    mappers: Vec<PortMapper>,
    /// A mapping sought outside the session (`portmap.rs`).
    external: portmap::External,
    /// Our mapping behaviour and birthday probing (`hardnat.rs`).
    hardnat: hardnat::HardNat,
    by_relayed: HashMap<SocketAddr, usize>,
    secure: Secure,
    out: VecDeque<SessionOutput>,
    gathering_ended: bool,
    started: bool,
    rng_seed: Option<u64>,
    /// [`Session::close`] was called: the secure layers shut down first.
    close_asked: bool,
    /// Then the TURN allocations are deleted: when to give up waiting for
    /// the TURN servers.
    closing: Option<Instant>,
    /// Inside [`Session::handle_inputs`]: DTLS records are fed, and the
    /// layers above move once, after the batch.
    batching: bool,
    /// [`SessionEvent::Closed`] was queued.
    closed: bool,
}

impl Session {
    /// A session (it starts at its first `handle_timeout`). Makes the DTLS
    /// certificate unless the configuration has one.
    pub fn new(config: SessionConfig) -> Result<Self, SessionError> {
        let agent = IceAgent::new(config.ice.clone());
        let (hosts, tcp_hosts, stun_servers) = if config.ice.relay_only {
            (Vec::new(), Vec::new(), Vec::new())
        } else {
            let s = config.stun_servers.clone();
            (config.hosts.clone(), config.tcp_hosts.clone(), s)
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
        let mappers = if config.ice.relay_only {
            Vec::new()
        } else {
            portmap::mappers(&config.port_mapping, config.rng_seed)
        };
        let hardnat = hardnat::HardNat::new(
            config.hard_nat && !config.ice.relay_only,
            &config.hosts,
            &config.stun_servers,
            config.rng_seed,
        );
        let certificate = match config.certificate {
            Some(c) => c,
            None => Certificate::generate()?,
        };
        let secure = Secure::new(SecureConfig {
            certificate,
            sctp_port: config.sctp_port,
            max_message_size: config.max_message_size,
            receive_queue_limit: config.receive_queue_limit,
            rng_seed: config.rng_seed.map(|s| s.wrapping_add(0x5ec)),
        });
        Ok(Session {
            agent,
            hosts,
            tcp_hosts,
            stun_servers,
            relays,
            mappers,
            external: portmap::External::new(
                config.external_port_mapping && !config.ice.relay_only,
            ),
            hardnat,
            by_relayed: HashMap::new(),
            secure,
            out: VecDeque::new(),
            gathering_ended: false,
            started: false,
            rng_seed: config.rng_seed,
            close_asked: false,
            closing: None,
            batching: false,
            closed: false,
        })
    }

    /// Gathering (STUN requests, TURN allocations) and checking begin.
    fn start(&mut self, now: Instant) {
        self.started = true;
        for host in &self.hosts {
            // A host given twice is redundant: the agent keeps one.
            let _ = self.agent.add_local_candidate(now, Candidate::host(*host));
        }
        for (host, tcp_type) in &self.tcp_hosts {
            let c = Candidate::host_tcp(*host, *tcp_type);
            let _ = self.agent.add_local_candidate(now, c);
        }
        for s in &self.stun_servers {
            self.agent.add_stun_server(now, *s);
        }
        for r in &mut self.relays {
            // A TURN client starts allocating at its first handle_timeout.
            r.client.handle_timeout(now);
        }
        // So does a port mapper.
        self.portmap_timeout(now);
    }

    /// Our ICE username fragment and password, to send to the peer.
    pub fn local_credentials(&self) -> (&str, &str) {
        let c = self.agent.local_credentials();
        (&c.ufrag, &c.pwd)
    }

    /// The fingerprint of our DTLS certificate, for `a=fingerprint`.
    pub fn local_fingerprint(&self) -> Fingerprint {
        self.secure.local_fingerprint()
    }

    /// Our `a=sctp-port` and `a=max-message-size`.
    pub fn sctp_parameters(&self) -> (u16, u32) {
        let c = self.secure.config();
        (c.sctp_port, c.max_message_size)
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
        self.hardnat.creds_at.get_or_insert(now);
        self.pump(now);
        Ok(())
    }

    /// What the peer's description says of DTLS and SCTP (its fingerprint,
    /// our role from both `a=setup`, its SCTP port and max-message-size):
    /// the DTLS client starts its handshake once ICE has a path.
    pub fn set_remote_security(&mut self, now: Instant, remote: RemoteSecurity) {
        self.secure.set_remote(now, remote);
        self.pump(now);
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
        let (withheld, regathering) = self.restart_relays(now);
        // Said before the agent restarts, so that it does not end gathering.
        if regathering {
            self.agent.expect_more_local_candidates();
            self.gathering_ended = false;
        }
        self.agent.restart_withholding(now, &withheld);
        self.agent.handle_timeout(now);
        self.pump(now);
    }

    /// Makes sure the peer is still there, when something outside the path
    /// says it may not be (it left the signaling server: its process may
    /// have died without a word). Consent checks go out at once and every
    /// 200 ms; an answer changes nothing, none within `within` loses the
    /// path now ([`IceAgent::verify_consent`]) instead of after 30 s.
    pub fn verify_peer(&mut self, now: Instant, within: Duration) {
        if self.agent.verify_consent(now, within) {
            self.agent.handle_timeout(now);
            self.pump(now);
        }
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

    /// Whether DTLS is up and the data channels' association established.
    pub fn is_established(&self) -> bool {
        self.secure.is_established()
    }

    /// Open a data channel. Before the association is up it waits for it
    /// (and so do the messages sent on it); `Ok(None)` while the DTLS role
    /// is not known yet (the offer/answer is not done): the channel opens
    /// then, and [`ChannelEvent::ChannelOpen`] names its id.
    pub fn open_channel(
        &mut self,
        now: Instant,
        options: ChannelOptions,
    ) -> Result<Option<ChannelId>, SessionError> {
        if self.close_asked {
            return Err(SessionError::Closed);
        }
        let id = self.secure.open_channel(now, options)?;
        self.pump(now);
        Ok(id)
    }

    /// Several datagrams that arrived together (one socket read or one
    /// wakeup of the driver), handled as [`Machine::handle_input`] handles
    /// each, in order; the layers move once after the last. The same
    /// outputs come out, fewer times: the data channels' SCTP gathers what
    /// to send once per batch (each gather walks its whole in-flight
    /// queue), not once per datagram.
    pub fn handle_inputs<'a>(
        &mut self,
        now: Instant,
        datagrams: impl IntoIterator<Item = Datagram<'a>>,
    ) {
        self.batching = true;
        for d in datagrams {
            let _ = self.take_input(now, d);
        }
        self.batching = false;
        self.secure.flush(now);
        self.pump(now);
    }

    /// One datagram in, nothing moved on (see `handle_input`); false when
    /// nothing took it (closing), so nothing needs moving.
    fn take_input(&mut self, now: Instant, d: Datagram<'_>) -> bool {
        // From a TURN server: the client of that server, local socket and
        // transport (two configurations may name one server over UDP and
        // TCP). During a restart an old allocation and its probe share the
        // connection; the probe only takes answers to its own requests.
        for r in self.relays.iter_mut().filter(|r| r.owns(&d)) {
            if r.client.handle_input(now, d).is_taken() {
                return true;
            }
        }
        // From the router's PCP/NAT-PMP port to a mapped socket.
        if self.portmap_input(now, d) {
            return true;
        }
        if self.closing.is_some() {
            return false;
        }
        // Mapping detection answers, birthday probes and their answers.
        if self.hardnat_input(now, d) {
            return true;
        }
        self.inner_input(now, d.transport, d.source, d.destination, d.contents);
        true
    }

    /// Send one message on a channel: a string (`binary` false) or binary
    /// message, delivered whole.
    pub fn send(
        &mut self,
        now: Instant,
        channel: ChannelId,
        data: &[u8],
        binary: bool,
    ) -> Result<(), SessionError> {
        if self.close_asked {
            return Err(SessionError::Closed);
        }
        self.secure.send(now, channel, data, binary)?;
        self.pump(now);
        Ok(())
    }

    /// [`send`](Self::send) without moving the layers: the message waits
    /// in its channel until [`flush`](Self::flush) (or any other call that
    /// moves them). For messages sent in a row: the data channels' SCTP
    /// gathers what to send once for all of them rather than once per
    /// message (each gather walks its whole in-flight queue). The same
    /// outputs come out, later and fewer times.
    pub fn send_deferred(
        &mut self,
        now: Instant,
        channel: ChannelId,
        data: &[u8],
        binary: bool,
    ) -> Result<(), SessionError> {
        if self.close_asked {
            return Err(SessionError::Closed);
        }
        self.secure.queue(now, channel, data, binary)?;
        Ok(())
    }

    /// Move what [`send_deferred`](Self::send_deferred) left waiting.
    pub fn flush(&mut self, now: Instant) {
        self.secure.flush(now);
        self.pump(now);
    }

    /// Close one channel (its streams are reset; the peer sees it closed).
    pub fn close_channel(&mut self, now: Instant, channel: ChannelId) -> Result<(), SessionError> {
        self.secure.close_channel(now, channel)?;
        self.pump(now);
        Ok(())
    }

    /// The application took `bytes` of the messages `channel` delivered
    /// (the sum of their lengths): with a
    /// [`receive_queue_limit`](SessionConfig::receive_queue_limit), a
    /// channel whose delivered and unreleased bytes reached it reads on
    /// once they fall to half of it (see
    /// [`SctpAssociation::release`](p2p_datachannel::SctpAssociation::release)).
    pub fn release(&mut self, now: Instant, channel: ChannelId, bytes: usize) {
        self.secure.release(now, channel, bytes);
        self.pump(now);
    }

    /// Bytes of a channel's messages delivered and not yet released.
    pub fn unread(&self, channel: ChannelId) -> usize {
        self.secure.unread(channel)
    }

    /// Bytes sent on a channel and not yet acknowledged by the peer.
    pub fn buffered_amount(&mut self, channel: ChannelId) -> usize {
        self.secure.buffered_amount(channel)
    }

    /// Report [`ChannelEvent::BufferedAmountLow`] when the buffered amount
    /// of `channel` falls to `threshold` or below.
    pub fn set_buffered_amount_low_threshold(
        &mut self,
        channel: ChannelId,
        threshold: usize,
    ) -> Result<(), SessionError> {
        Ok(self
            .secure
            .set_buffered_amount_low_threshold(channel, threshold)?)
    }

    /// Close the session: end the association so that the peer learns at
    /// once (a graceful SCTP SHUTDOWN delivers what was sent, for at most a
    /// second, then DTLS `close_notify`), then delete
    /// every TURN allocation (a Refresh with LIFETIME 0, RFC 8656 §8) so
    /// that it stops counting against the user's quota at once, and stop
    /// checking, sending keepalives and delivering data. An allocation
    /// still being made is deleted as soon as it is granted.
    ///
    /// Keep driving the session (drain the outputs, feed the servers'
    /// answers, call `handle_timeout`) until [`SessionEvent::Closed`]:
    /// every server confirmed, or [`CLOSE_TIMEOUT`] passed. Calling it again
    /// does nothing.
    pub fn close(&mut self, now: Instant) {
        if self.close_asked {
            return;
        }
        self.close_asked = true;
        self.secure.close(now);
        self.pump(now);
    }

    /// Once the secure layers are done (or at once if they never started),
    /// delete the TURN allocations; the agent falls silent. Whether it
    /// began now.
    fn delete_allocations(&mut self, now: Instant) -> bool {
        if !self.close_asked || self.closing.is_some() || !self.secure.is_done() {
            return false;
        }
        self.closing = Some(now + CLOSE_TIMEOUT);
        for r in self.relays.iter_mut().filter(|r| !r.retired) {
            // Best effort: a request that cannot be encoded leaves the
            // allocation to expire; the timeout ends the wait. One still
            // being granted is deleted by the client once granted.
            let _ = r.client.close(now);
        }
        self.portmap_close(now);
        // Whatever the agent had queued is not sent any more.
        while self.agent.poll_output().is_some() {}
        true
    }

    /// Whether [`SessionEvent::Closed`] was reported.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn event(&mut self, e: SessionEvent) {
        self.out.push_back(SessionOutput::Event(e));
    }

    /// A datagram from the peer, unwrapped if it came through a relay:
    /// STUN to the agent, DTLS to the secure layers when it came on a pair
    /// ICE checks or selected (RFC 8445 §12.2: the controlling peer may send
    /// on the pair it nominated before we select it).
    fn inner_input(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        let d = Datagram::new(transport, source, destination, contents);
        match contents.first() {
            Some(0..=3) => {
                let _ = self.agent.handle_input(now, d);
            }
            Some(20..=63) if self.agent.accepts_data(destination, source) => {
                let path = FiveTuple::new(transport, destination, source);
                if self.batching {
                    self.secure.feed_record(now, path, contents);
                } else {
                    self.secure.handle_record(now, path, contents);
                }
            }
            _ => {}
        }
    }

    /// Move everything between the agent, the TURN clients, the secure
    /// layers and the output queue until nothing moves.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = self.delete_allocations(now);
            for i in 0..self.relays.len() {
                // Events first, then transmits (requests before data).
                while let Some(o) = self.relays[i].client.poll_output() {
                    moved = true;
                    match o {
                        ClientOutput::Event(e) => self.turn_event(now, i, e),
                        ClientOutput::Transmit(t) => self.out.push_back(SessionOutput::Transmit(t)),
                        _ => {}
                    }
                }
            }
            moved |= self.drain_secure(now);
            moved |= self.drain_portmap(now);
            moved |= self.drain_hardnat(now);
            if let Some(deadline) = self.closing {
                // Closing: the agent is silent; only the deletions go out.
                if !self.closed
                    && (now >= deadline || (self.allocations_gone() && self.portmap_closed()))
                {
                    self.closed = true;
                    self.event(SessionEvent::Closed);
                }
                if !moved {
                    break;
                }
                continue;
            }
            while let Some(out) = self.agent.poll_output() {
                moved = true;
                match out {
                    // A relay that refuses (family mismatch, too large)
                    // loses this one datagram; ICE retransmits and fails
                    // the pair in time.
                    IceOutput::Transmit(t) => {
                        let _ = self.route(now, t);
                    }
                    IceOutput::Event(e) => self.ice_event(now, e),
                    _ => {}
                }
            }
            if !self.gathering_ended
                && self.started
                && self.relays.iter().all(|r| r.done)
                && self.portmap_settled(now)
            {
                self.gathering_ended = true;
                self.agent.end_of_local_candidates();
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }

    /// The secure layers' records go out on the path (through the agent
    /// when it is the selected pair, so that the agent knows data flows and
    /// keeps its keepalives quiet), their events up.
    fn drain_secure(&mut self, now: Instant) -> bool {
        let mut moved = false;
        while let Some(o) = self.secure.poll() {
            moved = true;
            match o {
                SecureOut::Transmit(t) => {
                    let on_selected = self
                        .agent
                        .selected_pair()
                        .is_some_and(|(l, r)| l.base() == t.source && r.address() == t.destination);
                    if on_selected && self.closing.is_none() {
                        let _ = self.agent.send(now, t.contents);
                    } else {
                        let _ = self.route(now, t);
                    }
                }
                SecureOut::Secured {
                    remote_fingerprint,
                    version,
                } => self.event(SessionEvent::Secured {
                    remote_fingerprint,
                    version,
                }),
                SecureOut::Channel(e) => self.event(SessionEvent::Channel(e)),
                SecureOut::Ended(why) => self.event(SessionEvent::Ended(why)),
            }
        }
        moved
    }

    fn ice_event(&mut self, now: Instant, e: IceEvent) {
        match e {
            IceEvent::LocalCandidate(c) => self.event(SessionEvent::LocalCandidate(c)),
            IceEvent::GatheringComplete => self.event(SessionEvent::GatheringComplete),
            IceEvent::StateChanged(s) => self.event(SessionEvent::StateChanged(s)),
            IceEvent::SelectedPair { local, remote } => {
                if local.kind() == CandidateKind::Relayed {
                    self.bind_channel(now, local.address(), remote.address());
                }
                // DTLS goes where ICE goes.
                let path = FiveTuple::new(local.transport(), local.base(), remote.address());
                self.secure.set_path(now, path);
                self.event(SessionEvent::SelectedPair {
                    local: end(&local),
                    remote: end(&remote),
                });
            }
            IceEvent::ConsentLost => self.event(SessionEvent::ConsentLost),
            _ => {}
        }
    }
}

impl Machine for Session {
    type Output = SessionOutput;

    /// A datagram arrived on one of our sockets (or, for a TURN server
    /// reached over TCP/TLS, a whole message on that connection).
    fn handle_input(&mut self, now: Instant, d: Datagram<'_>) -> Handled {
        if self.take_input(now, d) {
            self.pump(now);
        }
        Handled::Taken
    }

    fn handle_timeout(&mut self, now: Instant) {
        if !self.started {
            self.start(now);
        }
        if self.closing.is_none() {
            self.agent.handle_timeout(now);
            self.secure.handle_timeout(now);
            self.hardnat_timeout(now);
        }
        for r in self.relays.iter_mut().filter(|r| !r.retired) {
            r.client.handle_timeout(now);
        }
        self.portmap_timeout(now);
        self.pump(now);
    }

    fn poll_output(&mut self) -> Option<SessionOutput> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let relays = self
            .relays
            .iter()
            .filter(|r| !r.retired)
            .filter_map(|r| r.client.poll_timeout())
            .chain(self.portmap_poll_timeout());
        match self.closing {
            Some(deadline) => relays.chain(Some(deadline)).min(),
            None => relays
                .chain(self.hardnat_poll_timeout())
                .chain(self.agent.poll_timeout())
                .chain(self.secure.poll_timeout())
                .min(),
        }
    }
}

fn end(c: &Candidate) -> PathEnd {
    PathEnd {
        kind: c.kind(),
        address: c.address(),
        transport: c.transport(),
    }
}
