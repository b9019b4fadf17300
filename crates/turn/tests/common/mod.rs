//! A tiny in-test router: one TURN server, any number of clients, and fake
//! peers, all driven on a simulated clock with no latency.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use p2p_stun::attr::{ErrorCode, Nonce, Realm, Username};
use p2p_stun::{Key, Message, MessageBuilder, MessageClass, MessageType, Method, TransactionId};
use p2p_turn::*;

pub type Server = TurnServer<Box<dyn CredentialStore>>;

pub const REALM: &str = "example.org";
pub const WALL0: u64 = 1_700_000_000;

pub fn listen() -> SocketAddr {
    "203.0.113.1:3478".parse().unwrap()
}

pub fn peer() -> SocketAddr {
    "198.51.100.7:9000".parse().unwrap()
}

pub fn users() -> StaticUsers {
    StaticUsers::new()
        .with_user("alice", "wonderland")
        .with_user("bob", "builder")
}

/// The server's settings: relayed addresses on 203.0.113.1, ports
/// 50000-50999.
pub fn server_config() -> ServerConfig {
    let mut c = ServerConfig::new(REALM);
    c.rng_seed = Some(7);
    c.relayed_ips = vec!["203.0.113.1".parse().unwrap()];
    c.relayed_ports = 50000..=50999;
    c
}

