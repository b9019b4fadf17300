//! Answering connectivity checks (RFC 8445 §7.3) and handling the answers to
//! our own (§7.2.5), with STUN messages written by hand.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_ice::{
    Candidate, CandidateKind, IceAgent, IceConfig, IceEvent, IceOutput, IceRole, PairState, TcpType,
};
use p2p_proto::{Datagram, Handled, Machine, Transmit, Transport};
use p2p_stun::attr::{
    ErrorCode, IceControlled, IceControlling, Priority, UseCandidate, Username, XorMappedAddress,
};
use p2p_stun::{Key, Message, MessageBuilder, MessageClass, MessageType, Method, TransactionId};

const PEER_UFRAG: &str = "peer";
const PEER_PWD: &str = "peerpasswordpeerpassword";
const LOCAL: &str = "10.0.0.1:5000";
const REMOTE: &str = "10.0.0.2:6000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Every output queued: the transmits and the events, each in order.
fn outputs(a: &mut IceAgent) -> (Vec<Transmit>, Vec<IceEvent>) {
    let (mut transmits, mut events) = (Vec::new(), Vec::new());
    while let Some(out) = a.poll_output() {
        match out {
            IceOutput::Transmit(t) => transmits.push(t),
            IceOutput::Event(e) => events.push(e),
            other => panic!("unexpected output {other:?}"),
        }
    }
    (transmits, events)
}

/// The transmits queued (the events are dropped).
fn transmits(a: &mut IceAgent) -> Vec<Transmit> {
    outputs(a).0
}

/// The events queued (the transmits are dropped).
fn events(a: &mut IceAgent) -> Vec<IceEvent> {
    outputs(a).1
}

fn agent(config: IceConfig) -> (IceAgent, Instant) {
    let t0 = Instant::now();
    let mut a = IceAgent::new(config);
    a.add_local_candidate(t0, Candidate::host(addr(LOCAL)))
        .unwrap();
    a.set_remote_credentials(t0, PEER_UFRAG, PEER_PWD).unwrap();
    a.handle_timeout(t0);
    let _ = outputs(&mut a);
    (a, t0)
}

#[derive(Default)]
struct Req<'a> {
    username: Option<&'a str>,
    pwd: Option<&'a str>,
    priority: Option<u32>,
    controlling: Option<u64>,
    controlled: Option<u64>,
    use_candidate: bool,
}

impl<'a> Req<'a> {
    /// A valid request to `a` from a controlled peer.
    fn valid(username: &'a str) -> Req<'a> {
        Req {
            username: Some(username),
            pwd: None,
            priority: Some(1_862_270_975),
            controlled: Some(1),
            ..Req::default()
        }
    }

    fn encode(&self, local_pwd: &str, tid: TransactionId) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(
            &mut buf,
            MessageType::new(Method::BINDING, MessageClass::Request),
            tid,
        )
        .unwrap();
        if let Some(u) = self.username {
            b.add(&Username::new(u).unwrap()).unwrap();
        }
        if let Some(p) = self.priority {
            b.add(&Priority(p)).unwrap();
        }
        if let Some(t) = self.controlling {
            b.add(&IceControlling(t)).unwrap();
        }
        if let Some(t) = self.controlled {
            b.add(&IceControlled(t)).unwrap();
        }
        if self.use_candidate {
            b.add(&UseCandidate).unwrap();
        }
        if self.pwd != Some("") {
            let pwd = self.pwd.unwrap_or(local_pwd);
            b.add_message_integrity(&Key::short_term(pwd).unwrap())
                .unwrap();
        }
        b.add_fingerprint().unwrap();
        b.finish();
        buf
    }
}

fn username(a: &IceAgent) -> String {
    format!("{}:{}", a.local_credentials().ufrag, PEER_UFRAG)
}

/// Send `req` to the agent; return its single answer (or none).
fn ask(a: &mut IceAgent, now: Instant, req: &Req<'_>) -> Option<Transmit> {
    ask_with_events(a, now, req).0
}

