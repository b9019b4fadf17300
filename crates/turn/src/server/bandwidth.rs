//! The per-allocation bandwidth cap: a token bucket on the caller's clock.

use std::time::{Duration, Instant};

/// A token bucket in bytes, refilled at `rate` bytes per second up to
/// `burst` bytes, on the caller's clock.
#[derive(Debug, Clone)]
pub(super) struct TokenBucket {
    rate: u64,
    /// Capacity, in byte-nanoseconds.
    cap: u128,
    /// Tokens, in byte-nanoseconds (bytes × 10⁹), so refills are exact.
    tokens: u128,
    last: Instant,
}

impl TokenBucket {
    pub(super) fn new(now: Instant, rate: u64, burst: u64) -> Self {
        let cap = u128::from(burst.max(1)) * 1_000_000_000;
        TokenBucket {
            rate,
            cap,
            tokens: cap,
            last: now,
        }
    }

    /// Take `bytes` if there are enough tokens.
    pub(super) fn take(&mut self, now: Instant, bytes: usize) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        if elapsed > Duration::ZERO {
            self.last = now;
            let add = elapsed.as_nanos().saturating_mul(u128::from(self.rate));
            self.tokens = self.tokens.saturating_add(add).min(self.cap);
        }
        let need = (bytes as u128) * 1_000_000_000;
        if self.tokens >= need {
            self.tokens -= need;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_on_the_simulated_clock() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0, 1000, 1000);
        assert!(b.take(t0, 600));
        assert!(!b.take(t0, 600));
        assert!(b.take(t0 + Duration::from_millis(200), 600));
        assert!(!b.take(t0 + Duration::from_millis(200), 1));
        // Never more than the burst.
        assert!(!b.take(t0 + Duration::from_secs(100), 1001));
        assert!(b.take(t0 + Duration::from_secs(100), 1000));
    }
}
