//! The shared inputs and the per-implementation code of the p2p benchmarks.
//!
//! This crate is not a library anyone depends on: it exists so that
//! `benches/codec.rs` times exactly the code this crate's unit tests check.
//! Every codec (ours, and with the `peers` feature the webrtc-rs `stun` crate
//! and `stun-rs`) implements [`Codec`] for the four operations of the codec
//! benchmark, on the same input: the ICE connectivity check of
//! [`ice_request`]. [`Floor`] is the irreducible cost: one HMAC-SHA1 and one
//! CRC-32 over the same bytes. Run the comparison with `cargo xtask bench`.
//!
//! ```
//! use p2p_benches::{ice_request, Codec, P2p};
//!
//! let request = ice_request()?;
//! let mut ours = P2p::new()?;
//! ours.verify(&request)?;
//! assert_eq!(ours.sign()?, &request[..]);
//! # Ok::<(), p2p_benches::Error>(())
//! ```
#![warn(missing_docs)]

pub mod mmsg;

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use p2p_stun::attr::{IceControlling, Priority, UseCandidate, Username, XorMappedAddress};
use p2p_stun::{
    Key, Message, MessageBuilder, MessageClass, MessageType, Method, SliceBuf, TransactionId,
};
use sha1::Sha1;

/// Any failure of a benchmarked operation (boxed only on the error path).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The short-term password (ICE `ice-pwd`) of the benchmark's messages: the
/// one of RFC 5769 §2.1.
pub const PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";
/// USERNAME of the ICE check (`remote-ufrag:local-ufrag`).
pub const USERNAME: &str = "evtj:h6vY";
/// PRIORITY of the ICE check.
pub const PRIORITY: u32 = 0x6e00_01ff;
/// ICE-CONTROLLING tie-breaker of the ICE check.
pub const TIE_BREAKER: u64 = 0x932f_f9b1_5126_3b36;
/// Transaction id of the ICE check (the one of RFC 5769 §2.1).
pub const TID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];
/// XOR-MAPPED-ADDRESS of the success response.
pub const MAPPED: &str = "192.0.2.1:32853";

/// Room for every message of the benchmark.
const BUF_LEN: usize = 256;

/// The benchmark's input: an ICE Binding request with USERNAME, PRIORITY,
/// ICE-CONTROLLING, USE-CANDIDATE, MESSAGE-INTEGRITY and FINGERPRINT, as a
/// controlling agent sends when it nominates a pair. Built with our builder;
/// the unit tests check that both peers decode and verify it, and encode the
/// very same bytes.
pub fn ice_request() -> Result<Vec<u8>, Error> {
    let mut codec = P2p::new()?;
    Ok(codec.sign()?.to_vec())
}

/// The mapped address as a `SocketAddr`.
pub fn mapped() -> Result<SocketAddr, Error> {
    Ok(MAPPED.parse()?)
}

/// What the decode operation reads from the ICE check: every attribute an
/// ICE agent acts on (the username is validated as UTF-8 and measured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IceCheck {
    /// Length in bytes of USERNAME.
    pub username_len: usize,
    /// PRIORITY.
    pub priority: u32,
    /// ICE-CONTROLLING.
    pub tie_breaker: u64,
    /// Whether USE-CANDIDATE is present.
    pub use_candidate: bool,
}

/// One STUN codec, set up once (keys, buffers, decoders) and then driven
/// through the benchmark's operations.
pub trait Codec {
    /// The name in the benchmark report.
    const NAME: &'static str;

    /// Decode the request and read its ICE attributes (no integrity check).
    fn decode(&mut self, request: &[u8]) -> Result<IceCheck, Error>;

    /// Decode the request and verify MESSAGE-INTEGRITY (with [`PASSWORD`]) and
    /// FINGERPRINT.
    fn verify(&mut self, request: &[u8]) -> Result<(), Error>;

