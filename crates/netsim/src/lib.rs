//! `p2p-netsim` is a deterministic, in-memory virtual network for testing
//! sans-IO protocol machines: hosts on the public internet, behind RFC 4787
//! NATs (any mapping × filtering behaviour, port allocation, mapping expiry,
//! hairpinning, and a router that serves PCP and NAT-PMP on its LAN address
//! when asked: [`PortMapService`]) or behind a UDP-blocking firewall;
//! access links with latency, jitter, loss, duplication and reordering; one
//! simulated clock. One thread, no sockets, one seeded RNG: the same seed
//! gives the same run, and a 10-minute TURN allocation or a 30-second ICE
//! failure runs in microseconds.
//!
//! It is not a network stack: it moves whole datagrams between addresses and
//! knows nothing of STUN, TURN or ICE (a router that offers port mapping
//! speaks PCP and NAT-PMP, as a home router does, and nothing else). A
//! `Tcp`- or `Tls`-marked datagram stands for one framed message on a TCP
//! connection; there is no handshake or stream. It is a dev-only crate
//! (`publish = false`), used by the tests of the TURN server, the ICE agent
//! and the connect `Session` through small adapters implementing [`Node`].
//!
//! The event loop follows quinn's `Pair::step` and str0m's `progress`: drain
//! every node's transmits, route them (source NAT translation, the sender's
//! link, destination NAT filter and translation, the receiver's link), jump the
//! clock to the next arrival or node timeout, deliver and fire, repeat. Every
//! dropped packet is recorded with a reason ([`Sim::drops`]) and the last
//! packet events are kept ([`Sim::trace`]), so a stalled
//! [`Sim::run_until`] fails with a readable trace instead of hanging.
//!
//! Packets are the stack's own [`Transmit`] and [`Datagram`] (`p2p-proto`).
//! Any machine of the stack goes on the network as a [`MachineNode`] (its
//! transmits are sent, its other outputs kept for the test), or wrap it in
//! a test struct that implements [`Node`]; add it with [`Sim::add_host`], and read its state between
//! steps with [`Sim::node`] / [`Sim::node_mut`]. [`EchoReflector`] (a mini
//! STUN server) and [`ScriptedNode`] (send at given times, record what
//! arrives) are ready-made nodes.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use p2p_netsim::{
//!     Behaviour, EchoReflector, NatConfig, Realm, ScriptedNode, Sim, Transmit,
//! };
//!
//! let t0 = Instant::now();
//! let mut sim = Sim::new(t0, 42);
//! let nat = sim.add_nat(NatConfig::new(
//!     "198.51.100.1".parse().unwrap(),
//!     Behaviour::EndpointIndependent,
//!     Behaviour::AddressAndPortDependent,
//! ));
//! let server = sim.add_host(["203.0.113.1".parse().unwrap()], Realm::Public, EchoReflector::new());
//! let mut client = ScriptedNode::new();
//! client.send_at(
//!     t0,
//!     Transmit::udp("10.0.0.2:5000".parse().unwrap(), "203.0.113.1:3478".parse().unwrap(), "hi"),
//! );
//! let client = sim.add_host(["10.0.0.2".parse().unwrap()], Realm::Nat(nat), client);
//!
//! // Default links: 10 ms each way per host, so the reply is back after 40 ms.
//! let took = sim
//!     .run_until(|s| !s.node::<ScriptedNode>(client).received().is_empty(),
//!                Duration::from_secs(1), 100)
//!     .unwrap();
//! assert_eq!(took, Duration::from_millis(40));
//! let reply = &sim.node::<ScriptedNode>(client).received()[0].datagram;
//! // Port preservation: the NAT kept port 5000.
//! assert_eq!(EchoReflector::parse_reply(&reply.contents),
//!            Some("198.51.100.1:5000".parse().unwrap()));
//! assert_eq!(sim.node::<EchoReflector>(server).seen().len(), 1);
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod link;
mod nat;
mod node;
mod nodes;
mod portmap;
mod sim;
mod trace;

pub use link::LinkConfig;
pub use nat::{Behaviour, MappingInfo, NatConfig, NatId, PortAllocation, PortMapService};
pub use node::{Datagram, MachineNode, Node, Transmit, Transport};
pub use nodes::{EchoReflector, Received, ScriptedNode};
pub use sim::{Firewall, HostId, Realm, Sim};
pub use trace::{DropReason, DropRecord, StallReason, Stalled, Stats, TraceEvent, TraceKind};
