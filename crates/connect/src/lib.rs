//! "Connect me to that peer": the facade of the p2p stack.
//!
//! Two layers, as everywhere in this workspace:
//! - [`Session`] is sans-IO: one ICE agent ([`p2p_ice`]) composed with STUN
//!   server-reflexive gathering and one [`p2p_turn::TurnClient`] per TURN
//!   server. Datagrams and `Instant`s in; transmits, a deadline and
//!   [`SessionEvent`]s out. Relayed candidates are ordinary local candidates
//!   of the agent; the session wraps their transmits as Send indications or
//!   ChannelData and unwraps what the TURN server delivers, so the
//!   application sees one path, whatever its type.
//! - The tokio driver (feature `driver`, on by default) binds the sockets,
//!   runs the timers, meets the peer through a `p2p-signaling` server
//!   (trickling candidates) and hands back a connected path: build a
//!   [`Peer`] from a [`PeerConfig`] (signaling URL, room, `stun:`/`turn:`/
//!   `turns:` servers, relay-only policy, timeouts), `connect().await` it and
//!   get a [`Connection`]: `send`, `recv`, the selected path, a stream of
//!   [`ConnectionEvent`]s, `close`. Failures are typed ([`ConnectError`]):
//!   signaling unreachable, room full, no candidate pair succeeded (with the
//!   candidates tried), TURN refused, ...
//!
//! This crate is not a reliable transport, nor DTLS or SCTP: it hands over
//! datagrams. It does not run servers either (that is `p2p-server`).
//!
//! Datagram semantics: [`Session::send`] sends one datagram over the
//! selected path; it may be lost, duplicated or reordered, exactly like UDP
//! (a relayed path adds the relay's hop, not reliability). Applications that
//! need a stream put one on top (e.g. SCTP or QUIC over the datagrams).
//! Data the peer sends on a pair this side is still checking is delivered
//! too (the controlling peer may send as soon as it nominated).
//! [`Session::close`] deletes the TURN allocations before
//! [`SessionEvent::Closed`]; the driver's `close` (and dropping the
//! [`Connection`]) goes through it.
//!
//! ```
//! use std::time::Instant;
//! use p2p_connect::{Session, SessionConfig, SessionEvent, Datagram, Transport};
//! use p2p_ice::IceConfig;
//!
//! let a_addr = "10.0.0.1:5000".parse()?;
//! let b_addr = "10.0.0.2:6000".parse()?;
//! let mut a = Session::new(SessionConfig { hosts: vec![a_addr], ..SessionConfig::new(IceConfig::controlling().with_seed(1)) })?;
//! let mut b = Session::new(SessionConfig { hosts: vec![b_addr], ..SessionConfig::new(IceConfig::controlled().with_seed(2)) })?;
//! let (ua, pa) = a.local_credentials();
//! let (ua, pa) = (ua.to_owned(), pa.to_owned());
//! let (ub, pb) = b.local_credentials();
//! let (ub, pb) = (ub.to_owned(), pb.to_owned());
//! let mut now = Instant::now();
//! a.set_remote_credentials(now, &ub, &pb)?;
//! b.set_remote_credentials(now, &ua, &pa)?;
//! a.start(now);
//! b.start(now);
//! // A lossless network without delay; candidates are "signalled" at once.
//! for _ in 0..200 {
//!     while let Some(e) = a.poll_event() {
//!         if let SessionEvent::LocalCandidate(c) = e { b.add_remote_candidate(now, c)?; }
//!     }
//!     while let Some(e) = b.poll_event() {
//!         if let SessionEvent::LocalCandidate(c) = e { a.add_remote_candidate(now, c)?; }
//!     }
//!     while let Some(t) = a.poll_transmit() {
//!         b.handle_input(now, Datagram { transport: Transport::Udp, local: t.destination, remote: t.source, contents: &t.contents });
//!     }
//!     while let Some(t) = b.poll_transmit() {
//!         a.handle_input(now, Datagram { transport: Transport::Udp, local: t.destination, remote: t.source, contents: &t.contents });
//!     }
//!     if a.selected_path().is_some() && b.selected_path().is_some() { break; }
//!     now = [a.poll_timeout(), b.poll_timeout()].into_iter().flatten().min().unwrap_or(now).max(now);
//!     a.handle_timeout(now);
//!     b.handle_timeout(now);
//! }
//! while b.poll_event().is_some() {}
//! a.send(now, b"hello")?;
//! while let Some(t) = a.poll_transmit() {
//!     b.handle_input(now, Datagram { transport: Transport::Udp, local: t.destination, remote: t.source, contents: &t.contents });
//! }
//! assert!(std::iter::from_fn(|| b.poll_event()).any(|e| e == SessionEvent::Data(b"hello".to_vec())));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The driver, with two peers in one process and a signaling server on
//! loopback (a real deployment runs `p2p serve` and gives each peer its URL
//! and a STUN or TURN server):
//!
#![cfg_attr(feature = "driver", doc = "```")]
#![cfg_attr(not(feature = "driver"), doc = "```ignore")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use p2p_connect::{Peer, PeerConfig};
//!
//! // A signaling server on loopback (what `p2p serve` runs).
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("ws://{}/", listener.local_addr()?);
//! let config = p2p_signaling::ServerConfig::default();
//! tokio::spawn(p2p_signaling::serve(listener, config, std::future::pending()));
//!
//! let peer = |url: &str| Peer::new(PeerConfig::new(url, "doc-room").include_loopback(true));
//! let alice = tokio::spawn(peer(&url)?.connect());
//! let bob = peer(&url)?.connect();
//! let mut bob = bob.await?;
//! let mut alice = alice.await??;
//! println!("connected via {}", alice.selected_path().expect("a path"));
//!
//! alice.send(&b"hello bob"[..]).await?;
//! // Datagrams may be lost: a real application retries or numbers them.
//! assert_eq!(bob.recv().await.as_deref(), Ok(&b"hello bob"[..]));
//! alice.close().await;
//! bob.close().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

#[cfg(feature = "driver")]
mod driver;
mod negotiate;
mod session;

pub use bytes::Bytes;
#[cfg(feature = "driver")]
pub use driver::{
    tls_client_config, Channel, ChannelClosed, ChannelInfo, ConnectError, Connection,
    ConnectionEvent, IceServerUri, Message, Peer, PeerConfig, Policy, Scheme, SendError,
    SignalingError, UriError, HIGH_WATER, LOW_WATER,
};
pub use negotiate::{
    CloseReason, Failure, Negotiation, NegotiationConfig, NegotiationEvent, NegotiationOutput,
    SelectedPath,
};
pub use p2p_ice::IceStats;

pub use p2p_datachannel::{ChannelError, ChannelEvent, ChannelId, ChannelOptions, Reliability};
pub use p2p_dtls::{Certificate, DtlsRole, DtlsVersion, Fingerprint};
pub use p2p_ice::{Candidate, CandidateKind, IceConfig, IceState};
pub use p2p_proto::{Datagram, FiveTuple, Handled, Machine, Output, Transmit, Transport};
pub use session::{
    PathEnd, RemoteSecurity, SecureEnd, Session, SessionConfig, SessionError, SessionEvent,
    SessionOutput, TurnServerConfig, CLOSE_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE,
};
