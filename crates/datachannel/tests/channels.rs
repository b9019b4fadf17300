//! Two associations over a clean in-memory link: DCEP, message kinds and
//! sizes, max-message-size, pre-negotiated channels, stream ids, buffered
//! amount, channel close, association close and abort.

mod common;

use std::time::Duration;

use common::{addrs, Pair};
use p2p_datachannel::{
    ChannelError, ChannelEvent, ChannelId, ChannelOptions, CloseReason, Reliability, SctpConfig,
    SctpRole,
};
use p2p_proto::{Datagram, Machine, Transport};

const SEC: Duration = Duration::from_secs(1);

fn opened(p: &Pair, client: bool, label: &str) -> Option<ChannelId> {
    let side = if client { &p.client } else { &p.server };
    side.events.iter().find_map(|e| match e {
        ChannelEvent::ChannelOpened { id, label: l, .. } if l == label => Some(*id),
        _ => None,
    })
}

fn is_open(p: &Pair, client: bool, want: ChannelId) -> bool {
    let side = if client { &p.client } else { &p.server };
    side.has(|e| matches!(e, ChannelEvent::ChannelOpen { id } if *id == want))
}

#[test]
fn dcep_opens_channels_both_ways_with_labels_and_protocols() {
    let mut p = Pair::new(1);
    p.connect();
    let now = p.now;
    let a = p
        .client
        .m
        .open_channel(
            now,
            ChannelOptions::new("from-client").with_protocol("chat/1"),
        )
        .unwrap();
    let b = p
        .server
        .m
        .open_channel(
            now,
            ChannelOptions::new("from-server")
                .with_ordered(false)
                .with_reliability(Reliability::MaxRetransmits(3))
                .with_priority(512),
        )
        .unwrap();
    p.run_until(SEC, 100, |p| {
        is_open(p, true, a)
            && is_open(p, false, b)
            && opened(p, false, "from-client").is_some()
            && opened(p, true, "from-server").is_some()
    });
    let at_server = p.server.events.iter().find_map(|e| match e {
        ChannelEvent::ChannelOpened {
            id,
            protocol,
            ordered,
            reliability,
            ..
        } => Some((*id, protocol.clone(), *ordered, *reliability)),
        _ => None,
    });
    assert_eq!(
        at_server,
        Some((a, "chat/1".into(), true, Reliability::Reliable))
    );
    let at_client = p.client.events.iter().find_map(|e| match e {
        ChannelEvent::ChannelOpened {
            id,
            ordered,
            reliability,
            priority,
            ..
        } => Some((*id, *ordered, *reliability, *priority)),
        _ => None,
    });
    assert_eq!(
        at_client,
        Some((b, false, Reliability::MaxRetransmits(3), 512))
    );
    // The opener's options are kept too.
    let o = p.server.m.channel_options(a).unwrap();
    assert_eq!(
        (o.label.as_str(), o.protocol.as_str()),
        ("from-client", "chat/1")
    );
}

#[test]
fn stream_ids_are_even_for_the_dtls_client_and_odd_for_the_server() {
    let mut p = Pair::new(2);
    p.connect();
    let now = p.now;
    let c: Vec<u16> = (0..3)
        .map(|i| {
            p.client
                .m
                .open_channel(now, ChannelOptions::new(format!("c{i}")))
                .unwrap()
                .0
        })
        .collect();
    let s: Vec<u16> = (0..3)
        .map(|i| {
            p.server
                .m
                .open_channel(now, ChannelOptions::new(format!("s{i}")))
                .unwrap()
                .0
        })
        .collect();
    assert_eq!((c, s), (vec![0, 2, 4], vec![1, 3, 5]));
    p.run_until(SEC, 100, |p| {
        (0..3).all(|i| opened(p, false, &format!("c{i}")).is_some())
            && (0..3).all(|i| opened(p, true, &format!("s{i}")).is_some())
    });
}

