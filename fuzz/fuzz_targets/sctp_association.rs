//! Two data-channel associations under a stream of fuzzer-chosen
//! operations: arbitrary datagrams into either side before and after the
//! association is up (raw, or with the right verification tag and CRC32c
//! so they reach the chunk parsers), real packets mutated and replayed,
//! real packets exchanged, channel commands, close and abort, jumps in
//! time. Nothing may panic, and every packet a side sends is an SCTP
//! packet with a valid checksum.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use p2p_datachannel::{
    ChannelId, ChannelOptions, Reliability, SctpAssociation, SctpConfig, SctpOutput, SctpRole,
};
use p2p_fuzz::Input;
use p2p_proto::{Datagram, FiveTuple, Machine, Transport};

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

fn seal(p: &mut [u8]) {
    if p.len() < 12 {
        return;
    }
    p[8..12].fill(0);
    let c = CRC32C.checksum(p);
    p[8..12].copy_from_slice(&c.to_le_bytes());
}

struct World {
    sides: [SctpAssociation; 2],
    paths: [FiveTuple; 2],
    /// Packets each side sent and nobody delivered yet.
    wire: [Vec<Vec<u8>>; 2],
    /// The last verification tag each side put on a packet.
    tags: [u32; 2],
    now: Instant,
}

impl World {
    fn new() -> World {
        let a = "192.0.2.1:1".parse().unwrap();
        let b = "192.0.2.2:2".parse().unwrap();
        let paths = [
            FiveTuple::new(Transport::Udp, a, b),
            FiveTuple::new(Transport::Udp, b, a),
        ];
        let cfg = |role, seed| {
            SctpConfig::new(role)
                .with_rng_seed(seed)
                .with_remote_max_message_size(Some(0))
        };
        World {
            sides: [
                SctpAssociation::new(cfg(SctpRole::Client, 1), paths[0]),
                SctpAssociation::new(cfg(SctpRole::Server, 2), paths[1]),
            ],
            paths,
            wire: [Vec::new(), Vec::new()],
            tags: [0, 0],
            now: Instant::now(),
        }
    }

    fn drain(&mut self) {
        for i in 0..2 {
            while let Some(o) = self.sides[i].poll_output() {
                if let SctpOutput::Transmit(t) = o {
                    let p = t.contents;
                    assert!(p.len() >= 16, "a packet with no chunk");
                    let mut check = p.clone();
                    seal(&mut check);
                    assert_eq!(check, p, "a packet with a bad checksum");
                    self.tags[i] = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                    if self.wire[i].len() < 64 {
                        self.wire[i].push(p);
                    }
                }
            }
        }
    }

    fn feed(&mut self, to: usize, bytes: &[u8]) {
        let path = self.paths[to];
        let d = Datagram::new(path.transport, path.remote, path.local, bytes);
        let _ = self.sides[to].handle_input(self.now, d);
        self.drain();
    }

    /// Deliver what is on the wire both ways.
    fn exchange(&mut self) {
        for from in 0..2 {
            for p in std::mem::take(&mut self.wire[from]) {
                self.feed(1 - from, &p);
            }
        }
    }

    fn tick(&mut self, d: Duration) {
        self.now += d;
        for s in &mut self.sides {
            s.handle_timeout(self.now);
        }
        self.drain();
    }

    fn command(&mut self, input: &mut Input<'_>) -> Option<()> {
        let k = input.byte()?;
        let side = usize::from(k & 1);
        let id = ChannelId(u16::from(input.byte()? % 8));
        let now = self.now;
        let s = &mut self.sides[side];
        match (k >> 1) % 8 {
            0 => {
                let mut o = ChannelOptions::new("f").with_ordered(k & 0x10 == 0);
                if k & 0x20 != 0 {
                    o = o.with_negotiated(id.0);
                }
                o = o.with_reliability(match k >> 6 {
                    0 => Reliability::Reliable,
                    1 => Reliability::MaxRetransmits(u32::from(k & 3)),
                    _ => Reliability::MaxPacketLifetime(u32::from(k) * 10),
                });
                let _ = s.open_channel(now, o);
            }
            1 | 2 => {
                let len = usize::from(input.u16()?) * 4;
                let _ = s.send(now, id, &vec![k; len], k & 0x40 != 0);
            }
            3 => {
                let _ = s.close_channel(now, id);
            }
            4 => {
                let _ = s.set_buffered_amount_low_threshold(id, usize::from(k));
                let _ = s.buffered_amount(id);
            }
            5 => s.close(now),
            6 => s.abort(now),
            _ => s.set_remote_max_message_size(Some(u32::from(input.u16()?))),
        }
        self.drain();
        Some(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut w = World::new();
    w.tick(Duration::ZERO);
    // Half the runs first bring the association up (and a channel).
    if input.byte().is_some_and(|b| b & 1 == 1) {
        let _ = w.sides[0].open_channel(w.now, ChannelOptions::new("up"));
        w.drain();
        for _ in 0..8 {
            w.exchange();
            w.tick(Duration::from_millis(10));
        }
    }
    for _ in 0..256 {
        let Some(op) = input.byte() else { break };
        let to = usize::from(op >> 7);
        match op % 8 {
            // A raw datagram.
            0 => {
                let n = usize::from(input.byte().unwrap_or(0));
                let b = input.bytes(n).to_vec();
                w.feed(to, &b);
            }
            // A datagram with the tag the side expects and a right CRC32c,
            // so its chunks are parsed.
            1 | 2 => {
                let n = usize::from(input.u16().unwrap_or(0) % 1500);
                let mut b = vec![0x13, 0x88, 0x13, 0x88];
                b.extend_from_slice(&w.tags[1 - to].to_be_bytes());
                b.extend_from_slice(&[0; 4]);
                b.extend_from_slice(input.bytes(n));
                seal(&mut b);
                w.feed(to, &b);
            }
            // A real packet, one byte changed, resealed (or not).
            3 => {
                let from = 1 - to;
                if w.wire[from].is_empty() {
                    continue;
                }
                let i = usize::from(input.byte().unwrap_or(0)) % w.wire[from].len();
                let mut p = w.wire[from][i].clone();
                let at = usize::from(input.u16().unwrap_or(0)) % p.len();
                p[at] ^= input.byte().unwrap_or(1).max(1);
                if op & 0x40 != 0 {
                    seal(&mut p);
                }
                w.feed(to, &p);
            }
            4 => w.exchange(),
            5 => {
                let ms = u64::from(input.byte().unwrap_or(0)) * 20;
                w.tick(Duration::from_millis(ms));
            }
            _ => {
                if w.command(&mut input).is_none() {
                    break;
                }
            }
        }
    }
    // Whatever happened, time runs out cleanly.
    for _ in 0..4 {
        w.exchange();
        w.tick(Duration::from_secs(10));
    }
});
