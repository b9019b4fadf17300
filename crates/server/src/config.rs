//! The daemon's configuration: one TOML file whose keys mirror the flags of
//! `p2p serve`, in sections `[stun]`, `[tls]`, `[log]`, `[turn]`, `[metrics]`
//! and `[signaling]`. Unknown keys are rejected with the key's name and line.

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
    /// TURN (RFC 8656) on the STUN ports.
    pub turn: TurnConfig,
    /// The Prometheus metrics endpoint.
    pub metrics: MetricsConfig,
    /// The signaling server (WebSocket) and the browser page, on one TCP port.
    pub signaling: SignalingConfig,
    /// A cluster of nodes on Redis (none by default).
    pub cluster: crate::cluster::ClusterConfig,
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

/// `[turn]`: the TURN server (RFC 8656), served on the STUN ports (UDP, TCP,
/// TLS). Enabled when `realm` is set and at least one user or an
/// `auth_secret` is; otherwise the daemon stays STUN-only and TURN requests
/// get 400.
///
/// ```
/// let cfg = p2p_server::Config::from_toml_str(r#"
/// [turn]
/// realm = "example.org"
/// allow_peer = ["127.0.0.0/8"]
/// [turn.users]
/// alice = "secret"
/// "#)?;
/// assert!(cfg.turn.enabled());
/// # Ok::<(), p2p_server::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TurnConfig {
    /// The realm of the long-term credentials (`--realm`).
    pub realm: Option<String>,
    /// Long-term users, name to password (`--user NAME:PASSWORD`, repeatable).
    /// MD5 and SHA-256 keys and USERHASH work for these.
    pub users: std::collections::BTreeMap<String, String>,
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
    /// Allocations in all, 508 beyond (`--total-quota`). Default 0: no limit.
    pub total_quota: u32,
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

impl TurnConfig {
    /// Whether TURN is served: a realm and at least one user or a secret.
    pub fn enabled(&self) -> bool {
        self.realm.as_deref().is_some_and(|r| !r.is_empty())
            && (!self.users.is_empty() || self.auth_secret.is_some())
    }

    fn validate(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }
}

/// `[metrics]`: the Prometheus endpoint (plain-text exposition over HTTP/1.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Where to serve `GET /metrics` (`--metrics ADDR`). Default: off.
    pub listen: Option<SocketAddr>,
}

