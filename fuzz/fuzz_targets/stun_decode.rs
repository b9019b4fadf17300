//! Any bytes into the STUN decoder and every getter: nothing may panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p2p_stun::attr::*;
use p2p_stun::{next_frame_len, Key, Message};

fuzz_target!(|data: &[u8]| {
    let _ = next_frame_len(data);
    if let Ok(m) = Message::decode(data) {
        let _ = m.get::<XorMappedAddress>();
        let _ = m.get::<MappedAddress>();
        let _ = m.get::<Username>();
        let _ = m.get::<ErrorCode>();
        let _ = m
            .get::<UnknownAttributes>()
            .map(|u| u.map(|u| u.iter().count()));
        let _ = m
            .get::<PasswordAlgorithms>()
            .map(|u| u.map(|u| u.iter().count()));
        let _ = m.get::<AddressErrorCode>();
        let _ = m.get::<ChannelNumber>();
        let _ = m.get::<EvenPort>();
        let _ = m.verify_fingerprint();
        let key = Key::short_term("fuzz").unwrap();
        let _ = m.verify_integrity(&key);
        let _ = m.verify_integrity_sha256(&key);
        let _ = m.unknown_comprehension_required(|t| t.is_known()).count();
        // The attribute index built by `decode` must agree with a walk.
        for a in m.attributes() {
            let walked = m.attributes().find(|b| b.typ == a.typ);
            assert_eq!(m.get_raw(a.typ), walked);
        }
    }
});
