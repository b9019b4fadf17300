//! Authenticating requests (RFC 8489 §9.2.4) and the 401/438 challenges.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use p2p_stun::attr::{
    ConnectionId, Nonce, PasswordAlgorithm, PasswordAlgorithms, Realm, Userhash, Username,
};
use p2p_stun::{AttrType, EncodeError, Key, Message, Method};

use p2p_proto::FiveTuple;

use super::{AuthFailure, ServerEvent, TurnServer};
use crate::auth::{nonce_features, CredentialStore, FEATURE_PASSWORD_ALGORITHMS};

/// The limiter's key for requests signed with a nonce that was not minted
/// for their 5-tuple: one bucket shared by all of them. A forged source
/// address (UDP) cannot get its owner throttled, since the forger never
/// sees the nonces minted for it; nor can a guesser escape the limit (or
/// get a 438 that says the password was right) with nonces from elsewhere.
const FOREIGN_NONCE: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// The result of a successful authentication.
#[derive(Clone)]
pub(super) struct Auth {
    pub(super) user: String,
    pub(super) key: Key,
    pub(super) sha256: bool,
    /// The store says the user's credential is ephemeral.
    pub(super) ephemeral: bool,
}

impl<C: CredentialStore> TurnServer<C> {
    /// A 401 or 438 with REALM, a fresh NONCE and PASSWORD-ALGORITHMS.
    pub(super) fn challenge(
        &mut self,
        now: Instant,
        ft: &FiveTuple,
        req: &Message<'_>,
        code: u16,
        auth: Option<&Auth>,
    ) {
        let nonce = self.nonces.mint(self.secs(now), ft.remote, ft.transport);
        let realm = self.config.realm.clone();
        let algs = self.config.password_algorithms.clone();
        self.reply(ft, req, auth, Some(code), |b| {
            b.add(&Realm::new(&realm).map_err(|_| EncodeError::TooLarge)?)?;
            b.add(&Nonce::new(&nonce).map_err(|_| EncodeError::TooLarge)?)?;
            if !algs.is_empty() {
                b.add(&PasswordAlgorithms::List(&algs))?;
            }
            Ok(())
        });
    }

    pub(super) fn auth_failed(
        &mut self,
        now: Instant,
        ft: &FiveTuple,
        req: &Message<'_>,
        user: Option<String>,
        reason: AuthFailure,
        limit_key: IpAddr,
    ) {
        self.tally(ft.transport).auth_failures += 1;
        if let Some(l) = &mut self.auth_limiter {
            l.failed(now, limit_key);
        }
        self.events.push_back(ServerEvent::AuthFailed {
            five_tuple: *ft,
            username: user,
            reason,
        });
        self.challenge(now, ft, req, 401, None);
    }

