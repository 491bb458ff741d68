//! One checked run and a sweep of seeds on every core: what `isle chaos sim` and the seed-sweep
//! test share. A run is checked with every checker (`isle-chaos`'s convergence,
//! linearizability and fencing, plus "the minority refuses CP writes"); a run that cannot
//! complete, or does not recover after the heal, fails too.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use isle_chaos::{Keyspace, Verdict};

use crate::config::SimConfig;

/// A broken promise of a run: which check, on which key, what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key (`bucket/key`, a CP key or lock), or `-` for the whole run.
    pub key: String,
    /// The check that failed.
    pub rule: &'static str,
    /// What was found.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}]: {}", self.key, self.rule, self.message)
    }
}

/// What one checked run came to.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The seed.
    pub seed: u64,
    /// Cluster size.
    pub nodes: u64,
    /// The nemeses the schedule started (their names).
    pub nemeses: Vec<&'static str>,
    /// A one-line summary: nodes, nemeses, operations, verdict.
    pub line: String,
    /// Broken promises.
    pub violations: Vec<Violation>,
    /// The history as JSON lines (`None` if the run failed).
    pub history: Option<String>,
}

impl Checked {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

fn absorb(violations: &mut Vec<Violation>, rule: &'static str, verdict: &Verdict) {
    for violation in &verdict.violations {
        violations.push(Violation {
            key: violation.key.clone().unwrap_or_default(),
            rule,
            message: violation.to_string(),
        });
    }
}

/// Runs `config`, checks its history and summarizes it in one line; `replay` is the command
/// that replays it, printed with a failure.
pub fn run_and_check(config: SimConfig, replay: &str) -> Checked {
    let seed = config.seed;
    let nodes = config.nodes;
    let bug = config
        .bug
        .map(|bug| format!(" [bug {bug}]"))
        .unwrap_or_default();
    let names: Vec<&'static str> = config.schedule.nemeses().iter().map(|n| n.name()).collect();
    let nemeses = if names.is_empty() {
        "none".to_string()
    } else {
        names.join("+")
    };
    let run = match crate::run(config) {
        Ok(run) => run,
        Err(err) => {
            return Checked {
                seed,
                nodes,
                nemeses: names,
                line: format!(
                    "seed {seed}: {nodes} nodes, {nemeses}: RUN FAILED (replay: {replay})"
                ),
                violations: vec![Violation {
                    key: "-".into(),
                    rule: "run completes",
                    message: err.to_string(),
                }],
                history: None,
            };
        }
    };
    let mut violations = Vec::new();
    let verdicts = [
        ("isle-chaos convergence", crate::chaos::convergence(&run)),
        (
            "isle-chaos linearizability",
            crate::chaos::linearizability(&run),
        ),
        ("isle-chaos fencing", crate::chaos::fencing(&run)),
        (
            "minority refuses CP writes",
            crate::chaos::minority_writes(&run),
        ),
    ];
    for (rule, verdict) in &verdicts {
        absorb(&mut violations, rule, verdict);
    }
    let figures = &run.figures;
    if figures.recovered_after_heal_ms.is_none() {
        violations.push(Violation {
            key: "-".into(),
            rule: "recovers after heal",
            message: format!(
                "not every node Normal within {} ms",
                run.config.recover_limit_ms
            ),
        });
    }
    if figures.cp_recovered_after_heal_ms.is_none() {
        violations.push(Violation {
            key: "-".into(),
            rule: "CP recovers after heal",
            message: format!(
                "not every node a voter knowing one leader within {} ms",
                run.config.recover_limit_ms
            ),
        });
    }
    let voters = if figures.fewest_voters < nodes {
        format!(" (CP voters down to {})", figures.fewest_voters)
    } else {
        String::new()
    };
    let ap = run.history.outcome_counts(Keyspace::Ap);
    let cp = run.history.outcome_counts(Keyspace::Cp);
    let statuses: Vec<String> = verdicts
        .iter()
        .map(|(_, verdict)| format!("{} {}", verdict.checker, verdict.status()))
        .collect();
    let line = format!(
        "seed {seed}{bug}: {nodes} nodes, {nemeses}{voters}: ap {ap} cp {cp} \
         (ok/fail/unknown); {}; recovered {:?} ms (CP {:?} ms), converged {:?} ms after heal; \
         sim {} ms: {}",
        statuses.join(", "),
        figures.recovered_after_heal_ms,
        figures.cp_recovered_after_heal_ms,
        figures.converged_after_heal_ms,
        figures.sim_ms,
        if violations.is_empty() {
            "ok".to_string()
        } else {
            format!("{} VIOLATIONS (replay: {replay})", violations.len())
        },
    );
    Checked {
        seed,
        nodes,
        nemeses: names,
        line,
        violations,
        history: run.to_json_lines().ok(),
    }
}

/// What a sweep came to.
#[derive(Debug, Clone)]
pub struct SweepReport {
    /// Seeds run.
    pub seeds: usize,
    /// Seeds that failed a check, sorted.
    pub failed: Vec<u64>,
    /// Worker threads.
    pub workers: usize,
}

/// Runs `check(seed)` for every seed on `workers` threads (at least one), handing each result
/// to `report` as it comes (from the worker's thread, in completion order).
pub fn sweep(
    seeds: &[u64],
    workers: usize,
    check: impl Fn(u64) -> Checked + Sync,
    report: impl Fn(&Checked) + Sync,
) -> SweepReport {
    let workers = workers.clamp(1, seeds.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let checked = check(seed);
                    report(&checked);
                    if !checked.ok() {
                        failed
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(seed);
                    }
                }
            });
        }
    });
    let mut failed = failed
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    failed.sort_unstable();
    SweepReport {
        seeds: seeds.len(),
        failed,
        workers,
    }
}
