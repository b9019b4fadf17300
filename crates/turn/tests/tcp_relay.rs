//! TCP allocations (RFC 6062) on the sans-IO server, with a simulated
//! clock: Allocate with REQUESTED-TRANSPORT TCP, Connect and its outcome
//! (CONNECTION-ID, 446, 447), ConnectionAttempt for a peer that connects,
//! ConnectionBind and the splice, the 30-second bind timeout, and clean-up
//! when connections or the allocation end. The driver's part (sockets) is
//! played by hand through `poll_command` and the `tcp_*` calls.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use p2p_stun::attr::{
    ChannelNumber, ConnectionId, DontFragment, EvenPort, RequestedTransport, XorPeerAddress,
    XorRelayedAddress, PROTO_TCP,
};
use p2p_stun::{Message, MessageClass, MessageType, Method};
use p2p_turn::*;

const CONTROL: &str = "192.0.2.10:5000";
const DATA: &str = "192.0.2.10:5001";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tcp_tuple(client: &str) -> FiveTuple {
    FiveTuple::new(Transport::Tcp, listen(), addr(client))
}

fn call(
    net: &mut Net,
    from: &str,
    method: Method,
    attrs: impl Fn(&mut p2p_stun::MessageBuilder<&mut Vec<u8>>),
) -> Option<Vec<u8>> {
    net.signed_over(
        Transport::Tcp,
        addr(from),
        method,
        "alice",
        "wonderland",
        attrs,
    )
}

/// A TCP allocation over the control connection; its relayed address.
fn tcp_allocation(net: &mut Net) -> SocketAddr {
    let resp = call(net, CONTROL, Method::ALLOCATE, |b| {
        b.add(&RequestedTransport(PROTO_TCP)).unwrap();
    })
    .expect("an answer");
    assert_eq!(code_of(&resp), None);
    Message::decode(&resp)
        .unwrap()
        .get::<XorRelayedAddress>()
        .unwrap()
        .unwrap()
        .0
}

fn connection_id(resp: &[u8]) -> u32 {
    Message::decode(resp)
        .unwrap()
        .get::<ConnectionId>()
        .unwrap()
        .expect("CONNECTION-ID")
        .0
}

#[test]
fn tcp_allocation_rules() {
    let mut net = Net::new(server_config(), users());
    // Over UDP: 400 (RFC 6062 §5.1).
    let resp = net.signed(
        addr(CONTROL),
        Method::ALLOCATE,
        "alice",
        "wonderland",
        |b| {
            b.add(&RequestedTransport(PROTO_TCP)).unwrap();
        },
    );
    assert_eq!(code_of(&resp), Some(400));
    // With a UDP-only attribute: 400.
    let resp = call(&mut net, "192.0.2.11:1", Method::ALLOCATE, |b| {
        b.add(&RequestedTransport(PROTO_TCP)).unwrap();
        b.add(&EvenPort {
            reserve_next: false,
        })
        .unwrap();
    });
    assert_eq!(code_of(&resp.unwrap()), Some(400));
    let resp = call(&mut net, "192.0.2.11:2", Method::ALLOCATE, |b| {
        b.add(&RequestedTransport(PROTO_TCP)).unwrap();
        b.add(&DontFragment).unwrap();
    });
    assert_eq!(code_of(&resp.unwrap()), Some(400));
    assert_eq!(net.server.allocation_count(), 0);

    let relayed = tcp_allocation(&mut net);
    assert_eq!(relayed.ip(), listen().ip());
    // No channels and no Send indications on a TCP allocation.
    let resp = call(&mut net, CONTROL, Method::CHANNEL_BIND, |b| {
        b.add(&ChannelNumber(0x4000)).unwrap();
        b.add(&XorPeerAddress(peer())).unwrap();
    });
    assert_eq!(code_of(&resp.unwrap()), Some(400));
    // Connect on a UDP allocation: 400.
    let mut udp = net.client_config(5, "alice", "wonderland");
    udp.transport = Transport::Tcp;
    let c = net.allocated_client(udp);
    let from = net.locals[c].to_string();
    let resp = call(&mut net, &from, Method::CONNECT, |b| {
        b.add(&XorPeerAddress(peer())).unwrap();
    });
    assert_eq!(code_of(&resp.unwrap()), Some(400));
    // Connect without an allocation: 437.
    let resp = call(&mut net, "192.0.2.99:9", Method::CONNECT, |b| {
        b.add(&XorPeerAddress(peer())).unwrap();
    });
    assert_eq!(code_of(&resp.unwrap()), Some(437));
    assert!(net.tcp_requests().is_empty());
}

