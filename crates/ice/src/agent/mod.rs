//! The agent: candidates in, checks out, a selected pair and events back.
//!
//! The public API lives here; the jobs behind it live in the submodules:
//! the check list (`checklist`: pairing, pacing, triggered checks,
//! unfreezing), connectivity checks (`checks`: ours out, the peer's in,
//! our answers), `nomination`, `consent` freshness and keepalives,
//! server-reflexive gathering (`gather`), and the connection `state`.

mod checklist;
mod checks;
mod consent;
mod discovered;
mod gather;
mod nomination;
mod state;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_proto::{Datagram, Handled, Machine, Transmit, Transport};
use p2p_stun::{is_stun, Key, Message, MessageClass, Method, TransactionId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::candidate::{candidate_priority, Candidate, CandidateKind};
use crate::config::IceConfig;
use crate::pair::PairState;
use crate::types::{
    Credentials, IceError, IceEvent, IceOutput, IceRole, IceState, IceStats, PairStats,
};
use checklist::Pair;
use checks::{Purpose, Request};
use nomination::Selected;

/// The ICE agent of RFC 8445 for one data stream with one component, as a
/// sans-IO state machine.
///
/// # Drive contract
///
/// The agent is a [`p2p_proto::Machine`] and follows the house contract.
/// It owns no socket and reads no clock. It is created idle by
/// [`new`](IceAgent::new) and **starts at its first
/// [`handle_timeout(now)`](Machine::handle_timeout)** (the agent learns the
/// time only from its caller): commands given before (host candidates, STUN
/// servers, credentials) send nothing until then. After **every**
/// `handle_*` call or command (`add_*`, `set_*`, `end_of_*`, `restart*`,
/// `retire_*`, `send`), before the next mutation:
///
/// 1. drain [`poll_output`](Machine::poll_output) until `None`. It hands
///    out transmits and events in the order the agent made them (an answer
///    before the [`IceEvent::SelectedPair`] it caused, a
///    [`IceEvent::StateChanged`] after what changed the state). Send each
///    [`IceOutput::Transmit`] from its `source` (wrap it for TURN when the
///    source is a relayed address); act on each [`IceOutput::Event`];
/// 2. read [`poll_timeout`](Machine::poll_timeout) and call
///    [`handle_timeout`](Machine::handle_timeout) at that instant (it may be
///    in the past: then call it at once).
///
/// Commands that may start checks, gathering or timers take `now`
/// ([`add_local_candidate`](IceAgent::add_local_candidate),
/// [`add_remote_candidate`](IceAgent::add_remote_candidate),
/// [`set_remote_credentials`](IceAgent::set_remote_credentials),
/// [`add_stun_server`](IceAgent::add_stun_server),
/// [`restart`](IceAgent::restart), [`send`](IceAgent::send)); those that
/// only record a fact (end-of-candidates, a lite peer, a retired candidate)
/// take none. Commands queue what they send; none returns a transmit.
///
/// Feed every datagram that arrives on a local address (host, or relayed
/// once unwrapped) to [`handle_input`](Machine::handle_input). It returns
/// [`Handled::NotMine`] for datagrams that are not the agent's (application
/// data, TURN traffic): route those yourself; data is the peer's when
/// [`accepts_data`](IceAgent::accepts_data) says so (the selected pair, or
/// a pair being checked: the peer may send before we select).
///
/// # What is external
///
/// The agent does not enumerate interfaces or talk to TURN servers: the
/// caller adds host and relayed candidates with
/// [`add_local_candidate`](IceAgent::add_local_candidate). It can gather
/// server-reflexive candidates itself ([`add_stun_server`](IceAgent::add_stun_server)).
#[derive(Debug)]
pub struct IceAgent {
    config: IceConfig,
    rng: StdRng,
    role: IceRole,
    tie_breaker: u64,
    local_creds: Credentials,
    local_key: Key,
    /// The credentials before the last restart, still answered until a new
    /// pair is selected.
    prev_local: Option<(Credentials, Key)>,
    remote_creds: Option<(Credentials, Key)>,
    remote_lite: bool,
    locals: Vec<Candidate>,
    remotes: Vec<Candidate>,
    pairs: Vec<Pair>,
    /// Triggered checks: (pair, nominate).
    triggered: VecDeque<(usize, bool)>,
    requests: Vec<Request>,
    recent_tids: VecDeque<TransactionId>,
    stun_servers: Vec<SocketAddr>,
    /// Binding requests to send to STUN servers: (transport, base, server).
    pending_gathers: Vec<(Transport, SocketAddr, SocketAddr)>,
    /// Server-reflexive candidates (address, base) the agent gathered.
    gathered: Vec<(SocketAddr, SocketAddr)>,
    /// Local candidates (address, base) that must not be paired any more.
    retired: Vec<(SocketAddr, SocketAddr)>,
    local_eoc: bool,
    remote_eoc: bool,
    gathering_complete_sent: bool,
    remote_prflx_count: u32,
    /// The last paced check came from the triggered queue: the next slot
    /// goes to an ordinary check if one is waiting.
    last_was_triggered: bool,
    last_now: Option<Instant>,
    last_check_at: Option<Instant>,
    checking_since: Option<Instant>,
    first_valid_at: Option<Instant>,
    nominating: Option<usize>,
    selected: Option<Selected>,
    disconnected: bool,
    failed: bool,
    state: IceState,
    /// Transmits and events, in the order they were made.
    outputs: VecDeque<IceOutput>,
}

const ICE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn random_string(rng: &mut StdRng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(ICE_CHARS[rng.gen_range(0..ICE_CHARS.len())]))
        .collect()
}

