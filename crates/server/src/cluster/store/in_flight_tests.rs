//! The store against a stand-in Redis that holds its answers to PUBLISH:
//! a pipeline goes out while the one before it is unanswered, in order.

use std::time::Duration;

use p2p_signaling::{ClusterOp, ServerMsg};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::*;

/// One command as an array of bulk strings, or `None` at the end.
async fn read_command(r: &mut BufReader<OwnedReadHalf>) -> Option<Vec<String>> {
    let mut line = String::new();
    r.read_line(&mut line).await.ok()?;
    let n: usize = line.trim().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        line.clear();
        r.read_line(&mut line).await.ok()?;
        let len: usize = line.trim().strip_prefix('$')?.parse().ok()?;
        let mut buf = vec![0; len + 2];
        r.read_exact(&mut buf).await.ok()?;
        buf.truncate(len);
        args.push(String::from_utf8(buf).ok()?);
    }
    Some(args)
}

/// A stand-in Redis: answers every command at once (`+OK`, an empty
/// array for EVAL, subscribe confirmations), except PUBLISH: each one's
/// payload goes to `published` and its answer waits until `release` is
/// true. Answers keep their order on a connection.
async fn stand_in(
    listener: TcpListener,
    published: mpsc::UnboundedSender<String>,
    release: watch::Receiver<bool>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let published = published.clone();
        let mut release = release.clone();
        let (read, mut write) = stream.into_split();
        // Answers in order; a PUBLISH's waits for the release.
        let (answers, mut to_write) = mpsc::unbounded_channel::<(bool, String)>();
        tokio::spawn(async move {
            while let Some((held, answer)) = to_write.recv().await {
                if held && release.wait_for(|go| *go).await.is_err() {
                    return;
                }
                if write.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let mut r = BufReader::new(read);
            while let Some(cmd) = read_command(&mut r).await {
                let name = cmd.first().map(|c| c.to_ascii_uppercase());
                let answer = match name.as_deref() {
                    Some("PUBLISH") => {
                        let _ = published.send(cmd.get(2).cloned().unwrap_or_default());
                        (true, ":1\r\n".to_owned())
                    }
                    Some("SUBSCRIBE") => (
                        false,
                        cmd.iter()
                            .skip(1)
                            .enumerate()
                            .map(|(i, ch)| {
                                format!(
                                    "*3\r\n$9\r\nsubscribe\r\n${}\r\n{ch}\r\n:{}\r\n",
                                    ch.len(),
                                    i + 1
                                )
                            })
                            .collect(),
                    ),
                    Some("EVAL") => (false, "*0\r\n".to_owned()),
                    _ => (false, "+OK\r\n".to_owned()),
                };
                if answers.send(answer).is_err() {
                    return;
                }
            }
        });
    }
}

/// The next payload published, within 5 s.
async fn next(published: &mut mpsc::UnboundedReceiver<String>, what: &str) -> String {
    tokio::time::timeout(Duration::from_secs(5), published.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: no PUBLISH within 5 s"))
        .expect("stand-in gone")
}

fn bye(to: &str, from: &str) -> ClusterOp {
    ClusterOp::Relay {
        node: "n1".into(),
        to: to.into(),
        msg: ServerMsg::Bye { from: from.into() },
    }
}

#[tokio::test]
async fn a_message_goes_to_redis_while_the_pipeline_before_it_is_unanswered() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("redis://{}/", listener.local_addr().expect("addr"));
    let (published_tx, mut published) = mpsc::unbounded_channel();
    let (release_tx, release_rx) = watch::channel(false);
    tokio::spawn(stand_in(listener, published_tx, release_rx));
    let links = connect(&url, Duration::from_secs(3))
        .await
        .expect("connect");
    let (events_tx, _events) = mpsc::channel(16);
    let stats = Arc::new(StoreStats::default());
    let store = Store::new(
        StoreConfig {
            node: "n0".into(),
            prefix: "p2p:".into(),
            heartbeat: Duration::from_secs(60),
            expiry: Duration::from_secs(300),
        },
        links,
        events_tx,
        stats.clone(),
        None,
    );
    let (ops, ops_rx) = mpsc::channel(16);
    let task = tokio::spawn(store.run(ops_rx));

    ops.send(bye("p1", "q1")).await.expect("send");
    let first = next(&mut published, "first").await;
    assert!(first.starts_with("p1\n"), "{first}");
    // The first PUBLISH is unanswered: the second goes all the same.
    ops.send(bye("p2", "q2")).await.expect("send");
    let second = next(&mut published, "second, with the first unanswered").await;
    assert!(second.starts_with("p2\n"), "{second}");
    assert_eq!(stats.relayed_out.load(Relaxed), 0, "nothing answered yet");
    // Past MAX_IN_FLIGHT unanswered, the next ones wait and go together.
    for i in 3..=MAX_IN_FLIGHT {
        ops.send(bye(&format!("p{i}"), "q")).await.expect("send");
        let p = next(&mut published, "in flight").await;
        assert!(p.starts_with(&format!("p{i}\n")), "{p}");
    }
    ops.send(bye("pa", "q")).await.expect("send");
    ops.send(bye("pb", "q")).await.expect("send");
    let held = tokio::time::timeout(Duration::from_millis(300), published.recv()).await;
    assert!(held.is_err(), "a fifth pipeline went out: {held:?}");
    release_tx.send(true).expect("release");
    let last = next(&mut published, "after the answers").await;
    assert_eq!(
        outbox::messages(&last)
            .map(|(to, _)| to)
            .collect::<Vec<_>>(),
        ["pa", "pb"],
        "the waiting messages share one PUBLISH, in order"
    );
    drop(ops);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the store leaves")
        .expect("no panic");
    assert_eq!(stats.relayed_out.load(Relaxed), MAX_IN_FLIGHT as u64 + 2);
    assert_eq!(stats.publishes.load(Relaxed), MAX_IN_FLIGHT as u64 + 1);
}
