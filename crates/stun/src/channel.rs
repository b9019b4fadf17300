//! TURN ChannelData framing (RFC 8656 §12.4), demultiplexing of one socket's
//! traffic (RFC 7983), and framing of STUN and ChannelData on stream
//! transports (RFC 8489 §6.2.2, RFC 8656 §12.5).

use crate::builder::EncodeBuf;
use crate::error::EncodeError;
use crate::header::HEADER_LEN;

/// The range of channel numbers a client may bind (RFC 8656 §12). Clients
/// should pick from this range.
pub const CHANNEL_RANGE: std::ops::RangeInclusive<u16> = 0x4000..=0x4FFF;

/// The channel numbers accepted in ChannelData and CHANNEL-NUMBER: the whole
/// range of RFC 5766 §11. RFC 8656 §12 narrowed the bindable range to
/// [`CHANNEL_RANGE`] and reserved 0x5000..=0x7FFF, but deployed clients
/// (coturn's `turnutils_uclient`, older stacks) still bind numbers above
/// 0x4FFF, so decoders and servers accept them for compatibility. Their
/// first byte is 64..=127, which [`classify`] reports as ChannelData.
pub const CHANNEL_DATA_RANGE: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;

/// What a ChannelData frame failed on.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelDataError {
    /// Fewer than the 4 header bytes.
    #[error("{len} bytes is shorter than the 4-byte ChannelData header")]
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// A channel number outside 0x4000..=0x7FFF ([`CHANNEL_DATA_RANGE`]).
    #[error("channel number 0x{0:04x} is outside 0x4000..=0x7FFF")]
    BadChannel(u16),
    /// The length field claims more data than the datagram holds.
    #[error("ChannelData declares {declared} bytes, {available} follow")]
    Truncated {
        /// The length field.
        declared: u16,
        /// The bytes after the header.
        available: usize,
    },
}

/// A decoded ChannelData message, borrowing its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    channel: u16,
    data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Decode a ChannelData message. Over UDP the padding is optional, so bytes
    /// after `data` (up to the padded length) are accepted and ignored.
    pub fn decode(buf: &'a [u8]) -> Result<Self, ChannelDataError> {
        let Some((head, rest)) = buf.split_at_checked(4) else {
            return Err(ChannelDataError::TooShort { len: buf.len() });
        };
        let channel = u16::from_be_bytes([head[0], head[1]]);
        if !CHANNEL_DATA_RANGE.contains(&channel) {
            return Err(ChannelDataError::BadChannel(channel));
        }
        let declared = u16::from_be_bytes([head[2], head[3]]);
        let data = rest
            .get(..usize::from(declared))
            .ok_or(ChannelDataError::Truncated {
                declared,
                available: rest.len(),
            })?;
        Ok(ChannelData { channel, data })
    }

    /// A frame to encode; `channel` in [`CHANNEL_DATA_RANGE`].
    pub fn new(channel: u16, data: &'a [u8]) -> Result<Self, ChannelDataError> {
        if !CHANNEL_DATA_RANGE.contains(&channel) {
            return Err(ChannelDataError::BadChannel(channel));
        }
        if data.len() > usize::from(u16::MAX) {
            return Err(ChannelDataError::Truncated {
                declared: u16::MAX,
                available: data.len(),
            });
        }
        Ok(ChannelData { channel, data })
    }

    /// The channel number.
    pub fn channel(&self) -> u16 {
        self.channel
    }

    /// The application data.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The encoded length: 4 + data, padded to 4 when `padded` (streams must pad).
    pub fn encoded_len(&self, padded: bool) -> usize {
        let n = 4 + self.data.len();
        if padded {
            n.next_multiple_of(4)
        } else {
            n
        }
    }

    /// Append the frame to `out`. Pass `padded = true` on TCP/TLS (RFC 8656 §12.5).
    pub fn encode<B: EncodeBuf>(&self, out: &mut B, padded: bool) -> Result<usize, EncodeError> {
        let at = out.written();
        let n = self.encoded_len(padded);
        let w = out.grow(n)?;
        w[at..at + 2].copy_from_slice(&self.channel.to_be_bytes());
        w[at + 2..at + 4].copy_from_slice(&(self.data.len() as u16).to_be_bytes());
        w[at + 4..at + 4 + self.data.len()].copy_from_slice(self.data);
        Ok(n)
    }
}

/// What a datagram on a multiplexed socket is, by its first byte (RFC 7983 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// 0..=3: STUN.
    Stun,
    /// 16..=19: ZRTP.
    Zrtp,
    /// 20..=63: DTLS.
    Dtls,
    /// 64..=79: TURN ChannelData (RFC 7983); also 80..=127, the rest of
    /// RFC 5766's channel range 0x4000..=0x7FFF, which RFC 7983 leaves
    /// unassigned (see [`CHANNEL_DATA_RANGE`]).
    ChannelData,
    /// 128..=191: RTP or RTCP.
    Rtp,
    /// Anything else (including an empty datagram): drop it.
    Unknown,
}

/// Classify a datagram on a socket that carries STUN, ChannelData, DTLS and
/// RTP. First bytes 80..=127 (unassigned in RFC 7983) count as ChannelData,
/// for the legacy channel numbers 0x5000..=0x7FFF.
pub fn classify(buf: &[u8]) -> PacketKind {
    match buf.first() {
        Some(0..=3) => PacketKind::Stun,
        Some(16..=19) => PacketKind::Zrtp,
        Some(20..=63) => PacketKind::Dtls,
        Some(64..=127) => PacketKind::ChannelData,
        Some(128..=191) => PacketKind::Rtp,
        _ => PacketKind::Unknown,
    }
}

