//! The TURN client (RFC 8656) as a sans-IO state machine.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use p2p_stun::attr::{
    AdditionalAddressFamily, AddressFamily, ChannelNumber, ConnectionId, Data, DontFragment,
    EvenPort, Lifetime, Nonce, PasswordAlgorithm, PasswordAlgorithms, Realm,
    RequestedAddressFamily, RequestedTransport, ReservationToken, Software, Userhash, Username,
    XorPeerAddress,
};
use p2p_stun::{
    classify, ChannelData, ClientTransaction, EncodeError, Key, Message, MessageBuilder,
    MessageClass, MessageType, Method, PacketKind, TransactionId, TransactionOutcome,
    CHANNEL_RANGE,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

use p2p_proto::{Datagram, Handled, Machine, Transmit};

mod config;
mod events;
mod responses;

pub use config::ClientConfig;
pub use events::{refusal_reason, ClientError, ClientEvent, ClientOutput, ClientState};

#[derive(Debug, Clone)]
enum Kind {
    Allocate,
    Refresh(Option<u32>),
    CreatePermission(Vec<IpAddr>),
    ChannelBind(u16, SocketAddr),
    Connect(SocketAddr),
    /// On the application's data connection at this local address.
    ConnectionBind(u32, SocketAddr),
}

struct Pending {
    tx: ClientTransaction,
    /// The local address the request goes from.
    source: SocketAddr,
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
/// A [`p2p_proto::Machine`]: created idle by [`TurnClient::new`], it
/// sends its Allocate at its first [`handle_timeout`](Machine::handle_timeout).
/// After that call, any [`handle_input`](Machine::handle_input) or any
/// command (`create_permission`, `bind_channel`, `send_to`, `connect`,
/// `connection_bind`, `close`), drain [`poll_output`](Machine::poll_output)
/// ([`ClientOutput`]: events, then transmits to send from their `source`),
/// then call `handle_timeout` at [`poll_timeout`](Machine::poll_timeout).
/// [`handle_input`](Machine::handle_input) takes what comes from the server
/// and says [`Handled::NotMine`] for anything else.
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
    /// Servers left after a 300 Try Alternate, in order.
    left: Vec<SocketAddr>,
}

/// How many 300 Try Alternate redirects a client follows for one
/// allocation before it fails.
pub const MAX_REDIRECTS: usize = 3;

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
    /// A client; nothing is sent before its first
    /// [`handle_timeout`](Machine::handle_timeout), which starts allocating.
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
            left: Vec::new(),
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
    pub fn send_to(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), ClientError> {
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
        self.transmits
            .push_back(self.transmit(self.config.local, buf));
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

    /// Bind the peer connection `connection_id` (from
    /// [`ClientEvent::PeerConnected`] or [`ClientEvent::ConnectionAttempt`])
    /// to a new TCP/TLS connection to the server whose local address is
    /// `local` (RFC 6062 §4.3): the ConnectionBind request, signed with this
    /// allocation's credentials and nonce, comes out as a transmit from
    /// `local`; write it as that connection's first bytes and feed the
    /// answer read there to [`handle_input`](Machine::handle_input)
    /// (`destination` = `local`). Reported by
    /// [`ClientEvent::ConnectionBound`] (the connection then carries the
    /// peer's bytes, unframed) or [`ClientEvent::ConnectionBindFailed`].
    pub fn connection_bind(
        &mut self,
        now: Instant,
        connection_id: u32,
        local: SocketAddr,
    ) -> Result<(), ClientError> {
        self.require_allocated()?;
        self.start(now, Kind::ConnectionBind(connection_id, local), 0)
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

    /// The driver could not open its TCP or TLS connection to the server
    /// (after a 300 Try Alternate, say), or lost it: every request under
    /// way fails at once with `reason` instead of waiting for its
    /// reliable-transport timeout (39.5 s). An Allocate under way ends
    /// with [`ClientEvent::AllocationFailed`] (no code); an allocation
    /// made over the connection is gone with it (RFC 8656 §3.1: a TCP or
    /// TLS allocation lives on its connection) and ends the same way.
    pub fn connection_failed(&mut self, reason: &str) {
        let allocated = self.state == ClientState::Allocated;
        let kinds: Vec<Kind> = self.pending.drain(..).map(|p| p.kind).collect();
        for kind in kinds {
            self.fail(kind, None, reason.to_owned());
        }
        if allocated && self.state == ClientState::Allocated {
            self.fail(Kind::Refresh(None), None, reason.to_owned());
        }
    }
}

impl Machine for TurnClient {
    type Output = ClientOutput;

    /// A datagram arrived. [`Handled::Taken`] when it is TURN traffic from
    /// the server (a response to one of the client's requests, a Data
    /// indication or ChannelData); anything else is left to the caller.
    fn handle_input(&mut self, now: Instant, d: Datagram<'_>) -> Handled {
        if d.source != self.config.server {
            return Handled::NotMine;
        }
        let taken = match classify(d.contents) {
            PacketKind::ChannelData => match ChannelData::decode(d.contents) {
                Ok(cd) => {
                    if let Some(peer) = self.by_number.get(&cd.channel()) {
                        self.events.push_back(ClientEvent::Data {
                            peer: *peer,
                            data: cd.data().to_vec(),
                        });
                    }
                    true
                }
                Err(_) => false,
            },
            PacketKind::Stun => match Message::decode(d.contents) {
                Ok(msg) => self.handle_stun(now, &msg),
                Err(_) => false,
            },
            _ => false,
        };
        if taken {
            Handled::Taken
        } else {
            Handled::NotMine
        }
    }

    /// Start allocating (the first call), then retransmit, time out, and
    /// refresh what is due at `now`.
    fn handle_timeout(&mut self, now: Instant) {
        if self.state == ClientState::Idle {
            self.state = ClientState::Allocating;
            // Encoding the Allocate fails only for an over-long username
            // or software string: reported as a failed allocation.
            if self.start(now, Kind::Allocate, 0).is_err() {
                self.fail(
                    Kind::Allocate,
                    None,
                    "the Allocate could not be encoded".into(),
                );
            }
        }
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

    /// Events, then transmits: requests (first sends and retransmissions)
    /// before data.
    fn poll_output(&mut self) -> Option<ClientOutput> {
        if let Some(e) = self.events.pop_front() {
            return Some(ClientOutput::Event(e));
        }
        let request = self
            .pending
            .iter_mut()
            .find_map(|p| p.tx.poll_transmit().map(|b| (p.source, b.to_vec())));
        if let Some((source, b)) = request {
            return Some(ClientOutput::Transmit(self.transmit(source, b)));
        }
        self.transmits.pop_front().map(ClientOutput::Transmit)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let tx = self.pending.iter().filter_map(|p| p.tx.poll_timeout());
        let refresh = self
            .refresh_at
            .filter(|_| self.state == ClientState::Allocated);
        let perms = self.permissions.values().filter_map(|p| p.refresh_at);
        let chans = self.channels.values().filter_map(|c| c.refresh_at);
        tx.chain(refresh).chain(perms).chain(chans).min()
    }
}

impl TurnClient {
    // ------------------------------------------------------------ internals

    fn transmit(&self, source: SocketAddr, contents: Vec<u8>) -> Transmit {
        Transmit::new(self.config.transport, source, self.config.server, contents)
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
        let source = match kind {
            Kind::ConnectionBind(_, local) => local,
            _ => self.config.local,
        };
        self.pending.push(Pending {
            tx,
            source,
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
            Kind::ConnectionBind(..) => Method::CONNECTION_BIND,
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
            Kind::ConnectionBind(id, _) => {
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
}
