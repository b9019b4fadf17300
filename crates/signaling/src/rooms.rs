//! The sans-IO room state: who is connected, who is in which room, who may
//! send what to whom.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::addr::AddrKey;
use crate::ice_servers::{IceServerProvider, StaticIceServers};
use crate::msg::{
    ClientMsg, ErrorCode, ParseError, PeerInfo, RelayUnavailable, ServerMsg, PROTOCOL_VERSION,
};

mod buckets;
mod cluster;
mod config;
mod credentials;
mod resume;
mod stats;

pub use cluster::{ClusterEvent, ClusterMember, ClusterOp, JoinRefusal};
pub use config::{Auth, CredentialPolicy, Limits};
pub use resume::ResumeConfig;
pub use stats::RoomStats;

use buckets::{AddrBuckets, TokenBucket};
use credentials::{has_turn_credentials, public_view};

/// Longest room name, in bytes.
pub const MAX_ROOM_NAME_LEN: usize = 128;
/// Longest peer display name, in bytes.
pub const MAX_PEER_NAME_LEN: usize = 64;
/// Longest ICE ufrag or pwd in an `ice-restart`, in bytes.
pub const MAX_ICE_CREDENTIAL_LEN: usize = 256;

/// Identifies one client connection inside [`Rooms`]. Handed out by
/// [`Rooms::connect`]; the peer id on the wire is `p<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// A text frame, size-checked and parsed by [`ParsedText::parse`], for
/// [`Rooms::handle_parsed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedText {
    len: usize,
    /// `None`: too large, not parsed.
    parsed: Option<Result<ClientMsg, ParseError>>,
}

impl ParsedText {
    /// The frame's length in bytes. A message relayed because of it is
    /// never longer than this plus 64 bytes: it carries a subset of the
    /// frame's fields (with `from` for `to`), and JSON's escapes of those
    /// strings are never longer when written again.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame was empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Parses `text`, unless it is longer than `max_message_size` bytes
    /// (then it is not read at all).
    pub fn parse(text: &str, max_message_size: usize) -> ParsedText {
        ParsedText {
            len: text.len(),
            parsed: (text.len() <= max_message_size).then(|| ClientMsg::from_json(text)),
        }
    }
}

/// [`Rooms::connect`] refused a connection.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// [`Limits::max_connections`] are open already.
    #[error("too many connections")]
    TooManyConnections,
}

/// The signaling server's state, without I/O.
///
/// The driver (the `server` feature, `MemoryHub` with the `client`
/// feature, or your own) owns transports and a clock and calls in:
///
/// - [`connect`](Rooms::connect) when a client arrives: send it the returned welcome;
/// - [`handle_text`](Rooms::handle_text) for each text frame (or
///   [`handle`](Rooms::handle) with an already parsed message),
///   [`handle_binary`](Rooms::handle_binary) for binary frames and
///   [`touch`](Rooms::touch) for transport keepalives (WebSocket pongs);
/// - [`disconnect`](Rooms::disconnect) when a transport closes;
/// - [`handle_timeout`](Rooms::handle_timeout) when [`poll_timeout`](Rooms::poll_timeout) is due.
///
/// Each call returns the messages to deliver, in order, as `(receiver, message)`.
/// After each call, deliver them, then drain [`poll_close`](Rooms::poll_close)
/// (connections to close, already removed from the state), then re-arm the
/// timer with [`poll_timeout`](Rooms::poll_timeout).
///
/// Nothing crosses rooms: a peer can address only peers it shares a room with.
#[derive(Debug)]
pub struct Rooms {
    limits: Limits,
    auth: Auth,
    ice: Arc<dyn IceServerProvider>,
    epoch: Option<(Instant, SystemTime)>,
    next_conn: u64,
    conns: HashMap<ConnId, Conn>,
    rooms: HashMap<String, Room>,
    peers: HashMap<String, ConnId>,
    idle: BTreeSet<(Instant, ConnId)>,
    to_close: VecDeque<ConnId>,
    /// Per client address: the credential rate limit.
    credential_buckets: AddrBuckets,
    /// Per client address: wrong room tokens tried (a join with a wrong
    /// token takes one; an address with none left is refused without its
    /// token being looked at).
    guess_buckets: AddrBuckets,
    /// The sum of the rooms' sizes.
    members: usize,
    stats: RoomStats,
    /// Resume tokens are signed with this.
    resume: Option<ResumeConfig>,
    /// Peer ids are this and a number.
    peer_prefix: String,
    cluster: Option<cluster::ClusterState>,
}

