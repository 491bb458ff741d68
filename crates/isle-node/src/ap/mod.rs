//! The AP keyspace on a node: Dynamo-style coordination over the pure core in `isle-ap`.
//! Every coordination decision — where a write goes, which replicas or fallbacks are asked,
//! when the level is met, which replicas read repair brings up to date — is made by
//! [`isle_ap::coord`]; this shell sends what a round lists and feeds it answers and deadlines.
//!
//! - **Placement**: a [`Ring`] rebuilt from the membership; a key's preference list is the N
//!   replicas of its partition.
//! - **Writes** are coordinated by a primary replica (a node that is not one forwards the
//!   write to the first reachable primary). The coordinator applies the operation to its own
//!   copy through the [`writer`] and sends the resulting state to the other replicas, which
//!   merge it, while its own copy is fsynced; it counts towards the level once durable. An unreachable primary is replaced, unless the request is
//!   strict, by the next reachable node on the ring, which keeps the write as a durable hint
//!   and hands it off when the owner is back ([`hints`]). The client gets an answer when the
//!   request's level is met, with the number of replicas that acknowledged.
//! - **Reads** ask every reachable replica, answer when R have answered with the merge of
//!   their copies, and then repair any replica that answered with a stale or missing copy.
//! - **Anti-entropy** ([`aae`]) compares per-partition Merkle trees between replicas and
//!   streams only differing keys, within a bytes-per-second budget.

mod aae;
mod hints;
pub mod metrics;
mod tombstones;
pub mod wire;
mod writer;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use isle_ap::coord::{
    Placement, ReadRound, Round, Route, Step, WriteRound, forward_failed, route_write,
};
use isle_ap::merkle::storage_key;
use isle_ap::ring::RingMember;
use isle_ap::{
    ApError, BucketInfo, Hlc, Object, Op, ReadOptions, ReadReply, Ring, Rule, WriteOptions,
    WriteReply, key_hash,
};
use isle_env::Clock;
use isle_storage::{ApStore, RedbStore};
use isle_types::NodeId;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use self::metrics::ApMetrics;
use self::wire::{ApReply, ApRequest};
use self::writer::{HintIndex, Hints, Job, SharedTrees, Target, Trees, Writer};
use crate::message::{RpcReply, RpcRequest};
use crate::rpc::PeerRpc;
use crate::status::Status;

/// AP keyspace settings (`[ap]` in the node's TOML).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApConfig {
    /// Buckets served, in order (RESP `SELECT i` picks the i-th). Must match on every node.
    pub buckets: Vec<BucketInfo>,
    /// The key space is cut into 2^partition_bits partitions.
    pub partition_bits: u32,
    /// Ring tokens per member.
    pub vnodes: u32,
    /// How long a coordinator waits for replicas.
    pub request_timeout_ms: u64,
    /// Most hints one node holds; beyond, fallbacks refuse (and the write counts one fewer).
    pub hints_max: u64,
    /// How often hint delivery looks for owners that came back.
    pub hint_interval_ms: u64,
    /// How often each replica starts a Merkle exchange with its peers (0: never).
    pub aae_interval_ms: u64,
    /// Anti-entropy I/O budget, bytes per second (tree descent plus repair traffic).
    pub repair_bytes_per_sec: u64,
    /// Hybrid-clock stamps further ahead of this node's wall clock are not followed.
    pub hlc_max_ahead_ms: u64,
    /// A tombstone is dropped only after every replica holds it *and* it is this old: the
    /// grace lets in-flight hints and repairs land first. A replica cut off for longer than
    /// this and then repaired from an old hint could bring a deleted value back: that is the
    /// trade-off of dropping tombstones at all.
    pub tombstone_grace_ms: u64,
    /// How often the tombstone collector runs (0: never; tombstones are then kept forever).
    pub tombstone_gc_interval_ms: u64,
}

