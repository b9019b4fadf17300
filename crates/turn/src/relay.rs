//! Relayed transport addresses: the allocator trait the server takes them
//! from, an in-memory allocator over a port range, and the per-allocation
//! bandwidth limiter.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use p2p_stun::attr::AddressFamily;

/// Hands out relayed transport addresses. Synchronous: the daemon's
/// implementation binds a real non-blocking UDP socket per address (and
/// reads it, feeding what arrives to the server with `local` = that
/// address); tests use [`MemoryRelayAllocator`].
pub trait RelayAllocator {
    /// Whether addresses of `family` can be had at all (a server without an
    /// IPv6 relay address answers 440, not 508).
    fn supports(&self, family: AddressFamily) -> bool;

    /// A free address of `family`; with `even`, an even port; with
    /// `reserve_next` (only with `even`), also hold port + 1 for a later
    /// [`RelayAllocator::allocate_token`]. `None` when none is free.
    fn allocate(
        &mut self,
        family: AddressFamily,
        even: bool,
        reserve_next: bool,
    ) -> Option<SocketAddr>;

    /// Turn the address held by an earlier `allocate(.., reserve_next = true)`
    /// into an allocated one. `None` if it is no longer held.
    fn allocate_token(&mut self, reserved: SocketAddr) -> Option<SocketAddr>;

    /// Give back an allocated or held address (UDP or TCP).
    fn release(&mut self, addr: SocketAddr);

    /// A free TCP relayed address of `family` for an RFC 6062 allocation:
    /// the daemon binds a listening socket there (and accepts peers on it).
    /// `None` when none is free. The default supports no TCP relaying.
    fn allocate_tcp(&mut self, family: AddressFamily) -> Option<SocketAddr> {
        let _ = family;
        None
    }

    /// Whether TCP relayed addresses (RFC 6062) can be had at all (442
    /// otherwise). Default false.
    fn supports_tcp(&self) -> bool {
        false
    }
}

impl<T: RelayAllocator + ?Sized> RelayAllocator for Box<T> {
    fn supports(&self, family: AddressFamily) -> bool {
        (**self).supports(family)
    }
    fn allocate(
        &mut self,
        family: AddressFamily,
        even: bool,
        reserve_next: bool,
    ) -> Option<SocketAddr> {
        (**self).allocate(family, even, reserve_next)
    }
    fn allocate_token(&mut self, reserved: SocketAddr) -> Option<SocketAddr> {
        (**self).allocate_token(reserved)
    }
    fn release(&mut self, addr: SocketAddr) {
        (**self).release(addr)
    }
    fn allocate_tcp(&mut self, family: AddressFamily) -> Option<SocketAddr> {
        (**self).allocate_tcp(family)
    }
    fn supports_tcp(&self) -> bool {
        (**self).supports_tcp()
    }
}

/// An allocator over a port range on one IPv4 and/or one IPv6 address, with
/// no sockets: for tests and the virtual network. Ports are handed out in
/// order from a moving cursor, so runs are deterministic. UDP and TCP
/// relayed addresses share the range.
#[derive(Debug, Clone)]
pub struct MemoryRelayAllocator {
    v4: Option<IpAddr>,
    v6: Option<IpAddr>,
    ports: RangeInclusive<u16>,
    used: BTreeSet<SocketAddr>,
    held: BTreeSet<SocketAddr>,
    cursor: u16,
}

impl MemoryRelayAllocator {
    /// Addresses on `ips` (at most one per family counts) in `ports`.
    pub fn new(ips: impl IntoIterator<Item = IpAddr>, ports: RangeInclusive<u16>) -> Self {
        let mut v4 = None;
        let mut v6 = None;
        for ip in ips {
            match ip {
                IpAddr::V4(_) => v4 = v4.or(Some(ip)),
                IpAddr::V6(_) => v6 = v6.or(Some(ip)),
            }
        }
        let cursor = *ports.start();
        MemoryRelayAllocator {
            v4,
            v6,
            ports,
            used: BTreeSet::new(),
            held: BTreeSet::new(),
            cursor,
        }
    }

    /// Addresses in use or held.
    pub fn in_use(&self) -> usize {
        self.used.len() + self.held.len()
    }

