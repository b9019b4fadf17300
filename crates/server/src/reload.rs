//! Reloading a running daemon (`p2p serve` on SIGHUP): the certificates,
//! the TURN users and REST secret, the peer rules and the ICE servers the
//! signaling server hands out change in place; allocations, TCP/TLS
//! connections and signaling rooms stay. Every other key needs a restart:
//! a reload names the ones that changed and leaves them as they run.

use std::sync::Arc;

use crate::config::Config;
use crate::server::{LocalAddrs, ServerError};
use crate::signaling::{self, Reloadable};
use crate::tls::{self, CertFiles, CertSlot};
use crate::turn::{SecretRing, TurnHandle};

/// Reloads a running [`Server`](crate::Server); get it with
/// [`Server::reloader`](crate::Server::reloader) before
/// [`Server::run`](crate::Server::run). Cheap to clone.
///
/// ```no_run
/// # async fn f(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
/// let config = p2p_server::Config::from_file(path)?;
/// let server = p2p_server::Server::bind(&config).await?;
/// let reloader = server.reloader();
/// tokio::spawn(server.run(std::future::pending()));
/// // Later, on SIGHUP:
/// let done = reloader.reload(&p2p_server::Config::from_file(path)?).await?;
/// println!("{done}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

struct Inner {
    /// What runs: the start's configuration with every reload applied.
    running: tokio::sync::Mutex<Config>,
    addrs: LocalAddrs,
    /// STUN/TURN over TLS: the certificate slot.
    tls: Option<Arc<CertSlot>>,
    signaling: Option<Reloadable>,
    /// The TURN task, once [`Server::run`](crate::Server::run) started it.
    /// With the cluster's REST secrets on a node of a cluster.
    turn: std::sync::Mutex<Option<(TurnHandle, Option<SecretRing>)>>,
}

/// What a reload did.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// What was read again and put in place.
    pub applied: Vec<&'static str>,
    /// Keys whose new values need a restart to take effect; they keep
    /// running with the old ones.
    pub needs_restart: Vec<String>,
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.applied.is_empty() {
            f.write_str("nothing to reload")?;
        } else {
            write!(f, "reloaded {}", self.applied.join(", "))?;
        }
        if !self.needs_restart.is_empty() {
            write!(
                f,
                "; changed but needing a restart (kept as they run): {}",
                self.needs_restart.join(", ")
            )?;
        }
        Ok(())
    }
}

impl Reloader {
    pub(crate) fn new(
        config: &Config,
        addrs: LocalAddrs,
        tls: Option<Arc<CertSlot>>,
        signaling: Option<Reloadable>,
    ) -> Reloader {
        Reloader {
            inner: Arc::new(Inner {
                running: tokio::sync::Mutex::new(config.clone()),
                addrs,
                tls,
                signaling,
                turn: std::sync::Mutex::new(None),
            }),
        }
    }

    pub(crate) fn set_turn(&self, handle: TurnHandle, ring: Option<SecretRing>) {
        if let Ok(mut t) = self.inner.turn.lock() {
            *t = Some((handle, ring));
        }
    }

    fn turn(&self) -> Option<(TurnHandle, Option<SecretRing>)> {
        self.inner.turn.lock().ok().and_then(|t| t.clone())
    }

    /// Put `config` in place where it can be without a restart: the TLS
    /// certificates (read again from their files, even when the paths are
    /// the same), the TURN users, REST secret and peer rules, and the ICE
    /// servers handed out by signaling. Nothing running is dropped.
    ///
    /// An invalid configuration, or a certificate that does not load,
    /// changes nothing and is an error. Keys that changed but need a
    /// restart are listed in [`Reloaded::needs_restart`].
    pub async fn reload(&self, config: &Config) -> Result<Reloaded, ServerError> {
        config.validate()?;
        let mut running = self.inner.running.lock().await;
        let mut done = Reloaded::default();
        // What runs afterwards: the old configuration with the reloadable
        // keys taken from the new one.
        let mut next = running.clone();

        // Everything that can fail first: nothing changes if one fails.
        let stun_cert = match (&self.inner.tls, &config.tls.cert, &config.tls.key) {
            (Some(slot), Some(cert), Some(key)) => Some((slot, tls::load(cert, key)?)),
            _ => None,
        };
        let signaling_cert = match self.inner.signaling.as_ref().and_then(|s| s.cert.as_ref()) {
            Some((slot, _)) => match signaling::cert_files(config) {
                Some(CertFiles { cert, key }) => Some((slot, tls::load(&cert, &key)?, cert, key)),
                None => None,
            },
            None => None,
        };
        let turn = self.turn().filter(|_| config.turn.enabled());

        if let Some((slot, key)) = stun_cert {
            slot.swap(key);
            next.tls.cert.clone_from(&config.tls.cert);
            next.tls.key.clone_from(&config.tls.key);
            done.applied.push("the TLS certificate");
        }
        if let Some((slot, key, cert, key_path)) = signaling_cert {
            slot.swap(key);
            if next.signaling.cert.is_some() {
                next.signaling.cert = Some(cert);
                next.signaling.key = Some(key_path);
            }
            done.applied.push("the signaling certificate");
        }
        if let Some((t, ring)) = turn {
            t.reload(&config.turn, ring).await?;
            next.turn.users.clone_from(&config.turn.users);
            next.turn.auth_secret.clone_from(&config.turn.auth_secret);
            next.turn.allow_peer.clone_from(&config.turn.allow_peer);
            next.turn.deny_peer.clone_from(&config.turn.deny_peer);
            done.applied.push("the TURN users, secret and peer rules");
        }
        if let Some(s) = &self.inner.signaling {
            let n = &mut next.signaling;
            n.ice_servers.clone_from(&config.signaling.ice_servers);
            n.public_host.clone_from(&config.signaling.public_host);
            n.turn_user.clone_from(&config.signaling.turn_user);
            n.credential_ttl_secs = config.signaling.credential_ttl_secs;
            // Made from the keys that run (the TURN secret or user among them).
            s.ice.swap(signaling::ice_servers(
                &next,
                &self.inner.addrs,
                s.fleet.clone(),
            ));
            done.applied.push("the ICE servers handed out");
        }
        done.needs_restart = changed_keys(&next, config);
        *running = next;
        Ok(done)
    }
}

/// The `section.key` names whose values differ between `a` and `b`.
fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let (Ok(a), Ok(b)) = (toml::Value::try_from(a), toml::Value::try_from(b)) else {
        return Vec::new();
    };
    let empty = toml::map::Map::new();
    let mut out = Vec::new();
    let (Some(a), Some(b)) = (a.as_table(), b.as_table()) else {
        return out;
    };
    let mut sections: Vec<&String> = a.keys().chain(b.keys()).collect();
    sections.sort();
    sections.dedup();
    for section in sections {
        let sa = a.get(section).and_then(|v| v.as_table()).unwrap_or(&empty);
        let sb = b.get(section).and_then(|v| v.as_table()).unwrap_or(&empty);
        let mut keys: Vec<&String> = sa.keys().chain(sb.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            if sa.get(k) != sb.get(k) {
                out.push(format!("{section}.{k}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_are_named_by_section_and_key() {
        let a = Config::default();
        let mut b = a.clone();
        b.stun.max_padding = 7;
        b.metrics.listen = Some("127.0.0.1:9100".parse().unwrap());
        assert_eq!(
            changed_keys(&a, &b),
            ["metrics.listen".to_owned(), "stun.max_padding".to_owned()]
        );
        assert!(changed_keys(&a, &a).is_empty());
    }
}
