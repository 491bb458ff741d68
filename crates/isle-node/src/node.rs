//! The IO shell around the cluster core: opens the store, starts the transport, and runs the
//! node's one event loop (messages in, timers from `poll_timeout`, outputs out).

use std::sync::Arc;

use isle_env::{Clock, ClockSkew, MetaStore, Network, SeededRandom, StoreError, SystemClock};
use isle_net::{Faults, NetMetrics, PeerAddr, TcpNetwork, Transport};
use isle_storage::RedbStore;
use isle_types::{Identity, Member, NodeId};
use prometheus_client::registry::Registry;
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use crate::ap::Ap;
use crate::config::NodeConfig;
use crate::core::{Cluster, Output};
use crate::cp::Cp;
use crate::message::{PeerMessage, RpcRequest};
use crate::metrics::NodeMetrics;
use crate::rpc::PeerRpc;
use crate::status::Status;

/// The world a node runs in: real for `isle node`, simulated in the chaos lab.
pub struct Env<N: Network> {
    /// Clock for every wait and timestamp.
    pub clock: Arc<dyn Clock>,
    /// Root of every random draw.
    pub rng: SeededRandom,
    /// Sockets.
    pub net: Arc<N>,
    /// Durable state: redb on a file, or in memory for simulation.
    pub store: RedbStore,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data dir's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data dir belongs to another node.
    #[error(
        "data dir belongs to node {stored}, not {configured}: use --id {stored} or another --data-dir"
    )]
    IdentityMismatch {
        /// Id saved in the data dir.
        stored: NodeId,
        /// Id given on the command line.
        configured: NodeId,
    },
    /// The peer transport could not start (address in use, bad address, ...).
    #[error("peer transport: {0}")]
    Transport(#[from] isle_net::NetError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The CP keyspace (Raft) could not start.
    #[error("CP keyspace: {0}")]
    Cp(String),
    /// The AP keyspace could not start.
    #[error("AP keyspace: {0}")]
    Ap(String),
}

/// A running node, as the admin API and tests reach it.
#[derive(Clone)]
pub struct NodeHandle {
    /// The latest status snapshot, republished after every event.
    pub status: watch::Receiver<Arc<Status>>,
    /// The transport's fault-injection table.
    pub faults: Faults,
    /// Every metric of this node.
    pub registry: Arc<Registry>,
    /// The node's identity as loaded from its data dir.
    pub identity: Identity,
    /// The CP keyspace.
    pub cp: Cp,
    /// The AP keyspace.
    pub ap: Ap,
    /// The wall clock's skew, when the node runs on the system clock (the chaos lab jumps it
    /// through `/v1/faults/clock` on nodes that allow fault injection).
    pub clock_skew: Option<ClockSkew>,
    /// The node's clock (the only one its API layer may sleep on: simulated in the sim).
    pub clock: Arc<dyn Clock>,
    shutdown: Arc<std::sync::Mutex<Option<oneshot::Sender<()>>>>,
    done: watch::Receiver<bool>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// Asks the node to stop and waits until its loop has ended.
    pub async fn shutdown(&self) {
        let sender = self.shutdown.lock().ok().and_then(|mut guard| guard.take());
        if let Some(sender) = sender {
            let _ = sender.send(());
        }
        let mut done = self.done.clone();
        let _ = done.wait_for(|finished| *finished).await;
    }
}

/// Starts a real node: redb in the data dir, tokio TCP, the system clock, an OS-seeded RNG.
pub async fn start(config: NodeConfig) -> Result<NodeHandle, NodeError> {
    config.validate()?;
    let store = RedbStore::open(&config.data_dir)?;
    let rng = SeededRandom::from_os();
    info!(seed = rng.seed(), "random seed");
    let clock = SystemClock::new();
    let skew = clock.skew();
    let env = Env {
        clock: Arc::new(clock),
        rng,
        net: Arc::new(TcpNetwork),
        store,
    };
    let mut handle = start_with(config, env).await?;
    handle.clock_skew = Some(skew);
    Ok(handle)
}

/// Loads or creates the identity; a restart bumps the incarnation.
fn load_identity(
    store: &mut impl MetaStore,
    config: &NodeConfig,
    unix_ms: u64,
) -> Result<Identity, NodeError> {
    let identity = match store.load_identity()? {
        Some(stored) if stored.node_id != config.id => {
            return Err(NodeError::IdentityMismatch {
                stored: stored.node_id,
                configured: config.id,
            });
        }
        Some(stored) => Identity {
            incarnation: stored.incarnation + 1,
            ..stored
        },
        None => Identity {
            node_id: config.id,
            incarnation: 1,
            created_unix_ms: unix_ms,
        },
    };
    store.save_identity(&identity)?;
    Ok(identity)
}

