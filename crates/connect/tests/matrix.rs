//! The NAT matrix (issue 6): every RFC 4787 mapping × filtering behaviour
//! for peer A against every one for peer B (81 pairs), plus same-LAN,
//! public and UDP-blocked peers. Each row states the path ICE should end on,
//! derived from RFC 4787 in [`expected`], and asserts it and a bound on the
//! simulated connection time.
//!
//! `ICE_MATRIX_OUT=docs/ice-matrix.md cargo test -p p2p-connect --test matrix -- --nocapture`
//! also writes the table (a relative path is taken from the workspace root).

mod common;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use common::{kind_name, run_pair, Opts, Outcome, PathKind, Placement, RouterHelp};
use p2p_netsim::Behaviour::{
    self, AddressAndPortDependent as APD, AddressDependent as AD, EndpointIndependent as EI,
};

const ALL: [Behaviour; 3] = [EI, AD, APD];

/// The path two peers behind their own NATs should end on, each NAT given as
/// (mapping, filtering). A is controlling. Both share one STUN/TURN server
/// (so every pair can fall back to a relay), and each peer's server-reflexive
/// address S was mapped towards that server, whose IP is not the peer's.
///
/// Notation: E_X(d) is the external address X's NAT uses towards destination
/// d. RFC 4787 §4.1: with EIM, E_X(d) = S_X for every d; with ADM it
/// depends on d's IP only (one stable address E_X towards the peer, but not
/// S_X, which was made towards the server's IP); with APDM it depends on d's
/// IP and port. §5: a packet from r reaches X through mapping E only if X
/// has sent through E to r (APDF), to r's IP (ADF), or to anyone (EIF).
/// A check succeeds only when its response comes back from the address it
/// was sent to (RFC 8445 §7.2.5.2.1, symmetric addresses).
pub fn expected(a: (Behaviour, Behaviour), b: (Behaviour, Behaviour)) -> PathKind {
    let ((ma, fa), (mb, fb)) = (a, b);
    // The filter of a peer admits a packet from the peer's IP (any port) once
    // it has sent anything to that IP: EIF or ADF.
    let admits_other_port = |f: Behaviour| f != APD;
    match (ma, mb) {
        // Rule 1. EIM both: E(d) = S for every d, so each side's checks to the
        // other's srflx leave from its own srflx. Each side's first check
        // opens its own filter for exactly the peer's srflx (APDF included);
        // the peer's retransmission then passes. srflx ↔ srflx, whatever the
        // filtering.
        (EI, EI) => PathKind::Srflx,
        // Rule 2. EIM against an endpoint-dependent mapping (ADM or APDM):
        // the dependent side Y reaches the EIM side X's srflx from a new
        // address E_Y(S_X), unknown to X. X's filter has seen only S_Y
        // (same IP, other port): it admits E_Y(S_X) iff it is EIF or ADF.
        // Then X learns E_Y(S_X) as peer-reflexive, its triggered check from
        // S_X passes Y's filter (Y sent to exactly S_X) and is answered from
        // E_Y(S_X): symmetric, valid. The other way cannot help: X's checks
        // to S_Y (Y's mapping towards the server) are answered, if admitted,
        // from E_Y(S_X) ≠ S_Y, which fails the symmetry test. With APDF at X
        // nothing direct succeeds: relay.
        (EI, AD | APD) => direct_or_relay(admits_other_port(fa)),
        (AD | APD, EI) => direct_or_relay(admits_other_port(fb)),
        // Rule 3. Both endpoint-dependent, at least one APDM...
        // Rule 3a. APDM against APDM: every answer to a check from a new
        // peer-reflexive address leaves through yet another mapping, so no
        // check ever sees a symmetric response, whatever the filtering (the
        // classic symmetric-to-symmetric case): relay.
        (APD, APD) => PathKind::Relay,
        // Rule 3b. ADM against ADM or APDM. The ADM side X uses one address
        // E_X towards the peer's IP. One side must admit the very first
        // check, which arrives on its srflx mapping (made towards the server)
        // from an address it has never sent to: that needs EIF. Say Y is EIF:
        // Y learns X's address, answers and triggers a check from its own
        // mapping towards it, which X admits if it has sent to Y's IP (EIF or
        // ADF); X learns that address as peer-reflexive, answers from E_X
        // (ADM: the same towards all of Y's ports), Y's check is symmetric
        // and X's triggered check back is too. (APDM's per-port mapping does
        // not hurt here, because X only ever answers and checks towards the
        // one address Y's triggered check came from.)
        (AD, AD | APD) | (APD, AD) => direct_or_relay(
            (fb == EI && admits_other_port(fa)) || (fa == EI && admits_other_port(fb)),
        ),
    }
}

