//! Deterministic simulation of the node core: N `Cluster`s on one virtual clock and a seeded,
//! lossy in-memory network (see `sim/mod.rs`). Each scenario runs over many seeds; every failure
//! names its seed. `ISLE_SIM_SEED=123` runs one seed, `ISLE_SIM_SEEDS=1000` changes the count.
//! Figures (detection and recovery times, flaps) print with `-- --nocapture`.

mod sim;

use std::collections::BTreeSet;

use isle_detect::{Partition, State, Transition};
use isle_types::{Millis, NodeId};
use sim::{Sim, SimConfig, ids, node};

/// Start-up is checked over the whole boot grace (3 s by default) plus a margin.
const STARTUP_MS: u64 = 3500;
/// When scenarios inject their fault: start-up has converged (in under 200 ms) by then.
const FAULT_AT_MS: u64 = 1000;
/// Default seed counts, sized so the suite runs in seconds in a debug build; raise them with
/// `ISLE_SIM_SEEDS` (best with `--release`) for a deeper sweep.
const SEEDS_5_NODES: u64 = 60;
const SEEDS_3_NODES: u64 = 100;
const SEEDS_REPLAYED: u64 = 5;
const SEEDS_LONG: u64 = 10;
/// A complete split must be classified, settled and acted on within this.
const DETECT_LIMIT_MS: u64 = 2000;
/// After a heal, every node must be back to Normal within this.
const RECOVER_LIMIT_MS: u64 = 3000;

/// The seeds to run: `ISLE_SIM_SEED` alone if set, else `0..ISLE_SIM_SEEDS` (default `count`).
fn seeds(count: u64) -> Vec<u64> {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    match var("ISLE_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..var("ISLE_SIM_SEEDS").unwrap_or(count)).collect(),
    }
}

fn others(n: u64, of: &[u64]) -> BTreeSet<NodeId> {
    let mut set = ids(of);
    set.remove(&node(n));
    set
}

/// Every listed node is Normal, holds quorum, hears exactly the other listed nodes, and sees no
/// partition.
fn assert_healthy(sim: &Sim, nodes: &[u64]) {
    for &n in nodes {
        let s = sim.status(n);
        let why = format!("{}; {}", sim.describe(n), sim.replay());
        assert_eq!(s.state, State::Normal, "not Normal: {why}");
        assert!(s.quorum.held, "no quorum: {why}");
        assert_eq!(s.reachable, others(n, nodes), "reachable set: {why}");
        assert_eq!(s.partition, Partition::None, "partition: {why}");
    }
}

/// A cluster of `n` nodes run to `until` and checked healthy, with no transitions.
fn started(seed: u64, config: SimConfig, until: u64) -> Sim {
    let n = config.nodes;
    let mut sim = Sim::new(seed, config);
    sim.run_until(Millis(until));
    let all: Vec<u64> = (1..=n).collect();
    assert_healthy(&sim, &all);
    for &i in &all {
        let trace = sim.trace(i);
        let why = format!("{}; {}", sim.describe(i), sim.replay());
        assert!(trace.is_empty(), "left Normal during start-up: {why}");
    }
    sim
}

/// The time node `n` entered `to` at or after `since`, if it did.
fn entered(sim: &Sim, n: u64, to: State, since: Millis) -> Option<u64> {
    let trace = sim.trace_since(n, since);
    trace.iter().find(|t| t.to == to).map(|t| t.at.0 - since.0)
}

fn count_to(trace: &[Transition], to: State) -> usize {
    trace.iter().filter(|t| t.to == to).count()
}

/// (min, mean, max) of a non-empty sample.
fn spread(sample: &[u64]) -> (u64, u64, u64) {
    let min = sample.iter().copied().min().unwrap_or(0);
    let max = sample.iter().copied().max().unwrap_or(0);
    let mean = sample.iter().sum::<u64>() / sample.len().max(1) as u64;
    (min, mean, max)
}

/// Once partitioned at `since`, node `n` has settled in `state` with this partition and quorum.
fn assert_partitioned(sim: &Sim, n: u64, state: State, partition: &Partition, quorum: bool) {
    let s = sim.status(n);
    let why = format!("{}; {}", sim.describe(n), sim.replay());
    assert_eq!(s.state, state, "state: {why}");
    assert_eq!(&s.partition, partition, "partition: {why}");
    assert_eq!(s.quorum.held, quorum, "quorum: {why}");
}

