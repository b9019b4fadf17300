//! `[cluster]`: joining a cluster of `p2p serve` nodes on Redis.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[cluster]`: the shared store and this node's place in it. Without
/// `redis` the daemon is a single node and needs no Redis.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// The Redis server, `redis://HOST:PORT[/DB]` (`--redis`). Every node
    /// of the cluster names the same one.
    pub redis: Option<String>,
    /// This node's id, unique in the cluster (`--node-id`): letters,
    /// digits, `-`, `_` and `.`, at most 64. Default: a random one per run.
    pub node_id: Option<String>,
    /// Where clients and other nodes reach this node's TURN server, as
    /// `HOST:PORT` (`--public-turn`, repeatable): what the other nodes put
    /// in the ICE servers they hand out and in ALTERNATE-SERVER. Default:
    /// the first STUN/TURN listen address.
    pub public_turn: Vec<String>,
    /// How often this node says it is alive, in milliseconds. Default 500.
    pub heartbeat_ms: u64,
    /// A node silent this long is dead: its members leave their rooms (the
    /// peers get `peer-left`), in milliseconds. Default 2500.
    pub expiry_ms: u64,
    /// The prefix of every Redis key and channel. Default `p2p:`.
    pub prefix: String,
    /// TURN nodes named in each ICE server list handed out (the least
    /// loaded healthy ones, this node first when it has room). Default 2.
    pub turn_nodes: usize,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            redis: None,
            node_id: None,
            public_turn: Vec::new(),
            heartbeat_ms: 500,
            expiry_ms: 2500,
            prefix: "p2p:".to_owned(),
            turn_nodes: 2,
        }
    }
}

impl ClusterConfig {
    /// Whether this daemon is a node of a cluster.
    pub fn enabled(&self) -> bool {
        self.redis.is_some()
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(50))
    }

    /// The expiry of a silent node.
    pub fn expiry(&self) -> Duration {
        Duration::from_millis(self.expiry_ms.max(self.heartbeat_ms.saturating_mul(2)))
    }

    /// Checks the values; the error says which is wrong.
    pub fn validate(&self) -> Result<(), &'static str> {
        if let Some(url) = &self.redis {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err("cluster.redis must be a redis://HOST:PORT[/DB] URL");
            }
        }
        if let Some(id) = &self.node_id {
            if id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err("cluster.node_id must be 1 to 64 letters, digits, '-', '_' or '.'");
            }
        }
        if self.heartbeat_ms == 0 || self.expiry_ms <= self.heartbeat_ms {
            return Err(
                "cluster.expiry_ms must be above cluster.heartbeat_ms, which must be above 0",
            );
        }
        if self.prefix.chars().any(char::is_control) {
            return Err("cluster.prefix must not contain control characters");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn the_cluster_section_is_read_from_toml_and_a_single_node_needs_none() {
        let single = Config::from_toml_str("").expect("empty config");
        assert!(!single.cluster.enabled());
        let c = Config::from_toml_str(
            "[cluster]\nredis = \"redis://127.0.0.1:6379/2\"\nnode_id = \"a-1\"\npublic_turn = [\"192.0.2.1:3478\"]\n",
        )
        .expect("cluster config");
        assert!(c.cluster.enabled());
        assert_eq!(c.cluster.node_id.as_deref(), Some("a-1"));
        assert_eq!(c.cluster.public_turn, ["192.0.2.1:3478"]);
    }

    #[test]
    fn a_url_that_is_not_redis_or_a_bad_node_id_is_refused_at_load() {
        let err = Config::from_toml_str("[cluster]\nredis = \"http://127.0.0.1:6379\"\n")
            .expect_err("not a redis URL");
        assert!(err.to_string().contains("redis://HOST:PORT"), "{err}");
        let err = Config::from_toml_str(
            "[cluster]\nredis = \"redis://127.0.0.1:6379\"\nnode_id = \"a b\"\n",
        )
        .expect_err("bad node id");
        assert!(err.to_string().contains("node_id"), "{err}");
        let err = Config::from_toml_str("[cluster]\nheartbeat_ms = 500\nexpiry_ms = 400\n")
            .expect_err("expiry below heartbeat");
        assert!(err.to_string().contains("expiry_ms"), "{err}");
    }
}
