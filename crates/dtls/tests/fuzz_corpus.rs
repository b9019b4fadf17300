//! Replays the committed fuzz corpus (`fuzz/corpus/dtls_endpoint` and
//! `fuzz/corpus/fingerprint_parse` at the repository root) on stable Rust,
//! checking what the `dtls_endpoint` and `fingerprint_parse` fuzz targets
//! check. The endpoint's world is the fuzz crate's own file, included by
//! path, so the two cannot drift apart.

use std::fs;
use std::path::{Path, PathBuf};

use p2p_dtls::{Fingerprint, Setup};

#[path = "../../../fuzz/src/dtls.rs"]
#[allow(dead_code, unreachable_pub)]
mod dtls_world;

fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| fs::read(&p).ok().map(|b| (p, b)))
        .collect();
    files.sort();
    files
}

#[test]
fn dtls_endpoint_corpus_replays_with_its_invariants_held() {
    let files = corpus("dtls_endpoint");
    assert!(files.len() >= 8, "seed corpus too small: {}", files.len());
    for (path, bytes) in &files {
        let seen = dtls_world::run(bytes);
        let name = path.file_name().unwrap().to_string_lossy();
        // The named seeds do what their names say (others, found by the
        // fuzzer, only have to keep the invariants).
        let expect = |connected: bool, data: bool| {
            assert_eq!(seen.connected, connected, "{name}: {seen:?}");
            assert_eq!(seen.data > 0, data, "{name}: {seen:?}");
        };
        match &*name {
            "client_dtls12_data_close"
            | "server_dtls12_data_close"
            | "client_dtls13"
            | "server_dtls13"
            | "hybrid_client_dtls12_server"
            | "garbage_connected" => expect(true, true),
            "wrong_fingerprint_client" | "wrong_fingerprint_server_dtls13" => {
                expect(false, false);
                assert!(seen.closed, "{name}");
            }
            "loss_and_retransmission" | "garbage_mid_handshake" => expect(true, false),
            "timeout" => {
                expect(false, false);
                assert!(seen.closed, "{name}");
            }
            _ => {}
        }
    }
}

#[test]
fn fingerprint_parse_corpus_round_trips() {
    let files = corpus("fingerprint_parse");
    assert!(files.len() >= 5, "seed corpus too small: {}", files.len());
    let mut parsed = 0;
    for (path, bytes) in files {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        if let Ok(f) = Fingerprint::parse(text) {
            parsed += 1;
            assert_eq!(f.digest().len(), f.hash_function().digest_len());
            assert_eq!(
                Fingerprint::parse(&f.to_string()).as_ref(),
                Ok(&f),
                "{}",
                path.display()
            );
        }
        if let Ok(s) = text.parse::<Setup>() {
            assert_eq!(s.to_string().parse::<Setup>(), Ok(s));
        }
    }
    assert!(parsed >= 4, "the seeds should mostly be valid fingerprints");
}
