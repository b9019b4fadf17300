//! Everything before the session starts: signaling (the first URL that
//! answers), sockets, room, roles, ICE servers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use p2p_signaling::{ClientError, ErrorCode, PeerInfo, SignalingClient};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::super::ice_tcp::IceTcp;
use super::super::mdns;
use super::super::net::{self, Inbound};
use super::super::{ConnectError, ConnectionEvent, IceServerUri, PeerConfig, Policy};
use super::Driver;
use crate::{Negotiation, NegotiationConfig, Session, SessionConfig, Transport, TurnServerConfig};

fn emit(events: &mpsc::UnboundedSender<ConnectionEvent>, e: ConnectionEvent) {
    let _ = events.send(e);
}

/// Signaling, sockets, room, roles, ICE servers: everything before the
/// session starts.
pub(super) async fn setup(
    config: &PeerConfig,
    events: &mpsc::UnboundedSender<ConnectionEvent>,
) -> Result<Driver, ConnectError> {
    // wss:// trusts the same roots as turns: (no root store here).
    let tls = (!config.tls_roots.is_empty())
        .then(|| net::tls_client_config(config.tls_roots.iter().map(|d| d.clone().into())).ok())
        .flatten();
    // The URLs in order; the one that answers first comes first in the
    // reconnection's list.
    let mut urls: Vec<String> = std::iter::once(config.signaling_url.clone())
        .chain(config.signaling_urls.iter().cloned())
        .collect();
    let mut last_error = None;
    let mut connected = None;
    for (i, url) in urls.iter().enumerate() {
        match tokio::time::timeout(
            config.signaling_timeout,
            SignalingClient::connect_with(url, tls.clone()),
        )
        .await
        {
            Err(_) => {
                last_error = Some(ConnectError::Timeout {
                    waiting_for: "the signaling server",
                    after: config.signaling_timeout,
                })
            }
            Ok(Err(source)) => {
                last_error = Some(ConnectError::SignalingUnreachable {
                    url: url.clone(),
                    source,
                })
            }
            Ok(Ok(c)) => {
                connected = Some((i, c));
                break;
            }
        }
    }
    let Some((first, mut client)) = connected else {
        return Err(last_error.unwrap_or(ConnectError::Config("no signaling URL")));
    };
    urls.rotate_left(first);
    emit(
        events,
        ConnectionEvent::SignalingConnected {
            peer_id: client.peer_id().to_owned(),
        },
    );

    let ips = net::local_ips(&config.local_addresses, config.include_loopback)?;
    let sockets = net::bind_udp(&ips).await;
    if sockets.is_empty() {
        return Err(ConnectError::Config(
            "no local address could be bound (no interface up?)",
        ));
    }
    emit(
        events,
        ConnectionEvent::SocketsBound(sockets.iter().map(|(a, _)| *a).collect()),
    );

    let room = config.room.clone();
    client.ask_peers_to_hide_hosts(config.mdns_ask_peer_to_hide);
    let peers = match client
        .join(&room, config.token.as_deref(), config.name.as_deref())
        .await
    {
        Ok(p) => p,
        Err(ClientError::Server {
            code: ErrorCode::RoomFull,
            ..
        }) => return Err(ConnectError::RoomFull { room }),
        Err(ClientError::Server {
            code: ErrorCode::Unauthorized,
            ..
        }) => return Err(ConnectError::Unauthorized { room }),
        Err(e) => return Err(ConnectError::Signaling(e)),
    };
    // Two peers there already are a pair (or about to be): say so now
    // rather than offer to one of them and time out.
    if peers.len() >= 2 {
        return Err(ConnectError::RoomBusy {
            room,
            peers: peers.len(),
        });
    }
    // Which ICE servers: ours, or the server's (the welcome's, or those of
    // the joined when the server hands TURN credentials to members only).
    let servers: Vec<IceServerUri> = if config.ice_servers.is_empty() {
        let mut v = Vec::new();
        for s in client.ice_servers() {
            for u in IceServerUri::from_ice_server(s) {
                match u {
                    Ok(u) if u.is_turn() && u.username.is_none() => {
                        tracing::warn!("welcome: {u} has no credentials; skipped");
                    }
                    Ok(u) => v.push(u),
                    Err(e) => tracing::warn!("welcome: {e}; skipped"),
                }
            }
        }
        v
    } else {
        config.ice_servers.clone()
    };

    emit(
        events,
        ConnectionEvent::Joined {
            room: room.clone(),
            peers: peers.len(),
        },
    );
    // Relay-only with no TURN server cannot work: say so now, with the
    // server's reason, rather than after waiting for a peer.
    if config.policy == Policy::RelayOnly && !servers.iter().any(IceServerUri::is_turn) {
        return Err(ConnectError::NoRelay {
            reason: client.relay_unavailable(),
        });
    }
    // The newcomer offers and controls.
    let (peer, controlling) = match peers.first() {
        Some(p) => (p.clone(), true),
        None => wait_for_peer(config, &tls, &urls, &mut client, events).await?,
    };
    let peer_name = peer.name.clone();
    let hide_hosts = hides_hosts(config, &peer);
    let peer = peer.id;
    emit(
        events,
        ConnectionEvent::PeerFound {
            peer_id: peer.clone(),
            controlling,
        },
    );

    let (inbound_tx, inbound) = mpsc::channel::<Inbound>(4096);
    let mut tasks = JoinSet::new();
    // The host sockets read and send in batches where the OS can (GRO,
    // recvmmsg, GSO); the mDNS socket below does not.
    // Those the driver's loop reads itself (run/host.rs).
    let mut batched = HashMap::new();
    let mut host_reads = Vec::new();
    for (a, s) in &sockets {
        match config.batched_io.then(|| net::batched(s)).flatten() {
            Some(state) => {
                host_reads.push(super::host::HostSocket {
                    local: *a,
                    sock: s.clone(),
                    state: state.clone(),
                });
                batched.insert(*a, state);
            }
            None => {
                let _ = net::spawn_udp_reader(&mut tasks, *a, s.clone(), inbound_tx.clone());
            }
        }
    }
    let hosts: Vec<SocketAddr> = sockets.iter().map(|(a, _)| *a).collect();
    // ICE-TCP: a listener and an active candidate on each IP with a UDP
    // host (driver/ice_tcp.rs).
    let mut ice_tcp = (config.ice_tcp && config.policy != Policy::RelayOnly).then(|| {
        let host_ips: Vec<_> = hosts.iter().map(SocketAddr::ip).collect();
        IceTcp::bind(&host_ips, &hosts, inbound_tx.clone())
    });
    // The socket of the resolver of the peer's mDNS names (driver/mdns.rs).
    // (Bound too when our own names are to be answered: see mdns_hide.)
    let mut mdns = (config.resolve_mdns || hide_hosts)
        .then(|| mdns::bind(&ips))
        .flatten();
    let mdns_hide = hide_hosts && mdns.as_mut().is_some_and(|(m, s)| m.listen_for_queries(s));
    if hide_hosts && !mdns_hide {
        tracing::warn!("mDNS: port 5353 unavailable; host addresses are signalled as they are");
    }
    if let Some((m, s)) = &mdns {
        let _ = net::spawn_udp_reader(&mut tasks, m.local, s.clone(), inbound_tx.clone());
    }

    // Resolve the servers; connect the TURN streams.
    let mut stun = Vec::new();
    let mut turn = Vec::new();
    let mut streams = HashMap::new();
    // Said by the TURN connections' tasks, read by the driver's loop.
    let stream_failed = mpsc::unbounded_channel();
    let mut turn_failures = Vec::new();
    for s in &servers {
        if config.policy == Policy::RelayOnly && !s.is_turn() {
            continue;
        }
        let resolved = match tokio::net::lookup_host((s.host.as_str(), s.port)).await {
            Ok(addrs) => addrs.collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!("cannot resolve {s}: {e}");
                Vec::new()
            }
        };
        // The first address of a family we have a socket of.
        let Some(addr) = resolved
            .iter()
            .find(|a| hosts.iter().any(|h| h.is_ipv4() == a.is_ipv4()))
            .copied()
        else {
            if s.is_turn() {
                let reason = format!("cannot resolve {} to an address we can reach", s.host);
                emit(
                    events,
                    ConnectionEvent::TurnFailed {
                        server: s.to_string(),
                        code: None,
                        reason: reason.clone(),
                    },
                );
                turn_failures.push((s.to_string(), None, reason));
            }
            continue;
        };
        if !s.is_turn() {
            stun.push(addr);
            continue;
        }
        // The session tells its TURN clients apart by server address, local
        // socket and transport: a server listed over UDP and TCP on one
        // port gets two allocations. The same server twice over one
        // transport would share one 5-tuple: used once.
        if turn
            .iter()
            .any(|t: &TurnServerConfig| t.server == addr && t.transport == s.transport)
        {
            tracing::debug!("{s}: this server is already used over this transport; skipped");
            continue;
        }
        if s.transport != Transport::Udp {
            // The session reaches a TURN server from the first host socket
            // of its family: frames from the stream arrive "on" that address.
            let Some(local) = hosts
                .iter()
                .find(|h| h.is_ipv4() == addr.is_ipv4())
                .copied()
            else {
                continue;
            };
            match net::connect_stream(
                &mut tasks,
                addr,
                &s.host,
                s.transport,
                local,
                &config.tls_roots,
                inbound_tx.clone(),
                stream_failed.0.clone(),
            )
            .await
            {
                Ok(w) => {
                    streams.insert((addr, s.transport), w);
                }
                Err(e) => {
                    let reason = format!("cannot connect: {e}");
                    emit(
                        events,
                        ConnectionEvent::TurnFailed {
                            server: s.to_string(),
                            code: None,
                            reason: reason.clone(),
                        },
                    );
                    turn_failures.push((s.to_string(), None, reason));
                    continue;
                }
            }
        }
        turn.push(
            TurnServerConfig::new(
                addr,
                s.transport,
                s.username.clone().unwrap_or_default(),
                s.credential.clone().unwrap_or_default(),
            )
            .with_dual_family(config.turn_dual_family),
        );
    }
    if config.policy == Policy::RelayOnly && turn.is_empty() {
        return Err(match turn_failures.pop() {
            Some((server, code, reason)) => ConnectError::TurnRefused {
                server,
                code,
                reason,
            },
            None => ConnectError::Config("relay-only needs a TURN server"),
        });
    }

    let mut ice = config.ice.clone();
    ice.controlling = controlling;
    ice.relay_only = config.policy == Policy::RelayOnly;
    let mut negotiation = NegotiationConfig::new(peer.clone(), controlling);
    negotiation.connect_timeout = config.connect_timeout;
    negotiation.relay_only = ice.relay_only;
    negotiation.hard_nat = config.hard_nat;
    negotiation.turn_servers = turn.len();
    negotiation.turn_failures = turn_failures;
    negotiation.reconnect = config.reconnect.enabled;
    negotiation.mdns = mdns.as_ref().map(|(m, _)| m.local);
    negotiation.mdns_hide = mdns_hide;
    let (mdns, mdns_socket) = mdns
        .map(|(m, s)| {
            let local = m.local;
            (m, (local, s))
        })
        .unzip();
    let mut sc = SessionConfig::new(ice);
    if config.port_mapping && config.policy != Policy::RelayOnly {
        sc.port_mapping = super::super::gateway::port_mapping_targets(&hosts, config.gateway);
    }
    let upnp = super::upnp::Upnp::start(&sc.port_mapping);
    sc.external_port_mapping = upnp.searching();
    sc.hosts = hosts;
    sc.tcp_hosts = ice_tcp.as_ref().map(IceTcp::candidates).unwrap_or_default();
    if let Some(t) = ice_tcp.as_mut() {
        t.set_stun_servers(&stun);
    }
    sc.stun_servers = stun;
    sc.turn_servers = turn;
    sc.certificate = config.certificate.clone();
    sc.max_message_size = config.max_message_size;
    sc.receive_queue_limit = config.receive_queue_limit;
    sc.hard_nat = config.hard_nat;
    let session = Session::new(sc).map_err(|e| ConnectError::Secure(e.to_string()))?;
    let resume_token = client.resume_token().map(str::to_owned);
    Ok(Driver {
        config: config.clone(),
        negotiation: Negotiation::new(negotiation, session),
        client: Some(client),
        reconnect: crate::Reconnect::new(urls, config.reconnect.clone()),
        resume_token,
        attempt: None,
        tls,
        peer,
        peer_name,
        controlling,
        sockets: sockets.into_iter().chain(mdns_socket).collect(),
        batched,
        hosts: super::host::HostReads::new(host_reads),
        gso: super::gso::Gso::default(),
        mdns,
        streams,
        lost_streams: HashMap::new(),
        inbound_tx,
        stream_failed,
        ice_tcp,
        _tasks: tasks,
        probe: super::probe::Probe::default(),
        inbound,
        restarting: false,
        channels: HashMap::new(),
        remote_fingerprint: None,
        upnp,
    })
}

