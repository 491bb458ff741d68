//! The CP bench's client side: the etcd v3 gRPC KV API through the tonic client generated
//! from Isle's etcd .proto files, so Isle and etcd are driven by the same client code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use isle_api::etcd::pb::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, compare, kv_client::KvClient,
    request_op,
};
use tonic::transport::{Channel, Endpoint};

use super::{BenchOp, Driver, PREFILL_CONCURRENCY, Tally, client_rng, join_tallies, key};
use isle_env::Random;

/// A CP bench operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CpOp {
    /// Put of a random key.
    Put,
    /// Linearizable Range of one key.
    Get,
    /// Serializable Range of one key (a local, possibly stale read).
    Sget,
    /// Txn: if the key's mod revision > 0 then Put, else Put (either way one write).
    Txn,
}

impl BenchOp for CpOp {
    fn name(self) -> &'static str {
        match self {
            CpOp::Put => "put",
            CpOp::Get => "get",
            CpOp::Sget => "sget",
            CpOp::Txn => "txn",
        }
    }

    fn needs_prefill(self) -> bool {
        // Txn compares an existing key's revision, so the success branch is the one measured.
        matches!(self, CpOp::Get | CpOp::Sget | CpOp::Txn)
    }
}

/// What every request looks like.
#[derive(Clone, Debug)]
pub(super) struct Shape {
    /// Distinct keys.
    pub keys: u64,
    /// The value every write writes.
    pub value: Vec<u8>,
    /// Per-request timeout (and connect timeout).
    pub timeout: Duration,
}

/// One system's gRPC channels.
pub(super) struct Grpc {
    /// Channels in round-robin order over endpoints (endpoint 0, 1, ..., 0, 1, ...).
    channels: Vec<KvClient<Channel>>,
    shape: Arc<Shape>,
}

impl Grpc {
    /// Opens `conns` channels to each endpoint (TCP_NODELAY, `shape.timeout` per request).
    pub async fn connect(endpoints: &[String], conns: usize, shape: Shape) -> anyhow::Result<Grpc> {
        anyhow::ensure!(!endpoints.is_empty(), "no gRPC endpoints given");
        let mut channels = Vec::new();
        for _ in 0..conns.max(1) {
            for endpoint in endpoints {
                let uri = if endpoint.contains("://") {
                    endpoint.clone()
                } else {
                    format!("http://{endpoint}")
                };
                let channel = Endpoint::from_shared(uri)
                    .with_context(|| format!("gRPC endpoint {endpoint}"))?
                    .tcp_nodelay(true)
                    .connect_timeout(shape.timeout)
                    .timeout(shape.timeout)
                    .connect()
                    .await
                    .with_context(|| format!("connecting to {endpoint}"))?;
                channels.push(KvClient::new(channel));
            }
        }
        Ok(Grpc {
            channels,
            shape: Arc::new(shape),
        })
    }

    /// The channel of client `client`.
    fn client(&self, client: usize) -> KvClient<Channel> {
        self.channels[client % self.channels.len()].clone()
    }
}

/// Sends one request of `op` on `key`.
async fn request(
    kv: &mut KvClient<Channel>,
    op: CpOp,
    key: Vec<u8>,
    value: &[u8],
) -> Result<(), tonic::Status> {
    let put = |key: Vec<u8>| PutRequest {
        key,
        value: value.to_vec(),
        ..PutRequest::default()
    };
    match op {
        CpOp::Put => kv.put(put(key)).await.map(drop),
        CpOp::Get | CpOp::Sget => kv
            .range(RangeRequest {
                key,
                serializable: op == CpOp::Sget,
                ..RangeRequest::default()
            })
            .await
            .map(drop),
        CpOp::Txn => {
            let write = || RequestOp {
                request: Some(request_op::Request::RequestPut(put(key.clone()))),
            };
            kv.txn(TxnRequest {
                compare: vec![Compare {
                    result: compare::CompareResult::Greater as i32,
                    target: compare::CompareTarget::Mod as i32,
                    key: key.clone(),
                    target_union: Some(compare::TargetUnion::ModRevision(0)),
                    ..Compare::default()
                }],
                success: vec![write()],
                failure: vec![write()],
            })
            .await
            .map(drop)
        }
    }
}

/// A status as one line.
fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

impl Driver for Grpc {
    type Op = CpOp;

    async fn prefill(&self) -> anyhow::Result<()> {
        let workers = (0..PREFILL_CONCURRENCY)
            .map(|worker| self.client(worker))
            .collect();
        let value = self.shape.value.clone();
        super::prefill_keys(workers, self.shape.keys, move |mut kv, index| {
            let value = value.clone();
            async move {
                request(&mut kv, CpOp::Put, key(index).into_bytes(), &value)
                    .await
                    .map_err(|status| {
                        anyhow::anyhow!("a prefill put failed: {}", describe(&status))
                    })?;
                Ok(kv)
            }
        })
        .await
    }

    async fn phase(&self, op: CpOp, clients: usize, duration: Duration) -> anyhow::Result<Tally> {
        let until = Instant::now() + duration;
        let tasks = (0..clients)
            .map(|client| {
                let mut kv = self.client(client);
                let shape = self.shape.clone();
                tokio::spawn(async move {
                    let mut rng = client_rng(client as u64);
                    let mut tally = Tally::default();
                    while Instant::now() < until {
                        let key = key(rng.below(shape.keys)).into_bytes();
                        let started = Instant::now();
                        match request(&mut kv, op, key, &shape.value).await {
                            Ok(()) => tally.ok(started.elapsed()),
                            Err(status) => tally.error(|| describe(&status)),
                        }
                    }
                    tally
                })
            })
            .collect();
        join_tallies(tasks).await
    }
}
