//! `stun:`, `turn:` and `turns:` URIs (RFC 7064, RFC 7065).

use std::fmt;
use std::str::FromStr;

use crate::Transport;

/// The scheme of an ICE server URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `stun:` (RFC 7064): server-reflexive candidates over UDP.
    Stun,
    /// `turn:` (RFC 7065): relayed candidates, reached over UDP or TCP.
    Turn,
    /// `turns:` (RFC 7065): relayed candidates, reached over TLS.
    Turns,
}

/// One ICE server: a parsed `stun:`/`turn:`/`turns:` URI and, for TURN, its
/// credentials.
///
/// ```
/// use p2p_connect::{IceServerUri, Scheme, Transport};
/// let u: IceServerUri = "turn:turn.example.org?transport=tcp".parse()?;
/// assert_eq!((u.scheme, u.host.as_str(), u.port, u.transport), (Scheme::Turn, "turn.example.org", 3478, Transport::Tcp));
/// let u = IceServerUri::parse("turns:[2001:db8::1]")?.with_credentials("alice", "secret");
/// assert_eq!((u.port, u.transport), (5349, Transport::Tls));
/// # Ok::<(), p2p_connect::UriError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct IceServerUri {
    /// `stun`, `turn` or `turns`.
    pub scheme: Scheme,
    /// A host name or an IP (an IPv6 literal without its brackets).
    pub host: String,
    /// The port: 3478 by default, 5349 for `turns:`.
    pub port: u16,
    /// How the server is reached: UDP (`stun:`, `turn:`), TCP
    /// (`turn:…?transport=tcp`) or TLS (`turns:`).
    pub transport: Transport,
    /// The TURN username (long-term or REST `expiry:user`).
    pub username: Option<String>,
    /// The TURN password.
    pub credential: Option<String>,
}

impl fmt::Debug for IceServerUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServerUri")
            .field("uri", &self.to_string())
            .field("username", &self.username)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Why an ICE server URI was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// Not `stun:`, `turn:` or `turns:` (`stuns:` is not supported: STUN
    /// gathering is UDP only).
    #[error("unsupported scheme in {0:?}: expected stun:, turn: or turns:")]
    Scheme(String),
    /// The host is empty or malformed.
    #[error("bad host in {0:?}")]
    Host(String),
    /// The port is not a number from 1 to 65535.
    #[error("bad port in {0:?}")]
    Port(String),
    /// The query is not `transport=udp` or `transport=tcp` (RFC 7065 §3.1),
    /// or `transport=udp` on `turns:`.
    #[error("bad transport in {0:?}: expected ?transport=udp or ?transport=tcp")]
    Transport(String),
    /// A `turn:`/`turns:` URI without a username and credential.
    #[error("{0} needs a username and a credential")]
    MissingCredentials(String),
}

impl IceServerUri {
    /// Parses `scheme:host[:port][?transport=udp|tcp]`.
    pub fn parse(s: &str) -> Result<IceServerUri, UriError> {
        let err_scheme = || UriError::Scheme(s.to_owned());
        let (scheme, rest) = s.split_once(':').ok_or_else(err_scheme)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "stun" => Scheme::Stun,
            "turn" => Scheme::Turn,
            "turns" => Scheme::Turns,
            _ => return Err(err_scheme()),
        };
        let (hostport, query) = match rest.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (rest, None),
        };
        let transport = match (scheme, query) {
            (Scheme::Stun, None) | (Scheme::Turn, None) => Transport::Udp,
            (Scheme::Turns, None) => Transport::Tls,
            (Scheme::Turn, Some(q)) if q.eq_ignore_ascii_case("transport=udp") => Transport::Udp,
            (Scheme::Turn, Some(q)) if q.eq_ignore_ascii_case("transport=tcp") => Transport::Tcp,
            (Scheme::Turns, Some(q)) if q.eq_ignore_ascii_case("transport=tcp") => Transport::Tls,
            _ => return Err(UriError::Transport(s.to_owned())),
        };
        let default_port = if scheme == Scheme::Turns { 5349 } else { 3478 };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| UriError::Host(s.to_owned()))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(UriError::Host(s.to_owned()));
            }
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| UriError::Port(s.to_owned()))?,
                ),
            };
            (h, port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let host_ok = !host.is_empty()
            && (host.contains(':')
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
        if !host_ok {
            return Err(UriError::Host(s.to_owned()));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(UriError::Port(s.to_owned())),
            },
        };
        Ok(IceServerUri {
            scheme,
            host: host.to_owned(),
            port,
            transport,
            username: None,
            credential: None,
        })
    }

    /// The same server with TURN credentials.
    pub fn with_credentials(
        mut self,
        username: impl Into<String>,
        credential: impl Into<String>,
    ) -> IceServerUri {
        self.username = Some(username.into());
        self.credential = Some(credential.into());
        self
    }

    /// Whether this is a TURN server (`turn:` or `turns:`).
    pub fn is_turn(&self) -> bool {
        self.scheme != Scheme::Stun
    }

    /// Every URI of one `RTCIceServer` entry (as in the signaling welcome),
    /// with its credentials; URIs that do not parse are returned as errors.
    pub fn from_ice_server(
        server: &p2p_signaling::IceServer,
    ) -> Vec<Result<IceServerUri, UriError>> {
        server
            .urls
            .iter()
            .map(|u| {
                let uri = IceServerUri::parse(u)?;
                Ok(match (&server.username, &server.credential) {
                    (Some(n), Some(c)) => uri.with_credentials(n.clone(), c.clone()),
                    _ => uri,
                })
            })
            .collect()
    }
}

