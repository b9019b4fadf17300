//! `turn_load`: the TURN load generator of `cargo xtask bench turn`.
//!
//! It talks to any TURN server (ours or coturn) over UDP with a long-term
//! user (MD5 key, no PASSWORD-ALGORITHM, which both servers accept), and
//! prints `key=value` lines on stdout for xtask to read. It is not a TURN
//! client library (that is `p2p_turn::TurnClient`): it builds the few
//! requests it needs with `p2p-stun` so that its own cost per packet is at
//! most one system call and no allocation.
//!
//! Modes:
//!
//! - `relay`: `--clients` clients each Allocate, CreatePermission and
//!   ChannelBind (channel 0x4000) to a UDP peer socket the generator runs
//!   itself, then send ChannelData with `--payload` bytes for `--secs`
//!   seconds after a `--warmup`. With `--mode flood`, one thread sends round
//!   robin as fast as it can and the peer counts what arrives (client to
//!   peer only). With `--mode echo`, the peer sends every datagram back (the
//!   server wraps it in ChannelData to the client), each client keeps
//!   `--window` datagrams in flight and counts what comes back. Only
//!   datagrams of the right size that carry the marker byte and arrive inside
//!   the measurement window are counted. The generator must cost little per
//!   datagram, or it, not the server, is what gets measured (on loopback a
//!   sender pays for the delivery of what it sends). With `--io gso` (the
//!   default on Linux when the kernel has UDP GSO) the flood sends
//!   `--burst` datagrams per client at a time (round robin over the
//!   clients) as one GSO train, each echo client sends back as many as one
//!   read brought as one train, and the peer reads batches with `recvmmsg`
//!   and echoes each run of datagrams to one relayed address as one train;
//!   the server's sockets still get separate, ordinary datagrams (the
//!   kernel cuts the trains on delivery). `--io batch` does the same with
//!   `sendmmsg` (one datagram per message), `--io single` with one system
//!   call per datagram.
//! - `allocs`: create `--count` allocations as fast as possible, each from
//!   its own client address (`--client-base` + 1 + i in 127.0.0.0/8, so no
//!   5-tuple repeats), with at most `--concurrency` sockets open at once; a
//!   socket is closed once its allocation exists (UDP: the allocation stays
//!   on the server until its lifetime ends). Prints the time it took.
//!
//! ```text
//! turn_load relay --server 127.0.0.1:3478 --user alice:secret --payload 100 --secs 5 --mode flood
//! turn_load allocs --server 127.0.0.1:3478 --user alice:secret --count 10000
//! ```

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use p2p_benches::mmsg;
use p2p_stun::attr::{
    ChannelNumber, ErrorCode, Lifetime, Nonce, PasswordAlgorithm, Realm, RequestedTransport,
    Username, XorPeerAddress, XorRelayedAddress, PROTO_UDP,
};
use p2p_stun::{
    ChannelData, EncodeError, Key, Message, MessageBuilder, MessageClass, MessageType, Method,
    TransactionId,
};

/// The channel every client binds (one allocation, one channel each).
const CHANNEL: u16 = 0x4000;
/// First payload byte of every datagram sent, checked on arrival.
const MARK: u8 = 0xA5;
/// Largest datagram read.
const BUF: usize = 2048;

const USAGE: &str = "\
usage:
  turn_load relay  --server ADDR --user NAME:PASS [--clients N] [--payload BYTES]
                   [--secs S] [--warmup S] [--mode flood|echo] [--window N]
                   [--io gso|batch|single] [--burst N]
  turn_load allocs --server ADDR --user NAME:PASS [--count N] [--concurrency N]
                   [--client-base IPV4]";

#[derive(Debug, Clone)]
struct Opts {
    server: SocketAddr,
    user: String,
    password: String,
    clients: usize,
    payload: usize,
    secs: f64,
    warmup: f64,
    echo: bool,
    window: usize,
    count: usize,
    concurrency: usize,
    client_base: Ipv4Addr,
    /// How datagrams are sent and received (`--io`).
    io: Io,
    /// Datagrams per client per flood call (`--burst`).
    burst: usize,
}

