//! Settings of the client.

use std::net::SocketAddr;
use std::time::Duration;

use p2p_proto::Transport;
use p2p_stun::attr::{AddressFamily, PasswordAlgorithm, PROTO_UDP};
use p2p_stun::TransactionConfig;

#[cfg(doc)]
use super::TurnClient;
#[cfg(doc)]
use p2p_proto::Transmit;

/// Settings of a [`TurnClient`]. `ClientConfig::new` fills in the defaults;
/// set fields after it.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The local address transmits are sent from ([`Transmit::source`]).
    pub local: SocketAddr,
    /// The TURN server's address.
    pub server: SocketAddr,
    /// How the client reaches the server (UDP by default). Over TCP/TLS the
    /// driver frames the stream; requests are not retransmitted.
    pub transport: Transport,
    /// The long-term username.
    pub username: String,
    /// The long-term password.
    pub password: String,
    /// Password algorithms the client accepts; it takes the first one in
    /// the server's PASSWORD-ALGORITHMS that is in this list. Default
    /// SHA-256 and MD5. With SHA-256 the client signs with
    /// MESSAGE-INTEGRITY-SHA256, with MD5 with MESSAGE-INTEGRITY.
    pub password_algorithms: Vec<PasswordAlgorithm>,
    /// Send USERHASH instead of USERNAME when the server's nonce offers
    /// username anonymity (RFC 8489 §9.2). Default false.
    pub use_userhash: bool,
    /// REQUESTED-TRANSPORT, the IP protocol number (17, UDP; the default).
    pub requested_transport: u8,
    /// REQUESTED-ADDRESS-FAMILY (IPv4 when `None`).
    pub requested_family: Option<AddressFamily>,
    /// Ask for an IPv6 relayed address too (ADDITIONAL-ADDRESS-FAMILY).
    pub dual_stack: bool,
    /// LIFETIME asked for in Allocate and Refresh; `None`: the server's default.
    pub lifetime: Option<Duration>,
    /// EVEN-PORT: `Some(reserve_next)`.
    pub even_port: Option<bool>,
    /// RESERVATION-TOKEN from an earlier allocation's EVEN-PORT.
    pub reservation_token: Option<[u8; 8]>,
    /// Send DONT-FRAGMENT in Allocate.
    pub dont_fragment: bool,
    /// SOFTWARE in requests.
    pub software: Option<String>,
    /// Permissions (and channels, whose ChannelBind also refreshes the
    /// permission) are refreshed this long after they were last confirmed.
    /// Default 240 s (permissions last 300 s).
    pub permission_refresh: Duration,
    /// 438 Stale Nonce answers in a row that are retried. Default 3.
    pub max_stale_nonce_retries: u32,
    /// Retransmission timers.
    pub transaction: TransactionConfig,
    /// Seed of the client's RNG (transaction ids). `None`: OS entropy.
    pub rng_seed: Option<u64>,
}

impl ClientConfig {
    /// Defaults for a client at `local` of the server at `server`.
    pub fn new(
        local: SocketAddr,
        server: SocketAddr,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        ClientConfig {
            local,
            server,
            transport: Transport::Udp,
            username: username.into(),
            password: password.into(),
            password_algorithms: vec![PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5],
            use_userhash: false,
            requested_transport: PROTO_UDP,
            requested_family: None,
            dual_stack: false,
            lifetime: None,
            even_port: None,
            reservation_token: None,
            dont_fragment: false,
            software: None,
            permission_refresh: Duration::from_secs(240),
            max_stale_nonce_retries: 3,
            transaction: TransactionConfig::default(),
            rng_seed: None,
        }
    }
}
