//! An in-memory, deterministic simulator for the sans-IO cluster core (quinn-proto's `Pair`,
//! scaled to N nodes, with a little of TigerBeetle's VOPR).
//!
//! - One virtual clock. Time only moves by jumping to the earliest pending event: a message
//!   delivery, a core's `poll_timeout()`, or a node's scheduled start. Nothing sleeps.
//! - Every random choice (start stagger, latency, loss) comes from one `SeededRandom`, so a seed
//!   replays exactly. Iteration is over `BTreeMap`s only.
//! - A directed link table gives each `(from, to)` a loss in per mille: 1000 cuts the link, so
//!   complete, partial and one-way cuts are all a few entries.
//! - Nodes can crash (no ticks, nothing delivered to or from them, in-flight traffic discarded)
//!   and restart with incarnation + 1 and the members they persisted via `PersistMembers`.
//! - Every `Output::Transition` is checked (allowed edge, continuity, time) and recorded.

use std::collections::{BTreeMap, BTreeSet};

use isle_detect::{ALLOWED_EDGES, State, Transition};
use isle_env::{Random, SeededRandom};
use isle_node::core::{Cluster, Output};
use isle_node::message::Heartbeat;
use isle_node::{DetectionConfig, Status};
use isle_quorum::Policy;
use isle_types::{Member, Millis, NodeId};

/// Loss of a cut link: every message dropped.
pub const LOSS_ALL_PER_MILLE: u64 = 1000;
/// Bound on simulation steps in one run, so a core that keeps asking for "now" cannot hang CI.
const STEPS_MAX: u64 = 20_000_000;

/// The shape of one simulated cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes, ids 1..=nodes.
    pub nodes: u64,
    /// Least one-way latency.
    pub latency_ms_min: u64,
    /// Largest one-way latency (before spikes).
    pub latency_ms_max: u64,
    /// Chance (per mille) that a message gets an extra delay spike.
    pub spike_per_mille: u64,
    /// Largest extra delay of a spike.
    pub spike_ms_max: u64,
    /// Nodes start at a uniformly random time in `0..=start_stagger_ms_max`.
    pub start_stagger_ms_max: u64,
    /// Detection timings handed to every core.
    pub detection: DetectionConfig,
    /// Quorum policy handed to every core.
    pub policy: Policy,
}

impl SimConfig {
    /// `nodes` nodes, 1–20 ms latency, no spikes, 0–50 ms start stagger, default timings.
    pub fn new(nodes: u64) -> Self {
        SimConfig {
            nodes,
            latency_ms_min: 1,
            latency_ms_max: 20,
            spike_per_mille: 0,
            spike_ms_max: 0,
            start_stagger_ms_max: 50,
            detection: DetectionConfig::default(),
            policy: Policy::default(),
        }
    }
}

/// The id of node number `n`.
pub fn node(n: u64) -> NodeId {
    NodeId(n)
}

/// A set of node ids.
pub fn ids(ns: &[u64]) -> BTreeSet<NodeId> {
    ns.iter().copied().map(NodeId).collect()
}

/// The fake peer address of node `id`.
pub fn peer_addr(id: NodeId) -> String {
    format!("n{id}:7000")
}

/// How to replay the run of `seed`.
fn replay(seed: u64) -> String {
    format!("seed {seed} (replay: ISLE_SIM_SEED={seed})")
}

struct Envelope {
    from: NodeId,
    to: NodeId,
    heartbeat: Heartbeat,
}

struct SimNode {
    member: Member,
    /// `None` before its start and while crashed.
    core: Option<Cluster>,
    /// When a not-yet-started node boots.
    start_at: Option<Millis>,
    incarnation: u64,
    /// The node's durable membership, as `PersistMembers` left it.
    store: BTreeMap<NodeId, Member>,
    /// The state the recorded transitions lead to (reset to Normal by a restart).
    state: State,
    trace: Vec<Transition>,
    reachability: Vec<(Millis, NodeId, bool)>,
}

/// N cores, one clock, one lossy network.
pub struct Sim {
    seed: u64,
    now: Millis,
    rng: SeededRandom,
    config: SimConfig,
    nodes: BTreeMap<NodeId, SimNode>,
    addrs: BTreeMap<String, NodeId>,
    /// Keyed by (delivery time, send order): delivery order is total and seed-determined.
    in_flight: BTreeMap<(Millis, u64), Envelope>,
    sent: u64,
    delivered: u64,
    dropped: u64,
    loss_per_mille: BTreeMap<(NodeId, NodeId), u64>,
    /// FNV-1a over every scheduled delivery (time, from, to, incarnation, seq).
    schedule_digest: u64,
    steps: u64,
}

