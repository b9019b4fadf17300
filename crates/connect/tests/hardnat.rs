//! Hard-NAT traversal in the `Session` (issue 14) on the virtual network:
//! each side learns its NAT's mapping behaviour from the server's two
//! addresses (RFC 5780 OTHER-ADDRESS); birthday probing turns a relayed
//! path between an endpoint-independent, port-restricted NAT and an
//! endpoint-dependent one direct, after ICE had its fair chance; it never
//! runs under a relay-only policy or without the peer's behaviour (the ICE
//! option token not agreed).

mod common;

use std::time::Duration;

use common::{run_pair, Opts, Pair, PathKind, Placement};
use p2p_connect::{HardNatEvent, IceConfig, NatMapping, SessionEvent};
use p2p_netsim::Behaviour::{
    AddressAndPortDependent as APD, AddressDependent as AD, EndpointIndependent as EI,
};
use p2p_netsim::PortAllocation;

fn hard_nat() -> Opts {
    Opts {
        hard_nat: true,
        ..Opts::default()
    }
}

fn probing_events(p: &Pair) -> usize {
    [p.node_a(), p.node_b()]
        .iter()
        .map(|n| {
            n.events
                .iter()
                .filter(|(_, e)| matches!(e, SessionEvent::HardNat(_)))
                .count()
        })
        .sum()
}

#[test]
fn each_side_learns_its_mapping_from_the_servers_two_addresses() {
    for (m, want) in [
        (EI, NatMapping::EndpointIndependent),
        (AD, NatMapping::EndpointDependent),
        (APD, NatMapping::EndpointDependent),
    ] {
        let mut p = Pair::new(Placement::Nat(m, APD), Placement::Nat(EI, EI), hard_nat());
        p.run_for(Duration::from_millis(500));
        let a = p.node_a().session.nat_report().expect("learnt");
        assert_eq!(a.mapping, want, "{m:?}");
        assert_eq!(a.local, common::sa("10.0.1.2:5000"));
        assert_eq!(a.mapped.ip(), common::ip("198.51.100.1"));
        let b = p.node_b().session.nat_report().expect("learnt");
        assert_eq!(b.mapping, NatMapping::EndpointIndependent);
    }
}

#[test]
fn birthday_probing_turns_the_relayed_path_direct_and_closes_the_unused_sockets() {
    // Port-restricted cone against symmetric: ICE alone relays.
    let (a, b) = (Placement::Nat(EI, APD), Placement::Nat(APD, APD));
    assert_eq!(run_pair(a, b, Opts::default()).path, PathKind::Relay);
    let mut p = Pair::new(a, b, hard_nat());
    p.run_until(Pair::connected, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    p.run_for(Duration::from_secs(15));
    let (na, nb) = (p.node_a(), p.node_b());
    let path = na.selected_kinds().expect("a path");
    assert_eq!(PathKind::of(path.0, path.1), PathKind::Prflx, "{path:?}");
    // The hard side (B) opened 256 sockets and kept the one that was hit.
    assert_eq!(nb.probe_sockets, (256, 255));
    assert_eq!(na.probe_sockets, (0, 0));
    let found = |n: &common::SessionNode| {
        n.events.iter().find_map(|(_, e)| match e {
            SessionEvent::HardNat(HardNatEvent::Found { sent, .. }) => Some(*sent),
            _ => None,
        })
    };
    let probes = found(na).expect("the easy side found it");
    assert!((1..=1000).contains(&probes), "{probes}");
    assert!(found(nb).is_some());
    // Data kept flowing over the new path until the end.
    let last = na.received.last().expect("data").0;
    assert!(p.sim.now() - last < Duration::from_secs(1));
}

#[test]
fn a_random_fully_nat_is_met_directly_too() {
    // Like Linux MASQUERADE --random-fully: random ports over 1024-65535.
    let opts = Opts {
        port_allocation: PortAllocation::Random,
        ..hard_nat()
    };
    let o = run_pair(Placement::Nat(APD, APD), Placement::Nat(EI, APD), opts);
    assert_eq!(o.path, PathKind::Prflx);
    assert!(o.probes.0 > 0 && o.probes.1 > 0, "{:?}", o.probes);
}

#[test]
fn a_relay_only_policy_never_learns_asks_or_probes() {
    let opts = Opts {
        ice_a: IceConfig::controlling().with_relay_only(true),
        ice_b: IceConfig::controlled().with_relay_only(true),
        ..hard_nat()
    };
    let mut p = Pair::new(Placement::Nat(EI, APD), Placement::Nat(APD, APD), opts);
    p.run_until(Pair::connected, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    p.run_for(Duration::from_secs(15));
    for n in [p.node_a(), p.node_b()] {
        assert!(n.session.nat_report().is_none(), "{}", n.name);
        assert!(!n.session.hard_nat_probing(), "{}", n.name);
        assert_eq!(n.probe_sockets, (0, 0), "{}", n.name);
        let k = n.selected_kinds().expect("relayed");
        assert_eq!(PathKind::of(k.0, k.1), PathKind::Relay);
    }
    assert_eq!(probing_events(&p), 0);
}

#[test]
fn without_the_peers_behaviour_nothing_is_probed() {
    // Both learn their own, but neither tells the other (the token is not
    // agreed): ICE alone, relayed.
    let opts = Opts {
        nat_signals: false,
        ..hard_nat()
    };
    let mut p = Pair::new(Placement::Nat(EI, APD), Placement::Nat(APD, APD), opts);
    p.run_until(Pair::connected, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    p.run_for(Duration::from_secs(15));
    for n in [p.node_a(), p.node_b()] {
        assert!(n.session.nat_report().is_some(), "{}", n.name);
        assert!(!n.session.hard_nat_probing(), "{}", n.name);
        assert_eq!(n.probe_sockets, (0, 0), "{}", n.name);
    }
    assert_eq!(probing_events(&p), 0);
}

#[test]
fn only_an_eim_side_against_a_dependent_one_birthday_probes() {
    // Two EIM sides (ICE meets), an EIM/EIF side (ICE meets through a
    // learnt address), two endpoint-dependent sides (port prediction, one
    // socket each, no probes): no birthday probing.
    for (a, b) in [
        (Placement::Nat(EI, APD), Placement::Nat(EI, APD)),
        (Placement::Nat(APD, APD), Placement::Nat(APD, APD)),
        (Placement::Nat(EI, EI), Placement::Nat(APD, APD)),
    ] {
        let o = run_pair(a, b, hard_nat());
        assert_eq!(o.probes, (0, 0), "{a} vs {b}");
    }
}

#[test]
fn two_dependent_sides_with_random_ports_stay_relayed_and_ask_for_nothing() {
    let opts = Opts {
        port_allocation: PortAllocation::Random,
        ..hard_nat()
    };
    let mut p = Pair::new(Placement::Nat(APD, APD), Placement::Nat(APD, APD), opts);
    p.run_until(Pair::connected, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    p.run_for(Duration::from_secs(15));
    for n in [p.node_a(), p.node_b()] {
        assert_eq!(
            n.session.nat_report().map(|r| r.ports),
            Some(p2p_connect::PortPattern::Unknown)
        );
        assert!(!n.session.hard_nat_probing(), "{}", n.name);
        assert_eq!(n.probe_sockets, (0, 0), "{}", n.name);
        let k = n.selected_kinds().expect("relayed");
        assert_eq!(PathKind::of(k.0, k.1), PathKind::Relay);
    }
}