/// After a heal at `healed`, node `n` went X → Reconciling → Normal as its last two steps,
/// detected exactly `episodes` partitions since `since`, and recorded the episode's durations.
fn assert_recovered(sim: &Sim, n: u64, since: Millis, healed: Millis, episodes: usize) -> u64 {
    let why = format!("{}; {}", sim.describe(n), sim.replay());
    let trace = sim.trace_since(n, since);
    let last_two: Vec<(State, State)> = trace
        .iter()
        .rev()
        .take(2)
        .rev()
        .map(|t| (t.from, t.to))
        .collect();
    assert_eq!(last_two.len(), 2, "too few transitions: {why}");
    assert_eq!(
        last_two[0].1,
        State::Reconciling,
        "not through Reconciling: {why}"
    );
    assert_eq!(
        last_two[1],
        (State::Reconciling, State::Normal),
        "last step: {why}"
    );
    let detected = count_to(&trace, State::PartitionDetected);
    assert_eq!(
        detected, episodes,
        "PartitionDetected count (flapping?): {why}"
    );
    let record = sim.status(n).last_partition;
    let record = record.unwrap_or_else(|| panic!("no last_partition: {why}"));
    assert!(
        record.partition_duration().is_some(),
        "no partition duration: {why}"
    );
    assert!(record.recovery_time().is_some(), "no recovery time: {why}");
    let back = trace.last().map_or(0, |t| t.at.0);
    back.saturating_sub(healed.0)
}

#[test]
fn startup_reaches_normal_without_spurious_partitions() {
    let mut converged_ms = Vec::new();
    for seed in seeds(SEEDS_5_NODES) {
        let sim = started(seed, SimConfig::new(5), STARTUP_MS);
        // The last reachability change of any node is when the cluster converged.
        let last = (1..=5)
            .filter_map(|n| sim.reachability(n).last().map(|r| r.0.0))
            .max();
        converged_ms.push(last.unwrap_or(0));
        for n in 1..=5 {
            let downs = sim.reachability(n).iter().filter(|r| !r.2).count();
            assert_eq!(
                downs,
                0,
                "a peer went unreachable during start-up: {}; {}",
                sim.describe(n),
                sim.replay()
            );
        }
    }
    let (min, mean, max) = spread(&converged_ms);
    println!("startup: all hear all at {min}/{mean}/{max} ms (min/mean/max)");
}

/// Runs a 3|2 split at `STARTUP_MS` for `DETECT_LIMIT_MS`, heals, and checks both phases.
/// Returns (worst detection, worst settle, worst recovery) in ms.
fn split_and_heal(seed: u64, config: SimConfig) -> (Sim, u64, u64, u64) {
    let mut sim = started(seed, config, FAULT_AT_MS);
    let cut_at = sim.now();
    let (majority, minority) = ([1, 2, 3], [4, 5]);
    sim.cut_both(&majority, &minority);
    sim.run_for(DETECT_LIMIT_MS);
    let (mut detect_ms, mut settle_ms) = (0, 0);
    for n in 1..=5 {
        let (own, other, state): (&[u64], &[u64], State) = if n <= 3 {
            (&majority, &minority, State::Degraded)
        } else {
            (&minority, &majority, State::Emergency)
        };
        let sides = Partition::Complete {
            sides: vec![ids(own), ids(other)],
        };
        assert_partitioned(&sim, n, state, &sides, n <= 3);
        let why = format!("{}; {}", sim.describe(n), sim.replay());
        assert_eq!(sim.status(n).reachable, others(n, own), "reachable: {why}");
        let steps: Vec<(State, State)> = sim
            .trace_since(n, cut_at)
            .iter()
            .map(|t| (t.from, t.to))
            .collect();
        let expected = [
            (State::Normal, State::PartitionDetected),
            (State::PartitionDetected, state),
        ];
        assert_eq!(steps, expected, "split transitions: {why}");
        detect_ms = detect_ms.max(entered(&sim, n, State::PartitionDetected, cut_at).unwrap_or(0));
        settle_ms = settle_ms.max(entered(&sim, n, state, cut_at).unwrap_or(0));
    }
    sim.heal();
    let healed_at = sim.now();
    sim.run_for(RECOVER_LIMIT_MS);
    let mut recover_ms = 0;
    for n in 1..=5 {
        recover_ms = recover_ms.max(assert_recovered(&sim, n, cut_at, healed_at, 1));
    }
    assert_healthy(&sim, &[1, 2, 3, 4, 5]);
    (sim, detect_ms, settle_ms, recover_ms)
}

