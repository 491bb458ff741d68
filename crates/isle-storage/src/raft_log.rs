//! [`RedbLogStore`]: openraft's durable log, vote and committed-id store, on redb.
//!
//! # Tables
//!
//! Two tables in the node's one redb file, next to [`RedbStore`](crate::RedbStore)'s own:
//!
//! - `raft_log` — `u64` log index → one framed entry;
//! - `raft_meta` — `&str` → one framed record: `vote`, `committed`, `last_purged`.
//!
//! Every value is framed by [`record`]: a crc32c over table, key, format version and a postcard
//! payload. A record that fails its checks is an [`io::Error`] of kind
//! [`io::ErrorKind::InvalidData`] carrying a [`CorruptRecord`] that names the table and the
//! index or key — never a panic, never a wrong value handed to Raft.
//!
//! # Durability and ordering
//!
//! Every write is one redb write transaction committed with [`Durability::Immediate`], so it is on
//! disk (fsynced) when the commit returns. [`RaftLogStorage::append`] calls its [`IOFlushed`]
//! callback only after that commit, and returns after it too: entries are readable and durable by
//! then. Writes are serialized twice over: openraft issues them from one task, one at a time, and
//! redb admits one write transaction at a time.
//!
//! # Group commit
//!
//! One `append` call is one transaction, however many entries it carries. openraft batches for us:
//! it merges the client writes queued while the previous IO ran, and consecutive append commands of
//! one leader, into one call of up to `Config::max_append_entries` entries (4096 by default), so
//! the fsync is paid per batch, not per entry. A commit costs about one `fdatasync` plus redb's
//! page writes, and grows slowly with its size. Measured by `append_throughput_single_vs_batched`
//! (`raft_log/tests.rs`; run it with `--release -- --nocapture`), 100-byte entries, 2-core VM,
//! release build, three runs: one entry per append 0.19–0.24 ms, 100 entries per append 0.42–0.43
//! ms, so batching gave 45–55× the entries per second; a raw 4 KiB write + `fdatasync` took
//! 0.09–0.13 ms in the same runs. A debug build is ≈ 5× slower per commit (≈ 1.0 ms and ≈ 2.5 ms),
//! and under a disk loaded by other builds single appends took up to 6 ms: compare figures within
//! one run, not across runs.
//!
//! # Blocking
//!
//! redb is synchronous. Each call here runs one short transaction inline on the calling task,
//! without `spawn_blocking`: openraft's `RaftCore` awaits every log IO inline before its next step
//! anyway, so handing the transaction to another thread would not let Raft progress sooner, and the
//! hop costs: in the same release runs a single append took 0.18–0.27 ms inline and 0.27–0.34 ms
//! through `spawn_blocking` (+0.07–0.1 ms, up to +50%). The price of inline is that one runtime
//! worker is busy for one commit; with the multi-threaded runtime the other workers keep serving.
//! Revisit (with `TypeConfigExt::spawn_blocking`, which follows the configured runtime) if commits
//! grow slow enough to starve a worker.
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

pub(crate) mod record;
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

pub use record::CorruptRecord;
pub use record::RecordKey;
use record::corrupt;
use record::decode;
use record::encode;

const LOG_TABLE_NAME: &str = "raft_log";
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
    config: PhantomData<fn() -> C>,
}

impl<C: RaftTypeConfig> Clone for RedbLogStore<C> {
    fn clone(&self) -> Self {
        Self::on_initialized(Arc::clone(&self.db))
    }
}

impl<C: RaftTypeConfig> fmt::Debug for RedbLogStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbLogStore").finish_non_exhaustive()
    }
}

impl<C: RaftTypeConfig> RedbLogStore<C> {
    /// Opens the Raft log kept in `db`, creating its tables if they are missing.
    pub fn open(db: Arc<Database>) -> io::Result<Self> {
        let txn = begin_write(&db)?;
        create_tables(&txn).map_err(engine("create the raft tables"))?;
        txn.commit().map_err(engine("commit the raft tables"))?;
        Ok(Self::on_initialized(db))
    }

    /// A store on a database whose raft tables already exist (see [`create_tables`]).
    pub(crate) fn on_initialized(db: Arc<Database>) -> Self {
        RedbLogStore {
            db,
            config: PhantomData,
        }
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

/// A write transaction that is durable (fsynced) when its commit returns.
fn begin_write(db: &Database) -> io::Result<WriteTransaction> {
    let mut txn = db.begin_write().map_err(engine("begin a write"))?;
    txn.set_durability(Durability::Immediate)
        .map_err(engine("set immediate durability"))?;
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

    /// Stores (`Some`) or clears (`None`) one metadata record, durably.
    fn write_meta<T: Serialize>(&self, key: &'static str, value: Option<&T>) -> io::Result<()> {
        let txn = begin_write(&self.db)?;
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
        txn.commit().map_err(engine("commit raft_meta"))
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

    /// Writes `entries` in one durable transaction; returns how many were written.
    fn append_entries(&self, entries: impl IntoIterator<Item = C::Entry>) -> io::Result<usize> {
        let mut entries = entries.into_iter().peekable();
        if entries.peek().is_none() {
            return Ok(0);
        }
        let txn = begin_write(&self.db)?;
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
        txn.commit().map_err(engine("commit an append"))?;
        Ok(written)
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
        let txn = begin_write(&self.db)?;
        {
            let mut log = txn.open_table(LOG_TABLE).map_err(engine("open raft_log"))?;
            log.retain_in(first_removed.., |_, _| false)
                .map_err(engine("truncate raft_log"))?;
        }
        txn.commit().map_err(engine("commit a truncation"))
    }

    /// Records `upto` as the purge point, then removes every entry up to it, in one durable
    /// transaction. A purge point at or below the current one changes nothing.
    fn purge_through(&self, upto: &LogIdOf<C>) -> io::Result<()> {
        let txn = begin_write(&self.db)?;
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
        txn.commit().map_err(engine("commit a purge"))
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
        self.write_meta(VOTE_KEY, Some(vote))
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        self.write_meta(COMMITTED_KEY, committed.as_ref())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        self.read_meta(COMMITTED_KEY)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self.append_entries(entries) {
            Ok(_) => {
                callback.io_completed(Ok(()));
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
