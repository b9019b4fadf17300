//! The connection state (`IceState`) of the agent.

use super::checks::Purpose;
use super::IceAgent;
use crate::pair::PairState;
use crate::types::{IceEvent, IceState};

impl IceAgent {
    // ------------------------------------------------------------ state

    fn all_checks_done(&self) -> bool {
        self.triggered.is_empty()
            && self.nominating.is_none()
            && self
                .pairs
                .iter()
                .all(|p| matches!(p.state, PairState::Succeeded | PairState::Failed))
    }

    pub(super) fn update_state(&mut self) {
        if !self.failed
            && !self.config.lite
            && self.selected.is_none()
            && self.remote_creds.is_some()
            && self.remote_eoc
            && self.gathering_complete_sent
            && self.pairs.iter().all(|p| p.state == PairState::Failed)
            && self.triggered.is_empty()
            && !self
                .requests
                .iter()
                .any(|t| matches!(t.purpose, Purpose::Check { .. }) && !t.cancelled)
        {
            self.failed = true;
        }
        let state = if self.failed {
            IceState::Failed
        } else if let Some(sel) = &self.selected {
            if sel.pair.is_none() {
                IceState::Checking
            } else if self.config.lite {
                IceState::Completed
            } else if self.disconnected {
                IceState::Disconnected
            } else if self.local_eoc && self.remote_eoc && self.all_checks_done() {
                IceState::Completed
            } else {
                IceState::Connected
            }
        } else if self.checking_since.is_some()
            || (self.remote_creds.is_some() && !self.pairs.is_empty())
        {
            IceState::Checking
        } else if self.disconnected {
            // The old path was lost during a restart that has not started
            // its checks yet.
            IceState::Disconnected
        } else {
            IceState::New
        };
        if state != self.state {
            self.state = state;
            self.emit(IceEvent::StateChanged(state));
        }
    }
}
