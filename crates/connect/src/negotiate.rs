//! The negotiation over signaling, as a sans-IO machine: offer/answer,
//! trickled candidates, end-of-candidates, ICE restart and bye, around one
//! [`Session`].
//!
//! It owns the [`Session`] and speaks the signaling protocol of
//! `docs/signaling.md` through its types ([`ServerMsg`] in,
//! [`ClientMsg`] out), so a driver only moves bytes and time: datagrams to
//! and from sockets, signaling messages to and from a WebSocket, and
//! `now`. The rules it keeps:
//!
//! - Roles: the newcomer (who found a peer already in the room) offers and
//!   is the ICE controlling agent; the other answers and is controlled.
//! - Credentials travel in a minimal SDP offer/answer of one data channel.
//!   Candidates in a received description are used too.
//! - Trickle: each local candidate goes out as a `candidate` message
//!   tagged with our ufrag as soon as it is gathered, then
//!   `end-of-candidates`; none goes out before our description. The peer's
//!   candidates wait until its credentials are known; candidates of an
//!   older ICE generation (another ufrag) are dropped.
//! - Restart: when consent is lost or ICE fails after a path was selected
//!   and signaling is up, the controlling side restarts and sends its new
//!   credentials in an `ice-restart` message; the controlled side restarts
//!   on receipt and answers with its own. Either side may restart at any
//!   time ([`Negotiation::restart`]); the other answers. The old path keeps
//!   carrying data until a new one is selected.
//! - Deadlines: no path within `connect_timeout` of the start is a
//!   [`Failure::NoPath`]; a restart that finds no path within it closes the
//!   connection ([`CloseReason::IceFailed`]).

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_ice::{Candidate, IceState};
use p2p_proto::{Datagram, Handled, Machine, Output, Transmit};
use p2p_sdp::{DataChannelParams, Fingerprint, Pwd, SessionDescription, Setup, Ufrag};
use p2p_signaling::{ClientMsg, ErrorCode, IceCandidate, ServerMsg};

use crate::session::{PathEnd, Session, SessionError, SessionEvent};

/// The selected path: our candidate and the peer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedPath {
    /// Our end (a relayed end is the TURN server's relayed address).
    pub local: PathEnd,
    /// The peer's end.
    pub remote: PathEnd,
}

impl fmt::Display for SelectedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} <-> {} {}",
            self.local.kind, self.local.address, self.remote.kind, self.remote.address
        )
    }
}

/// Why a connection ended, once it was connected.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// This side closed it (`close`, or the connection was dropped).
    Local,
    /// The peer said bye.
    PeerClosed,
    /// The path lost consent (RFC 7675: the peer stopped answering) and no
    /// restart was possible (signaling gone, or the peer left the room).
    ConsentLost,
    /// A restart (after the path died, or asked for) found no path in time.
    IceFailed,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Local => "closed locally",
            CloseReason::PeerClosed => "the peer closed",
            CloseReason::ConsentLost => "the path lost consent and could not be restarted",
            CloseReason::IceFailed => "ICE found no path again after a restart",
        })
    }
}

impl std::error::Error for CloseReason {}

/// Why the negotiation failed before a path was selected.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// ICE checked every pair (or ran out of time) and none succeeded.
    NoPath {
        /// Our candidates, as `kind address`.
        local: Vec<String>,
        /// The peer's candidates, as `kind address`.
        remote: Vec<String>,
    },
    /// Relay-only, and every TURN server refused or did not answer.
    TurnRefused {
        /// The TURN server (the last one that failed).
        server: String,
        /// The STUN error code, `None` when it never answered.
        code: Option<u16>,
        /// What went wrong.
        reason: String,
    },
    /// The peer left the room (or said bye) before a path was found.
    PeerLeft {
        /// Its peer id.
        peer: String,
    },
    /// The signaling connection closed before a path was found.
    SignalingLost,
    /// Our ICE credentials cannot be written in SDP (a bug, or a
    /// configuration the agent should have refused).
    BadLocalDescription,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NoPath { local, remote } => write!(
                f,
                "no candidate pair succeeded; local candidates tried: [{}]; remote candidates: [{}]",
                local.join(", "),
                remote.join(", ")
            ),
            Failure::TurnRefused {
                server,
                code,
                reason,
            } => write!(
                f,
                "TURN server {server} refused the allocation: {}{reason}",
                code.map(|c| format!("{c} ")).unwrap_or_default()
            ),
            Failure::PeerLeft { peer } => write!(f, "peer {peer} left before a path was found"),
            Failure::SignalingLost => f.write_str("the signaling connection closed"),
            Failure::BadLocalDescription => {
                f.write_str("our ICE credentials cannot be written in SDP")
            }
        }
    }
}

