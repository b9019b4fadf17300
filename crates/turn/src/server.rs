//! The TURN server (RFC 8656) as a sans-IO state machine.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use p2p_stun::attr::{
    AdditionalAddressFamily, AddressErrorCode, AddressFamily, ChannelNumber, ConnectionId, Data,
    DontFragment, ErrorCode, EvenPort, Lifetime, Nonce, PasswordAlgorithm, PasswordAlgorithms,
    Realm, RequestedAddressFamily, RequestedTransport, ReservationToken, Software,
    UnknownAttributes, Userhash, Username, XorMappedAddress, XorPeerAddress, XorRelayedAddress,
    PROTO_TCP, PROTO_UDP,
};
use p2p_stun::{
    classify, AttrType, ChannelData, EncodeError, Key, Message, MessageBuilder, MessageClass,
    MessageType, Method, PacketKind, TransactionId, HEADER_LEN, MAGIC_COOKIE,
};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::auth::{
    nonce_features, CredentialStore, NonceMinter, FEATURE_PASSWORD_ALGORITHMS,
    FEATURE_USERNAME_ANONYMITY,
};
use crate::policy::{canonical, PeerPolicy};
use crate::relay::{RelayAllocator, TokenBucket};
use crate::tcp::TcpCommand;
use crate::types::{Datagram, FiveTuple, Transmit, Transport};

/// A per-allocation bandwidth cap: a token bucket over the bytes of
/// application data relayed in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth {
    /// Sustained rate, bytes per second.
    pub bytes_per_sec: u64,
    /// Bucket size, bytes (how much may pass at once after a quiet spell).
    pub burst: u64,
}

/// Settings of a [`TurnServer`]. `ServerConfig::new(realm)` gives the RFC's
/// defaults and the secure policy.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The realm of the long-term credentials.
    pub realm: String,
    /// SOFTWARE sent in authenticated responses only (never in the
    /// unauthenticated 401/400, to keep those small).
    pub software: Option<String>,
    /// Password algorithms offered in PASSWORD-ALGORITHMS, in order of
    /// preference (RFC 8489 §9.2). Empty: RFC 5389 behaviour (MD5 only, no
    /// PASSWORD-ALGORITHMS). Default: SHA-256, MD5.
    pub password_algorithms: Vec<PasswordAlgorithm>,
    /// How long a nonce stays valid (438 after). Default 10 minutes.
    pub nonce_lifetime: Duration,
    /// Allocation lifetime when the client asks for less or nothing. Default 600 s.
    pub default_lifetime: Duration,
    /// The longest allocation lifetime granted. Default 3600 s.
    pub max_lifetime: Duration,
    /// Permission lifetime (RFC 8656 §9: 300 s).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (RFC 8656 §12: 600 s).
    pub channel_lifetime: Duration,
    /// How long an EVEN-PORT reservation is held (RFC 8656 suggests 30 s).
    pub reservation_lifetime: Duration,
    /// Allocations one username may hold at once (486 beyond). Default 10.
    pub user_quota: Option<u32>,
    /// Allocations in all (508 beyond). Default none.
    pub total_quota: Option<u32>,
    /// Permissions one allocation may hold (508 beyond). Default 256.
    pub max_permissions: usize,
    /// Per-allocation bandwidth cap (UDP relaying; the bytes of RFC 6062
    /// TCP relays flow in the driver, which should apply it there: the
    /// daemon does). Default none.
    pub bandwidth: Option<Bandwidth>,
    /// TCP peer connections (RFC 6062: connecting, waiting for their
    /// ConnectionBind, or bound) one allocation may hold: a Connect beyond
    /// gets 508 and a peer connecting beyond is refused. Default 128.
    pub max_tcp_connections: usize,
    /// Which peers may be relayed to. Default: [`PeerPolicy::new`].
    pub peer_policy: PeerPolicy,
    /// The server's own addresses, refused as peers (the listening address
    /// of the request and the allocation's relayed addresses are refused
    /// too), except for relaying between allocations: see [`PeerPolicy`].
    pub own_addresses: Vec<IpAddr>,
    /// The server's listening sockets (STUN/TURN, signaling, metrics…):
    /// data is never relayed to them, whatever the policy. An unspecified
    /// IP (`0.0.0.0:8080`) stands for that port on every own address. The
    /// listening address a request came to is always included.
    pub service_addresses: Vec<SocketAddr>,
    /// Answer STUN Binding requests on listening addresses (no
    /// authentication). Default true; turn off when the daemon routes
    /// Binding elsewhere (see [`crate::is_turn_method`]).
    pub answer_binding: bool,
    /// Seed of the server's RNG (nonce key, transaction ids of Data
    /// indications, reservation tokens). `None`: OS entropy.
    pub rng_seed: Option<u64>,
    /// Publish the channels of UDP allocations through
    /// [`TurnServer::poll_route`], so that the driver can relay their
    /// ChannelData itself (a fast path). Default off.
    pub export_routes: bool,
}

impl ServerConfig {
    /// Defaults for `realm`.
    pub fn new(realm: impl Into<String>) -> Self {
        ServerConfig {
            realm: realm.into(),
            software: None,
            password_algorithms: vec![PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5],
            nonce_lifetime: Duration::from_secs(600),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            reservation_lifetime: Duration::from_secs(30),
            user_quota: Some(10),
            total_quota: None,
            max_permissions: 256,
            bandwidth: None,
            max_tcp_connections: 128,
            peer_policy: PeerPolicy::new(),
            own_addresses: Vec::new(),
            service_addresses: Vec::new(),
            answer_binding: true,
            rng_seed: None,
            export_routes: false,
        }
    }
}

/// Traffic of one allocation, reported when it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Application bytes relayed from the client to peers.
    pub bytes_to_peer: u64,
    /// Packets relayed from the client to peers.
    pub packets_to_peer: u64,
    /// Application bytes relayed from peers to the client.
    pub bytes_to_client: u64,
    /// Packets relayed from peers to the client.
    pub packets_to_client: u64,
    /// Packets dropped by the bandwidth cap.
    pub dropped_bandwidth: u64,
}

/// Server-wide counters, for metrics. Read with [`TurnServer::counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Allocations alive now.
    pub allocations_active: u64,
    /// Allocations created since start.
    pub allocations_created: u64,
    /// Allocations deleted by the client (Refresh with lifetime 0).
    pub allocations_deleted: u64,
    /// Allocations that expired.
    pub allocations_expired: u64,
    /// Allocations deleted because their TCP/TLS connection closed
    /// ([`TurnServer::connection_closed`]).
    pub allocations_closed: u64,
    /// TURN requests received (Allocate, Refresh, CreatePermission, ChannelBind).
    pub requests: u64,
    /// Error responses sent (401 challenges included).
    pub error_responses: u64,
    /// Requests whose credentials were wrong (not the first 401 challenge).
    pub auth_failures: u64,
    /// Application bytes relayed client → peer.
    pub bytes_to_peer: u64,
    /// Packets relayed client → peer.
    pub packets_to_peer: u64,
    /// Application bytes relayed peer → client.
    pub bytes_to_client: u64,
    /// Packets relayed peer → client.
    pub packets_to_client: u64,
    /// Packets dropped: no allocation for the 5-tuple or relayed address.
    pub dropped_no_allocation: u64,
    /// Packets dropped: no permission (or no channel) for the peer.
    pub dropped_no_permission: u64,
    /// Packets dropped by a bandwidth cap.
    pub dropped_bandwidth: u64,
    /// Datagrams dropped as malformed or unexpected.
    pub dropped_malformed: u64,
    /// RFC 6062 peer connections established (Connect succeeded, or a peer
    /// with a permission connected to a TCP relayed address).
    pub peer_connections: u64,
    /// RFC 6062 peer connections bound to a client data connection.
    pub peer_connections_bound: u64,
}

/// Why a request failed authentication (the client only ever sees a plain
/// 401: it is not told which part was wrong).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No such user, or its credential is not valid now (e.g. an expired
    /// REST username), or a USERHASH that matches no one.
    UnknownUser,
    /// The MESSAGE-INTEGRITY(-SHA256) did not verify (wrong password).
    BadIntegrity,
    /// The REALM is not the server's.
    WrongRealm,
}

