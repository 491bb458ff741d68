//! Micro-benchmarks of active anti-entropy: a full Merkle exchange between two replicas of one
//! partition holding 100k keys that differ in 1%, the tree rebuild, and a one-key tree update.
//!
//! Run with `cargo bench -p isle-ap --bench merkle`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use isle_ap::PartitionId;
use isle_ap::aae::{AaeOutcome, Exchange, ExchangeConfig, LeafKeys, Step, respond};
use isle_ap::merkle::{Shape, Tree, storage_key_hash};

/// Keys of the partition on each replica.
const KEYS: u64 = 100_000;
/// The partition both trees cover.
const PARTITION: PartitionId = 0;

/// A replica's keys of one partition: storage key → object digest, ordered like the store.
struct Replica(BTreeMap<Vec<u8>, u128>);

impl LeafKeys for Replica {
    fn keys_in_leaf(&self, partition: PartitionId, leaf: u32) -> Vec<(Vec<u8>, u128)> {
        let (start, end) = Shape::DEFAULT.leaf_range(partition, leaf);
        let entries: Box<dyn Iterator<Item = (&Vec<u8>, &u128)>> = match end {
            Some(end) => Box::new(self.0.range(start..end)),
            None => Box::new(self.0.range(start..)),
        };
        entries.map(|(k, d)| (k.clone(), *d)).collect()
    }
}

impl Replica {
    fn tree(&self) -> Tree {
        Tree::from_entries(
            PARTITION,
            Shape::DEFAULT,
            self.0
                .iter()
                .map(|(k, &d)| (storage_key_hash(k).expect("storage key"), k.as_slice(), d)),
        )
    }
}

/// splitmix64: well-spread pseudo-random key hashes and digests without a dependency.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A storage key of partition 0 (the top `partition_bits` of its hash are zero).
fn storage_key(i: u64) -> Vec<u8> {
    let hash = mix(i) >> Shape::DEFAULT.partition_bits();
    let mut key = hash.to_be_bytes().to_vec();
    key.push(1);
    key.push(b'b');
    key.extend_from_slice(format!("key:{i:06}").as_bytes());
    key
}

fn digest(i: u64, version: u64) -> u128 {
    (u128::from(mix(i ^ version.rotate_left(32))) << 64) | u128::from(mix(!i))
}

/// A and B over `KEYS` keys; 1% differ: B holds a newer digest of 0.5% and lacks another 0.5%.
fn replicas() -> (Replica, Replica) {
    let mut a = BTreeMap::new();
    let mut b = BTreeMap::new();
    for i in 0..KEYS {
        let key = storage_key(i);
        a.insert(key.clone(), digest(i, 1));
        match i % 200 {
            0 => {
                b.insert(key, digest(i, 2));
            }
            100 => {}
            _ => {
                b.insert(key, digest(i, 1));
            }
        }
    }
    (Replica(a), Replica(b))
}

/// One whole exchange, A initiating, B answering in-process.
fn exchange(a: &Replica, tree_a: &Tree, b: &Replica, tree_b: &Tree) -> AaeOutcome {
    let (mut exchange, mut request) = Exchange::start(tree_a, ExchangeConfig::default());
    loop {
        let reply = respond(tree_b, b, &request);
        match exchange.handle_reply(tree_a, a, &reply).expect("exchange") {
            Step::Send(next) => request = next,
            Step::Done(outcome) => return outcome,
        }
    }
}

fn aae(c: &mut Criterion) {
    let (a, b) = replicas();
    let (tree_a, tree_b) = (a.tree(), b.tree());
    let outcome = exchange(&a, &tree_a, &b, &tree_b);
    assert_eq!(outcome.diffs.len(), (KEYS / 100) as usize);
    assert!(outcome.local_leaf_mismatches.is_empty());
    eprintln!(
        "merkle exchange, 100k keys, 1% differing: {} diffs, {} round trips, {} bytes",
        outcome.diffs.len(),
        outcome.stats.round_trips,
        outcome.stats.bytes()
    );

    let mut group = c.benchmark_group("merkle");
    group.sample_size(20);
    group.throughput(Throughput::Elements(KEYS));
    group.bench_function("exchange_100k_keys_1pct_differ", |bench| {
        bench.iter(|| black_box(exchange(&a, &tree_a, &b, &tree_b)));
    });
    group.bench_function("tree_from_entries_100k_keys", |bench| {
        bench.iter(|| black_box(a.tree()));
    });
    let leaves: Vec<(u32, u128)> = tree_a.nonzero_leaves().collect();
    group.throughput(Throughput::Elements(leaves.len() as u64));
    group.bench_function("tree_from_leaves_4096", |bench| {
        bench.iter(|| {
            black_box(Tree::from_leaves(
                PARTITION,
                Shape::DEFAULT,
                leaves.iter().copied(),
            ))
        });
    });
    group.finish();

    // Replicas in sync: one round trip, whatever the partition's size.
    let mut group = c.benchmark_group("merkle");
    group.bench_function("exchange_100k_keys_in_sync", |bench| {
        bench.iter(|| black_box(exchange(&a, &tree_a, &a, &tree_a)));
    });
    group.finish();

    let key = storage_key(7);
    let hash = storage_key_hash(&key).expect("storage key");
    let mut group = c.benchmark_group("merkle");
    group.throughput(Throughput::Elements(1));
    let mut tree = tree_a.clone();
    let (old, new) = (digest(7, 1), digest(7, 2));
    group.bench_function("tree_update_one_key", |bench| {
        // Each call XORs the same delta along the path: the tree toggles between two states.
        bench.iter(|| black_box(tree.update(hash, black_box(&key), Some(old), Some(new))));
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
    targets = aae
}
criterion_main!(benches);
