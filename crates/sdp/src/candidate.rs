//! The `candidate` attribute of RFC 8839 §5.1.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use nom::bytes::complete::{tag, take_till1};
use nom::combinator::map_res;
use nom::sequence::{preceded, terminated};
use nom::Parser;

use crate::parse::{
    check_ice_chars, field, finish, is_token_char, is_vchar, sp, token, token_end, uint, vchars,
    PErr, Res,
};
use crate::ParseError;

/// The address of a candidate: an IP address, or a name (an mDNS
/// `xxxx.local` name as browsers hand out for host candidates, or an FQDN).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A host name, written as given.
    Fqdn(String),
}

impl Address {
    /// Reads a `connection-address`: an IP address if it parses as one,
    /// otherwise a host name of letters, digits, `-`, `_` and `.` that is not
    /// made of digits and dots only (so `999.1.1.1` is an error, not a name).
    pub fn parse(s: &str) -> Result<Address, ParseError> {
        parse_address(s, "connection-address")
    }

    /// Whether this is an mDNS name (ends in `.local`).
    pub fn is_mdns(&self) -> bool {
        match self {
            Address::Ip(_) => false,
            Address::Fqdn(name) => {
                let lower = name.to_ascii_lowercase();
                lower.ends_with(".local") || lower.ends_with(".local.")
            }
        }
    }

    /// The IP address, if this is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Address::Ip(ip) => Some(*ip),
            Address::Fqdn(_) => None,
        }
    }

    fn validate(&self, name: &'static str) -> Result<(), ParseError> {
        match self {
            Address::Ip(_) => Ok(()),
            Address::Fqdn(s) => match parse_address(s, name)? {
                Address::Fqdn(_) => Ok(()),
                Address::Ip(_) => Err(ParseError::Invalid { field: name }),
            },
        }
    }
}

fn parse_address(s: &str, name: &'static str) -> Result<Address, ParseError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Address::Ip(ip));
    }
    let name_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let numeric = s.chars().all(|c| c.is_ascii_digit() || c == '.');
    if s.is_empty() || s.len() > 253 || numeric || !s.chars().all(name_chars) {
        return Err(ParseError::Invalid { field: name });
    }
    Ok(Address::Fqdn(s.to_owned()))
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(ip) => ip.fmt(f),
            Address::Fqdn(name) => f.write_str(name),
        }
    }
}

impl From<IpAddr> for Address {
    fn from(ip: IpAddr) -> Self {
        Address::Ip(ip)
    }
}

/// The transport of a candidate (`transport = "UDP" / transport-extension`).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP (RFC 8839).
    Udp,
    /// TCP (RFC 6544).
    Tcp,
    /// Any other `token`, kept as written.
    Other(String),
}

/// The candidate type (`typ host` …; RFC 8839 §5.1).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CandidateType {
    /// `host`
    Host,
    /// `srflx`: server reflexive.
    ServerReflexive,
    /// `prflx`: peer reflexive.
    PeerReflexive,
    /// `relay`
    Relay,
    /// Any other `token`, kept as written.
    Other(String),
}

impl CandidateType {
    fn as_str(&self) -> &str {
        match self {
            CandidateType::Host => "host",
            CandidateType::ServerReflexive => "srflx",
            CandidateType::PeerReflexive => "prflx",
            CandidateType::Relay => "relay",
            CandidateType::Other(s) => s,
        }
    }
}

impl fmt::Display for CandidateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `tcptype` of a TCP candidate (RFC 6544 §4.5).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpType {
    /// `active`: opens connections, does not accept them.
    Active,
    /// `passive`: accepts connections.
    Passive,
    /// `so`: simultaneous open.
    SimultaneousOpen,
}

impl TcpType {
    fn as_str(self) -> &'static str {
        match self {
            TcpType::Active => "active",
            TcpType::Passive => "passive",
            TcpType::SimultaneousOpen => "so",
        }
    }
}

