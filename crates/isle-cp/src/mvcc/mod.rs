//! The deterministic CP state machine: etcd's MVCC plus leases, fenced locks and idempotency.
//!
//! [`StateMachine::apply`] is the only way state changes. It takes the Raft log index, the
//! command and the leader's wall time embedded in the entry, so every replica computes the
//! same state from the same log. Reads ([`StateMachine::range`], [`StateMachine::events_since`],
//! [`StateMachine::leases`], [`StateMachine::lock_owner`], [`StateMachine::fence_check`]) never
//! change it.

mod idempotency;
mod keyrange;
mod lease;
mod lock;
mod range;
mod snapshot;
mod store;
mod txn;
mod validate;
mod watch;
mod write;

use serde::{Deserialize, Serialize};

use crate::command::{Command, CompactRequest, CompactResponse, Request, Response};
use crate::error::CpError;
use idempotency::Dedup;
use lease::Leases;
use lock::Locks;
use store::Store;

/// Settings that are part of the replicated state: every replica must use the same values, so
/// they are stored in snapshots and `restore` takes them from there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// How long a request id's outcome is remembered (default 10 minutes).
    pub idempotency_ttl_ms: u64,
    /// Most request ids remembered; beyond it the oldest is forgotten first (default 100 000).
    pub idempotency_entries_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            idempotency_ttl_ms: 10 * 60 * 1000,
            idempotency_entries_max: 100_000,
        }
    }
}

/// The CP keyspace's replicated state. See the crate docs for the model and its invariants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateMachine {
    config: Config,
    last_applied: u64,
    store: Store,
    leases: Leases,
    locks: Locks,
    dedup: Dedup,
}

impl Default for StateMachine {
    fn default() -> Self {
        StateMachine::new(Config::default())
    }
}

impl StateMachine {
    /// An empty keyspace at revision 1 with nothing applied.
    pub fn new(config: Config) -> Self {
        StateMachine {
            config,
            last_applied: 0,
            store: Store::new(),
            leases: Leases::default(),
            locks: Locks::default(),
            dedup: Dedup::default(),
        }
    }

    /// Applies the command of log entry `log_index`, with the leader's wall time `now_unix_ms`.
    ///
    /// An index `<= last_applied` is refused with `StaleIndex` and changes nothing. Otherwise the
    /// index is consumed even if the command fails; a failed command changes nothing else
    /// (besides the idempotency record). A repeated request id returns the recorded outcome.
    pub fn apply(
        &mut self,
        log_index: u64,
        command: Command,
        now_unix_ms: u64,
    ) -> Result<Response, CpError> {
        self.advance(log_index)?;
        let before = (self.store.revision, self.store.compact_revision);
        let outcome = self.apply_advanced(command, now_unix_ms);
        // A command moves the revision by at most one (a transaction is one revision), and only
        // when it succeeds; the compaction point never passes the revision.
        let after = (self.store.revision, self.store.compact_revision);
        assert!(
            after.0 == before.0 || (after.0 == before.0 + 1 && outcome.is_ok()),
            "revision {} -> {} applying index {log_index} ({outcome:?})",
            before.0,
            after.0
        );
        assert!(before.1 <= after.1 && after.1 <= after.0);
        outcome
    }

    /// [`StateMachine::apply`] once the log index is consumed.
    fn apply_advanced(&mut self, command: Command, now_unix_ms: u64) -> Result<Response, CpError> {
        validate::request_id(command.request_id.as_ref())?;
        self.dedup.purge_expired(&self.config, now_unix_ms);
        let Command {
            request_id,
            request,
        } = command;
        let Some(id) = request_id else {
            return self.execute(request, now_unix_ms);
        };
        let fingerprint = idempotency::fingerprint(&request);
        if let Some(outcome) = self
            .dedup
            .lookup(&self.config, &id, fingerprint, now_unix_ms)
        {
            return outcome;
        }
        let outcome = self.execute(request, now_unix_ms);
        self.dedup
            .record(&self.config, id, fingerprint, outcome.clone(), now_unix_ms);
        outcome
    }

