//! The daemon's configuration: one TOML file whose keys mirror the flags of
//! `p2p serve`, in sections `[stun]`, `[tls]`, `[log]`, `[turn]`, `[metrics]`
//! and `[signaling]`. Unknown keys are rejected with the key's name and line;
//! a key that could not take effect (a TLS address without a certificate,
//! TURN users without a realm, …) is refused with the fix in the message
//! ([`ConfigError::NoEffect`]). [`sample`] is a commented file with every
//! key at its default (`p2p serve --print-config`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod cluster;
mod effect;
mod sample;
mod signaling;
mod turn;

pub use cluster::ClusterConfig;
pub use sample::sample;
pub use signaling::{IceServerConfig, SignalingConfig, TurnCredentials};
pub use turn::{parse_user, TurnConfig};

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Config {
    /// The STUN responder (UDP and TCP).
    pub stun: StunConfig,
    /// STUN over TLS.
    pub tls: TlsConfig,
    /// Logging.
    pub log: LogConfig,
    /// TURN (RFC 8656) on the STUN ports.
    pub turn: TurnConfig,
    /// The Prometheus metrics endpoint.
    pub metrics: MetricsConfig,
    /// The signaling server (WebSocket) and the browser page, on one TCP port.
    pub signaling: SignalingConfig,
    /// A cluster of nodes on Redis (none by default).
    pub cluster: ClusterConfig,
}

/// `[stun]`: where and how the STUN responder runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
    /// Seconds a TCP or TLS connection may go without progress (a success
    /// answered; with an allocation, any whole frame) before it is closed,
    /// and a frame under way may take to arrive whole
    /// (`--tcp-idle-timeout`); a connection that holds an allocation may
    /// stay silent for `turn.max_lifetime_secs` + 60. Default 30.
    pub tcp_idle_timeout_secs: u64,
    /// The most TCP and TLS connections open at once (`--max-connections`);
    /// more are refused. Default 4096.
    pub max_connections: usize,
    /// TCP and TLS connections at once from one client address
    /// (`--max-per-ip`). Default 64, or `max_connections` when that is
    /// lower.
    pub max_connections_per_ip: Option<usize>,
    /// The IPv6 prefix length counted as one client address, for the
    /// connection limits and TURN's reserve (`--ipv6-prefix`). Default 64.
    pub ipv6_prefix: u8,
    /// Percentage of `max_connections` kept for addresses that hold fewer
    /// than `reserve_below` connections (`--reserve`). Default 10.
    pub reserved_percent: u8,
    /// An address may take a reserved connection while it holds fewer than
    /// this many (`--reserve-below`). Default 4, or the per-address limit
    /// when that is lower.
    pub reserve_below: Option<usize>,
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
            max_connections_per_ip: None,
            ipv6_prefix: 64,
            reserved_percent: 10,
            reserve_below: None,
        }
    }
}

/// `[tls]`: STUN over TLS (RFC 8489 §6.2.3), served only when `cert` and
/// `key` are set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `p2p_server=debug` (`--log`).
    /// `RUST_LOG` wins over it; `-v` raises it. Default `info`.
    pub level: Option<String>,
    /// Append the log to this file instead of writing it to stderr
    /// (`--log-file`); `p2p serve` opens it again on SIGHUP, so that a
    /// rotated file is let go. Default: stderr.
    pub file: Option<PathBuf>,
    /// `text` (one line per event; colours only on a terminal) or `json`
    /// (one JSON object per line) (`--log-format`). Default `text`.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<LogFormat, &'static str> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected text or json"),
        }
    }
}

/// `[metrics]`: the Prometheus endpoint (plain-text exposition over HTTP/1.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Where to serve `GET /metrics` (`--metrics ADDR`). Default: off.
    pub listen: Option<SocketAddr>,
}

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
    /// A key (or its flag) is set but could not take effect with the rest
    /// of the configuration; `fix` says what to add or drop.
    #[error("{key} has no effect: {fix}")]
    NoEffect {
        /// The key, and the flag behind it in parentheses.
        key: &'static str,
        /// Why, and what to change.
        fix: &'static str,
    },
}

