//! The AP keyspace's tables: objects by storage key, hints for unreachable owners, and the leaf
//! hashes of the per-partition Merkle trees.
//!
//! Every value is framed `[crc32c of the rest: u32 LE][payload]`, so a torn or flipped byte is
//! reported as corruption instead of being merged into a replica. Writes go through
//! [`ApStore::write`]: one redb transaction, fsynced (`Durability::Immediate`) before it returns,
//! into which the caller batches as many operations as are waiting (group commit).

use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::RedbStore;

const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ap_objects");
/// (owner node, storage key) → `[created unix ms: u64 LE][object]`.
const HINTS: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("ap_hints");
/// Storage key of a tombstone → unix ms when this replica first held it as a tombstone.
const TOMBSTONES: TableDefinition<&[u8], u64> = TableDefinition::new("ap_tombstones");
/// (partition, leaf) → 16-byte leaf hash.
const LEAVES: TableDefinition<(u32, u32), &[u8]> = TableDefinition::new("ap_leaves");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(OBJECTS)?;
    txn.open_table(HINTS)?;
    txn.open_table(LEAVES)?;
    txn.open_table(TOMBSTONES)?;
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

/// The AP tables of a node's database.
#[derive(Clone)]
pub struct ApStore {
    db: Arc<Database>,
}

impl std::fmt::Debug for ApStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApStore").finish_non_exhaustive()
    }
}

impl RedbStore {
    /// The AP keyspace's tables in this store.
    pub fn ap_store(&self) -> ApStore {
        ApStore {
            db: self.database(),
        }
    }
}

/// One write transaction over the AP tables.
pub struct ApWrite<'t> {
    objects: redb::Table<'t, &'static [u8], &'static [u8]>,
    hints: redb::Table<'t, (u64, &'static [u8]), &'static [u8]>,
    leaves: redb::Table<'t, (u32, u32), &'static [u8]>,
    tombstones: redb::Table<'t, &'static [u8], u64>,
}

impl ApWrite<'_> {
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
        Ok(())
    }

    /// Removes `key` (tombstone garbage collection).
    pub fn remove_object(&mut self, key: &[u8]) -> Result<(), ApStoreError> {
        self.objects.remove(key).map_err(engine)?;
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
        Ok(())
    }

    /// Drops the hint for `owner` under `key`.
    pub fn remove_hint(&mut self, owner: u64, key: &[u8]) -> Result<(), ApStoreError> {
        self.hints.remove((owner, key)).map_err(engine)?;
        Ok(())
    }

    /// Records that `key` holds a tombstone since `unix_ms`, unless already recorded.
    pub fn mark_tombstone(&mut self, key: &[u8], unix_ms: u64) -> Result<(), ApStoreError> {
        if self.tombstones.get(key).map_err(engine)?.is_none() {
            self.tombstones.insert(key, unix_ms).map_err(engine)?;
        }
        Ok(())
    }

    /// Forgets that `key` holds a tombstone (it was written again, or reaped).
    pub fn clear_tombstone(&mut self, key: &[u8]) -> Result<(), ApStoreError> {
        self.tombstones.remove(key).map_err(engine)?;
        Ok(())
    }

    /// Stores a Merkle leaf hash.
    pub fn set_leaf(&mut self, partition: u32, leaf: u32, hash: u128) -> Result<(), ApStoreError> {
        if hash == 0 {
            self.leaves.remove((partition, leaf)).map_err(engine)?;
        } else {
            self.leaves
                .insert((partition, leaf), hash.to_le_bytes().as_slice())
                .map_err(engine)?;
        }
        Ok(())
    }
}

impl ApStore {
    /// Runs `f` in one write transaction and commits it durably (fsync) before returning.
    /// If `f` fails nothing is written.
    pub fn write<R, E: From<ApStoreError>>(
        &self,
        f: impl FnOnce(&mut ApWrite<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut txn = self.db.begin_write().map_err(engine)?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(engine)?;
        let result = {
            let mut tables = ApWrite {
                objects: txn.open_table(OBJECTS).map_err(engine)?,
                hints: txn.open_table(HINTS).map_err(engine)?,
                leaves: txn.open_table(LEAVES).map_err(engine)?,
                tombstones: txn.open_table(TOMBSTONES).map_err(engine)?,
            };
            f(&mut tables)?
        };
        txn.commit().map_err(engine)?;
        Ok(result)
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
        let mut leaves = Vec::new();
        for entry in table.iter().map_err(engine)? {
            let (key, hash) = entry.map_err(engine)?;
            let bytes: [u8; 16] = hash
                .value()
                .try_into()
                .map_err(|_| ApStoreError::Corrupt { table: "ap_leaves" })?;
            leaves.push((key.value(), u128::from_le_bytes(bytes)));
        }
        Ok(leaves)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_hints_and_leaves_survive_reopen_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbStore::open(dir.path()).unwrap().ap_store();
            store
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
