//! The tokio driver: sockets, timers and signaling around the sans-IO
//! [`Session`](crate::Session) (feature `driver`).
//!
//! [`Peer::connect`] joins a room of a `p2p-signaling` server, waits for the
//! other peer, exchanges ICE credentials and trickles candidates, runs the
//! checks and returns a [`Connection`] once a path is selected. One task
//! owns the session and every socket; the [`Connection`] talks to it over
//! channels.
//!
//! The driver only moves bytes and time: it connects to the signaling
//! server, joins the room, binds the sockets, connects TURN streams, and
//! then feeds a sans-IO [`Negotiation`](crate::Negotiation) (which owns the
//! [`Session`](crate::Session) and keeps the rules of offer/answer, trickle,
//! ICE restart and bye) with datagrams, signaling messages and `now`,
//! sending what it hands out. The application may restart at any time with
//! [`Connection::restart_ice`] (either side; the other answers).
//!
//! Everything on the path is encrypted: DTLS (its peer checked against the
//! fingerprint the peer signaled) carries the SCTP association of the data
//! channels. A channel delivers messages whole; reliable ordered ones (the
//! default) deliver every message once, in order; unordered ones and those
//! with limited retransmissions or lifetime give datagram semantics.
//! [`Channel::send`] waits while too much is unacknowledged (back-pressure).
//! When the peer closes, its ABORT and `close_notify` reach us within a
//! round trip on a live path, and every `recv` says why the connection
//! ended.

mod channel;
mod gateway;
mod ice_tcp;
mod mdns;
mod net;
mod run;
mod uri;

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use p2p_ice::{IceConfig, IceState, IceStats};
use tokio::sync::{mpsc, oneshot, watch};

pub use channel::{Channel, ChannelClosed, ChannelInfo, Message, SendError, HIGH_WATER, LOW_WATER};
pub use net::tls_client_config;
pub use p2p_signaling::ClientError as SignalingError;
pub use p2p_signaling::RelayUnavailable;
pub use uri::{IceServerUri, Scheme, UriError};

use bytes::Bytes;
use p2p_datachannel::{ChannelId, ChannelOptions};
use p2p_dtls::{Certificate, Fingerprint};

use crate::{CloseReason, SelectedPath};

/// Whether every candidate type may be used, or only relayed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Host, server-reflexive, peer-reflexive and relayed candidates.
    #[default]
    All,
    /// Only relayed candidates (hides our addresses from the peer; needs a
    /// TURN server).
    RelayOnly,
}

