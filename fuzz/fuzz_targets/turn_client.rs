//! The TURN client state machine against a fuzzer-played server: answers to
//! its outstanding requests (401 and 438 with realm and nonce, successes
//! with arbitrary relayed/mapped addresses, lifetimes and attributes, other
//! errors), signed with the right key or not; Data indications, ChannelData
//! and raw bytes; the client's own commands; jumps in time. Nothing may
//! panic: a hostile or broken TURN server must not take a peer down.
#![no_main]
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use p2p_fuzz::Input;
use p2p_stun::attr::*;
use p2p_stun::{
    AttrType, Key, Message, MessageBuilder, MessageClass, MessageType, Method, TransactionId,
};
use p2p_turn::{ClientConfig, ClientOutput, Datagram, Machine, Transport, TurnClient};

const REALM: &str = "fuzz.example";
const TYPES: [AttrType; 10] = [
    AttrType::XOR_RELAYED_ADDRESS,
    AttrType::XOR_MAPPED_ADDRESS,
    AttrType::LIFETIME,
    AttrType::RESERVATION_TOKEN,
    AttrType::PASSWORD_ALGORITHMS,
    AttrType::ADDRESS_ERROR_CODE,
    AttrType::CONNECTION_ID,
    AttrType::XOR_PEER_ADDRESS,
    AttrType::DATA,
    AttrType::ERROR_CODE,
];

struct World {
    client: TurnClient,
    now: Instant,
    local: SocketAddr,
    server: SocketAddr,
    peers: [SocketAddr; 2],
    relayed: SocketAddr,
    /// An RFC 6062 data connection's local address.
    data: SocketAddr,
    transport: Transport,
    /// Requests the client sent and the fuzzer has not answered: (tid, method).
    outstanding: Vec<(TransactionId, Method)>,
}

