//! `p2p connect`: one peer, chatting over an encrypted WebRTC data channel
//! (DTLS, SCTP), so that the other peer may be another `p2p connect` or a
//! browser tab of `p2p serve`'s page. The offerer opens the channel `chat`
//! (in-band, DCEP); the answerer takes the channel the other side opens.
//! Each line on stdin goes as one string message, each message received is
//! written as one line to stdout (on a terminal, after the sender's name);
//! progress goes to stderr (a one-line progress display when stderr is a
//! terminal).
//!
//! For scripts: `--json` writes each progress line as a JSON object instead
//! (`{"t_ms":…,"event":"connected","local_kind":"srflx",…}`, then `"ready"` with the
//! time ICE took, `"message"` for each message received, and `"done"` at
//! the end), and `--expect-lines N` makes it exit once N messages have
//! arrived (after `--linger-ms`, so that the peer gets what we still send),
//! failing if the connection closes before.

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use p2p_connect::{
    ChannelOptions, CloseReason, ConnectError, Connection, ConnectionEvent, IceServerUri, IceState,
    Peer, PeerConfig, Policy, SelectedPath,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

type AnyError = Box<dyn std::error::Error>;

pub(crate) const EXAMPLES: &str = "\
Examples:
  # Two terminals, one room, through a local p2p serve:
  p2p connect --signaling ws://127.0.0.1:8080/ws --room demo --name alice
  p2p connect --signaling ws://127.0.0.1:8080/ws --room demo --name bob
  # Relayed only, through a TURN server of your own:
  p2p connect --signaling wss://example.org/ws --room demo --relay-only \\
      --turn turn:example.org --turn-user alice --turn-password secret
  # For scripts: JSON progress, exit after 3 messages:
  p2p connect --signaling ws://127.0.0.1:8080/ws --room r --json --expect-lines 3

A room holds one pair: a third peer is told the room is busy.";

/// Where to meet the peer and how to reach it: the options `p2p connect`,
/// `p2p send` and `p2p receive` share.
#[derive(Debug, Args)]
pub(crate) struct NetArgs {
    /// The signaling server: ws://HOST:PORT/ws, wss://HOST[:PORT]/ws (TLS), the
    /// page's http(s):// URL, or HOST[:PORT] (ws://, port 8080 as p2p serve's).
    /// Repeat it (or separate with commas) for the nodes of a cluster: the
    /// next is tried when one cannot be reached or goes away.
    #[arg(long, value_name = "URL", required = true, value_delimiter = ',')]
    signaling: Vec<String>,
    /// The room to meet the other peer in.
    #[arg(long, value_name = "NAME")]
    room: String,
    /// The room's token, if the server asks for one.
    #[arg(long, value_name = "TOKEN", env = "P2P_ROOM_TOKEN")]
    token: Option<String>,
    /// A display name for the other peers.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// A STUN server, stun:HOST[:PORT] or HOST[:PORT]; repeatable. Without --stun and
    /// --turn, the servers of the signaling server's welcome are used.
    #[arg(long, value_name = "URI")]
    stun: Vec<String>,
    /// A TURN server, turn:HOST[:PORT][?transport=udp|tcp], turns:HOST[:PORT] or HOST[:PORT]; repeatable.
    #[arg(long, value_name = "URI", requires = "turn_user")]
    turn: Vec<String>,
    /// The TURN username (for every --turn).
    #[arg(long, value_name = "USER")]
    turn_user: Option<String>,
    /// The TURN password (for every --turn).
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "P2P_TURN_PASSWORD",
        hide_env_values = true
    )]
    turn_password: Option<String>,
    /// PEM file of the certificates to trust for wss:// signaling and turns:
    /// servers, instead of the system's trust store (the default; SSL_CERT_FILE
    /// and SSL_CERT_DIR are honoured).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// Use relayed candidates only (hides this machine's addresses).
    #[arg(long)]
    relay_only: bool,
    /// Local IPs to use (default: every interface that is up); repeatable.
    #[arg(long, value_name = "IP")]
    bind: Vec<IpAddr>,
    /// Use loopback addresses too (both peers on one machine).
    #[arg(long)]
    loopback: bool,
    /// Do not ask the local router for a port mapping (PCP, NAT-PMP). By
    /// default the router of the default route is asked to forward a port
    /// to the socket on its interface; the mapped address is offered to
    /// the peer as a server-reflexive candidate and deleted on exit.
    #[arg(long)]
    no_port_mapping: bool,
    /// The router to ask for a port mapping (default: the gateway of the
    /// IPv4 default route).
    #[arg(long, value_name = "IP", conflicts_with = "no_port_mapping")]
    gateway: Option<IpAddr>,
    /// Do not announce `a=ice-options:... p2phardnat`: nothing beyond
    /// standard ICE is ever tried with the peer (it is only tried when
    /// both peers announce it; a browser never does).
    #[arg(long)]
    no_hardnat: bool,
    /// ICE over TCP (RFC 6544) too: listen for the peer's connections and
    /// connect to its passive candidates, for networks that block UDP but
    /// let TCP through (a path over TCP ranks below every UDP one).
    #[arg(long)]
    ice_tcp: bool,
    /// Hide this machine's host addresses behind generated <uuid>.local
    /// names as browsers do, answering the LAN's mDNS queries for them
    /// (done anyway when the peer asks, as the page opened with &hide=1 does).
    #[arg(long)]
    mdns_hide: bool,
    /// Signal host addresses as they are even when the peer asks to have them hidden.
    #[arg(long, conflicts_with = "mdns_hide")]
    mdns_never_hide: bool,
    /// Ask the peer to hide its host addresses behind mDNS names.
    #[arg(long)]
    mdns_ask: bool,
    /// Seconds ICE may take once the peer is found.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout: u64,
    /// Seconds to wait for the other peer (default: forever).
    #[arg(long, value_name = "SECS")]
    peer_timeout: Option<u64>,
    /// Progress on stderr as JSON lines (one object per event) for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Exit once N lines have arrived (stdin ending does not close the
    /// connection before that); exit with an error if it closes first.
    #[arg(long, value_name = "N")]
    expect_lines: Option<u64>,
    /// With --expect-lines: stay this long after the Nth line, still sending
    /// stdin, so that the peer's last lines are not cut short.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 500,
        requires = "expect_lines"
    )]
    linger_ms: u64,
}

