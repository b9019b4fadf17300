//! The channels a driver may relay itself (the fast path).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::auth::CredentialStore;
use crate::relay::RelayAllocator;
use crate::types::{FiveTuple, Transport};

use super::*;

/// A channel whose ChannelData the driver may relay without the server:
/// see [`TurnServer::poll_route`].
///
/// Client → peer: a ChannelData datagram on `channel` from
/// `five_tuple.client` to `five_tuple.server` goes, payload only, from the
/// socket of `relayed` to `peer`. Peer → client: a datagram from `peer` on
/// `relayed` goes to the client as ChannelData on `channel` (no padding:
/// UDP) from `five_tuple.server`. Both only while the instant is before
/// `until`; after it (or for anything else) the packet goes to
/// [`TurnServer::handle_input`] as usual.
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

/// A change to the routes the driver relays itself ([`TurnServer::poll_route`]).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteUpdate {
    /// Add this route, or replace the one of the same 5-tuple and channel
    /// (a refresh moves `until`).
    Up(ChannelRoute),
    /// Remove the route of this channel; `until` is meaningless.
    Down(ChannelRoute),
}

impl<C: CredentialStore, R: RelayAllocator> TurnServer<C, R> {
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
                (a.relay_for(peer_ip), a.permissions.get(&peer_ip))
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