#[derive(Debug)]
struct Conn {
    peer_id: String,
    addr: Option<AddrKey>,
    rooms: Vec<String>,
    last_seen: Instant,
    bucket: TokenBucket,
    /// It took its peer id back with `resume`: its joins say whether the
    /// membership survived.
    resumed: bool,
}

#[derive(Debug, Default)]
struct Room {
    /// Members in join order, with what each joined with (name, asks).
    members: Vec<(ConnId, PeerInfo)>,
    /// The members of other nodes (cluster mode).
    remote: Vec<ClusterMember>,
}

type Out = Vec<(ConnId, ServerMsg)>;

impl Rooms {
    /// Empty state with the given limits, open rooms and no ICE servers.
    pub fn new(limits: Limits) -> Rooms {
        let credential_buckets =
            AddrBuckets::new(limits.credentials_per_minute, limits.credential_burst);
        let guess_buckets =
            AddrBuckets::new(limits.token_guesses_per_minute, limits.token_guess_burst);
        Rooms {
            limits,
            auth: Auth::open(),
            ice: Arc::new(StaticIceServers::default()),
            epoch: None,
            next_conn: 1,
            conns: HashMap::new(),
            rooms: HashMap::new(),
            peers: HashMap::new(),
            idle: BTreeSet::new(),
            to_close: VecDeque::new(),
            credential_buckets,
            guess_buckets,
            members: 0,
            stats: RoomStats::default(),
            resume: None,
            peer_prefix: "p".to_owned(),
            cluster: None,
        }
    }

    /// Hands out resume tokens (in `welcome` and `resumed`) signed as
    /// `resume` says, and takes them back in `resume` messages. Needs the
    /// wall clock: set it with [`Rooms::with_ice_servers`] or
    /// [`Rooms::with_epoch`].
    pub fn with_resume(mut self, resume: ResumeConfig) -> Rooms {
        self.resume = Some(resume);
        self
    }

    /// Pairs one monotonic instant with the wall-clock time at that
    /// instant (for token expiries), as [`Rooms::with_ice_servers`] does.
    pub fn with_epoch(mut self, epoch: (Instant, SystemTime)) -> Rooms {
        self.epoch = Some(epoch);
        self
    }

    /// Peer ids are `prefix` and a number (default `p`: `p1`, `p2`, ...).
    /// A server that resumes sessions across restarts or nodes needs a
    /// prefix of its own per run, so that its ids are new.
    pub fn with_peer_id_prefix(mut self, prefix: impl Into<String>) -> Rooms {
        self.peer_prefix = prefix.into();
        self
    }

    /// Sets who may join which room.
    pub fn with_auth(mut self, auth: Auth) -> Rooms {
        self.auth = auth;
        self
    }

