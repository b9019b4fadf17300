//! The wire formats: requests as the RFCs draw them, responses decoded or
//! refused with a typed error, and no input that makes a decoder panic.

mod common;

use p2p_portmap::natpmp::{self, NatPmpResponse};
use p2p_portmap::pcp::{MapRequest, PcpResponse};
use p2p_portmap::{DecodeError, Response};
use p2p_proto::Transport;
use proptest::prelude::*;

#[test]
fn a_pcp_map_request_is_laid_out_as_rfc_6887_draws_it() {
    let r = MapRequest::new(
        "10.0.2.2".parse().unwrap(),
        Transport::Udp,
        40000,
        7200,
        [9; 12],
    );
    let b = r.encode();
    assert_eq!(b[..4], [2, 1, 0, 0]);
    assert_eq!(b[4..8], 7200u32.to_be_bytes());
    assert_eq!(
        b[8..24],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 2, 2]
    );
    assert_eq!(b[24..36], [9; 12]);
    assert_eq!(b[36..40], [17, 0, 0, 0]);
    assert_eq!(b[40..44], [0x9c, 0x40, 0, 0]);
    // No preference: the IPv4-mapped all-zeros address (§11.1).
    assert_eq!(
        b[44..60],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]
    );
}

#[test]
fn a_pcp_answer_decodes_with_its_external_address() {
    let req = MapRequest::new(
        "10.0.2.2".parse().unwrap(),
        Transport::Udp,
        40000,
        7200,
        [9; 12],
    )
    .encode();
    let a = common::pcp_answer(&req, 0, 600, "203.0.113.102:41000".parse().unwrap());
    let Ok(Response::Pcp(r)) = Response::decode(&a) else {
        panic!()
    };
    assert_eq!(
        (r.opcode, r.result, r.lifetime_secs, r.epoch),
        (1, 0, 600, 77)
    );
    let m = r.map.unwrap();
    assert_eq!(m.nonce, [9; 12]);
    assert_eq!(m.transport, Some(Transport::Udp));
    assert_eq!(m.external, "203.0.113.102:41000".parse().unwrap());
    // With an option after the payload (code 1, 16 bytes).
    let mut with_option = a.clone();
    with_option.extend_from_slice(&[1, 0, 0, 16]);
    with_option.extend_from_slice(&[0; 16]);
    assert_eq!(PcpResponse::decode(&with_option), Ok(r));
}

#[test]
fn malformed_pcp_answers_are_refused_by_name() {
    let req = MapRequest::new("10.0.2.2".parse().unwrap(), Transport::Udp, 1, 1, [0; 12]).encode();
    let a = common::pcp_answer(&req, 0, 600, "203.0.113.1:1".parse().unwrap());
    assert_eq!(PcpResponse::decode(&a[..20]), Err(DecodeError::Truncated));
    assert_eq!(
        PcpResponse::decode(&a[..58]),
        Err(DecodeError::BadLength(58))
    );
    // A success without its payload.
    assert_eq!(PcpResponse::decode(&a[..24]), Err(DecodeError::Truncated));
    let mut request = a.clone();
    request[1] = 1;
    assert_eq!(
        PcpResponse::decode(&request),
        Err(DecodeError::NotAResponse)
    );
    let mut long_option = a.clone();
    long_option.extend_from_slice(&[1, 0, 0, 8, 0, 0, 0, 0]);
    assert_eq!(
        PcpResponse::decode(&long_option),
        Err(DecodeError::BadOption)
    );
    let mut v1 = a;
    v1[0] = 1;
    assert_eq!(Response::decode(&v1), Err(DecodeError::UnknownVersion(1)));
    assert_eq!(Response::decode(&[]), Err(DecodeError::Truncated));
}

#[test]
fn nat_pmp_answers_decode_and_errors_are_typed() {
    assert_eq!(
        NatPmpResponse::decode(&common::natpmp_address([203, 0, 113, 7])),
        Ok(NatPmpResponse::ExternalAddress {
            epoch: 5,
            address: "203.0.113.7".parse().unwrap()
        })
    );
    let req = natpmp::map_request(Transport::Udp, 40000, 40000, 7200);
    assert_eq!(req, [0, 1, 0, 0, 0x9c, 0x40, 0x9c, 0x40, 0, 0, 0x1c, 0x20]);
    assert_eq!(
        NatPmpResponse::decode(&common::natpmp_mapped(&req, 41000, 3600)),
        Ok(NatPmpResponse::Mapping {
            transport: Transport::Udp,
            epoch: 5,
            internal_port: 40000,
            external_port: 41000,
            lifetime_secs: 3600
        })
    );
    assert_eq!(
        NatPmpResponse::decode(&common::natpmp_unsupported(1)),
        Ok(NatPmpResponse::Error {
            opcode: 1,
            result: natpmp::UNSUPPORTED_VERSION
        })
    );
    assert_eq!(
        NatPmpResponse::decode(&[0, 128, 0, 0, 0]),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        NatPmpResponse::decode(&[0, 128, 0, 0, 0, 0, 0, 0, 1]),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        NatPmpResponse::decode(&[0, 1, 0, 0, 0, 0, 0, 0]),
        Err(DecodeError::NotAResponse)
    );
    assert_eq!(
        NatPmpResponse::decode(&[0, 131, 0, 0, 0, 0, 0, 0]),
        Err(DecodeError::UnknownOpcode(131))
    );
}

proptest! {
    #[test]
    fn no_bytes_make_a_decoder_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Response::decode(&b);
        let _ = PcpResponse::decode(&b);
        let _ = NatPmpResponse::decode(&b);
    }

    #[test]
    fn pcp_options_that_fit_are_skipped_and_one_that_overruns_is_refused(
        lens in proptest::collection::vec(0u16..64, 0..4),
        over in 1u16..200,
    ) {
        let req = MapRequest::new("10.0.2.2".parse().unwrap(), Transport::Udp, 1, 1, [0; 12]).encode();
        let base = common::pcp_answer(&req, 0, 600, "203.0.113.1:1".parse().unwrap());
        let mut a = base.clone();
        for l in lens {
            a.extend_from_slice(&[1, 0]);
            a.extend_from_slice(&l.to_be_bytes());
            a.extend(std::iter::repeat_n(0u8, usize::from(l.div_ceil(4) * 4)));
        }
        prop_assert_eq!(PcpResponse::decode(&a), PcpResponse::decode(&base));
        prop_assert!(PcpResponse::decode(&a).is_ok());
        // One more option whose length runs past the end.
        a.extend_from_slice(&[1, 0]);
        a.extend_from_slice(&(over * 4).to_be_bytes());
        prop_assert_eq!(PcpResponse::decode(&a), Err(DecodeError::BadOption));
    }
}