impl std::error::Error for Failure {}

/// What the application should know (the driver turns these into its own
/// events).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiationEvent {
    /// A local candidate was gathered (and goes to the peer).
    LocalCandidate(String),
    /// The peer sent a candidate.
    RemoteCandidate(String),
    /// Every local candidate is out.
    GatheringComplete,
    /// A TURN allocation succeeded.
    TurnAllocated {
        /// The TURN server.
        server: SocketAddr,
        /// Our relayed address.
        relayed: SocketAddr,
    },
    /// A TURN server refused or did not answer.
    TurnFailed {
        /// The TURN server.
        server: String,
        /// The STUN error code, `None` when it never answered.
        code: Option<u16>,
        /// What went wrong.
        reason: String,
    },
    /// The ICE state changed.
    StateChanged(IceState),
    /// The first path was selected: connected.
    Connected(SelectedPath),
    /// Another path was selected (renomination or after a restart).
    PathChanged(SelectedPath),
    /// Consent was lost on the selected path; a restart may follow.
    Disconnected,
    /// An ICE restart began (new credentials were exchanged).
    Restarting,
    /// The signaling connection is gone; the path keeps working, but no
    /// restart is possible any more.
    SignalingLost,
    /// Application data from the peer.
    Data(Vec<u8>),
    /// The negotiation failed before a path was found. Nothing follows.
    Failed(Failure),
    /// The connection ended after it was connected. Nothing follows but
    /// the transmits of the closing session (the deletion of the TURN
    /// allocations), until [`Negotiation::is_closed`].
    Closed(CloseReason),
}

/// What [`Negotiation::poll_output`] hands out, in the order to act on it.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiationOutput {
    /// A datagram to send from one of our sockets.
    Transmit(Transmit),
    /// A message to the signaling server.
    Signal(ClientMsg),
    /// Something to tell the application.
    Event(NegotiationEvent),
}

impl Output for NegotiationOutput {
    fn into_transmit(self) -> Result<Transmit, Self> {
        match self {
            NegotiationOutput::Transmit(t) => Ok(t),
            other => Err(other),
        }
    }
}

/// How a [`Negotiation`] is set up.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiationConfig {
    /// The other peer's id on the signaling server.
    pub peer: String,
    /// Whether we offer and control (we joined a room the peer was in).
    pub controlling: bool,
    /// How long ICE may take to select a path, from the start and from
    /// each restart. Default 30 s.
    pub connect_timeout: Duration,
    /// Relay-only: a TURN refusal of every server is the failure to report.
    pub relay_only: bool,
    /// TURN servers the session was given (for the relay-only failure).
    pub turn_servers: usize,
    /// TURN servers that failed before the session was made (unresolvable,
    /// unreachable over TCP/TLS): `(server, code, reason)`.
    pub turn_failures: Vec<(String, Option<u16>, String)>,
}

impl NegotiationConfig {
    /// A negotiation with `peer`, with the defaults listed on each field.
    pub fn new(peer: impl Into<String>, controlling: bool) -> Self {
        NegotiationConfig {
            peer: peer.into(),
            controlling,
            connect_timeout: Duration::from_secs(30),
            relay_only: false,
            turn_servers: 0,
            turn_failures: Vec::new(),
        }
    }
}

