//! The machine: one SCTP association (on `sctp-proto`) and its channels.
//!
//! This file holds the association's life (start, input, timers, close,
//! abort, liveness) and the plumbing between the library's polls and our
//! output queue; `channels.rs` holds the channel commands and what the
//! library's stream events mean for them.

mod channels;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use p2p_proto::{Datagram, FiveTuple, Handled, Machine, Transmit};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sctp_proto::{
    Association, AssociationError, AssociationHandle, ClientConfig, DatagramEvent, Endpoint,
    EndpointConfig, EndpointEvent, Event, Payload, ServerConfig, TransportConfig,
};

use crate::config::{SctpConfig, SctpRole};
use crate::event::{ChannelEvent, CloseReason, SctpOutput};
use crate::wire::{self, chunk, Stripped};

use channels::Channel;

/// How long a SHUTDOWN we sent, or one the peer sent, may take to finish
/// before the association is dropped without waiting further.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Bound on the rounds of one pump (each round drains the library's
/// events and packets; a round that finds nothing ends it).
const PUMP_ROUNDS: usize = 64;

/// Where the association is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Created; the first `handle_timeout` starts it.
    Idle,
    /// Started; INIT sent (client) or awaited (server).
    Connecting,
    /// COOKIE-ACK seen: channels run.
    Established,
    /// `Closed` was reported; a SHUTDOWN handshake may still be finishing
    /// until the deadline.
    Closing(Instant),
    /// Over.
    Closed,
}

/// The most DATA packets kept while waiting for the COOKIE-ACK.
const EARLY_DATA: usize = 64;

/// WebRTC data channels on one SCTP association, sans-IO.
///
/// Input: the plaintext SCTP packets a DTLS endpoint delivers (one per
/// datagram) through [`Machine::handle_input`]. Output: SCTP packets for
/// the DTLS endpoint to encrypt ([`SctpOutput::Transmit`], addressed on the
/// path's [`FiveTuple`]) and [`ChannelEvent`]s, from
/// [`Machine::poll_output`], in the order they happened.
///
/// Drive it as every machine of the stack: call
/// [`handle_timeout`](Machine::handle_timeout) once to start it (the DTLS
/// client sends INIT then) and whenever [`poll_timeout`](Machine::poll_timeout)
/// comes; after every call or command, drain [`poll_output`](Machine::poll_output).
pub struct SctpAssociation {
    config: SctpConfig,
    path: FiveTuple,
    endpoint: Endpoint,
    transport: Arc<TransportConfig>,
    assoc: Option<(AssociationHandle, Association)>,
    phase: Phase,
    /// Packets of DATA that reached the client before the COOKIE-ACK (a
    /// reordering, or a lost COOKIE-ACK): the library would acknowledge
    /// them and never deliver them, so they wait for the COOKIE-ACK.
    early_data: Vec<Vec<u8>>,
    channels: HashMap<u16, Channel>,
    out: VecDeque<SctpOutput>,
    rng: SmallRng,
    /// Our verification tag (the peer writes it on every packet), read
    /// from the INIT or INIT ACK we sent.
    my_tag: Option<u32>,
    /// The peer's verification tag, read from the packets we send.
    peer_tag: Option<u32>,
    last_heard: Option<Instant>,
    last_heartbeat: Option<Instant>,
    /// We called `close` (a SHUTDOWN of ours is under way).
    local_close: bool,
    /// `close` waits for the data to be acknowledged before SHUTDOWN.
    shutdown_pending: bool,
    /// The endpoint was told our association is drained (telling it twice
    /// panics inside the library).
    drained: bool,
    /// A gather of the library's packets is owed, at this instant.
    gather_due: Option<Instant>,
    /// The last SACK the library sent (a packet of that one chunk), for
    /// a window update; empty before the first.
    last_sack: Vec<u8>,
    /// The window that SACK advertised.
    sack_rwnd: u32,
    /// Bytes read from the library's receive buffer since that SACK.
    read_since_sack: usize,
    /// The last DATA packet that came while our window was closed (the
    /// peer's zero-window probe, which the library drops), with its TSN,
    /// until a SACK acknowledges it.
    probe: Option<(u32, Vec<u8>)>,
}

