//! RFC 4787 NAT behaviour, link effects, firewalls and the stall report,
//! all on the simulated clock with fixed seeds.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2p_netsim::{
    Behaviour, DropReason, EchoReflector, Firewall, HostId, LinkConfig, NatConfig, NatId,
    PortAllocation, Realm, ScriptedNode, Sim, StallReason, Transmit, Transport,
};

use Behaviour::{
    AddressAndPortDependent as APD, AddressDependent as AD, EndpointIndependent as EI,
};

const EXT: &str = "198.51.100.1";
const S1: &str = "203.0.113.1";
const S2: &str = "203.0.113.2";
const CLIENT: &str = "10.0.0.2:5000";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One client behind one NAT, two public echo servers.
struct World {
    sim: Sim,
    nat: NatId,
    client: HostId,
    s1: HostId,
    s2: HostId,
}

fn world(cfg: NatConfig, seed: u64) -> World {
    world_at(Instant::now(), cfg, seed)
}

fn world_at(t0: Instant, cfg: NatConfig, seed: u64) -> World {
    let mut sim = Sim::new(t0, seed);
    let nat = sim.add_nat(cfg);
    let s1 = sim.add_host([ip(S1)], Realm::Public, EchoReflector::new());
    let s2 = sim.add_host([ip(S2)], Realm::Public, EchoReflector::new());
    let client = sim.add_host([ip("10.0.0.2")], Realm::Nat(nat), ScriptedNode::new());
    World {
        sim,
        nat,
        client,
        s1,
        s2,
    }
}

impl World {
    fn send(&mut self, to: &str, what: &str) {
        let t = Transmit::udp(sa(CLIENT), sa(to), what);
        self.sim.send_from(self.client, t);
    }

    /// Observed addresses from echo replies, in arrival order, with the
    /// server address that replied.
    fn replies(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.sim
            .node::<ScriptedNode>(self.client)
            .received()
            .iter()
            .filter_map(|r| {
                EchoReflector::parse_reply(&r.datagram.contents).map(|a| (r.datagram.source, a))
            })
            .collect()
    }

    /// Sources of the received datagrams whose contents are `what`.
    fn received_from(&self, what: &str) -> Vec<SocketAddr> {
        self.sim
            .node::<ScriptedNode>(self.client)
            .received()
            .iter()
            .filter(|r| r.datagram.contents == what.as_bytes())
            .map(|r| r.datagram.source)
            .collect()
    }
}

fn nat_cfg(mapping: Behaviour, filtering: Behaviour, alloc: PortAllocation) -> NatConfig {
    NatConfig {
        port_allocation: alloc,
        ..NatConfig::new(ip(EXT), mapping, filtering)
    }
}

#[test]
fn mapping_behaviour_decides_external_ports() {
    // One client port talks to S1:3478, S1:3479, S2:3478; sequential ports from 49152.
    let cases = [
        (
            EI,
            [
                "198.51.100.1:49152",
                "198.51.100.1:49152",
                "198.51.100.1:49152",
            ],
        ),
        (
            AD,
            [
                "198.51.100.1:49152",
                "198.51.100.1:49152",
                "198.51.100.1:49153",
            ],
        ),
        (
            APD,
            [
                "198.51.100.1:49152",
                "198.51.100.1:49153",
                "198.51.100.1:49154",
            ],
        ),
    ];
    for (mapping, expected) in cases {
        let mut w = world(nat_cfg(mapping, EI, PortAllocation::Sequential), 1);
        for (i, to) in ["203.0.113.1:3478", "203.0.113.1:3479", "203.0.113.2:3478"]
            .iter()
            .enumerate()
        {
            w.send(to, "?");
            w.sim.run_for(ms(100 * (i as u64 + 1)));
        }
        let observed: Vec<SocketAddr> = w.replies().iter().map(|(_, a)| *a).collect();
        let expected: Vec<SocketAddr> = expected.iter().map(|s| sa(s)).collect();
        assert_eq!(observed, expected, "{}", mapping.mapping_name());
        assert_eq!(w.sim.nat_mappings(w.nat).len(), {
            let mut e = expected.clone();
            e.dedup();
            e.len()
        });
    }
}

