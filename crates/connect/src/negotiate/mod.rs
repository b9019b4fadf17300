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
//! - Credentials, the fingerprint of our DTLS certificate, `a=setup`
//!   (offer `actpass`, answer `active` by default: the answerer is the
//!   DTLS client) and the SCTP parameters travel in an SDP offer/answer of
//!   one data channel, as a browser writes it. Candidates in a received
//!   description are used too.
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
//! - Connected: once ICE selected a path, DTLS is up with a peer whose
//!   certificate matched its fingerprint, and the data channels'
//!   association is established.
//! - Deadlines: not connected within `connect_timeout` of the start is a
//!   failure ([`Failure::NoPath`] when ICE found no path); a restart that
//!   finds no path within it closes the connection
//!   ([`CloseReason::IceFailed`]).

mod candidates;
mod hardnat;
mod restart;
mod resume;
mod sdp;
mod types;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use p2p_datachannel::{ChannelEvent, ChannelId, ChannelOptions};
use p2p_dtls::Setup;
use p2p_ice::{Candidate, IceState};
use p2p_proto::{Datagram, Handled, Machine, Transport};
use p2p_signaling::{ClientMsg, ErrorCode, IceCandidate, ServerMsg};

use crate::mdns::{MdnsConfig, MdnsResolver, MdnsResponder};
use crate::session::{SecureEnd, Session, SessionError, SessionEvent, SessionOutput};

/// How long a bye waits for the peer's SHUTDOWN over the path (which
/// delivers the last of its data first, for at most a second).
pub const BYE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a peer that left signaling has to answer a consent check
/// before the path is given up (see [`Session::verify_peer`]).
const PEER_VERIFY: std::time::Duration = std::time::Duration::from_secs(1);
use sdp::{local_description, parse_description, DescriptionError, RemoteDescription};
pub use types::{
    CloseReason, Failure, NegotiationConfig, NegotiationEvent, NegotiationOutput, SelectedPath,
};

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
    /// Both descriptions announce [`crate::HARD_NAT_OPTION`].
    hard_nat_agreed: bool,
    /// Our NAT's mapping behaviour, for the peer once agreed (`hardnat.rs`).
    nat: hardnat::NatSignal,
    started: bool,
    /// The signaling connection is up (until [`Negotiation::signaling_lost`]).
    signaling: bool,
    remote_ufrag: Option<String>,
    early: Vec<Early>,
    /// Our offer or answer was sent, with this `a=setup`.
    described: Option<Setup>,
    /// The path ICE selected (the first one before connected).
    path: Option<SelectedPath>,
    /// The data channels' association is up.
    established: bool,
    trickle: Vec<Trickle>,
    connected: bool,
    /// The peer left the room: no restart is possible.
    peer_gone: bool,
    /// We restarted and wait for the peer's new credentials.
    restart_pending: bool,
    /// A restart must select a path by then.
    restart_deadline: Option<Instant>,
    /// The peer said bye: the connection ends when its SHUTDOWN arrives,
    /// or by then.
    bye_deadline: Option<Instant>,
    connect_deadline: Option<Instant>,
    turn_failures: Vec<(String, Option<u16>, String)>,
    turn_allocated: usize,
    /// Failed or Closed was reported: only the session's closing goes on.
    finished: bool,
    /// Signaling is down and the driver reconnects.
    interrupted: bool,
    /// The peer left (or is unknown to the server) before we connected:
    /// it has until then to come back.
    peer_deadline: Option<Instant>,
    /// The selected path died and no restart could start yet.
    path_dead: bool,
    /// The trickle messages of the current ICE generation as sent, to send
    /// again after signaling was interrupted.
    history: Vec<ClientMsg>,
    /// The resolver of the peer's mDNS names, when the driver has an mDNS
    /// socket ([`NegotiationConfig::mdns`]).
    names: Option<MdnsResolver>,
    /// Our host addresses' names, when hidden ([`NegotiationConfig::mdns_hide`]).
    hider: Option<MdnsResponder>,
    /// Candidates that wait for their name to resolve.
    unresolved: Vec<candidates::Unresolved>,
    /// The peer's end-of-candidates, held while names resolve.
    end_held: bool,
    out: VecDeque<NegotiationOutput>,
}

