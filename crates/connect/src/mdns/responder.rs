//! Our own host addresses behind generated names, as browsers do
//! (draft-ietf-mmusic-mdns-ice-candidates §3.1): each local IP gets a
//! random `<uuid>.local` name for the connection, the signalled host
//! candidates carry the name, and the responder answers the LAN's mDNS
//! queries for it.
//!
//! It owns no socket and reads no clock: a [`Machine`] without timers, it
//! answers the queries it is given ([`Machine::handle_input`]) and queues
//! the answers ([`MdnsOutput::Transmit`]). A query that asks for a unicast answer
//! (the QU bit), or that comes from a port other than 5353 (a one-shot
//! querier, RFC 6762 §6.7), is answered to its source; any other to the
//! group.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use p2p_proto::{Datagram, Handled, Machine, Transmit, Transport};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::message::{decode_questions, encode_response, AddressRecord, MDNS_PORT, MDNS_V4};
use super::MdnsOutput;

/// The TTL of our answers (RFC 6762 §10: 120 s for host names).
pub const ANSWER_TTL: u32 = 120;

/// Names for our IPs, and the answers to queries for them.
#[derive(Debug)]
pub struct MdnsResponder {
    local: SocketAddr,
    names: Vec<(String, IpAddr)>,
    rng: SmallRng,
    out: VecDeque<Transmit>,
}

impl MdnsResponder {
    /// A responder whose answers leave from `local` (the mDNS socket);
    /// names drawn from an RNG seeded with `seed` (`None`: OS entropy).
    pub fn new(local: SocketAddr, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(s) => SmallRng::seed_from_u64(s),
            None => SmallRng::from_entropy(),
        };
        MdnsResponder {
            local,
            names: Vec::new(),
            rng,
            out: VecDeque::new(),
        }
    }

    /// The name of `ip`: a new random UUID (version 4) `.local` name the
    /// first time, the same one after.
    pub fn name_for(&mut self, ip: IpAddr) -> String {
        if let Some((n, _)) = self.names.iter().find(|(_, a)| *a == ip) {
            return n.clone();
        }
        let mut b: [u8; 16] = self.rng.gen();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let name = format!(
            "{}-{}-{}-{}-{}.local",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        self.names.push((name.clone(), ip));
        name
    }

    /// Answers `d` if it is a query, on the mDNS socket, for one of our
    /// names.
    fn answer(&mut self, d: &Datagram<'_>) -> bool {
        if d.destination != self.local || d.transport != Transport::Udp {
            return false;
        }
        let Ok(questions) = decode_questions(d.contents) else {
            return false;
        };
        let mut records = Vec::new();
        let mut unicast = d.source.port() != MDNS_PORT;
        for q in questions {
            for (name, ip) in self.names.iter().filter(|(n, _)| *n == q.name) {
                unicast |= q.unicast;
                records.push(AddressRecord {
                    name: name.clone(),
                    address: *ip,
                    ttl: ANSWER_TTL,
                });
            }
        }
        if records.is_empty() {
            return false;
        }
        let Ok(bytes) = encode_response(&records) else {
            return false;
        };
        let to = if unicast { d.source } else { MDNS_V4 };
        self.out
            .push_back(Transmit::new(Transport::Udp, self.local, to, bytes));
        true
    }
}

impl Machine for MdnsResponder {
    type Output = MdnsOutput;

    /// A query, on the mDNS socket, for one of our names is taken (its
    /// answer queued); anything else, a malformed message or a datagram to
    /// another socket included, is not ours.
    fn handle_input(&mut self, _now: Instant, d: Datagram<'_>) -> Handled {
        if self.answer(&d) {
            Handled::Taken
        } else {
            Handled::NotMine
        }
    }

