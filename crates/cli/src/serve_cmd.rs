//! `p2p serve`: the daemon (STUN, TURN, signaling with a browser page,
//! Prometheus metrics), its flags (each overriding a key of the TOML file),
//! and its life: start (a setting that cannot take effect, or a port that
//! another program holds, stops it with the fix), SIGHUP (reload), SIGINT
//! and SIGTERM (stop).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use p2p_server::{Config, Reloader, Server, ServerError};

use crate::logging::{self, LogFile};

type AnyError = Box<dyn std::error::Error>;

const EXAMPLES: &str = "\
Examples:
  # STUN, and signaling with the browser page on 127.0.0.1:8080 and [::1]:8080:
  p2p serve
  # Signaling for both families on every address:
  p2p serve --signaling 0.0.0.0:8080 --signaling '[::]:8080'
  # A public STUN and TURN server with a static user:
  p2p serve --listen 0.0.0.0:3478 --relay-ip 203.0.113.7 --realm example.org --user alice:secret
  # TURN with REST credentials, handed out by signaling over TLS:
  p2p serve --listen 203.0.113.7:3478 --realm example.org --auth-secret \"$SECRET\" \\
      --tls-cert cert.pem --tls-key key.pem --signaling 0.0.0.0:443 --signaling-tls
  # From a file (start from the sample), JSON logs to a file:
  p2p serve --print-config > p2p.toml
  p2p serve --config p2p.toml --log-file /var/log/p2p.log --log-format json
  # Reload certificates, users, the secret and peer rules without a restart:
  kill -HUP $(pidof p2p)";

/// Every flag has a key in the config file (named in brackets).
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub(crate) struct ServeArgs {
    /// TOML configuration file; flags override its keys. SIGHUP reads it
    /// again (certificates, TURN users and secret, peer rules).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print a commented configuration file with every key at its default, and exit.
    #[arg(long, exclusive = true)]
    print_config: bool,
    /// Address to serve STUN on, UDP and TCP; repeatable [stun.listen].
    #[arg(short, long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// RFC 5780 alternate address: another IP and another port [stun.alt_listen].
    #[arg(long, value_name = "ADDR")]
    alt_listen: Option<SocketAddr>,
    /// SOFTWARE attribute of responses; "" for none [stun.software].
    #[arg(long, value_name = "NAME")]
    software: Option<String>,
    /// Do not serve UDP [stun.udp = false].
    #[arg(long)]
    no_udp: bool,
    /// Do not serve TCP [stun.tcp = false].
    #[arg(long)]
    no_tcp: bool,
    /// UDP sockets per address (SO_REUSEPORT); default one per core [stun.workers].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Largest PADDING in a response, bytes [stun.max_padding].
    #[arg(long, value_name = "BYTES")]
    max_padding: Option<usize>,
    /// Seconds a TCP/TLS connection may go without progress (a success answered), and a frame may take to arrive, before it is closed [stun.tcp_idle_timeout_secs].
    #[arg(long, value_name = "SECS")]
    tcp_idle_timeout: Option<u64>,
    /// Most TCP/TLS connections at once [stun.max_connections].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// TCP/TLS connections at once from one client address (default 64) [stun.max_connections_per_ip].
    #[arg(long, value_name = "N")]
    max_per_ip: Option<usize>,
    /// IPv6 prefix length counted as one client address (default 64) [stun.ipv6_prefix].
    #[arg(long, value_name = "BITS")]
    ipv6_prefix: Option<u8>,
    /// Percent of the TCP/TLS connections kept for light addresses (default 10) [stun.reserved_percent].
    #[arg(long, value_name = "PERCENT")]
    reserve: Option<u8>,
    /// An address holding fewer TCP/TLS connections than N may take a reserved one (default 4) [stun.reserve_below].
    #[arg(long, value_name = "N")]
    reserve_below: Option<usize>,
    /// Address to serve STUN over TLS on; repeatable [tls.listen].
    #[arg(long, value_name = "ADDR")]
    tls_listen: Vec<SocketAddr>,
    /// TLS certificate chain, PEM [tls.cert].
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key, PEM [tls.key].
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log filter such as "info" or "p2p_server=debug"; default info; -v overrides it, RUST_LOG wins [log.level].
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
    /// Append the log to FILE instead of stderr; SIGHUP opens it again (logrotate) [log.file].
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Log lines as text or json (one object per line) [log.format].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<p2p_server::LogFormat>,
    #[command(flatten)]
    turn: TurnServeArgs,
    #[command(flatten)]
    signaling: SignalingServeArgs,
    #[command(flatten)]
    cluster: crate::cluster_flags::ClusterServeArgs,
}

