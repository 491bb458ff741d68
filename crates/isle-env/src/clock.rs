//! Time as the node sees it: a monotonic reading, a wall-clock reading, and a way to wait.

use std::future::Future;
use std::pin::Pin;
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

/// The real clock: tokio's monotonic timer and the OS wall clock, plus an optional skew.
///
/// Because it reads time through tokio, it also follows a paused or simulated tokio clock
/// (turmoil), so the same node code runs on virtual time in the simulator.
#[derive(Debug, Clone)]
pub struct SystemClock {
    epoch: tokio::time::Instant,
    skew_ms: i64,
}

impl SystemClock {
    /// A clock whose monotonic epoch is the moment of this call.
    pub fn new() -> Self {
        SystemClock {
            epoch: tokio::time::Instant::now(),
            skew_ms: 0,
        }
    }

    /// The same clock with its wall-clock reading shifted by `skew_ms` (chaos: clock skew).
    pub fn with_skew_ms(mut self, skew_ms: i64) -> Self {
        self.skew_ms = skew_ms;
        self
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
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let wall_ms = i64::try_from(wall.as_millis()).unwrap_or(i64::MAX);
        u64::try_from(wall_ms.saturating_add(self.skew_ms)).unwrap_or(0)
    }

    fn sleep_until(&self, deadline: Millis) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let at = self.epoch + Duration::from_millis(deadline.0);
        Box::pin(tokio::time::sleep_until(at))
    }
}