/// [`ask`], and the events the request caused.
fn ask_with_events(
    a: &mut IceAgent,
    now: Instant,
    req: &Req<'_>,
) -> (Option<Transmit>, Vec<IceEvent>) {
    let pwd = a.local_credentials().pwd.clone();
    let bytes = req.encode(&pwd, TransactionId::new([7; 12]));
    let input = a.handle_input(now, Datagram::udp(addr(REMOTE), addr(LOCAL), &bytes));
    assert_eq!(input, Handled::Taken);
    let (out, events) = outputs(a);
    assert!(out.len() <= 1, "{out:?}");
    (out.into_iter().next(), events)
}

fn error_code(t: &Transmit) -> Option<u16> {
    let m = Message::decode(&t.contents).unwrap();
    m.verify_fingerprint().unwrap();
    assert_eq!(t.source, addr(LOCAL));
    assert_eq!(t.destination, addr(REMOTE));
    match m.typ().class {
        MessageClass::Error => Some(m.get::<ErrorCode>().unwrap().unwrap().code()),
        MessageClass::Success => None,
        c => panic!("not a response: {c:?}"),
    }
}

#[test]
fn a_valid_check_is_answered_with_the_mapped_address() {
    let (mut a, t0) = agent(IceConfig::controlled().with_seed(1));
    let user = username(&a);
    let t = ask(&mut a, t0, &Req::valid(&user)).expect("an answer");
    assert_eq!(error_code(&t), None);
    let m = Message::decode(&t.contents).unwrap();
    assert_eq!(
        m.get::<XorMappedAddress>().unwrap(),
        Some(XorMappedAddress(addr(REMOTE)))
    );
    m.verify_integrity(&Key::short_term(&a.local_credentials().pwd).unwrap())
        .unwrap();
    // The unknown source is learnt as a peer-reflexive remote candidate with
    // the PRIORITY of the request (§7.3.1.3) ...
    let r = &a.remote_candidates()[0];
    assert_eq!(
        (r.kind(), r.address(), r.priority()),
        (CandidateKind::PeerReflexive, addr(REMOTE), 1_862_270_975)
    );
    // ... and a triggered check goes back to it (§7.3.1.4).
    a.handle_timeout(t0);
    let check = transmits(&mut a)
        .into_iter()
        .next()
        .expect("a triggered check");
    assert_eq!(
        (check.source, check.destination),
        (addr(LOCAL), addr(REMOTE))
    );
    let m = Message::decode(&check.contents).unwrap();
    assert_eq!(m.typ().class, MessageClass::Request);
    m.verify_integrity(&Key::short_term(PEER_PWD).unwrap())
        .unwrap();
}

#[test]
fn bad_message_integrity_is_401() {
    let (mut a, t0) = agent(IceConfig::controlled().with_seed(2));
    let user = username(&a);
    let req = Req {
        pwd: Some("wrongpasswordwrongpassword"),
        ..Req::valid(&user)
    };
    let t = ask(&mut a, t0, &req).unwrap();
    assert_eq!(error_code(&t), Some(401));
    assert!(!Message::decode(&t.contents).unwrap().has_integrity());
    assert!(
        a.remote_candidates().is_empty(),
        "nothing learnt from an unauthenticated check"
    );
}