    /// RFC 8489 §9.2.4, in its order. On failure the error is already sent.
    pub(super) fn authenticate(
        &mut self,
        now: Instant,
        ft: &FiveTuple,
        msg: &Message<'_>,
    ) -> Option<Auth> {
        if !msg.has_integrity() && !msg.has_integrity_sha256() {
            self.challenge(now, ft, msg, 401, None);
            return None;
        }
        let parsed = (|| {
            Ok::<_, p2p_stun::DecodeError>((
                msg.get::<Username>()?,
                msg.get::<Userhash>()?,
                msg.get::<Realm>()?,
                msg.get::<Nonce>()?,
                msg.get::<PasswordAlgorithm>()?,
            ))
        })();
        let Ok((username, userhash, Some(realm), Some(nonce), alg)) = parsed else {
            self.error(ft, msg, None, 400);
            return None;
        };
        if username.is_none() && userhash.is_none() {
            self.error(ft, msg, None, 400);
            return None;
        }
        // Failures count against the client's address when the nonce was
        // minted for its 5-tuple (fresh or stale), else against one key
        // shared by every foreign nonce ([`FOREIGN_NONCE`]).
        let limit_key = if self.nonce_minted_for(nonce.as_str(), ft, msg) {
            ft.remote.ip()
        } else {
            FOREIGN_NONCE
        };
        // Credentials past their key's failures: dropped unchecked and
        // unanswered (RFC 8489 has no code for "slow down"; a 401 would
        // tell a guesser at once, and checking would let a guess succeed).
        // The client retransmits with backoff.
        if self
            .auth_limiter
            .as_ref()
            .is_some_and(|l| l.throttled(now, limit_key))
        {
            self.tally(ft.transport).auth_throttled += 1;
            return None;
        }
        let features = nonce_features(nonce.as_str()).unwrap_or(0);
        let alg = if features & FEATURE_PASSWORD_ALGORITHMS != 0 {
            let list = msg.get_raw(AttrType::PASSWORD_ALGORITHMS);
            match (list, alg) {
                (None, None) => PasswordAlgorithm::Md5,
                (Some(l), Some(a))
                    if l.value == self.alg_list_wire.as_slice()
                        && self.config.password_algorithms.contains(&a) =>
                {
                    a
                }
                _ => {
                    // Downgrade protection (RFC 8489 §9.2.4).
                    self.error(ft, msg, None, 400);
                    return None;
                }
            }
        } else {
            PasswordAlgorithm::Md5
        };
        let claimed = username.map(|u| u.as_str().to_owned());
        if realm.as_str() != self.config.realm {
            self.auth_failed(now, ft, msg, claimed, AuthFailure::WrongRealm, limit_key);
            return None;
        }
        let user = match (claimed.clone(), userhash) {
            (Some(u), _) => Some(u),
            (None, Some(h)) => self.creds.username_for_userhash(&h.0, &self.config.realm),
            (None, None) => None,
        };
        let wall = self.wall(now);
        let keys = user
            .as_deref()
            .map(|u| self.creds.keys(u, &self.config.realm, alg, wall))
            .unwrap_or_default();
        let Some(user) = user.filter(|_| !keys.is_empty()) else {
            self.auth_failed(now, ft, msg, claimed, AuthFailure::UnknownUser, limit_key);
            return None;
        };
        // Several keys while a secret is rotated: the one that signed it.
        let Some(key) = keys
            .into_iter()
            .find(|k| msg.verify_any_integrity(k).is_ok())
        else {
            self.auth_failed(
                now,
                ft,
                msg,
                Some(user),
                AuthFailure::BadIntegrity,
                limit_key,
            );
            return None;
        };
        let auth = Auth {
            ephemeral: self.creds.is_ephemeral(&user),
            user,
            key,
            sha256: msg.has_integrity_sha256(),
        };
        let secs = self.secs(now);
        let fresh = self
            .nonces
            .is_valid(nonce.as_str(), secs, ft.remote, ft.transport)
            || self.control_connection(msg).is_some_and(|control| {
                self.nonces
                    .is_valid(nonce.as_str(), secs, control.remote, control.transport)
            });
        if !fresh {
            self.challenge(now, ft, msg, 438, Some(&auth));
            return None;
        }
        Some(auth)
    }

    /// Whether `nonce` was minted for `ft` (or, for a ConnectionBind, for
    /// its control connection), fresh or not.
    fn nonce_minted_for(&self, nonce: &str, ft: &FiveTuple, msg: &Message<'_>) -> bool {
        self.nonces.minted_for(nonce, ft.remote, ft.transport)
            || self
                .control_connection(msg)
                .is_some_and(|c| self.nonces.minted_for(nonce, c.remote, c.transport))
    }

    /// For a ConnectionBind, the control connection of the allocation its
    /// CONNECTION-ID belongs to: the client may sign with the nonce it got
    /// there (coturn's client does), as the new data connection has none.
    pub(super) fn control_connection(&self, msg: &Message<'_>) -> Option<FiveTuple> {
        if msg.typ().method != Method::CONNECTION_BIND {
            return None;
        }
        let Ok(Some(ConnectionId(id))) = msg.get::<ConnectionId>() else {
            return None;
        };
        let c = self.tcp_conns.get(&id)?;
        let a = self.slots.get(c.slot)?.as_ref()?;
        Some(a.five_tuple)
    }
}