/// A packet a peer received from the server.
#[derive(Debug, Clone)]
pub struct PeerPacket {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

pub struct Net {
    pub t0: Instant,
    pub now: Instant,
    pub server: Server,
    pub clients: Vec<TurnClient>,
    pub client_events: Vec<Vec<ClientEvent>>,
    /// Every datagram each client sent, in order.
    pub client_out: Vec<Vec<Vec<u8>>>,
    pub server_events: Vec<ServerEvent>,
    /// Every datagram the server sent to a client address.
    pub server_out: Vec<Transmit>,
    pub peer_inbox: Vec<PeerPacket>,
    pub locals: Vec<SocketAddr>,
    /// Other local addresses of clients (RFC 6062 data connections).
    pub extra_locals: Vec<(SocketAddr, usize)>,
    /// The relayed sockets "bound" for the server (answered at once, like a
    /// driver that binds in the same drain), and the held ones.
    pub bound: BTreeSet<SocketAddr>,
    /// Addresses whose bind the "OS" refuses (another program holds them).
    pub refuse_binds: BTreeSet<SocketAddr>,
    /// Leave bind requests unanswered (in `deferred`), as a driver that
    /// answers later.
    pub defer_binds: bool,
    pub deferred: Vec<SocketAddr>,
    /// Every socket request the server made, in order.
    pub socket_requests: Vec<SocketRequest>,
    /// The RFC 6062 requests not yet taken by [`Net::tcp_requests`].
    pub tcp_inbox: Vec<SocketRequest>,
    /// Every route update, in order.
    pub routes: Vec<RouteUpdate>,
}

impl Net {
    pub fn new(config: ServerConfig, creds: impl CredentialStore + 'static) -> Net {
        let t0 = Instant::now();
        let wall0 = UNIX_EPOCH + Duration::from_secs(WALL0);
        Net {
            t0,
            now: t0,
            server: TurnServer::new(config, Box::new(creds), (t0, wall0)),
            clients: Vec::new(),
            client_events: Vec::new(),
            client_out: Vec::new(),
            server_events: Vec::new(),
            server_out: Vec::new(),
            peer_inbox: Vec::new(),
            locals: Vec::new(),
            extra_locals: Vec::new(),
            bound: BTreeSet::new(),
            refuse_binds: BTreeSet::new(),
            defer_binds: false,
            deferred: Vec::new(),
            socket_requests: Vec::new(),
            tcp_inbox: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// Start client `i`: its first `handle_timeout` sends the Allocate.
    pub fn start(&mut self, i: usize) {
        let now = self.now;
        self.clients[i].handle_timeout(now);
    }

    /// The RFC 6062 socket requests (ConnectTcp, SpliceTcp, CloseTcp) made
    /// since the last call, after moving every packet.
    pub fn tcp_requests(&mut self) -> Vec<SocketRequest> {
        self.step();
        std::mem::take(&mut self.tcp_inbox)
    }

    /// Answer the deferred bind requests (bound unless in `refuse_binds`).
    pub fn answer_deferred(&mut self) {
        for a in std::mem::take(&mut self.deferred) {
            let ok = !self.refuse_binds.contains(&a);
            if ok {
                self.bound.insert(a);
            }
            let now = self.now;
            self.server.bind_result(now, a, ok);
        }
        self.step();
    }

    /// The server's next transmit, acting on its other outputs on the way
    /// (nothing is delivered).
    pub fn next_server_transmit(&mut self) -> Option<Transmit> {
        while let Some(o) = self.server.poll_output() {
            if let Some(t) = self.server_output(o) {
                return Some(t);
            }
        }
        None
    }

    /// Client `i`'s next transmit, recording its events on the way
    /// (nothing is delivered).
    pub fn next_client_transmit(&mut self, i: usize) -> Option<Transmit> {
        while let Some(o) = self.clients[i].poll_output() {
            match o {
                ClientOutput::Transmit(t) => return Some(t),
                ClientOutput::Event(e) => self.client_events[i].push(e),
                other => panic!("unknown output {other:?}"),
            }
        }
        None
    }

    /// Act on one server output as a driver would (sockets bind at once
    /// unless listed in `refuse_binds`).
    fn server_output(&mut self, o: ServerOutput) -> Option<Transmit> {
        match o {
            ServerOutput::Transmit(t) => return Some(t),
            ServerOutput::Event(e) => self.server_events.push(e),
            ServerOutput::Route(r) => self.routes.push(r),
            ServerOutput::Socket(r) => {
                self.socket_requests.push(r.clone());
                match r {
                    SocketRequest::BindUdp { relayed: a }
                    | SocketRequest::ReserveUdp { reserved: a }
                    | SocketRequest::ListenTcp { relayed: a } => {
                        if self.defer_binds {
                            self.deferred.push(a);
                            return None;
                        }
                        let ok = !self.refuse_binds.contains(&a);
                        if ok {
                            self.bound.insert(a);
                        }
                        let now = self.now;
                        self.server.bind_result(now, a, ok);
                    }
                    SocketRequest::Release { relayed } => {
                        assert!(
                            self.bound.remove(&relayed),
                            "{relayed} released but not bound"
                        );
                    }
                    other => self.tcp_inbox.push(other),
                }
            }
            other => panic!("unknown output {other:?}"),
        }
        None
    }

    pub fn wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(WALL0) + (self.now - self.t0)
    }

    /// A client config for client number `i` (address 192.0.2.(10+i):5000).
    pub fn client_config(&self, i: usize, user: &str, password: &str) -> ClientConfig {
        let local: SocketAddr = format!("192.0.2.{}:5000", 10 + i).parse().unwrap();
        let mut c = ClientConfig::new(local, listen(), user, password);
        c.rng_seed = Some(100 + i as u64);
        c
    }

    /// Whether `addr` belongs to client `i`.
    fn owned_by(&self, i: usize, addr: SocketAddr) -> bool {
        self.locals[i] == addr || self.extra_locals.contains(&(addr, i))
    }

    pub fn add_client(&mut self, config: ClientConfig) -> usize {
        self.locals.push(config.local);
        self.clients.push(TurnClient::new(config));
        self.client_events.push(Vec::new());
        self.client_out.push(Vec::new());
        self.clients.len() - 1
    }

    /// Add a client and allocate; returns its index.
    pub fn allocated_client(&mut self, config: ClientConfig) -> usize {
        let i = self.add_client(config);
        self.start(i);
        self.step();
        assert!(
            self.relayed(i).is_some(),
            "client {i} not allocated: {:?}",
            self.client_events[i]
        );
        i
    }

    pub fn relayed(&self, i: usize) -> Option<SocketAddr> {
        self.client_events[i].iter().find_map(|e| match e {
            ClientEvent::Allocated { relayed, .. } => relayed.first().copied(),
            _ => None,
        })
    }

    pub fn failure(&self, i: usize) -> Option<Option<u16>> {
        self.client_events[i].iter().find_map(|e| match e {
            ClientEvent::AllocationFailed { code, .. } => Some(*code),
            _ => None,
        })
    }

    pub fn data_events(&self, i: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        self.client_events[i]
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Data { peer, data } => Some((*peer, data.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn deliver_to_server(&mut self, t: &Transmit) {
        let _ = self.server.handle_input(self.now, t.as_datagram());
    }

    /// Move packets until nobody has anything to send (bounded).
    pub fn step(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            for i in 0..self.clients.len() {
                while let Some(o) = self.clients[i].poll_output() {
                    moved = true;
                    match o {
                        ClientOutput::Transmit(t) => {
                            self.client_out[i].push(t.contents.clone());
                            assert_eq!(t.destination, listen());
                            self.deliver_to_server(&t);
                        }
                        ClientOutput::Event(e) => self.client_events[i].push(e),
                        other => panic!("unknown output {other:?}"),
                    }
                }
            }
            while let Some(o) = self.server.poll_output() {
                moved = true;
                let Some(t) = self.server_output(o) else {
                    continue;
                };
                let targets: Vec<usize> = (0..self.clients.len())
                    .filter(|&i| self.owned_by(i, t.destination))
                    .collect();
                if targets.is_empty() && t.source != listen() {
                    self.peer_inbox.push(PeerPacket {
                        from: t.source,
                        to: t.destination,
                        bytes: t.contents.clone(),
                    });
                } else {
                    self.server_out.push(t.clone());
                }
                for i in targets {
                    let now = self.now;
                    let _ = self.clients[i].handle_input(now, t.as_datagram());
                }
                self.server.recycle(t.contents);
            }
            if !moved {
                return;
            }
        }
        panic!("network did not settle in 1000 rounds");
    }

    /// Run timers and deliveries until `now + d` (bounded).
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..100_000 {
            let next = self
                .clients
                .iter()
                .filter_map(|c| c.poll_timeout())
                .chain(self.server.poll_timeout())
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for c in &mut self.clients {
                        if c.poll_timeout().is_some_and(|t| t <= now) {
                            c.handle_timeout(now);
                        }
                    }
                    if self.server.poll_timeout().is_some_and(|t| t <= now) {
                        self.server.handle_timeout(now);
                    }
                    self.step();
                }
                _ => {
                    self.now = end;
                    self.step();
                    return;
                }
            }
        }
        panic!("timers did not settle");
    }

