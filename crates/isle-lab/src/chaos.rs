//! `isle chaos run SCENARIO.toml`: the chaos lab's process engine.
//!
//! A scenario file names a cluster size, a client workload, a nemesis schedule — windows of
//! [`isle_sim::nemesis::Nemesis`], the same vocabulary the simulator uses — and expectations.
//! The engine starts real `isle node` processes (fault injection on), either on loopback or,
//! with `engine = "netns"` (root), each in its own network namespace ([`netns`]); runs
//! concurrent clients against them — CP puts, linearizable gets and compare-and-sets, AP writes
//! with causal contexts to a `siblings` bucket, counter increments with request ids, set adds —
//! and records every invocation and completion in an [`isle_chaos::History`]. [`cluster`] makes
//! each nemesis (links through the kernel or the node's fault layer, kill -9 and restart,
//! SIGSTOP/SIGCONT, clock skew, CP membership). After the run it heals, retries indeterminate
//! increments with their request ids, waits for every AP replica to agree (each node's own
//! copy, `/v1/ap-local`), and runs the linearizability checker on the CP history, the
//! convergence checker on the AP history and the replicas' final state, and the scenario's
//! expectations (minority refusal time, recovery time, convergence time) on the history.
//!
//! The run directory holds `history.jsonl`, `verdicts.json`, `figures.json` (availability per
//! window, side and node; refusal and recovery times), `final-state.json`, `nemesis.json`,
//! `summary.txt`, `report.html` ([`report`]) and the nodes' logs. The command fails if any
//! checker finds a violation or an expectation is missed.
//!
//! Outcomes follow the node's own classification (`outcome` in every error body): refused or
//! invalid is `Fail`; unknown, a client timeout or a lost connection are `Indeterminate`;
//! a connection refused before anything was sent is `Fail`.

mod cluster;
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use isle_chaos::availability::{self, Availability};
use isle_chaos::convergence::{FinalCopy, FinalState};
use isle_chaos::history::Pending;
use isle_chaos::{
    ApValue, History, Keyspace, MergeRule, Op, Operation, Outcome, Recorder, Ret, Verdict,
    convergence, fencing, linear,
};
use isle_sim::nemesis::{Effects, Nemesis};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::NodeSpec;
use crate::netns;
use cluster::{AP_REPLICAS, BUCKET, Cluster, Fabric};
use isle_api::wire::cp::Fence;
use isle_api::wire::{ErrorBody, ap, cp};
use isle_env::{Random, SeededRandom};

/// `isle chaos ...`
#[derive(Subcommand, Debug)]
pub enum ChaosCommand {
    /// Run a scenario on real processes (loopback, or network namespaces as root) and check
    /// what happened.
    Run(RunArgs),
    /// Sweep seeds of the simulation engine (whole cluster in one process, simulated network
    /// and clock) and check every run.
    Sim(crate::chaos_sim::SimArgs),
}

/// Flags of `isle chaos run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The scenario file (TOML).
    scenario: PathBuf,
    /// Where to write the run's history, verdicts, report and logs (default
    /// `chaos-runs/<time>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the scenario's engine (`netns` needs root, `ip` and `nft`).
    #[arg(long, value_enum)]
    engine: Option<EngineKind>,
    /// Keep the nodes' data directories (by default only their logs are kept).
    #[arg(long)]
    keep_data: bool,
}

/// Where the nodes run and who breaks their links.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    /// Processes on 127.0.0.1; links broken by each node's transport fault layer.
    #[default]
    Loopback,
    /// One network namespace per node; links broken by the kernel (nftables). Needs root.
    Netns,
}

impl EngineKind {
    fn name(self) -> &'static str {
        match self {
            EngineKind::Loopback => "loopback",
            EngineKind::Netns => "netns",
        }
    }
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
    /// The engine (the `--engine` flag overrides it).
    #[serde(default)]
    engine: EngineKind,
    /// What the clients do.
    #[serde(default)]
    workload: Workload,
    /// The nemesis schedule.
    #[serde(default)]
    nemesis: Vec<Window>,
    /// What must hold.
    #[serde(default)]
    expect: Expect,
}

/// One nemesis window: `kind` and its fields as in [`Nemesis`] (e.g. `kind = "partition"`,
/// `sides = { groups = [[1, 2, 3], [4, 5]] }`), from `start_s` to `stop_s` seconds after the
/// clients start. Without `stop_s` it lasts until the clients stop; `restart` is instantaneous.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Window {
    /// When it starts, s.
    start_s: f64,
    /// When it stops, s.
    #[serde(default)]
    stop_s: Option<f64>,
    /// What.
    #[serde(flatten)]
    nemesis: Nemesis,
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
    /// CP lock cycle: grant a lease, acquire one of two locks, 1–3 writes fenced by its token,
    /// release (checked by the fencing checker).
    cp_lock: u32,
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
            cp_lock: 0,
        }
    }
}

