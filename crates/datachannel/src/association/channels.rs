//! Channels: the commands on them, DCEP, and what the library's stream
//! events mean for them.
//!
//! A channel is the pair of SCTP streams with one id (RFC 8831 §6.4). Ours
//! get an id of our parity (RFC 8832 §6) and, unless pre-negotiated, start
//! with DATA_CHANNEL_OPEN; the peer's appear with its OPEN, which we ACK.
//! Closing resets our outgoing stream (RFC 8831 §6.7, RFC 6525); the peer
//! resets its own back, and either reset ends the channel on our side.

use std::collections::VecDeque;
use std::time::Instant;

use sctp_proto::{PayloadProtocolIdentifier as Ppid, ReliabilityType, StreamEvent};

use super::{Phase, SctpAssociation};
use crate::config::{ChannelOptions, SctpRole};
use crate::dcep::{DataChannelOpen, DcepMessage, Reliability};
use crate::event::{ChannelError, ChannelEvent, ChannelId};

/// Stream id 65535 is reserved (RFC 8831 §6.5: ids are 0..=65534).
const MAX_STREAM_ID: u16 = 65534;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Ours, before the association is up: nothing on the wire yet.
    Pending,
    /// Ours, OPEN sent, no ACK yet: messages may already go, ordered
    /// whatever the channel's delivery (RFC 8832 §6), so that none
    /// overtakes the OPEN.
    AwaitAck,
    /// Usable both ways.
    Open,
    /// We reset our outgoing stream; waiting for the resets to finish.
    Closing,
}

pub(super) struct Channel {
    options: ChannelOptions,
    state: State,
    /// Messages given before the channel could carry them (association
    /// not up).
    queue: VecDeque<(Vec<u8>, Ppid)>,
    queued_bytes: usize,
    low_threshold: usize,
    /// Bytes of messages handed to the application (in `Message` events)
    /// that it has not yet said it took ([`SctpAssociation::release`]).
    unread: usize,
    /// Reading the stream stopped at the receive queue limit: what the
    /// peer sends waits in SCTP's receive buffer, whose window closes.
    pub(super) paused: bool,
}

impl Channel {
    fn new(options: ChannelOptions, state: State, low_threshold: usize) -> Self {
        Channel {
            options,
            state,
            queue: VecDeque::new(),
            queued_bytes: 0,
            low_threshold,
            unread: 0,
            paused: false,
        }
    }

    fn writable(&self) -> bool {
        match self.state {
            State::Open | State::AwaitAck => true,
            State::Pending | State::Closing => false,
        }
    }
}

fn library_reliability(r: Reliability) -> (ReliabilityType, u32) {
    match r {
        Reliability::MaxRetransmits(n) => (ReliabilityType::Rexmit, n),
        Reliability::MaxPacketLifetime(ms) => (ReliabilityType::Timed, ms),
        _ => (ReliabilityType::Reliable, 0),
    }
}

/// The PPID and bytes a message travels as (RFC 8831 §6.6: SCTP cannot
/// carry an empty message, so it is one zero byte with an "empty" PPID).
fn wire_form(data: &[u8], binary: bool) -> (&[u8], Ppid) {
    match (data.is_empty(), binary) {
        (false, false) => (data, Ppid::String),
        (false, true) => (data, Ppid::Binary),
        (true, false) => (&[0], Ppid::StringEmpty),
        (true, true) => (&[0], Ppid::BinaryEmpty),
    }
}

