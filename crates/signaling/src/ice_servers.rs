//! Where the `iceServers` list of the welcome comes from.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::msg::IceServer;

/// Supplies the STUN/TURN servers handed to each peer in
/// [`ServerMsg::Welcome`](crate::ServerMsg::Welcome).
///
/// Synchronous on purpose: the list is pure computation (static, or REST
/// credentials from a shared secret). `now` is wall-clock time supplied by the
/// caller, so implementations stay deterministic under test.
pub trait IceServerProvider: Send + Sync {
    /// The servers for the peer with id `peer`, at wall-clock time `now`.
    fn ice_servers(&self, peer: &str, now: SystemTime) -> Vec<IceServer>;
}

impl std::fmt::Debug for dyn IceServerProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<dyn IceServerProvider>")
    }
}

/// The same list for everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticIceServers(pub Vec<IceServer>);

impl IceServerProvider for StaticIceServers {
    fn ice_servers(&self, _peer: &str, _now: SystemTime) -> Vec<IceServer> {
        self.0.clone()
    }
}

/// Short-lived TURN credentials in the TURN REST API scheme (coturn's
/// `use-auth-secret` / `static-auth-secret`):
///
/// - username = `"<expiry unix seconds>:<user_prefix><peer id>"`,
///   expiry = `now + ttl`;
/// - credential = base64(HMAC-SHA1(secret, username)).
///
/// A TURN server sharing `secret` accepts them until the expiry.
#[derive(Clone, PartialEq, Eq)]
pub struct RestCredentialIceServers {
    /// The `turn:`/`turns:` (and optionally `stun:`) URLs, handed out as one `RTCIceServer`.
    pub urls: Vec<String>,
    /// The secret shared with the TURN server.
    pub secret: String,
    /// How long the credentials stay valid.
    pub ttl: Duration,
    /// Put before the peer id in the user part of the username.
    pub user_prefix: String,
}

impl std::fmt::Debug for RestCredentialIceServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestCredentialIceServers")
            .field("urls", &self.urls)
            .field("secret", &"<redacted>")
            .field("ttl", &self.ttl)
            .field("user_prefix", &self.user_prefix)
            .finish()
    }
}

impl IceServerProvider for RestCredentialIceServers {
    fn ice_servers(&self, peer: &str, now: SystemTime) -> Vec<IceServer> {
        let expiry = now
            .checked_add(self.ttl)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let username = format!("{expiry}:{}{peer}", self.user_prefix);
        let credential = rest_credential(self.secret.as_bytes(), &username);
        vec![IceServer::with_credentials(
            self.urls.iter().cloned(),
            username,
            credential,
        )]
    }
}

/// The TURN REST API password for `username`: base64(HMAC-SHA1(secret, username)).
pub fn rest_credential(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = match Hmac::<Sha1>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected value computed independently:
    /// `python3 -c "import hmac,hashlib,base64;u=b'1700003600:demo-p1';print(base64.b64encode(hmac.new(b'north-secret',u,hashlib.sha1).digest()).decode())"`
    #[test]
    fn rest_credentials_match_coturn_scheme() {
        let provider = RestCredentialIceServers {
            urls: vec![
                "turn:turn.example.org:3478?transport=udp".into(),
                "turn:turn.example.org:3478?transport=tcp".into(),
            ],
            secret: "north-secret".into(),
            ttl: Duration::from_secs(3600),
            user_prefix: "demo-".into(),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let servers = provider.ice_servers("p1", now);
        assert_eq!(
            servers,
            vec![IceServer::with_credentials(
                [
                    "turn:turn.example.org:3478?transport=udp",
                    "turn:turn.example.org:3478?transport=tcp"
                ],
                "1700003600:demo-p1",
                "MueVC4ao7ui/0pcsfAn+aYP07Ww=",
            )]
        );
    }

    #[test]
    fn rest_credential_changes_with_secret_and_user() {
        let a = rest_credential(b"north-secret", "1700003600:demo-p1");
        assert_eq!(a, "MueVC4ao7ui/0pcsfAn+aYP07Ww=");
        assert_ne!(a, rest_credential(b"south-secret", "1700003600:demo-p1"));
        assert_ne!(a, rest_credential(b"north-secret", "1700003601:demo-p1"));
    }

    #[test]
    fn debug_hides_the_secret() {
        let provider = RestCredentialIceServers {
            urls: vec![],
            secret: "hunter2".into(),
            ttl: Duration::from_secs(60),
            user_prefix: String::new(),
        };
        assert!(!format!("{provider:?}").contains("hunter2"));
    }

    #[test]
    fn static_list_is_handed_out_unchanged() {
        let list = vec![IceServer::new(["stun:stun.example.org:3478"])];
        let provider = StaticIceServers(list.clone());
        assert_eq!(provider.ice_servers("p9", UNIX_EPOCH), list);
    }
}
