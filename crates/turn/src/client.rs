//! The TURN client (RFC 8656) as a sans-IO state machine.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2p_stun::attr::{
    AdditionalAddressFamily, AddressErrorCode, AddressFamily, Attribute, ChannelNumber,
    ConnectionId, Data, DontFragment, ErrorCode, EvenPort, Lifetime, Nonce, PasswordAlgorithm,
    PasswordAlgorithms, Realm, RequestedAddressFamily, RequestedTransport, ReservationToken,
    Software, Userhash, Username, XorMappedAddress, XorPeerAddress, XorRelayedAddress, PROTO_UDP,
};
use p2p_stun::{
    classify, userhash, AttrType, ChannelData, ClientTransaction, EncodeError, Key, Message,
    MessageBuilder, MessageClass, MessageType, Method, PacketKind, TransactionConfig,
    TransactionId, TransactionOutcome, CHANNEL_RANGE,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::auth::{nonce_features, FEATURE_PASSWORD_ALGORITHMS, FEATURE_USERNAME_ANONYMITY};
use crate::types::{Datagram, Transmit, Transport};

/// Settings of a [`TurnClient`]. `ClientConfig::new` fills in the defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The local address transmits are sent from ([`Transmit::source`]).
    pub local: SocketAddr,
    /// The TURN server's address.
    pub server: SocketAddr,
    /// How the client reaches the server (UDP by default). Over TCP/TLS the
    /// driver frames the stream; requests are not retransmitted.
    pub transport: Transport,
    /// The long-term username.
    pub username: String,
    /// The long-term password.
    pub password: String,
    /// Password algorithms the client accepts; it takes the first one in
    /// the server's PASSWORD-ALGORITHMS that is in this list. Default
    /// SHA-256 and MD5. With SHA-256 the client signs with
    /// MESSAGE-INTEGRITY-SHA256, with MD5 with MESSAGE-INTEGRITY.
    pub password_algorithms: Vec<PasswordAlgorithm>,
    /// Send USERHASH instead of USERNAME when the server's nonce offers
    /// username anonymity (RFC 8489 §9.2). Default false.
    pub use_userhash: bool,
    /// REQUESTED-TRANSPORT, the IP protocol number (17, UDP; the default).
    pub requested_transport: u8,
    /// REQUESTED-ADDRESS-FAMILY (IPv4 when `None`).
    pub requested_family: Option<AddressFamily>,
    /// Ask for an IPv6 relayed address too (ADDITIONAL-ADDRESS-FAMILY).
    pub dual_stack: bool,
    /// LIFETIME asked for in Allocate and Refresh; `None`: the server's default.
    pub lifetime: Option<Duration>,
    /// EVEN-PORT: `Some(reserve_next)`.
    pub even_port: Option<bool>,
    /// RESERVATION-TOKEN from an earlier allocation's EVEN-PORT.
    pub reservation_token: Option<[u8; 8]>,
    /// Send DONT-FRAGMENT in Allocate.
    pub dont_fragment: bool,
    /// SOFTWARE in requests.
    pub software: Option<String>,
    /// Permissions (and channels, whose ChannelBind also refreshes the
    /// permission) are refreshed this long after they were last confirmed.
    /// Default 240 s (permissions last 300 s).
    pub permission_refresh: Duration,
    /// 438 Stale Nonce answers in a row that are retried. Default 3.
    pub max_stale_nonce_retries: u32,
    /// Retransmission timers.
    pub transaction: TransactionConfig,
    /// Seed of the client's RNG (transaction ids). `None`: OS entropy.
    pub rng_seed: Option<u64>,
}

impl ClientConfig {
    /// Defaults for a client at `local` of the server at `server`.
    pub fn new(
        local: SocketAddr,
        server: SocketAddr,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        ClientConfig {
            local,
            server,
            transport: Transport::Udp,
            username: username.into(),
            password: password.into(),
            password_algorithms: vec![PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5],
            use_userhash: false,
            requested_transport: PROTO_UDP,
            requested_family: None,
            dual_stack: false,
            lifetime: None,
            even_port: None,
            reservation_token: None,
            dont_fragment: false,
            software: None,
            permission_refresh: Duration::from_secs(240),
            max_stale_nonce_retries: 3,
            transaction: TransactionConfig::default(),
            rng_seed: None,
        }
    }
}

/// Where the client's allocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// [`TurnClient::allocate`] not called yet.
    Idle,
    /// Allocate in flight.
    Allocating,
    /// The allocation exists.
    Allocated,
    /// A Refresh with lifetime 0 is in flight.
    Deleting,
    /// The allocation was deleted.
    Closed,
    /// Allocation failed or was lost (see [`ClientEvent::AllocationFailed`]).
    Failed,
}

