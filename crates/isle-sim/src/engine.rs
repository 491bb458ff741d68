//! The engine: a turmoil simulation with one host per node running the real node
//! (`isle_node::start_with`, the code `isle node` runs) over turmoil's TCP, an in-memory redb
//! store that outlives crashes, a skewable clock and a seeded RNG; clients attached to the
//! nodes; and the harness that steps the simulation, applies the nemesis schedule, dispatches
//! the workload and records the history.
//!
//! The harness runs between steps, on the caller's thread, so everything it does happens at a
//! definite simulated time: the same seed replays the same run.
//!
//! How the nemeses happen here: cuts, one-way cuts and flaky links are turmoil link states;
//! crash and restart are turmoil's `crash`/`bounce` on a store that survives; clock skew moves
//! the node's wall clock; corrupt installs `Corrupt` rules in the node's own fault layer;
//! membership asks a running node's CP service to remove the voter (and to add it back as a
//! learner, then promote it, when the nemesis stops). **Pause** cannot freeze a turmoil host,
//! so it does the nearest thing: every link of the node holds its messages (delivered all at
//! once on resume, as a SIGCONTed process finds its socket buffers full) and its clients send
//! nothing new. Unlike SIGSTOP, the node's timers keep running: it may time out its peers or
//! start an election meanwhile, whose messages wait like the rest; in-process requests already
//! running continue.
//!
//! Phases: boot (the cluster fully connected, one CP leader over every voter) → workload with
//! the schedule → heal everything → drain in-flight operations → recover (every node Normal)
//! → restore the CP voters (a membership nemesis cut short) → retry unacknowledged
//! increments with their request ids → converge (every key's replicas equal) → quiet →
//! read every replica's final copy → check.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use isle_ap::ring::RingMember;
use isle_ap::{Ring, key_hash};
use isle_detect::{Partition, State};
use isle_env::SeededRandom;
use isle_node::cp::MembershipChange;
use isle_node::{Env, NodeConfig, NodeHandle, Status};
use isle_storage::RedbStore;
use isle_types::NodeId;
use tokio::sync::mpsc;

use isle_chaos::convergence::{FinalCopy, FinalState};
use isle_chaos::{History, Op, Operation, Outcome};

use crate::client::{self, Done};
use crate::clock::{SimClock, Skew};
use crate::config::{Bug, SimConfig};
use crate::cp::{CpDone, CpRequest, CpWorkload, CpWorkloadConfig};
use crate::nemesis::{Action, Effects, Nemesis};
use crate::net::TurmoilNetwork;
use crate::record::{NemesisEvent, ap_value};
use crate::workload::{Request, Workload};

/// Peer transport port on every host.
const PEER_PORT: u16 = 7000;
/// A fixed simulated wall-clock epoch, so wall time is the same on every run.
const EPOCH_UNIX_S: u64 = 1_700_000_000;
/// How often convergence is polled, ms.
const CONVERGE_POLL_MS: u64 = 100;

/// Why a run could not be carried out (as opposed to a check that failed).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A host's software failed (a node did not start, a task panicked).
    #[error("seed {seed}: at sim {at_ms} ms a host failed: {message}")]
    Host {
        /// The run's seed.
        seed: u64,
        /// When.
        at_ms: u64,
        /// turmoil's error.
        message: String,
    },
    /// The cluster did not come up.
    #[error("seed {seed}: the cluster was not fully connected within {limit_ms} ms:\n{statuses}")]
    Boot {
        /// The run's seed.
        seed: u64,
        /// The limit.
        limit_ms: u64,
        /// Every node's status.
        statuses: String,
    },
    /// The configuration cannot run.
    #[error("invalid simulation config: {0}")]
    Config(String),
}

/// Figures of one run (printed, not compared).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// Sim time when every node was first Normal and connected, ms.
    pub boot_ms: u64,
    /// Sim time of the final heal, ms.
    pub heal_at_ms: u64,
    /// From the heal until every node was Normal again, ms (`None`: not within the limit).
    pub recovered_after_heal_ms: Option<u64>,
    /// From the heal until every key's replicas were equal, ms (`None`: not within the limit).
    pub converged_after_heal_ms: Option<u64>,
    /// From the heal until every node was a CP voter and knew one leader, ms (`None`: not
    /// within the limit).
    pub cp_recovered_after_heal_ms: Option<u64>,
    /// The fewest CP voters a running node reported during the workload (sampled every
    /// 100 ms): below the cluster size when a membership nemesis took effect.
    pub fewest_voters: u64,
    /// Increments retried after the heal (with their request ids).
    pub retried: usize,
    /// Total simulated time, ms.
    pub sim_ms: u64,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Run {
    /// The configuration it ran.
    pub config: SimConfig,
    /// Every client operation, AP and CP, in completion order (see [`crate::record`]).
    pub history: History,
    /// Nemesis events, in time order.
    pub nemeses: Vec<NemesisEvent>,
    /// Every node's final copy of every AP key the workload touched (keys `bucket/key`,
    /// replicas `n1`, `n2`, ...), primaries marked.
    pub finals: FinalState,
    /// Timings.
    pub figures: Figures,
}

