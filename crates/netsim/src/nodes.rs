//! Small reusable nodes for tests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use crate::node::{Datagram, Node, Transmit};

/// A mini STUN server: answers every datagram, from the address it arrived on,
/// to its source, with that source address as text (`"198.51.100.1:49152"`),
/// over the same protocol. Read a reply with [`EchoReflector::parse_reply`].
///
/// Two reflectors pointed at each other echo forever; point clients at them.
#[derive(Debug, Default)]
pub struct EchoReflector {
    seen: Vec<SocketAddr>,
    outbox: VecDeque<Transmit>,
}

impl EchoReflector {
    /// A reflector with nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Source addresses of every datagram received, in order.
    pub fn seen(&self) -> &[SocketAddr] {
        &self.seen
    }

    /// The address a reflector reply reports, or `None` if `contents` is not
    /// a reply.
    pub fn parse_reply(contents: &[u8]) -> Option<SocketAddr> {
        std::str::from_utf8(contents).ok()?.parse().ok()
    }
}

impl Node for EchoReflector {
    fn handle_input(&mut self, _now: Instant, dgram: Datagram<'_>) {
        self.seen.push(dgram.source);
        self.outbox
            .push_back(dgram.reply(dgram.source.to_string().into_bytes()));
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

/// A datagram a [`ScriptedNode`] received, with its arrival time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Arrival time.
    pub at: Instant,
    /// The datagram, as it arrived (`source` is the sender as the receiver
    /// sees it, `destination` the receiver's address).
    pub datagram: Transmit,
}

/// A node that sends what it is told, when it is told, and records everything
/// it receives. It never answers by itself.
#[derive(Debug, Default)]
pub struct ScriptedNode {
    /// Pending sends, sorted by time (stable for equal times).
    script: VecDeque<(Instant, Transmit)>,
    outbox: VecDeque<Transmit>,
    received: Vec<Received>,
}

impl ScriptedNode {
    /// A node with an empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// Send `transmit` at `at` (or at the next step if `at` has passed).
    /// Sends scheduled for the same instant go out in the order scheduled.
    pub fn send_at(&mut self, at: Instant, transmit: Transmit) {
        let pos = self.script.partition_point(|(t, _)| *t <= at);
        self.script.insert(pos, (at, transmit));
    }

    /// Send `transmit` at the next step.
    pub fn send_now(&mut self, transmit: Transmit) {
        self.outbox.push_back(transmit);
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> &[Received] {
        &self.received
    }

    /// Take everything received so far.
    pub fn take_received(&mut self) -> Vec<Received> {
        std::mem::take(&mut self.received)
    }

    /// Sends still scheduled.
    pub fn pending(&self) -> usize {
        self.script.len() + self.outbox.len()
    }

    fn release_due(&mut self, now: Instant) {
        while self.script.front().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, t)) = self.script.pop_front() {
                self.outbox.push_back(t);
            }
        }
    }
}

impl Node for ScriptedNode {
    fn handle_input(&mut self, now: Instant, dgram: Datagram<'_>) {
        self.received.push(Received {
            at: now,
            datagram: Transmit::new(
                dgram.transport,
                dgram.source,
                dgram.destination,
                dgram.contents.to_vec(),
            ),
        });
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.release_due(now);
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.release_due(now);
        self.outbox.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.script.front().map(|(t, _)| *t)
    }
}
