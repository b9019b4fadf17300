//! Receive-side back-pressure through whole `Session`s on the virtual
//! network: when B's application stops taking messages, B's session stops
//! reading that channel, SCTP's window closes, A's buffered amount grows
//! instead of B's memory, and once B reads again every message arrives,
//! in order.

mod common;

use std::time::Duration;

use common::{Opts, Pair, Placement};
use p2p_connect::{
    ChannelEvent, ChannelId, ChannelOptions, SessionEvent, DEFAULT_RECEIVE_QUEUE_LIMIT,
};

const MSG: usize = 16 * 1024;
const COUNT: u32 = 320; // 5 MiB

fn message(i: u32) -> Vec<u8> {
    let mut m = vec![(i % 251) as u8; MSG];
    m[..4].copy_from_slice(&i.to_be_bytes());
    m
}

/// The 16 KiB messages B's application has seen, in order (the pings are
/// short).
fn bulk(p: &Pair) -> Vec<Vec<u8>> {
    p.node_b()
        .received
        .iter()
        .filter(|(_, d)| d.len() == MSG)
        .map(|(_, d)| d.clone())
        .collect()
}

#[test]
fn a_session_whose_application_stops_reading_holds_the_sender_back_and_loses_nothing() {
    let mut p = Pair::new(Placement::Public, Placement::Public, Opts::default());
    p.run_until(Pair::connected, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    p.node_a_mut().pinging = false;
    p.node_b_mut().pinging = false;
    let now = p.sim.now();
    let tx = p
        .node_a_mut()
        .open(now, ChannelOptions::new("bulk"))
        .expect("a channel id");
    // B's channel: the one its session reports opened with our label.
    p.run_until(
        |p| {
            p.node_b()
                .has_event(|e| {
                    matches!(e, SessionEvent::Channel(ChannelEvent::ChannelOpened { label, .. })
                    if label == "bulk")
                })
                .is_some()
        },
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rx = ChannelId(tx.0);
    p.node_b_mut().reading = false;
    let now = p.sim.now();
    for i in 0..COUNT {
        p.node_a_mut().send_binary_on(now, tx, &message(i)).unwrap();
    }
    let total = MSG * COUNT as usize;
    p.run_for(Duration::from_secs(5));

    let unread = p.node_b().session.unread(rx);
    assert!(
        unread > 0 && unread <= DEFAULT_RECEIVE_QUEUE_LIMIT + MSG,
        "B's application holds {unread} bytes"
    );
    assert_eq!(bulk(&p).len() * MSG, unread);
    let buffered = p.node_a_mut().session.buffered_amount(tx);
    // B took in at most its queue limit plus SCTP's 1 MiB window.
    assert!(
        total - buffered <= unread + 1024 * 1024 + MSG,
        "A still holds {buffered} of {total}"
    );
    p.run_for(Duration::from_secs(2));
    assert_eq!(p.node_a_mut().session.buffered_amount(tx), buffered);
    assert_eq!(p.node_b().session.unread(rx), unread);

    // B reads again: everything arrives, in order, and A's buffer empties.
    p.node_b_mut().reading = true;
    let now = p.sim.now();
    p.node_b_mut().take_all(now, rx);
    let took = p
        .run_until(|p| bulk(p).len() == COUNT as usize, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let want: Vec<Vec<u8>> = (0..COUNT).map(message).collect();
    assert!(bulk(&p) == want, "messages lost, damaged or out of order");
    eprintln!("the rest arrived {took:?} after B read again");
    p.run_for(Duration::from_millis(500));
    assert_eq!(p.node_a_mut().session.buffered_amount(tx), 0);
    assert!(p.node_a().signal_errors.is_empty() && p.node_b().signal_errors.is_empty());
}
