//! Two endpoints on an in-memory link and a simulated clock: handshakes
//! both ways and in both versions, data, close_notify, fingerprint
//! mismatches, loss, timeouts, garbage.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_dtls::{
    Certificate, CloseReason, DtlsConfig, DtlsEndpoint, DtlsError, DtlsEvent, DtlsOutput, DtlsRole,
    DtlsVersion, Fingerprint, HashFunction,
};
use p2p_proto::{Datagram, FiveTuple, Handled, Machine, Transport};
use rand::{Rng, SeedableRng};

const LATENCY: Duration = Duration::from_millis(10);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn a_addr() -> SocketAddr {
    addr("192.0.2.1:5000")
}

fn b_addr() -> SocketAddr {
    addr("198.51.100.2:6000")
}

/// One side: its endpoint, what it said, and what is on the way to it.
struct Side {
    ep: DtlsEndpoint,
    events: Vec<DtlsEvent>,
    /// Datagrams on the way to this side: (arrival, bytes).
    inbound: VecDeque<(Instant, Vec<u8>)>,
    /// How many datagrams this side sent.
    sent: usize,
    /// Every datagram this side sent, in order.
    log: Vec<Vec<u8>>,
}

impl Side {
    fn new(ep: DtlsEndpoint) -> Side {
        Side {
            ep,
            events: Vec::new(),
            inbound: VecDeque::new(),
            sent: 0,
            log: Vec::new(),
        }
    }

