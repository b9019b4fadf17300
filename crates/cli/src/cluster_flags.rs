//! `p2p serve`'s cluster flags (issue 16): `--redis` joins a cluster of
//! nodes on Redis (see docs/cluster.md).

use clap::Args;
use p2p_server::Config;

/// Joining a cluster of `p2p serve` nodes.
#[derive(Debug, Args)]
pub(crate) struct ClusterServeArgs {
    /// Join a cluster through this Redis server, redis://HOST:PORT[/DB] [cluster.redis].
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// This node's id in the cluster (default: random per run) [cluster.node_id].
    #[arg(long, value_name = "ID", requires = "redis")]
    node_id: Option<String>,
    /// Where others reach this node's TURN server, HOST:PORT; repeatable [cluster.public_turn].
    #[arg(long, value_name = "HOST:PORT", requires = "redis")]
    public_turn: Vec<String>,
}

pub(crate) fn apply(cfg: &mut Config, a: &ClusterServeArgs) {
    let c = &mut cfg.cluster;
    if a.redis.is_some() {
        c.redis = a.redis.clone();
    }
    if a.node_id.is_some() {
        c.node_id = a.node_id.clone();
    }
    if !a.public_turn.is_empty() {
        c.public_turn = a.public_turn.clone();
    }
}
