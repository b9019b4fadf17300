//! The STUN responder as a pure function: bytes in, bytes out, and which
//! socket sends them where. No socket, no clock, no allocation.

use std::net::SocketAddr;

use p2p_stun::attr::{
    Attribute, ChangeRequest, ErrorCode, MappedAddress, OtherAddress, Padding, ResponseOrigin,
    ResponsePort, Software, UnknownAttributes, XorMappedAddress,
};
use p2p_stun::{
    AttrType, EncodeError, Message, MessageBuilder, MessageClass, Method, SliceBuf, TransactionId,
};

/// RFC 3489 SOURCE-ADDRESS: where a legacy response came from.
const SOURCE_ADDRESS: AttrType = AttrType(0x0004);
/// RFC 3489 CHANGED-ADDRESS: the legacy name of OTHER-ADDRESS.
const CHANGED_ADDRESS: AttrType = AttrType(0x0005);
/// The most types a 420's UNKNOWN-ATTRIBUTES lists.
const MAX_UNKNOWN: usize = 16;

/// How the request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A UDP datagram: the answer may come from another socket (CHANGE-REQUEST)
    /// or go to another port (RESPONSE-PORT).
    Udp,
    /// A TCP or TLS stream: the answer goes back on the same connection.
    Stream,
}

/// Which socket sends an answer, relative to the socket the request came in
/// on: the one with the other IP and/or the other port (RFC 5780 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Via {
    /// Send from the alternate IP.
    pub change_ip: bool,
    /// Send from the alternate port.
    pub change_port: bool,
}

impl Via {
    /// The socket the request came in on.
    pub const SAME: Via = Via {
        change_ip: false,
        change_port: false,
    };
}

/// What kind of response was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A success response.
    Success,
    /// An error response with this code (400, 420).
    Error(u16),
}

/// Why nothing is sent back.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Not a well-formed STUN message (RFC 8489 §6.3: silently discarded).
    Malformed,
    /// FINGERPRINT present and wrong.
    BadFingerprint,
    /// An indication or a response: nothing to answer.
    NotRequest,
    /// The response did not fit the output buffer.
    NoRoom,
}

/// The responder's verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Send `out[..len]` from the socket `via` names (whose address is
    /// `source`) to `to`.
    Reply {
        /// Bytes written at the start of the output buffer.
        len: usize,
        /// Which socket sends it.
        via: Via,
        /// That socket's address (as put in RESPONSE-ORIGIN).
        source: SocketAddr,
        /// The destination.
        to: SocketAddr,
        /// Success or which error.
        outcome: Outcome,
    },
    /// Send nothing.
    Drop(Dropped),
}

/// What the responder knows about the server: SOFTWARE, the RFC 5780
/// addresses, the PADDING cap. Built once, shared by every worker.
#[derive(Debug, Clone)]
pub struct Ctx {
    software: String,
    /// `addrs[ip][port]`: index 0 primary, 1 alternate.
    addrs: Option<[[SocketAddr; 2]; 2]>,
    max_padding: usize,
}

impl Ctx {
    /// A responder without an alternate address. `software` may be empty (no
    /// SOFTWARE attribute); it is cut to 763 bytes.
    pub fn new(software: &str, max_padding: usize) -> Ctx {
        let mut end = software.len().min(Software::MAX_BYTES);
        while !software.is_char_boundary(end) {
            end -= 1;
        }
        Ctx {
            software: software[..end].to_owned(),
            addrs: None,
            max_padding,
        }
    }

    /// Enable RFC 5780: `primary` and `alternate` differ in IP and in port;
    /// the server listens on all four combinations.
    pub fn with_alternate(mut self, primary: SocketAddr, alternate: SocketAddr) -> Ctx {
        let (ip, aip) = (primary.ip(), alternate.ip());
        let (p, ap) = (primary.port(), alternate.port());
        self.addrs = Some([
            [primary, SocketAddr::new(ip, ap)],
            [SocketAddr::new(aip, p), alternate],
        ]);
        self
    }