    /// Encode the ICE check from its values: USERNAME, PRIORITY,
    /// ICE-CONTROLLING, USE-CANDIDATE, MESSAGE-INTEGRITY, FINGERPRINT.
    fn sign(&mut self) -> Result<&[u8], Error>;

    /// Decode the request and encode a Binding success response to it with
    /// XOR-MAPPED-ADDRESS [`MAPPED`].
    fn respond(&mut self, request: &[u8]) -> Result<&[u8], Error>;
}

/// Our codec, `p2p-stun`: zero-copy decode, encode into a reused slice.
#[derive(Debug)]
pub struct P2p {
    key: Key,
    mapped: SocketAddr,
    buf: [u8; BUF_LEN],
}

impl P2p {
    /// Prepare the key and the output buffer.
    pub fn new() -> Result<P2p, Error> {
        Ok(P2p {
            key: Key::short_term(PASSWORD)?,
            mapped: mapped()?,
            buf: [0; BUF_LEN],
        })
    }
}

impl Codec for P2p {
    const NAME: &'static str = "p2p";

    #[inline]
    fn decode(&mut self, request: &[u8]) -> Result<IceCheck, Error> {
        let m = Message::decode(request)?;
        Ok(IceCheck {
            username_len: m.get::<Username>()?.ok_or("no USERNAME")?.as_str().len(),
            priority: m.get::<Priority>()?.ok_or("no PRIORITY")?.0,
            tie_breaker: m.get::<IceControlling>()?.ok_or("no ICE-CONTROLLING")?.0,
            use_candidate: m.get::<UseCandidate>()?.is_some(),
        })
    }

    #[inline]
    fn verify(&mut self, request: &[u8]) -> Result<(), Error> {
        let m = Message::decode(request)?;
        m.verify_integrity(&self.key)?;
        m.verify_fingerprint()?;
        Ok(())
    }

    #[inline]
    fn sign(&mut self) -> Result<&[u8], Error> {
        let mut b = MessageBuilder::new(
            SliceBuf::new(&mut self.buf),
            MessageType::new(Method::BINDING, MessageClass::Request),
            TransactionId::new(TID),
        )?;
        b.add(&Username::new(USERNAME)?)?
            .add(&Priority(PRIORITY))?
            .add(&IceControlling(TIE_BREAKER))?
            .add(&UseCandidate)?
            .add_message_integrity(&self.key)?
            .add_fingerprint()?;
        let len = b.finish();
        Ok(&self.buf[..len])
    }

    #[inline]
    fn respond(&mut self, request: &[u8]) -> Result<&[u8], Error> {
        let m = Message::decode(request)?;
        let mut b = MessageBuilder::new(
            SliceBuf::new(&mut self.buf),
            m.typ().success(),
            m.transaction_id(),
        )?;
        b.add(&XorMappedAddress(self.mapped))?;
        let len = b.finish();
        Ok(&self.buf[..len])
    }
}

/// The raw floor: one HMAC-SHA1 over the bytes MESSAGE-INTEGRITY covers and
/// one CRC-32 over the bytes FINGERPRINT covers, at offsets found once. No
/// parsing, no encoding: what any codec must at least spend to verify or sign.
#[derive(Debug, Clone)]
pub struct Floor {
    key: Vec<u8>,
    /// The HMAC with the key already absorbed (ipad/opad blocks hashed once).
    prekeyed: Hmac<Sha1>,
    /// Offset of the MESSAGE-INTEGRITY attribute.
    mi: usize,
    /// Offset of the FINGERPRINT attribute.
    fp: usize,
}

impl Floor {
    /// Find the MESSAGE-INTEGRITY and FINGERPRINT offsets of `request` (the
    /// last 24 and 8 bytes of [`ice_request`]).
    pub fn new(request: &[u8]) -> Result<Floor, Error> {
        let fp = request.len().checked_sub(8).ok_or("request too short")?;
        let mi = fp.checked_sub(24).ok_or("request too short")?;
        if request.get(mi..mi + 2) != Some(&[0x00, 0x08]) || request[fp..fp + 2] != [0x80, 0x28] {
            return Err("request does not end with MESSAGE-INTEGRITY, FINGERPRINT".into());
        }
        let key = PASSWORD.as_bytes().to_vec();
        let prekeyed = <Hmac<Sha1> as Mac>::new_from_slice(&key)?;
        Ok(Floor {
            key,
            prekeyed,
            mi,
            fp,
        })
    }