/// The path when the router of one side (`helped`: 0 for A, 1 for B)
/// serves a port-mapping protocol and both sides ask their router. The
/// mapping the router grants (RFC 6887 §11.1, RFC 6886) is endpoint-
/// independent both ways: it admits every remote (no filter) and the
/// socket's new flows (its checks to the peer) leave from it. The helped
/// side is then EIM/EIF towards the peer, at the mapped address it
/// signalled (a server-reflexive candidate): [`expected`] with that side
/// as (EIM, EIF). Rule 1 or rule 2 applies, and rule 2's EIF filter always
/// admits: never relay.
pub fn expected_helped(
    a: (Behaviour, Behaviour),
    b: (Behaviour, Behaviour),
    helped: usize,
) -> PathKind {
    let open = (EI, EI);
    if helped == 0 {
        expected(open, b)
    } else {
        expected(a, open)
    }
}

/// A direct path found through a learnt (peer-reflexive) address, or the relay.
fn direct_or_relay(direct: bool) -> PathKind {
    if direct {
        PathKind::Prflx
    } else {
        PathKind::Relay
    }
}

/// Expected path for the rows that are not NAT × NAT.
fn expected_special(a: Placement, b: Placement) -> PathKind {
    match (a, b) {
        // Two public hosts: their host candidates reach each other.
        (Placement::Public, Placement::Public) => PathKind::Host,
        // One LAN: host candidates reach each other without the NAT.
        (Placement::Nat(..), Placement::SameLanAsA) => PathKind::Host,
        // A public peer has no filter: the NATed peer's checks reach it from
        // E_B(A's host), which is its srflx for EIM (signalled: srflx) and a
        // new address for ADM/APDM (peer-reflexive); the answers come back
        // through that very mapping.
        (Placement::Public, Placement::Nat(EI, _)) => PathKind::Srflx,
        (Placement::Public, Placement::Nat(..)) => PathKind::Prflx,
        // No UDP at all on one side: only its TURN-over-TCP allocation works.
        (Placement::UdpBlocked, _) | (_, Placement::UdpBlocked) => PathKind::Relay,
        // IPv6 (RFC 6092 home routers translate nothing; their filter is
        // address-and-port dependent): host addresses are global, and each
        // side's first check opens its own filter for the other's host
        // address, so the retransmissions pass. Host ↔ host, through the
        // firewalls too; a dual-stack pair prefers it (host over srflx).
        (
            Placement::V6Public | Placement::V6Firewall | Placement::DualStack,
            Placement::V6Public | Placement::V6Firewall | Placement::DualStack,
        ) => PathKind::Host,
        // A dual-stack peer and an IPv4-only one meet over IPv4: rule 1
        // (EIM on both sides).
        (Placement::DualStack, Placement::Nat(EI, _)) => PathKind::Srflx,
        // IPv6 only against IPv4 only: nothing direct; the IPv6 peer's
        // allocation relays from an IPv4 address (RFC 8656 §7.1: IPv4 unless
        // another family is asked for).
        (Placement::V6Firewall, Placement::Nat(..)) => PathKind::Relay,
        _ => unreachable!("no expectation for {a} vs {b}"),
    }
}

