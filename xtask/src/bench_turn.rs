//! `cargo xtask bench turn`: the same TURN load against `p2p serve` and
//! coturn's `turnserver`, one server at a time, on loopback, with the load
//! generator `turn_load` (benches/src/bin/turn_load.rs).
//!
//! Per server: relayed packets/s and Mbit/s of ChannelData with 100- and
//! 1200-byte payloads (`flood`: client to peer only, as fast as the
//! generator sends; `echo`: the peer sends everything back, a window of 32
//! in flight per client, both directions counted), then on a fresh server
//! the time to create 10 000 allocations and the resident memory (VmRSS of
//! /proc/PID/status) before and after. With `perf` and root, the calls to
//! malloc/calloc/realloc per relayed packet are counted with uprobes on
//! libc (the probes are removed afterwards). Prints the side-by-side table
//! and writes it to `target/bench-turn.md`. Everything started is stopped,
//! on failure too.
//!
//! Flags: `--secs S` (per relay run, default 5), `--allocations N` (default
//! 10000), `--clients N` (default 8), `--io gso|batch|single` and `--burst
//! N` (how the generator sends: default UDP GSO trains of 8 per client; see
//! turn_load), `--no-perf`, `--no-build`.

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::bench_util::{
    clk_tck, command_line, cpu_ticks, ensure_coturn, is_root, loadavg, ratio, release_bins,
    target_dir, times,
};
use crate::have;

/// Targets of issue 4.
const PPS_TARGET: f64 = 1.5;
const MEMORY_TARGET: f64 = 0.25;

const USER: &str = "alice";
const PASSWORD: &str = "secret";
const REALM: &str = "example.org";
const OURS_PORT: u16 = 34930;
const COTURN_PORT: u16 = 34940;
/// Relay ports of both servers (run one after the other), below Linux's
/// ephemeral range so that no client socket takes one.
const RELAY_PORTS: (u16, u16) = (20000, 31999);
const PAYLOADS: [usize; 2] = [100, 1200];
const MODES: [&str; 2] = ["flood", "echo"];
/// The uprobe group used to count allocator calls.
const PROBE_GROUP: &str = "p2pbenchturn";

struct Opts {
    secs: f64,
    allocations: usize,
    clients: usize,
    /// Passed to turn_load: `--io` and `--burst`.
    io: String,
    burst: usize,
    perf: bool,
    build: bool,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        secs: 5.0,
        allocations: 10_000,
        clients: 8,
        io: "gso".to_owned(),
        burst: 8,
        perf: true,
        build: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--secs" => o.secs = value()?.parse().map_err(|_| "--secs: a number")?,
            "--allocations" => {
                o.allocations = value()?.parse().map_err(|_| "--allocations: a count")?
            }
            "--clients" => o.clients = value()?.parse().map_err(|_| "--clients: a count")?,
            "--io" => o.io = value()?.clone(),
            "--burst" => o.burst = value()?.parse().map_err(|_| "--burst: a count")?,
            "--no-perf" => o.perf = false,
            "--no-build" => o.build = false,
            other => return Err(format!("bench turn: unknown flag {other}")),
        }
    }
    if !(0.5..=120.0).contains(&o.secs) || !(1..=60_000).contains(&o.allocations) {
        return Err("bench turn: --secs 0.5-120, --allocations 1-60000".into());
    }
    Ok(o)
}

/// Which server.
#[derive(Clone, Copy, PartialEq)]
enum Which {
    Ours,
    Coturn,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Ours => "p2p serve",
            Which::Coturn => "coturn",
        }
    }
    fn port(self) -> u16 {
        match self {
            Which::Ours => OURS_PORT,
            Which::Coturn => COTURN_PORT,
        }
    }
}

