//! The negotiation over signaling (offer/answer, trickle, restart, bye) as
//! a sans-IO machine, on the virtual network with a simulated clock: two
//! `Negotiation`s whose signaling messages the harness carries from one to
//! the other (as the server would: `ClientMsg` in, `ServerMsg` out) with a
//! fixed delay, and which it may reorder, hold back or inject.
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_connect::{
    ChannelEvent, ChannelOptions, CloseReason, Failure, IceConfig, Negotiation, NegotiationConfig,
    NegotiationEvent, NegotiationOutput, Session, SessionConfig,
};
use p2p_netsim::{Datagram, HostId, LinkConfig, Node, Realm, Sim, Transmit};
use p2p_proto::Machine;
use p2p_signaling::{ClientMsg, IceCandidate, ServerMsg};

const A_ADDR: &str = "198.51.100.10:5000";
const B_ADDR: &str = "198.51.100.20:6000";
const SIGNALING_DELAY: Duration = Duration::from_millis(50);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// A negotiation on the virtual network; signals go through the harness.
struct PeerNode {
    negotiation: Negotiation,
    /// Signals from the peer and when they are due, sorted.
    inbox: VecDeque<(Instant, ServerMsg)>,
    /// Signals for the peer, taken by the harness after each step.
    outbox: Vec<(Instant, ClientMsg)>,
    /// Every signal it sent, in order.
    sent: Vec<ClientMsg>,
    transmits: VecDeque<Transmit>,
    events: Vec<(Instant, NegotiationEvent)>,
    /// A stateful firewall in front of the node: what it sends to an
    /// address that never sent it anything is dropped (iptables `--state
    /// NEW -j DROP` on its output). `None`: no firewall.
    heard_from: Option<Vec<SocketAddr>>,
}

impl PeerNode {
    fn new(addr: &str, peer: &str, controlling: bool, seed: u64) -> PeerNode {
        PeerNode::with(addr, peer, controlling, seed, false)
    }

    fn with(addr: &str, peer: &str, controlling: bool, seed: u64, reconnect: bool) -> PeerNode {
        let ice = if controlling {
            IceConfig::controlling()
        } else {
            IceConfig::controlled()
        };
        let mut config = SessionConfig::new(ice.with_seed(seed));
        config.hosts = vec![sa(addr)];
        config.rng_seed = Some(seed);
        let session = Session::new(config).expect("a session");
        let mut config = NegotiationConfig::new(peer, controlling);
        config.connect_timeout = CONNECT_TIMEOUT;
        config.reconnect = reconnect;
        config.peer_grace = Duration::from_secs(3);
        PeerNode {
            negotiation: Negotiation::new(config, session),
            inbox: VecDeque::new(),
            outbox: Vec::new(),
            sent: Vec::new(),
            transmits: VecDeque::new(),
            events: Vec::new(),
            heard_from: None,
        }
    }

    /// Like [`PeerNode::new`], with an mDNS socket at `mdns`.
    fn with_mdns(addr: &str, peer: &str, controlling: bool, seed: u64, mdns: &str) -> PeerNode {
        let mut node = PeerNode::new(addr, peer, controlling, seed);
        let ice = if controlling {
            IceConfig::controlling()
        } else {
            IceConfig::controlled()
        };
        let mut config = SessionConfig::new(ice.with_seed(seed));
        config.hosts = vec![sa(addr)];
        config.rng_seed = Some(seed);
        let session = Session::new(config).expect("a session");
        let mut config = NegotiationConfig::new(peer, controlling);
        config.connect_timeout = CONNECT_TIMEOUT;
        config.mdns = Some(sa(mdns));
        node.negotiation = Negotiation::new(config, session);
        node
    }

    fn deliver_at(&mut self, at: Instant, msg: ServerMsg) {
        let pos = self.inbox.partition_point(|(t, _)| *t <= at);
        self.inbox.insert(pos, (at, msg));
    }

    fn drain(&mut self, now: Instant) {
        while let Some(o) = self.negotiation.poll_output() {
            match o {
                NegotiationOutput::Transmit(t) => self.transmits.push_back(t),
                NegotiationOutput::Signal(m) => {
                    self.sent.push(m.clone());
                    self.outbox.push((now, m));
                }
                NegotiationOutput::Event(e) => self.events.push((now, e)),
                other => panic!("unexpected output {other:?}"),
            }
        }
    }

    fn event(&self, f: impl Fn(&NegotiationEvent) -> bool) -> Option<Instant> {
        self.events.iter().find(|(_, e)| f(e)).map(|(t, _)| *t)
    }

    fn connected(&self) -> bool {
        self.event(|e| matches!(e, NegotiationEvent::Connected(_)))
            .is_some()
    }

    fn path_changes(&self) -> usize {
        self.events
            .iter()
            .filter(|(_, e)| matches!(e, NegotiationEvent::PathChanged(_)))
            .count()
    }

    fn ended(&self) -> Option<&NegotiationEvent> {
        self.events
            .iter()
            .map(|(_, e)| e)
            .find(|e| matches!(e, NegotiationEvent::Failed(_) | NegotiationEvent::Closed(_)))
    }
}

