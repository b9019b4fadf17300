//! Per-address connection limits, without I/O: who may open one more
//! connection, counted by client address (an IPv4 address, or an IPv6
//! prefix), with a share of the slots kept for light users so that a flood
//! from one source does not lock everyone else out.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// What the per-address limits count by: an IPv4 address, or the first
/// [`AddrLimits::ipv6_prefix`] bits of an IPv6 address (a host usually owns a
/// whole /64). IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, as a
/// dual-stack listener reports IPv4 clients) count as their IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrKey(IpAddr);

impl AddrKey {
    /// The key of `ip`, keeping `ipv6_prefix` bits of an IPv6 address
    /// (clamped to 0..=128).
    pub fn new(ip: IpAddr, ipv6_prefix: u8) -> AddrKey {
        match ip {
            IpAddr::V4(v4) => AddrKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey(IpAddr::V4(v4)),
                None => {
                    let bits = u32::from(ipv6_prefix.min(128));
                    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                    AddrKey(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)))
                }
            },
        }
    }

    /// The address (an IPv6 one with the bits past the prefix zeroed).
    pub fn ip(&self) -> IpAddr {
        self.0
    }
}

impl std::fmt::Display for AddrKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The limits an [`AddrTable`] enforces. `AddrLimits::default()` suits a
/// public server.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrLimits {
    /// Most connections open at once, from every address together (TCP
    /// connections: pages being fetched, handshakes under way and
    /// WebSockets). Default 10 000.
    pub max_connections: usize,
    /// Most connections open at once from one address (key). Default 64.
    pub max_per_addr: usize,
    /// The IPv6 prefix length counted as one address. Default 64.
    pub ipv6_prefix: u8,
    /// Percentage of [`max_connections`](AddrLimits::max_connections) kept
    /// for light users (rounded up): once the other slots are taken, only an
    /// address holding fewer than
    /// [`reserve_below`](AddrLimits::reserve_below) connections gets one.
    /// Default 10; 0 keeps none.
    pub reserved_percent: u8,
    /// An address may take a reserved slot while it holds fewer than this
    /// many connections. Default 4.
    pub reserve_below: usize,
}

impl Default for AddrLimits {
    fn default() -> AddrLimits {
        AddrLimits {
            max_connections: 10_000,
            max_per_addr: 64,
            ipv6_prefix: 64,
            reserved_percent: 10,
            reserve_below: 4,
        }
    }
}

impl AddrLimits {
    /// Limits with the defaults listed on each field.
    pub fn new() -> AddrLimits {
        AddrLimits::default()
    }

    /// Sets [`max_connections`](AddrLimits::max_connections).
    pub fn with_max_connections(mut self, n: usize) -> AddrLimits {
        self.max_connections = n;
        self
    }

    /// Sets [`max_per_addr`](AddrLimits::max_per_addr).
    pub fn with_max_per_addr(mut self, n: usize) -> AddrLimits {
        self.max_per_addr = n;
        self
    }

    /// Sets [`ipv6_prefix`](AddrLimits::ipv6_prefix).
    pub fn with_ipv6_prefix(mut self, bits: u8) -> AddrLimits {
        self.ipv6_prefix = bits;
        self
    }

    /// Sets [`reserved_percent`](AddrLimits::reserved_percent) and
    /// [`reserve_below`](AddrLimits::reserve_below).
    pub fn with_reserve(mut self, percent: u8, below: usize) -> AddrLimits {
        self.reserved_percent = percent;
        self.reserve_below = below;
        self
    }

    /// The slots kept for light users.
    pub fn reserved_slots(&self) -> usize {
        let pct = usize::from(self.reserved_percent.min(100));
        (self.max_connections.saturating_mul(pct)).div_ceil(100)
    }

    /// Checks that every limit can take effect; the error says which does
    /// not and how to fix it.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.max_connections == 0 || self.max_per_addr == 0 {
            return Err("max_connections and max_per_addr must be at least 1");
        }
        if self.ipv6_prefix == 0 || self.ipv6_prefix > 128 {
            return Err("ipv6_prefix must be 1 to 128 (64 counts a host's /64 as one address)");
        }
        if self.reserved_percent > 90 {
            return Err("reserved_percent must be at most 90: the reserve would leave (almost) no slot for anyone");
        }
        if self.reserved_percent > 0 && self.reserve_below == 0 {
            return Err("reserve_below must be at least 1 when reserved_percent is set, or no address could use the reserve; set reserved_percent = 0 to keep no reserve");
        }
        if self.reserved_percent > 0 && self.reserve_below > self.max_per_addr {
            return Err("reserve_below above max_per_addr cannot take effect: lower it to at most max_per_addr");
        }
        Ok(())
    }
}

