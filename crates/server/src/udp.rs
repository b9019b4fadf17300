//! UDP: sockets bound with SO_REUSEPORT, one set per worker, each read and
//! answered in batches. The loop allocates nothing: its buffers are made
//! once when the worker starts.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::counters::Counters;
use crate::responder::{answer, Answer, Ctx, Transport, Via};
use crate::sys::{self, RecvMeta, BATCH, BUF};

/// A UDP socket with SO_REUSEPORT (so that every worker binds its own).
pub(crate) fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Best effort: bursts at line rate want deep queues.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Whether another program holds `addr`'s UDP port: a socket bound there
/// without SO_REUSEPORT fails with `AddrInUse` when any socket holds it
/// (with SO_REUSEPORT, a second daemon of the same user would silently get
/// a share of the port's datagrams, and TURN requests would reach a daemon
/// that does not hold the allocation). Call before binding the daemon's own
/// sockets; a port of 0 is not probed (the kernel picks a free one).
pub(crate) fn probe_unshared(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    match s.bind(&addr.into()) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another program already serves UDP on this port (a second daemon would share its datagrams)",
        )),
        other => other,
    }
}

/// One worker's sockets: index 0 is the one it reads; the others (the RFC
/// 5780 siblings) only send CHANGE-REQUEST answers.
pub(crate) struct Worker {
    pub(crate) sock: Arc<UdpSocket>,
    /// Another worker's socket bound to the same address, drained when this
    /// one is idle (SO_REUSEPORT hashes flows, so with few flows one socket
    /// can get most of them).
    pub(crate) neighbour: Option<Arc<UdpSocket>>,
    pub(crate) local: SocketAddr,
    /// Every socket of this worker's group, by local address (≤ 4).
    pub(crate) group: Vec<(SocketAddr, Arc<UdpSocket>)>,
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) counters: Counters,
    pub(crate) shard: usize,
    /// The TURN server, when it runs: TURN methods and ChannelData go there.
    pub(crate) turn: Option<crate::turn::TurnHandle>,
}

struct Bufs {
    rx: Vec<[u8; BUF]>,
    meta: Vec<RecvMeta>,
    tx: Vec<[u8; BUF]>,
    tx_len: Vec<usize>,
    tx_to: Vec<SocketAddr>,
    /// The answers of a batch grouped by client for UDP GSO.
    gso: sys::GsoPlan,
    /// ChannelData of the batch staged on the TURN relay fast path.
    hits: Vec<crate::fastpath::Hit>,
}