impl Node for PeerNode {
    fn handle_input(&mut self, now: Instant, d: Datagram<'_>) {
        if let Some(heard) = &mut self.heard_from {
            heard.push(d.source);
        }
        // The driver's path: datagrams come in batches (here of one).
        self.negotiation.handle_inputs(now, [d]);
        self.drain(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        while self.inbox.front().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, m)) = self.inbox.pop_front() {
                self.negotiation.handle_signal(now, m);
                self.drain(now);
            }
        }
        if self.negotiation.poll_timeout().is_some_and(|t| t <= now) {
            self.negotiation.handle_timeout(now);
            self.drain(now);
        }
    }

    fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        while let Some(t) = self.transmits.pop_front() {
            match &self.heard_from {
                Some(heard) if !heard.contains(&t.destination) => continue,
                _ => return Some(t),
            }
        }
        None
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        [
            self.negotiation.poll_timeout(),
            self.inbox.front().map(|(t, _)| *t),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// What the signaling server relays to the receiver of `msg` from `from`.
fn relayed(from: &str, msg: ClientMsg) -> Option<ServerMsg> {
    let from = from.to_owned();
    Some(match msg {
        ClientMsg::Offer { sdp, .. } => ServerMsg::Offer { from, sdp },
        ClientMsg::Answer { sdp, .. } => ServerMsg::Answer { from, sdp },
        ClientMsg::Candidate { candidate, .. } => ServerMsg::Candidate { from, candidate },
        ClientMsg::EndOfCandidates { .. } => ServerMsg::EndOfCandidates { from },
        ClientMsg::IceRestart { ufrag, pwd, .. } => ServerMsg::IceRestart { from, ufrag, pwd },
        ClientMsg::Bye { .. } => ServerMsg::Bye { from },
        _ => return None,
    })
}

/// Two peers on the public network (no NAT): `a` joined second, so it
/// offers and controls.
struct Pair {
    sim: Sim,
    a: HostId,
    b: HostId,
    /// Extra delay for signals of these types from A (`true`) or B.
    hold: Vec<(bool, &'static str, Duration)>,
    /// Signals to A are lost (its signaling connection is down).
    a_down: bool,
    /// B's candidates reach A with B's address replaced by this mDNS name
    /// (as a browser hides its host addresses).
    b_name: Option<&'static str>,
}

impl Pair {
    fn new() -> Pair {
        Pair::with(false)
    }

    /// Both negotiations with [`NegotiationConfig::reconnect`].
    fn reconnecting() -> Pair {
        Pair::with(true)
    }

    fn with(reconnect: bool) -> Pair {
        let t0 = Instant::now();
        let mut sim = Sim::new(t0, 7);
        let a = sim.add_host(
            [sa(A_ADDR).ip()],
            Realm::Public,
            PeerNode::with(A_ADDR, "b", true, 1, reconnect),
        );
        let b = sim.add_host(
            [sa(B_ADDR).ip()],
            Realm::Public,
            PeerNode::with(B_ADDR, "a", false, 2, reconnect),
        );
        Pair {
            sim,
            a,
            b,
            hold: Vec::new(),
            a_down: false,
            b_name: None,
        }
    }

    fn node(&self, h: HostId) -> &PeerNode {
        self.sim.node::<PeerNode>(h)
    }

    fn node_mut(&mut self, h: HostId) -> &mut PeerNode {
        self.sim.node_mut::<PeerNode>(h)
    }

    /// Carry the signals sent since the last call.
    fn relay(&mut self) {
        for (from, to, name) in [(self.a, self.b, "a"), (self.b, self.a, "b")] {
            let out = std::mem::take(&mut self.node_mut(from).outbox);
            for (at, msg) in out {
                let mut due = at + SIGNALING_DELAY;
                for (from_a, kind, extra) in &self.hold {
                    if (from == self.a) == *from_a && msg.type_name() == *kind {
                        due += *extra;
                    }
                }
                if to == self.a && self.a_down {
                    continue;
                }
                let msg = match (msg, self.b_name) {
                    (
                        ClientMsg::Candidate {
                            to,
                            mut candidate,
                            id,
                        },
                        Some(hidden),
                    ) if name == "b" => {
                        let ip = sa(B_ADDR).ip().to_string();
                        candidate.candidate = candidate.candidate.replace(&ip, hidden);
                        ClientMsg::Candidate { to, candidate, id }
                    }
                    (msg, _) => msg,
                };
                if let Some(m) = relayed(name, msg) {
                    self.node_mut(to).deliver_at(due, m);
                }
            }
        }
    }

    /// Step (carrying signals) until `pred`, at most `limit` of simulated
    /// time and 100 000 steps; the simulated time it took.
    fn run_until(&mut self, limit: Duration, pred: impl Fn(&Pair) -> bool) -> Duration {
        let start = self.sim.now();
        for _ in 0..100_000 {
            self.relay();
            if pred(self) {
                return self.sim.now() - start;
            }
            assert!(
                self.sim.now() - start <= limit,
                "not done after {limit:?}; a: {:?}\nb: {:?}",
                self.node(self.a).events,
                self.node(self.b).events
            );
            if !self.sim.step() {
                self.relay();
                assert!(pred(self), "the network went idle");
                return self.sim.now() - start;
            }
        }
        panic!("step limit");
    }

    /// Start both machines and run until both are connected.
    fn connect(&mut self) -> Duration {
        let now = self.sim.now();
        for h in [self.a, self.b] {
            let n = self.node_mut(h);
            n.negotiation.handle_timeout(now);
            n.drain(now);
        }
        self.run_until(Duration::from_secs(5), |p| {
            p.node(p.a).connected() && p.node(p.b).connected()
        })
    }

    /// The ufrag our side tagged its candidates with, from its last ones.
    fn last_ufrag(&self, h: HostId) -> String {
        self.node(h)
            .sent
            .iter()
            .rev()
            .find_map(|m| match m {
                ClientMsg::Candidate { candidate, .. } => candidate.username_fragment.clone(),
                ClientMsg::IceRestart { ufrag, .. } => Some(ufrag.clone()),
                _ => None,
            })
            .expect("a tagged message")
    }
}

#[test]
fn the_newcomer_offers_and_trickles_only_after_its_description() {
    let mut p = Pair::new();
    let took = p.connect();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    for (h, first) in [(p.a, "offer"), (p.b, "answer")] {
        let sent = &p.node(h).sent;
        assert_eq!(sent[0].type_name(), first, "{sent:?}");
        // Every candidate is tagged with the ufrag of the description, and
        // end-of-candidates closes the trickle.
        let sdp = match &sent[0] {
            ClientMsg::Offer { sdp, .. } | ClientMsg::Answer { sdp, .. } => sdp.clone(),
            other => panic!("{other:?}"),
        };
        let candidates: Vec<&IceCandidate> = sent
            .iter()
            .filter_map(|m| match m {
                ClientMsg::Candidate { candidate, .. } => Some(candidate),
                _ => None,
            })
            .collect();
        assert!(!candidates.is_empty());
        for c in candidates {
            let tag = c.username_fragment.as_deref().expect("tagged");
            assert!(sdp.contains(&format!("a=ice-ufrag:{tag}")), "{sdp}");
        }
        assert!(sent.iter().any(|m| m.type_name() == "end-of-candidates"));
    }
    // The offerer never answers, the answerer never offers.
    assert!(!p.node(p.a).sent.iter().any(|m| m.type_name() == "answer"));
    assert!(!p.node(p.b).sent.iter().any(|m| m.type_name() == "offer"));
}

#[test]
fn candidates_that_come_before_the_credentials_wait_for_them() {
    let mut p = Pair::new();
    // B's answer reaches A 300 ms after B's candidates.
    p.hold = vec![(false, "answer", Duration::from_millis(300))];
    // A's checks cannot reach B until the answer arrives, so B's checks
    // are the only way in before it: A learns B only from the buffered
    // candidate or from B's checks.
    p.connect();
    let a = p.node(p.a);
    let remote = a.event(|e| matches!(e, NegotiationEvent::RemoteCandidate(_)));
    let answer_at = p
        .node(p.a)
        .events
        .iter()
        .find(|(_, e)| matches!(e, NegotiationEvent::Connected(_)))
        .map(|(t, _)| *t);
    assert!(remote.is_some() && remote < answer_at, "{:?}", a.events);
    // The buffered candidate was added once the credentials came: B's host
    // address is a remote host candidate of A's agent.
    let remotes = a.negotiation.session().agent().remote_candidates();
    assert!(
        remotes
            .iter()
            .any(|c| c.address() == sa(B_ADDR) && c.kind() == p2p_connect::CandidateKind::Host),
        "{remotes:?}"
    );
}

#[test]
fn a_restart_exchanges_new_credentials_and_ignores_the_old_generation() {
    let mut p = Pair::new();
    p.connect();
    let old_a_ufrag = p.last_ufrag(p.a);
    // A's new candidates reach B well after its new credentials.
    p.hold = vec![
        (true, "candidate", Duration::from_millis(200)),
        (true, "end-of-candidates", Duration::from_millis(200)),
    ];
    let now = p.sim.now();
    assert!(p.node_mut(p.a).negotiation.restart(now));
    // A second restart while the first waits for its answer does nothing.
    assert!(!p.node_mut(p.a).negotiation.restart(now));
    p.node_mut(p.a).drain(now);
    let new_a_ufrag = p.last_ufrag(p.a);
    assert_ne!(old_a_ufrag, new_a_ufrag);
    // Once B took A's new credentials (before A's new candidates and
    // end-of-candidates reach it), a late candidate of A's old generation
    // is dropped; the same candidate tagged with the new ufrag is used.
    p.run_until(Duration::from_secs(1), |p| {
        p.node(p.b)
            .event(|e| matches!(e, NegotiationEvent::Restarting))
            .is_some()
    });
    let stray = "candidate:1 1 udp 2130706431 198.51.100.99 9 typ host";
    let now = p.sim.now();
    for (tag, expect) in [(old_a_ufrag, false), (new_a_ufrag, true)] {
        let mut c = IceCandidate::new(stray);
        c.username_fragment = Some(tag);
        let b = p.node_mut(p.b);
        b.negotiation.handle_signal(
            now,
            ServerMsg::Candidate {
                from: "a".into(),
                candidate: c,
            },
        );
        b.drain(now);
        let known = b
            .negotiation
            .session()
            .agent()
            .remote_candidates()
            .iter()
            .any(|c| c.address() == sa("198.51.100.99:9"));
        assert_eq!(known, expect);
    }
    // B answered with its own new credentials; both select a path again.
    p.run_until(Duration::from_secs(5), |p| {
        p.node(p.a).path_changes() >= 1 && p.node(p.b).path_changes() >= 1
    });
    for h in [p.a, p.b] {
        assert!(p
            .node(h)
            .event(|e| matches!(e, NegotiationEvent::Restarting))
            .is_some());
        assert!(p
            .node(h)
            .sent
            .iter()
            .any(|m| m.type_name() == "ice-restart"));
    }
}

#[test]
fn a_close_reaches_the_peer_within_one_trip_as_peer_closed() {
    let mut p = Pair::new();
    p.connect();
    let now = p.sim.now();
    p.node_mut(p.b).negotiation.close(now);
    p.node_mut(p.b).drain(now);
    assert_eq!(
        p.node(p.b).ended(),
        Some(&NegotiationEvent::Closed(CloseReason::Local))
    );
    assert_eq!(p.node(p.b).sent.last().map(|m| m.type_name()), Some("bye"));
    // The SCTP ABORT and DTLS close_notify cross the path (10 ms each way
    // per host link) before the bye crosses signaling (50 ms).
    let took = p.run_until(Duration::from_secs(1), |p| p.node(p.a).ended().is_some());
    assert!(took <= Duration::from_millis(20), "took {took:?}");
    assert_eq!(
        p.node(p.a).ended(),
        Some(&NegotiationEvent::Closed(CloseReason::PeerClosed))
    );
    p.run_until(Duration::from_secs(2), |p| {
        p.node(p.a).negotiation.is_closed() && p.node(p.b).negotiation.is_closed()
    });
}

#[test]
fn without_the_path_a_bye_over_signaling_still_closes_with_peer_closed() {
    let mut p = Pair::new();
    p.connect();
    p.sim.set_link(
        p.b,
        LinkConfig {
            loss: 1.0,
            ..LinkConfig::default()
        },
    );
    let now = p.sim.now();
    p.node_mut(p.b).negotiation.close(now);
    p.node_mut(p.b).drain(now);
    // The bye waits a little for the SHUTDOWN that cannot come.
    let took = p.run_until(Duration::from_secs(5), |p| p.node(p.a).ended().is_some());
    assert_eq!(took, SIGNALING_DELAY + p2p_connect::BYE_GRACE);
    assert_eq!(
        p.node(p.a).ended(),
        Some(&NegotiationEvent::Closed(CloseReason::PeerClosed))
    );
}

#[test]
fn the_peer_leaving_before_a_path_fails_with_peer_left() {
    let mut p = Pair::new();
    let now = p.sim.now();
    let a = p.node_mut(p.a);
    a.negotiation.handle_timeout(now);
    peer_b_left(a, now);
    assert_eq!(
        a.ended(),
        Some(&NegotiationEvent::Failed(Failure::PeerLeft {
            peer: "b".into()
        }))
    );
}

#[test]
fn no_path_in_time_fails_at_the_connect_timeout_with_the_candidates_tried() {
    let mut p = Pair::new();
    // B is unreachable: signaling works, datagrams do not.
    p.sim.set_link(
        p.b,
        LinkConfig {
            loss: 1.0,
            ..LinkConfig::default()
        },
    );
    let start = p.sim.now();
    for h in [p.a, p.b] {
        let n = p.node_mut(h);
        n.negotiation.handle_timeout(start);
        n.drain(start);
    }
    p.run_until(CONNECT_TIMEOUT * 2, |p| p.node(p.a).ended().is_some());
    let a = p.node(p.a);
    let (at, e) = a
        .events
        .iter()
        .find(|(_, e)| matches!(e, NegotiationEvent::Failed(_)))
        .expect("failed");
    assert!(
        *at - start <= CONNECT_TIMEOUT,
        "failed after {:?}",
        *at - start
    );
    match e {
        NegotiationEvent::Failed(Failure::NoPath { local, remote }) => {
            assert_eq!(local, &vec![format!("host {A_ADDR}")]);
            assert!(remote.contains(&format!("host {B_ADDR}")), "{remote:?}");
        }
        other => panic!("{other:?}"),
    }
}

/// The signaling server tells A that B left the room.
fn peer_b_left(a: &mut PeerNode, now: Instant) {
    a.negotiation.handle_signal(
        now,
        ServerMsg::PeerLeft {
            room: "r".into(),
            peer_id: "b".into(),
        },
    );
    a.drain(now);
}

#[test]
fn a_peer_whose_process_died_is_given_up_within_a_second_of_leaving_signaling() {
    let mut p = Pair::new();
    p.connect();
    // B dies without a word: nothing of it crosses the path any more, and
    // the signaling server, which saw its connection drop, says it left.
    p.sim.set_link(
        p.b,
        LinkConfig {
            loss: 1.0,
            ..LinkConfig::default()
        },
    );
    let now = p.sim.now();
    let a = p.node_mut(p.a);
    peer_b_left(a, now);
    let took = p.run_until(Duration::from_secs(40), |p| p.node(p.a).ended().is_some());
    assert_eq!(
        p.node(p.a).ended(),
        Some(&NegotiationEvent::Closed(CloseReason::ConsentLost))
    );
    // Not the 30 s of consent: a second of checks nobody answered.
    assert!(took <= Duration::from_secs(1), "took {took:?}");
}

#[test]
fn a_peer_that_left_signaling_but_still_answers_keeps_the_connection() {
    let mut p = Pair::new();
    p.connect();
    let now = p.sim.now();
    let a = p.node_mut(p.a);
    peer_b_left(a, now);
    let end = now + Duration::from_secs(5);
    p.run_until(Duration::from_secs(6), |p| {
        p.node(p.a).ended().is_some() || p.sim.now() >= end
    });
    assert_eq!(p.node(p.a).ended(), None, "the path still answers");
}

#[test]
fn without_signaling_a_dead_path_closes_with_consent_lost() {
    let mut p = Pair::new();
    p.connect();
    let now = p.sim.now();
    for h in [p.a, p.b] {
        let n = p.node_mut(h);
        n.negotiation.signaling_lost(now);
        n.drain(now);
        assert!(n
            .event(|e| matches!(e, NegotiationEvent::SignalingLost))
            .is_some());
    }
    p.sim.set_link(
        p.b,
        LinkConfig {
            loss: 1.0,
            ..LinkConfig::default()
        },
    );
    let took = p.run_until(Duration::from_secs(60), |p| p.node(p.a).ended().is_some());
    assert_eq!(
        p.node(p.a).ended(),
        Some(&NegotiationEvent::Closed(CloseReason::ConsentLost))
    );
    // RFC 7675: consent expires 30 s after the last answer.
    assert!(took <= Duration::from_secs(31), "took {took:?}");
    // Nothing tried to restart: no signaling.
    assert!(!p
        .node(p.a)
        .sent
        .iter()
        .any(|m| m.type_name() == "ice-restart"));
}

#[test]
fn a_restart_that_finds_no_path_closes_with_ice_failed() {
    let mut p = Pair::new();
    p.connect();
    p.sim.set_link(
        p.b,
        LinkConfig {
            loss: 1.0,
            ..LinkConfig::default()
        },
    );
    let start = p.sim.now();
    assert!(p.node_mut(p.a).negotiation.restart(start));
    p.node_mut(p.a).drain(start);
    let took = p.run_until(CONNECT_TIMEOUT * 2, |p| p.node(p.a).ended().is_some());
    assert_eq!(
        p.node(p.a).ended(),
        Some(&NegotiationEvent::Closed(CloseReason::IceFailed))
    );
    assert!(took <= CONNECT_TIMEOUT, "took {took:?}");
}

#[test]
fn messages_flow_both_ways_on_a_channel_the_offerer_opens() {
    let mut p = Pair::new();
    p.connect();
    // Both sides saw the peer's certificate match its fingerprint.
    for h in [p.a, p.b] {
        assert!(p
            .node(h)
            .event(|e| matches!(e, NegotiationEvent::Secured { .. }))
            .is_some());
    }
    let now = p.sim.now();
    let a = p.node_mut(p.a);
    let chat = a
        .negotiation
        .open_channel(now, ChannelOptions::new("chat"))
        .expect("open")
        .expect("the role is known once connected");
    a.negotiation
        .send(now, chat, b"from a", false)
        .expect("sent");
    a.drain(now);
    p.run_until(Duration::from_secs(1), |p| {
        p.node(p.b)
            .event(|e| matches!(e, NegotiationEvent::Channel(ChannelEvent::Message { .. })))
            .is_some()
    });
    let opened = p.node(p.b).events.iter().find_map(|(_, e)| match e {
        NegotiationEvent::Channel(ChannelEvent::ChannelOpened { id, label, .. }) => {
            Some((*id, label.clone()))
        }
        _ => None,
    });
    let (id, label) = opened.expect("B saw the channel open");
    assert_eq!((id, label.as_str()), (chat, "chat"));
    let now = p.sim.now();
    let b = p.node_mut(p.b);
    b.negotiation.send(now, id, b"from b", false).expect("sent");
    b.drain(now);
    p.run_until(Duration::from_secs(1), |p| {
        p.node(p.a)
            .event(|e| matches!(e, NegotiationEvent::Channel(ChannelEvent::Message { .. })))
            .is_some()
    });
    let message = |h| {
        p.node(h)
            .events
            .iter()
            .find_map(|(_, e)| match e {
                NegotiationEvent::Channel(ChannelEvent::Message { data, binary, .. }) => {
                    Some((String::from_utf8_lossy(data).into_owned(), *binary))
                }
                _ => None,
            })
            .expect("a message")
    };
    assert_eq!(message(p.a), ("from b".to_owned(), false));
    assert_eq!(message(p.b), ("from a".to_owned(), false));
}

#[test]
fn what_was_sent_before_close_is_delivered_then_the_peer_sees_it_closed() {
    let mut p = Pair::new();
    p.connect();
    let now = p.sim.now();
    let a = p.node_mut(p.a);
    let id = a
        .negotiation
        .open_channel(now, ChannelOptions::new("last words"))
        .expect("open")
        .expect("an id");
    let big = vec![7u8; 200 * 1024];
    a.negotiation.send(now, id, &big, true).expect("sent");
    // Close at once: the SHUTDOWN waits for the message to be delivered.
    a.negotiation.close(now);
    a.drain(now);
    p.run_until(Duration::from_secs(2), |p| p.node(p.b).ended().is_some());
    let b = p.node(p.b);
    let got = b.events.iter().find_map(|(_, e)| match e {
        NegotiationEvent::Channel(ChannelEvent::Message { data, .. }) => Some(data.len()),
        _ => None,
    });
    assert_eq!(
        got,
        Some(big.len()),
        "{:?}",
        b.events
            .iter()
            .map(|(t, e)| (
                *t - p.sim.t0(),
                format!("{e:?}").chars().take(90).collect::<String>()
            ))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        b.ended(),
        Some(&NegotiationEvent::Closed(CloseReason::PeerClosed))
    );
}

/// Signaling goes down on A before its offer went out; when it is back
/// (the peer still in the room), A offers again and both connect.
#[test]
fn an_offerer_whose_signaling_was_down_offers_when_it_returns() {
    let mut p = Pair::reconnecting();
    let now = p.sim.now();
    let a = p.a;
    p.a_down = true;
    {
        let n = p.node_mut(a);
        n.negotiation.signaling_interrupted(now);
        n.negotiation.handle_timeout(now);
        n.drain(now);
        // Nothing goes out while signaling is down; nothing fails either.
        assert!(n.sent.is_empty(), "{:?}", n.sent);
    }
    let b = p.b;
    let n = p.node_mut(b);
    n.negotiation.handle_timeout(now);
    n.drain(now);
    assert!(p.node(a).ended().is_none(), "{:?}", p.node(a).events);
    p.a_down = false;
    let now = p.sim.now();
    let n = p.node_mut(a);
    n.negotiation.signaling_restored(now, true);
    n.drain(now);
    assert!(n
        .event(|e| matches!(e, NegotiationEvent::SignalingRestored))
        .is_some());
    p.run_until(Duration::from_secs(5), |p| {
        p.node(p.a).connected() && p.node(p.b).connected()
    });
    let offers = p
        .node(a)
        .sent
        .iter()
        .filter(|m| matches!(m, ClientMsg::Offer { .. }))
        .count();
    assert_eq!(offers, 1);
}

/// Both lose signaling and the path dies meanwhile: nothing closes while
/// signaling may return; when it does, the offerer restarts ICE and a new
/// path carries on.
#[test]
fn a_path_that_died_while_signaling_was_down_is_restarted_when_it_returns() {
    let mut p = Pair::reconnecting();
    p.connect();
    let now = p.sim.now();
    for h in [p.a, p.b] {
        let n = p.node_mut(h);
        n.negotiation.signaling_interrupted(now);
        n.drain(now);
    }
    p.sim.set_link(
        p.b,
        LinkConfig {
            loss: 1.0,
            ..LinkConfig::default()
        },
    );
    p.run_until(Duration::from_secs(40), |p| {
        p.node(p.a)
            .event(|e| matches!(e, NegotiationEvent::Disconnected))
            .is_some()
    });
    assert!(p.node(p.a).ended().is_none(), "{:?}", p.node(p.a).events);
    p.sim.set_link(p.b, LinkConfig::default());
    let now = p.sim.now();
    let restarts_before = p
        .node(p.a)
        .sent
        .iter()
        .filter(|m| matches!(m, ClientMsg::IceRestart { .. }))
        .count();
    for h in [p.b, p.a] {
        let n = p.node_mut(h);
        n.negotiation.signaling_restored(now, true);
        n.drain(now);
    }
    p.run_until(Duration::from_secs(5), |p| {
        p.node(p.a).path_changes() >= 1 && p.node(p.b).path_changes() >= 1
    });
    let restarts_after = p
        .node(p.a)
        .sent
        .iter()
        .filter(|m| matches!(m, ClientMsg::IceRestart { .. }))
        .count();
    assert_eq!(restarts_after, restarts_before + 1);
    assert!(p.node(p.a).ended().is_none());
    assert!(p.node(p.b).ended().is_none());
}

/// With reconnection, a peer that leaves before a path was found has
/// `peer_grace` (3 s here) to come back before it is a failure.
#[test]
fn a_peer_that_left_before_connecting_fails_after_the_grace() {
    let mut p = Pair::reconnecting();
    // The peer's answer never comes in time.
    p.hold.push((false, "answer", Duration::from_secs(60)));
    let now = p.sim.now();
    let a = p.a;
    let n = p.node_mut(a);
    n.negotiation.handle_timeout(now);
    n.drain(now);
    n.deliver_at(
        now,
        ServerMsg::PeerLeft {
            room: "r".into(),
            peer_id: "b".into(),
        },
    );
    let took = p.run_until(Duration::from_secs(8), |p| p.node(p.a).ended().is_some());
    assert!(
        matches!(
            p.node(a).ended(),
            Some(NegotiationEvent::Failed(Failure::PeerLeft { .. }))
        ),
        "{:?}",
        p.node(a).ended()
    );
    assert!(took >= Duration::from_secs(3), "failed after {took:?}");
}

/// Our descriptions carry `a=ice-options:trickle p2phardnat` unless the
/// switch is off; the option counts as agreed only when both announce it.
#[test]
fn the_hardnat_option_is_agreed_only_when_both_descriptions_announce_it() {
    for (a_on, b_on) in [(true, true), (true, false), (false, true)] {
        let mut p = Pair::new();
        for (h, on, peer, controlling, seed) in
            [(p.a, a_on, "b", true, 1), (p.b, b_on, "a", false, 2)]
        {
            let addr = if controlling { A_ADDR } else { B_ADDR };
            let ice = if controlling {
                IceConfig::controlling()
            } else {
                IceConfig::controlled()
            };
            let mut sc = SessionConfig::new(ice.with_seed(seed));
            sc.hosts = vec![sa(addr)];
            sc.rng_seed = Some(seed);
            let mut nc = NegotiationConfig::new(peer, controlling);
            nc.connect_timeout = CONNECT_TIMEOUT;
            nc.hard_nat = on;
            p.node_mut(h).negotiation = Negotiation::new(nc, Session::new(sc).unwrap());
        }
        p.connect();
        for (h, on) in [(p.a, a_on), (p.b, b_on)] {
            let sdp = match &p.node(h).sent[0] {
                ClientMsg::Offer { sdp, .. } | ClientMsg::Answer { sdp, .. } => sdp.clone(),
                other => panic!("{other:?}"),
            };
            let line = if on {
                "a=ice-options:trickle p2phardnat\r\n"
            } else {
                "a=ice-options:trickle\r\n"
            };
            assert!(sdp.contains(line), "{sdp}");
            assert_eq!(p.node(h).negotiation.hard_nat_agreed(), a_on && b_on);
        }
    }
}

/// A STUN server that answers Binding with the mapped address and an RFC
/// 5780 OTHER-ADDRESS (its second address, which it answers on too).
struct Stun {
    out: VecDeque<Transmit>,
}

const STUN: &str = "203.0.113.1:3478";
const STUN_OTHER: &str = "203.0.113.2:3479";

impl Node for Stun {
    fn handle_input(&mut self, _now: Instant, d: Datagram<'_>) {
        {
            let Ok(m) = p2p_stun::Message::decode(d.contents) else {
                return;
            };
            let mut buf = Vec::new();
            let typ = p2p_stun::MessageType::new(
                p2p_stun::Method::BINDING,
                p2p_stun::MessageClass::Success,
            );
            let Ok(mut b) = p2p_stun::MessageBuilder::new(&mut buf, typ, m.transaction_id()) else {
                return;
            };
            b.add(&p2p_stun::attr::XorMappedAddress(d.source)).unwrap();
            b.add(&p2p_stun::attr::OtherAddress(sa(STUN_OTHER)))
                .unwrap();
            b.finish();
            self.out
                .push_back(Transmit::new(d.transport, d.destination, d.source, buf));
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

/// Each side's NAT mapping behaviour (learnt from a STUN server and its
/// OTHER-ADDRESS) reaches the peer as a `p2pnat` candidate extension only
/// when both descriptions announce `p2phardnat`; browsers and other stacks
/// never see it.
#[test]
fn the_nat_mapping_goes_to_the_peer_only_when_the_hardnat_option_is_agreed() {
    for (a_on, b_on) in [(true, true), (true, false), (false, true)] {
        let mut p = Pair::new();
        p.sim.add_host(
            [sa(STUN).ip(), sa(STUN_OTHER).ip()],
            Realm::Public,
            Stun {
                out: VecDeque::new(),
            },
        );
        for (h, on, peer, controlling, seed) in
            [(p.a, a_on, "b", true, 1), (p.b, b_on, "a", false, 2)]
        {
            let addr = if controlling { A_ADDR } else { B_ADDR };
            let ice = if controlling {
                IceConfig::controlling()
            } else {
                IceConfig::controlled()
            };
            let mut sc = SessionConfig::new(ice.with_seed(seed));
            sc.hosts = vec![sa(addr)];
            sc.stun_servers = vec![sa(STUN)];
            sc.rng_seed = Some(seed);
            sc.hard_nat = on;
            let mut nc = NegotiationConfig::new(peer, controlling);
            nc.connect_timeout = CONNECT_TIMEOUT;
            nc.hard_nat = on;
            p.node_mut(h).negotiation = Negotiation::new(nc, Session::new(sc).unwrap());
        }
        p.connect();
        p.run_until(Duration::from_secs(2), |p| {
            p.sim.now() - p.sim.t0() > Duration::from_secs(1)
        });
        let agreed = a_on && b_on;
        for (h, other, on) in [(p.a, p.b, a_on), (p.b, p.a, b_on)] {
            let session = p.node(h).negotiation.session();
            // Each learnt its own (no NAT: endpoint-independent) if on.
            assert_eq!(
                session.nat_report().map(|r| r.mapping),
                on.then_some(p2p_connect::NatMapping::EndpointIndependent)
            );
            let signalled: Vec<&str> = p
                .node(h)
                .sent
                .iter()
                .filter_map(|m| match m {
                    ClientMsg::Candidate { candidate, .. } => Some(candidate.candidate.as_str()),
                    _ => None,
                })
                .filter(|c| c.contains("p2pnat"))
                .collect();
            if agreed {
                assert_eq!(signalled.len(), 1, "{signalled:?}");
                assert!(signalled[0].ends_with(" p2pnat eim"), "{}", signalled[0]);
                let peer = p.node(other).negotiation.session().peer_nat_report();
                assert_eq!(
                    peer.map(|r| r.mapped),
                    session.nat_report().map(|r| r.mapped)
                );
            } else {
                assert!(signalled.is_empty(), "{signalled:?}");
                assert!(session.peer_nat_report().is_none());
            }
        }
    }
}

// ------------------------------------------------------------ mDNS names

/// B's name, as a browser would make it.
const B_NAME: &str = "5c2a9e0f-3b1d-4f6e-8a7c-2d9b0e1f4a35.local";
/// A's mDNS socket.
const A_MDNS: &str = "198.51.100.10:5353";

/// The LAN's mDNS responders, as one host that owns the group address:
/// it answers a query for B's name with B's address, by unicast to the
/// querier (RFC 6762 §6.7), after `delay`.
struct Responder {
    answers: bool,
    queries: Vec<(Instant, SocketAddr)>,
    out: VecDeque<Transmit>,
}

impl Node for Responder {
    fn handle_input(&mut self, now: Instant, d: Datagram<'_>) {
        self.queries.push((now, d.source));
        if !self.answers {
            return;
        }
        let record = p2p_connect::mdns::AddressRecord {
            name: B_NAME.to_owned(),
            address: sa(B_ADDR).ip(),
            ttl: 120,
        };
        let bytes = p2p_connect::mdns::encode_response(&[record]).expect("a response");
        self.out
            .push_back(Transmit::udp(d.destination, d.source, bytes));
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

/// A (with an mDNS socket) and B, a browser-like peer that hides its host
/// address behind `B_NAME` and sits behind a stateful firewall when
/// `b_firewalled`; the responder answers when `answers`.
fn mdns_pair(answers: bool, b_firewalled: bool) -> (Pair, HostId) {
    let mut p = Pair::new();
    let t0 = p.sim.now();
    let mut sim = Sim::new(t0, 7);
    let a = sim.add_host(
        [sa(A_ADDR).ip()],
        Realm::Public,
        PeerNode::with_mdns(A_ADDR, "b", true, 1, A_MDNS),
    );
    let mut b_node = PeerNode::new(B_ADDR, "a", false, 2);
    if b_firewalled {
        b_node.heard_from = Some(Vec::new());
    }
    let b = sim.add_host([sa(B_ADDR).ip()], Realm::Public, b_node);
    let responder = sim.add_host(
        [p2p_connect::mdns::MDNS_V4.ip()],
        Realm::Public,
        Responder {
            answers,
            queries: Vec::new(),
            out: VecDeque::new(),
        },
    );
    p.sim = sim;
    p.a = a;
    p.b = b;
    p.b_name = Some(B_NAME);
    (p, responder)
}

#[test]
fn a_peers_mdns_host_candidate_resolves_and_our_checks_open_the_path() {
    // B's checks cannot leave before ours reach it (its firewall), and its
    // only candidate is a name: A connects only by resolving it.
    let (mut p, responder) = mdns_pair(true, true);
    p.connect();
    let queries = &p.sim.node::<Responder>(responder).queries;
    assert!(!queries.is_empty());
    assert_eq!(queries[0].1, sa(A_MDNS), "queried from A's mDNS socket");
    let a = p.node(p.a);
    let path = a
        .events
        .iter()
        .find_map(|(_, e)| match e {
            NegotiationEvent::Connected(path) => Some(path.clone()),
            _ => None,
        })
        .expect("connected");
    assert_eq!(path.remote.kind, p2p_connect::CandidateKind::Host);
    assert_eq!(path.remote.address, sa(B_ADDR));
    let remotes = a.negotiation.session().agent().remote_candidates();
    assert!(
        remotes
            .iter()
            .all(|c| c.kind() == p2p_connect::CandidateKind::Host),
        "learnt from the resolved name, not from B's checks: {remotes:?}"
    );
}

#[test]
fn without_the_answer_the_firewalled_peer_is_not_reached() {
    // The same network, but nobody answers for the name: nothing opens the
    // path (the name is given up on; B's checks never leave).
    let (mut p, responder) = mdns_pair(false, true);
    let now = p.sim.now();
    for h in [p.a, p.b] {
        let n = p.node_mut(h);
        n.negotiation.handle_timeout(now);
        n.drain(now);
    }
    p.run_until(CONNECT_TIMEOUT + Duration::from_secs(1), |p| {
        p.node(p.a).ended().is_some()
    });
    assert!(matches!(
        p.node(p.a).ended(),
        Some(NegotiationEvent::Failed(Failure::NoPath { .. }))
    ));
    // Queried at once, after one second, after three.
    let queries: Vec<Duration> = p
        .sim
        .node::<Responder>(responder)
        .queries
        .iter()
        .map(|(t, _)| *t - now)
        .collect();
    assert_eq!(queries.len(), 3, "{queries:?}");
}

#[test]
fn end_of_candidates_waits_for_the_names_and_an_unresolved_one_is_left_out() {
    // No firewall: B's checks teach A its address (peer-reflexive), so A
    // connects at once; the unresolved name holds A's end-of-candidates
    // back (the agent would refuse the candidate after it) until it is
    // given up on, 5 s later.
    let (mut p, _) = mdns_pair(false, false);
    p.connect();
    let a = p.node(p.a);
    assert!(a
        .event(|e| matches!(
            e,
            NegotiationEvent::StateChanged(p2p_connect::IceState::Completed)
        ))
        .is_none());
    let start = p.sim.now();
    p.run_until(Duration::from_secs(10), |p| {
        p.node(p.a)
            .event(|e| {
                matches!(
                    e,
                    NegotiationEvent::StateChanged(p2p_connect::IceState::Completed)
                )
            })
            .is_some()
    });
    let completed = p
        .node(p.a)
        .event(|e| {
            matches!(
                e,
                NegotiationEvent::StateChanged(p2p_connect::IceState::Completed)
            )
        })
        .expect("completed");
    assert!(
        completed - start >= Duration::from_secs(4),
        "{:?}",
        completed - start
    );
    let remotes = p
        .node(p.a)
        .negotiation
        .session()
        .agent()
        .remote_candidates();
    assert!(
        remotes
            .iter()
            .all(|c| c.kind() == p2p_connect::CandidateKind::PeerReflexive),
        "{remotes:?}"
    );
}

/// B's mDNS socket.
const B_MDNS: &str = "198.51.100.20:5353";

/// The mDNS group on one LAN: what a member sends to it reaches every
/// other member's mDNS socket (from the group's address: the netsim wants
/// a source the sending host owns; an answer names its records, not its
/// sender).
struct Group {
    members: Vec<SocketAddr>,
    out: VecDeque<Transmit>,
}

impl Node for Group {
    fn handle_input(&mut self, _now: Instant, d: Datagram<'_>) {
        for m in self.members.iter().filter(|m| **m != d.source) {
            let t = Transmit::udp(p2p_connect::mdns::MDNS_V4, *m, d.contents.to_vec());
            self.out.push_back(t);
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

#[test]
fn our_hidden_host_address_is_signalled_as_a_name_and_our_responder_answers_for_it() {
    // B is one of ours with mdns_hide, behind a stateful firewall: A only
    // connects by resolving B's name, which B's responder answers.
    let mut p = Pair::new();
    let mut sim = Sim::new(p.sim.now(), 7);
    let a = sim.add_host(
        [sa(A_ADDR).ip()],
        Realm::Public,
        PeerNode::with_mdns(A_ADDR, "b", true, 1, A_MDNS),
    );
    let mut b_node = PeerNode::new(B_ADDR, "a", false, 2);
    let mut config = SessionConfig::new(IceConfig::controlled().with_seed(2));
    config.hosts = vec![sa(B_ADDR)];
    config.rng_seed = Some(2);
    let mut nc = NegotiationConfig::new("a", false);
    nc.connect_timeout = CONNECT_TIMEOUT;
    nc.mdns = Some(sa(B_MDNS));
    nc.mdns_hide = true;
    nc.mdns_seed = Some(2);
    b_node.negotiation = Negotiation::new(nc, Session::new(config).expect("a session"));
    b_node.heard_from = Some(Vec::new());
    let b = sim.add_host([sa(B_ADDR).ip()], Realm::Public, b_node);
    let _group = sim.add_host(
        [p2p_connect::mdns::MDNS_V4.ip()],
        Realm::Public,
        Group {
            members: vec![sa(A_MDNS), sa(B_MDNS)],
            out: VecDeque::new(),
        },
    );
    p.sim = sim;
    p.a = a;
    p.b = b;
    p.connect();

    // B signalled its host candidate by name only.
    let lines: Vec<String> = p
        .node(p.b)
        .sent
        .iter()
        .filter_map(|m| match m {
            ClientMsg::Candidate { candidate, .. } => Some(candidate.candidate.clone()),
            _ => None,
        })
        .collect();
    assert!(!lines.is_empty());
    let b_ip = sa(B_ADDR).ip().to_string();
    assert!(lines.iter().all(|l| !l.contains(&b_ip)), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains(".local ")), "{lines:?}");
    // A resolved it (through B's answer) and ended host to host on B's address.
    let path = p
        .node(p.a)
        .events
        .iter()
        .find_map(|(_, e)| match e {
            NegotiationEvent::Connected(path) => Some(path.clone()),
            _ => None,
        })
        .expect("connected");
    assert_eq!(path.remote.kind, p2p_connect::CandidateKind::Host);
    assert_eq!(path.remote.address, sa(B_ADDR));
}
