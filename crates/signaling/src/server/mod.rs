//! The tokio + WebSocket server around [`Rooms`] (feature `server`).
//!
//! One task owns the [`Rooms`] state (the hub); each WebSocket connection is a
//! task that forwards frames to the hub over a channel and writes what the hub
//! sends back. The hub never awaits a connection: a client that does not read
//! fast enough to drain its queue is dropped.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

use crate::ice_servers::{IceServerProvider, StaticIceServers};
use crate::msg::ServerMsg;
use crate::rooms::{Auth, ConnId, Limits, Rooms};

/// Configuration of [`serve`].
#[derive(Clone)]
pub struct ServerConfig {
    /// Room, rate and size limits (see [`Limits`]).
    pub limits: Limits,
    /// Who may join which room.
    pub auth: Auth,
    /// Where the welcome's `iceServers` come from.
    pub ice_servers: Arc<dyn IceServerProvider>,
    /// How often the server sends a WebSocket ping. Keep it well under
    /// [`Limits::idle_timeout`]: a client's pong counts as activity, so a live
    /// browser tab is never closed as idle. Default 20 s.
    pub heartbeat_interval: Duration,
    /// Hard cap on one WebSocket message and frame, enforced by the WebSocket
    /// layer, which closes the connection (code 1009) above it. `None`: twice
    /// [`Limits::max_message_size`], so that frames between the two limits get
    /// a `message-too-large` error and the connection stays open.
    pub max_frame_size: Option<usize>,
    /// Messages queued for one client before it is considered too slow and
    /// dropped. Default 256.
    pub outbound_queue: usize,
    /// Time allowed for the WebSocket opening handshake. Default 10 s.
    pub handshake_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            limits: Limits::default(),
            auth: Auth::open(),
            ice_servers: Arc::new(StaticIceServers::default()),
            heartbeat_interval: Duration::from_secs(20),
            max_frame_size: None,
            outbound_queue: 256,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("limits", &self.limits)
            .field("auth", &self.auth)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("max_frame_size", &self.max_frame_size)
            .field("outbound_queue", &self.outbound_queue)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// Serves the signaling protocol on `listener` until `shutdown` completes.
///
/// Each accepted TCP connection is upgraded to a WebSocket (any path is
/// accepted). On shutdown the server stops accepting, sends every client a
/// close frame (1001, going away), waits up to two seconds for the connection
/// tasks, and returns. Accept errors (such as running out of file
/// descriptors) are logged and retried, not returned.
///
/// To serve connections accepted elsewhere (behind an HTTP front that also
/// serves pages, say), use [`Server`] instead.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    // Bounds the connection tasks, handshakes included.
    let slots = Arc::new(Semaphore::new(
        config.limits.max_connections.saturating_add(64),
    ));
    let server = Server::start(config);
    let acceptor = server.acceptor();
    let mut tasks = JoinSet::new();

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(%addr, "signaling: connection refused, too many open");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    tasks.spawn(async move {
                        acceptor.serve(stream, addr).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "signaling: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }

    tracing::debug!(open = tasks.len(), "signaling: shutting down");
    server.stop();
    drop(acceptor);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(2), drain)
        .await
        .is_err()
    {
        tasks.shutdown().await;
    }
    server.finish().await;
    Ok(())
}

/// A signaling server without a listener: the rooms and their task, to which
/// connections accepted elsewhere are handed one at a time through an
/// [`Acceptor`].
///
/// This is how a daemon serves the protocol on a port it also uses for other
/// things: its HTTP front reads the request head, answers page requests
/// itself, and passes WebSocket upgrades on with the bytes it already read
/// ([`Acceptor::serve_after`]), with no second socket in between.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use p2p_signaling::{Server, ServerConfig};
/// let server = Server::start(ServerConfig::default());
/// let acceptor = server.acceptor();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let (stream, addr) = listener.accept().await?;
/// tokio::spawn(async move { acceptor.serve(stream, addr).await });
/// // ... later:
/// server.stop();
/// server.finish().await;
/// # Ok(()) }
/// ```
pub struct Server {
    shared: Arc<ConnShared>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    hub_task: JoinHandle<()>,
}

/// Hands connections to a [`Server`]; cheap to clone, one per accept loop or
/// connection task.
#[derive(Clone)]
pub struct Acceptor {
    shared: Arc<ConnShared>,
    stop: watch::Receiver<bool>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("stopped", &*self.stop_rx.borrow())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("stopped", &*self.stop.borrow())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Start the rooms' task. Must be called inside a tokio runtime.
    pub fn start(config: ServerConfig) -> Server {
        let now = Instant::now().into_std();
        let rooms = Rooms::new(config.limits.clone())
            .with_auth(config.auth.clone())
            .with_ice_servers(config.ice_servers.clone(), (now, SystemTime::now()));
        let frame_cap = config
            .max_frame_size
            .unwrap_or_else(|| config.limits.max_message_size.saturating_mul(2));
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(frame_cap))
            .max_frame_size(Some(frame_cap));
        let (events_tx, events_rx) = mpsc::channel::<Event>(1024);
        let hub_task = tokio::spawn(hub(rooms, events_rx));
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(ConnShared {
            events: events_tx,
            ws_config,
            heartbeat: config.heartbeat_interval.max(Duration::from_millis(10)),
            handshake_timeout: config.handshake_timeout,
            queue: config.outbound_queue.max(1),
        });
        Server {
            shared,
            stop_tx,
            stop_rx,
            hub_task,
        }
    }