/// What a [`Peer`] is made of. Start from [`PeerConfig::new`].
#[derive(Clone)]
#[non_exhaustive]
pub struct PeerConfig {
    /// The signaling server's WebSocket URL, `ws://host:port/` or
    /// `wss://host:port/` (checked against [`PeerConfig::tls_roots`]).
    pub signaling_url: String,
    /// More URLs of the same service (the other nodes of a cluster): tried
    /// in order when `signaling_url` cannot be reached, and when the
    /// connection is lost (see [`PeerConfig::reconnect`]).
    pub signaling_urls: Vec<String>,
    /// How to reconnect when the signaling connection is lost after the
    /// peers met: which URL next, the backoff, when to give up (default:
    /// reconnect, giving up after 60 s). On the new connection the driver
    /// takes its peer id back (the server's resume token), joins the room
    /// again, and the offerer brings the peer up to date (what it may have
    /// missed, or an ICE restart, which also re-allocates on TURN servers
    /// that lost our allocation). The path keeps carrying data meanwhile.
    pub reconnect: crate::ReconnectPolicy,
    /// The room to meet the peer in.
    pub room: String,
    /// The room's token, if the server asks for one.
    pub token: Option<String>,
    /// A display name shown to the other peers.
    pub name: Option<String>,
    /// STUN and TURN servers. Empty: use those of the signaling server's
    /// `welcome` (with their short-lived TURN REST credentials).
    pub ice_servers: Vec<IceServerUri>,
    /// All candidate types, or relayed ones only.
    pub policy: Policy,
    /// The local IPs to bind a UDP socket on. Empty (the default): every
    /// address of every interface that is up, IPv4 and IPv6, without
    /// link-local ones, and without loopback unless `include_loopback` is
    /// set or nothing else exists.
    pub local_addresses: Vec<IpAddr>,
    /// Bind on loopback addresses too (tests, demos on one machine).
    pub include_loopback: bool,
    /// Trust roots (DER) for `turns:` servers and a `wss://` signaling
    /// URL. Empty: those fail (this crate ships no root store).
    pub tls_roots: Vec<Vec<u8>>,
    /// How long to wait for the signaling server's welcome. Default 10 s.
    pub signaling_timeout: Duration,
    /// How long to wait for the other peer to join. `None` (the default):
    /// forever.
    pub peer_timeout: Option<Duration>,
    /// How long ICE may take, from the meeting of the peers to a selected
    /// path. Default 30 s.
    pub connect_timeout: Duration,
    /// The ICE agent's timers and options. `controlling` and `relay_only`
    /// are set by the driver (from the roles and [`PeerConfig::policy`]).
    pub ice: IceConfig,
    /// Emit [`ConnectionEvent::CheckList`] this often while checking.
    /// Default: never.
    pub check_list_interval: Option<Duration>,
    /// The DTLS certificate. `None` (the default): a new ECDSA P-256 one
    /// is made for the connection.
    pub certificate: Option<Certificate>,
    /// The largest message we accept (our `a=max-message-size`; 0: no
    /// limit). Default [`DEFAULT_MAX_MESSAGE_SIZE`](crate::DEFAULT_MAX_MESSAGE_SIZE).
    pub max_message_size: u32,
    /// Batched UDP I/O on the host sockets where the OS has it (Linux):
    /// datagrams to one peer leave in one `sendmsg` (UDP GSO) and arrive
    /// several per read (GRO, `recvmmsg`). Default on; off: one system call
    /// per datagram (a device that mishandles GSO, or a comparison).
    pub batched_io: bool,
    /// How many bytes of a channel's received messages may wait for
    /// [`Channel::recv`] before the channel stops reading from SCTP: the
    /// receive window then closes and the peer's sender waits (its
    /// `send` blocks) instead of our memory growing. Default 1 MiB
    /// ([`DEFAULT_RECEIVE_QUEUE_LIMIT`](p2p_datachannel::DEFAULT_RECEIVE_QUEUE_LIMIT));
    /// `None`: no bound.
    pub receive_queue_limit: Option<usize>,
    /// Ask the local router for a port mapping (PCP, then NAT-PMP) of the
    /// sockets on the default route's interface, offer the mapped address
    /// as a server-reflexive candidate and delete it on close. Default
    /// false (the library touches no router unless asked; `p2p connect`
    /// asks unless `--no-port-mapping`).
    pub port_mapping: bool,
    /// The router to ask; `None` (the default): the gateway of the IPv4
    /// default route (Linux).
    pub gateway: Option<IpAddr>,
    /// Announce [`HARD_NAT_OPTION`](crate::HARD_NAT_OPTION) (default
    /// true): see [`NegotiationConfig::hard_nat`](crate::NegotiationConfig::hard_nat).
    pub hard_nat: bool,
    /// Resolve the peer's `<name>.local` host candidates (a browser's, by
    /// default) with mDNS queries on the LAN (RFC 6762). Default on; off
    /// leaves them out (the peer's checks still teach us its address).
    pub resolve_mdns: bool,
    /// ICE over TCP (RFC 6544): listen on each local IP (a passive TCP
    /// host candidate) and offer an active one, so that a network that
    /// blocks UDP but lets TCP out still connects directly to a peer that
    /// accepts connections (a browser's passive candidate, say) without a
    /// relay. TCP candidates rank below every UDP one. Default off.
    pub ice_tcp: bool,
    /// Allocations on a TURN server reached over IPv4 ask for an IPv6
    /// relayed address too (RFC 8656 ADDITIONAL-ADDRESS-FAMILY), so a peer
    /// with IPv6 only can reach us through the relay; a server without
    /// IPv6 relays grants the IPv4 one alone. Default on.
    pub turn_dual_family: bool,
    /// Hide our host addresses behind generated `<uuid>.local` names, as
    /// browsers do (draft-ietf-mmusic-mdns-ice-candidates): the signalled
    /// host candidates carry the name, a responder on the mDNS port
    /// answers the LAN's queries for it, related addresses are signalled
    /// as `0.0.0.0`. Only where port 5353 can be bound (else the
    /// addresses are signalled as they are). Peers off the LAN cannot
    /// resolve the names: they use the server-reflexive and relayed
    /// candidates. Default off.
    pub mdns_hide_hosts: bool,
    /// Hide our host addresses as [`PeerConfig::mdns_hide_hosts`] does
    /// when the peer we meet asks for it (`hideHosts` in its join,
    /// [`p2p_signaling::PeerInfo::hide_hosts`]; the browser page opened
    /// with `&hide=1` asks). Default on: off for programs, on for the
    /// peers of a page that asks.
    pub mdns_hide_when_asked: bool,
    /// Ask the peer we meet to hide its host addresses behind mDNS names
    /// (`hideHosts` in our join). Default off.
    pub mdns_ask_peer_to_hide: bool,
}