/// What the server wants the application (metrics, logs) to know.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// An Allocate succeeded.
    AllocationCreated {
        /// The username.
        user: String,
        /// The allocation's 5-tuple.
        five_tuple: FiveTuple,
        /// Its relayed addresses (two for a dual-stack allocation).
        relayed: Vec<SocketAddr>,
        /// The lifetime granted.
        lifetime: Duration,
    },
    /// A Refresh extended an allocation.
    AllocationRefreshed {
        /// The username.
        user: String,
        /// The allocation's 5-tuple.
        five_tuple: FiveTuple,
        /// The new lifetime.
        lifetime: Duration,
    },
    /// The client deleted its allocation (Refresh with lifetime 0).
    AllocationDeleted {
        /// The username.
        user: String,
        /// The allocation's 5-tuple.
        five_tuple: FiveTuple,
        /// Its relayed addresses, now released.
        relayed: Vec<SocketAddr>,
        /// What it relayed.
        traffic: Traffic,
    },
    /// An allocation's lifetime ran out.
    AllocationExpired {
        /// The username.
        user: String,
        /// The allocation's 5-tuple.
        five_tuple: FiveTuple,
        /// Its relayed addresses, now released.
        relayed: Vec<SocketAddr>,
        /// What it relayed.
        traffic: Traffic,
    },
    /// The TCP/TLS connection of an allocation closed, so the allocation
    /// ended with it (RFC 8656 §3.1: an allocation over TCP lives as long as
    /// its connection).
    AllocationClosed {
        /// The username.
        user: String,
        /// The allocation's 5-tuple.
        five_tuple: FiveTuple,
        /// Its relayed addresses, now released.
        relayed: Vec<SocketAddr>,
        /// What it relayed.
        traffic: Traffic,
    },
    /// A new permission (not a refresh of one).
    PermissionCreated {
        /// The allocation's 5-tuple.
        five_tuple: FiveTuple,
        /// The peer IP.
        peer: IpAddr,
    },
    /// A new channel binding (not a refresh of one).
    ChannelBound {
        /// The allocation's 5-tuple.
        five_tuple: FiveTuple,
        /// The channel number.
        channel: u16,
        /// The peer.
        peer: SocketAddr,
    },
    /// A request carried wrong credentials.
    AuthFailed {
        /// Who sent it.
        remote: SocketAddr,
        /// The username it claimed, when it sent one.
        username: Option<String>,
        /// What was wrong.
        reason: AuthFailure,
    },
}

/// A read-only view of an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationInfo {
    /// The username that made it.
    pub user: String,
    /// Its relayed addresses.
    pub relayed: Vec<SocketAddr>,
    /// When it expires.
    pub expires: Instant,
    /// Permissions alive at the time asked.
    pub permissions: usize,
    /// Channels alive at the time asked.
    pub channels: usize,
    /// What it relayed so far.
    pub traffic: Traffic,
}

/// A channel whose ChannelData the driver may relay without the server:
/// see [`TurnServer::poll_route`].
///
/// Client → peer: a ChannelData datagram on `channel` from
/// `five_tuple.client` to `five_tuple.server` goes, payload only, from the
/// socket of `relayed` to `peer`. Peer → client: a datagram from `peer` on
/// `relayed` goes to the client as ChannelData on `channel` (no padding:
/// UDP) from `five_tuple.server`. Both only while the instant is before
/// `until`; after it (or for anything else) the packet goes to
/// [`TurnServer::handle_input`] as usual.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelRoute {
    /// The allocation's 5-tuple (always UDP).
    pub five_tuple: FiveTuple,
    /// The channel number.
    pub channel: u16,
    /// The peer bound to it.
    pub peer: SocketAddr,
    /// The relayed address data to `peer` leaves from.
    pub relayed: SocketAddr,
    /// The earliest of the channel's, the peer permission's and the
    /// allocation's expiry.
    pub until: Instant,
}

/// A change to the routes the driver relays itself ([`TurnServer::poll_route`]).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteUpdate {
    /// Add this route, or replace the one of the same 5-tuple and channel
    /// (a refresh moves `until`).
    Up(ChannelRoute),
    /// Remove the route of this channel; `until` is meaningless.
    Down(ChannelRoute),
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

struct Allocation {
    id: u64,
    five_tuple: FiveTuple,
    user: String,
    /// Index 0: IPv4, 1: IPv6.
    relayed: [Option<SocketAddr>; 2],
    expires: Instant,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, Channel>,
    channel_by_peer: HashMap<SocketAddr, u16>,
    bucket: Option<TokenBucket>,
    traffic: Traffic,
    /// The Allocate transaction and its success response, to answer a
    /// retransmission with the same bytes (RFC 8656 §7.2).
    allocate_tid: TransactionId,
    allocate_response: Vec<u8>,
    /// The deadline a timer-heap entry is pending for.
    scheduled: Option<Instant>,
    /// An RFC 6062 allocation (TCP relayed address).
    tcp: bool,
}

fn family_index(ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => 0,
        IpAddr::V6(_) => 1,
    }
}

impl Allocation {
    fn relayed_list(&self) -> Vec<SocketAddr> {
        self.relayed.iter().flatten().copied().collect()
    }

    fn relay_for(&self, peer: IpAddr) -> Option<SocketAddr> {
        self.relayed[family_index(peer)]
    }

    fn permitted(&self, now: Instant, peer: IpAddr) -> bool {
        self.permissions.get(&peer).is_some_and(|e| now < *e)
    }

    fn next_deadline(&self, channel_guard: Duration) -> Instant {
        let p = self.permissions.values().copied();
        let c = self.channels.values().map(|c| c.expires + channel_guard);
        p.chain(c).fold(self.expires, Instant::min)
    }

    /// Forget expired permissions, and channels past their guard time;
    /// with `routes`, say [`RouteUpdate::Down`] for each channel forgotten.
    fn purge(
        &mut self,
        now: Instant,
        channel_guard: Duration,
        mut routes: Option<&mut VecDeque<RouteUpdate>>,
    ) {
        self.permissions.retain(|_, e| now < *e);
        let by_peer = &mut self.channel_by_peer;
        let (five_tuple, relayed) = (self.five_tuple, self.relayed);
        self.channels.retain(|&number, c| {
            let keep = now < c.expires + channel_guard;
            if !keep {
                by_peer.remove(&c.peer);
                if let (Some(r), Some(relayed)) =
                    (routes.as_deref_mut(), relayed[family_index(c.peer.ip())])
                {
                    r.push_back(RouteUpdate::Down(ChannelRoute {
                        five_tuple,
                        channel: number,
                        peer: c.peer,
                        relayed,
                        until: c.expires,
                    }));
                }
            }
            keep
        });
    }

    fn take_bandwidth(&mut self, now: Instant, bytes: usize) -> bool {
        match &mut self.bucket {
            None => true,
            Some(b) => {
                let ok = b.take(now, bytes);
                if !ok {
                    self.traffic.dropped_bandwidth += 1;
                }
                ok
            }
        }
    }
}

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Refresh with lifetime 0.
    Deleted,
    /// Its lifetime ran out.
    Expired,
    /// Its TCP/TLS connection closed.
    Closed,
}

/// The result of a successful authentication.
#[derive(Clone)]
struct Auth {
    user: String,
    key: Key,
    sha256: bool,
}

/// An RFC 6062 peer connection.
struct TcpConn {
    slot: usize,
    alloc_id: u64,
    peer: SocketAddr,
    state: TcpState,
}

enum TcpState {
    /// The driver is connecting (a Connect request waits for the result).
    Connecting {
        control: FiveTuple,
        tid: TransactionId,
        auth: Box<Auth>,
        fingerprint: bool,
    },
    /// Connected, waiting for a ConnectionBind until the deadline.
    Pending { deadline: Instant },
    /// Spliced to this client data connection.
    Bound { data: FiveTuple },
}

/// How long a peer connection waits for its ConnectionBind (RFC 6062 §5.2, §5.3).
const BIND_TIMEOUT: Duration = Duration::from_secs(30);

/// After a channel binding expires, its number and peer stay reserved this
/// long (RFC 8656 §12: "5 minutes").
const CHANNEL_GUARD: Duration = Duration::from_secs(300);
/// Most buffers kept for reuse.
const POOL_MAX: usize = 1024;

/// A TURN server (RFC 8656) over UDP, with clients on UDP, TCP or TLS.
///
/// It owns no socket and reads no clock. The daemon owns the listening
/// sockets and one UDP socket per relayed address (bound by its
/// [`RelayAllocator`]), and drives the server:
///
/// - Every datagram received on a listening socket **or** on a relayed
///   socket goes to [`TurnServer::handle_input`], with `local` = the address
///   of the socket it arrived on and `remote` = the sender. The server tells
///   the two apart by looking `local` up among its relayed addresses. On a
///   TCP/TLS listening connection, the daemon frames the stream with
///   [`p2p_stun::next_frame_len`] and feeds one whole message at a time with
///   `transport = Tcp/Tls` and `remote` = the connection's peer address.
/// - After any `handle_*` call, drain [`TurnServer::poll_transmit`] and send
///   each [`Transmit`] from the socket whose address is `source` (a
///   listening address, or a relayed address for data to peers; over TCP, on
///   the connection of the 5-tuple), then give the buffer back with
///   [`TurnServer::recycle`]. Then read [`TurnServer::poll_timeout`] and
///   call [`TurnServer::handle_timeout`] at that instant (earlier is
///   harmless). Then drain [`TurnServer::poll_event`].
/// - Do not call another `handle_*` before draining (the queues would only
///   grow; nothing is lost).
///
/// STUN Binding requests on listening addresses are answered too (no
/// authentication) unless [`ServerConfig::answer_binding`] is off; use
/// [`crate::is_turn_method`] to route Binding elsewhere.
///
/// Relaying allocates only the output buffer, taken from a pool; one hash
/// lookup finds the allocation and one the permission.
pub struct TurnServer<C: CredentialStore, R: RelayAllocator> {
    config: ServerConfig,
    creds: C,
    relays: R,
    epoch: (Instant, SystemTime),
    rng: StdRng,
    nonces: NonceMinter,
    alg_list_wire: Vec<u8>,
    slots: Vec<Option<Allocation>>,
    free_slots: Vec<usize>,
    next_id: u64,
    by_tuple: HashMap<FiveTuple, usize>,
    by_relay: HashMap<SocketAddr, usize>,
    user_counts: HashMap<String, u32>,
    reservations: HashMap<[u8; 8], (SocketAddr, Instant)>,
    reservation_queue: VecDeque<(Instant, [u8; 8])>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ServerEvent>,
    pool: Vec<Vec<u8>>,
    counters: Counters,
    tcp_conns: HashMap<u32, TcpConn>,
    /// Bound client data connections → their peer connection.
    data_conns: HashMap<FiveTuple, u32>,
    /// ConnectionBind deadlines, in order (the timeout is constant).
    bind_deadlines: VecDeque<(Instant, u32)>,
    commands: VecDeque<TcpCommand>,
    /// Route changes for the driver's fast path ([`ServerConfig::export_routes`]).
    routes: VecDeque<RouteUpdate>,
}

