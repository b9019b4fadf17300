//! The driver task: signaling, then one loop around the [`Session`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2p_sdp::{DataChannelParams, Fingerprint, Pwd, SessionDescription, Setup, Ufrag};
use p2p_signaling::{ClientError, ErrorCode, IceCandidate, ServerMsg, SignalingClient};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::net::{self, Inbound};
use super::{
    CloseReason, Command, ConnectError, ConnectedInfo, ConnectionEvent, IceServerUri, PeerConfig,
    Policy, SelectedPath,
};
use crate::{Datagram, Session, SessionConfig, SessionEvent, Transport, TurnServerConfig};

/// The ends of the channels between the driver and its handles.
pub(super) struct Channels {
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) events: mpsc::UnboundedSender<ConnectionEvent>,
    pub(super) data: mpsc::Sender<Vec<u8>>,
    pub(super) path: watch::Sender<Option<SelectedPath>>,
    pub(super) ready: Option<oneshot::Sender<Result<ConnectedInfo, ConnectError>>>,
}

impl Channels {
    fn emit(&self, e: ConnectionEvent) {
        let _ = self.events.send(e);
    }
}

/// Runs a peer: meets the other one, connects, then carries datagrams until
/// closed.
pub(super) async fn run(config: PeerConfig, mut ch: Channels) {
    let Some(mut ready) = ch.ready.take() else {
        return;
    };
    let events = ch.events.clone();
    let setup = tokio::select! {
        r = setup(&config, &events) => r,
        () = ready.closed() => return,
    };
    ch.ready = Some(ready);
    match setup {
        Err(e) => {
            if let Some(r) = ch.ready.take() {
                let _ = r.send(Err(e));
            }
        }
        Ok(driver) => {
            let reason = driver.run(&mut ch).await;
            let _ = ch.path.send(None);
            match reason {
                Ok(r) => ch.emit(ConnectionEvent::Closed(r)),
                Err(e) => {
                    if let Some(r) = ch.ready.take() {
                        let _ = r.send(Err(e));
                    } else {
                        ch.emit(ConnectionEvent::Closed(CloseReason::PathLost));
                    }
                }
            }
        }
    }
}

fn emit(events: &mpsc::UnboundedSender<ConnectionEvent>, e: ConnectionEvent) {
    let _ = events.send(e);
}

