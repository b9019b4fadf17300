//! The TURN server (RFC 8656) as a sans-IO state machine.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use p2p_proto::{Datagram, FiveTuple, Handled, Machine, Transmit, Transport};
use p2p_stun::{classify, PacketKind};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::auth::{
    CredentialStore, NonceMinter, FEATURE_PASSWORD_ALGORITHMS, FEATURE_USERNAME_ANONYMITY,
};

mod allocate;
mod allocation;
mod auth;
mod bandwidth;
mod config;
mod events;
mod limiter;
mod peers;
mod ports;
mod relay;
mod replies;
mod requests;
mod routes;
mod tcp;

use allocate::{BindWaiter, PendingAllocate};
use allocation::Allocation;
use auth::Auth;
pub use config::{AuthLimit, Bandwidth, ServerConfig};
pub use events::{
    AllocationInfo, AuthFailure, Counters, EndReason, ServerEvent, ServerOutput, SocketRequest,
    Traffic,
};
use limiter::AuthLimiter;
use ports::PortPool;
pub use routes::{ChannelRoute, RouteUpdate};
use tcp::{TcpConn, TcpState};

/// Most buffers kept for reuse.
const POOL_MAX: usize = 1024;

/// A TURN server (RFC 8656) over UDP, with clients on UDP, TCP or TLS.
///
/// It owns no socket and reads no clock; it is driven through
/// [`p2p_proto::Machine`]. The driver owns the listening sockets, and the
/// sockets the server asks for ([`SocketRequest`]): one UDP socket per
/// relayed address, and for RFC 6062 a TCP listener per TCP relayed address
/// and the TCP connections to peers.
///
/// - Every datagram received on a listening socket **or** on a relayed
///   socket goes to [`handle_input`](Machine::handle_input) as a
///   [`Datagram`] whose `destination` is the address of the socket it
///   arrived on and `source` the sender; the server tells the two apart by
///   its relayed addresses. A 5-tuple ([`FiveTuple`]) names an allocation
///   as the server sees it: `local` = the listening address, `remote` = the
///   client. On a TCP/TLS connection, the driver frames the stream with
///   [`p2p_stun::next_frame_len`] and feeds one whole message at a time
///   (`transport` = TCP/TLS, `source` = the connection's peer address).
/// - After every call, drain [`poll_output`](Machine::poll_output) and act
///   on each output as it comes ([`ServerOutput`] says the order they come
///   in and why): publish routes, send each [`Transmit`] from the socket
///   whose address is its `source` (a listening address, or a relayed
///   address for data to peers; over TCP, on the connection of the
///   5-tuple) and give the buffer back with [`TurnServer::recycle`], open
///   or close the sockets asked for and report with
///   [`TurnServer::bind_result`] and the `tcp_*` calls, log the events.
///   Then call [`handle_timeout`](Machine::handle_timeout) at
///   [`poll_timeout`](Machine::poll_timeout) (earlier is harmless).
///
/// The server starts serving at once; it has nothing to do before its
/// first datagram, so `handle_timeout` is only ever asked for timers.
///
/// An Allocate is answered once the driver has bound the relayed sockets
/// it asked for ([`SocketRequest::BindUdp`], [`TurnServer::bind_result`]);
/// a driver that answers in the same drain (a test, a virtual network)
/// gets the answer in that drain. Retransmissions of the Allocate while it
/// waits are absorbed.
///
/// STUN Binding requests on listening addresses are answered too (no
/// authentication) unless [`ServerConfig::answer_binding`] is off; use
/// [`crate::is_turn_method`] to route Binding elsewhere.
///
/// Relaying allocates only the output buffer, taken from a pool; one hash
/// lookup finds the allocation and one the permission.
pub struct TurnServer<C: CredentialStore> {
    config: ServerConfig,
    creds: C,
    /// The relayed addresses: taken, held, refused by the OS.
    ports: PortPool,
    /// Allocates waiting for their sockets.
    pending_allocates: HashMap<FiveTuple, PendingAllocate>,
    /// Who waits for the driver's answer about an address.
    binds: HashMap<SocketAddr, BindWaiter>,
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
    /// Allocations (and Allocates under way) per client address
    /// (`limiter::addr_key`), for the reserve.
    addr_counts: HashMap<std::net::IpAddr, u32>,
    /// Allocations (and Allocates under way) of ephemeral users.
    ephemeral_count: u32,
    /// Authentication failures per client address.
    auth_limiter: Option<AuthLimiter>,
    reservations: HashMap<[u8; 8], (SocketAddr, Instant)>,
    reservation_queue: VecDeque<(Instant, [u8; 8])>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ServerEvent>,
    /// Sockets to open or close.
    sockets: VecDeque<SocketRequest>,
    pool: Vec<Vec<u8>>,
    /// By client transport (`replies::transport_index`).
    counters: [Counters; 3],
    tcp_conns: HashMap<u32, TcpConn>,
    /// Bound client data connections → their peer connection.
    data_conns: HashMap<FiveTuple, u32>,
    /// ConnectionBind deadlines, in order (the timeout is constant).
    bind_deadlines: VecDeque<(Instant, u32)>,
    /// Route changes for the driver's fast path ([`ServerConfig::export_routes`]).
    routes: VecDeque<RouteUpdate>,
    /// Where an Allocate beyond the total quota is redirected (300).
    alternates: Vec<SocketAddr>,
    /// The same for Allocates over TLS: other servers' TLS addresses.
    alternates_tls: Vec<SocketAddr>,
}

