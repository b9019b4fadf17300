//! The DTLS endpoint of p2p-dtls under fuzzer-chosen input: an honest peer
//! runs a real handshake with it while the fuzzer decides which datagrams
//! arrive, in what order, which are lost, and adds its own (random bytes,
//! real datagrams cut or with bits flipped), jumps in time, sends data and
//! closes. Sometimes the endpoint was told a wrong fingerprint for the
//! peer. Nothing may panic, and:
//! - the endpoint delivers only data the peer sent, and never any when
//!   the peer's fingerprint was wrong;
//! - it says Connected at most once, before any data, and Closed at most
//!   once, with nothing after it.
//!
//! This file uses only p2p_dtls, p2p_proto and std: the fuzz target
//! `dtls_endpoint` runs it, and p2p-dtls's corpus test includes it by
//! path to replay `fuzz/corpus/dtls_endpoint` on every `cargo test`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use p2p_dtls::{Certificate, DtlsConfig, DtlsEndpoint, DtlsEvent, DtlsOutput, DtlsRole};
use p2p_proto::{Datagram, FiveTuple, Machine, Transport};

/// The fuzzer's bytes, read front to back.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

/// Three certificates made once: the endpoint's, the peer's, a stranger's.
fn certificates() -> &'static [Certificate; 3] {
    static CERTS: OnceLock<[Certificate; 3]> = OnceLock::new();
    CERTS.get_or_init(|| {
        ["target", "peer", "stranger"].map(|n| Certificate::generate_with_name(n).unwrap())
    })
}

/// What the endpoint under test said (checked as it came).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// It said Connected.
    pub connected: bool,
    /// It said Closed.
    pub closed: bool,
    /// How many Data events it gave.
    pub data: usize,
}

struct World {
    target: DtlsEndpoint,
    peer: DtlsEndpoint,
    now: Instant,
    to_target: VecDeque<Vec<u8>>,
    to_peer: VecDeque<Vec<u8>>,
    /// Every datagram either side sent (material for mutations), at most 64.
    sent: Vec<Vec<u8>>,
    /// What the peer sent as data.
    peer_data: Vec<Vec<u8>>,
    seen: Seen,
    wrong_fingerprint: bool,
}

fn a() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 5000))
}

fn b() -> SocketAddr {
    SocketAddr::from(([198, 51, 100, 2], 6000))
}

impl World {
    fn drain(&mut self) {
        while let Some(o) = self.target.poll_output() {
            assert!(!self.seen.closed, "output after Closed: {o:?}");
            match o {
                DtlsOutput::Transmit(t) => {
                    assert_eq!((t.source, t.destination), (a(), b()));
                    self.keep(&t.contents);
                    self.to_peer.push_back(t.contents);
                }
                DtlsOutput::Event(DtlsEvent::Connected { .. }) => {
                    assert!(!self.seen.connected && self.seen.data == 0);
                    assert!(!self.wrong_fingerprint, "connected to the wrong peer");
                    self.seen.connected = true;
                }
                DtlsOutput::Event(DtlsEvent::Data(d)) => {
                    assert!(self.seen.connected, "data before Connected");
                    assert!(self.peer_data.contains(&d), "data the peer never sent");
                    self.seen.data += 1;
                }
                DtlsOutput::Event(DtlsEvent::Closed(_)) => self.seen.closed = true,
                DtlsOutput::Event(_) => {}
                _ => {}
            }
        }
        while let Some(o) = self.peer.poll_output() {
            if let DtlsOutput::Transmit(t) = o {
                self.keep(&t.contents);
                self.to_target.push_back(t.contents);
            }
        }
    }

    fn keep(&mut self, d: &[u8]) {
        if self.sent.len() < 64 {
            self.sent.push(d.to_vec());
        }
    }

    fn feed_target(&mut self, d: &[u8]) {
        let _ = self
            .target
            .handle_input(self.now, Datagram::udp(b(), a(), d));
    }

