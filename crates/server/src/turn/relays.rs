//! The relayed sockets: one UDP socket per relayed address, read by a task of its own.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use p2p_stun::attr::AddressFamily;
use p2p_turn::{RelayAllocator, Transport};
use rand::Rng;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::fastpath::{FastPath, Hit};
use crate::sys;

use super::*;

/// Most bind attempts per relayed address asked for.
const BIND_ATTEMPTS: u32 = 512;
/// Largest datagram read on a relayed socket.
const RELAY_BUF: usize = 65536;

pub(super) struct Relay {
    pub(super) sock: Arc<UdpSocket>,
    pub(super) reader: AbortHandle,
    /// Peer datagrams the reader handed to the TURN task whose answers are
    /// not sent yet. While there are any, the reader hands the TURN task
    /// the next ones too instead of taking the fast path, so that a route
    /// coming up never lets a datagram overtake one read before it.
    pub(super) queued: Arc<AtomicUsize>,
}

/// The daemon's [`RelayAllocator`]: a real non-blocking UDP socket per
/// relayed address, read by a task that feeds the TURN task. Behind a 1:1
/// NAT the address handed to the server (and advertised to clients) carries
/// the external IP while the socket is bound on the relay IP; everything in
/// the daemon is keyed by the advertised address.
pub(crate) struct DaemonRelays {
    /// Per family (0: IPv4, 1: IPv6): (bind IP, advertised IP).
    pub(super) ips: [Option<(IpAddr, IpAddr)>; 2],
    pub(super) ports: (u16, u16),
    pub(super) used: HashMap<SocketAddr, Relay>,
    pub(super) held: HashMap<SocketAddr, std::net::UdpSocket>,
    /// TCP relayed addresses (advertised) → (bound address, accept loop).
    pub(super) tcp: HashMap<SocketAddr, (SocketAddr, AbortHandle)>,
    pub(super) inbound: mpsc::Sender<Inbound>,
    pub(super) pool: Arc<BufPool>,
    pub(super) fast: Option<Arc<FastPath>>,
}

pub(super) fn family_index(f: AddressFamily) -> usize {
    match f {
        AddressFamily::V4 => 0,
        AddressFamily::V6 => 1,
    }
}

pub(super) fn bind_std(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
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
    pub(super) fn new(
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
    pub(super) fn queued(&self, advertised: SocketAddr) -> Option<Arc<AtomicUsize>> {
        self.used.get(&advertised).map(|r| r.queued.clone())
    }

    /// The socket of a relayed (advertised) address.
    pub(crate) fn socket(&self, advertised: SocketAddr) -> Option<&Arc<UdpSocket>> {
        self.used.get(&advertised).map(|r| &r.sock)
    }

    pub(super) fn taken(&self, a: SocketAddr) -> bool {
        self.used.contains_key(&a) || self.held.contains_key(&a) || self.tcp.contains_key(&a)
    }

    pub(super) fn start(&mut self, advertised: SocketAddr, sock: std::net::UdpSocket) -> bool {
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
pub(super) struct RelayRx {
    buf: Vec<u8>,
    meta: Vec<sys::RecvMeta>,
    hits: Vec<Hit>,
    /// Cleared when the system has no `recvmmsg`.
    batched: bool,
}

pub(super) const RELAY_STRIDE: usize = 4 + RELAY_BUF;

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
pub(super) fn relay_batch(
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

pub(super) async fn relay_reader(
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
