//! Signaling load on loopback: `p2p serve`'s signaling port (the HTTP front
//! and `p2p-signaling`'s WebSocket server, as the daemon runs them) with
//! `CLIENTS` WebSocket clients in rooms of two exchanging offer, answer and
//! candidates for `SECS` seconds, plus `IDLE` connections that only hold a
//! room. Prints the connections held and the messages relayed per second.
//!
//! `cargo bench -p p2p-server --bench signaling` (environment: `CLIENTS`,
//! default 200; `IDLE`, default 1000; `SECS`, default 5; `WINDOW`, messages
//! in flight per client, default 8). Results go in docs/performance.md.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2p_server::{Config, Server};
use p2p_signaling::{ClientMsg, ServerMsg, SignalingTransport, WsTransport};
use tokio::sync::oneshot;
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(20);

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A session description of a realistic size (a data-channel offer is ~600 bytes).
fn sdp() -> String {
    let mut s = String::from(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n",
    );
    s.push_str("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n");
    s.push_str(
        "a=ice-ufrag:sXmE\r\na=ice-pwd:kG9sLr2VpQ7mWx4ZtA1nB8cD\r\na=ice-options:trickle\r\n",
    );
    s.push_str("a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B\r\n");
    s.push_str("a=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n");
    s
}

/// The `k`-th message of a session to `to`: an offer or answer every 10th,
/// candidates in between.
fn message(to: &str, k: u64, offerer: bool, sdp: &str) -> ClientMsg {
    if k % 10 == 0 {
        let sdp = sdp.to_owned();
        let to = to.to_owned();
        return if offerer {
            ClientMsg::Offer { to, sdp, id: None }
        } else {
            ClientMsg::Answer { to, sdp, id: None }
        };
    }
    let text = format!(
        r#"{{"type":"candidate","to":"{to}","candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 {} typ srflx raddr 192.168.1.20 rport 45664 generation 0 ufrag sXmE network-cost 999","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"sXmE"}}"#,
        40000 + k % 20000
    );
    ClientMsg::from_json(&text).unwrap_or(ClientMsg::Ping { id: None })
}

async fn connect(url: &str) -> (WsTransport, String) {
    let mut t = timeout(STEP, WsTransport::connect(url))
        .await
        .expect("connect in time")
        .expect("connect");
    match timeout(STEP, t.recv()).await {
        Ok(Ok(Some(ServerMsg::Welcome { peer_id, .. }))) => (t, peer_id),
        other => panic!("expected welcome, got {other:?}"),
    }
}

