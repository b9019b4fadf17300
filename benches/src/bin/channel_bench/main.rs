//! Data channel throughput on loopback (issue 13, "Speed"): a reliable
//! ordered channel carrying 100 MiB as 16 KiB messages from one peer to
//! the other, for our stack (`p2p-connect`, the whole of it: signaling,
//! ICE, DTLS, SCTP, the tokio driver on real UDP sockets), and with the
//! feature `channel-peers` for str0m and webrtc-rs in the same run, each
//! at its best settings (webrtc-rs twice: with a 4 MiB socket receive
//! buffer, and with the OS default). Plain 1,200-byte UDP between two
//! sockets is the ceiling.
//!
//! Each contender runs `--runs` times (the best and the median are
//! reported) and is bounded in time: a run that has not delivered
//! everything after `--limit` seconds reports what it delivered and is
//! marked incomplete. Every message is checked (its length, and its
//! sequence number for the ordered channels).
//!
//! With each run's rate, the CPU time the process spent on it (every
//! thread, user and system, setup included) is printed, per 100 MiB and
//! as CPUs busy during the transfer; the table gives the median CPU per
//! 100 MiB.
//!
//! `channel_bench [--mib N] [--runs N] [--limit S] [--only NAME]` (a name,
//! or a part of names) prints a
//! Markdown table; `cargo xtask bench channel` runs it and writes
//! `target/bench-channel.md`. `channel_bench --memory N` instead measures
//! the peers' heap per idle connection end (N connected pairs, counted by
//! a counting allocator as `channel_setup` counts ours).
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

mod ours;
#[cfg(feature = "channel-peers")]
mod str0m_peer;
mod udp;
#[cfg(feature = "channel-peers")]
mod webrtc_peer;

#[path = "../../counting.rs"]
mod counting;

use std::time::Duration;

#[cfg(feature = "channel-peers")]
pub(crate) use counting::{live, rss};

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// The size of one message.
pub(crate) const MESSAGE: usize = 16 * 1024;
/// The largest a sender lets its unacknowledged bytes grow (webrtc-rs's
/// high-water mark; str0m has its own, `str0m_peer::BEST_BUFFERED`).
#[cfg(feature = "channel-peers")]
pub(crate) const BUFFERED: usize = 4 * 1024 * 1024;
/// The socket buffer size asked for where the benchmark owns the socket.
pub(crate) const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// What to move, and for how long at most.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Job {
    /// Bytes to move (whole messages).
    pub(crate) bytes: u64,
    /// Give up after this long.
    pub(crate) limit: Duration,
}

impl Job {
    /// The number of messages.
    pub(crate) fn messages(&self) -> u64 {
        self.bytes / MESSAGE as u64
    }
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// Bytes delivered (and checked) at the receiver.
    pub(crate) bytes: u64,
    /// From the first byte sent to the last one delivered.
    pub(crate) elapsed: Duration,
    /// Everything arrived within the limit.
    pub(crate) complete: bool,
}

