//! The encrypted layers above ICE: one DTLS endpoint ([`p2p_dtls`]) and the
//! SCTP association of the data channels ([`p2p_datachannel`]) it carries.
//!
//! The session hands this layer the DTLS records that arrive on the path
//! (first byte 20..=63, RFC 7983) and the path ICE selected; it hands back
//! DTLS records to send on that path and channel events. There is no
//! plaintext mode: application data exists only as channel messages.
//!
//! Who is the DTLS client follows `a=setup` (RFC 8842): the role is known
//! once the offer/answer is done ([`Secure::set_remote`]). Until then DTLS
//! records from the peer wait (a few of them: the peer's ClientHello may
//! overtake its answer on signaling). The client starts the handshake once
//! it has a path; the server answers on the path the ClientHello came in
//! on until ICE selects one. The SCTP association starts when DTLS is up.

use std::collections::VecDeque;
use std::time::Instant;

use p2p_datachannel::{
    ChannelError, ChannelEvent, ChannelId, ChannelOptions, SctpAssociation, SctpConfig, SctpOutput,
    SctpRole,
};
use p2p_dtls::{
    Certificate, DtlsConfig, DtlsEndpoint, DtlsEvent, DtlsOutput, DtlsRole, DtlsVersion,
    Fingerprint,
};
use p2p_proto::{Datagram, FiveTuple, Machine, Transmit, Transport};

/// DTLS records kept while the role is not known yet.
const EARLY_RECORDS: usize = 16;

/// How long [`Secure::close`] lets the SCTP SHUTDOWN deliver what was sent
/// before it gives up and aborts.
pub(crate) const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// What the peer's description says of the secure layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSecurity {
    /// Our DTLS role (from both `a=setup`).
    pub role: DtlsRole,
    /// The fingerprints the peer's certificate must match.
    pub fingerprints: Vec<Fingerprint>,
    /// The peer's `a=sctp-port`.
    pub sctp_port: u16,
    /// The peer's `a=max-message-size`: `None` when absent (64 KiB), 0 for
    /// no limit.
    pub max_message_size: Option<u32>,
}

/// Why the secure layers ended.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecureEnd {
    /// The peer closed: SCTP SHUTDOWN or ABORT, or DTLS `close_notify`.
    PeerClosed,
    /// The peer's certificate matched no fingerprint it signaled: nothing
    /// it sent was delivered.
    FingerprintMismatch,
    /// The DTLS handshake failed or timed out, or the SCTP association
    /// could not be set up or broke (the words say which).
    Failed(String),
    /// Nothing was heard from the peer for the dead-peer timeout.
    PeerSilent,
}

/// What the secure layers hand the session.
#[derive(Debug)]
pub(crate) enum SecureOut {
    /// A DTLS record to send on the path.
    Transmit(Transmit),
    /// DTLS is up.
    Secured {
        remote_fingerprint: Fingerprint,
        version: DtlsVersion,
    },
    /// A channel event (SCTP `Connected`, channels, messages).
    Channel(ChannelEvent),
    /// The secure layers ended.
    Ended(SecureEnd),
}

/// Local settings of the secure layers.
#[derive(Debug, Clone)]
pub(crate) struct SecureConfig {
    pub(crate) certificate: Certificate,
    pub(crate) sctp_port: u16,
    pub(crate) max_message_size: u32,
    pub(crate) receive_queue_limit: Option<usize>,
    pub(crate) rng_seed: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Secure {
    config: SecureConfig,
    remote: Option<RemoteSecurity>,
    dtls: Option<DtlsEndpoint>,
    sctp: Option<SctpAssociation>,
    /// Channels opened before the role was known (the association is made
    /// with the role): (the id handed out, its options).
    early_channels: Vec<ChannelOptions>,
    early_records: Vec<(FiveTuple, Vec<u8>)>,
    /// The path to send DTLS on, once known.
    path: Option<FiveTuple>,
    dtls_started: bool,
    sctp_started: bool,
    /// [`Secure::close`] began a graceful SHUTDOWN; it ends by then.
    shutting_down: Option<Instant>,
    ended: bool,
    out: VecDeque<SecureOut>,
}

/// The SCTP association's own addresses: SCTP rides inside DTLS, so these
/// name nothing on the network (the library wants them non-zero).
fn inner_path() -> FiveTuple {
    let stand_in = std::net::SocketAddr::from(([127, 0, 0, 1], 5000));
    FiveTuple::new(Transport::Udp, stand_in, stand_in)
}

impl Secure {
    pub(crate) fn new(config: SecureConfig) -> Secure {
        Secure {
            config,
            remote: None,
            dtls: None,
            sctp: None,
            early_channels: Vec::new(),
            early_records: Vec::new(),
            path: None,
            dtls_started: false,
            sctp_started: false,
            shutting_down: None,
            ended: false,
            out: VecDeque::new(),
        }
    }

