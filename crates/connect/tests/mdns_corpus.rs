//! Replays the committed fuzz corpus `fuzz/corpus/mdns_decode` on every
//! `cargo test`: each input decodes to address records or fails with a
//! typed error; what decodes round-trips; the seeds that are genuine
//! answers resolve a pending name in the resolver, the rest resolve
//! nothing.

use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use p2p_connect::mdns::{
    decode_answers, decode_questions, encode_response, is_mdns_name, MdnsConfig, MdnsError,
    MdnsEvent, MdnsOutput, MdnsResolver,
};
use p2p_proto::{Datagram, Machine, Transport};

const NAME: &str = "1f0e8a2c-6d3b-4b1e-9c11-7d0b9f3e2a10.local";

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/mdns_decode");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "empty corpus {}", dir.display());
    out
}

/// What the resolver makes of `bytes` with NAME pending.
fn resolve_with(bytes: &[u8]) -> Option<Vec<IpAddr>> {
    let local = "0.0.0.0:5353".parse().unwrap();
    let mut r = MdnsResolver::new(MdnsConfig::new(local));
    let t0 = Instant::now();
    r.handle_timeout(t0);
    r.resolve(t0, NAME).unwrap();
    let from = "192.168.1.7:5353".parse().unwrap();
    let _ = r.handle_input(t0, Datagram::new(Transport::Udp, from, local, bytes));
    let mut found = None;
    while let Some(o) = r.poll_output() {
        if let MdnsOutput::Event(MdnsEvent::Resolved { addresses, .. }) = o {
            found = Some(addresses);
        }
    }
    found
}

#[test]
fn mdns_corpus_decodes_or_fails_typed_round_trips_and_resolves_only_real_answers() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    for (name, bytes) in corpus() {
        let decoded = decode_answers(&bytes);
        if let Ok(records) = &decoded {
            let named: Vec<_> = records
                .iter()
                .filter(|r| is_mdns_name(&r.name))
                .cloned()
                .collect();
            if !named.is_empty() {
                let again = encode_response(&named).unwrap();
                assert_eq!(decode_answers(&again).as_ref(), Ok(&named), "{name}");
            }
        }
        // The responder's reading: a query's questions; a response is not one.
        let questions = decode_questions(&bytes);
        if name == "query" {
            assert!(
                questions.as_ref().is_ok_and(|q| !q.is_empty()),
                "{name}: {questions:?}"
            );
        }
        if name.starts_with("response") || name == "goodbye" {
            assert_eq!(questions, Err(MdnsError::NotAQuery), "{name}");
        }
        let resolved = resolve_with(&bytes);
        let (want_decoded, want_resolved): (Result<usize, MdnsError>, Option<Vec<IpAddr>>) =
            match name.as_str() {
                "response_a" | "ptr_then_a" => (Ok(1), Some(vec![ip("192.168.1.7")])),
                "response_a_aaaa_compressed" => {
                    (Ok(2), Some(vec![ip("192.168.1.7"), ip("fd00::7")]))
                }
                // A goodbye withdraws; it resolves nothing.
                "goodbye" => (Ok(1), None),
                "query" => (Err(MdnsError::NotAResponse), None),
                "too_many_records" => (Err(MdnsError::TooManyRecords), None),
                "compression_loop" => {
                    assert!(matches!(decoded, Err(MdnsError::Malformed(_))), "{name}");
                    assert_eq!(resolved, None, "{name}");
                    continue;
                }
                // Inputs the fuzzer adds later: no panic is the rule.
                _ => continue,
            };
        assert_eq!(decoded.map(|r| r.len()), want_decoded, "{name}");
        assert_eq!(resolved, want_resolved, "{name}");
    }
}
