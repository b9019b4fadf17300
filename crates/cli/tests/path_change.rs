//! Relay first, upgrade later, through the real binary (issue 14): two
//! `p2p connect --json` on loopback meet through `p2p serve` (signaling
//! and TURN), but a signaling proxy of the test holds their host
//! candidates back for two seconds, as a slow signaling path would. The
//! connection is handed out on the relay (`ready` names it), moves to
//! host ↔ host when the host candidates come, and each peer reports the
//! move as `path_changed` with the same path fields as `ready`; lines
//! still cross afterwards.

mod common;

use std::time::Duration;

use common::{Daemon, JsonProc, BOUND};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// How long the proxy holds a host candidate.
const HOLD: Duration = Duration::from_secs(2);
/// The path fields `ready` and `path_changed` both carry.
const PATH_FIELDS: [&str; 5] = [
    "local_kind",
    "local_address",
    "remote_kind",
    "remote_address",
    "transport",
];

/// A `p2p connect --json` named `name` in `room`, killed when dropped.
fn start(url: &str, room: &str, name: &str) -> JsonProc {
    JsonProc::spawn(&[
        "connect",
        "--signaling",
        url,
        "--room",
        room,
        "--name",
        name,
        "--bind",
        "127.0.0.1",
        "--loopback",
        "--no-port-mapping",
        "--json",
    ])
}

/// Whether a signaling message (client to server) is a host candidate.
fn host_candidate(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| {
        v["type"] == "candidate"
            && v["candidate"]
                .as_str()
                .is_some_and(|c| c.contains(" typ host"))
    })
}

fn is_end_of_candidates(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v["type"] == "end-of-candidates")
}

/// A WebSocket proxy in front of the signaling server: what the server
/// says goes through as it is; what a client says too, except its host
/// candidates, held [`HOLD`] (and its end-of-candidates, which must not
/// overtake them). Returns the proxy's URL.
async fn proxy(upstream: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/ws", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(down) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let Ok((up, _)) = tokio_tungstenite::connect_async(upstream.as_str()).await else {
                    return;
                };
                let (mut down_tx, mut down_rx) = down.split();
                let (mut up_tx, mut up_rx) = up.split();
                let to_client = async move {
                    while let Some(Ok(m)) = up_rx.next().await {
                        if down_tx.send(m).await.is_err() {
                            break;
                        }
                    }
                };
                // Client to server: one writer, fed at each message's time.
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
                let writer = async move {
                    while let Some(m) = rx.recv().await {
                        if up_tx.send(m).await.is_err() {
                            break;
                        }
                    }
                };
                let reader = async move {
                    let mut held_until: Option<tokio::time::Instant> = None;
                    while let Some(Ok(m)) = down_rx.next().await {
                        let hold = match &m {
                            Message::Text(t) if host_candidate(t.as_str()) => {
                                let until = tokio::time::Instant::now() + HOLD;
                                held_until = Some(until);
                                Some(until)
                            }
                            // A little after the last held candidate: the
                            // timers of one instant may fire in any order.
                            Message::Text(t) if is_end_of_candidates(t.as_str()) => {
                                held_until.map(|u| u + Duration::from_millis(200))
                            }
                            _ => None,
                        };
                        let tx = tx.clone();
                        match hold {
                            Some(until) => {
                                tokio::spawn(async move {
                                    tokio::time::sleep_until(until).await;
                                    let _ = tx.send(m);
                                });
                            }
                            None => {
                                let _ = tx.send(m);
                            }
                        }
                    }
                };
                tokio::join!(to_client, writer, reader);
            });
        }
    });
    url
}

#[test]
fn a_connection_handed_out_on_the_relay_moves_to_host_and_says_path_changed() {
    let daemon = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--signaling",
        "127.0.0.1:0",
        "--realm",
        "upgrade.test",
        "--user",
        "alice:secret",
        "--signaling-turn-user",
        "alice",
        "--allow-peer",
        "127.0.0.0/8",
    ]);
    let upstream = daemon.ws_url();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = rt.block_on(proxy(upstream));

    let mut a = start(&url, "upgrade", "a");
    let mut b = start(&url, "upgrade", "b");
    let mut logs = [Vec::new(), Vec::new()];
    for (i, name, p) in [(0, "a", &a), (1, "b", &b)] {
        let seen = p.events_until("ready", BOUND, |v| v["event"] == "ready");
        logs[i].extend(seen.iter().cloned());
        let ready = seen.last().expect("ready");
        for f in PATH_FIELDS {
            assert!(ready[f].is_string(), "{name}: ready without {f}: {ready}");
        }
        assert!(
            ready["local_kind"] == "relay" || ready["remote_kind"] == "relay",
            "{name}: handed out on the relay: {ready}"
        );
        let t_ready = ready["t_ms"].as_u64().expect("t_ms");
        let seen = p.events_until("path_changed to host", BOUND, |v| {
            v["event"] == "path_changed" && v["local_kind"] == "host" && v["remote_kind"] == "host"
        });
        logs[i].extend(seen.iter().cloned());
        let moved = seen.last().expect("path_changed");
        for f in PATH_FIELDS {
            assert!(
                moved[f].is_string(),
                "{name}: path_changed without {f}: {moved}"
            );
        }
        assert_eq!(moved["transport"], "udp");
        assert!(moved["local_address"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")));
        // Not before the host candidates could have arrived.
        let t_moved = moved["t_ms"].as_u64().expect("t_ms");
        assert!(t_moved > t_ready, "{name}: {t_ready} ms, then {t_moved} ms");
    }
    // The connection carries lines after the move, both ways.
    a.say("after the move from a");
    b.say("after the move from b");
    for (i, p) in [(0, &a), (1, &b)] {
        logs[i].extend(p.events_until("a message", BOUND, |v| v["event"] == "message"));
        // Each change of path is said once (the events shown while
        // connecting are not shown again).
        let changes: Vec<&serde_json::Value> = logs[i]
            .iter()
            .filter(|v| v["event"] == "path_changed")
            .map(|v| &v["text"])
            .collect();
        for (j, c) in changes.iter().enumerate() {
            assert!(!changes[..j].contains(c), "said twice: {c}");
        }
    }
}