impl Config {
    /// Parse a TOML document.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, "<string>")
    }

    /// Read and parse a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let cfg = Self::load(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read and parse a TOML file, checking its syntax and keys but not
    /// whether the values fit together: for a program that overrides some
    /// keys (as `p2p serve`'s flags do) and then calls [`Config::validate`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_only(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg = Self::parse_only(text, origin)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn parse_only(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Check that the values fit together, and that no key is set that
    /// could not take effect ([`ConfigError::NoEffect`]). The parsers do
    /// it; call it after changing fields by hand.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.stun;
        if s.listen.is_empty() {
            return Err(ConfigError::Invalid("stun.listen is empty"));
        }
        if !s.udp && !s.tcp && self.tls.cert.is_none() {
            return Err(ConfigError::Invalid(
                "every STUN transport is off: stun.udp and stun.tcp are false (--no-udp --no-tcp) and TLS has no certificate; keep one, or add tls.cert and tls.key (--tls-cert FILE --tls-key FILE)",
            ));
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
        crate::stream::check_limits(s)?;
        self.turn.validate()?;
        self.signaling.validate()?;
        self.cluster.validate().map_err(ConfigError::Invalid)?;
        self.validate_signaling_credentials()?;
        effect::check(self)
    }

    /// Whether the signaling server hands out TURN credentials: listed in
    /// `signaling.ice_servers`, a static `signaling.turn_user`, or REST
    /// credentials from `turn.auth_secret`.
    pub(crate) fn hands_out_credentials(&self) -> bool {
        let s = &self.signaling;
        let listed = s
            .ice_servers
            .iter()
            .any(|e| e.username.is_some() || e.credential.is_some());
        listed || s.turn_user.is_some() || (self.turn.enabled() && self.turn.auth_secret.is_some())
    }

    /// The IP signaling names this daemon by in the STUN and TURN URLs it
    /// hands out when STUN listens on `0.0.0.0` or `::` (of the family
    /// `v4` says) and `signaling.public_host` is not set: with TURN on, its
    /// relay IP of that family as advertised (`turn.external_ip`, else
    /// `turn.relay_ip`, else a specific STUN listen IP of that family, as
    /// the TURN server picks it). The wildcard socket receives on it, and a
    /// client that cannot reach it could not reach the relayed addresses
    /// either. `None` with TURN off or without a relay IP of that family.
    pub(crate) fn wildcard_host(&self, v4: bool) -> Option<std::net::IpAddr> {
        let t = &self.turn;
        if !t.enabled() {
            return None;
        }
        let family = |ip: &std::net::IpAddr| ip.is_ipv4() == v4;
        let relay = t.relay_ip.iter().copied().find(family).or_else(|| {
            self.stun
                .listen
                .iter()
                .map(SocketAddr::ip)
                .find(|ip| family(ip) && !ip.is_unspecified())
        })?;
        Some(t.external_ip.iter().copied().find(family).unwrap_or(relay))
    }

    /// The `[signaling]` settings that depend on `[tls]` and `[turn]`.
    fn validate_signaling_credentials(&self) -> Result<(), ConfigError> {
        let s = &self.signaling;
        if s.tls && s.cert.is_none() && self.tls.cert.is_none() {
            return Err(ConfigError::Invalid(
                "signaling.tls needs a certificate: set tls.cert and tls.key (--tls-cert/--tls-key) or signaling.cert and signaling.key (--signaling-cert/--signaling-key)",
            ));
        }
        if let Some(user) = &s.turn_user {
            if !s.ice_servers.is_empty() {
                return Err(ConfigError::Invalid(
                    "signaling.turn_user cannot take effect while signaling.ice_servers is set (that list is handed out as it is): drop one of them",
                ));
            }
            if self.turn.auth_secret.is_some() {
                return Err(ConfigError::Invalid(
                    "signaling.turn_user cannot take effect with turn.auth_secret (REST credentials are handed out instead): drop one of them",
                ));
            }
            if !self.turn.enabled() || !self.turn.users.contains_key(user) {
                return Err(ConfigError::Invalid(
                    "signaling.turn_user must name a user of turn.users (--user NAME:PASSWORD), with turn.realm (--realm) set",
                ));
            }
        }
        let offered = self.hands_out_credentials();
        if matches!(s.turn_credentials, Some(c) if c != TurnCredentials::Never) && !offered {
            return Err(ConfigError::Invalid(
                "signaling.turn_credentials has no effect: this daemon hands out no TURN credentials; set turn.auth_secret (--auth-secret), signaling.turn_user (--signaling-turn-user) or signaling.ice_servers with credentials",
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
            max_connections_per_ip = 5
            ipv6_prefix = 56
            reserved_percent = 20
            reserve_below = 2
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
    fn the_turn_section_parses_and_enables_turn() {
        let cfg = Config::from_toml_str(
            r#"
            [turn]
            realm = "example.org"
            auth_secret = "s"
            allow_peer = ["127.0.0.0/8", "10.0.0.0/8"]
            deny_peer = ["10.9.0.0/16"]
            user_quota = 3
            total_quota = 100
            max_bps = 1000000
            max_tcp_connections = 4
            relay_fast_path = false
            relay_ip = ["192.0.2.1", "2001:db8::1"]
            external_ip = ["203.0.113.9"]
            min_port = 50000
            max_port = 50100
            nonce_lifetime_secs = 60
            default_lifetime_secs = 300
            max_lifetime_secs = 900
            reserved_percent = 5
            reserve_below = 2
            rest_share_percent = 50
            auth_failure_burst = 10
            auth_failures_per_minute = 30
            [turn.users]
            alice = "secret"
            [metrics]
            listen = "127.0.0.1:9100"
            "#,
        )
        .unwrap();
        assert!(cfg.turn.enabled());
        assert_eq!(cfg.turn.users["alice"], "secret");
        assert_eq!(cfg.turn.min_port, 50000);
        assert_eq!(cfg.turn.max_tcp_connections, 4);
        assert!(!cfg.turn.relay_fast_path);
        assert_eq!(cfg.metrics.listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert!(!Config::default().turn.enabled());
        let no_users = Config::from_toml_str("[turn]\nrealm = \"x\"");
        assert!(matches!(no_users, Err(ConfigError::NoEffect { .. })));
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = Config::from_toml_str("[stun]\nsoftware = \"x\"\nlisten_on = []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_on"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        let err = Config::from_toml_str("[turn]\nrealm_name = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("realm_name"), "{err}");
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
            "[turn]\nallow_peer = [\"10.0.0.0/33\"]",
            "[turn]\nmin_port = 5000\nmax_port = 4000",
            "[turn]\nrelay_ip = [\"0.0.0.0\"]",
            "[turn.users]\n\"a:b\" = \"x\"",
            "[stun]\nmax_connections_per_ip = 5000",
            "[stun]\nipv6_prefix = 0",
            "[stun]\nreserved_percent = 95",
            "[turn]\nreserved_percent = 95",
            "[turn]\nrest_share_percent = 0",
            "[turn]\nauth_failure_burst = 0",
        ];
        for text in bad {
            assert!(
                matches!(Config::from_toml_str(text), Err(ConfigError::Invalid(_))),
                "{text}"
            );
        }
    }
}
