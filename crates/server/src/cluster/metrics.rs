//! The cluster's metric families (`p2p_cluster_*`): this node's share of
//! the cross-node traffic and its round trips to Redis. Cluster-wide
//! figures are the sums over the nodes.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

fn family(o: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
    let _ = writeln!(o, "{name} {value}");
}

/// Appends the `p2p_cluster_*` families of this node, `cluster` (only
/// `p2p_cluster_enabled` when this daemon is not a node of a cluster).
pub(crate) fn render_metrics(
    o: &mut String,
    cluster: Option<&super::ClusterMetrics>,
    signaling: Option<&p2p_signaling::MetricsSnapshot>,
) {
    family(
        o,
        "p2p_cluster_enabled",
        "gauge",
        "1 when this daemon is a node of a cluster.",
        u8::from(cluster.is_some()),
    );
    let Some(cluster) = cluster else {
        return;
    };
    let s = &cluster.stats;
    let rooms = signaling.map(|m| &m.rooms);
    let secs = |us: u64| us as f64 / 1e6;
    let rows: [(&str, &str, &str, String); 13] = [
        (
            "p2p_cluster_redis_healthy",
            "gauge",
            "1 while Redis answers.",
            u8::from(s.healthy.load(Relaxed)).to_string(),
        ),
        (
            "p2p_cluster_redis_round_trips_total",
            "counter",
            "Round trips to Redis (pipelines of commands, heartbeats).",
            s.round_trips.load(Relaxed).to_string(),
        ),
        (
            "p2p_cluster_redis_round_trip_seconds_total",
            "counter",
            "Time spent in those round trips.",
            secs(s.round_trip_us.load(Relaxed)).to_string(),
        ),
        (
            "p2p_cluster_redis_last_round_trip_seconds",
            "gauge",
            "The last round trip to Redis.",
            secs(s.last_round_trip_us.load(Relaxed)).to_string(),
        ),
        (
            "p2p_cluster_redis_commands_total",
            "counter",
            "Commands sent to Redis.",
            s.commands.load(Relaxed).to_string(),
        ),
        (
            "p2p_cluster_redis_errors_total",
            "counter",
            "Round trips to Redis that failed.",
            s.errors.load(Relaxed).to_string(),
        ),
        (
            "p2p_cluster_relayed_out_total",
            "counter",
            "Messages for peers of other nodes (at most one PUBLISH each: those for one node ready at once share one).",
            rooms.map_or(0, |r| r.cluster_relayed).to_string(),
        ),
        (
            "p2p_cluster_published_total",
            "counter",
            "Of those, published to Redis.",
            s.relayed_out.load(Relaxed).to_string(),
        ),
        (
            "p2p_cluster_publishes_total",
            "counter",
            "PUBLISH commands that carried them.",
            s.publishes.load(Relaxed).to_string(),
        ),
        (
            "p2p_cluster_relayed_in_total",
            "counter",
            "Messages from other nodes delivered to peers here.",
            rooms.map_or(0, |r| r.cluster_delivered).to_string(),
        ),
        (
            "p2p_cluster_refused_total",
            "counter",
            "Messages from other nodes refused (no such peer here, or no room shared with the sender).",
            rooms.map_or(0, |r| r.cluster_refused).to_string(),
        ),
        (
            "p2p_cluster_dropped_total",
            "counter",
            "Messages for other nodes dropped while Redis was unreachable.",
            s.dropped.load(Relaxed).to_string(),
        ),
        (
            "p2p_cluster_nodes_reaped_total",
            "counter",
            "Dead nodes whose members this node removed from their rooms.",
            s.reaped.load(Relaxed).to_string(),
        ),
    ];
    for (name, kind, help, v) in rows {
        family(o, name, kind, help, v);
    }
    if let Some(f) = &cluster.fleet {
        family(
            o,
            "p2p_cluster_turn_nodes",
            "gauge",
            "Live nodes whose TURN load this node read from Redis.",
            f.node_count(),
        );
        family(
            o,
            "p2p_cluster_turn_secrets",
            "gauge",
            "TURN REST secrets accepted now (more than one while one is rotated).",
            f.ring.len(),
        );
        family(
            o,
            "p2p_cluster_turn_redirects_total",
            "counter",
            "Allocates beyond this node's quota redirected to another node (300 Try Alternate).",
            f.redirects.load(Relaxed),
        );
        family(
            o,
            "p2p_cluster_turn_alternates",
            "gauge",
            "Other nodes' TURN addresses an Allocate beyond the quota may be redirected to now.",
            f.alternates_set.load(Relaxed),
        );
        family(
            o,
            "p2p_cluster_turn_allocations",
            "gauge",
            "This node's allocations, as published to the cluster.",
            f.local_load().allocations,
        );
    }
    family(
        o,
        "p2p_cluster_resumed_total",
        "counter",
        "Connections that took back an earlier peer id (resume).",
        rooms.map_or(0, |r| r.resumed),
    );
}
