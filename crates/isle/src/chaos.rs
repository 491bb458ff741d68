//! `isle chaos run SCENARIO.toml`: the chaos lab's process engine, first slice.
//!
//! A scenario file names a cluster size, a client workload, a nemesis schedule and
//! expectations. The engine starts real `isle node` processes on loopback (fault injection on),
//! runs concurrent clients against them — CP puts, linearizable gets and compare-and-sets, AP
//! writes with causal contexts to a `siblings` bucket, counter increments with request ids, set
//! adds — and records every invocation and completion in an [`isle_chaos::History`]. Partitions
//! are made through each node's `/v1/faults` API (complete splits, one-way and partial cuts).
//! After the run it heals, retries indeterminate increments with their request ids, waits for
//! every AP replica to agree (each node's own copy, `/v1/ap-local`), and runs the
//! linearizability checker on the CP history and the convergence checker on the AP history and
//! the replicas' final state.
//!
//! The run directory holds `history.jsonl`, `verdicts.json`, `final-state.json`, `nemesis.json`,
//! `summary.txt` and the nodes' logs. The command fails if any checker finds a violation or an
//! expectation is missed.
//!
//! Outcomes: a CP 503 (`NoQuorum`, `NoLeader`, ...) is a refusal before proposing, so `Fail`;
//! a CP 504, an AP 503 `Unavailable`, a client timeout or a lost connection are `Indeterminate`;
//! a connection refused before anything was sent is `Fail`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use isle_chaos::convergence::FinalState;
use isle_chaos::history::Pending;
use isle_chaos::{
    ApValue, History, MergeRule, Op, Operation, Outcome, Recorder, Ret, Verdict, convergence,
    linear,
};
use isle_net::{Direction, FaultAction, FaultRule};
use isle_types::NodeId;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The AP bucket every AP operation of the workload uses.
const BUCKET: &str = "siblings";
/// Replicas per AP key.
const AP_REPLICAS: u64 = 3;

/// `isle chaos ...`
#[derive(Subcommand, Debug)]
pub enum ChaosCommand {
    /// Run a scenario on real processes on loopback and check what happened.
    Run(RunArgs),
}

/// Flags of `isle chaos run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The scenario file (TOML).
    scenario: PathBuf,
    /// Where to write the run's history, verdicts and logs (default `chaos-runs/<time>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Keep the nodes' data directories (by default only their logs are kept).
    #[arg(long)]
    keep_data: bool,
}

/// A scenario file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A name for reports.
    #[serde(default)]
    name: Option<String>,
    /// Cluster size (3 or 5).
    nodes: u64,
    /// Seed of the workload's choices.
    #[serde(default)]
    seed: u64,
    /// How long the clients run, in seconds.
    duration_s: f64,
    /// What the clients do.
    #[serde(default)]
    workload: Workload,
    /// The nemesis schedule.
    #[serde(default)]
    nemesis: Vec<Step>,
    /// What must hold.
    #[serde(default)]
    expect: Expect,
}

/// The client workload.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// Concurrent clients; client `i` talks to node `i mod nodes + 1`.
    clients: u64,
    /// CP registers.
    cp_keys: u64,
    /// AP keys of each type (plain values, counters, sets).
    ap_keys: u64,
    /// Pause between one client's operations, in ms.
    think_ms: u64,
    /// Client timeout for CP requests, in ms (above the node's own request timeout, so the
    /// node's answer is what the client usually sees).
    cp_timeout_ms: u64,
    /// Client timeout for AP requests, in ms.
    ap_timeout_ms: u64,
    /// Relative weights of the operations.
    mix: Mix,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            clients: 6,
            cp_keys: 3,
            ap_keys: 3,
            think_ms: 50,
            cp_timeout_ms: 8_000,
            ap_timeout_ms: 5_000,
            mix: Mix::default(),
        }
    }
}

/// Relative weights of the workload's operations.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mix {
    /// CP put.
    cp_put: u32,
    /// CP linearizable get.
    cp_get: u32,
    /// CP compare-and-set (a `/v1/cp/txn`).
    cp_cas: u32,
    /// AP read-then-write with the read's context.
    ap_put: u32,
    /// AP counter increment with a request id.
    ap_incr: u32,
    /// AP set add.
    ap_sadd: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            cp_put: 3,
            cp_get: 3,
            cp_cas: 2,
            ap_put: 3,
            ap_incr: 2,
            ap_sadd: 2,
        }
    }
}

/// One nemesis step: at `at_s` seconds into the run, replace every fault with `action`'s.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Step {
    /// Seconds after the clients start.
    at_s: f64,
    /// What to do.
    #[serde(flatten)]
    action: Action,
}

