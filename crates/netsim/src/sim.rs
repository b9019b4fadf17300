//! The simulation: hosts, realms, routing and the event loop.

use std::any::type_name;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::link::LinkConfig;
use crate::nat::{MappingInfo, Nat, NatConfig, NatId};
use crate::node::{wire, AnyNode, Node, Transmit, Transport};
use crate::portmap::{self, SERVER_PORT};
use crate::trace::{DropReason, DropRecord, StallReason, Stalled, Stats, TraceEvent, TraceKind};

/// Handle of a host added with [`Sim::add_host`]. Displays as `host <n>`,
/// `n` counting from 0 in the order hosts were added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(usize);

impl HostId {
    /// Index of this host in the order hosts were added (0-based).
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host {}", self.0)
    }
}

/// A firewall in front of a public host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Firewall {
    /// Drop every UDP datagram to or from the host; `Tcp` datagrams pass.
    pub udp_blocked: bool,
    /// Let TCP in only from a remote address the host sent TCP to first: a
    /// stateful firewall that allows connections out, none in (the
    /// enterprise network of ICE-TCP, RFC 6544 §1).
    pub tcp_out_only: bool,
}

/// Where a host sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Realm {
    /// On the public internet: its IPs are reachable from everywhere.
    Public,
    /// On the LAN behind a NAT: its IPs are private to that LAN (two LANs may
    /// reuse the same private addresses), other hosts of the LAN reach it
    /// directly, everything else goes through the NAT.
    Nat(NatId),
    /// On the public internet behind a firewall.
    Firewall(Firewall),
}

/// Scope in which an IP address is unique and routable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Public,
    Lan(NatId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Host(HostId),
    Nat(NatId),
}

struct Host {
    ips: Vec<IpAddr>,
    realm: Realm,
    link: Option<LinkConfig>,
    node: Box<dyn AnyNode>,
    type_name: &'static str,
}

impl Host {
    fn udp_blocked(&self) -> bool {
        matches!(
            self.realm,
            Realm::Firewall(Firewall {
                udp_blocked: true,
                ..
            })
        )
    }

    fn tcp_out_only(&self) -> bool {
        matches!(
            self.realm,
            Realm::Firewall(Firewall {
                tcp_out_only: true,
                ..
            })
        )
    }

    fn scope(&self) -> Scope {
        match self.realm {
            Realm::Nat(n) => Scope::Lan(n),
            Realm::Public | Realm::Firewall(_) => Scope::Public,
        }
    }
}

enum Hop {
    /// The packet has crossed the sender's access link and reaches the edge
    /// of the sender's realm (its NAT, or the public core).
    Egress { from: HostId, dgram: Transmit },
    /// The packet has crossed the receiver's access link.
    Deliver { to: HostId, dgram: Transmit },
}

