//! Two peers behind two NATs learn each other's public address from a public
//! rendezvous node, then punch holes towards each other. Whether that works is
//! decided by the NATs' RFC 4787 behaviours, as in the ICE scenario matrix
//! (style.md 2.5): EIM on both sides punches through APDF filters, APDM on both
//! sides does not.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2p_netsim::{
    Behaviour, Datagram, DropReason, HostId, LinkConfig, NatConfig, Node, Realm, Sim, Stalled,
    Transmit,
};

use Behaviour::{
    AddressAndPortDependent as APD, AddressDependent as AD, EndpointIndependent as EI,
};

const RENDEZVOUS: &str = "203.0.113.100:3478";
const PEER_LOCAL: &str = "10.0.0.2:5000";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Public node: remembers who said HELLO (by observed address) and tells each
/// of the first two about the other.
#[derive(Default)]
struct Rendezvous {
    peers: Vec<SocketAddr>,
    out: Vec<Transmit>,
}

impl Node for Rendezvous {
    fn handle_input(&mut self, _now: Instant, d: Datagram) {
        if d.contents != b"HELLO" {
            return;
        }
        if !self.peers.contains(&d.source) {
            self.peers.push(d.source);
        }
        if self.peers.len() >= 2 {
            for (me, other) in [(0, 1), (1, 0)] {
                let text = format!("PEER {}", self.peers[other]);
                self.out
                    .push(Transmit::udp(d.destination, self.peers[me], text));
            }
        }
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        self.out.pop()
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

/// A peer: HELLO to the rendezvous every 200 ms until it learns the other
/// peer's address, then PUNCH it every 50 ms (20 times); answers every PUNCH
/// with an ACK to its observed source.
struct Peer {
    local: SocketAddr,
    rendezvous: SocketAddr,
    learned: Option<SocketAddr>,
    next: Option<Instant>,
    hellos_left: u32,
    punches_left: u32,
    out: Vec<Transmit>,
    /// Sources of PUNCH/ACK messages received from the other peer.
    heard_from: Vec<SocketAddr>,
}

impl Peer {
    fn new(start: Instant) -> Self {
        Peer {
            local: sa(PEER_LOCAL),
            rendezvous: sa(RENDEZVOUS),
            learned: None,
            next: Some(start),
            hellos_left: 10,
            punches_left: 20,
            out: Vec::new(),
            heard_from: Vec::new(),
        }
    }

    fn connected(&self) -> bool {
        !self.heard_from.is_empty()
    }
}

impl Node for Peer {
    fn handle_input(&mut self, now: Instant, d: Datagram) {
        let text = String::from_utf8_lossy(d.contents).into_owned();
        if let Some(addr) = text.strip_prefix("PEER ") {
            if self.learned.is_none() {
                self.learned = addr.parse().ok();
                self.next = Some(now);
            }
        } else if text == "PUNCH" {
            self.heard_from.push(d.source);
            self.out.push(Transmit::udp(self.local, d.source, "ACK"));
        } else if text == "ACK" {
            self.heard_from.push(d.source);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.next.is_none_or(|t| t > now) {
            return;
        }
        match self.learned {
            None if self.hellos_left > 0 => {
                self.hellos_left -= 1;
                self.out
                    .push(Transmit::udp(self.local, self.rendezvous, "HELLO"));
                self.next = Some(now + Duration::from_millis(200));
            }
            Some(peer) if self.punches_left > 0 => {
                self.punches_left -= 1;
                self.out.push(Transmit::udp(self.local, peer, "PUNCH"));
                self.next = Some(now + Duration::from_millis(50));
            }
            _ => self.next = None,
        }
    }

    fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        self.out.pop()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.next
    }
}

struct Outcome {
    sim: Sim,
    a: HostId,
    b: HostId,
    result: Result<Duration, Stalled>,
}

fn punch(
    nat_a: (Behaviour, Behaviour),
    nat_b: (Behaviour, Behaviour),
    link: LinkConfig,
    seed: u64,
) -> Outcome {
    let t0 = Instant::now();
    let mut sim = Sim::new(t0, seed);
    sim.set_default_link(link);
    let na = sim.add_nat(NatConfig::new(ip("198.51.100.1"), nat_a.0, nat_a.1));
    let nb = sim.add_nat(NatConfig::new(ip("198.51.100.2"), nat_b.0, nat_b.1));
    sim.add_host([ip("203.0.113.100")], Realm::Public, Rendezvous::default());
    // Both peers use the same private address on their own LANs.
    let a = sim.add_host([ip("10.0.0.2")], Realm::Nat(na), Peer::new(t0));
    let b = sim.add_host([ip("10.0.0.2")], Realm::Nat(nb), Peer::new(t0));
    let result = sim.run_until(
        |s| s.node::<Peer>(a).connected() && s.node::<Peer>(b).connected(),
        Duration::from_secs(10),
        100_000,
    );
    Outcome { sim, a, b, result }
}

fn name(n: (Behaviour, Behaviour)) -> String {
    format!("{}/{}", n.0.mapping_name(), n.1.filtering_name())
}

#[test]
fn hole_punching_matrix() {
    // (NAT A, NAT B, punches through)
    let cases = [
        ((EI, EI), (EI, APD), true),
        ((EI, APD), (EI, APD), true),
        // B's filter is opened by its own punch to A's IP; A's second punch,
        // from a new APDM mapping, gets in and B answers it (peer-reflexive).
        ((APD, APD), (EI, AD), true),
        ((APD, APD), (EI, APD), false),
        ((APD, APD), (APD, APD), false),
    ];
    for (nat_a, nat_b, expect_ok) in cases {
        let label = format!("{} x {}", name(nat_a), name(nat_b));
        let out = punch(nat_a, nat_b, LinkConfig::default(), 1);
        assert_eq!(out.result.is_ok(), expect_ok, "{label}: {:?}", out.result);
        if !expect_ok {
            let filtered_at: Vec<String> = out
                .sim
                .drops()
                .iter()
                .filter_map(|d| match d.reason {
                    DropReason::Filtered { nat, .. } => Some(nat.to_string()),
                    _ => None,
                })
                .collect();
            assert!(filtered_at.iter().any(|n| n == "NAT 0"), "{label}");
            assert!(filtered_at.iter().any(|n| n == "NAT 1"), "{label}");
            let report = out.result.unwrap_err().to_string();
            assert!(report.contains("filtered at NAT"), "{label}: {report}");
        }
    }
}

#[test]
fn eim_both_sides_reach_each_other_at_the_rendezvous_addresses() {
    let out = punch((EI, APD), (EI, APD), LinkConfig::default(), 1);
    out.result.unwrap();
    let a = out.sim.node::<Peer>(out.a);
    let b = out.sim.node::<Peer>(out.b);
    // What each learned from the rendezvous is where the other's packets come from.
    assert_eq!(a.learned, Some(sa("198.51.100.2:5000")));
    assert_eq!(b.learned, Some(sa("198.51.100.1:5000")));
    assert!(a.heard_from.iter().all(|s| Some(*s) == a.learned));
    assert!(b.heard_from.iter().all(|s| Some(*s) == b.learned));
}

#[test]
fn apdm_peer_is_reached_at_a_peer_reflexive_address() {
    let out = punch((APD, APD), (EI, AD), LinkConfig::default(), 1);
    out.result.unwrap();
    let b = out.sim.node::<Peer>(out.b);
    let learned = b.learned.unwrap();
    let heard = b.heard_from[0];
    assert_eq!(heard.ip(), learned.ip());
    assert_ne!(heard.port(), learned.port(), "new APDM mapping towards B");
}

#[test]
fn hole_punching_survives_loss_and_reordering() {
    let link = LinkConfig {
        loss: 0.1,
        reorder: 0.2,
        reorder_delay: Duration::from_millis(30),
        jitter: Duration::from_millis(5),
        ..LinkConfig::default()
    };
    let mut losses = 0;
    for seed in 0..5 {
        let out = punch((EI, APD), (EI, APD), link.clone(), seed);
        assert!(out.result.is_ok(), "seed {seed}: {:?}", out.result);
        losses += out
            .sim
            .drops()
            .iter()
            .filter(|d| d.reason.is_loss())
            .count();
    }
    assert!(losses > 0, "the lossy links did lose packets");
    // The same seed replays the same run.
    let x = punch((EI, APD), (EI, APD), link.clone(), 3);
    let y = punch((EI, APD), (EI, APD), link, 3);
    assert_eq!(x.result.ok(), y.result.ok());
    assert_eq!(x.sim.drops().len(), y.sim.drops().len());
    let ex: Vec<_> = x
        .sim
        .trace()
        .map(|e| (e.elapsed, e.kind.clone(), e.source, e.destination))
        .collect();
    let ey: Vec<_> = y
        .sim
        .trace()
        .map(|e| (e.elapsed, e.kind.clone(), e.source, e.destination))
        .collect();
    assert_eq!(ex, ey);
}
