//! Malformed input gives the exact typed error, one case per line.

use p2p_sdp::{
    AnswerError, Attribute, Candidate, DataChannelParams, Fingerprint, IceAttribute, ParseError,
    Pwd, SessionDescription, SessionError, Setup, Ufrag,
};

use ParseError::{Duplicate, Invalid, Length, Missing, OutOfRange, Unexpected, Unpaired};

const OK: &str = "candidate:1 1 udp 2122260223 192.168.1.5 54321 typ host";

#[test]
fn malformed_candidates() {
    let cases: &[(&str, ParseError)] = &[
        ("", Missing { field: "foundation" }),
        ("candidate:", Missing { field: "foundation" }),
        ("candidate:1", Missing { field: "component-id" }),
        ("candidate:1 1 udp 2122260223 192.168.1.5", Missing { field: "port" }),
        ("candidate:1 1 udp 2122260223 192.168.1.5 54321", Missing { field: "typ" }),
        ("candidate:1 1 udp 2122260223 192.168.1.5 54321 typ", Missing { field: "cand-type" }),
        ("candidate:1 1 udp 2122260223 192.168.1.5 54321 host", Invalid { field: "typ" }),
        ("candidate:1 1 udp 2122260223 192.168.1.5 54321 type host", Invalid { field: "typ" }),
        ("candidate:1 1 udp 21222x0223 192.168.1.5 54321 typ host", Invalid { field: "priority" }),
        ("candidate:1 1 udp -5 192.168.1.5 54321 typ host", Invalid { field: "priority" }),
        ("candidate:1 1 udp 4294967296 192.168.1.5 54321 typ host", OutOfRange { field: "priority" }),
        ("candidate:1 1 udp 2122260223 192.168.1.5 65536 typ host", OutOfRange { field: "port" }),
        ("candidate:1 1 udp 2122260223 192.168.1.5 5432a typ host", Invalid { field: "port" }),
        ("candidate:1 1 udp 2122260223 192.168.1.256 54321 typ host", Invalid { field: "connection-address" }),
        ("candidate:1 1 udp 2122260223 2001:db8::g 54321 typ host", Invalid { field: "connection-address" }),
        ("candidate:1 1 udp 2122260223 bad!name.local 54321 typ host", Invalid { field: "connection-address" }),
        ("candidate:1 0 udp 2122260223 192.168.1.5 54321 typ host", OutOfRange { field: "component-id" }),
        ("candidate:1 257 udp 2122260223 192.168.1.5 54321 typ host", OutOfRange { field: "component-id" }),
        ("candidate:1 x udp 2122260223 192.168.1.5 54321 typ host", Invalid { field: "component-id" }),
        ("candidate:1 1 u@p 2122260223 192.168.1.5 54321 typ host", Invalid { field: "transport" }),
        ("candidate:f-o 1 udp 2122260223 192.168.1.5 54321 typ host", Invalid { field: "foundation" }),
        ("candidate:123456789012345678901234567890123 1 udp 1 10.0.0.1 1 typ host", Length { field: "foundation", len: 33, min: 1, max: 32 }),
        ("candidate:1  1 udp 2122260223 192.168.1.5 54321 typ host", Invalid { field: "component-id" }),
        ("candidate:1 1 udp 2122260223 192.168.1.5 54321 typ host ", Invalid { field: "extension-att-name" }),
        ("candidate:1 1 udp 2122260223 192.168.1.5 54321 typ host generation", Missing { field: "generation" }),
        ("candidate:1 1 udp 2122260223 192.168.1.5 54321 typ host generation x", Invalid { field: "generation" }),
        ("candidate:1 1 udp 2122260223 192.168.1.5 54321 typ host network-cost 99999999999", OutOfRange { field: "network-cost" }),
        ("candidate:1 1 udp 2122260223 192.168.1.5 54321 typ host x-foo", Missing { field: "extension-att-value" }),
        ("candidate:1 1 udp 2122260223 192.168.1.5 54321 typ host x-foo caf\u{e9}", Invalid { field: "extension-att-value" }),
        ("candidate:1 1 udp 2122260223 203.0.113.5 54321 typ srflx raddr 192.168.1.5", Unpaired { field: "raddr", requires: "rport" }),
        ("candidate:1 1 udp 2122260223 203.0.113.5 54321 typ srflx rport 5", Unpaired { field: "rport", requires: "raddr" }),
        ("candidate:1 1 udp 2122260223 203.0.113.5 54321 typ srflx raddr 1.2.3 rport 5", Invalid { field: "raddr" }),
        ("candidate:1 1 udp 2122260223 203.0.113.5 54321 typ srflx raddr 1.2.3.4 rport 70000", OutOfRange { field: "rport" }),
        ("candidate:1 1 udp 2122260223 203.0.113.5 54321 typ srflx raddr 1.2.3.4 raddr 1.2.3.4 rport 1", Duplicate { field: "raddr" }),
        ("candidate:1 1 tcp 2122260223 192.168.1.5 9 typ host tcptype sideways", Invalid { field: "tcptype" }),
        ("candidate:1 1 tcp 2122260223 192.168.1.5 9 typ host tcptype active tcptype so", Duplicate { field: "tcptype" }),
        ("a=ice-ufrag:abcd", Unexpected { expected: "candidate" }),
        ("candidate:1 1 udp 2122260223 192.168.1.5 54321 typ host\r\n", Invalid { field: "cand-type" }),
    ];
    assert_eq!(
        Candidate::parse(OK).map(|c| c.to_string()),
        Ok(OK.to_owned())
    );
    for (n, (input, expected)) in cases.iter().enumerate() {
        assert_eq!(
            Candidate::parse(input),
            Err(*expected),
            "case {n}: {input:?}"
        );
    }
}

