//! Attributes as small value types (RFC 8489 §14, RFC 5780 §7, RFC 8445 §16.1,
//! RFC 8656 §18, RFC 6062 §6.2).
//!
//! Each implements [`Attribute`]: it decodes from a borrowed value (zero copy)
//! and encodes into exactly [`Attribute::value_len`] bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::AttrError;
use crate::header::{AttrType, TransactionId, MAGIC_COOKIE};

/// A STUN attribute value type.
pub trait Attribute<'a>: Sized {
    /// The attribute type it is carried as.
    const TYPE: AttrType;
    /// Decode from the value bytes (without header and padding).
    fn decode(value: &'a [u8], tid: &TransactionId) -> Result<Self, AttrError>;
    /// The encoded value length (without padding).
    fn value_len(&self) -> usize;
    /// Encode the value into `out`, which is exactly `value_len()` bytes.
    fn encode_value(&self, tid: &TransactionId, out: &mut [u8]);
}

fn exact<const N: usize>(v: &[u8], expected: &'static str) -> Result<[u8; N], AttrError> {
    v.try_into().map_err(|_| AttrError::BadLength {
        len: v.len(),
        expected,
    })
}

// ---------------------------------------------------------------- addresses

const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;

fn address_len(a: &SocketAddr) -> usize {
    match a {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

fn xor_mask(tid: &TransactionId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    k[4..].copy_from_slice(tid.as_bytes());
    k
}

fn decode_address(v: &[u8], tid: Option<&TransactionId>) -> Result<SocketAddr, AttrError> {
    let (head, rest) = v.split_at_checked(4).ok_or(AttrError::BadLength {
        len: v.len(),
        expected: "8 (IPv4) or 20 (IPv6)",
    })?;
    let family = head[1];
    let mut port = u16::from_be_bytes([head[2], head[3]]);
    let mask = tid.map(xor_mask);
    if mask.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match family {
        FAMILY_V4 => {
            let mut b: [u8; 4] = exact(rest, "8 (IPv4)").map_err(|_| AttrError::BadLength {
                len: v.len(),
                expected: "8 (IPv4)",
            })?;
            if let Some(k) = mask {
                b.iter_mut().zip(k).for_each(|(x, k)| *x ^= k);
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        FAMILY_V6 => {
            let mut b: [u8; 16] = exact(rest, "20 (IPv6)").map_err(|_| AttrError::BadLength {
                len: v.len(),
                expected: "20 (IPv6)",
            })?;
            if let Some(k) = mask {
                b.iter_mut().zip(k).for_each(|(x, k)| *x ^= k);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        f => return Err(AttrError::BadFamily(f)),
    };
    Ok(SocketAddr::new(ip, port))
}

fn encode_address(a: &SocketAddr, tid: Option<&TransactionId>, out: &mut [u8]) {
    out[0] = 0;
    let mask = tid.map(xor_mask);
    let mut port = a.port();
    if mask.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match a.ip() {
        IpAddr::V4(ip) => {
            out[1] = FAMILY_V4;
            out[4..8].copy_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out[1] = FAMILY_V6;
            out[4..20].copy_from_slice(&ip.octets());
        }
    }
    if let Some(k) = mask {
        out[4..].iter_mut().zip(k).for_each(|(x, k)| *x ^= k);
    }
}

macro_rules! address_attr {
    ($(#[$doc:meta])* $name:ident, $ty:ident, xor = $xor:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub SocketAddr);

        impl<'a> Attribute<'a> for $name {
            const TYPE: AttrType = AttrType::$ty;
            fn decode(value: &'a [u8], tid: &TransactionId) -> Result<Self, AttrError> {
                decode_address(value, if $xor { Some(tid) } else { None }).map($name)
            }
            fn value_len(&self) -> usize {
                address_len(&self.0)
            }
            fn encode_value(&self, tid: &TransactionId, out: &mut [u8]) {
                encode_address(&self.0, if $xor { Some(tid) } else { None }, out)
            }
        }
    };
}

address_attr!(
    /// MAPPED-ADDRESS: the reflexive address, in the clear (RFC 3489 clients).
    MappedAddress, MAPPED_ADDRESS, xor = false);
address_attr!(
    /// XOR-MAPPED-ADDRESS: the reflexive transport address of the client.
    XorMappedAddress, XOR_MAPPED_ADDRESS, xor = true);
address_attr!(
    /// XOR-PEER-ADDRESS: a peer's address as the TURN server sees it.
    XorPeerAddress, XOR_PEER_ADDRESS, xor = true);
address_attr!(
    /// XOR-RELAYED-ADDRESS: the relayed transport address of an allocation.
    XorRelayedAddress, XOR_RELAYED_ADDRESS, xor = true);
address_attr!(
    /// ALTERNATE-SERVER: the server to try instead (with 300 Try Alternate).
    AlternateServer, ALTERNATE_SERVER, xor = false);
address_attr!(
    /// RESPONSE-ORIGIN (RFC 5780): the address a response was sent from.
    ResponseOrigin, RESPONSE_ORIGIN, xor = false);
address_attr!(
    /// OTHER-ADDRESS (RFC 5780): the server's alternate address and port.
    OtherAddress, OTHER_ADDRESS, xor = false);

// ---------------------------------------------------------------- text

macro_rules! text_attr {
    ($(#[$doc:meta])* $name:ident, $ty:ident, max_bytes = $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name<'a>(&'a str);

        impl<'a> $name<'a> {
            /// The most bytes the RFC allows in this attribute.
            pub const MAX_BYTES: usize = $max;

            /// Wrap a value, checking its length.
            pub fn new(value: &'a str) -> Result<Self, AttrError> {
                if value.len() > Self::MAX_BYTES {
                    return Err(AttrError::TooLong { len: value.len(), max: Self::MAX_BYTES });
                }
                Ok($name(value))
            }

            /// The text.
            pub fn as_str(&self) -> &'a str {
                self.0
            }
        }

        impl<'a> Attribute<'a> for $name<'a> {
            const TYPE: AttrType = AttrType::$ty;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
                let s = std::str::from_utf8(value).map_err(|_| AttrError::NotUtf8)?;
                Self::new(s)
            }
            fn value_len(&self) -> usize {
                self.0.len()
            }
            fn encode_value(&self, _: &TransactionId, out: &mut [u8]) {
                out.copy_from_slice(self.0.as_bytes())
            }
        }
    };
}

text_attr!(
    /// USERNAME: at most 513 bytes (RFC 8489 §14.3).
    Username, USERNAME, max_bytes = 513);
text_attr!(
    /// REALM: fewer than 128 characters, at most 763 bytes (RFC 8489 §14.9).
    Realm, REALM, max_bytes = 763);
text_attr!(
    /// NONCE: fewer than 128 characters, at most 763 bytes (RFC 8489 §14.10).
    Nonce, NONCE, max_bytes = 763);
text_attr!(
    /// SOFTWARE: fewer than 128 characters, at most 763 bytes (RFC 8489 §14.14).
    Software, SOFTWARE, max_bytes = 763);
text_attr!(
    /// ALTERNATE-DOMAIN: a host name for TLS checks with ALTERNATE-SERVER (≤ 255 bytes).
    AlternateDomain, ALTERNATE_DOMAIN, max_bytes = 255);

// ---------------------------------------------------------------- opaque bytes

macro_rules! bytes_attr {
    ($(#[$doc:meta])* $name:ident, $ty:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name<'a>(pub &'a [u8]);

        impl<'a> Attribute<'a> for $name<'a> {
            const TYPE: AttrType = AttrType::$ty;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
                Ok($name(value))
            }
            fn value_len(&self) -> usize {
                self.0.len()
            }
            fn encode_value(&self, _: &TransactionId, out: &mut [u8]) {
                out.copy_from_slice(self.0)
            }
        }
    };
}

bytes_attr!(
    /// DATA: the application data of a Send or Data indication (RFC 8656 §18.4).
    Data, DATA);
bytes_attr!(
    /// PADDING (RFC 5780 §7.6): filler to test fragmentation.
    Padding, PADDING);

// ---------------------------------------------------------------- fixed-size values

macro_rules! fixed_attr {
    ($(#[$doc:meta])* $name:ident($inner:ty), $ty:ident, $n:literal, $dec:expr, $enc:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub $inner);

        impl<'a> Attribute<'a> for $name {
            const TYPE: AttrType = AttrType::$ty;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
                let b: [u8; $n] = exact(value, stringify!($n))?;
                #[allow(clippy::redundant_closure_call, clippy::redundant_closure)]
                ($dec)(b).map($name)
            }
            fn value_len(&self) -> usize {
                $n
            }
            fn encode_value(&self, _: &TransactionId, out: &mut [u8]) {
                #[allow(clippy::redundant_closure_call, clippy::redundant_closure)]
                out.copy_from_slice(&($enc)(self.0))
            }
        }
    };
}

fixed_attr!(
    /// PRIORITY (RFC 8445 §7.1.1): the priority a peer-reflexive candidate would get.
    Priority(u32), PRIORITY, 4,
    |b| Ok::<_, AttrError>(u32::from_be_bytes(b)), |v: u32| v.to_be_bytes());
fixed_attr!(
    /// ICE-CONTROLLED (RFC 8445 §7.1.3): the agent's tie-breaker, in the controlled role.
    IceControlled(u64), ICE_CONTROLLED, 8,
    |b| Ok::<_, AttrError>(u64::from_be_bytes(b)), |v: u64| v.to_be_bytes());
fixed_attr!(
    /// ICE-CONTROLLING (RFC 8445 §7.1.3): the agent's tie-breaker, in the controlling role.
    IceControlling(u64), ICE_CONTROLLING, 8,
    |b| Ok::<_, AttrError>(u64::from_be_bytes(b)), |v: u64| v.to_be_bytes());
fixed_attr!(
    /// LIFETIME (RFC 8656 §18.2): seconds until the allocation expires.
    Lifetime(u32), LIFETIME, 4,
    |b| Ok::<_, AttrError>(u32::from_be_bytes(b)), |v: u32| v.to_be_bytes());
fixed_attr!(
    /// RESERVATION-TOKEN (RFC 8656 §18.10): names a relayed port kept by EVEN-PORT.
    ReservationToken([u8; 8]), RESERVATION_TOKEN, 8,
    |b| Ok::<_, AttrError>(b), |v: [u8; 8]| v);
fixed_attr!(
    /// CONNECTION-ID (RFC 6062 §6.2.1): names a TCP connection to a peer.
    ConnectionId(u32), CONNECTION_ID, 4,
    |b| Ok::<_, AttrError>(u32::from_be_bytes(b)), |v: u32| v.to_be_bytes());
fixed_attr!(
    /// CACHE-TIMEOUT (RFC 5780 §7.7): seconds a NAT binding is expected to last.
    CacheTimeout(u32), CACHE_TIMEOUT, 4,
    |b| Ok::<_, AttrError>(u32::from_be_bytes(b)), |v: u32| v.to_be_bytes());
fixed_attr!(
    /// USERHASH (RFC 8489 §14.4): SHA-256(username ":" realm), hiding the username.
    Userhash([u8; 32]), USERHASH, 32,
    |b| Ok::<_, AttrError>(b), |v: [u8; 32]| v);
fixed_attr!(
    /// CHANNEL-NUMBER (RFC 8656 §18.1), then two RFFU bytes. RFC 8656 allows
    /// 0x4000..=0x4FFF; decoding accepts RFC 5766's 0x4000..=0x7FFF
    /// ([`crate::CHANNEL_DATA_RANGE`]) for older clients.
    ChannelNumber(u16), CHANNEL_NUMBER, 4,
    |b: [u8; 4]| {
        let n = u16::from_be_bytes([b[0], b[1]]);
        if crate::channel::CHANNEL_DATA_RANGE.contains(&n) { Ok(n) } else { Err(AttrError::BadChannel(n)) }
    },
    |v: u16| { let p = v.to_be_bytes(); [p[0], p[1], 0, 0] });
fixed_attr!(
    /// RESPONSE-PORT (RFC 5780 §7.5): the port the response should go to.
    ResponsePort(u16), RESPONSE_PORT, 4,
    |b: [u8; 4]| Ok::<_, AttrError>(u16::from_be_bytes([b[0], b[1]])),
    |v: u16| { let p = v.to_be_bytes(); [p[0], p[1], 0, 0] });
fixed_attr!(
    /// REQUESTED-TRANSPORT (RFC 8656 §18.8): the IP protocol number (17 UDP, 6 TCP).
    RequestedTransport(u8), REQUESTED_TRANSPORT, 4,
    |b: [u8; 4]| Ok::<_, AttrError>(b[0]), |v: u8| [v, 0, 0, 0]);

/// The IP protocol number of UDP, for [`RequestedTransport`].
pub const PROTO_UDP: u8 = 17;
/// The IP protocol number of TCP, for [`RequestedTransport`] (RFC 6062).
pub const PROTO_TCP: u8 = 6;

/// An address family of REQUESTED-ADDRESS-FAMILY and ADDITIONAL-ADDRESS-FAMILY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// IPv4 (0x01).
    V4,
    /// IPv6 (0x02).
    V6,
}

impl AddressFamily {
    fn decode(b: u8) -> Result<Self, AttrError> {
        match b {
            FAMILY_V4 => Ok(AddressFamily::V4),
            FAMILY_V6 => Ok(AddressFamily::V6),
            f => Err(AttrError::BadFamily(f)),
        }
    }
    fn encode(self) -> u8 {
        match self {
            AddressFamily::V4 => FAMILY_V4,
            AddressFamily::V6 => FAMILY_V6,
        }
    }
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => AddressFamily::V4,
            IpAddr::V6(_) => AddressFamily::V6,
        }
    }
}

fixed_attr!(
    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6).
    RequestedAddressFamily(AddressFamily), REQUESTED_ADDRESS_FAMILY, 4,
    |b: [u8; 4]| AddressFamily::decode(b[0]), |v: AddressFamily| [v.encode(), 0, 0, 0]);
