//! The TURN task: drives the state machine, sends what it says, performs its socket operations.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use p2p_turn::TcpCommand;
use p2p_turn::{Datagram, FiveTuple, RouteUpdate, ServerEvent, Transport, TurnServer};
use tokio::io::Interest;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use crate::fastpath::{FastPath, FastTraffic, TcpMeter, TrafficSnapshot};
use crate::sys;

use super::*;

/// UDP transmits staged before they are sent in any case.
const PENDING_MAX: usize = 1024;

pub(super) type ConnKey = (Transport, SocketAddr, SocketAddr);

pub(super) struct TurnTask {
    pub(super) server: TurnServer<Creds, DaemonRelays>,
    pub(super) listening: HashMap<SocketAddr, Arc<UdpSocket>>,
    /// (transport, server address, client address) → the connection's queue.
    pub(super) conns: HashMap<ConnKey, mpsc::Sender<ConnOut>>,
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
    pub(super) pending: Vec<p2p_turn::Transmit>,
    /// The readers' [`Relay::queued`] of the burst's peer datagrams (one
    /// entry each), counted down once the burst's transmits are sent.
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
}

/// Up to [`sys::BATCH`] datagrams for one `sendmmsg` call.
pub(super) struct SendBatch {
    bufs: [[u8; sys::BUF]; sys::BATCH],
    lens: [usize; sys::BATCH],
    dests: [SocketAddr; sys::BATCH],
    /// How many are filled.
    n: usize,
    /// Cleared when the system has no `sendmmsg`.
    batched: bool,
}

impl SendBatch {
    pub(super) fn new() -> Box<Self> {
        Box::new(SendBatch {
            bufs: [[0; sys::BUF]; sys::BATCH],
            lens: [0; sys::BATCH],
            dests: [SocketAddr::from(([0, 0, 0, 0], 0)); sys::BATCH],
            n: 0,
            batched: true,
        })
    }