    /// Consumes a log entry that carries no command (blank or membership entry).
    pub fn apply_blank(&mut self, log_index: u64) -> Result<(), CpError> {
        self.advance(log_index)
    }

    fn advance(&mut self, log_index: u64) -> Result<(), CpError> {
        if log_index <= self.last_applied {
            return Err(CpError::StaleIndex {
                index: log_index,
                last_applied: self.last_applied,
            });
        }
        self.last_applied = log_index;
        Ok(())
    }

    fn execute(&mut self, request: Request, now_unix_ms: u64) -> Result<Response, CpError> {
        match request {
            Request::Put(put) => self.apply_put(put).map(Response::Put),
            Request::DeleteRange(delete) => self.apply_delete(delete).map(Response::DeleteRange),
            Request::Txn(txn) => self.apply_txn(txn).map(Response::Txn),
            Request::Compact(compact) => self.apply_compact(compact).map(Response::Compact),
            Request::LeaseGrant(grant) => self
                .apply_lease_grant(grant, now_unix_ms)
                .map(Response::LeaseGrant),
            Request::LeaseRevoke(revoke) => {
                self.apply_lease_revoke(revoke).map(Response::LeaseRevoke)
            }
            Request::LockAcquire(acquire) => {
                self.apply_lock_acquire(acquire).map(Response::LockAcquire)
            }
            Request::LockRelease(release) => {
                self.apply_lock_release(release).map(Response::LockRelease)
            }
        }
    }

    fn apply_compact(&mut self, request: CompactRequest) -> Result<CompactResponse, CpError> {
        if request.revision <= self.store.compact_revision {
            return Err(CpError::Compacted {
                requested: request.revision,
                compacted: self.store.compact_revision,
            });
        }
        if request.revision > self.store.revision {
            return Err(CpError::FutureRevision {
                requested: request.revision,
                current: self.store.revision,
            });
        }
        self.store.compact(request.revision);
        Ok(CompactResponse {
            header_revision: self.store.revision,
        })
    }

    /// The log index of the last entry applied (0 for a fresh state machine).
    pub fn last_applied(&self) -> u64 {
        self.last_applied
    }

    /// The current cluster revision (1 for an empty store).
    pub fn revision(&self) -> i64 {
        self.store.revision
    }

    /// The compaction point: reads and watches below it fail with `Compacted` (0 = none yet).
    pub fn compact_revision(&self) -> i64 {
        self.store.compact_revision
    }

    /// The replicated configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of request ids currently remembered.
    pub fn idempotency_entries(&self) -> usize {
        self.dedup.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::PutRequest;

    #[test]
    fn compaction_bounds() {
        let mut sm = StateMachine::default();
        for index in 1..=3 {
            sm.apply(index, Command::new(PutRequest::new(b"k", b"v")), 0)
                .expect("put");
        }
        // revision is now 4; (requested, outcome)
        let cases = [
            (
                5,
                Err(CpError::FutureRevision {
                    requested: 5,
                    current: 4,
                }),
            ),
            (3, Ok(4)),
            (
                3,
                Err(CpError::Compacted {
                    requested: 3,
                    compacted: 3,
                }),
            ),
            (
                2,
                Err(CpError::Compacted {
                    requested: 2,
                    compacted: 3,
                }),
            ),
            (4, Ok(4)),
        ];
        for (offset, (revision, expected)) in cases.into_iter().enumerate() {
            let command = Command::new(CompactRequest { revision });
            let outcome = sm.apply(10 + offset as u64, command, 0);
            assert_eq!(
                outcome.map(|r| r.header_revision()),
                expected,
                "compact {revision}"
            );
        }
        assert_eq!((sm.revision(), sm.compact_revision()), (4, 4));
    }

    #[test]
    fn a_bad_request_id_still_consumes_the_index() {
        let mut sm = StateMachine::default();
        let command = Command::new(PutRequest::new(b"k", b"v")).with_request_id("");
        assert!(matches!(
            sm.apply(1, command, 0),
            Err(CpError::InvalidRequest { .. })
        ));
        assert_eq!((sm.last_applied(), sm.revision()), (1, 1));
    }
}