impl fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConfig")
            .field("signaling_url", &self.signaling_url)
            .field("signaling_urls", &self.signaling_urls)
            .field("room", &self.room)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ice_servers", &self.ice_servers)
            .field("policy", &self.policy)
            .field("local_addresses", &self.local_addresses)
            .field("include_loopback", &self.include_loopback)
            .field("connect_timeout", &self.connect_timeout)
            .field("port_mapping", &self.port_mapping)
            .finish_non_exhaustive()
    }
}

impl PeerConfig {
    /// A configuration with the defaults listed on each field.
    pub fn new(signaling_url: impl Into<String>, room: impl Into<String>) -> PeerConfig {
        PeerConfig {
            signaling_url: signaling_url.into(),
            signaling_urls: Vec::new(),
            reconnect: crate::ReconnectPolicy::new(),
            room: room.into(),
            token: None,
            name: None,
            ice_servers: Vec::new(),
            policy: Policy::All,
            local_addresses: Vec::new(),
            include_loopback: false,
            tls_roots: Vec::new(),
            signaling_timeout: Duration::from_secs(10),
            peer_timeout: None,
            connect_timeout: Duration::from_secs(30),
            ice: IceConfig::default(),
            check_list_interval: None,
            certificate: None,
            max_message_size: crate::DEFAULT_MAX_MESSAGE_SIZE,
            receive_queue_limit: Some(p2p_datachannel::DEFAULT_RECEIVE_QUEUE_LIMIT),
            batched_io: true,
            port_mapping: false,
            gateway: None,
            hard_nat: true,
            resolve_mdns: true,
            ice_tcp: false,
            turn_dual_family: true,
            mdns_hide_hosts: false,
            mdns_hide_when_asked: true,
            mdns_ask_peer_to_hide: false,
        }
    }

    /// Sets [`PeerConfig::mdns_hide_when_asked`].
    pub fn mdns_hide_when_asked(mut self, yes: bool) -> PeerConfig {
        self.mdns_hide_when_asked = yes;
        self
    }

    /// Sets [`PeerConfig::mdns_ask_peer_to_hide`].
    pub fn mdns_ask_peer_to_hide(mut self, yes: bool) -> PeerConfig {
        self.mdns_ask_peer_to_hide = yes;
        self
    }

    /// Sets [`PeerConfig::mdns_hide_hosts`].
    pub fn mdns_hide_hosts(mut self, yes: bool) -> PeerConfig {
        self.mdns_hide_hosts = yes;
        self
    }

