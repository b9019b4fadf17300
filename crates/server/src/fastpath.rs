//! The TURN relay's fast path: ChannelData of UDP allocations relayed by the
//! threads that receive it, without a trip through the TURN task.
//!
//! The TURN task keeps the state machine ([`p2p_turn::TurnServer`]) and
//! publishes the channels it allows ([`p2p_turn::TurnServer::poll_route`])
//! here. Then:
//!
//! - a UDP worker that reads ChannelData from a client looks up (listening
//!   address, client, channel) and sends the payload from the relayed
//!   socket to the peer;
//! - a relayed socket's reader looks up (relayed address, peer) and sends
//!   the datagram, a ChannelData header written in front of it, from the
//!   listening socket to the client.
//!
//! A route holds until its `until` (the earliest of channel, permission and
//! allocation expiry); past it, or for anything without a route, the packet
//! goes to the TURN task as before, which checks it and counts it. Routes
//! are never published for allocations with a bandwidth cap, over TCP/TLS,
//! or to the server's own addresses (relay to relay): those stay on the
//! checked path. While a route is being set up, a packet that went to the
//! TURN task may be overtaken by the next one on the fast path (UDP may
//! reorder; it happens once per channel).
//!
//! A receiving thread stages the packets of a batch that have a route
//! ([`FastPath::stage_from_client`], [`FastPath::stage_from_peer`]) and
//! then sends them ([`FastPath::send_staged`]): those that leave one socket
//! for one destination with the same length go as one UDP GSO train (one
//! `sendmsg`; the receiver still gets separate datagrams), the rest one by
//! one. Nothing here allocates: lookups in sharded maps under a read lock,
//! a scratch list made once per thread, atomic counters per allocation.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use p2p_stun::ChannelData;
use p2p_turn::ChannelRoute;
use tokio::net::UdpSocket;

use crate::sys::{self, BATCH, TRAIN_MAX_BYTES, TRAIN_MAX_SEGS, TRAIN_MAX_SEG_LEN};

/// Shards per table: readers on different cores seldom share a lock.
const SHARDS: usize = 16;

/// Traffic one allocation relayed on the fast path.
#[derive(Debug, Default)]
pub(crate) struct FastTraffic {
    pub(crate) packets_to_peer: AtomicU64,
    pub(crate) bytes_to_peer: AtomicU64,
    pub(crate) packets_to_client: AtomicU64,
    pub(crate) bytes_to_client: AtomicU64,
}

/// A plain copy of [`FastTraffic`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TrafficSnapshot {
    pub(crate) packets_to_peer: u64,
    pub(crate) bytes_to_peer: u64,
    pub(crate) packets_to_client: u64,
    pub(crate) bytes_to_client: u64,
}

impl FastTraffic {
    pub(crate) fn snapshot(&self) -> TrafficSnapshot {
        TrafficSnapshot {
            packets_to_peer: self.packets_to_peer.load(Ordering::Relaxed),
            bytes_to_peer: self.bytes_to_peer.load(Ordering::Relaxed),
            packets_to_client: self.packets_to_client.load(Ordering::Relaxed),
            bytes_to_client: self.bytes_to_client.load(Ordering::Relaxed),
        }
    }
}

impl std::ops::AddAssign for TrafficSnapshot {
    fn add_assign(&mut self, o: Self) {
        self.packets_to_peer += o.packets_to_peer;
        self.bytes_to_peer += o.bytes_to_peer;
        self.packets_to_client += o.packets_to_client;
        self.bytes_to_client += o.bytes_to_client;
    }
}

