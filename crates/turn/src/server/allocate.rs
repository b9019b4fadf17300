//! Allocate (RFC 8656 §7.2, RFC 6062 §5.1): the request's checks, the
//! relayed addresses taken from the port pool, the sockets asked of the
//! driver ([`SocketRequest`]), and the answer once they are bound.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2p_proto::{FiveTuple, Transport};
use p2p_stun::attr::{
    AdditionalAddressFamily, AddressErrorCode, AddressFamily, AlternateServer, DontFragment,
    EvenPort, Lifetime, RequestedAddressFamily, RequestedTransport, ReservationToken,
    XorMappedAddress, XorRelayedAddress, PROTO_TCP, PROTO_UDP,
};
use p2p_stun::{Message, MessageType, TransactionId};
use rand::RngCore;

use super::bandwidth::TokenBucket;
use super::limiter::addr_key;
use super::ports::family_index;
use super::{Allocation, Auth, CredentialStore, ServerEvent, SocketRequest, Traffic, TurnServer};

/// Most sockets one Allocate asks the driver to bind before it gives up
/// with 508 (each refused port is skipped for a while, so that the next
/// Allocate does not try it again).
pub(super) const MAX_BIND_ATTEMPTS: u32 = 64;

/// Where the relayed address of one family stands while an Allocate waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// Not asked for.
    Unasked,
    /// Asked of the driver.
    Binding(SocketAddr),
    /// Bound.
    Bound(SocketAddr),
    /// Refused with this code (440: no such family, 508: no port).
    Failed(u16),
}

/// An Allocate whose relayed addresses are being bound by the driver.
pub(super) struct PendingAllocate {
    tid: TransactionId,
    typ: MessageType,
    fingerprint: bool,
    auth: Auth,
    lifetime: Duration,
    /// An RFC 6062 allocation (a TCP relayed address).
    tcp: bool,
    even: bool,
    reserve_next: bool,
    /// Redeeming a RESERVATION-TOKEN: the held address or nothing.
    from_token: bool,
    /// Index 0: IPv4, 1: IPv6.
    families: [Family; 2],
    /// With EVEN-PORT R: the port after the (single) family's, held for a
    /// RESERVATION-TOKEN.
    reserve: Option<Family>,
    attempts: u32,
}

impl PendingAllocate {
    fn waiting(&self) -> bool {
        let binding = |f: &Family| matches!(f, Family::Binding(_));
        self.families.iter().any(binding) || self.reserve.as_ref().is_some_and(binding)
    }

    /// The addresses asked of or bound by the driver for this Allocate.
    fn addresses(&self) -> impl Iterator<Item = (SocketAddr, bool)> + '_ {
        self.families
            .iter()
            .chain(self.reserve.iter())
            .filter_map(|f| match *f {
                Family::Binding(a) => Some((a, false)),
                Family::Bound(a) => Some((a, true)),
                _ => None,
            })
    }
}

/// Who waits for the driver's answer about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BindWaiter {
    /// The Allocate of this 5-tuple.
    Allocate(FiveTuple),
    /// Nobody any more (the Allocate was given up): release it once bound.
    Orphan,
}