    /// A peer sends `bytes` from `from` to a relayed address.
    pub fn peer_send(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let _ = self
            .server
            .handle_input(self.now, Datagram::udp(from, to, bytes));
        self.step();
    }

    /// Feed raw bytes from `from` to the listening address; return what the
    /// server answered to `from` (if anything).
    pub fn raw(&mut self, from: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
        self.raw_over(Transport::Udp, from, bytes)
    }

    /// [`Net::raw`] over `transport` (one framed message on a stream).
    pub fn raw_over(
        &mut self,
        transport: Transport,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Option<Vec<u8>> {
        let before = self.server_out.len();
        let _ = self
            .server
            .handle_input(self.now, Datagram::new(transport, from, listen(), bytes));
        self.step();
        self.server_out[before..]
            .iter()
            .rev()
            .find(|t| t.destination == from && t.transport == transport)
            .map(|t| t.contents.clone())
    }

    /// Do the 401 dance by hand for a request from `from` with `user`'s
    /// credentials (MD5, MESSAGE-INTEGRITY, no PASSWORD-ALGORITHMS); return
    /// the final response.
    pub fn signed(
        &mut self,
        from: SocketAddr,
        method: Method,
        user: &str,
        password: &str,
        attrs: impl Fn(&mut MessageBuilder<&mut Vec<u8>>),
    ) -> Vec<u8> {
        self.signed_over(Transport::Udp, from, method, user, password, attrs)
            .expect("a response")
    }

    /// [`Net::signed`] over `transport`; `None` when the signed request is
    /// not answered (yet).
    pub fn signed_over(
        &mut self,
        transport: Transport,
        from: SocketAddr,
        method: Method,
        user: &str,
        password: &str,
        attrs: impl Fn(&mut MessageBuilder<&mut Vec<u8>>),
    ) -> Option<Vec<u8>> {
        let mut req = Vec::new();
        let mut b = MessageBuilder::new(
            &mut req,
            MessageType::new(method, MessageClass::Request),
            TransactionId::new([1; 12]),
        )
        .unwrap();
        attrs(&mut b);
        let challenge = self.raw_over(transport, from, &req).expect("a 401");
        let msg = Message::decode(&challenge).unwrap();
        assert_eq!(msg.get::<ErrorCode>().unwrap().unwrap().code(), 401);
        let nonce = msg.get::<Nonce>().unwrap().unwrap().as_str().to_owned();
        let key = Key::long_term(user, REALM, password, PasswordAlgorithm::Md5).unwrap();
        let mut req = Vec::new();
        let mut b = MessageBuilder::new(
            &mut req,
            MessageType::new(method, MessageClass::Request),
            TransactionId::new([2; 12]),
        )
        .unwrap();
        attrs(&mut b);
        b.add(&Username::new(user).unwrap()).unwrap();
        b.add(&Realm::new(REALM).unwrap()).unwrap();
        b.add(&Nonce::new(&nonce).unwrap()).unwrap();
        b.add_message_integrity(&key).unwrap();
        self.raw_over(transport, from, &req)
    }
}

/// The error code of a response, or `None` for a success.
pub fn code_of(resp: &[u8]) -> Option<u16> {
    let m = Message::decode(resp).expect("a STUN response");
    match m.typ().class {
        MessageClass::Error => Some(m.get::<ErrorCode>().unwrap().unwrap().code()),
        _ => None,
    }
}

/// A [`TurnServer`] on the virtual network (`p2p-netsim`): it relays from
/// its host's IP, and the sockets it asks for bind at once (the virtual
/// network needs none), as a driver that answers in the same drain would.
pub struct ServerNode<C: CredentialStore> {
    pub server: TurnServer<C>,
    /// Relayed sockets "bound" now.
    pub bound: BTreeSet<SocketAddr>,
    /// Events, in order.
    pub events: Vec<ServerEvent>,
}

impl<C: CredentialStore> ServerNode<C> {
    pub fn new(server: TurnServer<C>) -> Self {
        ServerNode {
            server,
            bound: BTreeSet::new(),
            events: Vec::new(),
        }
    }
}

impl<C: CredentialStore + 'static> p2p_netsim::Node for ServerNode<C> {
    fn handle_input(&mut self, now: Instant, d: Datagram<'_>) {
        let _ = self.server.handle_input(now, d);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.server.handle_timeout(now);
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        while let Some(o) = self.server.poll_output() {
            match o {
                ServerOutput::Transmit(t) => return Some(t),
                ServerOutput::Socket(SocketRequest::BindUdp { relayed: a })
                | ServerOutput::Socket(SocketRequest::ReserveUdp { reserved: a })
                | ServerOutput::Socket(SocketRequest::ListenTcp { relayed: a }) => {
                    self.bound.insert(a);
                    self.server.bind_result(now, a, true);
                }
                ServerOutput::Socket(SocketRequest::Release { relayed }) => {
                    self.bound.remove(&relayed);
                }
                ServerOutput::Event(e) => self.events.push(e),
                _ => {}
            }
        }
        None
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        self.server.poll_timeout()
    }
}
