//! The driver task: signaling, then one loop around the [`Session`].

#[cfg(feature = "upnp")]
mod upnp;
#[cfg(not(feature = "upnp"))]
mod upnp_off;
#[cfg(not(feature = "upnp"))]
use upnp_off as upnp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use p2p_datachannel::{ChannelEvent, ChannelId, ChannelOptions};
use p2p_dtls::Fingerprint;
use p2p_proto::{Machine, Transmit};
use p2p_signaling::{ClientError, ClientMsg, ServerMsg, SignalingClient};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

mod gso;
mod host;
mod probe;
mod reattach;
mod setup;

use reattach::{attempt_done, Reattached};
use setup::setup;

use super::channel::{self, ChannelSlot};
use super::ice_tcp::IceTcp;
use super::mdns;
use super::net::{self, Inbound, TurnStream};
use super::{Channel, ChannelClosed, ChannelInfo, Message, SendError, HIGH_WATER, LOW_WATER};
use super::{Command, ConnectError, ConnectedInfo, ConnectionEvent, PeerConfig};
use crate::{
    CloseReason, Failure, Negotiation, NegotiationEvent, NegotiationOutput, SelectedPath,
    SessionError, Transport,
};

/// The ends of the channels between the driver and its handles.
pub(super) struct Channels {
    pub(super) commands: mpsc::Receiver<Command>,
    /// For the channel handles the driver makes.
    pub(super) command_tx: mpsc::Sender<Command>,
    /// Channels whose `recv` took bytes since the driver last released
    /// them to the session.
    pub(super) released: mpsc::UnboundedReceiver<ChannelId>,
    /// For the channel handles the driver makes.
    pub(super) released_tx: mpsc::UnboundedSender<ChannelId>,
    pub(super) events: mpsc::UnboundedSender<ConnectionEvent>,
    /// Channels the peer opened, for `accept_channel`.
    pub(super) incoming: mpsc::UnboundedSender<Channel>,
    pub(super) path: watch::Sender<Option<SelectedPath>>,
    pub(super) ready: Option<oneshot::Sender<Result<ConnectedInfo, ConnectError>>>,
    /// Why the connection ended, set once before the channels close.
    pub(super) reason: Arc<OnceLock<CloseReason>>,
}

impl Channels {
    fn emit(&self, e: ConnectionEvent) {
        let _ = self.events.send(e);
    }

    /// The connection ended: the reason is kept for `recv` and `send`, and
    /// reported once.
    fn closed(&self, r: CloseReason) {
        if self.reason.set(r.clone()).is_ok() {
            self.emit(ConnectionEvent::Closed(r));
        }
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
            let outcome = driver.run(&mut ch).await;
            let _ = ch.path.send(None);
            match outcome {
                Ok(r) => ch.closed(r),
                Err(e) => {
                    if let Some(r) = ch.ready.take() {
                        let _ = r.send(Err(e));
                    }
                }
            }
        }
    }
}

