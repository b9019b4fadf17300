//! The layers alone: two SCTP associations in the clear, two DTLS
//! endpoints carrying full records.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use p2p_connect::{ChannelEvent, ChannelOptions, DtlsRole, Machine, Transmit};
use p2p_datachannel::{SctpAssociation, SctpConfig, SctpOutput, SctpRole};
use p2p_dtls::{Certificate, DtlsConfig, DtlsEndpoint, DtlsEvent, DtlsOutput};
use p2p_proto::{FiveTuple, Transport};

use crate::sessions::addr;
use crate::{
    message, receiver_side, sender_side, Clock, Counter, Run, HIGH_WATER, MAX_ROUNDS, MAX_SKIPPED,
    MESSAGE,
};

fn inner_path() -> FiveTuple {
    let a = addr("127.0.0.1:5000");
    FiveTuple::new(Transport::Udp, a, a)
}

fn sctp(role: SctpRole, seed: u64) -> SctpAssociation {
    // As the session makes it (crates/connect/src/session/secure.rs): the
    // packet fits one DTLS record of a 1,200-byte datagram.
    let mut c = SctpConfig::new(role)
        .with_liveness(None, None)
        .with_rng_seed(seed);
    c.max_packet_size = 1200 - (13 + 8 + 16);
    SctpAssociation::new(c, inner_path())
}

/// Drain an association: its packets to `wire`, its events to `events`.
fn drain_sctp(s: &mut SctpAssociation, wire: &mut Vec<Vec<u8>>, events: &mut Vec<ChannelEvent>) {
    while let Some(o) = s.poll_output() {
        match o {
            SctpOutput::Transmit(t) => wire.push(t.contents),
            SctpOutput::Event(e) => events.push(e),
            _ => {}
        }
    }
}

fn feed_sctp(s: &mut SctpAssociation, now: Instant, packet: &[u8]) {
    let p = inner_path();
    let _ = s.handle_input(
        now,
        p2p_proto::Datagram::new(p.transport, p.remote, p.local, packet),
    );
}