impl Default for ApConfig {
    fn default() -> Self {
        Self {
            buckets: vec![
                BucketInfo {
                    name: "default".into(),
                    rule: Rule::Siblings,
                    n: 3,
                },
                BucketInfo {
                    name: "lww".into(),
                    rule: Rule::Lww,
                    n: 3,
                },
            ],
            partition_bits: isle_ap::ring::DEFAULT_PARTITION_BITS,
            vnodes: isle_ap::ring::DEFAULT_VNODES,
            request_timeout_ms: 2_000,
            hints_max: 1_000_000,
            hint_interval_ms: 500,
            aae_interval_ms: 2_000,
            repair_bytes_per_sec: 16 << 20,
            hlc_max_ahead_ms: 60_000,
            tombstone_grace_ms: 600_000,
            tombstone_gc_interval_ms: 10_000,
        }
    }
}

/// The AP keyspace service of one node.
#[derive(Clone)]
pub struct Ap {
    inner: Arc<Inner>,
}

struct Inner {
    me: NodeId,
    config: ApConfig,
    rpc: Arc<PeerRpc>,
    clock: Arc<dyn Clock>,
    status: watch::Receiver<Arc<Status>>,
    store: ApStore,
    /// The node's store, for the fallback epoch record.
    records: RedbStore,
    jobs: mpsc::Sender<Job>,
    trees: SharedTrees,
    hints: Hints,
    metrics: Arc<ApMetrics>,
    ring: Mutex<(Vec<RingMember>, Arc<Ring>)>,
    /// Actor for writes this node coordinates as a fallback (see [`Ap::fallback_actor`]).
    fallback_epoch: AtomicU64,
    /// Actor for writes this node coordinates as a primary: new each incarnation.
    actor: NodeId,
    /// Set while the last anti-entropy round found differences.
    diverged: AtomicBool,
    /// Until this node-clock time (ms), a peer's exchange found our replicas differing.
    peer_diverged_until: AtomicU64,
    shutdown: watch::Sender<bool>,
}

/// A request's failure to reach a replica.
type ReplicaResult<T> = Result<T, ApError>;

impl Ap {
    /// Opens the AP tables, rebuilds the Merkle trees from their stored leaves, and starts the
    /// writer, hint delivery and anti-entropy tasks.
    pub fn start(
        me: NodeId,
        config: ApConfig,
        store: &RedbStore,
        rpc: Arc<PeerRpc>,
        clock: Arc<dyn Clock>,
        status: watch::Receiver<Arc<Status>>,
        registry: &mut Registry,
    ) -> Result<Ap, String> {
        if let Some(bad) = config.buckets.iter().find(|b| b.n == 0 || b.n > 64) {
            return Err(format!(
                "AP bucket {:?} has n={}: every bucket needs 1..=64 replicas",
                bad.name, bad.n
            ));
        }
        let ap_store = store.ap_store();
        let mut trees = Trees::new(config.partition_bits, &config.buckets);
        for ((partition, leaf), hash) in ap_store.leaves().map_err(|e| e.to_string())? {
            trees.set_leaf(partition, leaf, hash);
        }
        let mut index = HintIndex::default();
        for (owner, count, oldest) in ap_store.hint_summary().map_err(|e| e.to_string())? {
            index.owners.insert(NodeId(owner), (count, oldest));
        }
        let epoch: u64 = store
            .load_record("ap_fallback_epoch")
            .map_err(|e| e.to_string())?
            .unwrap_or(0)
            + 1;
        store
            .save_record("ap_fallback_epoch", &epoch)
            .map_err(|e| e.to_string())?;
        // A new actor id per incarnation, saved before any write is coordinated: states go to
        // the replicas before this node's own copy is fsynced, so a crash in between may leave
        // dots out there that this node's durable copy does not know; the next incarnation
        // mints under another actor and so never reuses them.
        let incarnation: u64 = store
            .load_record("ap_actor_epoch")
            .map_err(|e| e.to_string())?
            .unwrap_or(0)
            + 1;
        store
            .save_record("ap_actor_epoch", &incarnation)
            .map_err(|e| e.to_string())?;
        let metrics = Arc::new(ApMetrics::default());
        metrics.register(registry);
        registry.register_collector(Box::new(metrics::StoreCollector(Arc::clone(
            ap_store.stats(),
        ))));
        let trees = Arc::new(Mutex::new(trees));
        let hints = Arc::new(Mutex::new(index));
        let (jobs_tx, jobs_rx) = mpsc::channel(4096);
        let writer = Writer {
            store: ap_store.clone(),
            trees: Arc::clone(&trees),
            hlc: Hlc::new(me, config.hlc_max_ahead_ms),
            clock: clock.clone(),
            hints: Arc::clone(&hints),
            hints_max: config.hints_max,
            metrics: Arc::clone(&metrics),
            poisoned: false,
        };
        writer.start(jobs_rx);
        let (shutdown, _) = watch::channel(false);
        let ap = Ap {
            inner: Arc::new(Inner {
                me,
                config,
                rpc,
                clock,
                status,
                store: ap_store,
                records: store.clone(),
                jobs: jobs_tx,
                trees,
                hints,
                metrics,
                ring: Mutex::new((Vec::new(), Arc::new(Ring::new(&[], 1, 1)))),
                fallback_epoch: AtomicU64::new(epoch),
                actor: primary_actor(me, incarnation),
                diverged: AtomicBool::new(false),
                peer_diverged_until: AtomicU64::new(0),
                shutdown,
            }),
        };
        tokio::spawn(hints::deliver(ap.clone()));
        tokio::spawn(aae::run(ap.clone()));
        tokio::spawn(tombstones::collect(ap.clone()));
        Ok(ap)
    }