#[test]
fn connect_then_connection_bind_splices_and_closing_frees_the_peer() {
    let mut net = Net::new(server_config(), users());
    let relayed = tcp_allocation(&mut net);

    // Connect: no answer until the driver has connected.
    let connect = |b: &mut p2p_stun::MessageBuilder<&mut Vec<u8>>| {
        b.add(&XorPeerAddress(peer())).unwrap();
    };
    assert_eq!(call(&mut net, CONTROL, Method::CONNECT, connect), None);
    let [SocketRequest::ConnectTcp {
        id,
        relayed: from,
        peer: to,
    }] = net.tcp_requests()[..]
    else {
        panic!("one Connect command");
    };
    assert_eq!((from, to), (relayed, peer()));
    // The same peer again while connecting: 446.
    let resp = call(&mut net, CONTROL, Method::CONNECT, connect).unwrap();
    assert_eq!(code_of(&resp), Some(446));

    let before = net.server_out.len();
    assert!(net.server.tcp_connect_result(net.now, id, true));
    net.step();
    let resp = &net.server_out[before].contents;
    let m = Message::decode(resp).unwrap();
    assert_eq!(
        m.typ(),
        MessageType::new(Method::CONNECT, MessageClass::Success)
    );
    assert!(m.has_integrity(), "signed like the request");
    assert_eq!(connection_id(resp), id);
    assert_eq!(
        net.server.tcp_connections(&tcp_tuple(CONTROL)),
        [(id, peer(), false)]
    );
    // Still 446 while the connection waits for its bind.
    assert_eq!(
        code_of(&call(&mut net, CONTROL, Method::CONNECT, connect).unwrap()),
        Some(446)
    );

    // ConnectionBind on the control connection or with a wrong id: 400.
    let bind = |id: u32| {
        move |b: &mut p2p_stun::MessageBuilder<&mut Vec<u8>>| {
            b.add(&ConnectionId(id)).unwrap();
        }
    };
    assert_eq!(
        code_of(&call(&mut net, CONTROL, Method::CONNECTION_BIND, bind(id)).unwrap()),
        Some(400)
    );
    assert_eq!(
        code_of(&call(&mut net, DATA, Method::CONNECTION_BIND, bind(id ^ 1)).unwrap()),
        Some(400)
    );
    // Over UDP: 400.
    let resp = net.signed(
        addr(DATA),
        Method::CONNECTION_BIND,
        "alice",
        "wonderland",
        bind(id),
    );
    assert_eq!(code_of(&resp), Some(400));
    // Another user: 441.
    let resp = net
        .signed_over(
            Transport::Tcp,
            addr(DATA),
            Method::CONNECTION_BIND,
            "bob",
            "builder",
            bind(id),
        )
        .unwrap();
    assert_eq!(code_of(&resp), Some(441));
    assert!(net.tcp_requests().is_empty());

    // The bind: success, then the splice.
    let resp = call(&mut net, DATA, Method::CONNECTION_BIND, bind(id)).unwrap();
    assert_eq!(code_of(&resp), None);
    assert_eq!(
        net.tcp_requests(),
        [SocketRequest::SpliceTcp {
            id,
            client: tcp_tuple(DATA),
            allocation: tcp_tuple(CONTROL),
        }]
    );
    assert_eq!(
        net.server.tcp_connections(&tcp_tuple(CONTROL)),
        [(id, peer(), true)]
    );
    assert_eq!(net.server.counters().peer_connections, 1);
    assert_eq!(net.server.counters().peer_connections_bound, 1);
    // The data connection is bound: no second bind on it, no bind of the id elsewhere.
    assert_eq!(
        code_of(
            &call(
                &mut net,
                "192.0.2.10:5002",
                Method::CONNECTION_BIND,
                bind(id)
            )
            .unwrap()
        ),
        Some(400)
    );

    // The data connection closes: the peer connection is closed, the peer may be connected again.
    assert!(
        !net.server.connection_closed(&tcp_tuple(DATA)),
        "no allocation ended"
    );
    assert_eq!(net.tcp_requests(), [SocketRequest::CloseTcp { id }]);
    assert!(net.server.tcp_connections(&tcp_tuple(CONTROL)).is_empty());
    assert_eq!(call(&mut net, CONTROL, Method::CONNECT, connect), None);
    let [SocketRequest::ConnectTcp { id: id2, .. }] = net.tcp_requests()[..] else {
        panic!("a second Connect");
    };
    assert_ne!(id2, id);

    // A failed connect answers 447 and frees the peer.
    let before = net.server_out.len();
    assert!(!net.server.tcp_connect_result(net.now, id2, false));
    net.step();
    assert_eq!(code_of(&net.server_out[before].contents), Some(447));
    assert!(net.server.tcp_connections(&tcp_tuple(CONTROL)).is_empty());
    assert!(
        !net.server.tcp_connect_result(net.now, id2, true),
        "answered once"
    );
}

