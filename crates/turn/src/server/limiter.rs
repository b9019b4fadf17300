//! Authentication failures per client address, in a table of fixed size
//! (a count-min sketch of leaky buckets), and the key a client address is
//! counted under (an IPv4 address, or an IPv6 prefix).
//!
//! The table does not grow with the number of addresses, so a flood of
//! failures from many addresses costs no memory; what it costs is
//! precision: two addresses that share both their cells are counted
//! together. Each address has a cell in each of two rows, picked by a hash
//! keyed with a secret (so that an attacker cannot aim at someone else's
//! cells), and its count is the lower of the two: an address is only
//! throttled by mistake when both of its cells are full of other
//! addresses' failures. Updates are conservative (a cell is raised only to
//! the new estimate), which keeps the overcount small.
//!
//! Only failures are counted, and only what carries credentials is
//! throttled: a client that never fails is never slowed down by this
//! table, whatever it holds (unless both its cells are full of others).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

use super::config::AuthLimit;

/// Cells per row.
const WIDTH: usize = 16384;
/// Rows (hash functions).
const ROWS: usize = 2;
/// Fixed point: one failure.
const ONE: u64 = 1000;

/// The key a client address is counted under: an IPv4 address, or the
/// first `ipv6_prefix` bits of an IPv6 address; an IPv4-mapped IPv6
/// address counts as its IPv4 address.
pub(super) fn addr_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u32::from(ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

/// One leaky bucket: its level (failures × [`ONE`]) at `at` (tenths of a
/// second since the limiter's epoch).
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    level: u32,
    at: u32,
}

/// The failures of every client address, in [`ROWS`] × [`WIDTH`] cells
/// (256 KiB, allocated at the first failure).
#[derive(Debug)]
pub(super) struct AuthLimiter {
    limit: AuthLimit,
    ipv6_prefix: u8,
    epoch: Instant,
    keys: [u64; ROWS],
    cells: Vec<Cell>,
}

impl AuthLimiter {
    /// A limiter whose hashes are keyed with `keys` (secret, random).
    pub(super) fn new(limit: AuthLimit, ipv6_prefix: u8, epoch: Instant, keys: [u64; 2]) -> Self {
        AuthLimiter {
            limit,
            ipv6_prefix,
            epoch,
            keys,
            cells: Vec::new(),
        }
    }

    fn tick(&self, now: Instant) -> u32 {
        let ds = now.saturating_duration_since(self.epoch).as_millis() / 100;
        u32::try_from(ds).unwrap_or(u32::MAX)
    }

    fn index(&self, row: usize, ip: IpAddr) -> usize {
        let mut h = DefaultHasher::new();
        self.keys[row].hash(&mut h);
        addr_key(ip, self.ipv6_prefix).hash(&mut h);
        row * WIDTH + (h.finish() % WIDTH as u64) as usize
    }

    /// A cell's level at `tick`, drained at the sustained rate.
    fn level(&self, c: Cell, tick: u32) -> u64 {
        let tenths = u64::from(tick.saturating_sub(c.at));
        let drained = tenths * u64::from(self.limit.per_minute) * ONE / 600;
        u64::from(c.level).saturating_sub(drained)
    }

    fn estimate(&self, ip: IpAddr, tick: u32) -> u64 {
        (0..ROWS)
            .filter_map(|r| self.cells.get(self.index(r, ip)))
            .map(|c| self.level(*c, tick))
            .min()
            .unwrap_or(0)
    }

    /// Whether `ip` has no room for one more failure: its requests with
    /// credentials are then dropped unchecked.
    pub(super) fn throttled(&self, now: Instant, ip: IpAddr) -> bool {
        !self.cells.is_empty()
            && self.estimate(ip, self.tick(now)) + ONE > u64::from(self.limit.burst) * ONE
    }