impl<C: CredentialStore> std::fmt::Debug for TurnServer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("realm", &self.config.realm)
            .field("allocations", &self.by_tuple.len())
            .field("counters", &self.counters())
            .finish()
    }
}

impl<C: CredentialStore> TurnServer<C> {
    /// A server. `epoch` pairs a monotonic instant with the wall-clock time
    /// at that instant; the server derives wall time (for REST credential
    /// expiry) as `epoch.1 + (now - epoch.0)` and never reads a clock.
    pub fn new(config: ServerConfig, credentials: C, epoch: (Instant, SystemTime)) -> Self {
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
        let ports = PortPool::new(&config.relayed_ips, config.relayed_ports.clone());
        // The limiter's hash keys come from the nonce key (secret too), so
        // that the RNG's sequence stays what it was.
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&key[i..i + 8]);
            u64::from_le_bytes(w) ^ 0x6c69_6d69_7465_7221
        };
        let auth_limiter = config
            .auth_failure_limit
            .map(|l| AuthLimiter::new(l, config.ipv6_prefix, epoch.0, [word(0), word(16)]));
        TurnServer {
            config,
            creds: credentials,
            ports,
            pending_allocates: HashMap::new(),
            binds: HashMap::new(),
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
            addr_counts: HashMap::new(),
            ephemeral_count: 0,
            auth_limiter,
            reservations: HashMap::new(),
            reservation_queue: VecDeque::new(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            sockets: VecDeque::new(),
            pool: Vec::new(),
            counters: [Counters::default(); 3],
            tcp_conns: HashMap::new(),
            data_conns: HashMap::new(),
            bind_deadlines: VecDeque::new(),
            routes: VecDeque::new(),
            alternates: Vec::new(),
            alternates_tls: Vec::new(),
        }
    }

    /// Other TURN servers of the same service (sharing its credentials):
    /// an Allocate over UDP or TCP beyond [`ServerConfig::total_quota`] is
    /// answered 300 Try Alternate with an ALTERNATE-SERVER (RFC 8489 §10),
    /// the first of these of the request's address family that is not the
    /// address it came to, instead of 508. The client comes back on the
    /// same transport, so these serve UDP and TCP on one port (as
    /// `p2p serve` does). Empty (the default): 508.
    pub fn set_alternate_servers(&mut self, servers: Vec<SocketAddr>) {
        self.alternates = servers;
    }

    /// What [`TurnServer::set_alternate_servers`] set.
    pub fn alternate_servers(&self) -> &[SocketAddr] {
        &self.alternates
    }

    /// [`TurnServer::set_alternate_servers`] for Allocates over TLS: the
    /// other servers' TLS addresses (a TLS client sent to a plain port
    /// would fail). Empty (the default): an Allocate over TLS beyond the
    /// quota is answered 508. The 300 carries no ALTERNATE-DOMAIN: the
    /// client checks the alternate's certificate against the name it
    /// checked this server's against (RFC 8489 §10), so the servers share
    /// a certificate name.
    pub fn set_tls_alternate_servers(&mut self, servers: Vec<SocketAddr>) {
        self.alternates_tls = servers;
    }

    /// What [`TurnServer::set_tls_alternate_servers`] set.
    pub fn tls_alternate_servers(&self) -> &[SocketAddr] {
        &self.alternates_tls
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

    /// Replace the peer policy (a configuration reload). Permissions,
    /// channels and Connects asked for from now on, refreshes included,
    /// follow the new rules; what was granted before stays until it expires
    /// or is refreshed (a permission lasts 5 minutes, a channel 10).
    pub fn set_peer_policy(&mut self, policy: crate::PeerPolicy) {
        self.config.peer_policy = policy;
    }

    /// The counters, every client transport together.
    pub fn counters(&self) -> Counters {
        let mut sum = Counters::default();
        for c in &self.counters {
            sum += *c;
        }
        sum
    }

    /// The counters of what came from or went to clients over `transport`
    /// (peer traffic is counted under its allocation's transport).
    pub fn transport_counters(&self, transport: Transport) -> Counters {
        self.counters[replies::transport_index(transport)]
    }

    /// Relayed addresses taken from the pool: bound or being bound for an
    /// allocation, or held for a reservation.
    pub fn relayed_addresses_in_use(&self) -> usize {
        self.ports.in_use()
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

    /// Give a sent [`Transmit::contents`] buffer back for reuse (the
    /// relay path then allocates nothing).
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.pool.len() < POOL_MAX && buf.capacity() >= 64 {
            buf.clear();
            self.pool.push(buf);
        }
    }

    /// The client's TCP or TLS connection of `five_tuple` closed (or was
    /// reset, or idled out): its allocation, if any, is deleted at once and
    /// its relayed addresses released (RFC 8656 §3.1 and §7: over TCP, an
    /// allocation lives as long as the connection that made it), with
    /// [`ServerEvent::AllocationEnded`] ([`EndReason::ConnectionClosed`]);
    /// an Allocate still waiting for its sockets is given up. Returns
    /// whether an allocation ended. A UDP 5-tuple is left alone (UDP has no
    /// connection to close).
    ///
    /// For an RFC 6062 client data connection, the peer connection spliced
    /// to it is closed too ([`SocketRequest::CloseTcp`]).
    pub fn connection_closed(&mut self, five_tuple: &FiveTuple) -> bool {
        if !five_tuple.transport.is_reliable() {
            return false;
        }
        if let Some(id) = self.data_conns.remove(five_tuple) {
            self.tcp_conns.remove(&id);
            self.sockets.push_back(SocketRequest::CloseTcp { id });
        }
        self.cancel_allocate(five_tuple);
        let Some(&slot) = self.by_tuple.get(five_tuple) else {
            return false;
        };
        self.remove_allocation(slot, EndReason::ConnectionClosed);
        true
    }

    /// Stop: every allocation ends ([`EndReason::Stopped`]), Allocates under
    /// way are given up, reservations are released and every peer
    /// connection is closed: drain the outputs to close the sockets and
    /// hear the allocations' traffic. The server takes new requests
    /// afterwards as before; a driver that stops drops it.
    pub fn shutdown(&mut self) {
        let waiting: Vec<FiveTuple> = self.pending_allocates.keys().copied().collect();
        for ft in waiting {
            self.cancel_allocate(&ft);
        }
        let mut live: Vec<(FiveTuple, usize)> =
            self.by_tuple.iter().map(|(ft, s)| (*ft, *s)).collect();
        live.sort();
        for (_, slot) in live {
            self.remove_allocation(slot, EndReason::Stopped);
        }
        let mut held: Vec<SocketAddr> = self.reservations.drain().map(|(_, (a, _))| a).collect();
        held.sort();
        self.reservation_queue.clear();
        for a in held {
            self.ports.release(a);
            self.sockets
                .push_back(SocketRequest::Release { relayed: a });
        }
        let mut ids: Vec<u32> = self.tcp_conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.tcp_conns.remove(&id);
            self.sockets.push_back(SocketRequest::CloseTcp { id });
        }
        self.data_conns.clear();
        self.bind_deadlines.clear();
    }
}

