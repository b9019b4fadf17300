//! RFC 4571 framing (ICE-TCP, RFC 6544 §3) from arbitrary bytes cut into
//! arbitrary pieces: the deframer never panics, never holds more than its
//! bound, and the packets it hands out, framed again, are exactly the bytes
//! it consumed (whatever the cuts).
#![no_main]
use libfuzzer_sys::fuzz_target;
use p2p_ice::framing::{frame, Deframer, MAX_BUFFERED};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the piece size, the rest is the stream.
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(cut).max(1);
    let mut d = Deframer::new();
    let mut again = Vec::new();
    let mut fed = 0;
    for chunk in stream.chunks(piece) {
        if d.push(chunk).is_err() {
            break;
        }
        fed += chunk.len();
        while let Some(p) = d.next_packet() {
            again.extend(frame(&p).expect("a packet that came in a frame fits one"));
        }
        assert!(d.pending() <= MAX_BUFFERED);
    }
    assert_eq!(again.len() + d.pending(), fed);
    assert_eq!(&again[..], &stream[..again.len()]);
});
