//! `p2p demo` end to end: the daemon, two peers and the report, on loopback.

use std::process::Command;

fn demo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_p2p"))
        .arg("demo")
        .args(args)
        .output()
        .expect("p2p runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "p2p demo {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn demo_connects_two_peers_and_reports() {
    let out = demo(&["--messages", "3"]);
    assert!(out.contains("p2p demo report"), "{out}");
    assert!(out.contains("candidates (alice): host 127.0.0.1:"), "{out}");
    assert!(out.contains("selected pair:"), "{out}");
    assert!(
        out.contains("alice sent 3, bob received 3 and echoed 3, alice received 3"),
        "{out}"
    );
    assert!(
        out.contains("connected via"),
        "the timeline is printed: {out}"
    );
}

#[test]
fn demo_relay_only_goes_through_turn_and_shows_the_checks() {
    let out = demo(&["--relay-only", "--show-checks", "--messages", "2"]);
    assert!(
        out.contains("selected pair:      relay 127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains("<-> relay 127.0.0.1:"), "{out}");
    assert!(out.contains("check list:"), "{out}");
    assert!(
        !out.contains("candidates (bob):   host"),
        "relay-only gathers no host candidate: {out}"
    );
}
