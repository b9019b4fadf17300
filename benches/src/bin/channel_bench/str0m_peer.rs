//! str0m 0.25 at its best: sans-IO `Rtc`s, one per thread, each with a
//! loopback UDP socket of 4 MiB buffers, host candidates, offer/answer
//! exchanged in memory; the data channel is negotiated in the offer
//! (DCEP). The sender may buffer `BUFFERED` bytes (str0m's default is
//! 128 KiB, which caps throughput at 128 KiB per round trip). The loop
//! follows str0m's chat example (poll until `Timeout`, a datagram or the
//! timeout in) on a non-blocking socket: every pass takes every datagram
//! already queued, then time, then the sender's writes, and waits (ppoll)
//! only until str0m's next timeout. The first loop (a blocking read with
//! str0m's timeout as the read timeout; a pass that wrote skipped the
//! read) made about 2 MB/s, this one about 5: still latency-bound (about
//! 4,000 datagrams a second) and far from the 70 MB/s, so what
//! str0m wants from its driver is still not found and the figure is not
//! a valid one for str0m (docs/performance.md).

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::channel::ChannelId;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::{message, udp, Counter, Job, Outcome, BUFFERED};

struct Shared {
    done: AtomicBool,
    delivered: AtomicU64,
    start: Mutex<Option<Instant>>,
    end: Mutex<Option<Instant>>,
}

fn rtc(now: Instant) -> Rtc {
    Rtc::builder()
        .set_sctp_max_buffered_amount(BUFFERED)
        .build(now)
}

pub(crate) fn run(job: Job) -> Result<Outcome, String> {
    str0m::crypto::from_feature_flags().install_process_default();
    let now = Instant::now();
    let (sl, sr) = (udp::socket()?, udp::socket()?);
    let (al, ar) = (
        sl.local_addr().map_err(|e| e.to_string())?,
        sr.local_addr().map_err(|e| e.to_string())?,
    );
    let (mut l, mut r) = (rtc(now), rtc(now));
    l.add_local_candidate(Candidate::host(al, "udp").map_err(|e| e.to_string())?);
    r.add_local_candidate(Candidate::host(ar, "udp").map_err(|e| e.to_string())?);
    let mut change = l.sdp_api();
    let cid = change.add_channel("bench".into());
    let (offer, pending) = change.apply().ok_or("no offer")?;
    let answer = r.sdp_api().accept_offer(offer).map_err(|e| e.to_string())?;
    l.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| e.to_string())?;

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
}

impl Peer<'_> {
    /// Polls until `Timeout`: sends the transmits, takes the events.
    fn drain(&mut self) -> Result<Instant, String> {
        loop {
            match self.rtc.poll_output().map_err(|e| e.to_string())? {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => {
                    let _ = self.sock.send_to(&t.contents, t.destination);
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
    };
    let mut buf = vec![0u8; 2048];
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
        // Every datagram already there goes in, one `Receive` each (str0m
        // moves its clock to the datagram's time and drains after each).
        loop {
            match p.sock.recv_from(&mut buf) {
                Ok((len, source)) => {
                    let contents = buf
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
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
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
                continue;
            }
            if limit_at.is_some_and(|l| Instant::now() >= l) {
                shared.done.store(true, Ordering::Relaxed);
                return Ok(());
            }
        }
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