    /// Sets [`PeerConfig::batched_io`].
    pub fn batched_io(mut self, yes: bool) -> PeerConfig {
        self.batched_io = yes;
        self
    }

    /// With this receive queue limit (see
    /// [`PeerConfig::receive_queue_limit`]; `None`: no bound).
    pub fn receive_queue_limit(mut self, limit: Option<usize>) -> PeerConfig {
        self.receive_queue_limit = limit;
        self
    }

    /// Sets [`PeerConfig::ice_tcp`].
    pub fn ice_tcp(mut self, yes: bool) -> PeerConfig {
        self.ice_tcp = yes;
        self
    }

    /// Sets [`PeerConfig::resolve_mdns`].
    pub fn resolve_mdns(mut self, yes: bool) -> PeerConfig {
        self.resolve_mdns = yes;
        self
    }

    /// Adds a STUN or TURN server.
    pub fn ice_server(mut self, server: IceServerUri) -> PeerConfig {
        self.ice_servers.push(server);
        self
    }

    /// Sets the candidate policy.
    pub fn policy(mut self, policy: Policy) -> PeerConfig {
        self.policy = policy;
        self
    }

    /// Binds on loopback addresses too.
    pub fn include_loopback(mut self, yes: bool) -> PeerConfig {
        self.include_loopback = yes;
        self
    }

    /// Binds exactly these local IPs.
    pub fn local_addresses(mut self, ips: impl IntoIterator<Item = IpAddr>) -> PeerConfig {
        self.local_addresses = ips.into_iter().collect();
        self
    }

    /// Sets [`PeerConfig::connect_timeout`].
    pub fn connect_timeout(mut self, t: Duration) -> PeerConfig {
        self.connect_timeout = t;
        self
    }

    /// Adds a signaling URL of the same service (see
    /// [`PeerConfig::signaling_urls`]).
    pub fn signaling_fallback(mut self, url: impl Into<String>) -> PeerConfig {
        self.signaling_urls.push(url.into());
        self
    }

    /// Sets [`PeerConfig::reconnect`].
    pub fn reconnect(mut self, policy: crate::ReconnectPolicy) -> PeerConfig {
        self.reconnect = policy;
        self
    }

    /// Sets [`PeerConfig::peer_timeout`].
    pub fn peer_timeout(mut self, t: Duration) -> PeerConfig {
        self.peer_timeout = Some(t);
        self
    }
}

