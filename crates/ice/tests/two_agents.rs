//! Two agents driven directly through an in-test network with a simulated
//! clock (see `common`).
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use p2p_ice::{
    Candidate, CandidateKind, IceAgent, IceConfig, IceError, IceEvent, IceRole, IceState, PairState,
};
use p2p_proto::{Datagram, Machine};

fn seeded(controlling: bool, seed: u64) -> IceConfig {
    IceConfig::default()
        .with_controlling(controlling)
        .with_seed(seed)
}

fn add_hosts(net: &mut Net, a: &[&str], b: &[&str]) {
    for s in a {
        net.a.add_local_candidate(net.now, host(s)).unwrap();
    }
    for s in b {
        net.b.add_local_candidate(net.now, host(s)).unwrap();
    }
    net.a.end_of_local_candidates();
    net.b.end_of_local_candidates();
}

fn selected_kinds(net: &Net, side: Side) -> (CandidateKind, CandidateKind) {
    let ag = match side {
        Side::A => &net.a,
        Side::B => &net.b,
    };
    let (l, r) = ag.selected_pair().expect("a selected pair");
    (l.kind(), r.kind())
}

#[test]
fn host_to_host_connects_quickly() {
    let mut net = Net::new(seeded(true, 1), seeded(false, 2));
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    let took = net
        .run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    // The only pair is the best one: its first check carries USE-CANDIDATE
    // (optimistic nomination), so both select it after one round trip
    // (20 ms).
    assert!(took >= Duration::from_millis(20), "{took:?}");
    assert!(took < Duration::from_millis(40), "{took:?}");
    for side in [Side::A, Side::B] {
        assert_eq!(
            selected_kinds(&net, side),
            (CandidateKind::Host, CandidateKind::Host)
        );
    }
    let (l, r) = net.a.selected_pair().unwrap();
    assert_eq!(
        (l.address(), r.address()),
        (addr("10.0.0.1:5000"), addr("10.0.0.2:6000"))
    );
    // Data flows both ways on the selected pair and is handed back as not-ICE.
    net.send(Side::A, b"ping").unwrap();
    net.send(Side::B, b"pong").unwrap();
    net.run_until(
        |n| !n.a_data.is_empty() && !n.b_data.is_empty(),
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(net.b_data, vec![b"ping".to_vec()]);
    assert_eq!(net.a_data, vec![b"pong".to_vec()]);
    // Both sides finish their checks and complete (both signalled end-of-candidates).
    net.run_until(
        |n| n.a.state() == IceState::Completed && n.b.state() == IceState::Completed,
        Duration::from_secs(5),
    )
    .unwrap();
    // The check list print is usable.
    let printed = net.a.stats().to_string();
    assert!(
        printed.contains("succeeded") && printed.contains("nominated"),
        "{printed}"
    );
}

#[test]
fn checks_carry_the_rfc_attributes() {
    use p2p_stun::attr::{IceControlling, Priority, UseCandidate, Username};
    use p2p_stun::{Key, Message};
    let mut net = Net::new(seeded(true, 3), seeded(false, 4));
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    net.run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    let b_creds = net.b.local_credentials().clone();
    let a_creds = net.a.local_credentials().clone();
    let key = Key::short_term(&b_creds.pwd).unwrap();
    let mut saw_use_candidate = false;
    let mut checks = 0;
    for (_, t) in &net.a_sent {
        let msg = Message::decode(&t.contents).unwrap();
        if msg.typ().class != p2p_stun::MessageClass::Request {
            continue;
        }
        checks += 1;
        msg.verify_fingerprint().unwrap();
        msg.verify_integrity(&key).unwrap();
        let user = msg.get::<Username>().unwrap().unwrap();
        assert_eq!(
            user.as_str(),
            format!("{}:{}", b_creds.ufrag, a_creds.ufrag)
        );
        // PRIORITY: a peer-reflexive priority, 2^24*110 + 2^8*lp + 255.
        let Priority(p) = msg.get::<Priority>().unwrap().unwrap();
        assert_eq!(p >> 24, 110);
        assert_eq!(
            msg.get::<IceControlling>().unwrap(),
            Some(IceControlling(net.a.tie_breaker()))
        );
        saw_use_candidate |= msg.get::<UseCandidate>().unwrap().is_some();
    }
    assert!(checks >= 2);
    assert!(saw_use_candidate, "regular nomination sends USE-CANDIDATE");
}

#[test]
fn pacing_spaces_checks_by_ta() {
    // Four host pairs (2x2) checked from A: new checks are at least Ta apart.
    let mut net = Net::new(seeded(true, 5), seeded(false, 6));
    net.drop = Box::new(|_| true); // nobody answers: only first transmissions matter
    add_hosts(
        &mut net,
        &["10.0.0.1:5000", "10.0.1.1:5000"],
        &["10.0.0.2:6000", "10.0.1.2:6000"],
    );
    net.run_for(Duration::from_millis(400));
    let mut firsts: Vec<Duration> = Vec::new();
    let mut seen = Vec::new();
    for (at, t) in &net.a_sent {
        let key = (t.source, t.destination);
        if !seen.contains(&key) {
            seen.push(key);
            firsts.push(*at);
        }
    }
    assert_eq!(firsts.len(), 4, "{firsts:?}");
    for w in firsts.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_millis(50), "{firsts:?}");
    }
}

