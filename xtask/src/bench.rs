//! `cargo xtask bench codec`: run the codec benchmark against the peer STUN
//! codecs and the raw floor, and print the table of ratios (also written to
//! `target/bench-report.md`).

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::bench_util::{ratio, target_dir};
use crate::{cargo, run};

/// The criterion groups of `benches/benches/codec.rs`, in report order.
const OPERATIONS: [&str; 4] = ["decode", "verify", "sign", "response"];
/// The operations whose target is "within 1.5x of the floor".
const FLOORED: [&str; 2] = ["verify", "sign"];
/// Implementations: ours, the peers, the floors (function names in the groups).
const OURS: &str = "p2p";
const PEERS: [&str; 2] = ["webrtc-rs", "stun-rs"];
const FLOOR: &str = "floor";
const FLOOR_PREKEYED: &str = "floor-prekeyed";
/// The targets of issue 2.
const PEER_TARGET: f64 = 2.0;
const FLOOR_TARGET: f64 = 1.5;

/// Run the codec benchmark and report. `args` are passed to the criterion
/// harness (e.g. `--save-baseline x`); a leading `codec` is ignored.
pub(crate) fn codec(args: &[String]) -> Result<(), String> {
    let args = match args.first().map(String::as_str) {
        Some("codec") => &args[1..],
        _ => args,
    };
    let criterion_home = target_dir().join("criterion");
    let started = SystemTime::now();
    let bench = |features: &[&str]| {
        run(cargo()
            .args(["bench", "-p", "p2p-benches", "--bench", "codec"])
            .args(features)
            .arg("--")
            .args(args)
            .env("CRITERION_HOME", &criterion_home))
    };
    let mut notes = Vec::new();
    if let Err(e) = bench(&["--features", "peers"]) {
        let msg = format!(
            "the benchmark with `--features peers` failed ({e}); the peer crates \
             (webrtc-rs `stun` 0.17, `stun-rs` 0.1) probably do not build here. \
             Running p2p and the floor alone: the peer columns are empty."
        );
        eprintln!("bench: {msg}");
        notes.push(msg);
        bench(&[])?;
    }

    let estimates = Estimates {
        home: criterion_home,
        since: started,
    };
    let table = report(&estimates, &notes);
    print!("{table}");
    let out = target_dir().join("bench-report.md");
    fs::write(&out, &table).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    eprintln!("bench: report written to {}", out.display());
    Ok(())
}

/// Criterion's results of this run.
struct Estimates {
    home: PathBuf,
    /// Files older than this are from an earlier run (e.g. with the peers,
    /// when this run could not build them) and are not reported.
    since: SystemTime,
}

impl Estimates {
    /// The mean time in ns of `function` in `group`, if measured in this run.
    fn mean_ns(&self, group: &str, function: &str) -> Option<f64> {
        let path = self
            .home
            .join(group)
            .join(function)
            .join("new")
            .join("estimates.json");
        let fresh = fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= self.since);
        if !fresh {
            return None;
        }
        mean_point_estimate(&fs::read_to_string(&path).ok()?)
    }
}

/// `mean.point_estimate` of a criterion `estimates.json`, found with plain
/// string search: `{"mean":{"confidence_interval":{...},"point_estimate":N,...`.
fn mean_point_estimate(json: &str) -> Option<f64> {
    let mean = &json[json.find("\"mean\"")?..];
    let key = "\"point_estimate\":";
    let rest = mean[mean.find(key)? + key.len()..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn ns(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}"))
}

/// The markdown report: one row per operation, then the verdict per target.
fn report(e: &Estimates, notes: &[String]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "## Codec benchmark (p2p-stun vs peers vs floor)\n");
    let _ = writeln!(
        t,
        "Mean time per operation, ns (criterion). Speedup = fastest peer / p2p \
         (target >= {PEER_TARGET}x); p2p / floor on verify and sign (target <= {FLOOR_TARGET}x).\n"
    );
    let _ = writeln!(
        t,
        "| operation | p2p ns | webrtc-rs ns | stun-rs ns | floor ns | floor-prekeyed ns \
         | fastest peer / p2p | p2p / floor | p2p / floor-prekeyed |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut verdicts = Vec::new();
    for op in OPERATIONS {
        let ours = e.mean_ns(op, OURS);
        let peers = PEERS.map(|p| e.mean_ns(op, p));
        let fastest = peers.iter().flatten().copied().reduce(f64::min);
        let (floor, prekeyed) = (e.mean_ns(op, FLOOR), e.mean_ns(op, FLOOR_PREKEYED));
        let speedup = ratio(fastest, ours);
        let over_floor = ratio(ours, floor);
        let over_prekeyed = ratio(ours, prekeyed);
        let x = |r: Option<f64>| r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}x"));
        let _ = writeln!(
            t,
            "| {op} | {} | {} | {} | {} | {} | {} | {} | {} |",
            ns(ours),
            ns(peers[0]),
            ns(peers[1]),
            ns(floor),
            ns(prekeyed),
            x(speedup),
            x(over_floor),
            x(over_prekeyed),
        );
        verdicts.push(match speedup {
            Some(s) if s >= PEER_TARGET => format!("{op}: {s:.2}x the fastest peer: met"),
            Some(s) => format!("{op}: {s:.2}x the fastest peer: MISSED (target {PEER_TARGET}x)"),
            None => format!("{op}: no peer figures"),
        });
        if FLOORED.contains(&op) {
            verdicts.push(match over_floor {
                Some(r) if r <= FLOOR_TARGET => format!("{op}: {r:.2}x the floor: met"),
                Some(r) => {
                    format!("{op}: {r:.2}x the floor: MISSED (target {FLOOR_TARGET}x)")
                }
                None => format!("{op}: no floor figure"),
            });
        }
    }
    let _ = writeln!(t);
    for v in verdicts {
        let _ = writeln!(t, "- {v}");
    }
    for n in notes {
        let _ = writeln!(t, "\n**Note:** {n}");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_mean_of_criterion_estimates() {
        let json = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":41.2,"upper_bound":43.9},"point_estimate":42.5,"standard_error":0.6},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":40.0,"upper_bound":41.0},"point_estimate":40.5,"standard_error":0.2}}"#;
        assert_eq!(mean_point_estimate(json), Some(42.5));
        // Key order differs: median first.
        let json = r#"{"median":{"point_estimate":1.0},"mean":{"point_estimate":1.25e3}}"#;
        assert_eq!(mean_point_estimate(json), Some(1250.0));
        assert_eq!(mean_point_estimate("{}"), None);
    }

    #[test]
    fn missing_figures_are_na_not_zeros() {
        let e = Estimates {
            home: PathBuf::from("/nonexistent/criterion"),
            since: SystemTime::UNIX_EPOCH,
        };
        let r = report(&e, &["peers did not build".to_owned()]);
        assert!(r.contains("| decode | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |"));
        assert!(r.contains("decode: no peer figures"));
        assert!(r.contains("verify: no floor figure"));
        assert!(r.contains("**Note:** peers did not build"));
    }
}
