//! When and where to reconnect to signaling, as a sans-IO piece: the
//! driver says what happened (connected, lost, an attempt failed) and asks
//! what to do at `now`; the answer is a URL to try, a time to wait for, or
//! giving up. Tested on a simulated clock.
//!
//! The rules:
//!
//! - The URLs are tried in the order given, starting with the first. A
//!   lost connection moves on to the next URL at once (its node may be
//!   the one that died); with one URL, it is tried again at once.
//! - Each failed attempt moves to the next URL. After a whole round of
//!   failures the wait before the next round doubles, from
//!   [`ReconnectPolicy::initial`] up to [`ReconnectPolicy::max`], with up
//!   to [`ReconnectPolicy::jitter`] of it added at random (so that the
//!   clients of a dead node do not all come back at the same instant).
//! - Without a connection for [`ReconnectPolicy::give_up_after`] since
//!   the loss: give up.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// How [`Reconnect`] retries. Start from [`ReconnectPolicy::new`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectPolicy {
    /// Reconnect at all. Default true.
    pub enabled: bool,
    /// The wait after the first failed round. Default 250 ms.
    pub initial: Duration,
    /// The longest wait between rounds. Default 4 s.
    pub max: Duration,
    /// Up to this share of a wait is added at random. Default 0.25.
    pub jitter: f64,
    /// Give up this long after the loss. Default 60 s.
    pub give_up_after: Duration,
    /// The jitter's random seed; `None`: from the OS.
    pub rng_seed: Option<u64>,
}

impl ReconnectPolicy {
    /// The defaults listed on each field.
    pub fn new() -> ReconnectPolicy {
        ReconnectPolicy {
            enabled: true,
            initial: Duration::from_millis(250),
            max: Duration::from_secs(4),
            jitter: 0.25,
            give_up_after: Duration::from_secs(60),
            rng_seed: None,
        }
    }

    /// Never reconnect: a lost signaling connection is final.
    pub fn never() -> ReconnectPolicy {
        ReconnectPolicy {
            enabled: false,
            ..ReconnectPolicy::new()
        }
    }
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy::new()
    }
}

/// What [`Reconnect::poll`] says to do.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconnectAction {
    /// Connected, or nothing to do.
    Idle,
    /// Try this URL now; report with [`Reconnect::connected`] or
    /// [`Reconnect::failed`].
    Try(String),
    /// Wait until then, and poll again.
    Wait(Instant),
    /// No connection for [`ReconnectPolicy::give_up_after`]: stop.
    GiveUp,
}

/// The reconnection state of one client (see the module documentation).
#[derive(Debug)]
pub struct Reconnect {
    urls: Vec<String>,
    policy: ReconnectPolicy,
    current: usize,
    /// Since when there is no connection (`None`: connected).
    lost_at: Option<Instant>,
    /// No attempt before this.
    next_at: Option<Instant>,
    /// An attempt is under way.
    trying: bool,
    /// Failed attempts in this round.
    failures_in_round: usize,
    /// Whole rounds failed since the loss.
    rounds: u32,
    rng: u64,
}

impl Reconnect {
    /// A client connected to `urls[0]` (the list must not be empty; an
    /// empty one gives up at once).
    pub fn new(urls: Vec<String>, policy: ReconnectPolicy) -> Reconnect {
        let seed = policy
            .rng_seed
            .unwrap_or_else(|| RandomState::new().build_hasher().finish());
        Reconnect {
            urls,
            policy,
            current: 0,
            lost_at: None,
            next_at: None,
            trying: false,
            failures_in_round: 0,
            rounds: 0,
            rng: seed | 1,
        }
    }

    /// The URL connected to (or tried next).
    pub fn url(&self) -> Option<&str> {
        self.urls.get(self.current).map(String::as_str)
    }

    /// Whether a connection is missing.
    pub fn is_lost(&self) -> bool {
        self.lost_at.is_some()
    }

    /// The connection is gone: the next URL is tried at once.
    pub fn lost(&mut self, now: Instant) {
        if self.lost_at.is_some() {
            return;
        }
        self.lost_at = Some(now);
        self.trying = false;
        self.failures_in_round = 0;
        self.rounds = 0;
        self.next_url();
        self.next_at = Some(now);
    }

    /// The attempt succeeded.
    pub fn connected(&mut self, _now: Instant) {
        self.lost_at = None;
        self.next_at = None;
        self.trying = false;
        self.failures_in_round = 0;
        self.rounds = 0;
    }

