//! The peer's candidates: trickled, or in its description, parsed once by
//! p2p-sdp and handed to the session; those whose address is an mDNS name
//! (a browser's host candidates, `<uuid>.local`) wait for the name to
//! resolve, and the peer's end-of-candidates waits for them.

use std::collections::VecDeque;
use std::time::Instant;

use p2p_ice::{Candidate, CandidateError};
use p2p_proto::{Datagram, Handled, Machine};
use p2p_signaling::IceCandidate;

use super::sdp::RemoteDescription;
use super::{Negotiation, NegotiationOutput};
use crate::mdns::{normalize, MdnsEvent, MdnsOutput, MdnsResolver, MdnsResponder};

/// A candidate whose address is a name being resolved.
#[derive(Debug)]
pub(super) struct Unresolved {
    /// The name, normalized.
    name: String,
    candidate: p2p_sdp::Candidate,
}

impl Negotiation {
    pub(super) fn add_candidate(&mut self, now: Instant, c: &IceCandidate) {
        if let (Some(tag), Some(current)) = (&c.username_fragment, &self.remote_ufrag) {
            if tag != current {
                return; // an older generation
            }
        }
        // The one parse of the line: p2p-sdp's grammar.
        match p2p_sdp::Candidate::parse(&c.candidate) {
            Ok(sdp) => self.add_sdp_candidate(now, &sdp),
            Err(e) => tracing::debug!("remote candidate {:?}: {e}", c.candidate),
        }
    }

    /// A remote candidate as p2p-sdp parsed it (trickled, or in the peer's
    /// description), handed to the session typed; one whose address is an
    /// mDNS name waits for it to resolve (without a resolver it is left
    /// out: the peer's other candidates, and its checks, still work).
    pub(super) fn add_sdp_candidate(&mut self, now: Instant, sdp: &p2p_sdp::Candidate) {
        // The peer's mapping behaviour rides on a candidate (hardnat.rs);
        // a port prediction is not a candidate.
        if self.nat_candidate(now, sdp) {
            return;
        }
        match Candidate::from_sdp(sdp) {
            Ok(c) => {
                if let Err(e) = self.session.add_remote_candidate(now, c) {
                    tracing::debug!("remote candidate {sdp}: {e}");
                }
            }
            Err(CandidateError::MdnsName(name)) => self.resolve(now, sdp, &name),
            Err(e) => tracing::debug!("remote candidate {sdp}: {e}"),
        }
    }

    fn resolve(&mut self, now: Instant, sdp: &p2p_sdp::Candidate, name: &str) {
        let Some(names) = self.names.as_mut() else {
            tracing::debug!("remote candidate {sdp}: skipped (mDNS name {name}, no mDNS socket)");
            return;
        };
        match names.resolve(now, name) {
            Ok(()) => {
                tracing::debug!("remote candidate {sdp}: resolving {name}");
                self.unresolved.push(Unresolved {
                    name: normalize(name),
                    candidate: sdp.clone(),
                });
            }
            Err(e) => tracing::debug!("remote candidate {sdp}: {e}"),
        }
    }

    pub(super) fn description_candidates(&mut self, now: Instant, d: &RemoteDescription) {
        let Some(dc) = d.sd.data_channel() else {
            return;
        };
        for c in dc.candidates() {
            self.add_sdp_candidate(now, c);
        }
        if dc.end_of_candidates() {
            self.remote_end(now);
        }
    }

    /// The peer signalled end-of-candidates: passed on to the session once
    /// no candidate of the peer waits for its name (the agent refuses
    /// candidates after it, and would fail with pairs still to come).
    pub(super) fn remote_end(&mut self, now: Instant) {
        if self.unresolved.is_empty() {
            self.end_held = false;
            self.session.end_of_remote_candidates(now);
        } else {
            self.end_held = true;
        }
    }

    /// An ICE restart: the waiting candidates are of the old generation.
    pub(super) fn forget_unresolved(&mut self) {
        self.unresolved.clear();
        self.end_held = false;
    }

