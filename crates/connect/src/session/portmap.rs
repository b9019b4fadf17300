//! Port mappings on the local router (PCP, then NAT-PMP; `p2p-portmap`):
//! one mapper per host socket [`SessionConfig::port_mapping`] names,
//! with the router to ask. A mapping the router grants becomes a server-reflexive
//! candidate of that socket (the router forwards its external port to the
//! socket whoever sends, so a peer behind any NAT reaches it); the mapping
//! is deleted when the session closes.
//!
//! Gathering waits for a router's answer [`PortMapConfig::settle_timeout`]
//! at most (1 s: a router on the LAN answers in milliseconds); a router
//! that answers neither PCP nor NAT-PMP no longer holds end-of-candidates
//! for the mapper's 3.5 s of retransmissions. A mapping granted after
//! end-of-candidates cannot be offered (RFC 8838: no candidate follows
//! it), so it is deleted at once and reported as
//! [`SessionEvent::PortMapFailed`]; so is a UPnP mapping
//! ([`Session::add_port_mapping`]) that comes after it.
//!
//! A mapping sought outside the session (the driver's UPnP IGD search,
//! [`SessionConfig::external_port_mapping`]) holds end-of-candidates the
//! same way: until its outcome, [`EXTERNAL_SETTLE`] at most.
//!
//! [`SessionConfig::port_mapping`]: super::SessionConfig::port_mapping
//! [`SessionConfig::external_port_mapping`]: super::SessionConfig::external_port_mapping

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2p_ice::Candidate;
use p2p_portmap::{PortMapConfig, PortMapEvent, PortMapOutput, PortMapper};
use p2p_proto::{Datagram, Machine};

use super::{Session, SessionEvent, SessionOutput};

/// How long gathering waits for a mapping sought outside the session:
/// [`PortMapConfig::settle_timeout`]'s default, for the same reason (a
/// router on the LAN answers in milliseconds).
pub(crate) const EXTERNAL_SETTLE: Duration = Duration::from_secs(1);

/// Where a mapping sought outside the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum External {
    /// None is sought, or its outcome came (or the wait ran out).
    Settled,
    /// Sought; the session has not started.
    Sought,
    /// Sought; gathering waits until then.
    Until(Instant),
}

impl External {
    pub(super) fn new(sought: bool) -> External {
        if sought {
            External::Sought
        } else {
            External::Settled
        }
    }
}

/// One mapper per (host socket, router) pair asked for.
pub(super) fn mappers(asked: &[(SocketAddr, IpAddr)], seed: Option<u64>) -> Vec<PortMapper> {
    asked
        .iter()
        .enumerate()
        .map(|(i, (host, gw))| {
            let mut c = PortMapConfig::new(*gw, *host);
            c.rng_seed = seed.map(|s| s.wrapping_add(0x9a7 + i as u64));
            PortMapper::new(c)
        })
        .collect()
}

impl Session {
    /// A port mapping made outside the session (UPnP IGD, by the driver):
    /// the router at `gateway` forwards `external` to our socket
    /// `internal`; offered as a server-reflexive candidate like a PCP one.
    /// Whoever made it deletes it. Ignored under a relay-only policy or
    /// once closing; after end-of-candidates it cannot be offered (RFC
    /// 8838) and is reported as [`SessionEvent::PortMapFailed`] instead.
    pub fn add_port_mapping(
        &mut self,
        now: Instant,
        internal: SocketAddr,
        external: SocketAddr,
        gateway: IpAddr,
    ) {
        if self.close_asked || self.closing.is_some() {
            return;
        }
        self.external = External::Settled;
        if self.gathering_ended {
            self.event(SessionEvent::PortMapFailed {
                gateway,
                reason: too_late(internal, external),
            });
            self.pump(now);
            return;
        }
        let c = Candidate::server_reflexive(external, internal, gateway);
        if let Err(p2p_ice::IceError::ExcludedByPolicy) = self.agent.add_local_candidate(now, c) {
            return;
        }
        self.event(SessionEvent::PortMapped { internal, external });
        self.pump(now);
    }

    /// The mapping sought outside the session
    /// ([`SessionConfig::external_port_mapping`]) will not come (no
    /// gateway, refused, or one PCP already made): gathering stops
    /// waiting for it.
    ///
    /// [`SessionConfig::external_port_mapping`]: super::SessionConfig::external_port_mapping
    pub fn no_port_mapping(&mut self, now: Instant) {
        if self.external != External::Settled {
            self.external = External::Settled;
            if self.started {
                self.pump(now);
            }
        }
    }

