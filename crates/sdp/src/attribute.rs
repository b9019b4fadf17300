//! `a=` attributes of a session description: the ICE ones, the few a data
//! channel needs (RFC 8841, RFC 8842, RFC 8843, RFC 8122), and any other
//! kept as written.

use std::fmt;

use nom::bytes::complete::take_while_m_n;
use nom::character::complete::char;
use nom::multi::many0;
use nom::sequence::preceded;
use nom::Parser;

use crate::parse::{is_token_char, parse_all, sp, token, uint, Res};
use crate::{IceAttribute, ParseError};

/// The `a=setup` role of the DTLS connection (RFC 8842 §3, RFC 4145 §4).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setup {
    /// `active`: this side opens the connection (DTLS client).
    Active,
    /// `passive`: this side accepts it (DTLS server).
    Passive,
    /// `actpass`: either; what offers say.
    ActPass,
    /// `holdconn`: not now.
    HoldConn,
}

impl Setup {
    fn as_str(self) -> &'static str {
        match self {
            Setup::Active => "active",
            Setup::Passive => "passive",
            Setup::ActPass => "actpass",
            Setup::HoldConn => "holdconn",
        }
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A certificate fingerprint, `a=fingerprint:sha-256 AB:CD:…` (RFC 8122 §5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    hash: String,
    bytes: Vec<u8>,
}

impl Fingerprint {
    /// A fingerprint of `bytes` made with hash function `hash` (a `token`
    /// such as `sha-256`); `bytes` must not be empty.
    pub fn new(hash: impl Into<String>, bytes: Vec<u8>) -> Result<Fingerprint, ParseError> {
        let hash = hash.into();
        if hash.is_empty() || !hash.chars().all(is_token_char) {
            return Err(ParseError::Invalid { field: "hash-func" });
        }
        if bytes.is_empty() {
            return Err(ParseError::Missing {
                field: "fingerprint",
            });
        }
        Ok(Fingerprint { hash, bytes })
    }
    /// Reads `hash-func SP fingerprint` (hex pairs separated by `:`, either case).
    pub fn parse(s: &str) -> Result<Fingerprint, ParseError> {
        parse_all(s, "fingerprint", fingerprint)
    }
    /// The hash function, as written (`sha-256`).
    pub fn hash(&self) -> &str {
        &self.hash
    }
    /// The digest.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hash)?;
        for (n, b) in self.bytes.iter().enumerate() {
            let sep = if n == 0 { ' ' } else { ':' };
            write!(f, "{sep}{b:02X}")?;
        }
        Ok(())
    }
}

/// `fingerprint-attribute = hash-func SP fingerprint`,
/// `fingerprint = 2UHEX *(":" 2UHEX)`
fn fingerprint(i: &str) -> Res<'_, Fingerprint> {
    let (i, hash) = crate::parse::field("hash-func", token).parse(i)?;
    let hex_pair = |i| {
        nom::combinator::map_res(take_while_m_n(2, 2, |c: char| c.is_ascii_hexdigit()), |h| {
            u8::from_str_radix(h, 16).map_err(|_| ParseError::Invalid {
                field: "fingerprint",
            })
        })
        .parse(i)
    };
    let (i, first) = crate::parse::field("fingerprint", preceded(sp, hex_pair)).parse(i)?;
    let (i, more) = many0(preceded(char(':'), hex_pair)).parse(i)?;
    let mut bytes = vec![first];
    bytes.extend(more);
    Ok((
        i,
        Fingerprint {
            hash: hash.to_owned(),
            bytes,
        },
    ))
}

/// `a=group:SEMANTICS mid…` (RFC 5888 §5; `BUNDLE` is RFC 8843).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Group {
    /// The semantics (`BUNDLE`, `LS`, …), a `token`.
    pub semantics: String,
    /// The identification tags (`mid`s), in order.
    pub mids: Vec<String>,
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.semantics)?;
        for m in &self.mids {
            write!(f, " {m}")?;
        }
        Ok(())
    }
}

