//! TurnClient against TurnServer through an in-test router, on a simulated
//! clock. Each test names the RFC rule it pins down.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use p2p_stun::attr::{
    AdditionalAddressFamily, AddressFamily, ChannelNumber, EvenPort, Lifetime,
    PasswordAlgorithm as Alg, RequestedAddressFamily, RequestedTransport, ReservationToken,
    UnknownAttributes, XorMappedAddress, XorPeerAddress, PROTO_TCP, PROTO_UDP,
};
use p2p_stun::{
    AttrType, Message, MessageBuilder, MessageClass, MessageType, Method, TransactionId,
};
use p2p_turn::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn attr_types(bytes: &[u8]) -> Vec<AttrType> {
    Message::decode(bytes)
        .unwrap()
        .attributes()
        .map(|a| a.typ)
        .collect()
}

/// The client's requests of a method, decoded.
fn requests(net: &Net, i: usize, method: Method) -> Vec<Vec<u8>> {
    net.client_out[i]
        .iter()
        .filter(|b| {
            Message::decode(b)
                .is_ok_and(|m| m.typ() == MessageType::new(method, MessageClass::Request))
        })
        .cloned()
        .collect()
}

fn responses_with_code(net: &Net, code: u16) -> usize {
    net.server_out
        .iter()
        .filter(|t| Message::decode(&t.contents).is_ok_and(|_| code_of(&t.contents) == Some(code)))
        .count()
}

// ---------------------------------------------------------------- authentication

#[test]
fn allocate_after_401_with_sha256_and_message_integrity_sha256() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    assert_eq!(responses_with_code(&net, 401), 1);
    let allocs = requests(&net, c, Method::ALLOCATE);
    assert_eq!(allocs.len(), 2, "one unauthenticated, one signed");
    let signed = Message::decode(&allocs[1]).unwrap();
    assert!(signed.has_integrity_sha256() && !signed.has_integrity());
    assert_eq!(signed.get::<Alg>().unwrap(), Some(Alg::Sha256));
    assert!(signed.has(AttrType::PASSWORD_ALGORITHMS));
    // The success response is signed the same way.
    let ok = net
        .server_out
        .iter()
        .find(|t| code_of(&t.contents).is_none())
        .unwrap();
    let m = Message::decode(&ok.contents).unwrap();
    assert!(m.has_integrity_sha256());
    match &net.client_events[c][0] {
        ClientEvent::Allocated {
            relayed,
            mapped,
            lifetime,
            ..
        } => {
            assert_eq!(relayed[0].ip().to_string(), "203.0.113.1");
            assert_eq!(*mapped, Some("192.0.2.10:5000".parse().unwrap()));
            assert_eq!(*lifetime, SECS(600));
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        &net.server_events[0],
        ServerEvent::AllocationCreated { user, .. } if user == "alice"
    ));
    assert_eq!(net.server.counters().allocations_active, 1);
}

#[test]
fn allocate_with_md5_uses_message_integrity() {
    let mut net = Net::new(server_config(), users());
    let mut cfg = net.client_config(0, "alice", "wonderland");
    cfg.password_algorithms = vec![Alg::Md5];
    let c = net.allocated_client(cfg);
    let signed = requests(&net, c, Method::ALLOCATE).pop().unwrap();
    let m = Message::decode(&signed).unwrap();
    assert!(m.has_integrity() && !m.has_integrity_sha256());
    assert_eq!(m.get::<Alg>().unwrap(), Some(Alg::Md5));
    let ok = net
        .server_out
        .iter()
        .find(|t| code_of(&t.contents).is_none())
        .unwrap();
    assert!(Message::decode(&ok.contents).unwrap().has_integrity());
}

#[test]
fn rfc5389_style_server_without_password_algorithms_uses_md5() {
    let config = {
        let mut c = server_config();
        c.password_algorithms = vec![];
        c
    };
    let mut net = Net::new(config, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    let challenge = &net.server_out[0].contents;
    assert!(!attr_types(challenge).contains(&AttrType::PASSWORD_ALGORITHMS));
    let m_bytes = requests(&net, c, Method::ALLOCATE).pop().unwrap();
    let m = Message::decode(&m_bytes).unwrap();
    assert!(m.has_integrity());
    assert!(!m.has(AttrType::PASSWORD_ALGORITHM));
}

#[test]
fn userhash_replaces_the_username() {
    let mut net = Net::new(server_config(), users());
    let mut cfg = net.client_config(0, "bob", "builder");
    cfg.use_userhash = true;
    let c = net.allocated_client(cfg);
    let signed = requests(&net, c, Method::ALLOCATE).pop().unwrap();
    let types = attr_types(&signed);
    assert!(types.contains(&AttrType::USERHASH));
    assert!(!types.contains(&AttrType::USERNAME));
    assert!(matches!(
        &net.server_events[0],
        ServerEvent::AllocationCreated { user, .. } if user == "bob"
    ));
}

#[test]
fn rest_credentials_valid_then_expired() {
    let secret = RestSecret::new("north");
    let mut net = Net::new(server_config(), secret.clone());
    let valid = RestSecret::username(net.wall() + SECS(3600), "alice");
    let cfg = net.client_config(0, &valid, &secret.password(&valid));
    net.allocated_client(cfg);

    let expired = RestSecret::username(net.wall() - SECS(1), "carol");
    let cfg = net.client_config(1, &expired, &secret.password(&expired));
    let c = net.add_client(cfg);
    net.start(c);
    net.step();
    assert_eq!(net.failure(c), Some(Some(401)));
    assert!(net.server_events.iter().any(|e| matches!(
        e,
        ServerEvent::AuthFailed { reason: AuthFailure::UnknownUser, username: Some(u), .. } if *u == expired
    )));
}

#[test]
fn wrong_password_gets_the_same_401_as_an_unknown_user() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "not-the-password");
    let a = net.add_client(cfg);
    let cfg = net.client_config(1, "mallory", "whatever");
    let b = net.add_client(cfg);
    net.start(a);
    net.start(b);
    net.step();
    assert_eq!(net.failure(a), Some(Some(401)));
    assert_eq!(net.failure(b), Some(Some(401)));
    let finals: Vec<&Transmit> = net
        .server_out
        .iter()
        .filter(|t| code_of(&t.contents) == Some(401))
        .collect();
    assert_eq!(finals.len(), 4, "two challenges, two refusals");
    // The refusals to a and b have the same attributes and the same sizes:
    // nothing tells a wrong password from an unknown user.
    let shape = |to: SocketAddr| {
        let t = finals.iter().rev().find(|t| t.destination == to).unwrap();
        let m = Message::decode(&t.contents).unwrap();
        m.attributes()
            .map(|a| (a.typ, a.value.len()))
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(net.locals[a]), shape(net.locals[b]));
    assert_eq!(
        shape(net.locals[a]).iter().map(|x| x.0).collect::<Vec<_>>(),
        [
            AttrType::ERROR_CODE,
            AttrType::REALM,
            AttrType::NONCE,
            AttrType::PASSWORD_ALGORITHMS,
            AttrType::FINGERPRINT // the request had one
        ]
    );
    let reasons: Vec<AuthFailure> = net
        .server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::AuthFailed { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [AuthFailure::BadIntegrity, AuthFailure::UnknownUser]
    );
    assert_eq!(net.server.allocation_count(), 0);
}