    /// The MESSAGE-INTEGRITY input's header: the length field covers up to
    /// the end of MESSAGE-INTEGRITY.
    #[inline]
    fn mi_header(&self, request: &[u8]) -> [u8; 4] {
        let len = ((self.mi + 24 - 20) as u16).to_be_bytes();
        [request[0], request[1], len[0], len[1]]
    }

    /// Finish the HMAC of the MESSAGE-INTEGRITY input in `mac`, compare;
    /// CRC-32, compare. Out of line, as p2p-stun's own HMAC helper is.
    #[inline(never)]
    fn check(&self, request: &[u8], mut mac: Hmac<Sha1>) -> Result<(), Error> {
        mac.update(&self.mi_header(request));
        mac.update(&request[4..self.mi]);
        let tag: [u8; 20] = mac.finalize().into_bytes().into();
        if tag[..] != request[self.mi + 4..self.mi + 24] {
            return Err("MESSAGE-INTEGRITY mismatch".into());
        }
        let crc = crc32fast::hash(&request[..self.fp]) ^ 0x5354_554e;
        if request[self.fp + 4..self.fp + 8] != crc.to_be_bytes() {
            return Err("FINGERPRINT mismatch".into());
        }
        Ok(())
    }

    /// One HMAC-SHA1 (keyed from the password, as a fresh HMAC is) and one
    /// CRC-32, compared with the message's values (not in constant time: the
    /// floor does only what must be done).
    #[inline]
    pub fn verify(&self, request: &[u8]) -> Result<(), Error> {
        self.check(request, <Hmac<Sha1> as Mac>::new_from_slice(&self.key)?)
    }

    /// The same with the key's ipad/opad blocks hashed once, up front: the
    /// floor for a codec that caches the keyed HMAC state per key.
    #[inline]
    pub fn verify_prekeyed(&self, request: &[u8]) -> Result<(), Error> {
        self.check(request, self.prekeyed.clone())
    }
}

/// Decode the request as [`P2p::decode`] does, but in one pass over the
/// attributes instead of one [`Message::get`] (a walk from the first
/// attribute) per attribute read: what a cached attribute index in `Message`
/// would give. Reported as `decode/p2p-one-pass`, beside the table.
#[inline]
pub fn p2p_decode_one_pass(request: &[u8]) -> Result<IceCheck, Error> {
    use p2p_stun::attr::Attribute;
    let m = Message::decode(request)?;
    let tid = m.transaction_id();
    let (mut username_len, mut priority, mut tie_breaker) = (None, None, None);
    let mut use_candidate = false;
    for a in m.attributes() {
        match a.typ {
            Username::TYPE if username_len.is_none() => {
                username_len = Some(Username::decode(a.value, &tid)?.as_str().len());
            }
            Priority::TYPE if priority.is_none() => {
                priority = Some(Priority::decode(a.value, &tid)?.0);
            }
            IceControlling::TYPE if tie_breaker.is_none() => {
                tie_breaker = Some(IceControlling::decode(a.value, &tid)?.0);
            }
            UseCandidate::TYPE => use_candidate = true,
            _ => {}
        }
    }
    Ok(IceCheck {
        username_len: username_len.ok_or("no USERNAME")?,
        priority: priority.ok_or("no PRIORITY")?,
        tie_breaker: tie_breaker.ok_or("no ICE-CONTROLLING")?,
        use_candidate,
    })
}

