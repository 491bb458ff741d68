//! AP writes acknowledged at W=quorum survive a kill -9 of the node that coordinated them,
//! although the coordinator sends each new state to the other replicas before its own copy is
//! fsynced; and its next incarnation mints under a new actor id, so increments it acknowledges
//! after the restart add to those before instead of reusing their counter slot.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LocalCluster, http_with_timeout, wait_for, wait_mesh};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(10);

/// `Some(body)` when the request was answered 200.
fn ok(method: &str, addr: &str, path: &str, body: Option<&Value>) -> Option<Value> {
    match http_with_timeout(method, addr, path, body, TIMEOUT) {
        Ok((200, text)) => serde_json::from_str(&text).ok(),
        _ => None,
    }
}

/// Node `id`'s own copy of a key, if it holds one.
fn local(cluster: &LocalCluster, id: u64, key: &str) -> Option<Value> {
    ok(
        "GET",
        &cluster.http(id),
        &format!("/v1/ap-local/default/{key}"),
        None,
    )
    .map(|copy| copy["value"].clone())
}

#[test]
fn writes_acked_at_quorum_survive_kill9_of_their_coordinator() {
    let mut cluster = LocalCluster::start_with(3, &["--bootstrap-expect", "3"]);
    let _logs = cluster.logs_on_panic();
    wait_mesh(&cluster, &[1, 2, 3]);
    // With N=3 on 3 nodes every node is a primary of every key: node 1 coordinates them all.
    let coordinator = cluster.http(1);
    let stop = Arc::new(AtomicBool::new(false));
    let acked_keys = Arc::new(Mutex::new(BTreeSet::new()));
    let (acked_incr, tried_incr) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (addr, stop) = (coordinator.clone(), Arc::clone(&stop));
            let (keys, acked, tried) = (
                Arc::clone(&acked_keys),
                Arc::clone(&acked_incr),
                Arc::clone(&tried_incr),
            );
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("d{t}-{i}");
                    let path = format!("/v1/ap/default/{key}?w=quorum");
                    if ok("PUT", &addr, &path, Some(&json!({"value": key.clone()}))).is_some() {
                        keys.lock().unwrap_or_else(|e| e.into_inner()).insert(key);
                    }
                    tried.fetch_add(1, Ordering::Relaxed);
                    let path = "/v1/ap/default/hits/incr?w=quorum";
                    if ok("POST", &addr, path, Some(&json!({"by": 1}))).is_some() {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    wait_for(
        "writes acknowledged before the crash",
        Duration::from_secs(30),
        || {
            let n = acked_incr.load(Ordering::Relaxed);
            if n >= 200 {
                Ok(())
            } else {
                Err(format!("{n} increments acknowledged"))
            }
        },
    );
    // Killed while the writers are mid-flight: some states are on the other replicas, not yet
    // fsynced here.
    cluster.kill9(1);
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        let _ = writer.join();
    }
    let before = acked_incr.load(Ordering::Relaxed);
    cluster.restart(1);
    wait_mesh(&cluster, &[1, 2, 3]);
    // The new incarnation coordinates more increments of the same counter.
    let after = 50;
    for _ in 0..after {
        let done = ok(
            "POST",
            &coordinator,
            "/v1/ap/default/hits/incr?w=quorum",
            Some(&json!({"by": 1})),
        );
        assert!(done.is_some(), "an increment after the restart");
    }
    let tried = tried_incr.load(Ordering::Relaxed) + after;
    let acked = before + after;
    let keys = acked_keys.lock().unwrap_or_else(|e| e.into_inner()).clone();
    println!(
        "{} puts and {before} increments acknowledged before the kill",
        keys.len()
    );
    for key in &keys {
        let (value, _) = wait_for(
            &format!("{key} read at R=all"),
            Duration::from_secs(30),
            || {
                ok(
                    "GET",
                    &coordinator,
                    &format!("/v1/ap/default/{key}?r=all"),
                    None,
                )
                .ok_or_else(|| format!("{key}: no answer at R=all"))
            },
        );
        assert_eq!(
            value["values"],
            json!([key]),
            "an acknowledged write is lost"
        );
    }
    // Every replica converges (anti-entropy) on a count holding every acknowledged increment.
    wait_for(
        "the counter converged on every replica",
        Duration::from_secs(30),
        || {
            let copies: Vec<Option<Value>> =
                (1..=3).map(|id| local(&cluster, id, "hits")).collect();
            let counts: BTreeSet<u64> = copies
                .iter()
                .filter_map(|copy| copy.as_ref().and_then(|c| c["counter"].as_u64()))
                .collect();
            match (counts.len(), counts.first()) {
                (1, Some(&n)) if copies.iter().all(Option::is_some) => {
                    assert!(
                        (acked..=tried).contains(&n),
                        "counter {n}: {acked} increments acknowledged, {tried} tried"
                    );
                    Ok(())
                }
                _ => Err(format!("copies {copies:?}")),
            }
        },
    );
}

/// Every node killed with -9 at once under a write load: each write acknowledged at W=quorum
/// was fsynced by two replicas (through the AP log), so after the restart at least two nodes'
/// own copies hold it, before any anti-entropy could have repaired a third.
#[test]
fn writes_acked_at_quorum_survive_kill9_of_every_node() {
    let mut cluster = LocalCluster::start_with(3, &["--bootstrap-expect", "3"]);
    let _logs = cluster.logs_on_panic();
    wait_mesh(&cluster, &[1, 2, 3]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let writers: Vec<_> = (0..6u64)
        .map(|t| {
            let addr = cluster.http(t % 3 + 1);
            let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("all{t}-{i}");
                    let path = format!("/v1/ap/default/{key}?w=quorum");
                    if ok("PUT", &addr, &path, Some(&json!({"value": key.clone()}))).is_some() {
                        acked.lock().unwrap_or_else(|e| e.into_inner()).insert(key);
                    }
                }
            })
        })
        .collect();
    wait_for(
        "writes acknowledged before the crash",
        Duration::from_secs(30),
        || {
            let n = acked.lock().unwrap_or_else(|e| e.into_inner()).len();
            if n >= 600 {
                Ok(())
            } else {
                Err(format!("{n} writes acknowledged"))
            }
        },
    );
    for id in 1..=3 {
        cluster.kill9(id);
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        let _ = writer.join();
    }
    let keys = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for id in 1..=3 {
        cluster.restart(id);
    }
    println!(
        "{} writes acknowledged before every node was killed",
        keys.len()
    );
    for key in &keys {
        let (holders, _) = wait_for(
            &format!("{key} on two replicas"),
            Duration::from_secs(30),
            || {
                let holders: Vec<u64> = (1..=3)
                    .filter(|&id| {
                        local(&cluster, id, key)
                            .is_some_and(|v| v["values"] == json!([key.as_str()]))
                    })
                    .collect();
                if holders.len() >= 2 {
                    Ok(holders)
                } else {
                    Err(format!("{key} held by {holders:?} only"))
                }
            },
        );
        assert!(holders.len() >= 2);
    }
}