/// How the generator moves datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Io {
    /// UDP GSO trains out, `recvmmsg` in.
    Gso,
    /// `sendmmsg` out, `recvmmsg` in.
    Batch,
    /// One system call per datagram.
    Single,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        server: SocketAddr::from(([127, 0, 0, 1], 3478)),
        user: "alice".into(),
        password: "secret".into(),
        clients: 8,
        payload: 100,
        secs: 5.0,
        warmup: 0.5,
        echo: false,
        window: 32,
        count: 10_000,
        concurrency: 256,
        client_base: Ipv4Addr::new(127, 2, 0, 0),
        io: if cfg!(target_os = "linux") {
            Io::Gso
        } else {
            Io::Single
        },
        burst: 8,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let bad = |what: &str| format!("{flag}: not {what}");
        match flag.as_str() {
            "--server" => o.server = value()?.parse().map_err(|_| bad("an address"))?,
            "--user" => {
                let v = value()?;
                let (u, p) = v.split_once(':').ok_or_else(|| bad("NAME:PASS"))?;
                o.user = u.into();
                o.password = p.into();
            }
            "--clients" => o.clients = value()?.parse().map_err(|_| bad("a count"))?,
            "--payload" => o.payload = value()?.parse().map_err(|_| bad("a size"))?,
            "--secs" => o.secs = value()?.parse().map_err(|_| bad("seconds"))?,
            "--warmup" => o.warmup = value()?.parse().map_err(|_| bad("seconds"))?,
            "--mode" => {
                o.echo = match value()?.as_str() {
                    "flood" => false,
                    "echo" => true,
                    _ => return Err(bad("flood or echo")),
                }
            }
            "--window" => o.window = value()?.parse().map_err(|_| bad("a count"))?,
            "--count" => o.count = value()?.parse().map_err(|_| bad("a count"))?,
            "--concurrency" => o.concurrency = value()?.parse().map_err(|_| bad("a count"))?,
            "--client-base" => o.client_base = value()?.parse().map_err(|_| bad("an IPv4"))?,
            "--io" => {
                o.io = match value()?.as_str() {
                    "gso" => Io::Gso,
                    "batch" => Io::Batch,
                    "single" => Io::Single,
                    _ => return Err(bad("gso, batch or single")),
                }
            }
            "--burst" => o.burst = value()?.parse().map_err(|_| bad("a count"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let sane = (1..=1024).contains(&o.clients)
        && (1..=1400).contains(&o.payload)
        && o.secs > 0.0
        && o.secs <= 600.0
        && (0.0..=60.0).contains(&o.warmup)
        && (1..=4096).contains(&o.window)
        && (1..=60_000).contains(&o.count)
        && (1..=4096).contains(&o.concurrency)
        && (1..=mmsg::BATCH).contains(&o.burst);
    if !sane {
        return Err(
            "out of range: clients 1-1024, payload 1-1400, secs 0-600, warmup 0-60, \
                    window 1-4096, count 1-60000, concurrency 1-4096, burst 1-64"
                .into(),
        );
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("relay") => parse(&args[1..]).and_then(|o| relay(&o)),
        Some("allocs") => parse(&args[1..]).and_then(|o| allocs(&o)),
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("turn_load: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------- requests

/// The long-term credentials learnt from a 401: realm, nonce, key.
#[derive(Clone)]
struct Auth {
    realm: String,
    nonce: String,
    key: Key,
}

type Attrs<'f> = &'f dyn Fn(&mut MessageBuilder<&mut Vec<u8>>) -> Result<(), EncodeError>;

/// A request of `method` with `attrs`, signed when `auth` is known.
fn build(
    o: &Opts,
    method: Method,
    tid: TransactionId,
    auth: Option<&Auth>,
    attrs: Attrs<'_>,
) -> Result<Vec<u8>, String> {
    let mut req = Vec::with_capacity(256);
    let enc = |e: EncodeError| format!("encode: {e}");
    let mut b = MessageBuilder::new(
        &mut req,
        MessageType::new(method, MessageClass::Request),
        tid,
    )
    .map_err(enc)?;
    attrs(&mut b).map_err(enc)?;
    if let Some(a) = auth {
        let text = |e| format!("credentials: {e}");
        b.add(&Username::new(&o.user).map_err(text)?).map_err(enc)?;
        b.add(&Realm::new(&a.realm).map_err(text)?).map_err(enc)?;
        b.add(&Nonce::new(&a.nonce).map_err(text)?).map_err(enc)?;
        b.add_message_integrity(&a.key).map_err(enc)?;
    }
    b.finish();
    Ok(req)
}

/// What a response says.
enum Reply {
    Success(Option<SocketAddr>),
    /// 401 or 438: the realm and nonce to retry with.
    Challenge(u16, String, String),
    Failed(String),
}

fn read_reply(bytes: &[u8], tid: TransactionId) -> Option<Reply> {
    let msg = Message::decode(bytes).ok()?;
    if msg.transaction_id() != tid {
        return None;
    }
    Some(match msg.typ().class {
        MessageClass::Success => Reply::Success(
            msg.get::<XorRelayedAddress>()
                .ok()
                .flatten()
                .map(|XorRelayedAddress(a)| a),
        ),
        MessageClass::Error => {
            let code = msg.get::<ErrorCode>().ok().flatten().map(|e| e.code());
            let realm = msg.get::<Realm>().ok().flatten();
            let nonce = msg.get::<Nonce>().ok().flatten();
            match (code, realm, nonce) {
                (Some(c @ (401 | 438)), Some(r), Some(n)) => {
                    Reply::Challenge(c, r.as_str().to_owned(), n.as_str().to_owned())
                }
                (c, _, _) => Reply::Failed(format!("{:?} error {c:?}", msg.typ().method)),
            }
        }
        _ => return None,
    })
}

/// Next step after a challenge: new credentials, or an error when the
/// same credentials were just refused.
fn on_challenge(
    o: &Opts,
    auth: &mut Option<Auth>,
    code: u16,
    realm: String,
    nonce: String,
) -> Result<(), String> {
    if code == 401 && auth.as_ref().is_some_and(|a| a.realm == realm) {
        return Err("401 with credentials: wrong user or password".into());
    }
    let key = match auth {
        Some(a) if a.realm == realm => a.key.clone(),
        _ => Key::long_term(&o.user, &realm, &o.password, PasswordAlgorithm::Md5)
            .map_err(|e| format!("key: {e}"))?,
    };
    *auth = Some(Auth { realm, nonce, key });
    Ok(())
}

fn tid() -> TransactionId {
    TransactionId::new(rand::random())
}

/// One request on a blocking socket (read timeout set), retransmitted
/// (same bytes) up to 5 times, through the 401/438 dance.
fn request(
    sock: &UdpSocket,
    o: &Opts,
    auth: &mut Option<Auth>,
    method: Method,
    attrs: Attrs<'_>,
) -> Result<Option<SocketAddr>, String> {
    let mut buf = [0u8; BUF];
    for _round in 0..4 {
        let t = tid();
        let req = build(o, method, t, auth.as_ref(), attrs)?;
        let mut reply = None;
        'tries: for _ in 0..5 {
            sock.send(&req).map_err(|e| format!("send: {e}"))?;
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        if let Some(r) = read_reply(&buf[..n], t) {
                            reply = Some(r);
                            break 'tries;
                        }
                    }
                    Err(e) if timed_out(&e) => break,
                    Err(e) => return Err(format!("recv: {e}")),
                }
            }
        }
        match reply {
            None => return Err(format!("{method:?}: no response from {}", o.server)),
            Some(Reply::Success(a)) => return Ok(a),
            Some(Reply::Failed(e)) => return Err(e),
            Some(Reply::Challenge(c, r, n)) => on_challenge(o, auth, c, r, n)?,
        }
    }
    Err(format!("{method:?}: too many challenges"))
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn add_udp(b: &mut MessageBuilder<&mut Vec<u8>>) -> Result<(), EncodeError> {
    b.add(&RequestedTransport(PROTO_UDP))?;
    Ok(())
}

// ---------------------------------------------------------------- relay mode

/// A client with an allocation and channel [`CHANNEL`] bound to the peer.
struct Client {
    sock: UdpSocket,
    auth: Option<Auth>,
}

fn setup_client(o: &Opts, peer: SocketAddr) -> Result<Client, String> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    sock.connect(o.server)
        .map_err(|e| format!("connect: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| format!("timeout: {e}"))?;
    let mut auth = None;
    let relayed = request(&sock, o, &mut auth, Method::ALLOCATE, &add_udp)?;
    if relayed.is_none() {
        return Err("Allocate success without XOR-RELAYED-ADDRESS".into());
    }
    request(&sock, o, &mut auth, Method::CREATE_PERMISSION, &|b| {
        b.add(&XorPeerAddress(peer))?;
        Ok(())
    })?;
    request(&sock, o, &mut auth, Method::CHANNEL_BIND, &|b| {
        b.add(&ChannelNumber(CHANNEL))?;
        b.add(&XorPeerAddress(peer))?;
        Ok(())
    })?;
    Ok(Client { sock, auth })
}

/// Delete the allocation (Refresh, LIFETIME 0); best effort.
fn delete(o: &Opts, c: &mut Client) {
    let _ = c.sock.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = request(&c.sock, o, &mut c.auth, Method::REFRESH, &|b| {
        b.add(&Lifetime(0))?;
        Ok(())
    });
}

fn big_buffers(sock: &UdpSocket) {
    let s = socket2::SockRef::from(sock);
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
}

/// The measurement window, shared by every thread.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    to: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.from && t < self.to
    }
}

fn relay(o: &Opts) -> Result<(), String> {
    let peer = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("peer bind: {e}"))?;
    big_buffers(&peer);
    let peer_addr = peer.local_addr().map_err(|e| e.to_string())?;
    let mut clients = Vec::with_capacity(o.clients);
    for i in 0..o.clients {
        clients.push(setup_client(o, peer_addr).map_err(|e| format!("client {i}: {e}"))?);
    }
    for c in &clients {
        big_buffers(&c.sock);
    }
    let payload = vec![MARK; o.payload];
    let mut packet = Vec::with_capacity(o.payload + 8);
    ChannelData::new(CHANNEL, &payload)
        .map_err(|e| format!("ChannelData: {e}"))?
        .encode(&mut packet, false)
        .map_err(|e| format!("ChannelData: {e}"))?;

    let start = Instant::now() + Duration::from_millis(100);
    let w = Window {
        from: start + Duration::from_secs_f64(o.warmup),
        to: start + Duration::from_secs_f64(o.warmup + o.secs),
    };
    let stop = Arc::new(AtomicBool::new(false));

    // The peer: counts what arrives (and echoes it back in echo mode).
    let peer_thread = {
        let stop = stop.clone();
        let io = usable(o.io, &peer);
        let (payload_len, echo) = (o.payload, o.echo);
        thread::spawn(move || peer_loop(&peer, payload_len, echo, io, w, &stop))
    };

    let (sent, returned, returned_all) = if o.echo {
        let mut threads = Vec::new();
        for c in &clients {
            let sock = c.sock.try_clone().map_err(|e| format!("clone: {e}"))?;
            let io = usable(o.io, &sock);
            let (packet, window, payload_len) = (packet.clone(), o.window, o.payload);
            threads.push(thread::spawn(move || {
                echo_client(&sock, &packet, payload_len, window, io, start, w)
            }));
        }
        let (mut sent, mut back, mut all) = (0u64, 0u64, 0u64);
        for t in threads {
            let (s, b, a) = t.join().map_err(|_| "client thread panicked")?;
            sent += s;
            back += b;
            all += a;
        }
        (sent, Some(back), all)
    } else {
        let socks: Vec<&UdpSocket> = clients.iter().map(|c| &c.sock).collect();
        let io = usable(o.io, socks[0]);
        let burst = if io == Io::Single { 1 } else { o.burst };
        (flood(&socks, &packet, io, burst, start, w), None, 0)
    };
    // Let the last datagrams drain, then stop the peer.
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let peer_count = peer_thread.join().map_err(|_| "peer thread panicked")?;
    let to_peer = peer_count.counted;
    for c in &mut clients {
        delete(o, c);
    }

    let secs = o.secs;
    // Relayed packets: client → peer, plus peer → client in echo mode.
    let relayed = to_peer + returned.unwrap_or(0);
    let pps = relayed as f64 / secs;
    let mbps = (relayed as f64) * (o.payload as f64) * 8.0 / secs / 1e6;
    println!("mode={}", if o.echo { "echo" } else { "flood" });
    println!("clients={}", o.clients);
    println!("payload={}", o.payload);
    println!("secs={secs}");
    println!("sent={sent}");
    println!("to_peer={to_peer}");
    println!("peer_echoed={}", peer_count.echoed);
    if let Some(r) = returned {
        println!("to_client={r}");
    }
    println!("relayed={relayed}");
    // Over the whole run (setup, warm-up and drain included), for the
    // server's CPU time per packet.
    println!("relayed_all={}", peer_count.all + returned_all);
    println!("pps={pps:.0}");
    println!("mbps={mbps:.1}");
    Ok(())
}

