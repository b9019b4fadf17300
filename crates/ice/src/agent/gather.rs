//! Gathering: server-reflexive candidates from STUN servers and the end of
//! local gathering.

use std::net::SocketAddr;
use std::time::Instant;

use p2p_stun::{MessageBuilder, MessageClass, MessageType, Method, TransactionId};

use super::checks::Purpose;
use super::IceAgent;
use crate::candidate::CandidateKind;
use crate::types::IceEvent;

impl IceAgent {
    /// Gather server-reflexive candidates from a STUN server: a Binding
    /// request from every host base of the same family, now and for host
    /// candidates added later. Each answer becomes a local candidate
    /// ([`IceEvent::LocalCandidate`]). The requests go out from `now` on
    /// (once the agent started). Ignored in ICE-lite and relay-only mode.
    pub fn add_stun_server(&mut self, now: Instant, server: SocketAddr) {
        if self.config.lite || self.config.relay_only || self.stun_servers.contains(&server) {
            return;
        }
        self.note_time(now);
        self.stun_servers.push(server);
        for l in &self.locals {
            if l.kind() == CandidateKind::Host && l.base().is_ipv4() == server.is_ipv4() {
                self.pending_gathers.push((l.base(), server));
            }
        }
    }

    /// The caller added all its local candidates. [`IceEvent::GatheringComplete`]
    /// follows once the agent's own server-reflexive requests are done.
    pub fn end_of_local_candidates(&mut self) {
        self.local_eoc = true;
        self.check_gathering_complete();
        self.update_state();
    }

    /// More local candidates are coming after all: undo
    /// [`end_of_local_candidates`](IceAgent::end_of_local_candidates) so that
    /// [`IceEvent::GatheringComplete`] waits for the next call. For a caller
    /// that gathers again after a [`restart`](IceAgent::restart) (TURN
    /// allocations renewed or re-created).
    pub fn expect_more_local_candidates(&mut self) {
        self.local_eoc = false;
        self.gathering_complete_sent = false;
    }
    // ------------------------------------------------------------ gathering

    pub(super) fn start_gathers(&mut self, now: Instant) {
        for (base, server) in std::mem::take(&mut self.pending_gathers) {
            let tid = TransactionId::random(&mut self.rng);
            let mut buf = Vec::with_capacity(28);
            let Ok(mut b) = MessageBuilder::new(
                &mut buf,
                MessageType::new(Method::BINDING, MessageClass::Request),
                tid,
            ) else {
                continue;
            };
            if b.add_fingerprint().is_err() {
                continue;
            }
            b.finish();
            let route = (p2p_proto::Transport::Udp, base, server);
            self.start_request(now, tid, buf, route, Purpose::Gather { server });
        }
    }

    pub(super) fn check_gathering_complete(&mut self) {
        if self.local_eoc
            && !self.gathering_complete_sent
            && self.pending_gathers.is_empty()
            && !self
                .requests
                .iter()
                .any(|t| matches!(t.purpose, Purpose::Gather { .. }))
        {
            self.gathering_complete_sent = true;
            self.emit(IceEvent::GatheringComplete);
        }
    }
}
