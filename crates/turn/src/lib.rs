//! TURN (RFC 8656) for the p2p stack, as sans-IO state machines: a
//! [`TurnServer`] (allocations keyed by 5-tuple, permissions, channels,
//! long-term credentials with stateless expiring nonces, quotas, a peer
//! address policy, bandwidth caps, a pool of relayed ports) and a
//! [`TurnClient`] (allocate with the 401/438 dance, refreshes, permissions,
//! channels, data both ways).
//!
//! Both are [`p2p_proto::Machine`]s, driven like every machine of the
//! stack: datagrams in ([`Datagram`]), one output enum out
//! ([`ServerOutput`], [`ClientOutput`]), timers through `poll_timeout` and
//! `handle_timeout`. The client starts allocating at its first
//! `handle_timeout(now)`.
//!
//! This crate does no I/O, reads no clock and spawns nothing: time comes in
//! as `now: Instant`, wall-clock time (for REST credential expiry) is derived
//! from an `(Instant, SystemTime)` pair given at construction. Sockets,
//! including one per relayed address, belong to the driver (`p2p-server`'s
//! daemon and its embeddable TURN service, or a test): the server takes a
//! relayed address from its port pool and asks its driver to bind a socket
//! there ([`SocketRequest::BindUdp`]), and answers the Allocate once told
//! the socket is bound ([`TurnServer::bind_result`]); a port the OS refuses
//! is skipped and another one asked for. Clients may reach the server over
//! UDP, TCP or TLS; over TCP or TLS they may also ask for a TCP relayed
//! address (RFC 6062: Connect, ConnectionAttempt, ConnectionBind), for which
//! the server asks its driver for TCP sockets the same way (listen, connect
//! to a peer, splice a client data connection to a peer connection, close)
//! and keeps the state (connection ids, pending binds, their 30-second
//! timeout). [`TurnClient`] asks for either; for a TCP relayed address it
//! sends Connect, reports ConnectionAttempt and binds the application's
//! data connection.
//!
//! ```
//! use std::time::{Instant, SystemTime};
//! use p2p_turn::*;
//!
//! let t0 = Instant::now();
//! let server_addr = "203.0.113.1:3478".parse().unwrap();
//! let mut config = ServerConfig::new("example.org");
//! config.relayed_ips = vec!["203.0.113.1".parse().unwrap()];
//! config.rng_seed = Some(1);
//! let users = StaticUsers::new().with_user("alice", "secret");
//! let mut server = TurnServer::new(config, users, (t0, SystemTime::UNIX_EPOCH));
//! let mut client_config =
//!     ClientConfig::new("192.0.2.10:5000".parse().unwrap(), server_addr, "alice", "secret");
//! client_config.rng_seed = Some(2);
//! let mut client = TurnClient::new(client_config);
//! client.handle_timeout(t0); // the client starts: its Allocate goes out
//!
//! // A tiny loop: move packets between the two until the client is allocated.
//! let mut relayed = None;
//! for _ in 0..10 {
//!     while let Some(out) = client.poll_output() {
//!         match out {
//!             ClientOutput::Transmit(t) => {
//!                 let _ = server.handle_input(t0, t.as_datagram());
//!             }
//!             ClientOutput::Event(ClientEvent::Allocated { relayed: r, .. }) => relayed = Some(r),
//!             _ => {}
//!         }
//!     }
//!     while let Some(out) = server.poll_output() {
//!         match out {
//!             ServerOutput::Transmit(t) => {
//!                 let _ = client.handle_input(t0, t.as_datagram());
//!                 server.recycle(t.contents);
//!             }
//!             // No sockets here: pretend every relayed socket binds.
//!             ServerOutput::Socket(SocketRequest::BindUdp { relayed }) => {
//!                 server.bind_result(t0, relayed, true)
//!             }
//!             _ => {}
//!         }
//!     }
//! }
//! assert_eq!(relayed.unwrap()[0].ip().to_string(), "203.0.113.1");
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod auth;
mod client;
mod policy;
mod server;

pub use auth::{CredentialStore, RestSecret, StaticUsers};
pub use client::{
    refusal_reason, ClientConfig, ClientError, ClientEvent, ClientOutput, ClientState, TurnClient,
    MAX_REDIRECTS,
};
pub use p2p_proto::{Datagram, FiveTuple, Handled, Machine, Output, Transmit, Transport};
pub use p2p_stun::attr::{AddressFamily, PasswordAlgorithm};
pub use policy::{Cidr, CidrError, PeerPolicy, PeerRefusal};
pub use server::{
    AllocationInfo, AuthFailure, AuthLimit, Bandwidth, ChannelRoute, Counters, EndReason,
    RouteUpdate, ServerConfig, ServerEvent, ServerOutput, SocketRequest, Traffic, TurnServer,
};

use p2p_stun::Method;

/// Whether a STUN method belongs to TURN (RFC 8656, RFC 6062) rather than to
/// plain STUN (Binding). A daemon that answers Binding itself routes only
/// these to [`TurnServer`]; the server answers Binding too unless
/// [`ServerConfig::answer_binding`] is off.
pub fn is_turn_method(method: Method) -> bool {
    matches!(
        method,
        Method::ALLOCATE
            | Method::REFRESH
            | Method::SEND
            | Method::DATA
            | Method::CREATE_PERMISSION
            | Method::CHANNEL_BIND
            | Method::CONNECT
            | Method::CONNECTION_BIND
            | Method::CONNECTION_ATTEMPT
    )
}
