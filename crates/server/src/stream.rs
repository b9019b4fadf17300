//! STUN over TCP and TLS (RFC 8489 §6.2.2, §6.2.3): framing with
//! `p2p_stun::next_frame_len`, a per-connection buffer limit, an idle
//! timeout, and a cap on open connections.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use p2p_stun::{next_frame_len, PacketKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::counters::Counters;
use crate::responder::{answer, Answer, Ctx, Dropped, Transport};

/// The largest frame a connection may send: a STUN request never needs more.
const MAX_FRAME: usize = 4096;
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection shares.
#[derive(Clone)]
pub(crate) struct StreamShared {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) counters: Counters,
    pub(crate) idle: Duration,
    pub(crate) permits: Arc<Semaphore>,
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
                None => serve(tcp, from, local, &shared).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => serve(s, from, local, &shared).await,
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

/// Answer the STUN messages of one connection until it closes, idles out or
/// breaks framing.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    from: SocketAddr,
    local: SocketAddr,
    shared: &StreamShared,
) -> io::Result<()> {
    let shard = shared.counters.shard(0);
    let mut buf = vec![0u8; MAX_FRAME];
    let mut out = vec![0u8; MAX_FRAME];
    let mut filled = 0;
    loop {
        let n = match tokio::time::timeout(shared.idle, s.read(&mut buf[filled..])).await {
            Ok(r) => r?,
            Err(_) => return Err(io::ErrorKind::TimedOut.into()),
        };
        if n == 0 {
            return Ok(());
        }
        filled += n;
        loop {
            let len = match next_frame_len(&buf[..filled]) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    shard.record(&Answer::Drop(Dropped::Malformed));
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            if len > MAX_FRAME {
                shard.record(&Answer::Drop(Dropped::Malformed));
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "frame too large",
                ));
            }
            if len > filled {
                break;
            }
            let frame = &buf[..len];
            if p2p_stun::classify(frame) == PacketKind::Stun {
                let a = answer(frame, from, local, Transport::Stream, &shared.ctx, &mut out);
                shard.record(&a);
                if let Answer::Reply { len, .. } = a {
                    s.write_all(&out[..len]).await?;
                }
            } else {
                // ChannelData needs TURN, which this server does not run yet.
                shard.record(&Answer::Drop(Dropped::NotRequest));
            }
            buf.copy_within(len..filled, 0);
            filled -= len;
        }
    }
}

/// A rustls server configuration from PEM files (ring provider).
pub(crate) fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, crate::ServerError> {
    use crate::ServerError;
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| ServerError::Tls(format!("cannot read {}: {e}", p.display())))
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "{}: no certificate",
            cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| ServerError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| ServerError::Tls(format!("{}: no private key", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