impl Negotiation {
    /// A negotiation around `session` (not started yet).
    pub fn new(config: NegotiationConfig, session: Session) -> Self {
        let turn_failures = config.turn_failures.clone();
        let names = config.mdns.map(|local| {
            MdnsResolver::new(MdnsConfig::new(local).with_timeout(config.mdns_timeout))
        });
        let hider = config
            .mdns
            .filter(|_| config.mdns_hide)
            .map(|local| MdnsResponder::new(local, config.mdns_seed));
        Negotiation {
            config,
            session,
            hard_nat_agreed: false,
            nat: hardnat::NatSignal::default(),
            started: false,
            signaling: true,
            remote_ufrag: None,
            early: Vec::new(),
            described: None,
            path: None,
            established: false,
            trickle: Vec::new(),
            connected: false,
            peer_gone: false,
            restart_pending: false,
            restart_deadline: None,
            bye_deadline: None,
            connect_deadline: None,
            turn_failures,
            turn_allocated: 0,
            finished: false,
            interrupted: false,
            peer_deadline: None,
            path_dead: false,
            history: Vec::new(),
            names,
            hider,
            unresolved: Vec::new(),
            end_held: false,
            out: VecDeque::new(),
        }
    }

    /// Whether both peers announced [`crate::HARD_NAT_OPTION`] (ours
    /// with [`NegotiationConfig::hard_nat`], theirs in their description):
    /// only then may anything beyond standard ICE be sent to the peer.
    /// False before the peer's description arrived, and always with a
    /// browser or another stack.
    pub fn hard_nat_agreed(&self) -> bool {
        self.hard_nat_agreed
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

    /// Open a data channel (see [`Session::open_channel`]).
    pub fn open_channel(
        &mut self,
        now: Instant,
        options: ChannelOptions,
    ) -> Result<Option<ChannelId>, SessionError> {
        let r = self.session.open_channel(now, options);
        self.pump(now);
        r
    }

    /// Send one message on a channel (see [`Session::send`]).
    pub fn send(
        &mut self,
        now: Instant,
        channel: ChannelId,
        data: &[u8],
        binary: bool,
    ) -> Result<(), SessionError> {
        let r = self.session.send(now, channel, data, binary);
        self.pump(now);
        r
    }

    /// Send one message without moving the layers (see
    /// [`Session::send_deferred`]); [`flush`](Self::flush) after the last.
    pub fn send_deferred(
        &mut self,
        now: Instant,
        channel: ChannelId,
        data: &[u8],
        binary: bool,
    ) -> Result<(), SessionError> {
        self.session.send_deferred(now, channel, data, binary)
    }

    /// Move what [`send_deferred`](Self::send_deferred) left waiting.
    pub fn flush(&mut self, now: Instant) {
        self.session.flush(now);
        self.pump(now);
    }

    /// The application took `bytes` of `channel`'s messages (see
    /// [`Session::release`]).
    pub fn release(&mut self, now: Instant, channel: ChannelId, bytes: usize) {
        self.session.release(now, channel, bytes);
        self.pump(now);
    }

    /// Datagrams that arrived together, in order (see
    /// [`Session::handle_inputs`]): what `handle_input` on each would do,
    /// with the layers moved once after the batch.
    pub fn handle_inputs<'a>(
        &mut self,
        now: Instant,
        datagrams: impl IntoIterator<Item = Datagram<'a>>,
    ) {
        self.start(now);
        // The answers to our mDNS questions (and the LAN's questions for our
        // names) are the negotiation's, as in `handle_input`; the rest go to
        // the session in one batch.
        let (hider, names, out) = (&mut self.hider, &mut self.names, &mut self.out);
        self.session.handle_inputs(
            now,
            datagrams
                .into_iter()
                .filter(|d| candidates::names_input(hider, names, out, now, d) == Handled::NotMine),
        );
        self.pump(now);
    }

    /// The sockets a [`NegotiationOutput::Sockets`] bind request asked
    /// for (see [`Session::sockets_bound`]).
    pub fn sockets_bound(&mut self, now: Instant, sockets: Vec<std::net::SocketAddr>) {
        self.session.sockets_bound(now, sockets);
        self.pump(now);
    }