/// What the peer saw: datagrams of the payload size carrying [`MARK`]
/// inside the window, all of them over the whole run, and how many it
/// echoed.
struct PeerCount {
    counted: u64,
    all: u64,
    echoed: u64,
}

/// `io`, or batches when the kernel has no UDP GSO.
fn usable(io: Io, sock: &UdpSocket) -> Io {
    match io {
        Io::Gso if !mmsg::gso_available(sock.as_raw_fd()) => Io::Batch,
        other => other,
    }
}

/// Receive on the peer socket until `stop`, counting (and echoing in echo
/// mode).
fn peer_loop(
    peer: &UdpSocket,
    payload: usize,
    echo: bool,
    mut io: Io,
    w: Window,
    stop: &AtomicBool,
) -> PeerCount {
    let _ = peer.set_read_timeout(Some(Duration::from_millis(20)));
    let fd = peer.as_raw_fd();
    let mut bufs = vec![[0u8; BUF]; mmsg::BATCH];
    let mut lens = [0usize; mmsg::BATCH];
    let mut froms = [SocketAddr::from(([0, 0, 0, 0], 0)); mmsg::BATCH];
    let mut c = PeerCount {
        counted: 0,
        all: 0,
        echoed: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        let got = if io == Io::Single {
            peer.recv_from(&mut bufs[0]).map(|(n, from)| {
                lens[0] = n;
                froms[0] = from;
                1
            })
        } else {
            mmsg::recv(fd, &mut bufs, &mut lens, Some(&mut froms))
        };
        let n = match got {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                io = Io::Single;
                continue;
            }
            Err(e) if timed_out(&e) => continue,
            Err(_) => {
                thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        let now = Instant::now();
        for i in 0..n {
            if lens[i] == payload && bufs[i][0] == MARK {
                c.all += 1;
                if w.contains(now) {
                    c.counted += 1;
                }
            }
        }
        if echo {
            let msgs: [&[u8]; mmsg::BATCH] =
                std::array::from_fn(|i| if i < n { &bufs[i][..lens[i]] } else { &[][..] });
            c.echoed += send_all(peer, &mut io, &msgs[..n], Some(&froms[..n]));
        }
    }
    c
}

/// Send `msgs[i]` (to `dests[i]`, or on the connected socket): runs to one
/// destination as GSO trains, or in `sendmmsg` batches, or one by one.
/// Returns how many went. A failed train makes `io` fall back to batches.
fn send_all(sock: &UdpSocket, io: &mut Io, msgs: &[&[u8]], dests: Option<&[SocketAddr]>) -> u64 {
    let n = msgs.len().min(dests.map_or(usize::MAX, <[_]>::len));
    let fd = sock.as_raw_fd();
    let mut sent = 0u64;
    let mut at = 0;
    while at < n {
        match *io {
            Io::Gso => {
                // The run from `at`: one destination, equal lengths (the
                // last may be shorter), within the train limits.
                let seg = msgs[at].len();
                let mut end = at + 1;
                while end < n
                    && end - at < mmsg::TRAIN_MAX_SEGS
                    && (end - at + 1) * seg <= mmsg::TRAIN_MAX_BYTES
                    && dests.is_none_or(|d| d[end] == d[at])
                    && msgs[end].len() <= seg
                    && msgs[end - 1].len() == seg
                {
                    end += 1;
                }
                match mmsg::send_train(fd, &msgs[at..end], dests.map(|d| d[at])) {
                    Ok(()) => {
                        sent += (end - at) as u64;
                        at = end;
                    }
                    Err(_) => *io = Io::Batch,
                }
            }
            Io::Batch => match mmsg::send(fd, &msgs[at..n], dests.map(|d| &d[at..n])) {
                Ok(k) => {
                    sent += k as u64;
                    at += k.max(1);
                }
                Err(e) if e.kind() == io::ErrorKind::Unsupported => *io = Io::Single,
                // The first one failed: skip it.
                Err(_) => at += 1,
            },
            Io::Single => {
                let r = match dests {
                    Some(d) => sock.send_to(msgs[at], d[at]),
                    None => sock.send(msgs[at]),
                };
                if r.is_ok() {
                    sent += 1;
                }
                at += 1;
            }
        }
    }
    sent
}

/// Send `packet` round robin on every socket, `burst` at a time per socket,
/// from `start` to the end of the window. Returns how many sends succeeded.
fn flood(
    socks: &[&UdpSocket],
    packet: &[u8],
    mut io: Io,
    burst: usize,
    start: Instant,
    w: Window,
) -> u64 {
    while Instant::now() < start {
        thread::sleep(Duration::from_millis(1));
    }
    let msgs: [&[u8]; mmsg::BATCH] = [packet; mmsg::BATCH];
    let burst = burst.clamp(1, mmsg::BATCH);
    let mut sent = 0u64;
    'send: loop {
        for _ in 0..16 {
            for s in socks {
                sent += send_all(s, &mut io, &msgs[..burst], None);
            }
        }
        if Instant::now() >= w.to {
            break 'send;
        }
    }
    sent
}