struct Queued {
    at: Instant,
    seq: u64,
    hop: Hop,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

enum Advance {
    Progressed,
    Idle,
    Limit,
}

/// Most transmits taken from one node in one step; the rest wait for the next
/// step (same instant), so a runaway node cannot hang a step.
const MAX_DRAIN_PER_NODE: usize = 10_000;
/// Steps one `run_for` call may take before it panics with the trace.
const RUN_FOR_MAX_STEPS: usize = 10_000_000;
/// Trace entries kept by default.
const DEFAULT_TRACE_CAPACITY: usize = 1024;
/// Trace entries put into a [`Stalled`] error.
const STALL_TRACE_LEN: usize = 100;

/// A deterministic virtual network on a simulated clock.
///
/// See the crate documentation for an example. Everything random (link loss,
/// jitter, duplication, reordering, NAT random ports) comes from one `StdRng`
/// seeded at construction, and ties between events at the same instant are
/// broken by insertion order, so one seed gives one run.
pub struct Sim {
    t0: Instant,
    now: Instant,
    rng: StdRng,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    hosts: Vec<Host>,
    nats: Vec<Nat>,
    owners: BTreeMap<(Scope, IpAddr), Owner>,
    default_link: LinkConfig,
    trace: VecDeque<TraceEvent>,
    trace_capacity: usize,
    drops: Vec<DropRecord>,
    stats: Stats,
    /// (host, remote) TCP "connections" a `tcp_out_only` host opened.
    tcp_opened: std::collections::BTreeSet<(usize, std::net::SocketAddr)>,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("elapsed", &self.elapsed())
            .field("hosts", &self.hosts.len())
            .field("nats", &self.nats.len())
            .field("in_flight", &self.queue.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Sim {
    /// A new, empty network whose clock starts at `t0`, with all randomness
    /// drawn from `seed`.
    pub fn new(t0: Instant, seed: u64) -> Self {
        Sim {
            t0,
            now: t0,
            rng: StdRng::seed_from_u64(seed),
            seq: 0,
            queue: BinaryHeap::new(),
            hosts: Vec::new(),
            nats: Vec::new(),
            owners: BTreeMap::new(),
            default_link: LinkConfig::default(),
            trace: VecDeque::new(),
            trace_capacity: DEFAULT_TRACE_CAPACITY,
            drops: Vec::new(),
            stats: Stats::default(),
            tcp_opened: std::collections::BTreeSet::new(),
        }
    }

    /// [`Sim::new`] with `t0 = Instant::now()`, read once here and never again.
    pub fn with_seed(seed: u64) -> Self {
        Sim::new(Instant::now(), seed)
    }

    /// The simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The instant the simulation started at.
    pub fn t0(&self) -> Instant {
        self.t0
    }

    /// Simulated time since `t0`.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Link used by hosts without their own [`Sim::set_link`]; applies from the
    /// next packet on. Starts as [`LinkConfig::default`].
    pub fn set_default_link(&mut self, link: LinkConfig) {
        self.default_link = link;
    }

    /// Give `host` its own access link; applies from the next packet on, so a
    /// test can cut a link mid-run with `loss: 1.0`.
    ///
    /// # Panics
    /// If `host` does not belong to this simulation.
    pub fn set_link(&mut self, host: HostId, link: LinkConfig) {
        self.host_mut(host).link = Some(link);
    }

    /// How many trace entries [`Sim::trace`] keeps (default 1024, oldest dropped first).
    pub fn set_trace_capacity(&mut self, capacity: usize) {
        self.trace_capacity = capacity;
        while self.trace.len() > capacity {
            self.trace.pop_front();
        }
    }

    /// Add a NAT. Its external IPs become public addresses.
    ///
    /// # Panics
    /// If an external IP is already used in the public scope.
    pub fn add_nat(&mut self, config: NatConfig) -> NatId {
        let id = NatId(self.nats.len());
        for ip in &config.external_ips {
            self.claim(Scope::Public, *ip, Owner::Nat(id));
        }
        if let Some(service) = &config.port_mapping {
            // The router's own address on its LAN.
            self.claim(Scope::Lan(id), service.gateway, Owner::Nat(id));
        }
        self.nats.push(Nat::new(id, config));
        id
    }

    /// Add a host owning `ips` in `realm`, driven by `node`.
    ///
    /// A datagram is delivered to the host owning its destination IP in the
    /// sender's scope (the public internet, or the sender's LAN); the port is
    /// the node's business.
    ///
    /// # Panics
    /// If `ips` is empty, if an IP is already used in the same scope, or if
    /// `realm` names a NAT of another simulation.
    pub fn add_host<N: Node + 'static>(
        &mut self,
        ips: impl IntoIterator<Item = IpAddr>,
        realm: Realm,
        node: N,
    ) -> HostId {
        let id = HostId(self.hosts.len());
        let ips: Vec<IpAddr> = ips.into_iter().collect();
        assert!(!ips.is_empty(), "{id} needs at least one IP");
        let scope = match realm {
            Realm::Nat(n) => {
                assert!(n.0 < self.nats.len(), "{n} does not exist");
                Scope::Lan(n)
            }
            Realm::Public | Realm::Firewall(_) => Scope::Public,
        };
        for ip in &ips {
            self.claim(scope, *ip, Owner::Host(id));
        }
        self.hosts.push(Host {
            ips,
            realm,
            link: None,
            node: Box::new(node),
            type_name: type_name::<N>(),
        });
        id
    }

    fn claim(&mut self, scope: Scope, ip: IpAddr, owner: Owner) {
        if let Some(prev) = self.owners.insert((scope, ip), owner) {
            panic!("{ip} is already owned by {prev:?} in {scope:?}");
        }
    }

    /// The IPs a host owns.
    pub fn host_ips(&self, host: HostId) -> &[IpAddr] {
        &self.host(host).ips
    }

    /// The realm a host sits in.
    pub fn host_realm(&self, host: HostId) -> Realm {
        self.host(host).realm
    }

    /// The node of `host`, downcast to its concrete type.
    ///
    /// # Panics
    /// If the node is not a `T` (the message names its real type).
    pub fn node<T: Node + 'static>(&self, host: HostId) -> &T {
        let h = self.host(host);
        match h.node.as_any().downcast_ref::<T>() {
            Some(n) => n,
            None => panic!("{host} runs a {}, not a {}", h.type_name, type_name::<T>()),
        }
    }

