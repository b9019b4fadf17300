//! [`TurnService`]: the TURN server (RFC 8656, RFC 6062) on tokio, bound to
//! sockets its user chooses. It is to [`p2p_turn::TurnServer`] what quinn's
//! `Endpoint` is to quinn-proto: it owns the sockets (the listening ones it
//! is given, the relayed ones the state machine asks for) and the time, and
//! drives the machine. `p2p serve` runs its TURN part on one.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use p2p_turn::{CredentialStore, ServerConfig, ServerEvent, TurnServer};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::counters::Counters;
use crate::fastpath::{FastPath, TrafficSnapshot};
use crate::responder::Ctx;
use crate::stream::{accept_loop, Admission, StreamShared};
use crate::udp::Worker;
use p2p_signaling::AddrLimits;

use super::relayed::RelayedSockets;
use super::send::SendBatch;
use super::task::{Credentials, TurnTask};
use super::{BufPool, TurnHandle, TurnStats};

/// Depth of the queue into the TURN task (packets beyond are dropped, as a
/// full socket buffer would).
const INBOUND_QUEUE: usize = 8192;
/// Default depth of the event queue to the embedding program.
const EVENT_QUEUE: usize = 4096;
/// How long a TCP connection may go without progress (see `stream::Deadlines`).
const STUN_IDLE: Duration = Duration::from_secs(30);
/// TCP connections served at once, at most.
const MAX_CONNECTIONS: usize = 4096;

/// Why a [`TurnService`] could not start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TurnServiceError {
    /// Neither a UDP socket nor a TCP listener was given.
    #[error("a TURN service needs a UDP socket or a TCP listener")]
    NoSocket,
    /// No credential store was given.
    #[error("a TURN service needs a credential store")]
    NoCredentials,
    /// No relay IP was given and no socket is bound to a specific IP.
    #[error("no relay IP: give one (relay_ip) when the sockets are bound to 0.0.0.0 or ::")]
    NoRelayIp,
    /// A socket's address could not be read.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

/// Settings of a [`TurnService`]: the sockets to serve on, the credentials,
/// the relayed addresses; every other setting of the state machine through
/// [`TurnServiceBuilder::config_mut`].
///
/// Binding requests on the sockets are answered too (RFC 8489, with the
/// service's SOFTWARE).
pub struct TurnServiceBuilder {
    config: ServerConfig,
    udp: Vec<UdpSocket>,
    /// TCP listeners, with the TLS configuration for TURN over TLS.
    tcp: Vec<(TcpListener, Option<TlsAcceptor>)>,
    credentials: Option<Credentials>,
    /// (bind IP, advertised IP), the first per family counts.
    relay_ips: Vec<(IpAddr, IpAddr)>,
    fast_path: bool,
    events: usize,
}

impl std::fmt::Debug for TurnServiceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServiceBuilder")
            .field("realm", &self.config.realm)
            .field("udp", &self.udp.len())
            .field("tcp", &self.tcp.len())
            .field("relay_ips", &self.relay_ips)
            .finish_non_exhaustive()
    }
}

impl TurnServiceBuilder {
    /// A service for `realm` with [`ServerConfig::new`]'s defaults.
    pub fn new(realm: impl Into<String>) -> Self {
        let mut config = ServerConfig::new(realm);
        config.answer_binding = false;
        TurnServiceBuilder {
            config,
            udp: Vec::new(),
            tcp: Vec::new(),
            credentials: None,
            relay_ips: Vec::new(),
            fast_path: true,
            events: EVENT_QUEUE,
        }
    }

    /// Serve TURN over UDP on `socket` (any number of sockets).
    pub fn udp_socket(mut self, socket: UdpSocket) -> Self {
        self.udp.push(socket);
        self
    }

    /// Serve TURN over TCP on connections accepted from `listener`.
    pub fn tcp_listener(mut self, listener: TcpListener) -> Self {
        self.tcp.push((listener, None));
        self
    }

    /// Serve TURN over TLS (`turns:`) on connections accepted from
    /// `listener`, with the certificate of `tls`.
    pub fn tls_listener(mut self, listener: TcpListener, tls: Arc<rustls::ServerConfig>) -> Self {
        self.tcp.push((listener, Some(TlsAcceptor::from(tls))));
        self
    }

    /// Where long-term keys come from: [`p2p_turn::StaticUsers`],
    /// [`p2p_turn::RestSecret`], or the program's own store (synchronous:
    /// keep a cache in front of a database).
    pub fn credentials(mut self, store: impl CredentialStore + Send + 'static) -> Self {
        self.credentials = Some(Box::new(store));
        self
    }

    /// Bind relayed addresses on `ip` and hand them out as they are. By
    /// default: the first specific IP of each family the sockets are bound
    /// to.
    pub fn relay_ip(self, ip: IpAddr) -> Self {
        self.relay_ip_advertised_as(ip, ip)
    }

