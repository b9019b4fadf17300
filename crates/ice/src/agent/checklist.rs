//! The check list (RFC 8445 §6.1.2, §6.1.4): pairing, pair priorities, roles,
//! pacing (§14.2), triggered checks and unfreezing.

use std::time::{Duration, Instant};

use super::checks::Purpose;
use super::IceAgent;
use crate::candidate::{Candidate, CandidateKind, TcpType};
use crate::pair::{pair_priority, PairState};
use crate::types::{IceEvent, IceRole};

#[derive(Debug)]
pub(super) struct Pair {
    pub(super) local: usize,
    pub(super) remote: usize,
    pub(super) priority: u64,
    pub(super) state: PairState,
    pub(super) valid: bool,
    pub(super) nominated: bool,
    /// The peer sent USE-CANDIDATE on this pair before our check succeeded.
    pub(super) nominate_on_success: bool,
    /// The valid pair our check of this pair produced (RFC 8445 §7.2.5.3.2).
    pub(super) valid_pair: Option<usize>,
    /// A triggered check was already sent while a check was in progress.
    pub(super) retriggered: bool,
    pub(super) checks_sent: u32,
    pub(super) responses: u32,
    /// When our first check of the pair went out.
    pub(super) first_check_at: Option<Instant>,
    /// The round trip of the check that made the pair succeed (or of the
    /// check whose valid pair this is).
    pub(super) rtt: Option<Duration>,
    /// The peer sent a check on this pair: it is alive at the peer's end.
    pub(super) peer_checked: bool,
}

impl IceAgent {
    // ------------------------------------------------------------ candidates and pairs

    /// Local preference (RFC 8421 §4): the base IPs of this kind rank in
    /// the order they first appeared within their family, and the families
    /// interleave, IPv6 first: the first IPv6 address, the first IPv4 one,
    /// the second IPv6 one, the second IPv4 one… so that the checks of
    /// neither family wait for all those of the other (a dual-stack host
    /// whose IPv6 is broken still connects over IPv4 at once).
    ///
    /// A TCP candidate's local preference is RFC 6544 §4.2's:
    /// `2^13 * direction-pref + other-pref`, direction-pref 6 for active,
    /// 4 for passive, 2 for simultaneous-open (host candidates: active
    /// first, it needs nothing from the network), other-pref the same
    /// interleaved rank within 13 bits.
    pub(super) fn local_preference(&self, c: &Candidate) -> u16 {
        let (kind, base, transport) = (c.kind(), c.base(), c.transport());
        let v4 = base.is_ipv4();
        let mut ips = Vec::new();
        for l in &self.locals {
            if l.kind() == kind
                && l.transport() == transport
                && l.base().is_ipv4() == v4
                && !ips.contains(&l.base().ip())
            {
                ips.push(l.base().ip());
            }
        }
        let index = ips
            .iter()
            .position(|ip| *ip == base.ip())
            .unwrap_or(ips.len());
        match c.tcp_type() {
            None => {
                let rank = index.min(0x7FFE) * 2 + usize::from(v4);
                0xFFFF - rank as u16
            }
            Some(t) => {
                let direction: u16 = match t {
                    TcpType::Active => 6,
                    TcpType::Passive => 4,
                    _ => 2,
                };
                let rank = (index.min(0xFFE) * 2 + usize::from(v4)) as u16;
                (direction << 13) + (0x1FFF - rank)
            }
        }
    }

    /// Whether a local candidate takes part in pairing: host and relayed ones,
    /// and server-reflexive ones only when their base is not itself a local
    /// candidate (RFC 8445 §6.1.2.4 replaces them by their base).
    pub(super) fn pairable(&self, li: usize) -> bool {
        let l = &self.locals[li];
        if self.retired.contains(&(l.address(), l.base())) {
            return false;
        }
        match l.kind() {
            CandidateKind::Host | CandidateKind::Relayed => true,
            CandidateKind::ServerReflexive => !self
                .locals
                .iter()
                .any(|o| o.kind() == CandidateKind::Host && o.address() == l.base()),
            CandidateKind::PeerReflexive => false,
        }
    }

    fn compute_pair_priority(&self, local: usize, remote: usize) -> u64 {
        let (l, r) = (
            self.locals[local].priority(),
            self.remotes[remote].priority(),
        );
        match self.role {
            IceRole::Controlling => pair_priority(l, r),
            IceRole::Controlled => pair_priority(r, l),
        }
    }

    pub(super) fn recompute_priorities(&mut self) {
        for i in 0..self.pairs.len() {
            self.pairs[i].priority =
                self.compute_pair_priority(self.pairs[i].local, self.pairs[i].remote);
        }
    }