fixed_attr!(
    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11): only IPv6 is allowed in a request.
    AdditionalAddressFamily(AddressFamily), ADDITIONAL_ADDRESS_FAMILY, 4,
    |b: [u8; 4]| AddressFamily::decode(b[0]), |v: AddressFamily| [v.encode(), 0, 0, 0]);

/// CHANGE-REQUEST (RFC 5780 §7.2): ask the server to answer from its other IP and/or port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChangeRequest {
    /// Answer from the other IP address.
    pub change_ip: bool,
    /// Answer from the other port.
    pub change_port: bool,
}

impl<'a> Attribute<'a> for ChangeRequest {
    const TYPE: AttrType = AttrType::CHANGE_REQUEST;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        let v = u32::from_be_bytes(exact(value, "4")?);
        Ok(ChangeRequest {
            change_ip: v & 0x4 != 0,
            change_port: v & 0x2 != 0,
        })
    }
    fn value_len(&self) -> usize {
        4
    }
    fn encode_value(&self, _: &TransactionId, out: &mut [u8]) {
        let v = (u32::from(self.change_ip) << 2) | (u32::from(self.change_port) << 1);
        out.copy_from_slice(&v.to_be_bytes())
    }
}

/// EVEN-PORT (RFC 8656 §18.7): ask for an even relayed port, and with
/// `reserve_next` to keep the next port too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EvenPort {
    /// The R bit: reserve the next-higher port.
    pub reserve_next: bool,
}

