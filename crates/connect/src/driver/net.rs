//! Sockets: which local addresses, UDP readers, TCP/TLS connections to TURN
//! servers.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::Transport;

/// Largest datagram read.
pub(super) const MAX_DATAGRAM: usize = 65536;
/// Time allowed to open a TCP/TLS connection to a TURN server.
const STREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Something that arrived on a socket: one datagram or frame, or (a GRO
/// read) several datagrams of one flow back to back.
#[derive(Debug)]
pub(super) struct Inbound {
    pub(super) transport: Transport,
    /// The UDP socket's address, or for a TURN stream the host address the
    /// session uses for that server.
    pub(super) local: SocketAddr,
    pub(super) remote: SocketAddr,
    pub(super) bytes: Vec<u8>,
    /// The length of each datagram in `bytes` (the last may be shorter);
    /// `usize::MAX`: `bytes` is one datagram.
    pub(super) stride: usize,
}

impl Inbound {
    /// One datagram or frame.
    pub(super) fn one(
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: Vec<u8>,
    ) -> Self {
        Inbound {
            transport,
            local,
            remote,
            bytes,
            stride: usize::MAX,
        }
    }

    /// Its datagrams, as the machines take them.
    pub(super) fn datagrams(&self) -> impl Iterator<Item = p2p_proto::Datagram<'_>> {
        self.bytes
            .chunks(self.stride.max(1))
            .map(|c| p2p_proto::Datagram::new(self.transport, self.remote, self.local, c))
    }
}

/// A host socket's batched I/O (quinn-udp): one `sendmsg` carries many
/// datagrams of one size to one peer (UDP GSO), one `recvmmsg` brings
/// several reads, each of which may hold many datagrams of one flow (GRO).
pub(super) type Batched = Arc<quinn_udp::UdpSocketState>;

/// Batched I/O for `sock`, where the OS has it (`None`: plain calls).
pub(super) fn batched(sock: &UdpSocket) -> Option<Batched> {
    match quinn_udp::UdpSocketState::new(quinn_udp::UdpSockRef::from(sock)) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            tracing::debug!("UDP batching unavailable: {e}");
            None
        }
    }
}