/// Signaling, sockets, room, roles, ICE servers: everything before the
/// session starts.
async fn setup(
    config: &PeerConfig,
    events: &mpsc::UnboundedSender<ConnectionEvent>,
) -> Result<Driver, ConnectError> {
    let url = config.signaling_url.clone();
    let mut client = match tokio::time::timeout(
        config.signaling_timeout,
        SignalingClient::connect(&url),
    )
    .await
    {
        Err(_) => {
            return Err(ConnectError::Timeout {
                waiting_for: "the signaling server",
                after: config.signaling_timeout,
            })
        }
        Ok(Err(source)) => return Err(ConnectError::SignalingUnreachable { url, source }),
        Ok(Ok(c)) => c,
    };
    emit(
        events,
        ConnectionEvent::SignalingConnected {
            peer_id: client.peer_id().to_owned(),
        },
    );

    // Which ICE servers: ours, or the welcome's.
    let servers: Vec<IceServerUri> = if config.ice_servers.is_empty() {
        let mut v = Vec::new();
        for s in client.ice_servers() {
            for u in IceServerUri::from_ice_server(s) {
                match u {
                    Ok(u) if u.is_turn() && u.username.is_none() => {
                        tracing::warn!("welcome: {u} has no credentials; skipped");
                    }
                    Ok(u) => v.push(u),
                    Err(e) => tracing::warn!("welcome: {e}; skipped"),
                }
            }
        }
        v
    } else {
        config.ice_servers.clone()
    };

    let ips = net::local_ips(&config.local_addresses, config.include_loopback)?;
    let sockets = net::bind_udp(&ips).await;
    if sockets.is_empty() {
        return Err(ConnectError::Config(
            "no local address could be bound (no interface up?)",
        ));
    }
    emit(
        events,
        ConnectionEvent::SocketsBound(sockets.iter().map(|(a, _)| *a).collect()),
    );

    let room = config.room.clone();
    let peers = match client
        .join(&room, config.token.as_deref(), config.name.as_deref())
        .await
    {
        Ok(p) => p,
        Err(ClientError::Server {
            code: ErrorCode::RoomFull,
            ..
        }) => return Err(ConnectError::RoomFull { room }),
        Err(ClientError::Server {
            code: ErrorCode::Unauthorized,
            ..
        }) => return Err(ConnectError::Unauthorized { room }),
        Err(e) => return Err(ConnectError::Signaling(e)),
    };
    emit(
        events,
        ConnectionEvent::Joined {
            room: room.clone(),
            peers: peers.len(),
        },
    );
    // The newcomer offers and controls.
    let (peer, controlling) = match peers.first() {
        Some(p) => (p.id.clone(), true),
        None => {
            let wait = client.wait_for_peer();
            let p = match config.peer_timeout {
                Some(t) => {
                    tokio::time::timeout(t, wait)
                        .await
                        .map_err(|_| ConnectError::Timeout {
                            waiting_for: "a peer",
                            after: t,
                        })?
                }
                None => wait.await,
            }
            .map_err(ConnectError::Signaling)?;
            (p.id, false)
        }
    };
    emit(
        events,
        ConnectionEvent::PeerFound {
            peer_id: peer.clone(),
            controlling,
        },
    );

    let (inbound_tx, inbound) = mpsc::channel::<Inbound>(4096);
    let mut tasks = JoinSet::new();
    for (a, s) in &sockets {
        net::spawn_udp_reader(&mut tasks, *a, s.clone(), inbound_tx.clone());
    }
    let hosts: Vec<SocketAddr> = sockets.iter().map(|(a, _)| *a).collect();

    // Resolve the servers; connect the TURN streams.
    let mut stun = Vec::new();
    let mut turn = Vec::new();
    let mut streams = HashMap::new();
    let mut turn_failures = Vec::new();
    for s in &servers {
        if config.policy == Policy::RelayOnly && !s.is_turn() {
            continue;
        }
        let resolved = match tokio::net::lookup_host((s.host.as_str(), s.port)).await {
            Ok(addrs) => addrs.collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!("cannot resolve {s}: {e}");
                Vec::new()
            }
        };
        // The first address of a family we have a socket of.
        let Some(addr) = resolved
            .iter()
            .find(|a| hosts.iter().any(|h| h.is_ipv4() == a.is_ipv4()))
            .copied()
        else {
            if s.is_turn() {
                let reason = format!("cannot resolve {} to an address we can reach", s.host);
                emit(
                    events,
                    ConnectionEvent::TurnFailed {
                        server: s.to_string(),
                        code: None,
                        reason: reason.clone(),
                    },
                );
                turn_failures.push((s.to_string(), None, reason));
            }
            continue;
        };
        if !s.is_turn() {
            stun.push(addr);
            continue;
        }
        // The session tells its TURN clients apart by server address, local
        // socket and transport: a server listed over UDP and TCP on one
        // port gets two allocations. The same server twice over one
        // transport would share one 5-tuple: used once.
        if turn
            .iter()
            .any(|t: &TurnServerConfig| t.server == addr && t.transport == s.transport)
        {
            tracing::debug!("{s}: this server is already used over this transport; skipped");
            continue;
        }
        if s.transport != Transport::Udp {
            // The session reaches a TURN server from the first host socket
            // of its family: frames from the stream arrive "on" that address.
            let Some(local) = hosts
                .iter()
                .find(|h| h.is_ipv4() == addr.is_ipv4())
                .copied()
            else {
                continue;
            };
            match net::connect_stream(
                &mut tasks,
                addr,
                &s.host,
                s.transport,
                local,
                &config.tls_roots,
                inbound_tx.clone(),
            )
            .await
            {
                Ok(w) => {
                    streams.insert((addr, s.transport), w);
                }
                Err(e) => {
                    let reason = format!("cannot connect: {e}");
                    emit(
                        events,
                        ConnectionEvent::TurnFailed {
                            server: s.to_string(),
                            code: None,
                            reason: reason.clone(),
                        },
                    );
                    turn_failures.push((s.to_string(), None, reason));
                    continue;
                }
            }
        }
        turn.push(TurnServerConfig {
            server: addr,
            transport: s.transport,
            username: s.username.clone().unwrap_or_default(),
            password: s.credential.clone().unwrap_or_default(),
        });
    }
    if config.policy == Policy::RelayOnly && turn.is_empty() {
        return Err(match turn_failures.pop() {
            Some((server, code, reason)) => ConnectError::TurnRefused {
                server,
                code,
                reason,
            },
            None => ConnectError::Config("relay-only needs a TURN server"),
        });
    }

    let mut ice = config.ice.clone();
    ice.controlling = controlling;
    ice.relay_only = config.policy == Policy::RelayOnly;
    let turn_count = turn.len();
    let session = Session::new(SessionConfig {
        hosts,
        stun_servers: stun,
        turn_servers: turn,
        ..SessionConfig::new(ice)
    })
    .map_err(|_| ConnectError::Config("the ICE agent refused a local address"))?;
    let now = Instant::now();
    Ok(Driver {
        connect_deadline: now + config.connect_timeout,
        config: config.clone(),
        session,
        client: Some(client),
        peer,
        controlling,
        sockets: sockets.into_iter().collect(),
        streams,
        _tasks: tasks,
        inbound,
        remote_creds: None,
        pending_remote: Vec::new(),
        described: false,
        outbox: Vec::new(),
        connected: false,
        peer_gone: false,
        restart_pending: false,
        restart_deadline: None,
        turn_count,
        turn_failures,
        turn_allocated: 0,
        dropped: 0,
    })
}

