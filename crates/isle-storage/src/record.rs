//! The on-disk framing of one Raft log record: a checksum, a format version, a postcard payload.
//!
//! ```text
//! [crc32c: u32 little-endian][version: u8 = 1][postcard payload ...]
//! ```
//!
//! The checksum covers the table name, the record's key, the version byte and the payload. Mixing
//! in the table and key means a value that is intact but sits under the wrong key (a misdirected
//! write, a page copied to the wrong place) fails the check too. A record is trusted only after
//! the checksum matches, the version is known and postcard consumed the payload exactly; anything
//! else is a [`CorruptRecord`], surfaced as an [`io::Error`] of kind
//! [`io::ErrorKind::InvalidData`] — never a panic, never a silently wrong value.

use std::fmt;
use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes before the payload: the checksum and the version byte.
const HEADER_LEN: usize = 5;
/// The only record format written so far.
const FORMAT_VERSION: u8 = 1;

/// Where a record lives inside its table: a log index or a named metadata slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKey {
    /// A log entry, keyed by its Raft log index.
    Index(u64),
    /// A metadata record (`vote`, `committed`, `last_purged`).
    Meta(&'static str),
}

impl RecordKey {
    /// Feeds the key into a running checksum.
    fn checksum(self, seed: u32) -> u32 {
        match self {
            RecordKey::Index(index) => crc32c::crc32c_append(seed, &index.to_be_bytes()),
            RecordKey::Meta(name) => crc32c::crc32c_append(seed, name.as_bytes()),
        }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordKey::Index(index) => write!(f, "index {index}"),
            RecordKey::Meta(name) => write!(f, "key `{name}`"),
        }
    }
}

/// A stored record that failed its checks; carried inside an [`io::Error`] of kind
/// [`io::ErrorKind::InvalidData`] (reach it with `io::Error::get_ref` and `downcast_ref`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    /// The redb table holding the record.
    pub table: &'static str,
    /// The record's key in that table.
    pub key: RecordKey,
    /// What was wrong with it.
    pub detail: String,
}

impl fmt::Display for CorruptRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupt record in redb table `{}` at {}: {}",
            self.table, self.key, self.detail
        )
    }
}

impl std::error::Error for CorruptRecord {}

impl From<CorruptRecord> for io::Error {
    fn from(corrupt: CorruptRecord) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, corrupt)
    }
}

/// Builds the [`io::Error`] for a record that failed a check.
pub(crate) fn corrupt(table: &'static str, key: RecordKey, detail: String) -> io::Error {
    CorruptRecord { table, key, detail }.into()
}

fn checksum(table: &'static str, key: RecordKey, version_and_payload: &[u8]) -> u32 {
    let seed = crc32c::crc32c(table.as_bytes());
    crc32c::crc32c_append(key.checksum(seed), version_and_payload)
}

/// Serializes `value` and frames it for `key` in `table`.
pub(crate) fn encode<T: Serialize>(
    table: &'static str,
    key: RecordKey,
    value: &T,
) -> io::Result<Vec<u8>> {
    let mut record = vec![0; HEADER_LEN];
    record[HEADER_LEN - 1] = FORMAT_VERSION;
    let mut record = postcard::to_extend(value, record).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot serialize record for redb table `{table}` at {key}: {e}"),
        )
    })?;
    let sum = checksum(table, key, &record[HEADER_LEN - 1..]);
    record[..HEADER_LEN - 1].copy_from_slice(&sum.to_le_bytes());
    Ok(record)
}

/// Whether `record` carries a matching checksum for `key` in `table` (without decoding it).
pub(crate) fn intact(table: &'static str, key: RecordKey, record: &[u8]) -> bool {
    if record.len() < HEADER_LEN {
        return false;
    }
    let (sum_bytes, version_and_payload) = record.split_at(HEADER_LEN - 1);
    let mut stored = [0; 4];
    stored.copy_from_slice(sum_bytes);
    u32::from_le_bytes(stored) == checksum(table, key, version_and_payload)
}

/// Checks and deserializes the record stored under `key` in `table`.
pub(crate) fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: RecordKey,
    record: &[u8],
) -> io::Result<T> {
    let fail = |detail: String| corrupt(table, key, detail);
    if record.len() < HEADER_LEN {
        return Err(fail(format!(
            "record is {} bytes, shorter than its {HEADER_LEN}-byte header",
            record.len()
        )));
    }
    let (sum_bytes, version_and_payload) = record.split_at(HEADER_LEN - 1);
    let mut stored = [0; 4];
    stored.copy_from_slice(sum_bytes);
    let stored = u32::from_le_bytes(stored);
    let computed = checksum(table, key, version_and_payload);
    if stored != computed {
        return Err(fail(format!(
            "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        )));
    }
    let (version, payload) = version_and_payload.split_at(1);
    if version[0] != FORMAT_VERSION {
        return Err(fail(format!(
            "unknown record format version {}",
            version[0]
        )));
    }
    let (value, rest) = postcard::take_from_bytes(payload)
        .map_err(|e| fail(format!("checksum matches but payload does not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(fail(format!(
            "{} trailing bytes after the payload",
            rest.len()
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "t";

    #[test]
    fn round_trips_and_rejects_every_damage() {
        let key = RecordKey::Index(7);
        let good = encode(TABLE, key, &(42_u64, "hello".to_string())).unwrap();
        let back: (u64, String) = decode(TABLE, key, &good).unwrap();
        assert_eq!(back, (42, "hello".to_string()));

        let mut flipped_payload = good.clone();
        *flipped_payload.last_mut().unwrap() ^= 0x01;
        let mut flipped_sum = good.clone();
        flipped_sum[0] ^= 0x80;
        let mut trailing = good.clone();
        trailing.push(0);
        let cases: [(&str, Vec<u8>, RecordKey, &str); 6] = [
            ("payload bit", flipped_payload, key, "checksum mismatch"),
            ("checksum bit", flipped_sum, key, "checksum mismatch"),
            ("short", good[..3].to_vec(), key, "shorter than"),
            ("empty", Vec::new(), key, "shorter than"),
            ("trailing byte", trailing, key, "checksum mismatch"),
            (
                "wrong key",
                good.clone(),
                RecordKey::Index(8),
                "checksum mismatch",
            ),
        ];
        for (name, bytes, key, want) in cases {
            let err = decode::<(u64, String)>(TABLE, key, &bytes).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{name}");
            assert!(err.to_string().contains(want), "{name}: {err}");
            let inner = err
                .get_ref()
                .and_then(|e| e.downcast_ref::<CorruptRecord>());
            assert_eq!(inner.map(|c| c.key), Some(key), "{name}");
        }
    }

    #[test]
    fn a_valid_checksum_over_an_undecodable_payload_is_still_corrupt() {
        let key = RecordKey::Meta("vote");
        // A correctly framed record whose payload is not a `String` (length prefix too long).
        let mut record = vec![0, 0, 0, 0, FORMAT_VERSION, 0x7f];
        let sum = checksum(TABLE, key, &record[HEADER_LEN - 1..]);
        record[..4].copy_from_slice(&sum.to_le_bytes());
        let err = decode::<String>(TABLE, key, &record).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("does not decode"), "{err}");
        assert!(err.to_string().contains("key `vote`"), "{err}");
    }
}
