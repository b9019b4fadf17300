//! Many `p2p serve` nodes as one service (issue 16), and what a single
//! node does so that its clients survive its restart.
//!
//! A node of a cluster (`[cluster] redis = "redis://..."`, `--redis`)
//! keeps its rooms' membership in Redis ([`store`], [`scripts`]): the
//! signaling rooms' task (`p2p_signaling::Rooms` in cluster mode) asks
//! the store to admit joins, relays messages for peers of other nodes
//! with one PUBLISH each, and mirrors the members of other nodes. Each
//! node beats a heartbeat; a node silent for the expiry is reaped by the
//! first live node that notices, and its members leave their rooms.
//! See `docs/cluster.md`.
//!
//! Resume tokens: every `welcome` carries one (see `docs/signaling.md`,
//! `resume`). They are signed with a key every node of the service shares
//! and that outlives a restart: derived from the TURN REST secret
//! (`turn.auth_secret`) when one is set, else random per run (a restart
//! then cannot take back the old peer ids). Peer ids carry a tag drawn
//! per run (`p<tag>-<n>`), so that a restarted node (or another node)
//! never hands out an id a resuming client still holds.

mod beat;
mod fleet;
mod metrics;
mod outbox;
mod scripts;
mod store;

use std::sync::Arc;
use std::time::Duration;

use p2p_signaling::{
    ClusterAttach, ClusterEvent, ClusterLink, ClusterOp, ResumeConfig, ServerConfig,
};
use rand::Rng;
use tokio::sync::mpsc;

pub use crate::config::ClusterConfig;
use crate::config::Config;
pub(crate) use fleet::{run_local, Fleet, FleetIceServers};
pub(crate) use metrics::render_metrics;
pub(crate) use store::StoreStats;

/// What a node of a cluster is, decided before anything binds to Redis.
#[derive(Debug)]
pub(crate) struct Membership {
    /// Its id in the cluster.
    pub(crate) node: String,
    /// Its TURN fleet view, when it serves TURN.
    pub(crate) fleet: Option<Arc<Fleet>>,
    /// Its store's counters (this node's own: two nodes in one process
    /// count apart).
    pub(crate) stats: Arc<StoreStats>,
}

impl Membership {
    /// What this node shows on its metrics endpoint.
    pub(crate) fn metrics(&self) -> ClusterMetrics {
        ClusterMetrics {
            stats: self.stats.clone(),
            fleet: self.fleet.clone(),
        }
    }
}

/// One node's cluster counters, for its metrics endpoint.
#[derive(Debug, Clone)]
pub(crate) struct ClusterMetrics {
    pub(crate) stats: Arc<StoreStats>,
    pub(crate) fleet: Option<Arc<Fleet>>,
}

/// The membership of this daemon, when `[cluster] redis` is set; `udp`
/// are its bound STUN/TURN UDP addresses, `tls` its TLS ones.
pub(crate) fn prepare(
    config: &Config,
    udp: &[std::net::SocketAddr],
    tls: &[std::net::SocketAddr],
) -> Option<Membership> {
    let c = &config.cluster;
    c.redis.as_ref()?;
    let node = c
        .node_id
        .clone()
        .unwrap_or_else(|| format!("node-{}", run_tag()));
    let fleet = Fleet::new(config, node.clone(), udp, tls);
    Some(Membership {
        node,
        fleet,
        stats: Arc::new(StoreStats::default()),
    })
}

/// What the resume key is derived from, so that it outlives a restart.
const RESUME_KEY_LABEL: &str = "p2p-signaling resume key v1";

/// The resume key of this service: shared by every node that shares the
/// TURN REST secret, or random.
pub(crate) fn resume_key(config: &Config) -> Vec<u8> {
    match &config.turn.auth_secret {
        Some(secret) => {
            p2p_signaling::rest_credential(secret.as_bytes(), RESUME_KEY_LABEL).into_bytes()
        }
        None => rand::thread_rng().gen::<[u8; 32]>().to_vec(),
    }
}

