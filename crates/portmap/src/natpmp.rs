//! NAT-PMP messages (RFC 6886): the requests a client sends and the
//! responses it reads. Every decoder checks lengths before reading.

use std::net::Ipv4Addr;

use p2p_proto::Transport;

use crate::wire::{be16, be32, DecodeError};

/// The version byte of NAT-PMP.
pub const VERSION: u8 = 0;

/// Result code 1 of RFC 6886 §3.5: the server does not speak the version
/// asked for (what a NAT-PMP-only server answers a PCP request).
pub const UNSUPPORTED_VERSION: u16 = 1;

/// The opcode of a mapping request for `transport` (1 for UDP, 2 for TCP;
/// TLS runs over TCP).
fn map_opcode(transport: Transport) -> u8 {
    match transport {
        Transport::Udp => 1,
        _ => 2,
    }
}

/// "What is my external address?" (opcode 0, §3.2).
pub fn external_address_request() -> [u8; 2] {
    [VERSION, 0]
}

/// A mapping request (§3.3): map `internal_port` for `lifetime_secs`,
/// preferably on `suggested_external_port` (0: no preference). A lifetime
/// of 0 with an external port of 0 deletes the mapping (§3.4).
pub fn map_request(
    transport: Transport,
    internal_port: u16,
    suggested_external_port: u16,
    lifetime_secs: u32,
) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0] = VERSION;
    b[1] = map_opcode(transport);
    b[4..6].copy_from_slice(&internal_port.to_be_bytes());
    b[6..8].copy_from_slice(&suggested_external_port.to_be_bytes());
    b[8..12].copy_from_slice(&lifetime_secs.to_be_bytes());
    b
}

/// A NAT-PMP response.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatPmpResponse {
    /// The answer to [`external_address_request`] (opcode 128, result 0).
    ExternalAddress {
        /// Seconds since the server's mapping table was (re)started.
        epoch: u32,
        /// The router's external IPv4 address.
        address: Ipv4Addr,
    },
    /// The answer to [`map_request`] (opcode 129 or 130, result 0).
    Mapping {
        /// UDP (opcode 129) or TCP (130).
        transport: Transport,
        /// Seconds since the server's mapping table was (re)started.
        epoch: u32,
        /// The internal port the mapping is for.
        internal_port: u16,
        /// The external port the router chose (0 for a deletion).
        external_port: u16,
        /// Seconds the mapping lives (0 for a deletion).
        lifetime_secs: u32,
    },
    /// A refusal: a non-zero result code (§3.5). The body after the epoch
    /// is not read.
    Error {
        /// The request's opcode (the response's minus 128).
        opcode: u8,
        /// The result code (1 unsupported version, 2 refused, 3 network
        /// failure, 4 out of resources, 5 unsupported opcode).
        result: u16,
    },
}

impl NatPmpResponse {
    /// Decode a response (version 0). Requests (opcode < 128) and unknown
    /// opcodes are errors.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < 8 {
            return Err(DecodeError::Truncated);
        }
        if b[0] != VERSION {
            return Err(DecodeError::UnknownVersion(b[0]));
        }
        let op = b[1];
        if op < 128 {
            return Err(DecodeError::NotAResponse);
        }
        let result = be16(b, 2)?;
        let epoch = be32(b, 4)?;
        if result != 0 {
            return Ok(NatPmpResponse::Error {
                opcode: op - 128,
                result,
            });
        }
        match op {
            128 => {
                let a = b.get(8..12).ok_or(DecodeError::Truncated)?;
                Ok(NatPmpResponse::ExternalAddress {
                    epoch,
                    address: Ipv4Addr::new(a[0], a[1], a[2], a[3]),
                })
            }
            129 | 130 => Ok(NatPmpResponse::Mapping {
                transport: if op == 129 {
                    Transport::Udp
                } else {
                    Transport::Tcp
                },
                epoch,
                internal_port: be16(b, 8)?,
                external_port: be16(b, 10)?,
                lifetime_secs: be32(b, 12)?,
            }),
            _ => Err(DecodeError::UnknownOpcode(op)),
        }
    }
}
