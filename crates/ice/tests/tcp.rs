//! ICE-TCP (RFC 6544) between two agents, through an in-test network that
//! carries TCP as connections: an active candidate's transmit (source
//! `IP:9`) opens a connection from a fresh port of that IP, and what comes
//! back on it reaches the agent at `IP:9`, as a driver reports it.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_ice::{
    Candidate, CandidateKind, IceAgent, IceConfig, IceEvent, IceOutput, IceState, TcpType,
    ACTIVE_TCP_PORT,
};
use p2p_proto::{Datagram, Machine, Transmit, Transport};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The network: UDP blocked or not; TCP connections (active end as the
/// agent names it, the port the peer sees, the peer's address).
struct Net {
    udp_blocked: bool,
    conns: Vec<(SocketAddr, SocketAddr, SocketAddr)>,
    next_port: u16,
    /// (to A?, datagram) in flight.
    wire: Vec<(bool, Transport, SocketAddr, SocketAddr, Vec<u8>)>,
    tcp_seen: usize,
}

impl Net {
    fn carry(&mut self, to_a: bool, t: Transmit) {
        match t.transport {
            Transport::Udp if self.udp_blocked => {}
            Transport::Udp => {
                self.wire
                    .push((to_a, t.transport, t.source, t.destination, t.contents))
            }
            _ => {
                self.tcp_seen += 1;
                let (source, destination) = if t.source.port() == ACTIVE_TCP_PORT {
                    // Out on the active end's connection (opened if new).
                    let known = self
                        .conns
                        .iter()
                        .find(|c| c.0 == t.source && c.2 == t.destination)
                        .map(|c| c.1);
                    let port = known.unwrap_or_else(|| {
                        self.next_port += 1;
                        let p = SocketAddr::new(t.source.ip(), self.next_port);
                        self.conns.push((t.source, p, t.destination));
                        p
                    });
                    (port, t.destination)
                } else {
                    // From the passive end: only on a connection the peer
                    // opened, and it arrives at the active end's `IP:9`.
                    let Some(c) = self
                        .conns
                        .iter()
                        .find(|c| c.1 == t.destination && c.2 == t.source)
                    else {
                        return;
                    };
                    (t.source, c.0)
                };
                self.wire
                    .push((to_a, Transport::Tcp, source, destination, t.contents));
            }
        }
    }
}

fn drain(ag: &mut IceAgent, to_a: bool, net: &mut Net, events: &mut Vec<IceEvent>) {
    while let Some(o) = ag.poll_output() {
        match o {
            IceOutput::Transmit(t) => net.carry(to_a, t),
            IceOutput::Event(e) => events.push(e),
            _ => {}
        }
    }
}

struct Run {
    a: IceAgent,
    b: IceAgent,
    net: Net,
    a_events: Vec<IceEvent>,
    b_events: Vec<IceEvent>,
}

fn setup(udp_blocked: bool) -> (Run, Instant) {
    let t0 = Instant::now();
    let mut a = IceAgent::new(IceConfig::controlling().with_seed(1));
    let mut b = IceAgent::new(IceConfig::controlled().with_seed(2));
    // A behind a firewall: UDP and TCP host candidates; B public, passive.
    let mut from_a = Vec::new();
    let mut from_b = Vec::new();
    from_a.push(
        a.add_local_candidate(t0, Candidate::host(addr("10.0.0.1:5000")))
            .unwrap(),
    );
    from_a.push(
        a.add_local_candidate(t0, Candidate::host_tcp(addr("10.0.0.1:0"), TcpType::Active))
            .unwrap(),
    );
    from_b.push(
        b.add_local_candidate(t0, Candidate::host(addr("10.0.0.2:6000")))
            .unwrap(),
    );
    from_b.push(
        b.add_local_candidate(
            t0,
            Candidate::host_tcp(addr("10.0.0.2:7000"), TcpType::Passive),
        )
        .unwrap(),
    );
    // Signalled as text and read back.
    for c in from_a {
        b.add_remote_candidate(t0, c.to_string().parse().unwrap())
            .unwrap();
    }
    for c in from_b {
        a.add_remote_candidate(t0, c.to_string().parse().unwrap())
            .unwrap();
    }
    a.end_of_local_candidates();
    b.end_of_local_candidates();
    a.end_of_remote_candidates();
    b.end_of_remote_candidates();
    let (ua, ub) = (a.local_credentials().clone(), b.local_credentials().clone());
    a.set_remote_credentials(t0, &ub.ufrag, &ub.pwd).unwrap();
    b.set_remote_credentials(t0, &ua.ufrag, &ua.pwd).unwrap();
    let net = Net {
        udp_blocked,
        conns: Vec::new(),
        next_port: 40000,
        wire: Vec::new(),
        tcp_seen: 0,
    };
    let run = Run {
        a,
        b,
        net,
        a_events: Vec::new(),
        b_events: Vec::new(),
    };
    (run, t0)
}

/// Deliver everything in flight, then advance to the next timeout; until
/// `done` or `limit` of simulated time (and 10 000 steps).
fn run_until(r: &mut Run, t0: Instant, limit: Duration, done: impl Fn(&Run) -> bool) -> Duration {
    let mut now = t0;
    r.a.handle_timeout(now);
    r.b.handle_timeout(now);
    for _ in 0..10_000 {
        drain(&mut r.a, false, &mut r.net, &mut r.a_events);
        drain(&mut r.b, true, &mut r.net, &mut r.b_events);
        if done(r) {
            return now - t0;
        }
        let wire = std::mem::take(&mut r.net.wire);
        if !wire.is_empty() {
            // 10 ms one way.
            now += Duration::from_millis(10);
            for (to_a, tr, src, dst, bytes) in wire {
                let ag = if to_a { &mut r.a } else { &mut r.b };
                let _ = ag.handle_input(now, Datagram::new(tr, src, dst, &bytes));
            }
            continue;
        }
        let next = [r.a.poll_timeout(), r.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else { break };
        now = next.max(now);
        assert!(
            now - t0 <= limit,
            "not done after {limit:?}: {}\n{}",
            r.a.stats(),
            r.b.stats()
        );
        r.a.handle_timeout(now);
        r.b.handle_timeout(now);
    }
    panic!("not done: {}\n{}", r.a.stats(), r.b.stats());
}

fn connected(ag: &IceAgent) -> bool {
    matches!(ag.state(), IceState::Connected | IceState::Completed)
}

#[test]
fn tcp_candidates_signal_their_type_and_an_active_one_port_9() {
    let (r, _) = setup(false);
    let tcp: Vec<String> =
        r.a.local_candidates()
            .iter()
            .chain(r.b.local_candidates())
            .filter(|c| c.transport() == Transport::Tcp)
            .map(|c| c.to_string())
            .collect();
    assert_eq!(tcp.len(), 2);
    assert!(
        tcp[0].contains("tcp") && tcp[0].ends_with("10.0.0.1 9 typ host tcptype active"),
        "{}",
        tcp[0]
    );
    assert!(
        tcp[1].ends_with("10.0.0.2 7000 typ host tcptype passive"),
        "{}",
        tcp[1]
    );
    // UDP host above TCP host (type preference 126 against 90).
    let a_udp = r.a.local_candidates()[0].priority();
    let a_tcp = r.a.local_candidates()[1].priority();
    assert!(a_udp > a_tcp && a_tcp >> 24 == 90);
    // RFC 6544 §4.2: direction preference 6 for active, 4 for passive.
    assert_eq!(((a_tcp >> 8) & 0xFFFF) >> 13, 6);
    let b_tcp = r.b.local_candidates()[1].priority();
    assert_eq!(((b_tcp >> 8) & 0xFFFF) >> 13, 4);
    // Pairs: the active side pairs its active candidate with the passive
    // one; the passive side pairs nothing over TCP in advance.
    let a_tcp_pairs =
        r.a.stats()
            .pairs
            .iter()
            .filter(|p| p.local.transport() == Transport::Tcp)
            .count();
    let b_tcp_pairs =
        r.b.stats()
            .pairs
            .iter()
            .filter(|p| p.local.transport() == Transport::Tcp)
            .count();
    assert_eq!((a_tcp_pairs, b_tcp_pairs), (1, 0));
}

#[test]
fn with_udp_blocked_ice_tcp_connects_active_to_passive_directly() {
    let (mut r, t0) = setup(true);
    let took = run_until(&mut r, t0, Duration::from_secs(15), |r| {
        connected(&r.a) && connected(&r.b)
    });
    let (l, rm) = r.a.selected_pair().unwrap();
    assert_eq!(
        (l.transport(), l.tcp_type()),
        (Transport::Tcp, Some(TcpType::Active))
    );
    assert_eq!(rm.address(), addr("10.0.0.2:7000"));
    assert_eq!(rm.kind(), CandidateKind::Host);
    // B learnt A's end of the connection as a peer-reflexive active candidate.
    let (l, rm) = r.b.selected_pair().unwrap();
    assert_eq!(
        (l.tcp_type(), l.address()),
        (Some(TcpType::Passive), addr("10.0.0.2:7000"))
    );
    assert_eq!(
        (rm.kind(), rm.tcp_type()),
        (CandidateKind::PeerReflexive, Some(TcpType::Active))
    );
    assert_eq!(rm.address().ip(), addr("10.0.0.1:1").ip());
    // Data both ways over the connection.
    let now = t0 + took;
    r.a.send(now, b"over tcp".to_vec()).unwrap();
    let t = r.a.poll_output().and_then(IceOutput::transmit).unwrap();
    assert_eq!(
        (t.transport, t.source.port()),
        (Transport::Tcp, ACTIVE_TCP_PORT)
    );
    r.b.send(now, b"back".to_vec()).unwrap();
    let t = r.b.poll_output().and_then(IceOutput::transmit).unwrap();
    assert_eq!(
        (t.transport, t.source),
        (Transport::Tcp, addr("10.0.0.2:7000"))
    );
    // One connection was opened, not one per check.
    assert_eq!(r.net.conns.len(), 1);
    assert!(r
        .a_events
        .iter()
        .any(|e| matches!(e, IceEvent::SelectedPair { .. })));
}

#[test]
fn where_udp_works_the_udp_pair_wins() {
    let (mut r, t0) = setup(false);
    run_until(&mut r, t0, Duration::from_secs(15), |r| {
        connected(&r.a) && connected(&r.b) && r.a.state() == IceState::Completed
    });
    let (l, _) = r.a.selected_pair().unwrap();
    assert_eq!(l.transport(), Transport::Udp);
}