#[test]
fn filtering_behaviour_decides_unsolicited_inbound() {
    // After the client sent to S1:3478: unsolicited packets from S1:3478, S1:3479, S2:3478.
    let cases = [
        (
            EI,
            vec!["203.0.113.1:3478", "203.0.113.1:3479", "203.0.113.2:3478"],
            vec![],
        ),
        (
            AD,
            vec!["203.0.113.1:3478", "203.0.113.1:3479"],
            vec![
                "filtered at NAT 0 (ADF): no outbound from 10.0.0.2:5000 to 203.0.113.2 (any port)",
            ],
        ),
        (
            APD,
            vec!["203.0.113.1:3478"],
            vec![
                "filtered at NAT 0 (APDF): no outbound from 10.0.0.2:5000 to 203.0.113.1:3479",
                "filtered at NAT 0 (APDF): no outbound from 10.0.0.2:5000 to 203.0.113.2:3478",
            ],
        ),
    ];
    for (filtering, allowed, drop_texts) in cases {
        let mut w = world(nat_cfg(EI, filtering, PortAllocation::Preserving), 1);
        w.send("203.0.113.1:3478", "?");
        w.sim.run_for(ms(100));
        let ext = w.replies()[0].1;
        assert_eq!(ext, sa("198.51.100.1:5000"));
        let (s1, s2) = (w.s1, w.s2);
        for (host, from) in [
            (s1, "203.0.113.1:3478"),
            (s1, "203.0.113.1:3479"),
            (s2, "203.0.113.2:3478"),
        ] {
            w.sim
                .send_from(host, Transmit::udp(sa(from), ext, "unsolicited"));
        }
        w.sim.run_for(ms(100));
        let allowed: Vec<SocketAddr> = allowed.iter().map(|s| sa(s)).collect();
        assert_eq!(
            w.received_from("unsolicited"),
            allowed,
            "{}",
            filtering.filtering_name()
        );
        let drops: Vec<String> = w.sim.drops().iter().map(|d| d.reason.to_string()).collect();
        assert_eq!(drops, drop_texts, "{}", filtering.filtering_name());
        assert!(w.sim.drops().iter().all(|d| d.reason.is_filtered()));
    }
}

#[test]
fn mapping_expires_after_lifetime_unless_refreshed_by_outbound() {
    let cfg = NatConfig {
        mapping_lifetime: Duration::from_secs(30),
        ..nat_cfg(EI, APD, PortAllocation::Sequential)
    };
    let mut w = world(cfg.clone(), 1);
    w.send("203.0.113.1:3478", "?");
    w.sim.run_for(Duration::from_secs(20));
    // Refresh at t = 20 s.
    w.send("203.0.113.1:3478", "?");
    w.sim.run_for(Duration::from_secs(25));
    let e1 = w.replies()[0].1;
    assert_eq!(w.replies()[1].1, e1, "refresh keeps the mapping");
    // t = 45 s: alive, since it was refreshed at 20 s.
    let s1 = w.s1;
    w.sim
        .send_from(s1, Transmit::udp(sa("203.0.113.1:3478"), e1, "late"));
    w.sim.run_for(Duration::from_secs(36));
    assert_eq!(w.received_from("late").len(), 1);
    // t = 81 s: expired (last outbound at 20 s, plus inbound does not refresh).
    assert!(w.sim.nat_mappings(w.nat).is_empty());
    w.sim
        .send_from(s1, Transmit::udp(sa("203.0.113.1:3478"), e1, "too late"));
    w.sim.run_for(ms(100));
    assert!(w.received_from("too late").is_empty());
    assert_eq!(
        w.sim.drops().last().map(|d| d.reason.clone()),
        Some(DropReason::NoMapping {
            nat: w.nat,
            external: e1
        })
    );
    assert_eq!(
        w.sim
            .drops()
            .last()
            .map(|d| d.reason.to_string())
            .as_deref(),
        Some("no mapping at NAT 0 for 198.51.100.1:49152")
    );
    // Sending again creates a fresh mapping on the next sequential port.
    w.send("203.0.113.1:3478", "?");
    w.sim.run_for(ms(100));
    assert_eq!(w.replies()[2].1, sa("198.51.100.1:49153"));

    // Without the refresh the mapping is gone at 35 s.
    let mut w = world(cfg, 1);
    w.send("203.0.113.1:3478", "?");
    w.sim.run_for(Duration::from_secs(35));
    let s1 = w.s1;
    w.sim
        .send_from(s1, Transmit::udp(sa("203.0.113.1:3478"), e1, "late"));
    w.sim.run_for(ms(100));
    assert!(w.received_from("late").is_empty());
    assert!(matches!(
        w.sim.drops()[0].reason,
        DropReason::NoMapping { .. }
    ));
}

