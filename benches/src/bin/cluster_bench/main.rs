//! `cargo xtask bench cluster`: signaling through two `p2p serve` nodes on
//! one real `redis-server` (loopback), in one run: pairs of peers on the
//! same node, then on different nodes. Each sender sends its messages back
//! to back (candidates carrying their send time); the table gives
//! messages/s, p50/p99 latency and, for the cross-node run, Redis commands
//! per relayed message (Redis's own `total_commands_processed`, heartbeats
//! of both nodes included).
//!
//! Flags (`--help` lists them): `--pairs N` (20), `--messages M` per
//! sender back to back (2000), `--paced-messages P` per sender in the
//! paced latency runs (1000: each run is 10 s, so that its p99 is not the
//! third-slowest of 300 ticks), `--repeat R` (3: every figure is the
//! median of R runs, each run's given too; the 1-minute load average
//! before and after is printed, the machine may be shared), `--window W`
//! (128: a sender is at most W messages ahead of what its receiver got),
//! `--both-ways` (half the cross-node pairs send from the other node, so
//! that each node's store sends and receives), `--probe-seconds S` (5:
//! first, how late a thread sleeping 1 ms wakes on this machine, the
//! floor under any p99 here). The nodes keep the default queue limits
//! (256 messages, 1 MiB per client): the window keeps a receiver that
//! the loaded machine slows (the clients run in this process too) from
//! being closed as a slow reader, on one node as across nodes.
//!
//! Paced senders tick every 10 ms, all 20 in the same millisecond (a
//! burst, as many peers trickling at once make); a tick missed while the
//! machine stalled is skipped, not caught up in a second burst.
//!
//! `--hops` stamps each paced message at every hop of its path (the
//! server's `p2p_hop` trace events, see `hops.rs`) and prints, per run,
//! each hop's p50/p99 and where the slowest 1 % spent their time.
//!
//! Besides the rates it gives the CPU time of each back-to-back run per
//! message (this process: nodes and clients; and `redis-server`): what a
//! message costs, which a loaded machine does not skew as it skews rates.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2p_signaling::{IceCandidate, ServerMsg, SignalingClient};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

mod hops;

const HELP: &str = "cluster_bench: signaling through two p2p serve nodes on one redis-server (loopback)

  --pairs N             pairs of peers (20)
  --messages M          messages per sender back to back (2000)
  --paced-messages P    messages per sender in the paced latency runs, one every 10 ms (1000)
  --repeat R            runs; every figure is their median (3)
  --window W            most messages a sender is ahead of its receiver (128)
  --both-ways           half the cross-node pairs send the other way (each node sends and receives)
  --probe-seconds S     first measure the machine's own wake-up tail for S s (5; 0: not)
  --hops                where each paced message's time goes, hop by hop

Needs redis-server on PATH. Through cargo xtask bench cluster, the table goes to target/bench-cluster.md.";

struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn start_redis() -> Result<Redis, String> {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server: {e} (apt-get install redis-server)"))?;
    let r = Redis(child, port);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(r);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("redis-server did not listen".into())
}

fn redis_commands(r: &Redis) -> u64 {
    let out = Command::new("redis-cli")
        .args(["-p", &r.1.to_string(), "INFO", "stats"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn node(redis: &Redis, id: &str) -> Result<String, String> {
    let toml = format!(
        r#"
[stun]
listen = ["127.0.0.1:0"]
workers = 1
[signaling]
listen = "127.0.0.1:0"
page = false
rate_per_second = 1000000
burst = 1000000
max_connections_per_ip = 1000
[cluster]
redis = "redis://127.0.0.1:{}/"
node_id = "{id}"
"#,
        redis.1
    );
    let config = p2p_server::Config::from_toml_str(&toml).map_err(|e| e.to_string())?;
    let server = p2p_server::Server::bind(&config)
        .await
        .map_err(|e| e.to_string())?;
    let sig = server.local_addrs().signaling.ok_or("no signaling")?;
    tokio::spawn(server.run(std::future::pending()));
    Ok(format!("ws://{sig}/ws"))
}

struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
    messages: u64,
    /// CPU seconds of this process and of redis-server over the run.
    cpu: (f64, f64),
    /// Where the time went (`--hops`, paced runs).
    hops: Option<hops::Breakdown>,
}

/// User + system CPU seconds of process `pid` (`self` for this one), from
/// /proc (Linux; 0 elsewhere).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15 (11 and 12 after the name).
    let ticks = f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0);
    ticks / 100.0
}