/// Why an [`AddrTable`] refused a connection.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The address holds [`AddrLimits::max_per_addr`] connections already.
    #[error("too many connections from this address")]
    PerAddress,
    /// Only reserved slots are left, and this address holds
    /// [`AddrLimits::reserve_below`] connections or more.
    #[error("the server is busy; its remaining slots are kept for other addresses")]
    Reserved,
    /// [`AddrLimits::max_connections`] are open.
    #[error("too many connections")]
    Full,
}

/// Counts of an [`AddrTable`]'s decisions.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddrStats {
    /// Connections admitted.
    pub admitted: u64,
    /// Of those, admitted into a reserved slot.
    pub admitted_reserved: u64,
    /// Refused: [`Refusal::PerAddress`].
    pub refused_per_addr: u64,
    /// Refused: [`Refusal::Reserved`].
    pub refused_reserved: u64,
    /// Refused: [`Refusal::Full`].
    pub refused_full: u64,
}

/// The open connections by address, and the admission rule, as a plain
/// state machine: [`admit`](AddrTable::admit) when a connection arrives,
/// [`release`](AddrTable::release) with the returned key when it closes.
///
/// ```
/// use std::net::IpAddr;
/// use p2p_signaling::{AddrLimits, AddrTable, Refusal};
///
/// let limits = AddrLimits::new().with_max_connections(10).with_max_per_addr(8).with_reserve(20, 2);
/// let mut table = AddrTable::new(limits);
/// let flood: IpAddr = "192.0.2.1".parse().unwrap();
/// let held: Vec<_> = (0..8).map(|_| table.admit(flood).unwrap()).collect();
/// // 8 of 10 taken: the last two are kept for light users.
/// assert_eq!(table.admit(flood), Err(Refusal::PerAddress));
/// let other: IpAddr = "198.51.100.7".parse().unwrap();
/// let key = table.admit(other).unwrap();
/// table.release(key);
/// # drop(held);
/// ```
#[derive(Debug)]
pub struct AddrTable {
    limits: AddrLimits,
    open: usize,
    by_addr: HashMap<AddrKey, usize>,
    stats: AddrStats,
}

impl AddrTable {
    /// An empty table.
    pub fn new(limits: AddrLimits) -> AddrTable {
        AddrTable {
            limits,
            open: 0,
            by_addr: HashMap::new(),
            stats: AddrStats::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &AddrLimits {
        &self.limits
    }

    /// The key `ip` is counted under.
    pub fn key(&self, ip: IpAddr) -> AddrKey {
        AddrKey::new(ip, self.limits.ipv6_prefix)
    }

    /// Admit one more connection from `ip`, or say why not. On success the
    /// connection is counted until [`release`](AddrTable::release) is
    /// called with the returned key.
    pub fn admit(&mut self, ip: IpAddr) -> Result<AddrKey, Refusal> {
        let key = self.key(ip);
        let held = self.by_addr.get(&key).copied().unwrap_or(0);
        let refusal = if self.open >= self.limits.max_connections {
            Some(Refusal::Full)
        } else if held >= self.limits.max_per_addr {
            Some(Refusal::PerAddress)
        } else if self.open >= self.unreserved() && held >= self.limits.reserve_below {
            Some(Refusal::Reserved)
        } else {
            None
        };
        if let Some(r) = refusal {
            match r {
                Refusal::PerAddress => self.stats.refused_per_addr += 1,
                Refusal::Reserved => self.stats.refused_reserved += 1,
                Refusal::Full => self.stats.refused_full += 1,
            }
            return Err(r);
        }
        if self.open >= self.unreserved() {
            self.stats.admitted_reserved += 1;
        }
        self.stats.admitted += 1;
        self.open += 1;
        *self.by_addr.entry(key).or_insert(0) += 1;
        Ok(key)
    }

    /// A connection admitted under `key` closed.
    pub fn release(&mut self, key: AddrKey) {
        if let Some(n) = self.by_addr.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.by_addr.remove(&key);
            }
            self.open = self.open.saturating_sub(1);
        }
    }

    /// Connections open.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Distinct addresses (keys) with a connection open.
    pub fn addresses(&self) -> usize {
        self.by_addr.len()
    }

    /// Connections open from `ip`'s key.
    pub fn held_by(&self, ip: IpAddr) -> usize {
        self.by_addr.get(&self.key(ip)).copied().unwrap_or(0)
    }

    /// What was admitted and refused so far.
    pub fn stats(&self) -> AddrStats {
        self.stats
    }

