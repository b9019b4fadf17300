//! Typed errors of the SDP parsers and builders.

/// What is wrong with one SDP line, one `candidate` attribute or one value.
///
/// `field` names the ABNF production of RFC 8839 / RFC 8866 that failed
/// (`"priority"`, `"connection-address"`, `"ice-pwd"`, …).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The input ended where `field` was expected (a truncated line).
    #[error("missing {field}")]
    Missing {
        /// The field that was expected.
        field: &'static str,
    },
    /// `field` is present but does not follow its grammar.
    #[error("invalid {field}")]
    Invalid {
        /// The malformed field.
        field: &'static str,
    },
    /// `field` is a number outside its allowed range (a port above 65535, …).
    #[error("{field} out of range")]
    OutOfRange {
        /// The field whose value is out of range.
        field: &'static str,
    },
    /// `field` has `len` characters where `min..=max` are allowed.
    #[error("{field} has {len} characters, expected {min} to {max}")]
    Length {
        /// The field with the wrong length.
        field: &'static str,
        /// Its length in characters.
        len: usize,
        /// The smallest allowed length.
        min: usize,
        /// The largest allowed length.
        max: usize,
    },
    /// `field` appears more than once where it may appear once.
    #[error("{field} given twice")]
    Duplicate {
        /// The repeated field.
        field: &'static str,
    },
    /// `field` is given without the field it must come with (`raddr` without `rport`).
    #[error("{field} given without {requires}")]
    Unpaired {
        /// The field that is present.
        field: &'static str,
        /// The field that is missing.
        requires: &'static str,
    },
    /// The line is not of the kind this parser reads (say, `a=mid:0` given to
    /// [`IceAttribute::parse`](crate::IceAttribute::parse)).
    #[error("not a {expected} line")]
    Unexpected {
        /// What the parser reads.
        expected: &'static str,
    },
}

/// What is wrong with a whole session description, and on which line.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Line `line` (counted from 1) is malformed.
    #[error("line {line}: {error}")]
    Line {
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        error: ParseError,
    },
    /// A mandatory line (`v=`, `o=`, `s=`, `t=`) is missing or not where
    /// RFC 8866 §5 puts it; `line` is where it was expected.
    #[error("line {line}: expected a {line_type}= line")]
    Expected {
        /// The line number, from 1.
        line: usize,
        /// The type letter of the expected line.
        line_type: char,
    },
}

impl SessionError {
    /// The line number (from 1) the error refers to.
    pub fn line(&self) -> usize {
        match self {
            SessionError::Line { line, .. } | SessionError::Expected { line, .. } => *line,
        }
    }
}

/// Why an answer could not be built for an offer.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The offer has no `m=application … UDP/DTLS/SCTP webrtc-datachannel`
    /// (or `DTLS/SCTP`) section.
    #[error("the offer has no data channel m= section")]
    NoDataChannel,
    /// The data channel section of the offer has no `a=mid`.
    #[error("the data channel m= section has no mid")]
    NoMid,
    /// An answer's `a=setup` must be `active` or `passive` (RFC 8842 §5.3).
    #[error("an answer's setup must be active or passive")]
    AnswerSetup,
    /// The offer's `a=setup` does not allow the requested one
    /// (an offer `active` needs an answer `passive` and vice versa).
    #[error("the offer's setup does not allow this answer setup")]
    SetupConflict,
}
