//! A TURN client run (`p2p turn`): allocate, create a permission, optionally
//! bind a channel, relay a few datagrams to a UDP echo peer and time their
//! round trips, then delete the allocation. With `tcp_relay` (RFC 6062), the
//! allocation is a TCP relayed address: Connect to a TCP echo peer, bind a
//! second connection to it (ConnectionBind), and time echoes of raw bytes. The protocol is
//! `p2p_turn::TurnClient`; this module is the small tokio loop around it
//! (UDP, or TCP framed by `p2p_stun::StreamFramer`).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_stun::{next_frame_len, StreamFramer};
use p2p_turn::{ClientConfig, ClientEvent, ClientOutput, Datagram, Machine, Transport, TurnClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// What to do.
#[derive(Debug, Clone)]
pub struct TurnOptions {
    /// The TURN server.
    pub server: SocketAddr,
    /// Long-term username.
    pub username: String,
    /// Long-term password.
    pub password: String,
    /// The UDP peer that echoes what it gets.
    pub peer: SocketAddr,
    /// Reach the server over TCP instead of UDP.
    pub tcp: bool,
    /// RFC 6062: a TCP relayed address, and a TCP connection to `peer` (a
    /// TCP echo peer) through it. Implies `tcp`.
    pub tcp_relay: bool,
    /// How many datagrams to relay.
    pub count: u32,
    /// Bind a channel and send ChannelData (Send indications otherwise).
    pub channel: bool,
    /// Bytes per datagram (at least 16).
    pub size: usize,
    /// How long each step (allocation, permission, channel, each echo) may take.
    pub timeout: Duration,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TurnReport {
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// XOR-RELAYED-ADDRESS.
    pub relayed: SocketAddr,
    /// XOR-MAPPED-ADDRESS: this client as the server sees it.
    pub mapped: Option<SocketAddr>,
    /// The allocation's lifetime, seconds.
    pub lifetime_secs: u64,
    /// The peer.
    pub peer: SocketAddr,
    /// The channel number, when one was bound.
    pub channel: Option<u16>,
    /// The RFC 6062 CONNECTION-ID, for a TCP relay.
    pub connection_id: Option<u32>,
    /// Datagrams sent to the peer.
    pub sent: u32,
    /// Datagrams that came back intact.
    pub echoed: u32,
    /// Round-trip times, milliseconds: min, average, max (0 when none came back).
    pub rtt_min_ms: f64,
    /// Average round trip.
    pub rtt_avg_ms: f64,
    /// Longest round trip.
    pub rtt_max_ms: f64,
    /// Whether the allocation was deleted at the end.
    pub deleted: bool,
}

/// An error code of a request about a peer, in words.
fn why(code: Option<u16>) -> &'static str {
    code.map_or("no answer", p2p_turn::refusal_reason)
}

/// What an Allocate's error code means and what to do, after a colon
/// (nothing for codes without more to say).
fn allocation_hint(code: Option<u16>) -> String {
    match code {
        Some(401) => ": the server knows no such user, or the password differs: check --user NAME:PASSWORD against the server's users (p2p serve --user, turn.users); with REST credentials (--auth-secret) the name is EXPIRY:NAME and the password is derived from the secret".to_owned(),
        Some(c @ (437 | 438 | 441 | 486 | 508)) => format!(": {}", p2p_turn::refusal_reason(c)),
        _ => String::new(),
    }
}

/// Why the run stopped.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// Socket trouble.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server refused the allocation.
    #[error("allocation failed: {reason}{}{}", code.map_or(String::new(), |c| format!(" (error {c})")), allocation_hint(*code))]
    Allocation {
        /// The STUN error code, `None` when the server never answered.
        code: Option<u16>,
        /// The reason.
        reason: String,
    },
    /// The server refused the permission (403: the peer is not allowed).
    #[error("CreatePermission for {peer} failed: {}", why(*code))]
    Permission {
        /// The peer.
        peer: SocketAddr,
        /// The STUN error code.
        code: Option<u16>,
    },
    /// The server could not connect to the peer (RFC 6062: 446 already
    /// connected, 447 unreachable), or refused the ConnectionBind.
    #[error("TCP relay to {peer} failed: {}", why(*code))]
    TcpRelay {
        /// The peer.
        peer: SocketAddr,
        /// The STUN error code.
        code: Option<u16>,
    },
    /// The server refused the channel binding.
    #[error("ChannelBind for {peer} failed: {}", why(*code))]
    Channel {
        /// The peer.
        peer: SocketAddr,
        /// The STUN error code.
        code: Option<u16>,
    },
    /// A step did not finish in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The client refused a command (a bug or an odd server).
    #[error("{0}")]
    Client(#[from] p2p_turn::ClientError),
    /// The stream to the server broke framing.
    #[error("stream framing: {0}")]
    Framing(String),
}

enum Link {
    Udp(UdpSocket),
    Tcp {
        stream: TcpStream,
        framer: StreamFramer,
    },
}

struct Driver {
    client: TurnClient,
    link: Link,
    server: SocketAddr,
    local: SocketAddr,
    transport: Transport,
    rx: Vec<u8>,
    /// Events the client handed out, not yet looked at.
    events: VecDeque<ClientEvent>,
}

impl Driver {
    /// Send the client's transmits on the link; keep its events. Transmits
    /// from another local address (an RFC 6062 data connection's) are
    /// returned.
    async fn flush(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let mut other = Vec::new();
        while let Some(o) = self.client.poll_output() {
            let t = match o {
                ClientOutput::Transmit(t) => t,
                ClientOutput::Event(e) => {
                    self.events.push_back(e);
                    continue;
                }
                _ => continue,
            };
            if t.source != self.local {
                other.push(t.contents);
                continue;
            }
            match &mut self.link {
                Link::Udp(s) => {
                    s.send_to(&t.contents, t.destination).await?;
                }
                Link::Tcp { stream, .. } => stream.write_all(&t.contents).await?,
            }
        }
        Ok(other)
    }

    /// Drive the client until `pick` takes an event, or `deadline`.
    async fn until<R>(
        &mut self,
        deadline: Instant,
        what: &'static str,
        mut pick: impl FnMut(ClientEvent) -> Option<R>,
    ) -> Result<R, TurnError> {
        loop {
            self.flush().await?;
            while let Some(e) = self.events.pop_front() {
                if let Some(r) = pick(e) {
                    return Ok(r);
                }
            }
            let wake = self
                .client
                .poll_timeout()
                .map_or(deadline, |t| t.min(deadline));
            let got = tokio::select! {
                r = recv(&mut self.link, &mut self.rx) => Some(r?),
                () = tokio::time::sleep_until(wake.into()) => None,
            };
            let now = Instant::now();
            match got {
                Some(frames) => {
                    for bytes in &frames {
                        let d = Datagram::new(self.transport, self.server, self.local, bytes);
                        let _ = self.client.handle_input(now, d);
                    }
                }
                None => {
                    if now >= deadline {
                        return Err(TurnError::Timeout(what));
                    }
                    self.client.handle_timeout(now);
                }
            }
        }
    }
}

/// Read what arrived: whole messages (one datagram, or the frames a stream
/// read completed).
async fn recv(link: &mut Link, rx: &mut [u8]) -> Result<Vec<Vec<u8>>, TurnError> {
    match link {
        Link::Udp(s) => {
            let (n, _) = s.recv_from(rx).await?;
            Ok(vec![rx[..n].to_vec()])
        }
        Link::Tcp { stream, framer } => {
            let n = stream.read(framer.read_buf()).await?;
            if n == 0 {
                return Err(TurnError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            framer.filled(n);
            let mut frames = Vec::new();
            loop {
                match framer.next_frame() {
                    Ok(Some(f)) => frames.push(f.to_vec()),
                    Ok(None) => break,
                    Err(e) => return Err(TurnError::Framing(e.to_string())),
                }
            }
            Ok(frames)
        }
    }
}

/// A UDP echo peer on `bind` (for `--echo-peer`): sends every datagram back
/// to its sender until the task is dropped or aborted.
pub async fn echo_peer(bind: SocketAddr) -> io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let sock = UdpSocket::bind(bind).await?;
    let addr = sock.local_addr()?;
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    Ok((addr, task))
}

fn payload(seq: u32, size: usize) -> Vec<u8> {
    let mut p = format!("p2p-turn {seq:08} ").into_bytes();
    let mut i = 0u8;
    while p.len() < size.max(16) {
        p.push(b'a' + i % 26);
        i = i.wrapping_add(1);
    }
    p
}

/// Run the whole exchange against the server.
pub async fn run(opts: &TurnOptions) -> Result<TurnReport, TurnError> {
    let (link, local, transport) = if opts.tcp || opts.tcp_relay {
        let stream = tokio::time::timeout(opts.timeout, TcpStream::connect(opts.server))
            .await
            .map_err(|_| TurnError::Timeout("the TCP connection"))??;
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr()?;
        let link = Link::Tcp {
            stream,
            framer: StreamFramer::new(p2p_stun::MAX_FRAME),
        };
        (link, local, Transport::Tcp)
    } else {
        let any: SocketAddr = if opts.server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let sock = UdpSocket::bind(any).await?;
        // Connected: the route's source address makes the client's idea of
        // its own address concrete, and only the server is heard.
        sock.connect(opts.server).await?;
        let local = sock.local_addr()?;
        (Link::Udp(sock), local, Transport::Udp)
    };
    let mut cfg = ClientConfig::new(local, opts.server, &opts.username, &opts.password);
    cfg.transport = transport;
    cfg.software = Some(concat!("p2p ", env!("CARGO_PKG_VERSION")).to_owned());
    if opts.tcp_relay {
        cfg.requested_transport = p2p_stun::attr::PROTO_TCP;
    }
    let mut d = Driver {
        client: TurnClient::new(cfg),
        link,
        server: opts.server,
        local,
        transport,
        rx: vec![0u8; 65536],
        events: VecDeque::new(),
    };
    let step = || Instant::now() + opts.timeout;

    // The client starts allocating at its first handle_timeout.
    d.client.handle_timeout(Instant::now());
    let (relayed, mapped, lifetime) = d
        .until(step(), "the allocation", |e| match e {
            ClientEvent::Allocated {
                relayed,
                mapped,
                lifetime,
                ..
            } => Some(Ok((relayed, mapped, lifetime))),
            ClientEvent::AllocationFailed { code, reason } => {
                Some(Err(TurnError::Allocation { code, reason }))
            }
            _ => None,
        })
        .await??;
    let relayed = relayed.first().copied().ok_or(TurnError::Allocation {
        code: None,
        reason: "no relayed address".into(),
    })?;

    let peer = opts.peer;
    // Whatever happens next, the allocation is deleted before returning.
    let result = exchange(&mut d, opts).await;
    let deleted = match d.client.close(Instant::now()) {
        Ok(()) => d
            .until(
                Instant::now() + opts.timeout.min(Duration::from_secs(3)),
                "the deletion",
                |e| matches!(e, ClientEvent::Deleted).then_some(()),
            )
            .await
            .is_ok(),
        Err(_) => false,
    };
    let Exchanged {
        channel,
        connection_id,
        sent,
        rtts,
    } = result?;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (min, max, avg) = if rtts.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        let sum: Duration = rtts.iter().sum();
        (
            ms(*rtts.iter().min().unwrap_or(&Duration::ZERO)),
            ms(*rtts.iter().max().unwrap_or(&Duration::ZERO)),
            ms(sum) / rtts.len() as f64,
        )
    };
    Ok(TurnReport {
        transport: if opts.tcp || opts.tcp_relay {
            "tcp"
        } else {
            "udp"
        },
        relayed,
        mapped,
        lifetime_secs: lifetime.as_secs(),
        peer,
        channel,
        connection_id,
        sent,
        echoed: rtts.len() as u32,
        rtt_min_ms: min,
        rtt_avg_ms: avg,
        rtt_max_ms: max,
        deleted,
    })
}

/// What the exchange did.
struct Exchanged {
    channel: Option<u16>,
    connection_id: Option<u32>,
    sent: u32,
    rtts: Vec<Duration>,
}

/// Permission, channel (or RFC 6062 connection), then the echoes.
async fn exchange(d: &mut Driver, opts: &TurnOptions) -> Result<Exchanged, TurnError> {
    let peer = opts.peer;
    let step = || Instant::now() + opts.timeout;
    d.client.create_permission(Instant::now(), &[peer.ip()])?;
    d.until(step(), "the permission", |e| match e {
        ClientEvent::PermissionCreated { .. } => Some(Ok(())),
        ClientEvent::PermissionFailed { code, .. } => {
            Some(Err(TurnError::Permission { peer, code }))
        }
        _ => None,
    })
    .await??;

    if opts.tcp_relay {
        return tcp_exchange(d, opts).await;
    }
    let mut channel = None;
    if opts.channel {
        let n = d.client.bind_channel(Instant::now(), peer)?;
        d.until(step(), "the channel binding", |e| match e {
            ClientEvent::ChannelBound { .. } => Some(Ok(())),
            ClientEvent::ChannelBindFailed { code, .. } => {
                Some(Err(TurnError::Channel { peer, code }))
            }
            _ => None,
        })
        .await??;
        channel = Some(n);
    }

    let mut rtts = Vec::new();
    let mut sent = 0;
    for seq in 0..opts.count {
        let data = payload(seq, opts.size);
        let t0 = Instant::now();
        d.client.send_to(peer, &data)?;
        sent += 1;
        let r = d
            .until(step(), "an echo", |e| match e {
                ClientEvent::Data { peer: p, data: got } if p == peer && got == data => Some(()),
                _ => None,
            })
            .await;
        match r {
            Ok(()) => rtts.push(t0.elapsed()),
            Err(TurnError::Timeout(_)) => {}
            Err(e) => return Err(e),
        }
    }

    Ok(Exchanged {
        channel,
        connection_id: None,
        sent,
        rtts,
    })
}

/// RFC 6062: Connect to the peer, bind a new connection to it, then echo
/// raw bytes over it.
async fn tcp_exchange(d: &mut Driver, opts: &TurnOptions) -> Result<Exchanged, TurnError> {
    let peer = opts.peer;
    let step = || Instant::now() + opts.timeout;
    d.client.connect(Instant::now(), peer)?;
    let id = d
        .until(step(), "the Connect", |e| match e {
            ClientEvent::PeerConnected {
                peer: p,
                connection_id,
            } if p == peer => Some(Ok(connection_id)),
            ClientEvent::ConnectFailed { code, .. } => {
                Some(Err(TurnError::TcpRelay { peer, code }))
            }
            _ => None,
        })
        .await??;
    let mut data = tokio::time::timeout(opts.timeout, TcpStream::connect(opts.server))
        .await
        .map_err(|_| TurnError::Timeout("the data connection"))??;
    let _ = data.set_nodelay(true);
    let data_local = data.local_addr()?;
    // The ConnectionBind goes out from the data connection.
    d.client.connection_bind(Instant::now(), id, data_local)?;
    for bind in d.flush().await? {
        data.write_all(&bind).await?;
    }
    // The answer, then raw bytes: read exactly one STUN message.
    let mut head = [0u8; 20];
    tokio::time::timeout(opts.timeout, data.read_exact(&mut head))
        .await
        .map_err(|_| TurnError::Timeout("the ConnectionBind answer"))??;
    let len = match next_frame_len(&head) {
        Ok(Some(len)) if len >= head.len() => len,
        _ => return Err(TurnError::Framing("not a ConnectionBind answer".into())),
    };
    let mut answer = head.to_vec();
    answer.resize(len, 0);
    tokio::time::timeout(opts.timeout, data.read_exact(&mut answer[20..]))
        .await
        .map_err(|_| TurnError::Timeout("the ConnectionBind answer"))??;
    let answered = Datagram::new(Transport::Tcp, opts.server, data_local, &answer);
    if !d.client.handle_input(Instant::now(), answered).is_taken() {
        return Err(TurnError::Framing("not a ConnectionBind answer".into()));
    }
    d.until(step(), "the ConnectionBind", |e| match e {
        ClientEvent::ConnectionBound { connection_id, .. } if connection_id == id => Some(Ok(())),
        ClientEvent::ConnectionBindFailed {
            connection_id,
            code,
            ..
        } if connection_id == id => Some(Err(TurnError::TcpRelay { peer, code })),
        _ => None,
    })
    .await??;
    let mut rtts = Vec::new();
    let mut sent = 0;
    let mut back = vec![0u8; opts.size.max(16)];
    for seq in 0..opts.count {
        let bytes = payload(seq, opts.size);
        let t0 = Instant::now();
        data.write_all(&bytes).await?;
        sent += 1;
        let got = &mut back[..bytes.len()];
        match tokio::time::timeout(opts.timeout, data.read_exact(got)).await {
            Ok(Ok(_)) if *got == bytes[..] => rtts.push(t0.elapsed()),
            Ok(Ok(_)) => return Err(TurnError::Framing("the echo differs".into())),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(TurnError::Timeout("an echo")),
        }
    }
    Ok(Exchanged {
        channel: None,
        connection_id: Some(id),
        sent,
        rtts,
    })
}

/// A TCP echo peer on `bind` (for `--echo-peer` with `--tcp-relay`): every
/// connection gets back what it sends, until the task is aborted.
pub async fn tcp_echo_peer(
    bind: SocketAddr,
) -> io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let l = tokio::net::TcpListener::bind(bind).await?;
    let addr = l.local_addr()?;
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut s, _)) = l.accept().await {
            conns.spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok((addr, task))
}

