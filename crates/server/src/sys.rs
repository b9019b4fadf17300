//! Batched datagram I/O: `recvmmsg(2)` and `sendmmsg(2)` on Linux, one call
//! for up to [`BATCH`] datagrams. The only unsafe code of the crate lives
//! here. Both functions are non-blocking and report `WouldBlock` like any
//! socket call; other systems (or kernels without these calls) get
//! `Unsupported` and the caller falls back to one datagram per call.
//!
//! Answers to one client can also leave as one UDP GSO train
//! ([`send_gso`], `UDP_SEGMENT`, Linux ≥ 4.18): one message per client, cut
//! into datagrams by the kernel (on loopback, by the receiving socket), so
//! the send path runs once per client rather than once per answer.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU8, Ordering};

/// Datagrams per batch.
pub(crate) const BATCH: usize = 32;
/// Bytes per datagram buffer: larger than any STUN request worth answering
/// over UDP (RFC 8489 §6.1 keeps them under the path MTU).
pub(crate) const BUF: usize = 2048;

/// One received datagram's length, source, and whether it was cut short.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecvMeta {
    pub(crate) len: usize,
    pub(crate) from: SocketAddr,
    pub(crate) truncated: bool,
}

impl Default for RecvMeta {
    fn default() -> Self {
        RecvMeta {
            len: 0,
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
            truncated: false,
        }
    }
}

/// Receive up to `bufs.len()` (at most [`BATCH`]) datagrams; returns how
/// many, with their metadata in `meta`.
#[cfg(target_os = "linux")]
pub(crate) fn recv_batch(
    fd: RawFd,
    bufs: &mut [[u8; BUF]],
    meta: &mut [RecvMeta],
) -> io::Result<usize> {
    recv_slots(fd, bufs.as_flattened_mut(), BUF, 0, meta)
}

/// Send `bufs[i][..lens[i]]` to `dests[i]` for every `i` in `0..count`
/// (at most [`BATCH`]); returns how many the kernel took, from the first.
#[cfg(target_os = "linux")]
pub(crate) fn send_batch(
    fd: RawFd,
    bufs: &[[u8; BUF]],
    lens: &[usize],
    dests: &[SocketAddr],
) -> io::Result<usize> {
    let n = bufs.len().min(lens.len()).min(dests.len()).min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    let addrs: [socket2::SockAddr; BATCH] =
        std::array::from_fn(|i| socket2::SockAddr::from(dests[i.min(n - 1)]));
    // SAFETY: plain C structs, all-zero is valid.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iovs[i].iov_base = bufs[i].as_ptr() as *mut libc::c_void;
        iovs[i].iov_len = lens[i].min(BUF);
        hdrs[i].msg_hdr.msg_name = addrs[i].as_ptr() as *mut libc::c_void;
        hdrs[i].msg_hdr.msg_namelen = addrs[i].len();
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `hdrs[..n]` point into `iovs`, `addrs` and `bufs`, which outlive
    // the call; sendmmsg only reads through these pointers (the `*mut` casts
    // are what the C struct demands); each iovec stays within its buffer.
    let sent =
        unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if sent < 0 {
        return Err(map_err(io::Error::last_os_error()));
    }
    Ok(sent as usize)
}

/// Most answers in one UDP GSO train: the kernel takes 64 (`UDP_MAX_SEGMENTS`,
/// 128 since Linux 6.9) and a batch holds [`BATCH`] anyway.
const GSO_MAX_SEGS: usize = 64;
/// Most payload bytes in one train: under the 65 507 bytes of an IPv4 UDP
/// datagram, which is what the kernel builds before it cuts it.
const GSO_MAX_BYTES: usize = 65_000;
/// Longest answer sent in a train: the kernel refuses (EINVAL) a segment
/// size that, with the headers, exceeds the route's MTU; 512 + 48 bytes of
/// IPv6 and UDP headers fits the smallest MTU IPv4 must carry (576).
/// Binding success responses are about 60 to 100 bytes.
const GSO_MAX_SEG_LEN: usize = 512;

