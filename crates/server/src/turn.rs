//! The TURN server (RFC 8656) in the daemon: one task owns a
//! [`p2p_turn::TurnServer`] and every relayed socket, and is fed through a
//! channel by the UDP workers, the TCP/TLS connections and the relayed
//! sockets' readers. Binding stays with the STUN responder (RFC 5780); TURN
//! methods and ChannelData come here (see [`wants`]).
//!
//! TCP allocations (RFC 6062): a TCP relayed address is a listening socket
//! whose accept loop hands peers to this task; Connect opens a connection
//! from the relayed address in a task of its own. This task holds peer
//! connections until a ConnectionBind binds them, then hands each one to its
//! client data connection's task ([`ConnOut::Splice`]), which copies bytes
//! both ways until either side closes.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use p2p_stun::attr::{AddressFamily, PasswordAlgorithm};
use p2p_stun::{classify, Key, MessageType, PacketKind};
use p2p_turn::TcpCommand;
use p2p_turn::{
    is_turn_method, Bandwidth, Cidr, CredentialStore, Datagram, FiveTuple, PeerPolicy,
    RelayAllocator, RestSecret, RouteUpdate, ServerConfig, ServerEvent, StaticUsers, Transport,
    TurnServer,
};
use rand::Rng;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::config::{Config, ConfigError, TurnConfig};
use crate::fastpath::{FastPath, FastTraffic, Hit, TcpMeter, TrafficSnapshot};
use crate::sys;

/// Depth of the queue into the TURN task (packets beyond are dropped, as a
/// full socket buffer would).
const INBOUND_QUEUE: usize = 8192;
/// Depth of each TCP/TLS connection's outgoing queue.
pub(crate) const CONN_QUEUE: usize = 1024;
/// Most bind attempts per relayed address asked for.
const BIND_ATTEMPTS: u32 = 512;
/// Largest datagram read on a relayed socket.
const RELAY_BUF: usize = 65536;
/// Capacity of a pooled packet buffer: a datagram of the usual MTU fits.
const POOL_BUF: usize = 2048;
/// Buffers kept in the [`BufPool`] at most (the rest are freed).
const POOL_MAX: usize = 1024;
/// UDP transmits staged before they are sent in any case.
const PENDING_MAX: usize = 1024;
/// How long a Connect to a peer may take (RFC 6062 §5.2: at least 30 s).
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the TURN task sends a TCP/TLS client connection.
pub(crate) enum ConnOut {
    /// A framed message to write.
    Bytes(Vec<u8>),
    /// The connection is now an RFC 6062 client data connection bound to
    /// `peer`: relay raw bytes both ways until either closes or `kill` fires
    /// (its sender dropped).
    Splice {
        peer: TcpStream,
        kill: oneshot::Receiver<()>,
        /// The allocation's traffic and bandwidth cap.
        meter: Arc<TcpMeter>,
    },
}

/// Whether a packet that arrived on a listening address belongs to the TURN
/// server: ChannelData, or a STUN message of a TURN method.
pub(crate) fn wants(b: &[u8]) -> bool {
    match classify(b) {
        PacketKind::ChannelData => true,
        PacketKind::Stun if b.len() >= 2 => {
            is_turn_method(MessageType::from_u16(u16::from_be_bytes([b[0], b[1]])).method)
        }
        _ => false,
    }
}

/// Packet buffers shared by the producers of [`Inbound::Packet`] (UDP
/// workers, relayed sockets' readers, TCP/TLS connections) and the TURN
/// task, which gives them back once the packet is handled: in steady state
/// relaying allocates nothing per packet.
#[derive(Debug, Default)]
pub(crate) struct BufPool {
    bufs: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    /// A buffer holding a copy of `bytes`.
    pub(crate) fn copy_of(&self, bytes: &[u8]) -> Vec<u8> {
        let pooled = match self.bufs.lock() {
            Ok(mut v) => v.pop(),
            Err(_) => None,
        };
        let mut b = pooled.unwrap_or_else(|| Vec::with_capacity(POOL_BUF.max(bytes.len())));
        b.extend_from_slice(bytes);
        b
    }

    /// Give buffers back (cleared here), leaving `bufs` empty; oversized
    /// ones and those beyond [`POOL_MAX`] are freed.
    pub(crate) fn give_back(&self, bufs: &mut Vec<Vec<u8>>) {
        if bufs.is_empty() {
            return;
        }
        if let Ok(mut v) = self.bufs.lock() {
            for b in bufs.drain(..) {
                keep(&mut v, b);
            }
        }
        bufs.clear();
    }

    /// Give one buffer back.
    pub(crate) fn give(&self, b: Vec<u8>) {
        if let Ok(mut v) = self.bufs.lock() {
            keep(&mut v, b);
        }
    }

    /// How many buffers wait in the pool.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.bufs.lock().map_or(0, |v| v.len())
    }
}

fn keep(pool: &mut Vec<Vec<u8>>, mut b: Vec<u8>) {
    if pool.len() < POOL_MAX && b.capacity() <= 4 * POOL_BUF {
        b.clear();
        pool.push(b);
    }
}

