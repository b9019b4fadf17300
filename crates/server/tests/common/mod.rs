//! Shared helpers of the daemon's TURN tests: a hand-driven
//! `p2p_turn::TurnClient` on a loopback socket, a UDP echo peer, a running
//! server and a metrics scrape. Every wait is bounded.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_server::{Config, Server};
use p2p_stun::next_frame_len;
use std::collections::VecDeque;

use p2p_turn::{ClientConfig, ClientEvent, ClientOutput, Datagram, Machine, Transport, TurnClient};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub const STEP: Duration = Duration::from_secs(5);
pub const BOUND: Duration = Duration::from_secs(30);

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub enum Link {
    Udp(UdpSocket),
    Stream(Box<dyn Stream>, Vec<u8>, usize),
}

/// A TURN client on a socket, driven by hand.
pub struct Client {
    pub turn: TurnClient,
    pub link: Link,
    pub server: SocketAddr,
    pub local: SocketAddr,
    pub transport: Transport,
    /// Events the last `until` skipped.
    pub seen: Vec<ClientEvent>,
    /// Events handed out by the client, not yet looked at.
    pub inbox: VecDeque<ClientEvent>,
}

impl Client {
    pub async fn udp(
        server: SocketAddr,
        user: &str,
        pass: &str,
        tweak: impl FnOnce(&mut ClientConfig),
    ) -> Client {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = s.local_addr().unwrap();
        let mut cfg = ClientConfig::new(local, server, user, pass);
        tweak(&mut cfg);
        Client {
            turn: TurnClient::new(cfg),
            link: Link::Udp(s),
            server,
            local,
            transport: Transport::Udp,
            seen: Vec::new(),
            inbox: VecDeque::new(),
        }
    }

    pub async fn stream(
        s: Box<dyn Stream>,
        local: SocketAddr,
        server: SocketAddr,
        transport: Transport,
        user: &str,
        pass: &str,
    ) -> Client {
        let mut cfg = ClientConfig::new(local, server, user, pass);
        cfg.transport = transport;
        Client {
            turn: TurnClient::new(cfg),
            link: Link::Stream(s, vec![0u8; 70_000], 0),
            server,
            local,
            transport,
            seen: Vec::new(),
            inbox: VecDeque::new(),
        }
    }

    pub async fn tcp(server: SocketAddr, user: &str, pass: &str) -> Client {
        let s = TcpStream::connect(server).await.unwrap();
        let local = s.local_addr().unwrap();
        Client::stream(Box::new(s), local, server, Transport::Tcp, user, pass).await
    }

    /// Send what the client hands out; keep its events in `inbox`.
    pub async fn flush(&mut self) {
        while let Some(o) = self.turn.poll_output() {
            let t = match o {
                ClientOutput::Transmit(t) => t,
                ClientOutput::Event(e) => {
                    self.inbox.push_back(e);
                    continue;
                }
                other => panic!("{other:?}"),
            };
            match &mut self.link {
                Link::Udp(s) => {
                    s.send_to(&t.contents, t.destination).await.unwrap();
                }
                Link::Stream(s, _, _) => s.write_all(&t.contents).await.unwrap(),
            }
        }
    }

    pub async fn recv(&mut self) -> Vec<Vec<u8>> {
        match &mut self.link {
            Link::Udp(s) => {
                let mut b = vec![0u8; 65536];
                let (n, _) = s.recv_from(&mut b).await.unwrap();
                b.truncate(n);
                vec![b]
            }
            Link::Stream(s, buf, filled) => {
                let n = s.read(&mut buf[*filled..]).await.unwrap();
                assert!(n > 0, "the server closed the connection");
                *filled += n;
                let mut out = Vec::new();
                let mut at = 0;
                while let Ok(Some(len)) = next_frame_len(&buf[at..*filled]) {
                    if at + len > *filled {
                        break;
                    }
                    out.push(buf[at..at + len].to_vec());
                    at += len;
                }
                buf.copy_within(at..*filled, 0);
                *filled -= at;
                out
            }
        }
    }

