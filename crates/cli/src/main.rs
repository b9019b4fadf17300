//! `p2p`: the one command of the p2p stack.
//!
//! Subcommands: `serve` (the daemon: STUN, TURN, signaling with a browser
//! page, metrics), `stun` (one Binding transaction), `nat-type` (RFC 5780
//! discovery), `turn` (a TURN client run), `connect` (a peer that chats
//! over a data channel), `demo` (all of it on loopback), and
//! `completions`/`man` (generated from this definition). Each is a variant
//! of [`Command`] with its own `*Args` struct and `run_*` function.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use p2p_cli::addr::{Server as ServerAddr, Via};
use p2p_cli::client::{
    interactive_timers, probe_timers, tcp_binding, tls_binding, udp_binding, ClientError,
};
use p2p_cli::natdisc::{discover, render};
use p2p_server::{LogFormat, DEFAULT_PORT, DEFAULT_TLS_PORT};
use tokio::net::UdpSocket;

mod cluster_flags;
mod connect_cmd;
mod demo;
mod docs_cmd;
mod logging;
mod serve_cmd;
mod transfer;

use serve_cmd::shutdown_signal;

const EXAMPLES: &str = "\
Examples:
  p2p serve                                   # STUN and signaling with a browser page on loopback
  p2p serve --realm example.org --user alice:secret --listen 0.0.0.0:3478 --relay-ip 203.0.113.7
  p2p stun stun.l.google.com:19302            # your address as a STUN server sees it
  p2p nat-type 127.0.0.1                      # RFC 5780 mapping and filtering behaviour
  p2p turn turn:example.org --user alice:secret --echo-peer
  p2p connect --signaling ws://127.0.0.1:8080/ws --room demo
  p2p demo                                    # the whole stack on loopback

`p2p help <command>` (or `--help` after it) shows each command's options and examples.";

/// The p2p stack: a STUN/TURN server with signaling and metrics, and the
/// clients that test it and connect two peers through NATs.
#[derive(Debug, Parser)]
#[command(
    name = "p2p",
    version,
    about = "The p2p stack: a STUN and TURN server daemon with WebSocket signaling, a browser page and Prometheus metrics (p2p serve), and the clients to test it and to connect two peers through NATs over an encrypted data channel",
    after_help = EXAMPLES,
    propagate_version = true
)]
struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG wins.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: STUN and TURN (UDP, TCP, TLS; RFC 5780 with --alt-listen), WebSocket signaling with a browser page, Prometheus metrics.
    Serve(Box<serve_cmd::ServeArgs>),
    /// Send one STUN Binding request and print the mapped address.
    Stun(StunArgs),
    /// Discover the NAT's mapping and filtering behaviour (RFC 5780).
    NatType(NatTypeArgs),
    /// Allocate on a TURN server, relay datagrams to an echo peer, report.
    Turn(TurnArgs),
    /// Be a peer: meet another through a signaling server, connect, chat over stdin/stdout.
    #[command(after_help = connect_cmd::EXAMPLES)]
    Connect(connect_cmd::ConnectArgs),
    /// Send a file to the peer that runs `p2p receive` (or the page) in the room.
    #[command(after_help = transfer::SEND_EXAMPLES)]
    Send(transfer::SendArgs),
    /// Receive a file from the peer that runs `p2p send` (or the page) in the room.
    #[command(after_help = transfer::RECEIVE_EXAMPLES)]
    Receive(transfer::ReceiveArgs),
    /// Run the whole stack on loopback: the daemon, two peers, a connection, a report.
    #[command(after_help = demo::EXAMPLES)]
    Demo(demo::DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = docs_cmd::COMPLETION_EXAMPLES)]
    Completions(docs_cmd::CompletionsArgs),
    /// Write the man pages (p2p.1 and one per command), generated from this definition.
    #[command(after_help = docs_cmd::MAN_EXAMPLES)]
    Man(docs_cmd::ManArgs),
}

const TURN_EXAMPLES: &str = "\
Examples:
  # Relay 5 datagrams through a local daemon to an echo peer it starts:
  p2p turn 127.0.0.1 --user alice:secret --echo-peer
  # Over TCP, with a channel, through a named server:
  p2p turn turn:turn.example.org?transport=tcp --user alice:secret --peer 198.51.100.9:7 --channel
  # RFC 6062: a TCP relayed connection:
  p2p turn 127.0.0.1:3478 --user alice:secret --echo-peer --tcp-relay --json

