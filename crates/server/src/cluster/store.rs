//! The Redis side of a node: one task that turns the rooms' [`ClusterOp`]s
//! into Redis commands (pipelined: what is queued goes in one round trip,
//! in order) and Redis's pub/sub messages into [`ClusterEvent`]s. The
//! heartbeat, the reaping of dead nodes and the TURN fleet's round trips
//! run beside it ([`super::beat`]), on a connection of their own.
//!
//! A message for a peer of another node crosses as one PUBLISH of
//! `<to>\n<json>` on that node's channel; the receiving node hands the
//! JSON to its peer as it is ([`ClusterEvent::Deliver`]), never parsed and
//! written again.
//!
//! When Redis is unreachable the node keeps serving its own members:
//! joins are answered from what it knows, messages for other nodes are
//! dropped (counted); when Redis is back it registers its members again
//! and takes a snapshot of every room it watches.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use p2p_signaling::{ClusterEvent, ClusterMember, ClusterOp, ConnId, JoinRefusal, PeerInfo};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use redis::{Client, Value};
use tokio::sync::mpsc;

use super::beat::{Beat, BeatReport};
use super::fleet::Fleet;
use super::outbox::{self, Outbox};
use super::scripts::{JOIN, LEAVE};

/// Operations taken into one pipeline at most.
const BATCH: usize = 256;

/// Pipelines sent and not yet answered, at most. A pipeline goes as soon
/// as the store takes its operations, without waiting for the answer to
/// the one before (Redis answers them in order on one connection): a
/// message never waits for another's round trip. Past this many, the
/// operations wait and gather into one pipeline.
const MAX_IN_FLIGHT: usize = 4;

/// A pipeline sent, with what its answer is for.
struct Sent {
    /// What each reply answers: a join's (conn, room), or nothing.
    joins: Vec<Option<(ConnId, String)>>,
    /// Messages relayed in it.
    relays: u64,
    /// The PUBLISHes that carried them.
    publishes: u64,
    /// When it was sent.
    started: Instant,
}

/// The answer to a pipeline sent.
type Reply = Pin<Box<dyn Future<Output = (Sent, redis::RedisResult<Vec<Value>>)> + Send>>;

/// The node's counters, for metrics.
#[derive(Debug, Default)]
pub(crate) struct StoreStats {
    /// Redis round trips (pipelines, heartbeats, snapshots).
    pub(crate) round_trips: AtomicU64,
    /// Their total time, microseconds.
    pub(crate) round_trip_us: AtomicU64,
    /// The last one, microseconds.
    pub(crate) last_round_trip_us: AtomicU64,
    /// Commands sent.
    pub(crate) commands: AtomicU64,
    /// Failed round trips.
    pub(crate) errors: AtomicU64,
    /// Messages published for other nodes.
    pub(crate) relayed_out: AtomicU64,
    /// The PUBLISHes that carried them (the messages for one node that
    /// are ready at once share one).
    pub(crate) publishes: AtomicU64,
    /// Messages received for this node.
    pub(crate) relayed_in: AtomicU64,
    /// Messages for other nodes dropped while Redis was unreachable.
    pub(crate) dropped: AtomicU64,
    /// Dead nodes this node reaped.
    pub(crate) reaped: AtomicU64,
    /// Redis answers now.
    pub(crate) healthy: AtomicBool,
}

impl StoreStats {
    /// Counts one round trip of `commands` that took since `started`.
    pub(super) fn timed(&self, started: Instant, commands: usize, ok: bool) {
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.round_trips.fetch_add(1, Relaxed);
        self.round_trip_us.fetch_add(us, Relaxed);
        self.last_round_trip_us.store(us, Relaxed);
        self.commands.fetch_add(commands as u64, Relaxed);
        if !ok {
            self.errors.fetch_add(1, Relaxed);
        }
    }
}

