//! Replays the committed fuzz corpora on every `cargo test`:
//! `fuzz/corpus/dcep_decode` (each input decodes or fails with a typed
//! error; what decodes encodes to bytes that decode equal) and
//! `fuzz/corpus/sctp_association` (SCTP packets captured from a session:
//! fed raw, with one byte flipped and as garbage, into associations before
//! and after they are up, nothing panics and the associations still carry
//! a message afterwards).

mod common;

use std::path::Path;
use std::time::Duration;

use common::Pair;
use p2p_datachannel::dcep::DcepMessage;
use p2p_datachannel::{ChannelEvent, ChannelOptions};
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
fn dcep_decode_corpus_decodes_or_fails_typed_and_round_trips() {
    let mut decoded = 0;
    for (name, bytes) in corpus("dcep_decode") {
        let Ok(m) = DcepMessage::decode(&bytes) else {
            continue;
        };
        decoded += 1;
        let again = m.to_vec().unwrap();
        assert_eq!(again.len(), bytes.len(), "{name}");
        assert_eq!(DcepMessage::decode(&again), Ok(m), "{name}");
    }
    assert!(decoded >= 5, "the well-formed samples decode");
}

fn feed(p: &mut Pair, to_server: bool, bytes: &[u8]) {
    let (c, s) = common::addrs();
    let now = p.now;
    if to_server {
        let _ = p
            .server
            .m
            .handle_input(now, Datagram::new(s.transport, c.local, s.local, bytes));
    } else {
        let _ = p
            .client
            .m
            .handle_input(now, Datagram::new(c.transport, s.local, c.local, bytes));
    }
    p.drain();
}

#[test]
fn sctp_association_corpus_never_panics_an_association_before_or_after_it_is_up() {
    let packets = corpus("sctp_association");
    assert!(packets.len() >= 10);
    // Before: into idle and connecting associations.
    let mut p = Pair::new(300);
    for (_, b) in &packets {
        feed(&mut p, true, b);
        feed(&mut p, false, b);
    }
    let mut p = Pair::new(301);
    p.start();
    for (_, b) in &packets {
        feed(&mut p, false, b);
    }
    // After: each packet raw, with each of its first 64 bytes flipped, and
    // cut short, into a fresh established pair, which must still deliver.
    for (name, b) in &packets {
        let mut p = Pair::new(302);
        p.connect();
        let id = p
            .client
            .m
            .open_channel(p.now, ChannelOptions::new("after"))
            .unwrap();
        feed(&mut p, true, b);
        for i in 0..b.len().min(64) {
            let mut m = b.clone();
            m[i] ^= 0x41;
            feed(&mut p, true, &m);
            feed(&mut p, false, &m);
        }
        for n in [0, 1, 11, 12, 13, 16, b.len() / 2] {
            feed(&mut p, true, &b[..n.min(b.len())]);
        }
        // A foreign packet may have closed it (an ABORT or SHUTDOWN with a
        // tag that matched); otherwise the channel still works.
        let closed = |p: &Pair| {
            p.client.has(|e| matches!(e, ChannelEvent::Closed(_)))
                || p.server.has(|e| matches!(e, ChannelEvent::Closed(_)))
        };
        p.run_for(Duration::from_millis(200));
        if closed(&p) {
            continue;
        }
        p.client.m.send(p.now, id, b"still here", false).unwrap();
        let mut got = Vec::new();
        p.run_until(Duration::from_secs(10), 10_000, |p| {
            got.extend(p.server.take_messages());
            !got.is_empty() || closed(p)
        });
        assert!(
            closed(&p) || got == vec![(id, b"still here".to_vec(), false)],
            "{name}: {got:?}"
        );
    }
}
