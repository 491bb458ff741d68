//! Test harness: real `isle node` processes, their HTTP APIs, and waiting on conditions.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use isle_lab::{Node, NodeSpec, Ports};
use serde_json::Value;

/// The `isle` binary built for this test run.
pub fn isle_bin() -> &'static str {
    env!("CARGO_BIN_EXE_isle")
}

/// A cluster of node processes on loopback, started by the lab ([`isle_lab`]) on spare ports.
pub struct LocalCluster {
    /// The nodes, index i holding node id i+1.
    pub nodes: Vec<Node>,
    /// Holds every data dir and log.
    pub dir: tempfile::TempDir,
}

/// How many times a cluster start that lost a port race is tried on new ports.
const START_ATTEMPTS: usize = 5;

/// How long a node may take to serve HTTP after it is started.
const SERVING_LIMIT: Duration = Duration::from_secs(30);

impl LocalCluster {
    /// Starts `n` nodes with fault injection allowed, every node seeded with every other;
    /// returns once every node serves HTTP (see [`LocalCluster::start_with`]: spare ports,
    /// retried on a port race — each node takes four ports, so races with other tests' ephemeral
    /// ports are real).
    pub fn start(n: u64) -> LocalCluster {
        Self::start_with(n, &[])
    }

    /// As [`LocalCluster::start`], with `extra` flags for every node, e.g.
    /// `["--bootstrap-expect", "3"]`; returns once every node serves HTTP.
    pub fn start_with(n: u64, extra: &[&str]) -> LocalCluster {
        Self::start_planned(n, |spec| {
            spec.fault_injection = true;
            spec.flags.extend(extra.iter().map(|flag| flag.to_string()));
        })
    }

    /// Starts the `n` nodes [`isle_lab::plan`] lays out on spare ports (every node seeded with
    /// every other, serving HTTP, etcd gRPC and RESP, logging at `ISLE_LOG=info`), each spec
    /// changed by `adjust` first; returns once every node serves HTTP. Spare ports come from
    /// below the kernel's ephemeral range (see [`isle_lab::spare_port`]), and a start that loses a port
    /// race (a node exits: address in use) is retried on new ports.
    pub fn start_planned(n: u64, adjust: impl Fn(&mut NodeSpec)) -> LocalCluster {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::tempdir().expect("tempdir");
            let specs = isle_lab::plan(n, dir.path(), Ports::Spare).expect("plan a cluster");
            let mut nodes = Vec::new();
            for mut spec in specs {
                spec.env = vec![("ISLE_LOG".into(), "info".into())];
                adjust(&mut spec);
                let id = spec.id;
                nodes.push(
                    Node::start(spec, Path::new(isle_bin()))
                        .unwrap_or_else(|e| panic!("starting node {id}: {e}")),
                );
            }
            let mut cluster = LocalCluster { nodes, dir };
            let serving: Result<Vec<()>, String> = (1..=n)
                .map(|id| cluster.wait_serving(id, SERVING_LIMIT))
                .collect();
            match serving {
                Ok(_) => return cluster,
                Err(why) => {
                    eprintln!("cluster start failed, retrying on other ports: {why}");
                    failures.push(why);
                }
            }
        }
        panic!("could not start a {n}-node cluster in {START_ATTEMPTS} attempts: {failures:#?}");
    }

    /// Waits until node `id` runs and serves its own `/v1/status`; `Err` (with the end of its
    /// log) if the process exits first or `limit` passes.
    pub fn wait_serving(&mut self, id: u64, limit: Duration) -> Result<(), String> {
        self.node_mut(id)
            .wait_serving(limit)
            .map_err(|e| e.to_string())
    }

    /// Node `id`.
    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    /// Node `id`, to drive.
    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// HTTP address of node `id`.
    pub fn http(&self, id: u64) -> String {
        self.node(id).spec().http.clone()
    }

    /// RESP (Redis) address of node `id`.
    pub fn resp(&self, id: u64) -> String {
        self.node(id)
            .spec()
            .resp
            .clone()
            .unwrap_or_else(|| panic!("node {id} serves no RESP"))
    }

    /// etcd v3 gRPC address of node `id`.
    pub fn grpc(&self, id: u64) -> String {
        self.node(id)
            .spec()
            .grpc
            .clone()
            .unwrap_or_else(|| panic!("node {id} serves no etcd gRPC"))
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        logs(self.dir.path())
    }

    /// kill -9 node `id` (and reap it); its data dir stays.
    pub fn kill9(&mut self, id: u64) {
        self.node_mut(id).kill9();
    }

    /// Starts node `id` again on its data dir and ports (kill -9 first if it still runs);
    /// returns once it serves HTTP, panics (with its log) if it cannot start.
    pub fn restart(&mut self, id: u64) {
        let restarted = self
            .node_mut(id)
            .restart()
            .map_err(|e| e.to_string())
            .and_then(|()| self.wait_serving(id, SERVING_LIMIT));
        if let Err(why) = restarted {
            panic!("restarting node {id}: {why}\n{}", self.logs());
        }
    }

    /// Ids of the nodes whose process is running.
    pub fn running(&mut self) -> Vec<u64> {
        self.nodes
            .iter_mut()
            .filter_map(|node| node.running().then_some(node.id()))
            .collect()
    }

    /// A guard that prints every node's log if the test panics while it is alive. Bind it
    /// after the cluster (`let _logs = cluster.logs_on_panic();`) so it runs before the
    /// cluster's temp dir is removed.
    pub fn logs_on_panic(&self) -> LogsOnPanic {
        LogsOnPanic(self.dir.path().to_path_buf())
    }
}

