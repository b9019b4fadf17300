//! UDP GSO in the driver: the datagrams the session hands out back to
//! back, from one socket to one peer and of one size (the last may be
//! shorter: a full SCTP packet's records all have the same length), go out
//! in one `sendmsg` with `UDP_SEGMENT` (quinn-udp): one system call for up
//! to 64 datagrams, where a `sendto` each was the largest single cost of
//! the data path. On loopback, a receiver with GRO gets them as one read.

use std::collections::HashMap;
use std::net::SocketAddr;

use p2p_proto::{Transmit, Transport};
use tokio::net::UdpSocket;

use super::super::net::Batched;

/// The most payload bytes one call carries (the kernel takes up to 64 KiB
/// of UDP payload per `sendmsg`).
const MAX_BYTES: usize = 64_000;
/// The most datagrams one call carries (the kernel's `UDP_MAX_SEGMENTS`).
const MAX_SEGMENTS: usize = 64;

/// Datagrams waiting to go out together.
#[derive(Debug)]
pub(super) struct Batch {
    pub(super) source: SocketAddr,
    destination: SocketAddr,
    /// The length of every datagram but the last.
    segment: usize,
    count: usize,
    max: usize,
    /// A datagram shorter than `segment` was added: it must be the last.
    closed: bool,
    buf: Vec<u8>,
}

/// The batch being filled, and a buffer kept for the next one.
#[derive(Debug, Default)]
pub(super) struct Gso {
    batch: Option<Batch>,
    spare: Vec<u8>,
}

impl Gso {
    /// Takes `t` into the batch when it can go in the same call; false
    /// when it cannot (flush, then try again, then send it alone).
    pub(super) fn push(&mut self, t: &Transmit, batched: &HashMap<SocketAddr, Batched>) -> bool {
        let len = t.contents.len();
        if t.transport != Transport::Udp || len == 0 {
            return false;
        }
        match &mut self.batch {
            None => {
                let Some(state) = batched.get(&t.source) else {
                    return false;
                };
                let max = state
                    .max_gso_segments()
                    .min(MAX_SEGMENTS)
                    .min(MAX_BYTES / len);
                if max < 2 {
                    return false;
                }
                let mut buf = std::mem::take(&mut self.spare);
                buf.clear();
                buf.extend_from_slice(&t.contents);
                self.batch = Some(Batch {
                    source: t.source,
                    destination: t.destination,
                    segment: len,
                    count: 1,
                    max,
                    closed: false,
                    buf,
                });
                true
            }
            Some(b) => {
                if b.closed
                    || b.source != t.source
                    || b.destination != t.destination
                    || len > b.segment
                    || b.count >= b.max
                {
                    return false;
                }
                b.buf.extend_from_slice(&t.contents);
                b.count += 1;
                b.closed = len < b.segment;
                true
            }
        }
    }

    /// The batch to send, if any.
    pub(super) fn take(&mut self) -> Option<Batch> {
        self.batch.take()
    }

    /// A sent batch's buffer, for the next one.
    pub(super) fn give_back(&mut self, b: Batch) {
        self.spare = b.buf;
    }
}

/// Sends a batch: one GSO call, or one datagram at a time if the socket
/// refuses GSO (a device without checksum offload answers EIO).
pub(super) async fn send(sock: &UdpSocket, state: &Batched, b: &Batch) {
    let t = quinn_udp::Transmit {
        destination: b.destination,
        ecn: None,
        contents: &b.buf,
        segment_size: (b.count > 1).then_some(b.segment),
        src_ip: None,
    };
    let r = sock
        .async_io(tokio::io::Interest::WRITABLE, || {
            state.try_send(quinn_udp::UdpSockRef::from(sock), &t)
        })
        .await;
    if let Err(e) = r {
        tracing::debug!("send {} -> {}: {e}", b.source, b.destination);
        if b.count > 1 {
            for c in b.buf.chunks(b.segment) {
                let _ = sock.send_to(c, b.destination).await;
            }
        }
    }
}
