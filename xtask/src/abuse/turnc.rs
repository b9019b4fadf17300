//! The STUN and TURN requests the abuse suite sends (built with
//! `p2p-stun`), over UDP or TCP from any loopback address, and the
//! legitimate TURN client it runs meanwhile (the real `p2p turn`).

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use p2p_stun::attr::{
    ErrorCode, Nonce, PasswordAlgorithm, Realm, RequestedTransport, Username, XorPeerAddress,
    XorRelayedAddress, PROTO_UDP,
};
use p2p_stun::{Key, Message, MessageBuilder, MessageClass, MessageType, Method, TransactionId};

use super::{Ctx, STEP};

fn tid(id: u32) -> TransactionId {
    let mut t = [7u8; 12];
    t[..4].copy_from_slice(&id.to_be_bytes());
    TransactionId::new(t)
}

/// A Binding request.
pub(super) fn binding(id: u32) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = MessageBuilder::new(
        &mut v,
        MessageType::new(Method::BINDING, MessageClass::Request),
        tid(id),
    );
    v
}

/// Long-term credentials and the server's challenge (MD5 key, no
/// PASSWORD-ALGORITHMS: what every server takes).
pub(super) struct Signed<'a> {
    pub(super) user: &'a str,
    pub(super) password: &'a str,
    pub(super) realm: &'a str,
    pub(super) nonce: &'a str,
}

/// An Allocate for a UDP relay, signed when `signed` is given.
pub(super) fn allocate(id: u32, signed: Option<&Signed<'_>>) -> Vec<u8> {
    request(Method::ALLOCATE, id, signed, |b| {
        b.add(&RequestedTransport(PROTO_UDP)).map(drop)
    })
}

/// A signed CreatePermission for `peer`'s address.
pub(super) fn create_permission(id: u32, peer: SocketAddr, signed: &Signed<'_>) -> Vec<u8> {
    request(Method::CREATE_PERMISSION, id, Some(signed), |b| {
        b.add(&XorPeerAddress(peer)).map(drop)
    })
}

/// A request of `method` with what `attrs` adds, signed when `signed` is
/// given (empty if it cannot be built).
fn request(
    method: Method,
    id: u32,
    signed: Option<&Signed<'_>>,
    attrs: impl FnOnce(&mut MessageBuilder<&mut Vec<u8>>) -> Result<(), p2p_stun::EncodeError>,
) -> Vec<u8> {
    let mut v = Vec::new();
    let built = (|| {
        let mut b = MessageBuilder::new(
            &mut v,
            MessageType::new(method, MessageClass::Request),
            tid(id),
        )?;
        attrs(&mut b)?;
        if let Some(s) = signed {
            let key = Key::long_term(s.user, s.realm, s.password, PasswordAlgorithm::Md5)
                .map_err(|_| p2p_stun::EncodeError::TooLarge)?;
            b.add(&Username::new(s.user).map_err(|_| p2p_stun::EncodeError::TooLarge)?)?;
            b.add(&Realm::new(s.realm).map_err(|_| p2p_stun::EncodeError::TooLarge)?)?;
            b.add(&Nonce::new(s.nonce).map_err(|_| p2p_stun::EncodeError::TooLarge)?)?;
            b.add_message_integrity(&key)?;
        }
        Ok::<(), p2p_stun::EncodeError>(())
    })();
    if built.is_err() {
        v.clear();
    }
    v
}

/// The relayed address of an Allocate success.
pub(super) fn relayed(resp: &[u8]) -> Option<SocketAddr> {
    let m = Message::decode(resp).ok()?;
    Some(m.get::<XorRelayedAddress>().ok()??.0)
}

/// Over a new TCP connection from `from`: allocate a UDP relay as
/// `user`/`password` and permit `peer`'s address. The connection and the
/// relayed address.
pub(super) fn tcp_relay(
    to: SocketAddr,
    from: IpAddr,
    rcvbuf: Option<usize>,
    user: &str,
    password: &str,
    peer: SocketAddr,
) -> Result<(TcpStream, SocketAddr), String> {
    use std::io::Write;
    let mut s = super::ws::tcp(to, from, rcvbuf).map_err(|e| format!("connect: {e}"))?;
    let mut ask = |req: Vec<u8>| -> Result<Vec<u8>, String> {
        s.write_all(&req).map_err(|e| format!("write: {e}"))?;
        read_stun(&mut s).map_err(|e| format!("read: {e}"))
    };
    let first = ask(allocate(1, None))?;
    let (realm, nonce) = challenge(&first).ok_or("no challenge")?;
    let signed = Signed {
        user,
        password,
        realm: &realm,
        nonce: &nonce,
    };
    let resp = ask(allocate(2, Some(&signed)))?;
    outcome(&resp).map_err(|c| format!("allocate: error {c}"))?;
    let relayed = relayed(&resp).ok_or("no relayed address")?;
    let resp = ask(create_permission(3, peer, &signed))?;
    outcome(&resp).map_err(|c| format!("permission: error {c}"))?;
    Ok((s, relayed))
}

