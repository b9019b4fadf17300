//! The session description of RFC 8866, as much of it as a WebRTC data
//! channel needs, every other line kept.

use std::fmt;
use std::str::FromStr;

use nom::bytes::complete::take_till1;
use nom::character::complete::char;
use nom::combinator::opt;
use nom::multi::many1;
use nom::sequence::preceded;
use nom::Parser;

use crate::parse::{field, finish, sp, token, uint, Res};
use crate::{
    Attribute, Candidate, Fingerprint, Group, IceAttribute, IceOption, ParseError, SessionError,
    Setup,
};

/// The `o=` line (RFC 8866 §5.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `username` (`-` from Chromium, `mozilla...THIS_IS_SDPARTA-…` from Firefox).
    pub username: String,
    /// `sess-id`.
    pub session_id: u64,
    /// `sess-version`.
    pub session_version: u64,
    /// `nettype` (`IN`).
    pub net_type: String,
    /// `addrtype` (`IP4`, `IP6`).
    pub addr_type: String,
    /// `unicast-address`, as written.
    pub address: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            self.username,
            self.session_id,
            self.session_version,
            self.net_type,
            self.addr_type,
            self.address
        )
    }
}

/// The `c=` line (RFC 8866 §5.7).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Connection {
    /// `nettype` (`IN`).
    pub net_type: String,
    /// `addrtype` (`IP4`, `IP6`).
    pub addr_type: String,
    /// `connection-address`, as written (with any `/ttl`).
    pub address: String,
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.net_type, self.addr_type, self.address)
    }
}

/// The `t=` line (RFC 8866 §5.9); browsers write `t=0 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timing {
    /// `start-time` (NTP seconds, 0 for unbounded).
    pub start: u64,
    /// `stop-time`.
    pub stop: u64,
}

impl fmt::Display for Timing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.start, self.stop)
    }
}

/// One line of a session or media description, after `v=`, `o=`, `s=` and
/// `m=`, in the order it appears.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Line {
    /// `c=`
    Connection(Connection),
    /// `t=`
    Timing(Timing),
    /// `a=`
    Attribute(Attribute),
    /// Any other line (`i=`, `b=`, `k=`, …), kept as written.
    Other {
        /// The type letter.
        kind: char,
        /// Everything after the `=`.
        value: String,
    },
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Line::Connection(c) => write!(f, "c={c}"),
            Line::Timing(t) => write!(f, "t={t}"),
            Line::Attribute(a) => write!(f, "a={a}"),
            Line::Other { kind, value } => write!(f, "{kind}={value}"),
        }
    }
}

impl From<Attribute> for Line {
    fn from(a: Attribute) -> Self {
        Line::Attribute(a)
    }
}

fn attributes(lines: &[Line]) -> impl Iterator<Item = &Attribute> {
    lines.iter().filter_map(|l| match l {
        Line::Attribute(a) => Some(a),
        _ => None,
    })
}

fn ice_attributes(lines: &[Line]) -> impl Iterator<Item = &IceAttribute> {
    attributes(lines).filter_map(|a| match a {
        Attribute::Ice(i) => Some(i),
        _ => None,
    })
}

fn find_ufrag(lines: &[Line]) -> Option<&str> {
    ice_attributes(lines).find_map(|a| match a {
        IceAttribute::Ufrag(u) => Some(u.as_str()),
        _ => None,
    })
}

fn find_pwd(lines: &[Line]) -> Option<&str> {
    ice_attributes(lines).find_map(|a| match a {
        IceAttribute::Pwd(p) => Some(p.as_str()),
        _ => None,
    })
}

fn find_options(lines: &[Line]) -> Option<&[IceOption]> {
    ice_attributes(lines).find_map(|a| match a {
        IceAttribute::Options(o) => Some(o.as_slice()),
        _ => None,
    })
}

