//! The client behind an RFC 4787 NAT on the virtual network (`p2p-netsim`),
//! relaying through the server to a public peer that echoes what it sees.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use p2p_netsim::{Behaviour, EchoReflector, NatConfig, Node, Realm, Sim};
use p2p_turn::*;

fn to_transport(p: p2p_netsim::Transport) -> Transport {
    match p {
        p2p_netsim::Transport::Udp => Transport::Udp,
        _ => Transport::Tcp,
    }
}

fn to_netsim(t: Transmit) -> p2p_netsim::Transmit {
    let transport = match t.transport {
        Transport::Udp => p2p_netsim::Transport::Udp,
        _ => p2p_netsim::Transport::Tcp,
    };
    p2p_netsim::Transmit::new(transport, t.source, t.destination, t.contents)
}

struct ServerNode(TurnServer<StaticUsers, MemoryRelayAllocator>);

impl Node for ServerNode {
    fn handle_input(&mut self, now: Instant, d: p2p_netsim::Datagram<'_>) {
        self.0.handle_input(
            now,
            Datagram {
                transport: to_transport(d.transport),
                local: d.destination,
                remote: d.source,
                bytes: d.contents,
            },
        );
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.0.handle_timeout(now);
    }
    fn poll_transmit(&mut self, _: Instant) -> Option<p2p_netsim::Transmit> {
        self.0.poll_transmit().map(to_netsim)
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        self.0.poll_timeout()
    }
}

/// A client that asks for a permission once allocated and pings the peer
/// once the permission is there.
struct ClientNode {
    client: TurnClient,
    peer: SocketAddr,
    events: Vec<ClientEvent>,
}

impl ClientNode {
    fn react(&mut self, now: Instant) {
        while let Some(e) = self.client.poll_event() {
            match &e {
                ClientEvent::Allocated { .. } => self
                    .client
                    .create_permission(now, &[self.peer.ip()])
                    .unwrap(),
                ClientEvent::PermissionCreated { .. } => {
                    self.client.send_to(now, self.peer, b"ping").unwrap()
                }
                _ => {}
            }
            self.events.push(e);
        }
    }
}

impl Node for ClientNode {
    fn handle_input(&mut self, now: Instant, d: p2p_netsim::Datagram<'_>) {
        self.client.handle_input(
            now,
            Datagram {
                transport: to_transport(d.transport),
                local: d.destination,
                remote: d.source,
                bytes: d.contents,
            },
        );
        self.react(now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.client.handle_timeout(now);
        self.react(now);
    }
    fn poll_transmit(&mut self, _: Instant) -> Option<p2p_netsim::Transmit> {
        self.client.poll_transmit().map(to_netsim)
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        self.client.poll_timeout()
    }
}

#[test]
fn client_behind_a_nat_relays_to_a_public_peer() {
    let t0 = Instant::now();
    let mut sim = Sim::new(t0, 42);
    let nat = sim.add_nat(NatConfig::new(
        "198.51.100.1".parse().unwrap(),
        Behaviour::AddressAndPortDependent,
        Behaviour::AddressAndPortDependent,
    ));
    let server_addr: SocketAddr = "203.0.113.1:3478".parse().unwrap();
    let peer: SocketAddr = "203.0.113.50:7".parse().unwrap();
    let server = TurnServer::new(
        ServerConfig {
            rng_seed: Some(1),
            ..ServerConfig::new("example.org")
        },
        StaticUsers::new().with_user("alice", "wonderland"),
        MemoryRelayAllocator::new(["203.0.113.1".parse().unwrap()], 50000..=50099),
        (t0, SystemTime::UNIX_EPOCH),
    );
    let server = sim.add_host(
        ["203.0.113.1".parse().unwrap()],
        Realm::Public,
        ServerNode(server),
    );
    sim.add_host([peer.ip()], Realm::Public, EchoReflector::new());
    let mut client = TurnClient::new(ClientConfig {
        rng_seed: Some(2),
        ..ClientConfig::new(
            "10.0.0.2:5000".parse().unwrap(),
            server_addr,
            "alice",
            "wonderland",
        )
    });
    client.allocate(t0).unwrap();
    let client = sim.add_host(
        ["10.0.0.2".parse().unwrap()],
        Realm::Nat(nat),
        ClientNode {
            client,
            peer,
            events: Vec::new(),
        },
    );
    let got_data = |s: &Sim| {
        s.node::<ClientNode>(client)
            .events
            .iter()
            .any(|e| matches!(e, ClientEvent::Data { .. }))
    };
    sim.run_until(got_data, Duration::from_secs(10), 1000)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let node = sim.node::<ClientNode>(client);
    let (relayed, mapped) = node
        .events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Allocated {
                relayed, mapped, ..
            } => Some((relayed[0], *mapped)),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        mapped.unwrap().ip().to_string(),
        "198.51.100.1",
        "the NAT's address"
    );
    let data = node
        .events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Data { peer: p, data } => Some((*p, data.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(data.0, peer);
    // The echo saw the relayed address, not the client or its NAT.
    assert_eq!(EchoReflector::parse_reply(&data.1), Some(relayed));
    let k = sim.node::<ServerNode>(server).0.counters();
    assert_eq!((k.packets_to_peer, k.packets_to_client), (1, 1));
}