/// The local IPs to bind: the configured ones, or every interface address
/// that is up, without link-local ones, and without loopback unless asked
/// or nothing else exists.
pub(super) fn local_ips(configured: &[IpAddr], include_loopback: bool) -> io::Result<Vec<IpAddr>> {
    if !configured.is_empty() {
        return Ok(configured.to_vec());
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut loopback: Vec<IpAddr> = Vec::new();
    for i in if_addrs::get_if_addrs()? {
        let ip = i.ip();
        if ip.is_unspecified() || ip.is_multicast() || is_link_local(ip) || ips.contains(&ip) {
            continue;
        }
        if i.is_loopback() {
            if !loopback.contains(&ip) {
                loopback.push(ip);
            }
        } else {
            ips.push(ip);
        }
    }
    if include_loopback || ips.is_empty() {
        ips.extend(loopback);
    }
    Ok(ips)
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The socket buffer sizes the driver asks for (each way). The OS
/// defaults (about 208 KiB on Linux) hold under 200 datagrams: a sender
/// faster than the reader for a few milliseconds overflows them, and every
/// drop costs SCTP a retransmission. Linux caps the request at
/// `net.core.rmem_max` / `wmem_max` (and doubles it for bookkeeping).
pub(super) const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// A UDP socket bound on `addr`, non-blocking, with [`SOCKET_BUFFER`] of
/// receive and send buffer where the OS grants it: a refusal, or less than
/// asked, leaves what the OS gives (logged at debug), never an error.
fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    for (what, set, get) in [
        (
            "SO_RCVBUF",
            Socket::set_recv_buffer_size as fn(&Socket, usize) -> io::Result<()>,
            Socket::recv_buffer_size as fn(&Socket) -> io::Result<usize>,
        ),
        (
            "SO_SNDBUF",
            Socket::set_send_buffer_size,
            Socket::send_buffer_size,
        ),
    ] {
        match set(&s, SOCKET_BUFFER).and_then(|()| get(&s)) {
            Ok(n) if n < SOCKET_BUFFER => {
                tracing::debug!(
                    "UDP {addr}: {what} {n} bytes (asked {SOCKET_BUFFER}; capped by the OS)"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("UDP {addr}: {what} not set: {e}; the OS default stays"),
        }
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Binds one UDP socket per IP (an ephemeral port); IPs that fail to bind
/// are skipped (an IPv6 address still in DAD, say).
pub(super) async fn bind_udp(ips: &[IpAddr]) -> Vec<(SocketAddr, Arc<UdpSocket>)> {
    let mut out = Vec::new();
    for ip in ips {
        match udp_socket(SocketAddr::new(*ip, 0)) {
            Ok(s) => match s.local_addr() {
                Ok(a) => out.push((a, Arc::new(s))),
                Err(e) => tracing::debug!("local_addr of {ip}: {e}"),
            },
            Err(e) => tracing::debug!("cannot bind UDP on {ip}: {e}"),
        }
    }
    out
}

/// Reads datagrams from `sock` into `tx` until the driver goes away.
pub(super) fn spawn_udp_reader(
    tasks: &mut JoinSet<()>,
    local: SocketAddr,
    sock: Arc<UdpSocket>,
    tx: mpsc::Sender<Inbound>,
) -> tokio::task::AbortHandle {
    tasks.spawn(async move {
        let mut held = Held::new();
        loop {
            let r = match held.readable(&sock, || vec![0u8; MAX_DATAGRAM]).await {
                Ok(buf) => sock.try_recv_from(buf).map(|(n, remote)| {
                    let bytes = buf.get(..n).unwrap_or_default().to_vec();
                    Inbound::one(Transport::Udp, local, remote, bytes)
                }),
                Err(e) => Err(e),
            };
            match r {
                Ok(msg) => {
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                // Readiness that was not (another read took it): wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // ICMP port unreachable and friends surface as errors on
                // some systems: keep reading.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
                Err(e) => {
                    tracing::debug!("UDP {local}: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
}

/// How long a socket reader (and the driver's own reads of the host
/// sockets, `run/host.rs`) keeps its receive buffers after its last read.
/// An idle connection (a consent check every few seconds) then holds none
/// most of the time: the batched reads of the host sockets need up to
/// 4 × 96 KB, which was more than half of an idle connection's memory.
/// A flow that pauses longer pays one allocation when it resumes.
pub(super) const IDLE_BUFFERS: Duration = Duration::from_millis(200);

/// A socket reader's receive buffers, held only while datagrams flow:
/// made when the socket becomes readable, dropped once [`IDLE_BUFFERS`]
/// (to twice that) has passed without the socket being readable. One timer
/// wakeup per period while traffic flows; none per read.
struct Held<T> {
    bufs: Option<T>,
    /// The socket was readable since the timer was last set.
    used: bool,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<T> Held<T> {
    fn new() -> Self {
        Held {
            bufs: None,
            used: false,
            timer: Box::pin(tokio::time::sleep(IDLE_BUFFERS)),
        }
    }

    /// Waits until `sock` is readable, then lends the buffers (made by
    /// `make` if none are held).
    async fn readable(&mut self, sock: &UdpSocket, make: impl FnOnce() -> T) -> io::Result<&mut T> {
        loop {
            if self.bufs.is_none() {
                sock.readable().await?;
                let at = tokio::time::Instant::now() + IDLE_BUFFERS;
                self.timer.as_mut().reset(at);
                break;
            }
            let ready = tokio::select! {
                biased;
                r = sock.readable() => Some(r),
                () = &mut self.timer => None,
            };
            match ready {
                Some(r) => {
                    r?;
                    break;
                }
                None if self.used => {
                    self.used = false;
                    let at = tokio::time::Instant::now() + IDLE_BUFFERS;
                    self.timer.as_mut().reset(at);
                }
                None => self.bufs = None,
            }
        }
        self.used = true;
        Ok(self.bufs.get_or_insert_with(make))
    }
}

/// A TCP or TLS connection to a TURN server, as the driver keeps it: the
/// writer's queue, and what a redirect to another server needs to connect
/// there the same way.
#[derive(Debug, Clone)]
pub(super) struct TurnStream {
    pub(super) writer: mpsc::Sender<Vec<u8>>,
    /// The host address the session uses for the server.
    pub(super) local: SocketAddr,
    /// The name the server's TLS certificate is checked against.
    pub(super) host: String,
}

/// Opens a TCP (or TLS) connection to a TURN server and spawns its reader
/// (framing with `p2p_stun::next_frame_len`) and writer. Returns the
/// writer's queue. A connection whose reader ends while the driver runs
/// (the server closed it) is said on `failed`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn connect_stream(
    tasks: &mut JoinSet<()>,
    server: SocketAddr,
    host: &str,
    transport: Transport,
    local: SocketAddr,
    tls_roots: &[Vec<u8>],
    tx: mpsc::Sender<Inbound>,
    failed: mpsc::UnboundedSender<StreamFailed>,
) -> io::Result<TurnStream> {
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(1024);
    let ended = StreamFailed {
        server,
        transport,
        reason: String::new(),
        writer: out_tx.clone(),
    };
    match dial(server, host, transport, tls_roots).await? {
        Dialed::Tcp(tcp) => {
            let (r, w) = tcp.into_split();
            tasks.spawn(read_until_end(r, local, tx, ended, failed));
            tasks.spawn(write_frames(w, out_rx));
        }
        Dialed::Tls(tls) => {
            let (r, w) = tokio::io::split(*tls);
            tasks.spawn(read_until_end(r, local, tx, ended, failed));
            tasks.spawn(write_frames(w, out_rx));
        }
    }
    Ok(TurnStream {
        writer: out_tx,
        local,
        host: host.to_owned(),
    })
}

/// A connection to a TURN server that [`spawn_stream`] could not open, or
/// one whose reader ended (the server closed it, or it broke) while the
/// driver still runs.
#[derive(Debug)]
pub(super) struct StreamFailed {
    pub(super) server: SocketAddr,
    pub(super) transport: Transport,
    pub(super) reason: String,
    /// The connection's writer queue: the driver acts only if it still
    /// keeps this very connection (not a later one to the same server).
    pub(super) writer: mpsc::Sender<Vec<u8>>,
}

/// [`read_frames`], then says on `failed` that the connection ended,
/// unless the driver is gone (its inbound queue closed: our own shutdown
/// dropped everything, nothing to report).
async fn read_until_end(
    r: impl AsyncRead + Unpin,
    local: SocketAddr,
    tx: mpsc::Sender<Inbound>,
    mut ended: StreamFailed,
    failed: mpsc::UnboundedSender<StreamFailed>,
) {
    let alive = tx.clone();
    read_frames(r, ended.transport, local, ended.server, tx).await;
    if alive.is_closed() {
        return;
    }
    tracing::info!(
        "TURN {:?} connection to {} ended",
        ended.transport,
        ended.server
    );
    ended.reason = format!("the server closed our {:?} connection", ended.transport);
    let _ = failed.send(ended);
}

/// [`connect_stream`] without waiting for the connection: the writer's
/// queue is returned at once and holds what is sent until the connection
/// is up (a TURN client redirected by a 300 sends its Allocate to the new
/// server right away). A connection that cannot be opened is said on
/// `failed` (the driver fails the TURN client's requests at once) and its
/// queue dropped.
#[allow(clippy::too_many_arguments)]
pub(super) fn spawn_stream(
    tasks: &mut JoinSet<()>,
    server: SocketAddr,
    host: String,
    transport: Transport,
    local: SocketAddr,
    tls_roots: Vec<Vec<u8>>,
    tx: mpsc::Sender<Inbound>,
    failed: mpsc::UnboundedSender<StreamFailed>,
) -> TurnStream {
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(1024);
    let name = host.clone();
    let mut ended = StreamFailed {
        server,
        transport,
        reason: String::new(),
        writer: out_tx.clone(),
    };
    tasks.spawn(async move {
        match dial(server, &name, transport, &tls_roots).await {
            Ok(Dialed::Tcp(tcp)) => {
                let (r, w) = tcp.into_split();
                tokio::join!(
                    read_until_end(r, local, tx, ended, failed),
                    write_frames(w, out_rx)
                );
            }
            Ok(Dialed::Tls(tls)) => {
                let (r, w) = tokio::io::split(*tls);
                tokio::join!(
                    read_until_end(r, local, tx, ended, failed),
                    write_frames(w, out_rx)
                );
            }
            Err(e) => {
                tracing::warn!("TURN {transport:?} connection to {server}: {e}");
                ended.reason = format!("cannot connect over {transport:?}: {e}");
                let _ = failed.send(ended);
            }
        }
    });
    TurnStream {
        writer: out_tx,
        local,
        host,
    }
}

/// A TCP connection to `server`, in TLS when `transport` says so (the
/// certificate checked against `host`).
async fn dial(
    server: SocketAddr,
    host: &str,
    transport: Transport,
    tls_roots: &[Vec<u8>],
) -> io::Result<Dialed> {
    let tcp = tokio::time::timeout(STREAM_CONNECT_TIMEOUT, TcpStream::connect(server))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    if transport == Transport::Tls {
        Ok(Dialed::Tls(Box::new(
            tls_connect(tcp, host, tls_roots).await?,
        )))
    } else {
        Ok(Dialed::Tcp(tcp))
    }
}

/// A connection to a TURN server, plain or in TLS.
enum Dialed {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn tls_connect(
    tcp: TcpStream,
    host: &str,
    roots: &[Vec<u8>],
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls::pki_types::{CertificateDer, ServerName};
    let other = |e: String| io::Error::other(e);
    if roots.is_empty() {
        return Err(other(
            "no TLS trust roots configured for turns: (PeerConfig::tls_roots)".into(),
        ));
    }
    let roots = roots.iter().map(|der| CertificateDer::from(der.clone()));
    let config = tls_client_config(roots).map_err(|e| other(e.to_string()))?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| other(format!("bad TLS server name {host:?}: {e}")))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// The one TLS client setup of the stack (`turns:` servers here, STUN over
/// TLS in `p2p stun`): rustls with the ring provider, its safe default
/// protocol versions, and only the given trust roots (no system store).
pub fn tls_client_config(
    roots: impl IntoIterator<Item = rustls::pki_types::CertificateDer<'static>>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut store = rustls::RootCertStore::empty();
    for der in roots {
        store.add(der)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn read_frames(
    mut r: impl AsyncRead + Unpin,
    transport: Transport,
    local: SocketAddr,
    server: SocketAddr,
    tx: mpsc::Sender<Inbound>,
) {
    let mut framer = p2p_stun::StreamFramer::new(p2p_stun::MAX_FRAME);
    loop {
        // Hand over every whole frame in the buffer.
        loop {
            let bytes = match framer.next_frame() {
                Ok(Some(frame)) => frame.to_vec(),
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("TURN stream {server}: {e}");
                    return;
                }
            };
            let msg = Inbound::one(transport, local, server, bytes);
            if tx.send(msg).await.is_err() {
                return;
            }
        }
        match r.read(framer.read_buf()).await {
            Ok(0) | Err(_) => return,
            Ok(n) => framer.filled(n),
        }
    }
}

async fn write_frames(mut w: impl AsyncWrite + Unpin, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = rx.recv().await {
        if w.write_all(&frame).await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind a");
        let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind b");
        (a, b)
    }

    #[tokio::test]
    async fn a_reader_holds_buffers_while_datagrams_flow_and_none_once_idle() {
        let (a, b) = pair().await;
        let to = b.local_addr().expect("addr");
        let mut held = Held::new();
        let mut made = 0;
        for round in 0..2 {
            a.send_to(b"ping", to).await.expect("send");
            let buf = held
                .readable(&b, || {
                    made += 1;
                    vec![0u8; 64]
                })
                .await
                .expect("readable");
            let (n, _) = b.try_recv_from(buf).expect("a datagram is waiting");
            assert_eq!(&buf[..n], b"ping");
            assert!(held.bufs.is_some(), "round {round}: held while reading");
            // Nothing more arrives: the wait ends by the timeout, and by
            // then (idle 10 times longer than the hold) the buffers are gone.
            // (The first wait sees the readiness of the read above, whose
            // next read would block, as the reader's next pass does.)
            let idle = tokio::time::timeout(IDLE_BUFFERS * 10, async {
                loop {
                    let buf = held.readable(&b, || vec![0u8; 64]).await?;
                    match b.try_recv_from(buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        r => return r,
                    }
                }
            })
            .await;
            assert!(idle.is_err(), "round {round}: nothing was readable");
            assert!(held.bufs.is_none(), "round {round}: released when idle");
        }
        // Made again for the second burst, not kept between them.
        assert_eq!(made, 2);
    }

    #[tokio::test]
    async fn a_reader_keeps_its_buffers_between_reads_closer_than_the_idle_time() {
        let (a, b) = pair().await;
        let to = b.local_addr().expect("addr");
        // A datagram every half idle time, for four idle times.
        let sender = tokio::spawn(async move {
            for _ in 0..8 {
                tokio::time::sleep(IDLE_BUFFERS / 2).await;
                a.send_to(b"ping", to).await.expect("send");
            }
        });
        let mut held = Held::new();
        let mut made = 0;
        let mut got = 0;
        let reads = tokio::time::timeout(Duration::from_secs(20), async {
            while got < 8 {
                let buf = held
                    .readable(&b, || {
                        made += 1;
                        vec![0u8; 64]
                    })
                    .await
                    .expect("readable");
                match b.try_recv_from(buf) {
                    Ok(_) => got += 1,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("recv: {e}"),
                }
            }
        })
        .await;
        assert!(reads.is_ok(), "all 8 datagrams read");
        sender.await.expect("sender");
        assert_eq!(made, 1, "one set of buffers for the whole flow");
    }
}