impl<'a> Attribute<'a> for EvenPort {
    const TYPE: AttrType = AttrType::EVEN_PORT;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        let [b] = exact::<1>(value, "1")?;
        Ok(EvenPort {
            reserve_next: b & 0x80 != 0,
        })
    }
    fn value_len(&self) -> usize {
        1
    }
    fn encode_value(&self, _: &TransactionId, out: &mut [u8]) {
        out[0] = if self.reserve_next { 0x80 } else { 0 };
    }
}

// ---------------------------------------------------------------- flags (empty value)

macro_rules! flag_attr {
    ($(#[$doc:meta])* $name:ident, $ty:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name;

        impl<'a> Attribute<'a> for $name {
            const TYPE: AttrType = AttrType::$ty;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
                exact::<0>(value, "0").map(|_| $name)
            }
            fn value_len(&self) -> usize {
                0
            }
            fn encode_value(&self, _: &TransactionId, _: &mut [u8]) {}
        }
    };
}

flag_attr!(
    /// USE-CANDIDATE (RFC 8445 §7.1.2): the controlling agent nominates this pair.
    UseCandidate, USE_CANDIDATE);
flag_attr!(
    /// DONT-FRAGMENT (RFC 8656 §18.9): set DF on relayed packets.
    DontFragment, DONT_FRAGMENT);

