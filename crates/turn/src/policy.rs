//! Which peers the server relays to (the CVE-2020-26262 class of attacks:
//! a TURN server used to reach its own loopback or private network).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address block, `192.0.2.0/24` or `2001:db8::/32`.
///
/// An IPv4 block also matches IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR string does not parse.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part is not an IP address.
    #[error("not an IP address")]
    BadAddress,
    /// The prefix is not a number, or longer than the address.
    #[error("bad prefix length")]
    BadPrefix,
}

impl Cidr {
    /// A block; `None` when `prefix` is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// A block of one address.
    pub fn host(addr: IpAddr) -> Self {
        Cidr {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(prefix));
    a & mask == b & mask
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| CidrError::BadAddress)?;
        match p {
            None => Ok(Cidr::host(addr)),
            Some(p) => {
                let prefix: u8 = p.trim().parse().map_err(|_| CidrError::BadPrefix)?;
                Cidr::new(addr, prefix).ok_or(CidrError::BadPrefix)
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:0:0/96`) or NAT64
/// well-known-prefix (`64:ff9b::/96`) IPv6 address, or the address itself.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    (mapped || nat64).then_some(tail)
}

/// The name of the special-purpose IPv4 block `ip` is in, if any.
fn v4_special(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(if ip.is_unspecified() || o[0] == 0 {
        "\"this network\" (0.0.0.0/8)"
    } else if ip.is_loopback() {
        "loopback (127.0.0.0/8)"
    } else if ip.is_private() {
        "private (RFC 1918: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)"
    } else if ip.is_link_local() {
        "link-local (169.254.0.0/16)"
    } else if ip.is_multicast() {
        "multicast (224.0.0.0/4)"
    } else if ip.is_broadcast() || o[0] >= 240 {
        "reserved (240.0.0.0/4)"
    } else if o[0] == 100 && (o[1] & 0xC0) == 64 {
        "shared address space (100.64.0.0/10)"
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        "IETF protocol assignments (192.0.0.0/24)"
    } else if o[0] == 198 && (o[1] & 0xFE) == 18 {
        "benchmarking (198.18.0.0/15)"
    } else {
        return None;
    })
}

/// The name of the special-purpose IPv6 block `ip` is in, if any.
fn v6_special(ip: Ipv6Addr) -> Option<&'static str> {
    let s0 = ip.segments()[0];
    Some(if ip.is_unspecified() {
        "unspecified (::)"
    } else if ip.is_loopback() {
        "loopback (::1)"
    } else if ip.is_multicast() {
        "multicast (ff00::/8)"
    } else if (s0 & 0xFE00) == 0xFC00 {
        "unique local (fc00::/7)"
    } else if (s0 & 0xFFC0) == 0xFE80 {
        "link-local (fe80::/10)"
    } else if (s0 & 0xFFC0) == 0xFEC0 {
        "site-local (fec0::/10)"
    } else if ip.segments()[..6] == [0; 6] {
        "IPv4-compatible (::/96)"
    } else {
        return None;
    })
}

fn special(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => v4_special(v4),
        IpAddr::V6(v6) => v6_special(v6),
    }
}

/// Which rule of the peer policy refused a peer (answered with 403).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRefusal {
    /// The deny list has this block.
    Denied(Cidr),
    /// The address is in a block the default policy refuses (named, with
    /// the block) and the allow list does not open it.
    Special(&'static str),
    /// The address is one of the server's own, and not the relayed address
    /// of a live allocation.
    OwnAddress,
    /// The address is a listening socket of the server (STUN/TURN,
    /// signaling, metrics): never a peer.
    ServiceAddress,
}

impl fmt::Display for PeerRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerRefusal::Denied(c) => write!(f, "the deny list refuses {c}"),
            PeerRefusal::Special(name) => write!(
                f,
                "the default policy refuses {name} addresses; the allow list can open a block"
            ),
            PeerRefusal::OwnAddress => f.write_str(
                "it is one of the server's own addresses (only a live relayed address or an allowed block is)",
            ),
            PeerRefusal::ServiceAddress => {
                f.write_str("it is a listening address of the server, never a peer")
            }
        }
    }
}

/// Which peer addresses the server relays to. The default refuses loopback,
/// unspecified, "this network" (0.0.0.0/8), link-local, private (RFC 1918),
/// shared (100.64.0.0/10), unique-local (fc00::/7), site-local, multicast,
/// broadcast and reserved addresses, IPv4-mapped and NAT64 forms of those, and
/// the server's own addresses.
///
/// Order of the checks: the deny list refuses; then the allow list permits
/// (it can open, say, 127.0.0.0/8 for a loopback test, or a private LAN);
/// then the built-in ranges and the server's own addresses refuse; anything
/// else is permitted.
///
/// One exception, applied by [`crate::TurnServer`] on top of this policy:
/// relaying between two allocations of the same server (both peers forced
/// to TURN, as coturn allows). A permission or channel to an allocation's
/// own relayed IP is granted when that IP is one the policy would permit
/// anyway (a public one; a loopback or private relay IP still needs the
/// allow list, and the deny list always wins), and data
/// to any of the server's own addresses is relayed only when the
/// destination is the relayed transport address of a live allocation (or
/// the allow list opens that IP, as it always could) — never to the
/// listening address of the request nor to
/// [`crate::ServerConfig::service_addresses`] (STUN/TURN, signaling,
/// metrics): the CVE-2020-26262 class stays closed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

impl PeerPolicy {
    /// The secure default.
    pub fn new() -> Self {
        PeerPolicy::default()
    }

    /// Permit a block the defaults refuse.
    pub fn allow(mut self, cidr: Cidr) -> Self {
        self.allow.push(cidr);
        self
    }

    /// Refuse a block (the deny list wins over the allow list).
    pub fn deny(mut self, cidr: Cidr) -> Self {
        self.deny.push(cidr);
        self
    }

    /// Whether the deny list refuses `ip`.
    pub fn denies(&self, ip: IpAddr) -> bool {
        self.deny.iter().any(|c| c.contains(ip))
    }

    /// Whether the allow list opens `ip` (and the deny list does not
    /// refuse it).
    pub fn explicitly_allows(&self, ip: IpAddr) -> bool {
        !self.denies(ip) && self.allow.iter().any(|c| c.contains(ip))
    }

    /// Whether relaying to `ip` is permitted; `own` are the server's own
    /// addresses.
    pub fn permits(&self, ip: IpAddr, own: &[IpAddr]) -> bool {
        self.refusal(ip, own).is_none()
    }

    /// The rule that refuses relaying to `ip`, or `None` when it is
    /// permitted; `own` are the server's own addresses.
    ///
    /// ```
    /// use p2p_turn::{PeerPolicy, PeerRefusal};
    /// let p = PeerPolicy::new().deny("198.51.100.0/24".parse().unwrap());
    /// assert!(matches!(p.refusal("198.51.100.7".parse().unwrap(), &[]), Some(PeerRefusal::Denied(_))));
    /// let loopback = p.refusal("127.0.0.1".parse().unwrap(), &[]).unwrap();
    /// assert!(loopback.to_string().contains("loopback (127.0.0.0/8)"));
    /// assert_eq!(p.refusal("203.0.113.9".parse().unwrap(), &[]), None);
    /// ```
    pub fn refusal(&self, ip: IpAddr, own: &[IpAddr]) -> Option<PeerRefusal> {
        if let Some(c) = self.deny.iter().find(|c| c.contains(ip)) {
            return Some(PeerRefusal::Denied(*c));
        }
        if self.allow.iter().any(|c| c.contains(ip)) {
            return None;
        }
        if let Some(name) = special(ip) {
            return Some(PeerRefusal::Special(name));
        }
        let ip = canonical(ip);
        own.iter()
            .any(|o| canonical(*o) == ip)
            .then_some(PeerRefusal::OwnAddress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: &PeerPolicy, ip: &str, want: bool) {
        let ip: IpAddr = ip.parse().unwrap();
        let own: [IpAddr; 1] = ["203.0.113.1".parse().unwrap()];
        assert_eq!(policy.permits(ip, &own), want, "{ip}");
    }

    #[test]
    fn defaults_refuse_internal_and_special_addresses() {
        let p = PeerPolicy::new();
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "0.1.2.3",
            "10.1.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "224.0.0.1",
            "239.1.1.1",
            "255.255.255.255",
            "240.0.0.1",
            "100.64.0.1",
            "198.18.0.1",
            "192.0.0.8",
            "203.0.113.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "fec0::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:203.0.113.1",
            "64:ff9b::7f00:1",
            "::127.0.0.1",
        ] {
            check(&p, ip, false);
        }
        for ip in [
            "8.8.8.8",
            "203.0.113.2",
            "198.51.100.7",
            "172.32.0.1",
            "100.128.0.1",
            "2001:db8::1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            check(&p, ip, true);
        }
    }

    #[test]
    fn allow_opens_and_deny_closes() {
        let p = PeerPolicy::new()
            .allow("127.0.0.0/8".parse().unwrap())
            .allow("10.0.0.0/8".parse().unwrap())
            .deny("10.9.0.0/16".parse().unwrap())
            .deny("8.8.8.8".parse().unwrap());
        check(&p, "127.0.0.1", true);
        check(&p, "::ffff:127.0.0.1", true);
        check(&p, "10.1.1.1", true);
        check(&p, "10.9.1.1", false);
        check(&p, "8.8.8.8", false);
        check(&p, "192.168.1.1", false);
    }

    #[test]
    fn explicit_lists_are_told_apart_from_the_defaults() {
        let p = PeerPolicy::new()
            .allow("127.0.0.0/8".parse().unwrap())
            .deny("127.0.0.2/32".parse().unwrap());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.explicitly_allows(ip("127.0.0.1")));
        assert!(!p.explicitly_allows(ip("127.0.0.2")), "deny wins");
        assert!(p.denies(ip("127.0.0.2")));
        assert!(!p.denies(ip("127.0.0.1")));
        // Permitted by default, but not by the allow list.
        assert!(!p.explicitly_allows(ip("198.51.100.7")));
        assert!(p.permits(ip("198.51.100.7"), &[]));
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::BadPrefix));
        assert_eq!("x/8".parse::<Cidr>(), Err(CidrError::BadAddress));
        assert_eq!("10.0.0.0/x".parse::<Cidr>(), Err(CidrError::BadPrefix));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        assert!(!all.contains("2001:db8::1".parse().unwrap()));
        assert_eq!(all.to_string(), "0.0.0.0/0");
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
    }
}
