//! The few SCTP packets this crate reads or writes itself, beside the
//! library: the common header (RFC 9260 §3.1), the CRC32c, ABORT with a
//! cause (§3.3.7), HEARTBEAT (§3.3.5) and the walk over chunk headers that
//! finds a HEARTBEAT ACK the library does not handle.
//!
//! Only cold paths come here (a heartbeat, a close, a packet that carries
//! more than one chunk or a control chunk); a packet holding one DATA or
//! SACK chunk is recognised from its first chunk header and passed on.

use crc::{Crc, CRC_32_ISCSI};

/// The SCTP common header's length.
pub(crate) const COMMON_HEADER_LEN: usize = 12;

/// Chunk types (RFC 9260 §3.2) this crate looks at.
pub(crate) mod chunk {
    /// INIT.
    pub(crate) const DATA: u8 = 0;
    pub(crate) const INIT: u8 = 1;
    /// INIT ACK.
    pub(crate) const INIT_ACK: u8 = 2;
    /// HEARTBEAT.
    pub(crate) const HEARTBEAT: u8 = 4;
    /// SACK.
    pub(crate) const SACK: u8 = 3;
    /// HEARTBEAT ACK.
    pub(crate) const HEARTBEAT_ACK: u8 = 5;
    /// ABORT.
    pub(crate) const ABORT: u8 = 6;
    /// SHUTDOWN.
    pub(crate) const SHUTDOWN: u8 = 7;
    /// SHUTDOWN ACK.
    pub(crate) const SHUTDOWN_ACK: u8 = 8;
    /// SHUTDOWN COMPLETE.
    pub(crate) const COOKIE_ACK: u8 = 11;
    pub(crate) const SHUTDOWN_COMPLETE: u8 = 14;
}

/// Error cause codes (RFC 9260 §3.3.10) of the ABORTs we send.
pub(crate) mod cause {
    /// User-Initiated Abort.
    pub(crate) const USER_INITIATED_ABORT: u16 = 12;
    /// Protocol Violation.
    pub(crate) const PROTOCOL_VIOLATION: u16 = 13;
}

const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// The CRC32c of a packet with its checksum field taken as zero, in the
/// byte order SCTP puts it on the wire (little-endian, RFC 9260 App. B).
fn checksum(packet: &[u8]) -> Option<[u8; 4]> {
    let head = packet.get(..8)?;
    let tail = packet.get(COMMON_HEADER_LEN..)?;
    let mut d = CRC32C.digest();
    d.update(head);
    d.update(&[0; 4]);
    d.update(tail);
    Some(d.finalize().to_le_bytes())
}

/// Whether the packet's checksum is right.
pub(crate) fn checksum_ok(packet: &[u8]) -> bool {
    match (checksum(packet), packet.get(8..12)) {
        (Some(c), Some(got)) => c == got,
        _ => false,
    }
}

