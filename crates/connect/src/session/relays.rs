//! The session's TURN allocations: one [`TurnClient`] per TURN server,
//! relayed candidates in and out of the ICE agent, transmits from a relayed
//! address wrapped for its server, and the probes of an ICE restart.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use p2p_ice::Candidate;
use p2p_proto::{Datagram, Machine, Transmit, Transport};
use p2p_turn::{ClientConfig, ClientEvent, ClientState, TurnClient};

use super::{Session, SessionError, SessionEvent, SessionOutput, TurnServerConfig};

#[derive(Debug)]
pub(super) struct Relay {
    pub(super) config: TurnServerConfig,
    pub(super) local: SocketAddr,
    pub(super) client: TurnClient,
    pub(super) relayed: Option<SocketAddr>,
    /// Left out of the ICE generation a restart began until the restart's
    /// probe shows the allocation alive (see [`Session::restart`]).
    withheld: bool,
    permitted: HashSet<IpAddr>,
    /// Peers the server refused permissions for (403).
    refused: HashSet<IpAddr>,
    pub(super) done: bool,
    /// A restart's re-allocation on behalf of relay `k`: if the server
    /// grants it, relay `k`'s allocation is gone (the NAT mapping changed,
    /// so the server saw a new 5-tuple) and this one replaces it; a 437
    /// (allocation mismatch) says relay `k` is still alive on our 5-tuple.
    probe_for: Option<usize>,
    /// Replaced or given up: not fed, not driven, not demultiplexed to.
    pub(super) retired: bool,
}

impl Relay {
    pub(super) fn new(config: TurnServerConfig, local: SocketAddr, seed: Option<u64>) -> Relay {
        let mut cc = ClientConfig::new(local, config.server, &config.username, &config.password);
        cc.transport = config.transport;
        // ADDITIONAL-ADDRESS-FAMILY asks for IPv6 only (RFC 8656 §7.2).
        cc.dual_stack = config.dual_family && config.server.is_ipv4();
        cc.rng_seed = seed;
        Relay {
            config,
            local,
            client: TurnClient::new(cc),
            relayed: None,
            withheld: false,
            permitted: HashSet::new(),
            refused: HashSet::new(),
            done: false,
            probe_for: None,
            retired: false,
        }
    }

    /// The relayed candidate for one of this allocation's addresses (its
    /// related address is the server-reflexive one the server saw).
    fn candidate(&self, relayed: SocketAddr) -> Candidate {
        let related = self.client.mapped_address().or(Some(self.local));
        Candidate::relayed(relayed, related, self.config.server.ip())
    }

    /// The relayed address of `peer`'s family (a dual-family allocation
    /// has one of each), else the first one.
    fn relayed_for(&self, peer: IpAddr) -> Option<SocketAddr> {
        let all = self.client.relayed_addresses();
        all.iter()
            .find(|a| a.is_ipv4() == peer.is_ipv4())
            .or(all.first())
            .copied()
            .or(self.relayed)
    }

    /// Whether a datagram from the network belongs to this relay's server
    /// connection: same server address, local socket and transport.
    pub(super) fn owns(&self, d: &Datagram<'_>) -> bool {
        !self.retired
            && self.config.server == d.source
            && self.local == d.destination
            && self.config.transport == d.transport
    }
}

