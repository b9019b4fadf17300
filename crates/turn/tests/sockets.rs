//! Relayed sockets are outputs: the server takes an address from its port
//! pool, asks its driver to bind it ([`SocketRequest`]), answers the
//! Allocate once told the socket is bound, tries another port when the OS
//! refuses one, and asks for the socket to be closed when the allocation
//! ends. Also the order of the outputs and `shutdown`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use p2p_stun::attr::{EvenPort, RequestedTransport, PROTO_TCP};
use p2p_stun::{Message, MessageClass, Method};
use p2p_turn::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn binds(net: &Net) -> Vec<SocketAddr> {
    net.socket_requests
        .iter()
        .filter_map(|r| match r {
            SocketRequest::BindUdp { relayed } => Some(*relayed),
            _ => None,
        })
        .collect()
}

fn releases(net: &Net) -> Vec<SocketAddr> {
    net.socket_requests
        .iter()
        .filter_map(|r| match r {
            SocketRequest::Release { relayed } => Some(*relayed),
            _ => None,
        })
        .collect()
}

#[test]
fn an_allocate_is_answered_once_its_socket_is_bound_and_retransmissions_wait() {
    let mut net = Net::new(server_config(), users());
    net.defer_binds = true;
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.add_client(cfg);
    net.start(c);
    net.step();
    assert_eq!(net.deferred.len(), 1, "one socket asked for");
    let asked = net.deferred[0];
    assert_eq!(net.relayed(c), None, "no answer before the socket is bound");
    assert_eq!(net.server.allocation_count(), 0);
    let answers = net.server_out.len();
    // The client retransmits its Allocate: absorbed, no second socket.
    net.run_for(SECS(2));
    let allocates = net.client_out[c]
        .iter()
        .filter(|b| Message::decode(b).is_ok_and(|m| m.typ().method == Method::ALLOCATE))
        .count();
    assert!(
        allocates >= 3,
        "the signed Allocate was retransmitted: {allocates}"
    );
    assert_eq!(
        net.server_out.len(),
        answers,
        "retransmissions are not answered"
    );
    assert_eq!(net.deferred, [asked]);

    net.answer_deferred();
    assert_eq!(net.relayed(c), Some(asked));
    assert_eq!(net.server.allocation_count(), 1);
    assert!(net.server_events.iter().any(
        |e| matches!(e, ServerEvent::AllocationCreated { relayed, .. } if relayed == &[asked])
    ));
    // Exactly one success answer went out.
    let ok = net.server_out[answers..]
        .iter()
        .filter(|t| code_of(&t.contents).is_none())
        .count();
    assert_eq!(ok, 1);
}

#[test]
fn a_port_the_os_refuses_is_skipped_and_another_one_bound() {
    let mut config = server_config();
    config.relayed_ports = 50000..=50003;
    let mut net = Net::new(config, users());
    let ip = "203.0.113.1".parse().unwrap();
    // Another program holds three of the four ports.
    for p in [50000, 50001, 50003] {
        net.refuse_binds.insert(SocketAddr::new(ip, p));
    }
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    let relayed = net.relayed(c).unwrap();
    assert_eq!(relayed, SocketAddr::new(ip, 50002));
    assert_eq!(binds(&net).last(), Some(&relayed));
    assert_eq!(net.bound.iter().copied().collect::<Vec<_>>(), [relayed]);

    // Bob's Allocate tries what is left (the random probe may have reached
    // 50002 first) and gets 508; by then each refused port was asked for
    // once.
    let allocate = |net: &mut Net, i: usize| {
        let cfg = net.client_config(i, "bob", "builder");
        let b = net.add_client(cfg);
        net.start(b);
        net.step();
        net.failure(b)
    };
    assert_eq!(allocate(&mut net, 1), Some(Some(508)));
    let mut asked = binds(&net);
    asked.sort();
    let ports: Vec<u16> = asked.iter().map(|a| a.port()).collect();
    assert_eq!(
        ports,
        [50000, 50001, 50002, 50003],
        "each port asked for once"
    );
    assert!(net.server_events.iter().any(|e| matches!(
        e,
        ServerEvent::RequestRefused { code: 508, method: Method::ALLOCATE, user: Some(u), .. } if u == "bob"
    )));
    // The refused ports are not asked for again soon.
    assert_eq!(allocate(&mut net, 2), Some(Some(508)));
    assert_eq!(binds(&net).len(), 4, "no port tried");
    // A minute later they are tried again (still refused here: 508).
    net.run_for(SECS(61));
    assert_eq!(allocate(&mut net, 3), Some(Some(508)));
    assert_eq!(binds(&net).len(), 7, "the three refused ports tried again");
    assert_eq!(net.server.relayed_addresses_in_use(), 1);
}

