//! Watches a client's bytes on their way to the WebSocket layer for an
//! unfinished message: a frame whose header or payload has not all arrived,
//! or a fragmented message whose last fragment has not. The WebSocket layer
//! holds such a message in memory (up to the frame cap) and says nothing;
//! this lets the connection close a client that keeps one open too long,
//! even one that answers pings between fragments.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// No message under way.
const NONE: u64 = u64::MAX;

/// Since when a message has been under way, shared with the connection.
#[derive(Clone)]
pub(super) struct MessageClock {
    base: Instant,
    /// Milliseconds after `base`, or [`NONE`].
    since: Arc<AtomicU64>,
    changed: Arc<Notify>,
}

impl MessageClock {
    pub(super) fn new() -> MessageClock {
        MessageClock {
            base: Instant::now(),
            since: Arc::new(AtomicU64::new(NONE)),
            changed: Arc::new(Notify::new()),
        }
    }

    /// Completes when a message has been under way for `limit`.
    pub(super) async fn overdue(&self, limit: std::time::Duration) {
        loop {
            match self.under_way_since() {
                None => self.changed.notified().await,
                Some(since) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(since + limit) => {
                            if self.under_way_since() == Some(since) {
                                return;
                            }
                        }
                        () = self.changed.notified() => {}
                    }
                }
            }
        }
    }

    /// Since when a message has been under way, if one is.
    pub(super) fn under_way_since(&self) -> Option<Instant> {
        match self.since.load(Relaxed) {
            NONE => None,
            ms => Some(self.base + std::time::Duration::from_millis(ms)),
        }
    }

    fn set(&self, under_way: bool) {
        let now = if under_way {
            let ms = Instant::now()
                .saturating_duration_since(self.base)
                .as_millis();
            u64::try_from(ms).unwrap_or(NONE - 1)
        } else {
            NONE
        };
        self.since.store(now, Relaxed);
        self.changed.notify_one();
    }
}

/// Where the byte parser is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the HTTP request head; `matched` bytes of `\r\n\r\n` seen.
    Head { matched: u8 },
    /// In a frame header: `have` bytes of `need` (2 until the length byte
    /// tells).
    Header { have: usize, need: usize },
    /// In a frame's payload.
    Payload { left: u64 },
}

/// The client → server byte stream, parsed only as far as frame
/// boundaries: the HTTP head, then frame headers and payload lengths.
pub(super) struct FrameParser {
    state: State,
    header: [u8; 14],
    /// A data frame without FIN was seen and its last continuation has
    /// not.
    fragmented: bool,
}

impl FrameParser {
    pub(super) fn new() -> FrameParser {
        FrameParser {
            state: State::Head { matched: 0 },
            header: [0; 14],
            fragmented: false,
        }
    }

    /// Whether a message is under way after the bytes fed so far.
    pub(super) fn under_way(&self) -> bool {
        match self.state {
            State::Head { .. } => false,
            State::Header { have, .. } => have > 0 || self.fragmented,
            State::Payload { .. } => true,
        }
    }

