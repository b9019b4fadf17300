//! What happened to packets: the trace ring, drop records and the stall error.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::nat::{Behaviour, NatId};
use crate::node::Transport;
use crate::sim::HostId;

/// Why the network dropped a packet.
///
/// `Display` gives the sentence a failing test should print, e.g.
/// `filtered at NAT 1 (APDF): no outbound from 10.0.0.2:5000 to 203.0.113.7:40001`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Random loss on a host's access link.
    Loss {
        /// Host whose access link lost the packet.
        host: HostId,
    },
    /// No host or NAT owns the destination IP in the scope the packet is in
    /// (a private address is reachable only from its own LAN).
    NoRoute {
        /// The unreachable destination IP.
        destination: IpAddr,
    },
    /// A node sent from an IP its host does not own.
    SourceNotOwned {
        /// The sending host.
        host: HostId,
        /// The source IP it used.
        source: IpAddr,
    },
    /// The host sits behind a firewall that blocks UDP (both directions).
    UdpBlocked {
        /// The firewalled host.
        host: HostId,
    },
    /// TCP to a host behind a firewall that lets connections out only,
    /// from an address the host never sent TCP to.
    TcpInbound {
        /// The firewalled host.
        host: HostId,
    },
    /// An inbound packet reached a NAT's external address with no live mapping
    /// (never created, or expired).
    NoMapping {
        /// The NAT.
        nat: NatId,
        /// The external address the packet was sent to.
        external: SocketAddr,
    },
    /// An inbound packet matched a mapping but the NAT's filtering refused it.
    Filtered {
        /// The NAT.
        nat: NatId,
        /// The NAT's filtering behaviour.
        filtering: Behaviour,
        /// Internal address of the mapping.
        internal: SocketAddr,
        /// Remote address the packet came from.
        remote: SocketAddr,
    },
    /// A packet from inside a NAT to the NAT's own external address, with
    /// hairpinning off.
    HairpinDisabled {
        /// The NAT.
        nat: NatId,
    },
    /// The NAT found no free external port for a new mapping.
    PortsExhausted {
        /// The NAT.
        nat: NatId,
    },
    /// A packet to the router's own LAN address that nothing there
    /// answers (no port-mapping service on that port, or a request it
    /// does not answer).
    NotServed {
        /// The NAT whose router it reached.
        nat: NatId,
        /// The router address and port it was sent to.
        destination: SocketAddr,
    },
}

impl DropReason {
    /// True for random link loss, false for every deterministic reason.
    pub fn is_loss(&self) -> bool {
        matches!(self, DropReason::Loss { .. })
    }

    /// True when a NAT's filter refused the packet.
    pub fn is_filtered(&self) -> bool {
        matches!(self, DropReason::Filtered { .. })
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::Loss { host } => write!(f, "loss on link of {host}"),
            DropReason::NoRoute { destination } => write!(f, "no route to {destination}"),
            DropReason::SourceNotOwned { host, source } => {
                write!(f, "{host} does not own source address {source}")
            }
            DropReason::UdpBlocked { host } => write!(f, "UDP blocked by firewall of {host}"),
            DropReason::TcpInbound { host } => {
                write!(f, "TCP in, unasked for, blocked by firewall of {host}")
            }
            DropReason::NoMapping { nat, external } => {
                write!(f, "no mapping at {nat} for {external}")
            }
            DropReason::Filtered {
                nat,
                filtering,
                internal,
                remote,
            } => match filtering {
                Behaviour::AddressDependent => write!(
                    f,
                    "filtered at {nat} ({}): no outbound from {internal} to {} (any port)",
                    filtering.filtering_name(),
                    remote.ip()
                ),
                _ => write!(
                    f,
                    "filtered at {nat} ({}): no outbound from {internal} to {remote}",
                    filtering.filtering_name()
                ),
            },
            DropReason::HairpinDisabled { nat } => write!(f, "hairpinning disabled at {nat}"),
            DropReason::PortsExhausted { nat } => write!(f, "{nat} has no free external port"),
            DropReason::NotServed { nat, destination } => {
                write!(f, "nothing answers at {destination} on the router of {nat}")
            }
        }
    }
}

/// One dropped packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropRecord {
    /// When it was dropped.
    pub at: Instant,
    /// `at` minus the simulation's `t0`.
    pub elapsed: Duration,
    /// Transport of the packet.
    pub transport: Transport,
    /// Source address at the point of the drop (after any translation so far).
    pub source: SocketAddr,
    /// Destination address at the point of the drop.
    pub destination: SocketAddr,
    /// Payload length.
    pub len: usize,
    /// Why.
    pub reason: DropReason,
}