/// Prints the node logs under a directory when dropped during a panic.
pub struct LogsOnPanic(PathBuf);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- node logs ({}) ----\n{}",
                self.0.display(),
                logs_tail(&self.0, 120)
            );
        }
    }
}

/// Concatenated `*.log` files under `dir` (last 40 lines of each).
pub fn logs(dir: &Path) -> String {
    logs_tail(dir, 40)
}

/// Concatenated `*.log` files under `dir` (last `lines` lines of each).
pub fn logs_tail(dir: &Path, lines: usize) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
        {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("==> {} <==\n", path.display()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// A blocking HTTP/1.1 request with short timeouts; returns (status code, body).
pub fn http(
    method: &str,
    addr: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    http_with_timeout(method, addr, path, body, Duration::from_secs(2))
}

/// As [`http`], waiting at most `read_timeout` for the answer. A request that was never sent
/// (the connection could not be made) is reported as `Err` starting with `"connect "`. Each
/// request has its own connection (no pooling), so a restarted node never meets a stale one.
pub fn http_with_timeout(
    method: &str,
    addr: &str,
    path: &str,
    body: Option<&Value>,
    read_timeout: Duration,
) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(1)))
        .timeout_recv_response(Some(read_timeout))
        .timeout_recv_body(Some(read_timeout))
        .http_status_as_error(false)
        .max_idle_connections(0)
        .build()
        .into();
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body.map(Value::to_string).unwrap_or_default())
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let mut response = agent.run(request).map_err(|err| match err {
        ureq::Error::ConnectionFailed | ureq::Error::Timeout(ureq::Timeout::Connect) => {
            format!("connect {addr}: {err}")
        }
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("connect {addr}: {io}")
        }
        other => format!("read {addr}: {other}"),
    })?;
    let code = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("read {addr}: {e}"))?;
    Ok((code, text))
}

