//! Batched datagram I/O for the load generators (`sendmmsg(2)`,
//! `recvmmsg(2)`, UDP GSO trains), so that a generator costs little per datagram and the
//! server under test is what is measured. Linux only: elsewhere every call
//! answers `Unsupported` and the generators fall back to one datagram per
//! call.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Datagrams per call at most.
pub const BATCH: usize = 64;

/// Send `bufs[i]` (to `dests[i]` when given, else on the connected socket)
/// for every `i` (at most [`BATCH`]); returns how many the kernel took,
/// from the first. Blocks as the socket does.
#[cfg(target_os = "linux")]
pub fn send(fd: RawFd, bufs: &[&[u8]], dests: Option<&[SocketAddr]>) -> io::Result<usize> {
    let n = bufs.len().min(BATCH).min(dests.map_or(BATCH, <[_]>::len));
    if n == 0 {
        return Ok(0);
    }
    let addrs: Option<[socket2::SockAddr; BATCH]> =
        dests.map(|d| std::array::from_fn(|i| socket2::SockAddr::from(d[i.min(n - 1)])));
    // SAFETY: iovec and mmsghdr are plain C structs for which all-zero bytes
    // are a valid value.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iovs[i].iov_base = bufs[i].as_ptr() as *mut libc::c_void;
        iovs[i].iov_len = bufs[i].len();
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
        if let Some(a) = &addrs {
            hdrs[i].msg_hdr.msg_name = a[i].as_ptr() as *mut libc::c_void;
            hdrs[i].msg_hdr.msg_namelen = a[i].len();
        }
    }
    // SAFETY: `hdrs[..n]` point into `iovs`, `addrs` and the caller's
    // slices, which outlive the call; sendmmsg only reads through them.
    let sent = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Receive up to `bufs.len()` (at most [`BATCH`]) datagrams, waiting for the
/// first only (up to the socket's read timeout); their lengths go to `lens`
/// and, when asked, their sources to `froms`.
#[cfg(target_os = "linux")]
pub fn recv<const N: usize>(
    fd: RawFd,
    bufs: &mut [[u8; N]],
    lens: &mut [usize],
    mut froms: Option<&mut [SocketAddr]>,
) -> io::Result<usize> {
    let n = bufs
        .len()
        .min(lens.len())
        .min(BATCH)
        .min(froms.as_deref().map_or(BATCH, <[_]>::len));
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: plain C structs, all-zero is valid.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iovs[i].iov_base = bufs[i].as_mut_ptr().cast();
        iovs[i].iov_len = N;
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
        if froms.is_some() {
            hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
        }
    }
    // SAFETY: `hdrs[..n]` point into `iovs`, `names` and `bufs`, which
    // outlive the call and which we borrow mutably; each iovec covers one
    // N-byte buffer; the kernel writes at most `msg_namelen` bytes of address.
    let got = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = got as usize;
    for i in 0..got {
        lens[i] = (hdrs[i].msg_len as usize).min(N);
        if let Some(f) = froms.as_deref_mut() {
            // SAFETY: the kernel filled `names[i]` and set its length; a
            // sockaddr_storage is large enough for any address family.
            let a = unsafe { socket2::SockAddr::new(names[i], hdrs[i].msg_hdr.msg_namelen) };
            f[i] = a
                .as_socket()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        }
    }
    Ok(got)
}

/// Most datagrams in one GSO train.
pub const TRAIN_MAX_SEGS: usize = 64;
/// Most bytes in one GSO train.
pub const TRAIN_MAX_BYTES: usize = 65_000;

