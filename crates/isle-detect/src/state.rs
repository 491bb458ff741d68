//! The per-node partition state machine: Normal → PartitionDetected → Degraded/Emergency →
//! Reconciling → Normal.
//!
//! Pure and clock-free: the shell feeds an [`Observation`] with `now` into [`Machine::observe`]
//! and asks [`Machine::poll_timeout`] when to call again. There are no hidden timers; every
//! transition happens inside `observe`.
//!
//! Edges (see [`ALLOWED_EDGES`]):
//! - Normal → PartitionDetected when partitioned (a new detection and a new [`PartitionRecord`]).
//! - PartitionDetected → Degraded (quorum held) or Emergency (not) once partitioned for `settle`.
//! - Degraded ↔ Emergency as quorum comes and goes while partitioned.
//! - PartitionDetected/Degraded/Emergency → Reconciling when no longer partitioned (healed).
//! - Reconciling → PartitionDetected when partitioned again: counted as a *new* detection with a
//!   new record; the interrupted episode is closed with `recovered_at = None`.
//! - Reconciling → Normal once not partitioned, nothing pending, and at least `reconcile_min`
//!   spent reconciling (recovered).

use std::fmt;
use std::time::Duration;

use isle_types::Millis;
use serde::{Deserialize, Serialize};

/// Where a node stands with respect to network partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum State {
    /// No partition.
    Normal,
    /// A partition was just seen and is settling before we act on it.
    PartitionDetected,
    /// Partitioned, but this side still holds a quorum.
    Degraded,
    /// Partitioned and this side has no quorum.
    Emergency,
    /// The partition healed; state is being reconciled before returning to Normal.
    Reconciling,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            State::Normal => "Normal",
            State::PartitionDetected => "PartitionDetected",
            State::Degraded => "Degraded",
            State::Emergency => "Emergency",
            State::Reconciling => "Reconciling",
        };
        f.write_str(name)
    }
}

/// Every edge the machine may take, as (from, to).
pub const ALLOWED_EDGES: [(State, State); 10] = [
    (State::Normal, State::PartitionDetected),
    (State::PartitionDetected, State::Degraded),
    (State::PartitionDetected, State::Emergency),
    (State::Degraded, State::Emergency),
    (State::Emergency, State::Degraded),
    (State::PartitionDetected, State::Reconciling),
    (State::Degraded, State::Reconciling),
    (State::Emergency, State::Reconciling),
    (State::Reconciling, State::PartitionDetected),
    (State::Reconciling, State::Normal),
];

/// Longest chain of transitions one `observe` call can produce (e.g. Reconciling →
/// PartitionDetected → Degraded with a zero `settle`); bounds the loop.
const TRANSITIONS_PER_OBSERVE_MAX: usize = 4;

/// Timing of the [`Machine`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateConfig {
    /// How long a partition must persist before the node acts on it (filters flaps).
    pub settle: Duration,
    /// Least time spent in Reconciling before returning to Normal.
    pub reconcile_min: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            settle: Duration::from_millis(200),
            reconcile_min: Duration::from_millis(500),
        }
    }
}

/// One state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// When it happened.
    pub at: Millis,
}

/// What the shell currently knows, fed to [`Machine::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observation {
    /// The matrix classifies as some kind of partition.
    pub partitioned: bool,
    /// This node's side holds a quorum.
    pub quorum_held: bool,
    /// Reconciliation work (anti-entropy, hint replay, ...) is still outstanding.
    pub reconcile_pending: bool,
}

/// One partition episode: detected, then (maybe) healed, then (maybe) recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// When Normal (or Reconciling) turned into PartitionDetected.
    pub detected_at: Millis,
    /// When the partition stopped being observed (entry into Reconciling).
    pub healed_at: Option<Millis>,
    /// When the node returned to Normal; `None` if a new partition interrupted reconciling.
    pub recovered_at: Option<Millis>,
}

impl PartitionRecord {
    /// Time from detection to healing, once healed.
    pub fn partition_duration(&self) -> Option<Duration> {
        self.healed_at.map(|healed| healed - self.detected_at)
    }

    /// Time from healing back to Normal, once recovered.
    pub fn recovery_time(&self) -> Option<Duration> {
        match (self.healed_at, self.recovered_at) {
            (Some(healed), Some(recovered)) => Some(recovered - healed),
            _ => None,
        }
    }
}

/// The partition state machine of one node.
#[derive(Debug, Clone)]
pub struct Machine {
    config: StateConfig,
    state: State,
    since: Millis,
    last_observation: Observation,
    detections: u64,
    /// The episode in progress (from detection until Normal or a new detection).
    open: Option<PartitionRecord>,
    /// The most recent closed episode.
    closed: Option<PartitionRecord>,
}

