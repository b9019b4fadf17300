//! ICE restarts: asked for, after the path died, and answered.

use std::time::Instant;

use p2p_signaling::ClientMsg;

use super::{CloseReason, Negotiation, NegotiationEvent};

impl Negotiation {
    /// Restart ICE from our side: new credentials to the peer in an
    /// `ice-restart` message, gathering again, new checks. Returns false
    /// when no restart can start: ours already waits for the peer's answer,
    /// or signaling is gone, or the peer left.
    pub fn restart(&mut self, now: Instant) -> bool {
        self.start(now);
        let started = self.restart_inner(now);
        self.pump(now);
        started
    }

    pub(super) fn send_ice_restart(&mut self) {
        let (u, p) = self.session.local_credentials();
        let msg = ClientMsg::IceRestart {
            to: self.config.peer.clone(),
            ufrag: u.to_owned(),
            pwd: p.to_owned(),
            id: None,
        };
        self.signal_peer(msg);
    }

    pub(super) fn restart_inner(&mut self, now: Instant) -> bool {
        if self.finished || self.restart_pending || !self.signaling || self.peer_gone {
            return false;
        }
        self.restart_deadline
            .get_or_insert(now + self.config.connect_timeout);
        self.session.restart(now);
        self.remote_ufrag = None;
        self.early.clear();
        self.forget_unresolved();
        self.history.clear();
        self.restart_pending = true;
        self.event(NegotiationEvent::Restarting);
        self.send_ice_restart();
        true
    }

    /// The selected path died: restart if we control and can signal, wait
    /// for the peer's restart if it controls, give up otherwise.
    pub(super) fn path_died(&mut self, now: Instant) {
        self.path_dead = true;
        if let Some(why) = self.relay_lost.take() {
            return self.closed(now, CloseReason::RelayLost(why));
        }
        if self.config.reconnect && self.interrupted {
            // Our signaling comes back: restart then, within the restart
            // deadline. (A peer the server said left and whose path died
            // did not just lose its node: it would still answer consent.)
            self.restart_deadline
                .get_or_insert(now + self.config.connect_timeout);
            return;
        }
        if !self.signaling || self.peer_gone {
            return self.closed(now, CloseReason::ConsentLost);
        }
        self.restart_deadline
            .get_or_insert(now + self.config.connect_timeout);
        if self.config.controlling {
            self.restart_inner(now);
        }
    }
}
