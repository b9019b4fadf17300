//! The daemon's configuration: one TOML file whose keys mirror the flags of
//! `p2p serve`, in sections `[stun]`, `[tls]`, `[log]`, `[turn]` and
//! `[signaling]`. Unknown keys are rejected with the key's name and line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The port of STUN over UDP and TCP (RFC 8489 §18.6).
pub const DEFAULT_PORT: u16 = 3478;
/// The port of STUN over TLS (RFC 8489 §18.6).
pub const DEFAULT_TLS_PORT: u16 = 5349;
/// The default cap on the PADDING of a response (bytes): see [`StunConfig::max_padding`].
pub const DEFAULT_MAX_PADDING: usize = 512;

/// The whole configuration of `p2p serve`.
///
/// ```
/// let cfg = p2p_server::Config::from_toml_str(r#"
/// [stun]
/// listen = ["127.0.0.1:3478"]
/// alt_listen = "127.0.0.2:3479"
/// software = "example"
/// "#)?;
/// assert_eq!(cfg.stun.listen.len(), 1);
/// assert!(p2p_server::Config::from_toml_str("[stun]\nlisten_on = []").is_err());
/// # Ok::<(), p2p_server::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Config {
    /// The STUN responder (UDP and TCP).
    pub stun: StunConfig,
    /// STUN over TLS.
    pub tls: TlsConfig,
    /// Logging.
    pub log: LogConfig,
    /// TURN (RFC 8656). Not served yet: the section exists so that a later
    /// version fills it without moving keys; today it accepts no key.
    pub turn: TurnConfig,
    /// The signaling server. Not served yet: the section exists so that a later
    /// version fills it without moving keys; today it accepts no key.
    pub signaling: SignalingConfig,
}

/// `[stun]`: where and how the STUN responder runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct StunConfig {
    /// Addresses to serve on, UDP and TCP (`--listen`, repeatable).
    /// Default `127.0.0.1:3478`.
    pub listen: Vec<SocketAddr>,
    /// The alternate address of RFC 5780 (`--alt-listen`): its IP differs from
    /// the first listen address's IP and its port from its port. With it the
    /// server binds the four IP/port combinations over UDP and answers
    /// CHANGE-REQUEST. A port of 0 picks a free port.
    pub alt_listen: Option<SocketAddr>,
    /// The SOFTWARE attribute of every response (`--software`); an empty
    /// string leaves SOFTWARE out. Default `p2p <version>`.
    pub software: String,
    /// Serve UDP (`--no-udp` turns it off). Default true.
    pub udp: bool,
    /// Serve TCP on the listen addresses (`--no-tcp` turns it off). Default true.
    pub tcp: bool,
    /// UDP sockets per address, bound with SO_REUSEPORT (`--workers`).
    /// Default: one per available core.
    pub workers: Option<usize>,
    /// The largest PADDING (RFC 5780 §7.6) a response carries, in bytes
    /// (`--max-padding`). A response's PADDING is never longer than the
    /// request's own PADDING either, so an unauthenticated request cannot get
    /// an answer much larger than itself. Default 512.
    pub max_padding: usize,
    /// Seconds a TCP or TLS connection may stay silent before it is closed
    /// (`--tcp-idle-timeout`). Default 30.
    pub tcp_idle_timeout_secs: u64,
    /// The most TCP and TLS connections open at once (`--max-connections`);
    /// more are refused. Default 4096.
    pub max_connections: usize,
}

impl Default for StunConfig {
    fn default() -> Self {
        StunConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))],
            alt_listen: None,
            software: concat!("p2p ", env!("CARGO_PKG_VERSION")).to_owned(),
            udp: true,
            tcp: true,
            workers: None,
            max_padding: DEFAULT_MAX_PADDING,
            tcp_idle_timeout_secs: 30,
            max_connections: 4096,
        }
    }
}

/// `[tls]`: STUN over TLS (RFC 8489 §6.2.3), served only when `cert` and
/// `key` are set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TlsConfig {
    /// Addresses to serve TLS on (`--tls-listen`, repeatable). Default: port
    /// 5349 on the IP of the first STUN listen address.
    pub listen: Vec<SocketAddr>,
    /// The certificate chain, PEM (`--tls-cert`).
    pub cert: Option<PathBuf>,
    /// The private key, PEM (`--tls-key`).
    pub key: Option<PathBuf>,
}

/// `[log]`: what the daemon logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `p2p_server=debug` (`--log`).
    /// `RUST_LOG` wins over it; `-v` raises it.
    pub level: Option<String>,
}

/// `[turn]`: reserved for the TURN server; accepts no key yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TurnConfig {}