/// Expectations checked besides the checkers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Expect {
    /// Every AP key's replicas agree within this many seconds of the final heal.
    ap_converges_within_s: f64,
    /// In every window that leaves nodes on a minority side (their two-way reachable set below
    /// a majority), the side definitely refuses a CP request — a write or a linearizable read;
    /// a `Fail`, not a timeout — within this many seconds of the window's start.
    minority_refuses_cp_within_s: Option<f64>,
    /// After every window that stops before the clients do, some CP request succeeds within
    /// this many seconds of its stop.
    cp_recovers_within_s: Option<f64>,
    /// Likewise for the AP keyspace.
    ap_recovers_within_s: Option<f64>,
}

impl Default for Expect {
    fn default() -> Self {
        Self {
            ap_converges_within_s: 30.0,
            minority_refuses_cp_within_s: None,
            cp_recovers_within_s: None,
            ap_recovers_within_s: None,
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
        if m.cp_put + m.cp_get + m.cp_cas + m.ap_put + m.ap_incr + m.ap_sadd + m.cp_lock == 0 {
            bail!("workload.mix has no operation with a weight above 0");
        }
        if (m.cp_put + m.cp_get + m.cp_cas > 0) && self.workload.cp_keys == 0 {
            bail!("workload.cp_keys must be above 0 when the mix has CP operations");
        }
        if (m.ap_put + m.ap_incr + m.ap_sadd > 0) && self.workload.ap_keys == 0 {
            bail!("workload.ap_keys must be above 0 when the mix has AP operations");
        }
        let ids: BTreeSet<u64> = (1..=self.nodes).collect();
        for window in &self.nemesis {
            let start = window.start_s;
            if !(start >= 0.0 && start <= self.duration_s) {
                bail!("a nemesis window starts at {start} s, outside the run");
            }
            if let Some(stop) = window.stop_s
                && !(stop >= start && stop <= self.duration_s)
            {
                bail!("the nemesis window starting at {start} s stops at {stop} s: outside it");
            }
            let named: Vec<u64> = match &window.nemesis {
                Nemesis::Partition { sides } => match sides {
                    isle_sim::nemesis::Sides::One(node) => vec![*node],
                    isle_sim::nemesis::Sides::Groups(groups) => {
                        groups.iter().flatten().copied().collect()
                    }
                    _ => Vec::new(),
                },
                Nemesis::Cut { links } => links.iter().flatten().copied().collect(),
                Nemesis::OneWay { from, to } => from.iter().chain(to).copied().collect(),
                Nemesis::Flaky { nodes, .. } | Nemesis::Corrupt { nodes, .. } => nodes.clone(),
                Nemesis::Crash { node }
                | Nemesis::Restart { node }
                | Nemesis::ClockSkew { node, .. }
                | Nemesis::Pause { node }
                | Nemesis::Membership { node } => vec![*node],
                Nemesis::MajoritiesRing | Nemesis::Bridge => Vec::new(),
            };
            if let Some(bad) = named.iter().find(|id| !ids.contains(id)) {
                bail!(
                    "the {} window at {start} s names node {bad}, not in 1..={}",
                    window.nemesis.name(),
                    self.nodes
                );
            }
        }
        Ok(())
    }
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
    /// An answer with this status and body.
    Answer(u16, String),
    /// Nothing was sent: the connection was refused.
    NotSent(String),
    /// Sent, but no answer (timeout, reset).
    Lost(String),
}

async fn call<B: Serialize>(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<&B>,
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
                Ok(text) => Answer(status, text),
                Err(err) => Reply::Lost(format!("reading the answer: {err}")),
            }
        }
        Err(err) if err.is_connect() => Reply::NotSent(err.to_string()),
        Err(err) if err.is_timeout() => Reply::Lost("client timeout".to_string()),
        Err(err) => Reply::Lost(err.to_string()),
    }
}

use Reply::Answer;

/// A body decoded as `T`, if it is one.
fn parse<T: DeserializeOwned>(body: &str) -> Option<T> {
    serde_json::from_str(body).ok()
}

/// No body: for the calls that send none.
const NO_BODY: Option<&()> = None;

/// A failed request's outcome, as the node classed it (`outcome`: refused, unknown or
/// invalid — one taxonomy for both keyspaces): refused and invalid were not applied; any other
/// answer, or a lost connection, leaves the operation's fate unknown. A request never sent was
/// not applied.
fn failure(reply: &Reply) -> (Outcome, String) {
    match reply {
        Answer(status, body) => {
            let error = parse::<ErrorBody>(body);
            let applied_maybe = error
                .as_ref()
                .and_then(|error| error.outcome)
                .is_none_or(|kind| !kind.not_applied());
            let outcome = if applied_maybe {
                Outcome::Indeterminate
            } else {
                Outcome::Fail
            };
            let kind = error.and_then(|error| error.kind);
            (outcome, kind.unwrap_or_else(|| format!("HTTP {status}")))
        }
        Reply::NotSent(err) => (Outcome::Fail, format!("not sent: {err}")),
        Reply::Lost(err) => (Outcome::Indeterminate, err.clone()),
    }
}

