//! The zero-copy decoding view of a message.

use std::num::NonZeroU32;

use subtle::ConstantTimeEq;

use crate::attr::Attribute;
use crate::error::{DecodeError, IntegrityError};
use crate::header::{AttrType, MessageType, TransactionId, HEADER_LEN, MAGIC_COOKIE};
use crate::integrity::{fingerprint, hmac_sha1, hmac_sha256, Key};

/// One attribute as it sits in the message: its type and its value bytes
/// (without padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    /// The type.
    pub typ: AttrType,
    /// The value, borrowed from the datagram.
    pub value: &'a [u8],
}

/// A decoded STUN message borrowing its datagram.
///
/// [`Message::decode`] checks the header and walks the attribute headers once
/// (no attribute value is parsed, nothing is copied or allocated). Typed
/// attributes are parsed on demand by [`Message::get`]. Per RFC 8489 §14.5,
/// attributes after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and
/// FINGERPRINT (and after MESSAGE-INTEGRITY-SHA256 other than FINGERPRINT) are
/// ignored: [`Message::attributes`] does not show them.
#[derive(Clone, Copy)]
pub struct Message<'a> {
    buf: &'a [u8],
    typ: MessageType,
    tid: TransactionId,
    legacy: bool,
    /// How many entries of `index` are filled.
    indexed: u8,
    /// Whether the protected region has more attributes than `index` holds
    /// (then lookups past the index walk the rest of the message).
    overflow: bool,
    /// The first [`INDEX_CAP`] attributes before the integrity attributes,
    /// recorded by [`Message::decode`] so that [`Message::get`] scans a few
    /// words instead of walking the message again: `type << 16 | offset`.
    index: [u32; INDEX_CAP],
    /// Attributes at offsets below this are "before integrity" and all visible.
    /// Offsets are `u32` (a message is at most 20 + 65535 bytes) to keep the
    /// view small: it is returned and copied by value.
    protected_end: u32,
    integrity: Option<NonZeroU32>,
    integrity_sha256: Option<NonZeroU32>,
    fingerprint: Option<NonZeroU32>,
}

/// An attribute offset as stored (never 0: attributes start after the header).
fn stored(off: usize) -> Option<NonZeroU32> {
    NonZeroU32::new(off as u32)
}

fn offset(o: Option<NonZeroU32>) -> Option<usize> {
    o.map(|o| o.get() as usize)
}

/// How many attributes [`Message::decode`] indexes. An ICE check has four
/// before its integrity attributes, a TURN Allocate request about six;
/// larger messages still work, by walking past the indexed ones.
const INDEX_CAP: usize = 12;

impl<'a> std::fmt::Debug for Message<'a> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Message");
        d.field("type", &self.typ).field("tid", &self.tid);
        if self.legacy {
            d.field("rfc3489", &true);
        }
        d.field(
            "attributes",
            &self.attributes().map(|a| a.typ).collect::<Vec<_>>(),
        );
        d.finish()
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Whether `buf` starts like a STUN message with the RFC 8489 magic cookie
/// (a cheap test for demultiplexing; it does not validate the rest).
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN
        && buf[0] & 0xC0 == 0
        && buf[4..8] == MAGIC_COOKIE.to_be_bytes()
        && be16(buf, 2) % 4 == 0
}

/// The message type in the header at the head of `buf` (its first two
/// bytes, read as STUN), without decoding the message: for routing a packet
/// to the machine of its method, or for naming the request a malformed
/// message tried to be. `None` when `buf` is shorter than two bytes or its
/// first two bits are not zero (not STUN).
pub fn peek_type(buf: &[u8]) -> Option<MessageType> {
    match buf {
        [a, b, ..] if a & 0xC0 == 0 => Some(MessageType::from_u16(u16::from_be_bytes([*a, *b]))),
        _ => None,
    }
}