#[test]
fn bad_username_is_400_or_401() {
    let (mut a, t0) = agent(IceConfig::controlled().with_seed(3));
    let user = username(&a);
    let cases: &[(Req<'_>, u16)] = &[
        // No USERNAME at all: 400 (RFC 8489 §9.1.3).
        (
            Req {
                username: None,
                ..Req::valid(&user)
            },
            400,
        ),
        // No ':' separator: malformed, 400.
        (
            Req {
                username: Some("nocolon"),
                ..Req::valid(&user)
            },
            400,
        ),
        // Well-formed but not our ufrag: 401.
        (
            Req {
                username: Some("someoneelse:peer"),
                ..Req::valid(&user)
            },
            401,
        ),
        // No MESSAGE-INTEGRITY: 400.
        (
            Req {
                pwd: Some(""),
                ..Req::valid(&user)
            },
            400,
        ),
        // Authenticated, but no PRIORITY: 400.
        (
            Req {
                priority: None,
                ..Req::valid(&user)
            },
            400,
        ),
        // Authenticated, but neither ICE-CONTROLLING nor ICE-CONTROLLED: 400.
        (
            Req {
                controlled: None,
                ..Req::valid(&user)
            },
            400,
        ),
    ];
    for (req, code) in cases {
        let t = ask(&mut a, t0, req).unwrap();
        assert_eq!(error_code(&t), Some(*code));
    }
    assert!(a.remote_candidates().is_empty());
}

#[test]
fn role_conflict_controlling_agent_with_larger_tie_breaker_answers_487() {
    let (mut a, t0) = agent(IceConfig::controlling().with_seed(4));
    let tb = a.tie_breaker();
    assert!(tb > 0 && tb < u64::MAX);
    let user = username(&a);
    let req = Req {
        controlled: None,
        controlling: Some(tb - 1),
        ..Req::valid(&user)
    };
    let t = ask(&mut a, t0, &req).unwrap();
    assert_eq!(error_code(&t), Some(487));
    // A 487 is authenticated with our password.
    Message::decode(&t.contents)
        .unwrap()
        .verify_integrity(&Key::short_term(&a.local_credentials().pwd).unwrap())
        .unwrap();
    assert_eq!(a.role(), IceRole::Controlling);
}

#[test]
fn role_conflict_controlling_agent_with_smaller_tie_breaker_switches() {
    let (mut a, t0) = agent(IceConfig::controlling().with_seed(5));
    let tb = a.tie_breaker();
    let user = username(&a);
    let req = Req {
        controlled: None,
        controlling: Some(tb + 1),
        ..Req::valid(&user)
    };
    let (t, events) = ask_with_events(&mut a, t0, &req);
    assert_eq!(error_code(&t.unwrap()), None);
    assert_eq!(a.role(), IceRole::Controlled);
    assert_eq!(
        events.first(),
        Some(&IceEvent::RoleChanged(IceRole::Controlled))
    );
}

#[test]
fn role_conflict_controlled_agent_with_larger_tie_breaker_switches() {
    let (mut a, t0) = agent(IceConfig::controlled().with_seed(6));
    let tb = a.tie_breaker();
    let user = username(&a);
    let req = Req {
        controlled: Some(tb - 1),
        ..Req::valid(&user)
    };
    let t = ask(&mut a, t0, &req).unwrap();
    assert_eq!(error_code(&t), None);
    assert_eq!(a.role(), IceRole::Controlling);
}

#[test]
fn role_conflict_controlled_agent_with_smaller_tie_breaker_answers_487() {
    let (mut a, t0) = agent(IceConfig::controlled().with_seed(7));
    let tb = a.tie_breaker();
    let user = username(&a);
    let req = Req {
        controlled: Some(tb + 1),
        ..Req::valid(&user)
    };
    let t = ask(&mut a, t0, &req).unwrap();
    assert_eq!(error_code(&t), Some(487));
    assert_eq!(a.role(), IceRole::Controlled);
}

#[test]
fn ice_lite_never_takes_the_controlling_role() {
    let (mut a, t0) = agent(IceConfig::controlling().with_lite(true).with_seed(8));
    assert_eq!(a.role(), IceRole::Controlled);
    let user = username(&a);
    let req = Req {
        controlled: Some(0),
        ..Req::valid(&user)
    };
    assert_eq!(error_code(&ask(&mut a, t0, &req).unwrap()), Some(487));
    // A nominating controlling peer gets the pair selected at once.
    let req = Req {
        controlled: None,
        controlling: Some(0),
        use_candidate: true,
        ..Req::valid(&user)
    };
    assert_eq!(error_code(&ask(&mut a, t0, &req).unwrap()), None);
    assert!(a.selected_pair().is_some());
    a.handle_timeout(t0 + Duration::from_secs(60));
    assert!(
        transmits(&mut a).is_empty(),
        "a lite agent sends no checks, consent or keepalives"
    );
}

#[test]
fn requests_to_unknown_local_addresses_are_dropped_and_non_stun_is_not_ice() {
    let (mut a, t0) = agent(IceConfig::controlled().with_seed(9));
    let user = username(&a);
    let bytes = Req::valid(&user).encode(
        &a.local_credentials().pwd.clone(),
        TransactionId::new([1; 12]),
    );
    let d = Datagram::udp(addr(REMOTE), addr("10.9.9.9:1"), &bytes);
    assert_eq!(a.handle_input(t0, d), Handled::Taken);
    assert!(transmits(&mut a).is_empty());
    let d = Datagram::udp(addr(REMOTE), addr(LOCAL), b"\x17\xfe\xfd application data");
    assert_eq!(a.handle_input(t0, d), Handled::NotMine);
    // A TURN Allocate response is someone else's.
    let mut buf = Vec::new();
    MessageBuilder::new(
        &mut buf,
        MessageType::new(Method::ALLOCATE, MessageClass::Success),
        TransactionId::new([2; 12]),
    )
    .unwrap()
    .finish();
    let d = Datagram::udp(addr(REMOTE), addr(LOCAL), &buf);
    assert_eq!(a.handle_input(t0, d), Handled::NotMine);
    // A genuine check over TCP is the agent's (ICE-TCP), but it reaches no
    // TCP candidate (LOCAL is UDP): dropped unanswered, nothing learnt.
    let d = Datagram::new(p2p_proto::Transport::Tcp, addr(REMOTE), addr(LOCAL), &bytes);
    assert_eq!(a.handle_input(t0, d), Handled::Taken);
    assert!(transmits(&mut a).is_empty());
    assert!(a.remote_candidates().is_empty());
    // Over TLS it is not ICE at all.
    let d = Datagram::new(p2p_proto::Transport::Tls, addr(REMOTE), addr(LOCAL), &bytes);
    assert_eq!(a.handle_input(t0, d), Handled::NotMine);
}

// ---------------------------------------------------------------- answers to our checks

/// A controlling agent with one remote host candidate; returns it with the
/// transaction id of its first check.
fn checking_agent(seed: u64) -> (IceAgent, Instant, TransactionId) {
    let (mut a, t0) = agent(IceConfig::controlling().with_seed(seed));
    a.add_remote_candidate(t0, Candidate::host(addr(REMOTE)))
        .unwrap();
    a.handle_timeout(t0);
    let check = transmits(&mut a).into_iter().next().expect("a check");
    let m = Message::decode(&check.contents).unwrap();
    assert_eq!(
        m.get::<IceControlling>().unwrap(),
        Some(IceControlling(a.tie_breaker()))
    );
    (a, t0, m.transaction_id())
}

fn response(tid: TransactionId, error: Option<u16>, mapped: SocketAddr, pwd: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    let class = if error.is_some() {
        MessageClass::Error
    } else {
        MessageClass::Success
    };
    let mut b =
        MessageBuilder::new(&mut buf, MessageType::new(Method::BINDING, class), tid).unwrap();
    match error {
        Some(code) => b.add(&ErrorCode::from_code(code).unwrap()).unwrap(),
        None => b.add(&XorMappedAddress(mapped)).unwrap(),
    };
    b.add_message_integrity(&Key::short_term(pwd).unwrap())
        .unwrap();
    b.add_fingerprint().unwrap();
    b.finish();
    buf
}

fn pair_state(a: &IceAgent) -> PairState {
    a.stats()
        .pairs
        .iter()
        .find(|p| p.local.kind() == CandidateKind::Host)
        .unwrap()
        .state
}

#[test]
fn ignores_stale_487_after_role_swap() {
    let (mut a, t0, tid) = checking_agent(10);
    // Before the answer comes, a request with a larger ICE-CONTROLLING makes
    // us controlled.
    let user = username(&a);
    let tb = a.tie_breaker();
    let req = Req {
        controlled: None,
        controlling: Some(tb + 1),
        ..Req::valid(&user)
    };
    assert_eq!(error_code(&ask(&mut a, t0, &req).unwrap()), None);
    assert_eq!(a.role(), IceRole::Controlled);
    // The 487 to the check we sent as controlling arrives: already switched,
    // so no switch back (§7.2.5.1), but the pair is checked again.
    let bytes = response(tid, Some(487), addr(LOCAL), PEER_PWD);
    let d = Datagram::udp(addr(REMOTE), addr(LOCAL), &bytes);
    assert_eq!(
        a.handle_input(t0 + Duration::from_millis(20), d),
        Handled::Taken
    );
    assert_eq!(a.role(), IceRole::Controlled);
    a.handle_timeout(t0 + Duration::from_millis(100));
    let again = transmits(&mut a)
        .into_iter()
        .next()
        .expect("the pair is checked again");
    let m = Message::decode(&again.contents).unwrap();
    assert_eq!(m.get::<IceControlled>().unwrap(), Some(IceControlled(tb)));
}

#[test]
fn a_487_to_our_check_switches_the_role() {
    let (mut a, t0, tid) = checking_agent(11);
    let bytes = response(tid, Some(487), addr(LOCAL), PEER_PWD);
    let d = Datagram::udp(addr(REMOTE), addr(LOCAL), &bytes);
    let _ = a.handle_input(t0 + Duration::from_millis(20), d);
    assert_eq!(a.role(), IceRole::Controlled);
    assert_eq!(pair_state(&a), PairState::Waiting);
}

#[test]
fn a_non_symmetric_answer_fails_the_pair() {
    let (mut a, t0, tid) = checking_agent(12);
    let bytes = response(tid, None, addr(LOCAL), PEER_PWD);
    let d = Datagram::udp(addr("10.0.0.3:6000"), addr(LOCAL), &bytes);
    assert_eq!(
        a.handle_input(t0 + Duration::from_millis(20), d),
        Handled::Taken
    );
    assert_eq!(pair_state(&a), PairState::Failed);
}

#[test]
fn an_answer_with_bad_integrity_is_ignored() {
    let (mut a, t0, tid) = checking_agent(13);
    let bytes = response(tid, None, addr(LOCAL), "notthepeerspasswordatall");
    let d = Datagram::udp(addr(REMOTE), addr(LOCAL), &bytes);
    let _ = a.handle_input(t0 + Duration::from_millis(20), d);
    assert_eq!(pair_state(&a), PairState::InProgress);
    // The genuine answer still counts.
    let bytes = response(tid, None, addr(LOCAL), PEER_PWD);
    let d = Datagram::udp(addr(REMOTE), addr(LOCAL), &bytes);
    let _ = a.handle_input(t0 + Duration::from_millis(30), d);
    assert_eq!(pair_state(&a), PairState::Succeeded);
    // A duplicate of the answer is still recognised as the agent's.
    assert_eq!(
        a.handle_input(t0 + Duration::from_millis(31), d),
        Handled::Taken
    );
}

#[test]
fn an_answer_with_another_mapped_address_makes_a_local_prflx() {
    let (mut a, t0, tid) = checking_agent(14);
    let bytes = response(tid, None, addr("198.51.100.9:7000"), PEER_PWD);
    let d = Datagram::udp(addr(REMOTE), addr(LOCAL), &bytes);
    let _ = a.handle_input(t0 + Duration::from_millis(20), d);
    let prflx = a
        .local_candidates()
        .iter()
        .find(|c| c.kind() == CandidateKind::PeerReflexive)
        .expect("a local prflx");
    assert_eq!(
        (prflx.address(), prflx.base()),
        (addr("198.51.100.9:7000"), addr(LOCAL))
    );
    // Its priority is the PRIORITY the check carried: prflx type preference.
    assert_eq!(prflx.priority() >> 24, 110);
    let valid: Vec<_> = a.stats().pairs.into_iter().filter(|p| p.valid).collect();
    assert_eq!(valid.len(), 1);
    assert_eq!(valid[0].local.kind(), CandidateKind::PeerReflexive);
}

#[test]
fn checks_are_retransmitted_then_fail() {
    let (mut a, t0, _) = checking_agent(15);
    let mut sends = vec![0u128];
    let mut now = t0;
    for _ in 0..50 {
        let Some(next) = a.poll_timeout() else { break };
        now = next.max(now);
        a.handle_timeout(now);
        for t in transmits(&mut a) {
            if Message::decode(&t.contents).is_ok_and(|m| m.typ().class == MessageClass::Request) {
                sends.push((now - t0).as_millis());
            }
        }
        if pair_state(&a) == PairState::Failed {
            break;
        }
    }
    assert_eq!(sends, [0, 500, 1500, 3500, 7500]);
    assert_eq!(pair_state(&a), PairState::Failed);
    assert_eq!((now - t0).as_millis(), 9500);
}

#[test]
fn a_gathered_srflx_replaces_a_learnt_local_prflx() {
    let (mut a, t0, tid) = checking_agent(16);
    let bytes = response(tid, None, addr("198.51.100.9:7000"), PEER_PWD);
    let d = Datagram::udp(addr(REMOTE), addr(LOCAL), &bytes);
    let _ = a.handle_input(t0 + Duration::from_millis(20), d);
    let _ = outputs(&mut a);
    let srflx = Candidate::server_reflexive(
        addr("198.51.100.9:7000"),
        addr(LOCAL),
        addr("203.0.113.1:3478").ip(),
    );
    let accepted = a
        .add_local_candidate(t0 + Duration::from_millis(20), srflx)
        .unwrap();
    assert_eq!(
        events(&mut a).first(),
        Some(&IceEvent::LocalCandidate(accepted))
    );
    assert!(a
        .local_candidates()
        .iter()
        .all(|c| c.kind() != CandidateKind::PeerReflexive));
    let valid: Vec<_> = a.stats().pairs.into_iter().filter(|p| p.valid).collect();
    assert_eq!(valid[0].local.kind(), CandidateKind::ServerReflexive);
}

fn stun_answer(request: &[u8], mapped: SocketAddr) -> Vec<u8> {
    let req = Message::decode(request).unwrap();
    assert_eq!(
        req.typ(),
        MessageType::new(Method::BINDING, MessageClass::Request)
    );
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, req.typ().success(), req.transaction_id()).unwrap();
    b.add(&XorMappedAddress(mapped)).unwrap();
    b.finish();
    buf
}

