//! The CP keyspace on a node: Raft (openraft) over the peer transport, the replicated MVCC
//! state machine, and the client paths — writes and linearizable reads go to the leader,
//! stale reads are served locally — with the refusals a user can act on.
//!
//! A write is refused *before* it is proposed when this node's side holds no quorum (the
//! failure detector and quorum module say so): `NoQuorum` is then a definite "not applied".
//! A write that was proposed but not answered in time is `Timeout`: indeterminate, to be
//! retried with the same request id (the state machine applies a request id once).

mod fence;
mod lanes;
mod leases;
mod membership;
mod metrics;
mod reads;
mod recover;

pub use fence::FenceRecord;
pub use membership::{Membership, MembershipChange};
pub use metrics::CpCollector;
pub use reads::ReadStats;
pub use recover::{RecoveryReport, force_new_cluster};

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use isle_cp::command::{RangeRequest, RangeResponse};
use isle_cp::raft::{
    Applied, CpNetworkFactory, CpRaft, CpStateMachine, CpTypes, Proposal, RaftRpc, SharedState,
    SnapshotStore, StoredSnapshot,
};
use isle_cp::{Command, CpError, Response};
use isle_env::Clock;
use isle_storage::RedbStore;
use isle_types::NodeId;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::info;

use crate::message::{RpcReply, RpcRequest};
use crate::rpc::{PeerRpc, RaftLink};
use crate::status::Status;

/// CP keyspace settings (Raft timings and the bootstrap rule).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpConfig {
    /// Form the Raft group once this many members are known and reachable; the member with
    /// the lowest id initializes it. `None`: wait to be added to an existing group.
    pub bootstrap_expect: Option<usize>,
    /// Raft heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// Raft election timeout range, ms; also the leader lease (check-quorum).
    pub election_timeout_min_ms: u64,
    /// Upper end of the election timeout range, ms.
    pub election_timeout_max_ms: u64,
    /// How long a client write or linearizable read may wait before `Timeout`, ms.
    pub request_timeout_ms: u64,
    /// Snapshot after this many entries since the last one.
    pub snapshot_every_entries: u64,
    /// Log entries kept behind the latest snapshot; a follower further behind is sent the
    /// snapshot instead.
    pub logs_kept_after_snapshot: u64,
    /// STONITH: run when this node becomes leader, against the previous leader (`sh -c`,
    /// `{node}` and `$ISLE_FENCE_NODE` name it), e.g. a power switch or `kill -9` script.
    pub fence_command: Option<String>,
    /// How long the fence command may run.
    pub fence_timeout_ms: u64,
    /// Fence this node itself (refuse every CP request, stale reads included) after this long
    /// in Emergency (no quorum on its side); `None` never.
    pub self_fence_after_ms: Option<u64>,
    /// When self-fencing, also ask the process to exit (a supervisor restarts it once the
    /// network is back, as a fresh follower).
    pub self_fence_exit: bool,
}

impl Default for CpConfig {
    fn default() -> Self {
        CpConfig {
            bootstrap_expect: None,
            heartbeat_ms: 100,
            election_timeout_min_ms: 600,
            election_timeout_max_ms: 1200,
            request_timeout_ms: 5000,
            // etcd's defaults (--snapshot-count, and the entries kept for slow followers): a
            // snapshot encodes the whole keyspace, so it is taken rarely.
            snapshot_every_entries: 100_000,
            logs_kept_after_snapshot: 5_000,
            fence_command: None,
            fence_timeout_ms: 5000,
            self_fence_after_ms: None,
            self_fence_exit: false,
        }
    }
}

