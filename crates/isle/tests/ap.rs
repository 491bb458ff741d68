//! The AP keyspace on real processes: both sides of a 3|2 split accept writes to the same keys,
//! and after healing every replica converges — without any client reading — to what each
//! bucket's merge rule promises. Hinted handoff delivers to a node that was down, and hints
//! survive a restart of the node holding them.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{LocalCluster, heal, http_with_timeout, split, status, wait_for, wait_mesh};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(10);

fn call(method: &str, addr: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let (code, text) = http_with_timeout(method, addr, path, body, TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"));
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (code, value)
}

fn ok(method: &str, addr: &str, path: &str, body: Option<&Value>) -> Value {
    let (code, value) = call(method, addr, path, body);
    assert!(code == 200, "{method} {path} on {addr}: {code} {value}");
    value
}

fn put(addr: &str, bucket: &str, key: &str, body: Value) -> Value {
    ok("PUT", addr, &format!("/v1/ap/{bucket}/{key}"), Some(&body))
}

fn get(addr: &str, bucket: &str, key: &str) -> (u16, Value) {
    call("GET", addr, &format!("/v1/ap/{bucket}/{key}"), None)
}

fn post(addr: &str, bucket: &str, key: &str, op: &str, body: Value) -> Value {
    ok(
        "POST",
        addr,
        &format!("/v1/ap/{bucket}/{key}/{op}"),
        Some(&body),
    )
}

/// Every node's own copy of a key: node id → (digest, value).
fn copies(
    cluster: &LocalCluster,
    n: u64,
    bucket: &str,
    key: &str,
) -> BTreeMap<u64, (String, Value)> {
    (1..=n)
        .filter_map(|id| {
            let (code, value) = call(
                "GET",
                &cluster.http(id),
                &format!("/v1/ap-local/{bucket}/{key}"),
                None,
            );
            (code == 200).then(|| {
                (
                    id,
                    (
                        value["digest"].as_str().unwrap_or("").to_string(),
                        value["value"].clone(),
                    ),
                )
            })
        })
        .collect()
}

/// Ok(value) once exactly `replicas` nodes hold a copy of the key and all copies are equal.
fn converged(
    cluster: &LocalCluster,
    n: u64,
    replicas: usize,
    bucket: &str,
    key: &str,
) -> Result<Value, String> {
    let copies = copies(cluster, n, bucket, key);
    let digests: std::collections::BTreeSet<&String> = copies.values().map(|(d, _)| d).collect();
    if copies.len() == replicas && digests.len() == 1 {
        Ok(copies
            .values()
            .next()
            .map(|(_, v)| v.clone())
            .unwrap_or_default())
    } else {
        Err(format!("{bucket}/{key}: {copies:?}"))
    }
}

fn wait_cut(cluster: &LocalCluster, side: &[u64], other: &[u64]) {
    for &id in side {
        wait_for(
            &format!("node {id} to lose {other:?}"),
            Duration::from_secs(30),
            || {
                let reachable = common::reachable_of(&status(&cluster.http(id))?);
                if other.iter().any(|n| reachable.contains(n)) {
                    Err(format!(
                        "node {id} still hears some of {other:?}: {reachable:?}"
                    ))
                } else {
                    Ok(())
                }
            },
        );
    }
}

fn strings(value: &Value) -> Vec<String> {
    let mut out: Vec<String> = value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    out.sort();
    out
}

#[test]
fn both_sides_of_a_split_write_and_every_replica_converges_after_healing() {
    let cluster =
        LocalCluster::start_with(5, &["--bootstrap-expect", "5", "--aae-interval-ms", "1000"]);
    let _logs = cluster.logs_on_panic();
    let all = [1, 2, 3, 4, 5];
    wait_mesh(&cluster, &all);
    let (a, b) = (cluster.http(1), cluster.http(4));

    // Before the split: a value to overwrite from both sides, a cart, a key to delete.
    put(&a, "default", "s1", json!({"value": "v0"}));
    let ctx0 = get(&a, "default", "s1").1["context"].clone();
    post(
        &a,
        "default",
        "cart",
        "map-update",
        json!({"incr": {"apple": 1, "pear": 1}}),
    );
    put(&a, "default", "d1", json!({"value": "doomed"}));
    for key in ["s1", "cart", "d1"] {
        wait_for(
            &format!("{key} on 3 replicas"),
            Duration::from_secs(10),
            || converged(&cluster, 5, 3, "default", key),
        );
    }
    let d1_context = get(&a, "default", "d1").1["context"].clone();

    split(&cluster, &[1, 2, 3], &[4, 5]);
    wait_cut(&cluster, &[1, 2, 3], &[4, 5]);
    wait_cut(&cluster, &[4, 5], &[1, 2, 3]);

    // Both sides accept writes to the same keys (sloppy quorums: fallbacks hold hints).
    let left = put(
        &a,
        "default",
        "s1",
        json!({"value": "left", "context": ctx0}),
    );
    let right = put(
        &b,
        "default",
        "s1",
        json!({"value": "right", "context": ctx0}),
    );
    println!(
        "s1: left acked by {} , right acked by {}",
        left["replicas"], right["replicas"]
    );
    put(&a, "lww", "l1", json!({"value": "earlier"}));
    // A later wall-clock millisecond, so "later" is later by the stamps and not only by order.
    std::thread::sleep(Duration::from_millis(20));
    put(&b, "lww", "l1", json!({"value": "later"}));
    for i in 0..5 {
        post(
            &cluster.http(1 + i % 3),
            "default",
            "c1",
            "incr",
            json!({"by": 1}),
        );
    }
    for i in 0..3 {
        post(
            &cluster.http(4 + i % 2),
            "default",
            "c1",
            "incr",
            json!({"by": 10}),
        );
    }
    post(
        &a,
        "default",
        "cart",
        "map-update",
        json!({"remove": ["pear"], "incr": {"milk": 2}}),
    );
    post(
        &b,
        "default",
        "cart",
        "map-update",
        json!({"incr": {"apple": 2, "bread": 1}}),
    );
    ok(
        "DELETE",
        &a,
        &format!(
            "/v1/ap/default/d1?context={}",
            d1_context.as_str().unwrap_or("")
        ),
        None,
    );

    // Strict writes make no hints: the replicas across the cut can only learn these from
    // anti-entropy.
    let mut strict_keys = Vec::new();
    for i in 0..20 {
        let key = format!("strict{i}");
        let path = format!("/v1/ap/default/{key}?w=one&strict=true");
        let (code, body) = call("PUT", &a, &path, Some(&json!({"value": "only-on-a"})));
        match code {
            200 => strict_keys.push(key),
            503 => {} // no primary of this key on side A: refused, as strict asks
            _ => panic!("strict put {key}: {code} {body}"),
        }
    }
    assert!(
        !strict_keys.is_empty(),
        "some keys have a primary on the majority side"
    );

    heal(&cluster, 5);
    let healed = Instant::now();
    wait_mesh(&cluster, &all);

    // No client reads from here until every replica agrees: hinted handoff and anti-entropy
    // alone must bring them together. Replicas on one side may agree before the other side's
    // writes arrive, so first wait for every hint to be handed off.
    wait_for("every hint handed off", Duration::from_secs(60), || {
        let pending: u64 = all
            .iter()
            .map(|&id| {
                status(&cluster.http(id)).map(|s| s["ap"]["hints_pending"].as_u64().unwrap_or(0))
            })
            .sum::<Result<u64, String>>()?;
        if pending == 0 {
            Ok(())
        } else {
            Err(format!("{pending} hints pending"))
        }
    });
    let mut finals = BTreeMap::new();
    for (bucket, key) in [
        ("default", "s1"),
        ("lww", "l1"),
        ("default", "c1"),
        ("default", "cart"),
        ("default", "d1"),
    ] {
        let (value, _) = wait_for(
            &format!("{bucket}/{key} to converge"),
            Duration::from_secs(60),
            || converged(&cluster, 5, 3, bucket, key),
        );
        finals.insert(key, value);
    }
    for key in &strict_keys {
        let (value, _) = wait_for(
            &format!("{key} to reach every replica"),
            Duration::from_secs(60),
            || converged(&cluster, 5, 3, "default", key),
        );
        assert_eq!(strings(&value["values"]), vec!["only-on-a"]);
    }
    println!(
        "every replica of every key converged {:?} after healing ({} strict keys repaired by anti-entropy alone)",
        healed.elapsed(),
        strict_keys.len()
    );

    assert_eq!(
        strings(&finals["s1"]["values"]),
        vec!["left", "right"],
        "siblings: {}",
        finals["s1"]
    );
    assert_eq!(
        strings(&finals["l1"]["values"]),
        vec!["later"],
        "lww: {}",
        finals["l1"]
    );
    assert_eq!(
        finals["c1"]["counter"],
        json!(35),
        "counter: {}",
        finals["c1"]
    );
    assert_eq!(
        finals["cart"]["fields"],
        json!({"apple": 3, "bread": 1, "milk": 2}),
        "cart: {}",
        finals["cart"]
    );
    assert_eq!(
        finals["d1"]["absent"],
        json!(true),
        "deleted key: {}",
        finals["d1"]
    );

    // A client sees both siblings and resolves them with one write carrying the merged context.
    let (code, read) = get(&cluster.http(5), "default", "s1");
    assert_eq!(code, 200, "{read}");
    assert_eq!(strings(&read["values"]), vec!["left", "right"]);
    put(
        &cluster.http(5),
        "default",
        "s1",
        json!({"value": "resolved", "context": read["context"]}),
    );
    let (_, read) = get(&a, "default", "s1");
    assert_eq!(strings(&read["values"]), vec!["resolved"], "{read}");
    let (code, read) = get(&b, "default", "d1");
    assert_eq!(code, 404, "a deleted key stays deleted: {read}");

    // The state machine leaves Reconciling once replicas agree.
    for id in all {
        wait_for(
            &format!("node {id} back to Normal"),
            Duration::from_secs(30),
            || {
                let status = status(&cluster.http(id))?;
                if common::state_of(&status) == "Normal" {
                    Ok(())
                } else {
                    Err(status["state"].to_string())
                }
            },
        );
    }
    let mut repaired = 0.0;
    let mut delivered = 0.0;
    for id in all {
        let text = common::metrics(&cluster.http(id)).unwrap_or_default();
        repaired +=
            isle_lab::metrics::first(&text, "isle_ap_aae_keys_repaired_total").unwrap_or(0.0);
        delivered +=
            isle_lab::metrics::first(&text, "isle_ap_hints_delivered_total").unwrap_or(0.0);
    }
    println!("hints delivered: {delivered}, keys repaired by anti-entropy: {repaired}");
    assert!(
        delivered + repaired > 0.0,
        "something must have reconciled the replicas"
    );
}

fn hints_for(cluster: &LocalCluster, id: u64, owner: u64) -> u64 {
    let status = status(&cluster.http(id)).unwrap_or_default();
    status["ap"]["hints_by_owner"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pair| pair[0] == json!(owner))
        .filter_map(|pair| pair[1].as_u64())
        .sum()
}

#[test]
fn a_returning_node_receives_its_hints_even_after_their_holders_restart() {
    // Anti-entropy off: only hinted handoff can bring node 5 the writes it missed.
    let mut cluster =
        LocalCluster::start_with(5, &["--bootstrap-expect", "5", "--aae-interval-ms", "0"]);
    let _logs = cluster.logs_on_panic();
    wait_mesh(&cluster, &[1, 2, 3, 4, 5]);
    cluster.kill9(5);
    wait_cut(&cluster, &[1, 2, 3, 4], &[5]);
    let a = cluster.http(1);
    for i in 0..40 {
        put(
            &a,
            "default",
            &format!("h{i}"),
            json!({"value": format!("value {i}")}),
        );
    }
    let holders: BTreeMap<u64, u64> = (1..=4)
        .map(|id| (id, hints_for(&cluster, id, 5)))
        .filter(|(_, n)| *n > 0)
        .collect();
    println!("hints held for node 5: {holders:?}");
    assert!(
        !holders.is_empty(),
        "some of 40 keys must have node 5 as a replica"
    );

    for &id in holders.keys() {
        cluster.restart(id);
    }
    wait_mesh(&cluster, &[1, 2, 3, 4]);
    for (&id, &count) in &holders {
        assert_eq!(
            hints_for(&cluster, id, 5),
            count,
            "node {id}'s hints survive its restart"
        );
    }

    cluster.restart(5);
    let back = Instant::now();
    wait_mesh(&cluster, &[1, 2, 3, 4, 5]);
    wait_for("every hint delivered", Duration::from_secs(30), || {
        let left: u64 = (1..=4).map(|id| hints_for(&cluster, id, 5)).sum();
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} hints left"))
        }
    });
    println!(
        "hints delivered {:?} after node 5 came back",
        back.elapsed()
    );
    let mut on_five = 0;
    for i in 0..40 {
        let key = format!("h{i}");
        let value = wait_for(
            &format!("{key} on 3 replicas"),
            Duration::from_secs(10),
            || converged(&cluster, 5, 3, "default", &key),
        )
        .0;
        assert_eq!(strings(&value["values"]), vec![format!("value {i}")]);
        if copies(&cluster, 5, "default", &key).contains_key(&5) {
            on_five += 1;
        }
    }
    println!("node 5 received {on_five} of 40 keys by hinted handoff");
    assert!(on_five > 0);
}

