//! The test vectors of RFC 5769 ("Test Vectors for Session Traversal Utilities
//! for NAT (STUN)"), bytes pasted verbatim from the RFC, with its credentials.

use p2p_stun::attr::{
    IceControlled, MappedAddress, Nonce, PasswordAlgorithm, Priority, Realm, Software, Username,
    XorMappedAddress,
};
use p2p_stun::{
    AttrType, IntegrityError, Key, Message, MessageBuilder, MessageClass, MessageType, Method,
    TransactionId,
};

const TID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];
const PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

/// RFC 5769 §2.1 Sample Request.
const SAMPLE_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, // Request type and message length
    0x21, 0x12, 0xa4, 0x42, // Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x10, // SOFTWARE attribute header
    0x53, 0x54, 0x55, 0x4e, // }
    0x20, 0x74, 0x65, 0x73, // }  User-agent...
    0x74, 0x20, 0x63, 0x6c, // }  ...name
    0x69, 0x65, 0x6e, 0x74, // }
    0x00, 0x24, 0x00, 0x04, // PRIORITY attribute header
    0x6e, 0x00, 0x01, 0xff, // ICE priority value
    0x80, 0x29, 0x00, 0x08, // ICE-CONTROLLED attribute header
    0x93, 0x2f, 0xf9, 0xb1, // }  Pseudo-random tie breaker...
    0x51, 0x26, 0x3b, 0x36, // }   ...for ICE control
    0x00, 0x06, 0x00, 0x09, // USERNAME attribute header
    0x65, 0x76, 0x74, 0x6a, // }
    0x3a, 0x68, 0x36, 0x76, // }  Username (9 bytes) and padding (3 bytes)
    0x59, 0x20, 0x20, 0x20, // }
    0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
    0x9a, 0xea, 0xa7, 0x0c, // }
    0xbf, 0xd8, 0xcb, 0x56, // }
    0x78, 0x1e, 0xf2, 0xb5, // }  HMAC-SHA1 fingerprint
    0xb2, 0xd3, 0xf2, 0x49, // }
    0xc1, 0xb5, 0x71, 0xa2, // }
    0x80, 0x28, 0x00, 0x04, // FINGERPRINT attribute header
    0xe5, 0x7a, 0x3b, 0xcf, // CRC32 fingerprint
];

/// RFC 5769 §2.2 Sample IPv4 Response.
const SAMPLE_IPV4_RESPONSE: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, // Response type and message length
    0x21, 0x12, 0xa4, 0x42, // Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x0b, // SOFTWARE attribute header
    0x74, 0x65, 0x73, 0x74, // }
    0x20, 0x76, 0x65, 0x63, // }  UTF-8 server name
    0x74, 0x6f, 0x72, 0x20, // }
    0x00, 0x20, 0x00, 0x08, // XOR-MAPPED-ADDRESS attribute header
    0x00, 0x01, 0xa1, 0x47, // Address family (IPv4) and xor'd mapped port number
    0xe1, 0x12, 0xa6, 0x43, // Xor'd mapped IPv4 address
    0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
    0x2b, 0x91, 0xf5, 0x99, // }
    0xfd, 0x9e, 0x90, 0xc3, // }
    0x8c, 0x74, 0x89, 0xf9, // }  HMAC-SHA1 fingerprint
    0x2a, 0xf9, 0xba, 0x53, // }
    0xf0, 0x6b, 0xe7, 0xd7, // }
    0x80, 0x28, 0x00, 0x04, // FINGERPRINT attribute header
    0xc0, 0x7d, 0x4c, 0x96, // CRC32 fingerprint
];

/// RFC 5769 §2.3 Sample IPv6 Response.
const SAMPLE_IPV6_RESPONSE: [u8; 92] = [
    0x01, 0x01, 0x00, 0x48, // Response type and message length
    0x21, 0x12, 0xa4, 0x42, // Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x0b, // SOFTWARE attribute header
    0x74, 0x65, 0x73, 0x74, // }
    0x20, 0x76, 0x65, 0x63, // }  UTF-8 server name
    0x74, 0x6f, 0x72, 0x20, // }
    0x00, 0x20, 0x00, 0x14, // XOR-MAPPED-ADDRESS attribute header
    0x00, 0x02, 0xa1, 0x47, // Address family (IPv6) and xor'd mapped port number
    0x01, 0x13, 0xa9, 0xfa, // }
    0xa5, 0xd3, 0xf1, 0x79, // }  Xor'd mapped IPv6 address
    0xbc, 0x25, 0xf4, 0xb5, // }
    0xbe, 0xd2, 0xb9, 0xd9, // }
    0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
    0xa3, 0x82, 0x95, 0x4e, // }
    0x4b, 0xe6, 0x7b, 0xf1, // }
    0x17, 0x84, 0xc9, 0x7c, // }  HMAC-SHA1 fingerprint
    0x82, 0x92, 0xc2, 0x75, // }
    0xbf, 0xe3, 0xed, 0x41, // }
    0x80, 0x28, 0x00, 0x04, // FINGERPRINT attribute header
    0xc8, 0xfb, 0x0b, 0x4c, // CRC32 fingerprint
];

