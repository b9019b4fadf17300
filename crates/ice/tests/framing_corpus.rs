//! Replays the committed fuzz corpus `fuzz/corpus/rfc4571_framing` on every
//! `cargo test`, with the fuzz target's rules: the first byte is the size
//! of the pieces the rest arrives in; the packets the deframer hands out,
//! framed again, are exactly the bytes it consumed.

use std::path::Path;

use p2p_ice::framing::{frame, Deframer, MAX_BUFFERED};

#[test]
fn framing_corpus_deframes_to_what_was_framed_whatever_the_cuts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/rfc4571_framing");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let Some((&cut, stream)) = data.split_first() else {
            continue;
        };
        let mut d = Deframer::new();
        let (mut again, mut packets) = (Vec::new(), 0);
        for chunk in stream.chunks(usize::from(cut).max(1)) {
            d.push(chunk).unwrap();
            while let Some(p) = d.next_packet() {
                again.extend(frame(&p).unwrap());
                packets += 1;
            }
            assert!(d.pending() <= MAX_BUFFERED);
        }
        assert_eq!(
            again.len() + d.pending(),
            stream.len(),
            "{}",
            path.display()
        );
        assert_eq!(&again[..], &stream[..again.len()], "{}", path.display());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let want = match name.as_str() {
            "two_packets_whole" | "one_byte_pieces" => Some(2),
            "cut_mid_length" => Some(1),
            "max_length_claim" => Some(0),
            _ => None,
        };
        if let Some(w) = want {
            assert_eq!(packets, w, "{name}");
        }
        seen += 1;
    }
    assert!(seen >= 4, "corpus {}", dir.display());
}