#[test]
fn role_conflict_both_controlling_resolves() {
    let mut net = Net::new(seeded(true, 7), seeded(true, 8));
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    let took = net
        .run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_ne!(net.a.role(), net.b.role());
    // The larger tie-breaker keeps the controlling role.
    let a_wins = net.a.tie_breaker() > net.b.tie_breaker();
    assert_eq!(net.a.role() == IceRole::Controlling, a_wins);
    let loser = if a_wins { Side::B } else { Side::A };
    assert!(net
        .events(loser)
        .iter()
        .any(|(_, e)| *e == IceEvent::RoleChanged(IceRole::Controlled)));
}

#[test]
fn role_conflict_both_controlled_resolves() {
    let mut net = Net::new(seeded(false, 9), seeded(false, 10));
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    net.run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    assert_ne!(net.a.role(), net.b.role());
    let a_wins = net.a.tie_breaker() > net.b.tie_breaker();
    assert_eq!(net.a.role() == IceRole::Controlling, a_wins);
}

#[test]
fn peer_reflexive_candidates_are_learnt_both_ways() {
    // A sits behind a one-to-one NAT and signals only its host address (which
    // B cannot reach). B learns A's NAT address as a remote prflx from A's
    // request; A learns its own NAT address as a local prflx from the answer.
    let mut net = Net::new(seeded(true, 11), seeded(false, 12));
    net.nat_a = Some(OneToOneNat {
        internal: addr("10.0.0.1:5000"),
        external: addr("198.51.100.7:40000"),
    });
    add_hosts(&mut net, &["10.0.0.1:5000"], &["203.0.113.2:6000"]);
    net.run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    let (l, r) = net.b.selected_pair().unwrap();
    assert_eq!(l.kind(), CandidateKind::Host);
    assert_eq!(r.kind(), CandidateKind::PeerReflexive);
    assert_eq!(r.address(), addr("198.51.100.7:40000"));
    let (l, r) = net.a.selected_pair().unwrap();
    assert_eq!(l.kind(), CandidateKind::PeerReflexive);
    assert_eq!(l.address(), addr("198.51.100.7:40000"));
    assert_eq!(l.base(), addr("10.0.0.1:5000"));
    assert_eq!(r.kind(), CandidateKind::Host);
    // Data from A leaves its base.
    let t = net.send(Side::A, b"x").unwrap();
    assert_eq!(t.source, addr("10.0.0.1:5000"));
}

#[test]
fn consent_is_lost_30_s_after_the_peer_goes_silent() {
    let mut net = Net::new(seeded(true, 13), seeded(false, 14));
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    net.run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    // Consent keeps the pair up while the peer answers.
    net.run_for(Duration::from_secs(60));
    assert!(net.both_connected(), "{}", net.a.stats());
    // B goes silent: everything it sends is lost.
    let b_base = net.b.selected_pair().unwrap().0.base();
    net.drop = Box::new(move |t| t.source == b_base);
    let silent_at = net.now;
    net.run_until(
        |n| n.a.state() == IceState::Disconnected,
        Duration::from_secs(20),
    )
    .unwrap();
    let lost = net
        .run_until(|n| n.a.state() == IceState::Failed, Duration::from_secs(40))
        .unwrap();
    let since_silence = net.now - silent_at;
    // The last answer came at most one consent interval (<= 6 s) before the
    // silence, so consent is lost 24..=30 s after it.
    assert!(
        since_silence <= Duration::from_secs(30),
        "{since_silence:?}"
    );
    assert!(
        since_silence >= Duration::from_secs(24),
        "{since_silence:?} {lost:?}"
    );
    assert!(net
        .a_events
        .iter()
        .any(|(_, e)| *e == IceEvent::ConsentLost));
    assert_eq!(net.send(Side::A, b"x"), Err(IceError::NotConnected));
}

#[test]
fn verify_consent_loses_a_silent_peer_within_its_bound_not_30_s() {
    let mut net = Net::new(seeded(true, 15), seeded(false, 16));
    net.latency = Duration::from_millis(10);
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    net.run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    net.run_for(Duration::from_secs(3));
    // B's process dies: it answers nothing any more.
    let b_base = net.b.selected_pair().unwrap().0.base();
    net.drop = Box::new(move |t| t.source == b_base);
    let t0 = net.now;
    let e0 = net.elapsed();
    assert!(net.a.verify_consent(t0, Duration::from_secs(1)));
    net.run_until(|n| n.a.state() == IceState::Failed, Duration::from_secs(5))
        .unwrap();
    let took = net.now - t0;
    assert!(took <= Duration::from_secs(1), "{took:?}");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(net
        .a_events
        .iter()
        .any(|(_, e)| *e == IceEvent::ConsentLost));
    // Several checks went out meanwhile: one lost check does not decide.
    let checks = net
        .a_sent
        .iter()
        .filter(|(at, t)| *at >= e0 && t.contents.first() == Some(&0))
        .count();
    assert!(checks >= 4, "{checks} checks in the second");
}

