//! Real `isle node` processes on loopback: startup, a 3|2 split and heal, partial and one-way
//! cuts, corrupt frames, and kill -9 with restart on the same data dir. Faults go through each
//! node's `/v1/faults` (the transport's fault layer); `netns.rs` makes the same split with the kernel.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::{LocalCluster, add_faults, heal, reachable_of, split, state_of, status, wait_for};
use isle_lab::{Node, NodeSpec, spare_port};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// Generous limits: CI is a loaded 2-core box. The measured times are printed.
const START_LIMIT: Duration = Duration::from_secs(20);
const DETECT_LIMIT: Duration = Duration::from_secs(10);

fn ids(values: &[u64]) -> BTreeSet<u64> {
    values.iter().copied().collect()
}

/// Waits until every node is Normal, holds quorum and hears all the others.
fn wait_all_normal(cluster: &LocalCluster, n: u64, limit: Duration) -> Duration {
    let (_, took) = wait_for("all nodes Normal with quorum", limit, || {
        for id in 1..=n {
            let s = status(&cluster.http(id))?;
            let others: BTreeSet<u64> = (1..=n).filter(|o| *o != id).collect();
            let healthy = state_of(&s) == "Normal"
                && s["quorum"]["held"] == json!(true)
                && ids(&reachable_of(&s)) == others
                && s["partition"]["kind"] == "none";
            if !healthy {
                return Err(format!(
                    "node {id}: {} reaches {:?}",
                    state_of(&s),
                    reachable_of(&s)
                ));
            }
        }
        Ok(())
    });
    took
}

#[test]
fn split_three_two_then_heal() {
    let cluster = LocalCluster::start(5);
    let took = wait_all_normal(&cluster, 5, START_LIMIT);
    println!("5 nodes Normal with quorum after {took:?}");
    // Detections while the nodes came up one by one are not the split's: count from here.
    let detected_before: Vec<f64> = (1..=5u64)
        .map(|id| {
            let text = common::metrics(&cluster.http(id)).expect("metrics");
            isle_lab::metrics::first(&text, "isle_partitions_detected_total").unwrap_or(0.0)
        })
        .collect();

    split(&cluster, &[1, 2, 3], &[4, 5]);
    let majority = [1, 2, 3];
    let minority = [4, 5];
    for id in 1..=5u64 {
        let (own, other, state, held) = if majority.contains(&id) {
            (&majority[..], &minority[..], "Degraded", true)
        } else {
            (&minority[..], &majority[..], "Emergency", false)
        };
        let (_, took) = wait_for(&format!("node {id} {state}"), DETECT_LIMIT, || {
            let s = status(&cluster.http(id))?;
            let expected_reach: BTreeSet<u64> = own.iter().copied().filter(|o| *o != id).collect();
            let sides = json!({"kind": "complete", "sides": [own, other]});
            if state_of(&s) == state
                && s["quorum"]["held"] == json!(held)
                && ids(&reachable_of(&s)) == expected_reach
                && s["partition"] == sides
            {
                Ok(())
            } else {
                Err(format!(
                    "{} {} {}",
                    state_of(&s),
                    s["partition"],
                    s["quorum_reason"]
                ))
            }
        });
        println!("node {id}: {state} (quorum held: {held}) after {took:?} (cumulative)");
    }

    heal(&cluster, 5);
    let took = wait_all_normal(&cluster, 5, START_LIMIT);
    println!("all Normal again {took:?} after heal");
    for id in 1..=5u64 {
        let s = status(&cluster.http(id)).expect("status");
        let transitions = s["transitions"].as_array().expect("transitions").clone();
        let path: Vec<(String, String)> = transitions
            .iter()
            .map(|t| {
                (
                    t["from"].as_str().unwrap().into(),
                    t["to"].as_str().unwrap().into(),
                )
            })
            .collect();
        // While links come back one by one a minority node may regain quorum (Emergency ->
        // Degraded) before the matrix is whole; either way the episode ends Reconciling -> Normal.
        let ending: Vec<&str> = path
            .iter()
            .rev()
            .take(2)
            .rev()
            .flat_map(|(from, to)| [from.as_str(), to.as_str()])
            .collect();
        let partitioned = ["Degraded", "Emergency"].contains(&ending[0]);
        assert!(
            partitioned && ending[1..] == ["Reconciling", "Reconciling", "Normal"],
            "node {id} did not return through Reconciling to Normal: {path:?}"
        );
        let expected = if id <= 3 { "Degraded" } else { "Emergency" };
        assert!(
            path.contains(&("PartitionDetected".into(), expected.into())),
            "node {id}: {path:?}"
        );
        let text = common::metrics(&cluster.http(id)).expect("metrics");
        let duration = isle_lab::metrics::first(&text, "isle_last_partition_duration_seconds")
            .expect("duration");
        let recovery =
            isle_lab::metrics::first(&text, "isle_last_recovery_seconds").expect("recovery");
        assert!(
            duration > 0.0 && recovery > 0.0,
            "node {id}: {duration} {recovery}"
        );
        let detected = isle_lab::metrics::first(&text, "isle_partitions_detected_total")
            .map(|total| total - detected_before[(id - 1) as usize]);
        assert_eq!(
            detected,
            Some(1.0),
            "node {id}: one split, one detection: {path:?}"
        );
        println!("node {id}: partition lasted {duration:.2}s, recovered in {recovery:.2}s");
    }
}

