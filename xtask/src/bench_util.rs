//! What the benchmark tasks share: where cargo builds, the release binaries
//! they run, coturn, and what `/proc` says about a process or the machine.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::{cargo, have, in_ci, root, run};

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace
/// root when relative), else `target/` in the workspace root.
pub(crate) fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        // `join` keeps an absolute path as it is.
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// Build (unless `build` is false) the release binaries of `p2p-cli` and
/// `p2p-benches`, and return the paths of `bins` in the release directory,
/// failing when one is missing.
pub(crate) fn release_bins<const N: usize>(
    build: bool,
    bins: [&str; N],
) -> Result<[PathBuf; N], String> {
    if build {
        run(cargo().args([
            "build",
            "--release",
            "-p",
            "p2p-cli",
            "-p",
            "p2p-benches",
            "--bins",
        ]))?;
    }
    let release = target_dir().join("release");
    let paths = bins.map(|b| release.join(b));
    for p in &paths {
        if !p.exists() {
            return Err(format!(
                "{} is missing (build it, or drop --no-build)",
                p.display()
            ));
        }
    }
    Ok(paths)
}

/// Whether `turnserver` is there; in CI, install the `coturn` package first.
pub(crate) fn ensure_coturn() -> bool {
    if have("turnserver") {
        return true;
    }
    if in_ci() {
        let sudo = if is_root() { "" } else { "sudo " };
        let _ = run(Command::new("sh").arg("-c").arg(format!(
            "{sudo}apt-get update -qq && DEBIAN_FRONTEND=noninteractive {sudo}apt-get install -y -qq coturn"
        )));
    }
    have("turnserver")
}

pub(crate) fn is_root() -> bool {
    command_line("id", &["-u"]).is_some_and(|s| s == "0")
}

/// The first line of what `program args` prints, when it succeeds and
/// prints something.
pub(crate) fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout);
    let line = s.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_owned())
}

/// A process's user + system CPU time so far, in clock ticks
/// (`/proc/PID/stat` fields 14 and 15).
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: split after its ')'; the
    // rest starts at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 when unknown).
pub(crate) fn clk_tck() -> f64 {
    command_line("getconf", &["CLK_TCK"])
        .and_then(|v| v.parse().ok())
        .unwrap_or(100.0)
}

/// The 1-minute load average.
pub(crate) fn loadavg() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `a / b` when both are known and `b` is positive.
pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (b > 0.0).then_some(a / b)
}

/// A ratio as the reports print it: `1.23x`, or `n/a`.
pub(crate) fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".into(), |r| format!("{r:.2}x"))
}
