//! TURN as a fleet: each node publishes its load to Redis (allocations,
//! relayed bit rate, a health bit, where it is reached) with an expiry;
//! every node reads everyone's, so that the ICE servers it hands out name
//! the healthy, least-loaded TURN nodes and an Allocate beyond its quota
//! is redirected (300 Try Alternate) to a node with room. The REST
//! secrets are shared the same way ([`SecretRing`]): a list in Redis, the
//! first signs, every one verifies.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use p2p_signaling::{rest_credential, IceServer, IceServerProvider};

use crate::config::Config;
use crate::turn::{SecretRing, TurnHandle};

/// One node's published load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeLoad {
    pub(crate) node: String,
    /// Where clients reach its TURN server (UDP, and TCP on the same
    /// ports).
    pub(crate) turn: Vec<SocketAddr>,
    /// Where clients reach it over TLS (none when it serves no TLS).
    pub(crate) tls: Vec<SocketAddr>,
    pub(crate) allocations: u64,
    /// Its total quota (0: none).
    pub(crate) quota: u32,
    /// Relayed bits per second, both directions.
    pub(crate) bps: u64,
    pub(crate) healthy: bool,
}

impl NodeLoad {
    /// `a=3 q=100 bps=1234 ok=1 turn=192.0.2.1:3478,… tls=192.0.2.1:5349,…`
    /// (`tls=` only when it serves TLS; an older node ignores the key).
    pub(crate) fn encode(&self) -> String {
        let list = |v: &[SocketAddr]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut text = format!(
            "a={} q={} bps={} ok={} turn={}",
            self.allocations,
            self.quota,
            self.bps,
            u8::from(self.healthy),
            list(&self.turn)
        );
        if !self.tls.is_empty() {
            text.push_str(" tls=");
            text.push_str(&list(&self.tls));
        }
        text
    }

    pub(crate) fn decode(node: &str, text: &str) -> Option<NodeLoad> {
        let mut load = NodeLoad {
            node: node.to_owned(),
            turn: Vec::new(),
            tls: Vec::new(),
            allocations: 0,
            quota: 0,
            bps: 0,
            healthy: false,
        };
        let addrs = |v: &str| -> Option<Vec<SocketAddr>> {
            v.split(',')
                .filter(|a| !a.is_empty())
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()
        };
        for field in text.split_whitespace() {
            let (k, v) = field.split_once('=')?;
            match k {
                "a" => load.allocations = v.parse().ok()?,
                "q" => load.quota = v.parse().ok()?,
                "bps" => load.bps = v.parse().ok()?,
                "ok" => load.healthy = v == "1",
                "turn" => load.turn = addrs(v)?,
                "tls" => load.tls = addrs(v)?,
                _ => {}
            }
        }
        Some(load)
    }

    /// Healthy and below its quota.
    pub(crate) fn has_room(&self) -> bool {
        self.healthy
            && !self.turn.is_empty()
            && (self.quota == 0 || self.allocations < u64::from(self.quota))
    }

    /// How full it is, for ordering (a node without quota counts its
    /// allocations against 10,000).
    fn fill(&self) -> f64 {
        let cap = if self.quota == 0 {
            10_000.0
        } else {
            f64::from(self.quota)
        };
        self.allocations as f64 / cap
    }
}

