//! Birthday probing (issue 14): a direct path between a peer whose NAT
//! maps endpoint-independently (the "easy" side) and one whose NAT gives
//! every destination a fresh random port (the "hard" side), which standard
//! ICE relays.
//!
//! The hard side sends one authenticated Binding request from each of up
//! to [`MAX_SOCKETS`] sockets to the easy side's server-reflexive address:
//! each opens a mapping on its NAT, on a port nobody can know, that lets
//! the easy side's address in. The easy side sends authenticated Binding
//! requests to random ports of the hard side's public IP, paced, up to
//! [`MAX_PROBES`]: a probe that lands on one of those ports reaches its
//! socket, which answers; the answer leaves through the same mapping to
//! the easy side's address, which the probe opened on the easy NAT. With
//! 256 open ports among 64 512 and 1 000 probes the odds of a hit are
//! 1 − (1 − 256/64512)^1000 ≈ 98 %.
//!
//! Safety: every probe is an ICE check with the session's credentials
//! (USERNAME `theirs:ours`, MESSAGE-INTEGRITY with the peer's password,
//! FINGERPRINT); only requests that verify are answered, and only answers
//! that verify count. Both sides stop at the first success, at
//! [`BirthdayConfig::deadline`] or when the probes run out. It is meant
//! only between peers that both announce the ICE option token (in
//! p2p-connect, `Negotiation::hard_nat_agreed`).
//!
//! It is a [`Machine`] on its own; p2p-connect's `Session` runs it when
//! ordinary ICE found no direct path, and hands the path it finds to the
//! agent ([`crate::IceAgent::add_discovered_pair`]).

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use p2p_proto::{Datagram, Handled, Machine, Output, Transmit};
use p2p_stun::attr::{Priority, Username, XorMappedAddress};
use p2p_stun::{Key, Message, MessageBuilder, MessageClass, MessageType, Method, TransactionId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The most sockets the hard side opens.
pub const MAX_SOCKETS: usize = 256;
/// The most probes the easy side sends.
pub const MAX_PROBES: u32 = 1000;

/// Which side of the probing this is.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BirthdayRole {
    /// Behind address-and-port-dependent mapping: open a mapping from each
    /// socket (at most [`MAX_SOCKETS`]) toward `easy`, the peer's
    /// server-reflexive address, and answer the probes that land.
    Hard {
        /// Our sockets (bound by the caller).
        sockets: Vec<SocketAddr>,
        /// The easy side's server-reflexive address.
        easy: SocketAddr,
    },
    /// Behind endpoint-independent mapping: probe random ports of
    /// `hard_ip` from `local`.
    Easy {
        /// Our socket (the one whose server-reflexive address the hard side
        /// sends to).
        local: SocketAddr,
        /// The hard side's public IP (from its server-reflexive candidate).
        hard_ip: IpAddr,
    },
}

/// How to probe.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirthdayConfig {
    /// Our side.
    pub role: BirthdayRole,
    /// Our ICE username fragment and password (requests to us are checked
    /// with this password; our answers are signed with it).
    pub local: (String, String),
    /// The peer's (our requests are signed with its password).
    pub remote: (String, String),
    /// Time between two packets the easy side sends (default 5 ms: 200
    /// probes a second); the hard side opens its sockets at one per
    /// millisecond.
    pub interval: Duration,
    /// How many probes the easy side sends at most (default and cap
    /// [`MAX_PROBES`]).
    pub probes: u32,
    /// When to give up, from the start (default 10 s).
    pub deadline: Duration,
    /// The ports the easy side probes (default 1024..=65535).
    pub ports: RangeInclusive<u16>,
    /// The easy side waits this long before its first probe, so that the
    /// hard side's mappings are open (default 300 ms).
    pub easy_delay: Duration,
    /// Seed for ports and transaction ids; `None` for OS entropy.
    pub rng_seed: Option<u64>,
}

impl BirthdayConfig {
    /// Probing as `role` with these credentials and the defaults named on
    /// each field.
    pub fn new(role: BirthdayRole, local: (String, String), remote: (String, String)) -> Self {
        BirthdayConfig {
            role,
            local,
            remote,
            interval: Duration::from_millis(5),
            probes: MAX_PROBES,
            deadline: Duration::from_secs(10),
            ports: 1024..=65535,
            easy_delay: Duration::from_millis(300),
            rng_seed: None,
        }
    }
}

