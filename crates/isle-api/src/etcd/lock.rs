//! `v3lockpb.Lock`: Lock waits its turn in queue order (up to five minutes, or until the client
//! cancels) and answers the waiter key; Unlock deletes it. The key is etcd's,
//! `<name>/<lease in lowercase hex>`, and its create revision is Isle's fencing token.

use std::time::Duration;

use isle_node::cp::Cp;
use tonic::Status;

use super::pb::v3lockpb as lockpb;
use super::pb::v3lockpb::lock_server::Lock;
use super::{Etcd, LOCK_WAIT, Reply, cp_err, reply};

/// The Lock service.
pub(crate) struct LockService(pub(crate) Etcd);

/// Withdraws a waiter whose client gave up (the call's future was dropped mid-wait), so an
/// abandoned waiter does not block the queue until its lease ends.
pub(crate) struct Withdraw {
    pub(crate) cp: Cp,
    pub(crate) key: Option<Vec<u8>>,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let cp = self.cp.clone();
            tokio::spawn(async move {
                let _ = cp.unlock(key).await;
            });
        }
    }
}

/// A bytes name as the state machine's lock name.
pub(crate) fn name_of(name: &[u8]) -> Result<String, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument("etcdserver: name is empty"));
    }
    String::from_utf8(name.to_vec())
        .map_err(|_| Status::invalid_argument("isle: lock and election names must be UTF-8"))
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(
        &self,
        request: tonic::Request<lockpb::LockRequest>,
    ) -> Reply<lockpb::LockResponse> {
        let request = request.into_inner();
        let name = name_of(&request.name)?;
        let cp = self.0.node.cp.clone();
        let mut guard = Withdraw {
            cp: cp.clone(),
            key: Some(format!("{name}/{:x}", request.lease).into_bytes()),
        };
        let wait: Duration = LOCK_WAIT;
        let acquired = cp.lock(&name, request.lease, wait).await;
        // Acquired, or refused (then nothing is queued, or Cp withdrew it itself).
        guard.key = None;
        let acquired = acquired.map_err(cp_err)?;
        reply(lockpb::LockResponse {
            header: Some(self.0.header(acquired.header_revision)),
            key: acquired.key,
        })
    }

    async fn unlock(
        &self,
        request: tonic::Request<lockpb::UnlockRequest>,
    ) -> Reply<lockpb::UnlockResponse> {
        let key = request.into_inner().key;
        let released = self.0.node.cp.unlock(key).await.map_err(cp_err)?;
        reply(lockpb::UnlockResponse {
            header: Some(self.0.header(released.header_revision)),
        })
    }
}
