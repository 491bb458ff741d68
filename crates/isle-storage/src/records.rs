//! Named, checksummed records: state that other crates keep durably without owning a table.
//! Small ones live in the node's database; large ones (the CP keyspace's latest snapshot) in a
//! file of their own next to it, because a large redb commit holds redb's only write lock —
//! and so stalls every other commit of the node, the Raft log's metadata among them — for as
//! long as it writes and fsyncs.

use std::fs::{self, File};
use std::io::{self, Write};

use redb::{ReadableDatabase, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::RedbStore;
use crate::record::{self, RecordKey};

/// Records by name; values framed like the Raft log's (crc32c, version, postcard).
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

pub(crate) fn create_table(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(RECORDS).map(|_| ())
}

/// Bytes of a large record written between two fsyncs.
const LARGE_RECORD_SLICE: usize = 4 << 20;

fn io_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("redb table `records`: {e}"))
}

impl RedbStore {
    /// Replaces the record `name` with `value`; durable (fsynced) when it returns.
    pub fn save_record<T: Serialize>(&self, name: &'static str, value: &T) -> io::Result<()> {
        let bytes = record::encode("records", RecordKey::Meta(name), value)?;
        let mut txn = self.database().begin_write().map_err(io_error)?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(io_error)?;
        {
            let mut table = txn.open_table(RECORDS).map_err(io_error)?;
            table.insert(name, bytes.as_slice()).map_err(io_error)?;
        }
        txn.commit().map_err(io_error)
    }

    /// Replaces the large record `name` with `value`, durably: on disk as
    /// `<data-dir>/<name>.record` (written to a temporary file, fsynced, renamed over the old
    /// one, the directory fsynced: a crash leaves the old record or the new, whole); in memory
    /// as a record in the database.
    pub fn save_large_record<T: Serialize>(&self, name: &'static str, value: &T) -> io::Result<()> {
        let Some(dir) = self.data_dir() else {
            return self.save_record(name, value);
        };
        let bytes = record::encode("records", RecordKey::Meta(name), value)?;
        let path = dir.join(format!("{name}.record"));
        let tmp = dir.join(format!("{name}.record.tmp"));
        let written = (|| {
            let mut file = File::create(&tmp)?;
            // In slices, each made durable before the next: one burst of tens of MiB of dirty
            // pages would hold up every other fsync of the disk (the logs' group commits)
            // while the kernel writes it back.
            for slice in bytes.chunks(LARGE_RECORD_SLICE) {
                file.write_all(slice)?;
                file.sync_data()?;
            }
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()
        })();
        written.map_err(|e| io::Error::new(e.kind(), format!("saving {}: {e}", path.display())))
    }

    /// The large record `name`, if saved (see [`RedbStore::save_large_record`]); one saved in
    /// the database by an older version is found there. A corrupt record is an `InvalidData`
    /// error naming the file.
    pub fn load_large_record<T: DeserializeOwned>(
        &self,
        name: &'static str,
    ) -> io::Result<Option<T>> {
        if let Some(dir) = self.data_dir() {
            let path = dir.join(format!("{name}.record"));
            match fs::read(&path) {
                Ok(bytes) => {
                    return record::decode("records", RecordKey::Meta(name), &bytes)
                        .map(Some)
                        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())));
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(io::Error::new(
                        err.kind(),
                        format!("reading {}: {err}", path.display()),
                    ));
                }
            }
        }
        self.load_record(name)
    }

    /// The record `name`, if saved; a corrupt record is an `InvalidData` error.
    pub fn load_record<T: DeserializeOwned>(&self, name: &'static str) -> io::Result<Option<T>> {
        let txn = self.database().begin_read().map_err(io_error)?;
        let table = txn.open_table(RECORDS).map_err(io_error)?;
        match table.get(name).map_err(io_error)? {
            Some(bytes) => {
                record::decode("records", RecordKey::Meta(name), bytes.value()).map(Some)
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbStore::open(dir.path()).unwrap();
            assert_eq!(store.load_record::<Vec<u8>>("snap").unwrap(), None);
            store.save_record("snap", &vec![1u8, 2, 3]).unwrap();
            store.save_record("snap", &vec![4u8]).unwrap();
        }
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(
            store.load_record::<Vec<u8>>("snap").unwrap(),
            Some(vec![4u8])
        );
    }

    #[test]
    fn large_records_live_in_their_own_file_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbStore::open(dir.path()).unwrap();
            // A record an older version kept in the database is still found...
            store.save_record("big", &vec![7u8; 10]).unwrap();
            assert_eq!(
                store.load_large_record::<Vec<u8>>("big").unwrap(),
                Some(vec![7u8; 10])
            );
            // ...until a save writes the file, which wins from then on.
            store.save_large_record("big", &vec![1u8; 100_000]).unwrap();
            store.save_large_record("big", &vec![2u8; 50_000]).unwrap();
        }
        let path = dir.path().join("big.record");
        assert!(path.is_file());
        assert!(!dir.path().join("big.record.tmp").exists());
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(
            store.load_large_record::<Vec<u8>>("big").unwrap(),
            Some(vec![2u8; 50_000])
        );
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[30_000] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let err = store.load_large_record::<Vec<u8>>("big").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("big.record"), "{err}");

        let memory = RedbStore::in_memory().unwrap();
        memory.save_large_record("big", &vec![3u8; 5]).unwrap();
        assert_eq!(
            memory.load_large_record::<Vec<u8>>("big").unwrap(),
            Some(vec![3u8; 5])
        );
    }
}