/// A remote candidate or end-of-candidates that came before the peer's
/// credentials.
#[derive(Debug)]
enum Early {
    Candidate(IceCandidate),
    End,
}

/// A trickle message to the peer, held until our description is out.
#[derive(Debug)]
enum Trickle {
    Candidate { line: String, ufrag: String },
    End,
}

/// The offer/answer/trickle/restart machine around one [`Session`] (see the
/// module documentation for the rules).
///
/// It follows the house contract ([`p2p_proto::Machine`]): it starts at its
/// first [`handle_timeout`](Machine::handle_timeout) (the offerer sends its
/// offer then); datagrams go to [`handle_input`](Machine::handle_input),
/// signaling messages to [`Negotiation::handle_signal`]; after every call
/// drain [`poll_output`](Machine::poll_output): send transmits from their
/// sockets, [`NegotiationOutput::Signal`]s to the signaling server, and act
/// on the events. When the signaling connection closes, say so with
/// [`Negotiation::signaling_lost`].
#[derive(Debug)]
pub struct Negotiation {
    config: NegotiationConfig,
    session: Session,
    started: bool,
    /// The signaling connection is up (until [`Negotiation::signaling_lost`]).
    signaling: bool,
    remote_ufrag: Option<String>,
    early: Vec<Early>,
    /// Our offer or answer was sent.
    described: bool,
    trickle: Vec<Trickle>,
    connected: bool,
    /// The peer left the room: no restart is possible.
    peer_gone: bool,
    /// We restarted and wait for the peer's new credentials.
    restart_pending: bool,
    /// A restart must select a path by then.
    restart_deadline: Option<Instant>,
    connect_deadline: Option<Instant>,
    turn_failures: Vec<(String, Option<u16>, String)>,
    turn_allocated: usize,
    /// Failed or Closed was reported: only the session's closing goes on.
    finished: bool,
    out: VecDeque<NegotiationOutput>,
}

impl Negotiation {
    /// A negotiation around `session` (not started yet).
    pub fn new(config: NegotiationConfig, session: Session) -> Self {
        let turn_failures = config.turn_failures.clone();
        Negotiation {
            config,
            session,
            started: false,
            signaling: true,
            remote_ufrag: None,
            early: Vec::new(),
            described: false,
            trickle: Vec::new(),
            connected: false,
            peer_gone: false,
            restart_pending: false,
            restart_deadline: None,
            connect_deadline: None,
            turn_failures,
            turn_allocated: 0,
            finished: false,
            out: VecDeque::new(),
        }
    }

    /// The session (ICE statistics, the selected path).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Whether a path was selected at least once.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the session finished closing (its TURN allocations are
    /// deleted, or the wait for that timed out): nothing more will be sent.
    pub fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    /// A message from the signaling server. Only the peer's messages (and
    /// its leaving) matter; the rest is ignored.
    pub fn handle_signal(&mut self, now: Instant, msg: ServerMsg) {
        if self.finished {
            return;
        }
        self.start(now);
        self.signal(now, msg);
        self.pump(now);
    }

    /// The signaling connection closed: before a path this is a failure;
    /// after, the path keeps working but cannot be restarted.
    pub fn signaling_lost(&mut self, now: Instant) {
        if !self.signaling || self.finished {
            return;
        }
        self.signaling = false;
        if self.connected {
            self.event(NegotiationEvent::SignalingLost);
        } else {
            self.fail(now, Failure::SignalingLost);
        }
        self.pump(now);
    }

    /// Send application data over the selected path.
    pub fn send(&mut self, now: Instant, data: &[u8]) -> Result<(), SessionError> {
        let r = self.session.send(now, data);
        self.pump(now);
        r
    }