/// Why a CP request was not served. Every variant says what to do next.
///
/// Externally tagged on purpose: it travels in postcard frames between nodes, and postcard
/// cannot decode internally tagged enums.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum CpRequestError {
    /// This node's side of the network holds no quorum: refused before anything was proposed.
    #[error(
        "no quorum: {reachable} of {total} {unit} reachable, need {needed}; nothing was applied. \
         Retry, write through a node on the majority side{}, or read with consistency=stale",
        leader_hint(*leader)
    )]
    NoQuorum {
        /// Votes (or nodes, or zones) this side holds.
        reachable: u64,
        /// Votes needed.
        needed: u64,
        /// Votes in the cluster.
        total: u64,
        /// What is counted.
        unit: String,
        /// The last leader this node knew, if any.
        leader: Option<u64>,
    },
    /// No leader is known (an election is under way or this node is cut off).
    #[error("no CP leader known: {detail}; nothing was applied, retry shortly")]
    NoLeader {
        /// What was observed.
        detail: String,
    },
    /// The Raft group was never formed.
    #[error(
        "the CP keyspace is not initialized: start the nodes with --bootstrap-expect N \
         (isle local does) so the first N members form the group"
    )]
    NotInitialized,
    /// Proposed, but no answer in time: it may or may not have been applied.
    #[error(
        "no answer within {after_ms} ms: the write may or may not have been applied; \
         retry with the same request id to apply it exactly once"
    )]
    Timeout {
        /// How long was waited.
        after_ms: u64,
    },
    /// The state machine refused the command (stale fencing token, unknown lease, ...).
    #[error(transparent)]
    Rejected(CpError),
    /// This node fenced itself after too long without quorum.
    #[error(
        "this node fenced itself after {after_ms} ms without quorum and serves no CP requests \
         until its side regains quorum; use a node on the majority side"
    )]
    SelfFenced {
        /// The configured limit.
        after_ms: u64,
    },
    /// The request reached a leader but its outcome is unknown (the leader failed or lost
    /// leadership before answering).
    #[error(
        "outcome unknown: {detail}; the write may or may not have been applied — retry with \
         the same request id to apply it exactly once"
    )]
    Indeterminate {
        /// What happened.
        detail: String,
    },
    /// A membership change named a node the cluster has not heard of (yet).
    #[error(
        "node {id} is not known to this cluster yet: start it with --peers pointing at a member, \
         wait until `isle status` lists it, then retry"
    )]
    UnknownMember {
        /// The node.
        id: u64,
    },
    /// A lock wait gave up; the waiter's key was withdrawn.
    #[error(
        "lock {name:?} not acquired within {waited_ms} ms (held by another client); retry later"
    )]
    LockTimeout {
        /// The lock.
        name: String,
        /// How long was waited.
        waited_ms: u64,
    },
    /// Something internal failed; the message says what.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CpRequestError {
    /// Whether the request was refused, may have been applied, or was invalid: decided here
    /// once for every API (etcd gRPC, HTTP, the lab's clients).
    pub fn kind(&self) -> isle_types::ErrorKind {
        use isle_types::ErrorKind::{Refused, Unknown};
        match self {
            CpRequestError::NoQuorum { .. }
            | CpRequestError::NoLeader { .. }
            | CpRequestError::NotInitialized
            | CpRequestError::SelfFenced { .. }
            | CpRequestError::UnknownMember { .. }
            // The waiter's key was withdrawn: no lock was granted.
            | CpRequestError::LockTimeout { .. } => Refused,
            CpRequestError::Rejected(err) => err.kind(),
            CpRequestError::Timeout { .. }
            | CpRequestError::Indeterminate { .. }
            | CpRequestError::Internal(_) => Unknown,
        }
    }
}

fn leader_hint(leader: Option<u64>) -> String {
    leader
        .map(|id| format!(" (last known leader: node {id})"))
        .unwrap_or_default()
}

/// How a read may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Confirmed with a quorum by the leader (ReadIndex) before reading: never stale.
    #[default]
    Linearizable,
    /// From this node's replica as it is: fast, available in a minority, maybe stale.
    Stale,
}

/// A read's answer and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadOutcome {
    /// The range result; `header_revision` is the revision it read at.
    pub response: RangeResponse,
    /// How it was served.
    pub consistency: Consistency,
    /// The node whose replica answered.
    pub served_by: u64,
    /// That replica's last applied log index, when it was this node's.
    pub applied_index: Option<u64>,
}

/// The Raft side of `/v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaftStatus {
    /// follower, candidate, leader, learner.
    pub role: String,
    /// Current term.
    pub term: u64,
    /// Leader as this node knows it.
    pub leader: Option<u64>,
    /// Highest log index known committed.
    pub commit_index: Option<u64>,
    /// Highest log index applied to the state machine.
    pub applied_index: Option<u64>,
    /// Last log index.
    pub last_log_index: Option<u64>,
    /// Last log index covered by this node's latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Log entries up to here are purged (only a snapshot can bring a follower past them).
    pub purged_index: Option<u64>,
    /// Voters of the current membership.
    pub voters: Vec<u64>,
    /// The state machine's current revision.
    pub revision: i64,
    /// On a leader: whether a quorum acknowledged it within the leader lease (the election
    /// timeout). A leader cut off in a minority keeps its Raft role until it hears a higher
    /// term, but with an expired lease it accepts no proposal (openraft's check-quorum).
    pub leader_lease_valid: Option<bool>,
    /// Milliseconds since a quorum last acknowledged this leader.
    pub quorum_ack_age_ms: Option<u64>,
    /// Fence commands run by this node as new leader (most recent last).
    pub fences: Vec<FenceRecord>,
    /// Whether this node has fenced itself (minority for too long).
    pub self_fenced: bool,
}

/// Snapshots kept as a large record of the node's store (a file of its own on disk).
struct SnapshotRecord(RedbStore);

impl SnapshotStore for SnapshotRecord {
    fn save_snapshot(&self, snapshot: &StoredSnapshot) -> io::Result<()> {
        self.0.save_large_record("cp_snapshot", snapshot)
    }
    fn load_snapshot(&self) -> io::Result<Option<StoredSnapshot>> {
        self.0.load_large_record("cp_snapshot")
    }
}

/// The CP keyspace of one node. Cheap to clone.
#[derive(Clone)]
pub struct Cp {
    inner: Arc<Inner>,
}