    fn data(&self) -> Vec<Vec<u8>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                DtlsEvent::Data(d) => Some(d.clone()),
                _ => None,
            })
            .collect()
    }

    fn closed(&self) -> Vec<CloseReason> {
        self.events
            .iter()
            .filter_map(|e| match e {
                DtlsEvent::Closed(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    fn connected(&self) -> Option<(Fingerprint, DtlsVersion)> {
        self.events.iter().find_map(|e| match e {
            DtlsEvent::Connected {
                remote_fingerprint,
                version,
                ..
            } => Some((remote_fingerprint.clone(), *version)),
            _ => None,
        })
    }
}

/// Drops datagram number `n` (from 0) of a side when it says so.
type Loss = Box<dyn FnMut(usize, &[u8]) -> bool>;

struct Pair {
    t0: Instant,
    now: Instant,
    a: Side,
    b: Side,
    loss_a_to_b: Loss,
    loss_b_to_a: Loss,
}

fn config(cert: &Certificate, role: DtlsRole, remote: &Certificate, seed: u64) -> DtlsConfig {
    DtlsConfig::new(cert.clone(), role, vec![remote.fingerprint()]).with_seed(seed)
}

impl Pair {
    fn new(a: DtlsConfig, b: DtlsConfig) -> Pair {
        let t0 = Instant::now();
        let a = DtlsEndpoint::new(a, FiveTuple::new(Transport::Udp, a_addr(), b_addr())).unwrap();
        let b = DtlsEndpoint::new(b, FiveTuple::new(Transport::Udp, b_addr(), a_addr())).unwrap();
        Pair {
            t0,
            now: t0,
            a: Side::new(a),
            b: Side::new(b),
            loss_a_to_b: Box::new(|_, _| false),
            loss_b_to_a: Box::new(|_, _| false),
        }
    }

    /// A (role_a) and B, each trusting the other's certificate.
    fn with_roles(role_a: DtlsRole, dtls13_a: bool, dtls13_b: bool) -> Pair {
        let (ca, cb) = certs();
        let mut a = config(&ca, role_a, &cb, 1);
        let mut b = config(&cb, role_a.other(), &ca, 2);
        a.dtls13 = dtls13_a;
        b.dtls13 = dtls13_b;
        Pair::new(a, b)
    }

    fn start(&mut self) {
        let now = self.now;
        self.a.ep.handle_timeout(now);
        self.b.ep.handle_timeout(now);
        self.drain();
    }

    /// Every output of both sides: transmits onto the link (unless lost),
    /// events into the logs.
    fn drain(&mut self) {
        pump(&mut self.a, &mut self.b, &mut self.loss_a_to_b, self.now);
        pump(&mut self.b, &mut self.a, &mut self.loss_b_to_a, self.now);
    }

    /// Jump to the next arrival or timer and act on it. False when
    /// nothing is left to happen.
    fn step(&mut self) -> bool {
        let next = [
            self.a.inbound.front().map(|p| p.0),
            self.b.inbound.front().map(|p| p.0),
            self.a.ep.poll_timeout(),
            self.b.ep.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { return false };
        self.now = self.now.max(next);
        let now = self.now;
        for (side, from) in [(&mut self.a, b_addr()), (&mut self.b, a_addr())] {
            let to = side.ep.path().local;
            while side.inbound.front().is_some_and(|p| p.0 <= now) {
                let (_, bytes) = side.inbound.pop_front().unwrap();
                let h = side.ep.handle_input(now, Datagram::udp(from, to, &bytes));
                assert_eq!(h, Handled::Taken);
            }
            if side.ep.poll_timeout().is_some_and(|t| t <= now) {
                side.ep.handle_timeout(now);
            }
        }
        self.drain();
        true
    }

    /// Steps until `done`, at most 1000 steps and `limit` of simulated
    /// time; whether `done` came.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Pair) -> bool) -> bool {
        for _ in 0..1000 {
            if done(self) {
                return true;
            }
            if self.now - self.t0 > limit || !self.step() {
                return done(self);
            }
        }
        done(self)
    }

    fn connect(&mut self) {
        self.start();
        let ok = self.run_until(Duration::from_secs(5), |p| {
            p.a.ep.is_connected() && p.b.ep.is_connected()
        });
        assert!(
            ok,
            "no connection: a {:?} b {:?}",
            self.a.events, self.b.events
        );
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }
}

/// Every output of `from`: transmits onto the link to `to` (unless lost),
/// events into its log.
fn pump(from: &mut Side, to: &mut Side, loss: &mut Loss, now: Instant) {
    while let Some(o) = from.ep.poll_output() {
        match o {
            DtlsOutput::Transmit(t) => {
                assert_eq!(t.source, from.ep.path().local);
                assert_eq!(t.destination, from.ep.path().remote);
                let n = from.sent;
                from.sent += 1;
                from.log.push(t.contents.clone());
                if !loss(n, &t.contents) {
                    to.inbound.push_back((now + LATENCY, t.contents));
                }
            }
            DtlsOutput::Event(e) => from.events.push(e),
            other => panic!("unexpected output {other:?}"),
        }
    }
}

fn certs() -> (Certificate, Certificate) {
    (
        Certificate::generate_with_name("alice").unwrap(),
        Certificate::generate_with_name("bob").unwrap(),
    )
}

#[test]
fn a_handshake_completes_with_either_side_the_client_in_either_version_and_data_flows_both_ways() {
    let cases = [
        (DtlsRole::Client, true, true, DtlsVersion::Dtls13),
        (DtlsRole::Server, true, true, DtlsVersion::Dtls13),
        (DtlsRole::Client, false, false, DtlsVersion::Dtls12),
        (DtlsRole::Server, false, false, DtlsVersion::Dtls12),
        // One side speaks 1.2 only: they meet at 1.2.
        (DtlsRole::Client, true, false, DtlsVersion::Dtls12),
        (DtlsRole::Client, false, true, DtlsVersion::Dtls12),
    ];
    for (role_a, v13a, v13b, version) in cases {
        let what = format!("a {role_a}, a 1.3 {v13a}, b 1.3 {v13b}");
        let mut p = Pair::with_roles(role_a, v13a, v13b);
        p.connect();
        let (fa, va) = p.a.connected().expect(&what);
        let (fb, vb) = p.b.connected().expect(&what);
        assert_eq!((va, vb), (version, version), "{what}");
        assert_eq!(p.a.ep.version(), Some(version), "{what}");
        assert_eq!(fa, p.b.ep.local_fingerprint(), "{what}");
        assert_eq!(fb, p.a.ep.local_fingerprint(), "{what}");
        assert_eq!(p.a.ep.remote_fingerprint(), Some(&fa));
        assert!(fa.matches(p.a.ep.peer_certificate().unwrap()));
        assert_eq!(p.a.ep.role(), role_a);
        assert!(
            p.elapsed() < Duration::from_millis(100),
            "{what}: {:?}",
            p.elapsed()
        );

        let now = p.now;
        for i in 0..5u8 {
            p.a.ep.send(now, &[b'a', i]).unwrap();
            p.b.ep.send(now, &vec![i; 1000]).unwrap();
        }
        p.drain();
        p.run_until(Duration::from_secs(6), |p| {
            p.a.data().len() == 5 && p.b.data().len() == 5
        });
        let want_b: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'a', i]).collect();
        let want_a: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000]).collect();
        assert_eq!(p.b.data(), want_b, "{what}");
        assert_eq!(p.a.data(), want_a, "{what}");
        // Connected came once, before the data.
        assert!(
            matches!(p.b.events[0], DtlsEvent::Connected { .. }),
            "{what}"
        );
        assert!(p.a.closed().is_empty() && p.b.closed().is_empty(), "{what}");
    }
}

