//! The channels a driver may relay itself (the fast path).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use p2p_proto::{FiveTuple, Transport};

use super::{CredentialStore, TurnServer};
#[cfg(doc)]
use super::{ServerConfig, ServerOutput};

/// A channel whose ChannelData the driver may relay without the server
/// ([`ServerConfig::export_routes`]).
///
/// Client → peer: a ChannelData datagram on `channel` from
/// `five_tuple.remote` (the client) to `five_tuple.local` (the listening
/// address) goes, payload only, from the socket of `relayed` to `peer`.
/// Peer → client: a datagram from `peer` on `relayed` goes to the client as
/// ChannelData on `channel` (no padding: UDP) from `five_tuple.local`. Both only while the instant is before
/// `until`; after it (or for anything else) the packet goes to
/// [`handle_input`](p2p_proto::Machine::handle_input) as usual.
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

/// A change to the routes the driver relays itself ([`ServerOutput::Route`]).
///
/// Only channels of UDP allocations without a bandwidth cap, whose peer is
/// not one of the server's own addresses (unless the allow list opens it
/// and it is no listening socket), are published: the rest keeps going
/// through [`TurnServer::handle_input`](p2p_proto::Machine::handle_input),
/// which checks them packet by packet. A route is published again whenever
/// its `until` moves (ChannelBind, CreatePermission or Refresh), and
/// withdrawn when its allocation ends or the channel is forgotten. Traffic
/// relayed by the driver is not in [`Counters`](super::Counters) nor in the
/// allocation's [`Traffic`](super::Traffic): the driver counts it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteUpdate {
    /// Add this route, or replace the one of the same 5-tuple and channel
    /// (a refresh moves `until`).
    Up(ChannelRoute),
    /// Remove the route of this channel; `until` is meaningless.
    Down(ChannelRoute),
}

impl<C: CredentialStore> TurnServer<C> {
    /// Publish ([`RouteUpdate::Up`]) the routes of the allocation's
    /// channels, or of those to peers at `ip` only.
    pub(super) fn export_routes(&mut self, slot: usize, ip: Option<IpAddr>) {
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
                (a.relayed_for(peer_ip), a.permissions.get(&peer_ip))
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
}
