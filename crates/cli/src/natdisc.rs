//! NAT behaviour discovery (RFC 5780 §4), named the RFC 4787 way: a mapping
//! behaviour and a filtering behaviour, plus hairpinning and port
//! preservation.

use std::net::{IpAddr, SocketAddr};

use p2p_stun::attr::ChangeRequest;
use p2p_stun::{Message, MessageClass, TransactionConfig};
use tokio::net::UdpSocket;

use crate::client::{binding_request, udp_binding, BindingResponse, ClientError};

/// A mapping or filtering behaviour (RFC 4787 §4.1, §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// The same for every remote endpoint.
    EndpointIndependent,
    /// Depends on the remote IP address.
    AddressDependent,
    /// Depends on the remote IP address and port.
    AddressAndPortDependent,
}

impl std::fmt::Display for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Behaviour::EndpointIndependent => "endpoint-independent",
            Behaviour::AddressDependent => "address-dependent",
            Behaviour::AddressAndPortDependent => "address-and-port-dependent",
        })
    }
}

/// What the discovery found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NatReport {
    /// The server asked (primary address).
    pub server: SocketAddr,
    /// Its OTHER-ADDRESS.
    pub other_address: SocketAddr,
    /// The server's SOFTWARE.
    pub software: Option<String>,
    /// The local address of the mapping tests' socket.
    pub local: SocketAddr,
    /// Its mapped address (test I).
    pub mapped: SocketAddr,
    /// Whether there is a NAT at all (the mapped address differs from the local one).
    pub nat: bool,
    /// Mapping behaviour (RFC 5780 §4.3).
    pub mapping: Behaviour,
    /// Filtering behaviour (RFC 5780 §4.4).
    pub filtering: Behaviour,
    /// Whether a packet sent to another socket's mapped address came back in
    /// (RFC 5780 §4.5).
    pub hairpinning: bool,
    /// Whether the mapped port equals the local port.
    pub port_preserved: bool,
}

/// Why discovery could not finish.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Test I got no answer: UDP is blocked or the server is down.
    #[error("no answer from {0}: UDP blocked or server down")]
    NoAnswer(SocketAddr),
    /// The server answered with an error code.
    #[error("the server answered with error {0}")]
    ErrorResponse(u16),
    /// The response has no mapped address.
    #[error("the response carries no mapped address")]
    NoMappedAddress,
    /// The server gave no OTHER-ADDRESS: it does not support RFC 5780.
    #[error("the server gave no OTHER-ADDRESS: it does not do RFC 5780 (start it with an alternate address)")]
    NoOtherAddress,
    /// The server's alternate address did not answer.
    #[error("the server's alternate address {0} does not answer")]
    AlternateSilent(SocketAddr),
    /// A CHANGE-REQUEST was answered from the wrong address.
    #[error("CHANGE-REQUEST answered from {got}, expected {want}: the server ignores it")]
    ChangeIgnored {
        /// Where it came from.
        got: SocketAddr,
        /// Where it should have come from.
        want: SocketAddr,
    },
    /// A client error.
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl From<std::io::Error> for DiscoveryError {
    fn from(e: std::io::Error) -> Self {
        DiscoveryError::Client(ClientError::Io(e))
    }
}

/// The local IP the system routes to `server` from.
pub fn route_ip(server: SocketAddr) -> std::io::Result<IpAddr> {
    let any: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = std::net::UdpSocket::bind(any)?;
    s.connect(server)?;
    Ok(s.local_addr()?.ip())
}

fn mapped_of(r: &BindingResponse) -> Result<SocketAddr, DiscoveryError> {
    if let Some(code) = r.error {
        return Err(DiscoveryError::ErrorResponse(code));
    }
    r.mapped.ok_or(DiscoveryError::NoMappedAddress)
}

