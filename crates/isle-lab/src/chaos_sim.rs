//! `isle chaos sim`: the simulation engine's seed sweep (`isle_sim`). Each seed draws a cluster
//! size and one to three overlapping nemesis windows from the whole vocabulary, runs the real
//! node code on turmoil's simulated network and clock with an AP and a CP workload, and checks
//! the history: AP convergence and merge rules, CP linearizability per key, fencing, "the
//! minority refuses CP writes", recovery after the heal. Seeds run on every core; each prints
//! one line; a failing seed prints the command that replays it, and the command exits non-zero.
//! `--bug NAME` runs with a deliberate bug in the simulator's clients or config (see
//! [`isle_sim::Bug`]): the lab must fail.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use isle_sim::sweep::{Checked, run_and_check, sweep};
use isle_sim::{Bug, SimConfig};

/// Flags of `isle chaos sim`.
#[derive(Args, Debug, Clone)]
pub struct SimArgs {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Run (replay) this one seed only.
    #[arg(long)]
    seed: Option<u64>,
    /// Cluster sizes each seed draws from.
    #[arg(long, value_delimiter = ',', default_value = "3,5")]
    nodes: Vec<u64>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Print every violation of a failing seed (default: the first five).
    #[arg(long)]
    verbose: bool,
    /// Run with a deliberate bug in the simulated clients or config, to see the checkers catch
    /// it: no-quorum-check (local reads recorded as linearizable: linearizability), no-fencing
    /// (tokens dropped: fencing), no-anti-entropy (convergence). Expect failures.
    #[arg(long)]
    bug: Option<Bug>,
}

/// Runs the sweep; fails if any seed fails.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || run_blocking(&args)).await?
}

fn replay_command(args: &SimArgs, seed: u64) -> String {
    let nodes: Vec<String> = args.nodes.iter().map(u64::to_string).collect();
    let bug = args
        .bug
        .map(|bug| format!(" --bug {bug}"))
        .unwrap_or_default();
    format!(
        "isle chaos sim --seed {seed} --nodes {}{bug} --verbose",
        nodes.join(",")
    )
}

fn run_blocking(args: &SimArgs) -> anyhow::Result<()> {
    if args.nodes.iter().any(|n| !(1..=64).contains(n)) {
        bail!("--nodes: cluster sizes must be 1..=64");
    }
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => (args.start..args.start.saturating_add(args.seeds)).collect(),
    };
    let workers = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    // (nemesis, nodes) → seeds that ran it.
    let coverage: Mutex<BTreeMap<(&'static str, u64), u64>> = Mutex::default();
    let wall = Instant::now();
    let report = sweep(
        &seeds,
        workers,
        |seed| {
            let started = Instant::now();
            let config = SimConfig::random_among(seed, &args.nodes).bug(args.bug);
            let mut checked = run_and_check(config, &replay_command(args, seed));
            checked.line = format!("{} [wall {:.1?}]", checked.line, started.elapsed());
            checked
        },
        |checked: &Checked| {
            let mut lines = vec![checked.line.clone()];
            let shown = if args.verbose { usize::MAX } else { 5 };
            for violation in checked.violations.iter().take(shown) {
                lines.push(format!("  {violation}"));
            }
            if checked.violations.len() > shown {
                lines.push(format!(
                    "  ... {} more (--verbose shows them all)",
                    checked.violations.len() - shown
                ));
            }
            println!("{}", lines.join("\n"));
            let mut coverage = coverage
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for name in &checked.nemeses {
                *coverage.entry((name, checked.nodes)).or_default() += 1;
            }
        },
    );
    let coverage = coverage
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cells: Vec<String> = coverage
        .iter()
        .map(|((name, nodes), count)| format!("{name}@{nodes}:{count}"))
        .collect();
    println!("nemeses run (name@nodes:seeds): {}", cells.join(" "));
    println!(
        "{} seeds in {:.1?} on {} threads; {} failed",
        report.seeds,
        wall.elapsed(),
        report.workers,
        report.failed.len()
    );
    if !report.failed.is_empty() {
        for seed in &report.failed {
            println!("replay: {}", replay_command(args, *seed));
        }
        bail!("{} of {} seeds failed", report.failed.len(), report.seeds);
    }
    Ok(())
}
