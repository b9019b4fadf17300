//! Two `Session`s in memory, as the driver calls them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2p_connect::{
    ChannelEvent, ChannelId, ChannelOptions, DtlsRole, IceConfig, Machine, RemoteSecurity, Session,
    SessionConfig, SessionEvent, SessionOutput, Transmit,
};

use crate::{
    message, receiver_side, sender_side, Clock, Counter, Run, HIGH_WATER, MAX_ROUNDS, MAX_SKIPPED,
    MESSAGE, SEND_BATCH,
};

pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a literal address")
}

fn session(controlling: bool, host: SocketAddr, seed: u64) -> Result<Session, String> {
    let ice = if controlling {
        IceConfig::controlling()
    } else {
        IceConfig::controlled()
    };
    let mut c = SessionConfig::new(ice.with_seed(seed));
    c.hosts = vec![host];
    c.rng_seed = Some(seed);
    Session::new(c).map_err(|e| e.to_string())
}

/// One session and what came out of it.
struct Side {
    s: Session,
    wire: Vec<Transmit>,
    events: Vec<SessionEvent>,
}

impl Side {
    fn drain(&mut self) {
        while let Some(o) = self.s.poll_output() {
            match o {
                SessionOutput::Transmit(t) => self.wire.push(t),
                SessionOutput::Event(e) => self.events.push(e),
                _ => {}
            }
        }
    }
}

