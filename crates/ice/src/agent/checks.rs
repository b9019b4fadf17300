//! Connectivity checks (RFC 8445 §7): ours out (requests and their
//! transactions), the peer's in (authentication, role conflicts, peer-reflexive
//! candidates, triggered checks) and our answers, and the answers to ours.

use std::net::SocketAddr;
use std::time::Instant;

use p2p_proto::{Datagram, Transmit, Transport};
use p2p_stun::attr::{
    ErrorCode, IceControlled, IceControlling, MappedAddress, Priority, UseCandidate, Username,
    XorMappedAddress,
};
use p2p_stun::{
    AttrType, ClientTransaction, Key, Message, MessageBuilder, MessageClass, MessageType, Method,
    TransactionId, TransactionOutcome,
};

use super::IceAgent;
use crate::candidate::{candidate_priority, Candidate, CandidateKind, TcpType};
use crate::pair::PairState;
use crate::types::{Credentials, IceOutput, IceRole};

/// How many finished transaction ids are remembered, so that late duplicate
/// responses are still recognised as the agent's.
const RECENT_TIDS: usize = 64;

/// Most peer-reflexive remote candidates learnt on one local candidate from
/// one remote IP. Beyond it a check from yet another port of that IP is
/// answered but teaches nothing and triggers nothing. Two
/// address-and-port-dependent NATs would otherwise feed each other a new
/// port with every triggered check, for ever, growing the check list without
/// bound (libnice caps remote candidates in the same spirit).
const MAX_PRFLX_PER_IP: usize = 8;

/// What a request of ours is for, and what its answer is checked with.
#[derive(Debug)]
pub(super) enum Purpose {
    Check {
        pair: usize,
        use_candidate: bool,
        /// The role the request was sent in.
        controlling: bool,
        /// The PRIORITY sent, the priority of a local prflx learnt from the answer.
        prflx_priority: u32,
        key: Key,
    },
    Consent {
        key: Key,
    },
    Gather {
        server: SocketAddr,
    },
}

/// A request of ours (a check, a consent check or a gathering Binding
/// request) and its retransmission timers, until it is answered or times
/// out.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) tid: TransactionId,
    pub(super) transaction: ClientTransaction,
    pub(super) source: SocketAddr,
    pub(super) destination: SocketAddr,
    /// UDP, or TCP on an ICE-TCP pair (the caller's connection carries it).
    pub(super) transport: Transport,
    pub(super) purpose: Purpose,
    /// A newer check replaced it: no retransmissions, no failure on timeout,
    /// but an answer still counts (RFC 8445 §7.3.1.4).
    pub(super) cancelled: bool,
    /// When the request first went out.
    pub(super) sent_at: Instant,
}

/// The priority a peer-reflexive candidate learnt from a check sent from
/// `local` gets: type preference 110 (80 over TCP) with `local`'s local
/// preference.
pub(super) fn prflx_priority(local: &Candidate) -> u32 {
    let local_pref = ((local.priority() >> 8) & 0xFFFF) as u16;
    let kind = CandidateKind::PeerReflexive;
    let type_pref = match local.transport() {
        Transport::Tcp => kind.tcp_type_preference(),
        _ => kind.type_preference(),
    };
    candidate_priority(type_pref, local_pref, local.component())
}

/// The TCP type of a peer-reflexive remote candidate learnt on a local
/// candidate of type `local` (RFC 6544 §7.2.1: the other end of the
/// connection).
fn opposite(local: TcpType) -> TcpType {
    match local {
        TcpType::Active => TcpType::Passive,
        TcpType::Passive => TcpType::Active,
        other => other,
    }
}