impl<C: CredentialStore, R: RelayAllocator> std::fmt::Debug for TurnServer<C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("realm", &self.config.realm)
            .field("allocations", &self.by_tuple.len())
            .field("counters", &self.counters)
            .finish()
    }
}

impl<C: CredentialStore, R: RelayAllocator> TurnServer<C, R> {
    /// A server. `epoch` pairs a monotonic instant with the wall-clock time
    /// at that instant; the server derives wall time (for REST credential
    /// expiry) as `epoch.1 + (now - epoch.0)` and never reads a clock.
    pub fn new(
        config: ServerConfig,
        credentials: C,
        relays: R,
        epoch: (Instant, SystemTime),
    ) -> Self {
        let mut rng = match config.rng_seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let mut features = 0;
        if !config.password_algorithms.is_empty() {
            features |= FEATURE_PASSWORD_ALGORITHMS;
        }
        if credentials.supports_userhash() {
            features |= FEATURE_USERNAME_ANONYMITY;
        }
        let nonces = NonceMinter::new(key, features, config.nonce_lifetime);
        let mut alg_list_wire = Vec::new();
        for a in &config.password_algorithms {
            alg_list_wire.extend_from_slice(&a.number().to_be_bytes());
            alg_list_wire.extend_from_slice(&[0, 0]);
        }
        TurnServer {
            config,
            creds: credentials,
            relays,
            epoch,
            rng,
            nonces,
            alg_list_wire,
            slots: Vec::new(),
            free_slots: Vec::new(),
            next_id: 0,
            by_tuple: HashMap::new(),
            by_relay: HashMap::new(),
            user_counts: HashMap::new(),
            reservations: HashMap::new(),
            reservation_queue: VecDeque::new(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            pool: Vec::new(),
            counters: Counters::default(),
            tcp_conns: HashMap::new(),
            data_conns: HashMap::new(),
            bind_deadlines: VecDeque::new(),
            commands: VecDeque::new(),
            routes: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The credential store.
    pub fn credentials(&self) -> &C {
        &self.creds
    }

    /// The credential store, to add or remove users.
    pub fn credentials_mut(&mut self) -> &mut C {
        &mut self.creds
    }

    /// The relay allocator.
    pub fn relays(&self) -> &R {
        &self.relays
    }

    /// The relay allocator.
    pub fn relays_mut(&mut self) -> &mut R {
        &mut self.relays
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// How many allocations exist.
    pub fn allocation_count(&self) -> usize {
        self.by_tuple.len()
    }

    /// A view of the allocation of a 5-tuple.
    pub fn allocation(&self, now: Instant, five_tuple: &FiveTuple) -> Option<AllocationInfo> {
        let a = self.slots.get(*self.by_tuple.get(five_tuple)?)?.as_ref()?;
        Some(AllocationInfo {
            user: a.user.clone(),
            relayed: a.relayed_list(),
            expires: a.expires,
            permissions: a.permissions.values().filter(|e| now < **e).count(),
            channels: a.channels.values().filter(|c| now < c.expires).count(),
            traffic: a.traffic,
        })
    }

    /// Whether `addr` is a relayed address of a live allocation.
    pub fn is_relayed_address(&self, addr: SocketAddr) -> bool {
        self.by_relay.contains_key(&addr)
    }

    /// The client transport of the live allocation whose relayed address
    /// is `addr`; `None` when `addr` is no such address.
    pub fn relayed_address_transport(&self, addr: SocketAddr) -> Option<Transport> {
        let slot = *self.by_relay.get(&addr)?;
        Some(self.slots.get(slot)?.as_ref()?.five_tuple.transport)
    }

    /// Every live allocation: its 5-tuple and a view of it (in no
    /// particular order).
    pub fn allocations(
        &self,
        now: Instant,
    ) -> impl Iterator<Item = (FiveTuple, AllocationInfo)> + '_ {
        self.by_tuple
            .keys()
            .filter_map(move |ft| Some((*ft, self.allocation(now, ft)?)))
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Give a sent [`Transmit::contents`] buffer back for reuse.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.pool.len() < POOL_MAX && buf.capacity() >= 64 {
            buf.clear();
            self.pool.push(buf);
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// The next change to the channels the driver may relay itself, when
    /// [`ServerConfig::export_routes`] is on (drain it after every
    /// `handle_*` call, like the transmits).
    ///
    /// Only channels of UDP allocations without a bandwidth cap, whose peer
    /// is not one of the server's own addresses (unless the allow list
    /// opens it and it is no listening socket), are published: the rest
    /// keeps going through [`TurnServer::handle_input`], which checks
    /// them packet by packet. A route is published again whenever its
    /// `until` moves (ChannelBind, CreatePermission or Refresh), and
    /// withdrawn when its allocation ends or the channel is forgotten.
    /// Traffic relayed by the driver is not in [`Counters`] nor in the
    /// allocation's [`Traffic`]: the driver counts it.
    pub fn poll_route(&mut self) -> Option<RouteUpdate> {
        self.routes.pop_front()
    }

    /// When [`TurnServer::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = self.timers.peek().map(|Reverse((t, _, _))| *t);
        let r = self.reservation_queue.front().map(|(t, _)| *t);
        let b = self.bind_deadlines.front().map(|(t, _)| *t);
        [t, r, b].into_iter().flatten().min()
    }

    /// Expire allocations, permissions, channels and reservations due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((t, slot, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(Some(a)) = self.slots.get_mut(slot) else {
                continue;
            };
            if a.id != id || a.scheduled != Some(t) {
                continue;
            }
            a.scheduled = None;
            if now >= a.expires {
                self.remove_allocation(slot, Ended::Expired);
            } else {
                let export = self.config.export_routes;
                a.purge(now, CHANNEL_GUARD, export.then_some(&mut self.routes));
                self.schedule(slot);
            }
        }
        while let Some(&(t, token)) = self.reservation_queue.front() {
            if t > now {
                break;
            }
            self.reservation_queue.pop_front();
            if let Some((addr, exp)) = self.reservations.get(&token).copied() {
                if exp <= now {
                    self.reservations.remove(&token);
                    self.relays.release(addr);
                }
            }
        }
        while let Some(&(t, id)) = self.bind_deadlines.front() {
            if t > now {
                break;
            }
            self.bind_deadlines.pop_front();
            let due = self.tcp_conns.get(&id).is_some_and(
                |c| matches!(c.state, TcpState::Pending { deadline } if deadline <= now),
            );
            if due {
                self.tcp_conns.remove(&id);
                self.commands.push_back(TcpCommand::Close { id });
            }
        }
    }

    /// The client's TCP or TLS connection of `five_tuple` closed (or was
    /// reset, or idled out): its allocation, if any, is deleted at once and
    /// its relayed addresses released (RFC 8656 §3.1 and §7: over TCP, an
    /// allocation lives as long as the connection that made it). Emits
    /// [`ServerEvent::AllocationClosed`]. Returns whether an allocation
    /// ended. A UDP 5-tuple is left alone (UDP has no connection to close).
    ///
    /// For an RFC 6062 client data connection, the peer connection spliced
    /// to it is closed too ([`TcpCommand::Close`]).
    pub fn connection_closed(&mut self, now: Instant, five_tuple: &FiveTuple) -> bool {
        let _ = now;
        if !five_tuple.transport.is_reliable() {
            return false;
        }
        if let Some(id) = self.data_conns.remove(five_tuple) {
            self.tcp_conns.remove(&id);
            self.commands.push_back(TcpCommand::Close { id });
        }
        let Some(&slot) = self.by_tuple.get(five_tuple) else {
            return false;
        };
        self.remove_allocation(slot, Ended::Closed);
        true
    }

    /// The next socket operation of a TCP allocation (RFC 6062) for the
    /// driver. Drain after the transmits: a [`TcpCommand::Splice`] follows
    /// the ConnectionBind response it goes with.
    pub fn poll_command(&mut self) -> Option<TcpCommand> {
        self.commands.pop_front()
    }

    /// The outcome of a [`TcpCommand::Connect`]: the Connect request is
    /// answered (CONNECTION-ID on success, 447 on failure). Returns whether
    /// the driver keeps the connection (false when it failed or its
    /// allocation is gone meanwhile: close it).
    pub fn tcp_connect_result(&mut self, now: Instant, id: u32, connected: bool) -> bool {
        let Some(c) = self.tcp_conns.get_mut(&id) else {
            return false;
        };
        let next = if connected {
            TcpState::Pending {
                deadline: now + BIND_TIMEOUT,
            }
        } else {
            TcpState::Pending { deadline: now }
        };
        let TcpState::Connecting {
            control,
            tid,
            auth,
            fingerprint,
        } = std::mem::replace(&mut c.state, next)
        else {
            return false;
        };
        let typ = MessageType::new(Method::CONNECT, MessageClass::Request);
        if connected {
            self.counters.peer_connections += 1;
            self.bind_deadlines.push_back((now + BIND_TIMEOUT, id));
            self.reply_to(&control, typ, tid, fingerprint, Some(&auth), None, |b| {
                b.add(&ConnectionId(id))?;
                Ok(())
            });
        } else {
            self.tcp_conns.remove(&id);
            self.reply_to(
                &control,
                typ,
                tid,
                fingerprint,
                Some(&auth),
                Some(447),
                |_| Ok(()),
            );
        }
        connected
    }

    /// A peer connected to the TCP relayed address `relayed` (RFC 6062
    /// §5.3). With a permission for the peer's IP, the client is sent a
    /// ConnectionAttempt indication and the connection gets an id (the
    /// driver holds it, unread, until [`TcpCommand::Splice`] or
    /// [`TcpCommand::Close`]); `None`: close it at once.
    pub fn tcp_peer_connected(
        &mut self,
        now: Instant,
        relayed: SocketAddr,
        peer: SocketAddr,
    ) -> Option<u32> {
        let slot = *self.by_relay.get(&relayed)?;
        let a = self.slots.get(slot)?.as_ref()?;
        if !a.tcp {
            return None;
        }
        if !a.permitted(now, peer.ip()) {
            self.counters.dropped_no_permission += 1;
            return None;
        }
        let (alloc_id, control) = (a.id, a.five_tuple);
        if self.tcp_connection_count(slot, alloc_id) >= self.config.max_tcp_connections {
            return None;
        }
        let id = self.new_connection_id();
        let deadline = now + BIND_TIMEOUT;
        self.tcp_conns.insert(
            id,
            TcpConn {
                slot,
                alloc_id,
                peer,
                state: TcpState::Pending { deadline },
            },
        );
        self.bind_deadlines.push_back((deadline, id));
        self.counters.peer_connections += 1;
        let mut tid = [0u8; 12];
        self.rng.fill_bytes(&mut tid);
        let mut buf = self.take_buf();
        let built = (|| {
            let mut b = MessageBuilder::new(
                &mut buf,
                MessageType::new(Method::CONNECTION_ATTEMPT, MessageClass::Indication),
                TransactionId::new(tid),
            )?;
            b.add(&XorPeerAddress(peer))?;
            b.add(&ConnectionId(id))?;
            Ok::<(), EncodeError>(())
        })();
        if built.is_ok() {
            self.push(&control, true, control.client, control.server, buf);
        } else {
            self.recycle(buf);
        }
        Some(id)
    }

    /// The peer side of connection `id` closed or failed: it is forgotten
    /// and, when spliced, its client data connection is to be closed too
    /// ([`TcpCommand::Close`]).
    pub fn tcp_peer_closed(&mut self, now: Instant, id: u32) {
        let _ = now;
        if let Some(c) = self.tcp_conns.remove(&id) {
            if let TcpState::Bound { data } = c.state {
                self.data_conns.remove(&data);
            }
            self.commands.push_back(TcpCommand::Close { id });
        }
    }

    /// The peer connections of an allocation, for tests and metrics:
    /// `(id, peer, bound)`.
    pub fn tcp_connections(&self, five_tuple: &FiveTuple) -> Vec<(u32, SocketAddr, bool)> {
        let Some(&slot) = self.by_tuple.get(five_tuple) else {
            return Vec::new();
        };
        let mut v: Vec<_> = self
            .tcp_conns
            .iter()
            .filter(|(_, c)| c.slot == slot)
            .map(|(id, c)| (*id, c.peer, matches!(c.state, TcpState::Bound { .. })))
            .collect();
        v.sort();
        v
    }

    /// A datagram arrived on a listening address or on a relayed address
    /// (`local` says which). Never panics; bad input is dropped or answered
    /// with an error response.
    pub fn handle_input(&mut self, now: Instant, d: Datagram<'_>) {
        if let Some(&slot) = self.by_relay.get(&d.local) {
            self.relay_from_peer(now, slot, d);
            return;
        }
        match classify(d.bytes) {
            PacketKind::ChannelData => self.channel_data_from_client(now, d),
            PacketKind::Stun => self.stun_from_client(now, d),
            _ => self.counters.dropped_malformed += 1,
        }
    }

    // ------------------------------------------------------------ helpers

    fn wall(&self, now: Instant) -> SystemTime {
        match now.checked_duration_since(self.epoch.0) {
            Some(d) => self.epoch.1 + d,
            None => self
                .epoch
                .1
                .checked_sub(self.epoch.0.duration_since(now))
                .unwrap_or(std::time::UNIX_EPOCH),
        }
    }

    fn secs(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch.0).as_secs()
    }

