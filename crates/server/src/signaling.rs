//! The signaling server inside the daemon: a `p2p_signaling::Server` fed by
//! the HTTP front of [`crate::web`] (which hands it WebSocket upgrades), configured from `[signaling]`, handing out
//! this daemon's own STUN and TURN servers in each `welcome`.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use p2p_signaling::{
    AddrLimits, Auth, CredentialPolicy, IceServer, IceServerProvider, Limits, Metrics,
    RestCredentialIceServers, ServerConfig, StaticIceServers,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, SignalingConfig, TurnCredentials};
use crate::server::{LocalAddrs, ServerError};
use crate::tls::{CertFiles, CertSlot};
use crate::web::{self, Front};

/// How long shutdown waits for the WebSockets to close.
const GRACE: Duration = Duration::from_secs(3);

/// The prefix of the user part of TURN REST usernames: `<expiry>:p2p-<peer id>`.
const REST_USER_PREFIX: &str = "p2p-";

/// The bound signaling port, ready to run.
pub(crate) struct Signaling {
    /// One listener per `signaling.listen` address, with its bound address.
    fronts: Vec<(TcpListener, SocketAddr)>,
    page: bool,
    tls: Option<tokio_rustls::TlsAcceptor>,
    config: ServerConfig,
    reload: Reloadable,
}

/// What a reload (SIGHUP) changes in a running signaling server: its
/// certificate and the ICE servers it hands out (the TURN secret or user).
#[derive(Clone)]
pub(crate) struct Reloadable {
    /// The certificate of the port, when it speaks TLS, and its files.
    pub(crate) cert: Option<(Arc<CertSlot>, CertFiles)>,
    /// The ICE servers handed out.
    pub(crate) ice: Arc<SwappableIceServers>,
    /// This node's TURN fleet view, on a node of a cluster (the ICE
    /// servers handed out name its nodes).
    pub(crate) fleet: Option<Arc<crate::cluster::Fleet>>,
}

/// An [`IceServerProvider`] that a reload replaces.
pub(crate) struct SwappableIceServers(RwLock<Arc<dyn IceServerProvider>>);

impl SwappableIceServers {
    pub(crate) fn swap(&self, p: Arc<dyn IceServerProvider>) {
        match self.0.write() {
            Ok(mut g) => *g = p,
            Err(poisoned) => *poisoned.into_inner() = p,
        }
    }
}

impl IceServerProvider for SwappableIceServers {
    fn ice_servers(&self, peer: &str, now: std::time::SystemTime) -> Vec<IceServer> {
        let p = match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        p.ice_servers(peer, now)
    }
}

/// The certificate files of the signaling port: its own, or `[tls]`'s
/// with `signaling.tls`.
pub(crate) fn cert_files(config: &Config) -> Option<CertFiles> {
    let s = &config.signaling;
    match (&s.cert, &s.key, &config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key), _, _) => Some(CertFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None, Some(cert), Some(key)) if s.tls => Some(CertFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    }
}

/// A running signaling server; [`Running::stop`] ends it.
pub(crate) struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Bind the signaling ports if `[signaling] listen` names any. `addrs` are the
/// STUN addresses already bound (their ports go into the handed-out URLs).
pub(crate) async fn bind(
    config: &Config,
    addrs: &LocalAddrs,
    member: Option<&crate::cluster::Membership>,
) -> Result<Option<Signaling>, ServerError> {
    let s = &config.signaling;
    if s.listen.is_empty() {
        return Ok(None);
    }
    let (tls, cert) = match cert_files(config) {
        Some(files) => {
            let (acceptor, slot) = crate::tls::acceptor(&files)?;
            (Some(acceptor), Some((slot, files)))
        }
        None => (None, None),
    };
    let mut fronts = Vec::with_capacity(s.listen.len());
    for &listen in &s.listen {
        let front = crate::server::bind_tcp(listen, "signaling")?;
        let addr = front.local_addr().map_err(|source| ServerError::Bind {
            transport: "signaling",
            addr: listen,
            source,
        })?;
        fronts.push((front, addr));
    }
    let fleet = member.and_then(|m| m.fleet.clone());
    let provider = ice_servers(config, addrs, fleet.clone());
    let ice = Arc::new(SwappableIceServers(RwLock::new(provider)));
    let mut sc = server_config(s, ice.clone());
    crate::cluster::setup_resume(&mut sc, config);
    crate::cluster::attach(&mut sc, config, member)
        .await
        .map_err(ServerError::Cluster)?;
    Ok(Some(Signaling {
        fronts,
        page: s.page,
        tls,
        config: sc,
        reload: Reloadable { cert, ice, fleet },
    }))
}