/// Run the RFC 5780 tests against `server` (which must have an alternate
/// address). `bind` is the local address to test from (default: the IP the
/// system routes to the server from, a free port). Bounded: each
/// transaction ends after `timers` allow (about 0.7 s with
/// [`crate::client::probe_timers`]), and at most nine run.
pub async fn discover(
    server: SocketAddr,
    bind: Option<SocketAddr>,
    timers: TransactionConfig,
) -> Result<NatReport, DiscoveryError> {
    let local_ip = match bind {
        Some(b) if !b.ip().is_unspecified() => b.ip(),
        _ => route_ip(server)?,
    };
    let port = bind.map_or(0, |b| b.port());
    let a = UdpSocket::bind(SocketAddr::new(local_ip, port)).await?;
    let local = a.local_addr()?;

    // Mapping, test I: the primary address.
    let r1 = udp_binding(&a, server, None, timers)
        .await?
        .ok_or(DiscoveryError::NoAnswer(server))?;
    let m1 = mapped_of(&r1)?;
    let other = r1.other.ok_or(DiscoveryError::NoOtherAddress)?;
    // Test II: the alternate IP, the primary port.
    let t2 = SocketAddr::new(other.ip(), server.port());
    let r2 = udp_binding(&a, t2, None, timers)
        .await?
        .ok_or(DiscoveryError::AlternateSilent(t2))?;
    let m2 = mapped_of(&r2)?;
    let mapping = if m2 == m1 {
        Behaviour::EndpointIndependent
    } else {
        // Test III: the alternate IP and port.
        let r3 = udp_binding(&a, other, None, timers)
            .await?
            .ok_or(DiscoveryError::AlternateSilent(other))?;
        if mapped_of(&r3)? == m2 {
            Behaviour::AddressDependent
        } else {
            Behaviour::AddressAndPortDependent
        }
    };

    // Filtering, from a fresh socket that has talked to the primary address
    // only (the mapping tests opened the filter of `a` to the alternates).
    let b = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    let rb = udp_binding(&b, server, None, timers)
        .await?
        .ok_or(DiscoveryError::NoAnswer(server))?;
    let mb = mapped_of(&rb)?;
    let both = ChangeRequest {
        change_ip: true,
        change_port: true,
    };
    let filtering = match udp_binding(&b, server, Some(both), timers).await? {
        Some(r) => {
            check_origin(&r, other)?;
            Behaviour::EndpointIndependent
        }
        None => {
            let port_only = ChangeRequest {
                change_ip: false,
                change_port: true,
            };
            match udp_binding(&b, server, Some(port_only), timers).await? {
                Some(r) => {
                    check_origin(&r, SocketAddr::new(server.ip(), other.port()))?;
                    Behaviour::AddressDependent
                }
                None => Behaviour::AddressAndPortDependent,
            }
        }
    };

    let hairpinning = hairpin(&a, &b, mb, timers).await?;
    Ok(NatReport {
        server,
        other_address: other,
        software: r1.software,
        local,
        mapped: m1,
        nat: m1 != local,
        mapping,
        filtering,
        hairpinning,
        port_preserved: m1.port() == local.port(),
    })
}

fn check_origin(r: &BindingResponse, want: SocketAddr) -> Result<(), DiscoveryError> {
    if r.from != want {
        return Err(DiscoveryError::ChangeIgnored { got: r.from, want });
    }
    Ok(())
}

/// Send a request from `a` to `b`'s mapped address `mb`; hairpinning works
/// if `b` receives it. Sent as often as the timers' transmits, waited for
/// as long as a transaction would.
async fn hairpin(
    a: &UdpSocket,
    b: &UdpSocket,
    mb: SocketAddr,
    timers: TransactionConfig,
) -> Result<bool, DiscoveryError> {
    let (tid, req) = binding_request(None)?;
    let mut buf = [0u8; 2048];
    let mut rto = timers.rto;
    for i in 0..timers.max_transmits.max(1) {
        let _ = a.send_to(&req, mb).await;
        let wait = if i + 1 == timers.max_transmits {
            timers.rto * timers.last_wait_multiplier
        } else {
            rto
        };
        rto *= 2;
        let until = tokio::time::Instant::now() + wait;
        loop {
            let r = tokio::time::timeout_at(until, b.recv_from(&mut buf)).await;
            let Ok(r) = r else { break };
            let Ok((n, _)) = r else { continue };
            if let Ok(m) = Message::decode(&buf[..n]) {
                if m.transaction_id() == tid && m.typ().class == MessageClass::Request {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// The report as text for people.
pub fn render(r: &NatReport) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<16}{v}\n"));
    line(
        "server",
        format!("{} (other address {})", r.server, r.other_address),
    );
    if let Some(sw) = &r.software {
        line("software", sw.clone());
    }
    line("local address", r.local.to_string());
    line("mapped address", r.mapped.to_string());
    line(
        "NAT",
        if r.nat {
            "yes".into()
        } else {
            "no (the mapped address is the local address)".into()
        },
    );
    line("mapping", r.mapping.to_string());
    line("filtering", r.filtering.to_string());
    line("hairpinning", yes(r.hairpinning).into());
    line("port preserved", yes(r.port_preserved).into());
    s
}