/// How long connecting (a selected pair on both sides) may take, per path,
/// in simulated time. The default links add 10 ms per host per direction:
/// 40 ms round trip to the server or between peers; signalling takes 50 ms.
/// Regular nomination waits up to 1 s (`IceConfig::nomination_timeout`)
/// after the first valid pair while higher-priority pairs are still being
/// checked; the host ↔ host pairs of peers on different LANs are such pairs
/// until they time out (9.5 s), so every path but host pays that second.
fn bound(path: PathKind) -> Duration {
    Duration::from_millis(match path {
        // Host candidates are signalled at once (50 ms); the first check
        // succeeds within a round trip and nothing better is pending.
        PathKind::Host => 500,
        // Gathering (40 ms), signalling (50 ms), a check round trip, then
        // the 1 s nomination wait: about 1.2 s.
        PathKind::Srflx => 1_500,
        // As srflx, plus one check lost to a filter not yet open and
        // retransmitted after 500 ms: about 1.7 s.
        PathKind::Prflx => 3_000,
        // The allocation (401 round trip, then Allocate), the peer's
        // CreatePermission before its checks are let through, a lost first
        // check (500 ms), the nomination wait: about 1.9 s, 2.6 s when two
        // port-dependent NATs trade peer-reflexive addresses for a while.
        PathKind::Relay => 4_000,
    })
}

struct Row {
    /// ICE-TCP rows: whether the path must run over TCP.
    tcp: Option<bool>,
    /// Router-help rows: which side's router serves which protocol.
    help: Option<(usize, RouterHelp)>,
    pa: Placement,
    pb: Placement,
    a: String,
    b: String,
    expected: PathKind,
    outcome: Outcome,
    /// NAT × NAT rows: the same cell with early nomination off (the first
    /// nomination waits for better pairs, as before issue 14).
    waiting: Option<Outcome>,
}

/// The bound of a row: [`bound`], but a host path through IPv6 firewalls
/// may lose a first check to a filter not yet open (500 ms), and one over
/// TCP waits for the UDP host pair to be given up.
fn row_bound(a: Placement, b: Placement, path: PathKind) -> Duration {
    let v6fw = |p| matches!(p, Placement::V6Firewall | Placement::DualStack);
    if path == PathKind::Host && (v6fw(a) || v6fw(b)) {
        bound(PathKind::Prflx)
    } else if path == PathKind::Host && (a == Placement::TcpOutOnly || b == Placement::TcpOutOnly) {
        // Over TCP: the better (UDP) host pair is given up first, as a
        // srflx path waits for it.
        bound(PathKind::Srflx)
    } else {
        bound(path)
    }
}

fn run(a: Placement, b: Placement, expected: PathKind, rows: &mut Vec<Row>) {
    run_with(a, b, expected, Opts::default(), rows);
}

/// The ICE-TCP rows (both peers also have passive and active TCP host
/// candidates): the path, and whether it runs over TCP.
fn expected_tcp(a: Placement, b: Placement) -> (PathKind, bool) {
    match (a, b) {
        // The firewalled side's active candidate connects out to the
        // public side's passive one: direct over TCP, not relayed
        // (RFC 6544's case), whichever side controls.
        (Placement::TcpOutOnly, Placement::Public) | (Placement::Public, Placement::TcpOutOnly) => {
            (PathKind::Host, true)
        }
        // A NAT with endpoint-independent mapping and filtering for TCP (as
        // RFC 5382 recommends) lets connections in to the mapping its
        // passive candidate's STUN request over TCP made: the firewalled
        // side's active candidate connects to that server-reflexive passive
        // candidate, direct over TCP, not relayed; both ends name it srflx.
        (Placement::TcpOutOnly, Placement::Nat(EI, EI))
        | (Placement::Nat(EI, EI), Placement::TcpOutOnly) => (PathKind::Srflx, true),
        // Neither end accepts a connection (the other firewall, or a NAT
        // with no mapping for an inbound connection): the relays.
        _ => (PathKind::Relay, false),
    }
}