/// The `p2p_signaling` configuration for `[signaling]`.
fn server_config(s: &SignalingConfig, ice_servers: Arc<dyn IceServerProvider>) -> ServerConfig {
    let limits = Limits {
        max_room_size: s.max_room_size,
        max_rooms_per_conn: s.max_rooms_per_connection,
        max_rooms: s.max_rooms,
        max_connections: s.max_connections,
        max_message_size: s.max_message_size,
        rate_per_second: f64::from(s.rate_per_second),
        burst: f64::from(s.burst),
        idle_timeout: Duration::from_secs(s.idle_timeout_secs),
        credential_policy: match s.turn_credentials {
            Some(TurnCredentials::Welcome) => CredentialPolicy::Welcome,
            None | Some(TurnCredentials::Join) => CredentialPolicy::Join,
            Some(TurnCredentials::Token) => CredentialPolicy::Token,
            Some(TurnCredentials::Never) => CredentialPolicy::Never,
        },
        credentials_per_minute: f64::from(s.credentials_per_minute),
        credential_burst: f64::from(s.credential_burst),
        ..Limits::default()
    };
    let mut auth = match &s.token {
        Some(t) => Auth::global(t.clone()),
        None => Auth::open(),
    };
    for (room, token) in &s.room_tokens {
        auth = auth.with_room_token(room.clone(), token.clone());
    }
    ServerConfig {
        limits,
        auth,
        ice_servers,
        addr_limits: AddrLimits::new()
            .with_max_connections(s.max_connections)
            .with_max_per_addr(s.per_ip())
            .with_ipv6_prefix(s.ipv6_prefix)
            .with_reserve(s.reserved_percent, s.reserve_below()),
        heartbeat_interval: Duration::from_secs(s.heartbeat_secs),
        outbound_queue: s.max_queued_messages,
        max_queued_bytes: s.max_queued_bytes,
        write_timeout: Duration::from_secs(s.write_timeout_secs),
        handshake_timeout: Duration::from_secs(s.handshake_timeout_secs),
        message_timeout: Duration::from_secs(s.message_timeout_secs),
        ..ServerConfig::default()
    }
}

