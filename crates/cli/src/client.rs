//! A STUN Binding client over UDP, TCP and TLS, driven by
//! `p2p_stun::ClientTransaction` (retransmissions over UDP, one timeout over
//! streams).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_stun::attr::{
    ChangeRequest, ErrorCode, MappedAddress, OtherAddress, ResponseOrigin, Software,
    XorMappedAddress,
};
use p2p_stun::{
    ClientTransaction, Message, MessageBuilder, MessageClass, MessageType, Method, StreamFramer,
    TransactionConfig, TransactionId,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// What a Binding response said.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BindingResponse {
    /// Where the response came from (the server's address as seen here).
    pub from: SocketAddr,
    /// XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS): this client as the server sees it.
    pub mapped: Option<SocketAddr>,
    /// SOFTWARE.
    pub software: Option<String>,
    /// OTHER-ADDRESS (RFC 5780): the server's alternate address.
    pub other: Option<SocketAddr>,
    /// RESPONSE-ORIGIN (RFC 5780): the address the server says it sent from.
    pub origin: Option<SocketAddr>,
    /// The error code of an error response.
    pub error: Option<u16>,
    /// From the first transmission to the response.
    #[serde(serialize_with = "ser_duration")]
    pub rtt: Duration,
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Why a transaction failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No response in time.
    #[error("no response from {0}")]
    Timeout(SocketAddr),
    /// Socket trouble.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server's response does not parse.
    #[error("malformed response: {0}")]
    Malformed(#[from] p2p_stun::DecodeError),
    /// The request could not be written.
    #[error("cannot encode the request: {0}")]
    Encode(#[from] p2p_stun::EncodeError),
    /// TLS setup failed.
    #[error("tls: {0}")]
    Tls(String),
}

/// Timers for interactive use: sends at 0, 200, 600 and 1400 ms, gives up
/// at 2200 ms (UDP), or after 5 s (TCP/TLS).
pub fn interactive_timers() -> TransactionConfig {
    TransactionConfig {
        rto: Duration::from_millis(200),
        max_transmits: 4,
        last_wait_multiplier: 4,
        reliable_timeout: Duration::from_secs(5),
    }
}

/// Timers for NAT discovery, where some tests are expected to go
/// unanswered: sends at 0, 100, 300 ms, gives up at 700 ms.
pub fn probe_timers() -> TransactionConfig {
    TransactionConfig {
        rto: Duration::from_millis(100),
        max_transmits: 3,
        last_wait_multiplier: 4,
        reliable_timeout: Duration::from_secs(3),
    }
}

/// A Binding request, optionally with CHANGE-REQUEST.
pub fn binding_request(
    change: Option<ChangeRequest>,
) -> Result<(TransactionId, Vec<u8>), ClientError> {
    let tid = TransactionId::random(&mut rand::thread_rng());
    let mut buf = Vec::with_capacity(64);
    let mut b = MessageBuilder::new(
        &mut buf,
        MessageType::new(Method::BINDING, MessageClass::Request),
        tid,
    )?;
    if let Some(c) = change {
        b.add(&c)?;
    }
    b.add_fingerprint()?;
    Ok((tid, buf))
}

fn parse(msg: &Message<'_>, from: SocketAddr, rtt: Duration) -> BindingResponse {
    let mapped = match msg.get::<XorMappedAddress>() {
        Ok(Some(x)) => Some(x.0),
        _ => msg.get::<MappedAddress>().ok().flatten().map(|m| m.0),
    };
    BindingResponse {
        from,
        mapped,
        software: msg
            .get::<Software>()
            .ok()
            .flatten()
            .map(|s| s.as_str().to_owned()),
        other: msg.get::<OtherAddress>().ok().flatten().map(|o| o.0),
        origin: msg.get::<ResponseOrigin>().ok().flatten().map(|o| o.0),
        error: (msg.typ().class == MessageClass::Error).then(|| {
            msg.get::<ErrorCode>()
                .ok()
                .flatten()
                .map_or(0, |e| e.code())
        }),
        rtt,
    }
}

/// One Binding transaction over UDP from `sock` to `server`; the response
/// may come from any address (CHANGE-REQUEST). `Ok(None)` when unanswered.
pub async fn udp_binding(
    sock: &UdpSocket,
    server: SocketAddr,
    change: Option<ChangeRequest>,
    timers: TransactionConfig,
) -> Result<Option<BindingResponse>, ClientError> {
    let (tid, req) = binding_request(change)?;
    udp_transaction(sock, server, tid, req, timers).await
}

/// Run a prepared request over UDP to `to`.
pub async fn udp_transaction(
    sock: &UdpSocket,
    to: SocketAddr,
    tid: TransactionId,
    req: Vec<u8>,
    timers: TransactionConfig,
) -> Result<Option<BindingResponse>, ClientError> {
    let t0 = Instant::now();
    let mut tx = ClientTransaction::new(t0, tid, req, false, timers);
    let mut buf = [0u8; 2048];
    loop {
        if let Some(bytes) = tx.poll_transmit() {
            // ICMP errors (e.g. port unreachable) are not fatal: keep trying.
            if let Err(e) = sock.send_to(bytes, to).await {
                tracing::debug!(%to, "send: {e}");
            }
        }
        if tx.outcome().is_some() {
            return Ok(None);
        }
        let Some(deadline) = tx.poll_timeout() else {
            return Ok(None);
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => tx.handle_timeout(Instant::now()),
            r = sock.recv_from(&mut buf) => {
                let (n, from) = match r {
                    Ok(x) => x,
                    Err(e) => { tracing::debug!("recv: {e}"); continue; }
                };
                let Ok(msg) = Message::decode(&buf[..n]) else { continue };
                if tx.handle_response(&msg) {
                    return Ok(Some(parse(&msg, from, t0.elapsed())));
                }
            }
        }
    }
}

/// One Binding transaction over a stream (TCP or TLS), bounded by the
/// transaction's reliable timeout.
async fn stream_binding<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    server: SocketAddr,
    t0: Instant,
    timers: TransactionConfig,
) -> Result<BindingResponse, ClientError> {
    let (tid, req) = binding_request(None)?;
    let mut tx = ClientTransaction::new(t0, tid, req, true, timers);
    if let Some(bytes) = tx.poll_transmit() {
        s.write_all(bytes).await?;
    }
    let deadline = tx.poll_timeout().unwrap_or(t0);
    let mut framer = StreamFramer::new(4096);
    let read = async {
        loop {
            let n = s.read(framer.read_buf()).await?;
            if n == 0 {
                return Err(ClientError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            framer.filled(n);
            while let Some(frame) = framer
                .next_frame()
                .map_err(|e| ClientError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))?
            {
                let msg = Message::decode(frame)?;
                if tx.handle_response(&msg) {
                    return Ok(parse(&msg, server, t0.elapsed()));
                }
            }
        }
    };
    match tokio::time::timeout_at(deadline.into(), read).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout(server)),
    }
}

