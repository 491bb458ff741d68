//! Nothing given up for speed: the CP write path group-commits (appends return before their
//! fsync; one flusher fsync covers every batch queued meanwhile, and the leader's flush overlaps
//! replication), yet kill -9 of every node under a write load loses no acknowledged write.
//! Also checks the disk counters in `/metrics`: at most one fsync per appended batch per node.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LocalCluster, cp_get, cp_leader, cp_put, cp_value, metrics, wait_for};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(30);
const WRITERS: u64 = 12;
/// Acknowledged writes to collect before pulling the plug on every node.
const ACKED_BEFORE_KILL: usize = 2000;

#[test]
fn kill9_of_every_node_under_load_loses_no_acknowledged_write() {
    let mut cluster = LocalCluster::start_with(3, &["--bootstrap-expect", "3"]);
    let _logs = cluster.logs_on_panic();
    wait_for("a CP leader", LIMIT, || cp_leader(&cluster, &[1, 2, 3]));

    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            // Spread over every node: two of three forward to the leader.
            let addr = cluster.http(writer % 3 + 1);
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (key, value) = (format!("dur/{writer}/{i}"), format!("v{writer}.{i}"));
                    // Anything but a 200 (errors once the nodes die) is not acknowledged.
                    if let Ok((200, _)) = cp_put(&addr, &json!({"key": key, "value": value})) {
                        acked.lock().unwrap().push((key, value));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    wait_for("writes acknowledged under load", LIMIT, || {
        match acked.lock().unwrap().len() {
            n if n >= ACKED_BEFORE_KILL => Ok(()),
            n => Err(format!("{n} acknowledged so far")),
        }
    });

    // Group commit is judged by fsyncs per batch: at most one per appended batch on every
    // node (a flush covers one or more batches; votes add a few).
    for id in 1..=3 {
        let text = metrics(&cluster.http(id)).expect("metrics");
        let fsyncs =
            isle_lab::metrics::first(&text, "isle_cp_log_fsyncs_total").expect("fsync counter");
        let batches = isle_lab::metrics::first(&text, "isle_cp_log_append_batches_total")
            .expect("batch counter");
        let entries =
            isle_lab::metrics::first(&text, "isle_cp_log_entries_total").expect("entry counter");
        assert!(batches > 0.0 && entries >= batches, "node {id}: {text}");
        assert!(
            fsyncs <= batches + 5.0,
            "node {id}: {fsyncs} fsyncs for {batches} batches ({entries} entries)"
        );
    }

    // Pull the plug on every node at once, mid-load.
    for id in 1..=3 {
        cluster.kill9(id);
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("writer thread");
    }
    let acked = acked.lock().unwrap().clone();
    for id in 1..=3 {
        cluster.restart(id);
    }
    let (leader, _) = wait_for("a CP leader after the restart", LIMIT, || {
        cp_leader(&cluster, &[1, 2, 3])
    })
    .0;

    // Every acknowledged write is there, read linearizably through the leader.
    let addr = cluster.http(leader);
    let mut lost = Vec::new();
    for (key, value) in &acked {
        let (code, answer) = wait_for(&format!("read {key}"), LIMIT, || {
            match cp_get(&addr, key, "linearizable")? {
                (200, answer) => Ok((200, answer)),
                (code, answer) => Err(format!("{code}: {answer}")),
            }
        })
        .0;
        if code != 200 || cp_value(&answer).as_deref() != Some(value.as_str()) {
            lost.push(format!("{key}: expected {value}, read {answer}"));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost after kill -9 of every node: {lost:#?}",
        lost.len(),
        acked.len()
    );
}
