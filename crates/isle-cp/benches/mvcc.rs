//! Micro-benchmarks of the CP keyspace's MVCC state machine: applying a batch of puts, reading
//! one key and a 100-key prefix, and snapshotting and restoring a 10k-key state.
//!
//! Run with `cargo bench -p isle-cp --bench mvcc`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use isle_cp::command::{PutRequest, RangeRequest};
use isle_cp::{Command, StateMachine};

/// Keys in the store before the measured batch.
const KEYS: usize = 10_000;
/// Puts in one measured batch.
const BATCH: usize = 1_000;
/// Bytes of every value.
const VALUE_BYTES: usize = 256;
/// The leader's wall time embedded in every entry (a constant: the state machine reads no clock).
const NOW_MS: u64 = 1_700_000_000_000;

fn key(i: usize) -> Vec<u8> {
    format!("key/{i:05}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    let mut v = vec![0u8; VALUE_BYTES];
    for (j, byte) in v.iter_mut().enumerate() {
        *byte = (i.wrapping_mul(31).wrapping_add(j) & 0xff) as u8;
    }
    v
}

/// A state machine holding `KEYS` keys with `VALUE_BYTES`-byte values, one put per log entry.
fn populated() -> StateMachine {
    let mut sm = StateMachine::default();
    for i in 0..KEYS {
        let index = sm.last_applied() + 1;
        sm.apply(
            index,
            Command::new(PutRequest::new(&key(i), &value(i))),
            NOW_MS,
        )
        .expect("populating put");
    }
    sm
}

/// `BATCH` puts over the existing keys, spread by a stride co-prime with `KEYS`.
fn put_batch() -> Vec<Command> {
    (0..BATCH)
        .map(|n| {
            let i = n.wrapping_mul(7_919) % KEYS;
            Command::new(PutRequest::new(&key(i), &value(i + n)))
        })
        .collect()
}

fn apply_puts(c: &mut Criterion) {
    let base = populated();
    let batch = put_batch();
    let mut group = c.benchmark_group("mvcc");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("apply_1000_puts_256B_over_10k_keys", |b| {
        b.iter_batched(
            || (base.clone(), batch.clone()),
            |(mut sm, commands)| {
                let mut index = sm.last_applied();
                for command in commands {
                    index += 1;
                    black_box(sm.apply(index, command, NOW_MS).expect("put"));
                }
                sm
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn reads(c: &mut Criterion) {
    let sm = populated();
    let one = RangeRequest::key(&key(4_321));
    let prefix = RangeRequest::prefix(b"key/012");
    let mut group = c.benchmark_group("mvcc");
    group.throughput(Throughput::Elements(1));
    group.bench_function("range_one_key", |b| {
        b.iter(|| black_box(sm.range(black_box(&one)).expect("range")));
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("range_prefix_100_keys", |b| {
        b.iter(|| black_box(sm.range(black_box(&prefix)).expect("range")));
    });
    group.finish();
}

fn snapshots(c: &mut Criterion) {
    let sm = populated();
    let bytes = sm.snapshot();
    let mut group = c.benchmark_group("mvcc");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("snapshot_10k_keys", |b| {
        b.iter(|| black_box(sm.snapshot()));
    });
    group.bench_function("restore_10k_keys", |b| {
        b.iter(|| black_box(StateMachine::restore(black_box(&bytes)).expect("restore")));
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = apply_puts, reads, snapshots
}
criterion_main!(benches);
