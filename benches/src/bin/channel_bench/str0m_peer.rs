//! str0m 0.25 at its best: sans-IO `Rtc`s, one per thread, each with a
//! loopback UDP socket of 4 MiB buffers, host candidates, offer/answer
//! exchanged in memory; the data channel is negotiated in the offer
//! (DCEP). The loop is str0m's own (its docs and chat example: poll to
//! `Timeout`, feed a datagram or the timeout, again) on a non-blocking
//! socket: each pass takes every datagram already queued (`recvmmsg`), one
//! `Input::Receive` and a drain each, then the due timeout, then the
//! sender's writes while `Channel::write` takes them, sends what came out
//! (`sendmmsg`), and waits (`ppoll`) only until str0m's next timeout.
//!
//! What made it slow before (2-5 MB/s, CPU-bound, not latency-bound): a
//! 4 MiB `sctp_max_buffered_amount`. str0m's SCTP (sctp-proto) walks its
//! whole in-flight queue, with a hash lookup per chunk, on every gather
//! of outbound packets, which str0m does for every datagram it sends: the
//! cost of a packet grows with what is in flight. With its default
//! (128 KiB) it makes about 5× more, with [`BEST_BUFFERED`] (24 KiB, the
//! best of a sweep on loopback) 7-28× more by load. [`run_in_memory`]
//! (both `Rtc`s in one thread, no sockets) shows what is left is str0m's
//! own per-packet work.
//!
//! [`memory`] measures an idle connection's heap (`--memory`).

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::channel::ChannelId;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::{message, udp, Counter, Job, Outcome};

struct Shared {
    done: AtomicBool,
    delivered: AtomicU64,
    start: Mutex<Option<Instant>>,
    end: Mutex<Option<Instant>>,
}

/// The most a sender lets str0m buffer, at its best on loopback (a
/// sweep, 16 KiB to 4 MiB, docs/performance.md): sctp-proto scans its
/// whole in-flight queue for every datagram it sends (its expiry and
/// retransmission checks, a hash lookup per chunk), so the less is in
/// flight the less each packet costs, down to one 16 KiB message and a
/// half where the sender starts to wait on acknowledgements.
pub(crate) const BEST_BUFFERED: usize = 24 * 1024;

/// An `Rtc` whose sender may buffer `buffered` bytes (`None`: str0m's
/// default, 128 KiB).
fn rtc(now: Instant, buffered: Option<usize>) -> Rtc {
    let b = Rtc::builder();
    match buffered {
        Some(n) => b.set_sctp_max_buffered_amount(n),
        None => b,
    }
    .build(now)
}

/// Two `Rtc`s with host candidates `al` and `ar`, offer (the data
/// channel negotiated in it) and answer exchanged in memory: the offerer,
/// the answerer and the channel, which opens once ICE, DTLS and SCTP are
/// through. One function for the loopback, in-memory and memory runs.
fn negotiated(
    now: Instant,
    buffered: Option<usize>,
    (al, ar): (std::net::SocketAddr, std::net::SocketAddr),
) -> Result<(Rtc, Rtc, ChannelId), String> {
    let (mut l, mut r) = (rtc(now, buffered), rtc(now, buffered));
    l.add_local_candidate(Candidate::host(al, "udp").map_err(|e| e.to_string())?);
    r.add_local_candidate(Candidate::host(ar, "udp").map_err(|e| e.to_string())?);
    let mut change = l.sdp_api();
    let cid = change.add_channel("bench".into());
    let (offer, pending) = change.apply().ok_or("no offer")?;
    let answer = r.sdp_api().accept_offer(offer).map_err(|e| e.to_string())?;
    l.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| e.to_string())?;
    Ok((l, r, cid))
}

/// str0m with [`BEST_BUFFERED`].
pub(crate) fn run(job: Job) -> Result<Outcome, String> {
    run_with(job, Some(BEST_BUFFERED))
}

/// str0m with its default buffered amount (128 KiB).
pub(crate) fn run_default(job: Job) -> Result<Outcome, String> {
    run_with(job, None)
}