    /// Feed bytes read from the client.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Head { matched } => {
                    let (b, rest) = (bytes[0], &bytes[1..]);
                    bytes = rest;
                    let want = b"\r\n\r\n"[usize::from(matched)];
                    let matched = if b == want {
                        matched + 1
                    } else if b == b'\r' {
                        1
                    } else {
                        0
                    };
                    self.state = if matched == 4 {
                        State::Header { have: 0, need: 2 }
                    } else {
                        State::Head { matched }
                    };
                }
                State::Header { have, need } => {
                    let take = (need - have).min(bytes.len());
                    self.header[have..have + take].copy_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    let have = have + take;
                    if have < need {
                        self.state = State::Header { have, need };
                        continue;
                    }
                    if need == 2 {
                        let masked = self.header[1] & 0x80 != 0;
                        let ext = match self.header[1] & 0x7f {
                            126 => 2,
                            127 => 8,
                            _ => 0,
                        };
                        let full = 2 + ext + if masked { 4 } else { 0 };
                        if full > 2 {
                            self.state = State::Header { have, need: full };
                            continue;
                        }
                    }
                    self.header_done();
                }
                State::Payload { left } => {
                    let take = (left.min(bytes.len() as u64)) as usize;
                    bytes = &bytes[take..];
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::Header { have: 0, need: 2 }
                    } else {
                        State::Payload { left }
                    };
                }
            }
        }
    }

    /// A whole header is in `self.header`.
    fn header_done(&mut self) {
        let fin = self.header[0] & 0x80 != 0;
        let opcode = self.header[0] & 0x0f;
        let payload = match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        match opcode {
            // A data frame starts a message; without FIN, more follow.
            0x1 | 0x2 => self.fragmented = !fin,
            // A continuation with FIN ends one.
            0x0 if fin => self.fragmented = false,
            _ => {}
        }
        self.state = if payload == 0 {
            State::Header { have: 0, need: 2 }
        } else {
            State::Payload { left: payload }
        };
    }
}

/// A stream whose reads go through a [`FrameParser`] that keeps a
/// [`MessageClock`] up to date.
pub(super) struct Watched<S> {
    inner: S,
    parser: FrameParser,
    clock: MessageClock,
    under_way: bool,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, clock: MessageClock) -> Watched<S> {
        Watched {
            inner,
            parser: FrameParser::new(),
            clock,
            under_way: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                this.parser.feed(new);
                let now = this.parser.under_way();
                if now != this.under_way {
                    this.under_way = now;
                    this.clock.set(now);
                }
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    /// A masked client frame: FIN flag, opcode, payload length (the
    /// payload itself is zeros).
    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match len {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(0, len));
        f
    }

    fn fed(chunks: &[&[u8]]) -> FrameParser {
        let mut p = FrameParser::new();
        for c in chunks {
            p.feed(c);
        }
        p
    }

    #[test]
    fn the_head_and_whole_frames_leave_nothing_under_way() {
        let text = frame(true, 1, 300);
        let big = frame(true, 1, 70_000);
        let ping = frame(true, 9, 4);
        assert!(!fed(&[HEAD]).under_way());
        assert!(!fed(&[HEAD, &text, &big, &ping]).under_way());
        // The same bytes one at a time.
        let all: Vec<u8> = [HEAD, &text, &big].concat();
        let mut p = FrameParser::new();
        for b in &all {
            p.feed(std::slice::from_ref(b));
        }
        assert!(!p.under_way());
    }

    #[test]
    fn a_frame_cut_short_is_under_way_until_its_last_byte() {
        let text = frame(true, 1, 1000);
        let (first, last) = text.split_at(text.len() - 1);
        assert!(fed(&[HEAD, first]).under_way());
        assert!(!fed(&[HEAD, first, last]).under_way());
        // A header alone, even half of one.
        assert!(fed(&[HEAD, &text[..1]]).under_way());
        assert!(fed(&[HEAD, &text[..6]]).under_way());
    }

    #[test]
    fn a_fragmented_message_is_under_way_across_pings_until_its_last_fragment() {
        let first = frame(false, 1, 100);
        let ping = frame(true, 0xA, 0);
        let more = frame(false, 0, 100);
        let last = frame(true, 0, 100);
        assert!(fed(&[HEAD, &first]).under_way());
        assert!(fed(&[HEAD, &first, &ping, &ping, &more, &ping]).under_way());
        assert!(!fed(&[HEAD, &first, &ping, &more, &last]).under_way());
    }

    #[test]
    fn a_head_with_lone_carriage_returns_still_ends_at_the_blank_line() {
        let head = b"GET / HTTP/1.1\r\nX: a\rb\r\r\n\r\n";
        let p = fed(&[head, &frame(true, 1, 2)[..3]]);
        assert!(p.under_way());
    }
}