impl IceAgent {
    pub(super) fn build_request(
        &self,
        tid: TransactionId,
        priority: u32,
        use_candidate: bool,
        remote: &Credentials,
        key: &Key,
    ) -> Option<Vec<u8>> {
        let mut buf = Vec::with_capacity(128);
        let username = format!("{}:{}", remote.ufrag, self.local_creds.ufrag);
        let mut b = MessageBuilder::new(
            &mut buf,
            MessageType::new(Method::BINDING, MessageClass::Request),
            tid,
        )
        .ok()?;
        b.add(&Username::new(&username).ok()?).ok()?;
        b.add(&Priority(priority)).ok()?;
        match self.role {
            IceRole::Controlling => b.add(&IceControlling(self.tie_breaker)).ok()?,
            IceRole::Controlled => b.add(&IceControlled(self.tie_breaker)).ok()?,
        };
        if use_candidate {
            b.add(&UseCandidate).ok()?;
        }
        b.add_message_integrity(key).ok()?;
        b.add_fingerprint().ok()?;
        b.finish();
        Some(buf)
    }

    /// Start a transaction and hand out its first transmission.
    pub(super) fn start_request(
        &mut self,
        now: Instant,
        tid: TransactionId,
        request: Vec<u8>,
        (transport, source, destination): (Transport, SocketAddr, SocketAddr),
        purpose: Purpose,
    ) {
        let mut config = match purpose {
            Purpose::Gather { .. } => self.config.gather_retransmits,
            Purpose::Check { .. } | Purpose::Consent { .. } => self.config.check_retransmits,
        };
        // A gathering request over TCP is sent once (RFC 8489 §6.2.2), and
        // given up soon: see gather::TCP_GATHER_TIMEOUT.
        let reliable = matches!(purpose, Purpose::Gather { .. }) && transport != Transport::Udp;
        if reliable {
            config.reliable_timeout = super::gather::TCP_GATHER_TIMEOUT;
        }
        let mut transaction = ClientTransaction::new(now, tid, request, reliable, config);
        transaction.handle_timeout(now);
        if let Some(bytes) = transaction.poll_transmit() {
            self.transmit(Transmit::new(transport, source, destination, bytes));
        }
        self.requests.push(Request {
            tid,
            transaction,
            source,
            destination,
            transport,
            purpose,
            cancelled: false,
            sent_at: now,
        });
    }

    pub(super) fn send_check(&mut self, now: Instant, p: usize, nominate: bool) {
        let Some((remote_creds, key)) = self.remote_creds.clone() else {
            return;
        };
        let controlling = self.role == IceRole::Controlling;
        let use_candidate =
            controlling && (nominate || self.config.aggressive_nomination || self.optimistic(p));
        let (li, ri) = (self.pairs[p].local, self.pairs[p].remote);
        let priority = prflx_priority(&self.locals[li]);
        let tid = TransactionId::random(&mut self.rng);
        let Some(request) = self.build_request(tid, priority, use_candidate, &remote_creds, &key)
        else {
            self.pairs[p].state = PairState::Failed;
            return;
        };
        for t in &mut self.requests {
            if matches!(t.purpose, Purpose::Check { pair, .. } if pair == p) {
                t.cancelled = true;
            }
        }
        let (source, destination) = (self.locals[li].base(), self.remotes[ri].address());
        let transport = self.locals[li].transport();
        let pair = &mut self.pairs[p];
        if pair.state != PairState::Succeeded {
            pair.state = PairState::InProgress;
        }
        pair.checks_sent += 1;
        pair.first_check_at.get_or_insert(now);
        self.last_check_at = Some(now);
        self.checking_since.get_or_insert(now);
        let purpose = Purpose::Check {
            pair: p,
            use_candidate,
            controlling,
            prflx_priority: priority,
            key,
        };
        self.start_request(now, tid, request, (transport, source, destination), purpose);
    }

