//! `etcdserverpb.Lease`: grant, revoke, the keep-alive stream, time-to-live and the list.
//!
//! As in etcd, keep-alive and time-to-live of a lease that is gone are answers, not errors:
//! TTL 0 for a keep-alive, TTL -1 for time-to-live.

use std::pin::Pin;

use isle_cp::CpError;
use isle_node::cp::CpRequestError;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::rpc::lease_server::Lease;
use super::{Etcd, Reply, cp_err, reply, rpc, status};

/// The Lease service.
pub(crate) struct LeaseService(pub(crate) Etcd);

/// The outbound half of a keep-alive stream.
type Outbound = Pin<Box<dyn Stream<Item = Result<rpc::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: tonic::Request<rpc::LeaseGrantRequest>,
    ) -> Reply<rpc::LeaseGrantResponse> {
        let request = request.into_inner();
        // etcd raises a too-short TTL to its minimum rather than refusing it.
        let ttl = request.ttl.max(1);
        let granted = self
            .0
            .node
            .cp
            .lease_grant(request.id, ttl)
            .await
            .map_err(cp_err)?;
        reply(rpc::LeaseGrantResponse {
            header: Some(self.0.header(granted.header_revision)),
            id: granted.id,
            ttl: granted.ttl_secs,
            error: String::new(),
        })
    }

    async fn lease_revoke(
        &self,
        request: tonic::Request<rpc::LeaseRevokeRequest>,
    ) -> Reply<rpc::LeaseRevokeResponse> {
        let id = request.into_inner().id;
        let revoked = self.0.node.cp.lease_revoke(id).await.map_err(cp_err)?;
        reply(rpc::LeaseRevokeResponse {
            header: Some(self.0.header(revoked.header_revision)),
        })
    }

    type LeaseKeepAliveStream = Outbound;

    async fn lease_keep_alive(
        &self,
        request: tonic::Request<Streaming<rpc::LeaseKeepAliveRequest>>,
    ) -> Reply<Self::LeaseKeepAliveStream> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let etcd = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(request)) = inbound.message().await {
                let ttl = match etcd.node.cp.lease_keep_alive(request.id).await {
                    Ok(ttl) => Ok(ttl),
                    Err(CpRequestError::Rejected(CpError::LeaseNotFound { .. })) => Ok(0),
                    Err(err) => Err(status(&err)),
                };
                let answer = ttl.map(|ttl| rpc::LeaseKeepAliveResponse {
                    header: Some(etcd.header_now()),
                    id: request.id,
                    ttl,
                });
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        reply(Box::pin(ReceiverStream::new(rx)) as Outbound)
    }

    async fn lease_time_to_live(
        &self,
        request: tonic::Request<rpc::LeaseTimeToLiveRequest>,
    ) -> Reply<rpc::LeaseTimeToLiveResponse> {
        let request = request.into_inner();
        let cp = &self.0.node.cp;
        let header = Some(self.0.header_now());
        let Some((granted, remaining)) = cp.lease_time_to_live(request.id).await else {
            return reply(rpc::LeaseTimeToLiveResponse {
                header,
                id: request.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            });
        };
        let keys = if request.keys {
            let lease = cp.state().read().machine.lease(request.id);
            lease.map(|lease| lease.keys).unwrap_or_default()
        } else {
            Vec::new()
        };
        reply(rpc::LeaseTimeToLiveResponse {
            header,
            id: request.id,
            // Only the leader tracks deadlines; a follower asked it.
            ttl: remaining,
            granted_ttl: granted,
            keys,
        })
    }

    async fn lease_leases(
        &self,
        _request: tonic::Request<rpc::LeaseLeasesRequest>,
    ) -> Reply<rpc::LeaseLeasesResponse> {
        let leases = self.0.node.cp.leases();
        reply(rpc::LeaseLeasesResponse {
            header: Some(self.0.header_now()),
            leases: leases
                .into_iter()
                .map(|lease| rpc::LeaseStatus { id: lease.id })
                .collect(),
        })
    }
}
