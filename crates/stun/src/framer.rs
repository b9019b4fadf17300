//! Splitting a TCP or TLS byte stream into whole STUN messages and
//! ChannelData frames (RFC 8489 §6.2.2, RFC 8656 §11.5): the one framer of
//! the stack, for servers and clients alike.

use crate::channel::{next_frame_len, FramingError};

/// The buffer a new framer starts with, and shrinks back to when it is
/// empty: a STUN message or a ChannelData frame of a typical datagram fits.
pub const INITIAL_BUFFER: usize = 2048;

/// The largest frame a stream may carry: a STUN header and a 16-bit length
/// of attributes, or ChannelData with a 16-bit length and its padding.
pub const MAX_FRAME: usize = 20 + 0xffff;

/// Splits a byte stream into frames.
///
/// Read into [`read_buf`](StreamFramer::read_buf), say how much arrived
/// with [`filled`](StreamFramer::filled) (or copy bytes in with
/// [`push`](StreamFramer::push)), then take whole frames with
/// [`next_frame`](StreamFramer::next_frame) until it returns `Ok(None)`.
///
/// The buffer grows with what arrives, never with what a header promises:
/// it starts at [`INITIAL_BUFFER`] bytes, doubles only when a read filled it
/// to the brim (a busy stream, or a frame larger than the buffer arriving),
/// never beyond the largest frame allowed (twice that while reads keep
/// filling it), and shrinks back once everything is consumed. A peer that
/// announces a 64 KiB frame and sends one byte costs the initial buffer,
/// not 64 KiB.
///
/// ```
/// use p2p_stun::StreamFramer;
///
/// // A Binding request (20 bytes) split across two reads.
/// let req = [0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
/// let mut f = StreamFramer::new(p2p_stun::MAX_FRAME);
/// f.push(&req[..7]);
/// assert_eq!(f.next_frame()?, None);
/// f.push(&req[7..]);
/// assert_eq!(f.next_frame()?, Some(&req[..]));
/// assert_eq!(f.next_frame()?, None);
/// # Ok::<(), p2p_stun::FramingError>(())
/// ```
#[derive(Debug, Clone)]
pub struct StreamFramer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_frame: usize,
    /// The last read filled all the room it was given.
    hungry: bool,
}

impl StreamFramer {
    /// A framer that refuses frames longer than `max_frame` bytes (at most
    /// [`MAX_FRAME`]).
    pub fn new(max_frame: usize) -> Self {
        StreamFramer {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_frame: max_frame.min(MAX_FRAME),
            hungry: false,
        }
    }