impl fmt::Display for TcpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An extension attribute of a candidate (`extension-att-name
/// extension-att-value`), the ones browsers write typed, others kept.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Extension {
    /// `generation N` (Chromium; the ICE generation, bumped on restart).
    Generation(u32),
    /// `ufrag X` (Chromium; the ufrag this candidate belongs to).
    Ufrag(String),
    /// `network-id N` (Chromium).
    NetworkId(u32),
    /// `network-cost N` (Chromium: 10 wired/wifi, 50 cellular, 999 unknown…).
    NetworkCost(u32),
    /// Any other pair, kept as written.
    Other {
        /// `extension-att-name` (a `token`).
        name: String,
        /// `extension-att-value` (visible characters).
        value: String,
    },
}

impl Extension {
    /// The `extension-att-name`.
    pub fn name(&self) -> &str {
        match self {
            Extension::Generation(_) => "generation",
            Extension::Ufrag(_) => "ufrag",
            Extension::NetworkId(_) => "network-id",
            Extension::NetworkCost(_) => "network-cost",
            Extension::Other { name, .. } => name,
        }
    }

    fn validate(&self) -> Result<(), ParseError> {
        let vchars = |s: &str| !s.is_empty() && s.chars().all(is_vchar);
        match self {
            Extension::Ufrag(v) if !vchars(v) => Err(ParseError::Invalid { field: "ufrag" }),
            Extension::Other { name, value } => {
                let known = matches!(
                    name.as_str(),
                    "raddr"
                        | "rport"
                        | "tcptype"
                        | "generation"
                        | "ufrag"
                        | "network-id"
                        | "network-cost"
                );
                if known || name.is_empty() || !name.chars().all(is_token_char) {
                    Err(ParseError::Invalid {
                        field: "extension-att-name",
                    })
                } else if !vchars(value) {
                    Err(ParseError::Invalid {
                        field: "extension-att-value",
                    })
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Extension::Generation(n) | Extension::NetworkId(n) | Extension::NetworkCost(n) => {
                write!(f, "{} {n}", self.name())
            }
            Extension::Ufrag(v) => write!(f, "ufrag {v}"),
            Extension::Other { name, value } => write!(f, "{name} {value}"),
        }
    }
}

/// One ICE candidate, the `candidate` attribute of RFC 8839 §5.1.
///
/// Read it with [`Candidate::parse`] (or `str::parse`) from any of the forms
/// browsers use: `a=candidate:…` (an SDP line), `candidate:…` (what
/// `RTCIceCandidate.candidate` holds) or the bare `842163049 1 udp …`.
/// `Display` writes the `candidate:…` form, [`Candidate::to_sdp_line`] the
/// `a=candidate:…` one; for canonical input, writing gives back the same text.
///
/// ```
/// use p2p_sdp::{Candidate, CandidateType};
/// let line = "candidate:842163049 1 udp 1677729535 203.0.113.5 54321 typ srflx \
///             raddr 192.168.1.5 rport 54321 generation 0 ufrag Xy3v network-cost 10";
/// let c: Candidate = line.parse()?;
/// assert_eq!(c.kind(), &CandidateType::ServerReflexive);
/// assert_eq!(c.priority(), 1677729535);
/// assert_eq!(c.ufrag(), Some("Xy3v"));
/// assert_eq!(c.to_string(), line);
/// # Ok::<(), p2p_sdp::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Candidate {
    foundation: String,
    component: u16,
    transport: Transport,
    transport_uppercase: bool,
    priority: u32,
    address: Address,
    port: u16,
    kind: CandidateType,
    related: Option<(Address, u16)>,
    tcp_type: Option<TcpType>,
    extensions: Vec<Extension>,
}

impl Candidate {
    /// A candidate with the mandatory fields. `foundation` must be 1 to 32
    /// `ice-char`s and `component` 1 to 256 (RFC 8445 §5.1.1.1).
    pub fn new(
        foundation: impl Into<String>,
        component: u16,
        transport: Transport,
        priority: u32,
        address: Address,
        port: u16,
        kind: CandidateType,
    ) -> Result<Candidate, ParseError> {
        let foundation = foundation.into();
        check_ice_chars(&foundation, "foundation", 1, 32)?;
        check_component(component)?;
        if let Transport::Other(t) = &transport {
            let known = t.eq_ignore_ascii_case("udp") || t.eq_ignore_ascii_case("tcp");
            if known || t.is_empty() || !t.chars().all(is_token_char) {
                return Err(ParseError::Invalid { field: "transport" });
            }
        }
        if let CandidateType::Other(t) = &kind {
            let known = matches!(t.as_str(), "host" | "srflx" | "prflx" | "relay");
            if known || t.is_empty() || !t.chars().all(is_token_char) {
                return Err(ParseError::Invalid { field: "cand-type" });
            }
        }
        address.validate("connection-address")?;
        Ok(Candidate {
            foundation,
            component,
            transport,
            transport_uppercase: false,
            priority,
            address,
            port,
            kind,
            related: None,
            tcp_type: None,
            extensions: Vec::new(),
        })
    }

