//! Relaying data: Send indications and ChannelData from clients, datagrams from peers.

use std::net::SocketAddr;
use std::time::Instant;

use p2p_stun::attr::{Data, XorPeerAddress};
use p2p_stun::{
    ChannelData, EncodeError, Message, MessageBuilder, MessageClass, MessageType, Method,
    TransactionId,
};
use rand::RngCore;

use crate::auth::CredentialStore;
use crate::relay::RelayAllocator;
use crate::types::{Datagram, FiveTuple};

use super::*;

impl<C: CredentialStore, R: RelayAllocator> TurnServer<C, R> {
    /// Account and check a packet to a peer: allocation slot, permission,
    /// bandwidth. Returns the relayed address to send from.
    pub(super) fn outbound(
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

    pub(super) fn send_indication(&mut self, now: Instant, ft: &FiveTuple, msg: &Message<'_>) {
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

    pub(super) fn channel_data_from_client(&mut self, now: Instant, d: Datagram<'_>) {
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

    pub(super) fn relay_from_peer(&mut self, now: Instant, slot: usize, d: Datagram<'_>) {
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
