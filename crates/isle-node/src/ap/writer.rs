//! The AP keyspace's single writer: every change to a replica's objects, hints and Merkle
//! leaves goes through one task, which commits all waiting changes in one transaction (group
//! commit) and answers them once the store says they are durable — on disk when the AP log's
//! flusher has fsynced them, while this task already commits the next batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use isle_ap::merkle::{DEFAULT_FANOUT_BITS, DEFAULT_LEAF_BITS, Shape, Tree, entry_hash};
use isle_ap::{ApError, BucketInfo, Hlc, Object, Op, Rule};
use isle_env::Clock;
use isle_storage::{ApStore, ApStoreError, ApWrite, StoredHint};
use isle_types::NodeId;
use tokio::sync::{mpsc, oneshot};
use tracing::error;

use super::metrics::ApMetrics;

/// Most changes committed in one transaction.
const BATCH_MAX: usize = 512;

/// Where a change lands: the replica's own copy, or a hint held for another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The replica's copy (indexed by the Merkle trees).
    Data,
    /// A hint held for this owner.
    Hint(NodeId),
}

/// One change for the writer.
pub(crate) enum Job {
    /// Apply a client operation (this node coordinates it). The new state goes to `prepared`
    /// as soon as it is computed, *before* it is durable, so the coordinator can send it to
    /// the other replicas while this one fsyncs; `durable` answers after the commit. That is
    /// safe only because `actor` is never reused across incarnations (see `Ap::actor`) and a
    /// failed commit stops this writer from minting again (`Writer::poisoned`).
    Apply {
        key: Vec<u8>,
        hash: u64,
        op: Op,
        rule: Rule,
        actor: NodeId,
        target: Target,
        prepared: oneshot::Sender<Result<(Object, bool), ApError>>,
        durable: oneshot::Sender<Result<(), ApError>>,
    },
    /// Merge another replica's state.
    Merge {
        key: Vec<u8>,
        hash: u64,
        object: Object,
        target: Target,
        reply: oneshot::Sender<Result<(), ApError>>,
    },
    /// Drop a tombstone every replica holds, unless it changed (digest differs).
    Reap {
        key: Vec<u8>,
        hash: u64,
        digest: u128,
        reply: oneshot::Sender<Result<bool, ApError>>,
    },
    /// Drop a delivered hint, unless it changed since it was read (digest differs).
    RemoveHint {
        owner: NodeId,
        key: Vec<u8>,
        digest: u128,
        reply: oneshot::Sender<Result<bool, ApError>>,
    },
}

/// Hints held per owner, kept in memory so the delivery loop need not scan the table.
#[derive(Debug, Default)]
pub(crate) struct HintIndex {
    /// owner → (count, oldest created unix ms since the backlog began).
    pub(crate) owners: BTreeMap<NodeId, (u64, u64)>,
}

impl HintIndex {
    pub(crate) fn total(&self) -> u64 {
        self.owners.values().map(|(count, _)| count).sum()
    }
}

/// Shared handle on the hint index.
pub(crate) type Hints = Arc<Mutex<HintIndex>>;

