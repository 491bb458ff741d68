//! `isle chaos run` end to end: the shipped short scenario on three real processes (a split and
//! a heal under a mixed CP/AP workload) passes every checker and writes its run directory.

mod common;

use std::process::Command;
use std::time::Instant;

use common::isle_bin;

#[test]
fn the_quick_scenario_runs_and_every_checker_passes() {
    let out = tempfile::tempdir().expect("tempdir");
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scenarios/quick-split-3.toml"
    );
    let started = Instant::now();
    let output = Command::new(isle_bin())
        .args(["chaos", "run", scenario, "--out"])
        .arg(out.path())
        .output()
        .expect("run isle chaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "isle chaos run failed after {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        started.elapsed()
    );
    assert!(stdout.contains("linearizability: ok"), "{stdout}");
    assert!(stdout.contains("convergence: ok"), "{stdout}");

    let history = std::fs::read_to_string(out.path().join("history.jsonl")).expect("history");
    let history = isle_chaos_history(&history);
    assert!(history.len() > 50, "too few operations: {}", history.len());
    // The split must have shown: node 3 alone refuses CP requests.
    assert!(
        history.iter().any(|op| op["outcome"] == "fail"),
        "no CP refusal recorded during the split"
    );
    let verdicts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("verdicts.json")).expect("verdicts"),
    )
    .expect("verdicts JSON");
    let checkers: Vec<&str> = verdicts
        .as_array()
        .expect("a list of verdicts")
        .iter()
        .filter_map(|v| v["checker"].as_str())
        .collect();
    assert_eq!(
        checkers,
        ["linearizability", "convergence", "expectations"],
        "{verdicts}"
    );
    for name in [
        "summary.txt",
        "final-state.json",
        "nemesis.json",
        "nodes/n1.log",
    ] {
        assert!(out.path().join(name).exists(), "{name} missing");
    }
    eprintln!("chaos run took {:?}", started.elapsed());
}

/// The history's JSON lines, parsed loosely (the test does not depend on isle-chaos).
fn isle_chaos_history(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}