/// The meter of one RFC 6062 allocation's TCP relays (the bytes spliced
/// between client data connections and peer connections flow in the
/// daemon, not through the TURN server): what they relayed, and the
/// allocation's bandwidth cap (`--max-bps`), shared by all its connections.
/// A "packet" of a TCP relay is one chunk read and written.
#[derive(Debug)]
pub(crate) struct TcpMeter {
    pub(crate) traffic: Arc<FastTraffic>,
    cap: Option<std::sync::Mutex<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TcpMeter {
    /// A meter counting into `traffic`, capped at `cap` (bytes per second
    /// and burst) when given.
    pub(crate) fn new(traffic: Arc<FastTraffic>, cap: Option<(u64, u64)>, now: Instant) -> Self {
        TcpMeter {
            traffic,
            cap: cap.filter(|(rate, _)| *rate > 0).map(|(rate, burst)| {
                std::sync::Mutex::new(Bucket {
                    rate: rate as f64,
                    burst: burst.max(1) as f64,
                    tokens: burst.max(1) as f64,
                    last: now,
                })
            }),
        }
    }

    /// Take `n` bytes from the cap: how long to wait before they may go
    /// (zero without a cap or with tokens left). The debt is kept, so a
    /// stream is held to the rate on average.
    pub(crate) fn take(&self, n: usize, now: Instant) -> std::time::Duration {
        let Some(cap) = &self.cap else {
            return std::time::Duration::ZERO;
        };
        let Ok(mut b) = cap.lock() else {
            return std::time::Duration::ZERO;
        };
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.last = b.last.max(now);
        b.tokens = (b.tokens + elapsed * b.rate).min(b.burst) - n as f64;
        if b.tokens >= 0.0 {
            std::time::Duration::ZERO
        } else {
            std::time::Duration::from_secs_f64(-b.tokens / b.rate)
        }
    }

    /// Count `n` bytes relayed, towards the peer or the client.
    pub(crate) fn count(&self, to_peer: bool, n: usize) {
        let t = &self.traffic;
        let (p, b) = if to_peer {
            (&t.packets_to_peer, &t.bytes_to_peer)
        } else {
            (&t.packets_to_client, &t.bytes_to_client)
        };
        p.fetch_add(1, Ordering::Relaxed);
        b.fetch_add(n as u64, Ordering::Relaxed);
    }
}

struct ToPeer {
    /// The relayed socket.
    sock: Arc<UdpSocket>,
    peer: SocketAddr,
    until: Instant,
    traffic: Arc<FastTraffic>,
}

struct ToClient {
    /// A listening socket bound to the allocation's server address.
    sock: Arc<UdpSocket>,
    client: SocketAddr,
    channel: u16,
    until: Instant,
    traffic: Arc<FastTraffic>,
}

/// (listening address, client, channel).
type PeerKey = (SocketAddr, SocketAddr, u16);
/// (relayed address, peer).
type ClientKey = (SocketAddr, SocketAddr);

/// A packet staged for [`FastPath::send_staged`]: bytes
/// `start..start + len` of the caller's buffer number `idx` go from `sock`
/// to `to`.
pub(crate) struct Hit {
    sock: Arc<UdpSocket>,
    to: SocketAddr,
    traffic: Arc<FastTraffic>,
    idx: usize,
    start: usize,
    len: usize,
    to_peer: bool,
}

/// The published routes; shared by the TURN task (writer), the UDP workers
/// and the relayed sockets' readers.
pub(crate) struct FastPath {
    to_peer: Vec<RwLock<HashMap<PeerKey, ToPeer>>>,
    to_client: Vec<RwLock<HashMap<ClientKey, ToClient>>>,
    /// Datagrams the fast path dropped because a send failed.
    send_errors: AtomicU64,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath").finish_non_exhaustive()
    }
}

fn peer_shard(client: SocketAddr, channel: u16) -> usize {
    usize::from(client.port() ^ channel) % SHARDS
}

fn client_shard(relayed: SocketAddr, peer: SocketAddr) -> usize {
    usize::from(relayed.port() ^ peer.port()) % SHARDS
}

/// Send without waiting: a full socket buffer drops the datagram, as the
/// kernel would. A plain `sendto` on the (non-blocking) socket: tokio's
/// `try_send_to` would refuse until its reactor has seen the socket
/// writable, and this thread may be busy relaying.
fn send(sock: &UdpSocket, bytes: &[u8], to: SocketAddr) -> bool {
    match socket2::SockRef::from(sock).send_to(bytes, &to.into()) {
        Ok(_) => true,
        Err(e) => {
            if e.kind() != io::ErrorKind::WouldBlock {
                tracing::debug!(%to, "turn fast path send: {e}");
            }
            false
        }
    }
}

impl FastPath {
    pub(crate) fn new() -> Self {
        FastPath {
            to_peer: (0..SHARDS).map(|_| RwLock::default()).collect(),
            to_client: (0..SHARDS).map(|_| RwLock::default()).collect(),
            send_errors: AtomicU64::new(0),
        }
    }