    /// Stops the background tasks.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.me
    }

    /// The buckets served.
    pub fn buckets(&self) -> Vec<BucketInfo> {
        self.inner.config.buckets.clone()
    }

    /// Whether hints wait for reachable owners or replicas were last found to differ: the
    /// partition state machine stays in `Reconciling` while this holds.
    pub fn reconcile_pending(&self) -> bool {
        if self.inner.diverged.load(Ordering::Relaxed)
            || self.inner.clock.now().as_u64()
                < self.inner.peer_diverged_until.load(Ordering::Relaxed)
        {
            return true;
        }
        let reachable = self.reachable();
        writer::lock(&self.inner.hints)
            .owners
            .keys()
            .any(|owner| reachable.contains(owner))
    }

    /// A summary for `/v1/status`.
    pub fn status(&self) -> ApStatus {
        let hints = writer::lock(&self.inner.hints);
        ApStatus {
            buckets: self.inner.config.buckets.clone(),
            hints_pending: hints.total(),
            hints_by_owner: hints.owners.iter().map(|(o, (c, _))| (o.0, *c)).collect(),
            replicas_in_sync: !self.inner.diverged.load(Ordering::Relaxed),
        }
    }

    fn bucket(&self, name: &str) -> Result<BucketInfo, ApError> {
        self.inner
            .config
            .buckets
            .iter()
            .find(|b| b.name == name)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = self
                    .inner
                    .config
                    .buckets
                    .iter()
                    .map(|b| b.name.as_str())
                    .collect();
                ApError::BadRequest(format!(
                    "unknown bucket {name:?}: this cluster has {}",
                    known.join(", ")
                ))
            })
    }

    /// Nodes whose heartbeats arrive, and this node.
    fn reachable(&self) -> BTreeSet<NodeId> {
        let status = self.inner.status.borrow();
        let mut reachable = status.reachable.clone();
        reachable.insert(self.inner.me);
        reachable
    }

    /// The ring for the current membership (rebuilt when members or zones change).
    fn ring(&self) -> Arc<Ring> {
        let members: Vec<RingMember> = {
            let status = self.inner.status.borrow();
            let mut members: Vec<RingMember> = status
                .peers
                .iter()
                .map(|p| RingMember {
                    id: p.id,
                    zone: p.zone.clone(),
                })
                .chain(std::iter::once(RingMember {
                    id: status.node,
                    zone: status.zone.clone(),
                }))
                .collect();
            members.sort_by_key(|m| m.id);
            members
        };
        let mut ring = self
            .inner
            .ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if ring.0 != members {
            let rebuilt = Ring::new(
                &members,
                self.inner.config.vnodes,
                self.inner.config.partition_bits,
            );
            *ring = (members, Arc::new(rebuilt));
        }
        Arc::clone(&ring.1)
    }

    /// Where the key with this hash lives in a bucket of `n` replicas, as this node sees it now.
    fn placement(&self, hash: u64, n: u32) -> Placement {
        Placement::new(&self.ring(), hash, n, self.inner.me, self.reachable())
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.inner.config.request_timeout_ms)
    }

    /// The actor id of writes this node coordinates as a fallback: a fresh one per epoch, so
    /// a fallback that handed its copy off never reuses the dots or counter slots it gave out.
    fn fallback_actor(&self) -> NodeId {
        let epoch = self.inner.fallback_epoch.load(Ordering::Relaxed);
        NodeId((1 << 63) | ((epoch & 0x7fff_ffff) << 32) | (self.inner.me.0 & 0xffff_ffff))
    }

    async fn submit<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, ApError>>) -> Job,
    ) -> Result<T, ApError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .jobs
            .send(job(tx))
            .await
            .map_err(|_| ApError::Internal("AP writer stopped".into()))?;
        rx.await.map_err(|_| {
            ApError::Internal("AP storage transaction failed; see the node's log".into())
        })?
    }

    /// Reads `key` from `bucket`: R replicas' copies merged; stale replicas repaired after.
    pub async fn get(
        &self,
        bucket: &str,
        key: &[u8],
        options: ReadOptions,
    ) -> Result<ReadReply, ApError> {
        let result = self.get_inner(bucket, key, options).await;
        self.count("get", &result);
        result
    }

    fn count<T>(&self, op: &str, result: &Result<T, ApError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(ApError::Unavailable { .. }) => "unavailable",
            Err(ApError::Internal(_)) => "error",
            Err(_) => "rejected",
        };
        self.inner.metrics.request(op, outcome);
    }

    async fn get_inner(
        &self,
        bucket: &str,
        key: &[u8],
        options: ReadOptions,
    ) -> Result<ReadReply, ApError> {
        isle_ap::request::validate(bucket, key, 0)?;
        let info = self.bucket(bucket)?;
        let skey = storage_key(bucket, key);
        let placement = self.placement(key_hash(bucket, key), info.n);
        let mut round = ReadRound::new(&placement, &options, info.rule)?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        for ask in round.asks() {
            self.spawn_fetch(ask.node, skey.clone(), ask.hint_for, tx.clone());
        }
        drop(tx);
        let reply = self.settle(&mut round, &mut rx).await?;
        // Read repair, off the client's path: wait for the stragglers, then bring every
        // primary the round names up to the merged state.
        let mut repair = round.into_repair();
        let ap = self.clone();
        tokio::spawn(async move {
            let deadline = ap.inner.clock.sleep(ap.timeout());
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    biased;
                    answer = rx.recv() => match answer {
                        Some((node, result)) => repair.answer(node, result),
                        None => break,
                    },
                    () = &mut deadline => break,
                }
            }
            let Some((merged, stale)) = repair.finish() else {
                return;
            };
            for node in stale {
                ap.inner.metrics.read_repairs.inc();
                let _ = ap.store_on(node, skey.clone(), merged.clone(), None).await;
            }
        });
        Ok(reply)
    }

    /// Feeds `round` the answers arriving on `answers` until it decides; the request timeout,
    /// or the end of the answers, decides it too.
    async fn settle<R: Round>(
        &self,
        round: &mut R,
        answers: &mut mpsc::UnboundedReceiver<(NodeId, ReplicaResult<R::Answer>)>,
    ) -> Result<R::Reply, ApError> {
        let deadline = self.inner.clock.sleep(self.timeout());
        tokio::pin!(deadline);
        let mut step = round.step();
        loop {
            match step {
                Step::Pending => {}
                Step::Done(reply) => return Ok(reply),
                Step::Failed(err) => return Err(err),
            }
            step = tokio::select! {
                biased;
                answer = answers.recv() => match answer {
                    Some((node, result)) => round.answer(node, result),
                    None => round.deadline(),
                },
                () = &mut deadline => round.deadline(),
            };
        }
    }

    fn spawn_fetch(
        &self,
        node: NodeId,
        key: Vec<u8>,
        hint_for: Option<NodeId>,
        answers: mpsc::UnboundedSender<(NodeId, ReplicaResult<Option<Object>>)>,
    ) {
        let ap = self.clone();
        tokio::spawn(async move {
            let result = if node == ap.inner.me {
                ap.local_fetch(&key, hint_for)
            } else {
                match ap.call(node, ApRequest::Fetch { key, hint_for }).await {
                    Ok(ApReply::Fetched(result)) => result,
                    Ok(other) => Err(unexpected(&other)),
                    Err(err) => Err(err),
                }
            };
            let _ = answers.send((node, result));
        });
    }

    /// Sends an AP request to a peer and waits for its answer.
    async fn call(&self, node: NodeId, request: ApRequest) -> Result<ApReply, ApError> {
        match self
            .inner
            .rpc
            .request(node, RpcRequest::Ap(request), self.timeout())
            .await
        {
            Ok(RpcReply::Ap(reply)) => Ok(reply),
            Ok(_) => Err(ApError::Internal(format!(
                "node {node} answered another request"
            ))),
            Err(failure) => Err(ApError::Unavailable {
                answered: 0,
                asked: 1,
                needed: 1,
                level: "replica".into(),
                detail: failure.to_string(),
            }),
        }
    }

    fn local_fetch(&self, key: &[u8], hint_for: Option<NodeId>) -> Result<Option<Object>, ApError> {
        let bytes = match hint_for {
            None => self.inner.store.object(key),
            Some(owner) => self
                .inner
                .store
                .hints_for_key(owner.0, key)
                .map(|hint| hint.map(|h| h.object)),
        }
        .map_err(|e| ApError::Internal(e.to_string()))?;
        bytes
            .map(|b| {
                Object::decode(&b)
                    .map_err(|e| ApError::Internal(format!("undecodable stored object: {e}")))
            })
            .transpose()
    }

    /// Merges `object` on `node` (locally through the writer when `node` is this one).
    async fn store_on(
        &self,
        node: NodeId,
        key: Vec<u8>,
        object: Object,
        hint_for: Option<NodeId>,
    ) -> Result<(), ApError> {
        if node == self.inner.me {
            return self.local_store(key, object, hint_for).await;
        }
        match self
            .call(
                node,
                ApRequest::Store {
                    key,
                    object,
                    hint_for,
                },
            )
            .await?
        {
            ApReply::Stored(result) => result,
            other => Err(unexpected(&other)),
        }
    }

    async fn local_store(
        &self,
        key: Vec<u8>,
        object: Object,
        hint_for: Option<NodeId>,
    ) -> Result<(), ApError> {
        let Some((hash, _, _)) = isle_ap::merkle::parse_storage_key(&key) else {
            return Err(ApError::BadRequest("malformed storage key".into()));
        };
        let target = hint_for.map_or(Target::Data, Target::Hint);
        self.submit(|reply| Job::Merge {
            key,
            hash,
            object,
            target,
            reply,
        })
        .await
    }

    /// Applies `op` to `key` in `bucket` and replicates it to the level asked.
    pub async fn apply(
        &self,
        bucket: &str,
        key: &[u8],
        op: Op,
        options: WriteOptions,
    ) -> Result<WriteReply, ApError> {
        let name = op.name();
        let result = self.apply_inner(bucket, key, op, options).await;
        self.count(name, &result);
        result
    }

    async fn apply_inner(
        &self,
        bucket: &str,
        key: &[u8],
        op: Op,
        options: WriteOptions,
    ) -> Result<WriteReply, ApError> {
        isle_ap::request::validate(bucket, key, op_size(&op))?;
        let info = self.bucket(bucket)?;
        let placement = self.placement(key_hash(bucket, key), info.n);
        let owner = match route_write(&placement, &options)? {
            Route::Here => return self.coordinate(bucket, key, op, options).await,
            Route::Forward(owner) => owner,
        };
        let level = options.w.clone();
        let request = ApRequest::Coordinate {
            bucket: bucket.to_string(),
            key: key.to_vec(),
            op,
            options,
        };
        // One forward only: if it fails, the primary may still have applied the write (the
        // request arrived, the answer was lost). Trying the next primary would apply it a
        // second time — as a second sibling, or a second increment — so the client gets an
        // indeterminate answer and decides (found by the simulator, seed 132).
        match self.call(owner, request).await {
            Ok(ApReply::Coordinated(result)) => result,
            Ok(other) => Err(unexpected(&other)),
            Err(err) => Err(forward_failed(owner, &level, &err)),
        }
    }

    /// Coordinates a write on this node: compute the new state in the writer, then send it to
    /// the other replicas while the writer fsyncs this node's copy. This node counts towards
    /// the level only once its copy is durable.
    async fn coordinate(
        &self,
        bucket: &str,
        key: &[u8],
        op: Op,
        options: WriteOptions,
    ) -> Result<WriteReply, ApError> {
        let info = self.bucket(bucket)?;
        let skey = storage_key(bucket, key);
        let hash = key_hash(bucket, key);
        let mut round = WriteRound::new(&self.placement(hash, info.n), &options)?;
        let me = self.inner.me;
        // A fallback coordinator's copy is a hint for the primary it stands in for, minted
        // under its fallback actor.
        let (target, actor) = match round.own().hint_for {
            None => (Target::Data, self.inner.actor),
            Some(owner) => (Target::Hint(owner), self.fallback_actor()),
        };
        let (durable_tx, durable) = oneshot::channel();
        let (object, applied) = self
            .submit(|prepared| Job::Apply {
                key: skey.clone(),
                hash,
                op,
                rule: info.rule,
                actor,
                target,
                prepared,
                durable: durable_tx,
            })
            .await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        {
            let tx = tx.clone();
            tokio::spawn(async move {
                let result = durable.await.unwrap_or_else(|_| {
                    Err(ApError::Internal(
                        "AP storage transaction failed; see the node's log".into(),
                    ))
                });
                let _ = tx.send((me, result));
            });
        }
        for ask in round.sends() {
            let ap = self.clone();
            let (node, hint_for) = (ask.node, ask.hint_for);
            let (key, object, tx) = (skey.clone(), object.clone(), tx.clone());
            tokio::spawn(async move {
                let result = ap.store_on(node, key, object, hint_for).await;
                let _ = tx.send((node, result));
            });
        }
        drop(tx);
        let replicas = self.settle(&mut round, &mut rx).await?;
        Ok(WriteReply {
            value: object.value(),
            context: object.context(),
            rule: info.rule,
            stamp: object.stamp(),
            applied,
            replicas,
        })
    }

    /// This node's own copy of a key (no coordination, no repair): for tests and operators
    /// checking convergence replica by replica.
    pub fn local(
        &self,
        bucket: &str,
        key: &[u8],
    ) -> Result<Option<(isle_ap::Value, u128)>, ApError> {
        isle_ap::request::validate(bucket, key, 0)?;
        Ok(self
            .local_fetch(&storage_key(bucket, key), None)?
            .map(|object| (object.value(), object.digest())))
    }

    /// Serves a request from a peer.
    pub async fn handle_request(&self, from: NodeId, id: u64, request: ApRequest) {
        let reply = match request {
            ApRequest::Coordinate {
                bucket,
                key,
                op,
                options,
            } => ApReply::Coordinated(self.coordinate(&bucket, &key, op, options).await),
            ApRequest::Store {
                key,
                object,
                hint_for,
            } => ApReply::Stored(self.local_store(key, object, hint_for).await),
            ApRequest::StoreMany { objects } => ApReply::Stored(self.store_many(objects).await),
            ApRequest::Fetch { key, hint_for } => {
                ApReply::Fetched(self.local_fetch(&key, hint_for))
            }
            ApRequest::FetchMany { keys } => ApReply::FetchedMany(
                keys.into_iter()
                    .map(|key| self.local_fetch(&key, None).map(|object| (key, object)))
                    .collect(),
            ),
            ApRequest::Aae { n, request } => ApReply::Aae(self.aae_respond(n, &request)),
            ApRequest::Roots { partitions } => ApReply::Roots(self.roots(&partitions)),
            ApRequest::Reap { tombstones } => {
                ApReply::Stored(self.reap(tombstones).await.map(|_| ()))
            }
        };
        self.inner.rpc.reply(from, id, RpcReply::Ap(reply));
    }

    /// Merges many objects into this replica, all in one or a few transactions.
    async fn store_many(&self, objects: Vec<(Vec<u8>, Object)>) -> Result<(), ApError> {
        let mut waiting = Vec::with_capacity(objects.len());
        for (key, object) in objects {
            let Some((hash, _, _)) = isle_ap::merkle::parse_storage_key(&key) else {
                return Err(ApError::BadRequest("malformed storage key".into()));
            };
            let (tx, rx) = oneshot::channel();
            self.inner
                .jobs
                .send(Job::Merge {
                    key,
                    hash,
                    object,
                    target: Target::Data,
                    reply: tx,
                })
                .await
                .map_err(|_| ApError::Internal("AP writer stopped".into()))?;
            waiting.push(rx);
        }
        for rx in waiting {
            rx.await
                .map_err(|_| ApError::Internal("AP storage transaction failed".into()))??;
        }
        Ok(())
    }
}

