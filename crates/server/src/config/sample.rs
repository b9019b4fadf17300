//! The commented sample configuration (`p2p serve --print-config`): every
//! key, at its default. Keys without a default value are commented out with
//! an example; the file parses back to [`Config::default`](super::Config).

/// A commented TOML file with every key of [`Config`](super::Config) at its
/// default value (a key that has none is commented out, with an example).
///
/// ```
/// let text = p2p_server::config_sample();
/// assert_eq!(p2p_server::Config::from_toml_str(&text)?, p2p_server::Config::default());
/// # Ok::<(), p2p_server::ConfigError>(())
/// ```
pub fn sample() -> String {
    SAMPLE.replace("{VERSION}", env!("CARGO_PKG_VERSION"))
}

const SAMPLE: &str = r#"# p2p serve: the configuration file (p2p serve --config FILE).
#
# Every key is shown at its default; a commented-out key has no default and
# shows an example. Each flag of `p2p serve` overrides the key named in its
# --help. A key that could not take effect (a TLS address without a
# certificate, TURN users without a realm, ...) stops the daemon at start
# with the fix. SIGHUP reloads the certificates, the TURN users, the TURN
# secret, the peer rules and the ICE servers handed out; other keys need a
# restart.

[stun]
# Addresses to serve STUN (and TURN) on, UDP and TCP (--listen).
listen = ["127.0.0.1:3478"]
# RFC 5780 alternate address: another IP and another port (--alt-listen).
# alt_listen = "127.0.0.2:3479"
# SOFTWARE attribute of every response; "" for none (--software).
software = "p2p {VERSION}"
# Serve UDP (--no-udp) and TCP (--no-tcp).
udp = true
tcp = true
# UDP sockets per address (SO_REUSEPORT); default one per core (--workers).
# workers = 4
# Largest PADDING in a response, bytes (--max-padding).
max_padding = 512
# Seconds a TCP/TLS connection may go without progress (a success
# answered), and a frame may take to arrive, before it is closed; one that
# holds an allocation may stay quiet longer (--tcp-idle-timeout).
tcp_idle_timeout_secs = 30
# Most TCP/TLS connections at once (--max-connections).
max_connections = 4096
# TCP/TLS connections per client address; default 64 (--max-per-ip).
# max_connections_per_ip = 64
# The IPv6 prefix counted as one client address (--ipv6-prefix).
ipv6_prefix = 64
# Percent of max_connections kept for addresses holding fewer than
# reserve_below connections (--reserve, --reserve-below; default 4).
reserved_percent = 10
# reserve_below = 4

[tls]
# STUN/TURN over TLS is served with a certificate chain and key, PEM
# (--tls-cert, --tls-key); a leaf certificate, not a CA (see docs).
# cert = "/etc/p2p/cert.pem"
# key = "/etc/p2p/key.pem"
# Addresses to serve TLS on; default port 5349 on the first STUN IP (--tls-listen).
listen = []

[log]
# A tracing filter such as "info" or "p2p_server=debug"; default "info"
# (--log; RUST_LOG wins, -v overrides).
# level = "info"
# Append to this file instead of stderr; reopened on SIGHUP (--log-file).
# file = "/var/log/p2p.log"
# "text" or "json" (--log-format).
format = "text"

[turn]
# TURN runs with a realm and users or a REST secret (--realm, --user,
# --auth-secret); the other keys of this section need it.
# realm = "example.org"
# Users as the flag takes them, "NAME:PASSWORD" (or a [turn.users] table).
users = []
# The TURN REST API shared secret (coturn's use-auth-secret).
# auth_secret = "a long random string"
# Peer blocks allowed although the default policy refuses them (loopback,
# private, ...) (--allow-peer), and blocks always refused (--deny-peer).
allow_peer = []
deny_peer = []
# Allocations per user, 0 for no limit (--user-quota).
user_quota = 10
# Allocations in all, 0 for the number of relay ports (--total-quota).
total_quota = 0
# Percent of the allocations kept for client addresses holding fewer than
# reserve_below (--turn-reserve, --turn-reserve-below).
reserved_percent = 10
reserve_below = 4
# With users and auth_secret both: percent of the allocations REST users may
# hold together (--rest-share).
rest_share_percent = 80
# Authentication failures per client address at once, then per minute (0:
# no limit); past them, credentials are dropped unanswered
# (--auth-failure-burst, --auth-failure-rate).
auth_failure_burst = 20
auth_failures_per_minute = 60
# Per-allocation bandwidth cap, bytes per second, 0 for none (--max-bps).
max_bps = 0
# TCP peer connections per RFC 6062 allocation (--max-tcp-connections).
max_tcp_connections = 128
# Relay ChannelData on the receiving threads (--no-relay-fast-path).
relay_fast_path = true
# IPs to bind relayed sockets on, one per family; default the first
# specific listen IP of each family (--relay-ip).
relay_ip = []
# Behind a 1:1 NAT, the public IP advertised per family (--external-ip).
external_ip = []
# Relay port range (--min-port, --max-port).
min_port = 49152
max_port = 65535
# Seconds a nonce stays valid (--nonce-lifetime).
nonce_lifetime_secs = 600
# Allocation lifetime when the client asks for less or nothing, and the
# longest granted, seconds.
default_lifetime_secs = 600
max_lifetime_secs = 3600

[metrics]
# Serve Prometheus metrics (GET /metrics) on this address (--metrics).
# listen = "127.0.0.1:9100"

