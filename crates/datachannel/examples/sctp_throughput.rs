//! How fast two associations move data with nothing between them (no DTLS,
//! no loss, no delay): 100 MiB as 16 KiB messages on one reliable ordered
//! channel, the sender keeping 1 MiB buffered. Wall-clock time is the CPU
//! cost of both ends of SCTP; simulated time only drives the timers.
//!
//! `cargo run --release -p p2p-datachannel --example sctp_throughput [MiB] [each]`
//!
//! By default each side is fed every packet of a flight, then drained
//! once; with `each`, it is drained after every datagram (the library
//! gathers once per drain, and each gather walks its in-flight queue).

use std::time::{Duration, Instant};

use p2p_datachannel::{
    ChannelEvent, ChannelOptions, SctpAssociation, SctpConfig, SctpOutput, SctpRole,
};
use p2p_proto::{FiveTuple, Machine, Transmit, Transport};

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let each = std::env::args().nth(2).is_some_and(|a| a == "each");
    const MSG: usize = 16 * 1024;
    let total = mib * 1024 * 1024;
    let count = total / MSG;

    let a = "192.0.2.1:1".parse().unwrap();
    let b = "192.0.2.2:2".parse().unwrap();
    let cfg = |role, seed| {
        SctpConfig::new(role)
            .with_rng_seed(seed)
            .with_remote_max_message_size(Some(256 * 1024))
    };
    let mut client = SctpAssociation::new(
        cfg(SctpRole::Client, 1),
        FiveTuple::new(Transport::Udp, a, b),
    );
    let mut server = SctpAssociation::new(
        cfg(SctpRole::Server, 2),
        FiveTuple::new(Transport::Udp, b, a),
    );
    let mut now = Instant::now();
    let id = client
        .open_channel(now, ChannelOptions::new("bulk"))
        .unwrap();
    client.handle_timeout(now);
    server.handle_timeout(now);

    let payload = vec![0x5a; MSG];
    let (mut sent, mut received, mut bytes, mut packets) = (0usize, 0usize, 0usize, 0u64);
    let mut to_server: Vec<Transmit> = Vec::new();
    let mut to_client: Vec<Transmit> = Vec::new();
    let mut connected = false;
    let started = Instant::now();
    let mut rounds = 0u64;
    while received < count {
        rounds += 1;
        assert!(rounds < 50_000_000, "stalled at {received} of {count}");
        if connected {
            while sent < count && client.buffered_amount(id) < 1024 * 1024 {
                client.send(now, id, &payload, true).unwrap();
                sent += 1;
            }
        }
        while let Some(o) = client.poll_output() {
            match o {
                SctpOutput::Transmit(t) => to_server.push(t),
                SctpOutput::Event(ChannelEvent::Connected) => connected = true,
                _ => {}
            }
        }
        packets += to_server.len() as u64;
        let mut drain_server = |server: &mut SctpAssociation, to_client: &mut Vec<Transmit>| {
            while let Some(o) = server.poll_output() {
                match o {
                    SctpOutput::Transmit(t) => to_client.push(t),
                    SctpOutput::Event(ChannelEvent::Message { id, data, .. }) => {
                        received += 1;
                        bytes += data.len();
                        // Taken at once: the receive queue never fills.
                        server.release(now, id, data.len());
                    }
                    _ => {}
                }
            }
        };
        for t in to_server.drain(..) {
            let _ = server.handle_input(now, t.as_datagram());
            if each {
                drain_server(&mut server, &mut to_client);
            }
        }
        drain_server(&mut server, &mut to_client);
        for t in to_client.drain(..) {
            let _ = client.handle_input(now, t.as_datagram());
            if each {
                while let Some(o) = client.poll_output() {
                    match o {
                        SctpOutput::Transmit(t) => to_server.push(t),
                        SctpOutput::Event(ChannelEvent::Connected) => connected = true,
                        _ => {}
                    }
                }
            }
        }
        // Nothing moved and nothing to send: let the timers run.
        if !connected || sent == count || client.buffered_amount(id) >= 1024 * 1024 {
            let next = [client.poll_timeout(), server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            now = next.map_or(now + Duration::from_millis(1), |t| t.max(now));
            client.handle_timeout(now);
            server.handle_timeout(now);
        }
    }
    let wall = started.elapsed();
    assert_eq!(bytes, count * MSG);
    println!(
        "{} MiB as {} KiB messages, drained {}: {:.3} s wall, {:.0} MB/s ({:.0} MiB/s), {} client packets, {} rounds",
        mib,
        MSG / 1024,
        if each { "after each datagram" } else { "per flight" },
        wall.as_secs_f64(),
        bytes as f64 / wall.as_secs_f64() / 1e6,
        bytes as f64 / wall.as_secs_f64() / 1048576.0,
        packets,
        rounds
    );
}
