//! What arrives from the router's port 5351: a PCP or a NAT-PMP response,
//! told apart by the version byte, and the decoding error they share.

use crate::natpmp::NatPmpResponse;
use crate::pcp::PcpResponse;

/// The port PCP and NAT-PMP servers listen on (RFC 6887 §19.1, RFC 6886 §3.1).
pub const SERVER_PORT: u16 = 5351;

/// Why bytes are not a response this crate reads.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than its fixed fields.
    #[error("truncated message")]
    Truncated,
    /// A PCP message whose length is over 1100 bytes or not a multiple of 4.
    #[error("bad PCP message length {0}")]
    BadLength(usize),
    /// The version byte is neither 0 (NAT-PMP) nor 2 (PCP).
    #[error("unknown version {0}")]
    UnknownVersion(u8),
    /// A request, not a response.
    #[error("a request, not a response")]
    NotAResponse,
    /// A NAT-PMP response with an opcode this client never sends.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u8),
    /// A PCP option runs past the end of the message.
    #[error("a PCP option runs past the end")]
    BadOption,
}

/// A response from a port-mapping server.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// A PCP response (version 2).
    Pcp(PcpResponse),
    /// A NAT-PMP response (version 0).
    NatPmp(NatPmpResponse),
}

impl Response {
    /// Decode what arrived from a server: version 0 is NAT-PMP, 2 is PCP.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        match b.first() {
            None => Err(DecodeError::Truncated),
            Some(&crate::natpmp::VERSION) => NatPmpResponse::decode(b).map(Response::NatPmp),
            Some(&crate::pcp::VERSION) => PcpResponse::decode(b).map(Response::Pcp),
            Some(&v) => Err(DecodeError::UnknownVersion(v)),
        }
    }
}

pub(crate) fn be16(b: &[u8], at: usize) -> Result<u16, DecodeError> {
    let s = b.get(at..at + 2).ok_or(DecodeError::Truncated)?;
    Ok(u16::from_be_bytes([s[0], s[1]]))
}

pub(crate) fn be32(b: &[u8], at: usize) -> Result<u32, DecodeError> {
    let s = b.get(at..at + 4).ok_or(DecodeError::Truncated)?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}