impl Machine {
    /// A machine in Normal since `now`.
    pub fn new(config: StateConfig, now: Millis) -> Self {
        Machine {
            config,
            state: State::Normal,
            since: now,
            last_observation: Observation::default(),
            detections: 0,
            open: None,
            closed: None,
        }
    }

    /// Feeds an observation at `now`; returns the transitions taken, in order.
    ///
    /// A `now` earlier than [`Machine::since`] is treated as `since`, so time never runs back.
    pub fn observe(&mut self, now: Millis, obs: Observation) -> Vec<Transition> {
        let now = now.max(self.since);
        self.last_observation = obs;
        let mut transitions = Vec::new();
        while let Some(to) = self.next_state(now, obs) {
            transitions.push(self.enter(to, now));
            if transitions.len() >= TRANSITIONS_PER_OBSERVE_MAX {
                debug_assert!(self.next_state(now, obs).is_none(), "transition loop");
                break;
            }
        }
        transitions
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// When the current state was entered.
    pub fn since(&self) -> Millis {
        self.since
    }

    /// The next instant at which `observe` with the last observation would change state.
    pub fn poll_timeout(&self) -> Option<Millis> {
        match self.state {
            State::PartitionDetected => Some(self.since + self.config.settle),
            // A pending reconciliation holds indefinitely: only a new observation can release it.
            State::Reconciling if !self.last_observation.reconcile_pending => {
                Some(self.since + self.config.reconcile_min)
            }
            _ => None,
        }
    }

    /// The most recent completed (closed) partition episode.
    pub fn last_partition(&self) -> Option<PartitionRecord> {
        self.closed.clone()
    }

    /// The episode in progress, if any.
    pub fn current_partition(&self) -> Option<PartitionRecord> {
        self.open.clone()
    }

    /// How many partitions have been detected since creation.
    pub fn partitions_detected(&self) -> u64 {
        self.detections
    }

    /// The state `obs` at `now` leads to from the current one, if it changes.
    fn next_state(&self, now: Millis, obs: Observation) -> Option<State> {
        let elapsed = now - self.since;
        let split = if obs.quorum_held {
            State::Degraded
        } else {
            State::Emergency
        };
        match self.state {
            State::Normal => obs.partitioned.then_some(State::PartitionDetected),
            State::PartitionDetected if !obs.partitioned => Some(State::Reconciling),
            State::PartitionDetected => (elapsed >= self.config.settle).then_some(split),
            State::Degraded | State::Emergency if !obs.partitioned => Some(State::Reconciling),
            State::Degraded | State::Emergency => (split != self.state).then_some(split),
            State::Reconciling if obs.partitioned => Some(State::PartitionDetected),
            State::Reconciling => (!obs.reconcile_pending && elapsed >= self.config.reconcile_min)
                .then_some(State::Normal),
        }
    }

    fn enter(&mut self, to: State, now: Millis) -> Transition {
        let from = self.state;
        debug_assert!(
            ALLOWED_EDGES.contains(&(from, to)),
            "illegal edge {from} -> {to}"
        );
        match to {
            State::PartitionDetected => {
                // An interrupted reconciliation closes its episode unrecovered.
                if let Some(interrupted) = self.open.take() {
                    self.closed = Some(interrupted);
                }
                self.detections += 1;
                self.open = Some(PartitionRecord {
                    detected_at: now,
                    healed_at: None,
                    recovered_at: None,
                });
            }
            State::Reconciling => {
                if let Some(record) = self.open.as_mut() {
                    record.healed_at = Some(now);
                }
            }
            State::Normal => {
                if let Some(mut record) = self.open.take() {
                    record.recovered_at = Some(now);
                    self.closed = Some(record);
                }
            }
            State::Degraded | State::Emergency => {}
        }
        self.state = to;
        self.since = now;
        Transition { from, to, at: now }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SETTLE_MS: u64 = 200;
    const RECONCILE_MS: u64 = 500;

    fn obs(partitioned: bool, quorum_held: bool, reconcile_pending: bool) -> Observation {
        Observation {
            partitioned,
            quorum_held,
            reconcile_pending,
        }
    }

    const PART_QUORUM: Observation = Observation {
        partitioned: true,
        quorum_held: true,
        reconcile_pending: false,
    };
    const PART_NO_QUORUM: Observation = Observation {
        partitioned: true,
        quorum_held: false,
        reconcile_pending: false,
    };
    const HEALED: Observation = Observation {
        partitioned: false,
        quorum_held: true,
        reconcile_pending: false,
    };

    /// Drives a fresh machine (at t=0) through `steps`, returning it.
    fn drive(steps: &[(u64, Observation)]) -> Machine {
        let mut machine = Machine::new(StateConfig::default(), Millis(0));
        for &(at, observation) in steps {
            machine.observe(Millis(at), observation);
        }
        machine
    }

    fn machine_in(state: State) -> Machine {
        let steps: &[(u64, Observation)] = match state {
            State::Normal => &[],
            State::PartitionDetected => &[(1000, PART_QUORUM)],
            State::Degraded => &[(1000, PART_QUORUM), (1200, PART_QUORUM)],
            State::Emergency => &[(1000, PART_NO_QUORUM), (1200, PART_NO_QUORUM)],
            State::Reconciling => &[(1000, PART_QUORUM), (1200, PART_QUORUM), (1300, HEALED)],
        };
        let machine = drive(steps);
        assert_eq!(machine.state(), state);
        machine
    }

    #[test]
    fn every_edge() {
        use State::*;
        // (start state, time of the observation, observation, expected transitions' targets)
        let pending = obs(false, true, true);
        let table: [(State, u64, Observation, &[State]); 10] = [
            (Normal, 2000, PART_QUORUM, &[PartitionDetected]),
            (PartitionDetected, 1200, PART_QUORUM, &[Degraded]),
            (PartitionDetected, 1200, PART_NO_QUORUM, &[Emergency]),
            (Degraded, 1250, PART_NO_QUORUM, &[Emergency]),
            (Emergency, 1250, PART_QUORUM, &[Degraded]),
            (PartitionDetected, 1100, HEALED, &[Reconciling]),
            (Degraded, 1250, pending, &[Reconciling]),
            (Emergency, 1250, HEALED, &[Reconciling]),
            (Reconciling, 1350, PART_NO_QUORUM, &[PartitionDetected]),
            (Reconciling, 1800, HEALED, &[Normal]),
        ];
        let mut edges_seen = Vec::new();
        for (start, at, observation, targets) in table {
            let mut machine = machine_in(start);
            let transitions = machine.observe(Millis(at), observation);
            let got: Vec<State> = transitions.iter().map(|t| t.to).collect();
            assert_eq!(got, targets, "from {start} at {at} with {observation:?}");
            assert_eq!(transitions[0].from, start);
            assert!(transitions.iter().all(|t| t.at == Millis(at)));
            assert_eq!(machine.since(), Millis(at));
            edges_seen.push((start, targets[0]));
        }
        let mut all: Vec<_> = ALLOWED_EDGES.to_vec();
        all.sort();
        edges_seen.sort();
        assert_eq!(edges_seen, all, "the table covers every allowed edge");
    }

    #[test]
    fn stable_observations_change_nothing() {
        let cases = [
            (State::Normal, HEALED),
            (State::Degraded, PART_QUORUM),
            (State::Emergency, PART_NO_QUORUM),
        ];
        for (state, observation) in cases {
            let mut machine = machine_in(state);
            assert!(machine.observe(Millis(100_000), observation).is_empty());
            assert_eq!(machine.state(), state);
        }
    }

    #[test]
    fn settle_not_elapsed_keeps_partition_detected() {
        let mut machine = machine_in(State::PartitionDetected);
        assert!(
            machine
                .observe(Millis(1000 + SETTLE_MS - 1), PART_QUORUM)
                .is_empty()
        );
        assert_eq!(machine.state(), State::PartitionDetected);
        assert_eq!(machine.since(), Millis(1000));
    }

    #[test]
    fn reconcile_pending_holds_reconciling_indefinitely() {
        let mut machine = machine_in(State::Reconciling);
        let pending = obs(false, true, true);
        for at in [1300, 1800, 10_000, 1_000_000] {
            assert!(machine.observe(Millis(at), pending).is_empty());
            assert_eq!(machine.state(), State::Reconciling);
        }
        assert_eq!(machine.poll_timeout(), None);
        let done = machine.observe(Millis(1_000_001), HEALED);
        assert_eq!(done.len(), 1);
        assert_eq!(machine.state(), State::Normal);
    }

    #[test]
    fn reconcile_min_is_respected() {
        let mut machine = machine_in(State::Reconciling);
        assert!(
            machine
                .observe(Millis(1300 + RECONCILE_MS - 1), HEALED)
                .is_empty()
        );
        assert_eq!(
            machine.observe(Millis(1300 + RECONCILE_MS), HEALED).len(),
            1
        );
    }

    #[test]
    fn poll_timeout_values() {
        assert_eq!(machine_in(State::Normal).poll_timeout(), None);
        assert_eq!(
            machine_in(State::PartitionDetected).poll_timeout(),
            Some(Millis(1000 + SETTLE_MS))
        );
        assert_eq!(machine_in(State::Degraded).poll_timeout(), None);
        assert_eq!(machine_in(State::Emergency).poll_timeout(), None);
        assert_eq!(
            machine_in(State::Reconciling).poll_timeout(),
            Some(Millis(1300 + RECONCILE_MS))
        );
    }

    #[test]
    fn zero_timings_chain_transitions_in_one_call() {
        let config = StateConfig {
            settle: Duration::ZERO,
            reconcile_min: Duration::ZERO,
        };
        let mut machine = Machine::new(config, Millis(0));
        let targets = |ts: Vec<Transition>| ts.into_iter().map(|t| t.to).collect::<Vec<_>>();
        let entered = targets(machine.observe(Millis(10), PART_NO_QUORUM));
        assert_eq!(entered, [State::PartitionDetected, State::Emergency]);
        let healed = targets(machine.observe(Millis(20), HEALED));
        assert_eq!(healed, [State::Reconciling, State::Normal]);
    }

    #[test]
    fn record_durations() {
        let mut machine = drive(&[(1000, PART_QUORUM), (1200, PART_QUORUM), (4000, HEALED)]);
        assert_eq!(machine.last_partition(), None);
        machine.observe(Millis(4700), HEALED);
        let record = machine.last_partition();
        let expected = PartitionRecord {
            detected_at: Millis(1000),
            healed_at: Some(Millis(4000)),
            recovered_at: Some(Millis(4700)),
        };
        assert_eq!(record, Some(expected.clone()));
        assert_eq!(
            expected.partition_duration(),
            Some(Duration::from_millis(3000))
        );
        assert_eq!(expected.recovery_time(), Some(Duration::from_millis(700)));
        assert_eq!(machine.partitions_detected(), 1);
        assert_eq!(machine.current_partition(), None);
    }

    #[test]
    fn repartition_while_reconciling_is_a_new_detection() {
        let mut machine = machine_in(State::Reconciling);
        machine.observe(Millis(1400), PART_QUORUM);
        assert_eq!(machine.partitions_detected(), 2);
        let interrupted = machine.last_partition();
        assert_eq!(
            interrupted,
            Some(PartitionRecord {
                detected_at: Millis(1000),
                healed_at: Some(Millis(1300)),
                recovered_at: None,
            })
        );
        assert_eq!(interrupted.and_then(|r| r.recovery_time()), None);
        let open = machine.current_partition();
        assert_eq!(open.map(|r| r.detected_at), Some(Millis(1400)));
    }

    #[test]
    fn time_running_back_is_clamped() {
        let mut machine = machine_in(State::PartitionDetected);
        let transitions = machine.observe(Millis(5), HEALED);
        assert_eq!(transitions[0].at, Millis(1000));
        assert_eq!(machine.since(), Millis(1000));
    }

    #[test]
    fn states_display_by_name() {
        assert_eq!(State::PartitionDetected.to_string(), "PartitionDetected");
        assert_eq!(State::Normal.to_string(), "Normal");
    }

    fn arbitrary_observation() -> impl Strategy<Value = Observation> {
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(p, q, r)| obs(p, q, r))
    }

    proptest! {
        #[test]
        fn random_runs_take_only_allowed_edges(
            steps in proptest::collection::vec((0u64..400, arbitrary_observation()), 0..60),
            settle_ms in 0u64..300,
            reconcile_ms in 0u64..600,
        ) {
            let config = StateConfig {
                settle: Duration::from_millis(settle_ms),
                reconcile_min: Duration::from_millis(reconcile_ms),
            };
            let mut machine = Machine::new(config, Millis(0));
            let mut now = 0;
            let mut last_at = Millis(0);
            let mut state = State::Normal;
            let mut detections = 0;
            for (gap, observation) in steps {
                now += gap;
                for transition in machine.observe(Millis(now), observation) {
                    prop_assert!(ALLOWED_EDGES.contains(&(transition.from, transition.to)));
                    prop_assert_eq!(transition.from, state);
                    prop_assert!(transition.at >= last_at);
                    if transition.to == State::PartitionDetected {
                        detections += 1;
                    }
                    state = transition.to;
                    last_at = transition.at;
                }
                prop_assert_eq!(machine.state(), state);
                prop_assert_eq!(machine.since(), last_at);
                prop_assert_eq!(machine.partitions_detected(), detections);
                if let Some(deadline) = machine.poll_timeout() {
                    prop_assert!(deadline >= machine.since());
                }
            }
        }
    }
}
