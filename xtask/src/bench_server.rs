//! `cargo xtask bench stun-server`: Binding load against `p2p serve`, coturn's
//! `turnserver` and the raw floor, on loopback, with the same generator.
//!
//! It builds the release binaries, starts the three servers on free loopback
//! ports (UDP only), waits until each answers, then runs
//! `stun_load load` (`benches/src/bin/stun_load.rs`) against each in turn
//! for `--rounds` rounds, the order rotated every round, with the same
//! duration, sockets and in-flight depth. It prints a table of the median
//! answer rates with the ratios against the targets of issue 3 and writes it
//! to `target/bench-stun-server.md`. Every process it started is stopped
//! when it returns, on failure too. Logs stay in `target/bench-stun-server/`.
//!
//! Options: `--secs S` (measured seconds per run, default 5), `--warmup S`
//! (1), `--rounds N` (3), `--sockets N` (16), `--depth N` (8 in flight per
//! socket), `--io batch|single` (how the generator moves datagrams, default
//! batch), `--workers N` (p2p serve's workers and the echo's threads;
//! default one per core), `--no-build`. 16 sockets x 8 rather than a few
//! deep ones: 128 in flight either way, but with few flows SO_REUSEPORT
//! hashes them unevenly over p2p's (and coturn's) per-worker sockets, which
//! many clients would not.

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::bench_util::{
    clk_tck, command_line, cpu_ticks, ensure_coturn, loadavg, ratio, release_bins, target_dir,
    times,
};
use crate::run;

/// Issue 3's targets: ours against coturn, ours against the echo floor.
const PEER_TARGET: f64 = 1.5;
const FLOOR_TARGET: f64 = 0.9;

/// The three servers, in report order.
const TARGETS: [&str; 3] = ["p2p serve", "coturn turnserver", "UDP echo floor"];
const P2P: usize = 0;
const COTURN: usize = 1;
const ECHO: usize = 2;

#[derive(Debug, Clone)]
struct Opts {
    secs: f64,
    warmup: f64,
    rounds: usize,
    sockets: usize,
    depth: usize,
    io: String,
    workers: Option<usize>,
    build: bool,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        secs: 5.0,
        warmup: 1.0,
        rounds: 3,
        sockets: 16,
        depth: 8,
        io: "batch".into(),
        workers: None,
        build: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        let num = |v: String| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("{a}: bad number `{v}`"))
        };
        match a.as_str() {
            "--secs" => o.secs = num(val()?)?,
            "--warmup" => o.warmup = num(val()?)?,
            "--rounds" => o.rounds = num(val()?)? as usize,
            "--sockets" => o.sockets = num(val()?)? as usize,
            "--depth" => o.depth = num(val()?)? as usize,
            "--workers" => o.workers = Some(num(val()?)? as usize),
            "--io" => o.io = val()?,
            "--no-build" => o.build = false,
            other => {
                return Err(format!(
                    "bench stun-server: unknown option `{other}` (--secs, --warmup, --rounds, \
                     --sockets, --depth, --io, --workers, --no-build)"
                ))
            }
        }
    }
    if !(o.secs > 0.0 && o.secs <= 600.0 && o.warmup <= 60.0) {
        return Err("--secs in (0, 600], --warmup at most 60".into());
    }
    if !(1..=20).contains(&o.rounds) || o.workers == Some(0) {
        return Err("--rounds 1..=20, --workers at least 1".into());
    }
    Ok(o)
}