/// What the TURN task is sent.
pub(crate) enum Inbound {
    /// A packet from a client (on a listening address) or from a peer (on a
    /// relayed address). `conn` is the connection's outgoing queue for
    /// TCP/TLS.
    Packet {
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: Vec<u8>,
        conn: Option<mpsc::Sender<ConnOut>>,
    },
    /// A peer connected to a TCP relayed address (RFC 6062 §5.3).
    PeerAccepted {
        relayed: SocketAddr,
        peer: SocketAddr,
        stream: TcpStream,
    },
    /// A connection to a peer asked by Connect is up, or failed.
    PeerConnected {
        id: u32,
        stream: io::Result<TcpStream>,
    },
    /// A TCP/TLS connection closed.
    Closed {
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
    },
    /// Asked by the metrics endpoint.
    Stats(oneshot::Sender<TurnStats>),
}

/// The way into the TURN task; cheap to clone.
#[derive(Clone)]
pub(crate) struct TurnHandle {
    tx: mpsc::Sender<Inbound>,
    pool: Arc<BufPool>,
    /// The relay fast path, when on.
    fast: Option<Arc<FastPath>>,
}

impl TurnHandle {
    /// The relay fast path, when on: the UDP workers stage ChannelData
    /// there before handing anything over.
    pub(crate) fn fast(&self) -> Option<&FastPath> {
        self.fast.as_deref()
    }

    /// Hand a UDP datagram from a listening socket over (dropped when the
    /// queue is full). False when it was dropped.
    pub(crate) fn udp(&self, local: SocketAddr, remote: SocketAddr, bytes: &[u8]) -> bool {
        self.tx
            .try_send(Inbound::Packet {
                transport: Transport::Udp,
                local,
                remote,
                bytes: self.pool.copy_of(bytes),
                conn: None,
            })
            .is_ok()
    }

    /// Hand one framed message of a TCP/TLS connection over; waits when the
    /// queue is full (the stream pushes back).
    pub(crate) async fn stream(
        &self,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
        conn: &mpsc::Sender<ConnOut>,
    ) -> bool {
        self.tx
            .send(Inbound::Packet {
                transport,
                local,
                remote,
                bytes: self.pool.copy_of(bytes),
                conn: Some(conn.clone()),
            })
            .await
            .is_ok()
    }

    /// Say that a connection closed (its allocation ends with it). Waits
    /// for room in the queue: this message must not be lost.
    pub(crate) async fn closed(&self, transport: Transport, local: SocketAddr, remote: SocketAddr) {
        let _ = self
            .tx
            .send(Inbound::Closed {
                transport,
                local,
                remote,
            })
            .await;
    }

    /// The TURN task's statistics now (`None` if it is gone).
    pub(crate) async fn stats(&self) -> Option<TurnStats> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Inbound::Stats(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// Per client transport (udp, tcp, tls) figures.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TransportStats {
    pub(crate) allocations: u64,
    pub(crate) allocations_created: u64,
    pub(crate) permissions: u64,
    pub(crate) channels: u64,
    pub(crate) requests: u64,
    pub(crate) auth_failures: u64,
    pub(crate) bytes_to_peer: u64,
    pub(crate) packets_to_peer: u64,
    pub(crate) bytes_to_client: u64,
    pub(crate) packets_to_client: u64,
    /// Packets (datagrams or frames) from clients to the TURN server.
    pub(crate) client_packets_in: u64,
    /// Packets from the TURN server to clients.
    pub(crate) client_packets_out: u64,
}

/// What the metrics endpoint shows of TURN.
#[derive(Debug, Clone, Default)]
pub(crate) struct TurnStats {
    pub(crate) counters: p2p_turn::Counters,
    /// Indexed by [`transport_index`].
    pub(crate) by_transport: [TransportStats; 3],
    /// Packets dropped because a queue was full or a send failed.
    pub(crate) send_errors: u64,
    /// Packets relayed on the fast path (both directions; included in the
    /// relayed counters too).
    pub(crate) fast_path_packets: u64,
}

pub(crate) const TRANSPORTS: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

pub(crate) fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        Transport::Tls => 2,
    }
}

// ---------------------------------------------------------------- credentials

/// Static users and, optionally, REST API ephemeral credentials.
pub(crate) struct Creds {
    users: StaticUsers,
    has_users: bool,
    rest: Option<RestSecret>,
}

impl CredentialStore for Creds {
    fn key(
        &self,
        username: &str,
        realm: &str,
        alg: PasswordAlgorithm,
        wall_now: SystemTime,
    ) -> Option<Key> {
        self.users
            .key(username, realm, alg, wall_now)
            .or_else(|| self.rest.as_ref()?.key(username, realm, alg, wall_now))
    }

    fn username_for_userhash(&self, hash: &[u8; 32], realm: &str) -> Option<String> {
        self.users.username_for_userhash(hash, realm)
    }

    fn supports_userhash(&self) -> bool {
        self.has_users
    }
}

// ---------------------------------------------------------------- relayed sockets

struct Relay {
    sock: Arc<UdpSocket>,
    reader: AbortHandle,
    /// Peer datagrams the reader handed to the TURN task whose answers are
    /// not sent yet. While there are any, the reader hands the TURN task
    /// the next ones too instead of taking the fast path, so that a route
    /// coming up never lets a datagram overtake one read before it.
    queued: Arc<AtomicUsize>,
}

