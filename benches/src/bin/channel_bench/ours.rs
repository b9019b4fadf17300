//! Our stack as a user gets it: two `p2p-connect` peers meeting through an
//! in-process `p2p-server` (signaling only) on 127.0.0.1, ICE, DTLS 1.2
//! and SCTP over the driver's real UDP sockets, on a tokio runtime with
//! two worker threads. Nothing is tuned: the driver sizes its sockets.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use p2p_connect::{ChannelOptions, Peer, PeerConfig};

use crate::{message, Counter, Job, Outcome};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A signaling server on loopback; its WebSocket URL.
pub(crate) async fn signaling() -> Result<String, String> {
    let toml = "[signaling]\nlisten = \"127.0.0.1:0\"\npage = false\n";
    let config = p2p_server::Config::from_toml_str(toml).map_err(|e| e.to_string())?;
    let server = p2p_server::Server::bind(&config)
        .await
        .map_err(|e| e.to_string())?;
    let sig = server
        .local_addrs()
        .signaling
        .ok_or("signaling is not served")?;
    tokio::spawn(server.run(std::future::pending()));
    Ok(format!("ws://{sig}/ws"))
}

/// Two connected peers on loopback, in a fresh room of `url`; `batched`:
/// GSO/GRO on the sockets (the default).
pub(crate) async fn pair(
    url: &str,
    room: &str,
    batched: bool,
) -> Result<(p2p_connect::Connection, p2p_connect::Connection), String> {
    let cfg = || {
        PeerConfig::new(url, room)
            .local_addresses([LOOPBACK])
            .connect_timeout(Duration::from_secs(20))
            .peer_timeout(Duration::from_secs(20))
            .batched_io(batched)
    };
    let first = tokio::spawn(Peer::new(cfg()).map_err(|e| e.to_string())?.connect());
    let b = Peer::new(cfg())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("second peer: {e}"))?;
    let a = first
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("first peer: {e}"))?;
    Ok((a, b))
}

pub(crate) fn run(job: Job) -> Result<Outcome, String> {
    run_with(job, true)
}

/// Ours with one system call per datagram (before GSO/GRO).
pub(crate) fn run_unbatched(job: Job) -> Result<Outcome, String> {
    run_with(job, false)
}

fn run_with(job: Job, batched: bool) -> Result<Outcome, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let url = signaling().await?;
        let (a, b) = tokio::time::timeout(
            Duration::from_secs(30),
            pair(&url, "channel-bench", batched),
        )
        .await
        .map_err(|_| "no connection within 30 s".to_string())??;
        let tx = a
            .open_channel(ChannelOptions::new("bench"))
            .await
            .map_err(|e| e.to_string())?;
        let rx = b.accept_channel().await.map_err(|e| e.to_string())?;
        let n = job.messages();
        let template = message(0);
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            for i in 0..n {
                let mut m = template.clone();
                m[..8].copy_from_slice(&i.to_be_bytes());
                if tx.send(Bytes::from(m)).await.is_err() {
                    break;
                }
            }
            tx
        });
        let mut counter = Counter::default();
        let deadline = tokio::time::Instant::from_std(start + job.limit);
        while counter.next < n {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(m)) => counter.take(&m.data),
                _ => break,
            }
        }
        let elapsed = start.elapsed();
        if counter.bad > 0 {
            return Err(format!("{} messages out of order or damaged", counter.bad));
        }
        sender.abort();
        a.close().await;
        b.close().await;
        Ok(Outcome {
            bytes: counter.next * crate::MESSAGE as u64,
            elapsed,
            complete: counter.next == n,
        })
    })
}