pub(crate) fn config(a: &NetArgs) -> Result<PeerConfig, AnyError> {
    let mut urls = a.signaling.iter().map(|s| signaling_url(s));
    let first = urls.next().transpose()?.unwrap_or_default();
    let mut c = PeerConfig::new(first, a.room.clone())
        .include_loopback(a.loopback)
        .local_addresses(a.bind.iter().copied())
        .ice_tcp(a.ice_tcp)
        .mdns_hide_hosts(a.mdns_hide)
        .mdns_hide_when_asked(!a.mdns_never_hide)
        .mdns_ask_peer_to_hide(a.mdns_ask)
        .connect_timeout(Duration::from_secs(a.timeout.max(1)));
    for more in urls {
        c = c.signaling_fallback(more?);
    }
    c.token = a.token.clone();
    c.name = a.name.clone();
    c.peer_timeout = a.peer_timeout.map(Duration::from_secs);
    c.port_mapping = !a.no_port_mapping;
    c.gateway = a.gateway;
    c.hard_nat = !a.no_hardnat;
    if a.relay_only {
        c = c.policy(Policy::RelayOnly);
    }
    for s in &a.stun {
        let u: IceServerUri = with_scheme(s, "stun:").parse()?;
        if u.is_turn() {
            return Err(format!("--stun {s}: a turn: URI goes in --turn").into());
        }
        c = c.ice_server(u);
    }
    for t in &a.turn {
        let u: IceServerUri = with_scheme(t, "turn:").parse()?;
        if !u.is_turn() {
            return Err(format!("--turn {t}: expected turn: or turns:").into());
        }
        let user = a.turn_user.clone().ok_or("--turn needs --turn-user")?;
        let pass = a
            .turn_password
            .clone()
            .ok_or("--turn needs --turn-password (or P2P_TURN_PASSWORD)")?;
        c = c.ice_server(u.with_credentials(user, pass));
    }
    if let Some(path) = &a.tls_ca {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut rd = &pem[..];
        for cert in rustls_pemfile::certs(&mut rd) {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            c.tls_roots.push(cert.as_ref().to_vec());
        }
        if c.tls_roots.is_empty() {
            return Err(format!("--tls-ca {}: no PEM certificate in it", path.display()).into());
        }
    } else {
        // The system's trust store (SSL_CERT_FILE and SSL_CERT_DIR win), so
        // that wss:// and turns: servers with a public certificate work
        // without options. Unreadable entries are skipped; with none at all,
        // a wss:// URL fails saying that --tls-ca is needed. A certificate
        // rustls cannot take as a root is left out here, not allowed to
        // fail the whole set later.
        c.tls_roots = rustls_native_certs::load_native_certs()
            .certs
            .into_iter()
            .filter(|d| rustls::RootCertStore::empty().add(d.clone()).is_ok())
            .map(|d| d.as_ref().to_vec())
            .collect();
    }
    Ok(c)
}