#[test]
fn unauthenticated_answers_are_small_and_carry_no_software() {
    let config = {
        let mut c = server_config();
        c.software = Some("p2p-turn with a rather long software description".into());
        c
    };
    let mut net = Net::new(config, users());
    let mut req = Vec::new();
    let mut b = MessageBuilder::new(
        &mut req,
        MessageType::new(Method::ALLOCATE, MessageClass::Request),
        TransactionId::new([3; 12]),
    )
    .unwrap();
    b.add(&RequestedTransport(PROTO_UDP)).unwrap();
    assert_eq!(req.len(), 28);
    let resp = net.raw("192.0.2.99:1000".parse().unwrap(), &req).unwrap();
    assert_eq!(code_of(&resp), Some(401));
    assert!(!attr_types(&resp).contains(&AttrType::SOFTWARE));
    // 20 header + 20 ERROR-CODE + 16 REALM + 36 NONCE + 12 PASSWORD-ALGORITHMS:
    // under four times the smallest possible Allocate.
    assert_eq!(resp.len(), 104);
    assert!(resp.len() < 4 * req.len());
    // A garbled request fails the basic checks of RFC 8489 §6.3 and is
    // discarded: no answer at all, so nothing to amplify.
    let mut bad = req.clone();
    bad[3] = 12; // declares more than there is
    bad.extend_from_slice(&[0, 0, 0, 0]);
    bad[23] = 0x40; // the attribute now overflows
    assert!(net.raw("192.0.2.99:1000".parse().unwrap(), &bad).is_none());
}

#[test]
fn downgraded_password_algorithms_are_400() {
    let mut net = Net::new(server_config(), users());
    let from: SocketAddr = "192.0.2.50:1".parse().unwrap();
    // A request that claims the nonce's feature but lists only MD5.
    let mut req = Vec::new();
    let mut b = MessageBuilder::new(
        &mut req,
        MessageType::new(Method::ALLOCATE, MessageClass::Request),
        TransactionId::new([4; 12]),
    )
    .unwrap();
    b.add(&RequestedTransport(PROTO_UDP)).unwrap();
    let challenge = net.raw(from, &req).unwrap();
    let nonce = Message::decode(&challenge)
        .unwrap()
        .get::<p2p_stun::attr::Nonce>()
        .unwrap()
        .unwrap()
        .as_str()
        .to_owned();
    let key = p2p_stun::Key::long_term("alice", REALM, "wonderland", Alg::Md5).unwrap();
    let mut req = Vec::new();
    let mut b = MessageBuilder::new(
        &mut req,
        MessageType::new(Method::ALLOCATE, MessageClass::Request),
        TransactionId::new([5; 12]),
    )
    .unwrap();
    b.add(&RequestedTransport(PROTO_UDP)).unwrap();
    b.add(&p2p_stun::attr::Username::new("alice").unwrap())
        .unwrap();
    b.add(&p2p_stun::attr::Realm::new(REALM).unwrap()).unwrap();
    b.add(&p2p_stun::attr::Nonce::new(&nonce).unwrap()).unwrap();
    b.add(&p2p_stun::attr::PasswordAlgorithms::List(&[Alg::Md5]))
        .unwrap();
    b.add(&Alg::Md5).unwrap();
    b.add_message_integrity(&key).unwrap();
    let resp = net.raw(from, &req).unwrap();
    assert_eq!(code_of(&resp), Some(400));
}

#[test]
fn stale_nonce_438_is_recovered_by_the_client() {
    let config = {
        let mut c = server_config();
        c.nonce_lifetime = SECS(300);
        c
    };
    let mut net = Net::new(config, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    // The refresh at 480 s carries a nonce minted at 0 s: stale.
    net.run_for(SECS(500));
    assert_eq!(responses_with_code(&net, 438), 1);
    assert!(net.client_events[c]
        .iter()
        .any(|e| matches!(e, ClientEvent::Refreshed { .. })));
    assert_eq!(net.clients[c].state(), ClientState::Allocated);
}

// ---------------------------------------------------------------- allocation errors

#[test]
fn second_allocate_on_the_same_five_tuple_is_437_and_a_retransmission_is_answered_again() {
    // Nonces outlive the test, so that the kept request stays signed right.
    let config = {
        let mut c = server_config();
        c.nonce_lifetime = SECS(3600);
        c
    };
    let mut net = Net::new(config, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let a = net.allocated_client(cfg.clone());
    let first_ok = net
        .server_out
        .iter()
        .find(|t| code_of(&t.contents).is_none())
        .unwrap()
        .contents
        .clone();
    // The signed Allocate, retransmitted: the same success, byte for byte.
    let signed = requests(&net, a, Method::ALLOCATE).pop().unwrap();
    assert_eq!(net.raw(net.locals[a], &signed).unwrap(), first_ok);
    // After a Refresh the Allocate is long done: the same transaction is
    // now a second Allocate, 437 (not the dropped response, nor nothing).
    net.run_for(SECS(10 * 60));
    assert!(net.client_events[a]
        .iter()
        .any(|e| matches!(e, ClientEvent::Refreshed { .. })));
    let late = net.raw(net.locals[a], &signed).unwrap();
    assert_eq!(code_of(&late), Some(437), "{late:02x?}");
    // A second client on the same 5-tuple (a new transaction): 437.
    let b = net.add_client({
        let mut c = cfg;
        c.rng_seed = Some(999);
        c
    });
    net.start(b);
    net.step();
    assert_eq!(net.failure(b), Some(Some(437)));
    assert_eq!(net.server.allocation_count(), 1);
}

#[test]
fn another_user_on_an_existing_allocation_is_441() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let a = net.allocated_client(cfg);
    let from = net.locals[a];
    let resp = net.signed(from, Method::REFRESH, "bob", "builder", |_| {});
    assert_eq!(code_of(&resp), Some(441));
    let resp = net.signed(from, Method::CREATE_PERMISSION, "bob", "builder", |b| {
        b.add(&XorPeerAddress(peer())).unwrap();
    });
    assert_eq!(code_of(&resp), Some(441));
    // Without an allocation: 437.
    let resp = net.signed(
        "192.0.2.77:1".parse().unwrap(),
        Method::REFRESH,
        "bob",
        "builder",
        |_| {},
    );
    assert_eq!(code_of(&resp), Some(437));
}

#[test]
fn tcp_relaying_over_udp_is_400_and_other_protocols_442() {
    let mut net = Net::new(server_config(), users());
    // RFC 6062 §5.1: a TCP relayed address only over TCP or TLS.
    let mut cfg = net.client_config(0, "alice", "wonderland");
    cfg.requested_transport = PROTO_TCP;
    let c = net.add_client(cfg);
    net.start(c);
    net.step();
    assert_eq!(net.failure(c), Some(Some(400)));
    // Neither UDP nor TCP (132: SCTP): 442.
    let mut cfg = net.client_config(1, "alice", "wonderland");
    cfg.requested_transport = 132;
    let c = net.add_client(cfg);
    net.start(c);
    net.step();
    assert_eq!(net.failure(c), Some(Some(442)));
    // Missing REQUESTED-TRANSPORT: 400.
    let resp = net.signed(
        "192.0.2.77:1".parse().unwrap(),
        Method::ALLOCATE,
        "bob",
        "builder",
        |_| {},
    );
    assert_eq!(code_of(&resp), Some(400));
}

#[test]
fn peer_of_the_other_family_is_443() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let a = net.allocated_client(cfg);
    let v6peer: SocketAddr = "[2001:db8::7]:9000".parse().unwrap();
    assert_eq!(
        net.clients[a].create_permission(net.now, &[v6peer.ip()]),
        Err(ClientError::FamilyMismatch)
    );
    let resp = net.signed(
        net.locals[a],
        Method::CREATE_PERMISSION,
        "alice",
        "wonderland",
        |b| {
            b.add(&XorPeerAddress(v6peer)).unwrap();
        },
    );
    assert_eq!(code_of(&resp), Some(443));
    let resp = net.signed(
        net.locals[a],
        Method::CHANNEL_BIND,
        "alice",
        "wonderland",
        |b| {
            b.add(&ChannelNumber(0x4000)).unwrap();
            b.add(&XorPeerAddress(v6peer)).unwrap();
        },
    );
    assert_eq!(code_of(&resp), Some(443));
    // Refresh asking for a family the allocation lacks: 443 too.
    let resp = net.signed(net.locals[a], Method::REFRESH, "alice", "wonderland", |b| {
        b.add(&RequestedAddressFamily(AddressFamily::V6)).unwrap();
    });
    assert_eq!(code_of(&resp), Some(443));
}

