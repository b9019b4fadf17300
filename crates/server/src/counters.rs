//! What the server counts: packets in, answers out, drops and errors by code.
//! Each worker writes its own cache-line-sized shard, so counting costs no
//! contention; a [`Counters::snapshot`] sums the shards.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use p2p_signaling::AddrTable;

use crate::responder::{Answer, Dropped, Outcome};

/// One worker's counters, alone on its cache line(s).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Shard {
    received: AtomicU64,
    answered: AtomicU64,
    malformed: AtomicU64,
    ignored: AtomicU64,
    error_400: AtomicU64,
    error_420: AtomicU64,
    error_other: AtomicU64,
    send_errors: AtomicU64,
    tcp_connections: AtomicU64,
    tcp_refused: AtomicU64,
}

impl Shard {
    /// Count one received packet and what the responder made of it.
    pub(crate) fn record(&self, answer: &Answer) {
        self.received.fetch_add(1, Relaxed);
        match answer {
            Answer::Reply { outcome, .. } => {
                self.answered.fetch_add(1, Relaxed);
                match outcome {
                    Outcome::Success => {}
                    Outcome::Error(400) => {
                        self.error_400.fetch_add(1, Relaxed);
                    }
                    Outcome::Error(420) => {
                        self.error_420.fetch_add(1, Relaxed);
                    }
                    Outcome::Error(_) => {
                        self.error_other.fetch_add(1, Relaxed);
                    }
                }
            }
            Answer::Drop(Dropped::Malformed | Dropped::BadFingerprint) => {
                self.malformed.fetch_add(1, Relaxed);
            }
            Answer::Drop(_) => {
                self.ignored.fetch_add(1, Relaxed);
            }
        }
    }

    /// Count a datagram that could not be read whole (truncated).
    pub(crate) fn record_truncated(&self) {
        self.received.fetch_add(1, Relaxed);
        self.malformed.fetch_add(1, Relaxed);
    }

    /// Count a failed send.
    pub(crate) fn send_error(&self, n: u64) {
        self.send_errors.fetch_add(n, Relaxed);
    }

    /// Count an accepted (true) or refused (false) connection.
    pub(crate) fn connection(&self, accepted: bool) {
        if accepted {
            self.tcp_connections.fetch_add(1, Relaxed);
        } else {
            self.tcp_refused.fetch_add(1, Relaxed);
        }
    }
}

/// Why a TCP or TLS connection was closed by the server (the ones counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamClose {
    /// No progress (a success answered, data relayed) for the idle timeout.
    Idle,
    /// A frame under way did not arrive whole within the idle timeout.
    SlowFrame,
    /// A write to the client did not complete within the idle timeout.
    WriteTimeout,
}

/// The admission of TCP and TLS connections (per-address limits, kept in
/// step with the table after each change) and why connections were closed.
#[derive(Debug, Default)]
struct StreamStats {
    open: AtomicU64,
    addresses: AtomicU64,
    admitted_reserved: AtomicU64,
    refused_per_ip: AtomicU64,
    refused_reserved: AtomicU64,
    refused_full: AtomicU64,
    closed_idle: AtomicU64,
    closed_slow_frame: AtomicU64,
    closed_write_timeout: AtomicU64,
}

/// The server's counters, shared with its workers; cheap to clone.
#[derive(Debug, Clone)]
pub struct Counters {
    shards: Arc<[Shard]>,
    stream: Arc<StreamStats>,
}