impl Outcome {
    fn mbps(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// CPU time (user + system) of the whole process so far, every thread,
/// those that ended included (`getrusage(RUSAGE_SELF)`); zero where it
/// cannot be read.
fn cpu_time() -> Duration {
    // SAFETY: `getrusage` writes one `rusage` into the zeroed value we
    // own; nothing else is touched.
    #[allow(unsafe_code)]
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return Duration::ZERO;
        }
        u
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The first 8 bytes of message `i`: its number; the rest a pattern.
pub(crate) fn message(i: u64) -> Vec<u8> {
    let mut m = vec![0u8; MESSAGE];
    for (k, b) in m.iter_mut().enumerate() {
        *b = (k as u8).wrapping_mul(31);
    }
    m[..8].copy_from_slice(&i.to_be_bytes());
    m
}

/// The number of a received message, if it has the right length.
pub(crate) fn number(m: &[u8]) -> Option<u64> {
    if m.len() != MESSAGE {
        return None;
    }
    Some(u64::from_be_bytes(m.get(..8)?.try_into().ok()?))
}

/// Counts what arrives and checks the order.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    /// Messages received in order.
    pub(crate) next: u64,
    /// Messages that came out of order or with a wrong length.
    pub(crate) bad: u64,
}

impl Counter {
    /// One message received.
    pub(crate) fn take(&mut self, m: &[u8]) {
        match number(m) {
            Some(n) if n == self.next => self.next += 1,
            _ => self.bad += 1,
        }
    }
}

struct Args {
    mib: u64,
    runs: usize,
    limit: Duration,
    only: Option<String>,
    memory: Option<usize>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        mib: 100,
        runs: 3,
        limit: Duration::from_secs(60),
        only: None,
        memory: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{k} {v}: {e}");
        match k.as_str() {
            "--mib" => a.mib = v.parse().map_err(|e| bad(&e))?,
            "--runs" => a.runs = v.parse().map_err(|e| bad(&e))?,
            "--limit" => a.limit = Duration::from_secs_f64(v.parse().map_err(|e| bad(&e))?),
            "--only" => a.only = Some(v),
            "--memory" => a.memory = Some(v.parse().map_err(|e| bad(&e))?),
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    if a.mib == 0 || a.mib > 4096 || a.runs == 0 || a.runs > 20 {
        return Err("0 < --mib ≤ 4096, 0 < --runs ≤ 20".into());
    }
    Ok(a)
}

type Contender = (
    &'static str,
    &'static str,
    fn(Job) -> Result<Outcome, String>,
);

fn contenders() -> Vec<Contender> {
    #[cfg_attr(not(feature = "channel-peers"), allow(unused_mut))]
    let mut v: Vec<Contender> = vec![
        (
            "udp",
            "plain UDP, 1,200-byte datagrams (ceiling, unreliable)",
            udp::run,
        ),
        (
            "ours",
            "p2p-connect (signaling, ICE, DTLS 1.3, SCTP, tokio driver)",
            ours::run,
        ),
        (
            "ours-unbatched",
            "p2p-connect, batched_io off: a system call per datagram (as before GSO/GRO)",
            ours::run_unbatched,
        ),
    ];
    #[cfg(feature = "channel-peers")]
    {
        v.push((
            "str0m",
            "str0m 0.25, 24 KiB max buffered (its best here), 4 MiB socket buffers, its own loop",
            str0m_peer::run,
        ));
        v.push((
            "str0m-default",
            "str0m 0.25, default max buffered (128 KiB), 4 MiB socket buffers",
            str0m_peer::run_default,
        ));
        v.push((
            "str0m-mem",
            "str0m 0.25, 24 KiB, in memory (no sockets: both in one thread, transmits handed over)",
            str0m_peer::run_in_memory,
        ));
        v.push((
            "webrtc-4m",
            "webrtc-rs 0.21, 4 MiB socket buffers",
            webrtc_peer::run_big_buffer,
        ));
        v.push((
            "webrtc-4m-reactor",
            "webrtc-rs 0.21, 4 MiB socket buffers, dedicated reactor threads",
            webrtc_peer::run_big_buffer_reactor,
        ));
        v.push((
            "webrtc-default",
            "webrtc-rs 0.21, OS default socket buffers",
            webrtc_peer::run_default,
        ));
    }
    v
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("channel_bench: {e}");
            std::process::exit(2);
        }
    };
    if let Some(pairs) = a.memory {
        counting::count(true);
        memory(pairs);
        return;
    }
    let job = Job {
        bytes: a.mib * 1024 * 1024 / MESSAGE as u64 * MESSAGE as u64,
        limit: a.limit,
    };
    println!(
        "{} MiB as {} KiB messages, reliable ordered (UDP: 1,200-byte datagrams, \
         unreliable), {} run(s) each, MB = 10^6 bytes.\n",
        a.mib,
        MESSAGE / 1024,
        a.runs
    );
    println!(
        "| stack | best MB/s | median MB/s | runs (MB/s) | CPU s per 100 MiB (median) | note |"
    );
    println!("|---|---:|---:|---|---:|---|");
    let all = contenders();
    // `--only NAME` picks that contender if one has exactly that name,
    // else every one whose name contains it.
    let exact = all.iter().any(|(n, _, _)| a.only.as_deref() == Some(*n));
    for (name, what, f) in all {
        let picked = match a.only.as_deref() {
            None => true,
            Some(o) if exact => name == o,
            Some(o) => name.contains(o),
        };
        if !picked {
            continue;
        }
        let mut figures = Vec::new();
        let mut cpus = Vec::new();
        let mut notes = Vec::new();
        for run in 0..a.runs {
            let cpu_before = cpu_time();
            let outcome = f(job);
            // The whole run's CPU (both peers, setup and teardown included:
            // milliseconds beside the transfer's seconds), per 100 MiB moved.
            let cpu = (cpu_time() - cpu_before).as_secs_f64();
            match outcome {
                Ok(o) => {
                    let per = cpu * (100.0 * 1024.0 * 1024.0) / (o.bytes.max(1) as f64);
                    eprintln!(
                        "channel_bench: {name} run {}: {} bytes in {:?}: {:.1} MB/s, CPU {cpu:.2} s ({per:.2} s per 100 MiB, {:.2} CPUs busy){}",
                        run + 1,
                        o.bytes,
                        o.elapsed,
                        o.mbps(),
                        cpu / o.elapsed.as_secs_f64().max(1e-9),
                        if o.complete { "" } else { " (incomplete)" }
                    );
                    cpus.push(per);
                    if !o.complete {
                        notes.push(format!("run {} incomplete", run + 1));
                    }
                    figures.push(o.mbps());
                }
                Err(e) => {
                    eprintln!("channel_bench: {name} run {}: {e}", run + 1);
                    notes.push(format!("run {}: {e}", run + 1));
                }
            }
        }
        let mut sorted = figures.clone();
        sorted.sort_by(|x, y| x.total_cmp(y));
        let best = sorted.last().map_or("–".into(), |x| format!("{x:.0}"));
        let median = sorted
            .get(sorted.len() / 2)
            .map_or("–".into(), |x| format!("{x:.0}"));
        let runs: Vec<String> = figures.iter().map(|x| format!("{x:.0}")).collect();
        cpus.sort_by(|x, y| x.total_cmp(y));
        let cpu = cpus
            .get(cpus.len() / 2)
            .map_or("–".into(), |x| format!("{x:.2}"));
        notes.dedup();
        println!(
            "| {what} | {best} | {median} | {} | {cpu} | {} |",
            runs.join(", "),
            notes.join("; ")
        );
    }
}