impl Session {
    /// A restart checks or makes again every allocation (one still being
    /// made is waited for); returns the relayed candidates to withhold from
    /// the new generation meanwhile, and whether gathering goes on.
    pub(super) fn restart_relays(&mut self, now: Instant) -> (Vec<(SocketAddr, SocketAddr)>, bool) {
        let mut withheld = Vec::new();
        let mut regathering = false;
        for i in 0..self.relays.len() {
            if self.relays[i].retired || self.relays[i].probe_for.is_some() {
                continue;
            }
            let seed = self.next_seed();
            let probing = self
                .relays
                .iter()
                .any(|p| p.probe_for == Some(i) && !p.retired);
            let r = &mut self.relays[i];
            let state = r.client.state();
            if matches!(
                state,
                ClientState::Allocated | ClientState::Failed | ClientState::Closed
            ) {
                regathering = true;
                withheld.extend(
                    r.client
                        .relayed_addresses()
                        .iter()
                        .chain(&r.relayed)
                        .map(|a| (*a, *a)),
                );
            }
            let replacement = match state {
                ClientState::Allocated => {
                    r.withheld = true;
                    (!probing).then(|| {
                        let mut probe = Relay::new(r.config.clone(), r.local, seed);
                        probe.probe_for = Some(i);
                        probe
                    })
                }
                ClientState::Failed | ClientState::Closed => {
                    // Lost or refused before: try again with a new client.
                    r.retired = true;
                    r.done = true;
                    Some(Relay::new(r.config.clone(), r.local, seed))
                }
                _ => {
                    regathering |= !r.done;
                    None
                }
            };
            if let Some(mut relay) = replacement {
                relay.client.handle_timeout(now);
                self.relays.push(relay);
            }
        }
        (withheld, regathering)
    }

    /// The seed of the next TURN client created (by a restart).
    fn next_seed(&self) -> Option<u64> {
        self.rng_seed
            .map(|s| s.wrapping_add(0x1000 + self.relays.len() as u64))
    }

    /// Whether a live TURN client talks to `server` over `transport` (the
    /// driver keeps its TCP/TLS connection open while one does).
    pub fn uses_turn_server(&self, server: SocketAddr, transport: Transport) -> bool {
        self.relays
            .iter()
            .any(|r| !r.retired && r.config.server == server && r.config.transport == transport)
    }

    /// The driver could not open (or lost) its TCP/TLS connection to TURN
    /// server `server` (after a 300 Try Alternate, say): the TURN clients
    /// that talk to it over `transport` fail what they have under way at
    /// once, an Allocate with [`SessionEvent::TurnFailed`] carrying
    /// `reason`, instead of after their reliable-transport timeout
    /// (39.5 s); gathering and ICE go on with the other candidates.
    ///
    /// An allocation made over the connection is gone with it (RFC 6062
    /// and RFC 8656 §3.1: a TCP or TLS allocation lives on its
    /// connection): [`SessionEvent::TurnFailed`] says so, and its relayed
    /// candidates are lost in ICE at once
    /// ([`IceAgent::lose_local_candidate`](p2p_ice::IceAgent::lose_local_candidate)):
    /// a selected pair over them gives way to another nominated pair, or
    /// consent is lost now ([`SessionEvent::ConsentLost`]) rather than
    /// after the consent timeout (30 s).
    pub fn turn_connection_failed(
        &mut self,
        now: Instant,
        server: SocketAddr,
        transport: Transport,
        reason: &str,
    ) {
        let mut lost = Vec::new();
        for i in 0..self.relays.len() {
            let r = &self.relays[i];
            if r.retired || r.config.server != server || r.config.transport != transport {
                continue;
            }
            if self.closing.is_none()
                && r.probe_for.is_none()
                && r.client.state() == ClientState::Allocated
            {
                lost.extend(
                    self.by_relayed
                        .iter()
                        .filter(|(_, j)| **j == i)
                        .map(|(a, _)| *a),
                );
                self.event(SessionEvent::TurnFailed {
                    server,
                    code: None,
                    reason: format!("the allocation is gone: {reason}"),
                });
            }
            self.relays[i].client.connection_failed(reason);
        }
        for a in lost {
            self.agent.lose_local_candidate(now, a, a);
        }
        self.pump(now);
    }

    /// Every live TURN client has no allocation left (deleted, failed, or
    /// never made).
    pub(crate) fn allocations_gone(&self) -> bool {
        self.relays.iter().filter(|r| !r.retired).all(|r| {
            matches!(
                r.client.state(),
                ClientState::Idle | ClientState::Closed | ClientState::Failed
            )
        })
    }

