//! Architecture invariants, checked by `cargo test` (rust-analyzer's tidy):
//! protocol crates are sans-IO: no clock, no sockets, no runtime.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Sources that must stay sans-IO: the protocol crates' `src/`, and the
/// sans-IO `Session` and `Negotiation` of p2p-connect.
fn sans_io_sources() -> Vec<PathBuf> {
    let r = root();
    let mut files = Vec::new();
    for krate in PROTOCOL_CRATES.iter().chain(&["proto"]) {
        let dir = r.join("crates").join(krate).join("src");
        assert!(
            dir.is_dir(),
            "{} is gone: update PROTOCOL_CRATES",
            dir.display()
        );
        rust_files(&dir, &mut files);
    }
    for d in ["session", "negotiate"] {
        let dir = r.join("crates/connect/src").join(d);
        assert!(
            dir.is_dir(),
            "{} is gone: update the tidy test",
            dir.display()
        );
        rust_files(&dir, &mut files);
    }
    files
}

#[test]
fn protocol_crates_read_no_clock_and_own_no_socket() {
    let forbidden = [
        "Instant::now(",
        "SystemTime::now(",
        "tokio::",
        "std::net::UdpSocket",
        "std::net::TcpStream",
        "std::thread::spawn",
    ];
    let mut violations = Vec::new();
    let files = sans_io_sources();
    assert!(!files.is_empty(), "no protocol sources found under crates/");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        // Unit tests may take a t0 from the real clock.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            let l = line.trim_start();
            if l.starts_with("//") {
                continue;
            }
            for pat in forbidden {
                if l.contains(pat) {
                    violations.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "sans-IO violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn no_stubs_in_crates() {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    rust_files(&root().join("xtask/src"), &mut files);
    let pats = [concat!("todo", "!("), concat!("unimplemented", "!(")];
    let hits: Vec<_> = files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines()
                .enumerate()
                .filter(|(_, l)| pats.iter().any(|p| l.contains(p)))
                .map(|(i, l)| format!("{}:{}: {}", f.display(), i + 1, l.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(hits.is_empty(), "stubs:\n{}", hits.join("\n"));
}

/// The protocol crates: sans-IO machines on the one contract of
/// `p2p-proto` (docs/ARCHITECTURE.md, "The contract").
const PROTOCOL_CRATES: &[&str] = &[
    "stun",
    "turn",
    "ice",
    "sdp",
    "dtls",
    "datachannel",
    "portmap",
];

/// Lines of code before a file's `#[cfg(test)] mod tests`: not blank, not
/// only a comment.
fn code_lines(text: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let mut n = 0;
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim();
        if t == "#[cfg(test)]"
            && !l.starts_with(' ')
            && lines.get(i + 1).is_some_and(|m| m.starts_with("mod "))
        {
            break;
        }
        if !t.is_empty() && !t.starts_with("//") {
            n += 1;
        }
    }
    n
}

#[test]
fn no_source_file_is_too_big_to_hold_in_your_head() {
    const LIMIT: usize = 800;
    let mut files = Vec::new();
    for dir in ["crates", "xtask/src", "benches"] {
        rust_files(&root().join(dir), &mut files);
    }
    let too_big: Vec<String> = files
        .iter()
        .filter(|f| {
            let s = f.to_string_lossy();
            !s.contains("/tests/") && !s.ends_with("tests.rs") && !s.contains("/target")
        })
        .filter_map(|f| {
            let n = code_lines(&std::fs::read_to_string(f).unwrap());
            (n > LIMIT).then(|| format!("{}: {n} lines of code", f.display()))
        })
        .collect();
    assert!(
        too_big.is_empty(),
        "split these along their jobs (at most {LIMIT} lines of non-test code):\n{}",
        too_big.join("\n")
    );
}

#[test]
fn every_machine_follows_the_one_contract() {
    let r = root();
    let mut problems = Vec::new();
    let mut machines = 0;
    for krate in PROTOCOL_CRATES.iter().copied().chain(["connect"]) {
        let dir = r.join("crates").join(krate).join("src");
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let code = text.split("\n#[cfg(test)]\nmod ").next().unwrap_or("");
            let name = f.display().to_string();
            // The STUN client transaction is a retransmission schedule
            // inside the machines that send requests (the ICE agent, the
            // TURN client): it has no addresses and is never driven on its
            // own, so it is a part of a machine, not one.
            if name.ends_with("crates/stun/src/transaction.rs") {
                continue;
            }
            // One set of I/O types: p2p-proto's.
            for own in [
                "pub struct Datagram",
                "pub struct Transmit",
                "pub enum Transport",
                "pub struct FiveTuple",
            ] {
                if code.contains(own) && krate != "sdp" {
                    problems.push(format!("{name}: defines its own `{own}` (use p2p-proto's)"));
                }
            }
            // One drain: poll_output, not a queue per kind of output.
            for old in ["pub fn poll_transmit(", "pub fn poll_event("] {
                if code.contains(old) {
                    problems.push(format!("{name}: `{old}..)` (drain one poll_output)"));
                }
            }
            // No command takes `now` only to ignore it.
            if code.contains("let _ = now;") {
                problems.push(format!("{name}: a command ignores its `now`"));
            }
            // Every type with a timer is a Machine.
            machines += code
                .lines()
                .filter(|l| l.trim_start().starts_with("impl") && l.contains("Machine for "))
                .count();
            if code.contains("pub fn handle_timeout(") || code.contains("pub fn poll_timeout(") {
                problems.push(format!(
                    "{name}: `handle_timeout`/`poll_timeout` as inherent methods: implement \
                     p2p_proto::Machine instead"
                ));
            }
        }
    }
    assert!(machines >= 6, "only {machines} `impl Machine for` found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ------------------------------------------------------------ publishing

/// The value of `key` in the `[table]` of a manifest (quotes stripped);
/// `key.workspace = true` gives `Some("workspace")`.
fn manifest_key(manifest: &str, table: &str, key: &str) -> Option<String> {
    let mut inside = false;
    for line in manifest.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            inside = l == format!("[{table}]");
            continue;
        }
        if !inside {
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let k = k.trim();
        if k == key {
            return Some(v.trim().trim_matches('"').to_owned());
        }
        if k == format!("{key}.workspace") && v.trim() == "true" {
            return Some("workspace".to_owned());
        }
    }
    None
}

/// (directory, manifest text) of every crate under `crates/` that is
/// published (no `publish = false`).
fn published_crates() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    dirs.sort();
    for d in dirs {
        let text = std::fs::read_to_string(d.join("Cargo.toml")).unwrap();
        if manifest_key(&text, "package", "publish").as_deref() != Some("false") {
            out.push((d, text));
        }
    }
    assert!(out.len() >= 10, "published crates: {}", out.len());
    out
}

/// What crates.io shows and needs is in every published crate's manifest:
/// description, license, repository, keywords, categories, a README that
/// exists, a rust-version; and every dependency on a crate of this
/// workspace carries a version (a path alone cannot be published).
#[test]
fn published_crates_carry_the_metadata_crates_io_needs() {
    let root_manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let mut missing = Vec::new();
    for (dir, text) in published_crates() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        for key in [
            "description",
            "license",
            "repository",
            "keywords",
            "categories",
            "readme",
            "rust-version",
        ] {
            if manifest_key(&text, "package", key).is_none() {
                missing.push(format!("crates/{name}: no {key}"));
            }
        }
        if let Some(readme) = manifest_key(&text, "package", "readme") {
            if !dir.join(&readme).exists() {
                missing.push(format!("crates/{name}: {readme} is missing"));
            }
        }
    }
    // Our crates in [workspace.dependencies]: a version with each path,
    // except the unpublished netsim (dev-only; without a version cargo
    // drops it from the published crates' dev-dependencies).
    for line in root_manifest.lines() {
        let l = line.trim();
        if l.starts_with("p2p-") && l.contains("path = ") {
            let unpublished = l.starts_with("p2p-netsim ");
            if !unpublished && !l.contains("version = ") {
                missing.push(format!("Cargo.toml: {l} has no version"));
            }
            if unpublished && l.contains("version = ") {
                missing.push(format!(
                    "Cargo.toml: {l}: an unpublished crate with a version cannot be a dev-dependency of a published one"
                ));
            }
        }
    }
    assert!(
        root().join("CHANGELOG.md").exists(),
        "the workspace keeps a CHANGELOG.md"
    );
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

fn version_key(v: &str) -> Vec<u32> {
    let mut parts: Vec<u32> = v.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    parts.resize(3, 0);
    parts
}

/// The `rust-version` of a registry crate, from its manifest in cargo's
/// registry sources.
fn registry_rust_version(name: &str, version: &str) -> Option<String> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    for index in std::fs::read_dir(home.join("registry/src")).ok()?.flatten() {
        let m = index.path().join(format!("{name}-{version}/Cargo.toml"));
        if let Ok(text) = std::fs::read_to_string(&m) {
            return manifest_key(&text, "package", "rust-version");
        }
    }
    None
}

/// Each published crate states an MSRV no lower than any of its
/// dependencies' (as locked here, with all its features) and than its
/// path dependencies' own. Only the stable toolchain is installed where
/// this runs, so this is what is checked: the statement agrees with the
/// dependency tree; the clippy lint `incompatible_msrv` (on in `cargo
/// xtask lint`) flags standard library items newer than the stated
/// version; language features newer than it are not checked.
#[test]
fn each_published_crate_states_an_msrv_its_dependencies_allow() {
    let root_manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let workspace_msrv = manifest_key(&root_manifest, "workspace.package", "rust-version")
        .expect("workspace rust-version");
    let stated = |text: &str| match manifest_key(text, "package", "rust-version") {
        Some(v) if v == "workspace" => workspace_msrv.clone(),
        Some(v) => v,
        None => workspace_msrv.clone(),
    };
    let ours: std::collections::HashMap<String, String> = published_crates()
        .into_iter()
        .map(|(_, text)| {
            (
                manifest_key(&text, "package", "name").unwrap(),
                stated(&text),
            )
        })
        .collect();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut too_low = Vec::new();
    for (name, msrv) in &ours {
        let out = std::process::Command::new(&cargo)
            .current_dir(root())
            .args(["tree", "--offline", "-p", name, "--all-features"])
            .args(["-e", "normal,build", "--prefix", "none", "--format", "{p}"])
            .output()
            .expect("cargo tree runs");
        assert!(
            out.status.success(),
            "cargo tree -p {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut worst: Option<(Vec<u32>, String)> = None;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut words = line.split_whitespace();
            let (Some(dep), Some(v)) = (words.next(), words.next()) else {
                continue;
            };
            let v = v.trim_start_matches('v');
            let needs = if line.contains("(/") {
                ours.get(dep).cloned()
            } else {
                registry_rust_version(dep, v)
            };
            if let Some(n) = needs {
                let k = version_key(&n);
                if worst.as_ref().is_none_or(|(w, _)| k > *w) {
                    worst = Some((k, format!("{dep} {v} needs {n}")));
                }
            }
        }
        if let Some((need, why)) = worst {
            if version_key(msrv) < need {
                too_low.push(format!("{name} states {msrv}, but {why}"));
            }
        }
    }
    too_low.sort();
    assert!(too_low.is_empty(), "{}", too_low.join("\n"));
}

/// The workspace keeps a changelog (Keep a Changelog): an `[Unreleased]`
/// section on top, and every published crate named in it (in backquotes,
/// as the entries do), so that a crate added to the workspace comes with
/// its entry.
#[test]
fn the_changelog_has_an_unreleased_section_naming_every_published_crate() {
    let changelog = std::fs::read_to_string(root().join("CHANGELOG.md")).expect("CHANGELOG.md");
    let first = changelog
        .lines()
        .find(|l| l.starts_with("## "))
        .expect("a version section");
    assert_eq!(first, "## [Unreleased]", "the top section");
    let mut missing = Vec::new();
    for (dir, manifest) in published_crates() {
        let name = manifest_key(&manifest, "package", "name")
            .unwrap_or_else(|| panic!("{}: no package name", dir.display()));
        if !changelog.contains(&format!("`{name}`")) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "CHANGELOG.md does not name {missing:?}");
}