/// A remote candidate or end-of-candidates that came before the peer's
/// credentials.
#[derive(Debug)]
enum Pending {
    Candidate(IceCandidate),
    End,
}

/// A signaling message to the peer, kept until our description is out.
#[derive(Debug)]
enum Out {
    Candidate(String, String),
    End,
}

struct Driver {
    config: PeerConfig,
    session: Session,
    client: Option<SignalingClient>,
    peer: String,
    controlling: bool,
    sockets: HashMap<SocketAddr, Arc<UdpSocket>>,
    streams: HashMap<(SocketAddr, Transport), mpsc::Sender<Vec<u8>>>,
    _tasks: JoinSet<()>,
    inbound: mpsc::Receiver<Inbound>,
    remote_creds: Option<(String, String)>,
    pending_remote: Vec<Pending>,
    /// Our offer or answer was sent.
    described: bool,
    outbox: Vec<Out>,
    connected: bool,
    /// The peer left the room: no restart is possible.
    peer_gone: bool,
    /// We restarted and wait for the peer's new credentials.
    restart_pending: bool,
    /// A restart must select a path by then.
    restart_deadline: Option<Instant>,
    connect_deadline: Instant,
    turn_count: usize,
    turn_failures: Vec<(String, Option<u16>, String)>,
    turn_allocated: usize,
    /// Datagrams dropped because the application did not read.
    dropped: u64,
}

/// How the loop ends: a close reason, or (before connecting) an error.
type Outcome = Result<CloseReason, ConnectError>;

async fn recv_signaling(
    client: &mut Option<SignalingClient>,
) -> Result<Option<ServerMsg>, ClientError> {
    match client {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86400 * 365)
}

fn describe(c: &p2p_ice::Candidate) -> String {
    format!("{} {}", c.kind(), c.address())
}

impl Driver {
    /// Connects and carries datagrams; whatever ends it, the TURN
    /// allocations are deleted before it returns.
    async fn run(mut self, ch: &mut Channels) -> Outcome {
        let outcome = self.run_loop(ch).await;
        self.shutdown().await;
        outcome
    }

