//! The encoder: a builder that writes a message into the caller's buffer.

use bytes::BytesMut;

use crate::attr::Attribute;
use crate::error::EncodeError;
use crate::header::{AttrType, MessageType, TransactionId, HEADER_LEN, MAGIC_COOKIE};
use crate::integrity::{fingerprint, hmac_sha1, hmac_sha256, Key};

/// A buffer a message can be written into: it grows at the end and its
/// written bytes can be patched (the header length, the MACs).
///
/// Implemented for `Vec<u8>`, `BytesMut` and [`SliceBuf`] (a fixed `&mut [u8]`).
/// Writing never allocates when the buffer already has the capacity.
pub trait EncodeBuf {
    /// Bytes written so far.
    fn written(&self) -> usize;
    /// Append `n` zero bytes and return the whole written region.
    fn grow(&mut self, n: usize) -> Result<&mut [u8], EncodeError>;
    /// The whole written region.
    fn written_mut(&mut self) -> &mut [u8];
}

impl EncodeBuf for Vec<u8> {
    fn written(&self) -> usize {
        self.len()
    }
    fn grow(&mut self, n: usize) -> Result<&mut [u8], EncodeError> {
        self.resize(self.len() + n, 0);
        Ok(self)
    }
    fn written_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl EncodeBuf for BytesMut {
    fn written(&self) -> usize {
        self.len()
    }
    fn grow(&mut self, n: usize) -> Result<&mut [u8], EncodeError> {
        self.resize(self.len() + n, 0);
        Ok(self)
    }
    fn written_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl<T: EncodeBuf + ?Sized> EncodeBuf for &mut T {
    fn written(&self) -> usize {
        (**self).written()
    }
    fn grow(&mut self, n: usize) -> Result<&mut [u8], EncodeError> {
        (**self).grow(n)
    }
    fn written_mut(&mut self) -> &mut [u8] {
        (**self).written_mut()
    }
}

/// A fixed slice written from its start, for encoding without any allocator
/// (e.g. straight into a `recvmmsg`/`sendmmsg` buffer).
#[derive(Debug)]
pub struct SliceBuf<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> SliceBuf<'a> {
    /// Write into `buf` from its start.
    pub fn new(buf: &'a mut [u8]) -> Self {
        SliceBuf { buf, len: 0 }
    }
    /// Bytes written.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The written bytes.
    pub fn into_written(self) -> &'a mut [u8] {
        &mut self.buf[..self.len]
    }
}

impl EncodeBuf for SliceBuf<'_> {
    fn written(&self) -> usize {
        self.len
    }
    fn grow(&mut self, n: usize) -> Result<&mut [u8], EncodeError> {
        let new = self.len + n;
        if new > self.buf.len() {
            return Err(EncodeError::BufferTooSmall {
                needed: new - self.buf.len(),
            });
        }
        self.buf[self.len..new].fill(0);
        self.len = new;
        Ok(&mut self.buf[..new])
    }
    fn written_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Attributes,
    AfterIntegrity,
    AfterIntegritySha256,
    AfterFingerprint,
}

/// Writes one message into an [`EncodeBuf`].
///
/// The header is written first and its length kept current after every
/// attribute, so MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT
/// are each one hash over the bytes already in the buffer: no attribute is
/// serialised twice. The order rules of RFC 8489 §14.5–14.7 are enforced.
///
/// ```
/// use p2p_stun::{MessageBuilder, MessageType, Method, MessageClass, TransactionId, Message};
/// use p2p_stun::attr::{XorMappedAddress, Software};
///
/// let tid = TransactionId::new([7; 12]);
/// let mut buf = Vec::with_capacity(128);
/// let mut b = MessageBuilder::new(&mut buf, MessageType::new(Method::BINDING, MessageClass::Success), tid)?;
/// b.add(&XorMappedAddress("192.0.2.1:32853".parse().unwrap()))?;
/// b.add(&Software::new("p2p").unwrap())?;
/// b.add_fingerprint()?;
/// let len = b.finish();
///
/// let msg = Message::decode(&buf[..len])?;
/// assert_eq!(msg.get::<XorMappedAddress>()?.unwrap().0.port(), 32853);
/// msg.verify_fingerprint()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct MessageBuilder<B: EncodeBuf> {
    buf: B,
    start: usize,
    tid: TransactionId,
    stage: Stage,
}

