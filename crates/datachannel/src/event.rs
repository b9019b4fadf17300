//! What the association hands out: events, errors, the output enum.

use std::fmt;

use p2p_proto::Transmit;
use thiserror::Error;

use crate::dcep::Reliability;

/// A data channel: its SCTP stream id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u16);

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "channel {}", self.0)
    }
}

/// Why the association ended.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The peer sent ABORT.
    PeerAbort,
    /// The peer shut the association down (SHUTDOWN).
    PeerShutdown,
    /// [`close`](crate::SctpAssociation::close) was called (SHUTDOWN sent).
    LocalClose,
    /// [`abort`](crate::SctpAssociation::abort) was called (ABORT sent).
    LocalAbort,
    /// Nothing was heard from the peer for the dead-peer timeout (ABORT
    /// sent, in case the path still works one way).
    Timeout,
    /// INIT or COOKIE-ECHO went unanswered through every retransmission.
    HandshakeFailed,
    /// The peer broke the protocol (for example a message larger than our
    /// max-message-size, or a chunk the library cannot handle); ABORT sent.
    ProtocolError,
}

/// Something that happened, for the application.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// The SCTP association is up; channels opened before it now open.
    Connected,
    /// A channel we opened can be used: the peer acknowledged the
    /// DATA_CHANNEL_OPEN (or sent on the channel, an implicit ACK), or the
    /// pre-negotiated channel's association is up.
    ChannelOpen {
        /// The channel.
        id: ChannelId,
    },
    /// The peer opened a channel with DCEP (we have acknowledged it).
    ChannelOpened {
        /// The channel.
        id: ChannelId,
        /// Its label.
        label: String,
        /// Its sub-protocol.
        protocol: String,
        /// Ordered delivery.
        ordered: bool,
        /// Reliability.
        reliability: Reliability,
        /// Priority.
        priority: u16,
    },
    /// A message arrived.
    Message {
        /// The channel.
        id: ChannelId,
        /// Its bytes (empty for an empty message).
        data: Vec<u8>,
        /// Binary (PPID 53/57) rather than string (PPID 51/56).
        binary: bool,
    },
    /// The channel's buffered amount fell to or below its low threshold
    /// after being above it.
    BufferedAmountLow {
        /// The channel.
        id: ChannelId,
    },
    /// The channel is closed (its streams were reset, or the association
    /// ended).
    ChannelClosed {
        /// The channel.
        id: ChannelId,
    },
    /// The association ended; nothing more will come.
    Closed(CloseReason),
}

/// One output of [`SctpAssociation`](crate::SctpAssociation).
#[non_exhaustive]
#[derive(Debug)]
pub enum SctpOutput {
    /// An SCTP packet for the DTLS endpoint to encrypt and send.
    Transmit(Transmit),
    /// An event for the application.
    Event(ChannelEvent),
}

impl p2p_proto::Output for SctpOutput {
    fn into_transmit(self) -> Result<Transmit, Self> {
        match self {
            SctpOutput::Transmit(t) => Ok(t),
            other => Err(other),
        }
    }
}

/// Why a channel command was refused.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ChannelError {
    /// No channel has this id.
    #[error("no {0}")]
    UnknownChannel(ChannelId),
    /// The channel is closing or closed.
    #[error("{0} is closed")]
    ChannelClosed(ChannelId),
    /// The association is closed (or closing).
    #[error("the association is closed")]
    AssociationClosed,
    /// The message is larger than the peer's max-message-size (RFC 8841).
    #[error("a {len}-byte message is over the peer's max-message-size {max}")]
    MessageTooLarge {
        /// The message's length.
        len: usize,
        /// The peer's limit.
        max: u32,
    },
    /// A pre-negotiated channel asked for a stream id in use.
    #[error("stream id {0} is in use")]
    StreamIdInUse(u16),
    /// A pre-negotiated channel asked for stream id 65535 (reserved).
    #[error("stream id 65535 is reserved")]
    ReservedStreamId,
    /// Every stream id of our parity is in use.
    #[error("no free stream id")]
    NoStreamId,
    /// The label or protocol is longer than DCEP carries (65535 bytes).
    #[error("label or protocol longer than 65535 bytes")]
    LabelTooLong,
    /// The SCTP library refused the write (the stream is being reset).
    #[error("the SCTP stream refused the write")]
    Refused,
}
