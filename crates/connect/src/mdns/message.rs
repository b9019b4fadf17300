//! mDNS messages (RFC 6762) as the resolver needs them: a one-shot query
//! for the address records of `.local` names, and the address records of a
//! response (with the response a responder would send, for tests and for
//! hiding our own addresses later). The DNS wire format is `simple-dns`'s;
//! this module adds the mDNS rules and the checks that keep a hostile
//! message cheap.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use simple_dns::rdata::{RData, A, AAAA};
use simple_dns::{Name, Packet, PacketFlag, Question, ResourceRecord, CLASS, QCLASS, QTYPE, TYPE};

/// The mDNS port.
pub const MDNS_PORT: u16 = 5353;

/// The IPv4 mDNS group and port, where queries go (RFC 6762 §3).
pub const MDNS_V4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 251)), 5353);

/// The IPv6 link-local mDNS group (`ff02::fb`).
pub const MDNS_V6_GROUP: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb);

/// Most names one query asks for (a browser names each of its addresses;
/// more in one message is not worth the size).
pub const MAX_NAMES_PER_QUERY: usize = 8;

/// Why a message was not read, or a query not written.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MdnsError {
    /// Shorter than a DNS header.
    #[error("shorter than a DNS header")]
    Truncated,
    /// The header counts more records than the message could hold (each
    /// record takes at least 11 bytes, each question 5).
    #[error("the header counts more records than the message holds")]
    TooManyRecords,
    /// A query, not a response.
    #[error("a query, not a response")]
    NotAResponse,
    /// A response, or a query with a non-zero opcode: not a question for
    /// a responder.
    #[error("not a standard query")]
    NotAQuery,
    /// A response with a non-zero opcode or response code (RFC 6762 §18.3
    /// and §18.11: silently ignored).
    #[error("a response with a non-zero opcode or rcode")]
    NotAnswered,
    /// The DNS codec refused the message.
    #[error("malformed DNS message: {0}")]
    Malformed(String),
    /// Not a name this resolver asks for: one or more labels of 1 to 63
    /// letters, digits or hyphens, ending in `.local`, at most 253 bytes.
    #[error("not an mDNS host name: {0:?}")]
    BadName(String),
    /// No name, or more than [`MAX_NAMES_PER_QUERY`], in one query.
    #[error("a query asks for 1 to {MAX_NAMES_PER_QUERY} names")]
    BadNameCount,
}

/// One address record of a response: `name` (lower case, no trailing dot)
/// is at `address` for `ttl` seconds (0: a goodbye, RFC 6762 §10.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddressRecord {
    /// The host name, lower case, without the trailing dot.
    pub name: String,
    /// The address.
    pub address: IpAddr,
    /// Seconds the record is valid; 0 withdraws it.
    pub ttl: u32,
}

/// The name as compared: lower case, without a trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `name` is an mDNS host name this resolver asks for (see
/// [`MdnsError::BadName`]): `4f1b…-…​.local` as browsers write them.
pub fn is_mdns_name(name: &str) -> bool {
    let n = normalize(name);
    let Some(host) = n.strip_suffix(".local") else {
        return false;
    };
    n.len() <= 253
        && !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn owned_name(name: &str) -> Result<Name<'static>, MdnsError> {
    if !is_mdns_name(name) {
        return Err(MdnsError::BadName(name.to_owned()));
    }
    Name::new(name)
        .map(Name::into_owned)
        .map_err(|_| MdnsError::BadName(name.to_owned()))
}

/// A query for the A and AAAA records of `names` (RFC 6762 §5: id 0 for a
/// multicast query, QM questions: the answer is multicast, which a querier
/// on port 5353 hears; one on another port is a one-shot querier that
/// responders answer by unicast, §6.7).
pub fn encode_query(names: &[&str]) -> Result<Vec<u8>, MdnsError> {
    if names.is_empty() || names.len() > MAX_NAMES_PER_QUERY {
        return Err(MdnsError::BadNameCount);
    }
    let mut packet = Packet::new_query(0);
    for name in names {
        let qname = owned_name(name)?;
        for t in [TYPE::A, TYPE::AAAA] {
            packet.questions.push(Question::new(
                qname.clone(),
                QTYPE::TYPE(t),
                QCLASS::CLASS(CLASS::IN),
                false,
            ));
        }
    }
    packet
        .build_bytes_vec()
        .map_err(|e| MdnsError::Malformed(e.to_string()))
}

