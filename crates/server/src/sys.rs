//! Batched datagram I/O: `recvmmsg(2)` and `sendmmsg(2)` on Linux, one call
//! for up to [`BATCH`] datagrams. The only unsafe code of the crate lives
//! here. Both functions are non-blocking and report `WouldBlock` like any
//! socket call; other systems (or kernels without these calls) get
//! `Unsupported` and the caller falls back to one datagram per call.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

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
    let n = bufs.len().min(meta.len()).min(BATCH);
    // SAFETY: iovec, sockaddr_storage and mmsghdr are plain C structs for
    // which all-zero bytes are a valid value.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iovs[i].iov_base = bufs[i].as_mut_ptr().cast();
        iovs[i].iov_len = BUF;
        hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `hdrs[..n]` point into `iovs`, `names` and `bufs`, which all
    // outlive the call; each iovec covers exactly one `BUF`-byte buffer that
    // we borrow mutably; the kernel writes at most `msg_namelen` bytes of
    // address and `iov_len` bytes of data. MSG_DONTWAIT keeps it non-blocking.
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
    for i in 0..got {
        let h = &hdrs[i];
        // SAFETY: the kernel filled `names[i]` and set its length; a
        // sockaddr_storage is large enough for any address family.
        let addr = unsafe { socket2::SockAddr::new(names[i], h.msg_hdr.msg_namelen) };
        meta[i] = RecvMeta {
            len: (h.msg_len as usize).min(BUF),
            from: addr
                .as_socket()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        };
    }
    Ok(got)
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