#[test]
fn verify_consent_with_a_live_peer_changes_nothing() {
    let mut net = Net::new(seeded(true, 17), seeded(false, 18));
    net.latency = Duration::from_millis(10);
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    net.run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    // Even with the first verification check lost, a later one answers.
    let a_base = net.a.selected_pair().unwrap().0.base();
    let mut first = true;
    net.drop = Box::new(move |t| {
        let lose = first && t.source == a_base && t.contents.first() == Some(&0);
        if lose {
            first = false;
        }
        lose
    });
    let t0 = net.now;
    assert!(net.a.verify_consent(t0, Duration::from_secs(1)));
    net.run_for(Duration::from_secs(5));
    assert!(net.both_connected(), "{}", net.a.stats());
    assert!(!net
        .a_events
        .iter()
        .any(|(_, e)| *e == IceEvent::ConsentLost));
    // And a verification needs a path.
    let mut lone = IceAgent::new(seeded(true, 19));
    assert!(!lone.verify_consent(t0, Duration::from_secs(1)));
}

#[test]
fn keepalive_indications_when_idle() {
    // Consent checks every 5 s already keep the path busy; with a long
    // consent interval the 15 s keepalive indication shows.
    let cfg = |c, s| {
        seeded(c, s)
            .with_consent_interval(Duration::from_secs(100))
            .with_consent_timeout(Duration::from_secs(300))
            .with_disconnected_timeout(Duration::from_secs(200))
    };
    let mut net = Net::new(cfg(true, 15), cfg(false, 16));
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    net.run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    let from = net.elapsed();
    net.run_for(Duration::from_secs(31));
    let indications: Vec<_> = net
        .a_sent
        .iter()
        .filter(|(at, t)| {
            *at > from
                && p2p_stun::Message::decode(&t.contents)
                    .is_ok_and(|m| m.typ().class == p2p_stun::MessageClass::Indication)
        })
        .collect();
    assert_eq!(indications.len(), 2, "one every 15 s");
}

#[test]
fn ice_restart_keeps_the_old_pair_until_new_checks_succeed() {
    let mut net = Net::new(seeded(true, 17), seeded(false, 18));
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    net.run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    let old = net.a.local_credentials().clone();
    let selected_before = net
        .a_events
        .iter()
        .filter(|(_, e)| matches!(e, IceEvent::SelectedPair { .. }))
        .count();
    net.a.restart(net.now);
    net.b.restart(net.now);
    assert_ne!(net.a.local_credentials(), &old);
    exchange_credentials(&mut net.a, &mut net.b, net.now);
    // Data still flows on the old pair while the restart runs.
    assert!(net.send(Side::A, b"during").is_ok());
    assert_eq!(net.a.state(), IceState::Checking);
    net.run_until(
        |n| {
            n.both_connected()
                && n.a_events
                    .iter()
                    .filter(|(_, e)| matches!(e, IceEvent::SelectedPair { .. }))
                    .count()
                    > selected_before
        },
        Duration::from_secs(5),
    )
    .unwrap();
    // The new checks used the new credentials: B's check list has answers.
    let stats = net.b.stats();
    assert!(stats
        .pairs
        .iter()
        .any(|p| p.state == PairState::Succeeded && p.nominated));
    assert_eq!(
        net.b.remote_credentials().unwrap().ufrag,
        net.a.local_credentials().ufrag
    );
}

/// The old path dies during a restart and its consent runs out before the
/// new credentials arrive (slow signaling): the restart's check list must
/// still run and find the new path, not end with the old one.
#[test]
fn consent_lost_during_a_restart_leaves_the_new_checks_running() {
    let mut net = Net::new(seeded(true, 21), seeded(false, 22));
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    net.run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    net.drop = Box::new(|_| true);
    net.a.restart(net.now);
    net.b.restart(net.now);
    let restarted = net.elapsed();
    net.run_for(Duration::from_secs(31));
    for side in [Side::A, Side::B] {
        let lost = net
            .events(side)
            .iter()
            .filter(|(at, e)| matches!(e, IceEvent::ConsentLost) && *at >= restarted)
            .count();
        assert_eq!(lost, 1, "{side:?}: {:?}", net.events(side));
        assert_eq!(net.agent(side).state(), IceState::Disconnected, "{side:?}");
    }
    net.drop = Box::new(|_| false);
    exchange_credentials(&mut net.a, &mut net.b, net.now);
    net.run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
}

#[test]
fn full_agent_with_an_ice_lite_peer() {
    let lite = seeded(false, 20).with_lite(true);
    // The full agent starts controlled, as an answerer would: the lite peer
    // makes it controlling.
    let mut net = Net::new(seeded(false, 19), lite);
    net.a.set_remote_ice_lite(true);
    assert_eq!(net.a.role(), IceRole::Controlling);
    assert!(net
        .b
        .add_local_candidate(
            net.now,
            Candidate::server_reflexive(
                addr("198.51.100.1:1"),
                addr("10.0.0.2:6000"),
                addr("203.0.113.1:3478").ip()
            )
        )
        .is_err());
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    net.run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    assert_eq!(net.b.state(), IceState::Completed);
    assert_eq!(net.b.role(), IceRole::Controlled);
    // The lite agent never sent a request.
    assert!(net.b_sent.iter().all(|(_, t)| {
        p2p_stun::Message::decode(&t.contents)
            .is_ok_and(|m| m.typ().class != p2p_stun::MessageClass::Request)
    }));
    // The full agent keeps consent with the lite one.
    net.run_for(Duration::from_secs(45));
    assert!(net.both_connected());
}