    /// Bind relayed addresses on `bind` and hand them out on `advertised`
    /// (behind a 1:1 NAT: the external IP).
    pub fn relay_ip_advertised_as(mut self, bind: IpAddr, advertised: IpAddr) -> Self {
        self.relay_ips.push((bind, advertised));
        self
    }

    /// The ports relayed addresses are taken from (default 49152-65535).
    pub fn relay_ports(mut self, ports: RangeInclusive<u16>) -> Self {
        self.config.relayed_ports = ports;
        self
    }

    /// Relay the ChannelData of UDP allocations in the socket readers, past
    /// the state machine (default on; allocations with a bandwidth cap
    /// always take the checked path).
    pub fn fast_path(mut self, on: bool) -> Self {
        self.fast_path = on;
        self
    }

    /// How many events wait for [`TurnService::next_event`] at most
    /// (default 4096); beyond, new ones are dropped (and counted in a log
    /// line at stop) rather than slowing the relay down.
    pub fn event_queue(mut self, depth: usize) -> Self {
        self.events = depth.max(1);
        self
    }

    /// The state machine's settings: lifetimes, quotas, the peer policy,
    /// bandwidth caps, SOFTWARE, RFC 6062 allocations ….
    pub fn config_mut(&mut self) -> &mut ServerConfig {
        &mut self.config
    }

    /// Start serving (in the current tokio runtime).
    pub fn start(self) -> Result<TurnService, TurnServiceError> {
        if self.udp.is_empty() && self.tcp.is_empty() {
            return Err(TurnServiceError::NoSocket);
        }
        let credentials = self.credentials.ok_or(TurnServiceError::NoCredentials)?;
        let udp: Vec<(SocketAddr, Arc<UdpSocket>)> = self
            .udp
            .into_iter()
            .map(|s| Ok((s.local_addr()?, Arc::new(s))))
            .collect::<io::Result<_>>()?;
        let tcp: Vec<(SocketAddr, TcpListener, Option<TlsAcceptor>)> = self
            .tcp
            .into_iter()
            .map(|(l, tls)| Ok((l.local_addr()?, l, tls)))
            .collect::<io::Result<_>>()?;
        let local: Vec<SocketAddr> = udp
            .iter()
            .map(|(a, _)| *a)
            .chain(tcp.iter().map(|(a, _, _)| *a))
            .collect();
        let mut ips: [Option<(IpAddr, IpAddr)>; 2] = [None, None];
        for (bind, adv) in self.relay_ips {
            let k = usize::from(bind.is_ipv6());
            ips[k] = ips[k].or(Some((bind, adv)));
        }
        for a in &local {
            let k = usize::from(a.is_ipv6());
            if ips[k].is_none() && !a.ip().is_unspecified() {
                ips[k] = Some((a.ip(), a.ip()));
            }
        }
        if ips.iter().all(Option::is_none) {
            return Err(TurnServiceError::NoRelayIp);
        }
        let mut config = self.config;
        config.export_routes = self.fast_path;
        config.service_addresses.extend(&local);
        config.service_addresses.sort();
        config.service_addresses.dedup();
        config.own_addresses.extend(
            local
                .iter()
                .map(SocketAddr::ip)
                .filter(|ip| !ip.is_unspecified()),
        );
        for (b, a) in ips.iter().flatten() {
            config.own_addresses.push(*b);
            config.own_addresses.push(*a);
        }
        config.own_addresses.sort();
        config.own_addresses.dedup();
        let software = config.software.clone().unwrap_or_default();
        let turn_idle = config.max_lifetime + Duration::from_secs(60);
        let (events_tx, events) = mpsc::channel(self.events);
        let listening: HashMap<SocketAddr, Arc<UdpSocket>> = udp.iter().cloned().collect();
        let (handle, task) = spawn(config, credentials, ips, listening, Some(events_tx));

        // The sockets' readers: the daemon's own, answering Binding and
        // handing TURN to the task.
        let mut workers = JoinSet::new();
        let ctx = Arc::new(Ctx::new(&software, crate::DEFAULT_MAX_PADDING));
        let counters = Counters::new(udp.len() + 1);
        for (k, (addr, sock)) in udp.iter().enumerate() {
            workers.spawn(
                Worker {
                    sock: sock.clone(),
                    neighbour: None,
                    local: *addr,
                    group: Vec::new(),
                    ctx: ctx.clone(),
                    counters: counters.clone(),
                    shard: k + 1,
                    turn: Some(handle.clone()),
                }
                .run(),
            );
        }
        let shared = StreamShared {
            ctx,
            counters: counters.clone(),
            idle: STUN_IDLE,
            // The daemon's defaults: 64 per address, 10 % kept for light ones.
            admission: Admission::new(
                AddrLimits::new().with_max_connections(MAX_CONNECTIONS),
                counters.clone(),
            ),
            turn: Some((handle.clone(), turn_idle)),
        };
        for (_, l, tls) in tcp {
            workers.spawn(accept_loop(l, tls, shared.clone()));
        }
        Ok(TurnService {
            handle,
            task: Some(task),
            workers,
            events: Some(events),
            local,
        })
    }
}

