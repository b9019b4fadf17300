//! Which peers an allocation may relay to: the policy and the server's own addresses.

use std::net::{IpAddr, SocketAddr};

use p2p_proto::FiveTuple;

use super::{Allocation, CredentialStore, ServerEvent, TurnServer};
use crate::policy::{canonical, PeerRefusal};

impl<C: CredentialStore> TurnServer<C> {
    /// Whether `ip` is one of the server's own addresses: configured, the
    /// listening address of `ft`, or a relayed address of `a`.
    pub(super) fn is_own_ip(&self, ip: IpAddr, ft: &FiveTuple, a: &Allocation) -> bool {
        let ip = canonical(ip);
        let own = |o: IpAddr| canonical(o) == ip;
        own(ft.local.ip())
            || a.relayed.iter().flatten().any(|r| own(r.ip()))
            || self.config.own_addresses.iter().any(|o| own(*o))
    }

    /// Whether `peer`, at one of the server's own IPs, is a listening
    /// socket of the server (never a peer).
    pub(super) fn is_service_address(&self, peer: SocketAddr, ft: &FiveTuple) -> bool {
        let ip = canonical(peer.ip());
        peer == ft.local
            || self.config.service_addresses.iter().any(|s| {
                s.port() == peer.port() && (s.ip().is_unspecified() || canonical(s.ip()) == ip)
            })
    }

    /// Whether data from allocation `a` may go to `peer`, one of the
    /// server's own addresses: only to a live relayed address (relay to
    /// relay), or to an address the allow list opens that is not a
    /// listening socket of the server.
    pub(super) fn own_destination_ok(&self, peer: SocketAddr, ft: &FiveTuple) -> bool {
        if self.by_relay.contains_key(&peer) {
            return true;
        }
        self.config.peer_policy.explicitly_allows(peer.ip()) && !self.is_service_address(peer, ft)
    }

    /// Check a peer against the allocation's families (443) and the policy
    /// (403). `full`: the peer's full address when known (ChannelBind,
    /// Connect), checked against live relayed addresses when the IP is the
    /// server's own. A 403 is reported as [`ServerEvent::PeerRefused`] with
    /// the rule that refused it.
    pub(super) fn check_peer(
        &mut self,
        slot: usize,
        ft: &FiveTuple,
        peer: IpAddr,
        full: Option<SocketAddr>,
    ) -> Result<(), u16> {
        match self.peer_verdict(slot, ft, peer, full) {
            Ok(()) => Ok(()),
            Err(Verdict::Code(code)) => Err(code),
            Err(Verdict::Refused(rule)) => {
                let user = self.slots[slot]
                    .as_ref()
                    .map(|a| a.user.clone())
                    .unwrap_or_default();
                self.events.push_back(ServerEvent::PeerRefused {
                    five_tuple: *ft,
                    user,
                    peer,
                    rule,
                });
                Err(403)
            }
        }
    }

    fn peer_verdict(
        &self,
        slot: usize,
        ft: &FiveTuple,
        peer: IpAddr,
        full: Option<SocketAddr>,
    ) -> Result<(), Verdict> {
        let Some(a) = self.slots[slot].as_ref() else {
            return Err(Verdict::Code(437));
        };
        let Some(relayed) = a.relayed_for(peer) else {
            return Err(Verdict::Code(443));
        };
        let policy = &self.config.peer_policy;
        if !self.is_own_ip(peer, ft, a) {
            return match policy.refusal(peer, &[]) {
                None => Ok(()),
                Some(rule) => Err(Verdict::Refused(rule)),
            };
        }
        // One of our own addresses: only the relayed IP (relay to relay)
        // or what the allow list opens; then, when the port is known, only
        // a live relayed address or an allowed non-service address.
        if let Some(rule @ PeerRefusal::Denied(_)) = policy.refusal(peer, &[]) {
            return Err(Verdict::Refused(rule));
        }
        // The relayed IP counts as a peer only where the policy would take
        // it from anyone else: a server relaying on a loopback or private IP
        // keeps refusing it unless `--allow-peer` opens it.
        let relayed_ip = canonical(relayed.ip()) == canonical(peer) && policy.permits(peer, &[]);
        if !relayed_ip && !policy.explicitly_allows(peer) {
            return Err(Verdict::Refused(
                policy.refusal(peer, &[]).unwrap_or(PeerRefusal::OwnAddress),
            ));
        }
        match full {
            Some(p) if !self.own_destination_ok(p, ft) => {
                Err(Verdict::Refused(if self.is_service_address(p, ft) {
                    PeerRefusal::ServiceAddress
                } else {
                    PeerRefusal::OwnAddress
                }))
            }
            _ => Ok(()),
        }
    }
}

/// Why a peer was refused: another code, or the policy (403).
enum Verdict {
    Code(u16),
    Refused(PeerRefusal),
}
