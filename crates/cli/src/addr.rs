//! Server addresses as people write them: `HOST`, `HOST:PORT`, an IP with
//! or without a port (`[2001:db8::1]:3478`), or a `stun:`, `stuns:`,
//! `turn:` or `turns:` URI (RFC 7064, RFC 7065); a missing port is the
//! protocol's default. Names are resolved when the command runs.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// How a URI says the server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Via {
    /// No scheme, `stun:` or `turn:` without a transport.
    Default,
    /// `turn:…?transport=tcp`.
    Tcp,
    /// `stuns:` or `turns:`.
    Tls,
}

/// A server as given on the command line.
///
/// ```
/// use p2p_cli::addr::{Server, Via};
/// let s: Server = "stun.example.org".parse()?;
/// assert_eq!((s.host.as_str(), s.port, s.via), ("stun.example.org", None, Via::Default));
/// let s: Server = "turn:[2001:db8::1]?transport=tcp".parse()?;
/// assert_eq!((s.host.as_str(), s.port, s.via), ("2001:db8::1", None, Via::Tcp));
/// let s: Server = "127.0.0.1:19302".parse()?;
/// assert_eq!(s.port, Some(19302));
/// # Ok::<(), p2p_cli::addr::AddrError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Server {
    /// A host name or an IP (an IPv6 literal without brackets).
    pub host: String,
    /// The port, when given.
    pub port: Option<u16>,
    /// What the URI's scheme and transport say.
    pub via: Via,
    /// The scheme, when a URI was given (`stun`, `stuns`, `turn`, `turns`).
    pub scheme: Option<&'static str>,
}

/// Why a server address was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// Empty, or a host with characters a host name cannot have.
    #[error("{0:?} is not a server address: expected HOST, HOST:PORT, IP, [IPv6]:PORT or a stun:/turn: URI")]
    Syntax(String),
    /// The port is not a number from 1 to 65535.
    #[error("bad port in {0:?}: expected 1 to 65535")]
    Port(String),
    /// A scheme other than stun, stuns, turn, turns.
    #[error("unsupported scheme in {0:?}: expected stun:, stuns:, turn: or turns:")]
    Scheme(String),
    /// A query other than `?transport=udp|tcp`.
    #[error("bad transport in {0:?}: expected ?transport=udp or ?transport=tcp")]
    Transport(String),
    /// The name did not resolve (or to no address).
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host name.
        host: String,
        /// What the resolver said.
        reason: String,
    },
}

impl FromStr for Server {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Server, AddrError> {
        let text = s.trim();
        let known = |sch: &str| match sch.to_ascii_lowercase().as_str() {
            "stun" => Some("stun"),
            "stuns" => Some("stuns"),
            "turn" => Some("turn"),
            "turns" => Some("turns"),
            _ => None,
        };
        let (scheme, rest) = match text.split_once(':') {
            // `stun:3478` is the host "stun" and a port.
            Some((sch, rest))
                if known(sch).is_some() && !rest.chars().all(|c| c.is_ascii_digit()) =>
            {
                (known(sch), rest.trim_start_matches("//"))
            }
            Some((sch, rest))
                if rest.starts_with("//") && sch.chars().all(|c| c.is_ascii_alphabetic()) =>
            {
                return Err(AddrError::Scheme(s.to_owned()))
            }
            _ => (None, text),
        };
        let (hostport, query) = match rest.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (rest, None),
        };
        let mut via = match scheme {
            Some("stuns") | Some("turns") => Via::Tls,
            _ => Via::Default,
        };
        if let Some(q) = query {
            match (scheme, q.to_ascii_lowercase().as_str()) {
                (Some("turn"), "transport=tcp") => via = Via::Tcp,
                (Some("turn"), "transport=udp") => {}
                (Some("turns"), "transport=tcp") => {}
                _ => return Err(AddrError::Transport(s.to_owned())),
            }
        }
        let (host, port) =
            split_host_port(hostport).ok_or_else(|| AddrError::Syntax(s.to_owned()))?;
        let port = match port {
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(AddrError::Port(s.to_owned())),
            },
            None => None,
        };
        let name_ok = host.parse::<IpAddr>().is_ok()
            || (!host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'));
        if !name_ok {
            return Err(AddrError::Syntax(s.to_owned()));
        }
        Ok(Server {
            host: host.to_owned(),
            port,
            via,
            scheme,
        })
    }
}