/// The webrtc-rs `stun` crate (0.17): each `Message` owns a copy of the
/// datagram and of every attribute value; reused across operations here.
#[cfg(feature = "peers")]
pub struct WebrtcRs {
    integrity: webrtc_stun::integrity::MessageIntegrity,
    mapped: webrtc_stun::xoraddr::XorMappedAddress,
    req: webrtc_stun::message::Message,
    out: webrtc_stun::message::Message,
}

#[cfg(feature = "peers")]
impl WebrtcRs {
    /// Prepare the integrity key and the two reused messages.
    pub fn new() -> Result<WebrtcRs, Error> {
        let mapped = mapped()?;
        Ok(WebrtcRs {
            integrity: webrtc_stun::integrity::MessageIntegrity::new_short_term_integrity(
                PASSWORD.to_owned(),
            ),
            mapped: webrtc_stun::xoraddr::XorMappedAddress {
                ip: mapped.ip(),
                port: mapped.port(),
            },
            req: webrtc_stun::message::Message::new(),
            out: webrtc_stun::message::Message::new(),
        })
    }

    /// The value of the first attribute of type `t`, borrowed from the
    /// decoded message (`Message::get` would clone it).
    fn value(&self, t: webrtc_stun::attributes::AttrType) -> Option<&[u8]> {
        self.req
            .attributes
            .0
            .iter()
            .find(|a| a.typ == t)
            .map(|a| &a.value[..])
    }
}

#[cfg(feature = "peers")]
impl Codec for WebrtcRs {
    const NAME: &'static str = "webrtc-rs";

    #[inline]
    fn decode(&mut self, request: &[u8]) -> Result<IceCheck, Error> {
        use webrtc_stun::attributes::*;
        self.req.unmarshal_binary(request)?;
        let username = self.value(ATTR_USERNAME).ok_or("no USERNAME")?;
        let priority = self.value(ATTR_PRIORITY).ok_or("no PRIORITY")?;
        let controlling = self
            .value(ATTR_ICE_CONTROLLING)
            .ok_or("no ICE-CONTROLLING")?;
        Ok(IceCheck {
            username_len: std::str::from_utf8(username)?.len(),
            priority: u32::from_be_bytes(priority.try_into()?),
            tie_breaker: u64::from_be_bytes(controlling.try_into()?),
            use_candidate: self.value(ATTR_USE_CANDIDATE).is_some(),
        })
    }

    #[inline]
    fn verify(&mut self, request: &[u8]) -> Result<(), Error> {
        self.req.unmarshal_binary(request)?;
        self.integrity.check(&mut self.req)?;
        webrtc_stun::fingerprint::FINGERPRINT.check(&self.req)?;
        Ok(())
    }

    #[inline]
    fn sign(&mut self) -> Result<&[u8], Error> {
        use webrtc_stun::attributes::*;
        use webrtc_stun::message::{Setter, BINDING_REQUEST};
        let m = &mut self.out;
        m.reset();
        m.typ = BINDING_REQUEST;
        m.transaction_id.0 = TID;
        m.write_header();
        m.add(ATTR_USERNAME, USERNAME.as_bytes());
        m.add(ATTR_PRIORITY, &PRIORITY.to_be_bytes());
        m.add(ATTR_ICE_CONTROLLING, &TIE_BREAKER.to_be_bytes());
        m.add(ATTR_USE_CANDIDATE, &[]);
        self.integrity.add_to(m)?;
        webrtc_stun::fingerprint::FINGERPRINT.add_to(m)?;
        Ok(&self.out.raw)
    }

    #[inline]
    fn respond(&mut self, request: &[u8]) -> Result<&[u8], Error> {
        use webrtc_stun::message::{Setter, BINDING_SUCCESS};
        self.req.unmarshal_binary(request)?;
        let m = &mut self.out;
        m.reset();
        m.typ = BINDING_SUCCESS;
        m.transaction_id = self.req.transaction_id;
        m.write_header();
        self.mapped.add_to(m)?;
        Ok(&self.out.raw)
    }
}