    fn step(&mut self, input: &mut Bytes<'_>) -> Option<()> {
        let op = input.byte()?;
        match op % 9 {
            0 | 1 => {
                if let Some(d) = self.to_target.pop_front() {
                    if op & 0x80 == 0 {
                        self.feed_target(&d);
                    } // else: lost
                }
            }
            2 => {
                if let Some(d) = self.to_peer.pop_front() {
                    if op & 0x80 == 0 {
                        let _ = self
                            .peer
                            .handle_input(self.now, Datagram::udp(a(), b(), &d));
                    }
                }
            }
            3 => {
                // Raw bytes, most of them in the DTLS range.
                let len = usize::from(input.byte()?);
                let mut d = input.bytes(len).to_vec();
                if let Some(f) = d.first_mut() {
                    if op & 0x80 == 0 {
                        *f = 20 + *f % 44;
                    }
                }
                self.feed_target(&d);
            }
            4 | 5 => {
                // A real datagram, bits flipped or cut.
                if self.sent.is_empty() {
                    return Some(());
                }
                let i = usize::from(input.byte()?) % self.sent.len();
                let mut d = self.sent[i].clone();
                for _ in 0..input.byte()? % 4 {
                    let at = usize::from(input.u16()?) % d.len().max(1);
                    let x = input.byte()?;
                    if let Some(b) = d.get_mut(at) {
                        *b ^= x;
                    }
                }
                if op & 0x80 != 0 {
                    d.truncate(usize::from(input.u16()?) % (d.len() + 1));
                }
                self.feed_target(&d);
            }
            6 => {
                // Time passes; timers fire (bounded).
                let end = self.now + Duration::from_millis(u64::from(input.u16()?) * 4);
                for _ in 0..64 {
                    let next = [self.target.poll_timeout(), self.peer.poll_timeout()]
                        .into_iter()
                        .flatten()
                        .min();
                    match next {
                        Some(t) if t <= end => {
                            self.now = self.now.max(t);
                            self.target.handle_timeout(self.now);
                            self.peer.handle_timeout(self.now);
                            self.drain();
                        }
                        _ => break,
                    }
                }
                self.now = end;
            }
            7 => {
                let len = usize::from(input.byte()?) * 4;
                let data = input.bytes(len).to_vec();
                if op & 0x80 == 0 {
                    if self.peer_data.len() < 256 && self.peer.send(self.now, &data).is_ok() {
                        self.peer_data.push(data);
                    }
                } else {
                    let _ = self.target.send(self.now, &data);
                }
            }
            _ => {
                if op & 0xf0 == 0xf0 {
                    self.target.close(self.now);
                } else if op & 0xf0 == 0xe0 {
                    self.peer.close(self.now);
                }
            }
        }
        self.drain();
        Some(())
    }
}

/// One run: the first byte picks roles, versions and the fingerprint the
/// endpoint was told; the rest is a stream of operations. What the
/// endpoint said.
pub fn run(data: &[u8]) -> Seen {
    let mut input = Bytes(data);
    let Some(first) = input.byte() else {
        return Seen::default();
    };
    let [target_cert, peer_cert, stranger] = certificates();
    let role = if first & 1 == 0 {
        DtlsRole::Client
    } else {
        DtlsRole::Server
    };
    let wrong_fingerprint = first & 8 != 0;
    let told = if wrong_fingerprint {
        stranger
    } else {
        peer_cert
    };
    let mut tc = DtlsConfig::new(target_cert.clone(), role, vec![told.fingerprint()])
        .with_seed(u64::from(first));
    tc.dtls13 = first & 2 != 0;
    let mut pc = DtlsConfig::new(
        peer_cert.clone(),
        role.other(),
        vec![target_cert.fingerprint()],
    )
    .with_seed(u64::from(first) + 1);
    pc.dtls13 = first & 4 != 0;
    let target = DtlsEndpoint::new(tc, FiveTuple::new(Transport::Udp, a(), b())).unwrap();
    let peer = DtlsEndpoint::new(pc, FiveTuple::new(Transport::Udp, b(), a())).unwrap();
    let mut w = World {
        target,
        peer,
        now: Instant::now(),
        to_target: VecDeque::new(),
        to_peer: VecDeque::new(),
        sent: Vec::new(),
        peer_data: Vec::new(),
        seen: Seen::default(),
        wrong_fingerprint,
    };
    let now = w.now;
    w.target.handle_timeout(now);
    w.peer.handle_timeout(now);
    w.drain();
    for _ in 0..128 {
        if w.step(&mut input).is_none() {
            break;
        }
    }
    w.seen
}
