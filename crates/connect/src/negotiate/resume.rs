//! Signaling that goes away and comes back: the negotiation waits, then
//! brings the peer up to date.

use std::time::Instant;

use super::{CloseReason, Failure, Negotiation, NegotiationEvent};

impl Negotiation {
    /// The signaling connection closed for good: before a path this is a
    /// failure; after, the path keeps working but cannot be restarted (and
    /// a path that already died closes the connection).
    pub fn signaling_lost(&mut self, now: Instant) {
        if (!self.signaling && !self.interrupted) || self.finished {
            return;
        }
        self.signaling = false;
        self.interrupted = false;
        if self.connected {
            self.event(NegotiationEvent::SignalingLost);
            if self.path_dead {
                self.closed(now, CloseReason::ConsentLost);
            }
        } else {
            self.fail(now, Failure::SignalingLost);
        }
        self.pump(now);
    }

    /// The signaling connection closed and the driver reconnects
    /// ([`NegotiationConfig::reconnect`]; without it this is
    /// [`Negotiation::signaling_lost`]). Nothing fails meanwhile: the path
    /// keeps carrying data, ICE goes on with what it has, and a path that
    /// dies waits for signaling to restart. Say
    /// [`Negotiation::signaling_restored`] or, when the driver gives up,
    /// [`Negotiation::signaling_lost`].
    pub fn signaling_interrupted(&mut self, now: Instant) {
        if !self.config.reconnect {
            return self.signaling_lost(now);
        }
        if !self.signaling || self.finished {
            return;
        }
        self.signaling = false;
        self.interrupted = true;
        self.event(NegotiationEvent::SignalingInterrupted);
        self.pump(now);
    }

    /// Signaling is back (with the same peer id, and the room joined
    /// again); `peer_present` says whether the peer is in the room. When
    /// it is, the offerer brings the negotiation up to date: what the peer
    /// may have missed is sent again (its offer and candidates before an
    /// answer came), or ICE restarts (fresh credentials, candidates and
    /// TURN allocations: the server may have restarted). Otherwise the
    /// same happens when the peer joins again.
    pub fn signaling_restored(&mut self, now: Instant, peer_present: bool) {
        if !self.interrupted || self.finished {
            return;
        }
        self.start(now);
        self.interrupted = false;
        self.signaling = true;
        self.event(NegotiationEvent::SignalingRestored);
        if peer_present {
            self.peer_gone = false;
            self.peer_deadline = None;
            self.resync(now);
        }
        self.pump(now);
    }

    /// Bring the peer up to date after signaling was interrupted (on
    /// either side): the offerer acts, the answerer answers.
    pub(super) fn resync(&mut self, now: Instant) {
        if self.finished || !self.signaling || !self.config.controlling {
            return;
        }
        if self.remote_ufrag.is_none() && !self.connected && !self.restart_pending {
            // No answer yet: the offer (or its candidates) may be lost.
            let history = std::mem::take(&mut self.history);
            self.describe(now, None);
            for m in history {
                self.signal_peer(m.clone());
                self.history.push(m);
            }
            return;
        }
        self.restart_pending = false;
        self.restart_inner(now);
    }
}