    /// Sets `raddr`/`rport`, the related address and port.
    pub fn with_related(mut self, address: Address, port: u16) -> Result<Candidate, ParseError> {
        address.validate("raddr")?;
        self.related = Some((address, port));
        Ok(self)
    }

    /// Sets the `tcptype`.
    pub fn with_tcp_type(mut self, tcp_type: TcpType) -> Candidate {
        self.tcp_type = Some(tcp_type);
        self
    }

    /// Appends an extension attribute (written after `raddr`, `rport` and
    /// `tcptype`, in the order added). `raddr`, `rport` and `tcptype` are not
    /// extensions here: use [`Candidate::with_related`] and
    /// [`Candidate::with_tcp_type`].
    pub fn with_extension(mut self, extension: Extension) -> Result<Candidate, ParseError> {
        extension.validate()?;
        self.extensions.push(extension);
        Ok(self)
    }

    /// Writes the transport as `UDP`/`TCP` (Firefox) rather than `udp`/`tcp`
    /// (Chromium). Parsing remembers which one was read.
    /// An unknown transport is always written as given.
    pub fn with_uppercase_transport(mut self, uppercase: bool) -> Candidate {
        self.transport_uppercase = uppercase && !matches!(self.transport, Transport::Other(_));
        self
    }

    /// Reads a candidate from `a=candidate:…`, `candidate:…` or the bare
    /// attribute value.
    pub fn parse(s: &str) -> Result<Candidate, ParseError> {
        let value = match s.strip_prefix("a=") {
            Some(rest) => rest
                .strip_prefix("candidate:")
                .ok_or(ParseError::Unexpected {
                    expected: "candidate",
                })?,
            None => s.strip_prefix("candidate:").unwrap_or(s),
        };
        finish(candidate_value(value), "candidate")
    }

    /// The `a=candidate:…` SDP line (without line ending).
    pub fn to_sdp_line(&self) -> String {
        format!("a={self}")
    }

