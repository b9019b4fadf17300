//! Relaying data: Send indications and ChannelData from clients, datagrams from peers.

use std::net::SocketAddr;
use std::time::Instant;

use p2p_stun::attr::{Data, XorPeerAddress};
use p2p_stun::{
    ChannelData, EncodeError, Message, MessageBuilder, MessageClass, MessageType, Method,
    TransactionId,
};
use rand::RngCore;

use p2p_proto::{Datagram, FiveTuple, Transport};

use super::{CredentialStore, TurnServer};

impl<C: CredentialStore> TurnServer<C> {
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
        let t = a.five_tuple.transport;
        if !a.tcp && self.is_own_ip(peer.ip(), &a.five_tuple, a) {
            let ft = a.five_tuple;
            if !self.own_destination_ok(peer, &ft) {
                self.tally(t).dropped_no_permission += 1;
                return None;
            }
        }
        let a = self.slots.get_mut(slot)?.as_mut()?;
        if a.tcp {
            // Send indications and ChannelData do not apply (RFC 6062 §5.1).
            self.tally(t).dropped_malformed += 1;
            return None;
        }
        let Some(relayed) = a.relayed_for(peer.ip()) else {
            self.tally(t).dropped_no_permission += 1;
            return None;
        };
        if !a.permitted(now, peer.ip()) {
            self.tally(t).dropped_no_permission += 1;
            return None;
        }
        if !a.take_bandwidth(now, len) {
            self.tally(t).dropped_bandwidth += 1;
            return None;
        }
        a.traffic.bytes_to_peer += len as u64;
        a.traffic.packets_to_peer += 1;
        let k = self.tally(t);
        k.bytes_to_peer += len as u64;
        k.packets_to_peer += 1;
        Some(relayed)
    }

    pub(super) fn send_indication(&mut self, now: Instant, ft: &FiveTuple, msg: &Message<'_>) {
        let Some(&slot) = self.by_tuple.get(ft) else {
            self.tally(ft.transport).dropped_no_allocation += 1;
            return;
        };
        let (Ok(Some(XorPeerAddress(peer))), Ok(Some(Data(data)))) =
            (msg.get::<XorPeerAddress>(), msg.get::<Data>())
        else {
            self.tally(ft.transport).dropped_malformed += 1;
            return;
        };
        let Some(relayed) = self.outbound(now, slot, peer, data.len()) else {
            return;
        };
        let mut buf = self.take_buf();
        buf.extend_from_slice(data);
        self.send_to_peer(relayed, peer, buf);
    }

    pub(super) fn channel_data_from_client(&mut self, now: Instant, d: Datagram<'_>) {
        let ft = d.five_tuple();
        let Ok(cd) = ChannelData::decode(d.contents) else {
            self.tally(ft.transport).dropped_malformed += 1;
            return;
        };
        let Some(&slot) = self.by_tuple.get(&ft) else {
            self.tally(ft.transport).dropped_no_allocation += 1;
            return;
        };
        let peer = self.slots[slot]
            .as_ref()
            .and_then(|a| a.channels.get(&cd.channel()))
            .filter(|c| now < c.expires)
            .map(|c| c.peer);
        let Some(peer) = peer else {
            self.tally(ft.transport).dropped_no_permission += 1;
            return;
        };
        let Some(relayed) = self.outbound(now, slot, peer, cd.data().len()) else {
            return;
        };
        let mut buf = self.take_buf();
        buf.extend_from_slice(cd.data());
        self.send_to_peer(relayed, peer, buf);
    }

    pub(super) fn relay_from_peer(&mut self, now: Instant, slot: usize, d: Datagram<'_>) {
        let peer = d.source;
        let Some(a) = self
            .slots
            .get_mut(slot)
            .and_then(Option::as_mut)
            .filter(|a| !a.tcp)
        else {
            self.tally(Transport::Udp).dropped_no_allocation += 1;
            return;
        };
        let t = a.five_tuple.transport;
        if !a.permitted(now, peer.ip()) {
            self.tally(t).dropped_no_permission += 1;
            return;
        }
        // The largest payload that fits a Data indication.
        if d.contents.len() > usize::from(u16::MAX) - 64 {
            self.tally(t).dropped_malformed += 1;
            return;
        }
        if !a.take_bandwidth(now, d.contents.len()) {
            self.tally(t).dropped_bandwidth += 1;
            return;
        }
        a.traffic.bytes_to_client += d.contents.len() as u64;
        a.traffic.packets_to_client += 1;
        let ft = a.five_tuple;
        let channel = a
            .channel_by_peer
            .get(&peer)
            .copied()
            .filter(|n| a.channels.get(n).is_some_and(|c| now < c.expires));
        let k = self.tally(t);
        k.bytes_to_client += d.contents.len() as u64;
        k.packets_to_client += 1;
        let mut buf = self.take_buf();
        let ok = match channel {
            Some(n) => ChannelData::new(n, d.contents)
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
                    b.add(&Data(d.contents))?;
                    Ok::<(), EncodeError>(())
                })()
                .is_ok()
            }
        };
        if ok {
            self.send_to_client(&ft, buf);
        } else {
            self.tally(t).dropped_malformed += 1;
            self.recycle(buf);
        }
    }
}
