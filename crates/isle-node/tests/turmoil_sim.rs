//! Whole-node deterministic simulation under turmoil: five real nodes (`isle_node::start_with`,
//! the code `isle node` runs) on turmoil's virtual network and clock, with in-memory redb stores
//! and seeded RNGs. Nothing is stubbed: the transport, breakers, detector and partition state
//! machine are the production ones; only the `Env` is swapped.
//!
//! Per seed: all five reach Normal with quorum; a complete split {1,2,3} | {4,5} sends 1-3 to
//! Degraded (quorum) and 4-5 to Emergency (none), each seeing a complete partition with the right
//! sides, within `DETECT_LIMIT_MS`; after repair everyone is back to Normal. Each seed runs twice
//! and the observed traces (every status change with its simulated time, and every node's
//! transition list) must match exactly.
//!
//! Every seed is printed; `ISLE_SIM_SEED=123` replays one, `ISLE_SIM_SEEDS=50` changes the count.
//! Figures print with `-- --nocapture`.
//!
//! The wall clock is virtual too (`SystemClock::with_wall_epoch` from turmoil's `since_epoch`):
//! every node's `Identity::created_unix_ms` must equal turmoil's simulated wall time.

mod turmoil_net;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, UNIX_EPOCH};

use isle_detect::{Partition, State, Transition};
use isle_env::{Random, SeededRandom, SystemClock};
use isle_node::{Env, NodeConfig, NodeHandle, Status};
use isle_storage::RedbStore;
use isle_types::NodeId;
use turmoil::Sim;
use turmoil_net::TurmoilNetwork;

/// Nodes in the cluster, ids 1..=NODES.
const NODES: u64 = 5;
/// The majority side of the split; the rest is the minority.
const MAJORITY: [u64; 3] = [1, 2, 3];
/// Peer transport port on every host.
const PEER_PORT: u16 = 7000;
/// Default number of seeds (each runs twice); `ISLE_SIM_SEEDS` overrides.
const SEEDS_DEFAULT: u64 = 10;
/// Link latency bounds (turmoil draws from an exponential curve between them).
const LATENCY_MS_MIN: u64 = 1;
const LATENCY_MS_MAX: u64 = 50;
/// Start-up must reach a fully connected Normal cluster within this.
const CONVERGE_LIMIT_MS: u64 = 2000;
/// When the split starts: after the 3 s boot grace, so detection runs on warmed-up detectors.
const PARTITION_AT_MS: u64 = 3500;
/// A complete split must be detected, settled and acted on within this.
const DETECT_LIMIT_MS: u64 = 2000;
/// How long the split lasts.
const PARTITION_FOR_MS: u64 = 2500;
/// After repair, every node must be back to Normal within this (redial backoff, breaker
/// cooldown and `reconcile_min` all fit inside).
const RECOVER_LIMIT_MS: u64 = 5000;
/// Time after recovery during which every node must stay fully healthy.
const TAIL_MS: u64 = 500;
/// A fixed simulated wall-clock epoch, so turmoil's `since_epoch` is the same on every run.
const EPOCH_UNIX_S: u64 = 1_700_000_000;

/// One observable status change of one node, at a simulated time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    at_ms: u64,
    node: u64,
    state: State,
    quorum_held: bool,
    reachable: BTreeSet<NodeId>,
    partition: Partition,
}

/// What one run produced: the compared trace, plus figures that are printed only.
#[derive(Debug, Clone)]
struct Outcome {
    /// Every status change any node published, in simulated-time order.
    observed: Vec<Observed>,
    /// Each node's own transition list at the end (node clock, ms since its start).
    transitions: BTreeMap<u64, Vec<Transition>>,
    converged_ms: u64,
    /// Sim time from the split to each node's first PartitionDetected.
    detected_ms: BTreeMap<u64, u64>,
    /// Sim time from the split until all five were in their expected state.
    settled_ms: u64,
    /// Sim time from repair until all five were Normal again.
    recovered_ms: u64,
    /// What `SystemClock::unix_ms` said at start minus turmoil's simulated wall clock.
    wall_clock_leak_ms: i64,
}

type Handles = Arc<Mutex<BTreeMap<u64, NodeHandle>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn host_name(id: u64) -> String {
    format!("n{id}")
}

fn majority() -> BTreeSet<u64> {
    MAJORITY.into_iter().collect()
}

