//! Gathering: server-reflexive candidates from STUN servers and the end of
//! local gathering.
//!
//! Over UDP from every host base. Over TCP (RFC 6544 §4.1, §5) from each
//! passive host candidate's own port: the Binding request is a TCP
//! transmit from the listener's address to the server, which the caller
//! sends on a connection it opens from that address (SO_REUSEADDR and
//! SO_REUSEPORT beside the listener); the mapping the server saw is a
//! passive server-reflexive candidate, reachable where the NAT lets
//! connections in to it (a 1:1 NAT, a forwarded port, endpoint-independent
//! filtering as RFC 5382 recommends). Active candidates ask nothing: their
//! port is not meaningful (9), and their pairs are checked from the base
//! anyway (RFC 8445 §6.1.2.4), so a server-reflexive active candidate
//! would add no pair.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_proto::Transport;
use p2p_stun::{MessageBuilder, MessageClass, MessageType, Method, TransactionId};

use super::checks::Purpose;
use super::IceAgent;
use crate::candidate::{Candidate, CandidateKind, TcpType};
use crate::types::IceEvent;

/// How long a Binding request over TCP waits for its answer (sent once,
/// RFC 8489 §6.2.2; far below Ti's 39.5 s so that a server that does not
/// speak STUN over TCP does not hold the end of gathering).
pub(super) const TCP_GATHER_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether a local candidate asks the STUN servers for its mapping: a UDP
/// host, or a passive TCP host.
pub(super) fn asks_stun_servers(c: &Candidate) -> bool {
    c.kind() == CandidateKind::Host
        && (c.transport() == Transport::Udp || c.tcp_type() == Some(TcpType::Passive))
}

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
            if asks_stun_servers(l) && l.base().is_ipv4() == server.is_ipv4() {
                self.pending_gathers.push((l.transport(), l.base(), server));
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
        for (transport, base, server) in std::mem::take(&mut self.pending_gathers) {
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
            let route = (transport, base, server);
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
