//! Codec benchmarks: our `p2p-stun` against the webrtc-rs `stun` crate and
//! `stun-rs` (feature `peers`) and against the raw floor (one HMAC-SHA1 and
//! one CRC-32), all on the same ICE check from `p2p_benches::ice_request`.
//!
//! One criterion group per operation, one function per implementation:
//! `decode`, `verify`, `sign`, `response` × `p2p`, `webrtc-rs`, `stun-rs`,
//! plus `floor` and `floor-prekeyed` in `verify` and `sign`, and
//! `p2p-one-pass` in `decode`. The operations
//! are the [`Codec`] methods, which the crate's unit tests check.
//! `cargo xtask bench` runs this and prints the table of ratios.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use p2p_benches::{ice_request, p2p_decode_one_pass, Codec, Floor, P2p};
use p2p_stun::{ChannelData, SliceBuf};

/// The operations, in report order; each is a criterion group.
const OPERATIONS: [&str; 4] = ["decode", "verify", "sign", "response"];

/// One operation of one implementation, as `op`'s group's function `C::NAME`.
fn bench_op<C: Codec>(g: &mut BenchmarkGroup<'_, WallTime>, op: &str, c: &mut C, request: &[u8]) {
    g.bench_function(C::NAME, |b| match op {
        "decode" => b.iter(|| c.decode(black_box(request)).expect("decode")),
        "verify" => b.iter(|| c.verify(black_box(request)).expect("verify")),
        "sign" => b.iter(|| c.sign().map(|m| black_box(m).len()).expect("sign")),
        _ => b.iter(|| {
            c.respond(black_box(request))
                .map(|m| black_box(m).len())
                .expect("respond")
        }),
    });
}

fn comparison(c: &mut Criterion) {
    let request = ice_request().expect("the ICE check encodes");
    let mut p2p = P2p::new().expect("p2p setup");
    #[cfg(feature = "peers")]
    let (mut webrtc, mut stun_rs) = (
        p2p_benches::WebrtcRs::new().expect("webrtc-rs setup"),
        p2p_benches::StunRs::new().expect("stun-rs setup"),
    );
    let floor = Floor::new(&request).expect("floor setup");

    for op in OPERATIONS {
        let mut g = c.benchmark_group(op);
        bench_op(&mut g, op, &mut p2p, &request);
        #[cfg(feature = "peers")]
        {
            bench_op(&mut g, op, &mut webrtc, &request);
            bench_op(&mut g, op, &mut stun_rs, &request);
        }
        if op == "decode" {
            // Not in the table: how fast `decode` gets when the attributes
            // are read in one pass rather than one `Message::get` walk each.
            g.bench_function("p2p-one-pass", |b| {
                b.iter(|| p2p_decode_one_pass(black_box(&request)).expect("decode"))
            });
        }
        // The floor of verify and of sign is the same work: one HMAC-SHA1
        // over the bytes before MESSAGE-INTEGRITY and one CRC-32 over the
        // bytes before FINGERPRINT. It is measured in both groups so that
        // each row of the report has its own, taken next to the others.
        if op == "verify" || op == "sign" {
            g.bench_function("floor", |b| {
                b.iter(|| floor.verify(black_box(&request)).expect("floor"))
            });
            g.bench_function("floor-prekeyed", |b| {
                b.iter(|| floor.verify_prekeyed(black_box(&request)).expect("floor"))
            });
        }
        g.finish();
    }
}

fn channel_data(c: &mut Criterion) {
    let mut g = c.benchmark_group("channel-data");
    let payload = [0xAB_u8; 1200];
    g.throughput(criterion::Throughput::Bytes(payload.len() as u64));
    let mut framed = Vec::new();
    ChannelData::new(0x4001, &payload)
        .expect("channel number in range")
        .encode(&mut framed, false)
        .expect("encodes");
    g.bench_function("decode_1200", |b| {
        b.iter(|| ChannelData::decode(black_box(&framed)).map(|c| c.data().len()))
    });
    let mut out = [0u8; 1300];
    g.bench_function("encode_1200", |b| {
        b.iter(|| {
            ChannelData::new(0x4001, black_box(&payload))
                .expect("channel number in range")
                .encode(&mut SliceBuf::new(&mut out), false)
        })
    });
    g.finish();
}

/// Short measurements: the whole run takes a couple of minutes on a shared
/// 2-core machine. The operations take well under a microsecond, so 2 s still
/// gives millions of iterations per sample set.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = comparison, channel_data
}
criterion_main!(benches);
