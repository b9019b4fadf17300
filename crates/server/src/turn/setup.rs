//! Checking the `[turn]` section and starting the TURN task.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use p2p_turn::{Bandwidth, Cidr, PeerPolicy, ServerConfig, StaticUsers};
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
                transport: "udp",
                addr: SocketAddr::new(*bind, 0),
                source,
            });
        }
    }
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
        .chain(config.signaling.listen)
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
        let mut users = StaticUsers::new();
        for (u, p) in &self.users {
            users.insert(u.clone(), p.clone());
        }
        let creds = Creds {
            users,
            has_users: !self.users.is_empty(),
            rest: ring.unwrap_or_else(|| SecretRing::new(self.secret.clone())),
        };
        TurnService::for_daemon(self.config, Box::new(creds), self.ips, listening)
    }
}