/// The daemon's [`RelayAllocator`]: a real non-blocking UDP socket per
/// relayed address, read by a task that feeds the TURN task. Behind a 1:1
/// NAT the address handed to the server (and advertised to clients) carries
/// the external IP while the socket is bound on the relay IP; everything in
/// the daemon is keyed by the advertised address.
pub(crate) struct DaemonRelays {
    /// Per family (0: IPv4, 1: IPv6): (bind IP, advertised IP).
    ips: [Option<(IpAddr, IpAddr)>; 2],
    ports: (u16, u16),
    used: HashMap<SocketAddr, Relay>,
    held: HashMap<SocketAddr, std::net::UdpSocket>,
    /// TCP relayed addresses (advertised) → (bound address, accept loop).
    tcp: HashMap<SocketAddr, (SocketAddr, AbortHandle)>,
    inbound: mpsc::Sender<Inbound>,
    pool: Arc<BufPool>,
    fast: Option<Arc<FastPath>>,
}

fn family_index(f: AddressFamily) -> usize {
    match f {
        AddressFamily::V4 => 0,
        AddressFamily::V6 => 1,
    }
}

fn bind_std(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    let _ = s.set_recv_buffer_size(1 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

impl DaemonRelays {
    fn new(
        ips: [Option<(IpAddr, IpAddr)>; 2],
        ports: (u16, u16),
        inbound: mpsc::Sender<Inbound>,
        pool: Arc<BufPool>,
        fast: Option<Arc<FastPath>>,
    ) -> Self {
        DaemonRelays {
            ips,
            ports,
            used: HashMap::new(),
            held: HashMap::new(),
            tcp: HashMap::new(),
            inbound,
            pool,
            fast,
        }
    }

    /// The address a TCP relayed (advertised) address is bound on.
    pub(crate) fn tcp_bound(&self, advertised: SocketAddr) -> Option<SocketAddr> {
        self.tcp.get(&advertised).map(|(b, _)| *b)
    }

    /// The reader's count of datagrams handed to the TURN task
    /// ([`Relay::queued`]) for a relayed (advertised) address.
    fn queued(&self, advertised: SocketAddr) -> Option<Arc<AtomicUsize>> {
        self.used.get(&advertised).map(|r| r.queued.clone())
    }

    /// The socket of a relayed (advertised) address.
    pub(crate) fn socket(&self, advertised: SocketAddr) -> Option<&Arc<UdpSocket>> {
        self.used.get(&advertised).map(|r| &r.sock)
    }

    fn taken(&self, a: SocketAddr) -> bool {
        self.used.contains_key(&a) || self.held.contains_key(&a) || self.tcp.contains_key(&a)
    }

    fn start(&mut self, advertised: SocketAddr, sock: std::net::UdpSocket) -> bool {
        let sock = match UdpSocket::from_std(sock) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::warn!(%advertised, "relay socket: {e}");
                return false;
            }
        };
        let queued = Arc::new(AtomicUsize::new(0));
        let reader = tokio::spawn(relay_reader(
            sock.clone(),
            advertised,
            queued.clone(),
            self.inbound.clone(),
            self.pool.clone(),
            self.fast.clone(),
        ));
        self.used.insert(
            advertised,
            Relay {
                sock,
                reader: reader.abort_handle(),
                queued,
            },
        );
        true
    }
}

impl Drop for DaemonRelays {
    fn drop(&mut self) {
        for r in self.used.values() {
            r.reader.abort();
        }
        for (_, a) in self.tcp.values() {
            a.abort();
        }
    }
}

/// A TCP socket on `addr` that may share its port with the relayed
/// address's listener (so that Connect can go out from the relayed address).
fn tcp_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    Ok(s)
}

async fn tcp_accept_loop(listener: TcpListener, advertised: SocketAddr, tx: mpsc::Sender<Inbound>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let m = Inbound::PeerAccepted {
                    relayed: advertised,
                    peer,
                    stream,
                };
                if tx.send(m).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(%advertised, "relay accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Connect from `from` (the relayed address's bound address; if that port
/// cannot be shared, any port of its IP) to `peer`, and report.
async fn connect_peer(id: u32, from: SocketAddr, peer: SocketAddr, tx: mpsc::Sender<Inbound>) {
    let attempt = async {
        let s = match tcp_socket(from).and_then(|s| s.bind(from).map(|()| s)) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%from, "connect from the relayed port: {e}; using another port");
                let any = SocketAddr::new(from.ip(), 0);
                let s = tcp_socket(any)?;
                s.bind(any)?;
                s
            }
        };
        s.connect(peer).await
    };
    let stream = match tokio::time::timeout(PEER_CONNECT_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    };
    if let Ok(s) = &stream {
        let _ = s.set_nodelay(true);
    }
    let _ = tx.send(Inbound::PeerConnected { id, stream }).await;
}

impl RelayAllocator for DaemonRelays {
    fn supports(&self, family: AddressFamily) -> bool {
        self.ips[family_index(family)].is_some()
    }