/// `stun-rs` (0.1): decodes into an owned `StunMessage` (attributes parsed
/// eagerly, integrity checked during decode when the decoder has a key);
/// encodes a `StunMessage` into a caller's slice.
#[cfg(feature = "peers")]
pub struct StunRs {
    key: stun_rs::HMACKey,
    mapped: SocketAddr,
    plain: stun_rs::MessageDecoder,
    validating: stun_rs::MessageDecoder,
    encoder: stun_rs::MessageEncoder,
    buf: [u8; BUF_LEN],
}

#[cfg(feature = "peers")]
impl StunRs {
    /// Prepare the key, the two decoders (without and with validation) and
    /// the encoder.
    pub fn new() -> Result<StunRs, Error> {
        use stun_rs::{DecoderContextBuilder, MessageDecoderBuilder, MessageEncoderBuilder};
        let key = stun_rs::HMACKey::new_short_term(PASSWORD)?;
        let ctx = DecoderContextBuilder::default()
            .with_key(key.clone())
            .with_validation()
            .build();
        Ok(StunRs {
            key,
            mapped: mapped()?,
            plain: MessageDecoderBuilder::default().build(),
            validating: MessageDecoderBuilder::default().with_context(ctx).build(),
            encoder: MessageEncoderBuilder::default().build(),
            buf: [0; BUF_LEN],
        })
    }
}

#[cfg(feature = "peers")]
impl Codec for StunRs {
    const NAME: &'static str = "stun-rs";

    #[inline]
    fn decode(&mut self, request: &[u8]) -> Result<IceCheck, Error> {
        use stun_rs::attributes::ice::{IceControlling, Priority, UseCandidate};
        use stun_rs::attributes::stun::UserName;
        let (m, _) = self.plain.decode(request)?;
        Ok(IceCheck {
            username_len: m
                .get::<UserName>()
                .ok_or("no USERNAME")?
                .as_user_name()?
                .as_str()
                .len(),
            priority: m
                .get::<Priority>()
                .ok_or("no PRIORITY")?
                .as_priority()?
                .as_u32(),
            tie_breaker: m
                .get::<IceControlling>()
                .ok_or("no ICE-CONTROLLING")?
                .as_ice_controlling()?
                .as_u64(),
            use_candidate: m.get::<UseCandidate>().is_some(),
        })
    }

    #[inline]
    fn verify(&mut self, request: &[u8]) -> Result<(), Error> {
        use stun_rs::attributes::stun::{Fingerprint, MessageIntegrity};
        // With a key and validation, decode fails unless MESSAGE-INTEGRITY
        // and FINGERPRINT both verify; check that both were there.
        let (m, _) = self.validating.decode(request)?;
        m.get::<MessageIntegrity>().ok_or("no MESSAGE-INTEGRITY")?;
        m.get::<Fingerprint>().ok_or("no FINGERPRINT")?;
        Ok(())
    }

    #[inline]
    fn sign(&mut self) -> Result<&[u8], Error> {
        use stun_rs::attributes::ice::{IceControlling, Priority, UseCandidate};
        use stun_rs::attributes::stun::{Fingerprint, MessageIntegrity, UserName};
        use stun_rs::{methods::BINDING, MessageClass, StunMessageBuilder, TransactionId};
        let m = StunMessageBuilder::new(BINDING, MessageClass::Request)
            .with_transaction_id(TransactionId::from(TID))
            .with_attribute(UserName::new(USERNAME)?)
            .with_attribute(Priority::from(PRIORITY))
            .with_attribute(IceControlling::from(TIE_BREAKER))
            .with_attribute(UseCandidate::default())
            .with_attribute(MessageIntegrity::new(self.key.clone()))
            .with_attribute(Fingerprint::default())
            .build();
        let len = self.encoder.encode(&mut self.buf, &m)?;
        Ok(&self.buf[..len])
    }

