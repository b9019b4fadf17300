//! What an association and a channel are configured with.

use std::time::Duration;

use crate::dcep::Reliability;

/// The SCTP port WebRTC uses unless `a=sctp-port` says otherwise
/// (RFC 8841 §5).
pub const DEFAULT_SCTP_PORT: u16 = 5000;

/// The max-message-size a peer that sends no `a=max-message-size` accepts
/// (RFC 8841 §6).
pub const DEFAULT_REMOTE_MAX_MESSAGE_SIZE: u32 = 64 * 1024;

/// The max-message-size we accept and advertise by default (Chromium's).
pub const DEFAULT_LOCAL_MAX_MESSAGE_SIZE: u32 = 256 * 1024;

/// The receive queue limit of a channel by default: 1 MiB, the size of
/// the SCTP receive buffer.
pub const DEFAULT_RECEIVE_QUEUE_LIMIT: usize = 1024 * 1024;

/// Our DTLS role, which decides two things: the DTLS client starts the
/// SCTP association (it sends INIT on its first `handle_timeout`), and the
/// stream ids a side picks for the channels it opens: even for the DTLS
/// client, odd for the DTLS server (RFC 8832 §6).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SctpRole {
    /// We are the DTLS client: we send INIT and use even stream ids.
    Client,
    /// We are the DTLS server: we answer INIT and use odd stream ids.
    Server,
}

/// The configuration of an [`SctpAssociation`](crate::SctpAssociation).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SctpConfig {
    /// Our DTLS role.
    pub role: SctpRole,
    /// Our SCTP port (our `a=sctp-port`).
    pub local_port: u16,
    /// The peer's SCTP port (its `a=sctp-port`).
    pub remote_port: u16,
    /// The largest message we accept, as our `a=max-message-size` says;
    /// 0 = no limit. A larger message from the peer aborts the
    /// association (see the crate docs).
    pub local_max_message_size: u32,
    /// The largest message the peer accepts: its `a=max-message-size`, 0 for
    /// no limit, [`DEFAULT_REMOTE_MAX_MESSAGE_SIZE`] when its SDP had none.
    /// `send` refuses larger ones.
    pub remote_max_message_size: u32,
    /// The buffered-amount low threshold a new channel starts with.
    pub buffered_amount_low_threshold: usize,
    /// The receive buffer (the window advertised to the peer), in bytes.
    pub receive_buffer: u32,
    /// The most bytes of one channel's received messages handed to the
    /// application (in `Message` events) and not yet released by it
    /// ([`SctpAssociation::release`](crate::SctpAssociation::release))
    /// before the channel stops reading from SCTP. What the peer sends then
    /// waits in SCTP's receive buffer, whose window closes, so the peer's
    /// buffered amount grows instead of our memory: a channel holds at
    /// most this plus one message in the application's hands, and the
    /// association at most [`receive_buffer`](Self::receive_buffer) more.
    /// Default [`DEFAULT_RECEIVE_QUEUE_LIMIT`]; `None`: no bound (every
    /// message is read as soon as it is whole, `release` is not needed).
    pub receive_queue_limit: Option<usize>,
    /// The initial retransmission timeout (RFC 9260 §16: 1 s).
    pub rto_initial: Duration,
    /// The smallest retransmission timeout.
    pub rto_min: Duration,
    /// The largest retransmission timeout.
    pub rto_max: Duration,
    /// INIT and COOKIE-ECHO retransmissions before the handshake fails.
    pub max_init_retransmits: usize,
    /// When nothing was heard from the peer for this long, send a
    /// HEARTBEAT (and again each time this passes); `None`: never.
    pub heartbeat_interval: Option<Duration>,
    /// When nothing at all was heard from the established peer for this
    /// long, the association is dead: ABORT and `Closed(Timeout)`; `None`:
    /// never (leave it to ICE consent).
    pub dead_peer_timeout: Option<Duration>,
    /// The largest SCTP packet we send (the DTLS record payload); the
    /// default fits a 1280-byte IPv6 path under DTLS, UDP and IP headers.
    pub max_packet_size: u32,
    /// Seed of the RNG for heartbeat nonces; `None`: OS entropy.
    pub rng_seed: Option<u64>,
}

