//! docs/signaling.md and the code cannot drift: every ```json client / ```json server
//! block of the doc must parse and be exactly what the implementation writes,
//! every message type and error code must appear in it, and the welcome example
//! must be what `Rooms` + `RestCredentialIceServers` produce.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use p2p_signaling::{
    ClientMsg, ErrorCode, IceServer, Limits, RestCredentialIceServers, Rooms, ServerMsg,
    StaticIceServers, CLIENT_TYPES, SERVER_TYPES,
};

const DOC: &str = include_str!("../../../docs/signaling.md");

/// `(info string, body)` of every fenced block whose info string starts with `json`.
fn json_blocks() -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.trim().strip_prefix("```json") else {
            continue;
        };
        let mut body = String::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        blocks.push((info.trim().to_owned(), body.trim().to_owned()));
    }
    blocks
}

fn client_examples() -> Vec<(String, ClientMsg)> {
    json_blocks()
        .into_iter()
        .filter(|(info, _)| info == "client")
        .map(|(_, body)| {
            let msg = ClientMsg::from_json(&body)
                .unwrap_or_else(|e| panic!("doc example does not parse ({e}): {body}"));
            (body, msg)
        })
        .collect()
}

fn server_examples() -> Vec<(String, ServerMsg)> {
    json_blocks()
        .into_iter()
        .filter(|(info, _)| info == "server")
        .map(|(_, body)| {
            let msg = ServerMsg::from_json(&body)
                .unwrap_or_else(|e| panic!("doc example does not parse ({e}): {body}"));
            (body, msg)
        })
        .collect()
}

#[test]
fn every_json_block_is_labelled_client_or_server() {
    let blocks = json_blocks();
    assert!(blocks.len() >= 20, "only {} json blocks", blocks.len());
    for (info, body) in blocks {
        assert!(
            info == "client" || info == "server",
            "unlabelled block: {body}"
        );
    }
}

#[test]
fn client_examples_are_exactly_what_the_code_writes() {
    for (body, msg) in client_examples() {
        assert_eq!(msg.to_json(), body);
    }
}

#[test]
fn server_examples_are_exactly_what_the_code_writes() {
    for (body, msg) in server_examples() {
        assert_eq!(msg.to_json(), body);
    }
}

#[test]
fn every_message_type_has_an_example() {
    let client: Vec<&str> = client_examples()
        .iter()
        .map(|(_, m)| m.type_name())
        .collect();
    for t in CLIENT_TYPES {
        assert!(client.contains(t), "no client example of {t}");
    }
    let server: Vec<&str> = server_examples()
        .iter()
        .map(|(_, m)| m.type_name())
        .collect();
    for t in SERVER_TYPES {
        assert!(server.contains(t), "no server example of {t}");
    }
}

#[test]
fn every_error_code_is_in_the_table() {
    for code in ErrorCode::ALL {
        let row = format!("| `{}` |", code.as_str());
        assert!(
            DOC.contains(&row),
            "error code {code} missing from the doc's table"
        );
    }
}

/// The welcome (STUN only) and the joined with TURN REST credentials of
/// the default credential policy, as the doc shows them.
#[test]
fn welcome_and_joined_examples_are_what_rest_credentials_produce() {
    let t0 = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let turn = RestCredentialIceServers {
        urls: vec![
            "turn:turn.example.org:3478?transport=udp".into(),
            "turn:turn.example.org:3478?transport=tcp".into(),
        ],
        secret: "north-secret".into(),
        ttl: Duration::from_secs(3600),
        user_prefix: "p2p-".into(),
    };
    struct Both(StaticIceServers, RestCredentialIceServers);
    impl p2p_signaling::IceServerProvider for Both {
        fn ice_servers(&self, peer: &str, now: std::time::SystemTime) -> Vec<IceServer> {
            let mut v = self.0.ice_servers(peer, now);
            v.extend(self.1.ice_servers(peer, now));
            v
        }
    }
    let stun = StaticIceServers(vec![IceServer::new(["stun:stun.example.org:3478"])]);
    let mut rooms =
        Rooms::new(Limits::default()).with_ice_servers(Arc::new(Both(stun, turn)), (t0, wall));
    let (alice, welcome) = rooms.connect(t0).expect("connect");
    let example = |name: &str| {
        server_examples()
            .into_iter()
            .find(|(_, m)| m.type_name() == name)
            .expect("example")
            .0
    };
    assert_eq!(welcome.to_json(), example("welcome"));
    let (bob, _) = rooms.connect(t0).expect("connect");
    rooms.handle_text(
        alice,
        t0,
        r#"{"type":"join","room":"demo-4f2a","name":"alice"}"#,
    );
    let out = rooms.handle_text(bob, t0, r#"{"type":"join","room":"demo-4f2a","id":1}"#);
    assert_eq!(out[0].1.to_json(), example("joined"));
}

#[test]
fn limits_table_matches_the_defaults() {
    let l = Limits::default();
    let rows = [
        format!("| peers per room | {} |", l.max_room_size),
        format!("| rooms per connection | {} |", l.max_rooms_per_conn),
        format!("| message size | {} KiB", l.max_message_size / 1024),
        format!(
            "{} messages/s sustained, bursts of {}",
            l.rate_per_second, l.burst
        ),
        format!("| idle timeout | {} s", l.idle_timeout.as_secs()),
    ];
    for row in rows {
        assert!(DOC.contains(&row), "doc lacks {row:?}");
    }
    assert_eq!((l.max_rooms, l.max_connections), (10_000, 10_000));
}