pub(crate) fn lock(hints: &Hints) -> MutexGuard<'_, HintIndex> {
    hints.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Identifies one Merkle tree: the replica count N of the buckets it covers (keys of buckets
/// with different N live on different replica sets, so they cannot share a tree) and the
/// partition: `N << 16 | partition`. It is also the key under which leaves are persisted.
pub(crate) fn tree_id(n: u32, partition: u32) -> u32 {
    (n << 16) | (partition & 0xffff)
}

/// One Merkle tree per partition of the ring, for each replica count in use.
pub(crate) struct Trees {
    shape: Shape,
    /// N of each bucket.
    bucket_n: BTreeMap<String, u32>,
    /// N → one tree per partition.
    classes: BTreeMap<u32, Vec<Tree>>,
}

impl Trees {
    /// Empty trees for `2^partition_bits` partitions per replica count of `buckets`.
    pub(crate) fn new(partition_bits: u32, buckets: &[BucketInfo]) -> Self {
        let shape = Shape::new(partition_bits, DEFAULT_LEAF_BITS, DEFAULT_FANOUT_BITS);
        let bucket_n: BTreeMap<String, u32> =
            buckets.iter().map(|b| (b.name.clone(), b.n)).collect();
        let classes = bucket_n
            .values()
            .map(|&n| {
                let trees = (0..(1u32 << shape.partition_bits()))
                    .map(|partition| Tree::new(partition, shape))
                    .collect();
                (n, trees)
            })
            .collect();
        Trees {
            shape,
            bucket_n,
            classes,
        }
    }

    /// The replica count of the bucket a storage key belongs to.
    pub(crate) fn n_of_key(&self, key: &[u8]) -> Option<u32> {
        let (_, bucket, _) = isle_ap::merkle::parse_storage_key(key)?;
        self.bucket_n.get(&bucket).copied()
    }

    /// The replica counts in use.
    pub(crate) fn classes(&self) -> Vec<u32> {
        self.classes.keys().copied().collect()
    }

    /// The (tree id, leaf) of a stored key, if its bucket is known.
    pub(crate) fn slot(&self, key: &[u8], hash: u64) -> Option<(u32, u32)> {
        let n = self.n_of_key(key)?;
        Some((
            tree_id(n, self.shape.partition_of(hash)),
            self.shape.leaf_of(hash),
        ))
    }

    /// A leaf's hash.
    pub(crate) fn leaf(&self, id: u32, leaf: u32) -> u128 {
        self.tree(id).map_or(0, |t| t.leaf(leaf))
    }

    /// Sets a leaf's hash and the path above it.
    pub(crate) fn set_leaf(&mut self, id: u32, leaf: u32, hash: u128) {
        if let Some(tree) = self
            .classes
            .get_mut(&(id >> 16))
            .and_then(|trees| trees.get_mut((id & 0xffff) as usize))
        {
            tree.set_leaf(leaf, hash);
        }
    }

    /// The trees' shape.
    pub(crate) fn shape(&self) -> Shape {
        self.shape
    }

    /// The tree with this id.
    pub(crate) fn tree(&self, id: u32) -> Option<&Tree> {
        self.classes
            .get(&(id >> 16))
            .and_then(|trees| trees.get((id & 0xffff) as usize))
    }
}

/// Shared handle on the Merkle trees (read by anti-entropy, written here after each commit).
pub(crate) type SharedTrees = Arc<Mutex<Trees>>;

pub(crate) fn trees(trees: &SharedTrees) -> MutexGuard<'_, Trees> {
    trees.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct Writer {
    pub(crate) store: ApStore,
    pub(crate) trees: SharedTrees,
    pub(crate) hlc: Hlc,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) hints: Hints,
    pub(crate) hints_max: u64,
    pub(crate) metrics: Arc<ApMetrics>,
    /// Set when a transaction failed after states computed in it were handed out: the dots
    /// they carry are not in this replica's durable copy, so minting again from that copy
    /// could reuse them. Writes coordinated here are refused until a restart, which brings a
    /// new actor id.
    pub(crate) poisoned: bool,
}

fn decode(bytes: &[u8]) -> Result<Object, ApError> {
    Object::decode(bytes).map_err(|e| ApError::Internal(format!("undecodable stored object: {e}")))
}

/// Changes made in one transaction, applied to memory only after it commits.
#[derive(Default)]
struct Pending {
    leaves: HashMap<(u32, u32), u128>,
    hints_added: Vec<(NodeId, u64)>,
    hints_removed: Vec<NodeId>,
}

enum Done {
    Merge(oneshot::Sender<Result<(), ApError>>, Result<(), ApError>),
    Remove(
        oneshot::Sender<Result<bool, ApError>>,
        Result<bool, ApError>,
    ),
}

impl Done {
    /// Sends the job's result, or the flush's error: nothing in a failed flush is vouched for.
    fn answer(self, flushed: &Result<(), ApStoreError>) {
        let flushed = flushed
            .clone()
            .map_err(|err| ApError::Internal(err.to_string()));
        match self {
            Done::Merge(reply, result) => {
                let _ = reply.send(flushed.and(result));
            }
            Done::Remove(reply, result) => {
                let _ = reply.send(flushed.and(result));
            }
        }
    }
}

impl Writer {
    /// Starts the writer: on its own OS thread under a multi-threaded runtime, so an fsync
    /// never stalls a runtime worker (with 2 cores, one blocked worker halves the node);
    /// as a task on a single-threaded runtime, so a simulation stays deterministic.
    pub(crate) fn start(self, jobs: mpsc::Receiver<Job>) {
        let handle = tokio::runtime::Handle::current();
        if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread {
            tokio::spawn(self.run(jobs));
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("isle-ap-writer".into())
            .spawn(move || {
                // The clock reads tokio's time, so the thread stays inside the runtime.
                let _runtime = handle.enter();
                self.run_blocking(jobs);
            });
        if let Err(err) = spawned {
            // No thread: nothing will answer the jobs, and callers see "AP writer stopped".
            error!(%err, "AP writer thread not started");
        }
    }

    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(BATCH_MAX);
        while jobs.recv_many(&mut batch, BATCH_MAX).await > 0 {
            self.commit(std::mem::take(&mut batch));
        }
    }