/// A response announcing `records` (authoritative, id 0, cache-flush set:
/// the name is unique, RFC 6762 §10.2), as a responder for our own
/// generated names would send it.
pub fn encode_response(records: &[AddressRecord]) -> Result<Vec<u8>, MdnsError> {
    let mut packet = Packet::new_reply(0);
    packet.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    for r in records {
        let name = owned_name(&r.name)?;
        let rdata = match r.address {
            IpAddr::V4(v4) => RData::A(A::from(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA::from(v6)),
        };
        packet
            .answers
            .push(ResourceRecord::new(name, CLASS::IN, r.ttl, rdata).with_cache_flush(true));
    }
    packet
        .build_bytes_vec()
        .map_err(|e| MdnsError::Malformed(e.to_string()))
}

/// The A and AAAA records of a response, from its answer and additional
/// sections (RFC 6762 §6: a responder may put the address in either).
/// Queries, responses with a non-zero opcode or rcode, and malformed
/// messages are errors; records of other types are skipped.
pub fn decode_answers(bytes: &[u8]) -> Result<Vec<AddressRecord>, MdnsError> {
    let header = bytes.get(..12).ok_or(MdnsError::Truncated)?;
    let word = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]) as usize;
    let flags = word(2);
    if flags & 0x8000 == 0 {
        return Err(MdnsError::NotAResponse);
    }
    // Opcode (bits 11..14) and rcode (bits 0..3) must be zero.
    if flags & 0x7800 != 0 || flags & 0x000f != 0 {
        return Err(MdnsError::NotAnswered);
    }
    // Bound what the codec allocates up front by what the bytes can hold.
    let (questions, records) = (word(4), word(6) + word(8) + word(10));
    if questions * 5 + records * 11 > bytes.len() - 12 {
        return Err(MdnsError::TooManyRecords);
    }
    let packet = Packet::parse(bytes).map_err(|e| MdnsError::Malformed(e.to_string()))?;
    let mut out = Vec::new();
    for rr in packet.answers.iter().chain(&packet.additional_records) {
        let address = match &rr.rdata {
            RData::A(a) => IpAddr::V4(Ipv4Addr::from(a.address)),
            RData::AAAA(a) => IpAddr::V6(Ipv6Addr::from(a.address)),
            _ => continue,
        };
        if rr.class != CLASS::IN {
            continue;
        }
        let record = AddressRecord {
            name: normalize(&rr.name.to_string()),
            address,
            ttl: rr.ttl,
        };
        if !out.contains(&record) {
            out.push(record);
        }
    }
    Ok(out)
}

/// One question of a query: the name (lower case, no trailing dot) and
/// whether the querier asked for a unicast answer (the QU bit, RFC 6762
/// §5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressQuestion {
    /// The name asked for.
    pub name: String,
    /// The QU bit.
    pub unicast: bool,
}