fn run_with(a: Placement, b: Placement, expected: PathKind, opts: Opts, rows: &mut Vec<Row>) {
    let tcp = opts.ice_tcp.then(|| expected_tcp(a, b).1);
    let help = (0..2).find_map(|side| opts.router_help[side].map(|h| (side, h)));
    let plain = tcp.is_none() && help.is_none();
    let waiting = (plain && matches!(a, Placement::Nat(..)) && matches!(b, Placement::Nat(..)))
        .then(|| {
            let mut o = opts.clone();
            o.ice_a = o.ice_a.clone().with_early_nomination(false);
            run_pair(a, b, o)
        });
    let outcome = run_pair(a, b, opts);
    let label = |p: Placement, side: usize| match (tcp, help) {
        (Some(_), _) => format!("{p}, ICE-TCP"),
        (None, Some((s, h))) if s == side => format!("{p} + {h}"),
        _ => p.to_string(),
    };
    rows.push(Row {
        tcp,
        help,
        pa: a,
        pb: b,
        a: label(a, 0),
        b: label(b, 1),
        expected,
        outcome,
        waiting,
    });
}

/// Means over the NAT × NAT cells, by the path they end on: connect and
/// data both ways with relay first, and waiting.
fn summary(rows: &[Row]) -> String {
    let mut s = String::new();
    s += "| NAT × NAT cells ending on | cells | connect (sim ms, mean) | data both ways (sim ms, mean) | waiting: connect / data (sim ms, mean) | switched |\n";
    s += "|---|---:|---:|---:|---:|---:|\n";
    for kind in [PathKind::Srflx, PathKind::Prflx, PathKind::Relay] {
        let cells: Vec<(&Outcome, &Outcome)> = rows
            .iter()
            .filter_map(|r| r.waiting.as_ref().map(|w| (&r.outcome, w)))
            .filter(|(o, _)| o.path == kind)
            .collect();
        let n = cells.len().max(1) as u128;
        let mean = |f: &dyn Fn(&(&Outcome, &Outcome)) -> Duration| {
            cells.iter().map(|c| f(c).as_millis()).sum::<u128>() / n
        };
        let _ = writeln!(
            s,
            "| {kind} | {} | {} | {} | {} / {} | {} |",
            cells.len(),
            mean(&|c| c.0.connect),
            mean(&|c| c.0.data),
            mean(&|c| c.1.connect),
            mean(&|c| c.1.data),
            cells.iter().filter(|c| c.0.selections_a > 1).count(),
        );
    }
    s
}

fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    s += "| A | B | expected | got | first | A local → remote | B local → remote | connect (sim ms) | data both ways (sim ms) | waiting: connect / data (sim ms) | final path (sim ms) | switches | checks A/B |\n";
    s += "|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|\n";
    for r in rows {
        let o = &r.outcome;
        let mark = if o.path == r.expected {
            ""
        } else {
            " **MISMATCH**"
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {}{} | {} | {} → {} | {} → {} | {} | {} | {} | {} | {} | {}/{} |",
            r.a,
            r.b,
            r.expected,
            o.path,
            if o.tcp {
                format!(" over TCP{mark}")
            } else {
                mark.to_owned()
            },
            o.first_path,
            kind_name(o.a.0),
            kind_name(o.a.1),
            kind_name(o.b.0),
            kind_name(o.b.1),
            o.connect.as_millis(),
            o.data.as_millis(),
            r.waiting.as_ref().map_or_else(
                || "".to_owned(),
                |w| format!("{} / {}", w.connect.as_millis(), w.data.as_millis())
            ),
            o.final_at.as_millis(),
            o.selections_a.saturating_sub(1),
            o.checks.0,
            o.checks.1,
        );
    }
    s
}

const DOC_HEAD: &str = "# The ICE connectivity matrix

Generated by `cargo xtask ice-matrix`, which runs

```
ICE_MATRIX_OUT=docs/ice-matrix.md cargo test -p p2p-connect --test matrix -- --nocapture
```

