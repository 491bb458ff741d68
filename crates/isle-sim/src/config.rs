//! What a simulated run is made of: cluster size, seed, network, node settings, workload and
//! nemesis schedule, plus the limits of each phase. Plain data (serde) with builder methods.

use isle_ap::{BucketInfo, Rule};
use isle_env::{Random, SeededRandom};
use isle_node::ap::ApConfig;
use isle_node::cp::CpConfig;
use serde::{Deserialize, Serialize};

use crate::cp::CpWorkloadConfig;
use crate::nemesis::Schedule;
use crate::workload::{LWW, SIBLINGS, WorkloadConfig};

/// turmoil's network and clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetConfig {
    /// One simulation step, ms: every host runs this long per step.
    pub tick_ms: u64,
    /// Lowest message latency, ms.
    pub latency_ms_min: u64,
    /// Highest message latency, ms (turmoil draws from an exponential curve in between).
    pub latency_ms_max: u64,
    /// Probability that any message fails (a random link failure; 0: never).
    pub fail_rate: f64,
    /// Probability that a randomly failed link is repaired at each message.
    pub repair_rate: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            tick_ms: 1,
            latency_ms_min: 1,
            latency_ms_max: 20,
            fail_rate: 0.0,
            repair_rate: 1.0,
        }
    }
}

/// A deliberate bug, so a sweep can show that the checkers catch what it breaks. Bugs live in
/// the simulator's own client layer or in the node config it builds, never in the node: the
/// shipped node has no switch that turns off a safety check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bug {
    /// The simulated client sends its linearizable reads as local (serializable) reads yet
    /// records them as linearizable: a node cut off from the quorum, or merely behind, answers
    /// with stale data (caught by the linearizability checker).
    NoQuorumCheck,
    /// The simulated client drops the fencing token from its fenced writes (caught by the
    /// fencing checker: a superseded holder's write accepted).
    NoFencing,
    /// No Merkle-tree anti-entropy exchange (`aae_interval_ms = 0`; caught by the convergence
    /// checks: replicas left unequal after the heal).
    NoAntiEntropy,
}

impl Bug {
    /// Every bug.
    pub const ALL: [Bug; 3] = [Bug::NoQuorumCheck, Bug::NoFencing, Bug::NoAntiEntropy];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Bug::NoQuorumCheck => "no-quorum-check",
            Bug::NoFencing => "no-fencing",
            Bug::NoAntiEntropy => "no-anti-entropy",
        }
    }
}

impl std::fmt::Display for Bug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Bug {
    type Err = String;

    fn from_str(name: &str) -> Result<Bug, String> {
        Bug::ALL
            .into_iter()
            .find(|bug| bug.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Bug::ALL.iter().map(|bug| bug.name()).collect();
                format!("unknown bug {name:?}: one of {}", names.join(", "))
            })
    }
}

/// One simulated run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Every random choice of the run derives from it.
    pub seed: u64,
    /// Nodes, ids `1..=nodes`.
    pub nodes: u64,
    /// Network and clock.
    pub net: NetConfig,
    /// The nodes' AP keyspace settings (buckets, anti-entropy and hint intervals, timeouts).
    pub ap: ApConfig,
    /// The nodes' CP keyspace settings (Raft timings, request timeout); `bootstrap_expect` is
    /// always the cluster size.
    pub cp: CpConfig,
    /// The AP clients.
    pub workload: WorkloadConfig,
    /// The CP clients.
    pub cp_workload: CpWorkloadConfig,
    /// Nemeses, in ms after the workload starts.
    pub schedule: Schedule,
    /// How long the workload runs, ms; then every nemesis is healed.
    pub run_ms: u64,
    /// The cluster must first be fully connected within this, ms.
    pub boot_limit_ms: u64,
    /// After the heal, operations still in flight get this long to finish, ms.
    pub drain_limit_ms: u64,
    /// After the heal, every node must be back to Normal and connected within this, ms.
    pub recover_limit_ms: u64,
    /// Then every replica of every key must be equal within this, ms.
    pub converge_limit_ms: u64,
    /// Quiet time after convergence before the final copies are read, ms.
    pub quiet_ms: u64,
    /// Rounds of retrying increments that were never acknowledged (same request id).
    pub retry_rounds: u32,
    /// A deliberately broken build to run (`None`: the real one).
    pub bug: Option<Bug>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            nodes: 3,
            net: NetConfig::default(),
            ap: sim_ap_config(3),
            cp: sim_cp_config(),
            workload: WorkloadConfig::default(),
            cp_workload: CpWorkloadConfig::default(),
            schedule: Schedule::default(),
            run_ms: 6_000,
            boot_limit_ms: 5_000,
            drain_limit_ms: 10_000,
            recover_limit_ms: 15_000,
            converge_limit_ms: 20_000,
            quiet_ms: 1_000,
            retry_rounds: 5,
            bug: None,
        }
    }
}

