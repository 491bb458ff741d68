//! The node's sans-IO cluster core: membership, failure detection, the who-sees-whom matrix,
//! quorum and the partition state machine, driven only by messages and clock readings.
//!
//! The loop is quinn's and raft-rs's: `handle_heartbeat(now, ..)` / `handle_timeout(now)` feed
//! it, `poll_output()` drains what it wants done (send, reset a link, persist), and
//! `poll_timeout()` says when to call `handle_timeout` next. No sockets, no clock, no RNG here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use isle_detect::{Machine, Matrix, Observation, Partition, PhiAccrual, State, Transition, View};
use isle_quorum::{Policy, Verdict, Voter};
use isle_types::{Member, Millis, NodeId};

use crate::config::DetectionConfig;
use crate::message::Heartbeat;
use crate::status::{PeerStatus, Status};

/// How many recent transitions the core keeps for status pages.
const TRANSITIONS_KEPT_MAX: usize = 32;
/// Bound on the membership a heartbeat gossips, so a message stays small.
pub const MEMBERS_MAX: usize = 256;

/// Something the core wants the IO shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this heartbeat to each address (members by id, seeds by address only).
    Broadcast {
        /// Destinations: a peer address and, when known, its node id.
        to: Vec<(String, Option<NodeId>)>,
        /// The heartbeat to send to all of them.
        heartbeat: Heartbeat,
    },
    /// The detector declared this peer dead: drop its connection and redial.
    ResetLink {
        /// Peer address.
        addr: String,
    },
    /// Membership changed: persist these records before relying on them after a restart.
    PersistMembers(Vec<Member>),
    /// The partition state machine moved.
    Transition(Transition),
    /// A peer changed reachability.
    PeerReachability {
        /// The peer.
        id: NodeId,
        /// Whether it is now reachable.
        reachable: bool,
    },
}

/// What the core tracks per peer.
#[derive(Debug)]
struct Peer {
    member: Member,
    detector: PhiAccrual,
    incarnation: u64,
    last_seq: u64,
    reachable: bool,
}

/// The cluster as one node sees it.
#[derive(Debug)]
pub struct Cluster {
    me: Member,
    incarnation: u64,
    config: DetectionConfig,
    policy: Policy,
    started: Millis,
    /// Latched once start-up is over (see [`Cluster::settled`]).
    booted: bool,
    seeds: Vec<String>,
    peers: BTreeMap<NodeId, Peer>,
    matrix: Matrix,
    machine: Machine,
    partition: Partition,
    verdict: Verdict,
    seq: u64,
    next_heartbeat: Millis,
    transitions: VecDeque<Transition>,
    outputs: VecDeque<Output>,
    /// Set by the shell while replicas still reconcile (hints to hand off, trees differing).
    reconcile_pending: bool,
}

impl Cluster {
    /// A core for `me`, knowing `members` from its store and `seeds` from its config.
    pub fn new(
        now: Millis,
        me: Member,
        incarnation: u64,
        members: Vec<Member>,
        seeds: Vec<String>,
        config: DetectionConfig,
        policy: Policy,
    ) -> Self {
        let machine = Machine::new(config.state(), now);
        let verdict = isle_quorum::evaluate(policy, &[voter(&me)], &BTreeSet::from([me.id]));
        let mut cluster = Cluster {
            me,
            incarnation,
            config,
            policy,
            started: now,
            booted: false,
            seeds,
            peers: BTreeMap::new(),
            matrix: Matrix::default(),
            machine,
            partition: Partition::None,
            verdict,
            seq: 0,
            next_heartbeat: now,
            transitions: VecDeque::new(),
            outputs: VecDeque::new(),
            reconcile_pending: false,
        };
        for member in members {
            if member.id != cluster.me.id {
                cluster.insert_peer(member);
            }
        }
        cluster.evaluate(now);
        cluster
    }

    /// Whether replicas still reconcile after a partition (hints pending for reachable
    /// owners, Merkle trees differing): the state machine stays in `Reconciling` meanwhile.
    pub fn set_reconcile_pending(&mut self, pending: bool) {
        self.reconcile_pending = pending;
    }

    fn insert_peer(&mut self, member: Member) {
        let detector = PhiAccrual::new(self.config.phi());
        let peer = Peer {
            member,
            detector,
            incarnation: 0,
            last_seq: 0,
            reachable: false,
        };
        self.peers.insert(peer.member.id, peer);
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.me.id
    }

    /// The partition state right now.
    pub fn state(&self) -> State {
        self.machine.state()
    }

