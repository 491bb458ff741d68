//! The AP keyspace's tables: objects by storage key, hints for unreachable owners, and the leaf
//! hashes of the per-partition Merkle trees.
//!
//! Every value is framed `[crc32c of the rest: u32 LE][payload]`, so a torn or flipped byte is
//! reported as corruption instead of being merged into a replica. Writes go through
//! [`ApStore::write`]: one redb transaction, into which the caller batches as many operations
//! as are waiting (group commit).
//!
//! # Durability
//!
//! On disk a batch's changes are also appended, as one checksummed record, to the AP log
//! (`<data-dir>/ap-wal/`, the write-ahead log the Raft log uses too), and the redb transaction
//! commits *without* an fsync. The batch is durable once the log's flusher has fsynced it —
//! one `fdatasync` for every batch written meanwhile, ≈ 0.25 ms here, where a durable redb
//! commit costs ≈ 3 ms and holds redb's only write lock throughout. [`Durable::then`] runs the
//! caller's answer at that moment. Every [`CHECKPOINT_BYTES`] of log, a durable redb commit
//! records the last batch it holds (`ap_meta`/`wal_applied`) and the log is purged up to it. On
//! open, the batches logged after that point are applied again: each record holds the values
//! written, not the operations, so replaying it is idempotent and yields exactly the state of
//! the last batch the log vouches for. In memory (the simulator) there is no log: every batch
//! commits durably inline and [`Durable::then`] runs at once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::record::{self, RecordKey};
use crate::wal::{LogStats, SEGMENT_BYTES, Wal, WalKind};

const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ap_objects");
/// (owner node, storage key) → `[created unix ms: u64 LE][object]`.
const HINTS: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("ap_hints");
/// Storage key of a tombstone → unix ms when this replica first held it as a tombstone.
const TOMBSTONES: TableDefinition<&[u8], u64> = TableDefinition::new("ap_tombstones");
/// (partition, leaf) → 16-byte leaf hash.
const LEAVES: TableDefinition<(u32, u32), &[u8]> = TableDefinition::new("ap_leaves");
/// The AP log's checkpoint: [`WAL_APPLIED`] → the last batch this file holds durably.
const AP_META: TableDefinition<&str, u64> = TableDefinition::new("ap_meta");
const WAL_APPLIED: &str = "wal_applied";

/// Log bytes after which a checkpoint (one durable redb commit, then a purge) is taken: bounds
/// the replay at open to a fraction of a second of disk reads.
pub const CHECKPOINT_BYTES: u64 = 32 << 20;

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(OBJECTS)?;
    txn.open_table(HINTS)?;
    txn.open_table(LEAVES)?;
    txn.open_table(TOMBSTONES)?;
    txn.open_table(AP_META)?;
    Ok(())
}

/// Why an AP storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApStoreError {
    /// redb failed (disk full, I/O error, ...).
    #[error("AP storage: {0}")]
    Engine(String),
    /// A stored value failed its checksum.
    #[error(
        "AP storage: corrupt {table} entry (checksum mismatch); the replica will be repaired from its peers"
    )]
    Corrupt {
        /// The table.
        table: &'static str,
    },
}

impl From<ApStoreError> for std::io::Error {
    fn from(err: ApStoreError) -> Self {
        let kind = match err {
            ApStoreError::Corrupt { .. } => std::io::ErrorKind::InvalidData,
            ApStoreError::Engine(_) => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, err.to_string())
    }
}

fn engine(err: impl std::fmt::Display) -> ApStoreError {
    ApStoreError::Engine(err.to_string())
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(payload.len() + 4);
    framed.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    framed.extend_from_slice(payload);
    framed
}

fn unframe(table: &'static str, framed: &[u8]) -> Result<Vec<u8>, ApStoreError> {
    let corrupt = || ApStoreError::Corrupt { table };
    let (crc, payload) = framed.split_first_chunk::<4>().ok_or_else(corrupt)?;
    if u32::from_le_bytes(*crc) != crc32c::crc32c(payload) {
        return Err(corrupt());
    }
    Ok(payload.to_vec())
}

/// A stored object: (storage key, encoded object).
pub type KeyedObject = (Vec<u8>, Vec<u8>);
/// A Merkle leaf: ((partition, leaf), hash).
pub type StoredLeaf = ((u32, u32), u128);