#[test]
fn a_peer_with_a_permission_is_announced_and_unbound_connections_time_out() {
    let mut net = Net::new(server_config(), users());
    let relayed = tcp_allocation(&mut net);
    // No permission: refused at once.
    assert_eq!(
        net.server.tcp_peer_connected(net.now, relayed, peer()),
        None
    );
    let resp = call(&mut net, CONTROL, Method::CREATE_PERMISSION, |b| {
        b.add(&XorPeerAddress(peer())).unwrap();
    });
    assert_eq!(code_of(&resp.unwrap()), None);
    // A UDP address is not a TCP relay.
    assert_eq!(
        net.server
            .tcp_peer_connected(net.now, addr("203.0.113.9:1"), peer()),
        None
    );

    let before = net.server_out.len();
    let id = net
        .server
        .tcp_peer_connected(net.now, relayed, peer())
        .expect("accepted");
    net.step();
    let ind = &net.server_out[before];
    assert_eq!(ind.destination, addr(CONTROL));
    assert_eq!(ind.transport, Transport::Tcp);
    let m = Message::decode(&ind.contents).unwrap();
    assert_eq!(
        m.typ(),
        MessageType::new(Method::CONNECTION_ATTEMPT, MessageClass::Indication)
    );
    assert_eq!(
        m.get::<XorPeerAddress>().unwrap(),
        Some(XorPeerAddress(peer()))
    );
    assert_eq!(connection_id(&ind.contents), id);

    // A second peer connection is bound in time; the first is not.
    let other: SocketAddr = "198.51.100.7:9001".parse().unwrap();
    let id2 = net
        .server
        .tcp_peer_connected(net.now, relayed, other)
        .unwrap();
    net.run_for(Duration::from_secs(29));
    assert!(net.tcp_requests().is_empty());
    let resp = call(&mut net, DATA, Method::CONNECTION_BIND, |b| {
        b.add(&ConnectionId(id2)).unwrap();
    });
    assert_eq!(code_of(&resp.unwrap()), None);
    assert!(matches!(net.tcp_requests()[..], [SocketRequest::SpliceTcp { id: i, .. }] if i == id2));
    net.run_for(Duration::from_secs(2));
    assert_eq!(
        net.tcp_requests(),
        [SocketRequest::CloseTcp { id }],
        "30 s without a bind"
    );
    let resp = call(&mut net, "192.0.2.10:5003", Method::CONNECTION_BIND, |b| {
        b.add(&ConnectionId(id)).unwrap();
    });
    assert_eq!(code_of(&resp.unwrap()), Some(400), "too late");

    // The peer side of the bound connection closes: the data connection is released.
    net.server.tcp_peer_closed(id2);
    assert_eq!(net.tcp_requests(), [SocketRequest::CloseTcp { id: id2 }]);
    assert!(!net.server.connection_closed(&tcp_tuple(DATA)));
    assert!(net.tcp_requests().is_empty());
}

#[test]
fn the_allocation_ending_closes_its_peer_connections() {
    let mut net = Net::new(server_config(), users());
    let relayed = tcp_allocation(&mut net);
    call(&mut net, CONTROL, Method::CREATE_PERMISSION, |b| {
        b.add(&XorPeerAddress(peer())).unwrap();
    });
    let pending = net
        .server
        .tcp_peer_connected(net.now, relayed, peer())
        .unwrap();
    let bound = net
        .server
        .tcp_peer_connected(net.now, relayed, "198.51.100.7:9001".parse().unwrap())
        .unwrap();
    call(&mut net, DATA, Method::CONNECTION_BIND, |b| {
        b.add(&ConnectionId(bound)).unwrap();
    });
    assert_eq!(
        call(&mut net, CONTROL, Method::CONNECT, |b| {
            b.add(&XorPeerAddress("198.51.100.8:80".parse().unwrap()))
                .unwrap();
        }),
        None
    );
    let connecting = match net.tcp_requests()[..] {
        [SocketRequest::SpliceTcp { .. }, SocketRequest::ConnectTcp { id, .. }] => id,
        ref other => panic!("{other:?}"),
    };

    // The control connection closes: the allocation and every peer connection end.
    assert!(net.server.connection_closed(&tcp_tuple(CONTROL)));
    let mut closed: Vec<u32> = net
        .tcp_requests()
        .into_iter()
        .map(|c| match c {
            SocketRequest::CloseTcp { id } => id,
            other => panic!("{other:?}"),
        })
        .collect();
    closed.sort_unstable();
    let mut want = vec![pending, bound, connecting];
    want.sort_unstable();
    assert_eq!(closed, want);
    assert_eq!(net.server.relayed_addresses_in_use(), 0);
    // The connect that was under way is dropped when it completes.
    assert!(!net.server.tcp_connect_result(net.now, connecting, true));
    // The old data connection is no longer bound.
    assert!(!net.server.connection_closed(&tcp_tuple(DATA)));
    assert!(net.tcp_requests().is_empty());
}