/// One Binding transaction over a new TCP connection.
pub async fn tcp_binding(
    server: SocketAddr,
    timers: TransactionConfig,
) -> Result<BindingResponse, ClientError> {
    let t0 = Instant::now();
    let mut s = tokio::time::timeout(timers.reliable_timeout, TcpStream::connect(server))
        .await
        .map_err(|_| ClientError::Timeout(server))??;
    s.set_nodelay(true)?;
    stream_binding(&mut s, server, t0, timers).await
}

/// One Binding transaction over a new TLS connection that trusts the
/// certificates in `ca_pem` and checks the name `server_name`.
pub async fn tls_binding(
    server: SocketAddr,
    server_name: &str,
    ca_pem: &[u8],
    timers: TransactionConfig,
) -> Result<BindingResponse, ClientError> {
    let tls = |e: &dyn std::fmt::Display| ClientError::Tls(e.to_string());
    let roots = rustls_pemfile::certs(&mut &ca_pem[..]).collect::<Result<Vec<_>, _>>()?;
    let config = p2p_connect::tls_client_config(roots).map_err(|e| tls(&e))?;
    let name =
        rustls::pki_types::ServerName::try_from(server_name.to_owned()).map_err(|e| tls(&e))?;
    let t0 = Instant::now();
    let connect = async {
        let tcp = TcpStream::connect(server).await?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    };
    let mut s = tokio::time::timeout(timers.reliable_timeout, connect)
        .await
        .map_err(|_| ClientError::Timeout(server))??;
    stream_binding(&mut s, server, t0, timers).await
}