    /// The node of `host`, mutably, downcast to its concrete type. Changes
    /// made through it (new transmits, new timeouts) are picked up by the next
    /// step.
    ///
    /// # Panics
    /// If the node is not a `T`.
    pub fn node_mut<T: Node + 'static>(&mut self, host: HostId) -> &mut T {
        let h = self.host_mut(host);
        let name = h.type_name;
        match h.node.as_any_mut().downcast_mut::<T>() {
            Some(n) => n,
            None => panic!("{host} runs a {name}, not a {}", type_name::<T>()),
        }
    }

    /// The node of `host` if it is a `T`.
    pub fn try_node<T: Node + 'static>(&self, host: HostId) -> Option<&T> {
        self.hosts
            .get(host.0)
            .and_then(|h| h.node.as_any().downcast_ref::<T>())
    }

    fn host(&self, host: HostId) -> &Host {
        match self.hosts.get(host.0) {
            Some(h) => h,
            None => panic!("{host} does not exist"),
        }
    }

    fn host_mut(&mut self, host: HostId) -> &mut Host {
        match self.hosts.get_mut(host.0) {
            Some(h) => h,
            None => panic!("{host} does not exist"),
        }
    }

    fn nat_mut(&mut self, nat: NatId) -> &mut Nat {
        match self.nats.get_mut(nat.0) {
            Some(n) => n,
            None => panic!("{nat} does not exist"),
        }
    }

    /// The configuration of a NAT.
    pub fn nat_config(&self, nat: NatId) -> &NatConfig {
        match self.nats.get(nat.0) {
            Some(n) => &n.config,
            None => panic!("{nat} does not exist"),
        }
    }

    /// Live mappings of a NAT at the current time, oldest first.
    pub fn nat_mappings(&mut self, nat: NatId) -> Vec<MappingInfo> {
        let now = self.now;
        self.nat_mut(nat).mappings(now)
    }

    /// Forget every mapping of a NAT (a NAT reboot).
    pub fn flush_nat(&mut self, nat: NatId) {
        self.nat_mut(nat).flush();
    }

    /// Send `transmit` from `host` now, as if its node had returned it from
    /// `poll_transmit`; useful for unsolicited packets in tests.
    pub fn send_from(&mut self, host: HostId, transmit: Transmit) {
        self.host(host);
        self.route_send(host, transmit);
    }

    /// Every packet dropped so far, oldest first.
    pub fn drops(&self) -> &[DropRecord] {
        &self.drops
    }

    /// The most recent packet events (sent, NAT-mapped, delivered, dropped),
    /// oldest first.
    pub fn trace(&self) -> impl Iterator<Item = &TraceEvent> + '_ {
        self.trace.iter()
    }

    /// Counters over the whole run.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Number of packets still in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// One step of the event loop: drain every node's transmits into the
    /// network, jump the clock to the next packet arrival or node timeout,
    /// deliver the due packets and fire the due timeouts.
    ///
    /// Returns `false`, without moving the clock, when the network is idle (no
    /// packet in flight, no node timeout).
    pub fn step(&mut self) -> bool {
        matches!(self.advance(None), Advance::Progressed)
    }

    /// Run for `duration` of simulated time; the clock ends exactly at
    /// `now + duration` even if the network went idle earlier. Returns the
    /// number of steps taken.
    ///
    /// # Panics
    /// After 10 million steps in one call (a livelock), with the trace.
    pub fn run_for(&mut self, duration: Duration) -> usize {
        let end = self.now + duration;
        let mut steps = 0;
        loop {
            match self.advance(Some(end)) {
                Advance::Progressed => {
                    steps += 1;
                    if steps >= RUN_FOR_MAX_STEPS {
                        panic!("{}", self.stalled(StallReason::StepLimit, duration, steps));
                    }
                }
                Advance::Idle | Advance::Limit => {
                    self.now = end;
                    return steps;
                }
            }
        }
    }

    /// Step until `pred(self)` holds; returns the simulated time it took.
    ///
    /// `pred` is checked before the first step and after every step. Fails
    /// with [`Stalled`] (carrying the last packet events) when the network goes
    /// idle, when `max_sim_time` has passed (the clock then stands at the
    /// limit), or after `max_steps` steps.
    pub fn run_until(
        &mut self,
        mut pred: impl FnMut(&Sim) -> bool,
        max_sim_time: Duration,
        max_steps: usize,
    ) -> Result<Duration, Stalled> {
        let start = self.now;
        let deadline = start + max_sim_time;
        let mut steps = 0;
        loop {
            if pred(self) {
                return Ok(self.now - start);
            }
            if steps >= max_steps {
                return Err(self.stalled(StallReason::StepLimit, self.now - start, steps));
            }
            match self.advance(Some(deadline)) {
                Advance::Progressed => steps += 1,
                Advance::Idle => {
                    // Draining may have changed node state.
                    if pred(self) {
                        return Ok(self.now - start);
                    }
                    return Err(self.stalled(StallReason::Idle, self.now - start, steps));
                }
                Advance::Limit => {
                    self.now = deadline;
                    if pred(self) {
                        return Ok(max_sim_time);
                    }
                    return Err(self.stalled(StallReason::TimeLimit, max_sim_time, steps));
                }
            }
        }
    }

    fn stalled(&self, reason: StallReason, elapsed: Duration, steps: usize) -> Stalled {
        let skip = self.trace.len().saturating_sub(STALL_TRACE_LEN);
        Stalled {
            reason,
            elapsed,
            steps,
            total_drops: self.stats.dropped,
            trace: self.trace.iter().skip(skip).cloned().collect(),
        }
    }

    fn advance(&mut self, limit: Option<Instant>) -> Advance {
        // 1. Drain transmits.
        let now = self.now;
        for i in 0..self.hosts.len() {
            for _ in 0..MAX_DRAIN_PER_NODE {
                let Some(t) = self.hosts[i].node.as_node().poll_transmit(now) else {
                    break;
                };
                self.route_send(HostId(i), t);
            }
        }
        // 2. Next event.
        let mut next = self.queue.peek().map(|Reverse(q)| q.at);
        for h in &mut self.hosts {
            if let Some(t) = h.node.as_node().poll_timeout() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        let Some(next) = next else {
            return Advance::Idle;
        };
        let next = next.max(self.now);
        if limit.is_some_and(|l| next > l) {
            return Advance::Limit;
        }
        // 3. Advance, deliver, fire.
        self.now = next;
        self.stats.steps += 1;
        while self.queue.peek().is_some_and(|Reverse(q)| q.at <= next) {
            let Some(Reverse(q)) = self.queue.pop() else {
                break;
            };
            match q.hop {
                Hop::Egress { from, dgram } => self.route_egress(from, dgram),
                Hop::Deliver { to, dgram } => {
                    self.stats.delivered += 1;
                    self.record(TraceKind::Delivered { host: to }, &dgram);
                    self.hosts[to.0]
                        .node
                        .as_node()
                        .handle_input(next, dgram.as_datagram());
                }
            }
        }
        for h in &mut self.hosts {
            let node = h.node.as_node();
            if node.poll_timeout().is_some_and(|t| t <= next) {
                node.handle_timeout(next);
            }
        }
        Advance::Progressed
    }

    fn push(&mut self, at: Instant, hop: Hop) {
        let seq = self.seq;
        self.seq += 1;
        self.queue.push(Reverse(Queued { at, seq, hop }));
    }

    fn record(&mut self, kind: TraceKind, d: &Transmit) {
        if self.trace_capacity == 0 {
            return;
        }
        if self.trace.len() >= self.trace_capacity {
            self.trace.pop_front();
        }
        self.trace.push_back(TraceEvent {
            at: self.now,
            elapsed: self.now - self.t0,
            kind,
            transport: d.transport,
            source: d.source,
            destination: d.destination,
            len: d.contents.len(),
        });
    }

    fn drop_packet(&mut self, reason: DropReason, d: &Transmit) {
        self.stats.dropped += 1;
        self.drops.push(DropRecord {
            at: self.now,
            elapsed: self.now - self.t0,
            transport: d.transport,
            source: d.source,
            destination: d.destination,
            len: d.contents.len(),
            reason: reason.clone(),
        });
        self.record(TraceKind::Dropped(reason), d);
    }

    fn link_of(&self, host: HostId) -> &LinkConfig {
        self.hosts[host.0]
            .link
            .as_ref()
            .unwrap_or(&self.default_link)
    }

    /// Cross `host`'s access link; returns the delays of the surviving copies
    /// (recording a loss if none survive).
    fn cross_link(&mut self, host: HostId, d: &Transmit) -> Vec<Duration> {
        let link = self.link_of(host).clone();
        let delays = link.crossing(d.transport, &mut self.rng);
        if delays.is_empty() {
            self.drop_packet(DropReason::Loss { host }, d);
        }
        self.stats.duplicated += delays.len().saturating_sub(1) as u64;
        delays
    }

    /// A node sent `d`: check it, then cross the sender's link.
    fn route_send(&mut self, from: HostId, d: Transmit) {
        self.stats.sent += 1;
        self.record(TraceKind::Sent { host: from }, &d);
        let host = &self.hosts[from.0];
        if !host.ips.contains(&d.source.ip()) {
            let reason = DropReason::SourceNotOwned {
                host: from,
                source: d.source.ip(),
            };
            return self.drop_packet(reason, &d);
        }
        if d.transport == Transport::Udp && host.udp_blocked() {
            return self.drop_packet(DropReason::UdpBlocked { host: from }, &d);
        }
        if d.transport == Transport::Tcp && host.tcp_out_only() {
            self.tcp_opened.insert((from.0, d.destination));
        }
        let delays = self.cross_link(from, &d);
        self.schedule(delays, d, |dgram| Hop::Egress { from, dgram });
    }

    fn schedule(&mut self, delays: Vec<Duration>, d: Transmit, hop: impl Fn(Transmit) -> Hop) {
        let n = delays.len();
        let mut d = Some(d);
        for (i, delay) in delays.into_iter().enumerate() {
            let copy = if i + 1 == n { d.take() } else { d.clone() };
            if let Some(copy) = copy {
                self.push(self.now + delay, hop(copy));
            }
        }
    }

    /// The packet reached the edge of the sender's realm.
    fn route_egress(&mut self, from: HostId, mut d: Transmit) {
        let Scope::Lan(nat) = self.hosts[from.0].scope() else {
            return self.route_in_scope(Scope::Public, d);
        };
        // Same LAN: straight to the neighbour, no NAT.
        match self.owners.get(&(Scope::Lan(nat), d.destination.ip())) {
            Some(Owner::Host(to)) => {
                let to = *to;
                return self.ingress_host(to, d);
            }
            // The router itself: its port-mapping service.
            Some(Owner::Nat(_)) => return self.router_receives(nat, from, d),
            None => {}
        }
        // Source translation.
        let now = self.now;
        let internal = d.source;
        let n = &mut self.nats[nat.0];
        match n.outbound(
            now,
            wire(d.transport),
            internal,
            d.destination,
            &mut self.rng,
        ) {
            Ok(out) => {
                d.source = out.external;
                if out.created {
                    self.record(TraceKind::Mapped { nat, internal }, &d);
                }
            }
            Err(reason) => return self.drop_packet(reason, &d),
        }
        let n = &self.nats[nat.0];
        if n.owns_external_ip(d.destination.ip()) {
            if n.config.hairpinning {
                return self.nat_inbound(nat, d);
            }
            return self.drop_packet(DropReason::HairpinDisabled { nat }, &d);
        }
        self.route_in_scope(Scope::Public, d);
    }

    /// A packet from a host of `nat`'s LAN to the router's LAN address:
    /// PCP and NAT-PMP on port 5351 are answered (the answer crosses the
    /// host's link back), the rest is dropped.
    fn router_receives(&mut self, nat: NatId, from: HostId, d: Transmit) {
        let now = self.now;
        let answer = (d.transport == Transport::Udp && d.destination.port() == SERVER_PORT)
            .then(|| {
                portmap::answer(
                    &mut self.nats[nat.0],
                    now,
                    d.source,
                    &d.contents,
                    &mut self.rng,
                )
            })
            .flatten();
        let Some(answer) = answer else {
            let reason = DropReason::NotServed {
                nat,
                destination: d.destination,
            };
            return self.drop_packet(reason, &d);
        };
        self.stats.delivered += 1;
        self.record(TraceKind::ToRouter { nat }, &d);
        let reply = Transmit::new(Transport::Udp, d.destination, d.source, answer);
        self.stats.sent += 1;
        self.record(TraceKind::FromRouter { nat }, &reply);
        self.ingress_host(from, reply);
    }

    fn route_in_scope(&mut self, scope: Scope, d: Transmit) {
        match self.owners.get(&(scope, d.destination.ip())).copied() {
            Some(Owner::Host(to)) => self.ingress_host(to, d),
            Some(Owner::Nat(nat)) => self.nat_inbound(nat, d),
            None => {
                let reason = DropReason::NoRoute {
                    destination: d.destination.ip(),
                };
                self.drop_packet(reason, &d)
            }
        }
    }

    /// The packet reached one of `nat`'s external addresses.
    fn nat_inbound(&mut self, nat: NatId, mut d: Transmit) {
        let now = self.now;
        match self.nats[nat.0].inbound(now, wire(d.transport), d.source, d.destination) {
            Ok(internal) => {
                d.destination = internal;
                self.route_in_scope(Scope::Lan(nat), d);
            }
            Err(reason) => self.drop_packet(reason, &d),
        }
    }

    /// The packet reached `to`'s access link.
    fn ingress_host(&mut self, to: HostId, d: Transmit) {
        if d.transport == Transport::Udp && self.hosts[to.0].udp_blocked() {
            return self.drop_packet(DropReason::UdpBlocked { host: to }, &d);
        }
        if d.transport == Transport::Tcp
            && self.hosts[to.0].tcp_out_only()
            && !self.tcp_opened.contains(&(to.0, d.source))
        {
            return self.drop_packet(DropReason::TcpInbound { host: to }, &d);
        }
        let delays = self.cross_link(to, &d);
        self.schedule(delays, d, |dgram| Hop::Deliver { to, dgram });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::Behaviour;
    use crate::nodes::{EchoReflector, ScriptedNode};
    use std::net::SocketAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn eim_apdf(ext: &str) -> NatConfig {
        NatConfig::new(
            ip(ext),
            Behaviour::EndpointIndependent,
            Behaviour::AddressAndPortDependent,
        )
    }

    #[test]
    fn same_lan_hosts_talk_directly_without_mappings() {
        let mut sim = Sim::new(Instant::now(), 1);
        let nat = sim.add_nat(eim_apdf("198.51.100.1"));
        let echo = sim.add_host([ip("10.0.0.3")], Realm::Nat(nat), EchoReflector::new());
        let c = sim.add_host([ip("10.0.0.2")], Realm::Nat(nat), ScriptedNode::new());
        sim.send_from(c, Transmit::udp(sa("10.0.0.2:1000"), sa("10.0.0.3:7"), "x"));
        sim.run_for(Duration::from_secs(1));
        assert_eq!(
            sim.node::<EchoReflector>(echo).seen(),
            &[sa("10.0.0.2:1000")]
        );
        let got = sim.node::<ScriptedNode>(c).received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].datagram.source, sa("10.0.0.3:7"));
        assert_eq!(got[0].at - sim.t0(), Duration::from_millis(40));
        assert!(sim.nat_mappings(nat).is_empty());
    }

    #[test]
    fn two_lans_may_reuse_the_same_private_addresses() {
        let mut sim = Sim::new(Instant::now(), 1);
        let a = sim.add_nat(eim_apdf("198.51.100.1"));
        let b = sim.add_nat(eim_apdf("198.51.100.2"));
        let ea = sim.add_host([ip("10.0.0.2")], Realm::Nat(a), EchoReflector::new());
        let eb = sim.add_host([ip("10.0.0.2")], Realm::Nat(b), EchoReflector::new());
        let ca = sim.add_host([ip("10.0.0.3")], Realm::Nat(a), ScriptedNode::new());
        sim.send_from(ca, Transmit::udp(sa("10.0.0.3:1"), sa("10.0.0.2:7"), "x"));
        sim.run_for(Duration::from_secs(1));
        assert_eq!(sim.node::<EchoReflector>(ea).seen().len(), 1);
        assert!(sim.node::<EchoReflector>(eb).seen().is_empty());
    }

    #[test]
    fn private_address_of_another_lan_has_no_route() {
        let mut sim = Sim::new(Instant::now(), 1);
        let a = sim.add_nat(eim_apdf("198.51.100.1"));
        let b = sim.add_nat(eim_apdf("198.51.100.2"));
        sim.add_host([ip("10.0.1.2")], Realm::Nat(b), EchoReflector::new());
        let c = sim.add_host([ip("10.0.0.2")], Realm::Nat(a), ScriptedNode::new());
        let p = sim.add_host([ip("203.0.113.9")], Realm::Public, ScriptedNode::new());
        sim.send_from(c, Transmit::udp(sa("10.0.0.2:1"), sa("10.0.1.2:7"), "x"));
        sim.send_from(p, Transmit::udp(sa("203.0.113.9:1"), sa("10.0.1.2:7"), "x"));
        sim.send_from(
            p,
            Transmit::udp(sa("203.0.113.9:1"), sa("198.51.100.9:7"), "x"),
        );
        sim.run_for(Duration::from_secs(1));
        let reasons: Vec<String> = sim.drops().iter().map(|d| d.reason.to_string()).collect();
        assert_eq!(
            reasons,
            vec![
                "no route to 10.0.1.2",
                "no route to 10.0.1.2",
                "no route to 198.51.100.9"
            ]
        );
        assert_eq!(sim.stats().dropped, 3);
        assert_eq!(sim.stats().delivered, 0);
    }

    #[test]
    fn sending_from_a_foreign_ip_is_dropped() {
        let mut sim = Sim::new(Instant::now(), 1);
        let p = sim.add_host([ip("203.0.113.9")], Realm::Public, ScriptedNode::new());
        sim.add_host([ip("203.0.113.1")], Realm::Public, EchoReflector::new());
        sim.send_from(
            p,
            Transmit::udp(sa("203.0.113.8:1"), sa("203.0.113.1:7"), "x"),
        );
        sim.run_for(Duration::from_secs(1));
        assert_eq!(
            sim.drops()[0].reason,
            DropReason::SourceNotOwned {
                host: p,
                source: ip("203.0.113.8")
            }
        );
        assert_eq!(
            sim.drops()[0].to_string(),
            "+0.000s udp 203.0.113.8:1 -> 203.0.113.1:7 (1 B) dropped: host 0 does not own source address 203.0.113.8"
        );
    }

    #[test]
    fn a_host_with_two_ips_receives_on_both() {
        let mut sim = Sim::new(Instant::now(), 1);
        let s = sim.add_host(
            [ip("203.0.113.1"), ip("203.0.113.2")],
            Realm::Public,
            EchoReflector::new(),
        );
        let c = sim.add_host([ip("203.0.113.9")], Realm::Public, ScriptedNode::new());
        sim.send_from(
            c,
            Transmit::udp(sa("203.0.113.9:1"), sa("203.0.113.1:7"), "x"),
        );
        sim.send_from(
            c,
            Transmit::udp(sa("203.0.113.9:1"), sa("203.0.113.2:7"), "x"),
        );
        sim.run_for(Duration::from_secs(1));
        assert_eq!(sim.node::<EchoReflector>(s).seen().len(), 2);
        let from: Vec<SocketAddr> = sim
            .node::<ScriptedNode>(c)
            .received()
            .iter()
            .map(|r| r.datagram.source)
            .collect();
        assert_eq!(from, vec![sa("203.0.113.1:7"), sa("203.0.113.2:7")]);
    }

    #[test]
    fn downcasting_checks_the_type() {
        let mut sim = Sim::new(Instant::now(), 1);
        let s = sim.add_host([ip("203.0.113.1")], Realm::Public, EchoReflector::new());
        assert!(sim.try_node::<ScriptedNode>(s).is_none());
        assert!(sim.try_node::<EchoReflector>(s).is_some());
        sim.node_mut::<EchoReflector>(s);
        assert_eq!(sim.host_ips(s), &[ip("203.0.113.1")]);
        assert_eq!(sim.host_realm(s), Realm::Public);
    }

    #[test]
    fn idle_network_does_not_move_the_clock_on_step_but_run_for_does() {
        let mut sim = Sim::new(Instant::now(), 1);
        sim.add_host([ip("203.0.113.1")], Realm::Public, EchoReflector::new());
        assert!(!sim.step());
        assert_eq!(sim.elapsed(), Duration::ZERO);
        assert_eq!(sim.run_for(Duration::from_secs(3)), 0);
        assert_eq!(sim.elapsed(), Duration::from_secs(3));
    }

    #[test]
    fn timeouts_fire_at_their_instant() {
        let t0 = Instant::now();
        let mut sim = Sim::new(t0, 1);
        let mut n = ScriptedNode::new();
        n.send_at(
            t0 + Duration::from_millis(250),
            Transmit::udp(sa("203.0.113.9:1"), sa("203.0.113.1:7"), "x"),
        );
        let c = sim.add_host([ip("203.0.113.9")], Realm::Public, n);
        let s = sim.add_host([ip("203.0.113.1")], Realm::Public, EchoReflector::new());
        assert!(sim.step());
        assert_eq!(sim.elapsed(), Duration::from_millis(250));
        let took = sim
            .run_until(
                |s| !s.node::<ScriptedNode>(c).received().is_empty(),
                Duration::from_secs(1),
                100,
            )
            .unwrap();
        assert_eq!(took, Duration::from_millis(40));
        assert_eq!(sim.node::<EchoReflector>(s).seen().len(), 1);
        assert_eq!(sim.stats().sent, 2);
        assert_eq!(sim.stats().delivered, 2);
    }
}
