//! The tasks themselves.

use crate::{cargo, have, in_ci, root, run};
use std::process::Command;

/// The whole suite, in the order that fails fastest.
pub(crate) fn ci(_args: &[String]) -> Result<(), String> {
    lint()?;
    test(&[])?;
    crate::abuse::abuse(&["--short".to_owned()])?;
    crate::release::publish_check(&[])?;
    crate::release::docs(&[])?;
    interop(&[])?;
    aiortc(&[])?;
    nat_lab(&[])?;
    browser(&[])?;
    Ok(())
}

pub(crate) fn lint() -> Result<(), String> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // The benches' `peers` feature pulls other STUN stacks; it is linted by
    // `cargo xtask bench`, not here.
    run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "p2p-benches",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args([
        "clippy",
        "-p",
        "p2p-benches",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The fuzz targets live outside the workspace; keep them compiling
    // (and clean) as the crates they drive change.
    run(cargo().args([
        "clippy",
        "--manifest-path",
        "fuzz/Cargo.toml",
        "--bins",
        "--",
        "-D",
        "warnings",
    ]))
}

/// The nextest profile (`.config/nextest.toml`): `ci` under CI.
fn nextest_profile() -> &'static str {
    if in_ci() {
        "ci"
    } else {
        "default"
    }
}

pub(crate) fn test(args: &[String]) -> Result<(), String> {
    if have("cargo-nextest") {
        run(cargo()
            .args([
                "nextest",
                "run",
                "--workspace",
                "--exclude",
                "p2p-benches",
                "--all-features",
                "--no-fail-fast",
                "--profile",
                nextest_profile(),
            ])
            .args(args))?;
        run(cargo().args([
            "nextest",
            "run",
            "-p",
            "p2p-benches",
            "--no-fail-fast",
            "--profile",
            nextest_profile(),
        ]))?;
        // nextest does not run doctests.
        run(cargo().args([
            "test",
            "--workspace",
            "--exclude",
            "p2p-benches",
            "--all-features",
            "--doc",
        ]))
    } else {
        run(cargo()
            .args([
                "test",
                "--workspace",
                "--exclude",
                "p2p-benches",
                "--all-features",
                "--no-fail-fast",
            ])
            .args(args))
    }
}

/// Run one of the suites in `xtask/scripts/` (each installs or skips what it
/// needs, cleans up after itself, and fails in CI when it cannot run).
fn script(name: &str) -> Result<(), String> {
    let script = root().join("xtask/scripts").join(name);
    if !script.exists() {
        return Err(format!("{} is missing", script.display()));
    }
    run(Command::new("bash").arg(script))
}

pub(crate) fn interop(_args: &[String]) -> Result<(), String> {
    script("interop.sh")
}

pub(crate) fn aiortc(_args: &[String]) -> Result<(), String> {
    script("aiortc.sh")
}

pub(crate) fn browser(_args: &[String]) -> Result<(), String> {
    if !root().join("xtask/scripts/browser.sh").exists() {
        eprintln!("browser: the browser suite is not in this tree yet");
        return Ok(());
    }
    script("browser.sh")?;
    // A tab with Chromium's default mDNS names on a LAN of namespaces
    // (root, iptables): the names resolve, and our checks open the path.
    script("browser-lan.sh")
}

/// The ICE NAT matrix runs as a test of p2p-connect on the virtual network;
/// with ICE_MATRIX_OUT set it also writes the table.
pub(crate) fn ice_matrix(_args: &[String]) -> Result<(), String> {
    run(cargo()
        .env("ICE_MATRIX_OUT", root().join("docs/ice-matrix.md"))
        .args([
            "test",
            "-p",
            "p2p-connect",
            "--test",
            "matrix",
            "--",
            "--nocapture",
        ]))
}

/// The NAT lab: `p2p nat-type` and two `p2p connect` peers through real
/// NATs (nat-lab.sh), port mapping by a router running miniupnpd
/// (nat-lab-portmap.sh), then a Chromium tab behind one NAT and `p2p
/// connect` behind another (nat-lab-browser.sh).
pub(crate) fn nat_lab(_args: &[String]) -> Result<(), String> {
    if !in_ci() && !have("ip") {
        return Err("nat-lab needs iproute2 (`ip`) and root".into());
    }
    script("nat-lab.sh")?;
    script("nat-lab-portmap.sh")?;
    script("nat-lab-browser.sh")
}

pub(crate) fn bench(args: &[String]) -> Result<(), String> {
    let what = args.first().map(String::as_str).unwrap_or("codec");
    match what {
        "codec" => crate::bench::codec(&args[1.min(args.len())..]),
        "stun-server" => crate::bench_server::stun_server(&args[1..]),
        "turn" => crate::bench_turn::turn(&args[1..]),
        "connect" => crate::bench_connect::connect(&args[1..]),
        "ice" => crate::bench_connect::ice(&args[1..]),
        "channel" => crate::bench_connect::channel(&args[1..]),
        "cluster" => crate::bench_connect::cluster(&args[1..]),
        other => Err(format!(
            "unknown benchmark group `{other}` (known: codec, stun-server, turn, connect, ice, channel, cluster)"
        )),
    }
}

pub(crate) fn fuzz(args: &[String]) -> Result<(), String> {
    let target = args.first().map(String::as_str).unwrap_or("stun_decode");
    let secs = args.get(1).map(String::as_str).unwrap_or("60");
    if !have("cargo-fuzz") {
        run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    // cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
    run(cargo()
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(root().join("fuzz"))
        .args([
            "fuzz",
            "run",
            target,
            "--",
            &format!("-max_total_time={secs}"),
        ]))
}