struct Driver {
    config: PeerConfig,
    negotiation: Negotiation,
    client: Option<SignalingClient>,
    /// When and where to reconnect to signaling.
    reconnect: crate::Reconnect,
    /// Takes our peer id back on a new signaling connection.
    resume_token: Option<String>,
    /// A reconnection under way.
    attempt: Option<tokio::task::JoinHandle<Result<Reattached, String>>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    peer: String,
    controlling: bool,
    sockets: HashMap<SocketAddr, Arc<UdpSocket>>,
    /// The host sockets' batched I/O (GSO), by local address.
    batched: HashMap<SocketAddr, super::net::Batched>,
    /// The host sockets with batched I/O, which the loop reads itself.
    hosts: host::HostReads,
    /// Transmits waiting to go out in one GSO call.
    gso: gso::Gso,
    /// The mDNS socket (it is in `sockets` too), joined on first use.
    mdns: Option<mdns::MdnsSocket>,
    /// The TCP/TLS connections to TURN servers, by server and transport.
    streams: HashMap<(SocketAddr, Transport), TurnStream>,
    /// Connections to TURN servers that ended, kept to dial again when
    /// the session sends there (a restart's Allocate), at most once a
    /// second each.
    lost_streams: HashMap<(SocketAddr, Transport), LostStream>,
    /// For the readers of connections opened later (after a redirect).
    inbound_tx: mpsc::Sender<Inbound>,
    /// Connections opened later that could not be opened, said by their
    /// tasks (the sender) and read by the loop.
    stream_failed: (
        mpsc::UnboundedSender<net::StreamFailed>,
        mpsc::UnboundedReceiver<net::StreamFailed>,
    ),
    /// ICE-TCP's listeners and connections, when [`PeerConfig::ice_tcp`].
    ice_tcp: Option<IceTcp>,
    _tasks: JoinSet<()>,
    /// The sockets bound for birthday probing (`probe.rs`).
    probe: probe::Probe,
    inbound: mpsc::Receiver<Inbound>,
    peer_name: Option<String>,
    /// A restart runs: the check list is reported again while it does.
    restarting: bool,
    /// The channels handed out, by id.
    channels: HashMap<ChannelId, ChannelSlot>,
    remote_fingerprint: Option<Fingerprint>,
    /// The UPnP IGD search, then the mapping it made (feature `upnp`).
    upnp: upnp::Upnp,
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

/// Rounds of the driver's loop that take waiting work without polling
/// every source (see `run_loop`).
const FAST_ROUNDS: usize = 16;

/// The most message bytes taken in a row before they are moved on (see
/// `Driver::on_commands`).
const SEND_BATCH: usize = 256 * 1024;
/// A lost TCP/TLS connection to a TURN server is dialled again at most
/// this often.
const REDIAL_INTERVAL: Duration = Duration::from_secs(1);

/// How a TCP/TLS connection to a TURN server that ended was reached, to
/// dial it again.
struct LostStream {
    /// The name its TLS certificate is checked against.
    host: String,
    /// The host address the session uses for the server.
    local: SocketAddr,
    /// When it was last dialled again.
    redialled: Option<Instant>,
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86400 * 365)
}

/// A failure of the negotiation as the driver reports it.
fn connect_error(f: Failure) -> ConnectError {
    match f {
        Failure::NoPath { local, remote } => ConnectError::NoPath { local, remote },
        Failure::TurnRefused {
            server,
            code,
            reason,
        } => ConnectError::TurnRefused {
            server,
            code,
            reason,
        },
        Failure::PeerLeft { peer } => ConnectError::PeerLeft { peer },
        Failure::SignalingLost => ConnectError::Signaling(ClientError::Closed),
        Failure::BadLocalDescription => {
            ConnectError::Config("the ICE agent's credentials are not valid in SDP")
        }
        Failure::BadRemoteDescription(why) => {
            ConnectError::Secure(format!("the peer's description: {why}"))
        }
        Failure::FingerprintMismatch => ConnectError::FingerprintMismatch,
        Failure::Secure(why) => ConnectError::Secure(why),
    }
}

impl Driver {
    /// Connects and carries datagrams; whatever ends it, the session is
    /// closed (its TURN allocations deleted) before it returns.
    async fn run(mut self, ch: &mut Channels) -> Outcome {
        let outcome = self.run_loop(ch).await;
        // Ended by the peer or its path: the application learns now, not
        // after the goodbyes below (a dead peer never acknowledges them).
        // What its channels already hold stays readable.
        if let Ok(r) = &outcome {
            if *r != CloseReason::Local {
                let _ = ch.path.send(None);
                ch.closed(r.clone());
                self.channels.clear();
            }
        }
        self.shutdown(ch).await;
        outcome
    }