    /// Optimistic nomination ([`IceConfig::optimistic_nomination`]): the
    /// first check of pair `p` carries USE-CANDIDATE when no pair is valid
    /// or selected yet and no other pair that may still succeed has a
    /// higher priority.
    fn optimistic(&self, p: usize) -> bool {
        self.config.optimistic_nomination
            && self.pairs[p].checks_sent == 0
            && self.first_valid_at.is_none()
            && self.selected.as_ref().and_then(|s| s.pair).is_none()
            && !self.pairs.iter().enumerate().any(|(q, o)| {
                q != p && o.priority > self.pairs[p].priority && o.state != PairState::Failed
            })
    }

    fn remember_tid(&mut self, tid: TransactionId) {
        if self.recent_tids.len() >= RECENT_TIDS {
            self.recent_tids.pop_front();
        }
        self.recent_tids.push_back(tid);
    }

    pub(super) fn drive_transactions(&mut self, now: Instant) {
        let mut timed_out = Vec::new();
        for (i, t) in self.requests.iter_mut().enumerate() {
            t.transaction.handle_timeout(now);
            if let Some(bytes) = t.transaction.poll_transmit() {
                if !t.cancelled {
                    // (`self.requests` is borrowed: the queue directly.)
                    let t = Transmit::new(t.transport, t.source, t.destination, bytes);
                    self.outputs.push_back(IceOutput::Transmit(t));
                }
            }
            if t.transaction.outcome() == Some(TransactionOutcome::TimedOut) {
                timed_out.push(i);
            }
        }
        for i in timed_out.into_iter().rev() {
            let t = self.requests.remove(i);
            self.remember_tid(t.tid);
            if let Purpose::Check {
                pair,
                use_candidate,
                ..
            } = t.purpose
            {
                if !t.cancelled {
                    self.check_failed(pair, use_candidate);
                }
            }
        }
    }

    fn check_failed(&mut self, p: usize, was_nomination: bool) {
        let Some(pair) = self.pairs.get_mut(p) else {
            return;
        };
        if pair.state != PairState::Succeeded || was_nomination {
            pair.state = PairState::Failed;
            pair.valid = false;
        }
        if self.nominating == Some(p) {
            self.nominating = None;
        }
    }

    // ------------------------------------------------------------ answering checks

    fn respond(
        &mut self,
        d: &Datagram<'_>,
        tid: TransactionId,
        error: Option<u16>,
        key: Option<&Key>,
    ) {
        let mut buf = Vec::with_capacity(80);
        let typ = MessageType::new(
            Method::BINDING,
            if error.is_some() {
                MessageClass::Error
            } else {
                MessageClass::Success
            },
        );
        let Ok(mut b) = MessageBuilder::new(&mut buf, typ, tid) else {
            return;
        };
        let added = match error {
            Some(code) => match ErrorCode::from_code(code) {
                Some(e) => b.add(&e).is_ok(),
                None => false,
            },
            None => b.add(&XorMappedAddress(d.source)).is_ok(),
        };
        if !added {
            return;
        }
        if let Some(key) = key {
            if b.add_message_integrity(key).is_err() {
                return;
            }
        }
        if b.add_fingerprint().is_err() {
            return;
        }
        b.finish();
        self.transmit(d.reply(buf));
    }