    /// The fingerprint of our certificate, for `a=fingerprint`.
    pub(crate) fn local_fingerprint(&self) -> Fingerprint {
        self.config.certificate.fingerprint()
    }

    pub(crate) fn config(&self) -> &SecureConfig {
        &self.config
    }

    /// Whether DTLS is up and the association established.
    pub(crate) fn is_established(&self) -> bool {
        self.sctp.as_ref().is_some_and(|s| s.is_established())
    }

    /// The role and the peer's parameters are known (the offer/answer is
    /// done): make the endpoint and the association, take the records that
    /// waited. A second call with new fingerprints (a renegotiation) only
    /// updates them.
    pub(crate) fn set_remote(&mut self, now: Instant, remote: RemoteSecurity) {
        if let Some(dtls) = &mut self.dtls {
            dtls.set_remote_fingerprints(remote.fingerprints.clone());
            self.remote = Some(remote);
            self.pump(now);
            return;
        }
        let path = self.path.unwrap_or_else(inner_path);
        let mut dc = DtlsConfig::new(
            self.config.certificate.clone(),
            remote.role,
            remote.fingerprints.clone(),
        );
        if let Some(seed) = self.config.rng_seed {
            dc = dc.with_seed(seed);
        }
        let dtls = match DtlsEndpoint::new(dc, path) {
            Ok(d) => d,
            Err(e) => return self.end(SecureEnd::Failed(format!("DTLS: {e}"))),
        };
        let role = match remote.role {
            DtlsRole::Client => SctpRole::Client,
            _ => SctpRole::Server,
        };
        let max_packet = u32::try_from(dtls.max_payload()).unwrap_or(1100);
        // Liveness is ICE's (consent, RFC 7675, and the restarts that may
        // bring a path back): SCTP does not declare the peer dead by itself.
        let mut sc = SctpConfig::new(role)
            .with_ports(self.config.sctp_port, remote.sctp_port)
            .with_local_max_message_size(self.config.max_message_size)
            .with_remote_max_message_size(remote.max_message_size)
            .with_receive_queue_limit(self.config.receive_queue_limit)
            .with_liveness(None, None);
        sc.max_packet_size = max_packet.min(sc.max_packet_size);
        if let Some(seed) = self.config.rng_seed {
            sc = sc.with_rng_seed(seed.wrapping_add(7));
        }
        let mut sctp = SctpAssociation::new(sc, inner_path());
        for options in std::mem::take(&mut self.early_channels) {
            if let Err(e) = sctp.open_channel(now, options) {
                tracing::debug!("a channel opened early: {e}");
            }
        }
        self.dtls = Some(dtls);
        self.sctp = Some(sctp);
        self.remote = Some(remote);
        self.start_dtls(now);
        for (path, record) in std::mem::take(&mut self.early_records) {
            self.handle_record(now, path, &record);
        }
        self.pump(now);
    }

    /// ICE selected a path (or another one): DTLS goes there from now on.
    pub(crate) fn set_path(&mut self, now: Instant, path: FiveTuple) {
        self.path = Some(path);
        if let Some(d) = &mut self.dtls {
            d.set_path(path);
        }
        self.start_dtls(now);
        self.pump(now);
    }

    fn start_dtls(&mut self, now: Instant) {
        if self.dtls_started || self.path.is_none() {
            return;
        }
        if let Some(d) = &mut self.dtls {
            self.dtls_started = true;
            d.handle_timeout(now);
        }
    }

    /// A DTLS record arrived on `path` (as the receiver sees it: local is
    /// ours).
    pub(crate) fn handle_record(&mut self, now: Instant, path: FiveTuple, record: &[u8]) {
        self.feed_record(now, path, record);
        self.pump(now);
    }

    /// [`handle_record`](Self::handle_record) without moving anything
    /// between the layers: the caller [`flush`](Self::flush)es once after
    /// a batch. SCTP then takes the whole batch before it gathers what to
    /// send, once: each of its gathers walks the whole in-flight queue.
    pub(crate) fn feed_record(&mut self, now: Instant, path: FiveTuple, record: &[u8]) {
        if self.ended {
            return;
        }
        if self.path.is_none() {
            // The server answers where the ClientHello came from until ICE
            // selects a path.
            self.path = Some(path);
            if let Some(d) = &mut self.dtls {
                d.set_path(path);
            }
        }
        let Some(dtls) = &mut self.dtls else {
            if self.early_records.len() < EARLY_RECORDS {
                self.early_records.push((path, record.to_vec()));
            }
            return;
        };
        if !self.dtls_started {
            self.dtls_started = true;
            dtls.handle_timeout(now);
        }
        let d = Datagram::new(path.transport, path.remote, path.local, record);
        let _ = dtls.handle_input(now, d);
    }

