//! `cargo xtask abuse [--short] [--release|--debug] [--no-build] [--only NAME]`:
//! attacks on the real `p2p serve`, on loopback only (the whole 127/8 is
//! on `lo`, so attackers and legitimate clients get addresses of their
//! own), bounded in count and time, each asserting the fixed behaviour with
//! figures: the daemon's RSS (from `/proc/PID/status`), when and how
//! connections were closed, what a legitimate client from another address
//! got meanwhile, and the daemon's own metrics. The figures go to
//! `target/abuse.md` (and stderr); a failed check fails the task.
//!
//! Each attack is a function in [`ATTACKS`]: on the signaling port
//! (`signaling.rs`) and on the STUN/TURN port (`stun.rs`, its requests
//! built with `p2p-stun` in `turnc.rs`); more (restart recovery) are added
//! there.
//! `--short` is the CI form: fewer connections and shorter phases, on the
//! debug build; the full form runs the release build (`--debug` or
//! `--release` choose).

mod daemon;
mod restart;
mod signaling;
mod stun;
mod turn;
mod turnc;
mod ws;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bench_util::target_dir;
use crate::{cargo, run};
use restart::restart_recovery;
use signaling::{credential_farming, idle_flood, slow_readers, slowloris};
use stun::{stun_flood, stun_slowloris};
use turn::{password_guessing, turn_farming, turn_slow_readers};

/// One attack: its name, the finding it reproduces, and the function.
type Attack = fn(&Ctx) -> Result<Report, String>;

const ATTACKS: &[(&str, &str, Attack)] = &[
    (
        "slow-readers",
        "18.1: clients that stop reading while peers send them large offers",
        slow_readers,
    ),
    (
        "idle-flood",
        "18.5: idle WebSockets from one address, then up to the cap",
        idle_flood,
    ),
    (
        "slowloris",
        "18 (build list): request heads sent slowly, frame headers that pin buffers",
        slowloris,
    ),
    (
        "credential-farming",
        "18.3: anonymous connections farming TURN credentials",
        credential_farming,
    ),
    (
        "stun-slowloris",
        "18.2: STUN/TURN TCP connections sending a byte at a time, and frame headers that pin buffers after an unauthenticated Allocate",
        stun_slowloris,
    ),
    (
        "stun-flood",
        "18.2: one address taking every STUN/TURN TCP slot",
        stun_flood,
    ),
    (
        "turn-farming",
        "18.3: farmed REST credentials taking the relay ports",
        turn_farming,
    ),
    (
        "password-guessing",
        "18.4: wrong-password Allocates as fast as one socket sends them",
        password_guessing,
    ),
    (
        "turn-slow-readers",
        "18.1 on the TURN port: TURN clients over TCP that stop reading while a peer sends to their relays",
        turn_slow_readers,
    ),
    (
        "restart-recovery",
        "18.6: relay-only peers recover when the daemon restarts",
        restart_recovery,
    ),
];

/// Every step of a client waits at most this long.
pub(super) const STEP: Duration = Duration::from_secs(5);

struct Ctx {
    bin: PathBuf,
    work: PathBuf,
    short: bool,
}

/// What one attack measured and checked.
struct Report {
    name: &'static str,
    finding: &'static str,
    setting: String,
    figures: Vec<(String, String)>,
    checks: Vec<(String, bool)>,
}

impl Report {
    fn new(name: &'static str, setting: impl Into<String>) -> Report {
        let finding = ATTACKS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map_or("", |(_, f, _)| f);
        Report {
            name,
            finding,
            setting: setting.into(),
            figures: Vec::new(),
            checks: Vec::new(),
        }
    }

    fn figure(&mut self, what: &str, value: impl std::fmt::Display) {
        self.figures.push((what.to_owned(), value.to_string()));
    }

    fn check(&mut self, what: impl Into<String>, ok: bool) {
        self.checks.push((what.into(), ok));
    }

    fn passed(&self) -> bool {
        self.checks.iter().all(|(_, ok)| *ok)
    }
}

pub(crate) fn abuse(args: &[String]) -> Result<(), String> {
    let short = args.iter().any(|a| a == "--short");
    // The full form measures the build operators run; the short one (CI)
    // the debug build the tests already made.
    let release = if args.iter().any(|a| a == "--debug") {
        false
    } else {
        args.iter().any(|a| a == "--release") || !short
    };
    let build = !args.iter().any(|a| a == "--no-build");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1));
    if let Some(o) = only {
        if !ATTACKS.iter().any(|(n, _, _)| n == o) {
            let names: Vec<&str> = ATTACKS.iter().map(|(n, _, _)| *n).collect();
            return Err(format!(
                "unknown attack `{o}` (known: {})",
                names.join(", ")
            ));
        }
    }
    if !Path::new("/proc/self/status").exists() {
        return Err("abuse needs Linux (/proc) to read the daemon's memory".into());
    }
    let profile = if release { "release" } else { "debug" };
    if build {
        let mut c = cargo();
        c.args(["build", "-p", "p2p-cli", "--bin", "p2p"]);
        if release {
            c.arg("--release");
        }
        run(&mut c)?;
    }
    let bin = target_dir().join(profile).join("p2p");
    if !bin.exists() {
        return Err(format!("{} is missing (drop --no-build)", bin.display()));
    }
    let work = target_dir().join("abuse");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let ctx = Ctx { bin, work, short };
    let mut reports = Vec::new();
    for (name, _, attack) in ATTACKS {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        eprintln!("abuse: {name}");
        let started = Instant::now();
        let mut r = attack(&ctx).map_err(|e| format!("{name}: {e}"))?;
        r.figure(
            "attack's wall time",
            format!("{:.1} s", started.elapsed().as_secs_f64()),
        );
        eprintln!("{}", render(std::slice::from_ref(&r), short, profile));
        reports.push(r);
    }
    let text = render(&reports, short, profile);
    let out = target_dir().join("abuse.md");
    std::fs::write(&out, &text).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("abuse: report in {}", out.display());
    let failed: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.checks
                .iter()
                .filter(|(_, ok)| !ok)
                .map(move |(c, _)| format!("{}: {c}", r.name))
        })
        .collect();
    let passed = reports.iter().filter(|r| r.passed()).count();
    eprintln!("abuse: {passed} passed, {} failed", reports.len() - passed);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("checks failed:\n  {}", failed.join("\n  ")))
    }
}

fn render(reports: &[Report], short: bool, profile: &str) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "## Abuse suite ({}, {profile} build, loopback)\n",
        if short { "short" } else { "full" }
    );
    for r in reports {
        let _ = writeln!(t, "### {} — {}\n", r.name, r.finding);
        let _ = writeln!(t, "Setting: {}\n", r.setting);
        let _ = writeln!(t, "| figure | value |\n|---|---|");
        for (k, v) in &r.figures {
            let _ = writeln!(t, "| {k} | {v} |");
        }
        let _ = writeln!(t, "\n| check | result |\n|---|---|");
        for (c, ok) in &r.checks {
            let _ = writeln!(t, "| {c} | {} |", if *ok { "ok" } else { "FAILED" });
        }
        t.push('\n');
    }
    t
}