impl<C: CredentialStore> TurnServer<C> {
    pub(super) fn allocate(
        &mut self,
        now: Instant,
        ft: &FiveTuple,
        msg: &Message<'_>,
        auth: &Auth,
    ) {
        if let Some(&slot) = self.by_tuple.get(ft) {
            let resend = self.slots[slot].as_ref().and_then(|a| {
                // The kept response is dropped at the first Refresh.
                (a.allocate_tid == msg.transaction_id()
                    && a.user == auth.user
                    && !a.allocate_response.is_empty())
                .then(|| a.allocate_response.clone())
            });
            match resend {
                Some(bytes) => self.send_to_client(ft, bytes),
                None => self.error(ft, msg, Some(auth), 437),
            }
            return;
        }
        if let Some(p) = self.pending_allocates.get(ft) {
            // A retransmission while the sockets are being bound is
            // absorbed: the answer comes once they are.
            if p.tid != msg.transaction_id() || p.auth.user != auth.user {
                self.error(ft, msg, Some(auth), 437);
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
            Some(RequestedTransport(PROTO_TCP)) if self.config.tcp_allocations => {
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
        if let Some(code) = self.over_quota(ft, auth) {
            if code == 300 {
                if let Some(to) = self.alternate_for(ft) {
                    return self.reply(ft, msg, Some(auth), Some(300), |b| {
                        b.add(&AlternateServer(to)).map(drop)
                    });
                }
            }
            return self.error(ft, msg, Some(auth), code);
        }
        let mut p = PendingAllocate {
            tid: msg.transaction_id(),
            typ: msg.typ(),
            fingerprint: msg.has_fingerprint(),
            auth: auth.clone(),
            lifetime: self.granted_lifetime(lifetime.map(|l| l.0)),
            tcp,
            even: even.is_some(),
            reserve_next: even.is_some_and(|e| e.reserve_next),
            from_token: false,
            families: [Family::Unasked; 2],
            reserve: None,
            attempts: 0,
        };
        if tcp {
            let fam = raf.map_or(AddressFamily::V4, |r| r.0);
            if !self.ports.supports(fam) {
                return self.error(ft, msg, Some(auth), 440);
            }
            self.ask_bind(now, ft, &mut p, fam);
        } else if let Some(ReservationToken(t)) = token {
            let Some((held, _)) = self.reservations.remove(&t) else {
                return self.error(ft, msg, Some(auth), 508);
            };
            // The driver holds the socket: it starts reading it now.
            p.from_token = true;
            p.families[family_index(family_of(held))] = Family::Binding(held);
            self.binds.insert(held, BindWaiter::Allocate(*ft));
            self.sockets
                .push_back(SocketRequest::BindUdp { relayed: held });
        } else {
            let families: &[AddressFamily] = if aaf.is_some() {
                &[AddressFamily::V4, AddressFamily::V6]
            } else if raf.is_some_and(|r| r.0 == AddressFamily::V6) {
                &[AddressFamily::V6]
            } else {
                &[AddressFamily::V4]
            };
            for &fam in families {
                if self.ports.supports(fam) {
                    self.ask_bind(now, ft, &mut p, fam);
                } else {
                    p.families[family_index(fam)] = Family::Failed(440);
                }
            }
        }
        self.count(auth, ft.remote.ip());
        self.settle(now, *ft, p);
    }

    /// The code an Allocate from `ft` by `auth` is refused with for a quota,
    /// if any: the user's (486), the total (508), the reserve (508: only
    /// the reserved part of the capacity is left, and the client's address
    /// holds `reserve_below` or more), the ephemeral users' share (486; the
    /// share keeps a reserve of its own, so that one address farming
    /// ephemeral credentials does not lock out the other ephemeral users).
    fn over_quota(&mut self, ft: &FiveTuple, auth: &Auth) -> Option<u16> {
        let c = &self.config;
        let user_held = self.user_counts.get(&auth.user).copied().unwrap_or(0);
        let held = (self.by_tuple.len() + self.pending_allocates.len()) as u64;
        let reserve_pct = u64::from(c.reserved_percent.min(100));
        // The part of `limit` a heavy address may not take.
        let unreserved = |limit: u64| limit.saturating_sub((limit * reserve_pct).div_ceil(100));
        let cap = u64::from(c.capacity());
        let key = addr_key(ft.remote.ip(), c.ipv6_prefix);
        let heavy = self.addr_counts.get(&key).copied().unwrap_or(0) >= c.reserve_below;
        let share = cap * u64::from(c.ephemeral_share_percent.min(100)) / 100;
        let ephemeral = u64::from(self.ephemeral_count);
        let in_share = auth.ephemeral && c.ephemeral_share_percent < 100;
        let refusal = if c.user_quota.is_some_and(|q| user_held >= q) {
            Some((486, 0))
        } else if c.total_quota.is_some_and(|q| held >= u64::from(q)) {
            // Full: send the client to a sibling of its family if we know one.
            if self.alternate_for(ft).is_some() {
                Some((300, 4))
            } else {
                Some((508, 1))
            }
        } else if heavy && held >= unreserved(cap) {
            Some((508, 2))
        } else if in_share && (ephemeral >= share || (heavy && ephemeral >= unreserved(share))) {
            Some((486, 3))
        } else {
            None
        };
        let (code, why) = refusal?;
        let k = self.tally(ft.transport);
        match why {
            0 => k.refused_user_quota += 1,
            1 => k.refused_total_quota += 1,
            2 => k.refused_reserve += 1,
            4 => k.redirects += 1,
            _ => k.refused_ephemeral_share += 1,
        }
        Some(code)
    }

    /// A configured alternate server of `ft`'s address family (and, over
    /// TLS, a TLS one) that is not this listener, for a 300 (Try Alternate)
    /// when full.
    fn alternate_for(&self, ft: &FiveTuple) -> Option<SocketAddr> {
        let list = if ft.transport == Transport::Tls {
            &self.alternates_tls
        } else {
            &self.alternates
        };
        list.iter()
            .find(|a| a.is_ipv4() == ft.local.is_ipv4() && **a != ft.local)
            .copied()
    }

    /// One allocation (or Allocate under way) more for `auth`'s user, its
    /// client address and, if ephemeral, the ephemeral users.
    fn count(&mut self, auth: &Auth, ip: IpAddr) {
        *self.user_counts.entry(auth.user.clone()).or_insert(0) += 1;
        let key = addr_key(ip, self.config.ipv6_prefix);
        *self.addr_counts.entry(key).or_insert(0) += 1;
        if auth.ephemeral {
            self.ephemeral_count += 1;
        }
    }

    /// Take an address of `fam` from the pool for `p` and ask the driver to
    /// bind it (and, with EVEN-PORT R, to hold the next one); `Failed(508)`
    /// when the pool is exhausted or the Allocate used up its attempts.
    fn ask_bind(
        &mut self,
        now: Instant,
        ft: &FiveTuple,
        p: &mut PendingAllocate,
        fam: AddressFamily,
    ) {
        let k = family_index(fam);
        if p.attempts >= MAX_BIND_ATTEMPTS {
            p.families[k] = Family::Failed(508);
            return;
        }
        p.attempts += 1;
        let start = self.rng.next_u32();
        let Some((addr, held)) = self.ports.take(now, fam, p.even, p.reserve_next, start) else {
            p.families[k] = Family::Failed(508);
            return;
        };
        p.families[k] = Family::Binding(addr);
        self.binds.insert(addr, BindWaiter::Allocate(*ft));
        self.sockets.push_back(if p.tcp {
            SocketRequest::ListenTcp { relayed: addr }
        } else {
            SocketRequest::BindUdp { relayed: addr }
        });
        if let Some(h) = held {
            p.reserve = Some(Family::Binding(h));
            self.binds.insert(h, BindWaiter::Allocate(*ft));
            self.sockets
                .push_back(SocketRequest::ReserveUdp { reserved: h });
        }
    }

    /// The driver's answer to a [`SocketRequest::BindUdp`],
    /// [`SocketRequest::ReserveUdp`] or [`SocketRequest::ListenTcp`] for
    /// `addr`: whether the socket is bound. A port the OS refused (another
    /// program holds it) is skipped for a minute and another one is asked
    /// for, up to 64 times per Allocate; then the client gets
    /// 508. The Allocate is answered once every address it waits for is
    /// bound. An answer nobody waits for any more is released
    /// ([`SocketRequest::Release`] when it was bound).
    pub fn bind_result(&mut self, now: Instant, addr: SocketAddr, bound: bool) {
        let waiter = self.binds.remove(&addr);
        let pending = match waiter {
            Some(BindWaiter::Allocate(ft)) => self.pending_allocates.remove(&ft).map(|p| (ft, p)),
            _ => None,
        };
        let Some((ft, mut p)) = pending else {
            match waiter {
                // Never asked: close what was bound. (A second answer for
                // an address in use is ignored.)
                None => {
                    if bound && !self.ports.is_taken(addr) {
                        self.sockets
                            .push_back(SocketRequest::Release { relayed: addr });
                    }
                }
                Some(_) => self.orphan_bound(now, addr, bound),
            }
            return;
        };
        if p.reserve == Some(Family::Binding(addr)) {
            if bound {
                p.reserve = Some(Family::Bound(addr));
            } else {
                self.ports.refuse(now, addr);
                p.reserve = None;
                // The pair is broken: give up its even port, try another pair.
                if let Some(k) = p
                    .families
                    .iter()
                    .position(|f| matches!(f, Family::Binding(_) | Family::Bound(_)))
                {
                    self.give_up(now, p.families[k]);
                    p.families[k] = Family::Unasked;
                    self.ask_bind(now, &ft, &mut p, family_of_index(k));
                }
            }
        } else if let Some(k) = p.families.iter().position(|f| *f == Family::Binding(addr)) {
            if bound {
                p.families[k] = Family::Bound(addr);
            } else {
                self.ports.refuse(now, addr);
                if p.from_token {
                    p.families[k] = Family::Failed(508);
                } else {
                    if let Some(r) = p.reserve.take() {
                        self.give_up(now, r);
                    }
                    self.ask_bind(now, &ft, &mut p, family_of_index(k));
                }
            }
        }
        self.settle(now, ft, p);
    }

    /// An address asked for an Allocate that was given up.
    fn orphan_bound(&mut self, now: Instant, addr: SocketAddr, bound: bool) {
        if bound {
            self.ports.release(addr);
            self.sockets
                .push_back(SocketRequest::Release { relayed: addr });
        } else {
            self.ports.refuse(now, addr);
        }
    }

    /// Give up an address of a pending Allocate: released when bound, left
    /// to [`TurnServer::bind_result`] when its answer has not come.
    fn give_up(&mut self, now: Instant, f: Family) {
        match f {
            Family::Bound(a) => self.orphan_bound(now, a, true),
            Family::Binding(a) => {
                self.binds.insert(a, BindWaiter::Orphan);
            }
            _ => {}
        }
    }

    /// Keep waiting, or answer the Allocate now that nothing is pending.
    fn settle(&mut self, now: Instant, ft: FiveTuple, p: PendingAllocate) {
        if p.waiting() {
            self.pending_allocates.insert(ft, p);
            return;
        }
        let mut relayed: [Option<SocketAddr>; 2] = [None, None];
        let mut codes: Vec<(AddressFamily, u16)> = Vec::new();
        for (k, f) in p.families.iter().enumerate() {
            match *f {
                Family::Bound(a) => relayed[k] = Some(a),
                Family::Failed(c) => codes.push((family_of_index(k), c)),
                _ => {}
            }
        }
        if relayed.iter().all(Option::is_none) {
            if let Some(r) = p.reserve {
                self.give_up(now, r);
            }
            self.uncount(&p.auth.user, ft.remote.ip(), p.auth.ephemeral);
            let code = if !codes.is_empty() && codes.iter().all(|c| c.1 == 440) {
                440
            } else {
                508
            };
            self.reply_to(
                &ft,
                p.typ,
                p.tid,
                p.fingerprint,
                Some(&p.auth),
                Some(code),
                |_| Ok(()),
            );
            return;
        }
        let family_error = codes.first().copied();
        let mut new_token: Option<[u8; 8]> = None;
        if let Some(Family::Bound(held)) = p.reserve {
            let mut t = [0u8; 8];
            self.rng.fill_bytes(&mut t);
            let exp = now + self.config.reservation_lifetime;
            self.reservations.insert(t, (held, exp));
            self.reservation_queue.push_back((exp, t));
            new_token = Some(t);
        }
        self.grant(now, ft, p, relayed, family_error, new_token);
    }

    /// Answer the Allocate with success and make the allocation.
    fn grant(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        p: PendingAllocate,
        relayed: [Option<SocketAddr>; 2],
        family_error: Option<(AddressFamily, u16)>,
        new_token: Option<[u8; 8]>,
    ) {
        let client = ft.remote;
        let life = p.lifetime;
        let secs = u32::try_from(life.as_secs()).unwrap_or(u32::MAX);
        let list: Vec<SocketAddr> = relayed.iter().flatten().copied().collect();
        let reason = family_error.map(|(_, c)| p2p_stun::attr::reason_phrase(c));
        self.reply_to(&ft, p.typ, p.tid, p.fingerprint, Some(&p.auth), None, |b| {
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
        // The success response, kept for retransmissions.
        let response = self
            .transmits
            .back()
            .filter(|t| t.destination == ft.remote)
            .map(|t| t.contents.clone())
            .unwrap_or_default();
        let id = self.next_id;
        self.next_id += 1;
        let user = p.auth.user;
        let alloc = Allocation {
            id,
            five_tuple: ft,
            user: user.clone(),
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
            allocate_tid: p.tid,
            allocate_response: response,
            scheduled: None,
            tcp: p.tcp,
            ephemeral: p.auth.ephemeral,
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
        self.by_tuple.insert(ft, slot);
        for r in &list {
            self.by_relay.insert(*r, slot);
        }
        let k = self.tally(ft.transport);
        k.allocations_created += 1;
        k.allocations_active += 1;
        self.schedule(slot);
        self.events.push_back(ServerEvent::AllocationCreated {
            user,
            five_tuple: ft,
            relayed: list,
            lifetime: life,
        });
    }

    /// Give up the Allocate of `ft` under way, if any (its connection
    /// closed, or the server stops): no answer; its addresses are released
    /// once the driver has answered for them.
    pub(super) fn cancel_allocate(&mut self, ft: &FiveTuple) {
        let Some(p) = self.pending_allocates.remove(ft) else {
            return;
        };
        let addrs: Vec<(SocketAddr, bool)> = p.addresses().collect();
        for (a, bound) in addrs {
            if bound {
                self.ports.release(a);
                self.sockets
                    .push_back(SocketRequest::Release { relayed: a });
            } else {
                self.binds.insert(a, BindWaiter::Orphan);
            }
        }
        self.uncount(&p.auth.user, ft.remote.ip(), p.auth.ephemeral);
    }

    /// Release the reservations whose time ran out.
    pub(super) fn run_reservation_timers(&mut self, now: Instant) {
        while let Some(&(t, token)) = self.reservation_queue.front() {
            if t > now {
                break;
            }
            self.reservation_queue.pop_front();
            if let Some((addr, exp)) = self.reservations.get(&token).copied() {
                if exp <= now {
                    self.reservations.remove(&token);
                    self.ports.release(addr);
                    self.sockets
                        .push_back(SocketRequest::Release { relayed: addr });
                }
            }
        }
    }
}

fn family_of(a: SocketAddr) -> AddressFamily {
    if a.is_ipv4() {
        AddressFamily::V4
    } else {
        AddressFamily::V6
    }
}

fn family_of_index(k: usize) -> AddressFamily {
    if k == 0 {
        AddressFamily::V4
    } else {
        AddressFamily::V6
    }
}
