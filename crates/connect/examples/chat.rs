//! A chat between two peers: lines on stdin go to the other peer, its lines
//! are printed on stdout, progress on stderr.
//!
//! ```text
//! p2p serve --signaling 127.0.0.1:8080            # somewhere both can reach
//! cargo run -p p2p-connect --example chat -- ws://127.0.0.1:8080/ws my-room
//! cargo run -p p2p-connect --example chat -- ws://127.0.0.1:8080/ws my-room   # the other peer
//! ```
//!
//! Options after the room: `--stun URI`, `--turn URI USER PASSWORD`,
//! `--relay-only`, `--loopback`. Without `--stun`/`--turn` the servers of
//! the signaling server's welcome are used. The peer that joined second
//! opens a data channel `chat` (reliable, ordered, encrypted); the other
//! takes it. A tab of `p2p serve`'s page can be the other peer.

use std::process::ExitCode;

use p2p_connect::{ChannelOptions, ConnectionEvent, IceServerUri, Peer, PeerConfig, Policy};
use tokio::io::{AsyncBufReadExt, BufReader};

fn usage() -> ExitCode {
    eprintln!(
        "usage: chat WS-URL ROOM [--stun URI] [--turn URI USER PASSWORD] [--relay-only] [--loopback]"
    );
    ExitCode::FAILURE
}

fn config(args: &[String]) -> Result<PeerConfig, String> {
    let [url, room, rest @ ..] = args else {
        return Err("missing URL or room".into());
    };
    let mut c = PeerConfig::new(url.clone(), room.clone());
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--stun" => {
                let u = it.next().ok_or("--stun needs a URI")?;
                c = c.ice_server(u.parse().map_err(|e| format!("{e}"))?);
            }
            "--turn" => {
                let (Some(u), Some(user), Some(pass)) = (it.next(), it.next(), it.next()) else {
                    return Err("--turn needs URI USER PASSWORD".into());
                };
                let u: IceServerUri = u.parse().map_err(|e| format!("{e}"))?;
                c = c.ice_server(u.with_credentials(user.clone(), pass.clone()));
            }
            "--relay-only" => c = c.policy(Policy::RelayOnly),
            "--loopback" => c = c.include_loopback(true),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(c)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chat: {e}");
            return usage();
        }
    };
    let peer = match Peer::new(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chat: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("chat: waiting for the other peer...");
    let connected = peer
        .connect_with(|e| match e {
            ConnectionEvent::PeerFound { peer_id, .. } => eprintln!("chat: peer {peer_id} is here"),
            ConnectionEvent::Connected(path) => eprintln!("chat: connected via {path}"),
            _ => {}
        })
        .await;
    let conn = match connected {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chat: {e}");
            return ExitCode::FAILURE;
        }
    };
    let chat = if conn.is_controlling() {
        conn.open_channel(ChannelOptions::new("chat"))
            .await
            .map_err(|e| e.to_string())
    } else {
        conn.accept_channel().await.map_err(|e| e.to_string())
    };
    let chat = match chat {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chat: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = stdin.next_line() => match line {
                Ok(Some(l)) => {
                    if chat.send_text(l).await.is_err() {
                        break;
                    }
                }
                _ => break,
            },
            got = chat.recv() => match got {
                Ok(m) => println!("{}", m.text()),
                Err(reason) => {
                    eprintln!("chat: {reason}");
                    return ExitCode::SUCCESS;
                }
            },
        }
    }
    conn.close().await;
    ExitCode::SUCCESS
}