    /// RFC 8445 §7.3: authenticate, resolve role conflicts, answer, learn
    /// peer-reflexive candidates, trigger checks, note nominations.
    pub(super) fn on_request(&mut self, now: Instant, d: &Datagram<'_>, msg: &Message<'_>) {
        let tid = msg.transaction_id();
        // RFC 8489 §9.1.3: no USERNAME or MESSAGE-INTEGRITY is a 400.
        let username = match msg.get::<Username>() {
            Ok(Some(u)) => u.as_str(),
            _ => return self.respond(d, tid, Some(400), None),
        };
        if !msg.has_integrity() {
            return self.respond(d, tid, Some(400), None);
        }
        let Some((ours, _theirs)) = username.split_once(':') else {
            return self.respond(d, tid, Some(400), None);
        };
        let key = if ours == self.local_creds.ufrag {
            self.local_key.clone()
        } else {
            match &self.prev_local {
                Some((c, k)) if c.ufrag == ours => k.clone(),
                _ => return self.respond(d, tid, Some(401), None),
            }
        };
        if msg.verify_integrity(&key).is_err() {
            return self.respond(d, tid, Some(401), None);
        }
        let Ok(Some(Priority(priority))) = msg.get::<Priority>() else {
            return self.respond(d, tid, Some(400), Some(&key));
        };
        let controlling = msg.get::<IceControlling>().ok().flatten();
        let controlled = msg.get::<IceControlled>().ok().flatten();
        if controlling.is_none() && controlled.is_none() {
            return self.respond(d, tid, Some(400), Some(&key));
        }
        let use_candidate = msg.has(AttrType::USE_CANDIDATE);
        // The local candidate the request reached (a host or relayed address).
        let reached = self
            .locals
            .iter()
            .position(|l| {
                l.address() == d.destination
                    && l.transport() == d.transport
                    && matches!(l.kind(), CandidateKind::Host | CandidateKind::Relayed)
            })
            .or_else(|| {
                // A server-reflexive candidate added without its host base.
                (0..self.locals.len()).find(|&i| {
                    self.locals[i].kind() == CandidateKind::ServerReflexive
                        && self.locals[i].base() == d.destination
                        && self.locals[i].transport() == d.transport
                        && self.pairable(i)
                })
            });
        let Some(li) = reached else {
            return;
        };
        // Role conflict (§7.3.1.1).
        match (self.role, controlling, controlled) {
            (IceRole::Controlling, Some(IceControlling(theirs)), _) => {
                if self.tie_breaker >= theirs {
                    return self.respond(d, tid, Some(487), Some(&key));
                }
                self.set_role(IceRole::Controlled);
            }
            (IceRole::Controlled, _, Some(IceControlled(theirs))) => {
                if self.tie_breaker >= theirs && !self.config.lite {
                    self.set_role(IceRole::Controlling);
                } else {
                    return self.respond(d, tid, Some(487), Some(&key));
                }
            }
            _ => {}
        }
        self.respond(d, tid, None, Some(&key));

        // Remote candidate, peer-reflexive if unknown (§7.3.1.3).
        let known = self
            .remotes
            .iter()
            .position(|r| r.address() == d.source && r.transport() == d.transport);
        let ri = match known {
            Some(ri) => ri,
            // Answered above; nothing more to learn (see MAX_PRFLX_PER_IP).
            None if self.learnt_on(li, d.source) >= MAX_PRFLX_PER_IP => return,
            None => {
                let mut c = Candidate::peer_reflexive(d.source, d.source, priority);
                if let Some(t) = self.locals[li].tcp_type() {
                    c = c.over_tcp(opposite(t));
                }
                self.remote_prflx_count += 1;
                c.set_foundation(format!("prflx{}", self.remote_prflx_count));
                self.remotes.push(c);
                self.remotes.len() - 1
            }
        };
        let p = match self.find_pair(li, ri) {
            Some(p) => p,
            None => self.new_pair(li, ri, PairState::Waiting),
        };
        self.pairs[p].peer_checked = true;
        if self.config.lite {
            if use_candidate {
                let pair = &mut self.pairs[p];
                pair.state = PairState::Succeeded;
                pair.valid = true;
                self.nominate(now, p);
            }
            return;
        }
        // Triggered check (§7.3.1.4).
        match self.pairs[p].state {
            PairState::Succeeded => {}
            PairState::InProgress => {
                if !self.pairs[p].retriggered {
                    self.pairs[p].retriggered = true;
                    self.enqueue_triggered(p, false);
                }
            }
            PairState::Waiting | PairState::Frozen | PairState::Failed => {
                self.pairs[p].state = PairState::Waiting;
                self.enqueue_triggered(p, false);
            }
        }
        // Nomination by the controlling peer (§7.3.1.5).
        if use_candidate && self.role == IceRole::Controlled {
            if self.pairs[p].state == PairState::Succeeded {
                let v = self.pairs[p].valid_pair.unwrap_or(p);
                self.nominate(now, v);
            } else {
                self.pairs[p].nominate_on_success = true;
            }
        }
    }