fn find_fingerprint(lines: &[Line]) -> Option<&Fingerprint> {
    attributes(lines).find_map(|a| match a {
        Attribute::Fingerprint(f) => Some(f),
        _ => None,
    })
}

fn find_setup(lines: &[Line]) -> Option<Setup> {
    attributes(lines).find_map(|a| match a {
        Attribute::Setup(s) => Some(*s),
        _ => None,
    })
}

/// One media description: the `m=` line and the lines up to the next one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaDescription {
    /// `media` (`application` for a data channel).
    pub media: String,
    /// `port` (9, the discard port, when ICE picks the real one; 0 for a
    /// rejected section).
    pub port: u16,
    /// The `/number of ports` after the port, if given.
    pub port_count: Option<u16>,
    /// `proto` (`UDP/DTLS/SCTP`).
    pub protocol: String,
    /// The `fmt` list (`webrtc-datachannel`).
    pub formats: Vec<String>,
    /// The lines after `m=`, in order.
    pub lines: Vec<Line>,
}

impl MediaDescription {
    /// The attributes, in order.
    pub fn attributes(&self) -> impl Iterator<Item = &Attribute> {
        attributes(&self.lines)
    }
    /// Appends an attribute line.
    pub fn push_attribute(&mut self, attribute: impl Into<Attribute>) {
        self.lines.push(Line::Attribute(attribute.into()));
    }
    /// Whether this is an SCTP data channel section (`m=application` over
    /// `UDP/DTLS/SCTP`, `TCP/DTLS/SCTP` or `DTLS/SCTP`).
    pub fn is_data_channel(&self) -> bool {
        self.media == "application" && self.protocol.ends_with("DTLS/SCTP")
    }
    /// The first `c=` line.
    pub fn connection(&self) -> Option<&Connection> {
        self.lines.iter().find_map(|l| match l {
            Line::Connection(c) => Some(c),
            _ => None,
        })
    }
    /// `a=mid`.
    pub fn mid(&self) -> Option<&str> {
        self.attributes().find_map(|a| match a {
            Attribute::Mid(m) => Some(m.as_str()),
            _ => None,
        })
    }
    /// `a=setup`.
    pub fn setup(&self) -> Option<Setup> {
        find_setup(&self.lines)
    }
    /// `a=fingerprint` of this section (see also
    /// [`SessionDescription::fingerprint_for`]).
    pub fn fingerprint(&self) -> Option<&Fingerprint> {
        find_fingerprint(&self.lines)
    }
    /// `a=sctp-port`.
    pub fn sctp_port(&self) -> Option<u16> {
        self.attributes().find_map(|a| match a {
            Attribute::SctpPort(p) => Some(*p),
            _ => None,
        })
    }
    /// `a=max-message-size`.
    pub fn max_message_size(&self) -> Option<u64> {
        self.attributes().find_map(|a| match a {
            Attribute::MaxMessageSize(n) => Some(*n),
            _ => None,
        })
    }
    /// `a=ice-ufrag` of this section.
    pub fn ice_ufrag(&self) -> Option<&str> {
        find_ufrag(&self.lines)
    }
    /// `a=ice-pwd` of this section.
    pub fn ice_pwd(&self) -> Option<&str> {
        find_pwd(&self.lines)
    }
    /// `a=ice-options` of this section.
    pub fn ice_options(&self) -> Option<&[IceOption]> {
        find_options(&self.lines)
    }
    /// The `a=candidate` lines, in order.
    pub fn candidates(&self) -> impl Iterator<Item = &Candidate> {
        ice_attributes(&self.lines).filter_map(|a| match a {
            IceAttribute::Candidate(c) => Some(c),
            _ => None,
        })
    }
    /// Whether `a=end-of-candidates` is present.
    pub fn end_of_candidates(&self) -> bool {
        ice_attributes(&self.lines).any(|a| *a == IceAttribute::EndOfCandidates)
    }
}

