//! Send a file to a peer over the connected path.
//!
//! ```text
//! cargo run -p p2p-connect --example file_send -- ws://127.0.0.1:8080/ws room send ./photo.jpg
//! cargo run -p p2p-connect --example file_send -- ws://127.0.0.1:8080/ws room recv ./copy.jpg
//! ```
//!
//! The path carries datagrams, which may be lost or reordered, so the
//! example puts a small go-back-N protocol on top: 1 KiB chunks numbered
//! from 0, a window of 64 chunks, the receiver acknowledging the next chunk
//! it expects, the sender resending the window when no acknowledgement
//! moved it for 200 ms. A real application would use QUIC or SCTP over
//! the datagrams instead.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use p2p_connect::{Connection, Peer, PeerConfig};

const CHUNK: usize = 1024;
const WINDOW: u32 = 64;
const RTO: Duration = Duration::from_millis(200);

/// Message kinds: the first byte.
const META: u8 = 0;
const DATA: u8 = 1;
const ACK: u8 = 2;
const DONE: u8 = 3;

fn msg(kind: u8, n: u32, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + body.len());
    v.push(kind);
    v.extend_from_slice(&n.to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn parse(d: &[u8]) -> Option<(u8, u32, &[u8])> {
    let (&kind, rest) = d.split_first()?;
    let (n, body) = rest.split_at_checked(4)?;
    Some((kind, u32::from_be_bytes(n.try_into().ok()?), body))
}

async fn send_file(conn: &mut Connection, data: &[u8]) -> Result<(), String> {
    let chunks: Vec<&[u8]> = data.chunks(CHUNK).collect();
    let total = u32::try_from(chunks.len()).map_err(|_| "file too large")?;
    let started = Instant::now();
    let mut base = 0u32;
    let mut next = 0u32;
    let mut last_progress = Instant::now();
    loop {
        if base == total {
            break;
        }
        while next < total && next < base + WINDOW {
            let chunk = chunks.get(next as usize).copied().unwrap_or_default();
            conn.send(msg(DATA, next, chunk))
                .await
                .map_err(|e| e.to_string())?;
            next += 1;
        }
        // The META datagram says how many chunks follow (resent with the window).
        if base == 0 {
            conn.send(msg(META, total, &(data.len() as u64).to_be_bytes()))
                .await
                .map_err(|e| e.to_string())?;
        }
        match tokio::time::timeout(RTO, conn.recv()).await {
            Ok(Ok(d)) => {
                if let Some((ACK, n, _)) = parse(&d) {
                    if n > base {
                        base = n.min(total);
                        last_progress = Instant::now();
                    }
                }
            }
            Ok(Err(reason)) => return Err(reason.to_string()),
            Err(_) => {
                if last_progress.elapsed() > Duration::from_secs(30) {
                    return Err("no progress for 30 s".into());
                }
                next = base; // go back N
            }
        }
    }
    // Tell the receiver we are done; wait for its DONE (a few tries).
    for _ in 0..10 {
        conn.send(msg(DONE, total, &[]))
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(Ok(d)) = tokio::time::timeout(RTO, conn.recv()).await {
            if matches!(parse(&d), Some((DONE, _, _))) {
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    eprintln!(
        "file_send: sent {} bytes in {secs:.2} s ({:.2} Mbit/s)",
        data.len(),
        data.len() as f64 * 8.0 / secs / 1e6
    );
    Ok(())
}

async fn recv_file(conn: &mut Connection) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut expected = 0u32;
    let mut total: Option<u32> = None;
    loop {
        let d = tokio::time::timeout(Duration::from_secs(30), conn.recv())
            .await
            .map_err(|_| "nothing for 30 s")?
            .map_err(|r| r.to_string())?;
        match parse(&d) {
            Some((META, n, _)) => total = Some(n),
            Some((DATA, n, body)) => {
                if n == expected {
                    out.extend_from_slice(body);
                    expected += 1;
                }
                conn.send(msg(ACK, expected, &[]))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Some((DONE, n, _)) if n == expected && total.is_none_or(|t| t == n) => {
                conn.send(msg(DONE, n, &[]))
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(out);
            }
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, room, mode, path] = args.as_slice() else {
        eprintln!("usage: file_send WS-URL ROOM send|recv PATH");
        return ExitCode::FAILURE;
    };
    let config = PeerConfig::new(url.clone(), room.clone());
    let connected = match Peer::new(config) {
        Ok(p) => p.connect().await,
        Err(e) => Err(e),
    };
    let mut conn = match connected {
        Ok(c) => c,
        Err(e) => {
            eprintln!("file_send: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(p) = conn.selected_path() {
        eprintln!("file_send: connected via {p}");
    }
    let r = match mode.as_str() {
        "send" => match std::fs::read(path) {
            Ok(data) => send_file(&mut conn, &data).await,
            Err(e) => Err(format!("{path}: {e}")),
        },
        "recv" => match recv_file(&mut conn).await {
            Ok(data) => std::fs::write(path, &data)
                .map(|()| eprintln!("file_send: received {} bytes into {path}", data.len()))
                .map_err(|e| format!("{path}: {e}")),
            Err(e) => Err(e),
        },
        _ => Err("the mode is send or recv".into()),
    };
    conn.close().await;
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("file_send: {e}");
            ExitCode::FAILURE
        }
    }
}
