//! The TURN task: drives the state machine, sends what it says, opens and
//! closes the sockets it asks for, and reports its events.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use p2p_turn::{
    CredentialStore, Datagram, FiveTuple, Machine, RouteUpdate, ServerEvent, ServerOutput,
    SocketRequest, Transmit, Transport, TurnServer,
};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use crate::fastpath::{FastPath, FastTraffic, TcpMeter, TrafficSnapshot};
use crate::sys;

use super::authlog::AuthLog;
use super::relayed::RelayedSockets;
use super::send::{send_one, SendBatch};
use super::tcp_relay::connect_peer;
use super::{transport_index, BufPool, ConnQueue, Inbound, ToConnection, TurnStats, TRANSPORTS};

/// UDP transmits staged before they are sent in any case.
const PENDING_MAX: usize = 1024;

/// The credential store of the task's TURN server: any, chosen at run time.
pub(super) type Credentials = Box<dyn CredentialStore + Send>;

pub(super) struct TurnTask {
    pub(super) server: TurnServer<Credentials>,
    pub(super) listening: HashMap<SocketAddr, Arc<UdpSocket>>,
    /// The sockets of relayed addresses.
    pub(super) relayed: RelayedSockets,
    /// A client connection's 5-tuple (the server's view) → its queue.
    pub(super) conns: HashMap<FiveTuple, ConnQueue>,
    pub(super) stats: TurnStats,
    /// RFC 6062 peer connections waiting for their ConnectionBind.
    pub(super) peers: HashMap<u32, TcpStream>,
    /// Spliced peer connections: dropping the sender ends the splice.
    pub(super) splices: HashMap<u32, oneshot::Sender<()>>,
    /// The task's own inbound queue, for connect tasks to report on.
    pub(super) inbound: mpsc::Sender<Inbound>,
    /// Where inbound packet buffers come from and go back to.
    pub(super) pool: Arc<BufPool>,
    /// Inbound buffers handled, given back to the pool once per burst.
    pub(super) used: Vec<Vec<u8>>,
    /// UDP transmits of the current burst, sent by `send_pending`.
    pub(super) pending: Vec<Transmit>,
    /// The readers' queued counts of the burst's peer datagrams (one entry
    /// each), counted down once the burst's transmits are sent.
    pub(super) handled_from_peers: Vec<Arc<AtomicUsize>>,
    /// (source, index into `pending`), sorted to group the sends.
    pub(super) order: Vec<(SocketAddr, u32)>,
    /// Buffers for `sendmmsg`.
    pub(super) batch: Box<SendBatch>,
    /// The relay fast path, when on.
    pub(super) fast: Option<Arc<FastPath>>,
    /// What allocations relayed outside the TURN server: UDP ones on the
    /// fast path, RFC 6062 ones over their spliced TCP connections.
    pub(super) fast_traffic: HashMap<FiveTuple, Arc<FastTraffic>>,
    /// The RFC 6062 allocations' meters (traffic and bandwidth cap).
    pub(super) tcp_meters: HashMap<FiveTuple, Arc<TcpMeter>>,
    /// Such traffic of allocations that ended, by client transport
    /// ([`transport_index`]).
    pub(super) fast_retired: [TrafficSnapshot; 3],
    /// Where the events go for the embedding program, if anywhere.
    pub(super) events: Option<mpsc::Sender<ServerEvent>>,
    /// Events the embedding program's queue had no room for.
    pub(super) events_dropped: u64,
    /// Authentication failures of the current summary window.
    pub(super) auth_log: AuthLog,
}