#[test]
fn the_first_handle_timeout_of_a_client_sends_a_client_hello_and_a_server_waits() {
    let (ca, cb) = certs();
    let path = FiveTuple::new(Transport::Udp, a_addr(), b_addr());
    let t0 = Instant::now();
    let mut client = DtlsEndpoint::new(config(&ca, DtlsRole::Client, &cb, 1), path).unwrap();
    assert!(client.poll_output().is_none() && client.poll_timeout().is_none());
    client.handle_timeout(t0);
    let Some(DtlsOutput::Transmit(t)) = client.poll_output() else {
        panic!("no ClientHello")
    };
    assert_eq!(
        (t.source, t.destination, t.transport),
        (a_addr(), b_addr(), Transport::Udp)
    );
    assert_eq!(t.contents.first(), Some(&22)); // a handshake record
    assert!(client
        .poll_timeout()
        .is_some_and(|t| t > t0 && t <= t0 + Duration::from_secs(2)));

    let mut server = DtlsEndpoint::new(config(&cb, DtlsRole::Server, &ca, 2), path).unwrap();
    server.handle_timeout(t0);
    assert!(server.poll_output().is_none());
    assert_eq!(server.poll_timeout(), Some(t0 + Duration::from_secs(30)));
}

#[test]
fn only_datagrams_of_the_rfc_7983_dtls_range_are_taken() {
    let (ca, cb) = certs();
    let path = FiveTuple::new(Transport::Udp, a_addr(), b_addr());
    let mut ep = DtlsEndpoint::new(config(&ca, DtlsRole::Server, &cb, 1), path).unwrap();
    let now = Instant::now();
    let d = |b: &'static [u8]| Datagram::udp(b_addr(), a_addr(), b);
    assert_eq!(ep.handle_input(now, d(b"")), Handled::NotMine);
    for first in (0u8..=19).chain(64..=255) {
        let bytes: &'static [u8] = Box::leak(vec![first, 0xfe, 0xfd].into_boxed_slice());
        assert_eq!(ep.handle_input(now, d(bytes)), Handled::NotMine, "{first}");
    }
    for first in 20u8..=63 {
        let bytes: &'static [u8] = Box::leak(vec![first, 0xfe, 0xfd].into_boxed_slice());
        assert_eq!(ep.handle_input(now, d(bytes)), Handled::Taken, "{first}");
    }
    assert!(!ep.is_closed(), "{:?}", ep.close_detail());
}

#[test]
fn close_notify_reaches_the_peer_as_peer_closed_promptly() {
    for role in [DtlsRole::Client, DtlsRole::Server] {
        for v13 in [false, true] {
            let mut p = Pair::with_roles(role, v13, v13);
            p.connect();
            let closed_at = p.now;
            p.a.ep.close(closed_at);
            p.drain();
            assert_eq!(p.a.closed(), vec![CloseReason::LocalClose]);
            assert!(p.a.ep.is_closed() && !p.a.ep.is_connected());
            p.run_until(Duration::from_secs(5), |p| !p.b.closed().is_empty());
            assert_eq!(
                p.b.closed(),
                vec![CloseReason::PeerClosed],
                "{role} 1.3 {v13}"
            );
            assert!(p.now - closed_at <= LATENCY, "{:?}", p.now - closed_at);
            // Nothing more: no second Closed, no timer, sends refused.
            p.run_until(Duration::from_secs(10), |_| false);
            assert_eq!(p.a.closed().len() + p.b.closed().len(), 2);
            assert_eq!(p.b.ep.poll_timeout(), None);
            assert_eq!(p.b.ep.send(p.now, b"late"), Err(DtlsError::Closed));
            assert_eq!(p.a.ep.send(p.now, b"late"), Err(DtlsError::Closed));
            assert_eq!(p.b.ep.close_reason(), Some(&CloseReason::PeerClosed));
        }
    }
}

