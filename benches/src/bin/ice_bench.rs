//! ICE time to connected on the `p2p-netsim` virtual network (issue 6), in
//! simulated time, with the connectivity checks counted.
//!
//! Two `Session`s (the ICE agent with its STUN and TURN clients) connect
//! through the harness of `crates/connect/tests/common` (the one the NAT
//! matrix runs on, included here by path so that the figures are the
//! matrix's): a STUN/TURN server on the public side, signalling relayed with
//! 50 ms of delay, 10 ms of latency on every access link (the server's
//! included). So a round trip between two peers (or a peer and the server)
//! is 40 ms, through one relay (peer → server → peer and back) 80 ms, and
//! relay to relay on the one server 120 ms (the relayed datagram leaves
//! the server and comes back in).
//!
//! Prints a Markdown table: `cargo xtask bench ice` runs it and writes
//! `target/bench-ice.md`. Deterministic: fixed seeds, simulated clock.
//! `ICE_BENCH_TRACE=<part of a scenario name>` prints that run's events.
#![allow(clippy::disallowed_methods)] // one Instant::now() as the simulated t0

#[path = "../../../crates/connect/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Opts, Pair, PathKind, Placement, SessionNode};
use p2p_connect::{HardNatEvent, IceConfig, SessionEvent};
use p2p_netsim::Behaviour::{
    self, AddressAndPortDependent as APD, AddressDependent as AD, EndpointIndependent as EI,
};
use p2p_netsim::PortAllocation;

/// A round trip between two peers, or a peer and the server.
const RTT: Duration = Duration::from_millis(40);

/// The round trip of a path with `relayed` relayed ends (0, 1 or 2): each
/// adds a crossing of the server's access link both ways.
fn path_rtt(relayed: u32) -> Duration {
    RTT * (1 + relayed)
}

struct Scenario {
    name: &'static str,
    a: Placement,
    b: Placement,
    opts: Opts,
}

struct Measure {
    path: PathKind,
    /// The round trip of the path found.
    rtt: Duration,
    /// t0 → both sides have a selected pair.
    connect: Duration,
    /// First check (either side) → both selected.
    from_check: Duration,
    /// The later allocation → both selected (relayed paths).
    from_alloc: Option<Duration>,
    checks: (u32, u32),
}

fn allocated_at(n: &SessionNode) -> Option<Instant> {
    n.events
        .iter()
        .find(|(_, e)| matches!(e, SessionEvent::TurnAllocated { .. }))
        .map(|(t, _)| *t)
}

fn measure(s: &Scenario) -> Result<Measure, String> {
    let mut p = Pair::new(s.a, s.b, s.opts.clone());
    let both =
        |p: &Pair| p.node_a().first_selected.is_some() && p.node_b().first_selected.is_some();
    p.run_until(both, Duration::from_secs(30))?;
    if std::env::var("ICE_BENCH_TRACE").is_ok_and(|v| s.name.contains(v.as_str())) {
        eprintln!("{}", p.report(s.name));
    }
    let (a, b) = (p.node_a(), p.node_b());
    let t0 = p.sim.t0();
    let done = a
        .first_selected
        .max(b.first_selected)
        .ok_or("no selection")?;
    let first_check = [a.first_check, b.first_check]
        .into_iter()
        .flatten()
        .min()
        .ok_or("no check")?;
    let (l, r) = a.session.selected_path().ok_or("no path at A")?;
    let path = PathKind::of(l.kind, r.kind);
    let relayed = [l.kind, r.kind]
        .iter()
        .filter(|k| **k == p2p_connect::CandidateKind::Relayed)
        .count() as u32;
    let from_alloc = if path == PathKind::Relay {
        [allocated_at(a), allocated_at(b)]
            .into_iter()
            .flatten()
            .max()
            .map(|t| done.saturating_duration_since(t))
    } else {
        None
    };
    Ok(Measure {
        path,
        rtt: path_rtt(relayed),
        connect: done - t0,
        from_check: done.saturating_duration_since(first_check),
        from_alloc,
        checks: (a.checks_sent(), b.checks_sent()),
    })
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn rtts(d: Duration, rtt: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() / rtt.as_secs_f64())
}

