//! The ceiling: plain 1,200-byte UDP datagrams from one loopback socket to
//! another, one `send_to` and one `recv_from` per datagram, both sockets
//! with 4 MiB buffers. Unreliable: what the receiver cannot keep up with
//! is dropped, and the figure is what arrived.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::{Job, Outcome, SOCKET_BUFFER};

const DATAGRAM: usize = 1200;

/// A loopback UDP socket with `SOCKET_BUFFER` of send and receive buffer.
pub(crate) fn socket() -> Result<UdpSocket, String> {
    let s =
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| e.to_string())?;
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .map_err(|e| e.to_string())?;
    Ok(s.into())
}

pub(crate) fn run(job: Job) -> Result<Outcome, String> {
    let rx = socket()?;
    let tx = socket()?;
    let to = rx.local_addr().map_err(|e| e.to_string())?;
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .map_err(|e| e.to_string())?;
    let count = job.bytes / DATAGRAM as u64;
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let sender = {
        let done = done.clone();
        std::thread::spawn(move || {
            let buf = [7u8; DATAGRAM];
            for _ in 0..count {
                if tx.send_to(&buf, to).is_err() || start.elapsed() > job.limit {
                    break;
                }
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    let mut buf = [0u8; 2048];
    let (mut got, mut last) = (0u64, start);
    while got < count && start.elapsed() < job.limit {
        match rx.recv_from(&mut buf) {
            Ok((n, _)) if n == DATAGRAM => {
                got += 1;
                last = Instant::now();
            }
            Ok(_) => {}
            Err(_) if done.load(Ordering::Relaxed) => break,
            Err(_) => {}
        }
    }
    let _ = sender.join();
    Ok(Outcome {
        bytes: got * DATAGRAM as u64,
        elapsed: last - start,
        complete: true,
    })
}
