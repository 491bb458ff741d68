//! The seed sweep: for each seed, a cluster size (3 or 5) and one to three overlapping nemesis
//! windows drawn from the seed (every kind of the vocabulary), a run with the AP and CP
//! workloads, and every check (`isle_sim::sweep::run_and_check`; `isle chaos sim` runs the same).
//!
//! Every seed is printed with its figures; a failing seed prints the command that replays it.
//! `ISLE_SIM_SEED=7` runs one seed; `ISLE_SIM_SEEDS=1000` sets how many (from
//! `ISLE_SIM_SEED_START`, default 0; default count 4 in debug builds, 50 optimized);
//! `ISLE_SIM_TWICE=1` runs every seed twice and requires identical histories. Seeds run on
//! every core. Figures print with `-- --nocapture`.

mod common;

use isle_sim::SimConfig;

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
    })
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = env("ISLE_SIM_SEED") {
        return vec![seed];
    }
    let default = if cfg!(debug_assertions) { 4 } else { 50 };
    let start = env("ISLE_SIM_SEED_START").unwrap_or(0);
    (start..start + env("ISLE_SIM_SEEDS").unwrap_or(default)).collect()
}

/// One seed: run, check, and with `twice` run again and compare the histories.
fn sweep_one(seed: u64, twice: bool) -> (String, bool) {
    let replay = format!(
        "ISLE_SIM_SEED={seed} cargo test -p isle-sim --release --test sweep -- --nocapture"
    );
    let config = common::lighten(SimConfig::random(seed));
    let checked = common::run_and_check(config.clone(), &replay);
    let mut lines = vec![checked.line];
    lines.extend(checked.violations.iter().map(|v| format!("  {v}")));
    let mut ok = checked.violations.is_empty();
    if twice {
        let again = isle_sim::run(config)
            .ok()
            .and_then(|run| run.to_json_lines().ok());
        if checked.history.is_none() || checked.history != again {
            ok = false;
            lines.push(format!(
                "  histories differ between two runs (replay: ISLE_SIM_TWICE=1 {replay})"
            ));
        }
    }
    (lines.join("\n"), ok)
}

#[test]
fn seed_sweep() {
    let seeds = seeds();
    let twice = env("ISLE_SIM_TWICE").is_some_and(|v| v != 0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let wall = std::time::Instant::now();
    let report = isle_sim::sweep::sweep(
        &seeds,
        workers,
        |seed| {
            let (line, ok) = sweep_one(seed, twice);
            isle_sim::sweep::Checked {
                seed,
                nodes: 0,
                nemeses: Vec::new(),
                line,
                violations: if ok {
                    Vec::new()
                } else {
                    vec![isle_sim::Violation {
                        key: "-".into(),
                        rule: "seed passes",
                        message: "see above".into(),
                    }]
                },
                history: None,
            }
        },
        |checked| println!("{}", checked.line),
    );
    let elapsed = wall.elapsed();
    let per_minute = report.seeds as f64 * 60.0 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "{} seeds in {:?} on {} threads: {per_minute:.0} seeds per minute{}",
        report.seeds,
        elapsed,
        report.workers,
        if twice { " (each twice)" } else { "" }
    );
    assert!(
        report.failed.is_empty(),
        "failing seeds {:?}; replay one with ISLE_SIM_SEED=<seed> cargo test -p isle-sim --release --test sweep -- --nocapture",
        report.failed
    );
}
