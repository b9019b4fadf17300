//! Codec benchmarks: decode, verify and encode of the messages every ICE check
//! and every STUN server answer consists of. `cargo xtask bench codec`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use p2p_benches::{RFC5769_PASSWORD, RFC5769_REQUEST};
use p2p_stun::attr::{IceControlled, Priority, Software, Username, XorMappedAddress};
use p2p_stun::{
    ChannelData, Key, Message, MessageBuilder, MessageClass, MessageType, Method, SliceBuf,
    TransactionId,
};

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("stun/decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("rfc5769_request", |b| {
        b.iter(|| Message::decode(black_box(&RFC5769_REQUEST)).map(|m| m.transaction_id()))
    });
    g.bench_function("rfc5769_request+username+priority", |b| {
        b.iter(|| {
            let m = Message::decode(black_box(&RFC5769_REQUEST)).unwrap();
            (
                m.get::<Username>().unwrap().map(|u| u.as_str().len()),
                m.get::<Priority>().unwrap(),
            )
        })
    });
    let key = Key::short_term(RFC5769_PASSWORD).unwrap();
    g.bench_function("rfc5769_request+verify_integrity+fingerprint", |b| {
        b.iter(|| {
            let m = Message::decode(black_box(&RFC5769_REQUEST)).unwrap();
            m.verify_fingerprint().unwrap();
            m.verify_integrity(&key).unwrap();
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("stun/encode");
    g.throughput(Throughput::Elements(1));
    let tid = TransactionId::new([7; 12]);
    let addr = "192.0.2.1:32853".parse().unwrap();
    let mut out = [0u8; 256];
    g.bench_function("binding_success_xor_mapped+fingerprint", |b| {
        b.iter(|| {
            let mut m = MessageBuilder::new(
                SliceBuf::new(&mut out),
                MessageType::new(Method::BINDING, MessageClass::Success),
                black_box(tid),
            )
            .unwrap();
            m.add(&XorMappedAddress(addr)).unwrap();
            m.add_fingerprint().unwrap();
            m.finish()
        })
    });
    let key = Key::short_term(RFC5769_PASSWORD).unwrap();
    g.bench_function("ice_check_request+integrity+fingerprint", |b| {
        b.iter(|| {
            let mut m = MessageBuilder::new(
                SliceBuf::new(&mut out),
                MessageType::new(Method::BINDING, MessageClass::Request),
                black_box(tid),
            )
            .unwrap();
            m.add(&Software::new("STUN test client").unwrap()).unwrap();
            m.add(&Priority(0x6e0001ff)).unwrap();
            m.add(&IceControlled(0x932ff9b151263b36)).unwrap();
            m.add(&Username::new("evtj:h6vY").unwrap()).unwrap();
            m.add_message_integrity(&key).unwrap();
            m.add_fingerprint().unwrap();
            m.finish()
        })
    });
    g.finish();
}

fn channel_data(c: &mut Criterion) {
    let mut g = c.benchmark_group("turn/channel_data");
    let payload = [0xAB_u8; 1200];
    g.throughput(Throughput::Bytes(payload.len() as u64));
    let mut framed = Vec::new();
    ChannelData::new(0x4001, &payload)
        .unwrap()
        .encode(&mut framed, false)
        .unwrap();
    g.bench_function("decode_1200", |b| {
        b.iter(|| ChannelData::decode(black_box(&framed)).map(|c| c.data().len()))
    });
    let mut out = [0u8; 1300];
    g.bench_function("encode_1200", |b| {
        b.iter(|| {
            ChannelData::new(0x4001, black_box(&payload))
                .unwrap()
                .encode(&mut SliceBuf::new(&mut out), false)
        })
    });
    g.finish();
}

criterion_group!(benches, decode, encode, channel_data);
criterion_main!(benches);