    fn ip(&self, family: AddressFamily) -> Option<IpAddr> {
        match family {
            AddressFamily::V4 => self.v4,
            AddressFamily::V6 => self.v6,
        }
    }

    fn free(&self, a: SocketAddr) -> bool {
        !self.used.contains(&a) && !self.held.contains(&a)
    }
}

impl RelayAllocator for MemoryRelayAllocator {
    fn supports(&self, family: AddressFamily) -> bool {
        self.ip(family).is_some()
    }

    fn allocate(
        &mut self,
        family: AddressFamily,
        even: bool,
        reserve_next: bool,
    ) -> Option<SocketAddr> {
        let ip = self.ip(family)?;
        let (lo, hi) = (u32::from(*self.ports.start()), u32::from(*self.ports.end()));
        let span = hi.checked_sub(lo)? + 1;
        let even = even || reserve_next;
        for i in 0..span {
            let port = (lo + (u32::from(self.cursor) - lo + i) % span) as u16;
            if even && port % 2 != 0 {
                continue;
            }
            let a = SocketAddr::new(ip, port);
            if !self.free(a) {
                continue;
            }
            let next = if reserve_next {
                let Some(p) = port.checked_add(1).filter(|p| self.ports.contains(p)) else {
                    continue;
                };
                let n = SocketAddr::new(ip, p);
                if !self.free(n) {
                    continue;
                }
                Some(n)
            } else {
                None
            };
            self.used.insert(a);
            if let Some(n) = next {
                self.held.insert(n);
            }
            let after = u32::from(port) + if reserve_next { 2 } else { 1 };
            self.cursor = if after > hi { lo as u16 } else { after as u16 };
            return Some(a);
        }
        None
    }

    fn allocate_token(&mut self, reserved: SocketAddr) -> Option<SocketAddr> {
        if self.held.remove(&reserved) {
            self.used.insert(reserved);
            Some(reserved)
        } else {
            None
        }
    }

    fn release(&mut self, addr: SocketAddr) {
        self.used.remove(&addr);
        self.held.remove(&addr);
    }

    /// From the same port range and cursor as UDP addresses.
    fn allocate_tcp(&mut self, family: AddressFamily) -> Option<SocketAddr> {
        self.allocate(family, false, false)
    }

    fn supports_tcp(&self) -> bool {
        true
    }
}

/// A token bucket in bytes, refilled at `rate` bytes per second up to
/// `burst` bytes, on the caller's clock.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: u64,
    /// Capacity, in byte-nanoseconds.
    cap: u128,
    /// Tokens, in byte-nanoseconds (bytes × 10⁹), so refills are exact.
    tokens: u128,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(now: Instant, rate: u64, burst: u64) -> Self {
        let cap = u128::from(burst.max(1)) * 1_000_000_000;
        TokenBucket {
            rate,
            cap,
            tokens: cap,
            last: now,
        }
    }

    /// Take `bytes` if there are enough tokens.
    pub(crate) fn take(&mut self, now: Instant, bytes: usize) -> bool {
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
    fn memory_allocator_even_ports_and_reservations() {
        let mut a = MemoryRelayAllocator::new(["203.0.113.1".parse().unwrap()], 50000..=50005);
        assert!(!a.supports(AddressFamily::V6));
        assert_eq!(a.allocate(AddressFamily::V6, false, false), None);
        let x = a.allocate(AddressFamily::V4, false, false).unwrap();
        assert_eq!(x.port(), 50000);
        let e = a.allocate(AddressFamily::V4, true, true).unwrap();
        assert_eq!(e.port(), 50002);
        let held = SocketAddr::new(e.ip(), 50003);
        assert_eq!(
            a.allocate(AddressFamily::V4, false, false).unwrap().port(),
            50004
        );
        assert_eq!(
            a.allocate(AddressFamily::V4, false, false).unwrap().port(),
            50005
        );
        assert_eq!(
            a.allocate(AddressFamily::V4, false, false).unwrap().port(),
            50001
        );
        assert_eq!(a.allocate(AddressFamily::V4, false, false), None);
        assert_eq!(a.allocate_token(held), Some(held));
        assert_eq!(a.allocate_token(held), None);
        a.release(x);
        assert_eq!(a.allocate(AddressFamily::V4, false, false), Some(x));
        assert_eq!(a.in_use(), 6);
    }

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