    /// Send a datagram from one of our addresses: directly from a host
    /// base, or wrapped through the TURN client that owns its relayed
    /// source address.
    pub(super) fn route(&mut self, now: Instant, t: Transmit) -> Result<(), SessionError> {
        match self.by_relayed.get(&t.source) {
            None => {
                // A host base: UDP, or TCP on an ICE-TCP pair.
                self.out.push_back(SessionOutput::Transmit(Transmit::new(
                    t.transport,
                    t.source,
                    t.destination,
                    t.contents,
                )));
                Ok(())
            }
            Some(&i) => {
                if self.relays[i].client.channel(t.destination).is_none() {
                    self.permit(now, i, &[t.destination.ip()])?;
                }
                self.relays[i].client.send_to(t.destination, &t.contents)?;
                Ok(())
            }
        }
    }

    /// Ask relay `i` for permissions to the `ips` it has none for yet. (The
    /// TURN client puts each CreatePermission on the wire before data
    /// queued after it, so a check sent right away is not dropped.)
    fn permit(&mut self, now: Instant, i: usize, ips: &[IpAddr]) -> Result<(), SessionError> {
        let r = &mut self.relays[i];
        let new: Vec<IpAddr> = ips
            .iter()
            .copied()
            .filter(|ip| {
                r.client
                    .relayed_addresses()
                    .iter()
                    .any(|a| a.is_ipv4() == ip.is_ipv4())
                    && !r.permitted.contains(ip)
                    && !r.refused.contains(ip)
            })
            .collect();
        // One request per IP: the server refuses a whole request (403)
        // when one of its peers is forbidden (a private address, say).
        for ip in new {
            r.client.create_permission(now, &[ip])?;
            r.permitted.insert(ip);
        }
        Ok(())
    }

    /// Permissions on every allocation for the peer's candidate IPs, asked
    /// as soon as the candidates are known, so that the peer's checks to our
    /// relayed candidates pass the relay even before our own checks go out.
    pub(super) fn permit_remotes(&mut self, now: Instant) {
        let ips: Vec<IpAddr> = self
            .agent
            .remote_candidates()
            .iter()
            .map(|c| c.address().ip())
            .collect();
        for i in 0..self.relays.len() {
            let r = &self.relays[i];
            if r.retired || r.client.state() != ClientState::Allocated {
                continue;
            }
            // A refusal (403 for a peer the server will not relay to) comes
            // back as PermissionFailed and is forgotten there.
            let _ = self.permit(now, i, &ips);
        }
    }

    /// A relayed path carries every datagram: bind a channel so they travel
    /// as ChannelData (4 bytes of overhead, not 36).
    pub(super) fn bind_channel(&mut self, now: Instant, relayed: SocketAddr, peer: SocketAddr) {
        if let Some(&i) = self.by_relayed.get(&relayed) {
            let _ = self.relays[i].client.bind_channel(now, peer);
        }
    }

    /// Retire the agent's relayed candidates of relay `i`.
    fn retire_candidates_of(&mut self, i: usize) {
        let old: Vec<SocketAddr> = self
            .by_relayed
            .iter()
            .filter(|(_, j)| **j == i)
            .map(|(a, _)| *a)
            .collect();
        for a in old {
            self.agent.retire_local_candidate(a, a);
        }
    }