/// A tag of this run for peer ids: six lowercase letters and digits.
pub(crate) fn run_tag() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    (0..6)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// Turns on resume tokens and per-run peer ids.
pub(crate) fn setup_resume(sc: &mut ServerConfig, config: &Config) {
    sc.resume = Some(ResumeConfig::new(resume_key(config)));
    sc.peer_id_prefix = format!("p{}-", run_tag());
}

/// Joins the cluster when `[cluster] redis` is set: connects to Redis
/// (an unreachable or malformed URL is an error at start), shares the
/// resume key, and links the signaling rooms to the store.
pub(crate) async fn attach(
    sc: &mut ServerConfig,
    config: &Config,
    member: Option<&Membership>,
) -> Result<(), String> {
    let c = &config.cluster;
    let (Some(url), Some(member)) = (&c.redis, member) else {
        return Ok(());
    };
    c.validate()?;
    let node = member.node.clone();
    let mut links = store::connect(url, Duration::from_secs(3)).await?;
    if config.turn.auth_secret.is_none() {
        // Every node must sign resume tokens alike: the first node to come
        // puts a random key in Redis, the others take it.
        let key = format!("{}resume-key", c.prefix);
        let fresh = hex(&rand::thread_rng().gen::<[u8; 32]>());
        let shared: Option<String> = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(&fresh)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&key)
            .query_async::<(Option<String>,)>(&mut links.conn)
            .await
            .map(|(v,)| v)
            .map_err(|e| format!("cluster.redis {url:?}: {e}"))?;
        let shared = shared.ok_or("cluster: the resume key vanished from Redis")?;
        sc.resume = Some(ResumeConfig::new(shared.into_bytes()));
    }
    let (ops_tx, events_rx) = start_store(config, member, links);
    sc.cluster = Some(ClusterAttach::new(ClusterLink {
        node: node.clone(),
        ops: ops_tx,
        events: events_rx,
    }));
    tracing::info!("cluster: node {node} joined through {url}");
    Ok(())
}

/// Joins the cluster as a TURN node only (a node without signaling, `[cluster]
/// redis` set): the store beats, publishes this node's TURN load and reads
/// the fleet's and the shared REST secrets, so that the other nodes hand
/// this one out and redirect to it, and it redirects to them. The node
/// stays a member while the returned handle lives (drop it to leave).
pub(crate) async fn join_turn_only(
    config: &Config,
    member: Option<&Membership>,
) -> Result<Option<mpsc::Sender<ClusterOp>>, String> {
    let c = &config.cluster;
    let (Some(url), Some(member)) = (&c.redis, member) else {
        return Ok(None);
    };
    c.validate()?;
    let links = store::connect(url, Duration::from_secs(3)).await?;
    // No rooms here: nothing reads the store's events.
    let (ops_tx, _events) = start_store(config, member, links);
    tracing::info!(
        "cluster: node {} joined through {url} (TURN only: no signaling)",
        member.node
    );
    Ok(Some(ops_tx))
}

/// Spawns the node's store task: it runs until the returned sender of
/// operations is dropped, then leaves.
fn start_store(
    config: &Config,
    member: &Membership,
    links: store::Links,
) -> (mpsc::Sender<ClusterOp>, mpsc::Receiver<ClusterEvent>) {
    let c = &config.cluster;
    let node = member.node.clone();
    let (ops_tx, ops_rx) = mpsc::channel(65_536);
    let (events_tx, events_rx) = mpsc::channel(65_536);
    let store = store::Store::new(
        store::StoreConfig {
            node: node.clone(),
            prefix: c.prefix.clone(),
            heartbeat: c.heartbeat(),
            expiry: c.expiry(),
        },
        links,
        events_tx,
        member.stats.clone(),
        member.fleet.clone(),
    );
    tokio::spawn(store.run(ops_rx));
    (ops_tx, events_rx)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