/// A hint: a write held for an owner that was unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHint {
    /// The node the write is for.
    pub owner: u64,
    /// The object's storage key.
    pub key: Vec<u8>,
    /// When the hint was first stored (unix ms).
    pub created_unix_ms: u64,
    /// The encoded object.
    pub object: Vec<u8>,
}

fn hint_from(owner: u64, key: &[u8], framed: &[u8]) -> Result<StoredHint, ApStoreError> {
    let payload = unframe("ap_hints", framed)?;
    let (created, object) = payload
        .split_first_chunk::<8>()
        .ok_or(ApStoreError::Corrupt { table: "ap_hints" })?;
    Ok(StoredHint {
        owner,
        key: key.to_vec(),
        created_unix_ms: u64::from_le_bytes(*created),
        object: object.to_vec(),
    })
}

/// One change to the AP tables, as the AP log records it: the value written, never the
/// operation, so applying a record twice leaves what applying it once did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Change {
    PutObject {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        object: Vec<u8>,
    },
    RemoveObject {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    PutHint {
        owner: u64,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        created_unix_ms: u64,
        #[serde(with = "serde_bytes")]
        object: Vec<u8>,
    },
    RemoveHint {
        owner: u64,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    MarkTombstone {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        unix_ms: u64,
    },
    ClearTombstone {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    SetLeaf {
        partition: u32,
        leaf: u32,
        hash: u128,
    },
}

/// The AP log and where it stands; the lock also orders writers, so the log's order is the
/// order of the commits.
struct ApLog {
    wal: Wal,
    cursor: Mutex<Cursor>,
    /// [`CHECKPOINT_BYTES`] but in tests.
    checkpoint_bytes: u64,
}

struct Cursor {
    /// The index the next batch is logged under.
    next: u64,
    /// Log bytes since the last checkpoint.
    since_checkpoint: u64,
    /// Merkle leaves set since the last checkpoint, which writes them to the table.
    leaves: HashMap<(u32, u32), u128>,
    /// Set once the log and the tables may disagree (a commit failed after its record was
    /// logged, or a checkpoint failed): every later write is refused until a restart, whose
    /// replay puts them back in step.
    poisoned: Option<String>,
}

impl ApLog {
    fn lock(&self) -> MutexGuard<'_, Cursor> {
        self.cursor.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The AP tables of a node's database.
#[derive(Clone)]
pub struct ApStore {
    db: Arc<Database>,
    /// On disk, the log that makes batches durable; in memory none (batches commit durably).
    log: Option<Arc<ApLog>>,
    stats: Arc<LogStats>,
}

impl std::fmt::Debug for ApStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApStore").finish_non_exhaustive()
    }
}

/// When a write's changes survive a crash. Dropping it unused loses nothing but the moment.
#[must_use = "answer the writers from Durable::then"]
pub struct Durable(Option<Arc<ApLog>>);

impl Durable {
    /// Runs `job` once every batch written so far is durable (at once in memory), with the
    /// error if the log's fsync failed — then nothing in those batches may be vouched for.
    pub fn then(self, job: impl FnOnce(Result<(), ApStoreError>) + Send + 'static) {
        match self.0 {
            None => job(Ok(())),
            Some(log) => log.wal.on_flushed(Box::new(move |flushed| {
                job(flushed.map_err(|err| {
                    ApStoreError::Engine(format!("the AP log could not be made durable: {err}"))
                }))
            })),
        }
    }
}

/// One write transaction over the AP tables.
pub struct ApWrite<'t> {
    objects: redb::Table<'t, &'static [u8], &'static [u8]>,
    hints: redb::Table<'t, (u64, &'static [u8]), &'static [u8]>,
    leaves: redb::Table<'t, (u32, u32), &'static [u8]>,
    tombstones: redb::Table<'t, &'static [u8], u64>,
    /// The changes made, for the AP log (on disk only).
    changes: Option<Vec<Change>>,
}

fn open_tables(txn: &WriteTransaction, logged: bool) -> Result<ApWrite<'_>, ApStoreError> {
    Ok(ApWrite {
        objects: txn.open_table(OBJECTS).map_err(engine)?,
        hints: txn.open_table(HINTS).map_err(engine)?,
        leaves: txn.open_table(LEAVES).map_err(engine)?,
        tombstones: txn.open_table(TOMBSTONES).map_err(engine)?,
        changes: logged.then(Vec::new),
    })
}

