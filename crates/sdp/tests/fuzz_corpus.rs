//! Replays the committed fuzz corpus (`fuzz/corpus/sdp_*` at the repository
//! root) through the parsers: no panic, and whatever parses reads back equal
//! after writing. This is what the `sdp_candidate` and `sdp_session` fuzz
//! targets check, on stable Rust.

use std::fs;
use std::path::{Path, PathBuf};

use p2p_sdp::{Candidate, SessionDescription};

fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<(PathBuf, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| fs::read(&p).ok().map(|b| (p, b)))
        .collect();
    files.sort();
    files
}

#[test]
fn sdp_candidate_corpus_round_trips() {
    let files = corpus("sdp_candidate");
    assert!(
        files.len() >= 5,
        "expected the committed seed corpus in fuzz/corpus/sdp_candidate, found {}",
        files.len()
    );
    let mut parsed = 0;
    for (path, bytes) in files {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        if let Ok(c) = Candidate::parse(text) {
            parsed += 1;
            assert_eq!(
                Candidate::parse(&c.to_string()).as_ref(),
                Ok(&c),
                "{}",
                path.display()
            );
        }
    }
    assert!(parsed >= 3, "the seeds should mostly be valid candidates");
}

#[test]
fn sdp_session_corpus_round_trips() {
    for (path, bytes) in corpus("sdp_session") {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        if let Ok(sd) = SessionDescription::parse(text) {
            assert_eq!(
                SessionDescription::parse(&sd.to_string()).as_ref(),
                Ok(&sd),
                "{}",
                path.display()
            );
        }
    }
}
