//! Fuzz `p2p_sdp::Candidate::parse`: it must not panic, and whatever it
//! reads must read back equal after writing (`Display` is its inverse).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2p_sdp::{Candidate, IceAttribute};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Candidate::parse(text) {
        let written = c.to_string();
        assert_eq!(Candidate::parse(&written).as_ref(), Ok(&c), "{written}");
        assert_eq!(Candidate::parse(&c.to_sdp_line()).as_ref(), Ok(&c));
    }
    if let Ok(a) = IceAttribute::parse(text) {
        assert_eq!(IceAttribute::parse(&a.to_sdp_line()).as_ref(), Ok(&a));
    }
});
