//! The host sockets, read by the driver itself: where the OS batches
//! (GRO, `recvmmsg`), each read of several datagrams goes from the kernel
//! straight into the session, with no reader task, no copy and no queue
//! between them (a hand-over and a wakeup per read were much of the
//! time a datagram spent in the driver).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use p2p_proto::{Datagram, Transport};
use tokio::net::UdpSocket;

use super::super::net::{Batched, IDLE_BUFFERS, MAX_DATAGRAM};

/// Reads per `recvmmsg`.
const READ_BATCH: usize = 4;

/// One host socket with batched I/O.
pub(super) struct HostSocket {
    pub(super) local: SocketAddr,
    pub(super) sock: Arc<UdpSocket>,
    pub(super) state: Batched,
}

/// The host sockets the driver reads, and the receive buffers they share
/// (one read at a time): made at the first read, dropped once
/// [`IDLE_BUFFERS`] passed without one, so that an idle connection holds
/// none.
pub(super) struct HostReads {
    sockets: Vec<HostSocket>,
    /// Each buffer's size: a GRO read holds up to `gro_segments` datagrams
    /// of up to 1,500 bytes (the path MTU bounds them, not ours).
    size: usize,
    bufs: Option<Box<[Vec<u8>; READ_BATCH]>>,
    meta: [quinn_udp::RecvMeta; READ_BATCH],
    /// The last read that brought datagrams.
    last: Option<Instant>,
}

impl HostReads {
    pub(super) fn new(sockets: Vec<HostSocket>) -> Self {
        let size = sockets
            .iter()
            .map(|h| h.state.gro_segments() * 1500)
            .max()
            .unwrap_or(0)
            .max(MAX_DATAGRAM);
        HostReads {
            sockets,
            size,
            bufs: None,
            meta: [quinn_udp::RecvMeta::default(); READ_BATCH],
            last: None,
        }
    }

    /// Waits until a socket is readable; its index. Cancel-safe (it only
    /// polls readiness). Never, without sockets.
    pub(super) async fn readable(&self) -> usize {
        std::future::poll_fn(|cx| {
            for (i, h) in self.sockets.iter().enumerate() {
                // An error is readiness too: the read says it.
                if h.sock.poll_recv_ready(cx).is_ready() {
                    return Poll::Ready(i);
                }
            }
            Poll::Pending
        })
        .await
    }

    /// How many sockets.
    pub(super) fn len(&self) -> usize {
        self.sockets.len()
    }

    /// One `recvmmsg` on socket `i` if it is readable: how many reads it
    /// brought (0: none waiting). The datagrams are then
    /// [`datagrams`](Self::datagrams)`(i, n)`.
    pub(super) fn try_read(&mut self, i: usize, now: Instant) -> usize {
        let Some(h) = self.sockets.get(i) else {
            return 0;
        };
        let (size, bufs, meta) = (self.size, &mut self.bufs, &mut self.meta);
        loop {
            let r = h.sock.try_io(tokio::io::Interest::READABLE, || {
                let bufs =
                    bufs.get_or_insert_with(|| Box::new(std::array::from_fn(|_| vec![0u8; size])));
                let mut slices = bufs.each_mut().map(|b| io::IoSliceMut::new(&mut b[..]));
                match h.state.recv((&*h.sock).into(), &mut slices, meta) {
                    // Any other error ends this readiness too (it is
                    // logged): the next datagram wakes us, and a lasting
                    // error cannot spin the loop.
                    Err(e)
                        if e.kind() != io::ErrorKind::WouldBlock
                            && e.kind() != io::ErrorKind::ConnectionReset =>
                    {
                        tracing::debug!("UDP {}: {e}", h.local);
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                    r => r,
                }
            });
            let n = match r {
                Ok(n) => n,
                // ICMP port unreachable and friends surface as errors on
                // some systems: read on.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
                Err(_) => 0,
            };
            // Buffers just made count as used: they go after the idle time.
            if n > 0 || (self.last.is_none() && self.bufs.is_some()) {
                self.last = Some(now);
            }
            return n;
        }
    }

    /// The datagrams of the last read of socket `i` (`n` reads).
    pub(super) fn datagrams(&self, i: usize, n: usize) -> impl Iterator<Item = Datagram<'_>> {
        let local = self.sockets.get(i).map(|h| h.local);
        let bufs = self.bufs.as_deref().into_iter().flatten();
        self.meta
            .iter()
            .zip(bufs)
            .take(if local.is_some() { n } else { 0 })
            .flat_map(move |(m, b)| {
                let bytes = b.get(..m.len).unwrap_or_default();
                let stride = if m.stride == 0 { usize::MAX } else { m.stride };
                let local = local.unwrap_or(m.addr);
                bytes
                    .chunks(stride.max(1))
                    .map(move |c| Datagram::new(Transport::Udp, m.addr, local, c))
            })
    }

    /// When the buffers go if nothing is read before.
    pub(super) fn release_at(&self) -> Option<Instant> {
        self.bufs.as_ref()?;
        Some(self.last? + IDLE_BUFFERS)
    }

    /// Drops the buffers if nothing was read for [`IDLE_BUFFERS`].
    pub(super) fn release_if_idle(&mut self, now: Instant) {
        if self.release_at().is_some_and(|t| t <= now) {
            self.bufs = None;
        }
    }

    /// Whether it holds receive buffers now.
    #[cfg(test)]
    pub(super) fn holds_buffers(&self) -> bool {
        self.bufs.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn host() -> (UdpSocket, HostReads, SocketAddr) {
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind a");
        let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind b"));
        let local = b.local_addr().expect("addr");
        let state = Arc::new(
            quinn_udp::UdpSocketState::new(quinn_udp::UdpSockRef::from(&*b)).expect("state"),
        );
        let reads = HostReads::new(vec![HostSocket {
            local,
            sock: b,
            state,
        }]);
        (a, reads, local)
    }

    #[tokio::test]
    async fn the_loop_reads_datagrams_in_place_and_drops_its_buffers_once_idle() {
        let (a, mut reads, local) = host().await;
        let t0 = Instant::now();
        assert!(!reads.holds_buffers(), "none before the first read");
        assert_eq!(reads.try_read(0, t0), 0, "nothing waits yet");
        for m in [&b"one"[..], b"two"] {
            a.send_to(m, local).await.expect("send");
        }
        let mut got = Vec::new();
        let from = a.local_addr().expect("addr");
        // Bounded: a few readiness rounds at most.
        for _ in 0..10 {
            if got.len() == 2 {
                break;
            }
            let i = tokio::time::timeout(Duration::from_secs(5), reads.readable())
                .await
                .expect("readable");
            let n = reads.try_read(i, t0);
            for d in reads.datagrams(i, n) {
                assert_eq!((d.source, d.destination), (from, local));
                got.push(d.contents.to_vec());
            }
        }
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
        assert!(reads.holds_buffers(), "held while datagrams flow");
        // Idle just short of the hold: kept; past it: dropped.
        reads.release_if_idle(t0 + IDLE_BUFFERS - Duration::from_millis(1));
        assert!(reads.holds_buffers());
        assert_eq!(reads.release_at(), Some(t0 + IDLE_BUFFERS));
        reads.release_if_idle(t0 + IDLE_BUFFERS);
        assert!(!reads.holds_buffers(), "dropped once idle");
        assert_eq!(reads.release_at(), None);
    }
}