#[test]
fn server_reflexive_gathering_then_gathering_complete() {
    let t0 = Instant::now();
    let server = addr("203.0.113.1:3478");
    let mut a = IceAgent::new(IceConfig::controlled().with_seed(17));
    a.add_stun_server(t0, server);
    a.add_local_candidate(t0, Candidate::host(addr(LOCAL)))
        .unwrap();
    a.add_local_candidate(t0, Candidate::host(addr("10.0.1.1:5000")))
        .unwrap();
    a.add_local_candidate(t0, Candidate::host(addr("[2001:db8::1]:5000")))
        .unwrap(); // no v6 server
    a.end_of_local_candidates();
    a.handle_timeout(t0);
    let (reqs, first) = outputs(&mut a);
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|t| t.destination == server));
    assert_eq!(
        first.len(),
        3,
        "three host candidates, gathering not complete yet"
    );
    // The first base is behind a NAT, the second is public (its own address
    // comes back: redundant, no candidate).
    let t = &reqs[0];
    let bytes = stun_answer(&t.contents, addr("198.51.100.1:40000"));
    let d = Datagram::udp(server, t.source, &bytes);
    assert_eq!(
        a.handle_input(t0 + Duration::from_millis(30), d),
        Handled::Taken
    );
    let t = &reqs[1];
    let bytes = stun_answer(&t.contents, t.source);
    let d = Datagram::udp(server, t.source, &bytes);
    let _ = a.handle_input(t0 + Duration::from_millis(30), d);
    let events: Vec<IceEvent> = events(&mut a);
    assert_eq!(events.len(), 2, "{events:?}");
    let IceEvent::LocalCandidate(c) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (c.kind(), c.address(), c.base()),
        (
            CandidateKind::ServerReflexive,
            addr("198.51.100.1:40000"),
            reqs[0].source
        )
    );
    assert_eq!(c.related_address(), Some(reqs[0].source));
    assert_eq!(c.priority() >> 24, 100);
    assert_eq!(events[1], IceEvent::GatheringComplete);
}

