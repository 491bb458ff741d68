//! Runtime membership of the CP Raft group: add a learner, promote it to voter, remove a
//! voter. Changes run on the leader (forwarded there) through openraft's joint consensus.

use std::collections::BTreeSet;

use isle_types::NodeId;
use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};

use super::{Cp, CpRequestError};
use crate::message::{RpcReply, RpcRequest};

/// One membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Start replicating to a node (it must be a known cluster member) without a vote.
    AddLearner(u64),
    /// Make a caught-up learner a voter.
    Promote(u64),
    /// Take a voter out of the group (it stops counting toward quorum).
    Remove(u64),
}

/// The group's membership as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Voters.
    pub voters: Vec<u64>,
    /// Learners (replicated to, not voting).
    pub learners: Vec<u64>,
}

impl Cp {
    /// The current membership.
    pub fn membership(&self) -> Membership {
        let metrics = self.inner.raft.server_metrics();
        let metrics = metrics.borrow_watched();
        let config = metrics.membership_config.membership();
        Membership {
            voters: config.voter_ids().collect(),
            learners: config.learner_ids().collect(),
        }
    }

    /// Applies a membership change on the leader (forwarding if need be).
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<Membership, CpRequestError> {
        self.check_quorum()?;
        let timeout = self.timeout();
        let leader = self.leader(timeout).await?;
        if leader == self.inner.me.0 {
            return self.change_as_leader(change).await;
        }
        let request = RpcRequest::Membership(change);
        match self
            .inner
            .rpc
            .request(NodeId(leader), request, timeout)
            .await
        {
            Ok(RpcReply::Membership(result)) => result,
            Ok(other) => Err(CpRequestError::Internal(format!(
                "mismatched reply {other:?}"
            ))),
            Err(failure) => Err(CpRequestError::NoLeader {
                detail: failure.to_string(),
            }),
        }
    }

    /// Runs a change on this node, which must be the leader.
    pub(crate) async fn change_as_leader(
        &self,
        change: MembershipChange,
    ) -> Result<Membership, CpRequestError> {
        if self.current_leader() != Some(self.inner.me.0) {
            return Err(CpRequestError::NoLeader {
                detail: "membership change at a non-leader".into(),
            });
        }
        let raft = &self.inner.raft;
        let result = match change {
            MembershipChange::AddLearner(id) => {
                let Some(addr) = self.inner.rpc.address(NodeId(id)) else {
                    return Err(CpRequestError::UnknownMember { id });
                };
                raft.add_learner(id, BasicNode { addr }, true)
                    .await
                    .map(|_| ())
            }
            MembershipChange::Promote(id) => raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map(|_| ()),
            MembershipChange::Remove(id) => raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map(|_| ()),
        };
        result.map_err(|err| CpRequestError::Internal(format!("membership change: {err}")))?;
        Ok(self.membership())
    }
}