/// `[signaling]`: the signaling server of `p2p-signaling` (rooms, offer/answer
/// and candidates relayed over a WebSocket, `docs/signaling.md`) and a small
/// browser page at `/`, both on one TCP port. The WebSocket is at `/ws` (any
/// path with an `Upgrade: websocket` header works).
///
/// The ICE servers handed out: `ice_servers` when it is set; otherwise a
/// `stun:` URL of this daemon, plus `turn:` URLs with short-lived TURN REST
/// credentials when `[turn]` is enabled with an `auth_secret`, or with the
/// password of the static user named in `turn_user`. A daemon whose TURN
/// users are static long-term users does not hand out their passwords
/// unless `turn_user` names one. Entries without credentials (STUN) go out
/// in every `welcome`; those with credentials as `turn_credentials` says
/// (by default with `joined`, to room members), at most
/// `credentials_per_minute` per client address.
///
/// Every connection counts against `max_connections` and against its
/// address's `max_connections_per_ip` (an IPv6 address by its
/// `ipv6_prefix`), from its first byte: page requests, handshakes under way
/// and WebSockets alike; `reserved_percent` of the slots are kept for
/// addresses holding fewer than `reserve_below` connections.
///
/// ```
/// let cfg = p2p_server::Config::from_toml_str(r#"
/// [signaling]
/// listen = "127.0.0.1:8080"
/// max_room_size = 2
/// [[signaling.ice_servers]]
/// urls = ["turn:turn.example.org:3478?transport=udp"]
/// username = "guest"
/// credential = "guest-password"
/// "#)?;
/// assert_eq!(cfg.signaling.listen, Some("127.0.0.1:8080".parse().unwrap()));
/// # Ok::<(), p2p_server::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SignalingConfig {
    /// Where to serve the WebSocket and the page (`--signaling ADDR`).
    /// `None`: not served. `p2p serve` uses `127.0.0.1:8080` when neither
    /// the flag nor the file sets it, unless `--no-signaling`; like every
    /// other port, one that cannot be bound stops the daemon.
    pub listen: Option<SocketAddr>,
    /// Serve the browser page at `/` (`--no-page` turns it off). Default true.
    pub page: bool,
    /// The host (name or IP) in the `stun:`/`turn:` URLs handed out
    /// (`--public-host`). Default: the IP of the first STUN listen address.
    pub public_host: Option<String>,
    /// The ICE servers handed out, verbatim; when set, nothing is generated.
    pub ice_servers: Vec<IceServerConfig>,
    /// Lifetime of the TURN REST credentials handed out, in seconds. Default 3600.
    pub credential_ttl_secs: u64,
    /// Token every room needs unless it has its own (`--signaling-token`).
    /// Default: rooms are open.
    pub token: Option<String>,
    /// Per-room tokens, room name to token.
    pub room_tokens: std::collections::BTreeMap<String, String>,
    /// Most peers in one room. Default 8.
    pub max_room_size: usize,
    /// Most rooms one connection may be in. Default 4.
    pub max_rooms_per_connection: usize,
    /// Most rooms on the server. Default 10 000.
    pub max_rooms: usize,
    /// Most WebSocket connections at once. Default 10 000.
    pub max_connections: usize,
    /// Largest message in bytes; larger ones get `message-too-large`, and
    /// the connection is closed above twice this size. Default 65536.
    pub max_message_size: usize,
    /// Messages per second one connection may send, sustained. Default 20.
    pub rate_per_second: u32,
    /// Messages one connection may send in a burst. Default 50.
    pub burst: u32,
    /// Seconds without a message or a pong before a connection is closed.
    /// Default 60.
    pub idle_timeout_secs: u64,
    /// Seconds between the server's WebSocket pings; below
    /// `idle_timeout_secs`. Default 20.
    pub heartbeat_secs: u64,
    /// Serve the page and the WebSocket over TLS (`https://`, `wss://`) with
    /// the certificate of `[tls]` (`--signaling-tls`). Default false.
    pub tls: bool,
    /// A certificate chain (PEM) of its own for the signaling port
    /// (`--signaling-cert`); implies TLS. Default: none.
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of `cert` (`--signaling-key`).
    pub key: Option<PathBuf>,
    /// Connections at once from one client address
    /// (`--signaling-max-per-ip`). Default 64, or `max_connections` when
    /// that is lower.
    pub max_connections_per_ip: Option<usize>,
    /// The IPv6 prefix length counted as one address
    /// (`--signaling-ipv6-prefix`). Default 64.
    pub ipv6_prefix: u8,
    /// Percentage of `max_connections` kept for addresses that hold fewer
    /// than `reserve_below` connections (`--signaling-reserve`). Default 10.
    pub reserved_percent: u8,
    /// An address may take a reserved slot while it holds fewer connections
    /// than this (`--signaling-reserve-below`). Default 4, or the per-address
    /// limit when that is lower.
    pub reserve_below: Option<usize>,
    /// Seconds one write to a client may take before the client is closed
    /// as not reading (1008) (`--signaling-write-timeout`). Default 10.
    pub write_timeout_secs: u64,
    /// Bytes queued for one client before it is closed as too slow (1008)
    /// (`--signaling-max-queued-bytes`). Default 1048576.
    pub max_queued_bytes: usize,
    /// Messages queued for one client before it is closed as too slow
    /// (1008) (`--signaling-max-queued-messages`). Default 256.
    pub max_queued_messages: usize,
    /// Seconds a client has to send its request head (and TLS handshake)
    /// and again its WebSocket handshake (`--signaling-handshake-timeout`).
    /// Default 10.
    pub handshake_timeout_secs: u64,
    /// Seconds one message from a client may stay unfinished (a frame cut
    /// short, a fragmented message without its last fragment) before the
    /// client is closed (1008) (`--signaling-message-timeout`). Default 10.
    pub message_timeout_secs: u64,
    /// When TURN credentials go out (`--turn-credentials`): `welcome` (to
    /// every connection), `join` (with `joined`, to room members), `token`
    /// (with `joined`, only for rooms that need a token) or `never`.
    /// Default `join`.
    pub turn_credentials: Option<TurnCredentials>,
    /// TURN credentials handed to one client address per minute, sustained
    /// (`--credential-rate`). Default 10.
    pub credentials_per_minute: u32,
    /// TURN credentials one client address may get in a burst
    /// (`--credential-burst`). Default 20.
    pub credential_burst: u32,
    /// A static TURN user (of `turn.users`) whose name and password are
    /// handed out as the TURN credentials, under `turn_credentials`
    /// (`--signaling-turn-user`): for a daemon with static users and no
    /// `auth_secret`. Everyone who gets it shares that user's allocation
    /// quota. Default: none.
    pub turn_user: Option<String>,
}

