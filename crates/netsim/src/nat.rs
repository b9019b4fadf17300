//! RFC 4787 NAT model: mapping table, filtering, port allocation, expiry.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::node::Transport;
use crate::trace::DropReason;

/// Handle of a NAT added with [`Sim::add_nat`](crate::Sim::add_nat).
/// Displays as `NAT <n>`, `n` counting from 0 in the order NATs were added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatId(pub(crate) usize);

impl NatId {
    /// Index of this NAT in the order NATs were added (0-based).
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for NatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NAT {}", self.0)
    }
}

/// RFC 4787 behaviour, used both for mapping (§4.1) and filtering (§5).
///
/// | | mapping key | inbound allowed from |
/// |---|---|---|
/// | `EndpointIndependent` | (int ip, int port) | anyone |
/// | `AddressDependent` | + destination IP | IPs the mapping has sent to |
/// | `AddressAndPortDependent` | + destination IP and port | exact ip:port the mapping has sent to |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Behaviour {
    /// EIM / EIF.
    EndpointIndependent,
    /// ADM / ADF.
    AddressDependent,
    /// APDM / APDF.
    AddressAndPortDependent,
}

impl Behaviour {
    /// `EIM`, `ADM` or `APDM`.
    pub fn mapping_name(self) -> &'static str {
        match self {
            Behaviour::EndpointIndependent => "EIM",
            Behaviour::AddressDependent => "ADM",
            Behaviour::AddressAndPortDependent => "APDM",
        }
    }

    /// `EIF`, `ADF` or `APDF`.
    pub fn filtering_name(self) -> &'static str {
        match self {
            Behaviour::EndpointIndependent => "EIF",
            Behaviour::AddressDependent => "ADF",
            Behaviour::AddressAndPortDependent => "APDF",
        }
    }
}

/// How a NAT picks the external port of a new mapping (RFC 4787 §4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortAllocation {
    /// Use the internal port if it is free on the external IP, else fall back
    /// to `Sequential`.
    Preserving,
    /// The next free port of `port_range`, counting up and wrapping.
    Sequential,
    /// A free port drawn from `port_range` with the simulation's seeded RNG.
    Random,
}

/// Configuration of one NAT.
///
/// Build with [`NatConfig::new`] and struct-update syntax:
/// `NatConfig { hairpinning: false, ..NatConfig::new(ip, mapping, filtering) }`.
#[derive(Debug, Clone, PartialEq)]
pub struct NatConfig {
    /// External IPs (public scope). Each internal IP is paired with one of them
    /// of its own family, round-robin in order of first use (RFC 4787 REQ-2
    /// "paired" pooling). A dual-stack router lists an IPv4 address and its
    /// hosts' own IPv6 addresses: NAT44 and, for IPv6, an RFC 6092
    /// stateful firewall without translation (the host's address is the
    /// "external" one, ports preserved).
    pub external_ips: Vec<IpAddr>,
    /// Mapping behaviour.
    pub mapping: Behaviour,
    /// Filtering behaviour.
    pub filtering: Behaviour,
    /// External port choice.
    pub port_allocation: PortAllocation,
    /// Ports used by `Sequential` and `Random` allocation.
    pub port_range: RangeInclusive<u16>,
    /// A mapping (and each remote it has sent to) expires this long after the
    /// last outbound packet through it. Inbound packets do not refresh.
    pub mapping_lifetime: Duration,
    /// Translate packets from inside to the NAT's own external addresses back
    /// inside (RFC 4787 §6). Filtering still applies to them.
    pub hairpinning: bool,
    /// A port-mapping protocol the router serves on its LAN address (PCP,
    /// NAT-PMP); `None` (the default): the router answers none.
    pub port_mapping: Option<PortMapService>,
}