    /// A handle to pass connections in.
    pub fn acceptor(&self) -> Acceptor {
        Acceptor {
            shared: self.shared.clone(),
            stop: self.stop_rx.clone(),
        }
    }

    /// Tell every open connection to close (1001, going away); connections
    /// handed in from now on are closed at once.
    pub fn stop(&self) {
        let _ = self.stop_tx.send(true);
    }

    /// Stop (if not done yet) and wait for the rooms' task to end, which it
    /// does once every connection has closed and every [`Acceptor`] is gone.
    /// Gives up after five seconds.
    pub async fn finish(self) {
        self.stop();
        let Server {
            shared, hub_task, ..
        } = self;
        drop(shared);
        let mut hub_task = hub_task;
        if tokio::time::timeout(Duration::from_secs(5), &mut hub_task)
            .await
            .is_err()
        {
            tracing::warn!("signaling: connections still open after shutdown; dropping them");
            hub_task.abort();
        }
    }
}

impl Acceptor {
    /// Run the WebSocket handshake on `stream` and serve the protocol on it
    /// until either side closes or the server stops.
    pub async fn serve<S>(&self, stream: S, addr: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        connection(stream, addr, self.shared.clone(), self.stop.clone()).await;
    }

    /// [`Acceptor::serve`] on a stream whose first bytes (`read`, the HTTP
    /// upgrade request head and anything after it) were already read from it.
    pub async fn serve_after<S>(&self, read: Vec<u8>, stream: S, addr: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = Rewind {
            read,
            at: 0,
            inner: stream,
        };
        connection(stream, addr, self.shared.clone(), self.stop.clone()).await;
    }
}