/// The WebSocket URL of a signaling server as people write it: a
/// `ws://`/`wss://` URL as it is; the page's `http://`/`https://` URL
/// (the daemon upgrades on any path) as `ws://`/`wss://`; `HOST[:PORT]`
/// as `ws://HOST:PORT/ws`, port 8080 (`p2p serve`'s) when none is given.
fn signaling_url(s: &str) -> Result<String, AnyError> {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    for (from, to) in [
        ("ws://", "ws://"),
        ("wss://", "wss://"),
        ("http://", "ws://"),
        ("https://", "wss://"),
    ] {
        if lower.starts_with(from) {
            return Ok(format!("{to}{}", &s[from.len()..]));
        }
    }
    if s.contains("://") {
        return Err(format!(
            "--signaling {s}: expected ws://, wss://, http://, https:// or HOST[:PORT]"
        )
        .into());
    }
    let (host, path) = s.split_once('/').map_or((s, "ws"), |(h, p)| (h, p));
    if host.is_empty() {
        return Err(format!("--signaling {s}: no host").into());
    }
    // A port is the part after the last colon, unless that colon is inside
    // an IPv6 address: `[::1]:8080` has one, `[::1]` and `::1` do not.
    let has_port = match host.rfind(':') {
        Some(i) if host.starts_with('[') => host[..i].ends_with(']'),
        Some(_) => host.matches(':').count() == 1,
        None => false,
    };
    let host = if !host.starts_with('[') && host.matches(':').count() > 1 {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let port = if has_port { "" } else { ":8080" };
    Ok(format!("ws://{host}{port}/{path}"))
}

/// `HOST[:PORT]` as a URI of `scheme`; a URI as it is.
fn with_scheme(s: &str, scheme: &str) -> String {
    let lower = s.to_ascii_lowercase();
    if ["stun:", "stuns:", "turn:", "turns:"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        s.to_owned()
    } else {
        format!("{scheme}{s}")
    }
}

/// What the progress display shows.
#[derive(Debug, Default)]
struct Progress {
    stage: String,
    local: usize,
    remote: usize,
    /// When the other peer became known (ICE starts then).
    peer_found: Option<Instant>,
}

/// The short name of an event in `--json` output.
fn event_name(e: &ConnectionEvent) -> &'static str {
    match e {
        ConnectionEvent::SignalingConnected { .. } => "signaling_connected",
        ConnectionEvent::Joined { .. } => "joined",
        ConnectionEvent::PeerFound { .. } => "peer_found",
        ConnectionEvent::SocketsBound(_) => "sockets_bound",
        ConnectionEvent::LocalCandidate(_) => "local_candidate",
        ConnectionEvent::RemoteCandidate(_) => "remote_candidate",
        ConnectionEvent::GatheringComplete => "gathering_complete",
        ConnectionEvent::TurnAllocated { .. } => "turn_allocated",
        ConnectionEvent::TurnFailed { .. } => "turn_failed",
        ConnectionEvent::StateChanged(_) => "state",
        ConnectionEvent::Connected(_) => "connected",
        ConnectionEvent::PathChanged(_) => "path_changed",
        ConnectionEvent::HardNat(_) => "hard_nat",
        ConnectionEvent::Disconnected => "disconnected",
        ConnectionEvent::Restarting => "restarting",
        ConnectionEvent::SignalingLost => "signaling_lost",
        ConnectionEvent::SignalingInterrupted => "signaling_interrupted",
        ConnectionEvent::SignalingRestored { .. } => "signaling_restored",
        ConnectionEvent::Closed(_) => "closed",
        _ => "other",
    }
}

