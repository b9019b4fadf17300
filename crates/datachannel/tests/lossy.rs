//! Loss, reordering and a silent peer.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Link, Pair};
use p2p_datachannel::{
    ChannelEvent, ChannelOptions, CloseReason, Reliability, SctpConfig, SctpRole,
};

/// A message's bytes: its sequence number, then bytes derived from it, so a
/// receiver can tell a corrupt, duplicated or misplaced message.
fn message(seq: u32, len: usize) -> Vec<u8> {
    let mut m = seq.to_be_bytes().to_vec();
    let mut x = seq.wrapping_mul(2_654_435_761) | 1;
    while m.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        m.push(x as u8);
    }
    m
}

fn lossy() -> Link {
    Link {
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(10),
        loss: 0.05,
        dead: false,
    }
}

#[test]
fn ten_mib_over_a_reliable_ordered_channel_across_5_percent_loss_and_reordering_arrive_byte_identical(
) {
    let mut p = Pair::new(100);
    p.client.link = lossy();
    p.server.link = lossy();
    p.connect();
    let id = p
        .client
        .m
        .open_channel(p.now, ChannelOptions::new("bulk"))
        .unwrap();
    const MSG: usize = 16 * 1024;
    const COUNT: u32 = 640; // 10 MiB
    let mut next = 0u32;
    let mut got: Vec<u8> = Vec::with_capacity(MSG * COUNT as usize);
    let took = p.run_until(Duration::from_secs(600), 2_000_000, |p| {
        // Keep about 1 MiB in flight, as an application watching
        // bufferedAmount would.
        while next < COUNT && p.client.m.buffered_amount(id) < 1024 * 1024 {
            p.client
                .m
                .send(p.now, id, &message(next, MSG), true)
                .unwrap();
            next += 1;
        }
        for (_, data, _) in p.server.take_messages() {
            got.extend_from_slice(&data);
        }
        got.len() == MSG * COUNT as usize
    });
    let want: Vec<u8> = (0..COUNT).flat_map(|i| message(i, MSG)).collect();
    assert!(got == want, "the bytes differ");
    // Loss really happened, and no Closed came.
    assert!(!p.client.has(|e| matches!(e, ChannelEvent::Closed(_))));
    eprintln!(
        "10 MiB across 5% loss: {took:?} simulated, {} client packets",
        p.client.packets_sent
    );
}

#[test]
fn an_unreliable_unordered_channel_under_loss_loses_some_but_never_duplicates_or_corrupts() {
    let mut p = Pair::new(101);
    p.client.link = lossy();
    p.server.link = lossy();
    p.connect();
    let id = p
        .client
        .m
        .open_channel(
            p.now,
            ChannelOptions::new("lossy")
                .with_ordered(false)
                .with_reliability(Reliability::MaxRetransmits(0)),
        )
        .unwrap();
    p.run_until(Duration::from_secs(10), 10_000, |p| {
        p.client.has(|e| *e == ChannelEvent::ChannelOpen { id })
    });
    const COUNT: u32 = 2000;
    let mut seen = HashSet::new();
    let mut sent = 0u32;
    p.run_until(Duration::from_secs(60), 1_000_000, |p| {
        // 20 messages every step, some of two packets.
        for _ in 0..20 {
            if sent < COUNT {
                let len = if sent % 10 == 0 { 2000 } else { 300 };
                p.client
                    .m
                    .send(p.now, id, &message(sent, len), true)
                    .unwrap();
                sent += 1;
            }
        }
        for (_, data, binary) in p.server.take_messages() {
            assert!(binary);
            let seq = u32::from_be_bytes(data[..4].try_into().unwrap());
            let len = if seq % 10 == 0 { 2000 } else { 300 };
            assert_eq!(data, message(seq, len), "message {seq} corrupt");
            assert!(seen.insert(seq), "message {seq} twice");
        }
        sent == COUNT && p.client.m.buffered_amount(id) == 0
    });
    p.run_for(Duration::from_secs(2));
    for (_, data, _) in p.server.take_messages() {
        let seq = u32::from_be_bytes(data[..4].try_into().unwrap());
        assert!(seen.insert(seq), "message {seq} twice");
    }
    let lost = COUNT as usize - seen.len();
    assert!(lost > 0, "5% loss lost nothing");
    assert!(lost < COUNT as usize / 4, "lost {lost} of {COUNT}");
    eprintln!("unreliable: {lost} of {COUNT} lost");
}

#[test]
fn a_peer_that_goes_silent_is_declared_dead_after_the_dead_peer_timeout() {
    let mut p = Pair::new(102);
    p.connect();
    // Idle but alive: heartbeats keep the association up.
    p.run_for(Duration::from_secs(20));
    assert!(!p.client.has(|e| matches!(e, ChannelEvent::Closed(_))));
    assert!(!p.server.has(|e| matches!(e, ChannelEvent::Closed(_))));
    // The server falls silent.
    p.server.link.dead = true;
    let took = p.run_until(Duration::from_secs(30), 100_000, |p| {
        p.client.has(|e| matches!(e, ChannelEvent::Closed(_)))
    });
    assert!(p
        .client
        .has(|e| *e == ChannelEvent::Closed(CloseReason::Timeout)));
    // 5 s of silence (the default), counted from the last packet heard.
    assert!(took <= Duration::from_secs(5), "{took:?}");
    eprintln!("silent peer declared dead after {took:?}");
}

#[test]
fn a_silent_peer_is_declared_dead_sooner_when_configured_and_while_data_is_outstanding() {
    let cfg = |role, seed| {
        SctpConfig::new(role).with_rng_seed(seed).with_liveness(
            Some(Duration::from_millis(200)),
            Some(Duration::from_millis(800)),
        )
    };
    let mut p = Pair::with_configs(cfg(SctpRole::Client, 103), cfg(SctpRole::Server, 104), 103);
    p.connect();
    let id = p
        .client
        .m
        .open_channel(p.now, ChannelOptions::new("x"))
        .unwrap();
    p.run_for(Duration::from_secs(1));
    p.server.link.dead = true;
    p.client.m.send(p.now, id, &[1; 50_000], true).unwrap();
    let took = p.run_until(Duration::from_secs(5), 100_000, |p| {
        p.client.has(|e| matches!(e, ChannelEvent::Closed(_)))
    });
    assert!(p
        .client
        .has(|e| *e == ChannelEvent::Closed(CloseReason::Timeout)));
    assert!(took <= Duration::from_millis(800), "{took:?}");
}

#[test]
fn the_first_message_arrives_within_bounded_round_trips_of_the_start() {
    // One-way delay 10 ms, so one RTT is 20 ms. The client opens a channel
    // and sends at once; INIT, INIT ACK, COOKIE ECHO, COOKIE ACK, then the
    // OPEN and the message (sctp-proto sends no DATA with COOKIE ECHO).
    let mut p = Pair::new(105);
    let id = p
        .client
        .m
        .open_channel(p.now, ChannelOptions::new("first"))
        .unwrap();
    p.client.m.send(p.now, id, b"hello", false).unwrap();
    p.start();
    let took = p.run_until(Duration::from_secs(1), 1000, |p| {
        !p.server.take_messages().is_empty()
    });
    assert_eq!(took, Duration::from_millis(50), "2.5 RTT from INIT");
}
