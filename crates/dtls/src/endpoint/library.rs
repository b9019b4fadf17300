//! The seam with the DTLS library (`dimpl`): calling it, draining its
//! output into ours, and reading its errors.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use dimpl::{Dtls, Error, Output, ProtocolVersion};

use super::{CloseReason, DtlsEndpoint, DtlsVersion, FailureKind, Phase, NO_TIMER};

/// At most this many outputs in one drain (the library ends every drain
/// with a timeout; this only bounds a library bug).
const MAX_POLLS: usize = 4096;

/// The largest output buffer the library may ask for.
const MAX_BUFFER: usize = 1 << 18;

/// One output of the library, owned.
enum Polled {
    Packet(Vec<u8>),
    Grow(usize),
    Timeout(Instant),
    Connected,
    PeerCert(Vec<u8>),
    Data(Vec<u8>),
    CloseNotify,
    Other,
}

/// Runs `f`, turning a panic of the library into an error (its message)
/// rather than taking the caller down with it.
pub(super) fn guard<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("the DTLS library panicked: {what}")
    })
}

fn poll_one(dtls: &mut Dtls, buf: &mut [u8]) -> Polled {
    match dtls.poll_output(buf) {
        Output::Packet(p) => Polled::Packet(p.to_vec()),
        Output::BufferTooSmall { needed } => Polled::Grow(needed),
        Output::Timeout(t) => Polled::Timeout(t),
        Output::Connected => Polled::Connected,
        Output::PeerCert(der) => Polled::PeerCert(der.to_vec()),
        Output::ApplicationData(d) => Polled::Data(d.to_vec()),
        Output::CloseNotify => Polled::CloseNotify,
        // DTLS-SRTP keying material: a data channel has no use for it.
        _ => Polled::Other,
    }
}

/// A fatal alert record in the clear (epoch 0), DTLS 1.2 framing
/// (RFC 6347 §4.1): type 21, version {254, 253}, epoch 0, a sequence
/// number past any the library used at epoch 0, length 2, then level 2
/// (fatal) and the description.
pub(super) fn plaintext_fatal_alert(description: u8) -> Vec<u8> {
    let seq: u64 = 1 << 32;
    let mut r = vec![21, 0xfe, 0xfd, 0, 0];
    r.extend_from_slice(&seq.to_be_bytes()[2..]);
    r.extend_from_slice(&[0, 2, 2, description]);
    r
}