/// The port `p2p serve` serves signaling on when neither a flag nor the
/// file says: on the loopback address of each family the machine has.
const DEFAULT_SIGNALING_PORT: u16 = 8080;

/// The default signaling addresses: `127.0.0.1:8080`, and `[::1]:8080`
/// unless the machine has no IPv6 loopback (IPv6 off, or a network
/// namespace without it), where asking for it would stop the daemon.
fn default_signaling() -> Vec<SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_SIGNALING_PORT);
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), DEFAULT_SIGNALING_PORT);
    let has_v6 = std::net::UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_ok();
    if has_v6 {
        vec![v4, v6]
    } else {
        vec![v4]
    }
}

/// The signaling server's flags of `p2p serve` (the WebSocket at /ws and the
/// browser page at /, on one TCP port).
#[derive(Debug, Args)]
struct SignalingServeArgs {
    /// Serve signaling and the browser page on ADDR; repeatable, one per family (an IPv6 address serves IPv6 only); default 127.0.0.1:8080 and [::1]:8080 [signaling.listen].
    #[arg(long, value_name = "ADDR", conflicts_with = "no_signaling")]
    signaling: Vec<SocketAddr>,
    /// Serve no signaling and no page.
    #[arg(long)]
    no_signaling: bool,
    /// Do not serve the browser page at / [signaling.page = false].
    #[arg(long)]
    no_page: bool,
    /// Serve the page and the WebSocket over TLS (https://, wss://) with --tls-cert/--tls-key [signaling.tls].
    #[arg(long)]
    signaling_tls: bool,
    /// A certificate chain (PEM) of its own for the signaling port; implies TLS [signaling.cert].
    #[arg(long, value_name = "FILE", requires = "signaling_key")]
    signaling_cert: Option<PathBuf>,
    /// The private key (PEM) of --signaling-cert [signaling.key].
    #[arg(long, value_name = "FILE", requires = "signaling_cert")]
    signaling_key: Option<PathBuf>,
    /// Host put in the stun:/turn: URLs handed to peers [signaling.public_host].
    #[arg(long, value_name = "HOST")]
    public_host: Option<String>,
    /// Token every room needs [signaling.token].
    #[arg(long, value_name = "TOKEN")]
    signaling_token: Option<String>,
    /// When TURN credentials go out: welcome, join (default: to room members), token, never [signaling.turn_credentials].
    #[arg(long, value_name = "POLICY")]
    turn_credentials: Option<p2p_server::TurnCredentials>,
    /// TURN credentials per client address per minute (default 10) [signaling.credentials_per_minute].
    #[arg(long, value_name = "N")]
    credential_rate: Option<u32>,
    /// TURN credentials one client address may get in a burst (default 20) [signaling.credential_burst].
    #[arg(long, value_name = "N")]
    credential_burst: Option<u32>,
    /// Lifetime of TURN REST credentials, seconds (default 3600) [signaling.credential_ttl_secs].
    #[arg(long, value_name = "SECS")]
    credential_ttl: Option<u64>,
    /// Hand out this static TURN user (of --user) as the TURN credentials [signaling.turn_user].
    #[arg(long, value_name = "NAME")]
    signaling_turn_user: Option<String>,
    /// Connections at once on the signaling port (default 10000) [signaling.max_connections].
    #[arg(long, value_name = "N")]
    signaling_max_connections: Option<usize>,
    /// Connections at once from one client address (default 64) [signaling.max_connections_per_ip].
    #[arg(long, value_name = "N")]
    signaling_max_per_ip: Option<usize>,
    /// IPv6 prefix length counted as one address (default 64) [signaling.ipv6_prefix].
    #[arg(long, value_name = "BITS")]
    signaling_ipv6_prefix: Option<u8>,
    /// Percent of the connections kept for light users (default 10) [signaling.reserved_percent].
    #[arg(long, value_name = "PERCENT")]
    signaling_reserve: Option<u8>,
    /// An address holding fewer connections than N may take a reserved one (default 4) [signaling.reserve_below].
    #[arg(long, value_name = "N")]
    signaling_reserve_below: Option<usize>,
    /// Seconds one write to a client may take before it is closed, 1008 (default 10) [signaling.write_timeout_secs].
    #[arg(long, value_name = "SECS")]
    signaling_write_timeout: Option<u64>,
    /// Bytes queued for one client before it is closed as too slow (default 1048576) [signaling.max_queued_bytes].
    #[arg(long, value_name = "BYTES")]
    signaling_max_queued_bytes: Option<usize>,
    /// Messages queued for one client before it is closed as too slow (default 256) [signaling.max_queued_messages].
    #[arg(long, value_name = "N")]
    signaling_max_queued_messages: Option<usize>,
    /// Seconds for the request head (and TLS), and again for the WebSocket handshake (default 10) [signaling.handshake_timeout_secs].
    #[arg(long, value_name = "SECS")]
    signaling_handshake_timeout: Option<u64>,
    /// Seconds one message may stay unfinished before the client is closed, 1008 (default 10) [signaling.message_timeout_secs].
    #[arg(long, value_name = "SECS")]
    signaling_message_timeout: Option<u64>,
    /// Seconds without a message or pong before a client is closed (default 60) [signaling.idle_timeout_secs].
    #[arg(long, value_name = "SECS")]
    signaling_idle_timeout: Option<u64>,
    /// Seconds between WebSocket pings (default 20) [signaling.heartbeat_secs].
    #[arg(long, value_name = "SECS")]
    signaling_heartbeat: Option<u64>,
    /// Largest message, bytes (default 65536) [signaling.max_message_size].
    #[arg(long, value_name = "BYTES")]
    signaling_max_message_size: Option<usize>,
    /// Messages per second one client may send, sustained (default 20) [signaling.rate_per_second].
    #[arg(long, value_name = "N")]
    signaling_rate: Option<u32>,
    /// Messages one client may send in a burst (default 50) [signaling.burst].
    #[arg(long, value_name = "N")]
    signaling_burst: Option<u32>,
    /// Peers per room (default 8) [signaling.max_room_size].
    #[arg(long, value_name = "N")]
    signaling_max_room_size: Option<usize>,
    /// Rooms on the server (default 10000) [signaling.max_rooms].
    #[arg(long, value_name = "N")]
    signaling_max_rooms: Option<usize>,
    /// Rooms one connection may be in (default 4) [signaling.max_rooms_per_connection].
    #[arg(long, value_name = "N")]
    signaling_max_rooms_per_connection: Option<usize>,
}