/// What a run does.
#[derive(Clone, Copy)]
struct Load {
    pairs: usize,
    messages: usize,
    /// One message per sender every `pace` (latency), or back to back
    /// (throughput).
    pace: Option<Duration>,
    /// Most messages a sender is ahead of its receiver.
    window: usize,
    /// Stamp every hop (`--hops`; paced runs only).
    hops: bool,
    /// Every other pair sends from the other node (`--both-ways`).
    both_ways: bool,
}

async fn run(a: &str, b: &str, tag: &str, load: Load, redis_pid: &str) -> Result<Run, String> {
    let Load {
        pairs,
        messages,
        pace,
        window,
        hops,
        both_ways,
    } = load;
    let hops = hops && pace.is_some();
    let mut ready = Vec::new();
    for i in 0..pairs {
        let room = format!("{tag}-{i}");
        let (a, b) = if both_ways && i % 2 == 1 {
            (b, a)
        } else {
            (a, b)
        };
        let mut rx = SignalingClient::connect(a)
            .await
            .map_err(|e| e.to_string())?;
        rx.join(&room, None, None)
            .await
            .map_err(|e| e.to_string())?;
        let mut tx = SignalingClient::connect(b)
            .await
            .map_err(|e| e.to_string())?;
        let peers = tx
            .join(&room, None, None)
            .await
            .map_err(|e| e.to_string())?;
        if peers.len() != 1 {
            return Err(format!("{room}: {} peers", peers.len()));
        }
        ready.push((rx, tx));
    }
    if hops {
        hops::clear();
    }
    let started = Instant::now();
    let cpu0 = (cpu_seconds("self"), cpu_seconds(redis_pid));
    let mut tasks = JoinSet::new();
    for (mut rx, mut tx) in ready {
        let to = rx.peer_id().to_owned();
        let ahead = Arc::new(Semaphore::new(window));
        let got = ahead.clone();
        tasks.spawn(async move {
            // A tick missed while the machine stalled is skipped, not
            // caught up in a burst.
            let mut tick = pace.map(|p| {
                let mut t = tokio::time::interval(p);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                t
            });
            for _ in 0..messages {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                match ahead.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                }
                let mut c = IceCandidate::new("candidate:1 1 udp 1 127.0.0.1 9 typ host");
                c.username_fragment = Some(hops::now_ns().to_string());
                if tx.send_candidate(&to, c).await.is_err() {
                    break;
                }
            }
            // Keep the sender until its messages are through.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(tx);
            Vec::new()
        });
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(messages);
            while lat.len() < messages {
                match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
                    Ok(Ok(Some(ServerMsg::Candidate { candidate, .. }))) => {
                        let sent: u64 = candidate
                            .username_fragment
                            .and_then(|u| u.parse().ok())
                            .unwrap_or(0);
                        let now = hops::now_ns();
                        if hops {
                            hops::stamp("client", sent, now);
                        }
                        lat.push(Duration::from_nanos(now.saturating_sub(sent)));
                        got.add_permits(1);
                    }
                    Ok(Ok(Some(_))) => {}
                    other => {
                        eprintln!("receiver: {} then {other:?}", lat.len());
                        break;
                    }
                }
            }
            lat
        });
    }
    let mut all = Vec::new();
    let mut receivers_done = 0;
    while let Some(r) = tasks.join_next().await {
        let v = r.map_err(|e| e.to_string())?;
        if !v.is_empty() {
            all.extend(v);
            receivers_done += 1;
            if receivers_done == pairs {
                break;
            }
        }
    }
    let took = started.elapsed();
    let cpu = (
        cpu_seconds("self") - cpu0.0,
        cpu_seconds(redis_pid) - cpu0.1,
    );
    tasks.abort_all();
    if all.len() < pairs * messages {
        return Err(format!(
            "{tag}: {} of {} messages arrived",
            all.len(),
            pairs * messages
        ));
    }
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Ok(Run {
        rate: all.len() as f64 / took.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        messages: all.len() as u64,
        cpu,
        hops: hops.then(hops::take),
    })
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The figures of one repetition.
struct Round {
    same: Run,
    cross: Run,
    same_l: Run,
    cross_l: Run,
    /// One sender every 10 ms: the path's own latency, without queueing.
    same_1: Run,
    cross_1: Run,
    commands_per_message: f64,
}