impl DtlsEndpoint {
    /// Run `f` on the library; its error or panic ends the endpoint. True
    /// when it went well.
    pub(super) fn call(&mut self, f: impl FnOnce(&mut Dtls) -> Result<(), Error>) -> bool {
        let Some(dtls) = self.dtls.as_mut() else {
            return false;
        };
        match guard(|| f(dtls)) {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                self.library_failed(e);
                false
            }
            Err(detail) => {
                self.end(CloseReason::Failed(FailureKind::Internal), Some(detail));
                false
            }
        }
    }

    /// A datagram for the library, then its output.
    pub(super) fn receive(&mut self, contents: &[u8]) {
        let Some(dtls) = self.dtls.as_mut() else {
            return;
        };
        // A client that offered both versions reads the version from the
        // server's first answer; the library calls anything else there an
        // error, which would let one stray datagram end the association.
        let undecided_client = dtls.is_active() && dtls.protocol_version().is_none();
        match guard(|| dtls.handle_packet(contents)) {
            Ok(Ok(())) => {}
            Ok(Err(Error::UnexpectedMessage(
                dimpl::UnexpectedMessageError::UnrecognizedAutoServerResponse,
            ))) if undecided_client => {
                if let Some(description) = Self::undecided_client_alert(contents) {
                    return self.end(CloseReason::PeerAlert { description }, None);
                }
            }
            Ok(Err(e)) => return self.library_failed(e),
            Err(detail) => {
                return self.end(CloseReason::Failed(FailureKind::Internal), Some(detail))
            }
        }
        self.drain();
    }

    /// Everything the library has to say, into our output.
    pub(super) fn drain(&mut self) {
        for _ in 0..MAX_POLLS {
            let Some(dtls) = self.dtls.as_mut() else {
                return;
            };
            let buf = &mut self.buf;
            let polled = match guard(|| poll_one(dtls, buf)) {
                Ok(p) => p,
                Err(detail) => {
                    return self.end(CloseReason::Failed(FailureKind::Internal), Some(detail))
                }
            };
            match polled {
                Polled::Packet(p) => self.transmit(p),
                Polled::Grow(n) if n <= MAX_BUFFER => self.buf.resize(n, 0),
                Polled::Grow(n) => {
                    return self.end(
                        CloseReason::Failed(FailureKind::Internal),
                        Some(format!("the DTLS library asked for a {n}-byte buffer")),
                    )
                }
                Polled::Timeout(t) => {
                    let now = self.now.unwrap_or(t);
                    self.library_timeout = (t < now + NO_TIMER).then_some(t);
                    return;
                }
                Polled::Connected => {
                    self.library_connected = true;
                    self.version = match dtls.protocol_version() {
                        Some(ProtocolVersion::DTLS1_3) => Some(DtlsVersion::Dtls13),
                        _ => Some(DtlsVersion::Dtls12),
                    };
                    self.maybe_connect();
                }
                Polled::PeerCert(der) => {
                    if self.peer_certificate.is_none() {
                        self.peer_certificate = Some(der);
                        self.verify();
                        self.maybe_connect();
                    }
                }
                Polled::Data(d) => self.deliver(d),
                Polled::CloseNotify => {
                    // Answer with ours (RFC 5246 §7.2.1), then end.
                    if self.call(|d| d.close()) {
                        self.flush_packets();
                    }
                    return self.end(CloseReason::PeerClosed, None);
                }
                Polled::Other => {}
            }
        }
        self.end(
            CloseReason::Failed(FailureKind::Internal),
            Some("the DTLS library's output did not end".into()),
        );
    }

    /// Only the packets the library has queued (a close_notify), dropping
    /// anything else.
    pub(super) fn flush_packets(&mut self) {
        for _ in 0..MAX_POLLS {
            let Some(dtls) = self.dtls.as_mut() else {
                return;
            };
            let buf = &mut self.buf;
            match guard(|| poll_one(dtls, buf)) {
                Ok(Polled::Packet(p)) => self.transmit(p),
                Ok(Polled::Grow(n)) if n <= MAX_BUFFER => self.buf.resize(n, 0),
                Ok(Polled::Timeout(_) | Polled::Grow(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// The library's output up to its Connected, if it has it, sending
    /// and delivering none of it.
    pub(super) fn finish_silently(&mut self) {
        for _ in 0..MAX_POLLS {
            let Some(dtls) = self.dtls.as_mut() else {
                return;
            };
            let buf = &mut self.buf;
            match guard(|| poll_one(dtls, buf)) {
                Ok(Polled::Connected) => {
                    self.library_connected = true;
                    return;
                }
                Ok(Polled::Grow(n)) if n <= MAX_BUFFER => self.buf.resize(n, 0),
                Ok(Polled::Timeout(_) | Polled::Grow(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// A plaintext fatal alert to a client that offered both versions and
    /// has not heard which: the library does not read it then (see
    /// `receive`), so it is read here. Its description, if it is one.
    fn undecided_client_alert(contents: &[u8]) -> Option<u8> {
        // type 21, any version, epoch 0, any sequence, length 2, fatal.
        match contents {
            [21, _, _, 0, 0, _, _, _, _, _, _, 0, 2, 2, description, ..] => Some(*description),
            _ => None,
        }
    }

    /// The library gave up: why, in our words.
    fn library_failed(&mut self, e: Error) {
        use dimpl::SecurityError;
        let reason = match &e {
            Error::Timeout(_) => CloseReason::HandshakeTimeout,
            Error::SecurityError(SecurityError::FatalAlert { description }) => {
                CloseReason::PeerAlert {
                    description: *description,
                }
            }
            Error::CryptoError(_) | Error::SecurityError(_) | Error::PskError(_) => {
                CloseReason::Failed(FailureKind::Crypto)
            }
            Error::CertificateError(_) => CloseReason::Failed(FailureKind::Certificate),
            Error::ReceiveQueueFull
            | Error::TransmitQueueFull
            | Error::TransmitHistoryFull
            | Error::TooManyClientHelloFragments => CloseReason::Failed(FailureKind::Resources),
            _ => CloseReason::Failed(FailureKind::Protocol),
        };
        let detail = e.to_string();
        if self.phase != Phase::Closed {
            self.end(reason, Some(detail));
        }
    }
}
