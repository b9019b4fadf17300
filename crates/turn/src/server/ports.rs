//! The pool of relayed transport addresses: which IP per family, which
//! ports are taken, held for a reservation, or refused by the OS. Pure
//! bookkeeping: binding a socket is the driver's job, asked for with a
//! [`SocketRequest`](super::SocketRequest).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use p2p_stun::attr::AddressFamily;

/// How long a port the OS refused to bind (another program holds it) is
/// skipped before it is tried again.
pub(super) const REFUSED_FOR: Duration = Duration::from_secs(60);

/// Relayed addresses on one IPv4 and/or one IPv6 address over a port range.
/// UDP and TCP relayed addresses share the range.
#[derive(Debug, Clone)]
pub(super) struct PortPool {
    /// Index 0: IPv4, 1: IPv6.
    ips: [Option<IpAddr>; 2],
    lo: u16,
    hi: u16,
    /// Per family, one bit per port of the range: handed out (being bound,
    /// bound, or held for a reservation). At most 8 KiB a family, whatever
    /// the number of allocations.
    taken: [Vec<u64>; 2],
    /// How many bits are set.
    in_use: usize,
    /// Addresses the OS refused to bind, skipped until the instant.
    refused: HashMap<SocketAddr, Instant>,
}

pub(super) fn family_index(family: AddressFamily) -> usize {
    match family {
        AddressFamily::V4 => 0,
        AddressFamily::V6 => 1,
    }
}

impl PortPool {
    /// Addresses on `ips` (the first of each family counts) in `ports`.
    pub(super) fn new(ips: &[IpAddr], ports: RangeInclusive<u16>) -> Self {
        let v4 = ips.iter().copied().find(IpAddr::is_ipv4);
        let v6 = ips.iter().copied().find(IpAddr::is_ipv6);
        let (lo, hi) = (*ports.start(), *ports.end());
        let words = ((u32::from(hi) + 1).saturating_sub(u32::from(lo)) as usize).div_ceil(64);
        let bits = |ip: Option<IpAddr>| {
            if ip.is_some() {
                vec![0; words]
            } else {
                Vec::new()
            }
        };
        PortPool {
            ips: [v4, v6],
            lo,
            hi,
            taken: [bits(v4), bits(v6)],
            in_use: 0,
            refused: HashMap::new(),
        }
    }

    /// Where `a`'s bit is: (family, word, mask); `None` for an address
    /// that is not the pool's.
    fn bit(&self, a: SocketAddr) -> Option<(usize, usize, u64)> {
        let k = usize::from(a.is_ipv6());
        if self.ips[k] != Some(a.ip()) || a.port() < self.lo || a.port() > self.hi {
            return None;
        }
        let i = usize::from(a.port() - self.lo);
        Some((k, i / 64, 1 << (i % 64)))
    }

    fn set(&mut self, a: SocketAddr, on: bool) {
        let Some((k, w, m)) = self.bit(a) else {
            return;
        };
        let Some(word) = self.taken[k].get_mut(w) else {
            return;
        };
        let was = *word & m != 0;
        if on {
            *word |= m;
        } else {
            *word &= !m;
        }
        match (was, on) {
            (false, true) => self.in_use += 1,
            (true, false) => self.in_use -= 1,
            _ => {}
        }
    }

    /// Whether addresses of `family` can be had at all (440 otherwise).
    pub(super) fn supports(&self, family: AddressFamily) -> bool {
        self.ips[family_index(family)].is_some()
    }

    /// How many ports the range holds (0 for an empty range).
    pub(super) fn span(&self) -> u32 {
        (u32::from(self.hi) + 1).saturating_sub(u32::from(self.lo))
    }

    fn free(&self, now: Instant, a: SocketAddr) -> bool {
        !self.is_taken(a) && self.refused.get(&a).is_none_or(|until| now >= *until)
    }

    /// Take a free address of `family`, probing the range from port
    /// `lo + start % span`; with `even`, an even port; with `reserve_next`,
    /// an even port whose successor is free too, taken as well (returned
    /// second). `None` when none is free.
    pub(super) fn take(
        &mut self,
        now: Instant,
        family: AddressFamily,
        even: bool,
        reserve_next: bool,
        start: u32,
    ) -> Option<(SocketAddr, Option<SocketAddr>)> {
        let ip = self.ips[family_index(family)]?;
        let span = self.span();
        if span == 0 {
            return None;
        }
        let lo = u32::from(self.lo);
        let even = even || reserve_next;
        for i in 0..span {
            let port = (lo + (start % span + i) % span) as u16;
            if even && port % 2 != 0 {
                continue;
            }
            let a = SocketAddr::new(ip, port);
            if !self.free(now, a) {
                continue;
            }
            let next = if reserve_next {
                let Some(p) = port.checked_add(1).filter(|p| *p <= self.hi) else {
                    continue;
                };
                let n = SocketAddr::new(ip, p);
                if !self.free(now, n) {
                    continue;
                }
                Some(n)
            } else {
                None
            };
            self.refused.remove(&a);
            self.set(a, true);
            if let Some(n) = next {
                self.refused.remove(&n);
                self.set(n, true);
            }
            return Some((a, next));
        }
        None
    }

    /// Give back an address (UDP, TCP or held).
    pub(super) fn release(&mut self, addr: SocketAddr) {
        self.set(addr, false);
    }

