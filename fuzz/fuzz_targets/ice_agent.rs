//! The ICE agent under a stream of fuzzer-chosen operations: checks from the
//! peer signed with the right password and carrying arbitrary attributes,
//! answers (success, 487 role conflict, other errors, arbitrary attributes)
//! to the agent's own outstanding requests, raw datagrams, candidates and
//! credentials arriving late or twice, restarts (some withholding a
//! candidate), retired candidates, data and jumps in time. Nothing may
//! panic; every datagram the agent sends is STUN (it sends no data but what
//! the caller gives it).
#![no_main]
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use p2p_fuzz::Input;
use p2p_ice::{Candidate, IceAgent, IceConfig, IceOutput};
use p2p_proto::{Datagram, Machine};
use p2p_stun::attr::*;
use p2p_stun::{
    AttrType, Key, Message, MessageBuilder, MessageClass, MessageType, Method, TransactionId,
};

/// Attribute types a Binding check carries; the fuzzer may also pick any.
const TYPES: [AttrType; 6] = [
    AttrType::PRIORITY,
    AttrType::USE_CANDIDATE,
    AttrType::ICE_CONTROLLING,
    AttrType::ICE_CONTROLLED,
    AttrType::XOR_MAPPED_ADDRESS,
    AttrType::ERROR_CODE,
];

struct World {
    agent: IceAgent,
    now: Instant,
    locals: [SocketAddr; 2],
    remotes: [SocketAddr; 3],
    remote_ufrag: String,
    remote_pwd: String,
    /// Requests the agent sent and has not seen answered: (tid, from, to).
    outstanding: Vec<(TransactionId, SocketAddr, SocketAddr)>,
    data: Vec<u8>,
}

impl World {
    fn drain(&mut self) {
        while let Some(out) = self.agent.poll_output() {
            let IceOutput::Transmit(t) = out else {
                continue;
            };
            if t.contents == self.data {
                continue;
            }
            let m = Message::decode(&t.contents).expect("the agent sends STUN");
            if m.typ().class == MessageClass::Request && self.outstanding.len() < 16 {
                self.outstanding
                    .push((m.transaction_id(), t.source, t.destination));
            }
        }
    }

    fn feed(&mut self, source: SocketAddr, destination: SocketAddr, contents: &[u8]) {
        let now = self.now;
        let _ = self
            .agent
            .handle_input(now, Datagram::udp(source, destination, contents));
        self.drain();
    }

