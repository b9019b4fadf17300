//! STUN messages (RFC 8489) for the p2p stack: a zero-copy decoder, a builder
//! that encodes into the caller's buffer, every attribute of STUN, TURN
//! (RFC 8656, RFC 6062), ICE (RFC 8445) and NAT behaviour discovery (RFC 5780),
//! short- and long-term credentials, FINGERPRINT, TURN ChannelData framing,
//! RFC 7983 demultiplexing, and the client transaction's retransmission timers.
//!
//! This crate does no I/O and reads no clock. [`Message::decode`] borrows the
//! datagram and allocates nothing; [`MessageBuilder`] writes into a `Vec<u8>`,
//! a `BytesMut` or a fixed slice ([`SliceBuf`]). [`ClientTransaction`] is a
//! sans-IO state machine: the caller sends what it hands out and passes `now`.
//!
//! ```
//! use p2p_stun::{Message, MessageBuilder, MessageType, Method, MessageClass, TransactionId, Key};
//! use p2p_stun::attr::{Username, XorMappedAddress};
//!
//! // A client's request with short-term credentials (as ICE sends them) ...
//! let key = Key::short_term("VOkJxbRl1RmTxUk/WvJxBt")?;
//! let tid = TransactionId::new([1; 12]);
//! let mut req = Vec::new();
//! let mut b = MessageBuilder::new(&mut req, MessageType::new(Method::BINDING, MessageClass::Request), tid)?;
//! b.add(&Username::new("evtj:h6vY")?)?;
//! b.add_message_integrity(&key)?;
//! b.add_fingerprint()?;
//!
//! // ... checked by the server, which answers with the mapped address.
//! let msg = Message::decode(&req)?;
//! msg.verify_fingerprint()?;
//! msg.verify_integrity(&key)?;
//! assert_eq!(msg.get::<Username>()?.unwrap().as_str(), "evtj:h6vY");
//! let mut resp = Vec::new();
//! let mut b = MessageBuilder::new(&mut resp, msg.typ().success(), msg.transaction_id())?;
//! b.add(&XorMappedAddress("192.0.2.1:32853".parse()?))?;
//! b.add_fingerprint()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod attr;
mod builder;
mod channel;
mod error;
mod framer;
mod header;
mod integrity;
mod message;
mod transaction;

pub use builder::{EncodeBuf, MessageBuilder, SliceBuf};
pub use channel::{
    classify, next_frame_len, ChannelData, ChannelDataError, FramingError, PacketKind,
    CHANNEL_DATA_RANGE, CHANNEL_RANGE,
};
pub use error::{AttrError, DecodeError, EncodeError, IntegrityError};
pub use framer::{StreamFramer, INITIAL_BUFFER, MAX_FRAME};
pub use header::{
    AttrType, MessageClass, MessageType, Method, TransactionId, HEADER_LEN, MAGIC_COOKIE,
};
pub use integrity::{prepare, userhash, CredentialError, Key};
pub use message::{is_stun, peek_type, Message, RawAttribute};
pub use transaction::{ClientTransaction, TransactionConfig, TransactionOutcome};
