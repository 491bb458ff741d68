//! One peer's sender task: dial with backoff, circuit breaker, batched writes, outbound faults.
//!
//! The task owns the peer's outbound connection and queue; nothing else awaits on them, so a
//! dead or slow peer stalls only this task.

use std::sync::Arc;
use std::time::Duration;

use isle_env::{Clock, Network, Random, SeededRandom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::fault::{Direction, Faults, Verdict};
use crate::frame::{self, HEADER_BYTES};
use crate::metrics::{DropReason, NetMetrics};
use crate::transport::{BreakerState, DelayBudget, PeerShared, TransportConfig, stopped};

/// Most frames written in one batch.
const BATCH_FRAMES_MAX: usize = 256;
/// A batch stops growing once it holds this many bytes.
const BATCH_BYTES_MAX: usize = 1024 * 1024;

/// One queued message, already framed.
#[derive(Debug)]
pub(crate) struct Outgoing {
    frame: Vec<u8>,
    /// Set on a delayed message coming back, so it is not faulted twice.
    faulted: bool,
}

impl Outgoing {
    pub(crate) fn new(frame: Vec<u8>) -> Self {
        Outgoing {
            frame,
            faulted: false,
        }
    }
}

/// What every peer task shares.
pub(crate) struct PeerContext {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) faults: Faults,
    pub(crate) metrics: Arc<NetMetrics>,
    pub(crate) config: TransportConfig,
    pub(crate) delays: Arc<DelayBudget>,
}

/// Everything one peer task owns.
pub(crate) struct PeerTask {
    pub(crate) context: Arc<PeerContext>,
    pub(crate) shared: Arc<PeerShared>,
    pub(crate) queue: mpsc::Receiver<Outgoing>,
    /// Weak, so held messages do not keep a stopped peer's queue alive.
    pub(crate) requeue: mpsc::WeakSender<Outgoing>,
    pub(crate) reset: watch::Receiver<u64>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) rng: SeededRandom,
}

enum Dial<S> {
    Connected(S),
    Failed(String),
    Stopped,
}

enum End {
    Stopped,
    Reset,
    Closed(String),
}

#[derive(PartialEq)]
enum Flow {
    Continue,
    Stop,
}

/// The peer task: dial, send until the connection ends, repeat until shutdown.
pub(crate) async fn run<N: Network>(net: Arc<N>, mut task: PeerTask) {
    let label = task.shared.label();
    task.context
        .metrics
        .breaker(&label, BreakerState::Closed.gauge());
    loop {
        let flow = match dial(net.as_ref(), &mut task).await {
            Dial::Stopped => Flow::Stop,
            Dial::Connected(stream) => connected(stream, &mut task).await,
            Dial::Failed(error) => after_failed_dial(&mut task, error).await,
        };
        if flow == Flow::Stop {
            break;
        }
    }
    task.shared.set_connected(false);
}

async fn dial<N: Network>(net: &N, task: &mut PeerTask) -> Dial<N::Stream> {
    let timeout = task.context.config.connect_timeout;
    tokio::select! {
        biased;
        () = stopped(&mut task.shutdown) => Dial::Stopped,
        result = net.connect(&task.shared.addr) => match result {
            Ok(stream) => Dial::Connected(stream),
            Err(error) => Dial::Failed(error.to_string()),
        },
        () = task.context.clock.sleep(timeout) => {
            Dial::Failed(format!("no connection within {timeout:?}"))
        }
    }
}

