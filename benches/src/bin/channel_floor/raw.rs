//! What the libraries' per-packet costs would be with a fix: each measured
//! beside the code the library runs today, on this machine, in the same
//! run (for docs/performance.md, "The floor", upstream notes).

use std::collections::VecDeque;
use std::hint::black_box;

use crate::thread_cpu;

/// The SCTP packet of one full DATA chunk in a 1,200-byte datagram.
const PACKET: usize = 1160;
/// Chunks in flight with a full 1 MiB window of 1,132-byte chunks.
const IN_FLIGHT: usize = 926;

/// ns per call of `f`, the median of five rounds of `n` calls.
fn ns_per(n: u32, mut f: impl FnMut(u32)) -> f64 {
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let t = thread_cpu();
        for i in 0..n {
            f(i);
        }
        rounds.push(thread_cpu().saturating_sub(t));
    }
    rounds.sort();
    rounds[2].as_secs_f64() * 1e9 / f64::from(n)
}

/// sctp-proto's serial-number order (RFC 1982), as its `sna32lt`.
fn sna32lt(a: u32, b: u32) -> bool {
    (a < b && b - a < 1 << 31) || (a > b && a - b > 1 << 31)
}

/// Prints the rows of the raw-costs table.
pub(crate) fn table() {
    let packet: Vec<u8> = (0..PACKET).map(|i| (i * 7) as u8).collect();
    // sctp-proto's CRC-32c: the `crc` crate's slice-by-16 table
    // (sctp-proto 0.10.8, src/util.rs), computed on every packet sent
    // and every packet received.
    const TABLE: crc::Crc<u32, crc::Table<16>> =
        crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);
    let table = ns_per(200_000, |_| {
        black_box(TABLE.checksum(black_box(&packet)));
    });
    let hardware = ns_per(200_000, |_| {
        black_box(crc32c::crc32c(black_box(&packet)));
    });
    // The library's in-flight queue: each chunk sent pushes its TSN and
    // sorts the whole (already sorted) queue (`PayloadQueue::push`).
    let queue = |in_flight: usize| {
        let mut sorted: VecDeque<u32> = (0..in_flight as u32).collect();
        let mut next = in_flight as u32;
        let sort = ns_per(50_000, |_| {
            sorted.pop_front();
            sorted.push_back(next);
            next = next.wrapping_add(1);
            sorted.make_contiguous().sort_by(|a, b| {
                if sna32lt(*a, *b) {
                    std::cmp::Ordering::Less
                } else {
                    std::cmp::Ordering::Greater
                }
            });
            black_box(&sorted);
        });
        let append = ns_per(50_000, |_| {
            sorted.pop_front();
            sorted.push_back(next);
            next = next.wrapping_add(1);
            black_box(&sorted);
        });
        (sort, append)
    };
    // ring's AES-128-GCM seal and open of one record's payload: the floor
    // of DTLS's crypto per datagram.
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, &[7; 16]).expect("a 16-byte key"),
    );
    let mut buf = packet.clone();
    let seal = ns_per(100_000, |i| {
        buf.truncate(PACKET);
        let mut nonce = [0u8; 12];
        nonce[8..].copy_from_slice(&i.to_be_bytes());
        let n = ring::aead::Nonce::assume_unique_for_key(nonce);
        let _ = key.seal_in_place_append_tag(n, ring::aead::Aad::from(&[0u8; 13]), &mut buf);
        black_box(&buf);
    });
    println!("\nPer-packet costs inside the libraries, and with a fix (ns, median of 5 rounds):\n");
    println!("| cost | today | with a fix | fix |");
    println!("|---|---:|---:|---|");
    println!(
        "| CRC-32c of a {PACKET}-byte SCTP packet (once sent, once received) | {table:.0} | \
         {hardware:.0} | SSE4.2 `crc32` instruction (crate `crc32c`) instead of sctp-proto's \
         `crc` slice-by-16 table |"
    );
    for in_flight in [256, IN_FLIGHT] {
        let (sort, append) = queue(in_flight);
        println!(
            "| in-flight queue per chunk sent, {in_flight} chunks in flight | {sort:.0} | \
             {append:.0} | append in TSN order instead of a stable sort of the whole queue \
             per push |"
        );
    }
    println!(
        "| AES-128-GCM seal of {PACKET} bytes (ring, what DTLS now runs on) | {seal:.0} | | \
         the crypto floor per datagram |"
    );
}