#[test]
fn trickle_late_host_candidates_upgrade_a_relay_path() {
    // First only relayed candidates are signalled; host candidates trickle in
    // 3 s later. The agents connect over the relay, then switch to host.
    let mut net = Net::new(seeded(true, 21), seeded(false, 22));
    let relay_a = Candidate::relayed(
        addr("203.0.113.50:40000"),
        None,
        addr("203.0.113.50:3478").ip(),
    );
    let relay_b = Candidate::relayed(
        addr("203.0.113.50:40001"),
        None,
        addr("203.0.113.50:3478").ip(),
    );
    net.a.add_local_candidate(net.now, relay_a).unwrap();
    net.b.add_local_candidate(net.now, relay_b).unwrap();
    net.run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        selected_kinds(&net, Side::A),
        (CandidateKind::Relayed, CandidateKind::Relayed)
    );
    net.run_for(Duration::from_secs(3));
    net.a
        .add_local_candidate(net.now, host("10.0.0.1:5000"))
        .unwrap();
    net.b
        .add_local_candidate(net.now, host("10.0.0.2:6000"))
        .unwrap();
    net.a.end_of_local_candidates();
    net.b.end_of_local_candidates();
    let took = net
        .run_until(
            |n| {
                n.both_connected()
                    && selected_kinds(n, Side::A) == (CandidateKind::Host, CandidateKind::Host)
                    && selected_kinds(n, Side::B) == (CandidateKind::Host, CandidateKind::Host)
            },
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn trickle_signalled_candidate_replaces_a_learnt_prflx() {
    // B's candidates reach A only 2 s late: A learns B as prflx from B's
    // check first, then the signalled host candidate replaces it.
    let mut net = Net::new(seeded(true, 23), seeded(false, 24));
    net.signal_b_to_a = false;
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    net.run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        net.a.remote_candidates()[0].kind(),
        CandidateKind::PeerReflexive
    );
    net.run_for(Duration::from_secs(2));
    assert_eq!(
        selected_kinds(&net, Side::A).1,
        CandidateKind::PeerReflexive
    );
    let priority = net.a.stats().pairs[0].priority;
    for (_, e) in net.b_events.clone() {
        signal(&mut net.a, net.now, &e);
    }
    assert_eq!(net.a.remote_candidates().len(), 1);
    assert_eq!(net.a.remote_candidates()[0].kind(), CandidateKind::Host);
    // The selected pair is the same one, relabelled: the application
    // learns the signalled kind from a new SelectedPair event.
    assert_eq!(
        selected_kinds(&net, Side::A),
        (CandidateKind::Host, CandidateKind::Host)
    );
    let relabelled: Vec<IceEvent> = events(&mut net.a)
        .into_iter()
        .filter(|e| matches!(e, IceEvent::SelectedPair { .. }))
        .collect();
    match relabelled.as_slice() {
        [IceEvent::SelectedPair { local, remote }] => {
            assert_eq!(remote.kind(), CandidateKind::Host);
            assert_eq!(remote.address(), addr("10.0.0.2:6000"));
            assert_eq!(local.address(), addr("10.0.0.1:5000"));
        }
        other => panic!("one relabelling SelectedPair expected, got {other:?}"),
    }
    // Its priority follows the rules it followed before (the signalled
    // candidate's priority), the pair itself is not replaced.
    let stats = net.a.stats();
    assert_eq!(stats.pairs.len(), 1);
    assert!(stats.pairs[0].selected);
    assert!(stats.pairs[0].priority >= priority);
    // Signalling it again changes nothing and says nothing.
    for (_, e) in net.b_events.clone() {
        signal(&mut net.a, net.now, &e);
    }
    assert!(!events(&mut net.a)
        .iter()
        .any(|e| matches!(e, IceEvent::SelectedPair { .. })));
    net.run_until(
        |n| n.a.state() == IceState::Completed,
        Duration::from_secs(5),
    )
    .unwrap();
}

#[test]
fn relay_only_uses_only_relayed_candidates() {
    let relay_only = seeded(true, 25).with_relay_only(true);
    let mut net = Net::new(relay_only, seeded(false, 26));
    let now = net.now;
    assert!(net
        .a
        .add_local_candidate(now, host("10.0.0.1:5000"))
        .is_err());
    net.a.add_stun_server(now, addr("203.0.113.1:3478")); // ignored
    net.a
        .add_local_candidate(
            now,
            Candidate::relayed(
                addr("203.0.113.50:40000"),
                Some(addr("198.51.100.1:5000")),
                addr("203.0.113.50:3478").ip(),
            ),
        )
        .unwrap();
    add_hosts(&mut net, &[], &["10.0.0.2:6000"]);
    net.run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        selected_kinds(&net, Side::A),
        (CandidateKind::Relayed, CandidateKind::Host)
    );
    assert!(net
        .a_sent
        .iter()
        .all(|(_, t)| t.source == addr("203.0.113.50:40000")));
    let t = net.send(Side::A, b"x").unwrap();
    assert_eq!(t.source, addr("203.0.113.50:40000"));
}

