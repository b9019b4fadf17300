//! Release chores: `publish-check` (every published crate packages, and
//! its path dependencies resolve to the other crates' packages) and
//! `docs` (shell completions and man pages of `p2p`, generated from its
//! CLI definition).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo, root, run};

/// A crate of `crates/` and whether it is published (`publish = false`
/// marks those that are not).
pub(crate) struct Krate {
    pub(crate) name: String,
    pub(crate) published: bool,
}

/// The crates under `crates/`, by directory name.
pub(crate) fn crates() -> Result<Vec<Krate>, String> {
    let mut out = Vec::new();
    let dir = root().join("crates");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    entries.sort();
    for d in entries {
        let text = std::fs::read_to_string(d.join("Cargo.toml"))
            .map_err(|e| format!("{}: {e}", d.display()))?;
        let name = package_key(&text, "name")
            .ok_or_else(|| format!("{}: no package name", d.display()))?;
        let published = package_key(&text, "publish").as_deref() != Some("false");
        out.push(Krate { name, published });
    }
    Ok(out)
}

/// The value of `key = ...` in the `[package]` table (quotes stripped).
pub(crate) fn package_key(manifest: &str, key: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_package = l == "[package]";
            continue;
        }
        if !in_package {
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            if k.trim() == key {
                return Some(v.trim().trim_matches('"').to_owned());
            }
        }
    }
    None
}

/// Workspace members outside `crates/` that are never published.
const UNPUBLISHED_MEMBERS: [&str; 2] = ["p2p-benches", "xtask"];

/// `cargo publish --dry-run` of every published crate together (cargo
/// packages the workspace's crates as one set: a path dependency resolves
/// to the other crate's package, not to crates.io, where it is not yet),
/// in dependency order. Without `--verify` the packages are not built
/// (seconds); with it each is built from its own `.crate` as crates.io
/// would (minutes).
pub(crate) fn publish_check(args: &[String]) -> Result<(), String> {
    let verify = args.iter().any(|a| a == "--verify");
    let crates = crates()?;
    let mut cmd = cargo();
    cmd.args(["publish", "--dry-run", "--workspace", "--allow-dirty"]);
    if !verify {
        cmd.arg("--no-verify");
    }
    for n in UNPUBLISHED_MEMBERS {
        cmd.args(["--exclude", n]);
    }
    for k in crates.iter().filter(|k| !k.published) {
        cmd.args(["--exclude", &k.name]);
    }
    run(&mut cmd)?;
    let published: Vec<&str> = crates
        .iter()
        .filter(|k| k.published)
        .map(|k| k.name.as_str())
        .collect();
    eprintln!(
        "publish-check: {} crates package: {}",
        published.len(),
        published.join(", ")
    );
    Ok(())
}

/// Build `p2p` and write its completions (bash, zsh, fish) and man pages
/// into `target/docs/` (or the directory given).
pub(crate) fn docs(args: &[String]) -> Result<(), String> {
    let out = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("docs"));
    run(cargo().args(["build", "--quiet", "-p", "p2p-cli", "--bin", "p2p"]))?;
    let p2p = target_dir().join("debug").join("p2p");
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions).map_err(|e| format!("{}: {e}", completions.display()))?;
    for (shell, file) in [("bash", "p2p.bash"), ("zsh", "_p2p"), ("fish", "p2p.fish")] {
        let o = Command::new(&p2p)
            .args(["completions", shell])
            .output()
            .map_err(|e| format!("{}: {e}", p2p.display()))?;
        if !o.status.success() || o.stdout.is_empty() {
            return Err(format!("p2p completions {shell} failed"));
        }
        write(&completions.join(file), &o.stdout)?;
    }
    let man = out.join("man");
    let mut cmd = Command::new(&p2p);
    cmd.args(["man", "--out"]).arg(&man);
    run(&mut cmd)?;
    let pages = std::fs::read_dir(&man)
        .map_err(|e| format!("{}: {e}", man.display()))?
        .count();
    if pages < 2 {
        return Err(format!("only {pages} man page(s) in {}", man.display()));
    }
    eprintln!(
        "docs: completions in {}, {pages} man pages in {}",
        completions.display(),
        man.display()
    );
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}