/// A stream that yields `read[at..]` before reading from `inner`.
struct Rewind<S> {
    read: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.read.len() {
            let n = buf.remaining().min(this.read.len() - this.at);
            buf.put_slice(&this.read[this.at..this.at + n]);
            this.at += n;
            if this.at == this.read.len() {
                this.read = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

struct ConnShared {
    events: mpsc::Sender<Event>,
    ws_config: WebSocketConfig,
    heartbeat: Duration,
    handshake_timeout: Duration,
    queue: usize,
}

enum Event {
    Connect {
        tx: mpsc::Sender<Outbound>,
        reply: oneshot::Sender<Option<ConnId>>,
    },
    Text {
        conn: ConnId,
        text: String,
    },
    Binary {
        conn: ConnId,
    },
    Alive {
        conn: ConnId,
    },
    Closed {
        conn: ConnId,
    },
}

enum Outbound {
    Text(String),
    Close(CloseCode, &'static str),
}

/// The task that owns the [`Rooms`].
async fn hub(mut rooms: Rooms, mut events: mpsc::Receiver<Event>) {
    let mut conns: HashMap<ConnId, mpsc::Sender<Outbound>> = HashMap::new();
    loop {
        let deadline = rooms.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        let out = tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                let now = Instant::now().into_std();
                match ev {
                    Event::Connect { tx, reply } => match rooms.connect(now) {
                        Ok((conn, welcome)) => {
                            if reply.send(Some(conn)).is_ok() {
                                conns.insert(conn, tx);
                                vec![(conn, welcome)]
                            } else {
                                rooms.disconnect(conn)
                            }
                        }
                        Err(_) => {
                            let _ = reply.send(None);
                            Vec::new()
                        }
                    },
                    Event::Text { conn, text } => rooms.handle_text(conn, now, &text),
                    Event::Binary { conn } => rooms.handle_binary(conn, now),
                    Event::Alive { conn } => {
                        rooms.touch(conn, now);
                        Vec::new()
                    }
                    Event::Closed { conn } => {
                        conns.remove(&conn);
                        rooms.disconnect(conn)
                    }
                }
            }
            () = sleep => {
                let now = Instant::now().into_std();
                // Check against the clock, not only the timer.
                if deadline.is_some_and(|d| d <= now) {
                    rooms.handle_timeout(now)
                } else {
                    Vec::new()
                }
            }
        };
        deliver(&mut rooms, &mut conns, out);
    }
}

/// Sends the messages, closes what `Rooms` wants closed, and drops clients
/// whose queue is full (which may produce more messages, hence the loop).
fn deliver(
    rooms: &mut Rooms,
    conns: &mut HashMap<ConnId, mpsc::Sender<Outbound>>,
    out: Vec<(ConnId, ServerMsg)>,
) {
    let mut pending: VecDeque<(ConnId, ServerMsg)> = out.into();
    loop {
        while let Some((conn, msg)) = pending.pop_front() {
            let Some(tx) = conns.get(&conn) else { continue };
            if let Err(e) = tx.try_send(Outbound::Text(msg.to_json())) {
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    tracing::debug!(%conn, "signaling: client too slow, dropping it");
                }
                // Dropping the sender makes the connection task close.
                conns.remove(&conn);
                pending.extend(rooms.disconnect(conn));
            }
        }
        let mut closed_any = false;
        while let Some(conn) = rooms.poll_close() {
            closed_any = true;
            if let Some(tx) = conns.remove(&conn) {
                let _ = tx.try_send(Outbound::Close(CloseCode::Policy, "idle timeout"));
            }
        }
        if pending.is_empty() && !closed_any {
            break;
        }
    }
}

async fn connection<S>(
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
    let handshake = tokio_tungstenite::accept_async_with_config(stream, Some(shared.ws_config));
    let ws = match tokio::time::timeout(shared.handshake_timeout, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "signaling: WebSocket handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%addr, "signaling: WebSocket handshake timed out");
            return;
        }
    };
    let (mut sink, mut frames) = ws.split();
    let (tx, mut rx) = mpsc::channel(shared.queue);
    let (reply_tx, reply_rx) = oneshot::channel();
    let connect = Event::Connect {
        tx,
        reply: reply_tx,
    };
    if shared.events.send(connect).await.is_err() {
        return;
    }
    let Ok(Some(conn)) = reply_rx.await else {
        let _ = sink
            .send(close(CloseCode::Again, "too many connections"))
            .await;
        return;
    };
    tracing::debug!(%addr, %conn, "signaling: connected");

    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + shared.heartbeat, shared.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            frame = frames.next() => {
                let event = match frame {
                    Some(Ok(Message::Text(text))) => Event::Text { conn, text: text.as_str().to_owned() },
                    Some(Ok(Message::Binary(_))) => Event::Binary { conn },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Event::Alive { conn },
                    Some(Ok(Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                        tracing::debug!(%conn, size, max_size, "signaling: frame over the hard cap");
                        let _ = sink.send(close(CloseCode::Size, "message too large")).await;
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(%conn, error = %e, "signaling: read failed");
                        break;
                    }
                };
                if shared.events.send(event).await.is_err() {
                    break;
                }
            }
            out = rx.recv() => match out {
                Some(Outbound::Text(text)) => {
                    if sink.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                Some(Outbound::Close(code, reason)) => {
                    let _ = sink.send(close(code, reason)).await;
                    break;
                }
                None => {
                    let _ = sink.send(close(CloseCode::Policy, "too slow")).await;
                    break;
                }
            },
            _ = heartbeat.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
            _ = stop.changed() => {
                let _ = sink.send(close(CloseCode::Away, "server shutting down")).await;
                break;
            }
        }
    }
    let _ = shared.events.send(Event::Closed { conn }).await;
    tracing::debug!(%addr, %conn, "signaling: closed");
}

fn close(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}
