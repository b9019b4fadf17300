//! A router that serves PCP (RFC 6887) and NAT-PMP (RFC 6886) on its LAN
//! address: a mapping it grants forwards its external port to the
//! internal socket from anyone, even through an address-and-port-dependent
//! NAT, new flows of the socket leave from it, flows it had keep their own
//! mapping, and lifetime 0 deletes it. Requests are written here byte by
//! byte from the RFCs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use p2p_netsim::{
    Behaviour, DropReason, NatConfig, PortMapService, Realm, ScriptedNode, Sim, Transmit,
};

const GW: &str = "10.0.0.1";
const HOST: &str = "10.0.0.2:5000";
const EXT: &str = "198.51.100.1";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A PCP MAP request for UDP `internal_port` (RFC 6887 §11.1).
fn pcp_map(client: Ipv4Addr, internal_port: u16, lifetime: u32) -> Vec<u8> {
    let mut b = vec![0u8; 60];
    b[0] = 2;
    b[1] = 1;
    b[4..8].copy_from_slice(&lifetime.to_be_bytes());
    b[8..24].copy_from_slice(&client.to_ipv6_mapped().octets());
    b[24..36].copy_from_slice(b"nonce-nonce!");
    b[36] = 17;
    b[40..42].copy_from_slice(&internal_port.to_be_bytes());
    b
}

/// A NAT-PMP UDP mapping request (RFC 6886 §3.3).
fn natpmp_map(internal_port: u16, lifetime: u32) -> Vec<u8> {
    let mut b = vec![0u8, 1, 0, 0];
    b.extend_from_slice(&internal_port.to_be_bytes());
    b.extend_from_slice(&internal_port.to_be_bytes());
    b.extend_from_slice(&lifetime.to_be_bytes());
    b
}

struct Net {
    sim: Sim,
    host: p2p_netsim::HostId,
    peer: p2p_netsim::HostId,
    nat: p2p_netsim::NatId,
}

fn net(service: PortMapService) -> Net {
    let mut sim = Sim::new(Instant::now(), 1);
    let nat = sim.add_nat(NatConfig {
        port_mapping: Some(service),
        ..NatConfig::new(
            ip(EXT),
            Behaviour::AddressAndPortDependent,
            Behaviour::AddressAndPortDependent,
        )
    });
    let host = sim.add_host([sa(HOST).ip()], Realm::Nat(nat), ScriptedNode::new());
    let peer = sim.add_host([ip("203.0.113.9")], Realm::Public, ScriptedNode::new());
    Net {
        sim,
        host,
        peer,
        nat,
    }
}

impl Net {
    /// Send `req` to the router and return its answer.
    fn ask(&mut self, req: Vec<u8>) -> Vec<u8> {
        let to = SocketAddr::new(ip(GW), 5351);
        self.sim
            .send_from(self.host, Transmit::udp(sa(HOST), to, req));
        self.sim.run_for(Duration::from_millis(100));
        let got = self.sim.node_mut::<ScriptedNode>(self.host).take_received();
        assert_eq!(got.len(), 1, "one answer");
        assert_eq!(got[0].datagram.source, to);
        got[0].datagram.contents.clone()
    }

    /// Whether a datagram from the public peer to `external` reaches the host.
    fn reaches_host(&mut self, external: SocketAddr) -> bool {
        self.sim.send_from(
            self.peer,
            Transmit::udp(sa("203.0.113.9:7777"), external, "in"),
        );
        self.sim.run_for(Duration::from_millis(100));
        !self
            .sim
            .node_mut::<ScriptedNode>(self.host)
            .take_received()
            .is_empty()
    }
}

fn pcp_external(answer: &[u8]) -> SocketAddr {
    let port = u16::from_be_bytes([answer[42], answer[43]]);
    let mut v6 = [0u8; 16];
    v6.copy_from_slice(&answer[44..60]);
    let ip = std::net::Ipv6Addr::from(v6).to_ipv4_mapped().expect("IPv4");
    SocketAddr::new(ip.into(), port)
}