    async fn run_loop(&mut self, ch: &mut Channels) -> Outcome {
        let now = Instant::now();
        self.session.start(now);
        if self.controlling {
            self.send_description(None).await?;
        }
        let timer = tokio::time::sleep_until(far_future());
        tokio::pin!(timer);
        let mut checks = self.config.check_list_interval.map(|i| {
            let mut t = tokio::time::interval(i.max(Duration::from_millis(10)));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut last_checks = None;
        loop {
            if let Some(reason) = self.drain(ch).await? {
                return Ok(reason);
            }
            let deadline = self.session.poll_timeout();
            let wake = deadline.map_or_else(far_future, tokio::time::Instant::from_std);
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            let give_up = match (self.connected, self.restart_deadline) {
                (false, _) => Some(self.connect_deadline),
                (true, d) => d,
            }
            .map_or_else(far_future, tokio::time::Instant::from_std);
            tokio::select! {
                Some(inb) = self.inbound.recv() => {
                    let now = Instant::now();
                    self.session.handle_input(now, Datagram {
                        transport: inb.transport,
                        local: inb.local,
                        remote: inb.remote,
                        contents: &inb.bytes,
                    });
                    // Take what else is already there before draining.
                    for _ in 0..64 {
                        let Ok(inb) = self.inbound.try_recv() else { break };
                        self.session.handle_input(now, Datagram {
                            transport: inb.transport,
                            local: inb.local,
                            remote: inb.remote,
                            contents: &inb.bytes,
                        });
                    }
                }
                cmd = ch.commands.recv() => match cmd {
                    None => {
                        self.bye().await;
                        return Ok(CloseReason::Local);
                    }
                    Some(Command::Close(done)) => {
                        self.bye().await;
                        // `close().await` returns once the allocations are gone.
                        self.shutdown().await;
                        let _ = ch.path.send(None);
                        ch.emit(ConnectionEvent::Closed(CloseReason::Local));
                        let _ = done.send(());
                        // `run` emits Closed again only if the channel is
                        // still read; the handle is gone, so end quietly.
                        return Ok(CloseReason::Local);
                    }
                    Some(Command::Send(d)) => {
                        // No path (restart in progress): the datagram is lost.
                        let _ = self.session.send(Instant::now(), &d);
                    }
                    Some(Command::Stats(tx)) => {
                        let _ = tx.send(self.session.agent().stats());
                    }
                    Some(Command::Restart(done)) => {
                        let started = self.restart(ch, Instant::now()).await?;
                        let _ = done.send(started);
                    }
                },
                msg = recv_signaling(&mut self.client) => {
                    if let Some(reason) = self.on_signaling(ch, msg).await? {
                        return Ok(reason);
                    }
                }
                () = &mut timer, if deadline.is_some() => {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        self.session.handle_timeout(now);
                    }
                }
                () = tokio::time::sleep_until(give_up) => {
                    if !self.connected {
                        return Err(self.no_path());
                    }
                    return Ok(CloseReason::PathLost);
                }
                _ = async {
                    match checks.as_mut() {
                        Some(t) => t.tick().await,
                        None => std::future::pending().await,
                    }
                } => {
                    // While checking: before the first path, and again
                    // during an ICE restart.
                    if !self.connected || self.restart_deadline.is_some() {
                        let stats = self.session.agent().stats();
                        if last_checks.as_ref() != Some(&stats) {
                            last_checks = Some(stats.clone());
                            ch.emit(ConnectionEvent::CheckList(Box::new(stats)));
                        }
                    }
                }
            }
        }
    }

    fn no_path(&self) -> ConnectError {
        let agent = self.session.agent();
        if self.config.policy == Policy::RelayOnly && self.turn_allocated == 0 {
            if let Some((server, code, reason)) = self.turn_failures.last().cloned() {
                return ConnectError::TurnRefused {
                    server,
                    code,
                    reason,
                };
            }
        }
        ConnectError::NoPath {
            local: agent.local_candidates().iter().map(describe).collect(),
            remote: agent.remote_candidates().iter().map(describe).collect(),
        }
    }

    /// Sends the session's transmits and handles its events until both
    /// queues are empty.
    async fn drain(&mut self, ch: &mut Channels) -> Result<Option<CloseReason>, ConnectError> {
        loop {
            let mut moved = false;
            while let Some(t) = self.session.poll_transmit() {
                moved = true;
                self.transmit(t).await;
            }
            while let Some(e) = self.session.poll_event() {
                moved = true;
                if let Some(r) = self.on_session_event(ch, e).await? {
                    return Ok(Some(r));
                }
            }
            self.flush_outbox().await?;
            if !moved {
                return Ok(None);
            }
        }
    }

    /// Sends one of the session's transmits from its socket or stream.
    async fn transmit(&mut self, t: crate::Transmit) {
        match t.transport {
            Transport::Udp => {
                if let Some(s) = self.sockets.get(&t.source) {
                    if let Err(e) = s.send_to(&t.contents, t.destination).await {
                        tracing::debug!("send {} -> {}: {e}", t.source, t.destination);
                    }
                }
            }
            tr => {
                if let Some(w) = self.streams.get(&(t.destination, tr)) {
                    let _ = w.send(t.contents).await;
                }
            }
        }
    }

    /// Closes the session: its TURN allocations are deleted (sent, and the
    /// servers' answers fed back) until it reports [`SessionEvent::Closed`],
    /// which takes at most [`crate::CLOSE_TIMEOUT`]. Idempotent.
    async fn shutdown(&mut self) {
        if self.session.is_closed() {
            return;
        }
        self.session.close(Instant::now());
        // A guard in case the clock and the timer disagree.
        let limit = tokio::time::Instant::now() + crate::CLOSE_TIMEOUT * 2;
        loop {
            while let Some(t) = self.session.poll_transmit() {
                self.transmit(t).await;
            }
            // Events after close carry nothing the application needs.
            while self.session.poll_event().is_some() {}
            if self.session.is_closed() {
                return;
            }
            let wake = self
                .session
                .poll_timeout()
                .map_or(limit, tokio::time::Instant::from_std)
                .min(limit);
            tokio::select! {
                Some(inb) = self.inbound.recv() => {
                    self.session.handle_input(Instant::now(), Datagram {
                        transport: inb.transport,
                        local: inb.local,
                        remote: inb.remote,
                        contents: &inb.bytes,
                    });
                }
                () = tokio::time::sleep_until(wake) => {
                    if wake >= limit {
                        return;
                    }
                    self.session.handle_timeout(Instant::now());
                }
            }
        }
    }

    async fn on_session_event(
        &mut self,
        ch: &mut Channels,
        e: SessionEvent,
    ) -> Result<Option<CloseReason>, ConnectError> {
        let now = Instant::now();
        match e {
            SessionEvent::LocalCandidate(c) => {
                // Written once, by p2p-sdp.
                let line = c.to_string();
                ch.emit(ConnectionEvent::LocalCandidate(line.clone()));
                let ufrag = self.session.local_credentials().0.to_owned();
                self.outbox.push(Out::Candidate(line, ufrag));
            }
            SessionEvent::GatheringComplete => {
                ch.emit(ConnectionEvent::GatheringComplete);
                self.outbox.push(Out::End);
            }
            SessionEvent::StateChanged(s) => {
                ch.emit(ConnectionEvent::StateChanged(s));
                if s == p2p_ice::IceState::Failed {
                    if !self.connected {
                        return Err(self.no_path());
                    }
                    return self.path_died(ch, now).await;
                }
            }
            SessionEvent::SelectedPair { local, remote } => {
                let path = SelectedPath { local, remote };
                let _ = ch.path.send(Some(path.clone()));
                self.restart_pending = false;
                let restarted = self.restart_deadline.take().is_some();
                if self.connected {
                    ch.emit(ConnectionEvent::PathChanged(path));
                    // The check list that found the new path.
                    if restarted && self.config.check_list_interval.is_some() {
                        ch.emit(ConnectionEvent::CheckList(Box::new(
                            self.session.agent().stats(),
                        )));
                    }
                } else {
                    self.connected = true;
                    ch.emit(ConnectionEvent::Connected(path));
                    if self.config.check_list_interval.is_some() {
                        ch.emit(ConnectionEvent::CheckList(Box::new(
                            self.session.agent().stats(),
                        )));
                    }
                    if let Some(r) = ch.ready.take() {
                        let _ = r.send(Ok(ConnectedInfo {
                            peer_id: self.peer.clone(),
                            controlling: self.controlling,
                        }));
                    }
                }
            }
            SessionEvent::TurnAllocated { server, relayed } => {
                self.turn_allocated += 1;
                ch.emit(ConnectionEvent::TurnAllocated { server, relayed });
            }
            SessionEvent::TurnFailed {
                server,
                code,
                reason,
            } => {
                ch.emit(ConnectionEvent::TurnFailed {
                    server: server.to_string(),
                    code,
                    reason: reason.clone(),
                });
                self.turn_failures.push((server.to_string(), code, reason));
                let failed_here = self.turn_failures.len();
                if self.config.policy == Policy::RelayOnly
                    && !self.connected
                    && self.turn_allocated == 0
                    && failed_here >= self.turn_count
                {
                    return Err(self.no_path());
                }
            }
            SessionEvent::ConsentLost => {
                ch.emit(ConnectionEvent::Disconnected);
                let _ = ch.path.send(None);
                if self.connected {
                    return self.path_died(ch, now).await;
                }
            }
            SessionEvent::Data(d) => {
                if ch.data.try_send(d).is_err() {
                    self.dropped += 1;
                }
            }
            // Only after `shutdown`, which reads its own events.
            SessionEvent::Closed => {}
        }
        Ok(None)
    }

    /// The selected path died: restart if we control and can signal, wait
    /// for the peer's restart if it controls, give up otherwise.
    async fn path_died(
        &mut self,
        ch: &mut Channels,
        now: Instant,
    ) -> Result<Option<CloseReason>, ConnectError> {
        if self.client.is_none() || self.peer_gone {
            return Ok(Some(CloseReason::PathLost));
        }
        if self.restart_deadline.is_none() {
            self.restart_deadline = Some(now + self.config.connect_timeout);
        }
        if self.controlling {
            self.restart(ch, now).await?;
        }
        Ok(None)
    }

    /// Restart ICE from our side: new credentials to the peer in an
    /// `ice-restart` message, gathering again, new checks. Nothing to do
    /// while our last restart waits for the peer's answer, or without
    /// signaling. Either side may start one; the other answers with its
    /// own new credentials.
    async fn restart(&mut self, ch: &mut Channels, now: Instant) -> Result<bool, ConnectError> {
        if self.restart_pending || self.client.is_none() || self.peer_gone {
            return Ok(false);
        }
        if self.restart_deadline.is_none() {
            self.restart_deadline = Some(now + self.config.connect_timeout);
        }
        self.session.restart(now);
        self.remote_creds = None;
        self.pending_remote.clear();
        self.restart_pending = true;
        ch.emit(ConnectionEvent::Restarting);
        self.send_ice_restart().await?;
        Ok(self.client.is_some())
    }

    async fn send_ice_restart(&mut self) -> Result<(), ConnectError> {
        let (u, p) = self.session.local_credentials();
        let (u, p) = (u.to_owned(), p.to_owned());
        let peer = self.peer.clone();
        if let Some(c) = self.client.as_mut() {
            if c.send_ice_restart(&peer, &u, &p).await.is_err() {
                self.client = None;
            }
        }
        Ok(())
    }

    /// Our offer (`offer` = None) or our answer to `offer`.
    async fn send_description(
        &mut self,
        offer: Option<&SessionDescription>,
    ) -> Result<(), ConnectError> {
        let (u, p) = self.session.local_credentials();
        let bad = |_| ConnectError::Config("the ICE agent's credentials are not valid in SDP");
        let ufrag = Ufrag::new(u).map_err(bad)?;
        let pwd = Pwd::new(p).map_err(bad)?;
        let session_id = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            u.hash(&mut h);
            h.finish() >> 2
        };
        // No DTLS here: a placeholder fingerprint (see the module docs).
        let fingerprint = Fingerprint::new("sha-256", vec![0; 32]).map_err(bad)?;
        let setup = if offer.is_some() {
            Setup::Active
        } else {
            Setup::ActPass
        };
        let params = DataChannelParams::new(ufrag, pwd, fingerprint, setup, session_id);
        let peer = self.peer.clone();
        let Some(c) = self.client.as_mut() else {
            return Err(ConnectError::Signaling(ClientError::Closed));
        };
        let r = match offer {
            None => {
                let sdp = SessionDescription::offer_data_channel(&params).to_string();
                c.send_offer(&peer, &sdp).await
            }
            Some(o) => {
                let answer = SessionDescription::answer_data_channel(o, &params)
                    .map_err(|_| ConnectError::Config("the peer's offer has no data channel"))?;
                c.send_answer(&peer, &answer.to_string()).await
            }
        };
        r.map_err(ConnectError::Signaling)?;
        self.described = true;
        Ok(())
    }

