//! Decoding rules of RFC 8489 §5, §6.3 and §14, table-driven.

use p2p_stun::attr::{
    Data, ErrorCode, PasswordAlgorithm, Realm, Software, UnknownAttributes, Username,
    XorMappedAddress,
};
use p2p_stun::{
    AttrError, AttrType, DecodeError, EncodeError, IntegrityError, Key, Message, MessageBuilder,
    MessageClass, MessageType, Method, SliceBuf, TransactionId,
};

const TID: TransactionId = TransactionId::new([0x42; 12]);

fn binding_request() -> MessageType {
    MessageType::new(Method::BINDING, MessageClass::Request)
}

fn header(typ: u16, len: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&typ.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&0x2112A442u32.to_be_bytes());
    v.extend_from_slice(TID.as_bytes());
    v
}

fn with_attrs(attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (t, v) in attrs {
        body.extend_from_slice(&t.to_be_bytes());
        body.extend_from_slice(&(v.len() as u16).to_be_bytes());
        body.extend_from_slice(v);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    let mut m = header(0x0001, body.len() as u16);
    m.extend_from_slice(&body);
    m
}

#[test]
fn malformed_messages_are_typed_errors() {
    let mut overflow = with_attrs(&[(0x0006, b"abcd")]);
    overflow[22..24].copy_from_slice(&8u16.to_be_bytes());
    let mut after_fp = with_attrs(&[(0x8028, &[0; 4]), (0x8022, b"x")]);
    after_fp.truncate(after_fp.len());
    let cases: Vec<(&str, Vec<u8>, DecodeError)> = vec![
        ("empty", vec![], DecodeError::TooShort { len: 0 }),
        ("19 bytes", vec![0; 19], DecodeError::TooShort { len: 19 }),
        (
            "top bits",
            {
                let mut h = header(0x0001, 0);
                h[0] = 0x80;
                h
            },
            DecodeError::NotStun,
        ),
        (
            "unaligned",
            header(0x0001, 2),
            DecodeError::UnalignedLength { declared: 2 },
        ),
        (
            "length past end",
            header(0x0001, 4),
            DecodeError::LengthMismatch {
                declared: 4,
                available: 0,
            },
        ),
        (
            "trailing bytes",
            {
                let mut h = header(0x0001, 0);
                h.extend([0; 4]);
                h
            },
            DecodeError::LengthMismatch {
                declared: 0,
                available: 4,
            },
        ),
        (
            "attribute overflow",
            overflow,
            DecodeError::AttributeOverflow {
                attr: AttrType::USERNAME,
                offset: 20,
                len: 8,
            },
        ),
        (
            "after fingerprint",
            after_fp,
            DecodeError::FingerprintNotLast {
                attr: AttrType::SOFTWARE,
            },
        ),
    ];
    for (name, input, want) in cases {
        assert_eq!(
            Message::decode(&input).map(|m| m.typ()),
            Err(want),
            "{name}"
        );
    }
}

#[test]
fn server_answers_decode_errors_with_400_or_drops() {
    assert_eq!(DecodeError::NotStun.stun_code(), None);
    assert_eq!(DecodeError::TooShort { len: 3 }.stun_code(), None);
    assert_eq!(
        DecodeError::UnalignedLength { declared: 2 }.stun_code(),
        None
    );
    let bad_value = DecodeError::Attribute {
        attr: AttrType::XOR_MAPPED_ADDRESS,
        reason: AttrError::BadFamily(9),
    };
    assert_eq!(bad_value.stun_code(), Some(400));
}

#[test]
fn bad_attribute_values_surface_on_get() {
    let m = with_attrs(&[(0x0020, &[0, 9, 0, 0, 1, 2, 3, 4])]);
    let msg = Message::decode(&m).unwrap();
    assert_eq!(
        msg.get::<XorMappedAddress>(),
        Err(DecodeError::Attribute {
            attr: AttrType::XOR_MAPPED_ADDRESS,
            reason: AttrError::BadFamily(9)
        })
    );
    assert_eq!(msg.get::<Username>(), Ok(None));
}

#[test]
fn unknown_comprehension_required_attributes_are_listed_for_420() {
    let m = with_attrs(&[
        (0x0006, b"u"),
        (0x7777, b"?"),
        (0xC001, b"optional"),
        (0x0055, b""),
    ]);
    let msg = Message::decode(&m).unwrap();
    let unknown: Vec<_> = msg
        .unknown_comprehension_required(AttrType::is_known)
        .collect();
    assert_eq!(unknown, [AttrType(0x7777), AttrType(0x0055)]);
    // Build the 420 answer from the list.
    let mut out = Vec::new();
    let mut b = MessageBuilder::new(&mut out, msg.typ().error(), msg.transaction_id()).unwrap();
    b.add(&ErrorCode::from_code(420).unwrap()).unwrap();
    b.add(&UnknownAttributes::List(&unknown)).unwrap();
    b.finish();
    let resp = Message::decode(&out).unwrap();
    assert_eq!(resp.get::<ErrorCode>().unwrap().unwrap().code(), 420);
    assert_eq!(
        resp.get::<UnknownAttributes>()
            .unwrap()
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        unknown
    );
}

#[test]
fn attributes_after_message_integrity_are_ignored_except_sha256_and_fingerprint() {
    let key = Key::short_term("pass").unwrap();
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, binding_request(), TID).unwrap();
    b.add(&Username::new("a:b").unwrap()).unwrap();
    b.add_message_integrity(&key).unwrap();
    let len = b.finish();
    // Append a SOFTWARE after MESSAGE-INTEGRITY by hand (a peer may do this);
    // the header length grows, which does not affect MI verification.
    buf.extend_from_slice(&[0x80, 0x22, 0x00, 0x01, b'x', 0, 0, 0]);
    let new_len = (len - 20 + 8) as u16;
    buf[2..4].copy_from_slice(&new_len.to_be_bytes());
    let msg = Message::decode(&buf).unwrap();
    assert_eq!(
        msg.get::<Software>().unwrap(),
        None,
        "SOFTWARE after MI is ignored"
    );
    msg.verify_integrity(&key).unwrap();
    let types: Vec<_> = msg.attributes().map(|a| a.typ).collect();
    assert_eq!(types, [AttrType::USERNAME, AttrType::MESSAGE_INTEGRITY]);
}

