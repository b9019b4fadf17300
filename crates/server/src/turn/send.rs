//! Batched sends of the TURN task's UDP transmits (`sendmmsg`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::sys;

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

    /// Add a datagram of at most [`sys::BUF`] bytes; whether the batch is
    /// now full (send it).
    pub(super) fn push(&mut self, bytes: &[u8], to: SocketAddr) -> bool {
        let len = bytes.len();
        self.bufs[self.n][..len].copy_from_slice(bytes);
        self.lens[self.n] = len;
        self.dests[self.n] = to;
        self.n += 1;
        self.n == sys::BATCH
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