fn minority() -> BTreeSet<u64> {
    (1..=NODES).filter(|id| !MAJORITY.contains(id)).collect()
}

fn node_ids(ids: &BTreeSet<u64>) -> BTreeSet<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

fn node_config(id: u64) -> NodeConfig {
    NodeConfig {
        id: NodeId(id),
        // turmoil binds only the unspecified address or loopback; peers dial the host name.
        listen: format!("0.0.0.0:{PEER_PORT}"),
        advertise: Some(format!("{}:{PEER_PORT}", host_name(id))),
        http: format!("{}:8000", host_name(id)),
        grpc: None,
        peers: (1..=NODES)
            .filter(|peer| *peer != id)
            .map(|peer| format!("{}:{PEER_PORT}", host_name(peer)))
            .collect(),
        data_dir: PathBuf::from("unused-in-memory"),
        zone: Default::default(),
        weight: 1,
        allow_fault_injection: false,
        quorum_policy: Default::default(),
        detection: Default::default(),
        transport: Default::default(),
        cp: Default::default(),
        ap: Default::default(),
    }
}

/// Registers node `id` as a turmoil host running the real node until the simulation ends.
fn add_node(sim: &mut Sim<'static>, id: u64, seed: u64, handles: &Handles) {
    let config = node_config(id);
    config.validate().expect("node config is valid");
    let handles = Arc::clone(handles);
    sim.host(host_name(id), move || {
        let config = config.clone();
        let handles = Arc::clone(&handles);
        async move {
            let env = Env {
                // Created inside the host, so its epoch is this host's virtual tokio clock.
                clock: Arc::new(SystemClock::new().with_wall_epoch(sim_unix_ms())),
                rng: SeededRandom::new(seed),
                net: Arc::new(TurmoilNetwork),
                store: RedbStore::in_memory()?,
            };
            let handle = isle_node::start_with(config, env).await?;
            lock(&handles).insert(id, handle);
            std::future::pending::<()>().await;
            Ok(())
        }
    });
}

/// One simulated cluster and what has been observed of it so far.
struct Cluster {
    seed: u64,
    sim: Sim<'static>,
    handles: Handles,
    last: BTreeMap<u64, Observed>,
    observed: Vec<Observed>,
}

impl Cluster {
    /// Builds the simulation; every seed (turmoil's and each node's) derives from `seed`.
    fn new(seed: u64) -> Self {
        let mut root = SeededRandom::new(seed);
        let mut sim = turmoil::Builder::new()
            .rng_seed(root.next_u64())
            .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_UNIX_S))
            .tick_duration(Duration::from_millis(1))
            .min_message_latency(Duration::from_millis(LATENCY_MS_MIN))
            .max_message_latency(Duration::from_millis(LATENCY_MS_MAX))
            .simulation_duration(Duration::from_secs(3600))
            .build();
        let handles: Handles = Arc::default();
        for id in 1..=NODES {
            add_node(&mut sim, id, root.next_u64(), &handles);
        }
        Cluster {
            seed,
            sim,
            handles,
            last: BTreeMap::new(),
            observed: Vec::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.sim.elapsed().as_millis()).expect("sim time fits u64")
    }

    fn statuses(&self) -> BTreeMap<u64, Arc<Status>> {
        lock(&self.handles)
            .iter()
            .map(|(id, handle)| (*id, Arc::clone(&handle.status.borrow())))
            .collect()
    }

    /// Advances one tick and records every node whose observable status changed.
    fn step(&mut self) {
        let seed = self.seed;
        self.sim
            .step()
            .unwrap_or_else(|err| panic!("seed {seed}: a host failed: {err}"));
        let at_ms = self.now_ms();
        for (node, status) in self.statuses() {
            let now = Observed {
                at_ms,
                node,
                state: status.state,
                quorum_held: status.quorum.held,
                reachable: status.reachable.clone(),
                partition: status.partition.clone(),
            };
            let changed = self.last.get(&node).is_none_or(|last| {
                (
                    &last.state,
                    last.quorum_held,
                    &last.reachable,
                    &last.partition,
                ) != (&now.state, now.quorum_held, &now.reachable, &now.partition)
            });
            if changed {
                self.observed.push(now.clone());
                self.last.insert(node, now);
            }
        }
    }

    /// Steps until `done` holds for all five nodes; returns the sim time, or panics at `limit_ms`.
    fn run_until(&mut self, what: &str, limit_ms: u64, done: impl Fn(u64, &Status) -> bool) -> u64 {
        let start_ms = self.now_ms();
        loop {
            let statuses = self.statuses();
            if statuses.len() as u64 == NODES && statuses.iter().all(|(id, s)| done(*id, s)) {
                return self.now_ms();
            }
            if self.now_ms() >= start_ms + limit_ms {
                panic!(
                    "seed {}: not {what} within {limit_ms} ms (sim {} ms):\n{}",
                    self.seed,
                    self.now_ms(),
                    describe(&statuses)
                );
            }
            self.step();
        }
    }

    /// Steps until `at_ms`, checking `holds` for all five nodes after every tick.
    fn run_to(&mut self, what: &str, at_ms: u64, holds: impl Fn(u64, &Status) -> bool) {
        while self.now_ms() < at_ms {
            self.step();
            let statuses = self.statuses();
            if let Some((id, _)) = statuses.iter().find(|(id, s)| !holds(**id, s)) {
                panic!(
                    "seed {}: node {id} stopped being {what} at sim {} ms:\n{}",
                    self.seed,
                    self.now_ms(),
                    describe(&statuses)
                );
            }
        }
    }

    /// Cuts (or heals) every link between the two sides, both ways.
    fn cut(&mut self, heal: bool) {
        for a in majority() {
            for b in minority() {
                if heal {
                    self.sim.repair(host_name(a), host_name(b));
                } else {
                    self.sim.partition(host_name(a), host_name(b));
                }
            }
        }
    }
}