/// The TURN server's flags of `p2p serve` (TURN runs when a realm and a user
/// or an auth secret are given).
#[derive(Debug, Args)]
struct TurnServeArgs {
    /// TURN realm of the long-term credentials [turn.realm].
    #[arg(long, value_name = "REALM")]
    realm: Option<String>,
    /// TURN user NAME:PASSWORD; repeatable [turn.users = ["NAME:PASSWORD"]].
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    users: Vec<String>,
    /// TURN REST API shared secret (coturn's use-auth-secret) [turn.auth_secret].
    #[arg(long, value_name = "SECRET")]
    auth_secret: Option<String>,
    /// Allow relaying to a block the default policy refuses; repeatable [turn.allow_peer].
    #[arg(long, value_name = "CIDR")]
    allow_peer: Vec<String>,
    /// Refuse relaying to a block; repeatable [turn.deny_peer].
    #[arg(long, value_name = "CIDR")]
    deny_peer: Vec<String>,
    /// Allocations per user, 0 for no limit (default 10) [turn.user_quota].
    #[arg(long, value_name = "N")]
    user_quota: Option<u32>,
    /// Allocations in all; 0: the number of relay ports [turn.total_quota].
    #[arg(long, value_name = "N")]
    total_quota: Option<u32>,
    /// Percent of the allocations kept for client addresses holding few (default 10) [turn.reserved_percent].
    #[arg(long, value_name = "PERCENT")]
    turn_reserve: Option<u8>,
    /// A client address holding fewer allocations than N may take a reserved one (default 4) [turn.reserve_below].
    #[arg(long, value_name = "N")]
    turn_reserve_below: Option<u32>,
    /// With static users and --auth-secret: percent of the allocations REST users may hold (default 80) [turn.rest_share_percent].
    #[arg(long, value_name = "PERCENT")]
    rest_share: Option<u8>,
    /// Authentication failures one client address may have at once (default 20) [turn.auth_failure_burst].
    #[arg(long, value_name = "N")]
    auth_failure_burst: Option<u32>,
    /// Authentication failures per minute per client address after the burst; 0 for no limit (default 60) [turn.auth_failures_per_minute].
    #[arg(long, value_name = "N")]
    auth_failure_rate: Option<u32>,
    /// Per-allocation bandwidth cap, bytes per second, 0 for none [turn.max_bps].
    #[arg(long, value_name = "BYTES_PER_SEC")]
    max_bps: Option<u64>,
    /// TCP peer connections per RFC 6062 allocation (default 128) [turn.max_tcp_connections].
    #[arg(long, value_name = "N")]
    max_tcp_connections: Option<usize>,
    /// Relay all ChannelData through the TURN task, not on the receiving
    /// threads (for comparison; slower) [turn.relay_fast_path = false].
    #[arg(long)]
    no_relay_fast_path: bool,
    /// IP to bind relayed sockets on; one per family [turn.relay_ip].
    #[arg(long, value_name = "IP")]
    relay_ip: Vec<std::net::IpAddr>,
    /// Public IP advertised for relayed addresses (1:1 NAT); one per family [turn.external_ip].
    #[arg(long, value_name = "IP")]
    external_ip: Vec<std::net::IpAddr>,
    /// Lowest relay port (default 49152) [turn.min_port].
    #[arg(long, value_name = "PORT")]
    min_port: Option<u16>,
    /// Highest relay port (default 65535) [turn.max_port].
    #[arg(long, value_name = "PORT")]
    max_port: Option<u16>,
    /// Seconds a nonce stays valid (default 600) [turn.nonce_lifetime_secs].
    #[arg(long, value_name = "SECS")]
    nonce_lifetime: Option<u64>,
    /// Serve Prometheus metrics (HTTP GET /metrics) on ADDR [metrics.listen].
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

/// The configuration of the file and the flags, checked: a key or flag
/// that could not take effect is an error here.
fn serve_config(a: &ServeArgs) -> Result<Config, AnyError> {
    let mut cfg = match &a.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let s = &mut cfg.stun;
    if !a.listen.is_empty() {
        s.listen = a.listen.clone();
    }
    if a.alt_listen.is_some() {
        s.alt_listen = a.alt_listen;
    }
    if let Some(v) = &a.software {
        s.software = v.clone();
    }
    if a.no_udp {
        s.udp = false;
    }
    if a.no_tcp {
        s.tcp = false;
    }
    if a.workers.is_some() {
        s.workers = a.workers;
    }
    if let Some(v) = a.max_padding {
        s.max_padding = v;
    }
    if let Some(v) = a.tcp_idle_timeout {
        s.tcp_idle_timeout_secs = v;
    }
    if let Some(v) = a.max_connections {
        s.max_connections = v;
    }
    if a.max_per_ip.is_some() {
        s.max_connections_per_ip = a.max_per_ip;
    }
    if let Some(v) = a.ipv6_prefix {
        s.ipv6_prefix = v;
    }
    if let Some(v) = a.reserve {
        s.reserved_percent = v;
    }
    if a.reserve_below.is_some() {
        s.reserve_below = a.reserve_below;
    }
    if !a.tls_listen.is_empty() {
        cfg.tls.listen = a.tls_listen.clone();
    }
    if a.tls_cert.is_some() {
        cfg.tls.cert = a.tls_cert.clone();
        cfg.tls.key = a.tls_key.clone();
    }
    if a.log.is_some() {
        cfg.log.level = a.log.clone();
    }
    if a.log_file.is_some() {
        cfg.log.file = a.log_file.clone();
    }
    if let Some(f) = a.log_format {
        cfg.log.format = f;
    }
    apply_turn_flags(&mut cfg, &a.turn)?;
    apply_signaling_flags(&mut cfg, &a.signaling);
    crate::cluster_flags::apply(&mut cfg, &a.cluster);
    // Signaling is on by default.
    if cfg.signaling.listen.is_empty() && !a.signaling.no_signaling {
        cfg.signaling.listen = default_signaling();
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The message for a port that cannot be bound: why, in words, and the
/// fix, ending with the flag that moves it. One rule for every port,
/// default or asked for: the daemon stops.
fn bind_error(transport: &str, addr: SocketAddr, source: &std::io::Error) -> String {
    let elsewhere = match transport {
        "signaling" => {
            "serve it elsewhere with --signaling ADDR, or not at all with --no-signaling"
        }
        "tls" => "serve TLS elsewhere with --tls-listen ADDR",
        "metrics" => "serve metrics elsewhere with --metrics ADDR",
        "relay" => "relay on another IP with --relay-ip IP",
        _ => "serve elsewhere with --listen ADDR",
    };
    let why = match source.kind() {
        std::io::ErrorKind::AddrInUse => "stop the program that holds it, or ".to_owned(),
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            let exe = std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "p2p".to_owned());
            format!(
                "ports below 1024 need root or the CAP_NET_BIND_SERVICE capability (setcap cap_net_bind_service=+ep {exe}, or AmbientCapabilities=CAP_NET_BIND_SERVICE in a systemd unit), or "
            )
        }
        std::io::ErrorKind::AddrNotAvailable if transport == "relay" => format!(
            "{} is not an address of this machine: behind a 1:1 NAT (a cloud VM, say) relay on the private address and advertise the public one with --external-ip {}, or ",
            addr.ip(),
            addr.ip()
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this machine: use one it has (ip addr), {} for all of them, or ",
            addr.ip(),
            if addr.is_ipv4() { "0.0.0.0" } else { "[::]" }
        ),
        _ => String::new(),
    };
    format!("cannot bind {transport} {addr}: {source} ({why}{elsewhere})")
}

pub(crate) async fn run(a: ServeArgs, verbose: u8) -> Result<(), AnyError> {
    if a.print_config {
        print!("{}", p2p_server::config_sample());
        return Ok(());
    }
    let cfg = serve_config(&a)?;
    let log_file = logging::init(
        verbose,
        cfg.log.level.as_deref(),
        "info",
        cfg.log.file.as_deref(),
        cfg.log.format,
    )?;
    let server = match Server::bind(&cfg).await {
        Err(ServerError::Bind {
            transport,
            addr,
            source,
        }) => return Err(bind_error(transport, addr, &source).into()),
        r => r?,
    };
    // SIGHUP is caught before the daemon says it runs: a reload asked
    // for at once must not meet the default action (terminate).
    let hup = hangup()?;
    announce(&server, &cfg);
    let reloader = server.reloader();
    let hup = tokio::spawn(reload_on_sighup(hup, a, reloader, log_file));
    let stats = server.run(shutdown_signal()).await;
    hup.abort();
    println!("p2p serve: stopped; {stats}");
    Ok(())
}

/// What is served where, on stdout, so that scripts and people see it
/// without -v.
fn announce(server: &Server, cfg: &Config) {
    let addrs = server.local_addrs();
    let join = |v: &[SocketAddr]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !addrs.udp.is_empty() {
        println!("p2p serve: STUN over UDP on {}", join(&addrs.udp));
    }
    if !addrs.tcp.is_empty() {
        println!("p2p serve: STUN over TCP on {}", join(&addrs.tcp));
    }
    if !addrs.tls.is_empty() {
        println!("p2p serve: STUN over TLS on {}", join(&addrs.tls));
    }
    if let Some(alt) = addrs.alternate {
        println!("p2p serve: RFC 5780 alternate address {alt}");
    }
    println!("p2p serve: {}", server.turn_summary());
    if let Some(m) = addrs.metrics {
        println!("p2p serve: metrics on http://{m}/metrics");
    }
    // One line per address, the first first (scripts read that one).
    for &s in &addrs.signaling_all {
        let (ws, http) = if cfg.signaling.uses_tls() {
            ("wss", "https")
        } else {
            ("ws", "http")
        };
        if cfg.signaling.page {
            println!("p2p serve: signaling on {ws}://{s}/ws, browser page on {http}://{s}/");
        } else {
            println!("p2p serve: signaling on {ws}://{s}/ws (no browser page)");
        }
        if !cfg.signaling.uses_tls() && !s.ip().is_loopback() {
            tracing::warn!("{}", cleartext_signaling(s));
        }
    }
    if let Some(f) = &cfg.log.file {
        println!("p2p serve: logging to {}", f.display());
    }
}

/// The warning for signaling served without TLS beyond loopback (a TLS
/// proxy in front is a fine reason, so it is not refused).
fn cleartext_signaling(addr: SocketAddr) -> String {
    format!(
        "signaling on ws://{addr} is not encrypted: room tokens, the SDP (with the DTLS fingerprints that authenticate peers) and the TURN credentials handed out cross the network readable and alterable; serve it over TLS with --signaling-tls (the --tls-cert certificate) or --signaling-cert/--signaling-key, or behind a TLS proxy [signaling.tls]"
    )
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup() -> Result<Hangup, AnyError> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup()).map_err(|e| format!("cannot catch SIGHUP: {e}").into())
}

