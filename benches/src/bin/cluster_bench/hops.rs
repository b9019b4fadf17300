//! `--hops`: where a message's time goes. The signaling server and the
//! cluster store emit a `trace` event of target `p2p_hop` at each hop a
//! relayed message passes (off unless a subscriber asks for it: one
//! atomic load each); this layer stamps each with the time since
//! [`epoch`] and files it under the messages it names (the candidates'
//! `usernameFragment`, which carries their send time in nanoseconds since
//! the same epoch). The receiving client's read is filed as `client`.
//!
//! Hops, in path order: `read` (the sender's node read the frame), `hub`
//! (its rooms task relayed it: to a local connection's queue, or to the
//! store), `batch` (the store took it and wrote its JSON), `publish` (its
//! PUBLISH went in the pipeline), `sub` (the receiving node's store read it
//! from Redis), `deliver` (that node's rooms task took it), `write` (the
//! receiver's connection task wrote it), `client` (the receiver read it).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// The hops in path order.
pub(crate) const HOPS: [&str; 8] = [
    "read", "hub", "batch", "publish", "sub", "deliver", "write", "client",
];

/// The time every stamp and every candidate's send time counts from.
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
pub(crate) fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Default)]
struct Record {
    /// Send time (ns) → (hop, ns) as they came.
    stamps: HashMap<u64, Vec<(&'static str, u64)>>,
    /// Store pipelines' round trips that carried publishes, ns.
    rtt_us: Vec<u64>,
}

fn record() -> &'static Mutex<Record> {
    static R: OnceLock<Mutex<Record>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Files the stamp of `hop` for the message sent at `sent`.
pub(crate) fn stamp(hop: &'static str, sent: u64, at: u64) {
    if let Ok(mut r) = record().lock() {
        r.stamps.entry(sent).or_default().push((hop, at));
    }
}

/// Forgets every stamp (at the start of a run).
pub(crate) fn clear() {
    if let Ok(mut r) = record().lock() {
        *r = Record::default();
    }
}

/// The layer that files `p2p_hop` events.
pub(crate) struct HopLayer;

#[derive(Default)]
struct Fields {
    hop: Option<String>,
    msg: Option<String>,
    us: Option<u64>,
    publishes: Option<u64>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "hop" => self.hop = Some(value.to_owned()),
            "msg" => self.msg = Some(value.to_owned()),
            _ => {}
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "us" => self.us = Some(value),
            "publishes" => self.publishes = Some(value),
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "hop" => self.hop = Some(format!("{value:?}").trim_matches('"').to_owned()),
            "msg" => self.msg = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

/// The send times named in `msg`: each candidate's usernameFragment, as
/// JSON or as `Debug` writes it.
fn send_times(msg: &str) -> impl Iterator<Item = u64> + '_ {
    ["usernameFragment\":\"", "username_fragment: Some(\""]
        .into_iter()
        .flat_map(move |pat| msg.match_indices(pat).map(move |(i, _)| i + pat.len()))
        .filter_map(move |start| {
            let digits = msg.get(start..)?;
            let end = digits
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(digits.len());
            digits.get(..end)?.parse().ok()
        })
}

impl<S: Subscriber> Layer<S> for HopLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "p2p_hop" {
            return;
        }
        let at = now_ns();
        let mut f = Fields::default();
        event.record(&mut f);
        let Some(hop) = f
            .hop
            .as_deref()
            .and_then(|h| HOPS.iter().find(|k| **k == h))
        else {
            if f.hop.as_deref() == Some("rtt") && f.publishes.unwrap_or(0) > 0 {
                if let (Some(us), Ok(mut r)) = (f.us, record().lock()) {
                    r.rtt_us.push(us.saturating_mul(1000));
                }
            }
            return;
        };
        if let Some(msg) = f.msg.as_deref() {
            for sent in send_times(msg) {
                stamp(hop, sent, at);
            }
        }
    }
}

/// Per-hop figures of one run: for each hop, the time from the hop before
/// it that this message passed (p50, p99), over every message; and the
/// same segments averaged over the slowest 1 % of messages (end to end):
/// where the tail's time goes.
pub(crate) struct Breakdown {
    /// (hop, p50, p99, mean over the slowest 1 %).
    pub(crate) rows: Vec<(&'static str, Duration, Duration, Duration)>,
    /// End to end p50, p99.
    pub(crate) total: (Duration, Duration),
    /// The store's pipeline round trips (with publishes): p50, p99, count.
    pub(crate) rtt: (Duration, Duration, usize),
    /// Messages with every hop stamped.
    pub(crate) messages: usize,
}

fn pct(v: &mut [u64], q: f64) -> Duration {
    v.sort_unstable();
    let i = ((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1));
    Duration::from_nanos(v.get(i).copied().unwrap_or(0))
}

/// Takes the stamps since [`clear`] and breaks them down.
pub(crate) fn take() -> Breakdown {
    let r = record()
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    // Per message: the first stamp of each hop, in path order.
    let mut paths: Vec<Vec<(&'static str, u64)>> = Vec::new();
    for (sent, mut stamps) in r.stamps {
        stamps.sort_by_key(|s| s.1);
        let mut path = vec![("sent", sent)];
        for hop in HOPS {
            if let Some(s) = stamps.iter().find(|s| s.0 == hop) {
                path.push(*s);
            }
        }
        if path.last().is_some_and(|l| l.0 == "client") {
            paths.push(path);
        }
    }
    let total = |p: &Vec<(&str, u64)>| p.last().map_or(0, |l| l.1) - p[0].1;
    paths.sort_by_key(total);
    let slow = (paths.len() / 100).max(1);
    let tail = &paths[paths.len().saturating_sub(slow)..];
    let mut rows = Vec::new();
    for hop in HOPS {
        let seg = |p: &Vec<(&'static str, u64)>| {
            let i = p.iter().position(|s| s.0 == hop)?;
            Some(p[i].1.saturating_sub(p[i - 1].1))
        };
        let mut all: Vec<u64> = paths.iter().filter_map(seg).collect();
        if all.is_empty() {
            continue;
        }
        let t: Vec<u64> = tail.iter().filter_map(seg).collect();
        let mean = t.iter().sum::<u64>() / (t.len().max(1) as u64);
        rows.push((
            hop,
            pct(&mut all, 0.5),
            pct(&mut all, 0.99),
            Duration::from_nanos(mean),
        ));
    }
    let mut totals: Vec<u64> = paths.iter().map(total).collect();
    let mut rtt = r.rtt_us.clone();
    let n = rtt.len();
    Breakdown {
        rows,
        total: (pct(&mut totals, 0.5), pct(&mut totals, 0.99)),
        rtt: (pct(&mut rtt, 0.5), pct(&mut rtt, 0.99), n),
        messages: paths.len(),
    }
}