fn valid_ice_string(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn new_credentials(rng: &mut StdRng) -> (Credentials, Key) {
    loop {
        let creds = Credentials {
            ufrag: random_string(rng, 8),
            pwd: random_string(rng, 24),
        };
        // Printable ASCII always prepares; the loop never repeats.
        if let Ok(key) = Key::short_term(&creds.pwd) {
            return (creds, key);
        }
    }
}

impl IceAgent {
    /// A new agent with fresh random credentials and tie-breaker.
    pub fn new(config: IceConfig) -> Self {
        let mut rng = match config.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let (local_creds, local_key) = new_credentials(&mut rng);
        let tie_breaker = rng.gen();
        let role = if config.controlling && !config.lite {
            IceRole::Controlling
        } else {
            IceRole::Controlled
        };
        IceAgent {
            config,
            rng,
            role,
            tie_breaker,
            local_creds,
            local_key,
            prev_local: None,
            remote_creds: None,
            remote_lite: false,
            locals: Vec::new(),
            remotes: Vec::new(),
            pairs: Vec::new(),
            triggered: VecDeque::new(),
            requests: Vec::new(),
            recent_tids: VecDeque::new(),
            stun_servers: Vec::new(),
            pending_gathers: Vec::new(),
            gathered: Vec::new(),
            retired: Vec::new(),
            local_eoc: false,
            remote_eoc: false,
            gathering_complete_sent: false,
            remote_prflx_count: 0,
            last_was_triggered: false,
            last_now: None,
            last_check_at: None,
            checking_since: None,
            first_valid_at: None,
            nominating: None,
            selected: None,
            disconnected: false,
            failed: false,
            state: IceState::New,
            outputs: VecDeque::new(),
        }
    }

    // ------------------------------------------------------------ getters

    /// Our ufrag and password, to signal to the peer.
    pub fn local_credentials(&self) -> &Credentials {
        &self.local_creds
    }

    /// The peer's credentials, once set.
    pub fn remote_credentials(&self) -> Option<&Credentials> {
        self.remote_creds.as_ref().map(|(c, _)| c)
    }

    /// The current role.
    pub fn role(&self) -> IceRole {
        self.role
    }

    /// The tie-breaker sent in ICE-CONTROLLING / ICE-CONTROLLED.
    pub fn tie_breaker(&self) -> u64 {
        self.tie_breaker
    }

    /// The current state.
    pub fn state(&self) -> IceState {
        self.state
    }

    /// Whether this agent is ICE-lite.
    pub fn is_lite(&self) -> bool {
        self.config.lite
    }

    /// Whether the peer was declared ICE-lite ([`IceAgent::set_remote_ice_lite`]).
    pub fn is_remote_lite(&self) -> bool {
        self.remote_lite
    }

    /// The selected pair (local, remote), if any.
    pub fn selected_pair(&self) -> Option<(&Candidate, &Candidate)> {
        self.selected.as_ref().map(|s| (&s.local, &s.remote))
    }

    /// Whether application data that arrived on `local` (a host base, or a
    /// relayed address once unwrapped) from `remote` is the peer's.
    ///
    /// It is when it came on the selected pair, or on any pair of the check
    /// list that is being checked or succeeded (waiting, in progress,
    /// succeeded, or valid): RFC 8445 §12.2 has an agent accept data on any
    /// candidate pair it is checking, since the controlling peer may send on
    /// a pair it nominated before this side has selected it. Frozen and
    /// failed pairs do not count: the peer cannot be using them. Which pair
    /// carries *our* data is unchanged (always the selected one).
    pub fn accepts_data(&self, local: SocketAddr, remote: SocketAddr) -> bool {
        let on = |l: &Candidate, r: &Candidate| l.base() == local && r.address() == remote;
        if self
            .selected
            .as_ref()
            .is_some_and(|s| on(&s.local, &s.remote))
        {
            return true;
        }
        self.pairs.iter().any(|p| {
            (p.valid
                || matches!(
                    p.state,
                    PairState::Waiting | PairState::InProgress | PairState::Succeeded
                ))
                && on(&self.locals[p.local], &self.remotes[p.remote])
        })
    }

    /// The accepted local candidates (peer-reflexive ones included).
    pub fn local_candidates(&self) -> &[Candidate] {
        &self.locals
    }

    /// The known remote candidates (peer-reflexive ones included).
    pub fn remote_candidates(&self) -> &[Candidate] {
        &self.remotes
    }

    /// A snapshot of the candidates and the check list.
    pub fn stats(&self) -> IceStats {
        let selected = self.selected.as_ref().and_then(|s| s.pair);
        let mut pairs: Vec<PairStats> = self
            .pairs
            .iter()
            .enumerate()
            .map(|(i, p)| PairStats {
                local: self.locals[p.local].clone(),
                remote: self.remotes[p.remote].clone(),
                priority: p.priority,
                state: p.state,
                valid: p.valid,
                nominated: p.nominated,
                selected: selected == Some(i),
                checks_sent: p.checks_sent,
                responses_received: p.responses,
            })
            .collect();
        pairs.sort_by_key(|p| std::cmp::Reverse(p.priority));
        IceStats {
            state: self.state,
            role: self.role,
            local_candidates: self.locals.clone(),
            remote_candidates: self.remotes.clone(),
            pairs,
        }
    }

    // ------------------------------------------------------------ commands

    /// Set the peer's ufrag and password (checks may start: they go out
    /// from `now` on). Changing them once set is a remote ICE restart:
    /// remote candidates and the check list are reset, the selected pair
    /// keeps carrying data until a new one is selected.
    pub fn set_remote_credentials(
        &mut self,
        now: Instant,
        ufrag: &str,
        pwd: &str,
    ) -> Result<(), IceError> {
        if !valid_ice_string(ufrag) || !valid_ice_string(pwd) {
            return Err(IceError::BadCredentials);
        }
        let key = Key::short_term(pwd).map_err(|_| IceError::BadCredentials)?;
        let creds = Credentials {
            ufrag: ufrag.to_string(),
            pwd: pwd.to_string(),
        };
        match &self.remote_creds {
            Some((c, _)) if *c == creds => return Ok(()),
            Some(_) => self.reset_remote(),
            None => {}
        }
        self.remote_creds = Some((creds, key));
        self.note_time(now);
        self.update_state();
        Ok(())
    }

    /// Tell the agent the peer is ICE-lite (`a=ice-lite`): a full agent then
    /// takes the controlling role (RFC 8445 §6.1.1).
    pub fn set_remote_ice_lite(&mut self, lite: bool) {
        self.remote_lite = lite;
        if lite && !self.config.lite && self.role == IceRole::Controlled {
            self.set_role(IceRole::Controlling);
        }
    }

    /// Add a local candidate: a host address, a server-reflexive address the
    /// caller learnt, or a relayed address of a TURN allocation. The agent
    /// assigns its priority (type preference and a local preference that
    /// tells base IPs apart and interleaves the address families, IPv6
    /// first, RFC 8421), drops it when
    /// redundant (RFC 8445 §5.1.3), pairs it with the remote candidates and
    /// emits [`IceEvent::LocalCandidate`]. Returns the candidate as accepted.
    /// Its checks, and for a host candidate its server-reflexive gathering,
    /// go out from `now` on.
    pub fn add_local_candidate(
        &mut self,
        now: Instant,
        candidate: Candidate,
    ) -> Result<Candidate, IceError> {
        let mut c = candidate;
        let kind = c.kind();
        if kind == CandidateKind::PeerReflexive
            || (self.config.lite && kind != CandidateKind::Host)
            || (self.config.relay_only && kind != CandidateKind::Relayed)
        {
            return Err(IceError::ExcludedByPolicy);
        }
        let local_pref = self.local_preference(&c);
        let type_pref = match c.transport() {
            Transport::Tcp => kind.tcp_type_preference(),
            _ => kind.type_preference(),
        };
        c.set_priority(candidate_priority(type_pref, local_pref, 1));
        if let Some(i) = self.locals.iter().position(|l| {
            l.address() == c.address() && l.base() == c.base() && l.transport() == c.transport()
        }) {
            // A learnt peer-reflexive candidate gives way to a signalled one
            // with the same address (it keeps its pairs).
            let learnt = self.locals[i].kind() == CandidateKind::PeerReflexive;
            let key = (c.address(), c.base());
            if let Some(r) = self.retired.iter().position(|x| *x == key) {
                // Usable again (a new allocation got the same address).
                self.retired.swap_remove(r);
                for p in &mut self.pairs {
                    if p.local == i && p.state == PairState::Failed {
                        p.state = PairState::Waiting;
                    }
                }
            } else if !learnt && self.locals[i].priority() >= c.priority() {
                return Err(IceError::Redundant);
            }
            self.locals[i] = c.clone();
            self.note_time(now);
            self.recompute_priorities();
            self.emit(IceEvent::LocalCandidate(c.clone()));
            if learnt {
                self.relabel_selected();
            }
            return Ok(c);
        }
        self.note_time(now);
        self.locals.push(c.clone());
        let li = self.locals.len() - 1;
        self.emit(IceEvent::LocalCandidate(c.clone()));
        if gather::asks_stun_servers(&c) {
            for server in self.stun_servers.clone() {
                if server.is_ipv4() == c.base().is_ipv4() {
                    self.pending_gathers.push((c.transport(), c.base(), server));
                }
            }
        }
        for ri in 0..self.remotes.len() {
            if self.remotes[ri].kind() != CandidateKind::PeerReflexive {
                self.pair_up(li, ri);
            }
        }
        self.update_state();
        Ok(c)
    }

    /// Add a candidate the peer signalled (trickle: at any time before its
    /// end-of-candidates). A candidate with the address of a known
    /// peer-reflexive one replaces it (RFC 8838 §11.4); duplicates are ignored.
    /// Its checks go out from `now` on.
    ///
    /// A signalled `candidate` line becomes a [`Candidate`] through
    /// `p2p_sdp` ([`Candidate::from_sdp`]), parsed once.
    pub fn add_remote_candidate(
        &mut self,
        now: Instant,
        candidate: Candidate,
    ) -> Result<(), IceError> {
        if self.remote_eoc {
            return Err(IceError::AfterEndOfCandidates);
        }
        self.note_time(now);
        if let Some(ri) = self.remotes.iter().position(|r| {
            r.address() == candidate.address() && r.transport() == candidate.transport()
        }) {
            if self.remotes[ri].kind() == CandidateKind::PeerReflexive
                && candidate.kind() != CandidateKind::PeerReflexive
            {
                self.remotes[ri] = candidate;
                self.recompute_priorities();
                for li in 0..self.locals.len() {
                    self.pair_up(li, ri);
                }
                self.relabel_selected();
            }
            return Ok(());
        }
        self.remotes.push(candidate);
        let ri = self.remotes.len() - 1;
        for li in 0..self.locals.len() {
            self.pair_up(li, ri);
        }
        self.update_state();
        Ok(())
    }

    /// The peer signalled end-of-candidates (RFC 8838 §8.2).
    pub fn end_of_remote_candidates(&mut self) {
        self.remote_eoc = true;
        self.update_state();
    }

    /// Checks now that the peer is still there, when something outside
    /// ICE says it may not be (the signaling server reports that it left:
    /// its process may have died). A consent check goes out at once and
    /// again every 200 ms; the first answer ends the verification and
    /// nothing changes; with no answer by `now + within`, consent is lost
    /// at once ([`IceEvent::ConsentLost`]) instead of after the consent
    /// timeout (30 s). Returns `false` (and does nothing) without a
    /// selected pair, without the peer's credentials, or in ICE-lite.
    pub fn verify_consent(&mut self, now: Instant, within: Duration) -> bool {
        self.note_time(now);
        self.start_verify(now, within)
    }

    /// ICE restart (RFC 8445 §9): new local credentials, remote credentials,
    /// candidates and check list reset. Local candidates are kept and emitted
    /// again as [`IceEvent::LocalCandidate`]. The selected pair keeps carrying
    /// data (and checks with the old credentials are still answered) until
    /// the new checks select a pair. Signal the new credentials to the peer.
    ///
    /// A restart gathers again (a network change may have changed the NAT
    /// mapping): the server-reflexive candidates the agent gathered itself
    /// are dropped and the STUN servers asked again from every host base;
    /// the answers come as new [`IceEvent::LocalCandidate`]s, and
    /// [`IceEvent::GatheringComplete`] waits for them. Retired candidates
    /// ([`IceAgent::retire_local_candidate`]) and learnt peer-reflexive ones
    /// are forgotten; host, relayed and caller-added server-reflexive
    /// candidates are kept and emitted again.
    ///
    /// The new gathering and checks go out from `now` on.
    pub fn restart(&mut self, now: Instant) {
        self.note_time(now);
        let (creds, key) = new_credentials(&mut self.rng);
        let old_creds = std::mem::replace(&mut self.local_creds, creds);
        let old_key = std::mem::replace(&mut self.local_key, key);
        self.prev_local = Some((old_creds, old_key));
        self.reset_remote();
        self.remote_creds = None;
        let gathered = std::mem::take(&mut self.gathered);
        let retired = std::mem::take(&mut self.retired);
        self.locals = std::mem::take(&mut self.locals)
            .into_iter()
            .filter(|l| {
                l.kind() != CandidateKind::PeerReflexive
                    && !retired.contains(&(l.address(), l.base()))
                    && !(l.kind() == CandidateKind::ServerReflexive
                        && gathered.contains(&(l.address(), l.base())))
            })
            .collect();
        self.recompute_priorities();
        for l in self.locals.clone() {
            self.emit(IceEvent::LocalCandidate(l));
        }
        // Ask the STUN servers again (the answers may differ now).
        self.pending_gathers.clear();
        for l in &self.locals {
            if !gather::asks_stun_servers(l) {
                continue;
            }
            for server in &self.stun_servers {
                if server.is_ipv4() == l.base().is_ipv4() {
                    self.pending_gathers
                        .push((l.transport(), l.base(), *server));
                }
            }
        }
        self.gathering_complete_sent = false;
        self.failed = false;
        self.check_gathering_complete();
        self.update_state();
    }

    /// [`restart`](IceAgent::restart), but the local candidates given
    /// (address and base) are left out of the new generation: not emitted,
    /// not paired. For a caller that must first learn whether they still
    /// work (a TURN allocation whose server may have died); one that does
    /// is added again with [`add_local_candidate`](IceAgent::add_local_candidate).
    /// A selected pair that uses one keeps carrying data meanwhile.
    pub fn restart_withholding(&mut self, now: Instant, withheld: &[(SocketAddr, SocketAddr)]) {
        for key in withheld {
            if !self.retired.contains(key) {
                self.retired.push(*key);
            }
        }
        self.restart(now);
    }

    /// A local candidate is no longer usable (a TURN allocation that was
    /// lost): its pairs fail, their checks stop, it is not paired again, and
    /// the next [`restart`](IceAgent::restart) forgets it. Returns whether
    /// such a candidate (address and base) was known. The selected pair, if
    /// it uses the candidate, stays until consent fails or another pair is
    /// selected.
    pub fn retire_local_candidate(&mut self, address: SocketAddr, base: SocketAddr) -> bool {
        let Some(li) = self
            .locals
            .iter()
            .position(|l| l.address() == address && l.base() == base)
        else {
            return false;
        };
        if !self.retired.contains(&(address, base)) {
            self.retired.push((address, base));
        }
        let dead: Vec<usize> = (0..self.pairs.len())
            .filter(|p| self.pairs[*p].local == li)
            .collect();
        for p in &dead {
            self.pairs[*p].state = PairState::Failed;
            self.pairs[*p].valid = false;
            if self.nominating == Some(*p) {
                self.nominating = None;
            }
        }
        self.triggered.retain(|(p, _)| !dead.contains(p));
        for t in &mut self.requests {
            if matches!(t.purpose, Purpose::Check { pair, .. } if dead.contains(&pair)) {
                t.cancelled = true;
            }
        }
        self.update_state();
        true
    }

    /// Application data on the selected pair: queues a transmit (it comes
    /// out of [`poll_output`](Machine::poll_output)) from the local
    /// candidate's base (a relayed address for a relayed candidate: wrap it)
    /// to the remote candidate. [`IceError::NotConnected`] when no pair is
    /// selected (or consent was lost). Sending counts as activity on the
    /// path: the next keepalive is due a keepalive interval after `now`.
    pub fn send(&mut self, now: Instant, data: impl Into<Vec<u8>>) -> Result<(), IceError> {
        let sel = self.selected.as_mut().ok_or(IceError::NotConnected)?;
        sel.last_sent = now;
        let t = Transmit::new(
            sel.local.transport(),
            sel.local.base(),
            sel.remote.address(),
            data.into(),
        );
        self.transmit(t);
        Ok(())
    }

    /// The latest instant the caller told the agent: deadlines that are due
    /// at once (a gathering request, a check the pacer may send now) are
    /// this instant.
    fn note_time(&mut self, now: Instant) {
        self.last_now = Some(now);
    }

    /// Queue a datagram to send.
    fn transmit(&mut self, t: Transmit) {
        self.outputs.push_back(IceOutput::Transmit(t));
    }

    /// Queue an event.
    fn emit(&mut self, e: IceEvent) {
        self.outputs.push_back(IceOutput::Event(e));
    }
}

/// The drive contract of `p2p_proto`. The agent starts at its first
/// [`handle_timeout`](Machine::handle_timeout): commands given before (host
/// candidates, STUN servers, credentials) send nothing until then.
impl Machine for IceAgent {
    type Output = IceOutput;

    /// A datagram arrived on a local address (a host base, or a relayed
    /// address once the caller unwrapped it). [`Handled::Taken`] for a STUN
    /// Binding message of the agent's (a check, an answer to one of its
    /// requests, a keepalive), valid or dropped; [`Handled::NotMine`] for
    /// the rest: not UDP, not STUN (application data: it is the peer's when
    /// [`accepts_data`](IceAgent::accepts_data) says so), or a STUN message
    /// the agent does not own (a TURN response, an answer to someone else's
    /// transaction, malformed STUN).
    fn handle_input(&mut self, now: Instant, datagram: Datagram<'_>) -> Handled {
        self.last_now = Some(now);
        let tcp = datagram.transport == Transport::Tcp;
        if (datagram.transport != Transport::Udp && !tcp) || !is_stun(datagram.contents) {
            return Handled::NotMine;
        }
        let Ok(msg) = Message::decode(datagram.contents) else {
            return Handled::NotMine;
        };
        if msg.typ().method != Method::BINDING {
            return Handled::NotMine;
        }
        if msg.has_fingerprint() && msg.verify_fingerprint().is_err() {
            return Handled::NotMine;
        }
        let result = match msg.typ().class {
            MessageClass::Request => {
                self.on_request(now, &datagram, &msg);
                Handled::Taken
            }
            MessageClass::Indication => Handled::Taken,
            MessageClass::Success | MessageClass::Error => {
                let tid = msg.transaction_id();
                if self.on_response(now, &datagram, &msg) || self.recent_tids.contains(&tid) {
                    Handled::Taken
                } else {
                    Handled::NotMine
                }
            }
        };
        // A triggered check (or a nomination) that is due now shows in
        // poll_timeout as `now`: the caller sends it at once.
        self.maybe_nominate(now);
        self.check_gathering_complete();
        self.update_state();
        result
    }

    /// The time asked for by [`poll_timeout`](Machine::poll_timeout) came
    /// (or later): start gathering, retransmit, pace the next check,
    /// nominate, check consent, send keepalives. The first call starts the
    /// agent.
    fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        self.start_gathers(now);
        self.drive_transactions(now);
        self.maybe_nominate(now);
        self.pace(now);
        self.drive_selected(now);
        if let (Some(timeout), Some(since)) = (self.config.checking_timeout, self.checking_since) {
            if self.selected.is_none() && !self.failed && now >= since + timeout {
                self.failed = true;
            }
        }
        self.check_gathering_complete();
        self.update_state();
    }

    /// The next transmit or event, in the order the agent made them.
    fn poll_output(&mut self) -> Option<IceOutput> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Machine::handle_timeout) must be called next
    /// (possibly an instant already past: call it at once).
    fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for t in &self.requests {
            if let Some(d) = t.transaction.poll_timeout() {
                at(d);
            }
        }
        if !self.pending_gathers.is_empty() {
            if let Some(n) = self.last_now {
                at(n);
            }
        }
        if let Some(next) = self.peek_next_check() {
            if let Some(t) = self.next_check_at(next) {
                at(t);
            }
        }
        if self.nomination_candidate().is_some() {
            if let Some(f) = self.first_valid_at {
                at(f + self.config.nomination_timeout);
            }
            if let Some(t) = self.next_give_up() {
                at(t);
            }
        }
        if let Some(sel) = &self.selected {
            if !self.config.lite {
                if self.remote_creds.is_some() {
                    at(sel.next_consent);
                }
                at(sel.last_consent + self.config.consent_timeout);
                if let Some((_, until)) = sel.verify {
                    at(until);
                }
                if !self.disconnected {
                    at(sel.last_consent + self.config.disconnected_timeout);
                }
                at(sel.last_sent + self.config.keepalive_interval);
            }
        }
        if let (Some(timeout), Some(since)) = (self.config.checking_timeout, self.checking_since) {
            if self.selected.is_none() && !self.failed {
                at(since + timeout);
            }
        }
        next
    }
}