#[test]
fn a_passive_tcp_host_asks_the_stun_server_over_tcp_from_its_own_port_for_a_passive_srflx() {
    let t0 = Instant::now();
    let server = addr("203.0.113.1:3478");
    let passive = addr("10.0.0.1:7000");
    let mut a = IceAgent::new(IceConfig::controlled().with_seed(21));
    a.add_stun_server(t0, server);
    a.add_local_candidate(t0, Candidate::host(addr(LOCAL)))
        .unwrap();
    a.add_local_candidate(t0, Candidate::host_tcp(passive, TcpType::Passive))
        .unwrap();
    a.add_local_candidate(t0, Candidate::host_tcp(passive, TcpType::Active))
        .unwrap();
    a.end_of_local_candidates();
    a.handle_timeout(t0);
    let (reqs, _) = outputs(&mut a);
    // One Binding request from the UDP host, one over TCP from the passive
    // candidate's own address; none from the active one (port 9).
    let routes: Vec<_> = reqs
        .iter()
        .map(|t| (t.transport, t.source, t.destination))
        .collect();
    assert_eq!(
        routes,
        [
            (Transport::Udp, addr(LOCAL), server),
            (Transport::Tcp, passive, server)
        ]
    );
    // The NAT kept the port (a 1:1 NAT): the mapping is a passive srflx.
    let bytes = stun_answer(&reqs[1].contents, addr("198.51.100.1:7000"));
    let d = Datagram::new(Transport::Tcp, server, passive, &bytes);
    assert_eq!(
        a.handle_input(t0 + Duration::from_millis(30), d),
        Handled::Taken
    );
    let events = events(&mut a);
    let IceEvent::LocalCandidate(c) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (c.kind(), c.transport(), c.tcp_type(), c.base()),
        (
            CandidateKind::ServerReflexive,
            Transport::Tcp,
            Some(TcpType::Passive),
            passive
        )
    );
    assert!(
        c.to_string()
            .ends_with("198.51.100.1 7000 typ srflx raddr 10.0.0.1 rport 7000 tcptype passive"),
        "{c}"
    );
    // A passive srflx is signalled, never paired by us in advance.
    assert!(a
        .stats()
        .pairs
        .iter()
        .all(|p| p.local.kind() != CandidateKind::ServerReflexive));
}

