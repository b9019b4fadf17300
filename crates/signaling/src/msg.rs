//! The wire messages: JSON objects with a `"type"` tag, one per WebSocket text frame.

use serde::{Deserialize, Deserializer, Serialize};

/// The protocol version this crate speaks. The server announces it in
/// [`ServerMsg::Welcome`]; a client may state it in [`ClientMsg::Join`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest accepted ICE candidate string, in bytes.
pub const MAX_CANDIDATE_LEN: usize = 1024;

/// A message from a client to the signaling server.
///
/// Every variant takes an optional request `id` (a JSON number) that the
/// server echoes in the [`ServerMsg::Error`] or reply caused by that message.
/// Unknown fields are ignored, so that later minor revisions can add fields.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum ClientMsg {
    /// Enter a room. The server answers [`ServerMsg::Joined`] and tells the
    /// peers already there with [`ServerMsg::PeerJoined`].
    Join {
        /// Room name: 1 to 128 bytes, no control characters.
        room: String,
        /// Access token, required when the server configures one for this room
        /// or a global one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// A display name shown to the other peers (at most 64 bytes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Ask the peers met in this room to hide their host addresses
        /// behind mDNS names (draft-ietf-mmusic-mdns-ice-candidates), as
        /// browsers hide theirs; shown to them as [`PeerInfo::hide_hosts`].
        /// Absent means false.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        hide_hosts: bool,
        /// The protocol version the client speaks; absent means 1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
        /// Request id echoed in the reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// Leave one room, or every room the connection is in when `room` is absent.
    Leave {
        /// The room to leave.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// Request id echoed in the reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// An SDP offer for peer `to` (also used for browser ICE restarts: an
    /// offer created with `iceRestart: true`).
    Offer {
        /// The peer id of the receiver.
        to: String,
        /// The session description, as `RTCSessionDescription.sdp`.
        sdp: String,
        /// Request id echoed in an error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// An SDP answer for peer `to`.
    Answer {
        /// The peer id of the receiver.
        to: String,
        /// The session description, as `RTCSessionDescription.sdp`.
        sdp: String,
        /// Request id echoed in an error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// One trickled ICE candidate for peer `to`; the fields are those of
    /// `RTCIceCandidate.toJSON()`.
    Candidate {
        /// The peer id of the receiver.
        to: String,
        /// The candidate, as `RTCIceCandidate.candidate`
        /// (`candidate:842163049 1 udp 1677729535 203.0.113.7 45664 typ srflx ...`).
        #[serde(flatten)]
        candidate: IceCandidate,
        /// Request id echoed in an error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// No more candidates will follow for this ICE generation.
    EndOfCandidates {
        /// The peer id of the receiver.
        to: String,
        /// Request id echoed in an error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// New ICE credentials for peer `to` without an SDP round (agents that do
    /// not speak SDP, such as `p2p-connect`). Browsers restart ICE with a new
    /// [`ClientMsg::Offer`] instead.
    IceRestart {
        /// The peer id of the receiver.
        to: String,
        /// The new ICE username fragment.
        ufrag: String,
        /// The new ICE password.
        pwd: String,
        /// Request id echoed in an error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// The session with peer `to` is over (the peers stay in the room).
    Bye {
        /// The peer id of the receiver.
        to: String,
        /// Request id echoed in an error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// Application-level keepalive; the server answers [`ServerMsg::Pong`].
    Ping {
        /// Echoed in the pong.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// Take back the peer id of an earlier connection (after the server,
    /// or the node of a cluster, went away): send the `resumeToken` of its
    /// `welcome` (or `resumed`) before any `join`, then join the rooms
    /// again. The server answers [`ServerMsg::Resumed`] or the error
    /// `resume-refused` (then the connection keeps the id of its welcome).
    Resume {
        /// The resume token.
        token: String,
        /// Request id echoed in the reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
}

/// The `type` values a client may send, in protocol order.
pub const CLIENT_TYPES: &[&str] = &[
    "join",
    "leave",
    "offer",
    "answer",
    "candidate",
    "end-of-candidates",
    "ice-restart",
    "bye",
    "ping",
    "resume",
];

/// The `type` values a server may send, in protocol order.
pub const SERVER_TYPES: &[&str] = &[
    "welcome",
    "joined",
    "left",
    "peer-joined",
    "peer-left",
    "offer",
    "answer",
    "candidate",
    "end-of-candidates",
    "ice-restart",
    "bye",
    "pong",
    "error",
    "resumed",
];

impl ClientMsg {
    /// Parses one text frame. The error says which [`ErrorCode`] to answer
    /// with and carries the request id when one could be read.
    pub fn from_json(text: &str) -> Result<ClientMsg, ParseError> {
        parse_tagged(text, CLIENT_TYPES)
    }

    /// Serialises to one text frame.
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// The request id the client attached, if any.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            ClientMsg::Join { id, .. }
            | ClientMsg::Leave { id, .. }
            | ClientMsg::Offer { id, .. }
            | ClientMsg::Answer { id, .. }
            | ClientMsg::Candidate { id, .. }
            | ClientMsg::EndOfCandidates { id, .. }
            | ClientMsg::IceRestart { id, .. }
            | ClientMsg::Bye { id, .. }
            | ClientMsg::Ping { id }
            | ClientMsg::Resume { id, .. } => *id,
        }
    }

    /// The value of the `type` tag.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMsg::Join { .. } => "join",
            ClientMsg::Leave { .. } => "leave",
            ClientMsg::Offer { .. } => "offer",
            ClientMsg::Answer { .. } => "answer",
            ClientMsg::Candidate { .. } => "candidate",
            ClientMsg::EndOfCandidates { .. } => "end-of-candidates",
            ClientMsg::IceRestart { .. } => "ice-restart",
            ClientMsg::Bye { .. } => "bye",
            ClientMsg::Ping { .. } => "ping",
            ClientMsg::Resume { .. } => "resume",
        }
    }
}

/// A message from the signaling server to a client.
///
/// Relayed messages mirror the client's with `to` replaced by `from`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum ServerMsg {
    /// First message on every connection.
    Welcome {
        /// The protocol version of the server.
        version: u32,
        /// This connection's peer id, unique on the server.
        peer_id: String,
        /// STUN/TURN servers to use, in the shape of `RTCIceServer`. Under
        /// the server's default credential policy, TURN entries (those with
        /// credentials) come later, in [`ServerMsg::Joined`].
        ice_servers: Vec<IceServer>,
        /// Set when the server could have put TURN credentials here and did
        /// not: why relaying through its TURN server will not work.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay_unavailable: Option<RelayUnavailable>,
        /// A token to take this peer id back on a new connection
        /// ([`ClientMsg::Resume`]), when the server offers resuming.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
    },
    /// The join succeeded.
    Joined {
        /// The room joined.
        room: String,
        /// This connection's peer id (as in the welcome).
        peer_id: String,
        /// The peers that were already in the room.
        peers: Vec<PeerInfo>,
        /// The STUN/TURN servers to use from now on, TURN credentials
        /// included: they replace the welcome's list. Absent: keep the
        /// welcome's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ice_servers: Option<Vec<IceServer>>,
        /// Set when this join got no TURN credentials: why relaying through
        /// the server's TURN will not work.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay_unavailable: Option<RelayUnavailable>,
        /// Only on the joins of a connection that resumed
        /// ([`ClientMsg::Resume`]): `true` when the peer id was still a
        /// member of the room (its membership survived: a peer that joined
        /// meanwhile saw it listed), `false` when it was not (it was reaped or left:
        /// the others got `peer-left` and now `peer-joined`, as for a
        /// newcomer, and someone else may have joined meanwhile). Absent:
        /// the connection did not resume, or the server is older.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resumed: Option<bool>,
        /// The request id of the join.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// The leave succeeded.
    Left {
        /// The room left.
        room: String,
        /// The request id of the leave.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// Another peer entered a room this connection is in.
    PeerJoined {
        /// The room.
        room: String,
        /// The newcomer.
        peer: PeerInfo,
    },
    /// A peer left a room this connection is in (leave, disconnect or idle timeout).
    PeerLeft {
        /// The room.
        room: String,
        /// The peer that left.
        peer_id: String,
    },
    /// A relayed offer.
    Offer {
        /// The sender's peer id.
        from: String,
        /// The session description.
        sdp: String,
    },
    /// A relayed answer.
    Answer {
        /// The sender's peer id.
        from: String,
        /// The session description.
        sdp: String,
    },
    /// A relayed ICE candidate.
    Candidate {
        /// The sender's peer id.
        from: String,
        /// The candidate as the sender gave it.
        #[serde(flatten)]
        candidate: IceCandidate,
    },
    /// The sender has gathered all its candidates.
    EndOfCandidates {
        /// The sender's peer id.
        from: String,
    },
    /// The sender restarted ICE with new credentials.
    IceRestart {
        /// The sender's peer id.
        from: String,
        /// The new ICE username fragment.
        ufrag: String,
        /// The new ICE password.
        pwd: String,
    },
    /// The sender ended the session.
    Bye {
        /// The sender's peer id.
        from: String,
    },
    /// Answer to [`ClientMsg::Ping`].
    Pong {
        /// The id of the ping.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// Answer to [`ClientMsg::Resume`]: the connection has the earlier
    /// peer id again (and is in no room yet).
    Resumed {
        /// The peer id taken back.
        peer_id: String,
        /// A fresh resume token for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
        /// The request id of the resume.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// A request failed; the connection stays open.
    Error {
        /// A stable machine-readable code.
        code: ErrorCode,
        /// A human-readable explanation (not stable).
        message: String,
        /// The request id of the offending message, if it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
}

impl ServerMsg {
    /// Parses one text frame.
    pub fn from_json(text: &str) -> Result<ServerMsg, ParseError> {
        parse_tagged(text, SERVER_TYPES)
    }

    /// Serialises to one text frame.
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// Builds an error reply.
    pub fn error(code: ErrorCode, message: impl Into<String>, id: Option<u64>) -> ServerMsg {
        ServerMsg::Error {
            code,
            message: message.into(),
            id,
        }
    }

    /// The value of the `type` tag.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerMsg::Welcome { .. } => "welcome",
            ServerMsg::Joined { .. } => "joined",
            ServerMsg::Left { .. } => "left",
            ServerMsg::PeerJoined { .. } => "peer-joined",
            ServerMsg::PeerLeft { .. } => "peer-left",
            ServerMsg::Offer { .. } => "offer",
            ServerMsg::Answer { .. } => "answer",
            ServerMsg::Candidate { .. } => "candidate",
            ServerMsg::EndOfCandidates { .. } => "end-of-candidates",
            ServerMsg::IceRestart { .. } => "ice-restart",
            ServerMsg::Bye { .. } => "bye",
            ServerMsg::Pong { .. } => "pong",
            ServerMsg::Error { .. } => "error",
            ServerMsg::Resumed { .. } => "resumed",
        }
    }
}

/// An ICE candidate as a browser's `RTCIceCandidate.toJSON()` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// The RFC 8839 `candidate-attribute` without the `a=`:
    /// `candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...`.
    pub candidate: String,
    /// The media stream identification tag, when the sender has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The index of the media description, when the sender has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
    /// The ICE ufrag the candidate belongs to (tells ICE generations apart).
    #[serde(default, alias = "ufrag", skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

impl IceCandidate {
    /// A candidate with only the candidate string set.
    pub fn new(candidate: impl Into<String>) -> IceCandidate {
        IceCandidate {
            candidate: candidate.into(),
            sdp_mid: None,
            sdp_m_line_index: None,
            username_fragment: None,
        }
    }

    /// Checks what a relay can check without parsing the candidate: it is not
    /// empty, at most [`MAX_CANDIDATE_LEN`] bytes, starts with `candidate:`
    /// and holds no line break or other control character.
    pub fn validate(&self) -> Result<(), &'static str> {
        let c = &self.candidate;
        if c.is_empty() {
            return Err("empty candidate");
        }
        if c.len() > MAX_CANDIDATE_LEN {
            return Err("candidate longer than 1024 bytes");
        }
        let prefix = c.get(..10).unwrap_or("");
        if !prefix.eq_ignore_ascii_case("candidate:") {
            return Err("candidate must start with \"candidate:\"");
        }
        if c.chars().any(char::is_control) {
            return Err("candidate holds a control character");
        }
        if let Some(mid) = &self.sdp_mid {
            if mid.len() > 64 {
                return Err("sdpMid longer than 64 bytes");
            }
        }
        if let Some(ufrag) = &self.username_fragment {
            if ufrag.len() > 256 {
                return Err("usernameFragment longer than 256 bytes");
            }
        }
        Ok(())
    }
}

/// A peer as listed in [`ServerMsg::Joined`] and [`ServerMsg::PeerJoined`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer id, to put in `to`.
    pub id: String,
    /// The display name it joined with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// It asks the peers it meets to hide their host addresses behind
    /// mDNS names (`hideHosts` of its `join`); absent means false. A
    /// request, not a rule: a peer that cannot answer mDNS queries signals
    /// its addresses as they are.
    #[serde(
        default,
        rename = "hideHosts",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub hide_hosts: bool,
}

/// A STUN or TURN server, in the shape of WebRTC's `RTCIceServer`, so a browser
/// can pass the welcome's list to `new RTCPeerConnection({iceServers})` as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, `turns:...` URLs.
    /// Serialised as an array; a single string is accepted on input.
    #[serde(deserialize_with = "string_or_seq")]
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl IceServer {
    /// A server without credentials (STUN).
    pub fn new(urls: impl IntoIterator<Item = impl Into<String>>) -> IceServer {
        IceServer {
            urls: urls.into_iter().map(Into::into).collect(),
            username: None,
            credential: None,
        }
    }

    /// A server with credentials (TURN).
    pub fn with_credentials(
        urls: impl IntoIterator<Item = impl Into<String>>,
        username: impl Into<String>,
        credential: impl Into<String>,
    ) -> IceServer {
        IceServer {
            urls: urls.into_iter().map(Into::into).collect(),
            username: Some(username.into()),
            credential: Some(credential.into()),
        }
    }
}

fn string_or_seq<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Why a `welcome` or `joined` carries no TURN credentials (its
/// `relayUnavailable` field), so that a client can say why relaying will
/// not work instead of waiting for it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelayUnavailable {
    /// The server hands out no TURN credentials at all: it runs no TURN, or
    /// its TURN users are static ones it does not share, or its policy is
    /// never to hand them out.
    NotOffered,
    /// The server hands out TURN credentials only with joins of rooms that
    /// need a token, and this room needs none.
    TokenRequired,
    /// Too many credentials went to the client's address lately (a per
    /// address rate limit); a later connection gets them again.
    RateLimited,
    /// A reason this version of the crate does not know (from a newer server).
    #[serde(other)]
    Other,
}

impl RelayUnavailable {
    /// The reason as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayUnavailable::NotOffered => "not-offered",
            RelayUnavailable::TokenRequired => "token-required",
            RelayUnavailable::RateLimited => "rate-limited",
            RelayUnavailable::Other => "other",
        }
    }
}

impl std::fmt::Display for RelayUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stable error codes of [`ServerMsg::Error`], serialised in kebab-case.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The frame is not a JSON object.
    BadJson,
    /// The `type` is missing or not one this server knows.
    UnknownType,
    /// A field is missing, has the wrong type or an invalid value.
    BadRequest,
    /// The message needs a room and the connection is in none (or not in the one named).
    NotInRoom,
    /// The connection is already in that room.
    AlreadyJoined,
    /// The room holds its maximum number of peers.
    RoomFull,
    /// The connection is in its maximum number of rooms, or the server in its maximum.
    TooManyRooms,
    /// The frame is larger than the server accepts.
    MessageTooLarge,
    /// The connection sends too fast; the message was dropped.
    RateLimited,
    /// The room's (or the server's) token is missing or wrong.
    Unauthorized,
    /// No peer with that id shares a room with the sender.
    UnknownPeer,
    /// The client asked for a protocol version the server does not speak.
    VersionMismatch,
    /// The connection was idle too long and is being closed.
    IdleTimeout,
    /// A `resume` token is invalid or expired, or came after a `join`.
    ResumeRefused,
    /// A code this version of the crate does not know (from a newer server).
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// Every code, in documentation order (without [`ErrorCode::Other`]).
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::BadRequest,
        ErrorCode::NotInRoom,
        ErrorCode::AlreadyJoined,
        ErrorCode::RoomFull,
        ErrorCode::TooManyRooms,
        ErrorCode::MessageTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Unauthorized,
        ErrorCode::UnknownPeer,
        ErrorCode::VersionMismatch,
        ErrorCode::IdleTimeout,
        ErrorCode::ResumeRefused,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad-json",
            ErrorCode::UnknownType => "unknown-type",
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::NotInRoom => "not-in-room",
            ErrorCode::AlreadyJoined => "already-joined",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::TooManyRooms => "too-many-rooms",
            ErrorCode::MessageTooLarge => "message-too-large",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownPeer => "unknown-peer",
            ErrorCode::VersionMismatch => "version-mismatch",
            ErrorCode::IdleTimeout => "idle-timeout",
            ErrorCode::ResumeRefused => "resume-refused",
            ErrorCode::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a text frame is not a valid message.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text is not JSON, or not a JSON object.
    #[error("not a JSON object")]
    BadJson,
    /// The object has no string `type`, or one this side does not know.
    #[error("unknown message type")]
    UnknownType {
        /// The request id, if the object had a numeric `id`.
        id: Option<u64>,
    },
    /// The type is known but a field is missing or wrong.
    #[error("invalid fields for this message type")]
    BadFields {
        /// The request id, if the object had a numeric `id`.
        id: Option<u64>,
    },
}

impl ParseError {
    /// The error code a server answers this with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ParseError::BadJson => ErrorCode::BadJson,
            ParseError::UnknownType { .. } => ErrorCode::UnknownType,
            ParseError::BadFields { .. } => ErrorCode::BadRequest,
        }
    }

    /// The request id of the offending message, if it could be read.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            ParseError::BadJson => None,
            ParseError::UnknownType { id } | ParseError::BadFields { id } => *id,
        }
    }
}