// ---------------------------------------------------------------- error codes

fn decode_code_reason(v: &[u8]) -> Result<(u16, &str), AttrError> {
    let (head, reason) = v.split_at_checked(4).ok_or(AttrError::BadLength {
        len: v.len(),
        expected: "at least 4",
    })?;
    let class = head[2] & 0x07;
    let number = head[3];
    if !(3..=6).contains(&class) || number > 99 {
        return Err(AttrError::BadErrorCode { class, number });
    }
    if reason.len() > 763 {
        return Err(AttrError::TooLong {
            len: reason.len(),
            max: 763,
        });
    }
    let reason = std::str::from_utf8(reason).map_err(|_| AttrError::NotUtf8)?;
    Ok((u16::from(class) * 100 + u16::from(number), reason))
}

fn encode_code(code: u16, out: &mut [u8]) {
    out[2] = (code / 100) as u8 & 0x07;
    out[3] = (code % 100) as u8;
}

/// ERROR-CODE (RFC 8489 §14.8): a code 300..=699 and a reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode<'a> {
    code: u16,
    reason: &'a str,
}

impl<'a> ErrorCode<'a> {
    /// An error code with a reason phrase; `None` if the code is outside 300..=699
    /// or the reason is longer than 763 bytes.
    pub fn new(code: u16, reason: &'a str) -> Option<Self> {
        ((300..700).contains(&code) && reason.len() <= 763).then_some(ErrorCode { code, reason })
    }

