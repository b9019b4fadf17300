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
//! - `channel` (benches/src/bin/channel_bench/): a reliable ordered data
//!   channel, 100 MiB as 16 KiB messages on loopback: ours, str0m and
//!   webrtc-rs (built with the bench-only feature `channel-peers`; if they
//!   do not build, ours and the UDP ceiling alone, and the report says
//!   so), plain UDP as the ceiling. `--no-peers` skips the peers. Other
//!   flags go to the binary: `--mib N`, `--runs N`, `--limit S`,
//!   `--only NAME`. Then `channel_setup` (benches/src/bin/): time to
//!   the first message in round trips on netsim (50 ms RTT), opening a
//!   channel on loopback, memory per connection and per idle channel;
//!   written to `target/bench-channel-setup.md`. Then `channel_floor`
//!   (benches/src/bin/channel_floor/): our layers in memory on one core,
//!   CPU per datagram per side, and the libraries' per-packet costs beside
//!   a fix, to `target/bench-channel-floor.md`. Then, with the peers,
//!   `channel_bench --memory 20`: str0m's and webrtc-rs's heap per idle
//!   connection, written to `target/bench-channel-memory.md`.
//!
//! `--no-build` (any of them) runs the binaries already built.

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

/// `cargo xtask bench cluster` (benches/src/bin/cluster_bench/):
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

pub(crate) fn channel(args: &[String]) -> Result<(), String> {
    let peers = !args.iter().any(|a| a == "--no-peers");
    let build = !args.iter().any(|a| a == "--no-build");
    let pass: Vec<String> = args
        .iter()
        .filter(|a| *a != "--no-peers" && *a != "--no-build")
        .cloned()
        .collect();
    let mut note = String::new();
    if build {
        let base = [
            "build",
            "--release",
            "-p",
            "p2p-benches",
            "--bin",
            "channel_bench",
            "--bin",
            "channel_setup",
            "--bin",
            "channel_floor",
        ];
        let with_peers = peers
            && match run(cargo().args(base).args(["--features", "channel-peers"])) {
                Ok(()) => true,
                Err(e) => {
                    note = format!(
                        "The peers (str0m, webrtc-rs) did not build ({e}): ours and the \
                         UDP ceiling only.\n\n"
                    );
                    false
                }
            };
        if !with_peers {
            run(cargo().args(base))?;
        }
    }
    let mut pass = pass;
    pass.push("--no-build".into());
    bench_noted(
        "channel_bench",
        "bench-channel.md",
        "Data channels: throughput on loopback",
        &pass,
        &note,
    )?;
    // Time to the first message (netsim), opening a channel, memory.
    bench_noted(
        "channel_setup",
        "bench-channel-setup.md",
        "Data channels: setup time and memory",
        &["--no-build".to_owned()],
        "",
    )?;
    // The floor: our layers in memory on one core, and the libraries'
    // per-packet costs beside a fix.
    bench_noted(
        "channel_floor",
        "bench-channel-floor.md",
        "Data channels: the floor of our data path in memory (one core)",
        &["--no-build".to_owned()],
        "",
    )?;
    // The peers' memory per idle connection, beside ours above.
    if peers && note.is_empty() {
        bench_noted(
            "channel_bench",
            "bench-channel-memory.md",
            "Data channels: the peers' memory per idle connection",
            &["--no-build".to_owned(), "--memory".into(), "20".into()],
            "",
        )?;
    }
    Ok(())
}

fn bench(bin: &str, out: &str, title: &str, args: &[String]) -> Result<(), String> {
    bench_noted(bin, out, title, args, "")
}

fn bench_noted(
    bin: &str,
    out: &str,
    title: &str,
    args: &[String],
    note: &str,
) -> Result<(), String> {
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
    let report = format!("# {title}\n\n{note}{table}");
    println!("{report}");
    let path = target_dir().join(out);
    fs::create_dir_all(target_dir()).map_err(|e| format!("{}: {e}", target_dir().display()))?;
    fs::write(&path, &report).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