/// Waits until every node reports `expected` as its partition.
fn wait_all_partition(cluster: &LocalCluster, n: u64, expected: &Value) {
    for id in 1..=n {
        let (_, took) = wait_for(
            &format!("node {id} reports {expected}"),
            DETECT_LIMIT,
            || {
                let s = status(&cluster.http(id))?;
                if s["partition"] == *expected {
                    Ok(())
                } else {
                    Err(s["partition"].to_string())
                }
            },
        );
        println!("node {id}: {expected} after {took:?}");
    }
}

#[test]
fn partial_one_way_and_corrupt_links_are_told_apart() {
    let cluster = LocalCluster::start(3);
    wait_all_normal(&cluster, 3, START_LIMIT);

    // 1↔2 cut, both still reach 3: partial, naming the cut link, on every node.
    add_faults(
        &cluster.http(1),
        json!({"peer": 2, "direction": "both", "action": "drop"}),
    );
    wait_all_partition(&cluster, 3, &json!({"kind": "partial", "cut": [[1, 2]]}));
    let s = status(&cluster.http(3)).expect("status");
    assert_eq!(s["quorum"]["held"], json!(true), "node 3 reaches everyone");
    heal(&cluster, 3);
    wait_all_normal(&cluster, 3, START_LIMIT);

    // Node 1's messages to 2 are lost, 2's reach 1: asymmetric 1→2.
    add_faults(
        &cluster.http(1),
        json!({"peer": 2, "direction": "outbound", "action": "drop"}),
    );
    wait_all_partition(
        &cluster,
        3,
        &json!({"kind": "asymmetric", "one_way": [[1, 2]]}),
    );
    heal(&cluster, 3);
    wait_all_normal(&cluster, 3, START_LIMIT);

    // Every frame from 2 to 1 arrives corrupt: counted, never acted on, so 1 stops hearing 2.
    add_faults(
        &cluster.http(1),
        json!({"peer": 2, "direction": "inbound", "action": "corrupt"}),
    );
    wait_all_partition(
        &cluster,
        3,
        &json!({"kind": "asymmetric", "one_way": [[2, 1]]}),
    );
    let text = common::metrics(&cluster.http(1)).expect("metrics");
    let corrupt = isle_lab::metrics::sum(&text, "isle_net_frames_corrupt_total");
    assert!(corrupt > 0.0, "corrupt frames not counted:\n{text}");
    heal(&cluster, 3);
    wait_all_normal(&cluster, 3, START_LIMIT);
}