    /// An error code with the RFC's recommended reason phrase.
    pub fn from_code(code: u16) -> Option<ErrorCode<'static>> {
        ErrorCode::new(code, reason_phrase(code))
    }

    /// The numeric code, e.g. 401.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The reason phrase.
    pub fn reason(&self) -> &'a str {
        self.reason
    }
}

impl<'a> Attribute<'a> for ErrorCode<'a> {
    const TYPE: AttrType = AttrType::ERROR_CODE;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        let (code, reason) = decode_code_reason(value)?;
        Ok(ErrorCode { code, reason })
    }
    fn value_len(&self) -> usize {
        4 + self.reason.len()
    }
    fn encode_value(&self, _: &TransactionId, out: &mut [u8]) {
        out[..2].fill(0);
        encode_code(self.code, out);
        out[4..].copy_from_slice(self.reason.as_bytes());
    }
}

/// The recommended reason phrase of a STUN/TURN error code.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        405 => "Mobility Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        446 => "Connection Already Exists",
        447 => "Connection Timeout or Failure",
        486 => "Allocation Quota Reached",
        487 => "Role Conflict",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

/// ADDRESS-ERROR-CODE (RFC 8656 §18.12): why one family of a dual allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressErrorCode<'a> {
    /// The family that failed.
    pub family: AddressFamily,
    /// The error code (e.g. 440 or 508).
    pub code: u16,
    /// The reason phrase.
    pub reason: &'a str,
}

impl<'a> Attribute<'a> for AddressErrorCode<'a> {
    const TYPE: AttrType = AttrType::ADDRESS_ERROR_CODE;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        let family = AddressFamily::decode(*value.first().ok_or(AttrError::BadLength {
            len: 0,
            expected: "at least 4",
        })?)?;
        let (code, reason) = decode_code_reason(value)?;
        Ok(AddressErrorCode {
            family,
            code,
            reason,
        })
    }
    fn value_len(&self) -> usize {
        4 + self.reason.len()
    }
    fn encode_value(&self, _: &TransactionId, out: &mut [u8]) {
        out[0] = self.family.encode();
        out[1] = 0;
        encode_code(self.code, out);
        out[4..].copy_from_slice(self.reason.as_bytes());
    }
}

/// ICMP (RFC 8656 §18.13): an ICMP error a relayed packet met, in a Data indication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Icmp {
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// Error data (e.g. the MTU for "fragmentation needed").
    pub data: u32,
}