impl fmt::Display for MediaDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={} {}", self.media, self.port)?;
        if let Some(n) = self.port_count {
            write!(f, "/{n}")?;
        }
        write!(f, " {}", self.protocol)?;
        for fmt in &self.formats {
            write!(f, " {fmt}")?;
        }
        f.write_str("\r\n")?;
        for l in &self.lines {
            write!(f, "{l}\r\n")?;
        }
        Ok(())
    }
}

/// A session description (RFC 8866): `v=0`, `o=`, `s=`, the session-level
/// lines and the media descriptions.
///
/// Parsing accepts CRLF or LF line ends; writing (`Display`) uses CRLF and
/// gives back the input text for CRLF input. Lines and attributes this crate
/// does not know are kept, in order. The fields are public; values set by
/// hand must keep to their RFC 8866 grammar (no line ends, no spaces inside
/// tokens) for the written text to read back.
///
/// ```
/// use p2p_sdp::{SessionDescription, Setup};
/// let offer: SessionDescription = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
///     a=group:BUNDLE 0\r\n\
///     m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
///     a=ice-ufrag:Xy3v\r\na=ice-pwd:o2pS0X0f2o0Jd0T3F9m9k7Yq\r\n\
///     a=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\n".parse()?;
/// let dc = offer.data_channel().unwrap();
/// assert_eq!(dc.mid(), Some("0"));
/// assert_eq!(dc.setup(), Some(Setup::ActPass));
/// assert_eq!(offer.bundle(), Some(&["0".to_owned()][..]));
/// # Ok::<(), p2p_sdp::SessionError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionDescription {
    /// `o=`
    pub origin: Origin,
    /// `s=` (`-` from browsers).
    pub session_name: String,
    /// The session-level lines after `s=` (`t=` among them), in order.
    pub lines: Vec<Line>,
    /// The media descriptions, in order.
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// Reads a session description.
    pub fn parse(text: &str) -> Result<SessionDescription, SessionError> {
        parse_session(text)
    }

    /// The session-level attributes, in order.
    pub fn attributes(&self) -> impl Iterator<Item = &Attribute> {
        attributes(&self.lines)
    }
    /// The `t=` line.
    pub fn timing(&self) -> Option<Timing> {
        self.lines.iter().find_map(|l| match l {
            Line::Timing(t) => Some(*t),
            _ => None,
        })
    }
    /// The mids of the first `a=group:BUNDLE`.
    pub fn bundle(&self) -> Option<&[String]> {
        self.attributes().find_map(|a| match a {
            Attribute::Group(Group { semantics, mids }) if semantics == "BUNDLE" => {
                Some(mids.as_slice())
            }
            _ => None,
        })
    }
    /// Whether the session is `a=ice-lite`.
    pub fn ice_lite(&self) -> bool {
        self.attributes()
            .any(|a| *a == Attribute::Ice(IceAttribute::Lite))
    }
    /// Session-level `a=ice-ufrag`.
    pub fn ice_ufrag(&self) -> Option<&str> {
        find_ufrag(&self.lines)
    }
    /// Session-level `a=ice-pwd`.
    pub fn ice_pwd(&self) -> Option<&str> {
        find_pwd(&self.lines)
    }
    /// Session-level `a=ice-options`.
    pub fn ice_options(&self) -> Option<&[IceOption]> {
        find_options(&self.lines)
    }
    /// Session-level `a=fingerprint` (Firefox puts it here).
    pub fn fingerprint(&self) -> Option<&Fingerprint> {
        find_fingerprint(&self.lines)
    }
    /// Session-level `a=setup`.
    pub fn setup(&self) -> Option<Setup> {
        find_setup(&self.lines)
    }
    /// The `a=ice-ufrag` that applies to `media`: its own, else the session's.
    pub fn ice_ufrag_for<'a>(&'a self, media: &'a MediaDescription) -> Option<&'a str> {
        media.ice_ufrag().or_else(|| self.ice_ufrag())
    }
    /// The `a=ice-pwd` that applies to `media`.
    pub fn ice_pwd_for<'a>(&'a self, media: &'a MediaDescription) -> Option<&'a str> {
        media.ice_pwd().or_else(|| self.ice_pwd())
    }
    /// The `a=ice-options` that apply to `media`.
    pub fn ice_options_for<'a>(&'a self, media: &'a MediaDescription) -> Option<&'a [IceOption]> {
        media.ice_options().or_else(|| self.ice_options())
    }
    /// The `a=fingerprint` that applies to `media`.
    pub fn fingerprint_for<'a>(&'a self, media: &'a MediaDescription) -> Option<&'a Fingerprint> {
        media.fingerprint().or_else(|| self.fingerprint())
    }
    /// The `a=setup` that applies to `media`.
    pub fn setup_for(&self, media: &MediaDescription) -> Option<Setup> {
        media.setup().or_else(|| self.setup())
    }
    /// The first data channel section with a non-zero port.
    pub fn data_channel(&self) -> Option<&MediaDescription> {
        self.media
            .iter()
            .find(|m| m.is_data_channel() && m.port != 0)
    }
}