    /// The external address a PCP or NAT-PMP mapping of `internal` holds.
    pub fn port_mapping(&self, internal: SocketAddr) -> Option<SocketAddr> {
        self.mappers
            .iter()
            .filter_map(|m| m.mapping())
            .find(|m| m.internal == internal)
            .map(|m| m.external)
    }

    /// Hand a datagram from the gateway's port 5351 to its mapper.
    pub(super) fn portmap_input(&mut self, now: Instant, d: Datagram<'_>) -> bool {
        for m in &mut self.mappers {
            if m.handle_input(now, d).is_taken() {
                return true;
            }
        }
        false
    }

    /// Start the mappers, or run their timers.
    pub(super) fn portmap_timeout(&mut self, now: Instant) {
        for m in &mut self.mappers {
            m.handle_timeout(now);
        }
        self.external = match self.external {
            External::Sought => External::Until(now + EXTERNAL_SETTLE),
            External::Until(t) if now >= t => External::Settled,
            e => e,
        };
    }

    /// Their next timer.
    pub(super) fn portmap_poll_timeout(&self) -> Option<Instant> {
        let external = match self.external {
            External::Until(t) => Some(t),
            _ => None,
        };
        self.mappers
            .iter()
            .filter_map(|m| m.poll_timeout())
            .chain(external)
            .min()
    }

    /// Every mapper holds a mapping or gave up, and a mapping sought
    /// outside came or is no longer waited for (gathering may end).
    pub(super) fn portmap_settled(&self, now: Instant) -> bool {
        let external = match self.external {
            External::Settled => true,
            External::Sought => false,
            External::Until(t) => now >= t,
        };
        external && self.mappers.iter().all(|m| m.is_settled())
    }

    /// Every mapping is deleted (or there was none).
    pub(super) fn portmap_closed(&self) -> bool {
        self.mappers.iter().all(|m| m.is_closed())
    }

    /// Delete the mappings (closing).
    pub(super) fn portmap_close(&mut self, now: Instant) {
        for m in &mut self.mappers {
            m.close(now);
        }
    }

    /// Requests out; a granted mapping becomes a server-reflexive
    /// candidate. Whether anything moved.
    pub(super) fn drain_portmap(&mut self, now: Instant) -> bool {
        let mut moved = false;
        for i in 0..self.mappers.len() {
            while let Some(o) = self.mappers[i].poll_output() {
                moved = true;
                match o {
                    PortMapOutput::Transmit(t) => self.out.push_back(SessionOutput::Transmit(t)),
                    // Too late to offer: not kept either (an open port
                    // nobody is told of).
                    PortMapOutput::Event(PortMapEvent::Mapped(m)) if self.gathering_ended => {
                        self.mappers[i].close(now);
                        self.event(SessionEvent::PortMapFailed {
                            gateway: self.mappers[i].config().gateway.ip(),
                            reason: format!("{}: deleted", too_late(m.internal, m.external)),
                        });
                    }
                    PortMapOutput::Event(e) => {
                        let gateway = self.mappers[i].config().gateway.ip();
                        self.portmap_event(now, gateway, e);
                    }
                    _ => {}
                }
            }
        }
        moved
    }

    fn portmap_event(&mut self, now: Instant, gateway: IpAddr, e: PortMapEvent) {
        match e {
            PortMapEvent::Mapped(m) => {
                if self.closing.is_none() && !self.close_asked {
                    // Redundant when the NAT's own mapping of the socket
                    // is the same address (the STUN server found it too).
                    let c = Candidate::server_reflexive(m.external, m.internal, gateway);
                    let _ = self.agent.add_local_candidate(now, c);
                }
                self.event(SessionEvent::PortMapped {
                    internal: m.internal,
                    external: m.external,
                });
            }
            PortMapEvent::Failed(why) => self.event(SessionEvent::PortMapFailed {
                gateway,
                reason: why.to_string(),
            }),
            PortMapEvent::Lost => self.event(SessionEvent::PortMapFailed {
                gateway,
                reason: "the mapping could not be renewed and expired".into(),
            }),
            _ => {}
        }
    }
}

/// Why a mapping made after end-of-candidates is not offered.
fn too_late(internal: SocketAddr, external: SocketAddr) -> String {
    format!(
        "the router mapped {external} to {internal} after the end of candidates, too late to offer (RFC 8838)"
    )
}
