//! The client: one mapping of one local UDP socket's port on the router,
//! asked for with PCP and, when the router speaks only NAT-PMP, with
//! NAT-PMP; renewed at half its lifetime; deleted on close.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2p_proto::{Datagram, Handled, Machine, Output, Transmit, Transport};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::natpmp::{self, NatPmpResponse};
use crate::pcp::{self, MapRequest, PcpResponse};
use crate::wire::{Response, SERVER_PORT};

/// Which protocol a mapping was made with.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Port Control Protocol, RFC 6887.
    Pcp,
    /// NAT Port Mapping Protocol, RFC 6886.
    NatPmp,
}

/// What a [`PortMapper`] is asked to do.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapConfig {
    /// The router's PCP/NAT-PMP server (the default gateway, port 5351).
    pub gateway: SocketAddr,
    /// The local socket whose port is mapped; requests go out from it, so
    /// that the router sees the address the mapping is for.
    pub local: SocketAddr,
    /// The lifetime asked for (default 2 hours, RFC 6886 §3.3's
    /// recommendation); the mapping is renewed at half of what the router
    /// grants.
    pub lifetime: Duration,
    /// Try PCP first (default true).
    pub pcp: bool,
    /// Try NAT-PMP (after PCP, or alone; default true).
    pub nat_pmp: bool,
    /// The first retransmission timeout (default 250 ms, RFC 6886 §3.1);
    /// it doubles on each retry.
    pub initial_rto: Duration,
    /// Requests sent per protocol before giving up on it (default 3: an
    /// unanswered protocol costs 1.75 s).
    pub max_tries: u32,
    /// How long [`PortMapper::is_settled`] waits for the router's first
    /// answer (default 1 s). A router on the LAN answers in milliseconds,
    /// and by then three PCP requests have gone out (at 0, 250 and 750 ms);
    /// past it the caller may stop waiting (end its gathering: a router
    /// that answers neither protocol would otherwise hold it 3.5 s) while
    /// the mapper goes on asking and reports a mapping granted later as
    /// usual. `Duration::MAX` waits until the mapper is done asking.
    pub settle_timeout: Duration,
    /// Seed for the PCP nonce; `None` for OS entropy.
    pub rng_seed: Option<u64>,
}

impl PortMapConfig {
    /// Map `local`'s port through the router at `gateway` (an IP: port
    /// 5351 is added), with the defaults named on each field.
    pub fn new(gateway: IpAddr, local: SocketAddr) -> Self {
        PortMapConfig {
            gateway: SocketAddr::new(gateway, SERVER_PORT),
            local,
            lifetime: Duration::from_secs(7200),
            pcp: true,
            nat_pmp: true,
            initial_rto: Duration::from_millis(250),
            max_tries: 3,
            settle_timeout: Duration::from_secs(1),
            rng_seed: None,
        }
    }

    /// The same with a seed for the nonce.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }
}

/// A mapping the router granted.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// The router's external address and port: what a peer sends to.
    pub external: SocketAddr,
    /// The local socket it forwards to.
    pub internal: SocketAddr,
    /// How long the router keeps it (the client renews it at half).
    pub lifetime: Duration,
    /// How it was made.
    pub method: Method,
}

/// Why no mapping was made.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PortMapError {
    /// No PCP or NAT-PMP server answered (no router offers mappings).
    #[error("no PCP or NAT-PMP server answered")]
    NoAnswer,
    /// The router refused (a PCP or NAT-PMP result code other than
    /// success).
    #[error("{method:?} refused with result code {code}")]
    Refused {
        /// The protocol that refused.
        method: Method,
        /// Its result code.
        code: u16,
    },
}

/// What the application should know.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortMapEvent {
    /// A mapping was granted, or its external address changed on renewal.
    Mapped(Mapping),
    /// No mapping: the client stops.
    Failed(PortMapError),
    /// The mapping could not be renewed and has expired.
    Lost,
    /// [`PortMapper::close`] is done: the router confirmed the deletion,
    /// or it did not answer in time, or there was nothing to delete.
    Deleted,
}

/// What [`PortMapper::poll_output`](Machine::poll_output) hands out.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMapOutput {
    /// A request to send from [`PortMapConfig::local`].
    Transmit(Transmit),
    /// Something the application should know.
    Event(PortMapEvent),
}