A refused peer (403) is the server's peer policy: p2p serve refuses loopback
and private addresses unless --allow-peer opens them.";

#[derive(Debug, Args)]
#[command(after_help = TURN_EXAMPLES)]
struct TurnArgs {
    /// The TURN server: HOST[:PORT], IP[:PORT] or turn:HOST[:PORT][?transport=tcp]; port 3478 by default.
    server: ServerAddr,
    /// Long-term credentials, NAME:PASSWORD.
    #[arg(long, value_name = "NAME:PASSWORD")]
    user: String,
    /// The echo peer to relay to, UDP (TCP with --tcp-relay); required unless --echo-peer.
    #[arg(long, value_name = "ADDR", required_unless_present = "echo_peer")]
    peer: Option<SocketAddr>,
    /// Start a local echo peer on 127.0.0.1 (UDP, or TCP with --tcp-relay) and relay to it.
    #[arg(long, conflicts_with = "peer")]
    echo_peer: bool,
    /// Reach the server over TCP instead of UDP (as turn:…?transport=tcp says).
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

const STUN_EXAMPLES: &str = "\
Examples:
  p2p stun stun.l.google.com:19302
  p2p stun 127.0.0.1                          # port 3478
  p2p stun stun:stun.example.org --json
  p2p stun 127.0.0.1 --tcp
  p2p stun localhost --tls --ca cert.pem      # port 5349; the name checked is the host's";

#[derive(Debug, Args)]
#[command(after_help = STUN_EXAMPLES)]
struct StunArgs {
    /// The server: HOST[:PORT], IP[:PORT], stun:HOST[:PORT] or stuns:HOST[:PORT]; port 3478 (5349 over TLS) by default.
    server: ServerAddr,
    /// Use TCP instead of UDP.
    #[arg(long, conflicts_with = "tls")]
    tcp: bool,
    /// Use TLS (as stuns: says; needs --ca).
    #[arg(long)]
    tls: bool,
    /// PEM file of the certificate(s) to trust for TLS.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Name to check the server's certificate against (default: the host name, or localhost for an IP).
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// Local address to send from (UDP).
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

const NAT_TYPE_EXAMPLES: &str = "\
Examples:
  # Against a daemon with an alternate address (p2p serve --alt-listen):
  p2p nat-type stun.example.org
  p2p nat-type 198.51.100.1:3478 --json";

#[derive(Debug, Args)]
#[command(after_help = NAT_TYPE_EXAMPLES)]
struct NatTypeArgs {
    /// The server (it must have an alternate address): HOST[:PORT], IP[:PORT] or stun:HOST[:PORT]; port 3478 by default.
    server: ServerAddr,
    /// Local address to test from (default: the route's source IP, a free port).
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The `clap` definition of `p2p` (for completions and man pages).
pub(crate) fn command() -> clap::Command {
    Cli::command()
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
        let log = |v| logging::init(v, None, "warn", None, LogFormat::Text).map(|_| ());
        match cli.command {
            Command::Serve(a) => serve_cmd::run(*a, cli.verbose).await,
            Command::Stun(a) => {
                log(cli.verbose)?;
                run_stun(a).await
            }
            Command::NatType(a) => {
                log(cli.verbose)?;
                run_nat_type(a).await
            }
            Command::Connect(a) => {
                log(cli.verbose)?;
                connect_cmd::run(a).await
            }
            Command::Send(a) => {
                log(cli.verbose)?;
                transfer::send(a).await
            }
            Command::Receive(a) => {
                log(cli.verbose)?;
                transfer::receive(a).await
            }
            Command::Demo(a) => {
                log(cli.verbose)?;
                demo::run(a).await
            }
            Command::Turn(a) => {
                log(cli.verbose)?;
                run_turn(a).await
            }
            Command::Completions(a) => docs_cmd::completions(a),
            Command::Man(a) => docs_cmd::man(a),
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
            eprintln!("p2p: {}", explain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

type AnyError = Box<dyn std::error::Error>;

/// The error's message, with what to do when it is one that people trip
/// over: a CA certificate used as a server's certificate, a certificate
/// signed by a CA the command does not trust.
fn explain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut chain = String::new();
    let mut source = e.source();
    while let Some(s) = source {
        chain.push_str(&s.to_string());
        source = s.source();
    }
    if (text.contains("CaUsedAsEndEntity") || chain.contains("CaUsedAsEndEntity"))
        && !text.contains("leaf certificate")
    {
        text.push_str(
            "\n  the server's certificate is a CA certificate (basicConstraints CA:TRUE, what `openssl req -x509` makes by default), which rustls refuses as a server's certificate: give the server a leaf certificate, one signed by that CA or a self-signed one made with `-addext basicConstraints=critical,CA:FALSE -addext subjectAltName=DNS:HOST`",
        );
    }
    if (text.contains("UnknownIssuer") || chain.contains("UnknownIssuer"))
        && !text.contains("--tls-ca")
    {
        text.push_str(
            "\n  the server's certificate is not signed by a CA this machine trusts (a private or self-signed CA): give that CA's certificate, PEM, with --tls-ca FILE (p2p stun: --ca FILE), or put it in SSL_CERT_FILE",
        );
    }
    text
}

/// "stun.example.org:3478 (203.0.113.5:3478)", or the address alone when
/// that is what was written.
fn named(server: &ServerAddr, addr: SocketAddr) -> String {
    let written = server.to_string();
    if written == addr.to_string() {
        written
    } else {
        format!("{written} ({addr})")
    }
}

async fn run_stun(a: StunArgs) -> Result<(), AnyError> {
    let timers = interactive_timers();
    let tls = a.tls || a.server.via == Via::Tls;
    if a.server.via == Via::Tcp {
        return Err("a turn:…?transport=tcp URI is not a STUN server; use --tcp".into());
    }
    let server = a
        .server
        .resolve(if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT })
        .await?;
    let name = named(&a.server, server);
    let ctx = |transport: &str| {
        let name = name.clone();
        let transport = transport.to_owned();
        move |e: ClientError| -> AnyError {
            match e {
                ClientError::Timeout(_) => format!("no answer from {name} over {transport}").into(),
                ClientError::Io(e) => format!("{name} over {transport}: {e}").into(),
                other => format!("{name} over {transport}: {other}").into(),
            }
        }
    };
    let (transport, r) = if a.tcp {
        (
            "tcp",
            tcp_binding(server, timers).await.map_err(ctx("tcp"))?,
        )
    } else if tls {
        let ca =
            a.ca.as_ref()
                .ok_or("TLS needs --ca FILE: the certificate(s) to trust, PEM")?;
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let server_name = a.server_name.clone().unwrap_or_else(|| {
            if a.server.host.parse::<std::net::IpAddr>().is_ok() {
                "localhost".to_owned()
            } else {
                a.server.host.clone()
            }
        });
        (
            "tls",
            tls_binding(server, &server_name, &pem, timers)
                .await
                .map_err(ctx("tls"))?,
        )
    } else {
        let bind = a.bind.unwrap_or_else(|| {
            if server.is_ipv4() {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                SocketAddr::from(([0u16; 8], 0))
            }
        });
        let sock = UdpSocket::bind(bind)
            .await
            .map_err(|e| format!("cannot bind {bind}: {e}"))?;
        let r = udp_binding(&sock, server, None, timers)
            .await
            .map_err(ctx("udp"))?
            .ok_or_else(|| format!("no answer from {name} over udp"))?;
        ("udp", r)
    };
    if let Some(code) = r.error {
        return Err(format!("{name} answered with error {code}").into());
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

async fn run_turn(a: TurnArgs) -> Result<(), AnyError> {
    let (username, password) = a
        .user
        .split_once(':')
        .ok_or("--user: expected NAME:PASSWORD")?;
    if a.server.via == Via::Tls {
        return Err("p2p turn does not speak TLS (turns:): use turn:HOST?transport=tcp".into());
    }
    let server = a.server.resolve(DEFAULT_PORT).await?;
    let name = named(&a.server, server);
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
        server,
        username: username.to_owned(),
        password: password.to_owned(),
        peer,
        tcp: a.tcp || a.server.via == Via::Tcp,
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
    let r = r.map_err(|e| format!("TURN server {name}: {e}"))?;
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
    if a.server.via != Via::Default {
        return Err(
            "RFC 5780 discovery runs over UDP: give HOST[:PORT] or stun:HOST[:PORT]".into(),
        );
    }
    let server = a.server.resolve(DEFAULT_PORT).await?;
    let report = discover(server, a.bind, probe_timers())
        .await
        .map_err(|e| -> AnyError {
            let m = e.to_string();
            if m.contains(&server.to_string()) {
                m.into()
            } else {
                format!("{}: {m}", named(&a.server, server)).into()
            }
        })?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}