#[test]
fn closing_during_the_handshake_or_before_the_start_ends_at_once() {
    let mut p = Pair::with_roles(DtlsRole::Client, true, true);
    p.a.ep.close(p.now);
    p.drain();
    assert_eq!(p.a.closed(), vec![CloseReason::LocalClose]);
    assert!(p.a.log.is_empty());
    p.b.ep.handle_timeout(p.now);
    p.b.ep.close(p.now);
    p.a.ep.close(p.now); // twice: nothing more
    p.drain();
    assert_eq!(p.b.closed(), vec![CloseReason::LocalClose]);
    assert_eq!(p.a.closed().len(), 1);
}

#[test]
fn send_is_refused_before_connected_after_close_and_when_too_large() {
    let mut p = Pair::with_roles(DtlsRole::Client, true, true);
    assert_eq!(p.a.ep.send(p.now, b"x"), Err(DtlsError::NotConnected));
    p.start();
    assert_eq!(p.a.ep.send(p.now, b"x"), Err(DtlsError::NotConnected));
    p.run_until(Duration::from_secs(5), |p| {
        p.a.ep.is_connected() && p.b.ep.is_connected()
    });
    let max = p.a.ep.max_payload();
    assert_eq!(max, 1200 - 37);
    let big = vec![0u8; max + 1];
    assert_eq!(
        p.a.ep.send(p.now, &big),
        Err(DtlsError::TooLarge { len: max + 1, max })
    );
    assert!(DtlsError::TooLarge { len: max + 1, max }
        .to_string()
        .contains("MTU"));
    p.a.ep.send(p.now, &big[..max]).unwrap();
    p.drain();
    assert!(p.a.log.last().unwrap().len() <= 1200);
    p.run_until(Duration::from_secs(1), |p| !p.b.data().is_empty());
    assert_eq!(p.b.data(), vec![vec![0u8; max]]);
    p.a.ep.close(p.now);
    assert_eq!(p.a.ep.send(p.now, b"x"), Err(DtlsError::Closed));
}

/// `DtlsConfig::server_cookie` (default off, as browsers and str0m): the
/// server answers the first ClientHello with its ServerHello, not with a
/// HelloVerifyRequest, which would cost a round trip before the first
/// message; set, the cookie exchange comes first.
#[test]
fn the_server_answers_the_first_client_hello_without_a_cookie_unless_asked() {
    for cookie in [false, true] {
        let (ca, cb) = certs();
        let mut a = config(&ca, DtlsRole::Client, &cb, 1);
        let mut b = config(&cb, DtlsRole::Server, &ca, 2);
        (a.dtls13, b.dtls13, b.server_cookie) = (false, false, cookie);
        let mut p = Pair::new(a, b);
        p.connect();
        let first = p.b.log.first().expect("the server answered");
        // A handshake record (22); its message type after the 13-byte
        // record header: ServerHello 2, HelloVerifyRequest 3.
        assert_eq!(first.first(), Some(&22));
        let want = if cookie { 3 } else { 2 };
        assert_eq!(first.get(13), Some(&want), "cookie exchange: {cookie}");
    }
}