#[test]
fn malformed_ice_attributes() {
    let cases: &[(&str, ParseError)] = &[
        (
            "a=ice-ufrag:abc",
            Length {
                field: "ice-ufrag",
                len: 3,
                min: 4,
                max: 256,
            },
        ),
        ("a=ice-ufrag:ab-d", Invalid { field: "ice-ufrag" }),
        ("a=ice-ufrag:ab d", Invalid { field: "ice-ufrag" }),
        ("a=ice-ufrag", Missing { field: "ice-ufrag" }),
        (
            "a=ice-pwd:abcdefghijklmnopqrstu",
            Length {
                field: "ice-pwd",
                len: 21,
                min: 22,
                max: 256,
            },
        ),
        (
            "a=ice-pwd:abcdefghijklmnopqrstu_",
            Invalid { field: "ice-pwd" },
        ),
        (
            "a=ice-options:",
            Missing {
                field: "ice-options",
            },
        ),
        (
            "a=ice-options:trickle ",
            Invalid {
                field: "ice-options",
            },
        ),
        (
            "a=ice-options:trickle  ice2",
            Invalid {
                field: "ice-options",
            },
        ),
        (
            "a=ice-options:tr-ckle",
            Invalid {
                field: "ice-options",
            },
        ),
        ("a=ice-lite:yes", Invalid { field: "ice-lite" }),
        (
            "a=end-of-candidates:1",
            Invalid {
                field: "end-of-candidates",
            },
        ),
        (
            "a=ice-mismatch:1",
            Invalid {
                field: "ice-mismatch",
            },
        ),
        (
            "a=ice-pacing:",
            Missing {
                field: "ice-pacing",
            },
        ),
        (
            "a=ice-pacing:fast",
            Invalid {
                field: "ice-pacing",
            },
        ),
        (
            "a=ice-pacing:4294967296",
            OutOfRange {
                field: "ice-pacing",
            },
        ),
        ("a=candidate", Missing { field: "candidate" }),
        ("a=candidate:1 1 udp", Missing { field: "priority" }),
        (
            "a=mid:0",
            Unexpected {
                expected: "ICE attribute",
            },
        ),
    ];
    for (n, (input, expected)) in cases.iter().enumerate() {
        assert_eq!(
            IceAttribute::parse(input),
            Err(*expected),
            "case {n}: {input:?}"
        );
    }
    let long = format!("a=ice-ufrag:{}", "a".repeat(257));
    assert_eq!(
        IceAttribute::parse(&long),
        Err(Length {
            field: "ice-ufrag",
            len: 257,
            min: 4,
            max: 256
        })
    );
    assert_eq!(
        Ufrag::new("abc"),
        Err(Length {
            field: "ice-ufrag",
            len: 3,
            min: 4,
            max: 256
        })
    );
    assert_eq!(
        Pwd::new("short").map(|_| ()),
        Err(Length {
            field: "ice-pwd",
            len: 5,
            min: 22,
            max: 256
        })
    );
}

