//! Answers from the server: successes, errors (the 401/438 dance), indications, and failures.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_stun::attr::{
    AddressErrorCode, AlternateDomain, AlternateServer, Attribute, ConnectionId, Data, ErrorCode,
    Lifetime, Nonce, PasswordAlgorithm, PasswordAlgorithms, Realm, ReservationToken,
    XorMappedAddress, XorPeerAddress, XorRelayedAddress,
};
use p2p_stun::{userhash, AttrType, Key, Message, MessageClass, Method};

use super::{AuthState, ClientEvent, ClientState, Kind, Pending, TurnClient};
use crate::auth::{nonce_features, FEATURE_PASSWORD_ALGORITHMS, FEATURE_USERNAME_ANONYMITY};
use crate::Transport;

impl TurnClient {
    pub(super) fn handle_stun(&mut self, now: Instant, msg: &Message<'_>) -> bool {
        let typ = msg.typ();
        if typ.class == MessageClass::Indication && typ.method == Method::DATA {
            if let (Ok(Some(XorPeerAddress(peer))), Ok(Some(Data(data)))) =
                (msg.get::<XorPeerAddress>(), msg.get::<Data>())
            {
                self.events.push_back(ClientEvent::Data {
                    peer,
                    data: data.to_vec(),
                });
            }
            return true;
        }
        if typ.class == MessageClass::Indication && typ.method == Method::CONNECTION_ATTEMPT {
            if let (Ok(Some(XorPeerAddress(peer))), Ok(Some(ConnectionId(connection_id)))) =
                (msg.get::<XorPeerAddress>(), msg.get::<ConnectionId>())
            {
                self.events.push_back(ClientEvent::ConnectionAttempt {
                    peer,
                    connection_id,
                });
            }
            return true;
        }
        if !matches!(typ.class, MessageClass::Success | MessageClass::Error) {
            return false;
        }
        let Some(i) = self
            .pending
            .iter()
            .position(|p| p.tx.transaction_id() == msg.transaction_id())
        else {
            return false;
        };
        // Success responses to signed requests must be signed with our key;
        // a forged or garbled one is ignored and the transaction goes on.
        if typ.class == MessageClass::Success && self.pending[i].with_auth {
            let ok = self.auth.as_ref().is_some_and(|a| {
                if msg.has_integrity_sha256() {
                    msg.verify_integrity_sha256(&a.key).is_ok()
                } else {
                    msg.verify_integrity(&a.key).is_ok()
                }
            });
            if !ok {
                return true;
            }
        }
        let p = self.pending.swap_remove(i);
        if typ.class == MessageClass::Success {
            self.succeeded(now, p.kind, msg);
        } else {
            self.errored(now, p, msg);
        }
        true
    }

    pub(super) fn succeeded(&mut self, now: Instant, kind: Kind, msg: &Message<'_>) {
        match kind {
            Kind::Allocate => {
                let tid = msg.transaction_id();
                self.relayed = msg
                    .attributes()
                    .filter(|a| a.typ == AttrType::XOR_RELAYED_ADDRESS)
                    .filter_map(|a| XorRelayedAddress::decode(a.value, &tid).ok())
                    .map(|a| a.0)
                    .collect();
                if self.relayed.is_empty() {
                    self.fail(Kind::Allocate, None, "no XOR-RELAYED-ADDRESS".into());
                    return;
                }
                self.mapped = msg.get::<XorMappedAddress>().ok().flatten().map(|a| a.0);
                let lifetime = self.lifetime_of(msg);
                let reservation_token = msg.get::<ReservationToken>().ok().flatten().map(|t| t.0);
                let family_error = msg
                    .get::<AddressErrorCode>()
                    .ok()
                    .flatten()
                    .map(|e| (e.family, e.code));
                self.state = ClientState::Allocated;
                self.refresh_at = Some(now + lifetime * 4 / 5);
                if self.close_when_granted {
                    // Closed while allocating: delete it now; the caller
                    // hears `Deleted` (or a failure), not `Allocated`.
                    // (Encoding a Refresh cannot fail with a key that
                    // signed the Allocate; if it did, the allocation would
                    // expire by itself.)
                    let _ = self.close(now);
                    return;
                }
                self.events.push_back(ClientEvent::Allocated {
                    relayed: self.relayed.clone(),
                    mapped: self.mapped,
                    lifetime,
                    reservation_token,
                    family_error,
                });
            }
            Kind::Refresh(Some(0)) => self.deleted(),
            Kind::Refresh(_) => {
                if self.state == ClientState::Allocated {
                    let lifetime = self.lifetime_of(msg);
                    self.refresh_at = Some(now + lifetime * 4 / 5);
                    self.events.push_back(ClientEvent::Refreshed { lifetime });
                }
            }
            Kind::CreatePermission(peers) => {
                let at = now + self.config.permission_refresh;
                let mut confirmed = Vec::new();
                for p in peers {
                    if let Some(perm) = self.permissions.get_mut(&p) {
                        perm.refresh_at = Some(at);
                        confirmed.push(p);
                    }
                }
                if !confirmed.is_empty() {
                    self.events
                        .push_back(ClientEvent::PermissionCreated { peers: confirmed });
                }
            }
            Kind::ChannelBind(number, peer) => {
                let at = now + self.config.permission_refresh;
                let Some(c) = self.channels.get_mut(&peer) else {
                    return;
                };
                let first = !c.confirmed;
                c.confirmed = true;
                c.refresh_at = Some(at);
                // The binding refreshed the permission too; the channel's own
                // refresh keeps it alive from now on.
                if let Some(perm) = self.permissions.get_mut(&peer.ip()) {
                    if perm.refresh_at.is_none_or(|t| t < at) {
                        perm.refresh_at = Some(at);
                    }
                }
                if first {
                    self.events.push_back(ClientEvent::ChannelBound {
                        peer,
                        channel: number,
                    });
                }
            }
            Kind::Connect(peer) => match msg.get::<ConnectionId>() {
                Ok(Some(ConnectionId(connection_id))) => {
                    self.events.push_back(ClientEvent::PeerConnected {
                        peer,
                        connection_id,
                    });
                }
                _ => self.fail(Kind::Connect(peer), None, "no CONNECTION-ID".into()),
            },
            Kind::ConnectionBind(connection_id, local) => {
                self.events.push_back(ClientEvent::ConnectionBound {
                    connection_id,
                    local,
                });
            }
        }
    }