    /// A heartbeat arrived from `from` (the transport's authenticated sender id).
    pub fn handle_heartbeat(&mut self, now: Millis, from: NodeId, heartbeat: Heartbeat) {
        if from == self.me.id || heartbeat.member.id != from {
            return; // A node claiming to be us, or to be someone else, is misconfigured: ignore.
        }
        if heartbeat.member.validate().is_err() {
            return;
        }
        self.learn_members(&heartbeat);
        let Some(peer) = self.peers.get_mut(&from) else {
            return;
        };
        if heartbeat.incarnation < peer.incarnation {
            return; // From a previous life of that node, delivered late.
        }
        if heartbeat.incarnation > peer.incarnation {
            // Restarted: its heartbeat history says nothing about the new process.
            peer.detector.reset();
            peer.incarnation = heartbeat.incarnation;
            peer.last_seq = 0;
        }
        if heartbeat.seq <= peer.last_seq {
            return; // Duplicate or reordered: counting it would skew the interval statistics.
        }
        peer.last_seq = heartbeat.seq;
        peer.detector.heartbeat(now);
        for view in heartbeat.views {
            if view.origin != self.me.id && self.peers.contains_key(&view.origin) {
                self.matrix.merge(view, now);
            }
        }
        self.evaluate(now);
    }

    /// Adds unknown members and the sender's fresh record; asks the shell to persist changes.
    fn learn_members(&mut self, heartbeat: &Heartbeat) {
        let mut changed = Vec::new();
        let sender = &heartbeat.member;
        match self.peers.get_mut(&sender.id) {
            Some(peer) if peer.member != *sender => {
                peer.member = sender.clone();
                changed.push(sender.clone());
            }
            Some(_) => {}
            None => {
                self.insert_peer(sender.clone());
                changed.push(sender.clone());
            }
        }
        for member in heartbeat.members.iter().take(MEMBERS_MAX) {
            let known = member.id == self.me.id || self.peers.contains_key(&member.id);
            if !known && member.validate().is_ok() && self.peers.len() < MEMBERS_MAX {
                self.insert_peer(member.clone());
                changed.push(member.clone());
            }
        }
        if !changed.is_empty() {
            self.outputs.push_back(Output::PersistMembers(changed));
        }
    }

    /// Time passed: send heartbeats that are due and re-evaluate reachability and state.
    pub fn handle_timeout(&mut self, now: Millis) {
        if now >= self.next_heartbeat {
            self.broadcast(now);
            // Skip missed slots rather than bursting after a stall (a paused process).
            while self.next_heartbeat <= now {
                self.next_heartbeat = self.next_heartbeat + self.config.heartbeat_interval;
            }
        }
        self.evaluate(now);
    }

    /// When the core next needs `handle_timeout`.
    pub fn poll_timeout(&self) -> Millis {
        // Detector verdicts change continuously with time: re-check at least every interval.
        let mut deadline = self.next_heartbeat;
        if let Some(machine_deadline) = self.machine.poll_timeout() {
            deadline = deadline.min(machine_deadline);
        }
        deadline
    }

