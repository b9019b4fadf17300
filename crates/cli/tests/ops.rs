//! What operators and users trip over, through the real binary: settings
//! that could not take effect stop `p2p serve` with the fix; a second
//! daemon on a UDP port is refused; the sample configuration; logs to a
//! file, as JSON, without colours off a terminal; server addresses as
//! names, URIs or without a port; a 403 explained at the client and its
//! rule logged at the server; a CA certificate used as a server's;
//! completions and man pages.

mod common;

use common::*;

/// Each case: `p2p serve` flags (a file's keys where given), and words
/// the error must contain (the key or flag, and the fix).
#[test]
fn a_setting_that_cannot_take_effect_stops_p2p_serve_with_the_fix() {
    let dir = TempDir::new("misconfig");
    let users_file = dir.write("users.toml", "[turn]\nusers = [\"alice:secret\"]\n");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--tls-listen", "127.0.0.1:0"],
            vec!["tls.listen (--tls-listen) has no effect", "--tls-cert"],
        ),
        (
            vec!["--user", "alice:secret"],
            vec!["turn.users (--user) has no effect", "--realm"],
        ),
        (
            vec!["--auth-secret", "s"],
            vec!["turn.auth_secret (--auth-secret)", "--realm"],
        ),
        (
            vec!["--realm", "example.org"],
            vec!["turn.realm (--realm)", "--user", "--auth-secret"],
        ),
        (
            vec!["--config", &users_file],
            vec!["turn.users (--user) has no effect", "--realm"],
        ),
        (
            vec!["--allow-peer", "10.0.0.0/8"],
            vec!["turn.allow_peer (--allow-peer)", "TURN is off"],
        ),
        (
            vec!["--no-udp", "--alt-listen", "127.0.0.2:0"],
            vec!["stun.alt_listen (--alt-listen)", "--no-udp"],
        ),
        (
            vec!["--no-udp", "--workers", "2"],
            vec!["stun.workers (--workers)"],
        ),
        (
            vec!["--no-signaling", "--no-page"],
            vec!["signaling.page (--no-page)", "--signaling ADDR"],
        ),
        (
            vec!["--no-signaling", "--public-host", "example.org"],
            vec!["signaling.public_host (--public-host)"],
        ),
        (
            vec!["--credential-ttl", "60"],
            vec![
                "signaling.credential_ttl_secs (--credential-ttl)",
                "--auth-secret",
            ],
        ),
        (
            vec![
                "--realm",
                "r",
                "--user",
                "a:b",
                "--external-ip",
                "2001:db8::1",
            ],
            vec!["turn.external_ip (--external-ip)", "--relay-ip"],
        ),
        (vec!["--log", "p2p=nonsense=1"], vec!["log level"]),
        (
            vec!["--no-udp", "--no-tcp"],
            vec![
                "every STUN transport is off",
                "--no-udp --no-tcp",
                "--tls-cert",
            ],
        ),
    ];
    for (flags, words) in cases {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--signaling",
            "127.0.0.1:0",
        ];
        if flags.contains(&"--no-signaling") {
            args.pop();
            args.pop();
        }
        args.extend(&flags);
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flags:?} started: {err}");
        for w in words {
            assert!(err.contains(w), "{flags:?}: {err:?} lacks {w:?}");
        }
    }
}