    pub(super) fn lifetime_of(&self, msg: &Message<'_>) -> Duration {
        msg.get::<Lifetime>()
            .ok()
            .flatten()
            .map(|l| Duration::from_secs(u64::from(l.0)))
            .unwrap_or(Duration::from_secs(600))
    }

    pub(super) fn errored(&mut self, now: Instant, p: Pending, msg: &Message<'_>) {
        let (code, reason) = match msg.get::<ErrorCode>() {
            Ok(Some(e)) => (Some(e.code()), e.reason().to_owned()),
            _ => (None, "malformed error response".to_owned()),
        };
        match code {
            Some(401) if !p.with_auth => match self.learn_auth(msg) {
                Ok(()) => {
                    let _ = self.start(now, p.kind, p.stale_retries);
                }
                Err(why) => self.fail(p.kind, code, why.into()),
            },
            Some(438) if p.stale_retries < self.config.max_stale_nonce_retries => {
                let nonce = msg
                    .get::<Nonce>()
                    .ok()
                    .flatten()
                    .map(|n| n.as_str().to_owned());
                match (nonce, self.auth.as_mut()) {
                    (Some(n), Some(a)) => {
                        a.nonce = n;
                        let _ = self.start(now, p.kind, p.stale_retries + 1);
                    }
                    (Some(_), None) => match self.learn_auth(msg) {
                        Ok(()) => {
                            let _ = self.start(now, p.kind, p.stale_retries + 1);
                        }
                        Err(why) => self.fail(p.kind, code, why.into()),
                    },
                    _ => self.fail(p.kind, code, reason),
                }
            }
            // A retransmitted delete whose first copy already deleted it.
            Some(437) if matches!(p.kind, Kind::Refresh(Some(0))) => self.deleted(),
            Some(300) if matches!(p.kind, Kind::Allocate) => match self.alternate(&p, msg) {
                Some(to) => {
                    let from = self.config.server;
                    self.left.push(from);
                    self.config.server = to;
                    // A new server: its own nonce (and maybe realm).
                    self.auth = None;
                    // Over TLS, the name to check the new server's
                    // certificate against (RFC 8489 §10).
                    let domain = match msg.get::<AlternateDomain>() {
                        Ok(Some(d)) if self.config.transport == Transport::Tls => {
                            Some(d.as_str().to_owned())
                        }
                        _ => None,
                    };
                    self.events
                        .push_back(ClientEvent::Redirected { from, to, domain });
                    let _ = self.start(now, Kind::Allocate, 0);
                }
                None => self.fail(p.kind, code, reason),
            },
            _ => self.fail(p.kind, code, reason),
        }
    }

