//! webrtc-rs 0.21 (the async `webrtc` crate over its sans-IO `rtc` core,
//! with quinn-udp's GSO/GRO sockets): two `PeerConnection`s in one tokio
//! runtime (two worker threads), each bound to 127.0.0.1 only, full
//! gathering before the offer and the answer are swapped in memory. The
//! sender keeps at most `BUFFERED` bytes buffered (its
//! `on_buffered_amount_high` / `_low` events, at `BUFFERED` and half of it,
//! as webrtc-rs's own flow-control example does); the receiver counts the
//! `OnMessage` events of its channel's `poll`.
//!
//! Three settings: [`run_big_buffer`] gives each peer's UDP socket a 4 MiB
//! receive and send buffer (a runtime wrapper sets them on the socket
//! webrtc-rs binds, before it wraps it), [`run_big_buffer_reactor`] also
//! pins each connection's driver to a dedicated reactor thread (its
//! `with_dedicated_reactor_pool_size`, which its docs name the dominant
//! cost of in-process data channel throughput), [`run_default`] leaves
//! the OS default buffers and the shared runtime (as a user gets it).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::{oneshot, Notify};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState,
};
use webrtc::runtime::{
    default_runtime, AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle,
    Runtime,
};

use crate::{message, Counter, Job, Outcome, BUFFERED, SOCKET_BUFFER};

pub(crate) fn run_big_buffer(job: Job) -> Result<Outcome, String> {
    run(job, true, false)
}

pub(crate) fn run_big_buffer_reactor(job: Job) -> Result<Outcome, String> {
    run(job, true, true)
}

pub(crate) fn run_default(job: Job) -> Result<Outcome, String> {
    run(job, false, false)
}

fn run(job: Job, big: bool, reactor: bool) -> Result<Outcome, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let out = rt.block_on(async move {
        match tokio::time::timeout(
            job.limit + Duration::from_secs(20),
            transfer(job, big, reactor),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err("no result in time".into()),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    out
}

/// The built-in tokio runtime, with bigger socket buffers on the UDP
/// sockets webrtc-rs binds (it offers no setting for them).
struct BigBuffers(Arc<dyn Runtime>);

impl fmt::Debug for BigBuffers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BigBuffers")
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Runtime for BigBuffers {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.0.spawn(future)
    }

    fn spawn_reactor(
        &self,
        size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.0.spawn_reactor(size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let s = socket2::SockRef::from(&socket);
        s.set_recv_buffer_size(SOCKET_BUFFER)?;
        s.set_send_buffer_size(SOCKET_BUFFER)?;
        self.0.wrap_udp_socket(socket)
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.0.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote: SocketAddr,
    ) -> BoxFuture<'a, io::Result<Arc<dyn AsyncTcpStream>>> {
        self.0.connect_tcp(remote)
    }

    fn resolve_host<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        self.0.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.0.now()
    }

    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.0.sleep(d)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.0.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.0.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.0.yield_now()
    }

    fn name(&self) -> &'static str {
        "tokio-big-buffers"
    }
}

/// Gathering complete, and (on the answerer) the channel the peer opened.
struct Handler {
    gathered: Arc<Notify>,
    channel: Mutex<Option<oneshot::Sender<Arc<dyn DataChannel>>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        if let Some(tx) = self.channel.lock().ok().and_then(|mut c| c.take()) {
            let _ = tx.send(dc);
        }
    }
}

struct Side {
    pc: Box<dyn PeerConnection>,
    gathered: Arc<Notify>,
    channel: oneshot::Receiver<Arc<dyn DataChannel>>,
}

async fn peer(big: bool, reactor: bool) -> Result<Side, String> {
    let builtin = default_runtime().ok_or("webrtc-rs has no runtime")?;
    let runtime: Arc<dyn Runtime> = if big {
        Arc::new(BigBuffers(builtin))
    } else {
        builtin
    };
    let gathered = Arc::new(Notify::new());
    let (tx, rx) = oneshot::channel();
    let handler = Arc::new(Handler {
        gathered: gathered.clone(),
        channel: Mutex::new(Some(tx)),
    });
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_handler(handler)
        .with_runtime(runtime)
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .with_dedicated_reactor_pool_size(if reactor { 2 } else { 0 })
        .build()
        .await
        .map_err(|e| e.to_string())?;
    Ok(Side {
        pc: Box::new(pc),
        gathered,
        channel: rx,
    })
}

/// The description, once gathering is complete.
async fn describe(side: &Side, offer: bool) -> Result<(), String> {
    let sdp = if offer {
        side.pc.create_offer(None).await
    } else {
        side.pc.create_answer(None).await
    }
    .map_err(|e| e.to_string())?;
    side.pc
        .set_local_description(sdp)
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(10), side.gathered.notified())
        .await
        .map_err(|_| "gathering did not complete")?;
    Ok(())
}