#[test]
fn malformed_attributes() {
    let cases: &[(&str, ParseError)] = &[
        ("a=setup:both", Invalid { field: "setup" }),
        ("a=setup:", Missing { field: "setup" }),
        ("a=setup", Missing { field: "setup" }),
        ("a=sctp-port:65536", OutOfRange { field: "sctp-port" }),
        ("a=sctp-port:x", Invalid { field: "sctp-port" }),
        (
            "a=max-message-size:-1",
            Invalid {
                field: "max-message-size",
            },
        ),
        ("a=mid:", Missing { field: "mid" }),
        ("a=mid:a b", Invalid { field: "mid" }),
        ("a=group:", Missing { field: "group" }),
        ("a=group:BUNDLE 0 ", Invalid { field: "group" }),
        (
            "a=fingerprint:sha-256",
            Missing {
                field: "fingerprint",
            },
        ),
        (
            "a=fingerprint:sha-256 AB:C",
            Invalid {
                field: "fingerprint",
            },
        ),
        (
            "a=fingerprint:sha-256 AB:CG",
            Invalid {
                field: "fingerprint",
            },
        ),
        (
            "a=fingerprint:sha-256 ABCD",
            Invalid {
                field: "fingerprint",
            },
        ),
        ("a=fingerprint: AB", Invalid { field: "hash-func" }),
        ("a=", Invalid { field: "att-field" }),
        ("a=bad name:1", Invalid { field: "att-field" }),
    ];
    for (n, (input, expected)) in cases.iter().enumerate() {
        assert_eq!(
            Attribute::parse(input),
            Err(*expected),
            "case {n}: {input:?}"
        );
    }
}

const GOOD: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
    m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n";

#[test]
fn malformed_descriptions_say_which_line() {
    let line = |line, error| SessionError::Line { line, error };
    let expected = |line, line_type| SessionError::Expected { line, line_type };
    let cases: &[(&str, SessionError)] = &[
        ("", line(1, Invalid { field: "line type" })),
        ("o=- 1 2 IN IP4 127.0.0.1\r\n", expected(1, 'v')),
        ("v=1\r\n", line(1, Invalid { field: "proto-version" })),
        ("v=0\r\n", expected(2, 'o')),
        ("v=0\r\ns=-\r\n", expected(2, 'o')),
        ("v=0\r\no=- 1 2 IN IP4\r\n", line(2, Missing { field: "unicast-address" })),
        ("v=0\r\no=- x 2 IN IP4 127.0.0.1\r\n", line(2, Invalid { field: "sess-id" })),
        ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n", expected(3, 's')),
        ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n", expected(4, 't')),
        ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nm=application 9 UDP/DTLS/SCTP x\r\n", expected(4, 't')),
        ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0\r\n", line(4, Missing { field: "stop-time" })),
        ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\r\n", line(5, Invalid { field: "line type" })),
        ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nA=x\r\n", line(5, Invalid { field: "line type" })),
        ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=x\r\r\n", line(5, Invalid { field: "line" })),
        ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 70000 UDP/DTLS/SCTP x\r\n", line(5, OutOfRange { field: "port" })),
        ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP\r\n", line(5, Missing { field: "fmt" })),
        ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP x\r\nc=IN IP4\r\n", line(6, Missing { field: "connection-address" })),
        ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP x\r\na=ice-pwd:short\r\n", line(6, Length { field: "ice-pwd", len: 5, min: 22, max: 256 })),
        ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP x\r\na=candidate:1 1 udp 1 10.0.0.1 99999 typ host\r\n", line(6, OutOfRange { field: "port" })),
        ("v=0\n\no=- 1 2 IN IP4 127.0.0.1\n", line(2, Invalid { field: "line type" })),
    ];
    assert!(SessionDescription::parse(GOOD).is_ok());
    for (n, (input, want)) in cases.iter().enumerate() {
        let got = SessionDescription::parse(input);
        assert_eq!(got, Err(*want), "case {n}: {input:?}");
        assert_eq!(got.err().map(|e| e.line()), Some(want.line()));
    }
}