    /// Restart ICE from our side: new credentials to the peer in an
    /// `ice-restart` message, gathering again, new checks. Returns false
    /// when no restart can start: ours already waits for the peer's answer,
    /// or signaling is gone, or the peer left.
    pub fn restart(&mut self, now: Instant) -> bool {
        self.start(now);
        let started = self.restart_inner(now);
        self.pump(now);
        started
    }

    /// Close: say bye to the peer (when signaling is up) and close the
    /// session (its TURN allocations are deleted). Keep driving until
    /// [`Negotiation::is_closed`]. [`NegotiationEvent::Closed`] with
    /// [`CloseReason::Local`] is reported unless the negotiation already
    /// ended.
    pub fn close(&mut self, now: Instant) {
        if !self.finished {
            self.bye();
            self.finish(now, NegotiationEvent::Closed(CloseReason::Local));
        }
        self.pump(now);
    }

    fn start(&mut self, now: Instant) {
        if self.started {
            return;
        }
        self.started = true;
        self.connect_deadline = Some(now + self.config.connect_timeout);
        self.session.start(now);
        if self.config.controlling {
            self.describe(now, None);
        }
    }

    fn event(&mut self, e: NegotiationEvent) {
        self.out.push_back(NegotiationOutput::Event(e));
    }

    fn signal_peer(&mut self, msg: ClientMsg) {
        if self.signaling {
            self.out.push_back(NegotiationOutput::Signal(msg));
        }
    }

    fn bye(&mut self) {
        let to = self.config.peer.clone();
        self.signal_peer(ClientMsg::Bye { to, id: None });
    }

