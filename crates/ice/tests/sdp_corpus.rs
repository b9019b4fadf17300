//! Replays the committed `sdp_candidate` fuzz corpus (`fuzz/corpus` at the
//! repository root) through the one candidate grammar (p2p-sdp's) and into
//! the agent's candidates, as the `sdp_candidate` fuzz target does on
//! nightly: no panic, a converted candidate writes itself back to the same
//! candidate, and the browsers' seeds give what the agent can use or a
//! typed reason it cannot.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::path::Path;

use p2p_ice::{Candidate, CandidateError, CandidateKind};

fn seed(name: &str) -> Option<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/sdp_candidate")
        .join(name);
    fs::read_to_string(path).ok()
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/sdp_candidate");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| fs::read(&p).ok().map(|b| (p.display().to_string(), b)))
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_converts_or_says_why_and_converted_ones_round_trip() {
    let files = corpus();
    assert!(files.len() >= 5, "the seed corpus is missing");
    let mut converted = 0;
    for (path, bytes) in files {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let Ok(sdp) = p2p_sdp::Candidate::parse(text) else {
            continue;
        };
        if let Ok(c) = Candidate::from_sdp(&sdp) {
            converted += 1;
            assert_eq!(Candidate::from_sdp(&c.to_sdp()).as_ref(), Ok(&c), "{path}");
            assert_eq!(
                c.to_string().parse::<Candidate>().as_ref(),
                Ok(&c),
                "{path}"
            );
        }
    }
    assert!(
        converted >= 3,
        "the seeds should mostly be usable candidates"
    );
}

#[test]
fn a_browsers_mdns_host_candidate_is_an_unresolved_name_not_a_syntax_error() {
    let Some(line) = seed("chromium_mdns_host") else {
        panic!("the seed chromium_mdns_host is missing");
    };
    // p2p-sdp's grammar accepts it ...
    let sdp = p2p_sdp::Candidate::parse(line.trim()).unwrap();
    // ... and the agent says it needs the name resolved.
    assert_eq!(
        Candidate::from_sdp(&sdp),
        Err(CandidateError::MdnsName(
            "6c0b3b8a-5d6e-4d4b-9f5e-7f2b8a7c9d10.local".into()
        ))
    );
    let resolved = Candidate::from_sdp_resolved(&sdp, "192.168.1.5".parse().unwrap()).unwrap();
    assert_eq!(
        (resolved.kind(), resolved.address()),
        (CandidateKind::Host, "192.168.1.5:54323".parse().unwrap())
    );
}

#[test]
fn chromiums_tcp_candidate_is_read_with_its_tcptype_and_one_without_is_refused() {
    let Some(line) = seed("chromium_tcp_passive") else {
        panic!("the seed chromium_tcp_passive is missing");
    };
    let sdp = p2p_sdp::Candidate::parse(line.trim()).unwrap();
    let c = Candidate::from_sdp(&sdp).unwrap();
    assert_eq!(
        (c.transport(), c.tcp_type(), c.kind()),
        (
            p2p_proto::Transport::Tcp,
            Some(p2p_ice::TcpType::Passive),
            CandidateKind::ServerReflexive
        )
    );
    assert!(c.to_string().contains("tcptype passive"), "{c}");
    // RFC 6544 §4.5: a TCP candidate without tcptype says nothing of how to
    // connect: refused.
    let bare = p2p_sdp::Candidate::parse("candidate:1 1 tcp 1 10.0.0.1 9 typ host").unwrap();
    assert_eq!(
        Candidate::from_sdp(&bare),
        Err(CandidateError::UnsupportedTransport(
            p2p_sdp::Transport::Tcp
        ))
    );
}