/// The ICE servers handed out: the configured list, or this daemon's
/// `stun:` URL plus `turn:` URLs with fresh REST credentials (with a TURN
/// REST secret) or with the static user of `signaling.turn_user`.
/// On a TURN node of a cluster (`fleet`), the `turn:` URLs name the
/// fleet's least-loaded nodes (see `cluster::FleetIceServers`).
pub(crate) fn ice_servers(
    config: &Config,
    addrs: &LocalAddrs,
    fleet: Option<Arc<crate::cluster::Fleet>>,
) -> Arc<dyn IceServerProvider> {
    let s = &config.signaling;
    if !s.ice_servers.is_empty() {
        let list = s
            .ice_servers
            .iter()
            .map(|e| IceServer {
                urls: e.urls.clone(),
                username: e.username.clone(),
                credential: e.credential.clone(),
            })
            .collect();
        return Arc::new(StaticIceServers(list));
    }
    let primary = addrs.udp.first().or(addrs.tcp.first()).copied();
    let Some(primary) = primary else {
        return Arc::new(StaticIceServers::default());
    };
    let wildcard = config
        .wildcard_host(primary.is_ipv4())
        .filter(|_| primary.ip().is_unspecified());
    let host = match (&s.public_host, wildcard) {
        (Some(h), _) => url_host(h),
        (None, Some(ip)) => {
            tracing::info!(
                "signaling: STUN listens on {primary}; the STUN/TURN URLs handed out name TURN's relay IP {ip} (--public-host names another)"
            );
            url_host(&ip.to_string())
        }
        (None, None) if primary.ip().is_unspecified() => {
            tracing::warn!(
                "signaling: STUN listens on {primary}, so no STUN/TURN URL is handed out; set signaling.public_host (--public-host)"
            );
            return Arc::new(StaticIceServers::default());
        }
        (None, None) => url_host(&primary.ip().to_string()),
    };
    let mut urls = Vec::new();
    if let Some(u) = addrs.udp.first() {
        urls.push(format!("stun:{host}:{}", u.port()));
    }
    // STUN on a specific address of the other family too: a URL for it,
    // so that peers learn their server-reflexive address of each family
    // (a name given as public_host resolves to both already).
    let other = addrs
        .udp
        .iter()
        .find(|u| u.is_ipv4() != primary.is_ipv4() && !u.ip().is_unspecified());
    if let (None, Some(u)) = (&s.public_host, other) {
        urls.push(format!(
            "stun:{}:{}",
            url_host(&u.ip().to_string()),
            u.port()
        ));
    }
    let mut turn_urls = Vec::new();
    if let Some(u) = addrs.udp.first() {
        turn_urls.push(format!("turn:{host}:{}?transport=udp", u.port()));
    }
    if let Some(t) = addrs.tcp.first() {
        turn_urls.push(format!("turn:{host}:{}?transport=tcp", t.port()));
    }
    if let Some(t) = addrs.tls.first() {
        turn_urls.push(format!("turns:{host}:{}?transport=tcp", t.port()));
    }
    let static_user = s
        .turn_user
        .as_ref()
        .filter(|_| config.turn.enabled())
        .and_then(|u| config.turn.users.get(u).map(|pw| (u, pw)));
    if let Some((user, password)) = static_user {
        let mut list = Vec::new();
        if !urls.is_empty() {
            list.push(IceServer::new(urls));
        }
        list.push(IceServer::with_credentials(turn_urls, user, password));
        return Arc::new(StaticIceServers(list));
    }
    let secret = config
        .turn
        .auth_secret
        .as_ref()
        .filter(|_| config.turn.enabled());
    let Some(secret) = secret else {
        return Arc::new(StaticIceServers(if urls.is_empty() {
            Vec::new()
        } else {
            vec![IceServer::new(urls)]
        }));
    };
    if let Some(fleet) = fleet {
        return Arc::new(crate::cluster::FleetIceServers {
            fleet,
            stun: urls,
            own_turn: turn_urls,
            ttl: Duration::from_secs(s.credential_ttl_secs),
            user_prefix: REST_USER_PREFIX.to_owned(),
        });
    }
    urls.extend(turn_urls);
    Arc::new(RestCredentialIceServers {
        urls,
        secret: secret.clone(),
        ttl: Duration::from_secs(s.credential_ttl_secs),
        user_prefix: REST_USER_PREFIX.to_owned(),
    })
}

/// An IPv6 literal goes in brackets in a URL.
fn url_host(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host.to_owned(),
    }
}

impl Signaling {
    /// The addresses the page and the WebSocket are served on.
    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.fronts.iter().map(|(_, a)| *a).collect()
    }

    /// What a reload changes.
    pub(crate) fn reloadable(&self) -> Reloadable {
        self.reload.clone()
    }

    /// The signaling server's metrics (counted once it runs).
    pub(crate) fn metrics(&self) -> Metrics {
        self.config.metrics.clone()
    }

    /// Start serving.
    pub(crate) fn spawn(self) -> Running {
        let (stop, stopped) = watch::channel(false);
        let server = p2p_signaling::Server::start(self.config.clone());
        let front = Front {
            acceptor: server.acceptor(),
            page: self.page,
            tls: self.tls,
            head_timeout: self.config.handshake_timeout,
        };
        let mut for_ws = stopped.clone();
        // One accept loop per address, all into the one signaling server.
        let mut fronts = tokio::task::JoinSet::new();
        for (listener, _) in self.fronts {
            fronts.spawn(web::run(listener, front.clone(), stopped.clone(), GRACE));
        }
        let task = tokio::spawn(async move {
            let fronts = async move { while fronts.join_next().await.is_some() {} };
            let ws = async move {
                let _ = for_ws.wait_for(|stop| *stop).await;
                // Close every WebSocket (1001) while the fronts drain.
                server.stop();
                server
            };
            let ((), server) = tokio::join!(fronts, ws);
            server.finish().await;
        });
        Running { stop, task }
    }
}