#[test]
fn per_user_quota_is_486() {
    let config = {
        let mut c = server_config();
        c.user_quota = Some(1);
        c
    };
    let mut net = Net::new(config, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    net.allocated_client(cfg);
    let cfg = net.client_config(1, "alice", "wonderland");
    let c = net.add_client(cfg);
    net.start(c);
    net.step();
    assert_eq!(net.failure(c), Some(Some(486)));
    // Another user is not affected.
    let cfg = net.client_config(2, "bob", "builder");
    net.allocated_client(cfg);
}

#[test]
fn no_free_port_or_total_quota_is_508() {
    let mut config = server_config();
    config.relayed_ports = 50000..=50000;
    let mut net = Net::new(config, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    net.allocated_client(cfg);
    let cfg = net.client_config(1, "bob", "builder");
    let c = net.add_client(cfg);
    net.start(c);
    net.step();
    assert_eq!(net.failure(c), Some(Some(508)));

    let config = {
        let mut c = server_config();
        c.total_quota = Some(1);
        c
    };
    let mut net = Net::new(config, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    net.allocated_client(cfg);
    let cfg = net.client_config(1, "bob", "builder");
    let c = net.add_client(cfg);
    net.start(c);
    net.step();
    assert_eq!(net.failure(c), Some(Some(508)));
}

#[test]
fn unknown_comprehension_required_attribute_is_420() {
    let mut net = Net::new(server_config(), users());
    let resp = net.signed(
        "192.0.2.77:1".parse().unwrap(),
        Method::ALLOCATE,
        "bob",
        "builder",
        |b| {
            b.add(&RequestedTransport(PROTO_UDP)).unwrap();
            b.add_raw(AttrType(0x7777), &[1, 2, 3, 4]).unwrap();
        },
    );
    assert_eq!(code_of(&resp), Some(420));
    let m = Message::decode(&resp).unwrap();
    let list: Vec<AttrType> = m
        .get::<UnknownAttributes>()
        .unwrap()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(list, [AttrType(0x7777)]);
}

#[test]
fn binding_requests_are_answered_with_the_mapped_address() {
    let mut net = Net::new(server_config(), users());
    let mut req = Vec::new();
    MessageBuilder::new(
        &mut req,
        MessageType::new(Method::BINDING, MessageClass::Request),
        TransactionId::new([9; 12]),
    )
    .unwrap();
    let from: SocketAddr = "192.0.2.5:777".parse().unwrap();
    let resp = net.raw(from, &req).unwrap();
    let m = Message::decode(&resp).unwrap();
    assert_eq!(m.typ().class, MessageClass::Success);
    assert_eq!(m.get::<XorMappedAddress>().unwrap().unwrap().0, from);
    assert!(is_turn_method(Method::ALLOCATE) && !is_turn_method(Method::BINDING));
}

// ---------------------------------------------------------------- lifetimes

#[test]
fn client_refreshes_keep_everything_alive_past_ten_minutes() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    let relay = net.relayed(c).unwrap();
    net.clients[c]
        .create_permission(net.now, &[peer().ip()])
        .unwrap();
    net.step();
    net.run_for(SECS(30 * 60));
    assert_eq!(net.server.allocation_count(), 1);
    let refreshes = net.client_events[c]
        .iter()
        .filter(|e| matches!(e, ClientEvent::Refreshed { .. }))
        .count();
    assert!(refreshes >= 3, "{refreshes} refreshes");
    // The permission was refreshed too: peer data still arrives.
    net.peer_send(peer(), relay, b"still here");
    assert_eq!(net.data_events(c), [(peer(), b"still here".to_vec())]);
    assert!(!net.server_events.iter().any(|e| matches!(
        e,
        ServerEvent::AllocationEnded {
            reason: EndReason::Expired,
            ..
        }
    )));
}

#[test]
fn allocation_expires_without_refresh_and_frees_its_port() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    net.clients.clear(); // the client goes away silently
    net.locals.clear();
    net.run_for(SECS(599));
    assert_eq!(net.server.allocation_count(), 1);
    net.run_for(SECS(2));
    assert_eq!(net.server.allocation_count(), 0);
    assert_eq!(net.server.relayed_addresses_in_use(), 0);
    assert!(net.server_events.iter().any(|e| matches!(
        e,
        ServerEvent::AllocationEnded {
            reason: EndReason::Expired,
            ..
        }
    )));
    assert_eq!(net.server.counters().allocations_expired, 1);
    let _ = c;
}

#[test]
fn requested_lifetime_is_clamped_between_default_and_max() {
    let mut net = Net::new(server_config(), users());
    let mut cfg = net.client_config(0, "alice", "wonderland");
    cfg.lifetime = Some(SECS(100_000));
    let c = net.allocated_client(cfg);
    assert!(matches!(
        net.client_events[c][0],
        ClientEvent::Allocated { lifetime, .. } if lifetime == SECS(3600)
    ));
    let mut cfg = net.client_config(1, "bob", "builder");
    cfg.lifetime = Some(SECS(10));
    let c = net.allocated_client(cfg);
    assert!(matches!(
        net.client_events[c][0],
        ClientEvent::Allocated { lifetime, .. } if lifetime == SECS(600)
    ));
}

#[test]
fn refresh_with_lifetime_zero_deletes() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    net.clients[c].close(net.now).unwrap();
    net.step();
    assert_eq!(net.clients[c].state(), ClientState::Closed);
    assert!(net.client_events[c].contains(&ClientEvent::Deleted));
    assert_eq!(net.server.allocation_count(), 0);
    assert_eq!(net.server.relayed_addresses_in_use(), 0);
    assert!(net.server_events.iter().any(|e| matches!(
        e,
        ServerEvent::AllocationEnded {
            reason: EndReason::Deleted,
            ..
        }
    )));
    let refresh = requests(&net, c, Method::REFRESH).pop().unwrap();
    assert_eq!(
        Message::decode(&refresh)
            .unwrap()
            .get::<Lifetime>()
            .unwrap(),
        Some(Lifetime(0))
    );
}

