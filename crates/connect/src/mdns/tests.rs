//! The resolver on a simulated clock.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2p_proto::{Datagram, Handled, Machine, Transport};
use simple_dns::Packet;

use super::*;

const NAME: &str = "1f0e8a2c-6d3b-4b1e-9c11-7d0b9f3e2a10.local";
const OTHER: &str = "77aa5c1e-0f1d-4c2b-8e3a-9b8c7d6e5f40.local";

fn local() -> SocketAddr {
    "0.0.0.0:5353".parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn drain(r: &mut MdnsResolver) -> (Vec<Transmit>, Vec<MdnsEvent>) {
    let (mut t, mut e) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        match r.poll_output() {
            Some(MdnsOutput::Transmit(x)) => t.push(x),
            Some(MdnsOutput::Event(x)) => e.push(x),
            None => break,
        }
    }
    (t, e)
}

fn answer(r: &mut MdnsResolver, now: Instant, records: &[(&str, &str, u32)]) -> Handled {
    let records: Vec<AddressRecord> = records
        .iter()
        .map(|(n, a, ttl)| AddressRecord {
            name: (*n).to_owned(),
            address: ip(a),
            ttl: *ttl,
        })
        .collect();
    let bytes = encode_response(&records).unwrap();
    let from = "192.168.1.7:5353".parse().unwrap();
    r.handle_input(now, Datagram::new(Transport::Udp, from, local(), &bytes))
}

fn asked(t: &Transmit) -> Vec<String> {
    let p = Packet::parse(&t.contents).unwrap();
    let mut names: Vec<String> = p.questions.iter().map(|q| q.qname.to_string()).collect();
    names.dedup();
    names
}

#[test]
fn a_name_is_queried_at_once_then_at_doubling_intervals_then_given_up_at_the_timeout() {
    let t0 = Instant::now();
    let mut r = MdnsResolver::new(MdnsConfig::new(local()));
    r.handle_timeout(t0);
    r.resolve(t0, NAME).unwrap();
    let (sent, events) = drain(&mut r);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].source, sent[0].destination), (local(), MDNS_V4));
    assert_eq!(asked(&sent[0]), vec![NAME.to_owned()]);
    assert!(events.is_empty());
    // Driven by poll_timeout alone, bounded in steps and time.
    let mut queries = vec![Duration::ZERO];
    let mut gave_up = None;
    for _ in 0..20 {
        let Some(at) = r.poll_timeout() else { break };
        r.handle_timeout(at);
        let (sent, events) = drain(&mut r);
        queries.extend(sent.iter().map(|_| at - t0));
        if let Some(MdnsEvent::Unresolved { name }) = events.first() {
            assert_eq!(name, NAME);
            gave_up = Some(at - t0);
        }
    }
    assert_eq!(
        queries,
        [0, 1, 3].map(Duration::from_secs).to_vec(),
        "RFC 6762 §5.2: one second, then doubling"
    );
    assert_eq!(gave_up, Some(DEFAULT_TIMEOUT));
    assert_eq!(r.poll_timeout(), None);
    assert!(!r.is_resolving(NAME));
}

#[test]
fn a_name_asked_before_the_start_is_queried_at_the_first_handle_timeout() {
    let t0 = Instant::now();
    let mut r = MdnsResolver::new(MdnsConfig::new(local()));
    r.resolve(t0, NAME).unwrap();
    assert_eq!(r.poll_output(), None);
    assert_eq!(r.poll_timeout(), Some(t0));
    r.handle_timeout(t0);
    assert_eq!(drain(&mut r).0.len(), 1);
}

#[test]
fn an_answer_resolves_the_name_once_and_it_is_remembered() {
    let t0 = Instant::now();
    let mut r = MdnsResolver::new(MdnsConfig::new(local()));
    r.handle_timeout(t0);
    r.resolve(t0, NAME).unwrap();
    r.resolve(t0, &NAME.to_uppercase()).unwrap();
    assert_eq!(drain(&mut r).0.len(), 1, "one query for one name");
    let later = t0 + Duration::from_millis(5);
    assert_eq!(
        answer(
            &mut r,
            later,
            &[(NAME, "192.168.1.7", 120), (NAME, "fd00::7", 120)]
        ),
        Handled::Taken
    );
    let (sent, events) = drain(&mut r);
    assert!(sent.is_empty());
    assert_eq!(
        events,
        vec![MdnsEvent::Resolved {
            name: NAME.to_owned(),
            addresses: vec![ip("192.168.1.7"), ip("fd00::7")],
        }]
    );
    // A repeated answer says nothing new; no more queries or deadlines.
    assert_eq!(
        answer(&mut r, later, &[(NAME, "192.168.1.7", 120)]),
        Handled::Taken
    );
    assert_eq!(drain(&mut r).1, Vec::new());
    assert_eq!(r.poll_timeout(), None);
    // Asked again (another candidate of the same host): at once, no query.
    r.resolve(later, NAME).unwrap();
    let (sent, events) = drain(&mut r);
    assert!(sent.is_empty());
    assert!(matches!(events.as_slice(), [MdnsEvent::Resolved { .. }]));
}