#[test]
fn each_remote_permission_expires_on_its_own() {
    let cfg = NatConfig {
        mapping_lifetime: Duration::from_secs(30),
        ..nat_cfg(EI, APD, PortAllocation::Preserving)
    };
    let mut w = world(cfg, 1);
    w.send("203.0.113.1:3478", "?");
    w.send("203.0.113.2:3478", "?");
    // Keep the mapping alive through S2 only.
    for _ in 0..2 {
        w.sim.run_for(Duration::from_secs(20));
        w.send("203.0.113.2:3478", "?");
    }
    w.sim.run_for(Duration::from_secs(5)); // t = 45 s
    let ext = sa("198.51.100.1:5000");
    let (s1, s2) = (w.s1, w.s2);
    w.sim
        .send_from(s1, Transmit::udp(sa("203.0.113.1:3478"), ext, "u"));
    w.sim
        .send_from(s2, Transmit::udp(sa("203.0.113.2:3478"), ext, "u"));
    w.sim.run_for(ms(100));
    assert_eq!(w.received_from("u"), vec![sa("203.0.113.2:3478")]);
    let m = w.sim.nat_mappings(w.nat);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].remotes, vec![sa("203.0.113.2:3478")]);
}

#[test]
fn hairpinning_translates_back_inside_or_drops() {
    for hairpinning in [true, false] {
        let cfg = NatConfig {
            hairpinning,
            ..nat_cfg(EI, EI, PortAllocation::Preserving)
        };
        let mut w = world(cfg, 1);
        let b = w
            .sim
            .add_host([ip("10.0.0.3")], Realm::Nat(w.nat), ScriptedNode::new());
        // B opens a mapping (198.51.100.1:6000 by port preservation).
        w.sim.send_from(
            b,
            Transmit::udp(sa("10.0.0.3:6000"), sa("203.0.113.1:3478"), "?"),
        );
        w.sim.run_for(ms(100));
        // A (the client) sends to B's external address.
        w.send("198.51.100.1:6000", "hairpin");
        w.sim.run_for(ms(100));
        let got: Vec<(SocketAddr, SocketAddr)> = w
            .sim
            .node::<ScriptedNode>(b)
            .received()
            .iter()
            .filter(|r| r.datagram.contents == b"hairpin")
            .map(|r| (r.datagram.source, r.datagram.destination))
            .collect();
        if hairpinning {
            // The source is A's external (translated) address, not its private one.
            assert_eq!(got, vec![(sa("198.51.100.1:5000"), sa("10.0.0.3:6000"))]);
            assert!(w.sim.drops().is_empty());
        } else {
            assert!(got.is_empty());
            assert_eq!(w.sim.drops().len(), 1);
            assert_eq!(
                w.sim.drops()[0].reason.to_string(),
                "hairpinning disabled at NAT 0"
            );
        }
    }
}

/// External ports given to 10.0.0.2:5000 and then 10.0.0.3:5000.
fn two_hosts_ports(alloc: PortAllocation, seed: u64) -> Vec<u16> {
    let mut w = world(nat_cfg(EI, EI, alloc), seed);
    let b = w
        .sim
        .add_host([ip("10.0.0.3")], Realm::Nat(w.nat), ScriptedNode::new());
    w.send("203.0.113.1:3478", "?");
    w.sim.send_from(
        b,
        Transmit::udp(sa("10.0.0.3:5000"), sa("203.0.113.1:3478"), "?"),
    );
    w.sim.run_for(ms(100));
    w.sim
        .nat_mappings(w.nat)
        .iter()
        .map(|m| m.external.port())
        .collect()
}

