//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn and Compact onto the CP keyspace.

use isle_cp::command::CompactRequest;
use isle_cp::{Command, Request, Response};
use isle_node::cp::Consistency;
use tonic::Status;

use super::convert::{
    delete_from_pb, delete_to_pb, put_from_pb, put_to_pb, range_from_pb, range_to_pb, txn_from_pb,
    txn_to_pb,
};
use super::rpc::kv_server::Kv;
use super::{Etcd, Reply, cp_err, reply, rpc};

/// The KV service.
pub(crate) struct KvService(pub(crate) Etcd);

fn unexpected(answer: &Response) -> Status {
    Status::internal(format!(
        "unexpected answer from the state machine: {answer:?}"
    ))
}

impl KvService {
    /// Proposes a write and returns the state machine's answer.
    async fn write(&self, request: Request) -> Result<Response, Status> {
        self.0
            .node
            .cp
            .write(Command::new(request))
            .await
            .map_err(cp_err)
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: tonic::Request<rpc::RangeRequest>) -> Reply<rpc::RangeResponse> {
        let request = request.into_inner();
        let consistency = if request.serializable {
            Consistency::Stale
        } else {
            Consistency::Linearizable
        };
        let outcome = self
            .0
            .node
            .cp
            .read(range_from_pb(&request), consistency)
            .await
            .map_err(cp_err)?;
        let header = self.0.header(outcome.response.header_revision);
        reply(range_to_pb(&request, &outcome.response, Some(header)))
    }

    async fn put(&self, request: tonic::Request<rpc::PutRequest>) -> Reply<rpc::PutResponse> {
        let request = request.into_inner();
        match self.write(Request::Put(put_from_pb(&request))).await? {
            Response::Put(put) => {
                let header = self.0.header(put.header_revision);
                reply(put_to_pb(&put, Some(header)))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn delete_range(
        &self,
        request: tonic::Request<rpc::DeleteRangeRequest>,
    ) -> Reply<rpc::DeleteRangeResponse> {
        let request = request.into_inner();
        match self
            .write(Request::DeleteRange(delete_from_pb(&request)))
            .await?
        {
            Response::DeleteRange(deleted) => {
                let header = self.0.header(deleted.header_revision);
                reply(delete_to_pb(&deleted, Some(header)))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn txn(&self, request: tonic::Request<rpc::TxnRequest>) -> Reply<rpc::TxnResponse> {
        let request = request.into_inner();
        let txn = txn_from_pb(&request)?;
        match self.write(Request::Txn(txn)).await? {
            Response::Txn(answer) => {
                let header = self.0.header(answer.header_revision);
                reply(txn_to_pb(&request, &answer, &header))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn compact(
        &self,
        request: tonic::Request<rpc::CompactionRequest>,
    ) -> Reply<rpc::CompactionResponse> {
        let revision = request.into_inner().revision;
        match self
            .write(Request::Compact(CompactRequest { revision }))
            .await?
        {
            Response::Compact(compacted) => reply(rpc::CompactionResponse {
                header: Some(self.0.header(compacted.header_revision)),
            }),
            other => Err(unexpected(&other)),
        }
    }
}