/// Misuse of the client's commands.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// `allocate` was already called.
    #[error("allocate was already called")]
    AlreadyStarted,
    /// The command needs an allocation.
    #[error("there is no allocation")]
    NotAllocated,
    /// No permission was asked for the peer's IP.
    #[error("no permission for this peer")]
    NoPermission,
    /// The allocation has no relayed address of the peer's family.
    #[error("no relayed address of the peer's address family")]
    FamilyMismatch,
    /// All 4096 channel numbers are in use.
    #[error("no free channel number")]
    NoChannelAvailable,
    /// The data does not fit one message.
    #[error("data too large for one message")]
    TooLarge,
    /// The request could not be encoded (e.g. an over-long username).
    #[error("the request could not be encoded")]
    Encode,
}

/// What the client wants the application to know.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The allocation exists.
    Allocated {
        /// Relayed addresses (two for a dual-stack allocation).
        relayed: Vec<SocketAddr>,
        /// The client's address as the server saw it.
        mapped: Option<SocketAddr>,
        /// The lifetime granted.
        lifetime: Duration,
        /// The RESERVATION-TOKEN for the next port, with EVEN-PORT R.
        reservation_token: Option<[u8; 8]>,
        /// One family of a dual-stack request failed: (family, code).
        family_error: Option<(AddressFamily, u16)>,
    },
    /// Allocate failed, or a Refresh failed and the allocation is lost.
    AllocationFailed {
        /// The STUN error code; `None` when the server never answered.
        code: Option<u16>,
        /// The server's reason phrase, or what went wrong.
        reason: String,
    },
    /// A Refresh succeeded.
    Refreshed {
        /// The new lifetime.
        lifetime: Duration,
    },
    /// The allocation was deleted by [`TurnClient::close`] (also reported
    /// when the server did not answer: it expires by itself).
    Deleted,
    /// CreatePermission succeeded for these peers (first time or refresh).
    PermissionCreated {
        /// The peer IPs.
        peers: Vec<IpAddr>,
    },
    /// CreatePermission failed; the permissions are dropped.
    PermissionFailed {
        /// The peer IPs.
        peers: Vec<IpAddr>,
        /// The STUN error code (403: the server refuses these peers); `None`
        /// on timeout.
        code: Option<u16>,
    },
    /// A channel is bound (first time only, not on refreshes).
    ChannelBound {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
    },
    /// ChannelBind failed; the channel is dropped.
    ChannelBindFailed {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
        /// The STUN error code; `None` on timeout.
        code: Option<u16>,
    },
    /// Data from a peer (a Data indication or ChannelData).
    Data {
        /// The peer.
        peer: SocketAddr,
        /// The application data.
        data: Vec<u8>,
    },
    /// A Connect succeeded (RFC 6062 §4.3): the server holds a TCP
    /// connection to the peer. Open a new connection to the server and send
    /// [`TurnClient::connection_bind_request`] on it within 30 s.
    PeerConnected {
        /// The peer.
        peer: SocketAddr,
        /// The CONNECTION-ID.
        connection_id: u32,
    },
    /// A Connect failed (446: already connected, 447: the peer could not
    /// be reached, `None`: no answer).
    ConnectFailed {
        /// The peer.
        peer: SocketAddr,
        /// The STUN error code.
        code: Option<u16>,
    },
    /// A peer connected to the TCP relayed address (a ConnectionAttempt
    /// indication, RFC 6062 §4.4): bind it as for
    /// [`ClientEvent::PeerConnected`].
    ConnectionAttempt {
        /// The peer.
        peer: SocketAddr,
        /// The CONNECTION-ID.
        connection_id: u32,
    },
}

#[derive(Debug, Clone)]
enum Kind {
    Allocate,
    Refresh(Option<u32>),
    CreatePermission(Vec<IpAddr>),
    ChannelBind(u16, SocketAddr),
    Connect(SocketAddr),
    /// Built for the application's data connection, never pending here.
    ConnectionBind(u32),
}

struct Pending {
    tx: ClientTransaction,
    kind: Kind,
    with_auth: bool,
    stale_retries: u32,
}

#[derive(Clone)]
struct AuthState {
    realm: String,
    nonce: String,
    alg_list: Option<Vec<u8>>,
    alg: PasswordAlgorithm,
    key: Key,
    userhash: Option<[u8; 32]>,
}

