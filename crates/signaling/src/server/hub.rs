//! The task that owns the [`Rooms`]: connection tasks send it events, it
//! answers through each connection's bounded queue and never awaits a
//! connection.
//!
//! Trace events of target `p2p_hop` mark each hop of a relayed message
//! (here, in the connection tasks and in the cluster store), with the
//! message itself: `cluster_bench --hops` reads them to break a message's
//! latency down. Off unless a subscriber enables that target (do not in
//! production: they carry the messages' SDP and candidates).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::metrics::{CloseReason, Metrics};
use crate::addr::AddrKey;
use crate::msg::ServerMsg;
use crate::rooms::{ClusterEvent, ConnId, ParsedText, Rooms};
use crate::server::ClusterLink;

/// What a connection task tells the hub.
pub(super) enum Event {
    Connect {
        addr: Option<AddrKey>,
        queue: Queue,
        reply: oneshot::Sender<Option<ConnId>>,
    },
    Text {
        conn: ConnId,
        frame: ParsedText,
        /// The connection's share of the hub's queue this frame holds,
        /// given back when the hub has handled it.
        _budget: OwnedSemaphorePermit,
    },
    Binary {
        conn: ConnId,
    },
    Alive {
        conn: ConnId,
    },
    Closed {
        conn: ConnId,
    },
}

/// What the hub sends a connection task.
pub(super) enum Outbound {
    /// A message already written as JSON, of this many bytes.
    Text(String),
    /// A relayed message, written as JSON by the receiving connection's
    /// task (not by the hub); it counts as this many bytes: the length of
    /// the frame it came in plus [`RELAY_SLACK`], a bound of the JSON
    /// written. (A message from another node comes as the JSON it crossed
    /// as, and goes out as [`Outbound::Text`].)
    Relay(ServerMsg, usize),
    Close(CloseReason),
}

/// How much longer than the frame that caused it a relayed message may be
/// (`"from":"p<id>"` instead of `"to":"p<id>"`).
const RELAY_SLACK: usize = 64;

/// The hub's end of one connection: its bounded queue, the bytes in it, and
/// the way to make it close at once.
pub(super) struct Queue {
    pub(super) tx: mpsc::Sender<Outbound>,
    /// Bytes queued and not yet written to the socket; the connection task
    /// subtracts what it wrote.
    pub(super) queued: Arc<AtomicUsize>,
    /// Closes the connection ahead of anything queued.
    pub(super) kick: oneshot::Sender<CloseReason>,
}

/// The limits of every connection's queue.
#[derive(Clone, Copy)]
pub(super) struct QueueLimits {
    pub(super) max_bytes: usize,
}

pub(super) async fn run(
    mut rooms: Rooms,
    mut events: mpsc::Receiver<Event>,
    limits: QueueLimits,
    metrics: Metrics,
    mut cluster: Option<ClusterLink>,
) {
    let mut conns: HashMap<ConnId, Queue> = HashMap::new();
    loop {
        // The length bound of the messages relayed by this event, if it is
        // a client's frame.
        let mut relay_bound = None;
        // A message from another node, as the JSON it came in, for a
        // connection here.
        let mut written = None;
        let deadline = rooms.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        let out = tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                let now = Instant::now().into_std();
                match ev {
                    Event::Connect { addr, queue, reply } => match rooms.connect_from(now, addr) {
                        Ok((conn, welcome)) => {
                            if reply.send(Some(conn)).is_ok() {
                                conns.insert(conn, queue);
                                vec![(conn, welcome)]
                            } else {
                                rooms.disconnect(conn)
                            }
                        }
                        Err(_) => {
                            let _ = reply.send(None);
                            Vec::new()
                        }
                    },
                    Event::Text { conn, frame, .. } => {
                        relay_bound = Some(frame.len().saturating_add(RELAY_SLACK));
                        rooms.handle_parsed(conn, now, frame)
                    }
                    Event::Binary { conn } => rooms.handle_binary(conn, now),
                    Event::Alive { conn } => {
                        rooms.touch(conn, now);
                        Vec::new()
                    }
                    Event::Closed { conn } => {
                        conns.remove(&conn);
                        rooms.disconnect(conn)
                    }
                }
            }
            Some(ev) = async {
                match cluster.as_mut() {
                    Some(c) => c.events.recv().await,
                    None => std::future::pending().await,
                }
            } => match ev {
                // Relayed across nodes: the JSON the other node wrote goes
                // to the addressee as it is (not parsed and written again),
                // and counts as its length: a burst of them (the store
                // hands over what one read from Redis brought) must not
                // look like a slow reader's backlog.
                ClusterEvent::Deliver { to, json } => {
                    tracing::trace!(target: "p2p_hop", hop = "deliver", msg = json.as_str());
                    if let Some(conn) = rooms.cluster_deliver(&to, &json) {
                        written = Some((conn, json));
                    }
                    Vec::new()
                }
                ev => rooms.cluster_event(ev),
            },
            () = sleep => {
                let now = Instant::now().into_std();
                // Check against the clock, not only the timer.
                if deadline.is_some_and(|d| d <= now) {
                    rooms.handle_timeout(now)
                } else {
                    Vec::new()
                }
            }
        };
        let mut pending: VecDeque<(ConnId, Pending)> =
            out.into_iter().map(|(c, m)| (c, Pending::Msg(m))).collect();
        if let Some((conn, json)) = written {
            pending.push_back((conn, Pending::Json(json)));
        }
        deliver(&mut rooms, &mut conns, pending, relay_bound, limits);
        while let Some(op) = rooms.poll_cluster() {
            tracing::trace!(target: "p2p_hop", hop = "hub", msg = ?op);
            if let Some(c) = &cluster {
                if c.ops.try_send(op).is_err() {
                    metrics.cluster_op_dropped();
                }
            }
        }
        metrics.store_rooms(&rooms);
    }
}

