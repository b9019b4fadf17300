//! `stun_load`: the load generator of `cargo xtask bench stun-server`, and the
//! raw floor it is compared with.
//!
//! It is not a test and not a library: a bench tool that talks to a server on
//! loopback for a bounded time and prints one line of figures.
//!
//! ```text
//! stun_load load  --server ADDR [--secs 5] [--warmup 1] [--sockets 4] [--depth 32] [--io batch|single]
//! stun_load echo  --listen ADDR [--threads N] [--max-secs 600]
//! stun_load probe --server ADDR [--timeout-secs 10]
//! ```
//!
//! `load` opens `--sockets` UDP sockets, each connected to the server and run
//! by its own thread, and keeps `--depth` Binding requests in flight on each
//! (a closed loop: every answer lets one more request go). The requests are
//! bare 20-byte RFC 8489 Binding requests whose transaction id carries a
//! per-socket random nonce and a sequence number. An answer counts only if it
//! is a Binding success response (type 0x0101, magic cookie, length field
//! matching the datagram) whose transaction id is one this socket sent and
//! has not yet seen answered; duplicates and strangers are counted as
//! `invalid`. Answers during the first `--warmup` seconds are not counted;
//! the rate is the answers of the next `--secs` seconds divided by `--secs`.
//! When a socket hears nothing for 250 ms, the requests it has in flight are
//! counted lost and it starts again. With `--io batch` (the default on Linux)
//! a socket sends and receives with `sendmmsg(2)`/`recvmmsg(2)`, so that the
//! generator costs little per request and the server is what is measured;
//! `--io single` uses one `send`/`recv` per datagram. The first valid answer of
//! each socket is also decoded with `p2p-stun` and its XOR-MAPPED-ADDRESS is
//! compared with the socket's address (`mapped_ok` counts the sockets where
//! it matched; the echo floor has no attribute, so 0 there).
//!
//! `echo` is the raw floor: one blocking UDP socket read by `--threads`
//! threads (default: one per core, as `p2p serve` has workers; one shared
//! socket, so that no thread idles when the generator's flows hash unevenly
//! over SO_REUSEPORT sockets), each answering one datagram per `recv_from`
//! and one per `send_to`. It turns each request into a "success response"
//! by setting the first byte to 0x01 (type 0x0001 becomes 0x0101), so that
//! the generator checks its answers exactly as it checks a STUN server's; it
//! reads and writes nothing else. It exits after `--max-secs` at the latest.
//!
//! `probe` sends a Binding request every 100 ms until a valid answer comes
//! (exit 0) or `--timeout-secs` pass (exit 1): the readiness check of the
//! xtask.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2p_benches::mmsg;
use p2p_stun::attr::XorMappedAddress;
use p2p_stun::{Message, MessageBuilder, MessageClass, MessageType, Method, TransactionId};
use socket2::{Domain, Protocol, Socket, Type};