/// What the store task needs.
#[derive(Clone)]
pub(super) struct StoreConfig {
    pub(super) node: String,
    pub(super) prefix: String,
    pub(super) heartbeat: Duration,
    pub(super) expiry: Duration,
}

/// A node's connections to Redis.
pub(super) struct Links {
    pub(super) client: Client,
    /// The store's: joins, leaves and messages.
    pub(super) conn: ConnectionManager,
    /// The heartbeat's and the fleet's.
    pub(super) beat: ConnectionManager,
}

/// Connects to Redis (within `timeout`): the error says why not.
pub(super) async fn connect(url: &str, timeout: Duration) -> Result<Links, String> {
    let client = Client::open(url).map_err(|e| format!("cluster.redis {url:?}: {e}"))?;
    let manager = || async {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(Duration::from_secs(1))
            .set_number_of_retries(1)
            .set_max_delay(500);
        tokio::time::timeout(timeout, client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| format!("cluster.redis {url:?}: no answer in {timeout:?}"))?
            .map_err(|e| format!("cluster.redis {url:?}: {e}"))
    };
    let conn = manager().await?;
    let beat = manager().await?;
    Ok(Links { client, conn, beat })
}

pub(super) struct Store {
    cfg: StoreConfig,
    client: Client,
    conn: ConnectionManager,
    /// The heartbeat's connection, until the heartbeat task takes it.
    beat_conn: Option<ConnectionManager>,
    /// `<prefix>node:<node>`: this node's channel.
    node_channel: String,
    /// `<prefix>room:`: what room channels begin with.
    room_prefix: String,
    sink: Option<PubSubSink>,
    /// The pub/sub messages, read by this task itself (no task in
    /// between: one hop less for every message from another node).
    stream: Option<PubSubStream>,
    events: mpsc::Sender<ClusterEvent>,
    /// Rooms with members here (their channels are subscribed).
    watched: HashSet<String>,
    /// This node's members: room → peer id → the peer.
    local: HashMap<String, HashMap<String, PeerInfo>>,
    /// Redis answered the last round trip.
    healthy: bool,
    stats: Arc<StoreStats>,
    /// This node's TURN fleet view, when it serves TURN.
    fleet: Option<Arc<Fleet>>,
}

impl Store {
    pub(super) fn new(
        cfg: StoreConfig,
        links: Links,
        events: mpsc::Sender<ClusterEvent>,
        stats: Arc<StoreStats>,
        fleet: Option<Arc<Fleet>>,
    ) -> Store {
        Store {
            node_channel: format!("{}node:{}", cfg.prefix, cfg.node),
            room_prefix: format!("{}room:", cfg.prefix),
            cfg,
            client: links.client,
            conn: links.conn,
            beat_conn: Some(links.beat),
            sink: None,
            stream: None,
            events,
            watched: HashSet::new(),
            local: HashMap::new(),
            healthy: true,
            stats,
            fleet,
        }
    }

    fn key(&self, what: &str) -> String {
        format!("{}{what}", self.cfg.prefix)
    }

    fn room_key(&self, room: &str) -> String {
        format!("{}room:{room}", self.cfg.prefix)
    }

    fn node_set(&self) -> String {
        format!("{}node:{}:members", self.cfg.prefix, self.cfg.node)
    }