impl Sim {
    /// A cluster of `config.nodes` nodes, none started yet; each boots at its drawn start time.
    pub fn new(seed: u64, config: SimConfig) -> Self {
        let mut rng = SeededRandom::new(seed);
        let mut nodes = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for n in 1..=config.nodes {
            let id = node(n);
            let member = Member {
                id,
                peer_addr: peer_addr(id),
                http_addr: format!("n{id}:8000"),
                grpc_addr: None,
                zone: "z".to_string(),
                weight: 1,
            };
            addrs.insert(member.peer_addr.clone(), id);
            let start_at = Millis(rng.below(config.start_stagger_ms_max + 1));
            nodes.insert(
                id,
                SimNode {
                    store: BTreeMap::from([(id, member.clone())]),
                    member,
                    core: None,
                    start_at: Some(start_at),
                    incarnation: 0,
                    state: State::Normal,
                    trace: Vec::new(),
                    reachability: Vec::new(),
                },
            );
        }
        Sim {
            seed,
            now: Millis::ZERO,
            rng,
            config,
            nodes,
            addrs,
            in_flight: BTreeMap::new(),
            sent: 0,
            delivered: 0,
            dropped: 0,
            loss_per_mille: BTreeMap::new(),
            schedule_digest: 0xcbf2_9ce4_8422_2325,
            steps: 0,
        }
    }

    /// How to replay this run; put it in every assertion message.
    pub fn replay(&self) -> String {
        replay(self.seed)
    }

    /// The virtual time.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Runs until virtual time `end`, processing every event due at or before it.
    pub fn run_until(&mut self, end: Millis) {
        while let Some(next) = self.next_event().filter(|next| *next <= end) {
            self.now = self.now.max(next);
            self.step();
        }
        self.now = self.now.max(end);
    }

