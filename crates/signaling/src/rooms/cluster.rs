//! Rooms shared by several servers (the nodes of a cluster), as the sans-IO
//! half: what this node asks of the shared store ([`ClusterOp`]) and what
//! the store tells it ([`ClusterEvent`]). The store itself (Redis in
//! `p2p-server`) is the driver's business.
//!
//! In cluster mode a `join` is answered once the store admitted the peer
//! (the room's size limit holds across nodes and `joined` lists the peers
//! of every node); a message for a peer of another node goes out as one
//! [`ClusterOp::Relay`]; the members of other nodes are mirrored for each
//! room that has members here, from [`ClusterEvent::MemberJoined`],
//! [`ClusterEvent::MemberLeft`] and [`ClusterEvent::Snapshot`]. A peer
//! can still address only peers it shares a room with: the sending node
//! checks it against its mirror, and the receiving node checks it again.

use std::borrow::Cow;
use std::collections::VecDeque;

use super::stats::RELAYED_TYPES;
use super::{ConnId, Out, Rooms};
use crate::msg::{ErrorCode, IceServer, PeerInfo, RelayUnavailable, ServerMsg};

/// What a node asks of the shared store, from [`Rooms::poll_cluster`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterOp {
    /// Add `peer` (a connection of this node) to `room` unless the room
    /// holds `max_room_size` peers; answer with
    /// [`ClusterEvent::JoinResult`]. Watch the room's membership from now
    /// on.
    Join {
        /// The joining connection (echoed in the result).
        conn: ConnId,
        /// The room.
        room: String,
        /// The peer id and name.
        peer: PeerInfo,
        /// The room's size limit, across nodes.
        max_room_size: usize,
    },
    /// A member of this node left `room`. `last` is set when no member of
    /// this node is left in it (stop watching it).
    Leave {
        /// The room.
        room: String,
        /// The peer that left.
        peer_id: String,
        /// No member of this node is left in the room.
        last: bool,
    },
    /// A message for `to`, a member of `node`.
    Relay {
        /// The node holding `to`.
        node: String,
        /// The addressee.
        to: String,
        /// The message (its `from` is set).
        msg: ServerMsg,
    },
}

/// Why the store refused a join.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    /// The room holds its maximum number of peers, across nodes.
    RoomFull,
}

/// A member of a room as the store has it: the peer and its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMember {
    /// The peer.
    pub peer: PeerInfo,
    /// The node it is connected to.
    pub node: String,
}

/// What the store tells a node, for [`Rooms::cluster_event`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// The answer to [`ClusterOp::Join`]: the members already in the room,
    /// the joining peer itself among them when its id was a member already
    /// (it resumed here and its membership survived: on this node or on
    /// one that died and was not reaped yet), or why not.
    JoinResult {
        /// The joining connection.
        conn: ConnId,
        /// The room.
        room: String,
        /// The members before the join, or the refusal.
        result: Result<Vec<ClusterMember>, JoinRefusal>,
    },
    /// A peer joined a watched room (on this node or another; a peer that
    /// reconnected to another node joins again from there).
    MemberJoined {
        /// The room.
        room: String,
        /// The member.
        member: ClusterMember,
    },
    /// A peer of `node` left a watched room (or its node died).
    MemberLeft {
        /// The room.
        room: String,
        /// The peer.
        peer_id: String,
        /// Its node.
        node: String,
    },
    /// The whole membership of a watched room, as the store has it now
    /// (after the store was unreachable): the mirror is set to it.
    Snapshot {
        /// The room.
        room: String,
        /// Every member, of every node.
        members: Vec<ClusterMember>,
    },
    /// A message from another node for a peer of this one: the JSON the
    /// other node wrote ([`ServerMsg::to_json`] of a relayed message, with
    /// its `from`). It is handed to the addressee as it is, never parsed
    /// and written again: [`Rooms::cluster_deliver`] reads only its `type`
    /// and `from`, and the server queues these very bytes (they count
    /// against the addressee's `max_queued_bytes` as their length).
    Deliver {
        /// The addressee.
        to: String,
        /// The message, as JSON.
        json: String,
    },
}

/// The cluster side of [`Rooms`].
#[derive(Debug)]
pub(super) struct ClusterState {
    pub(super) node: String,
    pub(super) ops: VecDeque<ClusterOp>,
    pub(super) pending: Vec<PendingJoin>,
}

/// A join waiting for the store.
#[derive(Debug)]
pub(super) struct PendingJoin {
    pub(super) conn: ConnId,
    pub(super) peer_id: String,
    pub(super) room: String,
    /// Who joins, as the room's peers will see it.
    pub(super) me: PeerInfo,
    pub(super) id: Option<u64>,
    pub(super) ice_servers: Option<Vec<IceServer>>,
    pub(super) relay_unavailable: Option<RelayUnavailable>,
}

