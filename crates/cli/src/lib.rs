//! The library behind the `p2p` command: a STUN Binding client over UDP,
//! TCP and TLS ([`client`]), RFC 5780 NAT behaviour discovery
//! ([`natdisc`]) and a TURN client run ([`turn`]), all on tokio. The `p2p` binary adds argument parsing,
//! logging and output; the server itself is `p2p-server`.
//!
//! This crate is not a protocol implementation: messages come from
//! `p2p-stun`, retransmission timers from its `ClientTransaction`.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let server = "127.0.0.1:3478".parse()?;
//! let report = p2p_cli::natdisc::discover(server, None, p2p_cli::client::probe_timers()).await?;
//! println!("mapping {}, filtering {}", report.mapping, report.filtering);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod addr;
pub mod client;
pub mod natdisc;
pub mod turn;
