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
/// Largest framed message on a TURN TCP/TLS connection (a STUN header plus
/// a 16-bit length, or ChannelData).
const MAX_FRAME: usize = 20 + 65535 + 4;
/// Time allowed to open a TCP/TLS connection to a TURN server.
const STREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Something that arrived on a socket.
#[derive(Debug)]
pub(super) struct Inbound {
    pub(super) transport: Transport,
    /// The UDP socket's address, or for a TURN stream the host address the
    /// session uses for that server.
    pub(super) local: SocketAddr,
    pub(super) remote: SocketAddr,
    pub(super) bytes: Vec<u8>,
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

/// Binds one UDP socket per IP (an ephemeral port); IPs that fail to bind
/// are skipped (an IPv6 address still in DAD, say).
pub(super) async fn bind_udp(ips: &[IpAddr]) -> Vec<(SocketAddr, Arc<UdpSocket>)> {
    let mut out = Vec::new();
    for ip in ips {
        match UdpSocket::bind(SocketAddr::new(*ip, 0)).await {
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
) {
    tasks.spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            match sock.recv_from(&mut buf).await {
                Ok((n, remote)) => {
                    let bytes = buf.get(..n).unwrap_or_default().to_vec();
                    let msg = Inbound {
                        transport: Transport::Udp,
                        local,
                        remote,
                        bytes,
                    };
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
) -> io::Result<mpsc::Sender<Vec<u8>>> {
    let tcp = tokio::time::timeout(STREAM_CONNECT_TIMEOUT, TcpStream::connect(server))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(1024);
    if transport == Transport::Tls {
        let tls = tls_connect(tcp, host, tls_roots).await?;
        let (r, w) = tokio::io::split(tls);
        tasks.spawn(read_frames(r, transport, local, server, tx));
        tasks.spawn(write_frames(w, out_rx));
    } else {
        let (r, w) = tcp.into_split();
        tasks.spawn(read_frames(r, transport, local, server, tx));
        tasks.spawn(write_frames(w, out_rx));
    }
    Ok(out_tx)
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
    let mut store = rustls::RootCertStore::empty();
    for der in roots {
        store
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| other(format!("bad trust root: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| other(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| other(format!("bad TLS server name {host:?}: {e}")))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

async fn read_frames(
    mut r: impl AsyncRead + Unpin,
    transport: Transport,
    local: SocketAddr,
    server: SocketAddr,
    tx: mpsc::Sender<Inbound>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16384];
    loop {
        // Hand over every whole frame in the buffer.
        loop {
            match p2p_stun::next_frame_len(&buf) {
                Ok(Some(n)) if n <= MAX_FRAME && buf.len() >= n => {
                    let frame: Vec<u8> = buf.drain(..n).collect();
                    let msg = Inbound {
                        transport,
                        local,
                        remote: server,
                        bytes: frame,
                    };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                Ok(Some(n)) if n > MAX_FRAME => return,
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!("TURN stream {server}: {e}");
                    return;
                }
            }
        }
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
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