#[test]
fn complete_split_three_two_and_heal() {
    let (mut detect, mut settle, mut recover) = (Vec::new(), Vec::new(), Vec::new());
    for seed in seeds(SEEDS_5_NODES) {
        let (_, d, s, r) = split_and_heal(seed, SimConfig::new(5));
        detect.push(d);
        settle.push(s);
        recover.push(r);
    }
    let (d, s, r) = (spread(&detect), spread(&settle), spread(&recover));
    println!(
        "3|2 split, worst node per seed, min/mean/max ms: PartitionDetected {d:?}, Degraded/Emergency {s:?}, heal→Normal {r:?}"
    );
}

/// On 3 nodes: applies `cut` at `FAULT_AT_MS`, expects every node Degraded (each still reaches
/// 2 of 3 including itself) reporting `expected`, then heals and expects one clean recovery.
fn three_node_cut_scenario(cut: impl Fn(&mut Sim), expected: &Partition) {
    for seed in seeds(SEEDS_3_NODES) {
        let mut sim = started(seed, SimConfig::new(3), FAULT_AT_MS);
        let cut_at = sim.now();
        cut(&mut sim);
        sim.run_for(DETECT_LIMIT_MS);
        for n in 1..=3 {
            assert_partitioned(&sim, n, State::Degraded, expected, true);
        }
        sim.heal();
        let healed_at = sim.now();
        sim.run_for(RECOVER_LIMIT_MS);
        for n in 1..=3 {
            assert_recovered(&sim, n, cut_at, healed_at, 1);
        }
        assert_healthy(&sim, &[1, 2, 3]);
    }
}

#[test]
fn partial_cut_is_partial_everywhere_and_all_keep_quorum() {
    let partial = Partition::Partial {
        cut: vec![(node(1), node(2))],
    };
    three_node_cut_scenario(|sim| sim.cut_both(&[1], &[2]), &partial);
}

#[test]
fn one_way_cut_is_asymmetric_everywhere() {
    let one_way = Partition::Asymmetric {
        one_way: vec![(node(1), node(2))],
    };
    three_node_cut_scenario(|sim| sim.cut(&[1], &[2]), &one_way);
}

/// Crashes node 5 of 5 at `FAULT_AT_MS`, checks the survivors' verdict, restarts it after
/// `DETECT_LIMIT_MS`, and checks the cluster heals around incarnation 2.
/// Returns the simulation, the restart time and the survivors' worst time to Degraded.
fn crash_and_restart(seed: u64) -> (Sim, Millis, u64) {
    let mut sim = started(seed, SimConfig::new(5), FAULT_AT_MS);
    let crashed_at = sim.now();
    sim.crash(5);
    sim.run_for(DETECT_LIMIT_MS);
    let sides = Partition::Complete {
        sides: vec![ids(&[1, 2, 3, 4]), ids(&[5])],
    };
    let mut detect_ms = 0;
    for n in 1..=4 {
        assert_partitioned(&sim, n, State::Degraded, &sides, true);
        let why = format!("{}; {}", sim.describe(n), sim.replay());
        let reachable = sim.status(n).reachable;
        assert_eq!(reachable, others(n, &[1, 2, 3, 4]), "reachable: {why}");
        detect_ms = detect_ms.max(entered(&sim, n, State::Degraded, crashed_at).unwrap_or(0));
    }
    sim.restart(5);
    let restarted_at = sim.now();
    sim.run_for(RECOVER_LIMIT_MS);
    for n in 1..=4 {
        assert_recovered(&sim, n, crashed_at, restarted_at, 1);
        let peer = sim.status(n).peers.into_iter().find(|p| p.id == node(5));
        let why = format!("{}; {}", sim.describe(n), sim.replay());
        let incarnation = peer.map(|p| p.incarnation);
        assert_eq!(incarnation, Some(2), "node 5's incarnation as seen: {why}");
    }
    assert_healthy(&sim, &[1, 2, 3, 4, 5]);
    let why = format!("{}; {}", sim.describe(5), sim.replay());
    assert_eq!(sim.status(5).incarnation, 2, "{why}");
    (sim, restarted_at, detect_ms)
}

#[test]
fn crash_and_restart_with_a_new_incarnation() {
    let (mut detect, mut spurious) = (Vec::new(), 0);
    for seed in seeds(SEEDS_5_NODES) {
        let (sim, restarted_at, detect_ms) = crash_and_restart(seed);
        detect.push(detect_ms);
        spurious += usize::from(!sim.trace_since(5, restarted_at).is_empty());
    }
    let (min, mean, max) = spread(&detect);
    let runs = detect.len();
    println!(
        "crash of 1 in 5: survivors Degraded after {min}/{mean}/{max} ms (min/mean/max); \
         restarted node reported a partition while booting in {spurious} of {runs} seeds"
    );
}