/// One hard-NAT traversal run: time to the first message both ways, time
/// to the final (direct) path, and what probing cost.
struct HardNatMeasure {
    first_message: Duration,
    direct_at: Option<Duration>,
    path: PathKind,
    /// Requests the EIM side probed with, and the endpoint-dependent side
    /// opened sockets with (one request each).
    probes: (u32, u32),
    /// Bytes of those requests and of the answer to the one that landed.
    bytes: u64,
}

/// The size of one probe: a Binding request with USERNAME (two 8-character
/// ufrags and a colon: 17 bytes, padded to 20), PRIORITY, MESSAGE-INTEGRITY
/// and FINGERPRINT, plus the IPv4 and UDP headers.
const PROBE_BYTES: u64 = 20 + (4 + 20) + (4 + 4) + (4 + 20) + (4 + 4) + 28;

fn hard_nat_measure(
    a: Placement,
    b: Placement,
    alloc: PortAllocation,
) -> Result<HardNatMeasure, String> {
    let opts = Opts {
        hard_nat: true,
        port_allocation: alloc,
        ..Opts::default()
    };
    let mut p = Pair::new(a, b, opts);
    let first_message = p.run_until(Pair::connected, Duration::from_secs(30))?;
    p.run_for(Duration::from_secs(12));
    let (na, nb) = (p.node_a(), p.node_b());
    let t0 = p.sim.t0();
    let (l, r) = na.session.selected_path().ok_or("no path at A")?;
    let direct_at = (na.selections() > 1)
        .then(|| {
            na.events
                .iter()
                .rev()
                .find(|(_, e)| matches!(e, SessionEvent::SelectedPair { .. }))
                .map(|(t, _)| *t - t0)
        })
        .flatten();
    let mut probes = (0, 0);
    for n in [na, nb] {
        for (_, e) in &n.events {
            if let SessionEvent::HardNat(
                HardNatEvent::Found { sent, .. } | HardNatEvent::GaveUp { sent },
            ) = e
            {
                if n.probe_sockets.0 > 0 {
                    probes.1 += sent;
                } else {
                    probes.0 += sent;
                }
            }
        }
    }
    Ok(HardNatMeasure {
        first_message,
        direct_at,
        path: PathKind::of(l.kind, r.kind),
        probes,
        bytes: u64::from(probes.0 + probes.1 + 1) * PROBE_BYTES,
    })
}

/// The hard-NAT traversal table: the cells ICE alone relays and probing
/// or prediction turns direct.
fn hard_nat_table() -> bool {
    let cells: Vec<(Placement, Placement, PortAllocation)> = {
        let mut v = Vec::new();
        let dep: [Behaviour; 2] = [AD, APD];
        for m in dep {
            for f in [EI, AD, APD] {
                v.push((
                    Placement::Nat(EI, APD),
                    Placement::Nat(m, f),
                    PortAllocation::Preserving,
                ));
            }
        }
        v.push((
            Placement::Nat(APD, APD),
            Placement::Nat(APD, APD),
            PortAllocation::Preserving,
        ));
        v.push((
            Placement::Nat(APD, APD),
            Placement::Nat(APD, APD),
            PortAllocation::Sequential,
        ));
        v.push((
            Placement::Nat(EI, APD),
            Placement::Nat(APD, APD),
            PortAllocation::Random,
        ));
        v
    };
    println!();
    println!("Hard-NAT traversal (issue 14), per cell: both peers with `SessionConfig::hard_nat`, the NATs' ports as named.");
    println!();
    println!("| A | B | ports | path | first message both ways (sim ms) | direct path at (sim ms) | probes easy / sockets hard | bytes on probing |");
    println!("|---|---|---|---|---:|---:|---:|---:|");
    let mut failed = false;
    for (a, b, alloc) in cells {
        match hard_nat_measure(a, b, alloc) {
            Ok(m) => println!(
                "| {a} | {b} | {alloc:?} | {} | {} | {} | {} / {} | {} |",
                m.path,
                ms(m.first_message),
                m.direct_at.map_or_else(|| "–".to_owned(), ms),
                m.probes.0,
                m.probes.1,
                if m.probes == (0, 0) {
                    "–".to_owned()
                } else {
                    m.bytes.to_string()
                },
            ),
            Err(e) => {
                failed = true;
                println!("| {a} | {b} | {alloc:?} | did not connect | | | | |");
                eprintln!("{a} vs {b}: {e}");
            }
        }
    }
    failed
}