#[test]
fn no_datagram_is_larger_than_the_mtu() {
    for v13 in [false, true] {
        let (ca, cb) = certs();
        let mut a = config(&ca, DtlsRole::Client, &cb, 1);
        let mut b = config(&cb, DtlsRole::Server, &ca, 2);
        (a.mtu, b.mtu, a.dtls13, b.dtls13) = (400, 400, v13, v13);
        let mut p = Pair::new(a, b);
        p.connect();
        for d in p.a.log.iter().chain(&p.b.log) {
            assert!(d.len() <= 400, "{} bytes", d.len());
        }
        // At most four flights (three in DTLS 1.3, no cookie exchange):
        // more datagrams than that means the certificate flights were
        // fragmented.
        let sent = p.a.log.len() + p.b.log.len();
        assert!(sent > 4, "fragmented flights: {sent} datagrams");
    }
}

#[test]
fn a_fingerprint_mismatch_ends_the_handshake_and_delivers_nothing() {
    for refuser in [DtlsRole::Client, DtlsRole::Server] {
        for (v13, v13_refuser) in [(false, false), (true, true), (false, true)] {
            let what = format!("refused by the {refuser}, 1.3 {v13} (refuser {v13_refuser})");
            let (ca, cb) = certs();
            let stranger = Certificate::generate().unwrap();
            // A trusts B; B was told someone else's fingerprint for A.
            let mut a = config(&ca, refuser.other(), &cb, 1);
            let mut b = config(&cb, refuser, &stranger, 2);
            (a.dtls13, b.dtls13) = (v13, v13_refuser);
            let mut p = Pair::new(a, b);
            p.start();
            // A sends data as soon as it can; B must deliver none of it.
            p.run_until(Duration::from_secs(40), |p| {
                p.a.ep.is_connected() || p.a.ep.is_closed()
            });
            if p.a.ep.is_connected() {
                for _ in 0..3 {
                    p.a.ep.send(p.now, b"secret").unwrap();
                }
                p.drain();
            }
            p.run_until(Duration::from_secs(40), |_| false);
            let want = CloseReason::FingerprintMismatch {
                peer: ca.fingerprint(),
            };
            assert_eq!(p.b.closed(), vec![want], "{what}");
            assert!(p.b.connected().is_none(), "{what}");
            assert!(p.b.data().is_empty(), "{what}");
            assert!(!p.b.ep.is_connected() && p.b.ep.remote_fingerprint().is_none());
            assert_eq!(p.b.ep.send(p.now, b"x"), Err(DtlsError::Closed));
            // A hears of it at once: DTLS 1.2 reads the bad_certificate
            // alert in the clear; a DTLS 1.3 peer reads only protected
            // records by then, and gets a close_notify.
            let told = if v13 {
                CloseReason::PeerClosed
            } else {
                CloseReason::PeerAlert { description: 42 }
            };
            assert_eq!(p.a.closed(), vec![told], "{what}: {:?}", p.a.events);
            assert!(
                p.elapsed() < Duration::from_millis(200),
                "{what}: {:?}",
                p.elapsed()
            );
            // The alert B sent is a fatal bad_certificate.
            let alert =
                p.b.log
                    .iter()
                    .find(|d| d.first() == Some(&21))
                    .expect("an alert");
            assert_eq!(&alert[alert.len() - 2..], &[2, 42], "{what}");
        }
    }
}

#[test]
fn fingerprints_given_late_hold_the_connection_and_its_data_until_they_come() {
    for v13 in [false, true] {
        let (ca, cb) = certs();
        let a = config(&ca, DtlsRole::Client, &cb, 1);
        let mut b = DtlsConfig::new(cb.clone(), DtlsRole::Server, vec![]).with_seed(2);
        b.dtls13 = v13;
        let mut p = Pair::new(a, b);
        p.start();
        assert!(p.run_until(Duration::from_secs(5), |p| p.a.ep.is_connected()));
        p.a.ep.send(p.now, b"early").unwrap();
        p.drain();
        p.run_until(Duration::from_secs(1), |p| {
            p.b.ep.peer_certificate().is_some() && p.a.inbound.is_empty() && p.b.inbound.is_empty()
        });
        assert!(p.b.events.is_empty(), "1.3 {v13}: {:?}", p.b.events);
        assert!(!p.b.ep.is_connected());
        // The answer arrives with A's fingerprint (sha-384 this time).
        p.b.ep
            .set_remote_fingerprints(vec![ca.fingerprint_with(HashFunction::Sha384)]);
        p.drain();
        assert_eq!(
            p.b.connected().map(|c| c.0),
            Some(ca.fingerprint_with(HashFunction::Sha384))
        );
        assert_eq!(p.b.data(), vec![b"early".to_vec()], "1.3 {v13}");
    }
}

