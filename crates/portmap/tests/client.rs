//! The client against a toy router on a simulated clock: PCP first, the
//! NAT-PMP fall-back, give-up timing, renewal at half the lifetime, loss
//! of an unrenewed mapping, deletion on close.

#![allow(clippy::disallowed_methods)] // t0 from the real clock; simulated after
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use p2p_portmap::{
    natpmp, pcp, Method, PortMapConfig, PortMapError, PortMapEvent, PortMapOutput, PortMapper,
};
use p2p_proto::{Datagram, Handled, Machine, Transmit};

fn local() -> SocketAddr {
    "10.0.2.2:40000".parse().unwrap()
}
fn gateway() -> SocketAddr {
    "10.0.2.1:5351".parse().unwrap()
}
fn external() -> SocketAddr {
    "203.0.113.102:40000".parse().unwrap()
}

fn mapper() -> PortMapper {
    PortMapper::new(PortMapConfig::new(gateway().ip(), local()).with_seed(1))
}

fn drain(m: &mut PortMapper) -> (Vec<Transmit>, Vec<PortMapEvent>) {
    let (mut t, mut e) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        match m.poll_output() {
            Some(PortMapOutput::Transmit(x)) => t.push(x),
            Some(PortMapOutput::Event(x)) => e.push(x),
            Some(_) => {}
            None => break,
        }
    }
    (t, e)
}

fn answer(m: &mut PortMapper, now: Instant, bytes: &[u8]) -> Handled {
    m.handle_input(now, Datagram::udp(gateway(), local(), bytes))
}

#[test]
fn a_pcp_router_grants_the_mapping_and_it_is_reported_once() {
    let t0 = Instant::now();
    let mut m = mapper();
    m.handle_timeout(t0);
    let (t, e) = drain(&mut m);
    assert!(e.is_empty());
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].source, t[0].destination), (local(), gateway()));
    assert_eq!(t[0].contents.len(), pcp::MAP_LEN);
    assert!(!m.is_settled());
    let ok = pcp_answer(&t[0].contents, 0, 3600, external());
    assert_eq!(answer(&mut m, t0, &ok), Handled::Taken);
    let (t, e) = drain(&mut m);
    assert!(t.is_empty());
    let [PortMapEvent::Mapped(got)] = e[..] else {
        panic!("{e:?}")
    };
    assert_eq!(
        (got.external, got.internal, got.method),
        (external(), local(), Method::Pcp)
    );
    assert_eq!(got.lifetime, Duration::from_secs(3600));
    assert!(m.is_settled());
    // The same answer again (a duplicate) says nothing new.
    let _ = answer(&mut m, t0, &ok);
    assert_eq!(drain(&mut m), (vec![], vec![]));
}

#[test]
fn an_answer_with_another_nonce_or_from_elsewhere_is_ignored() {
    let t0 = Instant::now();
    let mut m = mapper();
    m.handle_timeout(t0);
    let (t, _) = drain(&mut m);
    let mut forged = pcp_answer(&t[0].contents, 0, 3600, external());
    forged[24] ^= 1;
    assert_eq!(answer(&mut m, t0, &forged), Handled::Taken);
    assert_eq!(drain(&mut m), (vec![], vec![]));
    let ok = pcp_answer(&t[0].contents, 0, 3600, external());
    let elsewhere = "10.0.2.9:5351".parse().unwrap();
    assert_eq!(
        m.handle_input(t0, Datagram::udp(elsewhere, local(), &ok)),
        Handled::NotMine
    );
    assert!(m.mapping().is_none());
}

#[test]
fn a_nat_pmp_router_refusing_the_pcp_version_gets_nat_pmp_requests() {
    let t0 = Instant::now();
    let mut m = mapper();
    m.handle_timeout(t0);
    let _ = drain(&mut m);
    let _ = answer(&mut m, t0, &natpmp_unsupported(1));
    let (t, e) = drain(&mut m);
    assert!(e.is_empty());
    let sent: Vec<_> = t.iter().map(|t| t.contents.clone()).collect();
    let map_req = natpmp::map_request(p2p_proto::Transport::Udp, 40000, 40000, 7200);
    assert_eq!(
        sent,
        [
            natpmp::external_address_request().to_vec(),
            map_req.to_vec()
        ]
    );
    // Answers in either order.
    let _ = answer(&mut m, t0, &natpmp_mapped(&map_req, 41000, 7200));
    assert!(drain(&mut m).1.is_empty(), "not before the address");
    let _ = answer(&mut m, t0, &natpmp_address([203, 0, 113, 102]));
    let (_, e) = drain(&mut m);
    let [PortMapEvent::Mapped(got)] = e[..] else {
        panic!("{e:?}")
    };
    assert_eq!(got.external, "203.0.113.102:41000".parse().unwrap());
    assert_eq!(got.method, Method::NatPmp);
}