    fn take_buf(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_else(|| Vec::with_capacity(1500))
    }

    fn push(
        &mut self,
        ft: &FiveTuple,
        to_client: bool,
        peer: SocketAddr,
        source: SocketAddr,
        buf: Vec<u8>,
    ) {
        let (transport, source, destination) = if to_client {
            (ft.transport, ft.server, ft.client)
        } else {
            (crate::types::Transport::Udp, source, peer)
        };
        self.transmits.push_back(Transmit {
            transport,
            source,
            destination,
            contents: buf,
        });
    }

    /// Send a response to `req` on the 5-tuple: an error when `code` is set,
    /// signed when `auth` is.
    fn reply(
        &mut self,
        ft: &FiveTuple,
        req: &Message<'_>,
        auth: Option<&Auth>,
        code: Option<u16>,
        f: impl FnOnce(&mut MessageBuilder<&mut Vec<u8>>) -> Result<(), EncodeError>,
    ) {
        let (typ, tid, fp) = (req.typ(), req.transaction_id(), req.has_fingerprint());
        self.reply_to(ft, typ, tid, fp, auth, code, f);
    }

    /// [`Self::reply`] from the request's type, transaction id and whether
    /// it had a FINGERPRINT (for answers given later, as to Connect).
    #[allow(clippy::too_many_arguments)]
    fn reply_to(
        &mut self,
        ft: &FiveTuple,
        req_typ: MessageType,
        tid: TransactionId,
        fingerprint: bool,
        auth: Option<&Auth>,
        code: Option<u16>,
        f: impl FnOnce(&mut MessageBuilder<&mut Vec<u8>>) -> Result<(), EncodeError>,
    ) {
        let mut buf = self.take_buf();
        let typ = match code {
            Some(_) => req_typ.error(),
            None => req_typ.success(),
        };
        let built = (|| {
            let mut b = MessageBuilder::new(&mut buf, typ, tid)?;
            if let Some(c) = code.and_then(ErrorCode::from_code) {
                b.add(&c)?;
            }
            f(&mut b)?;
            if let Some(a) = auth {
                if let Some(sw) = self
                    .config
                    .software
                    .as_deref()
                    .and_then(|s| Software::new(s).ok())
                {
                    b.add(&sw)?;
                }
                if a.sha256 {
                    b.add_message_integrity_sha256(&a.key)?;
                } else {
                    b.add_message_integrity(&a.key)?;
                }
            }
            if fingerprint {
                b.add_fingerprint()?;
            }
            Ok::<(), EncodeError>(())
        })();
        if built.is_err() {
            self.counters.dropped_malformed += 1;
            self.recycle(buf);
            return;
        }
        if code.is_some() {
            self.counters.error_responses += 1;
        }
        self.push(ft, true, ft.client, ft.server, buf);
    }

    fn error(&mut self, ft: &FiveTuple, req: &Message<'_>, auth: Option<&Auth>, code: u16) {
        self.reply(ft, req, auth, Some(code), |_| Ok(()));
    }

    /// A 401 or 438 with REALM, a fresh NONCE and PASSWORD-ALGORITHMS.
    fn challenge(
        &mut self,
        now: Instant,
        ft: &FiveTuple,
        req: &Message<'_>,
        code: u16,
        auth: Option<&Auth>,
    ) {
        let nonce = self.nonces.mint(self.secs(now), ft.client, ft.transport);
        let realm = self.config.realm.clone();
        let algs = self.config.password_algorithms.clone();
        self.reply(ft, req, auth, Some(code), |b| {
            b.add(&Realm::new(&realm).map_err(|_| EncodeError::TooLarge)?)?;
            b.add(&Nonce::new(&nonce).map_err(|_| EncodeError::TooLarge)?)?;
            if !algs.is_empty() {
                b.add(&PasswordAlgorithms::List(&algs))?;
            }
            Ok(())
        });
    }

    fn auth_failed(
        &mut self,
        now: Instant,
        ft: &FiveTuple,
        req: &Message<'_>,
        user: Option<String>,
        reason: AuthFailure,
    ) {
        self.counters.auth_failures += 1;
        self.events.push_back(ServerEvent::AuthFailed {
            remote: ft.client,
            username: user,
            reason,
        });
        self.challenge(now, ft, req, 401, None);
    }