#[test]
fn permission_expires_after_300_seconds() {
    let mut net = Net::new(server_config(), users());
    let mut cfg = net.client_config(0, "alice", "wonderland");
    cfg.permission_refresh = SECS(100_000); // the client never refreshes
    let c = net.allocated_client(cfg);
    let relay = net.relayed(c).unwrap();
    net.clients[c]
        .create_permission(net.now, &[peer().ip()])
        .unwrap();
    net.step();
    net.run_for(SECS(299));
    net.peer_send(peer(), relay, b"a");
    net.clients[c].send_to(peer(), b"b").unwrap();
    net.step();
    assert_eq!(net.data_events(c).len(), 1);
    assert_eq!(net.peer_inbox.len(), 1);
    net.run_for(SECS(2));
    net.peer_send(peer(), relay, b"c");
    net.clients[c].send_to(peer(), b"d").unwrap();
    net.step();
    assert_eq!(net.data_events(c).len(), 1, "peer data dropped after 300 s");
    assert_eq!(net.peer_inbox.len(), 1, "client data dropped after 300 s");
    assert_eq!(net.server.counters().dropped_no_permission, 2);
}

#[test]
fn channel_expires_after_600_seconds_and_its_number_stays_reserved() {
    let mut net = Net::new(server_config(), users());
    let mut cfg = net.client_config(0, "alice", "wonderland");
    cfg.permission_refresh = SECS(100_000);
    let c = net.allocated_client(cfg);
    let relay = net.relayed(c).unwrap();
    let ch = net.clients[c].bind_channel(net.now, peer()).unwrap();
    net.step();
    assert_eq!(net.clients[c].channel(peer()), Some(ch));
    // Keep the permission (only) alive by hand.
    for _ in 0..2 {
        net.run_for(SECS(250));
        net.clients[c]
            .create_permission(net.now, &[peer().ip()])
            .unwrap();
        net.step();
    }
    net.run_for(SECS(90)); // 590 s
    net.clients[c].send_to(peer(), b"over the channel").unwrap();
    net.peer_send(peer(), relay, b"back");
    assert_eq!(net.peer_inbox.len(), 1);
    let last = net.server_out.last().unwrap();
    assert_eq!(last.contents[0] & 0xF0, 0x40, "ChannelData to the client");
    net.run_for(SECS(20)); // 610 s
    net.clients[c].send_to(peer(), b"too late").unwrap();
    net.step();
    assert_eq!(
        net.peer_inbox.len(),
        1,
        "ChannelData on an expired channel is dropped"
    );
    net.peer_send(peer(), relay, b"as a Data indication");
    let last = net.server_out.last().unwrap();
    assert_eq!(last.contents[0], 0x00, "a Data indication now");
    assert_eq!(net.data_events(c).len(), 2);
    // Within 5 minutes of expiry the number cannot go to another peer ...
    let other: SocketAddr = "198.51.100.8:9000".parse().unwrap();
    let resp = net.signed(
        net.locals[c],
        Method::CHANNEL_BIND,
        "alice",
        "wonderland",
        |b| {
            b.add(&ChannelNumber(ch)).unwrap();
            b.add(&XorPeerAddress(other)).unwrap();
        },
    );
    assert_eq!(code_of(&resp), Some(400));
    // ... but may be bound again to the same peer.
    let resp = net.signed(
        net.locals[c],
        Method::CHANNEL_BIND,
        "alice",
        "wonderland",
        |b| {
            b.add(&ChannelNumber(ch)).unwrap();
            b.add(&XorPeerAddress(peer())).unwrap();
        },
    );
    assert_eq!(code_of(&resp), None);
}

#[test]
fn channel_bind_conflicts_are_400() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    let ch = net.clients[c].bind_channel(net.now, peer()).unwrap();
    net.step();
    assert_eq!(ch, 0x4000);
    let from = net.locals[c];
    let other: SocketAddr = "198.51.100.8:9000".parse().unwrap();
    let cases: [(u16, SocketAddr, Option<u16>); 4] = [
        (0x4000, other, Some(400)),  // number bound to another peer
        (0x4001, peer(), Some(400)), // peer bound to another number
        (0x3FFF, other, Some(400)),  // out of range
        (0x4000, peer(), None),      // a refresh of the same binding
    ];
    for (n, p, want) in cases {
        let resp = net.signed(from, Method::CHANNEL_BIND, "alice", "wonderland", |b| {
            b.add(&ChannelNumber(n)).unwrap();
            b.add(&XorPeerAddress(p)).unwrap();
        });
        assert_eq!(code_of(&resp), want, "channel {n:#x} to {p}");
    }
    let resp = net.signed(from, Method::CHANNEL_BIND, "alice", "wonderland", |b| {
        b.add(&ChannelNumber(0x4002)).unwrap();
    });
    assert_eq!(code_of(&resp), Some(400), "no XOR-PEER-ADDRESS");
}

// ---------------------------------------------------------------- peer policy

