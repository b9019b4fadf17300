//! The Prometheus endpoint: `GET /metrics` answered with the plain-text
//! exposition format (version 0.0.4) over a minimal HTTP/1.1 server (one
//! request per connection, bounded head, short timeouts): the STUN, TURN and
//! signaling families, build information and the standard `process_*`
//! metrics (from `/proc/self`).

use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use p2p_signaling::{CloseReason, ErrorCode, Metrics as SignalingMetrics, RoomStats};

use crate::counters::Counters;
use crate::turn::{transport_index, TurnHandle, TurnStats, TRANSPORTS};

/// The largest request head read.
const MAX_HEAD: usize = 8192;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Most scrapes served at once.
const MAX_CONNS: usize = 64;

/// Serve until the task is aborted.
pub(crate) async fn serve(
    listener: TcpListener,
    counters: Counters,
    turn: Option<TurnHandle>,
    signaling: Option<SignalingMetrics>,
    cluster: Option<crate::cluster::ClusterMetrics>,
) {
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
        let signaling = signaling.clone();
        let cluster = cluster.clone();
        conns.spawn(async move {
            let ctx = (turn.as_ref(), signaling.as_ref(), cluster.as_ref());
            if let Err(e) = one(s, &counters, ctx).await {
                tracing::debug!(%from, "metrics connection: {e}");
            }
        });
    }
}

/// What one scrape renders besides the counters: TURN, signaling and
/// cluster figures, for the services this daemon runs.
type Services<'a> = (
    Option<&'a TurnHandle>,
    Option<&'a SignalingMetrics>,
    Option<&'a crate::cluster::ClusterMetrics>,
);

async fn one(mut s: TcpStream, counters: &Counters, services: Services<'_>) -> io::Result<()> {
    let (turn, signaling, cluster) = services;
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
    let mut body = render(counters, turn.is_some(), turn_stats.as_ref());
    let snapshot = signaling.map(|m| m.snapshot());
    render_signaling(&mut body, snapshot.as_ref());
    crate::cluster::render_metrics(&mut body, cluster, snapshot.as_ref());
    render_process(&mut body, &ProcessStats::read());
    let body = if method == "HEAD" { "" } else { body.as_str() };
    respond(&mut s, "200 OK", body).await
}

async fn respond(s: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // A scraper that does not read is not waited for.
    let write = async {
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        s.shutdown().await
    };
    tokio::time::timeout(READ_TIMEOUT, write)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
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
    render_stream_limits(&mut o, &c);
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
    render_turn_limits(&mut o, &t.counters);
    o
}

/// The admission of TCP and TLS connections by address, and why the
/// server closed some.
fn render_stream_limits(o: &mut String, c: &crate::CounterSnapshot) {
    metric(
        o,
        "p2p_stream_connections",
        "gauge",
        "TCP and TLS connections open.",
        &[("", c.tcp_open)],
    );
    metric(
        o,
        "p2p_stream_addresses",
        "gauge",
        "Client addresses (IPv6 by prefix) with a TCP or TLS connection open.",
        &[("", c.tcp_addresses)],
    );
    metric(
        o,
        "p2p_stream_admitted_reserved_total",
        "counter",
        "TCP and TLS connections admitted into a slot kept for light addresses.",
        &[("", c.tcp_admitted_reserved)],
    );
    metric(
        o,
        "p2p_stream_connections_refused_total",
        "counter",
        "TCP and TLS connections refused, by reason: per_ip (the address's limit), reserved (only reserved slots left, and the address is not light), full (every slot taken).",
        &[
            ("reason=\"per_ip\"", c.tcp_refused_per_ip),
            ("reason=\"reserved\"", c.tcp_refused_reserved),
            ("reason=\"full\"", c.tcp_refused_full),
        ],
    );
    metric(
        o,
        "p2p_stream_closed_total",
        "counter",
        "TCP and TLS connections the server closed on a deadline, by reason: idle (no progress), slow_frame (a frame did not arrive whole in time), write_timeout (the client did not read).",
        &[
            ("reason=\"idle\"", c.tcp_closed_idle),
            ("reason=\"slow_frame\"", c.tcp_closed_slow_frame),
            ("reason=\"write_timeout\"", c.tcp_closed_write_timeout),
        ],
    );
}