#[test]
fn answers_refuse_what_they_cannot_answer() {
    let offer = SessionDescription::parse(GOOD).unwrap();
    let params = |setup| {
        DataChannelParams::new(
            Ufrag::new("abcd").unwrap(),
            Pwd::new("abcdefghijklmnopqrstuv").unwrap(),
            Fingerprint::new("sha-256", vec![1; 32]).unwrap(),
            setup,
            1,
        )
    };
    let answer = |offer: &str, setup| {
        SessionDescription::answer_data_channel(
            &SessionDescription::parse(offer).unwrap(),
            &params(setup),
        )
        .map(|_| ())
    };
    assert_eq!(answer(GOOD, Setup::Active), Ok(()));
    assert_eq!(
        SessionDescription::answer_data_channel(&offer, &params(Setup::ActPass)).map(|_| ()),
        Err(AnswerError::AnswerSetup)
    );
    assert_eq!(answer(GOOD, Setup::HoldConn), Err(AnswerError::AnswerSetup));
    let active_offer = format!("{GOOD}a=setup:active\r\n");
    assert_eq!(
        answer(&active_offer, Setup::Active),
        Err(AnswerError::SetupConflict)
    );
    assert_eq!(answer(&active_offer, Setup::Passive), Ok(()));
    let passive_offer = format!("{GOOD}a=setup:passive\r\n");
    assert_eq!(
        answer(&passive_offer, Setup::Passive),
        Err(AnswerError::SetupConflict)
    );
    let no_mid = GOOD.replace("a=mid:0\r\n", "");
    assert_eq!(answer(&no_mid, Setup::Active), Err(AnswerError::NoMid));
    let audio = GOOD.replace(
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    );
    assert_eq!(
        answer(&audio, Setup::Active),
        Err(AnswerError::NoDataChannel)
    );
    let rejected = GOOD.replace("m=application 9", "m=application 0");
    assert_eq!(
        answer(&rejected, Setup::Active),
        Err(AnswerError::NoDataChannel)
    );
}

#[test]
fn builders_refuse_values_that_would_not_read_back() {
    use p2p_sdp::{Address, CandidateType, Extension, Transport};
    let ip = Address::Ip("10.0.0.1".parse().unwrap());
    let new = |f: &str, comp, t, a: Address, k| Candidate::new(f, comp, t, 1, a, 1, k).map(|_| ());
    assert_eq!(
        new("", 1, Transport::Udp, ip.clone(), CandidateType::Host),
        Err(Length {
            field: "foundation",
            len: 0,
            min: 1,
            max: 32
        })
    );
    assert_eq!(
        new("1", 0, Transport::Udp, ip.clone(), CandidateType::Host),
        Err(OutOfRange {
            field: "component-id"
        })
    );
    assert_eq!(
        new(
            "1",
            1,
            Transport::Other("UDP".into()),
            ip.clone(),
            CandidateType::Host
        ),
        Err(Invalid { field: "transport" })
    );
    assert_eq!(
        new(
            "1",
            1,
            Transport::Other("a b".into()),
            ip.clone(),
            CandidateType::Host
        ),
        Err(Invalid { field: "transport" })
    );
    assert_eq!(
        new(
            "1",
            1,
            Transport::Udp,
            ip.clone(),
            CandidateType::Other("host".into())
        ),
        Err(Invalid { field: "cand-type" })
    );
    assert_eq!(
        new(
            "1",
            1,
            Transport::Udp,
            Address::Fqdn("10.0.0.1".into()),
            CandidateType::Host
        ),
        Err(Invalid {
            field: "connection-address"
        })
    );
    assert_eq!(
        new(
            "1",
            1,
            Transport::Udp,
            Address::Fqdn("a b.local".into()),
            CandidateType::Host
        ),
        Err(Invalid {
            field: "connection-address"
        })
    );
    let c = Candidate::new("1", 1, Transport::Udp, 1, ip, 1, CandidateType::Host).unwrap();
    assert_eq!(
        c.clone()
            .with_extension(Extension::Other {
                name: "raddr".into(),
                value: "x".into()
            })
            .map(|_| ()),
        Err(Invalid {
            field: "extension-att-name"
        })
    );
    assert_eq!(
        c.clone()
            .with_extension(Extension::Other {
                name: "x".into(),
                value: "".into()
            })
            .map(|_| ()),
        Err(Invalid {
            field: "extension-att-value"
        })
    );
    assert_eq!(
        c.clone()
            .with_extension(Extension::Ufrag("a b".into()))
            .map(|_| ()),
        Err(Invalid { field: "ufrag" })
    );
    assert_eq!(
        c.with_related(Address::Fqdn("".into()), 1).map(|_| ()),
        Err(Invalid { field: "raddr" })
    );
    assert_eq!(
        Fingerprint::new("sha-256", vec![]),
        Err(Missing {
            field: "fingerprint"
        })
    );
    assert_eq!(
        Fingerprint::new("sha 256", vec![1]),
        Err(Invalid { field: "hash-func" })
    );
}
