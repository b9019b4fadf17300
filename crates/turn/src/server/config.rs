//! Settings of the server.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use p2p_stun::attr::PasswordAlgorithm;

use crate::policy::PeerPolicy;

#[cfg(doc)]
use super::{ServerOutput, TurnServer};

/// A per-allocation bandwidth cap: a token bucket over the bytes of
/// application data relayed in both directions.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth {
    /// Sustained rate, bytes per second.
    pub bytes_per_sec: u64,
    /// Bucket size, bytes (how much may pass at once after a quiet spell).
    pub burst: u64,
}

impl Bandwidth {
    /// `bytes_per_sec` sustained, `burst` bytes at once.
    pub fn new(bytes_per_sec: u64, burst: u64) -> Self {
        Bandwidth {
            bytes_per_sec,
            burst,
        }
    }
}

/// A limit on authentication failures per client address: a leaky bucket
/// of `burst` failures that drains at `per_minute`. Past it, requests that
/// carry credentials from that address are dropped unanswered, unchecked.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthLimit {
    /// Failures one address may have in a row before it is throttled.
    pub burst: u32,
    /// Failures a minute allowed after that, sustained.
    pub per_minute: u32,
}

impl AuthLimit {
    /// `burst` failures at once, then `per_minute`.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        AuthLimit { burst, per_minute }
    }
}

impl Default for AuthLimit {
    /// 20 failures at once, then 60 a minute.
    fn default() -> Self {
        AuthLimit::new(20, 60)
    }
}

/// Settings of a [`TurnServer`]. `ServerConfig::new(realm)` gives the RFC's
/// defaults and the secure policy; set fields after it. Give it
/// [`ServerConfig::relayed_ips`]: without one, every Allocate is refused
/// (440).
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The realm of the long-term credentials.
    pub realm: String,
    /// The IPs relayed addresses are on: the first IPv4 and the first IPv6
    /// one count. A family without one is refused (440). Default none.
    pub relayed_ips: Vec<IpAddr>,
    /// The ports relayed addresses are taken from, UDP and TCP alike (RFC
    /// 8656 §7.2: the dynamic range by default, 49152-65535). The server
    /// probes from a random port (its RNG, [`ServerConfig::rng_seed`]).
    pub relayed_ports: RangeInclusive<u16>,
    /// Grant RFC 6062 allocations (a TCP relayed address, for clients on
    /// TCP or TLS); 442 otherwise. Default true.
    pub tcp_allocations: bool,
    /// SOFTWARE sent in authenticated responses only (never in the
    /// unauthenticated 401/400, to keep those small).
    pub software: Option<String>,
    /// Password algorithms offered in PASSWORD-ALGORITHMS, in order of
    /// preference (RFC 8489 §9.2). Empty: RFC 5389 behaviour (MD5 only, no
    /// PASSWORD-ALGORITHMS). Default: SHA-256, MD5.
    pub password_algorithms: Vec<PasswordAlgorithm>,
    /// How long a nonce stays valid (438 after). Default 10 minutes.
    pub nonce_lifetime: Duration,
    /// Allocation lifetime when the client asks for less or nothing. Default 600 s.
    pub default_lifetime: Duration,
    /// The longest allocation lifetime granted. Default 3600 s.
    pub max_lifetime: Duration,
    /// Permission lifetime (RFC 8656 §9: 300 s).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (RFC 8656 §12: 600 s).
    pub channel_lifetime: Duration,
    /// How long an EVEN-PORT reservation is held (RFC 8656 suggests 30 s).
    pub reservation_lifetime: Duration,
    /// Allocations one username may hold at once (486 beyond). Default 10.
    pub user_quota: Option<u32>,
    /// Allocations in all (508 beyond). Default none: the number of relay
    /// ports ([`ServerConfig::capacity`]), of which the reserve is kept.
    pub total_quota: Option<u32>,
    /// Percentage of the capacity ([`ServerConfig::capacity`]) kept for
    /// client addresses that hold fewer than
    /// [`reserve_below`](ServerConfig::reserve_below) allocations: once
    /// the rest is held, an Allocate from an address holding more gets 508,
    /// so that a flood of allocations from a few addresses does not lock
    /// everyone else out. Default 10; 0 keeps none.
    pub reserved_percent: u8,
    /// An address (IPv6 by [`ipv6_prefix`](ServerConfig::ipv6_prefix))
    /// may take a reserved allocation while it holds fewer than this many.
    /// Default 4.
    pub reserve_below: u32,
    /// The IPv6 prefix length counted as one client address. Default 64.
    pub ipv6_prefix: u8,
    /// Percentage of the capacity ephemeral users
    /// ([`CredentialStore::is_ephemeral`](crate::CredentialStore::is_ephemeral):
    /// TURN REST credentials) may hold together, 486 beyond, so that
    /// credentials farmed from the service that mints them cannot take what
    /// the configured users need. The reserve
    /// ([`reserved_percent`](ServerConfig::reserved_percent)) applies within
    /// the share too, so that one address farming them does not lock out
    /// the other ephemeral users. Default 100 (no limit); set it when the
    /// store has both kinds (the daemon does: 80).
    pub ephemeral_share_percent: u8,
    /// Authentication failures allowed per client address (IPv6 by
    /// [`ipv6_prefix`](ServerConfig::ipv6_prefix)), counted in a table of
    /// fixed size whatever the number of addresses. Past the limit,
    /// requests with credentials from that address are dropped without an
    /// answer and without being checked, so that a guess cannot succeed
    /// either; the client's retransmissions back off. A failure counts
    /// against the address only when its nonce was minted for that 5-tuple;
    /// requests signed with anyone else's nonce share one key, so that a
    /// forged source address cannot get its owner throttled. Default
    /// [`AuthLimit::default`] (20, then 60 a minute); `None`: no limit.
    pub auth_failure_limit: Option<AuthLimit>,
    /// Permissions one allocation may hold (508 beyond). Default 256.
    pub max_permissions: usize,
    /// Per-allocation bandwidth cap (UDP relaying; the bytes of RFC 6062
    /// TCP relays flow in the driver, which should apply it there: the
    /// daemon does). Default none.
    pub bandwidth: Option<Bandwidth>,
    /// TCP peer connections (RFC 6062: connecting, waiting for their
    /// ConnectionBind, or bound) one allocation may hold: a Connect beyond
    /// gets 508 and a peer connecting beyond is refused. Default 128.
    pub max_tcp_connections: usize,
    /// Which peers may be relayed to. Default: [`PeerPolicy::new`].
    pub peer_policy: PeerPolicy,
    /// The server's own addresses, refused as peers (the listening address
    /// of the request and the allocation's relayed addresses are refused
    /// too), except for relaying between allocations: see [`PeerPolicy`].
    pub own_addresses: Vec<IpAddr>,
    /// The server's listening sockets (STUN/TURN, signaling, metrics…):
    /// data is never relayed to them, whatever the policy. An unspecified
    /// IP (`0.0.0.0:8080`) stands for that port on every own address. The
    /// listening address a request came to is always included.
    pub service_addresses: Vec<SocketAddr>,
    /// Answer STUN Binding requests on listening addresses (no
    /// authentication). Default true; turn off when the daemon routes
    /// Binding elsewhere (see [`crate::is_turn_method`]).
    pub answer_binding: bool,
    /// RFC 5780 §6.1: the server's alternate address (another IP and
    /// port it also answers Binding on), sent as OTHER-ADDRESS in every
    /// Binding answer so that a client can compare the mappings its NAT
    /// makes towards two server addresses. Default `None`: not sent.
    pub other_address: Option<SocketAddr>,
    /// Seed of the server's RNG (nonce key, transaction ids of Data
    /// indications, reservation tokens, relayed ports, connection ids).
    /// `None`: OS entropy.
    pub rng_seed: Option<u64>,
    /// Publish the channels of UDP allocations as [`ServerOutput::Route`]s,
    /// so that the driver can relay their
    /// ChannelData itself (a fast path). Default off.
    pub export_routes: bool,
}