/// The machine's own wake-up tail, the floor under every p99 here: two
/// threads (one per CPU of this machine) each sleep 1 ms again and again
/// for `secs`; returns how late they woke, sorted (ns). Nothing else of
/// the bench runs meanwhile.
fn wake_lateness(secs: u64) -> Vec<u64> {
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(secs);
                let mut late = Vec::new();
                while Instant::now() < end {
                    let t = Instant::now();
                    std::thread::sleep(Duration::from_millis(1));
                    let over = t.elapsed().saturating_sub(Duration::from_millis(1));
                    late.push(u64::try_from(over.as_nanos()).unwrap_or(u64::MAX));
                }
                late
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect();
    all.sort_unstable();
    all
}

/// The 1-minute load average (Linux), or NaN.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Prints one run's per-hop table.
fn print_hops(title: &str, b: &hops::Breakdown) {
    let us = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1e6);
    println!(
        "\n{title}: {} messages, end to end p50 {} us, p99 {} us; store round trips with publishes: {} (p50 {} us, p99 {} us)\n",
        b.messages,
        us(b.total.0),
        us(b.total.1),
        b.rtt.2,
        us(b.rtt.0),
        us(b.rtt.1),
    );
    println!("| hop | p50 us | p99 us | mean over the slowest 1 % us |");
    println!("|---|---:|---:|---:|");
    for (hop, p50, p99, tail) in &b.rows {
        println!("| {hop} | {} | {} | {} |", us(*p50), us(*p99), us(*tail));
    }
}

