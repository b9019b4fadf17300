//! Port mapping in the `Session` (issue 14): a socket the router maps
//! (PCP, then NAT-PMP) is offered as a server-reflexive candidate, the
//! mapping is deleted on close, gathering waits for the router 1 s at most
//! (a mapping that comes later is not offered: deleted, reported), and a
//! relay-only session asks nothing. The router is played by hand,
//! answering the requests the session sends to its port 5351.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2p_connect::{CandidateKind, IceConfig, Session, SessionConfig, SessionEvent, SessionOutput};
use p2p_proto::{Datagram, Machine, Transmit};

fn host() -> SocketAddr {
    "10.0.2.2:40000".parse().unwrap()
}
fn gateway() -> IpAddr {
    "10.0.2.1".parse().unwrap()
}
fn router() -> SocketAddr {
    "10.0.2.1:5351".parse().unwrap()
}
fn mapped() -> SocketAddr {
    "198.20.113.102:40000".parse().unwrap()
}

fn session(relay_only: bool) -> Session {
    let mut ice = IceConfig::controlling().with_seed(3);
    ice.relay_only = relay_only;
    let mut c = SessionConfig::new(ice);
    c.hosts = vec![host()];
    c.port_mapping = vec![(host(), gateway())];
    c.rng_seed = Some(3);
    Session::new(c).unwrap()
}

fn drain(s: &mut Session) -> (Vec<Transmit>, Vec<SessionEvent>) {
    let (mut t, mut e) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        match s.poll_output() {
            Some(SessionOutput::Transmit(x)) => t.push(x),
            Some(SessionOutput::Event(x)) => e.push(x),
            Some(_) => {}
            None => break,
        }
    }
    (t, e)
}

/// A PCP router's success answer to a MAP request.
fn pcp_granted(req: &[u8], lifetime: u32, external: SocketAddr) -> Vec<u8> {
    let mut b = vec![0u8; 60];
    b[0] = 2;
    b[1] = 0x81;
    b[4..8].copy_from_slice(&lifetime.to_be_bytes());
    b[24..42].copy_from_slice(&req[24..42]);
    b[42..44].copy_from_slice(&external.port().to_be_bytes());
    let IpAddr::V4(v4) = external.ip() else {
        panic!()
    };
    b[44..60].copy_from_slice(&v4.to_ipv6_mapped().octets());
    b
}

fn to_router(t: &[Transmit]) -> Vec<&Transmit> {
    t.iter().filter(|t| t.destination == router()).collect()
}

