//! Decode, re-encode every attribute raw, decode again: the same attributes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p2p_stun::{Message, MessageBuilder};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Message::decode(data) else { return };
    let mut out = Vec::new();
    let mut b = MessageBuilder::new(&mut out, m.typ(), m.transaction_id()).unwrap();
    let mut n = 0;
    for a in m
        .attributes()
        .filter(|a| !matches!(a.typ.0, 0x0008 | 0x001C | 0x8028))
    {
        b.add_raw(a.typ, a.value).unwrap();
        n += 1;
    }
    b.finish();
    let again = Message::decode(&out).expect("re-encoded message decodes");
    assert_eq!(again.attributes().count(), n);
    for (x, y) in again.attributes().zip(
        m.attributes()
            .filter(|a| !matches!(a.typ.0, 0x0008 | 0x001C | 0x8028)),
    ) {
        assert_eq!(x, y);
    }
});