impl fmt::Display for DropRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "+{:.3}s {} {} -> {} ({} B) dropped: {}",
            self.elapsed.as_secs_f64(),
            self.transport,
            self.source,
            self.destination,
            self.len,
            self.reason
        )
    }
}

/// What a trace entry records.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceKind {
    /// A node handed a transmit to the network (addresses as sent).
    Sent {
        /// The sending host.
        host: HostId,
    },
    /// A NAT created a mapping for the packet (`source` is the new external
    /// address).
    Mapped {
        /// The NAT.
        nat: NatId,
        /// The internal address the mapping is for.
        internal: SocketAddr,
    },
    /// A datagram was handed to a node (addresses as received).
    Delivered {
        /// The receiving host.
        host: HostId,
    },
    /// The packet was dropped.
    Dropped(DropReason),
    /// A port-mapping request reached the NAT's router.
    ToRouter {
        /// The NAT.
        nat: NatId,
    },
    /// The router's port-mapping service answered.
    FromRouter {
        /// The NAT.
        nat: NatId,
    },
}

/// One entry of the packet trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// When it happened.
    pub at: Instant,
    /// `at` minus the simulation's `t0`.
    pub elapsed: Duration,
    /// What happened.
    pub kind: TraceKind,
    /// Transport of the packet.
    pub transport: Transport,
    /// Source address at that point.
    pub source: SocketAddr,
    /// Destination address at that point.
    pub destination: SocketAddr,
    /// Payload length.
    pub len: usize,
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{:.3}s ", self.elapsed.as_secs_f64())?;
        let pkt = format!(
            "{} {} -> {} ({} B)",
            self.transport, self.source, self.destination, self.len
        );
        match &self.kind {
            TraceKind::Sent { host } => write!(f, "{host} sent {pkt}"),
            TraceKind::Mapped { nat, internal } => write!(
                f,
                "{nat} new {} mapping {internal} => {} (towards {})",
                self.transport, self.source, self.destination
            ),
            TraceKind::Delivered { host } => write!(f, "{host} received {pkt}"),
            TraceKind::Dropped(reason) => write!(f, "dropped {pkt}: {reason}"),
            TraceKind::ToRouter { nat } => write!(f, "router of {nat} received {pkt}"),
            TraceKind::FromRouter { nat } => write!(f, "router of {nat} answered {pkt}"),
        }
    }
}

/// Counters over the whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Transmits taken from nodes (including [`Sim::send_from`](crate::Sim::send_from)).
    pub sent: u64,
    /// Datagrams handed to nodes.
    pub delivered: u64,
    /// Packets dropped, for any reason.
    pub dropped: u64,
    /// Extra copies created by link duplication.
    pub duplicated: u64,
    /// Steps taken by the event loop.
    pub steps: u64,
}

/// Why [`Sim::run_until`](crate::Sim::run_until) gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StallReason {
    /// Nothing left to do: no packet in flight and no node timeout.
    Idle,
    /// `max_sim_time` of simulated time passed.
    TimeLimit,
    /// `max_steps` steps were taken.
    StepLimit,
}

/// The predicate of [`Sim::run_until`](crate::Sim::run_until) never held.
///
/// `Debug` prints the same multi-line report as `Display`, so
/// `sim.run_until(..).unwrap()` fails with the trace.
#[derive(Clone)]
pub struct Stalled {
    /// Why the run stopped.
    pub reason: StallReason,
    /// Simulated time spent in this `run_until` call.
    pub elapsed: Duration,
    /// Steps taken in this `run_until` call.
    pub steps: usize,
    /// Drops counted over the whole run so far.
    pub total_drops: u64,
    /// The last packet events (oldest first), drops included.
    pub trace: Vec<TraceEvent>,
}

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.reason {
            StallReason::Idle => "network idle",
            StallReason::TimeLimit => "simulated time limit reached",
            StallReason::StepLimit => "step limit reached",
        };
        writeln!(
            f,
            "run_until stalled ({why}) after {} steps and {:.3}s simulated; {} drops so far; last {} events:",
            self.steps,
            self.elapsed.as_secs_f64(),
            self.total_drops,
            self.trace.len()
        )?;
        for ev in &self.trace {
            writeln!(f, "  {ev}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Stalled {}