    /// Runs until the rooms' side closes `ops`; then leaves every room.
    pub(super) async fn run(mut self, mut ops: mpsc::Receiver<ClusterOp>) {
        self.stats.healthy.store(true, Relaxed);
        self.open_pubsub().await;
        let (reports_tx, mut reports) = mpsc::channel(4);
        let beat = self.beat_conn.take().map(|conn| {
            tokio::spawn(
                Beat {
                    cfg: self.cfg.clone(),
                    conn,
                    stats: self.stats.clone(),
                    fleet: self.fleet.clone(),
                    reports: reports_tx,
                }
                .run(),
            )
        });
        // Pipelines sent and not answered yet, answered in the order sent.
        let mut in_flight: FuturesOrdered<Reply> = FuturesOrdered::new();
        loop {
            tokio::select! {
                op = ops.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                    let Some(op) = op else { break };
                    let mut batch = vec![op];
                    while batch.len() < BATCH {
                        match ops.try_recv() {
                            Ok(op) => batch.push(op),
                            Err(_) => break,
                        }
                    }
                    if let Some(reply) = self.send_batch(batch).await {
                        in_flight.push_back(reply);
                        // Let the connection's writer task run now: without
                        // this its write to Redis came later, and a lone
                        // message's round trip took about twice as long
                        // (p50 about 280 us instead of 130, cluster_bench
                        // --hops: the `sub` hop; docs/performance.md).
                        tokio::task::yield_now().await;
                    }
                }
                Some((sent, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.answered(sent, result).await;
                }
                m = next_message(&mut self.stream) => match m {
                    Some(m) => self.on_message(m.get_channel_name(), m.get_payload_bytes()).await,
                    None => {
                        tracing::warn!("cluster: the Redis pub/sub connection was lost");
                        self.sink = None;
                        self.stream = None;
                    }
                },
                Some(report) = reports.recv() => self.beaten(report).await,
            }
        }
        while let Some((sent, result)) = in_flight.next().await {
            self.answered(sent, result).await;
        }
        // No heartbeat after the node left.
        if let Some(b) = beat {
            b.abort();
            let _ = b.await;
        }
        self.leave_all().await;
    }

    /// A heartbeat's outcome: catches up after a break.
    async fn beaten(&mut self, report: BeatReport) {
        match report {
            BeatReport::Answered => {
                let mut resync = !self.healthy;
                self.set_healthy(true);
                if self.sink.is_none() {
                    resync |= self.open_pubsub().await;
                }
                if resync {
                    self.catch_up().await;
                }
            }
            BeatReport::Failed => self.set_healthy(false),
        }
    }

