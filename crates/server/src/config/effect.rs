//! Settings that could not take effect. A key (or the flag behind it) that
//! the daemon would silently ignore is refused at start with the fix in the
//! message: a TLS address without a certificate, TURN users without a realm,
//! a `[signaling]` key while signaling is off, ….
//!
//! A key left at its default is never refused: these checks compare with
//! the defaults, so a key written out at its default value (as in
//! [`super::sample`]) is harmless.

use super::{ClusterConfig, Config, ConfigError, SignalingConfig, StunConfig, TurnConfig};

fn no_effect(key: &'static str, fix: &'static str) -> Result<(), ConfigError> {
    Err(ConfigError::NoEffect { key, fix })
}

/// Every check of this module.
pub(super) fn check(c: &Config) -> Result<(), ConfigError> {
    tls(c)?;
    stun(c)?;
    turn(c)?;
    signaling(c)?;
    cluster(c)
}

/// `[cluster]` keys mean something only on a node of a cluster.
fn cluster(c: &Config) -> Result<(), ConfigError> {
    let k = &c.cluster;
    if k.enabled() {
        return Ok(());
    }
    let d = ClusterConfig::default();
    let keys = [
        (k.node_id != d.node_id, "cluster.node_id (--node-id)"),
        (
            k.public_turn != d.public_turn,
            "cluster.public_turn (--public-turn)",
        ),
        (k.heartbeat_ms != d.heartbeat_ms, "cluster.heartbeat_ms"),
        (k.expiry_ms != d.expiry_ms, "cluster.expiry_ms"),
        (k.prefix != d.prefix, "cluster.prefix"),
        (k.turn_nodes != d.turn_nodes, "cluster.turn_nodes"),
    ];
    match keys.into_iter().find(|(changed, _)| *changed) {
        Some((_, key)) => no_effect(
            key,
            "this daemon is not a node of a cluster: set cluster.redis (--redis URL), or drop the key",
        ),
        None => Ok(()),
    }
}

fn tls(c: &Config) -> Result<(), ConfigError> {
    if !c.tls.listen.is_empty() && c.tls.cert.is_none() {
        return no_effect(
            "tls.listen (--tls-listen)",
            "STUN over TLS is served only with a certificate: add tls.cert and tls.key (--tls-cert FILE --tls-key FILE), or drop tls.listen",
        );
    }
    Ok(())
}

fn stun(c: &Config) -> Result<(), ConfigError> {
    let s = &c.stun;
    let d = StunConfig::default();
    if !s.udp {
        if s.alt_listen.is_some() {
            return no_effect(
                "stun.alt_listen (--alt-listen)",
                "RFC 5780 runs over UDP, which is off (stun.udp = false, --no-udp): serve UDP or drop alt_listen",
            );
        }
        if s.workers.is_some() {
            return no_effect(
                "stun.workers (--workers)",
                "workers are UDP sockets, and UDP is off (stun.udp = false, --no-udp): serve UDP or drop workers",
            );
        }
    }
    let streams = s.tcp || c.tls.cert.is_some();
    if !streams {
        if s.tcp_idle_timeout_secs != d.tcp_idle_timeout_secs {
            return no_effect(
                "stun.tcp_idle_timeout_secs (--tcp-idle-timeout)",
                "neither TCP nor TLS is served (stun.tcp = false, no tls.cert): serve one or drop the key",
            );
        }
        let keys = [
            (
                s.max_connections != d.max_connections,
                "stun.max_connections (--max-connections)",
            ),
            (
                s.max_connections_per_ip != d.max_connections_per_ip,
                "stun.max_connections_per_ip (--max-per-ip)",
            ),
            (
                s.reserved_percent != d.reserved_percent,
                "stun.reserved_percent (--reserve)",
            ),
            (
                s.reserve_below != d.reserve_below,
                "stun.reserve_below (--reserve-below)",
            ),
        ];
        if let Some((_, key)) = keys.iter().find(|(changed, _)| *changed) {
            return no_effect(
                key,
                "neither TCP nor TLS is served (stun.tcp = false, no tls.cert): serve one or drop the key",
            );
        }
    }
    Ok(())
}