/// A port-mapping service a NAT's router offers its LAN (RFC 6887 PCP,
/// RFC 6886 NAT-PMP) on `gateway:5351`, as miniupnpd does.
///
/// A mapping it grants is explicit: it forwards its external address and
/// port to the internal socket from any remote (endpoint-independent
/// filtering, RFC 6887 §11.1: a MAP mapping has no filter unless a FILTER
/// option asks for one), and the socket's packets to destinations it has
/// no earlier mapping for leave from it (endpoint-independent mapping);
/// flows the socket started before keep their own mappings, as conntrack
/// keeps established flows. It lives for the lifetime granted (the
/// client renews it), not for the traffic through it; lifetime 0 deletes
/// it.
#[derive(Debug, Clone, PartialEq)]
pub struct PortMapService {
    /// The router's address on its LAN: the gateway hosts ask.
    pub gateway: IpAddr,
    /// PCP version 2 MAP requests are answered.
    pub pcp: bool,
    /// NAT-PMP requests are answered (and PCP ones refused with NAT-PMP's
    /// "unsupported version" when `pcp` is off, so that a client falls back).
    pub nat_pmp: bool,
    /// The longest lifetime granted (a longer one asked for is cut to it).
    pub max_lifetime: Duration,
}

impl PortMapService {
    /// PCP and NAT-PMP on `gateway`, lifetimes up to 2 hours.
    pub fn new(gateway: IpAddr) -> Self {
        PortMapService {
            gateway,
            pcp: true,
            nat_pmp: true,
            max_lifetime: Duration::from_secs(7200),
        }
    }
}

impl NatConfig {
    /// A NAT with one external IP and the given behaviours; port preservation,
    /// ports 49152..=65535, a 120 s mapping lifetime (RFC 4787 REQ-5) and
    /// hairpinning on (REQ-9).
    pub fn new(external_ip: IpAddr, mapping: Behaviour, filtering: Behaviour) -> Self {
        NatConfig {
            external_ips: vec![external_ip],
            mapping,
            filtering,
            port_allocation: PortAllocation::Preserving,
            port_range: 49152..=65535,
            mapping_lifetime: Duration::from_secs(120),
            hairpinning: true,
            port_mapping: None,
        }
    }
}

