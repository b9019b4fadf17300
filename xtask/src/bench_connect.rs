//! `cargo xtask bench ice` and `cargo xtask bench connect`: build the
//! benchmark binaries of `p2p-benches` (release), run them, print their
//! Markdown table and write it to `target/bench-ice.md` /
//! `target/bench-connect.md`.
//!
//! - `ice` (benches/src/bin/ice_bench.rs): ICE time to connected in
//!   simulated time on `p2p-netsim`, for host, server-reflexive and relayed
//!   paths, with the connectivity checks counted. Deterministic.
//! - `connect` (benches/src/bin/connect_bench.rs): on loopback, the time
//!   from `connect()` to the first datagram delivered, then datagrams/s and
//!   Mbit/s, direct and relayed, against an in-process `p2p-server`.
//!   Flags after `connect` go to the binary: `--runs N`, `--seconds S`,
//!   `--size BYTES`.
//!
//! `--no-build` (either task) runs the binaries already built.

use std::fs;
use std::process::Command;

use crate::bench_util::target_dir;
use crate::{cargo, root, run};

pub(crate) fn connect(args: &[String]) -> Result<(), String> {
    bench(
        "connect_bench",
        "bench-connect.md",
        "p2p-connect: throughput on loopback",
        args,
    )
}

pub(crate) fn ice(args: &[String]) -> Result<(), String> {
    bench(
        "ice_bench",
        "bench-ice.md",
        "ICE: time to connected (simulated)",
        args,
    )
}

/// `cargo xtask bench cluster` (benches/src/bin/cluster_bench.rs):
/// signaling through two `p2p serve` nodes on a real `redis-server`, same
/// node and different nodes in one run. Needs `redis-server`.
pub(crate) fn cluster(args: &[String]) -> Result<(), String> {
    bench(
        "cluster_bench",
        "bench-cluster.md",
        "Signaling across the nodes of a cluster (Redis)",
        args,
    )
}

fn bench(bin: &str, out: &str, title: &str, args: &[String]) -> Result<(), String> {
    let build = !args.iter().any(|a| a == "--no-build");
    let pass: Vec<&String> = args.iter().filter(|a| *a != "--no-build").collect();
    if build {
        run(cargo().args(["build", "--release", "-p", "p2p-benches", "--bin", bin]))?;
    }
    let exe = target_dir().join("release").join(bin);
    eprintln!(
        "$ {} {}",
        exe.display(),
        pass.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = Command::new(&exe)
        .args(&pass)
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot start {}: {e} (built?)", exe.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        eprint!("{stderr}");
    }
    if !output.status.success() {
        return Err(format!("{bin} exited with {}", output.status));
    }
    let table = String::from_utf8_lossy(&output.stdout);
    let report = format!("# {title}\n\n{table}");
    println!("{report}");
    let path = target_dir().join(out);
    fs::create_dir_all(target_dir()).map_err(|e| format!("{}: {e}", target_dir().display()))?;
    fs::write(&path, &report).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