#[test]
fn tombstones_are_dropped_only_once_every_replica_holds_them() {
    let mut cluster = LocalCluster::start_with(
        3,
        &[
            "--bootstrap-expect",
            "3",
            "--tombstone-grace-ms",
            "300",
            "--tombstone-gc-interval-ms",
            "300",
        ],
    );
    let _logs = cluster.logs_on_panic();
    wait_mesh(&cluster, &[1, 2, 3]);
    let a = cluster.http(1);
    put(&a, "default", "gone", json!({"value": "soon deleted"}));
    put(&a, "default", "kept", json!({"value": "stays"}));

    // With one replica down the tombstone cannot be collected: it must wait for all three.
    cluster.kill9(3);
    wait_cut(&cluster, &[1, 2], &[3]);
    ok("DELETE", &a, "/v1/ap/default/gone?w=quorum", None);
    // Nothing to wait for here: the check is that nothing happens. 1.5 s is five collector
    // intervals past the grace period.
    std::thread::sleep(Duration::from_millis(1500));
    let held = copies(&cluster, 2, "default", "gone");
    assert_eq!(
        held.len(),
        2,
        "tombstone kept while a replica is down: {held:?}"
    );

    cluster.restart(3);
    wait_mesh(&cluster, &[1, 2, 3]);
    let (_, took) = wait_for(
        "the tombstone dropped on every replica",
        Duration::from_secs(30),
        || {
            let held = copies(&cluster, 3, "default", "gone");
            if held.is_empty() {
                Ok(())
            } else {
                Err(format!("{held:?}"))
            }
        },
    );
    println!("tombstone dropped {took:?} after the last replica returned");
    let (code, body) = get(&a, "default", "gone");
    assert_eq!(code, 404, "{body}");
    assert!(
        converged(&cluster, 3, 3, "default", "kept").is_ok(),
        "live keys stay"
    );
    // An increment retried with its request id through every node counts once.
    for id in [1, 2, 3, 1] {
        post(
            &cluster.http(id),
            "default",
            "visits",
            "incr",
            json!({"by": 5, "request_id": "client-9:1"}),
        );
    }
    let (_, read) = get(&cluster.http(2), "default", "visits");
    assert_eq!(read["value"], json!(5), "{read}");

    let reaped: f64 = (1..=3)
        .map(|id| {
            isle_lab::metrics::first(
                &common::metrics(&cluster.http(id)).unwrap_or_default(),
                "isle_ap_tombstones_reaped_total",
            )
            .unwrap_or(0.0)
        })
        .sum();
    assert!(reaped >= 1.0, "reaped {reaped}");
}

