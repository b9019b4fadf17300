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
const PROTOCOL_CRATES: &[&str] = &["stun", "turn", "ice", "sdp", "dtls", "datachannel"];

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