fn run_with(job: Job, buffered: Option<usize>) -> Result<Outcome, String> {
    str0m::crypto::from_feature_flags().install_process_default();
    let now = Instant::now();
    let (sl, sr) = (udp::socket()?, udp::socket()?);
    let addrs = (
        sl.local_addr().map_err(|e| e.to_string())?,
        sr.local_addr().map_err(|e| e.to_string())?,
    );
    let (l, r, cid) = negotiated(now, buffered, addrs)?;

    let shared = Arc::new(Shared {
        done: AtomicBool::new(false),
        delivered: AtomicU64::new(0),
        start: Mutex::new(None),
        end: Mutex::new(None),
    });
    let n = job.messages();
    let deadline = now + job.limit + Duration::from_secs(10);
    let sender = {
        let shared = shared.clone();
        std::thread::spawn(move || drive(l, sl, Some(cid), n, &shared, deadline))
    };
    let receiver = {
        let shared = shared.clone();
        std::thread::spawn(move || drive(r, sr, None, n, &shared, deadline))
    };
    let rs = sender.join().map_err(|_| "sender panicked")?;
    let rr = receiver.join().map_err(|_| "receiver panicked")?;
    rs?;
    rr?;
    let start = shared
        .start
        .lock()
        .map_err(|e| e.to_string())?
        .ok_or("never started")?;
    let end = shared
        .end
        .lock()
        .map_err(|e| e.to_string())?
        .unwrap_or_else(Instant::now);
    let delivered = shared.delivered.load(Ordering::Relaxed);
    Ok(Outcome {
        bytes: delivered * crate::MESSAGE as u64,
        elapsed: end - start,
        complete: delivered == n,
    })
}

/// One peer: its `Rtc`, socket and counts.
struct Peer<'a> {
    rtc: Rtc,
    sock: UdpSocket,
    send: Option<ChannelId>,
    open: bool,
    n: u64,
    counter: Counter,
    shared: &'a Shared,
    /// Transmits waiting for the next [`Peer::flush`] (one `sendmmsg`).
    out: Vec<(Vec<u8>, std::net::SocketAddr)>,
}

impl Peer<'_> {
    /// Sends what is waiting: `sendmmsg` in batches of up to 64, or one
    /// `send_to` each where it fails.
    fn flush(&mut self) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.sock);
        let mut from = 0;
        while from < self.out.len() {
            let batch = &self.out[from..self.out.len().min(from + p2p_benches::mmsg::BATCH)];
            let bufs: Vec<&[u8]> = batch.iter().map(|(b, _)| b.as_slice()).collect();
            let dests: Vec<std::net::SocketAddr> = batch.iter().map(|(_, d)| *d).collect();
            match p2p_benches::mmsg::send(fd, &bufs, Some(&dests)) {
                Ok(n) if n > 0 => from += n,
                _ => {
                    for (b, d) in batch {
                        let _ = self.sock.send_to(b, d);
                    }
                    from += batch.len();
                }
            }
        }
        self.out.clear();
    }

    /// Polls until `Timeout`: queues the transmits (sent at the next
    /// [`Peer::flush`]), takes the events.
    fn drain(&mut self) -> Result<Instant, String> {
        loop {
            match self.rtc.poll_output().map_err(|e| e.to_string())? {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => {
                    if self.out.len() >= 4 * p2p_benches::mmsg::BATCH {
                        self.flush();
                    }
                    self.out.push((t.contents.to_vec(), t.destination));
                }
                Output::Event(Event::ChannelOpen(id, _)) if Some(id) == self.send => {
                    self.open = true
                }
                Output::Event(Event::ChannelData(d)) => {
                    self.counter.take(&d.data);
                    let shared = self.shared;
                    shared.delivered.store(self.counter.next, Ordering::Relaxed);
                    if self.counter.bad > 0 {
                        shared.done.store(true, Ordering::Relaxed);
                        return Err(format!(
                            "{} messages out of order or damaged",
                            self.counter.bad
                        ));
                    }
                    if self.counter.next == self.n {
                        *shared.end.lock().map_err(|e| e.to_string())? = Some(Instant::now());
                        shared.done.store(true, Ordering::Relaxed);
                    }
                }
                Output::Event(_) => {}
            }
        }
    }

    fn input(&mut self, i: Input) -> Result<Instant, String> {
        self.rtc.handle_input(i).map_err(|e| e.to_string())?;
        self.drain()
    }
}

