//! A toy router for the tests: answers PCP MAP and NAT-PMP requests the
//! way a server of RFC 6887 / RFC 6886 does.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};

/// The PCP response to a MAP request `req` (60 bytes): `result`, granting
/// `external` for `lifetime` seconds.
pub(crate) fn pcp_answer(req: &[u8], result: u8, lifetime: u32, external: SocketAddr) -> Vec<u8> {
    let mut b = vec![0u8; 60];
    b[0] = 2;
    b[1] = 0x80 | req[1];
    b[3] = result;
    b[4..8].copy_from_slice(&lifetime.to_be_bytes());
    b[8..12].copy_from_slice(&77u32.to_be_bytes());
    b[24..42].copy_from_slice(&req[24..42]); // nonce, protocol, internal port
    b[42..44].copy_from_slice(&external.port().to_be_bytes());
    let ip = match external.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    b[44..60].copy_from_slice(&ip);
    b
}

/// NAT-PMP's "unsupported version" answer to any request.
pub(crate) fn natpmp_unsupported(op: u8) -> Vec<u8> {
    vec![0, 128 + op, 0, 1, 0, 0, 0, 5]
}

/// NAT-PMP's external-address answer.
pub(crate) fn natpmp_address(ip: [u8; 4]) -> Vec<u8> {
    let mut b = vec![0, 128, 0, 0, 0, 0, 0, 5];
    b.extend_from_slice(&ip);
    b
}

/// NAT-PMP's answer to a UDP mapping request `req` (12 bytes).
pub(crate) fn natpmp_mapped(req: &[u8], external_port: u16, lifetime: u32) -> Vec<u8> {
    let mut b = vec![0, 129, 0, 0, 0, 0, 0, 5];
    b.extend_from_slice(&req[4..6]);
    b.extend_from_slice(&external_port.to_be_bytes());
    b.extend_from_slice(&lifetime.to_be_bytes());
    b
}
