//! What [`Rooms`](super::Rooms) counts, for metrics.

use crate::msg::{ErrorCode, ServerMsg};

/// The relayed message types, in the order of [`RoomStats::relayed`].
pub(crate) const RELAYED_TYPES: [&str; 6] = [
    "offer",
    "answer",
    "candidate",
    "end-of-candidates",
    "ice-restart",
    "bye",
];

/// Counts kept by [`Rooms`](super::Rooms) since it was created.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomStats {
    /// Connections accepted ([`Rooms::connect_from`](super::Rooms::connect_from)).
    pub connections_accepted: u64,
    /// Connections refused because [`Limits::max_connections`](super::Limits::max_connections) were open.
    pub connections_refused: u64,
    /// Connections closed for idleness.
    pub idle_closed: u64,
    /// Frames and messages handled (text, binary, parsed), refused ones included.
    pub messages_received: u64,
    /// Messages relayed to a peer, by type, in the order of
    /// [`RoomStats::RELAYED_TYPES`].
    pub relayed: [u64; 6],
    /// Error replies, by code, in the order of [`ErrorCode::ALL`].
    pub errors: [u64; ErrorCode::ALL.len()],
    /// Messages that carried TURN credentials (`welcome` or `joined`).
    pub credentials_issued: u64,
    /// TURN credentials withheld by the per-address rate limit.
    pub credentials_withheld_rate: u64,
    /// TURN credentials withheld because the policy wants a token and the
    /// room needs none.
    pub credentials_withheld_token: u64,
    /// Joins refused because their address tried too many wrong room
    /// tokens ([`Limits::token_guesses_per_minute`](super::Limits::token_guesses_per_minute)).
    pub joins_refused_guessing: u64,
    /// Connections that took back an earlier peer id (`resume`).
    pub resumed: u64,
    /// Messages sent to a peer of another node (cluster mode).
    pub cluster_relayed: u64,
    /// Messages from other nodes delivered here (cluster mode).
    pub cluster_delivered: u64,
    /// Messages from other nodes refused: the addressee is not here, or
    /// shares no room with the sender.
    pub cluster_refused: u64,
}

impl Default for RoomStats {
    fn default() -> RoomStats {
        RoomStats {
            connections_accepted: 0,
            connections_refused: 0,
            idle_closed: 0,
            messages_received: 0,
            relayed: [0; 6],
            errors: [0; ErrorCode::ALL.len()],
            credentials_issued: 0,
            credentials_withheld_rate: 0,
            joins_refused_guessing: 0,
            credentials_withheld_token: 0,
            resumed: 0,
            cluster_relayed: 0,
            cluster_delivered: 0,
            cluster_refused: 0,
        }
    }
}

impl RoomStats {
    /// The wire names of the relayed types counted in [`RoomStats::relayed`].
    pub const RELAYED_TYPES: [&'static str; 6] = RELAYED_TYPES;

    /// The relayed messages of type `type_name` (`offer`, `candidate`, ...).
    pub fn relayed_of(&self, type_name: &str) -> u64 {
        RELAYED_TYPES
            .iter()
            .position(|t| *t == type_name)
            .map_or(0, |i| self.relayed[i])
    }

    /// The error replies with `code`.
    pub fn errors_of(&self, code: ErrorCode) -> u64 {
        ErrorCode::ALL
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.errors[i])
    }

    /// Counts the relayed messages and errors among `out`.
    pub(crate) fn count(&mut self, out: &[(super::ConnId, ServerMsg)]) {
        for (_, msg) in out {
            let relayed = match msg {
                ServerMsg::Offer { .. } => Some(0),
                ServerMsg::Answer { .. } => Some(1),
                ServerMsg::Candidate { .. } => Some(2),
                ServerMsg::EndOfCandidates { .. } => Some(3),
                ServerMsg::IceRestart { .. } => Some(4),
                ServerMsg::Bye { .. } => Some(5),
                ServerMsg::Error { code, .. } => {
                    if let Some(i) = ErrorCode::ALL.iter().position(|c| c == code) {
                        self.errors[i] += 1;
                    }
                    None
                }
                _ => None,
            };
            if let Some(i) = relayed {
                self.relayed[i] += 1;
            }
        }
    }
}