/// A message for a connection.
enum Pending {
    /// Written as JSON here, or (relayed) by the receiver's task.
    Msg(ServerMsg),
    /// JSON already written (by another node of a cluster).
    Json(String),
}

/// Queues the messages, closes what `Rooms` wants closed, and drops
/// clients whose queue is full, in messages or in bytes (which may produce
/// more messages, hence the loop). A dropped client's connection closes at
/// once, with what it had queued thrown away.
fn deliver(
    rooms: &mut Rooms,
    conns: &mut HashMap<ConnId, Queue>,
    mut pending: VecDeque<(ConnId, Pending)>,
    relay_bound: Option<usize>,
    limits: QueueLimits,
) {
    loop {
        while let Some((conn, msg)) = pending.pop_front() {
            let Some(q) = conns.get(&conn) else { continue };
            // Relayed messages (SDP, candidates) are written as JSON by the
            // receiver's task; the hub's own small messages here.
            let (out, len) = match (msg, relay_bound) {
                (Pending::Msg(msg), Some(bound)) if is_relay(&msg) => {
                    tracing::trace!(target: "p2p_hop", hop = "hub", msg = ?msg);
                    (Outbound::Relay(msg, bound), bound)
                }
                (Pending::Msg(msg), _) => {
                    let text = msg.to_json();
                    let len = text.len();
                    (Outbound::Text(text), len)
                }
                (Pending::Json(text), _) => {
                    let len = text.len();
                    (Outbound::Text(text), len)
                }
            };
            let fits = q.queued.load(Relaxed).saturating_add(len) <= limits.max_bytes;
            let sent = if fits {
                q.queued.fetch_add(len, Relaxed);
                let r = q.tx.try_send(out);
                if r.is_err() {
                    q.queued.fetch_sub(len, Relaxed);
                }
                r.map_err(|e| matches!(e, mpsc::error::TrySendError::Full(_)))
            } else {
                Err(true)
            };
            if let Err(full) = sent {
                let Some(q) = conns.remove(&conn) else {
                    continue;
                };
                if full {
                    tracing::debug!(%conn, "signaling: client too slow, closing it");
                    let _ = q.kick.send(CloseReason::Slow);
                }
                let gone = rooms.disconnect(conn);
                pending.extend(gone.into_iter().map(|(c, m)| (c, Pending::Msg(m))));
            }
        }
        let mut closed_any = false;
        while let Some(conn) = rooms.poll_close() {
            closed_any = true;
            if let Some(q) = conns.remove(&conn) {
                // After the idle-timeout error already queued; at once if
                // the queue has no room.
                if q.tx.try_send(Outbound::Close(CloseReason::Idle)).is_err() {
                    let _ = q.kick.send(CloseReason::Idle);
                }
            }
        }
        if pending.is_empty() && !closed_any {
            break;
        }
    }
}

/// Whether `msg` is relayed from a client's frame (and is bounded by it).
fn is_relay(msg: &ServerMsg) -> bool {
    matches!(
        msg,
        ServerMsg::Offer { .. }
            | ServerMsg::Answer { .. }
            | ServerMsg::Candidate { .. }
            | ServerMsg::EndOfCandidates { .. }
            | ServerMsg::IceRestart { .. }
            | ServerMsg::Bye { .. }
    )
}
