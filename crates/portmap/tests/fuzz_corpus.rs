//! Replays the committed fuzz corpus `fuzz/corpus/portmap_decode` on every
//! `cargo test`: each input decodes or fails with a typed error (the
//! well-formed samples decode), and a client fed it as its gateway's answer
//! in every phase never panics and still settles.

#![allow(clippy::disallowed_methods)] // t0 from the real clock; simulated after
use std::path::Path;
use std::time::{Duration, Instant};

use p2p_portmap::{PortMapConfig, PortMapper, Response};
use p2p_proto::{Datagram, Machine};

fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "empty corpus {}", dir.display());
    out
}

#[test]
fn portmap_corpus_decodes_or_fails_typed_and_no_phase_of_the_client_panics() {
    let mut decoded = 0;
    for (name, bytes) in corpus("portmap_decode") {
        if Response::decode(&bytes).is_ok() {
            decoded += 1;
        }
        let t0 = Instant::now();
        let local = "10.0.2.2:40000".parse().unwrap();
        let mut m =
            PortMapper::new(PortMapConfig::new("10.0.2.1".parse().unwrap(), local).with_seed(1));
        m.handle_timeout(t0);
        let gw = m.config().gateway;
        let mut now = t0;
        for step in 0..40 {
            let _ = m.handle_input(now, Datagram::udp(gw, local, &bytes));
            while m.poll_output().is_some() {}
            if step == 20 {
                m.close(now);
            }
            let Some(at) = m.poll_timeout() else { break };
            assert!(at - t0 < Duration::from_secs(7300), "{name}");
            now = at;
            m.handle_timeout(now);
            while m.poll_output().is_some() {}
        }
        m.close(now);
        while m.poll_output().is_some() {}
    }
    assert!(decoded >= 8, "the well-formed samples decode ({decoded})");
}
