//! The Prometheus endpoint: `GET /metrics` answered with the plain-text
//! exposition format (version 0.0.4) over a minimal HTTP/1.1 server (one
//! request per connection, bounded head, short timeouts).

use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::counters::Counters;
use crate::turn::{transport_index, TurnHandle, TurnStats, TRANSPORTS};

/// The largest request head read.
const MAX_HEAD: usize = 8192;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Most scrapes served at once.
const MAX_CONNS: usize = 64;

/// Serve until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, counters: Counters, turn: Option<TurnHandle>) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (s, from) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("metrics accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if conns.len() >= MAX_CONNS {
            continue;
        }
        let counters = counters.clone();
        let turn = turn.clone();
        conns.spawn(async move {
            if let Err(e) = one(s, &counters, turn.as_ref()).await {
                tracing::debug!(%from, "metrics connection: {e}");
            }
        });
    }
}

async fn one(mut s: TcpStream, counters: &Counters, turn: Option<&TurnHandle>) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    let head_end = loop {
        let n = tokio::time::timeout(READ_TIMEOUT, s.read(&mut buf[filled..]))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        if let Some(p) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if filled == buf.len() {
            return respond(&mut s, "431 Request Header Fields Too Large", "").await;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return respond(&mut s, "405 Method Not Allowed", "").await;
    }
    if path != "/metrics" && path != "/" {
        return respond(&mut s, "404 Not Found", "").await;
    }
    let turn_stats = match turn {
        Some(t) => t.stats().await,
        None => None,
    };
    let body = render(counters, turn.is_some(), turn_stats.as_ref());
    let body = if method == "HEAD" { "" } else { body.as_str() };
    respond(&mut s, "200 OK", body).await
}