fn parse_tagged<T: serde::de::DeserializeOwned>(
    text: &str,
    known: &[&str],
) -> Result<T, ParseError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| ParseError::BadJson)?;
    let obj = value.as_object().ok_or(ParseError::BadJson)?;
    let id = obj.get("id").and_then(serde_json::Value::as_u64);
    let known_type = obj
        .get("type")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|t| known.contains(&t));
    if !known_type {
        return Err(ParseError::UnknownType { id });
    }
    serde_json::from_value(value).map_err(|_| ParseError::BadFields { id })
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serialising these types cannot fail: every map key is a string and no
    // custom Serialize impl returns an error.
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_are_classified() {
        let cases: &[(&str, ParseError)] = &[
            ("", ParseError::BadJson),
            ("{", ParseError::BadJson),
            ("[1,2]", ParseError::BadJson),
            ("\"join\"", ParseError::BadJson),
            ("{}", ParseError::UnknownType { id: None }),
            (
                "{\"type\":7,\"id\":3}",
                ParseError::UnknownType { id: Some(3) },
            ),
            (
                "{\"type\":\"dance\",\"id\":9}",
                ParseError::UnknownType { id: Some(9) },
            ),
            (
                "{\"type\":\"welcome\"}",
                ParseError::UnknownType { id: None },
            ),
            (
                "{\"type\":\"join\",\"id\":4}",
                ParseError::BadFields { id: Some(4) },
            ),
            (
                "{\"type\":\"offer\",\"to\":\"p1\"}",
                ParseError::BadFields { id: None },
            ),
            (
                "{\"type\":\"candidate\",\"to\":\"p1\",\"candidate\":5}",
                ParseError::BadFields { id: None },
            ),
            (
                "{\"type\":\"ping\",\"id\":-1}",
                ParseError::BadFields { id: None },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(ClientMsg::from_json(text).as_ref(), Err(want), "{text}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let m = ClientMsg::from_json(r#"{"type":"ping","id":1,"future":true}"#);
        assert_eq!(m, Ok(ClientMsg::Ping { id: Some(1) }));
    }

    #[test]
    fn browser_candidate_json_parses() {
        // What `JSON.stringify({type:'candidate', to, ...e.candidate.toJSON()})` gives.
        let text = r#"{"type":"candidate","to":"p2","candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 45664 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag sXmE network-cost 999","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"sXmE"}"#;
        let m = ClientMsg::from_json(text).expect("parses");
        let ClientMsg::Candidate { to, candidate, id } = &m else {
            panic!("wrong variant: {m:?}");
        };
        assert_eq!(to, "p2");
        assert_eq!(id, &None);
        assert_eq!(candidate.sdp_mid.as_deref(), Some("0"));
        assert_eq!(candidate.sdp_m_line_index, Some(0));
        assert_eq!(candidate.username_fragment.as_deref(), Some("sXmE"));
        assert_eq!(candidate.validate(), Ok(()));
        assert_eq!(m.to_json(), text);
    }

    #[test]
    fn ufrag_alias_and_null_fields() {
        let text = r#"{"type":"candidate","to":"p2","candidate":"candidate:1 1 udp 1 192.0.2.1 1 typ host","sdpMid":null,"sdpMLineIndex":null,"ufrag":"abcd"}"#;
        let m = ClientMsg::from_json(text).expect("parses");
        let ClientMsg::Candidate { candidate, .. } = m else {
            panic!("wrong variant");
        };
        assert_eq!(candidate.sdp_mid, None);
        assert_eq!(candidate.sdp_m_line_index, None);
        assert_eq!(candidate.username_fragment.as_deref(), Some("abcd"));
    }

    #[test]
    fn candidate_validation() {
        let ok = |s: &str| IceCandidate::new(s).validate();
        assert_eq!(
            ok("candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host"),
            Ok(())
        );
        assert_eq!(ok("CANDIDATE:1 1 UDP 1 192.0.2.1 5000 typ host"), Ok(()));
        assert!(ok("").is_err());
        assert!(ok("candidate").is_err());
        assert!(ok("a=candidate:1 1 udp 1 192.0.2.1 5000 typ host").is_err());
        assert!(ok("candidate:1 1 udp 1 192.0.2.1 5000 typ host\r\na=evil").is_err());
        assert!(ok("candidaté:1").is_err());
        let long = format!("candidate:{}", "x".repeat(MAX_CANDIDATE_LEN));
        assert!(ok(&long).is_err());
        let exact = format!("candidate:{}", "x".repeat(MAX_CANDIDATE_LEN - 10));
        assert_eq!(ok(&exact), Ok(()));
    }

    #[test]
    fn ice_server_urls_accept_a_single_string() {
        let s: IceServer =
            serde_json::from_str(r#"{"urls":"stun:stun.example.org:3478"}"#).expect("parses");
        assert_eq!(s, IceServer::new(["stun:stun.example.org:3478"]));
        assert_eq!(
            serde_json::to_string(&s).expect("serialises"),
            r#"{"urls":["stun:stun.example.org:3478"]}"#
        );
    }

    #[test]
    fn error_codes_serialise_as_documented() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).expect("serialises");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).expect("parses");
            assert_eq!(back, *code);
        }
        let future: ErrorCode = serde_json::from_str("\"quota-exceeded\"").expect("parses");
        assert_eq!(future, ErrorCode::Other);
    }

    #[test]
    fn type_names_match_serde_tags() {
        let clients = [
            ClientMsg::Join {
                room: "r".into(),
                token: None,
                name: None,
                hide_hosts: false,
                version: None,
                id: None,
            },
            ClientMsg::Leave {
                room: None,
                id: None,
            },
            ClientMsg::Offer {
                to: "p".into(),
                sdp: "v=0".into(),
                id: None,
            },
            ClientMsg::Answer {
                to: "p".into(),
                sdp: "v=0".into(),
                id: None,
            },
            ClientMsg::Candidate {
                to: "p".into(),
                candidate: IceCandidate::new("candidate:1"),
                id: None,
            },
            ClientMsg::EndOfCandidates {
                to: "p".into(),
                id: None,
            },
            ClientMsg::IceRestart {
                to: "p".into(),
                ufrag: "u".into(),
                pwd: "p".into(),
                id: None,
            },
            ClientMsg::Bye {
                to: "p".into(),
                id: None,
            },
            ClientMsg::Ping { id: None },
            ClientMsg::Resume {
                token: "t".into(),
                id: Some(2),
            },
        ];
        let names: Vec<_> = clients.iter().map(ClientMsg::type_name).collect();
        assert_eq!(names, CLIENT_TYPES);
        for m in &clients {
            let v: serde_json::Value = serde_json::from_str(&m.to_json()).expect("json");
            assert_eq!(v["type"], m.type_name());
            assert_eq!(ClientMsg::from_json(&m.to_json()).as_ref(), Ok(m));
        }
    }

    #[test]
    fn every_server_message_round_trips() {
        let cand = IceCandidate {
            candidate: "candidate:1 1 udp 1 192.0.2.1 9 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        };
        let peer = PeerInfo {
            id: "p1".into(),
            name: Some("a".into()),
            hide_hosts: false,
        };
        let msgs = [
            ServerMsg::Welcome {
                version: 1,
                peer_id: "p1".into(),
                ice_servers: vec![IceServer::with_credentials(["turn:x"], "u", "c")],
                relay_unavailable: None,
                resume_token: Some("p1.1700000000.x".into()),
            },
            ServerMsg::Joined {
                room: "r".into(),
                peer_id: "p2".into(),
                peers: vec![peer.clone()],
                ice_servers: Some(vec![IceServer::new(["stun:x"])]),
                relay_unavailable: Some(RelayUnavailable::RateLimited),
                resumed: Some(false),
                id: Some(1),
            },
            ServerMsg::Left {
                room: "r".into(),
                id: None,
            },
            ServerMsg::PeerJoined {
                room: "r".into(),
                peer,
            },
            ServerMsg::PeerLeft {
                room: "r".into(),
                peer_id: "p1".into(),
            },
            ServerMsg::Offer {
                from: "p1".into(),
                sdp: "v=0\r\n".into(),
            },
            ServerMsg::Answer {
                from: "p1".into(),
                sdp: "v=0".into(),
            },
            ServerMsg::Candidate {
                from: "p1".into(),
                candidate: cand,
            },
            ServerMsg::EndOfCandidates { from: "p1".into() },
            ServerMsg::IceRestart {
                from: "p1".into(),
                ufrag: "u".into(),
                pwd: "p".into(),
            },
            ServerMsg::Bye { from: "p1".into() },
            ServerMsg::Pong { id: Some(u64::MAX) },
            ServerMsg::error(ErrorCode::RoomFull, "full", Some(3)),
            ServerMsg::Resumed {
                peer_id: "p1".into(),
                resume_token: None,
                id: Some(4),
            },
        ];
        let names: Vec<_> = msgs.iter().map(ServerMsg::type_name).collect();
        assert_eq!(names, SERVER_TYPES);
        for m in &msgs {
            let json = m.to_json();
            let v: serde_json::Value = serde_json::from_str(&json).expect("json");
            assert_eq!(v["type"], m.type_name());
            assert_eq!(ServerMsg::from_json(&json).as_ref(), Ok(m), "{json}");
        }
    }
}