    /// The foundation (1 to 32 `ice-char`s).
    pub fn foundation(&self) -> &str {
        &self.foundation
    }
    /// The component id (1 for RTP or a data channel, 2 for RTCP).
    pub fn component(&self) -> u16 {
        self.component
    }
    /// The transport.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }
    /// The priority.
    pub fn priority(&self) -> u32 {
        self.priority
    }
    /// The connection address.
    pub fn address(&self) -> &Address {
        &self.address
    }
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The candidate type.
    pub fn kind(&self) -> &CandidateType {
        &self.kind
    }
    /// `raddr` and `rport`, if given.
    pub fn related(&self) -> Option<(&Address, u16)> {
        self.related.as_ref().map(|(a, p)| (a, *p))
    }
    /// The `tcptype`, if given.
    pub fn tcp_type(&self) -> Option<TcpType> {
        self.tcp_type
    }
    /// The extension attributes, in order (not `raddr`, `rport`, `tcptype`).
    pub fn extensions(&self) -> &[Extension] {
        &self.extensions
    }
    /// The first `generation` extension.
    pub fn generation(&self) -> Option<u32> {
        self.extensions.iter().find_map(|e| match e {
            Extension::Generation(n) => Some(*n),
            _ => None,
        })
    }
    /// The first `ufrag` extension.
    pub fn ufrag(&self) -> Option<&str> {
        self.extensions.iter().find_map(|e| match e {
            Extension::Ufrag(u) => Some(u.as_str()),
            _ => None,
        })
    }
    /// The first `network-id` extension.
    pub fn network_id(&self) -> Option<u32> {
        self.extensions.iter().find_map(|e| match e {
            Extension::NetworkId(n) => Some(*n),
            _ => None,
        })
    }
    /// The first `network-cost` extension.
    pub fn network_cost(&self) -> Option<u32> {
        self.extensions.iter().find_map(|e| match e {
            Extension::NetworkCost(n) => Some(*n),
            _ => None,
        })
    }
}

impl FromStr for Candidate {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Candidate::parse(s)
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match (&self.transport, self.transport_uppercase) {
            (Transport::Udp, false) => "udp",
            (Transport::Udp, true) => "UDP",
            (Transport::Tcp, false) => "tcp",
            (Transport::Tcp, true) => "TCP",
            (Transport::Other(t), _) => t,
        };
        write!(
            f,
            "candidate:{} {} {} {} {} {} typ {}",
            self.foundation,
            self.component,
            transport,
            self.priority,
            self.address,
            self.port,
            self.kind
        )?;
        if let Some((addr, port)) = &self.related {
            write!(f, " raddr {addr} rport {port}")?;
        }
        if let Some(t) = self.tcp_type {
            write!(f, " tcptype {t}")?;
        }
        for e in &self.extensions {
            write!(f, " {e}")?;
        }
        Ok(())
    }
}

fn check_component(c: u16) -> Result<(), ParseError> {
    if (1..=256).contains(&c) {
        Ok(())
    } else {
        Err(ParseError::OutOfRange {
            field: "component-id",
        })
    }
}

/// `foundation = 1*32ice-char`
fn foundation(i: &str) -> Res<'_, &str> {
    map_res(take_till1(|c| c == ' '), |f: &str| {
        check_ice_chars(f, "foundation", 1, 32).map(|()| f)
    })
    .parse(i)
}

/// `component-id = 1*3DIGIT` (a value 1 to 256)
fn component_id(i: &str) -> Res<'_, u16> {
    map_res(uint::<u16>("component-id"), |c| {
        check_component(c).map(|()| c)
    })
    .parse(i)
}

/// `transport = "UDP" / transport-extension` (case-insensitive, as ABNF
/// literals are); the second value says whether it was all upper case.
fn transport(i: &str) -> Res<'_, (Transport, bool)> {
    let (rest, t) = terminated(token, token_end).parse(i)?;
    let upper = !t.chars().any(|c| c.is_ascii_lowercase());
    let transport = if t.eq_ignore_ascii_case("udp") {
        Transport::Udp
    } else if t.eq_ignore_ascii_case("tcp") {
        Transport::Tcp
    } else {
        // The spelling of an unknown transport is kept in the string.
        return Ok((rest, (Transport::Other(t.to_owned()), false)));
    };
    Ok((rest, (transport, upper)))
}

/// `connection-address` (RFC 8866), as an IP address or a host name.
fn connection_address(name: &'static str) -> impl FnMut(&str) -> Res<'_, Address> {
    move |i| map_res(take_till1(|c| c == ' '), |s| parse_address(s, name)).parse(i)
}

/// `cand-type = "typ" SP candidate-types`
fn cand_type(i: &str) -> Res<'_, CandidateType> {
    let (rest, t) = preceded(
        field("typ", terminated(tag("typ"), token_end)),
        field("cand-type", preceded(sp, terminated(token, token_end))),
    )
    .parse(i)?;
    let kind = match t {
        "host" => CandidateType::Host,
        "srflx" => CandidateType::ServerReflexive,
        "prflx" => CandidateType::PeerReflexive,
        "relay" => CandidateType::Relay,
        other => CandidateType::Other(other.to_owned()),
    };
    Ok((rest, kind))
}

/// `tcp-type = "active" / "passive" / "so"` (RFC 6544 §4.5)
fn tcp_type(i: &str) -> Res<'_, TcpType> {
    let (rest, t) = terminated(token, token_end).parse(i)?;
    let t = match t {
        "active" => TcpType::Active,
        "passive" => TcpType::Passive,
        "so" => TcpType::SimultaneousOpen,
        _ => return Err(nom::Err::Error(PErr(None))),
    };
    Ok((rest, t))
}