    fn allocate(
        &mut self,
        family: AddressFamily,
        even: bool,
        reserve_next: bool,
    ) -> Option<SocketAddr> {
        let (bind_ip, adv_ip) = self.ips[family_index(family)]?;
        let (lo, hi) = (u32::from(self.ports.0), u32::from(self.ports.1));
        let span = hi - lo + 1;
        let even = even || reserve_next;
        // A random start (RFC 8656 §7.2 asks for unpredictable ports), then
        // a linear probe.
        let start = rand::thread_rng().gen_range(0..span);
        let mut attempts = 0;
        for i in 0..span {
            let port = (lo + (start + i) % span) as u16;
            if even && port % 2 != 0 {
                continue;
            }
            let adv = SocketAddr::new(adv_ip, port);
            if self.taken(adv) {
                continue;
            }
            let next = if reserve_next {
                match port.checked_add(1).filter(|p| u32::from(*p) <= hi) {
                    Some(p) if !self.taken(SocketAddr::new(adv_ip, p)) => Some(p),
                    _ => continue,
                }
            } else {
                None
            };
            attempts += 1;
            if attempts > BIND_ATTEMPTS {
                break;
            }
            let Ok(sock) = bind_std(SocketAddr::new(bind_ip, port)) else {
                continue;
            };
            let held = match next {
                Some(p) => match bind_std(SocketAddr::new(bind_ip, p)) {
                    Ok(s) => Some((SocketAddr::new(adv_ip, p), s)),
                    Err(_) => continue,
                },
                None => None,
            };
            if !self.start(adv, sock) {
                return None;
            }
            if let Some((a, s)) = held {
                self.held.insert(a, s);
            }
            return Some(adv);
        }
        tracing::warn!(
            ip = %bind_ip,
            "no free relay port in {}-{}",
            self.ports.0,
            self.ports.1
        );
        None
    }

    fn allocate_token(&mut self, reserved: SocketAddr) -> Option<SocketAddr> {
        let sock = self.held.remove(&reserved)?;
        self.start(reserved, sock).then_some(reserved)
    }

    fn release(&mut self, addr: SocketAddr) {
        if let Some(r) = self.used.remove(&addr) {
            r.reader.abort();
        }
        self.held.remove(&addr);
        if let Some((_, accept)) = self.tcp.remove(&addr) {
            accept.abort();
        }
    }

    fn supports_tcp(&self) -> bool {
        true
    }

    fn allocate_tcp(&mut self, family: AddressFamily) -> Option<SocketAddr> {
        let (bind_ip, adv_ip) = self.ips[family_index(family)]?;
        let (lo, hi) = (u32::from(self.ports.0), u32::from(self.ports.1));
        let span = hi - lo + 1;
        let start = rand::thread_rng().gen_range(0..span);
        for i in 0..span.min(BIND_ATTEMPTS) {
            let port = (lo + (start + i) % span) as u16;
            let adv = SocketAddr::new(adv_ip, port);
            if self.taken(adv) {
                continue;
            }
            let bind = SocketAddr::new(bind_ip, port);
            let Ok(sock) = tcp_socket(bind) else {
                continue;
            };
            if sock.bind(bind).is_err() {
                continue;
            }
            let Ok(listener) = sock.listen(64) else {
                continue;
            };
            let accept = tokio::spawn(tcp_accept_loop(listener, adv, self.inbound.clone()));
            self.tcp.insert(adv, (bind, accept.abort_handle()));
            return Some(adv);
        }
        tracing::warn!(ip = %bind_ip, "no free TCP relay port in {}-{}", self.ports.0, self.ports.1);
        None
    }
}

/// A relayed socket reader's buffers, one set per thread (borrowed only
/// between two awaits): [`BATCH`](sys::BATCH) slots of 4 bytes of room for
/// a ChannelData header and [`RELAY_BUF`] of datagram. The pages of a slot
/// are touched only as far as datagrams fill them.
struct RelayRx {
    buf: Vec<u8>,
    meta: Vec<sys::RecvMeta>,
    hits: Vec<Hit>,
    /// Cleared when the system has no `recvmmsg`.
    batched: bool,
}

const RELAY_STRIDE: usize = 4 + RELAY_BUF;

thread_local! {
    static RELAY_RX: std::cell::RefCell<RelayRx> = std::cell::RefCell::new(RelayRx {
        buf: vec![0; sys::BATCH * RELAY_STRIDE],
        meta: vec![sys::RecvMeta::default(); sys::BATCH],
        hits: Vec::with_capacity(sys::BATCH),
        batched: true,
    });
}