    /// Opens the pub/sub connection and subscribes this node's channel and
    /// every watched room's; false when Redis does not answer.
    async fn open_pubsub(&mut self) -> bool {
        let opened =
            tokio::time::timeout(Duration::from_secs(2), self.client.get_async_pubsub()).await;
        let pubsub = match opened {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::debug!("cluster: pub/sub: {e}");
                return false;
            }
            Err(_) => return false,
        };
        let (mut sink, stream) = pubsub.split();
        let mut channels = vec![self.node_channel.clone()];
        channels.extend(self.watched.iter().map(|r| self.room_key(r)));
        if let Err(e) = sink.subscribe(&channels).await {
            tracing::debug!("cluster: subscribe: {e}");
            return false;
        }
        self.sink = Some(sink);
        self.stream = Some(stream);
        true
    }

    /// Counts one round trip.
    fn timed(&self, started: Instant, commands: usize, ok: bool) {
        self.stats.timed(started, commands, ok);
    }

    fn set_healthy(&mut self, ok: bool) {
        self.healthy = ok;
        self.stats.healthy.store(ok, Relaxed);
    }

    fn member_value(&self, peer: &PeerInfo) -> String {
        format!("{}\n{}", self.cfg.node, member_tail(peer))
    }

    fn join_event(&self, peer: &PeerInfo) -> String {
        format!("J\n{}\n{}\n{}", peer.id, self.cfg.node, member_tail(peer))
    }

    fn join_cmd(&self, pipe: &mut redis::Pipeline, room: &str, peer: &PeerInfo, max: usize) {
        let key = self.room_key(room);
        pipe.cmd("EVAL")
            .arg(JOIN)
            .arg(3)
            .arg(&key)
            .arg(self.node_set())
            .arg(&key)
            .arg(&peer.id)
            .arg(self.member_value(peer))
            .arg(max)
            .arg(room)
            .arg(self.join_event(peer));
    }

    fn leave_cmd(&self, pipe: &mut redis::Pipeline, room: &str, peer: &str) {
        let key = self.room_key(room);
        pipe.cmd("EVAL")
            .arg(LEAVE)
            .arg(3)
            .arg(&key)
            .arg(self.node_set())
            .arg(&key)
            .arg(peer)
            .arg(&self.cfg.node)
            .arg(room)
            .arg(format!("L\n{peer}\n{}", self.cfg.node));
    }

    /// Sends the commands of `batch` as one pipeline, without waiting for
    /// its answer: returns the answer to come, or `None` when nothing went
    /// to Redis.
    async fn send_batch(&mut self, batch: Vec<ClusterOp>) -> Option<Reply> {
        // Watch a room before joining it, so that no event is missed.
        let mut subscribe = Vec::new();
        for op in &batch {
            if let ClusterOp::Join { room, .. } = op {
                if self.watched.insert(room.clone()) {
                    subscribe.push(self.room_key(room));
                }
            }
        }
        if !subscribe.is_empty() {
            if let Some(sink) = self.sink.as_mut() {
                if let Err(e) = sink.subscribe(&subscribe).await {
                    tracing::debug!("cluster: subscribe: {e}");
                    // Opened again at the next heartbeat (the old stream
                    // and its connection go with it).
                    self.sink = None;
                    self.stream = None;
                }
            }
        }
        let mut pipe = redis::pipe();
        // What each reply answers: a join's (conn, room), or nothing.
        let mut joins = Vec::new();
        let mut unwatch = Vec::new();
        let mut relays = 0u64;
        let mut publishes = 0u64;
        // The messages for other nodes: one PUBLISH per node for those
        // that come one after another, sent before the next join or leave
        // (a `bye` then a leave reach the other node in that order).
        let mut outbox = Outbox::default();
        let mut ready = Vec::new();
        for op in batch {
            if !matches!(op, ClusterOp::Relay { .. }) && !outbox.is_empty() {
                outbox.flush(&mut ready);
                publishes += self.publish(&mut pipe, &mut ready, &mut joins);
            }
            match op {
                ClusterOp::Join {
                    conn,
                    room,
                    peer,
                    max_room_size,
                } => {
                    self.join_cmd(&mut pipe, &room, &peer, max_room_size);
                    self.local
                        .entry(room.clone())
                        .or_default()
                        .insert(peer.id.clone(), peer.clone());
                    joins.push(Some((conn, room)));
                }
                ClusterOp::Leave {
                    room,
                    peer_id,
                    last,
                } => {
                    if !peer_id.is_empty() {
                        self.leave_cmd(&mut pipe, &room, &peer_id);
                        joins.push(None);
                    }
                    if let Some(m) = self.local.get_mut(&room) {
                        m.remove(&peer_id);
                        if m.is_empty() {
                            self.local.remove(&room);
                        }
                    }
                    if last {
                        unwatch.push(room);
                    }
                }
                ClusterOp::Relay { node, to, msg } => {
                    if !self.healthy {
                        self.stats.dropped.fetch_add(1, Relaxed);
                        continue;
                    }
                    // The JSON is written once, here; the receiving node
                    // hands it on as it is.
                    let json = msg.to_json();
                    tracing::trace!(target: "p2p_hop", hop = "batch", msg = json.as_str());
                    outbox.add(&node, &to, &json, &mut ready);
                    relays += 1;
                }
                other => tracing::debug!("cluster: {other:?} not handled"),
            }
        }
        outbox.flush(&mut ready);
        publishes += self.publish(&mut pipe, &mut ready, &mut joins);
        for room in unwatch {
            if self.local.contains_key(&room) {
                continue;
            }
            self.watched.remove(&room);
            let key = self.room_key(&room);
            if let Some(sink) = self.sink.as_mut() {
                let _ = sink.unsubscribe(key).await;
            }
        }
        if joins.is_empty() {
            return None;
        }
        let sent = Sent {
            joins,
            relays,
            publishes,
            started: Instant::now(),
        };
        let mut conn = self.conn.clone();
        let mut reply: Reply = Box::pin(async move {
            let result = pipe.query_async::<Vec<Value>>(&mut conn).await;
            (sent, result)
        });
        // Polled once now: the pipeline goes into the connection's queue
        // here, behind the ones sent before it (the connection writes them
        // in that order), not when the answers are next polled.
        if let Poll::Ready(done) = futures_util::poll!(reply.as_mut()) {
            reply = Box::pin(std::future::ready(done));
        }
        Some(reply)
    }

    /// A pipeline's answer: the joins' results go to the rooms.
    async fn answered(&mut self, sent: Sent, result: redis::RedisResult<Vec<Value>>) {
        let Sent {
            joins,
            relays,
            publishes,
            started,
        } = sent;
        self.timed(started, joins.len(), result.is_ok());
        tracing::trace!(target: "p2p_hop", hop = "rtt", us = started.elapsed().as_micros() as u64, publishes);
        match result {
            Ok(values) => {
                self.set_healthy(true);
                self.stats.relayed_out.fetch_add(relays, Relaxed);
                self.stats.publishes.fetch_add(publishes, Relaxed);
                for (what, v) in joins.into_iter().zip(values) {
                    if let Some((conn, room)) = what {
                        let result = parse_join(&v);
                        let ev = ClusterEvent::JoinResult { conn, room, result };
                        let _ = self.events.send(ev).await;
                    }
                }
            }
            Err(e) => {
                tracing::warn!("cluster: Redis: {e}; serving this node's members alone");
                self.set_healthy(false);
                self.stats.dropped.fetch_add(relays, Relaxed);
                // Joins go on with what this node knows; they are
                // registered again when Redis is back.
                for (conn, room) in joins.into_iter().flatten() {
                    let ev = ClusterEvent::JoinResult {
                        conn,
                        room,
                        result: Ok(Vec::new()),
                    };
                    let _ = self.events.send(ev).await;
                }
            }
        }
    }

    /// Puts a PUBLISH for each (node, payload) of `ready` in `pipe`;
    /// returns how many.
    fn publish(
        &self,
        pipe: &mut redis::Pipeline,
        ready: &mut Vec<(String, String)>,
        replies: &mut Vec<Option<(ConnId, String)>>,
    ) -> u64 {
        let n = ready.len() as u64;
        for (node, payload) in ready.drain(..) {
            let mut channel = String::with_capacity(self.cfg.prefix.len() + 5 + node.len());
            channel.push_str(&self.cfg.prefix);
            channel.push_str("node:");
            channel.push_str(&node);
            tracing::trace!(target: "p2p_hop", hop = "publish", msg = payload.as_str());
            pipe.cmd("PUBLISH").arg(channel).arg(payload);
            replies.push(None);
        }
        n
    }

    async fn on_message(&mut self, channel: &str, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        if channel == self.node_channel {
            tracing::trace!(target: "p2p_hop", hop = "sub", msg = text);
            // Not parsed here: the rooms read each message's type and
            // sender, and the addressee gets these very bytes.
            for (to, json) in outbox::messages(text) {
                self.stats.relayed_in.fetch_add(1, Relaxed);
                let ev = ClusterEvent::Deliver {
                    to: to.to_owned(),
                    json: json.to_owned(),
                };
                let _ = self.events.send(ev).await;
            }
            return;
        }
        let Some(room) = channel.strip_prefix(self.room_prefix.as_str()) else {
            return;
        };
        let mut parts = text.splitn(4, '\n');
        let ev = match (parts.next(), parts.next(), parts.next()) {
            (Some("J"), Some(peer), Some(node)) => ClusterEvent::MemberJoined {
                room: room.to_owned(),
                member: ClusterMember {
                    peer: parse_tail(peer.to_owned(), parts.next().unwrap_or("")),
                    node: node.to_owned(),
                },
            },
            (Some("L"), Some(peer), Some(node)) => ClusterEvent::MemberLeft {
                room: room.to_owned(),
                peer_id: peer.to_owned(),
                node: node.to_owned(),
            },
            _ => return,
        };
        let _ = self.events.send(ev).await;
    }

    /// After a break: this node's members are registered again (Redis may
    /// have restarted empty), stale ones removed, and each watched room's
    /// membership sent to the rooms as a snapshot.
    async fn catch_up(&mut self) {
        let mut pipe = redis::pipe();
        let mut n = 0;
        for (room, members) in &self.local {
            for peer in members.values() {
                self.join_cmd(&mut pipe, room, peer, usize::MAX / 2);
                n += 1;
            }
        }
        let rooms: Vec<String> = self.watched.iter().cloned().collect();
        for room in &rooms {
            pipe.cmd("HGETALL").arg(self.room_key(room));
        }
        pipe.cmd("SMEMBERS").arg(self.node_set());
        let started = Instant::now();
        let r: redis::RedisResult<Vec<Value>> = pipe.query_async(&mut self.conn).await;
        self.timed(started, n + rooms.len() + 1, r.is_ok());
        let Ok(values) = r else {
            self.set_healthy(false);
            return;
        };
        let mut values = values.into_iter().skip(n);
        for room in rooms {
            let Some(v) = values.next() else { break };
            let members = parse_members(&v);
            let _ = self
                .events
                .send(ClusterEvent::Snapshot { room, members })
                .await;
        }
        // Entries of this node that are no member any more.
        if let Some(Value::Array(entries) | Value::Set(entries)) = values.next() {
            let mut pipe = redis::pipe();
            let mut stale = 0;
            for e in entries {
                let Some(s) = as_string(&e) else { continue };
                let Some((room, peer)) = s.split_once('\n') else {
                    continue;
                };
                if !self.local.get(room).is_some_and(|m| m.contains_key(peer)) {
                    self.leave_cmd(&mut pipe, room, peer);
                    stale += 1;
                }
            }
            if stale > 0 {
                let _: redis::RedisResult<Vec<Value>> = pipe.query_async(&mut self.conn).await;
            }
        }
        tracing::info!("cluster: caught up with Redis");
    }

    /// On shutdown: this node's members leave at once (the other nodes do
    /// not wait for the expiry).
    async fn leave_all(&mut self) {
        let mut pipe = redis::pipe();
        for (room, members) in &self.local {
            for peer in members.keys() {
                self.leave_cmd(&mut pipe, room, peer);
            }
        }
        pipe.cmd("ZREM").arg(self.key("nodes")).arg(&self.cfg.node);
        pipe.cmd("DEL").arg(self.node_set());
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            pipe.query_async::<Vec<Value>>(&mut self.conn),
        )
        .await;
    }
}