#[test]
fn killed_node_is_marked_unreachable_and_rejoins_as_the_same_member() {
    let mut cluster = LocalCluster::start(3);
    wait_all_normal(&cluster, 3, START_LIMIT);
    let before = status(&cluster.http(3)).expect("status");
    assert_eq!(before["incarnation"], json!(1));

    cluster.nodes[2].kill9();
    for id in [1, 2] {
        let (_, took) = wait_for(
            &format!("node {id} marks 3 unreachable"),
            DETECT_LIMIT,
            || {
                let s = status(&cluster.http(id))?;
                let complete = json!({"kind": "complete", "sides": [[1, 2], [3]]});
                let settled = state_of(&s) == "Degraded";
                if ids(&reachable_of(&s)) == ids(&[3 - id]) && s["partition"] == complete && settled
                {
                    Ok(())
                } else {
                    Err(format!("{} {}", state_of(&s), s["partition"]))
                }
            },
        );
        println!("node {id} saw node 3 die after {took:?}");
    }
    let s = status(&cluster.http(1)).expect("status");
    assert_eq!(s["quorum"]["held"], json!(true), "2 of 3 still hold quorum");

    cluster.nodes[2].restart().expect("start node 3 again");
    let took = wait_all_normal(&cluster, 3, START_LIMIT);
    println!("node 3 rejoined; all Normal after {took:?}");
    let after = status(&cluster.http(3)).expect("status");
    assert_eq!(after["node"], json!(3));
    assert_eq!(
        after["incarnation"],
        json!(2),
        "restart bumps the incarnation, keeps the id"
    );
    let peer_view = status(&cluster.http(1)).expect("status");
    let seen: Vec<&Value> = peer_view["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["id"] == 3)
        .collect();
    assert_eq!(seen.len(), 1, "node 3 is one member, not a new one");
    assert_eq!(seen[0]["incarnation"], json!(2));
}

/// One node on spare ports with no peers, fault injection allowed or not; returns once it
/// serves HTTP.
fn single_node(dir: &Path, fault_injection: bool) -> Node {
    let peer = spare_port();
    let http = std::iter::repeat_with(spare_port)
        .find(|port| *port != peer)
        .expect("a second spare port");
    let address = |port: u16| format!("127.0.0.1:{port}");
    let mut spec = NodeSpec::new(1, address(peer), address(http), dir.join("n1"));
    spec.fault_injection = fault_injection;
    spec.env = vec![("ISLE_LOG".into(), "info".into())];
    let mut node = Node::start(spec, Path::new(common::isle_bin())).expect("start node 1");
    if let Err(why) = node.wait_serving(START_LIMIT) {
        panic!("node up: {why}");
    }
    node
}

#[test]
fn faults_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = single_node(dir.path(), false);
    let spec = node.spec();
    let rule = json!({"peer": 2, "direction": "both", "action": "drop"});
    let (code, body) = common::http("POST", &spec.http, "/v1/faults", Some(&rule)).expect("post");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("--allow-fault-injection"), "{body}");
    let (code, body) =
        common::http("POST", &spec.http, "/v1/faults", Some(&json!({"x": 1}))).expect("post");
    assert_eq!(code, 400, "{body}");
    // The clock-skew fault too.
    let skew = json!({"skew_ms": 5000});
    let (code, body) =
        common::http("POST", &spec.http, "/v1/faults/clock", Some(&skew)).expect("post");
    assert_eq!(code, 403, "{body}");
}

#[test]
fn a_running_nodes_wall_clock_can_be_skewed_when_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = single_node(dir.path(), true);
    let spec = node.spec();
    let (code, body) = common::http("GET", &spec.http, "/v1/faults/clock", None).expect("get");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["skew_ms"],
        0
    );
    let skew = json!({"skew_ms": -30000});
    let (code, body) =
        common::http("POST", &spec.http, "/v1/faults/clock", Some(&skew)).expect("post");
    assert_eq!(code, 200, "{body}");
    let (_, body) = common::http("GET", &spec.http, "/v1/faults/clock", None).expect("get");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["skew_ms"],
        -30000
    );
    let absurd = json!({"skew_ms": i64::MAX});
    let (code, body) =
        common::http("POST", &spec.http, "/v1/faults/clock", Some(&absurd)).expect("post");
    assert_eq!(code, 400, "{body}");
}

#[test]
fn isle_local_starts_a_cluster_and_stops_it_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Ports base+1..=base+3, +1001.. (HTTP), +2001.. (gRPC); spread by pid so runs differ.
    // Below Linux's ephemeral range (32768+), so an outgoing connection cannot hold one.
    let base = 12_000 + (std::process::id() % 1_500) as u16 * 10;
    let local = std::process::Command::new(common::isle_bin())
        .args([
            "local",
            "--nodes",
            "3",
            "--base-port",
            &base.to_string(),
            "--dir",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn isle local");
    let http = |id: u16| format!("127.0.0.1:{}", base + 1000 + id);
    let (_, took) = wait_for("isle local cluster Normal", START_LIMIT, || {
        for id in 1..=3 {
            let s = status(&http(id))?;
            if state_of(&s) != "Normal" || reachable_of(&s).len() != 2 {
                return Err(format!("node {id}: {}", state_of(&s)));
            }
        }
        Ok(())
    });
    println!("isle local: 3 nodes Normal after {took:?}");
    // Ctrl-C: SIGINT to `isle local` alone, which then stops its nodes.
    let pid = i32::try_from(local.id()).expect("a pid fits in i32");
    kill(Pid::from_raw(pid), Signal::SIGINT).expect("SIGINT isle local");
    let output = local.wait_with_output().expect("wait for isle local");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "isle local exited {:?}: {stdout}",
        output.status
    );
    for id in 1..=3 {
        assert!(stdout.contains(&format!("node {id} stopped")), "{stdout}");
        assert!(
            status(&http(id)).is_err(),
            "node {id} still serving after Ctrl-C"
        );
    }
}