    /// Report the end (a failure or a close reason) once and close the
    /// session.
    fn finish(&mut self, now: Instant, e: NegotiationEvent) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.event(e);
        self.session.close(now);
    }

    fn fail(&mut self, now: Instant, f: Failure) {
        self.finish(now, NegotiationEvent::Failed(f));
    }

    fn closed(&mut self, now: Instant, r: CloseReason) {
        self.finish(now, NegotiationEvent::Closed(r));
    }

    /// Our offer (`offer` = None) or our answer to `offer`.
    fn describe(&mut self, now: Instant, offer: Option<&SessionDescription>) {
        let (u, p) = self.session.local_credentials();
        let (Ok(ufrag), Ok(pwd)) = (Ufrag::new(u), Pwd::new(p)) else {
            return self.fail(now, Failure::BadLocalDescription);
        };
        let session_id = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            u.hash(&mut h);
            h.finish() >> 2
        };
        // The session carries datagrams in the clear, with no DTLS yet: a
        // placeholder fingerprint of zeros.
        let Ok(fingerprint) = Fingerprint::new("sha-256", vec![0; 32]) else {
            return;
        };
        let setup = if offer.is_some() {
            Setup::Active
        } else {
            Setup::ActPass
        };
        let params = DataChannelParams::new(ufrag, pwd, fingerprint, setup, session_id);
        let to = self.config.peer.clone();
        let msg = match offer {
            None => ClientMsg::Offer {
                to,
                sdp: SessionDescription::offer_data_channel(&params).to_string(),
                id: None,
            },
            Some(o) => match SessionDescription::answer_data_channel(o, &params) {
                Ok(answer) => ClientMsg::Answer {
                    to,
                    sdp: answer.to_string(),
                    id: None,
                },
                Err(e) => {
                    tracing::warn!("cannot answer the peer's offer: {e}");
                    return;
                }
            },
        };
        self.signal_peer(msg);
        self.described = true;
        self.flush_trickle();
    }

    fn flush_trickle(&mut self) {
        if !self.described {
            return;
        }
        let to = self.config.peer.clone();
        for t in std::mem::take(&mut self.trickle) {
            let msg = match t {
                Trickle::Candidate { line, ufrag } => {
                    let mut candidate = IceCandidate::new(line);
                    candidate.sdp_mid = Some("0".to_owned());
                    candidate.sdp_m_line_index = Some(0);
                    candidate.username_fragment = Some(ufrag);
                    ClientMsg::Candidate {
                        to: to.clone(),
                        candidate,
                        id: None,
                    }
                }
                Trickle::End => ClientMsg::EndOfCandidates {
                    to: to.clone(),
                    id: None,
                },
            };
            self.signal_peer(msg);
        }
    }

    fn signal(&mut self, now: Instant, msg: ServerMsg) {
        let peer = self.config.peer.clone();
        match msg {
            ServerMsg::Offer { from, sdp } if from == peer => {
                if self.config.controlling {
                    tracing::warn!("an offer from {from} although we offered; ignored");
                    return;
                }
                let Some((offer, u, p)) = parse_description(&sdp) else {
                    tracing::warn!("an offer without ICE credentials; ignored");
                    return;
                };
                self.describe(now, Some(&offer));
                self.set_remote(now, u, p);
                self.description_candidates(now, &offer);
            }
            ServerMsg::Answer { from, sdp } if from == peer => {
                let Some((answer, u, p)) = parse_description(&sdp) else {
                    tracing::warn!("an answer without ICE credentials; ignored");
                    return;
                };
                self.set_remote(now, u, p);
                self.description_candidates(now, &answer);
            }
            ServerMsg::Candidate { from, candidate } if from == peer => {
                self.event(NegotiationEvent::RemoteCandidate(
                    candidate.candidate.clone(),
                ));
                if self.remote_ufrag.is_some() {
                    self.add_candidate(now, &candidate);
                } else {
                    self.early.push(Early::Candidate(candidate));
                }
            }
            ServerMsg::EndOfCandidates { from } if from == peer => {
                if self.remote_ufrag.is_some() {
                    self.session.end_of_remote_candidates(now);
                } else {
                    self.early.push(Early::End);
                }
            }
            ServerMsg::IceRestart { from, ufrag, pwd } if from == peer => {
                if self.restart_pending {
                    // The answer to our restart.
                    self.restart_pending = false;
                    self.set_remote(now, ufrag, pwd);
                } else {
                    self.event(NegotiationEvent::Restarting);
                    self.session.restart(now);
                    self.early.clear();
                    self.set_remote(now, ufrag, pwd);
                    self.restart_deadline
                        .get_or_insert(now + self.config.connect_timeout);
                    self.send_ice_restart();
                }
            }
            ServerMsg::Bye { from } if from == peer => {
                if self.connected {
                    self.closed(now, CloseReason::PeerClosed);
                } else {
                    self.fail(now, Failure::PeerLeft { peer: from });
                }
            }
            ServerMsg::PeerLeft { peer_id, .. } if peer_id == peer => {
                if self.connected {
                    self.peer_gone = true;
                } else {
                    self.fail(now, Failure::PeerLeft { peer: peer_id });
                }
            }
            ServerMsg::Error { code, message, .. } => {
                tracing::warn!("signaling error {code}: {message}");
                if !self.connected && code == ErrorCode::UnknownPeer {
                    self.fail(now, Failure::PeerLeft { peer });
                }
            }
            other => tracing::debug!("signaling: {} ignored", other.type_name()),
        }
    }

    /// The peer's ufrag and password, then the candidates that waited for
    /// them.
    fn set_remote(&mut self, now: Instant, ufrag: String, pwd: String) {
        if let Err(e) = self.session.set_remote_credentials(now, &ufrag, &pwd) {
            tracing::warn!("the peer's ICE credentials: {e}");
            return;
        }
        self.remote_ufrag = Some(ufrag);
        for e in std::mem::take(&mut self.early) {
            match e {
                Early::Candidate(c) => self.add_candidate(now, &c),
                Early::End => self.session.end_of_remote_candidates(now),
            }
        }
    }

    fn add_candidate(&mut self, now: Instant, c: &IceCandidate) {
        if let (Some(tag), Some(current)) = (&c.username_fragment, &self.remote_ufrag) {
            if tag != current {
                return; // an older generation
            }
        }
        // The one parse of the line: p2p-sdp's grammar.
        match p2p_sdp::Candidate::parse(&c.candidate) {
            Ok(sdp) => self.add_sdp_candidate(now, &sdp),
            Err(e) => tracing::debug!("remote candidate {:?}: {e}", c.candidate),
        }
    }

    /// A remote candidate as p2p-sdp parsed it (trickled, or in the peer's
    /// description), handed to the session typed.
    fn add_sdp_candidate(&mut self, now: Instant, sdp: &p2p_sdp::Candidate) {
        match Candidate::from_sdp(sdp) {
            Ok(c) => {
                if let Err(e) = self.session.add_remote_candidate(now, c) {
                    tracing::debug!("remote candidate {sdp}: {e}");
                }
            }
            // Resolving mDNS names is not done yet: the browser's host
            // candidate is left out (its srflx and relay ones still work).
            Err(p2p_ice::CandidateError::MdnsName(name)) => {
                tracing::debug!("remote candidate {sdp}: skipped (mDNS name {name}, not resolved)");
            }
            Err(e) => tracing::debug!("remote candidate {sdp}: {e}"),
        }
    }

    fn description_candidates(&mut self, now: Instant, sd: &SessionDescription) {
        let Some(dc) = sd.data_channel() else { return };
        for c in dc.candidates() {
            self.add_sdp_candidate(now, c);
        }
        if dc.end_of_candidates() {
            self.session.end_of_remote_candidates(now);
        }
    }

    fn send_ice_restart(&mut self) {
        let (u, p) = self.session.local_credentials();
        let msg = ClientMsg::IceRestart {
            to: self.config.peer.clone(),
            ufrag: u.to_owned(),
            pwd: p.to_owned(),
            id: None,
        };
        self.signal_peer(msg);
    }

    fn restart_inner(&mut self, now: Instant) -> bool {
        if self.finished || self.restart_pending || !self.signaling || self.peer_gone {
            return false;
        }
        self.restart_deadline
            .get_or_insert(now + self.config.connect_timeout);
        self.session.restart(now);
        self.remote_ufrag = None;
        self.early.clear();
        self.restart_pending = true;
        self.event(NegotiationEvent::Restarting);
        self.send_ice_restart();
        true
    }

    /// The selected path died: restart if we control and can signal, wait
    /// for the peer's restart if it controls, give up otherwise.
    fn path_died(&mut self, now: Instant) {
        if !self.signaling || self.peer_gone {
            return self.closed(now, CloseReason::ConsentLost);
        }
        self.restart_deadline
            .get_or_insert(now + self.config.connect_timeout);
        if self.config.controlling {
            self.restart_inner(now);
        }
    }

    fn no_path(&self) -> Failure {
        if self.config.relay_only && self.turn_allocated == 0 {
            if let Some((server, code, reason)) = self.turn_failures.last().cloned() {
                return Failure::TurnRefused {
                    server,
                    code,
                    reason,
                };
            }
        }
        let agent = self.session.agent();
        Failure::NoPath {
            local: agent.local_candidates().iter().map(describe).collect(),
            remote: agent.remote_candidates().iter().map(describe).collect(),
        }
    }

    fn session_event(&mut self, now: Instant, e: SessionEvent) {
        if self.finished {
            // Closing: what the session still reports is of no use.
            return;
        }
        match e {
            SessionEvent::LocalCandidate(c) => {
                // Written once, by p2p-sdp.
                let line = c.to_string();
                self.event(NegotiationEvent::LocalCandidate(line.clone()));
                let ufrag = self.session.local_credentials().0.to_owned();
                self.trickle.push(Trickle::Candidate { line, ufrag });
            }
            SessionEvent::GatheringComplete => {
                self.event(NegotiationEvent::GatheringComplete);
                self.trickle.push(Trickle::End);
            }
            SessionEvent::StateChanged(s) => {
                self.event(NegotiationEvent::StateChanged(s));
                if s == IceState::Failed {
                    if self.connected {
                        self.path_died(now);
                    } else {
                        let f = self.no_path();
                        self.fail(now, f);
                    }
                }
            }
            SessionEvent::SelectedPair { local, remote } => {
                let path = SelectedPath { local, remote };
                self.restart_pending = false;
                self.restart_deadline = None;
                if self.connected {
                    self.event(NegotiationEvent::PathChanged(path));
                } else {
                    self.connected = true;
                    self.event(NegotiationEvent::Connected(path));
                }
            }
            SessionEvent::TurnAllocated { server, relayed } => {
                self.turn_allocated += 1;
                self.event(NegotiationEvent::TurnAllocated { server, relayed });
            }
            SessionEvent::TurnFailed {
                server,
                code,
                reason,
            } => {
                self.event(NegotiationEvent::TurnFailed {
                    server: server.to_string(),
                    code,
                    reason: reason.clone(),
                });
                self.turn_failures.push((server.to_string(), code, reason));
                if self.config.relay_only
                    && !self.connected
                    && self.turn_allocated == 0
                    && self.turn_failures.len() >= self.config.turn_servers
                {
                    let f = self.no_path();
                    self.fail(now, f);
                }
            }
            SessionEvent::ConsentLost => {
                self.event(NegotiationEvent::Disconnected);
                if self.connected {
                    self.path_died(now);
                }
            }
            SessionEvent::Data(d) => self.event(NegotiationEvent::Data(d)),
            SessionEvent::Closed => {}
        }
    }

    /// Move the session's transmits and events into the output queue
    /// until nothing moves, and send what trickle allows.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(t) = self.session.poll_transmit() {
                moved = true;
                self.out
                    .push_back(NegotiationOutput::Transmit(proto_transmit(t)));
            }
            while let Some(e) = self.session.poll_event() {
                moved = true;
                self.session_event(now, e);
            }
            if !moved {
                break;
            }
        }
        self.flush_trickle();
    }
}

