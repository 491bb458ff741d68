//! How many bytes anti-entropy spends to find and repair a small divergence (issue 4's
//! measurement): two replicas of 1,000,000 keys (100,000 in debug builds; `ISLE_AAE_KEYS`
//! overrides) with 100-byte `lww` values, 0.1% of the keys diverged (changed on one side, or
//! missing on one side). Every partition is exchanged, then the differing objects are streamed
//! both ways and merged. Prints the figures; asserts only correctness, never timings.
//!
//! Tuning knobs: `ISLE_AAE_LEAF_BITS`, `ISLE_AAE_FANOUT_BITS`, `ISLE_AAE_DIVERGED`. Run with
//! `cargo test --release -p isle-ap --test aae_efficiency -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Instant;

use isle_ap::aae::{
    AaeOutcome, AaeReply, AaeRequest, Exchange, ExchangeConfig, LeafKeys, Step, respond, wire_size,
};
use isle_ap::merkle::{Shape, Tree, storage_key, storage_key_hash};
use isle_ap::{Object, PartitionId};
use isle_crdt::{LwwRegister, Stamp};
use isle_types::NodeId;

const PARTITION_BITS: u32 = 8;
const VALUE_BYTES: usize = 100;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// splitmix64: a fixed, seeded stream (the test must replay exactly).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn object(mix: &mut Mix, ms: u64, node: u64) -> Rc<[u8]> {
    let mut register = LwwRegister::new();
    let stamp = Stamp {
        physical_ms: ms,
        logical: 0,
        node: NodeId(node),
    };
    register.set(stamp, Some(mix.bytes(VALUE_BYTES)));
    Object::Lww(register).encode().into()
}

struct Stored {
    encoded: Rc<[u8]>,
    digest: u128,
}

/// A replica holding every partition: objects by storage key, one tree per partition.
struct Replica {
    store: BTreeMap<Vec<u8>, Stored>,
    trees: Vec<Tree>,
}

impl Replica {
    fn new(shape: Shape) -> Self {
        Replica {
            store: BTreeMap::new(),
            trees: (0..1 << PARTITION_BITS)
                .map(|p| Tree::new(p, shape))
                .collect(),
        }
    }

    /// Stores an object as the node does: the object, and its tree's leaf, together.
    fn put(&mut self, key: Vec<u8>, encoded: Rc<[u8]>) {
        let hash = storage_key_hash(&key).expect("storage key");
        let digest = xxhash_rust::xxh3::xxh3_128(&encoded);
        let partition = self.trees[0].shape().partition_of(hash);
        let tree = &mut self.trees[partition as usize];
        let old = self.store.get(&key).map(|s| s.digest);
        tree.update(hash, &key, old, Some(digest))
            .expect("right partition");
        self.store.insert(key, Stored { encoded, digest });
    }

    /// Merges a copy received from the other replica.
    fn merge(&mut self, key: &[u8], theirs: &[u8]) {
        let theirs = Object::decode(theirs).expect("decodes");
        let merged = match self.store.get(key) {
            Some(ours) => {
                let mut ours = Object::decode(&ours.encoded).expect("decodes");
                ours.merge(&theirs);
                ours
            }
            None => theirs,
        };
        self.put(key.to_vec(), merged.encode().into());
    }
}

impl LeafKeys for Replica {
    fn keys_in_leaf(&self, partition: PartitionId, leaf: u32) -> Vec<(Vec<u8>, u128)> {
        let (start, end) = self.trees[0].shape().leaf_range(partition, leaf);
        let range = match end {
            Some(end) => self.store.range(start..end),
            None => self.store.range(start..),
        };
        range.map(|(k, s)| (k.clone(), s.digest)).collect()
    }
}

#[derive(Default)]
struct Totals {
    find_bytes: u64,
    key_list_bytes: u64,
    requests: u64,
    max_round_trips: u32,
}

fn exchange(a: &Replica, b: &Replica, partition: PartitionId, totals: &mut Totals) -> AaeOutcome {
    let tree = &a.trees[partition as usize];
    let (mut ex, mut request) = Exchange::start(tree, ExchangeConfig::default());
    loop {
        let reply = respond(&b.trees[partition as usize], b, &request);
        if matches!(reply, AaeReply::Keys(_)) {
            totals.key_list_bytes += wire_size(&reply);
        }
        if let AaeRequest::Keys { .. } = request {
            totals.key_list_bytes += wire_size(&request);
        }
        match ex.handle_reply(tree, a, &reply).expect("exchange") {
            Step::Send(next) => request = next,
            Step::Done(outcome) => {
                totals.find_bytes += outcome.stats.bytes();
                totals.requests += u64::from(outcome.stats.round_trips);
                totals.max_round_trips = totals.max_round_trips.max(outcome.stats.round_trips);
                return outcome;
            }
        }
    }
}

