//! STUN over TCP and TLS (RFC 8489 §6.2.2, §6.2.3): framing with
//! `p2p_stun::StreamFramer` (buffers grow with what arrived, not with what a
//! header announced), admission by client address (p2p-signaling's
//! `AddrTable`: a limit per address, IPv6 by prefix, and a reserve for
//! light addresses), and a deadline on every state of a connection
//! ([`Deadlines`]).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use p2p_signaling::{AddrKey, AddrLimits, AddrTable, Refusal};
use p2p_stun::{peek_type, MessageClass, MessageType, Method, PacketKind, StreamFramer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, StunConfig};
use crate::counters::{Counters, StreamClose};
use crate::fastpath::TcpMeter;
use crate::responder::{answer, Answer, Ctx, Dropped, Outcome, Transport};
use crate::turn::{ConnQueue, ToConnection};

/// The largest frame a connection may send: a STUN request never needs more.
const MAX_FRAME: usize = 4096;
/// The largest frame with TURN on: a Send indication or ChannelData with a
/// 64 KiB datagram.
const MAX_TURN_FRAME: usize = p2p_stun::MAX_FRAME;
/// Bytes read at a time on each side of an RFC 6062 relay.
const SPLICE_BUF: usize = 16 * 1024;
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection shares.
#[derive(Clone)]
pub(crate) struct StreamShared {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) counters: Counters,
    pub(crate) idle: Duration,
    /// Who may open one more connection.
    pub(crate) admission: Admission,
    /// The TURN server and the idle timeout of connections that hold an
    /// allocation.
    pub(crate) turn: Option<(crate::turn::TurnHandle, Duration)>,
}

/// The per-address limits of `[stun]`: `max_connections` in all,
/// `max_connections_per_ip` per address (64, or `max_connections` when
/// that is lower), an IPv6 address by its `ipv6_prefix`, and
/// `reserved_percent` of the slots kept for addresses holding fewer than
/// `reserve_below` (4, or the per-address limit when that is lower).
pub(crate) fn addr_limits(s: &StunConfig) -> AddrLimits {
    let per_ip = s
        .max_connections_per_ip
        .unwrap_or_else(|| s.max_connections.min(64));
    AddrLimits::new()
        .with_max_connections(s.max_connections)
        .with_max_per_addr(per_ip)
        .with_ipv6_prefix(s.ipv6_prefix)
        .with_reserve(
            s.reserved_percent,
            s.reserve_below.unwrap_or_else(|| per_ip.min(4)),
        )
}

/// Whether the per-address limits of `[stun]` can take effect.
pub(crate) fn check_limits(s: &StunConfig) -> Result<(), ConfigError> {
    let l = addr_limits(s);
    if l.max_per_addr == 0 || l.max_per_addr > s.max_connections {
        return Err(ConfigError::Invalid(
            "stun.max_connections_per_ip must be 1 to stun.max_connections: above it, it could never be reached",
        ));
    }
    l.validate().map_err(|e| {
        ConfigError::Invalid(match e {
            e if e.starts_with("ipv6_prefix") => {
                "stun.ipv6_prefix must be 1 to 128 (64 counts a host's /64 as one address)"
            }
            e if e.starts_with("reserved_percent") => {
                "stun.reserved_percent must be at most 90, or the reserve would leave no slot for anyone"
            }
            _ => "stun.reserve_below must be 1 to stun.max_connections_per_ip while stun.reserved_percent is above 0 (set reserved_percent = 0 to keep no reserve)",
        })
    })
}

/// The TCP and TLS connections open, by client address; cheap to clone.
#[derive(Clone)]
pub(crate) struct Admission {
    table: Arc<Mutex<AddrTable>>,
    counters: Counters,
}

/// A connection admitted: it counts against its address until dropped.
struct Admitted {
    admission: Admission,
    key: AddrKey,
}

impl Admission {
    pub(crate) fn new(limits: AddrLimits, counters: Counters) -> Admission {
        let table = AddrTable::new(limits);
        counters.store_admission(&table);
        Admission {
            table: Arc::new(Mutex::new(table)),
            counters,
        }
    }