    async fn flush_outbox(&mut self) -> Result<(), ConnectError> {
        if !self.described || self.outbox.is_empty() {
            return Ok(());
        }
        let peer = self.peer.clone();
        for m in std::mem::take(&mut self.outbox) {
            let Some(c) = self.client.as_mut() else {
                return Ok(());
            };
            let r = match m {
                Out::Candidate(line, ufrag) => {
                    let mut cand = IceCandidate::new(line);
                    cand.sdp_mid = Some("0".to_owned());
                    cand.sdp_m_line_index = Some(0);
                    cand.username_fragment = Some(ufrag);
                    c.send_candidate(&peer, cand).await
                }
                Out::End => c.send_end_of_candidates(&peer).await,
            };
            if let Err(e) = r {
                if !self.connected {
                    return Err(ConnectError::Signaling(e));
                }
                self.client = None;
            }
        }
        Ok(())
    }

    /// The peer's ufrag and password from its description, then the
    /// candidates that waited for them.
    fn set_remote(&mut self, ufrag: String, pwd: String) {
        let now = Instant::now();
        if let Err(e) = self.session.set_remote_credentials(now, &ufrag, &pwd) {
            tracing::warn!("the peer's ICE credentials: {e}");
            return;
        }
        self.remote_creds = Some((ufrag, pwd));
        for p in std::mem::take(&mut self.pending_remote) {
            match p {
                Pending::Candidate(c) => self.add_candidate(now, &c),
                Pending::End => self.session.end_of_remote_candidates(now),
            }
        }
    }