/// The short, stable name of a connect failure in `--json` output.
fn failure_name(e: &ConnectError) -> &'static str {
    match e {
        ConnectError::SignalingUnreachable { .. } => "signaling_unreachable",
        ConnectError::RoomFull { .. } => "room_full",
        ConnectError::RoomBusy { .. } => "room_busy",
        ConnectError::NoRelay { .. } => "no_relay",
        ConnectError::Unauthorized { .. } => "unauthorized",
        ConnectError::Signaling(_) => "signaling",
        ConnectError::PeerLeft { .. } => "peer_left",
        ConnectError::NoPath { .. } => "no_path",
        ConnectError::TurnRefused { .. } => "turn_refused",
        ConnectError::BadIceServer(_) => "bad_ice_server",
        ConnectError::Config(_) => "config",
        ConnectError::Timeout { .. } => "timeout",
        ConnectError::Io(_) => "io",
        ConnectError::FingerprintMismatch => "fingerprint_mismatch",
        ConnectError::Secure(_) => "secure",
        _ => "other",
    }
}

/// Adds a selected path to a `--json` object as flat keys (easy to pick
/// out of a line with `sed`): `local_kind`, `local_address`, `remote_kind`,
/// `remote_address`, and `transport` (`udp`, or `tcp` over ICE-TCP).
fn add_path(v: &mut serde_json::Value, p: &SelectedPath) {
    v["local_kind"] = p.local.kind.to_string().into();
    v["local_address"] = p.local.address.to_string().into();
    v["remote_kind"] = p.remote.kind.to_string().into();
    v["remote_address"] = p.remote.address.to_string().into();
    v["transport"] = p.local.transport.to_string().into();
}

