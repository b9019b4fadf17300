//! The port-mapping service of a NAT's router ([`PortMapService`]): PCP
//! (RFC 6887) MAP and NAT-PMP (RFC 6886) requests that reach the router's
//! LAN address on port 5351 are answered here, and the mappings they ask
//! for are made in the NAT's table (explicit mappings, see
//! [`PortMapService`]).
//!
//! The wire format is written out here from the RFCs, on purpose apart
//! from `p2p-portmap`'s client codec: the simulated router checks the
//! client against the RFCs' layout, not against itself. Every read is
//! bounds-checked; a request too short to answer gets no answer, as a
//! router drops it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::nat::{Nat, PortMapService};
use crate::node::Transport;

/// The port PCP and NAT-PMP servers listen on (RFC 6887 §19.1, RFC 6886 §3).
pub(crate) const SERVER_PORT: u16 = 5351;

// PCP result codes (RFC 6887 §7.4).
const SUCCESS: u8 = 0;
const MALFORMED_REQUEST: u8 = 3;
const UNSUPP_OPCODE: u8 = 4;
const NO_RESOURCES: u8 = 8;
const UNSUPP_PROTOCOL: u8 = 9;
const ADDRESS_MISMATCH: u8 = 12;
/// PCP's MAP opcode (RFC 6887 §19.2).
const MAP: u8 = 1;
/// A MAP request or response: 24-byte header, 36-byte payload.
const MAP_LEN: usize = 60;

/// The answer the router gives `request`, from `source` on its LAN, or
/// `None` (no service, malformed beyond answering, not IPv4).
pub(crate) fn answer(
    nat: &mut Nat,
    now: Instant,
    source: SocketAddr,
    request: &[u8],
    rng: &mut impl Rng,
) -> Option<Vec<u8>> {
    let service = nat.config.port_mapping.clone()?;
    if !source.is_ipv4() {
        return None;
    }
    let epoch = epoch(nat, now);
    match (request.first()?, request.get(1)?) {
        (2, op) if service.pcp => Some(pcp(nat, &service, now, source, request, *op, epoch, rng)),
        // A NAT-PMP-only router refuses other versions the NAT-PMP way
        // (RFC 6886 §3.5), so that a PCP client falls back; so does a
        // PCP-only one refuse NAT-PMP (RFC 6887 §9).
        (2, op) if service.nat_pmp => Some(natpmp_refusal(*op, 1, epoch)),
        (0, op) if service.nat_pmp => natpmp(nat, &service, now, source, request, *op, epoch, rng),
        (0, op) if service.pcp => Some(natpmp_refusal(*op, 1, epoch)),
        _ => None,
    }
}

