//! Any bytes into the ChannelData decoder: nothing may panic, and what decodes
//! re-encodes to a frame that decodes the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p2p_stun::{classify, ChannelData};

fuzz_target!(|data: &[u8]| {
    let _ = classify(data);
    if let Ok(cd) = ChannelData::decode(data) {
        let mut out = Vec::new();
        cd.encode(&mut out, true).unwrap();
        assert_eq!(ChannelData::decode(&out).unwrap(), cd);
    }
});
