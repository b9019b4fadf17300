//! Candidates (RFC 8445 §5.1): kinds, priorities (§5.1.2.1), foundations
//! (§5.1.1.3) and the SDP `candidate` attribute value (RFC 8839 §5.1) as a
//! plain string.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// The kind ("type") of a candidate (RFC 8445 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CandidateKind {
    /// An address on a local interface.
    Host,
    /// The address a NAT mapped a host address to, learnt from a STUN server.
    ServerReflexive,
    /// An address learnt from a connectivity check (a request's source or a
    /// response's XOR-MAPPED-ADDRESS).
    PeerReflexive,
    /// An address a TURN server relays for us.
    Relayed,
}

impl CandidateKind {
    /// The recommended type preference of RFC 8445 §5.1.2.2: host 126,
    /// peer-reflexive 110, server-reflexive 100, relayed 0.
    pub const fn type_preference(self) -> u32 {
        match self {
            CandidateKind::Host => 126,
            CandidateKind::PeerReflexive => 110,
            CandidateKind::ServerReflexive => 100,
            CandidateKind::Relayed => 0,
        }
    }

    /// The SDP name: `host`, `srflx`, `prflx`, `relay`.
    pub const fn sdp_name(self) -> &'static str {
        match self {
            CandidateKind::Host => "host",
            CandidateKind::ServerReflexive => "srflx",
            CandidateKind::PeerReflexive => "prflx",
            CandidateKind::Relayed => "relay",
        }
    }

    fn from_sdp_name(s: &str) -> Option<Self> {
        Some(match s {
            "host" => CandidateKind::Host,
            "srflx" => CandidateKind::ServerReflexive,
            "prflx" => CandidateKind::PeerReflexive,
            "relay" => CandidateKind::Relayed,
            _ => return None,
        })
    }
}

impl fmt::Display for CandidateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sdp_name())
    }
}

/// The transport protocol of a candidate. Only UDP is supported (ICE-TCP,
/// RFC 6544, is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// UDP.
    Udp,
}

impl Transport {
    fn sdp_name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
        }
    }
}

/// The priority of a candidate (RFC 8445 §5.1.2.1):
/// `2^24 * type_pref + 2^8 * local_pref + (256 - component)`.
///
/// `type_pref` is taken modulo 127 and `component` clamped to 1..=256, so the
/// result always fits the formula's 31 bits.
pub const fn candidate_priority(type_pref: u32, local_pref: u16, component: u16) -> u32 {
    let component = if component == 0 {
        1
    } else if component > 256 {
        256
    } else {
        component
    };
    (1 << 24) * (type_pref % 127) + (1 << 8) * local_pref as u32 + (256 - component as u32)
}

/// The default local preference for a single-interface agent (RFC 8445
/// §5.1.2.1: 65535 when there is only one IP address).
pub const DEFAULT_LOCAL_PREFERENCE: u16 = 65535;

/// A foundation per RFC 8445 §5.1.1.3: equal for candidates of the same kind,
/// the same base IP, the same STUN/TURN server IP and the same transport,
/// different otherwise. It is a decimal FNV-1a hash of those four (stable
/// across runs and platforms).
pub fn compute_foundation(
    kind: CandidateKind,
    base_ip: IpAddr,
    server_ip: Option<IpAddr>,
    transport: Transport,
) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    eat(kind.sdp_name().as_bytes());
    eat(&ip_bytes(base_ip));
    match server_ip {
        Some(ip) => eat(&ip_bytes(ip)),
        None => eat(b"-"),
    }
    eat(transport.sdp_name().as_bytes());
    h.to_string()
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// One ICE candidate of component 1.
///
/// Local candidates are built with [`Candidate::host`],
/// [`Candidate::server_reflexive`] or [`Candidate::relayed`] and handed to
/// [`IceAgent::add_local_candidate`](crate::IceAgent::add_local_candidate),
/// which assigns the final priority (its local preference tells interfaces
/// and address families apart). Remote candidates usually come from
/// [`Candidate::from_sdp`].
///
/// ```
/// use p2p_ice::{Candidate, CandidateKind};
///
/// let c = Candidate::from_sdp(
///     "candidate:1 1 UDP 1694498815 192.0.2.3 45664 typ srflx raddr 10.0.1.1 rport 8998",
/// )?;
/// assert_eq!(c.kind(), CandidateKind::ServerReflexive);
/// assert_eq!(c.related_address(), Some("10.0.1.1:8998".parse()?));
/// assert_eq!(
///     c.to_sdp(),
///     "candidate:1 1 udp 1694498815 192.0.2.3 45664 typ srflx raddr 10.0.1.1 rport 8998"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Candidate {
    foundation: String,
    component: u16,
    transport: Transport,
    priority: u32,
    address: SocketAddr,
    base: SocketAddr,
    kind: CandidateKind,
    related: Option<SocketAddr>,
}