    /// The next thing for the shell to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn broadcast(&mut self, now: Millis) {
        self.seq += 1;
        let settled = self.heard_all(now);
        self.matrix.set_own(self.own_view(), now);
        let mut to: Vec<(String, Option<NodeId>)> = self
            .peers
            .values()
            .map(|peer| (peer.member.peer_addr.clone(), Some(peer.member.id)))
            .collect();
        for seed in &self.seeds {
            let identified = to.iter().any(|(addr, _)| addr == seed);
            if !identified && *seed != self.me.peer_addr {
                to.push((seed.clone(), None));
            }
        }
        let members = self
            .peers
            .values()
            .map(|peer| peer.member.clone())
            .collect();
        let heartbeat = Heartbeat {
            incarnation: self.incarnation,
            seq: self.seq,
            member: self.me.clone(),
            members,
            views: self
                .matrix
                .views()
                .filter(|view| settled || view.origin != self.me.id)
                .cloned()
                .collect(),
        };
        self.outputs.push_back(Output::Broadcast { to, heartbeat });
    }

    fn own_view(&self) -> View {
        View {
            origin: self.me.id,
            incarnation: self.incarnation,
            version: self.seq,
            reachable: self.reachable_peers(),
        }
    }

    fn reachable_peers(&self) -> BTreeSet<NodeId> {
        self.peers
            .values()
            .filter(|p| p.reachable)
            .map(|p| p.member.id)
            .collect()
    }

    /// Whether start-up is over: every seed identified and every known member heard once, or
    /// the boot grace has passed.
    /// Before that, this node neither reports a partition nor gossips its own (empty) view.
    fn heard_all(&self, now: Millis) -> bool {
        if now.since(self.started) >= self.config.boot_grace {
            return true;
        }
        let all_heard = self
            .peers
            .values()
            .all(|p| p.detector.last_heartbeat().is_some());
        let seeds_known = self.seeds.iter().all(|seed| {
            *seed == self.me.peer_addr || self.peers.values().any(|p| p.member.peer_addr == *seed)
        });
        all_heard && seeds_known
    }

    /// Whether this node may report partitions: it has heard everyone ([`Cluster::heard_all`])
    /// and everyone's view lists this incarnation of it, or the boot grace has passed. Latched:
    /// later cuts are partitions, not start-up.
    fn settled(&mut self, now: Millis) -> bool {
        if !self.booted && self.heard_all(now) {
            let me = self.me.id;
            self.booted = now.since(self.started) >= self.config.boot_grace
                || self.peers.keys().all(|id| {
                    let view = self.matrix.get(*id);
                    view.is_some_and(|v| v.incarnation > 0 && v.reachable.contains(&me))
                });
        }
        self.booted
    }

    /// Rows of the matrix that describe the present: ours, those of peers we hear, and those
    /// relayed to us recently (a peer we cannot hear may still be heard by others).
    fn fresh_rows(&self, now: Millis) -> BTreeSet<NodeId> {
        let mut fresh = self.reachable_peers();
        fresh.insert(self.me.id);
        for view in self.matrix.views() {
            let learned = self.matrix.learned_at(view.origin).unwrap_or(Millis::ZERO);
            if now.since(learned) <= self.config.view_stale_after {
                fresh.insert(view.origin);
            }
        }
        fresh
    }

    /// Recomputes reachability, the partition kind, quorum, and feeds the state machine.
    fn evaluate(&mut self, now: Millis) {
        for peer in self.peers.values_mut() {
            let reachable = peer.detector.is_available(now);
            if reachable != peer.reachable {
                peer.reachable = reachable;
                let id = peer.member.id;
                self.outputs
                    .push_back(Output::PeerReachability { id, reachable });
                if !reachable {
                    let addr = peer.member.peer_addr.clone();
                    self.outputs.push_back(Output::ResetLink { addr });
                }
            }
        }
        self.matrix.set_own(self.own_view(), now);
        let members: BTreeSet<NodeId> = self.peers.keys().copied().chain([self.me.id]).collect();
        let mut side = self.reachable_peers();
        side.insert(self.me.id);
        self.partition =
            isle_detect::classify(self.me.id, &members, &self.matrix, &self.fresh_rows(now));
        self.verdict = isle_quorum::evaluate(self.policy, &self.voters(), &side);
        // Until this node has heard every member once, what it lacks is "not yet", not "lost".
        let settled = self.settled(now);
        let partitioned = self.partition != Partition::None && settled;
        let observation = Observation {
            partitioned,
            quorum_held: self.verdict.held,
            reconcile_pending: self.reconcile_pending,
        };
        for transition in self.machine.observe(now, observation) {
            if self.transitions.len() == TRANSITIONS_KEPT_MAX {
                self.transitions.pop_front();
            }
            self.transitions.push_back(transition.clone());
            self.outputs.push_back(Output::Transition(transition));
        }
    }

    fn voters(&self) -> Vec<Voter> {
        std::iter::once(&self.me)
            .chain(self.peers.values().map(|p| &p.member))
            .map(voter)
            .collect()
    }

    /// A snapshot for `/v1/status`, `/metrics` and `isle status`.
    pub fn status(&self, now: Millis) -> Status {
        let peers = self
            .peers
            .values()
            .map(|peer| PeerStatus {
                id: peer.member.id,
                peer_addr: peer.member.peer_addr.clone(),
                http_addr: peer.member.http_addr.clone(),
                grpc_addr: peer.member.grpc_addr.clone(),
                zone: peer.member.zone.clone(),
                weight: peer.member.weight,
                reachable: peer.reachable,
                phi: peer.detector.phi(now),
                last_heartbeat_ms_ago: peer
                    .detector
                    .last_heartbeat()
                    .map(|at| duration_ms(now.since(at))),
                incarnation: peer.incarnation,
                sees: self.matrix.get(peer.member.id).map(|v| v.reachable.clone()),
            })
            .collect();
        Status {
            node: self.me.id,
            zone: self.me.zone.clone(),
            weight: self.me.weight,
            incarnation: self.incarnation,
            peer_addr: self.me.peer_addr.clone(),
            http_addr: self.me.http_addr.clone(),
            state: self.machine.state(),
            state_since_ms: self.machine.since().as_u64(),
            state_for_ms: duration_ms(now.since(self.machine.since())),
            uptime_ms: duration_ms(now.since(self.started)),
            partition: self.partition.clone(),
            quorum: self.verdict.clone(),
            quorum_reason: self.verdict.to_string(),
            reachable: self.reachable_peers(),
            peers,
            partitions_detected: self.machine.partitions_detected(),
            last_partition: self.machine.last_partition(),
            transitions: self.transitions.iter().cloned().collect(),
        }
    }
}

fn voter(member: &Member) -> Voter {
    Voter {
        id: member.id,
        weight: member.weight,
        zone: member.zone.clone(),
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