    /// Sets where the welcome's `iceServers` come from. `epoch` pairs one
    /// monotonic instant with the wall-clock time at that instant; the provider
    /// is given `epoch.1 + (now - epoch.0)`.
    pub fn with_ice_servers(
        mut self,
        provider: Arc<dyn IceServerProvider>,
        epoch: (Instant, SystemTime),
    ) -> Rooms {
        self.ice = provider;
        self.epoch = Some(epoch);
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Number of non-empty rooms.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Room memberships: the sum of the sizes of the rooms.
    pub fn member_count(&self) -> usize {
        self.members
    }

    /// What happened so far: connections, messages relayed and refused,
    /// credentials handed out and withheld.
    pub fn stats(&self) -> &RoomStats {
        &self.stats
    }

    /// The peer id of a connection.
    pub fn peer_id(&self, conn: ConnId) -> Option<&str> {
        self.conns.get(&conn).map(|c| c.peer_id.as_str())
    }

    /// The peer ids in a room, in join order (empty for an unknown room).
    pub fn room_members(&self, room: &str) -> Vec<String> {
        self.rooms.get(room).map_or_else(Vec::new, |r| {
            r.members
                .iter()
                .filter_map(|(c, _)| self.peer_id(*c).map(str::to_owned))
                .collect()
        })
    }

    /// A client arrived. Returns its id and the welcome to send it first.
    /// The same as [`connect_from`](Rooms::connect_from) with no address:
    /// every such connection shares one credential rate limit.
    pub fn connect(&mut self, now: Instant) -> Result<(ConnId, ServerMsg), ConnectError> {
        self.connect_from(now, None)
    }

    /// A client arrived from `addr` (the key its per-address limits count
    /// by). Returns its id and the welcome to send it first.
    pub fn connect_from(
        &mut self,
        now: Instant,
        addr: Option<AddrKey>,
    ) -> Result<(ConnId, ServerMsg), ConnectError> {
        if self.conns.len() >= self.limits.max_connections {
            self.stats.connections_refused += 1;
            return Err(ConnectError::TooManyConnections);
        }
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let peer_id = format!("{}{}", self.peer_prefix, conn.0);
        let (ice_servers, relay_unavailable) = match self.limits.credential_policy {
            CredentialPolicy::Welcome => {
                let (servers, withheld) = self.grant(&peer_id, addr, now);
                (servers, withheld)
            }
            _ => (public_view(&self.servers_for(&peer_id, now)), None),
        };
        let welcome = ServerMsg::Welcome {
            version: PROTOCOL_VERSION,
            peer_id: peer_id.clone(),
            ice_servers,
            relay_unavailable,
            resume_token: self.resume_token(&peer_id, now),
        };
        self.peers.insert(peer_id.clone(), conn);
        self.conns.insert(
            conn,
            Conn {
                peer_id,
                addr,
                rooms: Vec::new(),
                last_seen: now,
                bucket: TokenBucket::full(self.limits.burst, now),
                resumed: false,
            },
        );
        self.idle.insert((now, conn));
        self.stats.connections_accepted += 1;
        Ok((conn, welcome))
    }

    /// Records activity that is not a message (a WebSocket pong), so that the
    /// connection does not time out.
    pub fn touch(&mut self, conn: ConnId, now: Instant) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if now > c.last_seen {
                self.idle.remove(&(c.last_seen, conn));
                c.last_seen = now;
                self.idle.insert((now, conn));
            }
        }
    }

    /// One text frame from `conn`: rate limit, size limit, parse, then as
    /// [`handle`](Rooms::handle). Every failure is answered with an error and
    /// the connection stays usable.
    pub fn handle_text(&mut self, conn: ConnId, now: Instant, text: &str) -> Out {
        let frame = ParsedText::parse(text, self.limits.max_message_size);
        self.handle_parsed(conn, now, frame)
    }

    /// [`handle_text`](Rooms::handle_text) for a frame the caller already
    /// parsed with [`ParsedText::parse`] (a server parses on each
    /// connection's task, so that the task owning the `Rooms` does not spend
    /// its time in JSON). The rate limit and the size limit apply as to a
    /// text frame.
    pub fn handle_parsed(&mut self, conn: ConnId, now: Instant, frame: ParsedText) -> Out {
        let out = self.handle_parsed_inner(conn, now, frame);
        self.stats.count(&out);
        out
    }

    fn handle_parsed_inner(&mut self, conn: ConnId, now: Instant, frame: ParsedText) -> Out {
        if let Some(out) = self.admit(conn, now) {
            return out;
        }
        let parsed = match frame.parsed {
            Some(p) if frame.len <= self.limits.max_message_size => p,
            _ => {
                let msg = format!(
                    "message of {} bytes exceeds the limit of {} bytes",
                    frame.len, self.limits.max_message_size
                );
                return vec![(
                    conn,
                    ServerMsg::error(ErrorCode::MessageTooLarge, msg, None),
                )];
            }
        };
        match parsed {
            Ok(msg) => self.dispatch(conn, now, msg),
            Err(e) => {
                let message = match e.code() {
                    ErrorCode::BadJson => "the frame is not a JSON object",
                    ErrorCode::UnknownType => "missing or unknown \"type\"",
                    _ => "missing or invalid fields for this message type",
                };
                vec![(conn, ServerMsg::error(e.code(), message, e.request_id()))]
            }
        }
    }

    /// One binary frame from `conn`: counted against the rate limit and
    /// answered with a `bad-request` error (the protocol is text only).
    pub fn handle_binary(&mut self, conn: ConnId, now: Instant) -> Out {
        let out = match self.admit(conn, now) {
            Some(out) => out,
            None => {
                let msg = "binary frames are not supported; send JSON in text frames";
                vec![(conn, ServerMsg::error(ErrorCode::BadRequest, msg, None))]
            }
        };
        self.stats.count(&out);
        out
    }

    /// One parsed message from `conn` (rate limited like a text frame; the
    /// size limit applies only to [`handle_text`](Rooms::handle_text)).
    pub fn handle(&mut self, conn: ConnId, now: Instant, msg: ClientMsg) -> Out {
        let out = match self.admit(conn, now) {
            Some(out) => out,
            None => self.dispatch(conn, now, msg),
        };
        self.stats.count(&out);
        out
    }

    /// The transport of `conn` closed: it leaves every room and the remaining
    /// members get `peer-left`.
    pub fn disconnect(&mut self, conn: ConnId) -> Out {
        let mut out = Vec::new();
        if let Some(c) = self.conns.remove(&conn) {
            self.idle.remove(&(c.last_seen, conn));
            self.peers.remove(&c.peer_id);
            for room in &c.rooms {
                self.remove_member(room, conn, &c.peer_id, &mut out);
            }
        }
        out
    }

    /// Closes connections idle for [`Limits::idle_timeout`]: each gets an
    /// `idle-timeout` error, leaves its rooms, and is queued for
    /// [`poll_close`](Rooms::poll_close).
    pub fn handle_timeout(&mut self, now: Instant) -> Out {
        let mut out = Vec::new();
        while let Some(&(seen, conn)) = self.idle.first() {
            if seen + self.limits.idle_timeout > now {
                break;
            }
            out.push((
                conn,
                ServerMsg::error(ErrorCode::IdleTimeout, "idle for too long", None),
            ));
            out.extend(self.disconnect(conn));
            self.to_close.push_back(conn);
            self.stats.idle_closed += 1;
        }
        self.stats.count(&out);
        out
    }

    /// When [`handle_timeout`](Rooms::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.idle
            .first()
            .map(|(seen, _)| *seen + self.limits.idle_timeout)
    }

    /// A connection the driver must close (after sending what was returned for it).
    pub fn poll_close(&mut self) -> Option<ConnId> {
        self.to_close.pop_front()
    }

    /// Records activity and takes a rate-limit token. `Some` is the reply
    /// when the message must not be processed.
    fn admit(&mut self, conn: ConnId, now: Instant) -> Option<Out> {
        self.touch(conn, now);
        self.stats.messages_received += 1;
        let limits = &self.limits;
        let Some(c) = self.conns.get_mut(&conn) else {
            // Unknown or already closed connection: nothing to do.
            return Some(Vec::new());
        };
        if c.bucket.take(now, limits.rate_per_second, limits.burst) {
            None
        } else {
            let msg = "too many messages; slow down";
            Some(vec![(
                conn,
                ServerMsg::error(ErrorCode::RateLimited, msg, None),
            )])
        }
    }

    fn dispatch(&mut self, conn: ConnId, now: Instant, msg: ClientMsg) -> Out {
        let id = msg.request_id();
        let result = match msg {
            ClientMsg::Join {
                room,
                token,
                name,
                hide_hosts,
                version,
                id,
            } => self.join(conn, now, room, token, (name, hide_hosts), version, id),
            ClientMsg::Leave { room, id } => self.leave(conn, room, id),
            ClientMsg::Ping { id } => Ok(vec![(conn, ServerMsg::Pong { id })]),
            ClientMsg::Resume { token, id } => self.resume_conn(conn, now, &token, id),
            relay => self.relay(conn, relay),
        };
        match result {
            Ok(out) => out,
            Err((code, message)) => vec![(conn, ServerMsg::error(code, message, id))],
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        conn: ConnId,
        now: Instant,
        room: String,
        token: Option<String>,
        (name, hide_hosts): (Option<String>, bool),
        version: Option<u32>,
        id: Option<u64>,
    ) -> Result<Out, (ErrorCode, String)> {
        if let Some(v) = version {
            if v != PROTOCOL_VERSION {
                return Err((
                    ErrorCode::VersionMismatch,
                    format!("this server speaks version {PROTOCOL_VERSION}, not {v}"),
                ));
            }
        }
        if room.is_empty() || room.len() > MAX_ROOM_NAME_LEN || room.chars().any(char::is_control) {
            return Err((
                ErrorCode::BadRequest,
                format!("room must be 1 to {MAX_ROOM_NAME_LEN} bytes without control characters"),
            ));
        }
        if let Some(n) = &name {
            if n.len() > MAX_PEER_NAME_LEN || n.chars().any(char::is_control) {
                return Err((
                    ErrorCode::BadRequest,
                    format!(
                        "name must be at most {MAX_PEER_NAME_LEN} bytes without control characters"
                    ),
                ));
            }
        }
        let Some(c) = self.conns.get(&conn) else {
            return Ok(Vec::new());
        };
        if c.rooms.contains(&room) || self.pending_join_of(conn, &room) {
            return Err((
                ErrorCode::AlreadyJoined,
                format!("already in room {room:?}"),
            ));
        }
        let addr = c.addr;
        if !self.auth.needs_token(&room) {
            // Open room: nothing to guess.
        } else if self.guess_buckets.wait(addr, now) > Duration::ZERO {
            // Refused without looking at the token: a right guess must not
            // be told apart from a wrong one while the address is held.
            self.stats.joins_refused_guessing += 1;
            return Err((
                ErrorCode::RateLimited,
                format!(
                    "too many wrong room tokens from this address: try again in {} s",
                    self.guess_buckets.wait(addr, now).as_secs().max(1)
                ),
            ));
        } else if !self.auth.allows(&room, token.as_deref()) {
            // A full table (65 536 addresses all guessing) records no more:
            // each new address still has only its own burst.
            let _ = self.guess_buckets.take(addr, now);
            return Err((
                ErrorCode::Unauthorized,
                "missing or wrong token for this room".to_owned(),
            ));
        }
        if c.rooms.len() >= self.limits.max_rooms_per_conn {
            return Err((
                ErrorCode::TooManyRooms,
                format!(
                    "a connection may be in at most {} rooms",
                    self.limits.max_rooms_per_conn
                ),
            ));
        }
        match self.rooms.get(&room) {
            // A peer that resumed here is not counted twice (its entry of
            // another node is its own).
            Some(r)
                if r.members.len() + r.remote.iter().filter(|m| m.peer.id != c.peer_id).count()
                    >= self.limits.max_room_size =>
            {
                return Err((
                    ErrorCode::RoomFull,
                    format!(
                        "room {room:?} holds its maximum of {} peers",
                        self.limits.max_room_size
                    ),
                ));
            }
            None if self.rooms.len() >= self.limits.max_rooms => {
                return Err((
                    ErrorCode::TooManyRooms,
                    "the server holds its maximum number of rooms".to_owned(),
                ));
            }
            _ => {}
        }
        let peer_id = c.peer_id.clone();
        let addr = c.addr;
        let me = PeerInfo {
            id: peer_id.clone(),
            name,
            hide_hosts,
        };
        let (ice_servers, relay_unavailable) = match self.limits.credential_policy {
            CredentialPolicy::Welcome => (None, None),
            CredentialPolicy::Never => (None, Some(RelayUnavailable::NotOffered)),
            CredentialPolicy::Token if !self.auth.needs_token(&room) => {
                if has_turn_credentials(&self.servers_for(&peer_id, now)) {
                    self.stats.credentials_withheld_token += 1;
                    (None, Some(RelayUnavailable::TokenRequired))
                } else {
                    (None, Some(RelayUnavailable::NotOffered))
                }
            }
            CredentialPolicy::Join | CredentialPolicy::Token => {
                match self.grant(&peer_id, addr, now) {
                    (servers, None) => (Some(servers), None),
                    (_, withheld) => (None, withheld),
                }
            }
        };
        if let Some(cl) = self.cluster.as_mut() {
            // Answered once the store admitted it (the room's size holds
            // across nodes, and joined lists every node's peers).
            cl.pending.push(cluster::PendingJoin {
                conn,
                peer_id: peer_id.clone(),
                room: room.clone(),
                me: me.clone(),
                id,
                ice_servers,
                relay_unavailable,
            });
            self.rooms.entry(room.clone()).or_default();
            let max_room_size = self.limits.max_room_size;
            self.op(ClusterOp::Join {
                conn,
                room,
                peer: me,
                max_room_size,
            });
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        self.add_member(conn, room, me, id, ice_servers, relay_unavailable, &mut out);
        // On one node a membership never survives a resume: the old
        // connection left its rooms when it closed (or when the resume
        // closed it).
        self.mark_resumed(conn, false, &mut out);
        Ok(out)
    }

    /// `conn` enters `room`: `joined` to it, `peer-joined` to the others.
    #[allow(clippy::too_many_arguments)]
    fn add_member(
        &mut self,
        conn: ConnId,
        room: String,
        me: PeerInfo,
        id: Option<u64>,
        ice_servers: Option<Vec<crate::msg::IceServer>>,
        relay_unavailable: Option<RelayUnavailable>,
        out: &mut Out,
    ) {
        let Some(peer_id) = self.conns.get(&conn).map(|c| c.peer_id.clone()) else {
            return;
        };
        let r = self.rooms.entry(room.clone()).or_default();
        let first = out.len();
        let mut peers = Vec::with_capacity(r.members.len() + r.remote.len());
        for (other, info) in &r.members {
            if let Some(oc) = self.conns.get(other) {
                peers.push(PeerInfo {
                    id: oc.peer_id.clone(),
                    ..info.clone()
                });
                out.push((
                    *other,
                    ServerMsg::PeerJoined {
                        room: room.clone(),
                        peer: me.clone(),
                    },
                ));
            }
        }
        peers.extend(r.remote.iter().map(|m| m.peer.clone()));
        r.members.push((conn, me));
        self.members += 1;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.rooms.push(room.clone());
        }
        out.insert(
            first,
            (
                conn,
                ServerMsg::Joined {
                    room,
                    peer_id,
                    peers,
                    ice_servers,
                    relay_unavailable,
                    resumed: None,
                    id,
                },
            ),
        );
    }

    fn leave(
        &mut self,
        conn: ConnId,
        room: Option<String>,
        id: Option<u64>,
    ) -> Result<Out, (ErrorCode, String)> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Ok(Vec::new());
        };
        let leaving: Vec<String> = match room {
            Some(room) => match c.rooms.iter().position(|r| *r == room) {
                Some(i) => vec![c.rooms.remove(i)],
                None => return Err((ErrorCode::NotInRoom, format!("not in room {room:?}"))),
            },
            None if c.rooms.is_empty() => {
                return Err((ErrorCode::NotInRoom, "not in any room".to_owned()))
            }
            None => std::mem::take(&mut c.rooms),
        };
        let peer_id = c.peer_id.clone();
        let mut out = Vec::new();
        for room in leaving {
            out.push((
                conn,
                ServerMsg::Left {
                    room: room.clone(),
                    id,
                },
            ));
            self.remove_member(&room, conn, &peer_id, &mut out);
        }
        Ok(out)
    }

    fn remove_member(&mut self, room: &str, conn: ConnId, peer_id: &str, out: &mut Out) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let before = r.members.len();
        r.members.retain(|(c, _)| *c != conn);
        self.members -= before - r.members.len();
        for (other, _) in &r.members {
            out.push((
                *other,
                ServerMsg::PeerLeft {
                    room: room.to_owned(),
                    peer_id: peer_id.to_owned(),
                },
            ));
        }
        let empty = r.members.is_empty();
        if self.cluster.is_some() {
            let last = empty
                && !self
                    .cluster
                    .as_ref()
                    .is_some_and(|c| c.pending.iter().any(|p| p.room == room));
            self.op(ClusterOp::Leave {
                room: room.to_owned(),
                peer_id: peer_id.to_owned(),
                last,
            });
            if last {
                self.rooms.remove(room);
            }
        } else if empty {
            self.rooms.remove(room);
        }
    }

    fn relay(&mut self, conn: ConnId, msg: ClientMsg) -> Result<Out, (ErrorCode, String)> {
        let Some(c) = self.conns.get(&conn) else {
            return Ok(Vec::new());
        };
        if c.rooms.is_empty() {
            return Err((
                ErrorCode::NotInRoom,
                "join a room before sending to peers".to_owned(),
            ));
        }
        let from = c.peer_id.clone();
        let (to, out_msg) = match msg {
            ClientMsg::Offer { to, sdp, .. } => {
                check_sdp(&sdp)?;
                (to, ServerMsg::Offer { from, sdp })
            }
            ClientMsg::Answer { to, sdp, .. } => {
                check_sdp(&sdp)?;
                (to, ServerMsg::Answer { from, sdp })
            }
            ClientMsg::Candidate { to, candidate, .. } => {
                candidate
                    .validate()
                    .map_err(|e| (ErrorCode::BadRequest, e.to_owned()))?;
                (to, ServerMsg::Candidate { from, candidate })
            }
            ClientMsg::EndOfCandidates { to, .. } => (to, ServerMsg::EndOfCandidates { from }),
            ClientMsg::IceRestart { to, ufrag, pwd, .. } => {
                for (what, v) in [("ufrag", &ufrag), ("pwd", &pwd)] {
                    if v.is_empty()
                        || v.len() > MAX_ICE_CREDENTIAL_LEN
                        || v.chars().any(char::is_control)
                    {
                        return Err((
                            ErrorCode::BadRequest,
                            format!("{what} must be 1 to {MAX_ICE_CREDENTIAL_LEN} bytes"),
                        ));
                    }
                }
                (to, ServerMsg::IceRestart { from, ufrag, pwd })
            }
            ClientMsg::Bye { to, .. } => (to, ServerMsg::Bye { from }),
            ClientMsg::Join { .. }
            | ClientMsg::Leave { .. }
            | ClientMsg::Ping { .. }
            | ClientMsg::Resume { .. } => return Ok(Vec::new()),
        };
        let target = self
            .peers
            .get(&to)
            .copied()
            .filter(|t| *t != conn && self.share_room(conn, *t));
        match target {
            Some(t) => Ok(vec![(t, out_msg)]),
            None if self.cluster.is_some() && self.remote_target(conn, &to).is_some() => {
                let node = self.remote_target(conn, &to).unwrap_or_default();
                self.stats.cluster_relayed += 1;
                self.op(ClusterOp::Relay {
                    node,
                    to,
                    msg: out_msg,
                });
                Ok(Vec::new())
            }
            None => Err((
                ErrorCode::UnknownPeer,
                format!("no peer {to:?} in your rooms"),
            )),
        }
    }

    fn share_room(&self, a: ConnId, b: ConnId) -> bool {
        match (self.conns.get(&a), self.conns.get(&b)) {
            (Some(a), Some(b)) => a.rooms.iter().any(|r| b.rooms.contains(r)),
            _ => false,
        }
    }
}

fn check_sdp(sdp: &str) -> Result<(), (ErrorCode, String)> {
    if sdp.trim().is_empty() {
        Err((ErrorCode::BadRequest, "empty sdp".to_owned()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
