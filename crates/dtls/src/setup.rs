//! Who is the DTLS client: `a=setup` (RFC 8842 §5, after RFC 4145 §4 and
//! RFC 5763 §5).

use std::fmt;
use std::str::FromStr;

/// The `a=setup` value of a media description (RFC 4145 §4).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setup {
    /// `active`: this side opens the association, the DTLS client.
    Active,
    /// `passive`: this side waits for it, the DTLS server.
    Passive,
    /// `actpass`: either; what an offer must say (RFC 8842 §5.2).
    ActPass,
    /// `holdconn`: not now. RFC 8842 §5 forbids it for DTLS; it parses
    /// so that a caller can refuse it with a clear error.
    HoldConn,
}

impl Setup {
    /// The attribute value (`actpass`).
    pub fn as_str(self) -> &'static str {
        match self {
            Setup::Active => "active",
            Setup::Passive => "passive",
            Setup::ActPass => "actpass",
            Setup::HoldConn => "holdconn",
        }
    }

    /// What an offer says: `actpass` (RFC 8842 §5.2: the offerer MUST).
    pub fn offer() -> Setup {
        Setup::ActPass
    }

    /// What the answerer says to an offer's `a=setup` (RFC 8842 §5.3):
    /// `active` to `actpass` (RFC 5763 §5: the answerer SHOULD be active,
    /// so the DTLS handshake starts without waiting for the answer to
    /// arrive), and the opposite of `active` or `passive`.
    pub fn answer_to(offer: Setup) -> Result<Setup, SetupError> {
        match offer {
            Setup::ActPass | Setup::Passive => Ok(Setup::Active),
            Setup::Active => Ok(Setup::Passive),
            Setup::HoldConn => Err(SetupError::HoldConn),
        }
    }

    /// The DTLS role of the side that says this, once it is decided
    /// (`active` is the client, `passive` the server); `None` for
    /// `actpass` and `holdconn`.
    pub fn role(self) -> Option<DtlsRole> {
        match self {
            Setup::Active => Some(DtlsRole::Client),
            Setup::Passive => Some(DtlsRole::Server),
            Setup::ActPass | Setup::HoldConn => None,
        }
    }

    /// The roles an offer and its answer give, as `(offerer, answerer)`.
    /// The answer must be `active` or `passive`, and agree with the offer
    /// (`actpass` allows either; `active` wants `passive` and the other way
    /// round).
    pub fn roles(offer: Setup, answer: Setup) -> Result<(DtlsRole, DtlsRole), SetupError> {
        if offer == Setup::HoldConn || answer == Setup::HoldConn {
            return Err(SetupError::HoldConn);
        }
        let answerer = answer.role().ok_or(SetupError::AnswerUndecided)?;
        match (offer.role(), answerer) {
            (Some(o), a) if o == a => Err(SetupError::Conflict),
            _ => Ok((answerer.other(), answerer)),
        }
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Setup {
    type Err = SetupError;

    /// `active`, `passive`, `actpass` or `holdconn`, in any case, with
    /// white space around ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
        [
            Setup::Active,
            Setup::Passive,
            Setup::ActPass,
            Setup::HoldConn,
        ]
        .into_iter()
        .find(|v| v.as_str().eq_ignore_ascii_case(s))
        .ok_or(SetupError::Unknown)
    }
}

/// Which end of the DTLS handshake this side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtlsRole {
    /// Sends the ClientHello (`a=setup:active`).
    Client,
    /// Answers it (`a=setup:passive`).
    Server,
}

impl DtlsRole {
    /// The role of the other end.
    pub fn other(self) -> DtlsRole {
        match self {
            DtlsRole::Client => DtlsRole::Server,
            DtlsRole::Server => DtlsRole::Client,
        }
    }

    /// The `a=setup` value that says this role once decided.
    pub fn setup(self) -> Setup {
        match self {
            DtlsRole::Client => Setup::Active,
            DtlsRole::Server => Setup::Passive,
        }
    }
}

impl fmt::Display for DtlsRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DtlsRole::Client => "client",
            DtlsRole::Server => "server",
        })
    }
}

/// A `a=setup` value that did not parse, or an offer and answer that do not
/// give each side a role.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// Not `active`, `passive`, `actpass` or `holdconn`.
    #[error("unknown a=setup value (expected active, passive, actpass or holdconn)")]
    Unknown,
    /// `holdconn` on either side: RFC 8842 §5 has no use for it with DTLS.
    #[error("a=setup:holdconn cannot set up a DTLS association (RFC 8842 §5)")]
    HoldConn,
    /// The answer says `actpass`: an answer must decide (RFC 8842 §5.3).
    #[error("the answer's a=setup must be active or passive (RFC 8842 §5.3)")]
    AnswerUndecided,
    /// Both sides took the same role (`active`/`active` or
    /// `passive`/`passive`).
    #[error("offer and answer both claim the same DTLS role")]
    Conflict,
}

#[cfg(test)]
mod tests {
    use super::*;
    use DtlsRole::{Client, Server};

    #[test]
    fn the_answerer_is_active_to_an_actpass_offer_and_so_the_client() {
        let answer = Setup::answer_to(Setup::offer()).unwrap();
        assert_eq!(answer, Setup::Active);
        assert_eq!(Setup::roles(Setup::ActPass, answer), Ok((Server, Client)));
    }

    #[test]
    fn roles_follow_the_answer_and_refuse_what_rfc_8842_refuses() {
        use Setup::*;
        type Roles = Result<(DtlsRole, DtlsRole), SetupError>;
        let cases: &[(Setup, Setup, Roles)] = &[
            (ActPass, Active, Ok((Server, Client))),
            (ActPass, Passive, Ok((Client, Server))),
            (Active, Passive, Ok((Client, Server))),
            (Passive, Active, Ok((Server, Client))),
            (Active, Active, Err(SetupError::Conflict)),
            (Passive, Passive, Err(SetupError::Conflict)),
            (ActPass, ActPass, Err(SetupError::AnswerUndecided)),
            (ActPass, HoldConn, Err(SetupError::HoldConn)),
            (HoldConn, Active, Err(SetupError::HoldConn)),
        ];
        for (offer, answer, want) in cases {
            assert_eq!(Setup::roles(*offer, *answer), *want, "{offer}/{answer}");
        }
        assert_eq!(Setup::answer_to(Active), Ok(Passive));
        assert_eq!(Setup::answer_to(Passive), Ok(Active));
        assert_eq!(Setup::answer_to(HoldConn), Err(SetupError::HoldConn));
    }

    #[test]
    fn setup_values_round_trip_in_any_case() {
        for s in [
            Setup::Active,
            Setup::Passive,
            Setup::ActPass,
            Setup::HoldConn,
        ] {
            assert_eq!(s.to_string().parse::<Setup>(), Ok(s));
            assert_eq!(s.as_str().to_uppercase().parse::<Setup>(), Ok(s));
        }
        assert_eq!(" actpass\r\n".parse::<Setup>(), Ok(Setup::ActPass));
        assert_eq!("act pass".parse::<Setup>(), Err(SetupError::Unknown));
        assert_eq!("".parse::<Setup>(), Err(SetupError::Unknown));
        assert_eq!(Client.setup(), Setup::Active);
        assert_eq!(Server.setup().role(), Some(Server));
        assert_eq!(Client.other(), Server);
    }
}
