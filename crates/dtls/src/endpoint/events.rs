//! What an endpoint hands out, and its errors.

use std::fmt;

use p2p_proto::{Output, Transmit};

use crate::fingerprint::Fingerprint;

/// One output of a [`DtlsEndpoint`](crate::DtlsEndpoint), in the order to
/// act on them.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtlsOutput {
    /// A datagram to send (from the path's local address to its remote).
    Transmit(Transmit),
    /// Something happened.
    Event(DtlsEvent),
}

impl Output for DtlsOutput {
    fn into_transmit(self) -> Result<Transmit, Self> {
        match self {
            DtlsOutput::Transmit(t) => Ok(t),
            other => Err(other),
        }
    }
}

/// What an endpoint tells its owner.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtlsEvent {
    /// The handshake is done and the peer's certificate matched a
    /// fingerprint signaled for it: data may flow. Comes once, before any
    /// [`DtlsEvent::Data`].
    #[non_exhaustive]
    Connected {
        /// The signaled fingerprint the peer's certificate matched.
        remote_fingerprint: Fingerprint,
        /// The DTLS version spoken.
        version: DtlsVersion,
    },
    /// Application data from the peer: one record's plaintext, in the
    /// order received (DTLS does not reorder or retransmit application
    /// data; whoever is above does).
    Data(Vec<u8>),
    /// The association is over; nothing more comes out but the transmits
    /// queued before this event. Comes once.
    Closed(CloseReason),
}

/// A DTLS version.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DtlsVersion {
    /// DTLS 1.2 (RFC 6347), what browsers speak by default.
    Dtls12,
    /// DTLS 1.3 (RFC 9147).
    Dtls13,
}

impl fmt::Display for DtlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DtlsVersion::Dtls12 => "DTLS 1.2",
            DtlsVersion::Dtls13 => "DTLS 1.3",
        })
    }
}

/// Why the association ended.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent `close_notify` (we answered with ours).
    PeerClosed,
    /// The peer sent a fatal alert (RFC 5246 §7.2: 40 handshake_failure,
    /// 42 bad_certificate, 80 internal_error, …).
    PeerAlert {
        /// The alert's description code; [`alert_name`] names it.
        description: u8,
    },
    /// The peer's certificate matched none of the fingerprints signaled
    /// for it. Nothing it sent was delivered; a fatal `bad_certificate`
    /// alert was sent.
    FingerprintMismatch {
        /// The peer certificate's SHA-256 fingerprint (for the log).
        peer: Fingerprint,
    },
    /// The handshake did not complete (or the peer's fingerprint did not
    /// arrive) within the configured time or retransmissions.
    HandshakeTimeout,
    /// [`DtlsEndpoint::close`](crate::DtlsEndpoint::close) was called.
    LocalClose,
    /// The DTLS library gave up on the association (a protocol or crypto
    /// failure); [`DtlsEndpoint::close_detail`](crate::DtlsEndpoint::close_detail)
    /// has its words.
    Failed(FailureKind),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("the peer closed (close_notify)"),
            CloseReason::PeerAlert { description } => write!(
                f,
                "the peer sent fatal alert {description} ({})",
                alert_name(*description)
            ),
            CloseReason::FingerprintMismatch { peer } => write!(
                f,
                "the peer's certificate ({peer}) matches no signaled fingerprint"
            ),
            CloseReason::HandshakeTimeout => f.write_str("the handshake timed out"),
            CloseReason::LocalClose => f.write_str("closed here"),
            CloseReason::Failed(k) => write!(f, "DTLS failed: {k}"),
        }
    }
}

/// The class of a failure of the DTLS library.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The peer broke the protocol (an unexpected message, a renegotiation).
    Protocol,
    /// A cryptographic operation failed (a bad signature, a bad Finished,
    /// no common cipher suite or group).
    Crypto,
    /// The peer's certificate could not be used (no certificate, not
    /// ECDSA P-256/P-384).
    Certificate,
    /// A queue of the library overflowed.
    Resources,
    /// The library panicked; the endpoint caught it.
    Internal,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Protocol => "protocol error",
            FailureKind::Crypto => "cryptographic failure",
            FailureKind::Certificate => "unusable peer certificate",
            FailureKind::Resources => "queue overflow",
            FailureKind::Internal => "internal error",
        })
    }
}

/// The name of an alert description (RFC 5246 §7.2, RFC 8446 §6).
pub fn alert_name(description: u8) -> &'static str {
    match description {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        109 => "missing_extension",
        110 => "unsupported_extension",
        112 => "unrecognized_name",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => "unknown",
    }
}

/// Why a command was refused.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DtlsError {
    /// `send` before [`DtlsEvent::Connected`].
    #[error(
        "not connected yet: data can be sent once the handshake is done and the peer verified"
    )]
    NotConnected,
    /// `send` after [`DtlsEvent::Closed`].
    #[error("the association is closed")]
    Closed,
    /// The data does not fit in one record within the MTU.
    #[error("{len} bytes do not fit in one record of at most {max} bytes (MTU)")]
    TooLarge {
        /// The length given.
        len: usize,
        /// The most one record carries ([`DtlsEndpoint::max_payload`](crate::DtlsEndpoint::max_payload)).
        max: usize,
    },
    /// The configuration cannot work (the text says which field).
    #[error("invalid DTLS configuration: {0}")]
    InvalidConfig(&'static str),
}