impl<'a> Message<'a> {
    /// Decode a whole datagram (or a whole framed message from a stream).
    #[inline]
    pub fn decode(buf: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::TooShort { len: buf.len() });
        }
        if buf[0] & 0xC0 != 0 {
            return Err(DecodeError::NotStun);
        }
        let declared = be16(buf, 2);
        if declared % 4 != 0 {
            return Err(DecodeError::UnalignedLength { declared });
        }
        let end = HEADER_LEN + usize::from(declared);
        if end != buf.len() {
            return Err(DecodeError::LengthMismatch {
                declared,
                available: buf.len() - HEADER_LEN,
            });
        }
        let typ = MessageType::from_u16(be16(buf, 0));
        let legacy = buf[4..8] != MAGIC_COOKIE.to_be_bytes();
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&buf[8..20]);

        let mut msg = Message {
            buf,
            typ,
            tid: TransactionId::new(tid),
            legacy,
            indexed: 0,
            overflow: false,
            index: [0; INDEX_CAP],
            protected_end: end as u32,
            integrity: None,
            integrity_sha256: None,
            fingerprint: None,
        };
        let mut off = HEADER_LEN;
        while off < end {
            let Some(head) = buf.get(off..off + 4) else {
                // Fewer than 4 bytes left cannot happen with a length that is a
                // multiple of 4, but stay total.
                return Err(DecodeError::AttributeOverflow {
                    attr: AttrType(0),
                    offset: off,
                    len: 0,
                });
            };
            let attr = AttrType(be16(head, 0));
            let len = be16(head, 2);
            let next = off + 4 + usize::from(len).next_multiple_of(4);
            if next > end {
                return Err(DecodeError::AttributeOverflow {
                    attr,
                    offset: off,
                    len,
                });
            }
            if msg.fingerprint.is_some() {
                return Err(DecodeError::FingerprintNotLast { attr });
            }
            match attr {
                AttrType::MESSAGE_INTEGRITY
                    if msg.integrity.is_none() && msg.integrity_sha256.is_none() =>
                {
                    msg.integrity = stored(off);
                    msg.protected_end = msg.protected_end.min(off as u32);
                }
                AttrType::MESSAGE_INTEGRITY_SHA256 if msg.integrity_sha256.is_none() => {
                    msg.integrity_sha256 = stored(off);
                    msg.protected_end = msg.protected_end.min(off as u32);
                }
                AttrType::FINGERPRINT => {
                    msg.fingerprint = stored(off);
                    msg.protected_end = msg.protected_end.min(off as u32);
                }
                // Visible attributes before the first integrity attribute:
                // index them. Offsets fit in 16 bits since a message is at
                // most 20 + 65535 bytes and `off` is below its end.
                _ if msg.protected_end as usize == end => {
                    if let Some(slot) = msg.index.get_mut(usize::from(msg.indexed)) {
                        *slot = u32::from(attr.0) << 16 | (off - HEADER_LEN) as u32;
                        msg.indexed += 1;
                    } else {
                        msg.overflow = true;
                    }
                }
                _ => {}
            }
            off = next;
        }
        Ok(msg)
    }

    /// The message type (class and method).
    #[inline]
    pub fn typ(&self) -> MessageType {
        self.typ
    }

    /// The transaction id.
    #[inline]
    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// True for an RFC 3489 message: no magic cookie. Such clients understand
    /// MAPPED-ADDRESS only (RFC 8489 §12).
    pub fn is_rfc3489(&self) -> bool {
        self.legacy
    }

    /// The attributes that count, in order: every attribute before the first
    /// integrity attribute, then MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256
    /// and FINGERPRINT where present. Ignored trailing attributes are skipped.
    pub fn attributes(&self) -> impl Iterator<Item = RawAttribute<'a>> + 'a {
        let buf = self.buf;
        let protected_end = self.protected_end as usize;
        let tail = [
            offset(self.integrity),
            offset(self.integrity_sha256),
            offset(self.fingerprint),
        ];
        let raw_at = move |off: usize| RawAttribute {
            typ: AttrType(be16(buf, off)),
            value: &buf[off + 4..off + 4 + usize::from(be16(buf, off + 2))],
        };
        let mut off = HEADER_LEN;
        std::iter::from_fn(move || {
            if off >= protected_end {
                return None;
            }
            let a = raw_at(off);
            off += 4 + a.value.len().next_multiple_of(4);
            Some(a)
        })
        .chain(tail.into_iter().flatten().map(raw_at))
    }

    /// The attribute whose header sits at `off` (an offset `decode` checked).
    #[inline]
    fn raw_at(&self, off: usize) -> RawAttribute<'a> {
        RawAttribute {
            typ: AttrType(be16(self.buf, off)),
            value: &self.buf[off + 4..off + 4 + usize::from(be16(self.buf, off + 2))],
        }
    }

    /// The first attribute of a type, raw.
    #[inline]
    pub fn get_raw(&self, typ: AttrType) -> Option<RawAttribute<'a>> {
        // The integrity attributes are never in the protected region: the
        // first of each ends it.
        match typ {
            AttrType::MESSAGE_INTEGRITY => return offset(self.integrity).map(|o| self.raw_at(o)),
            AttrType::MESSAGE_INTEGRITY_SHA256 => {
                return offset(self.integrity_sha256).map(|o| self.raw_at(o))
            }
            AttrType::FINGERPRINT => return offset(self.fingerprint).map(|o| self.raw_at(o)),
            _ => {}
        }
        let indexed = &self.index[..usize::from(self.indexed)];
        if let Some(e) = indexed.iter().find(|e| (**e >> 16) as u16 == typ.0) {
            return Some(self.raw_at(HEADER_LEN + (e & 0xFFFF) as usize));
        }
        if !self.overflow {
            return None;
        }
        // Past the index: walk from the last indexed attribute onwards.
        let last = indexed
            .last()
            .map_or(HEADER_LEN, |e| HEADER_LEN + (e & 0xFFFF) as usize);
        let mut off = last + 4 + usize::from(be16(self.buf, last + 2)).next_multiple_of(4);
        while off < self.protected_end as usize {
            let a = self.raw_at(off);
            if a.typ == typ {
                return Some(a);
            }
            off += 4 + a.value.len().next_multiple_of(4);
        }
        None
    }

    /// The first attribute of type `A`, decoded; `Ok(None)` when absent.
    #[inline]
    pub fn get<A: Attribute<'a>>(&self) -> Result<Option<A>, DecodeError> {
        match self.get_raw(A::TYPE) {
            None => Ok(None),
            Some(raw) => {
                A::decode(raw.value, &self.tid)
                    .map(Some)
                    .map_err(|reason| DecodeError::Attribute {
                        attr: A::TYPE,
                        reason,
                    })
            }
        }
    }

    /// Whether an attribute of this type is present.
    #[inline]
    pub fn has(&self, typ: AttrType) -> bool {
        self.get_raw(typ).is_some()
    }

    /// Comprehension-required attribute types (below 0x8000) that `known`
    /// rejects: the list a 420 response must carry (RFC 8489 §6.3.1).
    pub fn unknown_comprehension_required(
        &self,
        known: impl Fn(AttrType) -> bool + 'a,
    ) -> impl Iterator<Item = AttrType> + 'a {
        self.attributes()
            .map(|a| a.typ)
            .filter(move |t| t.is_comprehension_required() && !known(*t))
    }

    /// Whether the message has MESSAGE-INTEGRITY.
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    /// Whether the message has MESSAGE-INTEGRITY-SHA256.
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256.is_some()
    }

    /// Whether the message has FINGERPRINT.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// The header with its length field set to cover up to `upto` (an offset).
    fn header_with_len(&self, upto: usize) -> [u8; 4] {
        let len = (upto - HEADER_LEN) as u16;
        let l = len.to_be_bytes();
        [self.buf[0], self.buf[1], l[0], l[1]]
    }

    /// Check MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5) with `key`, in
    /// constant time.
    #[inline]
    pub fn verify_integrity(&self, key: &Key) -> Result<(), IntegrityError> {
        let at = AttrType::MESSAGE_INTEGRITY;
        let off = offset(self.integrity).ok_or(IntegrityError::Missing(at))?;
        let len = usize::from(be16(self.buf, off + 2));
        if len != 20 {
            return Err(IntegrityError::BadLength { attr: at, len });
        }
        let head = self.header_with_len(off + 24);
        let mac = hmac_sha1(key, &[&head, &self.buf[4..off]]);
        let got = &self.buf[off + 4..off + 24];
        if bool::from(mac.ct_eq(got)) {
            Ok(())
        } else {
            Err(IntegrityError::Mismatch(at))
        }
    }

    /// Check MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6, possibly truncated to
    /// 16..=32 bytes) with `key`, in constant time.
    pub fn verify_integrity_sha256(&self, key: &Key) -> Result<(), IntegrityError> {
        let at = AttrType::MESSAGE_INTEGRITY_SHA256;
        let off = offset(self.integrity_sha256).ok_or(IntegrityError::Missing(at))?;
        let len = usize::from(be16(self.buf, off + 2));
        if !(16..=32).contains(&len) || len % 4 != 0 {
            return Err(IntegrityError::BadLength { attr: at, len });
        }
        let head = self.header_with_len(off + 4 + len);
        let mac = hmac_sha256(key, &[&head, &self.buf[4..off]]);
        let got = &self.buf[off + 4..off + 4 + len];
        if bool::from(mac[..len].ct_eq(got)) {
            Ok(())
        } else {
            Err(IntegrityError::Mismatch(at))
        }
    }

    /// Check whichever integrity the message carries, preferring
    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §9.2.4).
    pub fn verify_any_integrity(&self, key: &Key) -> Result<(), IntegrityError> {
        if self.integrity_sha256.is_some() {
            self.verify_integrity_sha256(key)
        } else {
            self.verify_integrity(key)
        }
    }

    /// Check FINGERPRINT (RFC 8489 §14.7).
    #[inline]
    pub fn verify_fingerprint(&self) -> Result<(), IntegrityError> {
        let at = AttrType::FINGERPRINT;
        let off = offset(self.fingerprint).ok_or(IntegrityError::Missing(at))?;
        let len = usize::from(be16(self.buf, off + 2));
        if len != 4 {
            return Err(IntegrityError::BadLength { attr: at, len });
        }
        let want = fingerprint(&[&self.buf[..off]]);
        let got = u32::from_be_bytes([
            self.buf[off + 4],
            self.buf[off + 5],
            self.buf[off + 6],
            self.buf[off + 7],
        ]);
        if want == got {
            Ok(())
        } else {
            Err(IntegrityError::Mismatch(at))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MessageClass, Method};

    #[test]
    fn peek_type_reads_the_header_only() {
        let binding = MessageType::new(Method::BINDING, MessageClass::Request);
        let b = binding.to_u16().to_be_bytes();
        assert_eq!(peek_type(&b), Some(binding));
        assert_eq!(peek_type(&[b[0]]), None);
        assert_eq!(
            peek_type(&[0x40, 0x01, 0, 0]),
            None,
            "ChannelData is not STUN"
        );
    }
}
