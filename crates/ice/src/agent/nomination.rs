//! Nomination (RFC 8445 §8.1): which valid pair the controlling agent nominates
//! and when, and the selected pair.

use std::time::{Duration, Instant};

use rand::Rng;

use super::checklist::Pair;
use super::IceAgent;
use crate::candidate::Candidate;
use crate::pair::PairState;
use crate::types::{IceEvent, IceRole};

/// The least time the first retransmission of a check of a better pair is
/// waited for once a pair is valid (see `IceAgent::patience`), however
/// short the valid pair's round trip.
const MIN_PATIENCE: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(super) struct Selected {
    pub(super) local: Candidate,
    pub(super) remote: Candidate,
    /// The pair in the current check list; `None` after a restart, while the
    /// old path keeps carrying data.
    pub(super) pair: Option<usize>,
    pub(super) last_consent: Instant,
    pub(super) next_consent: Instant,
    pub(super) last_sent: Instant,
    /// [`IceAgent::verify_consent`] under way: since when (an answer after
    /// it ends the verification) and until when (no answer by then: consent
    /// is lost).
    pub(super) verify: Option<(Instant, Instant)>,
}

impl IceAgent {
    // ------------------------------------------------------------ nomination

    /// The valid pair the controlling agent should nominate next (regular
    /// nomination), ignoring the wait for better pairs.
    pub(super) fn nomination_candidate(&self) -> Option<usize> {
        if self.role != IceRole::Controlling
            || self.config.lite
            || self.config.aggressive_nomination
            || self.nominating.is_some()
            || !self.can_check()
        {
            return None;
        }
        let best = (0..self.pairs.len())
            .filter(|p| self.pairs[*p].valid && self.pairs[*p].state == PairState::Succeeded)
            .max_by_key(|p| self.pairs[*p].priority)?;
        if self.pairs[best].nominated {
            return None;
        }
        if let Some(s) = self.selected.as_ref().and_then(|s| s.pair) {
            if self.pairs[s].priority >= self.pairs[best].priority {
                return None;
            }
        }
        Some(best)
    }

    pub(super) fn maybe_nominate(&mut self, now: Instant) {
        let Some(best) = self.nomination_candidate() else {
            return;
        };
        let prio = self.pairs[best].priority;
        let patience = self.patience(best);
        let pending_better = self.pairs.iter().any(|p| {
            p.priority > prio
                && match p.state {
                    PairState::Frozen | PairState::Waiting => true,
                    PairState::InProgress => !Self::given_up(p, patience, now),
                    PairState::Succeeded | PairState::Failed => false,
                }
        });
        let waited = self
            .first_valid_at
            .is_some_and(|f| now >= f + self.config.nomination_timeout);
        // Relay first, upgrade later: nothing carries data yet (at the
        // start, or after a restart), so the first pair that works is
        // taken at once; better ones replace it as they succeed.
        let first = self.config.early_nomination && self.selected_index().is_none();
        if first || !pending_better || waited {
            self.nominating = Some(best);
            self.enqueue_triggered(best, true);
        }
    }

    /// The selected pair of the current check list, if any (none before
    /// the first selection and after a restart, until the new checks
    /// select one).
    pub(super) fn selected_index(&self) -> Option<usize> {
        self.selected.as_ref().and_then(|s| s.pair)
    }

    /// How long after its first check a better pair in progress may stay
    /// unanswered before the controlling agent stops waiting for it: the
    /// first retransmission (one RTO later: a hole often opens only for it,
    /// once the peer's own check went out) and then twice the round trip of
    /// the best valid pair `v` (at least [`MIN_PATIENCE`]). `None` (wait the
    /// whole nomination timeout) when that round trip is unknown.
    fn patience(&self, v: usize) -> Option<Duration> {
        let rto = self.config.check_retransmits.rto;
        self.pairs[v].rtt.map(|r| rto + (r * 2).max(MIN_PATIENCE))
    }

    /// A better pair in progress that is not worth waiting for: our checks
    /// of it went unanswered for `patience`, and the peer never sent a
    /// check on it (a check from the peer means the path may open, as when
    /// two NATs punch a hole). Two private LANs behind different NATs, a
    /// symmetric NAT: such pairs stay in progress until their checks time
    /// out (9.5 s), and would hold the nomination back for the whole
    /// nomination timeout.
    fn given_up(p: &Pair, patience: Option<Duration>, now: Instant) -> bool {
        match (patience, p.first_check_at) {
            (Some(wait), Some(first)) => !p.peer_checked && p.responses == 0 && now >= first + wait,
            _ => false,
        }
    }

    /// When the next better pair in progress will be given up on (see
    /// [`IceAgent::given_up`]), so that the nomination is not late.
    pub(super) fn next_give_up(&self) -> Option<Instant> {
        let best = self.nomination_candidate()?;
        let wait = self.patience(best)?;
        let prio = self.pairs[best].priority;
        self.pairs
            .iter()
            .filter(|p| p.priority > prio && p.state == PairState::InProgress)
            .filter(|p| !p.peer_checked && p.responses == 0)
            .filter_map(|p| p.first_check_at.map(|f| f + wait))
            // Past ones are given up already; what still holds the
            // nomination back (a pair not checked yet) has its own timer.
            .filter(|t| self.last_now.is_some_and(|n| *t > n))
            .min()
    }

    pub(super) fn nominate(&mut self, now: Instant, v: usize) {
        self.pairs[v].nominated = true;
        self.select_best_nominated(now);
    }

    /// Selects the best nominated valid pair, if it is not selected yet.
    pub(super) fn select_best_nominated(&mut self, now: Instant) {
        let best = (0..self.pairs.len())
            .filter(|p| {
                let p = &self.pairs[*p];
                p.nominated && p.valid && p.state == PairState::Succeeded
            })
            .max_by_key(|p| self.pairs[*p].priority);
        let Some(best) = best else {
            return;
        };
        if self.selected.as_ref().and_then(|s| s.pair) == Some(best) {
            return;
        }
        let local = self.locals[self.pairs[best].local].clone();
        let remote = self.remotes[self.pairs[best].remote].clone();
        let jitter = self.consent_jitter();
        self.selected = Some(Selected {
            local: local.clone(),
            remote: remote.clone(),
            pair: Some(best),
            last_consent: now,
            next_consent: now + jitter,
            last_sent: now,
            verify: None,
        });
        self.disconnected = false;
        self.prev_local = None;
        self.emit(IceEvent::SelectedPair { local, remote });
    }

    /// A candidate of the selected pair that was learnt as peer-reflexive
    /// was signalled since (RFC 8445 §7.3.1.3, RFC 8838 §11.4): the pair is
    /// the same (same addresses, same rules for its priority), but the
    /// application learns the signalled kind through a new
    /// [`IceEvent::SelectedPair`], as aioice and libwebrtc relabel it.
    pub(super) fn relabel_selected(&mut self) {
        let Some(sel) = &self.selected else {
            return;
        };
        let Some(p) = sel.pair else {
            return;
        };
        let local = &self.locals[self.pairs[p].local];
        let remote = &self.remotes[self.pairs[p].remote];
        if local.kind() == sel.local.kind() && remote.kind() == sel.remote.kind() {
            return;
        }
        let (local, remote) = (local.clone(), remote.clone());
        if let Some(sel) = &mut self.selected {
            sel.local = local.clone();
            sel.remote = remote.clone();
        }
        self.emit(IceEvent::SelectedPair { local, remote });
    }

    pub(super) fn consent_jitter(&mut self) -> Duration {
        self.config
            .consent_interval
            .mul_f64(self.rng.gen_range(0.8..1.2))
    }
}
