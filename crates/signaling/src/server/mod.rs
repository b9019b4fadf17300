//! The tokio + WebSocket server around [`Rooms`] (feature `server`).
//!
//! One task owns the [`Rooms`] state (the hub); each WebSocket connection is a
//! task whose reader forwards frames to the hub over a channel and whose
//! writer, running beside it, writes what the hub queued, each write within
//! a deadline. The hub never awaits a connection: a client whose queue
//! overflows (in messages or in bytes) is closed at once (1008), its queue
//! thrown away.

mod conn;
mod hub;
mod message_clock;
mod metrics;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::addr::{AddrKey, AddrLimits, AddrTable, Refusal};
use crate::ice_servers::{IceServerProvider, StaticIceServers};
use crate::rooms::{Auth, ClusterEvent, ClusterOp, Limits, ResumeConfig, Rooms};

pub use metrics::{CloseReason, Metrics, MetricsSnapshot};

/// The WebSocket layer's read buffer per connection, in bytes. Small on
/// purpose: an idle connection should cost little, and a signaling message
/// is read in a few chunks at worst.
pub const READ_BUFFER: usize = 4 * 1024;

/// Configuration of [`serve`] and [`Server`].
#[derive(Clone)]
pub struct ServerConfig {
    /// Room, rate and size limits (see [`Limits`]).
    pub limits: Limits,
    /// Who may join which room.
    pub auth: Auth,
    /// Where the welcome's `iceServers` come from.
    pub ice_servers: Arc<dyn IceServerProvider>,
    /// Connections per client address, and in all, with a reserve for light
    /// users (see [`AddrLimits`]). Enforced by [`serve`] on each accepted
    /// TCP connection, and by [`Acceptor::admit`] for callers that accept
    /// connections themselves.
    pub addr_limits: AddrLimits,
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
    /// closed (1008). Default 256.
    pub outbound_queue: usize,
    /// Bytes queued for one client (messages not yet written to its socket)
    /// before it is considered too slow and closed (1008). Default 1 MiB.
    pub max_queued_bytes: usize,
    /// Time one write to a client (a message, a ping) may take; a client
    /// that does not read for this long is closed (1008). Default 10 s.
    pub write_timeout: Duration,
    /// Time allowed for the WebSocket opening handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Time one message from a client may stay unfinished (a frame cut
    /// short, a fragmented message without its last fragment: the server
    /// holds what came, up to the frame cap) before the client is closed
    /// (1008). Default 10 s.
    pub message_timeout: Duration,
    /// Where the server counts what it does; keep a clone to read it.
    pub metrics: Metrics,
    /// Hand out resume tokens signed with this (see `docs/signaling.md`,
    /// `resume`). Default: none.
    pub resume: Option<ResumeConfig>,
    /// Peer ids are this and a number. Default `p`. A server that resumes
    /// sessions across restarts (or nodes) needs one of its own per run.
    pub peer_id_prefix: String,
    /// Makes the server a node of a cluster (see [`ClusterLink`]).
    pub cluster: Option<ClusterAttach>,
}

/// The link between the rooms' task and a cluster's shared store: the
/// node's id, the operations the rooms ask of the store and the events
/// the store sends back (see [`ClusterOp`], [`ClusterEvent`]).
#[derive(Debug)]
pub struct ClusterLink {
    /// This node's id.
    pub node: String,
    /// Operations for the store. The rooms' task never waits on it: when
    /// it is full, the operation is dropped (and counted).
    pub ops: mpsc::Sender<ClusterOp>,
    /// Events from the store.
    pub events: mpsc::Receiver<ClusterEvent>,
}

/// A [`ClusterLink`] waiting for [`Server::start`] to take it (a
/// [`ServerConfig`] is cloned; the link is taken once).
#[derive(Debug, Clone)]
pub struct ClusterAttach(Arc<Mutex<Option<ClusterLink>>>);