/// TURN's authentication throttling and quota refusals.
fn render_turn_limits(o: &mut String, k: &p2p_turn::Counters) {
    metric(
        o,
        "p2p_turn_auth_throttled_total",
        "counter",
        "Requests with credentials dropped unanswered and unchecked: their address had used up its authentication failures.",
        &[("", k.auth_throttled)],
    );
    metric(
        o,
        "p2p_turn_allocations_refused_total",
        "counter",
        "Allocates refused for a quota, by reason: user (486), total (508), reserve (508: only the reserve left, and the address holds too many), rest_share (486: REST users hold their share).",
        &[
            ("reason=\"user\"", k.refused_user_quota),
            ("reason=\"total\"", k.refused_total_quota),
            ("reason=\"reserve\"", k.refused_reserve),
            ("reason=\"rest_share\"", k.refused_ephemeral_share),
        ],
    );
}

/// The signaling families (`p2p_signaling_*`): connections by address and
/// in all, WebSockets, rooms and members, messages relayed and refused by
/// reason, TURN credentials handed out and withheld.
pub(crate) fn render_signaling(o: &mut String, m: Option<&p2p_signaling::MetricsSnapshot>) {
    let one = |v| [("", v)];
    metric(
        o,
        "p2p_signaling_enabled",
        "gauge",
        "1 when the signaling server runs.",
        &one(u64::from(m.is_some())),
    );
    let Some(m) = m else {
        return;
    };
    let n = |v: usize| v as u64;
    for (name, help, v) in [
        (
            "p2p_signaling_connections",
            "TCP connections open on the signaling port (pages, handshakes and WebSockets).",
            n(m.tcp_open),
        ),
        (
            "p2p_signaling_addresses",
            "Client addresses (IPv6 by prefix) with a connection open.",
            n(m.addresses),
        ),
        (
            "p2p_signaling_websockets",
            "WebSockets open (clients that got a welcome).",
            n(m.websockets),
        ),
        (
            "p2p_signaling_rooms",
            "Rooms with a member.",
            n(m.room_count),
        ),
        ("p2p_signaling_members", "Room memberships.", n(m.members)),
    ] {
        metric(o, name, "gauge", help, &one(v));
    }
    metric(
        o,
        "p2p_signaling_connections_admitted_total",
        "counter",
        "TCP connections admitted, by slot kind (reserved: kept for light users).",
        &[
            (
                "slot=\"general\"",
                m.admission.admitted - m.admission.admitted_reserved,
            ),
            ("slot=\"reserved\"", m.admission.admitted_reserved),
        ],
    );
    metric(
        o,
        "p2p_signaling_connections_refused_total",
        "counter",
        "Connections refused, by reason: per_ip (the address's limit), reserved (only reserved slots left, and the address is not a light user), full (every slot taken), websockets (the room server's WebSocket cap, close 1013).",
        &[
            ("reason=\"per_ip\"", m.admission.refused_per_addr),
            ("reason=\"reserved\"", m.admission.refused_reserved),
            ("reason=\"full\"", m.admission.refused_full),
            ("reason=\"websockets\"", m.rooms.connections_refused),
        ],
    );
    metric(
        o,
        "p2p_signaling_websockets_opened_total",
        "counter",
        "WebSockets that got a welcome.",
        &one(m.rooms.connections_accepted),
    );
    let closed: Vec<(String, u64)> = CloseReason::ALL
        .iter()
        .map(|r| (format!("reason=\"{}\"", r.as_str()), m.closed_for(*r)))
        .collect();
    labelled(
        o,
        "p2p_signaling_websockets_closed_total",
        "WebSockets ended, by reason (slow_reader and write_timeout: a client that does not read, closed with 1008).",
        &closed,
    );
    metric(
        o,
        "p2p_signaling_handshake_failures_total",
        "counter",
        "WebSocket opening handshakes that failed or timed out.",
        &[
            ("kind=\"failed\"", m.handshake_failures),
            ("kind=\"timeout\"", m.handshake_timeouts),
        ],
    );
    let r: &RoomStats = &m.rooms;
    metric(
        o,
        "p2p_signaling_messages_received_total",
        "counter",
        "Frames received from clients (refused ones included).",
        &one(r.messages_received),
    );
    let relayed: Vec<(String, u64)> = RoomStats::RELAYED_TYPES
        .iter()
        .map(|t| (format!("type=\"{t}\""), r.relayed_of(t)))
        .collect();
    labelled(
        o,
        "p2p_signaling_messages_relayed_total",
        "Messages relayed to a peer, by type.",
        &relayed,
    );
    let refused: Vec<(String, u64)> = ErrorCode::ALL
        .iter()
        .map(|c| (format!("reason=\"{}\"", c.as_str()), r.errors_of(*c)))
        .collect();
    labelled(
        o,
        "p2p_signaling_messages_refused_total",
        "Error replies, by code (rate-limited, message-too-large, unauthorized, ...).",
        &refused,
    );
    metric(
        o,
        "p2p_signaling_turn_credentials_issued_total",
        "counter",
        "Welcomes or joins that carried TURN credentials.",
        &one(r.credentials_issued),
    );
    metric(
        o,
        "p2p_signaling_turn_credentials_withheld_total",
        "counter",
        "TURN credentials withheld, by reason: rate_limited (per client address), token_required (the policy wants a room token).",
        &[
            ("reason=\"rate_limited\"", r.credentials_withheld_rate),
            ("reason=\"token_required\"", r.credentials_withheld_token),
        ],
    );
    metric(
        o,
        "p2p_signaling_joins_refused_guessing_total",
        "counter",
        "Joins to rooms that take a token refused unchecked because their client address tried too many wrong tokens.",
        &one(r.joins_refused_guessing),
    );
}

