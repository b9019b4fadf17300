//! The floor of our encrypted data path (issue 13, "Speed"): how fast two
//! of our stacks move 100 MiB of 16 KiB messages through memory, on one
//! thread, with no socket, no driver and no task hand-off; and how much
//! CPU each side spends per datagram.
//!
//! Four layers, each its own row:
//! - `session`: two `p2p_connect::Session`s (ICE, DTLS, SCTP, as the driver
//!   runs them), the sender queueing with `send_deferred` up to the
//!   driver's 1 MiB high water and flushing every 256 KiB, the receiver
//!   taking the datagrams in batches (`handle_inputs`) and releasing each
//!   message at once;
//! - `sctp`: two `p2p_datachannel::SctpAssociation`s, plaintext, the same
//!   pacing: what SCTP and our wrapper cost;
//! - `dtls12` / `dtls13`: two `p2p_dtls::DtlsEndpoint`s carrying full
//!   records (the payload SCTP would put in them): what DTLS costs.
//!
//! The machines get `now` from the clock plus the simulated time skipped
//! when both sides wait on a timer (a "stall": there is no loss here, so
//! the figure should be 0). Each side's CPU is the thread CPU time of its
//! own calls (`CLOCK_THREAD_CPUTIME_ID`: time the thread spent descheduled
//! on a loaded machine is not counted); MB/s is the payload over the sum
//! of both sides' CPU, i.e. what one core moves with both ends on it. The
//! wall-clock rate is given beside it. The datagrams go
//! whole from one side to the other (1,200-byte datagrams, the default
//! MTU: the packet size is not raised to win).
//!
//! `channel_floor [--mib N] [--runs N] [--only NAME] [--batch N] [--allocs]`
//! prints a Markdown table (medians over the runs, and the best), then
//! (unless `--only` names a layer) the per-packet costs inside the
//! libraries beside what a fix would make them (`raw.rs`);
//! `--allocs` counts heap allocations per datagram on each side (a
//! counting allocator; it costs time, so the timed figures of such a run
//! are not comparable). Profile it with
//! `perf record -g target/release/channel_floor --only session`.
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

mod layers;
mod raw;
mod sessions;

#[path = "../../counting.rs"]
mod counting;

use std::time::{Duration, Instant};

pub(crate) use counting::allocs;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// The message size of the benchmark.
pub(crate) const MESSAGE: usize = 16 * 1024;
/// The driver's high water: the sender stops queueing above it.
pub(crate) const HIGH_WATER: usize = 1024 * 1024;
/// The driver moves at most this much through the layers per flush.
pub(crate) const SEND_BATCH: usize = 256 * 1024;
/// Every run is bounded: at most this many rounds (a round moves at least
/// one datagram or one timer), and this much simulated time skipped.
pub(crate) const MAX_ROUNDS: u64 = 50_000_000;
pub(crate) const MAX_SKIPPED: Duration = Duration::from_secs(120);

struct Args {
    mib: u64,
    runs: usize,
    only: Option<String>,
    batch: usize,
    count_allocs: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        mib: 100,
        runs: 3,
        only: None,
        batch: 64,
        count_allocs: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--mib" => a.mib = value()?.parse().map_err(|e| format!("--mib: {e}"))?,
            "--runs" => a.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--batch" => a.batch = value()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--only" => a.only = Some(value()?),
            "--allocs" => a.count_allocs = true,
            "--no-build" => {}
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.runs == 0 || a.mib == 0 || a.batch == 0 {
        return Err("--runs, --mib and --batch must be at least 1".into());
    }
    Ok(a)
}

/// The machines' clock: the wall clock plus what stalls skipped.
pub(crate) struct Clock {
    pub(crate) skipped: Duration,
}

impl Clock {
    pub(crate) fn now(&self) -> Instant {
        Instant::now() + self.skipped
    }

    /// Both sides wait on a timer at `at`: jump there.
    pub(crate) fn skip_to(&mut self, at: Instant) {
        let now = self.now();
        if at > now {
            self.skipped += at - now;
        }
    }
}

/// What one run measured.
#[derive(Debug, Default, Clone)]
pub(crate) struct Run {
    /// Payload bytes delivered (in order, checked).
    pub(crate) bytes: u64,
    pub(crate) wall: Duration,
    /// Time spent in the sender's calls, and the receiver's.
    pub(crate) sender: Duration,
    pub(crate) receiver: Duration,
    /// Datagrams sender → receiver, and receiver → sender.
    pub(crate) forward: u64,
    pub(crate) backward: u64,
    /// Bytes of those datagrams sender → receiver.
    pub(crate) wire_bytes: u64,
    pub(crate) sender_allocs: u64,
    pub(crate) receiver_allocs: u64,
    pub(crate) stalls: u64,
    pub(crate) note: String,
}

impl Run {
    /// Payload MB per second of CPU (both sides' calls: one core).
    fn mbps(&self) -> f64 {
        self.bytes as f64 / (self.sender + self.receiver).as_secs_f64() / 1e6
    }
    /// Payload MB per second of wall time (the machine's load counts).
    fn wall_mbps(&self) -> f64 {
        self.bytes as f64 / self.wall.as_secs_f64() / 1e6
    }
    fn per_datagram(d: Duration, n: u64) -> f64 {
        d.as_secs_f64() * 1e6 / n.max(1) as f64
    }
}

