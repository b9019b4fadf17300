//! The node trait, and the packet types that cross the virtual network
//! (the stack's own, from `p2p-proto`).

use std::any::Any;
use std::time::Instant;

pub use p2p_proto::{Datagram, Transmit, Transport};
use p2p_proto::{Machine, Output};

/// How a packet of `transport` crosses NATs and firewalls: UDP, or a
/// message on a TCP connection (TLS is TCP on the wire).
///
/// The simulator moves datagrams, not byte streams: a `Tcp` or `Tls`
/// datagram stands for one framed message on a TCP connection (a STUN
/// message or a ChannelData frame on TURN-over-TCP, say). Such datagrams are
/// never lost, duplicated or reordered by a link, and they pass a firewall
/// that blocks UDP.
pub(crate) fn wire(transport: Transport) -> Transport {
    if transport.is_reliable() {
        Transport::Tcp
    } else {
        Transport::Udp
    }
}

/// A participant in the simulation: a sans-IO machine behind
/// [`MachineNode`], or a small test node.
///
/// Drive contract, as the [`Sim`](crate::Sim) calls it:
/// 1. `poll_transmit(now)` is drained until it returns `None`, at the start of
///    every step, for every host in the order the hosts were added.
/// 2. `poll_timeout()` is asked for the next deadline; the clock jumps to the
///    earliest deadline or packet arrival of the whole network.
/// 3. `handle_input(now, dgram)` is called for each datagram due at `now`, then
///    `handle_timeout(now)` for each node whose deadline is `<= now`.
///
/// A node whose `poll_timeout` keeps returning a past instant after
/// `handle_timeout` livelocks the simulation at one instant;
/// [`Sim::run_until`](crate::Sim::run_until) bounds that with `max_steps`.
pub trait Node {
    /// A datagram arrived on one of the host's addresses.
    fn handle_input(&mut self, now: Instant, dgram: Datagram<'_>);
    /// The deadline returned by [`Node::poll_timeout`] has come.
    fn handle_timeout(&mut self, now: Instant);
    /// Next datagram to send, if any.
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit>;
    /// When [`Node::handle_timeout`] should next be called, if ever.
    fn poll_timeout(&mut self) -> Option<Instant>;
}

/// Any machine of the stack ([`p2p_proto::Machine`]) as a node: its
/// transmits go on the network, its other outputs are kept, in order, for
/// the test to read ([`MachineNode::outputs`]). The machine is started by
/// the simulation's first step, which calls `handle_timeout(now)`.
#[derive(Debug)]
pub struct MachineNode<M: Machine> {
    machine: M,
    outputs: Vec<M::Output>,
    started: bool,
}

impl<M: Machine> MachineNode<M> {
    /// Put `machine` on the network.
    pub fn new(machine: M) -> Self {
        MachineNode {
            machine,
            outputs: Vec::new(),
            started: false,
        }
    }

    /// The machine.
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The machine, to give it commands between steps (its outputs are
    /// drained at the next step).
    pub fn machine_mut(&mut self) -> &mut M {
        &mut self.machine
    }

    /// The outputs that were not transmits, in the order the machine gave
    /// them.
    pub fn outputs(&self) -> &[M::Output] {
        &self.outputs
    }

    /// Take the outputs kept so far.
    pub fn take_outputs(&mut self) -> Vec<M::Output> {
        std::mem::take(&mut self.outputs)
    }
}

impl<M: Machine> Node for MachineNode<M> {
    fn handle_input(&mut self, now: Instant, dgram: Datagram<'_>) {
        // What the machine does not take is dropped, as a host with no
        // other reader of that socket would.
        let _ = self.machine.handle_input(now, dgram);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.started = true;
        self.machine.handle_timeout(now);
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if !self.started {
            self.handle_timeout(now);
        }
        while let Some(o) = self.machine.poll_output() {
            match o.into_transmit() {
                Ok(t) => return Some(t),
                Err(o) => self.outputs.push(o),
            }
        }
        None
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.machine.poll_timeout()
    }
}

/// Object-safe view of a node that can also be downcast (`Sim::node::<T>`).
pub(crate) trait AnyNode {
    fn as_node(&mut self) -> &mut dyn Node;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Node + Any> AnyNode for T {
    fn as_node(&mut self) -> &mut dyn Node {
        self
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