struct Inner {
    me: NodeId,
    raft: CpRaft,
    state: SharedState,
    rpc: Arc<PeerRpc>,
    clock: Arc<dyn Clock>,
    status: watch::Receiver<Arc<Status>>,
    config: CpConfig,
    deadlines: leases::Deadlines,
    fences: fence::FenceLog,
    self_fenced: std::sync::atomic::AtomicBool,
    /// Set once this node fenced itself with `self_fence_exit`: the process should exit.
    exit_requested: watch::Sender<bool>,
    /// Linearizable reads share ReadIndex rounds.
    reads: Arc<reads::ReadBatcher>,
    /// AppendEntries reach Raft in arrival order, one lane per leader.
    appends: lanes::AppendLanes,
}

impl std::fmt::Debug for Cp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cp")
            .field("me", &self.inner.me)
            .finish_non_exhaustive()
    }
}

fn raft_config(config: &CpConfig) -> Result<openraft::Config, String> {
    openraft::Config {
        cluster_name: "isle-cp".into(),
        heartbeat_interval: config.heartbeat_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        enable_pre_vote: Some(true),
        // Entries go to the followers as soon as `append` returns, while the leader's own
        // fsync runs (the log store group-commits on a flusher thread).
        broadcast_submitted_on_append: Some(true),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
        max_in_snapshot_log_to_keep: config.logs_kept_after_snapshot,
        ..Default::default()
    }
    .validate()
    .map_err(|e| e.to_string())
}

impl Cp {
    /// Opens the replica from the store and starts Raft, its RNG seeded by `raft_seed` (from
    /// the node's RNG: the OS in production, the run's seed in simulation); spawns the
    /// bootstrap task.
    pub async fn start(
        me: NodeId,
        config: CpConfig,
        raft_seed: u64,
        store: &RedbStore,
        rpc: Arc<PeerRpc>,
        clock: Arc<dyn Clock>,
        status: watch::Receiver<Arc<Status>>,
    ) -> Result<Cp, String> {
        let machine = CpStateMachine::open(
            isle_cp::Config::default(),
            Arc::new(SnapshotRecord(store.clone())),
        )
        .map_err(|e| format!("opening the CP state machine: {e}"))?;
        let state = machine.shared();
        let network =
            CpNetworkFactory::new(Arc::new(RaftLink(Arc::clone(&rpc))) as Arc<dyn RaftRpc>);
        let raft = isle_cp::raft::seeded(
            raft_seed,
            CpRaft::new(
                me.0,
                Arc::new(raft_config(&config)?),
                network,
                store.raft_log_store::<CpTypes>(),
                machine,
            ),
        )
        .await
        .map_err(|e| format!("starting Raft: {e}"))?;
        let cp = Cp {
            inner: Arc::new(Inner {
                me,
                raft,
                state,
                rpc,
                clock,
                status,
                config,
                deadlines: leases::Deadlines::default(),
                fences: fence::FenceLog::default(),
                self_fenced: std::sync::atomic::AtomicBool::new(false),
                exit_requested: watch::channel(false).0,
                reads: Arc::default(),
                appends: lanes::AppendLanes::default(),
            }),
        };
        tokio::spawn(cp.clone().watch_self_fence());
        tokio::spawn(cp.clone().watch_leadership());
        tokio::spawn(cp.clone().bootstrap());
        tokio::spawn(cp.clone().expire_leases());
        Ok(cp)
    }

    /// Stops Raft.
    pub async fn shutdown(&self) {
        let _ = self.inner.raft.shutdown().await;
    }

    /// Forms the group when `bootstrap_expect` members are known, reachable and this node has
    /// the lowest id among them. Runs until the group exists.
    async fn bootstrap(self) {
        let Some(expect) = self.inner.config.bootstrap_expect else {
            return;
        };
        loop {
            if self.initialized() {
                return;
            }
            let members = {
                let status = self.inner.status.borrow();
                let all_reachable = status.peers.iter().all(|p| p.reachable);
                let mut members: BTreeMap<u64, BasicNode> = status
                    .peers
                    .iter()
                    .map(|p| {
                        (
                            p.id.0,
                            BasicNode {
                                addr: p.peer_addr.clone(),
                            },
                        )
                    })
                    .collect();
                members.insert(
                    status.node.0,
                    BasicNode {
                        addr: status.peer_addr.clone(),
                    },
                );
                let lowest = members.keys().next().copied() == Some(self.inner.me.0);
                (all_reachable && lowest && members.len() >= expect).then_some(members)
            };
            if let Some(members) = members {
                let ids: Vec<u64> = members.keys().copied().collect();
                match self.inner.raft.initialize(members).await {
                    Ok(()) => info!(?ids, "formed the CP Raft group"),
                    Err(err) => info!(%err, "CP Raft group already formed"),
                }
                return;
            }
            self.inner.clock.sleep(Duration::from_millis(200)).await;
        }
    }

