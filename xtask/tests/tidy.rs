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
/// sans-IO `Session` of p2p-connect.
fn sans_io_sources() -> Vec<PathBuf> {
    let r = root();
    let mut files = Vec::new();
    for krate in ["stun", "turn", "ice", "sdp", "portmap"] {
        rust_files(&r.join("crates").join(krate).join("src"), &mut files);
    }
    for f in ["session.rs", "negotiate.rs"] {
        let f = r.join("crates/connect/src").join(f);
        if f.exists() {
            files.push(f);
        }
    }
    // (They became module directories.)
    for d in ["session", "negotiate"] {
        rust_files(&r.join("crates/connect/src").join(d), &mut files);
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