#[derive(Debug, Clone, Copy)]
struct Perm {
    /// When to refresh; `None` while a request is in flight.
    refresh_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Chan {
    number: u16,
    confirmed: bool,
    refresh_at: Option<Instant>,
}

/// A TURN client: one allocation on one server.
///
/// Drive contract (quinn's): after [`TurnClient::handle_input`],
/// [`TurnClient::handle_timeout`] or any command (`allocate`,
/// `create_permission`, `bind_channel`, `send_to`, `close`), drain
/// [`TurnClient::poll_transmit`] (send each from `source` to
/// `destination`), then read [`TurnClient::poll_timeout`] and call
/// `handle_timeout` then, then drain [`TurnClient::poll_event`]. Make no
/// second mutation before draining.
///
/// The client handles the 401 challenge (and retries with credentials),
/// 438 Stale Nonce (retries with the new nonce), retransmissions
/// ([`ClientTransaction`]), refreshes the allocation at 80 % of its
/// lifetime, refreshes permissions and channels every
/// [`ClientConfig::permission_refresh`] (a ChannelBind refreshes both the
/// channel and its permission), and sends data as ChannelData when a channel
/// is bound, as a Send indication otherwise.
pub struct TurnClient {
    config: ClientConfig,
    rng: StdRng,
    state: ClientState,
    /// [`TurnClient::close`] was called while the Allocate was in flight:
    /// delete the allocation as soon as it is granted.
    close_when_granted: bool,
    auth: Option<AuthState>,
    pending: Vec<Pending>,
    relayed: Vec<SocketAddr>,
    mapped: Option<SocketAddr>,
    refresh_at: Option<Instant>,
    permissions: HashMap<IpAddr, Perm>,
    channels: HashMap<SocketAddr, Chan>,
    by_number: HashMap<u16, SocketAddr>,
    next_channel: u16,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ClientEvent>,
}

impl std::fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnClient")
            .field("server", &self.config.server)
            .field("state", &self.state)
            .field("relayed", &self.relayed)
            .finish()
    }
}