impl World {
    fn drain(&mut self) {
        while let Some(o) = self.client.poll_output() {
            let ClientOutput::Transmit(t) = o else {
                continue;
            };
            if let Ok(m) = Message::decode(&t.contents) {
                if m.typ().class == MessageClass::Request && self.outstanding.len() < 16 {
                    self.outstanding.push((m.transaction_id(), m.typ().method));
                }
            }
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let now = self.now;
        let d = Datagram::new(self.transport, self.server, self.local, bytes);
        let _ = self.client.handle_input(now, d);
        self.drain();
    }

    fn attributes(&self, b: &mut MessageBuilder<Vec<u8>>, input: &mut Input<'_>) -> Option<()> {
        for _ in 0..input.byte()? % 6 {
            let k = input.byte()?;
            match k % 5 {
                0 => {
                    let a = if k & 0x80 != 0 {
                        self.relayed
                    } else {
                        self.peers[0]
                    };
                    b.add(&XorRelayedAddress(a)).ok()?;
                }
                1 => {
                    b.add(&Lifetime(input.u32()?)).ok()?;
                }
                2 => {
                    b.add(&XorMappedAddress(self.peers[usize::from(k >> 7)]))
                        .ok()?;
                }
                3 => {
                    input.raw_attribute(b, &TYPES, false)?;
                }
                _ => {
                    input.raw_attribute(b, &TYPES, true)?;
                }
            }
        }
        Some(())
    }

    fn answer(&mut self, input: &mut Input<'_>) -> Option<()> {
        if self.outstanding.is_empty() {
            return Some(());
        }
        let sel = input.byte()?;
        let i = usize::from(sel) % self.outstanding.len();
        let (tid, method) = if sel & 0x01 != 0 {
            self.outstanding.remove(i)
        } else {
            // Answered but kept: a duplicate answer may follow.
            self.outstanding[i]
        };
        let kind = (sel >> 1) % 4;
        let class = if kind == 0 {
            MessageClass::Success
        } else {
            MessageClass::Error
        };
        let mut b = MessageBuilder::new(Vec::new(), MessageType::new(method, class), tid).ok()?;
        match kind {
            0 => {}
            1 | 2 => {
                b.add(&ErrorCode::from_code(if kind == 1 { 401 } else { 438 })?)
                    .ok()?;
                b.add(&Realm::new(REALM).ok()?).ok()?;
                let n = input.byte()?;
                b.add(&Nonce::new(&format!("nonce-{n}")).ok()?).ok()?;
            }
            _ => {
                let code = [400, 403, 437, 440, 441, 442, 443, 446, 447, 486, 500, 508];
                b.add(&ErrorCode::from_code(
                    code[usize::from(input.byte()?) % code.len()],
                )?)
                .ok()?;
            }
        }
        self.attributes(&mut b, input)?;
        if sel & 0x20 == 0 && kind != 1 {
            let alg = if sel & 0x40 != 0 {
                PasswordAlgorithm::Sha256
            } else {
                PasswordAlgorithm::Md5
            };
            let key = Key::long_term("alice", REALM, "wonderland", alg).ok()?;
            b.add_message_integrity(&key).ok()?;
        }
        if sel & 0x80 != 0 {
            b.add_fingerprint().ok()?;
        }
        let bytes = b.into_inner();
        self.feed(&bytes);
        Some(())
    }

    fn step(&mut self, input: &mut Input<'_>) -> Option<()> {
        let op = input.byte()?;
        match op % 10 {
            0..=3 => self.answer(input)?,
            4 => {
                // A Data indication, maybe from a peer without permission.
                let tid = TransactionId::new([input.byte()?; 12]);
                let typ = MessageType::new(Method::DATA, MessageClass::Indication);
                let mut b = MessageBuilder::new(Vec::new(), typ, tid).ok()?;
                b.add(&XorPeerAddress(self.peers[usize::from(op >> 7)]))
                    .ok()?;
                let len = usize::from(input.byte()? % 64);
                b.add(&Data(input.bytes(len))).ok()?;
                self.attributes(&mut b, input)?;
                let bytes = b.into_inner();
                self.feed(&bytes);
            }
            5 => {
                let len = usize::from(input.byte()?);
                let bytes = input.bytes(len).to_vec();
                self.feed(&bytes);
            }
            6 => {
                let c = input.byte()?;
                let len = usize::from(input.byte()? % 64);
                let mut pkt = vec![0x40, c & 3, 0, len as u8];
                pkt.extend_from_slice(input.bytes(len));
                self.feed(&pkt);
            }
            7 | 8 => {
                let now = self.now;
                let c = input.byte()?;
                let peer = self.peers[usize::from(c >> 7)];
                let _ = match c % 7 {
                    0 => {
                        self.client.handle_timeout(now);
                        Ok(())
                    }
                    1 => self.client.create_permission(now, &[peer.ip()]),
                    2 => self.client.bind_channel(now, peer).map(drop),
                    3 => self.client.send_to(peer, b"hello"),
                    4 => self.client.connect(now, peer),
                    5 => {
                        let data = self.data;
                        self.client.connection_bind(now, u32::from(c), data)
                    }
                    _ => self.client.close(now),
                };
                self.drain();
            }
            _ => {
                let end = self.now + Duration::from_millis(u64::from(input.u16()?) * 16);
                for _ in 0..256 {
                    match self.client.poll_timeout() {
                        Some(t) if t <= end => {
                            self.now = self.now.max(t);
                            let now = self.now;
                            self.client.handle_timeout(now);
                            self.drain();
                        }
                        _ => break,
                    }
                }
                self.now = end;
            }
        }
        Some(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(first) = input.byte() else { return };
    let local: SocketAddr = "192.0.2.10:5000".parse().unwrap();
    let server: SocketAddr = "203.0.113.1:3478".parse().unwrap();
    let mut config = ClientConfig::new(local, server, "alice", "wonderland");
    config.rng_seed = Some(u64::from(first));
    config.transport = if first & 1 != 0 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    if first & 2 != 0 {
        config.requested_transport = PROTO_TCP;
    }
    config.dual_stack = first & 4 != 0;
    config.use_userhash = first & 8 != 0;
    let t0 = Instant::now();
    let mut w = World {
        client: TurnClient::new(config.clone()),
        now: t0,
        local,
        server,
        peers: [
            "198.51.100.7:9000".parse().unwrap(),
            "[2001:db8::7]:9000".parse().unwrap(),
        ],
        relayed: "203.0.113.1:50000".parse().unwrap(),
        data: "192.0.2.10:5001".parse().unwrap(),
        transport: config.transport,
        outstanding: Vec::new(),
    };
    // The client starts: its Allocate goes out.
    w.client.handle_timeout(t0);
    w.drain();
    for _ in 0..96 {
        if w.step(&mut input).is_none() {
            break;
        }
    }
});
