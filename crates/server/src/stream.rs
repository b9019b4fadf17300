//! STUN over TCP and TLS (RFC 8489 §6.2.2, §6.2.3): framing with
//! `p2p_stun::next_frame_len`, a per-connection buffer limit, an idle
//! timeout, and a cap on open connections.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use p2p_stun::{next_frame_len, MessageClass, MessageType, Method, PacketKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::counters::Counters;
use crate::fastpath::TcpMeter;
use crate::responder::{answer, Answer, Ctx, Dropped, Transport};
use crate::turn::ToConnection;

/// The largest frame a connection may send: a STUN request never needs more.
const MAX_FRAME: usize = 4096;
/// The largest frame with TURN on: a Send indication or ChannelData with a
/// 64 KiB datagram.
const MAX_TURN_FRAME: usize = 65536 + 512;
/// How long a TLS handshake may take.
/// Bytes read at a time on each side of an RFC 6062 relay.
const SPLICE_BUF: usize = 16 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection shares.
#[derive(Clone)]
pub(crate) struct StreamShared {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) counters: Counters,
    pub(crate) idle: Duration,
    pub(crate) permits: Arc<Semaphore>,
    /// The TURN server and the idle timeout of connections that use it.
    pub(crate) turn: Option<(crate::turn::TurnHandle, Duration)>,
}

/// Accept connections until the task is aborted (which also aborts them).
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
        let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
            shard.connection(false);
            continue;
        };
        shard.connection(true);
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            let _permit = permit;
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

/// The message type of a frame's header, if it has one.
fn frame_type(frame: &[u8]) -> Option<MessageType> {
    let b = frame.get(..2)?;
    Some(MessageType::from_u16(u16::from_be_bytes([b[0], b[1]])))
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

/// Answer the STUN messages of one connection until it closes, idles out or
/// breaks framing. With TURN on, TURN methods and ChannelData go to the TURN
/// task and what it sends back for this 5-tuple is written here; after a
/// successful ConnectionBind (RFC 6062), the connection relays raw bytes to
/// and from its peer connection instead.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    from: SocketAddr,
    local: SocketAddr,
    transport: p2p_turn::Transport,
    shared: &StreamShared,
) -> io::Result<()> {
    let shard = shared.counters.shard(0);
    let max_frame = if shared.turn.is_some() {
        MAX_TURN_FRAME
    } else {
        MAX_FRAME
    };
    let mut buf = vec![0u8; MAX_FRAME];
    let mut out = vec![0u8; MAX_FRAME];
    let mut filled = 0;
    let (otx, mut orx) = mpsc::channel::<ToConnection>(crate::turn::CONN_QUEUE);
    let mut used_turn = false;
    // A ConnectionBind went to the TURN task: read nothing more until it is
    // answered, for after a success the stream carries raw bytes.
    let mut awaiting_bind = false;
    let bind_request = MessageType::new(Method::CONNECTION_BIND, MessageClass::Request);
    let bind_success = bind_request.success();
    let result = loop {
        let idle = match &shared.turn {
            Some((_, long)) if used_turn => *long,
            _ => shared.idle,
        };
        let n = tokio::select! {
            r = tokio::time::timeout(idle, s.read(&mut buf[filled..])), if !awaiting_bind => match r {
                Ok(Ok(0)) => break Ok(()),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => break Err(e),
                Err(_) => break Err(io::ErrorKind::TimedOut.into()),
            },
            Some(msg) = orx.recv() => match msg {
                ToConnection::Write(msg) => {
                    if let Err(e) = s.write_all(&msg).await {
                        break Err(e);
                    }
                    if !awaiting_bind || frame_type(&msg) == Some(bind_success) {
                        continue;
                    }
                    // The bind failed (or was challenged): back to STUN,
                    // starting with what is already buffered.
                    awaiting_bind = false;
                    0
                }
                ToConnection::Splice { peer, kill, meter } => {
                    break splice(&mut s, &buf[..filled], peer, kill, meter).await;
                }
            },
            () = tokio::time::sleep(idle), if awaiting_bind => {
                break Err(io::ErrorKind::TimedOut.into());
            }
        };
        filled += n;
        let mut broken = None;
        while !awaiting_bind {
            let len = match next_frame_len(&buf[..filled]) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    shard.record(&Answer::Drop(Dropped::Malformed));
                    broken = Some(io::Error::new(io::ErrorKind::InvalidData, e));
                    break;
                }
            };
            if len > max_frame {
                shard.record(&Answer::Drop(Dropped::Malformed));
                broken = Some(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "frame too large",
                ));
                break;
            }
            if len > filled {
                if len > buf.len() {
                    buf.resize(len, 0);
                }
                break;
            }
            let frame = &buf[..len];
            match &shared.turn {
                Some((t, _)) if crate::turn::goes_to_turn_server(frame) => {
                    used_turn = true;
                    awaiting_bind = frame_type(frame) == Some(bind_request);
                    if !t.stream(transport, local, from, frame, &otx).await {
                        broken = Some(io::ErrorKind::BrokenPipe.into());
                        break;
                    }
                }
                _ if p2p_stun::classify(frame) == PacketKind::Stun => {
                    let a = answer(frame, from, local, Transport::Stream, &shared.ctx, &mut out);
                    shard.record(&a);
                    if let Answer::Reply { len, .. } = a {
                        if let Err(e) = s.write_all(&out[..len]).await {
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
            buf.copy_within(len..filled, 0);
            filled -= len;
        }
        if let Some(e) = broken {
            break Err(e);
        }
    };
    if let (Some((t, _)), true) = (&shared.turn, used_turn) {
        t.closed(transport, local, from).await;
    }
    result
}
