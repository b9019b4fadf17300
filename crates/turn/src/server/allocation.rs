//! Allocations: their permissions, channels, lifetimes and timers, and how they end.

use std::cmp::Reverse;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2p_proto::FiveTuple;
use p2p_stun::{Message, TransactionId};
use rand::RngCore;

use super::bandwidth::TokenBucket;
use super::{
    Auth, ChannelRoute, CredentialStore, EndReason, RouteUpdate, ServerEvent, SocketRequest,
    TcpConn, TcpState, Traffic, TurnServer,
};

#[derive(Debug, Clone, Copy)]
pub(super) struct Channel {
    pub(super) peer: SocketAddr,
    pub(super) expires: Instant,
}

pub(super) struct Allocation {
    pub(super) id: u64,
    pub(super) five_tuple: FiveTuple,
    pub(super) user: String,
    /// Index 0: IPv4, 1: IPv6.
    pub(super) relayed: [Option<SocketAddr>; 2],
    pub(super) expires: Instant,
    pub(super) permissions: HashMap<IpAddr, Instant>,
    pub(super) channels: HashMap<u16, Channel>,
    pub(super) channel_by_peer: HashMap<SocketAddr, u16>,
    pub(super) bucket: Option<TokenBucket>,
    pub(super) traffic: Traffic,
    /// The Allocate transaction and its success response, to answer a
    /// retransmission with the same bytes (RFC 8656 §7.2).
    pub(super) allocate_tid: TransactionId,
    pub(super) allocate_response: Vec<u8>,
    /// The deadline a timer-heap entry is pending for.
    pub(super) scheduled: Option<Instant>,
    /// An RFC 6062 allocation (TCP relayed address).
    pub(super) tcp: bool,
    /// Made by an ephemeral user (counted in the ephemeral share).
    pub(super) ephemeral: bool,
}

/// Index of an IP's family in [`Allocation::relayed`]: 0 IPv4, 1 IPv6.
pub(super) fn ip_family_index(ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => 0,
        IpAddr::V6(_) => 1,
    }
}

impl Allocation {
    pub(super) fn relayed_list(&self) -> Vec<SocketAddr> {
        self.relayed.iter().flatten().copied().collect()
    }

    /// The relayed address data to a peer at `peer` leaves from (the one
    /// of its family).
    pub(super) fn relayed_for(&self, peer: IpAddr) -> Option<SocketAddr> {
        self.relayed[ip_family_index(peer)]
    }

    pub(super) fn permitted(&self, now: Instant, peer: IpAddr) -> bool {
        self.permissions.get(&peer).is_some_and(|e| now < *e)
    }

    pub(super) fn next_deadline(&self, channel_guard: Duration) -> Instant {
        let p = self.permissions.values().copied();
        let c = self.channels.values().map(|c| c.expires + channel_guard);
        p.chain(c).fold(self.expires, Instant::min)
    }

    /// Forget expired permissions, and channels past their guard time;
    /// with `routes`, say [`RouteUpdate::Down`] for each channel forgotten.
    pub(super) fn purge(
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
                    (routes.as_deref_mut(), relayed[ip_family_index(c.peer.ip())])
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

    pub(super) fn take_bandwidth(&mut self, now: Instant, bytes: usize) -> bool {
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

/// After a channel binding expires, its number and peer stay reserved this
/// long (RFC 8656 §12: "5 minutes").
pub(super) const CHANNEL_GUARD: Duration = Duration::from_secs(300);

impl<C: CredentialStore> TurnServer<C> {
    pub(super) fn schedule(&mut self, slot: usize) {
        let Some(Some(a)) = self.slots.get_mut(slot) else {
            return;
        };
        let d = a.next_deadline(CHANNEL_GUARD);
        if a.scheduled.is_none_or(|s| d < s) {
            a.scheduled = Some(d);
            self.timers.push(Reverse((d, slot, a.id)));
        }
    }

    /// Expire allocations, permissions and channels due at `now`.
    pub(super) fn run_allocation_timers(&mut self, now: Instant) {
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
                self.remove_allocation(slot, EndReason::Expired);
            } else {
                let export = self.config.export_routes;
                a.purge(now, CHANNEL_GUARD, export.then_some(&mut self.routes));
                self.schedule(slot);
            }
        }
    }

    /// End the allocation in `slot`: its routes go down, its peer
    /// connections close, its relayed addresses are released (their sockets
    /// with [`SocketRequest::Release`]), and [`ServerEvent::AllocationEnded`]
    /// says why.
    pub(super) fn remove_allocation(&mut self, slot: usize, reason: EndReason) {
        let Some(a) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free_slots.push(slot);
        self.by_tuple.remove(&a.five_tuple);
        if self.config.export_routes {
            for (&channel, c) in &a.channels {
                if let Some(relayed) = a.relayed_for(c.peer.ip()) {
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
                self.sockets.push_back(SocketRequest::CloseTcp { id });
            }
        }
        for r in a.relayed.iter().flatten() {
            self.by_relay.remove(r);
            self.ports.release(*r);
            self.sockets
                .push_back(SocketRequest::Release { relayed: *r });
        }
        self.uncount(&a.user, a.five_tuple.remote.ip(), a.ephemeral);
        let k = self.tally(a.five_tuple.transport);
        k.allocations_active = k.allocations_active.saturating_sub(1);
        match reason {
            EndReason::Deleted => k.allocations_deleted += 1,
            EndReason::Expired => k.allocations_expired += 1,
            EndReason::ConnectionClosed => k.allocations_closed += 1,
            _ => k.allocations_stopped += 1,
        }
        let relayed = a.relayed_list();
        self.events.push_back(ServerEvent::AllocationEnded {
            user: a.user,
            five_tuple: a.five_tuple,
            relayed,
            traffic: a.traffic,
            reason,
        });
    }

    /// One allocation (or Allocate under way) fewer for `user`'s quota,
    /// its client address `ip` and, if `ephemeral`, the ephemeral users.
    pub(super) fn uncount(&mut self, user: &str, ip: IpAddr, ephemeral: bool) {
        if let Some(n) = self.user_counts.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.user_counts.remove(user);
            }
        }
        let key = super::limiter::addr_key(ip, self.config.ipv6_prefix);
        if let Some(n) = self.addr_counts.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.addr_counts.remove(&key);
            }
        }
        if ephemeral {
            self.ephemeral_count = self.ephemeral_count.saturating_sub(1);
        }
    }

    pub(super) fn tcp_connection_count(&self, slot: usize, alloc_id: u64) -> usize {
        self.tcp_conns
            .values()
            .filter(|c| c.slot == slot && c.alloc_id == alloc_id)
            .count()
    }

    /// A fresh nonzero CONNECTION-ID, unpredictable (RFC 6062 §5.2).
    pub(super) fn new_connection_id(&mut self) -> u32 {
        loop {
            let id = self.rng.next_u32();
            if id != 0 && !self.tcp_conns.contains_key(&id) {
                return id;
            }
        }
    }

    pub(super) fn granted_lifetime(&self, requested: Option<u32>) -> Duration {
        let max = self.config.max_lifetime;
        let def = self.config.default_lifetime.min(max);
        match requested {
            None => def,
            Some(s) => Duration::from_secs(u64::from(s)).clamp(def, max),
        }
    }

    /// The slot of the 5-tuple's allocation, or the error already sent.
    pub(super) fn own_allocation(
        &mut self,
        ft: &FiveTuple,
        msg: &Message<'_>,
        auth: &Auth,
    ) -> Option<usize> {
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
}
