//! Tidy: the architecture rules that code review would otherwise have to remember, as a test.
//! Every source file opens with a `//!` doc; cores stay free of IO; only the seams read clocks,
//! sleep or draw OS randomness; every `select!` is `biased`; no test is `#[ignore]`d.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Source files of every crate (`crates/*/src/**.rs`), as (crate name, path, text).
fn sources() -> Vec<(String, PathBuf, String)> {
    let mut out = Vec::new();
    let crates = std::fs::read_dir(workspace().join("crates")).expect("crates dir");
    for krate in crates.flatten() {
        let name = krate.file_name().to_string_lossy().to_string();
        let mut files = Vec::new();
        rust_files(&krate.path().join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            out.push((name.clone(), file, text));
        }
    }
    assert!(out.len() > 20, "tidy found too few sources: {}", out.len());
    out
}

fn is_test_file(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == "tests") || path.ends_with("tests.rs")
}

/// Code lines only: drops `//` comments so docs may name what they forbid.
fn code(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|(_, _, text)| {
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            !first.starts_with("//!")
        })
        .map(|(_, path, _)| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` module doc: {missing:#?}"
    );
}

#[test]
fn only_the_seams_read_clocks_sleep_or_draw_os_randomness() {
    const BANNED: [&str; 8] = [
        "Instant::now",
        "SystemTime::now",
        "thread_rng",
        "rand::rng()",
        "OsRng",
        "thread::sleep",
        "tokio::time::",
        "futures::select",
    ];
    // The seams themselves, the `isle` binary, its CLI commands and the lab that launches node
    // processes (outside every node's code).
    let allowed = |krate: &str, path: &Path| {
        krate == "isle"
            || krate == "isle-cli"
            || krate == "isle-lab"
            || path.ends_with("isle-env/src/clock.rs")
            || path.ends_with("isle-env/src/random.rs")
    };
    let mut violations = Vec::new();
    for (krate, path, text) in sources() {
        if allowed(&krate, &path) || is_test_file(&path) {
            continue;
        }
        let code = code(&text);
        let code = code.split("#[cfg(test)]").next().unwrap_or("");
        for banned in BANNED {
            if code.contains(banned) {
                violations.push(format!("{}: {banned}", path.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "clock/sleep/RNG outside the seams: {violations:#?}"
    );
}

#[test]
fn every_select_is_biased() {
    let mut violations = Vec::new();
    for (_, path, text) in sources() {
        let code = code(&text);
        for (index, _) in code.match_indices("select! {") {
            let after = code[index..].lines().nth(1).unwrap_or("").trim();
            if after != "biased;" {
                violations.push(format!("{}: select! without `biased;`", path.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "unseeded select! polling order: {violations:#?}"
    );
}

#[test]
fn cores_depend_on_no_runtime_or_io_crate() {
    for core in ["isle-types", "isle-quorum", "isle-detect"] {
        let manifest = workspace().join("crates").join(core).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).expect("manifest");
        let dependencies = text.split("[dependencies]").nth(1).unwrap_or("");
        let dependencies = dependencies.split("\n[").next().unwrap_or("");
        for io in [
            "tokio",
            "redb",
            "axum",
            "isle-net",
            "isle-storage",
            "isle-env",
            "rand",
        ] {
            let uses = dependencies.lines().any(|l| l.trim_start().starts_with(io));
            assert!(!uses, "{core} is a sans-IO core but depends on {io}");
        }
    }
}

#[test]
fn no_test_is_ignored() {
    let mut files = Vec::new();
    rust_files(&workspace().join("crates"), &mut files);
    let pattern = concat!("#[", "ignore"); // Spelled apart so this file does not match itself.
    let ignored: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read_to_string(f).is_ok_and(|t| code(&t).contains(pattern)))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        ignored.is_empty(),
        "ignored tests hide failures: {ignored:#?}"
    );
}

/// The shipped binary turns on no feature of an Isle crate but `default`: no build switch can
/// bring a deliberate bug or test-only behaviour into the product (the chaos lab's bugs live in
/// the simulator's client layer instead).
#[test]
fn the_shipped_binary_turns_on_no_isle_feature() {
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "isle",
            "-e",
            "normal,features",
            "--prefix",
            "none",
        ])
        .current_dir(workspace())
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    let features: Vec<&str> = tree
        .lines()
        .filter(|line| line.starts_with("isle") && line.contains(" feature \""))
        .collect();
    assert!(
        !features.is_empty(),
        "cargo tree listed no features: {tree}"
    );
    let extra: Vec<&&str> = features
        .iter()
        .filter(|line| !line.contains(" feature \"default\""))
        .collect();
    assert!(
        extra.is_empty(),
        "the isle binary is built with Isle features beyond default: {extra:#?}"
    );
}

/// The crate map's layers, bottom to top (ARCHITECTURE.md): a crate depends only on crates in
/// lower layers, so no dependency runs back up.
const LAYERS: [&[&str]; 8] = [
    &["isle-types"],
    &[
        "isle-env",
        "isle-quorum",
        "isle-detect",
        "isle-crdt",
        "isle-chaos",
        "isle-cp",
    ],
    &["isle-storage", "isle-net", "isle-ap"],
    &["isle-node"],
    &["isle-api", "isle-sim"],
    &["isle-lab"],
    &["isle-cli"],
    &["isle"],
];

#[test]
fn no_crate_depends_on_one_in_its_own_or_a_higher_layer() {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace())
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "cargo metadata failed");
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata JSON");
    let layer = |name: &str| LAYERS.iter().position(|layer| layer.contains(&name));
    let mut violations = Vec::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("package name");
        let Some(own) = layer(name) else {
            violations.push(format!(
                "{name} is in no layer: add it to LAYERS and the crate map"
            ));
            continue;
        };
        for dependency in package["dependencies"].as_array().expect("dependencies") {
            let is_normal = dependency["kind"].is_null();
            let target = dependency["name"].as_str().expect("dependency name");
            if let Some(theirs) = layer(target)
                && is_normal
                && theirs >= own
            {
                violations.push(format!(
                    "{name} (layer {own}) depends on {target} (layer {theirs})"
                ));
            }
        }
    }
    assert!(violations.is_empty(), "layering broken: {violations:#?}");
}