impl<C: CredentialStore> Machine for TurnServer<C> {
    type Output = ServerOutput;

    /// A datagram arrived on a listening address or on a relayed address
    /// (`destination` says which). Never panics; bad input is dropped (and
    /// counted) or answered with an error response. What is neither STUN
    /// nor ChannelData on a listening address is not the server's
    /// ([`Handled::NotMine`]).
    fn handle_input(&mut self, now: Instant, d: Datagram<'_>) -> Handled {
        if let Some(&slot) = self.by_relay.get(&d.destination) {
            self.relay_from_peer(now, slot, d);
            return Handled::Taken;
        }
        match classify(d.contents) {
            PacketKind::ChannelData => self.channel_data_from_client(now, d),
            PacketKind::Stun => self.stun_from_client(now, d),
            _ => return Handled::NotMine,
        }
        Handled::Taken
    }

    /// Expire allocations, permissions, channels, reservations and unbound
    /// peer connections due at `now`.
    fn handle_timeout(&mut self, now: Instant) {
        self.run_allocation_timers(now);
        self.run_reservation_timers(now);
        self.run_bind_deadlines(now);
    }

    /// Routes, then transmits, then socket requests, then events (see
    /// [`ServerOutput`]).
    fn poll_output(&mut self) -> Option<ServerOutput> {
        if let Some(r) = self.routes.pop_front() {
            return Some(ServerOutput::Route(r));
        }
        if let Some(t) = self.transmits.pop_front() {
            return Some(ServerOutput::Transmit(t));
        }
        if let Some(s) = self.sockets.pop_front() {
            return Some(ServerOutput::Socket(s));
        }
        self.events.pop_front().map(ServerOutput::Event)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let t = self.timers.peek().map(|Reverse((t, _, _))| *t);
        let r = self.reservation_queue.front().map(|(t, _)| *t);
        let b = self.bind_deadlines.front().map(|(t, _)| *t);
        [t, r, b].into_iter().flatten().min()
    }
}
