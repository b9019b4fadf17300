//! The STUN requests of TURN: Allocate, Refresh, CreatePermission, ChannelBind.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use p2p_stun::attr::{
    AdditionalAddressFamily, AddressErrorCode, AddressFamily, ChannelNumber, DontFragment,
    EvenPort, Lifetime, RequestedAddressFamily, RequestedTransport, ReservationToken,
    UnknownAttributes, XorMappedAddress, XorPeerAddress, XorRelayedAddress, PROTO_TCP, PROTO_UDP,
};
use p2p_stun::{AttrType, Message, MessageClass, MessageType, Method, HEADER_LEN, MAGIC_COOKIE};
use rand::RngCore;

use crate::auth::CredentialStore;
use crate::relay::{RelayAllocator, TokenBucket};
use crate::types::{Datagram, FiveTuple};

use super::*;

impl<C: CredentialStore, R: RelayAllocator> TurnServer<C, R> {
    pub(super) fn stun_from_client(&mut self, now: Instant, d: Datagram<'_>) {
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

    pub(super) fn turn_request(&mut self, now: Instant, ft: &FiveTuple, msg: &Message<'_>) {
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

    pub(super) fn refresh(&mut self, now: Instant, ft: &FiveTuple, msg: &Message<'_>, auth: &Auth) {
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
}

impl<C: CredentialStore, R: RelayAllocator> TurnServer<C, R> {
    pub(super) fn create_permission(
        &mut self,
        now: Instant,
        ft: &FiveTuple,
        msg: &Message<'_>,
        auth: &Auth,
    ) {
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

    pub(super) fn channel_bind(
        &mut self,
        now: Instant,
        ft: &FiveTuple,
        msg: &Message<'_>,
        auth: &Auth,
    ) {
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
}