/// RFC 5769 §2.4 Sample Request with Long-Term Authentication.
const SAMPLE_LONG_TERM_REQUEST: [u8; 116] = [
    0x00, 0x01, 0x00, 0x60, // Request type and message length
    0x21, 0x12, 0xa4, 0x42, // Magic cookie
    0x78, 0xad, 0x34, 0x33, // }
    0xc6, 0xad, 0x72, 0xc0, // }  Transaction ID
    0x29, 0xda, 0x41, 0x2e, // }
    0x00, 0x06, 0x00, 0x12, // USERNAME attribute header
    0xe3, 0x83, 0x9e, 0xe3, // }
    0x83, 0x88, 0xe3, 0x83, // }
    0xaa, 0xe3, 0x83, 0x83, // }  Username value (18 bytes) and padding (2 bytes)
    0xe3, 0x82, 0xaf, 0xe3, // }
    0x82, 0xb9, 0x00, 0x00, // }
    0x00, 0x15, 0x00, 0x1c, // NONCE attribute header
    0x66, 0x2f, 0x2f, 0x34, // }
    0x39, 0x39, 0x6b, 0x39, // }
    0x35, 0x34, 0x64, 0x36, // }
    0x4f, 0x4c, 0x33, 0x34, // }  Nonce value
    0x6f, 0x4c, 0x39, 0x46, // }
    0x53, 0x54, 0x76, 0x79, // }
    0x36, 0x34, 0x73, 0x41, // }
    0x00, 0x14, 0x00, 0x0b, // REALM attribute header
    0x65, 0x78, 0x61, 0x6d, // }
    0x70, 0x6c, 0x65, 0x2e, // }  Realm value (11 bytes) and padding (1 byte)
    0x6f, 0x72, 0x67, 0x00, // }
    0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
    0xf6, 0x70, 0x24, 0x65, // }
    0x6d, 0xd6, 0x4a, 0x3e, // }
    0x02, 0xb8, 0xe0, 0x71, // }  HMAC-SHA1 fingerprint
    0x2e, 0x85, 0xc9, 0xa2, // }
    0x8c, 0xa8, 0x96, 0x66, // }
];

#[test]
fn section_2_1_sample_request() {
    let msg = Message::decode(&SAMPLE_REQUEST).unwrap();
    assert_eq!(
        msg.typ(),
        MessageType::new(Method::BINDING, MessageClass::Request)
    );
    assert_eq!(msg.transaction_id(), TransactionId::new(TID));
    assert!(!msg.is_rfc3489());
    assert_eq!(
        msg.get::<Software>().unwrap().unwrap().as_str(),
        "STUN test client"
    );
    assert_eq!(msg.get::<Priority>().unwrap(), Some(Priority(0x6e0001ff)));
    assert_eq!(
        msg.get::<IceControlled>().unwrap(),
        Some(IceControlled(0x932ff9b151263b36))
    );
    assert_eq!(
        msg.get::<Username>().unwrap().unwrap().as_str(),
        "evtj:h6vY"
    );
    msg.verify_fingerprint().unwrap();
    msg.verify_integrity(&Key::short_term(PASSWORD).unwrap())
        .unwrap();
    assert_eq!(
        msg.verify_integrity(&Key::short_term("wrong").unwrap()),
        Err(IntegrityError::Mismatch(AttrType::MESSAGE_INTEGRITY))
    );
}

#[test]
fn section_2_1_re_encoded_is_byte_identical() {
    // The RFC pads USERNAME with spaces (0x20), which RFC 8489 allows ("the
    // padding bits MUST be ignored"); our builder pads with zeros, so patch the
    // three padding bytes before the MAC is computed over them.
    let key = Key::short_term(PASSWORD).unwrap();
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(
        &mut buf,
        MessageType::new(Method::BINDING, MessageClass::Request),
        TransactionId::new(TID),
    )
    .unwrap();
    b.add(&Software::new("STUN test client").unwrap()).unwrap();
    b.add(&Priority(0x6e0001ff)).unwrap();
    b.add(&IceControlled(0x932ff9b151263b36)).unwrap();
    b.add(&Username::new("evtj:h6vY").unwrap()).unwrap();
    let n = b.len();
    b.written_mut()[n - 3..].copy_from_slice(b"   ");
    b.add_message_integrity(&key).unwrap();
    b.add_fingerprint().unwrap();
    assert_eq!(b.finish(), SAMPLE_REQUEST.len());
    assert_eq!(buf, SAMPLE_REQUEST);
}

