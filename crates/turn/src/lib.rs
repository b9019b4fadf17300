//! TURN (RFC 8656) for the p2p stack, as sans-IO state machines: a
//! [`TurnServer`] (allocations keyed by 5-tuple, permissions, channels,
//! long-term credentials with stateless expiring nonces, quotas, a peer
//! address policy, bandwidth caps) and a [`TurnClient`] (allocate with the
//! 401/438 dance, refreshes, permissions, channels, data both ways).
//!
//! This crate does no I/O, reads no clock and spawns nothing: time comes in
//! as `now: Instant`, wall-clock time (for REST credential expiry) is derived
//! from an `(Instant, SystemTime)` pair given at construction, packets come in
//! as [`Datagram`]s and go out as [`Transmit`]s. Sockets, including one per
//! relayed address, belong to the daemon (`p2p-server`), which hands relayed
//! addresses to the server through a [`RelayAllocator`]. The STUN codec is
//! `p2p-stun`. Clients may reach the server over UDP, TCP or TLS; over TCP
//! or TLS they may also ask for a TCP relayed address (RFC 6062: Connect,
//! ConnectionAttempt, ConnectionBind), for which the server hands its driver
//! [`TcpCommand`]s (connect to a peer, splice a client data connection to a
//! peer connection, close) and keeps the state (connection ids, pending
//! binds, their 30-second timeout). [`TurnClient`] asks for either; for a
//! TCP relayed address it sends Connect, reports ConnectionAttempt and
//! builds the ConnectionBind for the application's data connection.
//!
//! ```
//! use std::time::{Instant, SystemTime};
//! use p2p_turn::*;
//!
//! let t0 = Instant::now();
//! let server_addr = "203.0.113.1:3478".parse().unwrap();
//! let mut server = TurnServer::new(
//!     ServerConfig { rng_seed: Some(1), ..ServerConfig::new("example.org") },
//!     StaticUsers::new().with_user("alice", "secret"),
//!     MemoryRelayAllocator::new(["203.0.113.1".parse().unwrap()], 49152..=65535),
//!     (t0, SystemTime::UNIX_EPOCH),
//! );
//! let mut client = TurnClient::new(ClientConfig {
//!     rng_seed: Some(2),
//!     ..ClientConfig::new("192.0.2.10:5000".parse().unwrap(), server_addr, "alice", "secret")
//! });
//! client.allocate(t0).unwrap();
//!
//! // A tiny loop: move packets between the two until the client is allocated.
//! let mut relayed = None;
//! for _ in 0..10 {
//!     while let Some(t) = client.poll_transmit() {
//!         server.handle_input(t0, Datagram { transport: t.transport, local: t.destination, remote: t.source, bytes: &t.contents });
//!     }
//!     while let Some(t) = server.poll_transmit() {
//!         client.handle_input(t0, Datagram { transport: t.transport, local: t.destination, remote: t.source, bytes: &t.contents });
//!         server.recycle(t.contents);
//!     }
//!     while let Some(e) = client.poll_event() {
//!         if let ClientEvent::Allocated { relayed: r, .. } = e { relayed = Some(r); }
//!     }
//! }
//! assert_eq!(relayed.unwrap()[0].ip().to_string(), "203.0.113.1");
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod auth;
mod client;
mod policy;
mod relay;
mod server;
mod tcp;
mod types;

pub use auth::{CredentialStore, RestSecret, StaticUsers};
pub use client::{ClientConfig, ClientError, ClientEvent, ClientState, TurnClient};
pub use p2p_stun::attr::{AddressFamily, PasswordAlgorithm};
pub use policy::{Cidr, CidrError, PeerPolicy};
pub use relay::{MemoryRelayAllocator, RelayAllocator};
pub use server::{
    AllocationInfo, AuthFailure, Bandwidth, ChannelRoute, Counters, RouteUpdate, ServerConfig,
    ServerEvent, Traffic, TurnServer,
};
pub use tcp::TcpCommand;
pub use types::{is_turn_method, Datagram, FiveTuple, Transmit, Transport};