    fn admit(&self, ip: IpAddr) -> Result<Admitted, Refusal> {
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let r = t.admit(ip);
        self.counters.store_admission(&t);
        drop(t);
        r.map(|key| Admitted {
            admission: self.clone(),
            key,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let a = &self.admission;
        let mut t = a.table.lock().unwrap_or_else(PoisonError::into_inner);
        t.release(self.key);
        a.counters.store_admission(&t);
    }
}

/// Accept connections until the task is aborted (which also aborts them).
/// A connection its address may not open is closed at once, unread.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: StreamShared,
) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("tcp listener has no address: {e}");
            return;
        }
    };
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (tcp, from) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off a little, never stop.
                tracing::warn!(%local, "accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shard = shared.counters.shard(0);
        let admitted = match shared.admission.admit(from.ip()) {
            Ok(a) => a,
            Err(refusal) => {
                shard.connection(false);
                tracing::debug!(%from, %local, %refusal, "connection refused");
                continue;
            }
        };
        shard.connection(true);
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            let _admitted = admitted;
            let r = match tls {
                None => serve(tcp, from, local, p2p_turn::Transport::Tcp, &shared).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => serve(s, from, local, p2p_turn::Transport::Tls, &shared).await,
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(io::ErrorKind::TimedOut.into()),
                    }
                }
            };
            if let Err(e) = r {
                tracing::debug!(%from, %local, "connection closed: {e}");
            }
        });
    }
}

/// The deadlines of one connection, which every state has: it is closed
/// when it makes no progress for the idle timeout (the longer one while it
/// holds an allocation), or when a frame under way has not arrived whole
/// within the idle timeout of its first byte. Progress is a success
/// answered (Binding, or an authenticated TURN request), or, while the
/// connection holds an allocation (authenticated by its 5-tuple), any whole
/// frame either way. Bytes alone are not progress, nor are error answers
/// (a 401, a 400), so that neither a byte every few seconds nor a stream of
/// wrong credentials keeps a connection open.
#[derive(Debug, Clone)]
pub(crate) struct Deadlines {
    idle: Duration,
    long: Duration,
    allocated: bool,
    progress: Instant,
    partial_since: Option<Instant>,
}

impl Deadlines {
    /// A connection that opened at `now`.
    pub(crate) fn new(now: Instant, idle: Duration, long: Duration) -> Deadlines {
        Deadlines {
            idle,
            long,
            allocated: false,
            progress: now,
            partial_since: None,
        }
    }

    /// Progress at `now`.
    pub(crate) fn progress(&mut self, now: Instant) {
        self.progress = now;
    }

    /// The connection holds an allocation from `now` (or no longer does).
    pub(crate) fn allocated(&mut self, now: Instant, yes: bool) {
        self.allocated = yes;
        self.progress = now;
    }

    /// Whether the connection holds an allocation.
    pub(crate) fn holds_allocation(&self) -> bool {
        self.allocated
    }

    /// After the whole frames were taken at `now`: whether bytes of an
    /// unfinished frame are held.
    pub(crate) fn buffered(&mut self, now: Instant, partial: bool) {
        self.partial_since = if partial {
            self.partial_since.or(Some(now))
        } else {
            None
        };
    }

    /// When the connection is closed, and why (a slow frame when one was
    /// under way then).
    pub(crate) fn deadline(&self) -> (Instant, StreamClose) {
        let idle = if self.allocated { self.long } else { self.idle };
        let quiet = self.progress + idle;
        match self.partial_since {
            Some(p) => (quiet.min(p + self.idle), StreamClose::SlowFrame),
            None => (quiet, StreamClose::Idle),
        }
    }
}

/// Write all of `bytes` within `limit`.
async fn write_within<S: AsyncWrite + Unpin>(
    s: &mut S,
    bytes: &[u8],
    limit: Duration,
    counters: &Counters,
) -> io::Result<()> {
    match tokio::time::timeout(limit, s.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => {
            counters.stream_closed(StreamClose::WriteTimeout);
            Err(io::ErrorKind::TimedOut.into())
        }
    }
}

/// Relay raw bytes between an RFC 6062 client data connection and its peer
/// connection (after writing what the client sent early) until both
/// directions have ended, either fails, or `kill` fires. Every chunk is
/// counted on `meter` and waits for the allocation's bandwidth cap.
async fn splice<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    early: &[u8],
    mut peer: TcpStream,
    kill: oneshot::Receiver<()>,
    meter: Arc<TcpMeter>,
) -> io::Result<()> {
    let run = async {
        if !early.is_empty() {
            pace(&meter, early.len()).await;
            peer.write_all(early).await?;
            meter.count(true, early.len());
        }
        let (cr, cw) = tokio::io::split(s);
        let (pr, pw) = peer.split();
        tokio::try_join!(pump(cr, pw, &meter, true), pump(pr, cw, &meter, false))?;
        tracing::debug!("turn tcp relay closed");
        Ok(())
    };
    tokio::select! {
        r = run => r,
        _ = kill => Ok(()),
    }
}

