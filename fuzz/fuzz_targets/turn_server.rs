//! The TURN server state machine under a stream of fuzzer-chosen operations:
//! authenticated requests of every TURN method with arbitrary attributes
//! (signed with a valid key and the current nonce, so they reach the
//! handlers behind authentication), raw datagrams on every address, peer
//! traffic, ChannelData and jumps in time. Nothing may panic, and every
//! datagram the server sends must be a well-formed STUN message or
//! ChannelData.
#![no_main]
use std::net::SocketAddr;
use std::time::{Duration, Instant, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use p2p_fuzz::Input;
use p2p_stun::attr::*;
use p2p_stun::{
    AttrType, ChannelData, Key, Message, MessageBuilder, MessageClass, MessageType, Method,
    TransactionId,
};
use p2p_turn::{
    Datagram, Machine, PeerPolicy, ServerConfig, ServerOutput, SocketRequest, StaticUsers,
    Transport, TurnServer,
};

const REALM: &str = "fuzz.example";
const METHODS: [Method; 7] = [
    Method::ALLOCATE,
    Method::REFRESH,
    Method::CREATE_PERMISSION,
    Method::CHANNEL_BIND,
    Method::CONNECT,
    Method::CONNECTION_BIND,
    Method::SEND,
];
/// Attribute types that TURN handlers read; the fuzzer may also pick any.
const TYPES: [AttrType; 14] = [
    AttrType::XOR_PEER_ADDRESS,
    AttrType::CHANNEL_NUMBER,
    AttrType::LIFETIME,
    AttrType::REQUESTED_TRANSPORT,
    AttrType::DATA,
    AttrType::EVEN_PORT,
    AttrType::RESERVATION_TOKEN,
    AttrType::DONT_FRAGMENT,
    AttrType::REQUESTED_ADDRESS_FAMILY,
    AttrType::ADDITIONAL_ADDRESS_FAMILY,
    AttrType::CONNECTION_ID,
    AttrType::PASSWORD_ALGORITHM,
    AttrType::XOR_RELAYED_ADDRESS,
    AttrType::SOFTWARE,
];

struct World {
    server: TurnServer<StaticUsers>,
    now: Instant,
    /// The "OS" refuses to bind every third port while set.
    flaky: bool,
    /// Relayed sockets "bound" now; each is released exactly once.
    bound: std::collections::BTreeSet<SocketAddr>,
    clients: [SocketAddr; 2],
    peers: [SocketAddr; 2],
    listen: SocketAddr,
    nonce: String,
    relayed: Vec<SocketAddr>,
}

impl World {
    fn drain(&mut self) {
        while let Some(o) = self.server.poll_output() {
            let t = match o {
                ServerOutput::Transmit(t) => t,
                ServerOutput::Socket(
                    SocketRequest::BindUdp { relayed: a }
                    | SocketRequest::ReserveUdp { reserved: a }
                    | SocketRequest::ListenTcp { relayed: a },
                ) => {
                    let ok = !(self.flaky && a.port() % 3 == 0);
                    if ok {
                        assert!(self.bound.insert(a), "{a} bound twice");
                    }
                    let now = self.now;
                    self.server.bind_result(now, a, ok);
                    continue;
                }
                ServerOutput::Socket(SocketRequest::Release { relayed }) => {
                    assert!(self.bound.remove(&relayed), "{relayed} released, not bound");
                    continue;
                }
                _ => continue,
            };
            let c = &t.contents;
            if std::env::var_os("FUZZ_TRACE").is_some() {
                eprintln!(
                    "TX {:?} {} -> {} {:02x?}",
                    t.transport,
                    t.source,
                    t.destination,
                    &c[..c.len().min(24)]
                );
            }
            if let Ok(m) = Message::decode(c) {
                if let Ok(Some(n)) = m.get::<Nonce>() {
                    self.nonce = n.as_str().to_owned();
                }
                if let Ok(Some(XorRelayedAddress(a))) = m.get::<XorRelayedAddress>() {
                    if !self.relayed.contains(&a) && self.relayed.len() < 8 {
                        self.relayed.push(a);
                    }
                }
            } else if t.source == self.listen || t.destination == self.clients[0] {
                // To a client: anything that is not STUN must be ChannelData.
                assert!(
                    ChannelData::decode(c).is_ok(),
                    "server sent neither STUN nor ChannelData to a client: {:?} {:02x?} {:?}",
                    t.transport,
                    c,
                    Message::decode(c).err()
                );
            }
            self.server.recycle(t.contents);
        }
    }

    fn feed(&mut self, transport: Transport, local: SocketAddr, remote: SocketAddr, bytes: &[u8]) {
        if std::env::var_os("FUZZ_TRACE").is_some() {
            eprintln!(
                "RX {transport:?} {remote} -> {local} {:02x?}",
                &bytes[..bytes.len().min(24)]
            );
            if let Ok(m) = Message::decode(bytes) {
                eprintln!("   {m:?}");
            }
        }
        let now = self.now;
        let _ = self
            .server
            .handle_input(now, Datagram::new(transport, remote, local, bytes));
        self.drain();
    }

    fn request(&mut self, input: &mut Input<'_>) -> Option<()> {
        let sel = input.byte()?;
        let method = METHODS[usize::from(sel) % METHODS.len()];
        let class = if method == Method::SEND {
            MessageClass::Indication
        } else {
            MessageClass::Request
        };
        let client = self.clients[usize::from(sel >> 7)];
        let sha256 = sel & 0x40 != 0;
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&[input.byte()?; 12]);
        let mut b = MessageBuilder::new(
            Vec::new(),
            MessageType::new(method, class),
            TransactionId::new(tid),
        )
        .ok()?;
        let n = input.byte()? % 6;
        for _ in 0..n {
            let k = input.byte()?;
            match k % 4 {
                // A well-formed peer address (often a valid one).
                0 => {
                    let p = self.peers[usize::from(k >> 7)];
                    b.add(&XorPeerAddress(p)).ok()?;
                }
                1 => {
                    b.add(&ChannelNumber(0x4000 | u16::from(input.byte()? & 3)))
                        .ok()?;
                }
                2 => {
                    input.raw_attribute(&mut b, &TYPES, false)?;
                }
                _ => {
                    input.raw_attribute(&mut b, &TYPES, true)?;
                }
            }
        }
        if method == Method::ALLOCATE && sel & 0x20 != 0 {
            b.add(&RequestedTransport(PROTO_UDP)).ok()?;
        }
        b.add(&Username::new("alice").ok()?).ok()?;
        b.add(&Realm::new(REALM).ok()?).ok()?;
        b.add(&Nonce::new(&self.nonce).ok()?).ok()?;
        let key = Key::long_term("alice", REALM, "wonderland", PasswordAlgorithm::Md5).ok()?;
        if sha256 {
            b.add_message_integrity_sha256(&key).ok()?;
        } else {
            b.add_message_integrity(&key).ok()?;
        }
        if sel & 0x10 != 0 {
            b.add_fingerprint().ok()?;
        }
        let bytes = b.into_inner();
        let transport = if sel & 0x08 != 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let listen = self.listen;
        self.feed(transport, listen, client, &bytes);
        Some(())
    }

    fn step(&mut self, input: &mut Input<'_>) -> Option<()> {
        let op = input.byte()?;
        match op % 7 {
            0 | 1 => self.request(input)?,
            // Any bytes from a client or a peer to the listening or a relayed address.
            2 => {
                let who = input.byte()?;
                let remote = if who & 1 == 0 {
                    self.clients[usize::from(who >> 1) & 1]
                } else {
                    self.peers[usize::from(who >> 1) & 1]
                };
                let local = match self
                    .relayed
                    .get(usize::from(who >> 2) % (self.relayed.len() + 1))
                {
                    Some(r) if who & 0x40 != 0 => *r,
                    _ => self.listen,
                };
                let transport = if who & 0x80 != 0 {
                    Transport::Tcp
                } else {
                    Transport::Udp
                };
                let len = usize::from(input.byte()?);
                let bytes = input.bytes(len).to_vec();
                self.feed(transport, local, remote, &bytes);
            }
            // ChannelData from a client on one of the channels the requests use.
            3 => {
                let c = input.byte()?;
                let len = usize::from(input.byte()? % 64);
                let mut pkt = vec![0x40, c & 3, 0, len as u8];
                pkt.extend_from_slice(input.bytes(len));
                pkt.resize(4 + len, 0);
                let client = self.clients[usize::from(c >> 7)];
                let transport = if c & 0x40 != 0 {
                    Transport::Tcp
                } else {
                    Transport::Udp
                };
                let listen = self.listen;
                self.feed(transport, listen, client, &pkt);
            }
            // A peer's datagram to a relayed address.
            4 => {
                let w = input.byte()?;
                let Some(r) = self
                    .relayed
                    .get(usize::from(w) % self.relayed.len().max(1))
                    .copied()
                else {
                    return Some(());
                };
                let len = usize::from(input.byte()? % 64);
                let bytes = input.bytes(len).to_vec();
                let peer = self.peers[usize::from(w >> 7)];
                self.feed(Transport::Udp, r, peer, &bytes);
            }
            // The OS starts or stops refusing ports.
            5 => self.flaky = !self.flaky,
            // Time passes: up to about 17 minutes, past every lifetime.
            _ => {
                let secs = u64::from(input.byte()?) * 4;
                self.now += Duration::from_secs(secs);
                if let Some(t) = self.server.poll_timeout() {
                    if t <= self.now {
                        let now = self.now;
                        self.server.handle_timeout(now);
                    }
                }
                self.drain();
            }
        }
        Some(())
    }
}

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut config = ServerConfig::new(REALM);
    config.rng_seed = Some(1);
    config.export_routes = true;
    config.user_quota = Some(3);
    config.total_quota = Some(6);
    config.password_algorithms = vec![PasswordAlgorithm::Md5, PasswordAlgorithm::Sha256];
    // Peers on a documentation range, which the default policy refuses.
    config.peer_policy = PeerPolicy::new().allow("198.51.100.0/24".parse().unwrap());
    config.relayed_ips = vec!["203.0.113.1".parse().unwrap()];
    config.relayed_ports = 50000..=50015;
    let users = StaticUsers::new().with_user("alice", "wonderland");
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut w = World {
        server: TurnServer::new(config, users, (t0, wall)),
        now: t0,
        flaky: false,
        bound: std::collections::BTreeSet::new(),
        clients: [
            "192.0.2.10:5000".parse().unwrap(),
            "192.0.2.11:5000".parse().unwrap(),
        ],
        peers: [
            "198.51.100.7:9000".parse().unwrap(),
            "198.51.100.8:9001".parse().unwrap(),
        ],
        listen: "203.0.113.1:3478".parse().unwrap(),
        nonce: String::from("none-yet"),
        relayed: Vec::new(),
    };
    w.server.handle_timeout(t0);
    // An unauthenticated Allocate: the 401 carries the first nonce.
    let mut b = MessageBuilder::new(
        Vec::new(),
        MessageType::new(Method::ALLOCATE, MessageClass::Request),
        TransactionId::new([9; 12]),
    )
    .unwrap();
    b.add(&RequestedTransport(PROTO_UDP)).unwrap();
    let first = b.into_inner();
    let (listen, client) = (w.listen, w.clients[0]);
    w.feed(Transport::Udp, listen, client, &first);
    let mut input = Input(data);
    for _ in 0..64 {
        if w.step(&mut input).is_none() {
            break;
        }
    }
});