/// One `--json` progress line for an event, or `None` for events not worth one.
fn event_json(e: &ConnectionEvent, started: Instant) -> Option<serde_json::Value> {
    let text = describe(e)?;
    let mut v = serde_json::json!({
        "t_ms": ms(started.elapsed()),
        "event": event_name(e),
        "text": text,
    });
    if let ConnectionEvent::Connected(p) | ConnectionEvent::PathChanged(p) = e {
        add_path(&mut v, p);
    }
    Some(v)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn short(c: &str) -> String {
    // "candidate:F 1 udp PRIO ADDR PORT typ KIND ..." -> "KIND ADDR:PORT"
    let f: Vec<&str> = c.split_whitespace().collect();
    match (f.get(4), f.get(5), f.get(7)) {
        (Some(a), Some(p), Some(k)) if a.contains(':') => format!("{k} [{a}]:{p}"),
        (Some(a), Some(p), Some(k)) => format!("{k} {a}:{p}"),
        _ => c.to_owned(),
    }
}

/// One line saying what happened, or `None` for events not worth a line.
pub(crate) fn describe(e: &ConnectionEvent) -> Option<String> {
    Some(match e {
        ConnectionEvent::SignalingConnected { peer_id } => {
            format!("signaling: connected as {peer_id}")
        }
        ConnectionEvent::Joined { room, peers } => {
            format!("signaling: joined room {room:?} ({peers} peer(s) there)")
        }
        ConnectionEvent::PeerFound {
            peer_id,
            controlling,
        } => format!(
            "signaling: peer {peer_id}; we {}",
            if *controlling {
                "offer (controlling)"
            } else {
                "answer (controlled)"
            }
        ),
        ConnectionEvent::SocketsBound(a) => format!(
            "sockets: {}",
            a.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ConnectionEvent::LocalCandidate(c) => format!("gathering: local {}", short(c)),
        ConnectionEvent::RemoteCandidate(c) => format!("gathering: remote {}", short(c)),
        ConnectionEvent::GatheringComplete => "gathering: complete".to_owned(),
        ConnectionEvent::TurnAllocated { server, relayed } => {
            format!("turn: {server} relays for us on {relayed}")
        }
        ConnectionEvent::TurnFailed {
            server,
            code,
            reason,
        } => format!(
            "turn: {server} failed: {}{reason}",
            code.map(|c| format!("{c} ")).unwrap_or_default()
        ),
        ConnectionEvent::StateChanged(s) => format!("ice: {s}"),
        ConnectionEvent::Connected(p) => format!("connected via {p}"),
        ConnectionEvent::PathChanged(p) => format!("path changed: {p}"),
        ConnectionEvent::HardNat(h) => match h {
            p2p_connect::HardNatEvent::Probing { hard: true } => {
                "hard NAT: birthday probing, opening 256 sockets towards the peer".to_owned()
            }
            p2p_connect::HardNatEvent::Probing { .. } => {
                "hard NAT: birthday probing, probing random ports of the peer".to_owned()
            }
            p2p_connect::HardNatEvent::Found {
                local,
                remote,
                sent,
            } => format!("hard NAT: a direct path {local} -> {remote} after {sent} requests"),
            p2p_connect::HardNatEvent::GaveUp { sent } => {
                format!("hard NAT: no direct path after {sent} requests")
            }
            _ => return None,
        },
        ConnectionEvent::Disconnected => "disconnected: consent lost on the path".to_owned(),
        ConnectionEvent::Restarting => "ice: restarting".to_owned(),
        ConnectionEvent::SignalingLost => {
            "signaling: connection lost (the path stays up)".to_owned()
        }
        ConnectionEvent::SignalingInterrupted => {
            "signaling: connection lost; reconnecting (the path stays up)".to_owned()
        }
        ConnectionEvent::SignalingRestored { url, peer_id } => {
            format!("signaling: reconnected to {url} as {peer_id}")
        }
        ConnectionEvent::Closed(r) => format!("closed: {r}"),
        _ => return None,
    })
}

/// How a command reports progress on stderr: JSON lines with `--json`,
/// else `p2p <command>: <text>` lines.
pub(crate) struct Report {
    json: bool,
    started: Instant,
    command: &'static str,
    /// Events already shown while connecting: [`Connection::next_event`]
    /// hands them out again first.
    shown: usize,
}

impl Report {
    pub(crate) fn new(json: bool, command: &'static str) -> Report {
        Report {
            json,
            started: Instant::now(),
            command,
            shown: 0,
        }
    }

    /// Whether progress goes out as JSON lines.
    pub(crate) fn json(&self) -> bool {
        self.json
    }

    /// Milliseconds since the command started.
    pub(crate) fn t_ms(&self) -> u64 {
        ms(self.started.elapsed())
    }

    /// One line: `{"t_ms","event","text"}` or `p2p <command>: <text>`.
    pub(crate) fn say(&self, event: &str, text: impl Into<String>) {
        let text = text.into();
        if self.json {
            let v = serde_json::json!({ "t_ms": self.t_ms(), "event": event, "text": text });
            eprintln!("{v}");
        } else {
            eprintln!("p2p {}: {text}", self.command);
        }
    }

    /// A JSON line of its own (with `t_ms` and `event` added); nothing
    /// without `--json`.
    pub(crate) fn json_line(&self, event: &str, mut v: serde_json::Value) {
        if self.json {
            v["t_ms"] = self.t_ms().into();
            v["event"] = event.into();
            eprintln!("{v}");
        }
    }

    /// A connection event worth a line.
    pub(crate) fn event(&self, e: &ConnectionEvent) {
        if self.json {
            if let Some(v) = event_json(e, self.started) {
                eprintln!("{v}");
            }
        } else if let Some(line) = describe(e) {
            eprintln!("p2p {}: {line}", self.command);
        }
    }
}

/// The user stopped the command (Ctrl-C, SIGTERM); the peer was told, as
/// far as the path allowed. `p2p` exits 130 for it.
#[derive(Debug)]
pub(crate) struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Resolves once SIGINT or SIGTERM came, at any time since the first call
/// (the first call starts listening; a signal is remembered, so none is
/// lost between one wait and the next). Only the commands that call it
/// catch the signals; the others keep the default (the process ends).
pub(crate) async fn interrupted() {
    use std::sync::OnceLock;
    use tokio::sync::watch;
    static FLAG: OnceLock<watch::Receiver<bool>> = OnceLock::new();
    let mut rx = FLAG
        .get_or_init(|| {
            let (tx, rx) = watch::channel(false);
            tokio::spawn(async move {
                crate::shutdown_signal().await;
                let _ = tx.send(true);
            });
            rx
        })
        .clone();
    if rx.wait_for(|&v| v).await.is_err() {
        // The listener is gone (the runtime is shutting down): never.
        std::future::pending::<()>().await;
    }
}

/// Meets the peer and connects, showing progress (a one-line display on a
/// terminal, JSON lines with `--json`); says `ready` (with `hint` after it
/// on a terminal) once the encrypted connection is up.
pub(crate) async fn establish(
    a: &NetArgs,
    command: &'static str,
    hint: &str,
) -> Result<(Connection, Report), AnyError> {
    let peer = Peer::new(config(a)?)?;
    let mut report = Report::new(a.json, command);
    let shown = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let shown2 = shown.clone();
    let json = a.json;
    let tty = !json && std::io::stderr().is_terminal();
    let progress = Arc::new(Mutex::new(Progress {
        stage: "connecting to the signaling server".into(),
        ..Progress::default()
    }));
    let p2 = progress.clone();
    let started = report.started;
    let connect = peer.connect_with(move |e| {
        shown2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut p = p2.lock().unwrap_or_else(|e| e.into_inner());
        match e {
            ConnectionEvent::LocalCandidate(_) => p.local += 1,
            ConnectionEvent::RemoteCandidate(_) => p.remote += 1,
            ConnectionEvent::Joined { .. } => p.stage = "waiting for the other peer".into(),
            ConnectionEvent::PeerFound { .. } => {
                p.stage = "gathering".into();
                p.peer_found = Some(Instant::now());
            }
            ConnectionEvent::StateChanged(IceState::Checking) => p.stage = "checking".into(),
            _ => {}
        }
        if json {
            if let Some(v) = event_json(e, started) {
                eprintln!("{v}");
            }
        } else if let Some(line) = describe(e) {
            if tty {
                eprint!("\r\x1b[K");
            }
            eprintln!("p2p {command}: {line}");
        }
    });
    tokio::pin!(connect);
    let spinner = ['|', '/', '-', '\\'];
    let mut tick = tokio::time::interval(Duration::from_millis(120));
    let mut n = 0usize;
    let interrupt = interrupted();
    tokio::pin!(interrupt);
    let conn = loop {
        tokio::select! {
            r = &mut connect => break r,
            () = &mut interrupt => {
                if tty {
                    eprint!("\r\x1b[K");
                }
                report.json_line("failed", serde_json::json!({
                    "reason": "interrupted", "text": "interrupted before the peer connected",
                }));
                return Err(Interrupted.into());
            }
            _ = tick.tick(), if tty => {
                let p = progress.lock().unwrap_or_else(|e| e.into_inner());
                eprint!(
                    "\r\x1b[K{} {} ({} local, {} remote candidates, {:.1} s)",
                    spinner[n % spinner.len()], p.stage, p.local, p.remote,
                    started.elapsed().as_secs_f64()
                );
                let _ = std::io::stderr().flush();
                n += 1;
            }
        }
    };
    if tty {
        eprint!("\r\x1b[K");
    }
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            report.json_line(
                "failed",
                serde_json::json!({ "reason": failure_name(&e), "text": e.to_string() }),
            );
            return Err(e.into());
        }
    };
    report.shown = shown.load(std::sync::atomic::Ordering::Relaxed);
    let ready = started.elapsed();
    let ice = progress
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .peer_found
        .map(|t| t.elapsed());
    if json {
        let mut v = serde_json::json!({
            "t_ms": ms(ready),
            "event": "ready",
            "ms": ms(ready),
            "ice_ms": ice.map(ms),
            "local_fingerprint": conn.local_fingerprint().to_string(),
            "remote_fingerprint": conn.remote_fingerprint().map(ToString::to_string),
            "peer_name": conn.peer_name(),
        });
        if let Some(p) = conn.selected_path() {
            add_path(&mut v, &p);
        }
        eprintln!("{v}");
    } else {
        let ice = ice
            .map(|d| format!(" (ICE {:.0} ms)", d.as_secs_f64() * 1000.0))
            .unwrap_or_default();
        eprintln!(
            "p2p {command}: ready in {:.0} ms{ice}{hint}",
            ready.as_secs_f64() * 1000.0
        );
    }
    Ok((conn, report))
}

