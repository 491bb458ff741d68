//! `etcdserverpb.Cluster` (MemberList) and `etcdserverpb.Maintenance` (Status, Alarm): enough
//! for `etcdctl member list` and `etcdctl endpoint status/health`.

use super::convert::ETCD_NO_LEADER;
use super::rpc::cluster_server::Cluster;
use super::rpc::maintenance_server::Maintenance;
use super::{Etcd, Reply, VERSION, reply, rpc};

/// The Cluster service.
pub(crate) struct ClusterService(pub(crate) Etcd);

/// The Maintenance service.
pub(crate) struct MaintenanceService(pub(crate) Etcd);

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        _request: tonic::Request<rpc::MemberListRequest>,
    ) -> Reply<rpc::MemberListResponse> {
        let etcd = &self.0;
        let voters = etcd.node.cp.raft_status().voters;
        let status = etcd.node.status.borrow().clone();
        let me = rpc::Member {
            id: status.node.0,
            name: format!("isle-{}", status.node.0),
            peer_ur_ls: vec![format!("http://{}", status.peer_addr)],
            client_ur_ls: vec![etcd.client_url.clone()],
            is_learner: !voters.is_empty() && !voters.contains(&status.node.0),
        };
        // Peers gossip their gRPC address; one that serves none is listed without client URLs,
        // as etcd lists a member that has not started.
        let peers = status.peers.iter().map(|peer| rpc::Member {
            id: peer.id.0,
            name: format!("isle-{}", peer.id.0),
            peer_ur_ls: vec![format!("http://{}", peer.peer_addr)],
            client_ur_ls: peer
                .grpc_addr
                .iter()
                .map(|addr| format!("http://{addr}"))
                .collect(),
            is_learner: !voters.is_empty() && !voters.contains(&peer.id.0),
        });
        let mut members: Vec<rpc::Member> = std::iter::once(me).chain(peers).collect();
        members.sort_by_key(|member| member.id);
        reply(rpc::MemberListResponse {
            header: Some(etcd.header_now()),
            members,
        })
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        _request: tonic::Request<rpc::AlarmRequest>,
    ) -> Reply<rpc::AlarmResponse> {
        // Isle raises no etcd alarms (no space quota, no corruption alarm).
        reply(rpc::AlarmResponse {
            header: Some(self.0.header_now()),
            alarms: Vec::new(),
        })
    }

    async fn status(
        &self,
        _request: tonic::Request<rpc::StatusRequest>,
    ) -> Reply<rpc::StatusResponse> {
        let raft = self.0.node.cp.raft_status();
        let me = self.0.member_id();
        let mut errors = Vec::new();
        // A node on a side without quorum serves no leader's writes, whatever leader id Raft
        // last heard of: it says so as etcd does.
        if raft.leader.is_none() || self.0.node.cp.check_quorum().is_err() {
            errors.push(ETCD_NO_LEADER.to_string());
        }
        reply(rpc::StatusResponse {
            header: Some(self.0.header(raft.revision)),
            version: VERSION.to_string(),
            db_size: 0,
            leader: raft.leader.unwrap_or(0),
            raft_index: raft.commit_index.unwrap_or(0),
            raft_term: raft.term,
            raft_applied_index: raft.applied_index.unwrap_or(0),
            errors,
            db_size_in_use: 0,
            is_learner: !raft.voters.is_empty() && !raft.voters.contains(&me),
        })
    }
}