impl<'a> Attribute<'a> for Icmp {
    const TYPE: AttrType = AttrType::ICMP;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        let b: [u8; 8] = exact(value, "8")?;
        Ok(Icmp {
            icmp_type: b[2],
            code: b[3],
            data: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
    fn value_len(&self) -> usize {
        8
    }
    fn encode_value(&self, _: &TransactionId, out: &mut [u8]) {
        out[..2].fill(0);
        out[2] = self.icmp_type;
        out[3] = self.code;
        out[4..].copy_from_slice(&self.data.to_be_bytes());
    }
}

// ---------------------------------------------------------------- lists

/// UNKNOWN-ATTRIBUTES (RFC 8489 §14.9): the comprehension-required types a
/// server did not understand, sent with 420.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownAttributes<'a> {
    /// As received: big-endian 16-bit types.
    Wire(&'a [u8]),
    /// To send.
    List(&'a [AttrType]),
}

impl<'a> UnknownAttributes<'a> {
    /// The attribute types listed.
    pub fn iter(&self) -> impl Iterator<Item = AttrType> + 'a {
        let (wire, list): (&'a [u8], &'a [AttrType]) = match *self {
            UnknownAttributes::Wire(w) => (w, &[]),
            UnknownAttributes::List(l) => (&[], l),
        };
        wire.chunks_exact(2)
            .map(|c| AttrType(u16::from_be_bytes([c[0], c[1]])))
            .chain(list.iter().copied())
    }
}

impl<'a> Attribute<'a> for UnknownAttributes<'a> {
    const TYPE: AttrType = AttrType::UNKNOWN_ATTRIBUTES;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        if value.len() % 2 != 0 {
            return Err(AttrError::BadLength {
                len: value.len(),
                expected: "a multiple of 2",
            });
        }
        Ok(UnknownAttributes::Wire(value))
    }
    fn value_len(&self) -> usize {
        match self {
            UnknownAttributes::Wire(w) => w.len(),
            UnknownAttributes::List(l) => l.len() * 2,
        }
    }
    fn encode_value(&self, _: &TransactionId, out: &mut [u8]) {
        for (chunk, t) in out.chunks_exact_mut(2).zip(self.iter()) {
            chunk.copy_from_slice(&t.0.to_be_bytes());
        }
    }
}

/// A password algorithm for long-term credentials (RFC 8489 §18.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PasswordAlgorithm {
    /// MD5 (0x0001), the RFC 5389 key derivation.
    Md5,
    /// SHA-256 (0x0002).
    Sha256,
    /// An algorithm this crate does not implement.
    Other(u16),
}

impl PasswordAlgorithm {
    /// The registered number.
    pub fn number(self) -> u16 {
        match self {
            PasswordAlgorithm::Md5 => 0x0001,
            PasswordAlgorithm::Sha256 => 0x0002,
            PasswordAlgorithm::Other(n) => n,
        }
    }
    /// From the registered number.
    pub fn from_number(n: u16) -> Self {
        match n {
            0x0001 => PasswordAlgorithm::Md5,
            0x0002 => PasswordAlgorithm::Sha256,
            n => PasswordAlgorithm::Other(n),
        }
    }
}

impl<'a> Attribute<'a> for PasswordAlgorithm {
    const TYPE: AttrType = AttrType::PASSWORD_ALGORITHM;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        let (head, params) = value.split_at_checked(4).ok_or(AttrError::BadLength {
            len: value.len(),
            expected: "at least 4",
        })?;
        let plen = usize::from(u16::from_be_bytes([head[2], head[3]]));
        if params.len() != plen {
            return Err(AttrError::BadAlgorithmList);
        }
        Ok(PasswordAlgorithm::from_number(u16::from_be_bytes([
            head[0], head[1],
        ])))
    }
    fn value_len(&self) -> usize {
        4
    }
    fn encode_value(&self, _: &TransactionId, out: &mut [u8]) {
        out[..2].copy_from_slice(&self.number().to_be_bytes());
        out[2..4].fill(0);
    }
}

/// PASSWORD-ALGORITHMS (RFC 8489 §14.11): the algorithms a server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordAlgorithms<'a> {
    /// As received (validated): entries of algorithm, length, padded parameters.
    Wire(&'a [u8]),
    /// To send (no parameters).
    List(&'a [PasswordAlgorithm]),
}

impl<'a> PasswordAlgorithms<'a> {
    /// The algorithms, in the server's order of preference.
    pub fn iter(&self) -> impl Iterator<Item = PasswordAlgorithm> + 'a {
        let (mut wire, list): (&'a [u8], &'a [PasswordAlgorithm]) = match *self {
            PasswordAlgorithms::Wire(w) => (w, &[]),
            PasswordAlgorithms::List(l) => (&[], l),
        };
        std::iter::from_fn(move || {
            let (head, rest) = wire.split_at_checked(4)?;
            let plen = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let skip = plen.next_multiple_of(4);
            wire = rest.get(skip..).unwrap_or(&[]);
            Some(PasswordAlgorithm::from_number(u16::from_be_bytes([
                head[0], head[1],
            ])))
        })
        .chain(list.iter().copied())
    }
}

