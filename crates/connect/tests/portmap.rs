//! Port mapping in the `Session` (issue 14): a socket the router maps
//! (PCP, then NAT-PMP) is offered as a server-reflexive candidate, the
//! mapping is deleted on close, gathering waits for the router (bounded),
//! and a relay-only session asks nothing. The router is played by hand,
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

#[test]
fn without_a_router_answering_gathering_completes_after_at_most_four_seconds() {
    let t0 = Instant::now();
    let mut s = session(false);
    s.handle_timeout(t0);
    let mut asked = 0;
    let mut done = None;
    let mut failed = false;
    let mut now = t0;
    for _ in 0..200 {
        let (t, e) = drain(&mut s);
        asked += to_router(&t).len();
        failed |= e.iter().any(
            |e| matches!(e, SessionEvent::PortMapFailed { gateway: g, .. } if *g == gateway()),
        );
        if e.contains(&SessionEvent::GatheringComplete) {
            done = Some(now);
            break;
        }
        let Some(at) = s.poll_timeout() else { break };
        now = at;
        s.handle_timeout(now);
    }
    assert!(failed, "the failure is reported");
    assert_eq!(asked, 9, "3 PCP requests, then 3 x 2 NAT-PMP ones");
    let done = done.expect("gathering completes");
    // PCP 250 + 500 + 1000 ms, NAT-PMP the same.
    assert_eq!(done - t0, Duration::from_millis(3500));
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