#[test]
fn sha256_integrity_with_and_without_sha1_and_truncated() {
    for alg in [PasswordAlgorithm::Md5, PasswordAlgorithm::Sha256] {
        let key = Key::long_term("user", "realm", "pass", alg).unwrap();
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, binding_request(), TID).unwrap();
        b.add(&Username::new("user").unwrap()).unwrap();
        b.add(&Realm::new("realm").unwrap()).unwrap();
        b.add_message_integrity(&key).unwrap();
        b.add_message_integrity_sha256(&key).unwrap();
        b.add_fingerprint().unwrap();
        b.finish();
        let msg = Message::decode(&buf).unwrap();
        msg.verify_integrity(&key).unwrap();
        msg.verify_integrity_sha256(&key).unwrap();
        msg.verify_any_integrity(&key).unwrap();
        msg.verify_fingerprint().unwrap();
        let other = Key::long_term("user", "realm", "nope", alg).unwrap();
        assert_eq!(
            msg.verify_integrity_sha256(&other),
            Err(IntegrityError::Mismatch(AttrType::MESSAGE_INTEGRITY_SHA256))
        );
    }
    // A MESSAGE-INTEGRITY-SHA256 truncated to 16 bytes (RFC 8489 §14.6) verifies.
    let key = Key::short_term("pass").unwrap();
    let mut full = Vec::new();
    let mut b = MessageBuilder::new(&mut full, binding_request(), TID).unwrap();
    b.add(&Username::new("a:b").unwrap()).unwrap();
    b.add_message_integrity_sha256(&key).unwrap();
    b.finish();
    // Recompute with a 16-byte value: length field 16, header length adjusted.
    let mut t = full[..full.len() - 36].to_vec();
    let hdr_len = (t.len() - 20 + 20) as u16;
    t[2..4].copy_from_slice(&hdr_len.to_be_bytes());
    let mac = {
        use hmac::{Hmac, Mac};
        let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(b"pass").unwrap();
        m.update(&t);
        m.finalize().into_bytes()
    };
    t.extend_from_slice(&[0x00, 0x1C, 0x00, 0x10]);
    t.extend_from_slice(&mac[..16]);
    Message::decode(&t)
        .unwrap()
        .verify_integrity_sha256(&key)
        .unwrap();
}

