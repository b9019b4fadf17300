//! Two associations over an in-memory link with a simulated clock: delay,
//! jitter (reordering), seeded loss, or everything dropped one way. The
//! harness follows quinn's `Pair`: drain both, jump the clock to the next
//! arrival or timeout, deliver, fire; every run is bounded in steps and
//! simulated time.
#![allow(dead_code, unreachable_pub)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use p2p_datachannel::{ChannelEvent, ChannelId, SctpAssociation, SctpConfig, SctpOutput, SctpRole};
use p2p_proto::{FiveTuple, Machine, Transport};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// What happens to the packets one side sends.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub delay: Duration,
    /// Extra delay, uniform in 0..jitter (packets overtake each other).
    pub jitter: Duration,
    /// Probability a packet is lost.
    pub loss: f64,
    /// Drop everything.
    pub dead: bool,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            dead: false,
        }
    }
}

pub struct Side {
    pub m: SctpAssociation,
    pub events: Vec<ChannelEvent>,
    pub link: Link,
    pub packets_sent: u64,
    /// The application takes every message as it comes (releases its
    /// bytes at once); false: it reads nothing, and releases nothing.
    pub reading: bool,
}

impl Side {
    /// The events so far, emptied.
    pub fn take(&mut self) -> Vec<ChannelEvent> {
        std::mem::take(&mut self.events)
    }

    /// The messages received so far, emptied from the events (other events
    /// stay).
    pub fn take_messages(&mut self) -> Vec<(ChannelId, Vec<u8>, bool)> {
        let mut out = Vec::new();
        self.events.retain(|e| match e {
            ChannelEvent::Message { id, data, binary } => {
                out.push((*id, data.clone(), *binary));
                false
            }
            _ => true,
        });
        out
    }

    pub fn has(&self, f: impl Fn(&ChannelEvent) -> bool) -> bool {
        self.events.iter().any(f)
    }
}

struct InFlight {
    at: Instant,
    seq: u64,
    to_server: bool,
    bytes: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

pub struct Pair {
    pub t0: Instant,
    pub now: Instant,
    pub client: Side,
    pub server: Side,
    queue: BinaryHeap<Reverse<InFlight>>,
    rng: SmallRng,
    seq: u64,
    pub steps: u64,
    /// Keep a copy of every packet sent in `wire` (from the client?, bytes).
    pub record_wire: bool,
    pub wire: Vec<(bool, Vec<u8>)>,
    /// Hand packets in owned (`handle_packet`) rather than borrowed.
    pub owned_input: bool,
}

pub fn addrs() -> (FiveTuple, FiveTuple) {
    let a = "192.0.2.1:50000".parse().unwrap();
    let b = "192.0.2.2:50001".parse().unwrap();
    (
        FiveTuple::new(Transport::Udp, a, b),
        FiveTuple::new(Transport::Udp, b, a),
    )
}

impl Pair {
    pub fn new(seed: u64) -> Pair {
        Pair::with_configs(
            SctpConfig::new(SctpRole::Client).with_rng_seed(seed),
            SctpConfig::new(SctpRole::Server).with_rng_seed(seed + 1),
            seed,
        )
    }

    pub fn with_configs(client: SctpConfig, server: SctpConfig, seed: u64) -> Pair {
        let (ca, sa) = addrs();
        let t0 = Instant::now();
        let side = |m| Side {
            m,
            events: Vec::new(),
            link: Link::default(),
            packets_sent: 0,
            reading: true,
        };
        Pair {
            t0,
            now: t0,
            client: side(SctpAssociation::new(client, ca)),
            server: side(SctpAssociation::new(server, sa)),
            queue: BinaryHeap::new(),
            record_wire: false,
            wire: Vec::new(),
            owned_input: false,
            rng: SmallRng::seed_from_u64(seed),
            seq: 0,
            steps: 0,
        }
    }

    /// Both sides' first `handle_timeout` (the client sends INIT).
    pub fn start(&mut self) {
        let now = self.now;
        self.client.m.handle_timeout(now);
        self.server.m.handle_timeout(now);
        self.drain();
    }