/// `[signaling]`: reserved for the signaling server; accepts no key yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SignalingConfig {}

/// Why a configuration was refused.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML does not parse or has a key that does not exist; the message
    /// names the key and its line.
    #[error("{origin}: {message}")]
    Parse {
        /// The file, or `<string>`.
        origin: String,
        /// toml's message, with line and column.
        message: String,
    },
    /// The values parse but do not fit together.
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
}

impl Config {
    /// Parse a TOML document.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, "<string>")
    }

    /// Read and parse a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check that the values fit together (also done by the parsers; call it
    /// after changing fields by hand).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.stun;
        if s.listen.is_empty() {
            return Err(ConfigError::Invalid("stun.listen is empty"));
        }
        if !s.udp && !s.tcp && self.tls.cert.is_none() {
            return Err(ConfigError::Invalid("every transport is off"));
        }
        if s.workers == Some(0) {
            return Err(ConfigError::Invalid("stun.workers must be at least 1"));
        }
        if let Some(alt) = s.alt_listen {
            let primary = s.listen[0];
            if alt.ip() == primary.ip() {
                return Err(ConfigError::Invalid(
                    "stun.alt_listen must have another IP than the first listen address",
                ));
            }
            if alt.ip().is_unspecified() || primary.ip().is_unspecified() {
                return Err(ConfigError::Invalid(
                    "RFC 5780 needs specific IPs: neither the first listen address nor alt_listen may be 0.0.0.0 or ::",
                ));
            }
            if alt.is_ipv4() != primary.is_ipv4() {
                return Err(ConfigError::Invalid(
                    "stun.alt_listen and the first listen address must be of one IP family",
                ));
            }
            if alt.port() != 0 && alt.port() == primary.port() {
                return Err(ConfigError::Invalid(
                    "stun.alt_listen must have another port than the first listen address",
                ));
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid("tls.cert and tls.key go together"));
        }
        if s.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "stun.max_connections must be at least 1",
            ));
        }
        Ok(())
    }

    /// The TLS addresses to serve: `tls.listen`, or port 5349 on the first
    /// STUN address's IP. Empty when no certificate is configured.
    pub fn tls_listen(&self) -> Vec<SocketAddr> {
        if self.tls.cert.is_none() {
            return Vec::new();
        }
        if !self.tls.listen.is_empty() {
            return self.tls.listen.clone();
        }
        vec![SocketAddr::new(self.stun.listen[0].ip(), DEFAULT_TLS_PORT)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default_loopback_server() {
        let cfg = Config::from_toml_str("").unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.stun.listen, ["127.0.0.1:3478".parse().unwrap()]);
        assert!(cfg.tls_listen().is_empty());
    }

    #[test]
    fn every_section_parses() {
        let cfg = Config::from_toml_str(
            r#"
            [stun]
            listen = ["127.0.0.1:3478", "[::1]:3478"]
            alt_listen = "127.0.0.2:3479"
            software = "x"
            udp = true
            tcp = false
            workers = 2
            max_padding = 100
            tcp_idle_timeout_secs = 5
            max_connections = 10
            [tls]
            cert = "c.pem"
            key = "k.pem"
            [log]
            level = "debug"
            [turn]
            [signaling]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.stun.workers, Some(2));
        assert_eq!(cfg.stun.alt_listen, Some("127.0.0.2:3479".parse().unwrap()));
        assert_eq!(cfg.tls_listen(), ["127.0.0.1:5349".parse().unwrap()]);
        assert_eq!(cfg.log.level.as_deref(), Some("debug"));
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = Config::from_toml_str("[stun]\nsoftware = \"x\"\nlisten_on = []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_on"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        let err = Config::from_toml_str("[turn]\nrealm = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("realm"), "{err}");
        let err = Config::from_toml_str("[stunn]\n").unwrap_err().to_string();
        assert!(err.contains("stunn"), "{err}");
    }

    #[test]
    fn inconsistent_values_are_refused() {
        let bad = [
            "[stun]\nlisten = []",
            "[stun]\nalt_listen = \"127.0.0.1:3479\"",
            "[stun]\nalt_listen = \"127.0.0.2:3478\"",
            "[stun]\nlisten = [\"0.0.0.0:3478\"]\nalt_listen = \"127.0.0.2:3479\"",
            "[stun]\nalt_listen = \"[::2]:3479\"",
            "[stun]\nworkers = 0",
            "[tls]\ncert = \"c.pem\"",
        ];
        for text in bad {
            assert!(
                matches!(Config::from_toml_str(text), Err(ConfigError::Invalid(_))),
                "{text}"
            );
        }
    }
}