impl<'a> Attribute<'a> for PasswordAlgorithms<'a> {
    const TYPE: AttrType = AttrType::PASSWORD_ALGORITHMS;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        let mut rest = value;
        while !rest.is_empty() {
            let (head, tail) = rest
                .split_at_checked(4)
                .ok_or(AttrError::BadAlgorithmList)?;
            let plen = usize::from(u16::from_be_bytes([head[2], head[3]])).next_multiple_of(4);
            rest = tail.get(plen..).ok_or(AttrError::BadAlgorithmList)?;
        }
        Ok(PasswordAlgorithms::Wire(value))
    }
    fn value_len(&self) -> usize {
        match self {
            PasswordAlgorithms::Wire(w) => w.len(),
            PasswordAlgorithms::List(l) => l.len() * 4,
        }
    }
    fn encode_value(&self, tid: &TransactionId, out: &mut [u8]) {
        match self {
            PasswordAlgorithms::Wire(w) => out.copy_from_slice(w),
            PasswordAlgorithms::List(l) => {
                for (chunk, a) in out.chunks_exact_mut(4).zip(l.iter()) {
                    a.encode_value(tid, chunk);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = TransactionId::new([
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ]);

    fn round_trip<'a, A: Attribute<'a> + PartialEq + std::fmt::Debug>(a: A, buf: &'a mut Vec<u8>) {
        buf.resize(a.value_len(), 0xEE);
        a.encode_value(&TID, buf);
        let back = A::decode(buf, &TID).expect("decodes what it encoded");
        assert_eq!(back, a);
    }

    #[test]
    fn xor_mapped_address_matches_rfc5769_ipv4_sample() {
        let a = XorMappedAddress("192.0.2.1:32853".parse().unwrap());
        let mut out = [0u8; 8];
        a.encode_value(&TID, &mut out);
        assert_eq!(out, [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
    }

    #[test]
    fn every_attribute_round_trips() {
        let v6: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap();
        let v4: SocketAddr = "203.0.113.9:65535".parse().unwrap();
        let mut b = Vec::new();
        round_trip(XorMappedAddress(v6), &mut b);
        round_trip(XorMappedAddress(v4), &mut b);
        round_trip(MappedAddress(v6), &mut b);
        round_trip(XorPeerAddress(v4), &mut b);
        round_trip(XorRelayedAddress(v6), &mut b);
        round_trip(AlternateServer(v4), &mut b);
        round_trip(ResponseOrigin(v4), &mut b);
        round_trip(OtherAddress(v6), &mut b);
        round_trip(Username::new("evtj:h6vY").unwrap(), &mut b);
        round_trip(Realm::new("example.org").unwrap(), &mut b);
        round_trip(Nonce::new("f//499k954d6OL34oL9FSTvy64sA").unwrap(), &mut b);
        round_trip(Software::new("p2p").unwrap(), &mut b);
        round_trip(AlternateDomain::new("turn.example.org").unwrap(), &mut b);
        round_trip(Data(b"hello"), &mut b);
        round_trip(Padding(&[0; 7]), &mut b);
        round_trip(Priority(0x6e0001ff), &mut b);
        round_trip(IceControlled(0x932ff9b151263b36), &mut b);
        round_trip(IceControlling(1), &mut b);
        round_trip(Lifetime(600), &mut b);
        round_trip(ReservationToken(*b"12345678"), &mut b);
        round_trip(ConnectionId(7), &mut b);
        round_trip(CacheTimeout(60), &mut b);
        round_trip(Userhash([9; 32]), &mut b);
        round_trip(ChannelNumber(0x4001), &mut b);
        round_trip(ResponsePort(4000), &mut b);
        round_trip(RequestedTransport(PROTO_UDP), &mut b);
        round_trip(RequestedAddressFamily(AddressFamily::V6), &mut b);
        round_trip(AdditionalAddressFamily(AddressFamily::V6), &mut b);
        round_trip(
            ChangeRequest {
                change_ip: true,
                change_port: false,
            },
            &mut b,
        );
        round_trip(EvenPort { reserve_next: true }, &mut b);
        round_trip(UseCandidate, &mut b);
        round_trip(DontFragment, &mut b);
        round_trip(ErrorCode::from_code(438).unwrap(), &mut b);
        round_trip(
            AddressErrorCode {
                family: AddressFamily::V6,
                code: 440,
                reason: "Address Family not Supported",
            },
            &mut b,
        );
        round_trip(
            Icmp {
                icmp_type: 3,
                code: 4,
                data: 1400,
            },
            &mut b,
        );
        round_trip(PasswordAlgorithm::Sha256, &mut b);
    }

    #[test]
    fn lists_encode_and_decode() {
        let mut b = [0u8; 6];
        let l = [AttrType(0x0001), AttrType(0x7777), AttrType::USERNAME];
        UnknownAttributes::List(&l).encode_value(&TID, &mut b);
        let d = UnknownAttributes::decode(&b, &TID).unwrap();
        assert_eq!(d.iter().collect::<Vec<_>>(), l);

        let algs = [PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5];
        let mut b = [0u8; 8];
        PasswordAlgorithms::List(&algs).encode_value(&TID, &mut b);
        let d = PasswordAlgorithms::decode(&b, &TID).unwrap();
        assert_eq!(d.iter().collect::<Vec<_>>(), algs);
        // An entry with parameters is skipped over correctly.
        let wire = [0, 9, 0, 2, 0xAA, 0xBB, 0, 0, 0, 2, 0, 0];
        let d = PasswordAlgorithms::decode(&wire, &TID).unwrap();
        assert_eq!(
            d.iter().collect::<Vec<_>>(),
            [PasswordAlgorithm::Other(9), PasswordAlgorithm::Sha256]
        );
    }

    #[test]
    fn malformed_values_are_typed_errors() {
        type Check = fn(&[u8]) -> Result<(), AttrError>;
        let cases: &[(&str, Check, &[u8], AttrError)] = &[
            (
                "short address",
                |v| XorMappedAddress::decode(v, &TID).map(drop),
                &[0, 1, 0],
                AttrError::BadLength {
                    len: 3,
                    expected: "8 (IPv4) or 20 (IPv6)",
                },
            ),
            (
                "v4 with v6 length",
                |v| MappedAddress::decode(v, &TID).map(drop),
                &[0, 1, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8],
                AttrError::BadLength {
                    len: 12,
                    expected: "8 (IPv4)",
                },
            ),
            (
                "family 3",
                |v| MappedAddress::decode(v, &TID).map(drop),
                &[0, 3, 0, 1, 1, 2, 3, 4],
                AttrError::BadFamily(3),
            ),
            (
                "utf8",
                |v| Username::decode(v, &TID).map(drop),
                &[0xff, 0xfe],
                AttrError::NotUtf8,
            ),
            (
                "long username",
                |v| Username::decode(v, &TID).map(drop),
                &[b'a'; 514],
                AttrError::TooLong { len: 514, max: 513 },
            ),
            (
                "error class 7",
                |v| ErrorCode::decode(v, &TID).map(drop),
                &[0, 0, 7, 0],
                AttrError::BadErrorCode {
                    class: 7,
                    number: 0,
                },
            ),
            (
                "error number 100",
                |v| ErrorCode::decode(v, &TID).map(drop),
                &[0, 0, 4, 100],
                AttrError::BadErrorCode {
                    class: 4,
                    number: 100,
                },
            ),
            (
                "channel 0x3fff",
                |v| ChannelNumber::decode(v, &TID).map(drop),
                &[0x3f, 0xff, 0, 0],
                AttrError::BadChannel(0x3fff),
            ),
            (
                "priority 3 bytes",
                |v| Priority::decode(v, &TID).map(drop),
                &[1, 2, 3],
                AttrError::BadLength {
                    len: 3,
                    expected: "4",
                },
            ),
            (
                "use-candidate with value",
                |v| UseCandidate::decode(v, &TID).map(drop),
                &[1],
                AttrError::BadLength {
                    len: 1,
                    expected: "0",
                },
            ),
            (
                "odd unknown list",
                |v| UnknownAttributes::decode(v, &TID).map(drop),
                &[1, 2, 3],
                AttrError::BadLength {
                    len: 3,
                    expected: "a multiple of 2",
                },
            ),
            (
                "truncated algorithm",
                |v| PasswordAlgorithms::decode(v, &TID).map(drop),
                &[0, 1, 0, 4, 0],
                AttrError::BadAlgorithmList,
            ),
            (
                "family of additional",
                |v| AdditionalAddressFamily::decode(v, &TID).map(drop),
                &[9, 0, 0, 0],
                AttrError::BadFamily(9),
            ),
        ];
        for (name, f, input, want) in cases {
            assert_eq!(f(input), Err(*want), "{name}");
        }
    }
}