Do not edit by hand: the test (`crates/connect/tests/matrix.rs`) writes this
file, and fails when any row's path differs from its expectation.

Each row puts two `p2p_connect::Session`s on the deterministic virtual network
of `p2p-netsim`: peer A (controlling) and peer B (controlled), each behind its
own RFC 4787 NAT with the given mapping/filtering behaviour (EIM/ADM/APDM,
EIF/ADF/APDF; port preservation, hairpinning, 120 s mappings), on the public
side, on one LAN behind one NAT, or behind a firewall that drops all UDP (its
TURN allocation then runs over TCP). One public server (`p2p_turn::TurnServer`
at 203.0.113.1:3478) answers STUN Binding and relays. Every access link adds
10 ms each way; signalling (credentials, trickled candidates,
end-of-candidates) takes 50 ms. Both sides gather host, server-reflexive and
relayed candidates.

* **expected**: the path ICE should end on, derived from RFC 4787 in
  `expected()` of the test (one rule per case, with the reasoning), not copied
  from the run. The path is named by A's selected pair: relay if either end is
  relayed, else prflx if either end is peer-reflexive, else srflx, else host.
* **got**: what the run ended on, 15 simulated seconds after data first
  crossed both ways (a better pair may be nominated late).
* **first**: the path A's first selected pair was on. Relay first, upgrade
  later (`IceConfig::early_nomination`, on by default): A nominates the
  first pair that works, whatever better pairs are still being checked,
  so the connection starts on it; a better pair that succeeds later is
  nominated in turn and the connection moves to it (the same DTLS and
  SCTP association: nothing is lost or reordered,
  `crates/connect/tests/upgrade.rs`). The test asserts that a move only
  ever goes to a better path.
* **connect**: simulated time until both sides had a selected pair; the test
  bounds it per path kind of the final path (host 0.5 s, srflx 1.5 s,
  prflx 3 s, relay 4 s).
* **waiting**: the NAT × NAT cells run again with early nomination off (the
  first nomination waits for better pairs, as before issue 14): connect and
  data both ways then. The test asserts that neither is ever later with
  relay first; the table above the rows gives the means.
* **data both ways**: until each side had received a datagram over its path.
* **final path**: when A selected its final pair; **switches**: how many
  times A's path moved after the first selection. Upgrades follow regular
  nomination: a better pair in progress is waited for up to 1 s
  (`IceConfig::nomination_timeout`), or until its first retransmission
  (one RTO, 500 ms) went unanswered for twice the round trip of the best
  valid pair (and the peer never checked it).
* **checks**: connectivity checks sent by each side (without retransmissions).