/// Why [`Peer::connect`] failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The signaling server could not be reached (connect, WebSocket
    /// handshake or welcome).
    #[error("signaling server {url} unreachable: {source}")]
    SignalingUnreachable {
        /// The URL tried.
        url: String,
        /// What failed.
        #[source]
        source: SignalingError,
    },
    /// The room holds its maximum number of peers.
    #[error("room {room:?} is full")]
    RoomFull {
        /// The room.
        room: String,
    },
    /// The room already holds two peers: a connection pairs two, so they
    /// are (or are becoming) each other's, and an offer to one of them
    /// would only fail after the ICE timeout. Choose another room.
    #[error("room {room:?} is busy: {peers} peers are already in it, and a room pairs two; choose another room name")]
    RoomBusy {
        /// The room.
        room: String,
        /// How many peers were there.
        peers: usize,
    },
    /// Relay-only, and no TURN server to relay through: none is configured
    /// and the signaling server handed out no TURN credentials (`reason`
    /// says why, when it said). Found at the join, before waiting for a
    /// peer.
    #[error("relay-only needs a TURN server: none is configured and the signaling server handed out no TURN credentials{}", no_relay_hint(*reason))]
    NoRelay {
        /// Why the signaling server handed out none, as it said.
        reason: Option<RelayUnavailable>,
    },
    /// The room's token is missing or wrong.
    #[error("not allowed into room {room:?} (token missing or wrong)")]
    Unauthorized {
        /// The room.
        room: String,
    },
    /// The signaling server failed or refused something after the welcome.
    #[error("signaling: {0}")]
    Signaling(#[source] SignalingError),
    /// The other peer left the room (or said bye) before a path was found.
    #[error("peer {peer} left before a path was found")]
    PeerLeft {
        /// The peer id.
        peer: String,
    },
    /// ICE checked every pair (or ran out of time) and none succeeded.
    #[error("no candidate pair succeeded; local candidates tried: [{}]; remote candidates: [{}]", local.join(", "), remote.join(", "))]
    NoPath {
        /// Our candidates, as `kind address`.
        local: Vec<String>,
        /// The peer's candidates, as `kind address`.
        remote: Vec<String>,
    },
    /// Relay-only, and every TURN server refused or did not answer.
    #[error("TURN server {server} refused the allocation: {}{reason}", code.map(|c| format!("{c} ")).unwrap_or_default())]
    TurnRefused {
        /// The TURN server (the last one that failed).
        server: String,
        /// The STUN error code (401 bad credentials, 486 quota, ...), `None`
        /// when it never answered.
        code: Option<u16>,
        /// What went wrong.
        reason: String,
    },
    /// An ICE server URI (configured or from the welcome) is invalid.
    #[error("ICE server: {0}")]
    BadIceServer(#[from] UriError),
    /// The configuration cannot work (relay-only without a TURN server, no
    /// local address, ...).
    #[error("configuration: {0}")]
    Config(&'static str),
    /// Waiting took too long.
    #[error("timed out after {after:?} waiting for {waiting_for}")]
    Timeout {
        /// What was awaited: `the signaling server`, `a peer`, `a path`.
        waiting_for: &'static str,
        /// How long was waited.
        after: Duration,
    },
    /// A socket could not be bound or used.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The peer's DTLS certificate matched no fingerprint its description
    /// signaled: someone on the way, or a broken peer. Nothing it sent was
    /// delivered.
    #[error("the peer's DTLS certificate does not match the fingerprint it signaled")]
    FingerprintMismatch,
    /// The encrypted connection could not be set up: the peer's
    /// description cannot set up DTLS, or the DTLS handshake or the data
    /// channels' association failed or timed out.
    #[error("the encrypted connection failed: {0}")]
    Secure(String),
    /// The driver stopped (its task panicked or the runtime shuts down).
    #[error("the driver stopped")]
    Stopped,
}

/// What happens on the way to a connection and during it.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionEvent {
    /// The signaling server welcomed us.
    SignalingConnected {
        /// Our peer id.
        peer_id: String,
    },
    /// The room was joined; `peers` were already there.
    Joined {
        /// The room.
        room: String,
        /// How many peers were there.
        peers: usize,
    },
    /// The other peer is known; roles are settled.
    PeerFound {
        /// Its peer id.
        peer_id: String,
        /// Whether we are the offerer and the controlling agent.
        controlling: bool,
    },
    /// UDP sockets were bound on these addresses.
    SocketsBound(Vec<SocketAddr>),
    /// A local candidate was gathered (and sent to the peer).
    LocalCandidate(String),
    /// The peer sent a candidate.
    RemoteCandidate(String),
    /// Every local candidate is out.
    GatheringComplete,
    /// A TURN allocation succeeded.
    TurnAllocated {
        /// The TURN server.
        server: SocketAddr,
        /// Our relayed address.
        relayed: SocketAddr,
    },
    /// A TURN server at its quota sent us to another (300 Try Alternate,
    /// RFC 8489 §10); the allocation is asked of `to`, over the same
    /// transport (a `turn:…?transport=tcp` or `turns:` server: on a new
    /// connection).
    TurnRedirected {
        /// The server that redirected.
        from: SocketAddr,
        /// The server now used.
        to: SocketAddr,
    },
    /// A TURN server refused or did not answer, or the TCP/TLS connection
    /// an allocation lived on ended (the allocation is gone with it).
    TurnFailed {
        /// The TURN server.
        server: String,
        /// The STUN error code, `None` when it never answered.
        code: Option<u16>,
        /// What went wrong.
        reason: String,
    },
    /// The ICE state changed (checking, connected, disconnected, ...).
    StateChanged(IceState),
    /// DTLS is up: the peer's certificate matched the fingerprint its
    /// description signaled.
    Secured {
        /// That fingerprint.
        remote_fingerprint: Fingerprint,
        /// The DTLS version spoken.
        version: p2p_dtls::DtlsVersion,
    },
    /// Connected: a path is selected, DTLS is up and the data channels'
    /// association established.
    Connected(SelectedPath),
    /// Another path was selected (renomination or after a restart).
    PathChanged(SelectedPath),
    /// Birthday probing (issue 14) began, found a direct path (ICE then
    /// checks it and may move the connection there: [`ConnectionEvent::PathChanged`])
    /// or gave up.
    HardNat(crate::HardNatEvent),
    /// Consent was lost on the selected path.
    Disconnected,
    /// An ICE restart began (new credentials were exchanged).
    Restarting,
    /// The signaling connection is gone for good (reconnecting gave up, or
    /// is off); the path keeps working, but no restart is possible any
    /// more.
    SignalingLost,
    /// The signaling connection closed; the driver reconnects (see
    /// [`PeerConfig::reconnect`]). The path keeps carrying data.
    SignalingInterrupted,
    /// Signaling is back: connected to `url` with our peer id (the same
    /// one unless the server refused to resume it) and the room joined
    /// again.
    SignalingRestored {
        /// The signaling URL connected to.
        url: String,
        /// Our peer id.
        peer_id: String,
    },
    /// The check list (see [`PeerConfig::check_list_interval`]): while
    /// checking (before the first path and during an ICE restart), and once
    /// more when a path is selected.
    CheckList(Box<IceStats>),
    /// The connection ended.
    Closed(CloseReason),
}

/// A peer to be: a validated configuration. [`Peer::connect`] does the work.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use p2p_connect::{Peer, PeerConfig};
/// let config = PeerConfig::new("ws://127.0.0.1:8080/ws", "my-room")
///     .ice_server("stun:stun.example.org".parse()?);
/// let conn = Peer::new(config)?.connect().await?;
/// println!("connected via {}", conn.selected_path().expect("a path"));
/// let files = conn.accept_channel().await?;
/// while let Ok(m) = files.recv().await {
///     println!("got {} bytes", m.data.len());
/// }
/// conn.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Peer {
    config: PeerConfig,
}