/// Seconds since the service first answered (the epoch the client may
/// check for a router reboot).
fn epoch(nat: &mut Nat, now: Instant) -> u32 {
    let since = *nat.portmap_since.get_or_insert(now);
    u32::try_from(now.saturating_duration_since(since).as_secs()).unwrap_or(u32::MAX)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let x = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([x[0], x[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let x = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([x[0], x[1], x[2], x[3]]))
}

/// A PCP answer: the request's payload echoed, with result, lifetime,
/// epoch and the external address filled in.
#[allow(clippy::too_many_arguments)]
fn pcp(
    nat: &mut Nat,
    service: &PortMapService,
    now: Instant,
    source: SocketAddr,
    req: &[u8],
    op: u8,
    epoch: u32,
    rng: &mut impl Rng,
) -> Vec<u8> {
    let mut out = vec![0u8; MAP_LEN];
    out[0] = 2;
    out[1] = 0x80 | (op & 0x7f);
    out[8..12].copy_from_slice(&epoch.to_be_bytes());
    let copy = req.len().min(MAP_LEN);
    if copy > 24 {
        out[24..copy].copy_from_slice(&req[24..copy]);
    }
    let result = pcp_map(nat, service, now, source, req, op, rng, &mut out);
    out[3] = result;
    if result != SUCCESS {
        // An error's lifetime: how long the client should not ask again.
        out[4..8].copy_from_slice(&30u32.to_be_bytes());
        out.truncate(if op & 0x7f == MAP { MAP_LEN } else { 24 });
    }
    out
}

/// The MAP request itself; writes lifetime and external address into
/// `out` and returns the result code.
#[allow(clippy::too_many_arguments)]
fn pcp_map(
    nat: &mut Nat,
    service: &PortMapService,
    now: Instant,
    source: SocketAddr,
    req: &[u8],
    op: u8,
    rng: &mut impl Rng,
    out: &mut [u8],
) -> u8 {
    if op & 0x80 != 0 || req.len() % 4 != 0 || req.len() > 1100 {
        return MALFORMED_REQUEST;
    }
    if op != MAP {
        return UNSUPP_OPCODE;
    }
    if req.len() < MAP_LEN {
        return MALFORMED_REQUEST;
    }
    let IpAddr::V4(v4) = source.ip() else {
        return ADDRESS_MISMATCH;
    };
    // The client's own address, IPv4-mapped (§8.1): it must be the
    // packet's, or a NAT between client and server changed it.
    if req.get(8..24) != Some(&v4.to_ipv6_mapped().octets()[..]) {
        return ADDRESS_MISMATCH;
    }
    let (Some(lifetime), Some(internal_port), Some(suggested)) =
        (u32_at(req, 4), u16_at(req, 40), u16_at(req, 42))
    else {
        return MALFORMED_REQUEST;
    };
    let proto = match req.get(36) {
        Some(17) => Transport::Udp,
        Some(6) => Transport::Tcp,
        _ => return UNSUPP_PROTOCOL,
    };
    if internal_port == 0 {
        return MALFORMED_REQUEST;
    }
    let internal = SocketAddr::new(source.ip(), internal_port);
    let granted = if lifetime == 0 {
        nat.unmap_explicit(now, proto, internal);
        0
    } else {
        let life = Duration::from_secs(lifetime.into()).min(service.max_lifetime);
        match nat.map_explicit(now, proto, internal, suggested, life, rng) {
            Ok(external) => {
                out[42..44].copy_from_slice(&external.port().to_be_bytes());
                if let IpAddr::V4(e) = external.ip() {
                    out[44..60].copy_from_slice(&e.to_ipv6_mapped().octets());
                }
                u32::try_from(life.as_secs()).unwrap_or(u32::MAX)
            }
            Err(_) => return NO_RESOURCES,
        }
    };
    out[4..8].copy_from_slice(&granted.to_be_bytes());
    SUCCESS
}

/// NAT-PMP's 8-byte refusal: version 0, the request's opcode + 128, a
/// result code, the epoch.
fn natpmp_refusal(op: u8, result: u16, epoch: u32) -> Vec<u8> {
    let mut out = vec![0u8, 0x80 | (op & 0x7f)];
    out.extend_from_slice(&result.to_be_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out
}

/// A NAT-PMP answer (RFC 6886 §3.2 external address, §3.3 mapping).
#[allow(clippy::too_many_arguments)]
fn natpmp(
    nat: &mut Nat,
    service: &PortMapService,
    now: Instant,
    source: SocketAddr,
    req: &[u8],
    op: u8,
    epoch: u32,
    rng: &mut impl Rng,
) -> Option<Vec<u8>> {
    match op {
        0 => {
            let Some(IpAddr::V4(ext)) = nat.external_ip_for(source.ip()) else {
                return Some(natpmp_refusal(op, 3, epoch));
            };
            let mut out = natpmp_refusal(op, 0, epoch);
            out.extend_from_slice(&ext.octets());
            Some(out)
        }
        1 | 2 => {
            let (internal_port, suggested, lifetime) =
                (u16_at(req, 4)?, u16_at(req, 6)?, u32_at(req, 8)?);
            let proto = if op == 1 {
                Transport::Udp
            } else {
                Transport::Tcp
            };
            let internal = SocketAddr::new(source.ip(), internal_port);
            let (external_port, granted) = if lifetime == 0 {
                nat.unmap_explicit(now, proto, internal);
                (0, 0)
            } else {
                let life = Duration::from_secs(lifetime.into()).min(service.max_lifetime);
                match nat.map_explicit(now, proto, internal, suggested, life, rng) {
                    Ok(e) => (e.port(), u32::try_from(life.as_secs()).unwrap_or(u32::MAX)),
                    // 4: out of resources (RFC 6886 §3.5).
                    Err(_) => return Some(natpmp_refusal(op, 4, epoch)),
                }
            };
            let mut out = natpmp_refusal(op, 0, epoch);
            out.extend_from_slice(&internal_port.to_be_bytes());
            out.extend_from_slice(&external_port.to_be_bytes());
            out.extend_from_slice(&granted.to_be_bytes());
            Some(out)
        }
        // 5: unsupported opcode.
        _ => Some(natpmp_refusal(op, 5, epoch)),
    }
}
