//! `p2p`: the one command of the p2p stack.
//!
//! Subcommands today: `serve` (the daemon: STUN, and TURN with a realm and
//! users), `stun` (one Binding transaction), `nat-type` (RFC 5780
//! discovery) and `turn` (a TURN client run). Later ones (`turn`,
//! `connect`, `demo`) are added as variants of [`Command`] with their own
//! `*Args` struct and `run_*` function, the way these three are.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use p2p_cli::client::{interactive_timers, probe_timers, tcp_binding, tls_binding, udp_binding};
use p2p_cli::natdisc::{discover, render};
use p2p_server::{Config, Server, ServerError};
use tokio::net::UdpSocket;

mod cluster_flags;
mod connect_cmd;
mod demo;
mod transfer;

/// The p2p stack: STUN server, STUN client, NAT behaviour discovery.
#[derive(Debug, Parser)]
#[command(name = "p2p", version, about, propagate_version = true)]
struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG wins.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server daemon (STUN over UDP, TCP and TLS; RFC 5780 with --alt-listen).
    Serve(Box<ServeArgs>),
    /// Send one STUN Binding request and print the mapped address.
    Stun(StunArgs),
    /// Discover the NAT's mapping and filtering behaviour (RFC 5780).
    NatType(NatTypeArgs),
    /// Allocate on a TURN server, relay datagrams to an echo peer, report.
    Turn(TurnArgs),
    /// Be a peer: meet another through a signaling server, connect, chat over stdin/stdout.
    Connect(connect_cmd::ConnectArgs),
    /// Send a file to the peer that runs `p2p receive` (or the page) in the room.
    Send(transfer::SendArgs),
    /// Receive a file from the peer that runs `p2p send` (or the page) in the room.
    Receive(transfer::ReceiveArgs),
    /// Run the whole stack on loopback: the daemon, two peers, a connection, a report.
    Demo(demo::DemoArgs),
}

/// Every flag has a key in the config file (named in brackets).
#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML configuration file; flags override its keys.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
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
    /// Seconds before a silent TCP/TLS connection is closed [stun.tcp_idle_timeout_secs].
    #[arg(long, value_name = "SECS")]
    tcp_idle_timeout: Option<u64>,
    /// Most TCP/TLS connections at once [stun.max_connections].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Address to serve STUN over TLS on; repeatable [tls.listen].
    #[arg(long, value_name = "ADDR")]
    tls_listen: Vec<SocketAddr>,
    /// TLS certificate chain, PEM [tls.cert].
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key, PEM [tls.key].
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log filter such as "info" or "p2p_server=debug" [log.level].
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
    #[command(flatten)]
    turn: TurnServeArgs,
    #[command(flatten)]
    signaling: SignalingServeArgs,
    #[command(flatten)]
    cluster: cluster_flags::ClusterServeArgs,
}