/// What probing found.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BirthdayEvent {
    /// A path: our socket `local` and the peer's `remote` exchanged an
    /// authenticated request and answer (the hard side reports it when it
    /// answers, the easy side when the answer arrives).
    Found {
        /// Our socket.
        local: SocketAddr,
        /// The peer's address as we see it.
        remote: SocketAddr,
        /// Requests we had sent (probes, or opening checks).
        sent: u32,
    },
    /// No path before the deadline or the end of the probes.
    GaveUp {
        /// Requests we sent.
        sent: u32,
    },
}

/// What [`BirthdayProber::poll_output`](Machine::poll_output) hands out.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BirthdayOutput {
    /// A request or an answer to send.
    Transmit(Transmit),
    /// The outcome (once).
    Event(BirthdayEvent),
}

impl Output for BirthdayOutput {
    fn into_transmit(self) -> Result<Transmit, Self> {
        match self {
            BirthdayOutput::Transmit(t) => Ok(t),
            other => Err(other),
        }
    }
}

/// A birthday prober, sans-IO. Starts at its first `handle_timeout`.
#[derive(Debug)]
pub struct BirthdayProber {
    config: BirthdayConfig,
    rng: StdRng,
    local_key: Key,
    remote_key: Key,
    started: Option<Instant>,
    next: Option<Instant>,
    sent: u32,
    probed: HashSet<u16>,
    tids: HashSet<TransactionId>,
    done: bool,
    out: VecDeque<BirthdayOutput>,
}

/// Credentials that cannot make a short-term key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a password cannot be used as a short-term key")]
pub struct BadCredentials;

impl BirthdayProber {
    /// A prober; the hard side's socket list is cut to [`MAX_SOCKETS`] and
    /// the probes to [`MAX_PROBES`].
    pub fn new(mut config: BirthdayConfig) -> Result<Self, BadCredentials> {
        let local_key = Key::short_term(&config.local.1).map_err(|_| BadCredentials)?;
        let remote_key = Key::short_term(&config.remote.1).map_err(|_| BadCredentials)?;
        if let BirthdayRole::Hard { sockets, .. } = &mut config.role {
            sockets.truncate(MAX_SOCKETS);
        }
        config.probes = config.probes.min(MAX_PROBES);
        let rng = match config.rng_seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        Ok(BirthdayProber {
            config,
            rng,
            local_key,
            remote_key,
            started: None,
            next: None,
            sent: 0,
            probed: HashSet::new(),
            tids: HashSet::new(),
            done: false,
            out: VecDeque::new(),
        })
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// Whether it found a path or gave up.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn request(&mut self, from: SocketAddr, to: SocketAddr) {
        let tid = TransactionId::random(&mut self.rng);
        let mut buf = Vec::with_capacity(96);
        let username = format!("{}:{}", self.config.remote.0, self.config.local.0);
        let Ok(mut b) = MessageBuilder::new(
            &mut buf,
            MessageType::new(Method::BINDING, MessageClass::Request),
            tid,
        ) else {
            return;
        };
        let Ok(u) = Username::new(&username) else {
            return;
        };
        if b.add(&u).is_err()
            || b.add(&Priority(0x6e00_01ff)).is_err()
            || b.add_message_integrity(&self.remote_key).is_err()
            || b.add_fingerprint().is_err()
        {
            return;
        }
        b.finish();
        self.tids.insert(tid);
        self.sent += 1;
        self.out
            .push_back(BirthdayOutput::Transmit(Transmit::udp(from, to, buf)));
    }

    fn answer(&mut self, d: &Datagram<'_>, tid: TransactionId) {
        let mut buf = Vec::with_capacity(64);
        let Ok(mut b) = MessageBuilder::new(
            &mut buf,
            MessageType::new(Method::BINDING, MessageClass::Success),
            tid,
        ) else {
            return;
        };
        if b.add(&XorMappedAddress(d.source)).is_err()
            || b.add_message_integrity(&self.local_key).is_err()
            || b.add_fingerprint().is_err()
        {
            return;
        }
        b.finish();
        self.out.push_back(BirthdayOutput::Transmit(d.reply(buf)));
    }

    fn finish(&mut self, e: BirthdayEvent) {
        self.done = true;
        self.next = None;
        self.out.push_back(BirthdayOutput::Event(e));
    }