/// One echo client: `window` datagrams in flight, one more sent per one
/// that comes back (as many at once as one read brought); after 20 ms of
/// silence, assume the window lost and send it again. Returns (sent, came
/// back inside the window, came back at all).
fn echo_client(
    sock: &UdpSocket,
    packet: &[u8],
    payload: usize,
    window: usize,
    mut io: Io,
    start: Instant,
    w: Window,
) -> (u64, u64, u64) {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(20)));
    while Instant::now() < start {
        thread::sleep(Duration::from_millis(1));
    }
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; BUF]; mmsg::BATCH];
    let mut lens = [0usize; mmsg::BATCH];
    let out: [&[u8]; mmsg::BATCH] = [packet; mmsg::BATCH];
    let (mut sent, mut back, mut all) = (0u64, 0u64, 0u64);
    let burst = |sent: &mut u64, io: &mut Io| {
        let mut left = window;
        while left > 0 {
            let k = left.min(mmsg::BATCH);
            *sent += send_all(sock, io, &out[..k], None);
            left -= k;
        }
    };
    burst(&mut sent, &mut io);
    let ch = CHANNEL.to_be_bytes();
    let len = u16::try_from(payload).unwrap_or(u16::MAX).to_be_bytes();
    loop {
        let now = Instant::now();
        if now >= w.to {
            break;
        }
        let got = if io == Io::Single {
            sock.recv(&mut bufs[0]).map(|n| {
                lens[0] = n;
                1
            })
        } else {
            mmsg::recv(fd, &mut bufs, &mut lens, None)
        };
        match got {
            Ok(n) => {
                let now = Instant::now();
                for i in 0..n {
                    let b = &bufs[i];
                    let ours = lens[i] > 4
                        && lens[i] >= 4 + payload
                        && b[0..2] == ch
                        && b[2..4] == len
                        && b[4] == MARK;
                    if ours {
                        all += 1;
                        if w.contains(now) {
                            back += 1;
                        }
                    }
                }
                sent += send_all(sock, &mut io, &out[..n], None);
            }
            Err(e) if e.kind() == io::ErrorKind::Unsupported => io = Io::Single,
            Err(e) if timed_out(&e) => burst(&mut sent, &mut io),
            Err(_) => thread::sleep(Duration::from_millis(1)),
        }
    }
    (sent, back, all)
}