#[test]
fn port_allocation_preserving_sequential_random() {
    assert_eq!(
        two_hosts_ports(PortAllocation::Preserving, 1),
        vec![5000, 49152]
    );
    assert_eq!(
        two_hosts_ports(PortAllocation::Sequential, 1),
        vec![49152, 49153]
    );
    let r1 = two_hosts_ports(PortAllocation::Random, 1);
    assert_eq!(
        r1,
        two_hosts_ports(PortAllocation::Random, 1),
        "same seed, same ports"
    );
    assert_ne!(r1, two_hosts_ports(PortAllocation::Random, 2));
    assert_ne!(r1, vec![49152, 49153]);
    assert_ne!(r1[0], r1[1]);
    assert!(r1.iter().all(|p| *p >= 49152));
}

/// Client at 203.0.113.9 sends `n` UDP datagrams (contents = index) to a sink,
/// one per millisecond, over `link`.
fn blast(link: LinkConfig, n: u32, seed: u64, t0: Instant, proto: Transport) -> (Sim, HostId) {
    let mut sim = Sim::new(t0, seed);
    let mut client = ScriptedNode::new();
    for i in 0..n {
        client.send_at(
            t0 + ms(u64::from(i)),
            Transmit {
                transport: proto,
                source: sa("203.0.113.9:1000"),
                destination: sa("203.0.113.1:2000"),
                contents: i.to_string().into_bytes(),
            },
        );
    }
    let c = sim.add_host([ip("203.0.113.9")], Realm::Public, client);
    let sink = sim.add_host([ip("203.0.113.1")], Realm::Public, ScriptedNode::new());
    sim.set_link(c, link);
    sim.run_for(ms(u64::from(n) + 1000));
    (sim, sink)
}