pub(crate) fn run_sctp(mib: u64, batch: usize) -> Result<Run, String> {
    let mut clock = Clock {
        skipped: Duration::ZERO,
    };
    let mut a = sctp(SctpRole::Client, 1);
    let mut b = sctp(SctpRole::Server, 2);
    let (mut wa, mut wb, mut ea, mut eb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let now = clock.now();
    a.handle_timeout(now);
    b.handle_timeout(now);
    let mut tx = None;
    let mut rx = None;
    for _ in 0..10_000 {
        let now = clock.now();
        drain_sctp(&mut a, &mut wa, &mut ea);
        drain_sctp(&mut b, &mut wb, &mut eb);
        for p in wa.drain(..) {
            feed_sctp(&mut b, now, &p);
        }
        for p in wb.drain(..) {
            feed_sctp(&mut a, now, &p);
        }
        for e in ea.drain(..) {
            if matches!(e, ChannelEvent::Connected) {
                tx = Some(
                    a.open_channel(now, ChannelOptions::new("floor"))
                        .map_err(|e| e.to_string())?,
                );
            }
        }
        for e in eb.drain(..) {
            if let ChannelEvent::ChannelOpened { id, .. } = e {
                rx = Some(id);
            }
        }
        if tx.is_some() && rx.is_some() {
            break;
        }
    }
    let (Some(tx), Some(rx)) = (tx, rx) else {
        return Err("the associations did not open a channel".into());
    };
    for _ in 0..100 {
        drain_sctp(&mut a, &mut wa, &mut ea);
        drain_sctp(&mut b, &mut wb, &mut eb);
        if wa.is_empty() && wb.is_empty() {
            break;
        }
        let now = clock.now();
        for p in wa.drain(..) {
            feed_sctp(&mut b, now, &p);
        }
        for p in wb.drain(..) {
            feed_sctp(&mut a, now, &p);
        }
    }
    ea.clear();
    eb.clear();

    let total = mib * 1024 * 1024 / MESSAGE as u64;
    let mut template = vec![0x5au8; MESSAGE];
    let mut counter = Counter::default();
    let mut sent = 0u64;
    let mut r = Run::default();
    let skipped0 = clock.skipped;
    let start = Instant::now();
    let mut inbound: VecDeque<Vec<u8>> = VecDeque::new();
    for _ in 0..MAX_ROUNDS {
        if counter.next >= total || counter.bad > 0 {
            break;
        }
        let mut moved = false;
        let now = clock.now();
        sender_side(
            &mut r.sender,
            &mut r.sender_allocs,
            || -> Result<(), String> {
                r.backward += wb.len() as u64;
                for p in wb.drain(..) {
                    feed_sctp(&mut a, now, &p);
                }
                while sent < total && a.buffered_amount(tx) < HIGH_WATER {
                    a.send(now, tx, message(&mut template, sent), true)
                        .map_err(|e| e.to_string())?;
                    sent += 1;
                }
                drain_sctp(&mut a, &mut wa, &mut ea);
                ea.clear();
                Ok(())
            },
        )?;
        if !wa.is_empty() {
            moved = true;
            r.forward += wa.len() as u64;
            r.wire_bytes += wa.iter().map(|p| p.len() as u64).sum::<u64>();
            inbound.extend(wa.drain(..));
        }
        while !inbound.is_empty() {
            moved = true;
            let n = inbound.len().min(batch);
            let now = clock.now();
            receiver_side(&mut r.receiver, &mut r.receiver_allocs, || {
                for p in inbound.drain(..n) {
                    feed_sctp(&mut b, now, &p);
                }
                drain_sctp(&mut b, &mut wb, &mut eb);
                for e in eb.drain(..) {
                    if let ChannelEvent::Message { id, data, .. } = e {
                        if id == rx {
                            counter.take(&data);
                            b.release(now, id, data.len());
                        }
                    }
                }
                drain_sctp(&mut b, &mut wb, &mut eb);
            });
        }
        if !moved && wb.is_empty() {
            r.stalls += 1;
            let next = [a.poll_timeout(), b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .ok_or("both associations idle")?;
            clock.skip_to(next);
            if clock.skipped - skipped0 > MAX_SKIPPED {
                return Err(format!("stuck: {} of {total} delivered", counter.next));
            }
            let now = clock.now();
            a.handle_timeout(now);
            b.handle_timeout(now);
            drain_sctp(&mut a, &mut wa, &mut ea);
            drain_sctp(&mut b, &mut wb, &mut eb);
        }
    }
    r.wall = start.elapsed();
    r.bytes = counter.bytes;
    if counter.bad > 0 {
        return Err(format!("{} messages out of order or damaged", counter.bad));
    }
    if counter.next < total {
        return Err(format!("{} of {total} delivered", counter.next));
    }
    Ok(r)
}

// ---- DTLS alone ----

fn drain_dtls(d: &mut DtlsEndpoint, wire: &mut Vec<Transmit>, data: &mut Vec<Vec<u8>>) -> bool {
    let mut closed = false;
    while let Some(o) = d.poll_output() {
        match o {
            DtlsOutput::Transmit(t) => wire.push(t),
            DtlsOutput::Event(DtlsEvent::Data(v)) => data.push(v),
            DtlsOutput::Event(DtlsEvent::Closed(_)) => closed = true,
            _ => {}
        }
    }
    closed
}

pub(crate) fn run_dtls(mib: u64, batch: usize, dtls13: bool) -> Result<Run, String> {
    let clock = Clock {
        skipped: Duration::ZERO,
    };
    let ca = Certificate::generate().map_err(|e| e.to_string())?;
    let cb = Certificate::generate().map_err(|e| e.to_string())?;
    let (pa, pb) = (addr("10.0.0.1:1000"), addr("10.0.0.2:2000"));
    let mk = |cert: Certificate, role, peer: &Certificate, seed, local, remote| {
        let mut c = DtlsConfig::new(cert, role, vec![peer.fingerprint()]).with_seed(seed);
        c.dtls13 = dtls13;
        DtlsEndpoint::new(c, FiveTuple::new(Transport::Udp, local, remote))
            .map_err(|e| e.to_string())
    };
    let mut a = mk(ca.clone(), DtlsRole::Client, &cb, 1, pa, pb)?;
    let mut b = mk(cb, DtlsRole::Server, &ca, 2, pb, pa)?;
    let (mut wa, mut wb, mut da, mut db) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let now = clock.now();
    a.handle_timeout(now);
    b.handle_timeout(now);
    for _ in 0..1000 {
        let now = clock.now();
        drain_dtls(&mut a, &mut wa, &mut da);
        drain_dtls(&mut b, &mut wb, &mut db);
        for t in wa.drain(..) {
            let _ = b.handle_input(now, t.as_datagram());
        }
        for t in wb.drain(..) {
            let _ = a.handle_input(now, t.as_datagram());
        }
        if a.is_connected() && b.is_connected() {
            break;
        }
    }
    if !(a.is_connected() && b.is_connected()) {
        return Err("DTLS did not connect".into());
    }
    let version = format!("{:?}", a.version());
    drain_dtls(&mut a, &mut wa, &mut da);
    drain_dtls(&mut b, &mut wb, &mut db);
    wa.clear();
    wb.clear();

    // The records SCTP would send: one DATA chunk's packet each.
    let record = a.max_payload();
    let total_bytes = mib * 1024 * 1024;
    let payload = vec![0x5au8; record];
    let mut r = Run::default();
    let mut sent = 0u64;
    let mut got = 0u64;
    let start = Instant::now();
    for _ in 0..MAX_ROUNDS {
        if got >= total_bytes {
            break;
        }
        let now = clock.now();
        sender_side(
            &mut r.sender,
            &mut r.sender_allocs,
            || -> Result<(), String> {
                for _ in 0..batch {
                    if sent >= total_bytes {
                        break;
                    }
                    a.send(now, &payload).map_err(|e| e.to_string())?;
                    sent += record as u64;
                }
                drain_dtls(&mut a, &mut wa, &mut da);
                Ok(())
            },
        )?;
        r.forward += wa.len() as u64;
        r.wire_bytes += wa.iter().map(|t| t.contents.len() as u64).sum::<u64>();
        if wa.is_empty() {
            return Err("the sender sent nothing".into());
        }
        let mut closed = false;
        receiver_side(&mut r.receiver, &mut r.receiver_allocs, || {
            for t in wa.drain(..) {
                let _ = b.handle_input(now, t.as_datagram());
            }
            closed = drain_dtls(&mut b, &mut wb, &mut db);
            for d in db.drain(..) {
                got += d.len() as u64;
            }
        });
        if closed {
            return Err("the receiver closed".into());
        }
    }
    r.wall = start.elapsed();
    r.bytes = got;
    r.note = version;
    Ok(r)
}
