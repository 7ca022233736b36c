//! The codec on the hot path, in isolation: decoding a typical telemetry
//! request and 1NCE's bootstrap request, encoding the piggybacked 2.04.
//!
//! `cargo bench -p coapgate-codec` (about 20 s); numbers in
//! docs/performance.md.

use std::hint::black_box;
use std::time::Duration;

use coapgate_codec::{MessageClass, MessageType, Packet, ResponseType, decode, encode, set_token};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// CON POST /data?t=test, message ID 0x1234, token 0xab, a 100-byte payload:
/// 118 bytes, what a modem sends every few minutes.
fn telemetry() -> Vec<u8> {
    let mut datagram = vec![0x41, 0x02, 0x12, 0x34, 0xab];
    datagram.push(0xb4); // Uri-Path (11), 4 bytes
    datagram.extend_from_slice(b"data");
    datagram.push(0x46); // Uri-Query (11 + 4), 6 bytes
    datagram.extend_from_slice(b"t=test");
    datagram.push(0xff);
    datagram.extend_from_slice(br#"{"temperature":21.5,"humidity":40,"battery":3.71,"rssi":-87,"seq":1234567,"ts":1700000000,"ok":true}"#);
    datagram
}

/// NON GET /bootstrap with Uri-Host coap.os.1nce.com, as 1NCE's C SDK sends it.
fn bootstrap() -> Vec<u8> {
    let mut datagram = vec![0x50, 0x01, 0xe9, 0x03];
    datagram.push(0x3d); // Uri-Host (3), extended length 13 + 3
    datagram.push(0x03);
    datagram.extend_from_slice(b"coap.os.1nce.com");
    datagram.push(0x89); // Uri-Path (3 + 8), 9 bytes
    datagram.extend_from_slice(b"bootstrap");
    datagram
}

/// The piggybacked 2.04 the engine sends once the broker confirmed.
fn ack_2_04() -> Packet {
    let mut packet = Packet::new();
    packet.header.set_type(MessageType::Acknowledgement);
    packet.header.message_id = 0x1234;
    packet.header.code = MessageClass::Response(ResponseType::Changed);
    set_token(&mut packet, &[0xab]).expect("a 1-byte token");
    packet
}

fn codec(c: &mut Criterion) {
    let telemetry = telemetry();
    assert_eq!(telemetry.len(), 118);
    let bootstrap = bootstrap();
    let ack = ack_2_04();
    assert_eq!(
        encode(&ack).expect("encodes"),
        [0x61, 0x44, 0x12, 0x34, 0xab]
    );

    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode/telemetry", |b| {
        b.iter(|| decode(black_box(&telemetry)))
    });
    group.bench_function("decode/bootstrap", |b| {
        b.iter(|| decode(black_box(&bootstrap)))
    });
    group.bench_function("encode/ack_2.04", |b| b.iter(|| encode(black_box(&ack))));
    // What the engine does per response: build the packet, then encode it.
    group.bench_function("build_and_encode/ack_2.04", |b| {
        b.iter(|| encode(&ack_2_04()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = codec
}
criterion_main!(benches);