async fn connected<S>(stream: S, task: &mut PeerTask) -> Flow
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let label = task.shared.label();
    let metrics = Arc::clone(&task.context.metrics);
    task.shared.dial_succeeded();
    task.shared.set_breaker(BreakerState::Closed);
    task.shared.set_connected(true);
    metrics.breaker(&label, BreakerState::Closed.gauge());
    metrics.connected(&label);
    tracing::debug!(peer = %task.shared.addr, "connected");
    let end = send_until_closed(stream, task).await;
    task.shared.set_connected(false);
    metrics.disconnected(&label);
    match end {
        End::Stopped => Flow::Stop,
        End::Reset => {
            tracing::debug!(peer = %task.shared.addr, "connection reset on request");
            Flow::Continue
        }
        End::Closed(why) => {
            tracing::debug!(peer = %task.shared.addr, %why, "connection closed");
            // A short jittered pause: a peer that accepts and then drops us must not make us spin.
            let base = task.context.config.backoff_base;
            let pause = base / 2 + Duration::from_micros(task.rng.below(micros(base) / 2 + 1));
            pause_or_reset(task, pause).await
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Counts a failed dial, then waits out the backoff or, past the threshold, the open breaker.
async fn after_failed_dial(task: &mut PeerTask, error: String) -> Flow {
    let failures = task.shared.dial_failed();
    let label = task.shared.label();
    task.context.metrics.connect_failed(&label);
    let config = &task.context.config;
    tracing::debug!(peer = %task.shared.addr, failures, %error, "dial failed");
    if failures < config.breaker_failures {
        let delay = backoff_delay(
            config.backoff_base,
            config.backoff_max,
            failures,
            &mut task.rng,
        );
        return pause_or_reset(task, delay).await;
    }
    if task.shared.breaker() != BreakerState::Open {
        tracing::warn!(peer = %task.shared.addr, failures, %error, "circuit breaker open");
    }
    task.shared.set_breaker(BreakerState::Open);
    task.context
        .metrics
        .breaker(&label, BreakerState::Open.gauge());
    // Stale messages would be delivered long after the caller gave up on them: discard them.
    discard_queue(task);
    let cooldown = task.context.config.breaker_cooldown;
    let flow = tokio::select! {
        biased;
        () = stopped(&mut task.shutdown) => Flow::Stop,
        () = task.context.clock.sleep(cooldown) => Flow::Continue,
    };
    // Catch anything a racing `send` queued just as the breaker opened.
    discard_queue(task);
    task.shared.set_breaker(BreakerState::HalfOpen);
    task.context
        .metrics
        .breaker(&label, BreakerState::HalfOpen.gauge());
    flow
}

fn discard_queue(task: &mut PeerTask) {
    let mut discarded = 0;
    while task.queue.try_recv().is_ok() {
        discarded += 1;
    }
    if discarded > 0 {
        let label = task.shared.label();
        let metrics = &task.context.metrics;
        metrics.dropped(&label, DropReason::BreakerOpen, discarded);
    }
}

/// Waits `delay`, cut short by a reset request (redial now) or shutdown.
async fn pause_or_reset(task: &mut PeerTask, delay: Duration) -> Flow {
    tokio::select! {
        biased;
        () = stopped(&mut task.shutdown) => Flow::Stop,
        Ok(()) = task.reset.changed() => Flow::Continue,
        () = task.context.clock.sleep(delay) => Flow::Continue,
    }
}

/// Exponential backoff with full jitter: uniform in `[base, min(max, base * 2^(failures-1))]`.
pub(crate) fn backoff_delay(
    base: Duration,
    max: Duration,
    failures: u32,
    rng: &mut impl Random,
) -> Duration {
    let max = max.max(base);
    let doublings = failures.saturating_sub(1).min(31);
    let cap = base.saturating_mul(1u32 << doublings).min(max);
    base + Duration::from_micros(rng.below(micros(cap - base) + 1))
}

/// Writes batches from the queue until the connection fails, a reset is asked for, or shutdown.
async fn send_until_closed<S>(stream: S, task: &mut PeerTask) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    // Resets asked for before this connection existed are satisfied by it.
    task.reset.borrow_and_update();
    // The peer never writes on this connection; reading only notices when it goes away.
    let mut probe = [0u8; 64];
    let mut batch = Vec::new();
    loop {
        let first = tokio::select! {
            biased;
            () = stopped(&mut task.shutdown) => return End::Stopped,
            Ok(()) = task.reset.changed() => return End::Reset,
            read = reader.read(&mut probe) => match read {
                Ok(0) => return End::Closed("peer closed the connection".to_string()),
                Ok(_) => continue,
                Err(error) => return End::Closed(error.to_string()),
            },
            item = task.queue.recv() => match item {
                Some(item) => item,
                None => return End::Stopped,
            },
        };
        let frames = fill_batch(task, first, &mut batch);
        if batch.is_empty() {
            continue;
        }
        let label = task.shared.label();
        match write_batch(&mut writer, &batch, task).await {
            Ok(()) => task
                .context
                .metrics
                .sent(&label, frames, batch.len() as u64),
            Err(End::Closed(why)) => {
                let metrics = &task.context.metrics;
                metrics.dropped(&label, DropReason::WriteError, frames);
                return End::Closed(why);
            }
            Err(end) => return end,
        }
    }
}

/// Moves `first` and whatever else is ready into `batch`, applying outbound faults.
/// Returns the number of frames in the batch.
fn fill_batch(task: &mut PeerTask, first: Outgoing, batch: &mut Vec<u8>) -> u64 {
    batch.clear();
    let mut frames = 0;
    let mut taken = 0;
    let mut next = Some(first);
    while let Some(item) = next {
        frames += apply_faults(task, item, batch);
        taken += 1;
        if taken >= BATCH_FRAMES_MAX || batch.len() >= BATCH_BYTES_MAX {
            break;
        }
        next = task.queue.try_recv().ok();
    }
    frames
}

/// Appends `item` to `batch` as the fault table says; returns how many frames were appended.
fn apply_faults(task: &mut PeerTask, item: Outgoing, batch: &mut Vec<u8>) -> u64 {
    let verdict = match task.shared.id() {
        Some(id) if !item.faulted => {
            let faults = &task.context.faults;
            faults.decide(id, Direction::Outbound, &mut task.rng)
        }
        _ => Verdict::Deliver,
    };
    match verdict {
        Verdict::Deliver => {
            batch.extend_from_slice(&item.frame);
            1
        }
        Verdict::Duplicate => {
            batch.extend_from_slice(&item.frame);
            batch.extend_from_slice(&item.frame);
            2
        }
        Verdict::Corrupt => {
            let start = batch.len();
            batch.extend_from_slice(&item.frame);
            // After the checksum was computed, so the receiver counts it as corrupt.
            let payload_bits = (item.frame.len() - HEADER_BYTES) as u64 * 8;
            frame::flip_payload_bit(&mut batch[start..], task.rng.below(payload_bits));
            1
        }
        Verdict::Drop => {
            let metrics = &task.context.metrics;
            metrics.dropped(&task.shared.label(), DropReason::Fault, 1);
            0
        }
        Verdict::Delay(delay) => {
            hold(task, item.frame, delay);
            0
        }
    }
}

/// Puts `frame` back on the queue after `delay`, without holding up anything else.
fn hold(task: &PeerTask, frame: Vec<u8>, delay: Duration) {
    let label = task.shared.label();
    let metrics = Arc::clone(&task.context.metrics);
    let Some(permit) = task.context.delays.try_hold() else {
        metrics.dropped(&label, DropReason::Fault, 1);
        return;
    };
    metrics.delayed(&label);
    let clock = Arc::clone(&task.context.clock);
    let requeue = task.requeue.clone();
    let mut shutdown = task.shutdown.clone();
    tokio::spawn(async move {
        let _permit = permit;
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => {}
            () = clock.sleep(delay) => {
                let item = Outgoing { frame, faulted: true };
                let queued = requeue.upgrade().map(|queue| queue.try_send(item));
                if let Some(Err(_)) = queued {
                    metrics.dropped(&label, DropReason::QueueFull, 1);
                }
            }
        }
    });
}