/// Read what a readable relayed socket holds (up to a batch): datagrams
/// with a fast-path route go straight to their client, the rest to the
/// TURN task in pooled buffers. Returns `Err(WouldBlock)` when nothing was
/// there, and whether the TURN task is gone.
fn relay_batch(
    sock: &UdpSocket,
    advertised: SocketAddr,
    queued: &AtomicUsize,
    tx: &mpsc::Sender<Inbound>,
    pool: &BufPool,
    fast: Option<&FastPath>,
) -> io::Result<bool> {
    RELAY_RX.with(|rx| {
        let mut rx = rx.borrow_mut();
        let rx = &mut *rx;
        let got = if rx.batched {
            let fd = sock.as_raw_fd();
            match sock.try_io(Interest::READABLE, || {
                sys::recv_slots(fd, &mut rx.buf, RELAY_STRIDE, 4, &mut rx.meta)
            }) {
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    rx.batched = false;
                    return Ok(false);
                }
                r => r?,
            }
        } else {
            let (n, from) = sock.try_recv_from(&mut rx.buf[4..RELAY_STRIDE])?;
            rx.meta[0] = sys::RecvMeta {
                len: n,
                from,
                truncated: false,
            };
            1
        };
        let now = Instant::now();
        let mut closed = false;
        for k in 0..got {
            let m = rx.meta[k];
            if m.truncated {
                continue;
            }
            let slot = &mut rx.buf[k * RELAY_STRIDE..(k + 1) * RELAY_STRIDE];
            if let Some(f) = fast {
                if queued.load(Ordering::Acquire) == 0
                    && f.stage_from_peer(advertised, m.from, slot, m.len, k, now, &mut rx.hits)
                {
                    continue;
                }
            }
            let p = Inbound::Packet {
                transport: Transport::Udp,
                local: advertised,
                remote: m.from,
                bytes: pool.copy_of(&slot[4..4 + m.len]),
                conn: None,
            };
            // Counted before the TURN task can see it (it counts down).
            queued.fetch_add(1, Ordering::AcqRel);
            match tx.try_send(p) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(p)) => {
                    queued.fetch_sub(1, Ordering::AcqRel);
                    if let Inbound::Packet { bytes, .. } = p {
                        pool.give(bytes);
                    }
                    tracing::trace!(%advertised, "turn queue full: peer datagram dropped");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    queued.fetch_sub(1, Ordering::AcqRel);
                    closed = true;
                }
            }
        }
        if let Some(f) = fast {
            let buf = &rx.buf;
            f.send_staged(&mut rx.hits, |k| {
                &buf[k * RELAY_STRIDE..(k + 1) * RELAY_STRIDE]
            });
        }
        Ok(closed)
    })
}

async fn relay_reader(
    sock: Arc<UdpSocket>,
    advertised: SocketAddr,
    queued: Arc<AtomicUsize>,
    tx: mpsc::Sender<Inbound>,
    pool: Arc<BufPool>,
    fast: Option<Arc<FastPath>>,
) {
    loop {
        if let Err(e) = sock.readable().await {
            tracing::debug!(%advertised, "relay readable: {e}");
            tokio::task::yield_now().await;
            continue;
        }
        match relay_batch(&sock, advertised, &queued, &tx, &pool, fast.as_deref()) {
            Ok(false) => {}
            Ok(true) => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::debug!(%advertised, "relay recv: {e}");
                tokio::task::yield_now().await;
            }
        }
    }
}

// ---------------------------------------------------------------- setup

/// What `Server::bind` prepares and `Server::run` starts.
pub(crate) struct TurnSetup {
    config: ServerConfig,
    users: BTreeMap<String, String>,
    secret: Option<String>,
    ips: [Option<(IpAddr, IpAddr)>; 2],
    ports: (u16, u16),
    summary: String,
}

impl TurnSetup {
    /// Add addresses the daemon serves on that were only known once bound
    /// (TCP/TLS, metrics and signaling listeners configured with port 0):
    /// never relayed to.
    pub(crate) fn add_service_addresses(&mut self, addrs: impl IntoIterator<Item = SocketAddr>) {
        let service = &mut self.config.service_addresses;
        service.extend(addrs);
        service.sort();
        service.dedup();
    }

    /// How long a TCP/TLS connection that carries TURN may stay silent: an
    /// allocation's longest lifetime plus a minute (the client refreshes
    /// within it).
    pub(crate) fn stream_idle(&self) -> Duration {
        self.config.max_lifetime + Duration::from_secs(60)
    }

    /// A line for the startup banner.
    pub(crate) fn summary(&self) -> &str {
        &self.summary
    }
}

fn invalid(msg: &'static str) -> crate::ServerError {
    crate::ServerError::Config(ConfigError::Invalid(msg))
}

