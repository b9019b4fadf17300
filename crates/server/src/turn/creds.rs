//! The daemon's credentials: static users and, optionally, a REST API secret.

use std::time::SystemTime;

use p2p_stun::attr::PasswordAlgorithm;
use p2p_stun::Key;
use p2p_turn::{CredentialStore, RestSecret, StaticUsers};

/// Static users and, optionally, REST API ephemeral credentials.
pub(crate) struct Creds {
    pub(super) users: StaticUsers,
    pub(super) has_users: bool,
    pub(super) rest: Option<RestSecret>,
}

impl CredentialStore for Creds {
    fn key(
        &self,
        username: &str,
        realm: &str,
        alg: PasswordAlgorithm,
        wall_now: SystemTime,
    ) -> Option<Key> {
        self.users
            .key(username, realm, alg, wall_now)
            .or_else(|| self.rest.as_ref()?.key(username, realm, alg, wall_now))
    }

    fn username_for_userhash(&self, hash: &[u8; 32], realm: &str) -> Option<String> {
        self.users.username_for_userhash(hash, realm)
    }

    fn supports_userhash(&self) -> bool {
        self.has_users
    }

    /// A REST user: one the static table does not have.
    fn is_ephemeral(&self, username: &str) -> bool {
        self.rest.is_some() && !self.users.contains(username)
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
            rest: Some(RestSecret::new("s")),
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