/// The first `[turn]` key (other than the three that turn TURN on) that
/// differs from its default.
fn changed_turn_key(t: &TurnConfig) -> Option<&'static str> {
    let d = TurnConfig::default();
    let keys = [
        (
            t.allow_peer != d.allow_peer,
            "turn.allow_peer (--allow-peer)",
        ),
        (t.deny_peer != d.deny_peer, "turn.deny_peer (--deny-peer)"),
        (
            t.user_quota != d.user_quota,
            "turn.user_quota (--user-quota)",
        ),
        (
            t.total_quota != d.total_quota,
            "turn.total_quota (--total-quota)",
        ),
        (
            t.reserved_percent != d.reserved_percent,
            "turn.reserved_percent (--turn-reserve)",
        ),
        (
            t.reserve_below != d.reserve_below,
            "turn.reserve_below (--turn-reserve-below)",
        ),
        (
            t.rest_share_percent != d.rest_share_percent,
            "turn.rest_share_percent (--rest-share)",
        ),
        (
            t.auth_failure_burst != d.auth_failure_burst,
            "turn.auth_failure_burst (--auth-failure-burst)",
        ),
        (
            t.auth_failures_per_minute != d.auth_failures_per_minute,
            "turn.auth_failures_per_minute (--auth-failure-rate)",
        ),
        (t.max_bps != d.max_bps, "turn.max_bps (--max-bps)"),
        (
            t.max_tcp_connections != d.max_tcp_connections,
            "turn.max_tcp_connections (--max-tcp-connections)",
        ),
        (
            t.relay_fast_path != d.relay_fast_path,
            "turn.relay_fast_path (--no-relay-fast-path)",
        ),
        (t.relay_ip != d.relay_ip, "turn.relay_ip (--relay-ip)"),
        (
            t.external_ip != d.external_ip,
            "turn.external_ip (--external-ip)",
        ),
        (t.min_port != d.min_port, "turn.min_port (--min-port)"),
        (t.max_port != d.max_port, "turn.max_port (--max-port)"),
        (
            t.nonce_lifetime_secs != d.nonce_lifetime_secs,
            "turn.nonce_lifetime_secs (--nonce-lifetime)",
        ),
        (
            t.default_lifetime_secs != d.default_lifetime_secs,
            "turn.default_lifetime_secs",
        ),
        (
            t.max_lifetime_secs != d.max_lifetime_secs,
            "turn.max_lifetime_secs",
        ),
    ];
    keys.into_iter()
        .find(|(changed, _)| *changed)
        .map(|(_, k)| k)
}

fn turn(c: &Config) -> Result<(), ConfigError> {
    let t = &c.turn;
    let realm = t.realm.as_deref().is_some_and(|r| !r.is_empty());
    let creds = !t.users.is_empty() || t.auth_secret.is_some();
    if t.realm.as_deref() == Some("") {
        return no_effect(
            "turn.realm (--realm)",
            "an empty realm turns nothing on: give the realm clients authenticate in, such as your domain",
        );
    }
    if creds && !realm {
        return no_effect(
            if t.users.is_empty() {
                "turn.auth_secret (--auth-secret)"
            } else {
                "turn.users (--user)"
            },
            "TURN needs a realm as well: add turn.realm (--realm REALM), such as your domain",
        );
    }
    if realm && !creds {
        return no_effect(
            "turn.realm (--realm)",
            "TURN needs users or a shared secret as well: add turn.users (--user NAME:PASSWORD) or turn.auth_secret (--auth-secret SECRET)",
        );
    }
    if !t.enabled() {
        if let Some(key) = changed_turn_key(t) {
            return no_effect(
                key,
                "TURN is off: it runs with turn.realm and turn.users or turn.auth_secret (--realm, --user, --auth-secret)",
            );
        }
        return Ok(());
    }
    // Where relayed sockets go: relay_ip, or the specific listen IPs.
    let relay_family = |v4: bool| {
        t.relay_ip.iter().any(|ip| ip.is_ipv4() == v4)
            || c.stun
                .listen
                .iter()
                .any(|a| a.is_ipv4() == v4 && !a.ip().is_unspecified())
    };
    if t.external_ip.iter().any(|ip| !relay_family(ip.is_ipv4())) {
        return no_effect(
            "turn.external_ip (--external-ip)",
            "an external IP stands for the relay IP of its family, and there is none of that family: add turn.relay_ip (--relay-ip) of that family",
        );
    }
    let streams = c.stun.tcp || c.tls.cert.is_some();
    if !streams && t.max_tcp_connections != TurnConfig::default().max_tcp_connections {
        return no_effect(
            "turn.max_tcp_connections (--max-tcp-connections)",
            "TCP allocations (RFC 6062) are made over TCP or TLS, and neither is served: serve one or drop the key",
        );
    }
    Ok(())
}