    /// The ALTERNATE-SERVER of a 300 to follow, if it is one to follow: of
    /// the server's family, not a server this client already left, within
    /// [`super::MAX_REDIRECTS`], and signed with our key when the Allocate
    /// was (an unsigned 300 to a signed request may be forged). Any
    /// transport: over TCP and TLS the client's transmits go to the new
    /// server on the same transport, and its driver opens the connection
    /// (RFC 8489 §10: "using the same transport protocol").
    fn alternate(&self, p: &Pending, msg: &Message<'_>) -> Option<SocketAddr> {
        let AlternateServer(to) = msg.get::<AlternateServer>().ok().flatten()?;
        if p.with_auth {
            let a = self.auth.as_ref()?;
            let signed = if msg.has_integrity_sha256() {
                msg.verify_integrity_sha256(&a.key).is_ok()
            } else {
                msg.verify_integrity(&a.key).is_ok()
            };
            if !signed {
                return None;
            }
        }
        let ok = to.is_ipv4() == self.config.server.is_ipv4()
            && to != self.config.server
            && !self.left.contains(&to)
            && self.left.len() < super::MAX_REDIRECTS;
        ok.then_some(to)
    }

    /// Take REALM, NONCE and the algorithm from a 401 (RFC 8489 §9.2.3).
    pub(super) fn learn_auth(&mut self, msg: &Message<'_>) -> Result<(), &'static str> {
        let realm = msg
            .get::<Realm>()
            .ok()
            .flatten()
            .ok_or("401 without REALM")?;
        let nonce = msg
            .get::<Nonce>()
            .ok()
            .flatten()
            .ok_or("401 without NONCE")?;
        let features = nonce_features(nonce.as_str()).unwrap_or(0);
        let (alg, alg_list) = if features & FEATURE_PASSWORD_ALGORITHMS != 0 {
            match msg.get_raw(AttrType::PASSWORD_ALGORITHMS) {
                None => (PasswordAlgorithm::Md5, None),
                Some(raw) => {
                    let list = PasswordAlgorithms::decode(raw.value, &msg.transaction_id())
                        .map_err(|_| "malformed PASSWORD-ALGORITHMS")?;
                    let alg = list
                        .iter()
                        .find(|a| self.config.password_algorithms.contains(a))
                        .ok_or("no common password algorithm")?;
                    (alg, Some(raw.value.to_vec()))
                }
            }
        } else {
            (PasswordAlgorithm::Md5, None)
        };
        let c = &self.config;
        let key = Key::long_term(&c.username, realm.as_str(), &c.password, alg)
            .map_err(|_| "credentials cannot be prepared")?;
        let userhash = if c.use_userhash && features & FEATURE_USERNAME_ANONYMITY != 0 {
            Some(userhash(&c.username, realm.as_str()).map_err(|_| "username cannot be prepared")?)
        } else {
            None
        };
        self.auth = Some(AuthState {
            realm: realm.as_str().to_owned(),
            nonce: nonce.as_str().to_owned(),
            alg_list,
            alg,
            key,
            userhash,
        });
        Ok(())
    }

    pub(super) fn deleted(&mut self) {
        self.state = ClientState::Closed;
        self.relayed.clear();
        self.refresh_at = None;
        self.permissions.clear();
        self.channels.clear();
        self.by_number.clear();
        self.pending.clear();
        self.events.push_back(ClientEvent::Deleted);
    }

    pub(super) fn fail(&mut self, kind: Kind, code: Option<u16>, reason: String) {
        match kind {
            Kind::Allocate => {
                self.state = ClientState::Failed;
                self.events
                    .push_back(ClientEvent::AllocationFailed { code, reason });
            }
            Kind::Refresh(Some(0)) => self.deleted(),
            Kind::Refresh(_) => {
                if self.state == ClientState::Allocated {
                    self.state = ClientState::Failed;
                    self.refresh_at = None;
                    self.permissions.clear();
                    self.channels.clear();
                    self.by_number.clear();
                    self.pending.clear();
                    self.events
                        .push_back(ClientEvent::AllocationFailed { code, reason });
                }
            }
            Kind::CreatePermission(peers) => {
                for p in &peers {
                    let has_channel = self.channels.keys().any(|c| c.ip() == *p);
                    if !has_channel {
                        self.permissions.remove(p);
                    }
                }
                self.events
                    .push_back(ClientEvent::PermissionFailed { peers, code });
            }
            Kind::ChannelBind(channel, peer) => {
                self.channels.remove(&peer);
                self.by_number.remove(&channel);
                let other_use = self.channels.keys().any(|c| c.ip() == peer.ip());
                let perm_pending = self
                    .permissions
                    .get(&peer.ip())
                    .is_some_and(|p| p.refresh_at.is_none());
                if !other_use && perm_pending {
                    self.permissions.remove(&peer.ip());
                }
                self.events.push_back(ClientEvent::ChannelBindFailed {
                    peer,
                    channel,
                    code,
                });
            }
            Kind::Connect(peer) => {
                self.events
                    .push_back(ClientEvent::ConnectFailed { peer, code });
            }
            Kind::ConnectionBind(connection_id, local) => {
                self.events.push_back(ClientEvent::ConnectionBindFailed {
                    connection_id,
                    local,
                    code,
                });
            }
        }
    }
}
