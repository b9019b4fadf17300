//! A sans-IO DTLS endpoint for WebRTC peer connections.
//!
//! [`DtlsEndpoint`] runs one DTLS association (RFC 6347 DTLS 1.2 as
//! browsers speak it, RFC 9147 DTLS 1.3 with peers that offer it) the way
//! WebRTC uses it (RFC 8827 §6.5, RFC 8842): both ends present a
//! self-signed [`Certificate`]; each checks the other's against the
//! [`Fingerprint`] its session description signaled (`a=fingerprint`,
//! RFC 8122); who is the client follows [`Setup`] (`a=setup`). The
//! handshake and the records are the work of the `dimpl` library; this
//! crate gives it the house shape ([`p2p_proto::Machine`]), checks the
//! peer, and turns its outputs into [`DtlsOutput`]s.
//!
//! It is not a network stack: it owns no socket, reads no clock and spawns
//! nothing. Datagrams and `now` go in; transmits, a deadline and events
//! come out. It does not demultiplex a socket (the caller hands it the
//! datagrams whose first byte is 20 to 63, RFC 7983 §7) and it does no
//! DTLS-SRTP (RFC 5764): data channels need none.
//!
//! ```
//! use std::time::Instant;
//! use p2p_dtls::{Certificate, DtlsConfig, DtlsEndpoint, DtlsEvent, DtlsOutput, DtlsRole, Setup};
//! use p2p_proto::{FiveTuple, Machine, Transport};
//!
//! // The offer says actpass, the answer active: the answerer is the client.
//! let answer = Setup::answer_to(Setup::offer())?;
//! let (offerer_role, answerer_role) = Setup::roles(Setup::offer(), answer)?;
//! assert_eq!((offerer_role, answerer_role), (DtlsRole::Server, DtlsRole::Client));
//!
//! let (ca, cb) = (Certificate::generate()?, Certificate::generate()?);
//! let a_addr = "192.0.2.1:5000".parse()?;
//! let b_addr = "192.0.2.2:6000".parse()?;
//! let mut a = DtlsEndpoint::new(
//!     DtlsConfig::new(ca.clone(), answerer_role, vec![cb.fingerprint()]).with_seed(1),
//!     FiveTuple::new(Transport::Udp, a_addr, b_addr),
//! )?;
//! let mut b = DtlsEndpoint::new(
//!     DtlsConfig::new(cb, offerer_role, vec![ca.fingerprint()]).with_seed(2),
//!     FiveTuple::new(Transport::Udp, b_addr, a_addr),
//! )?;
//!
//! // A network with no delay and no loss: hand each transmit to the other.
//! fn pump(from: &mut DtlsEndpoint, to: &mut DtlsEndpoint, now: Instant, got: &mut Vec<Vec<u8>>) {
//!     while let Some(o) = from.poll_output() {
//!         match o {
//!             DtlsOutput::Transmit(t) => { let _ = to.handle_input(now, t.as_datagram()); }
//!             DtlsOutput::Event(DtlsEvent::Data(d)) => got.push(d),
//!             _ => {}
//!         }
//!     }
//! }
//! let now = Instant::now();
//! a.handle_timeout(now); // a, the client, sends its ClientHello
//! b.handle_timeout(now);
//! let mut got = Vec::new();
//! for _ in 0..20 {
//!     pump(&mut a, &mut b, now, &mut got);
//!     pump(&mut b, &mut a, now, &mut got);
//!     if a.is_connected() && b.is_connected() && got.is_empty() {
//!         a.send(now, b"hello")?;
//!     }
//! }
//! assert_eq!(got, vec![b"hello".to_vec()]);
//! assert_eq!(b.remote_fingerprint(), Some(&ca.fingerprint()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod certificate;
mod config;
mod crypto;
mod endpoint;
mod fingerprint;
mod setup;

pub use certificate::{Certificate, CertificateError};
pub use config::DtlsConfig;
pub use endpoint::{
    alert_name, CloseReason, DtlsEndpoint, DtlsError, DtlsEvent, DtlsOutput, DtlsVersion,
    FailureKind,
};
pub use fingerprint::{Fingerprint, FingerprintError, HashFunction};
pub use setup::{DtlsRole, Setup, SetupError};

/// The crypto the library runs on: RustCrypto (pure Rust), with ring's
/// record ciphers (`crypto.rs`).
pub(crate) fn provider() -> dimpl::crypto::CryptoProvider {
    crypto::provider()
}