#[test]
fn fingerprints_given_late_that_do_not_match_end_it_and_deliver_nothing() {
    let (ca, cb) = certs();
    let a = config(&ca, DtlsRole::Client, &cb, 1);
    let b = DtlsConfig::new(cb.clone(), DtlsRole::Server, vec![]).with_seed(2);
    let mut p = Pair::new(a, b);
    p.start();
    assert!(p.run_until(Duration::from_secs(5), |p| p.a.ep.is_connected()));
    p.a.ep.send(p.now, b"early").unwrap();
    p.drain();
    p.run_until(Duration::from_secs(1), |p| {
        p.a.inbound.is_empty() && p.b.inbound.is_empty()
    });
    p.b.ep.set_remote_fingerprints(vec![cb.fingerprint()]);
    p.drain();
    assert!(matches!(
        p.b.closed()[..],
        [CloseReason::FingerprintMismatch { .. }]
    ));
    assert!(p.b.data().is_empty() && p.b.connected().is_none());
    // The library had finished: A is told with a close_notify too.
    p.run_until(Duration::from_secs(1), |p| !p.a.closed().is_empty());
    assert_eq!(p.a.closed(), vec![CloseReason::PeerClosed]);
}

#[test]
fn no_fingerprint_ever_ends_the_handshake_at_the_timeout() {
    let (ca, cb) = certs();
    let a = config(&ca, DtlsRole::Client, &cb, 1);
    let mut b = DtlsConfig::new(cb, DtlsRole::Server, vec![]).with_seed(2);
    b.handshake_timeout = Duration::from_secs(8);
    let mut p = Pair::new(a, b);
    p.start();
    p.run_until(Duration::from_secs(20), |p| !p.b.closed().is_empty());
    assert_eq!(p.b.closed(), vec![CloseReason::HandshakeTimeout]);
    assert_eq!(p.elapsed(), Duration::from_secs(8));
    assert!(p.b.data().is_empty());
}

#[test]
fn the_handshake_survives_losing_its_first_flights() {
    for v13 in [false, true] {
        for role in [DtlsRole::Client, DtlsRole::Server] {
            let mut p = Pair::with_roles(role, v13, v13);
            // Each side loses its first two datagrams, then one in three.
            p.loss_a_to_b = Box::new(|n, _| n < 2 || n % 3 == 2);
            p.loss_b_to_a = Box::new(|n, _| n < 2 || n % 3 == 0);
            p.start();
            let ok = p.run_until(Duration::from_secs(25), |p| {
                p.a.ep.is_connected() && p.b.ep.is_connected()
            });
            assert!(
                ok,
                "1.3 {v13} a {role}: a {:?} b {:?}",
                p.a.events, p.b.events
            );
            assert!(p.elapsed() < Duration::from_secs(25), "{:?}", p.elapsed());
            assert!(p.a.sent + p.b.sent > 8, "retransmissions happened");
        }
    }
}

#[test]
fn the_last_flight_lost_is_sent_again_when_the_peer_repeats_its_own() {
    // DTLS 1.2: the server's ChangeCipherSpec + Finished (its last
    // datagrams) are lost; the client repeats its flight, the server
    // answers it again.
    let mut p = Pair::with_roles(DtlsRole::Client, false, false);
    p.loss_b_to_a = Box::new(|_, d| d.first() == Some(&20) || d.first() == Some(&23));
    p.start();
    p.run_until(Duration::from_millis(200), |p| p.b.ep.is_connected());
    assert!(p.b.ep.is_connected() && !p.a.ep.is_connected());
    p.loss_b_to_a = Box::new(|_, _| false);
    assert!(p.run_until(Duration::from_secs(10), |p| p.a.ep.is_connected()));
    assert!(
        p.elapsed() >= Duration::from_millis(500),
        "{:?}",
        p.elapsed()
    );
}

