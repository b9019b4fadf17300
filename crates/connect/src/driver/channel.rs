//! Data channels as the application holds them: [`Channel`], with
//! back-pressure on send and the reason on every end.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use p2p_datachannel::{ChannelId, Reliability};
use tokio::sync::{mpsc, oneshot};

use super::Command;
use crate::CloseReason;

/// A buffered amount above this makes [`Channel::send`] wait until the
/// peer acknowledged enough that it falls to [`LOW_WATER`].
pub const HIGH_WATER: usize = 1024 * 1024;

/// The buffered amount at which a waiting [`Channel::send`] goes on.
pub const LOW_WATER: usize = 256 * 1024;

/// One message of a data channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its bytes (empty for an empty message).
    pub data: Bytes,
    /// A binary message (a string one otherwise: `data` is then UTF-8 as
    /// the peer sent it).
    pub binary: bool,
}

impl Message {
    /// The text of a string message (lossy for invalid UTF-8).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.data)
    }
}

/// Why a channel gives no more messages or takes none.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelClosed {
    /// The channel was closed (by either side); the connection may go on.
    #[error("the channel is closed")]
    Channel,
    /// The whole connection ended.
    #[error("{0}")]
    Connection(CloseReason),
}

/// Why [`Channel::send`] failed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The message is larger than the peer accepts (its
    /// `a=max-message-size`, RFC 8841).
    #[error("a {len}-byte message is over the peer's max-message-size {max}")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The peer's limit.
        max: u32,
    },
    /// The channel or the connection is closed.
    #[error(transparent)]
    Closed(#[from] ChannelClosed),
}

/// What the driver keeps of a channel it handed out.
#[derive(Debug)]
pub(super) struct ChannelSlot {
    /// Bounded in bytes by the session's receive queue limit: the driver
    /// releases what `recv` took, and the channel reads no more from SCTP
    /// while the limit is reached.
    pub(super) messages: mpsc::UnboundedSender<Message>,
    /// Bytes `recv` took since the driver last released them.
    pub(super) taken: Arc<AtomicUsize>,
    pub(super) closed: Arc<AtomicBool>,
    /// Sends that wait for the buffered amount to fall.
    pub(super) waiting: Vec<oneshot::Sender<Result<(), SendError>>>,
}

/// Both halves of a new channel: the application's handle and the
/// driver's slot.
pub(super) fn pair(
    info: ChannelInfo,
    commands: mpsc::Sender<Command>,
    released: mpsc::UnboundedSender<ChannelId>,
    receive_queue_limit: Option<usize>,
    reason: Arc<OnceLock<CloseReason>>,
) -> (Channel, ChannelSlot) {
    let (tx, rx) = mpsc::unbounded_channel();
    let closed = Arc::new(AtomicBool::new(false));
    let taken = Arc::new(AtomicUsize::new(0));
    let channel = Channel {
        info,
        commands,
        messages: tokio::sync::Mutex::new(rx),
        taken: taken.clone(),
        // A quarter of the limit: a paused channel (at the limit) reads on
        // at half of it, so the driver hears of every half the
        // application takes. No limit: nothing to release.
        release_every: receive_queue_limit.map_or(usize::MAX, |l| (l / 4).max(1)),
        released,
        closed: closed.clone(),
        reason,
    };
    let slot = ChannelSlot {
        messages: tx,
        taken,
        closed,
        waiting: Vec::new(),
    };
    (channel, slot)
}

/// What a channel is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Its SCTP stream id.
    pub id: ChannelId,
    /// Its label.
    pub label: String,
    /// Its sub-protocol.
    pub protocol: String,
    /// Ordered delivery.
    pub ordered: bool,
    /// Reliable, or limited retransmissions or lifetime.
    pub reliability: Reliability,
}

/// A data channel of a [`Connection`](super::Connection): messages both
/// ways, whole, in order (unless opened unordered), reliably (unless opened
/// with limited retransmissions or lifetime), encrypted.
///
/// Received messages wait in memory until [`recv`](Channel::recv) takes
/// them, up to the connection's
/// [`receive_queue_limit`](super::PeerConfig::receive_queue_limit) (1 MiB
/// by default, plus one message): beyond it the channel stops reading, the
/// SCTP receive window closes, and the peer's `send` waits until `recv`
/// catches up. [`send`](Channel::send) returns once the message is queued; it
/// waits first while more than [`HIGH_WATER`] bytes sent on this channel
/// are not yet acknowledged by the peer, until that falls to
/// [`LOW_WATER`]: a sender faster than the path is slowed to its pace.
pub struct Channel {
    info: ChannelInfo,
    commands: mpsc::Sender<Command>,
    messages: tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>,
    /// Bytes taken by `recv` and not yet released to the driver.
    taken: Arc<AtomicUsize>,
    /// `taken` reaching this wakes the driver to release them.
    release_every: usize,
    /// Wakes the driver to release `taken`.
    released: mpsc::UnboundedSender<ChannelId>,
    closed: Arc<AtomicBool>,
    reason: Arc<OnceLock<CloseReason>>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("info", &self.info)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// Its id, label, protocol and delivery.
    pub fn info(&self) -> &ChannelInfo {
        &self.info
    }

    /// Its label.
    pub fn label(&self) -> &str {
        &self.info.label
    }

    /// Why it ended.
    fn ended(&self) -> ChannelClosed {
        match self.reason.get() {
            Some(r) => ChannelClosed::Connection(r.clone()),
            None if self.closed.load(Ordering::Relaxed) => ChannelClosed::Channel,
            None => ChannelClosed::Connection(CloseReason::Local),
        }
    }

    /// Send a binary message (the bytes are handed on, not copied).
    pub async fn send(&self, data: impl Into<Bytes>) -> Result<(), SendError> {
        self.send_message(data.into(), true).await
    }

    /// Send a string message.
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), SendError> {
        self.send_message(Bytes::from(text.into()), false).await
    }

    async fn send_message(&self, data: Bytes, binary: bool) -> Result<(), SendError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(SendError::Closed(self.ended()));
        }
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Send {
            id: self.info.id,
            data,
            binary,
            done: tx,
        };
        self.commands
            .send(cmd)
            .await
            .map_err(|_| SendError::Closed(self.ended()))?;
        rx.await.map_err(|_| SendError::Closed(self.ended()))?
    }

    /// The next message; once the channel or the connection ended and
    /// every message was read, why.
    pub async fn recv(&self) -> Result<Message, ChannelClosed> {
        match self.messages.lock().await.recv().await {
            Some(m) => {
                // The driver releases the bytes to the session (which reads
                // on when a paused channel fell to half its limit), woken
                // once per quarter of the limit taken, not per message.
                let len = m.data.len();
                let before = self.taken.fetch_add(len, Ordering::AcqRel);
                if before < self.release_every && before + len >= self.release_every {
                    let _ = self.released.send(self.info.id);
                }
                Ok(m)
            }
            None => Err(self.ended()),
        }
    }

    /// Close the channel (its streams are reset: the peer sees it closed).
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::Relaxed) {
            return;
        }
        let _ = self
            .commands
            .send(Command::CloseChannel(self.info.id))
            .await;
    }
}