The rules `expected()` derives (S is a peer's server-reflexive address, made
towards the server, whose IP is not the peer's):

1. EIM on both sides: srflx ↔ srflx whatever the filtering; each side's own
   first check opens its filter for the other's srflx.
2. EIM against ADM or APDM: the dependent side reaches the EIM side from a
   new port of its IP; the EIM side learns it (peer-reflexive) if its filter
   admits other ports of an IP it has sent to (EIF or ADF). APDF: relay.
3. APDM against APDM: every answer leaves through yet another mapping, no
   check is ever symmetric: relay.
4. ADM against ADM or APDM: the first check arrives on a mapping made
   towards the server, so one side must be EIF, and the other EIF or ADF;
   then both meet on peer-reflexive addresses. Otherwise: relay.

The IPv6 rows: the server is dual-stack (2001:db8:ff::1 too). A home
router does not translate IPv6 (RFC 6092: no NAT66; RFC 4787's NAT
behaviours do not apply), it filters: a stateful firewall that lets in only
what answers an outbound flow, per address and port (as Linux conntrack
with `ESTABLISHED,RELATED` does), modelled as a netsim NAT whose external
address is the host's own. Host addresses are then global: each side's first
check opens its own filter for the other's host address, and host ↔ host
works through two firewalls. A dual-stack peer (IPv4 behind EIM/APDF NAT44,
IPv6 behind the firewall) pairs within each family, the families
interleaved (RFC 8421), and ends on IPv6 host ↔ host when the peer has
IPv6, on IPv4 srflx ↔ srflx when it has not. An IPv6-only peer against an
IPv4-only one has no direct path: its allocation relays from IPv4.

The ICE-TCP rows (RFC 6544): both peers also have a passive TCP host
candidate and an active one. A peer behind a firewall that drops UDP and
lets TCP connections out, none in, connects directly over TCP (its active
candidate to the public peer's passive one), not through its TURN-over-TCP
allocation. A passive candidate also asks the STUN server for its mapping
over TCP, from its own port (RFC 6544 server-reflexive passive candidate):
behind a NAT with endpoint-independent filtering for TCP (RFC 5382's
recommendation; a 1:1 NAT behaves so too) the firewalled peer connects to
that mapping, direct over TCP. Against a NAT that filters (no inbound
connection) or the same firewall, the relays. The test asserts the
transport of the path too.

The rows marked **+ PCP** or **+ NAT-PMP** (the last 162): the router of
that side's NAT serves a port-mapping protocol on its LAN address (a
`p2p_netsim::PortMapService`, as miniupnpd does: PCP and NAT-PMP, or
NAT-PMP only, which the client falls back to), and both sessions ask
their router (`SessionConfig::port_mapping`, `p2p-portmap`'s client), as
`p2p connect` does by default. The mapping the router grants admits
every remote and the socket's new flows leave from it (RFC 6887 §11.1: a
MAP mapping is endpoint-independent; flows started before keep theirs,
as conntrack keeps them), and its address is offered as a
server-reflexive candidate: the helped side is EIM/EIF towards the peer,
so rule 1 or rule 2 applies with an EIF filter, and **no cell relays with
router help** (the test fails if one does). A router without the service
answers nothing (the session's requests go unanswered; gathering waits
3.5 s for it, checks do not).

";

#[test]
fn nat_matrix() {
    let mut rows = Vec::new();
    for ma in ALL {
        for fa in ALL {
            for mb in ALL {
                for fb in ALL {
                    let want = expected((ma, fa), (mb, fb));
                    run(
                        Placement::Nat(ma, fa),
                        Placement::Nat(mb, fb),
                        want,
                        &mut rows,
                    );
                }
            }
        }
    }
    let specials = [
        (Placement::Public, Placement::Public),
        (Placement::Nat(EI, APD), Placement::SameLanAsA),
        (Placement::Nat(APD, APD), Placement::SameLanAsA),
        (Placement::Public, Placement::Nat(EI, APD)),
        (Placement::Public, Placement::Nat(APD, APD)),
        (Placement::UdpBlocked, Placement::Nat(EI, APD)),
        (Placement::UdpBlocked, Placement::Public),
        (Placement::Public, Placement::UdpBlocked),
        (Placement::UdpBlocked, Placement::UdpBlocked),
        (Placement::V6Public, Placement::V6Public),
        (Placement::V6Public, Placement::V6Firewall),
        (Placement::V6Firewall, Placement::V6Firewall),
        (Placement::DualStack, Placement::DualStack),
        (Placement::DualStack, Placement::V6Firewall),
        (Placement::DualStack, Placement::Nat(EI, APD)),
        (Placement::V6Firewall, Placement::Nat(EI, APD)),
    ];
    for (a, b) in specials {
        run(a, b, expected_special(a, b), &mut rows);
    }
    let tcp_rows = [
        (Placement::TcpOutOnly, Placement::Public),
        (Placement::Public, Placement::TcpOutOnly),
        (Placement::TcpOutOnly, Placement::Nat(EI, APD)),
        (Placement::TcpOutOnly, Placement::Nat(EI, EI)),
        (Placement::Nat(EI, EI), Placement::TcpOutOnly),
        (Placement::TcpOutOnly, Placement::TcpOutOnly),
    ];
    for (a, b) in tcp_rows {
        let opts = Opts {
            ice_tcp: true,
            ..Opts::default()
        };
        run_with(a, b, expected_tcp(a, b).0, opts, &mut rows);
    }
    // With router help: A's router serves PCP (and NAT-PMP), then B's
    // serves NAT-PMP only (the client falls back to it).
    for (side, help) in [(0, RouterHelp::Pcp), (1, RouterHelp::NatPmp)] {
        for ma in ALL {
            for fa in ALL {
                for mb in ALL {
                    for fb in ALL {
                        let want = expected_helped((ma, fa), (mb, fb), side);
                        let mut opts = Opts::default();
                        opts.router_help[side] = Some(help);
                        let (a, b) = (Placement::Nat(ma, fa), Placement::Nat(mb, fb));
                        run_with(a, b, want, opts, &mut rows);
                    }
                }
            }
        }
    }

    let table = format!("{}\n{}", summary(&rows), table(&rows));
    println!("{table}");
    if let Ok(out) = std::env::var("ICE_MATRIX_OUT") {
        let mut path = PathBuf::from(&out);
        if path.is_relative() {
            path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(path);
        }
        std::fs::write(&path, format!("{DOC_HEAD}{table}")).expect("write the matrix");
    }

    let mut failures = Vec::new();
    for r in &rows {
        let o = &r.outcome;
        if o.path != r.expected {
            failures.push(format!(
                "{} vs {}: expected {}, got {}",
                r.a, r.b, r.expected, o.path
            ));
        }
        if let Some(tcp) = r.tcp {
            if o.tcp != tcp {
                failures.push(format!(
                    "{} vs {}: the path runs over {}, expected {}",
                    r.a,
                    r.b,
                    if o.tcp { "TCP" } else { "UDP" },
                    if tcp { "TCP" } else { "UDP" }
                ));
            }
        }
        // Relay first, upgrade later: the first path may be worse than
        // the final one, never better (a switch only ever goes up), and
        // the path settles after a few switches.
        if o.first_path < o.path || o.selections_a > 4 {
            failures.push(format!(
                "{} vs {}: A went from {} to {} in {} selections",
                r.a, r.b, o.first_path, o.path, o.selections_a
            ));
        }
        if r.help.is_some() && o.path == PathKind::Relay {
            failures.push(format!("{} vs {}: relayed with router help", r.a, r.b));
        }
        // Relay first never delays the first message.
        if let Some(w) = &r.waiting {
            if o.connect > w.connect || o.data > w.data {
                failures.push(format!(
                    "{} vs {}: connect {} ms, data {} ms; waiting: {} ms, {} ms",
                    r.a,
                    r.b,
                    o.connect.as_millis(),
                    o.data.as_millis(),
                    w.connect.as_millis(),
                    w.data.as_millis()
                ));
            }
        }
        let limit = row_bound(r.pa, r.pb, r.expected);
        if o.connect > limit {
            failures.push(format!(
                "{} vs {}: connecting took {} ms, more than {} ms for {}",
                r.a,
                r.b,
                o.connect.as_millis(),
                limit.as_millis(),
                r.expected
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(rows.len(), 81 + 9 + 7 + 6 + 2 * 81);
}

#[test]
fn rules_are_symmetric_up_to_roles() {
    // The derivation never uses the roles: swapping the peers swaps nothing.
    for ma in ALL {
        for fa in ALL {
            for mb in ALL {
                for fb in ALL {
                    assert_eq!(expected((ma, fa), (mb, fb)), expected((mb, fb), (ma, fa)));
                }
            }
        }
    }
    // Spot checks of the classic names.
    let full_cone = (EI, EI);
    let port_restricted = (EI, APD);
    let symmetric = (APD, APD);
    assert_eq!(expected(port_restricted, port_restricted), PathKind::Srflx);
    assert_eq!(expected(full_cone, symmetric), PathKind::Prflx);
    assert_eq!(expected(port_restricted, symmetric), PathKind::Relay);
    assert_eq!(expected(symmetric, symmetric), PathKind::Relay);
    assert_eq!(expected((EI, AD), symmetric), PathKind::Prflx);
}
