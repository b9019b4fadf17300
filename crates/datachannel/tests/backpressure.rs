//! Receive-side back-pressure: a channel whose application stops reading
//! stops reading from SCTP, SCTP's window closes, and the sender holds the
//! rest (its buffered amount) instead of the receiver's memory growing.

mod common;

use std::time::Duration;

use common::Pair;
use p2p_datachannel::{
    ChannelEvent, ChannelId, ChannelOptions, SctpConfig, SctpRole, DEFAULT_RECEIVE_QUEUE_LIMIT,
};

const MSG: usize = 16 * 1024;

/// Message `i`: its number, then bytes derived from it.
fn message(i: u32) -> Vec<u8> {
    let mut m = vec![0u8; MSG];
    for (k, b) in m.iter_mut().enumerate() {
        *b = (k as u32).wrapping_mul(31).wrapping_add(i) as u8;
    }
    m[..4].copy_from_slice(&i.to_be_bytes());
    m
}

/// The bytes of the messages the server's events hold, in order.
fn delivered(p: &Pair) -> Vec<u8> {
    p.server
        .events
        .iter()
        .filter_map(|e| match e {
            ChannelEvent::Message { data, .. } => Some(data.as_slice()),
            _ => None,
        })
        .flatten()
        .copied()
        .collect()
}

/// Client opens a channel, the server acknowledges it; the server's id.
fn open(p: &mut Pair) -> (ChannelId, ChannelId) {
    let id = p
        .client
        .m
        .open_channel(p.now, ChannelOptions::new("bulk"))
        .unwrap();
    p.run_until(Duration::from_secs(2), 1000, |p| {
        p.client
            .has(|e| matches!(e, ChannelEvent::ChannelOpen { id: i } if *i == id))
    });
    (id, id)
}

#[test]
fn a_reader_that_stops_closes_the_window_holds_memory_bounded_and_loses_nothing_when_it_resumes() {
    let mut p = Pair::new(300);
    p.connect();
    let (tx, rx) = open(&mut p);
    p.server.reading = false;
    const COUNT: u32 = 256; // 4 MiB: four times the receive queue limit
    for i in 0..COUNT {
        p.client.m.send(p.now, tx, &message(i), true).unwrap();
    }
    let total = MSG * COUNT as usize;
    p.run_for(Duration::from_secs(3));

    // The receiver's application holds at most the limit and one message.
    let unread = p.server.m.unread(rx);
    assert!(
        unread > 0 && unread <= DEFAULT_RECEIVE_QUEUE_LIMIT + MSG,
        "unread {unread}"
    );
    assert_eq!(delivered(&p).len(), unread);
    // The sender holds the rest: what it has had acknowledged is at most
    // what the application holds plus SCTP's receive buffer (1 MiB).
    let buffered = p.client.m.buffered_amount(tx);
    let acknowledged = total - buffered;
    let receive_buffer = SctpConfig::new(SctpRole::Server).receive_buffer as usize;
    assert!(
        acknowledged <= unread + receive_buffer + MSG,
        "acknowledged {acknowledged}, unread {unread}"
    );
    assert!(buffered >= total - 2 * DEFAULT_RECEIVE_QUEUE_LIMIT - 2 * MSG);
    // And it stays so: another second changes nothing.
    p.run_for(Duration::from_secs(1));
    assert_eq!(p.server.m.unread(rx), unread);
    assert_eq!(p.client.m.buffered_amount(tx), buffered);
    assert!(!p.client.has(|e| matches!(e, ChannelEvent::Closed(_))));
    assert!(!p.server.has(|e| matches!(e, ChannelEvent::Closed(_))));

    // The reader takes what it has, and reads on as it comes.
    p.server.reading = true;
    p.server.m.release(p.now, rx, unread);
    p.drain();
    // Within three round trips (20 ms each) the sender is moving again:
    // the window update, and the peer's zero-window probe (dropped while
    // the window was closed) taken after all, free its window at once.
    p.run_for(Duration::from_millis(60));
    let moving = p.client.m.buffered_amount(tx);
    assert!(
        moving < buffered,
        "still {moving} of {buffered} after 60 ms"
    );
    p.run_until(Duration::from_secs(20), 400_000, |p| {
        delivered(p).len() == total
    });
    let want: Vec<u8> = (0..COUNT).flat_map(message).collect();
    assert!(
        delivered(&p) == want,
        "the bytes differ or are out of order"
    );
    p.run_until(Duration::from_secs(2), 10_000, |p| {
        p.client.m.buffered_amount(tx) == 0
    });
    assert_eq!(p.server.m.unread(rx), 0);
}

#[test]
fn release_below_half_the_limit_reads_on_and_partial_releases_do_not() {
    let limit = 256 * 1024;
    let server = SctpConfig::new(SctpRole::Server)
        .with_rng_seed(2)
        .with_receive_queue_limit(Some(limit));
    let mut p = Pair::with_configs(
        SctpConfig::new(SctpRole::Client).with_rng_seed(1),
        server,
        301,
    );
    p.connect();
    let (tx, rx) = open(&mut p);
    p.server.reading = false;
    for i in 0..64 {
        p.client.m.send(p.now, tx, &message(i), true).unwrap();
    }
    p.run_for(Duration::from_secs(2));
    let held = p.server.m.unread(rx);
    assert_eq!(held, limit, "stops at the limit (whole messages of 16 KiB)");
    // Taking a quarter: still above half, nothing more is read.
    p.server.m.release(p.now, rx, limit / 4);
    p.drain();
    p.run_for(Duration::from_millis(500));
    assert_eq!(p.server.m.unread(rx), limit - limit / 4);
    assert_eq!(delivered(&p).len(), limit);
    // Another quarter: at half, it reads up to the limit again.
    p.server.m.release(p.now, rx, limit / 4);
    p.drain();
    p.run_for(Duration::from_millis(500));
    assert_eq!(p.server.m.unread(rx), limit);
    assert_eq!(delivered(&p).len(), limit + limit / 2);
    // Releasing more than was handed out counts as all of it.
    p.server.m.release(p.now, rx, usize::MAX);
    p.drain();
    assert!(p.server.m.unread(rx) <= limit);
}

#[test]
fn without_a_receive_queue_limit_everything_is_read_at_once() {
    let server = SctpConfig::new(SctpRole::Server)
        .with_rng_seed(2)
        .with_receive_queue_limit(None);
    let mut p = Pair::with_configs(
        SctpConfig::new(SctpRole::Client).with_rng_seed(1),
        server,
        302,
    );
    p.connect();
    let (tx, rx) = open(&mut p);
    p.server.reading = false;
    const COUNT: u32 = 192; // 3 MiB, more than the window
    for i in 0..COUNT {
        p.client.m.send(p.now, tx, &message(i), true).unwrap();
    }
    p.run_until(Duration::from_secs(10), 200_000, |p| {
        delivered(p).len() == MSG * COUNT as usize
    });
    assert_eq!(p.server.m.unread(rx), MSG * COUNT as usize);
}
