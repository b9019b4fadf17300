//! The ICE attributes of RFC 8839 §5 other than (and including) `candidate`.

use std::fmt;
use std::str::FromStr;

use nom::bytes::complete::take_while1;
use nom::multi::many0;
use nom::sequence::preceded;
use nom::Parser;

use crate::parse::{check_ice_chars, is_ice_char, parse_all, sp, uint};
use crate::{Candidate, ParseError};

/// An ICE username fragment: 4 to 256 `ice-char`s (RFC 8839 §5.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ufrag(String);

impl Ufrag {
    /// Checks the length and characters of `s`.
    pub fn new(s: impl Into<String>) -> Result<Ufrag, ParseError> {
        let s = s.into();
        check_ice_chars(&s, "ice-ufrag", 4, 256)?;
        Ok(Ufrag(s))
    }
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ufrag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Ufrag {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ufrag::new(s)
    }
}

/// An ICE password: 22 to 256 `ice-char`s (RFC 8839 §5.4). `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pwd(String);

impl Pwd {
    /// Checks the length and characters of `s`.
    pub fn new(s: impl Into<String>) -> Result<Pwd, ParseError> {
        let s = s.into();
        check_ice_chars(&s, "ice-pwd", 22, 256)?;
        Ok(Pwd(s))
    }
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pwd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pwd(<{} chars>)", self.0.len())
    }
}

impl fmt::Display for Pwd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Pwd {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pwd::new(s)
    }
}

/// One `ice-option-tag` of `a=ice-options` (RFC 8839 §5.6).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IceOption {
    /// `trickle` (RFC 8838).
    Trickle,
    /// `ice2` (RFC 8445).
    Ice2,
    /// Any other tag, kept as written.
    Other(String),
}

impl IceOption {
    fn as_str(&self) -> &str {
        match self {
            IceOption::Trickle => "trickle",
            IceOption::Ice2 => "ice2",
            IceOption::Other(s) => s,
        }
    }
}

impl fmt::Display for IceOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One ICE attribute line of SDP (RFC 8839 §5, RFC 8838 §8.2 for
/// `end-of-candidates`).
///
/// ```
/// use p2p_sdp::{IceAttribute, IceOption};
/// let a = IceAttribute::parse("a=ice-options:trickle ice2")?;
/// assert_eq!(a, IceAttribute::Options(vec![IceOption::Trickle, IceOption::Ice2]));
/// assert_eq!(a.to_sdp_line(), "a=ice-options:trickle ice2");
/// # Ok::<(), p2p_sdp::ParseError>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IceAttribute {
    /// `a=candidate:…`
    Candidate(Candidate),
    /// `a=ice-ufrag:…`
    Ufrag(Ufrag),
    /// `a=ice-pwd:…`
    Pwd(Pwd),
    /// `a=ice-options:…`, the tags in order.
    Options(Vec<IceOption>),
    /// `a=ice-lite`
    Lite,
    /// `a=ice-mismatch`
    Mismatch,
    /// `a=end-of-candidates`
    EndOfCandidates,
    /// `a=ice-pacing:N`, in milliseconds.
    Pacing(u32),
}

impl IceAttribute {
    /// Reads one attribute, with or without the `a=` prefix. A line that is
    /// not an ICE attribute gives [`ParseError::Unexpected`].
    pub fn parse(line: &str) -> Result<IceAttribute, ParseError> {
        let body = line.strip_prefix("a=").unwrap_or(line);
        let (name, value) = match body.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        IceAttribute::from_parts(name, value).unwrap_or(Err(ParseError::Unexpected {
            expected: "ICE attribute",
        }))
    }

    /// The `a=…` line (without line ending).
    pub fn to_sdp_line(&self) -> String {
        format!("a={self}")
    }

    /// `None` if `name` is not an ICE attribute.
    pub(crate) fn from_parts(
        name: &str,
        value: Option<&str>,
    ) -> Option<Result<IceAttribute, ParseError>> {
        let flag = |field: &'static str, a: IceAttribute| match value {
            None => Ok(a),
            Some(_) => Err(ParseError::Invalid { field }),
        };
        let valued = |field: &'static str| value.ok_or(ParseError::Missing { field });
        Some(match name {
            "candidate" => {
                valued("candidate").and_then(|v| Candidate::parse(v).map(IceAttribute::Candidate))
            }
            "ice-ufrag" => valued("ice-ufrag").and_then(|v| Ufrag::new(v).map(IceAttribute::Ufrag)),
            "ice-pwd" => valued("ice-pwd").and_then(|v| Pwd::new(v).map(IceAttribute::Pwd)),
            "ice-options" => valued("ice-options")
                .and_then(|v| parse_all(v, "ice-options", ice_options))
                .map(IceAttribute::Options),
            "ice-pacing" => valued("ice-pacing")
                .and_then(|v| parse_all(v, "ice-pacing", uint::<u32>("ice-pacing")))
                .map(IceAttribute::Pacing),
            "ice-lite" => flag("ice-lite", IceAttribute::Lite),
            "ice-mismatch" => flag("ice-mismatch", IceAttribute::Mismatch),
            "end-of-candidates" => flag("end-of-candidates", IceAttribute::EndOfCandidates),
            _ => return None,
        })
    }
}

/// `ice-options = "ice-options:" ice-option-tag *(SP ice-option-tag)`,
/// `ice-option-tag = 1*ice-char`
fn ice_options(i: &str) -> crate::parse::Res<'_, Vec<IceOption>> {
    let tag = |i| take_while1(is_ice_char).parse(i);
    let (i, first) = tag(i)?;
    let (i, more) = many0(preceded(sp, tag)).parse(i)?;
    let options = std::iter::once(first)
        .chain(more)
        .map(|t: &str| match t {
            "trickle" => IceOption::Trickle,
            "ice2" => IceOption::Ice2,
            other => IceOption::Other(other.to_owned()),
        })
        .collect();
    Ok((i, options))
}

impl FromStr for IceAttribute {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IceAttribute::parse(s)
    }
}

impl fmt::Display for IceAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IceAttribute::Candidate(c) => c.fmt(f),
            IceAttribute::Ufrag(u) => write!(f, "ice-ufrag:{u}"),
            IceAttribute::Pwd(p) => write!(f, "ice-pwd:{p}"),
            IceAttribute::Options(o) => {
                f.write_str("ice-options:")?;
                for (n, tag) in o.iter().enumerate() {
                    if n > 0 {
                        f.write_str(" ")?;
                    }
                    tag.fmt(f)?;
                }
                Ok(())
            }
            IceAttribute::Lite => f.write_str("ice-lite"),
            IceAttribute::Mismatch => f.write_str("ice-mismatch"),
            IceAttribute::EndOfCandidates => f.write_str("end-of-candidates"),
            IceAttribute::Pacing(ms) => write!(f, "ice-pacing:{ms}"),
        }
    }
}
