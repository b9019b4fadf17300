//! How fast records go through two endpoints in memory (encrypt, frame,
//! decrypt, deliver), in each DTLS version:
//! `cargo run --release -p p2p-dtls --example dtls_throughput`.

use std::time::{Duration, Instant};

use p2p_dtls::{Certificate, DtlsConfig, DtlsEndpoint, DtlsEvent, DtlsOutput, DtlsRole};
use p2p_proto::{FiveTuple, Machine, Transport};

fn pair(dtls13: bool) -> (DtlsEndpoint, DtlsEndpoint, Instant) {
    let (ca, cb) = (
        Certificate::generate().unwrap(),
        Certificate::generate().unwrap(),
    );
    let (a_addr, b_addr) = (
        "192.0.2.1:1".parse().unwrap(),
        "192.0.2.2:2".parse().unwrap(),
    );
    let mut a = DtlsConfig::new(ca.clone(), DtlsRole::Client, vec![cb.fingerprint()]);
    let mut b = DtlsConfig::new(cb, DtlsRole::Server, vec![ca.fingerprint()]);
    (a.dtls13, b.dtls13) = (dtls13, dtls13);
    let mut a = DtlsEndpoint::new(a, FiveTuple::new(Transport::Udp, a_addr, b_addr)).unwrap();
    let mut b = DtlsEndpoint::new(b, FiveTuple::new(Transport::Udp, b_addr, a_addr)).unwrap();
    let now = Instant::now();
    a.handle_timeout(now);
    b.handle_timeout(now);
    for _ in 0..50 {
        pump(&mut a, &mut b, now);
        pump(&mut b, &mut a, now);
        if a.is_connected() && b.is_connected() {
            return (a, b, now);
        }
    }
    panic!("no connection");
}

/// Hands `from`'s transmits to `to`; the bytes of data `from` was given.
fn pump(from: &mut DtlsEndpoint, to: &mut DtlsEndpoint, now: Instant) -> usize {
    let mut got = 0;
    while let Some(o) = from.poll_output() {
        match o {
            DtlsOutput::Transmit(t) => {
                let _ = to.handle_input(now, t.as_datagram());
            }
            DtlsOutput::Event(DtlsEvent::Data(d)) => got += d.len(),
            _ => {}
        }
    }
    got
}

fn main() {
    for dtls13 in [false, true] {
        let (mut a, mut b, now) = pair(dtls13);
        let payload = vec![7u8; a.max_payload()];
        let records = 50_000;
        let (mut encrypt, mut decrypt) = (Duration::ZERO, Duration::ZERO);
        let mut got = 0;
        let mut transmits = Vec::with_capacity(100);
        // In batches of 100 records, as a driver drains a socket.
        for _ in 0..records / 100 {
            let start = Instant::now();
            for _ in 0..100 {
                a.send(now, &payload).unwrap();
                while let Some(o) = a.poll_output() {
                    if let DtlsOutput::Transmit(t) = o {
                        transmits.push(t);
                    }
                }
            }
            encrypt += start.elapsed();
            let start = Instant::now();
            for t in transmits.drain(..) {
                let _ = b.handle_input(now, t.as_datagram());
                while let Some(o) = b.poll_output() {
                    if let DtlsOutput::Event(DtlsEvent::Data(d)) = o {
                        got += d.len();
                    }
                }
            }
            decrypt += start.elapsed();
        }
        assert_eq!(got, records * payload.len());
        let mb = |d: Duration| (records * payload.len()) as f64 / 1e6 / d.as_secs_f64();
        println!(
            "{}: {} B records: send {:.0} MB/s, receive {:.0} MB/s",
            if dtls13 { "DTLS 1.3" } else { "DTLS 1.2" },
            payload.len(),
            mb(encrypt),
            mb(decrypt)
        );
    }
}