pub(crate) fn stun_server(args: &[String]) -> Result<(), String> {
    let o = parse_opts(args)?;
    let [p2p, load] = release_bins(o.build, ["p2p", "stun_load"])?;
    let mut notes = Vec::new();
    let coturn = ensure_coturn();
    if !coturn {
        notes.push(
            "coturn's `turnserver` is not installed (`apt-get install coturn`): its column is n/a."
                .into(),
        );
    }
    let work = target_dir().join("bench-stun-server");
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let machine = Machine::now(coturn);

    let ports = free_udp_ports::<3>()?;
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let per_run = o.warmup + o.secs + 1.0;
    let bound = (per_run * (o.rounds * 3) as f64 + 120.0).ceil() as u64;
    let mut procs = Procs::default();
    let mut servers: [Option<u32>; 3] = [None; 3];

    let mut cmd = Command::new(&p2p);
    cmd.args(["serve", "--listen", &addr(P2P).to_string()])
        .args(["--no-tcp", "--no-signaling", "--software", "p2p-bench"]);
    if let Some(w) = o.workers {
        cmd.args(["--workers", &w.to_string()]);
    }
    servers[P2P] = Some(procs.start("p2p-serve", &mut cmd, &work)?);
    if coturn {
        let mut cmd = Command::new("turnserver");
        cmd.args([
            "-n",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--no-tcp",
            "--stun-only",
        ])
        .args(["--listening-ip", "127.0.0.1", "--listening-port"])
        .arg(ports[COTURN].to_string())
        .arg("--userdb")
        .arg(work.join("turndb"))
        .arg("--pidfile")
        .arg(work.join("turnserver.pid"))
        .arg("--log-file")
        .arg(work.join("turnserver.log"))
        .args(["--simple-log", "--no-stdout-log"]);
        servers[COTURN] = Some(procs.start("turnserver", &mut cmd, &work)?);
    }
    let mut cmd = Command::new(&load);
    cmd.args(["echo", "--listen", &addr(ECHO).to_string()])
        .args(["--max-secs", &bound.to_string()]);
    if let Some(w) = o.workers {
        cmd.args(["--threads", &w.to_string()]);
    }
    servers[ECHO] = Some(procs.start("udp-echo", &mut cmd, &work)?);

    for (i, pid) in servers.iter().enumerate() {
        if pid.is_some() {
            run(Command::new(&load)
                .args(["probe", "--server", &addr(i).to_string()])
                .args(["--timeout-secs", "10"]))
            .map_err(|e| format!("{} does not answer: {e}{}", TARGETS[i], procs.logs()))?;
        }
    }

    let mut runs: Vec<Run> = Vec::new();
    for round in 0..o.rounds {
        for k in 0..3 {
            let i = (round + k) % 3;
            let Some(pid) = servers[i] else { continue };
            let loadavg = loadavg();
            let cpu0 = cpu_ticks(pid);
            let out = Command::new(&load)
                .args(["load", "--server", &addr(i).to_string()])
                .args([
                    "--secs",
                    &o.secs.to_string(),
                    "--warmup",
                    &o.warmup.to_string(),
                ])
                .args(["--sockets", &o.sockets.to_string()])
                .args(["--depth", &o.depth.to_string(), "--io", &o.io])
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", load.display()))?;
            let cpu1 = cpu_ticks(pid);
            let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            eprintln!("bench: round {} {}: {line}", round + 1, TARGETS[i]);
            if !out.status.success() {
                return Err(format!(
                    "stun_load against {} failed ({}): {line}{}",
                    TARGETS[i],
                    out.status,
                    procs.logs()
                ));
            }
            let fields = LoadLine::parse(&line)
                .ok_or_else(|| format!("cannot read the generator's line `{line}`"))?;
            let cpu_secs = match (cpu0, cpu1) {
                (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 / machine.clk_tck),
                _ => None,
            };
            runs.push(Run {
                target: i,
                fields,
                loadavg,
                cpu_secs,
            });
        }
    }
    let load_end = loadavg();
    procs.stop_all();
    if let Some(last) = last_line_with(&work.join("p2p-serve.log"), "received=") {
        notes.push(format!("p2p serve's counters at exit: `{last}`"));
    }
    let table = report(&o, &machine, load_end, &runs, &notes);
    print!("{table}");
    let out = target_dir().join("bench-stun-server.md");
    fs::write(&out, &table).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    eprintln!("bench: report written to {}", out.display());
    Ok(())
}

