//! The node clock in simulation: the real [`SystemClock`] on the host's virtual tokio clock,
//! with its wall time derived from turmoil's simulated epoch, plus a wall-clock skew the
//! harness can change while the node runs (the clock-skew nemesis).
//!
//! Skew moves only the wall clock (`unix_ms`, which feeds hybrid timestamps and tombstone ages),
//! exactly like `SystemClock::with_skew_ms`; the monotonic clock that drives timers and the
//! failure detector is untouched. Setting the skew back to zero is a backward jump.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use isle_env::{Clock, SystemClock};
use isle_types::Millis;

/// A node's wall-clock skew, shared between the harness and every incarnation of the node.
#[derive(Debug, Clone, Default)]
pub struct Skew(Arc<AtomicI64>);

impl Skew {
    /// Sets the skew, in milliseconds (positive: the node's wall clock runs ahead).
    pub fn set(&self, skew_ms: i64) {
        self.0.store(skew_ms, Ordering::Relaxed);
    }

    /// The current skew, in milliseconds.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// [`SystemClock`] with a wall clock that follows the simulation and a changeable skew.
#[derive(Debug, Clone)]
pub struct SimClock {
    inner: SystemClock,
    skew: Skew,
}

impl SimClock {
    /// A clock whose monotonic epoch is now (on the current host's tokio clock) and whose wall
    /// clock reads `unix_ms` now. Create it inside the host that uses it.
    pub fn new(unix_ms: u64, skew: Skew) -> Self {
        SimClock {
            inner: SystemClock::new().with_wall_epoch(unix_ms),
            skew,
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Millis {
        self.inner.now()
    }

    fn unix_ms(&self) -> u64 {
        let unskewed = i64::try_from(self.inner.unix_ms()).unwrap_or(i64::MAX);
        u64::try_from(unskewed.saturating_add(self.skew.get())).unwrap_or(0)
    }

    fn sleep_until(&self, deadline: Millis) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.inner.sleep_until(deadline)
    }
}