/// One offer/answer between `a` (offerer) and `b`, each description
/// complete (every candidate gathered) before it is handed over.
async fn offer_answer(a: &Side, b: &Side) -> Result<(), String> {
    describe(a, true).await?;
    let offer = a.pc.local_description().await.ok_or("no offer")?;
    b.pc.set_remote_description(offer)
        .await
        .map_err(|e| e.to_string())?;
    describe(b, false).await?;
    let answer = b.pc.local_description().await.ok_or("no answer")?;
    a.pc.set_remote_description(answer)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

async fn transfer(job: Job, big: bool, reactor: bool) -> Result<Outcome, String> {
    let (a, b) = (peer(big, reactor).await?, peer(big, reactor).await?);
    let n = job.messages();
    let dc =
        a.pc.create_data_channel("bench", None)
            .await
            .map_err(|e| e.to_string())?;
    dc.set_buffered_amount_low_threshold((BUFFERED / 2) as u32)
        .await
        .map_err(|e| e.to_string())?;
    dc.set_buffered_amount_high_threshold(BUFFERED as u32)
        .await
        .map_err(|e| e.to_string())?;

    offer_answer(&a, &b).await?;

    // The receiver: every message of the peer's channel, counted.
    let rx = tokio::time::timeout(Duration::from_secs(20), b.channel)
        .await
        .map_err(|_| "no channel from the peer within 20 s")?
        .map_err(|_| "no channel from the peer")?;
    let received = Arc::new(Mutex::new((Counter::default(), None::<Instant>)));
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let receiver = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut done = Some(done_tx);
            while let Some(e) = rx.poll().await {
                if let DataChannelEvent::OnMessage(m) = e {
                    let Ok(mut r) = received.lock() else { break };
                    r.0.take(&m.data);
                    if r.0.next == n || r.0.bad > 0 {
                        r.1 = Some(Instant::now());
                        if let Some(d) = done.take() {
                            let _ = d.send(());
                        }
                    }
                }
            }
        })
    };

    // The sender's events (open, high and low water) in one task, its
    // sends in another: a send is never cancelled half-way.
    let (open_tx, open_rx) = oneshot::channel::<()>();
    let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let low = Arc::new(Notify::new());
    let events = {
        let (dc, paused, low) = (dc.clone(), paused.clone(), low.clone());
        tokio::spawn(async move {
            let mut open_tx = Some(open_tx);
            while let Some(e) = dc.poll().await {
                match e {
                    DataChannelEvent::OnOpen => {
                        if let Some(t) = open_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    DataChannelEvent::OnBufferedAmountHigh => {
                        paused.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    DataChannelEvent::OnBufferedAmountLow => {
                        paused.store(false, std::sync::atomic::Ordering::SeqCst);
                        low.notify_one();
                    }
                    DataChannelEvent::OnClose => break,
                    _ => {}
                }
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(20), open_rx)
        .await
        .map_err(|_| "the channel did not open within 20 s")?
        .map_err(|_| "the channel did not open")?;
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        let mut template = message(0);
        for i in 0..n {
            while paused.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = tokio::time::timeout(Duration::from_millis(50), low.notified()).await;
            }
            template[..8].copy_from_slice(&i.to_be_bytes());
            if dc.send(BytesMut::from(&template[..])).await.is_err() {
                break;
            }
        }
    });
    let _ = tokio::time::timeout(job.limit, done_rx).await;
    sender.abort();
    events.abort();
    receiver.abort();
    let (delivered, bad, end) = {
        let r = received.lock().map_err(|e| e.to_string())?;
        (r.0.next, r.0.bad, r.1)
    };
    let elapsed = end.unwrap_or_else(Instant::now) - start;
    let _ = a.pc.close().await;
    let _ = b.pc.close().await;
    if bad > 0 {
        return Err(format!("{bad} messages out of order or damaged"));
    }
    Ok(Outcome {
        bytes: delivered * crate::MESSAGE as u64,
        elapsed,
        complete: delivered == n,
    })
}

/// One connected pair, its channel open at both ends, kept alive.
type Kept = (
    Box<dyn PeerConnection>,
    Box<dyn PeerConnection>,
    Arc<dyn DataChannel>,
    Arc<dyn DataChannel>,
);

async fn connected() -> Result<Kept, String> {
    let (a, b) = (peer(true, false).await?, peer(true, false).await?);
    let dc =
        a.pc.create_data_channel("idle", None)
            .await
            .map_err(|e| e.to_string())?;
    offer_answer(&a, &b).await?;
    let rx = tokio::time::timeout(Duration::from_secs(20), b.channel)
        .await
        .map_err(|_| "no channel from the peer within 20 s")?
        .map_err(|_| "no channel from the peer")?;
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = dc.poll().await {
            if matches!(e, DataChannelEvent::OnOpen) {
                return Ok(());
            }
        }
        Err("the channel closed before it opened".to_string())
    })
    .await
    .map_err(|_| "the channel did not open within 20 s")??;
    Ok((a.pc, b.pc, dc, rx))
}

/// Heap and RSS per idle connection end: `pairs` pairs on loopback (4 MiB
/// socket buffers, the shared runtime), each with its channel open.
pub(crate) fn memory(pairs: usize) -> Result<(f64, f64), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let settle = || tokio::time::sleep(Duration::from_millis(300));
    let out = rt.block_on(async {
        let warm = connected().await?;
        settle().await;
        let (h0, r0) = (crate::live(), crate::rss());
        let mut held = Vec::new();
        for _ in 0..pairs {
            held.push(connected().await?);
        }
        settle().await;
        let (h1, r1) = (crate::live(), crate::rss());
        for (a, b, _, _) in held.iter().chain(std::iter::once(&warm)) {
            let _ = a.close().await;
            let _ = b.close().await;
        }
        let ends = (2 * pairs) as f64;
        Ok::<_, String>(((h1 - h0) as f64 / ends, (r1 - r0) as f64 / ends))
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    out
}