/// `group-attribute = "a=group:" semantics *(SP identification-tag)`
fn group(i: &str) -> Res<'_, Group> {
    let (i, semantics) = token(i)?;
    let (i, mids) = many0(preceded(sp, token)).parse(i)?;
    Ok((
        i,
        Group {
            semantics: semantics.to_owned(),
            mids: mids.into_iter().map(str::to_owned).collect(),
        },
    ))
}

/// One `a=` attribute of a session or media description.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attribute {
    /// An ICE attribute, `candidate` included.
    Ice(IceAttribute),
    /// `a=mid:…` (RFC 5888 §4).
    Mid(String),
    /// `a=group:…` (RFC 5888 §5).
    Group(Group),
    /// `a=setup:…` (RFC 8842).
    Setup(Setup),
    /// `a=fingerprint:…` (RFC 8122).
    Fingerprint(Fingerprint),
    /// `a=sctp-port:N` (RFC 8841 §5.2).
    SctpPort(u16),
    /// `a=max-message-size:N` (RFC 8841 §6; 0 means no limit).
    MaxMessageSize(u64),
    /// Any other attribute, with its value as written (everything after the
    /// first `:`, spaces included), or `None` for a flag (`a=sendrecv`).
    Other {
        /// `att-field`, a `token`.
        name: String,
        /// `att-value`, without the `:`.
        value: Option<String>,
    },
}

impl Attribute {
    /// Reads an attribute, with or without its `a=` prefix.
    pub fn parse(line: &str) -> Result<Attribute, ParseError> {
        let body = line.strip_prefix("a=").unwrap_or(line);
        let (name, value) = match body.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(is_token_char) {
            return Err(ParseError::Invalid { field: "att-field" });
        }
        if let Some(v) = value {
            if v.contains(['\0', '\r', '\n']) {
                return Err(ParseError::Invalid { field: "att-value" });
            }
        }
        if let Some(ice) = IceAttribute::from_parts(name, value) {
            return ice.map(Attribute::Ice);
        }
        let valued = |field: &'static str| value.ok_or(ParseError::Missing { field });
        Ok(match name {
            "mid" => Attribute::Mid(parse_all(valued("mid")?, "mid", token)?.to_owned()),
            "group" => Attribute::Group(parse_all(valued("group")?, "group", group)?),
            "setup" => Attribute::Setup(match valued("setup")? {
                "active" => Setup::Active,
                "passive" => Setup::Passive,
                "actpass" => Setup::ActPass,
                "holdconn" => Setup::HoldConn,
                "" => return Err(ParseError::Missing { field: "setup" }),
                _ => return Err(ParseError::Invalid { field: "setup" }),
            }),
            "fingerprint" => Attribute::Fingerprint(Fingerprint::parse(valued("fingerprint")?)?),
            "sctp-port" => Attribute::SctpPort(parse_all(
                valued("sctp-port")?,
                "sctp-port",
                uint::<u16>("sctp-port"),
            )?),
            "max-message-size" => Attribute::MaxMessageSize(parse_all(
                valued("max-message-size")?,
                "max-message-size",
                uint::<u64>("max-message-size"),
            )?),
            _ => Attribute::Other {
                name: name.to_owned(),
                value: value.map(str::to_owned),
            },
        })
    }

    /// The `a=…` line (without line ending).
    pub fn to_sdp_line(&self) -> String {
        format!("a={self}")
    }
}

impl From<IceAttribute> for Attribute {
    fn from(a: IceAttribute) -> Self {
        Attribute::Ice(a)
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attribute::Ice(a) => a.fmt(f),
            Attribute::Mid(m) => write!(f, "mid:{m}"),
            Attribute::Group(g) => write!(f, "group:{g}"),
            Attribute::Setup(s) => write!(f, "setup:{s}"),
            Attribute::Fingerprint(fp) => write!(f, "fingerprint:{fp}"),
            Attribute::SctpPort(p) => write!(f, "sctp-port:{p}"),
            Attribute::MaxMessageSize(n) => write!(f, "max-message-size:{n}"),
            Attribute::Other { name, value: None } => f.write_str(name),
            Attribute::Other {
                name,
                value: Some(v),
            } => write!(f, "{name}:{v}"),
        }
    }
}