/// A nemesis action. Each replaces the faults of the previous step.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Complete partition: links between different sides are cut both ways. Nodes not named
    /// form one more side.
    Split {
        /// The sides, by node id.
        sides: Vec<Vec<u64>>,
    },
    /// Messages from every node of `from` to every node of `to` are dropped; the other
    /// direction still flows.
    OneWay {
        /// Senders whose messages are lost.
        from: Vec<u64>,
        /// Receivers that stop hearing them.
        to: Vec<u64>,
    },
    /// Only the listed pairs are cut (both ways); everything else flows.
    Partial {
        /// Pairs of node ids.
        cuts: Vec<[u64; 2]>,
    },
    /// Remove every fault.
    Heal,
}

/// Expectations checked besides the checkers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Expect {
    /// Every AP key's replicas agree within this many seconds of the final heal.
    ap_converges_within_s: f64,
}

impl Default for Expect {
    fn default() -> Self {
        Self {
            ap_converges_within_s: 30.0,
        }
    }
}

impl Scenario {
    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=9).contains(&self.nodes) {
            bail!("nodes must be between 1 and 9 (3 or 5 make sense)");
        }
        if !(self.duration_s > 0.0 && self.duration_s <= 3600.0) {
            bail!("duration_s must be in (0, 3600]");
        }
        if self.workload.clients == 0 || self.workload.clients > 256 {
            bail!("workload.clients must be between 1 and 256");
        }
        let m = &self.workload.mix;
        if m.cp_put + m.cp_get + m.cp_cas + m.ap_put + m.ap_incr + m.ap_sadd == 0 {
            bail!("workload.mix has no operation with a weight above 0");
        }
        if (m.cp_put + m.cp_get + m.cp_cas > 0) && self.workload.cp_keys == 0 {
            bail!("workload.cp_keys must be above 0 when the mix has CP operations");
        }
        if (m.ap_put + m.ap_incr + m.ap_sadd > 0) && self.workload.ap_keys == 0 {
            bail!("workload.ap_keys must be above 0 when the mix has AP operations");
        }
        let ids: BTreeSet<u64> = (1..=self.nodes).collect();
        for step in &self.nemesis {
            if !(step.at_s >= 0.0 && step.at_s <= self.duration_s) {
                bail!("nemesis step at {} s lies outside the run", step.at_s);
            }
            let named: Vec<u64> = match &step.action {
                Action::Split { sides } => sides.iter().flatten().copied().collect(),
                Action::OneWay { from, to } => from.iter().chain(to).copied().collect(),
                Action::Partial { cuts } => cuts.iter().flatten().copied().collect(),
                Action::Heal => Vec::new(),
            };
            if let Some(bad) = named.iter().find(|id| !ids.contains(id)) {
                bail!(
                    "nemesis step at {} s names node {bad}, not in 1..={}",
                    step.at_s,
                    self.nodes
                );
            }
        }
        Ok(())
    }
}

/// A tiny seeded generator (splitmix64): the workload's choices replay from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// One node of the cluster under test.
struct NodePlan {
    id: u64,
    peer: String,
    http: String,
    data_dir: PathBuf,
    log: PathBuf,
}

/// A port in 20000..30000 nothing listens on, picked pseudo-randomly (below the ephemeral range,
/// so outgoing connections do not take it before the node binds).
fn pick_port(rng: &mut Rng, taken: &BTreeSet<u16>) -> anyhow::Result<u16> {
    for _ in 0..500 {
        let port = 20_000 + u16::try_from(rng.below(10_000))?;
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port found in 20000..30000")
}

fn plan(nodes: u64, dir: &Path) -> anyhow::Result<Vec<NodePlan>> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = Rng(nanos ^ (u64::from(std::process::id()) << 32));
    let mut taken = BTreeSet::new();
    let mut plans = Vec::new();
    for id in 1..=nodes {
        let peer = pick_port(&mut rng, &taken)?;
        taken.insert(peer);
        let http = pick_port(&mut rng, &taken)?;
        taken.insert(http);
        plans.push(NodePlan {
            id,
            peer: format!("127.0.0.1:{peer}"),
            http: format!("127.0.0.1:{http}"),
            data_dir: dir.join(format!("n{id}")),
            log: dir.join(format!("n{id}.log")),
        });
    }
    Ok(plans)
}

fn spawn(plans: &[NodePlan], node: &NodePlan) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("locating the isle binary")?;
    std::fs::create_dir_all(&node.data_dir)
        .with_context(|| format!("creating {}", node.data_dir.display()))?;
    let log = std::fs::File::create(&node.log)
        .with_context(|| format!("creating {}", node.log.display()))?;
    let peers: Vec<&str> = plans
        .iter()
        .filter(|n| n.id != node.id)
        .map(|n| n.peer.as_str())
        .collect();
    let mut command = Command::new(exe);
    command
        .arg("node")
        .args(["--id", &node.id.to_string()])
        .args(["--listen", &node.peer, "--http", &node.http])
        .arg("--data-dir")
        .arg(&node.data_dir)
        .args(["--bootstrap-expect", &plans.len().to_string()])
        .arg("--allow-fault-injection")
        .args([
            "--ap-bucket",
            &format!("{BUCKET}=siblings:{}", AP_REPLICAS.min(plans.len() as u64)),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true);
    if !peers.is_empty() {
        command.args(["--peers", &peers.join(",")]);
    }
    command
        .spawn()
        .with_context(|| format!("starting node {}", node.id))
}