#[test]
fn loopback_peer_is_refused_by_default_and_allowed_by_cidr() {
    let lo: SocketAddr = "127.0.0.1:9000".parse().unwrap();
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    net.clients[c]
        .create_permission(net.now, &[lo.ip()])
        .unwrap();
    net.clients[c].bind_channel(net.now, lo).unwrap();
    net.step();
    assert!(
        net.client_events[c].contains(&ClientEvent::PermissionFailed {
            peers: vec![lo.ip()],
            code: Some(403)
        })
    );
    assert!(net.client_events[c].iter().any(|e| matches!(
        e,
        ClientEvent::ChannelBindFailed {
            code: Some(403),
            ..
        }
    )));
    // The server's own addresses are refused too (but for its relayed IP:
    // see relay_to_relay_works_and_own_service_ports_stay_closed).
    let own: SocketAddr = "198.51.100.200:3478".parse().unwrap();
    let config = {
        let mut c = server_config();
        c.own_addresses = vec![own.ip()];
        c
    };
    let mut net = Net::new(config, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    let resp = net.signed(
        net.locals[c],
        Method::CREATE_PERMISSION,
        "alice",
        "wonderland",
        |b| {
            b.add(&XorPeerAddress(own)).unwrap();
        },
    );
    assert_eq!(code_of(&resp), Some(403));
    // One refused peer refuses the whole request.
    let resp = net.signed(
        net.locals[c],
        Method::CREATE_PERMISSION,
        "alice",
        "wonderland",
        |b| {
            b.add(&XorPeerAddress(peer())).unwrap();
            b.add(&XorPeerAddress("10.0.0.1:1".parse().unwrap()))
                .unwrap();
        },
    );
    assert_eq!(code_of(&resp), Some(403));

    let config = {
        let mut c = server_config();
        c.peer_policy = PeerPolicy::new().allow("127.0.0.0/8".parse().unwrap());
        c
    };
    let mut net = Net::new(config, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    net.clients[c]
        .create_permission(net.now, &[lo.ip()])
        .unwrap();
    net.step();
    net.clients[c].send_to(lo, b"hi lo").unwrap();
    net.step();
    assert_eq!(net.peer_inbox.len(), 1);
    assert_eq!(net.peer_inbox[0].to, lo);
}

/// A 403 says which rule refused which peer (the daemon logs it), and a
/// policy replaced on a running server (SIGHUP) applies to the next
/// permission of an allocation that already exists.
#[test]
fn a_refused_peer_is_reported_with_its_rule_and_a_new_policy_applies_to_live_allocations() {
    let private: SocketAddr = "10.1.2.3:9000".parse().unwrap();
    let denied: SocketAddr = "198.51.100.7:9000".parse().unwrap();
    let config = {
        let mut c = server_config();
        c.peer_policy = PeerPolicy::new().deny("198.51.100.0/24".parse().unwrap());
        c
    };
    let mut net = Net::new(config, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    net.clients[c]
        .create_permission(net.now, &[private.ip()])
        .unwrap();
    net.step();
    net.clients[c]
        .create_permission(net.now, &[denied.ip()])
        .unwrap();
    net.step();
    let refused: Vec<(IpAddr, PeerRefusal)> = net
        .server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::PeerRefused {
                peer, rule, user, ..
            } if user == "alice" => Some((*peer, *rule)),
            _ => None,
        })
        .collect();
    assert_eq!(
        refused,
        [
            (
                private.ip(),
                PeerRefusal::Special(
                    "private (RFC 1918: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)"
                )
            ),
            (
                denied.ip(),
                PeerRefusal::Denied("198.51.100.0/24".parse().unwrap())
            ),
        ]
    );
    // Reloaded: 10/8 opened, the deny list gone; the same allocation asks again.
    net.server
        .set_peer_policy(PeerPolicy::new().allow("10.0.0.0/8".parse().unwrap()));
    net.client_events[c].clear();
    net.clients[c]
        .create_permission(net.now, &[private.ip(), denied.ip()])
        .unwrap();
    net.step();
    assert!(
        net.client_events[c].contains(&ClientEvent::PermissionCreated {
            peers: vec![private.ip(), denied.ip()]
        }),
        "{:?}",
        net.client_events[c]
    );
}

/// Two clients both forced to TURN reach each other's relayed addresses
/// through the same server (as coturn allows), while the server's own
/// listening ports stay closed (CVE-2020-26262): a permission to the relay
/// IP is granted, but data to an own address goes only to a live relayed
/// address.
#[test]
fn relay_to_relay_works_and_own_service_ports_stay_closed() {
    let signaling: SocketAddr = "203.0.113.1:8080".parse().unwrap();
    let config = {
        let mut c = server_config();
        c.service_addresses = vec![signaling];
        c
    };
    let mut net = Net::new(config, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let a = net.allocated_client(cfg);
    let cfg = net.client_config(1, "bob", "builder");
    let b = net.allocated_client(cfg);
    let (ra, rb) = (net.relayed(a).unwrap(), net.relayed(b).unwrap());
    assert_eq!(ra.ip(), listen().ip(), "relayed and listening IPs are one");
    net.clients[a]
        .create_permission(net.now, &[rb.ip()])
        .unwrap();
    net.clients[b]
        .create_permission(net.now, &[ra.ip()])
        .unwrap();
    net.step();
    for c in [a, b] {
        assert!(
            !net.client_events[c]
                .iter()
                .any(|e| matches!(e, ClientEvent::PermissionFailed { .. })),
            "{:?}",
            net.client_events[c]
        );
    }

    // a → b by Send indication: out of ra to rb, and in at rb from ra.
    net.clients[a].send_to(rb, b"hello bob").unwrap();
    net.step();
    assert_eq!(net.peer_inbox.len(), 1);
    let p = net.peer_inbox.remove(0);
    assert_eq!((p.from, p.to), (ra, rb));
    net.peer_send(p.from, p.to, &p.bytes);
    assert_eq!(net.data_events(b), vec![(ra, b"hello bob".to_vec())]);

    // b → a over a channel.
    net.clients[b].bind_channel(net.now, ra).unwrap();
    net.step();
    assert!(!net.client_events[b]
        .iter()
        .any(|e| matches!(e, ClientEvent::ChannelBindFailed { .. })));
    net.clients[b].send_to(ra, b"hi alice").unwrap();
    net.step();
    let p = net.peer_inbox.remove(0);
    assert_eq!((p.from, p.to), (rb, ra));
    net.peer_send(p.from, p.to, &p.bytes);
    assert_eq!(net.data_events(a), vec![(rb, b"hi alice".to_vec())]);

    // The permission to the relay IP opens no listening port of the
    // server, nor a relay port without a live allocation.
    let dropped = net.server.counters().dropped_no_permission;
    let free_relay_port = SocketAddr::new(ra.ip(), 50999);
    assert!(!net.server.is_relayed_address(free_relay_port));
    for to in [listen(), signaling, free_relay_port] {
        net.clients[a].send_to(to, b"attack").unwrap();
        net.step();
    }
    assert!(net.peer_inbox.is_empty(), "{:?}", net.peer_inbox);
    assert!(net.server_out.iter().all(|t| t.destination != listen()));
    assert_eq!(net.server.counters().dropped_no_permission, dropped + 3);
    // A channel to them is refused outright.
    for to in [listen(), signaling, free_relay_port] {
        let resp = net.signed(
            net.locals[a],
            Method::CHANNEL_BIND,
            "alice",
            "wonderland",
            |m| {
                m.add(&ChannelNumber(0x4005)).unwrap();
                m.add(&XorPeerAddress(to)).unwrap();
            },
        );
        assert_eq!(code_of(&resp), Some(403), "channel to {to}");
    }
    // Once b's allocation is gone, its relayed address is closed to a.
    net.clients[b].close(net.now).unwrap();
    net.step();
    assert!(!net.server.is_relayed_address(rb));
    net.clients[a].send_to(rb, b"late").unwrap();
    net.step();
    assert!(net.peer_inbox.is_empty());
    // The deny list still wins over the relay IP.
    let config = {
        let mut c = server_config();
        c.peer_policy = PeerPolicy::new().deny("203.0.113.0/24".parse().unwrap());
        c
    };
    let mut net = Net::new(config, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let a = net.allocated_client(cfg);
    let ra = net.relayed(a).unwrap();
    let resp = net.signed(
        net.locals[a],
        Method::CREATE_PERMISSION,
        "alice",
        "wonderland",
        |m| {
            m.add(&XorPeerAddress(ra)).unwrap();
        },
    );
    assert_eq!(code_of(&resp), Some(403));
}

#[test]
fn denied_cidr_is_refused() {
    let config = {
        let mut c = server_config();
        c.peer_policy = PeerPolicy::new().deny("198.51.100.0/24".parse().unwrap());
        c
    };
    let mut net = Net::new(config, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    net.clients[c]
        .create_permission(net.now, &[peer().ip()])
        .unwrap();
    net.step();
    assert!(net.client_events[c].iter().any(|e| matches!(
        e,
        ClientEvent::PermissionFailed {
            code: Some(403),
            ..
        }
    )));
}

// ---------------------------------------------------------------- data

#[test]
fn send_and_data_indications_both_ways() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    let relay = net.relayed(c).unwrap();
    assert_eq!(
        net.clients[c].send_to(peer(), b"x"),
        Err(ClientError::NoPermission)
    );
    net.clients[c]
        .create_permission(net.now, &[peer().ip()])
        .unwrap();
    net.step();
    assert!(
        net.client_events[c].contains(&ClientEvent::PermissionCreated {
            peers: vec![peer().ip()]
        })
    );
    net.clients[c].send_to(peer(), b"hello peer").unwrap();
    net.step();
    let sent = net.client_out[c].last().unwrap();
    let m = Message::decode(sent).unwrap();
    assert_eq!(
        m.typ(),
        MessageType::new(Method::SEND, MessageClass::Indication)
    );
    assert_eq!(net.peer_inbox.len(), 1);
    assert_eq!(net.peer_inbox[0].from, relay);
    assert_eq!(net.peer_inbox[0].to, peer());
    assert_eq!(net.peer_inbox[0].bytes, b"hello peer");

    net.peer_send(peer(), relay, b"hello client");
    let last = net.server_out.last().unwrap();
    let m = Message::decode(&last.contents).unwrap();
    assert_eq!(
        m.typ(),
        MessageType::new(Method::DATA, MessageClass::Indication)
    );
    assert_eq!(net.data_events(c), [(peer(), b"hello client".to_vec())]);
    // Any port of a permitted IP may send; other IPs may not.
    let same_ip: SocketAddr = "198.51.100.7:1234".parse().unwrap();
    net.peer_send(same_ip, relay, b"other port");
    net.peer_send("198.51.100.99:9000".parse().unwrap(), relay, b"stranger");
    assert_eq!(net.data_events(c).len(), 2);
    let k = net.server.counters();
    assert_eq!((k.packets_to_peer, k.bytes_to_peer), (1, 10));
    assert_eq!((k.packets_to_client, k.bytes_to_client), (2, 22));
    assert_eq!(k.dropped_no_permission, 1);
}

#[test]
fn channel_data_both_ways() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    let relay = net.relayed(c).unwrap();
    let ch = net.clients[c].bind_channel(net.now, peer()).unwrap();
    net.step();
    assert!(net.client_events[c].contains(&ClientEvent::ChannelBound {
        peer: peer(),
        channel: ch
    }));
    assert!(net
        .server_events
        .iter()
        .any(|e| matches!(e, ServerEvent::ChannelBound { channel, .. } if *channel == ch)));
    net.clients[c].send_to(peer(), b"via channel").unwrap();
    net.step();
    let sent = net.client_out[c].last().unwrap();
    assert_eq!(u16::from_be_bytes([sent[0], sent[1]]), ch);
    assert_eq!(sent.len(), 4 + 11, "no padding over UDP");
    assert_eq!(net.peer_inbox.last().unwrap().bytes, b"via channel");
    net.peer_send(peer(), relay, b"reply");
    let last = net.server_out.last().unwrap();
    assert_eq!(&last.contents[..4], &[(ch >> 8) as u8, ch as u8, 0, 5]);
    assert_eq!(net.data_events(c), [(peer(), b"reply".to_vec())]);
    // Another port of the same IP has no channel: a Data indication.
    net.peer_send("198.51.100.7:9001".parse().unwrap(), relay, b"other");
    assert_eq!(net.server_out.last().unwrap().contents[0], 0);
}

#[test]
fn over_tcp_channel_data_is_padded() {
    let mut net = Net::new(server_config(), users());
    let mut cfg = net.client_config(0, "alice", "wonderland");
    cfg.transport = Transport::Tcp;
    let c = net.allocated_client(cfg);
    let relay = net.relayed(c).unwrap();
    net.clients[c].bind_channel(net.now, peer()).unwrap();
    net.step();
    net.clients[c].send_to(peer(), b"abcde").unwrap();
    net.step();
    assert_eq!(net.client_out[c].last().unwrap().len(), 12);
    net.peer_send(peer(), relay, b"abcde");
    let last = net.server_out.last().unwrap();
    assert_eq!(last.transport, Transport::Tcp);
    assert_eq!(last.contents.len(), 12);
    assert_eq!(net.data_events(c), [(peer(), b"abcde".to_vec())]);
}

#[test]
fn one_create_permission_for_several_peers() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    let relay = net.relayed(c).unwrap();
    let peers: Vec<IpAddr> = ["198.51.100.7", "198.51.100.8", "192.0.2.200"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    net.clients[c].create_permission(net.now, &peers).unwrap();
    net.step();
    assert_eq!(requests(&net, c, Method::CREATE_PERMISSION).len(), 1);
    let created = net
        .server_events
        .iter()
        .filter(|e| matches!(e, ServerEvent::PermissionCreated { .. }))
        .count();
    assert_eq!(created, 3);
    for p in &peers {
        net.peer_send(SocketAddr::new(*p, 1), relay, b"x");
    }
    assert_eq!(net.data_events(c).len(), 3);
}

#[test]
fn bandwidth_cap_drops_the_excess() {
    let config = {
        let mut c = server_config();
        c.bandwidth = Some(Bandwidth::new(1000, 1000));
        c
    };
    let mut net = Net::new(config, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    net.clients[c]
        .create_permission(net.now, &[peer().ip()])
        .unwrap();
    net.step();
    for _ in 0..10 {
        net.clients[c].send_to(peer(), &[7; 400]).unwrap();
    }
    net.step();
    assert_eq!(net.peer_inbox.len(), 2);
    net.run_for(SECS(1));
    for _ in 0..10 {
        net.clients[c].send_to(peer(), &[7; 400]).unwrap();
    }
    net.step();
    assert_eq!(net.peer_inbox.len(), 4);
    assert_eq!(net.server.counters().dropped_bandwidth, 16);
}

// ---------------------------------------------------------------- EVEN-PORT, families

#[test]
fn even_port_reserves_the_next_port_for_a_token() {
    let mut net = Net::new(server_config(), users());
    let mut cfg = net.client_config(0, "alice", "wonderland");
    cfg.even_port = Some(true);
    let a = net.allocated_client(cfg);
    let (relay, token) = match &net.client_events[a][0] {
        ClientEvent::Allocated {
            relayed,
            reservation_token,
            ..
        } => (relayed[0], reservation_token.unwrap()),
        e => panic!("{e:?}"),
    };
    assert_eq!(relay.port() % 2, 0);
    let mut cfg = net.client_config(1, "bob", "builder");
    cfg.reservation_token = Some(token);
    let b = net.allocated_client(cfg);
    assert_eq!(net.relayed(b).unwrap().port(), relay.port() + 1);
    // A token is good once.
    let mut cfg = net.client_config(2, "bob", "builder");
    cfg.reservation_token = Some(token);
    let c = net.add_client(cfg);
    net.start(c);
    net.step();
    assert_eq!(net.failure(c), Some(Some(508)));
}

#[test]
fn unused_reservations_expire_after_30_seconds() {
    let mut net = Net::new(server_config(), users());
    let mut cfg = net.client_config(0, "alice", "wonderland");
    cfg.even_port = Some(true);
    let a = net.allocated_client(cfg);
    let token = match &net.client_events[a][0] {
        ClientEvent::Allocated {
            reservation_token, ..
        } => reservation_token.unwrap(),
        e => panic!("{e:?}"),
    };
    assert_eq!(net.server.relayed_addresses_in_use(), 2);
    net.run_for(SECS(31));
    assert_eq!(net.server.relayed_addresses_in_use(), 1);
    let mut cfg = net.client_config(1, "bob", "builder");
    cfg.reservation_token = Some(token);
    let b = net.add_client(cfg);
    net.start(b);
    net.step();
    assert_eq!(net.failure(b), Some(Some(508)));
}

#[test]
fn dual_stack_allocation_and_address_family_errors() {
    let mut both = server_config();
    both.relayed_ips = vec![
        "203.0.113.1".parse().unwrap(),
        "2001:db8::1".parse().unwrap(),
    ];
    let mut net = Net::new(both, users());
    let mut cfg = net.client_config(0, "alice", "wonderland");
    cfg.dual_stack = true;
    let c = net.allocated_client(cfg);
    match &net.client_events[c][0] {
        ClientEvent::Allocated {
            relayed,
            family_error,
            ..
        } => {
            assert_eq!(relayed.len(), 2);
            assert!(relayed[0].is_ipv4() && relayed[1].is_ipv6());
            assert_eq!(*family_error, None);
        }
        e => panic!("{e:?}"),
    }
    // IPv6 peers work on the IPv6 relayed address.
    let v6peer: SocketAddr = "[2001:db8:5::7]:9000".parse().unwrap();
    net.clients[c]
        .create_permission(net.now, &[v6peer.ip()])
        .unwrap();
    net.step();
    net.clients[c].send_to(v6peer, b"six").unwrap();
    net.step();
    assert_eq!(
        net.peer_inbox.last().unwrap().from.ip().to_string(),
        "2001:db8::1"
    );

    // A server without IPv6: the IPv4 half succeeds with ADDRESS-ERROR-CODE 440 ...
    let mut net = Net::new(server_config(), users());
    let mut cfg = net.client_config(0, "alice", "wonderland");
    cfg.dual_stack = true;
    let c = net.allocated_client(cfg);
    assert!(matches!(
        &net.client_events[c][0],
        ClientEvent::Allocated { relayed, family_error: Some((AddressFamily::V6, 440)), .. } if relayed.len() == 1
    ));
    // ... and REQUESTED-ADDRESS-FAMILY IPv6 alone is 440.
    let mut cfg = net.client_config(1, "bob", "builder");
    cfg.requested_family = Some(AddressFamily::V6);
    let d = net.add_client(cfg);
    net.start(d);
    net.step();
    assert_eq!(net.failure(d), Some(Some(440)));
    // Both family attributes at once, or ADDITIONAL-ADDRESS-FAMILY IPv4: 400.
    let resp = net.signed(
        "192.0.2.77:1".parse().unwrap(),
        Method::ALLOCATE,
        "bob",
        "builder",
        |b| {
            b.add(&RequestedTransport(PROTO_UDP)).unwrap();
            b.add(&RequestedAddressFamily(AddressFamily::V4)).unwrap();
            b.add(&AdditionalAddressFamily(AddressFamily::V6)).unwrap();
        },
    );
    assert_eq!(code_of(&resp), Some(400));
    let resp = net.signed(
        "192.0.2.78:1".parse().unwrap(),
        Method::ALLOCATE,
        "bob",
        "builder",
        |b| {
            b.add(&RequestedTransport(PROTO_UDP)).unwrap();
            b.add(&AdditionalAddressFamily(AddressFamily::V4)).unwrap();
        },
    );
    assert_eq!(code_of(&resp), Some(400));
    // RESERVATION-TOKEN with EVEN-PORT: 400.
    let resp = net.signed(
        "192.0.2.79:1".parse().unwrap(),
        Method::ALLOCATE,
        "bob",
        "builder",
        |b| {
            b.add(&RequestedTransport(PROTO_UDP)).unwrap();
            b.add(&EvenPort {
                reserve_next: false,
            })
            .unwrap();
            b.add(&ReservationToken([1; 8])).unwrap();
        },
    );
    assert_eq!(code_of(&resp), Some(400));
}

#[test]
fn allocate_timeout_is_reported() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let mut client = TurnClient::new(cfg);
    client.handle_timeout(net.now);
    let mut sends = 0;
    let mut events = Vec::new();
    for _ in 0..100 {
        while let Some(o) = client.poll_output() {
            match o {
                ClientOutput::Transmit(_) => sends += 1,
                ClientOutput::Event(e) => events.push(e),
                other => panic!("{other:?}"),
            }
        }
        match client.poll_timeout() {
            Some(t) => {
                net.now = t;
                client.handle_timeout(t);
            }
            None => break,
        }
    }
    assert_eq!(sends, 7, "Rc = 7 transmissions");
    assert_eq!(
        events,
        [ClientEvent::AllocationFailed {
            code: None,
            reason: "timed out".into()
        }]
    );
    assert_eq!(net.now - net.t0, Duration::from_millis(39_500));
}

#[test]
fn closing_the_tcp_connection_deletes_its_allocation_at_once() {
    // RFC 8656 §3.1 / §7: over TCP or TLS, an allocation lives as long as
    // the connection that made it.
    let config = {
        let mut c = server_config();
        c.user_quota = Some(1);
        c
    };
    let mut net = Net::new(config, users());
    let mut cfg = net.client_config(0, "alice", "wonderland");
    cfg.transport = Transport::Tcp;
    let c = net.allocated_client(cfg);
    let relay = net.relayed(c).unwrap();
    net.clients[c]
        .create_permission(net.now, &[peer().ip()])
        .unwrap();
    net.step();
    let ft = FiveTuple::new(Transport::Tcp, listen(), net.locals[c]);
    // A UDP 5-tuple with the same addresses has no connection: nothing happens.
    let udp = FiveTuple {
        transport: Transport::Udp,
        ..ft
    };
    let seen = net.server_events.len();
    assert!(!net.server.connection_closed(&udp));
    assert_eq!(net.server.allocation_count(), 1);

    assert!(net.server.connection_closed(&ft));
    assert!(!net.server.connection_closed(&ft), "only once");
    assert_eq!(net.server.allocation_count(), 0);
    assert_eq!(
        net.server.relayed_addresses_in_use(),
        0,
        "the relayed port is free"
    );
    assert!(!net.server.is_relayed_address(relay));
    assert_eq!(net.server.counters().allocations_closed, 1);
    assert_eq!(net.server.counters().allocations_active, 0);
    net.step();
    assert!(net.bound.is_empty(), "the relayed socket is closed");
    let ended = net.server_events[seen..].to_vec();
    assert!(matches!(
        ended.as_slice(),
        [ServerEvent::AllocationEnded { reason: EndReason::ConnectionClosed, user, five_tuple, relayed, .. }]
            if user == "alice" && *five_tuple == ft && relayed == &[relay]
    ));
    // Peers get nothing through the old relayed address.
    let out = net.server_out.len();
    net.peer_send(peer(), relay, b"late");
    assert_eq!(net.server_out.len(), out);
    assert!(net.peer_inbox.is_empty());
    // No timer of the old allocation fires later.
    net.run_for(SECS(3600));
    assert_eq!(net.server.counters().allocations_expired, 0);
    // The quota is freed: a new connection may allocate again.
    let mut cfg = net.client_config(1, "alice", "wonderland");
    cfg.transport = Transport::Tcp;
    net.allocated_client(cfg);
}

#[test]
fn legacy_channel_numbers_above_0x4fff_are_accepted() {
    // RFC 8656 §12 reserves 0x5000..=0x7FFF, but RFC 5766 clients (coturn's
    // turnutils_uclient among them) bind them: accepted for compatibility.
    let mut net = Net::new(server_config(), users());
    let c = net.allocated_client(net.client_config(0, "alice", "wonderland"));
    let from = net.locals[c];
    let relay = net.relayed(c).unwrap();
    for (n, peer) in [
        (0x5000u16, peer()),
        (0x7FFF, "198.51.100.8:9000".parse().unwrap()),
    ] {
        let resp = net.signed(from, Method::CHANNEL_BIND, "alice", "wonderland", |b| {
            b.add(&ChannelNumber(n)).unwrap();
            b.add(&XorPeerAddress(peer)).unwrap();
        });
        assert_eq!(code_of(&resp), None, "channel 0x{n:04x}");
        let mut cd = Vec::new();
        p2p_stun::ChannelData::new(n, b"legacy")
            .unwrap()
            .encode(&mut cd, false)
            .unwrap();
        assert_eq!(net.raw(from, &cd), None);
        let got = net.peer_inbox.pop().unwrap();
        assert_eq!(
            (got.from, got.to, got.bytes.as_slice()),
            (relay, peer, &b"legacy"[..])
        );
        net.peer_send(peer, relay, b"back");
        let back = net.server_out.last().unwrap();
        assert_eq!(back.destination, from);
        let cd = p2p_stun::ChannelData::decode(&back.contents).unwrap();
        assert_eq!((cd.channel(), cd.data()), (n, &b"back"[..]));
    }
    // Outside RFC 5766's range: 400.
    let resp = net.signed(from, Method::CHANNEL_BIND, "alice", "wonderland", |b| {
        b.add(&ChannelNumber(0x8000)).unwrap();
        b.add(&XorPeerAddress(peer())).unwrap();
    });
    assert_eq!(code_of(&resp), Some(400));
}

/// Data sent right after asking for the permission, before the server
/// answered, still reaches the peer: the client puts the CreatePermission
/// on the wire before the Send indication queued after it (the server
/// handles them in order, so the permission exists when the data comes).
#[test]
fn data_sent_right_after_create_permission_follows_it() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    net.clients[c]
        .create_permission(net.now, &[peer().ip()])
        .unwrap();
    net.clients[c].send_to(peer(), b"first").unwrap();
    net.step();
    assert_eq!(net.peer_inbox.len(), 1, "the first datagram was dropped");
    assert_eq!(net.server.counters().dropped_no_permission, 0);
}

/// `close` while the Allocate is in flight: the server grants it anyway,
/// and the client deletes it at once instead of leaving it to expire (it
/// would count against the user's quota for its whole lifetime).
#[test]
fn close_during_allocation_deletes_what_the_server_grants() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.add_client(cfg);
    net.start(c);
    // By hand: the first Allocate, its 401, the signed Allocate; the
    // server grants it, and its answer is still on the way when the
    // client closes.
    let now = net.now;
    let first = net.next_client_transmit(c).expect("an Allocate");
    net.deliver_to_server(&first);
    let challenge = net.next_server_transmit().expect("a 401");
    let _ = net.clients[c].handle_input(now, challenge.as_datagram());
    let signed = net.next_client_transmit(c).expect("the signed Allocate");
    net.deliver_to_server(&signed);
    let granted = net.next_server_transmit().expect("the success response");
    assert_eq!(net.server.allocation_count(), 1);
    net.clients[c].close(now).unwrap();
    let _ = net.clients[c].handle_input(now, granted.as_datagram());
    net.run_for(SECS(5));
    assert_eq!(net.server.allocation_count(), 0, "granted, then deleted");
    assert_eq!(net.clients[c].state(), ClientState::Closed);
    assert!(
        !net.client_events[c]
            .iter()
            .any(|e| matches!(e, ClientEvent::Allocated { .. })),
        "{:?}",
        net.client_events[c]
    );
}