#[test]
fn aggressive_nomination_selects_on_the_first_success() {
    let aggressive = seeded(true, 27).with_aggressive_nomination(true);
    let mut net = Net::new(aggressive, seeded(false, 28));
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    let took = net
        .run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    // One round trip: no separate nomination check.
    assert!(took <= Duration::from_millis(30), "{took:?}");
}

#[test]
fn unreachable_peer_fails_after_end_of_candidates() {
    let mut net = Net::new(seeded(true, 29), seeded(false, 30));
    net.drop = Box::new(|_| true);
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    let took = net
        .run_until(
            |n| n.a.state() == IceState::Failed && n.b.state() == IceState::Failed,
            Duration::from_secs(30),
        )
        .unwrap();
    // 5 transmits over 9.5 s, then failure.
    assert!(took >= Duration::from_millis(9_500), "{took:?}");
    assert!(took < Duration::from_secs(11), "{took:?}");
    assert!(net
        .a
        .stats()
        .pairs
        .iter()
        .all(|p| p.state == PairState::Failed));
}

#[test]
fn without_end_of_candidates_only_the_checking_timeout_fails() {
    let cfg = seeded(true, 31).with_checking_timeout(Some(Duration::from_secs(20)));
    let mut net = Net::new(cfg, seeded(false, 32));
    net.drop = Box::new(|_| true);
    net.a
        .add_local_candidate(net.now, host("10.0.0.1:5000"))
        .unwrap();
    net.b
        .add_local_candidate(net.now, host("10.0.0.2:6000"))
        .unwrap();
    net.run_for(Duration::from_secs(15));
    assert_eq!(net.a.state(), IceState::Checking);
    assert_eq!(net.b.state(), IceState::Checking);
    net.run_until(|n| n.a.state() == IceState::Failed, Duration::from_secs(10))
        .unwrap();
    assert_eq!(net.b.state(), IceState::Checking);
}

#[test]
fn lossy_network_still_connects() {
    // Every third datagram is lost: retransmissions carry the checks through.
    let mut net = Net::new(seeded(true, 33), seeded(false, 34));
    let mut n = 0u32;
    net.drop = Box::new(move |_| {
        n += 1;
        n % 3 == 0
    });
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    net.run_until(|n| n.both_connected(), Duration::from_secs(10))
        .unwrap();
}

#[test]
fn multiple_interfaces_and_families_get_distinct_priorities() {
    let mut net = Net::new(seeded(true, 35), seeded(false, 36));
    let now = net.now;
    let v4a = net
        .a
        .add_local_candidate(now, host("10.0.0.1:5000"))
        .unwrap();
    let v4b = net
        .a
        .add_local_candidate(now, host("192.168.1.1:5000"))
        .unwrap();
    let v6 = net
        .a
        .add_local_candidate(now, host("[2001:db8::1]:5000"))
        .unwrap();
    let v4a_again = net
        .a
        .add_local_candidate(now, host("10.0.0.1:5001"))
        .unwrap();
    let v6b = net
        .a
        .add_local_candidate(now, host("[2001:db8::2]:5000"))
        .unwrap();
    // RFC 8421 §4: the families interleave, IPv6 first: v6, v4, v6, v4.
    assert!(v6.priority() > v4a.priority());
    assert!(v4a.priority() > v6b.priority());
    assert!(v6b.priority() > v4b.priority());
    assert_eq!(v4a.priority(), v4a_again.priority());
    assert_eq!(v4a.priority() >> 24, 126);
    // Redundant: same address and base.
    assert_eq!(
        net.a.add_local_candidate(now, host("10.0.0.1:5000")),
        Err(IceError::Redundant)
    );
    // Pairs only within an address family.
    net.a.add_remote_candidate(now, host("10.0.0.9:1")).unwrap();
    assert!(net
        .a
        .stats()
        .pairs
        .iter()
        .all(|p| p.local.address().is_ipv4()));
}