    fn unreserved(&self) -> usize {
        self.limits
            .max_connections
            .saturating_sub(self.limits.reserved_slots())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ipv6_addresses_of_one_prefix_share_a_key_and_mapped_ipv4_is_ipv4() {
        let a = AddrKey::new(ip("2001:db8:1:2:aaaa::1"), 64);
        let b = AddrKey::new(ip("2001:db8:1:2:bbbb::2"), 64);
        let c = AddrKey::new(ip("2001:db8:1:3::1"), 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.ip(), ip("2001:db8:1:2::"));
        assert_eq!(AddrKey::new(ip("2001:db8::1"), 128).ip(), ip("2001:db8::1"));
        assert_eq!(AddrKey::new(ip("2001:db8::1"), 0).ip(), ip("::"));
        assert_eq!(
            AddrKey::new(ip("::ffff:192.0.2.9"), 64),
            AddrKey::new(ip("192.0.2.9"), 64)
        );
        assert_ne!(
            AddrKey::new(ip("192.0.2.9"), 64),
            AddrKey::new(ip("192.0.2.10"), 64)
        );
    }

    #[test]
    fn one_address_is_held_to_its_share_and_others_still_get_in() {
        let limits = AddrLimits::new()
            .with_max_connections(100)
            .with_max_per_addr(3)
            .with_reserve(0, 1);
        let mut t = AddrTable::new(limits);
        for _ in 0..3 {
            t.admit(ip("192.0.2.1"))
                .expect("under the per-address limit");
        }
        assert_eq!(t.admit(ip("192.0.2.1")), Err(Refusal::PerAddress));
        assert!(t.admit(ip("192.0.2.2")).is_ok());
        assert_eq!(t.open(), 4);
        assert_eq!(t.addresses(), 2);
        assert_eq!(t.stats().refused_per_addr, 1);
    }

    #[test]
    fn releasing_frees_the_slot_and_forgets_the_address() {
        let limits = AddrLimits::new().with_max_connections(1).with_reserve(0, 1);
        let mut t = AddrTable::new(limits);
        let k = t.admit(ip("192.0.2.1")).expect("first");
        assert_eq!(t.admit(ip("192.0.2.2")), Err(Refusal::Full));
        t.release(k);
        assert_eq!(t.addresses(), 0);
        assert!(t.admit(ip("192.0.2.2")).is_ok());
        // Releasing a key that holds nothing changes nothing.
        t.release(AddrKey::new(ip("203.0.113.1"), 64));
        assert_eq!(t.open(), 1);
    }

    #[test]
    fn the_reserve_admits_light_addresses_and_refuses_the_heavy_ones() {
        // 20 slots, 25 % (5) reserved for addresses holding fewer than 2.
        let limits = AddrLimits::new()
            .with_max_connections(20)
            .with_max_per_addr(10)
            .with_reserve(25, 2);
        let mut t = AddrTable::new(limits);
        // Two flooders take the 15 unreserved slots between them.
        for i in 0..15 {
            let from = if i % 2 == 0 { "192.0.2.1" } else { "192.0.2.2" };
            t.admit(ip(from)).expect("unreserved slot");
        }
        assert_eq!(t.admit(ip("192.0.2.1")), Err(Refusal::Reserved));
        assert_eq!(t.admit(ip("192.0.2.2")), Err(Refusal::Reserved));
        // Light users get the reserve, one slot each beyond their first
        // only while they hold fewer than two.
        assert!(t.admit(ip("198.51.100.1")).is_ok());
        assert!(t.admit(ip("198.51.100.1")).is_ok());
        assert_eq!(t.admit(ip("198.51.100.1")), Err(Refusal::Reserved));
        for k in 2..5 {
            assert!(t.admit(ip(&format!("198.51.100.{k}"))).is_ok());
        }
        assert_eq!(t.open(), 20);
        assert_eq!(t.admit(ip("198.51.100.9")), Err(Refusal::Full));
        let s = t.stats();
        assert_eq!(s.admitted, 20);
        assert_eq!(s.admitted_reserved, 5);
        assert_eq!(s.refused_reserved, 3);
        assert_eq!(s.refused_full, 1);
    }

    #[test]
    fn the_reserve_rounds_up_to_a_whole_slot() {
        let l = AddrLimits::new()
            .with_max_connections(5)
            .with_reserve(10, 1);
        assert_eq!(l.reserved_slots(), 1);
        assert_eq!(AddrLimits::new().with_reserve(0, 1).reserved_slots(), 0);
        assert_eq!(AddrLimits::default().reserved_slots(), 1000);
    }

    #[test]
    fn limits_that_cannot_take_effect_are_refused() {
        let ok = AddrLimits::default();
        assert_eq!(ok.validate(), Ok(()));
        let bad = [
            ok.clone().with_max_connections(0),
            ok.clone().with_max_per_addr(0),
            ok.clone().with_ipv6_prefix(0),
            ok.clone().with_ipv6_prefix(129),
            ok.clone().with_reserve(91, 1),
            ok.clone().with_reserve(10, 0),
            ok.clone().with_max_per_addr(2).with_reserve(10, 3),
        ];
        for l in bad {
            assert!(l.validate().is_err(), "{l:?}");
        }
        assert_eq!(ok.with_reserve(0, 0).validate(), Ok(()));
    }
}