/// Known bug (see the report): a restarted node hears every peer before those peers have heard
/// its new incarnation, so their fresh rows say "not hearing 5" while 5 hears them; `settled()`
/// is already true, and the node reports an Asymmetric partition for one gossip round, counting
/// a detection and spending `reconcile_min` in Reconciling. A fresh node boots clean.
#[test]
fn restarted_node_does_not_report_a_partition_while_booting() {
    for seed in seeds(SEEDS_5_NODES) {
        let (sim, restarted_at, _) = crash_and_restart(seed);
        let why = format!("{}; {}", sim.describe(5), sim.replay());
        let trace = sim.trace_since(5, restarted_at);
        assert!(trace.is_empty(), "restarted node left Normal: {why}");
        assert_eq!(sim.status(5).partitions_detected, 0, "{why}");
    }
}

#[test]
fn same_seed_same_trace_other_seed_other_schedule() {
    // Delay spikes reorder messages, so the ordering paths are part of what must replay.
    let config = || SimConfig {
        spike_per_mille: 20,
        spike_ms_max: 60,
        ..SimConfig::new(5)
    };
    for seed in seeds(SEEDS_REPLAYED) {
        let (first, ..) = split_and_heal(seed, config());
        let (second, ..) = split_and_heal(seed, config());
        let replay = first.replay();
        assert_eq!(
            first.traces(),
            second.traces(),
            "traces differ between runs; {replay}"
        );
        assert_eq!(
            first.schedule_digest(),
            second.schedule_digest(),
            "schedules differ between runs; {replay}"
        );
        assert_eq!(first.message_counts(), second.message_counts(), "{replay}");
        let (other, ..) = split_and_heal(seed.wrapping_add(1_000_003), config());
        assert_ne!(
            first.schedule_digest(),
            other.schedule_digest(),
            "another seed, the same schedule; {replay}"
        );
    }
}

/// Milliseconds node `n` spent outside Normal between `from` and `to`.
fn out_of_normal_ms(sim: &Sim, n: u64, from: Millis, to: Millis) -> u64 {
    let (mut total, mut left_at) = (0, None);
    for t in sim.trace_since(n, from).iter().filter(|t| t.at <= to) {
        match (t.from, t.to) {
            (State::Normal, _) => left_at = Some(t.at),
            (_, State::Normal) => total += t.at.0 - left_at.take().unwrap_or(from).0,
            _ => {}
        }
    }
    total + left_at.map_or(0, |at| to.0 - at.0)
}

#[test]
fn flaky_links_thirty_percent_loss_then_recovery() {
    const LOSS_PER_MILLE: u64 = 300;
    const LOSSY_MS: u64 = 10_000;
    let (mut detections, mut downs, mut out_ms, mut seeds_with_flaps) = (0, 0, 0, 0);
    let runs = seeds(SEEDS_LONG);
    for &seed in &runs {
        let mut sim = started(seed, SimConfig::new(5), FAULT_AT_MS);
        let lossy_at = sim.now();
        sim.set_loss_all(LOSS_PER_MILLE);
        sim.run_for(LOSSY_MS);
        sim.heal();
        let healed_at = sim.now();
        let mut detected = 0;
        for n in 1..=5 {
            detected += count_to(&sim.trace_since(n, lossy_at), State::PartitionDetected);
            let changes = sim.reachability(n).iter();
            downs += changes.filter(|r| r.0 >= lossy_at && !r.2).count();
            out_ms += out_of_normal_ms(&sim, n, lossy_at, healed_at);
        }
        detections += detected;
        seeds_with_flaps += usize::from(detected > 0);
        sim.run_for(RECOVER_LIMIT_MS);
        assert_healthy(&sim, &[1, 2, 3, 4, 5]);
        let quiet_from = Millis(healed_at.0 + RECOVER_LIMIT_MS / 2);
        for n in 1..=5 {
            let why = format!("{}; {}", sim.describe(n), sim.replay());
            let late = sim.trace_since(n, quiet_from);
            assert!(
                late.is_empty(),
                "still moving long after the loss stopped: {why}"
            );
        }
    }
    let node_seconds = runs.len() as u64 * 5 * LOSSY_MS / 1000;
    println!(
        "{LOSS_PER_MILLE}‰ loss for {LOSSY_MS} ms on 5 nodes, {} seeds ({node_seconds} node-seconds): \
         {seeds_with_flaps} seeds with any PartitionDetected, {detections} detections, \
         {downs} peer-unreachable events, {out_ms} ms outside Normal in total",
        runs.len()
    );
}