#[test]
fn with_no_router_answering_it_fails_after_three_tries_of_each_protocol() {
    let t0 = Instant::now();
    let mut m = mapper();
    m.handle_timeout(t0);
    let mut sent = drain(&mut m).0.len();
    let mut events = Vec::new();
    for _ in 0..20 {
        let Some(at) = m.poll_timeout() else { break };
        m.handle_timeout(at);
        let (t, e) = drain(&mut m);
        sent += t.len();
        events.extend(e.into_iter().map(|e| (at - t0, e)));
    }
    // PCP: 3 requests; NAT-PMP: 3 x (address + map).
    assert_eq!(sent, 3 + 6);
    assert_eq!(
        events,
        [(
            Duration::from_millis(3500),
            PortMapEvent::Failed(PortMapError::NoAnswer)
        )]
    );
    assert!(m.is_settled() && m.poll_timeout().is_none());
}

#[test]
fn a_silent_router_settles_the_mapper_after_the_settle_timeout_while_it_goes_on_asking() {
    let t0 = Instant::now();
    let mut m = mapper();
    m.handle_timeout(t0);
    let mut sent = drain(&mut m).0.len();
    let mut settled_at = None;
    let mut late = None;
    for _ in 0..20 {
        let Some(at) = m.poll_timeout() else { break };
        m.handle_timeout(at);
        let (t, _) = drain(&mut m);
        sent += t.len();
        if m.is_settled() && settled_at.is_none() {
            settled_at = Some(at - t0);
            assert_eq!(sent, 3, "three PCP requests by then");
            assert!(m.mapping().is_none());
        }
        // NAT-PMP's first pair, after the wait: the router answers it.
        if late.is_none() && t.len() == 2 {
            late = Some((at, t[1].contents.clone()));
            break;
        }
    }
    assert_eq!(settled_at, Some(Duration::from_secs(1)));
    // A mapping granted after the wait still comes, as usual.
    let (at, map_req) = late.expect("NAT-PMP asked after the wait");
    assert_eq!(at - t0, Duration::from_millis(1750));
    let _ = answer(&mut m, at, &natpmp_address([203, 0, 113, 102]));
    let _ = answer(&mut m, at, &natpmp_mapped(&map_req, 41000, 7200));
    let (_, e) = drain(&mut m);
    assert!(
        matches!(e[..], [PortMapEvent::Mapped(got)] if got.method == Method::NatPmp),
        "{e:?}"
    );
}

#[test]
fn a_settle_timeout_of_max_waits_until_the_mapper_gives_up() {
    let t0 = Instant::now();
    let mut c = PortMapConfig::new(gateway().ip(), local()).with_seed(1);
    c.settle_timeout = Duration::MAX;
    let mut m = PortMapper::new(c);
    m.handle_timeout(t0);
    let mut settled_at = None;
    for _ in 0..20 {
        let Some(at) = m.poll_timeout() else { break };
        m.handle_timeout(at);
        let _ = drain(&mut m);
        if m.is_settled() {
            settled_at = Some(at - t0);
            break;
        }
    }
    assert_eq!(settled_at, Some(Duration::from_millis(3500)));
}

#[test]
fn a_refusal_ends_it_with_the_result_code() {
    let t0 = Instant::now();
    let mut m = mapper();
    m.handle_timeout(t0);
    let (t, _) = drain(&mut m);
    let no = pcp_answer(&t[0].contents, 2, 30, external()); // NOT_AUTHORIZED
    let _ = answer(&mut m, t0, &no);
    let (t, e) = drain(&mut m);
    assert!(t.is_empty());
    assert_eq!(
        e,
        [PortMapEvent::Failed(PortMapError::Refused {
            method: Method::Pcp,
            code: 2
        })]
    );
}

fn granted(lifetime: u32) -> (PortMapper, Instant, Vec<u8>) {
    let t0 = Instant::now();
    let mut m = mapper();
    m.handle_timeout(t0);
    let (t, _) = drain(&mut m);
    let req = t[0].contents.clone();
    let _ = answer(&mut m, t0, &pcp_answer(&req, 0, lifetime, external()));
    let _ = drain(&mut m);
    (m, t0, req)
}