    pub(super) fn foundation_of(&self, p: usize) -> (&str, &str) {
        let pair = &self.pairs[p];
        (
            self.locals[pair.local].foundation(),
            self.remotes[pair.remote].foundation(),
        )
    }

    pub(super) fn new_pair(&mut self, local: usize, remote: usize, state: PairState) -> usize {
        let priority = self.compute_pair_priority(local, remote);
        self.pairs.push(Pair {
            local,
            remote,
            priority,
            state,
            valid: false,
            nominated: false,
            nominate_on_success: false,
            valid_pair: None,
            retriggered: false,
            checks_sent: 0,
            responses: 0,
            first_check_at: None,
            rtt: None,
            peer_checked: false,
        });
        self.pairs.len() - 1
    }

    pub(super) fn find_pair(&self, local: usize, remote: usize) -> Option<usize> {
        self.pairs
            .iter()
            .position(|p| p.local == local && p.remote == remote)
    }

    /// Form the pair (local, remote) for the check list if it belongs there.
    pub(super) fn pair_up(&mut self, li: usize, ri: usize) {
        let (l, r) = (&self.locals[li], &self.remotes[ri]);
        if l.address().is_ipv4() != r.address().is_ipv4()
            || !self.pairable(li)
            || !tcp_pairs(l.tcp_type(), r.tcp_type())
        {
            return;
        }
        // Redundant (same base and remote address) pairs are pruned (§6.1.2.4).
        let (base, raddr, transport) = (l.base(), r.address(), l.transport());
        if self.pairs.iter().any(|p| {
            self.locals[p.local].base() == base
                && self.remotes[p.remote].address() == raddr
                && self.locals[p.local].transport() == transport
        }) {
            return;
        }
        // Trickle (RFC 8838 §10): Waiting unless a pair of the same foundation
        // is already Waiting or In-Progress.
        let foundation = (l.foundation().to_string(), r.foundation().to_string());
        let busy = (0..self.pairs.len()).any(|p| {
            matches!(
                self.pairs[p].state,
                PairState::Waiting | PairState::InProgress
            ) && self.foundation_of(p) == (foundation.0.as_str(), foundation.1.as_str())
        });
        let state = if busy {
            PairState::Frozen
        } else {
            PairState::Waiting
        };
        self.new_pair(li, ri, state);
    }

    pub(super) fn set_role(&mut self, role: IceRole) {
        if self.role == role {
            return;
        }
        self.role = role;
        if role == IceRole::Controlled {
            self.nominating = None;
            self.triggered.iter_mut().for_each(|t| t.1 = false);
        }
        self.recompute_priorities();
        self.emit(IceEvent::RoleChanged(role));
    }

    /// Forget the peer's candidates and the check list (restart).
    pub(super) fn reset_remote(&mut self) {
        self.remotes.clear();
        self.pairs.clear();
        self.triggered.clear();
        self.requests
            .retain(|t| !matches!(t.purpose, Purpose::Check { .. }));
        self.remote_eoc = false;
        self.remote_prflx_count = 0;
        self.last_was_triggered = false;
        self.nominating = None;
        self.first_valid_at = None;
        self.checking_since = None;
        self.last_check_at = None;
        if let Some(sel) = &mut self.selected {
            sel.pair = None;
        }
    }

    // ------------------------------------------------------------ checks

    /// Whether the pacer may send a check at `now`: Ta after the last one
    /// (RFC 8445 §14.2), or at once when no check of ours is waiting for an
    /// answer. Checks are then clocked by the answers, never faster than
    /// Ta while one is outstanding, and an agent whose checks were all
    /// answered (a nomination after the first success, a triggered check
    /// after a quiet spell) does not sit out the rest of a Ta slot.
    ///
    /// A check of pair `next` replaces that pair's own outstanding check
    /// (RFC 8445 §7.3.1.4 cancels it), so that one does not hold it back: a
    /// triggered check on a pair whose first check was lost goes out with
    /// the answer to the peer's check.
    fn check_due(&self, now: Instant, next: usize) -> bool {
        self.last_check_at.is_none_or(|l| now >= l + self.config.ta)
            || !self.check_outstanding(next)
    }

    /// A check transaction (not cancelled, not of pair `except`) still
    /// waits for its answer.
    fn check_outstanding(&self, except: usize) -> bool {
        self.requests.iter().any(|t| {
            !t.cancelled && matches!(t.purpose, Purpose::Check { pair, .. } if pair != except)
        })
    }

