//! Binding the sockets and running the workers until shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::counters::{CounterSnapshot, Counters};
use crate::reload::Reloader;
use crate::responder::Ctx;
use crate::stream::{accept_loop, addr_limits, Admission, StreamShared};
use crate::udp::{self, Worker};

/// Why the server could not start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A socket could not be bound.
    #[error("cannot bind {transport} {addr}: {source}")]
    Bind {
        /// `udp`, `tcp`, `tls`, `signaling`, `metrics` or `relay` (a TURN
        /// relay IP, tried at start).
        transport: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// The certificate or key could not be loaded.
    #[error("tls: {0}")]
    Tls(String),
    /// The cluster's store (Redis) is unreachable or its URL is wrong.
    #[error("cluster: {0}")]
    Cluster(String),
    /// A reload could not be applied.
    #[error("reload: {0}")]
    Reload(String),
}

/// The addresses the server actually bound (ports resolved when 0 was asked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocalAddrs {
    /// UDP addresses, the primary first; with RFC 5780 the four combinations
    /// in the order primary, primary IP + alternate port, alternate IP +
    /// primary port, alternate.
    pub udp: Vec<SocketAddr>,
    /// TCP addresses.
    pub tcp: Vec<SocketAddr>,
    /// TLS addresses.
    pub tls: Vec<SocketAddr>,
    /// The RFC 5780 alternate address (alternate IP and port), if any.
    pub alternate: Option<SocketAddr>,
    /// The signaling WebSocket and browser page (TCP), if served: the
    /// first address of [`LocalAddrs::signaling_all`].
    pub signaling: Option<SocketAddr>,
    /// Every address the signaling WebSocket and page are served on (one
    /// per `signaling.listen` entry, in its order).
    pub signaling_all: Vec<SocketAddr>,
    /// The Prometheus metrics endpoint (HTTP), if served.
    pub metrics: Option<SocketAddr>,
}

/// A bound STUN server; [`Server::run`] serves until shutdown.
///
/// ```no_run
/// # async fn f() -> Result<(), p2p_server::ServerError> {
/// let server = p2p_server::Server::bind(&p2p_server::Config::default()).await?;
/// println!("listening on {:?}", server.local_addrs());
/// let counters = server.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
/// println!("{counters}");
/// # Ok(()) }
/// ```
pub struct Server {
    ctx: Arc<Ctx>,
    counters: Counters,
    addrs: LocalAddrs,
    /// Per worker: its UDP sockets as (read address, every sibling).
    udp: Vec<Vec<(SocketAddr, Arc<UdpSocket>)>>,
    tcp: Vec<TcpListener>,
    tls: Vec<TcpListener>,
    acceptor: Option<TlsAcceptor>,
    stream: StreamSharedParts,
    signaling: Option<crate::signaling::Signaling>,
    turn: Option<crate::turn::TurnSetup>,
    /// This node's TURN fleet view, on a node of a cluster.
    fleet: Option<Arc<crate::cluster::Fleet>>,
    /// This node's cluster counters, on a node of a cluster.
    cluster: Option<crate::cluster::ClusterMetrics>,
    /// Keeps a TURN-only node (no signaling) in its cluster until the
    /// server stops.
    turn_only: Option<tokio::sync::mpsc::Sender<p2p_signaling::ClusterOp>>,
    metrics: Option<TcpListener>,
    reloader: Reloader,
}