/// Why a byte stream cannot be split into STUN/ChannelData frames.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The next frame starts with a byte that is neither STUN nor ChannelData:
    /// the stream is out of sync and must be closed.
    #[error("stream byte 0x{0:02x} starts neither a STUN message nor ChannelData")]
    Garbage(u8),
    /// A STUN header whose length is not a multiple of four.
    #[error("STUN length {0} is not a multiple of 4")]
    Unaligned(u16),
    /// A frame longer than the reader allows.
    #[error("a frame of {0} bytes is larger than allowed")]
    TooLarge(usize),
}

/// The length of the next frame at the head of a stream buffer, or `Ok(None)`
/// when more bytes are needed to tell. STUN messages are self-delimiting;
/// ChannelData frames on streams are padded to a multiple of four.
pub fn next_frame_len(buf: &[u8]) -> Result<Option<usize>, FramingError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let kind = classify(buf);
    if buf.len() < 4 {
        return match kind {
            PacketKind::Stun | PacketKind::ChannelData => Ok(None),
            _ => Err(FramingError::Garbage(first)),
        };
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]);
    match kind {
        PacketKind::Stun if len % 4 != 0 => Err(FramingError::Unaligned(len)),
        PacketKind::Stun => Ok(Some(HEADER_LEN + usize::from(len))),
        PacketKind::ChannelData => Ok(Some((4 + usize::from(len)).next_multiple_of(4))),
        _ => Err(FramingError::Garbage(first)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_round_trip_padded_and_not() {
        let cd = ChannelData::new(0x4001, b"hello").unwrap();
        let mut v = Vec::new();
        assert_eq!(cd.encode(&mut v, false).unwrap(), 9);
        assert_eq!(v, [0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(ChannelData::decode(&v).unwrap(), cd);
        let mut p = Vec::new();
        assert_eq!(cd.encode(&mut p, true).unwrap(), 12);
        assert_eq!(ChannelData::decode(&p).unwrap(), cd);
        assert_eq!(next_frame_len(&p).unwrap(), Some(12));
    }

    #[test]
    fn channel_data_errors() {
        assert_eq!(
            ChannelData::decode(&[0x40]),
            Err(ChannelDataError::TooShort { len: 1 })
        );
        assert_eq!(
            ChannelData::decode(&[0x80, 0, 0, 0]),
            Err(ChannelDataError::BadChannel(0x8000))
        );
        assert_eq!(
            ChannelData::decode(&[0x40, 0, 0, 8, 1, 2]),
            Err(ChannelDataError::Truncated {
                declared: 8,
                available: 2
            })
        );
        assert!(ChannelData::new(0x3FFF, b"").is_err());
        assert!(ChannelData::new(0x8000, b"").is_err());
    }

    #[test]
    fn legacy_rfc5766_channel_numbers_are_accepted() {
        // coturn's turnutils_uclient binds numbers above 0x4FFF.
        for n in [0x5000u16, 0x6abc, 0x7FFF] {
            let cd = ChannelData::new(n, b"legacy").unwrap();
            let mut v = Vec::new();
            cd.encode(&mut v, true).unwrap();
            assert_eq!(classify(&v), PacketKind::ChannelData, "0x{n:04x}");
            assert_eq!(next_frame_len(&v).unwrap(), Some(12));
            assert_eq!(ChannelData::decode(&v).unwrap(), cd);
        }
        assert!(
            !CHANNEL_RANGE.contains(&0x5000),
            "clients still pick 0x4000..=0x4FFF"
        );
    }

    #[test]
    fn rfc7983_demultiplexing() {
        let cases: &[(&[u8], PacketKind)] = &[
            (&[0x00, 0x01], PacketKind::Stun),
            (&[0x03], PacketKind::Stun),
            (&[16], PacketKind::Zrtp),
            (&[22, 0xfe, 0xfd], PacketKind::Dtls),
            (&[0x40, 0x00], PacketKind::ChannelData),
            (&[0x4F], PacketKind::ChannelData),
            (&[0x80, 0xc8], PacketKind::Rtp),
            (&[0x50], PacketKind::ChannelData),
            (&[0x7F], PacketKind::ChannelData),
            (&[0x7F + 1], PacketKind::Rtp),
            (&[0x04], PacketKind::Unknown),
            (&[], PacketKind::Unknown),
        ];
        for (buf, want) in cases {
            assert_eq!(classify(buf), *want, "{buf:?}");
        }
    }

    #[test]
    fn stream_framing() {
        assert_eq!(next_frame_len(&[]), Ok(None));
        assert_eq!(next_frame_len(&[0x00, 0x01]), Ok(None));
        assert_eq!(next_frame_len(&[0x00, 0x01, 0x00, 0x08]), Ok(Some(28)));
        assert_eq!(
            next_frame_len(&[0x00, 0x01, 0x00, 0x07]),
            Err(FramingError::Unaligned(7))
        );
        assert_eq!(next_frame_len(&[0x40, 0x00, 0x00, 0x05]), Ok(Some(12)));
        assert_eq!(
            next_frame_len(&[0x80, 0, 0, 0]),
            Err(FramingError::Garbage(0x80))
        );
        assert_eq!(next_frame_len(&[0x16]), Err(FramingError::Garbage(0x16)));
    }
}