    /// Moves what records fed since the last pump left between the layers.
    pub(crate) fn flush(&mut self, now: Instant) {
        self.pump(now);
    }

    /// Whether the secure layers are over (closed here or by the peer, or
    /// failed): nothing more goes out.
    pub(crate) fn is_done(&self) -> bool {
        self.ended
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Some(d) = &mut self.dtls {
            if self.dtls_started && d.poll_timeout().is_some_and(|t| t <= now) {
                d.handle_timeout(now);
            }
        }
        if let Some(s) = &mut self.sctp {
            if self.sctp_started && s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
        }
        self.pump(now);
        self.check_shutdown(now);
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        let dtls = self
            .dtls
            .as_ref()
            .filter(|_| self.dtls_started)
            .and_then(|d| d.poll_timeout());
        let sctp = self
            .sctp
            .as_ref()
            .filter(|_| self.sctp_started)
            .and_then(|s| s.poll_timeout());
        [dtls, sctp, self.shutting_down].into_iter().flatten().min()
    }

    pub(crate) fn poll(&mut self) -> Option<SecureOut> {
        self.out.pop_front()
    }

    /// Open a channel (before the role is known it waits for it).
    pub(crate) fn open_channel(
        &mut self,
        now: Instant,
        options: ChannelOptions,
    ) -> Result<Option<ChannelId>, ChannelError> {
        if self.ended {
            return Err(ChannelError::AssociationClosed);
        }
        let Some(sctp) = &mut self.sctp else {
            self.early_channels.push(options);
            return Ok(None);
        };
        let id = sctp.open_channel(now, options)?;
        self.pump(now);
        Ok(Some(id))
    }

    pub(crate) fn send(
        &mut self,
        now: Instant,
        id: ChannelId,
        data: &[u8],
        binary: bool,
    ) -> Result<(), ChannelError> {
        self.queue(now, id, data, binary)?;
        self.pump(now);
        Ok(())
    }

    /// [`send`](Self::send) without moving anything between the layers:
    /// the caller [`flush`](Self::flush)es once after several messages,
    /// and SCTP gathers what to send once for all of them (each of its
    /// gathers walks the whole in-flight queue).
    pub(crate) fn queue(
        &mut self,
        now: Instant,
        id: ChannelId,
        data: &[u8],
        binary: bool,
    ) -> Result<(), ChannelError> {
        let sctp = self.sctp.as_mut().ok_or(ChannelError::UnknownChannel(id))?;
        sctp.send(now, id, data, binary)
    }

    pub(crate) fn close_channel(
        &mut self,
        now: Instant,
        id: ChannelId,
    ) -> Result<(), ChannelError> {
        let sctp = self.sctp.as_mut().ok_or(ChannelError::UnknownChannel(id))?;
        sctp.close_channel(now, id)?;
        self.pump(now);
        Ok(())
    }

    pub(crate) fn release(&mut self, now: Instant, id: ChannelId, bytes: usize) {
        if let Some(sctp) = self.sctp.as_mut() {
            sctp.release(now, id, bytes);
            self.pump(now);
        }
    }

    pub(crate) fn unread(&self, id: ChannelId) -> usize {
        self.sctp.as_ref().map_or(0, |s| s.unread(id))
    }

    pub(crate) fn buffered_amount(&mut self, id: ChannelId) -> usize {
        self.sctp.as_mut().map_or(0, |s| s.buffered_amount(id))
    }

    pub(crate) fn set_buffered_amount_low_threshold(
        &mut self,
        id: ChannelId,
        threshold: usize,
    ) -> Result<(), ChannelError> {
        let sctp = self.sctp.as_mut().ok_or(ChannelError::UnknownChannel(id))?;
        sctp.set_buffered_amount_low_threshold(id, threshold)
    }

    /// Close so that the peer learns at once: a graceful SCTP SHUTDOWN
    /// first (what was sent is still delivered, for at most
    /// [`SHUTDOWN_GRACE`]), then DTLS `close_notify`. The records come out of
    /// [`Secure::poll`]; [`Secure::is_done`] says when it is over.
    pub(crate) fn close(&mut self, now: Instant) {
        if self.ended || self.shutting_down.is_some() {
            return;
        }
        let graceful = match &mut self.sctp {
            Some(s) if self.sctp_started && s.is_established() => {
                s.close(now);
                true
            }
            _ => false,
        };
        if graceful {
            self.shutting_down = Some(now + SHUTDOWN_GRACE);
            self.pump(now);
        } else {
            self.finish_close(now);
        }
    }

