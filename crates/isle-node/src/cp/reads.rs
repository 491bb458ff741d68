//! Shared ReadIndex rounds: one leadership confirmation serves every linearizable read that was
//! waiting when it started.
//!
//! A read may be served once the leader has (1) taken a read index no lower than the commit
//! index at the read's arrival, (2) confirmed with a quorum that it still led *after* that
//! arrival, and (3) applied up to the read index. One round of openraft's
//! `ensure_linearizable(ReadIndex)` does all three for every read that arrived before the round
//! began, so reads queue here: the first one starts a round; those arriving while it runs wait
//! for the next round (which starts after they arrived), never for the one in flight. Under load
//! a round therefore serves every read that queued during the previous one.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use isle_cp::raft::CpRaft;
use isle_env::Clock;
use openraft::ReadPolicy;
use tokio::sync::oneshot;

/// Counters of the read path, for `/metrics`.
#[derive(Debug, Default)]
pub struct ReadStats {
    /// Linearizable reads confirmed through a ReadIndex round on this node (the leader).
    pub linearizable_reads: AtomicU64,
    /// ReadIndex rounds run (quorum confirmations).
    pub read_index_rounds: AtomicU64,
    /// Serializable (stale) reads served from this node's replica without Raft.
    pub serializable_reads: AtomicU64,
}

type Waiter = oneshot::Sender<Result<(), String>>;

/// Reads waiting for the next round, and whether a round is running.
#[derive(Default)]
struct Queue {
    waiting: Vec<Waiter>,
    running: bool,
}

/// Batches linearizable reads into shared ReadIndex rounds (see the module docs).
#[derive(Default)]
pub(crate) struct ReadBatcher {
    queue: Mutex<Queue>,
    pub(crate) stats: Arc<ReadStats>,
}

impl ReadBatcher {
    /// Waits until a ReadIndex round that started after this call confirmed leadership and the
    /// state machine applied up to its read index; the reader may then read locally.
    pub(crate) async fn confirm(
        self: &Arc<Self>,
        raft: &CpRaft,
        clock: &Arc<dyn Clock>,
        limit: Duration,
    ) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        let start_round = {
            let mut queue = self.lock();
            queue.waiting.push(tx);
            !std::mem::replace(&mut queue.running, true)
        };
        if start_round {
            tokio::spawn(Arc::clone(self).rounds(raft.clone(), Arc::clone(clock), limit));
        }
        self.stats
            .linearizable_reads
            .fetch_add(1, Ordering::Relaxed);
        rx.await
            .unwrap_or_else(|_| Err("the read round was abandoned".into()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs rounds while reads are waiting; each round answers the reads queued before it.
    async fn rounds(self: Arc<Self>, raft: CpRaft, clock: Arc<dyn Clock>, limit: Duration) {
        loop {
            let batch = {
                let mut queue = self.lock();
                if queue.waiting.is_empty() {
                    queue.running = false;
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            self.stats.read_index_rounds.fetch_add(1, Ordering::Relaxed);
            let confirm = raft.ensure_linearizable(ReadPolicy::ReadIndex);
            let result = tokio::select! {
                biased;
                confirmed = confirm => confirmed.map(|_| ()).map_err(|err| err.to_string()),
                () = clock.sleep(limit) => Err(format!(
                    "leadership not confirmed by a quorum within {} ms", limit.as_millis()
                )),
            };
            for waiter in batch {
                let _ = waiter.send(result.clone());
            }
        }
    }
}