impl ApWrite<'_> {
    fn logged(&mut self, change: impl FnOnce() -> Change) {
        if let Some(changes) = &mut self.changes {
            changes.push(change());
        }
    }

    /// Applies a change read back from the log.
    fn apply(&mut self, change: Change) -> Result<(), ApStoreError> {
        match change {
            Change::PutObject { key, object } => self.put_object(&key, &object),
            Change::RemoveObject { key } => self.remove_object(&key),
            Change::PutHint {
                owner,
                key,
                created_unix_ms,
                object,
            } => self.put_hint(&StoredHint {
                owner,
                key,
                created_unix_ms,
                object,
            }),
            Change::RemoveHint { owner, key } => self.remove_hint(owner, &key),
            Change::MarkTombstone { key, unix_ms } => self.mark_tombstone(&key, unix_ms),
            Change::ClearTombstone { key } => self.clear_tombstone(&key),
            Change::SetLeaf {
                partition,
                leaf,
                hash,
            } => self.set_leaf(partition, leaf, hash),
        }
    }

    /// The encoded object stored under `key`.
    pub fn object(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ApStoreError> {
        match self.objects.get(key).map_err(engine)? {
            Some(framed) => unframe("ap_objects", framed.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Stores `object` under `key`.
    pub fn put_object(&mut self, key: &[u8], object: &[u8]) -> Result<(), ApStoreError> {
        self.objects
            .insert(key, frame(object).as_slice())
            .map_err(engine)?;
        self.logged(|| Change::PutObject {
            key: key.to_vec(),
            object: object.to_vec(),
        });
        Ok(())
    }

    /// Removes `key` (tombstone garbage collection).
    pub fn remove_object(&mut self, key: &[u8]) -> Result<(), ApStoreError> {
        self.objects.remove(key).map_err(engine)?;
        self.logged(|| Change::RemoveObject { key: key.to_vec() });
        Ok(())
    }

    /// The hint for `owner` under `key`.
    pub fn hint(&self, owner: u64, key: &[u8]) -> Result<Option<StoredHint>, ApStoreError> {
        match self.hints.get((owner, key)).map_err(engine)? {
            Some(framed) => hint_from(owner, key, framed.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Stores (replaces) the hint for `owner` under `key`.
    pub fn put_hint(&mut self, hint: &StoredHint) -> Result<(), ApStoreError> {
        let mut payload = Vec::with_capacity(hint.object.len() + 8);
        payload.extend_from_slice(&hint.created_unix_ms.to_le_bytes());
        payload.extend_from_slice(&hint.object);
        self.hints
            .insert(
                (hint.owner, hint.key.as_slice()),
                frame(&payload).as_slice(),
            )
            .map_err(engine)?;
        self.logged(|| Change::PutHint {
            owner: hint.owner,
            key: hint.key.clone(),
            created_unix_ms: hint.created_unix_ms,
            object: hint.object.clone(),
        });
        Ok(())
    }

    /// Drops the hint for `owner` under `key`.
    pub fn remove_hint(&mut self, owner: u64, key: &[u8]) -> Result<(), ApStoreError> {
        self.hints.remove((owner, key)).map_err(engine)?;
        self.logged(|| Change::RemoveHint {
            owner,
            key: key.to_vec(),
        });
        Ok(())
    }

    /// Records that `key` holds a tombstone since `unix_ms`, unless already recorded.
    pub fn mark_tombstone(&mut self, key: &[u8], unix_ms: u64) -> Result<(), ApStoreError> {
        if self.tombstones.get(key).map_err(engine)?.is_none() {
            self.tombstones.insert(key, unix_ms).map_err(engine)?;
            self.logged(|| Change::MarkTombstone {
                key: key.to_vec(),
                unix_ms,
            });
        }
        Ok(())
    }

    /// Forgets that `key` holds a tombstone (it was written again, or reaped).
    pub fn clear_tombstone(&mut self, key: &[u8]) -> Result<(), ApStoreError> {
        self.tombstones.remove(key).map_err(engine)?;
        self.logged(|| Change::ClearTombstone { key: key.to_vec() });
        Ok(())
    }

    /// Stores a Merkle leaf hash.
    /// With a log the leaf reaches the table at the next checkpoint (the log holds it until
    /// then, and the node keeps its trees in memory): a B-tree insert per write saved.
    pub fn set_leaf(&mut self, partition: u32, leaf: u32, hash: u128) -> Result<(), ApStoreError> {
        match &mut self.changes {
            Some(changes) => changes.push(Change::SetLeaf {
                partition,
                leaf,
                hash,
            }),
            None => store_leaf(&mut self.leaves, (partition, leaf), hash)?,
        }
        Ok(())
    }
}

fn store_leaf(
    table: &mut redb::Table<'_, (u32, u32), &'static [u8]>,
    at: (u32, u32),
    hash: u128,
) -> Result<(), ApStoreError> {
    if hash == 0 {
        table.remove(at).map_err(engine)?;
    } else {
        table
            .insert(at, hash.to_le_bytes().as_slice())
            .map_err(engine)?;
    }
    Ok(())
}

impl ApStore {
    /// The AP tables of `db` without a log: every batch commits durably inline (in memory).
    pub(crate) fn inline(db: Arc<Database>) -> ApStore {
        ApStore {
            db,
            log: None,
            stats: Arc::default(),
        }
    }

    /// The AP tables of `db` made durable by the log in `dir`; batches the log holds beyond the
    /// tables' checkpoint are applied first (see the module docs).
    pub(crate) fn open(db: Arc<Database>, dir: &Path) -> std::io::Result<ApStore> {
        Self::open_with(db, dir, CHECKPOINT_BYTES)
    }

    fn open_with(db: Arc<Database>, dir: &Path, checkpoint_bytes: u64) -> std::io::Result<ApStore> {
        let stats = Arc::new(LogStats::default());
        let wal = Wal::open_with(WalKind::AP, dir, SEGMENT_BYTES, Arc::clone(&stats))?;
        let applied = {
            let txn = db.begin_read().map_err(engine)?;
            let meta = txn.open_table(AP_META).map_err(engine)?;
            meta.get(WAL_APPLIED)
                .map_err(engine)?
                .map_or(0, |v| v.value())
        };
        let mut next = applied + 1;
        if let Some((first, last)) = wal.bounds() {
            if first > next {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "the AP log in {} starts at batch {first} but the store holds only up to \
                         batch {applied}: batches {next}..{first} are missing; the node cannot \
                         trust its AP data (restore this node from a peer)",
                        dir.display()
                    ),
                ));
            }
            if last >= next {
                replay(&db, &wal, next, last)?;
                tracing::info!(
                    batches = last - next + 1,
                    "AP log: applied the batches logged after the last checkpoint"
                );
                LogStats::add(&stats.fsyncs, 1);
            }
            next = next.max(last + 1);
            wal.purge_through(last)?;
        }
        Ok(ApStore {
            db,
            log: Some(Arc::new(ApLog {
                wal,
                cursor: Mutex::new(Cursor {
                    next,
                    since_checkpoint: 0,
                    leaves: HashMap::new(),
                    poisoned: None,
                }),
                checkpoint_bytes,
            })),
            stats,
        })
    }

    /// The store's disk counters: fsyncs (log flushes, checkpoints; durable commits in
    /// memory), batches and changes logged.
    pub fn stats(&self) -> &Arc<LogStats> {
        &self.stats
    }

    /// Runs `f` in one write transaction and commits it; its changes are visible to reads when
    /// this returns, and durable once [`Durable::then`] says so. If `f` fails nothing is
    /// written.
    pub fn write<R, E: From<ApStoreError>>(
        &self,
        f: impl FnOnce(&mut ApWrite<'_>) -> Result<R, E>,
    ) -> Result<(R, Durable), E> {
        let Some(log) = &self.log else {
            let mut txn = self.db.begin_write().map_err(engine)?;
            txn.set_durability(redb::Durability::Immediate)
                .map_err(engine)?;
            let result = f(&mut open_tables(&txn, false)?)?;
            txn.commit().map_err(engine)?;
            LogStats::add(&self.stats.fsyncs, 1);
            return Ok((result, Durable(None)));
        };
        let mut cursor = log.lock();
        if let Some(why) = &cursor.poisoned {
            return Err(ApStoreError::Engine(format!(
                "AP writes are refused after an earlier failure ({why}); restart the node"
            ))
            .into());
        }
        let mut txn = self.db.begin_write().map_err(engine)?;
        txn.set_durability(redb::Durability::None).map_err(engine)?;
        let (result, changes) = {
            let mut tables = open_tables(&txn, true)?;
            let result = f(&mut tables)?;
            (result, tables.changes.take().unwrap_or_default())
        };
        for change in &changes {
            if let Change::SetLeaf {
                partition,
                leaf,
                hash,
            } = change
            {
                cursor.leaves.insert((*partition, *leaf), *hash);
            }
        }
        if !changes.is_empty() {
            // Logged before the commit: a failed append leaves nothing (the transaction is
            // dropped, so it aborts); a commit failing after it is put right by the replay.
            let index = cursor.next;
            let record = record::encode(WalKind::AP.table, RecordKey::Index(index), &changes)
                .map_err(engine)?;
            let bytes = record.len() as u64;
            log.wal.append(&[(index, record)]).map_err(engine)?;
            cursor.next += 1;
            cursor.since_checkpoint += bytes;
            LogStats::add(&self.stats.append_batches, 1);
            LogStats::add(&self.stats.entries_appended, changes.len() as u64);
        }
        if let Err(err) = txn.commit() {
            cursor.poisoned = Some(format!("a commit failed: {err}"));
            return Err(engine(err).into());
        }
        if cursor.since_checkpoint >= log.checkpoint_bytes
            && let Err(err) = self.checkpoint(log, &mut cursor)
        {
            // This batch is committed and logged; only later ones are refused.
            tracing::error!(%err, "AP log checkpoint failed; AP writes refused until a restart");
            cursor.poisoned = Some(format!("a checkpoint failed: {err}"));
        }
        Ok((result, Durable(Some(Arc::clone(log)))))
    }

    /// Makes the tables durable up to the last logged batch, then drops the log before it.
    fn checkpoint(&self, log: &ApLog, cursor: &mut Cursor) -> Result<(), ApStoreError> {
        let last = cursor.next - 1;
        let mut txn = self.db.begin_write().map_err(engine)?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(engine)?;
        txn.open_table(AP_META)
            .map_err(engine)?
            .insert(WAL_APPLIED, last)
            .map_err(engine)?;
        {
            let mut table = txn.open_table(LEAVES).map_err(engine)?;
            for (at, hash) in &cursor.leaves {
                store_leaf(&mut table, *at, *hash)?;
            }
        }
        txn.commit().map_err(engine)?;
        LogStats::add(&self.stats.fsyncs, 1);
        cursor.leaves.clear();
        log.wal.purge_through(last).map_err(engine)?;
        cursor.since_checkpoint = 0;
        Ok(())
    }

    /// The encoded object under `key`.
    pub fn object(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ApStoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(OBJECTS).map_err(engine)?;
        match table.get(key).map_err(engine)? {
            Some(framed) => unframe("ap_objects", framed.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Objects with `start <= key < end`, at most `limit`, in key order.
    pub fn objects_in(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyedObject>, ApStoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(OBJECTS).map_err(engine)?;
        let mut found = Vec::new();
        for entry in table.range(start..end).map_err(engine)?.take(limit) {
            let (key, framed) = entry.map_err(engine)?;
            found.push((key.value().to_vec(), unframe("ap_objects", framed.value())?));
        }
        Ok(found)
    }

    /// Up to `limit` tombstones held since before `before_unix_ms`: (storage key, since).
    pub fn tombstones_before(
        &self,
        before_unix_ms: u64,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, u64)>, ApStoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(TOMBSTONES).map_err(engine)?;
        let mut found = Vec::new();
        for entry in table.iter().map_err(engine)? {
            let (key, since) = entry.map_err(engine)?;
            if since.value() < before_unix_ms {
                found.push((key.value().to_vec(), since.value()));
                if found.len() == limit {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// Every stored Merkle leaf hash: ((partition, leaf), hash).
    pub fn leaves(&self) -> Result<Vec<StoredLeaf>, ApStoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(LEAVES).map_err(engine)?;
        let mut leaves = BTreeMap::new();
        for entry in table.iter().map_err(engine)? {
            let (key, hash) = entry.map_err(engine)?;
            let bytes: [u8; 16] = hash
                .value()
                .try_into()
                .map_err(|_| ApStoreError::Corrupt { table: "ap_leaves" })?;
            leaves.insert(key.value(), u128::from_le_bytes(bytes));
        }
        if let Some(log) = &self.log {
            for (at, hash) in &log.lock().leaves {
                leaves.insert(*at, *hash);
            }
        }
        Ok(leaves.into_iter().filter(|(_, hash)| *hash != 0).collect())
    }

    /// Up to `limit` hints for `owner`, in key order.
    pub fn hints_for(&self, owner: u64, limit: usize) -> Result<Vec<StoredHint>, ApStoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(HINTS).map_err(engine)?;
        let start: (u64, &[u8]) = (owner, &[]);
        let mut hints = Vec::new();
        for entry in table.range(start..).map_err(engine)? {
            let (key, framed) = entry.map_err(engine)?;
            let (held_for, storage_key) = key.value();
            if held_for != owner || hints.len() == limit {
                break;
            }
            hints.push(hint_from(owner, storage_key, framed.value())?);
        }
        Ok(hints)
    }

    /// The hint held for `owner` under `key`.
    pub fn hints_for_key(
        &self,
        owner: u64,
        key: &[u8],
    ) -> Result<Option<StoredHint>, ApStoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(HINTS).map_err(engine)?;
        match table.get((owner, key)).map_err(engine)? {
            Some(framed) => hint_from(owner, key, framed.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Every hint held: (owner, count, oldest created unix ms) per owner.
    pub fn hint_summary(&self) -> Result<Vec<(u64, u64, u64)>, ApStoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(HINTS).map_err(engine)?;
        let mut summary: Vec<(u64, u64, u64)> = Vec::new();
        for entry in table.iter().map_err(engine)? {
            let (key, framed) = entry.map_err(engine)?;
            let (owner, storage_key) = key.value();
            let hint = hint_from(owner, storage_key, framed.value())?;
            match summary.last_mut() {
                Some((o, count, oldest)) if *o == owner => {
                    *count += 1;
                    *oldest = (*oldest).min(hint.created_unix_ms);
                }
                _ => summary.push((owner, 1, hint.created_unix_ms)),
            }
        }
        Ok(summary)
    }
}

/// Applies the logged batches `from..=last` to the tables and records the checkpoint, in one
/// durable commit.
fn replay(db: &Database, wal: &Wal, from: u64, last: u64) -> std::io::Result<()> {
    let mut txn = db.begin_write().map_err(engine)?;
    txn.set_durability(redb::Durability::Immediate)
        .map_err(engine)?;
    {
        let mut tables = open_tables(&txn, false)?;
        let mut at = from;
        while at <= last {
            let records = wal.read(at, last + 1, 1024, 16 << 20)?;
            if records.is_empty() {
                break;
            }
            for (index, bytes) in records {
                let changes: Vec<Change> =
                    record::decode(WalKind::AP.table, RecordKey::Index(index), &bytes)?;
                for change in changes {
                    tables.apply(change)?;
                }
                at = index + 1;
            }
        }
        txn.open_table(AP_META)
            .map_err(engine)?
            .insert(WAL_APPLIED, last)
            .map_err(engine)?;
    }
    txn.commit().map_err(engine)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RedbStore;

    /// Writes `keys` as objects, one batch each, and waits until they are durable.
    fn write_durably(store: &ApStore, keys: std::ops::Range<u32>) {
        let (tx, rx) = std::sync::mpsc::channel();
        for k in keys.clone() {
            let (_, durable) = store
                .write(|w| {
                    w.put_object(format!("k{k:05}").as_bytes(), &[k as u8; 300])?;
                    w.set_leaf(0, k, u128::from(k) + 1)?;
                    Ok::<_, ApStoreError>(())
                })
                .unwrap();
            let tx = tx.clone();
            durable.then(move |result| tx.send(result).unwrap());
        }
        for _ in keys {
            rx.recv().unwrap().unwrap();
        }
    }

    /// A copy of a live data dir: what a power cut would leave (redb's file as of its last
    /// durable commit — later commits are not in its header — and the fsynced log).
    fn crash_copy(from: &Path, to: &Path) {
        for dir in ["", "ap-wal", "raft-wal"] {
            std::fs::create_dir_all(to.join(dir)).unwrap();
            for entry in std::fs::read_dir(from.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    std::fs::copy(&path, to.join(dir).join(path.file_name().unwrap())).unwrap();
                }
            }
        }
    }

    fn held(store: &ApStore) -> usize {
        store.objects_in(b"k", b"l", usize::MAX).unwrap().len()
    }

    #[test]
    fn durable_batches_are_replayed_from_the_log_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let live = RedbStore::open(&dir.path().join("live")).unwrap();
        write_durably(&live.ap_store(), 0..200);
        crash_copy(&dir.path().join("live"), &dir.path().join("crash"));
        // Without its log the file holds none of them: they are durable only through the log.
        crash_copy(&dir.path().join("live"), &dir.path().join("no-log"));
        std::fs::remove_dir_all(dir.path().join("no-log/ap-wal")).unwrap();
        assert_eq!(
            held(
                &RedbStore::open(&dir.path().join("no-log"))
                    .unwrap()
                    .ap_store()
            ),
            0
        );

        let store = RedbStore::open(&dir.path().join("crash"))
            .unwrap()
            .ap_store();
        assert_eq!(held(&store), 200);
        assert_eq!(store.leaves().unwrap().len(), 200);
        // The replay was checkpointed: opening again replays nothing and loses nothing, and
        // new batches follow on.
        write_durably(&store, 200..210);
        drop(store);
        let store = RedbStore::open(&dir.path().join("crash"))
            .unwrap()
            .ap_store();
        assert_eq!(held(&store), 210);
        assert_eq!(store.leaves().unwrap().len(), 210);
    }

    #[test]
    fn checkpoints_bound_the_log_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let live = RedbStore::open(dir.path()).unwrap();
        let store =
            ApStore::open_with(live.database(), &dir.path().join("ap-wal-small"), 8 << 10).unwrap();
        write_durably(&store, 0..300);
        let log = store.log.as_ref().unwrap();
        let (first, last) = log.wal.bounds().unwrap_or((u64::MAX, 0));
        assert!(first > 250 || last == 0, "log still holds {first}..={last}");
        let applied = {
            let txn = live.database().begin_read().unwrap();
            txn.open_table(AP_META)
                .unwrap()
                .get(WAL_APPLIED)
                .unwrap()
                .unwrap()
                .value()
        };
        assert!(applied >= 250, "checkpoint at {applied}");
        assert_eq!(held(&store), 300);
        // Leaves reach the table at checkpoints; the store reports the ones set since too.
        let in_table = {
            let txn = live.database().begin_read().unwrap();
            txn.open_table(LEAVES).unwrap().iter().unwrap().count() as u64
        };
        assert!(
            (250..300).contains(&in_table),
            "{in_table} leaves in the table"
        );
        assert_eq!(store.leaves().unwrap().len(), 300);
    }

    #[test]
    fn a_log_missing_batches_the_store_has_not_applied_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let live = RedbStore::open(&dir.path().join("live")).unwrap();
        write_durably(&live.ap_store(), 0..3);
        crash_copy(&dir.path().join("live"), &dir.path().join("crash"));
        // Renaming the segment makes the log start at batch 2: batch 1 is gone.
        let wal = dir.path().join("crash/ap-wal");
        let segment = std::fs::read_dir(&wal)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let bytes = std::fs::read(&segment).unwrap();
        let first_len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        std::fs::remove_file(&segment).unwrap();
        std::fs::write(wal.join(format!("{:020}.wal", 2)), &bytes[12 + first_len..]).unwrap();
        let err = RedbStore::open(&dir.path().join("crash"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("batches 1..2 are missing"), "{err}");
    }

    #[test]
    fn objects_hints_and_leaves_survive_reopen_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbStore::open(dir.path()).unwrap().ap_store();
            let (_, durable) = store
                .write(|w| {
                    w.put_object(b"k1", b"one")?;
                    w.put_object(b"k2", b"two")?;
                    w.put_hint(&StoredHint {
                        owner: 4,
                        key: b"k1".to_vec(),
                        created_unix_ms: 77,
                        object: b"one".to_vec(),
                    })?;
                    w.set_leaf(3, 9, 0xabcdef)?;
                    Ok::<_, ApStoreError>(())
                })
                .unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            durable.then(move |result| tx.send(result).unwrap());
            rx.recv().unwrap().unwrap();
        }
        let store = RedbStore::open(dir.path()).unwrap().ap_store();
        assert_eq!(store.object(b"k1").unwrap(), Some(b"one".to_vec()));
        assert_eq!(store.objects_in(b"k", b"l", 10).unwrap().len(), 2);
        assert_eq!(store.leaves().unwrap(), vec![((3, 9), 0xabcdef)]);
        let hints = store.hints_for(4, 10).unwrap();
        assert_eq!(hints.len(), 1);
        assert_eq!(hints[0].created_unix_ms, 77);
        assert!(store.hints_for(5, 10).unwrap().is_empty());
        assert_eq!(store.hint_summary().unwrap(), vec![(4, 1, 77)]);
        assert!(matches!(
            unframe("ap_objects", b"\0\0\0\0xyz"),
            Err(ApStoreError::Corrupt { .. })
        ));
    }
}