/// When the signaling server hands out TURN credentials (see
/// `p2p_signaling::CredentialPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TurnCredentials {
    /// In every `welcome`.
    Welcome,
    /// In `joined`, to room members.
    Join,
    /// In `joined`, only for rooms that need a token.
    Token,
    /// Never.
    Never,
}

impl std::str::FromStr for TurnCredentials {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<TurnCredentials, &'static str> {
        match s {
            "welcome" => Ok(TurnCredentials::Welcome),
            "join" => Ok(TurnCredentials::Join),
            "token" => Ok(TurnCredentials::Token),
            "never" => Ok(TurnCredentials::Never),
            _ => Err("expected welcome, join, token or never"),
        }
    }
}

impl Default for SignalingConfig {
    fn default() -> Self {
        SignalingConfig {
            listen: None,
            page: true,
            public_host: None,
            ice_servers: Vec::new(),
            credential_ttl_secs: 3600,
            token: None,
            room_tokens: Default::default(),
            max_room_size: 8,
            max_rooms_per_connection: 4,
            max_rooms: 10_000,
            max_connections: 10_000,
            max_message_size: 64 * 1024,
            rate_per_second: 20,
            burst: 50,
            idle_timeout_secs: 60,
            heartbeat_secs: 20,
            tls: false,
            cert: None,
            key: None,
            max_connections_per_ip: None,
            ipv6_prefix: 64,
            reserved_percent: 10,
            reserve_below: None,
            write_timeout_secs: 10,
            max_queued_bytes: 1024 * 1024,
            max_queued_messages: 256,
            handshake_timeout_secs: 10,
            message_timeout_secs: 10,
            turn_credentials: None,
            credentials_per_minute: 10,
            credential_burst: 20,
            turn_user: None,
        }
    }
}

/// One `[[signaling.ice_servers]]` entry, the shape of WebRTC's `RTCIceServer`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct IceServerConfig {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username.
    pub username: Option<String>,
    /// TURN password.
    pub credential: Option<String>,
}

impl SignalingConfig {
    /// Connections at once from one address: `max_connections_per_ip`, or
    /// 64 (at most `max_connections`).
    pub fn per_ip(&self) -> usize {
        self.max_connections_per_ip
            .unwrap_or_else(|| self.max_connections.min(64))
    }

    /// Connections below which an address may take a reserved slot:
    /// `reserve_below`, or 4 (at most the per-address limit).
    pub fn reserve_below(&self) -> usize {
        self.reserve_below.unwrap_or_else(|| self.per_ip().min(4))
    }

