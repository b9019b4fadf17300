//! The p2p daemon's library: a STUN server (RFC 8489 Binding, with the NAT
//! behaviour discovery of RFC 5780) over UDP, TCP and TLS on tokio, an
//! embeddable TURN server ([`TurnService`]), the daemon's TOML
//! configuration, its counters and its shutdown. `p2p serve` is a thin
//! shell around [`Server`].
//!
//! # A TURN server in your own tokio program
//!
//! [`TurnService`] runs the sans-IO [`p2p_turn::TurnServer`] on sockets you
//! bind (UDP, and TCP for TURN over TCP and RFC 6062), with your credential
//! store, and tells you what happens (allocations created, refreshed and
//! ended with their traffic, permissions, channels, refused requests). It
//! binds a UDP socket per relayed address when the state machine asks for
//! one, relays ChannelData on a fast path in the socket readers, and stops
//! cleanly. Here a [`p2p_turn::TurnClient`] allocates from it over a real
//! UDP socket:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use p2p_server::TurnService;
//! use p2p_turn::{
//!     ClientConfig, ClientEvent, ClientOutput, Datagram, Machine, ServerEvent, StaticUsers,
//!     TurnClient,
//! };
//! use tokio::net::UdpSocket;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The server, on a socket of ours (it relays on the same IP).
//! let mut turn = TurnService::builder("example.org")
//!     .udp_socket(UdpSocket::bind("127.0.0.1:0").await?)
//!     .credentials(StaticUsers::new().with_user("alice", "secret"))
//!     .start()?;
//! let server = turn.local_addrs()[0];
//!
//! // A client on a socket of its own: its first handle_timeout sends the
//! // Allocate; every answer goes back in.
//! let socket = UdpSocket::bind("127.0.0.1:0").await?;
//! let local = socket.local_addr()?;
//! let mut client = TurnClient::new(ClientConfig::new(local, server, "alice", "secret"));
//! client.handle_timeout(Instant::now());
//! let relayed = 'allocating: loop {
//!     while let Some(out) = client.poll_output() {
//!         match out {
//!             ClientOutput::Transmit(t) => {
//!                 socket.send_to(&t.contents, t.destination).await?;
//!             }
//!             ClientOutput::Event(ClientEvent::Allocated { relayed, .. }) => {
//!                 break 'allocating relayed[0];
//!             }
//!             other => panic!("{other:?}"),
//!         }
//!     }
//!     let mut buf = [0u8; 1500];
//!     let wait = socket.recv_from(&mut buf);
//!     let (n, from) = tokio::time::timeout(Duration::from_secs(5), wait).await??;
//!     let _ = client.handle_input(Instant::now(), Datagram::udp(from, local, &buf[..n]));
//! };
//!
//! // The server says so.
//! match turn.next_event().await {
//!     Some(ServerEvent::AllocationCreated { user, relayed: r, .. }) => {
//!         assert_eq!((user.as_str(), r.as_slice()), ("alice", &[relayed][..]));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! // Stopping ends the allocation and closes its relayed socket.
//! let counters = turn.stop().await;
//! assert_eq!(counters.allocations_stopped, 1);
//! assert!(matches!(turn.next_event().await, Some(ServerEvent::AllocationEnded { .. })));
//! # Ok(()) }
//! ```
//!
//! # The daemon
//!
//! The STUN work is one pure function, [`answer`]: a request's bytes in,
//! the response's bytes written into the caller's buffer, and which socket
//! must send them where ([`Answer`]). It opens no socket and allocates
//! nothing, so every rule (XOR-MAPPED-ADDRESS, CHANGE-REQUEST, RESPONSE-PORT,
//! PADDING, 400, 420, RFC 3489 clients) is unit-tested without a network.
//! The runtime around it binds one SO_REUSEPORT socket per core and address,
//! reads and writes datagrams in batches (`recvmmsg`/`sendmmsg`), frames TCP
//! and TLS streams, and counts what it saw ([`Counters`]).
//!
//! With a `[turn]` realm and users (or a REST secret), the same ports serve
//! TURN (RFC 8656) through a [`TurnService`]: TURN methods and ChannelData
//! go to the task that drives `p2p_turn::TurnServer` and owns a UDP socket
//! per relayed address; Binding stays with [`answer`]. Clients on TCP or TLS
//! may also ask for a TCP relayed address (RFC 6062): a listening socket per
//! allocation, Connect to peers from it, and client data connections spliced
//! to peer connections; an allocation made over TCP or TLS ends when its
//! connection closes. `[metrics]` serves Prometheus counters over HTTP.
//!
//! With `[signaling] listen`, one more TCP port serves the signaling protocol
//! of `p2p-signaling` (rooms, offer/answer, trickled candidates) on a
//! WebSocket at `/ws`, and a plain-JavaScript chat page at `/` that two
//! browser tabs use to connect through this daemon's STUN and TURN, over
//! TLS when configured (`https://`, `wss://`). Each `welcome` hands out
//! this daemon's `stun:` URL; with a TURN REST secret (or a shared static
//! user), `joined` adds `turn:` URLs with credentials, rate limited per
//! client address. Every connection of that port counts against
//! per-address limits from its first byte.
//!
//! This crate is not a STUN codec (that is `p2p-stun`) nor a TURN state
//! machine (that is `p2p-turn`).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let config = p2p_server::Config::from_toml_str(r#"
//! [stun]
//! listen = ["127.0.0.1:3478"]
//! alt_listen = "127.0.0.2:3479"
//! "#)?;
//! let server = p2p_server::Server::bind(&config).await?;
//! let stats = server.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! println!("{stats}");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod cluster;
mod config;
mod counters;
mod fastpath;
mod metrics;
mod reload;
mod responder;
mod server;
mod signaling;
mod stream;
mod sys;
mod tls;
pub mod turn;
mod udp;
mod web;

pub use cluster::ClusterConfig;
pub use config::{
    parse_user, sample as config_sample, Config, ConfigError, IceServerConfig, LogConfig,
    LogFormat, MetricsConfig, SignalingConfig, StunConfig, TlsConfig, TurnConfig, TurnCredentials,
    DEFAULT_MAX_PADDING, DEFAULT_PORT, DEFAULT_TLS_PORT,
};
pub use counters::{CounterSnapshot, Counters};
pub use reload::{Reloaded, Reloader};
pub use responder::{answer, Answer, Ctx, Dropped, Outcome, Transport, Via};
pub use server::{LocalAddrs, Server, ServerError};
pub use turn::{TurnService, TurnServiceBuilder, TurnServiceError};
