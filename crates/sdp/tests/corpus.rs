//! Round trips of the browser-shaped corpus in `tests/data`, byte for byte,
//! and the typed view of each description.

use std::fs;
use std::path::PathBuf;

use p2p_sdp::{
    Address, Candidate, CandidateType, DataChannelParams, Fingerprint, IceAttribute, IceOption,
    Pwd, SessionDescription, Setup, TcpType, Transport, Ufrag,
};

fn data(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn candidate_lines() -> Vec<(String, String)> {
    let mut lines = Vec::new();
    for file in [
        "candidates_chromium.txt",
        "candidates_firefox.txt",
        "candidates_other.txt",
    ] {
        for line in data(file).lines() {
            lines.push((file.to_owned(), line.to_owned()));
        }
    }
    lines
}

#[test]
fn every_corpus_candidate_round_trips_byte_for_byte() {
    let lines = candidate_lines();
    assert!(lines.len() >= 30, "corpus too small: {}", lines.len());
    for (file, line) in lines {
        let c = Candidate::parse(&line).unwrap_or_else(|e| panic!("{file}: {line}: {e}"));
        let written = if line.starts_with("a=") {
            c.to_sdp_line()
        } else {
            c.to_string()
        };
        assert_eq!(written, line, "{file}");
        assert_eq!(Candidate::parse(&written), Ok(c.clone()), "{file}: {line}");
        // Every form a browser hands over reads the same candidate.
        let bare = c.to_string();
        let bare = bare.strip_prefix("candidate:").unwrap_or(&bare);
        assert_eq!(Candidate::parse(bare).as_ref(), Ok(&c), "{line}");
        assert_eq!(
            Candidate::parse(&c.to_sdp_line()).as_ref(),
            Ok(&c),
            "{line}"
        );
        assert_eq!(
            IceAttribute::parse(&c.to_sdp_line()),
            Ok(IceAttribute::Candidate(c.clone()))
        );
    }
}

#[test]
fn chromium_candidates_are_typed() {
    let lines = data("candidates_chromium.txt");
    let all: Vec<Candidate> = lines.lines().map(|l| l.parse().unwrap()).collect();

    let host = &all[0];
    assert_eq!(host.foundation(), "1467250027");
    assert_eq!(host.component(), 1);
    assert_eq!(host.transport(), &Transport::Udp);
    assert_eq!(host.priority(), 2122260223);
    assert_eq!(host.address(), &Address::Ip("192.168.1.5".parse().unwrap()));
    assert_eq!(host.port(), 54321);
    assert_eq!(host.kind(), &CandidateType::Host);
    assert_eq!(host.related(), None);
    assert_eq!(host.generation(), Some(0));
    assert_eq!(host.ufrag(), Some("Xy3v"));
    assert_eq!(host.network_id(), Some(1));
    assert_eq!(host.network_cost(), Some(10));

    assert!(all[1].address().ip().is_some_and(|ip| ip.is_ipv6()));

    let mdns = &all[2];
    assert!(mdns.address().is_mdns());
    assert_eq!(
        mdns.address(),
        &Address::Fqdn("6c0b3b8a-5d6e-4d4b-9f5e-7f2b8a7c9d10.local".to_owned())
    );
    assert_eq!(mdns.network_id(), None);

    let srflx = &all[4];
    assert_eq!(srflx.kind(), &CandidateType::ServerReflexive);
    let raddr = Address::Ip("192.168.1.5".parse().unwrap());
    assert_eq!(srflx.related(), Some((&raddr, 54321)));

    assert_eq!(all[6].kind(), &CandidateType::Relay);
    assert_eq!(all[8].transport(), &Transport::Tcp);
    assert_eq!(all[8].tcp_type(), Some(TcpType::Active));
    assert_eq!(all[9].tcp_type(), Some(TcpType::Passive));
    assert_eq!(all[12].tcp_type(), Some(TcpType::SimultaneousOpen));
    assert_eq!(all[13].tcp_type(), Some(TcpType::Passive));
    assert!(all[13].related().is_some());
    assert_eq!(all[15].component(), 2);
    assert_eq!(all[16].kind(), &CandidateType::PeerReflexive);
}

#[test]
fn firefox_candidates_keep_upper_case_transport() {
    let c: Candidate = "candidate:3 1 TCP 2105524479 192.168.1.5 9 typ host tcptype active"
        .parse()
        .unwrap();
    assert_eq!(c.transport(), &Transport::Tcp);
    assert_eq!(c.tcp_type(), Some(TcpType::Active));
    assert!(c.extensions().is_empty());
    assert_eq!(
        c.clone().with_uppercase_transport(false).to_string(),
        "candidate:3 1 tcp 2105524479 192.168.1.5 9 typ host tcptype active"
    );
}

#[test]
fn unknown_transport_type_and_extensions_are_kept_in_order() {
    let line =
        "candidate:1 1 udp 100 10.0.0.1 5000 typ future-type x-custom some/value~1 generation 7";
    let c = Candidate::parse(line).unwrap();
    assert_eq!(c.kind(), &CandidateType::Other("future-type".to_owned()));
    let names: Vec<&str> = c.extensions().iter().map(|e| e.name()).collect();
    assert_eq!(names, ["x-custom", "generation"]);
    let c = Candidate::parse("candidate:7 1 sctp 2130706431 10.0.0.1 5000 typ host").unwrap();
    assert_eq!(c.transport(), &Transport::Other("sctp".to_owned()));
}

#[test]
fn non_canonical_candidates_read_and_settle_on_the_canonical_form() {
    // tcptype and raddr/rport after other extensions are read; writing puts
    // them first, and the written form is a fixed point.
    let c = Candidate::parse(
        "candidate:1 1 tcp 5 10.0.0.1 9 typ srflx generation 0 tcptype active rport 2 raddr 10.0.0.2",
    )
    .unwrap();
    let canonical = "candidate:1 1 tcp 5 10.0.0.1 9 typ srflx raddr 10.0.0.2 rport 2 tcptype active generation 0";
    assert_eq!(c.to_string(), canonical);
    assert_eq!(Candidate::parse(canonical), Ok(c));
    // Mixed-case transport and leading zeros.
    let c = Candidate::parse("candidate:1 01 Udp 007 10.0.0.1 0080 typ host").unwrap();
    assert_eq!(c.to_string(), "candidate:1 1 udp 7 10.0.0.1 80 typ host");
}

const SDP_FILES: [&str; 6] = [
    "chromium_datachannel_offer.sdp",
    "chromium_datachannel_offer_gathered.sdp",
    "chromium_datachannel_answer.sdp",
    "chromium_audio_and_datachannel_offer.sdp",
    "firefox_datachannel_offer.sdp",
    "firefox_datachannel_offer_gathered.sdp",
];

#[test]
fn every_corpus_description_round_trips_byte_for_byte() {
    for file in SDP_FILES {
        let text = data(file);
        assert!(text.contains("\r\n"), "{file} must have CRLF line ends");
        let sd = SessionDescription::parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(sd.to_string(), text, "{file}");
        // LF line ends read the same description.
        let lf = text.replace("\r\n", "\n");
        assert_eq!(SessionDescription::parse(&lf).as_ref(), Ok(&sd), "{file}");
        // And so does text whose last line has no line end.
        let trimmed = text.trim_end_matches("\r\n");
        assert_eq!(
            SessionDescription::parse(trimmed).as_ref(),
            Ok(&sd),
            "{file}"
        );
    }
}

#[test]
fn chromium_offer_is_typed() {
    let sd = SessionDescription::parse(&data("chromium_datachannel_offer.sdp")).unwrap();
    assert_eq!(sd.origin.username, "-");
    assert_eq!(sd.origin.session_id, 4611731400430051336);
    assert_eq!(sd.origin.session_version, 2);
    assert_eq!(sd.origin.address, "127.0.0.1");
    assert_eq!(sd.session_name, "-");
    assert_eq!(sd.bundle(), Some(&["0".to_owned()][..]));
    assert!(!sd.ice_lite());
    assert_eq!(sd.media.len(), 1);
    let dc = sd.data_channel().unwrap();
    assert!(dc.is_data_channel());
    assert_eq!(dc.media, "application");
    assert_eq!(dc.port, 9);
    assert_eq!(dc.protocol, "UDP/DTLS/SCTP");
    assert_eq!(dc.formats, ["webrtc-datachannel"]);
    assert_eq!(dc.connection().map(|c| c.address.as_str()), Some("0.0.0.0"));
    assert_eq!(dc.mid(), Some("0"));
    assert_eq!(dc.setup(), Some(Setup::ActPass));
    assert_eq!(dc.sctp_port(), Some(5000));
    assert_eq!(dc.max_message_size(), Some(262144));
    assert_eq!(dc.ice_ufrag(), Some("Xy3v"));
    assert_eq!(dc.ice_pwd(), Some("o2pS0X0f2o0Jd0T3F9m9k7Yq"));
    assert_eq!(dc.ice_options(), Some(&[IceOption::Trickle][..]));
    let fp = dc.fingerprint().unwrap();
    assert_eq!(fp.hash(), "sha-256");
    assert_eq!(fp.bytes().len(), 32);
    assert_eq!(dc.candidates().count(), 0);
    assert!(!dc.end_of_candidates());
}

#[test]
fn gathered_offers_carry_candidates() {
    let sd = SessionDescription::parse(&data("chromium_datachannel_offer_gathered.sdp")).unwrap();
    let dc = sd.data_channel().unwrap();
    let kinds: Vec<_> = dc.candidates().map(|c| c.kind().clone()).collect();
    assert_eq!(
        kinds,
        [
            CandidateType::Host,
            CandidateType::ServerReflexive,
            CandidateType::Host
        ]
    );
    assert!(dc.candidates().next().unwrap().address().is_mdns());

    let sd = SessionDescription::parse(&data("firefox_datachannel_offer_gathered.sdp")).unwrap();
    let dc = sd.data_channel().unwrap();
    assert_eq!(dc.candidates().count(), 4);
    assert!(dc.end_of_candidates());
}

#[test]
fn firefox_offer_puts_fingerprint_and_options_at_session_level() {
    let sd = SessionDescription::parse(&data("firefox_datachannel_offer.sdp")).unwrap();
    assert_eq!(sd.origin.username, "mozilla...THIS_IS_SDPARTA-99.0");
    assert_eq!(sd.origin.session_id, 6331285392433373917);
    let dc = sd.data_channel().unwrap();
    assert_eq!(dc.fingerprint(), None);
    assert!(sd.fingerprint_for(dc).is_some());
    assert_eq!(dc.ice_options(), None);
    assert_eq!(sd.ice_options_for(dc), Some(&[IceOption::Trickle][..]));
    assert_eq!(sd.ice_ufrag_for(dc), Some("9e1d3c7a"));
    assert_eq!(sd.ice_pwd_for(dc), Some("f9d9b3a35e9c2a9e0ba0ab9c38a7c2fe"));
    assert_eq!(sd.setup_for(dc), Some(Setup::ActPass));
    assert_eq!(dc.max_message_size(), Some(1073741823));
}

fn params(setup: Setup) -> DataChannelParams {
    DataChannelParams::new(
        Ufrag::new("R4nd").unwrap(),
        Pwd::new("abcdefghijklmnopqrstuvwx").unwrap(),
        Fingerprint::new("sha-256", (0..32).collect()).unwrap(),
        setup,
        1234567890,
    )
}

#[test]
fn answers_to_browser_offers_accept_the_data_channel() {
    for file in [
        "chromium_datachannel_offer.sdp",
        "firefox_datachannel_offer.sdp",
        "firefox_datachannel_offer_gathered.sdp",
    ] {
        let offer = SessionDescription::parse(&data(file)).unwrap();
        for setup in [Setup::Active, Setup::Passive] {
            let answer = SessionDescription::answer_data_channel(&offer, &params(setup)).unwrap();
            let text = answer.to_string();
            let reread = SessionDescription::parse(&text).unwrap();
            assert_eq!(reread, answer, "{file}");
            let dc = reread.data_channel().unwrap();
            assert_eq!(dc.mid(), Some("0"));
            assert_eq!(reread.bundle(), Some(&["0".to_owned()][..]));
            assert_eq!(dc.setup(), Some(setup));
            assert_eq!(dc.sctp_port(), Some(5000));
            assert_eq!(dc.ice_ufrag(), Some("R4nd"));
            assert_eq!(dc.ice_pwd(), Some("abcdefghijklmnopqrstuvwx"));
            assert_eq!(dc.fingerprint().map(|f| f.bytes().len()), Some(32));
            assert_eq!(dc.protocol, "UDP/DTLS/SCTP");
            assert_eq!(dc.candidates().count(), 0);
        }
    }
}

#[test]
fn answer_has_the_chromium_shape() {
    let offer = SessionDescription::parse(&data("chromium_datachannel_offer.sdp")).unwrap();
    let answer = SessionDescription::answer_data_channel(&offer, &params(Setup::Active)).unwrap();
    let expected = "v=0\r\n\
        o=- 1234567890 2 IN IP4 127.0.0.1\r\n\
        s=-\r\n\
        t=0 0\r\n\
        a=group:BUNDLE 0\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
        c=IN IP4 0.0.0.0\r\n\
        a=ice-ufrag:R4nd\r\n\
        a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
        a=ice-options:trickle\r\n\
        a=fingerprint:sha-256 00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F\r\n\
        a=setup:active\r\n\
        a=mid:0\r\n\
        a=sctp-port:5000\r\n\
        a=max-message-size:262144\r\n";
    assert_eq!(answer.to_string(), expected);
}

#[test]
fn answer_rejects_other_sections_and_bundles_only_the_data_channel() {
    let offer =
        SessionDescription::parse(&data("chromium_audio_and_datachannel_offer.sdp")).unwrap();
    let mut p = params(Setup::Passive);
    p.ice_lite = true;
    p.end_of_candidates = true;
    p.candidates.push(
        "candidate:1 1 udp 2130706431 198.51.100.1 3478 typ host"
            .parse()
            .unwrap(),
    );
    let answer = SessionDescription::answer_data_channel(&offer, &p).unwrap();
    assert_eq!(answer.media.len(), 2);
    assert_eq!(answer.media[0].media, "audio");
    assert_eq!(answer.media[0].port, 0);
    assert_eq!(answer.media[0].mid(), Some("0"));
    let dc = answer.data_channel().unwrap();
    assert_eq!(dc.mid(), Some("1"));
    assert_eq!(answer.bundle(), Some(&["1".to_owned()][..]));
    assert!(answer.ice_lite());
    assert_eq!(dc.candidates().count(), 1);
    assert!(dc.end_of_candidates());
    assert_eq!(
        SessionDescription::parse(&answer.to_string()).as_ref(),
        Ok(&answer)
    );
}

#[test]
fn offer_builder_reads_back() {
    let offer = SessionDescription::offer_data_channel(&params(Setup::ActPass));
    let reread = SessionDescription::parse(&offer.to_string()).unwrap();
    assert_eq!(reread, offer);
    // Our own offer can be answered.
    let answer = SessionDescription::answer_data_channel(&reread, &params(Setup::Active)).unwrap();
    assert_eq!(answer.data_channel().and_then(|m| m.mid()), Some("0"));
}