    /// Send the filled datagrams from `sock`; returns (sent, failed).
    pub(super) async fn send(&mut self, sock: &UdpSocket) -> (u64, u64) {
        let n = std::mem::take(&mut self.n);
        let fd = sock.as_raw_fd();
        let (mut sent, mut failed, mut done) = (0, 0, 0);
        while done < n {
            let r = if self.batched {
                sock.try_io(Interest::WRITABLE, || {
                    sys::send_batch(
                        fd,
                        &self.bufs[done..n],
                        &self.lens[done..n],
                        &self.dests[done..n],
                    )
                })
            } else {
                sock.try_send_to(&self.bufs[done][..self.lens[done]], self.dests[done])
                    .map(|_| 1)
            };
            match r {
                Ok(k) => {
                    let k = k.clamp(1, n - done);
                    sent += k as u64;
                    done += k;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if sock.writable().await.is_err() {
                        failed += (n - done) as u64;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Unsupported => self.batched = false,
                Err(e) => {
                    // The first datagram failed (say, no route): skip it.
                    tracing::debug!(to = %self.dests[done], "turn send: {e}");
                    failed += 1;
                    done += 1;
                }
            }
        }
        (sent, failed)
    }
}

/// Send one datagram (one too large for a [`SendBatch`] buffer).
pub(super) async fn send_one(sock: &UdpSocket, bytes: &[u8], to: SocketAddr) -> bool {
    match sock.try_send_to(bytes, to) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.send_to(bytes, to).await.is_ok(),
        Err(e) => {
            tracing::debug!(%to, "turn send: {e}");
            false
        }
    }
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
            tokio::select! {
                m = rx.recv() => {
                    let Some(m) = m else { return };
                    self.on_message(m).await;
                    // Whatever else is queued, without waiting.
                    for _ in 0..256 {
                        match rx.try_recv() {
                            Ok(m) => self.on_message(m).await,
                            Err(_) => break,
                        }
                    }
                    self.send_pending().await;
                    self.count_down_handled();
                    self.pool.give_back(&mut self.used);
                }
                () = sleep => {
                    self.server.handle_timeout(Instant::now());
                    self.flush(None).await;
                    self.send_pending().await;
                }
            }
        }
    }

    pub(super) async fn on_message(&mut self, m: Inbound) {
        match m {
            Inbound::Packet {
                transport,
                local,
                remote,
                bytes,
                conn,
            } => {
                let relayed = self.server.relayed_address_transport(local);
                let from_peer = relayed.is_some();
                // A datagram a relayed socket's reader handed over.
                if let Some(q) = self.server.relays().queued(local) {
                    self.handled_from_peers.push(q);
                }
                if !from_peer {
                    if let Some(c) = conn {
                        self.conns.entry((transport, local, remote)).or_insert(c);
                    }
                }
                let t = relayed.unwrap_or(transport);
                let before = *self.server.counters();
                self.server.handle_input(
                    Instant::now(),
                    Datagram {
                        transport,
                        local,
                        remote,
                        bytes: &bytes,
                    },
                );
                let after = *self.server.counters();
                let s = &mut self.stats.by_transport[transport_index(t)];
                if !from_peer {
                    s.client_packets_in += 1;
                }
                s.requests += after.requests - before.requests;
                s.auth_failures += after.auth_failures - before.auth_failures;
                s.bytes_to_peer += after.bytes_to_peer - before.bytes_to_peer;
                s.packets_to_peer += after.packets_to_peer - before.packets_to_peer;
                s.bytes_to_client += after.bytes_to_client - before.bytes_to_client;
                s.packets_to_client += after.packets_to_client - before.packets_to_client;
                self.used.push(bytes);
                self.flush(Some(t)).await;
            }
            Inbound::Closed {
                transport,
                local,
                remote,
            } => {
                self.conns.remove(&(transport, local, remote));
                let ft = FiveTuple {
                    client: remote,
                    server: local,
                    transport,
                };
                // An allocation, or a peer connection spliced to this one, ends.
                self.server.connection_closed(Instant::now(), &ft);
                self.flush(Some(transport)).await;
            }
            Inbound::PeerAccepted {
                relayed,
                peer,
                stream,
            } => {
                match self
                    .server
                    .tcp_peer_connected(Instant::now(), relayed, peer)
                {
                    Some(id) => {
                        tracing::debug!(%relayed, %peer, id, "turn peer connection accepted");
                        self.peers.insert(id, stream);
                    }
                    None => tracing::debug!(%relayed, %peer, "turn peer connection refused"),
                }
                let t = self.server.relayed_address_transport(relayed);
                self.flush(t).await;
            }
            Inbound::PeerConnected { id, stream } => {
                let keep = self
                    .server
                    .tcp_connect_result(Instant::now(), id, stream.is_ok());
                match stream {
                    Ok(s) if keep => {
                        self.peers.insert(id, s);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(id, "turn connect to peer: {e}"),
                }
                self.flush(None).await;
            }
            Inbound::Stats(reply) => {
                let _ = reply.send(self.snapshot());
            }
        }
    }

    /// Perform an RFC 6062 socket operation the server asked for.
    pub(super) fn command(&mut self, c: TcpCommand) {
        match c {
            TcpCommand::Connect { id, relayed, peer } => {
                let from = self
                    .server
                    .relays()
                    .tcp_bound(relayed)
                    .unwrap_or(SocketAddr::new(relayed.ip(), 0));
                tokio::spawn(connect_peer(id, from, peer, self.inbound.clone()));
            }
            TcpCommand::Splice {
                id,
                client,
                allocation,
            } => {
                let meter = self.tcp_meter(allocation);
                let conn = self
                    .conns
                    .get(&(client.transport, client.server, client.client));
                let spliced = match (self.peers.remove(&id), conn) {
                    (Some(peer), Some(conn)) => {
                        let (kill_tx, kill) = oneshot::channel();
                        let ok = conn.try_send(ConnOut::Splice { peer, kill, meter }).is_ok();
                        if ok {
                            self.splices.insert(id, kill_tx);
                        }
                        ok
                    }
                    _ => false,
                };
                if spliced {
                    tracing::debug!(id, client = %client.client, "turn peer connection bound");
                } else {
                    self.server.tcp_peer_closed(Instant::now(), id);
                }
            }
            TcpCommand::Close { id } => {
                self.peers.remove(&id);
                self.splices.remove(&id);
            }
            other => tracing::debug!(command = ?other, "turn command ignored"),
        }
    }

    /// Publish or withdraw a fast-path route.
    pub(super) fn route(&mut self, r: RouteUpdate) {
        let Some(fast) = &self.fast else {
            return;
        };
        match r {
            RouteUpdate::Up(route) => {
                let relay = self.server.relays().socket(route.relayed).cloned();
                let listening = self.listening.get(&route.five_tuple.server).cloned();
                let (Some(relay), Some(listening)) = (relay, listening) else {
                    return;
                };
                let traffic = self
                    .fast_traffic
                    .entry(route.five_tuple)
                    .or_default()
                    .clone();
                fast.up(&route, relay, listening, traffic);
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
        st.counters = *self.server.counters();
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

    /// Send what the server queued, perform its RFC 6062 commands, then log
    /// its events.
    pub(super) async fn flush(&mut self, transport: Option<Transport>) {
        // Routes first: a ChannelBind answer must not reach the client
        // (whose next ChannelData would then miss the route) before its
        // route is published, even when a full batch goes out below.
        while let Some(r) = self.server.poll_route() {
            self.route(r);
        }
        // Then transmits before commands: a Splice follows the
        // ConnectionBind response it goes with on the same connection queue.
        loop {
            while let Some(t) = self.server.poll_transmit() {
                if t.transport == Transport::Udp {
                    // Sent in batches per source socket by `send_pending`.
                    self.pending.push(t);
                    if self.pending.len() >= PENDING_MAX {
                        self.send_pending().await;
                    }
                } else {
                    let key = (t.transport, t.source, t.destination);
                    let ok = match self.conns.get(&key) {
                        Some(c) => c.try_send(ConnOut::Bytes(t.contents)).is_ok(),
                        None => false,
                    };
                    if ok {
                        self.stats.by_transport[transport_index(t.transport)].client_packets_out +=
                            1;
                    } else {
                        self.stats.send_errors += 1;
                    }
                }
            }
            match self.server.poll_command() {
                Some(c) => self.command(c),
                None => break,
            }
        }
        // Whatever the commands changed.
        while let Some(r) = self.server.poll_route() {
            self.route(r);
        }
        while let Some(e) = self.server.poll_event() {
            self.on_event(e, transport);
        }
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
                .or_else(|| self.server.relays().socket(source))
                .cloned();
            let (mut sent, mut failed) = (0, 0);
            match sock {
                None => failed = (end - at) as u64,
                Some(sock) => {
                    for &(_, i) in &self.order[at..end] {
                        let t = &self.pending[i as usize];
                        let len = t.contents.len();
                        if len > sys::BUF {
                            if send_one(&sock, &t.contents, t.destination).await {
                                sent += 1;
                            } else {
                                failed += 1;
                            }
                            continue;
                        }
                        let b = &mut self.batch;
                        b.bufs[b.n][..len].copy_from_slice(&t.contents);
                        b.lens[b.n] = len;
                        b.dests[b.n] = t.destination;
                        b.n += 1;
                        if b.n == sys::BATCH {
                            let (s, f) = b.send(&sock).await;
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

    pub(super) fn ended(
        &mut self,
        how: &str,
        user: &str,
        five_tuple: FiveTuple,
        relayed: &[SocketAddr],
        mut traffic: p2p_turn::Traffic,
    ) {
        self.fold_fast(&five_tuple, &mut traffic);
        tracing::info!(
            %user,
            client = %five_tuple.client,
            transport = %five_tuple.transport,
            relayed = ?relayed,
            bytes_to_peer = traffic.bytes_to_peer,
            packets_to_peer = traffic.packets_to_peer,
            bytes_to_client = traffic.bytes_to_client,
            packets_to_client = traffic.packets_to_client,
            dropped_bandwidth = traffic.dropped_bandwidth,
            "turn allocation {how}"
        );
    }

    pub(super) fn on_event(&mut self, e: ServerEvent, transport: Option<Transport>) {
        match e {
            ServerEvent::AllocationCreated {
                user,
                five_tuple,
                relayed,
                lifetime,
            } => {
                tracing::info!(
                    %user,
                    client = %five_tuple.client,
                    server = %five_tuple.server,
                    transport = %five_tuple.transport,
                    relayed = ?relayed,
                    lifetime_secs = lifetime.as_secs(),
                    "turn allocation created"
                );
                self.stats.by_transport[transport_index(five_tuple.transport)]
                    .allocations_created += 1;
            }
            ServerEvent::AllocationRefreshed {
                user,
                five_tuple,
                lifetime,
            } => {
                tracing::debug!(
                    %user,
                    client = %five_tuple.client,
                    transport = %five_tuple.transport,
                    lifetime_secs = lifetime.as_secs(),
                    "turn allocation refreshed"
                );
            }
            ServerEvent::AllocationDeleted {
                user,
                five_tuple,
                relayed,
                traffic,
            } => self.ended("deleted", &user, five_tuple, &relayed, traffic),
            ServerEvent::AllocationExpired {
                user,
                five_tuple,
                relayed,
                traffic,
            } => self.ended("expired", &user, five_tuple, &relayed, traffic),
            ServerEvent::AllocationClosed {
                user,
                five_tuple,
                relayed,
                traffic,
            } => self.ended(
                "closed with its connection",
                &user,
                five_tuple,
                &relayed,
                traffic,
            ),
            ServerEvent::PermissionCreated { five_tuple, peer } => {
                tracing::debug!(client = %five_tuple.client, %peer, "turn permission created");
            }
            ServerEvent::ChannelBound {
                five_tuple,
                channel,
                peer,
            } => {
                tracing::debug!(client = %five_tuple.client, channel, %peer, "turn channel bound");
            }
            ServerEvent::AuthFailed {
                remote,
                username,
                reason,
            } => {
                tracing::info!(
                    %remote,
                    username = username.as_deref().unwrap_or(""),
                    reason = ?reason,
                    transport = %transport.map_or("?".to_owned(), |t| t.to_string()),
                    "turn authentication failed"
                );
            }
            other => tracing::debug!(event = ?other, "turn event"),
        }
    }
}