#[test]
fn channels_opened_before_the_association_open_when_it_is_up_and_their_messages_wait() {
    let mut p = Pair::new(3);
    let now = p.now;
    let id = p
        .client
        .m
        .open_channel(now, ChannelOptions::new("early"))
        .unwrap();
    p.client.m.send(now, id, b"first", false).unwrap();
    assert_eq!(p.client.m.buffered_amount(id), 5);
    p.start();
    let mut got = Vec::new();
    p.run_until(SEC, 200, |p| {
        got.extend(p.server.take_messages());
        !got.is_empty()
    });
    assert!(opened(&p, false, "early").is_some());
    assert_eq!(got, vec![(id, b"first".to_vec(), false)]);
}

#[test]
fn ordered_reliable_messages_arrive_in_order_with_their_kind() {
    let mut p = Pair::new(4);
    p.connect();
    let now = p.now;
    let id = p
        .client
        .m
        .open_channel(now, ChannelOptions::new("o"))
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..500u32 {
        let binary = i % 3 == 0;
        let body: Vec<u8> = if i % 50 == 7 {
            Vec::new()
        } else {
            format!("message {i}").into_bytes()
        };
        p.client.m.send(now, id, &body, binary).unwrap();
        sent.push((id, body, binary));
    }
    let mut got = Vec::new();
    p.run_until(10 * SEC, 10_000, |p| {
        got.extend(p.server.take_messages());
        got.len() == sent.len()
    });
    assert_eq!(got, sent);
}

#[test]
fn packets_handed_in_owned_deliver_what_borrowed_ones_do_across_loss() {
    // `handle_packet` (the session's receive path: the buffer DTLS
    // decrypted into, no copy) against `handle_input`, on the same lossy
    // link with the same seed: the same messages arrive, in order.
    let run = |owned: bool| {
        let mut p = Pair::new(41);
        p.owned_input = owned;
        p.client.link.loss = 0.05;
        p.server.link.loss = 0.05;
        p.connect();
        let now = p.now;
        let id = p
            .client
            .m
            .open_channel(now, ChannelOptions::new("owned"))
            .unwrap();
        let sent: Vec<_> = (0..40u8)
            .map(|i| (id, big(3000 + usize::from(i), i), true))
            .collect();
        for (id, body, binary) in &sent {
            p.client.m.send(now, *id, body, *binary).unwrap();
        }
        let mut got = Vec::new();
        p.run_until(60 * SEC, 100_000, |p| {
            got.extend(p.server.take_messages());
            got.len() == sent.len()
        });
        assert_eq!(got, sent);
    };
    run(true);
    run(false);
}

#[test]
fn empty_messages_travel_as_one_byte_and_arrive_empty_with_their_kind() {
    let mut p = Pair::new(5);
    p.connect();
    let now = p.now;
    let id = p
        .client
        .m
        .open_channel(now, ChannelOptions::new("e").with_negotiated(10))
        .unwrap();
    p.server
        .m
        .open_channel(now, ChannelOptions::new("e").with_negotiated(10))
        .unwrap();
    p.client.m.send(now, id, b"", false).unwrap();
    p.client.m.send(now, id, b"", true).unwrap();
    assert_eq!(p.client.m.buffered_amount(id), 2, "one byte each");
    let mut got = Vec::new();
    p.run_until(SEC, 100, |p| {
        got.extend(p.server.take_messages());
        got.len() == 2
    });
    assert_eq!(got, vec![(id, vec![], false), (id, vec![], true)]);
}