    /// No timers: nothing to do.
    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_output(&mut self) -> Option<MdnsOutput> {
        self.out.pop_front().map(MdnsOutput::Transmit)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// `line` (an SDP `candidate:` value) with its connection address replaced
/// by `name`, and a related address, if any, by `0.0.0.0` port 0, as
/// browsers write it (the related address would give the IP away).
pub fn hide_address(line: &str, name: &str) -> String {
    let mut fields: Vec<&str> = line.split(' ').collect();
    if let Some(a) = fields.get_mut(4) {
        *a = name;
    }
    let mut i = 0;
    while i + 1 < fields.len() {
        match fields[i] {
            "raddr" => fields[i + 1] = "0.0.0.0",
            "rport" => fields[i + 1] = "0",
            _ => {}
        }
        i += 1;
    }
    fields.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdns::{decode_answers, encode_query};

    fn query(r: &mut MdnsResponder, from: SocketAddr, to: SocketAddr, bytes: &[u8]) -> bool {
        let d = Datagram::new(Transport::Udp, from, to, bytes);
        r.handle_input(Instant::now(), d).is_taken()
    }

    fn next(r: &mut MdnsResponder) -> Option<Transmit> {
        r.poll_output().and_then(MdnsOutput::transmit)
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_ip_gets_one_random_uuid_name() {
        let mut r = MdnsResponder::new(sa("0.0.0.0:5353"), Some(1));
        let a = r.name_for("192.168.1.5".parse().unwrap());
        let b = r.name_for("fd00::5".parse().unwrap());
        assert_ne!(a, b);
        assert_eq!(a, r.name_for("192.168.1.5".parse().unwrap()));
        assert!(crate::mdns::is_mdns_name(&a), "{a}");
        let host = a.strip_suffix(".local").unwrap();
        let groups: Vec<usize> = host.split('-').map(str::len).collect();
        assert_eq!(groups, vec![8, 4, 4, 4, 12]);
        assert_eq!(&host[14..15], "4", "version 4: {host}");
        let other = MdnsResponder::new(sa("0.0.0.0:5353"), Some(2))
            .name_for("192.168.1.5".parse().unwrap());
        assert_ne!(a, other, "another seed, another name");
    }

    #[test]
    fn a_query_for_our_name_is_answered_on_the_group_others_are_not() {
        let local = sa("0.0.0.0:5353");
        let mut r = MdnsResponder::new(local, Some(1));
        let ip: IpAddr = "192.168.1.5".parse().unwrap();
        let name = r.name_for(ip);
        let from = sa("192.168.1.9:5353");
        let q = encode_query(&[&name]).unwrap();
        assert!(query(&mut r, from, local, &q));
        let t = next(&mut r).expect("an answer");
        assert_eq!((t.source, t.destination), (local, MDNS_V4));
        let got = decode_answers(&t.contents).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].name.as_str(), got[0].address), (name.as_str(), ip));
        // Someone else's name, an answer, garbage: nothing.
        let other = encode_query(&["11111111-2222-4333-8444-555555555555.local"]).unwrap();
        assert!(!query(&mut r, from, local, &other));
        assert!(!query(&mut r, from, local, &t.contents));
        assert!(!query(&mut r, from, local, &[0; 5]));
        // The query, but to another socket (a host one): not for us.
        let host = sa("192.168.1.5:6000");
        assert!(!query(&mut r, from, host, &q));
        assert!(next(&mut r).is_none());
    }

    #[test]
    fn a_one_shot_querier_is_answered_by_unicast() {
        let local = sa("0.0.0.0:5353");
        let mut r = MdnsResponder::new(local, Some(1));
        let name = r.name_for("10.0.0.1".parse().unwrap());
        let from = sa("10.0.0.2:40000");
        let q = encode_query(&[&name]).unwrap();
        assert!(query(&mut r, from, local, &q));
        assert_eq!(next(&mut r).expect("an answer").destination, from);
    }

    #[test]
    fn a_hidden_line_names_no_address() {
        let name = "0b6f3c1e-2d4a-4f5e-8a7b-6c5d4e3f2a1b.local";
        assert_eq!(
            hide_address(
                "candidate:1 1 udp 2122260223 192.168.1.5 5000 typ host",
                name
            ),
            format!("candidate:1 1 udp 2122260223 {name} 5000 typ host")
        );
        assert_eq!(
            hide_address(
                "candidate:2 1 udp 1686052607 203.0.113.7 6000 typ srflx raddr 192.168.1.5 rport 5000",
                "203.0.113.7"
            ),
            "candidate:2 1 udp 1686052607 203.0.113.7 6000 typ srflx raddr 0.0.0.0 rport 0"
        );
    }
}
