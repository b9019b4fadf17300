//! Token buckets: one per connection for its message rate, and tables of
//! them per client address (TURN credentials handed out, wrong room tokens
//! tried), bounded in size.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::addr::AddrKey;

/// Most per-address buckets a table keeps; past it, full buckets (those
/// indistinguishable from a new address) are dropped first.
pub(super) const MAX_ADDR_BUCKETS: usize = 65_536;

/// `burst` tokens, refilled at `rate` per second.
#[derive(Debug)]
pub(super) struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(super) fn full(burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            last: now,
        }
    }

    /// The tokens there would be at `now` (without changing the bucket).
    fn level(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }

    /// Takes one token if there is one.
    pub(super) fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        self.tokens = self.level(now, rate, burst);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One [`TokenBucket`] per client address (`None`: a client whose address
/// the caller did not give), all with the same rate and burst.
#[derive(Debug)]
pub(super) struct AddrBuckets {
    map: HashMap<Option<AddrKey>, TokenBucket>,
    /// Tokens per second.
    rate: f64,
    burst: f64,
}

impl AddrBuckets {
    /// An empty table: every address starts with `burst` tokens, refilled at
    /// `per_minute`.
    pub(super) fn new(per_minute: f64, burst: f64) -> AddrBuckets {
        AddrBuckets {
            map: HashMap::new(),
            rate: per_minute / 60.0,
            burst,
        }
    }

    /// Takes one token of `addr`'s bucket: `Some(taken)`, or `None` when the
    /// table is full of addresses that are all still short of tokens (the
    /// caller decides what that means).
    pub(super) fn take(&mut self, addr: Option<AddrKey>, now: Instant) -> Option<bool> {
        let (rate, burst) = (self.rate, self.burst);
        if !self.map.contains_key(&addr) && self.map.len() >= MAX_ADDR_BUCKETS {
            self.map.retain(|_, b| b.level(now, rate, burst) < burst);
            if self.map.len() >= MAX_ADDR_BUCKETS {
                return None;
            }
        }
        Some(
            self.map
                .entry(addr)
                .or_insert_with(|| TokenBucket::full(burst, now))
                .take(now, rate, burst),
        )
    }

    /// How long until `addr` has a token again (zero when it has one now).
    pub(super) fn wait(&self, addr: Option<AddrKey>, now: Instant) -> Duration {
        let Some(b) = self.map.get(&addr) else {
            return Duration::ZERO;
        };
        let short = 1.0 - b.level(now, self.rate, self.burst);
        if short <= 0.0 || self.rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(short / self.rate).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn key(n: u8) -> Option<AddrKey> {
        Some(AddrKey::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)), 64))
    }

    #[test]
    fn an_address_gets_its_burst_then_one_token_per_refill_interval() {
        let t0 = Instant::now();
        let mut t = AddrBuckets::new(6.0, 3.0);
        for _ in 0..3 {
            assert_eq!(t.take(key(1), t0), Some(true));
        }
        assert_eq!(t.take(key(1), t0), Some(false));
        assert_eq!(t.wait(key(1), t0), Duration::from_secs(10));
        assert_eq!(
            t.take(key(2), t0),
            Some(true),
            "another address has its own bucket"
        );
        assert_eq!(t.take(key(1), t0 + Duration::from_secs(9)), Some(false));
        assert_eq!(t.take(key(1), t0 + Duration::from_secs(10)), Some(true));
        assert_eq!(
            t.wait(key(3), t0),
            Duration::ZERO,
            "an unknown address waits for nothing"
        );
    }
}
