//! [`RedbLogStore`]: openraft's durable log, vote and committed-id store, on redb.
//!
//! # Where things live
//!
//! - The entries: on a node's disk, in the write-ahead log of [`wal`] (segment files under
//!   `<data-dir>/raft-wal/`); in a simulator's in-memory store, in the redb table `raft_log`
//!   (`u64` log index → one framed entry).
//! - `raft_meta` in the node's redb file — `&str` → one framed record: `vote`, `committed`,
//!   `last_purged`.
//!
//! Every entry and record is framed by [`record`]: a crc32c over table, key, format version and a
//! postcard payload (the WAL stores the very same records). A record that fails its checks is an
//! [`io::Error`] of kind [`io::ErrorKind::InvalidData`] carrying a [`CorruptRecord`] that names
//! the table and the index or key — never a panic, never a wrong value handed to Raft.
//!
//! # Durability and group commit
//!
//! - **On disk** ([`RedbStore::open`](crate::RedbStore::open)): `append` writes its batch of
//!   entries to the WAL with one `write` and returns once they are readable; its [`IOFlushed`]
//!   callback goes to the WAL's flusher thread ([`flush`]), which fsyncs once for every batch
//!   written while the previous fsync ran and then reports them all flushed. openraft publishes
//!   entries to the followers as soon as `append` returns (`broadcast_submitted_on_append`) and
//!   counts the leader's own flush like a follower's ack, so the leader's fsync overlaps
//!   replication, and an append never waits for an fsync in progress.
//! - **In memory** (the simulator): every append is one redb transaction committed with
//!   [`Durability::Immediate`], its callback fired before `append` returns. No thread, so
//!   simulated runs stay deterministic.
//!
//! The vote and the purge point are committed with immediate durability (rare; a vote must be
//! durable before it is answered); a truncation is fsynced before it returns. The committed log
//! id is written without an fsync: openraft treats it as a hint (it lets a restarted node
//! re-apply sooner) and it is persisted by the database's next durable commit.
//! openraft batches too: it merges the client writes queued while the previous IO ran into one
//! `append` of up to `Config::max_append_entries` entries. [`LogStats`] counts fsyncs, batches and
//! entries (`/metrics` shows them per node).
//!
//! An earlier version kept the entries in the redb table on disk too; [`RedbLogStore::open_wal`]
//! moves such a log into the WAL the first time a node opens it.
//!
//! # Blocking
//!
//! redb and the WAL's writes are synchronous and short (no fsync waits on the append path), so
//! each call runs inline on the calling task: openraft awaits every log IO before its next step
//! anyway. Truncation, rare, also waits for the flusher.
//!
//! # Concurrency
//!
//! The log reader ([`RaftLogStorage::get_log_reader`]) is a clone of the store: the same
//! `Arc<Database>`. redb readers never block on, and are never blocked by, the writer; each read
//! runs in one read transaction, so it sees one committed state (a multi-entry read is atomic).
//!
//! # Checks
//!
//! Before a write: `append` refuses entries that would leave a hole or overwrite the log (they
//! must start right after the last entry, or after the purge point when the log is empty, and be
//! consecutive). After a read: each entry's own index must equal its key, a multi-entry read must
//! have no holes, and no entry may sit at or below the purge point.

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::OptionalSend;
use openraft::RaftTypeConfig;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::LogState;
use openraft::storage::RaftLogReader;
use openraft::storage::RaftLogStorage;
use openraft::type_config::alias::LogIdOf;
use openraft::type_config::alias::VoteOf;
use redb::Database;
use redb::Durability;
use redb::ReadableDatabase;
use redb::ReadableTable;
use redb::TableDefinition;
use redb::WriteTransaction;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::record::CorruptRecord;
pub use crate::record::RecordKey;
use crate::record::corrupt;
use crate::record::decode;
use crate::record::encode;
pub use crate::wal::LogStats;
use crate::wal::{Wal, WalKind};

pub(crate) const LOG_TABLE_NAME: &str = "raft_log";
const META_TABLE_NAME: &str = "raft_meta";
/// Log entries by index.
const LOG_TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new(LOG_TABLE_NAME);
/// The vote, the committed log id and the last purged log id.
const META_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(META_TABLE_NAME);

