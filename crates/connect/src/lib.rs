//! "Connect me to that peer": the facade of the p2p stack.
//!
//! Two programs (or a program and a browser tab) meet in a room of a
//! signaling server (`p2p serve`), find the best path between them through
//! NATs and firewalls (ICE, with STUN and TURN), and talk over it
//! encrypted: WebRTC data channels (DTLS checked against the fingerprint
//! the peer signaled, SCTP), so that the other peer may be a browser.
//!
#![cfg_attr(feature = "driver", doc = "```no_run")]
#![cfg_attr(not(feature = "driver"), doc = "```ignore")]
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use p2p_connect::{ChannelOptions, Peer, PeerConfig};
//!
//! let conn = Peer::new(PeerConfig::new("ws://127.0.0.1:8080/ws", "my-room"))?.connect().await?;
//! let chat = conn.open_channel(ChannelOptions::new("chat")).await?;
//! chat.send_text("hello").await?;
//! println!("{}", chat.recv().await?.text());
//! # Ok(()) }
//! ```
//!
//! That is what `examples/chat.rs` does (with the peer that joined first
//! taking the channel with [`Connection::accept_channel`]).
//!
//! # Layers
//!
//! Sans-IO machines inside, one tokio driver around them:
//! - [`Session`] (sans-IO): one ICE agent ([`p2p_ice`]) with STUN
//!   server-reflexive gathering and one [`p2p_turn::TurnClient`] per TURN
//!   server; on the path they find, a DTLS endpoint ([`p2p_dtls`]) and the
//!   SCTP association of the data channels ([`p2p_datachannel`]). Relayed
//!   candidates are ordinary local candidates of the agent; the session
//!   wraps their transmits as Send indications or ChannelData and unwraps
//!   what the TURN server delivers, so the application sees one path,
//!   whatever its type.
//! - [`Negotiation`] (sans-IO): the offer/answer, trickle, ICE restart and
//!   bye over the signaling protocol (`docs/signaling.md`), around one
//!   [`Session`]: what SDP a browser expects, the fingerprints and DTLS
//!   roles, the deadlines.
//! - The tokio driver (feature `driver`, on by default): sockets, timers and
//!   the WebSocket to the signaling server. Build a [`Peer`] from a
//!   [`PeerConfig`] (signaling URL, room, `stun:`/`turn:`/`turns:`
//!   servers, relay-only policy, timeouts), `connect().await` it and get a
//!   [`Connection`]: channels, the selected path, a stream of
//!   [`ConnectionEvent`]s, `close`. Failures are typed ([`ConnectError`]):
//!   signaling unreachable, room full, no candidate pair succeeded (with
//!   the candidates tried), TURN refused, a fingerprint that does not
//!   match, ...
//!
//! Every machine follows the one contract of `p2p-proto`
//! ([`Machine`]: `handle_input`, `handle_timeout`, `poll_output`,
//! `poll_timeout`; it starts at its first `handle_timeout`), so tests drive
//! them on a simulated clock and a virtual network. This crate does not run
//! servers (that is `p2p-server`).
//!
//! Two sessions and the offer/answer done by hand, on a lossless network
//! without delay:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use p2p_connect::{
//!     ChannelEvent, ChannelOptions, DtlsRole, IceConfig, Machine, RemoteSecurity, Session,
//!     SessionConfig, SessionEvent, SessionOutput,
//! };
//!
//! let session = |ice: IceConfig, host: &str| -> Result<Session, Box<dyn std::error::Error>> {
//!     let mut c = SessionConfig::new(ice);
//!     c.hosts = vec![host.parse()?];
//!     Ok(Session::new(c)?)
//! };
//! let mut a = session(IceConfig::controlling().with_seed(1), "10.0.0.1:5000")?;
//! let mut b = session(IceConfig::controlled().with_seed(2), "10.0.0.2:6000")?;
//! let now = Instant::now();
//! // What the offer and the answer carry: credentials, fingerprints, and
//! // the DTLS roles (the answerer is the client).
//! let said = |s: &Session| {
//!     let (u, p) = s.local_credentials();
//!     (u.to_owned(), p.to_owned(), vec![s.local_fingerprint()])
//! };
//! let (from_a, from_b) = (said(&a), said(&b));
//! for (me, (u, p, fingerprints), role) in [(&mut a, from_b, DtlsRole::Server), (&mut b, from_a, DtlsRole::Client)] {
//!     me.set_remote_credentials(now, &u, &p)?;
//!     me.set_remote_security(now, RemoteSecurity { role, fingerprints, sctp_port: 5000, max_message_size: None });
//! }
//!
//! // One loop drives both: transmits to the other side, candidates
//! // "signalled" at once, the other events of `from` kept in `seen`.
//! fn step(from: &mut Session, to: &mut Session, now: Instant, seen: &mut Vec<SessionEvent>) {
//!     while let Some(o) = from.poll_output() {
//!         match o {
//!             SessionOutput::Transmit(t) => { let _ = to.handle_input(now, t.as_datagram()); }
//!             SessionOutput::Event(SessionEvent::LocalCandidate(c)) => { let _ = to.add_remote_candidate(now, c); }
//!             SessionOutput::Event(e) => seen.push(e),
//!             _ => {}
//!         }
//!     }
//! }
//! let (mut at_a, mut at_b) = (Vec::new(), Vec::new());
//! let mut now = now;
//! a.handle_timeout(now); // both start
//! b.handle_timeout(now);
//! let mut chat = None;
//! for _ in 0..1000 {
//!     step(&mut a, &mut b, now, &mut at_a);
//!     step(&mut b, &mut a, now, &mut at_b);
//!     if chat.is_none() && a.is_established() {
//!         let id = a.open_channel(now, ChannelOptions::new("chat"))?.expect("an id");
//!         a.send(now, id, b"hello", false)?;
//!         chat = Some(id);
//!     }
//!     if at_b.iter().any(|e| matches!(e, SessionEvent::Channel(ChannelEvent::Message { .. }))) {
//!         break;
//!     }
//!     now = [a.poll_timeout(), b.poll_timeout()].into_iter().flatten().min().unwrap_or(now).max(now + Duration::from_millis(1));
//!     a.handle_timeout(now);
//!     b.handle_timeout(now);
//! }
//! assert!(at_b.iter().any(|e| matches!(e,
//!     SessionEvent::Channel(ChannelEvent::Message { data, .. }) if data == b"hello")));
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
//! use p2p_connect::{ChannelOptions, Peer, PeerConfig};
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
//! let bob = bob.await?;
//! let alice = alice.await??;
//! println!("connected via {}", alice.selected_path().expect("a path"));
//!
//! // Bob joined second: he offered; either side may open channels.
//! let to_alice = bob.open_channel(ChannelOptions::new("chat")).await?;
//! to_alice.send_text("hello alice").await?;
//! let from_bob = alice.accept_channel().await?;
//! assert_eq!(from_bob.recv().await?.text(), "hello alice");
//! alice.close().await;
//! bob.close().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