    /// Datagrams dropped on a failed send so far.
    pub(crate) fn send_errors(&self) -> u64 {
        self.send_errors.load(Ordering::Relaxed)
    }

    /// Stage a ChannelData datagram (`pkt`, the caller's buffer `idx`)
    /// that `client` sent to the listening address `server`, if a live
    /// route covers it: its payload is to go from the relayed socket to the
    /// peer. Returns whether it was staged; `false`: hand it to the TURN
    /// task.
    pub(crate) fn stage_from_client(
        &self,
        server: SocketAddr,
        client: SocketAddr,
        pkt: &[u8],
        idx: usize,
        now: Instant,
        hits: &mut Vec<Hit>,
    ) -> bool {
        let Ok(cd) = ChannelData::decode(pkt) else {
            return false;
        };
        let channel = cd.channel();
        let Ok(shard) = self.to_peer[peer_shard(client, channel)].read() else {
            return false;
        };
        let Some(r) = shard.get(&(server, client, channel)) else {
            return false;
        };
        if now >= r.until {
            return false;
        }
        let len = cd.data().len();
        hits.push(Hit {
            sock: r.sock.clone(),
            to: r.peer,
            traffic: r.traffic.clone(),
            idx,
            start: 4,
            len,
            to_peer: true,
        });
        true
    }