impl FromStr for SessionDescription {
    type Err = SessionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionDescription::parse(s)
    }
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v=0\r\no={}\r\ns={}\r\n", self.origin, self.session_name)?;
        for l in &self.lines {
            write!(f, "{l}\r\n")?;
        }
        for m in &self.media {
            m.fmt(f)?;
        }
        Ok(())
    }
}

/// A non-empty run of characters other than SP.
fn non_ws(i: &str) -> Res<'_, &str> {
    take_till1(|c| c == ' ').parse(i)
}

/// `origin-field = username SP sess-id SP sess-version SP nettype SP
/// addrtype SP unicast-address`
fn origin(i: &str) -> Res<'_, Origin> {
    let (i, username) = field("username", non_ws).parse(i)?;
    let (i, session_id) = field("sess-id", preceded(sp, uint::<u64>("sess-id"))).parse(i)?;
    let (i, session_version) =
        field("sess-version", preceded(sp, uint::<u64>("sess-version"))).parse(i)?;
    let (i, net_type) = field("nettype", preceded(sp, token)).parse(i)?;
    let (i, addr_type) = field("addrtype", preceded(sp, token)).parse(i)?;
    let (i, address) = field("unicast-address", preceded(sp, non_ws)).parse(i)?;
    Ok((
        i,
        Origin {
            username: username.to_owned(),
            session_id,
            session_version,
            net_type: net_type.to_owned(),
            addr_type: addr_type.to_owned(),
            address: address.to_owned(),
        },
    ))
}

/// `connection-field = nettype SP addrtype SP connection-address`
fn connection(i: &str) -> Res<'_, Connection> {
    let (i, net_type) = field("nettype", token).parse(i)?;
    let (i, addr_type) = field("addrtype", preceded(sp, token)).parse(i)?;
    let (i, address) = field("connection-address", preceded(sp, non_ws)).parse(i)?;
    Ok((
        i,
        Connection {
            net_type: net_type.to_owned(),
            addr_type: addr_type.to_owned(),
            address: address.to_owned(),
        },
    ))
}

/// `time-fields = start-time SP stop-time` (without repeat and zone lines,
/// which are kept as other lines)
fn timing(i: &str) -> Res<'_, Timing> {
    let (i, start) = field("start-time", uint::<u64>("start-time")).parse(i)?;
    let (i, stop) = field("stop-time", preceded(sp, uint::<u64>("stop-time"))).parse(i)?;
    Ok((i, Timing { start, stop }))
}

