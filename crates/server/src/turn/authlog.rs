//! Authentication failures logged as counted summaries: one INFO line per
//! window that had any (how many, why, from how many addresses, the
//! heaviest, how many requests were throttled unanswered), not one line
//! per failure. Each failure is still logged at DEBUG.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use p2p_turn::AuthFailure;

/// The length of a summary's window.
pub(super) const WINDOW: Duration = Duration::from_secs(10);
/// Addresses counted one by one in a window; the others together.
const ADDRESSES: usize = 64;

/// The failures of the current window.
#[derive(Debug, Default)]
pub(super) struct AuthLog {
    /// When the window began (its first failure or throttled request).
    since: Option<Instant>,
    failures: u64,
    /// Wrong password, unknown user, wrong realm.
    reasons: [u64; 3],
    by_addr: HashMap<IpAddr, u64>,
    /// Failures from addresses past the first [`ADDRESSES`].
    others: u64,
    /// The server's throttled count when the window began.
    throttled_at_start: u64,
}

impl AuthLog {
    /// One failure from `ip`; `throttled` is the server's count now.
    pub(super) fn failed(&mut self, now: Instant, ip: IpAddr, reason: AuthFailure, throttled: u64) {
        self.open(now, throttled);
        self.failures += 1;
        let k = match reason {
            AuthFailure::BadIntegrity => 0,
            AuthFailure::UnknownUser => 1,
            _ => 2,
        };
        self.reasons[k] += 1;
        if let Some(n) = self.by_addr.get_mut(&ip) {
            *n += 1;
        } else if self.by_addr.len() < ADDRESSES {
            self.by_addr.insert(ip, 1);
        } else {
            self.others += 1;
        }
    }

    /// A window begins at `now` unless one is open; `throttled` is the
    /// server's count now.
    pub(super) fn open(&mut self, now: Instant, throttled: u64) {
        if self.since.is_none() {
            self.since = Some(now);
            self.throttled_at_start = throttled;
        }
    }

    /// When the open window's summary is due.
    pub(super) fn due(&self) -> Option<Instant> {
        self.since.map(|s| s + WINDOW)
    }

    /// The summary of the window (and a fresh one), if it had anything;
    /// `throttled` is the server's count now.
    pub(super) fn summary(&mut self, now: Instant, throttled: u64) -> Option<String> {
        let since = self.since?;
        let done = std::mem::take(self);
        let dropped = throttled.saturating_sub(done.throttled_at_start);
        if done.failures == 0 && dropped == 0 {
            return None;
        }
        let secs = now.saturating_duration_since(since).as_secs_f64();
        let top = done
            .by_addr
            .iter()
            .max_by_key(|(ip, n)| (**n, std::cmp::Reverse(**ip)))
            .map(|(ip, n)| format!(", most from {ip} ({n})"))
            .unwrap_or_default();
        let addrs = done.by_addr.len() as u64;
        let more = if done.others > 0 { "+" } else { "" };
        Some(format!(
            "turn authentication failures: {} in {secs:.0} s (wrong password {}, unknown user {}, wrong realm {}) from {addrs}{more} address(es){top}; {dropped} request(s) from addresses past the failure limit dropped unanswered",
            done.failures, done.reasons[0], done.reasons[1], done.reasons[2]
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_failures_is_one_line_per_window_with_counts() {
        let t0 = Instant::now();
        let mut log = AuthLog::default();
        assert_eq!(log.due(), None);
        let guesser: IpAddr = "192.0.2.66".parse().unwrap();
        for k in 0..100_000u64 {
            log.failed(t0, guesser, AuthFailure::BadIntegrity, k / 2);
        }
        for k in 0..100u8 {
            log.failed(
                t0,
                IpAddr::from([10, 0, 0, k]),
                AuthFailure::UnknownUser,
                50_000,
            );
        }
        assert_eq!(log.due(), Some(t0 + WINDOW));
        let line = log.summary(t0 + WINDOW, 90_000).unwrap();
        assert!(
            line.contains("100100 in 10 s (wrong password 100000, unknown user 100, wrong realm 0) from 64+ address(es), most from 192.0.2.66 (100000); 90000 request(s)"),
            "{line}"
        );
        assert_eq!(log.due(), None);
        assert_eq!(log.summary(t0 + WINDOW, 90_000), None);
        assert!(
            log.by_addr.capacity() <= 128,
            "the window's table is dropped"
        );
    }
}