[signaling]
# The WebSocket (/ws) and the browser page (/) on one TCP port: one address
# or a list, each serving its own family (--signaling, repeatable). p2p
# serve serves 127.0.0.1:8080 and [::1]:8080 (when the machine has IPv6)
# when this is not set, unless --no-signaling. Both families everywhere:
# listen = ["0.0.0.0:8080", "[::]:8080"]
# listen = "127.0.0.1:8080"
# Serve the browser page at / (--no-page).
page = true
# Host in the stun:/turn: URLs handed out; default the first STUN IP, or on
# 0.0.0.0/:: with TURN on, TURN's relay IP of that family (--public-host).
# public_host = "turn.example.org"
# TLS (https://, wss://) with the [tls] certificate (--signaling-tls), or a
# certificate of its own (--signaling-cert, --signaling-key).
tls = false
# cert = "/etc/p2p/signaling-cert.pem"
# key = "/etc/p2p/signaling-key.pem"
# Token every room needs (--signaling-token); per-room tokens in [signaling.room_tokens].
# token = "a secret"
# When TURN credentials go out: welcome, join, token or never; default join
# (--turn-credentials).
# turn_credentials = "join"
# A static TURN user (of [turn] users) handed out as the credentials (--signaling-turn-user).
# turn_user = "alice"
# Lifetime of TURN REST credentials handed out, seconds (--credential-ttl).
credential_ttl_secs = 3600
# TURN credentials per client address per minute, and in a burst
# (--credential-rate, --credential-burst).
credentials_per_minute = 10
credential_burst = 20
# Peers per room, rooms per connection, rooms in all.
max_room_size = 8
max_rooms_per_connection = 4
max_rooms = 10000
# Connections at once, and from one address (default 64) (--signaling-max-per-ip).
max_connections = 10000
# max_connections_per_ip = 64
# IPv6 prefix length counted as one address.
ipv6_prefix = 64
# Percent of the connections kept for addresses holding fewer than
# reserve_below connections (default 4).
reserved_percent = 10
# reserve_below = 4
# Largest message, bytes; messages per second and burst per client.
max_message_size = 65536
rate_per_second = 20
burst = 50
# Seconds without a message or pong before a client is closed; between pings.
idle_timeout_secs = 60
heartbeat_secs = 20
# Slow clients: seconds per write, and what may be queued for one.
write_timeout_secs = 10
max_queued_bytes = 1048576
max_queued_messages = 256
# Seconds for the request head (and TLS) and the WebSocket handshake, and
# for one message to arrive whole.
handshake_timeout_secs = 10
message_timeout_secs = 10

[signaling.room_tokens]
# "room name" = "its token"

# The ICE servers handed out, verbatim; when set, none are made from this
# daemon's addresses (shape of WebRTC's RTCIceServer).
# [[signaling.ice_servers]]
# urls = ["turn:turn.example.org:3478?transport=udp"]
# username = "guest"
# credential = "guest-password"

[cluster]
# The Redis server every node of a cluster names (--redis); without it this
# daemon is a single node and needs no Redis. See docs/cluster.md.
# redis = "redis://127.0.0.1:6379/0"
# This node's id, unique in the cluster (--node-id): letters, digits, '-',
# '_' and '.', at most 64. Default: a random one per run.
# node_id = "node-a"
# Where clients and other nodes reach this node's TURN server, HOST:PORT
# (--public-turn, repeatable). Default: the first listen address.
public_turn = []
# How often this node says it is alive, in milliseconds.
heartbeat_ms = 500
# A node silent this long is dead and its members leave their rooms (ms).
expiry_ms = 2500
# The prefix of every Redis key and channel.
prefix = "p2p:"
# TURN nodes named in each ICE server list handed out.
turn_nodes = 2
"#;

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::sample;

    #[test]
    fn the_sample_parses_back_to_the_defaults() {
        assert_eq!(Config::from_toml_str(&sample()).unwrap(), Config::default());
    }

    /// Every key of every section appears in the sample, set or commented
    /// out: a key added to the structs without a line here fails.
    #[test]
    fn the_sample_names_every_key() {
        // A configuration with every optional key set, so that it serializes.
        let full = Config::from_toml_str(
            r#"
            [stun]
            alt_listen = "127.0.0.2:3479"
            workers = 2
            [tls]
            cert = "c.pem"
            key = "k.pem"
            [log]
            level = "info"
            file = "/tmp/p2p.log"
            [turn]
            realm = "r"
            users = ["a:b"]
            auth_secret = "s"
            [metrics]
            listen = "127.0.0.1:9100"
            [signaling]
            listen = "127.0.0.1:8080"
            public_host = "h"
            token = "t"
            max_connections_per_ip = 64
            reserve_below = 4
            turn_credentials = "join"
            [signaling.room_tokens]
            x = "y"
            [cluster]
            redis = "redis://127.0.0.1:6379"
            node_id = "a"
            "#,
        )
        .unwrap();
        let mut turn_user = full.clone();
        turn_user.turn.auth_secret = None;
        turn_user.signaling.turn_user = Some("a".into());
        let text = sample();
        let mut missing = Vec::new();
        for cfg in [&full, &turn_user] {
            let value = toml::Value::try_from(cfg).unwrap();
            for (section, table) in value.as_table().unwrap() {
                for key in table.as_table().unwrap().keys() {
                    let forms = [
                        format!("\n{key} = "),
                        format!("\n# {key} = "),
                        format!("\n[{section}.{key}]"),
                        format!("\n# [[{section}.{key}]]"),
                    ];
                    if !forms.iter().any(|f| text.contains(f.as_str())) {
                        missing.push(format!("{section}.{key}"));
                    }
                }
            }
        }
        if !text.contains("\n# [[signaling.ice_servers]]") {
            missing.push("signaling.ice_servers".to_owned());
        }
        for key in ["urls", "username", "credential"] {
            if !text.contains(&format!("\n# {key} = ")) {
                missing.push(format!("signaling.ice_servers.{key}"));
            }
        }
        assert!(missing.is_empty(), "not in the sample: {missing:?}");
    }
}
