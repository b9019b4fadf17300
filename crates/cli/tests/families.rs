//! `p2p serve` serving signaling on both address families: `--signaling`
//! repeated (or `[signaling] listen` as a list), one line per address, one
//! signaling server behind them (a peer on IPv4 and a peer on IPv6 meet in
//! one room), the page on each, and an IPv4 and an IPv6 listener sharing a
//! port (the IPv6 one is IPv6-only).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;
use p2p_signaling::{ServerMsg, SignalingClient};

/// The URLs of every "signaling on" line, in order; the daemon has said
/// the first already.
fn ws_urls(d: &mut Daemon, n: usize) -> Vec<String> {
    let prefix = "p2p serve: signaling on ";
    let mut lines: Vec<String> = d
        .seen
        .iter()
        .filter(|l| l.starts_with(prefix))
        .cloned()
        .collect();
    while lines.len() < n {
        lines.push(d.line(prefix));
    }
    lines
        .iter()
        .map(|l| {
            l[prefix.len()..]
                .split([',', ' '])
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .parse()
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// `GET /` on `addr`: the status line and whether the page came.
fn get_page(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, BOUND).expect("connect");
    s.set_read_timeout(Some(BOUND)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

async fn two_families_meet(v4: &str, v6: &str) {
    let mut a = SignalingClient::connect(v4)
        .await
        .expect("connect over IPv4");
    a.join("both", None, None).await.expect("join over IPv4");
    let mut b = SignalingClient::connect(v6)
        .await
        .expect("connect over IPv6");
    let peers = b.join("both", None, None).await.expect("join over IPv6");
    assert_eq!(peers.len(), 1, "the IPv6 peer sees the IPv4 one: {peers:?}");
    assert_eq!(peers[0].id, a.peer_id());
    let b_id = b.peer_id().to_owned();
    b.send_offer(a.peer_id(), "v=0\r\n").await.expect("offer");
    let got = tokio::time::timeout(BOUND, async {
        loop {
            match a.recv().await {
                Ok(Some(ServerMsg::Offer { from, sdp })) => break (from, sdp),
                Ok(Some(_)) => continue,
                other => panic!("the IPv4 peer got {other:?}"),
            }
        }
    })
    .await
    .expect("the offer crossed families in time");
    assert_eq!(got, (b_id, "v=0\r\n".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signaling_on_each_family_is_one_server_with_the_page_on_each() {
    let mut d = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--signaling",
        "127.0.0.1:0",
        "--signaling",
        "[::1]:0",
    ]);
    let urls = ws_urls(&mut d, 2);
    assert!(urls[0].starts_with("ws://127.0.0.1:"), "{urls:?}");
    assert!(urls[1].starts_with("ws://[::1]:"), "{urls:?}");
    for url in &urls {
        let page = get_page(addr_of(url));
        assert!(page.starts_with("HTTP/1.1 200"), "{url}: {page:.80}");
        assert!(page.contains("p2p chat"), "{url}: no page");
    }
    two_families_meet(&urls[0], &urls[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_list_in_the_file_serves_both_families_on_one_port() {
    // A port free on both loopbacks (the two listeners must not collide:
    // the IPv6 one is IPv6-only).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = TempDir::new("families");
    let file = dir.write(
        "p2p.toml",
        &format!(
            "[stun]\nlisten = [\"127.0.0.1:0\"]\n[signaling]\nlisten = [\"127.0.0.1:{port}\", \"[::1]:{port}\"]\n"
        ),
    );
    let mut d = Daemon::start(&["--config", &file]);
    let urls = ws_urls(&mut d, 2);
    assert_eq!(
        urls,
        [
            format!("ws://127.0.0.1:{port}/ws"),
            format!("ws://[::1]:{port}/ws")
        ]
    );
    two_families_meet(&urls[0], &urls[1]).await;
    // An address named twice is refused with its key.
    let twice = dir.write(
        "twice.toml",
        "[signaling]\nlisten = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n",
    );
    let out = run(&["serve", "--config", &twice]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("signaling.listen names an address twice"),
        "{err}"
    );
}