/// Whether this process may send UDP GSO trains: unknown until the first
/// [`gso_enabled`] probes a socket, then on, or off for good.
static GSO: AtomicU8 = AtomicU8::new(GSO_UNKNOWN);
const GSO_UNKNOWN: u8 = 0;
const GSO_ON: u8 = 1;
const GSO_OFF: u8 = 2;

/// Whether answers may go out as UDP GSO trains (`UDP_SEGMENT`, Linux ≥
/// 4.18). The first call asks the kernel about `fd`'s option (a kernel
/// without it would ignore the control message and send one big datagram,
/// so it must be known before the first train); the answer holds for the
/// process, until [`gso_disable`].
pub(crate) fn gso_enabled(fd: RawFd) -> bool {
    match GSO.load(Ordering::Relaxed) {
        GSO_ON => true,
        GSO_OFF => false,
        _ => {
            let on = gso_probe(fd);
            let state = if on { GSO_ON } else { GSO_OFF };
            // Only the first prober logs; a racing one agrees anyway.
            if GSO
                .compare_exchange(GSO_UNKNOWN, state, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                if on {
                    tracing::debug!("UDP GSO available: answers to one client go out as one train");
                } else {
                    tracing::info!("UDP GSO unavailable: one datagram per answer");
                }
            }
            GSO.load(Ordering::Relaxed) == GSO_ON
        }
    }
}

/// Stop sending GSO trains for the rest of the process: a train failed
/// where the same answers one by one went out. Logs once.
pub(crate) fn gso_disable(why: &io::Error) {
    if GSO.swap(GSO_OFF, Ordering::Relaxed) != GSO_OFF {
        tracing::info!("UDP GSO refused ({why}): one datagram per answer from now on");
    }
}

/// Whether the kernel knows the `UDP_SEGMENT` socket option.
#[cfg(target_os = "linux")]
fn gso_probe(fd: RawFd) -> bool {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val` and `len` are live locals of the sizes given; the kernel
    // writes at most `len` bytes into `val` and the new length into `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0
}

/// Not Linux: no UDP GSO.
#[cfg(not(target_os = "linux"))]
fn gso_probe(_fd: RawFd) -> bool {
    false
}

/// Whether a failed train may have failed because of GSO itself (rather than
/// its destination): EIO (no checksum offload on the route), EINVAL (size
/// rules), or an option the kernel does not know.
pub(crate) fn is_gso_error(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    if matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL)) {
        return true;
    }
    e.kind() == io::ErrorKind::Unsupported
}

/// One train of a [`GsoPlan`]: `count` answers to one destination, listed
/// at `order[start..start + count]`, all `seg` bytes long but the last,
/// which may be shorter.
#[derive(Debug, Clone, Copy, Default)]
struct Train {
    start: u8,
    count: u8,
    seg: u16,
    /// A shorter last answer ends it.
    closed: bool,
}

/// A batch of answers grouped by destination for UDP GSO: each group goes
/// as one `sendmmsg` message with a `UDP_SEGMENT` control message. Answers
/// to one destination keep their order; groups are in order of their first
/// answer. Fixed-size: made once per worker, refilled per batch.
#[derive(Debug)]
pub(crate) struct GsoPlan {
    /// Answer indices, group after group.
    order: [u8; BATCH],
    trains: [Train; BATCH],
    len: usize,
}

impl GsoPlan {
    /// An empty plan.
    pub(crate) fn new() -> Self {
        GsoPlan {
            order: [0; BATCH],
            trains: [Train::default(); BATCH],
            len: 0,
        }
    }