    /// The OS refused to bind `addr`: give it back and skip it for
    /// [`REFUSED_FOR`].
    pub(super) fn refuse(&mut self, now: Instant, addr: SocketAddr) {
        self.set(addr, false);
        // Forget marks that ran out, so that the map stays bounded by the
        // ports refused in the last minute.
        self.refused.retain(|_, until| now < *until);
        self.refused.insert(addr, now + REFUSED_FOR);
    }

    /// Whether `addr` is taken (being bound, bound, or held).
    pub(super) fn is_taken(&self, addr: SocketAddr) -> bool {
        self.bit(addr)
            .and_then(|(k, w, m)| self.taken[k].get(w).map(|word| word & m != 0))
            .unwrap_or(false)
    }

    /// Addresses taken.
    pub(super) fn in_use(&self) -> usize {
        self.in_use
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(port: u16) -> SocketAddr {
        SocketAddr::new("203.0.113.1".parse().unwrap(), port)
    }

    #[test]
    fn the_pool_hands_out_even_ports_and_reservations_and_takes_them_back() {
        let t0 = Instant::now();
        let mut a = PortPool::new(&["203.0.113.1".parse().unwrap()], 50000..=50005);
        assert!(!a.supports(AddressFamily::V6));
        assert_eq!(a.take(t0, AddressFamily::V6, false, false, 0), None);
        let x = a.take(t0, AddressFamily::V4, false, false, 0).unwrap();
        assert_eq!(x, (v4(50000), None));
        let e = a.take(t0, AddressFamily::V4, true, true, 0).unwrap();
        assert_eq!(e, (v4(50002), Some(v4(50003))));
        let next = |a: &mut PortPool| a.take(t0, AddressFamily::V4, false, false, 0);
        assert_eq!(next(&mut a), Some((v4(50001), None)));
        assert_eq!(next(&mut a), Some((v4(50004), None)));
        assert_eq!(next(&mut a), Some((v4(50005), None)));
        assert_eq!(next(&mut a), None);
        assert_eq!(a.in_use(), 6);
        a.release(v4(50000));
        assert!(!a.is_taken(v4(50000)));
        assert_eq!(next(&mut a), Some((v4(50000), None)));
    }

    #[test]
    fn the_probe_starts_where_asked_and_wraps_around() {
        let t0 = Instant::now();
        let mut a = PortPool::new(&["203.0.113.1".parse().unwrap()], 50000..=50003);
        let at = |a: &mut PortPool, start| a.take(t0, AddressFamily::V4, false, false, start);
        assert_eq!(at(&mut a, 3), Some((v4(50003), None)));
        assert_eq!(at(&mut a, 3 + 4 * 1000), Some((v4(50000), None)));
        // An even port with its successor free: 50002 (50000 is taken).
        assert_eq!(
            a.take(t0, AddressFamily::V4, true, true, 0),
            None,
            "50003 is taken: no pair"
        );
        assert_eq!(
            a.take(t0, AddressFamily::V4, true, false, 1),
            Some((v4(50002), None))
        );
    }

    #[test]
    fn a_refused_port_is_skipped_for_a_while_then_tried_again() {
        let t0 = Instant::now();
        let mut a = PortPool::new(&["203.0.113.1".parse().unwrap()], 50000..=50001);
        let (x, _) = a.take(t0, AddressFamily::V4, false, false, 0).unwrap();
        a.refuse(t0, x);
        assert!(!a.is_taken(x));
        let at = |a: &mut PortPool, now| a.take(now, AddressFamily::V4, false, false, 0);
        assert_eq!(at(&mut a, t0), Some((v4(50001), None)));
        assert_eq!(
            at(&mut a, t0 + REFUSED_FOR / 2),
            None,
            "refused, the other taken"
        );
        assert_eq!(at(&mut a, t0 + REFUSED_FOR), Some((x, None)));
    }

    #[test]
    fn addresses_outside_the_pool_are_never_taken() {
        let t0 = Instant::now();
        let mut a = PortPool::new(
            &[
                "203.0.113.1".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            ],
            50000..=50130,
        );
        let (v6, _) = a.take(t0, AddressFamily::V6, false, false, 129).unwrap();
        assert_eq!(
            v6,
            "[2001:db8::1]:50129".parse().unwrap(),
            "a port past the first word"
        );
        assert!(a.is_taken(v6));
        assert!(!a.is_taken(v4(50129)), "the other family");
        assert!(
            !a.is_taken("203.0.113.2:50129".parse().unwrap()),
            "another IP"
        );
        assert!(
            !a.is_taken(v4(49999)) && !a.is_taken(v4(50131)),
            "outside the range"
        );
        a.release(v4(50129));
        a.release("203.0.113.2:50129".parse().unwrap());
        assert_eq!(a.in_use(), 1, "releasing what is not taken changes nothing");
        a.release(v6);
        a.release(v6);
        assert_eq!(a.in_use(), 0);
    }

    #[test]
    fn an_empty_or_inverted_range_has_no_port() {
        let t0 = Instant::now();
        #[allow(clippy::reversed_empty_ranges)]
        let mut a = PortPool::new(&["203.0.113.1".parse().unwrap()], 50001..=50000);
        assert_eq!(a.span(), 0);
        assert_eq!(a.take(t0, AddressFamily::V4, false, false, 7), None);
    }
}