    /// Peer-reflexive remote candidates learnt on local candidate `li` from
    /// `source`'s IP.
    fn learnt_on(&self, li: usize, source: SocketAddr) -> usize {
        self.pairs
            .iter()
            .filter(|p| {
                let r = &self.remotes[p.remote];
                p.local == li
                    && r.kind() == CandidateKind::PeerReflexive
                    && r.address().ip() == source.ip()
            })
            .count()
    }

    // ------------------------------------------------------------ responses

    /// A response: true when it answered one of the agent's transactions.
    pub(super) fn on_response(
        &mut self,
        now: Instant,
        d: &Datagram<'_>,
        msg: &Message<'_>,
    ) -> bool {
        let tid = msg.transaction_id();
        let Some(i) = self.requests.iter().position(|t| t.tid == tid) else {
            return false;
        };
        let success = msg.typ().class == MessageClass::Success;
        // Authenticate answers to checks: a success must carry a valid
        // MESSAGE-INTEGRITY; an error's integrity is checked when present.
        if let Purpose::Check { key, .. } | Purpose::Consent { key } = &self.requests[i].purpose {
            let ok = if success || msg.has_integrity() {
                msg.verify_integrity(key).is_ok()
            } else {
                true
            };
            if !ok {
                return true;
            }
        }
        let t = self.requests.remove(i);
        self.remember_tid(tid);
        match t.purpose {
            Purpose::Gather { server } => {
                if success {
                    let mapped = match msg.get::<XorMappedAddress>() {
                        Ok(Some(XorMappedAddress(a))) => Some(a),
                        _ => msg.get::<MappedAddress>().ok().flatten().map(|m| m.0),
                    };
                    if let Some(mapped) = mapped {
                        let c = match t.transport {
                            Transport::Udp => {
                                Candidate::server_reflexive(mapped, t.source, server.ip())
                            }
                            _ => Candidate::server_reflexive_tcp(
                                mapped,
                                t.source,
                                server.ip(),
                                TcpType::Passive,
                            ),
                        };
                        // A NAT-less host answers its own address: redundant.
                        if self.add_local_candidate(now, c).is_ok()
                            && !self.gathered.contains(&(mapped, t.source))
                        {
                            self.gathered.push((mapped, t.source));
                        }
                    }
                }
            }
            Purpose::Consent { .. } => {
                if success && d.source == t.destination && d.destination == t.source {
                    self.refresh_consent(now, t.source, t.destination);
                    if let Ok(Some(XorMappedAddress(mapped))) = msg.get::<XorMappedAddress>() {
                        self.on_consent_mapped(mapped);
                    }
                }
            }
            Purpose::Check {
                pair,
                use_candidate,
                controlling,
                prflx_priority,
                ..
            } => {
                let cancelled = t.cancelled;
                self.on_check_response(
                    now,
                    d,
                    msg,
                    &t,
                    CheckInfo {
                        pair,
                        use_candidate,
                        controlling,
                        prflx_priority,
                        cancelled,
                    },
                );
            }
        }
        true
    }