fn check_response(bytes: &[u8], addr: &str) {
    let msg = Message::decode(bytes).unwrap();
    assert_eq!(
        msg.typ(),
        MessageType::new(Method::BINDING, MessageClass::Success)
    );
    assert_eq!(
        msg.get::<Software>().unwrap().unwrap().as_str(),
        "test vector"
    );
    assert_eq!(
        msg.get::<XorMappedAddress>().unwrap(),
        Some(XorMappedAddress(addr.parse().unwrap()))
    );
    msg.verify_fingerprint().unwrap();
    msg.verify_integrity(&Key::short_term(PASSWORD).unwrap())
        .unwrap();

    // Re-encode: SOFTWARE "test vector" is padded with one space in the RFC.
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, msg.typ(), msg.transaction_id()).unwrap();
    b.add(&Software::new("test vector").unwrap()).unwrap();
    b.written_mut()[20 + 4 + 11] = b' ';
    b.add(&XorMappedAddress(addr.parse().unwrap())).unwrap();
    b.add_message_integrity(&Key::short_term(PASSWORD).unwrap())
        .unwrap();
    b.add_fingerprint().unwrap();
    b.finish();
    assert_eq!(buf, bytes);
}

#[test]
fn section_2_2_sample_ipv4_response() {
    check_response(&SAMPLE_IPV4_RESPONSE, "192.0.2.1:32853");
}

#[test]
fn section_2_3_sample_ipv6_response() {
    check_response(
        &SAMPLE_IPV6_RESPONSE,
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
    );
}

#[test]
fn section_2_4_sample_request_with_long_term_authentication() {
    let msg = Message::decode(&SAMPLE_LONG_TERM_REQUEST).unwrap();
    let username = msg.get::<Username>().unwrap().unwrap();
    assert_eq!(
        username.as_str(),
        "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}"
    );
    assert_eq!(
        msg.get::<Nonce>().unwrap().unwrap().as_str(),
        "f//499k954d6OL34oL9FSTvy64sA"
    );
    let realm = msg.get::<Realm>().unwrap().unwrap();
    assert_eq!(realm.as_str(), "example.org");
    assert!(!msg.has_fingerprint());
    // The password as the RFC gives it, before preparation.
    let key = Key::long_term(
        username.as_str(),
        realm.as_str(),
        "The\u{00AD}M\u{00AA}tr\u{2168}",
        PasswordAlgorithm::Md5,
    )
    .unwrap();
    msg.verify_integrity(&key).unwrap();
    // And as it prepares.
    let key2 = Key::long_term(
        username.as_str(),
        realm.as_str(),
        "TheMatrIX",
        PasswordAlgorithm::Md5,
    )
    .unwrap();
    assert_eq!(key, key2);
}

#[test]
fn legacy_rfc3489_messages_are_recognised() {
    // An RFC 3489 Binding request: no magic cookie, a 128-bit transaction id.
    let mut m = [0u8; 20];
    m[1] = 0x01;
    m[4..20].copy_from_slice(&[0x5a; 16]);
    let msg = Message::decode(&m).unwrap();
    assert!(msg.is_rfc3489());
    assert_eq!(msg.typ().method, Method::BINDING);
    // A MAPPED-ADDRESS in the clear is what such a client understands.
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, msg.typ().success(), msg.transaction_id()).unwrap();
    b.add(&MappedAddress("192.0.2.1:3478".parse().unwrap()))
        .unwrap();
    b.finish();
    assert_eq!(&buf[24..32], &[0, 1, 0x0d, 0x96, 192, 0, 2, 1]);
}

