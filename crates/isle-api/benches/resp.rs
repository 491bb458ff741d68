//! Micro-benchmarks of the RESP command parser: 1,000 pipelined `SET key value` commands in one
//! buffer (whole, and arriving in 16 KiB reads) and a single inline command.
//!
//! Run with `cargo bench -p isle-api --bench resp`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use isle_api::resp::codec::{CommandParser, encode_command};

/// Commands in the pipelined buffer.
const PIPELINE: usize = 1_000;
/// Bytes of one read from the socket.
const READ: usize = 16 << 10;

/// `PIPELINE` `SET key:NNNNNN <32-byte value>` commands as a client sends them.
fn pipeline() -> Vec<u8> {
    (0..PIPELINE)
        .flat_map(|i| {
            let key = format!("key:{i:06}");
            let value = format!("value-{i:06}-abcdefghijklmnopqrs");
            encode_command(&[b"SET".as_slice(), key.as_bytes(), value.as_bytes()])
        })
        .collect()
}

/// Parses every command of `bytes`, fed in `chunk`-byte reads; returns the count.
fn parse_all(parser: &mut CommandParser, bytes: &[u8], chunk: usize) -> usize {
    let mut commands = 0;
    for piece in bytes.chunks(chunk) {
        parser.feed(piece);
        while let Some(command) = parser.next_command().expect("valid RESP") {
            black_box(command);
            commands += 1;
        }
    }
    commands
}

fn parse(c: &mut Criterion) {
    let buffer = pipeline();
    let mut group = c.benchmark_group("resp");
    group.throughput(Throughput::Elements(PIPELINE as u64));
    group.bench_function("parse_1000_pipelined_set", |b| {
        let mut parser = CommandParser::default();
        b.iter(|| {
            assert_eq!(
                parse_all(&mut parser, black_box(&buffer), buffer.len()),
                PIPELINE
            )
        });
    });
    group.bench_function("parse_1000_pipelined_set_16KiB_reads", |b| {
        let mut parser = CommandParser::default();
        b.iter(|| assert_eq!(parse_all(&mut parser, black_box(&buffer), READ), PIPELINE));
    });

    let inline = b"SET key:000042 value-000042\r\n";
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_inline_set", |b| {
        let mut parser = CommandParser::default();
        b.iter(|| assert_eq!(parse_all(&mut parser, black_box(inline), inline.len()), 1));
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
    targets = parse
}
criterion_main!(benches);