impl Candidate {
    fn new(
        kind: CandidateKind,
        address: SocketAddr,
        base: SocketAddr,
        server: Option<IpAddr>,
        related: Option<SocketAddr>,
    ) -> Self {
        Candidate {
            foundation: compute_foundation(kind, base.ip(), server, Transport::Udp),
            component: 1,
            transport: Transport::Udp,
            priority: candidate_priority(kind.type_preference(), DEFAULT_LOCAL_PREFERENCE, 1),
            address,
            base,
            kind,
            related,
        }
    }

    /// A host candidate: an address of a local interface (its own base).
    pub fn host(address: SocketAddr) -> Self {
        Candidate::new(CandidateKind::Host, address, address, None, None)
    }

    /// A server-reflexive candidate: `address` as a STUN server at `server`
    /// saw packets sent from the host address `base`.
    pub fn server_reflexive(address: SocketAddr, base: SocketAddr, server: IpAddr) -> Self {
        Candidate::new(
            CandidateKind::ServerReflexive,
            address,
            base,
            Some(server),
            Some(base),
        )
    }

    /// A relayed candidate: `address` is the relayed transport address a TURN
    /// server at `server` allocated; it is its own base (RFC 8445 §5.1.1.2).
    /// `related` is the mapped address the server reported, if known.
    /// Transmits from this candidate carry `address` as their source: the
    /// caller wraps them (Send indication or ChannelData).
    pub fn relayed(address: SocketAddr, related: Option<SocketAddr>, server: IpAddr) -> Self {
        Candidate::new(
            CandidateKind::Relayed,
            address,
            address,
            Some(server),
            related,
        )
    }

    /// A peer-reflexive candidate with an explicit priority (RFC 8445 §7.2.5.3.1).
    pub fn peer_reflexive(address: SocketAddr, base: SocketAddr, priority: u32) -> Self {
        let mut c = Candidate::new(
            CandidateKind::PeerReflexive,
            address,
            base,
            None,
            Some(base),
        );
        c.priority = priority;
        c
    }

    pub(crate) fn set_priority(&mut self, priority: u32) {
        self.priority = priority;
    }

    pub(crate) fn set_foundation(&mut self, foundation: String) {
        self.foundation = foundation;
    }

    /// The foundation.
    pub fn foundation(&self) -> &str {
        &self.foundation
    }
    /// The component id (always 1: one data stream, RTP/RTCP multiplexed).
    pub fn component(&self) -> u16 {
        self.component
    }
    /// The transport.
    pub fn transport(&self) -> Transport {
        self.transport
    }
    /// The priority.
    pub fn priority(&self) -> u32 {
        self.priority
    }
    /// The transport address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
    /// The base: the address packets for this candidate are sent from (the
    /// host address for host, server- and peer-reflexive candidates, the
    /// relayed address itself for relayed ones).
    pub fn base(&self) -> SocketAddr {
        self.base
    }
    /// The kind.
    pub fn kind(&self) -> CandidateKind {
        self.kind
    }
    /// The related address (`raddr`/`rport`), if any.
    pub fn related_address(&self) -> Option<SocketAddr> {
        self.related
    }

    /// The SDP `candidate` attribute value (RFC 8839 §5.1), without `a=`.
    pub fn to_sdp(&self) -> String {
        self.to_string()
    }