    /// A datagram for the mDNS socket: a query for one of our names goes
    /// to the responder (its answer out at once), anything else to the
    /// resolver.
    pub(super) fn names_input(&mut self, now: Instant, d: &Datagram<'_>) -> Handled {
        names_input(&mut self.hider, &mut self.names, &mut self.out, now, d)
    }

    /// The `candidate:` value we signal for `c`: as p2p-sdp writes it, or
    /// with a host address behind its generated name and any related
    /// address as `0.0.0.0` when our addresses are hidden.
    pub(super) fn signalled_line(&mut self, c: &p2p_ice::Candidate) -> String {
        let line = c.to_string();
        let Some(hider) = self.hider.as_mut() else {
            return line;
        };
        let name = match c.kind() {
            p2p_ice::CandidateKind::Host => hider.name_for(c.address().ip()),
            _ => c.address().ip().to_string(),
        };
        crate::mdns::hide_address(&line, &name)
    }

    /// The resolver's time (its first call starts it).
    pub(super) fn names_timeout(&mut self, now: Instant) {
        if let Some(names) = self.names.as_mut() {
            names.handle_timeout(now);
        }
    }

    /// The resolver's queries go out; resolved names become candidates.
    /// Returns whether the session was given something.
    pub(super) fn pump_names(&mut self, now: Instant) -> bool {
        let mut gave = false;
        while let Some(o) = self.names.as_mut().and_then(Machine::poll_output) {
            match o {
                MdnsOutput::Transmit(t) => self.out.push_back(NegotiationOutput::Transmit(t)),
                MdnsOutput::Event(MdnsEvent::Resolved { name, addresses }) => {
                    tracing::debug!("mDNS: {name} is {addresses:?}");
                    gave |= self.resolved(now, &name, &addresses);
                }
                MdnsOutput::Event(MdnsEvent::Unresolved { name }) => {
                    tracing::debug!("mDNS: {name} did not resolve; its candidates are left out");
                    self.unresolved.retain(|u| u.name != name);
                }
            }
        }
        if self.end_held && self.unresolved.is_empty() {
            self.remote_end(now);
            gave = true;
        }
        gave
    }

    /// Every candidate waiting for `name`, once per address it resolved to.
    fn resolved(&mut self, now: Instant, name: &str, addresses: &[std::net::IpAddr]) -> bool {
        let (ready, waiting): (Vec<Unresolved>, Vec<Unresolved>) =
            std::mem::take(&mut self.unresolved)
                .into_iter()
                .partition(|u| u.name == name);
        self.unresolved = waiting;
        for u in &ready {
            for ip in addresses {
                match Candidate::from_sdp_resolved(&u.candidate, *ip) {
                    Ok(c) => {
                        if let Err(e) = self.session.add_remote_candidate(now, c) {
                            tracing::debug!("remote candidate {}: {e}", u.candidate);
                        }
                    }
                    Err(e) => tracing::debug!("remote candidate {}: {e}", u.candidate),
                }
            }
        }
        !ready.is_empty()
    }
}

/// An mDNS datagram for the negotiation: a question for our hidden names
/// (answered into `out`) or an answer to our own questions. Fields, not
/// `&mut Negotiation`, so that a batch can be filtered on its way to the
/// session without collecting it.
pub(super) fn names_input(
    hider: &mut Option<MdnsResponder>,
    names: &mut Option<MdnsResolver>,
    out: &mut VecDeque<NegotiationOutput>,
    now: Instant,
    d: &Datagram<'_>,
) -> Handled {
    if let Some(hider) = hider.as_mut() {
        if hider.handle_input(now, *d).is_taken() {
            tracing::debug!("mDNS: answered {} for our name", d.source);
            while let Some(t) = hider.poll_output().and_then(MdnsOutput::transmit) {
                out.push_back(NegotiationOutput::Transmit(t));
            }
            return Handled::Taken;
        }
    }
    match names.as_mut() {
        Some(names) => names.handle_input(now, *d),
        None => Handled::NotMine,
    }
}