const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const LAST_PURGED_KEY: &str = "last_purged";

/// Most entries one `limited_get_log_entries` call returns (replication reads in such slices).
pub const LIMITED_READ_ENTRIES_MAX: usize = 4096;
/// Most stored bytes one `limited_get_log_entries` call reads before it stops (at least one
/// entry is always returned when the range holds one).
pub const LIMITED_READ_BYTES_MAX: usize = 4 * 1024 * 1024;

/// A bound on one read of log entries.
#[derive(Clone, Copy)]
struct ReadBudget {
    entries_max: usize,
    bytes_max: usize,
}

impl ReadBudget {
    /// `try_get_log_entries` must return the whole range.
    const UNLIMITED: ReadBudget = ReadBudget {
        entries_max: usize::MAX,
        bytes_max: usize::MAX,
    };
    const LIMITED: ReadBudget = ReadBudget {
        entries_max: LIMITED_READ_ENTRIES_MAX,
        bytes_max: LIMITED_READ_BYTES_MAX,
    };
}

/// openraft's log storage on a shared redb database: the Raft log, the vote and the committed
/// log id, generic over the Raft type config `C`.
///
/// Cheap to clone (an `Arc`); a clone is the log reader. Open it with [`RedbLogStore::open`] on
/// any `Arc<Database>`, or from a node's store with
/// [`RedbStore::raft_log_store`](crate::RedbStore::raft_log_store).
pub struct RedbLogStore<C: RaftTypeConfig> {
    db: Arc<Database>,
    /// The entries' write-ahead log on disk; `None`: entries in the redb table, every append
    /// committed inline (in memory, for simulation).
    wal: Option<Arc<Wal>>,
    stats: Arc<LogStats>,
    config: PhantomData<fn() -> C>,
}

impl<C: RaftTypeConfig> Clone for RedbLogStore<C> {
    fn clone(&self) -> Self {
        RedbLogStore {
            db: Arc::clone(&self.db),
            wal: self.wal.clone(),
            stats: Arc::clone(&self.stats),
            config: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> fmt::Debug for RedbLogStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbLogStore").finish_non_exhaustive()
    }
}

impl<C: RaftTypeConfig> RedbLogStore<C> {
    /// Opens the Raft log kept in `db`, creating its tables if they are missing; every append
    /// is fsynced before it returns (inline mode).
    pub fn open(db: Arc<Database>) -> io::Result<Self> {
        let txn = begin_write(&db, Durability::Immediate)?;
        create_tables(&txn).map_err(engine("create the raft tables"))?;
        txn.commit().map_err(engine("commit the raft tables"))?;
        Ok(Self::on_initialized(db, None, Arc::default()))
    }

    /// Opens the Raft log whose entries are in the write-ahead log in `wal_dir` (group commit,
    /// see the module docs), its metadata in `db`. Entries an earlier version kept in `db`'s
    /// table are moved into an empty WAL first.
    pub fn open_wal(db: Arc<Database>, wal_dir: &std::path::Path) -> io::Result<Self> {
        Self::open_wal_with(db, wal_dir, crate::wal::SEGMENT_BYTES)
    }

    /// [`RedbLogStore::open_wal`] with WAL segments closed at `segment_bytes`.
    pub(crate) fn open_wal_with(
        db: Arc<Database>,
        wal_dir: &std::path::Path,
        segment_bytes: u64,
    ) -> io::Result<Self> {
        let store = Self::open(db)?;
        let wal = Arc::new(Wal::open_with(
            WalKind::RAFT,
            wal_dir,
            segment_bytes,
            Arc::clone(&store.stats),
        )?);
        store.migrate_table_into(&wal)?;
        Ok(Self::on_initialized(store.db, Some(wal), store.stats))
    }

