//! Port mapping on the local router for the p2p stack, as a sans-IO
//! client: PCP (RFC 6887) MAP requests, with a fall-back to NAT-PMP
//! (RFC 6886) when the router answers "unsupported version" or PCP goes
//! unanswered. A [`PortMapper`] asks the router to forward an external
//! port to one local UDP socket, reports the external address and port
//! (which `p2p-connect` offers the peer as a server-reflexive candidate),
//! renews the mapping at half its lifetime and deletes it on
//! [`PortMapper::close`].
//!
//! It is not a network stack: it owns no socket, reads no clock and finds
//! no gateway. It is a [`p2p_proto::Machine`] like every machine of the
//! stack: the caller sends its requests from the mapped socket to the
//! gateway's port 5351 and feeds back what arrives from there. UPnP IGD
//! (SSDP and SOAP over HTTP) is not here: it needs a TCP client and lives
//! in `p2p-connect`'s driver.
//!
//! ```
//! use std::time::Instant;
//! use p2p_portmap::{natpmp, pcp, PortMapConfig, PortMapEvent, PortMapOutput, PortMapper};
//! use p2p_proto::{Datagram, Machine};
//!
//! let t0 = Instant::now();
//! let local = "192.168.1.20:40000".parse()?;
//! let mut m = PortMapper::new(PortMapConfig::new("192.168.1.1".parse()?, local).with_seed(7));
//! m.handle_timeout(t0); // it starts: a PCP MAP request
//! let Some(PortMapOutput::Transmit(req)) = m.poll_output() else { panic!() };
//! assert_eq!(req.destination, "192.168.1.1:5351".parse()?);
//! assert_eq!(req.contents[0], pcp::VERSION);
//!
//! // This router speaks NAT-PMP only: "unsupported version" (RFC 6886 §3.5).
//! let refusal = [0u8, 129, 0, 1, 0, 0, 0, 9];
//! let _ = m.handle_input(t0, Datagram::udp(req.destination, local, &refusal));
//! let mut asked = Vec::new();
//! while let Some(PortMapOutput::Transmit(t)) = m.poll_output() { asked.push(t.contents); }
//! assert_eq!(asked, [natpmp::external_address_request().to_vec(),
//!                    natpmp::map_request(p2p_proto::Transport::Udp, 40000, 40000, 7200).to_vec()]);
//!
//! // The router's answers: its external address, then the mapping.
//! let address = [0u8, 128, 0, 0, 0, 0, 0, 9, 203, 0, 113, 7];
//! let mapping = [0u8, 129, 0, 0, 0, 0, 0, 9, 0x9c, 0x40, 0x9c, 0x41, 0, 0, 0x1c, 0x20];
//! let _ = m.handle_input(t0, Datagram::udp(req.destination, local, &address));
//! let _ = m.handle_input(t0, Datagram::udp(req.destination, local, &mapping));
//! let Some(PortMapOutput::Event(PortMapEvent::Mapped(got))) = m.poll_output() else { panic!() };
//! assert_eq!(got.external, "203.0.113.7:40001".parse()?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod client;
pub mod natpmp;
pub mod pcp;
mod wire;

pub use client::{
    Mapping, Method, PortMapConfig, PortMapError, PortMapEvent, PortMapOutput, PortMapper,
};
pub use wire::{DecodeError, Response, SERVER_PORT};