fn big(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

#[test]
fn messages_of_64_and_256_kib_arrive_whole_when_both_sides_allow_them() {
    let cfg = |role| {
        SctpConfig::new(role)
            .with_rng_seed(6)
            .with_remote_max_message_size(Some(256 * 1024))
    };
    let mut p = Pair::with_configs(cfg(SctpRole::Client), cfg(SctpRole::Server), 6);
    p.connect();
    let now = p.now;
    let id = p
        .client
        .m
        .open_channel(now, ChannelOptions::new("big"))
        .unwrap();
    let (m64, m256) = (big(64 * 1024, 1), big(256 * 1024, 2));
    p.client.m.send(now, id, &m64, true).unwrap();
    p.client.m.send(now, id, &m256, true).unwrap();
    let mut got = Vec::new();
    p.run_until(10 * SEC, 10_000, |p| {
        got.extend(p.server.take_messages());
        got.len() == 2
    });
    assert_eq!(got, vec![(id, m64, true), (id, m256, true)]);
}

#[test]
fn a_message_over_the_peers_max_message_size_is_refused_with_a_typed_error() {
    // The peer's SDP had no a=max-message-size: 64 KiB (RFC 8841 §6).
    let mut p = Pair::new(7);
    p.connect();
    let now = p.now;
    let id = p
        .client
        .m
        .open_channel(now, ChannelOptions::new("m"))
        .unwrap();
    assert_eq!(
        p.client.m.send(now, id, &vec![0; 64 * 1024 + 1], true),
        Err(ChannelError::MessageTooLarge {
            len: 64 * 1024 + 1,
            max: 64 * 1024
        })
    );
    assert_eq!(p.client.m.send(now, id, &vec![0; 64 * 1024], true), Ok(()));
    // A later SDP raises it; 0 means no limit.
    p.client.m.set_remote_max_message_size(Some(0));
    assert_eq!(p.client.m.send(now, id, &vec![0; 300 * 1024], true), Ok(()));
}

#[test]
fn a_message_over_our_max_message_size_aborts_so_both_sides_know() {
    // The client believes the server takes 1 MiB; the server takes 64 KiB.
    let client = SctpConfig::new(SctpRole::Client)
        .with_rng_seed(8)
        .with_remote_max_message_size(Some(1024 * 1024));
    let server = SctpConfig::new(SctpRole::Server)
        .with_rng_seed(9)
        .with_local_max_message_size(64 * 1024);
    let mut p = Pair::with_configs(client, server, 8);
    p.connect();
    let now = p.now;
    let id = p
        .client
        .m
        .open_channel(now, ChannelOptions::new("x"))
        .unwrap();
    p.client.m.send(now, id, &big(100 * 1024, 3), true).unwrap();
    p.run_until(5 * SEC, 10_000, |p| {
        p.server.has(|e| matches!(e, ChannelEvent::Closed(_)))
            && p.client.has(|e| matches!(e, ChannelEvent::Closed(_)))
    });
    assert!(p
        .server
        .has(|e| *e == ChannelEvent::Closed(CloseReason::ProtocolError)));
    assert!(p
        .client
        .has(|e| *e == ChannelEvent::Closed(CloseReason::PeerAbort)));
    assert!(p.server.take_messages().is_empty());
}

#[test]
fn pre_negotiated_channels_open_on_both_sides_without_dcep() {
    let mut p = Pair::new(10);
    let now = p.now;
    let opts = ChannelOptions::new("neg")
        .with_negotiated(7)
        .with_protocol("p");
    let c = p.client.m.open_channel(now, opts.clone()).unwrap();
    let s = p.server.m.open_channel(now, opts).unwrap();
    assert_eq!((c, s), (ChannelId(7), ChannelId(7)));
    p.connect();
    p.run_until(SEC, 100, |p| is_open(p, true, c) && is_open(p, false, s));
    p.client.m.send(p.now, c, b"hi", false).unwrap();
    p.server.m.send(p.now, s, b"yo", true).unwrap();
    let (mut at_s, mut at_c) = (Vec::new(), Vec::new());
    p.run_until(SEC, 100, |p| {
        at_s.extend(p.server.take_messages());
        at_c.extend(p.client.take_messages());
        !at_s.is_empty() && !at_c.is_empty()
    });
    assert_eq!(at_s, vec![(c, b"hi".to_vec(), false)]);
    assert_eq!(at_c, vec![(s, b"yo".to_vec(), true)]);
    // No DCEP: neither side saw the other "open" a channel.
    assert!(opened(&p, true, "neg").is_none() && opened(&p, false, "neg").is_none());
    // The id is taken now.
    assert_eq!(
        p.client
            .m
            .open_channel(p.now, ChannelOptions::new("again").with_negotiated(7)),
        Err(ChannelError::StreamIdInUse(7))
    );
    assert_eq!(
        p.client
            .m
            .open_channel(p.now, ChannelOptions::new("r").with_negotiated(65535)),
        Err(ChannelError::ReservedStreamId)
    );
}

#[test]
fn buffered_amount_falls_and_the_low_event_fires_once_it_crosses_the_threshold() {
    let mut p = Pair::new(11);
    p.connect();
    let now = p.now;
    let id = p
        .client
        .m
        .open_channel(now, ChannelOptions::new("b"))
        .unwrap();
    // The OPEN counts until the peer acknowledges it.
    p.run_until(SEC, 100, |p| {
        is_open(p, true, id) && p.client.m.buffered_amount(id) == 0
    });
    p.client
        .m
        .set_buffered_amount_low_threshold(id, 16 * 1024)
        .unwrap();
    for _ in 0..16 {
        p.client.m.send(p.now, id, &[7; 8 * 1024], true).unwrap();
    }
    assert_eq!(p.client.m.buffered_amount(id), 128 * 1024);
    p.client.take();
    p.run_until(5 * SEC, 10_000, |p| {
        p.client
            .has(|e| *e == ChannelEvent::BufferedAmountLow { id })
    });
    assert!(p.client.m.buffered_amount(id) <= 16 * 1024);
    p.run_until(5 * SEC, 10_000, |p| p.client.m.buffered_amount(id) == 0);
    let lows = p
        .client
        .events
        .iter()
        .filter(|e| matches!(e, ChannelEvent::BufferedAmountLow { .. }))
        .count();
    assert_eq!(lows, 1);
    assert_eq!(
        p.client
            .m
            .set_buffered_amount_low_threshold(ChannelId(99), 1),
        Err(ChannelError::UnknownChannel(ChannelId(99)))
    );
}

#[test]
fn closing_a_channel_resets_its_streams_and_both_sides_see_it_closed() {
    let mut p = Pair::new(12);
    p.connect();
    let now = p.now;
    let id = p
        .client
        .m
        .open_channel(now, ChannelOptions::new("c"))
        .unwrap();
    p.run_until(SEC, 100, |p| is_open(p, true, id));
    p.client.m.send(p.now, id, b"last words", false).unwrap();
    p.client.m.close_channel(p.now, id).unwrap();
    assert_eq!(
        p.client.m.send(p.now, id, b"too late", false),
        Err(ChannelError::ChannelClosed(id))
    );
    p.run_until(SEC, 1000, |p| {
        p.client.has(|e| *e == ChannelEvent::ChannelClosed { id })
            && p.server.has(|e| *e == ChannelEvent::ChannelClosed { id })
    });
    // What was sent before the close still arrived.
    assert_eq!(
        p.server.take_messages(),
        vec![(id, b"last words".to_vec(), false)]
    );
    assert_eq!(
        p.server.m.send(p.now, id, b"x", false),
        Err(ChannelError::UnknownChannel(id))
    );
    // The association lives on: a new channel opens.
    let again = p
        .server
        .m
        .open_channel(p.now, ChannelOptions::new("d"))
        .unwrap();
    p.run_until(SEC, 100, |p| is_open(p, false, again));
}

#[test]
fn the_peer_closing_a_channel_closes_it_here_too() {
    let mut p = Pair::new(13);
    p.connect();
    let id = p
        .client
        .m
        .open_channel(p.now, ChannelOptions::new("c"))
        .unwrap();
    p.run_until(SEC, 100, |p| opened(p, false, "c").is_some());
    p.server.m.close_channel(p.now, id).unwrap();
    p.run_until(SEC, 1000, |p| {
        p.client.has(|e| *e == ChannelEvent::ChannelClosed { id })
            && p.server.has(|e| *e == ChannelEvent::ChannelClosed { id })
    });
    assert_eq!(
        p.client.m.send(p.now, id, b"x", false),
        Err(ChannelError::UnknownChannel(id))
    );
}

#[test]
fn closing_the_association_is_seen_by_the_peer_within_one_trip() {
    let mut p = Pair::new(14);
    p.connect();
    let id = p
        .client
        .m
        .open_channel(p.now, ChannelOptions::new("c"))
        .unwrap();
    p.run_until(SEC, 100, |p| is_open(p, true, id));
    // Nothing outstanding (the peer acknowledged the OPEN): the SHUTDOWN
    // goes at once.
    p.run_until(SEC, 100, |p| p.client.m.buffered_amount(id) == 0);
    p.client.m.close(p.now);
    p.drain();
    assert!(p.client.has(|e| *e == ChannelEvent::ChannelClosed { id }));
    assert!(p
        .client
        .has(|e| *e == ChannelEvent::Closed(CloseReason::LocalClose)));
    assert_eq!(
        p.client.m.send(p.now, id, b"x", false),
        Err(ChannelError::AssociationClosed)
    );
    let took = p.run_until(SEC, 100, |p| {
        p.server
            .has(|e| *e == ChannelEvent::Closed(CloseReason::PeerShutdown))
    });
    assert!(took <= Duration::from_millis(10), "{took:?}");
    assert!(p.server.has(|e| *e == ChannelEvent::ChannelClosed { id }));
    // Both finish the SHUTDOWN handshake and go quiet.
    p.run_for(10 * SEC);
    assert_eq!(p.client.m.poll_timeout(), None);
    assert_eq!(p.server.m.poll_timeout(), None);
}

#[test]
fn aborting_the_association_is_seen_by_the_peer_within_one_trip() {
    let mut p = Pair::new(15);
    p.connect();
    p.server.m.abort(p.now);
    p.drain();
    assert!(p
        .server
        .has(|e| *e == ChannelEvent::Closed(CloseReason::LocalAbort)));
    let took = p.run_until(SEC, 100, |p| {
        p.client
            .has(|e| *e == ChannelEvent::Closed(CloseReason::PeerAbort))
    });
    assert!(took <= Duration::from_millis(10), "{took:?}");
    assert_eq!(p.server.m.poll_timeout(), None);
    assert_eq!(p.client.m.poll_timeout(), None);
    // Exactly one Closed each.
    for side in [&p.client, &p.server] {
        let n = side
            .events
            .iter()
            .filter(|e| matches!(e, ChannelEvent::Closed(_)))
            .count();
        assert_eq!(n, 1);
    }
}

#[test]
fn commands_on_unknown_channels_are_typed_errors() {
    let mut p = Pair::new(16);
    p.connect();
    let x = ChannelId(42);
    assert_eq!(
        p.client.m.send(p.now, x, b"a", false),
        Err(ChannelError::UnknownChannel(x))
    );
    assert_eq!(
        p.client.m.close_channel(p.now, x),
        Err(ChannelError::UnknownChannel(x))
    );
    assert_eq!(p.client.m.buffered_amount(x), 0);
    assert_eq!(
        p.client
            .m
            .open_channel(p.now, ChannelOptions::new("l".repeat(70_000))),
        Err(ChannelError::LabelTooLong)
    );
}

/// The DATA chunks of `packet` (an SCTP packet): (flags, PPID).
fn data_chunks(packet: &[u8]) -> Vec<(u8, u32)> {
    let mut out = Vec::new();
    let mut at = 12; // the common header
    while let Some(h) = packet.get(at..at + 4) {
        let (kind, flags) = (h[0], h[1]);
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if len < 4 {
            break;
        }
        if kind == 0 {
            if let Some(ppid) = packet.get(at + 12..at + 16) {
                out.push((flags, u32::from_be_bytes(ppid.try_into().unwrap())));
            }
        }
        at += len.next_multiple_of(4);
    }
    out
}

/// RFC 8832 §6: every DCEP message goes ordered and reliably, whatever the
/// channel's own delivery: the OPEN of an unordered channel and the peer's
/// ACK carry no U (unordered) bit, while the channel's messages do.
#[test]
fn dcep_messages_of_an_unordered_channel_are_sent_ordered() {
    let mut p = Pair::new(40);
    p.connect();
    let options = ChannelOptions::new("unordered")
        .with_ordered(false)
        .with_reliability(Reliability::MaxRetransmits(0));
    p.record_wire = true;
    let id = p.client.m.open_channel(p.now, options).unwrap();
    p.run_until(SEC, 1000, |p| is_open(p, true, id));
    let chunks = |client: bool| -> Vec<(u8, u32)> {
        p.wire
            .iter()
            .filter(|(c, _)| *c == client)
            .flat_map(|(_, b)| data_chunks(b))
            .collect()
    };
    let (client_chunks, server_chunks) = (chunks(true), chunks(false));
    const U: u8 = 0x04;
    let open = client_chunks.iter().find(|(_, ppid)| *ppid == 50);
    let ack = server_chunks.iter().find(|(_, ppid)| *ppid == 50);
    assert_eq!(open.map(|(f, _)| f & U), Some(0), "OPEN: {client_chunks:?}");
    assert_eq!(ack.map(|(f, _)| f & U), Some(0), "ACK: {server_chunks:?}");
    p.wire.clear();
    p.client.m.send(p.now, id, b"x", true).unwrap();
    p.drain();
    let flags: Vec<(u8, u32)> = p.wire.iter().flat_map(|(_, b)| data_chunks(b)).collect();
    assert!(
        flags.iter().any(|(f, ppid)| *ppid == 53 && f & U != 0),
        "the channel's own message goes unordered: {flags:?}"
    );
}

/// RFC 8832 §6: an unordered channel's messages need not wait for the
/// peer's ACK; until it comes they go ordered (no U bit), so that none
/// overtakes the OPEN, and the peer gets them with the channel. A round
/// trip less before the first message.
#[test]
fn an_unordered_channel_sends_before_the_ack_ordered_and_the_peer_gets_it() {
    let mut p = Pair::new(41);
    p.connect();
    let options = ChannelOptions::new("early-unordered")
        .with_ordered(false)
        .with_reliability(Reliability::MaxRetransmits(0));
    p.record_wire = true;
    let id = p.client.m.open_channel(p.now, options).unwrap();
    p.client.m.send(p.now, id, b"now", true).unwrap();
    p.drain();
    let first: Vec<(u8, u32)> = p
        .wire
        .iter()
        .filter(|(c, _)| *c)
        .flat_map(|(_, b)| data_chunks(b))
        .collect();
    const U: u8 = 0x04;
    assert!(
        first.iter().any(|(f, ppid)| *ppid == 53 && f & U == 0),
        "the message goes with the OPEN, ordered: {first:?}"
    );
    let mut got = Vec::new();
    p.run_until(SEC, 200, |p| {
        got.extend(p.server.take_messages());
        !got.is_empty()
    });
    assert_eq!(got, vec![(id, b"now".to_vec(), true)]);
}

/// Whether `b` (an SCTP packet) holds a chunk of type `kind`.
fn has_chunk(b: &[u8], kind: u8) -> bool {
    let mut at = 12;
    while let Some(h) = b.get(at..at + 4) {
        if h[0] == kind {
            return true;
        }
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if len < 4 {
            break;
        }
        at += len.next_multiple_of(4);
    }
    false
}

/// DATA that reaches the client before the COOKIE-ACK (the COOKIE-ACK lost
/// or overtaken, as happens on a lossy path) is held, not acknowledged and
/// dropped: the channel the server opened at once still opens.
#[test]
fn data_that_overtakes_the_cookie_ack_is_delivered_once_the_association_is_up() {
    let mut p = Pair::new(5);
    p.record_wire = true;
    let now = p.now;
    p.client.m.handle_timeout(now);
    p.server.m.handle_timeout(now);
    for _ in 0..100 {
        p.drain();
        if p.wire.iter().any(|(c, b)| *c && has_chunk(b, 10)) {
            p.server.link.dead = true;
        }
        p.step();
        if p.server.has(|e| *e == ChannelEvent::Connected) {
            break;
        }
    }
    assert!(p.server.has(|e| *e == ChannelEvent::Connected));
    let _id = p
        .server
        .m
        .open_channel(p.now, ChannelOptions::new("ping"))
        .unwrap();
    let mut out = Vec::new();
    while let Some(o) = p.server.m.poll_output() {
        if let p2p_datachannel::SctpOutput::Transmit(t) = o {
            out.push(t.contents)
        }
    }
    assert!(out.iter().any(|b| has_chunk(b, 0)), "the OPEN went out");
    let (ca, sa) = addrs();
    for b in out.iter().filter(|b| has_chunk(b, 0)) {
        let _ = p
            .client
            .m
            .handle_input(p.now, Datagram::new(Transport::Udp, sa.local, ca.local, b));
    }
    p.server.link.dead = false;
    for _ in 0..1000 {
        if !p.step() {
            break;
        }
        if p.now - p.t0 > Duration::from_secs(30) {
            break;
        }
    }
    assert!(
        p.client
            .has(|e| matches!(e, ChannelEvent::ChannelOpened { label, .. } if label == "ping")),
        "{:?}",
        p.client.events
    );
}

/// `close` delivers what was written before it: the SHUTDOWN waits until
/// the peer acknowledged every byte, so a message sent just before closing
/// arrives whole, and only then does the peer see the association closed.
#[test]
fn a_message_sent_just_before_close_arrives_before_the_shutdown() {
    let mut p = Pair::new(15);
    p.connect();
    let id = p
        .client
        .m
        .open_channel(p.now, ChannelOptions::new("last"))
        .unwrap();
    let big = vec![9u8; 60 * 1024];
    for _ in 0..3 {
        p.client.m.send(p.now, id, &big, true).unwrap();
    }
    p.client.m.close(p.now);
    p.run_until(5 * SEC, 10_000, |p| {
        p.server
            .has(|e| *e == ChannelEvent::Closed(CloseReason::PeerShutdown))
    });
    let got =
        p.server.events.iter().rposition(
            |e| matches!(e, ChannelEvent::Message { data, .. } if data.len() == big.len()),
        );
    let messages = p
        .server
        .events
        .iter()
        .filter(|e| matches!(e, ChannelEvent::Message { .. }))
        .count();
    assert_eq!(messages, 3);
    let closed = p
        .server
        .events
        .iter()
        .position(|e| *e == ChannelEvent::Closed(CloseReason::PeerShutdown));
    assert!(got.is_some() && got < closed, "{:?}", p.server.events);
}

/// No packet is larger than `max_packet_size` (what one DTLS record within
/// the path MTU can carry), whatever the size of the messages; the chunk
/// padding included, for a size that is not a multiple of four.
#[test]
fn no_packet_is_larger_than_the_max_packet_size() {
    for max in [1163u32, 1161, 1200] {
        let config = |role| {
            let mut c = SctpConfig::new(role)
                .with_rng_seed(1)
                .with_remote_max_message_size(Some(0));
            c.max_packet_size = max;
            c
        };
        let mut p = Pair::with_configs(config(SctpRole::Client), config(SctpRole::Server), 1);
        p.connect();
        p.record_wire = true;
        let id = p
            .client
            .m
            .open_channel(p.now, ChannelOptions::new("big"))
            .unwrap();
        for len in [100_000, 4_097, 1_135, 1_136] {
            p.client.m.send(p.now, id, &vec![1u8; len], true).unwrap();
        }
        p.run_until(5 * SEC, 10_000, |p| {
            p.server
                .events
                .iter()
                .filter(|e| matches!(e, ChannelEvent::Message { .. }))
                .count()
                == 4
        });
        let largest = p.wire.iter().map(|(_, b)| b.len()).max().unwrap();
        assert!(largest <= max as usize, "{largest} > {max}");
    }
}
