//! Time as the node sees it: a monotonic reading, a wall-clock reading, and a way to wait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use isle_types::Millis;

/// The node's clocks. Cheap to clone and share between tasks.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time since this clock's epoch; never goes backwards.
    fn now(&self) -> Millis;
    /// Wall-clock time as Unix milliseconds; may jump (and is skewed on purpose in the chaos lab).
    fn unix_ms(&self) -> u64;
    /// Completes once `now()` has reached `deadline`.
    fn sleep_until(&self, deadline: Millis) -> Pin<Box<dyn Future<Output = ()> + Send>>;
    /// Completes after `duration` of this clock's time.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.sleep_until(self.now() + duration)
    }
}

/// A handle on a [`SystemClock`]'s wall-clock skew, shared by every clone of the clock, so a
/// running node's wall clock can be jumped (the chaos lab's clock-skew nemesis). The monotonic
/// clock, which drives every timer, is never skewed.
#[derive(Debug, Clone, Default)]
pub struct ClockSkew(Arc<AtomicI64>);

impl ClockSkew {
    /// The skew now, ms (positive: ahead).
    pub fn ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the skew, ms; every clone of the clock reads wall time shifted by it from now on.
    pub fn set_ms(&self, skew_ms: i64) {
        self.0.store(skew_ms, Ordering::Relaxed);
    }
}

/// The real clock: tokio's monotonic timer and the OS wall clock, plus an optional skew.
///
/// Because it reads time through tokio, it also follows a paused or simulated tokio clock
/// (turmoil), so the same node code runs on virtual time in the simulator.
#[derive(Debug, Clone)]
pub struct SystemClock {
    epoch: tokio::time::Instant,
    skew: ClockSkew,
    /// When set, wall time is this Unix-ms reading at `epoch` plus tokio's elapsed time, so a
    /// simulator's virtual clock drives it and runs replay exactly.
    wall_epoch_unix_ms: Option<u64>,
}

impl SystemClock {
    /// A clock whose monotonic epoch is the moment of this call.
    pub fn new() -> Self {
        SystemClock {
            epoch: tokio::time::Instant::now(),
            skew: ClockSkew::default(),
            wall_epoch_unix_ms: None,
        }
    }

    /// The same clock with its wall time derived from tokio's clock, starting at
    /// `unix_ms` now, instead of read from the OS (simulation: the wall clock is virtual too).
    pub fn with_wall_epoch(mut self, unix_ms: u64) -> Self {
        self.wall_epoch_unix_ms = Some(unix_ms);
        self
    }

    /// The same clock with its wall-clock reading shifted by `skew_ms` (chaos: clock skew).
    /// The skew is this clock's own from here on (not shared with clones made before).
    pub fn with_skew_ms(mut self, skew_ms: i64) -> Self {
        self.skew = ClockSkew(Arc::new(AtomicI64::new(skew_ms)));
        self
    }

    /// The handle that changes this clock's skew (and its clones') while it runs.
    pub fn skew(&self) -> ClockSkew {
        self.skew.clone()
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.epoch);
        Millis(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }

    fn unix_ms(&self) -> u64 {
        if let Some(epoch_ms) = self.wall_epoch_unix_ms {
            let virtual_ms = epoch_ms.saturating_add(self.now().as_u64());
            let skewed = i64::try_from(virtual_ms)
                .unwrap_or(i64::MAX)
                .saturating_add(self.skew.ms());
            return u64::try_from(skewed).unwrap_or(0);
        }
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let wall_ms = i64::try_from(wall.as_millis()).unwrap_or(i64::MAX);
        u64::try_from(wall_ms.saturating_add(self.skew.ms())).unwrap_or(0)
    }

    fn sleep_until(&self, deadline: Millis) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let at = self.epoch + Duration::from_millis(deadline.0);
        Box::pin(tokio::time::sleep_until(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wall_epoch_follows_the_tokio_clock_and_skew() {
        let clock = SystemClock::new().with_wall_epoch(1_000_000);
        assert_eq!(clock.unix_ms(), 1_000_000);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(clock.unix_ms(), 1_000_250);
        assert_eq!(clock.clone().with_skew_ms(-50).unix_ms(), 1_000_200);
        assert_eq!(clock.unix_ms(), 1_000_250);
        // The skew is shared: the handle jumps every clone at once.
        let skewed = SystemClock::new().with_wall_epoch(1_000_000);
        let handle = skewed.skew();
        let clone = skewed.clone();
        handle.set_ms(5_000);
        assert_eq!(handle.ms(), 5_000);
        assert_eq!(clone.unix_ms(), skewed.unix_ms());
        assert!(clone.unix_ms() >= 1_005_000);
    }
}