    /// The four RFC 5780 addresses, `[ip][port]` with 0 primary and 1
    /// alternate, if configured.
    pub fn rfc5780_addrs(&self) -> Option<[[SocketAddr; 2]; 2]> {
        self.addrs
    }

    /// The address of the socket `via` names, relative to `local`; `None`
    /// when `local` is not one of the RFC 5780 addresses.
    pub fn resolve(&self, local: SocketAddr, via: Via) -> Option<SocketAddr> {
        let addrs = self.addrs?;
        let (i, j) = slot_of(&addrs, local)?;
        Some(addrs[i ^ usize::from(via.change_ip)][j ^ usize::from(via.change_port)])
    }
}

fn slot_of(addrs: &[[SocketAddr; 2]; 2], local: SocketAddr) -> Option<(usize, usize)> {
    (0..2)
        .flat_map(|i| (0..2).map(move |j| (i, j)))
        .find(|&(i, j)| addrs[i][j] == local)
}

/// Answer one request.
///
/// `req` is the datagram (or framed message) as received from `from` on the
/// socket bound to `local`; the response is written at the start of `out`.
/// The request's class and method choose the handler: a Binding request
/// gets its mapped address; any other method gets 400 — the TURN server
/// will take its methods (Allocate, Refresh, …) at that one point.
///
/// ```
/// use p2p_server::{answer, Answer, Ctx, Transport};
/// use p2p_stun::{MessageBuilder, MessageType, Method, MessageClass, TransactionId};
///
/// let mut req = Vec::new();
/// MessageBuilder::new(&mut req, MessageType::new(Method::BINDING, MessageClass::Request), TransactionId::new([1; 12]))?;
/// let ctx = Ctx::new("example", 512);
/// let mut out = [0u8; 1500];
/// let from = "192.0.2.1:40000".parse()?;
/// let local = "198.51.100.1:3478".parse()?;
/// let Answer::Reply { len, to, .. } = answer(&req, from, local, Transport::Udp, &ctx, &mut out) else {
///     panic!("a Binding request is answered");
/// };
/// assert_eq!(to, from);
/// let resp = p2p_stun::Message::decode(&out[..len])?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn answer(
    req: &[u8],
    from: SocketAddr,
    local: SocketAddr,
    transport: Transport,
    ctx: &Ctx,
    out: &mut [u8],
) -> Answer {
    let Ok(msg) = Message::decode(req) else {
        return Answer::Drop(Dropped::Malformed);
    };
    if msg.typ().class != MessageClass::Request {
        return Answer::Drop(Dropped::NotRequest);
    }
    if msg.has_fingerprint() && msg.verify_fingerprint().is_err() {
        return Answer::Drop(Dropped::BadFingerprint);
    }
    let mut unknown = [AttrType(0); MAX_UNKNOWN];
    let mut n = 0;
    for t in msg.unknown_comprehension_required(AttrType::is_known) {
        if n < MAX_UNKNOWN {
            unknown[n] = t;
            n += 1;
        }
    }
    if n > 0 {
        return error(&msg, from, local, ctx, out, 420, &unknown[..n]);
    }
    match msg.typ().method {
        Method::BINDING => binding(&msg, from, local, transport, ctx, out),
        // TURN (Allocate, Refresh, CreatePermission, ChannelBind, Send) plugs in here.
        _ => error(&msg, from, local, ctx, out, 400, &[]),
    }
}