/// This node's view of the fleet; shared by the store task (which
/// publishes and reads the loads), the TURN side (which counts) and the
/// ICE server lists handed out.
pub(crate) struct Fleet {
    pub(crate) node: String,
    /// Where others reach this node's TURN server.
    public: Vec<SocketAddr>,
    /// Where others reach it over TLS.
    public_tls: Vec<SocketAddr>,
    quota: u32,
    turn_nodes: usize,
    /// The REST secrets accepted (shared by the cluster).
    pub(crate) ring: SecretRing,
    /// This node's `turn.auth_secret`: seeds the cluster's list when empty.
    pub(crate) seed_secret: Option<String>,
    local: Mutex<(u64, u64, bool)>,
    nodes: RwLock<Vec<NodeLoad>>,
    /// Allocates this node redirected (300), for metrics.
    pub(crate) redirects: AtomicU64,
    /// Alternate addresses the TURN server holds now, for metrics.
    pub(crate) alternates_set: AtomicU64,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("node", &self.node)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// A fleet view for a node of a cluster that serves TURN; `udp` are
    /// its bound STUN/TURN UDP addresses (the default public address),
    /// `tls` its bound TLS addresses (published with the public IP when
    /// bound on an unspecified one).
    pub(crate) fn new(
        config: &Config,
        node: String,
        udp: &[SocketAddr],
        tls: &[SocketAddr],
    ) -> Option<Arc<Fleet>> {
        let c = &config.cluster;
        if !c.enabled() || !config.turn.enabled() {
            return None;
        }
        let mut public: Vec<SocketAddr> = c
            .public_turn
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        if public.is_empty() {
            public.extend(udp.first().filter(|a| !a.ip().is_unspecified()));
        }
        let public_tls = tls
            .iter()
            .filter_map(|a| {
                if !a.ip().is_unspecified() {
                    return Some(*a);
                }
                let ip = public.iter().find(|p| p.is_ipv4() == a.is_ipv4())?.ip();
                Some(SocketAddr::new(ip, a.port()))
            })
            .collect();
        Some(Arc::new(Fleet {
            node,
            public,
            public_tls,
            quota: config.turn.total_quota,
            turn_nodes: c.turn_nodes.max(1),
            ring: SecretRing::new(config.turn.auth_secret.clone()),
            seed_secret: config.turn.auth_secret.clone(),
            local: Mutex::new((0, 0, true)),
            nodes: RwLock::new(Vec::new()),
            redirects: AtomicU64::new(0),
            alternates_set: AtomicU64::new(0),
        }))
    }

    /// What this node publishes.
    pub(crate) fn local_load(&self) -> NodeLoad {
        let (allocations, bps, healthy) = *self.local.lock().unwrap_or_else(|e| e.into_inner());
        NodeLoad {
            node: self.node.clone(),
            turn: self.public.clone(),
            tls: self.public_tls.clone(),
            allocations,
            quota: self.quota,
            bps,
            healthy,
        }
    }

    fn set_local(&self, allocations: u64, bps: u64, healthy: bool) {
        *self.local.lock().unwrap_or_else(|e| e.into_inner()) = (allocations, bps, healthy);
    }

    /// The loads read from Redis (every live node's, this one's too).
    pub(crate) fn set_nodes(&self, nodes: Vec<NodeLoad>) {
        *self.nodes.write().unwrap_or_else(|e| e.into_inner()) = nodes;
    }

    /// Live nodes known.
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Other nodes with room, least loaded first.
    fn others_with_room(&self) -> Vec<NodeLoad> {
        let mut v: Vec<NodeLoad> = self
            .nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|n| n.node != self.node && n.has_room())
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            a.fill()
                .total_cmp(&b.fill())
                .then(a.bps.cmp(&b.bps))
                .then(a.node.cmp(&b.node))
        });
        v
    }

    /// Where an Allocate beyond this node's quota goes: the other nodes
    /// with room, least loaded first.
    pub(crate) fn alternates(&self) -> Vec<SocketAddr> {
        self.others_with_room()
            .into_iter()
            .flat_map(|n| n.turn)
            .collect()
    }

    /// The same for an Allocate over TLS: those nodes' TLS addresses.
    pub(crate) fn tls_alternates(&self) -> Vec<SocketAddr> {
        self.others_with_room()
            .into_iter()
            .flat_map(|n| n.tls)
            .collect()
    }

    /// The TURN nodes to hand out: this one first when it has room, then
    /// the least loaded others, `turn_nodes` in all (this one alone when
    /// nobody has room). `None` stands for this node.
    pub(crate) fn chosen(&self) -> Vec<Option<NodeLoad>> {
        let mut out = Vec::new();
        if self.local_load().has_room() || self.node_count() == 0 {
            out.push(None);
        }
        for n in self.others_with_room() {
            if out.len() >= self.turn_nodes {
                break;
            }
            out.push(Some(n));
        }
        if out.is_empty() {
            out.push(None);
        }
        out
    }
}

/// Counts this node's TURN load every `every` and hands the TURN task
/// the alternates of the moment; ends when the TURN task does.
pub(crate) async fn run_local(fleet: Arc<Fleet>, turn: TurnHandle, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(Instant, u64)> = None;
    loop {
        tick.tick().await;
        let Some(st) = turn.stats().await else {
            fleet.set_local(0, 0, false);
            return;
        };
        let c = &st.counters;
        let bytes = c.bytes_to_peer + c.bytes_to_client;
        let now = Instant::now();
        let bps = match last {
            Some((t, b)) if now > t => {
                let secs = (now - t).as_secs_f64();
                (bytes.saturating_sub(b) as f64 * 8.0 / secs) as u64
            }
            _ => 0,
        };
        last = Some((now, bytes));
        fleet.set_local(c.allocations_active, bps, true);
        fleet.redirects.store(c.redirects, Relaxed);
        let alternates = fleet.alternates();
        fleet.alternates_set.store(alternates.len() as u64, Relaxed);
        turn.set_alternates(alternates, fleet.tls_alternates())
            .await;
    }
}