fn received_seq(sim: &Sim, sink: HostId) -> Vec<u32> {
    sim.node::<ScriptedNode>(sink)
        .received()
        .iter()
        .map(|r| {
            std::str::from_utf8(&r.datagram.contents)
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

#[test]
fn loss_is_reproducible_and_close_to_the_configured_rate() {
    let t0 = Instant::now();
    let lossy = LinkConfig {
        loss: 0.1,
        ..LinkConfig::default()
    };
    let (a, sink_a) = blast(lossy.clone(), 10_000, 7, t0, Transport::Udp);
    let (b, _) = blast(lossy.clone(), 10_000, 7, t0, Transport::Udp);
    let (c, _) = blast(lossy, 10_000, 8, t0, Transport::Udp);
    assert_eq!(a.drops(), b.drops(), "same seed, same drops");
    assert_ne!(a.drops(), c.drops(), "another seed, other drops");
    let lost = a.drops().len();
    assert!((900..=1100).contains(&lost), "lost {lost} of 10000");
    assert!(a.drops().iter().all(|d| d.reason.is_loss()));
    assert_eq!(a.drops()[0].reason.to_string(), "loss on link of host 0");
    assert_eq!(received_seq(&a, sink_a).len() + lost, 10_000);
    assert_eq!(a.stats().delivered as usize, 10_000 - lost);
}

fn inversions(seq: &[u32]) -> usize {
    let mut max = None;
    let mut n = 0;
    for s in seq {
        if max.is_some_and(|m| *s < m) {
            n += 1;
        }
        max = max.max(Some(*s));
    }
    n
}

#[test]
fn reordering_and_duplication_are_observed() {
    let t0 = Instant::now();
    let (plain, sink) = blast(LinkConfig::default(), 1000, 3, t0, Transport::Udp);
    let seq = received_seq(&plain, sink);
    assert_eq!(seq, (0..1000).collect::<Vec<_>>());

    let reorder = LinkConfig {
        reorder: 0.1,
        reorder_delay: ms(20),
        ..LinkConfig::default()
    };
    let (sim, sink) = blast(reorder, 1000, 3, t0, Transport::Udp);
    let seq = received_seq(&sim, sink);
    assert_eq!(seq.len(), 1000, "reordering loses nothing");
    let inv = inversions(&seq);
    assert!((50..=150).contains(&inv), "{inv} late packets");
    let mut sorted = seq.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());

    let dup = LinkConfig {
        duplicate: 0.2,
        ..LinkConfig::default()
    };
    let (sim, sink) = blast(dup, 1000, 3, t0, Transport::Udp);
    let n = received_seq(&sim, sink).len();
    assert!((1150..=1250).contains(&n), "{n} received");
    assert_eq!(sim.stats().duplicated as usize, n - 1000);
}

#[test]
fn tcp_is_reliable_and_ordered_on_a_bad_link() {
    let bad = LinkConfig {
        loss: 0.5,
        duplicate: 0.5,
        reorder: 0.5,
        jitter: ms(30),
        ..LinkConfig::default()
    };
    let (sim, sink) = blast(bad, 500, 9, Instant::now(), Transport::Tcp);
    assert_eq!(received_seq(&sim, sink), (0..500).collect::<Vec<_>>());
    assert!(sim.drops().is_empty());
}

#[test]
fn firewall_blocks_udp_but_passes_tcp() {
    let mut sim = Sim::with_seed(1);
    let s = sim.add_host([ip(S1)], Realm::Public, EchoReflector::new());
    let f = sim.add_host(
        [ip("192.0.2.10")],
        Realm::Firewall(Firewall {
            udp_blocked: true,
            ..Firewall::default()
        }),
        ScriptedNode::new(),
    );
    let (me, srv) = (sa("192.0.2.10:4000"), sa("203.0.113.1:3478"));
    sim.send_from(f, Transmit::udp(me, srv, "udp"));
    sim.send_from(f, Transmit::tcp(me, srv, "tcp"));
    sim.send_from(s, Transmit::udp(srv, me, "inbound udp"));
    sim.run_for(ms(200));
    let got: Vec<(Transport, SocketAddr)> = sim
        .node::<ScriptedNode>(f)
        .received()
        .iter()
        .map(|r| (r.datagram.transport, r.datagram.source))
        .collect();
    assert_eq!(got, vec![(Transport::Tcp, srv)]);
    assert_eq!(sim.node::<EchoReflector>(s).seen(), &[me]);
    let reasons: Vec<DropReason> = sim.drops().iter().map(|d| d.reason.clone()).collect();
    assert_eq!(
        reasons,
        vec![
            DropReason::UdpBlocked { host: f },
            DropReason::UdpBlocked { host: f }
        ]
    );
    assert_eq!(reasons[0].to_string(), "UDP blocked by firewall of host 1");
}

#[test]
fn a_tcp_out_only_firewall_lets_in_tcp_only_from_where_the_host_connected() {
    let mut sim = Sim::with_seed(1);
    let s = sim.add_host([ip(S1)], Realm::Public, ScriptedNode::new());
    let f = sim.add_host(
        [ip("192.0.2.10")],
        Realm::Firewall(Firewall {
            udp_blocked: true,
            tcp_out_only: true,
        }),
        ScriptedNode::new(),
    );
    let (me, srv) = (sa("192.0.2.10:9"), sa("203.0.113.1:443"));
    // Unasked for: dropped.
    sim.send_from(s, Transmit::tcp(srv, sa("192.0.2.10:7000"), "in first"));
    sim.run_for(ms(100));
    // Out, then the answer on that connection: passes.
    sim.send_from(f, Transmit::tcp(me, srv, "out"));
    sim.run_for(ms(100));
    sim.send_from(s, Transmit::tcp(srv, me, "answer"));
    sim.run_for(ms(100));
    let got: Vec<Vec<u8>> = sim
        .node::<ScriptedNode>(f)
        .received()
        .iter()
        .map(|r| r.datagram.contents.clone())
        .collect();
    assert_eq!(got, vec![b"answer".to_vec()]);
    let reasons: Vec<DropReason> = sim.drops().iter().map(|d| d.reason.clone()).collect();
    assert_eq!(reasons, vec![DropReason::TcpInbound { host: f }]);
}

#[test]
fn tcp_passes_nat_with_its_own_mapping() {
    let mut w = world(nat_cfg(EI, APD, PortAllocation::Sequential), 1);
    let c = w.client;
    w.sim
        .send_from(c, Transmit::tcp(sa(CLIENT), sa("203.0.113.1:443"), "?"));
    w.send("203.0.113.1:3478", "?");
    w.sim.run_for(ms(100));
    let r = w.sim.node::<ScriptedNode>(c).received();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].datagram.transport, Transport::Tcp);
    assert_eq!(
        EchoReflector::parse_reply(&r[0].datagram.contents),
        Some(sa("198.51.100.1:49152"))
    );
    assert_eq!(
        EchoReflector::parse_reply(&r[1].datagram.contents),
        Some(sa("198.51.100.1:49153"))
    );
}

