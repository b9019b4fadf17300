//! `[turn]`: the TURN server's settings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[turn]`: the TURN server (RFC 8656), served on the STUN ports (UDP, TCP,
/// TLS). Enabled when `realm` is set and at least one user or an
/// `auth_secret` is; otherwise the daemon stays STUN-only and TURN requests
/// get 400.
///
/// `users` takes the strings of `--user` or a table:
///
/// ```
/// let cfg = p2p_server::Config::from_toml_str(r#"
/// [turn]
/// realm = "example.org"
/// users = ["alice:secret", "bob:pa:ss"]
/// allow_peer = ["127.0.0.0/8"]
/// "#)?;
/// assert!(cfg.turn.enabled());
/// assert_eq!(cfg.turn.users["bob"], "pa:ss");
///
/// let table = p2p_server::Config::from_toml_str(r#"
/// [turn]
/// realm = "example.org"
/// [turn.users]
/// alice = "secret"
/// bob = "pa:ss"
/// "#)?;
/// assert_eq!(table.turn.users, cfg.turn.users);
/// # Ok::<(), p2p_server::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TurnConfig {
    /// The realm of the long-term credentials (`--realm`).
    pub realm: Option<String>,
    /// Long-term users, name to password (`--user NAME:PASSWORD`,
    /// repeatable). In the file, a list of the flag's `"NAME:PASSWORD"`
    /// strings (split at the first `:`) or a table `NAME = "PASSWORD"`.
    /// MD5 and SHA-256 keys and USERHASH work for these.
    #[serde(deserialize_with = "users")]
    pub users: BTreeMap<String, String>,
    /// The TURN REST API shared secret (`--auth-secret`), as coturn's
    /// `use-auth-secret`: username `expiry:user`, password
    /// `base64(HMAC-SHA1(secret, username))`.
    pub auth_secret: Option<String>,
    /// Peer blocks relaying is allowed to even though the default policy
    /// refuses them (loopback, private, link-local, …) (`--allow-peer CIDR`).
    pub allow_peer: Vec<String>,
    /// Peer blocks always refused (`--deny-peer CIDR`); wins over `allow_peer`.
    pub deny_peer: Vec<String>,
    /// Allocations one user may hold at once, 486 beyond (`--user-quota`).
    /// Default 10; 0 means no limit.
    pub user_quota: u32,
    /// Allocations in all, 508 beyond (`--total-quota`). Default 0: the
    /// number of relay ports (`min_port`-`max_port`).
    pub total_quota: u32,
    /// Percentage of the allocations (`total_quota`) kept for client
    /// addresses holding fewer than `reserve_below` (`--turn-reserve`):
    /// past the rest, an address holding more gets 508. Default 10.
    pub reserved_percent: u8,
    /// A client address may take a reserved allocation while it holds
    /// fewer than this many (`--turn-reserve-below`). Default 4.
    pub reserve_below: u32,
    /// With both static users and `auth_secret`: the percentage of the
    /// allocations REST users may hold together, 486 beyond, so that
    /// farmed REST credentials cannot take what the static users need
    /// (`--rest-share`). Default 80.
    pub rest_share_percent: u8,
    /// Authentication failures one client address (IPv6 by
    /// `stun.ipv6_prefix`) may have at once before its requests with
    /// credentials are dropped unanswered (`--auth-failure-burst`).
    /// Default 20.
    pub auth_failure_burst: u32,
    /// Authentication failures a minute allowed per client address after
    /// the burst (`--auth-failure-rate`). Default 60; 0: no limit.
    pub auth_failures_per_minute: u32,
    /// Per-allocation bandwidth cap in bytes per second, both directions
    /// together, as coturn's `max-bps` (`--max-bps`). Default 0: no cap.
    pub max_bps: u64,
    /// TCP peer connections one RFC 6062 allocation may hold (connecting,
    /// waiting for their ConnectionBind, or bound): a Connect beyond gets
    /// 508 and a peer connecting beyond is refused
    /// (`--max-tcp-connections`). Default 128.
    pub max_tcp_connections: usize,
    /// Relay the ChannelData of UDP allocations on the threads that receive
    /// it (the UDP workers and the relayed sockets' readers) rather than
    /// through the one TURN task (`--no-relay-fast-path` turns it off).
    /// Allocations with a bandwidth cap, and relaying to the server's own
    /// addresses, always take the checked path. Default true.
    pub relay_fast_path: bool,
    /// The IPs relayed sockets are bound on (`--relay-ip`, repeatable; one
    /// per address family counts). Default: the first specific IPv4 and IPv6
    /// of `stun.listen`.
    pub relay_ip: Vec<std::net::IpAddr>,
    /// Behind a 1:1 NAT: the public IP advertised in XOR-RELAYED-ADDRESS
    /// instead of the relay IP of its family (`--external-ip`, repeatable,
    /// one per family). Sockets stay bound on the relay IP.
    pub external_ip: Vec<std::net::IpAddr>,
    /// Lowest relay port (`--min-port`). Default 49152.
    pub min_port: u16,
    /// Highest relay port (`--max-port`). Default 65535.
    pub max_port: u16,
    /// Seconds a nonce stays valid before 438 Stale Nonce
    /// (`--nonce-lifetime`). Default 600.
    pub nonce_lifetime_secs: u64,
    /// Allocation lifetime when the client asks for less or nothing, seconds.
    /// Default 600.
    pub default_lifetime_secs: u64,
    /// Longest allocation lifetime granted, seconds. Default 3600.
    pub max_lifetime_secs: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            realm: None,
            users: Default::default(),
            auth_secret: None,
            allow_peer: Vec::new(),
            deny_peer: Vec::new(),
            user_quota: 10,
            total_quota: 0,
            reserved_percent: 10,
            reserve_below: 4,
            rest_share_percent: 80,
            auth_failure_burst: 20,
            auth_failures_per_minute: 60,
            max_bps: 0,
            max_tcp_connections: 128,
            relay_fast_path: true,
            relay_ip: Vec::new(),
            external_ip: Vec::new(),
            min_port: 49152,
            max_port: 65535,
            nonce_lifetime_secs: 600,
            default_lifetime_secs: 600,
            max_lifetime_secs: 3600,
        }
    }
}