fn main() -> Result<(), String> {
    let pairs = arg("--pairs", 20);
    let messages = arg("--messages", 2000);
    let repeat = arg("--repeat", 3).max(1);
    let window = arg("--window", 128).max(1);
    let paced_messages = arg("--paced-messages", 1000).max(1);
    let with_hops = std::env::args().any(|a| a == "--hops");
    let both_ways = std::env::args().any(|a| a == "--both-ways");
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("{HELP}");
        return Ok(());
    }
    hops::epoch();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(tracing_subscriber::EnvFilter::from_default_env());
    let hop_layer = with_hops.then(|| {
        hops::HopLayer.with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target() == "p2p_hop"
        }))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(hop_layer)
        .try_init();
    let probe = arg("--probe-seconds", 5) as u64;
    let lateness = (probe > 0).then(|| wake_lateness(probe));
    let redis = start_redis()?;
    let redis_pid = redis.0.id().to_string();
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let load_before = load_average();
    let rounds = rt.block_on(async {
        let n0 = node(&redis, "bench-0").await?;
        let n1 = node(&redis, "bench-1").await?;
        // Let both nodes beat once.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut rounds = Vec::new();
        let rp = redis_pid.as_str();
        for r in 0..repeat {
            let tag = |t: &str| format!("{t}{r}");
            let flood = Load {
                pairs,
                messages,
                pace: None,
                window,
                hops: with_hops,
                both_ways,
            };
            let same = run(&n0, &n0, &tag("same"), flood, rp).await?;
            let before = redis_commands(&redis);
            let cross = run(&n0, &n1, &tag("cross"), flood, rp).await?;
            let after = redis_commands(&redis);
            // Latency at a moderate load: each sender every 10 ms.
            let paced = Load {
                messages: paced_messages,
                pace: Some(Duration::from_millis(10)),
                ..flood
            };
            let one = Load { pairs: 1, ..paced };
            let same_l = run(&n0, &n0, &tag("same-l"), paced, rp).await?;
            let cross_l = run(&n0, &n1, &tag("cross-l"), paced, rp).await?;
            let same_1 = run(&n0, &n0, &tag("same-1"), one, rp).await?;
            let cross_1 = run(&n0, &n1, &tag("cross-1"), one, rp).await?;
            let commands_per_message = after.saturating_sub(before) as f64 / cross.messages as f64;
            rounds.push(Round {
                same,
                cross,
                same_l,
                cross_l,
                same_1,
                cross_1,
                commands_per_message,
            });
        }
        Ok::<Vec<Round>, String>(rounds)
    })?;
    let load_after = load_average();
    let ms = |d: f64| format!("{:.2}", d * 1e3);
    let med = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    let each = |f: &dyn Fn(&Round) -> f64, scale: f64, digits: usize| {
        rounds
            .iter()
            .map(|r| format!("{:.*}", digits, f(r) * scale))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    println!(
        "{pairs} pairs x {messages} messages (candidates, window {window}), two nodes, one redis-server, loopback; \
         medians of {repeat} runs; load average (1 min) {load_before:.2} before, {load_after:.2} after.\n"
    );
    if let Some(late) = lateness.as_ref().filter(|l| !l.is_empty()) {
        let at = |q: f64| late[((late.len() as f64 * q) as usize).min(late.len() - 1)] / 1000;
        let over = late.iter().filter(|&&l| l > 2_000_000).count();
        println!(
            "The machine's own tail, before the runs: a thread sleeping 1 ms (two at once, {probe} s, {} wake-ups) woke late by p50 {} us, p99 {} us, p99.9 {} us, at most {} us; {:.1} in 1000 wake-ups were over 2 ms late. A cross-node message needs more threads woken than a same-node one (redis-server, the other node's worker).\n",
            late.len(),
            at(0.5),
            at(0.99),
            at(0.999),
            late[late.len() - 1] / 1000,
            over as f64 * 1000.0 / late.len() as f64,
        );
    }
    println!(
        "| peers | messages/s (back to back) | p50 ms | p99 ms (each sender every 10 ms, {pairs} senders) | Redis commands per message |"
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| same node | {:.0} | {} | {} | 0 |",
        med(&|r| r.same.rate),
        ms(med(&|r| r.same_l.p50.as_secs_f64())),
        ms(med(&|r| r.same_l.p99.as_secs_f64())),
    );
    println!(
        "| different nodes | {:.0} | {} | {} | {:.2} |",
        med(&|r| r.cross.rate),
        ms(med(&|r| r.cross_l.p50.as_secs_f64())),
        ms(med(&|r| r.cross_l.p99.as_secs_f64())),
        med(&|r| r.commands_per_message),
    );
    let ratio = |r: &Round| r.cross.rate / r.same.rate;
    let added = |r: &Round| r.cross_l.p99.as_secs_f64() - r.same_l.p99.as_secs_f64();
    let added50 = |r: &Round| r.cross_l.p50.as_secs_f64() - r.same_l.p50.as_secs_f64();
    println!(
        "\ncross/same throughput: {:.2} (runs: {}); added p50: {} ms (runs: {}); added p99: {} ms (runs: {}).",
        med(&ratio),
        each(&ratio, 1.0, 2),
        ms(med(&added50)),
        each(&added50, 1e3, 2),
        ms(med(&added)),
        each(&added, 1e3, 2),
    );
    println!(
        "One sender every 10 ms (no queueing): same p50/p99 {}/{} ms, cross {}/{} ms (medians).",
        ms(med(&|r| r.same_1.p50.as_secs_f64())),
        ms(med(&|r| r.same_1.p99.as_secs_f64())),
        ms(med(&|r| r.cross_1.p50.as_secs_f64())),
        ms(med(&|r| r.cross_1.p99.as_secs_f64())),
    );
    println!(
        "Back to back, p50/p99 are queueing: same {}/{} ms, cross {}/{} ms (medians).",
        ms(med(&|r| r.same.p50.as_secs_f64())),
        ms(med(&|r| r.same.p99.as_secs_f64())),
        ms(med(&|r| r.cross.p50.as_secs_f64())),
        ms(med(&|r| r.cross.p99.as_secs_f64())),
    );
    let us = |cpu: f64, r: &Run| cpu * 1e6 / r.messages as f64;
    println!(
        "CPU per message, back to back (medians): same node {:.1} us; different nodes {:.1} us in this process + {:.1} us in redis-server (runs: {}).",
        med(&|r| us(r.same.cpu.0, &r.same)),
        med(&|r| us(r.cross.cpu.0, &r.cross)),
        med(&|r| us(r.cross.cpu.1, &r.cross)),
        rounds
            .iter()
            .map(|r| format!(
                "{:.1} / {:.1}+{:.1}",
                us(r.same.cpu.0, &r.same),
                us(r.cross.cpu.0, &r.cross),
                us(r.cross.cpu.1, &r.cross)
            ))
            .collect::<Vec<_>>()
            .join(", "),
    );
    if with_hops {
        println!(
            "\nWhere the time goes (--hops), each sender every 10 ms: per hop, the time since the hop before it."
        );
        for (i, r) in rounds.iter().enumerate() {
            for (name, run) in [
                ("same node", &r.same_l),
                ("different nodes", &r.cross_l),
                ("same node, one sender", &r.same_1),
                ("different nodes, one sender", &r.cross_1),
            ] {
                if let Some(b) = &run.hops {
                    print_hops(&format!("run {}, {name}", i + 1), b);
                }
            }
        }
    }
    // The servers run on the runtime: leave without waiting for them.
    rt.shutdown_background();
    Ok(())
}