/// The run's shared recorder and clock.
struct Lab {
    recorder: Mutex<Recorder>,
    start: Instant,
}

impl Lab {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn invoke(&self, op: Operation) -> Pending {
        let mut recorder = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
        recorder.invoke_operation(op)
    }

    fn complete(&self, pending: Pending, outcome: Outcome, error: Option<String>) {
        let at = self.now();
        let mut recorder = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(err) = recorder.complete_with_error(pending, outcome, error, at) {
            eprintln!("chaos: recorder: {err}");
        }
    }
}

/// What an HTTP call came to.
enum Reply {
    /// An answer with this status and JSON body.
    Answer(u16, Value),
    /// Nothing was sent: the connection was refused.
    NotSent(String),
    /// Sent, but no answer (timeout, reset).
    Lost(String),
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<&Value>,
    timeout: Duration,
) -> Reply {
    let mut request = client.request(method, &url).timeout(timeout);
    if let Some(body) = body {
        request = request.json(body);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.text().await {
                Ok(text) => Answer(status, serde_json::from_str(&text).unwrap_or(Value::Null)),
                Err(err) => Reply::Lost(format!("reading the answer: {err}")),
            }
        }
        Err(err) if err.is_connect() => Reply::NotSent(err.to_string()),
        Err(err) if err.is_timeout() => Reply::Lost("client timeout".to_string()),
        Err(err) => Reply::Lost(err.to_string()),
    }
}

use Reply::Answer;

/// The error kind a node gave, or its status.
fn kind(status: u16, body: &Value) -> String {
    body.get("kind")
        .and_then(Value::as_str)
        .map_or_else(|| format!("HTTP {status}"), str::to_string)
}

/// A CP answer that is not 200: 503 and 4xx are refusals before anything was proposed.
fn cp_failure(reply: &Reply) -> (Outcome, String) {
    match reply {
        Answer(status, body) => {
            let outcome = match status {
                503 | 400 | 409 => Outcome::Fail,
                _ => Outcome::Indeterminate,
            };
            (outcome, kind(*status, body))
        }
        Reply::NotSent(err) => (Outcome::Fail, format!("not sent: {err}")),
        Reply::Lost(err) => (Outcome::Indeterminate, err.clone()),
    }
}