impl TurnClient {
    /// A client; nothing is sent before [`TurnClient::allocate`].
    pub fn new(config: ClientConfig) -> Self {
        let rng = match config.rng_seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        TurnClient {
            config,
            rng,
            state: ClientState::Idle,
            close_when_granted: false,
            auth: None,
            pending: Vec::new(),
            relayed: Vec::new(),
            mapped: None,
            refresh_at: None,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            by_number: HashMap::new(),
            next_channel: *CHANNEL_RANGE.start(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The relayed addresses, once allocated.
    pub fn relayed_addresses(&self) -> &[SocketAddr] {
        &self.relayed
    }

    /// The server-reflexive address the server reported.
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.mapped
    }

    /// The channel bound (and confirmed) to `peer`.
    pub fn channel(&self, peer: SocketAddr) -> Option<u16> {
        self.channels
            .get(&peer)
            .filter(|c| c.confirmed)
            .map(|c| c.number)
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        self.config.server
    }

    /// Start allocating.
    pub fn allocate(&mut self, now: Instant) -> Result<(), ClientError> {
        if self.state != ClientState::Idle {
            return Err(ClientError::AlreadyStarted);
        }
        self.state = ClientState::Allocating;
        self.start(now, Kind::Allocate, 0)
    }

    /// Ask for permissions for `peers` (one CreatePermission request).
    pub fn create_permission(&mut self, now: Instant, peers: &[IpAddr]) -> Result<(), ClientError> {
        self.require_allocated()?;
        for p in peers {
            self.check_family(*p)?;
        }
        for p in peers {
            self.permissions.insert(*p, Perm { refresh_at: None });
        }
        self.start(now, Kind::CreatePermission(peers.to_vec()), 0)
    }

    /// Bind a channel to `peer` (also installs the permission); returns the
    /// channel number. Data goes over the channel once
    /// [`ClientEvent::ChannelBound`] arrives.
    pub fn bind_channel(&mut self, now: Instant, peer: SocketAddr) -> Result<u16, ClientError> {
        self.require_allocated()?;
        self.check_family(peer.ip())?;
        if let Some(c) = self.channels.get(&peer) {
            return Ok(c.number);
        }
        let number = self.free_channel().ok_or(ClientError::NoChannelAvailable)?;
        self.channels.insert(
            peer,
            Chan {
                number,
                confirmed: false,
                refresh_at: None,
            },
        );
        self.by_number.insert(number, peer);
        self.permissions
            .entry(peer.ip())
            .or_insert(Perm { refresh_at: None });
        self.start(now, Kind::ChannelBind(number, peer), 0)?;
        Ok(number)
    }

    /// Send `data` to `peer` through the relay: ChannelData when a channel
    /// is bound, a Send indication otherwise (a permission must have been
    /// asked for).
    pub fn send_to(
        &mut self,
        _now: Instant,
        peer: SocketAddr,
        data: &[u8],
    ) -> Result<(), ClientError> {
        self.require_allocated()?;
        self.check_family(peer.ip())?;
        let mut buf = Vec::with_capacity(data.len() + 40);
        if let Some(n) = self.channel(peer) {
            let cd = ChannelData::new(n, data).map_err(|_| ClientError::TooLarge)?;
            cd.encode(&mut buf, self.config.transport.is_reliable())
                .map_err(|_| ClientError::TooLarge)?;
        } else {
            if !self.permissions.contains_key(&peer.ip()) {
                return Err(ClientError::NoPermission);
            }
            let tid = TransactionId::random(&mut self.rng);
            let mut b = MessageBuilder::new(
                &mut buf,
                MessageType::new(Method::SEND, MessageClass::Indication),
                tid,
            )
            .map_err(|_| ClientError::TooLarge)?;
            b.add(&XorPeerAddress(peer))
                .map_err(|_| ClientError::TooLarge)?;
            b.add(&Data(data)).map_err(|_| ClientError::TooLarge)?;
        }
        self.transmits.push_back(self.transmit(buf));
        Ok(())
    }

    /// Ask the server to open a TCP connection to `peer` from a TCP relayed
    /// address (RFC 6062 Connect; allocate with
    /// [`ClientConfig::requested_transport`] = TCP over TCP or TLS). Reported
    /// by [`ClientEvent::PeerConnected`] or [`ClientEvent::ConnectFailed`].
    pub fn connect(&mut self, now: Instant, peer: SocketAddr) -> Result<(), ClientError> {
        self.require_allocated()?;
        self.check_family(peer.ip())?;
        self.start(now, Kind::Connect(peer), 0)
    }

    /// A signed ConnectionBind request for `connection_id` (RFC 6062 §4.3),
    /// to write as the first bytes of a new TCP/TLS connection to the
    /// server; it is signed with this allocation's credentials and nonce.
    /// Check the answer with [`TurnClient::connection_bind_outcome`]; after a
    /// success, that connection carries the peer's bytes, unframed.
    pub fn connection_bind_request(&mut self, connection_id: u32) -> Result<Vec<u8>, ClientError> {
        self.require_allocated()?;
        let tid = TransactionId::random(&mut self.rng);
        self.build(&Kind::ConnectionBind(connection_id), tid)
            .map_err(|_| ClientError::Encode)
    }

    /// Whether `response` (read on the data connection) answers a
    /// ConnectionBind with success (`Ok`, signed with our key) or an error
    /// (`Err(code)`); `None` if it is not such an answer.
    pub fn connection_bind_outcome(&self, response: &[u8]) -> Option<Result<(), u16>> {
        let msg = Message::decode(response).ok()?;
        if msg.typ().method != Method::CONNECTION_BIND {
            return None;
        }
        match msg.typ().class {
            MessageClass::Success => {
                let a = self.auth.as_ref()?;
                let signed = if msg.has_integrity_sha256() {
                    msg.verify_integrity_sha256(&a.key).is_ok()
                } else {
                    msg.verify_integrity(&a.key).is_ok()
                };
                signed.then_some(Ok(()))
            }
            MessageClass::Error => {
                let code = msg
                    .get::<ErrorCode>()
                    .ok()
                    .flatten()
                    .map_or(0, |e| e.code());
                Some(Err(code))
            }
            _ => None,
        }
    }

    /// Delete the allocation (Refresh with lifetime 0). Called while the
    /// Allocate is in flight, it lets the request finish and deletes what
    /// the server grants at once ([`ClientEvent::Deleted`], no
    /// [`ClientEvent::Allocated`]).
    pub fn close(&mut self, now: Instant) -> Result<(), ClientError> {
        match self.state {
            ClientState::Allocated => {
                self.state = ClientState::Deleting;
                self.refresh_at = None;
                self.permissions.clear();
                self.channels.clear();
                self.by_number.clear();
                self.pending
                    .retain(|p| matches!(p.kind, Kind::Refresh(Some(0))));
                self.start(now, Kind::Refresh(Some(0)), 0)
            }
            ClientState::Allocating => {
                // The server may grant it anyway: keep the request, and
                // delete what it grants at once (see the Allocate answer).
                self.close_when_granted = true;
                self.pending.retain(|p| matches!(p.kind, Kind::Allocate));
                Ok(())
            }
            ClientState::Idle => {
                self.pending.clear();
                self.state = ClientState::Closed;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The next packet to send. Requests go before data: a Send indication
    /// or ChannelData queued right after a CreatePermission or ChannelBind
    /// then reaches the server after the request that makes it valid.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let request = self
            .pending
            .iter_mut()
            .find_map(|p| p.tx.poll_transmit().map(<[u8]>::to_vec));
        if let Some(b) = request {
            return Some(self.transmit(b));
        }
        self.transmits.pop_front()
    }

    /// When to call [`TurnClient::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tx = self.pending.iter().filter_map(|p| p.tx.poll_timeout());
        let refresh = self
            .refresh_at
            .filter(|_| self.state == ClientState::Allocated);
        let perms = self.permissions.values().filter_map(|p| p.refresh_at);
        let chans = self.channels.values().filter_map(|c| c.refresh_at);
        tx.chain(refresh).chain(perms).chain(chans).min()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Retransmit, time out, and refresh what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut failed = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            self.pending[i].tx.handle_timeout(now);
            if self.pending[i].tx.outcome() == Some(TransactionOutcome::TimedOut) {
                failed.push(self.pending.swap_remove(i).kind);
            } else {
                i += 1;
            }
        }
        for kind in failed {
            self.fail(kind, None, "timed out".into());
        }
        if self.state != ClientState::Allocated {
            return;
        }
        if self.refresh_at.is_some_and(|t| t <= now) {
            self.refresh_at = None;
            let life = self.requested_lifetime();
            // A failed refresh is reported as an event.
            let _ = self.start(now, Kind::Refresh(life), 0);
        }
        let due: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, p)| p.refresh_at.is_some_and(|t| t <= now))
            .map(|(ip, _)| *ip)
            .collect();
        if !due.is_empty() {
            for ip in &due {
                if let Some(p) = self.permissions.get_mut(ip) {
                    p.refresh_at = None;
                }
            }
            let _ = self.start(now, Kind::CreatePermission(due), 0);
        }
        let chans: Vec<(SocketAddr, u16)> = self
            .channels
            .iter()
            .filter(|(_, c)| c.refresh_at.is_some_and(|t| t <= now))
            .map(|(p, c)| (*p, c.number))
            .collect();
        for (peer, number) in chans {
            if let Some(c) = self.channels.get_mut(&peer) {
                c.refresh_at = None;
            }
            let _ = self.start(now, Kind::ChannelBind(number, peer), 0);
        }
    }

