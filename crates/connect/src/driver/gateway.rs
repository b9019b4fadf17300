//! The router to ask for port mappings: the gateway of the IPv4 default
//! route (Linux: `/proc/net/route`), and which of our host sockets sit on
//! its interface.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The default route's interface and gateway, from the text of
/// `/proc/net/route` (hexadecimal fields in host byte order: little-endian
/// on the machines Linux runs this on).
pub(super) fn parse_default_route(table: &str) -> Option<(String, Ipv4Addr)> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(iface), Some(dst), Some(gw), Some(flags), Some(mask)) =
            (f.first(), f.get(1), f.get(2), f.get(3), f.get(7))
        else {
            continue;
        };
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        let (Some(dst), Some(gw), Some(flags), Some(mask)) =
            (hex(dst), hex(gw), hex(flags), hex(mask))
        else {
            continue;
        };
        if dst == 0 && mask == 0 && flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY {
            return Some((iface.to_string(), Ipv4Addr::from(gw.to_le_bytes())));
        }
    }
    None
}

/// The (host socket, router) pairs to ask for a mapping: the IPv4 sockets
/// bound on the default route's interface, with its gateway (or
/// `gateway` when given: then every IPv4 socket that is not loopback).
pub(super) fn port_mapping_targets(
    hosts: &[SocketAddr],
    gateway: Option<IpAddr>,
) -> Vec<(SocketAddr, IpAddr)> {
    if let Some(gw) = gateway {
        return hosts
            .iter()
            .filter(|h| h.is_ipv4() == gw.is_ipv4() && !h.ip().is_loopback())
            .map(|h| (*h, gw))
            .collect();
    }
    let Ok(table) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    let Some((iface, gw)) = parse_default_route(&table) else {
        return Vec::new();
    };
    let Ok(addrs) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    let on_iface: Vec<IpAddr> = addrs
        .iter()
        .filter(|a| a.name == iface)
        .map(|a| a.ip())
        .collect();
    hosts
        .iter()
        .filter(|h| on_iface.contains(&h.ip()))
        .map(|h| (*h, IpAddr::V4(gw)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_gives_the_interface_and_gateway() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(
            parse_default_route(table),
            Some(("eth0".to_string(), Ipv4Addr::new(10, 0, 2, 1)))
        );
        // No default route, or garbage: none.
        let no_default =
            "Iface\tDestination\tGateway\n eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert_eq!(parse_default_route(no_default), None);
        assert_eq!(parse_default_route("x\nbad line\n\n"), None);
    }

    #[test]
    fn a_given_gateway_maps_every_ipv4_socket_but_loopback() {
        let hosts: Vec<SocketAddr> = ["10.0.2.2:1000", "127.0.0.1:1001", "[2001:db8::1]:1002"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let gw: IpAddr = "10.0.2.1".parse().unwrap();
        assert_eq!(port_mapping_targets(&hosts, Some(gw)), [(hosts[0], gw)]);
    }
}