impl ServerConfig {
    /// Defaults for `realm`.
    pub fn new(realm: impl Into<String>) -> Self {
        ServerConfig {
            realm: realm.into(),
            relayed_ips: Vec::new(),
            relayed_ports: 49152..=65535,
            tcp_allocations: true,
            software: None,
            password_algorithms: vec![PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5],
            nonce_lifetime: Duration::from_secs(600),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            reservation_lifetime: Duration::from_secs(30),
            user_quota: Some(10),
            total_quota: None,
            reserved_percent: 10,
            reserve_below: 4,
            ipv6_prefix: 64,
            ephemeral_share_percent: 100,
            auth_failure_limit: Some(AuthLimit::default()),
            max_permissions: 256,
            bandwidth: None,
            max_tcp_connections: 128,
            peer_policy: PeerPolicy::new(),
            own_addresses: Vec::new(),
            service_addresses: Vec::new(),
            answer_binding: true,
            other_address: None,
            rng_seed: None,
            export_routes: false,
        }
    }
}

impl ServerConfig {
    /// Allocations the server may hold: [`total_quota`](ServerConfig::total_quota),
    /// or else the number of ports in
    /// [`relayed_ports`](ServerConfig::relayed_ports) (each allocation takes
    /// at least one). The reserve and the ephemeral share are percentages
    /// of it.
    pub fn capacity(&self) -> u32 {
        self.total_quota.unwrap_or_else(|| {
            (u32::from(*self.relayed_ports.end()) + 1)
                .saturating_sub(u32::from(*self.relayed_ports.start()))
        })
    }
}
