//! Properties: writing then reading a candidate gives it back, and no input
//! makes a parser panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use p2p_sdp::{
    Address, Attribute, Candidate, CandidateType, Extension, IceAttribute, SessionDescription,
    TcpType, Transport,
};
use proptest::prelude::*;

fn address() -> impl Strategy<Value = Address> {
    prop_oneof![
        any::<u32>().prop_map(|v| Address::Ip(IpAddr::V4(Ipv4Addr::from(v)))),
        any::<u128>().prop_map(|v| Address::Ip(IpAddr::V6(Ipv6Addr::from(v)))),
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\\.local"
            .prop_map(Address::Fqdn),
        "[a-z][a-z0-9-]{0,10}(\\.[a-z0-9-]{1,10}){0,3}".prop_map(Address::Fqdn),
    ]
}

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![
        Just(Transport::Udp),
        Just(Transport::Tcp),
        "[a-z][a-z0-9_.-]{0,7}"
            .prop_filter("known", |t| t != "udp" && t != "tcp")
            .prop_map(Transport::Other),
    ]
}

fn kind() -> impl Strategy<Value = CandidateType> {
    prop_oneof![
        Just(CandidateType::Host),
        Just(CandidateType::ServerReflexive),
        Just(CandidateType::PeerReflexive),
        Just(CandidateType::Relay),
        "[a-z][a-z0-9-]{0,7}"
            .prop_filter("known", |t| !["host", "srflx", "prflx", "relay"]
                .contains(&t.as_str()))
            .prop_map(CandidateType::Other),
    ]
}

fn extension() -> impl Strategy<Value = Extension> {
    prop_oneof![
        any::<u32>().prop_map(Extension::Generation),
        "[A-Za-z0-9+/]{4,8}".prop_map(Extension::Ufrag),
        any::<u32>().prop_map(Extension::NetworkId),
        any::<u32>().prop_map(Extension::NetworkCost),
        ("x-[a-z0-9]{1,8}", "[!-~]{1,12}")
            .prop_map(|(name, value)| Extension::Other { name, value }),
    ]
}

prop_compose! {
    fn candidate()(
        foundation in "[A-Za-z0-9+/]{1,32}",
        component in 1u16..=256,
        transport in transport(),
        uppercase in any::<bool>(),
        priority in any::<u32>(),
        address in address(),
        port in any::<u16>(),
        kind in kind(),
        related in proptest::option::of((address(), any::<u16>())),
        tcp in proptest::option::of(prop_oneof![
            Just(TcpType::Active), Just(TcpType::Passive), Just(TcpType::SimultaneousOpen)
        ]),
        extensions in proptest::collection::vec(extension(), 0..6),
    ) -> Candidate {
        let mut c = Candidate::new(foundation, component, transport, priority, address, port, kind)
            .expect("generated fields are valid")
            .with_uppercase_transport(uppercase);
        if let Some((a, p)) = related {
            c = c.with_related(a, p).expect("valid related address");
        }
        if let Some(t) = tcp {
            c = c.with_tcp_type(t);
        }
        for e in extensions {
            c = c.with_extension(e).expect("valid extension");
        }
        c
    }
}

proptest! {
    #[test]
    fn written_candidates_read_back(c in candidate()) {
        let text = c.to_string();
        prop_assert_eq!(Candidate::parse(&text), Ok(c.clone()));
        prop_assert_eq!(Candidate::parse(&c.to_sdp_line()), Ok(c.clone()));
        let attribute = Attribute::Ice(IceAttribute::Candidate(c.clone()));
        prop_assert_eq!(Attribute::parse(&attribute.to_sdp_line()), Ok(attribute));
    }

    #[test]
    fn candidate_parser_never_panics_and_is_stable(s in "\\PC{0,120}") {
        if let Ok(c) = Candidate::parse(&s) {
            prop_assert_eq!(Candidate::parse(&c.to_string()), Ok(c));
        }
    }

    #[test]
    fn candidate_like_input_never_panics(
        words in proptest::collection::vec(
            prop_oneof![
                "[0-9]{1,12}".boxed(), "(udp|TCP|typ|host|srflx|raddr|rport|tcptype|so)".boxed(),
                "[ -~]{0,6}".boxed(), "[0-9a-f:.]{1,20}".boxed(),
            ],
            0..16,
        )
    ) {
        let s = format!("candidate:{}", words.join(" "));
        if let Ok(c) = Candidate::parse(&s) {
            prop_assert_eq!(Candidate::parse(&c.to_string()), Ok(c));
        }
    }

    #[test]
    fn session_parser_never_panics_and_is_stable(
        lines in proptest::collection::vec("[a-z]=[ -~]{0,30}|[ -~]{0,10}", 0..12)
    ) {
        let mut text = String::from("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
        for l in &lines {
            text.push_str(l);
            text.push_str("\r\n");
        }
        if let Ok(sd) = SessionDescription::parse(&text) {
            prop_assert_eq!(SessionDescription::parse(&sd.to_string()), Ok(sd));
        }
        let _ = SessionDescription::parse(&lines.join("\n"));
    }

    #[test]
    fn attribute_parsers_never_panic(s in "\\PC{0,60}") {
        if let Ok(a) = Attribute::parse(&s) {
            prop_assert_eq!(Attribute::parse(&a.to_sdp_line()), Ok(a));
        }
        if let Ok(a) = IceAttribute::parse(&s) {
            prop_assert_eq!(IceAttribute::parse(&a.to_sdp_line()), Ok(a));
        }
    }
}
