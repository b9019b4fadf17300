//! The TURN relay's fast path: ChannelData of UDP allocations relayed by the
//! threads that receive it, without a trip through the TURN task.
//!
//! The TURN task keeps the state machine ([`p2p_turn::TurnServer`]) and
//! publishes the channels it allows ([`p2p_turn::TurnServer::poll_route`])
//! here. Then:
//!
//! - a UDP worker that reads ChannelData from a client looks up (listening
//!   address, client, channel) and sends the payload from the relayed
//!   socket to the peer ([`FastPath::relay_from_client`]);
//! - a relayed socket's reader looks up (relayed address, peer) and sends
//!   the datagram, a ChannelData header written in front of it, from the
//!   listening socket to the client ([`FastPath::relay_from_peer`]).
//!
//! A route holds until its `until` (the earliest of channel, permission and
//! allocation expiry); past it, or for anything without a route, the packet
//! goes to the TURN task as before, which checks it and counts it. Routes
//! are never published for allocations with a bandwidth cap, over TCP/TLS,
//! or to the server's own addresses (relay to relay): those stay on the
//! checked path. While a route is being set up, a packet that went to the
//! TURN task may be overtaken by the next one on the fast path (UDP may
//! reorder; it happens once per channel).
//!
//! Nothing here allocates: lookups in sharded maps under a read lock, one
//! non-blocking `sendto` per packet, atomic counters per allocation.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use p2p_stun::ChannelData;
use p2p_turn::ChannelRoute;
use tokio::net::UdpSocket;

/// Shards per table: readers on different cores seldom share a lock.
const SHARDS: usize = 16;

/// Traffic one allocation relayed on the fast path.
#[derive(Debug, Default)]
pub(crate) struct FastTraffic {
    pub(crate) packets_to_peer: AtomicU64,
    pub(crate) bytes_to_peer: AtomicU64,
    pub(crate) packets_to_client: AtomicU64,
    pub(crate) bytes_to_client: AtomicU64,
}

/// A plain copy of [`FastTraffic`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TrafficSnapshot {
    pub(crate) packets_to_peer: u64,
    pub(crate) bytes_to_peer: u64,
    pub(crate) packets_to_client: u64,
    pub(crate) bytes_to_client: u64,
}

impl FastTraffic {
    pub(crate) fn snapshot(&self) -> TrafficSnapshot {
        TrafficSnapshot {
            packets_to_peer: self.packets_to_peer.load(Ordering::Relaxed),
            bytes_to_peer: self.bytes_to_peer.load(Ordering::Relaxed),
            packets_to_client: self.packets_to_client.load(Ordering::Relaxed),
            bytes_to_client: self.bytes_to_client.load(Ordering::Relaxed),
        }
    }
}

impl std::ops::AddAssign for TrafficSnapshot {
    fn add_assign(&mut self, o: Self) {
        self.packets_to_peer += o.packets_to_peer;
        self.bytes_to_peer += o.bytes_to_peer;
        self.packets_to_client += o.packets_to_client;
        self.bytes_to_client += o.bytes_to_client;
    }
}

struct ToPeer {
    /// The relayed socket.
    sock: Arc<UdpSocket>,
    peer: SocketAddr,
    until: Instant,
    traffic: Arc<FastTraffic>,
}

struct ToClient {
    /// A listening socket bound to the allocation's server address.
    sock: Arc<UdpSocket>,
    client: SocketAddr,
    channel: u16,
    until: Instant,
    traffic: Arc<FastTraffic>,
}

/// (listening address, client, channel).
type PeerKey = (SocketAddr, SocketAddr, u16);
/// (relayed address, peer).
type ClientKey = (SocketAddr, SocketAddr);

/// The published routes; shared by the TURN task (writer), the UDP workers
/// and the relayed sockets' readers.
pub(crate) struct FastPath {
    to_peer: Vec<RwLock<HashMap<PeerKey, ToPeer>>>,
    to_client: Vec<RwLock<HashMap<ClientKey, ToClient>>>,
    /// Datagrams the fast path dropped because a send failed.
    send_errors: AtomicU64,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath").finish_non_exhaustive()
    }
}

fn peer_shard(client: SocketAddr, channel: u16) -> usize {
    usize::from(client.port() ^ channel) % SHARDS
}

