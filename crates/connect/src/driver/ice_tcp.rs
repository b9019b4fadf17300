//! ICE-TCP sockets (RFC 6544): a listener per local IP (the passive
//! candidate), connections opened for the active candidate (`IP:9`), RFC
//! 4571 framing on both.
//!
//! The session names its TCP candidates as the agent does
//! ([`p2p_ice::Candidate::host_tcp`]): a transmit from a listener's address
//! goes out on the connection the peer opened from its destination (none:
//! dropped, a passive end never connects); one from `IP:9` goes out on the
//! connection from that IP to its destination, opened on first use. What
//! comes back arrives "at" the listener's address or at `IP:9`, from the
//! peer's end of the connection, which is what the agent expects.
//!
//! The one connection a passive end opens is to a STUN server, from the
//! listener's own address (SO_REUSEADDR and SO_REUSEPORT on both): the
//! agent's Binding request for a server-reflexive passive candidate
//! (RFC 6544 §4.1), whose answer arrives at the listener's address. That
//! connection speaks plain STUN over TCP (RFC 8489 §6.2.2: messages back
//! to back, no RFC 4571 length prefix), as STUN servers do.
//!
//! Connections live as long as the driver (their tasks are aborted with
//! it) or until the peer closes them; at most [`MAX_CONNECTIONS`] are open
//! at once, so a stranger connecting to the listener cannot exhaust us.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use p2p_ice::framing::{frame, Deframer};
use p2p_ice::{TcpType, ACTIVE_TCP_PORT};
use p2p_proto::Transmit;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::net::Inbound;
use crate::Transport;

/// Connections open at once (accepted and opened together).
pub(super) const MAX_CONNECTIONS: usize = 64;
/// Time allowed to open a connection to the peer's passive candidate.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames queued for one connection before new ones are dropped (the
/// layers above retransmit, as over UDP).
const QUEUE: usize = 1024;

/// (our candidate's address, the peer's end) → the connection's queue.
type Conns = Arc<Mutex<HashMap<(SocketAddr, SocketAddr), mpsc::Sender<Vec<u8>>>>>;

/// The ICE-TCP sockets of a driver.
pub(super) struct IceTcp {
    listeners: Vec<SocketAddr>,
    active: Vec<SocketAddr>,
    /// The STUN servers a listener's address may connect to.
    stun: Vec<SocketAddr>,
    conns: Conns,
    inbound: mpsc::Sender<Inbound>,
    tasks: JoinSet<()>,
}

impl IceTcp {
    /// Listens on each of `ips` (a port no UDP host of `udp` has, so a
    /// transmit's source says which socket it is for) and spawns the
    /// accept loops. An IP that cannot be bound keeps its active candidate
    /// only.
    pub(super) fn bind(ips: &[IpAddr], udp: &[SocketAddr], inbound: mpsc::Sender<Inbound>) -> Self {
        let mut tcp = IceTcp {
            listeners: Vec::new(),
            active: Vec::new(),
            stun: Vec::new(),
            conns: Arc::default(),
            inbound,
            tasks: JoinSet::new(),
        };
        for ip in ips {
            tcp.active.push(SocketAddr::new(*ip, ACTIVE_TCP_PORT));
            match listen(*ip, udp) {
                Ok(l) => {
                    let Ok(local) = l.local_addr() else { continue };
                    tcp.listeners.push(local);
                    let (conns, inbound) = (tcp.conns.clone(), tcp.inbound.clone());
                    tcp.tasks.spawn(accept_loop(l, local, conns, inbound));
                }
                Err(e) => tracing::debug!("ICE-TCP: cannot listen on {ip}: {e}"),
            }
        }
        tcp
    }

    /// The candidates to gather: each listener passive, each IP active.
    pub(super) fn candidates(&self) -> Vec<(SocketAddr, TcpType)> {
        let passive = self.listeners.iter().map(|a| (*a, TcpType::Passive));
        let active = self.active.iter().map(|a| (*a, TcpType::Active));
        passive.chain(active).collect()
    }

    /// The STUN servers the agent asks for server-reflexive passive
    /// candidates (connections to them may leave from a listener's port).
    pub(super) fn set_stun_servers(&mut self, stun: &[SocketAddr]) {
        self.stun = stun.to_vec();
    }

    /// Whether `t` leaves from one of our TCP candidates (not toward a
    /// TURN server over TCP, whose transmits leave from a UDP host).
    pub(super) fn owns(&self, t: &Transmit) -> bool {
        t.transport == Transport::Tcp
            && (self.listeners.contains(&t.source) || self.active.contains(&t.source))
    }