    /// Stage a datagram `peer` sent to the relayed address `relayed`, held
    /// in `slot[4..4 + len]` (the caller's buffer `idx`), if a live route
    /// covers it: the ChannelData header is written into `slot[..4]` and
    /// the whole goes from the listening socket to the client. Returns
    /// whether it was staged; `false`: hand `slot[4..4 + len]` to the TURN
    /// task.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn stage_from_peer(
        &self,
        relayed: SocketAddr,
        peer: SocketAddr,
        slot: &mut [u8],
        len: usize,
        idx: usize,
        now: Instant,
        hits: &mut Vec<Hit>,
    ) -> bool {
        let Ok(wire_len) = u16::try_from(len) else {
            return false;
        };
        if slot.len() < 4 + len {
            return false;
        }
        let Ok(shard) = self.to_client[client_shard(relayed, peer)].read() else {
            return false;
        };
        let Some(r) = shard.get(&(relayed, peer)) else {
            return false;
        };
        if now >= r.until {
            return false;
        }
        // RFC 8656 §12.5: over UDP the ChannelData needs no padding.
        slot[..2].copy_from_slice(&r.channel.to_be_bytes());
        slot[2..4].copy_from_slice(&wire_len.to_be_bytes());
        hits.push(Hit {
            sock: r.sock.clone(),
            to: r.client,
            traffic: r.traffic.clone(),
            idx,
            start: 0,
            len: 4 + len,
            to_peer: false,
        });
        true
    }

    /// Send the staged packets (at most [`BATCH`]; `buf(idx)` gives the
    /// caller's buffer `idx`) and clear the list. Packets from one socket
    /// to one destination keep their order; each run of equal lengths (the
    /// last one may be shorter) goes as one UDP GSO train when the system
    /// has GSO.
    pub(crate) fn send_staged<'b>(&self, hits: &mut Vec<Hit>, buf: impl Fn(usize) -> &'b [u8]) {
        let n = hits.len().min(BATCH);
        if n == 0 {
            hits.clear();
            return;
        }
        let gso = n > 1 && sys::gso_enabled(hits[0].sock.as_raw_fd());
        // Group: a hit joins the latest group of its socket and destination
        // when the train rules allow, else it starts one.
        let mut group_of = [0u8; BATCH];
        let mut first = [0u8; BATCH];
        let mut count = [0u8; BATCH];
        let mut closed = [false; BATCH];
        let mut groups = 0usize;
        for i in 0..n {
            let h = &hits[i];
            let latest = (0..groups).rev().find(|&g| {
                let f = &hits[usize::from(first[g])];
                f.to == h.to && Arc::ptr_eq(&f.sock, &h.sock)
            });
            let joined = latest.filter(|&g| {
                let seg = hits[usize::from(first[g])].len;
                let c = usize::from(count[g]);
                gso && !closed[g]
                    && h.len <= seg
                    && seg <= TRAIN_MAX_SEG_LEN
                    && c < TRAIN_MAX_SEGS
                    && (c + 1) * seg <= TRAIN_MAX_BYTES
            });
            match joined {
                Some(g) => {
                    count[g] += 1;
                    closed[g] = h.len < hits[usize::from(first[g])].len;
                    group_of[i] = g as u8;
                }
                None => {
                    first[groups] = i as u8;
                    count[groups] = 1;
                    closed[groups] = false;
                    group_of[i] = groups as u8;
                    groups += 1;
                }
            }
        }
        let mut segs: [&[u8]; BATCH] = [&[]; BATCH];
        for g in 0..groups {
            let mut k = 0;
            let mut last = 0usize;
            for i in 0..n {
                if usize::from(group_of[i]) == g {
                    let h = &hits[i];
                    segs[k] = buf(h.idx).get(h.start..h.start + h.len).unwrap_or(&[]);
                    last = i;
                    k += 1;
                }
            }
            let h = &hits[last];
            let (sent, wire) = self.send_train(&h.sock, &segs[..k], h.to);
            let t = &h.traffic;
            if sent > 0 {
                // Application bytes: without the ChannelData headers.
                let header = if h.to_peer { 0 } else { 4 * sent as u64 };
                let bytes = wire.saturating_sub(header);
                if h.to_peer {
                    t.packets_to_peer.fetch_add(sent as u64, Ordering::Relaxed);
                    t.bytes_to_peer.fetch_add(bytes, Ordering::Relaxed);
                } else {
                    t.packets_to_client
                        .fetch_add(sent as u64, Ordering::Relaxed);
                    t.bytes_to_client.fetch_add(bytes, Ordering::Relaxed);
                }
            }
            if sent < k {
                self.send_errors
                    .fetch_add((k - sent) as u64, Ordering::Relaxed);
            }
        }
        hits.clear();
    }

    /// Send `segs` from `sock` to `to`, as one train when there are several;
    /// returns how many datagrams went and their bytes. A train the route
    /// refuses goes one by one; if GSO itself failed (EIO: no checksum
    /// offload; or unsupported), it is turned off for the process.
    fn send_train(&self, sock: &UdpSocket, segs: &[&[u8]], to: SocketAddr) -> (usize, u64) {
        let fd = sock.as_raw_fd();
        match sys::send_train(fd, segs, to) {
            Ok(()) => (segs.len(), segs.iter().map(|s| s.len() as u64).sum()),
            Err(e) if segs.len() > 1 && sys::is_gso_error(&e) => {
                let gso_fault =
                    e.kind() == io::ErrorKind::Unsupported || e.raw_os_error() == Some(libc::EIO);
                let (mut sent, mut wire) = (0, 0);
                for s in segs {
                    if send(sock, s, to) {
                        sent += 1;
                        wire += s.len() as u64;
                    }
                }
                if gso_fault && sent > 0 {
                    sys::gso_disable(&e);
                }
                (sent, wire)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    tracing::debug!(%to, "turn fast path send: {e}");
                }
                (0, 0)
            }
        }
    }

    /// Add or replace a route: `relay` is the socket of `route.relayed`,
    /// `listening` one bound to `route.five_tuple.local`.
    pub(crate) fn up(
        &self,
        route: &ChannelRoute,
        relay: Arc<UdpSocket>,
        listening: Arc<UdpSocket>,
        traffic: Arc<FastTraffic>,
    ) {
        let ft = route.five_tuple;
        if let Ok(mut s) = self.to_peer[peer_shard(ft.remote, route.channel)].write() {
            s.insert(
                (ft.local, ft.remote, route.channel),
                ToPeer {
                    sock: relay,
                    peer: route.peer,
                    until: route.until,
                    traffic: traffic.clone(),
                },
            );
        }
        if let Ok(mut s) = self.to_client[client_shard(route.relayed, route.peer)].write() {
            s.insert(
                (route.relayed, route.peer),
                ToClient {
                    sock: listening,
                    client: ft.remote,
                    channel: route.channel,
                    until: route.until,
                    traffic,
                },
            );
        }
    }

    /// Remove a route (nothing happens if it is not there).
    pub(crate) fn down(&self, route: &ChannelRoute) {
        let ft = route.five_tuple;
        if let Ok(mut s) = self.to_peer[peer_shard(ft.remote, route.channel)].write() {
            s.remove(&(ft.local, ft.remote, route.channel));
        }
        if let Ok(mut s) = self.to_client[client_shard(route.relayed, route.peer)].write() {
            s.remove(&(route.relayed, route.peer));
        }
    }

    /// How many routes are published (client → peer direction).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.to_peer
            .iter()
            .map(|s| s.read().map_or(0, |s| s.len()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2p_turn::{FiveTuple, Transport};
    use std::time::Duration;

    async fn sock() -> Arc<UdpSocket> {
        Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap())
    }

    fn chan(channel: u16, data: &[u8]) -> Vec<u8> {
        let mut v = channel.to_be_bytes().to_vec();
        v.extend_from_slice(&(data.len() as u16).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    struct Setup {
        fast: FastPath,
        route: ChannelRoute,
        client: Arc<UdpSocket>,
        peer: Arc<UdpSocket>,
        traffic: Arc<FastTraffic>,
        now: Instant,
    }

    async fn setup() -> Setup {
        let fast = FastPath::new();
        let (listening, relay, client, peer) =
            (sock().await, sock().await, sock().await, sock().await);
        let now = Instant::now();
        let route = ChannelRoute {
            five_tuple: FiveTuple::new(
                Transport::Udp,
                listening.local_addr().unwrap(),
                client.local_addr().unwrap(),
            ),
            channel: 0x4001,
            peer: peer.local_addr().unwrap(),
            relayed: relay.local_addr().unwrap(),
            until: now + Duration::from_secs(10),
        };
        let traffic = Arc::new(FastTraffic::default());
        fast.up(&route, relay, listening, traffic.clone());
        Setup {
            fast,
            route,
            client,
            peer,
            traffic,
            now,
        }
    }

    /// Stage `pkts` as if a worker read them from `from` and send them.
    fn from_client(s: &Setup, from: SocketAddr, pkts: &[Vec<u8>], now: Instant) -> Vec<bool> {
        let mut hits = Vec::new();
        let server = s.route.five_tuple.local;
        let staged = pkts
            .iter()
            .enumerate()
            .map(|(i, p)| s.fast.stage_from_client(server, from, p, i, now, &mut hits))
            .collect();
        s.fast.send_staged(&mut hits, |i| &pkts[i][..]);
        assert!(hits.is_empty());
        staged
    }

    /// Stage datagrams as if a relay reader got them from `peer`, and send them.
    fn from_peer(s: &Setup, peer: SocketAddr, data: &[&[u8]], now: Instant) -> Vec<bool> {
        let mut slots: Vec<Vec<u8>> = data
            .iter()
            .map(|d| {
                let mut v = vec![0u8; 4];
                v.extend_from_slice(d);
                v
            })
            .collect();
        let mut hits = Vec::new();
        let relayed = s.route.relayed;
        let staged = slots
            .iter_mut()
            .enumerate()
            .map(|(i, slot)| {
                let len = slot.len() - 4;
                s.fast
                    .stage_from_peer(relayed, peer, slot, len, i, now, &mut hits)
            })
            .collect();
        s.fast.send_staged(&mut hits, |i| &slots[i][..]);
        staged
    }

    async fn recv(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut b = [0u8; 2048];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut b))
            .await
            .expect("a datagram in time")
            .unwrap();
        (b[..n].to_vec(), from)
    }

    #[tokio::test]
    async fn routes_relay_both_ways_until_they_expire_or_go_down() {
        let s = setup().await;
        let (c, now) = (s.route.five_tuple.remote, s.now);
        assert_eq!(s.fast.len(), 1);

        // Client → peer: the payload alone, from the relayed socket.
        assert_eq!(from_client(&s, c, &[chan(0x4001, b"hello")], now), [true]);
        assert_eq!(recv(&s.peer).await, (b"hello".to_vec(), s.route.relayed));
        // Another channel, another client, or not ChannelData: not ours.
        let not_ours = [chan(0x4002, b"x"), vec![0x40, 0x01, 0, 9, 1]];
        assert_eq!(from_client(&s, c, &not_ours, now), [false, false]);
        assert_eq!(
            from_client(&s, s.route.peer, &[chan(0x4001, b"x")], now),
            [false]
        );

        // Peer → client: a ChannelData header in front, from the listening socket.
        assert_eq!(from_peer(&s, s.route.peer, &[b"world"], now), [true]);
        assert_eq!(
            recv(&s.client).await,
            (chan(0x4001, b"world"), s.route.five_tuple.local)
        );
        // A peer at another port has no channel.
        let other = SocketAddr::new(s.route.peer.ip(), s.route.peer.port() ^ 1);
        assert_eq!(from_peer(&s, other, &[b"x"], now), [false]);

        assert_eq!(
            s.traffic.snapshot(),
            TrafficSnapshot {
                packets_to_peer: 1,
                bytes_to_peer: 5,
                packets_to_client: 1,
                bytes_to_client: 5,
            }
        );

        // Past `until`, everything goes to the TURN task again.
        let later = s.route.until;
        assert_eq!(from_client(&s, c, &[chan(0x4001, b"late")], later), [false]);
        assert_eq!(from_peer(&s, s.route.peer, &[b"late"], later), [false]);
        // Down removes both directions.
        s.fast.down(&s.route);
        assert_eq!(s.fast.len(), 0);
        assert_eq!(from_client(&s, c, &[chan(0x4001, b"gone")], now), [false]);
        assert_eq!(from_peer(&s, s.route.peer, &[b"gone"], now), [false]);
        assert_eq!(s.fast.send_errors(), 0);
    }

    #[test]
    fn the_tcp_meter_counts_and_holds_a_stream_to_its_cap() {
        let t0 = Instant::now();
        let traffic = Arc::new(FastTraffic::default());
        let free = TcpMeter::new(traffic.clone(), None, t0);
        assert_eq!(free.take(1 << 30, t0), Duration::ZERO);
        // 1000 bytes/s, a burst of 4096: the burst passes at once, then
        // every byte waits its turn, debt included.
        let capped = TcpMeter::new(traffic.clone(), Some((1000, 4096)), t0);
        assert_eq!(capped.take(4096, t0), Duration::ZERO);
        assert_eq!(capped.take(500, t0), Duration::from_millis(500));
        assert_eq!(capped.take(500, t0), Duration::from_millis(1000));
        // Two seconds later the debt is paid and 1000 bytes are back.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(capped.take(1000, later), Duration::ZERO);
        assert_eq!(capped.take(1, later), Duration::from_millis(1));
        capped.count(true, 300);
        capped.count(false, 20);
        free.count(true, 1);
        assert_eq!(
            traffic.snapshot(),
            TrafficSnapshot {
                packets_to_peer: 2,
                bytes_to_peer: 301,
                packets_to_client: 1,
                bytes_to_client: 20,
            }
        );
    }

    #[tokio::test]
    async fn a_batch_arrives_whole_and_in_order_both_ways() {
        // Equal lengths, then a shorter one (ends a train), then longer
        // ones (a new train), mixed with a packet for no route: whatever
        // the grouping, each datagram arrives alone, in order, unchanged.
        let s = setup().await;
        let (c, now) = (s.route.five_tuple.remote, s.now);
        let sizes = [100usize, 100, 100, 60, 100, 100, 1200, 1200, 1452, 1453, 7];
        let payload = |k: usize, n: usize| vec![k as u8; n];
        let mut pkts: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| chan(0x4001, &payload(k, n)))
            .collect();
        pkts.insert(3, chan(0x4009, b"no route"));
        let staged = from_client(&s, c, &pkts, now);
        assert_eq!(staged.iter().filter(|x| !**x).count(), 1);
        for (k, &n) in sizes.iter().enumerate() {
            assert_eq!(
                recv(&s.peer).await,
                (payload(k, n), s.route.relayed),
                "#{k}"
            );
        }

        let data: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| payload(k, n))
            .collect();
        let refs: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
        assert!(from_peer(&s, s.route.peer, &refs, now).iter().all(|x| *x));
        for (k, d) in data.iter().enumerate() {
            assert_eq!(
                recv(&s.client).await,
                (chan(0x4001, d), s.route.five_tuple.local),
                "#{k}"
            );
        }
        let bytes: u64 = sizes.iter().map(|&n| n as u64).sum();
        let n = sizes.len() as u64;
        assert_eq!(
            s.traffic.snapshot(),
            TrafficSnapshot {
                packets_to_peer: n,
                bytes_to_peer: bytes,
                packets_to_client: n,
                bytes_to_client: bytes,
            }
        );
        assert_eq!(s.fast.send_errors(), 0);
    }
}