/// The first `[signaling]` key other than `listen` that differs from its
/// default.
fn changed_signaling_key(s: &SignalingConfig) -> Option<&'static str> {
    let d = SignalingConfig::default();
    let keys = [
        (s.page != d.page, "signaling.page (--no-page)"),
        (
            s.public_host != d.public_host,
            "signaling.public_host (--public-host)",
        ),
        (s.ice_servers != d.ice_servers, "signaling.ice_servers"),
        (
            s.credential_ttl_secs != d.credential_ttl_secs,
            "signaling.credential_ttl_secs (--credential-ttl)",
        ),
        (s.token != d.token, "signaling.token (--signaling-token)"),
        (s.room_tokens != d.room_tokens, "signaling.room_tokens"),
        (
            s.max_room_size != d.max_room_size,
            "signaling.max_room_size (--signaling-max-room-size)",
        ),
        (
            s.max_rooms_per_connection != d.max_rooms_per_connection,
            "signaling.max_rooms_per_connection (--signaling-max-rooms-per-connection)",
        ),
        (
            s.max_rooms != d.max_rooms,
            "signaling.max_rooms (--signaling-max-rooms)",
        ),
        (
            s.max_connections != d.max_connections,
            "signaling.max_connections (--signaling-max-connections)",
        ),
        (
            s.max_message_size != d.max_message_size,
            "signaling.max_message_size (--signaling-max-message-size)",
        ),
        (
            s.rate_per_second != d.rate_per_second,
            "signaling.rate_per_second (--signaling-rate)",
        ),
        (s.burst != d.burst, "signaling.burst (--signaling-burst)"),
        (
            s.idle_timeout_secs != d.idle_timeout_secs,
            "signaling.idle_timeout_secs (--signaling-idle-timeout)",
        ),
        (
            s.heartbeat_secs != d.heartbeat_secs,
            "signaling.heartbeat_secs (--signaling-heartbeat)",
        ),
        (s.tls != d.tls, "signaling.tls (--signaling-tls)"),
        (s.cert != d.cert, "signaling.cert (--signaling-cert)"),
        (s.key != d.key, "signaling.key (--signaling-key)"),
        (
            s.max_connections_per_ip != d.max_connections_per_ip,
            "signaling.max_connections_per_ip (--signaling-max-per-ip)",
        ),
        (
            s.ipv6_prefix != d.ipv6_prefix,
            "signaling.ipv6_prefix (--signaling-ipv6-prefix)",
        ),
        (
            s.reserved_percent != d.reserved_percent,
            "signaling.reserved_percent (--signaling-reserve)",
        ),
        (
            s.reserve_below != d.reserve_below,
            "signaling.reserve_below (--signaling-reserve-below)",
        ),
        (
            s.write_timeout_secs != d.write_timeout_secs,
            "signaling.write_timeout_secs (--signaling-write-timeout)",
        ),
        (
            s.max_queued_bytes != d.max_queued_bytes,
            "signaling.max_queued_bytes (--signaling-max-queued-bytes)",
        ),
        (
            s.max_queued_messages != d.max_queued_messages,
            "signaling.max_queued_messages (--signaling-max-queued-messages)",
        ),
        (
            s.handshake_timeout_secs != d.handshake_timeout_secs,
            "signaling.handshake_timeout_secs (--signaling-handshake-timeout)",
        ),
        (
            s.message_timeout_secs != d.message_timeout_secs,
            "signaling.message_timeout_secs (--signaling-message-timeout)",
        ),
        (
            s.turn_credentials != d.turn_credentials,
            "signaling.turn_credentials (--turn-credentials)",
        ),
        (
            s.credentials_per_minute != d.credentials_per_minute,
            "signaling.credentials_per_minute (--credential-rate)",
        ),
        (
            s.credential_burst != d.credential_burst,
            "signaling.credential_burst (--credential-burst)",
        ),
        (
            s.turn_user != d.turn_user,
            "signaling.turn_user (--signaling-turn-user)",
        ),
    ];
    keys.into_iter()
        .find(|(changed, _)| *changed)
        .map(|(_, k)| k)
}