#[test]
fn a_tcp_binding_request_is_sent_once_and_a_silent_server_is_given_up_in_3_s() {
    let t0 = Instant::now();
    let mut a = IceAgent::new(IceConfig::controlled().with_seed(22));
    a.add_stun_server(t0, addr("203.0.113.1:3478"));
    a.add_local_candidate(
        t0,
        Candidate::host_tcp(addr("10.0.0.1:7000"), TcpType::Passive),
    )
    .unwrap();
    a.end_of_local_candidates();
    a.handle_timeout(t0);
    let mut now = t0;
    let mut sends = 0;
    for _ in 0..20 {
        let (sent, events) = outputs(&mut a);
        sends += sent.len();
        if events.contains(&IceEvent::GatheringComplete) {
            break;
        }
        let Some(next) = a.poll_timeout() else { break };
        now = next.max(now);
        a.handle_timeout(now);
    }
    assert_eq!(
        sends, 1,
        "over TCP a request is sent once (RFC 8489 §6.2.2)"
    );
    assert_eq!((now - t0).as_millis(), 3000);
}

#[test]
fn gathering_completes_when_the_stun_server_is_silent() {
    let t0 = Instant::now();
    let mut a = IceAgent::new(IceConfig::controlled().with_seed(18));
    a.add_stun_server(t0, addr("203.0.113.1:3478"));
    a.add_local_candidate(t0, Candidate::host(addr(LOCAL)))
        .unwrap();
    a.end_of_local_candidates();
    a.handle_timeout(t0);
    let mut now = t0;
    let mut sends = 0;
    for _ in 0..20 {
        let (sent, events) = outputs(&mut a);
        sends += sent.len();
        if events.contains(&IceEvent::GatheringComplete) {
            break;
        }
        let Some(next) = a.poll_timeout() else { break };
        now = next.max(now);
        a.handle_timeout(now);
    }
    assert_eq!(sends, 3);
    assert_eq!((now - t0).as_millis(), 3500);
}

