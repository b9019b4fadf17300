//! The agent's configuration.

use std::time::Duration;

use p2p_stun::TransactionConfig;

/// How the agent behaves. `IceConfig::default()` is a full, controlled agent
/// with regular nomination and the RFC timers.
///
/// Start from [`IceConfig::controlling`] or [`IceConfig::controlled`] and
/// change what differs with the `with_*` methods (or set the public fields
/// on a value): new fields may come, so the struct cannot be written out.
///
/// ```
/// use std::time::Duration;
/// use p2p_ice::IceConfig;
///
/// let config = IceConfig::controlling()
///     .with_relay_only(true)
///     .with_ta(Duration::from_millis(20))
///     .with_seed(7);
/// assert!(config.controlling && config.relay_only);
/// ```
#[non_exhaustive]
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
    /// Relay first, upgrade later: the controlling agent nominates the
    /// first valid pair at once, whatever its kind (a relayed pair
    /// included) and whatever better pairs are still being checked, so
    /// that the application's connection starts on the first path that
    /// works; a better pair that succeeds later is nominated in its turn
    /// (regular nomination's wait, [`nomination_timeout`], applies to
    /// these upgrades) and the selected pair moves to it. Off: the first
    /// nomination waits as later ones do (the agent before issue 14).
    /// Default on.
    ///
    /// [`nomination_timeout`]: IceConfig#structfield.nomination_timeout
    pub early_nomination: bool,
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
            early_nomination: true,
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

    /// The same configuration with [`controlling`](IceConfig#structfield.controlling) set.
    pub fn with_controlling(self, controlling: bool) -> Self {
        IceConfig {
            controlling,
            ..self
        }
    }

    /// The same configuration with [`lite`](IceConfig#structfield.lite) set.
    pub fn with_lite(self, lite: bool) -> Self {
        IceConfig { lite, ..self }
    }

    /// The same configuration with [`relay_only`](IceConfig#structfield.relay_only) set.
    pub fn with_relay_only(self, relay_only: bool) -> Self {
        IceConfig { relay_only, ..self }
    }

    /// The same configuration with [`aggressive_nomination`](IceConfig#structfield.aggressive_nomination) set.
    pub fn with_aggressive_nomination(self, aggressive_nomination: bool) -> Self {
        IceConfig {
            aggressive_nomination,
            ..self
        }
    }

    /// The same configuration with [`optimistic_nomination`](IceConfig#structfield.optimistic_nomination) set.
    pub fn with_optimistic_nomination(self, optimistic_nomination: bool) -> Self {
        IceConfig {
            optimistic_nomination,
            ..self
        }
    }

    /// The same configuration with [`early_nomination`](IceConfig#structfield.early_nomination) set.
    pub fn with_early_nomination(self, early_nomination: bool) -> Self {
        IceConfig {
            early_nomination,
            ..self
        }
    }

    /// The same configuration with [`ta`](IceConfig#structfield.ta) set.
    pub fn with_ta(self, ta: Duration) -> Self {
        IceConfig { ta, ..self }
    }

    /// The same configuration with [`check_retransmits`](IceConfig#structfield.check_retransmits) set.
    pub fn with_check_retransmits(self, check_retransmits: TransactionConfig) -> Self {
        IceConfig {
            check_retransmits,
            ..self
        }
    }

    /// The same configuration with [`gather_retransmits`](IceConfig#structfield.gather_retransmits) set.
    pub fn with_gather_retransmits(self, gather_retransmits: TransactionConfig) -> Self {
        IceConfig {
            gather_retransmits,
            ..self
        }
    }

    /// The same configuration with [`nomination_timeout`](IceConfig#structfield.nomination_timeout) set.
    pub fn with_nomination_timeout(self, nomination_timeout: Duration) -> Self {
        IceConfig {
            nomination_timeout,
            ..self
        }
    }

    /// The same configuration with [`consent_interval`](IceConfig#structfield.consent_interval) set.
    pub fn with_consent_interval(self, consent_interval: Duration) -> Self {
        IceConfig {
            consent_interval,
            ..self
        }
    }

    /// The same configuration with [`consent_timeout`](IceConfig#structfield.consent_timeout) set.
    pub fn with_consent_timeout(self, consent_timeout: Duration) -> Self {
        IceConfig {
            consent_timeout,
            ..self
        }
    }

    /// The same configuration with [`disconnected_timeout`](IceConfig#structfield.disconnected_timeout) set.
    pub fn with_disconnected_timeout(self, disconnected_timeout: Duration) -> Self {
        IceConfig {
            disconnected_timeout,
            ..self
        }
    }

    /// The same configuration with [`keepalive_interval`](IceConfig#structfield.keepalive_interval) set.
    pub fn with_keepalive_interval(self, keepalive_interval: Duration) -> Self {
        IceConfig {
            keepalive_interval,
            ..self
        }
    }

    /// The same configuration with [`checking_timeout`](IceConfig#structfield.checking_timeout) set.
    pub fn with_checking_timeout(self, checking_timeout: Option<Duration>) -> Self {
        IceConfig {
            checking_timeout,
            ..self
        }
    }

    /// The same configuration with a fixed RNG seed.
    pub fn with_seed(self, seed: u64) -> Self {
        IceConfig {
            rng_seed: Some(seed),
            ..self
        }
    }
}