/// An AP answer that is not 200: `Unavailable` may have stored the write somewhere.
fn ap_failure(reply: &Reply) -> (Outcome, String) {
    match reply {
        Answer(status, body) => {
            let outcome = match status {
                400 | 409 | 422 => Outcome::Fail,
                _ => Outcome::Indeterminate,
            };
            (outcome, kind(*status, body))
        }
        Reply::NotSent(err) => (Outcome::Fail, format!("not sent: {err}")),
        Reply::Lost(err) => (Outcome::Indeterminate, err.clone()),
    }
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// An increment whose outcome was not known, to retry with its request id after the heal.
struct OpenIncr {
    process: u64,
    key: String,
    request_id: String,
}

/// One client: a process id, its node, its generator.
struct ClientTask {
    process: u64,
    node: u64,
    http: String,
    rng: Rng,
    counter: u64,
    /// Last value this client read per CP key (what its compare-and-sets expect).
    seen: BTreeMap<String, Option<String>>,
}

impl ClientTask {
    fn unique(&mut self) -> String {
        self.counter += 1;
        format!("{}-{}", self.process, self.counter)
    }

    fn operation(&self, lab: &Lab, key: &str, op: Op) -> Operation {
        Operation::new(
            self.process,
            key,
            op,
            lab.now(),
            lab.now(),
            Outcome::Indeterminate,
        )
        .on(format!("n{}", self.node))
    }

    async fn run(
        mut self,
        lab: Arc<Lab>,
        client: reqwest::Client,
        workload: Workload,
        end: Instant,
    ) -> Vec<OpenIncr> {
        let mut open = Vec::new();
        let m = &workload.mix;
        let weights = [m.cp_put, m.cp_get, m.cp_cas, m.ap_put, m.ap_incr, m.ap_sadd];
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let cp_timeout = Duration::from_millis(workload.cp_timeout_ms);
        let ap_timeout = Duration::from_millis(workload.ap_timeout_ms);
        while Instant::now() < end {
            let mut pick = self.rng.below(total);
            let mut choice = 0;
            for (index, weight) in weights.iter().enumerate() {
                if pick < u64::from(*weight) {
                    choice = index;
                    break;
                }
                pick -= u64::from(*weight);
            }
            match choice {
                0..=2 => {
                    let key = format!("cp{}", self.rng.below(workload.cp_keys));
                    self.cp(&lab, &client, choice, &key, cp_timeout).await;
                }
                _ => {
                    let index = self.rng.below(workload.ap_keys);
                    if let Some(incr) = self.ap(&lab, &client, choice, index, ap_timeout).await {
                        open.push(incr);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(workload.think_ms)).await;
        }
        open
    }

    async fn cp(
        &mut self,
        lab: &Lab,
        client: &reqwest::Client,
        choice: usize,
        key: &str,
        timeout: Duration,
    ) {
        let base = format!("http://{}", self.http);
        match choice {
            0 => {
                let value = self.unique();
                let request_id = format!("w-{value}");
                let pending = lab.invoke(
                    self.operation(lab, key, Op::Write(value.clone()))
                        .with_request_id(request_id.clone()),
                );
                let body = json!({"key": key, "value": value, "request_id": request_id});
                let reply = call(
                    client,
                    reqwest::Method::POST,
                    format!("{base}/v1/cp/put"),
                    Some(&body),
                    timeout,
                )
                .await;
                match &reply {
                    Answer(200, _) => lab.complete(pending, Outcome::Ok(Ret::Ack), None),
                    _ => {
                        let (outcome, error) = cp_failure(&reply);
                        lab.complete(pending, outcome, Some(error));
                    }
                }
            }
            1 => {
                let pending = lab.invoke(self.operation(lab, key, Op::Read));
                let reply = call(
                    client,
                    reqwest::Method::GET,
                    format!("{base}/v1/cp/get?key={key}"),
                    None,
                    timeout,
                )
                .await;
                match &reply {
                    Answer(200, body) => {
                        let value = body["kvs"]
                            .as_array()
                            .and_then(|kvs| kvs.first())
                            .and_then(|kv| kv["value"].as_str())
                            .map(str::to_string);
                        self.seen.insert(key.to_string(), value.clone());
                        lab.complete(pending, Outcome::Ok(Ret::Value(value)), None);
                    }
                    _ => {
                        let (outcome, error) = cp_failure(&reply);
                        lab.complete(pending, outcome, Some(error));
                    }
                }
            }
            _ => {
                let expect = self.seen.get(key).cloned().flatten();
                let new = self.unique();
                let request_id = format!("c-{new}");
                let pending = lab.invoke(
                    self.operation(
                        lab,
                        key,
                        Op::Cas {
                            expect: expect.clone(),
                            new: new.clone(),
                        },
                    )
                    .with_request_id(request_id.clone()),
                );
                let compare = match &expect {
                    Some(value) => {
                        json!({"key": key, "target": "value", "result": "=", "value": value})
                    }
                    None => json!({"key": key, "target": "version", "result": "=", "value": 0}),
                };
                let body = json!({
                    "compare": [compare],
                    "success": [{"put": {"key": key, "value": new}}],
                    "request_id": request_id,
                });
                let reply = call(
                    client,
                    reqwest::Method::POST,
                    format!("{base}/v1/cp/txn"),
                    Some(&body),
                    timeout,
                )
                .await;
                match &reply {
                    Answer(200, body) => match body["succeeded"].as_bool() {
                        Some(succeeded) => {
                            if succeeded {
                                self.seen.insert(key.to_string(), Some(new));
                            }
                            lab.complete(pending, Outcome::Ok(Ret::Cas(succeeded)), None);
                        }
                        None => lab.complete(
                            pending,
                            Outcome::Indeterminate,
                            Some("txn answer without `succeeded`".into()),
                        ),
                    },
                    _ => {
                        let (outcome, error) = cp_failure(&reply);
                        lab.complete(pending, outcome, Some(error));
                    }
                }
            }
        }
    }

    async fn ap(
        &mut self,
        lab: &Lab,
        client: &reqwest::Client,
        choice: usize,
        index: u64,
        timeout: Duration,
    ) -> Option<OpenIncr> {
        let base = format!("http://{}/v1/ap/{BUCKET}", self.http);
        match choice {
            3 => {
                let key = format!("v{index}");
                // Read first: the write replaces what the read saw (its context).
                let pending = lab.invoke(self.operation(lab, &key, Op::ApRead));
                let reply = call(
                    client,
                    reqwest::Method::GET,
                    format!("{base}/{key}"),
                    None,
                    timeout,
                )
                .await;
                let (context, covers) = match &reply {
                    Answer(code @ (200 | 404), body) => {
                        let values = strings(&body["values"]);
                        let read = if *code == 404 || values.is_empty() {
                            ApValue::Absent
                        } else {
                            ApValue::Values(values.clone())
                        };
                        lab.complete(pending, Outcome::Ok(Ret::Ap(read)), None);
                        (body.get("context").cloned(), values)
                    }
                    _ => {
                        let (outcome, error) = ap_failure(&reply);
                        lab.complete(pending, outcome, Some(error));
                        (None, BTreeSet::new())
                    }
                };
                let value = self.unique();
                let covers: Vec<String> = if context.is_some() {
                    covers.into_iter().collect()
                } else {
                    Vec::new()
                };
                let pending = lab.invoke(self.operation(
                    lab,
                    &key,
                    Op::ApWrite {
                        bucket: BUCKET.to_string(),
                        value: value.clone(),
                        covers,
                        local: false,
                    },
                ));
                let mut body = json!({"value": value});
                if let Some(context) = context.filter(|c| !c.is_null()) {
                    body["context"] = context;
                }
                let reply = call(
                    client,
                    reqwest::Method::PUT,
                    format!("{base}/{key}"),
                    Some(&body),
                    timeout,
                )
                .await;
                self.finish_ap(lab, pending, &reply);
                None
            }
            4 => {
                let key = format!("c{index}");
                let request_id = format!("i-{}", self.unique());
                let pending = lab.invoke(
                    self.operation(lab, &key, Op::Incr(1))
                        .with_request_id(request_id.clone()),
                );
                let body = json!({"by": 1, "request_id": request_id});
                let reply = call(
                    client,
                    reqwest::Method::POST,
                    format!("{base}/{key}/incr"),
                    Some(&body),
                    timeout,
                )
                .await;
                let outcome = self.finish_ap(lab, pending, &reply);
                (outcome == Outcome::Indeterminate).then_some(OpenIncr {
                    process: self.process,
                    key,
                    request_id,
                })
            }
            _ => {
                let key = format!("s{index}");
                let member = self.unique();
                let pending = lab.invoke(self.operation(lab, &key, Op::SetAdd(member.clone())));
                let body = json!({"members": [member]});
                let reply = call(
                    client,
                    reqwest::Method::POST,
                    format!("{base}/{key}/sadd"),
                    Some(&body),
                    timeout,
                )
                .await;
                self.finish_ap(lab, pending, &reply);
                None
            }
        }
    }

    /// Completes an AP mutation: 200 is an acknowledgement, the rest as [`ap_failure`] says.
    fn finish_ap(&self, lab: &Lab, pending: Pending, reply: &Reply) -> Outcome {
        match reply {
            Answer(200, _) => {
                lab.complete(pending, Outcome::Ok(Ret::Ack), None);
                Outcome::Ok(Ret::Ack)
            }
            _ => {
                let (outcome, error) = ap_failure(reply);
                lab.complete(pending, outcome.clone(), Some(error));
                outcome
            }
        }
    }
}

/// The fault rules each node gets for an action: node id → rules.
fn rules_for(action: &Action, nodes: u64) -> BTreeMap<u64, Vec<FaultRule>> {
    let all: BTreeSet<u64> = (1..=nodes).collect();
    let drop = |peer: u64, direction: Direction| FaultRule {
        peer: NodeId(peer),
        direction,
        action: FaultAction::Drop,
        probability: 1.0,
    };
    let mut rules: BTreeMap<u64, Vec<FaultRule>> = BTreeMap::new();
    match action {
        Action::Split { sides } => {
            let mut sides: Vec<BTreeSet<u64>> = sides
                .iter()
                .map(|side| side.iter().copied().collect())
                .collect();
            let named: BTreeSet<u64> = sides.iter().flatten().copied().collect();
            let rest: BTreeSet<u64> = all.difference(&named).copied().collect();
            if !rest.is_empty() {
                sides.push(rest);
            }
            for id in &all {
                let Some(mine) = sides.iter().find(|side| side.contains(id)) else {
                    continue;
                };
                for other in all.iter().filter(|other| !mine.contains(other)) {
                    rules
                        .entry(*id)
                        .or_default()
                        .push(drop(*other, Direction::Both));
                }
            }
        }
        Action::OneWay { from, to } => {
            for sender in from {
                for receiver in to.iter().filter(|r| *r != sender) {
                    rules
                        .entry(*sender)
                        .or_default()
                        .push(drop(*receiver, Direction::Outbound));
                    rules
                        .entry(*receiver)
                        .or_default()
                        .push(drop(*sender, Direction::Inbound));
                }
            }
        }
        Action::Partial { cuts } => {
            for [a, b] in cuts {
                if a == b {
                    continue;
                }
                rules.entry(*a).or_default().push(drop(*b, Direction::Both));
                rules.entry(*b).or_default().push(drop(*a, Direction::Both));
            }
        }
        Action::Heal => {}
    }
    rules
}

/// Clears every node's faults, then installs `action`'s.
async fn apply(
    client: &reqwest::Client,
    plans: &[NodePlan],
    action: &Action,
) -> anyhow::Result<()> {
    for node in plans {
        crate::client::delete(client, &node.http, "/v1/faults")
            .await
            .with_context(|| format!("clearing the faults of node {}", node.id))?;
    }
    for (id, rules) in rules_for(action, plans.len() as u64) {
        let Some(node) = plans.iter().find(|n| n.id == id) else {
            continue;
        };
        crate::client::post(client, &node.http, "/v1/faults", &json!(rules))
            .await
            .with_context(|| format!("cutting node {id}"))?;
    }
    Ok(())
}

/// Waits until every node answers, hears every other, and the CP keyspace serves a
/// linearizable read.
async fn wait_ready(client: &reqwest::Client, plans: &[NodePlan]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::from("nothing checked yet");
    while Instant::now() < deadline {
        match ready(client, plans).await {
            Ok(()) => return Ok(()),
            Err(why) => last = format!("{why:#}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the cluster did not become ready within 60 s: {last}")
}

async fn ready(client: &reqwest::Client, plans: &[NodePlan]) -> anyhow::Result<()> {
    for node in plans {
        let status = crate::client::get(client, &node.http, "/v1/status").await?;
        let reachable: BTreeSet<u64> = status["reachable"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .collect();
        if let Some(missing) = plans
            .iter()
            .find(|other| other.id != node.id && !reachable.contains(&other.id))
        {
            bail!("node {} does not hear node {} yet", node.id, missing.id);
        }
    }
    for node in plans {
        crate::client::get(client, &node.http, "/v1/cp/get?key=chaos-ready").await?;
    }
    Ok(())
}

/// Reads every node's own copy of every AP key. Returns the final state and, if not converged,
/// why.
async fn read_replicas(
    client: &reqwest::Client,
    plans: &[NodePlan],
    keys: &[String],
    written: &BTreeSet<String>,
) -> (FinalState, Option<String>) {
    let replicas = AP_REPLICAS.min(plans.len() as u64) as usize;
    let mut state = FinalState::new();
    let mut problem = None;
    for key in keys {
        let mut digests = BTreeSet::new();
        let mut holders = 0;
        for node in plans {
            let url = format!("http://{}/v1/ap-local/{BUCKET}/{key}", node.http);
            match call(
                client,
                reqwest::Method::GET,
                url,
                None,
                Duration::from_secs(2),
            )
            .await
            {
                Answer(200, body) => {
                    holders += 1;
                    digests.insert(body["digest"].as_str().unwrap_or("").to_string());
                    state.insert(
                        key.clone(),
                        format!("n{}", node.id),
                        ap_value(&body["value"]),
                    );
                }
                Answer(404, _) => {}
                Answer(status, body) => {
                    problem.get_or_insert(format!("node {}: {key}: HTTP {status} {body}", node.id));
                }
                Reply::NotSent(err) | Reply::Lost(err) => {
                    problem.get_or_insert(format!("node {}: {key}: {err}", node.id));
                }
            }
        }
        let expected = holders == replicas || (holders == 0 && !written.contains(key));
        if !expected || digests.len() > 1 {
            problem.get_or_insert(format!(
                "{key}: {holders} of {replicas} replicas hold it, {} distinct digests",
                digests.len()
            ));
        }
    }
    (state, problem)
}

fn ap_value(value: &Value) -> ApValue {
    if let Some(values) = value.get("values") {
        let values = strings(values);
        if values.is_empty() {
            ApValue::Absent
        } else {
            ApValue::Values(values)
        }
    } else if let Some(n) = value.get("counter").and_then(Value::as_i64) {
        ApValue::Counter(n)
    } else if let Some(members) = value.get("members") {
        ApValue::Set(strings(members))
    } else if let Some(fields) = value.get("fields").and_then(Value::as_object) {
        ApValue::Map(
            fields
                .iter()
                .filter_map(|(k, v)| v.as_i64().map(|n| (k.clone(), n)))
                .collect(),
        )
    } else {
        ApValue::Absent
    }
}

/// A nemesis step as it happened.
#[derive(Serialize)]
struct Applied {
    at_s: f64,
    action: Action,
    error: Option<String>,
}

/// Runs an `isle chaos` subcommand.
pub async fn run(command: ChaosCommand) -> anyhow::Result<()> {
    match command {
        ChaosCommand::Run(args) => run_scenario(args).await,
    }
}

async fn run_scenario(args: RunArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.scenario)
        .with_context(|| format!("reading {}", args.scenario.display()))?;
    let mut scenario: Scenario =
        toml::from_str(&text).with_context(|| format!("parsing {}", args.scenario.display()))?;
    if let Some(seed) = args.seed {
        scenario.seed = seed;
    }
    scenario.validate()?;
    let out = match &args.out {
        Some(out) => out.clone(),
        None => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            PathBuf::from("chaos-runs").join(format!("run-{secs}"))
        }
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("scenario.toml"), &text)?;
    let nodes_dir = out.join("nodes");
    let plans = plan(scenario.nodes, &nodes_dir)?;
    let mut children = Vec::new();
    for node in &plans {
        children.push(spawn(&plans, node)?);
    }
    let result = drive(&scenario, &plans, &out).await;
    for child in &mut children {
        let _ = child.start_kill();
    }
    for child in &mut children {
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    }
    if !args.keep_data {
        for node in &plans {
            let _ = std::fs::remove_dir_all(&node.data_dir);
        }
    }
    let violated = result?;
    println!("run directory: {}", out.display());
    if violated {
        bail!("the checkers found violations (see {})", out.display());
    }
    Ok(())
}

/// Runs the workload and nemesis, heals, checks. Ok(true) if something was violated.
async fn drive(scenario: &Scenario, plans: &[NodePlan], out: &Path) -> anyhow::Result<bool> {
    let admin = crate::client::http()?;
    let name = scenario.name.as_deref().unwrap_or("unnamed");
    println!(
        "chaos: scenario {name:?}, {} nodes, seed {}, {} s",
        scenario.nodes, scenario.seed, scenario.duration_s
    );
    wait_ready(&admin, plans).await?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(4)
        .build()
        .context("building HTTP client")?;
    let lab = Arc::new(Lab {
        recorder: Mutex::new(Recorder::new()),
        start: Instant::now(),
    });
    let end = lab.start + Duration::from_secs_f64(scenario.duration_s);
    let mut tasks = Vec::new();
    for process in 0..scenario.workload.clients {
        let node = &plans[(process % plans.len() as u64) as usize];
        let task = ClientTask {
            process,
            node: node.id,
            http: node.http.clone(),
            rng: Rng(scenario.seed ^ process.wrapping_mul(0xA076_1D64_78BD_642F)),
            counter: 0,
            seen: BTreeMap::new(),
        };
        tasks.push(tokio::spawn(task.run(
            lab.clone(),
            client.clone(),
            scenario.workload.clone(),
            end,
        )));
    }
    // The nemesis, in this task.
    let mut steps = scenario.nemesis.clone();
    steps.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let mut applied = Vec::new();
    for step in steps {
        let at = lab.start + Duration::from_secs_f64(step.at_s);
        tokio::time::sleep_until(at.into()).await;
        let error = apply(&admin, plans, &step.action)
            .await
            .err()
            .map(|e| format!("{e:#}"));
        let at_s = lab.start.elapsed().as_secs_f64();
        println!(
            "chaos: {at_s:6.2} s  {}{}",
            serde_json::to_string(&step.action).unwrap_or_default(),
            error
                .as_deref()
                .map(|e| format!(" FAILED: {e}"))
                .unwrap_or_default()
        );
        applied.push(Applied {
            at_s,
            action: step.action,
            error,
        });
    }
    let mut open = Vec::new();
    for task in tasks {
        open.extend(task.await.context("a client task panicked")?);
    }
    // The final heal.
    let heal_error = apply(&admin, plans, &Action::Heal)
        .await
        .err()
        .map(|e| format!("{e:#}"));
    let healed = Instant::now();
    applied.push(Applied {
        at_s: lab.start.elapsed().as_secs_f64(),
        action: Action::Heal,
        error: heal_error,
    });
    println!(
        "chaos: {:6.2} s  clients stopped, healed; {} indeterminate increments to retry",
        lab.start.elapsed().as_secs_f64(),
        open.len()
    );
    // Retry indeterminate increments with their request ids, so counters are exact.
    let retry_deadline = healed + Duration::from_secs_f64(scenario.expect.ap_converges_within_s);
    for incr in open {
        let node = &plans[(incr.process % plans.len() as u64) as usize];
        loop {
            let pending = lab.invoke(
                Operation::new(
                    incr.process,
                    incr.key.clone(),
                    Op::Incr(1),
                    lab.now(),
                    lab.now(),
                    Outcome::Indeterminate,
                )
                .on(format!("n{}", node.id))
                .with_request_id(incr.request_id.clone()),
            );
            let url = format!("http://{}/v1/ap/{BUCKET}/{}/incr", node.http, incr.key);
            let body = json!({"by": 1, "request_id": incr.request_id});
            let reply = call(
                &client,
                reqwest::Method::POST,
                url,
                Some(&body),
                Duration::from_secs(5),
            )
            .await;
            if let Answer(200, _) = reply {
                lab.complete(pending, Outcome::Ok(Ret::Ack), None);
                break;
            }
            let (outcome, error) = ap_failure(&reply);
            lab.complete(pending, outcome, Some(error));
            if Instant::now() > retry_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // Convergence.
    let keys: Vec<String> = (0..scenario.workload.ap_keys)
        .flat_map(|i| [format!("v{i}"), format!("c{i}"), format!("s{i}")])
        .collect();
    let written: BTreeSet<String> = {
        let recorder = lab.recorder.lock().unwrap_or_else(|e| e.into_inner());
        recorder
            .history()
            .ops
            .iter()
            .filter(|op| op.op.is_mutation() && op.outcome.is_ok())
            .map(|op| op.key.clone())
            .collect()
    };
    let bound = Duration::from_secs_f64(scenario.expect.ap_converges_within_s);
    let (final_state, converged_after) = loop {
        let (state, problem) = read_replicas(&admin, plans, &keys, &written).await;
        match problem {
            None => break (state, Some(healed.elapsed())),
            Some(_) if healed.elapsed() > bound => {
                println!("chaos: not converged: {}", problem.unwrap_or_default());
                break (state, None);
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let finished = lab.now();
    let lab = Arc::try_unwrap(lab).map_err(|_| anyhow::anyhow!("the recorder is still shared"))?;
    let history = lab
        .recorder
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .finish(finished);
    // Check.
    let cp_history: History = history
        .ops
        .iter()
        .filter(|op| op.op.keyspace() == isle_chaos::Keyspace::Cp)
        .cloned()
        .collect();
    let rules = BTreeMap::from([(BUCKET.to_string(), MergeRule::Siblings)]);
    let mut verdicts = vec![
        linear::check(&cp_history),
        convergence::check(&history, &rules, &final_state),
    ];
    let mut expectations = Verdict::new("expectations");
    match converged_after {
        Some(after) => expectations.note(format!(
            "AP converged {:.2} s after the heal (bound {} s)",
            after.as_secs_f64(),
            scenario.expect.ap_converges_within_s
        )),
        None => expectations.violation(
            None,
            format!(
                "AP did not converge within {} s of the heal",
                scenario.expect.ap_converges_within_s
            ),
            Vec::new(),
        ),
    }
    for step in applied.iter().filter(|s| s.error.is_some()) {
        expectations.undecided(format!(
            "nemesis step at {:.2} s failed: {}",
            step.at_s,
            step.error.as_deref().unwrap_or_default()
        ));
    }
    verdicts.push(expectations);
    write_report(out, &history, &final_state, &applied, &verdicts)?;
    let summary = summary(name, &history, &verdicts);
    print!("{summary}");
    std::fs::write(out.join("summary.txt"), &summary)?;
    Ok(verdicts.iter().any(Verdict::is_violated))
}

fn write_report(
    out: &Path,
    history: &History,
    final_state: &FinalState,
    applied: &[Applied],
    verdicts: &[Verdict],
) -> anyhow::Result<()> {
    let file = std::fs::File::create(out.join("history.jsonl"))?;
    history.write_jsonl(std::io::BufWriter::new(file))?;
    std::fs::write(
        out.join("verdicts.json"),
        serde_json::to_string_pretty(verdicts)?,
    )?;
    std::fs::write(
        out.join("final-state.json"),
        serde_json::to_string_pretty(final_state)?,
    )?;
    std::fs::write(
        out.join("nemesis.json"),
        serde_json::to_string_pretty(applied)?,
    )?;
    Ok(())
}

fn summary(name: &str, history: &History, verdicts: &[Verdict]) -> String {
    use std::fmt::Write as _;
    let mut counts: BTreeMap<(String, &str), u64> = BTreeMap::new();
    for op in &history.ops {
        let outcome = match op.outcome {
            Outcome::Ok(_) => "ok",
            Outcome::Fail => "fail",
            Outcome::Indeterminate => "indeterminate",
        };
        *counts
            .entry((op.op.keyspace().to_string(), outcome))
            .or_default() += 1;
    }
    let mut text = String::new();
    let _ = writeln!(text, "scenario {name:?}: {} operations", history.len());
    for keyspace in ["cp", "ap"] {
        let get = |o: &str| counts.get(&(keyspace.to_string(), o)).copied().unwrap_or(0);
        let _ = writeln!(
            text,
            "  {keyspace}: {} ok, {} fail, {} indeterminate",
            get("ok"),
            get("fail"),
            get("indeterminate")
        );
    }
    for verdict in verdicts {
        let _ = writeln!(text, "{verdict}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_parse_and_cuts_become_rules() {
        let scenario: Scenario = toml::from_str(
            r#"
            nodes = 5
            duration_s = 10
            [workload]
            clients = 2
            [[nemesis]]
            at_s = 1
            action = "split"
            sides = [[1, 2, 3], [4]]
            [[nemesis]]
            at_s = 2
            action = "one-way"
            from = [1]
            to = [2]
            [[nemesis]]
            at_s = 3
            action = "heal"
            "#,
        )
        .unwrap();
        scenario.validate().unwrap();
        let split = rules_for(&scenario.nemesis[0].action, 5);
        // 4 alone, 5 alone (unnamed), 1..3 together.
        assert_eq!(split[&1].len(), 2);
        assert_eq!(split[&4].len(), 4);
        assert_eq!(split[&5].len(), 4);
        let one_way = rules_for(&scenario.nemesis[1].action, 5);
        assert_eq!(one_way[&1][0].direction, Direction::Outbound);
        assert_eq!(one_way[&2][0].direction, Direction::Inbound);
        assert!(rules_for(&Action::Heal, 5).is_empty());
    }

    #[test]
    fn bad_scenarios_are_refused() {
        let bad: Scenario = toml::from_str(
            "nodes = 3\nduration_s = 5\n[[nemesis]]\nat_s = 1\naction = \"split\"\nsides = [[9]]\n",
        )
        .unwrap();
        assert!(bad.validate().is_err());
        assert!(toml::from_str::<Scenario>("nodes = 3\nduration_s = 5\nbogus = 1\n").is_err());
    }
}