    /// Arbitrary attributes from the input (at most five).
    fn attributes(&self, b: &mut MessageBuilder<Vec<u8>>, input: &mut Input<'_>) -> Option<()> {
        for _ in 0..input.byte()? % 6 {
            let k = input.byte()?;
            match k % 5 {
                0 => {
                    b.add(&Priority(u32::from(input.u16()?) << 8)).ok()?;
                }
                1 => {
                    b.add(&UseCandidate).ok()?;
                }
                2 => {
                    let tb = u64::from(input.u16()?);
                    if k & 0x80 != 0 {
                        b.add(&IceControlling(tb)).ok()?;
                    } else {
                        b.add(&IceControlled(tb)).ok()?;
                    }
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

    /// A check from the peer, signed with the agent's password.
    fn check(&mut self, input: &mut Input<'_>) -> Option<()> {
        let sel = input.byte()?;
        let tid = TransactionId::new([input.byte()?; 12]);
        let typ = MessageType::new(Method::BINDING, MessageClass::Request);
        let mut b = MessageBuilder::new(Vec::new(), typ, tid).ok()?;
        let creds = self.agent.local_credentials().clone();
        let user = format!("{}:{}", creds.ufrag, self.remote_ufrag);
        b.add(&Username::new(&user).ok()?).ok()?;
        self.attributes(&mut b, input)?;
        b.add_message_integrity(&Key::short_term(&creds.pwd).ok()?)
            .ok()?;
        if sel & 1 != 0 {
            b.add_fingerprint().ok()?;
        }
        let bytes = b.into_inner();
        let from = self.remotes[usize::from(sel >> 1) % self.remotes.len()];
        let to = self.locals[usize::from(sel >> 3) & 1];
        self.feed(from, to, &bytes);
        Some(())
    }

    /// An answer to one of the agent's outstanding requests, signed with
    /// the peer's password (or not).
    fn answer(&mut self, input: &mut Input<'_>) -> Option<()> {
        if self.outstanding.is_empty() {
            return Some(());
        }
        let sel = input.byte()?;
        let (tid, from, to) = self
            .outstanding
            .remove(usize::from(sel) % self.outstanding.len());
        let class = if sel & 0x80 != 0 {
            MessageClass::Error
        } else {
            MessageClass::Success
        };
        let mut b =
            MessageBuilder::new(Vec::new(), MessageType::new(Method::BINDING, class), tid).ok()?;
        if class == MessageClass::Error {
            let code = [487, 400, 401, 420, 500][usize::from(sel >> 4) % 5];
            b.add(&ErrorCode::from_code(code)?).ok()?;
        } else if sel & 0x40 != 0 {
            // The mapped address: the real source, or a new (peer-reflexive) one.
            let mapped = if sel & 0x20 != 0 {
                SocketAddr::new(from.ip(), from.port() ^ 1)
            } else {
                from
            };
            b.add(&XorMappedAddress(mapped)).ok()?;
        }
        self.attributes(&mut b, input)?;
        if sel & 0x08 == 0 {
            b.add_message_integrity(&Key::short_term(&self.remote_pwd).ok()?)
                .ok()?;
        }
        if sel & 0x04 != 0 {
            b.add_fingerprint().ok()?;
        }
        let bytes = b.into_inner();
        // Mostly from where the request went; sometimes from elsewhere.
        let source = if sel & 0x02 != 0 { self.remotes[2] } else { to };
        self.feed(source, from, &bytes);
        Some(())
    }

    fn step(&mut self, input: &mut Input<'_>) -> Option<()> {
        let op = input.byte()?;
        match op % 10 {
            0 | 1 => self.check(input)?,
            2 | 3 => self.answer(input)?,
            4 => {
                let len = usize::from(input.byte()?);
                let bytes = input.bytes(len).to_vec();
                let (from, to) = (
                    self.remotes[usize::from(op >> 4) % 3],
                    self.locals[usize::from(op >> 6) & 1],
                );
                self.feed(from, to, &bytes);
            }
            5 => {
                // A remote candidate (maybe a known one again, maybe odd).
                let i = input.byte()?;
                let addr = self.remotes[usize::from(i) % 3];
                let c = match i >> 6 {
                    0 => Candidate::host(addr),
                    1 => Candidate::server_reflexive(addr, self.remotes[0], addr.ip()),
                    _ => Candidate::relayed(addr, Some(self.remotes[1]), addr.ip()),
                };
                let _ = self.agent.add_remote_candidate(self.now, c);
                if i & 0x20 != 0 {
                    self.agent.end_of_remote_candidates();
                }
                self.drain();
            }
            6 => {
                let i = input.byte()?;
                match i % 6 {
                    0 if i & 0x80 != 0 => {
                        // Withholding a local candidate (as the session does
                        // with an allocation it is checking).
                        let l = self.locals[usize::from((i >> 6) & 1)];
                        self.agent.restart_withholding(self.now, &[(l, l)]);
                    }
                    0 => self.agent.restart(self.now),
                    1 => {
                        let (u, p) = (self.remote_ufrag.clone(), self.remote_pwd.clone());
                        let _ = self.agent.set_remote_credentials(self.now, &u, &p);
                    }
                    2 => {
                        let l = self.locals[usize::from(i >> 7)];
                        self.agent.retire_local_candidate(l, l);
                    }
                    3 => {
                        let _ = self
                            .agent
                            .add_local_candidate(self.now, Candidate::host(self.locals[1]));
                        self.agent.end_of_local_candidates();
                    }
                    4 => self.agent.set_remote_ice_lite(i & 0x80 != 0),
                    _ => {
                        let now = self.now;
                        let _ = self.agent.send(now, self.data.clone());
                    }
                }
                self.drain();
            }
            _ => {
                // Time passes: up to a minute, past consent and every timeout.
                let end = self.now + Duration::from_millis(u64::from(input.u16()?));
                for _ in 0..256 {
                    match self.agent.poll_timeout() {
                        Some(t) if t <= end => {
                            self.now = self.now.max(t);
                            let now = self.now;
                            self.agent.handle_timeout(now);
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
    let config = IceConfig::default()
        .with_controlling(first & 1 != 0)
        .with_seed(u64::from(first));
    let t0 = Instant::now();
    let mut w = World {
        agent: IceAgent::new(config),
        now: t0,
        locals: [
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.1:5001".parse().unwrap(),
        ],
        remotes: [
            "10.0.0.2:6000".parse().unwrap(),
            "203.0.113.9:7000".parse().unwrap(),
            "198.51.100.3:8000".parse().unwrap(),
        ],
        remote_ufrag: "peer".to_owned(),
        remote_pwd: "peerpasswordpeerpassword".to_owned(),
        outstanding: Vec::new(),
        data: b"application data".to_vec(),
    };
    w.agent.handle_timeout(t0);
    let _ = w
        .agent
        .add_local_candidate(t0, Candidate::host(w.locals[0]));
    if first & 2 != 0 {
        w.agent.end_of_local_candidates();
    }
    let _ = w
        .agent
        .add_remote_candidate(t0, Candidate::host(w.remotes[0]));
    if first & 4 != 0 {
        let (u, p) = (w.remote_ufrag.clone(), w.remote_pwd.clone());
        let _ = w.agent.set_remote_credentials(t0, &u, &p);
    }
    w.drain();
    for _ in 0..96 {
        if w.step(&mut input).is_none() {
            break;
        }
    }
});
