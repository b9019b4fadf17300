//! A small blocking WebSocket client (RFC 6455) in plain std + socket2, for
//! the abuse suite: it can connect from any loopback address, shrink its
//! receive buffer, and stop reading, none of which a polite client does.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    Text(String),
    /// A close frame, with its code if it had one.
    Close(Option<u16>),
    /// The stream ended (or was reset) without a close frame.
    End,
}

pub(crate) struct Ws {
    s: TcpStream,
    /// Bytes read and not yet parsed.
    buf: Vec<u8>,
}

/// A TCP connection to `to` from `from`, with SO_RCVBUF set when asked.
pub(crate) fn tcp(to: SocketAddr, from: IpAddr, rcvbuf: Option<usize>) -> io::Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n)?;
    }
    sock.bind(&SocketAddr::new(from, 0).into())?;
    sock.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let s: TcpStream = sock.into();
    s.set_nodelay(true)?;
    Ok(s)
}

impl Ws {
    /// Opens a WebSocket to `to` from `from`. `Err` when the server refuses
    /// (a 503, a reset, anything but 101).
    pub(crate) fn connect(to: SocketAddr, from: IpAddr, rcvbuf: Option<usize>) -> io::Result<Ws> {
        let mut s = tcp(to, from, rcvbuf)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {to}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(req.as_bytes())?;
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        let end = loop {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "closed"));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 8192 {
                return Err(io::Error::other("response head too long"));
            }
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            let line = String::from_utf8_lossy(&buf[..buf.len().min(40)]).into_owned();
            return Err(io::Error::new(io::ErrorKind::ConnectionRefused, line));
        }
        let rest = buf.split_off(end);
        Ok(Ws { s, buf: rest })
    }

    /// Sends one text frame (masked, as a client must).
    pub(crate) fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send_frame(0x1, text.as_bytes())
    }

    /// Sends the header of a text frame of `len` bytes and all of it but
    /// the last byte: the server holds the payload and waits for the rest.
    pub(crate) fn send_partial_frame(&mut self, len: usize) -> io::Result<()> {
        let mut f = vec![0x81, 0x80 | 127];
        f.extend_from_slice(&(len as u64).to_be_bytes());
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(b' ' ^ 1, len.saturating_sub(1)));
        self.s.write_all(&f)
    }

    /// Sends the first fragment (no FIN) of a text message: `len` bytes,
    /// complete; the message's last fragment never follows.
    pub(crate) fn send_first_fragment(&mut self, len: usize) -> io::Result<()> {
        let mut f = vec![0x01, 0x80 | 127];
        f.extend_from_slice(&(len as u64).to_be_bytes());
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(b' ' ^ 1, len));
        self.s.write_all(&f)
    }

    /// Sends an unsolicited pong (allowed between a message's fragments).
    pub(crate) fn send_pong(&mut self) -> io::Result<()> {
        self.send_frame(0xA, &[])
    }

    fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        self.s.write_all(&frame(opcode, payload))
    }

    /// Sends bytes made by [`text_frame`] (a flooder builds its frame once).
    pub(crate) fn send_raw(&mut self, frame: &[u8]) -> io::Result<()> {
        self.s.write_all(frame)
    }

    /// The next text or close frame within `within` (pings are answered,
    /// other frames skipped). `Ok(None)`: nothing in time.
    pub(crate) fn recv(&mut self, within: Duration) -> io::Result<Option<Frame>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some((opcode, payload, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                match opcode {
                    0x1 => return Ok(Some(Frame::Text(String::from_utf8_lossy(&payload).into()))),
                    0x8 => {
                        let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                        return Ok(Some(Frame::Close(code)));
                    }
                    0x9 => self.send_frame(0xA, &payload)?,
                    _ => {}
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let mut chunk = [0u8; 16 * 1024];
            match self.s.read(&mut chunk) {
                Ok(0) => return Ok(Some(Frame::End)),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(Some(Frame::End))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The next text frame that contains `needle` within `within`, skipping
    /// others. `None`: it did not come, or the connection ended.
    pub(crate) fn wait_for(&mut self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Ok(Some(Frame::Text(t))) if t.contains(needle) => return Some(t),
                Ok(Some(Frame::Text(_))) => continue,
                _ => return None,
            }
        }
    }

    /// Reads whatever arrived without waiting; returns the text frames.
    pub(crate) fn drain(&mut self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        while let Some(f) = self.recv(Duration::from_millis(1))? {
            match f {
                Frame::Text(t) => out.push(t),
                Frame::Close(_) | Frame::End => break,
            }
        }
        Ok(out)
    }
}

/// A masked client frame (FIN set) with `payload`.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | opcode);
    match payload.len() {
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
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// The bytes of a text frame, for [`Ws::send_raw`].
pub(crate) fn text_frame(text: &str) -> Vec<u8> {
    frame(0x1, text.as_bytes())
}

/// One whole frame at the start of `buf`: (opcode, payload, bytes used).
fn parse(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let b0 = *buf.first()?;
    let b1 = *buf.get(1)?;
    let (len, mut at) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => {
            let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = if b1 & 0x80 != 0 {
        let m: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(m)
    } else {
        None
    };
    let end = at.checked_add(usize::try_from(len).ok()?)?;
    let mut payload = buf.get(at..end)?.to_vec();
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    Some((b0 & 0x0f, payload, end))
}

/// The string value of `"key":"..."` in a JSON text (no escapes expected).
pub(crate) fn field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let from = json.find(&pat)? + pat.len();
    let len = json[from..].find('"')?;
    Some(&json[from..from + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_with_every_length_form_and_wait_for_the_rest() {
        let short = [0x81, 3, b'a', b'b', b'c'];
        assert_eq!(parse(&short), Some((1, b"abc".to_vec(), 5)));
        assert_eq!(parse(&short[..4]), None);
        let mut mid = vec![0x81, 126, 0x01, 0x00];
        mid.extend(std::iter::repeat_n(b'x', 256));
        assert_eq!(
            parse(&mid).map(|(o, p, u)| (o, p.len(), u)),
            Some((1, 256, 260))
        );
        let close = [0x88, 2, 0x03, 0xf0];
        assert_eq!(parse(&close), Some((8, vec![0x03, 0xf0], 4)));
        let masked = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        assert_eq!(parse(&masked), Some((1, b"hi".to_vec(), 8)));
    }

    #[test]
    fn fields_are_found_by_key() {
        let j = r#"{"type":"welcome","version":1,"peerId":"p7","iceServers":[]}"#;
        assert_eq!(field(j, "peerId"), Some("p7"));
        assert_eq!(field(j, "type"), Some("welcome"));
        assert_eq!(field(j, "nope"), None);
    }
}
