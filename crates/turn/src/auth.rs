//! Long-term credentials (RFC 8489 §9.2): the credential store trait, static
//! users, coturn-style REST ephemeral credentials, and the server's stateless
//! nonces.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use p2p_stun::attr::PasswordAlgorithm;
use p2p_stun::{userhash, Key};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use p2p_proto::Transport;

/// Where the server gets long-term keys from. Synchronous: a store that has
/// to wait on I/O (a database, an HTTP service) sits behind a cache that
/// implements this trait.
pub trait CredentialStore {
    /// The long-term key of `username` in `realm` for `alg`
    /// (`Key::long_term(username, realm, password, alg)`), or `None` when the
    /// user is unknown or its credential is not valid at `wall_now`.
    fn key(
        &self,
        username: &str,
        realm: &str,
        alg: PasswordAlgorithm,
        wall_now: SystemTime,
    ) -> Option<Key>;

    /// Every key `username` may sign with in `realm` for `alg` at
    /// `wall_now`: a store with several secrets at once (a REST secret being
    /// rotated) has one per secret, and the server takes the first that
    /// verifies the request. The default: [`CredentialStore::key`]'s.
    fn keys(
        &self,
        username: &str,
        realm: &str,
        alg: PasswordAlgorithm,
        wall_now: SystemTime,
    ) -> Vec<Key> {
        self.key(username, realm, alg, wall_now)
            .into_iter()
            .collect()
    }

    /// The username whose USERHASH (RFC 8489 §14.4) is `hash` in `realm`, for
    /// stores that can invert it. The default cannot.
    fn username_for_userhash(&self, hash: &[u8; 32], realm: &str) -> Option<String> {
        let _ = (hash, realm);
        None
    }

    /// Whether [`CredentialStore::username_for_userhash`] works; the server
    /// then advertises the "username anonymity" feature in its nonces.
    fn supports_userhash(&self) -> bool {
        false
    }

    /// Whether `username`'s credential is ephemeral: minted on demand by a
    /// service from a shared secret (TURN REST credentials), so that whoever
    /// can reach that service can get more of them, rather than configured
    /// one by one. The server can hold such users together to a share of
    /// its capacity (`ServerConfig::ephemeral_share_percent`), so that they
    /// cannot take what the configured users need. The default: none is.
    fn is_ephemeral(&self, username: &str) -> bool {
        let _ = username;
        false
    }
}

impl<T: CredentialStore + ?Sized> CredentialStore for Box<T> {
    fn key(&self, u: &str, r: &str, a: PasswordAlgorithm, w: SystemTime) -> Option<Key> {
        (**self).key(u, r, a, w)
    }
    fn keys(&self, u: &str, r: &str, a: PasswordAlgorithm, w: SystemTime) -> Vec<Key> {
        (**self).keys(u, r, a, w)
    }
    fn username_for_userhash(&self, hash: &[u8; 32], realm: &str) -> Option<String> {
        (**self).username_for_userhash(hash, realm)
    }
    fn supports_userhash(&self) -> bool {
        (**self).supports_userhash()
    }
    fn is_ephemeral(&self, username: &str) -> bool {
        (**self).is_ephemeral(username)
    }
}

impl<T: CredentialStore + ?Sized> CredentialStore for std::sync::Arc<T> {
    fn key(&self, u: &str, r: &str, a: PasswordAlgorithm, w: SystemTime) -> Option<Key> {
        (**self).key(u, r, a, w)
    }
    fn keys(&self, u: &str, r: &str, a: PasswordAlgorithm, w: SystemTime) -> Vec<Key> {
        (**self).keys(u, r, a, w)
    }
    fn username_for_userhash(&self, hash: &[u8; 32], realm: &str) -> Option<String> {
        (**self).username_for_userhash(hash, realm)
    }
    fn supports_userhash(&self) -> bool {
        (**self).supports_userhash()
    }
    fn is_ephemeral(&self, username: &str) -> bool {
        (**self).is_ephemeral(username)
    }
}

/// A fixed table of users and passwords.
///
/// USERHASH lookups hash every username (one SHA-256 each): fine for the
/// handful of users a static table holds.
#[derive(Clone, Default)]
pub struct StaticUsers {
    users: HashMap<String, String>,
}

impl std::fmt::Debug for StaticUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticUsers")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl StaticUsers {
    /// An empty table.
    pub fn new() -> Self {
        StaticUsers::default()
    }

    /// Add (or replace) a user.
    pub fn with_user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.insert(username, password);
        self
    }

    /// Add (or replace) a user.
    pub fn insert(&mut self, username: impl Into<String>, password: impl Into<String>) {
        self.users.insert(username.into(), password.into());
    }

    /// Remove a user.
    pub fn remove(&mut self, username: &str) {
        self.users.remove(username);
    }

    /// Whether the table has `username`.
    pub fn contains(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }
}

