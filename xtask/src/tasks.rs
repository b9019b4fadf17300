//! The tasks themselves.

use crate::{cargo, have, in_ci, root, run};
use std::process::Command;

/// The whole suite, in the order that fails fastest.
pub(crate) fn ci(_args: &[String]) -> Result<(), String> {
    lint()?;
    test(&[])?;
    interop(&[])?;
    nat_lab(&[])?;
    Ok(())
}

pub(crate) fn lint() -> Result<(), String> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))
}

pub(crate) fn test(args: &[String]) -> Result<(), String> {
    if have("cargo-nextest") {
        run(cargo()
            .args([
                "nextest",
                "run",
                "--workspace",
                "--all-features",
                "--no-fail-fast",
            ])
            .args(args))?;
        // nextest does not run doctests.
        run(cargo().args(["test", "--workspace", "--all-features", "--doc"]))
    } else {
        run(cargo()
            .args(["test", "--workspace", "--all-features", "--no-fail-fast"])
            .args(args))
    }
}

pub(crate) fn interop(_args: &[String]) -> Result<(), String> {
    let script = root().join("xtask/scripts/interop.sh");
    if !script.exists() {
        eprintln!("interop: no interop suite yet");
        return Ok(());
    }
    run(Command::new("bash").arg(script))
}

pub(crate) fn nat_lab(_args: &[String]) -> Result<(), String> {
    let script = root().join("xtask/scripts/nat-lab.sh");
    if !script.exists() {
        eprintln!("nat-lab: no NAT lab yet");
        return Ok(());
    }
    if !in_ci() && !have("ip") {
        return Err("nat-lab needs iproute2 (`ip`) and root".into());
    }
    run(Command::new("bash").arg(script))
}

pub(crate) fn bench(args: &[String]) -> Result<(), String> {
    let what = args.first().map(String::as_str).unwrap_or("codec");
    match what {
        "codec" => run(cargo().args(["bench", "-p", "p2p-benches", "--bench", "codec"])),
        other => Err(format!("unknown benchmark group `{other}` (known: codec)")),
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
