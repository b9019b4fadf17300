//! Replays the committed fuzz corpus (fuzz/corpus/stun_decode and
//! fuzz/corpus/channel_data) on every `cargo test`: each input must decode or
//! fail with a typed error, and what decodes must round-trip.

use std::path::Path;

use p2p_stun::{classify, next_frame_len, ChannelData, Key, Message, MessageBuilder};

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
fn stun_decode_corpus() {
    let key = Key::short_term("fuzz").unwrap();
    let mut decoded = 0;
    for (name, bytes) in corpus("stun_decode") {
        let _ = next_frame_len(&bytes);
        let Ok(m) = Message::decode(&bytes) else {
            continue;
        };
        decoded += 1;
        let _ = m.verify_fingerprint();
        let _ = m.verify_integrity(&key);
        // The index `decode` builds finds what a walk finds.
        for a in m.attributes() {
            let walked = m.attributes().find(|b| b.typ == a.typ);
            assert_eq!(m.get_raw(a.typ), walked, "{name}: {:?}", a.typ);
        }
        let mut out = Vec::new();
        let mut b = MessageBuilder::new(&mut out, m.typ(), m.transaction_id()).unwrap();
        for a in m.attributes() {
            b.add_raw(a.typ, a.value).unwrap();
        }
        b.finish();
        let again = Message::decode(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(again.attributes().eq(m.attributes()), "{name}");
    }
    assert!(decoded >= 2, "the RFC 5769 samples decode");
}

#[test]
fn channel_data_corpus() {
    for (name, bytes) in corpus("channel_data") {
        let _ = classify(&bytes);
        if let Ok(cd) = ChannelData::decode(&bytes) {
            let mut out = Vec::new();
            cd.encode(&mut out, true).unwrap();
            assert_eq!(ChannelData::decode(&out).unwrap(), cd, "{name}");
        }
    }
}