impl Output for PortMapOutput {
    fn into_transmit(self) -> Result<Transmit, Self> {
        match self {
            PortMapOutput::Transmit(t) => Ok(t),
            other => Err(other),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not started (no handle_timeout yet).
    Idle,
    /// Asking (first time or a renewal) with `method`; `tries` sent so far.
    Asking { method: Method, tries: u32 },
    /// Granted; renewal due at `renew_at`.
    Held,
    /// Gave up (nothing to renew, nothing to delete).
    Stopped,
    /// Deleting; `tries` sent so far.
    Deleting { method: Method, tries: u32 },
    /// Done.
    Closed,
}

/// A sans-IO port-mapping client for one local UDP socket.
///
/// It follows the house contract ([`p2p_proto::Machine`]): it starts at its
/// first `handle_timeout` (the first PCP MAP request goes out); feed it
/// what arrives from the gateway (anything else is
/// [`Handled::NotMine`]); drain `poll_output` after every call.
#[derive(Debug)]
pub struct PortMapper {
    config: PortMapConfig,
    nonce: [u8; 12],
    phase: Phase,
    /// When the next request (or give-up) is due.
    next: Option<Instant>,
    /// While the first ask is unanswered: when it counts as settled anyway
    /// ([`PortMapConfig::settle_timeout`]).
    settle_at: Option<Instant>,
    /// The first ask went unanswered for `settle_timeout`.
    waited_out: bool,
    /// NAT-PMP: the external address and the mapped port, as they come.
    natpmp_address: Option<std::net::Ipv4Addr>,
    natpmp_port: Option<(u16, u32)>,
    mapping: Option<Mapping>,
    /// When the current mapping expires.
    expires: Option<Instant>,
    out: VecDeque<PortMapOutput>,
    /// Requests sent, for statistics.
    sent: u64,
}

impl PortMapper {
    /// A client; nothing is sent before its first `handle_timeout`.
    pub fn new(config: PortMapConfig) -> Self {
        let mut rng = match config.rng_seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        PortMapper {
            config,
            nonce,
            phase: Phase::Idle,
            next: None,
            settle_at: None,
            waited_out: false,
            natpmp_address: None,
            natpmp_port: None,
            mapping: None,
            expires: None,
            out: VecDeque::new(),
            sent: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PortMapConfig {
        &self.config
    }

    /// The mapping held, if any.
    pub fn mapping(&self) -> Option<Mapping> {
        self.mapping
    }

    /// Requests sent so far (retransmissions included).
    pub fn requests_sent(&self) -> u64 {
        self.sent
    }

    /// Whether the caller need not wait for it any longer: a mapping is
    /// held, it gave up, or its first ask went unanswered for
    /// [`PortMapConfig::settle_timeout`] (it goes on asking then; a
    /// mapping granted later still comes as [`PortMapEvent::Mapped`]).
    pub fn is_settled(&self) -> bool {
        match self.phase {
            Phase::Idle => false,
            Phase::Asking { .. } => self.mapping.is_some() || self.waited_out,
            _ => true,
        }
    }

    /// Whether [`PortMapEvent::Deleted`] was reported.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Delete the mapping (lifetime 0); [`PortMapEvent::Deleted`] follows
    /// once the router confirms or the tries run out. A request still
    /// unanswered is deleted too (the router may have granted it). Calling
    /// it again does nothing.
    pub fn close(&mut self, now: Instant) {
        self.settle_at = None;
        match self.phase {
            Phase::Deleting { .. } | Phase::Closed => {}
            Phase::Idle | Phase::Stopped => self.closed(),
            Phase::Asking { method, .. } => {
                let method = self.mapping.map_or(method, |m| m.method);
                self.phase = Phase::Deleting { method, tries: 0 };
                self.send_due(now);
            }
            Phase::Held => {
                let method = self.mapping.map_or(Method::Pcp, |m| m.method);
                self.phase = Phase::Deleting { method, tries: 0 };
                self.send_due(now);
            }
        }
    }

    fn closed(&mut self) {
        self.phase = Phase::Closed;
        self.next = None;
        self.settle_at = None;
        self.mapping = None;
        self.event(PortMapEvent::Deleted);
    }

    fn event(&mut self, e: PortMapEvent) {
        self.out.push_back(PortMapOutput::Event(e));
    }

    fn first_method(&self) -> Option<Method> {
        if self.config.pcp {
            Some(Method::Pcp)
        } else if self.config.nat_pmp {
            Some(Method::NatPmp)
        } else {
            None
        }
    }

    fn lifetime_secs(&self) -> u32 {
        u32::try_from(self.config.lifetime.as_secs()).unwrap_or(u32::MAX)
    }

    fn transmit(&mut self, contents: Vec<u8>) {
        self.sent += 1;
        self.out.push_back(PortMapOutput::Transmit(Transmit::new(
            Transport::Udp,
            self.config.local,
            self.config.gateway,
            contents,
        )));
    }

    /// The request of `method`: a mapping (lifetime > 0) or a deletion.
    fn request(&mut self, method: Method, lifetime_secs: u32) {
        let port = self.config.local.port();
        let suggested = self.mapping.map(|m| m.external);
        match method {
            Method::Pcp => {
                let mut r = MapRequest::new(
                    self.config.local.ip(),
                    Transport::Udp,
                    port,
                    lifetime_secs,
                    self.nonce,
                );
                r.suggested_external = suggested;
                self.transmit(r.encode().to_vec());
            }
            Method::NatPmp => {
                if lifetime_secs > 0 && self.natpmp_address.is_none() {
                    self.transmit(natpmp::external_address_request().to_vec());
                }
                if lifetime_secs == 0 || self.natpmp_port.is_none() {
                    let ext = if lifetime_secs == 0 {
                        0
                    } else {
                        suggested.map_or(port, |s| s.port())
                    };
                    self.transmit(
                        natpmp::map_request(Transport::Udp, port, ext, lifetime_secs).to_vec(),
                    );
                }
            }
        }
    }

    /// The retransmission timeout after `tries` requests.
    fn rto(&self, tries: u32) -> Duration {
        self.config.initial_rto * 2u32.saturating_pow(tries.saturating_sub(1).min(10))
    }

    /// Send what is due in the current phase and set the next timer.
    fn send_due(&mut self, now: Instant) {
        match self.phase {
            Phase::Asking { method, tries } => {
                if tries >= self.config.max_tries {
                    self.give_up(now, method);
                    return;
                }
                let lifetime = self.lifetime_secs();
                self.request(method, lifetime);
                let tries = tries + 1;
                self.phase = Phase::Asking { method, tries };
                self.next = Some(now + self.rto(tries));
            }
            Phase::Deleting { method, tries } => {
                if tries >= self.config.max_tries {
                    self.closed();
                    return;
                }
                self.request(method, 0);
                let tries = tries + 1;
                self.phase = Phase::Deleting { method, tries };
                self.next = Some(now + self.rto(tries));
            }
            _ => {}
        }
    }

    /// `method` went unanswered: the next protocol, or the end.
    fn give_up(&mut self, now: Instant, method: Method) {
        if self.mapping.is_some() {
            // A renewal went unanswered: try again at half the time left,
            // or lose the mapping when it expires.
            let expires = self.expires.unwrap_or(now);
            let left = expires.saturating_duration_since(now);
            if left > Duration::from_secs(4) {
                self.phase = Phase::Held;
                self.next = Some(now + left / 2);
            } else {
                self.phase = Phase::Held;
                self.next = Some(expires);
            }
            return;
        }
        if method == Method::Pcp && self.config.nat_pmp {
            self.phase = Phase::Asking {
                method: Method::NatPmp,
                tries: 0,
            };
            self.send_due(now);
            return;
        }
        self.fail(PortMapError::NoAnswer);
    }

    fn fail(&mut self, e: PortMapError) {
        self.phase = Phase::Stopped;
        self.next = None;
        self.settle_at = None;
        self.event(PortMapEvent::Failed(e));
    }

    /// A mapping (new or renewed) was granted.
    fn granted(&mut self, now: Instant, method: Method, external: SocketAddr, lifetime_secs: u32) {
        let lifetime = Duration::from_secs(u64::from(lifetime_secs));
        let m = Mapping {
            external,
            internal: self.config.local,
            lifetime,
            method,
        };
        let changed = self.mapping.map(|old| old.external) != Some(external);
        self.mapping = Some(m);
        self.expires = Some(now + lifetime);
        self.phase = Phase::Held;
        self.settle_at = None;
        // Renew at half the lifetime (at least a second from now).
        self.next = Some(now + (lifetime / 2).max(Duration::from_secs(1)));
        self.natpmp_address = None;
        self.natpmp_port = None;
        if changed {
            self.event(PortMapEvent::Mapped(m));
        }
    }

    fn on_pcp(&mut self, now: Instant, r: PcpResponse) {
        if r.opcode != pcp::OPCODE_MAP {
            return;
        }
        // Only answers to our nonce (a version error may carry none).
        if let Some(m) = r.map {
            if m.nonce != self.nonce || m.internal_port != self.config.local.port() {
                return;
            }
        } else if r.result != pcp::UNSUPP_VERSION {
            return;
        }
        match self.phase {
            Phase::Asking {
                method: Method::Pcp,
                ..
            } => match (r.result, r.map) {
                (0, Some(m)) if r.lifetime_secs > 0 => {
                    self.granted(now, Method::Pcp, m.external, r.lifetime_secs)
                }
                (pcp::UNSUPP_VERSION, _) => self.pcp_unsupported(now),
                (code, _) => self.refused(now, Method::Pcp, u16::from(code)),
            },
            Phase::Deleting {
                method: Method::Pcp,
                ..
            } => self.closed(),
            _ => {}
        }
    }

    /// The router answered PCP with "unsupported version": NAT-PMP, if
    /// allowed.
    fn pcp_unsupported(&mut self, now: Instant) {
        if self.config.nat_pmp {
            self.phase = Phase::Asking {
                method: Method::NatPmp,
                tries: 0,
            };
            self.send_due(now);
        } else {
            self.refused(now, Method::Pcp, u16::from(pcp::UNSUPP_VERSION));
        }
    }

    /// A refusal: the end, unless it refused a renewal (the mapping
    /// stands until it expires).
    fn refused(&mut self, now: Instant, method: Method, code: u16) {
        if self.mapping.is_some() {
            self.phase = Phase::Held;
            self.next = self.expires.or(Some(now));
            return;
        }
        self.fail(PortMapError::Refused { method, code });
    }

    fn on_natpmp(&mut self, now: Instant, r: NatPmpResponse) {
        match (self.phase, r) {
            (
                Phase::Asking {
                    method: Method::Pcp,
                    ..
                },
                NatPmpResponse::Error { result, .. },
            ) if result == natpmp::UNSUPPORTED_VERSION => self.pcp_unsupported(now),
            (
                Phase::Asking {
                    method: Method::NatPmp,
                    ..
                },
                _,
            ) => match r {
                NatPmpResponse::ExternalAddress { address, .. } => {
                    self.natpmp_address = Some(address);
                    self.natpmp_complete(now);
                }
                NatPmpResponse::Mapping {
                    transport: Transport::Udp,
                    internal_port,
                    external_port,
                    lifetime_secs,
                    ..
                } if internal_port == self.config.local.port() && lifetime_secs > 0 => {
                    self.natpmp_port = Some((external_port, lifetime_secs));
                    self.natpmp_complete(now);
                }
                NatPmpResponse::Error { result, .. } => {
                    self.refused(now, Method::NatPmp, result);
                }
                _ => {}
            },
            (
                Phase::Deleting {
                    method: Method::NatPmp,
                    ..
                },
                NatPmpResponse::Error { .. },
            ) => self.closed(),
            (
                Phase::Deleting {
                    method: Method::NatPmp,
                    ..
                },
                NatPmpResponse::Mapping { internal_port, .. },
            ) if internal_port == self.config.local.port() => self.closed(),
            _ => {}
        }
    }

    fn natpmp_complete(&mut self, now: Instant) {
        if let (Some(ip), Some((port, lifetime))) = (self.natpmp_address, self.natpmp_port) {
            self.granted(
                now,
                Method::NatPmp,
                SocketAddr::new(IpAddr::V4(ip), port),
                lifetime,
            );
        }
    }
}

impl Machine for PortMapper {
    type Output = PortMapOutput;

    /// Takes what comes from the gateway's port 5351 to the local socket;
    /// bytes that do not decode are dropped.
    fn handle_input(&mut self, now: Instant, d: Datagram<'_>) -> Handled {
        if d.source != self.config.gateway
            || d.destination != self.config.local
            || d.transport != Transport::Udp
        {
            return Handled::NotMine;
        }
        match Response::decode(d.contents) {
            Ok(Response::Pcp(r)) => self.on_pcp(now, r),
            Ok(Response::NatPmp(r)) => self.on_natpmp(now, r),
            Err(_) => {}
        }
        Handled::Taken
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Idle {
            match self.first_method() {
                Some(method) => {
                    self.phase = Phase::Asking { method, tries: 0 };
                    self.settle_at = now.checked_add(self.config.settle_timeout);
                    self.send_due(now);
                }
                None => self.fail(PortMapError::NoAnswer),
            }
            return;
        }
        if self.settle_at.is_some_and(|at| now >= at) {
            self.settle_at = None;
            self.waited_out = true;
        }
        let Some(due) = self.next else { return };
        if now < due {
            return;
        }
        match self.phase {
            Phase::Held => {
                if self.expires.is_some_and(|e| now >= e) {
                    self.mapping = None;
                    self.expires = None;
                    self.phase = Phase::Stopped;
                    self.next = None;
                    self.event(PortMapEvent::Lost);
                    return;
                }
                // Renew with the method that made it.
                let method = self.mapping.map_or(Method::Pcp, |m| m.method);
                self.phase = Phase::Asking { method, tries: 0 };
                self.send_due(now);
            }
            Phase::Asking { .. } | Phase::Deleting { .. } => self.send_due(now),
            _ => {}
        }
    }

    fn poll_output(&mut self) -> Option<PortMapOutput> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match (self.next, self.settle_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