    /// A datagram arrived. Returns whether it was TURN traffic from the
    /// server (a response to one of the client's requests, a Data
    /// indication or ChannelData); anything else is left to the caller.
    pub fn handle_input(&mut self, now: Instant, d: Datagram<'_>) -> bool {
        if d.remote != self.config.server {
            return false;
        }
        match classify(d.bytes) {
            PacketKind::ChannelData => {
                let Ok(cd) = ChannelData::decode(d.bytes) else {
                    return false;
                };
                if let Some(peer) = self.by_number.get(&cd.channel()) {
                    self.events.push_back(ClientEvent::Data {
                        peer: *peer,
                        data: cd.data().to_vec(),
                    });
                }
                true
            }
            PacketKind::Stun => match Message::decode(d.bytes) {
                Ok(msg) => self.handle_stun(now, &msg),
                Err(_) => false,
            },
            _ => false,
        }
    }

    // ------------------------------------------------------------ internals

    fn transmit(&self, contents: Vec<u8>) -> Transmit {
        Transmit {
            transport: self.config.transport,
            source: self.config.local,
            destination: self.config.server,
            contents,
        }
    }

    fn require_allocated(&self) -> Result<(), ClientError> {
        if self.state == ClientState::Allocated {
            Ok(())
        } else {
            Err(ClientError::NotAllocated)
        }
    }

    fn check_family(&self, ip: IpAddr) -> Result<(), ClientError> {
        if self.relayed.iter().any(|r| r.is_ipv4() == ip.is_ipv4()) {
            Ok(())
        } else {
            Err(ClientError::FamilyMismatch)
        }
    }

    fn free_channel(&mut self) -> Option<u16> {
        for _ in 0..CHANNEL_RANGE.len() {
            let n = self.next_channel;
            self.next_channel = if n >= *CHANNEL_RANGE.end() {
                *CHANNEL_RANGE.start()
            } else {
                n + 1
            };
            if !self.by_number.contains_key(&n) {
                return Some(n);
            }
        }
        None
    }

    fn requested_lifetime(&self) -> Option<u32> {
        self.config
            .lifetime
            .map(|l| u32::try_from(l.as_secs()).unwrap_or(u32::MAX).max(1))
    }

    fn start(&mut self, now: Instant, kind: Kind, stale_retries: u32) -> Result<(), ClientError> {
        let tid = TransactionId::random(&mut self.rng);
        let bytes = self.build(&kind, tid).map_err(|_| ClientError::Encode)?;
        let mut tx = ClientTransaction::new(
            now,
            tid,
            bytes,
            self.config.transport.is_reliable(),
            self.config.transaction,
        );
        // Arms the first transmission (see ClientTransaction's contract).
        tx.handle_timeout(now);
        self.pending.push(Pending {
            tx,
            kind,
            with_auth: self.auth.is_some(),
            stale_retries,
        });
        Ok(())
    }

