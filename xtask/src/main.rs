//! Development tasks for the p2p workspace, in the cargo-xtask style.
//!
//! `cargo xtask ci` is the whole test suite (what `.ci/run` calls); the other
//! tasks are pieces of it or developer tools. Everything is plain `std`
//! (with `socket2`, and `p2p-stun` for the abuse suite's STUN/TURN
//! requests), so this binary builds in seconds on a fresh machine.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

mod abuse;
mod bench;
mod bench_connect;
mod bench_server;
mod bench_turn;
mod bench_util;
mod release;
mod tasks;

const USAGE: &str = "\
usage: cargo xtask <task> [args]

tasks:
  ci            the whole suite: fmt, clippy, tests (fuzz corpora replayed), abuse --short, publish-check, docs, interop, aiortc, nat-lab, browser
  test          cargo tests of the workspace (nextest when installed)
  lint          rustfmt --check and clippy -D warnings
  interop       our binaries against coturn (needs the `coturn` package; installs it when CI=true)
  aiortc        p2p connect against aiortc, an independent WebRTC stack (pip-installs it into target/)
  nat-lab       real NATs in network namespaces, p2p connect and a Chromium tab behind them (needs root, iproute2, iptables; chromium, node)
  browser       headless Chromium pages connect through `p2p serve`, and to `p2p connect` (on
                loopback; then on a LAN of namespaces with mDNS names: root) (needs chromium, node)
  abuse [--short] [--only NAME]  attacks on `p2p serve` over loopback, with figures; report in target/abuse.md
  ice-matrix    the 81-pair NAT matrix on the virtual network; rewrites docs/ice-matrix.md
  bench [what]  benchmarks: codec (default), stun-server, turn, connect, ice, channel; reports in target/
  fuzz [target] [secs]  run cargo-fuzz on one target for a bounded time
  publish-check [--verify]  every published crate packages (cargo publish --dry-run, all together);
                --verify also builds each from its package (minutes)
  docs [dir]    shell completions and man pages of `p2p`, from its CLI definition (default target/docs)
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some(task) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let rest = &args[1..];
    let started = Instant::now();
    let result = match task.as_str() {
        "ci" => tasks::ci(rest),
        "test" => tasks::test(rest),
        "lint" => tasks::lint(),
        "interop" => tasks::interop(rest),
        "nat-lab" => tasks::nat_lab(rest),
        "aiortc" => tasks::aiortc(rest),
        "browser" => tasks::browser(rest),
        "abuse" => abuse::abuse(rest),
        "ice-matrix" => tasks::ice_matrix(rest),
        "bench" => tasks::bench(rest),
        "fuzz" => tasks::fuzz(rest),
        "publish-check" => release::publish_check(rest),
        "docs" => release::docs(rest),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown task `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => {
            eprintln!("xtask {task}: ok in {:.1?}", started.elapsed());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask {task}: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of `xtask/`).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Run a command in the workspace root, echoing it, failing on a non-zero exit.
pub(crate) fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("$ {cmd:?}");
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(root());
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} exited with {status}"))
    }
}

pub(crate) fn cargo() -> Command {
    Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

pub(crate) fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub(crate) fn in_ci() -> bool {
    env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}