/// Check the `[turn]` section against the bound addresses; `None` when TURN
/// is off.
pub(crate) fn prepare(
    config: &Config,
    listen: &[SocketAddr],
) -> Result<Option<TurnSetup>, crate::ServerError> {
    let t: &TurnConfig = &config.turn;
    if !t.enabled() {
        return Ok(None);
    }
    let realm = t.realm.clone().unwrap_or_default();
    let specific = |v4: bool| {
        config
            .stun
            .listen
            .iter()
            .chain(listen)
            .map(SocketAddr::ip)
            .find(|ip| ip.is_ipv4() == v4 && !ip.is_unspecified())
    };
    let relay_for = |v4: bool| {
        t.relay_ip
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4() == v4)
            .or_else(|| specific(v4))
    };
    let mut ips: [Option<(IpAddr, IpAddr)>; 2] = [None, None];
    for (k, v4) in [(0, true), (1, false)] {
        if let Some(bind) = relay_for(v4) {
            let adv = t
                .external_ip
                .iter()
                .copied()
                .find(|ip| ip.is_ipv4() == v4)
                .unwrap_or(bind);
            ips[k] = Some((bind, adv));
        }
    }
    if ips.iter().all(Option::is_none) {
        return Err(invalid(
            "TURN needs a relay IP: give --relay-ip (turn.relay_ip) when listening on 0.0.0.0 or ::",
        ));
    }
    // The relay IP must be bindable: find out now rather than on the first Allocate.
    for (bind, _) in ips.iter().flatten() {
        if let Err(source) = bind_std(SocketAddr::new(*bind, 0)) {
            return Err(crate::ServerError::Bind {
                transport: "udp",
                addr: SocketAddr::new(*bind, 0),
                source,
            });
        }
    }
    let mut policy = PeerPolicy::new();
    for c in &t.allow_peer {
        let c: Cidr = c
            .parse()
            .map_err(|_| invalid("turn.allow_peer: not a CIDR block"))?;
        policy = policy.allow(c);
    }
    for c in &t.deny_peer {
        let c: Cidr = c
            .parse()
            .map_err(|_| invalid("turn.deny_peer: not a CIDR block"))?;
        policy = policy.deny(c);
    }
    let mut own: Vec<IpAddr> = config
        .stun
        .listen
        .iter()
        .chain(listen)
        .map(SocketAddr::ip)
        .filter(|ip| !ip.is_unspecified())
        .collect();
    for (b, a) in ips.iter().flatten() {
        own.push(*b);
        own.push(*a);
    }
    own.sort();
    own.dedup();
    let mut sc = ServerConfig::new(realm.clone());
    sc.software = Some(config.stun.software.clone()).filter(|s| !s.is_empty());
    sc.nonce_lifetime = Duration::from_secs(t.nonce_lifetime_secs);
    sc.default_lifetime = Duration::from_secs(t.default_lifetime_secs);
    sc.max_lifetime = Duration::from_secs(t.max_lifetime_secs);
    sc.user_quota = (t.user_quota > 0).then_some(t.user_quota);
    sc.total_quota = (t.total_quota > 0).then_some(t.total_quota);
    sc.max_tcp_connections = t.max_tcp_connections;
    sc.bandwidth = (t.max_bps > 0).then(|| Bandwidth {
        bytes_per_sec: t.max_bps,
        burst: t.max_bps.max(4096),
    });
    sc.peer_policy = policy;
    sc.own_addresses = own;
    // Never relayed to, whatever the policy (a port of 0 in the
    // configuration is only known once bound: the listening UDP sockets are
    // in `listen`; the request's own listening address is always refused).
    let mut service: Vec<SocketAddr> = config
        .stun
        .listen
        .iter()
        .chain(listen)
        .chain(config.stun.alt_listen.iter())
        .copied()
        .chain(config.tls_listen())
        .chain(config.metrics.listen)
        .chain(config.signaling.listen)
        .filter(|a| a.port() != 0)
        .collect();
    service.sort();
    service.dedup();
    sc.service_addresses = service;
    sc.answer_binding = false;
    sc.export_routes = t.relay_fast_path;
    let relays: Vec<String> = ips
        .iter()
        .flatten()
        .map(|(b, a)| {
            if a == b {
                b.to_string()
            } else {
                format!("{b} (advertised as {a})")
            }
        })
        .collect();
    let summary = format!(
        "TURN enabled: realm \"{realm}\", {} static user(s){}, relays on {} ports {}-{}, peers: {}{}",
        t.users.len(),
        if t.auth_secret.is_some() {
            ", REST API secret"
        } else {
            ""
        },
        relays.join(" and "),
        t.min_port,
        t.max_port,
        if t.allow_peer.is_empty() {
            "public addresses only".to_owned()
        } else {
            format!("public addresses and {}", t.allow_peer.join(", "))
        },
        if t.deny_peer.is_empty() {
            String::new()
        } else {
            format!(" except {}", t.deny_peer.join(", "))
        },
    );
    Ok(Some(TurnSetup {
        config: sc,
        users: t.users.clone(),
        secret: t.auth_secret.clone(),
        ips,
        ports: (t.min_port, t.max_port),
        summary,
    }))
}

