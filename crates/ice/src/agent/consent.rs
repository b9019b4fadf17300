//! Consent freshness (RFC 7675) and keepalives (RFC 8445 §11) on the selected
//! pair.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often consent is checked while [`IceAgent::verify_consent`] runs:
/// a lost check does not decide alone.
const VERIFY_INTERVAL: Duration = Duration::from_millis(200);

use p2p_proto::Transmit;
use p2p_stun::{MessageBuilder, MessageClass, MessageType, Method, TransactionId};

use super::checks::{prflx_priority, Purpose};
use super::IceAgent;
use crate::candidate::CandidateKind;
use crate::types::{IceEvent, IceRole};

impl IceAgent {
    // ------------------------------------------------------------ consent and keepalive

    pub(super) fn drive_selected(&mut self, now: Instant) {
        if self.config.lite {
            return;
        }
        // A verification: an answer since it began ends it (the peer is
        // there); none by its deadline loses consent now.
        let mut verify_failed = false;
        if let Some(sel) = &mut self.selected {
            if let Some((since, until)) = sel.verify {
                if sel.last_consent > since {
                    sel.verify = None;
                } else if now >= until {
                    verify_failed = true;
                }
            }
        }
        let Some(sel) = &self.selected else {
            return;
        };
        let verifying = sel.verify.is_some();
        if verify_failed || now >= sel.last_consent + self.config.consent_timeout {
            // After a restart the old path only bridges the gap: losing it
            // leaves the new check list running, and the agent fails only
            // when that one does (or its checking timeout passes).
            let bridging = sel.pair.is_none();
            self.selected = None;
            if !bridging {
                self.failed = true;
            }
            self.emit(IceEvent::ConsentLost);
            return;
        }
        if now >= sel.last_consent + self.config.disconnected_timeout {
            self.disconnected = true;
        }
        let (source, destination) = (sel.local.base(), sel.remote.address());
        let transport = sel.local.transport();
        let local_priority = prflx_priority(&sel.local);
        if now >= sel.next_consent {
            if let Some((creds, key)) = self.remote_creds.clone() {
                let tid = TransactionId::random(&mut self.rng);
                if let Some(req) = self.build_request(tid, local_priority, false, &creds, &key) {
                    let route = (transport, source, destination);
                    self.start_request(now, tid, req, route, Purpose::Consent { key });
                }
                let jitter = if verifying {
                    VERIFY_INTERVAL
                } else {
                    self.consent_jitter()
                };
                if let Some(sel) = &mut self.selected {
                    sel.next_consent = now + jitter;
                    sel.last_sent = now;
                }
            }
        }
        let Some(sel) = &mut self.selected else {
            return;
        };
        if now >= sel.last_sent + self.config.keepalive_interval {
            sel.last_sent = now;
            let tid = TransactionId::random(&mut self.rng);
            let mut buf = Vec::with_capacity(28);
            if let Ok(mut b) = MessageBuilder::new(
                &mut buf,
                MessageType::new(Method::BINDING, MessageClass::Indication),
                tid,
            ) {
                if b.add_fingerprint().is_ok() {
                    b.finish();
                    self.transmit(Transmit::new(transport, source, destination, buf));
                }
            }
        }
    }

    /// A local candidate is gone for good, not just unanswered (the TCP or
    /// TLS connection to the TURN server of a relayed candidate ended, and
    /// the allocation with it): it is retired as by
    /// [`retire_local_candidate`](IceAgent::retire_local_candidate), and if
    /// the selected pair uses it, that pair is dropped now instead of after
    /// the consent timeout: the best other nominated valid pair is selected
    /// ([`IceEvent::SelectedPair`]) if there is one, else consent is lost
    /// at once ([`IceEvent::ConsentLost`]; the caller restarts ICE or ends
    /// the connection). Returns whether the candidate was known.
    pub fn lose_local_candidate(
        &mut self,
        now: Instant,
        address: SocketAddr,
        base: SocketAddr,
    ) -> bool {
        self.last_now = Some(now);
        if !self.retire_local_candidate(address, base) {
            return false;
        }
        let Some(sel) = &self.selected else {
            return true;
        };
        if sel.local.address() != address || sel.local.base() != base {
            return true;
        }
        let bridging = sel.pair.is_none();
        self.selected = None;
        if !bridging {
            self.select_best_nominated(now);
        }
        if self.selected.is_none() {
            if !bridging {
                self.failed = true;
            }
            self.emit(IceEvent::ConsentLost);
        }
        self.update_state();
        true
    }

    /// NAT rebinding (not covered by RFC 8445/7675): a consent answer shows
    /// the peer now sees us at another address than our selected local
    /// candidate. The peer answers there but its own consent checks and
    /// data go to the dead old mapping, and a controlled peer may not switch
    /// by itself. The controlling agent renominates the selected pair: its
    /// check yields a valid pair with the new (peer-reflexive) local address,
    /// which is selected, and the nomination arrives from that address, so
    /// the peer selects it too.
    pub(super) fn on_consent_mapped(&mut self, mapped: SocketAddr) {
        let Some(sel) = &self.selected else {
            return;
        };
        let Some(p) = sel.pair else {
            return;
        };
        if self.role != IceRole::Controlling
            || sel.local.kind() == CandidateKind::Relayed
            || sel.local.address() == mapped
            || self.nominating.is_some()
        {
            return;
        }
        self.nominating = Some(p);
        self.enqueue_triggered(p, true);
    }

    /// See [`IceAgent::verify_consent`].
    pub(super) fn start_verify(&mut self, now: Instant, within: Duration) -> bool {
        if self.config.lite || self.remote_creds.is_none() {
            return false;
        }
        let Some(sel) = &mut self.selected else {
            return false;
        };
        if sel.verify.is_none() {
            sel.verify = Some((now, now + within));
        }
        sel.next_consent = sel.next_consent.min(now);
        true
    }

    pub(super) fn refresh_consent(
        &mut self,
        now: Instant,
        local_base: SocketAddr,
        remote: SocketAddr,
    ) {
        if let Some(sel) = &mut self.selected {
            if sel.local.base() == local_base && sel.remote.address() == remote {
                sel.last_consent = now;
                self.disconnected = false;
            }
        }
    }
}
