//! Phi-accrual failure detector (Hayashibara et al., as in Akka and Cassandra).
//!
//! Instead of a yes/no timeout, the detector keeps a bounded window of heartbeat inter-arrival
//! times and reports `phi = -log10(P(next heartbeat arrives later than now))` under a normal
//! model of those intervals. `phi = 1` means a 10% chance the peer is merely late, `phi = 8` one
//! in 10^8. Time is passed in; the detector never reads a clock.

use std::collections::VecDeque;
use std::time::Duration;

use isle_types::Millis;
use serde::{Deserialize, Serialize};

/// The largest phi ever reported: keeps the value finite however long the silence.
pub const PHI_MAX: f64 = 1e3;

/// Floor on the standard deviation (ms) so a zero `min_std_dev` cannot divide by zero.
const STD_DEV_FLOOR_MS: f64 = 1e-3;

/// Tuning of a [`PhiAccrual`] detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhiConfig {
    /// Phi at or above which the peer is deemed unavailable.
    pub threshold: f64,
    /// Lower bound on the modelled standard deviation, so very regular peers are not judged too harshly.
    pub min_std_dev: Duration,
    /// Extra silence tolerated on top of the mean interval (GC pauses, brief network hiccups).
    pub acceptable_pause: Duration,
    /// The expected heartbeat interval, used to seed the window before real samples exist.
    pub first_interval: Duration,
    /// Number of most recent intervals kept (at least 2 are always kept).
    pub window: usize,
}

impl Default for PhiConfig {
    fn default() -> Self {
        PhiConfig {
            threshold: 8.0,
            min_std_dev: Duration::from_millis(100),
            acceptable_pause: Duration::from_millis(300),
            first_interval: Duration::from_millis(100),
            window: 100,
        }
    }
}

/// A phi-accrual failure detector for one peer.
#[derive(Debug, Clone)]
pub struct PhiAccrual {
    config: PhiConfig,
    /// Inter-arrival times in ms, oldest first; never longer than `window_max()`.
    intervals_ms: VecDeque<u64>,
    /// Exact running sums over `intervals_ms` (integers, so no float drift over long runs).
    sum_ms: u128,
    sum_squares_ms: u128,
    last_heartbeat: Option<Millis>,
}

impl PhiAccrual {
    /// Creates a detector whose window is seeded from `config.first_interval`.
    pub fn new(config: PhiConfig) -> Self {
        let mut detector = PhiAccrual {
            config,
            intervals_ms: VecDeque::new(),
            sum_ms: 0,
            sum_squares_ms: 0,
            last_heartbeat: None,
        };
        detector.seed();
        detector
    }

    /// Records a heartbeat arriving at `now`; the first one only marks the arrival time.
    pub fn heartbeat(&mut self, now: Millis) {
        if let Some(last) = self.last_heartbeat {
            // A monotonic clock never goes back; if it seems to, count a zero interval rather than panic.
            self.push_interval(now.since(last).as_millis().try_into().unwrap_or(u64::MAX));
            self.last_heartbeat = Some(last.max(now));
        } else {
            self.last_heartbeat = Some(now);
        }
    }

    /// Suspicion level at `now`: 0.0 before any heartbeat, otherwise finite in `[0, PHI_MAX]`.
    pub fn phi(&self, now: Millis) -> f64 {
        let Some(last) = self.last_heartbeat else {
            return 0.0;
        };
        let elapsed_ms = now.since(last).as_secs_f64() * 1000.0;
        let (mean_ms, std_dev_ms) = self.model_ms();
        let phi = phi_of(elapsed_ms, mean_ms, std_dev_ms);
        if phi.is_nan() {
            // Only reachable with absurd configs (e.g. NaN-producing durations); be pessimistic.
            return PHI_MAX;
        }
        phi.clamp(0.0, PHI_MAX)
    }

    /// True if a heartbeat has been seen and phi at `now` is below the threshold.
    pub fn is_available(&self, now: Millis) -> bool {
        self.last_heartbeat.is_some() && self.phi(now) < self.config.threshold
    }

    /// When the most recent heartbeat arrived, if any.
    pub fn last_heartbeat(&self) -> Option<Millis> {
        self.last_heartbeat
    }

    /// Forgets all history, as for a freshly created detector (e.g. the peer restarted).
    pub fn reset(&mut self) {
        self.intervals_ms.clear();
        self.sum_ms = 0;
        self.sum_squares_ms = 0;
        self.last_heartbeat = None;
        self.seed();
    }

    /// The detector's configuration.
    pub fn config(&self) -> &PhiConfig {
        &self.config
    }

    fn window_max(&self) -> usize {
        // Two samples are the least that give a standard deviation.
        self.config.window.max(2)
    }