/// AP settings for simulation: the `siblings` and `lww` buckets with N = min(3, nodes), and
/// faster anti-entropy, hint delivery and request timeouts than a real deployment's, so a
/// run converges in a few simulated seconds.
pub fn sim_ap_config(nodes: u64) -> ApConfig {
    let n = u32::try_from(nodes.clamp(1, 3)).unwrap_or(3);
    ApConfig {
        buckets: vec![
            BucketInfo {
                name: SIBLINGS.into(),
                rule: Rule::Siblings,
                n,
            },
            BucketInfo {
                name: LWW.into(),
                rule: Rule::Lww,
                n,
            },
        ],
        request_timeout_ms: 1_000,
        hint_interval_ms: 200,
        aae_interval_ms: 500,
        ..ApConfig::default()
    }
}

/// CP settings for simulation: the production Raft timings, a shorter request timeout (so a
/// client cut off in a minority gives up within a run).
pub fn sim_cp_config() -> CpConfig {
    CpConfig {
        request_timeout_ms: 2_000,
        ..CpConfig::default()
    }
}

impl SimConfig {
    /// A fault-free three-node run for `seed`.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            ..SimConfig::default()
        }
    }

    /// A run whose cluster size (3 or 5) and nemesis schedule are drawn from `seed` too: what
    /// the seed sweep runs (4 s of workload; see [`SimConfig::random_among`]).
    pub fn random(seed: u64) -> Self {
        Self::random_among(seed, &[3, 5])
    }

    /// Like [`SimConfig::random`], the cluster size drawn from `sizes` (3 when empty).
    pub fn random_among(seed: u64, sizes: &[u64]) -> Self {
        let mut rng = SeededRandom::new(seed ^ 0x5eed_5c4e_d01e);
        let nodes = match sizes.len() {
            0 => 3,
            len => sizes[rng.below(len as u64) as usize],
        };
        // Shorter than a hand-written run (4 s of workload, 300 ms of quiet): a sweep's value
        // is in its number of seeds, and this is a third faster than the defaults.
        let mut config = SimConfig::new(seed).nodes(nodes).run_ms(4_000);
        config.quiet_ms = 300;
        let schedule = Schedule::random(&mut rng, nodes, config.run_ms);
        config.schedule(schedule)
    }

    /// Sets the cluster size (and the buckets' N to min(3, nodes)).
    pub fn nodes(mut self, nodes: u64) -> Self {
        self.nodes = nodes;
        let n = u32::try_from(nodes.clamp(1, 3)).unwrap_or(3);
        for bucket in &mut self.ap.buckets {
            bucket.n = n;
        }
        self
    }

    /// Sets the nemesis schedule.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Sets how long the workload runs, ms.
    pub fn run_ms(mut self, run_ms: u64) -> Self {
        self.run_ms = run_ms;
        self
    }

    /// Changes the nodes' AP settings.
    pub fn ap(mut self, tweak: impl FnOnce(&mut ApConfig)) -> Self {
        tweak(&mut self.ap);
        self
    }

    /// Changes the network settings.
    pub fn net(mut self, tweak: impl FnOnce(&mut NetConfig)) -> Self {
        tweak(&mut self.net);
        self
    }

    /// Runs a deliberately broken build.
    pub fn bug(mut self, bug: Option<Bug>) -> Self {
        self.bug = bug;
        self
    }

    /// Changes the CP workload.
    pub fn cp_workload(mut self, tweak: impl FnOnce(&mut CpWorkloadConfig)) -> Self {
        tweak(&mut self.cp_workload);
        self
    }

    /// Changes the workload.
    pub fn workload(mut self, tweak: impl FnOnce(&mut WorkloadConfig)) -> Self {
        tweak(&mut self.workload);
        self
    }
}
