//! The p2p daemon's library: a STUN server (RFC 8489 Binding, with the NAT
//! behaviour discovery of RFC 5780) over UDP, TCP and TLS on tokio, its TOML
//! configuration, its counters and its shutdown. `p2p serve` is a thin shell
//! around [`Server`].
//!
//! The protocol work is one pure function, [`answer`]: a request's bytes in,
//! the response's bytes written into the caller's buffer, and which socket
//! must send them where ([`Answer`]). It opens no socket and allocates
//! nothing, so every rule (XOR-MAPPED-ADDRESS, CHANGE-REQUEST, RESPONSE-PORT,
//! PADDING, 400, 420, RFC 3489 clients) is unit-tested without a network.
//! The runtime around it binds one SO_REUSEPORT socket per core and address,
//! reads and writes datagrams in batches (`recvmmsg`/`sendmmsg`), frames TCP
//! and TLS streams, and counts what it saw ([`Counters`]).
//!
//! With a `[turn]` realm and users (or a REST secret), the same ports serve
//! TURN (RFC 8656): TURN methods and ChannelData go to one task that drives
//! `p2p_turn::TurnServer` and owns a UDP socket per relayed address; Binding
//! stays with [`answer`]. Clients on TCP or TLS may also ask for a TCP
//! relayed address (RFC 6062): a listening socket per allocation, Connect to
//! peers from it, and client data connections spliced to peer connections;
//! an allocation made over TCP or TLS ends when its connection closes.
//! `[metrics]` serves Prometheus counters over HTTP.
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

mod config;
mod counters;
mod fastpath;
mod metrics;
mod responder;
mod server;
mod signaling;
mod stream;
mod sys;
mod turn;
mod udp;
mod web;

pub use config::{
    Config, ConfigError, IceServerConfig, LogConfig, MetricsConfig, SignalingConfig, StunConfig,
    TlsConfig, TurnConfig, TurnCredentials, DEFAULT_MAX_PADDING, DEFAULT_PORT, DEFAULT_TLS_PORT,
};
pub use counters::{CounterSnapshot, Counters};
pub use responder::{answer, Answer, Ctx, Dropped, Outcome, Transport, Via};
pub use server::{LocalAddrs, Server, ServerError};
