//! Two peers through the real binary on loopback: `p2p connect`, `p2p send`
//! and `p2p receive` meet through `p2p serve`. Ctrl-C on one peer closes
//! the connection so that the other learns at once (not after its consent
//! checks run out, about 30 s), and so does a peer killed without a word
//! (SIGKILL) within two seconds; a file arrives intact, checked end to end;
//! a receiver that is stopped leaves no partial file behind.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use common::JsonProc as Proc;

const BOUND: Duration = Duration::from_secs(30);

/// `p2p serve` on loopback ports of its own; returns it and the ws:// URL.
fn serve() -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_p2p"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--signaling",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("p2p runs");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("p2p serve: signaling on ") {
                let url = rest.split([' ', ',']).next().unwrap_or_default();
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let (_never, events) = channel();
    let p = Proc {
        child,
        stdin: None,
        events,
    };
    let url = rx
        .recv_timeout(BOUND)
        .expect("p2p serve announces signaling");
    (p, url)
}

fn net<'a>(url: &'a str, room: &'a str) -> Vec<&'a str> {
    vec![
        "--signaling",
        url,
        "--room",
        room,
        "--loopback",
        "--no-port-mapping",
        "--json",
    ]
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("p2p-peers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes that no two offsets of a chunk share a pattern with.
fn payload(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn ctrl_c_on_one_peer_closes_the_other_within_a_second() {
    let (_serve, url) = serve();
    let mut a = Proc::spawn(&[&["connect"][..], &net(&url, "ctrl-c")].concat());
    let mut b = Proc::spawn(&[&["connect"][..], &net(&url, "ctrl-c")].concat());
    a.wait_event("ready", BOUND);
    b.wait_event("ready", BOUND);
    // A line each way first: the chat channel is open on both sides.
    writeln!(a.stdin.as_mut().expect("stdin"), "from a").expect("write");
    writeln!(b.stdin.as_mut().expect("stdin"), "from b").expect("write");
    a.wait_event("message", BOUND);
    b.wait_event("message", BOUND);

    let t0 = Instant::now();
    a.signal("-INT");
    let closed = b.wait_event("closed", BOUND);
    let learnt = t0.elapsed();
    // Consent would take about 30 s; the close itself a round trip.
    assert!(
        learnt < Duration::from_secs(1),
        "the peer learnt of the close after {learnt:?}: {closed}"
    );
    let sa = a.wait_exit(Duration::from_secs(5));
    assert_eq!(sa.code(), Some(130), "Ctrl-C exits 130");
    let sb = b.wait_exit(Duration::from_secs(5));
    assert!(sb.success(), "the peer that was left exits 0: {sb:?}");
}

#[test]
fn sigterm_on_one_peer_closes_the_other_too() {
    let (_serve, url) = serve();
    let mut a = Proc::spawn(&[&["connect"][..], &net(&url, "term")].concat());
    let b = Proc::spawn(&[&["connect"][..], &net(&url, "term")].concat());
    a.wait_event("ready", BOUND);
    b.wait_event("ready", BOUND);
    let t0 = Instant::now();
    a.signal("-TERM");
    b.wait_event("closed", BOUND);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(a.wait_exit(Duration::from_secs(5)).code(), Some(130));
}

#[test]
fn a_peer_killed_without_a_word_is_given_up_within_two_seconds() {
    let (_serve, url) = serve();
    let mut a = Proc::spawn(&[&["connect"][..], &net(&url, "kill")].concat());
    let b = Proc::spawn(&[&["connect"][..], &net(&url, "kill")].concat());
    a.wait_event("ready", BOUND);
    b.wait_event("ready", BOUND);
    // SIGKILL: no close, no bye. The server sees its WebSocket drop and
    // says peer-left; B checks the path, nobody answers, B gives up.
    let t0 = Instant::now();
    a.signal("-KILL");
    let closed = b.wait_event("closed", BOUND);
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the dead peer was given up after {took:?} (consent alone: 30 s): {closed}"
    );
    a.wait_exit(Duration::from_secs(5));
}

#[test]
fn send_and_receive_move_a_file_intact() {
    let (_serve, url) = serve();
    let dir = temp_dir("file");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let bytes = payload(2 * 1024 * 1024 + 77);
    let src = dir.join("data.bin");
    std::fs::write(&src, &bytes).expect("write");
    let want = sha256_hex(&bytes);

    let out_s = out.to_str().expect("utf-8");
    let src_s = src.to_str().expect("utf-8");
    let mut rx = Proc::spawn(&[&["receive", "--out", out_s][..], &net(&url, "file")].concat());
    let mut tx = Proc::spawn(&[&["send", src_s][..], &net(&url, "file")].concat());
    let sent = tx.wait_event("done", BOUND);
    let got = rx.wait_event("done", BOUND);
    assert_eq!(sent["sha256"], want.as_str());
    assert_eq!(got["sha256"], want.as_str());
    assert!(tx.wait_exit(BOUND).success());
    assert!(rx.wait_exit(BOUND).success());
    assert_eq!(
        std::fs::read(out.join("data.bin")).expect("received"),
        bytes
    );
    assert_no_part_files(&out);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The transfer's `--json` events of `p2p send`/`receive` after `ready`,
/// in order, up to and including `done` (connection events that may come
/// in between, such as a late `gathering_complete`, left out).
fn after_ready(p: &Proc) -> Vec<serde_json::Value> {
    const TRANSFER: [&str; 6] = [
        "sending",
        "receiving",
        "progress",
        "sent",
        "received",
        "done",
    ];
    let all = p.events_until("done", BOUND, |v| v["event"] == "done");
    let ready = all
        .iter()
        .position(|v| v["event"] == "ready")
        .unwrap_or_else(|| panic!("no ready in {all:#?}"));
    all[ready + 1..]
        .iter()
        .filter(|v| TRANSFER.iter().any(|t| v["event"] == *t))
        .cloned()
        .collect()
}

#[test]
fn send_and_receive_report_json_progress_and_each_sides_sha256_after_ready() {
    let (_serve, url) = serve();
    let dir = temp_dir("json");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    // Small: done in well under the second between periodic reports, so
    // only the last one (every byte in) comes.
    let bytes = payload(300 * 1024 + 5);
    let size = bytes.len() as u64;
    let src = dir.join("small.bin");
    std::fs::write(&src, &bytes).expect("write");
    let want = sha256_hex(&bytes);

    let out_s = out.to_str().expect("utf-8");
    let src_s = src.to_str().expect("utf-8");
    let rx = Proc::spawn(&[&["receive", "--out", out_s][..], &net(&url, "json")].concat());
    let tx = Proc::spawn(&[&["send", src_s][..], &net(&url, "json")].concat());
    let names = |v: &[serde_json::Value]| -> Vec<String> {
        v.iter()
            .map(|e| e["event"].as_str().unwrap_or_default().to_owned())
            .collect()
    };

    let sent = after_ready(&tx);
    assert_eq!(
        names(&sent),
        ["sending", "progress", "sent", "done"],
        "{sent:#?}"
    );
    assert_eq!(sent[0]["name"], "small.bin");
    assert_eq!(sent[0]["bytes"], size);
    assert_eq!(
        (&sent[1]["bytes"], &sent[1]["total"]),
        (&size.into(), &size.into())
    );
    assert!(sent[1]["bytes_per_sec"].is_u64());
    assert_eq!(sent[2]["sha256"], want.as_str());
    assert_eq!(sent[2]["bytes"], size);
    assert_eq!(sent[3]["sha256"], want.as_str());

    let got = after_ready(&rx);
    assert_eq!(
        names(&got),
        ["receiving", "progress", "received", "done"],
        "{got:#?}"
    );
    assert_eq!(
        (&got[0]["name"], &got[0]["bytes"]),
        (&"small.bin".into(), &size.into())
    );
    assert_eq!(
        (&got[1]["bytes"], &got[1]["total"]),
        (&size.into(), &size.into())
    );
    assert_eq!(got[2]["sha256"], want.as_str());
    assert_eq!(got[3]["sha256"], want.as_str());
    assert!(got[3]["ms"].is_u64() && got[3]["bytes_per_sec"].is_u64());
    for e in sent.iter().chain(&got) {
        assert!(e["t_ms"].is_u64() && e["text"].is_string(), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_receiver_that_holds_the_name_refuses_and_the_sender_says_why() {
    let (_serve, url) = serve();
    let dir = temp_dir("exists");
    let src = dir.join("same.txt");
    std::fs::write(&src, b"new").expect("write");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    std::fs::write(out.join("same.txt"), b"old").expect("write");

    let out_s = out.to_str().expect("utf-8");
    let src_s = src.to_str().expect("utf-8");
    let mut rx = Proc::spawn(&[&["receive", "--out", out_s][..], &net(&url, "exists")].concat());
    let mut tx = Proc::spawn(&[&["send", src_s][..], &net(&url, "exists")].concat());
    let st = tx.wait_exit(BOUND);
    assert_eq!(st.code(), Some(1), "the sender fails");
    assert_eq!(rx.wait_exit(BOUND).code(), Some(1), "the receiver fails");
    // The old file is untouched.
    assert_eq!(std::fs::read(out.join("same.txt")).expect("kept"), b"old");
    assert_no_part_files(&out);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_interrupted_receiver_leaves_no_part_file_and_the_sender_learns() {
    let (_serve, url) = serve();
    let dir = temp_dir("stop");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    // Big enough that the transfer is still under way when the receiver
    // is stopped at its first progress report.
    let src = dir.join("big.bin");
    std::fs::write(&src, payload(64 * 1024 * 1024)).expect("write");

    let out_s = out.to_str().expect("utf-8");
    let src_s = src.to_str().expect("utf-8");
    let mut rx = Proc::spawn(&[&["receive", "--out", out_s][..], &net(&url, "stop")].concat());
    let mut tx = Proc::spawn(&[&["send", src_s][..], &net(&url, "stop")].concat());
    rx.wait_event("receiving", BOUND);
    let t0 = Instant::now();
    rx.signal("-INT");
    assert_eq!(rx.wait_exit(Duration::from_secs(5)).code(), Some(130));
    let st = tx.wait_exit(Duration::from_secs(5));
    assert_eq!(st.code(), Some(1), "the sender fails: {st:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(!out.join("big.bin").exists(), "nothing under the name");
    assert_no_part_files(&out);
    let _ = std::fs::remove_dir_all(&dir);
}

fn assert_no_part_files(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".p2p-part"))
        .collect();
    assert!(left.is_empty(), "partial files left: {left:?}");
}