    /// Group answers `0..n` (n = the shortest slice, at most [`BATCH`]) of
    /// lengths `lens` to `dests`. An answer joins the latest group to its
    /// destination when that group has room and the answer is not longer
    /// than the group's segment size (a shorter one closes it); otherwise it
    /// starts a group. Answers longer than [`GSO_MAX_SEG_LEN`] go alone.
    pub(crate) fn build(&mut self, lens: &[usize], dests: &[SocketAddr]) {
        let n = lens.len().min(dests.len()).min(BATCH);
        let mut of = [0u8; BATCH];
        // First index of each group, to compare destinations.
        let mut first = [0u8; BATCH];
        self.len = 0;
        for i in 0..n {
            let len = lens[i];
            let joined = (0..self.len)
                .rev()
                .find(|&g| dests[usize::from(first[g])] == dests[i])
                .filter(|&g| {
                    let t = &self.trains[g];
                    let seg = usize::from(t.seg);
                    !t.closed
                        && len <= seg
                        && usize::from(t.count) < GSO_MAX_SEGS
                        && (usize::from(t.count) + 1) * seg <= GSO_MAX_BYTES
                });
            match joined {
                Some(g) => {
                    let t = &mut self.trains[g];
                    t.count += 1;
                    t.closed = len < usize::from(t.seg);
                    of[i] = g as u8;
                }
                None => {
                    let g = self.len;
                    self.trains[g] = Train {
                        start: 0,
                        count: 1,
                        // Too long to share a train: alone, closed.
                        seg: u16::try_from(len).unwrap_or(u16::MAX),
                        closed: len > GSO_MAX_SEG_LEN,
                    };
                    first[g] = i as u8;
                    of[i] = g as u8;
                    self.len += 1;
                }
            }
        }
        // Lay the groups out one after the other in `order`.
        let mut at = 0u8;
        let mut fill = [0u8; BATCH];
        for t in &mut self.trains[..self.len] {
            t.start = at;
            at += t.count;
        }
        for (i, &g) in of.iter().enumerate().take(n) {
            let g = usize::from(g);
            let t = self.trains[g];
            self.order[usize::from(t.start + fill[g])] = i as u8;
            fill[g] += 1;
        }
    }

    /// How many groups.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The answer indices of group `g`, in sending order.
    pub(crate) fn group(&self, g: usize) -> &[u8] {
        let t = self.trains[g];
        &self.order[usize::from(t.start)..usize::from(t.start + t.count)]
    }

    /// How many answers groups `g..` hold.
    pub(crate) fn answers_from(&self, g: usize) -> usize {
        (g..self.len).map(|g| self.group(g).len()).sum()
    }

    /// Make every group from `g` on a group of one answer (same order): the
    /// answers then go as plain datagrams.
    pub(crate) fn split_from(&mut self, g: usize) {
        if g >= self.len {
            return;
        }
        let start = self.trains[g].start;
        let end = self.trains[self.len - 1].start + self.trains[self.len - 1].count;
        for (k, pos) in (start..end).enumerate() {
            self.trains[g + k] = Train {
                start: pos,
                count: 1,
                seg: self.trains[g + k].seg,
                closed: true,
            };
        }
        self.len = g + usize::from(end - start);
    }
}

/// Room for one `UDP_SEGMENT` control message (a cmsghdr and a u16),
/// aligned as the CMSG_* macros expect (`u64` covers `cmsghdr`'s).
#[cfg(target_os = "linux")]
type SegCtrl = [u64; 4];

/// Point `h` at `ctrl` holding a `UDP_SEGMENT` control message of `seg`
/// bytes: the kernel then cuts the message's payload into datagrams of
/// that size.
#[cfg(target_os = "linux")]
fn set_segment_size(h: &mut libc::msghdr, ctrl: &mut SegCtrl, seg: u16) {
    // SAFETY: CMSG_SPACE only does arithmetic on its argument.
    const CTRL_LEN: usize = unsafe { libc::CMSG_SPACE(2) } as usize;
    const _: () = assert!(CTRL_LEN <= std::mem::size_of::<SegCtrl>());
    h.msg_control = ctrl.as_mut_ptr().cast();
    h.msg_controllen = CTRL_LEN as _;
    // SAFETY: `h` points at `ctrl`, CTRL_LEN ≤ its size, so CMSG_FIRSTHDR
    // returns its start (u64-aligned, not null) and CMSG_DATA the 2 bytes
    // after the header, inside it (CMSG_SPACE(2) counts them); the data may
    // be unaligned for a u16, hence write_unaligned.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(h);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(2) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
    }
}

