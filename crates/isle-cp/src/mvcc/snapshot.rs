//! Snapshots: the whole state, checksummed, so a lagging node can install it.
//!
//! Layout: `b"ISCP"`, a format version byte, the crc32c of the payload (u32 little-endian),
//! then the postcard payload. Every map is a `BTreeMap`, so equal states give equal bytes.
//! `restore` checks all of it, then the cross-index invariants, and never panics on bad input.

use serde::{Deserialize, Serialize};

use crate::error::CpError;

use super::StateMachine;
use super::store::Entry;

const MAGIC: [u8; 4] = *b"ISCP";
const FORMAT_VERSION: u8 = 1;
const HEADER_BYTES: usize = MAGIC.len() + 1 + 4;

/// The payload, versioned separately from the in-memory struct so the format is explicit.
#[derive(Serialize, Deserialize)]
struct Payload {
    state: StateMachine,
}

impl StateMachine {
    /// Encodes the whole state (including `last_applied` and the config).
    pub fn snapshot(&self) -> Vec<u8> {
        let payload = postcard::to_allocvec(&PayloadRef { state: self })
            .expect("invariant: every state type is postcard-encodable");
        let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
        bytes.extend_from_slice(&MAGIC);
        bytes.push(FORMAT_VERSION);
        bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        bytes
    }

    /// Decodes and checks a snapshot; anything wrong is `CorruptSnapshot`.
    pub fn restore(bytes: &[u8]) -> Result<Self, CpError> {
        let corrupt = |reason: String| CpError::CorruptSnapshot { reason };
        if bytes.len() < HEADER_BYTES {
            return Err(corrupt(format!(
                "{} bytes is shorter than the header",
                bytes.len()
            )));
        }
        let (header, payload) = bytes.split_at(HEADER_BYTES);
        if header[..4] != MAGIC {
            return Err(corrupt("not an Isle CP snapshot (bad magic)".into()));
        }
        if header[4] != FORMAT_VERSION {
            return Err(corrupt(format!("unknown format version {}", header[4])));
        }
        let expected = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
        if crc32c::crc32c(payload) != expected {
            return Err(corrupt("checksum mismatch".into()));
        }
        let decoded: Payload =
            postcard::from_bytes(payload).map_err(|e| corrupt(format!("undecodable: {e}")))?;
        decoded.state.check_invariants().map_err(corrupt)?;
        Ok(decoded.state)
    }

    /// A digest of the whole state: equal digests mean (with crc32c's odds) equal states.
    pub fn digest(&self) -> u32 {
        crc32c::crc32c(&self.snapshot())
    }

    /// The invariants the rest of the code relies on, checked on untrusted state.
    fn check_invariants(&self) -> Result<(), String> {
        let store = &self.store;
        if store.revision < 1 || store.compact_revision > store.revision {
            return Err(format!(
                "revision {} / compaction point {} out of order",
                store.revision, store.compact_revision
            ));
        }
        for (revision, key) in &store.by_revision {
            if revision.main > store.revision || store.entry(key, *revision).is_none() {
                return Err(format!(
                    "watch index entry {revision:?} has no history entry"
                ));
            }
        }
        for (key, versions) in &store.history {
            for revision in versions.keys().filter(|r| r.main >= store.compact_revision) {
                if store.by_revision.get(revision) != Some(key) {
                    return Err(format!(
                        "history entry {revision:?} missing from watch index"
                    ));
                }
            }
            if let Some((_, Entry::Put(stored))) = versions.get_max() {
                let attached = self.leases.leases.get(&stored.lease);
                let consistent = match attached {
                    Some(lease) => lease.keys.contains(key),
                    None => stored.lease == 0,
                };
                if !consistent {
                    return Err(format!("live key's lease {} is not attached", stored.lease));
                }
            }
        }
        Ok(())
    }
}

/// Borrowing twin of `Payload`, so encoding does not clone the state.
#[derive(Serialize)]
struct PayloadRef<'a> {
    state: &'a StateMachine,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, LeaseGrantRequest, LockAcquireRequest, PutRequest};

    fn machine() -> StateMachine {
        let mut sm = StateMachine::default();
        let commands = [
            Command::new(LeaseGrantRequest { id: 0, ttl_secs: 5 }),
            Command::new(LockAcquireRequest {
                name: "l".into(),
                lease: 1,
            }),
            Command::new(PutRequest {
                lease: 1,
                ..PutRequest::new(b"a", b"1")
            })
            .with_request_id("r1"),
            Command::new(PutRequest::new(b"b", b"2")),
        ];
        for (index, command) in commands.into_iter().enumerate() {
            sm.apply(index as u64 + 1, command, 7).expect("apply");
        }
        sm
    }

    #[test]
    fn round_trip_is_identical() {
        let sm = machine();
        let bytes = sm.snapshot();
        let restored = StateMachine::restore(&bytes).expect("restore");
        assert_eq!(restored, sm);
        assert_eq!(restored.snapshot(), bytes);
        assert_eq!(restored.digest(), sm.digest());
        assert_eq!(restored.last_applied(), 4);
        assert_eq!(restored.highest_granted("l"), 2);
    }

    #[test]
    fn corrupt_bytes_are_refused() {
        let bytes = machine().snapshot();
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        let mut version = bytes.clone();
        version[4] = 9;
        let mut magic = bytes.clone();
        magic[0] = b'X';
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("short", bytes[..5].to_vec()),
            ("flipped payload bit", flipped),
            ("unknown version", version),
            ("bad magic", magic),
            ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ];
        for (name, bytes) in cases {
            let outcome = StateMachine::restore(&bytes);
            assert!(
                matches!(outcome, Err(CpError::CorruptSnapshot { .. })),
                "{name}: {outcome:?}"
            );
        }
    }

    #[test]
    fn valid_checksum_over_garbage_is_refused() {
        let garbage = vec![0xff_u8; 64];
        let mut bytes = MAGIC.to_vec();
        bytes.push(FORMAT_VERSION);
        bytes.extend_from_slice(&crc32c::crc32c(&garbage).to_le_bytes());
        bytes.extend_from_slice(&garbage);
        assert!(matches!(
            StateMachine::restore(&bytes),
            Err(CpError::CorruptSnapshot { .. })
        ));
    }
}