/// `--memory N`: the peers' heap (and RSS) per idle connection end.
#[cfg(feature = "channel-peers")]
fn memory(pairs: usize) {
    println!("| stack | heap per end, KiB | RSS per end, KiB | what one end is |");
    println!("|---|---:|---:|---|");
    let kib = |b: f64| format!("{:.1}", b / 1024.0);
    type Measure = fn(usize) -> Result<(f64, f64), String>;
    let peers: [(&str, &str, Measure); 2] = [
        (
            "str0m 0.25",
            "one `Rtc` connected in memory, channel open (str0m has no driver: sockets and threads are the user's)",
            str0m_peer::memory,
        ),
        (
            "webrtc-rs 0.21.1",
            "one `PeerConnection` on loopback, channel open, with its tasks and sockets' user-space state",
            webrtc_peer::memory,
        ),
    ];
    for (name, what, f) in peers {
        match f(pairs) {
            Ok((heap, rss)) => println!("| {name} | {} | {} | {what} |", kib(heap), kib(rss)),
            Err(e) => println!("| {name} | – | – | {e} |"),
        }
    }
    println!("\n{pairs} pairs each; heap counted by a counting allocator.");
}

#[cfg(not(feature = "channel-peers"))]
fn memory(_pairs: usize) {
    println!("The peers are not built (feature `channel-peers`): nothing to measure.");
}
