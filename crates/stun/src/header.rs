//! The 20-byte header: message type (class and method), length, magic cookie,
//! transaction id (RFC 8489 §5), and attribute types.

use std::fmt;

/// The magic cookie, 0x2112A442 (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN header.
pub const HEADER_LEN: usize = 20;

/// The class of a message: request, indication, success or error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageClass {
    /// A request, answered by a response.
    Request,
    /// An indication, never answered.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

/// A STUN method (12 bits). Unknown methods are representable so that a server
/// can answer them with 400.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Method(u16);

impl Method {
    /// Binding (RFC 8489).
    pub const BINDING: Method = Method(0x001);
    /// Allocate (RFC 8656).
    pub const ALLOCATE: Method = Method(0x003);
    /// Refresh (RFC 8656).
    pub const REFRESH: Method = Method(0x004);
    /// Send (RFC 8656), indication only.
    pub const SEND: Method = Method(0x006);
    /// Data (RFC 8656), indication only.
    pub const DATA: Method = Method(0x007);
    /// CreatePermission (RFC 8656).
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// ChannelBind (RFC 8656).
    pub const CHANNEL_BIND: Method = Method(0x009);
    /// Connect (RFC 6062).
    pub const CONNECT: Method = Method(0x00A);
    /// ConnectionBind (RFC 6062).
    pub const CONNECTION_BIND: Method = Method(0x00B);
    /// ConnectionAttempt (RFC 6062), indication only.
    pub const CONNECTION_ATTEMPT: Method = Method(0x00C);

    /// A method from its 12-bit number; `None` above 0xFFF.
    pub const fn new(number: u16) -> Option<Method> {
        if number <= 0x0FFF {
            Some(Method(number))
        } else {
            None
        }
    }

    /// The 12-bit number.
    pub const fn number(self) -> u16 {
        self.0
    }

    /// The RFC's name of a registered method.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Method::BINDING => "Binding",
            Method::ALLOCATE => "Allocate",
            Method::REFRESH => "Refresh",
            Method::SEND => "Send",
            Method::DATA => "Data",
            Method::CREATE_PERMISSION => "CreatePermission",
            Method::CHANNEL_BIND => "ChannelBind",
            Method::CONNECT => "Connect",
            Method::CONNECTION_BIND => "ConnectionBind",
            Method::CONNECTION_ATTEMPT => "ConnectionAttempt",
            _ => return None,
        })
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "Method(0x{:03x})", self.0),
        }
    }
}

/// Class and method together: the first 16 bits of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// The method.
    pub method: Method,
    /// The class.
    pub class: MessageClass,
}

impl MessageType {
    /// A message type from its parts.
    pub const fn new(method: Method, class: MessageClass) -> Self {
        MessageType { method, class }
    }

    /// Decode the 14 significant bits (the two top bits must be zero; the caller checks).
    pub const fn from_u16(v: u16) -> Self {
        let m = v & 0x3EEF;
        let method = (m & 0x000F) | ((m & 0x00E0) >> 1) | ((m & 0x3E00) >> 2);
        let class = match ((v >> 4) & 1) | ((v >> 7) & 2) {
            0 => MessageClass::Request,
            1 => MessageClass::Indication,
            2 => MessageClass::Success,
            _ => MessageClass::Error,
        };
        MessageType {
            method: Method(method),
            class,
        }
    }

    /// The 16-bit wire form (RFC 8489 §5, figure 3).
    pub const fn to_u16(self) -> u16 {
        let m = self.method.0;
        let method = (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2);
        let class = match self.class {
            MessageClass::Request => 0x0000,
            MessageClass::Indication => 0x0010,
            MessageClass::Success => 0x0100,
            MessageClass::Error => 0x0110,
        };
        method | class
    }

    /// The matching success response type of a request type.
    pub const fn success(self) -> Self {
        MessageType::new(self.method, MessageClass::Success)
    }

    /// The matching error response type of a request type.
    pub const fn error(self) -> Self {
        MessageType::new(self.method, MessageClass::Error)
    }
}

/// The 96-bit transaction id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TransactionId([u8; 12]);

impl TransactionId {
    /// A transaction id from its bytes. Requests need cryptographically random
    /// ids (RFC 8489 §5): take them from a CSPRNG.
    pub const fn new(bytes: [u8; 12]) -> Self {
        TransactionId(bytes)
    }

    /// A random transaction id from the given generator.
    pub fn random<R: rand::RngCore + ?Sized>(rng: &mut R) -> Self {
        let mut b = [0u8; 12];
        rng.fill_bytes(&mut b);
        TransactionId(b)
    }