impl FromStr for IceServerUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<IceServerUri, UriError> {
        IceServerUri::parse(s)
    }
}

impl fmt::Display for IceServerUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Stun => "stun",
            Scheme::Turn => "turn",
            Scheme::Turns => "turns",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}:[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{scheme}:{}:{}", self.host, self.port)?;
        }
        if self.scheme == Scheme::Turn && self.transport == Transport::Tcp {
            f.write_str("?transport=tcp")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str, scheme: Scheme, host: &str, port: u16, t: Transport) {
        let u = IceServerUri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.transport),
            (scheme, host, port, t),
            "{s}"
        );
    }

    #[test]
    fn rfc7064_and_rfc7065_forms() {
        ok(
            "stun:example.org",
            Scheme::Stun,
            "example.org",
            3478,
            Transport::Udp,
        );
        ok(
            "stun:192.0.2.1:1234",
            Scheme::Stun,
            "192.0.2.1",
            1234,
            Transport::Udp,
        );
        ok(
            "STUN:[2001:db8::1]:19302",
            Scheme::Stun,
            "2001:db8::1",
            19302,
            Transport::Udp,
        );
        ok(
            "turn:example.org",
            Scheme::Turn,
            "example.org",
            3478,
            Transport::Udp,
        );
        ok(
            "turn:example.org?transport=udp",
            Scheme::Turn,
            "example.org",
            3478,
            Transport::Udp,
        );
        ok(
            "turn:example.org:443?transport=tcp",
            Scheme::Turn,
            "example.org",
            443,
            Transport::Tcp,
        );
        ok(
            "turns:example.org",
            Scheme::Turns,
            "example.org",
            5349,
            Transport::Tls,
        );
        ok(
            "turns:[::1]?transport=tcp",
            Scheme::Turns,
            "::1",
            5349,
            Transport::Tls,
        );
    }

    #[test]
    fn refused_forms() {
        let e = |s: &str| IceServerUri::parse(s).err();
        assert_eq!(e("http://x"), Some(UriError::Scheme("http://x".into())));
        assert_eq!(e("stuns:x"), Some(UriError::Scheme("stuns:x".into())));
        assert_eq!(e("nocolon"), Some(UriError::Scheme("nocolon".into())));
        assert_eq!(e("stun:"), Some(UriError::Host("stun:".into())));
        assert_eq!(e("stun:a b"), Some(UriError::Host("stun:a b".into())));
        assert_eq!(e("stun:[::1"), Some(UriError::Host("stun:[::1".into())));
        assert_eq!(e("stun:[zz]"), Some(UriError::Host("stun:[zz]".into())));
        assert_eq!(e("stun:x:0"), Some(UriError::Port("stun:x:0".into())));
        assert_eq!(
            e("stun:x:99999"),
            Some(UriError::Port("stun:x:99999".into()))
        );
        assert_eq!(e("stun:[::1]x"), Some(UriError::Port("stun:[::1]x".into())));
        assert_eq!(
            e("stun:x?transport=udp"),
            Some(UriError::Transport("stun:x?transport=udp".into()))
        );
        assert_eq!(
            e("turn:x?transport=sctp"),
            Some(UriError::Transport("turn:x?transport=sctp".into()))
        );
        assert_eq!(
            e("turns:x?transport=udp"),
            Some(UriError::Transport("turns:x?transport=udp".into()))
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "stun:example.org:3478",
            "turn:[2001:db8::1]:3478?transport=tcp",
            "turns:t.example:5349",
        ] {
            assert_eq!(
                IceServerUri::parse(s).map(|u| u.to_string()).as_deref(),
                Ok(s)
            );
        }
    }

    #[test]
    fn debug_redacts_the_credential() {
        let u = IceServerUri::parse("turn:x").map(|u| u.with_credentials("alice", "hunter2"));
        let d = format!("{u:?}");
        assert!(d.contains("alice") && !d.contains("hunter2"), "{d}");
    }
}
