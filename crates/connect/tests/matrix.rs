//! The NAT matrix (issue 6): every RFC 4787 mapping × filtering behaviour
//! for peer A against every one for peer B (81 pairs), plus same-LAN,
//! public and UDP-blocked peers. Each row states the path ICE should end on,
//! derived from RFC 4787 in [`expected`], and asserts it and a bound on the
//! simulated connection time. Both peers run with hard-NAT traversal
//! (issue 14): where ICE can only relay, birthday probing or port
//! prediction turns the path direct ([`how`]).
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
use p2p_netsim::PortAllocation;

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
///
/// This is ICE alone (rules 1 to 3); [`expected`] adds what hard-NAT
/// traversal does where ICE relays.
pub fn expected_ice(a: (Behaviour, Behaviour), b: (Behaviour, Behaviour)) -> PathKind {
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
        expected_ice(open, b)
    } else {
        expected_ice(a, open)
    }
}

/// How a cell reaches its path with hard-NAT traversal (issue 14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// ICE alone (hard-NAT traversal has nothing to add, or nothing works).
    Ice,
    /// Rule 5: birthday probing, after the relay.
    Probing,
    /// Rule 6: port prediction, after the relay.
    Prediction,
}

/// What hard-NAT traversal adds where ICE alone relays, each NAT's ports
/// allocated by `alloc`. Each side learnt its own mapping (two server
/// addresses: the same mapped address is EIM, two are not; the ports of
/// the two tell a preserving or sequential allocator) and told the other.
///
/// Rule 5 (birthday probing; the rules of docs/ice-matrix.md). X EIM, Y endpoint-dependent, X's filter
/// APDF (rule 2: relay). Once ICE had its fair chance, Y opens 256 sockets
/// towards S_X (each a mapping of Y's NAT that admits S_X), X sends
/// authenticated checks from S_X to random ports of Y's IP; one that lands
/// on such a mapping reaches Y, whose answer leaves through the same
/// mapping to S_X, which X's filter admits (X sent there). Both hand the
/// pair to ICE: X's end S_X (srflx), Y's a new mapping (prflx). With 256
/// mappings among 64 512 ports and 1 000 probes the odds are 98 %; the run
/// is seeded, so a cell is the same every time.
///
/// Rule 6 (port prediction). Both endpoint-dependent and ICE relays (rule
/// 3); each NAT preserves a socket's port in its first mapping or hands
/// out ports in sequence. Each side takes a fresh socket Q and predicts its
/// first mapping towards the peer: Q's own port (preserving), or one past
/// the port a Binding from Q to the server's second address got
/// (sequential). With both predictions, each checks the other's from Q:
/// the first check of each side opens exactly the mapping the other's
/// check arrives on (same addresses both ways), and ICE's retransmission
/// passes: prflx ↔ prflx. Random ports: nothing to predict, relay.
pub fn how(a: (Behaviour, Behaviour), b: (Behaviour, Behaviour), alloc: PortAllocation) -> How {
    if expected_ice(a, b) != PathKind::Relay {
        return How::Ice;
    }
    match (a.0, b.0) {
        (EI, EI) => How::Ice,
        (EI, _) | (_, EI) => How::Probing,
        _ if alloc == PortAllocation::Random => How::Ice,
        _ => How::Prediction,
    }
}

