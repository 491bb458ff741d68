//! `MetaStore` on redb: the node's identity and the members it has learned.

use std::path::Path;
use std::sync::Arc;

use isle_env::{MetaStore, StoreError};
use isle_types::{Identity, Member, NodeId};
use openraft::RaftTypeConfig;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::ApStore;
use crate::raft_log::{self, LogStats, RedbLogStore};

/// Small singleton records, keyed by name, JSON-encoded so an operator can inspect them.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Members by node id, JSON-encoded.
const MEMBERS: TableDefinition<u64, &[u8]> = TableDefinition::new("members");

const IDENTITY_KEY: &str = "identity";

/// A node's durable store in one redb database (on disk, or in memory for simulation).
///
/// The database is shared: [`RedbStore::raft_log_store`] opens the Raft log on the same file.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    /// The Raft log: on disk its entries in a write-ahead log with group commit; in memory in
    /// a redb table, every append committed inline (no thread: simulation stays deterministic).
    raft_log: RaftLogHandle,
    /// The AP tables, with their log on disk (see [`ApStore`]).
    ap: ApStore,
    /// The data directory (on disk only).
    dir: Option<std::path::PathBuf>,
}

/// One Raft log per store, whatever type config its handles are used with (the entries are
/// stored as framed bytes; the type only decodes them).
#[derive(Clone)]
struct RaftLogHandle {
    wal: Option<Arc<crate::wal::Wal>>,
    stats: Arc<LogStats>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

/// redb's page cache per node. Its default, 1 GiB, let each node of a local cluster grow by
/// about 35 MB a minute under load; the hot state (the CP keyspace, Merkle leaves in use) lives
/// in memory anyway, and the AP objects' working set of a small node fits in this.
pub const CACHE_BYTES: usize = 64 << 20;

fn engine(err: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(err.to_string())
}

impl RedbStore {
    /// Opens (creating if needed) `<data_dir>/isle.redb`; the directory is created too.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            engine(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join("isle.redb");
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| engine(format!("cannot open {}: {e}", path.display())))?;
        let mut store = Self::init(db)?;
        store.dir = Some(data_dir.to_path_buf());
        let wal_dir = data_dir.join("raft-wal");
        // The type config only decodes entries; any one opens (and migrates) the files.
        let log =
            RedbLogStore::<RawConfig>::open_wal(Arc::clone(&store.db), &wal_dir).map_err(|e| {
                engine(format!(
                    "cannot open the Raft log in {}: {e}",
                    wal_dir.display()
                ))
            })?;
        store.raft_log = RaftLogHandle {
            wal: log.wal().cloned(),
            stats: Arc::clone(log.stats()),
        };
        let ap_dir = data_dir.join("ap-wal");
        store.ap = ApStore::open(Arc::clone(&store.db), &ap_dir).map_err(|e| {
            engine(format!(
                "cannot open the AP log in {}: {e}",
                ap_dir.display()
            ))
        })?;
        Ok(store)
    }

    /// A store that lives in memory only: for the simulator, never for a real node.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(engine)?;
        Self::init(db)
    }

    /// Creates the tables up front (the Raft log's too) so read transactions never meet a
    /// missing table.
    fn init(db: Database) -> Result<Self, StoreError> {
        let txn = db.begin_write().map_err(engine)?;
        txn.open_table(META).map_err(engine)?;
        txn.open_table(MEMBERS).map_err(engine)?;
        raft_log::create_tables(&txn).map_err(engine)?;
        crate::records::create_table(&txn).map_err(engine)?;
        crate::ap::create_tables(&txn).map_err(engine)?;
        txn.commit().map_err(engine)?;
        let db = Arc::new(db);
        Ok(RedbStore {
            ap: ApStore::inline(Arc::clone(&db)),
            db,
            raft_log: RaftLogHandle {
                wal: None,
                stats: Arc::default(),
            },
            dir: None,
        })
    }

    /// The Raft log, vote and committed id kept in this store's database, for the type config
    /// `C`. Each call returns a new handle on the same tables; see [`RedbLogStore`]. On disk
    /// it group-commits (appends return before their fsync, which one flusher thread makes for
    /// every batch queued meanwhile); in memory every append commits inline.
    pub fn raft_log_store<C: RaftTypeConfig>(&self) -> RedbLogStore<C> {
        RedbLogStore::on_initialized(
            Arc::clone(&self.db),
            self.raft_log.wal.clone(),
            Arc::clone(&self.raft_log.stats),
        )
    }

    /// The data directory, for a store on disk.
    pub fn data_dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The AP keyspace's tables in this store (every handle shares the store's AP log).
    pub fn ap_store(&self) -> ApStore {
        self.ap.clone()
    }

    /// The Raft log's disk counters (fsyncs, batches, entries), shared by every handle.
    pub fn log_stats(&self) -> &Arc<LogStats> {
        &self.raft_log.stats
    }

    /// The underlying database, for other stores that keep their tables in the node's file.
    pub fn database(&self) -> Arc<Database> {
        Arc::clone(&self.db)
    }
}