    /// ABORT what is left of the association, then `close_notify`.
    fn finish_close(&mut self, now: Instant) {
        self.shutting_down = None;
        if let Some(s) = &mut self.sctp {
            if self.sctp_started && !s.is_closed() {
                s.abort(now);
            }
        }
        self.pump(now);
        if let Some(d) = &mut self.dtls {
            if self.dtls_started {
                d.close(now);
            }
        }
        self.pump(now);
        self.ended = true;
    }

    /// A graceful shutdown that finished, or ran out of time, ends here.
    fn check_shutdown(&mut self, now: Instant) {
        let Some(deadline) = self.shutting_down else {
            return;
        };
        let finished = self.sctp.as_ref().is_none_or(|s| s.is_finished());
        if finished || now >= deadline || self.ended {
            self.finish_close(now);
        }
    }

    fn end(&mut self, why: SecureEnd) {
        end_with(&mut self.ended, &mut self.out, why);
    }

    /// Move packets between the association and DTLS, and out, until
    /// nothing moves.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            // SCTP packets into DTLS records.
            if let (Some(sctp), Some(dtls)) = (&mut self.sctp, &mut self.dtls) {
                while let Some(o) = sctp.poll_output() {
                    moved = true;
                    match o {
                        SctpOutput::Transmit(t) => {
                            if let Err(e) = dtls.send(now, &t.contents) {
                                tracing::debug!("an SCTP packet not sent: {e}");
                            }
                        }
                        SctpOutput::Event(e) => {
                            if let ChannelEvent::Closed(reason) = &e {
                                let end = match reason {
                                    p2p_datachannel::CloseReason::PeerAbort
                                    | p2p_datachannel::CloseReason::PeerShutdown => {
                                        Some(SecureEnd::PeerClosed)
                                    }
                                    p2p_datachannel::CloseReason::Timeout => {
                                        Some(SecureEnd::PeerSilent)
                                    }
                                    p2p_datachannel::CloseReason::LocalClose
                                    | p2p_datachannel::CloseReason::LocalAbort => None,
                                    other => Some(SecureEnd::Failed(format!("SCTP: {other:?}"))),
                                };
                                self.out.push_back(SecureOut::Channel(e));
                                if let Some(why) = end {
                                    end_with(&mut self.ended, &mut self.out, why);
                                }
                                continue;
                            }
                            self.out.push_back(SecureOut::Channel(e));
                        }
                        _ => {}
                    }
                }
            }
            // DTLS records out, plaintext into SCTP.
            let mut data = Vec::new();
            if let Some(dtls) = &mut self.dtls {
                while let Some(o) = dtls.poll_output() {
                    moved = true;
                    match o {
                        DtlsOutput::Transmit(t) => self.out.push_back(SecureOut::Transmit(t)),
                        DtlsOutput::Event(DtlsEvent::Connected {
                            remote_fingerprint,
                            version,
                            ..
                        }) => {
                            self.out.push_back(SecureOut::Secured {
                                remote_fingerprint,
                                version,
                            });
                            if let Some(s) = &mut self.sctp {
                                if !self.sctp_started {
                                    self.sctp_started = true;
                                    s.handle_timeout(now);
                                }
                            }
                        }
                        DtlsOutput::Event(DtlsEvent::Data(d)) => data.push(d),
                        DtlsOutput::Event(DtlsEvent::Closed(reason)) => {
                            let end = match reason {
                                p2p_dtls::CloseReason::PeerClosed => Some(SecureEnd::PeerClosed),
                                p2p_dtls::CloseReason::FingerprintMismatch { .. } => {
                                    Some(SecureEnd::FingerprintMismatch)
                                }
                                p2p_dtls::CloseReason::LocalClose => None,
                                other => Some(SecureEnd::Failed(format!("DTLS: {other}"))),
                            };
                            if let Some(why) = end {
                                end_with(&mut self.ended, &mut self.out, why);
                            }
                        }
                        _ => {}
                    }
                }
            }
            if let Some(sctp) = &mut self.sctp {
                for d in data {
                    // Owned: SCTP takes the buffer DTLS decrypted into as
                    // it is (no copy per datagram).
                    let _ = sctp.handle_packet(now, d);
                }
            }
            if !moved {
                break;
            }
        }
        if self.shutting_down.is_some() && !self.ended {
            let finished = self.sctp.as_ref().is_none_or(|s| s.is_finished());
            if finished {
                self.check_shutdown(now);
            }
        }
    }
}

/// Report the end once.
fn end_with(ended: &mut bool, out: &mut VecDeque<SecureOut>, why: SecureEnd) {
    if !*ended {
        *ended = true;
        out.push_back(SecureOut::Ended(why));
    }
}
