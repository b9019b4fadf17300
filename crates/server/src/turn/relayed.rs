//! The relayed sockets the TURN server asks for ([`SocketRequest`]): one
//! UDP socket per relayed address, read by a task of its own; UDP sockets
//! held for a reservation; TCP listeners of RFC 6062 allocations.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::fastpath::{FastPath, Hit};
use crate::sys;

use super::tcp_relay::{tcp_accept_loop, tcp_socket};
use super::{BufPool, Inbound};
#[cfg(doc)]
use p2p_turn::SocketRequest;

/// Largest datagram read on a relayed socket.
const RELAY_BUF: usize = 65536;

/// The UDP socket of a relayed address and its reader.
pub(super) struct RelayedSocket {
    pub(super) sock: Arc<UdpSocket>,
    reader: AbortHandle,
    /// Peer datagrams the reader handed to the TURN task whose answers are
    /// not sent yet. While there are any, the reader hands the TURN task
    /// the next ones too instead of taking the fast path, so that a route
    /// coming up never lets a datagram overtake one read before it.
    pub(super) queued: Arc<AtomicUsize>,
}

/// The sockets of relayed addresses, opened and closed as the TURN server
/// asks. Behind a 1:1 NAT the relayed address the server hands out (the
/// advertised one) carries the external IP while the socket is bound on
/// the relay IP; everything here is keyed by the advertised address.
pub(super) struct RelayedSockets {
    /// Per family (0: IPv4, 1: IPv6): (bind IP, advertised IP).
    ips: [Option<(IpAddr, IpAddr)>; 2],
    udp: HashMap<SocketAddr, RelayedSocket>,
    /// Bound and held unread for a reservation (EVEN-PORT R).
    held: HashMap<SocketAddr, std::net::UdpSocket>,
    /// TCP relayed addresses → (bound address, accept loop).
    tcp: HashMap<SocketAddr, (SocketAddr, AbortHandle)>,
    inbound: mpsc::Sender<Inbound>,
    pool: Arc<BufPool>,
    fast: Option<Arc<FastPath>>,
}

pub(crate) fn bind_std(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
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

impl RelayedSockets {
    pub(super) fn new(
        ips: [Option<(IpAddr, IpAddr)>; 2],
        inbound: mpsc::Sender<Inbound>,
        pool: Arc<BufPool>,
        fast: Option<Arc<FastPath>>,
    ) -> Self {
        RelayedSockets {
            ips,
            udp: HashMap::new(),
            held: HashMap::new(),
            tcp: HashMap::new(),
            inbound,
            pool,
            fast,
        }
    }

    /// The local address to bind for an advertised relayed address.
    fn bind_addr(&self, advertised: SocketAddr) -> Option<SocketAddr> {
        let k = usize::from(advertised.is_ipv6());
        match self.ips[k] {
            Some((bind, adv)) if adv == advertised.ip() => {
                Some(SocketAddr::new(bind, advertised.port()))
            }
            _ => None,
        }
    }

    /// Bind (or take from the held ones) the UDP socket of `advertised`
    /// and start its reader. False when the OS refuses.
    pub(super) fn bind_udp(&mut self, advertised: SocketAddr) -> bool {
        if self.udp.contains_key(&advertised) {
            return false;
        }
        let sock = match self.held.remove(&advertised) {
            Some(s) => s,
            None => {
                let Some(bind) = self.bind_addr(advertised) else {
                    return false;
                };
                match bind_std(bind) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(%bind, "relayed socket: {e}");
                        return false;
                    }
                }
            }
        };
        let sock = match UdpSocket::from_std(sock) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::warn!(%advertised, "relayed socket: {e}");
                return false;
            }
        };
        let queued = Arc::new(AtomicUsize::new(0));
        let reader = tokio::spawn(relayed_reader(
            sock.clone(),
            advertised,
            queued.clone(),
            self.inbound.clone(),
            self.pool.clone(),
            self.fast.clone(),
        ));
        self.udp.insert(
            advertised,
            RelayedSocket {
                sock,
                reader: reader.abort_handle(),
                queued,
            },
        );
        true
    }

    /// Bind the UDP socket of `advertised` and hold it unread.
    pub(super) fn reserve_udp(&mut self, advertised: SocketAddr) -> bool {
        let Some(bind) = self.bind_addr(advertised) else {
            return false;
        };
        if self.held.contains_key(&advertised) {
            return false;
        }
        match bind_std(bind) {
            Ok(s) => {
                self.held.insert(advertised, s);
                true
            }
            Err(e) => {
                tracing::debug!(%bind, "held relayed socket: {e}");
                false
            }
        }
    }

    /// Bind a TCP listener on `advertised` (RFC 6062) and accept peers.
    pub(super) fn listen_tcp(&mut self, advertised: SocketAddr) -> bool {
        let Some(bind) = self.bind_addr(advertised) else {
            return false;
        };
        if self.tcp.contains_key(&advertised) {
            return false;
        }
        let listener = tcp_socket(bind)
            .and_then(|s| s.bind(bind).map(|()| s))
            .and_then(|s| s.listen(64));
        match listener {
            Ok(l) => {
                let accept = tokio::spawn(tcp_accept_loop(l, advertised, self.inbound.clone()));
                self.tcp.insert(advertised, (bind, accept.abort_handle()));
                true
            }
            Err(e) => {
                tracing::debug!(%bind, "TCP relayed socket: {e}");
                false
            }
        }
    }

    /// Close whatever is open on `advertised`.
    pub(super) fn release(&mut self, advertised: SocketAddr) {
        if let Some(r) = self.udp.remove(&advertised) {
            r.reader.abort();
        }
        self.held.remove(&advertised);
        if let Some((_, accept)) = self.tcp.remove(&advertised) {
            accept.abort();
        }
    }

    /// The address a TCP relayed (advertised) address is bound on.
    pub(super) fn tcp_bound(&self, advertised: SocketAddr) -> Option<SocketAddr> {
        self.tcp.get(&advertised).map(|(b, _)| *b)
    }

    /// The UDP socket of a relayed address.
    pub(super) fn get(&self, advertised: SocketAddr) -> Option<&RelayedSocket> {
        self.udp.get(&advertised)
    }

    /// Sockets open: UDP (read or held) and TCP listeners.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.udp.len() + self.held.len() + self.tcp.len()
    }
}

