//! Send a file to a peer over a reliable data channel.
//!
//! ```text
//! cargo run -p p2p-connect --example file_send -- ws://127.0.0.1:8080/ws room send ./photo.jpg
//! cargo run -p p2p-connect --example file_send -- ws://127.0.0.1:8080/ws room recv ./copy.jpg
//! ```
//!
//! The sender opens a channel `file` (reliable and ordered: SCTP
//! retransmits and orders), sends the length as a first string message,
//! then the file in 16 KiB binary messages; `Channel::send` waits when the
//! path is slower than the disk (back-pressure). `p2p send` and
//! `p2p receive` do the same with names, progress and an end-to-end hash.

use std::process::ExitCode;

use p2p_connect::{ChannelOptions, Connection, Peer, PeerConfig};

const CHUNK: usize = 16 * 1024;

async fn send_file(conn: &Connection, data: Vec<u8>) -> Result<(), String> {
    let ch = conn
        .open_channel(ChannelOptions::new("file"))
        .await
        .map_err(|e| e.to_string())?;
    ch.send_text(data.len().to_string())
        .await
        .map_err(|e| e.to_string())?;
    let data = p2p_connect::Bytes::from(data);
    for at in (0..data.len()).step_by(CHUNK) {
        let end = (at + CHUNK).min(data.len());
        // A slice of the Bytes: nothing is copied on the way.
        ch.send(data.slice(at..end))
            .await
            .map_err(|e| e.to_string())?;
    }
    // The receiver says it has everything.
    ch.recv().await.map_err(|e| e.to_string())?;
    Ok(())
}

async fn recv_file(conn: &Connection) -> Result<Vec<u8>, String> {
    let ch = conn.accept_channel().await.map_err(|e| e.to_string())?;
    let first = ch.recv().await.map_err(|e| e.to_string())?;
    let len: usize = first.text().parse().map_err(|_| "a bad length")?;
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        let m = ch.recv().await.map_err(|e| e.to_string())?;
        data.extend_from_slice(&m.data);
    }
    ch.send_text("done").await.map_err(|e| e.to_string())?;
    Ok(data)
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
    let conn = match connected {
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
            Ok(data) => send_file(&conn, data).await,
            Err(e) => Err(format!("{path}: {e}")),
        },
        "recv" => match recv_file(&conn).await {
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
