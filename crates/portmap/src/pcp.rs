//! PCP messages (RFC 6887): the MAP request a client sends and the
//! responses it reads. Every decoder checks lengths before reading;
//! options are walked with their lengths checked and otherwise skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use p2p_proto::Transport;

use crate::wire::{be16, be32, DecodeError};

/// The version byte of PCP.
pub const VERSION: u8 = 2;
/// The MAP opcode (§11).
pub const OPCODE_MAP: u8 = 1;
/// Result code UNSUPP_VERSION (§7.4).
pub const UNSUPP_VERSION: u8 = 1;
/// The length of a MAP request (24-byte header + 36-byte MAP payload).
pub const MAP_LEN: usize = 60;
/// The largest PCP message (§7).
pub const MAX_LEN: usize = 1100;

/// An address as PCP writes it: IPv6, or IPv4-mapped IPv6 (§5).
fn address_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn address_from(b: &[u8]) -> Result<IpAddr, DecodeError> {
    let a: [u8; 16] = b.try_into().map_err(|_| DecodeError::Truncated)?;
    let v6 = Ipv6Addr::from(a);
    Ok(match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    })
}

fn protocol_number(t: Transport) -> u8 {
    match t {
        Transport::Udp => 17,
        _ => 6,
    }
}

/// A MAP request (§11.1).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRequest {
    /// The client's own address (the source address of the request).
    pub client: IpAddr,
    /// Seconds asked for (0 deletes the mapping).
    pub lifetime_secs: u32,
    /// The nonce that ties the mapping to this client (§11.1).
    pub nonce: [u8; 12],
    /// UDP or TCP.
    pub transport: Transport,
    /// The internal port to map.
    pub internal_port: u16,
    /// The external address and port we would like (`None`: no
    /// preference; written as the all-zeros address of the client's
    /// family and port 0).
    pub suggested_external: Option<SocketAddr>,
}

impl MapRequest {
    /// A request for `internal_port` of `client` with no preference.
    pub fn new(
        client: IpAddr,
        transport: Transport,
        internal_port: u16,
        lifetime_secs: u32,
        nonce: [u8; 12],
    ) -> Self {
        MapRequest {
            client,
            lifetime_secs,
            nonce,
            transport,
            internal_port,
            suggested_external: None,
        }
    }

    /// The 60 bytes on the wire.
    pub fn encode(&self) -> [u8; MAP_LEN] {
        let mut b = [0u8; MAP_LEN];
        b[0] = VERSION;
        b[1] = OPCODE_MAP; // R = 0: a request
        b[4..8].copy_from_slice(&self.lifetime_secs.to_be_bytes());
        b[8..24].copy_from_slice(&address_bytes(self.client));
        b[24..36].copy_from_slice(&self.nonce);
        b[36] = protocol_number(self.transport);
        b[40..42].copy_from_slice(&self.internal_port.to_be_bytes());
        let (port, ip) = match self.suggested_external {
            Some(s) => (s.port(), s.ip()),
            None => (
                0,
                match self.client {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                },
            ),
        };
        b[42..44].copy_from_slice(&port.to_be_bytes());
        b[44..60].copy_from_slice(&address_bytes(ip));
        b
    }
}

/// The MAP payload of a response (§11.1).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapPayload {
    /// The nonce of the request answered.
    pub nonce: [u8; 12],
    /// UDP or TCP; `None` for another protocol number.
    pub transport: Option<Transport>,
    /// The internal port.
    pub internal_port: u16,
    /// The external address and port the server assigned.
    pub external: SocketAddr,
}

/// A PCP response.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcpResponse {
    /// The opcode answered (MAP is 1).
    pub opcode: u8,
    /// The result code (0 SUCCESS; §7.4).
    pub result: u8,
    /// Seconds the mapping lives (on an error: how long the error is
    /// expected to last).
    pub lifetime_secs: u32,
    /// Seconds since the server's mapping table was (re)started.
    pub epoch: u32,
    /// The MAP payload, when the opcode is MAP and the payload is there
    /// (an error response may carry none).
    pub map: Option<MapPayload>,
}

impl PcpResponse {
    /// Decode a response. A version other than 2, a request (R bit clear),
    /// a length not a multiple of four or over 1100 bytes, and an option
    /// running past the end are errors.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < 24 {
            return Err(DecodeError::Truncated);
        }
        if b.len() > MAX_LEN || b.len() % 4 != 0 {
            return Err(DecodeError::BadLength(b.len()));
        }
        if b[0] != VERSION {
            return Err(DecodeError::UnknownVersion(b[0]));
        }
        if b[1] & 0x80 == 0 {
            return Err(DecodeError::NotAResponse);
        }
        let opcode = b[1] & 0x7f;
        let result = b[3];
        let lifetime_secs = be32(b, 4)?;
        let epoch = be32(b, 8)?;
        let (map, options_at) = if opcode == OPCODE_MAP && b.len() >= MAP_LEN {
            let nonce: [u8; 12] = b[24..36].try_into().map_err(|_| DecodeError::Truncated)?;
            let transport = match b[36] {
                17 => Some(Transport::Udp),
                6 => Some(Transport::Tcp),
                _ => None,
            };
            let internal_port = be16(b, 40)?;
            let port = be16(b, 42)?;
            let ip = address_from(&b[44..60])?;
            let payload = MapPayload {
                nonce,
                transport,
                internal_port,
                external: SocketAddr::new(ip, port),
            };
            (Some(payload), MAP_LEN)
        } else if opcode == OPCODE_MAP && result == 0 {
            // A success must carry its payload.
            return Err(DecodeError::Truncated);
        } else {
            (None, b.len())
        };
        // Options (§7.3): code, reserved, length, data padded to 4 bytes.
        let mut at = options_at;
        while at < b.len() {
            let len = usize::from(be16(b, at + 2)?);
            let padded = len.div_ceil(4) * 4;
            let end = at + 4 + padded;
            if end > b.len() {
                return Err(DecodeError::BadOption);
            }
            at = end;
        }
        Ok(PcpResponse {
            opcode,
            result,
            lifetime_secs,
            epoch,
            map,
        })
    }
}