/// Runs one simulation to the end and returns what it recorded (check it with
/// [`crate::sweep::run_and_check`] or the checkers in [`crate::chaos`]).
pub fn run(config: SimConfig) -> Result<Run, SimError> {
    let mut engine = Engine::new(config)?;
    engine.boot()?;
    engine.run_workload()?;
    engine.heal_and_settle()?;
    Ok(engine.finish())
}

/// A running node's entry points, published by its host when it has started.
struct Live {
    handle: NodeHandle,
    inbox: mpsc::UnboundedSender<Job>,
}

/// Per node, shared by the harness and every incarnation of the node's host.
struct Slot {
    /// The node's disk: one in-memory redb database for the whole run.
    store: RedbStore,
    skew: Skew,
    /// Seeds each incarnation's RNG.
    rng: Mutex<SeededRandom>,
    live: Mutex<Option<Live>>,
}

/// What a client asks, in either keyspace.
#[derive(Debug, Clone)]
enum Task {
    Ap(Request),
    Cp(CpRequest),
    /// CP membership changes, run in order, each retried until done (not a client operation).
    Membership(Vec<MembershipChange>),
}

/// What a client learned, in either keyspace.
enum Finished {
    Ap(Done),
    Cp(CpDone),
    Membership,
}

/// One request for a node's clients.
struct Job {
    id: u64,
    task: Task,
}

type Completions = Arc<Mutex<Vec<(u64, Finished)>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn host_name(id: u64) -> String {
    format!("n{id}")
}

fn node_config(config: &SimConfig, id: u64) -> NodeConfig {
    NodeConfig {
        id: NodeId(id),
        // turmoil binds only the unspecified address or loopback; peers dial the host name.
        listen: format!("0.0.0.0:{PEER_PORT}"),
        advertise: Some(format!("{}:{PEER_PORT}", host_name(id))),
        http: format!("{}:8000", host_name(id)),
        grpc: None,
        peers: (1..=config.nodes)
            .filter(|peer| *peer != id)
            .map(|peer| format!("{}:{PEER_PORT}", host_name(peer)))
            .collect(),
        data_dir: "unused-in-memory".into(),
        zone: Default::default(),
        weight: 1,
        allow_fault_injection: true,
        quorum_policy: Default::default(),
        detection: Default::default(),
        transport: Default::default(),
        cp: isle_node::cp::CpConfig {
            // Every node expects the whole cluster; the lowest id forms the group.
            bootstrap_expect: Some(usize::try_from(config.nodes).unwrap_or(usize::MAX)),
            ..config.cp.clone()
        },
        ap: isle_node::ap::ApConfig {
            aae_interval_ms: if config.bug == Some(Bug::NoAntiEntropy) {
                0
            } else {
                config.ap.aae_interval_ms
            },
            ..config.ap.clone()
        },
    }
}

