//! DCEP (RFC 8832) messages from arbitrary bytes: decoding never panics,
//! and what decodes encodes back to the same bytes and decodes equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p2p_datachannel::dcep::DcepMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = DcepMessage::decode(data) {
        let bytes = m.to_vec().expect("a decoded message encodes");
        assert_eq!(bytes, data, "encode is the inverse of decode");
        assert_eq!(DcepMessage::decode(&bytes), Ok(m));
    }
});
