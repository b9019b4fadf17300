//! Candidates (RFC 8445 §5.1): kinds, priorities (§5.1.2.1), foundations
//! (§5.1.1.3), and their conversion from and to the `candidate` attribute
//! of RFC 8839 §5.1 as `p2p_sdp` reads and writes it (its grammar is the
//! only one: this module parses no text).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use p2p_proto::Transport;
pub use p2p_sdp::TcpType;
use p2p_sdp::{Address, CandidateType};

/// The kind ("type") of a candidate (RFC 8445 §5.1.1).
#[non_exhaustive]
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

    /// The type preference of a TCP candidate of this kind: below every UDP
    /// one but relayed (libwebrtc's values: host 90, peer-reflexive 80,
    /// server-reflexive 65), so that UDP wins where it works and a direct
    /// TCP path wins over a relay where it does not (RFC 6544 §4.2 leaves
    /// the values to the agent).
    pub const fn tcp_type_preference(self) -> u32 {
        match self {
            CandidateKind::Host => 90,
            CandidateKind::PeerReflexive => 80,
            CandidateKind::ServerReflexive => 65,
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

    /// The kind of an SDP candidate type; `None` for a type ICE does not
    /// define.
    pub fn from_sdp(kind: &CandidateType) -> Option<Self> {
        Some(match kind {
            CandidateType::Host => CandidateKind::Host,
            CandidateType::ServerReflexive => CandidateKind::ServerReflexive,
            CandidateType::PeerReflexive => CandidateKind::PeerReflexive,
            CandidateType::Relay => CandidateKind::Relayed,
            _ => return None,
        })
    }

    /// The SDP candidate type.
    pub fn to_sdp(self) -> CandidateType {
        match self {
            CandidateKind::Host => CandidateType::Host,
            CandidateKind::ServerReflexive => CandidateType::ServerReflexive,
            CandidateKind::PeerReflexive => CandidateType::PeerReflexive,
            CandidateKind::Relayed => CandidateType::Relay,
        }
    }
}

impl fmt::Display for CandidateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sdp_name())
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
    eat(transport.as_str().as_bytes());
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
/// and address families apart). Remote candidates come from a
/// `p2p_sdp::Candidate` the caller parsed once ([`Candidate::from_sdp`]);
/// a candidate writes itself as one ([`Candidate::to_sdp`]), and `Display`
/// and `FromStr` go through p2p-sdp's grammar, the only one.
///
/// ```
/// use p2p_ice::{Candidate, CandidateError, CandidateKind};
///
/// let line = "candidate:1 1 UDP 1694498815 192.0.2.3 45664 typ srflx raddr 10.0.1.1 rport 8998";
/// let sdp = p2p_sdp::Candidate::parse(line)?;
/// let c = Candidate::from_sdp(&sdp)?;
/// assert_eq!(c.kind(), CandidateKind::ServerReflexive);
/// assert_eq!(c.related_address(), Some("10.0.1.1:8998".parse()?));
/// assert_eq!(
///     c.to_string(),
///     "candidate:1 1 udp 1694498815 192.0.2.3 45664 typ srflx raddr 10.0.1.1 rport 8998"
/// );
///
/// // A browser's mDNS host candidate: the name must be resolved first.
/// let mdns = p2p_sdp::Candidate::parse("candidate:2 1 udp 2122260223 4f1b.local 5000 typ host")?;
/// assert_eq!(Candidate::from_sdp(&mdns), Err(CandidateError::MdnsName("4f1b.local".into())));
/// let resolved = Candidate::from_sdp_resolved(&mdns, "192.168.1.5".parse()?)?;
/// assert_eq!(resolved.address(), "192.168.1.5:5000".parse()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Candidate {
    foundation: String,
    transport: Transport,
    priority: u32,
    address: SocketAddr,
    base: SocketAddr,
    kind: CandidateKind,
    related: Option<SocketAddr>,
    /// RFC 6544: the TCP candidate's role in opening the connection.
    tcp_type: Option<TcpType>,
}