    /// Whether the signaling port speaks TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls || self.cert.is_some()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let counts = [
            self.max_room_size,
            self.max_rooms_per_connection,
            self.max_rooms,
            self.max_connections,
            self.max_message_size,
        ];
        if counts.contains(&0) || self.rate_per_second == 0 || self.burst == 0 {
            return Err(ConfigError::Invalid(
                "signaling: the limits (max_*, rate_per_second, burst) must be at least 1",
            ));
        }
        if self.heartbeat_secs == 0 || self.heartbeat_secs >= self.idle_timeout_secs {
            return Err(ConfigError::Invalid(
                "signaling.heartbeat_secs must be at least 1 and below signaling.idle_timeout_secs",
            ));
        }
        if self.credential_ttl_secs == 0 {
            return Err(ConfigError::Invalid(
                "signaling.credential_ttl_secs must be at least 1",
            ));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError::Invalid(
                "signaling.cert and signaling.key go together (--signaling-cert and --signaling-key)",
            ));
        }
        if self.per_ip() == 0 || self.per_ip() > self.max_connections {
            return Err(ConfigError::Invalid(
                "signaling.max_connections_per_ip must be 1 to signaling.max_connections: above it, it could never be reached",
            ));
        }
        let addr = p2p_signaling::AddrLimits::new()
            .with_max_connections(self.max_connections)
            .with_max_per_addr(self.per_ip())
            .with_ipv6_prefix(self.ipv6_prefix)
            .with_reserve(self.reserved_percent, self.reserve_below());
        if let Err(e) = addr.validate() {
            return Err(ConfigError::Invalid(match e {
                e if e.starts_with("ipv6_prefix") => {
                    "signaling.ipv6_prefix must be 1 to 128 (64 counts a host's /64 as one address)"
                }
                e if e.starts_with("reserved_percent") => {
                    "signaling.reserved_percent must be at most 90, or the reserve would leave no slot for anyone"
                }
                _ => "signaling.reserve_below must be 1 to signaling.max_connections_per_ip while reserved_percent is above 0 (set reserved_percent = 0 to keep no reserve)",
            }));
        }
        if self.write_timeout_secs == 0
            || self.handshake_timeout_secs == 0
            || self.message_timeout_secs == 0
        {
            return Err(ConfigError::Invalid(
                "signaling.write_timeout_secs, handshake_timeout_secs and message_timeout_secs must be at least 1",
            ));
        }
        if self.max_queued_messages == 0
            || self.max_queued_bytes < self.max_message_size.saturating_add(1024)
        {
            return Err(ConfigError::Invalid(
                "signaling.max_queued_bytes must be at least signaling.max_message_size + 1024 (one message and its JSON around it), and signaling.max_queued_messages at least 1",
            ));
        }
        if self.credentials_per_minute == 0 || self.credential_burst == 0 {
            return Err(ConfigError::Invalid(
                "signaling.credentials_per_minute and signaling.credential_burst must be at least 1 (use turn_credentials = \"never\" to hand out none)",
            ));
        }
        if self.turn_credentials == Some(TurnCredentials::Token)
            && self.token.is_none()
            && self.room_tokens.is_empty()
        {
            return Err(ConfigError::Invalid(
                "signaling.turn_credentials = \"token\" needs a token: set signaling.token (--signaling-token) or signaling.room_tokens, or no join would ever get TURN credentials",
            ));
        }
        for s in &self.ice_servers {
            let known = ["stun:", "stuns:", "turn:", "turns:"];
            if s.urls.is_empty()
                || !s
                    .urls
                    .iter()
                    .all(|u| known.iter().any(|k| u.starts_with(k)))
            {
                return Err(ConfigError::Invalid(
                    "signaling.ice_servers: each entry has urls, each starting with stun:, stuns:, turn: or turns:",
                ));
            }
            let turn = s.urls.iter().any(|u| u.starts_with("turn"));
            if turn && (s.username.is_none() || s.credential.is_none()) {
                return Err(ConfigError::Invalid(
                    "signaling.ice_servers: a turn: entry needs username and credential",
                ));
            }
        }
        if self
            .public_host
            .as_deref()
            .is_some_and(|h| h.is_empty() || h.contains(['/', '?', ' ']))
        {
            return Err(ConfigError::Invalid(
                "signaling.public_host is a host name or an IP",
            ));
        }
        Ok(())
    }
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
        self.turn.validate()?;
        self.signaling.validate()?;
        self.cluster.validate().map_err(ConfigError::Invalid)?;
        self.validate_signaling_credentials()
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
        let listed = s
            .ice_servers
            .iter()
            .any(|e| e.username.is_some() || e.credential.is_some());
        let offered = listed
            || s.turn_user.is_some()
            || (self.turn.enabled() && self.turn.auth_secret.is_some());
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
        let no_users = Config::from_toml_str("[turn]\nrealm = \"x\"").unwrap();
        assert!(!no_users.turn.enabled());
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
        ];
        for text in bad {
            assert!(
                matches!(Config::from_toml_str(text), Err(ConfigError::Invalid(_))),
                "{text}"
            );
        }
    }
}
