//! Watch support: the history's events from a revision on, in commit order.
//!
//! A watcher that has seen every event up to revision `r` asks again from `r + 1` and gets
//! exactly the events after it — none skipped, none repeated — across leader changes, since
//! the history is replicated state. A batch never splits a revision, so "last event's
//! `mod_revision` + 1" is always a correct resume point.

use crate::command::{Event, EventKind, KeyValue};
use crate::error::CpError;

use super::StateMachine;
use super::keyrange::KeyRange;
use super::store::{Entry, Revision, to_kv};

impl StateMachine {
    /// Events on keys in `[key, range_end)` (etcd conventions) with revision `>= start_revision`.
    ///
    /// `limit` 0 means no limit; otherwise the batch stops at the first revision boundary at or
    /// after `limit` events (one revision with more events is returned whole). A start of 0 or
    /// beyond the current revision yields nothing yet; below the compaction point, `Compacted`.
    pub fn events_since(
        &self,
        start_revision: i64,
        key: &[u8],
        range_end: &[u8],
        limit: usize,
    ) -> Result<Vec<Event>, CpError> {
        super::validate::key(key, range_end)?;
        if start_revision > 0 && start_revision < self.store.compact_revision {
            return Err(CpError::Compacted {
                requested: start_revision,
                compacted: self.store.compact_revision,
            });
        }
        if start_revision <= 0 {
            return Ok(Vec::new());
        }
        let range = KeyRange::new(key, range_end);
        let from = Revision {
            main: start_revision,
            sub: 0,
        };
        let mut events: Vec<Event> = Vec::new();
        for (revision, event_key) in self.store.by_revision.range(from..) {
            if !range.contains(event_key) {
                continue;
            }
            let full = limit > 0 && events.len() >= limit;
            if full
                && events
                    .last()
                    .is_some_and(|e| e.kv.mod_revision != revision.main)
            {
                break;
            }
            if let Some(event) = self.event(event_key, *revision) {
                events.push(event);
            }
        }
        Ok(events)
    }

    fn event(&self, key: &[u8], revision: Revision) -> Option<Event> {
        let prev_kv = self.store.before(key, revision);
        let (kind, kv) = match self.store.entry(key, revision)? {
            Entry::Put(stored) => (EventKind::Put, to_kv(key, revision, stored)),
            Entry::Tombstone => {
                let kv = KeyValue {
                    key: key.to_vec(),
                    mod_revision: revision.main,
                    ..KeyValue::default()
                };
                (EventKind::Delete, kv)
            }
        };
        Some(Event { kind, kv, prev_kv })
    }
}

#[cfg(test)]
mod tests {
    use crate::command::{
        Command, CompactRequest, DeleteRangeRequest, EventKind, Op, PutRequest, TxnRequest,
    };
    use crate::error::CpError;
    use crate::mvcc::StateMachine;

    fn machine() -> StateMachine {
        let mut sm = StateMachine::default();
        let txn = TxnRequest {
            success: vec![
                Op::Put(PutRequest::new(b"w/b", b"1")),
                Op::Put(PutRequest::new(b"w/c", b"1")),
            ],
            ..TxnRequest::default()
        };
        let commands = [
            Command::new(PutRequest::new(b"w/a", b"1")),   // 2
            Command::new(PutRequest::new(b"x", b"1")),     // 3
            Command::new(txn),                             // 4 (two events)
            Command::new(PutRequest::new(b"w/a", b"2")),   // 5
            Command::new(DeleteRangeRequest::key(b"w/a")), // 6
        ];
        for (index, command) in commands.into_iter().enumerate() {
            sm.apply(index as u64 + 1, command, 0).expect("apply");
        }
        sm
    }

    #[test]
    fn resume_from_last_seen_without_gaps_or_duplicates() {
        let sm = machine();
        let all = sm.events_since(1, b"w/", b"w0", 0).expect("events");
        let revisions: Vec<_> = all.iter().map(|e| e.kv.mod_revision).collect();
        assert_eq!(revisions, vec![2, 4, 4, 5, 6]);
        for limit in 1..=6 {
            let mut seen = Vec::new();
            let mut start = 1;
            loop {
                let batch = sm.events_since(start, b"w/", b"w0", limit).expect("events");
                let Some(last) = batch.last() else { break };
                start = last.kv.mod_revision + 1;
                seen.extend(batch);
            }
            assert_eq!(seen, all, "limit {limit}");
        }
    }

    #[test]
    fn events_carry_kind_and_prev_kv() {
        let sm = machine();
        let events = sm.events_since(5, b"w/a", b"", 0).expect("events");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].kind, EventKind::Put);
        assert_eq!(
            events[0].prev_kv.as_ref().map(|kv| kv.mod_revision),
            Some(2)
        );
        assert_eq!(events[1].kind, EventKind::Delete);
        assert_eq!((events[1].kv.mod_revision, events[1].kv.version), (6, 0));
        assert_eq!(
            events[1].prev_kv.as_ref().map(|kv| kv.value.clone()),
            Some(b"2".to_vec())
        );
        assert!(
            sm.events_since(7, b"w/a", b"", 0)
                .expect("events")
                .is_empty()
        );
    }

    #[test]
    fn compacted_start_is_an_error_and_compaction_point_is_complete() {
        let mut sm = machine();
        sm.apply(10, Command::new(CompactRequest { revision: 5 }), 0)
            .expect("compact");
        assert_eq!(
            sm.events_since(4, b"w/", b"w0", 0),
            Err(CpError::Compacted {
                requested: 4,
                compacted: 5
            })
        );
        let events = sm.events_since(5, b"w/", b"w0", 0).expect("events");
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0].prev_kv.as_ref().map(|kv| kv.mod_revision),
            Some(2),
            "prev survives"
        );
    }
}
