//! The sockets of birthday probing (issue 14): bound on the session's
//! request (`ProbeSockets::Bind`), read like the host sockets into the one
//! inbound queue, closed when the session says probing ended
//! (`ProbeSockets::Close`) or when the driver ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

use super::super::net;
use super::Driver;
use crate::ProbeSockets;

/// The probing sockets' readers.
#[derive(Default)]
pub(super) struct Probe {
    readers: HashMap<SocketAddr, AbortHandle>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        for r in self.readers.values() {
            r.abort();
        }
    }
}

impl Driver {
    /// Bind or close the sockets the session asked for.
    pub(super) async fn probe_sockets(&mut self, r: ProbeSockets) {
        match r {
            ProbeSockets::Bind { ip, count } => {
                let mut bound = Vec::new();
                for _ in 0..count.min(p2p_ice::MAX_SOCKETS) {
                    match UdpSocket::bind(SocketAddr::new(ip, 0)).await {
                        Ok(s) => {
                            let Ok(local) = s.local_addr() else { continue };
                            let s = Arc::new(s);
                            let tx = self.inbound_tx.clone();
                            let h = net::spawn_udp_reader(&mut self._tasks, local, s.clone(), tx);
                            self.probe.readers.insert(local, h);
                            self.sockets.insert(local, s);
                            bound.push(local);
                        }
                        Err(e) => {
                            tracing::debug!("birthday probing: bind {ip}: {e}");
                            break;
                        }
                    }
                }
                tracing::debug!("birthday probing: {} sockets on {ip}", bound.len());
                self.negotiation.sockets_bound(Instant::now(), bound);
            }
            ProbeSockets::Close(addrs) => {
                for a in addrs {
                    if let Some(h) = self.probe.readers.remove(&a) {
                        h.abort();
                    }
                    self.sockets.remove(&a);
                }
            }
        }
    }
}