/// One peer's loop: the sender (with `send`) writes `n` messages as fast
/// as the channel takes them; the receiver counts them.
fn drive(
    rtc: Rtc,
    sock: UdpSocket,
    send: Option<ChannelId>,
    n: u64,
    shared: &Shared,
    deadline: Instant,
) -> Result<(), String> {
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    let mut p = Peer {
        rtc,
        sock,
        send,
        open: false,
        n,
        counter: Counter::default(),
        shared,
        out: Vec::new(),
    };
    const BATCH: usize = p2p_benches::mmsg::BATCH;
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut lens = [0usize; BATCH];
    let mut froms = [std::net::SocketAddr::from(([0, 0, 0, 0], 0)); BATCH];
    let mut sent = 0u64;
    let mut template = message(0);
    let mut limit_at: Option<Instant> = None;
    p.sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&p.sock);
    let mut timeout = p.input(Input::Timeout(Instant::now()))?;
    loop {
        if shared.done.load(Ordering::Relaxed) || Instant::now() > deadline {
            return Ok(());
        }
        // Every datagram already there goes in (`recvmmsg`, up to 64 a
        // call), one `Receive` each (str0m moves its clock to the
        // datagram's time), each followed by a drain.
        while let Ok(got) = p2p_benches::mmsg::recv(fd, &mut bufs, &mut lens, Some(&mut froms)) {
            for ((b, len), source) in bufs.iter().zip(lens).zip(froms).take(got) {
                let contents = b
                    .get(..len)
                    .unwrap_or_default()
                    .try_into()
                    .map_err(|e: str0m::error::NetError| e.to_string())?;
                let i = Input::Receive(
                    Instant::now(),
                    Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: local,
                        contents,
                    },
                );
                timeout = p.input(i)?;
            }
            if got < BATCH {
                break;
            }
        }
        // Timers are due even while datagrams keep coming.
        let now = Instant::now();
        if now >= timeout {
            timeout = p.input(Input::Timeout(now))?;
        }
        // The sender writes while the channel takes messages.
        if let (Some(id), true) = (send, p.open) {
            if limit_at.is_none() {
                let now = Instant::now();
                *shared.start.lock().map_err(|e| e.to_string())? = Some(now);
                limit_at = Some(now + (deadline - now).saturating_sub(Duration::from_secs(10)));
            }
            let mut wrote = false;
            while sent < n && limit_at.is_none_or(|l| Instant::now() < l) {
                let Some(mut ch) = p.rtc.channel(id) else {
                    break;
                };
                template[..8].copy_from_slice(&sent.to_be_bytes());
                if !ch.write(true, &template).map_err(|e| e.to_string())? {
                    break;
                }
                sent += 1;
                wrote = true;
            }
            if wrote {
                // Send what was written, then read again.
                timeout = p.input(Input::Timeout(Instant::now()))?;
                p.flush();
                continue;
            }
            if limit_at.is_some_and(|l| Instant::now() >= l) {
                shared.done.store(true, Ordering::Relaxed);
                return Ok(());
            }
        }
        p.flush();
        // Wait for a datagram no longer than str0m's next timeout (to the
        // nanosecond: a socket read timeout would round up to a tick).
        let wait = timeout
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(10));
        if !wait.is_zero() {
            let _ = p2p_benches::mmsg::wait_readable(fd, wait);
        }
    }
}

/// A datagram in flight between two in-memory `Rtc`s.
struct Flying {
    source: std::net::SocketAddr,
    destination: std::net::SocketAddr,
    contents: Vec<u8>,
}

/// Polls `rtc` until `Timeout`: its transmits go to `out`, its events to
/// `on_event`.
fn pump(
    rtc: &mut Rtc,
    out: &mut Vec<Flying>,
    mut on_event: impl FnMut(Event) -> Result<(), String>,
) -> Result<Instant, String> {
    loop {
        match rtc.poll_output().map_err(|e| e.to_string())? {
            Output::Timeout(t) => return Ok(t),
            Output::Transmit(t) => out.push(Flying {
                source: t.source,
                destination: t.destination,
                contents: t.contents.to_vec(),
            }),
            Output::Event(e) => on_event(e)?,
        }
    }
}

/// Hands `queue` to `rtc` at `now`, one datagram at a time, each followed
/// by a poll to `Timeout` (str0m's DTLS takes a bounded number of records
/// between polls): what comes out goes to `out`, events to `on_event`.
fn feed(
    rtc: &mut Rtc,
    now: Instant,
    queue: &mut Vec<Flying>,
    out: &mut Vec<Flying>,
    mut on_event: impl FnMut(Event) -> Result<(), String>,
) -> Result<(), String> {
    for f in queue.drain(..) {
        let contents = f
            .contents
            .as_slice()
            .try_into()
            .map_err(|e: str0m::error::NetError| e.to_string())?;
        rtc.handle_input(Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: f.source,
                destination: f.destination,
                contents,
            },
        ))
        .map_err(|e| e.to_string())?;
        pump(rtc, out, &mut on_event)?;
    }
    Ok(())
}