    pub fn side(&mut self, client: bool) -> &mut Side {
        if client {
            &mut self.client
        } else {
            &mut self.server
        }
    }

    /// Move every output: transmits onto the link, events into `events`.
    pub fn drain(&mut self) {
        for from_client in [true, false] {
            let now = self.now;
            let mut sent = Vec::new();
            let side = self.side(from_client);
            while let Some(o) = side.m.poll_output() {
                match o {
                    SctpOutput::Transmit(t) => sent.push(t.contents),
                    SctpOutput::Event(e) => {
                        if let (true, ChannelEvent::Message { id, data, .. }) = (side.reading, &e) {
                            side.m.release(now, *id, data.len());
                        }
                        side.events.push(e)
                    }
                    other => panic!("unexpected output {other:?}"),
                }
            }
            let link = self.side(from_client).link;
            self.side(from_client).packets_sent += sent.len() as u64;
            if self.record_wire {
                self.wire
                    .extend(sent.iter().map(|b| (from_client, b.clone())));
            }
            for bytes in sent {
                if link.dead || (link.loss > 0.0 && self.rng.gen_bool(link.loss)) {
                    continue;
                }
                let jitter = if link.jitter.is_zero() {
                    Duration::ZERO
                } else {
                    link.jitter.mul_f64(self.rng.gen::<f64>())
                };
                self.seq += 1;
                self.queue.push(Reverse(InFlight {
                    at: now + link.delay + jitter,
                    seq: self.seq,
                    to_server: from_client,
                    bytes,
                }));
            }
        }
    }

    /// One step: jump to the next arrival or timeout, deliver and fire.
    /// `false` when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        self.drain();
        let next = [
            self.queue.peek().map(|r| r.0.at),
            self.client.m.poll_timeout(),
            self.server.m.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { return false };
        self.now = self.now.max(next);
        self.steps += 1;
        let now = self.now;
        let (ca, sa) = addrs();
        while self.queue.peek().is_some_and(|r| r.0.at <= now) {
            let p = self.queue.pop().unwrap().0;
            if self.owned_input {
                let _ = self.side(!p.to_server).m.handle_packet(now, p.bytes);
                continue;
            }
            if p.to_server {
                let d = p2p_proto::Datagram::new(Transport::Udp, ca.local, sa.local, &p.bytes);
                let _ = self.server.m.handle_input(now, d);
            } else {
                let d = p2p_proto::Datagram::new(Transport::Udp, sa.local, ca.local, &p.bytes);
                let _ = self.client.m.handle_input(now, d);
            }
        }
        for client in [true, false] {
            let side = self.side(client);
            if side.m.poll_timeout().is_some_and(|t| t <= now) {
                side.m.handle_timeout(now);
            }
        }
        self.drain();
        true
    }

    /// Step until `done`, failing after `max` simulated time or `steps`.
    pub fn run_until(
        &mut self,
        max: Duration,
        steps: u64,
        mut done: impl FnMut(&mut Pair) -> bool,
    ) -> Duration {
        let start = self.now;
        for _ in 0..steps {
            if done(self) {
                return self.now - start;
            }
            if self.now - start > max || !self.step() {
                break;
            }
        }
        if done(self) {
            return self.now - start;
        }
        panic!(
            "not done after {:?} simulated, {} steps; client events {:?}, server events {:?}",
            self.now - start,
            self.steps,
            self.client.events,
            self.server.events
        );
    }

    /// Run until both sides saw `Connected`.
    pub fn connect(&mut self) -> Duration {
        self.start();
        self.run_until(Duration::from_secs(5), 1000, |p| {
            p.client.has(|e| *e == ChannelEvent::Connected)
                && p.server.has(|e| *e == ChannelEvent::Connected)
        })
    }

    /// Run for `d` of simulated time (or until nothing is left to do).
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..1_000_000 {
            let next = [
                self.queue.peek().map(|r| r.0.at),
                self.client.m.poll_timeout(),
                self.server.m.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(t) if t <= end => {
                    self.step();
                }
                _ => break,
            }
        }
        self.now = self.now.max(end);
    }
}
