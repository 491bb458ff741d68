//! Named, checksummed records in the node's database: small state that other crates keep
//! durably without owning a table (the CP keyspace's latest snapshot, for one).

use std::io;

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
}