/// What a response says: `Ok(())` for a success, `Err(code)` for an error
/// (0 when it is not a STUN response at all).
pub(super) fn outcome(resp: &[u8]) -> Result<(), u16> {
    let Ok(m) = Message::decode(resp) else {
        return Err(0);
    };
    match m.typ().class {
        MessageClass::Success => Ok(()),
        _ => Err(m.get::<ErrorCode>().ok().flatten().map_or(0, |c| c.code())),
    }
}

/// The realm and nonce of a 401 challenge.
pub(super) fn challenge(resp: &[u8]) -> Option<(String, String)> {
    let m = Message::decode(resp).ok()?;
    let realm = m.get::<Realm>().ok()??.as_str().to_owned();
    let nonce = m.get::<Nonce>().ok()??.as_str().to_owned();
    Some((realm, nonce))
}

/// A UDP socket on `from` (port 0: any).
pub(super) fn udp(from: SocketAddr) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(from)?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    Ok(s)
}

/// Send `req` and wait for the answer with its transaction (retransmitting
/// twice); `None` when none comes.
pub(super) fn ask(s: &UdpSocket, to: SocketAddr, req: &[u8]) -> Option<Vec<u8>> {
    let mut b = [0u8; 2048];
    for _ in 0..3 {
        s.send_to(req, to).ok()?;
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            match s.recv(&mut b) {
                Ok(n) if n >= 20 && b[8..20] == req[8..20] => return Some(b[..n].to_vec()),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    None
}

/// Allocate over UDP from `s` with `user`/`password` (the 401 dance):
/// `Ok(())`, or the error code (0: no answer).
pub(super) fn udp_allocate(
    s: &UdpSocket,
    to: SocketAddr,
    id: u32,
    user: &str,
    password: &str,
) -> Result<(), u16> {
    let first = ask(s, to, &allocate(id, None)).ok_or(0u16)?;
    let (realm, nonce) = challenge(&first).ok_or(0u16)?;
    let signed = Signed {
        user,
        password,
        realm: &realm,
        nonce: &nonce,
    };
    let resp = ask(s, to, &allocate(id + 1, Some(&signed))).ok_or(0u16)?;
    outcome(&resp)
}

/// Read one STUN message from a stream (within `STEP`).
pub(super) fn read_stun(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    s.set_read_timeout(Some(STEP))?;
    let mut head = [0u8; 20];
    s.read_exact(&mut head)?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut v = head.to_vec();
    v.resize(20 + len, 0);
    s.read_exact(&mut v[20..])?;
    Ok(v)
}

/// Whether a TCP connection from `from` is admitted and gets a Binding
/// answered; how long it took.
pub(super) fn tcp_binding(to: SocketAddr, from: IpAddr) -> Result<Duration, String> {
    use std::io::Write;
    let started = Instant::now();
    let mut s = super::ws::tcp(to, from, None).map_err(|e| format!("connect: {e}"))?;
    s.write_all(&binding(1))
        .map_err(|e| format!("write: {e}"))?;
    let r = read_stun(&mut s).map_err(|e| format!("read: {e}"))?;
    outcome(&r).map_err(|c| format!("error {c}"))?;
    Ok(started.elapsed())
}

/// A legitimate TURN client: the real `p2p turn` (from 127.0.0.1) allocates
/// with `user` (NAME:PASSWORD), relays 3 datagrams to an echo peer of its
/// own and deletes; over TCP when `tcp`. How long it took, or why it failed.
pub(super) fn legit_turn(
    ctx: &Ctx,
    server: SocketAddr,
    user: &str,
    tcp: bool,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut c = Command::new(&ctx.bin);
    c.args(["turn", &server.to_string(), "--user", user, "--echo-peer"])
        .args(["--count", "3", "--timeout", "5"]);
    if tcp {
        c.arg("--tcp");
    }
    let out = c
        .output()
        .map_err(|e| format!("cannot run p2p turn: {e}"))?;
    if out.status.success() {
        Ok(started.elapsed())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}