    /// A random port of the range not probed yet.
    fn fresh_port(&mut self) -> Option<u16> {
        let (lo, hi) = (*self.config.ports.start(), *self.config.ports.end());
        if lo > hi || self.probed.len() > usize::from(hi - lo) {
            return None;
        }
        for _ in 0..64 {
            let p = self.rng.gen_range(lo..=hi);
            if self.probed.insert(p) {
                return Some(p);
            }
        }
        None
    }
}

impl Machine for BirthdayProber {
    type Output = BirthdayOutput;

    /// Takes STUN Binding messages to our sockets: on the hard side,
    /// requests that verify with our password are answered and are the
    /// success; on the easy side, answers to our own probes that verify
    /// with the peer's password are the success (everything else to the
    /// easy side's socket is [`Handled::NotMine`]: it is shared with the
    /// ICE agent). Nothing unauthenticated is ever answered.
    fn handle_input(&mut self, _now: Instant, d: Datagram<'_>) -> Handled {
        let hard = matches!(self.config.role, BirthdayRole::Hard { .. });
        let ours = match &self.config.role {
            BirthdayRole::Hard { sockets, .. } => sockets.contains(&d.destination),
            BirthdayRole::Easy { local, .. } => *local == d.destination,
        };
        let Ok(msg) = Message::decode(d.contents) else {
            return Handled::NotMine;
        };
        if !ours || msg.typ().method != Method::BINDING {
            return Handled::NotMine;
        }
        // The easy side probes from a socket others use too (the ICE
        // agent's host candidate): only the answers to its own probes are
        // its; the rest (the peer's checks, other transactions) are not.
        if !hard
            && (msg.typ().class == MessageClass::Request
                || !self.tids.contains(&msg.transaction_id()))
        {
            return Handled::NotMine;
        }
        if self.done {
            return Handled::Taken;
        }
        match msg.typ().class {
            MessageClass::Request => {
                let expected = format!("{}:{}", self.config.local.0, self.config.remote.0);
                let user_ok =
                    matches!(msg.get::<Username>(), Ok(Some(u)) if u.as_str() == expected);
                if !user_ok || msg.verify_integrity(&self.local_key).is_err() {
                    return Handled::Taken;
                }
                self.answer(&d, msg.transaction_id());
                if matches!(self.config.role, BirthdayRole::Hard { .. }) {
                    let sent = self.sent;
                    self.finish(BirthdayEvent::Found {
                        local: d.destination,
                        remote: d.source,
                        sent,
                    });
                }
            }
            MessageClass::Success => {
                if !self.tids.contains(&msg.transaction_id())
                    || msg.verify_integrity(&self.remote_key).is_err()
                {
                    return Handled::Taken;
                }
                let sent = self.sent;
                self.finish(BirthdayEvent::Found {
                    local: d.destination,
                    remote: d.source,
                    sent,
                });
            }
            _ => {}
        }
        Handled::Taken
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.done {
            return;
        }
        let t0 = *self.started.get_or_insert(now);
        if self.next.is_none() && self.sent == 0 {
            // First call: the hard side opens at once, the easy side waits.
            self.next = Some(match self.config.role {
                BirthdayRole::Hard { .. } => now,
                BirthdayRole::Easy { .. } => now + self.config.easy_delay,
            });
        }
        if now >= t0 + self.config.deadline {
            let sent = self.sent;
            self.finish(BirthdayEvent::GaveUp { sent });
            return;
        }
        let Some(due) = self.next else { return };
        if now < due {
            return;
        }
        match self.config.role.clone() {
            BirthdayRole::Hard { sockets, easy } => {
                let i = self.sent as usize;
                if let Some(s) = sockets.get(i) {
                    self.request(*s, easy);
                    // Even one that could not be encoded counts as a slot.
                    self.sent = self.sent.max(i as u32 + 1);
                    self.next = Some(now + Duration::from_millis(1));
                } else {
                    // All open: wait for a probe until the deadline.
                    self.next = Some(t0 + self.config.deadline);
                }
            }
            BirthdayRole::Easy { local, hard_ip } => {
                if self.sent >= self.config.probes {
                    self.next = Some(t0 + self.config.deadline);
                    return;
                }
                match self.fresh_port() {
                    Some(p) => {
                        self.request(local, SocketAddr::new(hard_ip, p));
                        self.next = Some(now + self.config.interval);
                    }
                    None => self.next = Some(t0 + self.config.deadline),
                }
            }
        }
    }

    fn poll_output(&mut self) -> Option<BirthdayOutput> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }
}