/// What `/v1/status` shows of the AP keyspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApStatus {
    /// Buckets served.
    pub buckets: Vec<BucketInfo>,
    /// Hints held on this node.
    pub hints_pending: u64,
    /// Hints held, by owner.
    pub hints_by_owner: Vec<(u64, u64)>,
    /// Whether the last anti-entropy round found this node's replicas equal to their peers'.
    pub replicas_in_sync: bool,
}

/// The actor id of writes a node coordinates as a primary in its `incarnation`-th run: the
/// node id in the low 32 bits, the incarnation above, bit 62 set (bit 63 marks fallbacks).
fn primary_actor(me: NodeId, incarnation: u64) -> NodeId {
    NodeId((1 << 62) | ((incarnation & 0x3fff_ffff) << 32) | (me.0 & 0xffff_ffff))
}

fn unexpected(reply: &ApReply) -> ApError {
    ApError::Internal(format!("unexpected reply from a replica: {reply:?}"))
}

fn op_size(op: &Op) -> usize {
    match op {
        Op::Put { value, .. } => value.len(),
        Op::SetAdd { members } | Op::SetRemove { members } => members.iter().map(Vec::len).sum(),
        Op::MapUpdate {
            set, incr, remove, ..
        } => {
            set.iter().map(|(f, v)| f.len() + v.len()).sum::<usize>()
                + incr.iter().map(|(f, _)| f.len() + 8).sum::<usize>()
                + remove.iter().map(Vec::len).sum::<usize>()
        }
        Op::Delete { .. } | Op::Incr { .. } => 0,
    }
}