    /// RFC 8489 §9.2.4, in its order. On failure the error is already sent.
    fn authenticate(&mut self, now: Instant, ft: &FiveTuple, msg: &Message<'_>) -> Option<Auth> {
        if !msg.has_integrity() && !msg.has_integrity_sha256() {
            self.challenge(now, ft, msg, 401, None);
            return None;
        }
        let parsed = (|| {
            Ok::<_, p2p_stun::DecodeError>((
                msg.get::<Username>()?,
                msg.get::<Userhash>()?,
                msg.get::<Realm>()?,
                msg.get::<Nonce>()?,
                msg.get::<PasswordAlgorithm>()?,
            ))
        })();
        let Ok((username, userhash, Some(realm), Some(nonce), alg)) = parsed else {
            self.error(ft, msg, None, 400);
            return None;
        };
        if username.is_none() && userhash.is_none() {
            self.error(ft, msg, None, 400);
            return None;
        }
        let features = nonce_features(nonce.as_str()).unwrap_or(0);
        let alg = if features & FEATURE_PASSWORD_ALGORITHMS != 0 {
            let list = msg.get_raw(AttrType::PASSWORD_ALGORITHMS);
            match (list, alg) {
                (None, None) => PasswordAlgorithm::Md5,
                (Some(l), Some(a))
                    if l.value == self.alg_list_wire.as_slice()
                        && self.config.password_algorithms.contains(&a) =>
                {
                    a
                }
                _ => {
                    // Downgrade protection (RFC 8489 §9.2.4).
                    self.error(ft, msg, None, 400);
                    return None;
                }
            }
        } else {
            PasswordAlgorithm::Md5
        };
        let claimed = username.map(|u| u.as_str().to_owned());
        if realm.as_str() != self.config.realm {
            self.auth_failed(now, ft, msg, claimed, AuthFailure::WrongRealm);
            return None;
        }
        let user = match (claimed.clone(), userhash) {
            (Some(u), _) => Some(u),
            (None, Some(h)) => self.creds.username_for_userhash(&h.0, &self.config.realm),
            (None, None) => None,
        };
        let wall = self.wall(now);
        let key = user
            .as_deref()
            .and_then(|u| self.creds.key(u, &self.config.realm, alg, wall));
        let (Some(user), Some(key)) = (user, key) else {
            self.auth_failed(now, ft, msg, claimed, AuthFailure::UnknownUser);
            return None;
        };
        if msg.verify_any_integrity(&key).is_err() {
            self.auth_failed(now, ft, msg, Some(user), AuthFailure::BadIntegrity);
            return None;
        }
        let auth = Auth {
            user,
            key,
            sha256: msg.has_integrity_sha256(),
        };
        let secs = self.secs(now);
        let fresh = self
            .nonces
            .is_valid(nonce.as_str(), secs, ft.client, ft.transport)
            || self.control_connection(msg).is_some_and(|control| {
                self.nonces
                    .is_valid(nonce.as_str(), secs, control.client, control.transport)
            });
        if !fresh {
            self.challenge(now, ft, msg, 438, Some(&auth));
            return None;
        }
        Some(auth)
    }

    /// For a ConnectionBind, the control connection of the allocation its
    /// CONNECTION-ID belongs to: the client may sign with the nonce it got
    /// there (coturn's client does), as the new data connection has none.
    fn control_connection(&self, msg: &Message<'_>) -> Option<FiveTuple> {
        if msg.typ().method != Method::CONNECTION_BIND {
            return None;
        }
        let Ok(Some(ConnectionId(id))) = msg.get::<ConnectionId>() else {
            return None;
        };
        let c = self.tcp_conns.get(&id)?;
        let a = self.slots.get(c.slot)?.as_ref()?;
        Some(a.five_tuple)
    }

    fn schedule(&mut self, slot: usize) {
        let Some(Some(a)) = self.slots.get_mut(slot) else {
            return;
        };
        let d = a.next_deadline(CHANNEL_GUARD);
        if a.scheduled.is_none_or(|s| d < s) {
            a.scheduled = Some(d);
            self.timers.push(Reverse((d, slot, a.id)));
        }
    }

