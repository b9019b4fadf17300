//! UPnP IGD port mapping (feature `upnp`): SSDP discovery of the router's
//! Internet Gateway Device and its SOAP `AddPortMapping` /
//! `DeletePortMapping`, with igd-next (why that crate: docs/ARCHITECTURE.md).
//! It runs beside the session's PCP/NAT-PMP client: whichever maps the
//! socket first is offered; a UPnP mapping of a socket PCP already mapped
//! is deleted at once. The mapping is asked for two hours and not renewed
//! (a session rarely lives that long; docs/compliance.md); it is deleted
//! when the driver shuts down.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use igd_next::aio::tokio::{search_gateway, Tokio};
use igd_next::aio::Gateway;
use igd_next::{PortMappingProtocol, SearchOptions};
use tokio::sync::oneshot;

use super::Driver;

/// How long discovery may take (SSDP search and description fetch).
const SEARCH_TIMEOUT: Duration = Duration::from_secs(2);
/// The lease asked for, in seconds.
const LEASE_SECS: u32 = 7200;
/// How long a deletion may take when the driver shuts down.
const DELETE_TIMEOUT: Duration = Duration::from_secs(1);

/// A mapping an IGD granted.
pub(super) struct UpnpMapping {
    gateway: Gateway<Tokio>,
    internal: SocketAddr,
    external: SocketAddr,
}

/// The UPnP side of one driver: the search under way, then the mapping held.
#[derive(Default)]
pub(super) struct Upnp {
    pending: Option<oneshot::Receiver<Result<UpnpMapping, String>>>,
    held: Option<UpnpMapping>,
}

impl Upnp {
    /// Start mapping the first socket of `targets` (those the driver would
    /// map with PCP) in the background; nothing when there is none.
    pub(super) fn start(targets: &[(SocketAddr, IpAddr)]) -> Upnp {
        let Some((host, _)) = targets.first().copied() else {
            return Upnp::default();
        };
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let _ = tx.send(map(host).await);
        });
        Upnp {
            pending: Some(rx),
            held: None,
        }
    }

    /// A search is under way (gathering waits for its outcome, 1 s at
    /// most: `Session::no_port_mapping`).
    pub(super) fn searching(&self) -> bool {
        self.pending.is_some()
    }

    /// The search's outcome, once (pending forever after, or without one).
    pub(super) async fn outcome(&mut self) -> Result<UpnpMapping, String> {
        match self.pending.as_mut() {
            Some(rx) => {
                let r = rx
                    .await
                    .unwrap_or_else(|_| Err("the UPnP task ended".into()));
                self.pending = None;
                r
            }
            None => std::future::pending().await,
        }
    }

    /// Delete the mapping held (bounded by [`DELETE_TIMEOUT`]).
    pub(super) async fn delete(&mut self) {
        if let Some(m) = self.held.take() {
            let del = m
                .gateway
                .remove_port(PortMappingProtocol::UDP, m.external.port());
            match tokio::time::timeout(DELETE_TIMEOUT, del).await {
                Ok(Ok(())) => tracing::debug!("upnp: mapping {} deleted", m.external),
                Ok(Err(e)) => tracing::debug!("upnp: deleting {}: {e}", m.external),
                Err(_) => tracing::debug!("upnp: deleting {}: no answer", m.external),
            }
        }
    }
}

/// Find the IGD from `host`'s address and have it forward a port to
/// `host` (the same port number first, then any).
async fn map(host: SocketAddr) -> Result<UpnpMapping, String> {
    let options = SearchOptions {
        bind_addr: SocketAddr::new(host.ip(), 0),
        timeout: Some(SEARCH_TIMEOUT),
        single_search_timeout: Some(SEARCH_TIMEOUT),
        ..SearchOptions::default()
    };
    let gateway = search_gateway(options)
        .await
        .map_err(|e| format!("no UPnP gateway: {e}"))?;
    let ip = gateway
        .get_external_ip()
        .await
        .map_err(|e| format!("UPnP GetExternalIPAddress: {e}"))?;
    let udp = PortMappingProtocol::UDP;
    let port = match gateway
        .add_port(udp, host.port(), host, LEASE_SECS, "p2p connect")
        .await
    {
        Ok(()) => host.port(),
        Err(_) => gateway
            .add_any_port(udp, host, LEASE_SECS, "p2p connect")
            .await
            .map_err(|e| format!("UPnP AddPortMapping: {e}"))?,
    };
    Ok(UpnpMapping {
        gateway,
        internal: host,
        external: SocketAddr::new(ip, port),
    })
}

impl Driver {
    /// The UPnP search ended: offer its mapping, unless PCP/NAT-PMP mapped
    /// the socket already (then the UPnP one goes).
    pub(super) async fn on_upnp(&mut self, r: Result<UpnpMapping, String>) {
        let m = match r {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("upnp: {e}");
                self.negotiation
                    .session_mut()
                    .no_port_mapping(Instant::now());
                return;
            }
        };
        let session = self.negotiation.session_mut();
        if session.port_mapping(m.internal).is_some() {
            session.no_port_mapping(Instant::now());
            self.upnp.held = Some(m);
            self.upnp.delete().await;
            return;
        }
        let gw = m.gateway.addr.ip();
        tracing::debug!("upnp: {} forwards to {}", m.external, m.internal);
        session.add_port_mapping(Instant::now(), m.internal, m.external, gw);
        self.upnp.held = Some(m);
    }
}