/// The next pub/sub message; `None` when the connection ended; never
/// ready without one.
async fn next_message(stream: &mut Option<PubSubStream>) -> Option<redis::Msg> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// What follows the node in a member value (and in a `J` event): an
/// optional flags line `+<flags>\n` (`h`: the peer asks to hide host
/// addresses), then an optional `=<name>`. A node of an older version
/// wrote no flags line (so: no flags); it reads a member with flags as
/// one without a name. Names hold no control character.
fn member_tail(peer: &PeerInfo) -> String {
    let flags = if peer.hide_hosts { "+h\n" } else { "" };
    match &peer.name {
        Some(n) => format!("{flags}={n}"),
        None => flags.to_owned(),
    }
}

/// The peer `id` from a [`member_tail`].
fn parse_tail(id: String, tail: &str) -> PeerInfo {
    let (flags, name) = match tail.strip_prefix('+') {
        Some(rest) => rest.split_once('\n').unwrap_or((rest, "")),
        None => ("", tail),
    };
    PeerInfo {
        id,
        name: name.strip_prefix('=').map(str::to_owned),
        hide_hosts: flags.contains('h'),
    }
}

/// A member value `<node>\n<tail>` (see [`member_tail`]).
fn parse_member(peer: String, value: &str) -> Option<ClusterMember> {
    let (node, tail) = value.split_once('\n')?;
    Some(ClusterMember {
        peer: parse_tail(peer, tail),
        node: node.to_owned(),
    })
}