fn binding(
    msg: &Message<'_>,
    from: SocketAddr,
    local: SocketAddr,
    transport: Transport,
    ctx: &Ctx,
    out: &mut [u8],
) -> Answer {
    let (Ok(change), Ok(response_port), Ok(padding)) = (
        msg.get::<ChangeRequest>(),
        msg.get::<ResponsePort>(),
        msg.get::<Padding>(),
    ) else {
        return error(msg, from, local, ctx, out, 400, &[]);
    };
    let slot = match (transport, ctx.addrs) {
        (Transport::Udp, Some(addrs)) => slot_of(&addrs, local).map(|s| (addrs, s)),
        _ => None,
    };
    let mut via = Via::SAME;
    if let Some(c) = change {
        // RFC 5780 §6.1: without an alternate address CHANGE-REQUEST is an
        // unknown attribute; over a stream it cannot be honoured at all.
        if transport == Transport::Stream && (c.change_ip || c.change_port) {
            return error(msg, from, local, ctx, out, 400, &[]);
        }
        if transport == Transport::Udp && slot.is_none() {
            return error(msg, from, local, ctx, out, 420, &[AttrType::CHANGE_REQUEST]);
        }
        via = Via {
            change_ip: c.change_ip,
            change_port: c.change_port,
        };
    }
    let mut to = from;
    if let Some(ResponsePort(port)) = response_port {
        // RFC 5780 §7.5/§7.6: UDP only, never with PADDING, never port 0.
        if transport == Transport::Stream || padding.is_some() || port == 0 {
            return error(msg, from, local, ctx, out, 400, &[]);
        }
        to = SocketAddr::new(from.ip(), port);
    }
    let (source, other) = match slot {
        Some((addrs, (i, j))) => (
            addrs[i ^ usize::from(via.change_ip)][j ^ usize::from(via.change_port)],
            Some(addrs[i ^ 1][j ^ 1]),
        ),
        None => (local, None),
    };
    let mapped = SocketAddr::new(from.ip().to_canonical(), from.port());
    let legacy = msg.is_rfc3489();
    let cap = out.len();
    let tid = msg.transaction_id();
    let written = (|| -> Result<usize, EncodeError> {
        let mut b = start(msg, out)?;
        if legacy {
            b.add(&MappedAddress(mapped))?;
            if !source.ip().is_unspecified() {
                let (v, n) = raw_address(source, &tid);
                b.add_raw(SOURCE_ADDRESS, &v[..n])?;
            }
            if let Some(o) = other {
                let (v, n) = raw_address(o, &tid);
                b.add_raw(CHANGED_ADDRESS, &v[..n])?;
            }
        } else {
            b.add(&XorMappedAddress(mapped))?;
            if !source.ip().is_unspecified() {
                b.add(&ResponseOrigin(source))?;
            }
            if let Some(o) = other {
                b.add(&OtherAddress(o))?;
            }
        }
        add_software(&mut b, ctx)?;
        if let Some(Padding(p)) = padding {
            // Never more than the request's own padding nor the cap, and it
            // must fit with FINGERPRINT after it.
            let tail = 4 + if legacy { 0 } else { 8 };
            let room = cap.saturating_sub(b.len() + tail);
            let len = p.len().min(ctx.max_padding).min(room) & !3;
            b.add(&Padding(&ZEROS[..len.min(ZEROS.len())]))?;
        }
        if !legacy {
            b.add_fingerprint()?;
        }
        Ok(b.finish())
    })();
    match written {
        Ok(len) => Answer::Reply {
            len,
            via,
            source,
            to,
            outcome: Outcome::Success,
        },
        Err(_) => Answer::Drop(Dropped::NoRoom),
    }
}

static ZEROS: [u8; 4096] = [0; 4096];

/// An address in the MAPPED-ADDRESS format, for the RFC 3489 attributes
/// this crate has no type for.
fn raw_address(a: SocketAddr, tid: &TransactionId) -> ([u8; 20], usize) {
    let attr = MappedAddress(a);
    let mut v = [0u8; 20];
    let n = attr.value_len();
    attr.encode_value(tid, &mut v[..n]);
    (v, n)
}

fn start<'o>(
    msg: &Message<'_>,
    out: &'o mut [u8],
) -> Result<MessageBuilder<SliceBuf<'o>>, EncodeError> {
    let mut b = MessageBuilder::new(
        SliceBuf::new(out),
        msg.typ().success(),
        msg.transaction_id(),
    )?;
    if msg.is_rfc3489() {
        // RFC 3489's 128-bit transaction id includes the cookie's bytes.
        b.written_mut()[4..8].copy_from_slice(&msg.as_bytes()[4..8]);
    }
    Ok(b)
}

fn add_software(b: &mut MessageBuilder<SliceBuf<'_>>, ctx: &Ctx) -> Result<(), EncodeError> {
    if !ctx.software.is_empty() {
        if let Ok(s) = Software::new(&ctx.software) {
            b.add(&s)?;
        }
    }
    Ok(())
}

