//! `isle chaos run` end to end, on loopback: the shipped short scenario (a split and a heal
//! under a mixed CP/AP workload) passes every checker and writes its run directory; a
//! bridge-partition run's `report.html` renders in headless Chromium and shows the timeline.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::isle_bin;

/// Runs `isle chaos run SCENARIO --out OUT`; panics with its output if it fails.
fn chaos_run(scenario: &str, out: &Path) -> String {
    let path = format!("{}/../../scenarios/{scenario}", env!("CARGO_MANIFEST_DIR"));
    let started = Instant::now();
    let output = Command::new(isle_bin())
        .args(["chaos", "run", &path, "--out"])
        .arg(out)
        .output()
        .expect("run isle chaos");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "isle chaos run {scenario} failed after {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        started.elapsed()
    );
    eprintln!("chaos run {scenario} took {:?}", started.elapsed());
    stdout
}

#[test]
fn the_quick_scenario_runs_and_every_checker_passes() {
    let out = tempfile::tempdir().expect("tempdir");
    let stdout = chaos_run("quick-split-3.toml", out.path());
    assert!(stdout.contains("linearizability: ok"), "{stdout}");
    assert!(stdout.contains("convergence: ok"), "{stdout}");
    assert!(stdout.contains("fencing: ok"), "{stdout}");
    assert!(stdout.contains("expectations: ok"), "{stdout}");
    assert!(
        stdout.contains("minority side n3 first refused a CP request after"),
        "{stdout}"
    );

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
        ["linearizability", "fencing", "convergence", "expectations"],
        "{verdicts}"
    );
    let figures: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("figures.json")).expect("figures"),
    )
    .expect("figures JSON");
    let sides: Vec<&str> = figures["availability"]
        .as_array()
        .expect("availability rows")
        .iter()
        .filter_map(|row| row["group"].as_str())
        .collect();
    assert!(
        sides.contains(&"side n3") && sides.contains(&"side n1,n2"),
        "{sides:?}"
    );
    for name in [
        "summary.txt",
        "final-state.json",
        "nemesis.json",
        "report.html",
        "nodes/n1.log",
    ] {
        assert!(out.path().join(name).exists(), "{name} missing");
    }
}

#[test]
fn a_missed_expectation_fails_the_run_and_says_why() {
    // A minority refusal can never come within 1 ms of the cut: the run must fail, not pass.
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("strict.toml");
    std::fs::write(
        &scenario,
        "name = \"strict\"\nnodes = 3\nduration_s = 6\n\
         [workload]\nclients = 3\ncp_keys = 1\nap_keys = 1\n\
         [[nemesis]]\nstart_s = 1\nstop_s = 4\nkind = \"partition\"\nsides = { one = 3 }\n\
         [expect]\nminority_refuses_cp_within_s = 0.001\n",
    )
    .expect("write scenario");
    let out = dir.path().join("run");
    let output = Command::new(isle_bin())
        .args(["chaos", "run"])
        .arg(&scenario)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run isle chaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "a missed bound passed:\n{stdout}");
    assert!(stdout.contains("expectations: violated"), "{stdout}");
    assert!(stdout.contains("(bound 0.001 s)"), "{stdout}");
    let page = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(
        page.contains("VIOLATED"),
        "the report does not say it failed"
    );
}

/// The history's JSON lines, parsed loosely (the test does not depend on isle-chaos).
fn isle_chaos_history(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// The headless browser, if installed (`chromium` on Debian).
fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(str::to_string)
}

/// Screenshots `page` into `png` with headless Chromium (killed after 120 s).
fn screenshot(browser: &str, page: &Path, png: &Path) {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,900",
        ])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            assert!(status.success(), "chromium exited with {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish its screenshot within 120 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_bridge_run_report_shows_its_timeline_in_chromium() {
    let found = chromium();
    if !common::require(found.is_some(), "chromium", "apt-get install chromium") {
        return;
    }
    let Some(browser) = found else { return };
    // The run directory is kept (target/tmp/bridge-3-report) with the screenshot in it.
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bridge-3-report");
    let _ = std::fs::remove_dir_all(&out);
    let stdout = chaos_run("bridge-3.toml", &out);
    assert!(stdout.contains("start {\"kind\":\"bridge\"}"), "{stdout}");
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).expect("report.html");
    // Self-contained: no script or stylesheet fetched from anywhere.
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "external assets"
    );
    assert!(
        html.contains("<svg") && html.contains("bridge"),
        "no timeline"
    );
    let png = out.join("report.png");
    screenshot(&browser, &page, &png);

    let decoder = png::Decoder::new(std::fs::File::open(&png).expect("the screenshot"));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).expect("PNG pixels");
    assert_eq!((frame.width, frame.height), (1400, 900));
    let channels = frame.color_type.samples();
    assert!(channels >= 3, "{:?}", frame.color_type);
    let rgb: Vec<[u8; 3]> = pixels[..frame.buffer_size()]
        .chunks(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    let distinct: std::collections::BTreeSet<[u8; 3]> = rgb.iter().copied().collect();
    assert!(distinct.len() > 10, "the page is (nearly) one colour");
    // The timeline's colours: successful operations (#2e7d32) and the nemesis shading.
    let near = |p: &[u8; 3], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 12);
    let ok = rgb.iter().filter(|p| near(p, [0x2e, 0x7d, 0x32])).count();
    let shaded = rgb
        .iter()
        .filter(|p| p[2] > 200 && p[0] < 235 && p[2] > p[0] + 15)
        .count();
    assert!(ok > 2_000, "only {ok} pixels of successful operations");
    assert!(shaded > 200, "only {shaded} pixels of nemesis shading");
    eprintln!(
        "report screenshot {}: {} distinct colours, {ok} ok-green pixels, {shaded} shaded",
        png.display(),
        distinct.len()
    );
}
