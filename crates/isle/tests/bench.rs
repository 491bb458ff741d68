//! `isle bench` in the users' protocols: against a real 3-node cluster, `isle bench cp` drives
//! the etcd v3 gRPC API (put, get, sget, txn) and `isle bench ap` drives RESP (set, get, incr,
//! sadd); every phase's JSON line must show work done and no error.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::{LocalCluster, cp_leader, wait_for};
use serde_json::Value;

/// Sends `SET bench:ready yes` over RESP; the reply's first line.
fn resp_set(addr: &str) -> Result<String, String> {
    let socket: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&socket, Duration::from_secs(1))
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"*3\r\n$3\r\nSET\r\n$11\r\nbench:ready\r\n$3\r\nyes\r\n")
        .map_err(|e| e.to_string())?;
    let mut reply = [0u8; 256];
    let n = stream.read(&mut reply).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&reply[..n]).trim_end().to_string())
}

/// Runs `isle bench ARGS`; its phase lines (JSON, not ratio lines), after checking it succeeded.
fn bench(args: &[&str]) -> Vec<Value> {
    let output = Command::new(common::isle_bin())
        .arg("bench")
        .args(args)
        .output()
        .expect("run isle bench");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        output.status.success(),
        "isle bench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    eprintln!("isle bench {args:?}:\n{stdout}");
    stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .filter(|line: &Value| line.get("ratio").is_none())
        .collect()
}

/// Every (op, clients) pair ran and each did work without an error.
fn check(lines: &[Value], bench_name: &str, ops: &[&str], clients: &[u64]) {
    assert_eq!(lines.len(), ops.len() * clients.len(), "{lines:#?}");
    for op in ops {
        for &n in clients {
            let line = lines
                .iter()
                .find(|l| l["op"] == *op && l["clients"] == n)
                .unwrap_or_else(|| panic!("no line for {op} at {n} clients: {lines:#?}"));
            assert_eq!(line["bench"], bench_name, "{line}");
            assert_eq!(line["system"], "isle", "{line}");
            assert!(line["ops"].as_u64().unwrap_or(0) > 0, "no ops done: {line}");
            assert_eq!(line["errors"], 0, "errors: {line}");
            assert!(line["ops_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{line}");
            assert!(
                line["p50_ms"].as_f64() <= line["p99_ms"].as_f64()
                    && line["p99_ms"].as_f64() <= line["max_ms"].as_f64(),
                "percentiles out of order: {line}"
            );
        }
    }
}

#[test]
fn bench_drives_grpc_and_resp_without_errors() {
    let cluster = LocalCluster::start_with(3, &["--bootstrap-expect", "3"]);
    let _logs = cluster.logs_on_panic();
    wait_for("a CP leader all agree on", Duration::from_secs(30), || {
        cp_leader(&cluster, &[1, 2, 3])
    });
    for id in 1..=3 {
        let addr = cluster.resp(id);
        wait_for(
            &format!("node {id} takes RESP writes"),
            Duration::from_secs(30),
            || match resp_set(&addr)?.as_str() {
                "+OK" => Ok(()),
                other => Err(other.to_string()),
            },
        );
    }
    let join = |of: &dyn Fn(u64) -> String| (1..=3).map(of).collect::<Vec<_>>().join(",");
    let grpc = join(&|id| cluster.grpc(id));
    let resp = join(&|id| cluster.resp(id));
    let json_out = cluster.dir.path().join("bench.jsonl");
    let json_out = json_out.to_str().expect("a UTF-8 temp path");

    let cp = bench(&[
        "cp",
        "--endpoints",
        &grpc,
        "--seconds",
        "1",
        "--clients",
        "1,4",
        "--ops",
        "put,get,sget,txn",
        "--keys",
        "100",
        "--json-out",
        json_out,
    ]);
    check(&cp, "cp", &["put", "get", "sget", "txn"], &[1, 4]);

    let ap = bench(&[
        "ap",
        "--endpoints",
        &resp,
        "--seconds",
        "1",
        "--clients",
        "1,4",
        "--keys",
        "100",
        "--json-out",
        json_out,
    ]);
    check(&ap, "ap", &["set", "get", "incr", "sadd"], &[1, 4]);

    let written = std::fs::read_to_string(json_out).expect("--json-out file");
    assert_eq!(written.lines().count(), 16, "{written}");
}
