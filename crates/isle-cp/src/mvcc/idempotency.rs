//! The replicated de-duplication table: request id → (fingerprint, outcome, applied time).
//!
//! Lives in the state machine, so a retry through any node, before or after a leader change
//! or restart, finds the original outcome (errors included). Entries expire `idempotency_ttl_ms`
//! after the leader time of the entry that recorded them; `apply` purges at most
//! `IDEMPOTENCY_PURGE_PER_APPLY_MAX` expired entries per call (oldest first), and a lookup
//! ignores an expired entry that is not purged yet, so the outcome does not depend on purge
//! progress. The table holds at most `idempotency_entries_max` entries, evicting the oldest.

use imbl::{OrdMap, OrdSet};

use serde::{Deserialize, Serialize};

use crate::command::{Request, RequestId, Response};
use crate::error::CpError;
use crate::limits::IDEMPOTENCY_PURGE_PER_APPLY_MAX;

use super::Config;

/// A checksum of the request, to catch one id reused for a different request.
pub(crate) fn fingerprint(request: &Request) -> u32 {
    let bytes = postcard::to_allocvec(request).unwrap_or_default();
    crc32c::crc32c(&bytes)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Recorded {
    fingerprint: u32,
    applied_unix_ms: u64,
    outcome: Result<Response, CpError>,
}

/// The table, plus an index by applied time for purging and eviction in order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct Dedup {
    // Persistent maps, like the store's: a snapshot's copy of them is O(1).
    entries: OrdMap<RequestId, Recorded>,
    by_time: OrdSet<(u64, RequestId)>,
}

fn expired(config: &Config, applied_unix_ms: u64, now_unix_ms: u64) -> bool {
    now_unix_ms >= applied_unix_ms.saturating_add(config.idempotency_ttl_ms)
}

impl Dedup {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The recorded outcome for `id`, unless absent or expired. A different request under the
    /// same id gets `RequestIdConflict`.
    pub(crate) fn lookup(
        &self,
        config: &Config,
        id: &RequestId,
        fingerprint: u32,
        now_unix_ms: u64,
    ) -> Option<Result<Response, CpError>> {
        let recorded = self.entries.get(id)?;
        if expired(config, recorded.applied_unix_ms, now_unix_ms) {
            return None;
        }
        if recorded.fingerprint != fingerprint {
            return Some(Err(CpError::RequestIdConflict));
        }
        Some(recorded.outcome.clone())
    }

    pub(crate) fn record(
        &mut self,
        config: &Config,
        id: RequestId,
        fingerprint: u32,
        outcome: Result<Response, CpError>,
        now_unix_ms: u64,
    ) {
        self.remove(&id);
        while self.entries.len() >= config.idempotency_entries_max.max(1) {
            let Some((_, oldest)) = self.by_time.get_min().cloned() else {
                break;
            };
            self.remove(&oldest);
        }
        self.by_time.insert((now_unix_ms, id.clone()));
        let recorded = Recorded {
            fingerprint,
            applied_unix_ms: now_unix_ms,
            outcome,
        };
        self.entries.insert(id, recorded);
    }

    /// Drops up to `IDEMPOTENCY_PURGE_PER_APPLY_MAX` expired entries, oldest first.
    pub(crate) fn purge_expired(&mut self, config: &Config, now_unix_ms: u64) {
        for _ in 0..IDEMPOTENCY_PURGE_PER_APPLY_MAX {
            match self.by_time.get_min() {
                Some((applied, id)) if expired(config, *applied, now_unix_ms) => {
                    let id = id.clone();
                    self.remove(&id);
                }
                _ => break,
            }
        }
    }

    fn remove(&mut self, id: &RequestId) {
        if let Some(recorded) = self.entries.remove(id) {
            self.by_time.remove(&(recorded.applied_unix_ms, id.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::command::{Command, Fence, PutRequest, RangeRequest};
    use crate::error::CpError;
    use crate::mvcc::{Config, StateMachine};

    const TTL_MS: u64 = 1_000;

    fn machine() -> StateMachine {
        StateMachine::new(Config {
            idempotency_ttl_ms: TTL_MS,
            idempotency_entries_max: 3,
        })
    }

    fn put(value: &[u8], id: &str) -> Command {
        Command::new(PutRequest::new(b"k", value)).with_request_id(id)
    }

    #[test]
    fn a_repeat_returns_the_recorded_response_and_changes_nothing() {
        let mut sm = machine();
        let first = sm.apply(1, put(b"1", "c:1"), 0).expect("put");
        let before = sm.range(&RangeRequest::key(b"k")).expect("range");
        let again = sm.apply(2, put(b"1", "c:1"), 500).expect("retry");
        assert_eq!(again, first);
        assert_eq!(sm.range(&RangeRequest::key(b"k")).expect("range"), before);
        assert_eq!(sm.last_applied(), 2);
        assert_eq!(
            sm.apply(3, put(b"2", "c:1"), 600),
            Err(CpError::RequestIdConflict)
        );
        assert_eq!(sm.revision(), 2);
    }

    #[test]
    fn errors_are_recorded_too() {
        let mut sm = machine();
        let fence = Some(Fence {
            lock: "l".into(),
            token: 4,
        });
        let fenced = Command::new(PutRequest {
            fence,
            ..PutRequest::new(b"k", b"v")
        });
        let first = sm.apply(1, fenced.clone().with_request_id("x"), 0);
        assert_eq!(
            first,
            Err(CpError::FencingTokenUnknown {
                presented: 4,
                current: 0
            })
        );
        assert_eq!(sm.apply(2, fenced.with_request_id("x"), 1), first);
        assert_eq!(sm.idempotency_entries(), 1);
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let mut sm = machine();
        sm.apply(1, put(b"1", "a"), 0).expect("put");
        // (index, now, applied again?)
        let steps = [(2, TTL_MS - 1, false), (3, TTL_MS, true)];
        for (index, now, applied) in steps {
            let before = sm.revision();
            sm.apply(index, put(b"1", "a"), now).expect("put");
            assert_eq!(sm.revision() > before, applied, "at {now}ms");
        }
        sm.apply(4, put(b"2", "b"), 3 * TTL_MS).expect("put");
        assert_eq!(
            sm.idempotency_entries(),
            1,
            "expired entries purged during apply"
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let mut sm = machine();
        for (index, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
            sm.apply(index as u64 + 1, put(id.as_bytes(), id), index as u64)
                .expect("put");
        }
        assert_eq!(sm.idempotency_entries(), 3);
        let revision = sm.revision();
        sm.apply(5, put(b"a", "a"), 10)
            .expect("re-applied: evicted");
        assert_eq!(sm.revision(), revision + 1);
    }
}