fn error(
    msg: &Message<'_>,
    from: SocketAddr,
    local: SocketAddr,
    ctx: &Ctx,
    out: &mut [u8],
    code: u16,
    unknown: &[AttrType],
) -> Answer {
    let written = (|| -> Result<usize, EncodeError> {
        let mut b =
            MessageBuilder::new(SliceBuf::new(out), msg.typ().error(), msg.transaction_id())?;
        if msg.is_rfc3489() {
            b.written_mut()[4..8].copy_from_slice(&msg.as_bytes()[4..8]);
        }
        if let Some(e) = ErrorCode::from_code(code) {
            b.add(&e)?;
        }
        if !unknown.is_empty() {
            b.add(&UnknownAttributes::List(unknown))?;
        }
        add_software(&mut b, ctx)?;
        if !msg.is_rfc3489() {
            b.add_fingerprint()?;
        }
        Ok(b.finish())
    })();
    match written {
        Ok(len) => Answer::Reply {
            len,
            via: Via::SAME,
            source: local,
            to: from,
            outcome: Outcome::Error(code),
        },
        Err(_) => Answer::Drop(Dropped::NoRoom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2p_stun::MessageType;

    const PRIMARY: &str = "198.51.100.1:3478";
    const ALTERNATE: &str = "198.51.100.2:3479";
    const CLIENT: &str = "192.0.2.7:40000";

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ctx() -> Ctx {
        Ctx::new("test server", 64).with_alternate(sa(PRIMARY), sa(ALTERNATE))
    }

    /// A request of `method` with extra raw attributes, optionally FINGERPRINT.
    fn request(method: Method, attrs: &[(AttrType, &[u8])], fingerprint: bool) -> Vec<u8> {
        let mut v = Vec::new();
        let mut b = MessageBuilder::new(
            &mut v,
            MessageType::new(method, MessageClass::Request),
            TransactionId::new([3; 12]),
        )
        .unwrap();
        for (t, val) in attrs {
            b.add_raw(*t, val).unwrap();
        }
        if fingerprint {
            b.add_fingerprint().unwrap();
        }
        v
    }

    fn binding(attrs: &[(AttrType, &[u8])]) -> Vec<u8> {
        request(Method::BINDING, attrs, true)
    }

    fn change(ip: bool, port: bool) -> [u8; 4] {
        [0, 0, 0, (u8::from(ip) << 2) | (u8::from(port) << 1)]
    }

    struct Got {
        answer: Answer,
        out: Vec<u8>,
    }

    impl Got {
        fn msg(&self) -> Message<'_> {
            let Answer::Reply { len, .. } = self.answer else {
                panic!("expected a reply, got {:?}", self.answer)
            };
            Message::decode(&self.out[..len]).unwrap()
        }
        fn code(&self) -> Option<u16> {
            self.msg().get::<ErrorCode>().unwrap().map(|e| e.code())
        }
    }

    fn run_at(req: &[u8], local: &str, transport: Transport, ctx: &Ctx, room: usize) -> Got {
        let mut out = vec![0u8; room];
        let answer = answer(req, sa(CLIENT), sa(local), transport, ctx, &mut out);
        Got { answer, out }
    }

    fn run(req: &[u8]) -> Got {
        run_at(req, PRIMARY, Transport::Udp, &ctx(), 1500)
    }

    #[test]
    fn binding_success_carries_mapped_origin_other_software_fingerprint() {
        let got = run(&binding(&[]));
        let m = got.msg();
        assert_eq!(
            m.typ(),
            MessageType::new(Method::BINDING, MessageClass::Success)
        );
        assert_eq!(m.transaction_id(), TransactionId::new([3; 12]));
        assert_eq!(m.get::<XorMappedAddress>().unwrap().unwrap().0, sa(CLIENT));
        assert_eq!(m.get::<ResponseOrigin>().unwrap().unwrap().0, sa(PRIMARY));
        assert_eq!(m.get::<OtherAddress>().unwrap().unwrap().0, sa(ALTERNATE));
        assert_eq!(
            m.get::<Software>().unwrap().unwrap().as_str(),
            "test server"
        );
        assert!(!m.has(AttrType::MAPPED_ADDRESS));
        m.verify_fingerprint().unwrap();
        assert!(matches!(
            got.answer,
            Answer::Reply {
                via: Via::SAME,
                outcome: Outcome::Success,
                ..
            }
        ));
    }

    #[test]
    fn requests_without_fingerprint_are_answered_too() {
        let got = run(&request(Method::BINDING, &[], false));
        assert_eq!(got.code(), None);
    }

    #[test]
    fn empty_software_is_left_out_and_long_software_is_cut() {
        let c = Ctx::new("", 0);
        let got = run_at(&binding(&[]), PRIMARY, Transport::Udp, &c, 1500);
        assert!(!got.msg().has(AttrType::SOFTWARE));
        assert!(got.msg().get::<OtherAddress>().unwrap().is_none());
        let long = "é".repeat(500);
        let c = Ctx::new(&long, 0);
        let got = run_at(&binding(&[]), PRIMARY, Transport::Udp, &c, 1500);
        let sw = got.msg().get::<Software>().unwrap().unwrap();
        assert!(sw.as_str().len() <= Software::MAX_BYTES);
    }

    #[test]
    fn change_request_is_answered_from_the_right_socket_rfc5780_section_6_1() {
        let c = ctx();
        let [[pp, pa], [ap, aa]] = c.rfc5780_addrs().unwrap();
        // (received on, change ip, change port) -> sent from, other address
        let cases = [
            (pp, false, false, pp, aa),
            (pp, true, false, ap, aa),
            (pp, false, true, pa, aa),
            (pp, true, true, aa, aa),
            (aa, true, true, pp, pp),
            (aa, false, true, ap, pp),
            (pa, true, false, aa, ap),
            (ap, false, true, aa, pa),
        ];
        for (local, ip, port, from, other) in cases {
            let req = binding(&[(AttrType::CHANGE_REQUEST, &change(ip, port))]);
            let got = run_at(&req, &local.to_string(), Transport::Udp, &c, 1500);
            let Answer::Reply {
                via, source, to, ..
            } = got.answer
            else {
                panic!("no reply")
            };
            assert_eq!(
                via,
                Via {
                    change_ip: ip,
                    change_port: port
                }
            );
            assert_eq!(source, from, "{local} {ip} {port}");
            assert_eq!(c.resolve(local, via), Some(from));
            assert_eq!(to, sa(CLIENT));
            let m = got.msg();
            assert_eq!(m.get::<ResponseOrigin>().unwrap().unwrap().0, from);
            assert_eq!(m.get::<OtherAddress>().unwrap().unwrap().0, other);
        }
    }

    #[test]
    fn change_request_without_alternate_is_420_rfc5780_section_6_1() {
        let c = Ctx::new("s", 0);
        let req = binding(&[(AttrType::CHANGE_REQUEST, &change(true, true))]);
        let got = run_at(&req, PRIMARY, Transport::Udp, &c, 1500);
        assert_eq!(got.code(), Some(420));
        let list = got.msg().get::<UnknownAttributes>().unwrap().unwrap();
        assert_eq!(list.iter().collect::<Vec<_>>(), [AttrType::CHANGE_REQUEST]);
        // A socket that is not one of the four (another listen address) alike.
        let got = run_at(&req, "198.51.100.9:3478", Transport::Udp, &ctx(), 1500);
        assert_eq!(got.code(), Some(420));
    }

    #[test]
    fn change_request_over_a_stream_is_400_but_zero_flags_pass() {
        let req = binding(&[(AttrType::CHANGE_REQUEST, &change(false, true))]);
        let got = run_at(&req, PRIMARY, Transport::Stream, &ctx(), 1500);
        assert_eq!(got.code(), Some(400));
        let req = binding(&[(AttrType::CHANGE_REQUEST, &change(false, false))]);
        let got = run_at(&req, PRIMARY, Transport::Stream, &ctx(), 1500);
        assert_eq!(got.code(), None);
        // Over streams no OTHER-ADDRESS: it cannot be used there.
        assert!(got.msg().get::<OtherAddress>().unwrap().is_none());
    }

    #[test]
    fn malformed_change_request_is_400() {
        let got = run(&binding(&[(AttrType::CHANGE_REQUEST, &[0, 0, 4])]));
        assert_eq!(got.code(), Some(400));
    }

    #[test]
    fn response_port_sends_to_that_port_of_the_client_rfc5780_section_7_5() {
        let got = run(&binding(&[(AttrType::RESPONSE_PORT, &[0x1f, 0x90, 0, 0])]));
        let Answer::Reply { to, .. } = got.answer else {
            panic!()
        };
        assert_eq!(to, sa("192.0.2.7:8080"));
        let bad: [&[(AttrType, &[u8])]; 2] = [
            &[(AttrType::RESPONSE_PORT, &[0, 0, 0, 0])],
            &[
                (AttrType::RESPONSE_PORT, &[0x1f, 0x90, 0, 0]),
                (AttrType::PADDING, &[0; 8]),
            ],
        ];
        for attrs in bad {
            assert_eq!(run(&binding(attrs)).code(), Some(400));
        }
        let req = binding(&[(AttrType::RESPONSE_PORT, &[0x1f, 0x90, 0, 0])]);
        let got = run_at(&req, PRIMARY, Transport::Stream, &ctx(), 1500);
        assert_eq!(got.code(), Some(400));
    }

    fn padding_len(g: &Got) -> Option<usize> {
        g.msg().get::<Padding>().unwrap().map(|p| p.0.len())
    }

    #[test]
    fn padding_is_echoed_but_capped_rfc5780_section_7_6() {
        // max_padding is 64 in ctx().
        assert_eq!(
            padding_len(&run(&binding(&[(AttrType::PADDING, &[1; 40])]))),
            Some(40)
        );
        assert_eq!(
            padding_len(&run(&binding(&[(AttrType::PADDING, &[1; 1000])]))),
            Some(64)
        );
        assert_eq!(padding_len(&run(&binding(&[]))), None);
        // Never larger than the buffer: 128 bytes of room leave less than 64.
        let req = binding(&[(AttrType::PADDING, &[1; 1000])]);
        let got = run_at(&req, PRIMARY, Transport::Udp, &ctx(), 128);
        let Answer::Reply { len, .. } = got.answer else {
            panic!()
        };
        assert!(len <= 128);
        got.msg().verify_fingerprint().unwrap();
        // No amplification: the answer to a padded request is not bigger than
        // the request plus the fixed attributes.
        let req = binding(&[(AttrType::PADDING, &[1; 1000])]);
        let Answer::Reply { len, .. } = run(&req).answer else {
            panic!()
        };
        assert!(len < 200, "{len}");
    }

    #[test]
    fn unknown_comprehension_required_is_420_with_the_list() {
        let req = binding(&[
            (AttrType(0x7777), &[1, 2, 3, 4]),
            (AttrType(0xC001), &[1, 2, 3, 4]),
            (AttrType(0x0002), &[0; 8]),
        ]);
        let got = run(&req);
        assert_eq!(got.code(), Some(420));
        let list = got.msg().get::<UnknownAttributes>().unwrap().unwrap();
        assert_eq!(
            list.iter().collect::<Vec<_>>(),
            [AttrType(0x7777), AttrType(0x0002)]
        );
        got.msg().verify_fingerprint().unwrap();
        // Unknown comprehension-optional only: answered.
        assert_eq!(
            run(&binding(&[(AttrType(0xC001), &[1, 2, 3, 4])])).code(),
            None
        );
    }

    #[test]
    fn other_methods_are_400_until_turn_takes_them() {
        for m in [
            Method::ALLOCATE,
            Method::REFRESH,
            Method::new(0x0FF).unwrap(),
        ] {
            let got = run(&request(m, &[], true));
            assert_eq!(got.code(), Some(400));
            assert_eq!(got.msg().typ(), MessageType::new(m, MessageClass::Error));
        }
    }

    #[test]
    fn indications_and_responses_get_nothing() {
        for class in [
            MessageClass::Indication,
            MessageClass::Success,
            MessageClass::Error,
        ] {
            let mut v = Vec::new();
            MessageBuilder::new(
                &mut v,
                MessageType::new(Method::BINDING, class),
                TransactionId::new([1; 12]),
            )
            .unwrap();
            assert_eq!(run(&v).answer, Answer::Drop(Dropped::NotRequest));
        }
    }

    #[test]
    fn malformed_packets_are_dropped() {
        let good = binding(&[]);
        let mut bad_len = good.clone();
        bad_len[3] = 4;
        let mut bad_fp = good.clone();
        let last = bad_fp.len() - 1;
        bad_fp[last] ^= 1;
        let cases: [(&[u8], Dropped); 5] = [
            (&[], Dropped::Malformed),
            (&good[..19], Dropped::Malformed),
            (&[0xff; 40], Dropped::Malformed),
            (&bad_len, Dropped::Malformed),
            (&bad_fp, Dropped::BadFingerprint),
        ];
        for (req, why) in cases {
            assert_eq!(run(req).answer, Answer::Drop(why));
        }
    }

    #[test]
    fn rfc3489_clients_get_mapped_address_and_their_id_back_rfc8489_section_12() {
        let mut req = request(Method::BINDING, &[], false);
        req[4..8].copy_from_slice(&[9, 8, 7, 6]);
        let got = run(&req);
        let Answer::Reply { len, .. } = got.answer else {
            panic!()
        };
        let resp = &got.out[..len];
        assert_eq!(
            &resp[4..20],
            &req[4..20],
            "the 128-bit transaction id is echoed"
        );
        let m = Message::decode(resp).unwrap();
        assert!(m.is_rfc3489());
        assert_eq!(m.get::<MappedAddress>().unwrap().unwrap().0, sa(CLIENT));
        assert!(!m.has(AttrType::XOR_MAPPED_ADDRESS));
        assert!(!m.has_fingerprint());
        let changed = m.get_raw(CHANGED_ADDRESS).unwrap();
        let other = MappedAddress::decode(changed.value, &m.transaction_id()).unwrap();
        assert_eq!(other.0, sa(ALTERNATE));
        assert!(m.has(SOURCE_ADDRESS));
    }

    #[test]
    fn v4_mapped_clients_are_reported_as_ipv4() {
        let mut out = vec![0u8; 1500];
        let from = sa("[::ffff:192.0.2.7]:40000");
        let a = answer(
            &binding(&[]),
            from,
            sa("[::]:3478"),
            Transport::Udp,
            &Ctx::new("", 0),
            &mut out,
        );
        let Answer::Reply { len, to, .. } = a else {
            panic!()
        };
        assert_eq!(to, from);
        let m = Message::decode(&out[..len]).unwrap();
        assert_eq!(m.get::<XorMappedAddress>().unwrap().unwrap().0, sa(CLIENT));
        // A wildcard socket does not claim 0.0.0.0 as RESPONSE-ORIGIN.
        assert!(!m.has(AttrType::RESPONSE_ORIGIN));
    }

    #[test]
    fn never_panics_on_mutated_requests() {
        let base = binding(&[
            (AttrType::CHANGE_REQUEST, &change(true, false)),
            (AttrType::PADDING, &[0; 12]),
            (AttrType::USERNAME, b"user"),
        ]);
        let c = ctx();
        let mut out = [0u8; 256];
        let mut x: u32 = 0x1234_5678;
        for _ in 0..20_000 {
            // xorshift: deterministic mutations.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut req = base.clone();
            let at = x as usize % req.len();
            req[at] ^= (x >> 8) as u8;
            let cut = (x >> 16) as usize % (req.len() + 1);
            let req = if x & 1 == 0 { &req[..] } else { &req[..cut] };
            let a = answer(req, sa(CLIENT), sa(PRIMARY), Transport::Udp, &c, &mut out);
            if let Answer::Reply { len, .. } = a {
                assert!(len <= out.len());
                assert!(Message::decode(&out[..len]).is_ok());
            }
        }
    }
}