/// Wait until the meter lets `n` bytes go.
async fn pace(meter: &TcpMeter, n: usize) {
    let wait = meter.take(n, std::time::Instant::now());
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

/// Copy one direction of a splice until end of stream, then shut the
/// other side's writing half.
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    mut w: W,
    meter: &TcpMeter,
    to_peer: bool,
) -> io::Result<()> {
    let mut buf = vec![0u8; SPLICE_BUF];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return w.shutdown().await;
        }
        pace(meter, n).await;
        w.write_all(&buf[..n]).await?;
        meter.count(to_peer, n);
    }
}

/// Answer the STUN messages of one connection until it closes, breaks
/// framing or misses a deadline ([`Deadlines`]). With TURN on, TURN methods
/// and ChannelData go to the TURN task and what it sends back for this
/// 5-tuple is written here; after a successful ConnectionBind (RFC 6062),
/// the connection relays raw bytes to and from its peer connection instead.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    from: SocketAddr,
    local: SocketAddr,
    transport: p2p_turn::Transport,
    shared: &StreamShared,
) -> io::Result<()> {
    let shard = shared.counters.shard(0);
    let (max_frame, long) = match &shared.turn {
        Some((_, long)) => (MAX_TURN_FRAME, *long),
        None => (MAX_FRAME, shared.idle),
    };
    let mut framer = StreamFramer::new(max_frame);
    let (otx, mut orx) = ConnQueue::new();
    let mut clock = Deadlines::new(Instant::now(), shared.idle, long);
    let mut used_turn = false;
    // A ConnectionBind went to the TURN task: read nothing more until it is
    // answered, for after a success the stream carries raw bytes.
    let mut awaiting_bind = false;
    let bind_request = MessageType::new(Method::CONNECTION_BIND, MessageClass::Request);
    let bind_success = bind_request.success();
    let result = loop {
        let (deadline, why) = clock.deadline();
        let n = tokio::select! {
            r = s.read(framer.read_buf()), if !awaiting_bind => match r {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(e),
            },
            Some(msg) = orx.recv() => match msg {
                ToConnection::Write(msg) => {
                    let typ = peek_type(&msg);
                    if clock.holds_allocation()
                        || typ.is_some_and(|t| t.class == MessageClass::Success)
                    {
                        clock.progress(Instant::now());
                    }
                    if let Err(e) = write_within(&mut s, &msg, shared.idle, &shared.counters).await {
                        break Err(e);
                    }
                    if !awaiting_bind || typ == Some(bind_success) {
                        continue;
                    }
                    // The bind failed (or was challenged): back to STUN,
                    // starting with what is already buffered.
                    awaiting_bind = false;
                    0
                }
                ToConnection::Allocated(yes) => {
                    clock.allocated(Instant::now(), yes);
                    continue;
                }
                ToConnection::Splice { peer, kill, meter } => {
                    break splice(&mut s, framer.buffered(), peer, kill, meter).await;
                }
            },
            () = tokio::time::sleep_until(deadline.into()) => {
                shared.counters.stream_closed(why);
                break Err(io::ErrorKind::TimedOut.into());
            }
        };
        framer.filled(n);
        let now = Instant::now();
        let mut broken = None;
        while !awaiting_bind {
            let frame = match framer.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    shard.record(&Answer::Drop(Dropped::Malformed));
                    broken = Some(io::Error::new(io::ErrorKind::InvalidData, e));
                    break;
                }
            };
            if clock.holds_allocation() {
                clock.progress(now);
            }
            match &shared.turn {
                Some((t, _)) if crate::turn::goes_to_turn_server(frame) => {
                    used_turn = true;
                    awaiting_bind = peek_type(frame) == Some(bind_request);
                    if !t.stream(transport, local, from, frame, &otx).await {
                        broken = Some(io::ErrorKind::BrokenPipe.into());
                        break;
                    }
                }
                _ if p2p_stun::classify(frame) == PacketKind::Stun => {
                    // Made for each answer, not kept: an idle connection
                    // holds no answer buffer.
                    let mut out = vec![0u8; MAX_FRAME];
                    let a = answer(frame, from, local, Transport::Stream, &shared.ctx, &mut out);
                    shard.record(&a);
                    if let Answer::Reply { len, outcome, .. } = a {
                        if outcome == Outcome::Success {
                            clock.progress(now);
                        }
                        let w = write_within(&mut s, &out[..len], shared.idle, &shared.counters);
                        if let Err(e) = w.await {
                            broken = Some(e);
                            break;
                        }
                    }
                }
                _ => {
                    // ChannelData without a TURN server.
                    shard.record(&Answer::Drop(Dropped::NotRequest));
                }
            }
        }
        if let Some(e) = broken {
            break Err(e);
        }
        clock.buffered(now, !framer.buffered().is_empty());
    };
    if let (Some((t, _)), true) = (&shared.turn, used_turn) {
        t.closed(transport, local, from).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(30);
    const LONG: Duration = Duration::from_secs(3660);

    #[test]
    fn bytes_alone_do_not_move_the_deadline() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0, IDLE, LONG);
        // One byte every 5 s of a frame that never ends.
        for k in 1..=5 {
            d.buffered(t0 + Duration::from_secs(5 * k), true);
        }
        assert_eq!(d.deadline(), (t0 + IDLE, StreamClose::SlowFrame));
        // A success answered is progress; the frame under way still has
        // the idle timeout from its first byte.
        d.progress(t0 + Duration::from_secs(20));
        assert_eq!(
            d.deadline(),
            (t0 + Duration::from_secs(35), StreamClose::SlowFrame)
        );
        d.buffered(t0 + Duration::from_secs(21), false);
        assert_eq!(
            d.deadline(),
            (t0 + Duration::from_secs(50), StreamClose::Idle)
        );
    }

    #[test]
    fn only_an_allocation_raises_the_timeout_and_not_for_a_frame_under_way() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0, IDLE, LONG);
        assert_eq!(d.deadline(), (t0 + IDLE, StreamClose::Idle));
        d.allocated(t0 + Duration::from_secs(1), true);
        assert!(d.holds_allocation());
        assert_eq!(
            d.deadline(),
            (t0 + Duration::from_secs(1) + LONG, StreamClose::Idle)
        );
        // A header announcing 64 KiB and nothing more: the idle timeout.
        d.buffered(t0 + Duration::from_secs(2), true);
        assert_eq!(
            d.deadline(),
            (t0 + Duration::from_secs(32), StreamClose::SlowFrame)
        );
        // The allocation ends: back to the idle timeout from then.
        d.buffered(t0 + Duration::from_secs(3), false);
        d.allocated(t0 + Duration::from_secs(4), false);
        assert_eq!(
            d.deadline(),
            (t0 + Duration::from_secs(34), StreamClose::Idle)
        );
    }

    #[test]
    fn an_ipv6_64_counts_as_one_address_and_is_counted() {
        let counters = Counters::new(1);
        let a = Admission::new(addr_limits(&StunConfig::default()), counters.clone());
        let host = |net: u16, i: u16| IpAddr::from([0x2001, 0xdb8, 0, net, 0, 0, 0, i]);
        // 64 hosts of one /64: admitted; the 65th is refused per address.
        let held: Vec<Admitted> = (1..=64).map(|i| a.admit(host(0, i)).unwrap()).collect();
        assert!(matches!(a.admit(host(0, 65)), Err(Refusal::PerAddress)));
        // The next /64 is another address.
        let other = a.admit(host(1, 1)).unwrap();
        let snap = counters.snapshot();
        assert_eq!((snap.tcp_open, snap.tcp_addresses), (65, 2));
        assert_eq!(snap.tcp_refused_per_ip, 1);
        drop(held);
        drop(other);
        let snap = counters.snapshot();
        assert_eq!((snap.tcp_open, snap.tcp_addresses), (0, 0));
    }

    #[test]
    fn the_default_limits_hold_one_address_to_64_of_4096() {
        let l = addr_limits(&StunConfig::default());
        assert_eq!(
            (
                l.max_connections,
                l.max_per_addr,
                l.reserved_slots(),
                l.reserve_below
            ),
            (4096, 64, 410, 4)
        );
        let mut s = StunConfig {
            max_connections: 1,
            ..StunConfig::default()
        };
        assert_eq!(addr_limits(&s).max_per_addr, 1);
        assert!(check_limits(&s).is_ok());
        s.max_connections_per_ip = Some(2);
        assert!(check_limits(&s).is_err());
    }
}
