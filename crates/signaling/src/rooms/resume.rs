//! Resume tokens: a client that lost its connection (the server restarted,
//! or its node of a cluster died) takes its peer id back on a new one.
//!
//! A token is `<peer id>.<expiry>.<mac>`: the expiry in Unix seconds and
//! `mac` = base64url(HMAC-SHA1(key, "<peer id>.<expiry>")). Any server
//! with the same key accepts it until the expiry, without keeping state:
//! the nodes of a cluster share the key, and a server restarted with the
//! same key takes back the tokens of its previous run.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::{ConnId, Out, Rooms};
use crate::msg::{ErrorCode, ServerMsg};

/// How a server signs resume tokens (see [`Rooms::with_resume`]).
#[derive(Clone)]
#[non_exhaustive]
pub struct ResumeConfig {
    /// The key tokens are signed with. Nodes of a cluster share it; a
    /// server that keeps it across restarts takes back its tokens.
    pub key: Vec<u8>,
    /// How long a token is good for. Default one day.
    pub ttl: Duration,
}

impl std::fmt::Debug for ResumeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumeConfig")
            .field("key", &"<redacted>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl ResumeConfig {
    /// Tokens signed with `key`, good for a day.
    pub fn new(key: impl Into<Vec<u8>>) -> ResumeConfig {
        ResumeConfig {
            key: key.into(),
            ttl: Duration::from_secs(86_400),
        }
    }
}

fn mac(key: &[u8], body: &str) -> String {
    let mut m = match Hmac::<Sha1>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    m.update(body.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
}

/// The token for `peer_id`, good until `expiry` (Unix seconds).
pub(super) fn token(key: &[u8], peer_id: &str, expiry: u64) -> String {
    let body = format!("{peer_id}.{expiry}");
    let m = mac(key, &body);
    format!("{body}.{m}")
}

/// The peer id a token names, if its mac is right and it has not expired
/// at `wall`.
pub(super) fn verify(key: &[u8], token: &str, wall: SystemTime) -> Option<String> {
    let mut parts = token.rsplitn(3, '.');
    let (m, expiry, peer) = (parts.next()?, parts.next()?, parts.next()?);
    if peer.is_empty() || peer.len() > 64 || peer.chars().any(char::is_control) {
        return None;
    }
    let expiry: u64 = expiry.parse().ok()?;
    let want = mac(key, &format!("{peer}.{expiry}"));
    if !bool::from(want.as_bytes().ct_eq(m.as_bytes())) {
        return None;
    }
    let now = wall.duration_since(UNIX_EPOCH).ok()?.as_secs();
    (now < expiry).then(|| peer.to_owned())
}

impl Rooms {
    /// The wall-clock time at `now`.
    pub(super) fn wall(&self, now: Instant) -> SystemTime {
        match self.epoch {
            Some((at, wall)) => wall
                .checked_add(now.saturating_duration_since(at))
                .unwrap_or(wall),
            None => UNIX_EPOCH,
        }
    }

    /// A fresh token for `peer_id`, when resuming is on.
    pub(super) fn resume_token(&self, peer_id: &str, now: Instant) -> Option<String> {
        let r = self.resume.as_ref()?;
        let wall = self.wall(now).duration_since(UNIX_EPOCH).ok()?.as_secs();
        Some(token(&r.key, peer_id, wall.saturating_add(r.ttl.as_secs())))
    }

    /// `resume`: the connection takes back the token's peer id. A local
    /// connection still holding it is closed first (its rooms left, as on
    /// a disconnect).
    pub(super) fn resume_conn(
        &mut self,
        conn: ConnId,
        now: Instant,
        token: &str,
        id: Option<u64>,
    ) -> Result<Out, (ErrorCode, String)> {
        let refused = |why: &str| (ErrorCode::ResumeRefused, why.to_owned());
        let Some(r) = &self.resume else {
            return Err(refused("this server does not resume sessions"));
        };
        let Some(c) = self.conns.get(&conn) else {
            return Ok(Vec::new());
        };
        if !c.rooms.is_empty() || self.pending_joins(conn) {
            return Err(refused("resume before joining any room"));
        }
        let Some(peer_id) = verify(&r.key, token, self.wall(now)) else {
            return Err(refused("the resume token is invalid or expired"));
        };
        let mut out = Vec::new();
        if peer_id != c.peer_id {
            if let Some(old) = self.peers.get(&peer_id).copied() {
                out.extend(self.disconnect(old));
                self.to_close.push_back(old);
            }
            let Some(c) = self.conns.get_mut(&conn) else {
                return Ok(out);
            };
            let previous = std::mem::replace(&mut c.peer_id, peer_id.clone());
            self.peers.remove(&previous);
            self.peers.insert(peer_id.clone(), conn);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.resumed = true;
        }
        let resume_token = self.resume_token(&peer_id, now);
        out.push((
            conn,
            ServerMsg::Resumed {
                peer_id,
                resume_token,
                id,
            },
        ));
        self.stats.resumed += 1;
        Ok(out)
    }

    /// Sets `resumed` on the `joined` just queued for `conn`, when `conn`
    /// resumed: whether its peer id was still a member of the room
    /// (`kept`).
    pub(super) fn mark_resumed(&self, conn: ConnId, kept: bool, out: &mut [(ConnId, ServerMsg)]) {
        if !self.conns.get(&conn).is_some_and(|c| c.resumed) {
            return;
        }
        for (to, msg) in out.iter_mut() {
            if let (true, ServerMsg::Joined { resumed, .. }) = (*to == conn, msg) {
                *resumed = Some(kept);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_peer_until_it_expires() {
        let t = token(b"k", "pab-7", 1_700_000_100);
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(
            verify(b"k", &t, at(1_700_000_000)).as_deref(),
            Some("pab-7")
        );
        assert_eq!(verify(b"k", &t, at(1_700_000_100)), None);
        assert_eq!(verify(b"other", &t, at(1_700_000_000)), None);
    }

    #[test]
    fn an_altered_token_is_refused() {
        let t = token(b"k", "p1", 1_700_000_100);
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let forged = t.replacen("p1.", "p2.", 1);
        assert_eq!(verify(b"k", &forged, at), None);
        let later = t.replacen(".1700000100.", ".1800000100.", 1);
        assert_eq!(verify(b"k", &later, at), None);
        assert_eq!(verify(b"k", "garbage", at), None);
        assert_eq!(verify(b"k", "", at), None);
    }
}