fn signaling(c: &Config) -> Result<(), ConfigError> {
    let s = &c.signaling;
    if s.listen.is_empty() {
        if let Some(key) = changed_signaling_key(s) {
            return no_effect(
                key,
                "signaling is not served: set signaling.listen (--signaling ADDR; p2p serve serves 127.0.0.1:8080 and [::1]:8080 unless --no-signaling), or drop the key",
            );
        }
        return Ok(());
    }
    if !s.ice_servers.is_empty() && s.public_host.is_some() {
        return no_effect(
            "signaling.public_host (--public-host)",
            "signaling.ice_servers is set and goes out as it is, so no URL is made from public_host: drop one of them",
        );
    }
    // TURN on a wildcard address: the URLs handed out need an address
    // clients reach, the public host or the relay IP of that family.
    let first = c.stun.listen.first().filter(|_| c.stun.udp || c.stun.tcp);
    if let Some(first) = first {
        if c.turn.enabled()
            && s.ice_servers.is_empty()
            && s.public_host.is_none()
            && first.ip().is_unspecified()
            && c.wildcard_host(first.is_ipv4()).is_none()
        {
            return Err(ConfigError::Invalid(
                "TURN is on and STUN listens on 0.0.0.0 or :: (the first stun.listen, --listen), so the STUN/TURN URLs signaling hands out would name no address clients can reach: set signaling.public_host (--public-host HOST), the name or address clients reach this server by, or give TURN a relay IP of that family (turn.relay_ip, --relay-ip IP), which the URLs then name",
            ));
        }
    }
    let d = SignalingConfig::default();
    let rest = s.ice_servers.is_empty() && c.turn.enabled() && c.turn.auth_secret.is_some();
    if !rest && s.credential_ttl_secs != d.credential_ttl_secs {
        return no_effect(
            "signaling.credential_ttl_secs (--credential-ttl)",
            "it is the lifetime of the TURN REST credentials handed out, and this daemon makes none: they need turn.auth_secret (--auth-secret) and no signaling.ice_servers",
        );
    }
    if !c.hands_out_credentials()
        && (s.credentials_per_minute != d.credentials_per_minute
            || s.credential_burst != d.credential_burst)
    {
        return no_effect(
            "signaling.credentials_per_minute/credential_burst (--credential-rate/--credential-burst)",
            "this daemon hands out no TURN credentials; set turn.auth_secret (--auth-secret), signaling.turn_user (--signaling-turn-user) or signaling.ice_servers with credentials",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};

    /// Each case: a TOML document, the key the refusal must name, and a
    /// word of the fix.
    #[test]
    fn a_key_that_cannot_take_effect_is_refused_with_the_fix() {
        let cases = [
            ("[tls]\nlisten = [\"127.0.0.1:5349\"]", "tls.listen", "--tls-cert"),
            ("[turn]\nusers = [\"alice:secret\"]", "turn.users", "--realm"),
            ("[turn]\nauth_secret = \"s\"", "turn.auth_secret", "--realm"),
            ("[turn]\nrealm = \"example.org\"", "turn.realm", "--user"),
            ("[turn]\nrealm = \"\"\nusers = [\"a:b\"]", "turn.realm", "domain"),
            ("[turn]\nallow_peer = [\"10.0.0.0/8\"]", "turn.allow_peer", "--realm"),
            ("[turn]\nmax_port = 60000", "turn.max_port", "TURN is off"),
            (
                "[turn]\nrealm = \"r\"\nusers = [\"a:b\"]\nexternal_ip = [\"2001:db8::1\"]",
                "turn.external_ip",
                "--relay-ip",
            ),
            (
                "[stun]\nudp = false\nalt_listen = \"127.0.0.2:3479\"",
                "stun.alt_listen",
                "--no-udp",
            ),
            ("[stun]\nudp = false\nworkers = 2", "stun.workers", "UDP"),
            (
                "[stun]\ntcp = false\nudp = true\nmax_connections = 10",
                "stun.max_connections",
                "TCP",
            ),
            ("[signaling]\npage = false", "signaling.page", "--signaling ADDR"),
            (
                "[signaling]\nmax_room_size = 2",
                "signaling.max_room_size",
                "--no-signaling",
            ),
            (
                "[signaling]\nlisten = \"127.0.0.1:0\"\npublic_host = \"h\"\n[[signaling.ice_servers]]\nurls = [\"stun:x\"]",
                "signaling.public_host",
                "ice_servers",
            ),
            (
                "[signaling]\nlisten = \"127.0.0.1:0\"\ncredential_ttl_secs = 60",
                "signaling.credential_ttl_secs",
                "--auth-secret",
            ),
            (
                "[signaling]\nlisten = \"127.0.0.1:0\"\ncredential_burst = 3",
                "credential_burst",
                "--auth-secret",
            ),
        ];
        for (text, key, fix) in cases {
            match Config::from_toml_str(text) {
                Err(e @ ConfigError::NoEffect { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(key), "{text}: {msg}");
                    assert!(msg.contains(fix), "{text}: {msg}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn turn_on_a_wildcard_address_without_an_address_to_hand_out_is_refused() {
        let wild = "[stun]\nlisten = [\"0.0.0.0:3478\"]\n[signaling]\nlisten = \"127.0.0.1:0\"\n";
        let turn = "[turn]\nrealm = \"r\"\nusers = [\"a:b\"]\n";
        // No relay IP at all, or only one of the other family.
        for extra in ["", "relay_ip = [\"2001:db8::7\"]\n"] {
            let text = format!("{wild}{turn}{extra}");
            match Config::from_toml_str(&text) {
                Err(e @ ConfigError::Invalid(_)) => {
                    let msg = e.to_string();
                    assert!(msg.contains("--public-host"), "{text}: {msg}");
                    assert!(msg.contains("--relay-ip"), "{text}: {msg}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        // An address the URLs can name: the public host, a relay IP of
        // the family; or no URL to hand out: signaling off, TURN off.
        let ok = [
            format!("{turn}relay_ip = [\"192.0.2.7\"]\n{wild}"),
            format!("{turn}{wild}public_host = \"turn.example.org\"\n"),
            format!("{turn}[stun]\nlisten = [\"0.0.0.0:3478\"]\n"),
            wild.to_owned(),
        ];
        for text in ok {
            if let Err(e) = Config::from_toml_str(&text) {
                panic!("{text}: {e}");
            }
        }
    }

    #[test]
    fn the_same_keys_are_taken_where_they_take_effect() {
        let ok = [
            "[tls]\nlisten = [\"127.0.0.1:5349\"]\ncert = \"c.pem\"\nkey = \"k.pem\"",
            "[turn]\nrealm = \"r\"\nusers = [\"alice:secret\"]\nallow_peer = [\"10.0.0.0/8\"]",
            "[turn]\nrealm = \"r\"\nauth_secret = \"s\"\nmax_port = 60000",
            "[turn]\nrealm = \"r\"\nusers = [\"a:b\"]\nexternal_ip = [\"203.0.113.1\"]",
            "[stun]\nudp = false\ntcp = true\nmax_connections = 10",
            "[signaling]\nlisten = \"127.0.0.1:0\"\npage = false\nmax_room_size = 2",
            "[turn]\nrealm = \"r\"\nauth_secret = \"s\"\n[signaling]\nlisten = \"127.0.0.1:0\"\ncredential_ttl_secs = 60\ncredential_burst = 3",
            // At its default, a key is harmless wherever it is.
            "[signaling]\nmax_room_size = 8\npage = true",
            "[turn]\nmax_port = 65535",
        ];
        for text in ok {
            if let Err(e) = Config::from_toml_str(text) {
                panic!("{text}: {e}");
            }
        }
    }
}