impl ClusterAttach {
    /// Wraps `link` for a [`ServerConfig`].
    pub fn new(link: ClusterLink) -> ClusterAttach {
        ClusterAttach(Arc::new(Mutex::new(Some(link))))
    }

    fn take(&self) -> Option<ClusterLink> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            limits: Limits::default(),
            auth: Auth::open(),
            ice_servers: Arc::new(StaticIceServers::default()),
            addr_limits: AddrLimits::default(),
            heartbeat_interval: Duration::from_secs(20),
            max_frame_size: None,
            outbound_queue: 256,
            max_queued_bytes: 1024 * 1024,
            write_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            message_timeout: Duration::from_secs(10),
            metrics: Metrics::new(),
            resume: None,
            peer_id_prefix: "p".to_owned(),
            cluster: None,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("limits", &self.limits)
            .field("auth", &self.auth)
            .field("addr_limits", &self.addr_limits)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("max_frame_size", &self.max_frame_size)
            .field("outbound_queue", &self.outbound_queue)
            .field("max_queued_bytes", &self.max_queued_bytes)
            .field("write_timeout", &self.write_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("message_timeout", &self.message_timeout)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// The hard cap on one frame: [`ServerConfig::max_frame_size`] or twice
    /// the message limit.
    pub fn frame_cap(&self) -> usize {
        self.max_frame_size
            .unwrap_or_else(|| self.limits.max_message_size.saturating_mul(2))
    }

    /// Checks that every setting can take effect; the error says which one
    /// cannot and how to fix it.
    pub fn validate(&self) -> Result<(), &'static str> {
        self.addr_limits.validate()?;
        if self.max_queued_bytes < self.limits.max_message_size.saturating_add(1024) {
            return Err("max_queued_bytes must hold at least one message of max_message_size (plus 1 KiB of JSON around it), or every large offer would close its receiver as too slow");
        }
        if self.outbound_queue == 0
            || self.write_timeout.is_zero()
            || self.message_timeout.is_zero()
        {
            return Err("outbound_queue, write_timeout and message_timeout must be above zero");
        }
        if self.heartbeat_interval >= self.limits.idle_timeout {
            return Err("heartbeat_interval must be below the idle timeout, or live clients would be closed as idle");
        }
        Ok(())
    }
}