#[test]
fn answers_for_other_names_are_not_learnt_and_a_goodbye_forgets() {
    let t0 = Instant::now();
    let mut r = MdnsResolver::new(MdnsConfig::new(local()));
    r.handle_timeout(t0);
    r.resolve(t0, NAME).unwrap();
    drain(&mut r);
    // Someone else's name, a goodbye and a multicast address teach nothing.
    let _ = answer(
        &mut r,
        t0,
        &[
            (OTHER, "192.168.1.9", 120),
            (NAME, "192.168.1.8", 0),
            (NAME, "224.0.0.1", 120),
        ],
    );
    assert_eq!(drain(&mut r).1, Vec::new());
    assert!(r.is_resolving(NAME));
    let _ = answer(&mut r, t0, &[(NAME, "192.168.1.7", 120)]);
    assert_eq!(drain(&mut r).1.len(), 1);
    // The responder withdraws the name: it is asked for anew.
    let _ = answer(&mut r, t0, &[(NAME, "192.168.1.7", 0)]);
    r.resolve(t0, NAME).unwrap();
    let (sent, events) = drain(&mut r);
    assert_eq!((sent.len(), events.len()), (1, 0));
    // OTHER was never asked for: asking now queries.
    r.resolve(t0, OTHER).unwrap();
    assert_eq!(drain(&mut r).0.len(), 1);
}

#[test]
fn datagrams_elsewhere_are_not_the_resolvers_and_noise_is_dropped() {
    let t0 = Instant::now();
    let mut r = MdnsResolver::new(MdnsConfig::new(local()));
    r.handle_timeout(t0);
    let from: SocketAddr = "192.168.1.7:5353".parse().unwrap();
    let elsewhere: SocketAddr = "192.168.1.2:40000".parse().unwrap();
    let bytes = encode_response(&[]).unwrap();
    assert_eq!(
        r.handle_input(t0, Datagram::new(Transport::Udp, from, elsewhere, &bytes)),
        Handled::NotMine
    );
    assert_eq!(
        r.handle_input(t0, Datagram::new(Transport::Tcp, from, local(), &bytes)),
        Handled::NotMine
    );
    // A query from another host, garbage: read, dropped, nothing out.
    let query = encode_query(&[OTHER]).unwrap();
    for junk in [&query[..], b"\x00\x01garbage"] {
        assert_eq!(
            r.handle_input(t0, Datagram::new(Transport::Udp, from, local(), junk)),
            Handled::Taken
        );
    }
    assert_eq!(r.poll_output(), None);
}

#[test]
fn bad_names_are_refused_and_the_number_of_names_is_bounded() {
    let t0 = Instant::now();
    let mut r = MdnsResolver::new(MdnsConfig::new(local()));
    assert_eq!(
        r.resolve(t0, "example.com"),
        Err(MdnsError::BadName("example.com".to_owned()))
    );
    // Names asked for before the start go out together: eight a query.
    for i in 0..MAX_NAMES {
        r.resolve(t0, &format!("host-{i}.local")).unwrap();
    }
    r.handle_timeout(t0);
    let (sent, _) = drain(&mut r);
    assert_eq!(sent.len(), MAX_NAMES / MAX_NAMES_PER_QUERY);
    r.resolve(t0, "one-too-many.local").unwrap();
    assert_eq!(
        drain(&mut r).1,
        vec![MdnsEvent::Unresolved {
            name: "one-too-many.local".to_owned()
        }]
    );
}

#[test]
fn an_ipv6_resolver_queries_the_ipv6_group_on_its_interface() {
    let t0 = Instant::now();
    let v6: SocketAddr = "[::]:5353".parse().unwrap();
    let mut r = MdnsResolver::new(MdnsConfig::new(v6));
    r.handle_timeout(t0);
    r.resolve(t0, NAME).unwrap();
    let (sent, _) = drain(&mut r);
    assert_eq!(sent[0].destination, "[ff02::fb]:5353".parse().unwrap());
}
