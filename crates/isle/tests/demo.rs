//! `isle demo --json`, run non-interactively: the story's events carry the cluster's answers,
//! and they must be the ones Isle promises — the minority's CP write refused with `NoQuorum`,
//! the majority's accepted, the zombie leader's fenced write rejected, the AP side converged
//! (cart = union, counter = sum, LWW kept one write, siblings kept both).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use serde_json::Value;

/// A base port whose ten demo ports (BASE+1..5 and BASE+1001..1005) are free right now, from
/// below the kernel's ephemeral range.
fn free_base() -> u16 {
    let seed = std::process::id() as u64;
    for attempt in 0..200u64 {
        let base = 20_000 + ((seed * 7919 + attempt * 104_729) % 8_000) as u16;
        let free = (1..=5u16).all(|i| {
            [base + i, base + 1000 + i]
                .iter()
                .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        });
        if free {
            return base;
        }
    }
    panic!("no free base port for the demo");
}

#[test]
fn the_demo_tells_the_story_from_the_clusters_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_base();
    let output = Command::new(env!("CARGO_BIN_EXE_isle"))
        .args(["demo", "--json", "--base-port", &base.to_string()])
        .arg("--dir")
        .arg(dir.path().join("demo"))
        .stdin(Stdio::null())
        .output()
        .expect("run isle demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let logs = || {
        let mut out = String::new();
        for id in 1..=5 {
            let path = dir.path().join("demo").join(format!("n{id}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("==> n{id}.log <==\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    };
    assert!(
        output.status.success(),
        "isle demo exited {}\nstdout:\n{stdout}\nstderr:\n{stderr}\n(data dir removed: logs gone \
         unless the demo failed early)\n{}",
        output.status,
        logs()
    );
    println!("{stdout}");

    // Every line is one JSON event with an act and a name; the last of each name is kept.
    let mut events: BTreeMap<String, Value> = BTreeMap::new();
    for line in stdout.lines() {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON event: {line:?}: {e}"));
        assert!(event["act"].is_u64(), "event without an act: {event}");
        let name = event["event"].as_str().expect("event name").to_string();
        events.insert(name, event);
    }
    let event = |name: &str| -> &Value {
        events
            .get(name)
            .unwrap_or_else(|| panic!("no {name:?} event in:\n{stdout}"))
    };

    let minority = event("cp_write_minority");
    assert_eq!(minority["answered"]["code"], 503, "{minority}");
    assert_eq!(
        minority["answered"]["body"]["kind"], "NoQuorum",
        "{minority}"
    );
    assert_eq!(minority["outcome"], "refused");

    let majority = event("cp_write_majority");
    assert_eq!(majority["answered"]["code"], 200, "{majority}");
    assert_eq!(majority["outcome"], "accepted");

    let caught_up = event("cp_caught_up");
    assert_eq!(caught_up["account_alice_on_west"], "70", "{caught_up}");

    let zombie = event("zombie_write");
    assert_eq!(zombie["answered"]["code"], 409, "{zombie}");
    assert_eq!(
        zombie["answered"]["body"]["reason"], "FencingTokenStale",
        "{zombie}"
    );
    assert_eq!(zombie["outcome"], "rejected");
    assert!(
        zombie["token_b"].as_i64() > zombie["token_a"].as_i64(),
        "{zombie}"
    );
    assert_eq!(zombie["ledger_after"], "B", "{zombie}");

    let converged = event("ap_converged");
    assert_eq!(
        converged["cart"],
        serde_json::json!(["apples", "bread", "milk"]),
        "{converged}"
    );
    assert_eq!(converged["likes"], 6, "{converged}");
    assert_eq!(
        converged["lww_kept"].as_array().map(Vec::len),
        Some(1),
        "{converged}"
    );
    assert_eq!(
        converged["lww_lost"].as_array().map(Vec::len),
        Some(1),
        "{converged}"
    );
    assert_eq!(
        converged["siblings"].as_array().map(Vec::len),
        Some(2),
        "{converged}"
    );

    let reconciled = event("ap_reconciled");
    assert!(
        reconciled["hints_delivered"].as_u64() > Some(0),
        "the split's writes left hints to hand off: {reconciled}"
    );
    let stonith = event("stonith");
    assert_eq!(stonith["record"]["outcome"], "ok", "{stonith}");

    let summary = event("summary");
    assert_eq!(summary["broken"], serde_json::json!([]), "{summary}");
    println!("whole story: {} ms", summary["total_ms"]);
    assert!(
        !dir.path().join("demo").exists(),
        "the demo removes its data dir without --keep"
    );
}