    /// The next check slot for pair `next`: `now` when
    /// [`check_due`](Self::check_due) would say so, else Ta after the last
    /// check.
    pub(super) fn next_check_at(&self, next: usize) -> Option<Instant> {
        match self.last_check_at {
            Some(l) if self.check_outstanding(next) => Some(l + self.config.ta),
            _ => self.last_now,
        }
    }

    /// Send the next check if one is due (after an input or a timeout).
    pub(super) fn pace(&mut self, now: Instant) {
        let Some(next) = self.peek_next_check() else {
            return;
        };
        if self.check_due(now, next) {
            if let Some((p, nominate)) = self.pop_next_check() {
                self.send_check(now, p, nominate);
            }
        }
    }

    pub(super) fn can_check(&self) -> bool {
        !self.config.lite && !self.failed && self.remote_creds.is_some()
    }

    /// The next check the pacer would send, without changing anything.
    pub(super) fn peek_next_check(&self) -> Option<usize> {
        if !self.can_check() {
            return None;
        }
        match self.triggered.front() {
            Some(&(p, nominate)) if nominate || !self.last_was_triggered => Some(p),
            Some(&(p, _)) => self.peek_ordinary().or(Some(p)),
            None => self.peek_ordinary(),
        }
    }

    fn best_in_state(&self, state: PairState) -> Option<usize> {
        (0..self.pairs.len())
            .filter(|p| self.pairs[*p].state == state)
            .max_by_key(|p| self.pairs[*p].priority)
    }

    /// Frozen pairs whose foundation has no Waiting or In-Progress pair, the
    /// highest-priority one per foundation (§6.1.4.2).
    fn unfreezable(&self) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for p in 0..self.pairs.len() {
            if self.pairs[p].state != PairState::Frozen {
                continue;
            }
            let f = self.foundation_of(p);
            let busy = (0..self.pairs.len()).any(|q| {
                matches!(
                    self.pairs[q].state,
                    PairState::Waiting | PairState::InProgress
                ) && self.foundation_of(q) == f
            });
            if busy {
                continue;
            }
            match out.iter().position(|q| self.foundation_of(*q) == f) {
                Some(i) if self.pairs[out[i]].priority < self.pairs[p].priority => out[i] = p,
                Some(_) => {}
                None => out.push(p),
            }
        }
        out
    }

    fn pop_next_check(&mut self) -> Option<(usize, bool)> {
        if !self.can_check() {
            return None;
        }
        // Triggered checks go first (RFC 8445 §6.1.4.2), but not every
        // slot: after a triggered check an ordinary one gets the next slot
        // (nominations excepted), so that a peer that keeps triggering
        // checks (a stream of new peer-reflexive addresses) cannot starve
        // the rest of the check list, the relayed pairs for instance.
        let take_triggered = match self.triggered.front() {
            Some(&(_, nominate)) => {
                nominate || !self.last_was_triggered || self.peek_ordinary().is_none()
            }
            None => false,
        };
        if take_triggered {
            self.last_was_triggered = true;
            return self.triggered.pop_front();
        }
        self.last_was_triggered = false;
        if let Some(p) = self.best_in_state(PairState::Waiting) {
            return Some((p, false));
        }
        let unfreeze = self.unfreezable();
        for p in &unfreeze {
            self.pairs[*p].state = PairState::Waiting;
        }
        self.best_in_state(PairState::Waiting).map(|p| (p, false))
    }

    /// The ordinary (not triggered) check the pacer would send next.
    fn peek_ordinary(&self) -> Option<usize> {
        self.best_in_state(PairState::Waiting).or_else(|| {
            self.unfreezable()
                .into_iter()
                .max_by_key(|p| self.pairs[*p].priority)
        })
    }

    pub(super) fn enqueue_triggered(&mut self, p: usize, nominate: bool) {
        if let Some(t) = self.triggered.iter_mut().find(|t| t.0 == p) {
            t.1 |= nominate;
            return;
        }
        if nominate {
            self.triggered.push_front((p, nominate));
        } else {
            self.triggered.push_back((p, nominate));
        }
    }
}

/// Whether a local and a remote candidate of these TCP types make a pair
/// the local side can check (RFC 6544 §6.2): both UDP; or an active local
/// against a passive remote, simultaneous-open against simultaneous-open.
/// A passive local candidate is checked only over connections the peer
/// opens (its checks teach the agent the peer's address and trigger ours),
/// so it pairs with nothing in advance.
fn tcp_pairs(local: Option<TcpType>, remote: Option<TcpType>) -> bool {
    matches!(
        (local, remote),
        (None, None)
            | (Some(TcpType::Active), Some(TcpType::Passive))
            | (
                Some(TcpType::SimultaneousOpen),
                Some(TcpType::SimultaneousOpen)
            )
    )
}
