//! TURN credentials: which servers a peer gets, and the per-address rate
//! at which credentials go out.

use std::time::{Instant, SystemTime};

use super::{AddrKey, Rooms};
use crate::msg::{IceServer, RelayUnavailable};

impl Rooms {
    /// The provider's list for `peer` at `now`.
    pub(super) fn servers_for(&self, peer: &str, now: Instant) -> Vec<IceServer> {
        let wall = match self.epoch {
            Some((at, wall)) => {
                let since = now.saturating_duration_since(at);
                wall.checked_add(since).unwrap_or(wall)
            }
            None => SystemTime::UNIX_EPOCH,
        };
        self.ice.ice_servers(peer, wall)
    }

    /// The full list (TURN credentials included) if the address's
    /// credential rate allows; otherwise the list without credentials and
    /// why.
    pub(super) fn grant(
        &mut self,
        peer: &str,
        addr: Option<AddrKey>,
        now: Instant,
    ) -> (Vec<IceServer>, Option<RelayUnavailable>) {
        let all = self.servers_for(peer, now);
        if !has_turn_credentials(&all) {
            return (all, Some(RelayUnavailable::NotOffered));
        }
        // A full table withholds: every address there is still short of tokens.
        if self.credential_buckets.take(addr, now).unwrap_or(false) {
            self.stats.credentials_issued += 1;
            (all, None)
        } else {
            self.stats.credentials_withheld_rate += 1;
            (public_view(&all), Some(RelayUnavailable::RateLimited))
        }
    }
}

/// Whether `servers` hold a TURN server with credentials.
pub(super) fn has_turn_credentials(servers: &[IceServer]) -> bool {
    servers.iter().any(|s| {
        (s.username.is_some() || s.credential.is_some())
            && s.urls.iter().any(|u| u.starts_with("turn"))
    })
}

/// `servers` without credentials: entries that have none, and the `stun:`
/// URLs of those that have.
pub(super) fn public_view(servers: &[IceServer]) -> Vec<IceServer> {
    servers
        .iter()
        .filter_map(|s| {
            if s.username.is_none() && s.credential.is_none() {
                return Some(s.clone());
            }
            let stun: Vec<String> = s
                .urls
                .iter()
                .filter(|u| u.starts_with("stun"))
                .cloned()
                .collect();
            (!stun.is_empty()).then(|| IceServer::new(stun))
        })
        .collect()
}
