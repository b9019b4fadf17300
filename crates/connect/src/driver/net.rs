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
const MAX_DATAGRAM: usize = 65536;
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

/// Reads handed over per `recvmmsg`.
const READ_BATCH: usize = 4;

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
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            match sock.recv_from(&mut buf).await {
                Ok((n, remote)) => {
                    let bytes = buf.get(..n).unwrap_or_default().to_vec();
                    let msg = Inbound::one(Transport::Udp, local, remote, bytes);
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
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

/// Reads batches of datagrams from a host socket (`recvmmsg`, GRO) into
/// `tx` until the driver goes away: one copy and one hand-over per read,
/// however many datagrams it holds.
pub(super) fn spawn_batched_reader(
    tasks: &mut JoinSet<()>,
    local: SocketAddr,
    sock: Arc<UdpSocket>,
    state: Batched,
    tx: mpsc::Sender<Inbound>,
) {
    tasks.spawn(async move {
        // A GRO read holds up to `gro_segments` datagrams of up to 1,500
        // bytes (the path MTU bounds them, not our datagram size).
        let size = (state.gro_segments() * 1500).max(MAX_DATAGRAM);
        let mut bufs: [Vec<u8>; READ_BATCH] = std::array::from_fn(|_| vec![0u8; size]);
        let mut meta = [quinn_udp::RecvMeta::default(); READ_BATCH];
        loop {
            let r = sock
                .async_io(tokio::io::Interest::READABLE, || {
                    let mut slices = bufs.each_mut().map(|b| io::IoSliceMut::new(&mut b[..]));
                    state.recv(quinn_udp::UdpSockRef::from(&*sock), &mut slices, &mut meta)
                })
                .await;
            match r {
                Ok(n) => {
                    for (m, b) in meta.iter().zip(&bufs).take(n) {
                        let Some(bytes) = b.get(..m.len) else {
                            continue;
                        };
                        let msg = Inbound {
                            transport: Transport::Udp,
                            local,
                            remote: m.addr,
                            bytes: bytes.to_vec(),
                            stride: if m.stride == 0 { usize::MAX } else { m.stride },
                        };
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
                Err(e) => {
                    tracing::debug!("UDP {local}: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
}

/// Opens a TCP (or TLS) connection to a TURN server and spawns its reader
/// (framing with `p2p_stun::next_frame_len`) and writer. Returns the
/// writer's queue.
pub(super) async fn connect_stream(
    tasks: &mut JoinSet<()>,
    server: SocketAddr,
    host: &str,
    transport: Transport,
    local: SocketAddr,
    tls_roots: &[Vec<u8>],
    tx: mpsc::Sender<Inbound>,
) -> io::Result<TurnStream> {
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(1024);
    match dial(server, host, transport, tls_roots).await? {
        Dialed::Tcp(tcp) => {
            let (r, w) = tcp.into_split();
            tasks.spawn(read_frames(r, transport, local, server, tx));
            tasks.spawn(write_frames(w, out_rx));
        }
        Dialed::Tls(tls) => {
            let (r, w) = tokio::io::split(*tls);
            tasks.spawn(read_frames(r, transport, local, server, tx));
            tasks.spawn(write_frames(w, out_rx));
        }
    }
    Ok(TurnStream {
        writer: out_tx,
        local,
        host: host.to_owned(),
    })
}

/// A connection to a TURN server that [`spawn_stream`] could not open.
#[derive(Debug)]
pub(super) struct StreamFailed {
    pub(super) server: SocketAddr,
    pub(super) transport: Transport,
    pub(super) reason: String,
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
    tasks.spawn(async move {
        match dial(server, &name, transport, &tls_roots).await {
            Ok(Dialed::Tcp(tcp)) => {
                let (r, w) = tcp.into_split();
                tokio::join!(
                    read_frames(r, transport, local, server, tx),
                    write_frames(w, out_rx)
                );
            }
            Ok(Dialed::Tls(tls)) => {
                let (r, w) = tokio::io::split(*tls);
                tokio::join!(
                    read_frames(r, transport, local, server, tx),
                    write_frames(w, out_rx)
                );
            }
            Err(e) => {
                tracing::warn!("TURN {transport:?} connection to {server}: {e}");
                let _ = failed.send(StreamFailed {
                    server,
                    transport,
                    reason: format!("cannot connect over {transport:?}: {e}"),
                });
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
