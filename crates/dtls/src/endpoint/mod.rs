//! The DTLS endpoint: one association with one peer, on one path.

mod events;
mod library;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2p_proto::{Datagram, FiveTuple, Handled, Machine, Transmit};

pub use events::{
    alert_name, CloseReason, DtlsError, DtlsEvent, DtlsOutput, DtlsVersion, FailureKind,
};

use crate::config::DtlsConfig;
use crate::fingerprint::{Fingerprint, HashFunction};
use crate::setup::DtlsRole;

/// The most bytes a record's header, explicit nonce and tag add to its
/// plaintext: 13 + 8 + 16 for DTLS 1.2 AES-GCM, the largest of the suites
/// offered (DTLS 1.3 adds at most 5 + 1 + 16).
const RECORD_OVERHEAD: usize = 13 + 8 + 16;

/// Application data held while the peer's fingerprint is awaited, at most.
const MAX_HELD_BYTES: usize = 1 << 20;

/// `bad_certificate` (RFC 5246 §7.2.2).
const BAD_CERTIFICATE: u8 = 42;

/// A sans-IO DTLS endpoint for a WebRTC peer connection.
///
/// It speaks DTLS 1.2 (RFC 6347) as browsers do, and DTLS 1.3 (RFC 9147)
/// with peers that offer it, through the `dimpl` library. Both ends
/// present self-signed certificates; the peer's must match a fingerprint
/// signaled for it (RFC 8122, RFC 8842 §5), or the association ends with
/// [`CloseReason::FingerprintMismatch`] and nothing it sent is delivered.
///
/// # Driving it
/// It follows [`p2p_proto::Machine`]:
/// - create it with [`DtlsEndpoint::new`]; it is idle and knows no time;
/// - the first [`handle_timeout`](Machine::handle_timeout) starts it: a
///   client sends its ClientHello, a server starts its clock and waits (a
///   datagram that arrives first starts it too);
/// - give it every datagram whose first byte is 20 to 63 (RFC 7983 §7; it
///   answers [`Handled::NotMine`] to the rest);
/// - after every call, drain [`poll_output`](Machine::poll_output) until
///   `None`: [`DtlsOutput::Transmit`]s to send, [`DtlsEvent`]s to act on,
///   in that order; then call `handle_timeout` at
///   [`poll_timeout`](Machine::poll_timeout) (handshake retransmissions and
///   the handshake deadline).
///
/// [`DtlsEvent::Connected`] comes once the handshake is done and the peer
/// verified; [`send`](Self::send) then sends one record per call, and
/// [`DtlsEvent::Data`] hands out what the peer sent. [`DtlsEvent::Closed`]
/// ends it, once, whatever the reason.
///
/// Which 5-tuple a datagram came on is not checked: the caller (the ICE
/// layer) decides what reaches the endpoint. Transmits go out on the path
/// given at [`new`](Self::new) or by [`set_path`](Self::set_path).
pub struct DtlsEndpoint {
    config: DtlsConfig,
    library_config: Arc<dimpl::Config>,
    path: FiveTuple,
    phase: Phase,
    dtls: Option<dimpl::Dtls>,
    out: VecDeque<DtlsOutput>,
    /// The latest instant seen (instants given are clamped to it).
    now: Option<Instant>,
    /// The library's next timer, if it has one.
    library_timeout: Option<Instant>,
    /// When the handshake (and the verification of the peer) must be done.
    deadline: Option<Instant>,
    /// The library finished the handshake.
    library_connected: bool,
    peer_certificate: Option<Vec<u8>>,
    /// The signaled fingerprint the peer matched.
    remote_fingerprint: Option<Fingerprint>,
    /// Data that arrived before the peer was verified.
    held: VecDeque<Vec<u8>>,
    held_bytes: usize,
    version: Option<DtlsVersion>,
    close_reason: Option<CloseReason>,
    close_detail: Option<String>,
    /// The buffer the library writes its output into.
    buf: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Handshake,
    Connected,
    Closed,
}

impl DtlsEndpoint {
    /// An idle endpoint that will talk on `path`; it starts at its first
    /// [`handle_timeout`](Machine::handle_timeout).
    pub fn new(config: DtlsConfig, path: FiveTuple) -> Result<DtlsEndpoint, DtlsError> {
        let library_config = Arc::new(config.to_dimpl()?);
        Ok(DtlsEndpoint {
            buf: vec![0; config.mtu.max(2048)],
            config,
            library_config,
            path,
            phase: Phase::Idle,
            dtls: None,
            out: VecDeque::new(),
            now: None,
            library_timeout: None,
            deadline: None,
            library_connected: false,
            peer_certificate: None,
            remote_fingerprint: None,
            held: VecDeque::new(),
            held_bytes: 0,
            version: None,
            close_reason: None,
            close_detail: None,
        })
    }

    /// The path transmits go out on (`source` = its local address,
    /// `destination` = its remote).
    pub fn path(&self) -> FiveTuple {
        self.path
    }