/// `N` distinct free UDP ports on 127.0.0.1 (held together while chosen).
fn free_udp_ports<const N: usize>() -> Result<[u16; N], String> {
    let socks = (0..N)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    let mut ports = [0u16; N];
    for (p, s) in ports.iter_mut().zip(&socks) {
        *p = s
            .local_addr()
            .map_err(|e| format!("cannot find a free port: {e}"))?
            .port();
    }
    Ok(ports)
}

/// The processes this task started; stopped on drop (SIGTERM, up to 3 s,
/// then SIGKILL), so that a failure leaves nothing running.
#[derive(Default)]
struct Procs {
    children: Vec<(String, Child, PathBuf)>,
}

impl Procs {
    /// Start `cmd` with its output in `work/<name>.log`; returns its PID.
    fn start(&mut self, name: &str, cmd: &mut Command, work: &Path) -> Result<u32, String> {
        let log_path = work.join(format!("{name}.log"));
        let log =
            fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        eprintln!("$ {cmd:?} > {}", log_path.display());
        let child = cmd
            .current_dir(work)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let pid = child.id();
        self.children.push((name.to_owned(), child, log_path));
        Ok(pid)
    }

    /// The tail of every log, for an error message.
    fn logs(&self) -> String {
        let mut s = String::new();
        for (name, _, path) in &self.children {
            let text = fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            let _ = write!(s, "\n--- {name} ({})\n{}", path.display(), tail.join("\n"));
        }
        s
    }