    /// The bytes.
    pub const fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }
}

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransactionId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// An attribute type (16 bits). Types below 0x8000 are comprehension-required.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrType(pub u16);

macro_rules! attr_types {
    ($($(#[$doc:meta])* $name:ident = $v:expr, $text:expr;)*) => {
        impl AttrType {
            $($(#[$doc])* pub const $name: AttrType = AttrType($v);)*

            /// The registered name, e.g. `XOR-MAPPED-ADDRESS`.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($v => Some($text),)*
                    _ => None,
                }
            }

            /// Whether this crate knows the type (it is in the IANA registry for
            /// STUN, TURN, ICE, RFC 5780 or RFC 6062).
            pub fn is_known(self) -> bool {
                self.name().is_some()
            }
        }
    };
}

attr_types! {
    /// MAPPED-ADDRESS (RFC 8489 §14.1)
    MAPPED_ADDRESS = 0x0001, "MAPPED-ADDRESS";
    /// CHANGE-REQUEST (RFC 5780 §7.2)
    CHANGE_REQUEST = 0x0003, "CHANGE-REQUEST";
    /// USERNAME (RFC 8489 §14.3)
    USERNAME = 0x0006, "USERNAME";
    /// MESSAGE-INTEGRITY (RFC 8489 §14.5)
    MESSAGE_INTEGRITY = 0x0008, "MESSAGE-INTEGRITY";
    /// ERROR-CODE (RFC 8489 §14.8)
    ERROR_CODE = 0x0009, "ERROR-CODE";
    /// UNKNOWN-ATTRIBUTES (RFC 8489 §14.9)
    UNKNOWN_ATTRIBUTES = 0x000A, "UNKNOWN-ATTRIBUTES";
    /// CHANNEL-NUMBER (RFC 8656 §18.1)
    CHANNEL_NUMBER = 0x000C, "CHANNEL-NUMBER";
    /// LIFETIME (RFC 8656 §18.2)
    LIFETIME = 0x000D, "LIFETIME";
    /// XOR-PEER-ADDRESS (RFC 8656 §18.3)
    XOR_PEER_ADDRESS = 0x0012, "XOR-PEER-ADDRESS";
    /// DATA (RFC 8656 §18.4)
    DATA = 0x0013, "DATA";
    /// REALM (RFC 8489 §14.9)
    REALM = 0x0014, "REALM";
    /// NONCE (RFC 8489 §14.10)
    NONCE = 0x0015, "NONCE";
    /// XOR-RELAYED-ADDRESS (RFC 8656 §18.5)
    XOR_RELAYED_ADDRESS = 0x0016, "XOR-RELAYED-ADDRESS";
    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6)
    REQUESTED_ADDRESS_FAMILY = 0x0017, "REQUESTED-ADDRESS-FAMILY";
    /// EVEN-PORT (RFC 8656 §18.7)
    EVEN_PORT = 0x0018, "EVEN-PORT";
    /// REQUESTED-TRANSPORT (RFC 8656 §18.8)
    REQUESTED_TRANSPORT = 0x0019, "REQUESTED-TRANSPORT";
    /// DONT-FRAGMENT (RFC 8656 §18.9)
    DONT_FRAGMENT = 0x001A, "DONT-FRAGMENT";
    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6)
    MESSAGE_INTEGRITY_SHA256 = 0x001C, "MESSAGE-INTEGRITY-SHA256";
    /// PASSWORD-ALGORITHM (RFC 8489 §14.12)
    PASSWORD_ALGORITHM = 0x001D, "PASSWORD-ALGORITHM";
    /// USERHASH (RFC 8489 §14.4)
    USERHASH = 0x001E, "USERHASH";
    /// XOR-MAPPED-ADDRESS (RFC 8489 §14.2)
    XOR_MAPPED_ADDRESS = 0x0020, "XOR-MAPPED-ADDRESS";
    /// RESERVATION-TOKEN (RFC 8656 §18.10)
    RESERVATION_TOKEN = 0x0022, "RESERVATION-TOKEN";
    /// PRIORITY (RFC 8445 §16.1)
    PRIORITY = 0x0024, "PRIORITY";
    /// USE-CANDIDATE (RFC 8445 §16.1)
    USE_CANDIDATE = 0x0025, "USE-CANDIDATE";
    /// PADDING (RFC 5780 §7.6)
    PADDING = 0x0026, "PADDING";
    /// RESPONSE-PORT (RFC 5780 §7.5)
    RESPONSE_PORT = 0x0027, "RESPONSE-PORT";
    /// CONNECTION-ID (RFC 6062 §6.2.1)
    CONNECTION_ID = 0x002A, "CONNECTION-ID";
    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11)
    ADDITIONAL_ADDRESS_FAMILY = 0x8000, "ADDITIONAL-ADDRESS-FAMILY";
    /// ADDRESS-ERROR-CODE (RFC 8656 §18.12)
    ADDRESS_ERROR_CODE = 0x8001, "ADDRESS-ERROR-CODE";
    /// PASSWORD-ALGORITHMS (RFC 8489 §14.11)
    PASSWORD_ALGORITHMS = 0x8002, "PASSWORD-ALGORITHMS";
    /// ALTERNATE-DOMAIN (RFC 8489 §14.16)
    ALTERNATE_DOMAIN = 0x8003, "ALTERNATE-DOMAIN";
    /// ICMP (RFC 8656 §18.13)
    ICMP = 0x8004, "ICMP";
    /// SOFTWARE (RFC 8489 §14.14)
    SOFTWARE = 0x8022, "SOFTWARE";
    /// ALTERNATE-SERVER (RFC 8489 §14.15)
    ALTERNATE_SERVER = 0x8023, "ALTERNATE-SERVER";
    /// CACHE-TIMEOUT (RFC 5780 §7.7)
    CACHE_TIMEOUT = 0x8027, "CACHE-TIMEOUT";
    /// FINGERPRINT (RFC 8489 §14.7)
    FINGERPRINT = 0x8028, "FINGERPRINT";
    /// ICE-CONTROLLED (RFC 8445 §16.1)
    ICE_CONTROLLED = 0x8029, "ICE-CONTROLLED";
    /// ICE-CONTROLLING (RFC 8445 §16.1)
    ICE_CONTROLLING = 0x802A, "ICE-CONTROLLING";
    /// RESPONSE-ORIGIN (RFC 5780 §7.3)
    RESPONSE_ORIGIN = 0x802B, "RESPONSE-ORIGIN";
    /// OTHER-ADDRESS (RFC 5780 §7.4)
    OTHER_ADDRESS = 0x802C, "OTHER-ADDRESS";
}