    /// Close one channel (see [`Session::close_channel`]).
    pub fn close_channel(&mut self, now: Instant, channel: ChannelId) -> Result<(), SessionError> {
        let r = self.session.close_channel(now, channel);
        self.pump(now);
        r
    }

    /// The driver's TCP/TLS connection to a TURN server could not be
    /// opened or was lost (see [`Session::turn_connection_failed`]).
    pub fn turn_connection_failed(
        &mut self,
        now: Instant,
        server: SocketAddr,
        transport: Transport,
        reason: &str,
    ) {
        self.session
            .turn_connection_failed(now, server, transport, reason);
        self.pump(now);
    }

    /// The session, to read or set buffered amounts of channels.
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
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
        // The session starts at its first handle_timeout.
        self.session.handle_timeout(now);
        self.names_timeout(now);
        if self.config.controlling {
            self.describe(now, None);
        }
    }

    fn event(&mut self, e: NegotiationEvent) {
        self.out.push_back(NegotiationOutput::Event(e));
    }

    fn signal_peer_recorded(&mut self, msg: ClientMsg) {
        self.history.push(msg.clone());
        self.signal_peer(msg);
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
    fn describe(&mut self, now: Instant, offer: Option<&RemoteDescription>) {
        let (sdp, setup) = match local_description(&self.session, offer, self.config.hard_nat) {
            Ok(d) => d,
            Err(DescriptionError::Local) => return self.fail(now, Failure::BadLocalDescription),
            Err(DescriptionError::Remote(why)) => {
                return self.fail(now, Failure::BadRemoteDescription(why))
            }
        };
        let to = self.config.peer.clone();
        let msg = match offer {
            None => ClientMsg::Offer { to, sdp, id: None },
            Some(_) => ClientMsg::Answer { to, sdp, id: None },
        };
        self.signal_peer(msg);
        self.described = Some(setup);
        self.flush_trickle();
    }

    /// The peer's offer or answer: its credentials, candidates, and what
    /// DTLS and SCTP need.
    fn take_description(&mut self, now: Instant, d: RemoteDescription) {
        let ours = self.described.unwrap_or(Setup::ActPass);
        match d.security(self.config.controlling, ours) {
            Ok(security) => self.session.set_remote_security(now, security),
            Err(DescriptionError::Remote(why)) => {
                return self.fail(now, Failure::BadRemoteDescription(why));
            }
            Err(DescriptionError::Local) => return self.fail(now, Failure::BadLocalDescription),
        }
        self.hard_nat_agreed = self.config.hard_nat && d.hard_nat;
        self.nat_flush();
        self.set_remote(now, d.ufrag.clone(), d.pwd.clone());
        self.description_candidates(now, &d);
    }

    fn flush_trickle(&mut self) {
        if self.described.is_none() {
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
            self.signal_peer_recorded(msg);
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
                if self.described.is_some() {
                    // The same offer again: the offerer lost signaling
                    // and may have missed our answer and candidates.
                    if let Ok(offer) = parse_description(&sdp, true) {
                        if self.remote_ufrag.as_deref() == Some(offer.ufrag.as_str())
                            && !self.connected
                        {
                            if let Ok((sdp, _)) =
                                local_description(&self.session, Some(&offer), self.config.hard_nat)
                            {
                                let to = self.config.peer.clone();
                                self.signal_peer(ClientMsg::Answer { to, sdp, id: None });
                                for m in self.history.clone() {
                                    self.signal_peer(m);
                                }
                            }
                            return;
                        }
                    }
                    // A browser restarts ICE with a new offer: not spoken
                    // here (p2p-connect restarts with ice-restart).
                    tracing::warn!("a second offer from {from}; ignored");
                    return;
                }
                match parse_description(&sdp, true) {
                    Ok(offer) => {
                        self.describe(now, Some(&offer));
                        if !self.finished {
                            self.take_description(now, offer);
                        }
                    }
                    Err(e) => self.fail(now, Failure::BadRemoteDescription(why_of(e))),
                }
            }
            ServerMsg::Answer { from, sdp } if from == peer => {
                if !self.config.controlling || self.remote_ufrag.is_some() {
                    tracing::warn!("an answer from {from} we did not ask for; ignored");
                    return;
                }
                match parse_description(&sdp, false) {
                    Ok(answer) => self.take_description(now, answer),
                    Err(e) => self.fail(now, Failure::BadRemoteDescription(why_of(e))),
                }
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
                    self.remote_end(now);
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
                    self.history.clear();
                    self.early.clear();
                    self.forget_unresolved();
                    self.set_remote(now, ufrag, pwd);
                    self.restart_deadline
                        .get_or_insert(now + self.config.connect_timeout);
                    self.send_ice_restart();
                }
            }
            ServerMsg::Bye { from } if from == peer => {
                if self.connected {
                    // The peer's SCTP SHUTDOWN follows the last of its data
                    // over the path, which may be slower than signaling:
                    // wait for it (it ends the connection), a little.
                    self.bye_deadline.get_or_insert(now + BYE_GRACE);
                } else {
                    self.fail(now, Failure::PeerLeft { peer: from });
                }
            }
            ServerMsg::PeerLeft { peer_id, .. } if peer_id == peer => {
                if self.connected || self.config.reconnect {
                    // With reconnection, the peer may come back (its
                    // resume keeps its id): the deadlines bound the wait.
                    self.peer_gone = true;
                    if self.connected {
                        // Its process may have died without a word (the
                        // server saw its connection drop): find out now,
                        // not after 30 s of consent. A peer that only lost
                        // signaling answers.
                        self.session.verify_peer(now, PEER_VERIFY);
                    } else {
                        self.peer_deadline
                            .get_or_insert(now + self.config.peer_grace);
                    }
                } else {
                    self.fail(now, Failure::PeerLeft { peer: peer_id });
                }
            }
            ServerMsg::PeerJoined { peer: p, .. } if p.id == peer => {
                // The peer came back (or reconnected to another node):
                // what we sent meanwhile may be lost.
                self.peer_gone = false;
                self.peer_deadline = None;
                self.resync(now);
            }
            ServerMsg::Error { code, message, .. } => {
                tracing::warn!("signaling error {code}: {message}");
                if !self.connected && code == ErrorCode::UnknownPeer {
                    if self.config.reconnect {
                        self.peer_deadline
                            .get_or_insert(now + self.config.peer_grace);
                    } else {
                        self.fail(now, Failure::PeerLeft { peer });
                    }
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
                Early::End => self.remote_end(now),
            }
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
                // Written once, by p2p-sdp (a host address hidden behind
                // its name when asked).
                let line = self.signalled_line(&c);
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
                self.path_dead = false;
                if self.connected {
                    self.event(NegotiationEvent::PathChanged(path));
                } else {
                    self.path = Some(path);
                    self.maybe_connected();
                }
            }
            SessionEvent::TurnAllocated { server, relayed } => {
                self.turn_allocated += 1;
                self.event(NegotiationEvent::TurnAllocated { server, relayed });
            }
            SessionEvent::TurnRedirected {
                from,
                to,
                transport,
                domain,
            } => self.event(NegotiationEvent::TurnRedirected {
                from,
                to,
                transport,
                domain,
            }),
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
            SessionEvent::Secured {
                remote_fingerprint,
                version,
            } => self.event(NegotiationEvent::Secured {
                remote_fingerprint,
                version,
            }),
            SessionEvent::Channel(ChannelEvent::Connected) => {
                self.established = true;
                self.maybe_connected();
            }
            SessionEvent::Channel(e) => self.event(NegotiationEvent::Channel(e)),
            SessionEvent::NatMapping(r) => self.nat_learnt(r),
            SessionEvent::PortPrediction(at) => self.nat_predicted(at),
            SessionEvent::HardNat(e) => self.event(NegotiationEvent::HardNat(e)),
            SessionEvent::Ended(why) => self.secure_ended(now, why),
            _ => {}
        }
    }

    /// Connected once ICE selected a path and the association is up (in
    /// either order: the controlled side may be asked for DTLS on a pair it
    /// checks before it selects one).
    fn maybe_connected(&mut self) {
        if self.connected || !self.established {
            return;
        }
        if let Some(path) = self.path.take() {
            self.connected = true;
            self.event(NegotiationEvent::Connected(path));
        }
    }

    /// The encrypted connection ended from the far side, or failed.
    fn secure_ended(&mut self, now: Instant, why: SecureEnd) {
        if self.connected {
            let reason = match why {
                SecureEnd::PeerClosed => CloseReason::PeerClosed,
                SecureEnd::PeerSilent => CloseReason::ConsentLost,
                other => CloseReason::Failed(secure_words(&other)),
            };
            return self.closed(now, reason);
        }
        let failure = match why {
            SecureEnd::FingerprintMismatch => Failure::FingerprintMismatch,
            SecureEnd::PeerClosed => Failure::PeerLeft {
                peer: self.config.peer.clone(),
            },
            other => Failure::Secure(secure_words(&other)),
        };
        self.fail(now, failure);
    }

    /// Move the session's transmits and events into the output queue
    /// until nothing moves, and send what trickle allows.
    fn pump(&mut self, now: Instant) {
        loop {
            while let Some(o) = self.session.poll_output() {
                match o {
                    SessionOutput::Transmit(t) => {
                        self.out.push_back(NegotiationOutput::Transmit(t))
                    }
                    SessionOutput::Sockets(r) => self.out.push_back(NegotiationOutput::Sockets(r)),
                    SessionOutput::Event(e) => self.session_event(now, e),
                }
            }
            // Names that resolved become candidates: the session speaks again.
            if !self.pump_names(now) {
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
        if self.names_input(now, &datagram) == Handled::NotMine {
            let _ = self.session.handle_input(now, datagram);
        }
        self.pump(now);
        Handled::Taken
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.start(now);
        if !self.finished {
            if !self.connected && self.connect_deadline.is_some_and(|d| now >= d) {
                let f = if self.path.is_some() {
                    Failure::Secure(
                        "ICE found a path, but DTLS or the data channels' association did not \
                         come up in time"
                            .to_owned(),
                    )
                } else {
                    self.no_path()
                };
                self.fail(now, f);
            } else if !self.connected && self.peer_deadline.is_some_and(|d| now >= d) {
                let peer = self.config.peer.clone();
                self.fail(now, Failure::PeerLeft { peer });
            } else if self.bye_deadline.is_some_and(|d| now >= d) {
                self.closed(now, CloseReason::PeerClosed);
            } else if self.restart_deadline.is_some_and(|d| now >= d) {
                let r = if self.path_dead && (self.interrupted || self.peer_gone) {
                    CloseReason::ConsentLost
                } else {
                    CloseReason::IceFailed
                };
                self.closed(now, r);
            }
        }
        if self.session.poll_timeout().is_some_and(|t| t <= now) {
            self.session.handle_timeout(now);
        }
        self.names_timeout(now);
        self.pump(now);
    }

    fn poll_output(&mut self) -> Option<NegotiationOutput> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let deadline = if self.finished {
            None
        } else if self.connected {
            [self.restart_deadline, self.bye_deadline]
                .into_iter()
                .flatten()
                .min()
        } else {
            [self.connect_deadline, self.peer_deadline]
                .into_iter()
                .flatten()
                .min()
        };
        let names = self.names.as_ref().and_then(Machine::poll_timeout);
        [self.session.poll_timeout(), deadline, names]
            .into_iter()
            .flatten()
            .min()
    }
}

fn describe(c: &Candidate) -> String {
    format!("{} {}", c.kind(), c.address())
}

/// The words of a failed description.
fn why_of(e: DescriptionError) -> String {
    match e {
        DescriptionError::Remote(why) => why,
        DescriptionError::Local => "our own description could not be written".to_owned(),
    }
}

/// The words of a secure end that is not a close by the peer.
fn secure_words(why: &SecureEnd) -> String {
    match why {
        SecureEnd::PeerClosed => "the peer closed".to_owned(),
        SecureEnd::FingerprintMismatch => {
            "the peer's DTLS certificate does not match the fingerprint it signaled".to_owned()
        }
        SecureEnd::PeerSilent => "the peer fell silent".to_owned(),
        SecureEnd::Failed(w) => w.clone(),
    }
}