#[cfg(not(unix))]
fn hangup() -> Result<Hangup, AnyError> {
    Ok(())
}

/// On each SIGHUP: open the log file again, read the file and the flags
/// again, and put in place what can change without a restart. A
/// configuration that does not load changes nothing (the daemon goes on as
/// it was and says why).
#[cfg_attr(not(unix), allow(unused_variables, unused_mut))]
async fn reload_on_sighup(
    mut hup: Hangup,
    a: ServeArgs,
    reloader: Reloader,
    log_file: Option<Arc<LogFile>>,
) {
    #[cfg(unix)]
    while hup.recv().await.is_some() {
        if let Some(f) = &log_file {
            if let Err(e) = f.reopen() {
                eprintln!("p2p serve: cannot open {} again: {e}", f.path().display());
            }
        }
        let cfg = serve_config(&a).map_err(|e| e.to_string());
        let result = match cfg {
            Ok(cfg) => reloader.reload(&cfg).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match result {
            Ok(done) => {
                println!("p2p serve: SIGHUP: {done}");
                tracing::info!("SIGHUP: {done}");
            }
            Err(e) => {
                println!("p2p serve: SIGHUP: reload refused, nothing changed: {e}");
                tracing::error!("SIGHUP: reload refused, nothing changed: {e}");
            }
        }
    }
}

/// SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn apply_signaling_flags(cfg: &mut Config, a: &SignalingServeArgs) {
    let s = &mut cfg.signaling;
    if a.no_signaling {
        s.listen.clear();
    } else if !a.signaling.is_empty() {
        s.listen.clone_from(&a.signaling);
    }
    if a.no_page {
        s.page = false;
    }
    if a.signaling_tls {
        s.tls = true;
    }
    if a.signaling_cert.is_some() {
        s.cert = a.signaling_cert.clone();
        s.key = a.signaling_key.clone();
    }
    if a.public_host.is_some() {
        s.public_host = a.public_host.clone();
    }
    if a.signaling_token.is_some() {
        s.token = a.signaling_token.clone();
    }
    if a.turn_credentials.is_some() {
        s.turn_credentials = a.turn_credentials;
    }
    if a.signaling_turn_user.is_some() {
        s.turn_user = a.signaling_turn_user.clone();
    }
    if a.signaling_max_per_ip.is_some() {
        s.max_connections_per_ip = a.signaling_max_per_ip;
    }
    if a.signaling_reserve_below.is_some() {
        s.reserve_below = a.signaling_reserve_below;
    }
    fn set<T: Copy>(field: &mut T, flag: Option<T>) {
        if let Some(v) = flag {
            *field = v;
        }
    }
    set(&mut s.credentials_per_minute, a.credential_rate);
    set(&mut s.credential_burst, a.credential_burst);
    set(&mut s.credential_ttl_secs, a.credential_ttl);
    set(&mut s.max_connections, a.signaling_max_connections);
    set(&mut s.ipv6_prefix, a.signaling_ipv6_prefix);
    set(&mut s.reserved_percent, a.signaling_reserve);
    set(&mut s.write_timeout_secs, a.signaling_write_timeout);
    set(&mut s.max_queued_bytes, a.signaling_max_queued_bytes);
    set(&mut s.max_queued_messages, a.signaling_max_queued_messages);
    set(&mut s.handshake_timeout_secs, a.signaling_handshake_timeout);
    set(&mut s.message_timeout_secs, a.signaling_message_timeout);
    set(&mut s.idle_timeout_secs, a.signaling_idle_timeout);
    set(&mut s.heartbeat_secs, a.signaling_heartbeat);
    set(&mut s.max_message_size, a.signaling_max_message_size);
    set(&mut s.rate_per_second, a.signaling_rate);
    set(&mut s.burst, a.signaling_burst);
    set(&mut s.max_room_size, a.signaling_max_room_size);
    set(&mut s.max_rooms, a.signaling_max_rooms);
    set(
        &mut s.max_rooms_per_connection,
        a.signaling_max_rooms_per_connection,
    );
}

