//! The TURN server (RFC 8656) as a sans-IO state machine.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use p2p_stun::{classify, PacketKind};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::auth::{
    CredentialStore, NonceMinter, FEATURE_PASSWORD_ALGORITHMS, FEATURE_USERNAME_ANONYMITY,
};
use crate::relay::RelayAllocator;
use crate::tcp::TcpCommand;
use crate::types::{Datagram, FiveTuple, Transmit, Transport};

mod allocation;
mod auth;
mod config;
mod events;
mod peers;
mod relay;
mod replies;
mod requests;
mod routes;
mod tcp;

use allocation::*;
use auth::*;
pub use config::*;
pub use events::*;
pub use routes::*;
use tcp::*;

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
}