    async fn run_loop(&mut self, ch: &mut Channels) -> Outcome {
        self.negotiation.handle_timeout(Instant::now());
        let timer = tokio::time::sleep_until(far_future());
        tokio::pin!(timer);
        let mut checks = self.config.check_list_interval.map(|i| {
            let mut t = tokio::time::interval(i.max(Duration::from_millis(10)));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut last_checks = None;
        let mut fast = 0;
        loop {
            if let Some(end) = self.drain(ch).await {
                return end;
            }
            self.poll_reconnect(ch);
            if let Some(end) = self.drain(ch).await {
                return end;
            }
            // Work already waiting is taken without the `select!` below,
            // which polls every source each time (the signaling socket's
            // read alone clears a 128 KiB buffer in tungstenite): a bounded
            // number of rounds in a row, so that the others still come.
            if fast < FAST_ROUNDS {
                fast += 1;
                if self.read_hosts() {
                    self.due_timeout();
                    continue;
                }
                if let Ok(inb) = self.inbound.try_recv() {
                    self.on_inbound(inb);
                    self.due_timeout();
                    continue;
                }
                if let Ok(cmd) = ch.commands.try_recv() {
                    if let Some(end) = self.on_commands(ch, Some(cmd)).await {
                        return end;
                    }
                    self.due_timeout();
                    continue;
                }
            }
            fast = 0;
            let wake = [
                self.negotiation.poll_timeout(),
                self.reconnect_timeout(),
                self.hosts.release_at(),
            ]
            .into_iter()
            .flatten()
            .min()
            .map_or_else(far_future, tokio::time::Instant::from_std);
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            tokio::select! {
                i = self.hosts.readable() => self.on_readable(i),
                Some(inb) = self.inbound.recv() => self.on_inbound(inb),
                Some(f) = self.stream_failed.1.recv() => {
                    // A redirect's target cannot be reached, or the server
                    // closed a connection: what went over it ends now, not
                    // after 39.5 s (an allocation) or 30 s (consent). A
                    // report of a connection we no longer keep is stale.
                    let key = (f.server, f.transport);
                    if self.streams.get(&key).is_some_and(|s| s.writer.same_channel(&f.writer)) {
                        if let Some(lost) = self.streams.remove(&key) {
                            let redialled =
                                self.lost_streams.get(&key).and_then(|l| l.redialled);
                            let (host, local) = (lost.host, lost.local);
                            self.lost_streams.insert(key, LostStream { host, local, redialled });
                        }
                        self.negotiation.turn_connection_failed(
                            Instant::now(),
                            f.server,
                            f.transport,
                            &f.reason,
                        );
                    }
                }
                Some(id) = ch.released.recv() => {
                    let now = Instant::now();
                    self.release(now, id);
                    while let Ok(id) = ch.released.try_recv() {
                        self.release(now, id);
                    }
                }
                cmd = ch.commands.recv() => {
                    if let Some(end) = self.on_commands(ch, cmd).await {
                        return end;
                    }
                }
                msg = recv_signaling(&mut self.client) => {
                    let now = Instant::now();
                    match msg {
                        Ok(Some(m)) => {
                            if let p2p_signaling::ServerMsg::Resumed { resume_token: Some(t), .. } = &m {
                                self.resume_token = Some(t.clone());
                            }
                            self.negotiation.handle_signal(now, m)
                        }
                        Ok(None) | Err(_) => self.signaling_gone(now),
                    }
                }
                r = attempt_done(&mut self.attempt) => {
                    let now = Instant::now();
                    match r {
                        Ok(re) => {
                            self.reconnect.connected(now);
                            if let Some(t) = re.client.resume_token() {
                                self.resume_token = Some(t.to_owned());
                            }
                            ch.emit(ConnectionEvent::SignalingRestored {
                                url: re.url,
                                peer_id: re.client.peer_id().to_owned(),
                            });
                            self.client = Some(re.client);
                            self.negotiation.signaling_restored(now, re.peer_present);
                        }
                        Err(e) => {
                            tracing::debug!("signaling: reconnection failed: {e}");
                            self.reconnect.failed(now);
                        }
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    self.hosts.release_if_idle(now);
                    self.negotiation.handle_timeout(now);
                }
                r = self.upnp.outcome() => self.on_upnp(r).await,
                _ = async {
                    match checks.as_mut() {
                        Some(t) => t.tick().await,
                        None => std::future::pending().await,
                    }
                } => {
                    // While checking: before the first path, and again
                    // during an ICE restart.
                    if !self.negotiation.is_connected() || self.restarting {
                        let stats = self.negotiation.session().agent().stats();
                        if last_checks.as_ref() != Some(&stats) {
                            last_checks = Some(stats.clone());
                            ch.emit(ConnectionEvent::CheckList(Box::new(stats)));
                        }
                    }
                }
            }
        }
    }

    /// A host socket is readable: one batch read, handed in as one batch.
    fn on_readable(&mut self, i: usize) {
        let now = Instant::now();
        let n = self.hosts.try_read(i, now);
        if n > 0 {
            self.negotiation
                .handle_inputs(now, self.hosts.datagrams(i, n));
        }
    }

    /// A batch read of every host socket that has datagrams waiting
    /// (when none waits: no system call); whether any had.
    fn read_hosts(&mut self) -> bool {
        let now = Instant::now();
        let mut any = false;
        for i in 0..self.hosts.len() {
            let n = self.hosts.try_read(i, now);
            if n > 0 {
                self.negotiation
                    .handle_inputs(now, self.hosts.datagrams(i, n));
                any = true;
            }
        }
        any
    }

    /// A read arrived: take what else is already there, and hand it in as
    /// one batch before draining.
    fn on_inbound(&mut self, first: Inbound) {
        let mut batch = vec![first];
        while batch.len() < 64 {
            let Ok(inb) = self.inbound.try_recv() else {
                break;
            };
            batch.push(inb);
        }
        self.negotiation
            .handle_inputs(Instant::now(), batch.iter().flat_map(Inbound::datagrams));
    }

    /// The negotiation's timer, if it is due (work taken outside the
    /// `select!` does not see the timer fire).
    fn due_timeout(&mut self) {
        let now = Instant::now();
        if self.negotiation.poll_timeout().is_some_and(|t| t <= now) {
            self.negotiation.handle_timeout(now);
        }
    }

    /// A command, and the messages sent right after it: each answered as
    /// it comes, and moved through the layers once after the last
    /// (`Negotiation::send_deferred`), so that SCTP gathers once for
    /// many messages. Between them the driver yields once, so that a
    /// sender woken by its answer can queue its next message; it takes
    /// at most [`SEND_BATCH`] bytes so, then moves them on. `Some` when
    /// the connection ended.
    async fn on_commands(&mut self, ch: &mut Channels, first: Option<Command>) -> Option<Outcome> {
        let mut cmd = first;
        let mut batched = 0;
        loop {
            let len = match &cmd {
                Some(Command::Send { data, .. }) => Some(data.len()),
                _ => None,
            };
            if let Some(end) = self.on_command(ch, cmd).await {
                return Some(end);
            }
            let Some(len) = len else { break };
            batched += len;
            if batched >= SEND_BATCH {
                break;
            }
            tokio::task::yield_now().await;
            match ch.commands.try_recv() {
                Ok(c) => cmd = Some(c),
                Err(_) => break,
            }
        }
        self.negotiation.flush(Instant::now());
        None
    }

    /// One command of a channel or the connection; `Some` when the
    /// connection ended.
    async fn on_command(&mut self, ch: &mut Channels, cmd: Option<Command>) -> Option<Outcome> {
        match cmd {
            None => {
                self.negotiation.close(Instant::now());
                return Some(Ok(CloseReason::Local));
            }
            Some(Command::Close(done)) => {
                self.negotiation.close(Instant::now());
                // `close().await` returns once the allocations are gone.
                self.shutdown(ch).await;
                let _ = ch.path.send(None);
                ch.closed(CloseReason::Local);
                let _ = done.send(());
                return Some(Ok(CloseReason::Local));
            }
            Some(Command::Open(options, reply)) => {
                let r = self.open_channel(ch, options);
                let _ = reply.send(r);
            }
            Some(Command::Send {
                id,
                data,
                binary,
                done,
            }) => {
                self.send(id, &data, binary, done);
            }
            Some(Command::CloseChannel(id)) => {
                let _ = self.negotiation.close_channel(Instant::now(), id);
            }
            Some(Command::Stats(tx)) => {
                let _ = tx.send(self.negotiation.session().agent().stats());
            }
            Some(Command::Restart(done)) => {
                let _ = done.send(self.negotiation.restart(Instant::now()));
            }
        }
        None
    }

    /// Acts on everything the negotiation has to say; `Some` when it ended.
    async fn drain(&mut self, ch: &mut Channels) -> Option<Outcome> {
        let mut end = None;
        while let Some(o) = self.negotiation.poll_output() {
            let o = match o {
                NegotiationOutput::Transmit(t) => {
                    // Consecutive datagrams to one peer of one size go out
                    // in one call (GSO); anything else flushes them first.
                    if !self.gso.push(&t, &self.batched) {
                        self.flush_gso().await;
                        if !self.gso.push(&t, &self.batched) {
                            self.transmit(t).await;
                        }
                    }
                    continue;
                }
                other => other,
            };
            self.flush_gso().await;
            match o {
                NegotiationOutput::Transmit(t) => self.transmit(t).await,
                NegotiationOutput::Signal(msg) => self.signal(msg).await,
                NegotiationOutput::Sockets(r) => self.probe_sockets(r).await,
                NegotiationOutput::Event(e) => {
                    if let Some(outcome) = self.on_event(ch, e) {
                        end = Some(outcome);
                    }
                }
            }
        }
        self.flush_gso().await;
        end
    }

    /// Send the datagrams waiting for one GSO call.
    async fn flush_gso(&mut self) {
        let Some(batch) = self.gso.take() else {
            return;
        };
        let (Some(sock), Some(state)) = (
            self.sockets.get(&batch.source),
            self.batched.get(&batch.source),
        ) else {
            return;
        };
        gso::send(sock, state, &batch).await;
        self.gso.give_back(batch);
    }

    /// Sends a message to the signaling server; a failure means it is gone.
    async fn signal(&mut self, msg: ClientMsg) {
        let Some(c) = self.client.as_mut() else {
            return;
        };
        if let Err(e) = c.send(msg).await {
            tracing::debug!("signaling send: {e}");
            self.signaling_gone(Instant::now());
        }
    }

    fn on_event(&mut self, ch: &mut Channels, e: NegotiationEvent) -> Option<Outcome> {
        let event = match e {
            NegotiationEvent::LocalCandidate(c) => ConnectionEvent::LocalCandidate(c),
            NegotiationEvent::RemoteCandidate(c) => ConnectionEvent::RemoteCandidate(c),
            NegotiationEvent::GatheringComplete => ConnectionEvent::GatheringComplete,
            NegotiationEvent::TurnAllocated { server, relayed } => {
                ConnectionEvent::TurnAllocated { server, relayed }
            }
            NegotiationEvent::TurnRedirected {
                from,
                to,
                transport,
                domain,
            } => {
                if transport != Transport::Udp {
                    self.follow_stream(from, to, transport, domain);
                }
                ConnectionEvent::TurnRedirected { from, to }
            }
            NegotiationEvent::TurnFailed {
                server,
                code,
                reason,
            } => ConnectionEvent::TurnFailed {
                server,
                code,
                reason,
            },
            NegotiationEvent::StateChanged(s) => ConnectionEvent::StateChanged(s),
            NegotiationEvent::Connected(path) => {
                let _ = ch.path.send(Some(path.clone()));
                ch.emit(ConnectionEvent::Connected(path));
                if self.config.check_list_interval.is_some() {
                    let stats = self.negotiation.session().agent().stats();
                    ch.emit(ConnectionEvent::CheckList(Box::new(stats)));
                }
                if let Some(r) = ch.ready.take() {
                    let _ = r.send(Ok(ConnectedInfo {
                        peer_id: self.peer.clone(),
                        peer_name: self.peer_name.clone(),
                        controlling: self.controlling,
                        local_fingerprint: self.negotiation.session().local_fingerprint(),
                        remote_fingerprint: self.remote_fingerprint.clone(),
                    }));
                }
                return None;
            }
            NegotiationEvent::PathChanged(path) => {
                let _ = ch.path.send(Some(path.clone()));
                ch.emit(ConnectionEvent::PathChanged(path));
                // The check list that found the new path.
                if std::mem::take(&mut self.restarting) && self.config.check_list_interval.is_some()
                {
                    let stats = self.negotiation.session().agent().stats();
                    ch.emit(ConnectionEvent::CheckList(Box::new(stats)));
                }
                return None;
            }
            NegotiationEvent::Disconnected => {
                let _ = ch.path.send(None);
                ConnectionEvent::Disconnected
            }
            NegotiationEvent::Restarting => {
                self.restarting = true;
                ConnectionEvent::Restarting
            }
            NegotiationEvent::SignalingLost => ConnectionEvent::SignalingLost,
            NegotiationEvent::SignalingInterrupted => ConnectionEvent::SignalingInterrupted,
            // The driver reports it with the URL when it reconnects.
            NegotiationEvent::SignalingRestored => return None,
            NegotiationEvent::Secured {
                remote_fingerprint,
                version,
            } => {
                self.remote_fingerprint = Some(remote_fingerprint.clone());
                ConnectionEvent::Secured {
                    remote_fingerprint,
                    version,
                }
            }
            NegotiationEvent::Channel(e) => {
                self.channel_event(ch, e);
                return None;
            }
            NegotiationEvent::HardNat(e) => ConnectionEvent::HardNat(e),
            NegotiationEvent::Failed(f) => return Some(Err(connect_error(f))),
            NegotiationEvent::Closed(r) => return Some(Ok(r)),
        };
        ch.emit(event);
        None
    }

    /// Open a channel for the application.
    fn open_channel(
        &mut self,
        ch: &mut Channels,
        options: ChannelOptions,
    ) -> Result<Channel, SendError> {
        let (label, protocol) = (options.label.clone(), options.protocol.clone());
        let (ordered, reliability) = (options.ordered, options.reliability);
        let id = match self.negotiation.open_channel(Instant::now(), options) {
            Ok(Some(id)) => id,
            // Connected means the role is known: the id is too.
            Ok(None) => return Err(SendError::Closed(ChannelClosed::Channel)),
            Err(e) => return Err(send_error(e)),
        };
        let info = ChannelInfo {
            id,
            label,
            protocol,
            ordered,
            reliability,
        };
        Ok(self.hand_out(ch, info))
    }

    /// Make the handle of a channel and keep its slot.
    fn hand_out(&mut self, ch: &Channels, info: ChannelInfo) -> Channel {
        let id = info.id;
        let (channel, slot) = channel::pair(
            info,
            ch.command_tx.clone(),
            ch.released_tx.clone(),
            self.config.receive_queue_limit,
            ch.reason.clone(),
        );
        let _ = self
            .negotiation
            .session_mut()
            .set_buffered_amount_low_threshold(id, LOW_WATER);
        self.channels.insert(id, slot);
        channel
    }

    /// Hand the session what the application took from a channel.
    fn release(&mut self, now: Instant, id: ChannelId) {
        if let Some(slot) = self.channels.get(&id) {
            let bytes = slot.taken.swap(0, Ordering::AcqRel);
            self.negotiation.release(now, id, bytes);
        }
    }

    /// Send a message; answer at once, or once the buffered amount falls
    /// when it is over the high-water mark (back-pressure).
    fn send(
        &mut self,
        id: ChannelId,
        data: &[u8],
        binary: bool,
        done: oneshot::Sender<Result<(), SendError>>,
    ) {
        if let Err(e) = self
            .negotiation
            .send_deferred(Instant::now(), id, data, binary)
        {
            let _ = done.send(Err(send_error(e)));
            return;
        }
        let over = self.negotiation.session_mut().buffered_amount(id) > HIGH_WATER;
        match self.channels.get_mut(&id) {
            Some(slot) if over => slot.waiting.push(done),
            _ => {
                let _ = done.send(Ok(()));
            }
        }
    }

    fn channel_event(&mut self, ch: &Channels, e: ChannelEvent) {
        match e {
            ChannelEvent::ChannelOpened {
                id,
                label,
                protocol,
                ordered,
                reliability,
                ..
            } => {
                let info = ChannelInfo {
                    id,
                    label,
                    protocol,
                    ordered,
                    reliability,
                };
                let channel = self.hand_out(ch, info);
                let _ = ch.incoming.send(channel);
            }
            ChannelEvent::Message { id, data, binary } => {
                if let Some(slot) = self.channels.get(&id) {
                    let _ = slot.messages.send(Message {
                        data: Bytes::from(data),
                        binary,
                    });
                }
            }
            ChannelEvent::BufferedAmountLow { id } => {
                if let Some(slot) = self.channels.get_mut(&id) {
                    for w in slot.waiting.drain(..) {
                        let _ = w.send(Ok(()));
                    }
                }
            }
            ChannelEvent::ChannelClosed { id } => {
                if let Some(slot) = self.channels.remove(&id) {
                    slot.closed.store(true, Ordering::Relaxed);
                    for w in slot.waiting {
                        let _ = w.send(Err(SendError::Closed(ChannelClosed::Channel)));
                    }
                }
            }
            _ => {}
        }
    }

    /// A TURN server sent us to another (300) over TCP or TLS: connect
    /// there the way we reached it (same local address; in TLS the same
    /// name unless the 300 named another), before the Allocate for it goes
    /// out, and close the connection to `from` once no TURN client uses it.
    fn follow_stream(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        transport: Transport,
        domain: Option<String>,
    ) {
        let Some(old) = self.streams.get(&(from, transport)).cloned() else {
            return;
        };
        if !self.streams.contains_key(&(to, transport)) {
            self.dial(to, domain.unwrap_or(old.host), transport, old.local);
        }
        if !self.negotiation.session().uses_turn_server(from, transport) {
            self.streams.remove(&(from, transport));
        }
    }

    /// Sends one of the session's transmits from its socket or stream.
    async fn transmit(&mut self, t: Transmit) {
        if let Some(tcp) = self.ice_tcp.as_mut().filter(|tcp| tcp.owns(&t)) {
            tcp.send(t);
            return;
        }
        match t.transport {
            Transport::Udp => {
                if let Some(s) = self.sockets.get(&t.source) {
                    if let Some(m) = self.mdns.as_mut().filter(|m| m.local == t.source) {
                        m.before_send(s);
                    }
                    if let Err(e) = s.send_to(&t.contents, t.destination).await {
                        tracing::debug!("send {} -> {}: {e}", t.source, t.destination);
                    }
                }
            }
            tr => {
                if !self.streams.contains_key(&(t.destination, tr)) {
                    self.redial(t.destination, tr);
                }
                if let Some(s) = self.streams.get(&(t.destination, tr)) {
                    let _ = s.writer.send(t.contents).await;
                }
            }
        }
    }

    /// The session sends to a TURN server whose TCP/TLS connection ended
    /// (a restart's new Allocate, say): dial it again the way it was
    /// reached (same local address and name), at most once a second. The
    /// datagram waits in the new connection's queue; if the server cannot
    /// be reached, [`net::StreamFailed`] says so and the TURN client fails
    /// at once, as for the first connection.
    fn redial(&mut self, server: SocketAddr, transport: Transport) {
        let now = Instant::now();
        let Some(lost) = self.lost_streams.get_mut(&(server, transport)) else {
            return;
        };
        if lost
            .redialled
            .is_some_and(|l| now.duration_since(l) < REDIAL_INTERVAL)
        {
            return;
        }
        lost.redialled = Some(now);
        let (host, local) = (lost.host.clone(), lost.local);
        tracing::debug!("TURN {transport:?} connection to {server}: dialling again");
        self.dial(server, host, transport, local);
    }

    /// Opens a TCP/TLS connection to TURN server `server` from host
    /// address `local` (TLS checks `host`) and keeps it; its end or a
    /// failure to open it comes back on `stream_failed`.
    fn dial(&mut self, server: SocketAddr, host: String, transport: Transport, local: SocketAddr) {
        let stream = net::spawn_stream(
            &mut self._tasks,
            server,
            host,
            transport,
            local,
            self.config.tls_roots.clone(),
            self.inbound_tx.clone(),
            self.stream_failed.0.clone(),
        );
        self.streams.insert((server, transport), stream);
    }

    /// Closes the negotiation (bye, TURN allocations deleted) and drives it
    /// until the session reports closed, which takes at most
    /// [`crate::CLOSE_TIMEOUT`]. Idempotent.
    async fn shutdown(&mut self, ch: &mut Channels) {
        self.negotiation.close(Instant::now());
        self.upnp.delete().await;
        // A guard in case the clock and the timer disagree.
        let limit = tokio::time::Instant::now() + crate::CLOSE_TIMEOUT * 2;
        loop {
            // Events after close carry nothing the application needs.
            let _ = self.drain(ch).await;
            if self.negotiation.is_closed() {
                return;
            }
            let wake = self
                .negotiation
                .poll_timeout()
                .map_or(limit, tokio::time::Instant::from_std)
                .min(limit);
            tokio::select! {
                i = self.hosts.readable() => {
                    let now = Instant::now();
                    let n = self.hosts.try_read(i, now);
                    if n > 0 {
                        self.negotiation.handle_inputs(now, self.hosts.datagrams(i, n));
                    }
                }
                Some(inb) = self.inbound.recv() => {
                    for d in inb.datagrams() {
                        let _ = self.negotiation.handle_input(Instant::now(), d);
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    if wake >= limit {
                        return;
                    }
                    self.negotiation.handle_timeout(Instant::now());
                }
            }
        }
    }
}

/// A refused channel command as the application sees it.
fn send_error(e: SessionError) -> SendError {
    match e {
        SessionError::Channel(p2p_datachannel::ChannelError::MessageTooLarge { len, max }) => {
            SendError::TooLarge { len, max }
        }
        SessionError::Channel(p2p_datachannel::ChannelError::UnknownChannel(_))
        | SessionError::Channel(p2p_datachannel::ChannelError::ChannelClosed(_)) => {
            SendError::Closed(ChannelClosed::Channel)
        }
        _ => SendError::Closed(ChannelClosed::Connection(CloseReason::Local)),
    }
}