fn apply_turn_flags(cfg: &mut Config, a: &TurnServeArgs) -> Result<(), AnyError> {
    let t = &mut cfg.turn;
    if a.realm.is_some() {
        t.realm = a.realm.clone();
    }
    for u in &a.users {
        let (name, password) = p2p_server::parse_user(u).map_err(|e| format!("--user: {e}"))?;
        t.users.insert(name.to_owned(), password.to_owned());
    }
    if a.auth_secret.is_some() {
        t.auth_secret = a.auth_secret.clone();
    }
    t.allow_peer.extend(a.allow_peer.iter().cloned());
    t.deny_peer.extend(a.deny_peer.iter().cloned());
    if let Some(v) = a.user_quota {
        t.user_quota = v;
    }
    if let Some(v) = a.total_quota {
        t.total_quota = v;
    }
    if let Some(v) = a.turn_reserve {
        t.reserved_percent = v;
    }
    if let Some(v) = a.turn_reserve_below {
        t.reserve_below = v;
    }
    if let Some(v) = a.rest_share {
        t.rest_share_percent = v;
    }
    if let Some(v) = a.auth_failure_burst {
        t.auth_failure_burst = v;
    }
    if let Some(v) = a.auth_failure_rate {
        t.auth_failures_per_minute = v;
    }
    if let Some(v) = a.max_bps {
        t.max_bps = v;
    }
    if let Some(v) = a.max_tcp_connections {
        t.max_tcp_connections = v;
    }
    if a.no_relay_fast_path {
        t.relay_fast_path = false;
    }
    if !a.relay_ip.is_empty() {
        t.relay_ip = a.relay_ip.clone();
    }
    if !a.external_ip.is_empty() {
        t.external_ip = a.external_ip.clone();
    }
    if let Some(v) = a.min_port {
        t.min_port = v;
    }
    if let Some(v) = a.max_port {
        t.max_port = v;
    }
    if let Some(v) = a.nonce_lifetime {
        t.nonce_lifetime_secs = v;
    }
    if a.metrics.is_some() {
        cfg.metrics.listen = a.metrics;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn a_port_that_cannot_be_bound_says_why_and_the_fix() {
        let at = |a: &str| a.parse::<SocketAddr>().expect("address");
        let denied = bind_error(
            "udp",
            at("0.0.0.0:478"),
            &Error::from(ErrorKind::PermissionDenied),
        );
        assert!(denied.contains("CAP_NET_BIND_SERVICE"), "{denied}");
        assert!(
            denied.contains("setcap cap_net_bind_service=+ep"),
            "{denied}"
        );
        assert!(
            denied.ends_with("serve elsewhere with --listen ADDR)"),
            "{denied}"
        );
        let high = bind_error(
            "udp",
            at("0.0.0.0:4780"),
            &Error::from(ErrorKind::PermissionDenied),
        );
        assert!(!high.contains("CAP_NET_BIND_SERVICE"), "{high}");
        let busy = bind_error(
            "signaling",
            at("127.0.0.1:8080"),
            &Error::from(ErrorKind::AddrInUse),
        );
        assert!(
            busy.contains(
                "stop the program that holds it, or serve it elsewhere with --signaling ADDR"
            ),
            "{busy}"
        );
        let foreign = bind_error(
            "metrics",
            at("[2001:db8::1]:9100"),
            &Error::from(ErrorKind::AddrNotAvailable),
        );
        assert!(
            foreign.contains("2001:db8::1 is not an address of this machine"),
            "{foreign}"
        );
        assert!(foreign.contains("[::] for all of them"), "{foreign}");
        assert!(foreign.ends_with("--metrics ADDR)"), "{foreign}");
        let relay = bind_error(
            "relay",
            at("203.0.113.7:0"),
            &Error::from(ErrorKind::AddrNotAvailable),
        );
        assert!(relay.contains("--external-ip 203.0.113.7"), "{relay}");
        assert!(relay.ends_with("--relay-ip IP)"), "{relay}");
    }
}