impl AttrType {
    /// Types 0x0000..=0x7FFF must be understood by the receiver (RFC 8489 §14).
    pub const fn is_comprehension_required(self) -> bool {
        self.0 < 0x8000
    }
}

impl fmt::Debug for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "0x{:04x}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_bits_match_rfc8489_figure_3() {
        let cases = [
            (Method::BINDING, MessageClass::Request, 0x0001),
            (Method::BINDING, MessageClass::Success, 0x0101),
            (Method::BINDING, MessageClass::Error, 0x0111),
            (Method::BINDING, MessageClass::Indication, 0x0011),
            (Method::ALLOCATE, MessageClass::Request, 0x0003),
            (Method::ALLOCATE, MessageClass::Error, 0x0113),
            (Method::SEND, MessageClass::Indication, 0x0016),
            (Method::DATA, MessageClass::Indication, 0x0017),
            (Method::CHANNEL_BIND, MessageClass::Success, 0x0109),
            (Method::CONNECTION_ATTEMPT, MessageClass::Indication, 0x001C),
        ];
        for (m, c, wire) in cases {
            let t = MessageType::new(m, c);
            assert_eq!(t.to_u16(), wire, "{m} {c:?}");
            assert_eq!(MessageType::from_u16(wire), t);
        }
    }

    #[test]
    fn every_12_bit_method_round_trips_in_every_class() {
        for n in 0..=0x0FFF {
            for c in [
                MessageClass::Request,
                MessageClass::Indication,
                MessageClass::Success,
                MessageClass::Error,
            ] {
                let t = MessageType::new(Method::new(n).unwrap(), c);
                let w = t.to_u16();
                assert_eq!(w & 0xC000, 0);
                assert_eq!(MessageType::from_u16(w), t);
            }
        }
        assert_eq!(Method::new(0x1000), None);
    }

    #[test]
    fn attr_names_and_comprehension() {
        assert_eq!(
            AttrType::XOR_MAPPED_ADDRESS.to_string(),
            "XOR-MAPPED-ADDRESS"
        );
        assert_eq!(AttrType(0x7777).to_string(), "0x7777");
        assert!(AttrType::USERNAME.is_comprehension_required());
        assert!(!AttrType::SOFTWARE.is_comprehension_required());
    }
}