    /// Send on another path from now on (ICE chose another pair).
    pub fn set_path(&mut self, path: FiveTuple) {
        self.path = path;
    }

    /// The fingerprints the peer signaled, when they come after the start
    /// (replacing those of the configuration). If the peer's certificate
    /// has already arrived it is checked now: the endpoint connects, or
    /// ends with [`CloseReason::FingerprintMismatch`]. Once connected the
    /// peer is not checked again.
    pub fn set_remote_fingerprints(&mut self, fingerprints: Vec<Fingerprint>) {
        self.config.remote_fingerprints = fingerprints;
        if self.phase == Phase::Handshake {
            self.verify();
            self.maybe_connect();
        }
    }

    /// Send one record of application data to the peer.
    ///
    /// Refused before [`DtlsEvent::Connected`], after [`DtlsEvent::Closed`],
    /// and when `data` is longer than [`max_payload`](Self::max_payload).
    pub fn send(&mut self, now: Instant, data: &[u8]) -> Result<(), DtlsError> {
        match self.phase {
            Phase::Closed => return Err(DtlsError::Closed),
            Phase::Idle | Phase::Handshake => return Err(DtlsError::NotConnected),
            Phase::Connected => {}
        }
        let max = self.max_payload();
        if data.len() > max {
            return Err(DtlsError::TooLarge {
                len: data.len(),
                max,
            });
        }
        if !self.tick(now) || !self.call(|d| d.send_application_data(data).map(drop)) {
            return Err(DtlsError::Closed);
        }
        self.drain();
        Ok(())
    }

    /// Close: send `close_notify` if connected (a handshake in progress is
    /// abandoned without an alert), then [`DtlsEvent::Closed`] with
    /// [`CloseReason::LocalClose`]. Nothing happens if already closed.
    pub fn close(&mut self, now: Instant) {
        match self.phase {
            Phase::Closed => {}
            Phase::Idle => self.end(CloseReason::LocalClose, None),
            Phase::Handshake | Phase::Connected => {
                if self.tick(now) && self.call(|d| d.close()) {
                    self.flush_packets();
                }
                if self.phase != Phase::Closed {
                    self.end(CloseReason::LocalClose, None);
                }
            }
        }
    }

    /// Whether [`DtlsEvent::Connected`] came and [`DtlsEvent::Closed`] did
    /// not.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// Whether it is over ([`DtlsEvent::Closed`] was queued).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// This side's role.
    pub fn role(&self) -> DtlsRole {
        self.config.role
    }

    /// This side's certificate's SHA-256 fingerprint (what its
    /// `a=fingerprint` says).
    pub fn local_fingerprint(&self) -> Fingerprint {
        self.config.certificate.fingerprint()
    }

    /// The DTLS version, once the peer's first answer decided it.
    pub fn version(&self) -> Option<DtlsVersion> {
        self.version
    }

