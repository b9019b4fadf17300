//! The mDNS socket: where the queries of the negotiation's resolver
//! ([`crate::mdns`]) leave and the LAN's answers arrive.
//!
//! Port 5353 with address and port reuse (shared with a system responder
//! such as avahi, which sets them too) joined to 224.0.0.251 on each local
//! IPv4 interface: a full mDNS querier that hears the multicast answers.
//! Where 5353 cannot be bound, an ephemeral port: a one-shot querier, which
//! responders answer by unicast (RFC 6762 §6.7). IPv4 only: browsers answer
//! for their names on both families, and an IPv6 name's A record (or its
//! AAAA record in the same answer) comes back over IPv4 too.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::mdns::{MDNS_PORT, MDNS_V4};

/// The mDNS socket's address and the interfaces to join the group on.
///
/// The group is joined before the first query, not at bind time: a peer
/// that never meets a `.local` name sends nothing to the LAN, not even an
/// IGMP membership report.
#[derive(Debug)]
pub(super) struct MdnsSocket {
    pub(super) local: SocketAddr,
    interfaces: Vec<Ipv4Addr>,
    joined: bool,
}

impl MdnsSocket {
    /// Before a datagram leaves from `socket`: join the group once.
    pub(super) fn before_send(&mut self, socket: &UdpSocket) {
        if std::mem::replace(&mut self.joined, true) {
            return;
        }
        let IpAddr::V4(group) = MDNS_V4.ip() else {
            return;
        };
        let mut joined = false;
        for ip in &self.interfaces {
            match socket.join_multicast_v4(group, *ip) {
                Ok(()) => joined = true,
                Err(e) => tracing::debug!("mDNS: cannot join {group} on {ip}: {e}"),
            }
        }
        if !joined {
            // The interface of the default route, if any.
            if let Err(e) = socket.join_multicast_v4(group, Ipv4Addr::UNSPECIFIED) {
                tracing::debug!("mDNS: cannot join {group}: {e}");
            }
        }
    }
}

impl MdnsSocket {
    /// For the responder of our own names: join the group now (queries
    /// must be heard before we send anything). Only a socket on the mDNS
    /// port hears them: `false` on an ephemeral one.
    pub(super) fn listen_for_queries(&mut self, socket: &UdpSocket) -> bool {
        if self.local.port() != MDNS_PORT {
            return false;
        }
        self.before_send(socket);
        true
    }
}

/// Binds the mDNS socket; `None` when neither 5353 nor an ephemeral port
/// could be bound (mDNS names are then left out).
pub(super) fn bind(ips: &[IpAddr]) -> Option<(MdnsSocket, Arc<UdpSocket>)> {
    let v4: Vec<Ipv4Addr> = ips
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) if !v4.is_loopback() => Some(*v4),
            _ => None,
        })
        .collect();
    let any = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let socket = match open(any(MDNS_PORT), &v4) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("mDNS: cannot bind port {MDNS_PORT} ({e}); one-shot queries instead");
            match open(any(0), &v4) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("mDNS: no socket ({e}); .local candidates are left out");
                    return None;
                }
            }
        }
    };
    let local = socket.local_addr().ok()?;
    let m = MdnsSocket {
        local,
        interfaces: v4,
        joined: false,
    };
    Some((m, Arc::new(socket)))
}

fn open(at: SocketAddr, interfaces: &[Ipv4Addr]) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    s.set_reuse_port(true)?;
    s.bind(&at.into())?;
    // Queries leave on the first interface (not only along a default
    // route, which a LAN-only host may lack); link-local scope, TTL 255
    // (RFC 6762 §11).
    if let Some(ip) = interfaces.first() {
        let _ = s.set_multicast_if_v4(ip);
    }
    let _ = s.set_multicast_ttl_v4(255);
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}
