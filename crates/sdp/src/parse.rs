//! nom plumbing shared by the parsers: an error type that carries a
//! [`ParseError`], and small productions of RFC 8839 / RFC 8866 / RFC 3261.

use nom::error::{ErrorKind, FromExternalError};
use nom::{IResult, Parser};

use crate::ParseError;

/// The nom error: `None` until a field wrapper names what failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PErr(pub(crate) Option<ParseError>);

impl<I> nom::error::ParseError<I> for PErr {
    fn from_error_kind(_input: I, _kind: ErrorKind) -> Self {
        PErr(None)
    }
    fn append(_input: I, _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

impl<I> FromExternalError<I, ParseError> for PErr {
    fn from_external_error(_input: I, _kind: ErrorKind, e: ParseError) -> Self {
        PErr(Some(e))
    }
}

pub(crate) type Res<'a, O> = IResult<&'a str, O, PErr>;

/// Runs `p` as the parser of `name`. A failure that does not already name its
/// cause becomes `Missing` (nothing left) or `Invalid`, and every failure is
/// final (`cut`): there is no other way to read a field.
pub(crate) fn field<'a, O>(
    name: &'static str,
    mut p: impl Parser<&'a str, Output = O, Error = PErr>,
) -> impl FnMut(&'a str) -> Res<'a, O> {
    move |input: &'a str| match p.parse(input) {
        Ok(v) => Ok(v),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
            let e = e.0.unwrap_or(if input.is_empty() {
                ParseError::Missing { field: name }
            } else {
                ParseError::Invalid { field: name }
            });
            Err(nom::Err::Failure(PErr(Some(e))))
        }
        Err(nom::Err::Incomplete(_)) => Err(nom::Err::Failure(PErr(Some(ParseError::Missing {
            field: name,
        })))),
    }
}

/// Turns the outcome of a complete parse into our error.
pub(crate) fn finish<O>(r: Res<'_, O>, name: &'static str) -> Result<O, ParseError> {
    match r {
        Ok(("", v)) => Ok(v),
        Ok(_) => Err(ParseError::Invalid { field: name }),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
            Err(e.0.unwrap_or(ParseError::Invalid { field: name }))
        }
        Err(nom::Err::Incomplete(_)) => Err(ParseError::Missing { field: name }),
    }
}

/// Runs the whole-input parser `p` on `s` and maps the outcome to our error.
pub(crate) fn parse_all<'a, O>(
    s: &'a str,
    name: &'static str,
    p: impl Parser<&'a str, Output = O, Error = PErr>,
) -> Result<O, ParseError> {
    finish(field(name, p)(s), name)
}

/// A single SP.
pub(crate) fn sp(i: &str) -> Res<'_, char> {
    nom::character::complete::char(' ').parse(i)
}

/// Succeeds, consuming nothing, at the end of a space-separated token.
pub(crate) fn token_end(i: &str) -> Res<'_, ()> {
    if i.is_empty() || i.starts_with(' ') {
        Ok((i, ()))
    } else {
        Err(nom::Err::Error(PErr(None)))
    }
}

/// `ice-char = ALPHA / DIGIT / "+" / "/"` (RFC 8839 §5.1).
pub(crate) fn is_ice_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '+' || c == '/'
}

/// `token` of RFC 3261 §25.1 (also RFC 8866's `token`, minus a few symbols
/// both allow).
pub(crate) fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~'
        )
}

/// `VCHAR = %x21-7E`.
pub(crate) fn is_vchar(c: char) -> bool {
    ('\x21'..='\x7e').contains(&c)
}

/// `token = 1*token-char`.
pub(crate) fn token(i: &str) -> Res<'_, &str> {
    nom::bytes::complete::take_while1(is_token_char).parse(i)
}

/// `1*VCHAR`: a non-empty run of visible characters.
pub(crate) fn vchars(i: &str) -> Res<'_, &str> {
    nom::bytes::complete::take_while1(is_vchar).parse(i)
}

/// An unsigned decimal `1*DIGIT`; a value that does not fit `T` is
/// `OutOfRange { field: name }`.
pub(crate) fn uint<'a, T: std::str::FromStr>(
    name: &'static str,
) -> impl FnMut(&'a str) -> Res<'a, T> {
    move |i: &'a str| {
        nom::combinator::map_res(nom::character::complete::digit1, |d: &str| {
            d.parse::<T>()
                .map_err(|_| ParseError::OutOfRange { field: name })
        })
        .parse(i)
    }
}

/// Checks that `s` is `min..=max` characters of `ice-char`, as `name`.
pub(crate) fn check_ice_chars(
    s: &str,
    name: &'static str,
    min: usize,
    max: usize,
) -> Result<(), ParseError> {
    if !s.chars().all(is_ice_char) {
        return Err(ParseError::Invalid { field: name });
    }
    let len = s.len();
    if len < min || len > max {
        return Err(ParseError::Length {
            field: name,
            len,
            min,
            max,
        });
    }
    Ok(())
}