// ---------------------------------------------------------------- allocs mode

fn allocs(o: &Opts) -> Result<(), String> {
    let base = u32::from(o.client_base);
    if !o.client_base.is_loopback()
        || !Ipv4Addr::from(base.saturating_add(o.count as u32 + 1)).is_loopback()
    {
        return Err("--client-base + count must stay inside 127.0.0.0/8".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let o = Arc::new(o.clone());
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let started = Instant::now();
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..o.concurrency.min(o.count) {
            let (o, next, done, failed, first_error) = (
                o.clone(),
                next.clone(),
                done.clone(),
                failed.clone(),
                first_error.clone(),
            );
            set.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= o.count {
                        break;
                    }
                    let ip = Ipv4Addr::from(base + 1 + i as u32);
                    match allocate_async(&o, IpAddr::V4(ip)).await {
                        Ok(()) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut f) = first_error.lock() {
                                f.get_or_insert(format!("{ip}: {e}"));
                            }
                        }
                    }
                }
            });
        }
        while set.join_next().await.is_some() {}
    });
    let secs = started.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    println!("allocations={done}");
    println!("failed={}", failed.load(Ordering::Relaxed));
    println!("secs={secs:.3}");
    println!("per_sec={:.0}", done as f64 / secs);
    if let Ok(f) = first_error.lock() {
        if let Some(e) = f.as_ref() {
            println!("first_error={e}");
        }
    }
    Ok(())
}