#[test]
fn missing_integrity_and_fingerprint_are_reported() {
    let m = with_attrs(&[(0x0006, b"u")]);
    let msg = Message::decode(&m).unwrap();
    let key = Key::short_term("x").unwrap();
    assert_eq!(
        msg.verify_integrity(&key),
        Err(IntegrityError::Missing(AttrType::MESSAGE_INTEGRITY))
    );
    assert_eq!(
        msg.verify_fingerprint(),
        Err(IntegrityError::Missing(AttrType::FINGERPRINT))
    );
    let bad_fp = with_attrs(&[(0x8028, &[1, 2, 3, 4])]);
    assert_eq!(
        Message::decode(&bad_fp).unwrap().verify_fingerprint(),
        Err(IntegrityError::Mismatch(AttrType::FINGERPRINT))
    );
}

#[test]
fn builder_enforces_attribute_order() {
    let key = Key::short_term("x").unwrap();
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, binding_request(), TID).unwrap();
    b.add_message_integrity(&key).unwrap();
    assert_eq!(
        b.add(&Username::new("late").unwrap()).map(|_| ()),
        Err(EncodeError::OutOfOrder(AttrType::USERNAME))
    );
    b.add_fingerprint().unwrap();
    assert_eq!(
        b.add_message_integrity_sha256(&key).map(|_| ()),
        Err(EncodeError::OutOfOrder(AttrType::MESSAGE_INTEGRITY_SHA256))
    );
}

#[test]
fn slice_buffer_reports_too_small_and_writes_nothing_past_it() {
    let mut small = [0u8; 24];
    let mut b = MessageBuilder::new(SliceBuf::new(&mut small), binding_request(), TID).unwrap();
    assert_eq!(
        b.add(&Data(&[1; 8])).map(|_| ()),
        Err(EncodeError::BufferTooSmall { needed: 8 })
    );
    assert_eq!(b.finish(), 20);
    let big = vec![0u8; 70_000];
    let mut v = Vec::new();
    let mut b = MessageBuilder::new(&mut v, binding_request(), TID).unwrap();
    assert_eq!(b.add(&Data(&big)).map(|_| ()), Err(EncodeError::TooLarge));
}

