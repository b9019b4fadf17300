//! The Data Channel Establishment Protocol (RFC 8832 §5): the two messages
//! a peer sends on a new stream to open a channel and to acknowledge it.
//!
//! Both travel as SCTP user messages with PPID 50 (WebRTC DCEP), ordered and
//! reliable. [`DcepMessage::decode`] reads one and never panics;
//! [`DcepMessage::encode`] writes it back (byte for byte, but for the
//! Reliability Parameter of a reliable channel, which §5.1 says is ignored
//! and is written as 0).

use thiserror::Error;

/// Message type of DATA_CHANNEL_OPEN (RFC 8832 §8.2.1).
pub const DATA_CHANNEL_OPEN: u8 = 0x03;
/// Message type of DATA_CHANNEL_ACK (RFC 8832 §8.2.1).
pub const DATA_CHANNEL_ACK: u8 = 0x02;

/// The fixed part of DATA_CHANNEL_OPEN before the label (RFC 8832 §5.1).
const OPEN_HEADER_LEN: usize = 12;

/// How a channel delivers: the Channel Type byte of DATA_CHANNEL_OPEN
/// without its unordered bit (RFC 8832 §5.1), with the Reliability
/// Parameter it qualifies.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Reliability {
    /// Every message arrives (DATA_CHANNEL_RELIABLE, 0x00).
    #[default]
    Reliable,
    /// A message is retransmitted at most this many times, then abandoned
    /// (DATA_CHANNEL_PARTIAL_RELIABLE_REXMIT, 0x01; W3C `maxRetransmits`).
    MaxRetransmits(u32),
    /// A message is abandoned once this many milliseconds passed since it
    /// was first sent (DATA_CHANNEL_PARTIAL_RELIABLE_TIMED, 0x02; W3C
    /// `maxPacketLifeTime`).
    MaxPacketLifetime(u32),
}

impl Reliability {
    /// The Channel Type byte (with `0x80` when unordered) and the
    /// Reliability Parameter.
    pub fn wire(self, ordered: bool) -> (u8, u32) {
        let (t, p) = match self {
            Reliability::Reliable => (0x00, 0),
            Reliability::MaxRetransmits(n) => (0x01, n),
            Reliability::MaxPacketLifetime(ms) => (0x02, ms),
        };
        (if ordered { t } else { t | 0x80 }, p)
    }

    /// The reliability and `ordered` a Channel Type byte and Reliability
    /// Parameter mean, or `None` for an unknown type.
    pub fn from_wire(channel_type: u8, parameter: u32) -> Option<(Reliability, bool)> {
        let ordered = channel_type & 0x80 == 0;
        let r = match channel_type & 0x7f {
            0x00 => Reliability::Reliable,
            0x01 => Reliability::MaxRetransmits(parameter),
            0x02 => Reliability::MaxPacketLifetime(parameter),
            _ => return None,
        };
        Some((r, ordered))
    }
}

/// DATA_CHANNEL_OPEN (RFC 8832 §5.1): what the opener asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DataChannelOpen {
    /// Ordered delivery (the Channel Type's high bit clear).
    pub ordered: bool,
    /// Reliability and its parameter.
    pub reliability: Reliability,
    /// Priority (RFC 8831 §6.4: 128 below normal, 256 normal, 512 high,
    /// 1024 extra high).
    pub priority: u16,
    /// The channel's label (UTF-8).
    pub label: String,
    /// The sub-protocol (UTF-8, empty for none).
    pub protocol: String,
}

/// A DCEP message.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DcepMessage {
    /// DATA_CHANNEL_OPEN.
    Open(DataChannelOpen),
    /// DATA_CHANNEL_ACK.
    Ack,
}