/// `host`, `host:port`, `v4`, `v4:port`, `v6`, `[v6]`, `[v6]:port`.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some((s, None));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(p))),
        Some(_) => None,
        None => Some((s, None)),
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.scheme {
            write!(f, "{s}:")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if self.via == Via::Tcp && self.scheme == Some("turn") {
            f.write_str("?transport=tcp")?;
        }
        Ok(())
    }
}

impl Server {
    /// The port given, or `default`.
    pub fn port_or(&self, default: u16) -> u16 {
        self.port.unwrap_or(default)
    }

    /// Resolve to one address (the first IPv4 one when there is one, so
    /// that a client bound to the IPv4 wildcard can reach it).
    pub async fn resolve(&self, default_port: u16) -> Result<SocketAddr, AddrError> {
        let port = self.port_or(default_port);
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let err = |reason: String| AddrError::Resolve {
            host: self.host.clone(),
            reason,
        };
        let all: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), port))
            .await
            .map_err(|e| err(e.to_string()))?
            .collect();
        all.iter()
            .find(|a| a.is_ipv4())
            .or(all.first())
            .copied()
            .ok_or_else(|| err("no address".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = (String, Option<u16>, Via);
    type Want = (&'static str, Option<u16>, Via);
    type Check = fn(&AddrError) -> bool;

    fn ok(s: &str) -> Parsed {
        let v: Server = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        (v.host, v.port, v.via)
    }

    #[test]
    fn every_written_form_of_a_server_parses() {
        let cases: [(&str, Want); 14] = [
            ("127.0.0.1", ("127.0.0.1", None, Via::Default)),
            ("127.0.0.1:3478", ("127.0.0.1", Some(3478), Via::Default)),
            ("::1", ("::1", None, Via::Default)),
            ("[::1]", ("::1", None, Via::Default)),
            ("[::1]:5349", ("::1", Some(5349), Via::Default)),
            ("stun.example.org", ("stun.example.org", None, Via::Default)),
            (
                "stun.example.org:19302",
                ("stun.example.org", Some(19302), Via::Default),
            ),
            ("localhost", ("localhost", None, Via::Default)),
            (
                "stun:stun.example.org",
                ("stun.example.org", None, Via::Default),
            ),
            (
                "stun:127.0.0.1:3479",
                ("127.0.0.1", Some(3479), Via::Default),
            ),
            ("stuns:example.org", ("example.org", None, Via::Tls)),
            (
                "turn:example.org?transport=tcp",
                ("example.org", None, Via::Tcp),
            ),
            (
                "turn:[2001:db8::1]:3478?transport=udp",
                ("2001:db8::1", Some(3478), Via::Default),
            ),
            (
                "TURNS:example.org:443?transport=tcp",
                ("example.org", Some(443), Via::Tls),
            ),
        ];
        for (s, (host, port, via)) in cases {
            assert_eq!(ok(s), (host.to_owned(), port, via), "{s}");
        }
    }

    #[test]
    fn malformed_servers_are_refused_with_the_reason() {
        let bad: [(&str, Check); 7] = [
            ("", |e| matches!(e, AddrError::Syntax(_))),
            ("host:0", |e| matches!(e, AddrError::Port(_))),
            ("host:99999", |e| matches!(e, AddrError::Port(_))),
            ("http://example.org", |e| matches!(e, AddrError::Scheme(_))),
            ("stun:example.org?transport=tcp", |e| {
                matches!(e, AddrError::Transport(_))
            }),
            ("exa mple.org", |e| matches!(e, AddrError::Syntax(_))),
            ("[::1", |e| matches!(e, AddrError::Syntax(_))),
        ];
        for (s, want) in bad {
            match s.parse::<Server>() {
                Err(e) => assert!(want(&e), "{s}: {e:?}"),
                Ok(v) => panic!("{s}: accepted as {v:?}"),
            }
        }
    }

    #[tokio::test]
    async fn names_resolve_with_the_default_port() {
        let s: Server = "localhost".parse().unwrap();
        let a = s.resolve(3478).await.unwrap();
        assert_eq!(a.port(), 3478);
        assert!(a.ip().is_loopback());
        let s: Server = "127.0.0.1".parse().unwrap();
        assert_eq!(
            s.resolve(5349).await.unwrap(),
            "127.0.0.1:5349".parse().unwrap()
        );
        let s: Server = "no-such-host.invalid".parse().unwrap();
        assert!(matches!(
            s.resolve(3478).await,
            Err(AddrError::Resolve { .. })
        ));
    }
}