    fn run_blocking(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(BATCH_MAX);
        while let Some(job) = jobs.blocking_recv() {
            batch.push(job);
            while batch.len() < BATCH_MAX {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.commit(std::mem::take(&mut batch));
        }
    }

    fn commit(&mut self, batch: Vec<Job>) {
        self.metrics.write_batch(batch.len());
        let mut pending = Pending::default();
        let mut exposed = false;
        let outcome = {
            let store = self.store.clone();
            store.write(|w| {
                let mut done = Vec::with_capacity(batch.len());
                for job in batch {
                    done.push(self.process(w, job, &mut pending, &mut exposed)?);
                }
                Ok::<_, ApStoreError>(done)
            })
        };
        match outcome {
            Ok((done, durable)) => {
                {
                    let mut trees = trees(&self.trees);
                    for ((partition, leaf), hash) in pending.leaves {
                        trees.set_leaf(partition, leaf, hash);
                    }
                }
                {
                    let mut hints = lock(&self.hints);
                    for (owner, created) in pending.hints_added {
                        let entry = hints.owners.entry(owner).or_insert((0, created));
                        entry.0 += 1;
                        entry.1 = entry.1.min(created);
                    }
                    for owner in pending.hints_removed {
                        if let Some(entry) = hints.owners.get_mut(&owner) {
                            entry.0 = entry.0.saturating_sub(1);
                            if entry.0 == 0 {
                                hints.owners.remove(&owner);
                            }
                        }
                    }
                }
                // What this batch changed is visible (reads, the trees); it is answered only
                // once durable. A failed flush answers with the error: nothing in it can be
                // vouched for, and the store refuses later writes.
                durable.then(move |flushed| {
                    for done in done {
                        done.answer(&flushed);
                    }
                });
            }
            // The transaction rolled back: every job in it failed, and its replies were
            // dropped with it, which callers see as an internal error.
            Err(err) => {
                error!(%err, "AP write transaction failed; nothing in it was stored");
                if exposed {
                    self.poisoned = true;
                    error!(
                        "states computed in the failed transaction were sent to replicas: \
                         this node coordinates no more AP writes until it restarts"
                    );
                }
            }
        }
    }

    /// The copy at `target`, if any.
    fn read(
        &self,
        w: &ApWrite<'_>,
        key: &[u8],
        target: Target,
    ) -> Result<Option<Object>, ApStoreError> {
        let bytes = match target {
            Target::Data => w.object(key)?,
            Target::Hint(owner) => w.hint(owner.0, key)?.map(|hint| hint.object),
        };
        Ok(bytes.and_then(|b| decode(&b).ok()))
    }

    fn write(
        &mut self,
        w: &mut ApWrite<'_>,
        (key, hash, target): (&[u8], u64, Target),
        old: Option<&Object>,
        new: &Object,
        pending: &mut Pending,
    ) -> Result<Result<(), ApError>, ApStoreError> {
        let bytes = new.encode();
        match target {
            Target::Data => {
                let trees = trees(&self.trees);
                let Some((partition, leaf)) = trees.slot(key, hash) else {
                    return Ok(Err(ApError::BadRequest(
                        "a key of a bucket this node does not serve".into(),
                    )));
                };
                w.put_object(key, &bytes)?;
                if new.is_tombstone() {
                    w.mark_tombstone(key, self.clock.unix_ms())?;
                } else if old.is_some_and(Object::is_tombstone) {
                    w.clear_tombstone(key)?;
                }
                let current = pending
                    .leaves
                    .get(&(partition, leaf))
                    .copied()
                    .unwrap_or_else(|| trees.leaf(partition, leaf));
                let mut next = current ^ entry_hash(key, new.digest());
                if let Some(old) = old {
                    next ^= entry_hash(key, old.digest());
                }
                drop(trees);
                w.set_leaf(partition, leaf, next)?;
                pending.leaves.insert((partition, leaf), next);
            }
            Target::Hint(owner) => {
                let existing = w.hint(owner.0, key)?;
                let created = match &existing {
                    Some(hint) => hint.created_unix_ms,
                    None => {
                        let held = lock(&self.hints).total() + pending.hints_added.len() as u64;
                        if held >= self.hints_max {
                            return Ok(Err(ApError::Unavailable {
                                answered: 0,
                                asked: 1,
                                needed: 1,
                                level: "hint".into(),
                                detail: format!(
                                    "this fallback already holds {held} hints (limit {})",
                                    self.hints_max
                                ),
                            }));
                        }
                        let now = self.clock.unix_ms();
                        pending.hints_added.push((owner, now));
                        self.metrics.hints_stored.inc();
                        now
                    }
                };
                w.put_hint(&StoredHint {
                    owner: owner.0,
                    key: key.to_vec(),
                    created_unix_ms: created,
                    object: bytes,
                })?;
            }
        }
        Ok(Ok(()))
    }

    fn process(
        &mut self,
        w: &mut ApWrite<'_>,
        job: Job,
        pending: &mut Pending,
        exposed: &mut bool,
    ) -> Result<Done, ApStoreError> {
        Ok(match job {
            Job::Apply {
                key,
                hash,
                op,
                rule,
                actor,
                target,
                prepared,
                durable,
            } => {
                if self.poisoned {
                    let _ = prepared.send(Err(ApError::Internal(
                        "an AP storage transaction failed on this node; it coordinates no writes until restarted".into(),
                    )));
                    return Ok(Done::Merge(durable, Ok(())));
                }
                let old = self.read(w, &key, target)?;
                let mut object = old.clone().unwrap_or_else(|| Object::empty_for(&op, rule));
                let now = self.clock.unix_ms();
                if let Some(stamp) = object.stamp() {
                    self.hlc.observe(stamp, now);
                }
                let stamp = self.hlc.now(now);
                let result = match object.apply(&op, actor, stamp) {
                    Ok(applied) => {
                        if applied {
                            match self.write(
                                w,
                                (&key, hash, target),
                                old.as_ref(),
                                &object,
                                pending,
                            )? {
                                Ok(()) => Ok((object, true)),
                                Err(err) => Err(err),
                            }
                        } else {
                            Ok((object, false))
                        }
                    }
                    Err(err) => Err(ApError::Apply(err)),
                };
                *exposed |= result.is_ok();
                let _ = prepared.send(result);
                Done::Merge(durable, Ok(()))
            }
            Job::Merge {
                key,
                hash,
                object,
                target,
                reply,
            } => {
                let old = self.read(w, &key, target)?;
                let mut merged = old.clone().unwrap_or_else(|| object.clone());
                merged.merge(&object);
                if let Some(stamp) = merged.stamp() {
                    self.hlc.observe(stamp, self.clock.unix_ms());
                }
                let result = if old.as_ref() == Some(&merged) {
                    Ok(())
                } else {
                    self.write(w, (&key, hash, target), old.as_ref(), &merged, pending)?
                };
                Done::Merge(reply, result)
            }
            Job::Reap {
                key,
                hash,
                digest,
                reply,
            } => {
                let current = self.read(w, &key, Target::Data)?;
                let same = current.as_ref().is_some_and(|o| o.digest() == digest);
                let trees_now = trees(&self.trees);
                let slot = trees_now.slot(&key, hash);
                drop(trees_now);
                if let (true, Some((partition, leaf))) = (same, slot) {
                    w.remove_object(&key)?;
                    w.clear_tombstone(&key)?;
                    let trees = trees(&self.trees);
                    let held = pending
                        .leaves
                        .get(&(partition, leaf))
                        .copied()
                        .unwrap_or_else(|| trees.leaf(partition, leaf));
                    drop(trees);
                    let next = held ^ entry_hash(&key, digest);
                    w.set_leaf(partition, leaf, next)?;
                    pending.leaves.insert((partition, leaf), next);
                }
                Done::Remove(reply, Ok(same && slot.is_some()))
            }
            Job::RemoveHint {
                owner,
                key,
                digest,
                reply,
            } => {
                let current = w.hint(owner.0, &key)?;
                let unchanged = current
                    .as_ref()
                    .and_then(|hint| decode(&hint.object).ok())
                    .is_some_and(|object| object.digest() == digest);
                if unchanged {
                    w.remove_hint(owner.0, &key)?;
                    pending.hints_removed.push(owner);
                }
                Done::Remove(reply, Ok(unchanged))
            }
        })
    }
}