impl<B: EncodeBuf> MessageBuilder<B> {
    /// Start a message: writes the 20-byte header at the end of `buf`.
    pub fn new(mut buf: B, typ: MessageType, tid: TransactionId) -> Result<Self, EncodeError> {
        let start = buf.written();
        let w = buf.grow(HEADER_LEN)?;
        let h = &mut w[start..];
        h[0..2].copy_from_slice(&typ.to_u16().to_be_bytes());
        h[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        h[8..20].copy_from_slice(tid.as_bytes());
        Ok(MessageBuilder {
            buf,
            start,
            tid,
            stage: Stage::Attributes,
        })
    }

    /// The transaction id being written.
    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    /// Append a typed attribute.
    pub fn add<'a, A: Attribute<'a>>(&mut self, attr: &A) -> Result<&mut Self, EncodeError> {
        let tid = self.tid;
        let value = self.reserve(A::TYPE, attr.value_len())?;
        attr.encode_value(&tid, value);
        Ok(self)
    }

    /// Append an attribute from raw value bytes (e.g. a type this crate does not know).
    pub fn add_raw(&mut self, typ: AttrType, value: &[u8]) -> Result<&mut Self, EncodeError> {
        self.reserve(typ, value.len())?.copy_from_slice(value);
        Ok(self)
    }

    /// Write the attribute header and padding; return the value region.
    fn reserve(&mut self, typ: AttrType, len: usize) -> Result<&mut [u8], EncodeError> {
        let allowed = match typ {
            AttrType::MESSAGE_INTEGRITY => self.stage < Stage::AfterIntegrity,
            AttrType::MESSAGE_INTEGRITY_SHA256 => self.stage < Stage::AfterIntegritySha256,
            AttrType::FINGERPRINT => self.stage < Stage::AfterFingerprint,
            _ => self.stage == Stage::Attributes,
        };
        if !allowed {
            return Err(EncodeError::OutOfOrder(typ));
        }
        let len16 = u16::try_from(len).map_err(|_| EncodeError::TooLarge)?;
        let padded = len.next_multiple_of(4);
        let at = self.buf.written();
        let msg_len = at - self.start - HEADER_LEN + 4 + padded;
        let msg_len = u16::try_from(msg_len).map_err(|_| EncodeError::TooLarge)?;
        let w = self.buf.grow(4 + padded)?;
        match typ {
            AttrType::MESSAGE_INTEGRITY => self.stage = Stage::AfterIntegrity,
            AttrType::MESSAGE_INTEGRITY_SHA256 => self.stage = Stage::AfterIntegritySha256,
            AttrType::FINGERPRINT => self.stage = Stage::AfterFingerprint,
            _ => {}
        }
        w[self.start + 2..self.start + 4].copy_from_slice(&msg_len.to_be_bytes());
        w[at..at + 2].copy_from_slice(&typ.0.to_be_bytes());
        w[at + 2..at + 4].copy_from_slice(&len16.to_be_bytes());
        Ok(&mut w[at + 4..at + 4 + len])
    }

    /// Append MESSAGE-INTEGRITY: HMAC-SHA1 with `key` over the message so far
    /// (RFC 8489 §14.5). Only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT may follow.
    pub fn add_message_integrity(&mut self, key: &Key) -> Result<&mut Self, EncodeError> {
        let start = self.start;
        let at = self.buf.written();
        self.reserve(AttrType::MESSAGE_INTEGRITY, 20)?;
        let w = self.buf.written_mut();
        let mac = hmac_sha1(key, &[&w[start..at]]);
        w[at + 4..at + 24].copy_from_slice(&mac);
        Ok(self)
    }

    /// Append MESSAGE-INTEGRITY-SHA256: HMAC-SHA256 with `key` over the message so
    /// far (RFC 8489 §14.6). Only FINGERPRINT may follow.
    pub fn add_message_integrity_sha256(&mut self, key: &Key) -> Result<&mut Self, EncodeError> {
        let start = self.start;
        let at = self.buf.written();
        self.reserve(AttrType::MESSAGE_INTEGRITY_SHA256, 32)?;
        let w = self.buf.written_mut();
        let mac = hmac_sha256(key, &[&w[start..at]]);
        w[at + 4..at + 36].copy_from_slice(&mac);
        Ok(self)
    }

    /// Append FINGERPRINT (RFC 8489 §14.7). Nothing may follow.
    pub fn add_fingerprint(&mut self) -> Result<&mut Self, EncodeError> {
        let start = self.start;
        let at = self.buf.written();
        self.reserve(AttrType::FINGERPRINT, 4)?;
        let w = self.buf.written_mut();
        let crc = fingerprint(&[&w[start..at]]);
        w[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
        Ok(self)
    }

    /// The bytes of this message written so far, header included. Bytes
    /// changed here are what a later MESSAGE-INTEGRITY or FINGERPRINT covers
    /// (e.g. non-zero padding, as in the RFC 5769 vectors).
    pub fn written_mut(&mut self) -> &mut [u8] {
        let start = self.start;
        &mut self.buf.written_mut()[start..]
    }

    /// The message length so far, header included.
    pub fn len(&self) -> usize {
        self.buf.written() - self.start
    }

    /// Always false: a message has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Finish; returns the message's length in bytes (it starts where the
    /// buffer's written region ended when the builder was made).
    pub fn finish(self) -> usize {
        self.len()
    }

    /// Finish and give the buffer back.
    pub fn into_inner(self) -> B {
        self.buf
    }
}