impl std::fmt::Debug for SctpAssociation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SctpAssociation")
            .field("role", &self.config.role)
            .field("established", &self.is_established())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl SctpAssociation {
    /// An idle association for the DTLS connection on `path`.
    pub fn new(config: SctpConfig, path: FiveTuple) -> Self {
        let unlimited = |n: u32| if n == 0 { u32::MAX } else { n };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        let transport = Arc::new(
            TransportConfig::default()
                .with_max_receive_message_size(unlimited(config.local_max_message_size))
                .with_max_send_message_size(unlimited(config.remote_max_message_size))
                .with_max_receive_buffer_size(config.receive_buffer)
                .with_max_init_retransmits(Some(config.max_init_retransmits))
                // The library never gives up on DATA (its T3-rtx failure is
                // a no-op); liveness is ours (heartbeats, dead-peer timeout).
                .with_max_data_retransmits(None)
                .with_rto_initial_ms(ms(config.rto_initial))
                .with_rto_min_ms(ms(config.rto_min))
                .with_rto_max_ms(ms(config.rto_max))
                .with_local_port(config.local_port)
                .with_remote_port(config.remote_port),
        );
        let mut endpoint_config = EndpointConfig::new();
        // The library's figure is the DATA payload: packet less the common
        // header (12) and a DATA chunk header (16), and a multiple of four,
        // since the chunk is padded to four bytes on the wire.
        let payload = config.max_packet_size.saturating_sub(28) & !3;
        endpoint_config.max_payload_size(payload.max(64));
        let mut server = ServerConfig::new();
        server.transport = transport.clone();
        let endpoint = Endpoint::new(Arc::new(endpoint_config), Some(Arc::new(server)));
        let rng = match config.rng_seed {
            Some(s) => SmallRng::seed_from_u64(s),
            None => SmallRng::from_entropy(),
        };
        SctpAssociation {
            config,
            path,
            endpoint,
            transport,
            assoc: None,
            phase: Phase::Idle,
            early_data: Vec::new(),
            channels: HashMap::new(),
            out: VecDeque::new(),
            rng,
            my_tag: None,
            peer_tag: None,
            last_heard: None,
            last_heartbeat: None,
            local_close: false,
            shutdown_pending: false,
            drained: false,
            gather_due: None,
            last_sack: Vec::new(),
            sack_rwnd: 0,
            read_since_sack: 0,
            probe: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SctpConfig {
        &self.config
    }

    /// The path transmits go out on (DTLS's 5-tuple).
    pub fn path(&self) -> FiveTuple {
        self.path
    }

    /// Send on another path from now on (ICE switched pairs).
    pub fn set_path(&mut self, path: FiveTuple) {
        self.path = path;
    }

    /// Whether the association is established (and not closed).
    pub fn is_established(&self) -> bool {
        self.phase == Phase::Established
    }

    /// Whether `Closed` was reported.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closing(_) | Phase::Closed)
    }

    /// Whether nothing more will go out: closed, and a SHUTDOWN handshake
    /// begun by [`close`](SctpAssociation::close) finished or given up.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The peer's max-message-size changed (a later SDP, RFC 8841): `None`
    /// if it has no `a=max-message-size` (64 KiB), `Some(0)` for no limit.
    pub fn set_remote_max_message_size(&mut self, n: Option<u32>) {
        let n = n.unwrap_or(crate::config::DEFAULT_REMOTE_MAX_MESSAGE_SIZE);
        self.config.remote_max_message_size = n;
        if let Some((_, a)) = self.assoc.as_mut() {
            a.set_max_send_message_size(if n == 0 { u32::MAX } else { n });
        }
    }

    /// End the association gracefully: the data already given is delivered
    /// (acknowledged by the peer), then SHUTDOWN; the peer reports
    /// `Closed(PeerShutdown)` when it arrives. `Closed(LocalClose)` comes
    /// out now. Data not delivered within the closing grace is given up
    /// with an ABORT. Before the association is established this is
    /// [`abort`](Self::abort).
    pub fn close(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        if self.assoc.is_none() || self.phase != Phase::Established {
            self.abort(now);
            return;
        }
        self.local_close = true;
        // The library sends SHUTDOWN as soon as nothing is in flight, even
        // with data still queued behind it: the peer would take the
        // SHUTDOWN for the end and drop the rest. SHUTDOWN waits here until
        // every byte written is acknowledged.
        self.shutdown_pending = true;
        self.report_closed(now, CloseReason::LocalClose);
        self.try_shutdown();
        self.touch(now);
    }

    /// Bytes written to the library and not yet acknowledged, on every
    /// stream.
    fn unacknowledged(&mut self) -> usize {
        let Some((_, a)) = self.assoc.as_mut() else {
            return 0;
        };
        let ids = a.stream_ids();
        ids.into_iter()
            .filter_map(|id| a.stream(id).ok().and_then(|s| s.buffered_amount().ok()))
            .sum()
    }

    /// Send the SHUTDOWN a `close` waits to send, once nothing is left.
    fn try_shutdown(&mut self) {
        if !self.shutdown_pending || self.unacknowledged() > 0 {
            return;
        }
        self.shutdown_pending = false;
        if let Some((_, a)) = self.assoc.as_mut() {
            let _ = a.shutdown();
        }
    }

    /// End the association at once with ABORT (User-Initiated Abort): the
    /// peer reports `Closed(PeerAbort)` when it arrives, and
    /// `Closed(LocalAbort)` comes out now.
    pub fn abort(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        self.abort_with(
            now,
            wire::cause::USER_INITIATED_ABORT,
            CloseReason::LocalAbort,
        );
    }

    /// ABORT with `cause` (when we know the peer's tag), drop the library's
    /// association, report `reason`.
    fn abort_with(&mut self, now: Instant, cause: u16, reason: CloseReason) {
        if let Some(tag) = self.peer_tag {
            let p = wire::abort(self.config.local_port, self.config.remote_port, tag, cause);
            self.push_transmit(p);
        }
        if let Some((_, a)) = self.assoc.as_mut() {
            let _ = a.close();
        }
        self.report_closed(now, reason);
        self.finish();
    }

    /// Report `Closed(reason)` (with every open channel closed before it)
    /// once; from now on commands are refused.
    fn report_closed(&mut self, now: Instant, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        let mut ids: Vec<u16> = self.channels.keys().copied().collect();
        ids.sort_unstable();
        for id in &ids {
            // What a paused channel left in the library's receive buffer
            // was acknowledged to the peer: deliver it before the end
            // (it is in memory already).
            if self.channels.get(id).is_some_and(|c| c.paused) {
                self.read(*id, false);
            }
        }
        for id in ids {
            // Every channel in the table is known to the application
            // (ours from `open_channel`, the peer's from `ChannelOpened`).
            self.channels.remove(&id);
            self.event(ChannelEvent::ChannelClosed {
                id: crate::ChannelId(id),
            });
        }
        self.event(ChannelEvent::Closed(reason));
        self.phase = Phase::Closing(now + SHUTDOWN_GRACE);
    }

    /// Drop the library's association: nothing more goes out or comes in.
    fn finish(&mut self) {
        if let Some((h, _)) = self.assoc.take() {
            self.drain_endpoint(h, EndpointEvent::drained());
        }
        self.phase = Phase::Closed;
    }

    /// Pass the association's one endpoint event (`Drained`) on, once.
    fn drain_endpoint(&mut self, h: AssociationHandle, e: EndpointEvent) {
        if e.is_drained() && !self.drained {
            self.drained = true;
            let _ = self.endpoint.handle_event(h, e);
        }
    }

    fn event(&mut self, e: ChannelEvent) {
        self.out.push_back(SctpOutput::Event(e));
    }

    fn push_transmit(&mut self, contents: Vec<u8>) {
        self.out.push_back(SctpOutput::Transmit(Transmit::new(
            self.path.transport,
            self.path.local,
            self.path.remote,
            contents,
        )));
    }

    /// Start: the DTLS client creates the association (INIT goes out).
    fn start(&mut self) {
        self.phase = Phase::Connecting;
        if self.config.role != SctpRole::Client || self.assoc.is_some() {
            return;
        }
        let mut config = ClientConfig::new();
        config.transport = self.transport.clone();
        match self.endpoint.connect(config, self.path.remote) {
            Ok(pair) => self.assoc = Some(pair),
            // Only a zero port or address gets here: nothing can ever flow.
            Err(_) => {
                self.phase = Phase::Closed;
                self.event(ChannelEvent::Closed(CloseReason::HandshakeFailed));
            }
        }
    }

    /// Something may have given the library packets to send: gather them
    /// when the driver next drains (`poll_output`). Each of the library's
    /// gathers walks its whole in-flight queue, so gathering once per drain
    /// rather than once per command or datagram is most of our throughput.
    pub(super) fn touch(&mut self, now: Instant) {
        if self.assoc.is_some() {
            self.gather_due = Some(self.gather_due.map_or(now, |t| t.max(now)));
        }
    }

    /// Act on the library's events. `input` is the packet just handed in,
    /// if any (it tells why the library closed).
    fn on_events(&mut self, now: Instant, input: Option<&[u8]>) {
        // The library's one endpoint event is `Drained`, which it raises as
        // soon as a SHUTDOWN starts; passing it on then would unroute the
        // SHUTDOWN ACK. `finish` tells the endpoint instead.
        if let Some((_, a)) = self.assoc.as_mut() {
            while a.poll_endpoint_event().is_some() {}
        }
        self.try_shutdown();
        while let Some(e) = self.assoc.as_mut().and_then(|(_, a)| a.poll()) {
            self.on_library_event(now, e, input);
        }
        // A SHUTDOWN from the peer: the library reports the loss only when
        // the handshake completes, a round trip later; the peer is gone now.
        if self.phase == Phase::Established
            && !self.local_close
            && self.assoc.as_ref().is_some_and(|(_, a)| a.is_closing())
        {
            self.report_closed(now, CloseReason::PeerShutdown);
        }
        if let Phase::Closing(_) = self.phase {
            if self.assoc.as_ref().is_none_or(|(_, a)| a.is_closed()) {
                self.finish();
            }
        }
    }

    /// Move the library's packets to our output queue (one gather returns
    /// all it may send now), and act on any events that raised.
    fn gather(&mut self, now: Instant) {
        for _ in 0..PUMP_ROUNDS {
            let Some(t) = self.assoc.as_mut().and_then(|(_, a)| a.poll_transmit(now)) else {
                break;
            };
            if let Payload::RawEncode(packets) = t.payload {
                for p in packets {
                    self.on_outgoing(p);
                }
            }
            let before = self.out.len();
            self.on_events(now, None);
            // Events (a DCEP ACK written, a reset answered) may have given
            // the library more to send.
            if self.out.len() == before {
                break;
            }
        }
    }

    /// A packet the library wants sent: learn the tags from it (two
    /// fixed-offset reads) and queue it.
    fn on_outgoing(&mut self, p: Bytes) {
        if self.my_tag.is_none() {
            self.my_tag = wire::initiate_tag(&p);
        }
        if let Some(tag) = wire::verification_tag(&p).filter(|t| *t != 0) {
            self.peer_tag = Some(tag);
        }
        // The library sends each SACK as a packet of its own: keep the
        // last (a few dozen bytes) for a window update.
        if let Some(rwnd) = wire::sack_rwnd(&p) {
            self.last_sack.clear();
            self.last_sack.extend_from_slice(&p);
            self.sack_rwnd = rwnd;
            self.read_since_sack = 0;
            if let (Some((tsn, _)), Some(cum)) = (&self.probe, wire::sack_cumulative_tsn(&p)) {
                // Serial number arithmetic (RFC 1982): TSN at or below the
                // cumulative ack was taken.
                if cum.wrapping_sub(*tsn) as i32 >= 0 {
                    self.probe = None;
                }
            }
        }
        self.push_transmit(Vec::from(p));
    }

    /// Whether the window of our last SACK was closed (less than a packet).
    fn window_closed(&self) -> bool {
        !self.last_sack.is_empty() && self.sack_rwnd < self.config.max_packet_size
    }

    /// A paused channel read on and the window reopened: the peer's
    /// zero-window probe, which the library dropped while the window was
    /// closed, is handed to it again (marked for an immediate SACK), as if
    /// the peer had retransmitted it. Its acknowledgement frees the peer's
    /// congestion window at once; otherwise the peer would wait for its
    /// retransmission timer, backed off over the closed window (seconds).
    pub(super) fn reinject_probe(&mut self, now: Instant) {
        if self.window_closed() {
            return;
        }
        let Some((_, mut p)) = self.probe.take() else {
            return;
        };
        wire::set_immediate_sack(&mut p);
        let d = Datagram::new(self.path.transport, self.path.remote, self.path.local, &p);
        let _ = self.handle_input(now, d);
    }

    /// A paused channel read on: if the window of our last SACK was less
    /// than half the receive buffer, send that SACK again with the window
    /// grown by what was read since (RFC 9260 §6.2 allows a SACK "to update
    /// the offered window as the receiving application consumes new
    /// data"). Without it the peer would learn only from its next
    /// zero-window probe, one backed-off retransmission timeout later.
    pub(super) fn window_update(&mut self) {
        let buffer = self.config.receive_buffer;
        if self.last_sack.is_empty() || self.read_since_sack == 0 || self.sack_rwnd >= buffer / 2 {
            return;
        }
        let grown = u32::try_from(self.read_since_sack).unwrap_or(u32::MAX);
        let rwnd = self.sack_rwnd.saturating_add(grown).min(buffer);
        if let Some(p) = wire::window_update(&self.last_sack, rwnd) {
            self.sack_rwnd = rwnd;
            self.read_since_sack = 0;
            self.push_transmit(p);
        }
    }

    fn on_library_event(&mut self, now: Instant, e: Event, input: Option<&[u8]>) {
        match e {
            Event::Connected if self.phase == Phase::Connecting => {
                self.phase = Phase::Established;
                self.last_heard = Some(now);
                self.event(ChannelEvent::Connected);
                self.open_pending_channels();
                for packet in std::mem::take(&mut self.early_data) {
                    let d = Datagram::new(
                        self.path.transport,
                        self.path.remote,
                        self.path.local,
                        &packet,
                    );
                    let _ = self.handle_input(now, d);
                }
            }
            Event::HandshakeFailed { .. } => {
                self.report_closed(now, CloseReason::HandshakeFailed);
                self.finish();
            }
            Event::AssociationLost { reason } => self.on_lost(now, reason, input),
            Event::Stream(se) => self.on_stream_event(se),
            _ => {}
        }
    }

    /// The library closed the association. Tell why from the packet that
    /// made it (a cold path: the chunk walk runs once per association).
    fn on_lost(&mut self, now: Instant, reason: AssociationError, input: Option<&[u8]>) {
        if self.is_closed() {
            self.finish();
            return;
        }
        let has = |t| input.is_some_and(|p| wire::has_chunk(p, t));
        let reason = match reason {
            AssociationError::TimedOut => CloseReason::Timeout,
            // The library sent its own ABORT (Out of Resource).
            AssociationError::ReceiveBufferExhausted => CloseReason::ProtocolError,
            _ if has(chunk::ABORT) => CloseReason::PeerAbort,
            _ if has(chunk::SHUTDOWN)
                || has(chunk::SHUTDOWN_ACK)
                || has(chunk::SHUTDOWN_COMPLETE) =>
            {
                CloseReason::PeerShutdown
            }
            // The library gave up on the peer's packet (an oversized
            // message, an unhandled chunk) and closed without a word to the
            // peer: tell it, so it learns at once.
            _ => {
                self.abort_with(
                    now,
                    wire::cause::PROTOCOL_VIOLATION,
                    CloseReason::ProtocolError,
                );
                return;
            }
        };
        self.report_closed(now, reason);
        self.finish();
    }

    /// The next liveness deadline: a heartbeat or the dead-peer verdict.
    fn liveness_deadline(&self) -> Option<Instant> {
        if self.phase != Phase::Established {
            return None;
        }
        let heard = self.last_heard?;
        let hb = self.config.heartbeat_interval.map(|i| {
            let since = self.last_heartbeat.map_or(heard, |h| h.max(heard));
            since + i
        });
        let dead = self.config.dead_peer_timeout.map(|d| heard + d);
        [hb, dead].into_iter().flatten().min()
    }

    fn on_liveness_timer(&mut self, now: Instant) {
        let Some(heard) = self.last_heard else { return };
        if self
            .config
            .dead_peer_timeout
            .is_some_and(|d| now >= heard + d)
        {
            self.abort_with(now, wire::cause::PROTOCOL_VIOLATION, CloseReason::Timeout);
            return;
        }
        if let (Some(i), Some(tag)) = (self.config.heartbeat_interval, self.peer_tag) {
            let since = self.last_heartbeat.map_or(heard, |h| h.max(heard));
            if now >= since + i {
                self.last_heartbeat = Some(now);
                let nonce = self.rng.gen();
                let p =
                    wire::heartbeat(self.config.local_port, self.config.remote_port, tag, nonce);
                self.push_transmit(p);
            }
        }
    }
}

impl SctpAssociation {
    /// One SCTP packet the DTLS endpoint delivered, as
    /// [`handle_input`](Machine::handle_input) takes it, but owned: the
    /// library is given the buffer itself rather than a copy of it (one
    /// allocation and one copy less per datagram on the receive path).
    pub fn handle_packet(&mut self, now: Instant, packet: Vec<u8>) -> Handled {
        let packet = Bytes::from(packet);
        // A second handle on the same bytes (a reference count, no copy)
        // to read the packet by after the library has taken it.
        let view = packet.clone();
        self.input(now, &view, Some(packet))
    }

    /// The input of both forms: `owned`, when given, is the packet's bytes
    /// (`contents`), which the library takes instead of a copy.
    fn input(&mut self, now: Instant, contents: &[u8], owned: Option<Bytes>) -> Handled {
        if self.phase == Phase::Closed {
            return Handled::Taken;
        }
        if contents.len() < wire::COMMON_HEADER_LEN {
            return Handled::Taken;
        }
        if self.config.role == SctpRole::Client
            && self.phase == Phase::Connecting
            && wire::has_chunk(contents, chunk::DATA)
            && !wire::has_chunk(contents, chunk::COOKIE_ACK)
        {
            if self.early_data.len() < EARLY_DATA {
                self.early_data.push(contents.to_vec());
            }
            return Handled::Taken;
        }
        // One DATA or SACK alone (the data path) goes straight on; anything
        // else may hold a HEARTBEAT ACK, which the library would take for
        // an unknown chunk and close on.
        if self.window_closed() {
            if let Some(tsn) = wire::data_tsn(contents) {
                self.probe = Some((tsn, contents.to_vec()));
            }
        }
        let data = match wire::first_chunk(contents) {
            Some((t, true)) if t != chunk::HEARTBEAT_ACK => bytes_of(contents, owned),
            _ => match wire::strip_heartbeat_acks(contents) {
                Stripped::Untouched => bytes_of(contents, owned),
                Stripped::Empty => {
                    if wire::checksum_ok(contents)
                        && wire::verification_tag(contents) == self.my_tag
                    {
                        self.last_heard = Some(now);
                    }
                    return Handled::Taken;
                }
                Stripped::Rest(rest) => Bytes::from(rest),
            },
        };
        match self
            .endpoint
            .handle(now, self.path.remote, None, None, data)
        {
            None => return Handled::Taken,
            Some((h, DatagramEvent::NewAssociation(a))) => {
                if self.assoc.is_none() && self.phase != Phase::Closed {
                    self.assoc = Some((h, a));
                    if self.phase == Phase::Idle {
                        self.phase = Phase::Connecting;
                    }
                } else {
                    // A second association (the peer's INIT crossing ours,
                    // or a restart): ours stands; the peer completes the
                    // handshake through our INIT (RFC 9260 §5.2.1).
                    let _ = self.endpoint.handle_event(h, EndpointEvent::drained());
                    return Handled::Taken;
                }
            }
            Some((h, DatagramEvent::AssociationEvent(ev))) => match self.assoc.as_mut() {
                Some((mine, a)) if *mine == h => a.handle_event(ev),
                _ => return Handled::Taken,
            },
        }
        self.last_heard = Some(now);
        self.on_events(now, Some(contents));
        self.touch(now);
        Handled::Taken
    }
}

/// The packet for the library: the owned one if there is one, or a copy.
fn bytes_of(contents: &[u8], owned: Option<Bytes>) -> Bytes {
    owned.unwrap_or_else(|| Bytes::copy_from_slice(contents))
}

impl Machine for SctpAssociation {
    type Output = SctpOutput;

    fn handle_input(&mut self, now: Instant, datagram: Datagram<'_>) -> Handled {
        self.input(now, datagram.contents, None)
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Idle => self.start(),
            Phase::Closed => return,
            Phase::Closing(deadline) if now >= deadline => {
                if self.shutdown_pending {
                    // The data was not delivered in time: the peer learns
                    // from an ABORT rather than waiting for nothing.
                    if let Some(tag) = self.peer_tag {
                        let cause = wire::cause::USER_INITIATED_ABORT;
                        let p = wire::abort(
                            self.config.local_port,
                            self.config.remote_port,
                            tag,
                            cause,
                        );
                        self.push_transmit(p);
                    }
                }
                self.finish();
                return;
            }
            _ => {}
        }
        if let Some((_, a)) = self.assoc.as_mut() {
            a.handle_timeout(now);
        }
        if self.liveness_deadline().is_some_and(|d| now >= d) {
            self.on_liveness_timer(now);
        }
        self.on_events(now, None);
        self.touch(now);
    }

    fn poll_output(&mut self) -> Option<SctpOutput> {
        if self.out.is_empty() {
            if let Some(now) = self.gather_due.take() {
                self.gather(now);
            }
        }
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let library = match self.phase {
            Phase::Idle | Phase::Closed => None,
            _ => self.assoc.as_ref().and_then(|(_, a)| a.poll_timeout()),
        };
        let closing = match self.phase {
            Phase::Closing(d) => Some(d),
            _ => None,
        };
        [library, closing, self.liveness_deadline()]
            .into_iter()
            .flatten()
            .min()
    }
}
