//! RFC 6062 sockets: TCP relayed addresses' listeners and connections to peers.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;

use super::Inbound;

/// How long a Connect to a peer may take (RFC 6062 §5.2: at least 30 s).
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A TCP socket on `addr` that may share its port with the relayed
/// address's listener (so that Connect can go out from the relayed address).
pub(super) fn tcp_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    Ok(s)
}

pub(super) async fn tcp_accept_loop(
    listener: TcpListener,
    advertised: SocketAddr,
    tx: mpsc::Sender<Inbound>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let m = Inbound::PeerAccepted {
                    relayed: advertised,
                    peer,
                    stream,
                };
                if tx.send(m).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(%advertised, "relay accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Connect from `from` (the relayed address's bound address; if that port
/// cannot be shared, any port of its IP) to `peer`, and report.
pub(super) async fn connect_peer(
    id: u32,
    from: SocketAddr,
    peer: SocketAddr,
    tx: mpsc::Sender<Inbound>,
) {
    let attempt = async {
        let s = match tcp_socket(from).and_then(|s| s.bind(from).map(|()| s)) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%from, "connect from the relayed port: {e}; using another port");
                let any = SocketAddr::new(from.ip(), 0);
                let s = tcp_socket(any)?;
                s.bind(any)?;
                s
            }
        };
        s.connect(peer).await
    };
    let stream = match tokio::time::timeout(PEER_CONNECT_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    };
    if let Ok(s) = &stream {
        let _ = s.set_nodelay(true);
    }
    let _ = tx.send(Inbound::PeerConnected { id, stream }).await;
}