#[test]
fn binding_gives_up_after_a_bounded_number_of_refusals() {
    let mut net = Net::new(server_config(), users());
    let ip = "203.0.113.1".parse().unwrap();
    for p in 50000..=50999 {
        net.refuse_binds.insert(SocketAddr::new(ip, p));
    }
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.add_client(cfg);
    net.start(c);
    net.step();
    assert_eq!(net.failure(c), Some(Some(508)));
    let tried = binds(&net).len();
    assert!((2..=64).contains(&tried), "{tried} binds for one Allocate");
    assert_eq!(net.server.relayed_addresses_in_use(), 0);
    assert!(net.bound.is_empty());
    // The quota is not held by the failed Allocate.
    assert_eq!(net.server.allocation_count(), 0);
}

#[test]
fn an_ending_allocation_closes_its_socket() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    let relayed = net.relayed(c).unwrap();
    assert!(net.bound.contains(&relayed));
    let requests = net.socket_requests.len();
    net.clients[c].close(net.now).unwrap();
    net.step();
    assert_eq!(
        net.socket_requests[requests..],
        [SocketRequest::Release { relayed }]
    );
    assert!(net.bound.is_empty());
    assert!(matches!(
        net.server_events.last(),
        Some(ServerEvent::AllocationEnded { reason: EndReason::Deleted, relayed: r, .. }) if r == &[relayed]
    ));
    assert_eq!(net.server.relayed_addresses_in_use(), 0);
}

#[test]
fn a_reservation_holds_the_next_port_and_a_refused_hold_moves_the_pair() {
    let mut config = server_config();
    config.relayed_ports = 50000..=50005;
    let mut net = Net::new(config, users());
    let ip = "203.0.113.1".parse().unwrap();
    // Whichever pair comes first, its odd port is refused once... all odd
    // ports but 50005 are held by another program.
    net.refuse_binds.insert(SocketAddr::new(ip, 50001));
    net.refuse_binds.insert(SocketAddr::new(ip, 50003));
    let mut cfg = net.client_config(0, "alice", "wonderland");
    cfg.even_port = Some(true);
    let c = net.allocated_client(cfg);
    let relayed = net.relayed(c).unwrap();
    assert_eq!(relayed, SocketAddr::new(ip, 50004));
    let held = SocketAddr::new(ip, 50005);
    assert!(net
        .socket_requests
        .contains(&SocketRequest::ReserveUdp { reserved: held }));
    assert_eq!(
        net.bound.iter().copied().collect::<Vec<_>>(),
        [relayed, held],
        "the broken pairs' even ports are closed again"
    );
    for even in [50000, 50002] {
        let a = SocketAddr::new(ip, even);
        if binds(&net).contains(&a) {
            assert!(releases(&net).contains(&a), "{a} released");
        }
    }
    // The token redeems the held socket: BindUdp on it, no new port.
    let token = net.client_events[c]
        .iter()
        .find_map(|e| match e {
            ClientEvent::Allocated {
                reservation_token, ..
            } => *reservation_token,
            _ => None,
        })
        .unwrap();
    let mut cfg = net.client_config(1, "alice", "wonderland");
    cfg.reservation_token = Some(token);
    let b = net.allocated_client(cfg);
    assert_eq!(net.relayed(b), Some(held));
    assert_eq!(binds(&net).last(), Some(&held));
}

#[test]
fn an_unused_reservation_closes_its_held_socket() {
    let mut net = Net::new(server_config(), users());
    let mut cfg = net.client_config(0, "alice", "wonderland");
    cfg.even_port = Some(true);
    let c = net.allocated_client(cfg);
    let relayed = net.relayed(c).unwrap();
    let held = SocketAddr::new(relayed.ip(), relayed.port() + 1);
    assert!(net.bound.contains(&held));
    net.run_for(SECS(31));
    assert!(releases(&net).contains(&held));
    assert!(!net.bound.contains(&held));
    assert!(net.bound.contains(&relayed));
}

#[test]
fn a_connection_closing_while_its_socket_is_bound_gives_the_allocate_up() {
    let mut config = server_config();
    config.user_quota = Some(1);
    let mut net = Net::new(config, users());
    net.defer_binds = true;
    let mut cfg = net.client_config(0, "alice", "wonderland");
    cfg.transport = Transport::Tcp;
    let c = net.add_client(cfg);
    net.start(c);
    net.step();
    let [asked] = net.deferred[..] else {
        panic!("one socket asked for: {:?}", net.deferred);
    };
    let ft = FiveTuple::new(Transport::Tcp, listen(), net.locals[c]);
    assert!(!net.server.connection_closed(&ft), "no allocation yet");
    // The driver's answer comes after: the socket is closed again.
    net.answer_deferred();
    assert_eq!(releases(&net), [asked]);
    assert!(net.bound.is_empty());
    assert_eq!(net.server.allocation_count(), 0);
    assert_eq!(net.server.relayed_addresses_in_use(), 0);
    assert_eq!(net.relayed(c), None);
    // The user's quota is free: a new connection allocates.
    net.defer_binds = false;
    let mut cfg = net.client_config(1, "alice", "wonderland");
    cfg.transport = Transport::Tcp;
    net.allocated_client(cfg);
}