/// Why bytes are not a DCEP message.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DcepError {
    /// No bytes at all.
    #[error("empty DCEP message")]
    Empty,
    /// The message type is neither OPEN (0x03) nor ACK (0x02).
    #[error("unknown DCEP message type {0:#04x}")]
    UnknownType(u8),
    /// The named field runs past the end of the message.
    #[error("DCEP message too short for its {0}")]
    Truncated(&'static str),
    /// Bytes follow the last field of the message.
    #[error("{0} trailing bytes after the DCEP message")]
    TrailingData(usize),
    /// The Channel Type of an OPEN is not one RFC 8832 §5.1 defines.
    #[error("unknown DCEP channel type {0:#04x}")]
    UnknownChannelType(u8),
    /// The named string is not UTF-8.
    #[error("DCEP {0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A label or protocol longer than its 16-bit length field (encode).
    #[error("DCEP {0} longer than 65535 bytes")]
    TooLong(&'static str),
}

impl DcepMessage {
    /// Reads one DCEP message (the whole SCTP user message).
    pub fn decode(bytes: &[u8]) -> Result<DcepMessage, DcepError> {
        let (&typ, rest) = bytes.split_first().ok_or(DcepError::Empty)?;
        match typ {
            DATA_CHANNEL_ACK => {
                // RFC 8832 §5.2: the ACK is the message type alone.
                if rest.is_empty() {
                    Ok(DcepMessage::Ack)
                } else {
                    Err(DcepError::TrailingData(rest.len()))
                }
            }
            DATA_CHANNEL_OPEN => decode_open(bytes).map(DcepMessage::Open),
            other => Err(DcepError::UnknownType(other)),
        }
    }

    /// Appends the wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), DcepError> {
        match self {
            DcepMessage::Ack => out.push(DATA_CHANNEL_ACK),
            DcepMessage::Open(o) => {
                let label_len =
                    u16::try_from(o.label.len()).map_err(|_| DcepError::TooLong("label"))?;
                let proto_len =
                    u16::try_from(o.protocol.len()).map_err(|_| DcepError::TooLong("protocol"))?;
                let (channel_type, parameter) = o.reliability.wire(o.ordered);
                out.reserve(OPEN_HEADER_LEN + o.label.len() + o.protocol.len());
                out.push(DATA_CHANNEL_OPEN);
                out.push(channel_type);
                out.extend_from_slice(&o.priority.to_be_bytes());
                out.extend_from_slice(&parameter.to_be_bytes());
                out.extend_from_slice(&label_len.to_be_bytes());
                out.extend_from_slice(&proto_len.to_be_bytes());
                out.extend_from_slice(o.label.as_bytes());
                out.extend_from_slice(o.protocol.as_bytes());
            }
        }
        Ok(())
    }

    /// The wire form as a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, DcepError> {
        let mut v = Vec::new();
        self.encode(&mut v)?;
        Ok(v)
    }
}