fn value<'a, O>(
    name: &'static str,
    p: impl Parser<&'a str, Output = O, Error = PErr>,
) -> impl FnMut(&'a str) -> Res<'a, O> {
    field(name, preceded(sp, terminated(p, token_end)))
}

/// The whole attribute value, from the foundation on:
///
/// ```text
/// foundation SP component-id SP transport SP priority SP
/// connection-address SP port SP cand-type [SP rel-addr] [SP rel-port]
/// *(SP cand-extension)
/// ```
///
/// `raddr`, `rport` and `tcptype` are accepted anywhere among the trailing
/// pairs, each at most once; `raddr` and `rport` come together.
fn candidate_value(i: &str) -> Res<'_, Candidate> {
    let (i, foundation) = field("foundation", terminated(foundation, token_end)).parse(i)?;
    let (i, component) = value("component-id", component_id).parse(i)?;
    let (i, (transport, transport_uppercase)) = value("transport", transport).parse(i)?;
    let (i, priority) = value("priority", uint::<u32>("priority")).parse(i)?;
    let (i, address) = value(
        "connection-address",
        connection_address("connection-address"),
    )
    .parse(i)?;
    let (i, port) = value("port", uint::<u16>("port")).parse(i)?;
    let (mut i, kind) = field("typ", preceded(sp, cand_type)).parse(i)?;

    let mut raddr = None;
    let mut rport = None;
    let mut tcp = None;
    let mut extensions = Vec::new();
    let dup = |field| nom::Err::Failure(PErr(Some(ParseError::Duplicate { field })));
    while !i.is_empty() {
        let (rest, name) = value("extension-att-name", token).parse(i)?;
        i = match name {
            "raddr" => {
                let (rest, a) = value("raddr", connection_address("raddr")).parse(rest)?;
                if raddr.replace(a).is_some() {
                    return Err(dup("raddr"));
                }
                rest
            }
            "rport" => {
                let (rest, p) = value("rport", uint::<u16>("rport")).parse(rest)?;
                if rport.replace(p).is_some() {
                    return Err(dup("rport"));
                }
                rest
            }
            "tcptype" => {
                let (rest, t) = value("tcptype", tcp_type).parse(rest)?;
                if tcp.replace(t).is_some() {
                    return Err(dup("tcptype"));
                }
                rest
            }
            "generation" => {
                let (rest, n) = value("generation", uint("generation")).parse(rest)?;
                extensions.push(Extension::Generation(n));
                rest
            }
            "network-id" => {
                let (rest, n) = value("network-id", uint("network-id")).parse(rest)?;
                extensions.push(Extension::NetworkId(n));
                rest
            }
            "network-cost" => {
                let (rest, n) = value("network-cost", uint("network-cost")).parse(rest)?;
                extensions.push(Extension::NetworkCost(n));
                rest
            }
            "ufrag" => {
                let (rest, u) = value("ufrag", vchars).parse(rest)?;
                extensions.push(Extension::Ufrag(u.to_owned()));
                rest
            }
            other => {
                let (rest, v) = value("extension-att-value", vchars).parse(rest)?;
                extensions.push(Extension::Other {
                    name: other.to_owned(),
                    value: v.to_owned(),
                });
                rest
            }
        };
    }
    let related = match (raddr, rport) {
        (Some(a), Some(p)) => Some((a, p)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(nom::Err::Failure(PErr(Some(ParseError::Unpaired {
                field: "raddr",
                requires: "rport",
            }))))
        }
        (None, Some(_)) => {
            return Err(nom::Err::Failure(PErr(Some(ParseError::Unpaired {
                field: "rport",
                requires: "raddr",
            }))))
        }
    };
    Ok((
        i,
        Candidate {
            foundation: foundation.to_owned(),
            component,
            transport,
            transport_uppercase,
            priority,
            address,
            port,
            kind,
            related,
            tcp_type: tcp,
            extensions,
        },
    ))
}
