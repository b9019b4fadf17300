//! The agent: candidates in, checks out, a selected pair and events back.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_stun::attr::{
    ErrorCode, IceControlled, IceControlling, MappedAddress, Priority, UseCandidate, Username,
    XorMappedAddress,
};
use p2p_stun::{
    is_stun, AttrType, ClientTransaction, Key, Message, MessageBuilder, MessageClass, MessageType,
    Method, TransactionId, TransactionOutcome,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::candidate::{candidate_priority, Candidate, CandidateKind};
use crate::config::IceConfig;
use crate::pair::{pair_priority, PairState};
use crate::types::{
    Credentials, Datagram, IceError, IceEvent, IceRole, IceState, IceStats, Input, PairStats,
    Transmit,
};

/// How many finished transaction ids are remembered, so that late duplicate
/// responses are still recognised as the agent's.
const RECENT_TIDS: usize = 64;

/// Most peer-reflexive remote candidates learnt on one local candidate from
/// one remote IP. Beyond it a check from yet another port of that IP is
/// answered but teaches nothing and triggers nothing. Two
/// address-and-port-dependent NATs would otherwise feed each other a new
/// port with every triggered check, for ever, growing the check list without
/// bound (libnice caps remote candidates in the same spirit).
const MAX_PRFLX_PER_IP: usize = 8;

/// The least time the first retransmission of a check of a better pair is
/// waited for once a pair is valid (see `IceAgent::patience`), however
/// short the valid pair's round trip.
const MIN_PATIENCE: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Pair {
    local: usize,
    remote: usize,
    priority: u64,
    state: PairState,
    valid: bool,
    nominated: bool,
    /// The peer sent USE-CANDIDATE on this pair before our check succeeded.
    nominate_on_success: bool,
    /// The valid pair our check of this pair produced (RFC 8445 §7.2.5.3.2).
    valid_pair: Option<usize>,
    /// A triggered check was already sent while a check was in progress.
    retriggered: bool,
    checks_sent: u32,
    responses: u32,
    /// When our first check of the pair went out.
    first_check_at: Option<Instant>,
    /// The round trip of the check that made the pair succeed (or of the
    /// check whose valid pair this is).
    rtt: Option<Duration>,
    /// The peer sent a check on this pair: it is alive at the peer's end.
    peer_checked: bool,
}

#[derive(Debug)]
enum Purpose {
    Check {
        pair: usize,
        use_candidate: bool,
        /// The role the request was sent in.
        controlling: bool,
        /// The PRIORITY sent, the priority of a local prflx learnt from the answer.
        prflx_priority: u32,
        key: Key,
    },
    Consent {
        key: Key,
    },
    Gather {
        server: SocketAddr,
    },
}

#[derive(Debug)]
struct Tx {
    tid: TransactionId,
    tx: ClientTransaction,
    source: SocketAddr,
    destination: SocketAddr,
    purpose: Purpose,
    /// A newer check replaced it: no retransmissions, no failure on timeout,
    /// but an answer still counts (RFC 8445 §7.3.1.4).
    cancelled: bool,
    /// When the request first went out.
    sent_at: Instant,
}

#[derive(Debug)]
struct Selected {
    local: Candidate,
    remote: Candidate,
    /// The pair in the current check list; `None` after a restart, while the
    /// old path keeps carrying data.
    pair: Option<usize>,
    last_consent: Instant,
    next_consent: Instant,
    last_sent: Instant,
}

/// The ICE agent of RFC 8445 for one data stream with one component, as a
/// sans-IO state machine.
///
/// # Drive contract
///
/// The agent owns no socket and reads no clock. Start with
/// [`handle_timeout(now)`](IceAgent::handle_timeout) once (the agent learns
/// the time only from its caller), then after **every** `handle_*` call or
/// command (`add_*`, `set_*`, `end_of_*`, `restart`, `send`), drain in this
/// order before the next mutation:
///
/// 1. [`poll_transmit`](IceAgent::poll_transmit) until `None`: send each
///    datagram from its `source` (wrap it for TURN when the source is a
///    relayed address);
/// 2. [`poll_timeout`](IceAgent::poll_timeout): call
///    [`handle_timeout`](IceAgent::handle_timeout) at that instant (it may be
///    in the past: then call it at once);
/// 3. [`poll_event`](IceAgent::poll_event) until `None`.
///
/// Feed every datagram that arrives on a local address (host, or relayed
/// once unwrapped) to [`handle_input`](IceAgent::handle_input). It returns
/// [`Input::NotIce`] for datagrams that are not the agent's (application
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
    txs: Vec<Tx>,
    recent_tids: VecDeque<TransactionId>,
    stun_servers: Vec<SocketAddr>,
    pending_gathers: Vec<(SocketAddr, SocketAddr)>,
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
    transmits: VecDeque<Transmit>,
    events: VecDeque<IceEvent>,
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

/// The priority a peer-reflexive candidate learnt from a check sent from
/// `local` gets: type preference 110 with `local`'s local preference.
fn prflx_priority(local: &Candidate) -> u32 {
    let local_pref = ((local.priority() >> 8) & 0xFFFF) as u16;
    candidate_priority(
        CandidateKind::PeerReflexive.type_preference(),
        local_pref,
        local.component(),
    )
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
            txs: Vec::new(),
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
            transmits: VecDeque::new(),
            events: VecDeque::new(),
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

    /// Set the peer's ufrag and password. Changing them once set is a remote
    /// ICE restart: remote candidates and the check list are reset, the
    /// selected pair keeps carrying data until a new one is selected.
    pub fn set_remote_credentials(&mut self, ufrag: &str, pwd: &str) -> Result<(), IceError> {
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
    /// tells base IPs and address families apart, IPv6 first), drops it when
    /// redundant (RFC 8445 §5.1.3), pairs it with the remote candidates and
    /// emits [`IceEvent::LocalCandidate`]. Returns the candidate as accepted.
    pub fn add_local_candidate(&mut self, candidate: Candidate) -> Result<Candidate, IceError> {
        let mut c = candidate;
        if c.component() != 1 {
            return Err(IceError::UnsupportedComponent(c.component()));
        }
        let kind = c.kind();
        if kind == CandidateKind::PeerReflexive
            || (self.config.lite && kind != CandidateKind::Host)
            || (self.config.relay_only && kind != CandidateKind::Relayed)
        {
            return Err(IceError::ExcludedByPolicy);
        }
        let local_pref = self.local_preference(kind, c.base());
        c.set_priority(candidate_priority(kind.type_preference(), local_pref, 1));
        if let Some(i) = self
            .locals
            .iter()
            .position(|l| l.address() == c.address() && l.base() == c.base())
        {
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
            self.recompute_priorities();
            self.events.push_back(IceEvent::LocalCandidate(c.clone()));
            return Ok(c);
        }
        self.locals.push(c.clone());
        let li = self.locals.len() - 1;
        self.events.push_back(IceEvent::LocalCandidate(c.clone()));
        if kind == CandidateKind::Host {
            for server in self.stun_servers.clone() {
                if server.is_ipv4() == c.base().is_ipv4() {
                    self.pending_gathers.push((c.base(), server));
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

    /// Gather server-reflexive candidates from a STUN server: a Binding
    /// request from every host base of the same family, now and for host
    /// candidates added later. Each answer becomes a local candidate
    /// ([`IceEvent::LocalCandidate`]). Ignored in ICE-lite and relay-only mode.
    pub fn add_stun_server(&mut self, server: SocketAddr) {
        if self.config.lite || self.config.relay_only || self.stun_servers.contains(&server) {
            return;
        }
        self.stun_servers.push(server);
        for l in &self.locals {
            if l.kind() == CandidateKind::Host && l.base().is_ipv4() == server.is_ipv4() {
                self.pending_gathers.push((l.base(), server));
            }
        }
    }

    /// The caller added all its local candidates. [`IceEvent::GatheringComplete`]
    /// follows once the agent's own server-reflexive requests are done.
    pub fn end_of_local_candidates(&mut self) {
        self.local_eoc = true;
        self.check_gathering_complete();
        self.update_state();
    }

    /// Add a candidate the peer signalled (trickle: at any time before its
    /// end-of-candidates). A candidate with the address of a known
    /// peer-reflexive one replaces it (RFC 8838 §11.4); duplicates are ignored.
    pub fn add_remote_candidate(&mut self, candidate: Candidate) -> Result<(), IceError> {
        if candidate.component() != 1 {
            return Err(IceError::UnsupportedComponent(candidate.component()));
        }
        if self.remote_eoc {
            return Err(IceError::AfterEndOfCandidates);
        }
        if let Some(ri) = self
            .remotes
            .iter()
            .position(|r| r.address() == candidate.address())
        {
            if self.remotes[ri].kind() == CandidateKind::PeerReflexive
                && candidate.kind() != CandidateKind::PeerReflexive
            {
                self.remotes[ri] = candidate;
                self.recompute_priorities();
                for li in 0..self.locals.len() {
                    self.pair_up(li, ri);
                }
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
    pub fn restart(&mut self) {
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
        for l in &self.locals {
            self.events.push_back(IceEvent::LocalCandidate(l.clone()));
        }
        // Ask the STUN servers again (the answers may differ now).
        self.pending_gathers.clear();
        for l in &self.locals {
            if l.kind() != CandidateKind::Host {
                continue;
            }
            for server in &self.stun_servers {
                if server.is_ipv4() == l.base().is_ipv4() {
                    self.pending_gathers.push((l.base(), *server));
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
    pub fn restart_withholding(&mut self, withheld: &[(SocketAddr, SocketAddr)]) {
        for key in withheld {
            if !self.retired.contains(key) {
                self.retired.push(*key);
            }
        }
        self.restart();
    }

    /// More local candidates are coming after all: undo
    /// [`end_of_local_candidates`](IceAgent::end_of_local_candidates) so that
    /// [`IceEvent::GatheringComplete`] waits for the next call. For a caller
    /// that gathers again after a [`restart`](IceAgent::restart) (TURN
    /// allocations renewed or re-created).
    pub fn expect_more_local_candidates(&mut self) {
        self.local_eoc = false;
        self.gathering_complete_sent = false;
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
        for t in &mut self.txs {
            if matches!(t.purpose, Purpose::Check { pair, .. } if dead.contains(&pair)) {
                t.cancelled = true;
            }
        }
        self.update_state();
        true
    }

    /// Application data on the selected pair: from the local candidate's base
    /// (a relayed address for a relayed candidate: wrap it) to the remote
    /// candidate. `None` when no pair is selected (or consent was lost).
    pub fn send(&mut self, now: Instant, data: impl Into<Vec<u8>>) -> Option<Transmit> {
        let sel = self.selected.as_mut()?;
        sel.last_sent = now;
        Some(Transmit {
            source: sel.local.base(),
            destination: sel.remote.address(),
            contents: data.into(),
        })
    }

    // ------------------------------------------------------------ sans-IO

    /// A datagram arrived on a local address. See [`Input`].
    pub fn handle_input(&mut self, now: Instant, datagram: Datagram<'_>) -> Input {
        self.last_now = Some(now);
        if !is_stun(datagram.contents) {
            return Input::NotIce;
        }
        let Ok(msg) = Message::decode(datagram.contents) else {
            return Input::NotIce;
        };
        if msg.typ().method != Method::BINDING {
            return Input::NotIce;
        }
        if msg.has_fingerprint() && msg.verify_fingerprint().is_err() {
            return Input::NotIce;
        }
        let result = match msg.typ().class {
            MessageClass::Request => {
                self.on_request(now, &datagram, &msg);
                Input::Consumed
            }
            MessageClass::Indication => Input::Consumed,
            MessageClass::Success | MessageClass::Error => {
                let tid = msg.transaction_id();
                if self.on_response(now, &datagram, &msg) || self.recent_tids.contains(&tid) {
                    Input::Consumed
                } else {
                    Input::NotIce
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

    /// The time asked for by [`poll_timeout`](IceAgent::poll_timeout) came
    /// (or later): retransmit, pace the next check, nominate, check consent,
    /// send keepalives.
    pub fn handle_timeout(&mut self, now: Instant) {
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

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`handle_timeout`](IceAgent::handle_timeout) must be called next
    /// (possibly an instant already past: call it at once).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for t in &self.txs {
            if let Some(d) = t.tx.poll_timeout() {
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

    /// The next event.
    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    // ------------------------------------------------------------ candidates and pairs

    /// Local preference: IPv6 above IPv4, then by the order in which base IPs
    /// of this kind and family first appeared (one per interface).
    fn local_preference(&self, kind: CandidateKind, base: SocketAddr) -> u16 {
        let v4 = base.is_ipv4();
        let mut ips = Vec::new();
        for l in &self.locals {
            if l.kind() == kind && l.base().is_ipv4() == v4 && !ips.contains(&l.base().ip()) {
                ips.push(l.base().ip());
            }
        }
        let index = ips
            .iter()
            .position(|ip| *ip == base.ip())
            .unwrap_or(ips.len());
        let top: u16 = if v4 { 0xFFFF - 0x4000 } else { 0xFFFF };
        top - index.min(0x3FFF) as u16
    }

    /// Whether a local candidate takes part in pairing: host and relayed ones,
    /// and server-reflexive ones only when their base is not itself a local
    /// candidate (RFC 8445 §6.1.2.4 replaces them by their base).
    fn pairable(&self, li: usize) -> bool {
        let l = &self.locals[li];
        if self.retired.contains(&(l.address(), l.base())) {
            return false;
        }
        match l.kind() {
            CandidateKind::Host | CandidateKind::Relayed => true,
            CandidateKind::ServerReflexive => !self
                .locals
                .iter()
                .any(|o| o.kind() == CandidateKind::Host && o.address() == l.base()),
            CandidateKind::PeerReflexive => false,
        }
    }

    fn compute_pair_priority(&self, local: usize, remote: usize) -> u64 {
        let (l, r) = (
            self.locals[local].priority(),
            self.remotes[remote].priority(),
        );
        match self.role {
            IceRole::Controlling => pair_priority(l, r),
            IceRole::Controlled => pair_priority(r, l),
        }
    }

    fn recompute_priorities(&mut self) {
        for i in 0..self.pairs.len() {
            self.pairs[i].priority =
                self.compute_pair_priority(self.pairs[i].local, self.pairs[i].remote);
        }
    }

    fn foundation_of(&self, p: usize) -> (&str, &str) {
        let pair = &self.pairs[p];
        (
            self.locals[pair.local].foundation(),
            self.remotes[pair.remote].foundation(),
        )
    }

    fn new_pair(&mut self, local: usize, remote: usize, state: PairState) -> usize {
        let priority = self.compute_pair_priority(local, remote);
        self.pairs.push(Pair {
            local,
            remote,
            priority,
            state,
            valid: false,
            nominated: false,
            nominate_on_success: false,
            valid_pair: None,
            retriggered: false,
            checks_sent: 0,
            responses: 0,
            first_check_at: None,
            rtt: None,
            peer_checked: false,
        });
        self.pairs.len() - 1
    }

    fn find_pair(&self, local: usize, remote: usize) -> Option<usize> {
        self.pairs
            .iter()
            .position(|p| p.local == local && p.remote == remote)
    }

    /// Form the pair (local, remote) for the check list if it belongs there.
    fn pair_up(&mut self, li: usize, ri: usize) {
        let (l, r) = (&self.locals[li], &self.remotes[ri]);
        if l.address().is_ipv4() != r.address().is_ipv4() || !self.pairable(li) {
            return;
        }
        // Redundant (same base and remote address) pairs are pruned (§6.1.2.4).
        let (base, raddr) = (l.base(), r.address());
        if self.pairs.iter().any(|p| {
            self.locals[p.local].base() == base && self.remotes[p.remote].address() == raddr
        }) {
            return;
        }
        // Trickle (RFC 8838 §10): Waiting unless a pair of the same foundation
        // is already Waiting or In-Progress.
        let foundation = (l.foundation().to_string(), r.foundation().to_string());
        let busy = (0..self.pairs.len()).any(|p| {
            matches!(
                self.pairs[p].state,
                PairState::Waiting | PairState::InProgress
            ) && self.foundation_of(p) == (foundation.0.as_str(), foundation.1.as_str())
        });
        let state = if busy {
            PairState::Frozen
        } else {
            PairState::Waiting
        };
        self.new_pair(li, ri, state);
    }

    fn set_role(&mut self, role: IceRole) {
        if self.role == role {
            return;
        }
        self.role = role;
        if role == IceRole::Controlled {
            self.nominating = None;
            self.triggered.iter_mut().for_each(|t| t.1 = false);
        }
        self.recompute_priorities();
        self.events.push_back(IceEvent::RoleChanged(role));
    }

    /// Forget the peer's candidates and the check list (restart).
    fn reset_remote(&mut self) {
        self.remotes.clear();
        self.pairs.clear();
        self.triggered.clear();
        self.txs
            .retain(|t| !matches!(t.purpose, Purpose::Check { .. }));
        self.remote_eoc = false;
        self.remote_prflx_count = 0;
        self.last_was_triggered = false;
        self.nominating = None;
        self.first_valid_at = None;
        self.checking_since = None;
        self.last_check_at = None;
        if let Some(sel) = &mut self.selected {
            sel.pair = None;
        }
    }

    // ------------------------------------------------------------ checks

    /// Whether the pacer may send a check at `now`: Ta after the last one
    /// (RFC 8445 §14.2), or at once when no check of ours is waiting for an
    /// answer. Checks are then clocked by the answers, never faster than
    /// Ta while one is outstanding, and an agent whose checks were all
    /// answered (a nomination after the first success, a triggered check
    /// after a quiet spell) does not sit out the rest of a Ta slot.
    ///
    /// A check of pair `next` replaces that pair's own outstanding check
    /// (RFC 8445 §7.3.1.4 cancels it), so that one does not hold it back: a
    /// triggered check on a pair whose first check was lost goes out with
    /// the answer to the peer's check.
    fn check_due(&self, now: Instant, next: usize) -> bool {
        self.last_check_at.is_none_or(|l| now >= l + self.config.ta)
            || !self.check_outstanding(next)
    }

    /// A check transaction (not cancelled, not of pair `except`) still
    /// waits for its answer.
    fn check_outstanding(&self, except: usize) -> bool {
        self.txs.iter().any(|t| {
            !t.cancelled && matches!(t.purpose, Purpose::Check { pair, .. } if pair != except)
        })
    }

    /// The next check slot for pair `next`: `now` when
    /// [`check_due`](Self::check_due) would say so, else Ta after the last
    /// check.
    fn next_check_at(&self, next: usize) -> Option<Instant> {
        match self.last_check_at {
            Some(l) if self.check_outstanding(next) => Some(l + self.config.ta),
            _ => self.last_now,
        }
    }

    /// Send the next check if one is due (after an input or a timeout).
    fn pace(&mut self, now: Instant) {
        let Some(next) = self.peek_next_check() else {
            return;
        };
        if self.check_due(now, next) {
            if let Some((p, nominate)) = self.pop_next_check() {
                self.send_check(now, p, nominate);
            }
        }
    }

    fn can_check(&self) -> bool {
        !self.config.lite && !self.failed && self.remote_creds.is_some()
    }

    /// The next check the pacer would send, without changing anything.
    fn peek_next_check(&self) -> Option<usize> {
        if !self.can_check() {
            return None;
        }
        match self.triggered.front() {
            Some(&(p, nominate)) if nominate || !self.last_was_triggered => Some(p),
            Some(&(p, _)) => self.peek_ordinary().or(Some(p)),
            None => self.peek_ordinary(),
        }
    }

    fn best_in_state(&self, state: PairState) -> Option<usize> {
        (0..self.pairs.len())
            .filter(|p| self.pairs[*p].state == state)
            .max_by_key(|p| self.pairs[*p].priority)
    }

    /// Frozen pairs whose foundation has no Waiting or In-Progress pair, the
    /// highest-priority one per foundation (§6.1.4.2).
    fn unfreezable(&self) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for p in 0..self.pairs.len() {
            if self.pairs[p].state != PairState::Frozen {
                continue;
            }
            let f = self.foundation_of(p);
            let busy = (0..self.pairs.len()).any(|q| {
                matches!(
                    self.pairs[q].state,
                    PairState::Waiting | PairState::InProgress
                ) && self.foundation_of(q) == f
            });
            if busy {
                continue;
            }
            match out.iter().position(|q| self.foundation_of(*q) == f) {
                Some(i) if self.pairs[out[i]].priority < self.pairs[p].priority => out[i] = p,
                Some(_) => {}
                None => out.push(p),
            }
        }
        out
    }

    fn pop_next_check(&mut self) -> Option<(usize, bool)> {
        if !self.can_check() {
            return None;
        }
        // Triggered checks go first (RFC 8445 §6.1.4.2), but not every
        // slot: after a triggered check an ordinary one gets the next slot
        // (nominations excepted), so that a peer that keeps triggering
        // checks (a stream of new peer-reflexive addresses) cannot starve
        // the rest of the check list, the relayed pairs for instance.
        let take_triggered = match self.triggered.front() {
            Some(&(_, nominate)) => {
                nominate || !self.last_was_triggered || self.peek_ordinary().is_none()
            }
            None => false,
        };
        if take_triggered {
            self.last_was_triggered = true;
            return self.triggered.pop_front();
        }
        self.last_was_triggered = false;
        if let Some(p) = self.best_in_state(PairState::Waiting) {
            return Some((p, false));
        }
        let unfreeze = self.unfreezable();
        for p in &unfreeze {
            self.pairs[*p].state = PairState::Waiting;
        }
        self.best_in_state(PairState::Waiting).map(|p| (p, false))
    }

    /// The ordinary (not triggered) check the pacer would send next.
    fn peek_ordinary(&self) -> Option<usize> {
        self.best_in_state(PairState::Waiting).or_else(|| {
            self.unfreezable()
                .into_iter()
                .max_by_key(|p| self.pairs[*p].priority)
        })
    }

    fn enqueue_triggered(&mut self, p: usize, nominate: bool) {
        if let Some(t) = self.triggered.iter_mut().find(|t| t.0 == p) {
            t.1 |= nominate;
            return;
        }
        if nominate {
            self.triggered.push_front((p, nominate));
        } else {
            self.triggered.push_back((p, nominate));
        }
    }

    fn build_request(
        &self,
        tid: TransactionId,
        priority: u32,
        use_candidate: bool,
        remote: &Credentials,
        key: &Key,
    ) -> Option<Vec<u8>> {
        let mut buf = Vec::with_capacity(128);
        let username = format!("{}:{}", remote.ufrag, self.local_creds.ufrag);
        let mut b = MessageBuilder::new(
            &mut buf,
            MessageType::new(Method::BINDING, MessageClass::Request),
            tid,
        )
        .ok()?;
        b.add(&Username::new(&username).ok()?).ok()?;
        b.add(&Priority(priority)).ok()?;
        match self.role {
            IceRole::Controlling => b.add(&IceControlling(self.tie_breaker)).ok()?,
            IceRole::Controlled => b.add(&IceControlled(self.tie_breaker)).ok()?,
        };
        if use_candidate {
            b.add(&UseCandidate).ok()?;
        }
        b.add_message_integrity(key).ok()?;
        b.add_fingerprint().ok()?;
        b.finish();
        Some(buf)
    }

    /// Start a transaction and hand out its first transmission.
    fn start_tx(
        &mut self,
        now: Instant,
        tid: TransactionId,
        request: Vec<u8>,
        (source, destination): (SocketAddr, SocketAddr),
        purpose: Purpose,
    ) {
        let config = match purpose {
            Purpose::Gather { .. } => self.config.gather_retransmits,
            Purpose::Check { .. } | Purpose::Consent { .. } => self.config.check_retransmits,
        };
        let mut tx = ClientTransaction::new(now, tid, request, false, config);
        tx.handle_timeout(now);
        if let Some(bytes) = tx.poll_transmit() {
            self.transmits.push_back(Transmit {
                source,
                destination,
                contents: bytes.to_vec(),
            });
        }
        self.txs.push(Tx {
            tid,
            tx,
            source,
            destination,
            purpose,
            cancelled: false,
            sent_at: now,
        });
    }

    fn send_check(&mut self, now: Instant, p: usize, nominate: bool) {
        let Some((remote_creds, key)) = self.remote_creds.clone() else {
            return;
        };
        let controlling = self.role == IceRole::Controlling;
        let use_candidate =
            controlling && (nominate || self.config.aggressive_nomination || self.optimistic(p));
        let (li, ri) = (self.pairs[p].local, self.pairs[p].remote);
        let priority = prflx_priority(&self.locals[li]);
        let tid = TransactionId::random(&mut self.rng);
        let Some(request) = self.build_request(tid, priority, use_candidate, &remote_creds, &key)
        else {
            self.pairs[p].state = PairState::Failed;
            return;
        };
        for t in &mut self.txs {
            if matches!(t.purpose, Purpose::Check { pair, .. } if pair == p) {
                t.cancelled = true;
            }
        }
        let (source, destination) = (self.locals[li].base(), self.remotes[ri].address());
        let pair = &mut self.pairs[p];
        if pair.state != PairState::Succeeded {
            pair.state = PairState::InProgress;
        }
        pair.checks_sent += 1;
        pair.first_check_at.get_or_insert(now);
        self.last_check_at = Some(now);
        self.checking_since.get_or_insert(now);
        let purpose = Purpose::Check {
            pair: p,
            use_candidate,
            controlling,
            prflx_priority: priority,
            key,
        };
        self.start_tx(now, tid, request, (source, destination), purpose);
    }

    /// Optimistic nomination ([`IceConfig::optimistic_nomination`]): the
    /// first check of pair `p` carries USE-CANDIDATE when no pair is valid
    /// or selected yet and no other pair that may still succeed has a
    /// higher priority.
    fn optimistic(&self, p: usize) -> bool {
        self.config.optimistic_nomination
            && self.pairs[p].checks_sent == 0
            && self.first_valid_at.is_none()
            && self.selected.as_ref().and_then(|s| s.pair).is_none()
            && !self.pairs.iter().enumerate().any(|(q, o)| {
                q != p && o.priority > self.pairs[p].priority && o.state != PairState::Failed
            })
    }

    fn remember_tid(&mut self, tid: TransactionId) {
        if self.recent_tids.len() >= RECENT_TIDS {
            self.recent_tids.pop_front();
        }
        self.recent_tids.push_back(tid);
    }

    fn drive_transactions(&mut self, now: Instant) {
        let mut timed_out = Vec::new();
        for (i, t) in self.txs.iter_mut().enumerate() {
            t.tx.handle_timeout(now);
            if let Some(bytes) = t.tx.poll_transmit() {
                if !t.cancelled {
                    self.transmits.push_back(Transmit {
                        source: t.source,
                        destination: t.destination,
                        contents: bytes.to_vec(),
                    });
                }
            }
            if t.tx.outcome() == Some(TransactionOutcome::TimedOut) {
                timed_out.push(i);
            }
        }
        for i in timed_out.into_iter().rev() {
            let t = self.txs.remove(i);
            self.remember_tid(t.tid);
            if let Purpose::Check {
                pair,
                use_candidate,
                ..
            } = t.purpose
            {
                if !t.cancelled {
                    self.check_failed(pair, use_candidate);
                }
            }
        }
    }

    fn check_failed(&mut self, p: usize, was_nomination: bool) {
        let Some(pair) = self.pairs.get_mut(p) else {
            return;
        };
        if pair.state != PairState::Succeeded || was_nomination {
            pair.state = PairState::Failed;
            pair.valid = false;
        }
        if self.nominating == Some(p) {
            self.nominating = None;
        }
    }

    // ------------------------------------------------------------ nomination

    /// The valid pair the controlling agent should nominate next (regular
    /// nomination), ignoring the wait for better pairs.
    fn nomination_candidate(&self) -> Option<usize> {
        if self.role != IceRole::Controlling
            || self.config.lite
            || self.config.aggressive_nomination
            || self.nominating.is_some()
            || !self.can_check()
        {
            return None;
        }
        let best = (0..self.pairs.len())
            .filter(|p| self.pairs[*p].valid && self.pairs[*p].state == PairState::Succeeded)
            .max_by_key(|p| self.pairs[*p].priority)?;
        if self.pairs[best].nominated {
            return None;
        }
        if let Some(s) = self.selected.as_ref().and_then(|s| s.pair) {
            if self.pairs[s].priority >= self.pairs[best].priority {
                return None;
            }
        }
        Some(best)
    }

    fn maybe_nominate(&mut self, now: Instant) {
        let Some(best) = self.nomination_candidate() else {
            return;
        };
        let prio = self.pairs[best].priority;
        let patience = self.patience(best);
        let pending_better = self.pairs.iter().any(|p| {
            p.priority > prio
                && match p.state {
                    PairState::Frozen | PairState::Waiting => true,
                    PairState::InProgress => !Self::given_up(p, patience, now),
                    PairState::Succeeded | PairState::Failed => false,
                }
        });
        let waited = self
            .first_valid_at
            .is_some_and(|f| now >= f + self.config.nomination_timeout);
        if !pending_better || waited {
            self.nominating = Some(best);
            self.enqueue_triggered(best, true);
        }
    }

    /// How long after its first check a better pair in progress may stay
    /// unanswered before the controlling agent stops waiting for it: the
    /// first retransmission (one RTO later: a hole often opens only for it,
    /// once the peer's own check went out) and then twice the round trip of
    /// the best valid pair `v` (at least [`MIN_PATIENCE`]). `None` (wait the
    /// whole nomination timeout) when that round trip is unknown.
    fn patience(&self, v: usize) -> Option<Duration> {
        let rto = self.config.check_retransmits.rto;
        self.pairs[v].rtt.map(|r| rto + (r * 2).max(MIN_PATIENCE))
    }

    /// A better pair in progress that is not worth waiting for: our checks
    /// of it went unanswered for `patience`, and the peer never sent a
    /// check on it (a check from the peer means the path may open, as when
    /// two NATs punch a hole). Two private LANs behind different NATs, a
    /// symmetric NAT: such pairs stay in progress until their checks time
    /// out (9.5 s), and would hold the nomination back for the whole
    /// nomination timeout.
    fn given_up(p: &Pair, patience: Option<Duration>, now: Instant) -> bool {
        match (patience, p.first_check_at) {
            (Some(wait), Some(first)) => !p.peer_checked && p.responses == 0 && now >= first + wait,
            _ => false,
        }
    }

    /// When the next better pair in progress will be given up on (see
    /// [`IceAgent::given_up`]), so that the nomination is not late.
    fn next_give_up(&self) -> Option<Instant> {
        let best = self.nomination_candidate()?;
        let wait = self.patience(best)?;
        let prio = self.pairs[best].priority;
        self.pairs
            .iter()
            .filter(|p| p.priority > prio && p.state == PairState::InProgress)
            .filter(|p| !p.peer_checked && p.responses == 0)
            .filter_map(|p| p.first_check_at.map(|f| f + wait))
            // Past ones are given up already; what still holds the
            // nomination back (a pair not checked yet) has its own timer.
            .filter(|t| self.last_now.is_some_and(|n| *t > n))
            .min()
    }

    fn nominate(&mut self, now: Instant, v: usize) {
        self.pairs[v].nominated = true;
        self.update_selected(now);
    }

    fn update_selected(&mut self, now: Instant) {
        let best = (0..self.pairs.len())
            .filter(|p| {
                let p = &self.pairs[*p];
                p.nominated && p.valid && p.state == PairState::Succeeded
            })
            .max_by_key(|p| self.pairs[*p].priority);
        let Some(best) = best else {
            return;
        };
        if self.selected.as_ref().and_then(|s| s.pair) == Some(best) {
            return;
        }
        let local = self.locals[self.pairs[best].local].clone();
        let remote = self.remotes[self.pairs[best].remote].clone();
        let jitter = self.consent_jitter();
        self.selected = Some(Selected {
            local: local.clone(),
            remote: remote.clone(),
            pair: Some(best),
            last_consent: now,
            next_consent: now + jitter,
            last_sent: now,
        });
        self.disconnected = false;
        self.prev_local = None;
        self.events
            .push_back(IceEvent::SelectedPair { local, remote });
    }

    fn consent_jitter(&mut self) -> Duration {
        self.config
            .consent_interval
            .mul_f64(self.rng.gen_range(0.8..1.2))
    }

    // ------------------------------------------------------------ consent and keepalive

    fn drive_selected(&mut self, now: Instant) {
        if self.config.lite {
            return;
        }
        let Some(sel) = &self.selected else {
            return;
        };
        if now >= sel.last_consent + self.config.consent_timeout {
            // After a restart the old path only bridges the gap: losing it
            // leaves the new check list running, and the agent fails only
            // when that one does (or its checking timeout passes).
            let bridging = sel.pair.is_none();
            self.selected = None;
            if !bridging {
                self.failed = true;
            }
            self.events.push_back(IceEvent::ConsentLost);
            return;
        }
        if now >= sel.last_consent + self.config.disconnected_timeout {
            self.disconnected = true;
        }
        let (source, destination) = (sel.local.base(), sel.remote.address());
        let local_priority = prflx_priority(&sel.local);
        if now >= sel.next_consent {
            if let Some((creds, key)) = self.remote_creds.clone() {
                let tid = TransactionId::random(&mut self.rng);
                if let Some(req) = self.build_request(tid, local_priority, false, &creds, &key) {
                    let route = (source, destination);
                    self.start_tx(now, tid, req, route, Purpose::Consent { key });
                }
                let jitter = self.consent_jitter();
                if let Some(sel) = &mut self.selected {
                    sel.next_consent = now + jitter;
                    sel.last_sent = now;
                }
            }
        }
        let Some(sel) = &mut self.selected else {
            return;
        };
        if now >= sel.last_sent + self.config.keepalive_interval {
            sel.last_sent = now;
            let tid = TransactionId::random(&mut self.rng);
            let mut buf = Vec::with_capacity(28);
            if let Ok(mut b) = MessageBuilder::new(
                &mut buf,
                MessageType::new(Method::BINDING, MessageClass::Indication),
                tid,
            ) {
                if b.add_fingerprint().is_ok() {
                    b.finish();
                    self.transmits.push_back(Transmit {
                        source,
                        destination,
                        contents: buf,
                    });
                }
            }
        }
    }

    /// NAT rebinding (not covered by RFC 8445/7675): a consent answer shows
    /// the peer now sees us at another address than our selected local
    /// candidate. The peer answers there but its own consent checks and
    /// data go to the dead old mapping, and a controlled peer may not switch
    /// by itself. The controlling agent renominates the selected pair: its
    /// check yields a valid pair with the new (peer-reflexive) local address,
    /// which is selected, and the nomination arrives from that address, so
    /// the peer selects it too.
    fn on_consent_mapped(&mut self, mapped: SocketAddr) {
        let Some(sel) = &self.selected else {
            return;
        };
        let Some(p) = sel.pair else {
            return;
        };
        if self.role != IceRole::Controlling
            || sel.local.kind() == CandidateKind::Relayed
            || sel.local.address() == mapped
            || self.nominating.is_some()
        {
            return;
        }
        self.nominating = Some(p);
        self.enqueue_triggered(p, true);
    }

    fn refresh_consent(&mut self, now: Instant, local_base: SocketAddr, remote: SocketAddr) {
        if let Some(sel) = &mut self.selected {
            if sel.local.base() == local_base && sel.remote.address() == remote {
                sel.last_consent = now;
                self.disconnected = false;
            }
        }
    }

    // ------------------------------------------------------------ gathering

    fn start_gathers(&mut self, now: Instant) {
        for (base, server) in std::mem::take(&mut self.pending_gathers) {
            let tid = TransactionId::random(&mut self.rng);
            let mut buf = Vec::with_capacity(28);
            let Ok(mut b) = MessageBuilder::new(
                &mut buf,
                MessageType::new(Method::BINDING, MessageClass::Request),
                tid,
            ) else {
                continue;
            };
            if b.add_fingerprint().is_err() {
                continue;
            }
            b.finish();
            self.start_tx(now, tid, buf, (base, server), Purpose::Gather { server });
        }
    }

    fn check_gathering_complete(&mut self) {
        if self.local_eoc
            && !self.gathering_complete_sent
            && self.pending_gathers.is_empty()
            && !self
                .txs
                .iter()
                .any(|t| matches!(t.purpose, Purpose::Gather { .. }))
        {
            self.gathering_complete_sent = true;
            self.events.push_back(IceEvent::GatheringComplete);
        }
    }

    // ------------------------------------------------------------ answering checks

    fn respond(
        &mut self,
        d: &Datagram<'_>,
        tid: TransactionId,
        error: Option<u16>,
        key: Option<&Key>,
    ) {
        let mut buf = Vec::with_capacity(80);
        let typ = MessageType::new(
            Method::BINDING,
            if error.is_some() {
                MessageClass::Error
            } else {
                MessageClass::Success
            },
        );
        let Ok(mut b) = MessageBuilder::new(&mut buf, typ, tid) else {
            return;
        };
        let added = match error {
            Some(code) => match ErrorCode::from_code(code) {
                Some(e) => b.add(&e).is_ok(),
                None => false,
            },
            None => b.add(&XorMappedAddress(d.source)).is_ok(),
        };
        if !added {
            return;
        }
        if let Some(key) = key {
            if b.add_message_integrity(key).is_err() {
                return;
            }
        }
        if b.add_fingerprint().is_err() {
            return;
        }
        b.finish();
        self.transmits.push_back(Transmit {
            source: d.destination,
            destination: d.source,
            contents: buf,
        });
    }

    /// RFC 8445 §7.3: authenticate, resolve role conflicts, answer, learn
    /// peer-reflexive candidates, trigger checks, note nominations.
    fn on_request(&mut self, now: Instant, d: &Datagram<'_>, msg: &Message<'_>) {
        let tid = msg.transaction_id();
        // RFC 8489 §9.1.3: no USERNAME or MESSAGE-INTEGRITY is a 400.
        let username = match msg.get::<Username>() {
            Ok(Some(u)) => u.as_str(),
            _ => return self.respond(d, tid, Some(400), None),
        };
        if !msg.has_integrity() {
            return self.respond(d, tid, Some(400), None);
        }
        let Some((ours, _theirs)) = username.split_once(':') else {
            return self.respond(d, tid, Some(400), None);
        };
        let key = if ours == self.local_creds.ufrag {
            self.local_key.clone()
        } else {
            match &self.prev_local {
                Some((c, k)) if c.ufrag == ours => k.clone(),
                _ => return self.respond(d, tid, Some(401), None),
            }
        };
        if msg.verify_integrity(&key).is_err() {
            return self.respond(d, tid, Some(401), None);
        }
        let Ok(Some(Priority(priority))) = msg.get::<Priority>() else {
            return self.respond(d, tid, Some(400), Some(&key));
        };
        let controlling = msg.get::<IceControlling>().ok().flatten();
        let controlled = msg.get::<IceControlled>().ok().flatten();
        if controlling.is_none() && controlled.is_none() {
            return self.respond(d, tid, Some(400), Some(&key));
        }
        let use_candidate = msg.has(AttrType::USE_CANDIDATE);
        // The local candidate the request reached (a host or relayed address).
        let reached = self
            .locals
            .iter()
            .position(|l| {
                l.address() == d.destination
                    && matches!(l.kind(), CandidateKind::Host | CandidateKind::Relayed)
            })
            .or_else(|| {
                // A server-reflexive candidate added without its host base.
                (0..self.locals.len()).find(|&i| {
                    self.locals[i].kind() == CandidateKind::ServerReflexive
                        && self.locals[i].base() == d.destination
                        && self.pairable(i)
                })
            });
        let Some(li) = reached else {
            return;
        };
        // Role conflict (§7.3.1.1).
        match (self.role, controlling, controlled) {
            (IceRole::Controlling, Some(IceControlling(theirs)), _) => {
                if self.tie_breaker >= theirs {
                    return self.respond(d, tid, Some(487), Some(&key));
                }
                self.set_role(IceRole::Controlled);
            }
            (IceRole::Controlled, _, Some(IceControlled(theirs))) => {
                if self.tie_breaker >= theirs && !self.config.lite {
                    self.set_role(IceRole::Controlling);
                } else {
                    return self.respond(d, tid, Some(487), Some(&key));
                }
            }
            _ => {}
        }
        self.respond(d, tid, None, Some(&key));

        // Remote candidate, peer-reflexive if unknown (§7.3.1.3).
        let ri = match self.remotes.iter().position(|r| r.address() == d.source) {
            Some(ri) => ri,
            // Answered above; nothing more to learn (see MAX_PRFLX_PER_IP).
            None if self.learnt_on(li, d.source) >= MAX_PRFLX_PER_IP => return,
            None => {
                let mut c = Candidate::peer_reflexive(d.source, d.source, priority);
                self.remote_prflx_count += 1;
                c.set_foundation(format!("prflx{}", self.remote_prflx_count));
                self.remotes.push(c);
                self.remotes.len() - 1
            }
        };
        let p = match self.find_pair(li, ri) {
            Some(p) => p,
            None => self.new_pair(li, ri, PairState::Waiting),
        };
        self.pairs[p].peer_checked = true;
        if self.config.lite {
            if use_candidate {
                let pair = &mut self.pairs[p];
                pair.state = PairState::Succeeded;
                pair.valid = true;
                self.nominate(now, p);
            }
            return;
        }
        // Triggered check (§7.3.1.4).
        match self.pairs[p].state {
            PairState::Succeeded => {}
            PairState::InProgress => {
                if !self.pairs[p].retriggered {
                    self.pairs[p].retriggered = true;
                    self.enqueue_triggered(p, false);
                }
            }
            PairState::Waiting | PairState::Frozen | PairState::Failed => {
                self.pairs[p].state = PairState::Waiting;
                self.enqueue_triggered(p, false);
            }
        }
        // Nomination by the controlling peer (§7.3.1.5).
        if use_candidate && self.role == IceRole::Controlled {
            if self.pairs[p].state == PairState::Succeeded {
                let v = self.pairs[p].valid_pair.unwrap_or(p);
                self.nominate(now, v);
            } else {
                self.pairs[p].nominate_on_success = true;
            }
        }
    }

    /// Peer-reflexive remote candidates learnt on local candidate `li` from
    /// `source`'s IP.
    fn learnt_on(&self, li: usize, source: SocketAddr) -> usize {
        self.pairs
            .iter()
            .filter(|p| {
                let r = &self.remotes[p.remote];
                p.local == li
                    && r.kind() == CandidateKind::PeerReflexive
                    && r.address().ip() == source.ip()
            })
            .count()
    }

    // ------------------------------------------------------------ responses

    /// A response: true when it answered one of the agent's transactions.
    fn on_response(&mut self, now: Instant, d: &Datagram<'_>, msg: &Message<'_>) -> bool {
        let tid = msg.transaction_id();
        let Some(i) = self.txs.iter().position(|t| t.tid == tid) else {
            return false;
        };
        let success = msg.typ().class == MessageClass::Success;
        // Authenticate answers to checks: a success must carry a valid
        // MESSAGE-INTEGRITY; an error's integrity is checked when present.
        if let Purpose::Check { key, .. } | Purpose::Consent { key } = &self.txs[i].purpose {
            let ok = if success || msg.has_integrity() {
                msg.verify_integrity(key).is_ok()
            } else {
                true
            };
            if !ok {
                return true;
            }
        }
        let t = self.txs.remove(i);
        self.remember_tid(tid);
        match t.purpose {
            Purpose::Gather { server } => {
                if success {
                    let mapped = match msg.get::<XorMappedAddress>() {
                        Ok(Some(XorMappedAddress(a))) => Some(a),
                        _ => msg.get::<MappedAddress>().ok().flatten().map(|m| m.0),
                    };
                    if let Some(mapped) = mapped {
                        let c = Candidate::server_reflexive(mapped, t.source, server.ip());
                        // A NAT-less host answers its own address: redundant.
                        if self.add_local_candidate(c).is_ok()
                            && !self.gathered.contains(&(mapped, t.source))
                        {
                            self.gathered.push((mapped, t.source));
                        }
                    }
                }
            }
            Purpose::Consent { .. } => {
                if success && d.source == t.destination && d.destination == t.source {
                    self.refresh_consent(now, t.source, t.destination);
                    if let Ok(Some(XorMappedAddress(mapped))) = msg.get::<XorMappedAddress>() {
                        self.on_consent_mapped(mapped);
                    }
                }
            }
            Purpose::Check {
                pair,
                use_candidate,
                controlling,
                prflx_priority,
                ..
            } => {
                let cancelled = t.cancelled;
                self.on_check_response(
                    now,
                    d,
                    msg,
                    &t,
                    CheckInfo {
                        pair,
                        use_candidate,
                        controlling,
                        prflx_priority,
                        cancelled,
                    },
                );
            }
        }
        true
    }

    fn on_check_response(
        &mut self,
        now: Instant,
        d: &Datagram<'_>,
        msg: &Message<'_>,
        t: &Tx,
        info: CheckInfo,
    ) {
        let p = info.pair;
        if p >= self.pairs.len() {
            return;
        }
        // Symmetric addresses (§7.2.5.2.1).
        if d.source != t.destination || d.destination != t.source {
            self.check_failed(p, info.use_candidate);
            return;
        }
        if msg.typ().class == MessageClass::Error {
            let code = msg.get::<ErrorCode>().ok().flatten().map(|e| e.code());
            if code == Some(487) {
                // §7.2.5.1: switch role unless we already did (a stale 487),
                // and check the pair again.
                let sent_as = if info.controlling {
                    IceRole::Controlling
                } else {
                    IceRole::Controlled
                };
                if self.role == sent_as {
                    self.set_role(match sent_as {
                        IceRole::Controlling => IceRole::Controlled,
                        IceRole::Controlled => IceRole::Controlling,
                    });
                }
                if self.pairs[p].state != PairState::Succeeded {
                    self.pairs[p].state = PairState::Waiting;
                }
                let renominate = info.use_candidate && self.role == IceRole::Controlling;
                self.enqueue_triggered(p, renominate);
            } else if !info.cancelled {
                self.check_failed(p, info.use_candidate);
            }
            return;
        }
        let Ok(Some(XorMappedAddress(mapped))) = msg.get::<XorMappedAddress>() else {
            self.check_failed(p, info.use_candidate);
            return;
        };
        self.pairs[p].responses += 1;
        // The valid pair (§7.2.5.3.2): the local candidate is the one whose
        // address is the mapped address, else a new peer-reflexive one
        // (§7.2.5.3.1).
        let base = t.source;
        let li = match self
            .locals
            .iter()
            .position(|l| l.address() == mapped && l.base() == base)
        {
            Some(li) => li,
            None => {
                let mut c = Candidate::peer_reflexive(mapped, base, info.prflx_priority);
                c.set_foundation(crate::candidate::compute_foundation(
                    CandidateKind::PeerReflexive,
                    base.ip(),
                    None,
                    c.transport(),
                ));
                self.locals.push(c);
                self.locals.len() - 1
            }
        };
        let ri = self.pairs[p].remote;
        let v = match self.find_pair(li, ri) {
            Some(v) => v,
            None => self.new_pair(li, ri, PairState::Succeeded),
        };
        let rtt = now.saturating_duration_since(t.sent_at);
        self.pairs[v].valid = true;
        self.pairs[v].state = PairState::Succeeded;
        self.pairs[v].rtt.get_or_insert(rtt);
        self.pairs[p].state = PairState::Succeeded;
        self.pairs[p].rtt.get_or_insert(rtt);
        self.pairs[p].valid_pair = Some(v);
        self.first_valid_at.get_or_insert(now);
        // Unfreeze the pairs of the same foundation (§7.2.5.3.3).
        let f = {
            let (a, b) = self.foundation_of(p);
            (a.to_string(), b.to_string())
        };
        for q in 0..self.pairs.len() {
            if self.pairs[q].state == PairState::Frozen
                && self.foundation_of(q) == (f.0.as_str(), f.1.as_str())
            {
                self.pairs[q].state = PairState::Waiting;
            }
        }
        self.refresh_consent(now, t.source, t.destination);
        if self.nominating == Some(p) || self.nominating == Some(v) {
            self.nominating = None;
        }
        let controlled_nominated = self.role == IceRole::Controlled
            && (self.pairs[p].nominate_on_success || self.pairs[v].nominate_on_success);
        if (info.use_candidate && info.controlling && self.role == IceRole::Controlling)
            || controlled_nominated
        {
            self.nominate(now, v);
        }
    }

    // ------------------------------------------------------------ state

    fn all_checks_done(&self) -> bool {
        self.triggered.is_empty()
            && self.nominating.is_none()
            && self
                .pairs
                .iter()
                .all(|p| matches!(p.state, PairState::Succeeded | PairState::Failed))
    }

    fn update_state(&mut self) {
        if !self.failed
            && !self.config.lite
            && self.selected.is_none()
            && self.remote_creds.is_some()
            && self.remote_eoc
            && self.gathering_complete_sent
            && self.pairs.iter().all(|p| p.state == PairState::Failed)
            && self.triggered.is_empty()
            && !self
                .txs
                .iter()
                .any(|t| matches!(t.purpose, Purpose::Check { .. }) && !t.cancelled)
        {
            self.failed = true;
        }
        let state = if self.failed {
            IceState::Failed
        } else if let Some(sel) = &self.selected {
            if sel.pair.is_none() {
                IceState::Checking
            } else if self.config.lite {
                IceState::Completed
            } else if self.disconnected {
                IceState::Disconnected
            } else if self.local_eoc && self.remote_eoc && self.all_checks_done() {
                IceState::Completed
            } else {
                IceState::Connected
            }
        } else if self.checking_since.is_some()
            || (self.remote_creds.is_some() && !self.pairs.is_empty())
        {
            IceState::Checking
        } else if self.disconnected {
            // The old path was lost during a restart that has not started
            // its checks yet.
            IceState::Disconnected
        } else {
            IceState::New
        };
        if state != self.state {
            self.state = state;
            self.events.push_back(IceEvent::StateChanged(state));
        }
    }
}

/// What a check transaction recorded when it was sent.
struct CheckInfo {
    pair: usize,
    use_candidate: bool,
    controlling: bool,
    prflx_priority: u32,
    cancelled: bool,
}