    fn build(&self, kind: &Kind, tid: TransactionId) -> Result<Vec<u8>, EncodeError> {
        let method = match kind {
            Kind::Allocate => Method::ALLOCATE,
            Kind::Refresh(_) => Method::REFRESH,
            Kind::CreatePermission(_) => Method::CREATE_PERMISSION,
            Kind::ChannelBind(..) => Method::CHANNEL_BIND,
            Kind::Connect(_) => Method::CONNECT,
            Kind::ConnectionBind(_) => Method::CONNECTION_BIND,
        };
        let c = &self.config;
        let mut buf = Vec::with_capacity(160);
        let mut b = MessageBuilder::new(
            &mut buf,
            MessageType::new(method, MessageClass::Request),
            tid,
        )?;
        match kind {
            Kind::Allocate => {
                b.add(&RequestedTransport(c.requested_transport))?;
                if c.dual_stack {
                    b.add(&AdditionalAddressFamily(AddressFamily::V6))?;
                } else if let Some(f) = c.requested_family {
                    b.add(&RequestedAddressFamily(f))?;
                }
                if let Some(r) = c.even_port {
                    b.add(&EvenPort { reserve_next: r })?;
                }
                if let Some(t) = c.reservation_token {
                    b.add(&ReservationToken(t))?;
                }
                if c.dont_fragment {
                    b.add(&DontFragment)?;
                }
                if let Some(l) = self.requested_lifetime() {
                    b.add(&Lifetime(l))?;
                }
            }
            Kind::Refresh(life) => {
                if let Some(l) = life {
                    b.add(&Lifetime(*l))?;
                }
            }
            Kind::CreatePermission(peers) => {
                for p in peers {
                    b.add(&XorPeerAddress(SocketAddr::new(*p, 0)))?;
                }
            }
            Kind::ChannelBind(n, peer) => {
                b.add(&ChannelNumber(*n))?;
                b.add(&XorPeerAddress(*peer))?;
            }
            Kind::Connect(peer) => {
                b.add(&XorPeerAddress(*peer))?;
            }
            Kind::ConnectionBind(id) => {
                b.add(&ConnectionId(*id))?;
            }
        }
        if let Some(sw) = c.software.as_deref().and_then(|s| Software::new(s).ok()) {
            b.add(&sw)?;
        }
        if let Some(a) = &self.auth {
            let bad = |_| EncodeError::TooLarge;
            match a.userhash {
                Some(h) => b.add(&Userhash(h))?,
                None => b.add(&Username::new(&c.username).map_err(bad)?)?,
            };
            b.add(&Realm::new(&a.realm).map_err(bad)?)?;
            b.add(&Nonce::new(&a.nonce).map_err(bad)?)?;
            if let Some(list) = &a.alg_list {
                b.add(&PasswordAlgorithms::Wire(list))?;
                b.add(&a.alg)?;
            }
            if a.alg == PasswordAlgorithm::Sha256 {
                b.add_message_integrity_sha256(&a.key)?;
            } else {
                b.add_message_integrity(&a.key)?;
            }
        }
        b.add_fingerprint()?;
        Ok(buf)
    }

    fn handle_stun(&mut self, now: Instant, msg: &Message<'_>) -> bool {
        let typ = msg.typ();
        if typ.class == MessageClass::Indication && typ.method == Method::DATA {
            if let (Ok(Some(XorPeerAddress(peer))), Ok(Some(Data(data)))) =
                (msg.get::<XorPeerAddress>(), msg.get::<Data>())
            {
                self.events.push_back(ClientEvent::Data {
                    peer,
                    data: data.to_vec(),
                });
            }
            return true;
        }
        if typ.class == MessageClass::Indication && typ.method == Method::CONNECTION_ATTEMPT {
            if let (Ok(Some(XorPeerAddress(peer))), Ok(Some(ConnectionId(connection_id)))) =
                (msg.get::<XorPeerAddress>(), msg.get::<ConnectionId>())
            {
                self.events.push_back(ClientEvent::ConnectionAttempt {
                    peer,
                    connection_id,
                });
            }
            return true;
        }
        if !matches!(typ.class, MessageClass::Success | MessageClass::Error) {
            return false;
        }
        let Some(i) = self
            .pending
            .iter()
            .position(|p| p.tx.transaction_id() == msg.transaction_id())
        else {
            return false;
        };
        // Success responses to signed requests must be signed with our key;
        // a forged or garbled one is ignored and the transaction goes on.
        if typ.class == MessageClass::Success && self.pending[i].with_auth {
            let ok = self.auth.as_ref().is_some_and(|a| {
                if msg.has_integrity_sha256() {
                    msg.verify_integrity_sha256(&a.key).is_ok()
                } else {
                    msg.verify_integrity(&a.key).is_ok()
                }
            });
            if !ok {
                return true;
            }
        }
        let p = self.pending.swap_remove(i);
        if typ.class == MessageClass::Success {
            self.succeeded(now, p.kind, msg);
        } else {
            self.errored(now, p, msg);
        }
        true
    }

