//! Relay first, upgrade later (issue 14): the controlling agent nominates
//! the first pair that works (a relayed one included) and moves to a
//! better one when it succeeds. DTLS and the SCTP association run above
//! ICE, so the switch moves the same association to the new path: a
//! numbered stream on a reliable, ordered channel that crosses the switch
//! arrives whole and in order, both ways.

mod common;

use std::time::Duration;

use common::{Opts, Pair, PathKind, Placement};
use p2p_connect::{CandidateKind, ChannelEvent, ChannelOptions, IceConfig, SessionEvent};
use p2p_netsim::Behaviour::{AddressAndPortDependent as APD, EndpointIndependent as EI};

const MAX: Duration = Duration::from_secs(30);
/// One numbered message each way every this long.
const EVERY: Duration = Duration::from_millis(20);

/// Sends `n<i>` from A and `m<i>` from B on one reliable, ordered channel
/// every [`EVERY`] from the moment the association is up until `until`
/// after the start, then lets it drain; checks both arrive whole and in
/// order. Returns the path changes A saw and how many messages went
/// before and after the last one.
fn numbered_stream(p: &mut Pair, until: Duration) -> (usize, usize) {
    p.node_a_mut().pinging = false;
    p.node_b_mut().pinging = false;
    p.run_until(
        |p| p.node_a().established.is_some() && p.node_b().established.is_some(),
        MAX,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let now = p.sim.now();
    let id = p
        .node_a_mut()
        .open(now, ChannelOptions::new("numbers"))
        .expect("the role is known");
    // B takes the channel once it opened there.
    p.run_until(
        |p| {
            p.node_b().has_event(|e| {
                matches!(e, SessionEvent::Channel(ChannelEvent::ChannelOpened { id: i, .. }) if *i == id)
            })
            .is_some()
        },
        MAX,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut sent = 0usize;
    let mut sent_at = Vec::new();
    while p.elapsed() < until {
        sent += 1;
        let now = p.sim.now();
        sent_at.push(now);
        p.node_a_mut()
            .send_on(now, id, &format!("n{sent}"))
            .expect("A sends");
        p.node_b_mut()
            .send_on(now, id, &format!("m{sent}"))
            .expect("B sends");
        p.run_for(EVERY);
    }
    p.run_for(Duration::from_secs(3));
    let want_b: Vec<String> = (1..=sent).map(|i| format!("n{i}")).collect();
    let want_a: Vec<String> = (1..=sent).map(|i| format!("m{i}")).collect();
    assert_eq!(p.node_b().messages_on(id), want_b, "A to B");
    assert_eq!(p.node_a().messages_on(id), want_a, "B to A");
    let last_switch = p
        .node_a()
        .path_changes()
        .last()
        .map(|c| c.0)
        .expect("a path");
    let before = sent_at.iter().filter(|t| **t < last_switch).count();
    (before, sent - before)
}

/// Two peers on one LAN whose host candidates are signalled 3 s late:
/// they start on the relay, move to host ↔ host when the host candidates
/// come, and the stream crosses the move.
#[test]
fn a_numbered_stream_crosses_the_move_from_relay_to_host_whole_and_in_order() {
    let opts = Opts {
        hold_back: Some((
            Duration::from_secs(3),
            vec![CandidateKind::Host, CandidateKind::ServerReflexive],
        )),
        ..Opts::default()
    };
    let mut p = Pair::new(Placement::Nat(EI, APD), Placement::SameLanAsA, opts);
    let (before, after) = numbered_stream(&mut p, Duration::from_secs(5));
    let changes = p.node_a().path_changes();
    assert_eq!(
        changes
            .iter()
            .map(|c| (c.1, c.2))
            .collect::<Vec<_>>()
            .last(),
        Some(&(CandidateKind::Host, CandidateKind::Host))
    );
    let first = changes.first().expect("a path");
    assert_eq!(
        PathKind::of(first.1, first.2),
        PathKind::Relay,
        "{changes:?}"
    );
    assert!(
        before >= 20 && after >= 20,
        "{before} before, {after} after"
    );
    // B follows A's nomination.
    assert_eq!(
        p.node_b().selected_kinds(),
        Some((CandidateKind::Host, CandidateKind::Host))
    );
}

/// The controlling side takes the first pair that works and does not
/// wait for better ones (here the nomination timeout is 5 s): A selects
/// within a second, and ends on the direct path.
#[test]
fn the_first_valid_pair_is_nominated_at_once_and_a_better_one_replaces_it() {
    let opts = Opts {
        ice_a: IceConfig::controlling().with_nomination_timeout(Duration::from_secs(5)),
        ..Opts::default()
    };
    let mut p = Pair::new(Placement::Nat(EI, APD), Placement::Nat(EI, APD), opts);
    let took = p
        .run_until(
            |p| p.node_a().first_selected.is_some() && p.node_b().first_selected.is_some(),
            MAX,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    p.run_for(Duration::from_secs(15));
    assert_eq!(
        p.node_a().selected_kinds(),
        Some((
            CandidateKind::ServerReflexive,
            CandidateKind::ServerReflexive
        ))
    );
}

/// Early nomination off is the agent as it was: the first nomination
/// waits for the better pairs, and is the only one.
#[test]
fn without_early_nomination_the_first_nomination_waits_for_better_pairs() {
    let opts = Opts {
        ice_a: IceConfig::controlling().with_early_nomination(false),
        ..Opts::default()
    };
    let mut p = Pair::new(Placement::Nat(EI, APD), Placement::Nat(EI, APD), opts);
    p.run_until(Pair::connected, MAX)
        .unwrap_or_else(|e| panic!("{e}"));
    p.run_for(Duration::from_secs(15));
    assert_eq!(p.node_a().selections(), 1);
    assert_eq!(
        p.node_a().selected_kinds(),
        Some((
            CandidateKind::ServerReflexive,
            CandidateKind::ServerReflexive
        ))
    );
}
