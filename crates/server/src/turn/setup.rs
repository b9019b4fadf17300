//! Checking the `[turn]` section and starting the TURN task.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use p2p_turn::{AuthLimit, Bandwidth, Cidr, PeerPolicy, ServerConfig, StaticUsers};
use tokio::net::UdpSocket;

use crate::config::{Config, ConfigError, TurnConfig};

use super::relayed::bind_std;
use super::{Creds, SecretRing, TurnService};

/// What `Server::bind` prepares and `Server::run` starts.
pub(crate) struct TurnSetup {
    config: ServerConfig,
    users: BTreeMap<String, String>,
    secret: Option<String>,
    ips: [Option<(IpAddr, IpAddr)>; 2],
    summary: String,
}

impl TurnSetup {
    /// Add addresses the daemon serves on that were only known once bound
    /// (TCP/TLS, metrics and signaling listeners configured with port 0):
    /// never relayed to.
    pub(crate) fn add_service_addresses(&mut self, addrs: impl IntoIterator<Item = SocketAddr>) {
        let service = &mut self.config.service_addresses;
        service.extend(addrs);
        service.sort();
        service.dedup();
    }

    /// How long a TCP/TLS connection that carries TURN may stay silent: an
    /// allocation's longest lifetime plus a minute (the client refreshes
    /// within it).
    pub(crate) fn stream_idle(&self) -> Duration {
        self.config.max_lifetime + Duration::from_secs(60)
    }

    /// A line for the startup banner.
    pub(crate) fn summary(&self) -> &str {
        &self.summary
    }
}

/// Whether the quotas and limits of `[turn]` can take effect.
pub(crate) fn check_limits(t: &TurnConfig) -> Result<(), ConfigError> {
    if t.reserved_percent > 90 {
        return Err(ConfigError::Invalid(
            "turn.reserved_percent must be at most 90, or the reserve would leave (almost) no allocation for anyone",
        ));
    }
    if t.reserved_percent > 0 && t.reserve_below == 0 {
        return Err(ConfigError::Invalid(
            "turn.reserve_below must be at least 1 while turn.reserved_percent is above 0 (set reserved_percent = 0 to keep no reserve)",
        ));
    }
    if t.rest_share_percent == 0 || t.rest_share_percent > 100 {
        return Err(ConfigError::Invalid(
            "turn.rest_share_percent must be 1 to 100 (100: REST users may hold every allocation)",
        ));
    }
    if t.auth_failures_per_minute > 0 && t.auth_failure_burst == 0 {
        return Err(ConfigError::Invalid(
            "turn.auth_failure_burst must be at least 1 (set auth_failures_per_minute = 0 for no limit)",
        ));
    }
    Ok(())
}

pub(super) fn invalid(msg: &'static str) -> crate::ServerError {
    crate::ServerError::Config(ConfigError::Invalid(msg))
}