/// `users = ["NAME:PASSWORD", …]` or `[turn.users] NAME = "PASSWORD"`.
fn users<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Users {
        List(Vec<String>),
        Table(BTreeMap<String, String>),
    }
    match Users::deserialize(d).map_err(|_| {
        serde::de::Error::custom(
            "turn.users is a list of \"NAME:PASSWORD\" strings or a table of NAME = \"PASSWORD\"",
        )
    })? {
        Users::Table(t) => Ok(t),
        Users::List(v) => {
            let mut out = BTreeMap::new();
            for u in v {
                let (name, password) = parse_user(&u).map_err(serde::de::Error::custom)?;
                if out.insert(name.to_owned(), password.to_owned()).is_some() {
                    return Err(serde::de::Error::custom(format!(
                        "turn.users names {name} twice"
                    )));
                }
            }
            Ok(out)
        }
    }
}

/// Split a `NAME:PASSWORD` user (`--user`, `turn.users`) at its first `:`.
/// (The message does not repeat the string: it may be a password.)
pub fn parse_user(u: &str) -> Result<(&str, &str), String> {
    match u.split_once(':') {
        Some((name, password)) if !name.is_empty() => Ok((name, password)),
        _ => Err("a TURN user is NAME:PASSWORD (a name, a colon, the password)".to_owned()),
    }
}

impl TurnConfig {
    /// Whether TURN is served: a realm and at least one user or a secret.
    pub fn enabled(&self) -> bool {
        self.realm.as_deref().is_some_and(|r| !r.is_empty())
            && (!self.users.is_empty() || self.auth_secret.is_some())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for c in self.allow_peer.iter().chain(&self.deny_peer) {
            if c.parse::<p2p_turn::Cidr>().is_err() {
                return Err(ConfigError::Invalid(
                    "turn.allow_peer and turn.deny_peer take CIDR blocks such as 10.0.0.0/8",
                ));
            }
        }
        if self.min_port > self.max_port || self.min_port == 0 {
            return Err(ConfigError::Invalid(
                "turn.min_port must be at least 1 and at most turn.max_port",
            ));
        }
        if self.users.keys().any(|u| u.is_empty() || u.contains(':')) {
            return Err(ConfigError::Invalid(
                "turn.users: a user name is not empty and has no ':'",
            ));
        }
        let one_per_family = |v: &[std::net::IpAddr]| {
            v.iter().filter(|i| i.is_ipv4()).count() <= 1
                && v.iter().filter(|i| i.is_ipv6()).count() <= 1
        };
        if !one_per_family(&self.relay_ip) || !one_per_family(&self.external_ip) {
            return Err(ConfigError::Invalid(
                "turn.relay_ip and turn.external_ip take at most one IP per address family",
            ));
        }
        if self.relay_ip.iter().any(|i| i.is_unspecified())
            || self.external_ip.iter().any(|i| i.is_unspecified())
        {
            return Err(ConfigError::Invalid(
                "turn.relay_ip and turn.external_ip must be specific IPs, not 0.0.0.0 or ::",
            ));
        }
        if self.nonce_lifetime_secs == 0 || self.default_lifetime_secs == 0 {
            return Err(ConfigError::Invalid(
                "turn.nonce_lifetime_secs and turn.default_lifetime_secs must be at least 1",
            ));
        }
        if self.max_lifetime_secs < self.default_lifetime_secs {
            return Err(ConfigError::Invalid(
                "turn.max_lifetime_secs must be at least turn.default_lifetime_secs",
            ));
        }
        crate::turn::check_limits(self)
    }
}