/// Plain values held as more than one sibling (more than one dot) in `store`'s copy of a
/// key: each is one client write applied as two writes. Read from the stored object, since a
/// read's value lists equal siblings once.
fn duplicated_siblings(store: &RedbStore, bucket: &str, key: &str) -> Vec<String> {
    let stored = store
        .ap_store()
        .object(&isle_ap::merkle::storage_key(bucket, key.as_bytes()));
    let Some(Ok(isle_ap::Object::Siblings(set))) = stored
        .ok()
        .flatten()
        .map(|bytes| isle_ap::Object::decode(&bytes))
    else {
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    let mut duplicated = BTreeSet::new();
    for (_, value) in set.siblings() {
        if let Some(value) = value {
            let text = String::from_utf8_lossy(value).into_owned();
            if !seen.insert(text.clone()) {
                duplicated.insert(text);
            }
        }
    }
    duplicated.into_iter().collect()
}

/// Turmoil's simulated wall clock as Unix ms (inside a host).
fn sim_unix_ms() -> Result<u64, String> {
    let since = turmoil::since_epoch().ok_or("not inside a turmoil host")?;
    Ok(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// Registers node `id` as a turmoil host: each (re)start runs the real node on the slot's
/// store, publishes it, and serves the node's clients until the host is crashed.
fn add_host(
    sim: &mut turmoil::Sim<'static>,
    config: NodeConfig,
    slot: Arc<Slot>,
    done: Completions,
    cp_config: CpWorkloadConfig,
    bug: Option<Bug>,
) {
    let name = host_name(config.id.0);
    sim.host(name, move || {
        let (config, slot, done) = (config.clone(), Arc::clone(&slot), Arc::clone(&done));
        let cp_config = cp_config.clone();
        async move {
            let seed = lock(&slot.rng).fork();
            let clock: Arc<dyn isle_env::Clock> =
                Arc::new(SimClock::new(sim_unix_ms()?, slot.skew.clone()));
            let env = Env {
                clock: Arc::clone(&clock),
                rng: seed,
                net: Arc::new(TurmoilNetwork),
                store: slot.store.clone(),
            };
            let handle = isle_node::start_with(config, env).await?;
            let (inbox, mut jobs) = mpsc::unbounded_channel::<Job>();
            let (ap, cp) = (handle.ap.clone(), handle.cp.clone());
            *lock(&slot.live) = Some(Live { handle, inbox });
            while let Some(job) = jobs.recv().await {
                let (ap, cp, done) = (ap.clone(), cp.clone(), Arc::clone(&done));
                let clock = Arc::clone(&clock);
                let cp_config = cp_config.clone();
                tokio::spawn(async move {
                    let result = match job.task {
                        Task::Ap(request) => Finished::Ap(client::execute(&ap, request).await),
                        Task::Cp(request) => {
                            Finished::Cp(crate::cp::execute(&cp, &request, &cp_config, bug).await)
                        }
                        Task::Membership(changes) => {
                            crate::cp::change_membership(&cp, clock.as_ref(), &changes).await;
                            Finished::Membership
                        }
                    };
                    lock(&done).push((job.id, result));
                });
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
}

/// What a link between `a < b` should be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Link {
    /// a → b dropped.
    ab: bool,
    /// b → a dropped.
    ba: bool,
    /// Messages wait (an end is paused).
    hold: bool,
}

impl Link {
    fn of(effects: &Effects, a: u64, b: u64) -> Link {
        Link {
            ab: effects.cuts.contains(&(a, b)),
            ba: effects.cuts.contains(&(b, a)),
            hold: effects.paused.contains(&a) || effects.paused.contains(&b),
        }
    }
}

/// A client process attached to a node.
struct Process {
    id: u64,
    node: u64,
    /// A CP client (else an AP one).
    cp: bool,
    busy: bool,
    next_at_ms: u64,
}

/// A request on its way.
struct InFlight {
    process: u64,
    node: u64,
    task: Task,
    invoke_ns: u64,
}

struct Engine {
    config: SimConfig,
    sim: turmoil::Sim<'static>,
    slots: BTreeMap<u64, Arc<Slot>>,
    done: Completions,
    workload: Workload,
    cp_workload: CpWorkload,
    processes: Vec<Process>,
    next_process: u64,
    in_flight: BTreeMap<u64, InFlight>,
    next_job: u64,
    history: History,
    nemeses: Vec<NemesisEvent>,
    /// Every `(bucket, key)` the AP workload touched.
    touched: BTreeSet<(String, String)>,
    /// Every increment sent, by request id, as first sent (to retry it after the heal).
    increments: BTreeMap<String, Request>,
    active: Vec<Nemesis>,
    applied: Effects,
    figures: Figures,
    /// Sim time when the workload started, ms.
    t0_ms: u64,
}

impl Engine {
    fn new(config: SimConfig) -> Result<Engine, SimError> {
        if !(1..=64).contains(&config.nodes) || config.net.tick_ms == 0 {
            return Err(SimError::Config(format!(
                "nodes must be 1..=64 and tick_ms > 0 (nodes={}, tick_ms={})",
                config.nodes, config.net.tick_ms
            )));
        }
        let mut root = SeededRandom::new(config.seed);
        let net = &config.net;
        let mut sim = turmoil::Builder::new()
            .rng_seed(isle_env::Random::next_u64(&mut root))
            .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_UNIX_S))
            .tick_duration(Duration::from_millis(net.tick_ms))
            .min_message_latency(Duration::from_millis(net.latency_ms_min))
            .max_message_latency(Duration::from_millis(net.latency_ms_max))
            .fail_rate(net.fail_rate)
            .repair_rate(net.repair_rate)
            .simulation_duration(Duration::from_secs(24 * 3600))
            .build();
        let done: Completions = Arc::default();
        let mut slots = BTreeMap::new();
        for id in 1..=config.nodes {
            let node = node_config(&config, id);
            node.validate()
                .map_err(|e| SimError::Config(e.to_string()))?;
            let store = RedbStore::in_memory().map_err(|e| SimError::Config(e.to_string()))?;
            let slot = Arc::new(Slot {
                store,
                skew: Skew::default(),
                rng: Mutex::new(root.fork()),
                live: Mutex::new(None),
            });
            add_host(
                &mut sim,
                node,
                Arc::clone(&slot),
                Arc::clone(&done),
                config.cp_workload.clone(),
                config.bug,
            );
            slots.insert(id, slot);
        }
        let workload = Workload::new(config.workload.clone(), root.fork());
        let cp_workload = CpWorkload::new(config.cp_workload.clone(), root.fork());
        Ok(Engine {
            config,
            sim,
            slots,
            done,
            workload,
            cp_workload,
            processes: Vec::new(),
            next_process: 1,
            in_flight: BTreeMap::new(),
            next_job: 0,
            history: History::new(),
            nemeses: Vec::new(),
            touched: BTreeSet::new(),
            increments: BTreeMap::new(),
            active: Vec::new(),
            applied: Effects::default(),
            figures: Figures::default(),
            t0_ms: 0,
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.sim.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.sim.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Advances one tick, then records every operation that completed during it.
    fn step(&mut self) -> Result<(), SimError> {
        if let Err(err) = self.sim.step() {
            return Err(SimError::Host {
                seed: self.config.seed,
                at_ms: self.now_ms(),
                message: err.to_string(),
            });
        }
        self.reassert_cuts_on_flaky_links();
        self.install_corruption(false);
        let completed = std::mem::take(&mut *lock(&self.done));
        let now_ns = self.now_ns();
        for (job, done) in completed {
            if let Some(flight) = self.in_flight.remove(&job) {
                self.record(flight, now_ns, done);
            }
        }
        Ok(())
    }

    fn record(&mut self, flight: InFlight, complete_ns: u64, finished: Finished) {
        let process = flight.process;
        match (flight.task, finished) {
            (Task::Ap(request), Finished::Ap(done)) => {
                self.workload.observe(&request, &done.outcome);
                let mut operation = Operation::new(
                    process,
                    format!("{}/{}", request.bucket, request.key),
                    done.op,
                    flight.invoke_ns,
                    complete_ns,
                    done.outcome,
                )
                .on(host_name(flight.node));
                operation.request_id = request.request_id.clone();
                operation.level = request.level.as_ref().map(ToString::to_string);
                operation.error = done.error;
                self.history.push(operation);
                self.touched
                    .insert((request.bucket.clone(), request.key.clone()));
                if let Some(id) = &request.request_id {
                    self.increments.entry(id.clone()).or_insert(request);
                }
            }
            (Task::Cp(request), Finished::Cp(done)) => {
                self.cp_workload.observe(process, &request, &done);
                let mut operation = Operation::new(
                    process,
                    request.key(),
                    request.op(),
                    flight.invoke_ns,
                    complete_ns,
                    done.outcome,
                )
                .on(host_name(flight.node));
                operation.error = done.error;
                self.history.push(operation);
            }
            // A job's answer always matches its task; nothing to record otherwise.
            _ => {}
        }
        let think_ms = self.workload.think_ms();
        let now_ms = self.now_ms();
        if let Some(p) = self.processes.iter_mut().find(|p| p.id == process) {
            p.busy = false;
            p.next_at_ms = now_ms + think_ms;
        }
    }

    /// What a client cut off (crash, end of run) learned: nothing.
    fn cut_off(task: &Task, error: &str) -> Finished {
        match task {
            Task::Ap(request) => Finished::Ap(Done {
                outcome: Outcome::Indeterminate,
                op: client::cut_off(request.op.clone()),
                error: Some(error.into()),
            }),
            Task::Cp(_) => Finished::Cp(CpDone {
                outcome: Outcome::Indeterminate,
                error: Some(error.into()),
                held: None,
            }),
            Task::Membership(_) => Finished::Membership,
        }
    }

    fn live(&self, node: u64) -> Option<NodeHandle> {
        let slot = self.slots.get(&node)?;
        lock(&slot.live).as_ref().map(|live| live.handle.clone())
    }

    /// Sends `request` to the clients of `node`; false if the node is not running.
    fn dispatch(&mut self, node: u64, process: u64, task: Task) -> bool {
        let Some(slot) = self.slots.get(&node) else {
            return false;
        };
        let id = self.next_job;
        let job = Job {
            id,
            task: task.clone(),
        };
        let sent = lock(&slot.live)
            .as_ref()
            .is_some_and(|live| live.inbox.send(job).is_ok());
        if sent {
            self.next_job += 1;
            let invoke_ns = self.now_ns();
            self.in_flight.insert(
                id,
                InFlight {
                    process,
                    node,
                    task,
                    invoke_ns,
                },
            );
        }
        sent
    }

    fn statuses(&self) -> BTreeMap<u64, Option<Arc<Status>>> {
        (1..=self.config.nodes)
            .map(|id| (id, self.live(id).map(|h| Arc::clone(&h.status.borrow()))))
            .collect()
    }

    fn healthy(&self) -> bool {
        let n = self.config.nodes;
        self.statuses().into_iter().all(|(id, status)| {
            status.is_some_and(|s| {
                let others: BTreeSet<NodeId> = (1..=n).filter(|p| *p != id).map(NodeId).collect();
                s.state == State::Normal
                    && s.quorum.held
                    && s.reachable == others
                    && s.partition == Partition::None
            })
        })
    }

    /// Whether every node knows the same CP leader, whose group holds every node as a voter.
    fn cp_ready(&self) -> bool {
        let all: Vec<u64> = (1..=self.config.nodes).collect();
        let mut leaders = BTreeSet::new();
        for id in &all {
            let Some(handle) = self.live(*id) else {
                return false;
            };
            let raft = handle.cp.raft_status();
            if raft.voters != all {
                return false;
            }
            leaders.insert(raft.leader);
        }
        leaders.len() == 1 && leaders.first().is_some_and(Option::is_some)
    }

    fn describe(&self) -> String {
        let line = |id: u64| match (self.live(id), self.statuses().remove(&id).flatten()) {
            (Some(handle), Some(s)) => {
                let raft = handle.cp.raft_status();
                format!(
                    "  n{id}: {} quorum={} reachable={:?} partition={:?} raft: {} term {} leader {:?} voters {:?}",
                    s.state,
                    s.quorum.held,
                    s.reachable,
                    s.partition,
                    raft.role,
                    raft.term,
                    raft.leader,
                    raft.voters
                )
            }
            _ => format!("  n{id}: not running"),
        };
        (1..=self.config.nodes)
            .map(line)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Steps until `done` holds; returns the time it took, or `None` at `limit_ms`.
    fn run_until(
        &mut self,
        limit_ms: u64,
        every_ms: u64,
        done: impl Fn(&Engine) -> bool,
    ) -> Result<Option<u64>, SimError> {
        let start_ms = self.now_ms();
        let mut next_poll_ms = start_ms;
        loop {
            let now_ms = self.now_ms();
            if now_ms >= next_poll_ms {
                if done(self) {
                    return Ok(Some(now_ms - start_ms));
                }
                next_poll_ms = now_ms + every_ms;
            }
            if now_ms >= start_ms + limit_ms {
                return Ok(None);
            }
            self.step()?;
        }
    }

    fn boot(&mut self) -> Result<(), SimError> {
        let limit_ms = self.config.boot_limit_ms;
        if self
            .run_until(limit_ms, 1, |e| e.healthy() && e.cp_ready())?
            .is_none()
        {
            return Err(SimError::Boot {
                seed: self.config.seed,
                limit_ms,
                statuses: self.describe(),
            });
        }
        self.figures.boot_ms = self.now_ms();
        self.figures.fewest_voters = self.config.nodes;
        self.t0_ms = self.now_ms();
        for node in 1..=self.config.nodes {
            for _ in 0..self.config.workload.clients_per_node {
                self.spawn_process(node, false);
            }
            for _ in 0..self.config.cp_workload.clients_per_node {
                self.spawn_process(node, true);
            }
        }
        Ok(())
    }

    fn spawn_process(&mut self, node: u64, cp: bool) {
        let id = self.next_process;
        self.next_process += 1;
        let next_at_ms = self.now_ms() + self.workload.think_ms();
        self.processes.push(Process {
            id,
            node,
            cp,
            busy: false,
            next_at_ms,
        });
    }

    fn run_workload(&mut self) -> Result<(), SimError> {
        let end_ms = self.t0_ms + self.config.run_ms;
        let mut steps = self.config.schedule.steps.clone();
        steps.sort_by_key(|step| step.at_ms);
        let mut steps = steps.into_iter().peekable();
        while self.now_ms() < end_ms {
            let elapsed_ms = self.now_ms() - self.t0_ms;
            while let Some(step) = steps.next_if(|step| step.at_ms <= elapsed_ms) {
                self.act(step.action);
            }
            self.dispatch_due();
            if self.now_ms().is_multiple_of(100) {
                let voters = (1..=self.config.nodes)
                    .find_map(|id| self.live(id))
                    .map(|h| h.cp.raft_status().voters.len() as u64);
                if let Some(voters) = voters {
                    self.figures.fewest_voters = self.figures.fewest_voters.min(voters);
                }
            }
            self.step()?;
        }
        Ok(())
    }

    /// Sends the next request of every idle process whose think time is over.
    fn dispatch_due(&mut self) {
        let now_ms = self.now_ms();
        for index in 0..self.processes.len() {
            let (id, node, cp, due) = {
                let p = &self.processes[index];
                (p.id, p.node, p.cp, !p.busy && p.next_at_ms <= now_ms)
            };
            // A paused node's clients wait: the process answers nothing, new requests included.
            if due && self.live(node).is_some() && !self.applied.paused.contains(&node) {
                let task = if cp {
                    Task::Cp(self.cp_workload.next_request(id))
                } else {
                    Task::Ap(self.workload.next_request())
                };
                if self.dispatch(node, id, task) {
                    self.processes[index].busy = true;
                }
            }
        }
    }

    fn act(&mut self, action: Action) {
        let at_ns = self.now_ns();
        match action {
            Action::Start(Nemesis::Restart { node }) => {
                self.nemeses.push(NemesisEvent {
                    at_ns,
                    start: true,
                    nemesis: Nemesis::Restart { node },
                });
                if !self.applied.down.contains(&node) && self.slots.contains_key(&node) {
                    let effects = self.applied.clone();
                    self.kill(node, true, &effects);
                }
            }
            Action::Start(nemesis) => {
                self.nemeses.push(NemesisEvent {
                    at_ns,
                    start: true,
                    nemesis: nemesis.clone(),
                });
                self.active.push(nemesis);
            }
            Action::Stop(nemesis) => {
                if let Some(index) = self.active.iter().position(|a| *a == nemesis) {
                    let nemesis = self.active.remove(index);
                    self.nemeses.push(NemesisEvent {
                        at_ns,
                        start: false,
                        nemesis,
                    });
                }
            }
            Action::HealAll => {
                for nemesis in std::mem::take(&mut self.active) {
                    self.nemeses.push(NemesisEvent {
                        at_ns,
                        start: false,
                        nemesis,
                    });
                }
            }
        }
        let effects = Effects::of(&self.active, self.config.nodes);
        self.apply(effects);
    }

    /// The node's process dies (and with `restart`, starts again at once): its operations in
    /// flight become indeterminate and its clients are replaced by fresh processes (Jepsen's
    /// rule for a crashed client).
    ///
    /// The node is cut off while turmoil drops its tasks: dropping a socket sends a FIN, and
    /// tokio drops tasks in an order that depends on process-global task ids, so those
    /// messages would draw latencies from turmoil's RNG in a different order on every run.
    /// Cut off, they are dropped without a draw. Peers are not told (a machine crash, not a
    /// process exit): they find out through the failure detector. Links are then set back to
    /// what `effects` asks.
    fn kill(&mut self, node: u64, restart: bool, effects: &Effects) {
        if let Some(slot) = self.slots.get(&node) {
            *lock(&slot.live) = None;
        }
        let others: Vec<u64> = (1..=self.config.nodes).filter(|id| *id != node).collect();
        for &other in &others {
            self.sim.partition(host_name(node), host_name(other));
        }
        if restart {
            self.sim.bounce(host_name(node));
        } else {
            self.sim.crash(host_name(node));
        }
        for &other in &others {
            let (a, b) = (node.min(other), node.max(other));
            self.set_link(a, b, Link::of(effects, a, b));
        }
        let now_ns = self.now_ns();
        let cut_off: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, flight)| flight.node == node)
            .map(|(job, _)| *job)
            .collect();
        for job in cut_off {
            if let Some(flight) = self.in_flight.remove(&job) {
                let process = flight.process;
                let done = Engine::cut_off(&flight.task, "node crashed with the request in flight");
                self.record(flight, now_ns, done);
                self.cp_workload.retire(process);
                if let Some(p) = self.processes.iter_mut().find(|p| p.id == process) {
                    p.id = self.next_process;
                    self.next_process += 1;
                }
            }
        }
    }

    /// Makes the cluster match `effects`: link states, flaky links, crashed nodes, skews.
    fn apply(&mut self, effects: Effects) {
        let n = self.config.nodes;
        for a in 1..=n {
            for b in a + 1..=n {
                let want = Link::of(&effects, a, b);
                let had = Link::of(&self.applied, a, b);
                if want != had {
                    if had.hold && !want.hold {
                        // The paused side resumes: what waited in the socket buffers arrives.
                        self.sim.release(host_name(a), host_name(b));
                    }
                    self.set_link(a, b, want);
                }
                let flaky = effects.flaky.get(&(a, b));
                if flaky != self.applied.flaky.get(&(a, b)) {
                    let net = &self.config.net;
                    let (fail_rate, latency_ms_max) = flaky
                        .map_or((net.fail_rate, net.latency_ms_max), |f| {
                            (f.fail_rate, f.latency_ms_max.max(net.latency_ms_min))
                        });
                    self.sim
                        .set_link_fail_rate(host_name(a), host_name(b), fail_rate);
                    self.sim.set_link_max_message_latency(
                        host_name(a),
                        host_name(b),
                        Duration::from_millis(latency_ms_max),
                    );
                }
            }
        }
        let crashed: Vec<u64> = effects
            .down
            .difference(&self.applied.down)
            .copied()
            .collect();
        for node in crashed {
            self.kill(node, false, &effects);
        }
        for node in self.applied.down.difference(&effects.down) {
            self.sim.bounce(host_name(*node));
        }
        for (id, slot) in &self.slots {
            slot.skew.set(effects.skew_ms.get(id).copied().unwrap_or(0));
        }
        let membership = (
            effects
                .removed
                .difference(&self.applied.removed)
                .copied()
                .collect::<Vec<_>>(),
            self.applied
                .removed
                .difference(&effects.removed)
                .copied()
                .collect::<Vec<_>>(),
        );
        let corrupt_changed = effects.corrupt != self.applied.corrupt;
        self.applied = effects;
        if corrupt_changed {
            self.install_corruption(true);
        }
        for node in membership.0 {
            self.change_membership(node, vec![MembershipChange::Remove(node)]);
        }
        for node in membership.1 {
            self.change_membership(
                node,
                vec![
                    MembershipChange::AddLearner(node),
                    MembershipChange::Promote(node),
                ],
            );
        }
    }

    /// Puts the corrupt nemesis into the nodes' own fault layers: every link of a corrupting
    /// node corrupts frames (both directions, as seen from that node) with its rate. A node
    /// that restarts comes back with an empty fault table, so this runs after every step while
    /// corruption is on (`force`: also redo nodes whose rules are in place).
    fn install_corruption(&mut self, force: bool) {
        if !force && self.applied.corrupt.is_empty() {
            return;
        }
        let n = self.config.nodes;
        for node in 1..=n {
            let Some(handle) = self.live(node) else {
                continue;
            };
            let rate = self.applied.corrupt.get(&node).copied();
            let installed = !handle.faults.list().is_empty();
            match rate {
                Some(rate) if !installed || force => {
                    let _ = handle.faults.clear();
                    for peer in (1..=n).filter(|peer| *peer != node) {
                        let _ = handle.faults.add(isle_net::FaultRule {
                            peer: NodeId(peer),
                            direction: isle_net::Direction::Both,
                            action: isle_net::FaultAction::Corrupt,
                            probability: rate,
                        });
                    }
                }
                None if installed => {
                    let _ = handle.faults.clear();
                }
                _ => {}
            }
        }
    }

    /// Asks a running node (the lowest id that is up, not paused and not `node`, else `node`)
    /// to make CP membership changes, in order, retrying each until it is done. Not recorded as
    /// client operations; the heal re-adds any voter still missing.
    fn change_membership(&mut self, node: u64, changes: Vec<MembershipChange>) {
        let runner = (1..=self.config.nodes)
            .filter(|id| *id != node && !self.applied.paused.contains(id))
            .chain([node])
            .find(|id| self.live(*id).is_some());
        let Some(slot) = runner.and_then(|runner| self.slots.get(&runner)) else {
            return;
        };
        // Not in flight: the drain does not wait for it, nothing is recorded.
        let job = Job {
            id: u64::MAX,
            task: Task::Membership(changes),
        };
        if let Some(live) = lock(&slot.live).as_ref() {
            let _ = live.inbox.send(job);
        }
    }

    /// Sets the link between `a < b`.
    fn set_link(&self, a: u64, b: u64, link: Link) {
        let (ha, hb) = (host_name(a), host_name(b));
        self.sim.repair(ha.as_str(), hb.as_str());
        match (link.ab, link.ba) {
            (true, true) => self.sim.partition(ha.as_str(), hb.as_str()),
            // A paused end: messages wait (a one-way cut on a held link delays instead of
            // dropping; turmoil holds a link both ways).
            _ if link.hold => self.sim.hold(ha.as_str(), hb.as_str()),
            (true, false) => self.sim.partition_oneway(ha.as_str(), hb.as_str()),
            (false, true) => self.sim.partition_oneway(hb.as_str(), ha.as_str()),
            (false, false) => {}
        }
    }

    /// turmoil's random link failures overwrite a link's state (a one-way cut included) and
    /// its random repair heals it: cuts and holds on flaky links are therefore put back after
    /// each step.
    fn reassert_cuts_on_flaky_links(&self) {
        for &(a, b) in self.applied.flaky.keys() {
            let want = Link::of(&self.applied, a, b);
            if want != Link::default() {
                self.set_link(a, b, want);
            }
        }
    }

    fn heal_and_settle(&mut self) -> Result<(), SimError> {
        self.act(Action::HealAll);
        self.figures.heal_at_ms = self.now_ms();
        let drain_ms = self.config.drain_limit_ms;
        self.run_until(drain_ms, 1, |e| e.in_flight.is_empty())?;
        self.give_up_in_flight();
        let recover_ms = self.config.recover_limit_ms;
        self.run_until(recover_ms, 10, Engine::healthy)?;
        self.figures.recovered_after_heal_ms = self
            .healthy()
            .then(|| self.now_ms() - self.figures.heal_at_ms);
        self.restore_voters()?;
        self.retry_increments()?;
        let converge_ms = self.config.converge_limit_ms;
        self.run_until(converge_ms, CONVERGE_POLL_MS, Engine::converged)?;
        self.figures.converged_after_heal_ms = self
            .converged()
            .then(|| self.now_ms() - self.figures.heal_at_ms);
        let quiet_end_ms = self.now_ms() + self.config.quiet_ms;
        while self.now_ms() < quiet_end_ms {
            self.step()?;
        }
        Ok(())
    }

    /// Every node must be a CP voter again (a membership nemesis whose re-add was cut off is
    /// redone) and every node must know one leader: `cp_recovered_after_heal_ms`.
    fn restore_voters(&mut self) -> Result<(), SimError> {
        let limit_ms = self.config.recover_limit_ms;
        let start_ms = self.now_ms();
        let mut asked_ms = None;
        while !self.cp_ready() && self.now_ms() < start_ms + limit_ms {
            if asked_ms.is_none_or(|at| self.now_ms() >= at + 2_000) {
                asked_ms = Some(self.now_ms());
                let voters = (1..=self.config.nodes)
                    .find_map(|id| self.live(id))
                    .map(|h| h.cp.raft_status().voters)
                    .unwrap_or_default();
                for node in (1..=self.config.nodes).filter(|id| !voters.contains(id)) {
                    self.change_membership(
                        node,
                        vec![
                            MembershipChange::AddLearner(node),
                            MembershipChange::Promote(node),
                        ],
                    );
                }
            }
            for _ in 0..10 {
                self.step()?;
            }
        }
        self.figures.cp_recovered_after_heal_ms = self
            .cp_ready()
            .then(|| self.now_ms() - self.figures.heal_at_ms);
        Ok(())
    }

    /// Operations still in flight after the drain: the client gives up, outcome unknown.
    fn give_up_in_flight(&mut self) {
        let now_ns = self.now_ns();
        for (_, flight) in std::mem::take(&mut self.in_flight) {
            let done = Engine::cut_off(&flight.task, "no answer before the run ended");
            self.record(flight, now_ns, done);
        }
    }

    /// Retries every increment never acknowledged, with its request id, until each is (or
    /// the rounds run out): afterwards each counter must equal the sum of its increments.
    fn retry_increments(&mut self) -> Result<(), SimError> {
        for _ in 0..self.config.retry_rounds {
            let pending = self.unacknowledged_increments();
            if pending.is_empty() {
                break;
            }
            self.figures.retried += pending.len();
            for (index, request) in pending.into_iter().enumerate() {
                let node = 1 + index as u64 % self.config.nodes;
                let process = self.next_process;
                self.next_process += 1;
                self.dispatch(node, process, Task::Ap(request));
            }
            let drain_ms = self.config.drain_limit_ms;
            self.run_until(drain_ms, 1, |e| e.in_flight.is_empty())?;
            self.give_up_in_flight();
        }
        Ok(())
    }

    fn unacknowledged_increments(&self) -> Vec<Request> {
        let mut acked: BTreeSet<&str> = BTreeSet::new();
        let mut pending: BTreeSet<&str> = BTreeSet::new();
        for op in &self.history.ops {
            let (Some(id), Op::Incr(_) | Op::MapIncr { .. }) = (&op.request_id, &op.op) else {
                continue;
            };
            if op.outcome.is_ok() {
                acked.insert(id);
            } else if op.outcome.may_have_applied() {
                pending.insert(id);
            }
        }
        pending
            .difference(&acked)
            .filter_map(|id| self.increments.get(*id))
            .map(|request| Request {
                level: Some(isle_ap::Level::Quorum),
                ..request.clone()
            })
            .collect()
    }

    fn ring(&self) -> Ring {
        let members: Vec<RingMember> = (1..=self.config.nodes)
            .map(|id| RingMember {
                id: NodeId(id),
                zone: String::new(),
            })
            .collect();
        Ring::new(
            &members,
            self.config.ap.vnodes,
            self.config.ap.partition_bits,
        )
    }

    /// Every node's own copy of every touched key, with whether it is a primary replica.
    fn final_copies(&self) -> FinalState {
        let ring = self.ring();
        let handles: BTreeMap<u64, Option<NodeHandle>> = (1..=self.config.nodes)
            .map(|id| (id, self.live(id)))
            .collect();
        let mut finals = FinalState::new();
        for (bucket, key) in &self.touched {
            let n = self
                .config
                .ap
                .buckets
                .iter()
                .find(|b| b.name == *bucket)
                .map_or(3, |b| b.n as usize);
            let partition = ring.partition_of(key_hash(bucket, key.as_bytes()));
            let primaries = ring.preference(partition, n);
            for (&node, handle) in &handles {
                let local = handle
                    .as_ref()
                    .and_then(|h| h.ap.local(bucket, key.as_bytes()).ok().flatten());
                let copy = FinalCopy {
                    primary: primaries.contains(&NodeId(node)),
                    value: local.as_ref().map(|(value, _)| ap_value(value)),
                    digest: local.map(|(_, digest)| format!("{digest:032x}")),
                    duplicates: self
                        .slots
                        .get(&node)
                        .map(|slot| duplicated_siblings(&slot.store, bucket, key))
                        .unwrap_or_default(),
                };
                finals.insert_copy(format!("{bucket}/{key}"), host_name(node), copy);
            }
        }
        finals
    }

    /// Whether every key's primary replicas hold the same copy.
    fn converged(&self) -> bool {
        self.final_copies().keys.values().all(|copies| {
            let mut digests = copies.values().filter(|c| c.primary).map(|c| &c.digest);
            let first = digests.next();
            digests.all(|d| Some(d) == first)
        })
    }

    fn finish(mut self) -> Run {
        let finals = self.final_copies();
        self.figures.sim_ms = self.now_ms();
        Run {
            config: self.config,
            history: self.history,
            nemeses: self.nemeses,
            finals,
            figures: self.figures,
        }
    }
}
