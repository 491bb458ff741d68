//! Micro-benchmarks of the peer wire codec: encoding and decoding frames (u32 length, crc32c,
//! postcard envelope) of a small (100 B) and a large (64 KiB) payload.
//!
//! Run with `cargo bench -p isle-net --bench frame`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use isle_net::{Envelope, FrameDecoder, MAX_FRAME_BYTES_DEFAULT, encode};
use isle_types::NodeId;
use serde::{Deserialize, Serialize};

/// A stand-in for a node message: a few fixed fields and an opaque byte payload (as the CP
/// log entries and AP objects travel, `serde_bytes` so postcard copies it in one run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Message {
    term: u64,
    index: u64,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

fn message(bytes: usize) -> Envelope<Message> {
    let payload = (0..bytes).map(|i| (i * 7 % 251) as u8).collect();
    Envelope::new(
        NodeId(3),
        Message {
            term: 7,
            index: 123_456,
            payload,
        },
    )
}

const SIZES: [(&str, usize); 2] = [("100B", 100), ("64KiB", 64 << 10)];

fn encode_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_encode");
    for (name, size) in SIZES {
        let envelope = message(size);
        let frame_len = encode(&envelope).expect("encode").len();
        group.throughput(Throughput::Bytes(frame_len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &envelope, |b, env| {
            b.iter(|| black_box(encode(black_box(env)).expect("encode")));
        });
    }
    group.finish();
}

fn decode_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_decode");
    for (name, size) in SIZES {
        let frame = encode(&message(size)).expect("encode");
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &frame, |b, frame| {
            let mut decoder = FrameDecoder::<Message>::new(MAX_FRAME_BYTES_DEFAULT);
            b.iter(|| {
                decoder.push(black_box(frame));
                black_box(decoder.next_frame().expect("decode").expect("whole frame"))
            });
        });
    }
    group.finish();

    // A read of many small frames at once, as a busy peer connection delivers them.
    let frames: Vec<u8> = (0..1_000)
        .flat_map(|_| encode(&message(100)).expect("encode"))
        .collect();
    let mut group = c.benchmark_group("frame_decode");
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("1000x100B_one_push", |b| {
        let mut decoder = FrameDecoder::<Message>::new(MAX_FRAME_BYTES_DEFAULT);
        b.iter(|| {
            decoder.push(black_box(&frames));
            let mut n = 0;
            while let Some(envelope) = decoder.next_frame().expect("decode") {
                black_box(envelope);
                n += 1;
            }
            assert_eq!(n, 1_000);
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = encode_frames, decode_frames
}
criterion_main!(benches);