impl Worker {
    /// Serve until the task is aborted.
    pub(crate) async fn run(self) {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut b = Bufs {
            rx: vec![[0u8; BUF]; BATCH],
            meta: vec![RecvMeta::default(); BATCH],
            tx: vec![[0u8; BUF]; BATCH],
            tx_len: vec![0; BATCH],
            tx_to: vec![unspecified; BATCH],
            gso: sys::GsoPlan::new(),
            hits: Vec::with_capacity(BATCH),
        };
        let mut batched = true;
        loop {
            // Our own socket first; the neighbour's when ours is idle.
            let sock = match &self.neighbour {
                None => {
                    if let Err(e) = self.sock.readable().await {
                        tracing::warn!(local = %self.local, "udp readiness: {e}");
                        continue;
                    }
                    &self.sock
                }
                Some(n) => tokio::select! {
                    biased;
                    r = self.sock.readable() => match r {
                        Ok(()) => &self.sock,
                        Err(e) => {
                            tracing::warn!(local = %self.local, "udp readiness: {e}");
                            continue;
                        }
                    },
                    r = n.readable() => match r {
                        Ok(()) => n,
                        Err(_) => continue,
                    },
                },
            };
            let fd = sock.as_raw_fd();
            let got = if batched {
                match sock.try_io(Interest::READABLE, || {
                    sys::recv_batch(fd, &mut b.rx, &mut b.meta)
                }) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                        tracing::info!("recvmmsg unavailable: one datagram per call");
                        batched = false;
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(local = %self.local, "recvmmsg: {e}");
                        continue;
                    }
                }
            } else {
                match sock.try_recv_from(&mut b.rx[0]) {
                    Ok((len, from)) => {
                        b.meta[0] = RecvMeta {
                            len,
                            from,
                            truncated: false,
                        };
                        1
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => {
                        tracing::debug!(local = %self.local, "recv_from: {e}");
                        continue;
                    }
                }
            };
            self.handle(sock, &mut b, got, batched).await;
        }
    }

    async fn handle(&self, sock: &UdpSocket, b: &mut Bufs, got: usize, batched: bool) {
        let shard = self.counters.shard(self.shard);
        let mut queued = 0;
        let fast = self.turn.as_ref().and_then(|t| t.fast());
        let mut now = None;
        for i in 0..got {
            let m = b.meta[i];
            if m.truncated {
                shard.record_truncated();
                continue;
            }
            if let Some(t) = &self.turn {
                let pkt = &b.rx[i][..m.len];
                if crate::turn::goes_to_turn_server(pkt) {
                    // ChannelData with a route: relayed from here.
                    if let Some(f) = fast.filter(|_| pkt.first().is_some_and(|b| b & 0xC0 == 0x40))
                    {
                        let now = *now.get_or_insert_with(std::time::Instant::now);
                        if f.stage_from_client(self.local, m.from, pkt, i, now, &mut b.hits) {
                            continue;
                        }
                    }
                    if !t.udp(self.local, m.from, pkt) {
                        shard.send_error(1);
                    }
                    continue;
                }
            }
            let a = answer(
                &b.rx[i][..m.len],
                m.from,
                self.local,
                Transport::Udp,
                &self.ctx,
                &mut b.tx[queued],
            );
            shard.record(&a);
            let Answer::Reply {
                len,
                via,
                source,
                to,
                ..
            } = a
            else {
                continue;
            };
            if via == Via::SAME {
                b.tx_len[queued] = len;
                b.tx_to[queued] = to;
                queued += 1;
            } else {
                // RFC 5780 CHANGE-REQUEST: rare, sent one by one.
                let sibling = self.group.iter().find(|(a, _)| *a == source);
                let sent = match sibling {
                    Some((_, s)) => s.send_to(&b.tx[queued][..len], to).await.is_ok(),
                    None => false,
                };
                if !sent {
                    shard.send_error(1);
                }
            }
        }
        if let Some(f) = fast {
            let rx = &b.rx;
            f.send_staged(&mut b.hits, |i| &rx[i][..]);
        }
        self.flush(sock, b, queued, batched).await;
    }

    /// Send the queued answers from `sock` (the socket they came in on).
    /// With UDP GSO, the answers to one client leave as one train when
    /// there are several (order kept per client, not across clients).
    async fn flush(&self, sock: &UdpSocket, b: &mut Bufs, queued: usize, mut batched: bool) {
        let shard = self.counters.shard(self.shard);
        let fd = sock.as_raw_fd();
        if batched && queued > 1 && sys::gso_enabled(fd) {
            b.gso.build(&b.tx_len[..queued], &b.tx_to[..queued]);
        } else {
            b.gso.build(&[], &[]);
        }
        // Nothing to gather (one answer per client): the plain path below.
        if b.gso.len() > 0 && b.gso.len() < queued {
            let mut g = 0;
            // Group `g` was split after a failed train: if its first answer
            // now goes, GSO was what failed.
            let mut suspect: Option<io::Error> = None;
            while g < b.gso.len() {
                let r = if batched {
                    sock.try_io(Interest::WRITABLE, || {
                        sys::send_gso(fd, &b.tx, &b.tx_len, &b.tx_to, &b.gso, g)
                    })
                } else {
                    // Groups are of one answer by now (see below).
                    let i = usize::from(b.gso.group(g)[0]);
                    sock.try_send_to(&b.tx[i][..b.tx_len[i]], b.tx_to[i])
                        .map(|_| 1)
                };
                match r {
                    Ok(n) => {
                        if let Some(e) = suspect.take() {
                            sys::gso_disable(&e);
                        }
                        g += n.max(1);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if sock.writable().await.is_err() {
                            shard.send_error(b.gso.answers_from(g) as u64);
                            return;
                        }
                    }
                    Err(e) if b.gso.group(g).len() > 1 && sys::is_gso_error(&e) => {
                        // Retry these answers one by one: whether they go
                        // tells GSO's fault from the destination's.
                        b.gso.split_from(g);
                        suspect = Some(e);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                        suspect = None;
                        b.gso.split_from(g);
                        batched = false;
                    }
                    Err(e) => {
                        suspect = None;
                        let i = usize::from(b.gso.group(g)[0]);
                        tracing::debug!(to = %b.tx_to[i], "send: {e}");
                        shard.send_error(b.gso.group(g).len() as u64);
                        g += 1;
                    }
                }
            }
            return;
        }
        let mut done = 0;
        while done < queued {
            let r = if batched {
                sock.try_io(Interest::WRITABLE, || {
                    sys::send_batch(
                        fd,
                        &b.tx[done..queued],
                        &b.tx_len[done..queued],
                        &b.tx_to[done..queued],
                    )
                })
            } else {
                sock.try_send_to(&b.tx[done][..b.tx_len[done]], b.tx_to[done])
                    .map(|_| 1)
            };
            match r {
                Ok(n) => done += n.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if sock.writable().await.is_err() {
                        shard.send_error((queued - done) as u64);
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Unsupported => batched = false,
                Err(e) => {
                    // The first datagram of the batch failed (e.g. no route):
                    // skip it, keep the rest.
                    tracing::debug!(to = %b.tx_to[done], "send: {e}");
                    shard.send_error(1);
                    done += 1;
                }
            }
        }
    }
}