    fn stop_all(&mut self) {
        for (_, child, _) in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for (name, child, _) in &mut self.children {
            let t0 = Instant::now();
            while matches!(child.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(3) {
                sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("bench: {name} ignored SIGTERM; killing it");
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn last_line_with(path: &Path, needle: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .rev()
        .find(|l| l.contains(needle))
        .map(|l| l.trim().to_owned())
}

/// What the report says about the machine.
struct Machine {
    date: String,
    cpu: String,
    cores: usize,
    kernel: String,
    load_start: Option<f64>,
    coturn: Option<String>,
    clk_tck: f64,
}

impl Machine {
    fn now(coturn: bool) -> Machine {
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        Machine {
            date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
                .unwrap_or_else(|| "unknown date".into()),
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            load_start: loadavg(),
            coturn: coturn
                .then(|| command_line("turnserver", &["--version"]).unwrap_or_else(|| "?".into())),
            clk_tck: clk_tck(),
        }
    }
}

/// The fields of `stun_load load`'s line that the report uses.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LoadLine {
    rate: f64,
    answered_all: u64,
    lost: u64,
    invalid: u64,
    mapped_ok: u64,
}

impl LoadLine {
    fn parse(line: &str) -> Option<LoadLine> {
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
        };
        Some(LoadLine {
            rate: field("rate")?.parse().ok()?,
            answered_all: field("answered_all")?.parse().ok()?,
            lost: field("lost")?.parse().ok()?,
            invalid: field("invalid")?.parse().ok()?,
            mapped_ok: field("mapped_ok")?.parse().ok()?,
        })
    }
}

/// One generator run against one server.
struct Run {
    target: usize,
    fields: LoadLine,
    loadavg: Option<f64>,
    /// The server's CPU time during the run (warm-up included).
    cpu_secs: Option<f64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The per-server summary of its runs.
struct Summary {
    median: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    /// Median server CPU microseconds per answer.
    cpu_us: Option<f64>,
    lost: u64,
    invalid: u64,
    mapped_ok: u64,
    runs: usize,
}

fn summarize(runs: &[Run], target: usize) -> Summary {
    let mine: Vec<&Run> = runs.iter().filter(|r| r.target == target).collect();
    let rates: Vec<f64> = mine.iter().map(|r| r.fields.rate).collect();
    let cpu: Vec<f64> = mine
        .iter()
        .filter_map(|r| {
            let c = r.cpu_secs?;
            (r.fields.answered_all > 0).then(|| c * 1e6 / r.fields.answered_all as f64)
        })
        .collect();
    Summary {
        median: median(rates.clone()),
        min: rates.iter().copied().reduce(f64::min),
        max: rates.iter().copied().reduce(f64::max),
        cpu_us: median(cpu),
        lost: mine.iter().map(|r| r.fields.lost).sum(),
        invalid: mine.iter().map(|r| r.fields.invalid).sum(),
        mapped_ok: mine.iter().map(|r| r.fields.mapped_ok).max().unwrap_or(0),
        runs: mine.len(),
    }
}

fn kps(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{:.1}k", v / 1e3))
}

fn report(o: &Opts, m: &Machine, load_end: Option<f64>, runs: &[Run], notes: &[String]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "## STUN server benchmark (p2p serve vs coturn vs UDP echo floor)\n"
    );
    let _ = writeln!(
        t,
        "{}; {}, {} vCPU(s), Linux {}; load average {} at start, {} at end; coturn {}.\n",
        m.date,
        m.cpu,
        m.cores,
        m.kernel,
        m.load_start.map_or("?".into(), |l| format!("{l:.2}")),
        load_end.map_or("?".into(), |l| format!("{l:.2}")),
        m.coturn.as_deref().unwrap_or("not installed"),
    );
    let _ = writeln!(
        t,
        "Generator `stun_load load`: {} socket(s) x {} Binding requests in flight, io={}, \
         {}s warm-up + {}s measured per run, {} round(s), servers in rotated order; \
         only Binding success responses with a transaction id in flight are counted. \
         Workers: {} (p2p serve's UDP workers, the echo's threads); coturn with its defaults.\n",
        o.sockets,
        o.depth,
        o.io,
        o.warmup,
        o.secs,
        o.rounds,
        o.workers
            .map_or_else(|| format!("one per core ({})", m.cores), |w| w.to_string()),
    );
    let _ = writeln!(
        t,
        "| server | answers/s (median) | min | max | server CPU us/answer | lost | invalid | mapped ok (sockets) |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let s: Vec<Summary> = (0..3).map(|i| summarize(runs, i)).collect();
    for (i, name) in TARGETS.iter().enumerate() {
        let r = &s[i];
        if r.runs == 0 {
            let _ = writeln!(t, "| {name} | n/a | n/a | n/a | n/a | n/a | n/a | n/a |");
            continue;
        }
        let _ = writeln!(
            t,
            "| {name} | {} | {} | {} | {} | {} | {} | {}/{} |",
            kps(r.median),
            kps(r.min),
            kps(r.max),
            r.cpu_us.map_or("n/a".into(), |c| format!("{c:.2}")),
            r.lost,
            r.invalid,
            r.mapped_ok,
            o.sockets,
        );
    }
    let vs_coturn = ratio(s[P2P].median, s[COTURN].median);
    let vs_floor = ratio(s[P2P].median, s[ECHO].median);
    let coturn_floor = ratio(s[COTURN].median, s[ECHO].median);
    let _ = writeln!(t);
    let _ = writeln!(t, "| ratio | value | target |");
    let _ = writeln!(t, "|---|---:|---:|");
    let _ = writeln!(
        t,
        "| p2p / coturn | {} | >= {PEER_TARGET:.2}x |",
        times(vs_coturn)
    );
    let _ = writeln!(
        t,
        "| p2p / echo floor | {} | >= {FLOOR_TARGET:.2}x |",
        times(vs_floor)
    );
    let _ = writeln!(
        t,
        "| coturn / echo floor | {} | (about 0.57x expected) |",
        times(coturn_floor)
    );
    // The same comparison by server CPU per answer (less sensitive to how
    // the scheduler shares a busy machine): higher is better for p2p.
    let _ = writeln!(
        t,
        "| CPU per answer: coturn / p2p | {} | (secondary) |",
        times(ratio(s[COTURN].cpu_us, s[P2P].cpu_us))
    );
    let _ = writeln!(
        t,
        "| CPU per answer: echo floor / p2p | {} | (secondary) |",
        times(ratio(s[ECHO].cpu_us, s[P2P].cpu_us))
    );
    let _ = writeln!(t);
    let verdict = |r: Option<f64>, target: f64, what: &str| match r {
        Some(r) if r >= target => format!("- p2p / {what}: {r:.2}x: met (target {target:.2}x)"),
        Some(r) => format!("- p2p / {what}: {r:.2}x: MISSED (target {target:.2}x)"),
        None => format!("- p2p / {what}: no figure"),
    };
    let _ = writeln!(t, "{}", verdict(vs_coturn, PEER_TARGET, "coturn"));
    let _ = writeln!(t, "{}", verdict(vs_floor, FLOOR_TARGET, "echo floor"));
    if let Some(r) = vs_floor.filter(|r| *r > 1.0) {
        let _ = writeln!(
            t,
            "- p2p beats the one-datagram-per-syscall floor by {:.0}% (batched I/O)",
            (r - 1.0) * 100.0
        );
    }
    let _ = writeln!(
        t,
        "\nRuns (answers/s, 1-min load average before the run):\n"
    );
    for r in runs {
        let _ = writeln!(
            t,
            "- {}: {} (load {})",
            TARGETS[r.target],
            kps(Some(r.fields.rate)),
            r.loadavg.map_or("?".into(), |l| format!("{l:.2}")),
        );
    }
    for n in notes {
        let _ = writeln!(t, "\n**Note:** {n}");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "stun_load: server=127.0.0.1:4000 io=batch sockets=4 depth=32 secs=5.000 \
        answered=2500000 rate=500000 sent=3000100 answered_all=3000000 lost=0 invalid=2 mapped_ok=4";

    #[test]
    fn reads_the_generator_line() {
        let l = LoadLine::parse(LINE).unwrap();
        assert_eq!(
            l,
            LoadLine {
                rate: 500000.0,
                answered_all: 3_000_000,
                lost: 0,
                invalid: 2,
                mapped_ok: 4
            }
        );
        assert_eq!(LoadLine::parse("stun_load: no valid answer"), None);
    }

    #[test]
    fn options_have_defaults_and_bounds() {
        let o = parse_opts(&[]).unwrap();
        assert_eq!((o.secs, o.rounds, o.sockets, o.depth), (5.0, 3, 16, 8));
        let args: Vec<String> = ["--secs", "2", "--rounds", "1", "--no-build"]
            .map(String::from)
            .to_vec();
        let o = parse_opts(&args).unwrap();
        assert_eq!((o.secs, o.rounds, o.build), (2.0, 1, false));
        assert!(parse_opts(&["--secs".into(), "0".into()]).is_err());
        assert!(parse_opts(&["--bogus".into()]).is_err());
    }

    #[test]
    fn report_gives_ratios_and_na_without_coturn() {
        let o = parse_opts(&[]).unwrap();
        let m = Machine {
            date: "d".into(),
            cpu: "c".into(),
            cores: 2,
            kernel: "k".into(),
            load_start: Some(1.0),
            coturn: None,
            clk_tck: 100.0,
        };
        let run = |target, rate| Run {
            target,
            fields: LoadLine {
                rate,
                answered_all: 1000,
                lost: 0,
                invalid: 0,
                mapped_ok: 4,
            },
            loadavg: None,
            cpu_secs: Some(0.001),
        };
        let runs = [
            run(P2P, 600e3),
            run(P2P, 500e3),
            run(P2P, 700e3),
            run(ECHO, 500e3),
        ];
        let r = report(&o, &m, None, &runs, &["n".into()]);
        assert!(r.contains("| p2p serve | 600.0k | 500.0k | 700.0k | 1.00 | 0 | 0 | 4/16 |"));
        assert!(r.contains("| coturn turnserver | n/a |"));
        assert!(r.contains("| p2p / echo floor | 1.20x | >= 0.90x |"));
        assert!(r.contains("- p2p / coturn: no figure"));
        assert!(r.contains("- p2p / echo floor: 1.20x: met"));
        assert!(r.contains("by 20%"));
        assert!(r.contains("| CPU per answer: echo floor / p2p | 1.00x | (secondary) |"));
        assert!(r.contains("| CPU per answer: coturn / p2p | n/a | (secondary) |"));
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