/// Send groups `from..` of `plan` (at most [`BATCH`]): group `g`'s answers
/// `bufs[i][..lens[i]]` as one datagram to their destination, with a
/// `UDP_SEGMENT` control message of the first answer's length when it has
/// more than one (the kernel then delivers them as separate datagrams).
/// Returns how many groups the kernel took, from the first. Only call after
/// [`gso_enabled`] said yes, or with groups of one.
#[cfg(target_os = "linux")]
pub(crate) fn send_gso(
    fd: RawFd,
    bufs: &[[u8; BUF]],
    lens: &[usize],
    dests: &[SocketAddr],
    plan: &GsoPlan,
    from: usize,
) -> io::Result<usize> {
    let n = plan.len.saturating_sub(from).min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    let answers = bufs.len().min(lens.len()).min(dests.len());
    // Every index in the plan must name an answer we were given.
    if (from..from + n).any(|g| plan.group(g).iter().any(|&i| usize::from(i) >= answers)) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let addrs: [socket2::SockAddr; BATCH] = std::array::from_fn(|k| {
        let g = from + k.min(n - 1);
        socket2::SockAddr::from(dests[usize::from(plan.group(g)[0])])
    });
    // One control message per group.
    let mut ctrl: [SegCtrl; BATCH] = [[0; 4]; BATCH];
    // SAFETY: plain C structs, all-zero is valid.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    // The groups' iovecs, one after the other: as many as answers (≤ BATCH).
    let mut at = 0;
    for k in 0..n {
        let group = plan.group(from + k);
        for &i in group {
            let i = usize::from(i);
            iovs[at].iov_base = bufs[i].as_ptr() as *mut libc::c_void;
            iovs[at].iov_len = lens[i].min(BUF);
            at += 1;
        }
        let h = &mut hdrs[k].msg_hdr;
        h.msg_name = addrs[k].as_ptr() as *mut libc::c_void;
        h.msg_namelen = addrs[k].len();
        h.msg_iov = &mut iovs[at - group.len()];
        h.msg_iovlen = group.len() as _;
        if group.len() > 1 {
            let seg = lens[usize::from(group[0])].min(BUF) as u16;
            set_segment_size(h, &mut ctrl[k], seg);
        }
    }
    // SAFETY: `hdrs[..n]` point into `iovs`, `addrs`, `ctrl` and `bufs`,
    // which outlive the call; the iovecs of message k are the `msg_iovlen`
    // entries from `msg_iov`, within `iovs[..at]`; sendmmsg only reads
    // through these pointers; each iovec stays within its buffer.
    let sent =
        unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if sent < 0 {
        return Err(map_err(io::Error::last_os_error()));
    }
    Ok(sent as usize)
}

/// Most segments in one relayed train ([`send_train`]).
pub(crate) const TRAIN_MAX_SEGS: usize = GSO_MAX_SEGS;
/// Most payload bytes in one relayed train.
pub(crate) const TRAIN_MAX_BYTES: usize = GSO_MAX_BYTES;
/// Longest relayed datagram sent in a train: 1500-byte Ethernet MTU less the
/// IPv6 and UDP headers. A route with a smaller MTU refuses the train
/// (EINVAL) and the caller sends its datagrams one by one.
pub(crate) const TRAIN_MAX_SEG_LEN: usize = 1452;