/// Bytes of a request: a bare STUN header.
const REQ: usize = 20;
/// Bytes of a receive buffer: more than any Binding response here.
const RBUF: usize = 1500;
/// In-flight slots per socket (a power of two, > the largest depth).
const RING: usize = 4096;
/// The largest `--depth`.
const MAX_DEPTH: usize = 1024;
/// The most sockets.
const MAX_SOCKETS: usize = 256;
/// Silence after which a socket's in-flight requests are counted lost
/// (long enough that a descheduled thread on a busy machine is not a loss).
const QUIET: Duration = Duration::from_millis(250);
/// STUN's magic cookie, bytes 4..8 of the header.
const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// The type of a Binding success response.
const BINDING_SUCCESS: [u8; 2] = [0x01, 0x01];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("load") => load(&args[1..]),
        Some("echo") => echo(&args[1..]),
        Some("probe") => probe(&args[1..]),
        _ => Err(
            "usage: stun_load load --server ADDR [--secs S] [--warmup S] [--sockets N] \
             [--depth N] [--io batch|single]\n       stun_load echo --listen ADDR \
             [--threads N] [--max-secs S]\n       stun_load probe --server ADDR \
             [--timeout-secs S]"
                .to_owned(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stun_load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` pairs, looked up by name.
struct Flags<'a>(&'a [String]);

impl Flags<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }

    fn parse<T: std::str::FromStr>(&self, name: &str, default: Option<T>) -> Result<T, String> {
        match self.get(name) {
            Some(v) => v.parse().map_err(|_| format!("{name}: bad value `{v}`")),
            None => default.ok_or_else(|| format!("{name} is required")),
        }
    }

    fn secs(&self, name: &str, default: f64) -> Result<Duration, String> {
        let s: f64 = self.parse(name, Some(default))?;
        if !(0.0..=3600.0).contains(&s) {
            return Err(format!("{name}: between 0 and 3600 seconds"));
        }
        Ok(Duration::from_secs_f64(s))
    }
}

// ------------------------------------------------------------------ load

/// How a socket moves datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Io {
    Batch,
    Single,
}

/// When to count, shared by every socket thread.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

/// One socket's tally.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// Valid answers received inside the window.
    answered: u64,
    /// Valid answers in all (warm-up included).
    answered_all: u64,
    sent: u64,
    lost: u64,
    invalid: u64,
    /// Whether the sampled answer's XOR-MAPPED-ADDRESS was this socket's address.
    mapped_ok: bool,
}

fn load(args: &[String]) -> Result<(), String> {
    let f = Flags(args);
    let server: SocketAddr = f.parse("--server", None)?;
    let secs = f.secs("--secs", 5.0)?;
    let warmup = f.secs("--warmup", 1.0)?;
    let sockets: usize = f.parse("--sockets", Some(4))?;
    let depth: usize = f.parse("--depth", Some(32))?;
    let io = match f.get("--io").unwrap_or("batch") {
        "batch" => Io::Batch,
        "single" => Io::Single,
        other => return Err(format!("--io: batch or single, not `{other}`")),
    };
    if !(1..=MAX_SOCKETS).contains(&sockets) || !(1..=MAX_DEPTH).contains(&depth) {
        return Err(format!(
            "--sockets 1..={MAX_SOCKETS}, --depth 1..={MAX_DEPTH}"
        ));
    }
    if secs.is_zero() {
        return Err("--secs must be more than 0".into());
    }
    let io = if io == Io::Batch && !cfg!(target_os = "linux") {
        eprintln!("stun_load: no recvmmsg/sendmmsg here: one datagram per call");
        Io::Single
    } else {
        io
    };
    let socks = (0..sockets)
        .map(|_| client_socket(server))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| format!("socket to {server}: {e}"))?;
    let template = request_template()?;
    let begin = Instant::now();
    let window = Window {
        start: begin + warmup,
        end: begin + warmup + secs,
    };
    let barrier = Arc::new(std::sync::Barrier::new(sockets));
    let threads: Vec<_> = socks
        .into_iter()
        .map(|sock| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                drive(&sock, template, depth, io, window)
            })
        })
        .collect();
    let mut total = Tally::default();
    let mut mapped = 0;
    for t in threads {
        let t = t
            .join()
            .map_err(|_| "a socket thread panicked".to_owned())??;
        total.answered += t.answered;
        total.answered_all += t.answered_all;
        total.sent += t.sent;
        total.lost += t.lost;
        total.invalid += t.invalid;
        mapped += usize::from(t.mapped_ok);
    }
    let rate = total.answered as f64 / secs.as_secs_f64();
    println!(
        "stun_load: server={server} io={} sockets={sockets} depth={depth} secs={:.3} \
         answered={} rate={rate:.0} sent={} answered_all={} lost={} invalid={} mapped_ok={mapped}",
        match io {
            Io::Batch => "batch",
            Io::Single => "single",
        },
        secs.as_secs_f64(),
        total.answered,
        total.sent,
        total.answered_all,
        total.lost,
        total.invalid,
    );
    if total.answered == 0 {
        return Err(format!("no valid answer from {server}"));
    }
    Ok(())
}

/// A UDP socket on loopback connected to `server`, blocking with a 250 ms
/// read timeout, with deep buffers.
fn client_socket(server: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(
        Domain::for_address(server),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    let any: SocketAddr = if server.is_ipv4() {
        ([127, 0, 0, 1], 0).into()
    } else {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    };
    s.bind(&any.into())?;
    s.connect(&server.into())?;
    s.set_read_timeout(Some(QUIET))?;
    Ok(s.into())
}

/// A Binding request with an all-zero transaction id, written by p2p-stun.
fn request_template() -> Result<[u8; REQ], String> {
    let mut out = [0u8; REQ];
    let b = MessageBuilder::new(
        p2p_stun::SliceBuf::new(&mut out),
        MessageType::new(Method::BINDING, MessageClass::Request),
        TransactionId::new([0; 12]),
    )
    .map_err(|e| format!("request: {e}"))?;
    if b.finish() != REQ {
        return Err("request: not a bare header".into());
    }
    Ok(out)
}

/// The requests one socket has in flight: ring slot `seq % RING` holds
/// `seq + 1` while `seq` waits for its answer, 0 otherwise.
struct Flight {
    nonce: [u8; 8],
    next: u32,
    slots: Vec<u32>,
    outstanding: usize,
}

impl Flight {
    fn new() -> Flight {
        Flight {
            nonce: rand::random(),
            next: 0,
            slots: vec![0; RING],
            outstanding: 0,
        }
    }

    /// Write the next request into `buf`; a slot still waiting after a
    /// whole turn of the ring is counted lost.
    fn issue(&mut self, template: &[u8; REQ], buf: &mut [u8; REQ], lost: &mut u64) {
        let seq = self.next;
        self.next = self.next.wrapping_add(1);
        let slot = &mut self.slots[seq as usize % RING];
        if *slot != 0 {
            *lost += 1;
            self.outstanding -= 1;
        }
        *slot = seq.wrapping_add(1);
        self.outstanding += 1;
        *buf = *template;
        buf[8..16].copy_from_slice(&self.nonce);
        buf[16..20].copy_from_slice(&seq.to_be_bytes());
    }

    /// Whether `resp` answers a request in flight; if so it is no longer.
    fn accept(&mut self, resp: &[u8]) -> bool {
        let Some(seq) = answered_seq(resp, &self.nonce) else {
            return false;
        };
        let slot = &mut self.slots[seq as usize % RING];
        if *slot != seq.wrapping_add(1) {
            return false;
        }
        *slot = 0;
        self.outstanding -= 1;
        true
    }

    /// Forget everything in flight (after a silence); returns how many.
    fn reset(&mut self) -> usize {
        let n = self.outstanding;
        self.slots.iter_mut().for_each(|s| *s = 0);
        self.outstanding = 0;
        n
    }
}

/// The sequence number of a Binding success response to one of our
/// requests (header checks only: type, length, cookie, nonce).
fn answered_seq(resp: &[u8], nonce: &[u8; 8]) -> Option<u32> {
    let head = resp.get(..20)?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if head[..2] != BINDING_SUCCESS
        || head[4..8] != COOKIE
        || 20 + len != resp.len()
        || head[8..16] != nonce[..]
    {
        return None;
    }
    Some(u32::from_be_bytes([head[16], head[17], head[18], head[19]]))
}

/// Whether `resp` carries this socket's own address as XOR-MAPPED-ADDRESS.
fn mapped_is(resp: &[u8], me: SocketAddr) -> bool {
    Message::decode(resp)
        .ok()
        .and_then(|m| m.get::<XorMappedAddress>().ok().flatten())
        .is_some_and(|XorMappedAddress(a)| a == me)
}

/// One socket's closed loop until the window ends.
fn drive(
    sock: &UdpSocket,
    template: [u8; REQ],
    depth: usize,
    io: Io,
    window: Window,
) -> Result<Tally, String> {
    let me = sock.local_addr().map_err(|e| e.to_string())?;
    let fd = sock.as_raw_fd();
    let mut fl = Flight::new();
    let mut t = Tally::default();
    let mut sampled = false;
    let mut tx = vec![[0u8; REQ]; MAX_DEPTH];
    let mut rx = vec![[0u8; RBUF]; mmsg::BATCH];
    let mut lens = [0usize; mmsg::BATCH];
    loop {
        // Top up to `depth` in flight.
        let want = depth.saturating_sub(fl.outstanding);
        for b in tx.iter_mut().take(want) {
            fl.issue(&template, b, &mut t.lost);
        }
        let mut done = 0;
        while done < want {
            let r = match io {
                Io::Batch => {
                    let k = (want - done).min(mmsg::BATCH);
                    let msgs: [&[u8]; mmsg::BATCH] =
                        std::array::from_fn(|i| tx.get(done + i).map_or(&[][..], |b| &b[..]));
                    mmsg::send(fd, &msgs[..k], None)
                }
                Io::Single => sock.send(&tx[done]).map(|_| 1),
            };
            match r {
                Ok(n) => done += n.max(1),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // E.g. ECONNREFUSED from an earlier ICMP: this one is lost.
                    if e.kind() != io::ErrorKind::ConnectionRefused {
                        return Err(format!("send: {e}"));
                    }
                    done += 1;
                }
            }
        }
        t.sent += want as u64;
        // Take what has come (blocking for the first, up to QUIET).
        let got = match io {
            Io::Batch => mmsg::recv(fd, &mut rx, &mut lens, None),
            Io::Single => sock.recv(&mut rx[0]).map(|n| {
                lens[0] = n;
                1
            }),
        };
        let now = Instant::now();
        let got = match got {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::ConnectionRefused
                ) =>
            {
                t.lost += fl.reset() as u64;
                0
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(format!("recv: {e}")),
        };
        let mut valid = 0;
        for (buf, &len) in rx.iter().zip(&lens).take(got) {
            let resp = &buf[..len.min(RBUF)];
            if fl.accept(resp) {
                valid += 1;
                if !sampled {
                    sampled = true;
                    t.mapped_ok = mapped_is(resp, me);
                }
            } else {
                t.invalid += 1;
            }
        }
        t.answered_all += valid;
        if now >= window.start && now < window.end {
            t.answered += valid;
        }
        if now >= window.end {
            // What is still in flight now is neither answered nor lost.
            return Ok(t);
        }
    }
}

// ------------------------------------------------------------------ echo

fn echo(args: &[String]) -> Result<(), String> {
    let f = Flags(args);
    let listen: SocketAddr = f.parse("--listen", None)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: usize = f.parse("--threads", Some(cores))?;
    let max = f.secs("--max-secs", 600.0)?;
    if !(1..=64).contains(&threads) {
        return Err("--threads 1..=64".into());
    }
    let deadline = Instant::now() + max;
    // One socket read by every thread: no SO_REUSEPORT hashing that could
    // leave a thread idle when the generator's few flows land unevenly.
    let first = echo_socket(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    let socks = (1..threads)
        .map(|_| first.try_clone())
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| format!("clone the socket: {e}"))?;
    let socks: Vec<UdpSocket> = std::iter::once(first).chain(socks).collect();
    println!("stun_load: echo on {listen} with {threads} thread(s)");
    let handles: Vec<_> = socks
        .into_iter()
        .map(|s| std::thread::spawn(move || echo_loop(&s, deadline)))
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| "an echo thread panicked".to_owned())??;
    }
    Ok(())
}

fn echo_socket(listen: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&listen.into())?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(s.into())
}

/// One datagram per `recv_from`, one per `send_to`, until `deadline`.
fn echo_loop(sock: &UdpSocket, deadline: Instant) -> Result<(), String> {
    let mut buf = [0u8; RBUF];
    while Instant::now() < deadline {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                if n > 0 {
                    buf[0] = BINDING_SUCCESS[0];
                }
                // A failed send is a lost answer, as for any server.
                let _ = sock.send_to(&buf[..n], from);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(format!("recv_from: {e}")),
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ probe

fn probe(args: &[String]) -> Result<(), String> {
    let f = Flags(args);
    let server: SocketAddr = f.parse("--server", None)?;
    let timeout = f.secs("--timeout-secs", 10.0)?;
    let sock = client_socket(server).map_err(|e| format!("socket to {server}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let template = request_template()?;
    let mut fl = Flight::new();
    let mut lost = 0;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; RBUF];
    while Instant::now() < deadline {
        let mut req = [0u8; REQ];
        fl.issue(&template, &mut req, &mut lost);
        let _ = sock.send(&req);
        // Read until this request's 100 ms are up.
        let sent = Instant::now();
        while sent.elapsed() < Duration::from_millis(100) {
            match sock.recv(&mut buf) {
                Ok(n) if fl.accept(&buf[..n]) => {
                    println!("stun_load: {server} answers");
                    return Ok(());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    Err(format!("no answer from {server} within {timeout:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_to(req: &[u8; REQ]) -> Vec<u8> {
        let mut r = req.to_vec();
        r[..2].copy_from_slice(&BINDING_SUCCESS);
        r
    }

    #[test]
    fn counts_each_answer_once_and_only_ours() {
        let template = request_template().unwrap();
        let mut fl = Flight::new();
        let mut lost = 0;
        let (mut a, mut b) = ([0u8; REQ], [0u8; REQ]);
        fl.issue(&template, &mut a, &mut lost);
        fl.issue(&template, &mut b, &mut lost);
        assert_eq!(fl.outstanding, 2);
        // The request itself (not a success response) is not an answer.
        assert!(!fl.accept(&a));
        assert!(fl.accept(&response_to(&a)));
        // A duplicate is not counted twice.
        assert!(!fl.accept(&response_to(&a)));
        // Another socket's nonce is not ours.
        let mut stranger = response_to(&b);
        stranger[8] ^= 1;
        assert!(!fl.accept(&stranger));
        // A wrong length field is refused.
        let mut long = response_to(&b);
        long.extend_from_slice(&[0; 4]);
        assert!(!fl.accept(&long));
        assert!(fl.accept(&response_to(&b)));
        assert_eq!((fl.outstanding, lost), (0, 0));
    }

    #[test]
    fn a_slot_unanswered_for_a_whole_ring_is_lost() {
        let template = request_template().unwrap();
        let mut fl = Flight::new();
        let mut lost = 0;
        let mut first = [0u8; REQ];
        fl.issue(&template, &mut first, &mut lost);
        let mut buf = [0u8; REQ];
        for _ in 1..RING {
            fl.issue(&template, &mut buf, &mut lost);
            assert!(fl.accept(&response_to(&buf)));
        }
        assert_eq!(lost, 0);
        fl.issue(&template, &mut buf, &mut lost);
        assert_eq!((lost, fl.outstanding), (1, 1));
        assert!(!fl.accept(&response_to(&first)));
        assert_eq!(fl.reset(), 1);
    }
}
