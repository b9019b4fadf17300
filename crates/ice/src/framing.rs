//! RFC 4571 framing: how ICE-TCP (RFC 6544 §3) carries STUN, DTLS and the
//! rest over a TCP connection: each packet preceded by its length, two bytes
//! big-endian. The agent hands out and takes whole packets; whoever owns the
//! stream (a driver, a test network) frames what it writes with [`frame`]
//! and cuts what it reads with a [`Deframer`].
//!
//! ```
//! use p2p_ice::framing::{frame, Deframer};
//!
//! let mut wire = frame(b"hello")?;
//! wire.extend(frame(b"")?);
//! wire.extend(frame(b"world")?);
//! let mut d = Deframer::new();
//! // Bytes arrive in any pieces.
//! d.push(&wire[..4])?;
//! assert_eq!(d.next_packet(), None);
//! d.push(&wire[4..])?;
//! assert_eq!(d.next_packet().as_deref(), Some(&b"hello"[..]));
//! assert_eq!(d.next_packet().as_deref(), Some(&b""[..]));
//! assert_eq!(d.next_packet().as_deref(), Some(&b"world"[..]));
//! assert_eq!(d.next_packet(), None);
//! # Ok::<(), p2p_ice::framing::FramingError>(())
//! ```

/// The largest packet a frame carries (its length is two bytes).
pub const MAX_PACKET: usize = u16::MAX as usize;

/// Most bytes a [`Deframer`] holds: two whole frames. A reader that pushes
/// a read buffer at a time and takes every packet out after each push never
/// comes near it.
pub const MAX_BUFFERED: usize = 2 * (MAX_PACKET + 2);

/// A packet that cannot be framed, or bytes that cannot be taken.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// A packet longer than [`MAX_PACKET`].
    #[error("a packet of {0} bytes does not fit an RFC 4571 frame")]
    TooLong(usize),
    /// More than [`MAX_BUFFERED`] bytes would be held (packets were not
    /// taken out).
    #[error("more than {MAX_BUFFERED} bytes held without being taken")]
    Overflow,
}

/// `packet` with its two-byte length in front.
pub fn frame(packet: &[u8]) -> Result<Vec<u8>, FramingError> {
    let len = u16::try_from(packet.len()).map_err(|_| FramingError::TooLong(packet.len()))?;
    let mut out = Vec::with_capacity(packet.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    Ok(out)
}

/// Cuts a TCP byte stream into the packets of its RFC 4571 frames.
#[derive(Debug, Default, Clone)]
pub struct Deframer {
    buf: Vec<u8>,
    /// Where the unread bytes start in `buf`.
    start: usize,
}

impl Deframer {
    /// An empty deframer.
    pub fn new() -> Self {
        Deframer::default()
    }

    /// Bytes read from the stream. [`FramingError::Overflow`] (and nothing
    /// taken) when more than [`MAX_BUFFERED`] bytes would be held.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FramingError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.len() + bytes.len() > MAX_BUFFERED {
            return Err(FramingError::Overflow);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next whole packet, if its frame has arrived.
    pub fn next_packet(&mut self) -> Option<Vec<u8>> {
        let rest = self.buf.get(self.start..)?;
        let len = match rest {
            [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => return None,
        };
        let packet = rest.get(2..2 + len)?.to_vec();
        self.start += 2 + len;
        Some(packet)
    }

    /// Bytes held that are not a whole frame yet.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_too_long_for_two_length_bytes_is_refused() {
        assert_eq!(
            frame(&vec![0; MAX_PACKET + 1]),
            Err(FramingError::TooLong(MAX_PACKET + 1))
        );
        let f = frame(&vec![7; MAX_PACKET]).unwrap();
        assert_eq!(&f[..2], &[0xff, 0xff]);
        let mut d = Deframer::new();
        d.push(&f).unwrap();
        assert_eq!(d.next_packet().map(|p| p.len()), Some(MAX_PACKET));
    }

    #[test]
    fn bytes_one_at_a_time_give_the_same_packets() {
        let packets: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; usize::from(i) * 13]).collect();
        let wire: Vec<u8> = packets.iter().flat_map(|p| frame(p).unwrap()).collect();
        let mut d = Deframer::new();
        let mut got = Vec::new();
        for b in &wire {
            d.push(std::slice::from_ref(b)).unwrap();
            while let Some(p) = d.next_packet() {
                got.push(p);
            }
        }
        assert_eq!(got, packets);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn a_reader_that_never_takes_packets_out_is_stopped() {
        let mut d = Deframer::new();
        let f = frame(&vec![1; MAX_PACKET]).unwrap();
        d.push(&f).unwrap();
        d.push(&f).unwrap();
        assert_eq!(d.push(&[0]), Err(FramingError::Overflow));
        // Taking them out makes room again.
        assert!(d.next_packet().is_some());
        d.push(&[0]).unwrap();
        assert_eq!(d.pending(), MAX_PACKET + 2 + 1);
    }
}