/// Send `segs` to `to` with one `sendmsg`: with more than one segment, as a
/// UDP GSO train (`UDP_SEGMENT` of the first segment's length; all but the
/// last must be that long, the last may be shorter), which the receiver
/// gets as separate datagrams. Only call with several segments after
/// [`gso_enabled`] said yes. At most [`TRAIN_MAX_SEGS`] segments.
#[cfg(target_os = "linux")]
pub(crate) fn send_train(fd: RawFd, segs: &[&[u8]], to: SocketAddr) -> io::Result<()> {
    let n = segs.len();
    if n == 0 || n > TRAIN_MAX_SEGS {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let addr = socket2::SockAddr::from(to);
    // SAFETY: plain C structs, all-zero is valid.
    let mut iovs: [libc::iovec; TRAIN_MAX_SEGS] = unsafe { std::mem::zeroed() };
    for (iov, seg) in iovs.iter_mut().zip(segs) {
        iov.iov_base = seg.as_ptr() as *mut libc::c_void;
        iov.iov_len = seg.len();
    }
    let mut ctrl: SegCtrl = [0; 4];
    // SAFETY: a plain C struct, all-zero is valid.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_name = addr.as_ptr() as *mut libc::c_void;
    h.msg_namelen = addr.len();
    h.msg_iov = iovs.as_mut_ptr();
    h.msg_iovlen = n as _;
    if n > 1 {
        let seg = u16::try_from(segs[0].len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        set_segment_size(&mut h, &mut ctrl, seg);
    }
    // SAFETY: `h` points into `addr`, `iovs` (whose first `n` entries cover
    // the caller's slices) and `ctrl`, all alive for the call; sendmsg only
    // reads through them. MSG_DONTWAIT keeps it non-blocking.
    let r = unsafe { libc::sendmsg(fd, &h, libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(map_err(io::Error::last_os_error()));
    }
    Ok(())
}

/// Receive up to `meta.len()` (at most [`BATCH`]) datagrams into slots of
/// `buf`: slot `k` is `buf[k * stride + head..(k + 1) * stride]` (the first
/// `head` bytes of each slot are left for the caller to write a header
/// into). Returns how many; `meta[k].len` counts from the slot's `head`.
#[cfg(target_os = "linux")]
pub(crate) fn recv_slots(
    fd: RawFd,
    buf: &mut [u8],
    stride: usize,
    head: usize,
    meta: &mut [RecvMeta],
) -> io::Result<usize> {
    if head >= stride {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let n = meta.len().min(BATCH).min(buf.len() / stride);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: plain C structs, all-zero is valid.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (k, slot) in buf.chunks_exact_mut(stride).take(n).enumerate() {
        let data = &mut slot[head..];
        iovs[k].iov_base = data.as_mut_ptr().cast();
        iovs[k].iov_len = data.len();
        hdrs[k].msg_hdr.msg_name = (&mut names[k] as *mut libc::sockaddr_storage).cast();
        hdrs[k].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
        hdrs[k].msg_hdr.msg_iov = &mut iovs[k];
        hdrs[k].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `hdrs[..n]` point into `iovs`, `names` and the disjoint slots
    // of `buf`, all alive for the call; the kernel writes at most `iov_len`
    // bytes into each slot and `msg_namelen` into each name.
    let got = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(map_err(io::Error::last_os_error()));
    }
    let got = got as usize;
    for k in 0..got {
        let h = &hdrs[k];
        // SAFETY: the kernel filled `names[k]` and set its length; a
        // sockaddr_storage is large enough for any address family.
        let addr = unsafe { socket2::SockAddr::new(names[k], h.msg_hdr.msg_namelen) };
        meta[k] = RecvMeta {
            len: (h.msg_len as usize).min(stride - head),
            from: addr
                .as_socket()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        };
    }
    Ok(got)
}

/// ENOSYS and friends become `Unsupported`: the caller then stops batching.
#[cfg(target_os = "linux")]
fn map_err(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => io::ErrorKind::Unsupported.into(),
        _ => e,
    }
}

/// Batched receive is not available here.
#[cfg(not(target_os = "linux"))]
pub(crate) fn recv_batch(
    _fd: RawFd,
    _bufs: &mut [[u8; BUF]],
    _meta: &mut [RecvMeta],
) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Batched send is not available here.
#[cfg(not(target_os = "linux"))]
pub(crate) fn send_batch(
    _fd: RawFd,
    _bufs: &[[u8; BUF]],
    _lens: &[usize],
    _dests: &[SocketAddr],
) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

/// No UDP GSO nor batched receive here.
#[cfg(not(target_os = "linux"))]
pub(crate) fn send_train(_fd: RawFd, _segs: &[&[u8]], _to: SocketAddr) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// No batched receive here.
#[cfg(not(target_os = "linux"))]
pub(crate) fn recv_slots(
    _fd: RawFd,
    _buf: &mut [u8],
    _stride: usize,
    _head: usize,
    _meta: &mut [RecvMeta],
) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Batched send is not available here.
#[cfg(not(target_os = "linux"))]
pub(crate) fn send_gso(
    _fd: RawFd,
    _bufs: &[[u8; BUF]],
    _lens: &[usize],
    _dests: &[SocketAddr],
    _plan: &GsoPlan,
    _from: usize,
) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn groups(plan: &GsoPlan) -> Vec<Vec<u8>> {
        (0..plan.len()).map(|g| plan.group(g).to_vec()).collect()
    }

    #[test]
    fn plan_groups_by_destination_in_order() {
        let (a, b, c) = (addr(1), addr(2), addr(3));
        let dests = [a, b, a, c, b, a, a];
        let lens = [68, 72, 68, 80, 72, 68, 60];
        let mut plan = GsoPlan::new();
        plan.build(&lens, &dests);
        // a's last answer is shorter: it ends a's train, still in it.
        assert_eq!(groups(&plan), vec![vec![0, 2, 5, 6], vec![1, 4], vec![3]]);
        assert_eq!(plan.answers_from(0), 7);
        assert_eq!(plan.answers_from(1), 3);
    }

    #[test]
    fn plan_starts_a_new_train_when_the_size_rule_breaks() {
        let a = addr(1);
        let dests = [a; 6];
        // Longer than the train's segment: new train. After a shorter one
        // (which closes it): new train. Order is kept across trains.
        let lens = [60, 68, 68, 64, 68, 68];
        let mut plan = GsoPlan::new();
        plan.build(&lens, &dests);
        assert_eq!(groups(&plan), vec![vec![0], vec![1, 2, 3], vec![4, 5]]);
    }

    #[test]
    fn plan_keeps_long_answers_alone_and_caps_trains() {
        let a = addr(1);
        let lens = [GSO_MAX_SEG_LEN + 1; 3];
        let mut plan = GsoPlan::new();
        plan.build(&lens, &[a; 3]);
        assert_eq!(groups(&plan), vec![vec![0], vec![1], vec![2]]);

        // 2000-byte answers: 32 of them would pass 65 000 bytes.
        let lens = [2000; BATCH];
        plan.build(&lens, &[a; BATCH]);
        assert!(plan.len() > 1);
        for g in 0..plan.len() {
            assert!(plan.group(g).len() * 2000 <= GSO_MAX_BYTES || plan.group(g).len() == 1);
        }
        let lens = [500; BATCH];
        plan.build(&lens, &[a; BATCH]);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan.answers_from(0), BATCH);
        // Fewer lens than dests: the shorter slice counts.
        plan.build(&lens[..3], &[a; BATCH]);
        assert_eq!(plan.answers_from(0), 3);
    }

    #[test]
    fn split_makes_groups_of_one_in_the_same_order() {
        let (a, b) = (addr(1), addr(2));
        let dests = [a, b, a, b, a];
        let mut plan = GsoPlan::new();
        plan.build(&[68; 5], &dests);
        assert_eq!(groups(&plan), vec![vec![0, 2, 4], vec![1, 3]]);
        plan.split_from(1);
        assert_eq!(groups(&plan), vec![vec![0, 2, 4], vec![1], vec![3]]);
        plan.split_from(0);
        assert_eq!(
            groups(&plan),
            vec![vec![0], vec![2], vec![4], vec![1], vec![3]]
        );
        plan.split_from(9);
        assert_eq!(plan.len(), 5);
    }

    /// An answer whose bytes say which answer it is.
    fn fill(buf: &mut [u8; BUF], i: usize, len: usize) {
        for (k, b) in buf[..len].iter_mut().enumerate() {
            *b = (i * 7 + k) as u8;
        }
        buf[0] = i as u8;
    }

    /// Trains sent on loopback reach plain sockets (no UDP_GRO) as one
    /// datagram per answer, each intact, in order per destination.
    #[cfg(target_os = "linux")]
    #[test]
    fn trains_arrive_as_separate_datagrams() {
        use std::net::UdpSocket;
        use std::os::fd::AsRawFd;
        use std::time::Duration;

        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ca = UdpSocket::bind("127.0.0.1:0").unwrap();
        let cb = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (a, b) = (ca.local_addr().unwrap(), cb.local_addr().unwrap());
        // a: five of 68 bytes and a last one of 52; b: three of 90.
        let dests = [a, b, a, a, b, a, a, b, a];
        let lens = [68, 90, 68, 68, 90, 68, 68, 90, 52];
        let mut bufs = vec![[0u8; BUF]; BATCH];
        for (i, &len) in lens.iter().enumerate() {
            fill(&mut bufs[i], i, len);
        }
        let fd = server.as_raw_fd();
        let gso = gso_enabled(fd);
        let mut plan = GsoPlan::new();
        plan.build(&lens, &dests);
        assert_eq!(groups(&plan), vec![vec![0, 2, 3, 5, 6, 8], vec![1, 4, 7]]);
        if !gso {
            // No GSO here: the same path with plain datagrams.
            plan.split_from(0);
        }
        let mut g = 0;
        while g < plan.len() {
            g += send_gso(fd, &bufs, &lens, &dests, &plan, g).unwrap();
        }
        for (client, want) in [(&ca, vec![0, 2, 3, 5, 6, 8]), (&cb, vec![1, 4, 7])] {
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut rx = [0u8; 4096];
            for i in want {
                let (n, from) = client.recv_from(&mut rx).unwrap();
                assert_eq!(from, server.local_addr().unwrap());
                assert_eq!(&rx[..n], &bufs[i][..lens[i]], "answer {i}");
            }
            // Nothing more: loopback delivers within the send call.
            client.set_nonblocking(true).unwrap();
            let extra = client.recv_from(&mut rx);
            assert_eq!(extra.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
        }
    }

    /// A train to a destination the kernel refuses (port 0: EINVAL) fails
    /// like a plain datagram would, and says so with a GSO-suspect error, so
    /// that the caller retries one by one before blaming GSO.
    #[cfg(target_os = "linux")]
    #[test]
    fn train_to_port_zero_is_refused() {
        use std::net::UdpSocket;
        use std::os::fd::AsRawFd;

        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = server.as_raw_fd();
        let lens = [68; 2];
        let dests = [addr(0); 2];
        let bufs = vec![[0u8; BUF]; 2];
        let mut plan = GsoPlan::new();
        plan.build(&lens, &dests);
        if gso_enabled(fd) {
            let e = send_gso(fd, &bufs, &lens, &dests, &plan, 0).unwrap_err();
            assert!(is_gso_error(&e), "{e}");
        }
        plan.split_from(0);
        let e = send_gso(fd, &bufs, &lens, &dests, &plan, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn send_gso_refuses_a_plan_beyond_the_answers() {
        let mut plan = GsoPlan::new();
        plan.build(&[68; 3], &[addr(1); 3]);
        let bufs = vec![[0u8; BUF]; 2];
        let r = send_gso(-1, &bufs, &[68; 2], &[addr(1); 2], &plan, 0);
        assert!(r.is_err());
    }
}
