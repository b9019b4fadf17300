//! Paths found outside ICE's own checks (birthday probing, issue 14): a
//! local socket and a remote address that exchanged an authenticated
//! request and answer. They become a pair of the check list, checked at
//! once, that the controlling agent may nominate like any other.

use std::net::SocketAddr;
use std::time::Instant;

use p2p_proto::Transport;

use super::checks::prflx_priority;
use super::IceAgent;
use crate::candidate::{candidate_priority, Candidate, CandidateKind};
use crate::pair::PairState;
use crate::types::IceError;

impl IceAgent {
    /// A UDP path found outside the agent's checks: our socket `local`
    /// (a host candidate's address, or a socket the agent does not know:
    /// it becomes a host candidate that is neither signalled nor gathered
    /// from) and the peer's `remote` (a candidate it signalled, or a new
    /// peer-reflexive one). The pair gets a triggered check at once; its
    /// success makes it valid, and the controlling agent nominates it when
    /// it is better than the selected pair (a relayed one, say), as any
    /// pair. Refused by a relay-only or lite agent, and before the peer's
    /// credentials are known.
    pub fn add_discovered_pair(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<(), IceError> {
        if self.config.relay_only || self.config.lite {
            return Err(IceError::ExcludedByPolicy);
        }
        if !self.can_check() || local.is_ipv4() != remote.is_ipv4() {
            return Err(IceError::ExcludedByPolicy);
        }
        self.note_time(now);
        let udp = |c: &Candidate| c.transport() == Transport::Udp;
        let li = match self
            .locals
            .iter()
            .position(|l| udp(l) && l.address() == local && l.kind() == CandidateKind::Host)
        {
            Some(li) => li,
            None => {
                let mut c = Candidate::host(local);
                let pref = self.local_preference(&c);
                c.set_priority(candidate_priority(
                    CandidateKind::Host.type_preference(),
                    pref,
                    1,
                ));
                // Not emitted: the peer reaches it only through the mapping
                // the probing opened.
                self.locals.push(c);
                self.locals.len() - 1
            }
        };
        let ri = match self
            .remotes
            .iter()
            .position(|r| udp(r) && r.address() == remote)
        {
            Some(ri) => ri,
            None => {
                let prio = prflx_priority(&self.locals[li]);
                let mut c = Candidate::peer_reflexive(remote, remote, prio);
                self.remote_prflx_count += 1;
                c.set_foundation(format!("prflx{}", self.remote_prflx_count));
                self.remotes.push(c);
                self.remotes.len() - 1
            }
        };
        let p = match self.find_pair(li, ri) {
            Some(p) => p,
            None => self.new_pair(li, ri, PairState::Waiting),
        };
        if self.pairs[p].state != PairState::Succeeded {
            self.pairs[p].state = PairState::Waiting;
            self.enqueue_triggered(p, false);
        }
        self.update_state();
        Ok(())
    }
}