#[test]
fn run_until_reports_stalls_with_a_trace() {
    let t0 = Instant::now();
    let black_hole = |sim: &mut Sim, n: u64| {
        let mut c = ScriptedNode::new();
        for i in 0..n {
            c.send_at(
                t0 + ms(100 * i),
                Transmit::udp(sa("203.0.113.9:1"), sa("198.51.100.99:7"), "hello?"),
            );
        }
        sim.add_host([ip("203.0.113.9")], Realm::Public, c);
    };

    // Time limit: traffic never stops, the predicate never holds.
    let mut sim = Sim::new(t0, 1);
    black_hole(&mut sim, 100);
    let err = sim
        .run_until(|_| false, Duration::from_secs(1), 10_000)
        .unwrap_err();
    assert_eq!(err.reason, StallReason::TimeLimit);
    assert_eq!(err.elapsed, Duration::from_secs(1));
    assert_eq!(sim.elapsed(), Duration::from_secs(1));
    assert_eq!(err.total_drops, 10);
    assert!(!err.trace.is_empty());
    let report = format!("{err:?}");
    assert!(report.contains("simulated time limit reached"), "{report}");
    assert!(
        report.contains(
            "+0.010s dropped udp 203.0.113.9:1 -> 198.51.100.99:7 (6 B): no route to 198.51.100.99"
        ),
        "{report}"
    );
    assert!(report.contains("+0.000s host 0 sent udp"), "{report}");

    // Idle: one packet, then nothing.
    let mut sim = Sim::new(t0, 1);
    black_hole(&mut sim, 1);
    let err = sim
        .run_until(|_| false, Duration::from_secs(10), 10_000)
        .unwrap_err();
    assert_eq!(err.reason, StallReason::Idle);
    assert_eq!(err.elapsed, ms(10));
    assert_eq!(err.trace.len(), 2);

    // Step limit.
    let mut sim = Sim::new(t0, 1);
    black_hole(&mut sim, 100);
    let err = sim
        .run_until(|_| false, Duration::from_secs(10), 3)
        .unwrap_err();
    assert_eq!(err.reason, StallReason::StepLimit);
    assert_eq!(err.steps, 3);
}

#[test]
fn same_seed_same_trace_with_jitter_and_loss() {
    let t0 = Instant::now();
    let run = || {
        let link = LinkConfig {
            loss: 0.2,
            jitter: ms(15),
            duplicate: 0.1,
            reorder: 0.1,
            ..LinkConfig::default()
        };
        let mut w = world_at(t0, nat_cfg(APD, APD, PortAllocation::Random), 99);
        w.sim.set_default_link(link);
        for i in 0..50 {
            let to = if i % 2 == 0 {
                "203.0.113.1:3478"
            } else {
                "203.0.113.2:3478"
            };
            w.send(to, "?");
            w.sim.run_for(ms(7));
        }
        w.sim.run_for(Duration::from_secs(1));
        (w.sim.trace().cloned().collect::<Vec<_>>(), w.sim.stats())
    };
    let (a, sa_) = run();
    let (b, sb) = run();
    assert_eq!(sa_, sb);
    assert_eq!(a, b);
    assert!(sa_.dropped > 0 && sa_.duplicated > 0);
}
