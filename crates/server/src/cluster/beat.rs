//! The node's heartbeat and its TURN fleet's round trips, on a task and a
//! Redis connection of their own: they need no order with the messages,
//! so a heartbeat's round trip (one EVAL every beat; three more on a TURN
//! node) never waits in front of a PUBLISH, nor the store's task behind
//! it. The store hears each beat's outcome ([`BeatReport`]) and catches up
//! after a break.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use redis::aio::ConnectionManager;
use redis::Value;
use tokio::sync::mpsc;

use super::fleet::{Fleet, NodeLoad};
use super::scripts::HEARTBEAT;
use super::store::{StoreConfig, StoreStats};

/// What one heartbeat found, for the store.
#[derive(Debug)]
pub(super) enum BeatReport {
    /// Redis answered.
    Answered,
    /// It did not.
    Failed,
}

/// The heartbeat task's state.
pub(super) struct Beat {
    pub(super) cfg: StoreConfig,
    /// Its own connection (not the store's).
    pub(super) conn: ConnectionManager,
    pub(super) stats: Arc<StoreStats>,
    pub(super) fleet: Option<Arc<Fleet>>,
    pub(super) reports: mpsc::Sender<BeatReport>,
}

impl Beat {
    /// Beats every `cfg.heartbeat` until the store goes away.
    pub(super) async fn run(mut self) {
        let mut tick = tokio::time::interval(self.cfg.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Since when Redis answers without a break: reaping waits for one
        // expiry after a break, so that nodes that could not beat
        // meanwhile are not reaped.
        let mut healthy_since = Some(Instant::now());
        loop {
            tick.tick().await;
            let report = if self.heartbeat(&mut healthy_since).await {
                BeatReport::Answered
            } else {
                BeatReport::Failed
            };
            let answered = matches!(report, BeatReport::Answered);
            if self.reports.send(report).await.is_err() {
                return;
            }
            if answered {
                self.sync_fleet().await;
            }
        }
    }

    fn key(&self, what: &str) -> String {
        format!("{}{what}", self.cfg.prefix)
    }

    /// Counts one round trip.
    fn timed(&self, started: Instant, commands: usize, ok: bool) {
        self.stats.timed(started, commands, ok);
    }

    /// Beats and reaps dead nodes; whether Redis answered.
    async fn heartbeat(&mut self, healthy_since: &mut Option<Instant>) -> bool {
        let reap = healthy_since.is_some_and(|t| t.elapsed() >= self.cfg.expiry);
        let started = Instant::now();
        let r: redis::RedisResult<Vec<String>> = redis::cmd("EVAL")
            .arg(HEARTBEAT)
            .arg(1)
            .arg(self.key("nodes"))
            .arg(&self.cfg.node)
            .arg(self.cfg.expiry.as_millis() as u64)
            .arg(if reap { "1" } else { "0" })
            .arg(&self.cfg.prefix)
            .query_async(&mut self.conn)
            .await;
        self.timed(started, 1, r.is_ok());
        match r {
            Ok(reaped) => {
                healthy_since.get_or_insert_with(Instant::now);
                for n in reaped.iter().filter(|n| **n != self.cfg.node) {
                    tracing::warn!(
                        "cluster: node {n} stopped beating; its members left their rooms"
                    );
                    self.stats.reaped.fetch_add(1, Relaxed);
                }
                true
            }
            Err(e) => {
                if healthy_since.is_some() {
                    tracing::warn!("cluster: Redis heartbeat: {e}");
                }
                *healthy_since = None;
                false
            }
        }
    }

    /// Publishes this node's TURN load (with the expiry of a node) and
    /// reads every live node's, and the cluster's REST secrets: the first
    /// node with `turn.auth_secret` seeds the list when it is empty.
    async fn sync_fleet(&mut self) {
        let Some(fleet) = self.fleet.clone() else {
            return;
        };
        let secrets_key = self.key("turn-secrets");
        let started = Instant::now();
        let r: redis::RedisResult<(Vec<String>, Vec<String>)> = redis::pipe()
            .cmd("SET")
            .arg(self.key(&format!("load:{}", self.cfg.node)))
            .arg(fleet.local_load().encode())
            .arg("PX")
            .arg(self.cfg.expiry.as_millis() as u64)
            .ignore()
            .cmd("LRANGE")
            .arg(&secrets_key)
            .arg(0)
            .arg(-1)
            .cmd("ZRANGE")
            .arg(self.key("nodes"))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn)
            .await;
        self.timed(started, 3, r.is_ok());
        let Ok((secrets, nodes)) = r else {
            return;
        };
        if secrets.is_empty() {
            if let Some(seed) = &fleet.seed_secret {
                let _: redis::RedisResult<Value> = redis::cmd("EVAL")
                    .arg("if redis.call('LLEN', KEYS[1]) == 0 then redis.call('RPUSH', KEYS[1], ARGV[1]) end return 1")
                    .arg(1)
                    .arg(&secrets_key)
                    .arg(seed)
                    .query_async(&mut self.conn)
                    .await;
            }
        } else if fleet.ring.set(secrets) {
            tracing::info!(
                "cluster: {} TURN REST secret(s) accepted now",
                fleet.ring.len()
            );
        }
        if nodes.is_empty() {
            return;
        }
        let keys: Vec<String> = nodes
            .iter()
            .map(|n| self.key(&format!("load:{n}")))
            .collect();
        let started = Instant::now();
        let r: redis::RedisResult<Vec<Option<String>>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn)
            .await;
        self.timed(started, 1, r.is_ok());
        if let Ok(loads) = r {
            let loads = nodes
                .iter()
                .zip(loads)
                .filter_map(|(n, l)| NodeLoad::decode(n, &l?))
                .collect();
            fleet.set_nodes(loads);
        }
    }
}