fn strings(values: &[String]) -> BTreeSet<String> {
    values.iter().cloned().collect()
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
    rng: SeededRandom,
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
        let weights = [
            m.cp_put, m.cp_get, m.cp_cas, m.ap_put, m.ap_incr, m.ap_sadd, m.cp_lock,
        ];
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
                6 => self.lock_cycle(&lab, &client, cp_timeout).await,
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
                let body = cp::PutBody {
                    key: key.to_string(),
                    value,
                    request_id: Some(request_id),
                    ..cp::PutBody::default()
                };
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
                        let (outcome, error) = failure(&reply);
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
                    NO_BODY,
                    timeout,
                )
                .await;
                let read = match &reply {
                    Answer(200, body) => parse::<cp::GetReply>(body),
                    _ => None,
                };
                match read {
                    Some(read) => {
                        let value = read.kvs.into_iter().next().map(|kv| kv.value);
                        self.seen.insert(key.to_string(), value.clone());
                        lab.complete(pending, Outcome::Ok(Ret::Value(value)), None);
                    }
                    _ => {
                        let (outcome, error) = failure(&reply);
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
                let (target, value) = match &expect {
                    Some(value) => ("value", cp::CompareValue::Text(value.clone())),
                    None => ("version", cp::CompareValue::Int(0)),
                };
                let body = cp::TxnBody {
                    compare: vec![cp::Compare {
                        key: key.to_string(),
                        prefix: false,
                        result: "=".into(),
                        target: target.into(),
                        value,
                    }],
                    success: vec![cp::TxnOp::Put {
                        key: key.to_string(),
                        lease: 0,
                        value: new.clone(),
                    }],
                    request_id: Some(request_id),
                    ..cp::TxnBody::default()
                };
                let reply = call(
                    client,
                    reqwest::Method::POST,
                    format!("{base}/v1/cp/txn"),
                    Some(&body),
                    timeout,
                )
                .await;
                match &reply {
                    Answer(200, body) => match parse::<cp::TxnReply>(body) {
                        Some(cp::TxnReply { succeeded, .. }) => {
                            if succeeded {
                                self.seen.insert(key.to_string(), Some(new));
                            }
                            lab.complete(pending, Outcome::Ok(Ret::Cas(succeeded)), None);
                        }
                        None => lab.complete(
                            pending,
                            Outcome::Indeterminate,
                            Some(format!("txn answer not understood: {body}")),
                        ),
                    },
                    _ => {
                        let (outcome, error) = failure(&reply);
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
                    NO_BODY,
                    timeout,
                )
                .await;
                let read = match &reply {
                    Answer(200 | 404, body) => parse::<ap::ReadReply>(body),
                    _ => None,
                };
                let (context, covers) = match read {
                    Some(read) => {
                        let values = strings(read.data.values());
                        let seen = if !read.found || values.is_empty() {
                            ApValue::Absent
                        } else {
                            ApValue::Values(values.clone())
                        };
                        lab.complete(pending, Outcome::Ok(Ret::Ap(seen)), None);
                        (Some(read.context), values)
                    }
                    None => {
                        let (outcome, error) = failure(&reply);
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
                let body = ap::PutBody {
                    context,
                    value,
                    ..ap::PutBody::default()
                };
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
                let body = ap::IncrBody {
                    by: 1,
                    request_id: Some(request_id.clone()),
                };
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
                let body = ap::MembersBody {
                    members: vec![member],
                    ..ap::MembersBody::default()
                };
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

    /// A lock cycle: a lease (not recorded: it decides nothing), acquire, 1–3 fenced writes of
    /// the lock's own register, release. A cycle stops at the first request that does not
    /// succeed; the lease then lets the lock go by itself.
    async fn lock_cycle(&mut self, lab: &Lab, client: &reqwest::Client, timeout: Duration) {
        let base = format!("http://{}/v1/cp", self.http);
        let lock = format!("lock{}", self.rng.below(2));
        let grant = call(
            client,
            reqwest::Method::POST,
            format!("{base}/lease/grant"),
            Some(&cp::LeaseGrantBody { id: 0, ttl_secs: 3 }),
            timeout,
        )
        .await;
        let Answer(200, lease) = grant else { return };
        let Some(cp::LeaseGrantReply { id: lease, .. }) = parse(&lease) else {
            return;
        };
        let pending = lab.invoke(self.operation(lab, &lock, Op::Acquire { lock: lock.clone() }));
        let reply = call(
            client,
            reqwest::Method::POST,
            format!("{base}/lock"),
            Some(&cp::LockBody {
                lease,
                name: lock.clone(),
                timeout_ms: 2_000,
            }),
            timeout,
        )
        .await;
        let (token, waiter) = match &reply {
            Answer(200, body) => match parse::<cp::LockReply>(body) {
                Some(held) => {
                    lab.complete(pending, Outcome::Ok(Ret::Token(held.token)), None);
                    (held.token, held.key)
                }
                None => {
                    let why = format!("lock answer not understood: {body}");
                    lab.complete(pending, Outcome::Indeterminate, Some(why));
                    return;
                }
            },
            _ => {
                // Waiting timed out or was cut: the waiter key may still win the lock.
                let (outcome, error) = failure(&reply);
                lab.complete(pending, outcome, Some(error));
                return;
            }
        };
        let register = format!("f-{lock}");
        for _ in 0..1 + self.rng.below(3) {
            let value = self.unique();
            let pending = lab.invoke(self.operation(
                lab,
                &register,
                Op::FencedWrite {
                    lock: lock.clone(),
                    token,
                    value: value.clone(),
                },
            ));
            let body = cp::PutBody {
                fence: Some(Fence {
                    lock: lock.clone(),
                    token,
                }),
                key: register.clone(),
                value,
                ..cp::PutBody::default()
            };
            let reply = call(
                client,
                reqwest::Method::POST,
                format!("{base}/put"),
                Some(&body),
                timeout,
            )
            .await;
            if let Answer(200, _) = reply {
                lab.complete(pending, Outcome::Ok(Ret::Ack), None);
            } else {
                let (outcome, error) = failure(&reply);
                lab.complete(pending, outcome, Some(error));
                return;
            }
        }
        let pending = lab.invoke(self.operation(
            lab,
            &lock,
            Op::Release {
                lock: lock.clone(),
                token,
            },
        ));
        let reply = call(
            client,
            reqwest::Method::POST,
            format!("{base}/unlock"),
            Some(&cp::UnlockBody { key: waiter }),
            timeout,
        )
        .await;
        if let Answer(200, _) = reply {
            lab.complete(pending, Outcome::Ok(Ret::Ack), None);
        } else {
            let (outcome, error) = failure(&reply);
            lab.complete(pending, outcome, Some(error));
        }
        let _ = call(
            client,
            reqwest::Method::POST,
            format!("{base}/lease/revoke"),
            Some(&cp::LeaseIdBody { id: lease }),
            timeout,
        )
        .await;
    }

    /// Completes an AP mutation: 200 is an acknowledgement, the rest as [`ap_failure`] says.
    fn finish_ap(&self, lab: &Lab, pending: Pending, reply: &Reply) -> Outcome {
        match reply {
            Answer(200, _) => {
                lab.complete(pending, Outcome::Ok(Ret::Ack), None);
                Outcome::Ok(Ret::Ack)
            }
            _ => {
                let (outcome, error) = failure(reply);
                lab.complete(pending, outcome.clone(), Some(error));
                outcome
            }
        }
    }
}

/// Waits until every node answers, hears every other, and the CP keyspace serves a
/// linearizable read.
async fn wait_ready(client: &reqwest::Client, plans: &[NodeSpec]) -> anyhow::Result<()> {
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

async fn ready(client: &reqwest::Client, plans: &[NodeSpec]) -> anyhow::Result<()> {
    for node in plans {
        let status = crate::admin::status(client, &node.http).await?;
        let reachable: BTreeSet<u64> = status.node.reachable.iter().map(|id| id.0).collect();
        if let Some(missing) = plans
            .iter()
            .find(|other| other.id != node.id && !reachable.contains(&other.id))
        {
            bail!("node {} does not hear node {} yet", node.id, missing.id);
        }
    }
    for node in plans {
        let path = "/v1/cp/get?key=chaos-ready";
        crate::admin::get::<cp::GetReply>(client, &node.http, path).await?;
    }
    Ok(())
}

/// Reads every node's own copy of every AP key. Returns the final state and, if not converged,
/// why.
async fn read_replicas(
    client: &reqwest::Client,
    plans: &[NodeSpec],
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
                NO_BODY,
                Duration::from_secs(2),
            )
            .await
            {
                Answer(200, body) => {
                    holders += 1;
                    let copy = parse::<ap::LocalReply>(&body);
                    let copy = copy.as_ref();
                    let digest = copy.and_then(|c| c.digest.clone());
                    digests.insert(digest.clone().unwrap_or_default());
                    state.insert_copy(
                        key.clone(),
                        format!("n{}", node.id),
                        FinalCopy {
                            primary: true,
                            value: Some(ap_value(copy.and_then(|c| c.value.as_ref()))),
                            digest,
                            duplicates: Vec::new(),
                        },
                    );
                }
                // With every node a primary, a node holding nothing is a copy the checker
                // must see (it differs from a tombstone).
                Answer(404, _) if plans.len() <= replicas => state.insert_copy(
                    key.clone(),
                    format!("n{}", node.id),
                    FinalCopy {
                        primary: true,
                        value: None,
                        digest: None,
                        duplicates: Vec::new(),
                    },
                ),
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

fn ap_value(value: Option<&ap::LocalValue>) -> ApValue {
    match value {
        Some(ap::LocalValue::Values(values)) if !values.is_empty() => {
            ApValue::Values(strings(values))
        }
        Some(ap::LocalValue::Counter(n)) => ApValue::Counter(*n),
        Some(ap::LocalValue::Members(members)) => ApValue::Set(strings(members)),
        Some(ap::LocalValue::Fields(fields)) => ApValue::Map(
            fields
                .iter()
                .filter_map(|(k, v)| match v {
                    ap::Field::Int(n) => Some((k.clone(), *n)),
                    ap::Field::Text(_) => None,
                })
                .collect(),
        ),
        Some(ap::LocalValue::Values(_) | ap::LocalValue::Absent(_)) | None => ApValue::Absent,
    }
}

/// A nemesis window as it happened.
#[derive(Debug, Clone, Serialize)]
struct Applied {
    /// The scenario's window.
    nemesis: Nemesis,
    /// When it started, s after the clients started.
    start_s: f64,
    /// When it stopped (the final heal for a window without a stop).
    stop_s: Option<f64>,
    /// The CP leader just before it started, as the nodes knew it (a pause of the leader is
    /// the zombie-leader case).
    cp_leader_before: Option<u64>,
    /// Whatever could not be done to make or undo it.
    errors: Vec<String>,
}

/// Runs an `isle chaos` subcommand.
pub async fn run(command: ChaosCommand) -> anyhow::Result<()> {
    match command {
        ChaosCommand::Run(args) => run_scenario(args).await,
        ChaosCommand::Sim(args) => crate::chaos_sim::run(args).await,
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
    if let Some(engine) = args.engine {
        scenario.engine = engine;
    }
    scenario.validate()?;
    if scenario.engine == EngineKind::Netns {
        netns::preflight()?;
    }
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
    // The run lives on its own thread with its own runtime: in the netns engine that thread
    // enters the client namespace, so every socket the workload opens is there. This task
    // watches for Ctrl-C / SIGTERM and then stops the nodes and deletes the namespaces itself.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let engine = scenario.engine;
    let keep_data = args.keep_data;
    let run_out = out.clone();
    std::thread::Builder::new()
        .name("chaos-run".into())
        .spawn(move || {
            let result = run_on_this_thread(scenario, run_out, keep_data);
            let _ = done_tx.send(result);
        })
        .context("starting the run's thread")?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    let violated = tokio::select! {
        biased;
        result = done_rx => result.context("the run's thread died")??,
        _ = tokio::signal::ctrl_c() => return interrupted(engine),
        _ = terminate.recv() => return interrupted(engine),
    };
    println!("run directory: {}", out.display());
    if violated {
        bail!(
            "the checkers found violations or an expectation was missed (see {})",
            out.display()
        );
    }
    Ok(())
}

/// Stops every node this run started and deletes its namespaces, then fails.
fn interrupted(engine: EngineKind) -> anyhow::Result<()> {
    eprintln!("chaos: interrupted; stopping the nodes");
    crate::kill_all();
    if engine == EngineKind::Netns {
        for error in netns::delete_own() {
            eprintln!("chaos: cleanup: {error}");
        }
    }
    bail!("interrupted")
}

fn run_on_this_thread(scenario: Scenario, out: PathBuf, keep_data: bool) -> anyhow::Result<bool> {
    let net = match scenario.engine {
        EngineKind::Netns => {
            let net = netns::Netns::create(scenario.nodes)?;
            net.enter_client()?;
            Some(net)
        }
        EngineKind::Loopback => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the run's runtime")?;
    runtime.block_on(async move {
        let plans = cluster::plan(scenario.nodes, &out.join("nodes"), net.as_ref())?;
        let fabric = match net {
            Some(net) => Fabric::Netns(net),
            None => Fabric::Loopback,
        };
        let mut cluster = Cluster::start(plans.clone(), fabric)?;
        let result = drive(&scenario, &mut cluster, &out).await;
        for error in cluster.shutdown() {
            eprintln!("chaos: cleanup: {error}");
        }
        if !keep_data {
            for node in &plans {
                let _ = std::fs::remove_dir_all(&node.data_dir);
            }
        }
        result
    })
}

/// A start or stop of the schedule.
enum Event {
    Start(usize),
    Stop(usize),
}

/// Runs the workload and nemesis, heals, checks. Ok(true) if something was violated.
async fn drive(scenario: &Scenario, cluster: &mut Cluster, out: &Path) -> anyhow::Result<bool> {
    let admin = crate::admin::http()?;
    let plans = cluster.specs();
    let name = scenario.name.as_deref().unwrap_or("unnamed");
    println!(
        "chaos: scenario {name:?}, {} nodes, {} engine, seed {}, {} s",
        scenario.nodes,
        scenario.engine.name(),
        scenario.seed,
        scenario.duration_s
    );
    wait_ready(&admin, &plans).await?;
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
            rng: SeededRandom::new(scenario.seed ^ process.wrapping_mul(0xA076_1D64_78BD_642F)),
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
    // The nemesis, in this task: starts and stops in time order, each moving the cluster to
    // the union of the active windows' effects.
    let mut events: Vec<(f64, Event)> = Vec::new();
    for (index, window) in scenario.nemesis.iter().enumerate() {
        events.push((window.start_s, Event::Start(index)));
        if let Some(stop) = window.stop_s.filter(|_| !window.nemesis.is_instant()) {
            events.push((stop, Event::Stop(index)));
        }
    }
    // Stops before starts at the same moment; otherwise in file order.
    events.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then_with(|| matches!(a.1, Event::Start(_)).cmp(&matches!(b.1, Event::Start(_))))
    });
    let mut applied: Vec<Applied> = scenario
        .nemesis
        .iter()
        .map(|w| Applied {
            nemesis: w.nemesis.clone(),
            start_s: w.start_s,
            stop_s: None,
            cp_leader_before: None,
            errors: Vec::new(),
        })
        .collect();
    let mut active: BTreeSet<usize> = BTreeSet::new();
    let mut events = events.into_iter().peekable();
    while let Some((at_s, event)) = events.next() {
        tokio::time::sleep_until((lab.start + Duration::from_secs_f64(at_s)).into()).await;
        // Everything due at this moment, as one change.
        let mut batch = vec![event];
        while let Some((next, _)) = events.peek()
            && *next <= at_s
        {
            if let Some((_, e)) = events.next() {
                batch.push(e);
            }
        }
        let mut restart = Vec::new();
        let mut touched = Vec::new();
        for event in batch {
            match event {
                Event::Start(i) => {
                    if let Nemesis::Restart { node } = applied[i].nemesis {
                        restart.push(node);
                    } else {
                        active.insert(i);
                    }
                    touched.push(i);
                }
                Event::Stop(i) => {
                    active.remove(&i);
                    touched.push(i);
                }
            }
        }
        let target = Effects::of(active.iter().map(|i| &applied[*i].nemesis), scenario.nodes);
        let leader = cluster.cp_leader().await;
        let errors = cluster.apply(&target, &restart).await;
        let now_s = lab.start.elapsed().as_secs_f64();
        for i in &touched {
            if active.contains(i) || applied[*i].nemesis.is_instant() {
                applied[*i].start_s = now_s;
                applied[*i].cp_leader_before = leader;
                if applied[*i].nemesis.is_instant() {
                    applied[*i].stop_s = Some(now_s);
                }
            } else {
                applied[*i].stop_s = Some(now_s);
            }
            applied[*i].errors.extend(errors.iter().cloned());
            let what = serde_json::to_string(&applied[*i].nemesis).unwrap_or_default();
            let verb = if applied[*i].nemesis.is_instant() {
                "now  "
            } else if active.contains(i) {
                "start"
            } else {
                "stop "
            };
            let leader = leader.map_or("none known".to_string(), |id| format!("n{id}"));
            println!("chaos: {now_s:6.2} s  {verb} {what} (CP leader {leader})");
        }
        for error in &errors {
            println!("chaos: {now_s:6.2} s  FAILED: {error}");
        }
    }
    let mut open = Vec::new();
    for task in tasks {
        open.extend(task.await.context("a client task panicked")?);
    }
    // The final heal.
    let heal_errors = cluster.apply(&Effects::default(), &[]).await;
    let healed = Instant::now();
    let healed_s = lab.start.elapsed().as_secs_f64();
    for i in active {
        applied[i].stop_s = Some(healed_s);
        applied[i].errors.extend(heal_errors.iter().cloned());
    }
    for error in &heal_errors {
        println!("chaos: {healed_s:6.2} s  heal FAILED: {error}");
    }
    println!(
        "chaos: {healed_s:6.2} s  clients stopped, healed; {} indeterminate increments to retry",
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
            let body = ap::IncrBody {
                by: 1,
                request_id: Some(incr.request_id.clone()),
            };
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
            let (outcome, error) = failure(&reply);
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
        let (state, problem) = read_replicas(&admin, &plans, &keys, &written).await;
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
        .filter(|op| op.op.keyspace() == Keyspace::Cp)
        .cloned()
        .collect();
    let rules = BTreeMap::from([(BUCKET.to_string(), MergeRule::Siblings)]);
    let mut verdicts = vec![
        linear::check(&cp_history),
        fencing::check(&cp_history),
        convergence::check(&history, &rules, &final_state),
    ];
    let figures = Figures::of(&history, &applied, scenario.nodes, scenario.duration_s);
    let mut expectations = figures.expectations(&scenario.expect, &applied);
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
    verdicts.push(expectations);
    let shades: Vec<report::Shade> = applied
        .iter()
        .map(|a| report::Shade {
            label: label(&a.nemesis),
            from_s: a.start_s,
            to_s: a.stop_s.unwrap_or(healed_s),
        })
        .collect();
    write_files(out, &history, &final_state, &applied, &verdicts, &figures)?;
    let page = report::html(
        name,
        scenario.engine.name(),
        &history,
        &shades,
        &verdicts,
        &figures.availability,
    );
    std::fs::write(out.join("report.html"), page)?;
    let summary = summary(name, &history, &verdicts);
    print!("{summary}");
    std::fs::write(out.join("summary.txt"), &summary)?;
    Ok(verdicts.iter().any(Verdict::is_violated))
}

/// A short label for a nemesis in reports.
fn label(nemesis: &Nemesis) -> String {
    // Every nemesis serializes as a map of its fields (and its `kind`), whatever they are.
    let fields: BTreeMap<String, serde_json::Value> = serde_json::to_value(nemesis)
        .and_then(serde_json::from_value)
        .unwrap_or_default();
    let mut text = nemesis.name().to_string();
    for (key, value) in fields.iter().filter(|(k, _)| *k != "kind") {
        text.push_str(&format!(" {key}={value}"));
    }
    text
}

/// Who hears whom both ways while `effects` hold: node → the nodes it exchanges messages
/// with, itself included (nothing for a node that is down or paused).
fn hears(effects: &Effects, nodes: u64) -> BTreeMap<u64, BTreeSet<u64>> {
    (1..=nodes)
        .filter(|id| !effects.down.contains(id) && !effects.paused.contains(id))
        .map(|id| {
            let set = (1..=nodes)
                .filter(|o| *o == id || (effects.delivers(id, *o) && effects.delivers(*o, id)))
                .collect();
            (id, set)
        })
        .collect()
}

/// A refusal time: how long after a window's start a minority side first definitely refused
/// a CP request.
#[derive(Debug, Clone, Serialize)]
struct Refusal {
    window: String,
    /// The side's nodes, `n4,n5`.
    side: String,
    after_s: Option<f64>,
    /// CP requests sent to the side during the window.
    cp_requests: usize,
}

/// The figures of a run: availability per window, side and node; refusal times.
#[derive(Debug, Clone, Serialize)]
struct Figures {
    availability: Vec<Availability>,
    refusals: Vec<Refusal>,
}

impl Figures {
    fn of(history: &History, applied: &[Applied], nodes: u64, duration_s: f64) -> Figures {
        let ns = |s: f64| (s.max(0.0) * 1e9) as u64;
        let mut availability = Vec::new();
        let mut refusals = Vec::new();
        for (index, window) in applied.iter().enumerate() {
            let name = format!("#{} {}", index + 1, label(&window.nemesis));
            let (from, to) = (
                ns(window.start_s),
                ns(window.stop_s.unwrap_or(duration_s).max(window.start_s)),
            );
            let effects = Effects::of([&window.nemesis], nodes);
            let heard = hears(&effects, nodes);
            let side_name = |set: &BTreeSet<u64>| {
                set.iter()
                    .map(|id| format!("n{id}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let sides: BTreeMap<String, BTreeSet<String>> = heard
                .values()
                .filter(|set| set.len() as u64 != nodes)
                .map(|set| {
                    (
                        side_name(set),
                        set.iter().map(|id| format!("n{id}")).collect(),
                    )
                })
                .collect();
            let w = availability::Window::new(name.clone(), from, to);
            availability.extend(availability::figures(history, &[w], &sides));
            // Sides without a majority (two-way) must refuse CP requests: writes, and
            // linearizable reads, which need the leader's quorum as much.
            let minorities: BTreeSet<&BTreeSet<u64>> = heard
                .values()
                .filter(|set| set.len() as u64 <= nodes / 2)
                .collect();
            for side in minorities {
                let members: BTreeSet<String> = side.iter().map(|id| format!("n{id}")).collect();
                let requests: Vec<&Operation> = history
                    .ops
                    .iter()
                    .filter(|op| {
                        op.node.as_ref().is_some_and(|n| members.contains(n))
                            && op.op.keyspace() == Keyspace::Cp
                            && op.invoke >= from
                            && op.invoke < to
                    })
                    .collect();
                let first = requests
                    .iter()
                    .filter(|op| op.outcome == Outcome::Fail)
                    .map(|op| op.complete.saturating_sub(from))
                    .min();
                refusals.push(Refusal {
                    window: name.clone(),
                    side: side_name(side),
                    after_s: first.map(|t| t as f64 / 1e9),
                    cp_requests: requests.len(),
                });
            }
        }
        Figures {
            availability,
            refusals,
        }
    }

    fn expectations(&self, expect: &Expect, applied: &[Applied]) -> Verdict {
        let mut verdict = Verdict::new("expectations");
        for refusal in &self.refusals {
            let text = format!(
                "{}: minority side {} first refused a CP request {}",
                refusal.window,
                refusal.side,
                refusal
                    .after_s
                    .map_or("never".to_string(), |s| format!("after {s:.2} s")),
            );
            match (expect.minority_refuses_cp_within_s, refusal.after_s) {
                (Some(bound), Some(after)) if after > bound => {
                    verdict.violation(None, format!("{text} (bound {bound} s)"), Vec::new());
                }
                (Some(bound), None) if refusal.cp_requests > 0 => {
                    verdict.violation(
                        None,
                        format!(
                            "{text} in {} CP requests (bound {bound} s)",
                            refusal.cp_requests
                        ),
                        Vec::new(),
                    );
                }
                (Some(_), None) => {
                    verdict.undecided(format!("{text}: no CP request was sent there"));
                }
                _ => verdict.note(text),
            }
        }
        for (index, window) in applied.iter().enumerate() {
            let name = format!("#{} {}", index + 1, label(&window.nemesis));
            for (keyspace, bound) in [
                (Keyspace::Cp, expect.cp_recovers_within_s),
                (Keyspace::Ap, expect.ap_recovers_within_s),
            ] {
                let row = self
                    .availability
                    .iter()
                    .find(|r| r.window == name && r.keyspace == keyspace && r.group == "all");
                let Some(row) = row else { continue };
                let after = row.first_ok_after.map(|t| t as f64 / 1e9);
                let text = format!(
                    "{name}: {keyspace} {}/{} ok during the window; first success {} after it",
                    row.ok,
                    row.requests,
                    after.map_or("never".to_string(), |s| format!("{s:.2} s"))
                );
                match (bound, after) {
                    (Some(bound), Some(after)) if after > bound => {
                        verdict.violation(None, format!("{text} (bound {bound} s)"), Vec::new());
                    }
                    // A window that lasted to the end has nothing after it.
                    (Some(bound), None) if window.stop_s.is_some() => verdict.undecided(format!(
                        "{text}: no request succeeded after it (bound {bound} s)"
                    )),
                    _ => verdict.note(text),
                }
            }
            if let Nemesis::Pause { node } = window.nemesis {
                let leader = window.cp_leader_before;
                verdict.note(format!(
                    "{name}: the CP leader was {} when n{node} was paused{}",
                    leader.map_or("unknown".to_string(), |id| format!("n{id}")),
                    if leader == Some(node) {
                        " (a zombie leader)"
                    } else {
                        ""
                    }
                ));
            }
            // A nemesis the lab could not make (or undo) is a failed run, not a passed one.
            for error in &window.errors {
                verdict.violation(
                    None,
                    format!("{name}: the nemesis failed: {error}"),
                    Vec::new(),
                );
            }
        }
        verdict
    }
}

fn write_files(
    out: &Path,
    history: &History,
    final_state: &FinalState,
    applied: &[Applied],
    verdicts: &[Verdict],
    figures: &Figures,
) -> anyhow::Result<()> {
    let file = std::fs::File::create(out.join("history.jsonl"))?;
    history.write_jsonl(std::io::BufWriter::new(file))?;
    std::fs::write(
        out.join("verdicts.json"),
        serde_json::to_string_pretty(verdicts)?,
    )?;
    std::fs::write(
        out.join("figures.json"),
        serde_json::to_string_pretty(figures)?,
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
    use isle_sim::nemesis::Sides;

    #[test]
    fn scenarios_use_the_nemesis_vocabulary() {
        let scenario: Scenario = toml::from_str(
            r#"
            nodes = 5
            duration_s = 10
            engine = "netns"
            [workload]
            clients = 2
            [[nemesis]]
            start_s = 1
            stop_s = 4
            kind = "partition"
            sides = { groups = [[1, 2, 3], [4, 5]] }
            [[nemesis]]
            start_s = 2
            kind = "one-way"
            from = [1]
            to = [2]
            [[nemesis]]
            start_s = 3
            stop_s = 5
            kind = "flaky"
            fail_rate = 0.05
            latency_ms_max = 100
            [[nemesis]]
            start_s = 5
            kind = "restart"
            node = 2
            [[nemesis]]
            start_s = 6
            stop_s = 8
            kind = "partition"
            sides = "majority-minority"
            "#,
        )
        .unwrap();
        scenario.validate().unwrap();
        assert_eq!(scenario.engine, EngineKind::Netns);
        assert_eq!(
            scenario.nemesis[0].nemesis,
            Nemesis::Partition {
                sides: Sides::Groups(vec![vec![1, 2, 3], vec![4, 5]])
            }
        );
        assert_eq!(scenario.nemesis[1].stop_s, None);
        assert_eq!(scenario.nemesis[3].nemesis, Nemesis::Restart { node: 2 });
        let heard = hears(&Effects::of([&scenario.nemesis[0].nemesis], 5), 5);
        assert_eq!(heard[&4], BTreeSet::from([4, 5]));
        assert_eq!(heard[&1], BTreeSet::from([1, 2, 3]));
    }

    #[test]
    fn bad_scenarios_are_refused() {
        let bad: Scenario = toml::from_str(
            "nodes = 3\nduration_s = 5\n[[nemesis]]\nstart_s = 1\nkind = \"crash\"\nnode = 9\n",
        )
        .unwrap();
        assert!(bad.validate().is_err());
        let late: Scenario = toml::from_str(
            "nodes = 3\nduration_s = 5\n[[nemesis]]\nstart_s = 1\nstop_s = 9\nkind = \"bridge\"\n",
        )
        .unwrap();
        assert!(late.validate().is_err());
        assert!(toml::from_str::<Scenario>("nodes = 3\nduration_s = 5\nbogus = 1\n").is_err());
    }

    #[test]
    fn a_minority_refusal_is_timed_from_the_window_start() {
        let second = 1_000_000_000;
        let mut history = History::new();
        history.push(
            Operation::new(
                0,
                "k",
                Op::Write("a".into()),
                2 * second,
                3 * second,
                Outcome::Fail,
            )
            .on("n3"),
        );
        history.push(
            Operation::new(
                1,
                "k",
                Op::Write("b".into()),
                2 * second,
                2 * second + 5,
                Outcome::Ok(Ret::Ack),
            )
            .on("n1"),
        );
        let applied = [Applied {
            nemesis: Nemesis::Partition {
                sides: Sides::One(3),
            },
            start_s: 1.0,
            stop_s: Some(5.0),
            cp_leader_before: None,
            errors: Vec::new(),
        }];
        let figures = Figures::of(&history, &applied, 3, 10.0);
        assert_eq!(figures.refusals.len(), 1);
        assert_eq!(figures.refusals[0].side, "n3");
        assert_eq!(figures.refusals[0].after_s, Some(2.0));
        let strict = Expect {
            minority_refuses_cp_within_s: Some(1.0),
            ..Expect::default()
        };
        assert!(figures.expectations(&strict, &applied).is_violated());
        let loose = Expect {
            minority_refuses_cp_within_s: Some(3.0),
            ..Expect::default()
        };
        assert!(!figures.expectations(&loose, &applied).is_violated());
    }
}