#[test]
fn buckets_keep_their_own_replica_counts_and_their_trees_agree() {
    let cluster = LocalCluster::start_with(
        3,
        &[
            "--bootstrap-expect",
            "3",
            "--aae-interval-ms",
            "500",
            "--ap-bucket",
            "default=siblings:3",
            "--ap-bucket",
            "solo=lww:1",
            "--ap-bucket",
            "pair=siblings:2",
        ],
    );
    let _logs = cluster.logs_on_panic();
    wait_mesh(&cluster, &[1, 2, 3]);
    let a = cluster.http(1);
    for i in 0..10 {
        for bucket in ["default", "solo", "pair"] {
            put(
                &a,
                bucket,
                &format!("k{i}"),
                json!({"value": format!("{bucket} {i}")}),
            );
        }
    }
    for i in 0..10 {
        for (bucket, n) in [("default", 3), ("solo", 1), ("pair", 2)] {
            let key = format!("k{i}");
            wait_for(
                &format!("{bucket}/{key} on {n} replicas"),
                Duration::from_secs(20),
                || converged(&cluster, 3, n, bucket, &key),
            );
        }
    }
    // Trees of different replica counts never compare with each other: every node reaches in
    // sync and Normal (no perpetual divergence).
    for id in 1..=3 {
        let http = cluster.http(id);
        wait_for(
            &format!("node {id} in sync and Normal"),
            Duration::from_secs(20),
            || {
                let text = common::metrics(&http)?;
                let in_sync = isle_lab::metrics::first(&text, "isle_ap_aae_in_sync");
                let state = common::state_of(&status(&http)?).to_string();
                if in_sync == Some(1.0) && state == "Normal" {
                    Ok(())
                } else {
                    Err(format!("in sync {in_sync:?}, state {state}"))
                }
            },
        );
    }
}
