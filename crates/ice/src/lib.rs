//! The ICE agent of RFC 8445 for the p2p stack, as a sans-IO state machine:
//! candidates with their priorities and foundations, one check list (one data
//! stream, component 1, UDP and TCP), Ta pacing, triggered checks, frozen/waiting
//! foundations, regular or aggressive nomination, role conflicts,
//! peer-reflexive candidates, consent freshness (RFC 7675) and keepalives,
//! trickle ICE (RFC 8838), ICE restart and ICE-lite. Its candidates convert
//! from and to the `candidate` attribute as `p2p_sdp` parses and writes it:
//! p2p-sdp's grammar is the only one.
//!
//! It is not a network stack and knows nothing of TURN. It owns no socket,
//! reads no clock and spawns nothing: it is a `p2p_proto::Machine` like
//! every machine of the stack. Datagrams and `now` go in, transmits and
//! events come out of `poll_output` in the order the agent made them, and
//! `poll_timeout` says when to call `handle_timeout` (see the drive contract
//! on [`IceAgent`]). Address discovery is external: the caller adds host
//! candidates and the relayed candidates of its TURN allocations; a relayed
//! candidate is just a local candidate whose transmits (with `source` = the
//! relayed address) the caller wraps. The agent can gather server-reflexive
//! candidates itself from STUN servers ([`IceAgent::add_stun_server`]).
//! Randomness (tie-breaker, ufrag/pwd, transaction ids) comes from an RNG
//! seeded by [`IceConfig::rng_seed`].
//!
//! ```
//! use std::time::Instant;
//! use p2p_ice::{Candidate, IceAgent, IceConfig, IceEvent, IceOutput, IceState};
//! use p2p_proto::Machine;
//!
//! let t0 = Instant::now();
//! let mut a = IceAgent::new(IceConfig::controlling().with_seed(1));
//! let mut b = IceAgent::new(IceConfig::controlled().with_seed(2));
//! let ca = a.add_local_candidate(t0, Candidate::host("10.0.0.1:5000".parse()?))?;
//! let cb = b.add_local_candidate(t0, Candidate::host("10.0.0.2:6000".parse()?))?;
//! // Signalled as text, read with p2p-sdp's grammar, once.
//! let cb: Candidate = cb.to_string().parse()?;
//! a.add_remote_candidate(t0, cb)?;
//! b.add_remote_candidate(t0, ca)?;
//! let (ua, ub) = (a.local_credentials().clone(), b.local_credentials().clone());
//! a.set_remote_credentials(t0, &ub.ufrag, &ub.pwd)?;
//! b.set_remote_credentials(t0, &ua.ufrag, &ua.pwd)?;
//!
//! // A network with no delay: deliver every transmit to the other agent,
//! // keep the events.
//! fn deliver(from: &mut IceAgent, to: &mut IceAgent, now: Instant, events: &mut Vec<IceEvent>) {
//!     while let Some(out) = from.poll_output() {
//!         match out {
//!             IceOutput::Transmit(t) => {
//!                 let _ = to.handle_input(now, t.as_datagram());
//!             }
//!             IceOutput::Event(e) => events.push(e),
//!             _ => {}
//!         }
//!     }
//! }
//! let (mut now, mut events) = (t0, Vec::new());
//! // Each agent starts at its first handle_timeout.
//! a.handle_timeout(now);
//! b.handle_timeout(now);
//! for _ in 0..100 {
//!     deliver(&mut a, &mut b, now, &mut events);
//!     deliver(&mut b, &mut a, now, &mut Vec::new());
//!     if a.state() == IceState::Connected && b.state() == IceState::Connected {
//!         break;
//!     }
//!     let next = [a.poll_timeout(), b.poll_timeout()].into_iter().flatten().min();
//!     now = next.map_or(now, |t| t.max(now));
//!     a.handle_timeout(now);
//!     b.handle_timeout(now);
//! }
//! assert!(a.selected_pair().is_some() && b.selected_pair().is_some());
//! assert!(events.iter().any(|e| matches!(e, IceEvent::SelectedPair { .. })));
//! a.send(now, b"hello".to_vec())?;
//! let t = a.poll_output().and_then(IceOutput::transmit).expect("the data");
//! assert_eq!(t.destination, "10.0.0.2:6000".parse()?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Design decisions, with the RFC text they follow or depart from:
//! - The house contract (`p2p_proto::Machine`): created idle by
//!   [`IceAgent::new`], the agent starts at its first `handle_timeout(now)`
//!   (commands before it send nothing); one [`IceOutput`] queue hands out
//!   transmits and events in the order the agent made them, so a driver
//!   needs to know no order of its own; commands that may start checks,
//!   gathering or timers take `now`, and [`IceAgent::send`] queues its
//!   transmit like any other.
//! - One candidate grammar: a signalled `candidate` line is parsed once,
//!   by `p2p_sdp`, and converted with [`Candidate::from_sdp`]; the agent
//!   parses no text. An mDNS (`….local`) or FQDN address is not resolved
//!   here (no I/O): [`CandidateError::MdnsName`] / [`HostName`](CandidateError::HostName)
//!   carry the name for the caller to resolve ([`Candidate::from_sdp_resolved`])
//!   or skip. Extension attributes (`generation`, `ufrag` …) are the
//!   signalling's business and dropped, as is a related address that is a
//!   name (ICE does not use it).
//! - One data stream, one component (RTP/RTCP multiplexed or a data
//!   channel): one check list, component 1 only.
//! - ICE-TCP (RFC 6544) beside UDP: host candidates over TCP
//!   ([`Candidate::host_tcp`]), active (signalled on port 9,
//!   [`ACTIVE_TCP_PORT`]: its transmits ask the caller to open, or reuse, a
//!   connection from that IP) and passive (the caller listens; checks come
//!   in over connections the peer opens, teach the agent the peer's end as
//!   a peer-reflexive active candidate and trigger ours back on the same
//!   connection). Pairs are active ↔ passive and simultaneous-open ↔
//!   simultaneous-open; a passive local candidate is never paired in
//!   advance (§6.2). Type preferences are libwebrtc's for TCP (host 90,
//!   prflx 80, srflx 65: below every UDP candidate, above relays), local
//!   preferences §4.2's (direction 6 active, 4 passive, 2 S-O). The agent
//!   sees whole packets: the RFC 4571 framing on the stream is the caller's
//!   ([`framing`]). Not done: simultaneous-open and server-reflexive TCP
//!   candidates (they need NAT-assisted port prediction); checks over TCP
//!   are retransmitted like UDP ones (a lost connect is then retried).
//! - Check retransmissions: RTO 500 ms doubling, 5 transmits, fail after
//!   9.5 s (configurable, RFC 8445 §14.3 leaves the RTO to the agent).
//! - Relay first, upgrade later ([`IceConfig::early_nomination`], on by
//!   default): the controlling agent nominates the first valid pair at
//!   once, relayed or not, so that data flows on the first path that
//!   works; a better pair that succeeds later is nominated after regular
//!   nomination's wait (up to [`IceConfig::nomination_timeout`] for
//!   higher-priority pairs still in progress) and the selected pair moves
//!   to it ([`IceEvent::SelectedPair`] again). Nomination is not final:
//!   this departs from RFC 8445 §8.1.1 (one nomination per component) the
//!   way libwebrtc (it nominates whichever connection it switches to) and
//!   str0m do. A controlled peer that follows RFC 8445 still works with
//!   it: libwebrtc's controlled side switches to a newly nominated pair
//!   (or to the pair data arrives on), aioice's takes the latest
//!   nomination as its pair, and this agent takes the best nominated pair.
//!   The controlled agent never nominates: nothing changes for it.
//! - Pacing (§14.2): a check goes out Ta after the previous one, or at once
//!   when no other check of ours awaits an answer, so checks are clocked
//!   by the answers and an agent whose checks were all answered (a
//!   nomination after the first success) never sits out a Ta slot.
//! - Optimistic nomination ([`IceConfig::optimistic_nomination`], on by
//!   default): the first check of the best pair of the check list, sent
//!   while no pair is valid, carries USE-CANDIDATE, so host ↔ host on one
//!   LAN or relay ↔ relay is selected after one round trip, not two. It is
//!   a nomination like any other for the controlled peer (§7.3.1.5).
//! - A restart gathers again: server-reflexive candidates are asked anew
//!   from the STUN servers (a network change may have changed the
//!   mapping); [`IceAgent::retire_local_candidate`] takes a dead relayed
//!   candidate out of the check list.
//! - Triggered checks go before ordinary ones (§6.1.4.2), but after a
//!   triggered check the next paced slot serves the check list when a pair
//!   waits there, so a stream of triggered checks cannot starve it.
//! - At most 8 peer-reflexive remote candidates are learnt per local
//!   candidate and remote IP; further checks are answered, not learnt
//!   (two port-dependent NATs would otherwise trade new ports for ever).
//! - Unknown comprehension-required attributes in a check are ignored, not
//!   answered with 420; the peer's half of USERNAME is not checked.
//! - A request with a missing USERNAME or MESSAGE-INTEGRITY, a USERNAME
//!   without `:`, or missing PRIORITY/ICE-CONTROLL(ED|ING) gets 400; an unknown
//!   ufrag or a bad MESSAGE-INTEGRITY gets 401 (RFC 8489 §9.1.3); a role
//!   conflict 487 (RFC 8445 §7.3.1.1).
//! - ICE-lite agents answer checks and select the pair the controlling peer
//!   nominates; they send no checks, no consent and no keepalives.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod agent;
mod candidate;
mod config;
pub mod framing;
mod hardnat;
mod pair;
mod types;

pub use agent::IceAgent;
pub use candidate::{
    candidate_priority, compute_foundation, Candidate, CandidateError, CandidateKind, TcpType,
    ACTIVE_TCP_PORT, DEFAULT_LOCAL_PREFERENCE,
};
pub use config::IceConfig;
pub use hardnat::{
    BadCredentials, BirthdayConfig, BirthdayEvent, BirthdayOutput, BirthdayProber, BirthdayRole,
    MAX_PROBES, MAX_SOCKETS,
};
pub use p2p_stun::TransactionConfig;
pub use pair::{pair_priority, PairState};
pub use types::{
    Credentials, IceError, IceEvent, IceOutput, IceRole, IceState, IceStats, PairStats,
};