    /// Seeds with mean ± mean/4, as Akka does, so phi is sensible right after the first heartbeat.
    fn seed(&mut self) {
        let mean_ms: u64 = self
            .config
            .first_interval
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX);
        let spread_ms = mean_ms / 4;
        self.push_interval(mean_ms - spread_ms);
        self.push_interval(mean_ms.saturating_add(spread_ms));
    }

    fn push_interval(&mut self, interval_ms: u64) {
        if self.intervals_ms.len() >= self.window_max()
            && let Some(oldest) = self.intervals_ms.pop_front()
        {
            self.sum_ms -= u128::from(oldest);
            self.sum_squares_ms -= u128::from(oldest) * u128::from(oldest);
        }
        self.intervals_ms.push_back(interval_ms);
        self.sum_ms += u128::from(interval_ms);
        self.sum_squares_ms += u128::from(interval_ms) * u128::from(interval_ms);
        debug_assert!(self.intervals_ms.len() <= self.window_max());
    }

    /// The modelled (mean, std dev) in ms: pause added to the mean, std dev floored.
    fn model_ms(&self) -> (f64, f64) {
        // The window always holds at least the seed samples, so n >= 1.
        let n = self.intervals_ms.len().max(1) as f64;
        let mean = self.sum_ms as f64 / n;
        let variance = (self.sum_squares_ms as f64 / n - mean * mean).max(0.0);
        let pause_ms = self.config.acceptable_pause.as_secs_f64() * 1000.0;
        let min_std_ms = self.config.min_std_dev.as_secs_f64() * 1000.0;
        let std_dev = variance.sqrt().max(min_std_ms).max(STD_DEV_FLOOR_MS);
        // phi divides by it: the floor keeps it positive whatever the samples.
        debug_assert!(std_dev > 0.0 && mean >= 0.0);
        (mean + pause_ms, std_dev)
    }
}