/// Starts a node in the given environment.
pub async fn start_with<N: Network>(
    config: NodeConfig,
    mut env: Env<N>,
) -> Result<NodeHandle, NodeError> {
    let identity = load_identity(&mut env.store, &config, env.clock.unix_ms())?;
    let me = Member {
        id: config.id,
        peer_addr: config.advertised().to_string(),
        http_addr: config.http.clone(),
        grpc_addr: config.grpc.clone(),
        zone: config.zone.clone(),
        weight: config.weight,
    };
    env.store.save_members(std::slice::from_ref(&me))?;
    let members = env.store.load_members()?;
    info!(node = %me.id, incarnation = identity.incarnation, members = members.len(), "starting");

    let mut registry = Registry::default();
    let net_metrics = Arc::new(NetMetrics::default());
    net_metrics.register(&mut registry);
    let metrics = NodeMetrics::new();
    metrics.register(&mut registry);

    let faults = Faults::new(config.allow_fault_injection);
    let (transport, inbound) = Transport::<PeerMessage>::start(
        env.net.clone(),
        env.clock.clone(),
        env.rng.fork(),
        me.id,
        &config.listen,
        config.transport.clone(),
        faults.clone(),
        net_metrics,
    )
    .await?;

    let now = env.clock.now();
    let core = Cluster::new(
        now,
        me,
        identity.incarnation,
        members,
        config.peers.clone(),
        config.detection.clone(),
        config.quorum_policy,
    );
    let (status_tx, status_rx) = watch::channel(Arc::new(core.status(now)));
    let rpc = Arc::new(PeerRpc::new(
        transport.clone(),
        env.clock.clone(),
        status_rx.clone(),
    ));
    let cp = Cp::start(
        config.id,
        config.cp.clone(),
        isle_env::Random::next_u64(&mut env.rng),
        &env.store,
        Arc::clone(&rpc),
        env.clock.clone(),
        status_rx.clone(),
    )
    .await
    .map_err(NodeError::Cp)?;
    registry.register_collector(Box::new(crate::cp::CpCollector {
        log: Arc::clone(env.store.log_stats()),
        reads: cp.read_stats(),
    }));
    let ap = Ap::start(
        config.id,
        config.ap.clone(),
        &env.store,
        Arc::clone(&rpc),
        env.clock.clone(),
        status_rx.clone(),
        &mut registry,
    )
    .map_err(NodeError::Ap)?;
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let (done_tx, done_rx) = watch::channel(false);
    let event_loop = EventLoop {
        core,
        clock: env.clock.clone(),
        store: env.store,
        transport,
        metrics,
        rpc,
        cp: cp.clone(),
        ap: ap.clone(),
    };
    tokio::spawn(async move {
        event_loop.run(inbound, shutdown_rx, status_tx).await;
        let _ = done_tx.send(true);
    });
    Ok(NodeHandle {
        status: status_rx,
        faults,
        registry: Arc::new(registry),
        identity,
        cp,
        ap,
        clock_skew: None,
        clock: env.clock,
        shutdown: Arc::new(std::sync::Mutex::new(Some(shutdown_tx))),
        done: done_rx,
    })
}

/// The single task that owns the core; everything else talks to it through channels.
struct EventLoop {
    core: Cluster,
    clock: Arc<dyn Clock>,
    store: RedbStore,
    transport: Transport<PeerMessage>,
    metrics: NodeMetrics,
    rpc: Arc<PeerRpc>,
    cp: Cp,
    ap: Ap,
}