    /// Moves the entries of the redb table into `wal` if it is empty, then clears the table.
    fn migrate_table_into(&self, wal: &Wal) -> io::Result<()> {
        if wal.bounds().is_some() {
            return Ok(());
        }
        let records: Vec<(u64, Vec<u8>)> = {
            let txn = self.db.begin_read().map_err(engine("begin a read"))?;
            let table = txn.open_table(LOG_TABLE).map_err(engine("open raft_log"))?;
            let mut records = Vec::new();
            for item in table.iter().map_err(engine("read raft_log"))? {
                let (key, value) = item.map_err(engine("read raft_log"))?;
                records.push((key.value(), value.value().to_vec()));
            }
            records
        };
        if records.is_empty() {
            return Ok(());
        }
        for chunk in records.chunks(LIMITED_READ_ENTRIES_MAX) {
            wal.append(chunk)?;
        }
        wal.sync_now()?;
        let txn = begin_write(&self.db, Durability::Immediate)?;
        {
            let mut log = txn.open_table(LOG_TABLE).map_err(engine("open raft_log"))?;
            log.retain_in(0.., |_, _| false)
                .map_err(engine("clear raft_log"))?;
        }
        self.commit(txn, Durability::Immediate, "commit the move into the WAL")
    }

    /// A store on a database whose raft tables already exist (see [`create_tables`]).
    pub(crate) fn on_initialized(
        db: Arc<Database>,
        wal: Option<Arc<Wal>>,
        stats: Arc<LogStats>,
    ) -> Self {
        RedbLogStore {
            db,
            wal,
            stats,
            config: PhantomData,
        }
    }

    /// Counters of fsyncs, batches and entries since the store was opened.
    pub fn stats(&self) -> &Arc<LogStats> {
        &self.stats
    }

    /// The write-ahead log holding the entries, on disk.
    pub(crate) fn wal(&self) -> Option<&Arc<Wal>> {
        self.wal.as_ref()
    }

    /// The database this log lives in, shared with the node's other tables.
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }
}

/// Creates the raft tables inside `txn` (a no-op for tables that exist).
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(LOG_TABLE)?;
    txn.open_table(META_TABLE)?;
    Ok(())
}

/// Maps a redb error to an `io::Error`, keeping the kind of an underlying IO error and marking
/// redb's own corruption reports as `InvalidData`.
fn engine<E: Into<redb::Error>>(doing: &'static str) -> impl FnOnce(E) -> io::Error {
    move |err| {
        let err: redb::Error = err.into();
        let kind = match &err {
            redb::Error::Io(io) => io.kind(),
            redb::Error::Corrupted(_) => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, format!("redb: cannot {doing}: {err}"))
    }
}

/// The error for an append that would leave a hole in the log or overwrite it.
fn refused_append(index: u64, next: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "append of index {index} refused: the log expects index {next} next \
             (a hole or an overwrite; truncate first)"
        ),
    )
}

/// A write transaction with the given durability (`Immediate`: fsynced when its commit
/// returns).
fn begin_write(db: &Database, durability: Durability) -> io::Result<WriteTransaction> {
    let mut txn = db.begin_write().map_err(engine("begin a write"))?;
    txn.set_durability(durability)
        .map_err(engine("set the durability"))?;
    Ok(txn)
}

/// Reads and checks the metadata record `key` from an open `raft_meta` table.
fn meta_in<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &'static str,
) -> io::Result<Option<T>> {
    match table.get(key).map_err(engine("read raft_meta"))? {
        None => Ok(None),
        Some(bytes) => decode(META_TABLE_NAME, RecordKey::Meta(key), bytes.value()).map(Some),
    }
}

/// Normalizes a range of indexes to `[start, end)` (`end` unbounded or excluded); `None` when it
/// holds no index, so redb never sees an inverted range.
fn index_range(range: &impl RangeBounds<u64>) -> Option<(Bound<u64>, Bound<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&start) => start,
        Bound::Excluded(&start) => start.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&last) => last
            .checked_add(1)
            .map_or(Bound::Unbounded, Bound::Excluded),
        Bound::Excluded(&end) => Bound::Excluded(end),
        Bound::Unbounded => Bound::Unbounded,
    };
    if let Bound::Excluded(end) = end
        && start >= end
    {
        return None;
    }
    Some((Bound::Included(start), end))
}