/// The port an active TCP candidate is signalled with (RFC 6544 §4.5: the
/// discard port; the real one is the connection's, unknown in advance).
pub const ACTIVE_TCP_PORT: u16 = 9;

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
            transport: Transport::Udp,
            priority: candidate_priority(kind.type_preference(), DEFAULT_LOCAL_PREFERENCE, 1),
            address,
            base,
            kind,
            related,
            tcp_type: None,
        }
    }

    /// A host candidate over TCP (RFC 6544): `passive` listens on `address`
    /// (the caller accepts connections there); `active` connects out from
    /// the IP of `address`, whose port is replaced by
    /// [`ACTIVE_TCP_PORT`]: its transmits carry that source, and the caller
    /// opens (or reuses) a connection from that IP to their destination,
    /// and hands what arrives on it in with that address as destination.
    /// Simultaneous-open candidates are not made (they need NAT-assisted
    /// port prediction).
    pub fn host_tcp(address: SocketAddr, tcp_type: TcpType) -> Self {
        let address = match tcp_type {
            TcpType::Active => SocketAddr::new(address.ip(), ACTIVE_TCP_PORT),
            _ => address,
        };
        let mut c = Candidate::new(CandidateKind::Host, address, address, None, None);
        c.transport = Transport::Tcp;
        c.tcp_type = Some(tcp_type);
        c.foundation = compute_foundation(CandidateKind::Host, address.ip(), None, Transport::Tcp);
        c
    }

    /// The same candidate over TCP with `tcp_type` (for learnt ones).
    pub(crate) fn over_tcp(mut self, tcp_type: TcpType) -> Self {
        self.transport = Transport::Tcp;
        self.tcp_type = Some(tcp_type);
        self
    }

    /// The TCP type (RFC 6544 §4.5) of a TCP candidate; `None` for UDP.
    pub fn tcp_type(&self) -> Option<TcpType> {
        self.tcp_type
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

    /// A server-reflexive TCP candidate (RFC 6544): `address` as a STUN
    /// server at `server` saw a TCP connection from the host address `base`
    /// (a passive candidate's own port). Only passive ones are meaningful:
    /// an active candidate's port is not (9).
    pub fn server_reflexive_tcp(
        address: SocketAddr,
        base: SocketAddr,
        server: IpAddr,
        tcp_type: TcpType,
    ) -> Self {
        let mut c = Candidate::server_reflexive(address, base, server).over_tcp(tcp_type);
        c.foundation = compute_foundation(
            CandidateKind::ServerReflexive,
            base.ip(),
            Some(server),
            Transport::Tcp,
        );
        c
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
        1
    }
    /// The transport: UDP, or TCP (RFC 6544) with a [`tcp_type`](Candidate::tcp_type).
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

    /// The candidate a peer signalled, from its `candidate` attribute as
    /// p2p-sdp parsed it. Its base is its address. Extension attributes
    /// (`generation`, `ufrag` …) are the caller's business and dropped; a
    /// related address that is a name (browsers hide it behind mDNS) is
    /// dropped too: ICE does not use it.
    ///
    /// A candidate whose address is a name cannot be checked until it is
    /// resolved: [`CandidateError::MdnsName`] or
    /// [`CandidateError::HostName`] carry it, so the caller can resolve it
    /// and call [`Candidate::from_sdp_resolved`], or skip the candidate.
    pub fn from_sdp(sdp: &p2p_sdp::Candidate) -> Result<Candidate, CandidateError> {
        let ip = match sdp.address() {
            Address::Ip(ip) => *ip,
            name @ Address::Fqdn(n) if name.is_mdns() => {
                return Err(CandidateError::MdnsName(n.clone()))
            }
            Address::Fqdn(n) => return Err(CandidateError::HostName(n.clone())),
        };
        Candidate::from_sdp_at(sdp, ip)
    }

    /// [`Candidate::from_sdp`] for a candidate whose address is a name the
    /// caller resolved to `ip` (an mDNS name, RFC 8839 §5.1 and
    /// draft-ietf-mmusic-mdns-ice-candidates, or an FQDN). For a candidate
    /// whose address is an IP address, `ip` replaces it.
    pub fn from_sdp_resolved(
        sdp: &p2p_sdp::Candidate,
        ip: IpAddr,
    ) -> Result<Candidate, CandidateError> {
        Candidate::from_sdp_at(sdp, ip)
    }

    fn from_sdp_at(sdp: &p2p_sdp::Candidate, ip: IpAddr) -> Result<Candidate, CandidateError> {
        let (transport, tcp_type) = match (sdp.transport(), sdp.tcp_type()) {
            (p2p_sdp::Transport::Udp, _) => (Transport::Udp, None),
            // RFC 6544 §4.5: a TCP candidate says how it connects.
            (p2p_sdp::Transport::Tcp, Some(t)) => (Transport::Tcp, Some(t)),
            (other, _) => return Err(CandidateError::UnsupportedTransport(other.clone())),
        };
        if sdp.component() != 1 {
            return Err(CandidateError::UnsupportedComponent(sdp.component()));
        }
        let priority = sdp.priority();
        if !(1..=0x7FFF_FFFF).contains(&priority) {
            return Err(CandidateError::BadPriority(priority));
        }
        let kind = CandidateKind::from_sdp(sdp.kind())
            .ok_or_else(|| CandidateError::UnknownType(sdp.kind().to_string()))?;
        let related = sdp
            .related()
            .and_then(|(a, port)| a.ip().map(|ip| SocketAddr::new(ip, port)));
        let address = SocketAddr::new(ip, sdp.port());
        Ok(Candidate {
            foundation: sdp.foundation().to_owned(),
            transport,
            priority,
            address,
            base: address,
            kind,
            related,
            tcp_type,
        })
    }

    /// The `candidate` attribute for the peer (RFC 8839 §5.1), as a
    /// `p2p_sdp::Candidate`: its `Display` is the `candidate:…` value,
    /// `to_sdp_line` the `a=candidate:…` line.
    pub fn to_sdp(&self) -> p2p_sdp::Candidate {
        let transport = match self.transport {
            Transport::Tcp => p2p_sdp::Transport::Tcp,
            _ => p2p_sdp::Transport::Udp,
        };
        let build = |foundation: &str| {
            let c = p2p_sdp::Candidate::new(
                foundation,
                1,
                transport.clone(),
                self.priority,
                Address::Ip(self.address.ip()),
                self.address.port(),
                self.kind.to_sdp(),
            )?;
            let c = match self.tcp_type {
                Some(t) => c.with_tcp_type(t),
                None => c,
            };
            match self.related {
                Some(r) => c.with_related(Address::Ip(r.ip()), r.port()),
                None => Ok(c),
            }
        };
        // The foundation is 1 to 32 ice-chars by construction (computed,
        // `prflx<n>`, or parsed by p2p-sdp), so the first build succeeds;
        // the fallback, a computed foundation, cannot fail either.
        build(&self.foundation).unwrap_or_else(|_| {
            let f = compute_foundation(self.kind, self.base.ip(), None, self.transport);
            match build(&f) {
                Ok(c) => c,
                Err(_) => unreachable!("a computed foundation is valid SDP"),
            }
        })
    }
}