impl Machine for Negotiation {
    type Output = NegotiationOutput;

    fn handle_input(&mut self, now: Instant, datagram: Datagram<'_>) -> Handled {
        self.start(now);
        self.session.handle_input(now, session_datagram(datagram));
        self.pump(now);
        Handled::Taken
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.start(now);
        if !self.finished {
            if !self.connected && self.connect_deadline.is_some_and(|d| now >= d) {
                let f = self.no_path();
                self.fail(now, f);
            } else if self.restart_deadline.is_some_and(|d| now >= d) {
                self.closed(now, CloseReason::IceFailed);
            }
        }
        if self.session.poll_timeout().is_some_and(|t| t <= now) {
            self.session.handle_timeout(now);
        }
        self.pump(now);
    }

    fn poll_output(&mut self) -> Option<NegotiationOutput> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let deadline = if self.finished {
            None
        } else if self.connected {
            self.restart_deadline
        } else {
            self.connect_deadline
        };
        [self.session.poll_timeout(), deadline]
            .into_iter()
            .flatten()
            .min()
    }
}

fn describe(c: &Candidate) -> String {
    format!("{} {}", c.kind(), c.address())
}

/// The description and the ICE credentials of its data channel section.
fn parse_description(sdp: &str) -> Option<(SessionDescription, String, String)> {
    let sd: SessionDescription = sdp.parse().ok()?;
    let dc = sd.data_channel()?;
    let u = sd.ice_ufrag_for(dc)?.to_owned();
    let p = sd.ice_pwd_for(dc)?.to_owned();
    Some((sd, u, p))
}

// The session still speaks its own datagram types; these go when it speaks
// p2p-proto's.
fn session_datagram(d: Datagram<'_>) -> crate::Datagram<'_> {
    crate::Datagram {
        transport: d.transport,
        local: d.destination,
        remote: d.source,
        contents: d.contents,
    }
}

fn proto_transmit(t: crate::Transmit) -> Transmit {
    Transmit::new(t.transport, t.source, t.destination, t.contents)
}