/// What was measured of one server; `None` = not measured.
#[derive(Default, Clone)]
struct Figures {
    /// (payload, mode) → what was measured.
    relay: Vec<((usize, &'static str), Relay)>,
    alloc_secs: Option<f64>,
    allocated: Option<usize>,
    rss_before_kib: Option<u64>,
    rss_after_kib: Option<u64>,
    /// Allocator calls per relayed packet (perf uprobes).
    mallocs_per_packet: Option<f64>,
    notes: Vec<String>,
}

/// One relay run.
#[derive(Clone, Copy)]
struct Relay {
    /// Relayed packets per second inside the window.
    pps: f64,
    /// Payload Mbit/s inside the window.
    mbps: f64,
    /// Relayed packets (whole run) per second of the server's CPU time
    /// (user + system, all threads): the figure that does not depend on
    /// how much of the shared machine the server got.
    per_cpu_sec: Option<f64>,
    /// The server's CPU time over the run's wall time (1.0 = one core).
    cores: Option<f64>,
}

impl Figures {
    fn relay(&self, payload: usize, mode: &str) -> Option<Relay> {
        self.relay
            .iter()
            .find(|((p, m), _)| *p == payload && *m == mode)
            .map(|(_, v)| *v)
    }
    fn per_allocation_kib(&self) -> Option<f64> {
        let (b, a, n) = (self.rss_before_kib?, self.rss_after_kib?, self.allocated?);
        (n > 0).then(|| (a.saturating_sub(b)) as f64 / n as f64)
    }
}

/// Children started here: stopped (SIGTERM, then SIGKILL after 3 s) when
/// dropped, whatever happened.
#[derive(Default)]
struct Started(Vec<(String, Child)>);

impl Started {
    fn stop_all(&mut self) {
        for (_, mut c) in self.0.drain(..) {
            stop(&mut c);
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn stop(c: &mut Child) {
    if let Ok(Some(_)) = c.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .arg(c.id().to_string())
        .stderr(Stdio::null())
        .status();
    for _ in 0..30 {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Uprobes on libc's allocator, removed when dropped.
struct Probes {
    events: String,
}

impl Probes {
    fn add() -> Result<Probes, String> {
        let libc = libc_path().ok_or("libc.so.6 not found")?;
        // Leftovers of an interrupted run.
        let _ = Command::new("perf")
            .args(["probe", "-q", "-d", &format!("{PROBE_GROUP}:*")])
            .stderr(Stdio::null())
            .status();
        let mut events = Vec::new();
        for f in ["malloc", "calloc", "realloc"] {
            let ev = format!("{PROBE_GROUP}:{f}");
            let out = Command::new("perf")
                .args(["probe", "-q", "-x"])
                .arg(&libc)
                .arg("-a")
                .arg(format!("{ev}={f}"))
                .output()
                .map_err(|e| format!("perf probe: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "perf probe {f}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            events.push(ev);
        }
        Ok(Probes {
            events: events.join(","),
        })
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        let _ = Command::new("perf")
            .args(["probe", "-q", "-d", &format!("{PROBE_GROUP}:*")])
            .stderr(Stdio::null())
            .status();
    }
}

fn libc_path() -> Option<PathBuf> {
    [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/aarch64-linux-gnu/libc.so.6",
        "/usr/lib64/libc.so.6",
        "/lib64/libc.so.6",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

pub(crate) fn turn(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let coturn = ensure_coturn();
    let [p2p, load] = release_bins(o.build, ["p2p", "turn_load"])?;
    let work = target_dir().join("bench-turn");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;

    let probes = if !o.perf {
        None
    } else if !have("perf") || !is_root() {
        eprintln!("bench turn: no perf or not root: allocator calls per packet not counted");
        None
    } else {
        match Probes::add() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!(
                    "bench turn: perf uprobes unavailable ({e}): allocator calls not counted"
                );
                None
            }
        }
    };

    let load_before = load_text();
    let env = Env {
        p2p: &p2p,
        load: &load,
        work: &work,
        probes: probes.as_ref(),
    };
    let ours = measure(&env, &o, Which::Ours)?;
    let theirs = if coturn {
        Some(measure(&env, &o, Which::Coturn)?)
    } else {
        eprintln!("bench turn: coturn not installed (apt-get install coturn): its column is empty");
        None
    };
    drop(probes);
    let load_after = load_text();

    let machine = format!(
        "{}, {} vCPU(s), load average {} before and {} after the run; {} UTC",
        cpu_model(),
        thread::available_parallelism().map_or(0, |n| n.get()),
        load_before,
        load_after,
        command_line("date", &["-u", "+%Y-%m-%d %H:%M"]).unwrap_or_default(),
    );
    let table = report(&o, &ours, theirs.as_ref(), &machine);
    print!("{table}");
    let out = target_dir().join("bench-turn.md");
    fs::write(&out, &table).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    eprintln!("bench turn: report written to {}", out.display());
    Ok(())
}

struct Env<'a> {
    p2p: &'a Path,
    load: &'a Path,
    work: &'a Path,
    probes: Option<&'a Probes>,
}

/// Start one server: `ulimit -n` raised to the hard limit (10 000 relay
/// sockets), output to `work/NAME.log`.
fn start(env: &Env<'_>, which: Which, tag: &str, started: &mut Started) -> Result<u32, String> {
    let port = which.port().to_string();
    let (lo, hi) = (RELAY_PORTS.0.to_string(), RELAY_PORTS.1.to_string());
    let user = format!("{USER}:{PASSWORD}");
    let mut argv: Vec<String> = match which {
        Which::Ours => vec![
            env.p2p.display().to_string(),
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--realm".into(),
            REALM.into(),
            "--user".into(),
            user,
            "--allow-peer".into(),
            "127.0.0.0/8".into(),
            "--user-quota".into(),
            "0".into(),
            "--total-quota".into(),
            "0".into(),
            "--min-port".into(),
            lo,
            "--max-port".into(),
            hi,
            "--no-signaling".into(),
        ],
        Which::Coturn => {
            let w = env.work.display();
            [
                "turnserver",
                "-n",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--listening-ip",
                "127.0.0.1",
                "--listening-port",
                &port,
                "--relay-ip",
                "127.0.0.1",
                "--min-port",
                &lo,
                "--max-port",
                &hi,
                "--lt-cred-mech",
                "--user",
                &user,
                "--realm",
                REALM,
                "--allow-loopback-peers",
                "--user-quota",
                "0",
                "--total-quota",
                "0",
                "--no-stdout-log",
                "--simple-log",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([
                "--userdb".to_owned(),
                format!("{w}/turndb-{tag}"),
                "--pidfile".to_owned(),
                format!("{w}/turnserver-{tag}.pid"),
                "--log-file".to_owned(),
                format!("{w}/turnserver-{tag}.log"),
            ])
            .collect()
        }
    };
    // `exec` keeps the PID: what is measured and killed is the server.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; exec \"$@\"")
        .arg("sh");
    cmd.args(argv.drain(..));
    let log = env.work.join(format!("{}-{tag}.log", slug(which)));
    let f = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let f2 = f.try_clone().map_err(|e| e.to_string())?;
    cmd.stdout(f)
        .stderr(f2)
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        .current_dir(env.work);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", which.name()))?;
    let pid = child.id();
    started.0.push((which.name().to_owned(), child));
    let addr = SocketAddr::from(([127, 0, 0, 1], which.port()));
    if !wait_binding(addr, Duration::from_secs(15)) {
        return Err(format!(
            "{} does not answer on {addr}; see {}",
            which.name(),
            log.display()
        ));
    }
    Ok(pid)
}

fn slug(which: Which) -> &'static str {
    match which {
        Which::Ours => "p2p-serve",
        Which::Coturn => "coturn",
    }
}

/// Wait until `addr` answers a STUN Binding request.
fn wait_binding(addr: SocketAddr, within: Duration) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut req = [0u8; 20];
    req[0..2].copy_from_slice(&1u16.to_be_bytes());
    req[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    req[8..20].copy_from_slice(b"p2pbenchturn");
    let until = Instant::now() + within;
    let mut buf = [0u8; 512];
    while Instant::now() < until {
        let _ = sock.send_to(&req, addr);
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            if from == addr && n >= 20 && buf[8..20] == req[8..20] {
                return true;
            }
        }
    }
    false
}

/// Run `turn_load` with `args`; its `key=value` lines.
fn generator(
    env: &Env<'_>,
    args: &[String],
    limit_secs: u64,
) -> Result<Vec<(String, String)>, String> {
    let mut cmd = Command::new("timeout");
    cmd.arg(limit_secs.to_string()).arg(env.load).args(args);
    eprintln!("$ turn_load {}", args.join(" "));
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run turn_load: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "turn_load {} failed ({}): {}{}",
            args.first().map_or("", String::as_str),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

fn get<T: std::str::FromStr>(kv: &[(String, String)], key: &str) -> Option<T> {
    kv.iter().find(|(k, _)| k == key)?.1.parse().ok()
}

fn measure(env: &Env<'_>, o: &Opts, which: Which) -> Result<Figures, String> {
    let mut fig = Figures::default();
    let server = format!("127.0.0.1:{}", which.port());
    let user = format!("{USER}:{PASSWORD}");
    let base = |mode: &str| -> Vec<String> {
        [
            "relay", "--server", &server, "--user", &user, "--mode", mode,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(["--clients".to_owned(), o.clients.to_string()])
        .chain(["--io".to_owned(), o.io.clone()])
        .chain(["--burst".to_owned(), o.burst.to_string()])
        .collect()
    };

    // 1. Relay throughput, then allocator calls per packet.
    let mut started = Started::default();
    let pid = start(env, which, "relay", &mut started)?;
    for payload in PAYLOADS {
        for mode in MODES {
            let mut args = base(mode);
            args.extend([
                "--payload".to_owned(),
                payload.to_string(),
                "--secs".to_owned(),
                o.secs.to_string(),
            ]);
            let (cpu0, t0) = (cpu_secs(pid), Instant::now());
            let kv = generator(env, &args, 120 + o.secs as u64)?;
            let (cpu1, wall) = (cpu_secs(pid), t0.elapsed().as_secs_f64());
            let cpu = cpu0.zip(cpu1).map(|(a, b)| b - a).filter(|c| *c > 0.0);
            let all: Option<f64> = get(&kv, "relayed_all");
            eprintln!(
                "bench turn: {} {payload} B {mode}: {} relayed packets/s ({} sent, {} to peer, {} back)",
                which.name(),
                get::<f64>(&kv, "pps").unwrap_or(0.0),
                get::<u64>(&kv, "sent").unwrap_or(0),
                get::<u64>(&kv, "to_peer").unwrap_or(0),
                get::<u64>(&kv, "to_client").unwrap_or(0),
            );
            if let (Some(pps), Some(mbps)) = (get(&kv, "pps"), get(&kv, "mbps")) {
                let r = Relay {
                    pps,
                    mbps,
                    per_cpu_sec: all.zip(cpu).map(|(n, c)| n / c),
                    cores: cpu.map(|c| c / wall),
                };
                fig.relay.push(((payload, mode), r));
            }
        }
    }
    if let Some(p) = env.probes {
        match count_mallocs(env, p, pid, &base("echo")) {
            Ok(v) => fig.mallocs_per_packet = Some(v),
            Err(e) => fig.notes.push(format!("allocator calls not counted: {e}")),
        }
    }
    started.stop_all();

    // 2. Allocations on a fresh server.
    let pid = start(env, which, "allocs", &mut started)?;
    thread::sleep(Duration::from_secs(1));
    fig.rss_before_kib = rss_kib(pid);
    let args: Vec<String> = [
        "allocs",
        "--server",
        &server,
        "--user",
        &user,
        "--count",
        &o.allocations.to_string(),
        "--concurrency",
        "256",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let kv = generator(env, &args, 600)?;
    let made: usize = get(&kv, "allocations").unwrap_or(0);
    let failed: usize = get(&kv, "failed").unwrap_or(0);
    eprintln!(
        "bench turn: {}: {made} allocations ({failed} failed) in {} s",
        which.name(),
        get::<f64>(&kv, "secs").unwrap_or(0.0)
    );
    if failed > 0 {
        let why = kv
            .iter()
            .find(|(k, _)| k == "first_error")
            .map_or("", |(_, v)| v.as_str());
        fig.notes.push(format!(
            "{failed} of {} allocations failed (first: {why})",
            o.allocations
        ));
    }
    thread::sleep(Duration::from_secs(1));
    fig.rss_after_kib = rss_kib(pid);
    fig.allocated = Some(made);
    fig.alloc_secs = get(&kv, "secs");
    started.stop_all();
    Ok(fig)
}

/// Allocator calls of the server per relayed packet: echo load, 100-byte
/// payloads, `perf stat` on the uprobes for 2 s inside the generator's
/// window; calls per second over relayed packets per second.
fn count_mallocs(env: &Env<'_>, p: &Probes, pid: u32, base: &[String]) -> Result<f64, String> {
    let mut args = base.to_vec();
    args.extend(
        ["--payload", "100", "--warmup", "1", "--secs", "3"]
            .iter()
            .map(|s| (*s).to_owned()),
    );
    let out = env.work.join(format!("perf-{pid}.csv"));
    let load = {
        let env_load = env.load.to_path_buf();
        let args = args.clone();
        thread::spawn(move || {
            Command::new("timeout")
                .arg("60")
                .arg(env_load)
                .args(args)
                .output()
        })
    };
    thread::sleep(Duration::from_millis(1500));
    let perf = Command::new("perf")
        .args(["stat", "-x", ",", "-e", &p.events, "-o"])
        .arg(&out)
        .args(["-p", &pid.to_string(), "--", "sleep", "2"])
        .output()
        .map_err(|e| format!("perf stat: {e}"))?;
    let gen = load
        .join()
        .map_err(|_| "generator thread panicked")?
        .map_err(|e| format!("turn_load: {e}"))?;
    if !perf.status.success() {
        return Err(format!(
            "perf stat: {}",
            String::from_utf8_lossy(&perf.stderr).trim()
        ));
    }
    let text = fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let calls: f64 = text
        .lines()
        .filter(|l| l.contains(PROBE_GROUP))
        .filter_map(|l| l.split(',').next()?.trim().parse::<f64>().ok())
        .sum();
    let kv: Vec<(String, String)> = String::from_utf8_lossy(&gen.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let pps: f64 = get(&kv, "pps").ok_or("no packets/s from the generator")?;
    if pps <= 0.0 {
        return Err("nothing relayed under perf".into());
    }
    eprintln!("bench turn: pid {pid}: {calls} allocator calls in 2 s at {pps} relayed packets/s");
    Ok(calls / 2.0 / pps)
}

/// User + system CPU seconds of a process (all its threads), from
/// /proc/PID/stat (fields 14 and 15, in clock ticks).
/// The 1-minute load average for the report (`?` when unknown).
fn load_text() -> String {
    loadavg().map_or_else(|| "?".into(), |l| format!("{l:.2}"))
}

fn cpu_secs(pid: u32) -> Option<f64> {
    Some(cpu_ticks(pid)? as f64 / clk_tck())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
}

/// The markdown report.
fn report(o: &Opts, ours: &Figures, theirs: Option<&Figures>, machine: &str) -> String {
    let empty = Figures::default();
    let th = theirs.unwrap_or(&empty);
    let mut t = String::new();
    let _ = writeln!(t, "## TURN relay: p2p serve vs coturn\n");
    let _ = writeln!(
        t,
        "Loopback, one server at a time, the same `turn_load` run against each: {} clients \
         over UDP, ChannelData on one channel each to a peer socket of the generator, {} s per \
         row after 0.5 s of warm-up; only payloads that arrive inside the window are counted. \
         `flood`: client to peer only, the generator sends as fast as it can, {} datagrams per \
         client at a time. `echo`: the peer sends each datagram back, 32 in flight per client, \
         both directions counted. The generator sends with `--io {}` (gso: UDP GSO trains, \
         which the servers' sockets get as separate datagrams; batch: sendmmsg; single: one \
         call per datagram) so that it costs little per datagram. Then, on \
         a fresh server, {} allocations (Allocate, 401, Allocate, each from its own client \
         address, 256 at a time) and VmRSS before and after. Packets per server \
         CPU-second: every packet relayed during the run over the server's user + system \
         CPU time (/proc/PID/stat, all threads), which depends less on how much of a shared \
         machine the server got than packets/s does.\n",
        o.clients, o.secs, o.burst, o.io, o.allocations
    );
    let _ = writeln!(t, "Machine: {machine}.\n");
    let _ = writeln!(t, "| figure | p2p serve | coturn | p2p / coturn | target |");
    let _ = writeln!(t, "|---|---:|---:|---:|---|");
    let mut verdicts = Vec::new();
    for payload in PAYLOADS {
        for mode in MODES {
            let a = ours.relay(payload, mode);
            let b = th.relay(payload, mode);
            let r = ratio(a.map(|v| v.pps), b.map(|v| v.pps));
            let _ = writeln!(
                t,
                "| relayed packets/s, {payload} B, {mode} | {} | {} | {} | >= {PPS_TARGET}x |",
                num(a.map(|v| v.pps), 0),
                num(b.map(|v| v.pps), 0),
                times(r),
            );
            let _ = writeln!(
                t,
                "| Mbit/s of payload, {payload} B, {mode} | {} | {} | {} | |",
                num(a.map(|v| v.mbps), 1),
                num(b.map(|v| v.mbps), 1),
                times(ratio(a.map(|v| v.mbps), b.map(|v| v.mbps))),
            );
            let per_cpu = ratio(a.and_then(|v| v.per_cpu_sec), b.and_then(|v| v.per_cpu_sec));
            let _ = writeln!(
                t,
                "| packets per server CPU-second, {payload} B, {mode} | {} | {} | {} | |",
                num(a.and_then(|v| v.per_cpu_sec), 0),
                num(b.and_then(|v| v.per_cpu_sec), 0),
                times(per_cpu),
            );
            let _ = writeln!(
                t,
                "| server CPU, cores, {payload} B, {mode} | {} | {} | | |",
                num(a.and_then(|v| v.cores), 2),
                num(b.and_then(|v| v.cores), 2),
            );
            let also = per_cpu.map_or(String::new(), |c| format!(" ({c:.2}x per CPU-second)"));
            verdicts.push(match r {
                Some(r) if r >= PPS_TARGET => {
                    format!("packets/s, {payload} B, {mode}: {r:.2}x coturn{also}: met")
                }
                Some(r) => format!(
                    "packets/s, {payload} B, {mode}: {r:.2}x coturn{also}: MISSED (target {PPS_TARGET}x)"
                ),
                None => format!("packets/s, {payload} B, {mode}: not measured"),
            });
        }
    }
    let per_sec = |f: &Figures| Some(f.allocated? as f64 / f.alloc_secs?);
    let _ = writeln!(
        t,
        "| {} allocations: seconds | {} | {} | {} | |",
        o.allocations,
        num(ours.alloc_secs, 2),
        num(th.alloc_secs, 2),
        times(ratio(ours.alloc_secs, th.alloc_secs)),
    );
    let _ = writeln!(
        t,
        "| allocations/s | {} | {} | {} | |",
        num(per_sec(ours), 0),
        num(per_sec(th), 0),
        times(ratio(per_sec(ours), per_sec(th))),
    );
    let kib = |v: Option<u64>| v.map(|v| v as f64 / 1024.0);
    let _ = writeln!(
        t,
        "| VmRSS before / after, MiB | {} / {} | {} / {} | | |",
        num(kib(ours.rss_before_kib), 1),
        num(kib(ours.rss_after_kib), 1),
        num(kib(th.rss_before_kib), 1),
        num(kib(th.rss_after_kib), 1),
    );
    let mem = ratio(ours.per_allocation_kib(), th.per_allocation_kib());
    let _ = writeln!(
        t,
        "| memory per allocation, KiB | {} | {} | {} | <= {MEMORY_TARGET}x |",
        num(ours.per_allocation_kib(), 2),
        num(th.per_allocation_kib(), 2),
        mem.map_or("n/a".into(), |r| format!("{r:.2}x")),
    );
    let _ = writeln!(
        t,
        "| malloc+calloc+realloc per relayed packet (echo, 100 B) | {} | {} | | 0 for p2p |",
        num(ours.mallocs_per_packet, 2),
        num(th.mallocs_per_packet, 2),
    );
    verdicts.push(match mem {
        Some(r) if r <= MEMORY_TARGET => format!("memory per allocation: {r:.2}x coturn: met"),
        Some(r) => format!(
            "memory per allocation: {r:.2}x coturn: MISSED (target {MEMORY_TARGET}x or less)"
        ),
        None => "memory per allocation: not measured".into(),
    });
    verdicts.push(match ours.mallocs_per_packet {
        // Background work (timers, metrics) shows up as a small fraction.
        Some(v) if v < 0.01 => format!("allocations per relayed packet: {v:.3}: met"),
        Some(v) => format!("allocations per relayed packet: {v:.2}: MISSED (target 0)"),
        None => "allocations per relayed packet: not measured (needs perf and root)".into(),
    });
    let _ = writeln!(t);
    for v in verdicts {
        let _ = writeln!(t, "- {v}");
    }
    for (who, f) in [("p2p serve", ours), ("coturn", th)] {
        for n in &f.notes {
            let _ = writeln!(t, "\n**Note ({who}):** {n}");
        }
    }
    if theirs.is_none() {
        let _ = writeln!(
            t,
            "\n**Note:** coturn is not installed: its column is empty."
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_allocation_memory_and_missing_figures() {
        let f = Figures {
            rss_before_kib: Some(10_000),
            rss_after_kib: Some(30_000),
            allocated: Some(10_000),
            ..Figures::default()
        };
        assert_eq!(f.per_allocation_kib(), Some(2.0));
        assert_eq!(Figures::default().per_allocation_kib(), None);
        let o = parse(&[]).unwrap();
        let ours = Figures {
            relay: vec![(
                (100, "flood"),
                Relay {
                    pps: 300_000.0,
                    mbps: 240.0,
                    per_cpu_sec: Some(400_000.0),
                    cores: Some(0.75),
                },
            )],
            ..f.clone()
        };
        let theirs = Figures {
            relay: vec![(
                (100, "flood"),
                Relay {
                    pps: 100_000.0,
                    mbps: 80.0,
                    per_cpu_sec: None,
                    cores: None,
                },
            )],
            rss_before_kib: Some(10_000),
            rss_after_kib: Some(110_000),
            allocated: Some(10_000),
            ..Figures::default()
        };
        let r = report(&o, &ours, Some(&theirs), "test machine");
        assert!(r.contains("| relayed packets/s, 100 B, flood | 300000 | 100000 | 3.00x |"));
        assert!(r.contains("packets/s, 100 B, flood: 3.00x coturn: met"));
        assert!(r.contains("packets/s, 1200 B, echo: not measured"));
        assert!(r.contains("memory per allocation: 0.20x coturn: met"));
        assert!(r.contains("allocations per relayed packet: not measured"));
        let r = report(&o, &ours, None, "m");
        assert!(r.contains("coturn is not installed"));
    }

    #[test]
    fn flags() {
        let o = parse(&["--secs".into(), "2".into(), "--no-perf".into()]).unwrap();
        assert_eq!(o.secs, 2.0);
        assert!(!o.perf);
        assert!(parse(&["--secs".into(), "0".into()]).is_err());
        assert!(parse(&["--bogus".into()]).is_err());
    }
}