#[test]
fn total_loss_ends_both_sides_with_handshake_timeout_after_the_configured_time() {
    for v13 in [false, true] {
        let (ca, cb) = certs();
        let mut a = config(&ca, DtlsRole::Client, &cb, 1);
        let mut b = config(&cb, DtlsRole::Server, &ca, 2);
        (a.dtls13, b.dtls13) = (v13, v13);
        a.handshake_timeout = Duration::from_secs(12);
        b.handshake_timeout = Duration::from_secs(12);
        let mut p = Pair::new(a, b);
        p.loss_a_to_b = Box::new(|_, _| true);
        p.loss_b_to_a = Box::new(|_, _| true);
        p.start();
        p.run_until(Duration::from_secs(60), |p| {
            !p.a.closed().is_empty() && !p.b.closed().is_empty()
        });
        assert_eq!(p.a.closed(), vec![CloseReason::HandshakeTimeout]);
        assert_eq!(p.b.closed(), vec![CloseReason::HandshakeTimeout]);
        assert_eq!(p.elapsed(), Duration::from_secs(12), "1.3 {v13}");
        // The client retransmitted its ClientHello with a growing timeout:
        // at about 1, 3 and 7 s (each ±25 %).
        assert!((3..=5).contains(&p.a.sent), "{} ClientHellos", p.a.sent);
        assert_eq!(p.a.ep.poll_timeout(), None);
    }
}

#[test]
fn the_retransmission_limit_ends_the_handshake_before_the_timeout() {
    let (ca, cb) = certs();
    let mut a = config(&ca, DtlsRole::Client, &cb, 1);
    a.max_retransmissions = 2;
    a.handshake_timeout = Duration::from_secs(60);
    let b = config(&cb, DtlsRole::Server, &ca, 2);
    let mut p = Pair::new(a, b);
    p.loss_a_to_b = Box::new(|_, _| true);
    p.start();
    p.run_until(Duration::from_secs(60), |p| !p.a.closed().is_empty());
    assert_eq!(p.a.closed(), vec![CloseReason::HandshakeTimeout]);
    // Sent at 0, ~1 and ~3 s; given up at ~7 s (±25 % each).
    assert_eq!(p.a.sent, 3);
    assert!(
        (Duration::from_secs(5)..=Duration::from_secs(9)).contains(&p.elapsed()),
        "{:?}",
        p.elapsed()
    );
}

#[test]
fn a_fatal_alert_from_the_peer_ends_it_with_its_code() {
    for v13 in [true, false] {
        a_fatal_alert_ends_a_client(v13);
    }
}

fn a_fatal_alert_ends_a_client(v13: bool) {
    let (ca, cb) = certs();
    let path = FiveTuple::new(Transport::Udp, a_addr(), b_addr());
    let mut c = config(&ca, DtlsRole::Client, &cb, 1);
    c.dtls13 = v13;
    let mut client = DtlsEndpoint::new(c, path).unwrap();
    let t0 = Instant::now();
    client.handle_timeout(t0);
    while client.poll_output().is_some() {}
    // handshake_failure (40), fatal, in the clear, DTLS 1.2 framing.
    let alert = [21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 40];
    let h = client.handle_input(t0, Datagram::udp(b_addr(), a_addr(), &alert));
    assert_eq!(h, Handled::Taken);
    let mut closed = Vec::new();
    while let Some(o) = client.poll_output() {
        if let DtlsOutput::Event(DtlsEvent::Closed(r)) = o {
            closed.push(r);
        }
    }
    let want = CloseReason::PeerAlert { description: 40 };
    assert_eq!(closed, vec![want.clone()], "1.3 {v13}");
    assert!(want.to_string().contains("handshake_failure"));
}

#[test]
fn transmits_follow_the_path_set_when_ice_switches() {
    let mut p = Pair::with_roles(DtlsRole::Client, true, true);
    p.connect();
    let new_local = addr("203.0.113.9:7000");
    p.a.ep
        .set_path(FiveTuple::new(Transport::Tcp, new_local, b_addr()));
    p.a.ep.send(p.now, b"over there").unwrap();
    let Some(DtlsOutput::Transmit(t)) = p.a.ep.poll_output() else {
        panic!("no transmit")
    };
    assert_eq!(
        (t.source, t.destination, t.transport),
        (new_local, b_addr(), Transport::Tcp)
    );
}

