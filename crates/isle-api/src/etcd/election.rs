//! `v3electionpb.Election`, built from KV and lease primitives as etcd's v3election does: a
//! campaigner puts `<name>/<lease hex>` (value = its proposal) under its lease; the leader is
//! the key under `<name>/` with the lowest create revision, so a campaigner waits until every
//! key created before its own is gone.

use std::pin::Pin;

use isle_cp::command::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue, Op, OpResponse,
    PutRequest, RangeRequest, TxnRequest, TxnResponse, prefix_end,
};
use isle_cp::{Command, Request, Response};
use isle_node::cp::{Consistency, Cp};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert::kv_to_pb;
use super::lock::name_of;
use super::pb::v3electionpb as electionpb;
use super::pb::v3electionpb::election_server::Election;
use super::{Etcd, LOCK_WAIT, Reply, cp_err, reply};

/// The Election service.
pub(crate) struct ElectionService(pub(crate) Etcd);

/// The outbound half of an Observe stream.
type Outbound = Pin<Box<dyn Stream<Item = Result<electionpb::LeaderResponse, Status>> + Send>>;

fn not_leader() -> Status {
    Status::failed_precondition("election: not leader")
}

/// `if create_revision(key) == rev then ops`.
async fn if_owner(cp: &Cp, key: &[u8], rev: i64, then: Vec<Op>) -> Result<TxnResponse, Status> {
    let txn = TxnRequest {
        compare: vec![Compare::new(
            key,
            CompareTarget::Create(rev),
            CompareResult::Equal,
        )],
        success: then,
        failure: Vec::new(),
        fence: None,
    };
    match cp
        .write(Command::new(Request::Txn(txn)))
        .await
        .map_err(cp_err)?
    {
        Response::Txn(answer) => Ok(answer),
        other => Err(Status::internal(format!("unexpected answer {other:?}"))),
    }
}

/// Every key of election `name`, and the revision read at.
async fn candidates(
    cp: &Cp,
    name: &str,
    consistency: Consistency,
) -> Result<(Vec<KeyValue>, i64), Status> {
    let prefix = format!("{name}/").into_bytes();
    let request = RangeRequest {
        range_end: prefix_end(&prefix),
        key: prefix,
        ..RangeRequest::default()
    };
    let outcome = cp.read(request, consistency).await.map_err(cp_err)?;
    Ok((outcome.response.kvs, outcome.response.header_revision))
}

/// The leader's key: the lowest create revision.
fn leader_of(kvs: &[KeyValue]) -> Option<&KeyValue> {
    kvs.iter().min_by_key(|kv| kv.create_revision)
}

/// Resigns a campaign whose client gave up while it waited.
struct Resign {
    cp: Cp,
    key: Vec<u8>,
    rev: i64,
    armed: bool,
}

impl Drop for Resign {
    fn drop(&mut self) {
        if self.armed {
            let (cp, key, rev) = (self.cp.clone(), self.key.clone(), self.rev);
            tokio::spawn(async move {
                let delete = Op::DeleteRange(DeleteRangeRequest::key(&key));
                let _ = if_owner(&cp, &key, rev, vec![delete]).await;
            });
        }
    }
}