#[test]
fn disconnected_then_back_when_consent_answers_resume() {
    use std::cell::Cell;
    use std::rc::Rc;
    let mut net = Net::new(seeded(true, 37), seeded(false, 38));
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    net.run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    let silent = Rc::new(Cell::new(true));
    let b_base = net.b.selected_pair().unwrap().0.base();
    let s = silent.clone();
    net.drop = Box::new(move |t| s.get() && t.source == b_base);
    net.run_until(
        |n| n.a.state() == IceState::Disconnected,
        Duration::from_secs(20),
    )
    .unwrap();
    assert!(net.send(Side::A, b"still trying").is_ok());
    silent.set(false);
    net.run_until(
        |n| matches!(n.a.state(), IceState::Connected | IceState::Completed),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(!net
        .a_events
        .iter()
        .any(|(_, e)| *e == IceEvent::ConsentLost));
}

/// Without optimistic nomination: the check's round trip (20 ms), then the
/// nomination check goes out with the answer (the pacer is idle, nothing
/// waits for a Ta slot) and its round trip: two round trips.
#[test]
fn regular_nomination_takes_two_round_trips_and_no_pacing_wait() {
    let regular = |controlling, seed| seeded(controlling, seed).with_optimistic_nomination(false);
    let mut net = Net::new(regular(true, 1), regular(false, 2));
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    let took = net
        .run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    assert!(took >= Duration::from_millis(40), "{took:?}");
    // Not 50 ms (Ta after the first check) + 20 ms.
    assert!(took < Duration::from_millis(50), "{took:?}");
}

/// Run the agent's gathering at `now` and answer its Binding request to
/// `server` with `mapped`. Returns the events that came out before the
/// answer.
fn answer_gather(
    a: &mut IceAgent,
    now: Instant,
    server: SocketAddr,
    mapped: SocketAddr,
) -> Vec<IceEvent> {
    use p2p_stun::attr::XorMappedAddress;
    use p2p_stun::{Message, MessageBuilder, MessageClass, MessageType, Method};
    a.handle_timeout(now);
    let (sent, events) = outputs(a);
    let t = sent
        .into_iter()
        .find(|t| t.destination == server)
        .expect("a Binding request to the STUN server");
    let req = Message::decode(&t.contents).expect("a STUN request");
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(
        &mut buf,
        MessageType::new(Method::BINDING, MessageClass::Success),
        req.transaction_id(),
    )
    .unwrap();
    b.add(&XorMappedAddress(mapped)).unwrap();
    b.add_fingerprint().unwrap();
    b.finish();
    let _ = a.handle_input(now, Datagram::udp(server, t.source, &buf));
    events
}

/// A restart gathers again: the server-reflexive candidate of the old
/// mapping is forgotten, the STUN server is asked again, and
/// GatheringComplete waits for the new answer, whose address (the NAT
/// mapped us elsewhere) becomes the new server-reflexive candidate.
#[test]
fn restart_gathers_server_reflexive_candidates_again() {
    let server = addr("192.0.2.1:3478");
    let (old, new) = (addr("198.51.100.1:40000"), addr("198.51.100.1:40001"));
    let mut a = IceAgent::new(seeded(true, 1));
    let t0 = Instant::now();
    a.add_stun_server(t0, server);
    a.add_local_candidate(t0, host("10.0.0.1:5000")).unwrap();
    a.end_of_local_candidates();
    let mut before = answer_gather(&mut a, t0, server, old);
    let srflx = |a: &IceAgent| {
        a.local_candidates()
            .iter()
            .filter(|c| c.kind() == CandidateKind::ServerReflexive)
            .map(|c| c.address())
            .collect::<Vec<_>>()
    };
    assert_eq!(srflx(&a), [old]);
    before.extend(events(&mut a));
    let events_now = before;
    assert!(
        events_now.contains(&IceEvent::GatheringComplete),
        "{events_now:?}"
    );

    a.restart(t0);
    assert!(srflx(&a).is_empty());
    let restarted: Vec<IceEvent> = events(&mut a);
    assert!(
        !restarted.contains(&IceEvent::GatheringComplete),
        "{restarted:?}"
    );
    assert!(restarted
        .iter()
        .any(|e| matches!(e, IceEvent::LocalCandidate(c) if c.kind() == CandidateKind::Host)));
    let mut before = answer_gather(&mut a, t0 + Duration::from_secs(1), server, new);
    assert_eq!(srflx(&a), [new]);
    before.extend(events(&mut a));
    let events = before;
    assert!(events.contains(&IceEvent::GatheringComplete), "{events:?}");
    assert!(events
        .iter()
        .any(|e| matches!(e, IceEvent::LocalCandidate(c) if c.address() == new)));
}

/// A retired local candidate (a lost TURN allocation): its pairs fail at
/// once, it is not paired with later remote candidates, and a restart
/// forgets it.
#[test]
fn a_retired_candidate_leaves_the_check_list() {
    let relayed = addr("203.0.113.1:50000");
    let mut a = IceAgent::new(seeded(true, 1));
    let t0 = Instant::now();
    a.add_local_candidate(t0, host("10.0.0.1:5000")).unwrap();
    a.add_local_candidate(
        t0,
        Candidate::relayed(
            relayed,
            Some(addr("198.51.100.1:5000")),
            addr("203.0.113.1:3478").ip(),
        ),
    )
    .unwrap();
    a.set_remote_credentials(t0, "ufragB", "passwordpasswordpassword")
        .unwrap();
    a.add_remote_candidate(t0, host("10.0.0.2:6000")).unwrap();
    assert!(a.retire_local_candidate(relayed, relayed));
    assert!(!a.retire_local_candidate(addr("10.9.9.9:1"), addr("10.9.9.9:1")));
    let from_relay = |a: &IceAgent| {
        a.stats()
            .pairs
            .into_iter()
            .filter(|p| p.local.address() == relayed)
            .map(|p| p.state)
            .collect::<Vec<_>>()
    };
    assert_eq!(from_relay(&a), [PairState::Failed]);
    a.add_remote_candidate(t0, host("10.0.0.3:7000")).unwrap();
    assert_eq!(from_relay(&a), [PairState::Failed]);
    a.restart(t0);
    assert!(!a.local_candidates().iter().any(|c| c.address() == relayed));
}

/// A restart that withholds a candidate neither emits nor pairs it; added
/// again, it is signalled and paired in the new generation.
#[test]
fn a_withheld_candidate_waits_out_the_restart_until_added_again() {
    let relayed = addr("203.0.113.1:50000");
    let relay = || {
        Candidate::relayed(
            relayed,
            Some(addr("198.51.100.1:5000")),
            addr("203.0.113.1:3478").ip(),
        )
    };
    let mut a = IceAgent::new(seeded(true, 1));
    let t0 = Instant::now();
    a.add_local_candidate(t0, host("10.0.0.1:5000")).unwrap();
    a.add_local_candidate(t0, relay()).unwrap();
    a.set_remote_credentials(t0, "ufragB", "passwordpasswordpassword")
        .unwrap();
    a.add_remote_candidate(t0, host("10.0.0.2:6000")).unwrap();
    let _ = outputs(&mut a);
    a.restart_withholding(t0, &[(relayed, relayed)]);
    let mut emitted = Vec::new();
    for e in events(&mut a) {
        if let IceEvent::LocalCandidate(c) = e {
            emitted.push(c.address());
        }
    }
    assert_eq!(emitted, [addr("10.0.0.1:5000")]);
    assert!(!a.local_candidates().iter().any(|c| c.address() == relayed));
    a.set_remote_credentials(t0, "ufragC", "passwordpasswordpassword")
        .unwrap();
    a.add_remote_candidate(t0, host("10.0.0.2:6000")).unwrap();
    assert!(!a.stats().pairs.iter().any(|p| p.local.address() == relayed));
    a.add_local_candidate(t0, relay()).unwrap();
    let again = events(&mut a)
        .into_iter()
        .any(|e| matches!(e, IceEvent::LocalCandidate(c) if c.address() == relayed));
    assert!(again);
    assert!(a
        .stats()
        .pairs
        .iter()
        .any(|p| p.local.address() == relayed && p.state != PairState::Failed));
}

#[test]
fn dual_stack_checks_interleave_families_so_broken_ipv6_does_not_hold_ipv4_back() {
    // Two IPv6 addresses and one IPv4 address on each side, and an IPv6
    // path that drops everything. RFC 8421: the IPv4 pair is checked
    // second, not after every IPv6 pair.
    let mut net = Net::new(seeded(true, 61), seeded(false, 62));
    net.drop = Box::new(|t| t.destination.is_ipv6());
    add_hosts(
        &mut net,
        &["[2001:db8::1]:5000", "10.0.0.1:5000", "[2001:db8::2]:5000"],
        &["[2001:db8::9]:6000", "10.0.0.2:6000", "[2001:db8::a]:6000"],
    );
    let took = net
        .run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    let checks: Vec<bool> = net
        .a_sent
        .iter()
        .filter(|(_, t)| {
            p2p_stun::Message::decode(&t.contents)
                .is_ok_and(|m| m.typ().class == p2p_stun::MessageClass::Request)
        })
        .map(|(_, t)| t.destination.is_ipv4())
        .collect();
    assert_eq!(checks.iter().position(|v4| *v4), Some(1), "{checks:?}");
    // Selected once the better (IPv6) pairs' first retransmissions went
    // unanswered (the nomination's patience), not after their 9.5 s.
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(
        net.a.selected_pair().map(|(l, _)| l.address().is_ipv4()),
        Some(true)
    );
}

/// Relay first, upgrade later (`IceConfig::early_nomination`): the
/// controlling agent nominates the first pair that works at once, though
/// a better one (IPv6, RFC 8421's first family) is still being checked;
/// when the better one succeeds later (its path dropped everything for
/// 2 s), it is nominated in turn and both sides move to it. Without early
/// nomination the first nomination waits for the better pair (its first
/// retransmission unanswered, then twice the round trip).
#[test]
fn the_first_valid_pair_is_nominated_at_once_and_a_better_one_replaces_it_later() {
    for early in [true, false] {
        let blocked = std::rc::Rc::new(std::cell::Cell::new(true));
        let b2 = blocked.clone();
        let mut net = Net::new(
            seeded(true, 71).with_early_nomination(early),
            seeded(false, 72),
        );
        net.drop = Box::new(move |t| b2.get() && t.destination.is_ipv6());
        add_hosts(
            &mut net,
            &["[2001:db8::1]:5000", "10.0.0.1:5000"],
            &["[2001:db8::9]:6000", "10.0.0.2:6000"],
        );
        let took = net
            .run_until(|n| n.both_connected(), Duration::from_secs(5))
            .unwrap();
        if early {
            assert!(took < Duration::from_millis(200), "{took:?}");
        } else {
            assert!(took > Duration::from_millis(500), "{took:?}");
        }
        for ag in [&net.a, &net.b] {
            assert_eq!(
                ag.selected_pair().map(|(l, _)| l.address().is_ipv4()),
                Some(true)
            );
        }
        net.run_for(Duration::from_secs(2));
        blocked.set(false);
        let v6 = |a: &IceAgent| {
            a.selected_pair()
                .is_some_and(|(l, _)| l.address().is_ipv6())
        };
        net.run_until(|n| v6(&n.a) && v6(&n.b), Duration::from_secs(10))
            .unwrap();
        let selections = |side| {
            net.events(side)
                .iter()
                .filter(|(_, e)| matches!(e, IceEvent::SelectedPair { .. }))
                .count()
        };
        assert_eq!(
            (selections(Side::A), selections(Side::B)),
            (2, 2),
            "early {early}"
        );
    }
}

/// A path found outside the agent's checks (birthday probing, issue 14):
/// handed to both agents, it is checked at once and selected, although
/// the signalled pair never works; the socket the agent did not know
/// becomes a local candidate that is never signalled.
#[test]
fn a_discovered_pair_is_checked_at_once_and_selected() {
    let mut net = Net::new(seeded(true, 1), seeded(false, 2));
    // The signalled host pair never gets through (a NAT in between).
    net.drop = Box::new(|t| t.source.port() == 6000 || t.destination.port() == 6000);
    add_hosts(&mut net, &["10.0.0.1:5000"], &["10.0.0.2:6000"]);
    assert!(net
        .run_until(|n| n.both_connected(), Duration::from_secs(1))
        .is_err());
    let (probe, a_sock) = (addr("10.0.0.2:7000"), addr("10.0.0.1:5000"));
    let now = net.now;
    net.b.add_discovered_pair(now, probe, a_sock).unwrap();
    net.a.add_discovered_pair(now, a_sock, probe).unwrap();
    let took = net
        .run_until(|n| n.both_connected(), Duration::from_secs(2))
        .unwrap();
    // A triggered check each way and the nomination: a few round trips.
    assert!(took < Duration::from_millis(200), "{took:?}");
    let (l, r) = net.a.selected_pair().unwrap();
    assert_eq!((l.address(), r.address()), (a_sock, probe));
    assert_eq!(r.kind(), CandidateKind::PeerReflexive);
    let (l, r) = net.b.selected_pair().unwrap();
    assert_eq!((l.address(), r.address()), (probe, a_sock));
    assert!(!net
        .events(Side::B)
        .iter()
        .any(|(_, e)| matches!(e, IceEvent::LocalCandidate(c) if c.address() == probe)));
}

#[test]
fn a_relay_only_agent_refuses_a_discovered_pair() {
    let mut a = IceAgent::new(seeded(true, 1).with_relay_only(true));
    let mut b = IceAgent::new(seeded(false, 2));
    let t0 = Instant::now();
    exchange_credentials(&mut a, &mut b, t0);
    assert_eq!(
        a.add_discovered_pair(t0, addr("10.0.0.1:5000"), addr("10.0.0.2:7000")),
        Err(IceError::ExcludedByPolicy)
    );
}

/// A relayed candidate on A, the peer's host on B, connected over it.
fn connected_over_a_relay(hosts_too: bool) -> (Net, SocketAddr) {
    let relayed = addr("203.0.113.50:40000");
    let a_config = seeded(true, 41).with_relay_only(!hosts_too);
    let mut net = Net::new(a_config, seeded(false, 42));
    let now = net.now;
    net.a
        .add_local_candidate(
            now,
            Candidate::relayed(
                relayed,
                Some(addr("198.51.100.1:5000")),
                addr("203.0.113.50:3478").ip(),
            ),
        )
        .unwrap();
    let a_hosts: &[&str] = if hosts_too { &["10.0.0.1:5000"] } else { &[] };
    add_hosts(&mut net, a_hosts, &["10.0.0.2:6000"]);
    net.run_until(|n| n.both_connected(), Duration::from_secs(5))
        .unwrap();
    (net, relayed)
}

/// The TCP connection of a TURN allocation ended: the selected pair over
/// its relayed candidate is gone now (consent lost, ICE failed), not after
/// the 30 s consent timeout.
#[test]
fn losing_the_selected_relayed_candidate_loses_consent_at_once() {
    let (mut net, relayed) = connected_over_a_relay(false);
    assert_eq!(
        selected_kinds(&net, Side::A),
        (CandidateKind::Relayed, CandidateKind::Host)
    );
    let (now, since) = (net.now, net.now - net.t0);
    assert!(net.a.lose_local_candidate(now, relayed, relayed));
    assert!(net.a.selected_pair().is_none());
    assert_eq!(net.a.state(), IceState::Failed);
    assert_eq!(net.send(Side::A, b"x"), Err(IceError::NotConnected));
    net.run_for(Duration::from_millis(10));
    let lost: Vec<_> = net
        .a_events
        .iter()
        .filter(|(at, e)| *at >= since && *e == IceEvent::ConsentLost)
        .collect();
    assert_eq!(lost.len(), 1, "{:?}", net.a_events);
    // Not known (any more): nothing happens.
    assert!(!net
        .a
        .lose_local_candidate(net.now, addr("10.9.9.9:1"), addr("10.9.9.9:1")));
}

/// A lost candidate the selected pair does not use leaves the selected
/// pair alone and the connection up.
#[test]
fn losing_a_relayed_candidate_off_the_selected_pair_changes_nothing() {
    let (mut net, relayed) = connected_over_a_relay(true);
    assert_eq!(
        selected_kinds(&net, Side::A),
        (CandidateKind::Host, CandidateKind::Host)
    );
    let (now, since) = (net.now, net.now - net.t0);
    assert!(net.a.lose_local_candidate(now, relayed, relayed));
    // Its pair failing may end the checks (completed): still up.
    assert!(
        matches!(net.a.state(), IceState::Connected | IceState::Completed),
        "{:?}",
        net.a.state()
    );
    assert_eq!(
        selected_kinds(&net, Side::A),
        (CandidateKind::Host, CandidateKind::Host)
    );
    net.run_for(Duration::from_secs(10));
    assert!(net.both_connected());
    assert!(!net
        .a_events
        .iter()
        .any(|(at, e)| *at >= since && *e == IceEvent::ConsentLost));
}
