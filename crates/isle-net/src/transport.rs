//! The transport handle: lazily created per-peer senders plus the inbound listener.
//!
//! Connection model: every node dials its own outbound connection to each peer it sends to and
//! uses it only for sending; the peer dials a separate connection back for its own messages.
//! Each direction therefore has one owner, one queue and one set of counters, which makes
//! one-way faults and per-direction accounting natural, and a dead peer only ever stalls the task
//! that owns its queue.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use isle_env::{Clock, Listener, Network, SeededRandom};
use isle_types::NodeId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::fault::Faults;
use crate::frame::{self, Envelope, FrameError, MAX_FRAME_BYTES_DEFAULT};
use crate::inbound::{self, InboundContext};
use crate::metrics::{DropReason, NetMetrics};
use crate::peer::{self, Outgoing, PeerContext, PeerTask};

#[cfg(test)]
mod tests;

/// Most distinct peer addresses one transport keeps queues for.
pub const PEERS_MAX: usize = 4096;

/// Tunables of the transport; `Default` gives the production values.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TransportConfig {
    /// Messages queued per peer before `send` reports `QueueFull`.
    pub queue_capacity: usize,
    /// Messages queued for the node loop before inbound frames are dropped.
    pub inbound_capacity: usize,
    /// How long one dial may take.
    pub connect_timeout: Duration,
    /// How long one batched write may take before the connection is declared stuck.
    pub write_timeout: Duration,
    /// Shortest wait between failed dials.
    pub backoff_base: Duration,
    /// Longest wait between failed dials.
    pub backoff_max: Duration,
    /// Consecutive failed dials that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker rejects sends before one trial dial.
    pub breaker_cooldown: Duration,
    /// Largest payload accepted or sent; a bigger length prefix closes the connection.
    pub max_frame_bytes: usize,
    /// Most messages held back by delay faults at once (both directions).
    pub delayed_max: usize,
    /// An inbound connection silent this long is closed: its sender is gone or cut off (a
    /// peer behind a silent partition never sends the FIN), and it would hold a reader forever.
    pub inbound_idle_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            queue_capacity: 1024,
            inbound_capacity: 8192,
            connect_timeout: Duration::from_millis(500),
            write_timeout: Duration::from_secs(2),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(2),
            max_frame_bytes: MAX_FRAME_BYTES_DEFAULT,
            delayed_max: 10_000,
            inbound_idle_timeout: Duration::from_secs(30),
        }
    }
}

impl TransportConfig {
    /// Rejects values the transport cannot run with.
    pub fn validate(&self) -> Result<(), NetError> {
        let bad = |what: &str| Err(NetError::BadConfig(what.to_string()));
        if self.queue_capacity == 0 || self.inbound_capacity == 0 {
            return bad("queue_capacity and inbound_capacity must be at least 1");
        }
        if self.breaker_failures == 0 {
            return bad("breaker_failures must be at least 1");
        }
        if self.max_frame_bytes == 0 || self.max_frame_bytes > u32::MAX as usize {
            return bad("max_frame_bytes must be between 1 and 4294967295");
        }
        if self.backoff_base > self.backoff_max {
            return bad("backoff_base must not exceed backoff_max");
        }
        Ok(())
    }
}

/// Where to send: the peer's transport address and, once known, its node id (for fault rules
/// and metric labels).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerAddr {
    /// host:port of the peer's transport listener.
    pub addr: String,
    /// The peer's id, if known (unknown while dialling a seed).
    pub id: Option<NodeId>,
}

impl PeerAddr {
    /// A peer whose id is known.
    pub fn new(addr: impl Into<String>, id: NodeId) -> Self {
        PeerAddr {
            addr: addr.into(),
            id: Some(id),
        }
    }

    /// A peer known only by address (a seed).
    pub fn seed(addr: impl Into<String>) -> Self {
        PeerAddr {
            addr: addr.into(),
            id: None,
        }
    }
}

/// One message received from a peer.
#[derive(Debug, Clone)]
pub struct Inbound<M> {
    /// The sender, as stated in its envelope.
    pub from: NodeId,
    /// The message.
    pub msg: M,
}