/// The A, AAAA and ANY questions of a query. Responses, queries with a
/// non-zero opcode and malformed messages are errors; other questions are
/// skipped.
pub fn decode_questions(bytes: &[u8]) -> Result<Vec<AddressQuestion>, MdnsError> {
    let header = bytes.get(..12).ok_or(MdnsError::Truncated)?;
    let word = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]) as usize;
    let flags = word(2);
    if flags & 0x8000 != 0 || flags & 0x7800 != 0 {
        return Err(MdnsError::NotAQuery);
    }
    let (questions, records) = (word(4), word(6) + word(8) + word(10));
    if questions * 5 + records * 11 > bytes.len() - 12 {
        return Err(MdnsError::TooManyRecords);
    }
    let packet = Packet::parse(bytes).map_err(|e| MdnsError::Malformed(e.to_string()))?;
    let mut out: Vec<AddressQuestion> = Vec::new();
    for q in &packet.questions {
        let wanted = matches!(
            q.qtype,
            QTYPE::TYPE(TYPE::A) | QTYPE::TYPE(TYPE::AAAA) | QTYPE::ANY
        );
        if !wanted || !matches!(q.qclass, QCLASS::CLASS(CLASS::IN) | QCLASS::ANY) {
            continue;
        }
        let name = normalize(&q.qname.to_string());
        if !out.iter().any(|a| a.name == name) {
            out.push(AddressQuestion {
                name,
                unicast: q.unicast_response,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "1f0e8a2c-6d3b-4b1e-9c11-7d0b9f3e2a10.local";

    #[test]
    fn a_query_asks_for_both_families_of_each_name_and_is_multicast_style() {
        let q = encode_query(&[NAME]).unwrap();
        let p = Packet::parse(&q).unwrap();
        assert_eq!(p.id(), 0);
        assert!(!p.has_flags(PacketFlag::RESPONSE));
        let asked: Vec<(String, QTYPE, bool)> = p
            .questions
            .iter()
            .map(|q| (q.qname.to_string(), q.qtype, q.unicast_response))
            .collect();
        assert_eq!(
            asked,
            vec![
                (NAME.to_owned(), QTYPE::TYPE(TYPE::A), false),
                (NAME.to_owned(), QTYPE::TYPE(TYPE::AAAA), false)
            ]
        );
        // A query is not a response.
        assert_eq!(decode_answers(&q), Err(MdnsError::NotAResponse));
    }

    #[test]
    fn a_query_refuses_names_that_are_not_mdns_host_names() {
        for bad in [
            "example.com",
            ".local",
            "a..local",
            "a b.local",
            "x.local.evil",
        ] {
            assert_eq!(
                encode_query(&[bad]),
                Err(MdnsError::BadName(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(encode_query(&[]), Err(MdnsError::BadNameCount));
        assert_eq!(encode_query(&[NAME; 9]), Err(MdnsError::BadNameCount));
        assert!(is_mdns_name("Host-1.LOCAL."));
    }

    #[test]
    fn a_response_round_trips_both_families_lower_cased() {
        let records = vec![
            AddressRecord {
                name: NAME.to_uppercase().replace(".LOCAL", ".local"),
                address: "192.168.1.5".parse().unwrap(),
                ttl: 120,
            },
            AddressRecord {
                name: NAME.to_owned(),
                address: "fd00::5".parse().unwrap(),
                ttl: 120,
            },
        ];
        let bytes = encode_response(&records).unwrap();
        let got = decode_answers(&bytes).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|r| r.name == NAME && r.ttl == 120));
        assert_eq!(got[0].address, "192.168.1.5".parse::<IpAddr>().unwrap());
        assert_eq!(got[1].address, "fd00::5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn hostile_headers_are_refused_before_the_codec_allocates() {
        assert_eq!(decode_answers(&[0x84; 11]), Err(MdnsError::Truncated));
        // A response that claims 65535 answers in 12 bytes.
        let mut m = vec![0, 0, 0x84, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0];
        assert_eq!(decode_answers(&m), Err(MdnsError::TooManyRecords));
        // A non-zero rcode is ignored (RFC 6762 §18.11).
        m = vec![0, 0, 0x84, 0x03, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode_answers(&m), Err(MdnsError::NotAnswered));
        // An empty response is fine and says nothing.
        m = vec![0, 0, 0x84, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode_answers(&m), Ok(Vec::new()));
        // A record cut short is malformed.
        let mut bytes = encode_response(&[AddressRecord {
            name: NAME.to_owned(),
            address: "10.1.2.3".parse().unwrap(),
            ttl: 1,
        }])
        .unwrap();
        bytes.truncate(bytes.len() - 2);
        assert!(matches!(
            decode_answers(&bytes),
            Err(MdnsError::Malformed(_))
        ));
    }

    #[test]
    fn a_compression_loop_is_malformed_not_a_hang() {
        // One answer whose name is a pointer to itself.
        let mut m = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 10, 0, 0, 1]);
        assert!(matches!(decode_answers(&m), Err(MdnsError::Malformed(_))));
    }
}