    fn succeeded(&mut self, now: Instant, kind: Kind, msg: &Message<'_>) {
        match kind {
            Kind::Allocate => {
                let tid = msg.transaction_id();
                self.relayed = msg
                    .attributes()
                    .filter(|a| a.typ == AttrType::XOR_RELAYED_ADDRESS)
                    .filter_map(|a| XorRelayedAddress::decode(a.value, &tid).ok())
                    .map(|a| a.0)
                    .collect();
                if self.relayed.is_empty() {
                    self.fail(Kind::Allocate, None, "no XOR-RELAYED-ADDRESS".into());
                    return;
                }
                self.mapped = msg.get::<XorMappedAddress>().ok().flatten().map(|a| a.0);
                let lifetime = self.lifetime_of(msg);
                let reservation_token = msg.get::<ReservationToken>().ok().flatten().map(|t| t.0);
                let family_error = msg
                    .get::<AddressErrorCode>()
                    .ok()
                    .flatten()
                    .map(|e| (e.family, e.code));
                self.state = ClientState::Allocated;
                self.refresh_at = Some(now + lifetime * 4 / 5);
                if self.close_when_granted {
                    // Closed while allocating: delete it now; the caller
                    // hears `Deleted` (or a failure), not `Allocated`.
                    // (Encoding a Refresh cannot fail with a key that
                    // signed the Allocate; if it did, the allocation would
                    // expire by itself.)
                    let _ = self.close(now);
                    return;
                }
                self.events.push_back(ClientEvent::Allocated {
                    relayed: self.relayed.clone(),
                    mapped: self.mapped,
                    lifetime,
                    reservation_token,
                    family_error,
                });
            }
            Kind::Refresh(Some(0)) => self.deleted(),
            Kind::Refresh(_) => {
                if self.state == ClientState::Allocated {
                    let lifetime = self.lifetime_of(msg);
                    self.refresh_at = Some(now + lifetime * 4 / 5);
                    self.events.push_back(ClientEvent::Refreshed { lifetime });
                }
            }
            Kind::CreatePermission(peers) => {
                let at = now + self.config.permission_refresh;
                let mut confirmed = Vec::new();
                for p in peers {
                    if let Some(perm) = self.permissions.get_mut(&p) {
                        perm.refresh_at = Some(at);
                        confirmed.push(p);
                    }
                }
                if !confirmed.is_empty() {
                    self.events
                        .push_back(ClientEvent::PermissionCreated { peers: confirmed });
                }
            }
            Kind::ChannelBind(number, peer) => {
                let at = now + self.config.permission_refresh;
                let Some(c) = self.channels.get_mut(&peer) else {
                    return;
                };
                let first = !c.confirmed;
                c.confirmed = true;
                c.refresh_at = Some(at);
                // The binding refreshed the permission too; the channel's own
                // refresh keeps it alive from now on.
                if let Some(perm) = self.permissions.get_mut(&peer.ip()) {
                    if perm.refresh_at.is_none_or(|t| t < at) {
                        perm.refresh_at = Some(at);
                    }
                }
                if first {
                    self.events.push_back(ClientEvent::ChannelBound {
                        peer,
                        channel: number,
                    });
                }
            }
            Kind::Connect(peer) => match msg.get::<ConnectionId>() {
                Ok(Some(ConnectionId(connection_id))) => {
                    self.events.push_back(ClientEvent::PeerConnected {
                        peer,
                        connection_id,
                    });
                }
                _ => self.fail(Kind::Connect(peer), None, "no CONNECTION-ID".into()),
            },
            Kind::ConnectionBind(_) => {}
        }
    }

    fn lifetime_of(&self, msg: &Message<'_>) -> Duration {
        msg.get::<Lifetime>()
            .ok()
            .flatten()
            .map(|l| Duration::from_secs(u64::from(l.0)))
            .unwrap_or(Duration::from_secs(600))
    }