/// RFC 8489 Appendix B.1 (as corrected by verified Errata 6268): a request with
/// long-term authentication, USERHASH, PASSWORD-ALGORITHM SHA-256 and
/// MESSAGE-INTEGRITY-SHA256. Username "<U+30DE><U+30C8><U+30EA><U+30C3><U+30AF><U+30B9>",
/// password "The<U+00AD>M<U+00AA>tr<U+2168>", realm "example.org",
/// nonce "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA".
const RFC8489_B1_REQUEST: [u8; 164] = [
    0x00, 0x01, 0x00, 0x90, // Request type and message length
    0x21, 0x12, 0xa4, 0x42, // Magic cookie
    0x78, 0xad, 0x34, 0x33, // }
    0xc6, 0xad, 0x72, 0xc0, // }  Transaction ID
    0x29, 0xda, 0x41, 0x2e, // }
    0x00, 0x1e, 0x00, 0x20, // USERHASH attribute header
    0x4a, 0x3c, 0xf3, 0x8f, // }
    0xef, 0x69, 0x92, 0xbd, // }
    0xa9, 0x52, 0xc6, 0x78, // }
    0x04, 0x17, 0xda, 0x0f, // }  Userhash value (32 bytes)
    0x24, 0x81, 0x94, 0x15, // }
    0x56, 0x9e, 0x60, 0xb2, // }
    0x05, 0xc4, 0x6e, 0x41, // }
    0x40, 0x7f, 0x17, 0x04, // }
    0x00, 0x15, 0x00, 0x29, // NONCE attribute header
    0x6f, 0x62, 0x4d, 0x61, // }
    0x74, 0x4a, 0x6f, 0x73, // }
    0x32, 0x41, 0x41, 0x41, // }
    0x43, 0x66, 0x2f, 0x2f, // }
    0x34, 0x39, 0x39, 0x6b, // }  Nonce value and padding (3 bytes)
    0x39, 0x35, 0x34, 0x64, // }
    0x36, 0x4f, 0x4c, 0x33, // }
    0x34, 0x6f, 0x4c, 0x39, // }
    0x46, 0x53, 0x54, 0x76, // }
    0x79, 0x36, 0x34, 0x73, // }
    0x41, 0x00, 0x00, 0x00, // }
    0x00, 0x14, 0x00, 0x0b, // REALM attribute header
    0x65, 0x78, 0x61, 0x6d, // }
    0x70, 0x6c, 0x65, 0x2e, // }  Realm value (11 bytes) and padding (1 byte)
    0x6f, 0x72, 0x67, 0x00, // }
    0x00, 0x1d, 0x00, 0x04, // PASSWORD-ALGORITHM attribute header
    0x00, 0x02, 0x00, 0x00, // PASSWORD-ALGORITHM value (4 bytes)
    0x00, 0x1c, 0x00, 0x20, // MESSAGE-INTEGRITY-SHA256 attribute header
    0xb5, 0xc7, 0xbf, 0x00, // }
    0x5b, 0x6c, 0x52, 0xa2, // }
    0x1c, 0x51, 0xc5, 0xe8, // }
    0x92, 0xf8, 0x19, 0x24, // }  HMAC-SHA256 value
    0x13, 0x62, 0x96, 0xcb, // }
    0x92, 0x7c, 0x43, 0x14, // }
    0x93, 0x09, 0x27, 0x8c, // }
    0xc6, 0x51, 0x8e, 0x65, // }
];

#[test]
fn rfc8489_appendix_b_1_sha256_and_userhash() {
    use p2p_stun::attr::{PasswordAlgorithm as Alg, Userhash};
    let user = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
    let msg = Message::decode(&RFC8489_B1_REQUEST).unwrap();
    let hash = p2p_stun::userhash(user, "example.org").unwrap();
    assert_eq!(msg.get::<Userhash>().unwrap(), Some(Userhash(hash)));
    assert_eq!(msg.get::<Alg>().unwrap(), Some(Alg::Sha256));
    let nonce = "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA";
    assert_eq!(msg.get::<Nonce>().unwrap().unwrap().as_str(), nonce);
    let key = Key::long_term(
        user,
        "example.org",
        "The\u{00AD}M\u{00AA}tr\u{2168}",
        Alg::Sha256,
    )
    .unwrap();
    msg.verify_integrity_sha256(&key).unwrap();
    let md5 = Key::long_term(user, "example.org", "TheMatrIX", Alg::Md5).unwrap();
    assert!(msg.verify_integrity_sha256(&md5).is_err());

    // Re-encode byte for byte.
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, msg.typ(), msg.transaction_id()).unwrap();
    b.add(&Userhash(hash)).unwrap();
    b.add(&Nonce::new(nonce).unwrap()).unwrap();
    b.add(&Realm::new("example.org").unwrap()).unwrap();
    b.add(&Alg::Sha256).unwrap();
    b.add_message_integrity_sha256(&key).unwrap();
    b.finish();
    assert_eq!(buf, RFC8489_B1_REQUEST);
}