    fn initialized(&self) -> bool {
        let metrics = self.inner.raft.server_metrics();
        let metrics = metrics.borrow_watched();
        metrics.membership_config.voter_ids().next().is_some()
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.inner.config.request_timeout_ms)
    }

    fn current_leader(&self) -> Option<u64> {
        self.inner
            .raft
            .server_metrics()
            .borrow_watched()
            .current_leader
    }

    /// Refuses up front when this node's side holds no quorum (etcd's "no leader").
    pub fn check_quorum(&self) -> Result<(), CpRequestError> {
        self.check_self_fence()?;
        let voters = self.membership().voters;
        let status = self.inner.status.borrow();
        // Raft counts its own voters, not every gossip member: judge reachability over them.
        let verdict = if voters.is_empty() {
            status.quorum.clone()
        } else {
            let voters: Vec<isle_quorum::Voter> = voters
                .iter()
                .map(|id| isle_quorum::Voter {
                    id: NodeId(*id),
                    weight: 1,
                    zone: String::new(),
                })
                .collect();
            let mut side = status.reachable.clone();
            side.insert(status.node);
            isle_quorum::evaluate(isle_quorum::Policy::Majority, &voters, &side)
        };
        if verdict.held {
            return Ok(());
        }
        Err(CpRequestError::NoQuorum {
            reachable: verdict.have,
            needed: verdict.need,
            total: verdict.total,
            unit: verdict.unit.to_string(),
            leader: self.current_leader(),
        })
    }

    /// Completes once this node's side loses its quorum (the failure detector's verdict), so a
    /// proposal in flight is answered as soon as it can no longer commit soon, not at its
    /// deadline. Watches that require a leader end on it too.
    pub async fn quorum_lost(&self) -> String {
        let mut status = self.inner.status.clone();
        loop {
            // Mark the current status seen, so `changed` waits for the next one (no spinning).
            status.borrow_and_update();
            if let Err(refusal) = self.check_quorum() {
                return format!(
                    "this leader lost its quorum while the write was in flight ({refusal})"
                );
            }
            if status.changed().await.is_err() {
                return "the node is shutting down".into();
            }
        }
    }

    /// Waits (at most `limit`) until some leader is known that this node can reach. A leader
    /// the failure detector has given up on (a paused or cut-off zombie) is not waited on: its
    /// followers elect another within an election timeout, and forwarding to it would only
    /// hang until the zombie woke up.
    async fn leader(&self, limit: Duration) -> Result<u64, CpRequestError> {
        if !self.initialized() {
            return Err(CpRequestError::NotInitialized);
        }
        // Server metrics change only with the role, vote, leader or membership; the full
        // metrics change with every append and apply, which would wake every waiter.
        let mut metrics = self.inner.raft.server_metrics();
        let mut status = self.inner.status.clone();
        let mut last_seen = None;
        let known = async {
            loop {
                let current = metrics.borrow_and_update().current_leader;
                let reachable = {
                    let status = status.borrow_and_update();
                    current.is_some_and(|id| {
                        id == self.inner.me.0 || status.reachable.contains(&NodeId(id))
                    })
                };
                last_seen = current;
                if let (Some(leader), true) = (current, reachable) {
                    return Ok(leader);
                }
                // No leader to reach, and this side cannot elect one: refuse now instead of
                // waiting for the partition to heal.
                self.check_quorum()?;
                let stopped = || CpRequestError::Internal("Raft stopped".into());
                tokio::select! {
                    biased;
                    changed = metrics.changed() => if changed.is_err() { return Err(stopped()) },
                    changed = status.changed() => if changed.is_err() { return Err(stopped()) },
                }
            }
        };
        tokio::select! {
            biased;
            leader = known => leader,
            () = self.inner.clock.sleep(limit) => Err(CpRequestError::NoLeader {
                detail: match last_seen {
                    Some(id) => format!(
                        "leader node {id} unreachable and none other elected within {} ms",
                        limit.as_millis()
                    ),
                    None => format!("none elected within {} ms", limit.as_millis()),
                },
            }),
        }
    }

    /// Resolves once this node no longer believes `leader` leads, or the detector has given up
    /// on it: a request forwarded there will not be answered in time (a paused or cut-off
    /// zombie), so the caller stops waiting.
    async fn leader_lost(&self, leader: u64) -> String {
        let mut metrics = self.inner.raft.server_metrics();
        let mut status = self.inner.status.clone();
        loop {
            let current = metrics.borrow_and_update().current_leader;
            if current != Some(leader) {
                return match current {
                    Some(id) => format!("leadership moved from node {leader} to node {id}"),
                    None => format!("node {leader} is no longer the known leader (election)"),
                };
            }
            if !status
                .borrow_and_update()
                .reachable
                .contains(&NodeId(leader))
            {
                return format!("leader node {leader} became unreachable");
            }
            tokio::select! {
                biased;
                changed = metrics.changed() => if changed.is_err() { return "Raft stopped".into() },
                changed = status.changed() => if changed.is_err() { return "the node is shutting down".into() },
            }
        }
    }

    /// A client write: proposed on the leader (forwarded there if need be). Bounded by one
    /// deadline across waiting for a leader and waiting for its answer.
    pub async fn write(&self, command: Command) -> Result<Response, CpRequestError> {
        self.check_quorum()?;
        let started = self.inner.clock.now();
        let leader = self.leader(self.timeout()).await?;
        if leader == self.inner.me.0 {
            return self.write_as_leader(command).await;
        }
        let remaining = self
            .timeout()
            .saturating_sub(self.inner.clock.now().since(started));
        let request = RpcRequest::Write(command);
        let forwarded = self.inner.rpc.request(NodeId(leader), request, remaining);
        // The old leader may still have appended the write: its fate is unknown, not failed.
        let reply = tokio::select! {
            biased;
            reply = forwarded => reply,
            detail = self.leader_lost(leader) => {
                return Err(CpRequestError::Indeterminate {
                    detail: format!("{detail} while the forwarded write was in flight"),
                });
            }
        };
        let elapsed_ms = self.inner.clock.now().since(started).as_millis() as u64;
        match reply {
            Ok(RpcReply::Write(result)) => result,
            Ok(other) => Err(CpRequestError::Internal(format!(
                "mismatched reply {other:?}"
            ))),
            Err(isle_cp::raft::RpcFailure::Timeout { .. }) => Err(CpRequestError::Timeout {
                after_ms: elapsed_ms,
            }),
            Err(lost @ isle_cp::raft::RpcFailure::Lost { .. }) => {
                Err(CpRequestError::Indeterminate {
                    detail: lost.to_string(),
                })
            }
            Err(failure) => Err(CpRequestError::NoLeader {
                detail: failure.to_string(),
            }),
        }
    }

    /// Proposes on this node, which must be the leader; never forwards.
    async fn write_as_leader(&self, command: Command) -> Result<Response, CpRequestError> {
        let proposal = Proposal {
            command,
            proposed_unix_ms: self.inner.clock.unix_ms(),
        };
        let write = self.inner.raft.client_write(proposal);
        let result = tokio::select! {
            biased;
            result = write => result,
            detail = self.quorum_lost() => {
                return Err(CpRequestError::Indeterminate { detail });
            }
            () = self.inner.clock.sleep(self.timeout()) => {
                return Err(CpRequestError::Timeout { after_ms: self.inner.config.request_timeout_ms });
            }
        };
        match result {
            Ok(response) => match response.data {
                Applied::Command(Ok(response)) => Ok(response),
                Applied::Command(Err(err)) => Err(CpRequestError::Rejected(err)),
                Applied::Internal(_) => Err(CpRequestError::Internal("blank entry answer".into())),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(CpRequestError::NoLeader {
                    detail: match forward.leader_id {
                        Some(id) => format!("leadership moved to node {id}"),
                        None => "the leader lost its quorum lease".into(),
                    },
                })
            }
            // The entry was appended but its fate is unknown (e.g. discarded by a new leader's
            // log, or commit not observed): only a retry with the request id is safe.
            Err(RaftError::APIError(other)) => Err(CpRequestError::Indeterminate {
                detail: other.to_string(),
            }),
            Err(err) => Err(CpRequestError::Internal(err.to_string())),
        }
    }

    /// A client read.
    pub async fn read(
        &self,
        request: RangeRequest,
        consistency: Consistency,
    ) -> Result<ReadOutcome, CpRequestError> {
        self.check_self_fence()?;
        if consistency == Consistency::Stale {
            let stats = &self.inner.reads.stats;
            stats
                .serializable_reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return self.read_local(&request, consistency);
        }
        self.check_quorum()?;
        let timeout = self.timeout();
        let leader = self.leader(timeout).await?;
        if leader == self.inner.me.0 {
            return self.read_as_leader(request).await;
        }
        let forwarded = self
            .inner
            .rpc
            .request(NodeId(leader), RpcRequest::Read(request), timeout);
        let reply = tokio::select! {
            biased;
            reply = forwarded => reply,
            detail = self.leader_lost(leader) => {
                return Err(CpRequestError::NoLeader { detail });
            }
        };
        match reply {
            Ok(RpcReply::Read(result)) => result.map(|response| ReadOutcome {
                response,
                consistency,
                served_by: leader,
                applied_index: None,
            }),
            Ok(other) => Err(CpRequestError::Internal(format!(
                "mismatched reply {other:?}"
            ))),
            Err(failure) => Err(CpRequestError::NoLeader {
                detail: failure.to_string(),
            }),
        }
    }

    /// ReadIndex on this node (the leader), in a round shared with the reads waiting beside
    /// this one, then a local read once applied up to it.
    async fn read_as_leader(&self, request: RangeRequest) -> Result<ReadOutcome, CpRequestError> {
        let inner = &self.inner;
        let confirm = inner
            .reads
            .confirm(&inner.raft, &inner.clock, self.timeout());
        let confirmed = tokio::select! {
            biased;
            confirmed = confirm => confirmed,
            () = self.inner.clock.sleep(self.timeout()) => {
                return Err(CpRequestError::Timeout { after_ms: self.inner.config.request_timeout_ms });
            }
        };
        if let Err(detail) = confirmed {
            return Err(CpRequestError::NoLeader { detail });
        }
        self.read_local(&request, Consistency::Linearizable)
    }

    fn read_local(
        &self,
        request: &RangeRequest,
        consistency: Consistency,
    ) -> Result<ReadOutcome, CpRequestError> {
        let replica = self.inner.state.read();
        let response = replica
            .machine
            .range(request)
            .map_err(CpRequestError::Rejected)?;
        Ok(ReadOutcome {
            response,
            consistency,
            served_by: self.inner.me.0,
            applied_index: Some(replica.last_applied.map(|id| id.index).unwrap_or(0)),
        })
    }

    /// Queues an AppendEntries from `from` on its ordered lane (see [`lanes`]); the reply goes
    /// back over the transport.
    pub fn submit_append(
        &self,
        from: NodeId,
        id: u64,
        request: openraft::raft::AppendEntriesRequest<CpTypes>,
    ) {
        let inner = &self.inner;
        inner
            .appends
            .submit(&inner.raft, &inner.rpc, from, id, request);
    }

    /// Serves a request from a peer; the reply goes back over the transport.
    pub async fn handle_request(&self, from: NodeId, id: u64, body: RpcRequest) {
        let reply = match body {
            RpcRequest::Raft(request) => {
                RpcReply::Raft(isle_cp::raft::serve(&self.inner.raft, request).await)
            }
            RpcRequest::Write(command) => RpcReply::Write(self.forwarded_write(command).await),
            RpcRequest::Read(request) => RpcReply::Read(
                self.forwarded_read(request)
                    .await
                    .map(|outcome| outcome.response),
            ),
            RpcRequest::KeepAlive(id) => RpcReply::KeepAlive(self.keep_alive_as_leader(id)),
            RpcRequest::LeaseTtl(id) => RpcReply::LeaseTtl(self.lease_ttl(id)),
            RpcRequest::Membership(change) => {
                RpcReply::Membership(self.change_as_leader(change).await)
            }
            // The node's loop routes these to the AP keyspace.
            RpcRequest::Ap(_) => return,
        };
        self.inner.rpc.reply(from, id, reply);
    }

    async fn forwarded_write(&self, command: Command) -> Result<Response, CpRequestError> {
        self.check_quorum()?;
        if self.current_leader() != Some(self.inner.me.0) {
            return Err(CpRequestError::NoLeader {
                detail: "forwarded to a non-leader".into(),
            });
        }
        self.write_as_leader(command).await
    }

    async fn forwarded_read(&self, request: RangeRequest) -> Result<ReadOutcome, CpRequestError> {
        self.check_quorum()?;
        if self.current_leader() != Some(self.inner.me.0) {
            return Err(CpRequestError::NoLeader {
                detail: "forwarded to a non-leader".into(),
            });
        }
        self.read_as_leader(request).await
    }

    /// Counters of the read path (ReadIndex rounds per linearizable read).
    pub fn read_stats(&self) -> Arc<ReadStats> {
        Arc::clone(&self.inner.reads.stats)
    }

    /// The current Raft term (cheap: for every response header).
    pub fn term(&self) -> u64 {
        self.inner
            .raft
            .server_metrics()
            .borrow_watched()
            .vote
            .leader_id()
            .term
    }

    /// Role, term, leader and indexes for `/v1/status`.
    // `millis_since_quorum_ack` is deprecated for `last_quorum_acked`, an Instant; the age is
    // what status needs, and computing it here would read a clock outside the seams.
    #[allow(deprecated)]
    pub fn raft_status(&self) -> RaftStatus {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        RaftStatus {
            role: role.into(),
            term: metrics.current_term,
            leader: metrics.current_leader,
            commit_index: metrics.cluster_committed.map(|id| id.index),
            applied_index: metrics.last_applied.map(|id| id.index),
            last_log_index: metrics.last_log_index,
            snapshot_index: metrics.snapshot.map(|id| id.index),
            purged_index: metrics.purged.map(|id| id.index),
            voters: metrics.membership_config.voter_ids().collect(),
            revision: self.inner.state.read().machine.revision(),
            leader_lease_valid: (metrics.state == ServerState::Leader).then(|| {
                metrics
                    .millis_since_quorum_ack
                    .is_some_and(|age| age < self.inner.config.election_timeout_max_ms)
            }),
            quorum_ack_age_ms: metrics.millis_since_quorum_ack,
            fences: self.inner.fences.records(),
            self_fenced: self
                .inner
                .self_fenced
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The replica, for local queries (fence checks, watches).
    pub fn state(&self) -> &SharedState {
        &self.inner.state
    }
}

/// Leases and locks.
impl Cp {
    /// Grants a lease of `ttl_secs` (id 0: the state machine picks one).
    pub async fn lease_grant(
        &self,
        id: i64,
        ttl_secs: i64,
    ) -> Result<isle_cp::command::LeaseGrantResponse, CpRequestError> {
        let request = isle_cp::command::LeaseGrantRequest { id, ttl_secs };
        match self
            .write(Command::new(isle_cp::Request::LeaseGrant(request)))
            .await?
        {
            Response::LeaseGrant(granted) => Ok(granted),
            other => Err(CpRequestError::Internal(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Revokes a lease: every key attached to it is deleted in one revision.
    pub async fn lease_revoke(
        &self,
        id: i64,
    ) -> Result<isle_cp::command::LeaseRevokeResponse, CpRequestError> {
        let request = isle_cp::command::LeaseRevokeRequest { id };
        match self
            .write(Command::new(isle_cp::Request::LeaseRevoke(request)))
            .await?
        {
            Response::LeaseRevoke(revoked) => Ok(revoked),
            other => Err(CpRequestError::Internal(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Extends a lease by its TTL (on the leader, which alone tracks deadlines); returns the TTL.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, CpRequestError> {
        self.check_quorum()?;
        let timeout = self.timeout();
        let leader = self.leader(timeout).await?;
        if leader == self.inner.me.0 {
            return self.keep_alive_as_leader(id);
        }
        match self
            .inner
            .rpc
            .request(NodeId(leader), RpcRequest::KeepAlive(id), timeout)
            .await
        {
            Ok(RpcReply::KeepAlive(result)) => result,
            Ok(other) => Err(CpRequestError::Internal(format!(
                "mismatched reply {other:?}"
            ))),
            Err(failure) => Err(CpRequestError::NoLeader {
                detail: failure.to_string(),
            }),
        }
    }

    fn keep_alive_as_leader(&self, id: i64) -> Result<i64, CpRequestError> {
        if self.current_leader() != Some(self.inner.me.0) {
            return Err(CpRequestError::NoLeader {
                detail: "keep-alive sent to a non-leader".into(),
            });
        }
        let Some(lease) = self.inner.state.read().machine.lease(id) else {
            return Err(CpRequestError::Rejected(CpError::LeaseNotFound { id }));
        };
        // A lease granted too recently for the expiry task to track starts at now + ttl anyway.
        self.inner
            .deadlines
            .keep_alive(id, lease.ttl_secs, self.inner.clock.now());
        Ok(lease.ttl_secs)
    }

    /// A lease's granted TTL and, on the leader, the seconds left.
    pub fn lease_ttl(&self, id: i64) -> Option<(i64, Option<i64>)> {
        let lease = self.inner.state.read().machine.lease(id)?;
        let remaining = self
            .inner
            .deadlines
            .remaining_ms(id, self.inner.clock.now())
            .map(|ms| i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX));
        Some((lease.ttl_secs, remaining))
    }

    /// A lease's granted TTL and seconds left, asking the leader (which alone tracks
    /// deadlines) when this node is not it; `None` if the lease does not exist.
    pub async fn lease_time_to_live(&self, id: i64) -> Option<(i64, i64)> {
        let (granted, remaining) = self.lease_ttl(id)?;
        if let Some(remaining) = remaining {
            return Some((granted, remaining));
        }
        let asked = match self.current_leader() {
            Some(leader) if leader != self.inner.me.0 => {
                let request = RpcRequest::LeaseTtl(id);
                let timeout = Duration::from_millis(self.inner.config.heartbeat_ms * 10);
                self.inner
                    .rpc
                    .request(NodeId(leader), request, timeout)
                    .await
                    .ok()
            }
            _ => None,
        };
        match asked {
            Some(RpcReply::LeaseTtl(Some((granted, Some(remaining))))) => {
                Some((granted, remaining))
            }
            Some(RpcReply::LeaseTtl(None)) => None,
            // No leader answer: the granted TTL is the best bound this node knows.
            _ => Some((granted, granted)),
        }
    }

    /// Every lease of the replica.
    pub fn leases(&self) -> Vec<isle_cp::command::LeaseInfo> {
        self.inner.state.read().machine.leases()
    }

    /// On the leader, revokes leases whose deadline passed; runs for the node's life.
    async fn expire_leases(self) {
        let period = Duration::from_millis(self.inner.config.heartbeat_ms.max(50));
        loop {
            self.inner.clock.sleep(period).await;
            let (is_leader, term) = {
                let metrics = self.inner.raft.metrics();
                let metrics = metrics.borrow_watched();
                (
                    metrics.current_leader == Some(self.inner.me.0),
                    metrics.current_term,
                )
            };
            if !is_leader {
                self.inner.deadlines.clear();
                continue;
            }
            let leases: BTreeMap<i64, i64> = self
                .leases()
                .into_iter()
                .map(|lease| (lease.id, lease.ttl_secs))
                .collect();
            let now = self.inner.clock.now();
            for id in self.inner.deadlines.expired(term, now, &leases) {
                info!(lease = id, "lease expired: revoking");
                let request = isle_cp::command::LeaseRevokeRequest { id };
                if let Err(err) = self
                    .write_as_leader(Command::new(isle_cp::Request::LeaseRevoke(request)))
                    .await
                {
                    info!(lease = id, %err, "lease revoke not applied; will retry");
                }
            }
        }
    }

    /// Acquires lock `name` under `lease`, waiting in queue order up to `timeout`. The answer's
    /// `token` is the fencing token: present it with writes that the lock protects.
    pub async fn lock(
        &self,
        name: &str,
        lease: i64,
        timeout: Duration,
    ) -> Result<isle_cp::command::LockAcquireResponse, CpRequestError> {
        let request = isle_cp::command::LockAcquireRequest {
            name: name.to_string(),
            lease,
        };
        let mut acquired = match self
            .write(Command::new(isle_cp::Request::LockAcquire(request)))
            .await?
        {
            Response::LockAcquire(acquired) => acquired,
            other => {
                return Err(CpRequestError::Internal(format!(
                    "unexpected answer {other:?}"
                )));
            }
        };
        if acquired.is_holder {
            return Ok(acquired);
        }
        let mut changes = self.changes();
        let turn = async {
            loop {
                if self
                    .inner
                    .state
                    .read()
                    .machine
                    .is_holder(name, &acquired.key)
                {
                    return true;
                }
                if !changes.next().await {
                    return false;
                }
            }
        };
        let ours = tokio::select! {
            biased;
            ours = turn => ours,
            () = self.inner.clock.sleep(timeout) => false,
        };
        if ours {
            acquired.is_holder = true;
            return Ok(acquired);
        }
        // Withdraw from the queue so a later holder is not blocked by an abandoned waiter.
        let _ = self.unlock(acquired.key.clone()).await;
        Err(CpRequestError::LockTimeout {
            name: name.to_string(),
            waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Releases a lock (or withdraws a waiter) by its key.
    pub async fn unlock(
        &self,
        key: Vec<u8>,
    ) -> Result<isle_cp::command::LockReleaseResponse, CpRequestError> {
        let request = isle_cp::command::LockReleaseRequest { key };
        match self
            .write(Command::new(isle_cp::Request::LockRelease(request)))
            .await?
        {
            Response::LockRelease(released) => Ok(released),
            other => Err(CpRequestError::Internal(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Completes at the next change after this call (an apply, or any Raft metrics change).
    /// A loop that reads then waits should hold a [`Changes`] instead, so a change between its
    /// read and its wait is not missed.
    pub async fn changed(&self) -> bool {
        self.changes().next().await
    }

    /// A subscription to the replica's changes: the wake-up for watches and lock waits.
    pub fn changes(&self) -> Changes {
        let mut metrics = self.inner.raft.metrics();
        metrics.borrow_and_update();
        Changes(metrics)
    }
}

/// Fencing: STONITH of the previous leader, and self-fencing in a long minority.
impl Cp {
    /// Refuses everything once this node has spent `self_fence_after_ms` in Emergency; lifts
    /// when the node leaves Emergency.
    fn check_self_fence(&self) -> Result<(), CpRequestError> {
        use std::sync::atomic::Ordering;
        let Some(after_ms) = self.inner.config.self_fence_after_ms else {
            return Ok(());
        };
        let fenced = {
            let status = self.inner.status.borrow();
            status.state == isle_detect::State::Emergency && status.state_for_ms >= after_ms
        };
        let was = self.inner.self_fenced.swap(fenced, Ordering::Relaxed);
        if fenced != was {
            info!(fenced, after_ms, "self-fence");
        }
        if fenced {
            Err(CpRequestError::SelfFenced { after_ms })
        } else {
            Ok(())
        }
    }

    /// Re-evaluates self-fencing whenever the node's status changes (not only on requests),
    /// and asks the process to exit when configured to.
    async fn watch_self_fence(self) {
        if self.inner.config.self_fence_after_ms.is_none() {
            return;
        }
        let mut status = self.inner.status.clone();
        loop {
            status.borrow_and_update();
            let fenced = self.check_self_fence().is_err();
            if fenced && self.inner.config.self_fence_exit {
                self.inner.exit_requested.send_replace(true);
            }
            if status.changed().await.is_err() {
                return;
            }
        }
    }

    /// Becomes `true` when this node fenced itself and was configured to exit.
    pub fn exit_requested(&self) -> watch::Receiver<bool> {
        self.inner.exit_requested.subscribe()
    }

    /// Watches Raft's leader; on becoming leader of a new term, fences the previous leader.
    async fn watch_leadership(self) {
        let mut metrics = self.inner.raft.metrics();
        let mut last_other_leader: Option<u64> = None;
        let mut fenced_term: Option<u64> = None;
        loop {
            let (leader, term) = {
                let m = metrics.borrow_and_update();
                (m.current_leader, m.current_term)
            };
            match leader {
                Some(id) if id == self.inner.me.0 && fenced_term != Some(term) => {
                    fenced_term = Some(term);
                    self.fence_previous(last_other_leader, term).await;
                }
                Some(id) if id != self.inner.me.0 => last_other_leader = Some(id),
                _ => {}
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// Runs the fence command against `previous` (if both are known) and records the outcome.
    async fn fence_previous(&self, previous: Option<u64>, term: u64) {
        let (Some(previous), Some(command)) =
            (previous, self.inner.config.fence_command.as_deref())
        else {
            return;
        };
        let timeout = Duration::from_millis(self.inner.config.fence_timeout_ms);
        let record = fence::run(command, previous, term, timeout, &self.inner.clock).await;
        self.inner.fences.push(record);
    }
}

/// See [`Cp::changes`].
pub struct Changes(
    openraft::type_config::alias::WatchReceiverOf<CpTypes, openraft::RaftMetrics<CpTypes>>,
);

impl Changes {
    /// Waits for the next change since the last call (or since subscribing); false once Raft
    /// has stopped.
    pub async fn next(&mut self) -> bool {
        let changed = self.0.changed().await.is_ok();
        self.0.borrow_and_update();
        changed
    }
}