/// Where `p2p serve` serves signaling when neither a flag nor the file says.
const DEFAULT_SIGNALING: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// The signaling server's flags of `p2p serve` (the WebSocket at /ws and the
/// browser page at /, on one TCP port).
#[derive(Debug, Args)]
struct SignalingServeArgs {
    /// Serve signaling and the browser page on ADDR (default 127.0.0.1:8080) [signaling.listen].
    #[arg(long, value_name = "ADDR", conflicts_with = "no_signaling")]
    signaling: Option<SocketAddr>,
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
    /// TURN user NAME:PASSWORD; repeatable [turn.users].
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
    /// Allocations in all, 0 for no limit [turn.total_quota].
    #[arg(long, value_name = "N")]
    total_quota: Option<u32>,
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

#[derive(Debug, Args)]
struct TurnArgs {
    /// The TURN server, IP:PORT.
    server: SocketAddr,
    /// Long-term credentials, NAME:PASSWORD.
    #[arg(long, value_name = "NAME:PASSWORD")]
    user: String,
    /// The echo peer to relay to, UDP (TCP with --tcp-relay); required unless --echo-peer.
    #[arg(long, value_name = "ADDR", required_unless_present = "echo_peer")]
    peer: Option<SocketAddr>,
    /// Start a local echo peer on 127.0.0.1 (UDP, or TCP with --tcp-relay) and relay to it.
    #[arg(long, conflicts_with = "peer")]
    echo_peer: bool,
    /// Reach the server over TCP instead of UDP.
    #[arg(long)]
    tcp: bool,
    /// RFC 6062: allocate a TCP relayed address and relay a TCP connection
    /// to the peer through it (implies --tcp).
    #[arg(long, conflicts_with = "channel")]
    tcp_relay: bool,
    /// Datagrams to relay (echoes over the connection with --tcp-relay).
    #[arg(long, value_name = "N", default_value_t = 5)]
    count: u32,
    /// Bind a channel and send ChannelData (Send indications otherwise).
    #[arg(long)]
    channel: bool,
    /// Bytes per datagram.
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    size: usize,
    /// Seconds each step may take.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    timeout: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StunArgs {
    /// The server, IP:PORT.
    server: SocketAddr,
    /// Use TCP instead of UDP.
    #[arg(long, conflicts_with = "tls")]
    tcp: bool,
    /// Use TLS (needs --ca).
    #[arg(long, requires = "ca")]
    tls: bool,
    /// PEM file of the certificate(s) to trust for --tls.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Name to check the server's certificate against for --tls.
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    server_name: String,
    /// Local address to send from (UDP).
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct NatTypeArgs {
    /// The server (it must have an alternate address), IP:PORT.
    server: SocketAddr,
    /// Local address to test from (default: the route's source IP, a free port).
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn init_logging(verbose: u8, config_level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        0 => config_level.unwrap_or("warn"),
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // sctp-proto logs a peer's ABORT (how aiortc and some browsers close) at
    // ERROR; the session reports what it means. Its own lines from -vv on.
    let directives = if verbose < 2 {
        format!("{level},sctp_proto=off")
    } else {
        level.to_owned()
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("p2p: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async move {
        match cli.command {
            Command::Serve(a) => run_serve(*a, cli.verbose).await,
            Command::Stun(a) => {
                init_logging(cli.verbose, None);
                run_stun(a).await
            }
            Command::NatType(a) => {
                init_logging(cli.verbose, None);
                run_nat_type(a).await
            }
            Command::Connect(a) => {
                init_logging(cli.verbose, None);
                connect_cmd::run(a).await
            }
            Command::Send(a) => {
                init_logging(cli.verbose, None);
                transfer::send(a).await
            }
            Command::Receive(a) => {
                init_logging(cli.verbose, None);
                transfer::receive(a).await
            }
            Command::Demo(a) => {
                init_logging(cli.verbose, None);
                demo::run(a).await
            }
            Command::Turn(a) => {
                init_logging(cli.verbose, None);
                run_turn(a).await
            }
        }
    });
    // A blocking reader of stdin (p2p connect's) would hold the runtime's
    // drop until stdin closes: the work is done, leave without waiting.
    rt.shutdown_background();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        // The shell's convention for a command stopped by SIGINT.
        Err(e) if e.is::<connect_cmd::Interrupted>() => {
            eprintln!("p2p: interrupted");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("p2p: {e}");
            ExitCode::FAILURE
        }
    }
}

type AnyError = Box<dyn std::error::Error>;

fn serve_config(a: &ServeArgs) -> Result<Config, AnyError> {
    let mut cfg = match &a.config {
        Some(path) => Config::from_file(path)?,
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
    apply_turn_flags(&mut cfg, &a.turn)?;
    apply_signaling_flags(&mut cfg, &a.signaling);
    cluster_flags::apply(&mut cfg, &a.cluster);
    cfg.validate()?;
    Ok(cfg)
}

async fn run_serve(a: ServeArgs, verbose: u8) -> Result<(), AnyError> {
    let mut cfg = serve_config(&a)?;
    init_logging(verbose, Some(cfg.log.level.as_deref().unwrap_or("info")));
    // Signaling is on by default. One rule for every port, default or
    // asked for: a port that cannot be bound stops the daemon, with the
    // flag that changes it in the message.
    if cfg.signaling.listen.is_none() && !a.signaling.no_signaling {
        cfg.signaling.listen = Some(DEFAULT_SIGNALING);
    }
    let server = match Server::bind(&cfg).await {
        Err(ServerError::Bind {
            transport: "signaling",
            addr,
            source,
        }) => {
            return Err(format!(
                "cannot bind signaling {addr}: {source} (serve it elsewhere with --signaling ADDR, or not at all with --no-signaling)"
            )
            .into())
        }
        r => r?,
    };
    let addrs = server.local_addrs().clone();
    let join = |v: &[SocketAddr]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Said on stdout, so that scripts and people see it without -v.
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
    if let Some(s) = addrs.signaling {
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
    }
    let stats = server.run(shutdown_signal()).await;
    println!("p2p serve: stopped; {stats}");
    Ok(())
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

async fn run_stun(a: StunArgs) -> Result<(), AnyError> {
    let timers = interactive_timers();
    let (transport, r) = if a.tcp {
        ("tcp", tcp_binding(a.server, timers).await?)
    } else if a.tls {
        let ca = a.ca.as_ref().ok_or("--tls needs --ca")?;
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        (
            "tls",
            tls_binding(a.server, &a.server_name, &pem, timers).await?,
        )
    } else {
        let bind = a.bind.unwrap_or_else(|| {
            if a.server.is_ipv4() {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                SocketAddr::from(([0u16; 8], 0))
            }
        });
        let sock = UdpSocket::bind(bind).await?;
        let r = udp_binding(&sock, a.server, None, timers)
            .await?
            .ok_or_else(|| format!("no answer from {}", a.server))?;
        ("udp", r)
    };
    if let Some(code) = r.error {
        return Err(format!("{} answered with error {code}", a.server).into());
    }
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["transport"] = transport.into();
        println!("{v}");
    } else {
        let mapped = r.mapped.map_or("(none)".into(), |m| m.to_string());
        println!("mapped address: {mapped}");
        println!(
            "software:       {}",
            r.software.as_deref().unwrap_or("(none)")
        );
        println!("rtt:            {:.3} ms", r.rtt.as_secs_f64() * 1000.0);
        if let Some(o) = r.other {
            println!("other address:  {o}");
        }
    }
    Ok(())
}

fn apply_signaling_flags(cfg: &mut Config, a: &SignalingServeArgs) {
    let s = &mut cfg.signaling;
    if a.no_signaling {
        s.listen = None;
    } else if a.signaling.is_some() {
        s.listen = a.signaling;
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
        let (name, password) = u
            .split_once(':')
            .ok_or_else(|| format!("--user {u}: expected NAME:PASSWORD"))?;
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

async fn run_turn(a: TurnArgs) -> Result<(), AnyError> {
    let (username, password) = a
        .user
        .split_once(':')
        .ok_or("--user: expected NAME:PASSWORD")?;
    let mut echo = None;
    let peer = match (a.peer, a.echo_peer) {
        (Some(p), _) => p,
        (None, _) => {
            let here = SocketAddr::from(([127, 0, 0, 1], 0));
            let (addr, task) = if a.tcp_relay {
                p2p_cli::turn::tcp_echo_peer(here).await?
            } else {
                p2p_cli::turn::echo_peer(here).await?
            };
            echo = Some(task);
            addr
        }
    };
    let opts = p2p_cli::turn::TurnOptions {
        server: a.server,
        username: username.to_owned(),
        password: password.to_owned(),
        peer,
        tcp: a.tcp,
        tcp_relay: a.tcp_relay,
        count: a.count,
        channel: a.channel,
        size: a.size,
        timeout: std::time::Duration::from_secs(a.timeout.max(1)),
    };
    let r = p2p_cli::turn::run(&opts).await;
    if let Some(t) = echo {
        t.abort();
    }
    let r = r?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", p2p_cli::turn::render(&r));
    }
    if r.echoed < r.sent {
        return Err(format!("{} of {} datagrams came back", r.echoed, r.sent).into());
    }
    Ok(())
}

async fn run_nat_type(a: NatTypeArgs) -> Result<(), AnyError> {
    let report = discover(a.server, a.bind, probe_timers()).await?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}