impl Running {
    /// Close every WebSocket (close 1001) and stop serving.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(GRACE + Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    /// A configuration whose `[signaling]` is served (its keys would have
    /// no effect otherwise).
    fn parse(text: &str) -> Result<Config, crate::ConfigError> {
        let listen = "listen = \"127.0.0.1:0\"\n";
        let text = match text.split_once("[signaling]\n") {
            Some((before, after)) => format!("{before}[signaling]\n{listen}{after}"),
            None => format!("[signaling]\n{listen}{text}"),
        };
        Config::from_toml_str(&text)
    }

    fn addrs(udp: &str, tcp: &str) -> LocalAddrs {
        LocalAddrs {
            udp: vec![udp.parse().unwrap()],
            tcp: vec![tcp.parse().unwrap()],
            ..LocalAddrs::default()
        }
    }

    fn servers(config: &str, addrs: &LocalAddrs) -> Vec<IceServer> {
        let config = parse(config).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        ice_servers(&config, addrs, None).ice_servers("p1", now)
    }

    #[test]
    fn stun_only_without_turn() {
        let a = addrs("127.0.0.1:3478", "127.0.0.1:3478");
        assert_eq!(
            servers("", &a),
            vec![IceServer::new(["stun:127.0.0.1:3478"])]
        );
        // Long-term users alone: their passwords are not handed out.
        let turn = "[turn]\nrealm = \"r\"\n[turn.users]\nalice = \"pw\"\n";
        assert_eq!(
            servers(turn, &a),
            vec![IceServer::new(["stun:127.0.0.1:3478"])]
        );
    }

    #[test]
    fn stun_on_both_families_hands_out_a_stun_url_of_each() {
        let a = LocalAddrs {
            udp: vec![
                "127.0.0.1:3478".parse().unwrap(),
                "[::1]:3479".parse().unwrap(),
            ],
            ..LocalAddrs::default()
        };
        assert_eq!(
            servers("", &a),
            vec![IceServer::new(["stun:127.0.0.1:3478", "stun:[::1]:3479"])]
        );
        // A public host names both families already; an unspecified
        // address of the other family names none.
        let named = servers("[signaling]\npublic_host = \"stun.example.org\"\n", &a);
        assert_eq!(named, vec![IceServer::new(["stun:stun.example.org:3478"])]);
        let any = LocalAddrs {
            udp: vec![
                "127.0.0.1:3478".parse().unwrap(),
                "[::]:3478".parse().unwrap(),
            ],
            ..LocalAddrs::default()
        };
        assert_eq!(
            servers("", &any),
            vec![IceServer::new(["stun:127.0.0.1:3478"])]
        );
    }

    #[test]
    fn rest_credentials_with_an_auth_secret() {
        let a = addrs("192.0.2.1:3478", "192.0.2.1:3479");
        let got = servers(
            "[turn]\nrealm = \"r\"\nauth_secret = \"north-secret\"\n[signaling]\ncredential_ttl_secs = 3600\n",
            &a,
        );
        let username = "1700003600:p2p-p1";
        assert_eq!(
            got,
            vec![IceServer::with_credentials(
                [
                    "stun:192.0.2.1:3478",
                    "turn:192.0.2.1:3478?transport=udp",
                    "turn:192.0.2.1:3479?transport=tcp",
                ],
                username,
                p2p_signaling::rest_credential(b"north-secret", username),
            )]
        );
    }

    #[test]
    fn public_host_and_ipv6_literals() {
        let a = addrs("[::1]:3478", "[::1]:3478");
        assert_eq!(servers("", &a), vec![IceServer::new(["stun:[::1]:3478"])]);
        let a = addrs("0.0.0.0:3478", "0.0.0.0:3478");
        assert_eq!(servers("", &a), Vec::<IceServer>::new());
        assert_eq!(
            servers("[signaling]\npublic_host = \"stun.example.org\"\n", &a),
            vec![IceServer::new(["stun:stun.example.org:3478"])]
        );
    }