/// The verification tag of a packet (bytes 4..8 of the common header).
pub(crate) fn verification_tag(packet: &[u8]) -> Option<u32> {
    let b = packet.get(4..8)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The first chunk's type, and whether it is the packet's only chunk.
pub(crate) fn first_chunk(packet: &[u8]) -> Option<(u8, bool)> {
    let h = packet.get(COMMON_HEADER_LEN..COMMON_HEADER_LEN + 4)?;
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let end = COMMON_HEADER_LEN + len.next_multiple_of(4);
    Some((h[0], end >= packet.len()))
}

/// The Initiate Tag of an INIT or INIT ACK packet we send (the tag the
/// peer puts on every packet it sends us).
pub(crate) fn initiate_tag(packet: &[u8]) -> Option<u32> {
    let (typ, _) = first_chunk(packet)?;
    if typ != chunk::INIT && typ != chunk::INIT_ACK {
        return None;
    }
    let b = packet.get(COMMON_HEADER_LEN + 4..COMMON_HEADER_LEN + 8)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Each chunk of a packet: `(type, whole chunk with its padding)`. Stops
/// at the first malformed header.
pub(crate) fn chunks(packet: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = packet.get(COMMON_HEADER_LEN..).unwrap_or(&[]);
    std::iter::from_fn(move || {
        let h = rest.get(..4)?;
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if len < 4 {
            rest = &[];
            return None;
        }
        let padded = len.next_multiple_of(4).min(rest.len());
        if len > rest.len() {
            rest = &[];
            return None;
        }
        let (c, r) = rest.split_at(padded);
        rest = r;
        Some((c[0], c))
    })
}

/// Whether any chunk of the packet has type `typ`.
pub(crate) fn has_chunk(packet: &[u8], typ: u8) -> bool {
    chunks(packet).any(|(t, _)| t == typ)
}

fn packet(src: u16, dst: u16, tag: u32, chunk_type: u8, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut p = Vec::with_capacity(COMMON_HEADER_LEN + len.next_multiple_of(4));
    p.extend_from_slice(&src.to_be_bytes());
    p.extend_from_slice(&dst.to_be_bytes());
    p.extend_from_slice(&tag.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.push(chunk_type);
    p.push(0);
    // Chunk values here are a few bytes long.
    p.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    p.extend_from_slice(value);
    p.resize(p.len().next_multiple_of(4), 0);
    seal(&mut p);
    p
}

/// Writes the checksum into a packet.
pub(crate) fn seal(p: &mut [u8]) {
    if let (Some(c), Some(field)) = (checksum(p), p.get_mut(8..12)) {
        field.copy_from_slice(&c);
    }
}

/// An ABORT to the peer (tag = the peer's, T bit clear) with one error
/// cause and no cause information.
pub(crate) fn abort(src: u16, dst: u16, peer_tag: u32, cause: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(4);
    v.extend_from_slice(&cause.to_be_bytes());
    v.extend_from_slice(&4u16.to_be_bytes());
    packet(src, dst, peer_tag, chunk::ABORT, &v)
}

/// A HEARTBEAT carrying `nonce` as its Heartbeat Information.
pub(crate) fn heartbeat(src: u16, dst: u16, peer_tag: u32, nonce: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    v.extend_from_slice(&1u16.to_be_bytes()); // Heartbeat Info parameter
    v.extend_from_slice(&12u16.to_be_bytes());
    v.extend_from_slice(&nonce.to_be_bytes());
    packet(src, dst, peer_tag, chunk::HEARTBEAT, &v)
}

/// The SACK chunk's fixed part: header (4), Cumulative TSN Ack (4),
/// a_rwnd (4), the numbers of gap blocks (2) and duplicate TSNs (2).
const SACK_FIXED: usize = 16;

/// The advertised window of a packet that is one SACK chunk (what the
/// library sends), read at fixed offsets; `None` for any other packet.
pub(crate) fn sack_rwnd(packet: &[u8]) -> Option<u32> {
    if *packet.get(COMMON_HEADER_LEN)? != chunk::SACK {
        return None;
    }
    let b = packet.get(COMMON_HEADER_LEN + 8..COMMON_HEADER_LEN + 12)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The Cumulative TSN Ack of a packet that is one SACK chunk.
pub(crate) fn sack_cumulative_tsn(packet: &[u8]) -> Option<u32> {
    sack_rwnd(packet)?;
    let b = packet.get(COMMON_HEADER_LEN + 4..COMMON_HEADER_LEN + 8)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The TSN of a packet whose first chunk is DATA.
pub(crate) fn data_tsn(packet: &[u8]) -> Option<u32> {
    if *packet.get(COMMON_HEADER_LEN)? != chunk::DATA {
        return None;
    }
    let b = packet.get(COMMON_HEADER_LEN + 4..COMMON_HEADER_LEN + 8)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Sets the I bit (RFC 7053: SACK at once) of a packet's first DATA chunk
/// and reseals the packet.
pub(crate) fn set_immediate_sack(packet: &mut [u8]) {
    if packet.get(COMMON_HEADER_LEN) == Some(&chunk::DATA) {
        if let Some(flags) = packet.get_mut(COMMON_HEADER_LEN + 1) {
            *flags |= 0x08;
        }
        seal(packet);
    }
}

/// A window update: the SACK packet `sack` (as we sent it) again, with
/// `rwnd` as its advertised window and without its duplicate TSNs (they
/// were reported once). `None` if `sack` is not one well-formed SACK.
pub(crate) fn window_update(sack: &[u8], rwnd: u32) -> Option<Vec<u8>> {
    sack_rwnd(sack)?;
    let c = COMMON_HEADER_LEN;
    let gaps = sack.get(c + 12..c + 14)?;
    let gaps = usize::from(u16::from_be_bytes([gaps[0], gaps[1]]));
    let len = SACK_FIXED + 4 * gaps;
    let mut p = sack.get(..c + len)?.to_vec();
    p.get_mut(c + 2..c + 4)?
        .copy_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
    p.get_mut(c + 8..c + 12)?
        .copy_from_slice(&rwnd.to_be_bytes());
    p.get_mut(c + 14..c + 16)?.copy_from_slice(&[0, 0]);
    seal(&mut p);
    Some(p)
}

/// What to do with an incoming packet that holds a HEARTBEAT ACK (which
/// the library does not handle and would take for a protocol error).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stripped {
    /// No HEARTBEAT ACK in it: hand it on as it is.
    Untouched,
    /// Only HEARTBEAT ACKs: nothing left for the library.
    Empty,
    /// The packet without its HEARTBEAT ACKs, checksum redone.
    Rest(Vec<u8>),
}

/// Takes the HEARTBEAT ACK chunks out of a packet.
pub(crate) fn strip_heartbeat_acks(packet: &[u8]) -> Stripped {
    if !has_chunk(packet, chunk::HEARTBEAT_ACK) {
        return Stripped::Untouched;
    }
    let Some(header) = packet.get(..COMMON_HEADER_LEN) else {
        return Stripped::Untouched;
    };
    let mut out = header.to_vec();
    for (t, c) in chunks(packet) {
        if t != chunk::HEARTBEAT_ACK {
            out.extend_from_slice(c);
        }
    }
    if out.len() == COMMON_HEADER_LEN {
        return Stripped::Empty;
    }
    seal(&mut out);
    Stripped::Rest(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_abort_has_a_valid_checksum_and_one_chunk() {
        let p = abort(5000, 5000, 0xdead_beef, cause::USER_INITIATED_ABORT);
        assert!(checksum_ok(&p));
        assert_eq!(verification_tag(&p), Some(0xdead_beef));
        assert_eq!(first_chunk(&p), Some((chunk::ABORT, true)));
        let mut bad = p.clone();
        bad[13] ^= 1;
        assert!(!checksum_ok(&bad));
    }

    #[test]
    fn heartbeat_acks_are_taken_out_and_the_rest_resealed() {
        let hb = heartbeat(1, 2, 7, 42);
        // A HEARTBEAT ACK alone.
        let mut ack = hb.clone();
        ack[COMMON_HEADER_LEN] = chunk::HEARTBEAT_ACK;
        seal(&mut ack);
        assert_eq!(strip_heartbeat_acks(&ack), Stripped::Empty);
        assert_eq!(strip_heartbeat_acks(&hb), Stripped::Untouched);
        // An ACK bundled after an ABORT chunk: the ABORT stays.
        let a = abort(1, 2, 7, 12);
        let mut both = a.clone();
        both.extend_from_slice(&ack[COMMON_HEADER_LEN..]);
        seal(&mut both);
        assert_eq!(first_chunk(&both), Some((chunk::ABORT, false)));
        assert_eq!(strip_heartbeat_acks(&both), Stripped::Rest(a));
    }

    #[test]
    fn a_window_update_is_the_last_sack_with_the_new_window_and_no_duplicates() {
        // A SACK with one gap block and one duplicate TSN, as sent.
        let mut v = Vec::new();
        v.extend_from_slice(&100u32.to_be_bytes()); // cumulative TSN ack
        v.extend_from_slice(&1500u32.to_be_bytes()); // a_rwnd
        v.extend_from_slice(&1u16.to_be_bytes()); // gap blocks
        v.extend_from_slice(&1u16.to_be_bytes()); // duplicate TSNs
        v.extend_from_slice(&[0, 2, 0, 3]); // gap block 2..=3
        v.extend_from_slice(&99u32.to_be_bytes()); // duplicate TSN
        let sack = packet(5000, 5000, 7, chunk::SACK, &v);
        assert_eq!(sack_rwnd(&sack), Some(1500));
        assert_eq!(sack_cumulative_tsn(&sack), Some(100));
        assert_eq!(data_tsn(&sack), None);
        let u = window_update(&sack, 65536).unwrap();
        assert!(checksum_ok(&u));
        assert_eq!(first_chunk(&u), Some((chunk::SACK, true)));
        assert_eq!(sack_rwnd(&u), Some(65536));
        assert_eq!(u.len(), COMMON_HEADER_LEN + SACK_FIXED + 4);
        assert_eq!(&u[..8], &sack[..8]);
        assert_eq!(
            &u[COMMON_HEADER_LEN + 4..COMMON_HEADER_LEN + 8],
            &100u32.to_be_bytes()
        );
        assert_eq!(&u[COMMON_HEADER_LEN + 14..COMMON_HEADER_LEN + 16], &[0, 0]);
        // Not a SACK, or cut short: none.
        assert_eq!(window_update(&abort(1, 2, 3, 12), 1), None);
        assert_eq!(window_update(&sack[..COMMON_HEADER_LEN + 14], 1), None);
        assert_eq!(sack_rwnd(&sack[..COMMON_HEADER_LEN + 10]), None);
    }

    #[test]
    fn chunk_walks_stop_at_malformed_headers() {
        assert_eq!(chunks(&[0; 5]).count(), 0);
        let mut p = vec![0; 12];
        p.extend_from_slice(&[0, 0, 0, 2]); // length under 4
        assert_eq!(chunks(&p).count(), 0);
        let mut p = vec![0; 12];
        p.extend_from_slice(&[0, 0, 0, 200, 1]); // length past the end
        assert_eq!(chunks(&p).count(), 0);
        assert_eq!(initiate_tag(&p), None);
        assert_eq!(first_chunk(&[0; 12]), None);
    }
}