/// A request signed by hand with `nonce` (MD5), sent over TCP from `from`.
fn signed_with_nonce(
    net: &mut Net,
    from: &str,
    nonce: &str,
    method: Method,
    id: u32,
) -> Option<Vec<u8>> {
    use p2p_stun::attr::{Nonce, Realm, Username};
    use p2p_stun::{Key, MessageBuilder, TransactionId};
    let key = Key::long_term("alice", REALM, "wonderland", PasswordAlgorithm::Md5).unwrap();
    let mut req = Vec::new();
    let mut b = MessageBuilder::new(
        &mut req,
        MessageType::new(method, MessageClass::Request),
        TransactionId::new([9; 12]),
    )
    .unwrap();
    b.add(&ConnectionId(id)).unwrap();
    b.add(&Username::new("alice").unwrap()).unwrap();
    b.add(&Realm::new(REALM).unwrap()).unwrap();
    b.add(&Nonce::new(nonce).unwrap()).unwrap();
    b.add_message_integrity(&key).unwrap();
    net.raw_over(Transport::Tcp, addr(from), &req)
}

#[test]
fn connection_bind_may_use_the_nonce_of_the_control_connection() {
    // coturn's client signs ConnectionBind on the new data connection with
    // the nonce it got on the control connection; nonces are bound to the
    // client's address, so the server also accepts the control connection's.
    let mut net = Net::new(server_config(), users());
    let relayed = tcp_allocation(&mut net);
    call(&mut net, CONTROL, Method::CREATE_PERMISSION, |b| {
        b.add(&XorPeerAddress(peer())).unwrap();
    });
    let id = net
        .server
        .tcp_peer_connected(net.now, relayed, peer())
        .unwrap();
    // The control connection's nonce, from a challenge there.
    let mut req = Vec::new();
    p2p_stun::MessageBuilder::new(
        &mut req,
        MessageType::new(Method::REFRESH, MessageClass::Request),
        p2p_stun::TransactionId::new([8; 12]),
    )
    .unwrap();
    let challenge = net.raw_over(Transport::Tcp, addr(CONTROL), &req).unwrap();
    let nonce = Message::decode(&challenge)
        .unwrap()
        .get::<p2p_stun::attr::Nonce>()
        .unwrap()
        .unwrap()
        .as_str()
        .to_owned();
    // Another connection's nonce does not do (438), the control one does.
    let other = tcp_allocation_nonce(&mut net, "192.0.2.20:7");
    let resp = signed_with_nonce(&mut net, DATA, &other, Method::CONNECTION_BIND, id).unwrap();
    assert_eq!(code_of(&resp), Some(438));
    let resp = signed_with_nonce(&mut net, DATA, &nonce, Method::CONNECTION_BIND, id).unwrap();
    assert_eq!(code_of(&resp), None);
    assert!(matches!(net.tcp_requests()[..], [SocketRequest::SpliceTcp { id: i, .. }] if i == id));
}

/// The nonce a 401 gives `from` over TCP.
fn tcp_allocation_nonce(net: &mut Net, from: &str) -> String {
    let mut req = Vec::new();
    p2p_stun::MessageBuilder::new(
        &mut req,
        MessageType::new(Method::ALLOCATE, MessageClass::Request),
        p2p_stun::TransactionId::new([7; 12]),
    )
    .unwrap();
    let challenge = net.raw_over(Transport::Tcp, addr(from), &req).unwrap();
    Message::decode(&challenge)
        .unwrap()
        .get::<p2p_stun::attr::Nonce>()
        .unwrap()
        .unwrap()
        .as_str()
        .to_owned()
}

