//! etcd compatibility: Debian's `etcdctl` (ETCDCTL_API=3) runs one script — put, get by key and
//! prefix, del, interactive txn, watch, lease grant/keep-alive/timetolive/revoke, lock (with a
//! waiting second locker), elect and observe, endpoint status/health — against a 3-node Isle
//! cluster's etcd v3 gRPC API, and, when `etcd` (etcd-server) is installed, against a real
//! single-node etcd; the answers must match once lease ids, revisions, member ids and timings
//! are normalised. A second test kills two of three members of each and compares what the
//! survivor answers (watch, endpoint status, serializable get, a put requiring a leader).
//! Skips (with a message) when `etcdctl` is not installed, unless `CI` is set.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{LocalCluster, installed, require, wait_for};
use isle_lab::spare_port;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// `etcdctl` pointed at `endpoints`.
fn etcdctl(endpoints: &str) -> Command {
    let mut command = Command::new("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "--command-timeout=20s"]);
    command
}

/// Runs `etcdctl ARGS` (feeding `stdin`), returns stdout; panics with stderr on failure.
fn run(endpoints: &str, args: &[&str], stdin: Option<&str>) -> String {
    run_capturing(endpoints, args, stdin).0
}

/// Runs `etcdctl ARGS` to completion, feeding `stdin`.
fn output(endpoints: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = etcdctl(endpoints)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("etcdctl output")
}

/// As [`run`], returning (stdout, stderr).
fn run_capturing(endpoints: &str, args: &[&str], stdin: Option<&str>) -> (String, String) {
    let output = output(endpoints, args, stdin);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        output.status.success(),
        "etcdctl {args:?} against {endpoints} failed: {stderr}\nstdout: {stdout}"
    );
    (stdout, stderr)
}

