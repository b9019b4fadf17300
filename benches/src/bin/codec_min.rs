//! A noise-resistant quick look at the codec operations: the fastest of many
//! short batches (not criterion's mean), implementations interleaved, so a
//! busy shared machine still gives usable ratios. Criterion (`cargo xtask
//! bench codec`) is the reference; this is for iterating on a loaded box.
//!
//! `cargo run --release -p p2p-benches --features peers --bin codec_min [ROUNDS]`

use std::hint::black_box;
use std::time::Instant;

use p2p_benches::{ice_request, Codec, Error, P2p};

/// Iterations per batch: long enough to dwarf `Instant::now`, short enough
/// that some batches run without being preempted.
const BATCH: u32 = 2_000;

fn batch<C: Codec>(c: &mut C, op: &str, request: &[u8]) -> Result<f64, Error> {
    let start = Instant::now();
    for _ in 0..BATCH {
        match op {
            "decode" => {
                black_box(c.decode(black_box(request))?);
            }
            "verify" => c.verify(black_box(request))?,
            "sign" => {
                black_box(c.sign()?.len());
            }
            _ => {
                black_box(c.respond(black_box(request))?.len());
            }
        }
    }
    Ok(start.elapsed().as_nanos() as f64 / f64::from(BATCH))
}

fn main() -> Result<(), Error> {
    let rounds: u32 = match std::env::args().nth(1) {
        Some(r) => r.parse()?,
        None => 2_000,
    };
    let request = ice_request()?;
    let mut p2p = P2p::new()?;
    #[cfg(feature = "peers")]
    let (mut webrtc, mut stun_rs) = (p2p_benches::WebrtcRs::new()?, p2p_benches::StunRs::new()?);
    println!("| operation | p2p ns | webrtc-rs ns | stun-rs ns | fastest peer / p2p |");
    println!("|---|---:|---:|---:|---:|");
    for op in ["decode", "verify", "sign", "response"] {
        let mut best = [f64::INFINITY; 3];
        for _ in 0..rounds {
            best[0] = best[0].min(batch(&mut p2p, op, &request)?);
            #[cfg(feature = "peers")]
            {
                best[1] = best[1].min(batch(&mut webrtc, op, &request)?);
                best[2] = best[2].min(batch(&mut stun_rs, op, &request)?);
            }
        }
        let peer = best[1].min(best[2]);
        println!(
            "| {op} | {:.1} | {:.1} | {:.1} | {:.2}x |",
            best[0],
            best[1],
            best[2],
            peer / best[0]
        );
    }
    Ok(())
}