/// This thread's CPU time (not the wall clock: on a loaded machine the
/// thread is descheduled at times, and that is not the stack's cost).
pub(crate) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Time one side's call (thread CPU time), counting its allocations.
fn timed<T>(spent: &mut Duration, allocs_of: &mut u64, f: impl FnOnce() -> T) -> T {
    let a0 = allocs();
    let t = thread_cpu();
    let r = f();
    *spent += thread_cpu().saturating_sub(t);
    *allocs_of += allocs() - a0;
    r
}

/// The sender's calls (a function of its own, so that a profile tells the
/// sides apart).
#[inline(never)]
pub(crate) fn sender_side<T>(
    spent: &mut Duration,
    allocs_of: &mut u64,
    f: impl FnOnce() -> T,
) -> T {
    timed(spent, allocs_of, f)
}

/// The receiver's calls.
#[inline(never)]
pub(crate) fn receiver_side<T>(
    spent: &mut Duration,
    allocs_of: &mut u64,
    f: impl FnOnce() -> T,
) -> T {
    timed(spent, allocs_of, f)
}

/// A message: its sequence number, then a fixed pattern.
pub(crate) fn message(template: &mut [u8], seq: u64) -> &[u8] {
    template[..8].copy_from_slice(&seq.to_be_bytes());
    template
}

/// Checks the order of what arrives.
#[derive(Default)]
pub(crate) struct Counter {
    pub(crate) next: u64,
    pub(crate) bad: u64,
    pub(crate) bytes: u64,
}

impl Counter {
    pub(crate) fn take(&mut self, data: &[u8]) {
        let ok = data.len() == MESSAGE
            && data
                .get(..8)
                .is_some_and(|s| s == self.next.to_be_bytes().as_slice());
        if !ok {
            self.bad += 1;
        }
        self.next += 1;
        self.bytes += data.len() as u64;
    }
}

// ---- the table ----

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("channel_floor: {e}");
            std::process::exit(2);
        }
    };
    counting::count(a.count_allocs);
    type Bench = fn(u64, usize) -> Result<Run, String>;
    let rows: [(&str, &str, Bench); 4] = [
        (
            "session",
            "two Sessions (ICE + DTLS + SCTP), as the driver calls them",
            sessions::run_sessions,
        ),
        (
            "sctp",
            "two SctpAssociations, plaintext (SCTP + our wrapper)",
            layers::run_sctp,
        ),
        (
            "dtls12",
            "two DtlsEndpoints, DTLS 1.2, full records",
            |m, b| layers::run_dtls(m, b, false),
        ),
        (
            "dtls13",
            "two DtlsEndpoints, DTLS 1.3 (what two of ours negotiate), full records",
            |m, b| layers::run_dtls(m, b, true),
        ),
    ];
    println!(
        "{} MiB as {} KiB messages (DTLS rows: full records), one thread, in memory; \
         medians of {} runs (best MB/s in brackets){}.\n",
        a.mib,
        MESSAGE / 1024,
        a.runs,
        if a.count_allocs {
            "; allocations counted (times inflated)"
        } else {
            ""
        }
    );
    println!(
        "| layer | MB/s per CPU-second | MB/s wall | sender µs/datagram | receiver µs/datagram | \
         datagrams | acks back | allocs/datagram (sender, receiver) | stalls | what |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut failed = false;
    for (name, what, bench) in rows {
        if a.only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let mut runs = Vec::new();
        for i in 0..a.runs {
            match bench(a.mib, a.batch) {
                Ok(r) => {
                    eprintln!(
                        "{name} run {}: {:.1} MB/s per CPU-second ({:.1} wall), sender {:.2} µs, receiver {:.2} µs per datagram, {} datagrams, {} back, {} stalls {}",
                        i + 1,
                        r.mbps(),
                        r.wall_mbps(),
                        Run::per_datagram(r.sender, r.forward),
                        Run::per_datagram(r.receiver, r.forward),
                        r.forward,
                        r.backward,
                        r.stalls,
                        r.note
                    );
                    runs.push(r);
                }
                Err(e) => {
                    eprintln!("{name} run {}: {e}", i + 1);
                    failed = true;
                }
            }
        }
        if runs.is_empty() {
            println!("| {name} | failed | | | | | | | | {what} |");
            continue;
        }
        let m = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(f).collect());
        let best = runs.iter().map(Run::mbps).fold(0.0, f64::max);
        let note = runs.first().map(|r| r.note.clone()).unwrap_or_default();
        println!(
            "| {name} | {:.0} ({:.0}) | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {} | {:.0} | {what}{} |",
            m(&Run::mbps),
            best,
            m(&Run::wall_mbps),
            m(&|r| Run::per_datagram(r.sender, r.forward)),
            m(&|r| Run::per_datagram(r.receiver, r.forward)),
            m(&|r| r.forward as f64),
            m(&|r| r.backward as f64),
            if a.count_allocs {
                format!(
                    "{:.1}, {:.1}",
                    m(&|r| r.sender_allocs as f64 / r.forward.max(1) as f64),
                    m(&|r| r.receiver_allocs as f64 / r.forward.max(1) as f64)
                )
            } else {
                "-".into()
            },
            m(&|r| r.stalls as f64),
            if note.is_empty() {
                String::new()
            } else {
                format!(" ({note})")
            }
        );
    }
    if a.only.as_deref().is_none_or(|o| "raw".contains(o)) {
        raw::table();
    }
    if failed {
        std::process::exit(1);
    }
}
