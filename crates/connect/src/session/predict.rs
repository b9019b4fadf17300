//! Port prediction (issue 14): both peers behind endpoint-dependent NATs
//! whose ports can be foretold (a socket's first mapping keeps its port,
//! or each new mapping takes the next port). Each asks for one fresh
//! socket and predicts the external address of its first mapping towards
//! the peer: the socket's own port on a preserving NAT, or one past the
//! port a Binding request from it to the server's second address just got
//! on a sequential one. The prediction goes to the peer
//! ([`SessionEvent::PortPrediction`]); with both, each hands ICE the pair
//! (fresh socket, peer's prediction): the first check of each side opens
//! exactly the mapping the other's check needs, and ICE's retransmission
//! gets through.
//!
//! It fails when other traffic takes a port in between (a busy NAT), and
//! against random ports: then the relay stays, as before.

use std::net::SocketAddr;
use std::time::Instant;

use super::hardnat::{HardNatEvent, Phase, PortPattern};
use super::{Session, SessionEvent};

impl Session {
    /// The peer's predicted address ([`SessionEvent::PortPrediction`] on
    /// its side), signalled like its mapping behaviour: only when both
    /// peers announced the hard-NAT ICE option token.
    pub fn set_peer_prediction(&mut self, now: Instant, predicted: SocketAddr) {
        if !self.hardnat.enabled {
            return;
        }
        self.hardnat.peer_predicted = Some(predicted);
        self.predicted_pair(now);
        self.pump(now);
    }

    /// Our fresh socket is bound: predict its first mapping.
    pub(super) fn start_prediction(&mut self, now: Instant, sockets: Vec<SocketAddr>) {
        let mut sockets = sockets.into_iter();
        let (Some(q), Some(ours)) = (sockets.next(), self.hardnat.ours) else {
            self.hardnat.phase = Phase::Done;
            return;
        };
        let extra: Vec<SocketAddr> = sockets.collect();
        if !extra.is_empty() {
            self.out
                .push_back(super::SessionOutput::Sockets(super::ProbeSockets::Close(
                    extra,
                )));
        }
        self.hardnat.phase = Phase::Predicting(q);
        match (ours.ports, self.hardnat.second) {
            (PortPattern::Preserving, _) => {
                self.predicted(now, SocketAddr::new(ours.mapped.ip(), q.port()));
            }
            // Where the next port is: ask from the fresh socket to an
            // address it never sent to.
            (PortPattern::Sequential, Some(to)) => self.ask_mapping(now, q, to, true, 0),
            _ => self.hardnat.phase = Phase::Done,
        }
    }

    /// The fresh socket's Binding answer: the next mapping is one port on.
    pub(super) fn measured(&mut self, now: Instant, mapped: SocketAddr) {
        let Some(port) = mapped.port().checked_add(1) else {
            self.hardnat.phase = Phase::Done;
            return;
        };
        self.predicted(now, SocketAddr::new(mapped.ip(), port));
    }

    fn predicted(&mut self, now: Instant, at: SocketAddr) {
        self.hardnat.predicted = Some(at);
        self.event(SessionEvent::PortPrediction(at));
        self.predicted_pair(now);
    }

    /// Both predictions known: the pair goes to ICE.
    fn predicted_pair(&mut self, now: Instant) {
        let Phase::Predicting(q) = self.hardnat.phase else {
            return;
        };
        let (Some(_), Some(remote)) = (self.hardnat.predicted, self.hardnat.peer_predicted) else {
            return;
        };
        self.hardnat.phase = Phase::Done;
        if let Err(e) = self.agent.add_discovered_pair(now, q, remote) {
            tracing::debug!("predicted path {q} -> {remote}: {e}");
            return;
        }
        self.event(SessionEvent::HardNat(HardNatEvent::Predicted {
            local: q,
            remote,
        }));
    }
}