#[test]
fn bytesmut_and_vec_produce_the_same_bytes() {
    let build = |b: &mut dyn FnMut(&mut MessageBuilder<&mut Vec<u8>>)| {
        let mut v = Vec::new();
        let mut m = MessageBuilder::new(&mut v, binding_request(), TID).unwrap();
        b(&mut m);
        v
    };
    let v = build(&mut |m| {
        m.add(&Software::new("s").unwrap()).unwrap();
        m.add_fingerprint().unwrap();
    });
    let mut bm = bytes::BytesMut::new();
    let mut m = MessageBuilder::new(&mut bm, binding_request(), TID).unwrap();
    m.add(&Software::new("s").unwrap()).unwrap();
    m.add_fingerprint().unwrap();
    m.finish();
    assert_eq!(&bm[..], &v[..]);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Decoding arbitrary bytes never panics, and every typed getter on a
        /// decoded message returns instead of panicking.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(m) = Message::decode(&bytes) {
                let _ = m.get::<XorMappedAddress>();
                let _ = m.get::<Username>();
                let _ = m.get::<ErrorCode>();
                let _ = m.get::<UnknownAttributes>();
                let _ = m.verify_fingerprint();
                let _ = m.verify_integrity(&Key::short_term("k").unwrap());
                let _ = m.verify_integrity_sha256(&Key::short_term("k").unwrap());
                let _ = m.attributes().count();
            }
        }

        /// The same, on inputs shaped like STUN (valid header, random attributes).
        #[test]
        fn stun_shaped_input_never_panics(body in proptest::collection::vec(any::<u8>(), 0..50)) {
            let mut b = body.clone();
            b.resize(b.len().next_multiple_of(4), 0);
            let mut m = header(0x0001, b.len() as u16);
            m.extend_from_slice(&b);
            if let Ok(msg) = Message::decode(&m) {
                for a in msg.attributes() {
                    prop_assert!(a.value.len() <= b.len());
                }
                let _ = msg.get::<XorMappedAddress>();
                let _ = msg.verify_fingerprint();
            }
        }

        /// Encoding then decoding gives back the attributes.
        #[test]
        fn round_trip(user in "[a-z0-9:]{1,40}", soft in "\\PC{0,20}", port in any::<u16>(), ip in any::<[u8; 4]>(), data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let addr = std::net::SocketAddr::from((ip, port));
            let key = Key::short_term("pw").unwrap();
            let mut buf = Vec::new();
            let mut b = MessageBuilder::new(&mut buf, binding_request(), TID).unwrap();
            b.add(&Username::new(&user).unwrap()).unwrap();
            b.add(&Software::new(&soft).unwrap()).unwrap();
            b.add(&XorMappedAddress(addr)).unwrap();
            b.add(&Data(&data)).unwrap();
            b.add_message_integrity(&key).unwrap();
            b.add_fingerprint().unwrap();
            b.finish();
            let m = Message::decode(&buf).unwrap();
            prop_assert_eq!(m.get::<Username>().unwrap().unwrap().as_str(), user.as_str());
            prop_assert_eq!(m.get::<Software>().unwrap().unwrap().as_str(), soft.as_str());
            prop_assert_eq!(m.get::<XorMappedAddress>().unwrap().unwrap().0, addr);
            prop_assert_eq!(m.get::<Data>().unwrap().unwrap().0, &data[..]);
            prop_assert!(m.verify_integrity(&key).is_ok());
            prop_assert!(m.verify_fingerprint().is_ok());
        }
    }
}

#[test]
fn lookups_find_every_attribute_of_a_large_message_first_of_each_type() {
    // 40 attributes, more than `decode` indexes, with repeats: `get_raw`
    // must find the first of each type wherever it sits, as a walk would.
    let values: Vec<[u8; 4]> = (0..40u32).map(|i| i.to_be_bytes()).collect();
    let attrs: Vec<(u16, &[u8])> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (0x8100 + (i % 25) as u16, v.as_slice()))
        .collect();
    let mut with_mi = attrs.clone();
    with_mi.push((0x0008, &[0u8; 20]));
    with_mi.push((0x8199, b"late")); // after MESSAGE-INTEGRITY: ignored
    for bytes in [with_attrs(&attrs), with_attrs(&with_mi)] {
        let m = Message::decode(&bytes).expect("decodes");
        for t in 0x8100..0x8100 + 25u16 {
            let walked = m.attributes().find(|a| a.typ == AttrType(t));
            let found = m.get_raw(AttrType(t));
            assert_eq!(found, walked, "type {t:#06x}");
            let first = u32::from(t - 0x8100);
            assert_eq!(found.map(|a| a.value), Some(&first.to_be_bytes()[..]));
        }
        assert_eq!(m.get_raw(AttrType(0x8199)), None);
        assert_eq!(m.get_raw(AttrType(0x8200)), None);
        assert_eq!(
            m.get_raw(AttrType::MESSAGE_INTEGRITY).is_some(),
            m.has_integrity()
        );
    }
}