/// `GET /v1/status` as JSON.
pub fn status(addr: &str) -> Result<Value, String> {
    let (code, body) = http("GET", addr, "/v1/status", None)?;
    if code != 200 {
        return Err(format!("status {code}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("status JSON: {e}: {body}"))
}

/// `GET /metrics` as text.
pub fn metrics(addr: &str) -> Result<String, String> {
    http("GET", addr, "/metrics", None).map(|(_, body)| body)
}

/// Posts fault rules to a node; panics on refusal.
pub fn add_faults(addr: &str, rules: Value) {
    let (code, body) = http("POST", addr, "/v1/faults", Some(&rules)).expect("POST /v1/faults");
    assert_eq!(code, 201, "POST /v1/faults on {addr}: {body}");
}

/// Clears all fault rules on a node.
pub fn clear_faults(addr: &str) {
    let (code, body) = http("DELETE", addr, "/v1/faults", None).expect("DELETE /v1/faults");
    assert_eq!(code, 204, "DELETE /v1/faults on {addr}: {body}");
}

/// Polls `check` every 100 ms until it returns Ok or `limit` passes; returns the time it took.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let start = Instant::now();
    let mut last = String::from("never checked");
    while start.elapsed() < limit {
        match check() {
            Ok(value) => return (value, start.elapsed()),
            Err(why) => last = why,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {limit:?} waiting for {what}; last: {last}");
}

/// The node's state name.
pub fn state_of(status: &Value) -> &str {
    status["state"].as_str().unwrap_or("?")
}

/// The node's reachable peer ids.
pub fn reachable_of(status: &Value) -> Vec<u64> {
    status["reachable"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect()
}

/// Waits until each of `nodes` hears every other one of them.
pub fn wait_mesh(cluster: &LocalCluster, nodes: &[u64]) {
    for &id in nodes {
        wait_for(
            &format!("node {id} to hear {nodes:?}"),
            Duration::from_secs(30),
            || {
                let reachable = reachable_of(&status(&cluster.http(id))?);
                if nodes.iter().all(|n| *n == id || reachable.contains(n)) {
                    Ok(())
                } else {
                    Err(format!("node {id} hears {reachable:?}"))
                }
            },
        );
    }
}

/// Cuts every link between `a` and `b` in both directions (rules on both ends, as `isle split` does).
pub fn split(cluster: &LocalCluster, a: &[u64], b: &[u64]) {
    for (mine, theirs) in [(a, b), (b, a)] {
        for id in mine {
            let rules: Vec<Value> = theirs
                .iter()
                .map(
                    |peer| serde_json::json!({"peer": peer, "direction": "both", "action": "drop"}),
                )
                .collect();
            add_faults(&cluster.http(*id), serde_json::json!(rules));
        }
    }
}

/// Clears the fault rules of nodes `1..=n`.
pub fn heal(cluster: &LocalCluster, n: u64) {
    for id in 1..=n {
        clear_faults(&cluster.http(id));
    }
}

/// How long a CP request may take before the client gives up: above what a node may wait
/// (up to its 5 s request timeout for a leader, then up to 5 s for the leader's answer), so the
/// node's own `Timeout` (504) is what the client sees.
pub const CP_CLIENT_TIMEOUT: Duration = Duration::from_secs(12);

/// The `cp` object of `GET /v1/status`.
pub fn cp_status(addr: &str) -> Result<Value, String> {
    let s = status(addr)?;
    match s.get("cp") {
        Some(cp) if cp.is_object() => Ok(cp.clone()),
        _ => Err(format!("no cp object in status: {s}")),
    }
}

/// The leader every node in `among` agrees on, which is one of them and calls itself leader:
/// `(leader, its term)`.
pub fn cp_leader(cluster: &LocalCluster, among: &[u64]) -> Result<(u64, u64), String> {
    let mut leader = None;
    for id in among {
        let cp = cp_status(&cluster.http(*id)).map_err(|e| format!("node {id}: {e}"))?;
        let said = cp["leader"].as_u64();
        match (leader, said) {
            (_, None) => return Err(format!("node {id} knows no leader: {cp}")),
            (None, Some(l)) => leader = Some(l),
            (Some(a), Some(b)) if a != b => {
                return Err(format!("nodes disagree: leader {a} and {b} (node {id})"));
            }
            _ => {}
        }
    }
    let leader = leader.ok_or("no nodes asked")?;
    if !among.contains(&leader) {
        return Err(format!("leader {leader} is not among {among:?}"));
    }
    let cp = cp_status(&cluster.http(leader))?;
    if cp["role"] != "leader" {
        return Err(format!("node {leader} is named leader but says {cp}"));
    }
    Ok((leader, cp["term"].as_u64().unwrap_or(0)))
}

/// Decodes an HTTP answer's body as JSON (`null` if empty or not JSON).
fn json_answer(answer: Result<(u16, String), String>) -> Result<(u16, Value), String> {
    let (code, body) = answer?;
    Ok((code, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

/// `POST /v1/cp/put` with `body` (`{"key", "value", ...}`): (status code, JSON answer).
pub fn cp_put(addr: &str, body: &Value) -> Result<(u16, Value), String> {
    json_answer(http_with_timeout(
        "POST",
        addr,
        "/v1/cp/put",
        Some(body),
        CP_CLIENT_TIMEOUT,
    ))
}

/// `POST /v1/cp/delete` with `body` (`{"key", ...}`): (status code, JSON answer).
pub fn cp_delete(addr: &str, body: &Value) -> Result<(u16, Value), String> {
    json_answer(http_with_timeout(
        "POST",
        addr,
        "/v1/cp/delete",
        Some(body),
        CP_CLIENT_TIMEOUT,
    ))
}

/// `GET /v1/cp/get?key=..&consistency=..` (`"linearizable"` or `"stale"`): (code, JSON answer).
pub fn cp_get(addr: &str, key: &str, consistency: &str) -> Result<(u16, Value), String> {
    let path = format!(
        "/v1/cp/get?key={}&consistency={consistency}",
        url_encode(key)
    );
    json_answer(http_with_timeout(
        "GET",
        addr,
        &path,
        None,
        CP_CLIENT_TIMEOUT,
    ))
}

/// The value of the single key a `cp_get` answer holds, `None` if the key is absent.
pub fn cp_value(answer: &Value) -> Option<String> {
    answer["kvs"]
        .as_array()
        .and_then(|kvs| kvs.first())
        .and_then(|kv| kv["value"].as_str())
        .map(String::from)
}

/// Percent-encodes everything but unreserved characters.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether this is a CI run (`CI` set and not `0`/`false`): there every test must run, and
/// a missing tool is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Decides a test that needs `what`: `true` when it is `available`; otherwise a failure under
/// CI (naming how to get it), and elsewhere a loud skip (`false`).
pub fn require(available: bool, what: &str, how: &str) -> bool {
    if available {
        return true;
    }
    assert!(!in_ci(), "CI is set but {what} is missing: {how}");
    eprintln!("SKIPPED: {what} is missing ({how}); with CI=1 this is a failure");
    false
}

/// Whether `program` can be run (`program --version` starts; some tools, such as etcdctl,
/// answer the flag with an error, which is fine).
pub fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Whether this run may touch the kernel's namespaces: root and `ISLE_NETNS=1`. Under CI a
/// run that cannot is a failure.
pub fn netns_enabled() -> bool {
    let wanted = std::env::var("ISLE_NETNS").is_ok_and(|v| v == "1");
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|text| {
        text.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    });
    require(
        wanted && root,
        "the network-namespace suite (root and ISLE_NETNS=1)",
        "run as root with ISLE_NETNS=1, as .ci/run does",
    )
}