fn labelled(o: &mut String, name: &str, help: &str, samples: &[(String, u64)]) {
    let s: Vec<(&str, u64)> = samples.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(o, name, "counter", help, &s);
}

/// What `/proc/self` says about this process. Fields stay `None` where the
/// file is missing (not Linux) or unreadable.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ProcessStats {
    pub(crate) resident_bytes: Option<u64>,
    pub(crate) virtual_bytes: Option<u64>,
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) start_time_seconds: Option<f64>,
    pub(crate) open_fds: Option<u64>,
    pub(crate) max_fds: Option<u64>,
    pub(crate) threads: Option<u64>,
}

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

impl ProcessStats {
    pub(crate) fn read() -> ProcessStats {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let mut s = ProcessStats::default();
        if let Some(status) = read("/proc/self/status") {
            s.resident_bytes = status_kb(&status, "VmRSS:").map(|kb| kb * 1024);
            s.threads = status_kb(&status, "Threads:");
        }
        if let Some(stat) = read("/proc/self/stat") {
            let btime = read("/proc/stat").and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            });
            s.apply_stat(&stat, btime);
        }
        s.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        s.max_fds = read("/proc/self/limits").and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        });
        s
    }

    /// Fields of `/proc/self/stat` (after the command name, which may hold
    /// spaces): utime and stime (14, 15), starttime (22), vsize (23).
    fn apply_stat(&mut self, stat: &str, btime: Option<f64>) {
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return;
        };
        // `rest` starts at field 3 (state).
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        if let (Some(u), Some(k)) = (field(14), field(15)) {
            self.cpu_seconds = Some((u + k) as f64 / USER_HZ);
        }
        self.virtual_bytes = field(23);
        if let (Some(start), Some(boot)) = (field(22), btime) {
            self.start_time_seconds = Some(boot + start as f64 / USER_HZ);
        }
    }
}

fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Build information and the standard `process_*` metrics.
pub(crate) fn render_process(o: &mut String, p: &ProcessStats) {
    let _ = writeln!(o, "# HELP p2p_build_info The version of the daemon.");
    let _ = writeln!(o, "# TYPE p2p_build_info gauge");
    let _ = writeln!(
        o,
        "p2p_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let ints = [
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            p.virtual_bytes,
        ),
        (
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            p.open_fds,
        ),
        (
            "process_max_fds",
            "gauge",
            "The file descriptor limit.",
            p.max_fds,
        ),
        ("process_threads", "gauge", "OS threads.", p.threads),
    ];
    for (name, kind, help, v) in ints {
        if let Some(v) = v {
            metric(o, name, kind, help, &[("", v)]);
        }
    }
    let floats = [
        (
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
            p.cpu_seconds,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
            p.start_time_seconds,
        ),
    ];
    for (name, kind, help, v) in floats {
        if let Some(v) = v {
            let _ = writeln!(o, "# HELP {name} {help}");
            let _ = writeln!(o, "# TYPE {name} {kind}");
            let _ = writeln!(o, "{name} {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .map(str::to_owned)
    }

    #[test]
    fn signaling_families_are_rendered_with_every_label() {
        let mut o = String::new();
        render_signaling(&mut o, None);
        assert_eq!(value(&o, "p2p_signaling_enabled").as_deref(), Some("0"));
        let mut o = String::new();
        let snap = p2p_signaling::MetricsSnapshot::default();
        render_signaling(&mut o, Some(&snap));
        assert_eq!(value(&o, "p2p_signaling_enabled").as_deref(), Some("1"));
        for series in [
            "p2p_signaling_connections",
            "p2p_signaling_websockets",
            "p2p_signaling_rooms",
            "p2p_signaling_members",
            "p2p_signaling_connections_refused_total{reason=\"per_ip\"}",
            "p2p_signaling_connections_refused_total{reason=\"websockets\"}",
            "p2p_signaling_websockets_closed_total{reason=\"slow_reader\"}",
            "p2p_signaling_websockets_closed_total{reason=\"write_timeout\"}",
            "p2p_signaling_messages_relayed_total{type=\"offer\"}",
            "p2p_signaling_messages_relayed_total{type=\"ice-restart\"}",
            "p2p_signaling_messages_refused_total{reason=\"rate-limited\"}",
            "p2p_signaling_messages_refused_total{reason=\"message-too-large\"}",
            "p2p_signaling_turn_credentials_issued_total",
            "p2p_signaling_turn_credentials_withheld_total{reason=\"rate_limited\"}",
        ] {
            assert_eq!(value(&o, series).as_deref(), Some("0"), "{series}\n{o}");
        }
        // Every family has its HELP and TYPE.
        for line in o.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            assert!(o.contains(&format!("# TYPE {name} ")), "{name}");
        }
    }

    #[test]
    fn proc_stat_fields_are_read_past_a_command_with_spaces() {
        // pid (comm) state ppid ... utime=14 stime=15 ... starttime=22 vsize=23
        let mut fields = vec!["0"; 50];
        fields[14 - 3] = "250";
        fields[15 - 3] = "50";
        fields[22 - 3] = "1000";
        fields[23 - 3] = "123456";
        let stat = format!("42 (p2p (serve) x) {}", fields.join(" "));
        let mut p = ProcessStats::default();
        p.apply_stat(&stat, Some(1_700_000_000.0));
        assert_eq!(p.cpu_seconds, Some(3.0));
        assert_eq!(p.virtual_bytes, Some(123_456));
        assert_eq!(p.start_time_seconds, Some(1_700_000_010.0));
    }

    #[test]
    fn process_metrics_of_this_process_are_there_on_linux() {
        let p = ProcessStats::read();
        let mut o = String::new();
        render_process(&mut o, &p);
        assert!(o.contains(&format!(
            "p2p_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        if cfg!(target_os = "linux") {
            let rss: u64 = value(&o, "process_resident_memory_bytes")
                .and_then(|v| v.parse().ok())
                .expect("rss");
            assert!(rss > 1024 * 1024, "{rss}");
            assert!(value(&o, "process_open_fds").is_some());
            assert!(value(&o, "process_start_time_seconds").is_some());
        }
    }
}
