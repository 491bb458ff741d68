//! Every shipped scenario (`scenarios/*.toml`) with `isle chaos run --engine netns`: real
//! processes, one network namespace each, faults made by the kernel. A scenario fails when a
//! checker finds a violation or an expectation is missed; the test fails if any did, after
//! running them all. Each run directory (history, verdicts, figures, report.html, node logs)
//! is kept under `target/tmp/chaos-netns/<scenario>`.
//!
//! Needs root, `ip` and `nft`; runs only with `ISLE_NETNS=1` (as `.ci/run` does).
//! `ISLE_CHAOS_ONLY=name,name` runs only those scenarios.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::isle_bin;

#[test]
fn every_shipped_scenario_passes_in_network_namespaces() {
    if !common::netns_enabled() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let only: Option<Vec<String>> = std::env::var("ISLE_CHAOS_ONLY")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let mut scenarios: Vec<_> = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter(|p| {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            only.as_ref()
                .is_none_or(|only| only.iter().any(|o| o == stem))
        })
        .collect();
    scenarios.sort();
    assert!(
        !scenarios.is_empty(),
        "no scenario found in {}",
        dir.display()
    );
    let runs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos-netns");
    let started = Instant::now();
    let mut failed = Vec::new();
    for scenario in &scenarios {
        let name = scenario
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("?")
            .to_string();
        let out = runs.join(&name);
        let _ = std::fs::remove_dir_all(&out);
        let one = Instant::now();
        let output = Command::new(isle_bin())
            .args(["chaos", "run", "--engine", "netns", "--out"])
            .arg(&out)
            .arg(scenario)
            .output()
            .expect("run isle chaos");
        let took = one.elapsed().as_secs_f64();
        let stdout = String::from_utf8_lossy(&output.stdout);
        if output.status.success() {
            println!("{name}: passed in {took:.1} s");
        } else {
            println!(
                "{name}: FAILED in {took:.1} s (run directory {})\n{stdout}\n{}",
                out.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            failed.push(name);
        }
    }
    println!(
        "{} scenarios in network namespaces: {:.1} s in all",
        scenarios.len(),
        started.elapsed().as_secs_f64()
    );
    // Nothing of ours is left behind.
    let left = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        !left.lines().any(|l| l.starts_with("islc")),
        "namespaces left behind:\n{left}"
    );
    assert!(failed.is_empty(), "scenarios failed: {failed:?}");
}