fn decode_open(bytes: &[u8]) -> Result<DataChannelOpen, DcepError> {
    let (header, rest) = bytes
        .split_first_chunk::<OPEN_HEADER_LEN>()
        .ok_or(DcepError::Truncated("header"))?;
    let [_, channel_type, p0, p1, r0, r1, r2, r3, l0, l1, q0, q1] = *header;
    let priority = u16::from_be_bytes([p0, p1]);
    let parameter = u32::from_be_bytes([r0, r1, r2, r3]);
    let label_len = usize::from(u16::from_be_bytes([l0, l1]));
    let proto_len = usize::from(u16::from_be_bytes([q0, q1]));
    let (reliability, ordered) = Reliability::from_wire(channel_type, parameter)
        .ok_or(DcepError::UnknownChannelType(channel_type))?;
    let (label, rest) = rest
        .split_at_checked(label_len)
        .ok_or(DcepError::Truncated("label"))?;
    let (protocol, rest) = rest
        .split_at_checked(proto_len)
        .ok_or(DcepError::Truncated("protocol"))?;
    if !rest.is_empty() {
        return Err(DcepError::TrailingData(rest.len()));
    }
    let label = std::str::from_utf8(label).map_err(|_| DcepError::NotUtf8("label"))?;
    let protocol = std::str::from_utf8(protocol).map_err(|_| DcepError::NotUtf8("protocol"))?;
    Ok(DataChannelOpen {
        ordered,
        reliability,
        priority,
        label: label.to_owned(),
        protocol: protocol.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DATA_CHANNEL_OPEN for an ordered reliable channel "chat" with
    /// protocol "json" at normal priority, byte for byte as RFC 8832 §5.1
    /// lays it out (and as Chromium sends it).
    const CHAT_OPEN: &[u8] = &[
        0x03, 0x00, 0x01, 0x00, // type, channel type, priority 256
        0x00, 0x00, 0x00, 0x00, // reliability parameter
        0x00, 0x04, 0x00, 0x04, // label length, protocol length
        b'c', b'h', b'a', b't', b'j', b's', b'o', b'n',
    ];

    #[test]
    fn an_open_decodes_to_its_fields_and_encodes_back_byte_for_byte() {
        let m = DcepMessage::decode(CHAT_OPEN).unwrap();
        let DcepMessage::Open(o) = &m else {
            panic!("{m:?}")
        };
        assert_eq!(
            (o.ordered, o.reliability, o.priority),
            (true, Reliability::Reliable, 256)
        );
        assert_eq!((o.label.as_str(), o.protocol.as_str()), ("chat", "json"));
        assert_eq!(m.to_vec().unwrap(), CHAT_OPEN);
    }

    #[test]
    fn channel_types_carry_order_and_reliability() {
        let cases = [
            (0x00, 7, Reliability::Reliable, true),
            (0x80, 0, Reliability::Reliable, false),
            (0x01, 3, Reliability::MaxRetransmits(3), true),
            (0x81, 0, Reliability::MaxRetransmits(0), false),
            (0x02, 150, Reliability::MaxPacketLifetime(150), true),
            (0x82, 150, Reliability::MaxPacketLifetime(150), false),
        ];
        for (typ, param, rel, ordered) in cases {
            assert_eq!(Reliability::from_wire(typ, param), Some((rel, ordered)));
            let (t, p) = rel.wire(ordered);
            assert_eq!(t, typ);
            if rel != Reliability::Reliable {
                assert_eq!(p, param);
            }
        }
        assert_eq!(Reliability::from_wire(0x03, 0), None);
    }

    #[test]
    fn a_reliable_channels_parameter_is_ignored_and_written_as_zero() {
        let mut with_param = CHAT_OPEN.to_vec();
        with_param[7] = 9;
        let m = DcepMessage::decode(&with_param).unwrap();
        assert_eq!(m, DcepMessage::decode(CHAT_OPEN).unwrap());
        assert_eq!(m.to_vec().unwrap(), CHAT_OPEN);
    }

    #[test]
    fn the_ack_is_one_byte() {
        assert_eq!(DcepMessage::decode(&[0x02]), Ok(DcepMessage::Ack));
        assert_eq!(DcepMessage::Ack.to_vec().unwrap(), [0x02]);
        assert_eq!(
            DcepMessage::decode(&[0x02, 0]),
            Err(DcepError::TrailingData(1))
        );
    }

    #[test]
    fn malformed_messages_are_typed_errors() {
        let check = |b: &[u8], e: DcepError| assert_eq!(DcepMessage::decode(b), Err(e), "{b:?}");
        check(&[], DcepError::Empty);
        check(&[0x01], DcepError::UnknownType(0x01));
        check(&CHAT_OPEN[..11], DcepError::Truncated("header"));
        check(&CHAT_OPEN[..14], DcepError::Truncated("label"));
        check(&CHAT_OPEN[..18], DcepError::Truncated("protocol"));
        let mut long = CHAT_OPEN.to_vec();
        long.push(0);
        check(&long, DcepError::TrailingData(1));
        let mut bad_type = CHAT_OPEN.to_vec();
        bad_type[1] = 0x05;
        check(&bad_type, DcepError::UnknownChannelType(0x05));
        let mut bad_label = CHAT_OPEN.to_vec();
        bad_label[12] = 0xff;
        check(&bad_label, DcepError::NotUtf8("label"));
        let mut bad_proto = CHAT_OPEN.to_vec();
        bad_proto[19] = 0xc3;
        check(&bad_proto, DcepError::NotUtf8("protocol"));
    }

    #[test]
    fn a_label_over_65535_bytes_is_refused_on_encode() {
        let o = DcepMessage::Open(DataChannelOpen {
            ordered: true,
            reliability: Reliability::Reliable,
            priority: 256,
            label: "x".repeat(65536),
            protocol: String::new(),
        });
        assert_eq!(o.to_vec(), Err(DcepError::TooLong("label")));
    }
}