    #[inline]
    fn respond(&mut self, request: &[u8]) -> Result<&[u8], Error> {
        use stun_rs::attributes::stun::XorMappedAddress;
        use stun_rs::{methods::BINDING, MessageClass, StunMessageBuilder};
        let (req, _) = self.plain.decode(request)?;
        let m = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
            .with_transaction_id(*req.transaction_id())
            .with_attribute(XorMappedAddress::from(self.mapped))
            .build();
        let len = self.encoder.encode(&mut self.buf, &m)?;
        Ok(&self.buf[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected_check() -> IceCheck {
        IceCheck {
            username_len: USERNAME.len(),
            priority: PRIORITY,
            tie_breaker: TIE_BREAKER,
            use_candidate: true,
        }
    }

    /// The response every codec must produce, checked with our decoder.
    fn check_response(resp: &[u8]) {
        let m = Message::decode(resp).unwrap();
        assert_eq!(
            m.typ(),
            MessageType::new(Method::BINDING, MessageClass::Success)
        );
        assert_eq!(m.transaction_id(), TransactionId::new(TID));
        assert_eq!(
            m.get::<XorMappedAddress>().unwrap().unwrap().0,
            mapped().unwrap()
        );
        assert_eq!(m.attributes().count(), 1);
    }

    /// Every operation of `codec` succeeds on the shared input, reads the
    /// same values, rejects a tampered message, and encodes the same bytes.
    fn same_results<C: Codec>(mut codec: C) {
        let request = ice_request().unwrap();
        assert_eq!(
            codec.decode(&request).unwrap(),
            expected_check(),
            "{}",
            C::NAME
        );
        codec.verify(&request).unwrap();
        assert_eq!(codec.sign().unwrap(), &request[..], "{}", C::NAME);
        check_response(codec.respond(&request).unwrap());

        // A flipped bit in PRIORITY breaks MESSAGE-INTEGRITY and FINGERPRINT.
        let mut tampered = request.clone();
        tampered[20 + 16 + 4] ^= 1;
        assert!(codec.verify(&tampered).is_err(), "{}", C::NAME);
        // A wrong FINGERPRINT alone is caught too.
        let mut bad_fp = request.clone();
        let last = bad_fp.len() - 1;
        bad_fp[last] ^= 1;
        assert!(codec.verify(&bad_fp).is_err(), "{}", C::NAME);
    }

    #[test]
    fn the_input_is_the_ice_check() {
        let request = ice_request().unwrap();
        let m = Message::decode(&request).unwrap();
        assert_eq!(m.get::<Username>().unwrap().unwrap().as_str(), USERNAME);
        let types: Vec<u16> = m.attributes().map(|a| a.typ.0).collect();
        // USERNAME, PRIORITY, USE-CANDIDATE ... in builder order.
        assert_eq!(types, [0x0006, 0x0024, 0x802a, 0x0025, 0x0008, 0x8028]);
        assert_eq!(request.len(), 20 + 16 + 8 + 12 + 4 + 24 + 8);
    }

    #[test]
    fn p2p_agrees() {
        same_results(P2p::new().unwrap());
    }

    #[test]
    fn one_pass_decode_agrees() {
        let request = ice_request().unwrap();
        assert_eq!(p2p_decode_one_pass(&request).unwrap(), expected_check());
        assert!(p2p_decode_one_pass(&request[..request.len() - 4]).is_err());
    }

    #[test]
    fn floor_verifies_and_rejects() {
        let request = ice_request().unwrap();
        let floor = Floor::new(&request).unwrap();
        floor.verify(&request).unwrap();
        floor.verify_prekeyed(&request).unwrap();
        let mut tampered = request.clone();
        tampered[30] ^= 1;
        assert!(floor.verify(&tampered).is_err());
        assert!(floor.verify_prekeyed(&tampered).is_err());
        assert!(Floor::new(&request[..40]).is_err());
    }

    #[cfg(feature = "peers")]
    #[test]
    fn webrtc_rs_agrees() {
        same_results(WebrtcRs::new().unwrap());
    }

    #[cfg(feature = "peers")]
    #[test]
    fn stun_rs_agrees() {
        same_results(StunRs::new().unwrap());
    }
}