struct StreamSharedParts {
    idle: Duration,
    limits: p2p_signaling::AddrLimits,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, ServerError> {
    udp::bind(addr).map_err(|source| ServerError::Bind {
        transport: "udp",
        addr,
        source,
    })
}

fn local(s: &UdpSocket, asked: SocketAddr) -> SocketAddr {
    s.local_addr().unwrap_or(asked)
}

/// Bind the four RFC 5780 sockets; ports of 0 are resolved so that all four
/// combinations are free.
fn bind_quad(primary: SocketAddr, alt: SocketAddr) -> Result<[UdpSocket; 4], ServerError> {
    let mut last = None;
    for _ in 0..16 {
        let pp = bind_udp(primary)?;
        let p = local(&pp, primary);
        let aa = match bind_udp(alt) {
            Ok(s) => s,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let a = local(&aa, alt);
        if a.port() == p.port() {
            continue;
        }
        let pa = bind_udp(SocketAddr::new(p.ip(), a.port()));
        let ap = bind_udp(SocketAddr::new(a.ip(), p.port()));
        match (pa, ap) {
            (Ok(pa), Ok(ap)) => return Ok([pp, pa, ap, aa]),
            (Err(e), _) | (_, Err(e)) => {
                if primary.port() != 0 && alt.port() != 0 {
                    return Err(e);
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(ServerError::Bind {
        transport: "udp",
        addr: alt,
        source: io::ErrorKind::AddrInUse.into(),
    }))
}

/// The STUN listening sockets: per worker its UDP sockets, and the TCP
/// listeners on the same ports.
struct StunPorts {
    udp: Vec<Vec<(SocketAddr, Arc<UdpSocket>)>>,
    udp_addrs: Vec<SocketAddr>,
    tcp: Vec<TcpListener>,
    tcp_addrs: Vec<SocketAddr>,
    /// The RFC 5780 primary and alternate addresses.
    alternate: Option<(SocketAddr, SocketAddr)>,
}

/// Bind the STUN ports. A listen port of 0 is resolved by the UDP bind and
/// TCP then binds the same port; when another socket (an outgoing TCP
/// connection, say) already holds that port for TCP, every socket is
/// dropped and the ports are chosen again, a bounded number of times.
///
/// Only the daemon's own workers share a UDP port (SO_REUSEPORT): every
/// address with a port of its own is probed first, and a port another
/// program holds stops the start (`AddrInUse`).
fn bind_stun_ports(config: &Config, workers: usize) -> Result<StunPorts, ServerError> {
    let s = &config.stun;
    if s.udp {
        let mut fixed: Vec<SocketAddr> = s.listen.clone();
        if let Some(alt) = s.alt_listen {
            let primary = s.listen[0];
            fixed.push(alt);
            if alt.port() != 0 && primary.port() != 0 {
                fixed.push(SocketAddr::new(primary.ip(), alt.port()));
                fixed.push(SocketAddr::new(alt.ip(), primary.port()));
            }
        }
        for addr in fixed {
            udp::probe_unshared(addr).map_err(|source| ServerError::Bind {
                transport: "udp",
                addr,
                source,
            })?;
        }
    }
    let chosen = s.listen.iter().chain(&s.alt_listen).any(|a| a.port() == 0);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_bind_stun_ports(config, workers) {
            Err(ServerError::Bind { source, .. })
                if chosen && attempt < 16 && source.kind() == io::ErrorKind::AddrInUse => {}
            other => return other,
        }
    }
}

fn try_bind_stun_ports(config: &Config, workers: usize) -> Result<StunPorts, ServerError> {
    let s = &config.stun;
    let mut ports = StunPorts {
        udp: Vec::new(),
        udp_addrs: Vec::new(),
        tcp: Vec::new(),
        tcp_addrs: Vec::new(),
        alternate: None,
    };
    // What each listen entry resolved to: TCP binds the same ports.
    let mut resolved = s.listen.clone();
    if s.udp {
        let mut first: Vec<(SocketAddr, Arc<UdpSocket>)> = Vec::new();
        let mut rest = 0;
        if let Some(alt) = s.alt_listen {
            for q in bind_quad(s.listen[0], alt)? {
                first.push((local(&q, alt), Arc::new(q)));
            }
            ports.alternate = Some((first[0].0, first[3].0));
            resolved[0] = first[0].0;
            rest = 1;
        }
        for (k, l) in s.listen.iter().enumerate().skip(rest) {
            let sock = bind_udp(*l)?;
            resolved[k] = local(&sock, *l);
            first.push((resolved[k], Arc::new(sock)));
        }
        ports.udp_addrs = first.iter().map(|(a, _)| *a).collect();
        ports.udp.push(first);
        for _ in 1..workers {
            let group = ports
                .udp_addrs
                .iter()
                .map(|a| Ok((*a, Arc::new(bind_udp(*a)?))))
                .collect::<Result<Vec<_>, ServerError>>()?;
            ports.udp.push(group);
        }
    }
    if s.tcp {
        for l in &resolved {
            let tl = bind_tcp(*l, "tcp")?;
            ports.tcp_addrs.push(tl.local_addr().unwrap_or(*l));
            ports.tcp.push(tl);
        }
    }
    Ok(ports)
}

impl Server {
    /// Bind every socket the configuration asks for. Must be called inside a
    /// tokio runtime.
    pub async fn bind(config: &Config) -> Result<Server, ServerError> {
        config.validate()?;
        let s = &config.stun;
        let workers = s.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let mut ctx = Ctx::new(&s.software, s.max_padding);
        let mut addrs = LocalAddrs::default();
        let ports = bind_stun_ports(config, workers)?;
        if let Some((primary, alternate)) = ports.alternate {
            ctx = ctx.with_alternate(primary, alternate);
            addrs.alternate = Some(alternate);
        }
        let (udp, tcp) = (ports.udp, ports.tcp);
        addrs.udp = ports.udp_addrs;
        addrs.tcp = ports.tcp_addrs;
        let mut acceptor = None;
        let mut cert_slot = None;
        let mut tls = Vec::new();
        if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
            let files = crate::tls::CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            };
            let (a, slot) = crate::tls::acceptor(&files)?;
            acceptor = Some(a);
            cert_slot = Some(slot);
            for l in config.tls_listen() {
                let tl = bind_tcp(l, "tls")?;
                addrs.tls.push(tl.local_addr().unwrap_or(l));
                tls.push(tl);
            }
        }
        let mut turn = crate::turn::prepare(config, &addrs.udp)?;
        let metrics = match config.metrics.listen {
            Some(l) => {
                let m = bind_tcp(l, "metrics")?;
                addrs.metrics = Some(m.local_addr().unwrap_or(l));
                Some(m)
            }
            None => None,
        };
        let member = crate::cluster::prepare(config, &addrs.udp, &addrs.tls);
        let signaling = crate::signaling::bind(config, &addrs, member.as_ref()).await?;
        // Without signaling, a node of a cluster is a TURN node of the fleet.
        let turn_only = match (&signaling, &turn) {
            (None, Some(_)) => crate::cluster::join_turn_only(config, member.as_ref())
                .await
                .map_err(ServerError::Cluster)?,
            _ => None,
        };
        // A node's store runs with its signaling or as a TURN node.
        let cluster = member
            .as_ref()
            .filter(|_| signaling.is_some() || turn_only.is_some())
            .map(crate::cluster::Membership::metrics);
        let fleet = member.and_then(|m| m.fleet);
        addrs.signaling_all = signaling
            .as_ref()
            .map(|s| s.local_addrs())
            .unwrap_or_default();
        addrs.signaling = addrs.signaling_all.first().copied();
        if let Some(t) = turn.as_mut() {
            let bound = addrs.tcp.iter().chain(&addrs.tls).copied();
            let bound = bound
                .chain(addrs.metrics)
                .chain(addrs.signaling_all.clone());
            t.add_service_addresses(bound);
        }
        let reloader = Reloader::new(
            config,
            addrs.clone(),
            cert_slot,
            signaling.as_ref().map(|s| s.reloadable()),
        );
        Ok(Server {
            reloader,
            signaling,
            turn,
            fleet,
            cluster,
            turn_only,
            metrics,
            ctx: Arc::new(ctx),
            counters: Counters::new(workers + 1),
            addrs,
            udp,
            tcp,
            tls,
            acceptor,
            stream: StreamSharedParts {
                idle: Duration::from_secs(s.tcp_idle_timeout_secs.max(1)),
                limits: addr_limits(s),
            },
        })
    }
}

/// A TCP listener on `addr`; an IPv6 one is IPv6-only, so that `0.0.0.0`
/// and `[::]` on one port are two listeners, each of its family.
pub(crate) fn bind_tcp(
    addr: SocketAddr,
    transport: &'static str,
) -> Result<TcpListener, ServerError> {
    let err = |source| ServerError::Bind {
        transport,
        addr,
        source,
    };
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    if addr.is_ipv6() {
        s.set_only_v6(true).map_err(err)?;
    }
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    s.listen(1024).map_err(err)?;
    TcpListener::from_std(s.into()).map_err(err)
}

impl Server {
    /// The addresses actually bound.
    pub fn local_addrs(&self) -> &LocalAddrs {
        &self.addrs
    }

    /// What reloads this server's certificates, TURN credentials, peer
    /// rules and handed-out ICE servers while it runs (SIGHUP in `p2p
    /// serve`); take it before [`Server::run`].
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The live counters (keep a clone to watch them while the server runs).
    pub fn counters(&self) -> Counters {
        self.counters.clone()
    }

    /// A line saying whether TURN is served and how (for the startup banner).
    pub fn turn_summary(&self) -> String {
        match &self.turn {
            Some(t) => t.summary().to_owned(),
            None => "TURN disabled (needs turn.realm and a user or turn.auth_secret): STUN only"
                .to_owned(),
        }
    }

    /// Serve until `shutdown` completes, then stop every worker and
    /// connection and return the final counters.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> CounterSnapshot {
        let mut tasks = JoinSet::new();
        let turn_idle = self.turn.as_ref().map(|t| t.stream_idle());
        let turn_service = self.turn.map(|setup| {
            let listening = self
                .udp
                .first()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect();
            setup.start(listening, self.fleet.as_ref().map(|f| f.ring.clone()))
        });
        let turn = turn_service.as_ref().map(|t| t.handle().clone());
        if let (Some(fleet), Some(turn)) = (&self.fleet, &turn) {
            let every = Duration::from_millis(500);
            tokio::spawn(crate::cluster::run_local(
                fleet.clone(),
                turn.clone(),
                every,
            ));
        }
        if let Some(t) = &turn {
            self.reloader
                .set_turn(t.clone(), self.fleet.as_ref().map(|f| f.ring.clone()));
        }
        if let Some(m) = self.metrics {
            tasks.spawn(crate::metrics::serve(
                m,
                self.counters.clone(),
                turn.clone(),
                self.signaling.as_ref().map(|s| s.metrics()),
                self.cluster.clone(),
            ));
        }
        let groups = self.udp.len();
        for (w, sockets) in self.udp.iter().enumerate() {
            for (k, (addr, sock)) in sockets.iter().enumerate() {
                // The next worker's socket for the same address: this worker
                // also drains it when it has nothing of its own, which evens
                // out SO_REUSEPORT's per-flow hashing over few flows. Not
                // with TURN: two threads reading one socket would reorder a
                // client's relayed flow (STUN answers have no order).
                let neighbour = (groups > 1 && turn.is_none())
                    .then(|| self.udp[(w + 1) % groups].get(k))
                    .flatten()
                    .filter(|(a, _)| a == addr)
                    .map(|(_, s)| s.clone());
                let group = if self.ctx.resolve(*addr, Default::default()).is_some() {
                    sockets
                        .iter()
                        .filter(|(a, _)| self.ctx.resolve(*a, Default::default()).is_some())
                        .cloned()
                        .collect()
                } else {
                    Vec::new()
                };
                tasks.spawn(
                    Worker {
                        sock: sock.clone(),
                        neighbour,
                        local: *addr,
                        group,
                        ctx: self.ctx.clone(),
                        counters: self.counters.clone(),
                        shard: w + 1,
                        turn: turn.clone(),
                    }
                    .run(),
                );
            }
        }
        let shared = StreamShared {
            ctx: self.ctx.clone(),
            counters: self.counters.clone(),
            idle: self.stream.idle,
            admission: Admission::new(self.stream.limits, self.counters.clone()),
            turn: turn.clone().zip(turn_idle),
        };
        for l in self.tcp {
            tasks.spawn(accept_loop(l, None, shared.clone()));
        }
        if let Some(acceptor) = &self.acceptor {
            for l in self.tls {
                tasks.spawn(accept_loop(l, Some(acceptor.clone()), shared.clone()));
            }
        }
        let signaling = self.signaling.map(crate::signaling::Signaling::spawn);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(r) = tasks.join_next() => {
                    // Workers loop forever; one that ends has panicked.
                    tracing::error!("a server task ended: {r:?}");
                }
            }
        }
        if let Some(s) = signaling {
            s.stop().await;
        }
        // TURN first: its allocations end (and are logged) while the
        // workers still run.
        if let Some(mut t) = turn_service {
            t.stop().await;
        }
        // A TURN-only node leaves its cluster.
        drop(self.turn_only);
        tasks.shutdown().await;
        self.counters.snapshot()
    }
}
