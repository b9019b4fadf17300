//! WebRTC data channels over DTLS, as a sans-IO machine.
//!
//! [`SctpAssociation`] is one SCTP association carried in DTLS (RFC 8261)
//! with its data channels (RFC 8831): DCEP open and ACK (RFC 8832, codec in
//! [`dcep`]), stream ids by DTLS role, pre-negotiated channels, ordered or
//! unordered delivery, `maxRetransmits` / `maxPacketLifeTime`, string,
//! binary and empty messages by PPID, `a=max-message-size` (RFC 8841) both
//! ways, buffered amount with a low-water event, channel close by stream
//! reset (RFC 6525), and the association ended by SHUTDOWN or ABORT so the
//! peer learns at once, or declared dead when the peer falls silent.
//!
//! SCTP itself is the `sctp-proto` library (sans-IO, maintained by str0m's
//! authors); this crate adds the WebRTC layer, the house contract
//! ([`p2p_proto::Machine`]) and what the library lacks (heartbeats and a
//! dead-peer timeout, an ABORT the peer hears when the library gives up).
//!
//! # What it is not
//!
//! It does no I/O and no cryptography: its input is the plaintext SCTP
//! packets a DTLS endpoint delivers (one per datagram), its output the SCTP
//! packets for that endpoint to encrypt. It reads no clock (time comes in
//! as `now`) and spawns nothing. It knows nothing of SDP: the ports and
//! max-message-sizes come in through [`SctpConfig`].
//!
//! # Example: two associations back to back
//!
//! ```
//! use std::time::{Duration, Instant};
//! use p2p_datachannel::{ChannelEvent, ChannelOptions, SctpAssociation, SctpConfig, SctpRole};
//! use p2p_proto::{FiveTuple, Machine, Transport};
//!
//! let (a, b) = ("192.0.2.1:1000".parse()?, "192.0.2.2:2000".parse()?);
//! let mut client = SctpAssociation::new(
//!     SctpConfig::new(SctpRole::Client).with_rng_seed(1),
//!     FiveTuple::new(Transport::Udp, a, b),
//! );
//! let mut server = SctpAssociation::new(
//!     SctpConfig::new(SctpRole::Server).with_rng_seed(2),
//!     FiveTuple::new(Transport::Udp, b, a),
//! );
//! let mut now = Instant::now();
//! let chat = client.open_channel(now, ChannelOptions::new("chat"))?;
//! client.send(now, chat, b"hello", false)?; // waits for the association
//! client.handle_timeout(now); // starts: INIT goes out
//! server.handle_timeout(now);
//!
//! let mut got = Vec::new();
//! for _ in 0..20 {
//!     // Move packets both ways (a real session hands them to DTLS).
//!     let mut to_server = Vec::new();
//!     client.drain(|t| to_server.push(t), |_| {});
//!     for t in to_server {
//!         let _ = server.handle_input(now, t.as_datagram());
//!     }
//!     let mut to_client = Vec::new();
//!     server.drain(|t| to_client.push(t), |e| got.push(e));
//!     for t in to_client {
//!         let _ = client.handle_input(now, t.as_datagram());
//!     }
//!     now += Duration::from_millis(10);
//!     client.handle_timeout(now);
//!     server.handle_timeout(now);
//! }
//! let events: Vec<_> = got.into_iter().filter_map(|o| match o {
//!     p2p_datachannel::SctpOutput::Event(e) => Some(e),
//!     _ => None,
//! }).collect();
//! assert!(events.iter().any(|e| matches!(e,
//!     ChannelEvent::ChannelOpened { label, .. } if label == "chat")));
//! assert!(events.iter().any(|e| matches!(e,
//!     ChannelEvent::Message { data, binary: false, .. } if data == b"hello")));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod association;
mod config;
pub mod dcep;
mod event;
mod wire;

pub use association::SctpAssociation;
pub use config::{
    priority, ChannelOptions, SctpConfig, SctpRole, DEFAULT_LOCAL_MAX_MESSAGE_SIZE,
    DEFAULT_RECEIVE_QUEUE_LIMIT, DEFAULT_REMOTE_MAX_MESSAGE_SIZE, DEFAULT_SCTP_PORT,
};
pub use dcep::Reliability;
pub use event::{ChannelError, ChannelEvent, ChannelId, CloseReason, SctpOutput};