fn client_shard(relayed: SocketAddr, peer: SocketAddr) -> usize {
    usize::from(relayed.port() ^ peer.port()) % SHARDS
}

/// Send without waiting: a full socket buffer drops the datagram, as the
/// kernel would. A plain `sendto` on the (non-blocking) socket: tokio's
/// `try_send_to` would refuse until its reactor has seen the socket
/// writable, and this thread may be busy relaying.
fn send(sock: &UdpSocket, bytes: &[u8], to: SocketAddr) -> bool {
    match socket2::SockRef::from(sock).send_to(bytes, &to.into()) {
        Ok(_) => true,
        Err(e) => {
            if e.kind() != io::ErrorKind::WouldBlock {
                tracing::debug!(%to, "turn fast path send: {e}");
            }
            false
        }
    }
}

impl FastPath {
    pub(crate) fn new() -> Self {
        FastPath {
            to_peer: (0..SHARDS).map(|_| RwLock::default()).collect(),
            to_client: (0..SHARDS).map(|_| RwLock::default()).collect(),
            send_errors: AtomicU64::new(0),
        }
    }

    /// Datagrams dropped on a failed send so far.
    pub(crate) fn send_errors(&self) -> u64 {
        self.send_errors.load(Ordering::Relaxed)
    }

    /// Relay a ChannelData datagram that `client` sent to the listening
    /// address `server`, if a live route covers it. Returns whether it was
    /// taken care of (sent, or dropped on a failed send); `false`: hand it
    /// to the TURN task.
    pub(crate) fn relay_from_client(
        &self,
        server: SocketAddr,
        client: SocketAddr,
        pkt: &[u8],
        now: Instant,
    ) -> bool {
        let Ok(cd) = ChannelData::decode(pkt) else {
            return false;
        };
        let channel = cd.channel();
        let Ok(shard) = self.to_peer[peer_shard(client, channel)].read() else {
            return false;
        };
        let Some(r) = shard.get(&(server, client, channel)) else {
            return false;
        };
        if now >= r.until {
            return false;
        }
        let data = cd.data();
        if send(&r.sock, data, r.peer) {
            r.traffic.packets_to_peer.fetch_add(1, Ordering::Relaxed);
            r.traffic
                .bytes_to_peer
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        } else {
            self.send_errors.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Relay a datagram `peer` sent to the relayed address `relayed`, held
    /// in `buf[4..4 + len]` (the first 4 bytes are room for the ChannelData
    /// header), if a live route covers it. Returns whether it was taken
    /// care of; `false`: hand `buf[4..4 + len]` to the TURN task.
    pub(crate) fn relay_from_peer(
        &self,
        relayed: SocketAddr,
        peer: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> bool {
        let Ok(wire_len) = u16::try_from(len) else {
            return false;
        };
        if buf.len() < 4 + len {
            return false;
        }
        let Ok(shard) = self.to_client[client_shard(relayed, peer)].read() else {
            return false;
        };
        let Some(r) = shard.get(&(relayed, peer)) else {
            return false;
        };
        if now >= r.until {
            return false;
        }
        // RFC 8656 §12.5: over UDP the ChannelData needs no padding.
        buf[..2].copy_from_slice(&r.channel.to_be_bytes());
        buf[2..4].copy_from_slice(&wire_len.to_be_bytes());
        if send(&r.sock, &buf[..4 + len], r.client) {
            r.traffic.packets_to_client.fetch_add(1, Ordering::Relaxed);
            r.traffic
                .bytes_to_client
                .fetch_add(len as u64, Ordering::Relaxed);
        } else {
            self.send_errors.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Add or replace a route: `relay` is the socket of `route.relayed`,
    /// `listening` one bound to `route.five_tuple.server`.
    pub(crate) fn up(
        &self,
        route: &ChannelRoute,
        relay: Arc<UdpSocket>,
        listening: Arc<UdpSocket>,
        traffic: Arc<FastTraffic>,
    ) {
        let ft = route.five_tuple;
        if let Ok(mut s) = self.to_peer[peer_shard(ft.client, route.channel)].write() {
            s.insert(
                (ft.server, ft.client, route.channel),
                ToPeer {
                    sock: relay,
                    peer: route.peer,
                    until: route.until,
                    traffic: traffic.clone(),
                },
            );
        }
        if let Ok(mut s) = self.to_client[client_shard(route.relayed, route.peer)].write() {
            s.insert(
                (route.relayed, route.peer),
                ToClient {
                    sock: listening,
                    client: ft.client,
                    channel: route.channel,
                    until: route.until,
                    traffic,
                },
            );
        }
    }

    /// Remove a route (nothing happens if it is not there).
    pub(crate) fn down(&self, route: &ChannelRoute) {
        let ft = route.five_tuple;
        if let Ok(mut s) = self.to_peer[peer_shard(ft.client, route.channel)].write() {
            s.remove(&(ft.server, ft.client, route.channel));
        }
        if let Ok(mut s) = self.to_client[client_shard(route.relayed, route.peer)].write() {
            s.remove(&(route.relayed, route.peer));
        }
    }

    /// How many routes are published (client → peer direction).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.to_peer
            .iter()
            .map(|s| s.read().map_or(0, |s| s.len()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2p_turn::{FiveTuple, Transport};
    use std::time::Duration;

    async fn sock() -> Arc<UdpSocket> {
        Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap())
    }

    fn chan(channel: u16, data: &[u8]) -> Vec<u8> {
        let mut v = channel.to_be_bytes().to_vec();
        v.extend_from_slice(&(data.len() as u16).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    #[tokio::test]
    async fn routes_relay_both_ways_until_they_expire_or_go_down() {
        let fast = FastPath::new();
        let (listening, relay, client, peer) =
            (sock().await, sock().await, sock().await, sock().await);
        let server = listening.local_addr().unwrap();
        let now = Instant::now();
        let route = ChannelRoute {
            five_tuple: FiveTuple {
                client: client.local_addr().unwrap(),
                server,
                transport: Transport::Udp,
            },
            channel: 0x4001,
            peer: peer.local_addr().unwrap(),
            relayed: relay.local_addr().unwrap(),
            until: now + Duration::from_secs(10),
        };
        let traffic = Arc::new(FastTraffic::default());
        let c = route.five_tuple.client;
        // No route yet: the TURN task's.
        assert!(!fast.relay_from_client(server, c, &chan(0x4001, b"hi"), now));
        fast.up(&route, relay.clone(), listening.clone(), traffic.clone());
        assert_eq!(fast.len(), 1);

        // Client → peer: the payload alone, from the relayed socket.
        assert!(fast.relay_from_client(server, c, &chan(0x4001, b"hello"), now));
        let mut b = [0u8; 64];
        let (n, from) = peer.recv_from(&mut b).await.unwrap();
        assert_eq!((&b[..n], from), (&b"hello"[..], route.relayed));
        // Another channel, another client, or not ChannelData: not ours.
        assert!(!fast.relay_from_client(server, c, &chan(0x4002, b"x"), now));
        assert!(!fast.relay_from_client(server, route.peer, &chan(0x4001, b"x"), now));
        assert!(!fast.relay_from_client(server, c, &[0x40, 0x01, 0, 9, 1], now));

        // Peer → client: a ChannelData header in front, from the listening socket.
        let mut buf = [0u8; 64];
        buf[4..9].copy_from_slice(b"world");
        assert!(fast.relay_from_peer(route.relayed, route.peer, &mut buf, 5, now));
        let (n, from) = client.recv_from(&mut b).await.unwrap();
        assert_eq!((&b[..n], from), (&chan(0x4001, b"world")[..], server));
        // A peer at another port has no channel.
        let other = SocketAddr::new(route.peer.ip(), route.peer.port() ^ 1);
        assert!(!fast.relay_from_peer(route.relayed, other, &mut buf, 5, now));

        assert_eq!(
            traffic.snapshot(),
            TrafficSnapshot {
                packets_to_peer: 1,
                bytes_to_peer: 5,
                packets_to_client: 1,
                bytes_to_client: 5,
            }
        );

        // Past `until`, everything goes to the TURN task again.
        let later = route.until;
        assert!(!fast.relay_from_client(server, c, &chan(0x4001, b"late"), later));
        assert!(!fast.relay_from_peer(route.relayed, route.peer, &mut buf, 5, later));
        // Down removes both directions.
        fast.down(&route);
        assert_eq!(fast.len(), 0);
        assert!(!fast.relay_from_client(server, c, &chan(0x4001, b"gone"), now));
        assert!(!fast.relay_from_peer(route.relayed, route.peer, &mut buf, 5, now));
        assert_eq!(fast.send_errors(), 0);
    }
}