/// The path a cell ends on with hard-NAT traversal: ICE's, or a direct one
/// found by probing or prediction (rules 5 and 6).
pub fn expected(
    a: (Behaviour, Behaviour),
    b: (Behaviour, Behaviour),
    alloc: PortAllocation,
) -> PathKind {
    match how(a, b, alloc) {
        How::Ice => expected_ice(a, b),
        How::Probing | How::Prediction => PathKind::Prflx,
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

/// How long after the start the path found by birthday probing may be
/// selected: ICE's fair chance (3 s after the credentials), the easy side's
/// 300 ms wait, then at most 1 000 probes at 200/s (5 s), and the check
/// that makes the found pair valid and nominated.
const PROBED_BOUND: Duration = Duration::from_millis(3_000 + 300 + 5_000 + 1_000);

struct Row {
    /// ICE-TCP rows: whether the path must run over TCP.
    tcp: Option<bool>,
    /// Router-help rows: which side's router serves which protocol.
    help: Option<(usize, RouterHelp)>,
    /// How the path is reached: by ICE, or after a relay by probing or
    /// prediction.
    how: How,
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

/// A row with hard-NAT traversal on both sides, the NATs' ports
/// allocated by `alloc`.
fn run(a: Placement, b: Placement, alloc: PortAllocation, rows: &mut Vec<Row>) {
    let (expected, how) = match (a, b) {
        (Placement::Nat(ma, fa), Placement::Nat(mb, fb)) => (
            expected((ma, fa), (mb, fb), alloc),
            how((ma, fa), (mb, fb), alloc),
        ),
        _ => (expected_special(a, b), How::Ice),
    };
    let opts = Opts {
        hard_nat: true,
        port_allocation: alloc,
        ..Opts::default()
    };
    run_with(a, b, expected, how, opts, rows);
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

fn run_with(
    a: Placement,
    b: Placement,
    expected: PathKind,
    how: How,
    opts: Opts,
    rows: &mut Vec<Row>,
) {
    let tcp = opts.ice_tcp.then(|| expected_tcp(a, b).1);
    let help = (0..2).find_map(|side| opts.router_help[side].map(|h| (side, h)));
    let plain = tcp.is_none() && help.is_none();
    let waiting = (plain && matches!(a, Placement::Nat(..)) && matches!(b, Placement::Nat(..)))
        .then(|| {
            let mut o = opts.clone();
            o.ice_a = o.ice_a.clone().with_early_nomination(false);
            run_pair(a, b, o)
        });
    let alloc = match opts.port_allocation {
        PortAllocation::Preserving => "",
        PortAllocation::Sequential => ", sequential ports",
        PortAllocation::Random => ", random ports",
    };
    let outcome = run_pair(a, b, opts);
    let label = |p: Placement, side: usize| match (tcp, help) {
        (Some(_), _) => format!("{p}, ICE-TCP"),
        (None, Some((s, h))) if s == side => format!("{p} + {h}"),
        _ => format!("{p}{alloc}"),
    };
    rows.push(Row {
        tcp,
        help,
        how,
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
    s += "| A | B | expected | got | first | A local → remote | B local → remote | connect (sim ms) | data both ways (sim ms) | waiting: connect / data (sim ms) | final path (sim ms) | switches | checks A/B | probes easy/hard | direct at (sim ms) |\n";
    s += "|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for r in rows {
        let o = &r.outcome;
        let mark = if o.path == r.expected {
            ""
        } else {
            " **MISMATCH**"
        };
        let _ = writeln!(
            s,
            "| {} | {} | {}{} | {}{} | {} | {} → {} | {} → {} | {} | {} | {} | {} | {} | {}/{} | {} | {} |",
            r.a,
            r.b,
            r.expected,
            match r.how {
                How::Ice => "",
                How::Probing => " (probing)",
                How::Prediction => " (prediction)",
            },
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
            if o.probes == (0, 0) {
                "–".to_owned()
            } else {
                format!("{}/{}", o.probes.0, o.probes.1)
            },
            o.upgraded
                .map_or_else(|| "–".to_owned(), |d| d.as_millis().to_string()),
        );
    }
    s
}

const RANDOM_HEAD: &str = "## The NAT × NAT grid with random ports

The same 81 cells, every NAT allocating a random port for each new mapping
(as Linux `MASQUERADE --random-fully` does): no port to predict, so rule 6
does not apply and the cells both of whose NATs are endpoint-dependent stay
relayed (27); birthday probing (rule 5) still meets an EIM side whose
filter is address-and-port dependent (12 cells). This is issue 14's target:
at most 27 of 81 relayed without help from the router.

";

const DOC_HEAD: &str = "# The ICE connectivity matrix

![The 9 × 9 NAT × NAT grid coloured by the path each cell ends on: ICE alone, and with hard-NAT traversal](ice-matrix.svg)

The picture (written by the test beside this file) shows the 81 NAT × NAT
rows below: on the left as ICE alone ends them (the test runs them without
hard-NAT traversal too), in the middle as they end now with the grid's
port-preserving NATs, on the right with NATs that pick random ports (the
table at the end).

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
relayed candidates, and run with hard-NAT traversal (issue 14,
`SessionConfig::hard_nat`): each learns its NAT's mapping behaviour from
the server's two addresses (its RFC 5780 OTHER-ADDRESS is 203.0.113.2:3479)
and tells the other, as two p2p-connect peers that agreed on the
`p2phardnat` ICE option token do.

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
* **probes easy/hard**: birthday probing, when it ran: authenticated checks
  the endpoint-independent side sent to random ports of the other's IP, and
  the sockets the endpoint-dependent side opened towards it (one request
  each). *(probing)* or *(prediction)* after the expectation: the cell
  connects relayed first and must find the direct path by rule 5 or 6.
* **direct at**: when A selected its final pair, for a row whose path
  changed (the relay replaced by the path probing or prediction found);
  bounded at 9.3 s.

The rules `expected()` derives (S is a peer's server-reflexive address, made
towards the server, whose IP is not the peer's):

1. EIM on both sides: srflx ↔ srflx whatever the filtering; each side's own
   first check opens its filter for the other's srflx.
2. EIM against ADM or APDM: the dependent side reaches the EIM side from a
   new port of its IP; the EIM side learns it (peer-reflexive) if its filter
   admits other ports of an IP it has sent to (EIF or ADF). APDF: relay
   (rule 5 then helps).
3. APDM against APDM: every answer leaves through yet another mapping, no
   check is ever symmetric: relay.
4. ADM against ADM or APDM: the first check arrives on a mapping made
   towards the server, so one side must be EIF, and the other EIF or ADF;
   then both meet on peer-reflexive addresses. Otherwise: relay.

What hard-NAT traversal adds (issue 14) where ICE alone relays, once ICE
had its fair chance (3 s after the checks began):

5. Birthday probing: one side EIM (with APDF, rule 2's relay), the other
   not. The endpoint-dependent side opens 256 sockets, each sending one
   authenticated request to the EIM side's srflx (256 mappings that admit
   it); the EIM side sends authenticated checks from its srflx to random
   ports of the other's IP, 200 a second, at most 1 000. One that lands on
   such a mapping is answered through it, and both hand the pair to ICE,
   which nominates it over the relay: prflx. Odds 1 − (1 − 256/64 512)^1000
   ≈ 98 % (the runs are seeded: the same every time).
6. Port prediction: both endpoint-dependent (rules 3 and 4's relays), with
   NATs that keep a socket's port in its first mapping (the grid's) or hand
   out ports in sequence. Each side takes a fresh socket and predicts its
   first mapping towards the peer (its own port; or one past what a Binding
   request from it to the server's second address got), signals it, and
   checks the peer's prediction from it: each side's first check opens the
   very mapping the other's check arrives on. Random ports: relay.

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
1 s for it, checks do not).

";

/// The colour of a path in the picture.
fn colour(p: PathKind) -> &'static str {
    match p {
        PathKind::Host => "#1a9850",
        PathKind::Srflx => "#66bd63",
        PathKind::Prflx => "#a6d96a",
        PathKind::Relay => "#d73027",
    }
}

/// The 9 × 9 NAT × NAT grid once per panel, coloured by the path each cell
/// ends on, as this test measured it, in the order of [`ALL`] × [`ALL`]
/// (A's row, B's column).
fn svg(panels: &[(&str, Vec<PathKind>)]) -> String {
    const CELL: usize = 30;
    const LEFT: usize = 80;
    const TOP: usize = 90;
    const GAP: usize = 60;
    let label = |i: usize| {
        let (m, f) = (ALL[i / 3], ALL[i % 3]);
        format!("{}/{}", m.mapping_name(), f.filtering_name())
    };
    let grid_w = 9 * CELL;
    let width = LEFT + panels.len() * (grid_w + GAP);
    let height = TOP + 9 * CELL + 60;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"10\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (g, (title, cells)) in panels.iter().enumerate() {
        let x0 = LEFT + g * (grid_w + GAP);
        let relayed = cells.iter().filter(|p| **p == PathKind::Relay).count();
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"18\" font-size=\"12\" text-anchor=\"middle\">{title}</text>\n\
             <text x=\"{}\" y=\"34\" font-size=\"12\" text-anchor=\"middle\">{relayed} of 81 \
             relayed</text>",
            x0 + grid_w / 2,
            x0 + grid_w / 2
        );
        for i in 0..9 {
            // Column labels (peer B), rotated; row labels (peer A).
            let cx = x0 + i * CELL + CELL / 2;
            let _ = writeln!(
                s,
                "<text transform=\"translate({cx},{}) rotate(-60)\">{}</text>",
                TOP - 4,
                label(i)
            );
            if g == 0 {
                let _ = writeln!(
                    s,
                    "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                    LEFT - 4,
                    TOP + i * CELL + CELL / 2 + 4,
                    label(i)
                );
            }
        }
        for (k, p) in cells.iter().enumerate().take(81) {
            let (row, col) = (k / 9, k % 9);
            let _ = writeln!(
                s,
                "<rect x=\"{}\" y=\"{}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"{}\" \
                 stroke=\"white\"><title>A {} × B {}: {p}</title></rect>",
                x0 + col * CELL,
                TOP + row * CELL,
                colour(*p),
                label(row),
                label(col)
            );
        }
    }
    let _ = writeln!(
        s,
        "<text x=\"4\" y=\"{}\" font-size=\"10\">rows: peer A, columns: peer B \
         (mapping/filtering, RFC 4787)</text>",
        TOP + 9 * CELL + 50
    );
    let y = TOP + 9 * CELL + 20;
    for (i, p) in [
        PathKind::Host,
        PathKind::Srflx,
        PathKind::Prflx,
        PathKind::Relay,
    ]
    .into_iter()
    .enumerate()
    {
        let x = LEFT + i * 110;
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"{y}\" width=\"14\" height=\"14\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            colour(p),
            x + 18,
            y + 11,
            match p {
                PathKind::Host => "direct: host",
                PathKind::Srflx => "direct: srflx",
                PathKind::Prflx => "direct: prflx",
                PathKind::Relay => "relayed (TURN)",
            }
        );
    }
    s += "</svg>\n";
    s
}

#[test]
fn nat_matrix() {
    // ICE alone first (what the stack did before issue 14): the picture's
    // left half, and the floor nothing may fall below.
    let mut before = Vec::new();
    for ma in ALL {
        for fa in ALL {
            for mb in ALL {
                for fb in ALL {
                    before.push(run_pair(
                        Placement::Nat(ma, fa),
                        Placement::Nat(mb, fb),
                        Opts::default(),
                    ));
                }
            }
        }
    }
    let mut rows = Vec::new();
    for ma in ALL {
        for fa in ALL {
            for mb in ALL {
                for fb in ALL {
                    run(
                        Placement::Nat(ma, fa),
                        Placement::Nat(mb, fb),
                        PortAllocation::Preserving,
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
        run(a, b, PortAllocation::Preserving, &mut rows);
    }
    // Other port allocators (the grid's NATs preserve ports): sequential
    // ones are predicted as well; random ones only birthday probing meets.
    let allocators = [
        (
            Placement::Nat(APD, APD),
            Placement::Nat(APD, APD),
            PortAllocation::Sequential,
        ),
        (
            Placement::Nat(AD, APD),
            Placement::Nat(APD, APD),
            PortAllocation::Sequential,
        ),
        (
            Placement::Nat(APD, APD),
            Placement::Nat(APD, APD),
            PortAllocation::Random,
        ),
        (
            Placement::Nat(EI, APD),
            Placement::Nat(APD, APD),
            PortAllocation::Random,
        ),
        (
            Placement::Nat(APD, APD),
            Placement::Nat(EI, APD),
            PortAllocation::Random,
        ),
    ];
    for (a, b, alloc) in allocators {
        run(a, b, alloc, &mut rows);
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
        run_with(a, b, expected_tcp(a, b).0, How::Ice, opts, &mut rows);
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
                        run_with(a, b, want, How::Ice, opts, &mut rows);
                    }
                }
            }
        }
    }

    // The grid again with random ports (Linux `--random-fully`): nothing
    // to predict; birthday probing still meets an EIM side.
    let mut random = Vec::new();
    for ma in ALL {
        for fa in ALL {
            for mb in ALL {
                for fb in ALL {
                    let (a, b) = (Placement::Nat(ma, fa), Placement::Nat(mb, fb));
                    run(a, b, PortAllocation::Random, &mut random);
                }
            }
        }
    }

    let random_table = table(&random);
    let table = format!("{}\n{}", summary(&rows), table(&rows));
    println!("{table}");
    println!("{random_table}");
    if let Ok(out) = std::env::var("ICE_MATRIX_OUT") {
        let mut path = PathBuf::from(&out);
        if path.is_relative() {
            path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(path);
        }
        let picture = svg(&[
            ("ICE alone", before.iter().map(|o| o.path).collect()),
            (
                "hard-NAT traversal (ports preserved)",
                rows.iter().take(81).map(|r| r.outcome.path).collect(),
            ),
            (
                "hard-NAT traversal (random ports)",
                random.iter().map(|r| r.outcome.path).collect(),
            ),
        ]);
        let svg_path = path.with_extension("svg");
        std::fs::write(&svg_path, picture).expect("write the picture");
        std::fs::write(
            &path,
            format!("{DOC_HEAD}{table}\n{RANDOM_HEAD}{random_table}"),
        )
        .expect("write the matrix");
    }

    let mut failures = Vec::new();
    for r in &random {
        if r.outcome.path != r.expected {
            failures.push(format!(
                "{} vs {} (random ports): expected {}, got {}",
                r.a, r.b, r.expected, r.outcome.path
            ));
        }
    }
    let relayed_random = random
        .iter()
        .filter(|r| r.outcome.path == PathKind::Relay)
        .count();
    if relayed_random > 27 {
        failures.push(format!(
            "{relayed_random} of 81 NAT cells relayed with random ports, more than 27"
        ));
    }
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
        if r.how != How::Ice {
            // Relayed first, then the path probing or prediction found.
            if o.first_path != PathKind::Relay || o.selections_a < 2 {
                failures.push(format!(
                    "{} vs {}: A selected {} pairs, first on {}: not the relay then the probed path",
                    r.a, r.b, o.selections_a, o.first_path
                ));
            }
            if o.upgraded.is_none_or(|t| t > PROBED_BOUND) {
                failures.push(format!(
                    "{} vs {}: the probed path came at {:?}, later than {:?}",
                    r.a, r.b, o.upgraded, PROBED_BOUND
                ));
            }
        } else if o.probes != (0, 0) {
            failures.push(format!(
                "{} vs {}: probed {:?} where ICE needs no help",
                r.a, r.b, o.probes
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
        // Connecting is bounded by the first path: the relay for the rows
        // that probe later.
        let first = if r.how == How::Ice {
            r.expected
        } else {
            PathKind::Relay
        };
        let limit = row_bound(r.pa, r.pb, first);
        if o.connect > limit {
            failures.push(format!(
                "{} vs {}: connecting took {} ms, more than {} ms for {}",
                r.a,
                r.b,
                o.connect.as_millis(),
                limit.as_millis(),
                first
            ));
        }
    }
    // ICE alone ends where rules 1 to 3 say; nothing it connects
    // directly becomes relayed or slower.
    for (r, b) in rows.iter().zip(&before) {
        if let (Placement::Nat(ma, fa), Placement::Nat(mb, fb)) = (r.pa, r.pb) {
            let want = expected_ice((ma, fa), (mb, fb));
            if b.path != want {
                failures.push(format!(
                    "{} vs {} (ICE alone): expected {want}, got {}",
                    r.a, r.b, b.path
                ));
            }
        }
        if b.path != PathKind::Relay
            && (r.outcome.path == PathKind::Relay || r.outcome.connect > b.connect)
        {
            failures.push(format!(
                "{} vs {}: ICE alone {} in {} ms, with hard-NAT traversal {} in {} ms",
                r.a,
                r.b,
                b.path,
                b.connect.as_millis(),
                r.outcome.path,
                r.outcome.connect.as_millis()
            ));
        }
    }
    // Issue 14's target: at most 27 of the 81 NAT × NAT cells relayed
    // without router help (39 before birthday probing).
    let relayed = rows
        .iter()
        .take(81)
        .filter(|r| r.outcome.path == PathKind::Relay)
        .count();
    if relayed > 27 {
        failures.push(format!("{relayed} of 81 NAT cells relayed, more than 27"));
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(rows.len(), 81 + 9 + 7 + 5 + 6 + 2 * 81);
}

#[test]
fn rules_are_symmetric_up_to_roles() {
    // The derivation never uses the roles: swapping the peers swaps nothing.
    for ma in ALL {
        for fa in ALL {
            for mb in ALL {
                for fb in ALL {
                    for alloc in [
                        PortAllocation::Preserving,
                        PortAllocation::Sequential,
                        PortAllocation::Random,
                    ] {
                        let (x, y) = ((ma, fa), (mb, fb));
                        assert_eq!(expected(x, y, alloc), expected(y, x, alloc));
                        assert_eq!(how(x, y, alloc), how(y, x, alloc));
                    }
                    assert_eq!(
                        expected_ice((ma, fa), (mb, fb)),
                        expected_ice((mb, fb), (ma, fa))
                    );
                }
            }
        }
    }
    // Spot checks of the classic names.
    let full_cone = (EI, EI);
    let port_restricted = (EI, APD);
    let symmetric = (APD, APD);
    assert_eq!(
        expected_ice(port_restricted, port_restricted),
        PathKind::Srflx
    );
    assert_eq!(expected_ice(full_cone, symmetric), PathKind::Prflx);
    assert_eq!(expected_ice(port_restricted, symmetric), PathKind::Relay);
    assert_eq!(expected_ice(symmetric, symmetric), PathKind::Relay);
    assert_eq!(expected_ice((EI, AD), symmetric), PathKind::Prflx);
    // Hard-NAT traversal: birthday probing (rule 5) whatever the ports;
    // port prediction (rule 6) unless they are random.
    let random = PortAllocation::Random;
    let preserving = PortAllocation::Preserving;
    assert_eq!(how(port_restricted, symmetric, random), How::Probing);
    assert_eq!(how(full_cone, symmetric, random), How::Ice);
    assert_eq!(how(symmetric, symmetric, preserving), How::Prediction);
    assert_eq!(how(symmetric, symmetric, random), How::Ice);
    assert_eq!(expected(symmetric, symmetric, random), PathKind::Relay);
    assert_eq!(
        expected(port_restricted, symmetric, random),
        PathKind::Prflx
    );
}