/// An HGETALL reply (flat array, or a RESP3 map).
fn parse_members(v: &Value) -> Vec<ClusterMember> {
    let mut out = Vec::new();
    match v {
        Value::Array(items) => {
            for pair in items.chunks(2) {
                if let [k, v] = pair {
                    if let (Some(k), Some(v)) = (as_string(k), as_string(v)) {
                        out.extend(parse_member(k, &v));
                    }
                }
            }
        }
        Value::Map(items) => {
            for (k, v) in items {
                if let (Some(k), Some(v)) = (as_string(k), as_string(v)) {
                    out.extend(parse_member(k, &v));
                }
            }
        }
        _ => {}
    }
    out
}

/// The JOIN script's reply: the members before the join, the joiner
/// among them when its membership survived a move (the rooms tell the
/// peer so, in `joined`'s `resumed`).
fn parse_join(v: &Value) -> Result<Vec<ClusterMember>, JoinRefusal> {
    let Value::Array(items) = v else {
        return Ok(Vec::new());
    };
    match items.first().and_then(as_string).as_deref() {
        Some("full") => Err(JoinRefusal::RoomFull),
        _ => Ok(items.get(1).map(parse_members).unwrap_or_default()),
    }
}

#[cfg(test)]
mod in_flight_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_replies_parse_with_the_joiner_when_it_was_a_member() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let v = Value::Array(vec![
            bulk("ok"),
            Value::Array(vec![
                bulk("p1"),
                bulk("n1\n=alice"),
                bulk("me"),
                bulk("n2\n"),
            ]),
        ]);
        let got = parse_join(&v).expect("ok");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].peer.id, "p1");
        assert_eq!(got[0].peer.name.as_deref(), Some("alice"));
        assert_eq!(got[0].node, "n1");
        assert_eq!(got[1].peer.id, "me");
        assert_eq!(
            parse_join(&Value::Array(vec![bulk("full")])),
            Err(JoinRefusal::RoomFull)
        );
    }

    fn peer(id: &str, name: Option<&str>, hide_hosts: bool) -> PeerInfo {
        PeerInfo {
            id: id.into(),
            name: name.map(str::to_owned),
            hide_hosts,
        }
    }

    #[test]
    fn a_member_carries_its_name_and_hide_hosts_and_an_old_nodes_member_hides_nothing() {
        for p in [
            peer("p1", None, false),
            peer("p1", Some("alice"), false),
            peer("p1", None, true),
            peer("p1", Some("al=+ice"), true),
        ] {
            let value = format!("n1\n{}", member_tail(&p));
            let m = parse_member("p1".into(), &value).expect("member");
            assert_eq!((m.peer, m.node.as_str()), (p.clone(), "n1"), "{value:?}");
        }
        // What a node of an older version wrote: no flags line.
        let old = parse_member("p2".into(), "n0\n=bob").expect("member");
        assert_eq!(old.peer, peer("p2", Some("bob"), false));
        let old = parse_member("p2".into(), "n0\n").expect("member");
        assert_eq!(old.peer, peer("p2", None, false));
        // A `J` event's tail is the same.
        assert_eq!(parse_tail("p3".into(), "+h\n"), peer("p3", None, true));
        // The old reader (name = the tail without '=') sees no name, and
        // the node prefix the Lua scripts compare is unchanged.
        let tail = member_tail(&peer("p1", Some("alice"), true));
        assert_eq!(tail.strip_prefix('='), None);
    }
}
