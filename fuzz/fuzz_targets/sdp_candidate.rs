//! Fuzz `p2p_sdp::Candidate::parse`: it must not panic, and whatever it
//! reads must read back equal after writing (`Display` is its inverse).
//! What the ICE agent makes of it (`p2p_ice::Candidate::from_sdp`) must
//! not panic either, and a candidate it takes writes itself back to the
//! same candidate.
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
        if let Ok(ice) = p2p_ice::Candidate::from_sdp(&c) {
            let back = p2p_ice::Candidate::from_sdp(&ice.to_sdp());
            assert_eq!(back.as_ref(), Ok(&ice), "{written}");
        }
    }
    if let Ok(a) = IceAttribute::parse(text) {
        assert_eq!(IceAttribute::parse(&a.to_sdp_line()).as_ref(), Ok(&a));
    }
});
