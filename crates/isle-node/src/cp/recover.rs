//! Recovery after a permanent loss of quorum — Isle's `etcd --force-new-cluster`.
//!
//! Run offline (the node stopped) on the survivor with the most up-to-date log. It appends, as
//! if this node had become leader of a new term, a membership entry naming this node as the
//! only voter, so that on restart it forms a one-node group on its own and commits that entry.
//! The other survivors are then wiped and re-added with `isle member add ID --promote`.
//!
//! What may be lost, plainly: entries that never reached this node's log are gone (including
//! acknowledged ones, if the lost nodes held the only copies — choose the survivor with the
//! highest last log index); entries in this node's log that were appended but not yet committed
//! become committed, so a write whose client saw a timeout may turn out applied.

use std::collections::{BTreeMap, BTreeSet};

use isle_cp::raft::CpTypes;
use isle_storage::RedbStore;
use isle_types::NodeId;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::vote::RaftLeaderId;
use openraft::{BasicNode, EntryPayload, Membership};
use serde::Serialize;

/// What the recovery did, for the operator.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryReport {
    /// The node that is now the sole voter.
    pub node: u64,
    /// The term the recovery entry was written in.
    pub term: u64,
    /// The log index of the recovery entry.
    pub index: u64,
    /// The last index this node had committed before.
    pub previously_committed: Option<u64>,
    /// The last index in its log before (entries between the two will be committed).
    pub previous_last_index: Option<u64>,
}

/// Rewrites the membership of the CP group in `store` to `{me}` (see the module docs).
pub async fn force_new_cluster(
    store: &RedbStore,
    me: NodeId,
    peer_addr: String,
) -> Result<RecoveryReport, String> {
    let mut log = store.raft_log_store::<CpTypes>();
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let state = log
        .get_log_state()
        .await
        .map_err(|e| io("reading the log state", e))?;
    let vote: Option<VoteOf<CpTypes>> = log
        .read_vote()
        .await
        .map_err(|e| io("reading the vote", e))?;
    let committed = log
        .read_committed()
        .await
        .map_err(|e| io("reading the commit point", e))?;
    let last: Option<LogIdOf<CpTypes>> = state.last_log_id;
    let Some(last) = last else {
        return Err("this data dir has no CP log: nothing to recover".into());
    };
    let vote_term = vote.as_ref().map(|v| v.leader_id().term()).unwrap_or(0);
    let term = vote_term.max(last.leader_id.term()) + 1;
    let index = last.index + 1;
    let leader = openraft::impls::leader_id_adv::LeaderId::new(term, me.0);
    let voters = BTreeSet::from([me.0]);
    let nodes = BTreeMap::from([(me.0, BasicNode { addr: peer_addr })]);
    let membership = Membership::new(vec![voters], nodes)
        .map_err(|e| format!("building the membership: {e}"))?;
    let entry = EntryOf::<CpTypes>::new(
        openraft::LogId::new(leader, index),
        EntryPayload::Membership(membership),
    );
    log.save_vote(&VoteOf::<CpTypes>::new_committed(term, me.0))
        .await
        .map_err(|e| io("saving the vote", e))?;
    // On disk an append returns before its fsync: wait for the flush before reporting done.
    let (flushed_tx, flushed_rx) = <CpTypes as openraft::type_config::TypeConfigExt>::oneshot();
    let callback = IOFlushed::<CpTypes>::signal(flushed_tx);
    log.append([entry], callback)
        .await
        .map_err(|e| io("appending the recovery entry", e))?;
    flushed_rx
        .await
        .map_err(|_| "the log's flusher stopped before the recovery entry was durable".to_string())?
        .map_err(|e| io("flushing the recovery entry", e))?;
    Ok(RecoveryReport {
        node: me.0,
        term,
        index,
        previously_committed: committed.map(|id| id.index),
        previous_last_index: Some(last.index),
    })
}