    fn remove_allocation(&mut self, slot: usize, why: Ended) {
        let Some(a) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free_slots.push(slot);
        self.by_tuple.remove(&a.five_tuple);
        if self.config.export_routes {
            for (&channel, c) in &a.channels {
                if let Some(relayed) = a.relay_for(c.peer.ip()) {
                    self.routes.push_back(RouteUpdate::Down(ChannelRoute {
                        five_tuple: a.five_tuple,
                        channel,
                        peer: c.peer,
                        relayed,
                        until: c.expires,
                    }));
                }
            }
        }
        if a.tcp {
            let mut ids: Vec<u32> = self
                .tcp_conns
                .iter()
                .filter(|(_, c)| c.slot == slot && c.alloc_id == a.id)
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            for id in ids {
                if let Some(TcpConn {
                    state: TcpState::Bound { data },
                    ..
                }) = self.tcp_conns.remove(&id)
                {
                    self.data_conns.remove(&data);
                }
                self.commands.push_back(TcpCommand::Close { id });
            }
        }
        for r in a.relayed.iter().flatten() {
            self.by_relay.remove(r);
            self.relays.release(*r);
        }
        if let Some(n) = self.user_counts.get_mut(&a.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.user_counts.remove(&a.user);
            }
        }
        self.counters.allocations_active = self.counters.allocations_active.saturating_sub(1);
        let relayed = a.relayed_list();
        let (user, five_tuple, traffic) = (a.user, a.five_tuple, a.traffic);
        let event = match why {
            Ended::Deleted => {
                self.counters.allocations_deleted += 1;
                ServerEvent::AllocationDeleted {
                    user,
                    five_tuple,
                    relayed,
                    traffic,
                }
            }
            Ended::Expired => {
                self.counters.allocations_expired += 1;
                ServerEvent::AllocationExpired {
                    user,
                    five_tuple,
                    relayed,
                    traffic,
                }
            }
            Ended::Closed => {
                self.counters.allocations_closed += 1;
                ServerEvent::AllocationClosed {
                    user,
                    five_tuple,
                    relayed,
                    traffic,
                }
            }
        };
        self.events.push_back(event);
    }

    fn tcp_connection_count(&self, slot: usize, alloc_id: u64) -> usize {
        self.tcp_conns
            .values()
            .filter(|c| c.slot == slot && c.alloc_id == alloc_id)
            .count()
    }

    /// A fresh nonzero CONNECTION-ID, unpredictable (RFC 6062 §5.2).
    fn new_connection_id(&mut self) -> u32 {
        loop {
            let id = self.rng.next_u32();
            if id != 0 && !self.tcp_conns.contains_key(&id) {
                return id;
            }
        }
    }

    fn granted_lifetime(&self, requested: Option<u32>) -> Duration {
        let max = self.config.max_lifetime;
        let def = self.config.default_lifetime.min(max);
        match requested {
            None => def,
            Some(s) => Duration::from_secs(u64::from(s)).clamp(def, max),
        }
    }

    /// The slot of the 5-tuple's allocation, or the error already sent.
    fn own_allocation(&mut self, ft: &FiveTuple, msg: &Message<'_>, auth: &Auth) -> Option<usize> {
        let Some(&slot) = self.by_tuple.get(ft) else {
            self.error(ft, msg, Some(auth), 437);
            return None;
        };
        let same_user = self.slots[slot]
            .as_ref()
            .is_some_and(|a| a.user == auth.user);
        if !same_user {
            self.error(ft, msg, Some(auth), 441);
            return None;
        }
        Some(slot)
    }

    // ------------------------------------------------------------ STUN

    fn stun_from_client(&mut self, now: Instant, d: Datagram<'_>) {
        let ft = FiveTuple {
            client: d.remote,
            server: d.local,
            transport: d.transport,
        };
        let b = d.bytes;
        if b.len() < HEADER_LEN || b[4..8] != MAGIC_COOKIE.to_be_bytes() {
            self.counters.dropped_malformed += 1;
            return;
        }
        let msg = match Message::decode(b) {
            Ok(m) => m,
            Err(e) => {
                self.counters.dropped_malformed += 1;
                let typ = MessageType::from_u16(u16::from_be_bytes([b[0], b[1]]));
                if e.stun_code().is_some() && typ.class == MessageClass::Request {
                    self.bad_header_request(&ft, typ, b);
                }
                return;
            }
        };
        match (msg.typ().class, msg.typ().method) {
            (MessageClass::Request, Method::BINDING) if self.config.answer_binding => {
                let client = ft.client;
                self.reply(&ft, &msg, None, None, |b| {
                    b.add(&XorMappedAddress(client))?;
                    Ok(())
                });
            }
            (
                MessageClass::Request,
                Method::ALLOCATE
                | Method::REFRESH
                | Method::CREATE_PERMISSION
                | Method::CHANNEL_BIND
                | Method::CONNECT
                | Method::CONNECTION_BIND,
            ) => self.turn_request(now, &ft, &msg),
            (MessageClass::Indication, Method::SEND) => self.send_indication(now, &ft, &msg),
            (MessageClass::Request, _) => self.error(&ft, &msg, None, 400),
            _ => self.counters.dropped_malformed += 1,
        }
    }

    /// A 400 to a request whose header is readable but whose body is not.
    fn bad_header_request(&mut self, ft: &FiveTuple, typ: MessageType, b: &[u8]) {
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&b[8..20]);
        let mut buf = self.take_buf();
        let ok = (|| {
            let mut m = MessageBuilder::new(&mut buf, typ.error(), TransactionId::new(tid))?;
            if let Some(c) = ErrorCode::from_code(400) {
                m.add(&c)?;
            }
            Ok::<(), EncodeError>(())
        })();
        if ok.is_ok() {
            self.counters.error_responses += 1;
            self.push(ft, true, ft.client, ft.server, buf);
        } else {
            self.recycle(buf);
        }
    }

    fn turn_request(&mut self, now: Instant, ft: &FiveTuple, msg: &Message<'_>) {
        self.counters.requests += 1;
        let Some(auth) = self.authenticate(now, ft, msg) else {
            return;
        };
        let unknown: Vec<AttrType> = msg
            .unknown_comprehension_required(|t| t.is_known())
            .collect();
        if !unknown.is_empty() {
            self.reply(ft, msg, Some(&auth), Some(420), |b| {
                b.add(&UnknownAttributes::List(&unknown))?;
                Ok(())
            });
            return;
        }
        match msg.typ().method {
            Method::ALLOCATE => self.allocate(now, ft, msg, &auth),
            Method::REFRESH => self.refresh(now, ft, msg, &auth),
            Method::CREATE_PERMISSION => self.create_permission(now, ft, msg, &auth),
            Method::CONNECT => self.connect(ft, msg, &auth),
            Method::CONNECTION_BIND => self.connection_bind(ft, msg, &auth),
            _ => self.channel_bind(now, ft, msg, &auth),
        }
    }

    fn allocate(&mut self, now: Instant, ft: &FiveTuple, msg: &Message<'_>, auth: &Auth) {
        if let Some(&slot) = self.by_tuple.get(ft) {
            let resend = self.slots[slot].as_ref().and_then(|a| {
                // The kept response is dropped at the first Refresh.
                (a.allocate_tid == msg.transaction_id()
                    && a.user == auth.user
                    && !a.allocate_response.is_empty())
                .then(|| a.allocate_response.clone())
            });
            match resend {
                Some(bytes) => self.push(ft, true, ft.client, ft.server, bytes),
                None => self.error(ft, msg, Some(auth), 437),
            }
            return;
        }
        let parsed = (|| {
            Ok::<_, p2p_stun::DecodeError>((
                msg.get::<RequestedTransport>()?,
                msg.get::<DontFragment>()?,
                msg.get::<ReservationToken>()?,
                msg.get::<EvenPort>()?,
                msg.get::<RequestedAddressFamily>()?,
                msg.get::<AdditionalAddressFamily>()?,
                msg.get::<Lifetime>()?,
            ))
        })();
        let Ok((transport, dont_fragment, token, even, raf, aaf, lifetime)) = parsed else {
            return self.error(ft, msg, Some(auth), 400);
        };
        let tcp = match transport {
            None => return self.error(ft, msg, Some(auth), 400),
            Some(RequestedTransport(PROTO_UDP)) => false,
            Some(RequestedTransport(PROTO_TCP)) if self.relays.supports_tcp() => {
                // RFC 6062 §5.1: only over TCP/TLS, and none of the UDP-only
                // attributes.
                let udp_only =
                    dont_fragment.is_some() || token.is_some() || even.is_some() || aaf.is_some();
                if !ft.transport.is_reliable() || udp_only {
                    return self.error(ft, msg, Some(auth), 400);
                }
                true
            }
            Some(_) => return self.error(ft, msg, Some(auth), 442),
        };
        let bad_combo = (token.is_some() && (even.is_some() || raf.is_some() || aaf.is_some()))
            || (raf.is_some() && aaf.is_some())
            || aaf.is_some_and(|a| a.0 != AddressFamily::V6)
            || (aaf.is_some() && even.is_some_and(|e| e.reserve_next));
        if bad_combo {
            return self.error(ft, msg, Some(auth), 400);
        }
        if let Some(q) = self.config.user_quota {
            if self.user_counts.get(&auth.user).copied().unwrap_or(0) >= q {
                return self.error(ft, msg, Some(auth), 486);
            }
        }
        if let Some(q) = self.config.total_quota {
            if self.by_tuple.len() as u64 >= u64::from(q) {
                return self.error(ft, msg, Some(auth), 508);
            }
        }
        let life = self.granted_lifetime(lifetime.map(|l| l.0));

        // Relayed addresses.
        let mut relayed: [Option<SocketAddr>; 2] = [None, None];
        let mut family_error: Option<(AddressFamily, u16)> = None;
        let mut new_token: Option<[u8; 8]> = None;
        if tcp {
            let fam = raf.map_or(AddressFamily::V4, |r| r.0);
            if !self.relays.supports(fam) {
                return self.error(ft, msg, Some(auth), 440);
            }
            match self.relays.allocate_tcp(fam) {
                Some(a) => relayed[family_index(a.ip())] = Some(a),
                None => return self.error(ft, msg, Some(auth), 508),
            }
        } else if let Some(ReservationToken(t)) = token {
            let held = self.reservations.remove(&t).map(|(a, _)| a);
            match held.and_then(|a| self.relays.allocate_token(a)) {
                Some(a) => relayed[family_index(a.ip())] = Some(a),
                None => return self.error(ft, msg, Some(auth), 508),
            }
        } else {
            let even_port = even.is_some();
            let reserve = even.is_some_and(|e| e.reserve_next);
            let families: &[AddressFamily] = if aaf.is_some() {
                &[AddressFamily::V4, AddressFamily::V6]
            } else if raf.is_some_and(|r| r.0 == AddressFamily::V6) {
                &[AddressFamily::V6]
            } else {
                &[AddressFamily::V4]
            };
            let mut codes: Vec<(AddressFamily, u16)> = Vec::new();
            for &fam in families {
                if !self.relays.supports(fam) {
                    codes.push((fam, 440));
                    continue;
                }
                match self.relays.allocate(fam, even_port, reserve) {
                    Some(a) => relayed[family_index(a.ip())] = Some(a),
                    None => codes.push((fam, 508)),
                }
            }
            if relayed.iter().all(Option::is_none) {
                let code = if codes.iter().all(|c| c.1 == 440) {
                    440
                } else {
                    508
                };
                return self.error(ft, msg, Some(auth), code);
            }
            family_error = codes.first().copied();
            if reserve {
                if let Some(a) = relayed.iter().flatten().next() {
                    let mut t = [0u8; 8];
                    self.rng.fill_bytes(&mut t);
                    let held = SocketAddr::new(a.ip(), a.port().wrapping_add(1));
                    let exp = now + self.config.reservation_lifetime;
                    self.reservations.insert(t, (held, exp));
                    self.reservation_queue.push_back((exp, t));
                    new_token = Some(t);
                }
            }
        }

        // The success response, kept for retransmissions.
        let client = ft.client;
        let secs = u32::try_from(life.as_secs()).unwrap_or(u32::MAX);
        let list: Vec<SocketAddr> = relayed.iter().flatten().copied().collect();
        let reason = family_error.map(|(_, c)| p2p_stun::attr::reason_phrase(c));
        self.reply(ft, msg, Some(auth), None, |b| {
            for r in &list {
                b.add(&XorRelayedAddress(*r))?;
            }
            if let (Some((family, code)), Some(reason)) = (family_error, reason) {
                b.add(&AddressErrorCode {
                    family,
                    code,
                    reason,
                })?;
            }
            b.add(&Lifetime(secs))?;
            if let Some(t) = new_token {
                b.add(&ReservationToken(t))?;
            }
            b.add(&XorMappedAddress(client))?;
            Ok(())
        });
        let response = self
            .transmits
            .back()
            .filter(|t| t.destination == ft.client)
            .map(|t| t.contents.clone())
            .unwrap_or_default();

        let id = self.next_id;
        self.next_id += 1;
        let alloc = Allocation {
            id,
            five_tuple: *ft,
            user: auth.user.clone(),
            relayed,
            expires: now + life,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            channel_by_peer: HashMap::new(),
            bucket: self
                .config
                .bandwidth
                .map(|b| TokenBucket::new(now, b.bytes_per_sec, b.burst)),
            traffic: Traffic::default(),
            allocate_tid: msg.transaction_id(),
            allocate_response: response,
            scheduled: None,
            tcp,
        };
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s] = Some(alloc);
                s
            }
            None => {
                self.slots.push(Some(alloc));
                self.slots.len() - 1
            }
        };
        self.by_tuple.insert(*ft, slot);
        for r in &list {
            self.by_relay.insert(*r, slot);
        }
        *self.user_counts.entry(auth.user.clone()).or_insert(0) += 1;
        self.counters.allocations_created += 1;
        self.counters.allocations_active += 1;
        self.schedule(slot);
        self.events.push_back(ServerEvent::AllocationCreated {
            user: auth.user.clone(),
            five_tuple: *ft,
            relayed: list,
            lifetime: life,
        });
    }

    fn refresh(&mut self, now: Instant, ft: &FiveTuple, msg: &Message<'_>, auth: &Auth) {
        let Some(slot) = self.own_allocation(ft, msg, auth) else {
            return;
        };
        let parsed = (|| {
            Ok::<_, p2p_stun::DecodeError>((
                msg.get::<Lifetime>()?,
                msg.get::<RequestedAddressFamily>()?,
            ))
        })();
        let Ok((lifetime, raf)) = parsed else {
            return self.error(ft, msg, Some(auth), 400);
        };
        if let Some(RequestedAddressFamily(fam)) = raf {
            let idx = match fam {
                AddressFamily::V4 => 0,
                AddressFamily::V6 => 1,
            };
            if self.slots[slot]
                .as_ref()
                .is_some_and(|a| a.relayed[idx].is_none())
            {
                return self.error(ft, msg, Some(auth), 443);
            }
        }
        if lifetime.is_some_and(|l| l.0 == 0) {
            self.reply(ft, msg, Some(auth), None, |b| {
                b.add(&Lifetime(0))?;
                Ok(())
            });
            self.remove_allocation(slot, Ended::Deleted);
            return;
        }
        let life = self.granted_lifetime(lifetime.map(|l| l.0));
        if let Some(a) = self.slots[slot].as_mut() {
            a.expires = now + life;
            // The Allocate is long done: no retransmission to answer.
            a.allocate_response = Vec::new();
        }
        self.schedule(slot);
        self.export_routes(slot, None);
        let secs = u32::try_from(life.as_secs()).unwrap_or(u32::MAX);
        self.reply(ft, msg, Some(auth), None, |b| {
            b.add(&Lifetime(secs))?;
            Ok(())
        });
        self.events.push_back(ServerEvent::AllocationRefreshed {
            user: auth.user.clone(),
            five_tuple: *ft,
            lifetime: life,
        });
    }

    /// Publish ([`RouteUpdate::Up`]) the routes of the allocation's
    /// channels, or of those to peers at `ip` only.
    fn export_routes(&mut self, slot: usize, ip: Option<IpAddr>) {
        if !self.config.export_routes {
            return;
        }
        let Some(Some(a)) = self.slots.get(slot) else {
            return;
        };
        if a.tcp || a.bucket.is_some() || a.five_tuple.transport != Transport::Udp {
            return;
        }
        let mut out = std::mem::take(&mut self.routes);
        for (&channel, c) in &a.channels {
            let peer_ip = c.peer.ip();
            if ip.is_some_and(|ip| ip != peer_ip) {
                continue;
            }
            // Data to one of our own addresses is checked per packet
            // (`outbound`) unless the allow list opens it for good: relay
            // to relay depends on which allocations are alive.
            let opened = self.config.peer_policy.explicitly_allows(peer_ip)
                && !self.is_service_address(c.peer, &a.five_tuple);
            if !opened && self.is_own_ip(peer_ip, &a.five_tuple, a) {
                continue;
            }
            let (Some(relayed), Some(&permission)) =
                (a.relay_for(peer_ip), a.permissions.get(&peer_ip))
            else {
                continue;
            };
            out.push_back(RouteUpdate::Up(ChannelRoute {
                five_tuple: a.five_tuple,
                channel,
                peer: c.peer,
                relayed,
                until: a.expires.min(permission).min(c.expires),
            }));
        }
        self.routes = out;
    }

    /// Whether `ip` is one of the server's own addresses: configured, the
    /// listening address of `ft`, or a relayed address of `a`.
    fn is_own_ip(&self, ip: IpAddr, ft: &FiveTuple, a: &Allocation) -> bool {
        let ip = canonical(ip);
        let own = |o: IpAddr| canonical(o) == ip;
        own(ft.server.ip())
            || a.relayed.iter().flatten().any(|r| own(r.ip()))
            || self.config.own_addresses.iter().any(|o| own(*o))
    }

    /// Whether `peer`, at one of the server's own IPs, is a listening
    /// socket of the server (never a peer).
    fn is_service_address(&self, peer: SocketAddr, ft: &FiveTuple) -> bool {
        let ip = canonical(peer.ip());
        peer == ft.server
            || self.config.service_addresses.iter().any(|s| {
                s.port() == peer.port() && (s.ip().is_unspecified() || canonical(s.ip()) == ip)
            })
    }

    /// Whether data from allocation `a` may go to `peer`, one of the
    /// server's own addresses: only to a live relayed address (relay to
    /// relay), or to an address the allow list opens that is not a
    /// listening socket of the server.
    fn own_destination_ok(&self, peer: SocketAddr, ft: &FiveTuple) -> bool {
        if self.by_relay.contains_key(&peer) {
            return true;
        }
        self.config.peer_policy.explicitly_allows(peer.ip()) && !self.is_service_address(peer, ft)
    }

    /// Check a peer against the allocation's families (443) and the policy
    /// (403). `full`: the peer's full address when known (ChannelBind,
    /// Connect), checked against live relayed addresses when the IP is the
    /// server's own.
    fn check_peer(
        &self,
        slot: usize,
        ft: &FiveTuple,
        peer: IpAddr,
        full: Option<SocketAddr>,
    ) -> Result<(), u16> {
        let Some(a) = self.slots[slot].as_ref() else {
            return Err(437);
        };
        let Some(relay) = a.relay_for(peer) else {
            return Err(443);
        };
        let policy = &self.config.peer_policy;
        if !self.is_own_ip(peer, ft, a) {
            return if policy.permits(peer, &[]) {
                Ok(())
            } else {
                Err(403)
            };
        }
        // One of our own addresses: only the relayed IP (relay to relay)
        // or what the allow list opens; then, when the port is known, only
        // a live relayed address or an allowed non-service address.
        if policy.denies(peer) {
            return Err(403);
        }
        // The relay IP counts as a peer only where the policy would take it
        // from anyone else: a server relaying on a loopback or private IP
        // keeps refusing it unless `--allow-peer` opens it.
        let relay_ip = canonical(relay.ip()) == canonical(peer) && policy.permits(peer, &[]);
        if !relay_ip && !policy.explicitly_allows(peer) {
            return Err(403);
        }
        match full {
            Some(p) if !self.own_destination_ok(p, ft) => Err(403),
            _ => Ok(()),
        }
    }

    fn create_permission(&mut self, now: Instant, ft: &FiveTuple, msg: &Message<'_>, auth: &Auth) {
        let Some(slot) = self.own_allocation(ft, msg, auth) else {
            return;
        };
        let tid = msg.transaction_id();
        let mut peers = Vec::new();
        for raw in msg
            .attributes()
            .filter(|a| a.typ == AttrType::XOR_PEER_ADDRESS)
        {
            use p2p_stun::attr::Attribute;
            match XorPeerAddress::decode(raw.value, &tid) {
                Ok(p) => peers.push(p.0.ip()),
                Err(_) => return self.error(ft, msg, Some(auth), 400),
            }
        }
        if peers.is_empty() {
            return self.error(ft, msg, Some(auth), 400);
        }
        for p in &peers {
            if let Err(code) = self.check_peer(slot, ft, *p, None) {
                return self.error(ft, msg, Some(auth), code);
            }
        }
        let life = self.config.permission_lifetime;
        let max = self.config.max_permissions;
        let Some(a) = self.slots[slot].as_mut() else {
            return;
        };
        a.permissions.retain(|_, e| now < *e);
        let new: Vec<IpAddr> = {
            let mut v: Vec<IpAddr> = peers
                .iter()
                .copied()
                .filter(|p| !a.permissions.contains_key(p))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        if a.permissions.len() + new.len() > max {
            return self.error(ft, msg, Some(auth), 508);
        }
        for p in &peers {
            a.permissions.insert(*p, now + life);
        }
        self.schedule(slot);
        for p in &peers {
            self.export_routes(slot, Some(*p));
        }
        for p in new {
            self.events.push_back(ServerEvent::PermissionCreated {
                five_tuple: *ft,
                peer: p,
            });
        }
        self.reply(ft, msg, Some(auth), None, |_| Ok(()));
    }

    fn channel_bind(&mut self, now: Instant, ft: &FiveTuple, msg: &Message<'_>, auth: &Auth) {
        let Some(slot) = self.own_allocation(ft, msg, auth) else {
            return;
        };
        let parsed = (|| {
            Ok::<_, p2p_stun::DecodeError>((
                msg.get::<ChannelNumber>()?,
                msg.get::<XorPeerAddress>()?,
            ))
        })();
        let Ok((Some(ChannelNumber(number)), Some(XorPeerAddress(peer)))) = parsed else {
            return self.error(ft, msg, Some(auth), 400);
        };
        if self.slots[slot].as_ref().is_some_and(|a| a.tcp) {
            // No channels on a TCP allocation (RFC 6062 §5.1).
            return self.error(ft, msg, Some(auth), 400);
        }
        if let Err(code) = self.check_peer(slot, ft, peer.ip(), Some(peer)) {
            return self.error(ft, msg, Some(auth), code);
        }
        let perm_life = self.config.permission_lifetime;
        let chan_life = self.config.channel_lifetime;
        let max = self.config.max_permissions;
        let Some(a) = self.slots[slot].as_mut() else {
            return;
        };
        let export = self.config.export_routes;
        a.purge(now, CHANNEL_GUARD, export.then_some(&mut self.routes));
        let number_conflict = a.channels.get(&number).is_some_and(|c| c.peer != peer);
        let peer_conflict = a.channel_by_peer.get(&peer).is_some_and(|n| *n != number);
        if number_conflict || peer_conflict {
            return self.error(ft, msg, Some(auth), 400);
        }
        let new_perm = !a.permissions.contains_key(&peer.ip());
        if new_perm && a.permissions.len() >= max {
            return self.error(ft, msg, Some(auth), 508);
        }
        let new_channel = a.channels.get(&number).is_none_or(|c| now >= c.expires);
        a.channels.insert(
            number,
            Channel {
                peer,
                expires: now + chan_life,
            },
        );
        a.channel_by_peer.insert(peer, number);
        a.permissions.insert(peer.ip(), now + perm_life);
        self.schedule(slot);
        self.export_routes(slot, Some(peer.ip()));
        if new_perm {
            self.events.push_back(ServerEvent::PermissionCreated {
                five_tuple: *ft,
                peer: peer.ip(),
            });
        }
        if new_channel {
            self.events.push_back(ServerEvent::ChannelBound {
                five_tuple: *ft,
                channel: number,
                peer,
            });
        }
        self.reply(ft, msg, Some(auth), None, |_| Ok(()));
    }

    // ------------------------------------------------------------ RFC 6062

    /// Connect (RFC 6062 §5.2): ask the driver to connect to the peer; the
    /// answer waits for [`TurnServer::tcp_connect_result`].
    fn connect(&mut self, ft: &FiveTuple, msg: &Message<'_>, auth: &Auth) {
        let Some(slot) = self.own_allocation(ft, msg, auth) else {
            return;
        };
        let Some(a) = self.slots[slot].as_ref().filter(|a| a.tcp) else {
            return self.error(ft, msg, Some(auth), 400);
        };
        let alloc_id = a.id;
        let Ok(Some(XorPeerAddress(peer))) = msg.get::<XorPeerAddress>() else {
            return self.error(ft, msg, Some(auth), 400);
        };
        let exists = self
            .tcp_conns
            .values()
            .any(|c| c.slot == slot && c.alloc_id == alloc_id && c.peer == peer);
        if exists {
            return self.error(ft, msg, Some(auth), 446);
        }
        if self.tcp_connection_count(slot, alloc_id) >= self.config.max_tcp_connections {
            return self.error(ft, msg, Some(auth), 508);
        }
        if let Err(code) = self.check_peer(slot, ft, peer.ip(), Some(peer)) {
            return self.error(ft, msg, Some(auth), code);
        }
        let Some(relayed) = self.slots[slot]
            .as_ref()
            .and_then(|a| a.relay_for(peer.ip()))
        else {
            return self.error(ft, msg, Some(auth), 443);
        };
        let id = self.new_connection_id();
        self.tcp_conns.insert(
            id,
            TcpConn {
                slot,
                alloc_id,
                peer,
                state: TcpState::Connecting {
                    control: *ft,
                    tid: msg.transaction_id(),
                    auth: Box::new(auth.clone()),
                    fingerprint: msg.has_fingerprint(),
                },
            },
        );
        self.commands
            .push_back(TcpCommand::Connect { id, relayed, peer });
    }

    /// ConnectionBind (RFC 6062 §5.4), on a new client data connection.
    fn connection_bind(&mut self, ft: &FiveTuple, msg: &Message<'_>, auth: &Auth) {
        let busy = self.data_conns.contains_key(ft) || self.by_tuple.contains_key(ft);
        if !ft.transport.is_reliable() || busy {
            return self.error(ft, msg, Some(auth), 400);
        }
        let Ok(Some(ConnectionId(id))) = msg.get::<ConnectionId>() else {
            return self.error(ft, msg, Some(auth), 400);
        };
        let pending = match self.tcp_conns.get(&id) {
            Some(c) if matches!(c.state, TcpState::Pending { .. }) => Some(c.slot),
            _ => None,
        };
        let Some(slot) = pending else {
            return self.error(ft, msg, Some(auth), 400);
        };
        let same_user = self.slots[slot]
            .as_ref()
            .is_some_and(|a| a.user == auth.user);
        if !same_user {
            return self.error(ft, msg, Some(auth), 441);
        }
        if let Some(c) = self.tcp_conns.get_mut(&id) {
            c.state = TcpState::Bound { data: *ft };
        }
        self.data_conns.insert(*ft, id);
        self.counters.peer_connections_bound += 1;
        self.reply(ft, msg, Some(auth), None, |_| Ok(()));
        let Some(allocation) = self.slots[slot].as_ref().map(|a| a.five_tuple) else {
            return;
        };
        self.commands.push_back(TcpCommand::Splice {
            id,
            client: *ft,
            allocation,
        });
    }

    // ------------------------------------------------------------ relaying

    /// Account and check a packet to a peer: allocation slot, permission,
    /// bandwidth. Returns the relayed address to send from.
    fn outbound(
        &mut self,
        now: Instant,
        slot: usize,
        peer: SocketAddr,
        len: usize,
    ) -> Option<SocketAddr> {
        let a = self.slots.get(slot)?.as_ref()?;
        if !a.tcp && self.is_own_ip(peer.ip(), &a.five_tuple, a) {
            let ft = a.five_tuple;
            if !self.own_destination_ok(peer, &ft) {
                self.counters.dropped_no_permission += 1;
                return None;
            }
        }
        let a = self.slots.get_mut(slot)?.as_mut()?;
        if a.tcp {
            // Send indications and ChannelData do not apply (RFC 6062 §5.1).
            self.counters.dropped_malformed += 1;
            return None;
        }
        let Some(relay) = a.relay_for(peer.ip()) else {
            self.counters.dropped_no_permission += 1;
            return None;
        };
        if !a.permitted(now, peer.ip()) {
            self.counters.dropped_no_permission += 1;
            return None;
        }
        if !a.take_bandwidth(now, len) {
            self.counters.dropped_bandwidth += 1;
            return None;
        }
        a.traffic.bytes_to_peer += len as u64;
        a.traffic.packets_to_peer += 1;
        self.counters.bytes_to_peer += len as u64;
        self.counters.packets_to_peer += 1;
        Some(relay)
    }

    fn send_indication(&mut self, now: Instant, ft: &FiveTuple, msg: &Message<'_>) {
        let Some(&slot) = self.by_tuple.get(ft) else {
            self.counters.dropped_no_allocation += 1;
            return;
        };
        let (Ok(Some(XorPeerAddress(peer))), Ok(Some(Data(data)))) =
            (msg.get::<XorPeerAddress>(), msg.get::<Data>())
        else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let Some(relay) = self.outbound(now, slot, peer, data.len()) else {
            return;
        };
        let mut buf = self.take_buf();
        buf.extend_from_slice(data);
        self.push(ft, false, peer, relay, buf);
    }

    fn channel_data_from_client(&mut self, now: Instant, d: Datagram<'_>) {
        let ft = FiveTuple {
            client: d.remote,
            server: d.local,
            transport: d.transport,
        };
        let Ok(cd) = ChannelData::decode(d.bytes) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let Some(&slot) = self.by_tuple.get(&ft) else {
            self.counters.dropped_no_allocation += 1;
            return;
        };
        let peer = self.slots[slot]
            .as_ref()
            .and_then(|a| a.channels.get(&cd.channel()))
            .filter(|c| now < c.expires)
            .map(|c| c.peer);
        let Some(peer) = peer else {
            self.counters.dropped_no_permission += 1;
            return;
        };
        let Some(relay) = self.outbound(now, slot, peer, cd.data().len()) else {
            return;
        };
        let mut buf = self.take_buf();
        buf.extend_from_slice(cd.data());
        self.push(&ft, false, peer, relay, buf);
    }

    fn relay_from_peer(&mut self, now: Instant, slot: usize, d: Datagram<'_>) {
        let peer = d.remote;
        let Some(a) = self
            .slots
            .get_mut(slot)
            .and_then(Option::as_mut)
            .filter(|a| !a.tcp)
        else {
            self.counters.dropped_no_allocation += 1;
            return;
        };
        if !a.permitted(now, peer.ip()) {
            self.counters.dropped_no_permission += 1;
            return;
        }
        // The largest payload that fits a Data indication.
        if d.bytes.len() > usize::from(u16::MAX) - 64 {
            self.counters.dropped_malformed += 1;
            return;
        }
        if !a.take_bandwidth(now, d.bytes.len()) {
            self.counters.dropped_bandwidth += 1;
            return;
        }
        a.traffic.bytes_to_client += d.bytes.len() as u64;
        a.traffic.packets_to_client += 1;
        let ft = a.five_tuple;
        let channel = a
            .channel_by_peer
            .get(&peer)
            .copied()
            .filter(|n| a.channels.get(n).is_some_and(|c| now < c.expires));
        self.counters.bytes_to_client += d.bytes.len() as u64;
        self.counters.packets_to_client += 1;
        let mut buf = self.take_buf();
        let ok = match channel {
            Some(n) => ChannelData::new(n, d.bytes)
                .ok()
                .and_then(|cd| cd.encode(&mut buf, ft.transport.is_reliable()).ok())
                .is_some(),
            None => {
                let mut tid = [0u8; 12];
                self.rng.fill_bytes(&mut tid);
                (|| {
                    let mut b = MessageBuilder::new(
                        &mut buf,
                        MessageType::new(Method::DATA, MessageClass::Indication),
                        TransactionId::new(tid),
                    )?;
                    b.add(&XorPeerAddress(peer))?;
                    b.add(&Data(d.bytes))?;
                    Ok::<(), EncodeError>(())
                })()
                .is_ok()
            }
        };
        if ok {
            self.push(&ft, true, ft.client, ft.server, buf);
        } else {
            self.counters.dropped_malformed += 1;
            self.recycle(buf);
        }
    }
}