/// A peer's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Dialling normally.
    Closed,
    /// Cooldown over; one trial dial decides.
    HalfOpen,
    /// Too many failed dials; sends are rejected until the cooldown ends.
    Open,
}

impl BreakerState {
    /// The value of the `breaker_state` gauge.
    pub fn gauge(self) -> i64 {
        self as i64
    }

    fn from_u8(raw: u8) -> Self {
        match raw {
            0 => BreakerState::Closed,
            1 => BreakerState::HalfOpen,
            _ => BreakerState::Open,
        }
    }
}

/// A snapshot of one peer's sender, for status pages and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerState {
    /// Dialled address.
    pub addr: String,
    /// Node id, if known.
    pub id: Option<NodeId>,
    /// Whether the outbound connection is up.
    pub connected: bool,
    /// Breaker state.
    pub breaker: BreakerState,
    /// Messages waiting in the peer's queue.
    pub queue_len: usize,
    /// Failed dials since the last success.
    pub consecutive_failures: u32,
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The listen address could not be bound.
    #[error("could not listen on {addr}: {source} (is another process using the port?)")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid transport config: {0}")]
    BadConfig(String),
}

/// Why `send` refused a message. The message is gone in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The peer's queue is full.
    #[error(
        "queue to {addr} is full ({capacity} messages): the peer is slow or unreachable; \
         retry later or raise queue_capacity"
    )]
    QueueFull {
        /// The peer.
        addr: String,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The peer's breaker is open after repeated failed dials.
    #[error(
        "circuit to {addr} is open after repeated connection failures: message dropped; \
         the transport redials after breaker_cooldown"
    )]
    BreakerOpen {
        /// The peer.
        addr: String,
    },
    /// The message could not be framed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The transport holds queues for [`PEERS_MAX`] addresses already.
    #[error("already sending to {0} peer addresses: check for addresses that never repeat")]
    TooManyPeers(usize),
    /// The transport was shut down.
    #[error("the transport is shut down")]
    ShutDown,
}

/// Per-peer state shared between `send`, `peer_states` and the peer's task.
#[derive(Debug)]
pub(crate) struct PeerShared {
    pub(crate) addr: String,
    /// 0 while unknown: node id 0 is never valid.
    id: AtomicU64,
    connected: AtomicBool,
    breaker: AtomicU8,
    failures: AtomicU32,
}

impl PeerShared {
    fn new(addr: String, id: Option<NodeId>) -> Self {
        PeerShared {
            addr,
            id: AtomicU64::new(id.map_or(0, |id| id.0)),
            connected: AtomicBool::new(false),
            breaker: AtomicU8::new(BreakerState::Closed as u8),
            failures: AtomicU32::new(0),
        }
    }

    pub(crate) fn id(&self) -> Option<NodeId> {
        match self.id.load(Ordering::Relaxed) {
            0 => None,
            id => Some(NodeId(id)),
        }
    }

    /// Metric label: the id once known, the address before.
    pub(crate) fn label(&self) -> String {
        self.id()
            .map_or_else(|| self.addr.clone(), |id| id.to_string())
    }

    pub(crate) fn breaker(&self) -> BreakerState {
        BreakerState::from_u8(self.breaker.load(Ordering::Acquire))
    }

    pub(crate) fn set_breaker(&self, state: BreakerState) {
        self.breaker.store(state as u8, Ordering::Release);
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    /// Records a failed dial; returns the consecutive count.
    pub(crate) fn dial_failed(&self) -> u32 {
        self.failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }

    pub(crate) fn dial_succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }
}

/// Bounds how many messages delay faults hold at once.
#[derive(Debug)]
pub(crate) struct DelayBudget {
    held: AtomicUsize,
    max: usize,
}

/// One held message's share of the [`DelayBudget`]; released on drop.
pub(crate) struct DelayPermit(Arc<DelayBudget>);

impl DelayBudget {
    pub(crate) fn try_hold(self: &Arc<Self>) -> Option<DelayPermit> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.max).then_some(held + 1)
            })
            .ok()
            .map(|_| DelayPermit(Arc::clone(self)))
    }
}