    /// Parse an SDP `candidate` attribute value, with or without a leading
    /// `a=`. Extension attributes after the type (and `raddr`/`rport`) are
    /// accepted and dropped. The base of a parsed candidate is its address.
    pub fn from_sdp(s: &str) -> Result<Candidate, ParseCandidateError> {
        use ParseCandidateError as E;
        let s = s.trim();
        let s = s.strip_prefix("a=").unwrap_or(s);
        let s = s.strip_prefix("candidate:").ok_or(E::MissingPrefix)?;
        let mut it = s.split_ascii_whitespace();
        let mut next = |what: &'static str| it.next().ok_or(E::MissingField(what));

        let foundation = next("foundation")?;
        if foundation.is_empty() || foundation.len() > 32 || !foundation.bytes().all(is_ice_char) {
            return Err(E::BadFoundation);
        }
        let component: u16 = next("component")?
            .parse()
            .ok()
            .filter(|c| (1..=256).contains(c))
            .ok_or(E::BadComponent)?;
        let transport = next("transport")?;
        if !transport.eq_ignore_ascii_case("udp") {
            return Err(E::UnsupportedTransport);
        }
        let priority: u32 = next("priority")?
            .parse()
            .ok()
            .filter(|p| (1..=0x7FFF_FFFF).contains(p))
            .ok_or(E::BadPriority)?;
        let ip: IpAddr = next("address")?.parse().map_err(|_| E::BadAddress)?;
        let port: u16 = next("port")?.parse().map_err(|_| E::BadPort)?;
        if next("typ")? != "typ" {
            return Err(E::MissingTyp);
        }
        let kind = CandidateKind::from_sdp_name(next("type")?).ok_or(E::UnknownType)?;
        let (mut raddr, mut rport) = (None, None);
        while let Some(key) = it.next() {
            let value = it.next().ok_or(E::MissingField("extension value"))?;
            match key {
                "raddr" => raddr = Some(value.parse::<IpAddr>().map_err(|_| E::BadRelated)?),
                "rport" => rport = Some(value.parse::<u16>().map_err(|_| E::BadRelated)?),
                _ => {}
            }
        }
        let related = match (raddr, rport) {
            (Some(ip), Some(port)) => Some(SocketAddr::new(ip, port)),
            (None, None) => None,
            _ => return Err(E::BadRelated),
        };
        let address = SocketAddr::new(ip, port);
        Ok(Candidate {
            foundation: foundation.to_string(),
            component,
            transport: Transport::Udp,
            priority,
            address,
            base: address,
            kind,
            related,
        })
    }
}

fn is_ice_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

impl fmt::Display for Candidate {
    /// The SDP `candidate` attribute value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "candidate:{} {} {} {} {} {} typ {}",
            self.foundation,
            self.component,
            self.transport.sdp_name(),
            self.priority,
            self.address.ip(),
            self.address.port(),
            self.kind.sdp_name()
        )?;
        if let Some(r) = self.related {
            write!(f, " raddr {} rport {}", r.ip(), r.port())?;
        }
        Ok(())
    }
}

impl FromStr for Candidate {
    type Err = ParseCandidateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Candidate::from_sdp(s)
    }
}