    /// Room to read into (never empty). Call [`filled`](StreamFramer::filled)
    /// with the number of bytes read.
    pub fn read_buf(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if !self.hungry && self.buf.len() > INITIAL_BUFFER {
                self.buf.truncate(INITIAL_BUFFER);
                self.buf.shrink_to(INITIAL_BUFFER);
            }
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let limit = 2 * self.max_frame.max(INITIAL_BUFFER);
        if self.buf.is_empty() {
            self.buf.resize(INITIAL_BUFFER, 0);
        } else if (self.hungry || self.end == self.buf.len()) && self.buf.len() < limit {
            let grown = (self.buf.len() * 2).min(limit);
            self.buf.resize(grown, 0);
        }
        self.hungry = false;
        if self.end == self.buf.len() {
            // Full of a frame that is too large: next_frame says so; give
            // a byte of room so that the caller's read still makes sense.
            self.buf.push(0);
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`read_buf`](StreamFramer::read_buf).
    pub fn filled(&mut self, n: usize) {
        let room = self.buf.len() - self.end;
        let n = n.min(room);
        self.hungry = n > 0 && n == room;
        self.end += n;
    }

    /// Copy bytes that arrived into the buffer.
    pub fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = self.read_buf();
            let n = room.len().min(data.len());
            room[..n].copy_from_slice(&data[..n]);
            self.filled(n);
            data = &data[n..];
        }
    }

    /// The next whole frame, consumed; `Ok(None)` when more bytes are
    /// needed. An error means the stream is out of sync (or announces a
    /// frame over the limit) and must be closed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FramingError> {
        let avail = &self.buf[self.start..self.end];
        let Some(len) = next_frame_len(avail)? else {
            return Ok(None);
        };
        if len > self.max_frame {
            return Err(FramingError::TooLarge(len));
        }
        if len > avail.len() {
            return Ok(None);
        }
        let at = self.start;
        self.start += len;
        Ok(Some(&self.buf[at..at + len]))
    }

    /// The bytes buffered that are not a whole frame yet (what follows a
    /// frame after which the stream stops carrying frames, say).
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The bytes of memory the buffer holds now.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(len: u16) -> Vec<u8> {
        let mut v = vec![0, 1];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        v.extend_from_slice(&[7; 12]);
        v.extend(std::iter::repeat_n(0u8, usize::from(len)));
        v
    }

    fn frames(f: &mut StreamFramer) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(fr) = f.next_frame().unwrap() {
            out.push(fr.to_vec());
        }
        out
    }

    #[test]
    fn frames_arrive_whole_whatever_the_reads() {
        let mut stream = binding(8);
        stream.extend_from_slice(&[0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l', b'o', 0, 0, 0]);
        stream.extend(binding(0));
        for chunk in [1, 3, 7, 64] {
            let mut f = StreamFramer::new(MAX_FRAME);
            let mut got = Vec::new();
            for c in stream.chunks(chunk) {
                f.push(c);
                got.extend(frames(&mut f));
            }
            assert_eq!(got.len(), 3, "chunks of {chunk}");
            assert_eq!(got.concat(), stream);
            assert!(f.buffered().is_empty());
        }
    }

    #[test]
    fn a_promised_frame_costs_only_what_arrived() {
        let mut f = StreamFramer::new(MAX_FRAME);
        // A header announcing 65 532 bytes of attributes, and one byte.
        let big = binding(65_532);
        f.push(&big[..21]);
        assert_eq!(f.next_frame().unwrap(), None);
        assert!(f.capacity() <= INITIAL_BUFFER, "{}", f.capacity());
        // The rest arrives: the buffer grows with it and the frame comes out.
        f.push(&big[21..]);
        assert_eq!(f.next_frame().unwrap(), Some(&big[..]));
        // Empty again: back to the initial size at the next read.
        let _ = f.read_buf();
        assert!(f.capacity() <= 2 * INITIAL_BUFFER, "{}", f.capacity());
    }

    #[test]
    fn a_read_into_read_buf_counts_only_what_was_filled() {
        let mut f = StreamFramer::new(MAX_FRAME);
        let msg = binding(4);
        let room = f.read_buf();
        assert!(room.len() >= msg.len());
        room[..msg.len()].copy_from_slice(&msg);
        f.filled(msg.len());
        assert_eq!(f.next_frame().unwrap(), Some(&msg[..]));
    }

    #[test]
    fn garbage_and_oversized_frames_are_errors() {
        let mut f = StreamFramer::new(MAX_FRAME);
        // 0xff starts neither STUN (0..=3) nor ChannelData (64..=127).
        f.push(&[0xff, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(f.next_frame(), Err(FramingError::Garbage(0xff)));
        let mut f = StreamFramer::new(100);
        f.push(&binding(200)[..24]);
        assert_eq!(f.next_frame(), Err(FramingError::TooLarge(220)));
    }

    #[test]
    fn what_follows_the_last_frame_stays_buffered() {
        let mut f = StreamFramer::new(MAX_FRAME);
        let mut bytes = binding(0);
        bytes.extend_from_slice(b"raw tcp");
        f.push(&bytes);
        assert!(f.next_frame().unwrap().is_some());
        assert_eq!(f.buffered(), b"raw tcp");
    }
}