    fn add_candidate(&mut self, now: Instant, c: &IceCandidate) {
        let current = self.remote_creds.as_ref().map(|(u, _)| u.as_str());
        if let (Some(tag), Some(cur)) = (c.username_fragment.as_deref(), current) {
            if tag != cur {
                return; // an older generation
            }
        }
        // The one parse of the line: p2p-sdp's grammar.
        match p2p_sdp::Candidate::parse(&c.candidate) {
            Ok(sdp) => self.add_sdp_candidate(now, &sdp),
            Err(e) => tracing::debug!("remote candidate {:?}: {e}", c.candidate),
        }
    }

    /// A remote candidate as p2p-sdp parsed it (trickled, or in the peer's
    /// description), handed to the session typed.
    fn add_sdp_candidate(&mut self, now: Instant, sdp: &p2p_sdp::Candidate) {
        match p2p_ice::Candidate::from_sdp(sdp) {
            Ok(c) => {
                if let Err(e) = self.session.add_remote_candidate(now, c) {
                    tracing::debug!("remote candidate {sdp}: {e}");
                }
            }
            // Resolving mDNS names is not done yet: the browser's host
            // candidate is left out (its srflx and relay ones still work).
            Err(p2p_ice::CandidateError::MdnsName(name)) => {
                tracing::debug!("remote candidate {sdp}: skipped (mDNS name {name}, not resolved)");
            }
            Err(e) => tracing::debug!("remote candidate {sdp}: {e}"),
        }
    }