impl Drop for RelayedSockets {
    fn drop(&mut self) {
        for r in self.udp.values() {
            r.reader.abort();
        }
        for (_, a) in self.tcp.values() {
            a.abort();
        }
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
fn relayed_batch(
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
            let p = Inbound::FromPeer {
                relayed: advertised,
                peer: m.from,
                bytes: pool.copy_of(&slot[4..4 + m.len]),
            };
            // Counted before the TURN task can see it (it counts down).
            queued.fetch_add(1, Ordering::AcqRel);
            match tx.try_send(p) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(p)) => {
                    queued.fetch_sub(1, Ordering::AcqRel);
                    if let Inbound::FromPeer { bytes, .. } = p {
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

async fn relayed_reader(
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
        match relayed_batch(&sock, advertised, &queued, &tx, &pool, fast.as_deref()) {
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
    async fn relayed_sockets_bind_advertise_hold_and_close() {
        let (tx, mut rx) = mpsc::channel(16);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let public: IpAddr = "192.0.2.7".parse().unwrap();
        let mut r = RelayedSockets::new([Some((lo, public)), None], tx, Arc::default(), None);
        // A free port on loopback, advertised on the public IP.
        let port = bind_std(SocketAddr::new(lo, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let a = SocketAddr::new(public, port);
        assert!(
            !r.bind_udp("[2001:db8::1]:4000".parse().unwrap()),
            "no IPv6 relay IP"
        );
        assert!(
            !r.bind_udp(SocketAddr::new(lo, port)),
            "not an advertised address"
        );
        assert!(r.bind_udp(a));
        assert!(!r.bind_udp(a), "bound once");
        let sock = r.get(a).unwrap().sock.clone();
        assert_eq!(sock.local_addr().unwrap(), SocketAddr::new(lo, port));

        // What a peer sends to the bound socket arrives tagged with the
        // advertised address.
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        peer.send_to(b"hi", SocketAddr::new(lo, port))
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let Inbound::FromPeer {
            relayed,
            peer: from,
            bytes,
        } = got
        else {
            panic!("a peer's datagram");
        };
        assert_eq!(relayed, a);
        assert_eq!(from, peer.local_addr().unwrap());
        assert_eq!(bytes, b"hi");

        // A held socket is bound unread, then read once asked for.
        let next = bind_std(SocketAddr::new(lo, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let held = SocketAddr::new(public, next);
        assert!(r.reserve_udp(held));
        assert!(r.get(held).is_none(), "held, not read");
        assert!(
            bind_std(SocketAddr::new(lo, next)).is_err(),
            "nobody else gets the held port"
        );
        assert!(r.bind_udp(held));
        assert!(r.get(held).is_some());
        assert_eq!(r.open(), 2);

        // A port another program holds is refused.
        let other = bind_std(SocketAddr::new(lo, 0)).unwrap();
        let taken = SocketAddr::new(public, other.local_addr().unwrap().port());
        assert!(!r.bind_udp(taken));
        assert!(!r.reserve_udp(taken));

        r.release(a);
        r.release(held);
        assert!(r.get(a).is_none());
        assert_eq!(r.open(), 0);
        // The port is free again once the aborted reader is dropped.
        drop(sock);
        let mut rebound = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if bind_std(SocketAddr::new(lo, port)).is_ok() {
                rebound = true;
                break;
            }
        }
        assert!(rebound, "the released port is closed");
    }
}