    /// Runs for `ms` more milliseconds of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        self.run_until(Millis(self.now.0 + ms));
    }

    /// Sets the loss of the directed link `from → to`.
    pub fn set_loss(&mut self, from: NodeId, to: NodeId, per_mille: u64) {
        assert!(per_mille <= LOSS_ALL_PER_MILLE, "loss is per mille");
        self.loss_per_mille.insert((from, to), per_mille);
    }

    /// Drops every message from a node in `from` to a node in `to` (one way).
    pub fn cut(&mut self, from: &[u64], to: &[u64]) {
        for &a in from {
            for &b in to {
                self.set_loss(node(a), node(b), LOSS_ALL_PER_MILLE);
            }
        }
    }

    /// Cuts both directions between the two groups.
    pub fn cut_both(&mut self, a: &[u64], b: &[u64]) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// The same loss on every directed link.
    pub fn set_loss_all(&mut self, per_mille: u64) {
        let all: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &a in &all {
            for &b in all.iter().filter(|b| **b != a) {
                self.set_loss(a, b, per_mille);
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.loss_per_mille.clear();
    }

    /// Stops node `n`: no ticks, nothing delivered to or from it, its in-flight traffic lost.
    pub fn crash(&mut self, n: u64) {
        let id = node(n);
        let sim_node = self.nodes.get_mut(&id).expect("known node");
        assert!(sim_node.core.is_some(), "crash of node {id}, which is down");
        sim_node.core = None;
        sim_node.state = State::Normal; // What its next incarnation starts in.
        let before = self.in_flight.len();
        self.in_flight.retain(|_, e| e.from != id && e.to != id);
        self.dropped += (before - self.in_flight.len()) as u64;
    }

    /// Starts node `n` again: incarnation + 1, the members it persisted plus itself.
    pub fn restart(&mut self, n: u64) {
        let id = node(n);
        assert!(!self.is_up(n), "restart of node {id}, which is up");
        self.boot(id);
    }

    /// Whether node `n` is running.
    pub fn is_up(&self, n: u64) -> bool {
        self.nodes[&node(n)].core.is_some()
    }

    /// Node `n`'s status now.
    pub fn status(&self, n: u64) -> Status {
        let core = self.nodes[&node(n)].core.as_ref();
        let core = core.unwrap_or_else(|| panic!("node {n} is down; {}", self.replay()));
        core.status(self.now)
    }

    /// Every transition node `n` has taken, across incarnations, oldest first.
    pub fn trace(&self, n: u64) -> &[Transition] {
        &self.nodes[&node(n)].trace
    }

    /// Node `n`'s transitions at or after `since`.
    pub fn trace_since(&self, n: u64, since: Millis) -> Vec<Transition> {
        let trace = self.trace(n).iter();
        trace.filter(|t| t.at >= since).cloned().collect()
    }

    /// All nodes' traces.
    pub fn traces(&self) -> BTreeMap<NodeId, Vec<Transition>> {
        let nodes = self.nodes.iter();
        nodes.map(|(id, n)| (*id, n.trace.clone())).collect()
    }

    /// Node `n`'s reachability changes (time, peer, reachable), oldest first.
    pub fn reachability(&self, n: u64) -> &[(Millis, NodeId, bool)] {
        &self.nodes[&node(n)].reachability
    }

    /// A digest of the whole message schedule; equal digests mean equal schedules.
    pub fn schedule_digest(&self) -> u64 {
        self.schedule_digest
    }

    /// (messages delivered, messages dropped).
    pub fn message_counts(&self) -> (u64, u64) {
        (self.delivered, self.dropped)
    }

    /// A one-line summary of node `n` for failure messages.
    pub fn describe(&self, n: u64) -> String {
        let sim_node = &self.nodes[&node(n)];
        let trace: Vec<String> = sim_node
            .trace
            .iter()
            .map(|t| format!("{}->{}@{}", t.from, t.to, t.at))
            .collect();
        match &sim_node.core {
            Some(core) => {
                let s = core.status(self.now);
                format!(
                    "node {n} at {}: {} partition={:?} quorum={} reachable={:?} trace=[{}]",
                    self.now,
                    s.state,
                    s.partition,
                    s.quorum_reason,
                    s.reachable,
                    trace.join(", ")
                )
            }
            None => format!("node {n}: down, trace=[{}]", trace.join(", ")),
        }
    }

    fn next_event(&self) -> Option<Millis> {
        let delivery = self.in_flight.keys().next().map(|(at, _)| *at);
        let nodes = self.nodes.values();
        let timers =
            nodes.filter_map(|n| n.core.as_ref().map(Cluster::poll_timeout).or(n.start_at));
        delivery.into_iter().chain(timers).min()
    }

    /// Everything due at `self.now`: starts, then deliveries, then timers (the shell's order
    /// does not matter to the core; a fixed one keeps runs reproducible).
    fn step(&mut self) {
        self.steps += 1;
        assert!(self.steps <= STEPS_MAX, "step bound hit; {}", self.replay());
        let now = self.now;
        let due: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.start_at.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.boot(id);
        }
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let envelope = entry.remove();
            self.deliver(envelope);
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let seed = self.seed;
            let Some(core) = self.nodes.get_mut(&id).and_then(|n| n.core.as_mut()) else {
                continue;
            };
            if core.poll_timeout() > now {
                continue;
            }
            core.handle_timeout(now);
            // A deadline at or before `now` after handling it would spin the real shell.
            let next = core.poll_timeout();
            assert!(
                next > now,
                "node {id} asks for a timeout at {next} <= now {now}; {}",
                replay(seed)
            );
            self.drain(id);
        }
    }

    fn boot(&mut self, id: NodeId) {
        let now = self.now;
        let seeds: Vec<String> = self
            .addrs
            .keys()
            .filter(|a| **a != peer_addr(id))
            .cloned()
            .collect();
        let sim_node = self.nodes.get_mut(&id).expect("known node");
        sim_node.start_at = None;
        sim_node.incarnation += 1;
        let members: Vec<Member> = sim_node.store.values().cloned().collect();
        sim_node.core = Some(Cluster::new(
            now,
            sim_node.member.clone(),
            sim_node.incarnation,
            members,
            seeds,
            self.config.detection.clone(),
            self.config.policy,
        ));
        self.drain(id);
    }

    fn deliver(&mut self, envelope: Envelope) {
        let now = self.now;
        let Some(core) = self
            .nodes
            .get_mut(&envelope.to)
            .and_then(|n| n.core.as_mut())
        else {
            self.dropped += 1; // Not started yet: connection refused.
            return;
        };
        self.delivered += 1;
        core.handle_heartbeat(now, envelope.from, envelope.heartbeat);
        self.drain(envelope.to);
    }

    fn drain(&mut self, id: NodeId) {
        let now = self.now;
        loop {
            let sim_node = self.nodes.get_mut(&id).expect("known node");
            let Some(output) = sim_node.core.as_mut().and_then(Cluster::poll_output) else {
                break;
            };
            match output {
                Output::Broadcast { to, heartbeat } => self.send(id, to, &heartbeat),
                Output::ResetLink { .. } => {}
                Output::PersistMembers(members) => {
                    for member in members {
                        sim_node.store.insert(member.id, member);
                    }
                }
                Output::Transition(transition) => self.record(id, transition),
                Output::PeerReachability {
                    id: peer,
                    reachable,
                } => {
                    sim_node.reachability.push((now, peer, reachable));
                }
            }
        }
        let sim_node = &self.nodes[&id];
        if let Some(core) = &sim_node.core {
            let (state, recorded) = (core.state(), sim_node.state);
            let seed = self.seed;
            assert_eq!(
                state,
                recorded,
                "node {id}: state without a Transition output; {}",
                replay(seed)
            );
        }
    }

    /// Checks a transition against the allowed edges and the recorded history, then records it.
    fn record(&mut self, id: NodeId, transition: Transition) {
        let seed = self.seed;
        let now = self.now;
        let sim_node = self.nodes.get_mut(&id).expect("known node");
        let edge = (transition.from, transition.to);
        assert!(
            ALLOWED_EDGES.contains(&edge),
            "node {id}: illegal edge {edge:?}; {}",
            replay(seed)
        );
        assert_eq!(
            transition.from,
            sim_node.state,
            "node {id}: transition out of a state it was not in; {}",
            replay(seed)
        );
        assert_eq!(
            transition.at,
            now,
            "node {id}: transition not stamped now; {}",
            replay(seed)
        );
        sim_node.state = transition.to;
        sim_node.trace.push(transition);
    }

    fn send(&mut self, from: NodeId, to: Vec<(String, Option<NodeId>)>, heartbeat: &Heartbeat) {
        for (addr, claimed) in to {
            let Some(&dest) = self.addrs.get(&addr) else {
                self.dropped += 1;
                continue;
            };
            let seed = self.seed;
            assert!(
                claimed.is_none_or(|c| c == dest),
                "node {from} addressed {addr} as {claimed:?}; {}",
                replay(seed)
            );
            assert_ne!(dest, from, "node {from} sent to itself; {}", replay(seed));
            if self.lost(from, dest) {
                self.dropped += 1;
                continue;
            }
            let at = Millis(self.now.0 + self.latency_ms());
            self.digest(&[at.0, from.0, dest.0, heartbeat.incarnation, heartbeat.seq]);
            self.sent += 1;
            let envelope = Envelope {
                from,
                to: dest,
                heartbeat: heartbeat.clone(),
            };
            self.in_flight.insert((at, self.sent), envelope);
        }
    }

    fn lost(&mut self, from: NodeId, to: NodeId) -> bool {
        match self.loss_per_mille.get(&(from, to)).copied().unwrap_or(0) {
            0 => false,
            LOSS_ALL_PER_MILLE => true,
            // Draw only for lossy links, so cutting a link does not shift other draws.
            per_mille => self.rng.below(LOSS_ALL_PER_MILLE) < per_mille,
        }
    }

    fn latency_ms(&mut self) -> u64 {
        let config = &self.config;
        let (min, max) = (config.latency_ms_min, config.latency_ms_max);
        let (spike_chance, spike_max) = (config.spike_per_mille, config.spike_ms_max);
        let mut latency = min + self.rng.below(max - min + 1);
        if spike_chance > 0 && self.rng.below(LOSS_ALL_PER_MILLE) < spike_chance {
            latency += 1 + self.rng.below(spike_max);
        }
        latency.max(1) // A message never arrives in the instant it was sent.
    }

    fn digest(&mut self, words: &[u64]) {
        for word in words {
            for byte in word.to_le_bytes() {
                self.schedule_digest ^= u64::from(byte);
                self.schedule_digest = self.schedule_digest.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
}
