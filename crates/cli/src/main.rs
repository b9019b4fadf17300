//! `p2p`: the one command of the p2p stack.
//!
//! Subcommands today: `serve` (the daemon), `stun` (one Binding
//! transaction) and `nat-type` (RFC 5780 discovery). Later ones (`turn`,
//! `connect`, `demo`) are added as variants of [`Command`] with their own
//! `*Args` struct and `run_*` function, the way these three are.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use p2p_cli::client::{interactive_timers, probe_timers, tcp_binding, tls_binding, udp_binding};
use p2p_cli::natdisc::{discover, render};
use p2p_server::{Config, Server};
use tokio::net::UdpSocket;

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
    Serve(ServeArgs),
    /// Send one STUN Binding request and print the mapped address.
    Stun(StunArgs),
    /// Discover the NAT's mapping and filtering behaviour (RFC 5780).
    NatType(NatTypeArgs),
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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
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
            Command::Serve(a) => run_serve(a, cli.verbose).await,
            Command::Stun(a) => {
                init_logging(cli.verbose, None);
                run_stun(a).await
            }
            Command::NatType(a) => {
                init_logging(cli.verbose, None);
                run_nat_type(a).await
            }
        }
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
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
    cfg.validate()?;
    Ok(cfg)
}

async fn run_serve(a: ServeArgs, verbose: u8) -> Result<(), AnyError> {
    let cfg = serve_config(&a)?;
    init_logging(verbose, Some(cfg.log.level.as_deref().unwrap_or("info")));
    let server = Server::bind(&cfg).await?;
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
    let stats = server.run(shutdown_signal()).await;
    println!("p2p serve: stopped; {stats}");
    Ok(())
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
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

async fn run_nat_type(a: NatTypeArgs) -> Result<(), AnyError> {
    let report = discover(a.server, a.bind, probe_timers()).await?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}
