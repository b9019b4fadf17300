//! What a [`Negotiation`](super::Negotiation) hands out and is made of.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use p2p_datachannel::ChannelEvent;
use p2p_dtls::{DtlsVersion, Fingerprint};
use p2p_ice::IceState;
use p2p_proto::{Output, Transmit, Transport};
use p2p_signaling::ClientMsg;

use crate::session::PathEnd;

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
            "{} {} <-> {} {}{}",
            self.local.kind,
            self.local.address,
            self.remote.kind,
            self.remote.address,
            if self.local.transport == Transport::Tcp {
                " over TCP"
            } else {
                ""
            }
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
    /// The encrypted connection broke (a DTLS or SCTP failure after it was
    /// up); the words say what.
    Failed(String),
    /// Relay-only, and the TCP or TLS connection to the TURN server that
    /// relayed the path ended (the server closed it, or it broke), taking
    /// the allocation with it, and no relay was left to go on over; the
    /// words say which server and why.
    RelayLost(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Local => "closed locally",
            CloseReason::PeerClosed => "the peer closed",
            CloseReason::ConsentLost => "the path lost consent and could not be restarted",
            CloseReason::IceFailed => "ICE found no path again after a restart",
            CloseReason::Failed(why) | CloseReason::RelayLost(why) => why,
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
    /// The peer's description cannot set up DTLS: no fingerprint, or an
    /// `a=setup` that decides no role (the words say which).
    BadRemoteDescription(String),
    /// The peer's DTLS certificate matched no fingerprint it signaled:
    /// nothing it sent was delivered.
    FingerprintMismatch,
    /// The DTLS handshake or the SCTP association failed or timed out.
    Secure(String),
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
            Failure::BadRemoteDescription(why) => write!(f, "the peer's description: {why}"),
            Failure::FingerprintMismatch => f.write_str(
                "the peer's DTLS certificate does not match the fingerprint it signaled",
            ),
            Failure::Secure(why) => write!(f, "the encrypted connection failed: {why}"),
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
    /// A TURN server at its quota sent us to another (300 Try Alternate);
    /// over TCP or TLS the driver connects to `to` now (see
    /// [`SessionEvent::TurnRedirected`](crate::SessionEvent::TurnRedirected)).
    TurnRedirected {
        /// The server that redirected.
        from: SocketAddr,
        /// The server now used.
        to: SocketAddr,
        /// The transport, the same for both.
        transport: Transport,
        /// The ALTERNATE-DOMAIN of a redirect over TLS.
        domain: Option<String>,
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
    /// Connected: ICE selected a path, DTLS is up with the right peer and
    /// the data channels' association is established.
    Connected(SelectedPath),
    /// Another path was selected (renomination or after a restart).
    PathChanged(SelectedPath),
    /// Consent was lost on the selected path; a restart may follow.
    Disconnected,
    /// An ICE restart began (new credentials were exchanged).
    Restarting,
    /// The signaling connection is gone for good; the path keeps working,
    /// but no restart is possible any more.
    SignalingLost,
    /// The signaling connection closed; the driver reconnects
    /// ([`NegotiationConfig::reconnect`]).
    SignalingInterrupted,
    /// Signaling is back after [`NegotiationEvent::SignalingInterrupted`].
    SignalingRestored,
    /// DTLS is up with the peer whose certificate matched this fingerprint.
    Secured {
        /// The fingerprint the peer's certificate matched.
        remote_fingerprint: Fingerprint,
        /// The DTLS version spoken.
        version: DtlsVersion,
    },
    /// A data channel event (channels opened, messages, buffered amounts,
    /// channels closed). [`ChannelEvent::Connected`] is not passed on:
    /// [`NegotiationEvent::Connected`] says it.
    Channel(ChannelEvent),
    /// The negotiation failed before a path was found. Nothing follows.
    Failed(Failure),
    /// Birthday probing began, found a path or gave up (issue 14).
    HardNat(crate::session::HardNatEvent),
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
    /// Sockets to bind for birthday probing (then
    /// [`Negotiation::sockets_bound`]), or to close.
    Sockets(crate::session::ProbeSockets),
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
    /// The driver reconnects to signaling, and the peer may too: a lost
    /// connection is an interruption ([`Negotiation::signaling_interrupted`](super::Negotiation::signaling_interrupted)),
    /// and the peer's leaving the room (or being unknown to the server)
    /// is not final before a deadline. Default false.
    pub reconnect: bool,
    /// With [`NegotiationConfig::reconnect`]: how long a peer that left
    /// before we connected has to come back. Default 10 s.
    pub peer_grace: Duration,
    /// Announce [`HARD_NAT_OPTION`](crate::HARD_NAT_OPTION) in our
    /// `a=ice-options` (default true). Only when both peers announce it
    /// may they use what goes beyond standard ICE between them (see
    /// [`Negotiation::hard_nat_agreed`](crate::Negotiation::hard_nat_agreed));
    /// false is the switch that turns it all off.
    pub hard_nat: bool,
    /// The driver's mDNS socket (see [`crate::mdns`]): the peer's
    /// candidates named `<name>.local` are resolved through it. `None`
    /// (the default): such candidates are left out.
    pub mdns: Option<SocketAddr>,
    /// How long a name is asked for before its candidates are left out.
    /// Default [`crate::mdns::DEFAULT_TIMEOUT`] (5 s).
    pub mdns_timeout: Duration,
    /// Hide our host addresses behind generated `<uuid>.local` names
    /// (draft-ietf-mmusic-mdns-ice-candidates), answering the LAN's mDNS
    /// queries for them on [`NegotiationConfig::mdns`] (which must be the
    /// mDNS port, joined to the group); related addresses are signalled
    /// as `0.0.0.0`. Default off (browsers do it by default).
    pub mdns_hide: bool,
    /// The seed of the generated names (`None`: OS entropy).
    pub mdns_seed: Option<u64>,
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
            reconnect: false,
            peer_grace: Duration::from_secs(10),
            hard_nat: true,
            mdns: None,
            mdns_timeout: crate::mdns::DEFAULT_TIMEOUT,
            mdns_hide: false,
            mdns_seed: None,
        }
    }
}