/// The `from` of a relayed message.
fn sender(msg: &ServerMsg) -> Option<&str> {
    match msg {
        ServerMsg::Offer { from, .. }
        | ServerMsg::Answer { from, .. }
        | ServerMsg::Candidate { from, .. }
        | ServerMsg::EndOfCandidates { from }
        | ServerMsg::IceRestart { from, .. }
        | ServerMsg::Bye { from } => Some(from),
        _ => None,
    }
}

/// The type (its index in [`RELAYED_TYPES`]) and the `from` of a relayed
/// message's JSON, or `None` when it is no relayed message. Read without
/// parsing the rest when it is spelled as [`ServerMsg::to_json`] writes it
/// (`{"type":"<type>","from":"<id>",...`: the tag first, then the
/// variant's first field, `from`); any other spelling is parsed in full.
pub(crate) fn relayed_header(json: &str) -> Option<(usize, Cow<'_, str>)> {
    let quick = json
        .strip_prefix(r#"{"type":""#)
        .and_then(|rest| rest.split_once('"'))
        .and_then(|(ty, rest)| {
            let i = RELAYED_TYPES.iter().position(|t| *t == ty)?;
            let (from, _) = rest.strip_prefix(r#","from":""#)?.split_once('"')?;
            // An escape in the id: the slow way reads it right.
            (!from.contains('\\')).then_some((i, Cow::Borrowed(from)))
        });
    if quick.is_some() {
        return quick;
    }
    let msg = ServerMsg::from_json(json).ok()?;
    let i = RELAYED_TYPES.iter().position(|t| *t == msg.type_name())?;
    Some((i, Cow::Owned(sender(&msg)?.to_owned())))
}

impl Rooms {
    /// Makes this server node `node` of a cluster: joins and messages for
    /// peers elsewhere go through [`Rooms::poll_cluster`], and the store's
    /// answers come back through [`Rooms::cluster_event`].
    pub fn with_cluster(mut self, node: impl Into<String>) -> Rooms {
        self.cluster = Some(ClusterState {
            node: node.into(),
            ops: VecDeque::new(),
            pending: Vec::new(),
        });
        self
    }

    /// The next operation for the shared store (cluster mode). Drain it
    /// after every call.
    pub fn poll_cluster(&mut self) -> Option<ClusterOp> {
        self.cluster.as_mut()?.ops.pop_front()
    }

    /// The peers of other nodes in `room`, as mirrored here.
    pub fn remote_members(&self, room: &str) -> Vec<ClusterMember> {
        self.rooms
            .get(room)
            .map_or_else(Vec::new, |r| r.remote.clone())
    }

    pub(super) fn op(&mut self, op: ClusterOp) {
        if let Some(c) = self.cluster.as_mut() {
            c.ops.push_back(op);
        }
    }

    pub(super) fn pending_joins(&self, conn: ConnId) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.pending.iter().any(|p| p.conn == conn))
    }

    pub(super) fn pending_join_of(&self, conn: ConnId, room: &str) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.pending.iter().any(|p| p.conn == conn && p.room == room))
    }

    /// Which node holds peer `to`, if it is a member of another node in a
    /// room `conn` is in.
    pub(super) fn remote_target(&self, conn: ConnId, to: &str) -> Option<String> {
        let c = self.conns.get(&conn)?;
        c.rooms.iter().find_map(|room| {
            self.rooms.get(room).and_then(|r| {
                r.remote
                    .iter()
                    .find(|m| m.peer.id == to)
                    .map(|m| m.node.clone())
            })
        })
    }

    /// What the store said. Returns the messages to deliver, as every
    /// other call does.
    pub fn cluster_event(&mut self, event: ClusterEvent) -> Out {
        let mut out = Vec::new();
        match event {
            ClusterEvent::JoinResult { conn, room, result } => {
                self.join_result(conn, room, result, &mut out);
            }
            ClusterEvent::MemberJoined { room, member } => {
                self.member_joined(room, member, &mut out)
            }
            ClusterEvent::MemberLeft {
                room,
                peer_id,
                node,
            } => self.member_left(&room, &peer_id, &node, &mut out),
            ClusterEvent::Snapshot { room, members } => {
                let Some(me) = self.cluster.as_ref().map(|c| c.node.clone()) else {
                    return out;
                };
                let Some(r) = self.rooms.get(&room) else {
                    return out;
                };
                let gone: Vec<ClusterMember> = r
                    .remote
                    .iter()
                    .filter(|m| !members.contains(m))
                    .cloned()
                    .collect();
                for m in gone {
                    self.member_left(&room, &m.peer.id, &m.node, &mut out);
                }
                for m in members.into_iter().filter(|m| m.node != me) {
                    self.member_joined(room.clone(), m, &mut out);
                }
            }
            ClusterEvent::Deliver { to, json } => {
                // Counted by `cluster_deliver`, not by `count` below.
                let conn = self.cluster_deliver(&to, &json);
                let msg = conn.and_then(|c| Some((c, ServerMsg::from_json(&json).ok()?)));
                return msg.into_iter().collect();
            }
        }
        self.stats.count(&out);
        out
    }

    /// A message from another node ([`ClusterEvent::Deliver`]) for peer
    /// `to`, as the JSON the other node wrote: the connection to hand
    /// these bytes to as they are, if `to` is connected here, `json` is a
    /// relayed message (offer, answer, candidate, end-of-candidates,
    /// ice-restart, bye) and its `from` shares a room with `to` (nothing
    /// crosses rooms: the sending node checked it, this one checks it
    /// again). Counts the delivery, or the refusal. Only the `type` and
    /// `from` are read (see [`Rooms::cluster_event`] for a parsed
    /// message).
    pub fn cluster_deliver(&mut self, to: &str, json: &str) -> Option<ConnId> {
        let &conn = self.peers.get(to)?;
        let (kind, from) = relayed_header(json)?;
        let shared = self.conns.get(&conn).is_some_and(|c| {
            c.rooms.iter().any(|room| {
                self.rooms
                    .get(room)
                    .is_some_and(|r| r.remote.iter().any(|m| m.peer.id == from))
            })
        });
        if shared {
            self.stats.cluster_delivered += 1;
            self.stats.relayed[kind] += 1;
            Some(conn)
        } else {
            self.stats.cluster_refused += 1;
            None
        }
    }

    fn join_result(
        &mut self,
        conn: ConnId,
        room: String,
        result: Result<Vec<ClusterMember>, JoinRefusal>,
        out: &mut Out,
    ) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let Some(i) = c
            .pending
            .iter()
            .position(|p| p.conn == conn && p.room == room)
        else {
            return;
        };
        let me = c.node.clone();
        let p = c.pending.remove(i);
        let alive = self.conns.get(&conn).map(|c| c.peer_id.clone());
        match (result, alive) {
            (Ok(_), None) => {
                // It left while the store admitted it: undo.
                self.op(ClusterOp::Leave {
                    room: room.clone(),
                    peer_id: p.peer_id,
                    last: false,
                });
                self.drop_if_empty(&room);
            }
            (Err(JoinRefusal::RoomFull), _) => {
                self.drop_if_empty(&room);
                let max = self.limits.max_room_size;
                out.push((
                    conn,
                    ServerMsg::error(
                        ErrorCode::RoomFull,
                        format!("room {room:?} holds its maximum of {max} peers"),
                        p.id,
                    ),
                ));
            }
            (Ok(members), Some(peer_id)) => {
                let kept = members.iter().any(|m| m.peer.id == peer_id);
                if let Some(r) = self.rooms.get_mut(&room) {
                    // Our own entry of before the move (mirrored from the
                    // node we left) is us.
                    r.remote.retain(|m| m.peer.id != peer_id);
                    for m in members {
                        if m.node != me && m.peer.id != peer_id && !r.remote.contains(&m) {
                            r.remote.retain(|x| x.peer.id != m.peer.id);
                            r.remote.push(m);
                        }
                    }
                }
                let first = out.len();
                self.add_member(
                    conn,
                    room,
                    p.me,
                    p.id,
                    p.ice_servers,
                    p.relay_unavailable,
                    out,
                );
                self.mark_resumed(conn, kept, &mut out[first..]);
            }
        }
    }

    /// A pending room with no member here any more is forgotten.
    fn drop_if_empty(&mut self, room: &str) {
        let pending = self
            .cluster
            .as_ref()
            .is_some_and(|c| c.pending.iter().any(|p| p.room == room));
        if !pending && self.rooms.get(room).is_some_and(|r| r.members.is_empty()) {
            self.rooms.remove(room);
            self.op(ClusterOp::Leave {
                room: room.to_owned(),
                peer_id: String::new(),
                last: true,
            });
        }
    }

    fn member_joined(&mut self, room: String, member: ClusterMember, out: &mut Out) {
        let Some(me) = self.cluster.as_ref().map(|c| c.node.clone()) else {
            return;
        };
        if member.node == me {
            return;
        }
        // The peer moved to another node (it resumed there): the connection
        // here that still holds its id is gone.
        if let Some(&old) = self.peers.get(&member.peer.id) {
            out.extend(self.disconnect(old));
            self.to_close.push_back(old);
        }
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        match r.remote.iter_mut().find(|m| m.peer.id == member.peer.id) {
            Some(m) if m.node == member.node => return,
            Some(m) => *m = member.clone(),
            None => r.remote.push(member.clone()),
        }
        for (other, _) in &r.members {
            out.push((
                *other,
                ServerMsg::PeerJoined {
                    room: room.clone(),
                    peer: member.peer.clone(),
                },
            ));
        }
    }

    fn member_left(&mut self, room: &str, peer_id: &str, node: &str, out: &mut Out) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let before = r.remote.len();
        r.remote
            .retain(|m| !(m.peer.id == peer_id && m.node == node));
        if r.remote.len() == before {
            return;
        }
        for (other, _) in &r.members {
            out.push((
                *other,
                ServerMsg::PeerLeft {
                    room: room.to_owned(),
                    peer_id: peer_id.to_owned(),
                },
            ));
        }
    }
}

#[cfg(test)]
mod tests;
