//! What an endpoint is made with.

use std::time::Duration;

use crate::certificate::Certificate;
use crate::endpoint::DtlsError;
use crate::fingerprint::Fingerprint;
use crate::setup::DtlsRole;

/// The configuration of a [`DtlsEndpoint`](crate::DtlsEndpoint).
///
/// Made with [`DtlsConfig::new`] (the defaults below); the public fields
/// may be set after.
///
/// ```
/// use std::time::Duration;
/// use p2p_dtls::{Certificate, DtlsConfig, DtlsRole, Fingerprint};
///
/// let remote: Fingerprint = "sha-256 5B:D6:8E:61:0B:0E:C8:9A:6F:D3:0C:5C:3F:94:49:7A:8F:53:2B:9F:9B:3B:F3:45:42:40:13:6B:2D:3F:80:FA".parse()?;
/// let mut config = DtlsConfig::new(Certificate::generate()?, DtlsRole::Client, vec![remote]);
/// config.rng_seed = Some(7);
/// config.handshake_timeout = Duration::from_secs(10);
/// assert_eq!(config.mtu, 1200);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct DtlsConfig {
    /// This side's certificate (its fingerprint is what this side's
    /// `a=fingerprint` says).
    pub certificate: Certificate,
    /// Client or server, from `a=setup` ([`Setup::roles`](crate::Setup::roles)).
    pub role: DtlsRole,
    /// The fingerprints the peer signaled (every `a=fingerprint` of its
    /// description). Its certificate must match one of them, with that
    /// one's hash function. May be empty at first and given later with
    /// [`DtlsEndpoint::set_remote_fingerprints`](crate::DtlsEndpoint::set_remote_fingerprints)
    /// (an offerer's DTLS server can see the ClientHello before the
    /// answer arrives): the handshake then completes but nothing is
    /// connected or delivered until they come.
    pub remote_fingerprints: Vec<Fingerprint>,
    /// The seed of the library's non-secret randomness (retransmission
    /// jitter, cookie secrets …); `None` = OS entropy. Key exchange and
    /// record randomness always come from the OS.
    pub rng_seed: Option<u64>,
    /// The largest datagram sent, in bytes (default 1200, what browsers
    /// use). Handshake messages are fragmented to fit; application data
    /// must fit in [`DtlsEndpoint::max_payload`](crate::DtlsEndpoint::max_payload).
    pub mtu: usize,
    /// How long the handshake may take, from the endpoint's start until
    /// the peer is verified (default 30 s); then it ends with
    /// [`CloseReason::HandshakeTimeout`](crate::CloseReason::HandshakeTimeout).
    pub handshake_timeout: Duration,
    /// The first retransmission timeout of a handshake flight (default
    /// 1 s, RFC 6347 §4.2.4.1); it doubles at each retransmission.
    pub initial_rto: Duration,
    /// How many times one flight is retransmitted before the handshake
    /// gives up (default 6; with a 1 s first timeout the handshake timeout
    /// comes first).
    pub max_retransmissions: usize,
    /// Offer and accept DTLS 1.3 (RFC 9147) as well as 1.2 (default
    /// true): a client sends a ClientHello that either kind of server
    /// reads, a server answers in the version the ClientHello asks for.
    /// `false` speaks DTLS 1.2 (RFC 6347) only.
    pub dtls13: bool,
    /// The server makes the client echo a stateless cookie before the
    /// handshake (HelloVerifyRequest in DTLS 1.2, a HelloRetryRequest in
    /// 1.3): a defence against spoofed ClientHellos for a server open to
    /// any address. Default false, as str0m and browsers: WebRTC runs DTLS
    /// only on a pair ICE has checked (the peer proved it receives at its
    /// address, RFC 8445), so the cookie proves nothing more and costs one
    /// round trip before the first message.
    pub server_cookie: bool,
}

impl DtlsConfig {
    /// A configuration with the defaults.
    pub fn new(
        certificate: Certificate,
        role: DtlsRole,
        remote_fingerprints: Vec<Fingerprint>,
    ) -> DtlsConfig {
        DtlsConfig {
            certificate,
            role,
            remote_fingerprints,
            rng_seed: None,
            mtu: 1200,
            handshake_timeout: Duration::from_secs(30),
            initial_rto: Duration::from_secs(1),
            max_retransmissions: 6,
            dtls13: true,
            server_cookie: false,
        }
    }

    /// The same with `rng_seed` set.
    pub fn with_seed(mut self, seed: u64) -> DtlsConfig {
        self.rng_seed = Some(seed);
        self
    }

    /// The library's configuration, checked.
    pub(crate) fn to_dimpl(&self) -> Result<dimpl::Config, DtlsError> {
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(DtlsError::InvalidConfig("mtu must be 256 to 65507 bytes"));
        }
        if self.handshake_timeout.is_zero() || self.initial_rto.is_zero() {
            return Err(DtlsError::InvalidConfig(
                "handshake_timeout and initial_rto must not be zero",
            ));
        }
        let mut b = dimpl::Config::builder()
            .with_crypto_provider(crate::provider())
            .mtu(self.mtu)
            .handshake_timeout(self.handshake_timeout)
            .flight_start_rto(self.initial_rto)
            .flight_retries(self.max_retransmissions)
            .use_server_cookie(self.server_cookie)
            // WebRTC authenticates both ends by certificate (RFC 8827 §6.5).
            .require_client_certificate(true);
        if let Some(seed) = self.rng_seed {
            b = b.dangerously_set_rng_seed(seed);
        }
        if !self.dtls13 {
            b = b.dtls13_cipher_suites(&[]);
        }
        b.build()
            .map_err(|_| DtlsError::InvalidConfig("refused by the DTLS library"))
    }
}

/// The smallest MTU accepted: a handshake fragment must carry something.
const MIN_MTU: usize = 256;
/// The largest: a UDP datagram over IPv4.
const MAX_MTU: usize = 65_507;
