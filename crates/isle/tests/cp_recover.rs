//! Recovery after a permanent loss of quorum: two of three voters are gone for good, the
//! survivor refuses writes (no quorum), `isle recover` makes it the sole voter, it serves
//! every key it had and takes writes again, and a wiped node rejoins through membership.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{LocalCluster, cp_get, cp_leader, cp_put, cp_value, wait_for};
use isle_lab::Node;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(20);

fn put_until_ok(addr: &str, key: &str, value: &str) {
    let body = json!({"key": key, "value": value});
    wait_for(
        &format!("put {key}={value} via {addr}"),
        LIMIT,
        || match cp_put(addr, &body)? {
            (200, _) => Ok(()),
            (code, answer) => Err(format!("{code}: {answer}")),
        },
    );
}

fn post_until_ok(addr: &str, path: &str, body: &Value) -> Value {
    let (answer, _) =
        wait_for(
            &format!("POST {path} {body}"),
            LIMIT,
            || match common::http_with_timeout(
                "POST",
                addr,
                path,
                Some(body),
                Duration::from_secs(30),
            )? {
                (200, text) => Ok(serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)),
                (code, text) => Err(format!("{code}: {text}")),
            },
        );
    answer
}

#[test]
fn survivor_recovers_the_group_after_a_permanent_loss_of_quorum() {
    let mut cluster = LocalCluster::start_with(3, &["--bootstrap-expect", "3"]);
    let _logs = cluster.logs_on_panic();
    let (leader, _) = wait_for("a CP leader", LIMIT, || cp_leader(&cluster, &[1, 2, 3])).0;
    let survivor = leader;
    let survivor_http = cluster.http(survivor);
    put_until_ok(&survivor_http, "a", "1");
    put_until_ok(&survivor_http, "b", "2");

    // Two voters are lost for good.
    let lost: Vec<u64> = (1..=3).filter(|id| *id != survivor).collect();
    for id in &lost {
        cluster.kill9(*id);
    }
    let (refusal, took) = wait_for("the survivor refuses writes", LIMIT, || {
        match cp_put(&survivor_http, &json!({"key": "c", "value": "3"}))? {
            (503, answer) if answer["kind"] == "NoQuorum" => Ok(answer),
            (code, answer) => Err(format!("{code}: {answer}")),
        }
    });
    println!(
        "survivor {survivor} refuses after {took:?}: {}",
        refusal["error"]
    );

    // Offline recovery on the survivor.
    cluster.kill9(survivor);
    let data_dir = cluster.node(survivor).spec().data_dir.clone();
    let refused = std::process::Command::new(common::isle_bin())
        .arg("recover")
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .expect("run isle recover");
    assert!(
        !refused.status.success(),
        "recover must ask for confirmation first"
    );
    let recovered = std::process::Command::new(common::isle_bin())
        .arg("recover")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--yes-the-others-are-gone")
        .output()
        .expect("run isle recover");
    let report = String::from_utf8_lossy(&recovered.stdout);
    assert!(
        recovered.status.success(),
        "isle recover failed: {report}{}",
        String::from_utf8_lossy(&recovered.stderr)
    );
    println!("{report}");

    // The survivor alone is the group: it keeps what it had and takes writes.
    cluster.restart(survivor);
    put_until_ok(&survivor_http, "c", "3");
    for (key, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
        let (code, answer) = cp_get(&survivor_http, key, "linearizable").expect("get");
        assert_eq!(
            (code, cp_value(&answer).as_deref()),
            (200, Some(value)),
            "{key}: {answer}"
        );
    }

    // A lost node comes back wiped and rejoins through membership.
    let rejoining = lost[0];
    let mut spec = cluster.node(rejoining).spec().clone();
    std::fs::remove_dir_all(&spec.data_dir).expect("wipe the lost node's data dir");
    spec.flags
        .retain(|flag| flag != "--bootstrap-expect" && flag != "3");
    cluster.nodes[(rejoining - 1) as usize] =
        Node::start(spec, Path::new(common::isle_bin())).expect("start the wiped node");
    cluster
        .wait_serving(rejoining, LIMIT)
        .expect("rejoining node serves");
    post_until_ok(
        &survivor_http,
        "/v1/cp/members",
        &json!({"AddLearner": rejoining}),
    );
    let membership = post_until_ok(
        &survivor_http,
        "/v1/cp/members",
        &json!({"Promote": rejoining}),
    );
    let mut voters: Vec<u64> = membership["voters"]
        .as_array()
        .expect("voters")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    voters.sort_unstable();
    let mut expected = vec![survivor, rejoining];
    expected.sort_unstable();
    assert_eq!(voters, expected, "{membership}");
    let rejoined_http = cluster.http(rejoining);
    wait_for("the rejoined node replicates every key", LIMIT, || {
        let (_, answer) = cp_get(&rejoined_http, "c", "stale")?;
        match cp_value(&answer).as_deref() {
            Some("3") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    put_until_ok(&rejoined_http, "d", "4");
}

#[test]
fn a_follower_far_behind_catches_up_from_a_snapshot() {
    let mut cluster =
        LocalCluster::start_with(3, &["--bootstrap-expect", "3", "--snapshot-every", "50"]);
    let _logs = cluster.logs_on_panic();
    let (leader, _) = wait_for("a CP leader", LIMIT, || cp_leader(&cluster, &[1, 2, 3])).0;
    let behind = (1..=3).find(|id| *id != leader).expect("a follower");
    let leader_http = cluster.http(leader);
    put_until_ok(&leader_http, "k-0", "0");
    cluster.kill9(behind);
    // Far more entries than the leader keeps behind its snapshots: the log it would need is gone.
    for i in 1..=300 {
        put_until_ok(&leader_http, &format!("k-{i}"), &i.to_string());
    }
    // Snapshots and purges run in the background: restart the follower only once the leader
    // has purged past everything the follower holds.
    let (status, _) = wait_for("the leader to purge its early log", LIMIT, || {
        let status = common::cp_status(&leader_http)?;
        match status["purged_index"].as_u64() {
            Some(purged) if purged > 10 => Ok(status),
            _ => Err(format!("{status}")),
        }
    });
    println!("leader {leader}: {status}");
    cluster.restart(behind);
    let behind_http = cluster.http(behind);
    let (_, took) = wait_for("the restarted follower catches up", LIMIT, || {
        let (_, answer) = cp_get(&behind_http, "k-300", "stale")?;
        match cp_value(&answer).as_deref() {
            Some("300") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    println!("node {behind} caught up {took:?} after restart");
    let (code, answer) = common::http(
        "GET",
        &behind_http,
        "/v1/cp/get?key=k-&prefix=true&consistency=stale",
        None,
    )
    .expect("prefix read");
    assert_eq!(code, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(answer["count"], 301, "every key on the caught-up follower");
    let log = std::fs::read_to_string(&cluster.node(behind).spec().log).unwrap_or_default();
    // openraft logs each snapshot it installs; the log entries the follower missed were
    // purged on the leader, so nothing but a snapshot could have brought it up to date.
    assert!(
        log.contains("install_full_snapshot"),
        "node {behind} caught up without installing a snapshot: the test did not test it"
    );
}

#[test]
fn a_node_left_without_quorum_fences_itself_and_exits() {
    let flags = [
        "--bootstrap-expect",
        "3",
        "--self-fence-after-ms",
        "1500",
        "--self-fence-exit",
    ];
    let mut cluster = LocalCluster::start_with(3, &flags);
    let _logs = cluster.logs_on_panic();
    wait_for("a CP leader", LIMIT, || cp_leader(&cluster, &[1, 2, 3]));
    put_until_ok(&cluster.http(3), "x", "1");
    cluster.kill9(1);
    cluster.kill9(2);
    let (_, took) = wait_for("node 3 fences itself and exits", LIMIT, || {
        if cluster.nodes[2].running() {
            Err("still running".to_string())
        } else {
            Ok(())
        }
    });
    println!("node 3 exited {took:?} after losing its quorum (detection ~1 s + 1.5 s limit)");
    let log = std::fs::read_to_string(&cluster.node(3).spec().log).unwrap_or_default();
    assert!(
        log.contains("fenced itself"),
        "node 3 exited for another reason:\n{log}"
    );
}
