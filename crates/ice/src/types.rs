//! The values that cross the agent's API: outputs and events, states,
//! roles, credentials, errors and statistics. Datagrams in and transmits out
//! are `p2p_proto`'s.

use std::fmt;

use p2p_proto::Transmit;

use crate::candidate::Candidate;
use crate::pair::PairState;

/// One output of the agent, from [`poll_output`](p2p_proto::Machine::poll_output).
///
/// The agent hands its outputs out in the order it made them: a transmit
/// made before an event comes out before it (the answer to a check before
/// the [`IceEvent::SelectedPair`] its nomination caused, a
/// [`IceEvent::StateChanged`] after the event that changed the state).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceOutput {
    /// A datagram to send from its `source`: a local base (a host address,
    /// or a relayed address, in which case the caller wraps it for its TURN
    /// server). Always UDP.
    Transmit(Transmit),
    /// Something the application should know.
    Event(IceEvent),
}

impl IceOutput {
    /// The transmit, if this is one.
    pub fn transmit(self) -> Option<Transmit> {
        match self {
            IceOutput::Transmit(t) => Some(t),
            IceOutput::Event(_) => None,
        }
    }

    /// The event, if this is one.
    pub fn event(self) -> Option<IceEvent> {
        match self {
            IceOutput::Event(e) => Some(e),
            IceOutput::Transmit(_) => None,
        }
    }
}

impl p2p_proto::Output for IceOutput {
    fn into_transmit(self) -> Result<Transmit, Self> {
        match self {
            IceOutput::Transmit(t) => Ok(t),
            other => Err(other),
        }
    }
}

/// The role of the agent (RFC 8445 §6.1.1).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IceRole {
    /// Nominates the pair (the offerer, or the full agent facing an ICE-lite peer).
    Controlling,
    /// Follows the peer's nomination.
    Controlled,
}

impl fmt::Display for IceRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IceRole::Controlling => "controlling",
            IceRole::Controlled => "controlled",
        })
    }
}

/// The connection state of the agent.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IceState {
    /// Nothing to check yet (no remote credentials or no pair).
    New,
    /// Checks are running and no pair is selected (or, after a restart, the
    /// old pair still carries data while the new checks run).
    Checking,
    /// A pair is selected; checks may still run.
    Connected,
    /// A pair is selected, both sides signalled end-of-candidates and every
    /// check is done (for ICE-lite: as soon as a pair is selected).
    Completed,
    /// The selected pair had no consent response for a while; it may come
    /// back.
    Disconnected,
    /// Every pair failed after end-of-candidates on both sides, the checking
    /// timeout passed, or consent was lost. Only [`restart`](crate::IceAgent::restart)
    /// leaves this state.
    Failed,
}

impl fmt::Display for IceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IceState::New => "new",
            IceState::Checking => "checking",
            IceState::Connected => "connected",
            IceState::Completed => "completed",
            IceState::Disconnected => "disconnected",
            IceState::Failed => "failed",
        })
    }
}

/// What the application should know.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceEvent {
    /// A local candidate to signal to the peer (every accepted local
    /// candidate: those the caller added and the server-reflexive ones the
    /// agent gathered; peer-reflexive ones are not signalled).
    LocalCandidate(Candidate),
    /// Local gathering is over: the caller called
    /// [`end_of_local_candidates`](crate::IceAgent::end_of_local_candidates)
    /// and the agent's own server-reflexive requests are done. Signal
    /// end-of-candidates to the peer.
    GatheringComplete,
    /// The state changed.
    StateChanged(IceState),
    /// The role changed (role conflict, or a lite peer).
    RoleChanged(IceRole),
    /// A new pair is selected: [`send`](crate::IceAgent::send) now uses it.
    ///
    /// Emitted again for the same pair when one of its candidates, learnt
    /// as peer-reflexive, is signalled since: the same addresses, now with
    /// the signalled kind (a browser's host candidate whose check came
    /// before its trickled candidate reads `host`, not `prflx`).
    SelectedPair {
        /// Our candidate (send from its base).
        local: Candidate,
        /// The peer's candidate.
        remote: Candidate,
    },
    /// No consent response on the selected pair for the consent timeout
    /// (RFC 7675 §5.1): the agent stopped sending on it.
    ConsentLost,
}

/// A username fragment and password (RFC 8445 §5.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// `ice-ufrag`.
    pub ufrag: String,
    /// `ice-pwd`.
    pub pwd: String,
}

/// A call the agent refused.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IceError {
    /// A ufrag or password is empty, longer than 256 characters, not made of
    /// ice-chars, or cannot be prepared as a STUN short-term key.
    #[error("bad ICE credentials")]
    BadCredentials,
    /// The candidate has the same address and base as a local candidate of
    /// higher or equal priority (RFC 8445 §5.1.3).
    #[error("redundant candidate")]
    Redundant,
    /// The configuration excludes this candidate (relay-only policy, ICE-lite
    /// with a non-host candidate, or a local peer-reflexive candidate).
    #[error("candidate excluded by the configuration")]
    ExcludedByPolicy,
    /// The peer already signalled end-of-candidates (RFC 8838 §13).
    #[error("candidate after end-of-candidates")]
    AfterEndOfCandidates,
    /// No pair is selected (or consent was lost on it): there is nothing to
    /// send application data on.
    #[error("not connected: no selected pair")]
    NotConnected,
}

/// One pair of the check list, for display and tests.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairStats {
    /// Our candidate.
    pub local: Candidate,
    /// The peer's candidate.
    pub remote: Candidate,
    /// The pair priority.
    pub priority: u64,
    /// The state.
    pub state: PairState,
    /// In the valid list.
    pub valid: bool,
    /// Nominated.
    pub nominated: bool,
    /// The selected pair.
    pub selected: bool,
    /// Binding requests sent on it (not counting retransmissions).
    pub checks_sent: u32,
    /// Success responses received for its checks.
    pub responses_received: u32,
}

/// A snapshot of the agent: candidates and the check list.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceStats {
    /// The state.
    pub state: IceState,
    /// The role.
    pub role: IceRole,
    /// Local candidates (peer-reflexive ones included).
    pub local_candidates: Vec<Candidate>,
    /// Remote candidates (peer-reflexive ones included).
    pub remote_candidates: Vec<Candidate>,
    /// The check list and valid pairs, highest priority first.
    pub pairs: Vec<PairStats>,
}

impl fmt::Display for IceStats {
    /// The check list, one pair a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "state {} role {}", self.state, self.role)?;
        for p in &self.pairs {
            writeln!(
                f,
                "{:>5} {:<11} {:>20} {} {} -> {} {}{}{} checks {} ok {}",
                if p.selected { "*" } else { "" },
                p.state.to_string(),
                p.priority,
                p.local.kind(),
                p.local.address(),
                p.remote.kind(),
                p.remote.address(),
                if p.valid { " valid" } else { "" },
                if p.nominated { " nominated" } else { "" },
                p.checks_sent,
                p.responses_received,
            )?;
        }
        Ok(())
    }
}
