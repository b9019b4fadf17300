//! The channel routes a driver may relay itself (`ServerConfig::export_routes`,
//! `TurnServer::poll_route`): published on ChannelBind and on every refresh
//! that moves their expiry, withdrawn when the allocation ends or the channel
//! is forgotten, and never published where the server must look at each
//! packet (bandwidth cap, TCP allocation or client, relay to relay).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use p2p_turn::*;

#[allow(non_snake_case)]
fn SECS(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn exporting() -> ServerConfig {
    {
        let mut c = server_config();
        c.export_routes = true;
        c
    }
}

/// The route updates since the last call, after moving every packet.
fn drain(net: &mut Net) -> Vec<RouteUpdate> {
    net.step();
    std::mem::take(&mut net.routes)
}

fn ups(updates: &[RouteUpdate]) -> Vec<ChannelRoute> {
    updates
        .iter()
        .filter_map(|u| match u {
            RouteUpdate::Up(r) => Some(*r),
            _ => None,
        })
        .collect()
}

fn downs(updates: &[RouteUpdate]) -> Vec<ChannelRoute> {
    updates
        .iter()
        .filter_map(|u| match u {
            RouteUpdate::Down(r) => Some(*r),
            _ => None,
        })
        .collect()
}

#[test]
fn a_bound_channel_is_published_refreshed_and_withdrawn_on_delete() {
    let mut net = Net::new(exporting(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    let relayed = net.relayed(c).unwrap();
    assert_eq!(drain(&mut net), [], "no channel, no route");

    let bound_at = net.now;
    let ch = net.clients[c].bind_channel(net.now, peer()).unwrap();
    net.step();
    let u = drain(&mut net);
    let expected = ChannelRoute {
        five_tuple: FiveTuple::new(Transport::Udp, listen(), net.locals[c]),
        channel: ch,
        peer: peer(),
        relayed,
        // The permission (300 s) runs out first.
        until: bound_at + SECS(300),
    };
    assert_eq!(u, [RouteUpdate::Up(expected)]);

    // The client refreshes its permission (every 240 s): the route moves.
    net.run_for(SECS(250));
    let u = drain(&mut net);
    let up = ups(&u);
    assert!(!up.is_empty(), "a refresh republishes: {u:?}");
    let last = up.last().unwrap();
    assert_eq!(last.channel, ch);
    assert!(last.until > expected.until, "{last:?}");
    assert_eq!(downs(&u), []);

    // Refresh with lifetime 0: the route goes.
    net.clients[c].close(net.now).unwrap();
    net.step();
    let u = drain(&mut net);
    assert_eq!(downs(&u).len(), 1, "{u:?}");
    assert_eq!(downs(&u)[0].channel, ch);
    assert_eq!(downs(&u)[0].peer, peer());
    assert_eq!(downs(&u)[0].relayed, relayed);
}

#[test]
fn a_route_ends_no_later_than_its_allocation() {
    let short = {
        let mut c = exporting();
        c.default_lifetime = SECS(60);
        c
    };
    let mut net = Net::new(short, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    let at = net.now;
    net.clients[c].bind_channel(net.now, peer()).unwrap();
    net.step();
    let up = ups(&drain(&mut net));
    assert_eq!(up.len(), 1);
    assert!(up[0].until <= at + SECS(60), "{:?}", up[0]);
}

#[test]
fn an_expired_channel_is_withdrawn_once_forgotten() {
    let mut net = Net::new(exporting(), users());
    let mut cfg = net.client_config(0, "alice", "wonderland");
    cfg.permission_refresh = SECS(100_000); // the client never refreshes
    let c = net.allocated_client(cfg);
    net.clients[c].bind_channel(net.now, peer()).unwrap();
    net.step();
    assert_eq!(ups(&drain(&mut net)).len(), 1);
    // The channel lives 600 s and its number is kept 300 s more.
    net.run_for(SECS(890));
    assert_eq!(downs(&drain(&mut net)), []);
    net.run_for(SECS(20));
    let u = drain(&mut net);
    assert_eq!(downs(&u).len(), 1, "{u:?}");
}

#[test]
fn an_expired_allocation_withdraws_its_routes() {
    let short = {
        let mut c = exporting();
        c.default_lifetime = SECS(60);
        c
    };
    let mut net = Net::new(short, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    net.clients[c].bind_channel(net.now, peer()).unwrap();
    let other: SocketAddr = "198.51.100.9:7000".parse().unwrap();
    net.clients[c].bind_channel(net.now, other).unwrap();
    net.step();
    assert_eq!(ups(&drain(&mut net)).len(), 2);
    // Lose the client: its refreshes never reach the server.
    net.clients.clear();
    net.locals.clear();
    net.run_for(SECS(61));
    let d = downs(&drain(&mut net));
    let mut peers: Vec<SocketAddr> = d.iter().map(|r| r.peer).collect();
    peers.sort();
    assert_eq!(peers, [peer(), other]);
}

#[test]
fn nothing_is_published_unless_asked() {
    let mut net = Net::new(server_config(), users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    net.clients[c].bind_channel(net.now, peer()).unwrap();
    net.step();
    assert_eq!(drain(&mut net), []);
}

#[test]
fn capped_and_tcp_allocations_stay_on_the_checked_path() {
    let capped = {
        let mut c = exporting();
        c.bandwidth = Some(Bandwidth::new(1_000_000, 100_000));
        c
    };
    let mut net = Net::new(capped, users());
    let cfg = net.client_config(0, "alice", "wonderland");
    let c = net.allocated_client(cfg);
    net.clients[c].bind_channel(net.now, peer()).unwrap();
    net.step();
    assert_eq!(drain(&mut net), [], "a bandwidth cap is checked per packet");

    let mut net = Net::new(exporting(), users());
    let mut cfg = net.client_config(0, "alice", "wonderland");
    cfg.transport = Transport::Tcp;
    let c = net.allocated_client(cfg);
    net.clients[c].bind_channel(net.now, peer()).unwrap();
    net.step();
    assert!(net.clients[c].channel(peer()).is_some());
    assert_eq!(drain(&mut net), [], "ChannelData over TCP is framed");
}

#[test]
fn relay_to_relay_is_checked_per_packet_unless_the_allow_list_opens_it() {
    // Both clients' relayed addresses are on the server's own IP.
    let relay_ip = "203.0.113.1".parse().unwrap();
    let mut net = Net::new(exporting(), users());
    let a = net.allocated_client(net.client_config(0, "alice", "wonderland"));
    let b = net.allocated_client(net.client_config(1, "bob", "builder"));
    let rb = net.relayed(b).unwrap();
    drain(&mut net);
    net.clients[a].bind_channel(net.now, rb).unwrap();
    net.step();
    assert!(
        net.clients[a].channel(rb).is_some(),
        "relay to relay is allowed"
    );
    assert_eq!(
        drain(&mut net),
        [],
        "but whether rb lives is checked per packet"
    );

    let open = {
        let mut c = exporting();
        c.peer_policy = PeerPolicy::new().allow(Cidr::host(relay_ip));
        c
    };
    let mut net = Net::new(open, users());
    let a = net.allocated_client(net.client_config(0, "alice", "wonderland"));
    let there: SocketAddr = "203.0.113.1:40000".parse().unwrap();
    net.clients[a].bind_channel(net.now, there).unwrap();
    net.step();
    let up = ups(&drain(&mut net));
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].peer, there);
}