    /// Count one failure of `ip`.
    pub(super) fn failed(&mut self, now: Instant, ip: IpAddr) {
        if self.cells.is_empty() {
            self.cells = vec![Cell::default(); ROWS * WIDTH];
        }
        let tick = self.tick(now);
        // At most one failure past the burst is remembered: a throttled
        // address is not checked, so it cannot run up a debt of hours.
        let cap = (u64::from(self.limit.burst) + 1) * ONE;
        let new = (self.estimate(ip, tick) + ONE).min(cap);
        for r in 0..ROWS {
            let i = self.index(r, ip);
            let level = self.cells.get(i).map_or(0, |c| self.level(*c, tick));
            if let Some(c) = self.cells.get_mut(i) {
                c.level = u32::try_from(level.max(new)).unwrap_or(u32::MAX);
                c.at = tick;
            }
        }
    }

    /// Bytes the table holds.
    #[cfg(test)]
    pub(super) fn memory(&self) -> usize {
        self.cells.capacity() * std::mem::size_of::<Cell>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_throttled_after_its_burst_and_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut l = AuthLimiter::new(AuthLimit::new(5, 60), 64, t0, [1, 2]);
        let a = ip("192.0.2.1");
        for _ in 0..5 {
            assert!(!l.throttled(t0, a));
            l.failed(t0, a);
        }
        assert!(l.throttled(t0, a));
        // Another address is not.
        assert!(!l.throttled(t0, ip("192.0.2.2")));
        // 60 a minute: one more a second.
        assert!(l.throttled(t0 + Duration::from_millis(900), a));
        let t1 = t0 + Duration::from_millis(1000);
        assert!(!l.throttled(t1, a));
        l.failed(t1, a);
        assert!(l.throttled(t1, a));
        // Quiet for the burst's time: all of it back.
        let t2 = t1 + Duration::from_secs(5);
        for _ in 0..5 {
            assert!(!l.throttled(t2, a));
            l.failed(t2, a);
        }
        assert!(l.throttled(t2, a));
    }

    #[test]
    fn an_ipv6_prefix_counts_as_one_address() {
        let t0 = Instant::now();
        let mut l = AuthLimiter::new(AuthLimit::new(3, 60), 64, t0, [3, 4]);
        for k in 0..3 {
            l.failed(t0, ip(&format!("2001:db8:1:2::{k}")));
        }
        assert!(l.throttled(t0, ip("2001:db8:1:2::ffff")));
        assert!(!l.throttled(t0, ip("2001:db8:1:3::1")));
        assert_eq!(addr_key(ip("::ffff:192.0.2.9"), 64), ip("192.0.2.9"));
    }

    #[test]
    fn the_table_stays_fixed_whatever_the_number_of_addresses() {
        let t0 = Instant::now();
        let mut l = AuthLimiter::new(AuthLimit::default(), 64, t0, [5, 6]);
        assert_eq!(l.memory(), 0, "nothing until the first failure");
        l.failed(t0, ip("10.0.0.1"));
        let size = l.memory();
        assert_eq!(size, ROWS * WIDTH * 8);
        for k in 0..100_000u32 {
            let b = k.to_be_bytes();
            l.failed(t0, IpAddr::from([10, b[1], b[2], b[3]]));
        }
        assert_eq!(l.memory(), size);
    }

    #[test]
    fn failures_from_many_addresses_rarely_throttle_a_bystander() {
        // 2000 addresses each at their limit fill some cells in each row;
        // an address that never failed is throttled only when both of its
        // cells are full.
        let t0 = Instant::now();
        let limit = AuthLimit::new(5, 60);
        let mut l = AuthLimiter::new(limit, 64, t0, [7, 8]);
        for k in 0..2000u32 {
            let b = k.to_be_bytes();
            let a = IpAddr::from([10, 1, b[2], b[3]]);
            for _ in 0..5 {
                l.failed(t0, a);
            }
        }
        let bystanders = (0..1000u32)
            .filter(|k| {
                let b = k.to_be_bytes();
                l.throttled(t0, IpAddr::from([172, 16, b[2], b[3]]))
            })
            .count();
        // Each row is about 11.5 % full (1 - e^(-2000/16384)): both about
        // 1.3 %.
        assert!(bystanders < 40, "{bystanders} of 1000 throttled");
    }
}