/// The ICE servers a node of a fleet hands out in `welcome`: its own
/// `stun:` URL, then `turn:` URLs of the chosen TURN nodes (its own
/// first, with every transport it serves; the others' over UDP), with REST
/// credentials signed by the cluster's current secret.
pub(crate) struct FleetIceServers {
    pub(crate) fleet: Arc<Fleet>,
    /// This node's `stun:` URLs.
    pub(crate) stun: Vec<String>,
    /// This node's `turn:`/`turns:` URLs.
    pub(crate) own_turn: Vec<String>,
    pub(crate) ttl: Duration,
    pub(crate) user_prefix: String,
}

impl IceServerProvider for FleetIceServers {
    fn ice_servers(&self, peer: &str, now: SystemTime) -> Vec<IceServer> {
        let mut turn = Vec::new();
        for n in self.fleet.chosen() {
            match n {
                None => turn.extend(self.own_turn.iter().cloned()),
                Some(n) => turn.extend(n.turn.iter().map(|a| {
                    let host = match a {
                        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
                        SocketAddr::V4(v4) => v4.ip().to_string(),
                    };
                    format!("turn:{host}:{}?transport=udp", a.port())
                })),
            }
        }
        let mut out = Vec::new();
        if !self.stun.is_empty() {
            out.push(IceServer::new(self.stun.clone()));
        }
        let Some(secret) = self.fleet.ring.signing() else {
            return out;
        };
        let expiry = now
            .checked_add(self.ttl)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let username = format!("{expiry}:{}{peer}", self.user_prefix);
        let credential = rest_credential(secret.as_bytes(), &username);
        out.push(IceServer::with_credentials(turn, username, credential));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(node: &str, a: u64, q: u32, ok: bool, addr: &str) -> NodeLoad {
        NodeLoad {
            node: node.into(),
            turn: vec![addr.parse().unwrap()],
            tls: Vec::new(),
            allocations: a,
            quota: q,
            bps: 0,
            healthy: ok,
        }
    }

    #[test]
    fn a_load_round_trips_through_its_text_form() {
        let mut l = load("n1", 3, 10, true, "192.0.2.1:3478");
        assert_eq!(NodeLoad::decode("n1", &l.encode()), Some(l.clone()));
        l.tls = vec!["192.0.2.1:5349".parse().unwrap()];
        assert_eq!(NodeLoad::decode("n1", &l.encode()), Some(l));
        assert_eq!(NodeLoad::decode("n1", "a=x"), None);
    }

    #[test]
    fn alternates_and_handed_out_nodes_are_the_healthy_least_loaded_with_room() {
        let cfg = Config::from_toml_str(
            "[turn]\nrealm = \"r\"\nauth_secret = \"s\"\ntotal_quota = 2\n[cluster]\nredis = \"redis://127.0.0.1:1/\"\npublic_turn = [\"192.0.2.1:3478\"]\n",
        )
        .unwrap();
        let fleet = Fleet::new(&cfg, "n1".into(), &[], &[]).unwrap();
        fleet.set_local(2, 0, true);
        fleet.set_nodes(vec![
            fleet.local_load(),
            load("n2", 5, 10, true, "192.0.2.2:3478"),
            load("n3", 1, 10, true, "192.0.2.3:3478"),
            load("n4", 0, 10, false, "192.0.2.4:3478"),
            load("n5", 10, 10, true, "192.0.2.5:3478"),
        ]);
        let alt: Vec<String> = fleet.alternates().iter().map(ToString::to_string).collect();
        assert_eq!(alt, ["192.0.2.3:3478", "192.0.2.2:3478"]);
        // This node is full: the two least loaded others are handed out.
        let chosen: Vec<_> = fleet
            .chosen()
            .into_iter()
            .map(|n| n.map(|n| n.node))
            .collect();
        assert_eq!(chosen, [Some("n3".into()), Some("n2".into())]);
        fleet.set_local(0, 0, true);
        let chosen: Vec<_> = fleet
            .chosen()
            .into_iter()
            .map(|n| n.map(|n| n.node))
            .collect();
        assert_eq!(chosen, [None, Some("n3".into())]);
    }
}