async fn join(t: &mut WsTransport, room: &str) -> Vec<String> {
    let msg = ClientMsg::from_json(&format!(r#"{{"type":"join","room":"{room}"}}"#))
        .expect("join message");
    t.send(msg).await.expect("send join");
    loop {
        match timeout(STEP, t.recv()).await {
            Ok(Ok(Some(ServerMsg::Joined { peers, .. }))) => {
                return peers.into_iter().map(|p| p.id).collect()
            }
            Ok(Ok(Some(ServerMsg::PeerJoined { .. }))) => continue,
            other => panic!("expected joined, got {other:?}"),
        }
    }
}

/// One client of a pair: keeps `window` messages in flight to its peer,
/// answering each relayed message with the next one, until `deadline`.
/// Returns the connection if it was still open at the end (kept open
/// until every client has stopped, so that a peer answering a message
/// that arrived just before the deadline still finds it there).
async fn chatter(
    mut t: WsTransport,
    peer: String,
    offerer: bool,
    window: u64,
    deadline: tokio::time::Instant,
    relayed: Arc<AtomicU64>,
) -> Option<WsTransport> {
    let sdp = sdp();
    let mut k = 0;
    for _ in 0..window {
        if t.send(message(&peer, k, offerer, &sdp)).await.is_err() {
            return None;
        }
        k += 1;
    }
    loop {
        let msg = match tokio::time::timeout_at(deadline, t.recv()).await {
            Err(_) => break,
            Ok(Ok(Some(msg))) => msg,
            Ok(_) => return None,
        };
        match msg {
            ServerMsg::Offer { .. } | ServerMsg::Answer { .. } | ServerMsg::Candidate { .. } => {
                relayed.fetch_add(1, Relaxed);
                if t.send(message(&peer, k, offerer, &sdp)).await.is_err() {
                    return None;
                }
                k += 1;
            }
            ServerMsg::Error { code, message, .. } => {
                panic!("server error {code:?}: {message}");
            }
            _ => {}
        }
    }
    Some(t)
}

/// Whether `t` still answers a ping (skipping relayed messages in flight).
async fn alive(t: &mut WsTransport) -> bool {
    if t.send(ClientMsg::Ping { id: Some(1) }).await.is_err() {
        return false;
    }
    loop {
        match timeout(STEP, t.recv()).await {
            Ok(Ok(Some(ServerMsg::Pong { .. }))) => return true,
            Ok(Ok(Some(_))) => continue,
            _ => return false,
        }
    }
}

fn main() {
    let clients = env("CLIENTS", 200).max(2) / 2 * 2;
    let idle = env("IDLE", 1000);
    let secs = env("SECS", 5).max(1);
    let window = env("WINDOW", 8).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let config = Config::from_toml_str(&format!(
            "[stun]\nlisten = [\"127.0.0.1:0\"]\ntcp = false\nworkers = 1\n\
             [signaling]\nlisten = \"127.0.0.1:0\"\nmax_room_size = 2\n\
             max_connections = {n}\nmax_connections_per_ip = {n}\nreserved_percent = 0\n\
             rate_per_second = 1000000\nburst = 1000000\n",
            n = clients + idle + 16
        ))
        .expect("config");
        let server = Server::bind(&config).await.expect("bind");
        let addr = server.local_addrs().signaling.expect("signaling");
        let url = format!("ws://{addr}/ws");
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));

        // Idle connections, each alone in a room.
        let t0 = Instant::now();
        let mut held = Vec::new();
        let ids: Vec<u64> = (0..idle).collect();
        for chunk in ids.chunks(100) {
            let batch: Vec<_> = chunk
                .iter()
                .map(|&i| {
                    let url = url.clone();
                    tokio::spawn(async move {
                        let (mut t, _) = connect(&url).await;
                        join(&mut t, &format!("idle-{i}")).await;
                        t
                    })
                })
                .collect();
            for h in batch {
                held.push(h.await.expect("idle client"));
            }
        }
        let idle_setup = t0.elapsed();

        // Active pairs.
        let t0 = Instant::now();
        let mut pairs = Vec::new();
        for p in 0..clients / 2 {
            let room = format!("pair-{p}");
            let (mut a, a_id) = connect(&url).await;
            let (mut b, b_id) = connect(&url).await;
            join(&mut a, &room).await;
            let peers = join(&mut b, &room).await;
            assert_eq!(peers, std::slice::from_ref(&a_id));
            pairs.push((a, a_id, b, b_id));
        }
        let pair_setup = t0.elapsed();

        let relayed = Arc::new(AtomicU64::new(0));
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for (a, a_id, b, b_id) in pairs {
            tasks.push(tokio::spawn(chatter(
                b,
                a_id,
                true,
                window,
                deadline,
                relayed.clone(),
            )));
            tasks.push(tokio::spawn(chatter(
                a,
                b_id,
                false,
                window,
                deadline,
                relayed.clone(),
            )));
        }
        let mut active_open = 0;
        let mut stopped = Vec::new();
        for t in tasks {
            if let Some(t) = t.await.expect("client task") {
                active_open += 1;
                stopped.push(t);
            }
        }
        let elapsed = start.elapsed();
        let n = relayed.load(Relaxed);

        let mut idle_open = 0;
        for t in held.iter_mut() {
            if alive(t).await {
                idle_open += 1;
            }
        }

        println!("signaling load on loopback ({} s of traffic)", elapsed.as_secs_f64());
        println!(
            "  connections held: {} of {} ({} active in {} rooms of two, {} idle); setup {:.2} s idle, {:.2} s pairs",
            active_open + idle_open,
            clients + idle,
            active_open,
            clients / 2,
            idle_open,
            idle_setup.as_secs_f64(),
            pair_setup.as_secs_f64()
        );
        println!(
            "  relayed: {n} messages (offer/answer 1 in 10, candidates otherwise), {:.0} messages/s, window {window} per client",
            n as f64 / elapsed.as_secs_f64()
        );
        drop((held, stopped));
        let _ = stop.send(());
        let _ = timeout(STEP, running).await;
        assert_eq!(active_open, clients, "an active client lost its connection");
        assert_eq!(idle_open, idle, "an idle client lost its connection");
    });
}