/// Runs `etcdctl ARGS` (feeding `stdin`) that must fail; returns the `Error: ...` lines it
/// printed (the client's retry warnings, with timestamps and ids, are left out).
fn run_failing(endpoints: &str, args: &[&str], stdin: Option<&str>) -> String {
    let output = output(endpoints, args, stdin);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        !output.status.success(),
        "etcdctl {args:?} against {endpoints} should have failed; stderr: {stderr}"
    );
    stderr
        .lines()
        .filter(|line| line.starts_with("Error:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A background `etcdctl` whose stdout lines arrive on a channel.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Background {
    fn spawn(endpoints: &str, args: &[&str]) -> Background {
        let mut child = etcdctl(endpoints)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcdctl");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Background { child, lines }
    }

    /// The next `n` lines (panics after `limit`).
    fn take(&self, n: usize, limit: Duration, what: &str) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(_) => panic!("{what}: got only {out:?} within {limit:?}"),
            }
        }
        out
    }

    /// Whether a line arrives within `wait`.
    fn quiet_for(&self, wait: Duration) -> bool {
        self.lines.recv_timeout(wait).is_err()
    }

    /// SIGTERM (etcdctl then unlocks / resigns and closes its session), and reap.
    fn stop(mut self) {
        let _ = terminate(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM to a process this test started.
fn terminate(pid: u32) -> Result<(), String> {
    let raw = i32::try_from(pid).map_err(|e| format!("pid {pid}: {e}"))?;
    kill(Pid::from_raw(raw), Signal::SIGTERM).map_err(|e| format!("SIGTERM {pid}: {e}"))
}

/// Replaces what legitimately differs between two servers: lease ids (and the lock/election
/// keys built from them), remaining TTLs, timings and endpoint addresses.
fn normalise(text: &str, endpoints: &str) -> String {
    let mut text = text.to_string();
    for endpoint in endpoints.split(',') {
        text = text.replace(endpoint, "<EP>");
    }
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words: Vec<String> = line.split(' ').map(String::from).collect();
        for i in 0..words.len() {
            if i > 0 && words[i - 1] == "lease" && words[i].bytes().all(|b| b.is_ascii_hexdigit()) {
                words[i] = "<ID>".into();
            }
            if let Some(start) = words[i].find("remaining(") {
                words[i] = format!("{}remaining(<N>s),", &words[i][..start]);
            }
            if i > 1 && words[i - 2] == "took" && words[i - 1] == "=" {
                words[i] = "<T>".into();
            }
        }
        let mut line = words.join(" ");
        for prefix in ["mylock2/", "myelection/"] {
            if line.starts_with(prefix) {
                line = format!("{prefix}<ID>");
            }
        }
        if line.len() == 16 && line.bytes().all(|b| b.is_ascii_hexdigit()) {
            line = "<ID>".into();
        }
        out.push(line);
    }
    out.join("\n")
}

/// The script; returns (step, normalised output) pairs.
fn script(endpoints: &str) -> Vec<(String, String)> {
    let mut steps = Vec::new();
    let mut step = |name: &str, output: String| {
        steps.push((name.to_string(), normalise(output.trim_end(), endpoints)));
    };
    let e = endpoints;
    step("put foo", run(e, &["put", "foo", "bar"], None));
    step("get foo", run(e, &["get", "foo"], None));
    step("put foo2", run(e, &["put", "foo2", "baz"], None));
    step(
        "put prev-kv",
        run(e, &["put", "foo2", "qux", "--prev-kv"], None),
    );
    step("get --prefix", run(e, &["get", "--prefix", "foo"], None));
    step(
        "get --prefix --keys-only --limit",
        run(
            e,
            &["get", "--prefix", "foo", "--keys-only", "--limit", "1"],
            None,
        ),
    );
    step(
        "get --from-key --sort-by",
        run(
            e,
            &[
                "get",
                "--from-key",
                "a",
                "--sort-by=MODIFY",
                "--order=DESCEND",
            ],
            None,
        ),
    );
    step("get missing", run(e, &["get", "nope"], None));
    step("del foo2", run(e, &["del", "foo2"], None));
    step("get after del", run(e, &["get", "--prefix", "foo"], None));
    let txn_ok = "value(\"foo\") = \"bar\"\nversion(\"foo\") > \"0\"\n\nput t1 yes\nget foo\n\nput t1 no\n\n";
    step("txn success", run(e, &["txn", "-i"], Some(txn_ok)));
    let txn_fail = "value(\"foo\") = \"nope\"\n\nput t2 yes\n\nput t2 no\ndel t1\n\n";
    step("txn failure", run(e, &["txn", "-i"], Some(txn_fail)));
    step("get t", run(e, &["get", "--prefix", "t"], None));

    // Refused writes: the code and message etcd's clients match on.
    step(
        "put with an unknown lease",
        run_failing(e, &["put", "l1", "v", "--lease=1234abcd"], None),
    );
    step(
        "put --ignore-value of a missing key",
        run_failing(e, &["put", "missing", "--ignore-value"], None),
    );
    let large = "x".repeat(1_700_000);
    step(
        "put of a 1.7 MB value",
        run_failing(e, &["put", "large"], Some(&large)),
    );
    let many: String = (0..129).map(|i| format!("put many{i} v\n")).collect();
    let txn_many = format!("\n{many}\n\n");
    step(
        "txn of 129 operations",
        run_failing(e, &["txn", "-i"], Some(&txn_many)),
    );

    // Watch: a background watcher sees a put, a delete and another put, in order.
    // It watches from the next revision, so it sees the puts however late its stream starts.
    let header: serde_json::Value =
        serde_json::from_str(&run(e, &["get", "w", "-w", "json"], None)).expect("get -w json");
    let next = header["header"]["revision"]
        .as_u64()
        .map(|r| (r + 1).to_string())
        .expect("a revision in the header");
    let watcher = Background::spawn(e, &["watch", "--prefix", "w", "--rev", &next]);
    run(e, &["put", "w1", "a"], None);
    run(e, &["del", "w1"], None);
    run(e, &["put", "w2", "b"], None);
    let seen = watcher.take(9, Duration::from_secs(15), "watch events");
    drop(watcher);
    step("watch", seen.join("\n"));
    step("watch --rev replay", {
        let replay = Background::spawn(e, &["watch", "--prefix", "w", "--rev", "1"]);
        let lines = replay.take(9, Duration::from_secs(15), "watch replay");
        lines.join("\n")
    });

    // Leases.
    let granted = run(e, &["lease", "grant", "30"], None);
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    step("lease grant", granted);
    step(
        "put with lease",
        run(e, &["put", "lk", "v", &format!("--lease={id}")], None),
    );
    step(
        "lease keep-alive --once",
        run(e, &["lease", "keep-alive", "--once", &id], None),
    );
    step(
        "lease timetolive --keys",
        run(e, &["lease", "timetolive", "--keys", &id], None),
    );
    step("lease revoke", run(e, &["lease", "revoke", &id], None));
    step("get after revoke", run(e, &["get", "lk"], None));
    step(
        "lease timetolive after revoke",
        run(e, &["lease", "timetolive", &id], None),
    );

    // Locks: one with a command; then a holder and a second locker that must wait for it.
    step(
        "lock -- command",
        run(e, &["lock", "mylock", "--", "echo", "locked"], None),
    );
    let holder = Background::spawn(e, &["lock", "mylock2"]);
    let key = holder.take(1, Duration::from_secs(15), "lock holder");
    step("lock holder", key.join("\n"));
    let second = Background::spawn(e, &["lock", "mylock2", "--", "echo", "second"]);
    let waited = second.quiet_for(Duration::from_secs(2));
    step("second locker waits", format!("waited: {waited}"));
    holder.stop();
    let got = second.take(1, Duration::from_secs(15), "second locker");
    step("second locker after release", got.join("\n"));
    drop(second);

    // Election: a campaigner wins and an observer sees its proposal.
    let campaigner = Background::spawn(e, &["elect", "myelection", "p1"]);
    let won = campaigner.take(2, Duration::from_secs(15), "campaign");
    step("elect", won.join("\n"));
    let observer = Background::spawn(e, &["elect", "-l", "myelection"]);
    let observed = observer.take(2, Duration::from_secs(15), "observe");
    step("elect -l", observed.join("\n"));
    drop(observer);
    campaigner.stop();

    // Endpoint status: same columns (ids, versions and indexes differ by nature).
    let first = e.split(',').next().expect("an endpoint");
    let status = run(first, &["endpoint", "status"], None);
    let columns = status.trim_end().split(", ").count();
    assert!(
        status.contains(", 3."),
        "endpoint status shows a 3.x version: {status}"
    );
    step("endpoint status columns", columns.to_string());
    // etcdctl 3.4 prints the health line on stderr.
    let (out, err) = run_capturing(first, &["endpoint", "health"], None);
    step("endpoint health", format!("{out}{err}"));
    steps
}

/// A 3-node Isle cluster serving gRPC (no RESP, no fault injection); returns it and the
/// comma-separated gRPC endpoints.
fn isle_cluster() -> (LocalCluster, String) {
    let cluster = LocalCluster::start_planned(3, |spec| {
        spec.bootstrap_expect = Some(3);
        spec.resp = None;
    });
    let endpoints: Vec<String> = (1..=3).map(|id| cluster.grpc(id)).collect();
    (cluster, endpoints.join(","))
}

/// A single-node etcd on loopback ports in `dir`; returns it and its client endpoint.
fn etcd_server(dir: &Path) -> (Background, String) {
    let (mut members, clients) = etcd_cluster(dir, 1);
    (members.remove(0), clients[0].clone())
}

/// An etcd cluster of `n` members on loopback ports in `dir`; returns them and their client
/// endpoints.
fn etcd_cluster(dir: &Path, n: usize) -> (Vec<Background>, Vec<String>) {
    let mut taken = Vec::new();
    let mut port = || {
        let port = std::iter::repeat_with(spare_port)
            .find(|port| !taken.contains(port))
            .expect("a spare port");
        taken.push(port);
        port
    };
    let members: Vec<(String, String, String)> = (1..=n)
        .map(|i| {
            let client = format!("127.0.0.1:{}", port());
            let peer = format!("http://127.0.0.1:{}", port());
            (format!("e{i}"), client, peer)
        })
        .collect();
    let initial: Vec<String> = members
        .iter()
        .map(|(name, _, peer)| format!("{name}={peer}"))
        .collect();
    let children = members
        .iter()
        .map(|(name, client, peer)| {
            let child = Command::new("etcd")
                .args(["--name", name, "--data-dir"])
                .arg(dir.join(name))
                .args([
                    "--listen-client-urls",
                    &format!("http://{client}"),
                    "--advertise-client-urls",
                    &format!("http://{client}"),
                    "--listen-peer-urls",
                    peer,
                    "--initial-advertise-peer-urls",
                    peer,
                    "--initial-cluster",
                    &initial.join(","),
                    "--log-level",
                    "error",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn etcd");
            let (_, lines) = mpsc::channel();
            Background { child, lines }
        })
        .collect();
    let clients = members.into_iter().map(|(_, client, _)| client).collect();
    (children, clients)
}

fn wait_serving(endpoints: &str, what: &str) {
    wait_for(what, Duration::from_secs(30), || {
        let output = etcdctl(endpoints)
            .args(["put", "ready", "1"])
            .output()
            .map_err(|e| e.to_string())?;
        let mut err = String::new();
        let _ = output.stderr.as_slice().read_to_string(&mut err);
        output.status.success().then_some(()).ok_or(err)
    });
    let output = etcdctl(endpoints).args(["del", "ready"]).output();
    assert!(output.is_ok_and(|o| o.status.success()));
}

#[test]
fn etcdctl_works_against_isle_as_against_etcd() {
    if !require(
        installed("etcdctl"),
        "etcdctl",
        "apt-get install etcd-client",
    ) {
        return;
    }
    let (cluster, endpoints) = isle_cluster();
    let _logs = cluster.logs_on_panic();
    wait_serving(&endpoints, "Isle's gRPC API to accept a put");
    let isle = script(&endpoints);

    // Answers that must hold whatever the reference says.
    let get = |name: &str| {
        isle.iter()
            .find(|(step, _)| step == name)
            .map(|(_, out)| out.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("get foo"), "foo\nbar");
    assert_eq!(get("get after del"), "foo\nbar");
    assert_eq!(get("watch"), "PUT\nw1\na\nDELETE\nw1\n\nPUT\nw2\nb");
    assert_eq!(get("second locker waits"), "waited: true");
    assert_eq!(get("second locker after release"), "second");
    assert_eq!(get("elect -l"), "myelection/<ID>\np1");
    assert!(get("txn success").contains("\nSUCCESS\n"), "{isle:#?}");
    assert!(get("txn failure").contains("\nFAILURE\n"), "{isle:#?}");
    assert_eq!(get("get t"), "t2\nno");
    assert!(get("endpoint health").contains("is healthy"), "{isle:#?}");
    assert_eq!(
        get("put with an unknown lease"),
        "Error: etcdserver: requested lease not found"
    );
    assert_eq!(
        get("put --ignore-value of a missing key"),
        "Error: etcdserver: key not found"
    );
    assert_eq!(
        get("put of a 1.7 MB value"),
        "Error: etcdserver: request is too large"
    );
    assert_eq!(
        get("txn of 129 operations"),
        "Error: etcdserver: too many operations in txn request"
    );

    if !require(
        installed("etcd"),
        "etcd (the reference Isle's answers are compared with)",
        "apt-get install etcd-server",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, client) = etcd_server(dir.path());
    wait_serving(&client, "etcd to accept a put");
    let reference = script(&client);
    assert_same("etcdctl answers", &isle, &reference);
    eprintln!(
        "etcdctl: all {} steps answered the same by Isle and etcd",
        isle.len()
    );
}

/// Fails with every step whose answer differs between Isle and etcd.
fn assert_same(what: &str, isle: &[(String, String)], etcd: &[(String, String)]) {
    let mismatches: Vec<String> = isle
        .iter()
        .zip(etcd)
        .filter(|(a, b)| a != b)
        .map(|((step, ours), (_, theirs))| {
            format!("step {step:?}:\n--- isle ---\n{ours}\n--- etcd ---\n{theirs}")
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{what} differ between Isle and etcd:\n{}",
        mismatches.join("\n")
    );
    assert_eq!(isle.len(), etcd.len(), "{what}: the number of steps");
}

/// Runs `etcdctl ARGS` that must end by itself within `limit` (a watch the server cancels);
/// returns its stdout and stderr without the client's JSON log lines.
fn run_bounded(endpoints: &str, args: &[&str], limit: Duration) -> String {
    let mut child = etcdctl(endpoints)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("etcdctl status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return format!("etcdctl {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("etcdctl output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .filter(|line| !line.contains("\"level\""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The errors column of `etcdctl endpoint status` (the last comma-separated field).
fn status_errors(endpoint: &str) -> Result<String, String> {
    let output = output(endpoint, &["endpoint", "status"], None);
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    text.trim_end()
        .rsplit(", ")
        .next()
        .map(str::to_string)
        .ok_or_else(|| format!("no status line: {text}"))
}

/// A put sent as etcd's Go client sends it under `clientv3.WithRequireLeader` (the
/// `hasleader` metadata); the gRPC code and message it gets.
fn put_requiring_leader(endpoint: &str) -> String {
    use isle_api::etcd::pb::etcdserverpb::{PutRequest, kv_client::KvClient};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
            .expect("an endpoint")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("connect");
        let mut request = tonic::Request::new(PutRequest {
            key: b"k".to_vec(),
            value: b"w".to_vec(),
            ..Default::default()
        });
        request.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        match KvClient::new(channel).put(request).await {
            Ok(_) => "applied".to_string(),
            Err(status) => format!("{:?}: {}", status.code(), status.message()),
        }
    })
}

/// What the last live member of a 3-member cluster answers once the other two are gone: each
/// step as etcd answers it (the value `k` was put while all were up).
fn without_leader(survivor: &str) -> Vec<(String, String)> {
    wait_for(
        "the survivor to report that it has no leader",
        Duration::from_secs(60),
        || match status_errors(survivor)? {
            errors if errors.contains("no leader") => Ok(()),
            errors => Err(errors),
        },
    );
    vec![
        (
            "serializable get".into(),
            run(survivor, &["get", "k", "--consistency=s"], None),
        ),
        (
            "watch (etcdctl requires a leader)".into(),
            run_bounded(survivor, &["watch", "k"], Duration::from_secs(20)),
        ),
        (
            "endpoint status errors".into(),
            status_errors(survivor).unwrap_or_default(),
        ),
        (
            "put requiring a leader (Go's WithRequireLeader)".into(),
            put_requiring_leader(survivor),
        ),
    ]
}

#[test]
fn without_a_leader_isle_answers_as_etcd_does() {
    if !require(
        installed("etcdctl"),
        "etcdctl",
        "apt-get install etcd-client",
    ) {
        return;
    }
    let (mut cluster, endpoints) = isle_cluster();
    let _logs = cluster.logs_on_panic();
    wait_serving(&endpoints, "Isle's gRPC API to accept a put");
    run(&endpoints, &["put", "k", "v"], None);
    cluster.kill9(1);
    cluster.kill9(2);
    let survivor = cluster.grpc(3);
    let isle = without_leader(&survivor);
    for (step, answer) in &isle {
        println!("isle, {step}: {answer}");
    }
    // Where etcd lets a plain request run into the client's deadline, Isle refuses at once with
    // the answer etcd gives a client that requires a leader (ARCHITECTURE.md, "Errors").
    let plain = run_failing(&survivor, &["--command-timeout=3s", "put", "k", "w"], None);
    assert_eq!(plain, "Error: etcdserver: no leader");

    if !require(
        installed("etcd"),
        "etcd (the reference Isle's answers are compared with)",
        "apt-get install etcd-server",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut members, clients) = etcd_cluster(dir.path(), 3);
    wait_serving(&clients.join(","), "etcd to accept a put");
    run(&clients.join(","), &["put", "k", "v"], None);
    for member in members.iter_mut().take(2) {
        let _ = member.child.kill();
        let _ = member.child.wait();
    }
    let reference = without_leader(&clients[2]);
    assert_same("answers without a leader", &isle, &reference);
    let plain = run_failing(
        &clients[2],
        &["--command-timeout=3s", "put", "k", "w"],
        None,
    );
    assert!(
        plain.contains("deadline exceeded") || plain.contains("request timed out"),
        "etcd's answer to a plain put without a leader: {plain}"
    );
    eprintln!(
        "without a leader: all {} steps answered the same by Isle and etcd; a plain put: Isle \
         refuses at once, etcd says {plain:?}",
        isle.len()
    );
}