#[test]
fn a_mapped_port_is_offered_as_a_server_reflexive_candidate_and_deleted_on_close() {
    let t0 = Instant::now();
    let mut s = session(false);
    s.handle_timeout(t0);
    let (t, _) = drain(&mut s);
    let asks = to_router(&t);
    assert_eq!(asks.len(), 1, "one PCP MAP request");
    assert_eq!(asks[0].source, host());
    let req = asks[0].contents.clone();
    let answer = pcp_granted(&req, 7200, mapped());
    let now = t0 + Duration::from_millis(5);
    let _ = s.handle_input(now, Datagram::udp(router(), host(), &answer));
    let (_, e) = drain(&mut s);
    assert!(e.contains(&SessionEvent::PortMapped {
        internal: host(),
        external: mapped()
    }));
    let srflx: Vec<_> = e
        .iter()
        .filter_map(|e| match e {
            SessionEvent::LocalCandidate(c) if c.kind() == CandidateKind::ServerReflexive => {
                Some(c.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(srflx.len(), 1, "{e:?}");
    assert_eq!((srflx[0].address(), srflx[0].base()), (mapped(), host()));
    // Gathering had only the router to wait for.
    assert!(e.contains(&SessionEvent::GatheringComplete), "{e:?}");

    // Close: the mapping is deleted (lifetime 0, same nonce), then Closed.
    let now = now + Duration::from_secs(1);
    s.close(now);
    let (t, e) = drain(&mut s);
    assert!(!e.contains(&SessionEvent::Closed));
    let del = to_router(&t);
    assert_eq!(del.len(), 1);
    assert_eq!(del[0].contents[4..8], [0, 0, 0, 0]);
    assert_eq!(del[0].contents[24..36], req[24..36]);
    let answer = pcp_granted(&del[0].contents, 0, mapped());
    let _ = s.handle_input(now, Datagram::udp(router(), host(), &answer));
    let (_, e) = drain(&mut s);
    assert!(e.contains(&SessionEvent::Closed), "{e:?}");
}

/// Drive `s` on its own timers until `until` (bounded in steps), with
/// `answer` playing the router: what it answers to each request to port 5351 at the simulated time it
/// goes out; returns (time, event) pairs and the router's requests.
fn run(
    s: &mut Session,
    t0: Instant,
    until: Duration,
    mut answer: impl FnMut(Duration, &Transmit) -> Option<Vec<u8>>,
) -> (Vec<(Duration, SessionEvent)>, usize) {
    let (mut events, mut asked) = (Vec::new(), 0);
    let mut now = t0;
    for _ in 0..200 {
        let (t, e) = drain(s);
        events.extend(e.into_iter().map(|e| (now - t0, e)));
        let answers: Vec<_> = to_router(&t)
            .into_iter()
            .filter_map(|t| answer(now - t0, t))
            .collect();
        asked += to_router(&t).len();
        for a in &answers {
            let _ = s.handle_input(now, Datagram::udp(router(), host(), a));
        }
        if !answers.is_empty() {
            continue;
        }
        match s.poll_timeout() {
            Some(at) if at - t0 <= until => {
                now = at;
                s.handle_timeout(now);
            }
            _ => break,
        }
    }
    (events, asked)
}

fn at_of(
    events: &[(Duration, SessionEvent)],
    f: impl Fn(&SessionEvent) -> bool,
) -> Option<Duration> {
    events.iter().find(|(_, e)| f(e)).map(|(at, _)| *at)
}

fn mapped_candidate(e: &SessionEvent) -> bool {
    matches!(e, SessionEvent::LocalCandidate(c)
        if c.kind() == CandidateKind::ServerReflexive && c.address() == mapped())
}

#[test]
fn without_a_router_answering_gathering_completes_after_the_one_second_wait() {
    let t0 = Instant::now();
    let mut s = session(false);
    s.handle_timeout(t0);
    let (events, asked) = run(&mut s, t0, Duration::from_secs(10), |_, _| None);
    let done = at_of(&events, |e| *e == SessionEvent::GatheringComplete);
    // PortMapConfig::settle_timeout; it was 3.5 s (PCP 250 + 500 + 1000 ms,
    // NAT-PMP the same) before.
    assert_eq!(done, Some(Duration::from_secs(1)));
    // The mapper goes on asking, and reports its failure at the end.
    assert_eq!(asked, 9, "3 PCP requests, then 3 x 2 NAT-PMP ones");
    let failed = at_of(
        &events,
        |e| matches!(e, SessionEvent::PortMapFailed { gateway: g, .. } if *g == gateway()),
    );
    assert_eq!(failed, Some(Duration::from_millis(3500)));
}

#[test]
fn a_mapping_granted_within_the_wait_is_offered_before_the_end_of_candidates() {
    let t0 = Instant::now();
    let mut s = session(false);
    s.handle_timeout(t0);
    // The first two PCP requests are lost; the third (750 ms) is answered.
    let (events, _) = run(&mut s, t0, Duration::from_secs(5), |at, t| {
        (at >= Duration::from_millis(750)).then(|| pcp_granted(&t.contents, 7200, mapped()))
    });
    let offered = at_of(&events, mapped_candidate).expect("the mapped candidate is offered");
    let done = at_of(&events, |e| *e == SessionEvent::GatheringComplete).expect("gathering ends");
    assert_eq!(offered, Duration::from_millis(750));
    assert!(
        offered <= done,
        "offered at {offered:?}, gathering ended at {done:?}"
    );
    assert!(events
        .iter()
        .any(|(_, e)| matches!(e, SessionEvent::PortMapped { .. })));
}

#[test]
fn a_mapping_granted_after_the_end_of_candidates_is_not_offered_and_is_deleted() {
    let t0 = Instant::now();
    let mut s = session(false);
    s.handle_timeout(t0);
    // The router answers only NAT-PMP, and only from 1.75 s on (after
    // the 1 s wait): the mapping comes after end-of-candidates.
    let mut deletes = 0;
    let (events, _) = run(&mut s, t0, Duration::from_secs(5), |at, t| {
        let nat_pmp = t.contents.first() == Some(&0);
        if !nat_pmp || at < Duration::from_millis(1750) {
            return None;
        }
        match t.contents.get(1) {
            Some(0) => Some(vec![0, 128, 0, 0, 0, 0, 0, 9, 198, 20, 113, 102]),
            Some(1) if t.contents[8..12] == [0, 0, 0, 0] => {
                deletes += 1;
                Some(vec![0, 129, 0, 0, 0, 0, 0, 9, 0x9c, 0x40, 0, 0, 0, 0, 0, 0])
            }
            Some(1) => Some(vec![
                0, 129, 0, 0, 0, 0, 0, 9, 0x9c, 0x40, 0x9c, 0x40, 0, 0, 0x1c, 0x20,
            ]),
            _ => None,
        }
    });
    let done = at_of(&events, |e| *e == SessionEvent::GatheringComplete);
    assert_eq!(done, Some(Duration::from_secs(1)));
    assert_eq!(at_of(&events, mapped_candidate), None, "{events:?}");
    assert!(!events
        .iter()
        .any(|(_, e)| matches!(e, SessionEvent::PortMapped { .. })));
    let failed = events.iter().find_map(|(at, e)| match e {
        SessionEvent::PortMapFailed { reason, .. } => Some((*at, reason.clone())),
        _ => None,
    });
    let (at, reason) = failed.expect("reported");
    assert_eq!(at, Duration::from_millis(1750));
    assert!(reason.contains("after the end of candidates"), "{reason}");
    assert!(reason.contains("deleted"), "{reason}");
    assert_eq!(deletes, 1, "the mapping is deleted at once");
}

#[test]
fn a_upnp_mapping_after_the_end_of_candidates_is_reported_not_offered() {
    let t0 = Instant::now();
    let mut s = session(false);
    s.handle_timeout(t0);
    let (events, _) = run(&mut s, t0, Duration::from_secs(1), |_, _| None);
    assert!(events
        .iter()
        .any(|(_, e)| *e == SessionEvent::GatheringComplete));
    let now = t0 + Duration::from_millis(1500);
    s.add_port_mapping(now, host(), mapped(), gateway());
    let (_, e) = drain(&mut s);
    assert!(!e.iter().any(mapped_candidate), "{e:?}");
    assert!(
        e.iter()
            .any(|e| matches!(e, SessionEvent::PortMapFailed { reason, .. }
            if reason.contains("too late to offer"))),
        "{e:?}"
    );
    // Before the end, it is offered (the driver's UPnP path).
    let mut s = session(false);
    s.handle_timeout(t0);
    let _ = drain(&mut s);
    s.add_port_mapping(t0 + Duration::from_millis(300), host(), mapped(), gateway());
    let (_, e) = drain(&mut s);
    assert!(e.iter().any(mapped_candidate), "{e:?}");
}

#[test]
fn a_relay_only_session_asks_the_router_nothing() {
    let t0 = Instant::now();
    let mut s = session(true);
    s.handle_timeout(t0);
    let mut asked = 0;
    let mut now = t0;
    while now - t0 < Duration::from_secs(10) {
        asked += to_router(&drain(&mut s).0).len();
        let Some(at) = s.poll_timeout() else { break };
        now = at;
        s.handle_timeout(now);
    }
    assert_eq!(asked, 0);
}

/// A session whose only port mapping is sought outside it (the driver's
/// UPnP search): no PCP mapper, so only that wait can hold gathering.
fn session_seeking_upnp(relay_only: bool) -> Session {
    let mut ice = IceConfig::controlling().with_seed(5);
    ice.relay_only = relay_only;
    let mut c = SessionConfig::new(ice);
    c.hosts = vec![host()];
    c.external_port_mapping = true;
    c.rng_seed = Some(5);
    Session::new(c).unwrap()
}

fn gathering_complete(e: &[SessionEvent]) -> bool {
    e.contains(&SessionEvent::GatheringComplete)
}

#[test]
fn a_upnp_search_holds_the_end_of_candidates_until_its_mapping_which_is_offered_first() {
    let t0 = Instant::now();
    let mut s = session_seeking_upnp(false);
    s.handle_timeout(t0);
    let (_, e) = drain(&mut s);
    assert!(!gathering_complete(&e), "gathering waits for UPnP: {e:?}");
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    // The IGD answers after 400 ms: offered, then gathering ends at once.
    s.add_port_mapping(t0 + Duration::from_millis(400), host(), mapped(), gateway());
    let (_, e) = drain(&mut s);
    let offered = e.iter().position(mapped_candidate).expect("offered");
    let done = e
        .iter()
        .position(|e| *e == SessionEvent::GatheringComplete)
        .expect("gathering ends with the mapping");
    assert!(offered < done, "{e:?}");
}

#[test]
fn a_upnp_search_without_a_gateway_ends_the_wait_at_its_outcome_or_after_one_second() {
    let t0 = Instant::now();
    // The search fails after 200 ms: gathering ends then.
    let mut s = session_seeking_upnp(false);
    s.handle_timeout(t0);
    let _ = drain(&mut s);
    s.handle_timeout(t0 + Duration::from_millis(100));
    assert!(!gathering_complete(&drain(&mut s).1));
    s.no_port_mapping(t0 + Duration::from_millis(200));
    assert!(gathering_complete(&drain(&mut s).1));
    // The search never ends: gathering ends at the 1 s bound.
    let mut s = session_seeking_upnp(false);
    s.handle_timeout(t0);
    let (events, _) = run(&mut s, t0, Duration::from_secs(5), |_, _| None);
    let done = at_of(&events, |e| *e == SessionEvent::GatheringComplete);
    assert_eq!(done, Some(Duration::from_secs(1)));
    // A mapping found after that is not offered.
    s.add_port_mapping(
        t0 + Duration::from_millis(1200),
        host(),
        mapped(),
        gateway(),
    );
    assert!(!drain(&mut s).1.iter().any(mapped_candidate));
}

#[test]
fn a_relay_only_session_does_not_wait_for_a_upnp_search() {
    let t0 = Instant::now();
    let mut s = session_seeking_upnp(true);
    s.handle_timeout(t0);
    assert!(gathering_complete(&drain(&mut s).1));
}