impl<C> RedbLogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    /// Decodes the entry stored under `index` and checks that it is the entry for that index.
    fn decode_entry(index: u64, bytes: &[u8]) -> io::Result<C::Entry> {
        let entry: C::Entry = decode(LOG_TABLE_NAME, RecordKey::Index(index), bytes)?;
        if entry.index() != index {
            let detail = format!("the entry stored there claims index {}", entry.index());
            return Err(corrupt(LOG_TABLE_NAME, RecordKey::Index(index), detail));
        }
        Ok(entry)
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &'static str) -> io::Result<Option<T>> {
        let txn = self.db.begin_read().map_err(engine("begin a read"))?;
        let table = txn
            .open_table(META_TABLE)
            .map_err(engine("open raft_meta"))?;
        meta_in(&table, key)
    }

    /// Commits `txn`, counting the fsync an immediate commit makes.
    fn commit(
        &self,
        txn: WriteTransaction,
        durability: Durability,
        doing: &'static str,
    ) -> io::Result<()> {
        txn.commit().map_err(engine(doing))?;
        if matches!(durability, Durability::Immediate) {
            LogStats::add(&self.stats.fsyncs, 1);
        }
        Ok(())
    }

    /// Stores (`Some`) or clears (`None`) one metadata record with the given durability.
    fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: Option<&T>,
        durability: Durability,
    ) -> io::Result<()> {
        let txn = begin_write(&self.db, durability)?;
        {
            let mut table = txn
                .open_table(META_TABLE)
                .map_err(engine("open raft_meta"))?;
            match value {
                Some(value) => {
                    let bytes = encode(META_TABLE_NAME, RecordKey::Meta(key), value)?;
                    table
                        .insert(key, bytes.as_slice())
                        .map_err(engine("write raft_meta"))?;
                }
                None => {
                    table.remove(key).map_err(engine("write raft_meta"))?;
                }
            }
        }
        self.commit(txn, durability, "commit raft_meta")
    }

    /// Reads the entries in `range` in one read transaction, up to `budget`.
    fn read_entries(
        &self,
        range: &impl RangeBounds<u64>,
        budget: ReadBudget,
    ) -> io::Result<Vec<C::Entry>> {
        let Some(range) = index_range(range) else {
            return Ok(Vec::new());
        };
        if let Some(wal) = &self.wal {
            let Bound::Included(start) = range.0 else {
                return Ok(Vec::new());
            };
            let end = match range.1 {
                Bound::Excluded(end) => end,
                _ => u64::MAX,
            };
            return wal
                .read(start, end, budget.entries_max, budget.bytes_max)?
                .into_iter()
                .map(|(index, record)| Self::decode_entry(index, &record))
                .collect();
        }
        let txn = self.db.begin_read().map_err(engine("begin a read"))?;
        let table = txn.open_table(LOG_TABLE).map_err(engine("open raft_log"))?;
        let mut entries = Vec::new();
        let mut bytes_read: usize = 0;
        let mut expected: Option<u64> = None;
        for item in table.range::<u64>(range).map_err(engine("read raft_log"))? {
            let (key, value) = item.map_err(engine("read raft_log"))?;
            let index = key.value();
            if let Some(expected) = expected
                && index != expected
            {
                let detail = format!("missing: the log has a hole up to index {index}");
                return Err(corrupt(LOG_TABLE_NAME, RecordKey::Index(expected), detail));
            }
            entries.push(Self::decode_entry(index, value.value())?);
            bytes_read = bytes_read.saturating_add(value.value().len());
            if entries.len() >= budget.entries_max || bytes_read >= budget.bytes_max {
                break;
            }
            let Some(next) = index.checked_add(1) else {
                break;
            };
            expected = Some(next);
        }
        Ok(entries)
    }

    /// The last purged log id and the last log id, from one read transaction.
    fn log_state(&self) -> io::Result<LogState<C>> {
        if let Some(wal) = &self.wal {
            let last_purged: Option<LogIdOf<C>> = self.read_meta(LAST_PURGED_KEY)?;
            // A segment may still hold entries at or below the purge point (it also holds
            // later ones): they are forgotten here, as on every open.
            if let Some(purged) = &last_purged {
                wal.purge_through(purged.index)?;
            }
            let last_log_id = match wal.bounds() {
                Some((_, last)) => {
                    let records = wal.read(last, last.saturating_add(1), 1, usize::MAX)?;
                    match records.first() {
                        Some((index, record)) => Some(Self::decode_entry(*index, record)?.log_id()),
                        None => last_purged.clone(),
                    }
                }
                None => last_purged.clone(),
            };
            return Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id,
            });
        }
        let txn = self.db.begin_read().map_err(engine("begin a read"))?;
        let meta = txn
            .open_table(META_TABLE)
            .map_err(engine("open raft_meta"))?;
        let log = txn.open_table(LOG_TABLE).map_err(engine("open raft_log"))?;
        let last_purged: Option<LogIdOf<C>> = meta_in(&meta, LAST_PURGED_KEY)?;
        if let Some(purged) = &last_purged
            && let Some((first, _)) = log.first().map_err(engine("read raft_log"))?
            && first.value() <= purged.index
        {
            let detail = format!("an entry survives at or below the purge point {purged}");
            return Err(corrupt(
                LOG_TABLE_NAME,
                RecordKey::Index(first.value()),
                detail,
            ));
        }
        let last_log_id = match log.last().map_err(engine("read raft_log"))? {
            Some((key, value)) => Some(Self::decode_entry(key.value(), value.value())?.log_id()),
            None => last_purged.clone(),
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    /// Writes `entries` in one transaction with the given durability; returns how many were
    /// written.
    fn append_entries(
        &self,
        entries: impl IntoIterator<Item = C::Entry>,
        durability: Durability,
    ) -> io::Result<usize> {
        let mut entries = entries.into_iter().peekable();
        if entries.peek().is_none() {
            return Ok(0);
        }
        if let Some(wal) = &self.wal {
            return self.append_to_wal(wal, entries);
        }
        let txn = begin_write(&self.db, durability)?;
        let mut written = 0;
        {
            let mut next = Self::next_index(&txn)?;
            let mut log = txn.open_table(LOG_TABLE).map_err(engine("open raft_log"))?;
            for entry in entries {
                let index = entry.index();
                if let Some(next) = next
                    && index != next
                {
                    return Err(refused_append(index, next));
                }
                let bytes = encode(LOG_TABLE_NAME, RecordKey::Index(index), &entry)?;
                log.insert(index, bytes.as_slice())
                    .map_err(engine("write raft_log"))?;
                next = Some(index.checked_add(1).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "log index overflow")
                })?);
                written += 1;
            }
        }
        self.commit(txn, durability, "commit an append")?;
        LogStats::add(&self.stats.append_batches, 1);
        LogStats::add(&self.stats.entries_appended, written as u64);
        Ok(written)
    }

    /// Writes `entries` to the WAL with one write (not yet durable: see [`Wal::on_flushed`]).
    fn append_to_wal(
        &self,
        wal: &Wal,
        entries: impl Iterator<Item = C::Entry>,
    ) -> io::Result<usize> {
        let mut next = match wal.bounds() {
            Some((_, last)) => last.checked_add(1),
            None => {
                let purged: Option<LogIdOf<C>> = self.read_meta(LAST_PURGED_KEY)?;
                purged.and_then(|purged| purged.index.checked_add(1))
            }
        };
        let mut records = Vec::new();
        for entry in entries {
            let index = entry.index();
            if let Some(next) = next
                && index != next
            {
                return Err(refused_append(index, next));
            }
            records.push((
                index,
                encode(LOG_TABLE_NAME, RecordKey::Index(index), &entry)?,
            ));
            next = Some(index.checked_add(1).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "log index overflow")
            })?);
        }
        wal.append(&records)?;
        LogStats::add(&self.stats.append_batches, 1);
        LogStats::add(&self.stats.entries_appended, records.len() as u64);
        Ok(records.len())
    }

    /// The index the next appended entry must have: right after the last entry, or right after
    /// the purge point when the log is empty; `None` (anything goes) for a log never written.
    fn next_index(txn: &WriteTransaction) -> io::Result<Option<u64>> {
        let log = txn.open_table(LOG_TABLE).map_err(engine("open raft_log"))?;
        if let Some((last, _)) = log.last().map_err(engine("read raft_log"))? {
            return Ok(last.value().checked_add(1));
        }
        let meta = txn
            .open_table(META_TABLE)
            .map_err(engine("open raft_meta"))?;
        let purged: Option<LogIdOf<C>> = meta_in(&meta, LAST_PURGED_KEY)?;
        Ok(purged.and_then(|purged| purged.index.checked_add(1)))
    }

    /// Removes every entry after `last_kept` (all of them for `None`), durably.
    fn remove_after(&self, last_kept: Option<u64>) -> io::Result<()> {
        let first_removed = match last_kept {
            None => 0,
            Some(index) => match index.checked_add(1) {
                Some(first) => first,
                None => return Ok(()),
            },
        };
        if let Some(wal) = &self.wal {
            return wal.truncate_after(last_kept);
        }
        let txn = begin_write(&self.db, Durability::Immediate)?;
        {
            let mut log = txn.open_table(LOG_TABLE).map_err(engine("open raft_log"))?;
            log.retain_in(first_removed.., |_, _| false)
                .map_err(engine("truncate raft_log"))?;
        }
        self.commit(txn, Durability::Immediate, "commit a truncation")
    }

    /// Records `upto` as the purge point, then removes every entry up to it, in one durable
    /// transaction. A purge point at or below the current one changes nothing.
    fn purge_through(&self, upto: &LogIdOf<C>) -> io::Result<()> {
        let txn = begin_write(&self.db, Durability::Immediate)?;
        {
            let mut meta = txn
                .open_table(META_TABLE)
                .map_err(engine("open raft_meta"))?;
            let previous: Option<LogIdOf<C>> = meta_in(&meta, LAST_PURGED_KEY)?;
            if previous.is_some_and(|previous| previous >= *upto) {
                return Ok(());
            }
            let bytes = encode(META_TABLE_NAME, RecordKey::Meta(LAST_PURGED_KEY), upto)?;
            meta.insert(LAST_PURGED_KEY, bytes.as_slice())
                .map_err(engine("write raft_meta"))?;
            let mut log = txn.open_table(LOG_TABLE).map_err(engine("open raft_log"))?;
            log.retain_in(..=upto.index, |_, _| false)
                .map_err(engine("purge raft_log"))?;
        }
        self.commit(txn, Durability::Immediate, "commit a purge")?;
        // The purge point is durable: the WAL may now drop what it covers.
        match &self.wal {
            Some(wal) => wal.purge_through(upto.index),
            None => Ok(()),
        }
    }
}

impl<C> RaftLogReader<C> for RedbLogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        self.read_entries(&range, ReadBudget::UNLIMITED)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.read_meta(VOTE_KEY)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<C::Entry>, io::Error> {
        self.read_entries(&(start..end), ReadBudget::LIMITED)
    }
}

impl<C> RaftLogStorage<C> for RedbLogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        self.log_state()
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        self.write_meta(VOTE_KEY, Some(vote), Durability::Immediate)
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        // A hint, persisted by the next flush (see the module docs): no fsync of its own.
        self.write_meta(COMMITTED_KEY, committed.as_ref(), Durability::None)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        self.read_meta(COMMITTED_KEY)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self.append_entries(entries, Durability::Immediate) {
            Ok(_) => {
                match &self.wal {
                    Some(wal) => {
                        wal.on_flushed(Box::new(move |result| callback.io_completed(result)));
                    }
                    None => callback.io_completed(Ok(())),
                }
                Ok(())
            }
            Err(err) => {
                callback.io_completed(Err(io::Error::new(err.kind(), err.to_string())));
                Err(err)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        self.remove_after(last_log_id.map(|log_id| log_id.index))
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        self.purge_through(&log_id)
    }
}