#[test]
fn the_mapping_is_renewed_at_half_its_lifetime_with_the_same_nonce_and_port() {
    let (mut m, t0, req) = granted(120);
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(60)));
    m.handle_timeout(t0 + Duration::from_secs(60));
    let (t, e) = drain(&mut m);
    assert!(e.is_empty());
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].contents[24..36], req[24..36], "same nonce");
    assert_eq!(
        t[0].contents[42..44],
        external().port().to_be_bytes(),
        "suggested port"
    );
    let now = t0 + Duration::from_secs(60);
    let _ = answer(&mut m, now, &pcp_answer(&t[0].contents, 0, 120, external()));
    assert_eq!(drain(&mut m), (vec![], vec![]), "unchanged: nothing to say");
    assert_eq!(m.poll_timeout(), Some(now + Duration::from_secs(60)));
}

#[test]
fn an_unrenewed_mapping_is_lost_when_it_expires() {
    let (mut m, t0, _) = granted(20);
    let mut events = Vec::new();
    for _ in 0..50 {
        let Some(at) = m.poll_timeout() else { break };
        m.handle_timeout(at);
        events.extend(drain(&mut m).1.into_iter().map(|e| (at - t0, e)));
    }
    assert_eq!(events, [(Duration::from_secs(20), PortMapEvent::Lost)]);
    assert!(m.mapping().is_none());
}

#[test]
fn close_deletes_the_mapping_with_lifetime_zero_and_reports_deleted() {
    let (mut m, t0, req) = granted(3600);
    let now = t0 + Duration::from_secs(5);
    m.close(now);
    let (t, e) = drain(&mut m);
    assert!(e.is_empty());
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].contents[4..8], [0, 0, 0, 0], "lifetime 0");
    assert_eq!(t[0].contents[24..36], req[24..36], "same nonce");
    let _ = answer(&mut m, now, &pcp_answer(&t[0].contents, 0, 0, external()));
    assert_eq!(drain(&mut m).1, [PortMapEvent::Deleted]);
    assert!(m.is_closed() && m.poll_timeout().is_none());
    m.close(now);
    assert_eq!(drain(&mut m), (vec![], vec![]));
}

#[test]
fn close_gives_up_on_a_silent_router_after_its_tries() {
    let (mut m, t0, _) = granted(3600);
    m.close(t0);
    let mut sent = drain(&mut m).0.len();
    let mut events = Vec::new();
    for _ in 0..20 {
        let Some(at) = m.poll_timeout() else { break };
        m.handle_timeout(at);
        let (t, e) = drain(&mut m);
        sent += t.len();
        events.extend(e.into_iter().map(|e| (at - t0, e)));
    }
    assert_eq!(sent, 3);
    assert_eq!(
        events,
        [(Duration::from_millis(1750), PortMapEvent::Deleted)]
    );
}

#[test]
fn closing_before_anything_was_asked_deletes_nothing() {
    let t0 = Instant::now();
    let mut m = mapper();
    m.close(t0);
    assert_eq!(drain(&mut m), (vec![], vec![PortMapEvent::Deleted]));
}

#[test]
fn nat_pmp_only_skips_pcp_and_deletes_with_nat_pmp() {
    let t0 = Instant::now();
    let mut c = PortMapConfig::new(gateway().ip(), local()).with_seed(2);
    c.pcp = false;
    let mut m = PortMapper::new(c);
    m.handle_timeout(t0);
    let (t, _) = drain(&mut m);
    assert_eq!(t.len(), 2);
    assert!(t.iter().all(|t| t.contents[0] == natpmp::VERSION));
    let _ = answer(&mut m, t0, &natpmp_address([203, 0, 113, 102]));
    let _ = answer(&mut m, t0, &natpmp_mapped(&t[1].contents, 40000, 7200));
    assert!(m.mapping().is_some());
    let _ = drain(&mut m);
    m.close(t0);
    let (t, _) = drain(&mut m);
    assert_eq!(
        t[0].contents,
        natpmp::map_request(p2p_proto::Transport::Udp, 40000, 0, 0)
    );
    let mut del = natpmp_mapped(&t[0].contents, 0, 0);
    del[1] = 129;
    let _ = answer(&mut m, t0, &del);
    assert_eq!(drain(&mut m).1, [PortMapEvent::Deleted]);
}
