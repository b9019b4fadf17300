//! Two agents behind RFC 4787 NATs on the `p2p-netsim` virtual network, with
//! a STUN server on the public side for server-reflexive gathering. The
//! oracle is the candidate types of the selected pair (design.md §2.5).
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2p_ice::{Candidate, CandidateKind, IceAgent, IceConfig, IceEvent, IceOutput, IceState};
use p2p_netsim::{Behaviour, HostId, LinkConfig, NatConfig, Node, Realm, Sim};
use p2p_proto::{Handled, Machine, Transmit};
use p2p_stun::attr::XorMappedAddress;
use p2p_stun::{Message, MessageBuilder, MessageClass, Method};

use Behaviour::{
    AddressAndPortDependent as Apd, AddressDependent as Ad, EndpointIndependent as Ei,
};

const STUN_SERVER: &str = "203.0.113.1:3478";

/// A netsim node around an agent: events are kept for the test to read and
/// forward (signalling) as soon as the agent makes them.
struct AgentNode {
    agent: IceAgent,
    transmits: VecDeque<Transmit>,
    events: Vec<IceEvent>,
    forwarded: usize,
    data: Vec<Vec<u8>>,
}

impl AgentNode {
    fn new(now: Instant, mut agent: IceAgent) -> Self {
        agent.handle_timeout(now);
        let mut n = AgentNode {
            agent,
            transmits: VecDeque::new(),
            events: Vec::new(),
            forwarded: 0,
            data: Vec::new(),
        };
        n.drain();
        n
    }

    /// The agent's outputs, in order: transmits queued for the network,
    /// events kept.
    fn drain(&mut self) {
        while let Some(out) = self.agent.poll_output() {
            match out {
                IceOutput::Transmit(t) => self.transmits.push_back(t),
                IceOutput::Event(e) => self.events.push(e),
                other => panic!("unexpected output {other:?}"),
            }
        }
    }
}

impl Node for AgentNode {
    fn handle_input(&mut self, now: Instant, d: p2p_netsim::Datagram<'_>) {
        if self.agent.handle_input(now, d) == Handled::NotMine {
            self.data.push(d.contents.to_vec());
        }
        self.drain();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.agent.handle_timeout(now);
        self.drain();
    }

    fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        // Commands given between steps (candidates signalled, data sent)
        // queued outputs too.
        self.drain();
        self.transmits.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.agent.poll_timeout()
    }
}

/// A minimal STUN server: answers Binding requests with XOR-MAPPED-ADDRESS.
#[derive(Default)]
struct StunReflector {
    out: Vec<p2p_netsim::Transmit>,
}