/// Serves the signaling protocol on `listener` until `shutdown` completes.
///
/// Each accepted TCP connection is first admitted by address
/// ([`ServerConfig::addr_limits`]; a refused one is closed at once), then
/// upgraded to a WebSocket (any path is accepted). On shutdown the server
/// stops accepting, sends every client a close frame (1001, going away),
/// waits up to two seconds for the connection tasks, and returns. Accept
/// errors (such as running out of file descriptors) are logged and retried,
/// not returned; a configuration that [`ServerConfig::validate`] refuses is
/// returned as an `InvalidInput` error.
///
/// To serve connections accepted elsewhere (behind an HTTP front that also
/// serves pages, say), use [`Server`] instead.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    config
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let server = Server::start(config);
    let acceptor = server.acceptor();
    let mut tasks = JoinSet::new();

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let admitted = match acceptor.admit(addr.ip()) {
                        Ok(a) => a,
                        Err(refusal) => {
                            tracing::debug!(%addr, %refusal, "signaling: connection refused");
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    tasks.spawn(async move {
                        acceptor.serve(stream, addr).await;
                        drop(admitted);
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
/// things: its HTTP front admits each TCP connection by address
/// ([`Acceptor::admit`]), reads the request head, answers page requests
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
/// if let Ok(admitted) = acceptor.admit(addr.ip()) {
///     tokio::spawn(async move {
///         acceptor.serve(stream, addr).await;
///         drop(admitted);
///     });
/// }
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

/// A connection admitted by [`Acceptor::admit`]: it counts against its
/// address's limits until dropped.
pub struct Admitted {
    table: Arc<Mutex<AddrTable>>,
    key: AddrKey,
    metrics: Metrics,
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted").field("key", &self.key).finish()
    }
}

impl Admitted {
    /// The address key the connection counts under.
    pub fn key(&self) -> AddrKey {
        self.key
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.release(self.key);
        self.metrics.store_addrs(&table);
    }
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
    /// Start the rooms' task. Must be called inside a tokio runtime. The
    /// configuration is used as given; check it first with
    /// [`ServerConfig::validate`].
    pub fn start(config: ServerConfig) -> Server {
        let now = Instant::now().into_std();
        let mut rooms = Rooms::new(config.limits.clone())
            .with_auth(config.auth.clone())
            .with_ice_servers(config.ice_servers.clone(), (now, SystemTime::now()))
            .with_peer_id_prefix(config.peer_id_prefix.clone());
        if let Some(r) = &config.resume {
            rooms = rooms.with_resume(r.clone());
        }
        let cluster = config.cluster.as_ref().and_then(ClusterAttach::take);
        if let Some(link) = &cluster {
            rooms = rooms.with_cluster(link.node.clone());
        }
        let frame_cap = config.frame_cap();
        // Frames are written as they come (no write buffering: the writer
        // flushes each message); the write buffer may hold one message and
        // the control frames around it, no more.
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_write_buffer_size(frame_cap.saturating_mul(2).saturating_add(64 * 1024))
            .max_message_size(Some(frame_cap))
            .max_frame_size(Some(frame_cap));
        let (events_tx, events_rx) = mpsc::channel::<hub::Event>(1024);
        let limits = hub::QueueLimits {
            max_bytes: config.max_queued_bytes.max(1),
        };
        let hub_task = tokio::spawn(hub::run(
            rooms,
            events_rx,
            limits,
            config.metrics.clone(),
            cluster,
        ));
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(ConnShared {
            events: events_tx,
            ws_config,
            heartbeat: config.heartbeat_interval.max(Duration::from_millis(10)),
            handshake_timeout: config.handshake_timeout,
            write_timeout: config.write_timeout.max(Duration::from_millis(1)),
            message_timeout: config.message_timeout.max(Duration::from_millis(1)),
            queue: config.outbound_queue.max(1),
            max_message_size: config.limits.max_message_size,
            inbound_budget: frame_cap.clamp(4096, u32::MAX as usize),
            ipv6_prefix: config.addr_limits.ipv6_prefix,
            admission: Arc::new(Mutex::new(AddrTable::new(config.addr_limits.clone()))),
            metrics: config.metrics,
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

    /// The server's metrics (the handle given in [`ServerConfig::metrics`]).
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
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
    /// Admit one more TCP connection from `ip` under
    /// [`ServerConfig::addr_limits`], or say why not. Hold the returned
    /// guard for as long as the connection is open (page requests and
    /// handshakes included); dropping it frees the slot.
    pub fn admit(&self, ip: IpAddr) -> Result<Admitted, Refusal> {
        let table = &self.shared.admission;
        let mut t = table.lock().unwrap_or_else(PoisonError::into_inner);
        let result = t.admit(ip);
        self.shared.metrics.store_addrs(&t);
        drop(t);
        result.map(|key| Admitted {
            table: table.clone(),
            key,
            metrics: self.shared.metrics.clone(),
        })
    }

    /// Run the WebSocket handshake on `stream` and serve the protocol on it
    /// until either side closes or the server stops.
    pub async fn serve<S>(&self, stream: S, addr: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        conn::connection(stream, addr, self.shared.clone(), self.stop.clone()).await;
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
        conn::connection(stream, addr, self.shared.clone(), self.stop.clone()).await;
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
    events: mpsc::Sender<hub::Event>,
    ws_config: WebSocketConfig,
    heartbeat: Duration,
    handshake_timeout: Duration,
    write_timeout: Duration,
    message_timeout: Duration,
    queue: usize,
    max_message_size: usize,
    /// Bytes of text one connection may have waiting in the hub's queue.
    inbound_budget: usize,
    ipv6_prefix: u8,
    admission: Arc<Mutex<AddrTable>>,
    metrics: Metrics,
}
