//! The server under abuse (issue 18), on a simulated clock: password
//! guessing is throttled per client address, one address cannot take the
//! reserved part of the capacity, and ephemeral (REST) users together are
//! held to their share so that the configured users still allocate.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use common::*;
use p2p_stun::attr::{
    ErrorCode, Lifetime, Nonce, PasswordAlgorithm, Realm, RequestedTransport, Username, PROTO_UDP,
};
use p2p_stun::{Key, Message, MessageBuilder, MessageClass, MessageType, Method, TransactionId};
use p2p_turn::*;

fn udp(b: &mut MessageBuilder<&mut Vec<u8>>) {
    b.add(&RequestedTransport(PROTO_UDP)).unwrap();
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The signed Allocate's answer: `Some(None)` success, `Some(Some(code))`
/// an error, `None` no answer at all.
fn allocate(net: &mut Net, from: SocketAddr, user: &str, password: &str) -> Option<Option<u16>> {
    net.signed_over(Transport::Udp, from, Method::ALLOCATE, user, password, udp)
        .map(|r| code_of(&r))
}

#[test]
fn credentials_past_the_failure_limit_are_dropped_unchecked_and_unanswered() {
    let mut config = server_config();
    config.auth_failure_limit = Some(AuthLimit::new(5, 60));
    let mut net = Net::new(config, users());
    let guesser = addr("192.0.2.66:4000");
    for k in 0..5 {
        let r = allocate(&mut net, guesser, "alice", &format!("guess-{k}"));
        assert_eq!(r, Some(Some(401)), "guess {k} is answered");
    }
    // Past the burst: even the right password is dropped, unchecked, with
    // no answer (a guess cannot succeed; the client retransmits).
    assert_eq!(allocate(&mut net, guesser, "alice", "guess-5"), None);
    assert_eq!(allocate(&mut net, guesser, "alice", "wonderland"), None);
    let k = net.server.counters();
    assert_eq!((k.auth_failures, k.auth_throttled), (5, 2));
    assert_eq!(net.server.allocation_count(), 0);
    // Another address is not affected.
    let other = addr("192.0.2.67:4000");
    assert_eq!(allocate(&mut net, other, "alice", "wonderland"), Some(None));
    // The guesser gets one more try a second (60 a minute).
    net.now += Duration::from_secs(1);
    assert_eq!(
        allocate(&mut net, guesser, "alice", "wonderland"),
        Some(None)
    );
}

/// The nonce a 401 gives `from`.
fn nonce_for(net: &mut Net, from: SocketAddr) -> String {
    let mut req = Vec::new();
    let mut b = MessageBuilder::new(
        &mut req,
        MessageType::new(Method::ALLOCATE, MessageClass::Request),
        TransactionId::new([3; 12]),
    )
    .unwrap();
    udp(&mut b);
    let challenge = net.raw_over(Transport::Udp, from, &req).expect("a 401");
    let msg = Message::decode(&challenge).unwrap();
    msg.get::<Nonce>().unwrap().unwrap().as_str().to_owned()
}

/// A signed Allocate from `from` with `nonce` (minted for whoever): the
/// answer's code (`Some(None)` a success), `None` when unanswered.
fn allocate_with_nonce(
    net: &mut Net,
    from: SocketAddr,
    nonce: &str,
    password: &str,
) -> Option<Option<u16>> {
    let key = Key::long_term("alice", REALM, password, PasswordAlgorithm::Md5).unwrap();
    let mut req = Vec::new();
    let mut b = MessageBuilder::new(
        &mut req,
        MessageType::new(Method::ALLOCATE, MessageClass::Request),
        TransactionId::new([4; 12]),
    )
    .unwrap();
    udp(&mut b);
    b.add(&Username::new("alice").unwrap()).unwrap();
    b.add(&Realm::new(REALM).unwrap()).unwrap();
    b.add(&Nonce::new(nonce).unwrap()).unwrap();
    b.add_message_integrity(&key).unwrap();
    net.raw_over(Transport::Udp, from, &req).map(|r| {
        let m = Message::decode(&r).unwrap();
        match m.typ().class {
            MessageClass::Error => Some(m.get::<ErrorCode>().unwrap().unwrap().code()),
            _ => None,
        }
    })
}

#[test]
fn a_forged_source_cannot_get_its_owner_throttled() {
    let mut net = Net::new(server_config(), users());
    // The forger gets nonces at its own address and sends wrong passwords
    // as if from the victim's (UDP lets it): the nonces were not minted
    // for the victim, so the failures count against the foreign-nonce
    // key, not the victim's address.
    let forger = addr("198.51.100.9:4000");
    let victim = addr("192.0.2.10:5000");
    let foreign = nonce_for(&mut net, forger);
    for k in 0..100 {
        let _ = allocate_with_nonce(&mut net, victim, &foreign, &format!("guess-{k}"));
    }
    let k = net.server.counters();
    assert_eq!(k.auth_failures, 20, "the foreign-nonce key's burst");
    assert_eq!(k.auth_throttled, 80);
    // The victim, with the nonce minted for it, is not throttled.
    assert_eq!(
        allocate(&mut net, victim, "alice", "wonderland"),
        Some(None)
    );
}

#[test]
fn foreign_nonces_do_not_escape_the_limit_nor_reveal_a_right_password() {
    let mut net = Net::new(server_config(), users());
    let guesser = addr("192.0.2.66:4000");
    let elsewhere = addr("192.0.2.66:4001");
    let foreign = nonce_for(&mut net, elsewhere);
    // A foreign nonce is not fresh for this 5-tuple: the right password
    // would get a 438 (checked, then stale), a wrong one a 401.
    assert_eq!(
        allocate_with_nonce(&mut net, guesser, &foreign, "wonderland"),
        Some(Some(438))
    );
    for k in 0..20 {
        assert_eq!(
            allocate_with_nonce(&mut net, guesser, &foreign, &format!("guess-{k}")),
            Some(Some(401))
        );
    }
    // Past the foreign-nonce key's burst, nothing signed with a foreign
    // nonce is checked: no 438 tells the right password apart.
    assert_eq!(
        allocate_with_nonce(&mut net, guesser, &foreign, "wonderland"),
        None
    );
    // The guesser's own nonces still count against its address.
    for k in 0..20 {
        assert_eq!(
            allocate(&mut net, guesser, "alice", &format!("own-{k}")),
            Some(Some(401))
        );
    }
    assert_eq!(allocate(&mut net, guesser, "alice", "wonderland"), None);
}

#[test]
fn a_hundred_thousand_guesses_cost_a_fixed_table_and_get_a_burst_of_answers() {
    let mut net = Net::new(server_config(), users());
    let guesser = addr("192.0.2.66:4000");
    let mut answered = 0;
    // 2000 guesses in one second (the daemon took 100,000 in 5.1 s).
    for k in 0..2000 {
        if allocate(&mut net, guesser, "alice", &format!("guess-{k}")).is_some() {
            answered += 1;
        }
        if k % 2 == 1 {
            net.now += Duration::from_micros(1000);
        }
    }
    // The default: 20 at once, then one a second.
    assert!((20..=22).contains(&answered), "{answered} guesses answered");
    let k = net.server.counters();
    assert_eq!(k.auth_failures, answered);
    assert_eq!(k.auth_throttled, 2000 - answered);
}

#[test]
fn one_address_cannot_take_the_reserve_and_another_still_allocates() {
    let mut config = server_config();
    config.relayed_ports = 50000..=50099; // capacity 100, 10 reserved
    config.user_quota = None;
    let mut net = Net::new(config, users());
    let heavy = |k: u16| SocketAddr::new("192.0.2.200".parse().unwrap(), 10000 + k);
    let mut granted = 0u16;
    let refused = loop {
        match allocate(&mut net, heavy(granted), "alice", "wonderland") {
            Some(None) => granted += 1,
            other => break other,
        }
        assert!(granted <= 100);
    };
    assert_eq!((granted, refused), (90, Some(Some(508))));
    assert_eq!(net.server.counters().refused_reserve, 1);
    // Light addresses (fewer than 4 allocations each) share the reserve.
    for k in 0..4 {
        let light = SocketAddr::new("198.51.100.20".parse().unwrap(), 20000 + k);
        assert_eq!(allocate(&mut net, light, "bob", "builder"), Some(None));
    }
    let fifth = addr("198.51.100.20:20004");
    assert_eq!(allocate(&mut net, fifth, "bob", "builder"), Some(Some(508)));
    assert_eq!(
        allocate(&mut net, addr("198.51.100.21:1"), "bob", "builder"),
        Some(None)
    );
    // An allocation the heavy address gives back is its to take again.
    let gone = net.signed(heavy(0), Method::REFRESH, "alice", "wonderland", |b| {
        b.add(&Lifetime(0)).unwrap();
    });
    assert_eq!(code_of(&gone), None);
    assert_eq!(
        allocate(&mut net, heavy(200), "alice", "wonderland"),
        Some(Some(508)),
        "still over the line: 94 held"
    );
    assert_eq!(net.server.allocation_count(), 94);
}

/// Configured users and REST credentials, as the daemon's store.
struct Mixed {
    users: StaticUsers,
    rest: RestSecret,
}

impl CredentialStore for Mixed {
    fn key(&self, u: &str, r: &str, a: PasswordAlgorithm, w: SystemTime) -> Option<Key> {
        self.users
            .key(u, r, a, w)
            .or_else(|| self.rest.key(u, r, a, w))
    }
    fn is_ephemeral(&self, u: &str) -> bool {
        self.users
            .key(u, REALM, PasswordAlgorithm::Md5, SystemTime::UNIX_EPOCH)
            .is_none()
    }
}

#[test]
fn ephemeral_users_hold_at_most_their_share_and_configured_users_get_the_rest() {
    let mut config = server_config();
    config.relayed_ports = 50000..=50099;
    config.ephemeral_share_percent = 50;
    let secret = RestSecret::new("north");
    let store = Mixed {
        users: users(),
        rest: secret.clone(),
    };
    let mut net = Net::new(config, store);
    // A farmer with 100 REST users, each from an address of its own (so
    // that neither the user quota nor the reserve stops it).
    let mut granted = 0;
    let mut refused = Vec::new();
    for k in 0..100u32 {
        let user = RestSecret::username(net.wall() + Duration::from_secs(3600), &format!("f{k}"));
        let from = SocketAddr::from(([10, 0, (k / 250) as u8, (k % 250) as u8 + 1], 5000));
        match allocate(&mut net, from, &user, &secret.password(&user)) {
            Some(None) => granted += 1,
            other => refused.push(other),
        }
    }
    assert_eq!(granted, 50);
    assert!(refused.iter().all(|r| *r == Some(Some(486))), "{refused:?}");
    assert_eq!(net.server.counters().refused_ephemeral_share, 50);
    // The configured users still allocate.
    for k in 0..10 {
        let from = SocketAddr::new("198.51.100.30".parse().unwrap(), 30000 + k);
        let user = if k % 2 == 0 { "alice" } else { "bob" };
        let password = if k % 2 == 0 { "wonderland" } else { "builder" };
        assert_eq!(allocate(&mut net, from, user, password), Some(None), "{k}");
    }
}

#[test]
fn one_address_farming_ephemeral_users_leaves_the_share_s_reserve_to_others() {
    let mut config = server_config();
    config.relayed_ports = 50000..=50099;
    config.ephemeral_share_percent = 50; // 50, of which 5 kept for light addresses
    let secret = RestSecret::new("north");
    let store = Mixed {
        users: users(),
        rest: secret.clone(),
    };
    let mut net = Net::new(config, store);
    let farmer = "192.0.2.99".parse().unwrap();
    let mut granted = 0u16;
    let refused = loop {
        let user = RestSecret::username(
            net.wall() + Duration::from_secs(3600),
            &format!("f{granted}"),
        );
        let from = SocketAddr::new(farmer, 10000 + granted);
        match allocate(&mut net, from, &user, &secret.password(&user)) {
            Some(None) => granted += 1,
            other => break other,
        }
        assert!(granted <= 100);
    };
    assert_eq!((granted, refused), (45, Some(Some(486))));
    // An ephemeral user from a light address still gets in.
    let user = RestSecret::username(net.wall() + Duration::from_secs(3600), "light");
    let from = addr("198.51.100.40:5000");
    assert_eq!(
        allocate(&mut net, from, &user, &secret.password(&user)),
        Some(None)
    );
}