impl Peer {
    /// Checks the configuration.
    pub fn new(config: PeerConfig) -> Result<Peer, ConnectError> {
        if config.room.is_empty() {
            return Err(ConnectError::Config("the room name is empty"));
        }
        let turn = config.ice_servers.iter().filter(|s| s.is_turn());
        if turn
            .clone()
            .any(|s| s.username.is_none() || s.credential.is_none())
        {
            let bad = config
                .ice_servers
                .iter()
                .find(|s| s.is_turn() && (s.username.is_none() || s.credential.is_none()))
                .map(ToString::to_string)
                .unwrap_or_default();
            return Err(ConnectError::BadIceServer(UriError::MissingCredentials(
                bad,
            )));
        }
        Ok(Peer { config })
    }

    /// The configuration.
    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// Meets the peer and connects; returns once a path is selected.
    pub async fn connect(self) -> Result<Connection, ConnectError> {
        self.connect_with(|_| {}).await
    }

    /// Like [`Peer::connect`], calling `progress` with each event as it
    /// happens (the events stay in [`Connection::next_event`]'s stream too).
    pub async fn connect_with(
        self,
        mut progress: impl FnMut(&ConnectionEvent) + Send,
    ) -> Result<Connection, ConnectError> {
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (event_tx, mut event_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let (path_tx, path_rx) = watch::channel(None);
        let (ready_tx, mut ready_rx) = oneshot::channel();
        let reason = Arc::new(OnceLock::new());
        let (released_tx, released_rx) = mpsc::unbounded_channel();
        tokio::spawn(run::run(
            self.config,
            run::Channels {
                commands: cmd_rx,
                command_tx: cmd_tx.clone(),
                released: released_rx,
                released_tx,
                events: event_tx,
                incoming: incoming_tx,
                path: path_tx,
                ready: Some(ready_tx),
                reason: reason.clone(),
            },
        ));
        let mut seen = VecDeque::new();
        let info = loop {
            tokio::select! {
                biased;
                Some(e) = event_rx.recv() => {
                    progress(&e);
                    seen.push_back(e);
                }
                r = &mut ready_rx => break r.map_err(|_| ConnectError::Stopped)??,
            }
        };
        // Events sent before `ready` are already queued: hand them over.
        while let Ok(e) = event_rx.try_recv() {
            progress(&e);
            seen.push_back(e);
        }
        Ok(Connection {
            commands: cmd_tx,
            events: tokio::sync::Mutex::new(Events { seen, rx: event_rx }),
            incoming: tokio::sync::Mutex::new(incoming_rx),
            path: path_rx,
            reason,
            peer_id: info.peer_id,
            peer_name: info.peer_name,
            controlling: info.controlling,
            local_fingerprint: info.local_fingerprint,
            remote_fingerprint: info.remote_fingerprint,
        })
    }
}

/// What the driver tells [`Peer::connect_with`] once connected.
#[derive(Debug)]
struct ConnectedInfo {
    peer_id: String,
    peer_name: Option<String>,
    controlling: bool,
    local_fingerprint: Fingerprint,
    remote_fingerprint: Option<Fingerprint>,
}

#[derive(Debug)]
enum Command {
    Open(ChannelOptions, oneshot::Sender<Result<Channel, SendError>>),
    Send {
        id: ChannelId,
        data: Bytes,
        binary: bool,
        done: oneshot::Sender<Result<(), SendError>>,
    },
    CloseChannel(ChannelId),
    Stats(oneshot::Sender<IceStats>),
    Restart(oneshot::Sender<bool>),
    Close(oneshot::Sender<()>),
}

/// The events already seen during [`Peer::connect_with`], then the channel.
#[derive(Debug)]
struct Events {
    seen: VecDeque<ConnectionEvent>,
    rx: mpsc::UnboundedReceiver<ConnectionEvent>,
}

/// An encrypted connection to the peer (DTLS, checked against the
/// fingerprint the peer signaled), carrying data channels: open yours with
/// [`Connection::open_channel`], take the peer's with
/// [`Connection::accept_channel`].
///
/// Dropping it closes the connection in the background: the bye and the
/// deletion of the TURN allocations go out without being waited for (and
/// are lost if the runtime stops first); call [`Connection::close`] to wait
/// for them.
#[derive(Debug)]
pub struct Connection {
    commands: mpsc::Sender<Command>,
    events: tokio::sync::Mutex<Events>,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<Channel>>,
    path: watch::Receiver<Option<SelectedPath>>,
    reason: Arc<OnceLock<CloseReason>>,
    peer_id: String,
    peer_name: Option<String>,
    controlling: bool,
    local_fingerprint: Fingerprint,
    remote_fingerprint: Option<Fingerprint>,
}

impl Connection {
    /// Open a data channel (negotiated in-band with DCEP, RFC 8832, unless
    /// `options` names a pre-negotiated id). Messages may be sent at once:
    /// they wait for the peer's acknowledgement of the channel in order.
    pub async fn open_channel(&self, options: ChannelOptions) -> Result<Channel, SendError> {
        let (tx, rx) = oneshot::channel();
        let closed = || SendError::Closed(ChannelClosed::Connection(self.close_reason()));
        self.commands
            .send(Command::Open(options, tx))
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// The next channel the peer opened (in-band, DCEP); once the
    /// connection ended, why.
    pub async fn accept_channel(&self) -> Result<Channel, CloseReason> {
        match self.incoming.lock().await.recv().await {
            Some(c) => Ok(c),
            None => Err(self.close_reason()),
        }
    }

    /// Why the connection ended, once it did (`None` while it is up).
    pub fn closed(&self) -> Option<CloseReason> {
        self.reason.get().cloned()
    }

    /// The reason the driver recorded; [`CloseReason::Local`] if it
    /// stopped without one (its runtime shut down).
    fn close_reason(&self) -> CloseReason {
        self.closed().unwrap_or(CloseReason::Local)
    }

    /// The next event, from the first one of [`Peer::connect`] on; `None`
    /// once the connection is closed and every event was read.
    pub async fn next_event(&self) -> Option<ConnectionEvent> {
        let mut ev = self.events.lock().await;
        if let Some(e) = ev.seen.pop_front() {
            return Some(e);
        }
        ev.rx.recv().await
    }

    /// The selected path now (`None` while a restart has no path yet, or
    /// once closed).
    pub fn selected_path(&self) -> Option<SelectedPath> {
        self.path.borrow().clone()
    }

    /// The peer's id on the signaling server.
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// The name the peer gave the signaling server, if any.
    pub fn peer_name(&self) -> Option<&str> {
        self.peer_name.as_deref()
    }

    /// The fingerprint the peer's DTLS certificate matched (the one its
    /// description signaled).
    pub fn remote_fingerprint(&self) -> Option<&Fingerprint> {
        self.remote_fingerprint.as_ref()
    }

    /// The fingerprint of our DTLS certificate (what our description
    /// signaled).
    pub fn local_fingerprint(&self) -> &Fingerprint {
        &self.local_fingerprint
    }

    /// Whether we are the offerer and the ICE controlling agent.
    pub fn is_controlling(&self) -> bool {
        self.controlling
    }

    /// The ICE agent's candidates and check list (its `Display` is the
    /// check list, one pair a line).
    pub async fn stats(&self) -> Result<IceStats, CloseReason> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Stats(tx))
            .await
            .map_err(|_| self.close_reason())?;
        rx.await.map_err(|_| self.close_reason())
    }