fn main() {
    let aggressive = IceConfig::controlling().with_aggressive_nomination(true);
    let regular = |ice: IceConfig| ice.with_optimistic_nomination(false);
    let relay_only = |ice: IceConfig| ice.with_relay_only(true);
    let base = Opts::default();
    let scenarios = [
        Scenario {
            name: "host: two public peers",
            a: Placement::Public,
            b: Placement::Public,
            opts: base.clone(),
        },
        Scenario {
            name: "host: one LAN behind one NAT",
            a: Placement::Nat(EI, EI),
            b: Placement::SameLanAsA,
            opts: base.clone(),
        },
        Scenario {
            name: "host: public, regular nomination only",
            a: Placement::Public,
            b: Placement::Public,
            opts: Opts {
                ice_a: regular(IceConfig::controlling()),
                ice_b: regular(IceConfig::controlled()),
                ..base.clone()
            },
        },
        Scenario {
            name: "host: public, aggressive nomination",
            a: Placement::Public,
            b: Placement::Public,
            opts: Opts {
                ice_a: aggressive.clone(),
                ..base.clone()
            },
        },
        Scenario {
            name: "srflx: two EIM/EIF NATs",
            a: Placement::Nat(EI, EI),
            b: Placement::Nat(EI, EI),
            opts: base.clone(),
        },
        Scenario {
            name: "srflx: two EIM/APDF NATs",
            a: Placement::Nat(EI, APD),
            b: Placement::Nat(EI, APD),
            opts: base.clone(),
        },
        Scenario {
            name: "relay: two APDM/APDF NATs",
            a: Placement::Nat(APD, APD),
            b: Placement::Nat(APD, APD),
            opts: base.clone(),
        },
        Scenario {
            name: "relay: relay-only policy, public",
            a: Placement::Public,
            b: Placement::Public,
            opts: Opts {
                ice_a: relay_only(IceConfig::controlling()),
                ice_b: relay_only(IceConfig::controlled()),
                ..base.clone()
            },
        },
        Scenario {
            name: "relay: relay-only, regular nomination only",
            a: Placement::Public,
            b: Placement::Public,
            opts: Opts {
                ice_a: regular(relay_only(IceConfig::controlling())),
                ice_b: regular(relay_only(IceConfig::controlled())),
                ..base.clone()
            },
        },
        Scenario {
            name: "relay: relay-only policy, APDM NATs",
            a: Placement::Nat(APD, APD),
            b: Placement::Nat(APD, APD),
            opts: Opts {
                ice_a: relay_only(IceConfig::controlling()),
                ice_b: relay_only(IceConfig::controlled()),
                ..base
            },
        },
    ];
    println!(
        "| scenario | path | path RTT (ms) | connect from t0 (sim ms) | first check → both selected (sim ms) | in path RTTs | allocation → both selected (sim ms) | in path RTTs | checks A/B |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut failed = false;
    for s in &scenarios {
        match measure(s) {
            Ok(m) => {
                let rtt = m.rtt;
                let (fa, fr) = match m.from_alloc {
                    Some(d) => (ms(d), rtts(d, rtt)),
                    None => ("–".into(), "–".into()),
                };
                println!(
                    "| {} | {} | {} | {} | {} | {} | {fa} | {fr} | {}/{} |",
                    s.name,
                    m.path,
                    rtt.as_millis(),
                    ms(m.connect),
                    ms(m.from_check),
                    rtts(m.from_check, rtt),
                    m.checks.0,
                    m.checks.1
                );
            }
            Err(e) => {
                failed = true;
                println!("| {} | did not connect | | | | | | | |", s.name);
                eprintln!("{}: {e}", s.name);
            }
        }
    }
    println!();
    println!(
        "Simulated time on p2p-netsim: 10 ms per access link each way; a round trip is {} ms between peers or to the server, {} ms through one relay, {} ms relay to relay. Signalling takes 50 ms one way, so \"allocation → both selected\" includes 50 ms of signalling the relayed candidate. Default configuration (regular nomination, optimistic nomination of the best pair) unless stated; checks count every check sent (ordinary, triggered, nominations), not retransmissions.",
        path_rtt(0).as_millis(),
        path_rtt(1).as_millis(),
        path_rtt(2).as_millis()
    );
    if hard_nat_table() || failed {
        std::process::exit(1);
    }
}
