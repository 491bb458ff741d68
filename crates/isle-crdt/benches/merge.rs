//! Micro-benchmarks of CRDT merges: two large add-wins OR-sets that share half their elements,
//! and PN-counters with many actors.
//!
//! Run with `cargo bench -p isle-crdt --bench merge`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use isle_crdt::{Crdt, NodeId, OrSet, PnCounter};

/// Elements in each OR-set replica.
const SET_ELEMENTS: usize = 10_000;
/// Actors of each PN-counter.
const ACTORS: u64 = 1_000;

fn element(i: usize) -> Vec<u8> {
    format!("member:{i:06}").into_bytes()
}

/// Two replicas of `SET_ELEMENTS` elements each, half of them shared: a common history of
/// `SET_ELEMENTS / 2` adds (node 1) that each replica then extends with its own adds (nodes 2
/// and 3), so the shared half carries the same dots and the other halves arrive as new.
fn or_sets() -> (OrSet<Vec<u8>>, OrSet<Vec<u8>>) {
    let half = SET_ELEMENTS / 2;
    let mut common = OrSet::new();
    for i in 0..half {
        common.add(NodeId(1), element(i));
    }
    let mut a = common.clone();
    let mut b = common;
    for i in half..SET_ELEMENTS {
        a.add(NodeId(2), element(i));
        b.add(NodeId(3), element(i + half));
    }
    (a, b)
}

/// Two counters over `ACTORS` actors: each replica has seen every actor, with different totals
/// (so about half the entries move on a merge).
fn pn_counters() -> (PnCounter, PnCounter) {
    let mut a = PnCounter::new();
    let mut b = PnCounter::new();
    for actor in 1..=ACTORS {
        a.increment(NodeId(actor), actor * 3);
        b.increment(NodeId(actor), actor * 3 + (actor % 2));
        a.decrement(NodeId(actor), actor);
        b.decrement(NodeId(actor), actor + ((actor + 1) % 2));
    }
    (a, b)
}

fn merge_or_sets(c: &mut Criterion) {
    let (a, b) = or_sets();
    let mut group = c.benchmark_group("crdt");
    group.throughput(Throughput::Elements(SET_ELEMENTS as u64));
    group.bench_function("or_set_merge_10k_each_half_shared", |bench| {
        bench.iter_batched(
            || a.clone(),
            |mut merged| {
                merged.merge(black_box(&b));
                merged
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("or_set_merge_10k_idempotent", |bench| {
        bench.iter_batched(
            || a.clone(),
            |mut merged| {
                merged.merge(black_box(&a));
                merged
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn merge_pn_counters(c: &mut Criterion) {
    let (a, b) = pn_counters();
    let mut group = c.benchmark_group("crdt");
    group.throughput(Throughput::Elements(ACTORS));
    group.bench_function("pn_counter_merge_1000_actors", |bench| {
        bench.iter_batched(
            || a.clone(),
            |mut merged| {
                merged.merge(black_box(&b));
                merged
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("pn_counter_value_1000_actors", |bench| {
        bench.iter(|| black_box(black_box(&a).value()));
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
    targets = merge_or_sets, merge_pn_counters
}
criterion_main!(benches);