async fn write_batch<W>(writer: &mut W, batch: &[u8], task: &mut PeerTask) -> Result<(), End>
where
    W: AsyncWrite + Unpin,
{
    let timeout = task.context.config.write_timeout;
    let write = async {
        writer.write_all(batch).await?;
        writer.flush().await
    };
    tokio::select! {
        biased;
        () = stopped(&mut task.shutdown) => Err(End::Stopped),
        result = write => result.map_err(|error| End::Closed(format!("write failed: {error}"))),
        () = task.context.clock.sleep(timeout) => {
            Err(End::Closed(format!("write did not finish within {timeout:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_respects_bounds() {
        let base = Duration::from_millis(50);
        let max = Duration::from_secs(1);
        let mut rng = SeededRandom::new(3);
        for failures in [0, 1, 2, 3, 4, 5, 10, 40, u32::MAX] {
            let exponent = failures.saturating_sub(1).min(31);
            let cap = base.saturating_mul(1 << exponent).min(max);
            let delays: Vec<Duration> = (0..200)
                .map(|_| backoff_delay(base, max, failures, &mut rng))
                .collect();
            for delay in &delays {
                assert!(base <= *delay && *delay <= cap, "{failures}: {delay:?}");
            }
            if cap > base {
                let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
                assert!(distinct.len() > 10, "{failures}: jitter missing");
            }
        }
    }

    #[test]
    fn backoff_tolerates_max_below_base() {
        let mut rng = SeededRandom::new(1);
        let delay = backoff_delay(Duration::from_millis(50), Duration::ZERO, 3, &mut rng);
        assert_eq!(delay, Duration::from_millis(50));
    }
}