impl EventLoop {
    async fn run(
        mut self,
        mut inbound: tokio::sync::mpsc::Receiver<isle_net::Inbound<PeerMessage>>,
        mut shutdown: oneshot::Receiver<()>,
        status: watch::Sender<Arc<Status>>,
    ) {
        loop {
            let deadline = self.core.poll_timeout();
            // `biased`: a fixed polling order keeps the loop deterministic under simulation, and
            // timers come before messages so a flood of messages cannot starve heartbeats.
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                _ = self.clock.sleep_until(deadline) => {
                    self.core.handle_timeout(self.clock.now());
                }
                message = inbound.recv() => match message {
                    // Requests and replies leave the core as it was: no new status to publish
                    // (publishing wakes every waiter on it, thousands of times a second under
                    // load).
                    Some(message) => if !self.handle_message(message) { continue },
                    None => break,
                },
            }
            self.core.set_reconcile_pending(self.ap.reconcile_pending());
            let snapshot = Arc::new(self.core.status(self.clock.now()));
            self.drain_outputs(&snapshot);
            self.metrics.observe(&snapshot);
            status.send_replace(snapshot);
        }
        self.ap.shutdown();
        self.cp.shutdown().await;
        self.transport.shutdown().await;
        info!(node = %self.core.id(), "stopped");
    }

    /// Handles one peer message; says whether it reached the core (a heartbeat).
    fn handle_message(&mut self, message: isle_net::Inbound<PeerMessage>) -> bool {
        let now = self.clock.now();
        match message.msg {
            PeerMessage::Heartbeat(heartbeat) => {
                self.core.handle_heartbeat(now, message.from, heartbeat);
                return true;
            }
            PeerMessage::Request {
                id,
                body: RpcRequest::Ap(request),
            } => {
                let ap = self.ap.clone();
                tokio::spawn(async move { ap.handle_request(message.from, id, request).await });
            }
            PeerMessage::Request {
                id,
                body: RpcRequest::Raft(isle_cp::raft::RaftRequest::Append(request)),
            } => self.cp.submit_append(message.from, id, request),
            PeerMessage::Request { id, body } => {
                // Served off the loop: a Raft append or a forwarded write may take a while.
                let cp = self.cp.clone();
                tokio::spawn(async move { cp.handle_request(message.from, id, body).await });
            }
            PeerMessage::Reply { id, body } => self.rpc.complete(id, body),
        }
        false
    }

    fn drain_outputs(&mut self, snapshot: &Status) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Broadcast { to, heartbeat } => {
                    let message = PeerMessage::Heartbeat(heartbeat);
                    for (addr, id) in to {
                        // Failures (full queue, open breaker) are counted by the transport; a
                        // heartbeat is never worth waiting for.
                        let _ = self.transport.send(&PeerAddr { addr, id }, message.clone());
                    }
                }
                Output::ResetLink { addr } => self.transport.reset(&addr),
                Output::PersistMembers(members) => {
                    if let Err(err) = self.store.save_members(&members) {
                        error!(%err, "could not persist membership; it will be relearned from gossip");
                    }
                }
                Output::Transition(transition) => {
                    info!(from = %transition.from, to = %transition.to, at = %transition.at,
                          quorum = %snapshot.quorum_reason, "partition state");
                    self.metrics.record_transition(&transition, snapshot);
                }
                Output::PeerReachability { id, reachable } => {
                    if reachable {
                        info!(peer = %id, "peer reachable");
                    } else {
                        warn!(peer = %id, "peer unreachable");
                        self.rpc.fail_target(id);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn config(id: u64) -> NodeConfig {
        let text = format!(
            "id = {id}\nlisten = \"127.0.0.1:1\"\nhttp = \"127.0.0.1:2\"\ndata_dir = \"unused\"\n"
        );
        let mut config: NodeConfig = toml::from_str(&text).expect("config");
        config.data_dir = PathBuf::from("unused");
        config
    }

    #[test]
    fn identity_is_created_then_kept_with_a_higher_incarnation() {
        let mut store = RedbStore::in_memory().expect("store");
        let first = load_identity(&mut store, &config(3), 1_000).expect("first start");
        assert_eq!(
            (first.node_id, first.incarnation, first.created_unix_ms),
            (NodeId(3), 1, 1_000)
        );
        let second = load_identity(&mut store, &config(3), 9_000).expect("restart");
        assert_eq!(
            (second.node_id, second.incarnation, second.created_unix_ms),
            (NodeId(3), 2, 1_000)
        );
    }

    #[test]
    fn a_data_dir_refuses_another_node_id() {
        let mut store = RedbStore::in_memory().expect("store");
        load_identity(&mut store, &config(3), 0).expect("first start");
        let err = load_identity(&mut store, &config(4), 0).expect_err("wrong id");
        assert!(
            err.to_string()
                .contains("data dir belongs to node 3, not 4"),
            "{err}"
        );
        assert_eq!(
            store.load_identity().expect("load").map(|i| i.incarnation),
            Some(1)
        );
    }
}