/// A live mapping, as reported by [`Sim::nat_mappings`](crate::Sim::nat_mappings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingInfo {
    /// Transport of the mapping (UDP and TCP mappings are separate; TLS
    /// maps as TCP).
    pub transport: Transport,
    /// Internal (private) address.
    pub internal: SocketAddr,
    /// External (public) address.
    pub external: SocketAddr,
    /// When it expires unless refreshed by outbound traffic.
    pub expires_at: Instant,
    /// Remote addresses it has sent to (that have not expired).
    pub remotes: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum KeyDst {
    Any,
    Ip(IpAddr),
    Addr(SocketAddr),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct MappingKey {
    proto: Transport,
    internal: SocketAddr,
    dst: KeyDst,
}

#[derive(Debug, Clone)]
struct Mapping {
    key: MappingKey,
    external: SocketAddr,
    last_outbound: Instant,
    /// Remote address -> last time this mapping sent to it.
    permissions: BTreeMap<SocketAddr, Instant>,
    /// A port-mapping protocol made it explicit: it lives until then,
    /// whatever the traffic, and admits every remote.
    explicit_until: Option<Instant>,
}

impl Mapping {
    fn expires_at(&self, lifetime: Duration) -> Instant {
        match self.explicit_until {
            Some(t) => t.max(self.last_outbound + lifetime),
            None => self.last_outbound + lifetime,
        }
    }
}

/// A NAT's runtime state.
#[derive(Debug)]
pub(crate) struct Nat {
    id: NatId,
    pub(crate) config: NatConfig,
    next_id: u64,
    mappings: BTreeMap<u64, Mapping>,
    by_key: BTreeMap<MappingKey, u64>,
    by_external: BTreeMap<(Transport, SocketAddr), u64>,
    next_port: u16,
    pool: BTreeMap<IpAddr, IpAddr>,
    /// When the port-mapping service first answered (its epoch's zero).
    pub(crate) portmap_since: Option<Instant>,
}

/// Result of translating an outbound packet.
pub(crate) struct Outbound {
    pub(crate) external: SocketAddr,
    pub(crate) created: bool,
}

impl Nat {
    pub(crate) fn new(id: NatId, config: NatConfig) -> Self {
        let next_port = *config.port_range.start();
        Nat {
            id,
            config,
            next_id: 0,
            mappings: BTreeMap::new(),
            by_key: BTreeMap::new(),
            by_external: BTreeMap::new(),
            next_port,
            pool: BTreeMap::new(),
            portmap_since: None,
        }
    }

    pub(crate) fn owns_external_ip(&self, ip: IpAddr) -> bool {
        self.config.external_ips.contains(&ip)
    }

    /// Drop every mapping (a NAT reboot).
    pub(crate) fn flush(&mut self) {
        self.mappings.clear();
        self.by_key.clear();
        self.by_external.clear();
    }

    fn expire(&mut self, now: Instant) {
        let lifetime = self.config.mapping_lifetime;
        // An explicit mapping past its lifetime is an ordinary one again
        // (and gone, unless traffic keeps it).
        for m in self.mappings.values_mut() {
            if m.explicit_until.is_some_and(|t| t <= now) {
                m.explicit_until = None;
            }
        }
        let dead: Vec<u64> = self
            .mappings
            .iter()
            .filter(|(_, m)| m.expires_at(lifetime) <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            if let Some(m) = self.mappings.remove(&id) {
                self.by_key.remove(&m.key);
                self.by_external.remove(&(m.key.proto, m.external));
            }
        }
    }

    pub(crate) fn mappings(&mut self, now: Instant) -> Vec<MappingInfo> {
        self.expire(now);
        let lifetime = self.config.mapping_lifetime;
        self.mappings
            .values()
            .map(|m| MappingInfo {
                transport: m.key.proto,
                internal: m.key.internal,
                external: m.external,
                expires_at: m.expires_at(lifetime),
                remotes: m
                    .permissions
                    .iter()
                    .filter(|(_, t)| **t + lifetime > now)
                    .map(|(a, _)| *a)
                    .collect(),
            })
            .collect()
    }

    /// Translate the source of a packet leaving the NAT, creating or refreshing
    /// the mapping.
    pub(crate) fn outbound(
        &mut self,
        now: Instant,
        proto: Transport,
        internal: SocketAddr,
        remote: SocketAddr,
        rng: &mut impl Rng,
    ) -> Result<Outbound, DropReason> {
        self.expire(now);
        let dst = match self.config.mapping {
            Behaviour::EndpointIndependent => KeyDst::Any,
            Behaviour::AddressDependent => KeyDst::Ip(remote.ip()),
            Behaviour::AddressAndPortDependent => KeyDst::Addr(remote),
        };
        let key = MappingKey {
            proto,
            internal,
            dst,
        };
        // A flow with a mapping of its own keeps it; a new one leaves
        // through the socket's explicit mapping when it has one.
        let explicit = MappingKey {
            proto,
            internal,
            dst: KeyDst::Any,
        };
        let found = self.by_key.get(&key).copied().or_else(|| {
            self.by_key.get(&explicit).copied().filter(|id| {
                self.mappings
                    .get(id)
                    .is_some_and(|m| m.explicit_until.is_some())
            })
        });
        if let Some(id) = found {
            if let Some(m) = self.mappings.get_mut(&id) {
                m.last_outbound = now;
                m.permissions.insert(remote, now);
                return Ok(Outbound {
                    external: m.external,
                    created: false,
                });
            }
        }
        let ext_ip = self.pooled_ip(internal.ip())?;
        let port = self.allocate_port(proto, ext_ip, internal.port(), rng)?;
        let external = SocketAddr::new(ext_ip, port);
        let id = self.next_id;
        self.next_id += 1;
        let mut permissions = BTreeMap::new();
        permissions.insert(remote, now);
        self.by_key.insert(key.clone(), id);
        self.by_external.insert((proto, external), id);
        self.mappings.insert(
            id,
            Mapping {
                key,
                external,
                last_outbound: now,
                permissions,
                explicit_until: None,
            },
        );
        Ok(Outbound {
            external,
            created: true,
        })
    }

    /// Filter and translate the destination of a packet arriving at an external
    /// address; returns the internal address to deliver to.
    pub(crate) fn inbound(
        &mut self,
        now: Instant,
        proto: Transport,
        remote: SocketAddr,
        external: SocketAddr,
    ) -> Result<SocketAddr, DropReason> {
        self.expire(now);
        let nat = self.id;
        let m = self
            .by_external
            .get(&(proto, external))
            .and_then(|id| self.mappings.get(id))
            .ok_or(DropReason::NoMapping { nat, external })?;
        let lifetime = self.config.mapping_lifetime;
        let live = |t: &Instant| *t + lifetime > now;
        let allowed = m.explicit_until.is_some()
            || match self.config.filtering {
                Behaviour::EndpointIndependent => true,
                Behaviour::AddressDependent => m
                    .permissions
                    .iter()
                    .any(|(a, t)| a.ip() == remote.ip() && live(t)),
                Behaviour::AddressAndPortDependent => m.permissions.get(&remote).is_some_and(live),
            };
        if allowed {
            Ok(m.key.internal)
        } else {
            Err(DropReason::Filtered {
                nat,
                filtering: self.config.filtering,
                internal: m.key.internal,
                remote,
            })
        }
    }

    /// A port-mapping request (PCP MAP, NAT-PMP): map `internal` for
    /// `lifetime` from `now`, on `suggested` if it is free (0: any), and
    /// return the external address. The socket's endpoint-independent
    /// mapping, if it has one, becomes explicit (same address); a mapping
    /// it holds already is renewed.
    pub(crate) fn map_explicit(
        &mut self,
        now: Instant,
        proto: Transport,
        internal: SocketAddr,
        suggested: u16,
        lifetime: Duration,
        rng: &mut impl Rng,
    ) -> Result<SocketAddr, DropReason> {
        self.expire(now);
        let key = MappingKey {
            proto,
            internal,
            dst: KeyDst::Any,
        };
        if let Some(m) = self
            .by_key
            .get(&key)
            .and_then(|id| self.mappings.get_mut(id))
        {
            m.explicit_until = Some(now + lifetime);
            return Ok(m.external);
        }
        let ip = self.pooled_ip(internal.ip())?;
        let port = if self.is_free(proto, ip, suggested) {
            suggested
        } else {
            self.allocate_port(proto, ip, internal.port(), rng)?
        };
        let external = SocketAddr::new(ip, port);
        let id = self.next_id;
        self.next_id += 1;
        self.by_key.insert(key.clone(), id);
        self.by_external.insert((proto, external), id);
        self.mappings.insert(
            id,
            Mapping {
                key,
                external,
                // Never used for outbound yet: the lifetime alone counts.
                last_outbound: now.checked_sub(self.config.mapping_lifetime).unwrap_or(now),
                permissions: BTreeMap::new(),
                explicit_until: Some(now + lifetime),
            },
        );
        Ok(external)
    }

    /// Delete the explicit mapping of `internal` (a request with lifetime
    /// 0). One that was the socket's endpoint-independent mapping before
    /// stays, as that again. Returns the external address it had.
    pub(crate) fn unmap_explicit(
        &mut self,
        now: Instant,
        proto: Transport,
        internal: SocketAddr,
    ) -> Option<SocketAddr> {
        self.expire(now);
        let key = MappingKey {
            proto,
            internal,
            dst: KeyDst::Any,
        };
        let id = *self.by_key.get(&key)?;
        let eim = self.config.mapping == Behaviour::EndpointIndependent;
        let m = self.mappings.get_mut(&id)?;
        m.explicit_until?;
        m.explicit_until = None;
        let external = m.external;
        if !eim || m.last_outbound + self.config.mapping_lifetime <= now {
            self.mappings.remove(&id);
            self.by_key.remove(&key);
            self.by_external.remove(&(proto, external));
        }
        Some(external)
    }

    /// The external IP the NAT uses for `internal_ip` (for NAT-PMP's
    /// external address request).
    pub(crate) fn external_ip_for(&mut self, internal_ip: IpAddr) -> Option<IpAddr> {
        self.pooled_ip(internal_ip).ok()
    }

    fn pooled_ip(&mut self, internal_ip: IpAddr) -> Result<IpAddr, DropReason> {
        if let Some(ip) = self.pool.get(&internal_ip) {
            return Ok(*ip);
        }
        // An address of the internal address's family: a dual-stack router
        // maps IPv4 to its IPv4 addresses and IPv6 to its IPv6 ones (with
        // the host's own IPv6 address as the "external" one, it is an RFC
        // 6092 firewall: no NAT66, the filtering alone).
        let v4 = internal_ip.is_ipv4();
        let ips: Vec<IpAddr> = self
            .config
            .external_ips
            .iter()
            .copied()
            .filter(|ip| ip.is_ipv4() == v4)
            .collect();
        if ips.is_empty() {
            return Err(DropReason::PortsExhausted { nat: self.id });
        }
        let used = self.pool.keys().filter(|k| k.is_ipv4() == v4).count();
        let ip = ips[used % ips.len()];
        self.pool.insert(internal_ip, ip);
        Ok(ip)
    }

    fn is_free(&self, proto: Transport, ip: IpAddr, port: u16) -> bool {
        port != 0
            && !self
                .by_external
                .contains_key(&(proto, SocketAddr::new(ip, port)))
    }

    fn allocate_port(
        &mut self,
        proto: Transport,
        ip: IpAddr,
        internal_port: u16,
        rng: &mut impl Rng,
    ) -> Result<u16, DropReason> {
        let (lo, hi) = (
            *self.config.port_range.start(),
            *self.config.port_range.end(),
        );
        match self.config.port_allocation {
            PortAllocation::Preserving if self.is_free(proto, ip, internal_port) => {
                return Ok(internal_port);
            }
            PortAllocation::Random if lo <= hi => {
                for _ in 0..64 {
                    let p = rng.gen_range(lo..=hi);
                    if self.is_free(proto, ip, p) {
                        return Ok(p);
                    }
                }
            }
            _ => {}
        }
        // Sequential, and the fallback of the other two.
        if lo > hi {
            return Err(DropReason::PortsExhausted { nat: self.id });
        }
        let span = u32::from(hi - lo) + 1;
        let mut p = self.next_port.clamp(lo, hi);
        for _ in 0..span {
            let candidate = p;
            p = if p >= hi { lo } else { p + 1 };
            if self.is_free(proto, ip, candidate) {
                self.next_port = p;
                return Ok(candidate);
            }
        }
        Err(DropReason::PortsExhausted { nat: self.id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const EXT: &str = "198.51.100.1";

    fn nat(mapping: Behaviour, filtering: Behaviour, alloc: PortAllocation) -> Nat {
        let mut cfg = NatConfig::new(EXT.parse().unwrap(), mapping, filtering);
        cfg.port_allocation = alloc;
        Nat::new(NatId(0), cfg)
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapping_keys_follow_behaviour() {
        use Behaviour::*;
        // (behaviour, same ext for other port of same server, same ext for other server)
        let cases = [
            (EndpointIndependent, true, true),
            (AddressDependent, true, false),
            (AddressAndPortDependent, false, false),
        ];
        for (b, same_port_shared, other_ip_shared) in cases {
            let mut n = nat(b, EndpointIndependent, PortAllocation::Sequential);
            let mut rng = StdRng::seed_from_u64(0);
            let t = Instant::now();
            let int = sa("10.0.0.2:5000");
            let out = |n: &mut Nat, r: &str, rng: &mut StdRng| {
                n.outbound(t, Transport::Udp, int, sa(r), rng)
                    .unwrap()
                    .external
            };
            let a = out(&mut n, "203.0.113.1:3478", &mut rng);
            let b2 = out(&mut n, "203.0.113.1:3479", &mut rng);
            let c = out(&mut n, "203.0.113.2:3478", &mut rng);
            assert_eq!(a == b2, same_port_shared, "{b:?}");
            assert_eq!(a == c, other_ip_shared, "{b:?}");
            // Repeating a destination reuses its mapping.
            assert_eq!(out(&mut n, "203.0.113.1:3478", &mut rng), a);
        }
    }

    #[test]
    fn udp_and_tcp_mappings_are_separate_but_may_share_a_port() {
        let mut n = nat(
            Behaviour::EndpointIndependent,
            Behaviour::EndpointIndependent,
            PortAllocation::Preserving,
        );
        let mut rng = StdRng::seed_from_u64(0);
        let t = Instant::now();
        let u = n
            .outbound(
                t,
                Transport::Udp,
                sa("10.0.0.2:5000"),
                sa("1.2.3.4:1"),
                &mut rng,
            )
            .unwrap();
        let tc = n
            .outbound(
                t,
                Transport::Tcp,
                sa("10.0.0.2:5000"),
                sa("1.2.3.4:1"),
                &mut rng,
            )
            .unwrap();
        assert!(u.created && tc.created);
        assert_eq!(u.external, tc.external);
        assert_eq!(n.mappings(t).len(), 2);
    }

    #[test]
    fn sequential_wraps_and_exhausts() {
        let mut cfg = NatConfig::new(
            EXT.parse().unwrap(),
            Behaviour::AddressAndPortDependent,
            Behaviour::AddressAndPortDependent,
        );
        cfg.port_allocation = PortAllocation::Sequential;
        cfg.port_range = 60000..=60002;
        let mut n = Nat::new(NatId(3), cfg);
        let mut rng = StdRng::seed_from_u64(0);
        let t = Instant::now();
        let int = sa("10.0.0.2:5000");
        let ports: Vec<u16> = (1..=3)
            .map(|i| {
                n.outbound(
                    t,
                    Transport::Udp,
                    int,
                    sa(&format!("1.2.3.4:{i}")),
                    &mut rng,
                )
                .unwrap()
                .external
                .port()
            })
            .collect();
        assert_eq!(ports, vec![60000, 60001, 60002]);
        let err = n
            .outbound(t, Transport::Udp, int, sa("1.2.3.4:9"), &mut rng)
            .err();
        assert_eq!(err, Some(DropReason::PortsExhausted { nat: NatId(3) }));
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("NAT 3 has no free external port")
        );
    }

    #[test]
    fn address_pooling_is_paired() {
        let mut cfg = NatConfig::new(
            EXT.parse().unwrap(),
            Behaviour::AddressAndPortDependent,
            Behaviour::EndpointIndependent,
        );
        cfg.external_ips.push("198.51.100.2".parse().unwrap());
        let mut n = Nat::new(NatId(0), cfg);
        let mut rng = StdRng::seed_from_u64(0);
        let t = Instant::now();
        let mut ext = |int: &str, r: &str| {
            n.outbound(t, Transport::Udp, sa(int), sa(r), &mut rng)
                .unwrap()
                .external
                .ip()
        };
        let a1 = ext("10.0.0.2:1", "1.1.1.1:1");
        let b1 = ext("10.0.0.3:1", "1.1.1.1:1");
        let a2 = ext("10.0.0.2:2", "2.2.2.2:2");
        assert_ne!(a1, b1);
        assert_eq!(a1, a2);
    }

    #[test]
    fn a_dual_stack_router_pools_each_family_apart_and_ipv6_is_not_translated() {
        let mut cfg = NatConfig::new(
            EXT.parse().unwrap(),
            Behaviour::EndpointIndependent,
            Behaviour::AddressAndPortDependent,
        );
        cfg.external_ips.push("2001:db8:1::2".parse().unwrap());
        let mut n = Nat::new(NatId(0), cfg);
        let mut rng = StdRng::seed_from_u64(0);
        let t = Instant::now();
        let mut ext = |int: &str, r: &str| {
            n.outbound(t, Transport::Udp, sa(int), sa(r), &mut rng)
                .unwrap()
                .external
        };
        assert_eq!(ext("10.0.0.2:5000", "1.1.1.1:1"), sa("198.51.100.1:5000"));
        assert_eq!(
            ext("[2001:db8:1::2]:5000", "[2001:db8:9::1]:1"),
            sa("[2001:db8:1::2]:5000")
        );
    }
}