impl SctpAssociation {
    /// Open a channel. With `negotiated: Some(id)` it is pre-negotiated on
    /// that stream (the peer opens the same one itself; no DCEP) and
    /// `ChannelOpen` comes once the association is up; otherwise it gets
    /// the lowest free stream id of our parity, DATA_CHANNEL_OPEN goes out
    /// once the association is up, and `ChannelOpen` comes with the ACK.
    /// Messages sent before then wait in the channel's buffer.
    pub fn open_channel(
        &mut self,
        now: Instant,
        options: ChannelOptions,
    ) -> Result<ChannelId, ChannelError> {
        if self.is_closed() {
            return Err(ChannelError::AssociationClosed);
        }
        if options.label.len() > usize::from(u16::MAX)
            || options.protocol.len() > usize::from(u16::MAX)
        {
            return Err(ChannelError::LabelTooLong);
        }
        let id = match options.negotiated {
            Some(id) if id > MAX_STREAM_ID => return Err(ChannelError::ReservedStreamId),
            Some(id) if self.channels.contains_key(&id) => {
                return Err(ChannelError::StreamIdInUse(id))
            }
            Some(id) => id,
            None => self.free_stream_id().ok_or(ChannelError::NoStreamId)?,
        };
        let low_threshold = self.config.buffered_amount_low_threshold;
        self.channels
            .insert(id, Channel::new(options, State::Pending, low_threshold));
        if self.phase == Phase::Established {
            self.activate(id);
            self.touch(now);
        }
        Ok(ChannelId(id))
    }

    /// The lowest stream id of our parity that neither a channel nor a
    /// stream the peer started uses (a scan, but only when opening).
    fn free_stream_id(&mut self) -> Option<u16> {
        let first = match self.config.role {
            SctpRole::Server => 1,
            _ => 0,
        };
        (first..=MAX_STREAM_ID).step_by(2).find(|id| {
            !self.channels.contains_key(id)
                && self
                    .assoc
                    .as_mut()
                    .is_none_or(|(_, a)| a.stream(*id).is_err())
        })
    }