/// Check the `[turn]` section against the bound addresses; `None` when TURN
/// is off.
pub(crate) fn prepare(
    config: &Config,
    listen: &[SocketAddr],
) -> Result<Option<TurnSetup>, crate::ServerError> {
    let t: &TurnConfig = &config.turn;
    if !t.enabled() {
        return Ok(None);
    }
    let realm = t.realm.clone().unwrap_or_default();
    let specific = |v4: bool| {
        config
            .stun
            .listen
            .iter()
            .chain(listen)
            .map(SocketAddr::ip)
            .find(|ip| ip.is_ipv4() == v4 && !ip.is_unspecified())
    };
    let relay_for = |v4: bool| {
        t.relay_ip
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4() == v4)
            .or_else(|| specific(v4))
    };
    let mut ips: [Option<(IpAddr, IpAddr)>; 2] = [None, None];
    for (k, v4) in [(0, true), (1, false)] {
        if let Some(bind) = relay_for(v4) {
            let adv = t
                .external_ip
                .iter()
                .copied()
                .find(|ip| ip.is_ipv4() == v4)
                .unwrap_or(bind);
            ips[k] = Some((bind, adv));
        }
    }
    if ips.iter().all(Option::is_none) {
        return Err(invalid(
            "TURN needs a relay IP: give --relay-ip (turn.relay_ip) when listening on 0.0.0.0 or ::",
        ));
    }
    // The relay IP must be bindable: find out now rather than on the first Allocate.
    for (bind, _) in ips.iter().flatten() {
        if let Err(source) = bind_std(SocketAddr::new(*bind, 0)) {
            return Err(crate::ServerError::Bind {
                transport: "relay",
                addr: SocketAddr::new(*bind, 0),
                source,
            });
        }
    }
    let policy = peer_policy(t)?;
    let mut own: Vec<IpAddr> = config
        .stun
        .listen
        .iter()
        .chain(listen)
        .map(SocketAddr::ip)
        .filter(|ip| !ip.is_unspecified())
        .collect();
    for (b, a) in ips.iter().flatten() {
        own.push(*b);
        own.push(*a);
    }
    own.sort();
    own.dedup();
    let mut sc = ServerConfig::new(realm.clone());
    sc.software = Some(config.stun.software.clone()).filter(|s| !s.is_empty());
    sc.nonce_lifetime = Duration::from_secs(t.nonce_lifetime_secs);
    sc.default_lifetime = Duration::from_secs(t.default_lifetime_secs);
    sc.max_lifetime = Duration::from_secs(t.max_lifetime_secs);
    sc.user_quota = (t.user_quota > 0).then_some(t.user_quota);
    sc.total_quota = (t.total_quota > 0).then_some(t.total_quota);
    sc.reserved_percent = t.reserved_percent;
    sc.reserve_below = t.reserve_below;
    sc.ipv6_prefix = config.stun.ipv6_prefix;
    // REST users are held to their share only when there are static users
    // to keep room for.
    sc.ephemeral_share_percent = if !t.users.is_empty() && t.auth_secret.is_some() {
        t.rest_share_percent
    } else {
        100
    };
    sc.auth_failure_limit = (t.auth_failures_per_minute > 0)
        .then(|| AuthLimit::new(t.auth_failure_burst, t.auth_failures_per_minute));
    sc.max_tcp_connections = t.max_tcp_connections;
    sc.bandwidth = (t.max_bps > 0).then(|| Bandwidth::new(t.max_bps, t.max_bps.max(4096)));
    sc.relayed_ports = t.min_port..=t.max_port;
    sc.peer_policy = policy;
    sc.own_addresses = own;
    // Never relayed to, whatever the policy (a port of 0 in the
    // configuration is only known once bound: the listening UDP sockets are
    // in `listen`; the request's own listening address is always refused).
    let mut service: Vec<SocketAddr> = config
        .stun
        .listen
        .iter()
        .chain(listen)
        .chain(config.stun.alt_listen.iter())
        .copied()
        .chain(config.tls_listen())
        .chain(config.metrics.listen)
        .chain(config.signaling.listen.iter().copied())
        .filter(|a| a.port() != 0)
        .collect();
    service.sort();
    service.dedup();
    sc.service_addresses = service;
    sc.answer_binding = false;
    sc.export_routes = t.relay_fast_path;
    let relays: Vec<String> = ips
        .iter()
        .flatten()
        .map(|(b, a)| {
            if a == b {
                b.to_string()
            } else {
                format!("{b} (advertised as {a})")
            }
        })
        .collect();
    let summary = format!(
        "TURN enabled: realm \"{realm}\", {} static user(s){}, relays on {} ports {}-{}, peers: {}{}",
        t.users.len(),
        if t.auth_secret.is_some() {
            ", REST API secret"
        } else {
            ""
        },
        relays.join(" and "),
        t.min_port,
        t.max_port,
        if t.allow_peer.is_empty() {
            "public addresses only".to_owned()
        } else {
            format!("public addresses and {}", t.allow_peer.join(", "))
        },
        if t.deny_peer.is_empty() {
            String::new()
        } else {
            format!(" except {}", t.deny_peer.join(", "))
        },
    );
    Ok(Some(TurnSetup {
        config: sc,
        users: t.users.clone(),
        secret: t.auth_secret.clone(),
        ips,
        summary,
    }))
}

/// The peer rules of `[turn]`.
fn peer_policy(t: &TurnConfig) -> Result<PeerPolicy, crate::ServerError> {
    let mut policy = PeerPolicy::new();
    for c in &t.allow_peer {
        let c: Cidr = c
            .parse()
            .map_err(|_| invalid("turn.allow_peer: not a CIDR block"))?;
        policy = policy.allow(c);
    }
    for c in &t.deny_peer {
        let c: Cidr = c
            .parse()
            .map_err(|_| invalid("turn.deny_peer: not a CIDR block"))?;
        policy = policy.deny(c);
    }
    Ok(policy)
}

/// The static users of `[turn]` and the REST secrets `rest` as a
/// credential store.
fn creds(users: &BTreeMap<String, String>, rest: SecretRing) -> Creds {
    let mut store = StaticUsers::new();
    for (u, p) in users {
        store.insert(u.clone(), p.clone());
    }
    Creds {
        users: store,
        has_users: !users.is_empty(),
        rest,
    }
}

/// What a reload (SIGHUP) hands the running TURN task: the credentials
/// and the peer rules of the new `[turn]` section. `ring`: the cluster's
/// shared REST secrets on a node of a cluster (they live in Redis and stay
/// as they are), else the new `turn.auth_secret`.
pub(super) fn reload_parts(
    t: &TurnConfig,
    ring: Option<SecretRing>,
) -> Result<(super::task::Credentials, PeerPolicy), crate::ServerError> {
    let rest = ring.unwrap_or_else(|| SecretRing::new(t.auth_secret.clone()));
    Ok((Box::new(creds(&t.users, rest)), peer_policy(t)?))
}

impl TurnSetup {
    /// Start the daemon's TURN service; `listening` are the UDP sockets to
    /// answer from (the daemon's workers read them).
    /// `ring`: the cluster's shared REST secrets, if this node is in one
    /// (else this daemon's `turn.auth_secret`).
    pub(crate) fn start(
        self,
        listening: HashMap<SocketAddr, Arc<UdpSocket>>,
        ring: Option<SecretRing>,
    ) -> TurnService {
        let rest = ring.unwrap_or_else(|| SecretRing::new(self.secret.clone()));
        let creds = creds(&self.users, rest);
        TurnService::for_daemon(self.config, Box::new(creds), self.ips, listening)
    }
}
