//! Hard-NAT signaling (issue 14): our NAT's mapping behaviour goes to the
//! peer, and the peer's to the session, only when both descriptions
//! announce [`crate::HARD_NAT_OPTION`].
//!
//! The behaviour travels as an RFC 8839 candidate extension attribute,
//! `p2pnat eim`, `p2pnat edm`, `p2pnat edm-seq` or `p2pnat edm-pres` (the
//! port pattern of an endpoint-dependent NAT), on a trickled `candidate` message that
//! repeats our server-reflexive candidate of the socket it was learnt on
//! (its address is where the hard side sends, or the IP the easy side
//! probes). Receivers must ignore extension attributes they do not know
//! (RFC 8839 §5.1), and a candidate they already have is redundant; but it
//! is sent only to a peer that announced the token, so a browser or
//! another stack never sees it. A port prediction travels the same way:
//! a server-reflexive candidate at the predicted address with `p2pnat
//! predict`, which the receiver does not give its ICE agent as a
//! candidate (the session pairs it with its own fresh socket only).

use std::time::Instant;

use p2p_ice::{Candidate, CandidateKind};

use super::{Negotiation, Trickle};
use crate::session::NatReport;

/// The extension attribute's name.
pub(super) const NAT_EXTENSION: &str = "p2pnat";

/// Our report, held until the token is agreed and our description is out.
#[derive(Debug, Default)]
pub(super) struct NatSignal {
    ours: Option<NatReport>,
    sent: bool,
    /// Our port prediction, held like the report.
    predicted: Option<(std::net::SocketAddr, bool)>,
}

impl Negotiation {
    /// The session learnt our mapping behaviour.
    pub(super) fn nat_learnt(&mut self, report: NatReport) {
        self.nat.ours = Some(report);
        self.nat_flush();
    }

    /// Send our report when both allow it (once per ICE generation).
    pub(super) fn nat_flush(&mut self) {
        if !self.hard_nat_agreed || self.nat.sent {
            return;
        }
        let Some(r) = self.nat.ours else {
            return;
        };
        let c = self
            .session
            .agent()
            .local_candidates()
            .iter()
            .find(|c| {
                c.kind() == CandidateKind::ServerReflexive
                    && c.address() == r.mapped
                    && c.base() == r.local
            })
            .cloned()
            .unwrap_or_else(|| Candidate::server_reflexive(r.mapped, r.local, r.mapped.ip()));
        let line = format!("{} {NAT_EXTENSION} {}", self.signalled_line(&c), r.token());
        let ufrag = self.session.local_credentials().0.to_owned();
        self.trickle.push(Trickle::Candidate { line, ufrag });
        self.nat.sent = true;
        self.prediction_flush();
    }

    /// The session predicted our fresh socket's mapping.
    pub(super) fn nat_predicted(&mut self, at: std::net::SocketAddr) {
        self.nat.predicted = Some((at, false));
        self.prediction_flush();
    }

    fn prediction_flush(&mut self) {
        let (Some((at, false)), Some(r)) = (self.nat.predicted, self.nat.ours) else {
            return;
        };
        if !self.hard_nat_agreed {
            return;
        }
        let c = Candidate::server_reflexive(at, r.local, at.ip());
        let line = format!("{} {NAT_EXTENSION} predict", self.signalled_line(&c));
        let ufrag = self.session.local_credentials().0.to_owned();
        self.trickle.push(Trickle::Candidate { line, ufrag });
        self.nat.predicted = Some((at, true));
    }

    /// A candidate of the peer that carries its mapping behaviour or a
    /// port prediction: given to the session when the token is agreed
    /// (ignored otherwise). True when it is a prediction, not a candidate.
    pub(super) fn nat_candidate(&mut self, now: Instant, sdp: &p2p_sdp::Candidate) -> bool {
        let Some(value) = sdp
            .extensions()
            .iter()
            .find(|e| e.name() == NAT_EXTENSION)
            .and_then(|e| match e {
                p2p_sdp::Extension::Other { value, .. } => Some(value.as_str()),
                _ => None,
            })
        else {
            return false;
        };
        let Some(ip) = sdp.address().ip() else {
            return false;
        };
        let mapped = std::net::SocketAddr::new(ip, sdp.port());
        if value == "predict" {
            if self.hard_nat_agreed {
                self.session.set_peer_prediction(now, mapped);
            }
            return true;
        }
        let Some((mapping, ports)) = NatReport::parse_token(value) else {
            return false;
        };
        if !self.hard_nat_agreed {
            return false;
        }
        let local = sdp
            .related()
            .and_then(|(a, p)| a.ip().map(|ip| std::net::SocketAddr::new(ip, p)))
            .unwrap_or(mapped);
        self.session.set_peer_nat(
            now,
            NatReport::new(mapping, local, mapped).with_ports(ports),
        );
        false
    }
}