/// Waits in the room for the other peer. When the signaling connection
/// goes away meanwhile (its node died), connects to the next URL, takes our
/// peer id back and joins again, as the running driver does: a peer that
/// joined meanwhile saw us (our membership survived) and offers, so we
/// answer; one that is there after a refused resume (a new id), or after
/// our membership did not survive (we were away longer than the cluster's
/// reap time, or the server restarted: `joined` says `resumed: false`),
/// hears us as a newcomer, so we offer. Returns the peer and whether we
/// control.
async fn wait_for_peer(
    config: &PeerConfig,
    tls: &Option<Arc<rustls::ClientConfig>>,
    urls: &[String],
    client: &mut SignalingClient,
    events: &mpsc::UnboundedSender<ConnectionEvent>,
) -> Result<(PeerInfo, bool), ConnectError> {
    let deadline = config
        .peer_timeout
        .map(|t| (tokio::time::Instant::now() + t, t));
    let timed_out = |after| ConnectError::Timeout {
        waiting_for: "a peer",
        after,
    };
    let mut reconnect = crate::Reconnect::new(urls.to_vec(), config.reconnect.clone());
    loop {
        let wait = client.wait_for_peer();
        let r = match deadline {
            Some((d, t)) => tokio::time::timeout_at(d, wait)
                .await
                .map_err(|_| timed_out(t))?,
            None => wait.await,
        };
        let e = match r {
            Ok(p) => return Ok((p, false)),
            Err(e) if config.reconnect.enabled => e,
            Err(e) => return Err(ConnectError::Signaling(e)),
        };
        tracing::debug!("signaling lost while waiting for a peer: {e}");
        emit(events, ConnectionEvent::SignalingInterrupted);
        let token = client.resume_token().map(str::to_owned);
        reconnect.lost(Instant::now());
        let re = loop {
            let now = Instant::now();
            match reconnect.poll(now) {
                crate::ReconnectAction::Try(url) => {
                    let attempt = super::reattach::reattach(
                        config.clone(),
                        tls.clone(),
                        url,
                        token.clone(),
                        String::new(),
                    );
                    let r = match deadline {
                        Some((d, t)) => tokio::time::timeout_at(d, attempt)
                            .await
                            .map_err(|_| timed_out(t))?,
                        None => attempt.await,
                    };
                    match r {
                        Ok(re) => {
                            reconnect.connected(Instant::now());
                            break re;
                        }
                        Err(why) => {
                            tracing::debug!("signaling: reconnection failed: {why}");
                            reconnect.failed(Instant::now());
                        }
                    }
                }
                crate::ReconnectAction::Wait(at) => {
                    let at = tokio::time::Instant::from_std(at);
                    match deadline {
                        Some((d, t)) if d < at => {
                            tokio::time::sleep_until(d).await;
                            return Err(timed_out(t));
                        }
                        _ => tokio::time::sleep_until(at).await,
                    }
                }
                crate::ReconnectAction::GiveUp | crate::ReconnectAction::Idle => {
                    return Err(ConnectError::Signaling(e));
                }
            }
        };
        emit(
            events,
            ConnectionEvent::SignalingRestored {
                url: re.url.clone(),
                peer_id: re.client.peer_id().to_owned(),
            },
        );
        *client = re.client;
        if let Some(p) = re.peers.into_iter().next() {
            return Ok((p, !re.membership_kept));
        }
    }
}

