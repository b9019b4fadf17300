//! A two-agent harness with a simulated clock: every transmit is delivered
//! after a fixed latency to the agent owning its destination address (a base
//! of one of its local candidates), unless a drop rule or a one-to-one NAT
//! says otherwise. Signalling (candidates, end-of-candidates) is forwarded
//! instantly when `auto_signal` is on.
#![allow(dead_code, unreachable_pub, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_ice::{Candidate, IceAgent, IceConfig, IceError, IceEvent, IceOutput, IceState};
use p2p_proto::{Datagram, Handled, Machine, Transmit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// A one-to-one NAT in front of one agent: `internal` is seen outside as
/// `external` (endpoint-independent mapping and filtering).
#[derive(Debug, Clone, Copy)]
pub struct OneToOneNat {
    pub internal: SocketAddr,
    pub external: SocketAddr,
}

pub struct Net {
    pub t0: Instant,
    pub now: Instant,
    pub a: IceAgent,
    pub b: IceAgent,
    pub latency: Duration,
    in_flight: Vec<(Instant, u64, Transmit)>,
    seq: u64,
    /// Drop a datagram when this returns true.
    pub drop: Box<dyn FnMut(&Transmit) -> bool>,
    pub nat_a: Option<OneToOneNat>,
    pub a_events: Vec<(Duration, IceEvent)>,
    pub b_events: Vec<(Duration, IceEvent)>,
    /// Non-ICE datagrams each side received.
    pub a_data: Vec<Vec<u8>>,
    pub b_data: Vec<Vec<u8>>,
    /// Forward LocalCandidate / GatheringComplete to the other side.
    pub signal_a_to_b: bool,
    pub signal_b_to_a: bool,
    /// Every transmit each side sent, with its time.
    pub a_sent: Vec<(Duration, Transmit)>,
    pub b_sent: Vec<(Duration, Transmit)>,
}

impl Net {
    /// Two agents with credentials exchanged, no candidates yet.
    pub fn new(config_a: IceConfig, config_b: IceConfig) -> Net {
        let t0 = Instant::now();
        let mut a = IceAgent::new(config_a);
        let mut b = IceAgent::new(config_b);
        exchange_credentials(&mut a, &mut b, t0);
        a.handle_timeout(t0);
        b.handle_timeout(t0);
        Net {
            t0,
            now: t0,
            a,
            b,
            latency: Duration::from_millis(10),
            in_flight: Vec::new(),
            seq: 0,
            drop: Box::new(|_| false),
            nat_a: None,
            a_events: Vec::new(),
            b_events: Vec::new(),
            a_data: Vec::new(),
            b_data: Vec::new(),
            signal_a_to_b: true,
            signal_b_to_a: true,
            a_sent: Vec::new(),
            b_sent: Vec::new(),
        }
    }

    pub fn agent(&mut self, side: Side) -> &mut IceAgent {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn owner(&self, addr: SocketAddr) -> Option<Side> {
        let owns = |ag: &IceAgent| ag.local_candidates().iter().any(|c| c.base() == addr);
        if owns(&self.a) {
            Some(Side::A)
        } else if owns(&self.b) {
            Some(Side::B)
        } else {
            None
        }
    }

    /// Every output of both agents, in the order each made them: transmits
    /// onto the network, events recorded (and signalled to the other side).
    fn drain(&mut self) {
        let (at, now) = (self.elapsed(), self.now);
        while let Some(out) = self.a.poll_output() {
            match out {
                IceOutput::Transmit(mut t) => {
                    self.a_sent.push((at, t.clone()));
                    if let Some(nat) = self.nat_a {
                        if t.source == nat.internal {
                            t.source = nat.external;
                        }
                    }
                    self.push(t);
                }
                IceOutput::Event(e) => {
                    if self.signal_a_to_b {
                        signal(&mut self.b, now, &e);
                    }
                    self.a_events.push((at, e));
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
        while let Some(out) = self.b.poll_output() {
            match out {
                IceOutput::Transmit(t) => {
                    self.b_sent.push((at, t.clone()));
                    self.push(t);
                }
                IceOutput::Event(e) => {
                    if self.signal_b_to_a {
                        signal(&mut self.a, now, &e);
                    }
                    self.b_events.push((at, e));
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
    }

    /// `side` sends application data on its selected pair; the transmit
    /// goes onto the network and is returned.
    pub fn send(&mut self, side: Side, data: &[u8]) -> Result<Transmit, IceError> {
        let now = self.now;
        self.agent(side).send(now, data.to_vec())?;
        self.drain();
        let sent = match side {
            Side::A => &self.a_sent,
            Side::B => &self.b_sent,
        };
        Ok(sent.last().expect("the data went out").1.clone())
    }

    /// Queue a datagram (e.g. application data from `send`).
    pub fn push(&mut self, t: Transmit) {
        if (self.drop)(&t) {
            return;
        }
        self.seq += 1;
        self.in_flight.push((self.now + self.latency, self.seq, t));
    }

    /// One step: drain, jump to the next event, deliver, fire timers.
    /// False when nothing is left to do.
    pub fn step(&mut self) -> bool {
        self.drain();
        let next = self
            .in_flight
            .iter()
            .map(|(at, _, _)| *at)
            .chain(self.a.poll_timeout())
            .chain(self.b.poll_timeout())
            .min();
        let Some(next) = next else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        self.in_flight.sort_by_key(|(at, seq, _)| (*at, *seq));
        while self.in_flight.first().is_some_and(|(at, _, _)| *at <= now) {
            let (_, _, mut t) = self.in_flight.remove(0);
            if let Some(nat) = self.nat_a {
                if t.destination == nat.external {
                    t.destination = nat.internal;
                }
            }
            let Some(side) = self.owner(t.destination) else {
                continue;
            };
            let d = Datagram::udp(t.source, t.destination, &t.contents);
            let input = self.agent(side).handle_input(now, d);
            if input == Handled::NotMine {
                match side {
                    Side::A => self.a_data.push(t.contents.clone()),
                    Side::B => self.b_data.push(t.contents.clone()),
                }
            }
            self.drain();
        }
        for side in [Side::A, Side::B] {
            if self.agent(side).poll_timeout().is_some_and(|t| t <= now) {
                self.agent(side).handle_timeout(now);
            }
        }
        true
    }

    /// Step until `pred` holds; Err with the elapsed time and the check
    /// lists when `max` of simulated time (or 100 000 steps) passes.
    pub fn run_until(
        &mut self,
        mut pred: impl FnMut(&Net) -> bool,
        max: Duration,
    ) -> Result<Duration, String> {
        let start = self.now;
        for _ in 0..100_000 {
            self.drain();
            if pred(self) {
                return Ok(self.now - start);
            }
            if self.now - start > max || !self.step() {
                break;
            }
        }
        Err(format!(
            "stalled after {:?}\nA: {}\nB: {}\nA events {:?}\nB events {:?}",
            self.now - start,
            self.a.stats(),
            self.b.stats(),
            self.a_events,
            self.b_events
        ))
    }

    /// Run for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..1_000_000 {
            self.drain();
            let next = self
                .in_flight
                .iter()
                .map(|(at, _, _)| *at)
                .chain(self.a.poll_timeout())
                .chain(self.b.poll_timeout())
                .min();
            if next.is_none_or(|n| n > end) {
                self.now = end;
                return;
            }
            self.step();
        }
        panic!("run_for livelocked");
    }

    pub fn both_connected(&self) -> bool {
        connected(&self.a) && connected(&self.b)
    }

    pub fn events(&self, side: Side) -> &[(Duration, IceEvent)] {
        match side {
            Side::A => &self.a_events,
            Side::B => &self.b_events,
        }
    }
}

pub fn connected(a: &IceAgent) -> bool {
    matches!(a.state(), IceState::Connected | IceState::Completed) && a.selected_pair().is_some()
}

pub fn signal(to: &mut IceAgent, now: Instant, e: &IceEvent) {
    match e {
        IceEvent::LocalCandidate(c) => {
            let _ = to.add_remote_candidate(now, c.clone());
        }
        IceEvent::GatheringComplete => to.end_of_remote_candidates(),
        _ => {}
    }
}

pub fn exchange_credentials(a: &mut IceAgent, b: &mut IceAgent, now: Instant) {
    let (ca, cb) = (a.local_credentials().clone(), b.local_credentials().clone());
    a.set_remote_credentials(now, &cb.ufrag, &cb.pwd).unwrap();
    b.set_remote_credentials(now, &ca.ufrag, &ca.pwd).unwrap();
}

/// Every output queued: the transmits and the events, each in order.
pub fn outputs(a: &mut IceAgent) -> (Vec<Transmit>, Vec<IceEvent>) {
    let (mut transmits, mut events) = (Vec::new(), Vec::new());
    while let Some(out) = a.poll_output() {
        match out {
            IceOutput::Transmit(t) => transmits.push(t),
            IceOutput::Event(e) => events.push(e),
            other => panic!("unexpected output {other:?}"),
        }
    }
    (transmits, events)
}

/// The transmits queued (the events are dropped).
pub fn transmits(a: &mut IceAgent) -> Vec<Transmit> {
    outputs(a).0
}

/// The events queued (the transmits are dropped).
pub fn events(a: &mut IceAgent) -> Vec<IceEvent> {
    outputs(a).1
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn host(s: &str) -> Candidate {
    Candidate::host(addr(s))
}