    /// Restarts ICE now (after a network change the application noticed,
    /// say): new credentials go to the peer over signaling, both sides
    /// gather again (server-reflexive addresses, TURN allocations) and
    /// check anew; [`ConnectionEvent::Restarting`] then
    /// [`ConnectionEvent::PathChanged`] follow. The current path keeps
    /// carrying data until the new one is selected. The driver does the same
    /// by itself when the path dies. Returns once the restart is under way;
    /// `Ok(false)` when no restart could start (ours is already running, or
    /// signaling is gone).
    pub async fn restart_ice(&self) -> Result<bool, CloseReason> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Restart(tx))
            .await
            .map_err(|_| self.close_reason())?;
        rx.await.map_err(|_| self.close_reason())
    }

    /// Says bye to the peer, deletes the TURN allocations (waiting at most
    /// [`crate::CLOSE_TIMEOUT`] for the servers to confirm) and closes;
    /// waits until the driver stopped.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The rest of [`ConnectError::NoRelay`]'s message: the server's reason
/// in words, and the fix.
fn no_relay_hint(reason: Option<RelayUnavailable>) -> &'static str {
    match reason {
        Some(RelayUnavailable::NotOffered) => " (not-offered: it runs no TURN, or its TURN users are static ones it does not share): configure a TURN server (PeerConfig::ice_server; p2p connect: --turn URI --turn-user NAME --turn-password PASS), or have the server hand credentials out (p2p serve --auth-secret, or --signaling-turn-user NAME)",
        Some(RelayUnavailable::TokenRequired) => " (token-required: it hands them out only in rooms that need a token): join such a room with its token, or configure a TURN server",
        Some(RelayUnavailable::RateLimited) => " (rate-limited: too many went to this address lately): try again later, or configure a TURN server",
        _ => ": configure a TURN server (PeerConfig::ice_server; p2p connect: --turn URI --turn-user NAME --turn-password PASS)",
    }
}