#[test]
fn a_pcp_mapping_lets_anyone_in_through_an_apdf_nat_until_lifetime_zero_deletes_it() {
    let mut n = net(PortMapService::new(ip(GW)));
    let client = Ipv4Addr::new(10, 0, 0, 2);
    let a = n.ask(pcp_map(client, 5000, 3600));
    assert_eq!(a.len(), 60);
    assert_eq!(
        (a[0], a[1], a[3]),
        (2, 0x81, 0),
        "version, MAP answer, success"
    );
    assert_eq!(u32::from_be_bytes([a[4], a[5], a[6], a[7]]), 3600);
    assert_eq!(
        a[24..42],
        pcp_map(client, 5000, 3600)[24..42],
        "nonce echoed"
    );
    let external = pcp_external(&a);
    assert_eq!(external, sa("198.51.100.1:5000"), "the port is preserved");
    // Nobody was sent to: an APDF filter would drop this; the mapping does not.
    assert!(n.reaches_host(external));
    // A new flow of the socket leaves from the mapping.
    n.sim.send_from(
        n.host,
        Transmit::udp(sa(HOST), sa("203.0.113.9:8888"), "out"),
    );
    n.sim.run_for(Duration::from_millis(100));
    let got = n.sim.node_mut::<ScriptedNode>(n.peer).take_received();
    assert_eq!(got[0].datagram.source, external);

    let a = n.ask(pcp_map(client, 5000, 0));
    assert_eq!((a[3], &a[4..8]), (0, &[0u8, 0, 0, 0][..]));
    assert!(!n.reaches_host(external));
    assert!(matches!(
        n.sim.drops().last().map(|d| &d.reason),
        Some(DropReason::NoMapping { .. } | DropReason::Filtered { .. })
    ));
}

#[test]
fn a_flow_started_before_the_mapping_keeps_its_own() {
    let mut n = net(PortMapService::new(ip(GW)));
    // The socket talks to a server first (APDM: a mapping for that flow).
    n.sim.send_from(
        n.host,
        Transmit::udp(sa(HOST), sa("203.0.113.9:3478"), "stun"),
    );
    n.sim.run_for(Duration::from_millis(100));
    let before = n.sim.node_mut::<ScriptedNode>(n.peer).take_received()[0]
        .datagram
        .source;
    let external = pcp_external(&n.ask(pcp_map(Ipv4Addr::new(10, 0, 0, 2), 5000, 60)));
    assert_ne!(external, before, "port 5000 was taken by the flow");
    n.sim.send_from(
        n.host,
        Transmit::udp(sa(HOST), sa("203.0.113.9:3478"), "stun again"),
    );
    n.sim.run_for(Duration::from_millis(100));
    let again = n.sim.node_mut::<ScriptedNode>(n.peer).take_received()[0]
        .datagram
        .source;
    assert_eq!(again, before);
    // The mapping ends with its lifetime.
    n.sim.run_for(Duration::from_secs(61));
    assert!(!n.reaches_host(external));
}

#[test]
fn a_nat_pmp_only_router_refuses_pcp_the_nat_pmp_way_and_maps_with_nat_pmp() {
    let mut n = net(PortMapService {
        pcp: false,
        ..PortMapService::new(ip(GW))
    });
    let refusal = n.ask(pcp_map(Ipv4Addr::new(10, 0, 0, 2), 5000, 60));
    assert_eq!(refusal[..4], [0, 129, 0, 1], "unsupported version");
    assert_eq!(refusal.len(), 8);
    let a = n.ask(vec![0, 0]);
    assert_eq!(a[..4], [0, 128, 0, 0]);
    assert_eq!(a[8..12], [198, 51, 100, 1]);
    let a = n.ask(natpmp_map(5000, 60));
    assert_eq!(a.len(), 16);
    assert_eq!(a[..4], [0, 129, 0, 0]);
    let port = u16::from_be_bytes([a[10], a[11]]);
    assert!(n.reaches_host(SocketAddr::new(ip(EXT), port)));
    assert_eq!(n.sim.nat_mappings(n.nat).len(), 1);
}

#[test]
fn a_router_without_the_service_answers_nothing() {
    let mut sim = Sim::new(Instant::now(), 1);
    let nat = sim.add_nat(NatConfig::new(
        ip(EXT),
        Behaviour::EndpointIndependent,
        Behaviour::AddressAndPortDependent,
    ));
    let host = sim.add_host([sa(HOST).ip()], Realm::Nat(nat), ScriptedNode::new());
    let to = SocketAddr::new(ip(GW), 5351);
    sim.send_from(
        host,
        Transmit::udp(sa(HOST), to, pcp_map(Ipv4Addr::new(10, 0, 0, 2), 5000, 60)),
    );
    sim.run_for(Duration::from_millis(100));
    assert!(sim.node::<ScriptedNode>(host).received().is_empty());
    assert_eq!(
        sim.drops()[0].reason,
        DropReason::NoRoute {
            destination: ip(GW)
        }
    );
}
