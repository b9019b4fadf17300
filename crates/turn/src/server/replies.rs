//! Building and queueing responses and transmits.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use p2p_proto::{FiveTuple, Transmit, Transport};
use p2p_stun::attr::{ErrorCode, Software};
use p2p_stun::{EncodeError, Message, MessageBuilder, MessageType, TransactionId};

use super::{Auth, Counters, CredentialStore, ServerEvent, TurnServer};

/// Index of a client transport in the server's per-transport counters.
pub(super) fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        _ => 2,
    }
}

impl<C: CredentialStore> TurnServer<C> {
    pub(super) fn wall(&self, now: Instant) -> SystemTime {
        match now.checked_duration_since(self.epoch.0) {
            Some(d) => self.epoch.1 + d,
            None => self
                .epoch
                .1
                .checked_sub(self.epoch.0.duration_since(now))
                .unwrap_or(std::time::UNIX_EPOCH),
        }
    }

    pub(super) fn secs(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch.0).as_secs()
    }

    pub(super) fn take_buf(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_else(|| Vec::with_capacity(1500))
    }

    /// The counters of client transport `t`.
    pub(super) fn tally(&mut self, t: Transport) -> &mut Counters {
        &mut self.counters[transport_index(t)]
    }

    /// Queue `buf` to the client of `ft`, from the listening address.
    pub(super) fn send_to_client(&mut self, ft: &FiveTuple, buf: Vec<u8>) {
        self.transmits
            .push_back(Transmit::new(ft.transport, ft.local, ft.remote, buf));
    }

    /// Queue `buf` to `peer`, from the relayed address `relayed` (UDP).
    pub(super) fn send_to_peer(&mut self, relayed: SocketAddr, peer: SocketAddr, buf: Vec<u8>) {
        self.transmits.push_back(Transmit::udp(relayed, peer, buf));
    }

    /// Send a response to `req` on the 5-tuple: an error when `code` is set,
    /// signed when `auth` is.
    pub(super) fn reply(
        &mut self,
        ft: &FiveTuple,
        req: &Message<'_>,
        auth: Option<&Auth>,
        code: Option<u16>,
        f: impl FnOnce(&mut MessageBuilder<&mut Vec<u8>>) -> Result<(), EncodeError>,
    ) {
        let (typ, tid, fp) = (req.typ(), req.transaction_id(), req.has_fingerprint());
        self.reply_to(ft, typ, tid, fp, auth, code, f);
    }

    /// [`Self::reply`] from the request's type, transaction id and whether
    /// it had a FINGERPRINT (for answers given later, as to Connect).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reply_to(
        &mut self,
        ft: &FiveTuple,
        req_typ: MessageType,
        tid: TransactionId,
        fingerprint: bool,
        auth: Option<&Auth>,
        code: Option<u16>,
        f: impl FnOnce(&mut MessageBuilder<&mut Vec<u8>>) -> Result<(), EncodeError>,
    ) {
        let mut buf = self.take_buf();
        let typ = match code {
            Some(_) => req_typ.error(),
            None => req_typ.success(),
        };
        let built = (|| {
            let mut b = MessageBuilder::new(&mut buf, typ, tid)?;
            if let Some(c) = code.and_then(ErrorCode::from_code) {
                b.add(&c)?;
            }
            f(&mut b)?;
            if let Some(a) = auth {
                if let Some(sw) = self
                    .config
                    .software
                    .as_deref()
                    .and_then(|s| Software::new(s).ok())
                {
                    b.add(&sw)?;
                }
                if a.sha256 {
                    b.add_message_integrity_sha256(&a.key)?;
                } else {
                    b.add_message_integrity(&a.key)?;
                }
            }
            if fingerprint {
                b.add_fingerprint()?;
            }
            Ok::<(), EncodeError>(())
        })();
        if built.is_err() {
            self.tally(ft.transport).dropped_malformed += 1;
            self.recycle(buf);
            return;
        }
        if let Some(code) = code {
            self.tally(ft.transport).error_responses += 1;
            // The credential dance is no refusal (auth failures have their
            // own event).
            if code != 401 && code != 438 {
                self.events.push_back(ServerEvent::RequestRefused {
                    five_tuple: *ft,
                    user: auth.map(|a| a.user.clone()),
                    method: req_typ.method,
                    code,
                });
            }
        }
        self.send_to_client(ft, buf);
    }

    pub(super) fn error(
        &mut self,
        ft: &FiveTuple,
        req: &Message<'_>,
        auth: Option<&Auth>,
        code: u16,
    ) {
        self.reply(ft, req, auth, Some(code), |_| Ok(()));
    }
}

impl<C: CredentialStore> TurnServer<C> {
    /// A 400 to a request whose header is readable but whose body is not.
    pub(super) fn bad_header_request(&mut self, ft: &FiveTuple, typ: MessageType, b: &[u8]) {
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&b[8..20]);
        let mut buf = self.take_buf();
        let ok = (|| {
            let mut m = MessageBuilder::new(&mut buf, typ.error(), TransactionId::new(tid))?;
            if let Some(c) = ErrorCode::from_code(400) {
                m.add(&c)?;
            }
            Ok::<(), EncodeError>(())
        })();
        if ok.is_ok() {
            self.tally(ft.transport).error_responses += 1;
            self.send_to_client(ft, buf);
        } else {
            self.recycle(buf);
        }
    }
}