/// The report as the command prints it.
pub fn render(r: &TurnReport) -> String {
    let mut s = String::new();
    s += &format!("transport:        {}\n", r.transport);
    s += &format!("relayed address:  {}\n", r.relayed);
    s += &format!(
        "mapped address:   {}\n",
        r.mapped.map_or("(none)".to_owned(), |m| m.to_string())
    );
    s += &format!("lifetime:         {} s\n", r.lifetime_secs);
    s += &format!("peer:             {}\n", r.peer);
    s += &format!(
        "data path:        {}\n",
        match (r.channel, r.connection_id) {
            (Some(n), _) => format!("ChannelData (channel 0x{n:04x})"),
            (None, Some(id)) => format!("TCP relay, RFC 6062 (connection {id})"),
            (None, None) => "Send/Data indications".to_owned(),
        }
    );
    s += &format!("sent:             {}\n", r.sent);
    s += &format!("echoed:           {}\n", r.echoed);
    s += &format!(
        "rtt:              min {:.3} ms, avg {:.3} ms, max {:.3} ms\n",
        r.rtt_min_ms, r.rtt_avg_ms, r.rtt_max_ms
    );
    s += &format!(
        "deleted:          {}\n",
        if r.deleted { "yes" } else { "no" }
    );
    s
}