impl ElectionService {
    /// Waits until no key of the election was created before `rev`.
    async fn wait_turn(&self, name: &str, key: &[u8], rev: i64) -> Result<i64, Status> {
        let cp = &self.0.node.cp;
        let mut changes = self.0.subscribe();
        loop {
            let (kvs, read_at) = candidates(cp, name, Consistency::Linearizable).await?;
            if !kvs
                .iter()
                .any(|kv| kv.key == key && kv.create_revision == rev)
            {
                return Err(Status::failed_precondition(
                    "election: session expired (the campaign's key is gone: its lease ended)",
                ));
            }
            if !kvs.iter().any(|kv| kv.create_revision < rev) {
                return Ok(read_at);
            }
            while *changes.borrow_and_update() <= read_at {
                if changes.changed().await.is_err() {
                    return Err(Status::unavailable("isle: the server is stopping"));
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: tonic::Request<electionpb::CampaignRequest>,
    ) -> Reply<electionpb::CampaignResponse> {
        let request = request.into_inner();
        let name = name_of(&request.name)?;
        let key = format!("{name}/{:x}", request.lease).into_bytes();
        let cp = self.0.node.cp.clone();
        let txn = TxnRequest {
            compare: vec![Compare::new(
                &key,
                CompareTarget::Create(0),
                CompareResult::Equal,
            )],
            success: vec![Op::Put(PutRequest {
                lease: request.lease,
                ..PutRequest::new(&key, &request.value)
            })],
            failure: vec![Op::Range(RangeRequest::key(&key))],
            fence: None,
        };
        let answer = match cp
            .write(Command::new(Request::Txn(txn)))
            .await
            .map_err(cp_err)?
        {
            Response::Txn(answer) => answer,
            other => return Err(Status::internal(format!("unexpected answer {other:?}"))),
        };
        let rev = if answer.succeeded {
            answer.header_revision
        } else {
            let existing = match answer.responses.first() {
                Some(OpResponse::Range(range)) => range.kvs.first().cloned(),
                _ => None,
            };
            let Some(existing) = existing else {
                return Err(Status::aborted("isle: the campaign key vanished; retry"));
            };
            if existing.value != request.value {
                let put = Op::Put(PutRequest {
                    lease: request.lease,
                    ..PutRequest::new(&key, &request.value)
                });
                if_owner(&cp, &key, existing.create_revision, vec![put]).await?;
            }
            existing.create_revision
        };
        let mut resign = Resign {
            cp: cp.clone(),
            key: key.clone(),
            rev,
            armed: true,
        };
        let turn = self.wait_turn(&name, &key, rev);
        let waited = tokio::select! {
            biased;
            waited = turn => waited,
            () = self.0.clock.sleep(LOCK_WAIT) => {
                Err(Status::deadline_exceeded("isle: not elected within 5 minutes"))
            }
        };
        let read_at = waited?;
        resign.armed = false;
        reply(electionpb::CampaignResponse {
            header: Some(self.0.header(read_at)),
            leader: Some(electionpb::LeaderKey {
                name: request.name,
                key,
                rev,
                lease: request.lease,
            }),
        })
    }

    async fn proclaim(
        &self,
        request: tonic::Request<electionpb::ProclaimRequest>,
    ) -> Reply<electionpb::ProclaimResponse> {
        let request = request.into_inner();
        let Some(leader) = request.leader else {
            return Err(Status::invalid_argument(
                "\"leader\" field must be provided",
            ));
        };
        let put = Op::Put(PutRequest {
            lease: leader.lease,
            ..PutRequest::new(&leader.key, &request.value)
        });
        let answer = if_owner(&self.0.node.cp, &leader.key, leader.rev, vec![put]).await?;
        if !answer.succeeded {
            return Err(not_leader());
        }
        reply(electionpb::ProclaimResponse {
            header: Some(self.0.header(answer.header_revision)),
        })
    }

    async fn leader(
        &self,
        request: tonic::Request<electionpb::LeaderRequest>,
    ) -> Reply<electionpb::LeaderResponse> {
        let name = name_of(&request.into_inner().name)?;
        let (kvs, read_at) = candidates(&self.0.node.cp, &name, Consistency::Linearizable).await?;
        let Some(leader) = leader_of(&kvs) else {
            return Err(Status::not_found("election: no leader"));
        };
        reply(electionpb::LeaderResponse {
            header: Some(self.0.header(read_at)),
            kv: Some(kv_to_pb(leader)),
        })
    }

    type ObserveStream = Outbound;

    async fn observe(
        &self,
        request: tonic::Request<electionpb::LeaderRequest>,
    ) -> Reply<Self::ObserveStream> {
        let name = name_of(&request.into_inner().name)?;
        let (tx, rx) = mpsc::channel(16);
        let etcd = self.0.clone();
        tokio::spawn(async move {
            let mut changes = etcd.subscribe();
            let mut last: Option<(Vec<u8>, i64)> = None;
            loop {
                changes.borrow_and_update();
                let (kvs, read_at) =
                    match candidates(&etcd.node.cp, &name, Consistency::Stale).await {
                        Ok(found) => found,
                        Err(err) => {
                            let _ = tx.send(Err(err)).await;
                            return;
                        }
                    };
                if let Some(leader) = leader_of(&kvs) {
                    let seen = (leader.key.clone(), leader.mod_revision);
                    if last.as_ref() != Some(&seen) {
                        last = Some(seen);
                        let response = electionpb::LeaderResponse {
                            header: Some(etcd.header(read_at)),
                            kv: Some(kv_to_pb(leader)),
                        };
                        if tx.send(Ok(response)).await.is_err() {
                            return;
                        }
                    }
                }
                tokio::select! {
                    biased;
                    () = tx.closed() => return,
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        reply(Box::pin(ReceiverStream::new(rx)) as Outbound)
    }

    async fn resign(
        &self,
        request: tonic::Request<electionpb::ResignRequest>,
    ) -> Reply<electionpb::ResignResponse> {
        let Some(leader) = request.into_inner().leader else {
            return Err(Status::invalid_argument(
                "\"leader\" field must be provided",
            ));
        };
        let delete = Op::DeleteRange(DeleteRangeRequest::key(&leader.key));
        let answer = if_owner(&self.0.node.cp, &leader.key, leader.rev, vec![delete]).await?;
        reply(electionpb::ResignResponse {
            header: Some(self.0.header(answer.header_revision)),
        })
    }
}