fn describe(statuses: &BTreeMap<u64, Arc<Status>>) -> String {
    let line = |(id, s): (&u64, &Arc<Status>)| {
        format!(
            "  n{id}: {} quorum={} reachable={:?} partition={:?}",
            s.state, s.quorum.held, s.reachable, s.partition
        )
    };
    statuses.iter().map(line).collect::<Vec<_>>().join("\n")
}

fn healthy(id: u64, status: &Status) -> bool {
    let others: BTreeSet<NodeId> = (1..=NODES).filter(|n| *n != id).map(NodeId).collect();
    status.state == State::Normal
        && status.quorum.held
        && status.reachable == others
        && status.partition == Partition::None
}

/// 1-3 Degraded with quorum, 4-5 Emergency without, each seeing the complete split.
fn split(id: u64, status: &Status) -> bool {
    let (own, other, state, quorum) = if MAJORITY.contains(&id) {
        (majority(), minority(), State::Degraded, true)
    } else {
        (minority(), majority(), State::Emergency, false)
    };
    let sides = vec![node_ids(&own), node_ids(&other)];
    status.state == state
        && status.quorum.held == quorum
        && status.partition == Partition::Complete { sides }
}

/// The full scenario for one seed: start, split, hold, heal, quiet tail.
fn run(seed: u64) -> Outcome {
    let mut cluster = Cluster::new(seed);
    let converged_ms = cluster.run_until("converged", CONVERGE_LIMIT_MS, healthy);
    let wall_clock_leak_ms = wall_clock_leak_ms(&cluster);
    cluster.run_to("healthy before the split", PARTITION_AT_MS, healthy);

    cluster.cut(false);
    let split_at_ms = cluster.now_ms();
    let settled_ms = cluster.run_until("split", DETECT_LIMIT_MS, split) - split_at_ms;
    let detected_ms = first_entry(&cluster.observed, split_at_ms, State::PartitionDetected);
    let repair_at_ms = split_at_ms + PARTITION_FOR_MS;
    cluster.run_to("split (no flapping)", repair_at_ms, split);

    cluster.cut(true);
    let recovered_ms = cluster.run_until("recovered", RECOVER_LIMIT_MS, healthy) - repair_at_ms;
    let tail_end_ms = cluster.now_ms() + TAIL_MS;
    cluster.run_to("healthy after recovery", tail_end_ms, healthy);

    let transitions = cluster
        .statuses()
        .into_iter()
        .map(|(id, status)| (id, status.transitions.clone()))
        .collect();
    Outcome {
        observed: cluster.observed,
        transitions,
        converged_ms,
        detected_ms,
        settled_ms,
        recovered_ms,
        wall_clock_leak_ms,
    }
}