/// Whether our host addresses go out behind mDNS names to `peer`: when
/// asked by our configuration, or by the peer (its `hideHosts`) and we
/// honour such requests.
fn hides_hosts(config: &PeerConfig, peer: &PeerInfo) -> bool {
    let asked = peer.hide_hosts && config.mdns_hide_when_asked;
    if asked && !config.mdns_hide_hosts {
        tracing::info!("mDNS: the peer asks us to hide our host addresses behind names");
    }
    config.mdns_hide_hosts || asked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses_are_hidden_when_configured_or_when_the_peer_asks_and_we_honour_it() {
        let peer = |asks| PeerInfo {
            id: "p1".into(),
            name: None,
            hide_hosts: asks,
        };
        let config = |hide, honour| {
            PeerConfig::new("ws://x/ws", "r")
                .mdns_hide_hosts(hide)
                .mdns_hide_when_asked(honour)
        };
        // (ours, honour requests, the peer asks) -> hidden
        let cases = [
            (false, true, false, false),
            (false, true, true, true),
            (false, false, true, false),
            (true, false, false, true),
            (true, true, true, true),
        ];
        for (hide, honour, asks, want) in cases {
            let got = hides_hosts(&config(hide, honour), &peer(asks));
            assert_eq!(got, want, "hide {hide}, honour {honour}, asks {asks}");
        }
        // Programs do not hide by default, and honour a page that asks.
        let d = PeerConfig::new("ws://x/ws", "r");
        assert!(!hides_hosts(&d, &peer(false)));
        assert!(hides_hosts(&d, &peer(true)));
    }
}