#[test]
fn a_tcp_allocation_asks_for_a_listening_socket() {
    let mut net = Net::new(server_config(), users());
    let resp = net
        .signed_over(
            Transport::Tcp,
            "192.0.2.10:5000".parse().unwrap(),
            Method::ALLOCATE,
            "alice",
            "wonderland",
            |b| {
                b.add(&RequestedTransport(PROTO_TCP)).unwrap();
            },
        )
        .unwrap();
    assert_eq!(code_of(&resp), None);
    assert!(matches!(
        net.socket_requests[..],
        [SocketRequest::ListenTcp { relayed }] if net.bound.contains(&relayed)
    ));
}

#[test]
fn the_tcp_allocations_switch_refuses_them_with_442() {
    let mut config = server_config();
    config.tcp_allocations = false;
    let mut net = Net::new(config, users());
    let resp = net
        .signed_over(
            Transport::Tcp,
            "192.0.2.10:5000".parse().unwrap(),
            Method::ALLOCATE,
            "alice",
            "wonderland",
            |b| {
                b.add(&RequestedTransport(PROTO_TCP)).unwrap();
            },
        )
        .unwrap();
    assert_eq!(code_of(&resp), Some(442));
    assert!(net.socket_requests.is_empty());
}

#[test]
fn without_relayed_ips_every_allocate_gets_440_and_no_socket_is_asked() {
    let mut config = server_config();
    config.relayed_ips.clear();
    let mut net = Net::new(config, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.add_client(cfg);
    net.start(c);
    net.step();
    assert_eq!(net.failure(c), Some(Some(440)));
    assert!(net.socket_requests.is_empty());
}

#[test]
fn a_channel_route_comes_out_before_the_answer_that_opens_it() {
    let mut config = server_config();
    config.export_routes = true;
    let mut net = Net::new(config, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    net.clients[c].bind_channel(net.now, peer()).unwrap();
    let bind = net.next_client_transmit(c).expect("a ChannelBind");
    net.deliver_to_server(&bind);
    let first = net.server.poll_output();
    assert!(
        matches!(first, Some(ServerOutput::Route(RouteUpdate::Up(_)))),
        "{first:?}"
    );
    let second = net.server.poll_output();
    assert!(
        matches!(&second, Some(ServerOutput::Transmit(t)) if Message::decode(&t.contents).unwrap().typ().class == MessageClass::Success),
        "{second:?}"
    );
}

#[test]
fn shutdown_ends_every_allocation_and_closes_every_socket() {
    let mut net = Net::new(server_config(), users());
    for i in 0..3 {
        let cfg = net.client_config(i, "alice", "wonderland");
        net.allocated_client(cfg);
    }
    let mut cfg = net.client_config(3, "bob", "builder");
    cfg.even_port = Some(true);
    net.allocated_client(cfg);
    assert_eq!(net.bound.len(), 5, "four relayed sockets, one held");
    let seen = net.server_events.len();
    net.server.shutdown();
    net.step();
    assert!(net.bound.is_empty(), "{:?}", net.bound);
    let stopped = net.server_events[seen..]
        .iter()
        .filter(|e| {
            matches!(
                e,
                ServerEvent::AllocationEnded {
                    reason: EndReason::Stopped,
                    ..
                }
            )
        })
        .count();
    assert_eq!(stopped, 4);
    assert_eq!(net.server.allocation_count(), 0);
    assert_eq!(net.server.relayed_addresses_in_use(), 0);
    assert_eq!(net.server.counters().allocations_stopped, 4);
}

#[test]
fn counters_are_kept_per_client_transport() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    net.allocated_client(cfg);
    let mut cfg = net.client_config(1, "bob", "builder");
    cfg.transport = Transport::Tcp;
    net.allocated_client(cfg);
    let udp = net.server.transport_counters(Transport::Udp);
    let tcp = net.server.transport_counters(Transport::Tcp);
    assert_eq!((udp.allocations_active, tcp.allocations_active), (1, 1));
    assert_eq!((udp.requests, tcp.requests), (2, 2), "two Allocates each");
    assert_eq!(net.server.transport_counters(Transport::Tls).requests, 0);
    assert_eq!(net.server.counters().allocations_active, 2);
    assert_eq!(net.server.counters().requests, 4);
}

#[test]
fn a_retransmitted_even_port_allocate_does_not_take_a_second_pair() {
    let mut net = Net::new(server_config(), users());
    net.defer_binds = true;
    let resp = net.signed_over(
        Transport::Udp,
        "192.0.2.10:5000".parse().unwrap(),
        Method::ALLOCATE,
        "alice",
        "wonderland",
        |b| {
            b.add(&RequestedTransport(17)).unwrap();
            b.add(&EvenPort { reserve_next: true }).unwrap();
        },
    );
    assert_eq!(resp, None, "waiting for the sockets");
    assert_eq!(net.deferred.len(), 2, "the even port and the held one");
    net.answer_deferred();
    let answer = net.server_out.last().unwrap();
    assert_eq!(code_of(&answer.contents), None);
    assert_eq!(net.bound.len(), 2);
}