    async fn on_signaling(
        &mut self,
        ch: &mut Channels,
        msg: Result<Option<ServerMsg>, ClientError>,
    ) -> Result<Option<CloseReason>, ConnectError> {
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) if !self.connected => {
                return Err(ConnectError::Signaling(
                    msg.err().unwrap_or(ClientError::Closed),
                ))
            }
            Ok(None) | Err(_) => {
                self.client = None;
                ch.emit(ConnectionEvent::SignalingLost);
                return Ok(None);
            }
        };
        let now = Instant::now();
        match msg {
            ServerMsg::Offer { from, sdp } if from == self.peer => {
                if self.controlling {
                    tracing::warn!("an offer from {from} although we offered; ignored");
                    return Ok(None);
                }
                let Some((offer, u, p)) = parse_description(&sdp) else {
                    tracing::warn!("an offer without ICE credentials; ignored");
                    return Ok(None);
                };
                self.send_description(Some(&offer)).await?;
                self.set_remote(u, p);
                self.sdp_candidates(now, &offer);
            }
            ServerMsg::Answer { from, sdp } if from == self.peer => {
                let Some((answer, u, p)) = parse_description(&sdp) else {
                    tracing::warn!("an answer without ICE credentials; ignored");
                    return Ok(None);
                };
                self.set_remote(u, p);
                self.sdp_candidates(now, &answer);
            }
            ServerMsg::Candidate { from, candidate } if from == self.peer => {
                ch.emit(ConnectionEvent::RemoteCandidate(
                    candidate.candidate.clone(),
                ));
                if self.remote_creds.is_some() {
                    self.add_candidate(now, &candidate);
                } else {
                    self.pending_remote.push(Pending::Candidate(candidate));
                }
            }
            ServerMsg::EndOfCandidates { from } if from == self.peer => {
                if self.remote_creds.is_some() {
                    self.session.end_of_remote_candidates(now);
                } else {
                    self.pending_remote.push(Pending::End);
                }
            }
            ServerMsg::IceRestart { from, ufrag, pwd } if from == self.peer => {
                if self.restart_pending {
                    // The answer to our restart.
                    self.restart_pending = false;
                    self.set_remote(ufrag, pwd);
                } else {
                    ch.emit(ConnectionEvent::Restarting);
                    self.session.restart(now);
                    self.pending_remote.clear();
                    self.set_remote(ufrag, pwd);
                    if self.restart_deadline.is_none() {
                        self.restart_deadline = Some(now + self.config.connect_timeout);
                    }
                    self.send_ice_restart().await?;
                }
            }
            ServerMsg::Bye { from } if from == self.peer => {
                if !self.connected {
                    return Err(ConnectError::PeerLeft { peer: from });
                }
                return Ok(Some(CloseReason::PeerClosed));
            }
            ServerMsg::PeerLeft { peer_id, .. } if peer_id == self.peer => {
                if !self.connected {
                    return Err(ConnectError::PeerLeft { peer: peer_id });
                }
                self.peer_gone = true;
            }
            ServerMsg::Error { code, message, .. } => {
                tracing::warn!("signaling error {code}: {message}");
                if !self.connected && code == ErrorCode::UnknownPeer {
                    return Err(ConnectError::PeerLeft {
                        peer: self.peer.clone(),
                    });
                }
            }
            other => tracing::debug!("signaling: {} ignored", other.type_name()),
        }
        Ok(None)
    }

    fn sdp_candidates(&mut self, now: Instant, sd: &SessionDescription) {
        let Some(dc) = sd.data_channel() else { return };
        let candidates: Vec<p2p_sdp::Candidate> = dc.candidates().cloned().collect();
        let end = dc.end_of_candidates();
        for c in &candidates {
            self.add_sdp_candidate(now, c);
        }
        if end {
            self.session.end_of_remote_candidates(now);
        }
    }

    async fn bye(&mut self) {
        let peer = self.peer.clone();
        if let Some(c) = self.client.as_mut() {
            let _ = c.send_bye(&peer).await;
        }
    }
}

/// The description and the ICE credentials of its data channel section.
fn parse_description(sdp: &str) -> Option<(SessionDescription, String, String)> {
    let sd: SessionDescription = sdp.parse().ok()?;
    let dc = sd.data_channel()?;
    let u = sd.ice_ufrag_for(dc)?.to_owned();
    let p = sd.ice_pwd_for(dc)?.to_owned();
    Some((sd, u, p))
}