impl SctpConfig {
    /// The WebRTC defaults for a side whose DTLS role is `role`.
    pub fn new(role: SctpRole) -> Self {
        SctpConfig {
            role,
            local_port: DEFAULT_SCTP_PORT,
            remote_port: DEFAULT_SCTP_PORT,
            local_max_message_size: DEFAULT_LOCAL_MAX_MESSAGE_SIZE,
            remote_max_message_size: DEFAULT_REMOTE_MAX_MESSAGE_SIZE,
            buffered_amount_low_threshold: 0,
            receive_buffer: 1024 * 1024,
            receive_queue_limit: Some(DEFAULT_RECEIVE_QUEUE_LIMIT),
            rto_initial: Duration::from_secs(1),
            rto_min: Duration::from_millis(200),
            rto_max: Duration::from_secs(10),
            max_init_retransmits: 8,
            heartbeat_interval: Some(Duration::from_secs(1)),
            dead_peer_timeout: Some(Duration::from_secs(5)),
            max_packet_size: 1200,
            rng_seed: None,
        }
    }

    /// With these SCTP ports (ours, the peer's: each side's `a=sctp-port`).
    pub fn with_ports(mut self, local: u16, remote: u16) -> Self {
        self.local_port = local;
        self.remote_port = remote;
        self
    }

    /// With the largest message we accept (0: no limit).
    pub fn with_local_max_message_size(mut self, n: u32) -> Self {
        self.local_max_message_size = n;
        self
    }

    /// With the peer's `a=max-message-size` (`None`: it had none, so 64 KiB;
    /// `Some(0)`: no limit).
    pub fn with_remote_max_message_size(mut self, n: Option<u32>) -> Self {
        self.remote_max_message_size = n.unwrap_or(DEFAULT_REMOTE_MAX_MESSAGE_SIZE);
        self
    }

    /// With a fixed RNG seed (deterministic tests).
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }

    /// With this receive queue limit (`None`: no bound; see
    /// [`receive_queue_limit`](Self::receive_queue_limit)).
    pub fn with_receive_queue_limit(mut self, limit: Option<usize>) -> Self {
        self.receive_queue_limit = limit;
        self
    }

    /// With this heartbeat interval and dead-peer timeout.
    pub fn with_liveness(
        mut self,
        heartbeat_interval: Option<Duration>,
        dead_peer_timeout: Option<Duration>,
    ) -> Self {
        self.heartbeat_interval = heartbeat_interval;
        self.dead_peer_timeout = dead_peer_timeout;
        self
    }
}

/// Priority of a channel (RFC 8831 §6.4), sent in DATA_CHANNEL_OPEN.
pub mod priority {
    /// Below normal.
    pub const BELOW_NORMAL: u16 = 128;
    /// Normal (the default).
    pub const NORMAL: u16 = 256;
    /// High.
    pub const HIGH: u16 = 512;
    /// Extra high.
    pub const EXTRA_HIGH: u16 = 1024;
}

/// What a channel is opened with (the W3C `RTCDataChannelInit`).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelOptions {
    /// The label.
    pub label: String,
    /// The sub-protocol ("" for none).
    pub protocol: String,
    /// Ordered delivery.
    pub ordered: bool,
    /// Reliability.
    pub reliability: Reliability,
    /// `Some(id)`: pre-negotiated on stream `id` (both sides open it with the
    /// same options, no DCEP); `None`: opened in-band with DCEP on a stream
    /// id of our parity.
    pub negotiated: Option<u16>,
    /// Priority (see [`priority`]); sent in DCEP, not used for scheduling.
    pub priority: u16,
}

impl ChannelOptions {
    /// An ordered, reliable channel with this label, opened with DCEP.
    pub fn new(label: impl Into<String>) -> Self {
        ChannelOptions {
            label: label.into(),
            protocol: String::new(),
            ordered: true,
            reliability: Reliability::Reliable,
            negotiated: None,
            priority: priority::NORMAL,
        }
    }

    /// With this sub-protocol.
    pub fn with_protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = protocol.into();
        self
    }

    /// Ordered or not.
    pub fn with_ordered(mut self, ordered: bool) -> Self {
        self.ordered = ordered;
        self
    }

    /// With this reliability.
    pub fn with_reliability(mut self, reliability: Reliability) -> Self {
        self.reliability = reliability;
        self
    }

    /// Pre-negotiated on stream `id`.
    pub fn with_negotiated(mut self, id: u16) -> Self {
        self.negotiated = Some(id);
        self
    }

    /// With this priority.
    pub fn with_priority(mut self, priority: u16) -> Self {
        self.priority = priority;
        self
    }
}