    #[test]
    fn turn_on_a_wildcard_address_is_named_by_its_advertised_relay_ip() {
        let a = addrs("0.0.0.0:3478", "0.0.0.0:3479");
        let turn = "[turn]\nrealm = \"r\"\nauth_secret = \"s\"\nrelay_ip = [\"192.0.2.7\"]\n";
        let urls = |config: &str| -> Vec<String> {
            servers(config, &a)
                .into_iter()
                .flat_map(|s| s.urls)
                .collect()
        };
        assert_eq!(
            urls(turn),
            [
                "stun:192.0.2.7:3478",
                "turn:192.0.2.7:3478?transport=udp",
                "turn:192.0.2.7:3479?transport=tcp",
            ]
        );
        // Behind a 1:1 NAT: the external IP, as in the relayed addresses.
        let nat = format!("{turn}external_ip = [\"203.0.113.7\"]\n");
        assert_eq!(urls(&nat)[0], "stun:203.0.113.7:3478");
        // The public host still wins.
        let named = format!("{turn}[signaling]\npublic_host = \"turn.example.org\"\n");
        assert_eq!(urls(&named)[0], "stun:turn.example.org:3478");
    }

    #[test]
    fn configured_list_wins() {
        let a = addrs("127.0.0.1:3478", "127.0.0.1:3478");
        let got = servers(
            "[turn]\nrealm = \"r\"\nauth_secret = \"s\"\n[[signaling.ice_servers]]\nurls = [\"turn:t.example.org:3478\"]\nusername = \"u\"\ncredential = \"c\"\n",
            &a,
        );
        assert_eq!(
            got,
            vec![IceServer::with_credentials(
                ["turn:t.example.org:3478"],
                "u",
                "c"
            )]
        );
    }

    #[test]
    fn config_maps_to_limits() {
        let cfg = parse(
            "[signaling]\nmax_room_size = 2\nrate_per_second = 5\nburst = 7\nidle_timeout_secs = 9\nheartbeat_secs = 3\ntoken = \"t\"\n",
        )
        .unwrap();
        let sc = server_config(&cfg.signaling, Arc::new(StaticIceServers::default()));
        assert_eq!(sc.limits.max_room_size, 2);
        assert_eq!(sc.limits.rate_per_second, 5.0);
        assert_eq!(sc.limits.burst, 7.0);
        assert_eq!(sc.limits.idle_timeout, Duration::from_secs(9));
        assert_eq!(sc.heartbeat_interval, Duration::from_secs(3));
        assert_eq!(sc.auth, Auth::global("t"));
    }