/// A running TURN server: allocations, permissions, channels and data
/// relayed on the sockets it was built with ([`TurnService::builder`]).
/// Dropping it aborts its tasks; [`TurnService::stop`] ends every
/// allocation first.
///
/// See the crate's front page for a runnable example.
pub struct TurnService {
    handle: TurnHandle,
    task: Option<JoinHandle<()>>,
    /// The embedded service's socket readers and accept loops.
    workers: JoinSet<()>,
    events: Option<mpsc::Receiver<ServerEvent>>,
    local: Vec<SocketAddr>,
}

impl std::fmt::Debug for TurnService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnService")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl TurnService {
    /// Settings for a service in `realm`.
    pub fn builder(realm: impl Into<String>) -> TurnServiceBuilder {
        TurnServiceBuilder::new(realm)
    }

    /// The addresses it serves on (UDP sockets, then TCP and TLS listeners,
    /// in the order given).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    /// The next event: allocations created, refreshed and ended (with what
    /// they relayed), permissions, channel bindings, authentication failures
    /// and refused requests. `None` once the service has stopped.
    pub async fn next_event(&mut self) -> Option<ServerEvent> {
        self.events.as_mut()?.recv().await
    }

    /// An event if one is waiting.
    pub fn try_next_event(&mut self) -> Option<ServerEvent> {
        self.events.as_mut()?.try_recv().ok()
    }

    /// The server's counters now, relaying outside the state machine (the
    /// fast path, RFC 6062 splices) included. `None` if it is gone.
    pub async fn counters(&self) -> Option<p2p_turn::Counters> {
        Some(self.handle.stats().await?.counters)
    }

    /// Stop: every allocation ends ([`p2p_turn::EndReason::Stopped`]),
    /// every relayed socket and peer connection is closed, then the socket
    /// readers stop. The events up to then stay readable with
    /// [`TurnService::next_event`] (which then says `None`). Returns the
    /// last counters (zero when called twice).
    pub async fn stop(&mut self) -> p2p_turn::Counters {
        let last = self.handle.stop().await.unwrap_or_default();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.workers.shutdown().await;
        last.counters
    }

    /// The way into the TURN task, for the daemon's own workers.
    pub(crate) fn handle(&self) -> &TurnHandle {
        &self.handle
    }

    /// The service of the daemon (`p2p serve`): its UDP sockets are read by
    /// the daemon's workers (which answer STUN), `listening` are those to
    /// answer from; the events are only logged.
    pub(crate) fn for_daemon(
        config: ServerConfig,
        credentials: Credentials,
        ips: [Option<(IpAddr, IpAddr)>; 2],
        listening: HashMap<SocketAddr, Arc<UdpSocket>>,
    ) -> TurnService {
        let local = listening.keys().copied().collect();
        let (handle, task) = spawn(config, credentials, ips, listening, None);
        TurnService {
            handle,
            task: Some(task),
            workers: JoinSet::new(),
            events: None,
            local,
        }
    }
}

impl Drop for TurnService {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Start the TURN task. Relayed addresses are on the advertised IPs of
/// `ips` (per family: bind IP, advertised IP); `listening` are the UDP
/// sockets to answer from.
fn spawn(
    mut config: ServerConfig,
    credentials: Credentials,
    ips: [Option<(IpAddr, IpAddr)>; 2],
    listening: HashMap<SocketAddr, Arc<UdpSocket>>,
    events: Option<mpsc::Sender<ServerEvent>>,
) -> (TurnHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
    config.relayed_ips = ips.iter().flatten().map(|(_, adv)| *adv).collect();
    let pool = Arc::new(BufPool::default());
    let fast = config.export_routes.then(|| Arc::new(FastPath::new()));
    let relayed = RelayedSockets::new(ips, tx.clone(), pool.clone(), fast.clone());
    let epoch = (Instant::now(), SystemTime::now());
    let task = TurnTask {
        server: TurnServer::new(config, credentials, epoch),
        listening,
        relayed,
        conns: HashMap::new(),
        stats: TurnStats::default(),
        peers: HashMap::new(),
        splices: HashMap::new(),
        inbound: tx.clone(),
        pool: pool.clone(),
        used: Vec::new(),
        pending: Vec::new(),
        handled_from_peers: Vec::new(),
        order: Vec::new(),
        batch: SendBatch::new(),
        fast: fast.clone(),
        fast_traffic: HashMap::new(),
        tcp_meters: HashMap::new(),
        fast_retired: [TrafficSnapshot::default(); 3],
        events,
        events_dropped: 0,
        auth_log: Default::default(),
    };
    let task = tokio::spawn(task.run(rx));
    (TurnHandle { tx, pool, fast }, task)
}