    pub(super) fn turn_event(&mut self, now: Instant, i: usize, e: ClientEvent) {
        let server = self.relays[i].config.server;
        if self.relays[i].retired || self.closing.is_some() {
            // Nothing matters any more: the deletions' outcomes show in the
            // clients' states.
            return;
        }
        if let ClientEvent::Redirected { from, to, domain } = e {
            // 300 Try Alternate: the client now talks to `to`; its
            // datagrams come from there (a restart's probe too: a server
            // that still held our allocation would have said 437, so the
            // probe's allocation on `to` replaces it). A relay that already uses `to`
            // from this socket would share the 5-tuple: this one gives way.
            let (local, transport) = (self.relays[i].local, self.relays[i].config.transport);
            let taken = self.relays.iter().enumerate().any(|(j, r)| {
                j != i
                    && !r.retired
                    && r.config.server == to
                    && r.local == local
                    && r.config.transport == transport
            });
            self.relays[i].config.server = to;
            tracing::info!("TURN server {from} redirected us to {to}");
            if taken {
                self.relays[i].retired = true;
                self.relays[i].done = true;
                return;
            }
            // Before the Allocate for `to` (the client queued it after the
            // event): over TCP/TLS the driver connects there first.
            self.event(SessionEvent::TurnRedirected {
                from,
                to,
                transport,
                domain,
            });
            return;
        }
        if let Some(k) = self.relays[i].probe_for {
            return self.probe_event(now, i, k, e);
        }
        match e {
            ClientEvent::Allocated { relayed, .. } => {
                self.relays[i].done = true;
                for addr in relayed {
                    self.relays[i].relayed.get_or_insert(addr);
                    self.by_relayed.insert(addr, i);
                    self.permit_remotes(now);
                    let c = self.relays[i].candidate(addr);
                    if self.agent.add_local_candidate(now, c).is_ok() {
                        self.event(SessionEvent::TurnAllocated {
                            server,
                            relayed: addr,
                        });
                    }
                }
            }
            ClientEvent::AllocationFailed { code, reason } => {
                let was_allocated = self.relays[i].relayed.is_some();
                self.relays[i].done = true;
                if was_allocated {
                    // A refresh failed: the allocation is lost.
                    self.retire_candidates_of(i);
                } else {
                    self.event(SessionEvent::TurnFailed {
                        server,
                        code,
                        reason,
                    });
                }
            }
            ClientEvent::Data { peer, data } => {
                if let Some(relayed) = self.relays[i].relayed_for(peer.ip()) {
                    self.inner_input(now, Transport::Udp, peer, relayed, &data);
                }
            }
            ClientEvent::PermissionFailed { peers, code } => {
                for p in peers {
                    self.relays[i].permitted.remove(&p);
                    if code == Some(403) {
                        // The server will not relay there: do not ask again.
                        self.relays[i].refused.insert(p);
                    }
                }
            }
            _ => {}
        }
    }

    /// What the probe `i` of relay `k` (a restart's re-allocation) learnt.
    fn probe_event(&mut self, now: Instant, i: usize, k: usize, e: ClientEvent) {
        let server = self.relays[i].config.server;
        match e {
            ClientEvent::Allocated { .. } => {
                // The old allocation is gone: this one replaces it, and the
                // event is handled as that of a relay of its own.
                self.retire_candidates_of(k);
                self.relays[k].retired = true;
                self.relays[k].done = true;
                self.relays[i].probe_for = None;
                self.turn_event(now, i, e);
            }
            ClientEvent::AllocationFailed { code: None, reason } => {
                // No answer: the server (or the way to it) is down, and the
                // old allocation with it as far as we can tell. Its
                // candidate stays withheld.
                self.relays[i].retired = true;
                self.relays[i].done = true;
                self.event(SessionEvent::TurnFailed {
                    server,
                    code: None,
                    reason: format!("{reason} (checking the allocation at a restart)"),
                });
            }
            ClientEvent::AllocationFailed { code: Some(_), .. } => {
                // 437: the old allocation lives on our 5-tuple. Any other
                // refusal (quota, say) still shows the server up: keep the
                // old allocation, offer its candidate again.
                self.relays[i].retired = true;
                self.relays[i].done = true;
                self.offer_again(now, k);
            }
            _ => {}
        }
    }

    /// Relay `k`'s allocation proved alive after a restart withheld its
    /// relayed candidates: add them to the new generation.
    fn offer_again(&mut self, now: Instant, k: usize) {
        let r = &mut self.relays[k];
        if !r.withheld || r.retired || r.client.state() != ClientState::Allocated {
            return;
        }
        r.withheld = false;
        let r = &self.relays[k];
        for a in r.client.relayed_addresses() {
            let _ = self.agent.add_local_candidate(now, r.candidate(*a));
        }
    }
}