    fn errored(&mut self, now: Instant, p: Pending, msg: &Message<'_>) {
        let (code, reason) = match msg.get::<ErrorCode>() {
            Ok(Some(e)) => (Some(e.code()), e.reason().to_owned()),
            _ => (None, "malformed error response".to_owned()),
        };
        match code {
            Some(401) if !p.with_auth => match self.learn_auth(msg) {
                Ok(()) => {
                    let _ = self.start(now, p.kind, p.stale_retries);
                }
                Err(why) => self.fail(p.kind, code, why.into()),
            },
            Some(438) if p.stale_retries < self.config.max_stale_nonce_retries => {
                let nonce = msg
                    .get::<Nonce>()
                    .ok()
                    .flatten()
                    .map(|n| n.as_str().to_owned());
                match (nonce, self.auth.as_mut()) {
                    (Some(n), Some(a)) => {
                        a.nonce = n;
                        let _ = self.start(now, p.kind, p.stale_retries + 1);
                    }
                    (Some(_), None) => match self.learn_auth(msg) {
                        Ok(()) => {
                            let _ = self.start(now, p.kind, p.stale_retries + 1);
                        }
                        Err(why) => self.fail(p.kind, code, why.into()),
                    },
                    _ => self.fail(p.kind, code, reason),
                }
            }
            // A retransmitted delete whose first copy already deleted it.
            Some(437) if matches!(p.kind, Kind::Refresh(Some(0))) => self.deleted(),
            _ => self.fail(p.kind, code, reason),
        }
    }

    /// Take REALM, NONCE and the algorithm from a 401 (RFC 8489 §9.2.3).
    fn learn_auth(&mut self, msg: &Message<'_>) -> Result<(), &'static str> {
        let realm = msg
            .get::<Realm>()
            .ok()
            .flatten()
            .ok_or("401 without REALM")?;
        let nonce = msg
            .get::<Nonce>()
            .ok()
            .flatten()
            .ok_or("401 without NONCE")?;
        let features = nonce_features(nonce.as_str()).unwrap_or(0);
        let (alg, alg_list) = if features & FEATURE_PASSWORD_ALGORITHMS != 0 {
            match msg.get_raw(AttrType::PASSWORD_ALGORITHMS) {
                None => (PasswordAlgorithm::Md5, None),
                Some(raw) => {
                    let list = PasswordAlgorithms::decode(raw.value, &msg.transaction_id())
                        .map_err(|_| "malformed PASSWORD-ALGORITHMS")?;
                    let alg = list
                        .iter()
                        .find(|a| self.config.password_algorithms.contains(a))
                        .ok_or("no common password algorithm")?;
                    (alg, Some(raw.value.to_vec()))
                }
            }
        } else {
            (PasswordAlgorithm::Md5, None)
        };
        let c = &self.config;
        let key = Key::long_term(&c.username, realm.as_str(), &c.password, alg)
            .map_err(|_| "credentials cannot be prepared")?;
        let userhash = if c.use_userhash && features & FEATURE_USERNAME_ANONYMITY != 0 {
            Some(userhash(&c.username, realm.as_str()).map_err(|_| "username cannot be prepared")?)
        } else {
            None
        };
        self.auth = Some(AuthState {
            realm: realm.as_str().to_owned(),
            nonce: nonce.as_str().to_owned(),
            alg_list,
            alg,
            key,
            userhash,
        });
        Ok(())
    }

    fn deleted(&mut self) {
        self.state = ClientState::Closed;
        self.relayed.clear();
        self.refresh_at = None;
        self.permissions.clear();
        self.channels.clear();
        self.by_number.clear();
        self.pending.clear();
        self.events.push_back(ClientEvent::Deleted);
    }

    fn fail(&mut self, kind: Kind, code: Option<u16>, reason: String) {
        match kind {
            Kind::Allocate => {
                self.state = ClientState::Failed;
                self.events
                    .push_back(ClientEvent::AllocationFailed { code, reason });
            }
            Kind::Refresh(Some(0)) => self.deleted(),
            Kind::Refresh(_) => {
                if self.state == ClientState::Allocated {
                    self.state = ClientState::Failed;
                    self.refresh_at = None;
                    self.permissions.clear();
                    self.channels.clear();
                    self.by_number.clear();
                    self.pending.clear();
                    self.events
                        .push_back(ClientEvent::AllocationFailed { code, reason });
                }
            }
            Kind::CreatePermission(peers) => {
                for p in &peers {
                    let has_channel = self.channels.keys().any(|c| c.ip() == *p);
                    if !has_channel {
                        self.permissions.remove(p);
                    }
                }
                self.events
                    .push_back(ClientEvent::PermissionFailed { peers, code });
            }
            Kind::ChannelBind(channel, peer) => {
                self.channels.remove(&peer);
                self.by_number.remove(&channel);
                let other_use = self.channels.keys().any(|c| c.ip() == peer.ip());
                let perm_pending = self
                    .permissions
                    .get(&peer.ip())
                    .is_some_and(|p| p.refresh_at.is_none());
                if !other_use && perm_pending {
                    self.permissions.remove(&peer.ip());
                }
                self.events.push_back(ClientEvent::ChannelBindFailed {
                    peer,
                    channel,
                    code,
                });
            }
            Kind::Connect(peer) => {
                self.events
                    .push_back(ClientEvent::ConnectFailed { peer, code });
            }
            Kind::ConnectionBind(_) => {}
        }
    }
}
