//! Malformed input never panics the server or the client.

mod common;

use common::*;
use p2p_stun::{MessageType, MAGIC_COOKIE};
use p2p_turn::*;
use proptest::prelude::*;

/// A STUN header (any method and class) followed by `body`, with the length
/// field either right or as generated.
fn stun_like(typ: u16, fix_len: bool, len: u16, body: Vec<u8>) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + body.len());
    v.extend_from_slice(&(typ & 0x3FFF).to_be_bytes());
    let l = if fix_len { body.len() as u16 } else { len };
    v.extend_from_slice(&l.to_be_bytes());
    v.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    v.extend_from_slice(&[0xAB; 12]);
    v.extend_from_slice(&body);
    v
}

/// A server with an allocation (so relayed-address input and ChannelData
/// reach the deeper paths) and the relayed address.
fn net_with_allocation() -> (Net, std::net::SocketAddr) {
    let config = {
        let mut c = server_config();
        c.peer_policy = PeerPolicy::new().allow("0.0.0.0/0".parse().unwrap());
        c
    };
    let mut net = Net::new(config, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    let relay = net.relayed(c).unwrap();
    net.clients[c]
        .create_permission(net.now, &[peer().ip()])
        .unwrap();
    net.clients[c].bind_channel(net.now, peer()).unwrap();
    net.step();
    (net, relay)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (mut net, relay) = net_with_allocation();
        let client = net.locals[0];
        let now = net.now;
        for (local, remote) in [(listen(), client), (listen(), peer()), (relay, peer()), (relay, client)] {
            let _ = net.server.handle_input(now, Datagram::new(Transport::Udp, remote, local, &bytes));
        }
        let _ = net.clients[0].handle_input(now, Datagram::new(Transport::Udp, listen(), client, &bytes));
        net.step();
    }

    #[test]
    fn stun_shaped_garbage_never_panics(
        typ in any::<u16>(),
        fix_len in any::<bool>(),
        len in any::<u16>(),
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let (mut net, _) = net_with_allocation();
        let bytes = stun_like(typ, fix_len, len, body);
        let client = net.locals[0];
        let now = net.now;
        let _ = net.server.handle_input(now, Datagram::new(Transport::Udp, client, listen(), &bytes));
        let _ = net.server.handle_input(now, Datagram::new(Transport::Tcp, client, listen(), &bytes));
        let _ = net.clients[0].handle_input(now, Datagram::new(Transport::Udp, listen(), client, &bytes));
        net.step();
        // Every answer is no bigger than a few times the input.
        for t in &net.server_out {
            if MessageType::from_u16(u16::from_be_bytes([t.contents[0], t.contents[1]])).class
                == p2p_stun::MessageClass::Error
            {
                prop_assert!(t.contents.len() <= 200 + bytes.len());
            }
        }
    }

    #[test]
    fn attribute_soup_never_panics(
        method in 0u16..16,
        attrs in proptest::collection::vec((0u16..0x40, proptest::collection::vec(any::<u8>(), 0..24)), 0..8),
    ) {
        // Well-framed TLVs with random types and values: reaches attribute decoding.
        let (mut net, _) = net_with_allocation();
        let mut body = Vec::new();
        for (t, v) in attrs {
            let t = if t >= 0x30 { 0x8000 | t } else { t };
            body.extend_from_slice(&t.to_be_bytes());
            body.extend_from_slice(&(v.len() as u16).to_be_bytes());
            body.extend_from_slice(&v);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let typ = p2p_stun::MessageType::new(
            p2p_stun::Method::new(method).unwrap(),
            p2p_stun::MessageClass::Request,
        ).to_u16();
        let bytes = stun_like(typ, true, 0, body);
        let client = net.locals[0];
        let now = net.now;
        let _ = net.server.handle_input(now, Datagram::new(Transport::Udp, client, listen(), &bytes));
        net.step();
    }
}