    fn on_check_response(
        &mut self,
        now: Instant,
        d: &Datagram<'_>,
        msg: &Message<'_>,
        t: &Request,
        info: CheckInfo,
    ) {
        let p = info.pair;
        if p >= self.pairs.len() {
            return;
        }
        // Symmetric addresses (§7.2.5.2.1).
        if d.source != t.destination || d.destination != t.source {
            self.check_failed(p, info.use_candidate);
            return;
        }
        if msg.typ().class == MessageClass::Error {
            let code = msg.get::<ErrorCode>().ok().flatten().map(|e| e.code());
            if code == Some(487) {
                // §7.2.5.1: switch role unless we already did (a stale 487),
                // and check the pair again.
                let sent_as = if info.controlling {
                    IceRole::Controlling
                } else {
                    IceRole::Controlled
                };
                if self.role == sent_as {
                    self.set_role(match sent_as {
                        IceRole::Controlling => IceRole::Controlled,
                        IceRole::Controlled => IceRole::Controlling,
                    });
                }
                if self.pairs[p].state != PairState::Succeeded {
                    self.pairs[p].state = PairState::Waiting;
                }
                let renominate = info.use_candidate && self.role == IceRole::Controlling;
                self.enqueue_triggered(p, renominate);
            } else if !info.cancelled {
                self.check_failed(p, info.use_candidate);
            }
            return;
        }
        let Ok(Some(XorMappedAddress(mapped))) = msg.get::<XorMappedAddress>() else {
            self.check_failed(p, info.use_candidate);
            return;
        };
        self.pairs[p].responses += 1;
        // The valid pair (§7.2.5.3.2): the local candidate is the one whose
        // address is the mapped address, else a new peer-reflexive one
        // (§7.2.5.3.1).
        let base = t.source;
        let checked = self.pairs[p].local;
        // Over a connection an active candidate opened, the peer sees the
        // connection's own port: that is the active candidate, not a new one
        // (RFC 6544 §7.2.2).
        let active =
            self.locals[checked].tcp_type() == Some(TcpType::Active) && mapped.ip() == base.ip();
        let found = self.locals.iter().position(|l| {
            l.address() == mapped && l.base() == base && l.transport() == t.transport
        });
        let li = match found {
            Some(li) => li,
            None if active => checked,
            None => {
                let mut c = Candidate::peer_reflexive(mapped, base, info.prflx_priority);
                if let Some(tt) = self.locals[checked].tcp_type() {
                    c = c.over_tcp(tt);
                }
                c.set_foundation(crate::candidate::compute_foundation(
                    CandidateKind::PeerReflexive,
                    base.ip(),
                    None,
                    c.transport(),
                ));
                self.locals.push(c);
                self.locals.len() - 1
            }
        };
        let ri = self.pairs[p].remote;
        let v = match self.find_pair(li, ri) {
            Some(v) => v,
            None => self.new_pair(li, ri, PairState::Succeeded),
        };
        let rtt = now.saturating_duration_since(t.sent_at);
        self.pairs[v].valid = true;
        self.pairs[v].state = PairState::Succeeded;
        self.pairs[v].rtt.get_or_insert(rtt);
        self.pairs[p].state = PairState::Succeeded;
        self.pairs[p].rtt.get_or_insert(rtt);
        self.pairs[p].valid_pair = Some(v);
        self.first_valid_at.get_or_insert(now);
        // Unfreeze the pairs of the same foundation (§7.2.5.3.3).
        let f = {
            let (a, b) = self.foundation_of(p);
            (a.to_string(), b.to_string())
        };
        for q in 0..self.pairs.len() {
            if self.pairs[q].state == PairState::Frozen
                && self.foundation_of(q) == (f.0.as_str(), f.1.as_str())
            {
                self.pairs[q].state = PairState::Waiting;
            }
        }
        self.refresh_consent(now, t.source, t.destination);
        if self.nominating == Some(p) || self.nominating == Some(v) {
            self.nominating = None;
        }
        let controlled_nominated = self.role == IceRole::Controlled
            && (self.pairs[p].nominate_on_success || self.pairs[v].nominate_on_success);
        if (info.use_candidate && info.controlling && self.role == IceRole::Controlling)
            || controlled_nominated
        {
            self.nominate(now, v);
        }
    }
}

/// What a check transaction recorded when it was sent.
struct CheckInfo {
    pub(super) pair: usize,
    pub(super) use_candidate: bool,
    pub(super) controlling: bool,
    pub(super) prflx_priority: u32,
    pub(super) cancelled: bool,
}