/// Two sessions connected in memory with a channel open: (sender,
/// receiver, the sender's channel, the receiver's).
fn connected_sessions(clock: &mut Clock) -> Result<(Side, Side, ChannelId, ChannelId), String> {
    let mk = |c, h, seed| -> Result<Side, String> {
        Ok(Side {
            s: session(c, addr(h), seed)?,
            wire: Vec::new(),
            events: Vec::new(),
        })
    };
    let mut a = mk(true, "10.0.0.1:1000", 1)?;
    let mut b = mk(false, "10.0.0.2:2000", 2)?;
    let now = clock.now();
    // A offers (actpass), B answers active: B is the DTLS client.
    let signal = |me: &mut Side, peer: &Side, role| -> Result<(), String> {
        let (u, p) = peer.s.local_credentials();
        let (u, p) = (u.to_owned(), p.to_owned());
        let fingerprints = vec![peer.s.local_fingerprint()];
        me.s.set_remote_security(
            now,
            RemoteSecurity {
                role,
                fingerprints,
                sctp_port: 5000,
                max_message_size: None,
            },
        );
        me.s.set_remote_credentials(now, &u, &p)
            .map_err(|e| e.to_string())
    };
    signal(&mut a, &b, DtlsRole::Server)?;
    signal(&mut b, &a, DtlsRole::Client)?;
    a.s.handle_timeout(now);
    b.s.handle_timeout(now);
    let mut tx = None;
    let mut rx = None;
    for _ in 0..100_000 {
        let now = clock.now();
        a.drain();
        b.drain();
        let moved_a = exchange(now, &mut a, &mut b, true, &mut tx, &mut rx)?;
        let moved_b = exchange(now, &mut b, &mut a, false, &mut tx, &mut rx)?;
        if let (Some(t), Some(r)) = (tx, rx) {
            a.drain();
            b.drain();
            if a.wire.is_empty() && b.wire.is_empty() {
                a.events.clear();
                b.events.clear();
                return Ok((a, b, t, r));
            }
            continue;
        }
        if !moved_a && !moved_b {
            let next = [a.s.poll_timeout(), b.s.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .ok_or("both sessions idle before the channel opened")?;
            clock.skip_to(next);
            let now = clock.now();
            a.s.handle_timeout(now);
            b.s.handle_timeout(now);
        }
    }
    Err("the sessions did not connect".into())
}

/// One side's events and datagrams to the other, during the setup;
/// whether anything moved.
fn exchange(
    now: Instant,
    me: &mut Side,
    peer: &mut Side,
    offerer: bool,
    tx: &mut Option<ChannelId>,
    rx: &mut Option<ChannelId>,
) -> Result<bool, String> {
    let mut moved = false;
    for e in std::mem::take(&mut me.events) {
        moved = true;
        match e {
            SessionEvent::LocalCandidate(c) => {
                peer.s
                    .add_remote_candidate(now, c)
                    .map_err(|e| e.to_string())?;
            }
            SessionEvent::GatheringComplete => peer.s.end_of_remote_candidates(now),
            SessionEvent::Channel(ChannelEvent::Connected) if offerer => {
                *tx =
                    me.s.open_channel(now, ChannelOptions::new("floor"))
                        .map_err(|e| e.to_string())?;
            }
            SessionEvent::Channel(ChannelEvent::ChannelOpened { id, .. }) => *rx = Some(id),
            SessionEvent::Ended(e) => return Err(format!("ended: {e:?}")),
            _ => {}
        }
    }
    let wire = std::mem::take(&mut me.wire);
    if !wire.is_empty() {
        moved = true;
        peer.s
            .handle_inputs(now, wire.iter().map(Transmit::as_datagram));
    }
    Ok(moved)
}

pub(crate) fn run_sessions(mib: u64, batch: usize) -> Result<Run, String> {
    let mut clock = Clock {
        skipped: Duration::ZERO,
    };
    let (mut a, mut b, tx, rx) = connected_sessions(&mut clock)?;
    let total = mib * 1024 * 1024 / MESSAGE as u64;
    let mut template = vec![0x5au8; MESSAGE];
    let mut counter = Counter::default();
    let mut sent = 0u64;
    let mut r = Run::default();
    let skipped0 = clock.skipped;
    let start = Instant::now();
    let mut inbound: VecDeque<Transmit> = VecDeque::new();
    for _ in 0..MAX_ROUNDS {
        if counter.next >= total || counter.bad > 0 {
            break;
        }
        let mut moved = false;
        // The sender: acknowledgements in, then messages up to the high
        // water, flushed every SEND_BATCH bytes.
        let now = clock.now();
        sender_side(
            &mut r.sender,
            &mut r.sender_allocs,
            || -> Result<(), String> {
                if !b.wire.is_empty() {
                    r.backward += b.wire.len() as u64;
                    a.s.handle_inputs(now, b.wire.iter().map(Transmit::as_datagram));
                    b.wire.clear();
                }
                let mut queued = 0;
                while sent < total && a.s.buffered_amount(tx) < HIGH_WATER {
                    a.s.send_deferred(now, tx, message(&mut template, sent), true)
                        .map_err(|e| e.to_string())?;
                    sent += 1;
                    queued += MESSAGE;
                    if queued >= SEND_BATCH {
                        a.s.flush(now);
                        queued = 0;
                    }
                }
                if queued > 0 {
                    a.s.flush(now);
                }
                a.drain();
                a.events.clear();
                Ok(())
            },
        )?;
        if !a.wire.is_empty() {
            moved = true;
            r.forward += a.wire.len() as u64;
            r.wire_bytes += a.wire.iter().map(|t| t.contents.len() as u64).sum::<u64>();
            inbound.extend(a.wire.drain(..));
        }
        // The receiver: the datagrams in batches, each message taken.
        while !inbound.is_empty() {
            moved = true;
            let n = inbound.len().min(batch);
            let now = clock.now();
            receiver_side(&mut r.receiver, &mut r.receiver_allocs, || {
                b.s.handle_inputs(now, inbound.range(..n).map(Transmit::as_datagram));
                b.drain();
                for e in b.events.drain(..) {
                    if let SessionEvent::Channel(ChannelEvent::Message { id, data, .. }) = e {
                        if id == rx {
                            counter.take(&data);
                            b.s.release(now, id, data.len());
                        }
                    }
                }
                b.drain();
            });
            inbound.drain(..n);
        }
        if !moved && b.wire.is_empty() {
            r.stalls += 1;
            let next = [a.s.poll_timeout(), b.s.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .ok_or("both sessions idle")?;
            clock.skip_to(next);
            if clock.skipped - skipped0 > MAX_SKIPPED {
                return Err(format!("stuck: {} of {total} delivered", counter.next));
            }
            let now = clock.now();
            sender_side(&mut r.sender, &mut r.sender_allocs, || {
                a.s.handle_timeout(now);
                a.drain();
            });
            receiver_side(&mut r.receiver, &mut r.receiver_allocs, || {
                b.s.handle_timeout(now);
                b.drain();
            });
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