    /// The peer's certificate (DER), once it arrived; for statistics
    /// (`RTCCertificateStats`). Before [`DtlsEvent::Connected`] it is not
    /// verified yet.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.peer_certificate.as_deref()
    }

    /// The signaled fingerprint the peer matched, once connected.
    pub fn remote_fingerprint(&self) -> Option<&Fingerprint> {
        self.remote_fingerprint.as_ref()
    }

    /// Why it closed, once closed.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.as_ref()
    }

    /// The DTLS library's own words on a [`CloseReason::Failed`] (or a
    /// timeout), for the log.
    pub fn close_detail(&self) -> Option<&str> {
        self.close_detail.as_deref()
    }

    /// The most application data one [`send`](Self::send) takes: the MTU
    /// less the largest record overhead.
    pub fn max_payload(&self) -> usize {
        self.config.mtu - RECORD_OVERHEAD
    }

    // ---- inside ----

    fn start(&mut self, now: Instant) {
        let certificate = self.config.certificate.to_dimpl();
        let config = Arc::clone(&self.library_config);
        let client = self.config.role == DtlsRole::Client;
        let dtls13 = self.config.dtls13;
        let made = library::guard(move || {
            let mut dtls = if dtls13 {
                dimpl::Dtls::new_auto(config, certificate, now)
            } else {
                dimpl::Dtls::new_12(config, certificate, now)
            };
            dtls.set_active(client);
            dtls
        });
        self.phase = Phase::Handshake;
        self.deadline = Some(now + self.config.handshake_timeout);
        match made {
            Ok(dtls) => self.dtls = Some(dtls),
            Err(detail) => {
                return self.end(CloseReason::Failed(FailureKind::Internal), Some(detail))
            }
        }
        if self.call(|d| d.handle_timeout(now)) {
            self.drain();
        }
    }

    /// Bring the library's clock to `now` (starting the endpoint if idle)
    /// and end the handshake if its time is up. False when closed.
    fn tick(&mut self, now: Instant) -> bool {
        let now = self.now.map_or(now, |n| n.max(now));
        self.now = Some(now);
        match self.phase {
            Phase::Closed => return false,
            Phase::Idle => {
                self.start(now);
                return self.phase != Phase::Closed;
            }
            Phase::Handshake | Phase::Connected => {}
        }
        if self.deadline.is_some_and(|d| now >= d) {
            self.end(CloseReason::HandshakeTimeout, None);
            return false;
        }
        self.call(|d| d.handle_timeout(now))
    }

    /// The peer's certificate against the signaled fingerprints, if both
    /// are known and the peer is not verified yet.
    fn verify(&mut self) {
        if self.remote_fingerprint.is_some() || self.config.remote_fingerprints.is_empty() {
            return;
        }
        let Some(der) = self.peer_certificate.as_deref() else {
            return;
        };
        match self
            .config
            .remote_fingerprints
            .iter()
            .find(|f| f.matches(der))
        {
            Some(f) => self.remote_fingerprint = Some(f.clone()),
            None => {
                let peer = Fingerprint::of_der(HashFunction::Sha256, der);
                self.refuse_peer(peer);
            }
        }
    }

    /// The peer's certificate is not the one signaled: tell it with a fatal
    /// `bad_certificate`, deliver nothing, end.
    fn refuse_peer(&mut self, peer: Fingerprint) {
        // The library cannot send alerts, so it is written here, in the
        // clear at epoch 0: a DTLS 1.2 peer still reads epoch 0 then (it
        // has not had our ChangeCipherSpec: none of the library's output
        // after the peer's certificate goes out).
        self.transmit(library::plaintext_fatal_alert(BAD_CERTIFICATE));
        // A peer that finished its side of the handshake reads only
        // protected records (a DTLS 1.3 client, after its Finished): when
        // the library can finish too (with what it already has, sending
        // nothing), a close_notify through it makes sure the peer stops.
        if !self.library_connected {
            self.finish_silently();
        }
        if self.library_connected && self.call(|d| d.close()) {
            self.flush_packets();
        }
        self.end(CloseReason::FingerprintMismatch { peer }, None);
    }

    /// Connected when the library is and the peer verified.
    fn maybe_connect(&mut self) {
        if self.phase != Phase::Handshake || !self.library_connected {
            return;
        }
        if self.peer_certificate.is_none() {
            return self.end(
                CloseReason::Failed(FailureKind::Certificate),
                Some("the handshake completed without a peer certificate".into()),
            );
        }
        let Some(remote_fingerprint) = self.remote_fingerprint.clone() else {
            return; // awaiting the peer's fingerprint
        };
        let version = self.version.unwrap_or(DtlsVersion::Dtls12);
        self.phase = Phase::Connected;
        self.deadline = None;
        self.event(DtlsEvent::Connected {
            remote_fingerprint,
            version,
        });
        while let Some(d) = self.held.pop_front() {
            self.event(DtlsEvent::Data(d));
        }
        self.held_bytes = 0;
    }

    fn deliver(&mut self, data: Vec<u8>) {
        match self.phase {
            Phase::Connected => self.event(DtlsEvent::Data(data)),
            Phase::Handshake if self.held_bytes + data.len() <= MAX_HELD_BYTES => {
                self.held_bytes += data.len();
                self.held.push_back(data);
            }
            _ => {}
        }
    }

    /// The end: one Closed event, the library dropped, nothing held.
    fn end(&mut self, reason: CloseReason, detail: Option<String>) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        self.dtls = None;
        self.held.clear();
        self.held_bytes = 0;
        self.library_timeout = None;
        self.deadline = None;
        self.close_detail = detail;
        self.close_reason = Some(reason.clone());
        self.event(DtlsEvent::Closed(reason));
    }

    fn event(&mut self, e: DtlsEvent) {
        self.out.push_back(DtlsOutput::Event(e));
    }

    fn transmit(&mut self, contents: Vec<u8>) {
        self.out.push_back(DtlsOutput::Transmit(Transmit::new(
            self.path.transport,
            self.path.local,
            self.path.remote,
            contents,
        )));
    }
}

impl Machine for DtlsEndpoint {
    type Output = DtlsOutput;

    fn handle_input(&mut self, now: Instant, datagram: Datagram<'_>) -> Handled {
        match datagram.contents.first() {
            Some(20..=63) => {}
            _ => return Handled::NotMine,
        }
        if self.tick(now) {
            self.receive(datagram.contents);
        }
        Handled::Taken
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.tick(now) {
            self.drain();
        }
    }

    fn poll_output(&mut self) -> Option<DtlsOutput> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Idle | Phase::Closed => None,
            Phase::Handshake | Phase::Connected => [self.library_timeout, self.deadline]
                .into_iter()
                .flatten()
                .min(),
        }
    }
}

impl std::fmt::Debug for DtlsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsEndpoint")
            .field("role", &self.config.role)
            .field("phase", &self.phase)
            .field("path", &self.path)
            .field("version", &self.version)
            .field("close_reason", &self.close_reason)
            .finish_non_exhaustive()
    }
}

/// A timer of the library this far out means it has none.
const NO_TIMER: Duration = Duration::from_secs(365 * 24 * 3600);