/// Datagrams made of a real handshake's records, cut, flipped or random.
fn garbage(rng: &mut rand::rngs::StdRng, real: &[Vec<u8>]) -> Vec<u8> {
    let pick = &real[rng.gen_range(0..real.len())];
    match rng.gen_range(0..4) {
        0 => pick[..rng.gen_range(0..=pick.len())].to_vec(),
        1 => {
            let mut d = pick.clone();
            let i = rng.gen_range(0..d.len());
            d[i] ^= 1 << rng.gen_range(0..8);
            d
        }
        2 => {
            let mut d = vec![rng.gen_range(20..=63)];
            d.extend((0..rng.gen_range(0..200)).map(|_| rng.gen::<u8>()));
            d
        }
        _ => {
            let mut d = pick[..13.min(pick.len())].to_vec();
            d.extend((0..rng.gen_range(0..64)).map(|_| rng.gen::<u8>()));
            d
        }
    }
}

#[test]
fn garbage_never_panics_mid_handshake_or_connected() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut reference = Pair::with_roles(DtlsRole::Client, true, false);
    reference.connect();
    let real: Vec<Vec<u8>> = reference
        .a
        .log
        .iter()
        .chain(&reference.b.log)
        .cloned()
        .collect();
    for round in 0..40 {
        let role = if round % 2 == 0 {
            DtlsRole::Client
        } else {
            DtlsRole::Server
        };
        let mut p = Pair::with_roles(role, round % 3 != 0, round % 4 != 0);
        p.start();
        // Mid-handshake: after a few steps, garbage to both sides.
        for _ in 0..(round % 5) {
            p.step();
        }
        for _ in 0..20 {
            let g = garbage(&mut rng, &real);
            let now = p.now;
            let _ =
                p.a.ep
                    .handle_input(now, Datagram::udp(b_addr(), a_addr(), &g));
            let _ =
                p.b.ep
                    .handle_input(now, Datagram::udp(a_addr(), b_addr(), &g));
        }
        p.drain();
        p.run_until(Duration::from_secs(40), |p| {
            (p.a.ep.is_connected() || p.a.ep.is_closed())
                && (p.b.ep.is_connected() || p.b.ep.is_closed())
        });
        // Connected (or ended, once): garbage again.
        for _ in 0..50 {
            let g = garbage(&mut rng, &real);
            let now = p.now;
            let _ =
                p.a.ep
                    .handle_input(now, Datagram::udp(b_addr(), a_addr(), &g));
        }
        p.drain();
        assert!(p.a.closed().len() <= 1 && p.b.closed().len() <= 1);
        // Nobody delivered data that nobody sent.
        assert!(
            p.a.data().is_empty() && p.b.data().is_empty(),
            "round {round}"
        );
    }
}

#[test]
fn records_of_another_association_do_not_end_a_connected_one() {
    // Application data and alerts protected with someone else's keys
    // (another pair's records) are dropped, not fatal.
    let mut other = Pair::with_roles(DtlsRole::Client, false, false);
    other.connect();
    other.a.ep.send(other.now, b"not for you").unwrap();
    other.a.ep.close(other.now);
    other.drain();
    for v13 in [false, true] {
        let mut p = Pair::with_roles(DtlsRole::Client, v13, v13);
        p.connect();
        for d in other.a.log.iter().chain(&other.b.log) {
            let now = p.now;
            let _ =
                p.b.ep
                    .handle_input(now, Datagram::udp(a_addr(), b_addr(), d));
        }
        p.drain();
        assert!(
            p.b.ep.is_connected(),
            "1.3 {v13}: {:?} {:?}",
            p.b.events,
            p.b.ep.close_detail()
        );
        assert!(p.b.data().is_empty());
        p.a.ep.send(p.now, b"still here").unwrap();
        p.drain();
        p.run_until(Duration::from_secs(1), |p| !p.b.data().is_empty());
        assert_eq!(p.b.data(), vec![b"still here".to_vec()]);
    }
}