/// Feed `a` a valid check from `source` at `now`; return what it sent.
fn check_from(a: &mut IceAgent, now: Instant, source: SocketAddr, tid: u8) -> Vec<Transmit> {
    let pwd = a.local_credentials().pwd.clone();
    let user = username(a);
    let bytes = Req::valid(&user).encode(&pwd, TransactionId::new([tid; 12]));
    let _ = a.handle_input(now, Datagram::udp(source, addr(LOCAL), &bytes));
    transmits(a)
}

fn is_request(t: &Transmit) -> bool {
    Message::decode(&t.contents).is_ok_and(|m| m.typ().class == MessageClass::Request)
}

#[test]
fn a_stream_of_triggered_checks_does_not_starve_the_check_list() {
    // A signalled remote candidate waits in the check list while the peer
    // sends a check from a new address every 25 ms (each one a new
    // peer-reflexive candidate and a triggered check). Triggered checks go
    // first, but every other paced slot serves the check list.
    let (mut a, t0) = agent(IceConfig::controlled().with_seed(3));
    let signalled = addr("192.0.2.50:7000");
    a.add_remote_candidate(t0, Candidate::host(signalled))
        .unwrap();
    let mut sent = Vec::new();
    let mut now = t0;
    for i in 0..40u8 {
        now = t0 + Duration::from_millis(25 * u64::from(i));
        // A different IP each time: the per-IP learning cap never applies.
        let source = addr(&format!("198.51.100.{}:4000", i + 1));
        sent.extend(check_from(&mut a, now, source, i));
        if a.poll_timeout().is_some_and(|t| t <= now) {
            a.handle_timeout(now);
        }
        sent.extend(transmits(&mut a));
    }
    let to_signalled = sent
        .iter()
        .filter(|t| is_request(t) && t.destination == signalled)
        .count();
    assert!(
        to_signalled >= 1,
        "the signalled pair was never checked in {:?}",
        now - t0
    );
    // And triggered checks were still sent, more of them than ordinary ones.
    let triggered = sent
        .iter()
        .filter(|t| is_request(t) && t.destination != signalled)
        .count();
    assert!(triggered > to_signalled, "{triggered} triggered checks");
}

