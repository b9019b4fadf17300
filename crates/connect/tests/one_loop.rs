//! The contract of p2p-proto in one function: the same loop drives two
//! DTLS endpoints and two SCTP associations (two different machines, from
//! two crates) to the end of their handshakes and carries a message each
//! way, knowing nothing of either beyond `p2p_proto::Machine`. This is the
//! example docs/ARCHITECTURE.md shows.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use p2p_datachannel::{
    ChannelEvent, ChannelOptions, SctpAssociation, SctpConfig, SctpOutput, SctpRole,
};
use p2p_dtls::{Certificate, DtlsConfig, DtlsEndpoint, DtlsEvent, DtlsOutput, Setup};
use p2p_proto::{FiveTuple, Machine, Output, Transmit, Transport};

/// One side of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    A,
    B,
}

/// Drives `a` and `b` over a link with `delay` each way until nothing is
/// left to do or `limit` of simulated time passed; every output that is
/// not a transmit goes to `event`. Returns the simulated time it ran.
fn run<M: Machine>(
    a: &mut M,
    b: &mut M,
    t0: Instant,
    delay: Duration,
    limit: Duration,
    mut event: impl FnMut(Instant, Side, &mut M, M::Output),
) -> Duration {
    let mut now = t0;
    let mut wire: VecDeque<(Instant, Side, Transmit)> = VecDeque::new();
    a.handle_timeout(now);
    b.handle_timeout(now);
    for _ in 0..100_000 {
        // Drain both: transmits onto the wire, the rest to the caller.
        for side in [Side::A, Side::B] {
            let m = if side == Side::A { &mut *a } else { &mut *b };
            while let Some(o) = m.poll_output() {
                match o.into_transmit() {
                    Ok(t) => wire.push_back((now + delay, side, t)),
                    Err(other) => event(now, side, m, other),
                }
            }
        }
        if now - t0 >= limit {
            return now - t0;
        }
        // The next thing that happens: a datagram lands or a timer fires.
        let next_arrival = wire.iter().map(|(at, _, _)| *at).min();
        let next_timer = [a.poll_timeout(), b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = [next_arrival, next_timer].into_iter().flatten().min() else {
            return now - t0;
        };
        now = next.max(now).min(t0 + limit);
        while let Some(i) = wire.iter().position(|(at, _, _)| *at <= now) {
            let (_, from, t) = wire.remove(i).expect("just found");
            let to = if from == Side::A { &mut *b } else { &mut *a };
            let _ = to.handle_input(now, t.as_datagram());
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    panic!("the loop did not settle in 100,000 steps");
}

#[test]
fn one_loop_drives_two_dtls_endpoints_and_two_sctp_associations() {
    let t0 = Instant::now();
    let delay = Duration::from_millis(10);
    let (addr_a, addr_b) = (
        "192.0.2.1:5000".parse().unwrap(),
        "192.0.2.2:6000".parse().unwrap(),
    );
    let path_a = FiveTuple::new(Transport::Udp, addr_a, addr_b);
    let path_b = FiveTuple::new(Transport::Udp, addr_b, addr_a);

    // DTLS: the offerer (A) is the server, the answerer (B) the client.
    let (role_a, role_b) =
        Setup::roles(Setup::offer(), Setup::answer_to(Setup::offer()).unwrap()).unwrap();
    let (cert_a, cert_b) = (
        Certificate::generate().unwrap(),
        Certificate::generate().unwrap(),
    );
    let mut a = DtlsEndpoint::new(
        DtlsConfig::new(cert_a.clone(), role_a, vec![cert_b.fingerprint()]).with_seed(1),
        path_a,
    )
    .unwrap();
    let mut b = DtlsEndpoint::new(
        DtlsConfig::new(cert_b, role_b, vec![cert_a.fingerprint()]).with_seed(2),
        path_b,
    )
    .unwrap();
    let mut connected = [false, false];
    let mut got = Vec::new();
    let took = run(
        &mut a,
        &mut b,
        t0,
        delay,
        Duration::from_secs(5),
        |now, side, m: &mut DtlsEndpoint, o| match o {
            DtlsOutput::Event(DtlsEvent::Connected { .. }) => {
                connected[side as usize] = true;
                m.send(now, format!("hello from {side:?}").as_bytes())
                    .unwrap();
            }
            DtlsOutput::Event(DtlsEvent::Data(d)) => got.push((side, d)),
            other => panic!("{side:?}: {other:?}"),
        },
    );
    assert!(connected[0] && connected[1], "after {took:?}");
    got.sort();
    assert_eq!(
        got,
        vec![
            (Side::A, b"hello from B".to_vec()),
            (Side::B, b"hello from A".to_vec())
        ]
    );

    // SCTP with the same loop: the client opens a channel and sends.
    let mut a = SctpAssociation::new(SctpConfig::new(SctpRole::Client).with_rng_seed(3), path_a);
    let mut b = SctpAssociation::new(SctpConfig::new(SctpRole::Server).with_rng_seed(4), path_b);
    let id = a.open_channel(t0, ChannelOptions::new("chat")).unwrap();
    a.send(t0, id, b"over sctp", false).unwrap();
    let mut messages = Vec::new();
    let mut opened = None;
    run(
        &mut a,
        &mut b,
        t0,
        delay,
        Duration::from_secs(5),
        |_, side, _, o| match o {
            SctpOutput::Event(ChannelEvent::Message { data, .. }) => messages.push((side, data)),
            SctpOutput::Event(ChannelEvent::ChannelOpened { label, .. }) => {
                opened = Some((side, label))
            }
            _ => {}
        },
    );
    assert_eq!(opened, Some((Side::B, "chat".to_owned())));
    assert_eq!(messages, vec![(Side::B, b"over sctp".to_vec())]);
}