/// Whether the kernel knows UDP GSO (`UDP_SEGMENT`, Linux ≥ 4.18).
#[cfg(target_os = "linux")]
pub fn gso_available(fd: RawFd) -> bool {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val` and `len` are live locals of the sizes given.
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

/// Send `segs` (all as long as the first but the last, which may be
/// shorter; at most [`TRAIN_MAX_SEGS`] and [`TRAIN_MAX_BYTES`]) to `dest`
/// (or on the connected socket) as one UDP GSO train: the receiver gets
/// them as separate datagrams. Blocks as the socket does.
#[cfg(target_os = "linux")]
pub fn send_train(fd: RawFd, segs: &[&[u8]], dest: Option<SocketAddr>) -> io::Result<()> {
    let n = segs.len();
    if n == 0 || n > TRAIN_MAX_SEGS {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let seg =
        u16::try_from(segs[0].len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let addr = dest.map(socket2::SockAddr::from);
    // SAFETY: plain C structs, all-zero is valid.
    let mut iovs: [libc::iovec; TRAIN_MAX_SEGS] = unsafe { std::mem::zeroed() };
    for (iov, s) in iovs.iter_mut().zip(segs) {
        iov.iov_base = s.as_ptr() as *mut libc::c_void;
        iov.iov_len = s.len();
    }
    let mut ctrl = [0u64; 4];
    // SAFETY: a plain C struct, all-zero is valid.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some(a) = &addr {
        h.msg_name = a.as_ptr() as *mut libc::c_void;
        h.msg_namelen = a.len();
    }
    h.msg_iov = iovs.as_mut_ptr();
    h.msg_iovlen = n as _;
    if n > 1 {
        h.msg_control = ctrl.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only does arithmetic.
        h.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as _;
        // SAFETY: `h` points at `ctrl` (32 bytes, u64-aligned, ≥ CMSG_SPACE(2)),
        // so CMSG_FIRSTHDR is its start and CMSG_DATA the 2 bytes after the
        // header, inside it; write_unaligned for the u16.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&h);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(2) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
        }
    }
    // SAFETY: `h` points into `addr`, `iovs` (covering the caller's slices)
    // and `ctrl`, all alive for the call; sendmsg only reads through them.
    let r = unsafe { libc::sendmsg(fd, &h, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until `fd` is readable or `timeout` passes (`ppoll(2)`, to the
/// nanosecond, where a socket read timeout rounds up to a scheduler tick);
/// whether it is readable.
#[cfg(target_os = "linux")]
pub fn wait_readable(fd: RawFd, timeout: std::time::Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    // SAFETY: `p` and `ts` are valid for the call; a null signal mask
    // leaves the mask as it is.
    let n = unsafe { libc::ppoll(&mut p, 1, &ts, std::ptr::null()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n > 0)
}

/// Sleeps `timeout` (no `ppoll` here); claims readable.
#[cfg(not(target_os = "linux"))]
pub fn wait_readable(_fd: RawFd, timeout: std::time::Duration) -> io::Result<bool> {
    std::thread::sleep(timeout);
    Ok(true)
}

/// Not available here.
#[cfg(not(target_os = "linux"))]
pub fn gso_available(_fd: RawFd) -> bool {
    false
}

/// Not available here.
#[cfg(not(target_os = "linux"))]
pub fn send_train(_fd: RawFd, _segs: &[&[u8]], _dest: Option<SocketAddr>) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Not available here.
#[cfg(not(target_os = "linux"))]
pub fn send(_fd: RawFd, _bufs: &[&[u8]], _dests: Option<&[SocketAddr]>) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Not available here.
#[cfg(not(target_os = "linux"))]
pub fn recv<const N: usize>(
    _fd: RawFd,
    _bufs: &mut [[u8; N]],
    _lens: &mut [usize],
    _froms: Option<&mut [SocketAddr]>,
) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn a_batch_goes_and_comes_back_with_its_sources() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let to = b.local_addr().unwrap();
        let msgs: [&[u8]; 3] = [b"one", b"two", b"three"];
        assert_eq!(send(a.as_raw_fd(), &msgs, Some(&[to; 3])).unwrap(), 3);
        let mut bufs = [[0u8; 16]; 8];
        let mut lens = [0usize; 8];
        let mut froms = [to; 8];
        let mut got = 0;
        while got < 3 {
            got += recv(
                b.as_raw_fd(),
                &mut bufs[got..],
                &mut lens[got..],
                Some(&mut froms[got..]),
            )
            .unwrap();
        }
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(&bufs[i][..lens[i]], *m);
            assert_eq!(froms[i], a.local_addr().unwrap());
        }
    }

    #[test]
    fn a_train_arrives_as_separate_datagrams() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if !gso_available(a.as_raw_fd()) {
            return; // an old kernel: the generators send batches instead
        }
        let segs: [&[u8]; 3] = [b"1111", b"2222", b"33"];
        send_train(a.as_raw_fd(), &segs, Some(b.local_addr().unwrap())).unwrap();
        let mut buf = [0u8; 64];
        for s in segs {
            let n = b.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], s);
        }
    }
}