/// Why a `candidate` attribute value does not parse.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseCandidateError {
    /// It does not start with `candidate:` (after an optional `a=`).
    #[error("missing the `candidate:` prefix")]
    MissingPrefix,
    /// A mandatory field is missing.
    #[error("missing field: {0}")]
    MissingField(&'static str),
    /// The foundation is empty, longer than 32 characters or not ice-chars.
    #[error("bad foundation")]
    BadFoundation,
    /// The component id is not a number in 1..=256.
    #[error("bad component id")]
    BadComponent,
    /// The transport is not UDP (ICE-TCP is not supported).
    #[error("unsupported transport (only UDP)")]
    UnsupportedTransport,
    /// The priority is not a number in 1..=2^31-1.
    #[error("bad priority")]
    BadPriority,
    /// The connection address is not an IP address (FQDNs and mDNS names are
    /// not supported).
    #[error("bad connection address")]
    BadAddress,
    /// The port is not a number in 0..=65535.
    #[error("bad port")]
    BadPort,
    /// The literal `typ` is missing.
    #[error("missing `typ`")]
    MissingTyp,
    /// The type is not host, srflx, prflx or relay.
    #[error("unknown candidate type")]
    UnknownType,
    /// `raddr`/`rport` is malformed or only one of them is present.
    #[error("bad raddr/rport")]
    BadRelated,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_formula_rfc8445_5_1_2_1() {
        // 2^24*126 + 2^8*65535 + (256-1) = 2113929216 + 16776960 + 255
        assert_eq!(candidate_priority(126, 65535, 1), 2_130_706_431);
        // 2^24*100 + 2^8*65535 + 255 = 1677721600 + 16776960 + 255
        assert_eq!(candidate_priority(100, 65535, 1), 1_694_498_815);
        // 2^24*110 + 2^8*65535 + 255 = 1845493760 + 16776960 + 255
        assert_eq!(candidate_priority(110, 65535, 1), 1_862_270_975);
        // 2^24*0 + 2^8*65535 + 255
        assert_eq!(candidate_priority(0, 65535, 1), 16_777_215);
        // component 2: 256-2 = 254; local pref 1000: 256000
        assert_eq!(
            candidate_priority(126, 1000, 2),
            2_113_929_216 + 256_000 + 254
        );
        assert_eq!(
            Candidate::host("10.0.0.1:1".parse().unwrap()).priority(),
            2_130_706_431
        );
    }

    #[test]
    fn foundations_follow_rfc8445_5_1_1_3() {
        let h1 = Candidate::host("10.0.0.1:1000".parse().unwrap());
        let h1b = Candidate::host("10.0.0.1:2000".parse().unwrap());
        let h2 = Candidate::host("10.0.0.2:1000".parse().unwrap());
        // Same type, base IP, transport: same foundation, whatever the port.
        assert_eq!(h1.foundation(), h1b.foundation());
        assert_ne!(h1.foundation(), h2.foundation());
        let server: IpAddr = "203.0.113.1".parse().unwrap();
        let other_server: IpAddr = "203.0.113.2".parse().unwrap();
        let s1 =
            Candidate::server_reflexive("198.51.100.1:5000".parse().unwrap(), h1.address(), server);
        let s1b = Candidate::server_reflexive(
            "198.51.100.1:6000".parse().unwrap(),
            h1b.address(),
            server,
        );
        let s1c = Candidate::server_reflexive(
            "198.51.100.1:5000".parse().unwrap(),
            h1.address(),
            other_server,
        );
        assert_eq!(s1.foundation(), s1b.foundation());
        // Another server or another type: another foundation.
        assert_ne!(s1.foundation(), s1c.foundation());
        assert_ne!(s1.foundation(), h1.foundation());
        assert!(h1.foundation().bytes().all(is_ice_char));
    }

    fn check_parse(line: &str, expected: Result<&str, ParseCandidateError>) {
        match (Candidate::from_sdp(line), expected) {
            (Ok(c), Ok(printed)) => assert_eq!(c.to_sdp(), printed, "{line}"),
            (Err(e), Err(want)) => assert_eq!(e, want, "{line}"),
            (got, want) => panic!("{line}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn sdp_candidate_lines() {
        use ParseCandidateError as E;
        let cases: &[(&str, Result<&str, E>)] = &[
            (
                "candidate:1 1 UDP 2130706431 10.0.1.1 8998 typ host",
                Ok("candidate:1 1 udp 2130706431 10.0.1.1 8998 typ host"),
            ),
            (
                "a=candidate:2 1 udp 16777215 2001:db8::1 3478 typ relay raddr 192.0.2.3 rport 45664 generation 0",
                Ok("candidate:2 1 udp 16777215 2001:db8::1 3478 typ relay raddr 192.0.2.3 rport 45664"),
            ),
            ("candidate:1 1 TCP 2130706431 10.0.1.1 8998 typ host", Err(E::UnsupportedTransport)),
            ("1 1 UDP 2130706431 10.0.1.1 8998 typ host", Err(E::MissingPrefix)),
            ("candidate:1 1 UDP 2130706431 x.local 8998 typ host", Err(E::BadAddress)),
            ("candidate:1 1 UDP 2130706431 10.0.1.1 8998 typ bogus", Err(E::UnknownType)),
            ("candidate:1 1 UDP 2130706431 10.0.1.1 8998 type host", Err(E::MissingTyp)),
            ("candidate:1 0 UDP 2130706431 10.0.1.1 8998 typ host", Err(E::BadComponent)),
            ("candidate:1 1 UDP 0 10.0.1.1 8998 typ host", Err(E::BadPriority)),
            ("candidate:1 1 UDP 5 10.0.1.1 70000 typ host", Err(E::BadPort)),
            ("candidate:a_b 1 UDP 5 10.0.1.1 1 typ host", Err(E::BadFoundation)),
            ("candidate:1 1 UDP 5 10.0.1.1 1 typ srflx raddr", Err(E::MissingField("extension value"))),
            ("candidate:1 1 UDP 5 10.0.1.1 1 typ srflx raddr 1.2.3.4", Err(E::BadRelated)),
            ("candidate:1 1 UDP 5 10.0.1.1 1 typ srflx raddr 1.2.3.4 x y", Err(E::BadRelated)),
            ("candidate:1 1 UDP 5 10.0.1.1", Err(E::MissingField("port"))),
        ];
        for (line, want) in cases {
            check_parse(line, *want);
        }
    }

    #[test]
    fn sdp_round_trip_of_built_candidates() {
        let server: IpAddr = "203.0.113.1".parse().unwrap();
        for c in [
            Candidate::host("[fe80::1]:9".parse().unwrap()),
            Candidate::server_reflexive(
                "198.51.100.1:5000".parse().unwrap(),
                "10.0.0.1:5000".parse().unwrap(),
                server,
            ),
            Candidate::relayed("203.0.113.1:40000".parse().unwrap(), None, server),
        ] {
            let back = Candidate::from_sdp(&c.to_sdp()).unwrap();
            assert_eq!(back.address(), c.address());
            assert_eq!(back.kind(), c.kind());
            assert_eq!(back.priority(), c.priority());
            assert_eq!(back.foundation(), c.foundation());
            assert_eq!(back.related_address(), c.related_address());
        }
    }
}