    /// The association is up: put the channels opened so far on the wire.
    pub(super) fn open_pending_channels(&mut self) {
        let mut ids: Vec<u16> = self
            .channels
            .iter()
            .filter(|(_, c)| c.state == State::Pending)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            self.activate(id);
        }
    }

    /// Create our stream for a pending channel and send its OPEN (or, if
    /// pre-negotiated, report it open).
    fn activate(&mut self, id: u16) {
        let (Some((_, a)), Some(c)) = (self.assoc.as_mut(), self.channels.get_mut(&id)) else {
            return;
        };
        let stream = match a.open_stream(id, Ppid::Binary) {
            Ok(s) => Ok(s),
            // The peer sent on the (pre-negotiated) stream first.
            Err(_) => a.stream(id),
        };
        let Ok(mut s) = stream else {
            self.channels.remove(&id);
            self.event(ChannelEvent::ChannelClosed { id: ChannelId(id) });
            return;
        };
        // Until the peer ACKs our OPEN, an unordered channel's messages go
        // ordered (RFC 8832 §6): they may go at once, and none overtakes
        // the OPEN. `on_ack` makes the stream unordered.
        let (rel, value) = library_reliability(c.options.reliability);
        let unordered = !c.options.ordered && c.options.negotiated.is_some();
        let _ = s.set_reliability_params(unordered, rel, value);
        let _ = s.set_buffered_amount_low_threshold(c.low_threshold);
        if c.options.negotiated.is_some() {
            c.state = State::Open;
            self.event(ChannelEvent::ChannelOpen { id: ChannelId(id) });
        } else {
            let open = DcepMessage::Open(DataChannelOpen {
                ordered: c.options.ordered,
                reliability: c.options.reliability,
                priority: c.options.priority,
                label: c.options.label.clone(),
                protocol: c.options.protocol.clone(),
            });
            // Label and protocol lengths were checked by open_channel.
            let bytes = open.to_vec().unwrap_or_default();
            if s.write_with_ppi(&bytes, Ppid::Dcep).is_err() {
                self.channels.remove(&id);
                self.event(ChannelEvent::ChannelClosed { id: ChannelId(id) });
                return;
            }
            c.state = State::AwaitAck;
        }
        self.flush(id);
    }

    /// Hand a channel's waiting messages to SCTP, if it can carry them now.
    fn flush(&mut self, id: u16) {
        let (Some((_, a)), Some(c)) = (self.assoc.as_mut(), self.channels.get_mut(&id)) else {
            return;
        };
        if !c.writable() || c.queue.is_empty() {
            return;
        }
        let Ok(mut s) = a.stream(id) else { return };
        while let Some((bytes, ppi)) = c.queue.pop_front() {
            c.queued_bytes -= bytes.len();
            // A refused message is dropped, as the library would drop it.
            let _ = s.write_with_ppi(&bytes, ppi);
        }
    }

    /// Send a message: `binary` picks PPID 53 (or 57 when empty) over 51
    /// (or 56). Refused when larger than the peer's max-message-size.
    /// Before the channel can carry it (association not up) it waits in
    /// the channel's buffer; before the peer ACKs our OPEN it goes at once,
    /// ordered (RFC 8832 §6).
    pub fn send(
        &mut self,
        now: Instant,
        id: ChannelId,
        data: &[u8],
        binary: bool,
    ) -> Result<(), ChannelError> {
        if self.is_closed() {
            return Err(ChannelError::AssociationClosed);
        }
        let max = self.config.remote_max_message_size;
        let c = self
            .channels
            .get_mut(&id.0)
            .ok_or(ChannelError::UnknownChannel(id))?;
        if c.state == State::Closing {
            return Err(ChannelError::ChannelClosed(id));
        }
        if max != 0 && data.len() > max as usize {
            return Err(ChannelError::MessageTooLarge {
                len: data.len(),
                max,
            });
        }
        let (bytes, ppi) = wire_form(data, binary);
        if c.writable() && c.queue.is_empty() {
            let Some((_, a)) = self.assoc.as_mut() else {
                return Err(ChannelError::AssociationClosed);
            };
            let mut s = a.stream(id.0).map_err(|_| ChannelError::Refused)?;
            s.write_with_ppi(bytes, ppi)
                .map_err(|_| ChannelError::Refused)?;
        } else {
            c.queued_bytes += bytes.len();
            c.queue.push_back((bytes.to_vec(), ppi));
        }
        self.touch(now);
        Ok(())
    }

    /// Close a channel: what was sent is still delivered, then our outgoing
    /// stream is reset (RFC 8831 §6.7); `ChannelClosed` comes when a reset
    /// completes (ours, or the peer's answering one). A channel that never
    /// reached the wire closes at once.
    pub fn close_channel(&mut self, now: Instant, id: ChannelId) -> Result<(), ChannelError> {
        if self.is_closed() {
            return Err(ChannelError::AssociationClosed);
        }
        let c = self
            .channels
            .get_mut(&id.0)
            .ok_or(ChannelError::UnknownChannel(id))?;
        match c.state {
            State::Closing => return Ok(()),
            State::Pending => {
                self.channels.remove(&id.0);
                self.event(ChannelEvent::ChannelClosed { id });
                return Ok(());
            }
            State::AwaitAck | State::Open => {}
        }
        // Messages still waiting go out ahead of the reset.
        c.state = State::Open;
        self.flush(id.0);
        if let Some(c) = self.channels.get_mut(&id.0) {
            c.state = State::Closing;
        }
        if let Some((_, a)) = self.assoc.as_mut() {
            if let Ok(mut s) = a.stream(id.0) {
                let _ = s.close();
            }
        }
        self.touch(now);
        Ok(())
    }

    /// Bytes given to `send` on this channel and not yet acknowledged by
    /// the peer (0 for an unknown channel).
    pub fn buffered_amount(&mut self, id: ChannelId) -> usize {
        let Some(c) = self.channels.get(&id.0) else {
            return 0;
        };
        let queued = c.queued_bytes;
        let in_sctp = self
            .assoc
            .as_mut()
            .and_then(|(_, a)| a.stream(id.0).ok())
            .and_then(|s| s.buffered_amount().ok())
            .unwrap_or(0);
        queued + in_sctp
    }

    /// The buffered amount at or below which `BufferedAmountLow` fires
    /// (after having been above it).
    pub fn set_buffered_amount_low_threshold(
        &mut self,
        id: ChannelId,
        threshold: usize,
    ) -> Result<(), ChannelError> {
        let c = self
            .channels
            .get_mut(&id.0)
            .ok_or(ChannelError::UnknownChannel(id))?;
        c.low_threshold = threshold;
        if let Some((_, a)) = self.assoc.as_mut() {
            if let Ok(mut s) = a.stream(id.0) {
                let _ = s.set_buffered_amount_low_threshold(threshold);
            }
        }
        Ok(())
    }

    /// A channel's options (for the peer's channels, what its OPEN said).
    pub fn channel_options(&self, id: ChannelId) -> Option<&ChannelOptions> {
        self.channels.get(&id.0).map(|c| &c.options)
    }

    /// The ids of the channels not yet closed, in no particular order.
    pub fn channel_ids(&self) -> impl Iterator<Item = ChannelId> + '_ {
        self.channels.keys().map(|id| ChannelId(*id))
    }

    pub(super) fn on_stream_event(&mut self, e: StreamEvent) {
        match e {
            StreamEvent::Opened { .. } => {
                // The library queues each stream the peer starts for
                // `accept_stream`; the channel is made from its OPEN (or is
                // pre-negotiated), so just drain that queue.
                if let Some((_, a)) = self.assoc.as_mut() {
                    while a.accept_stream().is_some() {}
                }
            }
            StreamEvent::Readable { id } => self.read(id, true),
            StreamEvent::BufferedAmountLow { id } if self.channels.contains_key(&id) => {
                self.event(ChannelEvent::BufferedAmountLow { id: ChannelId(id) });
            }
            StreamEvent::Finished { id } => self.on_reset(id, true),
            StreamEvent::ResetComplete { id } | StreamEvent::ResetFailed { id, .. } => {
                self.on_reset(id, false)
            }
            _ => {}
        }
    }

    /// A stream reset finished: `incoming` when the peer reset its
    /// outgoing stream (it closed the channel, or answered our reset).
    fn on_reset(&mut self, id: u16, incoming: bool) {
        let Some(c) = self.channels.get(&id) else {
            return;
        };
        if c.state != State::Closing {
            if !incoming {
                return;
            }
            // The peer closed: reset ours back (RFC 8831 §6.7).
            if let Some((_, a)) = self.assoc.as_mut() {
                if let Ok(mut s) = a.stream(id) {
                    let _ = s.close();
                }
            }
        }
        self.channels.remove(&id);
        self.event(ChannelEvent::ChannelClosed { id: ChannelId(id) });
    }

    /// Read the stream's whole messages while the channel's unread bytes
    /// are under the receive queue limit (`bounded`), or all of them. A
    /// channel that reaches the limit is paused: the rest stays in SCTP's
    /// receive buffer, and the window we advertise shrinks as it fills, so
    /// the peer's sender is held back (its buffered amount grows) rather
    /// than our memory.
    pub(super) fn read(&mut self, id: u16, bounded: bool) {
        let limit = match self.config.receive_queue_limit {
            Some(l) if bounded => l,
            _ => usize::MAX,
        };
        loop {
            if let Some(c) = self.channels.get_mut(&id) {
                c.paused = c.unread >= limit;
                if c.paused {
                    return;
                }
            }
            let Some((_, a)) = self.assoc.as_mut() else {
                return;
            };
            let Ok(mut s) = a.stream(id) else { return };
            let Ok(Some(chunks)) = s.read_sctp() else {
                return;
            };
            let len = chunks.len();
            self.read_since_sack = self.read_since_sack.saturating_add(len);
            let mut data = vec![0; len];
            if chunks.read(&mut data).is_ok() {
                self.on_message(id, chunks.ppi, data);
            }
        }
    }

    /// The application took `bytes` of the messages this channel handed
    /// out (the sum of their `data.len()`; empty messages count nothing).
    /// With a [`receive_queue_limit`](crate::SctpConfig::receive_queue_limit),
    /// a channel stops reading once that many bytes are handed out and not
    /// released, and reads on when release brings them to half of it or
    /// less; if the window we advertised was nearly closed meanwhile, a
    /// window update (a SACK, RFC 9260 §6.2) tells the peer it may send
    /// again. Releasing more than was handed out counts as all of it.
    pub fn release(&mut self, now: Instant, id: ChannelId, bytes: usize) {
        let limit = self.config.receive_queue_limit.unwrap_or(usize::MAX);
        let Some(c) = self.channels.get_mut(&id.0) else {
            return;
        };
        c.unread = c.unread.saturating_sub(bytes);
        if !c.paused || c.unread > limit / 2 {
            return;
        }
        c.paused = false;
        self.read(id.0, true);
        self.window_update();
        self.reinject_probe(now);
        self.touch(now);
    }

    /// Bytes of this channel's messages handed out and not yet released
    /// (see [`release`](Self::release)); 0 for an unknown channel.
    pub fn unread(&self, id: ChannelId) -> usize {
        self.channels.get(&id.0).map_or(0, |c| c.unread)
    }

    fn on_message(&mut self, id: u16, ppi: Ppid, data: Vec<u8>) {
        let binary = match ppi {
            Ppid::Dcep => {
                match DcepMessage::decode(&data) {
                    Ok(DcepMessage::Open(open)) => self.on_open(id, open),
                    Ok(DcepMessage::Ack) => self.on_ack(id),
                    // A malformed DCEP message is dropped (RFC 8832 §7
                    // leaves it to the implementation; browsers ignore it).
                    _ => {}
                }
                return;
            }
            Ppid::String | Ppid::StringEmpty => false,
            Ppid::Binary | Ppid::BinaryEmpty => true,
            // The deprecated partial PPIDs (52, 54) and unknown ones.
            _ => return,
        };
        let Some(c) = self.channels.get(&id) else {
            // No channel on this stream (no OPEN came, none was
            // pre-negotiated): nothing to deliver it to.
            return;
        };
        if c.state == State::AwaitAck {
            // Data from the peer on the channel is an implicit ACK.
            self.on_ack(id);
        }
        let data = if matches!(ppi, Ppid::StringEmpty | Ppid::BinaryEmpty) {
            Vec::new()
        } else {
            data
        };
        if let Some(c) = self.channels.get_mut(&id) {
            c.unread += data.len();
        }
        self.event(ChannelEvent::Message {
            id: ChannelId(id),
            data,
            binary,
        });
    }

    fn on_ack(&mut self, id: u16) {
        let Some(c) = self.channels.get_mut(&id) else {
            return;
        };
        if c.state != State::AwaitAck {
            return;
        }
        c.state = State::Open;
        if !c.options.ordered {
            let (rel, value) = library_reliability(c.options.reliability);
            if let Some(Ok(mut s)) = self.assoc.as_mut().map(|(_, a)| a.stream(id)) {
                let _ = s.set_reliability_params(true, rel, value);
            }
        }
        self.event(ChannelEvent::ChannelOpen { id: ChannelId(id) });
        self.flush(id);
    }

    /// The peer's DATA_CHANNEL_OPEN: make the channel, ACK it, report it.
    fn on_open(&mut self, id: u16, open: DataChannelOpen) {
        if self.channels.contains_key(&id) {
            // The id is taken (by ours, or a pre-negotiated one): RFC 8832
            // §6 gives each side its own parity, so a compliant peer cannot
            // get here; the OPEN is dropped.
            return;
        }
        let Some((_, a)) = self.assoc.as_mut() else {
            return;
        };
        let Ok(mut s) = a.stream(id) else { return };
        let (rel, value) = library_reliability(open.reliability);
        let low_threshold = self.config.buffered_amount_low_threshold;
        let _ = s.set_reliability_params(!open.ordered, rel, value);
        let _ = s.set_buffered_amount_low_threshold(low_threshold);
        let ack = [crate::dcep::DATA_CHANNEL_ACK];
        if s.write_with_ppi(&ack, Ppid::Dcep).is_err() {
            return;
        }
        let options = ChannelOptions {
            label: open.label.clone(),
            protocol: open.protocol.clone(),
            ordered: open.ordered,
            reliability: open.reliability,
            negotiated: None,
            priority: open.priority,
        };
        self.channels
            .insert(id, Channel::new(options, State::Open, low_threshold));
        self.event(ChannelEvent::ChannelOpened {
            id: ChannelId(id),
            label: open.label,
            protocol: open.protocol,
            ordered: open.ordered,
            reliability: open.reliability,
            priority: open.priority,
        });
    }
}
