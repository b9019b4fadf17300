//! Fuzz `p2p_dtls::Fingerprint::parse` (the `a=fingerprint` value) and the
//! `a=setup` value: no panic, and whatever parses reads back equal after
//! writing, with a digest as long as its hash function makes them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2p_dtls::{Fingerprint, Setup};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(f) = Fingerprint::parse(text) {
        assert_eq!(f.digest().len(), f.hash_function().digest_len());
        assert_eq!(Fingerprint::parse(&f.to_string()).as_ref(), Ok(&f));
    }
    if let Ok(s) = text.parse::<Setup>() {
        assert_eq!(s.to_string().parse::<Setup>(), Ok(s));
    }
});