/// One allocation from a fresh socket on `ip`: Allocate, 401, Allocate.
async fn allocate_async(o: &Opts, ip: IpAddr) -> Result<(), String> {
    let sock = tokio::net::UdpSocket::bind(SocketAddr::new(ip, 0))
        .await
        .map_err(|e| format!("bind: {e}"))?;
    sock.connect(o.server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut auth = None;
    let mut buf = [0u8; BUF];
    for _round in 0..4 {
        let t = tid();
        let req = build(o, Method::ALLOCATE, t, auth.as_ref(), &add_udp)?;
        let mut reply = None;
        'tries: for _ in 0..5 {
            sock.send(&req).await.map_err(|e| format!("send: {e}"))?;
            let until = tokio::time::Instant::now() + Duration::from_secs(1);
            loop {
                match tokio::time::timeout_at(until, sock.recv(&mut buf)).await {
                    Err(_) => break,
                    Ok(Err(e)) => return Err(format!("recv: {e}")),
                    Ok(Ok(n)) => {
                        if let Some(r) = read_reply(&buf[..n], t) {
                            reply = Some(r);
                            break 'tries;
                        }
                    }
                }
            }
        }
        match reply {
            None => return Err("Allocate: no response".into()),
            Some(Reply::Success(Some(_))) => return Ok(()),
            Some(Reply::Success(None)) => {
                return Err("Allocate success without XOR-RELAYED-ADDRESS".into())
            }
            Some(Reply::Failed(e)) => return Err(e),
            Some(Reply::Challenge(c, r, n)) => on_challenge(o, &mut auth, c, r, n)?,
        }
    }
    Err("Allocate: too many challenges".into())
}