#[test]
fn peer_reflexive_learning_is_capped_per_remote_ip() {
    // Two address-and-port-dependent NATs feed each other a new port with
    // every triggered check; the agent learns at most 8 of one IP on one
    // local candidate, and still answers the rest.
    let (mut a, t0) = agent(IceConfig::controlled().with_seed(4));
    for i in 0..20u8 {
        let source = addr(&format!("198.51.100.7:{}", 40000 + u16::from(i)));
        let out = check_from(&mut a, t0, source, i);
        assert!(
            out.iter()
                .any(|t| t.destination == source && !is_request(t)),
            "check {i} unanswered"
        );
    }
    let prflx = a
        .remote_candidates()
        .iter()
        .filter(|c| c.kind() == CandidateKind::PeerReflexive)
        .count();
    assert_eq!(prflx, 8);
    assert_eq!(a.stats().pairs.len(), 8);
    // Another IP is learnt as usual.
    check_from(&mut a, t0, addr("198.51.100.8:40000"), 99);
    assert_eq!(a.remote_candidates().len(), 9);
}

/// RFC 8445 §12.2: data is accepted on a pair being checked, not only on the
/// selected one. A controlling peer nominates (USE-CANDIDATE) before the
/// controlled agent's own check of the pair succeeded: nothing is selected
/// yet, but the peer's data on that pair is its own; data from an address
/// no pair has, or to another local address, is not.
#[test]
fn data_is_accepted_on_a_pair_being_checked_before_selection() {
    let (mut a, t0) = agent(IceConfig::controlled().with_seed(10));
    assert!(!a.accepts_data(addr(LOCAL), addr(REMOTE)), "no pair yet");
    let user = username(&a);
    let req = Req {
        controlled: None,
        controlling: Some(1),
        use_candidate: true,
        ..Req::valid(&user)
    };
    assert_eq!(error_code(&ask(&mut a, t0, &req).unwrap()), None);
    // The triggered check is queued or in flight; nothing is selected.
    assert!(a.selected_pair().is_none());
    assert!(a.accepts_data(addr(LOCAL), addr(REMOTE)));
    assert!(!a.accepts_data(addr(LOCAL), addr("10.0.0.3:6000")));
    assert!(!a.accepts_data(addr("10.0.0.1:5001"), addr(REMOTE)));
    // Once every check of the pair failed, it is not the peer's any more.
    let mut now = t0;
    for _ in 0..400 {
        now += Duration::from_millis(50);
        a.handle_timeout(now);
        let _ = outputs(&mut a);
    }
    let states: Vec<PairState> = a.stats().pairs.iter().map(|p| p.state).collect();
    assert_eq!(states, vec![PairState::Failed]);
    assert!(!a.accepts_data(addr(LOCAL), addr(REMOTE)));
}
