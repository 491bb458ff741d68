//! `RaftStateMachine` over the pure [`StateMachine`]: applies entries, builds and installs
//! snapshots, and persists the latest snapshot through a [`SnapshotStore`].
//!
//! The applied state lives in memory; the Raft log is durable. After a restart the latest
//! snapshot is restored and openraft re-applies the committed entries after it, so nothing
//! acknowledged is lost and the state machine never has to fsync on its own.

use std::io;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures_util::TryStreamExt;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{
    EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf,
};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};

use super::types::{Applied, CpTypes};
use crate::{Config, StateMachine};

/// Durable home of the latest snapshot (a redb table on a node, memory in simulation).
pub trait SnapshotStore: Send + Sync + 'static {
    /// Replaces the stored snapshot; durable when it returns.
    fn save_snapshot(&self, snapshot: &StoredSnapshot) -> io::Result<()>;
    /// The stored snapshot, if any.
    fn load_snapshot(&self) -> io::Result<Option<StoredSnapshot>>;
}

/// A snapshot as stored and shipped: Raft's metadata and the state machine's bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// Last log id and membership covered.
    pub meta: SnapshotMetaOf<CpTypes>,
    /// [`StateMachine::snapshot`] bytes.
    pub data: Vec<u8>,
}

/// The state shared between the Raft adapter (writes) and the read path (queries).
#[derive(Debug)]
pub struct Replica {
    /// The deterministic MVCC state machine.
    pub machine: StateMachine,
    /// The last log id applied (or restored from a snapshot).
    pub last_applied: Option<LogIdOf<CpTypes>>,
    /// The last membership applied.
    pub membership: StoredMembershipOf<CpTypes>,
}

/// A cheap handle on the replica's state for readers (range, watch, fence checks).
#[derive(Debug, Clone)]
pub struct SharedState(Arc<RwLock<Replica>>);

impl SharedState {
    /// Read access; a poisoned lock still yields the data (the writer never leaves it torn:
    /// each apply replaces fields only after the state machine call returned).
    pub fn read(&self) -> RwLockReadGuard<'_, Replica> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Replica> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The openraft state machine of one node.
#[derive(Clone)]
pub struct CpStateMachine {
    state: SharedState,
    snapshots: Arc<dyn SnapshotStore>,
}

impl std::fmt::Debug for CpStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpStateMachine").finish_non_exhaustive()
    }
}

/// Runs `work` (encoding a snapshot, a durable save) on tokio's blocking pool under a
/// multi-threaded runtime: with 2 cores, a worker blocked for the hundreds of milliseconds a
/// large snapshot takes stalls every request queued behind it (a 750 ms p99 at 256 clients).
/// Inline under a current-thread runtime, so a simulation stays deterministic.
async fn off_the_workers<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread => {
            tokio::task::spawn_blocking(work)
                .await
                .map_err(|e| io::Error::other(format!("snapshot task failed: {e}")))?
        }
        _ => work(),
    }
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl CpStateMachine {
    /// Opens the state machine from the stored snapshot, or empty.
    pub fn open(config: Config, snapshots: Arc<dyn SnapshotStore>) -> io::Result<Self> {
        let replica = match snapshots.load_snapshot()? {
            Some(stored) => Replica {
                machine: StateMachine::restore(&stored.data)
                    .map_err(|e| invalid(format!("stored CP snapshot: {e}")))?,
                last_applied: stored.meta.last_log_id,
                membership: stored.meta.last_membership,
            },
            None => Replica {
                machine: StateMachine::new(config),
                last_applied: None,
                membership: StoredMembershipOf::<CpTypes>::default(),
            },
        };
        let state = SharedState(Arc::new(RwLock::new(replica)));
        Ok(CpStateMachine { state, snapshots })
    }

    /// The handle readers use.
    pub fn shared(&self) -> SharedState {
        self.state.clone()
    }

    /// Applies one entry, taking it by value so its command moves into the state machine
    /// rather than being copied.
    fn apply_one(&self, entry: EntryOf<CpTypes>) -> Applied {
        let log_id = entry.log_id();
        let membership = entry.get_membership();
        let mut replica = self.state.write();
        let index = log_id.index;
        let outcome = match entry.payload {
            EntryPayload::Normal(proposal) => Applied::Command(replica.machine.apply(
                index,
                proposal.command,
                proposal.proposed_unix_ms,
            )),
            EntryPayload::Blank | EntryPayload::Membership(_) => {
                Applied::Internal(replica.machine.apply_blank(index))
            }
        };
        if let Some(membership) = membership {
            replica.membership = StoredMembershipOf::<CpTypes>::new(Some(log_id), membership);
        }
        replica.last_applied = Some(log_id);
        outcome
    }
}

impl RaftSnapshotBuilder<CpTypes> for CpStateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<CpTypes, Vec<u8>>, io::Error> {
        // Clone under the lock and encode outside it: applies (and so client writes) wait only
        // for the copy, not for the encoding and the durable save.
        let (meta, machine) = {
            let replica = self.state.read();
            let meta = SnapshotMetaOf::<CpTypes> {
                last_log_id: replica.last_applied,
                last_membership: replica.membership.clone(),
            };
            (meta, replica.machine.clone())
        };
        let snapshots = Arc::clone(&self.snapshots);
        let stored = off_the_workers(move || {
            let stored = StoredSnapshot {
                meta,
                data: machine.snapshot(),
            };
            drop(machine);
            snapshots.save_snapshot(&stored)?;
            tracing::info!(
                index = stored.meta.last_log_id.map(|id| id.index),
                bytes = stored.data.len(),
                "CP snapshot taken"
            );
            Ok(stored)
        })
        .await?;
        Ok(SnapshotOf::<CpTypes, Vec<u8>> {
            meta: stored.meta,
            snapshot: stored.data,
        })
    }
}

impl RaftStateMachine<CpTypes> for CpStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<CpTypes>>, StoredMembershipOf<CpTypes>), io::Error> {
        let replica = self.state.read();
        Ok((replica.last_applied, replica.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<CpTypes>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let applied = self.apply_one(entry);
            if let Some(responder) = responder {
                responder.send(applied);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<CpTypes>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let machine = StateMachine::restore(&snapshot)
            .map_err(|e| invalid(format!("received CP snapshot: {e}")))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot,
        };
        self.snapshots.save_snapshot(&stored)?;
        let mut replica = self.state.write();
        replica.machine = machine;
        replica.last_applied = meta.last_log_id;
        replica.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<CpTypes, Vec<u8>>>, io::Error> {
        Ok(self
            .snapshots
            .load_snapshot()?
            .map(|stored| SnapshotOf::<CpTypes, Vec<u8>> {
                meta: stored.meta,
                snapshot: stored.data,
            }))
    }
}