/// `media-field = media SP port ["/" integer] SP proto 1*(SP fmt)`
fn media_field(i: &str) -> Res<'_, MediaDescription> {
    let (i, media) = field("media", token).parse(i)?;
    let (i, port) = field("port", preceded(sp, uint::<u16>("port"))).parse(i)?;
    let (i, port_count) = field("port", opt(preceded(char('/'), uint::<u16>("port")))).parse(i)?;
    let (i, protocol) = field(
        "proto",
        preceded(
            sp,
            take_till1(|c: char| !(crate::parse::is_token_char(c) || c == '/')),
        ),
    )
    .parse(i)?;
    let (i, formats) = field("fmt", many1(preceded(sp, token))).parse(i)?;
    Ok((
        i,
        MediaDescription {
            media: media.to_owned(),
            port,
            port_count,
            protocol: protocol.to_owned(),
            formats: formats.into_iter().map(str::to_owned).collect(),
            lines: Vec::new(),
        },
    ))
}

fn parse_line(kind: char, value: &str) -> Result<Line, ParseError> {
    Ok(match kind {
        'c' => Line::Connection(finish(field("c=", connection)(value), "c=")?),
        't' => Line::Timing(finish(field("t=", timing)(value), "t=")?),
        'a' => Line::Attribute(Attribute::parse(value)?),
        _ => Line::Other {
            kind,
            value: value.to_owned(),
        },
    })
}

fn parse_session(text: &str) -> Result<SessionDescription, SessionError> {
    let mut raw = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    // Line numbers of the split pieces, from 1; a final empty piece (the text
    // ended with a line end) is not a line.
    let count = text.split('\n').count() - usize::from(text.ends_with('\n'));
    let mut lines = Vec::with_capacity(count);
    for n in 1..=count {
        let l = raw.next().unwrap_or_default();
        let at = |error| SessionError::Line { line: n, error };
        let mut chars = l.chars();
        let kind = match (chars.next(), chars.next()) {
            (Some(k), Some('=')) if k.is_ascii_lowercase() => k,
            _ => return Err(at(ParseError::Invalid { field: "line type" })),
        };
        let value = chars.as_str();
        if value.contains(['\0', '\r']) {
            return Err(at(ParseError::Invalid { field: "line" }));
        }
        lines.push((n, kind, value));
    }

    let mut it = lines.into_iter();
    let mut expect = |kind: char, line: usize| match it.next() {
        Some((n, k, v)) if k == kind => Ok((n, v)),
        Some((n, _, _)) => Err(SessionError::Expected {
            line: n,
            line_type: kind,
        }),
        None => Err(SessionError::Expected {
            line,
            line_type: kind,
        }),
    };
    let (n, v) = expect('v', 1)?;
    if v != "0" {
        return Err(SessionError::Line {
            line: n,
            error: ParseError::Invalid {
                field: "proto-version",
            },
        });
    }
    let (n, o) = expect('o', 2)?;
    let origin = finish(field("o=", origin)(o), "o=")
        .map_err(|error| SessionError::Line { line: n, error })?;
    let (_, s) = expect('s', 3)?;
    let mut sd = SessionDescription {
        origin,
        session_name: s.to_owned(),
        lines: Vec::new(),
        media: Vec::new(),
    };
    let mut last = 3;
    for (n, kind, value) in it {
        last = n;
        let at = |error| SessionError::Line { line: n, error };
        if kind == 'm' {
            if sd.media.is_empty() && sd.timing().is_none() {
                return Err(SessionError::Expected {
                    line: n,
                    line_type: 't',
                });
            }
            let m = finish(field("m=", media_field)(value), "m=").map_err(at)?;
            sd.media.push(m);
            continue;
        }
        let line = parse_line(kind, value).map_err(at)?;
        match sd.media.last_mut() {
            Some(m) => m.lines.push(line),
            None => sd.lines.push(line),
        }
    }
    if sd.timing().is_none() {
        return Err(SessionError::Expected {
            line: last + 1,
            line_type: 't',
        });
    }
    Ok(sd)
}
