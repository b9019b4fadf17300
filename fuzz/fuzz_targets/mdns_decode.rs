//! mDNS responses (RFC 6762) from arbitrary bytes, as the resolver of the
//! peer's `.local` names reads them: decoding never panics (compression
//! loops, counts larger than the message, cut records fail typed); the
//! address records that decode, written back as a response, decode equal;
//! and the resolver fed the bytes on its socket, with a name pending,
//! neither panics nor resolves to an address the bytes did not name; the
//! responder of our own names, fed the bytes, answers only a query that
//! asks for its name, and only with its address.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use p2p_connect::mdns::{
    decode_answers, decode_questions, encode_response, is_mdns_name, AddressRecord, MdnsConfig,
    MdnsEvent, MdnsOutput, MdnsResolver, MdnsResponder,
};
use p2p_proto::{Datagram, Machine, Transport};

fuzz_target!(|data: &[u8]| {
    let records = decode_answers(data);
    if let Ok(records) = &records {
        let named: Vec<AddressRecord> = records
            .iter()
            .filter(|r| is_mdns_name(&r.name))
            .cloned()
            .collect();
        if !named.is_empty() {
            let bytes = encode_response(&named).expect("decoded records encode");
            assert_eq!(decode_answers(&bytes).as_ref(), Ok(&named));
        }
    }
    let local = "0.0.0.0:5353".parse().expect("an address");
    let questions = decode_questions(data);
    let mut responder = MdnsResponder::new(local, Some(1));
    let ours = responder.name_for("192.0.2.9".parse().expect("an IP"));
    let querier = "192.0.2.1:5353".parse().expect("an address");
    let answered = responder
        .handle_input(Instant::now(), Datagram::new(Transport::Udp, querier, local, data))
        .is_taken();
    let asked = questions.is_ok_and(|qs| qs.iter().any(|q| q.name == ours));
    assert_eq!(answered, asked);
    if let Some(t) = responder.poll_output().and_then(MdnsOutput::transmit) {
        let got = decode_answers(&t.contents).expect("our answer decodes");
        assert!(got.iter().all(|r| r.name == ours && r.address.to_string() == "192.0.2.9"));
    }
    let mut r = MdnsResolver::new(MdnsConfig::new(local));
    let t0 = Instant::now();
    r.handle_timeout(t0);
    let name = records
        .as_ref()
        .ok()
        .and_then(|rs| rs.iter().find(|r| is_mdns_name(&r.name)))
        .map_or_else(|| "fuzz.local".to_owned(), |r| r.name.clone());
    r.resolve(t0, &name).expect("a valid name");
    let from = "192.0.2.1:5353".parse().expect("an address");
    let _ = r.handle_input(t0, Datagram::new(Transport::Udp, from, local, data));
    r.handle_timeout(t0 + Duration::from_secs(10));
    while let Some(o) = r.poll_output() {
        if let MdnsOutput::Event(MdnsEvent::Resolved { addresses, .. }) = o {
            let named = records.as_ref().expect("resolved from a decoded response");
            for a in addresses {
                assert!(named.iter().any(|r| r.address == a));
            }
        }
    }
});
