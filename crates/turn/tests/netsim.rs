//! The client behind an RFC 4787 NAT on the virtual network (`p2p-netsim`),
//! relaying through the server to a public peer that echoes what it sees.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

mod common;

use common::ServerNode;
use p2p_netsim::{Behaviour, EchoReflector, HostId, NatConfig, Node, Realm, Sim};
use p2p_turn::*;

/// A client that asks for a permission once allocated and pings the peer
/// once the permission is there.
struct ClientNode {
    client: TurnClient,
    peer: SocketAddr,
    events: Vec<ClientEvent>,
}

impl ClientNode {
    fn react(&mut self, now: Instant, e: &ClientEvent) {
        match e {
            ClientEvent::Allocated { .. } => self
                .client
                .create_permission(now, &[self.peer.ip()])
                .unwrap(),
            ClientEvent::PermissionCreated { .. } => {
                self.client.send_to(self.peer, b"ping").unwrap()
            }
            _ => {}
        }
    }
}

impl Node for ClientNode {
    fn handle_input(&mut self, now: Instant, d: Datagram<'_>) {
        let _ = self.client.handle_input(now, d);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.client.handle_timeout(now);
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        // The client starts at the simulation's first step.
        if self.client.state() == ClientState::Idle {
            self.client.handle_timeout(now);
        }
        while let Some(o) = self.client.poll_output() {
            match o {
                ClientOutput::Transmit(t) => return Some(t),
                ClientOutput::Event(e) => {
                    self.react(now, &e);
                    self.events.push(e);
                }
                other => panic!("{other:?}"),
            }
        }
        None
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
    let mut config = ServerConfig::new("example.org");
    config.rng_seed = Some(1);
    config.relayed_ips = vec!["203.0.113.1".parse().unwrap()];
    config.relayed_ports = 50000..=50099;
    let server = TurnServer::new(
        config,
        StaticUsers::new().with_user("alice", "wonderland"),
        (t0, SystemTime::UNIX_EPOCH),
    );
    let server = sim.add_host(
        ["203.0.113.1".parse().unwrap()],
        Realm::Public,
        ServerNode::new(server),
    );
    sim.add_host([peer.ip()], Realm::Public, EchoReflector::new());
    let client = TurnClient::new({
        let mut c = ClientConfig::new(
            "10.0.0.2:5000".parse().unwrap(),
            server_addr,
            "alice",
            "wonderland",
        );
        c.rng_seed = Some(2);
        c
    });
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
    let node = sim.node::<ServerNode<StaticUsers>>(server);
    assert_eq!(node.bound.len(), 1, "one relayed socket");
    let k = node.server.counters();
    assert_eq!((k.packets_to_peer, k.packets_to_client), (1, 1));
}

/// A server of a fleet on the virtual network: relays from `ip`, lets
/// `quota` allocations in, and redirects beyond to `alternates`.
fn fleet_server(t0: Instant, ip: &str, quota: u32, alternates: &[&str]) -> ServerNode<RestSecret> {
    let mut config = ServerConfig::new("example.org");
    config.rng_seed = Some(1);
    config.relayed_ips = vec![ip.parse().unwrap()];
    config.relayed_ports = 50000..=50099;
    config.total_quota = Some(quota);
    let mut server = TurnServer::new(
        config,
        RestSecret::new("fleet-secret"),
        (t0, SystemTime::UNIX_EPOCH + Duration::from_secs(1_000)),
    );
    let alternates: Vec<SocketAddr> = alternates.iter().map(|a| a.parse().unwrap()).collect();
    server.set_alternate_servers(alternates.clone());
    // Here every server serves TLS on its one port too.
    server.set_tls_alternate_servers(alternates);
    ServerNode::new(server)
}

/// Server 1 (full: quota 0) names server 2; both take the same REST
/// credentials. A client of server 1 over `transport` runs until the
/// echo answers through its relay. Returns the simulation, the client and
/// both servers.
fn redirected_over(transport: Transport, seed: u64) -> (Sim, HostId, HostId, HostId) {
    let t0 = Instant::now();
    let mut sim = Sim::new(t0, seed);
    let s1 = sim.add_host(
        ["203.0.113.1".parse().unwrap()],
        Realm::Public,
        fleet_server(t0, "203.0.113.1", 0, &["203.0.113.2:3478"]),
    );
    let s2 = sim.add_host(
        ["203.0.113.2".parse().unwrap()],
        Realm::Public,
        fleet_server(t0, "203.0.113.2", 10, &[]),
    );
    let peer: SocketAddr = "203.0.113.50:7".parse().unwrap();
    sim.add_host([peer.ip()], Realm::Public, EchoReflector::new());
    let user = RestSecret::username(SystemTime::UNIX_EPOCH + Duration::from_secs(5_000), "u");
    let password = RestSecret::new("fleet-secret").password(&user);
    let mut cc = ClientConfig::new(
        "192.0.2.9:5000".parse().unwrap(),
        "203.0.113.1:3478".parse().unwrap(),
        &user,
        &password,
    );
    cc.rng_seed = Some(3);
    cc.transport = transport;
    let client = sim.add_host(
        ["192.0.2.9".parse().unwrap()],
        Realm::Public,
        ClientNode {
            client: TurnClient::new(cc),
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
        .unwrap_or_else(|e| panic!("{transport:?}: {e:?}"));
    (sim, client, s1, s2)
}

/// The client was redirected from server 1 to server 2, allocated there
/// over `transport` and relays through it; server 1 holds nothing.
fn assert_redirected(sim: &Sim, client: HostId, s1: HostId, s2: HostId, transport: Transport) {
    let node = sim.node::<ClientNode>(client);
    assert_eq!(
        node.events[0],
        ClientEvent::Redirected {
            from: "203.0.113.1:3478".parse().unwrap(),
            to: "203.0.113.2:3478".parse().unwrap(),
            domain: None,
        },
        "{transport:?}"
    );
    assert_eq!(node.client.server().to_string(), "203.0.113.2:3478");
    let relayed = node.client.relayed_addresses()[0];
    assert_eq!(relayed.ip().to_string(), "203.0.113.2");
    let s1 = &sim.node::<ServerNode<RestSecret>>(s1).server;
    assert_eq!(s1.transport_counters(transport).redirects, 1);
    assert_eq!(s1.allocation_count(), 0);
    let s2 = &sim.node::<ServerNode<RestSecret>>(s2).server;
    assert_eq!(s2.allocation_count(), 1);
    // The allocation on server 2 came over the same transport.
    assert_eq!(
        s2.transport_counters(transport).allocations_created,
        1,
        "{transport:?}"
    );
}

#[test]
fn a_server_at_its_quota_redirects_with_300_and_the_client_allocates_on_the_alternate() {
    let (sim, client, s1, s2) = redirected_over(Transport::Udp, 43);
    assert_redirected(&sim, client, s1, s2, Transport::Udp);
}

#[test]
fn over_tcp_and_tls_the_client_follows_the_300_on_the_same_transport() {
    for (transport, seed) in [(Transport::Tcp, 45), (Transport::Tls, 46)] {
        let (sim, client, s1, s2) = redirected_over(transport, seed);
        assert_redirected(&sim, client, s1, s2, transport);
    }
}

#[test]
fn a_full_server_without_tls_alternates_answers_an_allocate_over_tls_508_not_300() {
    let t0 = Instant::now();
    let mut sim = Sim::new(t0, 47);
    // Server 1 knows server 2's UDP/TCP port only: a TLS client sent
    // there would speak TLS to a plain port.
    let mut full = fleet_server(t0, "203.0.113.1", 0, &["203.0.113.2:3478"]);
    full.server.set_tls_alternate_servers(Vec::new());
    let s1 = sim.add_host(["203.0.113.1".parse().unwrap()], Realm::Public, full);
    let user = RestSecret::username(SystemTime::UNIX_EPOCH + Duration::from_secs(5_000), "u");
    let password = RestSecret::new("fleet-secret").password(&user);
    let mut cc = ClientConfig::new(
        "192.0.2.9:5000".parse().unwrap(),
        "203.0.113.1:3478".parse().unwrap(),
        &user,
        &password,
    );
    cc.rng_seed = Some(3);
    cc.transport = Transport::Tls;
    let client = sim.add_host(
        ["192.0.2.9".parse().unwrap()],
        Realm::Public,
        ClientNode {
            client: TurnClient::new(cc),
            peer: "203.0.113.50:7".parse().unwrap(),
            events: Vec::new(),
        },
    );
    let failed = |s: &Sim| {
        s.node::<ClientNode>(client)
            .events
            .iter()
            .any(|e| matches!(e, ClientEvent::AllocationFailed { .. }))
    };
    sim.run_until(failed, Duration::from_secs(10), 1000)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let node = sim.node::<ClientNode>(client);
    assert!(
        node.events.iter().any(|e| matches!(
            e,
            ClientEvent::AllocationFailed {
                code: Some(508),
                ..
            }
        )),
        "{:?}",
        node.events
    );
    let s1 = &sim.node::<ServerNode<RestSecret>>(s1).server;
    assert_eq!(s1.counters().redirects, 0);
}

#[test]
fn a_redirect_back_to_a_server_already_left_fails_instead_of_looping() {
    let t0 = Instant::now();
    let mut sim = Sim::new(t0, 44);
    // Two full servers that name each other.
    sim.add_host(
        ["203.0.113.1".parse().unwrap()],
        Realm::Public,
        fleet_server(t0, "203.0.113.1", 0, &["203.0.113.2:3478"]),
    );
    let s2 = sim.add_host(
        ["203.0.113.2".parse().unwrap()],
        Realm::Public,
        fleet_server(t0, "203.0.113.2", 0, &["203.0.113.1:3478"]),
    );
    let user = RestSecret::username(SystemTime::UNIX_EPOCH + Duration::from_secs(5_000), "u");
    let password = RestSecret::new("fleet-secret").password(&user);
    let mut cc = ClientConfig::new(
        "192.0.2.9:5000".parse().unwrap(),
        "203.0.113.1:3478".parse().unwrap(),
        &user,
        &password,
    );
    cc.rng_seed = Some(3);
    let client = sim.add_host(
        ["192.0.2.9".parse().unwrap()],
        Realm::Public,
        ClientNode {
            client: TurnClient::new(cc),
            peer: "203.0.113.50:7".parse().unwrap(),
            events: Vec::new(),
        },
    );
    let failed = |s: &Sim| {
        s.node::<ClientNode>(client)
            .events
            .iter()
            .any(|e| matches!(e, ClientEvent::AllocationFailed { .. }))
    };
    sim.run_until(failed, Duration::from_secs(10), 1000)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let node = sim.node::<ClientNode>(client);
    let redirects = node
        .events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Redirected { .. }))
        .count();
    assert_eq!(redirects, 1, "{:?}", node.events);
    assert!(node.events.iter().any(|e| matches!(
        e,
        ClientEvent::AllocationFailed {
            code: Some(300),
            ..
        }
    )));
    assert_eq!(
        sim.node::<ServerNode<RestSecret>>(s2)
            .server
            .counters()
            .redirects,
        1
    );
}
