//! Building and queueing responses and transmits.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use p2p_stun::attr::{ErrorCode, Software};
use p2p_stun::{EncodeError, Message, MessageBuilder, MessageType, TransactionId};

use crate::auth::CredentialStore;
use crate::relay::RelayAllocator;
use crate::types::{FiveTuple, Transmit};

use super::*;

impl<C: CredentialStore, R: RelayAllocator> TurnServer<C, R> {
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

    pub(super) fn push(
        &mut self,
        ft: &FiveTuple,
        to_client: bool,
        peer: SocketAddr,
        source: SocketAddr,
        buf: Vec<u8>,
    ) {
        let (transport, source, destination) = if to_client {
            (ft.transport, ft.server, ft.client)
        } else {
            (crate::types::Transport::Udp, source, peer)
        };
        self.transmits.push_back(Transmit {
            transport,
            source,
            destination,
            contents: buf,
        });
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
            self.counters.dropped_malformed += 1;
            self.recycle(buf);
            return;
        }
        if code.is_some() {
            self.counters.error_responses += 1;
        }
        self.push(ft, true, ft.client, ft.server, buf);
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

impl<C: CredentialStore, R: RelayAllocator> TurnServer<C, R> {
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
            self.counters.error_responses += 1;
            self.push(ft, true, ft.client, ft.server, buf);
        } else {
            self.recycle(buf);
        }
    }
}
