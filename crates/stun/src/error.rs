//! Typed errors of the codec. Every variant carries numeric context only, so
//! the errors are `Copy` and cheap on the hot path.

use crate::AttrType;

/// Why a datagram is not a well-formed STUN message.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the 20-byte header.
    #[error("{len} bytes is shorter than the 20-byte STUN header")]
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// The two most significant bits of the first byte are not zero (RFC 8489 §5).
    #[error("the first two bits are not zero: not a STUN message")]
    NotStun,
    /// The header's message length is not a multiple of four (RFC 8489 §5).
    #[error("message length {declared} is not a multiple of 4")]
    UnalignedLength {
        /// The length field of the header.
        declared: u16,
    },
    /// The header's message length does not match the bytes that follow the header.
    #[error("header declares {declared} bytes of attributes, {available} follow")]
    LengthMismatch {
        /// The length field of the header.
        declared: u16,
        /// The bytes after the header.
        available: usize,
    },
    /// An attribute (with its padding) runs past the end of the message.
    #[error(
        "attribute {attr} at offset {offset} declares {len} bytes: past the end of the message"
    )]
    AttributeOverflow {
        /// The attribute's type.
        attr: AttrType,
        /// Offset of the attribute header from the start of the message.
        offset: usize,
        /// The attribute's declared value length.
        len: u16,
    },
    /// An attribute follows FINGERPRINT, which must be last (RFC 8489 §14.7).
    #[error("attribute {attr} follows FINGERPRINT, which must be the last attribute")]
    FingerprintNotLast {
        /// The attribute found after FINGERPRINT.
        attr: AttrType,
    },
    /// An attribute's value is malformed.
    #[error("attribute {attr}: {reason}")]
    Attribute {
        /// The attribute's type.
        attr: AttrType,
        /// What is wrong with its value.
        reason: AttrError,
    },
}

impl DecodeError {
    /// The STUN error code a server answers a request with when decoding failed
    /// this way, or `None` when the message must be discarded silently: a
    /// message that fails the basic checks of RFC 8489 §6.3 (header, length,
    /// attribute framing, FINGERPRINT position) gets no answer; a well-framed
    /// request whose attribute value is malformed gets 400.
    pub fn stun_code(&self) -> Option<u16> {
        match self {
            DecodeError::Attribute { .. } => Some(400),
            _ => None,
        }
    }
}

/// Why an attribute's value is malformed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttrError {
    /// The value has a length this attribute never has.
    #[error("value length {len} is invalid (expected {expected})")]
    BadLength {
        /// The value length found.
        len: usize,
        /// The lengths allowed, in words.
        expected: &'static str,
    },
    /// The value is longer than the RFC allows.
    #[error("value length {len} exceeds the maximum of {max}")]
    TooLong {
        /// The value length found.
        len: usize,
        /// The maximum length.
        max: usize,
    },
    /// An address family other than IPv4 (0x01) or IPv6 (0x02).
    #[error("unknown address family 0x{0:02x}")]
    BadFamily(u8),
    /// A text attribute that is not UTF-8.
    #[error("value is not UTF-8")]
    NotUtf8,
    /// An ERROR-CODE class outside 3..=6 or a number above 99.
    #[error("error code class {class} number {number} is out of range")]
    BadErrorCode {
        /// The class (hundreds).
        class: u8,
        /// The number (units and tens).
        number: u8,
    },
    /// A CHANNEL-NUMBER outside 0x4000..=0x7FFF (RFC 5766's range; RFC 8656
    /// clients use 0x4000..=0x4FFF).
    #[error("channel number 0x{0:04x} is outside 0x4000..=0x7FFF")]
    BadChannel(u16),
    /// A PASSWORD-ALGORITHMS list that does not parse.
    #[error("malformed algorithm list")]
    BadAlgorithmList,
}

/// Why MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 or FINGERPRINT did not verify.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// The message carries no such attribute.
    #[error("the message has no {0}")]
    Missing(AttrType),
    /// The attribute's value has the wrong length.
    #[error("{attr} has a value of {len} bytes")]
    BadLength {
        /// Which attribute.
        attr: AttrType,
        /// Its length.
        len: usize,
    },
    /// The computed value differs.
    #[error("{0} does not match")]
    Mismatch(AttrType),
}

/// Why a message could not be written.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The caller's buffer is full.
    #[error("buffer too small: {needed} more bytes needed")]
    BufferTooSmall {
        /// Bytes that did not fit.
        needed: usize,
    },
    /// The message would exceed 65535 bytes of attributes, or an attribute 65535 bytes.
    #[error("message too large")]
    TooLarge,
    /// An attribute was added after FINGERPRINT, or a non-integrity attribute after
    /// MESSAGE-INTEGRITY.
    #[error("attribute {0} cannot follow the integrity/fingerprint attributes already written")]
    OutOfOrder(AttrType),
}