/// `-log10(P(X > elapsed))` for X ~ N(mean, std_dev), via Akka's logistic approximation of the CDF.
///
/// With `z = y (1.5976 + 0.070566 y²)` and `y = (elapsed - mean) / std_dev`, `P = 1 / (1 + e^z)`,
/// so `phi = log10(1 + e^z)`. Evaluated as `z + ln(1 + e^-z)` for positive z, so neither branch
/// can overflow `exp` and the result stays finite.
fn phi_of(elapsed_ms: f64, mean_ms: f64, std_dev_ms: f64) -> f64 {
    let y = (elapsed_ms - mean_ms) / std_dev_ms;
    let z = y * (1.5976 + 0.070566 * y * y);
    let ln_p_inverse = if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    };
    ln_p_inverse / std::f64::consts::LN_10
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const INTERVAL_MS: u64 = 100;

    /// A detector that received `n` heartbeats every `INTERVAL_MS`, the last at the returned time.
    fn regular(n: u64) -> (PhiAccrual, Millis) {
        let mut detector = PhiAccrual::new(PhiConfig::default());
        for i in 0..n {
            detector.heartbeat(Millis(i * INTERVAL_MS));
        }
        (detector, Millis((n - 1) * INTERVAL_MS))
    }

    fn detection_time_ms(detector: &PhiAccrual, last: Millis) -> u64 {
        let mut silence_ms = 0;
        while detector.is_available(Millis(last.0 + silence_ms)) {
            silence_ms += 10;
            assert!(silence_ms < 60_000, "never declared dead");
        }
        silence_ms
    }

    #[test]
    fn defaults_detect_a_silent_peer_in_about_a_second() {
        for n in [2, 10, 50, 500] {
            let (detector, last) = regular(n);
            let detection_ms = detection_time_ms(&detector, last);
            assert!(
                (900..=1300).contains(&detection_ms),
                "after {n} heartbeats: detected after {detection_ms}ms"
            );
        }
    }

    #[test]
    fn before_any_heartbeat_phi_is_zero_and_peer_unavailable() {
        let detector = PhiAccrual::new(PhiConfig::default());
        assert_eq!(detector.phi(Millis(10_000)), 0.0);
        assert!(!detector.is_available(Millis(0)));
        assert_eq!(detector.last_heartbeat(), None);
    }

    #[test]
    fn phi_grows_monotonically_with_silence() {
        let (detector, last) = regular(20);
        let mut previous = detector.phi(last);
        for step in 1..500 {
            let phi = detector.phi(Millis(last.0 + step * 10));
            assert!(phi >= previous, "phi fell at step {step}");
            previous = phi;
        }
        assert!(previous > 8.0);
        assert_eq!(detector.phi(Millis(u64::MAX)), PHI_MAX);
    }

    #[test]
    fn regular_heartbeats_keep_phi_low() {
        let mut detector = PhiAccrual::new(PhiConfig::default());
        for i in 0..1000 {
            let now = Millis(i * INTERVAL_MS);
            detector.heartbeat(now);
            // Checked just before the next heartbeat is due: the worst point of a regular stream.
            assert!(detector.phi(Millis(now.0 + INTERVAL_MS - 1)) < 1.0);
            assert!(detector.is_available(Millis(now.0 + INTERVAL_MS - 1)));
        }
    }

    #[test]
    fn jitter_raises_the_std_dev() {
        let config = PhiConfig {
            min_std_dev: Duration::from_millis(1),
            ..PhiConfig::default()
        };
        let mut steady = PhiAccrual::new(config.clone());
        let mut jittery = PhiAccrual::new(config);
        let (mut steady_now, mut jittery_now) = (0, 0);
        for i in 0..100u64 {
            steady_now += 100;
            jittery_now += if i % 2 == 0 { 20 } else { 180 };
            steady.heartbeat(Millis(steady_now));
            jittery.heartbeat(Millis(jittery_now));
        }
        let (steady_mean, steady_std) = steady.model_ms();
        let (jittery_mean, jittery_std) = jittery.model_ms();
        assert!((steady_mean - jittery_mean).abs() < 5.0);
        assert!(jittery_std > 5.0 * steady_std);
        // The same long silence is less suspicious for a jittery peer.
        let silence = 900;
        assert!(
            jittery.phi(Millis(jittery_now + silence)) < steady.phi(Millis(steady_now + silence))
        );
    }

    #[test]
    fn resumption_after_a_long_pause_brings_phi_back_down() {
        let (mut detector, last) = regular(20);
        let resumed = Millis(last.0 + 5_000);
        assert!(!detector.is_available(resumed));
        detector.heartbeat(resumed);
        assert!(detector.phi(resumed) < 1.0);
        assert!(detector.is_available(Millis(resumed.0 + INTERVAL_MS)));
        assert_eq!(detector.last_heartbeat(), Some(resumed));
    }

    #[test]
    fn reset_forgets_history() {
        let (mut detector, last) = regular(20);
        detector.reset();
        assert_eq!(detector.last_heartbeat(), None);
        assert_eq!(detector.phi(last), 0.0);
        assert_eq!(detector.intervals_ms.len(), 2);
    }

    #[test]
    fn window_is_bounded() {
        let config = PhiConfig {
            window: 5,
            ..PhiConfig::default()
        };
        let mut detector = PhiAccrual::new(config);
        for i in 0..50 {
            detector.heartbeat(Millis(i * 1000));
        }
        assert_eq!(detector.intervals_ms.len(), 5);
        // The seed has rolled out: the model reflects only the 1 s intervals.
        let (mean_ms, _) = detector.model_ms();
        assert!((mean_ms - 1300.0).abs() < 1e-9);
    }

    #[test]
    fn clock_going_back_does_not_panic() {
        let mut detector = PhiAccrual::new(PhiConfig::default());
        detector.heartbeat(Millis(1000));
        detector.heartbeat(Millis(500));
        assert_eq!(detector.last_heartbeat(), Some(Millis(1000)));
        assert!(detector.phi(Millis(0)).is_finite());
    }

    #[test]
    fn degenerate_config_stays_finite() {
        let config = PhiConfig {
            threshold: 8.0,
            min_std_dev: Duration::ZERO,
            acceptable_pause: Duration::ZERO,
            first_interval: Duration::ZERO,
            window: 0,
        };
        let mut detector = PhiAccrual::new(config);
        detector.heartbeat(Millis(0));
        detector.heartbeat(Millis(0));
        for now in [0, 1, 1000, u64::MAX] {
            let phi = detector.phi(Millis(now));
            assert!(phi.is_finite() && phi >= 0.0);
        }
    }

    proptest! {
        #[test]
        fn phi_is_finite_nonnegative_and_nondecreasing(
            gaps_ms in proptest::collection::vec(0u64..5_000, 0..40),
            probes_ms in proptest::collection::vec(0u64..20_000, 1..40),
            window in 0usize..20,
            min_std_ms in 0u64..200,
        ) {
            let config = PhiConfig {
                window,
                min_std_dev: Duration::from_millis(min_std_ms),
                ..PhiConfig::default()
            };
            let mut detector = PhiAccrual::new(config);
            let mut now = 0;
            for gap in gaps_ms {
                now += gap;
                detector.heartbeat(Millis(now));
            }
            let mut probes_ms = probes_ms;
            probes_ms.sort_unstable();
            let mut previous = 0.0;
            for probe in probes_ms {
                let phi = detector.phi(Millis(probe));
                prop_assert!(phi.is_finite());
                prop_assert!(phi >= 0.0);
                prop_assert!(phi >= previous);
                previous = phi;
            }
        }
    }
}