impl Node for StunReflector {
    fn handle_input(&mut self, _now: Instant, d: p2p_netsim::Datagram<'_>) {
        let Ok(msg) = Message::decode(d.contents) else {
            return;
        };
        if msg.typ().method != Method::BINDING || msg.typ().class != MessageClass::Request {
            return;
        }
        let mut buf = Vec::new();
        let Ok(mut b) = MessageBuilder::new(&mut buf, msg.typ().success(), msg.transaction_id())
        else {
            return;
        };
        if b.add(&XorMappedAddress(d.source)).is_err() || b.add_fingerprint().is_err() {
            return;
        }
        b.finish();
        self.out
            .push(p2p_netsim::Transmit::udp(d.destination, d.source, buf));
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_transmit(&mut self, _now: Instant) -> Option<p2p_netsim::Transmit> {
        self.out.pop()
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

struct Scenario {
    sim: Sim,
    a: HostId,
    b: HostId,
}

/// Where a peer sits: behind its own NAT (mapping, filtering), or on a LAN
/// shared with the other peer behind one NAT.
#[derive(Clone, Copy)]
enum Place {
    Nat(Behaviour, Behaviour),
    SharedLan,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn agent(now: Instant, controlling: bool, seed: u64, host: SocketAddr) -> IceAgent {
    let mut a = IceAgent::new(
        IceConfig::default()
            .with_controlling(controlling)
            .with_seed(seed),
    );
    a.add_local_candidate(now, Candidate::host(host)).unwrap();
    a.add_stun_server(now, STUN_SERVER.parse().unwrap());
    a.end_of_local_candidates();
    a
}

fn setup(place_a: Place, place_b: Place, seed: u64, link: LinkConfig) -> Scenario {
    let t0 = Instant::now();
    let mut sim = Sim::new(t0, seed);
    sim.set_default_link(link);
    sim.add_host([ip("203.0.113.1")], Realm::Public, StunReflector::default());
    let mut a = agent(t0, true, seed + 1, "10.0.1.2:5000".parse().unwrap());
    let mut b = agent(t0, false, seed + 2, "10.0.2.2:6000".parse().unwrap());
    let (ca, cb) = (a.local_credentials().clone(), b.local_credentials().clone());
    a.set_remote_credentials(t0, &cb.ufrag, &cb.pwd).unwrap();
    b.set_remote_credentials(t0, &ca.ufrag, &ca.pwd).unwrap();
    let (realm_a, realm_b) = match (place_a, place_b) {
        (Place::SharedLan, _) | (_, Place::SharedLan) => {
            let nat = sim.add_nat(NatConfig::new(ip("198.51.100.1"), Ei, Apd));
            (Realm::Nat(nat), Realm::Nat(nat))
        }
        (Place::Nat(ma, fa), Place::Nat(mb, fb)) => {
            let na = sim.add_nat(NatConfig::new(ip("198.51.100.1"), ma, fa));
            let nb = sim.add_nat(NatConfig::new(ip("198.51.100.2"), mb, fb));
            (Realm::Nat(na), Realm::Nat(nb))
        }
    };
    let a = sim.add_host([ip("10.0.1.2")], realm_a, AgentNode::new(t0, a));
    let b = sim.add_host([ip("10.0.2.2")], realm_b, AgentNode::new(t0, b));
    Scenario { sim, a, b }
}

impl Scenario {
    fn node(&self, h: HostId) -> &AgentNode {
        self.sim.node::<AgentNode>(h)
    }

    /// Forward new LocalCandidate / GatheringComplete events to the peer.
    fn signal(&mut self) {
        let now = self.sim.now();
        for (from, to) in [(self.a, self.b), (self.b, self.a)] {
            let node = self.sim.node_mut::<AgentNode>(from);
            let new: Vec<IceEvent> = node.events[node.forwarded..].to_vec();
            node.forwarded = node.events.len();
            let peer = self.sim.node_mut::<AgentNode>(to);
            for e in new {
                match e {
                    IceEvent::LocalCandidate(c) => {
                        let _ = peer.agent.add_remote_candidate(now, c);
                    }
                    IceEvent::GatheringComplete => peer.agent.end_of_remote_candidates(),
                    _ => {}
                }
            }
        }
    }

    fn run_until(
        &mut self,
        pred: impl Fn(&Scenario) -> bool,
        max: Duration,
    ) -> Result<Duration, String> {
        let start = self.sim.elapsed();
        for _ in 0..500_000 {
            self.signal();
            if pred(self) {
                return Ok(self.sim.elapsed() - start);
            }
            if self.sim.elapsed() - start > max || !self.sim.step() {
                break;
            }
        }
        Err(format!(
            "stalled at {:?}\nA: {}\nB: {}\ndrops: {:?}",
            self.sim.elapsed(),
            self.node(self.a).agent.stats(),
            self.node(self.b).agent.stats(),
            self.sim.drops().iter().rev().take(10).collect::<Vec<_>>()
        ))
    }

    fn selected(&self, h: HostId) -> Option<(CandidateKind, CandidateKind)> {
        self.node(h)
            .agent
            .selected_pair()
            .map(|(l, r)| (l.kind(), r.kind()))
    }

    fn connected(&self) -> bool {
        [self.a, self.b].iter().all(|h| {
            matches!(
                self.node(*h).agent.state(),
                IceState::Connected | IceState::Completed
            )
        })
    }
}

use CandidateKind::{Host, PeerReflexive as Prflx, ServerReflexive as Srflx};

fn connects(
    place_a: Place,
    place_b: Place,
    link: LinkConfig,
    expect_a: (CandidateKind, CandidateKind),
    expect_b: (CandidateKind, CandidateKind),
) -> Scenario {
    let mut s = setup(place_a, place_b, 42, link);
    let took = s
        .run_until(|s| s.connected(), Duration::from_secs(15))
        .unwrap();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(
        s.selected(s.a),
        Some(expect_a),
        "{}",
        s.node(s.a).agent.stats()
    );
    assert_eq!(
        s.selected(s.b),
        Some(expect_b),
        "{}",
        s.node(s.b).agent.stats()
    );
    // Data flows end to end on the selected pair, through the NATs.
    let now = s.sim.now();
    for from in [s.a, s.b] {
        s.sim
            .node_mut::<AgentNode>(from)
            .agent
            .send(now, b"data".to_vec())
            .unwrap();
    }
    s.run_until(
        |s| !s.node(s.a).data.is_empty() && !s.node(s.b).data.is_empty(),
        Duration::from_secs(1),
    )
    .unwrap();
    s
}

#[test]
fn same_lan_connects_host_to_host() {
    connects(
        Place::SharedLan,
        Place::SharedLan,
        LinkConfig::default(),
        (Host, Host),
        (Host, Host),
    );
}

#[test]
fn eim_eif_both_sides_connect_srflx_to_srflx() {
    connects(
        Place::Nat(Ei, Ei),
        Place::Nat(Ei, Ei),
        LinkConfig::default(),
        (Srflx, Srflx),
        (Srflx, Srflx),
    );
}

#[test]
fn eim_apdf_both_sides_hole_punch_srflx_to_srflx() {
    connects(
        Place::Nat(Ei, Apd),
        Place::Nat(Ei, Apd),
        LinkConfig::default(),
        (Srflx, Srflx),
        (Srflx, Srflx),
    );
}

#[test]
fn eim_apdf_both_sides_with_loss_and_reordering() {
    let lossy = LinkConfig {
        loss: 0.1,
        reorder: 0.1,
        jitter: Duration::from_millis(5),
        ..LinkConfig::default()
    };
    connects(
        Place::Nat(Ei, Apd),
        Place::Nat(Ei, Apd),
        lossy,
        (Srflx, Srflx),
        (Srflx, Srflx),
    );
}

#[test]
fn apdm_against_eim_adf_connects_through_peer_reflexive() {
    connects(
        Place::Nat(Apd, Apd),
        Place::Nat(Ei, Ad),
        LinkConfig::default(),
        (Prflx, Srflx),
        (Srflx, Prflx),
    );
}

#[test]
fn apdm_against_apdm_without_relay_fails() {
    let mut s = setup(
        Place::Nat(Apd, Apd),
        Place::Nat(Apd, Apd),
        42,
        LinkConfig::default(),
    );
    let took = s
        .run_until(
            |s| {
                [s.a, s.b]
                    .iter()
                    .all(|h| s.node(*h).agent.state() == IceState::Failed)
            },
            Duration::from_secs(30),
        )
        .unwrap();
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(s.selected(s.a).is_none() && s.selected(s.b).is_none());
    // Both gathered a server-reflexive candidate: the failure is the NATs'.
    for h in [s.a, s.b] {
        assert!(s
            .node(h)
            .agent
            .local_candidates()
            .iter()
            .any(|c| c.kind() == Srflx));
    }
}