impl CredentialStore for StaticUsers {
    fn key(
        &self,
        username: &str,
        realm: &str,
        alg: PasswordAlgorithm,
        _: SystemTime,
    ) -> Option<Key> {
        let password = self.users.get(username)?;
        Key::long_term(username, realm, password, alg).ok()
    }

    fn username_for_userhash(&self, hash: &[u8; 32], realm: &str) -> Option<String> {
        self.users
            .keys()
            .find(|u| userhash(u, realm).is_ok_and(|h| &h == hash))
            .cloned()
    }

    fn supports_userhash(&self) -> bool {
        true
    }
}

/// Ephemeral credentials from a secret shared with a web service, as coturn's
/// `use-auth-secret` (draft-uberti-behave-turn-rest): the username is
/// `expiry` or `expiry:user` with `expiry` in Unix seconds, and the password
/// is `base64(HMAC-SHA1(secret, username))`. A username whose expiry has
/// passed, or that does not start with a number, is refused.
#[derive(Clone)]
pub struct RestSecret {
    secret: Vec<u8>,
}

impl std::fmt::Debug for RestSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RestSecret(..)")
    }
}

impl RestSecret {
    /// A store over the shared secret.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        RestSecret {
            secret: secret.into(),
        }
    }

    /// The password the web service hands out for `username`.
    pub fn password(&self, username: &str) -> String {
        let mut m = <Hmac<Sha1> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        m.update(username.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    }

    /// A username valid until `expiry`, for `user` (which may be empty).
    pub fn username(expiry: SystemTime, user: &str) -> String {
        let secs = expiry
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        if user.is_empty() {
            secs.to_string()
        } else {
            format!("{secs}:{user}")
        }
    }

    /// The expiry a username carries, if it is well formed.
    pub fn expiry_of(username: &str) -> Option<SystemTime> {
        let stamp = username.split(':').next()?;
        if stamp.is_empty() || !stamp.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let secs: u64 = stamp.parse().ok()?;
        UNIX_EPOCH.checked_add(Duration::from_secs(secs))
    }
}

impl CredentialStore for RestSecret {
    fn key(
        &self,
        username: &str,
        realm: &str,
        alg: PasswordAlgorithm,
        wall_now: SystemTime,
    ) -> Option<Key> {
        let expiry = RestSecret::expiry_of(username)?;
        if expiry < wall_now {
            return None;
        }
        Key::long_term(username, realm, &self.password(username), alg).ok()
    }

    /// Every REST user is: anyone the web service serves can get more.
    fn is_ephemeral(&self, _: &str) -> bool {
        true
    }
}

// ---------------------------------------------------------------- nonces

/// The nonce cookie of RFC 8489 §9.2: "obMatJos2" then four base64
/// characters of 24 security-feature bits.
pub(crate) const NONCE_COOKIE: &str = "obMatJos2";
/// Feature bit 0 (the most significant): password algorithms.
pub(crate) const FEATURE_PASSWORD_ALGORITHMS: u8 = 0x80;
/// Feature bit 1: username anonymity (USERHASH).
pub(crate) const FEATURE_USERNAME_ANONYMITY: u8 = 0x40;

/// The security features a nonce announces, if it starts with the cookie.
pub(crate) fn nonce_features(nonce: &str) -> Option<u8> {
    let rest = nonce.strip_prefix(NONCE_COOKIE)?;
    let b64 = rest.get(..4)?;
    let mut out = [0u8; 3];
    let n = base64::engine::general_purpose::STANDARD
        .decode_slice(b64, &mut out)
        .ok()?;
    (n == 3).then_some(out[0])
}

/// Stateless nonces: a timestamp and an HMAC over it and the client's
/// address, so a nonce cannot be used from another address nor after it
/// expires, and the server keeps no table.
#[derive(Clone)]
pub(crate) struct NonceMinter {
    key: [u8; 32],
    features: u8,
    lifetime: Duration,
}

impl NonceMinter {
    pub(crate) fn new(key: [u8; 32], features: u8, lifetime: Duration) -> Self {
        NonceMinter {
            key,
            features,
            lifetime,
        }
    }