impl TurnTask {
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Inbound>) {
        loop {
            let deadline = self.server.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let summary = self.auth_log.due();
            let summary_due = async {
                match summary {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                m = rx.recv() => {
                    let Some(m) = m else { return };
                    if let Inbound::Stop(reply) = m {
                        self.stop(reply).await;
                        return;
                    }
                    self.on_message(m).await;
                    // Whatever else is queued, without waiting.
                    for _ in 0..256 {
                        match rx.try_recv() {
                            Ok(Inbound::Stop(reply)) => {
                                self.end_burst().await;
                                self.stop(reply).await;
                                return;
                            }
                            Ok(m) => self.on_message(m).await,
                            Err(_) => break,
                        }
                    }
                    self.end_burst().await;
                }
                () = sleep => {
                    self.server.handle_timeout(Instant::now());
                    self.flush().await;
                    self.send_pending().await;
                }
                () = summary_due => self.log_auth_summary(),
            }
        }
    }

    /// Send the burst's transmits, let the readers take the fast path
    /// again, recycle the inbound buffers.
    async fn end_burst(&mut self) {
        self.send_pending().await;
        self.count_down_handled();
        self.pool.give_back(&mut self.used);
    }

    /// Log the authentication failures of the window that ends.
    fn log_auth_summary(&mut self) {
        let throttled = self.server.counters().auth_throttled;
        if let Some(line) = self.auth_log.summary(Instant::now(), throttled) {
            tracing::info!("{line}");
        }
    }

    /// End every allocation, close every socket, and report.
    async fn stop(&mut self, reply: oneshot::Sender<TurnStats>) {
        self.log_auth_summary();
        self.server.shutdown();
        self.flush().await;
        self.send_pending().await;
        self.peers.clear();
        self.splices.clear();
        if self.events_dropped > 0 {
            tracing::warn!(
                dropped = self.events_dropped,
                "turn events the embedding program did not take in time"
            );
        }
        let _ = reply.send(self.snapshot());
    }

    pub(super) async fn on_message(&mut self, m: Inbound) {
        let now = Instant::now();
        match m {
            Inbound::FromClient {
                transport,
                local,
                remote,
                bytes,
                conn,
            } => {
                if let Some(c) = conn {
                    let ft = FiveTuple::new(transport, local, remote);
                    self.conns.entry(ft).or_insert(c);
                }
                self.stats.by_transport[transport_index(transport)].client_packets_in += 1;
                let d = Datagram::new(transport, remote, local, &bytes);
                let _ = self.server.handle_input(now, d);
                self.used.push(bytes);
                self.flush().await;
            }
            Inbound::FromPeer {
                relayed,
                peer,
                bytes,
            } => {
                // Counted down once what it produced is sent.
                if let Some(r) = self.relayed.get(relayed) {
                    self.handled_from_peers.push(r.queued.clone());
                }
                let _ = self
                    .server
                    .handle_input(now, Datagram::udp(peer, relayed, &bytes));
                self.used.push(bytes);
                self.flush().await;
            }
            Inbound::Closed {
                transport,
                local,
                remote,
            } => {
                let ft = FiveTuple::new(transport, local, remote);
                self.conns.remove(&ft);
                // An allocation, or a peer connection spliced to this one, ends.
                self.server.connection_closed(&ft);
                self.flush().await;
            }
            Inbound::PeerAccepted {
                relayed,
                peer,
                stream,
            } => {
                match self.server.tcp_peer_connected(now, relayed, peer) {
                    Some(id) => {
                        tracing::debug!(%relayed, %peer, id, "turn peer connection accepted");
                        self.peers.insert(id, stream);
                    }
                    None => tracing::debug!(%relayed, %peer, "turn peer connection refused"),
                }
                self.flush().await;
            }
            Inbound::PeerConnected { id, stream } => {
                let keep = self.server.tcp_connect_result(now, id, stream.is_ok());
                match stream {
                    Ok(s) if keep => {
                        self.peers.insert(id, s);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(id, "turn connect to peer: {e}"),
                }
                self.flush().await;
            }
            Inbound::Stats(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Inbound::Alternates(servers, tls) => {
                if self.server.alternate_servers() != servers.as_slice() {
                    self.server.set_alternate_servers(servers);
                }
                if self.server.tls_alternate_servers() != tls.as_slice() {
                    self.server.set_tls_alternate_servers(tls);
                }
            }
            Inbound::Reload {
                credentials,
                peer_policy,
                done,
            } => {
                // Allocations, permissions and channels stay; the next
                // authentication and the next peer checked see the new ones.
                *self.server.credentials_mut() = credentials;
                self.server.set_peer_policy(peer_policy);
                let _ = done.send(());
            }
            // Handled by `run`.
            Inbound::Stop(reply) => self.stop(reply).await,
        }
    }

    /// Act on everything the server handed out, in its order: publish
    /// routes, stage or send transmits, open and close sockets (answering
    /// the server at once), report events.
    pub(super) async fn flush(&mut self) {
        while let Some(o) = self.server.poll_output() {
            match o {
                ServerOutput::Route(r) => self.route(r),
                ServerOutput::Transmit(t) => self.transmit(t).await,
                ServerOutput::Socket(s) => self.socket(s),
                ServerOutput::Event(e) => self.on_event(e),
                other => tracing::debug!(output = ?other, "turn output ignored"),
            }
        }
    }

    async fn transmit(&mut self, t: Transmit) {
        if t.transport == Transport::Udp {
            // Sent in batches per source socket by `send_pending`.
            self.pending.push(t);
            if self.pending.len() >= PENDING_MAX {
                self.send_pending().await;
            }
            return;
        }
        let ok = match self.conns.get(&t.five_tuple()) {
            Some(c) => c.push(ToConnection::Write(t.contents)),
            None => false,
        };
        if ok {
            self.stats.by_transport[transport_index(t.transport)].client_packets_out += 1;
        } else {
            self.stats.send_errors += 1;
        }
    }

    /// Open or close a socket the server asked for.
    fn socket(&mut self, s: SocketRequest) {
        let now = Instant::now();
        match s {
            SocketRequest::BindUdp { relayed } => {
                let bound = self.relayed.bind_udp(relayed);
                self.server.bind_result(now, relayed, bound);
            }
            SocketRequest::ReserveUdp { reserved } => {
                let bound = self.relayed.reserve_udp(reserved);
                self.server.bind_result(now, reserved, bound);
            }
            SocketRequest::ListenTcp { relayed } => {
                let bound = self.relayed.listen_tcp(relayed);
                self.server.bind_result(now, relayed, bound);
            }
            SocketRequest::Release { relayed } => self.relayed.release(relayed),
            SocketRequest::ConnectTcp { id, relayed, peer } => {
                let from = self
                    .relayed
                    .tcp_bound(relayed)
                    .unwrap_or(SocketAddr::new(relayed.ip(), 0));
                tokio::spawn(connect_peer(id, from, peer, self.inbound.clone()));
            }
            SocketRequest::SpliceTcp {
                id,
                client,
                allocation,
            } => {
                let meter = self.tcp_meter(allocation);
                let conn = self.conns.get(&client);
                let spliced = match (self.peers.remove(&id), conn) {
                    (Some(peer), Some(conn)) => {
                        let (kill_tx, kill) = oneshot::channel();
                        let splice = ToConnection::Splice { peer, kill, meter };
                        let ok = conn.push(splice);
                        if ok {
                            self.splices.insert(id, kill_tx);
                        }
                        ok
                    }
                    _ => false,
                };
                if spliced {
                    tracing::debug!(id, client = %client.remote, "turn peer connection bound");
                } else {
                    self.server.tcp_peer_closed(id);
                }
            }
            SocketRequest::CloseTcp { id } => {
                self.peers.remove(&id);
                self.splices.remove(&id);
            }
            other => tracing::debug!(request = ?other, "turn socket request ignored"),
        }
    }

    /// Publish or withdraw a fast-path route.
    pub(super) fn route(&mut self, r: RouteUpdate) {
        let Some(fast) = &self.fast else {
            return;
        };
        match r {
            RouteUpdate::Up(route) => {
                let relayed = self.relayed.get(route.relayed).map(|r| r.sock.clone());
                let listening = self.listening.get(&route.five_tuple.local).cloned();
                let (Some(relayed), Some(listening)) = (relayed, listening) else {
                    return;
                };
                let traffic = self
                    .fast_traffic
                    .entry(route.five_tuple)
                    .or_default()
                    .clone();
                fast.up(&route, relayed, listening, traffic);
            }
            RouteUpdate::Down(route) => fast.down(&route),
            other => tracing::debug!(update = ?other, "turn route update ignored"),
        }
    }

    /// The meter of an RFC 6062 allocation, made on its first splice with
    /// the server's bandwidth cap.
    pub(super) fn tcp_meter(&mut self, allocation: FiveTuple) -> Arc<TcpMeter> {
        let cap = self
            .server
            .config()
            .bandwidth
            .map(|b| (b.bytes_per_sec, b.burst));
        let traffic = self.fast_traffic.entry(allocation).or_default().clone();
        self.tcp_meters
            .entry(allocation)
            .or_insert_with(|| Arc::new(TcpMeter::new(traffic, cap, Instant::now())))
            .clone()
    }

    /// Fold what an allocation relayed outside the TURN server into its
    /// traffic.
    pub(super) fn fold_fast(&mut self, five_tuple: &FiveTuple, traffic: &mut p2p_turn::Traffic) {
        self.tcp_meters.remove(five_tuple);
        if let Some(t) = self.fast_traffic.remove(five_tuple) {
            let f = t.snapshot();
            traffic.packets_to_peer += f.packets_to_peer;
            traffic.bytes_to_peer += f.bytes_to_peer;
            traffic.packets_to_client += f.packets_to_client;
            traffic.bytes_to_client += f.bytes_to_client;
            self.fast_retired[transport_index(five_tuple.transport)] += f;
        }
    }

    pub(super) fn snapshot(&self) -> TurnStats {
        let mut st = self.stats.clone();
        st.counters = self.server.counters();
        for (i, t) in TRANSPORTS.iter().enumerate() {
            let k = self.server.transport_counters(*t);
            let s = &mut st.by_transport[i];
            s.allocations_created = k.allocations_created;
            s.requests = k.requests;
            s.auth_failures = k.auth_failures;
            s.bytes_to_peer = k.bytes_to_peer;
            s.packets_to_peer = k.packets_to_peer;
            s.bytes_to_client = k.bytes_to_client;
            s.packets_to_client = k.packets_to_client;
        }
        // Relayed outside the TURN server: by client transport (UDP: the
        // fast path; TCP/TLS: RFC 6062 splices).
        let mut f = self.fast_retired;
        for (ft, t) in &self.fast_traffic {
            f[transport_index(ft.transport)] += t.snapshot();
        }
        for (i, f) in f.iter().enumerate() {
            let c = &mut st.counters;
            c.packets_to_peer += f.packets_to_peer;
            c.bytes_to_peer += f.bytes_to_peer;
            c.packets_to_client += f.packets_to_client;
            c.bytes_to_client += f.bytes_to_client;
            let s = &mut st.by_transport[i];
            s.packets_to_peer += f.packets_to_peer;
            s.bytes_to_peer += f.bytes_to_peer;
            s.packets_to_client += f.packets_to_client;
            s.bytes_to_client += f.bytes_to_client;
        }
        let udp = f[transport_index(Transport::Udp)];
        // Fast-path ChannelData came from and went to clients over UDP.
        let s = &mut st.by_transport[transport_index(Transport::Udp)];
        s.client_packets_in += udp.packets_to_peer;
        s.client_packets_out += udp.packets_to_client;
        st.fast_path_packets = udp.packets_to_peer + udp.packets_to_client;
        if let Some(fast) = &self.fast {
            st.send_errors += fast.send_errors();
        }
        for s in &mut st.by_transport {
            s.allocations = 0;
            s.permissions = 0;
            s.channels = 0;
        }
        for (ft, a) in self.server.allocations(Instant::now()) {
            let s = &mut st.by_transport[transport_index(ft.transport)];
            s.allocations += 1;
            s.permissions += a.permissions as u64;
            s.channels += a.channels as u64;
        }
        st
    }

    /// The burst's peer datagrams are handled and what they produced is
    /// sent: their readers may take the fast path again.
    pub(super) fn count_down_handled(&mut self) {
        for q in self.handled_from_peers.drain(..) {
            // Never below zero: a relayed address given up and taken again
            // within one burst has a fresh count.
            let _ = q.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
        }
    }

    /// Send the staged UDP transmits: grouped per source socket (each
    /// group in its order, so no flow is reordered) and batched with
    /// `sendmmsg`; then recycle their buffers.
    pub(super) async fn send_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.order.clear();
        self.order.extend(
            self.pending
                .iter()
                .enumerate()
                .map(|(i, t)| (t.source, i as u32)),
        );
        self.order.sort_unstable();
        let mut at = 0;
        while at < self.order.len() {
            let source = self.order[at].0;
            let end = at
                + self.order[at..]
                    .iter()
                    .take_while(|(s, _)| *s == source)
                    .count();
            let to_client = self.listening.contains_key(&source);
            let sock = self
                .listening
                .get(&source)
                .or_else(|| self.relayed.get(source).map(|r| &r.sock))
                .cloned();
            let (mut sent, mut failed) = (0, 0);
            match sock {
                None => failed = (end - at) as u64,
                Some(sock) => {
                    for &(_, i) in &self.order[at..end] {
                        let t = &self.pending[i as usize];
                        if t.contents.len() > sys::BUF {
                            if send_one(&sock, &t.contents, t.destination).await {
                                sent += 1;
                            } else {
                                failed += 1;
                            }
                            continue;
                        }
                        if self.batch.push(&t.contents, t.destination) {
                            let (s, f) = self.batch.send(&sock).await;
                            sent += s;
                            failed += f;
                        }
                    }
                    let (s, f) = self.batch.send(&sock).await;
                    sent += s;
                    failed += f;
                }
            }
            self.stats.send_errors += failed;
            if to_client {
                self.stats.by_transport[0].client_packets_out += sent;
            }
            at = end;
        }
        for t in self.pending.drain(..) {
            self.server.recycle(t.contents);
        }
    }

    /// Log an event and hand it to the embedding program (an ended
    /// allocation's traffic with what it relayed outside the server).
    fn on_event(&mut self, mut e: ServerEvent) {
        match &mut e {
            ServerEvent::AllocationCreated {
                user,
                five_tuple,
                relayed,
                lifetime,
            } => {
                if let Some(c) = self.conns.get(five_tuple) {
                    c.push(ToConnection::Allocated(true));
                }
                tracing::info!(
                    %user,
                    client = %five_tuple.remote,
                    server = %five_tuple.local,
                    transport = %five_tuple.transport,
                    relayed = ?relayed,
                    lifetime_secs = lifetime.as_secs(),
                    "turn allocation created"
                );
            }
            ServerEvent::AllocationRefreshed {
                user,
                five_tuple,
                lifetime,
            } => {
                tracing::debug!(
                    %user,
                    client = %five_tuple.remote,
                    transport = %five_tuple.transport,
                    lifetime_secs = lifetime.as_secs(),
                    "turn allocation refreshed"
                );
            }
            ServerEvent::AllocationEnded {
                user,
                five_tuple,
                relayed,
                traffic,
                reason,
            } => {
                let ft = *five_tuple;
                if let Some(c) = self.conns.get(&ft) {
                    c.push(ToConnection::Allocated(false));
                }
                self.fold_fast(&ft, traffic);
                tracing::info!(
                    %user,
                    client = %five_tuple.remote,
                    transport = %five_tuple.transport,
                    relayed = ?relayed,
                    bytes_to_peer = traffic.bytes_to_peer,
                    packets_to_peer = traffic.packets_to_peer,
                    bytes_to_client = traffic.bytes_to_client,
                    packets_to_client = traffic.packets_to_client,
                    dropped_bandwidth = traffic.dropped_bandwidth,
                    "turn allocation {}",
                    match reason {
                        p2p_turn::EndReason::ConnectionClosed => "closed with its connection",
                        r => r.as_str(),
                    }
                );
            }
            ServerEvent::PermissionCreated { five_tuple, peer } => {
                tracing::debug!(client = %five_tuple.remote, %peer, "turn permission created");
            }
            ServerEvent::ChannelBound {
                five_tuple,
                channel,
                peer,
            } => {
                tracing::debug!(client = %five_tuple.remote, channel, %peer, "turn channel bound");
            }
            ServerEvent::AuthFailed {
                five_tuple,
                username,
                reason,
            } => {
                // Counted into a summary each window (at INFO), one line each
                // only at DEBUG: a guesser must not fill the log.
                tracing::debug!(
                    remote = %five_tuple.remote,
                    username = username.as_deref().unwrap_or(""),
                    reason = ?reason,
                    transport = %five_tuple.transport,
                    "turn authentication failed"
                );
                let throttled = self.server.counters().auth_throttled;
                let ip = five_tuple.remote.ip();
                self.auth_log.failed(Instant::now(), ip, *reason, throttled);
            }
            ServerEvent::PeerRefused {
                five_tuple,
                user,
                peer,
                rule,
            } => {
                // At the default level: an operator needs it to tell a
                // refused peer from a broken client.
                tracing::info!(
                    %user,
                    client = %five_tuple.remote,
                    %peer,
                    "turn peer refused (403): {rule}"
                );
            }
            ServerEvent::RequestRefused {
                five_tuple,
                user,
                method,
                code,
            } => {
                tracing::debug!(
                    remote = %five_tuple.remote,
                    transport = %five_tuple.transport,
                    user = user.as_deref().unwrap_or(""),
                    method = ?method,
                    code,
                    "turn request refused"
                );
            }
            other => tracing::debug!(event = ?other, "turn event"),
        }
        if let Some(tx) = &self.events {
            if tx.try_send(e).is_err() {
                self.events_dropped += 1;
            }
        }
    }
}