#[test]
fn peer_connections_per_allocation_are_capped() {
    let config = {
        let mut c = server_config();
        c.max_tcp_connections = 2;
        c
    };
    let mut net = Net::new(config, users());
    let relayed = tcp_allocation(&mut net);
    call(&mut net, CONTROL, Method::CREATE_PERMISSION, |b| {
        b.add(&XorPeerAddress(peer())).unwrap();
    });
    let other: SocketAddr = "198.51.100.7:9001".parse().unwrap();
    assert!(net
        .server
        .tcp_peer_connected(net.now, relayed, peer())
        .is_some());
    let resp = call(&mut net, CONTROL, Method::CONNECT, |b| {
        b.add(&XorPeerAddress(addr("198.51.100.9:80"))).unwrap();
    });
    assert_eq!(resp, None, "the second one is under way");
    // Full: a third peer is refused, a third Connect gets 508.
    assert_eq!(net.server.tcp_peer_connected(net.now, relayed, other), None);
    let resp = call(&mut net, CONTROL, Method::CONNECT, |b| {
        b.add(&XorPeerAddress(addr("198.51.100.10:80"))).unwrap();
    });
    assert_eq!(code_of(&resp.unwrap()), Some(508));
    // A failed connect frees its place.
    let [SocketRequest::ConnectTcp { id, .. }] = net.tcp_requests()[..] else {
        panic!("one Connect command");
    };
    net.server.tcp_connect_result(net.now, id, false);
    assert!(net
        .server
        .tcp_peer_connected(net.now, relayed, other)
        .is_some());
}

#[test]
fn turn_client_connects_binds_and_hears_connection_attempts() {
    let mut net = Net::new(server_config(), users());
    let mut cfg = net.client_config(0, "alice", "wonderland");
    cfg.transport = Transport::Tcp;
    cfg.requested_transport = PROTO_TCP;
    let c = net.allocated_client(cfg);
    let relayed = net.relayed(c).unwrap();
    let control = FiveTuple::new(Transport::Tcp, listen(), net.locals[c]);
    assert_eq!(net.server.tcp_connections(&control), []);

    // Connect: the server connects, the client learns the CONNECTION-ID.
    net.clients[c].connect(net.now, peer()).unwrap();
    net.step();
    let [SocketRequest::ConnectTcp {
        id, relayed: from, ..
    }] = net.tcp_requests()[..]
    else {
        panic!("one Connect command");
    };
    assert_eq!(from, relayed);
    net.server.tcp_connect_result(net.now, id, true);
    net.step();
    assert!(net.client_events[c].contains(&ClientEvent::PeerConnected {
        peer: peer(),
        connection_id: id
    }));
    // The same peer again: 446.
    net.clients[c].connect(net.now, peer()).unwrap();
    net.step();
    assert!(net.client_events[c].contains(&ClientEvent::ConnectFailed {
        peer: peer(),
        code: Some(446)
    }));

    // ConnectionBind on a new data connection, signed with the control
    // connection's nonce: the request leaves from the data connection.
    net.extra_locals.push((addr(DATA), c));
    net.clients[c]
        .connection_bind(net.now, id, addr(DATA))
        .unwrap();
    net.step();
    let req = net.client_out[c].last().unwrap().clone();
    let m = Message::decode(&req).unwrap();
    assert_eq!(
        m.typ(),
        MessageType::new(Method::CONNECTION_BIND, MessageClass::Request)
    );
    assert!(m.has_integrity_sha256() || m.has_integrity(), "signed");
    assert!(
        net.client_events[c].contains(&ClientEvent::ConnectionBound {
            connection_id: id,
            local: addr(DATA)
        })
    );
    assert!(
        matches!(net.tcp_requests()[..], [SocketRequest::SpliceTcp { id: i, client, .. }] if i == id && client == tcp_tuple(DATA))
    );
    // A second bind of the same id elsewhere is refused.
    let other = addr("192.0.2.10:5002");
    net.extra_locals.push((other, c));
    net.clients[c].connection_bind(net.now, id, other).unwrap();
    net.step();
    assert!(
        net.client_events[c].contains(&ClientEvent::ConnectionBindFailed {
            connection_id: id,
            local: other,
            code: Some(400)
        })
    );
    // A request is no answer.
    assert_eq!(
        net.clients[c].handle_input(
            net.now,
            Datagram::new(Transport::Tcp, listen(), addr(DATA), &req)
        ),
        Handled::NotMine,
        "not an answer"
    );

    // A peer connecting with a permission is announced.
    net.clients[c]
        .create_permission(net.now, &[peer().ip()])
        .unwrap();
    net.step();
    let other: SocketAddr = "198.51.100.7:9001".parse().unwrap();
    let id2 = net
        .server
        .tcp_peer_connected(net.now, relayed, other)
        .unwrap();
    net.step();
    assert!(
        net.client_events[c].contains(&ClientEvent::ConnectionAttempt {
            peer: other,
            connection_id: id2
        })
    );
}
