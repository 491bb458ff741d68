//! Test harness: real `isle node` processes, their HTTP APIs, and waiting on conditions.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `isle` binary built for this test run.
pub fn isle_bin() -> &'static str {
    env!("CARGO_BIN_EXE_isle")
}

/// A port nothing listens on right now (the OS picks it).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

/// How to launch one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node id.
    pub id: u64,
    /// Peer transport address.
    pub peer: String,
    /// HTTP address.
    pub http: String,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Seed peers.
    pub peers: Vec<String>,
    /// Extra flags.
    pub extra: Vec<String>,
    /// Command prefix, e.g. `ip netns exec NS` (empty to run directly).
    pub prefix: Vec<String>,
}

/// A running node process; killed (SIGKILL) when dropped.
pub struct NodeProc {
    /// How it was started.
    pub spec: NodeSpec,
    child: Option<Child>,
}

impl NodeSpec {
    /// Starts the process, logging to `<data_dir>.log`.
    pub fn spawn(&self) -> NodeProc {
        std::fs::create_dir_all(&self.data_dir).expect("create data dir");
        let log_path = self.data_dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log");
        let mut command = match self.prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(isle_bin());
                c
            }
            None => Command::new(isle_bin()),
        };
        command
            .arg("node")
            .args([
                "--id",
                &self.id.to_string(),
                "--listen",
                &self.peer,
                "--http",
                &self.http,
            ])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--peers", &self.peers.join(",")])
            .args(&self.extra)
            .env("ISLE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log clone"))
            .stderr(log);
        let child = command.spawn().expect("spawn isle node");
        NodeProc {
            spec: self.clone(),
            child: Some(child),
        }
    }
}

impl NodeProc {
    /// kill -9, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster of node processes on loopback with ports picked by the OS.
pub struct LocalCluster {
    /// The nodes, index i holding node id i+1.
    pub nodes: Vec<NodeProc>,
    /// Holds every data dir and log.
    pub dir: tempfile::TempDir,
}

impl LocalCluster {
    /// Starts `n` nodes with fault injection allowed, every node seeded with every other.
    pub fn start(n: u64) -> LocalCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let peers: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let specs: Vec<NodeSpec> = (1..=n)
            .map(|id| {
                let index = (id - 1) as usize;
                NodeSpec {
                    id,
                    peer: peers[index].clone(),
                    http: format!("127.0.0.1:{}", free_port()),
                    data_dir: dir.path().join(format!("n{id}")),
                    peers: peers
                        .iter()
                        .filter(|p| **p != peers[index])
                        .cloned()
                        .collect(),
                    extra: vec!["--allow-fault-injection".into()],
                    prefix: Vec::new(),
                }
            })
            .collect();
        let nodes = specs.iter().map(NodeSpec::spawn).collect();
        LocalCluster { nodes, dir }
    }

    /// HTTP address of node `id`.
    pub fn http(&self, id: u64) -> String {
        self.nodes[(id - 1) as usize].spec.http.clone()
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        logs(self.dir.path())
    }
}

/// Concatenated `*.log` files under `dir` (last lines of each).
pub fn logs(dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
        {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
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
    use std::io::{Read, Write};
    let socket: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&socket, Duration::from_secs(1))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read {addr}: {e}"))?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
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

/// The value of the first sample of metric `name` in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| line.split([' ', '{']).next() == Some(name))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
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