pub(crate) async fn run(a: ConnectArgs) -> Result<(), AnyError> {
    let (conn, report) =
        establish(&a.net, "connect", "; type lines to send, Ctrl-D to quit").await?;
    let say = |event: &str, text: String| report.say(event, text);
    let interrupt = interrupted();
    tokio::pin!(interrupt);
    // The offerer opens the chat channel; the answerer takes the one the
    // other side opens (a browser tab opens its own).
    let open = async {
        if conn.is_controlling() {
            Ok(conn.open_channel(ChannelOptions::new("chat")).await?)
        } else {
            Ok::<_, AnyError>(conn.accept_channel().await?)
        }
    };
    let chat = tokio::select! {
        c = open => c?,
        () = &mut interrupt => {
            conn.close().await;
            return Err(Interrupted.into());
        }
    };
    let peer_name = conn
        .peer_name()
        .map(str::to_owned)
        .unwrap_or_else(|| conn.peer_id().to_owned());
    let stdout_tty = std::io::stdout().is_terminal();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let mut stdin_open = true;
    let (mut sent, mut received) = (0u64, 0u64);
    let expect = a.expect_lines;
    let mut ended = false;
    let mut stopped = false;
    // With --expect-lines: when the Nth line came, plus the linger.
    let mut leave_at: Option<tokio::time::Instant> = None;
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    // The events shown while connecting come first: not shown again (a
    // path change right after the connection was handed out is among them).
    let mut replayed = report.shown;
    loop {
        tokio::select! {
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(l)) => {
                    if let Err(e) = chat.send_text(l).await {
                        say("error", format!("not sent: {e}"));
                        break;
                    }
                    sent += 1;
                }
                _ => stdin_open = false,
            },
            got = chat.recv() => match got {
                Ok(m) => {
                    received += 1;
                    report.json_line("message", serde_json::json!({
                        "from": peer_name, "binary": m.binary, "len": m.data.len(),
                    }));
                    if stdout_tty {
                        stdout.write_all(format!("{peer_name}: ").as_bytes()).await?;
                    }
                    stdout.write_all(&m.data).await?;
                    stdout.write_all(b"\n").await?;
                    stdout.flush().await?;
                    if leave_at.is_none() && expect.is_some_and(|n| received >= n) {
                        leave_at = Some(
                            tokio::time::Instant::now() + Duration::from_millis(a.linger_ms),
                        );
                    }
                }
                Err(e) => {
                    say("closed", format!("{e}"));
                    ended = conn.closed().is_some();
                    break;
                }
            },
            _ = tokio::time::sleep_until(leave_at.unwrap_or(far)), if leave_at.is_some() => break,
            // Ctrl-C or SIGTERM: close as Ctrl-D does, so that the peer
            // learns at once (SCTP ABORT or SHUTDOWN, close_notify), not
            // after its consent checks run out.
            () = &mut interrupt => {
                stopped = true;
                break;
            }
            e = conn.next_event() => match e {
                // Events from the start are replayed first; skip those.
                Some(_) if replayed > 0 => replayed -= 1,
                // Every later change of path is shown, with the same path
                // fields as `ready`.
                Some(ConnectionEvent::PathChanged(_) | ConnectionEvent::Disconnected
                    | ConnectionEvent::Restarting | ConnectionEvent::SignalingLost
                    | ConnectionEvent::SignalingInterrupted
                    | ConnectionEvent::SignalingRestored { .. }
                    | ConnectionEvent::Closed(_)) => {
                    if let Some(ev) = e.as_ref() {
                        report.event(ev);
                    }
                    if matches!(e, Some(ConnectionEvent::Closed(_))) {
                        ended = true;
                        break;
                    }
                }
                Some(_) => {}
                None => break,
            },
        }
        if !stdin_open && expect.is_none() {
            break;
        }
    }
    let broke = conn.closed();
    if !ended {
        conn.close().await;
    }
    say(
        "done",
        format!("closed; {sent} line(s) sent, {received} received"),
    );
    if stopped {
        return Err(Interrupted.into());
    }
    if let Some(n) = expect.filter(|n| received < *n) {
        return Err(
            format!("the connection ended after {received} of the {n} line(s) expected").into(),
        );
    }
    // A connection that broke (consent lost for good, no path after a
    // restart, a DTLS or SCTP failure) is a failure, not a normal end.
    match broke {
        Some(
            r @ (CloseReason::ConsentLost
            | CloseReason::IceFailed
            | CloseReason::Failed(_)
            | CloseReason::RelayLost(_)),
        ) => Err(format!("the connection broke: {r}").into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2p_connect::{CandidateKind, PathEnd};

    #[test]
    fn signaling_servers_are_taken_as_people_write_them() {
        for (written, url) in [
            ("ws://127.0.0.1:8080/ws", "ws://127.0.0.1:8080/ws"),
            ("wss://example.org/ws", "wss://example.org/ws"),
            ("http://127.0.0.1:8080/", "ws://127.0.0.1:8080/"),
            (
                "HTTPS://example.org:8443/?room=a",
                "wss://example.org:8443/?room=a",
            ),
            ("127.0.0.1:9000", "ws://127.0.0.1:9000/ws"),
            ("example.org", "ws://example.org:8080/ws"),
            ("example.org/signal", "ws://example.org:8080/signal"),
            ("[::1]:9000", "ws://[::1]:9000/ws"),
            ("[::1]", "ws://[::1]:8080/ws"),
            ("::1", "ws://[::1]:8080/ws"),
        ] {
            assert_eq!(signaling_url(written).expect(written), url, "{written}");
        }
        for bad in ["ftp://example.org", "/ws", ""] {
            let e = signaling_url(bad).expect_err(bad).to_string();
            assert!(e.starts_with("--signaling"), "{bad}: {e}");
        }
    }

    fn path() -> SelectedPath {
        SelectedPath {
            local: PathEnd {
                kind: CandidateKind::ServerReflexive,
                address: "203.0.113.101:4000".parse().expect("address"),
                transport: p2p_connect::Transport::Udp,
            },
            remote: PathEnd {
                kind: CandidateKind::PeerReflexive,
                address: "203.0.113.102:5000".parse().expect("address"),
                transport: p2p_connect::Transport::Udp,
            },
        }
    }

    #[test]
    fn json_connected_has_the_path_as_flat_keys() {
        let v = event_json(&ConnectionEvent::Connected(path()), Instant::now()).expect("a line");
        assert_eq!(v["event"], "connected");
        assert_eq!(v["local_kind"], "srflx");
        assert_eq!(v["local_address"], "203.0.113.101:4000");
        assert_eq!(v["remote_kind"], "prflx");
        assert_eq!(v["remote_address"], "203.0.113.102:5000");
        // One line per event: what scripts grep.
        assert!(!v.to_string().contains('\n'));
    }

    #[test]
    fn json_names_events_and_keeps_their_text() {
        let closed = ConnectionEvent::Closed(p2p_connect::CloseReason::PeerClosed);
        let v = event_json(&closed, Instant::now()).expect("a line");
        assert_eq!(v["event"], "closed");
        assert_eq!(v["text"], "closed: the peer closed");
        assert!(v.get("local_kind").is_none());
        let v = event_json(&ConnectionEvent::GatheringComplete, Instant::now()).expect("a line");
        assert_eq!(v["event"], "gathering_complete");
    }
}