#[cfg(feature = "driver")]
mod driver;
pub mod mdns;
mod negotiate;
mod reconnect;
mod session;

/// The `ice-option-tag` this stack adds to its `a=ice-options` (after
/// `trickle`) when [`NegotiationConfig::hard_nat`] is on: a peer that
/// announces it too is another p2p-connect that may go beyond standard ICE
/// (issue 14: birthday probing and port prediction, not built yet). A
/// browser or another stack ignores an unknown tag (RFC 8839 §5.6) and is
/// never sent anything it did not ask for. Letters and digits only: an
/// `ice-option-tag` is `1*ice-char` (ALPHA / DIGIT / "+" / "/"), so no
/// hyphen.
pub const HARD_NAT_OPTION: &str = "p2phardnat";

pub use bytes::Bytes;
#[cfg(feature = "driver")]
pub use driver::{
    tls_client_config, Channel, ChannelClosed, ChannelInfo, ConnectError, Connection,
    ConnectionEvent, IceServerUri, Message, Peer, PeerConfig, Policy, RelayUnavailable, Scheme,
    SendError, SignalingError, UriError, HIGH_WATER, LOW_WATER,
};
pub use negotiate::{
    CloseReason, Failure, Negotiation, NegotiationConfig, NegotiationEvent, NegotiationOutput,
    SelectedPath, BYE_GRACE,
};
pub use p2p_ice::IceStats;
pub use reconnect::{Reconnect, ReconnectAction, ReconnectPolicy};

pub use p2p_datachannel::{
    ChannelError, ChannelEvent, ChannelId, ChannelOptions, Reliability, DEFAULT_RECEIVE_QUEUE_LIMIT,
};
pub use p2p_dtls::{Certificate, DtlsRole, DtlsVersion, Fingerprint};
pub use p2p_ice::{Candidate, CandidateKind, IceConfig, IceState};
pub use p2p_proto::{Datagram, FiveTuple, Handled, Machine, Output, Transmit, Transport};
pub use session::{
    HardNatEvent, NatMapping, NatReport, PathEnd, PortPattern, ProbeSockets, RemoteSecurity,
    SecureEnd, Session, SessionConfig, SessionError, SessionEvent, SessionOutput, TurnServerConfig,
    CLOSE_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE, FAIR_CHANCE,
};
