//! The etcd v3 gRPC API over the CP keyspace, so `etcdctl` and etcd client libraries work
//! against Isle unchanged.
//!
//! Services: `etcdserverpb.KV` (Range, Put, DeleteRange, Txn, Compact), `Watch`, `Lease`,
//! `Cluster` (MemberList), `Maintenance` (Status, Alarm), `v3lockpb.Lock` and
//! `v3electionpb.Election`. The .proto files (in `proto/etcd`) were written from etcd's public
//! API reference with etcd's packages, names and field numbers, and are compiled by `protox` in
//! the build script — no `protoc` needed.
//!
//! Every request maps 1:1 onto [`isle_node::cp::Cp`]: the MVCC state machine is modelled on
//! etcd's, so revisions, versions and events mean what they mean in etcd. What the state
//! machine does not do itself (sorting and revision filters of a Range, which etcd's client
//! recipes for locks and elections use) is done here on the range result, as etcd does.
//! Refusals become the gRPC statuses etcd clients recognise (see [`status`]).

mod cluster;
mod convert;
mod election;
mod kv;
mod lease;
mod lock;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use isle_env::Clock;
use isle_node::NodeHandle;
use isle_node::cp::CpRequestError;
use tokio::sync::watch as notify;

pub use convert::status;

/// Code generated from the etcd .proto files (prost messages, tonic servers and clients).
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod pb {
    /// `mvccpb`: KeyValue and Event.
    pub mod mvccpb {
        include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    }
    /// `etcdserverpb`: KV, Watch, Lease, Cluster and Maintenance.
    pub mod etcdserverpb {
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    }
    /// `v3lockpb`: the Lock service.
    pub mod v3lockpb {
        include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
    }
    /// `v3electionpb`: the Election service.
    pub mod v3electionpb {
        include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
    }
}

use pb::etcdserverpb as rpc;

/// The cluster id reported in every response header: a constant, as Isle has one CP group
/// per cluster ("isle" in ASCII, then 1).
pub const CLUSTER_ID: u64 = 0x6973_6c65_0000_0001;

/// The server version reported by `Maintenance.Status`.
pub const VERSION: &str = "3.5.0-isle";

/// How long a Lock or Campaign call waits for its turn (unless the client gives up first).
const LOCK_WAIT: Duration = Duration::from_secs(300);

/// What every service needs: the node, a clock, and a wake-up on every revision change.
#[derive(Clone)]
pub(crate) struct Etcd {
    node: NodeHandle,
    clock: Arc<dyn Clock>,
    revision: notify::Receiver<i64>,
    /// This server's address as a URL, for MemberList.
    client_url: String,
}

impl Etcd {
    /// Starts the revision notifier: it republishes the replica's revision after every apply
    /// and ends when every receiver is gone (or Raft stops).
    fn new(node: NodeHandle, clock: Arc<dyn Clock>, client_url: String) -> Etcd {
        let current = node.cp.state().read().machine.revision();
        let (tx, rx) = notify::channel(current);
        let cp = node.cp.clone();
        // Subscribe before the first read, so no change between a read and the wait is missed.
        let mut changes = cp.changes();
        tokio::spawn(async move {
            loop {
                let revision = cp.state().read().machine.revision();
                tx.send_if_modified(|seen| {
                    let changed = *seen != revision;
                    *seen = revision;
                    changed
                });
                tokio::select! {
                    biased;
                    () = tx.closed() => return,
                    more = changes.next() => {
                        if !more {
                            return;
                        }
                    }
                }
            }
        });
        Etcd {
            node,
            clock,
            revision: rx,
            client_url,
        }
    }

    /// A response header at `revision`.
    fn header(&self, revision: i64) -> rpc::ResponseHeader {
        rpc::ResponseHeader {
            cluster_id: CLUSTER_ID,
            member_id: self.member_id(),
            revision,
            raft_term: self.node.cp.term(),
        }
    }

    /// A response header at the replica's current revision.
    fn header_now(&self) -> rpc::ResponseHeader {
        let revision = self.current_revision();
        self.header(revision)
    }

    fn member_id(&self) -> u64 {
        self.node.status.borrow().node.0
    }

    fn current_revision(&self) -> i64 {
        self.node.cp.state().read().machine.revision()
    }

    /// A receiver that wakes on every revision change.
    fn subscribe(&self) -> notify::Receiver<i64> {
        self.revision.clone()
    }
}

/// Serves the etcd v3 gRPC API on `listener` until `shutdown` completes.
pub async fn serve(
    node: NodeHandle,
    clock: Arc<dyn Clock>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let client_url = match listener.local_addr() {
        Ok(addr) => format!("http://{addr}"),
        Err(_) => String::new(),
    };
    let etcd = Etcd::new(node, clock, client_url);
    tonic::transport::Server::builder()
        .add_service(rpc::kv_server::KvServer::new(kv::KvService(etcd.clone())))
        .add_service(rpc::watch_server::WatchServer::new(watch::WatchService(
            etcd.clone(),
        )))
        .add_service(rpc::lease_server::LeaseServer::new(lease::LeaseService(
            etcd.clone(),
        )))
        .add_service(rpc::cluster_server::ClusterServer::new(
            cluster::ClusterService(etcd.clone()),
        ))
        .add_service(rpc::maintenance_server::MaintenanceServer::new(
            cluster::MaintenanceService(etcd.clone()),
        ))
        .add_service(pb::v3lockpb::lock_server::LockServer::new(
            lock::LockService(etcd.clone()),
        ))
        .add_service(pb::v3electionpb::election_server::ElectionServer::new(
            election::ElectionService(etcd),
        ))
        .serve_with_incoming_shutdown(
            // Nagle would hold each small reply until the client's delayed ACK (~40 ms).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

/// Shorthand for a unary handler's result.
type Reply<T> = Result<tonic::Response<T>, tonic::Status>;

fn reply<T>(message: T) -> Reply<T> {
    Ok(tonic::Response::new(message))
}

/// `CpRequestError` → gRPC status, for `?` in handlers.
fn cp_err(err: CpRequestError) -> tonic::Status {
    status(&err)
}