/// Start the TURN task; `listening` are the UDP sockets to answer from.
pub(crate) fn spawn(
    setup: TurnSetup,
    listening: HashMap<SocketAddr, Arc<UdpSocket>>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> TurnHandle {
    let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
    let mut users = StaticUsers::new();
    for (u, p) in &setup.users {
        users.insert(u.clone(), p.clone());
    }
    let creds = Creds {
        users,
        has_users: !setup.users.is_empty(),
        rest: setup.secret.as_ref().map(|s| RestSecret::new(s.as_bytes())),
    };
    let pool = Arc::new(BufPool::default());
    let fast = setup
        .config
        .export_routes
        .then(|| Arc::new(FastPath::new()));
    let relays = DaemonRelays::new(
        setup.ips,
        setup.ports,
        tx.clone(),
        pool.clone(),
        fast.clone(),
    );
    let epoch = (Instant::now(), SystemTime::now());
    let server = TurnServer::new(setup.config, creds, relays, epoch);
    let task = TurnTask {
        server,
        listening,
        conns: HashMap::new(),
        stats: TurnStats::default(),
        peers: HashMap::new(),
        splices: HashMap::new(),
        inbound: tx.clone(),
        pool: pool.clone(),
        used: Vec::new(),
        pending: Vec::new(),
        handled_from_peers: Vec::new(),
        order: Vec::new(),
        batch: SendBatch::new(),
        fast: fast.clone(),
        fast_traffic: HashMap::new(),
        tcp_meters: HashMap::new(),
        fast_retired: [TrafficSnapshot::default(); 3],
    };
    tasks.spawn(task.run(rx));
    TurnHandle { tx, pool, fast }
}

// ---------------------------------------------------------------- the task

type ConnKey = (Transport, SocketAddr, SocketAddr);

struct TurnTask {
    server: TurnServer<Creds, DaemonRelays>,
    listening: HashMap<SocketAddr, Arc<UdpSocket>>,
    /// (transport, server address, client address) → the connection's queue.
    conns: HashMap<ConnKey, mpsc::Sender<ConnOut>>,
    stats: TurnStats,
    /// RFC 6062 peer connections waiting for their ConnectionBind.
    peers: HashMap<u32, TcpStream>,
    /// Spliced peer connections: dropping the sender ends the splice.
    splices: HashMap<u32, oneshot::Sender<()>>,
    /// The task's own inbound queue, for connect tasks to report on.
    inbound: mpsc::Sender<Inbound>,
    /// Where inbound packet buffers come from and go back to.
    pool: Arc<BufPool>,
    /// Inbound buffers handled, given back to the pool once per burst.
    used: Vec<Vec<u8>>,
    /// UDP transmits of the current burst, sent by `send_pending`.
    pending: Vec<p2p_turn::Transmit>,
    /// The readers' [`Relay::queued`] of the burst's peer datagrams (one
    /// entry each), counted down once the burst's transmits are sent.
    handled_from_peers: Vec<Arc<AtomicUsize>>,
    /// (source, index into `pending`), sorted to group the sends.
    order: Vec<(SocketAddr, u32)>,
    /// Buffers for `sendmmsg`.
    batch: Box<SendBatch>,
    /// The relay fast path, when on.
    fast: Option<Arc<FastPath>>,
    /// What allocations relayed outside the TURN server: UDP ones on the
    /// fast path, RFC 6062 ones over their spliced TCP connections.
    fast_traffic: HashMap<FiveTuple, Arc<FastTraffic>>,
    /// The RFC 6062 allocations' meters (traffic and bandwidth cap).
    tcp_meters: HashMap<FiveTuple, Arc<TcpMeter>>,
    /// Such traffic of allocations that ended, by client transport
    /// ([`transport_index`]).
    fast_retired: [TrafficSnapshot; 3],
}

/// Up to [`sys::BATCH`] datagrams for one `sendmmsg` call.
struct SendBatch {
    bufs: [[u8; sys::BUF]; sys::BATCH],
    lens: [usize; sys::BATCH],
    dests: [SocketAddr; sys::BATCH],
    /// How many are filled.
    n: usize,
    /// Cleared when the system has no `sendmmsg`.
    batched: bool,
}

impl SendBatch {
    fn new() -> Box<Self> {
        Box::new(SendBatch {
            bufs: [[0; sys::BUF]; sys::BATCH],
            lens: [0; sys::BATCH],
            dests: [SocketAddr::from(([0, 0, 0, 0], 0)); sys::BATCH],
            n: 0,
            batched: true,
        })
    }

    /// Send the filled datagrams from `sock`; returns (sent, failed).
    async fn send(&mut self, sock: &UdpSocket) -> (u64, u64) {
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
async fn send_one(sock: &UdpSocket, bytes: &[u8], to: SocketAddr) -> bool {
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
    async fn run(mut self, mut rx: mpsc::Receiver<Inbound>) {
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

    async fn on_message(&mut self, m: Inbound) {
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
    fn command(&mut self, c: TcpCommand) {
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
    fn route(&mut self, r: RouteUpdate) {
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
    fn tcp_meter(&mut self, allocation: FiveTuple) -> Arc<TcpMeter> {
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
    fn fold_fast(&mut self, five_tuple: &FiveTuple, traffic: &mut p2p_turn::Traffic) {
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

    fn snapshot(&self) -> TurnStats {
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
    async fn flush(&mut self, transport: Option<Transport>) {
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
    fn count_down_handled(&mut self) {
        for q in self.handled_from_peers.drain(..) {
            // Never below zero: a relayed address given up and taken again
            // within one burst has a fresh count.
            let _ = q.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
        }
    }

    /// Send the staged UDP transmits: grouped per source socket (each
    /// group in its order, so no flow is reordered) and batched with
    /// `sendmmsg`; then recycle their buffers.
    async fn send_pending(&mut self) {
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

    fn ended(
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

    fn on_event(&mut self, e: ServerEvent, transport: Option<Transport>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use p2p_stun::{ChannelData, MessageBuilder, MessageClass, Method, TransactionId};

    fn msg(method: Method, class: MessageClass) -> Vec<u8> {
        let mut v = Vec::new();
        MessageBuilder::new(
            &mut v,
            MessageType::new(method, class),
            TransactionId::new([3; 12]),
        )
        .unwrap();
        v
    }

    #[test]
    fn turn_methods_and_channel_data_are_routed_binding_is_not() {
        assert!(wants(&msg(Method::ALLOCATE, MessageClass::Request)));
        assert!(wants(&msg(Method::REFRESH, MessageClass::Request)));
        assert!(wants(&msg(Method::SEND, MessageClass::Indication)));
        assert!(wants(&msg(
            Method::CREATE_PERMISSION,
            MessageClass::Request
        )));
        assert!(!wants(&msg(Method::BINDING, MessageClass::Request)));
        assert!(!wants(&msg(Method::BINDING, MessageClass::Indication)));
        let mut cd = Vec::new();
        ChannelData::new(0x4001, b"x")
            .unwrap()
            .encode(&mut cd, false)
            .unwrap();
        assert!(wants(&cd));
        assert!(!wants(&[]));
        assert!(!wants(&[0x00]));
        assert!(!wants(&[0x80, 0, 0, 0]));
    }

    #[test]
    fn the_pool_reuses_buffers_and_stays_bounded() {
        let pool = BufPool::default();
        let b = pool.copy_of(b"abc");
        assert_eq!(b, b"abc");
        let at = b.as_ptr();
        pool.give(b);
        assert_eq!(pool.len(), 1);
        let c = pool.copy_of(b"xy");
        assert_eq!(c, b"xy", "cleared before reuse");
        assert_eq!(c.as_ptr(), at, "the same buffer");
        assert_eq!(pool.len(), 0);
        pool.give(vec![0u8; 5 * POOL_BUF]);
        assert_eq!(pool.len(), 0, "oversized buffers are freed");
        let mut many: Vec<Vec<u8>> = (0..POOL_MAX + 5).map(|_| pool.copy_of(b"z")).collect();
        pool.give_back(&mut many);
        assert!(many.is_empty());
        assert_eq!(pool.len(), POOL_MAX);
        let big = pool.copy_of(&[1u8; 3 * POOL_BUF]);
        assert_eq!(big.len(), 3 * POOL_BUF, "a large datagram fits");
    }

    #[test]
    fn static_users_win_and_rest_usernames_are_checked() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let creds = Creds {
            users: StaticUsers::new().with_user("alice", "secret"),
            has_users: true,
            rest: Some(RestSecret::new("s")),
        };
        let alg = PasswordAlgorithm::Sha256;
        let k = |u: &str, p: &str| Key::long_term(u, "r", p, alg).unwrap();
        assert_eq!(
            creds.key("alice", "r", alg, wall),
            Some(k("alice", "secret"))
        );
        let user = "2000000:bob";
        let pass = RestSecret::new("s").password(user);
        assert_eq!(creds.key(user, "r", alg, wall), Some(k(user, &pass)));
        assert_eq!(creds.key("900000:bob", "r", alg, wall), None, "expired");
        assert_eq!(creds.key("bob", "r", alg, wall), None);
        assert!(creds.supports_userhash());
        let h = p2p_stun::userhash("alice", "r").unwrap();
        assert_eq!(
            creds.username_for_userhash(&h, "r").as_deref(),
            Some("alice")
        );
    }

    #[tokio::test]
    async fn relays_bind_advertise_reserve_and_release() {
        let (tx, mut rx) = mpsc::channel(16);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let public: IpAddr = "192.0.2.7".parse().unwrap();
        let mut r = DaemonRelays::new(
            [Some((lo, public)), None],
            (42000, 42999),
            tx,
            Arc::default(),
            None,
        );
        assert!(r.supports(AddressFamily::V4));
        assert!(!r.supports(AddressFamily::V6));
        assert_eq!(r.allocate(AddressFamily::V6, false, false), None);

        let a = r.allocate(AddressFamily::V4, false, false).unwrap();
        assert_eq!(a.ip(), public, "the external IP is advertised");
        assert!((42000..=42999).contains(&a.port()));
        let sock = r.socket(a).unwrap().clone();
        assert_eq!(sock.local_addr().unwrap(), SocketAddr::new(lo, a.port()));

        // What a peer sends to the bound socket arrives tagged with the
        // advertised address.
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        peer.send_to(b"hi", SocketAddr::new(lo, a.port()))
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let Inbound::Packet {
            local,
            remote,
            bytes,
            ..
        } = got
        else {
            panic!("a packet");
        };
        assert_eq!(local, a);
        assert_eq!(remote, peer.local_addr().unwrap());
        assert_eq!(bytes, b"hi");

        let e = r.allocate(AddressFamily::V4, true, true).unwrap();
        assert_eq!(e.port() % 2, 0);
        let next = SocketAddr::new(public, e.port() + 1);
        assert!(r.socket(next).is_none(), "held, not yet in use");
        assert_eq!(r.allocate_token(next), Some(next));
        assert!(r.socket(next).is_some());
        assert_eq!(r.allocate_token(next), None);

        r.release(a);
        assert!(r.socket(a).is_none());
        // The port is free again once the aborted reader is dropped.
        drop(sock);
        let mut rebound = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if bind_std(SocketAddr::new(lo, a.port())).is_ok() {
                rebound = true;
                break;
            }
        }
        assert!(rebound, "the released port is closed");
    }
}