openraft::declare_raft_types!(
    /// A type config for handling the log's files without decoding entries (opening, moving an
    /// old table into the WAL).
    RawConfig
);

fn decode<T: serde::de::DeserializeOwned>(
    table: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table,
        detail: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(engine)
}

impl MetaStore for RedbStore {
    fn load_identity(&self) -> Result<Option<Identity>, StoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(META).map_err(engine)?;
        let Some(bytes) = table.get(IDENTITY_KEY).map_err(engine)? else {
            return Ok(None);
        };
        decode("meta", bytes.value()).map(Some)
    }

    fn save_identity(&mut self, identity: &Identity) -> Result<(), StoreError> {
        let bytes = encode(identity)?;
        let txn = self.db.begin_write().map_err(engine)?;
        {
            let mut table = txn.open_table(META).map_err(engine)?;
            table
                .insert(IDENTITY_KEY, bytes.as_slice())
                .map_err(engine)?;
        }
        txn.commit().map_err(engine)
    }

    fn load_members(&self) -> Result<Vec<Member>, StoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(MEMBERS).map_err(engine)?;
        let mut members = Vec::new();
        for entry in table.iter().map_err(engine)? {
            let (_, bytes) = entry.map_err(engine)?;
            members.push(decode("members", bytes.value())?);
        }
        Ok(members)
    }

    fn save_members(&mut self, members: &[Member]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(engine)?;
        {
            let mut table = txn.open_table(MEMBERS).map_err(engine)?;
            for member in members {
                let bytes = encode(member)?;
                table
                    .insert(member.id.0, bytes.as_slice())
                    .map_err(engine)?;
            }
        }
        txn.commit().map_err(engine)
    }

    fn remove_member(&mut self, id: NodeId) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(engine)?;
        {
            let mut table = txn.open_table(MEMBERS).map_err(engine)?;
            table.remove(id.0).map_err(engine)?;
        }
        txn.commit().map_err(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64) -> Member {
        Member {
            id: NodeId(id),
            peer_addr: format!("127.0.0.1:{}", 7000 + id),
            http_addr: format!("127.0.0.1:{}", 8000 + id),
            grpc_addr: None,
            zone: "east".into(),
            weight: 1,
        }
    }

    #[test]
    fn identity_and_members_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity {
            node_id: NodeId(3),
            incarnation: 2,
            created_unix_ms: 99,
        };
        {
            let mut store = RedbStore::open(dir.path()).unwrap();
            assert_eq!(store.load_identity().unwrap(), None);
            store.save_identity(&identity).unwrap();
            store
                .save_members(&[member(1), member(2), member(3)])
                .unwrap();
            store.remove_member(NodeId(2)).unwrap();
        }
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(store.load_identity().unwrap(), Some(identity));
        let ids: Vec<u64> = store
            .load_members()
            .unwrap()
            .iter()
            .map(|m| m.id.0)
            .collect();
        assert_eq!(ids, vec![1, 3]);
    }

    #[test]
    fn members_are_replaced_not_duplicated() {
        let mut store = RedbStore::in_memory().unwrap();
        store.save_members(&[member(1)]).unwrap();
        let mut moved = member(1);
        moved.peer_addr = "127.0.0.1:9999".into();
        store.save_members(&[moved.clone()]).unwrap();
        assert_eq!(store.load_members().unwrap(), vec![moved]);
    }

    #[test]
    fn corrupt_record_is_a_typed_error() {
        let store = RedbStore::in_memory().unwrap();
        let txn = store.db.begin_write().unwrap();
        {
            let mut table = txn.open_table(META).unwrap();
            table.insert(IDENTITY_KEY, b"{not json".as_slice()).unwrap();
        }
        txn.commit().unwrap();
        assert!(matches!(
            store.load_identity(),
            Err(StoreError::Corrupt { table: "meta", .. })
        ));
    }
}
