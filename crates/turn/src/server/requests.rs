//! The STUN requests of TURN: Allocate, Refresh, CreatePermission, ChannelBind.

use std::net::IpAddr;
use std::time::Instant;

use p2p_proto::{Datagram, FiveTuple};
use p2p_stun::attr::{
    AddressFamily, ChannelNumber, Lifetime, RequestedAddressFamily, UnknownAttributes,
    XorMappedAddress, XorPeerAddress,
};
use p2p_stun::{AttrType, Message, MessageClass, Method, HEADER_LEN, MAGIC_COOKIE};

use super::allocation::{Channel, CHANNEL_GUARD};
use super::{Auth, CredentialStore, EndReason, ServerEvent, TurnServer};

impl<C: CredentialStore> TurnServer<C> {
    /// A STUN message from a client on a listening address.
    pub(super) fn stun_from_client(&mut self, now: Instant, d: Datagram<'_>) {
        let ft = d.five_tuple();
        let b = d.contents;
        if b.len() < HEADER_LEN || b[4..8] != MAGIC_COOKIE.to_be_bytes() {
            self.tally(ft.transport).dropped_malformed += 1;
            return;
        }
        if self.ports.is_taken(ft.local) {
            // On a relayed address no allocation has (yet, or any more):
            // nothing to answer from there.
            self.tally(ft.transport).dropped_no_allocation += 1;
            return;
        }
        let msg = match Message::decode(b) {
            Ok(m) => m,
            Err(e) => {
                self.tally(ft.transport).dropped_malformed += 1;
                match p2p_stun::peek_type(b) {
                    Some(typ) if e.stun_code().is_some() && typ.class == MessageClass::Request => {
                        self.bad_header_request(&ft, typ, b);
                    }
                    _ => {}
                }
                return;
            }
        };
        match (msg.typ().class, msg.typ().method) {
            (MessageClass::Request, Method::BINDING) if self.config.answer_binding => {
                let client = ft.remote;
                let other = self.config.other_address;
                self.reply(&ft, &msg, None, None, |b| {
                    b.add(&XorMappedAddress(client))?;
                    if let Some(o) = other {
                        b.add(&p2p_stun::attr::OtherAddress(o))?;
                    }
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
            _ => self.tally(ft.transport).dropped_malformed += 1,
        }
    }

    pub(super) fn turn_request(&mut self, now: Instant, ft: &FiveTuple, msg: &Message<'_>) {
        self.tally(ft.transport).requests += 1;
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
            self.remove_allocation(slot, EndReason::Deleted);
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

impl<C: CredentialStore> TurnServer<C> {
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
