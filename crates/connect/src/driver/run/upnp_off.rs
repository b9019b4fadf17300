//! Without the `upnp` feature there is no UPnP IGD search: nothing is
//! mapped, offered or deleted (PCP and NAT-PMP still run in the session).

use std::net::{IpAddr, SocketAddr};

use super::Driver;

/// No mapping can exist.
pub(super) enum UpnpMapping {}

/// The UPnP side of a driver, off.
#[derive(Default)]
pub(super) struct Upnp;

impl Upnp {
    pub(super) fn start(_targets: &[(SocketAddr, IpAddr)]) -> Upnp {
        Upnp
    }

    /// No search is under way.
    pub(super) fn searching(&self) -> bool {
        false
    }

    /// Never ends.
    pub(super) async fn outcome(&mut self) -> Result<UpnpMapping, String> {
        std::future::pending().await
    }

    pub(super) async fn delete(&mut self) {}
}

impl Driver {
    pub(super) async fn on_upnp(&mut self, r: Result<UpnpMapping, String>) {
        if let Ok(m) = r {
            match m {}
        }
    }
}