/// Per node: sim time from `since_ms` to its first observed entry into `state`.
fn first_entry(observed: &[Observed], since_ms: u64, state: State) -> BTreeMap<u64, u64> {
    let mut first = BTreeMap::new();
    for entry in observed
        .iter()
        .filter(|o| o.at_ms >= since_ms && o.state == state)
    {
        first.entry(entry.node).or_insert(entry.at_ms - since_ms);
    }
    first
}

/// Turmoil's simulated wall clock, as Unix milliseconds (call inside a host).
fn sim_unix_ms() -> u64 {
    let since = turmoil::since_epoch().expect("inside a turmoil simulation");
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// The identity's `created_unix_ms` (from `Clock::unix_ms`) minus turmoil's simulated wall clock.
fn wall_clock_leak_ms(cluster: &Cluster) -> i64 {
    let simulated_ms = EPOCH_UNIX_S * 1000;
    let created_ms = lock(&cluster.handles)
        .values()
        .map(|handle| handle.identity.created_unix_ms)
        .min()
        .expect("nodes started");
    i64::try_from(created_ms).unwrap_or(i64::MAX) - i64::try_from(simulated_ms).unwrap_or(0)
}

/// `ISLE_SIM_SEED` alone if set, else `0..ISLE_SIM_SEEDS` (default `SEEDS_DEFAULT`).
fn seeds() -> Vec<u64> {
    let parse = |name: &str| {
        std::env::var(name).ok().map(|v| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}={v}: not a u64"))
        })
    };
    if let Some(seed) = parse("ISLE_SIM_SEED") {
        return vec![seed];
    }
    (0..parse("ISLE_SIM_SEEDS").unwrap_or(SEEDS_DEFAULT)).collect()
}

fn assert_same_trace(seed: u64, first: &Outcome, second: &Outcome) {
    let diverged = first
        .observed
        .iter()
        .zip(&second.observed)
        .position(|(a, b)| a != b);
    assert!(
        diverged.is_none() && first.observed.len() == second.observed.len(),
        "seed {seed}: traces diverge at entry {diverged:?} (lengths {} vs {}):\n{:?}\nvs\n{:?}",
        first.observed.len(),
        second.observed.len(),
        diverged.and_then(|i| first.observed.get(i)),
        diverged.and_then(|i| second.observed.get(i)),
    );
    assert_eq!(
        first.transitions, second.transitions,
        "seed {seed}: transition lists differ"
    );
}

/// A fingerprint of the compared trace, printed so runs in separate processes can be compared.
fn fingerprint(outcome: &Outcome) -> u64 {
    // `DefaultHasher::new` uses fixed keys: the same trace hashes the same in every process.
    let mut hasher = DefaultHasher::new();
    format!("{:?}{:?}", outcome.observed, outcome.transitions).hash(&mut hasher);
    hasher.finish()
}

/// Runs `seed` twice, on two threads at once (fresh thread-locals, half the wall time).
fn run_twice(seed: u64) -> (Outcome, Outcome) {
    let join = |handle: std::thread::ScopedJoinHandle<'_, Outcome>| {
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    };
    std::thread::scope(|scope| {
        let first = scope.spawn(|| run(seed));
        let second = scope.spawn(|| run(seed));
        (join(first), join(second))
    })
}

#[test]
fn five_real_nodes_split_and_heal_deterministically() {
    let wall = Instant::now();
    let seeds = seeds();
    for &seed in &seeds {
        println!("turmoil_sim seed {seed} (replay: ISLE_SIM_SEED={seed})");
        let (first, second) = run_twice(seed);
        assert_same_trace(seed, &first, &second);
        let transitions: usize = first.transitions.values().map(Vec::len).sum();
        println!(
            "  converged {} ms; split: first PartitionDetected {:?} ms, all settled {} ms; \
             recovered {} ms after repair",
            first.converged_ms, first.detected_ms, first.settled_ms, first.recovered_ms,
        );
        println!(
            "  {} status changes, {} transitions, identical on replay (fingerprint {:016x})",
            first.observed.len(),
            transitions,
            fingerprint(&first),
        );
        assert!(
            (0..1_000).contains(&first.wall_clock_leak_ms),
            "seed {seed}: created_unix_ms is {} ms off turmoil's wall clock: a wall-clock leak",
            first.wall_clock_leak_ms
        );
    }
    println!(
        "{} seeds x 2 runs in {:?} wall time",
        seeds.len(),
        wall.elapsed()
    );
}
