//! One WebSocket connection: a reader and a writer that run side by side,
//! so that a client that stops reading blocks neither its heartbeat nor the
//! server's shutdown, and every write has a deadline.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::hub::{Event, Outbound, Queue};
use super::message_clock::{MessageClock, Watched};
use super::metrics::CloseReason;
use super::ConnShared;
use crate::addr::AddrKey;
use crate::rooms::{ConnId, ParsedText};

/// How long the server tries to send its close frame. The close is a
/// courtesy: a client whose socket is backed up cannot read it anyway, and
/// the connection is dropped after this.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(1);

type Sink<S> = SplitSink<WebSocketStream<Watched<S>>, Message>;
type Frames<S> = SplitStream<WebSocketStream<Watched<S>>>;

pub(super) async fn connection<S>(
    stream: S,
    addr: SocketAddr,
    shared: Arc<ConnShared>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if *stop.borrow_and_update() {
        return;
    }
    let clock = MessageClock::new();
    let stream = Watched::new(stream, clock.clone());
    let handshake = tokio_tungstenite::accept_async_with_config(stream, Some(shared.ws_config));
    let ws = match timeout(shared.handshake_timeout, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "signaling: WebSocket handshake failed");
            shared.metrics.handshake_failed(false);
            return;
        }
        Err(_) => {
            tracing::debug!(%addr, "signaling: WebSocket handshake timed out");
            shared.metrics.handshake_failed(true);
            return;
        }
    };
    let (mut sink, mut frames) = ws.split();
    let (tx, mut rx) = mpsc::channel(shared.queue);
    let queued = Arc::new(AtomicUsize::new(0));
    let (kick, kicked) = oneshot::channel();
    let (reply_tx, reply_rx) = oneshot::channel();
    let connect = Event::Connect {
        addr: Some(AddrKey::new(addr.ip(), shared.ipv6_prefix)),
        queue: Queue {
            tx,
            queued: queued.clone(),
            kick,
        },
        reply: reply_tx,
    };
    if shared.events.send(connect).await.is_err() {
        return;
    }
    let Ok(Some(conn)) = reply_rx.await else {
        send_close(&mut sink, CloseReason::Full).await;
        shared.metrics.closed(CloseReason::Full);
        return;
    };
    tracing::debug!(%addr, %conn, "signaling: connected");

    let mut kicked = kicked;
    let end = {
        let writer = write_loop(&mut sink, &mut rx, &queued, &shared);
        let reader = read_loop(&mut frames, conn, &shared);
        // The hub kicks a connection it drops; a hub that just forgets it
        // (the connection is closing anyway) leaves this pending.
        let kick = async {
            match (&mut kicked).await {
                Ok(reason) => reason,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            end = kick => Some(end),
            _ = stop.changed() => Some(CloseReason::Shutdown),
            end = writer => end,
            end = reader => Some(end),
            () = clock.overdue(shared.message_timeout) => Some(CloseReason::SlowMessage),
        }
    };
    // The writer found its queue closed: the hub dropped this connection,
    // with a kick (sent just before the queue closed, possibly while this
    // task was being polled) or because it is going away.
    let end = end.unwrap_or_else(|| kicked.try_recv().unwrap_or(CloseReason::Shutdown));
    shared.metrics.closed(end);
    // What was queued for this client goes now, not when the socket drains.
    drop(rx);
    send_close(&mut sink, end).await;
    let _ = shared.events.send(Event::Closed { conn }).await;
    tracing::debug!(%addr, %conn, reason = %end, "signaling: closed");
}

/// Writes the hub's messages and the heartbeat pings, each within the
/// write timeout. Returns why it stopped: `None` when the hub closed the
/// queue.
async fn write_loop<S>(
    sink: &mut Sink<S>,
    rx: &mut mpsc::Receiver<Outbound>,
    queued: &AtomicUsize,
    shared: &ConnShared,
) -> Option<CloseReason>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + shared.heartbeat, shared.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (msg, len) = tokio::select! {
            out = rx.recv() => match out {
                Some(Outbound::Text(text)) => {
                    let len = text.len();
                    tracing::trace!(target: "p2p_hop", hop = "write", msg = text.as_str());
                    (Message::text(text), len)
                }
                Some(Outbound::Relay(msg, len)) => {
                    let text = msg.to_json();
                    tracing::trace!(target: "p2p_hop", hop = "write", msg = text.as_str());
                    (Message::text(text), len)
                }
                Some(Outbound::Close(reason)) => return Some(reason),
                None => return None,
            },
            _ = heartbeat.tick() => (Message::Ping(Default::default()), 0),
        };
        match timeout(shared.write_timeout, sink.send(msg)).await {
            Ok(Ok(())) => {
                queued.fetch_sub(len, Relaxed);
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "signaling: write failed");
                return Some(CloseReason::Error);
            }
            Err(_) => return Some(CloseReason::WriteTimeout),
        }
    }
}

/// Hands the client's frames to the hub. Returns why it stopped.
///
/// A connection may have at most [`ConnShared::inbound_budget`] bytes of
/// text waiting in the hub's queue: past that, its reader waits (and the
/// client's writes with it), so that a flooding client delays itself, not
/// everyone behind it in the queue.
async fn read_loop<S>(frames: &mut Frames<S>, conn: ConnId, shared: &ConnShared) -> CloseReason
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let budget = Arc::new(Semaphore::new(shared.inbound_budget));
    loop {
        let event = match frames.next().await {
            // Parsed here, on this connection's task, not by the hub.
            Some(Ok(Message::Text(text))) => {
                tracing::trace!(target: "p2p_hop", hop = "read", msg = text.as_str());
                let cost = text.len().clamp(1, shared.inbound_budget);
                let cost = u32::try_from(cost).unwrap_or(u32::MAX);
                let Ok(permit) = budget.clone().acquire_many_owned(cost).await else {
                    return CloseReason::Error;
                };
                Event::Text {
                    conn,
                    frame: ParsedText::parse(text.as_str(), shared.max_message_size),
                    _budget: permit,
                }
            }
            Some(Ok(Message::Binary(_))) => Event::Binary { conn },
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Event::Alive { conn },
            Some(Ok(Message::Frame(_))) => continue,
            Some(Ok(Message::Close(_))) | None => return CloseReason::Client,
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                tracing::debug!(%conn, size, max_size, "signaling: frame over the hard cap");
                return CloseReason::TooLarge;
            }
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                return CloseReason::Client
            }
            Some(Err(e)) => {
                tracing::debug!(%conn, error = %e, "signaling: read failed");
                return CloseReason::Error;
            }
        };
        if shared.events.send(event).await.is_err() {
            return CloseReason::Shutdown;
        }
    }
}

/// Sends the close frame of `reason`, if it has one, for at most
/// [`CLOSE_GRACE`].
pub(super) async fn send_close<S>(sink: &mut Sink<S>, reason: CloseReason)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some((code, text)) = reason.close_frame() else {
        return;
    };
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: text.into(),
    }));
    let _ = timeout(CLOSE_GRACE, sink.send(frame)).await;
}
