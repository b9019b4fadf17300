//! Reconnecting to signaling: a new connection, the peer id taken back,
//! the room joined again (see [`crate::Reconnect`] for when and where).

use std::sync::Arc;
use std::time::Instant;

use p2p_signaling::SignalingClient;

use super::super::PeerConfig;
use super::{Channels, Driver};

/// A new signaling connection, resumed and in the room again.
pub(super) struct Reattached {
    pub(super) client: SignalingClient,
    pub(super) url: String,
    /// The peer is in the room.
    pub(super) peer_present: bool,
    /// The others in the room.
    pub(super) peers: Vec<p2p_signaling::PeerInfo>,
    /// Our membership of the room survived the move (the server says so
    /// in `joined`; a server that does not say is taken at its word that
    /// the id came back): a peer that joined meanwhile saw us listed and
    /// offers. When it did not
    /// (we were away longer than the cluster's reap time, or on one node
    /// whose connection of ours closed), we are a newcomer to them.
    pub(super) membership_kept: bool,
}

/// Connects to `url`, takes our peer id back with `token` (a refusal
/// leaves us the new id: the server may have lost its key) and joins the
/// room again; all within the signaling timeout.
pub(super) async fn reattach(
    config: PeerConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    url: String,
    token: Option<String>,
    peer: String,
) -> Result<Reattached, String> {
    let work = async {
        let mut client = SignalingClient::connect_with(&url, tls)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let mut resumed = false;
        if let Some(t) = token {
            match client.resume(&t).await {
                Ok(()) => resumed = true,
                Err(e) => tracing::warn!(
                    "{url}: resume refused ({e}); going on as {}",
                    client.peer_id()
                ),
            }
        }
        client.ask_peers_to_hide_hosts(config.mdns_ask_peer_to_hide);
        let peers = client
            .join(
                &config.room,
                config.token.as_deref(),
                config.name.as_deref(),
            )
            .await
            .map_err(|e| format!("{url}: join: {e}"))?;
        let peer_present = peers.iter().any(|p| p.id == peer);
        let membership_kept = resumed && client.membership_kept() != Some(false);
        if resumed && !membership_kept {
            tracing::info!(
                "{url}: our membership of the room did not survive; joined again as a newcomer"
            );
        }
        Ok(Reattached {
            client,
            url: url.clone(),
            peer_present,
            peers,
            membership_kept,
        })
    };
    tokio::time::timeout(config.signaling_timeout, work)
        .await
        .map_err(|_| format!("{url}: no answer in {:?}", config.signaling_timeout))?
}

pub(super) async fn attempt_done(
    attempt: &mut Option<tokio::task::JoinHandle<Result<Reattached, String>>>,
) -> Result<Reattached, String> {
    match attempt {
        Some(h) => {
            let r = h.await.unwrap_or_else(|e| Err(e.to_string()));
            *attempt = None;
            r
        }
        None => std::future::pending().await,
    }
}

impl Driver {
    /// The signaling connection closed: reconnect (the negotiation waits),
    /// or, when reconnecting is off, it is final.
    pub(super) fn signaling_gone(&mut self, now: Instant) {
        self.client = None;
        if self.config.reconnect.enabled {
            self.reconnect.lost(now);
            self.negotiation.signaling_interrupted(now);
        } else {
            self.negotiation.signaling_lost(now);
        }
    }

    /// When the reconnection wants to be polled.
    pub(super) fn reconnect_timeout(&self) -> Option<Instant> {
        if self.client.is_some() || self.attempt.is_some() {
            return None;
        }
        self.reconnect.next_wake()
    }

    /// Starts a reconnection attempt when it is time, or gives up.
    pub(super) fn poll_reconnect(&mut self, ch: &Channels) {
        if self.client.is_some() || self.attempt.is_some() || !self.reconnect.is_lost() {
            return;
        }
        let now = Instant::now();
        match self.reconnect.poll(now) {
            crate::ReconnectAction::Try(url) => {
                tracing::debug!("signaling: reconnecting to {url}");
                self.attempt = Some(tokio::spawn(reattach(
                    self.config.clone(),
                    self.tls.clone(),
                    url,
                    self.resume_token.clone(),
                    self.peer.clone(),
                )));
            }
            crate::ReconnectAction::GiveUp => {
                let _ = ch;
                // Final: the reconnection stops here.
                self.reconnect = crate::Reconnect::new(Vec::new(), crate::ReconnectPolicy::never());
                self.negotiation.signaling_lost(now);
            }
            _ => {}
        }
    }
}