    /// Drive until `pick` takes an event (panics after `STEP`).
    pub async fn until<R>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&ClientEvent) -> Option<R>,
    ) -> R {
        let deadline = Instant::now() + STEP;
        loop {
            self.flush().await;
            while let Some(e) = self.inbox.pop_front() {
                if let Some(r) = pick(&e) {
                    return r;
                }
                self.seen.push(e);
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; saw {:?}",
                self.seen
            );
            let wake = self
                .turn
                .poll_timeout()
                .map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                frames = self.recv() => {
                    let now = Instant::now();
                    for f in frames {
                        let d = Datagram::new(self.transport, self.server, self.local, &f);
                        let _ = self.turn.handle_input(now, d);
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => self.turn.handle_timeout(Instant::now()),
            }
        }
    }

    /// Allocate; the relayed address, or the error code.
    pub async fn allocate(&mut self) -> Result<SocketAddr, Option<u16>> {
        self.turn.handle_timeout(Instant::now());
        self.until("the allocation", |e| match e {
            ClientEvent::Allocated { relayed, .. } => Some(Ok(relayed[0])),
            ClientEvent::AllocationFailed { code, .. } => Some(Err(*code)),
            _ => None,
        })
        .await
    }

    pub async fn permit(&mut self, peer: SocketAddr) -> Result<(), Option<u16>> {
        self.turn
            .create_permission(Instant::now(), &[peer.ip()])
            .unwrap();
        self.until("the permission", |e| match e {
            ClientEvent::PermissionCreated { .. } => Some(Ok(())),
            ClientEvent::PermissionFailed { code, .. } => Some(Err(*code)),
            _ => None,
        })
        .await
    }

    pub async fn bind(&mut self, peer: SocketAddr) -> u16 {
        let n = self.turn.bind_channel(Instant::now(), peer).unwrap();
        self.until("the channel", |e| match e {
            ClientEvent::ChannelBound { .. } => Some(()),
            ClientEvent::ChannelBindFailed { code, .. } => panic!("ChannelBind failed: {code:?}"),
            _ => None,
        })
        .await;
        n
    }

    pub async fn echo(&mut self, peer: SocketAddr, data: &[u8]) {
        self.turn.send_to(peer, data).unwrap();
        self.until("the echo", |e| match e {
            ClientEvent::Data { peer: p, data: d } if *p == peer && d == data => Some(()),
            _ => None,
        })
        .await;
    }

    pub async fn close(&mut self) {
        self.turn.close(Instant::now()).unwrap();
        self.until("the deletion", |e| {
            matches!(e, ClientEvent::Deleted).then_some(())
        })
        .await;
    }
}

/// A UDP echo on 127.0.0.1; it also reports the source of what it got.
pub async fn echo_peer() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<SocketAddr>) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut b = vec![0u8; 65536];
        while let Ok((n, from)) = s.recv_from(&mut b).await {
            let _ = tx.send(from);
            let _ = s.send_to(&b[..n], from).await;
        }
    });
    (addr, rx)
}

pub struct Running {
    pub udp: SocketAddr,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<p2p_server::CounterSnapshot>,
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(BOUND, self.task).await;
    }
}

pub async fn start(toml: &str) -> Running {
    let text = format!(
        "[stun]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\n[metrics]\nlisten = \"127.0.0.1:0\"\n{toml}"
    );
    start_cfg(Config::from_toml_str(&text).unwrap()).await
}

pub async fn start_cfg(cfg: Config) -> Running {
    let server = Server::bind(&cfg).await.unwrap();
    let a = server.local_addrs().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Running {
        udp: a.udp[0],
        tcp: a.tcp.first().copied(),
        tls: a.tls.first().copied(),
        metrics: a.metrics,
        stop: Some(stop),
        task,
    }
}

pub const OPEN: &str = "[turn]\nrealm = \"example.org\"\nallow_peer = [\"127.0.0.0/8\"]\n[turn.users]\nalice = \"secret\"\nbob = \"hunter2\"\n";

pub async fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    out
}

pub fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}