impl Drop for DelayPermit {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Completes once shutdown is signalled (or every transport handle is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped with the last handle: that is a stop too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

struct PeerHandle {
    queue: mpsc::Sender<Outgoing>,
    shared: Arc<PeerShared>,
    reset: watch::Sender<u64>,
    task: JoinHandle<()>,
}

type SpawnPeer = Box<dyn Fn(PeerTask) -> JoinHandle<()> + Send + Sync>;

struct Inner {
    me: NodeId,
    local_addr: String,
    config: TransportConfig,
    peer_context: Arc<PeerContext>,
    peers: Mutex<BTreeMap<String, PeerHandle>>,
    /// Spawns a peer task; a closure because it captures the concrete `Network`.
    spawn_peer: SpawnPeer,
    /// Forked once per peer task, so each peer's jitter and fault draws are reproducible.
    rng: Mutex<SeededRandom>,
    shutdown: watch::Sender<bool>,
    listener_task: Mutex<Option<JoinHandle<()>>>,
}

/// A cheap, cloneable handle to a running transport.
pub struct Transport<M> {
    inner: Arc<Inner>,
    _msg: PhantomData<fn(M)>,
}

impl<M> Clone for Transport<M> {
    fn clone(&self) -> Self {
        Transport {
            inner: Arc::clone(&self.inner),
            _msg: PhantomData,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few field updates that cannot leave state torn.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<M> Transport<M>
where
    M: Serialize + DeserializeOwned + Clone + Send + 'static,
{
    /// Binds `listen`, starts accepting peers, and returns the handle plus the inbound queue.
    #[expect(
        clippy::too_many_arguments,
        reason = "the node wires each environment seam in explicitly"
    )]
    pub async fn start<N: Network>(
        net: Arc<N>,
        clock: Arc<dyn Clock>,
        mut rng: SeededRandom,
        me: NodeId,
        listen: &str,
        config: TransportConfig,
        faults: Faults,
        metrics: Arc<NetMetrics>,
    ) -> Result<(Transport<M>, mpsc::Receiver<Inbound<M>>), NetError> {
        config.validate()?;
        let bind_error = |source| NetError::Bind {
            addr: listen.to_string(),
            source,
        };
        let listener = net.bind(listen).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_capacity);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let delays = Arc::new(DelayBudget {
            held: AtomicUsize::new(0),
            max: config.delayed_max,
        });
        let inbound_context = Arc::new(InboundContext {
            clock: Arc::clone(&clock),
            faults: faults.clone(),
            metrics: Arc::clone(&metrics),
            max_frame_bytes: config.max_frame_bytes,
            idle_timeout: config.inbound_idle_timeout,
            delays: Arc::clone(&delays),
            deliver: inbound_tx,
        });
        let listener_task = tokio::spawn(inbound::accept_loop(
            listener,
            inbound_context,
            shutdown_rx,
            rng.fork(),
        ));
        let runtime = tokio::runtime::Handle::current();
        let spawn_peer: SpawnPeer =
            Box::new(move |task| runtime.spawn(peer::run(Arc::clone(&net), task)));
        tracing::info!(node = %me, addr = %local_addr, "transport listening");
        let inner = Inner {
            me,
            local_addr,
            peer_context: Arc::new(PeerContext {
                clock,
                faults,
                metrics,
                config: config.clone(),
                delays,
            }),
            config,
            peers: Mutex::new(BTreeMap::new()),
            spawn_peer,
            rng: Mutex::new(rng),
            shutdown,
            listener_task: Mutex::new(Some(listener_task)),
        };
        let transport = Transport {
            inner: Arc::new(inner),
            _msg: PhantomData,
        };
        Ok((transport, inbound_rx))
    }

    /// The address the listener actually bound (useful with port 0).
    pub fn local_addr(&self) -> &str {
        &self.inner.local_addr
    }

    /// Queues `msg` for `to` without waiting; the peer's task dials and writes it.
    ///
    /// Never blocks: a full queue or an open breaker drops the message and says so.
    pub fn send(&self, to: &PeerAddr, msg: M) -> Result<(), SendError> {
        let inner = &self.inner;
        if *inner.shutdown.borrow() {
            return Err(SendError::ShutDown);
        }
        let (queue, shared) = self.peer(to)?;
        if shared.breaker() == BreakerState::Open {
            let metrics = &inner.peer_context.metrics;
            metrics.dropped(&shared.label(), DropReason::BreakerOpen, 1);
            return Err(SendError::BreakerOpen {
                addr: to.addr.clone(),
            });
        }
        let envelope = Envelope::new(inner.me, msg);
        let frame = frame::encode_limited(&envelope, inner.config.max_frame_bytes)?;
        match queue.try_send(Outgoing::new(frame)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                let metrics = &inner.peer_context.metrics;
                metrics.dropped(&shared.label(), DropReason::QueueFull, 1);
                Err(SendError::QueueFull {
                    addr: to.addr.clone(),
                    capacity: inner.config.queue_capacity,
                })
            }
            Err(TrySendError::Closed(_)) => Err(SendError::ShutDown),
        }
    }

    /// The queue and shared state of `to`'s sender, creating it (and its task) on first use.
    fn peer(&self, to: &PeerAddr) -> Result<(mpsc::Sender<Outgoing>, Arc<PeerShared>), SendError> {
        let inner = &self.inner;
        let mut peers = lock(&inner.peers);
        if let Some(handle) = peers.get(&to.addr) {
            if let Some(id) = to.id {
                handle.shared.id.store(id.0, Ordering::Relaxed);
            }
            return Ok((handle.queue.clone(), Arc::clone(&handle.shared)));
        }
        if peers.len() >= PEERS_MAX {
            return Err(SendError::TooManyPeers(PEERS_MAX));
        }
        let (queue, queue_rx) = mpsc::channel(inner.config.queue_capacity);
        let (reset, reset_rx) = watch::channel(0u64);
        let shared = Arc::new(PeerShared::new(to.addr.clone(), to.id));
        let task = PeerTask {
            context: Arc::clone(&inner.peer_context),
            shared: Arc::clone(&shared),
            queue: queue_rx,
            requeue: queue.downgrade(),
            reset: reset_rx,
            shutdown: inner.shutdown.subscribe(),
            rng: lock(&inner.rng).fork(),
        };
        let task = (inner.spawn_peer)(task);
        let handle = PeerHandle {
            queue: queue.clone(),
            shared: Arc::clone(&shared),
            reset,
            task,
        };
        peers.insert(to.addr.clone(), handle);
        Ok((queue, shared))
    }

    /// Drops the connection to `addr` (if any) and redials at once.
    ///
    /// For when the failure detector declares the peer dead: a connection stuck behind a silent
    /// network is not trusted, since TCP's retransmit backoff would delay recovery after a heal.
    pub fn reset(&self, addr: &str) {
        if let Some(handle) = lock(&self.inner.peers).get(addr) {
            handle.reset.send_modify(|generation| *generation += 1);
        }
    }

    /// A snapshot of every peer sender, in address order.
    pub fn peer_states(&self) -> Vec<PeerState> {
        let peers = lock(&self.inner.peers);
        let state = |handle: &PeerHandle| PeerState {
            addr: handle.shared.addr.clone(),
            id: handle.shared.id(),
            connected: handle.shared.connected.load(Ordering::Relaxed),
            breaker: handle.shared.breaker(),
            queue_len: handle.queue.max_capacity() - handle.queue.capacity(),
            consecutive_failures: handle.shared.failures.load(Ordering::Relaxed),
        };
        peers.values().map(state).collect()
    }

    /// Stops the listener, every reader and every peer task, and waits for them to finish.
    ///
    /// Queued messages are discarded. Other handles see `SendError::ShutDown` afterwards.
    pub async fn shutdown(self) {
        self.inner.shutdown.send_replace(true);
        let listener_task = lock(&self.inner.listener_task).take();
        if let Some(task) = listener_task {
            // A join error means the task panicked; there is nothing left to stop either way.
            let _ = task.await;
        }
        let peers = std::mem::take(&mut *lock(&self.inner.peers));
        for handle in peers.into_values() {
            let _ = handle.task.await;
        }
        tracing::info!(node = %self.inner.me, addr = %self.inner.local_addr, "transport stopped");
    }
}