    /// The attempt failed: the next URL, after a wait once a whole round
    /// failed.
    pub fn failed(&mut self, now: Instant) {
        self.trying = false;
        self.failures_in_round += 1;
        self.next_url();
        if self.failures_in_round >= self.urls.len().max(1) {
            self.failures_in_round = 0;
            self.rounds = self.rounds.saturating_add(1);
            let wait = self.backoff();
            self.next_at = Some(now + wait);
        } else {
            self.next_at = Some(now);
        }
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> ReconnectAction {
        let Some(lost_at) = self.lost_at else {
            return ReconnectAction::Idle;
        };
        if !self.policy.enabled
            || self.urls.is_empty()
            || now.saturating_duration_since(lost_at) >= self.policy.give_up_after
        {
            return ReconnectAction::GiveUp;
        }
        if self.trying {
            return ReconnectAction::Idle;
        }
        match self.next_at {
            Some(t) if t > now => ReconnectAction::Wait(t.min(lost_at + self.policy.give_up_after)),
            _ => {
                self.trying = true;
                ReconnectAction::Try(self.urls[self.current].clone())
            }
        }
    }

    /// When to poll next, while waiting.
    pub fn next_wake(&self) -> Option<Instant> {
        let lost_at = self.lost_at?;
        if self.trying {
            return Some(lost_at + self.policy.give_up_after);
        }
        Some(
            self.next_at
                .unwrap_or(lost_at)
                .min(lost_at + self.policy.give_up_after),
        )
    }

    fn next_url(&mut self) {
        if !self.urls.is_empty() {
            self.current = (self.current + 1) % self.urls.len();
        }
    }

    /// The wait before the next round, jitter added.
    fn backoff(&mut self) -> Duration {
        let exp = self.rounds.saturating_sub(1).min(16);
        let base = self
            .policy
            .initial
            .saturating_mul(1u32 << exp)
            .min(self.policy.max);
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        base + base.mul_f64(self.policy.jitter.clamp(0.0, 1.0) * unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ReconnectPolicy {
        ReconnectPolicy {
            rng_seed: Some(7),
            ..ReconnectPolicy::new()
        }
    }

    fn urls(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("ws://node{i}/")).collect()
    }

    #[test]
    fn a_lost_connection_tries_the_next_url_at_once() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(urls(3), policy());
        assert_eq!(r.poll(t0), ReconnectAction::Idle);
        r.lost(t0);
        assert_eq!(r.poll(t0), ReconnectAction::Try("ws://node2/".into()));
        // One attempt at a time.
        assert_eq!(r.poll(t0), ReconnectAction::Idle);
        r.failed(t0);
        assert_eq!(r.poll(t0), ReconnectAction::Try("ws://node3/".into()));
        r.connected(t0);
        assert_eq!(r.url(), Some("ws://node3/"));
        assert_eq!(r.poll(t0), ReconnectAction::Idle);
    }

    #[test]
    fn whole_rounds_of_failures_back_off_exponentially_up_to_the_cap() {
        let t0 = Instant::now();
        let p = ReconnectPolicy {
            jitter: 0.0,
            give_up_after: Duration::from_secs(3600),
            ..policy()
        };
        let mut r = Reconnect::new(urls(1), p);
        r.lost(t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            match r.poll(now) {
                ReconnectAction::Try(_) => r.failed(now),
                other => panic!("expected a try, got {other:?}"),
            }
            match r.poll(now) {
                ReconnectAction::Wait(t) => {
                    waits.push(t - now);
                    now = t;
                }
                other => panic!("expected a wait, got {other:?}"),
            }
        }
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [250, 500, 1000, 2000, 4000, 4000, 4000, 4000]);
    }

    #[test]
    fn jitter_adds_at_most_its_share_and_is_deterministic_with_a_seed() {
        let t0 = Instant::now();
        let run = || {
            let mut r = Reconnect::new(urls(2), policy());
            r.lost(t0);
            let mut out = Vec::new();
            let mut now = t0;
            for _ in 0..12 {
                match r.poll(now) {
                    ReconnectAction::Try(_) => r.failed(now),
                    ReconnectAction::Wait(t) => {
                        out.push(t - now);
                        now = t;
                    }
                    other => panic!("{other:?}"),
                }
            }
            out
        };
        let a = run();
        assert_eq!(a, run());
        assert!(!a.is_empty());
        for w in &a {
            assert!(
                *w >= Duration::from_millis(250) && *w <= Duration::from_secs(5),
                "{w:?}"
            );
        }
    }

    #[test]
    fn it_gives_up_after_the_limit_since_the_loss() {
        let t0 = Instant::now();
        let p = ReconnectPolicy {
            give_up_after: Duration::from_secs(10),
            ..policy()
        };
        let mut r = Reconnect::new(urls(2), p);
        r.lost(t0);
        let mut now = t0;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 1000, "no give-up");
            match r.poll(now) {
                ReconnectAction::Try(_) => r.failed(now),
                ReconnectAction::Wait(t) => now = t,
                ReconnectAction::GiveUp => break,
                ReconnectAction::Idle => panic!("idle while lost"),
            }
        }
        assert_eq!(now - t0, Duration::from_secs(10));
    }

    #[test]
    fn never_gives_up_at_the_first_loss() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(urls(2), ReconnectPolicy::never());
        r.lost(t0);
        assert_eq!(r.poll(t0), ReconnectAction::GiveUp);
    }
}