#[test]
fn a_second_daemon_on_a_udp_port_another_holds_is_refused() {
    let mut first = Daemon::start(&["--listen", "127.0.0.1:0", "--no-signaling"]);
    let udp = first.udp();
    let port = udp.to_string();
    for extra in [&["--no-tcp"][..], &[][..]] {
        let mut args = vec!["serve", "--listen", &port, "--no-signaling"];
        args.extend(extra);
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "a second daemon started: {err}");
        assert!(err.contains(&format!("cannot bind udp {udp}")), "{err}");
        assert!(err.contains("another program already serves UDP"), "{err}");
        assert!(err.contains("--listen"), "{err}");
    }
    // The first daemon alone answers every request.
    for _ in 0..6 {
        let out = run(&["stun", &port, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    first.signal("TERM");
    let stopped = first.line("p2p serve: stopped; ");
    assert!(stopped.contains("answered=6"), "{stopped}");
}

#[test]
fn print_config_writes_every_key_and_parses_back_to_the_defaults() {
    let out = run(&["serve", "--print-config"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let cfg = p2p_server::Config::from_toml_str(&text).unwrap();
    assert_eq!(cfg, p2p_server::Config::default());
    assert!(text.contains("users = []"), "{text}");
    // And the daemon starts from it.
    let dir = TempDir::new("print-config");
    let file = dir.write("p2p.toml", &text);
    let d = Daemon::start(&[
        "--config",
        &file,
        "--listen",
        "127.0.0.1:0",
        "--signaling",
        "127.0.0.1:0",
    ]);
    assert!(
        d.seen.iter().any(|l| l.contains("browser page")),
        "{:?}",
        d.seen
    );
    // Flags and --print-config do not mix (it would ignore them).
    let out = run(&["serve", "--print-config", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn logs_go_to_a_file_as_json_and_stderr_has_no_colour_off_a_terminal() {
    let dir = TempDir::new("logs");
    let log = dir.path("p2p.log");
    let mut d = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--no-signaling",
        "--log-file",
        path_str(&log),
        "--log-format",
        "json",
    ]);
    d.signal("HUP");
    d.line("p2p serve: SIGHUP: ");
    let deadline = std::time::Instant::now() + BOUND;
    let text = loop {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        if t.contains("SIGHUP") || std::time::Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let line = text
        .lines()
        .find(|l| l.contains("SIGHUP"))
        .unwrap_or_else(|| panic!("no SIGHUP line in {text:?}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "INFO", "{line}");
    assert!(!text.contains('\x1b'), "colour codes in the file");
    assert!(
        d.stderr().is_empty(),
        "logged to stderr too: {}",
        d.stderr()
    );

    // Text on stderr, which is a pipe here: no colour codes.
    let mut d = Daemon::start(&["--listen", "127.0.0.1:0", "--no-signaling"]);
    d.signal("HUP");
    d.line("p2p serve: SIGHUP: ");
    let err = d.wait_stderr("SIGHUP");
    assert!(!err.contains('\x1b'), "colour codes on a pipe: {err:?}");
}

#[test]
fn client_commands_take_names_uris_and_default_ports_and_name_the_address() {
    let d = Daemon::start(&["--listen", "127.0.0.1:0", "--no-signaling"]);
    let port = d.udp().port();
    for server in [
        format!("localhost:{port}"),
        format!("stun:127.0.0.1:{port}"),
        format!("stun:localhost:{port}"),
        format!("127.0.0.1:{port}"),
    ] {
        let out = run(&["stun", &server, "--json"]);
        assert!(
            out.status.success(),
            "{server}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v["mapped"].as_str().is_some(), "{v}");
    }
    let out = run(&["stun", &format!("localhost:{port}"), "--tcp"]);
    assert!(out.status.success());
    // A refused connection names the server, as written and resolved.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(&["stun", &format!("localhost:{closed}"), "--tcp"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "localhost:{closed} (127.0.0.1:{closed}) over tcp: Connection refused"
        )),
        "{err}"
    );
    let out = run(&[
        "turn",
        &format!("127.0.0.1:{closed}"),
        "--tcp",
        "--user",
        "a:b",
        "--echo-peer",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "TURN server 127.0.0.1:{closed}: Connection refused"
        )),
        "{err}"
    );
    // Malformed ones say what is expected.
    let out = run(&["stun", "http://example.org"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stun:"));
}

#[test]
fn refused_credentials_and_a_refused_peer_are_explained_at_the_client_and_logged_by_the_server() {
    let d = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--no-signaling",
        "--realm",
        "example.org",
        "--user",
        "alice:secret",
    ]);
    let server = d.udp().to_string();
    // A wrong password, an unknown user: what to check, at the client; the
    // daemon logs why at its default level, counted.
    for user in ["alice:wrong", "bob:secret"] {
        let out = run(&["turn", &server, "--user", user, "--echo-peer"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("(error 401)"), "{user}: {err}");
        assert!(
            err.contains("knows no such user, or the password differs"),
            "{err}"
        );
        assert!(err.contains("--user NAME:PASSWORD"), "{err}");
    }
    // The daemon counts failures in a summary per 10 s window (one INFO
    // line, not one per failure: issue 18.4).
    d.wait_stderr("wrong password 1");
    d.wait_stderr("unknown user 1");
    let out = run(&["turn", &server, "--user", "alice:secret", "--echo-peer"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("CreatePermission for 127.0.0.1:"), "{err}");
    assert!(
        err.contains("peer policy refuses this peer's address (403)"),
        "{err}"
    );
    assert!(err.contains("--allow-peer"), "{err}");
    // The daemon logs it at its default level, with the rule.
    let log = d.wait_stderr("turn peer refused (403)");
    assert!(log.contains("loopback (127.0.0.0/8)"), "{log}");
    assert!(log.contains("user=alice") || log.contains("alice"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_certificate_as_the_servers_is_named_with_the_fix() {
    let dir = TempDir::new("ca-as-leaf");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let cert_file = dir.write("cert.pem", &cert.pem());
    let key_file = dir.write("key.pem", &key.serialize_pem());
    let d = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--no-signaling",
        "--tls-cert",
        &cert_file,
        "--tls-key",
        &key_file,
        "--tls-listen",
        "127.0.0.1:0",
    ]);
    // The daemon warns at start.
    let log = d.wait_stderr("CaUsedAsEndEntity");
    assert!(log.contains("basicConstraints=critical,CA:FALSE"), "{log}");
    // The client says what is wrong and what to do.
    let tls = d.addr("p2p serve: STUN over TLS on ").to_string();
    let out =
        tokio::task::spawn_blocking(move || run(&["stun", &tls, "--tls", "--ca", &cert_file]))
            .await
            .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is a CA certificate"), "{err}");
    assert!(err.contains("CA:FALSE"), "{err}");
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("print-config"), "{shell}: no serve flags");
        assert!(text.contains("nat-type"), "{shell}: no commands");
    }
    let dir = TempDir::new("man");
    let out = run(&["man", "--out", path_str(&dir.0)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in ["p2p.1", "p2p-serve.1", "p2p-connect.1"] {
        let text = std::fs::read_to_string(dir.path(page)).unwrap();
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
    }
    let serve = std::fs::read_to_string(dir.path("p2p-serve.1")).unwrap();
    assert!(
        serve.contains("print\\-config"),
        "the serve page lacks its flags"
    );
}

#[test]
fn every_help_has_examples_and_says_what_the_daemon_does() {
    let top = String::from_utf8(run(&["--help"]).stdout).unwrap();
    for w in ["STUN", "TURN", "signaling", "metrics"] {
        assert!(top.contains(w), "top-level help lacks {w}");
    }
    for cmd in [
        "serve",
        "stun",
        "nat-type",
        "turn",
        "connect",
        "send",
        "receive",
        "demo",
        "completions",
        "man",
    ] {
        let help = String::from_utf8(run(&[cmd, "--help"]).stdout).unwrap();
        assert!(
            help.contains("Examples:"),
            "p2p {cmd} --help has no examples"
        );
    }
    let serve = String::from_utf8(run(&["help"]).stdout).unwrap();
    let line = serve
        .lines()
        .find(|l| l.trim_start().starts_with("serve"))
        .unwrap();
    for w in ["STUN", "TURN", "signaling", "metrics"] {
        assert!(line.contains(w), "the serve summary lacks {w}: {line}");
    }
}

/// A `p2p connect` that stays up (its stdin stays open) until dropped.
struct Chat(std::process::Child);

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `p2p connect` in `room`, started in the background; returns once its
/// stderr says it is ready.
fn chat(url: &str, room: &str, ready: std::sync::mpsc::Sender<()>) -> Chat {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut child = p2p()
        .args(["connect", "--signaling", url, "--room", room])
        .args(["--loopback", "--bind", "127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("p2p runs");
    let err = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err)
            .split(b'\n')
            .map_while(Result::ok)
        {
            if String::from_utf8_lossy(&line).contains("ready in") {
                let _ = ready.send(());
            }
        }
    });
    Chat(child)
}

#[test]
fn a_third_peer_in_a_two_person_room_is_told_the_room_is_busy() {
    let d = Daemon::start(&["--listen", "127.0.0.1:0", "--signaling", "127.0.0.1:0"]);
    let url = d.ws_url();
    let (tx, rx) = std::sync::mpsc::channel();
    let _a = chat(&url, "two", tx.clone());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let _b = chat(&url, "two", tx);
    for _ in 0..2 {
        rx.recv_timeout(BOUND).expect("both peers ready");
    }
    let started = std::time::Instant::now();
    let out = run(&[
        "connect",
        "--signaling",
        &url,
        "--room",
        "two",
        "--loopback",
        "--bind",
        "127.0.0.1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("room \"two\" is busy"), "{err}");
    assert!(err.contains("choose another room"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "told after {:?}, not at the join",
        started.elapsed()
    );
}

/// What `d` wrote on stderr by a moment after its start (the warnings
/// of its start come right after the line that names the signaling port).
fn stderr_after_start(d: Daemon) -> String {
    std::thread::sleep(std::time::Duration::from_millis(300));
    d.stderr()
}

#[test]
fn signaling_served_in_cleartext_beyond_loopback_is_warned_about_with_the_fix() {
    let warning = "is not encrypted";
    let open = Daemon::start(&["--listen", "127.0.0.1:0", "--signaling", "0.0.0.0:0"]);
    let err = open.wait_stderr(warning);
    assert!(err.contains("TURN credentials"), "{err}");
    assert!(err.contains("--signaling-tls"), "{err}");
    assert!(err.contains("WARN"), "{err}");

    let local = Daemon::start(&["--listen", "127.0.0.1:0", "--signaling", "127.0.0.1:0"]);
    let err = stderr_after_start(local);
    assert!(!err.contains(warning), "loopback warned: {err}");

    let dir = TempDir::new("cleartext");
    let (_ca, cert, key) = ca_and_leaf();
    let cert = dir.write("cert.pem", &cert);
    let key = dir.write("key.pem", &key);
    let tls = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--signaling",
        "0.0.0.0:0",
        "--signaling-cert",
        &cert,
        "--signaling-key",
        &key,
    ]);
    assert!(
        tls.seen.iter().any(|l| l.contains("wss://")),
        "{:?}",
        tls.seen
    );
    let err = stderr_after_start(tls);
    assert!(!err.contains(warning), "TLS warned: {err}");
}

#[test]
fn relay_only_against_static_users_not_handed_out_fails_at_the_join_with_why() {
    let d = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--signaling",
        "127.0.0.1:0",
        "--realm",
        "example.org",
        "--user",
        "alice:secret",
    ]);
    let url = d.ws_url();
    let started = std::time::Instant::now();
    // Alone in the room: it fails without waiting for a peer.
    let out = run(&[
        "connect",
        "--signaling",
        &url,
        "--room",
        "relay",
        "--relay-only",
        "--loopback",
        "--bind",
        "127.0.0.1",
        "--json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("\"reason\":\"no_relay\""), "{err}");
    assert!(err.contains("not-offered"), "{err}");
    assert!(err.contains("--turn URI"), "{err}");
    assert!(err.contains("--signaling-turn-user"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "told after {:?}",
        started.elapsed()
    );
}

#[test]
fn an_address_the_machine_does_not_have_stops_p2p_serve_with_the_fix() {
    // 192.0.2.0/24 is TEST-NET-1: no machine has it.
    for (flags, flag) in [
        (
            vec!["--listen", "192.0.2.1:3478", "--no-signaling"],
            "--listen ADDR",
        ),
        (
            vec!["--listen", "127.0.0.1:0", "--signaling", "192.0.2.1:8080"],
            "--signaling ADDR",
        ),
    ] {
        let mut args = vec!["serve"];
        args.extend(&flags);
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {err}");
        assert!(err.contains("cannot bind"), "{err}");
        assert!(
            err.contains("192.0.2.1 is not an address of this machine"),
            "{err}"
        );
        assert!(err.contains("0.0.0.0 for all of them"), "{err}");
        assert!(err.contains(flag), "{err}");
    }
    // A relay IP the machine does not have: the public address of a cloud
    // VM, which goes in --external-ip.
    let out = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--no-signaling",
        "--realm",
        "r",
        "--user",
        "a:b",
        "--relay-ip",
        "192.0.2.1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot bind relay 192.0.2.1"), "{err}");
    assert!(err.contains("--external-ip 192.0.2.1"), "{err}");
    assert!(err.contains("--relay-ip IP"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_on_a_wildcard_address_hands_out_its_relay_ip_or_stops_p2p_serve_with_the_fix() {
    let turn = [
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--signaling",
        "127.0.0.1:0",
        "--realm",
        "example.org",
        "--auth-secret",
        "s",
    ];
    // No relay IP of the family of 0.0.0.0: no address to name the
    // server by in the URLs handed out.
    for extra in [&[][..], &["--relay-ip", "::1"][..]] {
        let mut args = turn.to_vec();
        args.extend(extra);
        let out = tokio::task::spawn_blocking(move || run(&args))
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?} started: {err}");
        assert!(err.contains("STUN listens on 0.0.0.0 or ::"), "{err}");
        assert!(err.contains("--public-host HOST"), "{err}");
        assert!(err.contains("--relay-ip IP"), "{err}");
    }
    // With one, the URLs name it (the wildcard socket receives on it).
    let d = tokio::task::spawn_blocking(move || {
        Daemon::start(&[&turn[1..], &["--relay-ip", "127.0.0.1"][..]].concat())
    })
    .await
    .unwrap();
    let port = d.udp().port();
    let mut c = p2p_signaling::SignalingClient::connect(&d.ws_url())
        .await
        .unwrap();
    c.join("wild", None, None).await.unwrap();
    let urls: Vec<String> = c
        .ice_servers()
        .iter()
        .flat_map(|s| s.urls.clone())
        .collect();
    assert!(urls.contains(&format!("stun:127.0.0.1:{port}")), "{urls:?}");
    assert!(
        urls.contains(&format!("turn:127.0.0.1:{port}?transport=udp")),
        "{urls:?}"
    );
}