#[test]
fn the_client_sends_nothing_before_its_first_handle_timeout() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.add_client(cfg);
    assert_eq!(net.clients[c].state(), ClientState::Idle);
    assert_eq!(net.clients[c].poll_timeout(), None);
    assert!(net.clients[c].poll_output().is_none());
    net.start(c);
    assert_eq!(net.clients[c].state(), ClientState::Allocating);
    let first = net.next_client_transmit(c).expect("the Allocate");
    let m = Message::decode(&first.contents).unwrap();
    assert_eq!(
        m.typ(),
        MessageType::new(Method::ALLOCATE, MessageClass::Request)
    );
    // A second handle_timeout does not start a second Allocate.
    net.start(c);
    assert!(net.next_client_transmit(c).is_none());
}

#[test]
fn a_client_closed_before_it_starts_never_allocates() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.add_client(cfg);
    net.clients[c].close(net.now).unwrap();
    net.start(c);
    net.step();
    assert_eq!(net.clients[c].state(), ClientState::Closed);
    assert!(net.client_out[c].is_empty());
}

#[test]
fn datagrams_not_from_the_server_are_not_the_clients() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    let local = net.locals[c];
    let mut cd = Vec::new();
    p2p_stun::ChannelData::new(0x4000, b"x")
        .unwrap()
        .encode(&mut cd, false)
        .unwrap();
    let now = net.now;
    let client = &mut net.clients[c];
    assert_eq!(
        client.handle_input(now, Datagram::udp(peer(), local, &cd)),
        Handled::NotMine,
        "from a peer, not the server"
    );
    assert_eq!(
        client.handle_input(now, Datagram::udp(listen(), local, b"hello")),
        Handled::NotMine,
        "neither STUN nor ChannelData"
    );
    assert_eq!(
        client.handle_input(now, Datagram::udp(listen(), local, &cd)),
        Handled::Taken,
        "ChannelData from the server (on no bound channel)"
    );
}

