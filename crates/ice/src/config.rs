//! The agent's configuration.

use std::time::Duration;

use p2p_stun::TransactionConfig;

/// How the agent behaves. `IceConfig::default()` is a full, controlled agent
/// with regular nomination and the RFC timers.
#[derive(Debug, Clone, PartialEq)]
pub struct IceConfig {
    /// Start in the controlling role (the offerer, RFC 8445 §6.1.1). Ignored
    /// in ICE-lite mode (always controlled).
    pub controlling: bool,
    /// ICE-lite (RFC 8445 §2.5): only host candidates, only answers checks,
    /// never sends any, always controlled, no consent checks.
    pub lite: bool,
    /// Use only relayed local candidates (host and server-reflexive ones are
    /// rejected, no server-reflexive gathering, requests to other local
    /// addresses are dropped).
    pub relay_only: bool,
    /// Aggressive nomination (RFC 5245 §8.1.1.2): every check of the
    /// controlling agent carries USE-CANDIDATE. Off: regular nomination.
    pub aggressive_nomination: bool,
    /// Regular nomination, plus USE-CANDIDATE on the first check of a pair
    /// when it is the best pair of the check list and no pair is valid yet
    /// (host ↔ host on one LAN, relay ↔ relay under the relay-only policy):
    /// if it succeeds, both sides select it after one round trip instead of
    /// two. A controlled peer treats it as any nomination (RFC 8445
    /// §7.3.1.5); when it fails nothing changes. Default on.
    pub optimistic_nomination: bool,
    /// Ta, the pacing of connectivity checks (RFC 8445 §14.2). Default 50 ms.
    pub ta: Duration,
    /// Retransmissions of a connectivity check. Default: RTO 500 ms, 5
    /// transmits, a last wait of 4 × RTO, so a check fails after 9.5 s.
    pub check_retransmits: TransactionConfig,
    /// Retransmissions of a Binding request to a STUN server for
    /// server-reflexive gathering. Default: RTO 500 ms, 3 transmits, fails
    /// after 3.5 s.
    pub gather_retransmits: TransactionConfig,
    /// Regular nomination: how long the controlling agent waits, after the
    /// first valid pair, for checks of higher-priority pairs before it
    /// nominates the best valid pair anyway. Default 1 s. (It nominates at
    /// once when no pair of higher priority is still to be checked, and
    /// sooner than this when the better pairs in progress are not worth
    /// waiting for: our checks unanswered for one RTO plus twice the valid
    /// pair's round trip, and no check from the peer on them.)
    pub nomination_timeout: Duration,
    /// Consent freshness (RFC 7675): a check on the selected pair every this
    /// long, randomised by 0.8..1.2. Default 5 s.
    pub consent_interval: Duration,
    /// Consent is lost after this long without a response. Default 30 s.
    pub consent_timeout: Duration,
    /// The state becomes `Disconnected` after this long without a consent
    /// response (and goes back when one arrives). Default 10 s.
    pub disconnected_timeout: Duration,
    /// A STUN Binding indication keeps the selected path alive when nothing
    /// was sent on it for this long (RFC 8445 §11). Default 15 s.
    pub keepalive_interval: Duration,
    /// Fail when no pair was selected this long after the checks started,
    /// even without end-of-candidates. Default: none (the agent fails only
    /// when both sides signalled end-of-candidates and every pair failed).
    pub checking_timeout: Option<Duration>,
    /// Seed of the agent's RNG (tie-breaker, ufrag/pwd, transaction ids,
    /// consent jitter). `None`: OS entropy.
    pub rng_seed: Option<u64>,
}

impl Default for IceConfig {
    fn default() -> Self {
        IceConfig {
            controlling: false,
            lite: false,
            relay_only: false,
            aggressive_nomination: false,
            optimistic_nomination: true,
            ta: Duration::from_millis(50),
            check_retransmits: TransactionConfig {
                rto: Duration::from_millis(500),
                max_transmits: 5,
                last_wait_multiplier: 4,
                ..TransactionConfig::default()
            },
            gather_retransmits: TransactionConfig {
                rto: Duration::from_millis(500),
                max_transmits: 3,
                last_wait_multiplier: 4,
                ..TransactionConfig::default()
            },
            nomination_timeout: Duration::from_secs(1),
            consent_interval: Duration::from_secs(5),
            consent_timeout: Duration::from_secs(30),
            disconnected_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
            checking_timeout: None,
            rng_seed: None,
        }
    }
}

impl IceConfig {
    /// The default configuration in the controlling role.
    pub fn controlling() -> Self {
        IceConfig {
            controlling: true,
            ..IceConfig::default()
        }
    }

    /// The default configuration in the controlled role.
    pub fn controlled() -> Self {
        IceConfig::default()
    }

    /// The same configuration with a fixed RNG seed.
    pub fn with_seed(self, seed: u64) -> Self {
        IceConfig {
            rng_seed: Some(seed),
            ..self
        }
    }
}
