//! `[signaling]`: the signaling server's settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

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
/// assert_eq!(cfg.signaling.listen, ["127.0.0.1:8080".parse().unwrap()]);
/// // Both families: one address each, or a list.
/// let both = p2p_server::Config::from_toml_str(
///     "[signaling]\nlisten = [\"0.0.0.0:8080\", \"[::]:8080\"]",
/// )?;
/// assert_eq!(both.signaling.listen.len(), 2);
/// # Ok::<(), p2p_server::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SignalingConfig {
    /// Where to serve the WebSocket and the page (`--signaling ADDR`,
    /// repeatable): one address (`listen = "0.0.0.0:8080"`) or a list
    /// (`listen = ["0.0.0.0:8080", "[::]:8080"]`), each serving its own
    /// family (an IPv6 address is bound IPv6-only, as `stun.listen` is, so
    /// both families take two entries). Empty: not served. `p2p serve`
    /// uses the loopback of each family the machine has (`127.0.0.1:8080`
    /// and `[::1]:8080`) when neither the flag nor the file sets it,
    /// unless `--no-signaling`; like every other port, one that cannot be
    /// bound stops the daemon.
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<SocketAddr>,
    /// Serve the browser page at `/` (`--no-page` turns it off). Default true.
    pub page: bool,
    /// The host (name or IP) in the `stun:`/`turn:` URLs handed out
    /// (`--public-host`). Default: the IP of the first STUN listen address;
    /// when that is `0.0.0.0` or `::` and TURN is on, TURN's relay IP of
    /// that family as advertised (`turn.external_ip`, else `turn.relay_ip`).
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

/// `listen = "ADDR"` or `listen = ["ADDR", ...]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    struct Addrs;
    impl<'de> serde::de::Visitor<'de> for Addrs {
        type Value = Vec<SocketAddr>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an address such as \"0.0.0.0:8080\", or a list of them")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.parse().map(|a| vec![a]).map_err(E::custom)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut all = Vec::new();
            while let Some(a) = seq.next_element::<SocketAddr>()? {
                all.push(a);
            }
            Ok(all)
        }
    }
    d.deserialize_any(Addrs)
}

/// When the signaling server hands out TURN credentials (see
/// `p2p_signaling::CredentialPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
            listen: Vec::new(),
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
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

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let mut listen = self.listen.clone();
        listen.sort();
        listen.dedup();
        if listen.len() != self.listen.len() {
            return Err(ConfigError::Invalid(
                "signaling.listen names an address twice (--signaling)",
            ));
        }
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
