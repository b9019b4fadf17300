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
//! This crate is not a STUN codec (that is `p2p-stun`) and does not serve
//! TURN or signaling yet: the `[turn]` and `[signaling]` sections of the
//! configuration are reserved and accept no key.
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
mod responder;
mod server;
mod stream;
mod sys;
mod udp;

pub use config::{
    Config, ConfigError, LogConfig, SignalingConfig, StunConfig, TlsConfig, TurnConfig,
    DEFAULT_MAX_PADDING, DEFAULT_PORT, DEFAULT_TLS_PORT,
};
pub use counters::{CounterSnapshot, Counters};
pub use responder::{answer, Answer, Ctx, Dropped, Outcome, Transport, Via};
pub use server::{LocalAddrs, Server, ServerError};