    fn mac(&self, stamp: u32, client: SocketAddr, transport: Transport) -> [u8; 8] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        m.update(&stamp.to_be_bytes());
        match client.ip() {
            std::net::IpAddr::V4(ip) => m.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => m.update(&ip.octets()),
        }
        m.update(&client.port().to_be_bytes());
        let t: u8 = match transport {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
            _ => 3,
        };
        m.update(&[t]);
        let full = m.finalize().into_bytes();
        let mut out = [0u8; 8];
        out.copy_from_slice(&full[..8]);
        out
    }

    /// A fresh nonce for `client`; `secs` is the server's monotonic second count.
    pub(crate) fn mint(&self, secs: u64, client: SocketAddr, transport: Transport) -> String {
        let stamp = secs as u32;
        let mut raw = [0u8; 12];
        raw[..4].copy_from_slice(&stamp.to_be_bytes());
        raw[4..].copy_from_slice(&self.mac(stamp, client, transport));
        let e = &base64::engine::general_purpose::STANDARD;
        let u = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut s = String::with_capacity(29);
        s.push_str(NONCE_COOKIE);
        s.push_str(&e.encode([self.features, 0, 0]));
        s.push_str(&u.encode(raw));
        s
    }

    /// Whether `nonce` was minted by us for `client` and is still fresh.
    pub(crate) fn is_valid(
        &self,
        nonce: &str,
        secs: u64,
        client: SocketAddr,
        transport: Transport,
    ) -> bool {
        self.stamp_if_minted(nonce, client, transport)
            .is_some_and(|stamp| {
                u64::from((secs as u32).wrapping_sub(stamp)) < self.lifetime.as_secs()
            })
    }

    /// Whether `nonce` was minted by us for `client`, fresh or stale.
    pub(crate) fn minted_for(&self, nonce: &str, client: SocketAddr, transport: Transport) -> bool {
        self.stamp_if_minted(nonce, client, transport).is_some()
    }

    /// The time stamp of `nonce` if we minted it for `client`.
    fn stamp_if_minted(
        &self,
        nonce: &str,
        client: SocketAddr,
        transport: Transport,
    ) -> Option<u32> {
        let rest = nonce.strip_prefix(NONCE_COOKIE).and_then(|r| r.get(4..))?;
        let mut raw = [0u8; 12];
        let ok = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode_slice(rest, &mut raw)
            .is_ok_and(|n| n == 12);
        if !ok || nonce_features(nonce) != Some(self.features) {
            return None;
        }
        let stamp = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let mac_ok: bool = raw[4..].ct_eq(&self.mac(stamp, client, transport)).into();
        mac_ok.then_some(stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_matches_an_independent_computation() {
        // python3 -c "import hmac,hashlib,base64;
        //   print(base64.b64encode(hmac.new(b'north', b'1700000000:alice', hashlib.sha1).digest()).decode())"
        let s = RestSecret::new("north");
        assert_eq!(
            s.password("1700000000:alice"),
            "Cd/49soE35ICqcJF/bCTn8Z4OyE="
        );
        assert_eq!(
            RestSecret::username(UNIX_EPOCH + Duration::from_secs(1_700_000_000), "alice"),
            "1700000000:alice"
        );
    }

    #[test]
    fn rest_usernames_expire_and_must_be_stamped() {
        let s = RestSecret::new("north");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let alg = PasswordAlgorithm::Sha256;
        assert!(s.key("1700000000:alice", "r", alg, t).is_some());
        assert!(s
            .key("1700000000:alice", "r", alg, t + Duration::from_secs(1))
            .is_none());
        assert!(s.key("alice", "r", alg, t).is_none());
        assert!(s.key(":alice", "r", alg, t).is_none());
        assert!(s.key("17e3:alice", "r", alg, t).is_none());
        assert!(s.key("1800000000", "r", alg, t).is_some());
    }

    #[test]
    fn static_users_and_userhash() {
        let u = StaticUsers::new()
            .with_user("alice", "pw")
            .with_user("bob", "pw2");
        let t = UNIX_EPOCH;
        assert_eq!(
            u.key("alice", "r", PasswordAlgorithm::Md5, t),
            Key::long_term("alice", "r", "pw", PasswordAlgorithm::Md5).ok()
        );
        assert!(u.key("carol", "r", PasswordAlgorithm::Md5, t).is_none());
        let h = userhash("bob", "r").unwrap();
        assert_eq!(u.username_for_userhash(&h, "r").as_deref(), Some("bob"));
        assert_eq!(u.username_for_userhash(&h, "other"), None);
    }

    #[test]
    fn nonces_carry_features_expire_and_bind_to_the_client() {
        let m = NonceMinter::new([7; 32], 0xC0, Duration::from_secs(600));
        let a: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:4001".parse().unwrap();
        let n = m.mint(100, a, Transport::Udp);
        assert!(n.starts_with("obMatJos2wAAA"), "{n}");
        assert_eq!(nonce_features(&n), Some(0xC0));
        assert!(m.is_valid(&n, 100, a, Transport::Udp));
        assert!(m.is_valid(&n, 699, a, Transport::Udp));
        assert!(!m.is_valid(&n, 700, a, Transport::Udp));
        assert!(!m.is_valid(&n, 100, b, Transport::Udp));
        assert!(!m.is_valid(&n, 100, a, Transport::Tcp));
        assert!(!m.is_valid("obMatJos2wAAAgarbage", 100, a, Transport::Udp));
        assert!(!m.is_valid("", 100, a, Transport::Udp));
        let other = NonceMinter::new([8; 32], 0xC0, Duration::from_secs(600));
        assert!(!other.is_valid(&n, 100, a, Transport::Udp));
    }
}
