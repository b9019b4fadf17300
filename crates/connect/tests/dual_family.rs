//! Dual-family TURN allocations (RFC 8656 ADDITIONAL-ADDRESS-FAMILY) in the
//! `Session`, on the virtual network with a dual-stack TURN server: an
//! IPv4-only peer's allocation also relays from IPv6, so an IPv6-only peer
//! without a TURN server of its own still has a path; without it, none.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Opts, Pair, Placement};
use p2p_connect::CandidateKind;
use p2p_netsim::Behaviour::{AddressAndPortDependent as APD, EndpointIndependent as EI};

/// A (IPv4 only, behind an EIM/APDF NAT, TURN over IPv4) and B (IPv6 only,
/// behind an RFC 6092 firewall, no TURN server).
fn pair(dual_family: bool) -> Pair {
    let opts = Opts {
        dual_family,
        turn_b: false,
        ..Opts::default()
    };
    Pair::new(Placement::Nat(EI, APD), Placement::V6Firewall, opts)
}

#[test]
fn a_dual_family_allocation_lets_an_ipv6_only_peer_reach_an_ipv4_only_one() {
    let mut p = pair(true);
    // Two relayed candidates from one allocation over IPv4.
    p.run_until(Pair::connected, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let relayed: Vec<SocketAddr> = p
        .node_a()
        .session
        .agent()
        .local_candidates()
        .iter()
        .filter(|c| c.kind() == CandidateKind::Relayed)
        .map(|c| c.address())
        .collect();
    assert!(
        relayed.iter().any(SocketAddr::is_ipv4) && relayed.iter().any(SocketAddr::is_ipv6),
        "{relayed:?}"
    );
    // A sends from its IPv6 relayed address to B's IPv6 host address.
    let (local, remote) = p.node_a().session.agent().selected_pair().expect("a path");
    assert_eq!(local.kind(), CandidateKind::Relayed, "{local:?}");
    assert!(local.address().is_ipv6() && remote.address().is_ipv6());
    let (local_b, _) = p.node_b().session.agent().selected_pair().expect("a path");
    assert!(
        matches!(
            local_b.kind(),
            CandidateKind::Host | CandidateKind::ServerReflexive
        ),
        "{local_b:?}"
    );
    // And data crosses both ways on it.
    p.run_for(Duration::from_secs(2));
    assert!(!p.node_a().received.is_empty() && !p.node_b().received.is_empty());
}

#[test]
fn without_the_additional_family_the_ipv6_only_peer_has_no_path() {
    let mut p = pair(false);
    let relayed: Vec<SocketAddr> = {
        let _ = p.run_until(Pair::connected, Duration::from_secs(30));
        p.node_a()
            .session
            .agent()
            .local_candidates()
            .iter()
            .filter(|c| c.kind() == CandidateKind::Relayed)
            .map(|c| c.address())
            .collect()
    };
    assert!(
        !relayed.is_empty() && relayed.iter().all(SocketAddr::is_ipv4),
        "{relayed:?}"
    );
    assert!(!p.connected(), "connected without an IPv6 relayed address");
}