    #[test]
    fn bad_signaling_values_are_refused() {
        for text in [
            "[signaling]\nmax_room_size = 0",
            "[signaling]\nburst = 0",
            "[signaling]\nheartbeat_secs = 60\nidle_timeout_secs = 60",
            "[signaling]\ncredential_ttl_secs = 0",
            "[signaling]\npublic_host = \"\"",
            "[[signaling.ice_servers]]\nurls = []",
            "[[signaling.ice_servers]]\nurls = [\"http://x\"]",
            "[[signaling.ice_servers]]\nurls = [\"turn:x:3478\"]",
            "[signaling]\nlisten_on = \"127.0.0.1:1\"",
            "[signaling]\nmax_connections = 10\nmax_connections_per_ip = 11",
            "[signaling]\nmax_connections_per_ip = 0",
            "[signaling]\nipv6_prefix = 0",
            "[signaling]\nipv6_prefix = 129",
            "[signaling]\nreserved_percent = 91",
            "[signaling]\nmax_connections_per_ip = 3\nreserve_below = 4",
            "[signaling]\nwrite_timeout_secs = 0",
            "[signaling]\nhandshake_timeout_secs = 0",
            "[signaling]\nmessage_timeout_secs = 0",
            "[signaling]\nmax_queued_bytes = 65536",
            "[signaling]\nmax_queued_messages = 0",
            "[signaling]\ncredentials_per_minute = 0",
            "[signaling]\ncert = \"c.pem\"",
            "[signaling]\nturn_credentials = \"sometimes\"",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    /// Settings that cannot take effect with the rest of the file are
    /// refused, each with the fix in its message.
    #[test]
    fn signaling_settings_that_cannot_take_effect_are_refused_with_the_fix() {
        let secret = "[turn]\nrealm = \"r\"\nauth_secret = \"s\"\n";
        let users = "[turn]\nrealm = \"r\"\n[turn.users]\nguest = \"pw\"\n";
        let cases = [
            ("[signaling]\ntls = true", "tls.cert"),
            ("[signaling]\nturn_credentials = \"join\"", "--auth-secret"),
            (
                &format!("{secret}[signaling]\nturn_credentials = \"token\""),
                "signaling.token",
            ),
            (
                &format!("{users}[signaling]\nturn_user = \"nobody\""),
                "turn.users",
            ),
            (
                &format!(
                    "{secret}[turn.users]\nguest = \"pw\"\n[signaling]\nturn_user = \"guest\""
                ),
                "turn.auth_secret",
            ),
        ];
        for (text, fix) in cases {
            match parse(text) {
                Err(e) => assert!(e.to_string().contains(fix), "{text}: {e}"),
                Ok(_) => panic!("accepted: {text}"),
            }
        }
        // The same settings where they can take effect.
        for ok in [
            "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[signaling]\ntls = true".to_owned(),
            "[signaling]\ncert = \"c.pem\"\nkey = \"k.pem\"".to_owned(),
            "[signaling]\nturn_credentials = \"never\"".to_owned(),
            format!("{secret}[signaling]\nturn_credentials = \"token\"\ntoken = \"t\""),
            format!("{users}[signaling]\nturn_user = \"guest\"\nturn_credentials = \"welcome\""),
            "[signaling]\nmax_connections = 10".to_owned(),
            "[signaling]\nmax_connections_per_ip = 2".to_owned(),
        ] {
            assert!(parse(&ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn limits_map_to_the_server_and_admission() {
        let cfg = parse(
            "[turn]\nrealm = \"r\"\nauth_secret = \"s\"\n[signaling]\nmax_connections = 100\nmax_connections_per_ip = 10\nipv6_prefix = 56\nreserved_percent = 20\nwrite_timeout_secs = 3\nmax_queued_bytes = 200000\nmax_queued_messages = 50\nhandshake_timeout_secs = 4\nmessage_timeout_secs = 6\nturn_credentials = \"never\"\ncredentials_per_minute = 7\ncredential_burst = 8\n",
        )
        .unwrap();
        let sc = server_config(&cfg.signaling, Arc::new(StaticIceServers::default()));
        assert_eq!(
            sc.addr_limits,
            AddrLimits::new()
                .with_max_connections(100)
                .with_max_per_addr(10)
                .with_ipv6_prefix(56)
                .with_reserve(20, 4)
        );
        assert_eq!(sc.write_timeout, Duration::from_secs(3));
        assert_eq!(sc.max_queued_bytes, 200_000);
        assert_eq!(sc.outbound_queue, 50);
        assert_eq!(sc.handshake_timeout, Duration::from_secs(4));
        assert_eq!(sc.message_timeout, Duration::from_secs(6));
        assert_eq!(sc.limits.credential_policy, CredentialPolicy::Never);
        assert_eq!(sc.limits.credentials_per_minute, 7.0);
        assert_eq!(sc.limits.credential_burst, 8.0);
        assert_eq!(sc.validate(), Ok(()));
        // Defaults: join, 64 per address, 10 % reserve below 4.
        let d = server_config(
            &Config::default().signaling,
            Arc::new(StaticIceServers::default()),
        );
        assert_eq!(d.limits.credential_policy, CredentialPolicy::Join);
        assert_eq!(d.addr_limits, AddrLimits::default());
    }

    #[test]
    fn a_named_static_user_is_handed_out_with_the_turn_urls() {
        let a = addrs("127.0.0.1:3478", "127.0.0.1:3478");
        let got = servers(
            "[turn]\nrealm = \"r\"\n[turn.users]\nguest = \"pw\"\n[signaling]\nturn_user = \"guest\"\n",
            &a,
        );
        assert_eq!(
            got,
            vec![
                IceServer::new(["stun:127.0.0.1:3478"]),
                IceServer::with_credentials(
                    [
                        "turn:127.0.0.1:3478?transport=udp",
                        "turn:127.0.0.1:3478?transport=tcp"
                    ],
                    "guest",
                    "pw"
                ),
            ]
        );
    }
}
