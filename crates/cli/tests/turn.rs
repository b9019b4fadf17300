//! `p2p turn`'s library (`p2p_cli::turn::run`) against the daemon on
//! loopback: Send indications and ChannelData over UDP, and an RFC 6062 TCP
//! relay (Connect, ConnectionBind on a second connection, raw bytes), each
//! echoed by a local peer and the allocation deleted at the end. Every step
//! is bounded in time.

use std::net::SocketAddr;
use std::time::Duration;

use p2p_cli::turn::{echo_peer, run, tcp_echo_peer, TurnOptions};
use p2p_server::{Config, Server};

const BOUND: Duration = Duration::from_secs(30);

fn options(server: SocketAddr, peer: SocketAddr) -> TurnOptions {
    TurnOptions {
        server,
        username: "alice".into(),
        password: "secret".into(),
        peer,
        tcp: false,
        tcp_relay: false,
        count: 10,
        channel: false,
        size: 300,
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_channel_and_tcp_relays_all_echo_and_delete() {
    let config = Config::from_toml_str(
        r#"
        [stun]
        listen = ["127.0.0.1:0"]
        [turn]
        realm = "example.org"
        allow_peer = ["127.0.0.0/8"]
        [turn.users]
        alice = "secret"
        "#,
    )
    .unwrap();
    let server = Server::bind(&config).await.unwrap();
    let addr = server.local_addrs().udp[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let here = SocketAddr::from(([127, 0, 0, 1], 0));
    let (udp_peer, udp_task) = echo_peer(here).await.unwrap();
    let (tcp_peer, tcp_task) = tcp_echo_peer(here).await.unwrap();

    tokio::time::timeout(BOUND, async {
        // Send indications, then ChannelData.
        for channel in [false, true] {
            let r = run(&TurnOptions {
                channel,
                ..options(addr, udp_peer)
            })
            .await
            .unwrap();
            assert_eq!((r.sent, r.echoed), (10, 10), "channel {channel}");
            assert_eq!(r.channel.is_some(), channel);
            assert_eq!(r.connection_id, None);
            assert!(r.deleted);
        }
        // RFC 6062 over the TCP control connection.
        let r = run(&TurnOptions {
            tcp_relay: true,
            ..options(addr, tcp_peer)
        })
        .await
        .unwrap();
        assert_eq!(r.transport, "tcp");
        assert_eq!((r.sent, r.echoed), (10, 10));
        assert!(r.connection_id.is_some());
        assert_eq!(r.channel, None);
        assert!(r.deleted);
        assert!(
            p2p_cli::turn::render(&r).contains("TCP relay, RFC 6062"),
            "{}",
            p2p_cli::turn::render(&r)
        );
        // A peer that is not there: the Connect fails with 447.
        let closed = {
            let l = std::net::TcpListener::bind(here).unwrap();
            l.local_addr().unwrap()
        };
        let e = run(&TurnOptions {
            tcp_relay: true,
            ..options(addr, closed)
        })
        .await
        .unwrap_err();
        assert!(e.to_string().contains("(447)"), "{e}");
    })
    .await
    .expect("in time");
    udp_task.abort();
    tcp_task.abort();
    let _ = stop.send(());
    running.await.unwrap();
}