#[test]
fn anti_entropy_finds_and_repairs_a_small_divergence_cheaply() {
    let default_keys = if cfg!(debug_assertions) {
        100_000
    } else {
        1_000_000
    };
    let keys = env_or("ISLE_AAE_KEYS", default_keys);
    let diverged = env_or("ISLE_AAE_DIVERGED", keys / 1000).min(keys);
    let shape = Shape::new(
        PARTITION_BITS,
        env_or("ISLE_AAE_LEAF_BITS", u64::from(Shape::DEFAULT.leaf_bits())) as u32,
        env_or(
            "ISLE_AAE_FANOUT_BITS",
            u64::from(Shape::DEFAULT.fanout_bits()),
        ) as u32,
    );
    let started = Instant::now();

    // Which keys diverge, and how: 40% changed on one side (alternately), 30% missing on A,
    // 30% missing on B.
    let mut mix = Mix(42);
    let mut chosen = BTreeSet::new();
    while (chosen.len() as u64) < diverged {
        chosen.insert(mix.next() % keys);
    }
    let how: BTreeMap<u64, u64> = chosen.iter().zip(0..).map(|(&k, j)| (k, j % 10)).collect();

    let mut a = Replica::new(shape);
    let mut b = Replica::new(shape);
    let mut expected = BTreeSet::new();
    for i in 0..keys {
        let key = storage_key("bench", format!("user:{i:08}").as_bytes());
        let ms = 1_700_000_000_000 + i;
        let value = object(&mut mix, ms, 1 + i % 3);
        match how.get(&i).copied() {
            None => {
                a.put(key.clone(), value.clone());
                b.put(key, value);
                continue;
            }
            Some(0 | 2) => {
                a.put(key.clone(), object(&mut mix, ms + 1000, 2));
                b.put(key.clone(), value);
            }
            Some(1 | 3) => {
                a.put(key.clone(), value);
                b.put(key.clone(), object(&mut mix, ms + 1000, 2));
            }
            Some(4..=6) => b.put(key.clone(), value),
            Some(_) => a.put(key.clone(), value),
        }
        expected.insert(key);
    }
    let built = started.elapsed();

    // The size of what differs: storage key + encoded object of every differing copy.
    let differing_bytes: u64 = expected
        .iter()
        .flat_map(|k| [a.store.get(k), b.store.get(k)].map(|s| (k, s)))
        .filter_map(|(k, s)| s.map(|s| (k.len() + s.encoded.len()) as u64))
        .sum();

    // Find: one exchange per partition.
    let exchange_started = Instant::now();
    let mut totals = Totals::default();
    let outcomes: Vec<AaeOutcome> = (0..1 << PARTITION_BITS)
        .map(|p| exchange(&a, &b, p, &mut totals))
        .collect();
    let find_time = exchange_started.elapsed();
    let found: BTreeSet<Vec<u8>> = outcomes
        .iter()
        .flat_map(|o| o.diffs.iter().map(|d| d.storage_key.clone()))
        .collect();
    assert_eq!(found, expected, "every differing key found, and only those");
    assert!(outcomes.iter().all(|o| o.local_leaf_mismatches.is_empty()));

    // Repair: per partition, A pushes its copies in one message; A asks for B's copies and B
    // sends them. Then each side merges what it received.
    let repair_started = Instant::now();
    let (mut repair_bytes, mut repair_messages) = (0u64, 0u64);
    for outcome in &outcomes {
        let push: Vec<(Vec<u8>, Vec<u8>)> = outcome
            .push()
            .map(|k| (k.to_vec(), a.store[k].encoded.to_vec()))
            .collect();
        let pull: Vec<Vec<u8>> = outcome.pull().map(<[u8]>::to_vec).collect();
        let pulled: Vec<(Vec<u8>, Vec<u8>)> = pull
            .iter()
            .map(|k| (k.clone(), b.store[k].encoded.to_vec()))
            .collect();
        if !push.is_empty() {
            repair_bytes += wire_size(&push);
            repair_messages += 1;
        }
        if !pull.is_empty() {
            repair_bytes += wire_size(&pull) + wire_size(&pulled);
            repair_messages += 2;
        }
        for (key, object) in &push {
            b.merge(key, object);
        }
        for (key, object) in &pulled {
            a.merge(key, object);
        }
    }
    let repair_time = repair_started.elapsed();

    for (ta, tb) in a.trees.iter().zip(&b.trees) {
        assert_eq!(ta, tb, "trees equal after repair");
    }
    assert_eq!(a.store.len(), b.store.len());
    assert!(
        a.store
            .iter()
            .zip(&b.store)
            .all(|((ka, sa), (kb, sb))| ka == kb && sa.digest == sb.digest)
    );
    let mut after = Totals::default();
    for p in 0..1 << PARTITION_BITS {
        assert!(exchange(&a, &b, p, &mut after).diffs.is_empty());
    }
    assert_eq!(after.max_round_trips, 1);

    let total = totals.find_bytes + repair_bytes;
    let per_partition = keys as f64 / f64::from(1u32 << PARTITION_BITS);
    println!("anti-entropy, {keys} keys × 2 replicas, {VALUE_BYTES}-byte lww values");
    println!(
        "  shape: {shape}; {per_partition:.0} keys per partition, {:.2} per leaf",
        per_partition / f64::from(shape.leaves())
    );
    println!(
        "  diverged: {} keys (40% changed on one side, 30% missing on A, 30% on B); \
         their copies: {differing_bytes} bytes",
        expected.len()
    );
    println!(
        "  find:    {} bytes ({} of them key lists), {} round trips in {} exchanges \
         (at most {} per exchange), {find_time:.2?}",
        totals.find_bytes,
        totals.key_list_bytes,
        totals.requests,
        outcomes.len(),
        totals.max_round_trips
    );
    println!("  repair:  {repair_bytes} bytes in {repair_messages} messages, {repair_time:.2?}");
    println!(
        "  total:   {total} bytes = {:.2} × the differing copies ({:.0} bytes per differing \
         key); replicas in sync cost {} bytes to check",
        total as f64 / differing_bytes as f64,
        total as f64 / expected.len() as f64,
        after.find_bytes
    );
    println!(
        "  time:    build {built:.2?}, exchange {find_time:.2?}, repair {repair_time:.2?}, \
         all {:.2?}",
        started.elapsed()
    );
}