/// Two `Rtc`s connected in memory (no sockets; fake addresses), the
/// offerer's channel open on both: returns them with the channel.
fn connected_in_memory(
    now: Instant,
    buffered: Option<usize>,
) -> Result<(Rtc, Rtc, ChannelId), String> {
    let fake = (([10, 0, 0, 1], 1000).into(), ([10, 0, 0, 2], 2000).into());
    let (mut l, mut r, cid) = negotiated(now, buffered, fake)?;
    let (mut to_r, mut to_l) = (Vec::new(), Vec::new());
    let (mut open_l, mut open_r) = (false, false);
    let mut t = now;
    for _ in 0..10_000 {
        l.handle_input(Input::Timeout(t))
            .map_err(|e| e.to_string())?;
        r.handle_input(Input::Timeout(t))
            .map_err(|e| e.to_string())?;
        let tl = pump(&mut l, &mut to_r, |e| {
            open_l |= matches!(e, Event::ChannelOpen(..));
            Ok(())
        })?;
        let tr = pump(&mut r, &mut to_l, |e| {
            open_r |= matches!(e, Event::ChannelOpen(..));
            Ok(())
        })?;
        if open_l && open_r {
            return Ok((l, r, cid));
        }
        if to_r.is_empty() && to_l.is_empty() {
            t = tl.min(tr).max(t);
        } else {
            t += Duration::from_micros(100);
        }
        feed(&mut r, t, &mut to_r, &mut to_l, |e| {
            open_r |= matches!(e, Event::ChannelOpen(..));
            Ok(())
        })?;
        feed(&mut l, t, &mut to_l, &mut to_r, |e| {
            open_l |= matches!(e, Event::ChannelOpen(..));
            Ok(())
        })?;
    }
    Err("the in-memory pair did not open its channel".into())
}

/// str0m without sockets: both `Rtc`s in one thread, each transmit handed
/// straight to the other (real time). What str0m's own work allows, with
/// no system call and no wait: the figure its loopback run is compared
/// with.
pub(crate) fn run_in_memory(job: Job) -> Result<Outcome, String> {
    str0m::crypto::from_feature_flags().install_process_default();
    let (mut l, mut r, cid) = connected_in_memory(Instant::now(), Some(BEST_BUFFERED))?;
    let n = job.messages();
    let mut counter = Counter::default();
    let mut template = message(0);
    let (mut to_r, mut to_l) = (Vec::new(), Vec::new());
    let start = Instant::now();
    let limit = start + job.limit;
    let mut sent = 0u64;
    while counter.next < n && counter.bad == 0 && Instant::now() < limit {
        let now = Instant::now();
        while sent < n {
            let Some(mut ch) = l.channel(cid) else {
                return Err("channel gone".into());
            };
            template[..8].copy_from_slice(&sent.to_be_bytes());
            if !ch.write(true, &template).map_err(|e| e.to_string())? {
                break;
            }
            sent += 1;
        }
        l.handle_input(Input::Timeout(now))
            .map_err(|e| e.to_string())?;
        pump(&mut l, &mut to_r, |_| Ok(()))?;
        r.handle_input(Input::Timeout(now))
            .map_err(|e| e.to_string())?;
        let mut take = |e| {
            if let Event::ChannelData(d) = e {
                counter.take(&d.data);
            }
            Ok(())
        };
        pump(&mut r, &mut to_l, &mut take)?;
        feed(&mut r, now, &mut to_r, &mut to_l, &mut take)?;
        feed(&mut l, now, &mut to_l, &mut to_r, |_| Ok(()))?;
    }
    if counter.bad > 0 {
        return Err(format!("{} messages out of order or damaged", counter.bad));
    }
    Ok(Outcome {
        bytes: counter.next * crate::MESSAGE as u64,
        elapsed: start.elapsed(),
        complete: counter.next == n,
    })
}

/// Heap per idle connection end: `pairs` pairs connected in memory with
/// their channel open, nothing else (str0m has no driver: sockets, threads
/// and queues are the user's).
pub(crate) fn memory(pairs: usize) -> Result<(f64, f64), String> {
    str0m::crypto::from_feature_flags().install_process_default();
    // One pair first: one-time tables and the crypto provider.
    let warm = connected_in_memory(Instant::now(), None)?;
    let (h0, r0) = (crate::live(), crate::rss());
    let mut held = Vec::new();
    for _ in 0..pairs {
        held.push(connected_in_memory(Instant::now(), None)?);
    }
    let (h1, r1) = (crate::live(), crate::rss());
    drop(held);
    drop(warm);
    let ends = (2 * pairs) as f64;
    Ok(((h1 - h0) as f64 / ends, (r1 - r0) as f64 / ends))
}