    /// Sends `t` on its connection: the open one, or for the active
    /// candidate a new one. Never waits: a full queue drops the packet.
    pub(super) fn send(&mut self, t: Transmit) {
        let from_listener = !self.active.contains(&t.source);
        // To a STUN server: plain STUN over TCP; to a peer: RFC 4571.
        let stun = from_listener && self.stun.contains(&t.destination);
        let bytes = if stun {
            t.contents.clone()
        } else {
            match frame(&t.contents) {
                Ok(b) => b,
                Err(_) => {
                    let n = t.contents.len();
                    tracing::debug!("ICE-TCP: a {n}-byte packet cannot be framed");
                    return;
                }
            }
        };
        let key = (t.source, t.destination);
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(q) = conns.get(&key) {
            if q.try_send(bytes).is_err() {
                tracing::trace!("ICE-TCP {} -> {}: queue full", t.source, t.destination);
            }
            return;
        }
        if from_listener && !stun {
            // Passive: the peer has not connected (or has gone).
            return;
        }
        if conns.len() >= MAX_CONNECTIONS {
            tracing::debug!("ICE-TCP: {MAX_CONNECTIONS} connections open; not opening another");
            return;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let _ = tx.try_send(bytes);
        conns.insert(key, tx);
        drop(conns);
        let (conns, inbound) = (self.conns.clone(), self.inbound.clone());
        self.tasks.spawn(async move {
            // The active candidate connects from any port of its IP; a
            // listener's address from its own port (a STUN request).
            let from = match from_listener {
                true => t.source,
                false => SocketAddr::new(t.source.ip(), 0),
            };
            match connect(from, t.destination).await {
                Ok(stream) => run_connection(stream, key, rx, conns, inbound, stun).await,
                Err(e) => {
                    tracing::debug!("ICE-TCP: cannot connect to {}: {e}", t.destination);
                    // A later check tries again.
                    forget(&conns, key);
                }
            }
        });
    }
}

/// A listener on `ip` whose port no UDP host socket has.
fn listen(ip: IpAddr, udp: &[SocketAddr]) -> io::Result<TcpListener> {
    let mut last = None;
    for _ in 0..4 {
        let socket = socket(ip)?;
        socket.bind(SocketAddr::new(ip, 0))?;
        let port = socket.local_addr()?.port();
        if udp.iter().any(|u| u.ip() == ip && u.port() == port) {
            last = Some(socket);
            continue;
        }
        return socket.listen(16);
    }
    // Four draws on one port: take it, the destination still tells apart.
    match last {
        Some(s) => s.listen(16),
        None => Err(io::Error::other("no port")),
    }
}

/// A TCP socket of `ip`'s family that another may bind beside (the
/// listener and the connection to a STUN server from its port).
fn socket(ip: IpAddr) -> io::Result<TcpSocket> {
    let socket = match ip {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    socket.set_reuseport(true)?;
    Ok(socket)
}

async fn connect(from: SocketAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = socket(from.ip())?;
    socket.bind(from)?;
    tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(to))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
}

async fn accept_loop(
    l: TcpListener,
    local: SocketAddr,
    conns: Conns,
    inbound: mpsc::Sender<Inbound>,
) {
    let mut tasks = JoinSet::new();
    loop {
        let (stream, remote) = match l.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("ICE-TCP accept on {local}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Reap the finished ones.
        while tasks.try_join_next().is_some() {}
        let key = (local, remote);
        let (tx, rx) = mpsc::channel(QUEUE);
        {
            let mut c = conns.lock().unwrap_or_else(PoisonError::into_inner);
            if c.len() >= MAX_CONNECTIONS || c.contains_key(&key) {
                tracing::debug!("ICE-TCP: refused a connection from {remote}");
                continue;
            }
            c.insert(key, tx);
        }
        tracing::debug!("ICE-TCP: {remote} connected to {local}");
        tasks.spawn(run_connection(
            stream,
            key,
            rx,
            conns.clone(),
            inbound.clone(),
            false,
        ));
    }
}

/// Carries one connection until either end closes it; `stun`: one to a
/// STUN server (plain STUN framing).
async fn run_connection(
    stream: TcpStream,
    key: (SocketAddr, SocketAddr),
    rx: mpsc::Receiver<Vec<u8>>,
    conns: Conns,
    inbound: mpsc::Sender<Inbound>,
    stun: bool,
) {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    tokio::select! {
        () = read_packets(r, key, inbound, stun) => {}
        () = write_frames(w, rx) => {}
    }
    forget(&conns, key);
}

fn forget(conns: &Conns, key: (SocketAddr, SocketAddr)) {
    conns
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&key);
}

/// The packets of a byte stream: RFC 4571 frames, or STUN messages.
enum Packets {
    Rfc4571(Deframer),
    Stun(p2p_stun::StreamFramer),
}

impl Packets {
    /// Take `data` in; false when the stream cannot be framed any more.
    fn push(&mut self, data: &[u8]) -> bool {
        match self {
            Packets::Rfc4571(d) => d.push(data).is_ok(),
            Packets::Stun(f) => {
                f.push(data);
                true
            }
        }
    }

    /// The next whole packet; `Err` when the stream is not STUN.
    fn next(&mut self) -> Result<Option<Vec<u8>>, ()> {
        match self {
            Packets::Rfc4571(d) => Ok(d.next_packet()),
            Packets::Stun(f) => match f.next_frame() {
                Ok(p) => Ok(p.map(<[u8]>::to_vec)),
                Err(_) => Err(()),
            },
        }
    }
}

async fn read_packets(
    mut r: impl AsyncRead + Unpin,
    (local, remote): (SocketAddr, SocketAddr),
    inbound: mpsc::Sender<Inbound>,
    stun: bool,
) {
    let mut packets = match stun {
        true => Packets::Stun(p2p_stun::StreamFramer::new(p2p_stun::MAX_FRAME)),
        false => Packets::Rfc4571(Deframer::new()),
    };
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !packets.push(buf.get(..n).unwrap_or_default()) {
            return;
        }
        loop {
            let bytes = match packets.next() {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(()) => return,
            };
            let msg = Inbound::one(Transport::Tcp, local, remote, bytes);
            if inbound.send(msg).await.is_err() {
                return;
            }
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
