//! The daemon's credentials: static users and, optionally, REST API
//! secrets (several while one is rotated, see [`SecretRing`]).

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use p2p_stun::attr::PasswordAlgorithm;
use p2p_stun::Key;
use p2p_turn::{CredentialStore, RestSecret, StaticUsers};

/// The TURN REST secrets accepted now, the one to sign with first. One
/// with `turn.auth_secret` on a single node; the cluster's shared list
/// (in Redis) on a node of a cluster, replaced as it changes, so that a
/// secret is rotated without a restart. Cheap to clone (shared).
#[derive(Clone, Default)]
pub(crate) struct SecretRing(Arc<RwLock<Vec<(String, RestSecret)>>>);

impl SecretRing {
    pub(crate) fn new(secrets: impl IntoIterator<Item = String>) -> SecretRing {
        let ring = SecretRing::default();
        ring.set(secrets.into_iter().collect());
        ring
    }

    /// Replaces the list; whether it changed.
    pub(crate) fn set(&self, secrets: Vec<String>) -> bool {
        let mut w = self.0.write().unwrap_or_else(|e| e.into_inner());
        if w.iter().map(|(s, _)| s).eq(secrets.iter()) {
            return false;
        }
        *w = secrets
            .into_iter()
            .map(|s| {
                let r = RestSecret::new(s.as_bytes());
                (s, r)
            })
            .collect();
        true
    }

    /// The secret new credentials are signed with.
    pub(crate) fn signing(&self) -> Option<String> {
        let r = self.0.read().unwrap_or_else(|e| e.into_inner());
        r.first().map(|(s, _)| s.clone())
    }

    /// How many secrets are accepted.
    pub(crate) fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn keys(&self, u: &str, realm: &str, alg: PasswordAlgorithm, wall: SystemTime) -> Vec<Key> {
        let r = self.0.read().unwrap_or_else(|e| e.into_inner());
        r.iter()
            .filter_map(|(_, s)| s.key(u, realm, alg, wall))
            .collect()
    }
}

/// Static users and, optionally, REST API ephemeral credentials.
pub(crate) struct Creds {
    pub(super) users: StaticUsers,
    pub(super) has_users: bool,
    pub(super) rest: SecretRing,
}

impl CredentialStore for Creds {
    fn key(
        &self,
        username: &str,
        realm: &str,
        alg: PasswordAlgorithm,
        wall_now: SystemTime,
    ) -> Option<Key> {
        self.keys(username, realm, alg, wall_now).into_iter().next()
    }

    fn keys(
        &self,
        username: &str,
        realm: &str,
        alg: PasswordAlgorithm,
        wall_now: SystemTime,
    ) -> Vec<Key> {
        if let Some(k) = self.users.key(username, realm, alg, wall_now) {
            return vec![k];
        }
        self.rest.keys(username, realm, alg, wall_now)
    }

    fn username_for_userhash(&self, hash: &[u8; 32], realm: &str) -> Option<String> {
        self.users.username_for_userhash(hash, realm)
    }

    fn supports_userhash(&self) -> bool {
        self.has_users
    }

    /// A REST user: one the static table does not have.
    fn is_ephemeral(&self, username: &str) -> bool {
        self.rest.len() > 0 && !self.users.contains(username)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn static_users_win_and_rest_usernames_are_checked() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let creds = Creds {
            users: StaticUsers::new().with_user("alice", "secret"),
            has_users: true,
            rest: SecretRing::new(["s".to_owned()]),
        };
        let alg = PasswordAlgorithm::Sha256;
        let k = |u: &str, p: &str| Key::long_term(u, "r", p, alg).unwrap();
        assert_eq!(
            creds.key("alice", "r", alg, wall),
            Some(k("alice", "secret"))
        );
        let user = "2000000:bob";
        let pass = RestSecret::new("s").password(user);
        assert_eq!(creds.key(user, "r", alg, wall), Some(k(user, &pass)));
        assert_eq!(creds.key("900000:bob", "r", alg, wall), None, "expired");
        assert_eq!(creds.key("bob", "r", alg, wall), None);
        // A second secret (a rotation): both passwords work, each with
        // its own key; dropping the old one ends its credentials.
        assert!(creds.rest.set(vec!["new".into(), "s".into()]));
        let new_pass = RestSecret::new("new").password(user);
        assert_eq!(creds.keys(user, "r", alg, wall).len(), 2);
        assert!(creds.keys(user, "r", alg, wall).contains(&k(user, &pass)));
        assert!(creds
            .keys(user, "r", alg, wall)
            .contains(&k(user, &new_pass)));
        assert_eq!(creds.rest.signing().as_deref(), Some("new"));
        assert!(creds.rest.set(vec!["new".into()]));
        assert_eq!(creds.keys(user, "r", alg, wall), vec![k(user, &new_pass)]);
        assert!(creds.supports_userhash());
        assert!(!creds.is_ephemeral("alice"));
        assert!(creds.is_ephemeral(user));
        let h = p2p_stun::userhash("alice", "r").unwrap();
        assert_eq!(
            creds.username_for_userhash(&h, "r").as_deref(),
            Some("alice")
        );
    }
}