/// RFC 8489 §10 / §6.2.2: a client redirected over TCP whose driver cannot
/// open the connection to the alternate says so, and the Allocate under
/// way fails at once instead of after the 39.5 s reliable-transport
/// timeout; nothing is left to time out.
#[test]
fn a_connection_that_cannot_be_opened_fails_the_allocate_at_once_not_after_39_5_s() {
    let t0 = std::time::Instant::now();
    let mut cc = ClientConfig::new(
        "192.0.2.9:5000".parse().unwrap(),
        "203.0.113.2:3478".parse().unwrap(),
        "u",
        "p",
    );
    cc.transport = Transport::Tcp;
    cc.rng_seed = Some(1);
    let mut client = TurnClient::new(cc);
    client.handle_timeout(t0);
    let mut sent = 0;
    while let Some(o) = client.poll_output() {
        if matches!(o, ClientOutput::Transmit(_)) {
            sent += 1;
        }
    }
    assert_eq!(sent, 1, "the Allocate went out");
    assert!(client.poll_timeout().is_some(), "its timer runs");
    client.connection_failed("connection refused");
    let mut events = Vec::new();
    while let Some(o) = client.poll_output() {
        if let ClientOutput::Event(e) = o {
            events.push(e);
        }
    }
    assert_eq!(
        events,
        [ClientEvent::AllocationFailed {
            code: None,
            reason: "connection refused".into()
        }]
    );
    assert_eq!(client.state(), ClientState::Failed);
    assert_eq!(client.poll_timeout(), None);
    // Later timeouts find nothing to fail again.
    client.handle_timeout(t0 + SECS(40));
    assert!(client.poll_output().is_none());
}