async fn respond(s: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// The exposition text.
pub(crate) fn render(counters: &Counters, turn_enabled: bool, turn: Option<&TurnStats>) -> String {
    let c = counters.snapshot();
    let mut o = String::with_capacity(4096);
    let one = |v| [("", v)];
    metric(
        &mut o,
        "p2p_stun_received_total",
        "counter",
        "STUN packets received (datagrams or stream frames).",
        &one(c.received),
    );
    metric(
        &mut o,
        "p2p_stun_answered_total",
        "counter",
        "STUN responses sent.",
        &one(c.answered),
    );
    metric(
        &mut o,
        "p2p_stun_malformed_total",
        "counter",
        "Packets dropped as malformed.",
        &one(c.malformed),
    );
    metric(
        &mut o,
        "p2p_stun_ignored_total",
        "counter",
        "Packets with nothing to answer.",
        &one(c.ignored),
    );
    metric(
        &mut o,
        "p2p_stun_errors_total",
        "counter",
        "STUN error responses by code.",
        &[
            ("code=\"400\"", c.error_400),
            ("code=\"420\"", c.error_420),
            ("code=\"other\"", c.error_other),
        ],
    );
    metric(
        &mut o,
        "p2p_stun_send_errors_total",
        "counter",
        "Responses the socket failed to send.",
        &one(c.send_errors),
    );
    metric(
        &mut o,
        "p2p_stream_connections_total",
        "counter",
        "TCP and TLS connections accepted.",
        &one(c.tcp_connections),
    );
    metric(
        &mut o,
        "p2p_stream_refused_total",
        "counter",
        "TCP and TLS connections refused (limit).",
        &one(c.tcp_refused),
    );
    metric(
        &mut o,
        "p2p_turn_enabled",
        "gauge",
        "1 when the TURN server runs.",
        &one(u64::from(turn_enabled)),
    );
    let Some(t) = turn else {
        return o;
    };
    let by = |f: fn(&crate::turn::TransportStats) -> u64| -> Vec<(String, u64)> {
        TRANSPORTS
            .iter()
            .map(|tr| {
                (
                    format!("transport=\"{tr}\""),
                    f(&t.by_transport[transport_index(*tr)]),
                )
            })
            .collect()
    };
    let mut per =
        |name: &str, kind: &str, help: &str, f: fn(&crate::turn::TransportStats) -> u64| {
            let v = by(f);
            let s: Vec<(&str, u64)> = v.iter().map(|(l, n)| (l.as_str(), *n)).collect();
            metric(&mut o, name, kind, help, &s);
        };
    per("p2p_turn_allocations", "gauge", "Allocations alive.", |s| {
        s.allocations
    });
    per(
        "p2p_turn_allocations_created_total",
        "counter",
        "Allocations created.",
        |s| s.allocations_created,
    );
    per("p2p_turn_permissions", "gauge", "Permissions alive.", |s| {
        s.permissions
    });
    per(
        "p2p_turn_channels",
        "gauge",
        "Channel bindings alive.",
        |s| s.channels,
    );
    per(
        "p2p_turn_requests_total",
        "counter",
        "TURN requests received.",
        |s| s.requests,
    );
    per(
        "p2p_turn_auth_failures_total",
        "counter",
        "Requests with wrong credentials.",
        |s| s.auth_failures,
    );
    per(
        "p2p_turn_relayed_bytes_to_peer_total",
        "counter",
        "Application bytes relayed client to peer.",
        |s| s.bytes_to_peer,
    );
    per(
        "p2p_turn_relayed_packets_to_peer_total",
        "counter",
        "Packets relayed client to peer.",
        |s| s.packets_to_peer,
    );
    per(
        "p2p_turn_relayed_bytes_to_client_total",
        "counter",
        "Application bytes relayed peer to client.",
        |s| s.bytes_to_client,
    );
    per(
        "p2p_turn_relayed_packets_to_client_total",
        "counter",
        "Packets relayed peer to client.",
        |s| s.packets_to_client,
    );
    per(
        "p2p_turn_client_packets_in_total",
        "counter",
        "Packets from clients to the TURN server.",
        |s| s.client_packets_in,
    );
    per(
        "p2p_turn_client_packets_out_total",
        "counter",
        "Packets from the TURN server to clients.",
        |s| s.client_packets_out,
    );
    let k = &t.counters;
    metric(
        &mut o,
        "p2p_turn_allocations_deleted_total",
        "counter",
        "Allocations deleted by their client.",
        &one(k.allocations_deleted),
    );
    metric(
        &mut o,
        "p2p_turn_allocations_expired_total",
        "counter",
        "Allocations that expired.",
        &one(k.allocations_expired),
    );
    metric(
        &mut o,
        "p2p_turn_allocations_closed_total",
        "counter",
        "Allocations ended because their TCP/TLS connection closed.",
        &one(k.allocations_closed),
    );
    metric(
        &mut o,
        "p2p_turn_tcp_peer_connections_total",
        "counter",
        "TCP connections to peers of RFC 6062 allocations (Connect or accepted).",
        &one(k.peer_connections),
    );
    metric(
        &mut o,
        "p2p_turn_tcp_peer_connections_bound_total",
        "counter",
        "TCP peer connections bound to a client data connection (ConnectionBind).",
        &one(k.peer_connections_bound),
    );
    metric(
        &mut o,
        "p2p_turn_fast_path_packets_total",
        "counter",
        "ChannelData relayed by the receiving thread rather than the TURN task (both directions; also in the relayed totals).",
        &one(t.fast_path_packets),
    );
    metric(
        &mut o,
        "p2p_turn_error_responses_total",
        "counter",
        "TURN error responses (401 challenges included).",
        &one(k.error_responses),
    );
    metric(
        &mut o,
        "p2p_turn_dropped_total",
        "counter",
        "Packets the TURN server dropped, by reason.",
        &[
            ("reason=\"no_allocation\"", k.dropped_no_allocation),
            ("reason=\"no_permission\"", k.dropped_no_permission),
            ("reason=\"bandwidth\"", k.dropped_bandwidth),
            ("reason=\"malformed\"", k.dropped_malformed),
            ("reason=\"send_failed\"", t.send_errors),
        ],
    );
    o
}
