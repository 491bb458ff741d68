//! Test scaffolding for the Raft log: a minimal type config, a minimal in-memory state machine
//! (openraft's storage suite exercises one next to the log) and a builder that opens the real
//! redb log store on a fresh temp-dir file for every suite case.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::TryStreamExt;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log::StoreBuilder;
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, StorageError};

use super::RedbLogStore;
use crate::RedbStore;

openraft::declare_raft_types!(
    /// Defaults throughout: `String` requests and responses, `u64` node ids and terms.
    pub(crate) TestConfig
);

/// State machine contents: only what the suite checks (no application data is applied).
#[derive(Default)]
struct Machine {
    last_applied: Option<LogIdOf<TestConfig>>,
    membership: StoredMembershipOf<TestConfig>,
    snapshot: Option<SnapshotMetaOf<TestConfig>>,
}

/// An in-memory state machine whose snapshots carry metadata only.
#[derive(Clone, Default)]
pub(crate) struct MemStateMachine(Arc<Mutex<Machine>>);

impl MemStateMachine {
    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.0.lock().unwrap()
    }
}

impl RaftSnapshotBuilder<TestConfig> for MemStateMachine {
    type SnapshotData = ();

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TestConfig, ()>, io::Error> {
        let mut machine = self.lock();
        let meta = SnapshotMetaOf::<TestConfig> {
            last_log_id: machine.last_applied,
            last_membership: machine.membership.clone(),
        };
        machine.snapshot = Some(meta.clone());
        Ok(SnapshotOf::<TestConfig, ()> { meta, snapshot: () })
    }
}

impl RaftStateMachine<TestConfig> for MemStateMachine {
    type SnapshotData = ();
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TestConfig>>, StoredMembershipOf<TestConfig>), io::Error> {
        let machine = self.lock();
        Ok((machine.last_applied, machine.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TestConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let mut machine = self.lock();
            machine.last_applied = Some(entry.log_id());
            if let Some(membership) = entry.get_membership() {
                machine.membership =
                    StoredMembershipOf::<TestConfig>::new(Some(entry.log_id()), membership);
            }
            drop(machine);
            if let Some(responder) = responder {
                responder.send(String::new());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TestConfig>,
        _snapshot: (),
    ) -> Result<(), io::Error> {
        let mut machine = self.lock();
        machine.last_applied = meta.last_log_id;
        machine.membership = meta.last_membership.clone();
        machine.snapshot = Some(meta.clone());
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TestConfig, ()>>, io::Error> {
        Ok(self
            .lock()
            .snapshot
            .clone()
            .map(|meta| SnapshotOf::<TestConfig, ()> { meta, snapshot: () }))
    }
}

/// Opens a node store on a fresh temp dir and hands out its Raft log: the real redb store, in
/// group-commit mode (on disk) or inline (opened with [`RedbLogStore::open`]).
pub(crate) struct RedbBuilder {
    pub(crate) group_commit: bool,
}

impl StoreBuilder<TestConfig, RedbLogStore<TestConfig>, MemStateMachine, tempfile::TempDir>
    for RedbBuilder
{
    async fn build(
        &self,
    ) -> Result<
        (tempfile::TempDir, RedbLogStore<TestConfig>, MemStateMachine),
        StorageError<TestConfig>,
    > {
        let io_error =
            |e: io::Error| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e);
        let dir = tempfile::tempdir().map_err(io_error)?;
        let store = RedbStore::open(dir.path()).map_err(|e| io_error(io::Error::other(e)))?;
        let log = if self.group_commit {
            store.raft_log_store()
        } else {
            RedbLogStore::open(store.database()).map_err(io_error)?
        };
        Ok((dir, log, MemStateMachine::default()))
    }
}
