//! Whatever arrives, `handle_input` never panics and the agent keeps working.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_ice::{Candidate, IceAgent, IceConfig, IceOutput};
use p2p_proto::{Datagram, Machine};
use proptest::prelude::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An agent mid-check (a check in flight to 10.0.0.2:6000), and a genuine
/// check request from its peer.
fn setup(controlling: bool) -> (IceAgent, Instant, Vec<u8>, Vec<u8>) {
    let t0 = Instant::now();
    let mut a = IceAgent::new(
        IceConfig::default()
            .with_controlling(controlling)
            .with_seed(1),
    );
    let mut b = IceAgent::new(
        IceConfig::default()
            .with_controlling(!controlling)
            .with_seed(2),
    );
    let ca = a
        .add_local_candidate(t0, Candidate::host(addr("10.0.0.1:5000")))
        .unwrap();
    let cb = b
        .add_local_candidate(t0, Candidate::host(addr("10.0.0.2:6000")))
        .unwrap();
    a.add_remote_candidate(t0, cb).unwrap();
    b.add_remote_candidate(t0, ca).unwrap();
    let (ua, ub) = (a.local_credentials().clone(), b.local_credentials().clone());
    a.set_remote_credentials(t0, &ub.ufrag, &ub.pwd).unwrap();
    b.set_remote_credentials(t0, &ua.ufrag, &ua.pwd).unwrap();
    a.handle_timeout(t0);
    b.handle_timeout(t0);
    let a_check = first_transmit(&mut a).contents;
    let b_check = first_transmit(&mut b).contents;
    (a, t0, a_check, b_check)
}

/// The first transmit the agent queued (the outputs before it are dropped).
fn first_transmit(a: &mut IceAgent) -> p2p_proto::Transmit {
    std::iter::from_fn(|| a.poll_output())
        .find_map(IceOutput::transmit)
        .unwrap()
}

fn feed(a: &mut IceAgent, now: Instant, bytes: &[u8]) {
    for (source, destination) in [
        (addr("10.0.0.2:6000"), addr("10.0.0.1:5000")),
        (addr("192.0.2.9:1"), addr("10.0.0.1:5000")),
        (addr("10.0.0.2:6000"), addr("10.9.9.9:9")),
    ] {
        let _ = a.handle_input(now, Datagram::udp(source, destination, bytes));
        while a.poll_output().is_some() {}
    }
}

fn stun_shaped() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![0x0001u16, 0x0011, 0x0101, 0x0111, 0x0003, 0x0fff]),
        any::<[u8; 12]>(),
        prop::collection::vec(
            (any::<u16>(), prop::collection::vec(any::<u8>(), 0..40)),
            0..6,
        ),
    )
        .prop_map(|(typ, tid, attrs)| {
            let mut body = Vec::new();
            for (t, v) in attrs {
                // Bias towards the attributes ICE reads.
                let t = match t % 8 {
                    0 => 0x0006, // USERNAME
                    1 => 0x0008, // MESSAGE-INTEGRITY
                    2 => 0x0024, // PRIORITY
                    3 => 0x8029, // ICE-CONTROLLED
                    4 => 0x802A, // ICE-CONTROLLING
                    5 => 0x0025, // USE-CANDIDATE
                    6 => 0x0020, // XOR-MAPPED-ADDRESS
                    _ => t,
                };
                body.extend_from_slice(&t.to_be_bytes());
                body.extend_from_slice(&(v.len() as u16).to_be_bytes());
                body.extend_from_slice(&v);
                body.resize(body.len().next_multiple_of(4), 0);
            }
            let mut m = Vec::new();
            m.extend_from_slice(&typ.to_be_bytes());
            m.extend_from_slice(&(body.len() as u16).to_be_bytes());
            m.extend_from_slice(&0x2112_A442u32.to_be_bytes());
            m.extend_from_slice(&tid);
            m.extend_from_slice(&body);
            m
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), controlling in any::<bool>()) {
        let (mut a, t0, _, _) = setup(controlling);
        feed(&mut a, t0, &bytes);
        a.handle_timeout(t0 + Duration::from_millis(50));
    }

    #[test]
    fn stun_shaped_garbage_never_panics(msg in stun_shaped(), controlling in any::<bool>()) {
        let (mut a, t0, _, _) = setup(controlling);
        feed(&mut a, t0, &msg);
        a.handle_timeout(t0 + Duration::from_millis(50));
    }

    #[test]
    fn mutated_genuine_messages_never_panic(
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        which in any::<bool>(),
        truncate in prop::option::of(any::<usize>()),
    ) {
        let (mut a, t0, a_check, b_check) = setup(true);
        let mut m = if which { b_check } else { a_check };
        for (i, x) in flips {
            let n = m.len();
            m[i % n] ^= x;
        }
        if let Some(t) = truncate {
            m.truncate(t % (m.len() + 1));
        }
        feed(&mut a, t0, &m);
        let mut now = t0;
        for _ in 0..20 {
            let Some(next) = a.poll_timeout() else { break };
            now = next.max(now);
            a.handle_timeout(now);
            while a.poll_output().is_some() {}
        }
    }
}
