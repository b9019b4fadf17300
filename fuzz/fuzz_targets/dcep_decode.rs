//! DCEP (RFC 8832) messages from arbitrary bytes: decoding never panics,
//! and what decodes encodes to bytes that decode equal (not always the
//! same bytes: a reliable channel's Reliability Parameter is ignored, §5.1,
//! and written back as 0).
#![no_main]
use libfuzzer_sys::fuzz_target;
use p2p_datachannel::dcep::DcepMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = DcepMessage::decode(data) {
        let bytes = m.to_vec().expect("a decoded message encodes");
        assert_eq!(bytes.len(), data.len());
        assert_eq!(DcepMessage::decode(&bytes), Ok(m));
    }
});