impl TryFrom<&p2p_sdp::Candidate> for Candidate {
    type Error = CandidateError;

    /// [`Candidate::from_sdp`].
    fn try_from(sdp: &p2p_sdp::Candidate) -> Result<Self, Self::Error> {
        Candidate::from_sdp(sdp)
    }
}

impl From<&Candidate> for p2p_sdp::Candidate {
    /// [`Candidate::to_sdp`].
    fn from(c: &Candidate) -> Self {
        c.to_sdp()
    }
}

impl fmt::Display for Candidate {
    /// The SDP `candidate:…` attribute value, as p2p-sdp writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_sdp().fmt(f)
    }
}

impl FromStr for Candidate {
    type Err = CandidateError;

    /// p2p-sdp's parse (`a=candidate:…`, `candidate:…` or the bare value),
    /// then [`Candidate::from_sdp`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Candidate::from_sdp(&p2p_sdp::Candidate::parse(s)?)
    }
}

/// Why a `candidate` attribute cannot be a candidate of the agent.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CandidateError {
    /// The text does not follow the grammar of RFC 8839 §5.1 (p2p-sdp's
    /// parser said so; only [`Candidate::from_str`](FromStr) parses text).
    #[error("bad candidate attribute: {0}")]
    Syntax(#[from] p2p_sdp::ParseError),
    /// The transport is neither UDP nor TCP with a `tcptype` (RFC 6544).
    #[error("unsupported transport {0:?} (UDP, or TCP with a tcptype)")]
    UnsupportedTransport(p2p_sdp::Transport),
    /// Only component 1 is supported (one data stream, RTP/RTCP
    /// multiplexed or a data channel).
    #[error("component {0} is not supported (only 1)")]
    UnsupportedComponent(u16),
    /// The priority is 0 or above 2^31 - 1 (RFC 8445 §5.1.2).
    #[error("priority {0} out of range (1 to 2^31-1)")]
    BadPriority(u32),
    /// The candidate type is not host, srflx, prflx or relay.
    #[error("unknown candidate type {0}")]
    UnknownType(String),
    /// The address is an mDNS name (`….local`, as browsers hand out for
    /// host candidates) not resolved yet: resolve it and use
    /// [`Candidate::from_sdp_resolved`], or skip the candidate.
    #[error("the address {0} is an mDNS name, not resolved")]
    MdnsName(String),
    /// The address is a host name (an FQDN) not resolved yet.
    #[error("the address {0} is a host name, not resolved")]
    HostName(String),
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

    fn is_ice_char(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
    }

    /// A line read by p2p-sdp's grammar, then made a candidate: the
    /// candidate as written back, or the typed error.
    fn check_parse(line: &str, expected: Result<&str, CandidateError>) {
        match (line.parse::<Candidate>(), expected) {
            (Ok(c), Ok(printed)) => assert_eq!(c.to_string(), printed, "{line}"),
            (Err(e), Err(want)) => assert_eq!(e, want, "{line}"),
            (got, want) => panic!("{line}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn sdp_candidate_lines() {
        use p2p_sdp::ParseError as P;
        use CandidateError as E;
        let cases: &[(&str, Result<&str, E>)] = &[
            (
                "candidate:1 1 UDP 2130706431 10.0.1.1 8998 typ host",
                Ok("candidate:1 1 udp 2130706431 10.0.1.1 8998 typ host"),
            ),
            (
                "a=candidate:2 1 udp 16777215 2001:db8::1 3478 typ relay raddr 192.0.2.3 rport 45664 generation 0",
                Ok("candidate:2 1 udp 16777215 2001:db8::1 3478 typ relay raddr 192.0.2.3 rport 45664"),
            ),
            // p2p-sdp's grammar takes the bare attribute value too (what some
            // signalling hands over); the hand-written parser it replaces
            // wanted the `candidate:` prefix.
            (
                "1 1 UDP 2130706431 10.0.1.1 8998 typ host",
                Ok("candidate:1 1 udp 2130706431 10.0.1.1 8998 typ host"),
            ),
            // A related address hidden behind mDNS is dropped, not an error.
            (
                "candidate:3 1 udp 1677729535 203.0.113.5 54321 typ srflx raddr 4f1b.local rport 9",
                Ok("candidate:3 1 udp 1677729535 203.0.113.5 54321 typ srflx"),
            ),
            ("candidate:1 1 TCP 2130706431 10.0.1.1 8998 typ host", Err(E::UnsupportedTransport(p2p_sdp::Transport::Tcp))),
            ("candidate:1 2 UDP 2130706431 10.0.1.1 8998 typ host", Err(E::UnsupportedComponent(2))),
            ("candidate:1 1 UDP 2130706431 x.local 8998 typ host", Err(E::MdnsName("x.local".into()))),
            ("candidate:1 1 UDP 2130706431 turn.example.com 8998 typ host", Err(E::HostName("turn.example.com".into()))),
            ("candidate:1 1 UDP 2130706431 10.0.1.1 8998 typ bogus", Err(E::UnknownType("bogus".into()))),
            ("candidate:1 1 UDP 0 10.0.1.1 8998 typ host", Err(E::BadPriority(0))),
            ("candidate:1 1 UDP 2147483648 10.0.1.1 8998 typ host", Err(E::BadPriority(1 << 31))),
            ("candidate:1 1 UDP 2130706431 10.0.1.1 8998 type host", Err(E::Syntax(P::Invalid { field: "typ" }))),
            ("candidate:1 0 UDP 2130706431 10.0.1.1 8998 typ host", Err(E::Syntax(P::OutOfRange { field: "component-id" }))),
            ("candidate:1 1 UDP 5 10.0.1.1 70000 typ host", Err(E::Syntax(P::OutOfRange { field: "port" }))),
            ("candidate:a_b 1 UDP 5 10.0.1.1 1 typ host", Err(E::Syntax(P::Invalid { field: "foundation" }))),
            ("candidate:1 1 UDP 5 10.0.1.1 1 typ srflx raddr", Err(E::Syntax(P::Missing { field: "raddr" }))),
            ("candidate:1 1 UDP 5 10.0.1.1 1 typ srflx raddr 1.2.3.4", Err(E::Syntax(P::Unpaired { field: "raddr", requires: "rport" }))),
            ("candidate:1 1 UDP 5 10.0.1.1 1 typ srflx raddr 1.2.3.4 x y", Err(E::Syntax(P::Unpaired { field: "raddr", requires: "rport" }))),
            ("candidate:1 1 UDP 5 10.0.1.1", Err(E::Syntax(P::Missing { field: "port" }))),
        ];
        for (line, want) in cases {
            check_parse(line, want.clone());
        }
    }

    #[test]
    fn a_resolved_mdns_candidate_takes_the_address_it_resolved_to() {
        let sdp = p2p_sdp::Candidate::parse(
            "candidate:7 1 udp 2122260223 0a1b2c3d-e4f5.local 54321 typ host generation 0",
        )
        .unwrap();
        assert_eq!(
            Candidate::from_sdp(&sdp),
            Err(CandidateError::MdnsName("0a1b2c3d-e4f5.local".into()))
        );
        let c = Candidate::from_sdp_resolved(&sdp, "192.168.1.5".parse().unwrap()).unwrap();
        assert_eq!(c.address(), "192.168.1.5:54321".parse().unwrap());
        assert_eq!(c.base(), c.address());
        assert_eq!(
            (c.kind(), c.priority(), c.foundation()),
            (CandidateKind::Host, 2122260223, "7")
        );
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
            assert_eq!(back, c.to_string().parse().unwrap());
            assert_eq!(back.address(), c.address());
            assert_eq!(back.kind(), c.kind());
            assert_eq!(back.priority(), c.priority());
            assert_eq!(back.foundation(), c.foundation());
            assert_eq!(back.related_address(), c.related_address());
        }
    }
}