/// The counters summed at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CounterSnapshot {
    /// Packets (datagrams or stream frames) received.
    pub received: u64,
    /// Responses sent (success and error).
    pub answered: u64,
    /// Packets dropped as malformed: not STUN, bad lengths, bad FINGERPRINT, truncated.
    pub malformed: u64,
    /// Packets dropped because there is nothing to answer (indications, responses).
    pub ignored: u64,
    /// 400 Bad Request responses.
    pub error_400: u64,
    /// 420 Unknown Attribute responses.
    pub error_420: u64,
    /// Error responses with another code.
    pub error_other: u64,
    /// Responses the socket failed to send.
    pub send_errors: u64,
    /// TCP and TLS connections accepted.
    pub tcp_connections: u64,
    /// TCP and TLS connections refused (limit reached): every reason
    /// below together.
    pub tcp_refused: u64,
    /// TCP and TLS connections open now.
    pub tcp_open: u64,
    /// Client addresses (IPv6 by prefix) with a TCP or TLS connection open.
    pub tcp_addresses: u64,
    /// TCP and TLS connections admitted into a reserved slot (kept for
    /// light addresses).
    pub tcp_admitted_reserved: u64,
    /// Refused: the address held its limit (`stun.max_connections_per_ip`).
    pub tcp_refused_per_ip: u64,
    /// Refused: only reserved slots left, and the address is not light.
    pub tcp_refused_reserved: u64,
    /// Refused: every slot taken (`stun.max_connections`).
    pub tcp_refused_full: u64,
    /// Closed for making no progress within the idle timeout.
    pub tcp_closed_idle: u64,
    /// Closed for a frame that did not arrive whole within the idle timeout.
    pub tcp_closed_slow_frame: u64,
    /// Closed for a write the client did not take within the idle timeout.
    pub tcp_closed_write_timeout: u64,
}

impl Counters {
    /// Counters with `shards` shards (one per worker, at least one).
    pub(crate) fn new(shards: usize) -> Counters {
        Counters {
            shards: (0..shards.max(1)).map(|_| Shard::default()).collect(),
            stream: Arc::default(),
        }
    }

    /// Copy the admission table's figures (call after each change).
    pub(crate) fn store_admission(&self, table: &AddrTable) {
        let st = table.stats();
        let s = &self.stream;
        s.open.store(table.open() as u64, Relaxed);
        s.addresses.store(table.addresses() as u64, Relaxed);
        s.admitted_reserved.store(st.admitted_reserved, Relaxed);
        s.refused_per_ip.store(st.refused_per_addr, Relaxed);
        s.refused_reserved.store(st.refused_reserved, Relaxed);
        s.refused_full.store(st.refused_full, Relaxed);
    }

    /// Count a connection the server closed.
    pub(crate) fn stream_closed(&self, why: StreamClose) {
        let s = &self.stream;
        match why {
            StreamClose::Idle => &s.closed_idle,
            StreamClose::SlowFrame => &s.closed_slow_frame,
            StreamClose::WriteTimeout => &s.closed_write_timeout,
        }
        .fetch_add(1, Relaxed);
    }

    /// The shard of worker `i`.
    pub(crate) fn shard(&self, i: usize) -> &Shard {
        &self.shards[i % self.shards.len()]
    }

    /// Sum the shards now.
    pub fn snapshot(&self) -> CounterSnapshot {
        let mut s = CounterSnapshot::default();
        for sh in self.shards.iter() {
            s.received += sh.received.load(Relaxed);
            s.answered += sh.answered.load(Relaxed);
            s.malformed += sh.malformed.load(Relaxed);
            s.ignored += sh.ignored.load(Relaxed);
            s.error_400 += sh.error_400.load(Relaxed);
            s.error_420 += sh.error_420.load(Relaxed);
            s.error_other += sh.error_other.load(Relaxed);
            s.send_errors += sh.send_errors.load(Relaxed);
            s.tcp_connections += sh.tcp_connections.load(Relaxed);
            s.tcp_refused += sh.tcp_refused.load(Relaxed);
        }
        let st = &self.stream;
        s.tcp_open = st.open.load(Relaxed);
        s.tcp_addresses = st.addresses.load(Relaxed);
        s.tcp_admitted_reserved = st.admitted_reserved.load(Relaxed);
        s.tcp_refused_per_ip = st.refused_per_ip.load(Relaxed);
        s.tcp_refused_reserved = st.refused_reserved.load(Relaxed);
        s.tcp_refused_full = st.refused_full.load(Relaxed);
        s.tcp_closed_idle = st.closed_idle.load(Relaxed);
        s.tcp_closed_slow_frame = st.closed_slow_frame.load(Relaxed);
        s.tcp_closed_write_timeout = st.closed_write_timeout.load(Relaxed);
        s
    }
}

impl std::fmt::Display for CounterSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "received={} answered={} malformed={} ignored={} 400={} 420={} other_errors={} send_errors={} tcp_connections={} tcp_refused={}",
            self.received,
            self.answered,
            self.malformed,
            self.ignored,
            self.error_400,
            self.error_420,
            self.error_other,
            self.send_errors,
            self.tcp_connections,
            self.tcp_refused
        )
    }
}
