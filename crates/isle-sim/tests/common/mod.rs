//! Shared by the simulation tests: a run, its checks and a one-line summary per seed, with the
//! command that replays a failure.

use std::time::Instant;

use isle_sim::{SimConfig, Violation};

/// Lighter clients in debug builds (an operation costs ~5 ms of wall time unoptimized, ~0.1 ms
/// optimized), so the debug suite stays within a minute on 2 cores.
pub fn lighten(config: SimConfig) -> SimConfig {
    if cfg!(debug_assertions) {
        config.workload(|w| {
            w.clients_per_node = 1;
            w.think_ms_max = 120;
        })
    } else {
        config
    }
}

/// What one checked run came to.
pub struct Checked {
    /// A one-line summary.
    pub line: String,
    /// Broken promises.
    pub violations: Vec<Violation>,
    /// The history as JSON lines (`None` if the run failed).
    pub history: Option<String>,
}

/// Runs `config`, checks its history and summarizes it; a run that cannot complete counts as a
/// violation of its own.
pub fn run_and_check(config: SimConfig, replay: &str) -> Checked {
    let wall = Instant::now();
    let seed = config.seed;
    let nodes = config.nodes;
    let nemeses: Vec<&str> = config.schedule.nemeses().iter().map(|n| n.name()).collect();
    let nemeses = if nemeses.is_empty() {
        "none".to_string()
    } else {
        nemeses.join("+")
    };
    let run = match isle_sim::run(config) {
        Ok(run) => run,
        Err(err) => {
            return Checked {
                line: format!("seed {seed}: {nodes} nodes, {nemeses}: run failed ({replay})"),
                violations: vec![Violation {
                    key: "-".into(),
                    rule: "run completes",
                    message: err.to_string(),
                }],
                history: None,
            };
        }
    };
    let mut violations = isle_sim::check(&run.history);
    let verdict = isle_sim::chaos::convergence(&run);
    for violation in &verdict.violations {
        violations.push(Violation {
            key: violation.key.clone().unwrap_or_default(),
            rule: "isle-chaos convergence",
            message: violation.to_string(),
        });
    }
    let availability: Vec<String> = isle_sim::chaos::availability(&run)
        .into_iter()
        .filter(|row| row.group == "all")
        .map(|row| format!("{}: {}/{} ok", row.window, row.ok, row.requests))
        .collect();
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
    let (ok, fail, unknown) = run.history.outcome_counts();
    let line = format!(
        "seed {seed}: {nodes} nodes, {nemeses}: {ok} ok / {fail} fail / {unknown} indeterminate \
         [{}]; isle-chaos {}; recovered {:?} ms, converged {:?} ms after heal; {} retried; sim {} \
         ms, wall {:?}{}",
        availability.join("; "),
        verdict.status(),
        figures.recovered_after_heal_ms,
        figures.converged_after_heal_ms,
        figures.retried,
        figures.sim_ms,
        wall.elapsed(),
        if violations.is_empty() {
            String::new()
        } else {
            format!(" — {} VIOLATIONS (replay: {replay})", violations.len())
        },
    );
    Checked {
        line,
        violations,
        history: run.history.to_json_lines().ok(),
    }
}
