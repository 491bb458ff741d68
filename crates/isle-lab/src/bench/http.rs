//! The HTTP benches (`--protocol http`), as they were before the gRPC and RESP ones.
//!
//! `isle bench cp --protocol http`: load against a running cluster's CP keyspace over
//! `/v1/cp` — puts, linearizable gets and stale gets at several concurrencies — printing
//! throughput and latency percentiles, and one JSON line per run for tools. `--etcd URL` runs
//! the same load against etcd's HTTP/JSON gateway, so both are measured the same way in one run.
//!
//! `isle bench ap --protocol http`: load against the AP keyspace (`/v1/ap`) — puts, gets or
//! counter increments over a key space, spread across one or more nodes — once per consistency
//! level (`--levels one,quorum,all`), printing one row per level.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use isle_api::wire::{ErrorBody, ap, cp};
use serde::Serialize;

use super::percentile;

/// What `isle bench cp --protocol http` does (its flags, defaults applied).
pub(super) struct CpHttp {
    /// HTTP address of the Isle node to send requests to.
    pub http: String,
    /// Benchmark etcd instead, through its v3 HTTP/JSON gateway at this address (host:port).
    pub etcd: Option<String>,
    /// Concurrent clients per phase.
    pub clients: Vec<usize>,
    /// Length of a phase.
    pub duration: Duration,
    /// Value size in bytes.
    pub value_bytes: usize,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Put,
    Get,
    StaleGet,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::StaleGet => "stale-get",
        }
    }
}

/// Body of etcd's gateway `POST /v3/kv/put` (base64 keys and values).
#[derive(Serialize)]
struct EtcdPut {
    key: String,
    value: String,
}

/// Body of etcd's gateway `POST /v3/kv/range`.
#[derive(Serialize)]
struct EtcdRange {
    key: String,
    serializable: bool,
}

/// One CP phase's results: a row of the table and an element of the JSON line (fields in
/// alphabetical order, as the line has always been written).
#[derive(Serialize)]
struct CpPhase {
    clients: usize,
    errors: u64,
    max_ms: f64,
    op: &'static str,
    ops: usize,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    target: &'static str,
}

/// The JSON line closing a run.
#[derive(Serialize)]
struct Results<T> {
    bench: &'static str,
    results: Vec<T>,
}

/// Where requests go and how they are shaped.
#[derive(Clone)]
enum Target {
    Isle(String),
    Etcd(String),
}

fn b64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Target {
    fn request(
        &self,
        client: &reqwest::Client,
        op: Op,
        key: &str,
        value: &str,
    ) -> reqwest::RequestBuilder {
        match (self, op) {
            (Target::Isle(addr), Op::Put) => {
                client
                    .post(format!("http://{addr}/v1/cp/put"))
                    .json(&cp::PutBody {
                        key: key.to_string(),
                        value: value.to_string(),
                        ..cp::PutBody::default()
                    })
            }
            (Target::Isle(addr), Op::Get | Op::StaleGet) => {
                let consistency = if matches!(op, Op::StaleGet) {
                    cp::Consistency::Stale
                } else {
                    cp::Consistency::Linearizable
                };
                let query = cp::GetQuery {
                    consistency,
                    key: key.to_string(),
                    ..cp::GetQuery::default()
                };
                client.get(format!("http://{addr}/v1/cp/get")).query(&query)
            }
            (Target::Etcd(addr), Op::Put) => {
                client
                    .post(format!("http://{addr}/v3/kv/put"))
                    .json(&EtcdPut {
                        key: b64(key.as_bytes()),
                        value: b64(value.as_bytes()),
                    })
            }
            (Target::Etcd(addr), Op::Get | Op::StaleGet) => client
                .post(format!("http://{addr}/v3/kv/range"))
                .json(&EtcdRange {
                    key: b64(key.as_bytes()),
                    serializable: matches!(op, Op::StaleGet),
                }),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Target::Isle(_) => "isle",
            Target::Etcd(_) => "etcd",
        }
    }
}

struct Phase {
    latencies_us: Vec<u64>,
    errors: u64,
}

async fn client_loop(
    target: Target,
    client: reqwest::Client,
    op: Op,
    worker: usize,
    value: Arc<String>,
    until: Instant,
    phase: Arc<Mutex<Phase>>,
) {
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut i = 0u64;
    while Instant::now() < until {
        let key = match op {
            Op::Put => format!("bench-{worker}-{}", i % 1000),
            Op::Get | Op::StaleGet => format!("bench-{worker}-0"),
        };
        i += 1;
        let started = Instant::now();
        let ok = match target.request(&client, op, &key, &value).send().await {
            Ok(response) => response.status().is_success(),
            Err(_) => false,
        };
        if ok {
            latencies.push(started.elapsed().as_micros() as u64);
        } else {
            errors += 1;
        }
    }
    if let Ok(mut phase) = phase.lock() {
        phase.latencies_us.extend(latencies);
        phase.errors += errors;
    }
}

async fn run_phase(
    target: &Target,
    op: Op,
    clients: usize,
    args: &CpHttp,
) -> anyhow::Result<CpPhase> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(clients)
        .build()?;
    let value = Arc::new("x".repeat(args.value_bytes));
    // Seed the keys the readers read.
    for worker in 0..clients {
        let key = format!("bench-{worker}-0");
        target
            .request(&client, Op::Put, &key, &value)
            .send()
            .await
            .context("seeding keys")?;
    }
    let phase = Arc::new(Mutex::new(Phase {
        latencies_us: Vec::new(),
        errors: 0,
    }));
    let started = Instant::now();
    let until = started + args.duration;
    let tasks: Vec<_> = (0..clients)
        .map(|worker| {
            let task = client_loop(
                target.clone(),
                client.clone(),
                op,
                worker,
                value.clone(),
                until,
                phase.clone(),
            );
            tokio::spawn(task)
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut phase = phase
        .lock()
        .map_err(|_| anyhow::anyhow!("a client task panicked"))?;
    phase.latencies_us.sort_unstable();
    let ok = phase.latencies_us.len();
    Ok(CpPhase {
        clients,
        errors: phase.errors,
        max_ms: phase.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0,
        op: op.name(),
        ops: ok,
        ops_per_sec: (ok as f64 / elapsed).round(),
        p50_ms: percentile(&phase.latencies_us, 0.50) as f64 / 1000.0,
        p99_ms: percentile(&phase.latencies_us, 0.99) as f64 / 1000.0,
        target: target.name(),
    })
}

/// Runs `isle bench cp --protocol http`.
pub(super) async fn run_cp(args: CpHttp) -> anyhow::Result<()> {
    let target = match &args.etcd {
        Some(addr) => Target::Etcd(addr.clone()),
        None => Target::Isle(args.http.clone()),
    };
    println!(
        "{:<6} {:<10} {:>7} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "TARGET", "OP", "CLIENTS", "OPS", "OPS/S", "P50 ms", "P99 ms", "MAX ms", "ERRORS"
    );
    let mut lines = Vec::new();
    for op in [Op::Put, Op::Get, Op::StaleGet] {
        for &clients in &args.clients {
            let result = run_phase(&target, op, clients.max(1), &args).await?;
            println!(
                "{:<6} {:<10} {:>7} {:>9} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>7}",
                result.target,
                result.op,
                result.clients,
                result.ops,
                result.ops_per_sec,
                result.p50_ms,
                result.p99_ms,
                result.max_ms,
                result.errors,
            );
            lines.push(result);
        }
    }
    let line = Results {
        bench: "cp",
        results: lines,
    };
    println!("{}", serde_json::to_string(&line)?);
    Ok(())
}

/// The flags only `isle bench ap --protocol http` takes (giving one selects that protocol);
/// --seconds, --keys (gets first write each of `bench-0` ... `bench-<N-1>`; counters are
/// `bench-counter-<i>`) and --value-bytes are shared.
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "HTTP protocol (/v1/ap)")]
pub struct ApHttpArgs {
    /// HTTP addresses of the nodes to spread requests over (comma-separated or repeated)
    /// [default: 127.0.0.1:8401].
    #[arg(long, value_delimiter = ',')]
    http: Option<Vec<String>>,
    /// Also spread requests over every other member the first node knows.
    #[arg(long)]
    discover: bool,
    /// Bucket to write to [default: default].
    #[arg(long)]
    bucket: Option<String>,
    /// What each request does: put (a value, with the context of the worker's previous put
    /// of that key, so siblings do not pile up), get, or incr (a counter). Comma-separated:
    /// each runs in turn [default: put].
    #[arg(long, value_enum, value_delimiter = ',')]
    op: Option<Vec<ApOp>>,
    /// Consistency level (W for writes, R for reads): one, quorum, all, or a number
    /// [default: quorum].
    #[arg(long, visible_alias = "r")]
    w: Option<String>,
    /// Run once per level, e.g. `one,quorum,all` (overrides --w).
    #[arg(long, value_delimiter = ',')]
    levels: Vec<String>,
    /// Count only primary replicas (no sloppy quorum).
    #[arg(long)]
    strict: bool,
    /// Requests in flight at once [default: 16].
    #[arg(long)]
    concurrency: Option<usize>,
}

impl ApHttpArgs {
    /// Whether any flag of the HTTP bench was given.
    pub(super) fn given(&self) -> bool {
        self.http.is_some()
            || self.discover
            || self.bucket.is_some()
            || self.op.is_some()
            || self.w.is_some()
            || !self.levels.is_empty()
            || self.strict
            || self.concurrency.is_some()
    }
}

/// What an AP benchmark request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ApOp {
    Put,
    Get,
    Incr,
}

impl ApOp {
    fn name(self) -> &'static str {
        match self {
            ApOp::Put => "put",
            ApOp::Get => "get",
            ApOp::Incr => "incr",
        }
    }
}

/// One AP run's fixed shape.
struct ApRun {
    client: reqwest::Client,
    nodes: Vec<String>,
    bucket: String,
    op: ApOp,
    level: String,
    strict: bool,
    value: String,
    keys: usize,
    workers: usize,
}

/// What one worker measured.
#[derive(Default)]
struct ApTally {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl ApRun {
    /// The `i`-th key of worker `worker`: workers own disjoint keys (`worker`, `worker +
    /// workers`, ...), so their puts never race, unless there are more workers than keys.
    fn key(&self, worker: usize, i: u64) -> String {
        let keys = self.keys.max(1) as u64;
        let workers = self.workers.max(1) as u64;
        let worker = worker as u64;
        let index = if worker < keys {
            worker + workers * (i % (keys - worker).div_ceil(workers))
        } else {
            worker % keys
        };
        match self.op {
            // Counters under their own names: a key holding a value refuses increments.
            ApOp::Incr => format!("bench-counter-{index}"),
            ApOp::Put | ApOp::Get => format!("bench-{index}"),
        }
    }

    /// Sends one request; the new context of a put, or why it failed.
    async fn request(
        &self,
        node: &str,
        key: &str,
        context: Option<&str>,
    ) -> Result<Option<String>, String> {
        let path = format!("http://{node}/v1/ap/{}/{key}", self.bucket);
        let level = if self.op == ApOp::Get { "r" } else { "w" };
        let query = [
            (level, self.level.as_str()),
            ("strict", if self.strict { "true" } else { "false" }),
        ];
        let request = match self.op {
            ApOp::Put => {
                let body = ap::PutBody {
                    context: context.map(str::to_string),
                    value: self.value.clone(),
                    ..ap::PutBody::default()
                };
                self.client.put(&path).query(&query).json(&body)
            }
            ApOp::Get => self.client.get(&path).query(&query),
            ApOp::Incr => {
                let body = ap::IncrBody {
                    by: 1,
                    request_id: None,
                };
                self.client
                    .post(format!("{path}/incr"))
                    .query(&query)
                    .json(&body)
            }
        };
        let response = request.send().await.map_err(|err| err.to_string())?;
        let status = response.status();
        // A read that finds nothing has still asked its replicas: it counts as done.
        let absent = self.op == ApOp::Get && status == reqwest::StatusCode::NOT_FOUND;
        let text = response.text().await.map_err(|err| err.to_string())?;
        if !status.is_success() && !absent {
            let why = serde_json::from_str::<ErrorBody>(&text).map_or(text, |body| body.error);
            return Err(format!("HTTP {status}: {why}"));
        }
        if self.op != ApOp::Put {
            return Ok(None);
        }
        serde_json::from_str::<ap::WriteReply>(&text)
            .map(|reply| Some(reply.context))
            .map_err(|err| format!("a put's answer not understood ({err}): {text}"))
    }
}

async fn ap_worker(run: Arc<ApRun>, worker: usize, until: Instant) -> ApTally {
    let mut tally = ApTally::default();
    let mut contexts: HashMap<String, String> = HashMap::new();
    let mut i = 0u64;
    while Instant::now() < until {
        let key = run.key(worker, i);
        let node = &run.nodes[(worker + i as usize) % run.nodes.len()];
        i += 1;
        let started = Instant::now();
        match run
            .request(node, &key, contexts.get(&key).map(String::as_str))
            .await
        {
            Ok(context) => {
                tally
                    .latencies_us
                    .push(started.elapsed().as_micros() as u64);
                if let (ApOp::Put, Some(context)) = (run.op, context) {
                    contexts.insert(key, context);
                }
            }
            Err(why) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(why);
            }
        }
    }
    tally
}

/// Writes every key twice (the second time with the first's context, so a rerun leaves no
/// siblings behind), for reads to find values.
async fn prefill(run: &ApRun) -> anyhow::Result<()> {
    let fill = Arc::new(ApRun {
        client: run.client.clone(),
        nodes: run.nodes.clone(),
        bucket: run.bucket.clone(),
        op: ApOp::Put,
        level: "quorum".into(),
        strict: false,
        value: run.value.clone(),
        keys: run.keys,
        workers: run.workers,
    });
    let tasks: Vec<_> = (0..run.workers)
        .map(|worker| {
            let fill = fill.clone();
            tokio::spawn(async move {
                let mut index = worker;
                while index < fill.keys {
                    let key = format!("bench-{index}");
                    let node = &fill.nodes[index % fill.nodes.len()];
                    let context = fill.request(node, &key, None).await?;
                    fill.request(node, &key, context.as_deref()).await?;
                    index += fill.workers;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await?
            .map_err(|why| anyhow::anyhow!("writing the keys to read: {why}"))?;
    }
    Ok(())
}

/// One AP phase's results (fields in alphabetical order, as the JSON line has always been
/// written).
#[derive(Serialize)]
struct ApPhase {
    concurrency: usize,
    errors: u64,
    first_error: Option<String>,
    level: String,
    max_ms: f64,
    nodes: usize,
    op: &'static str,
    ops: usize,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    strict: bool,
}

async fn run_ap_phase(run: Arc<ApRun>, duration: Duration) -> anyhow::Result<ApPhase> {
    let started = Instant::now();
    let until = started + duration;
    let tasks: Vec<_> = (0..run.workers)
        .map(|worker| tokio::spawn(ap_worker(run.clone(), worker, until)))
        .collect();
    let mut all = ApTally::default();
    for task in tasks {
        let tally = task.await?;
        all.latencies_us.extend(tally.latencies_us);
        all.errors += tally.errors;
        if all.first_error.is_none() {
            all.first_error = tally.first_error;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let ok = all.latencies_us.len();
    Ok(ApPhase {
        concurrency: run.workers,
        errors: all.errors,
        first_error: all.first_error,
        level: run.level.clone(),
        max_ms: all.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0,
        nodes: run.nodes.len(),
        op: run.op.name(),
        ops: ok,
        ops_per_sec: (ok as f64 / elapsed).round(),
        p50_ms: percentile(&all.latencies_us, 0.50) as f64 / 1000.0,
        p99_ms: percentile(&all.latencies_us, 0.99) as f64 / 1000.0,
        strict: run.strict,
    })
}

/// Runs `isle bench ap --protocol http`: `keys` distinct keys, values of `value_size` bytes.
pub(super) async fn run_ap(
    args: ApHttpArgs,
    duration: Duration,
    keys: u64,
    value_size: usize,
) -> anyhow::Result<()> {
    let http = args.http.unwrap_or_else(|| vec!["127.0.0.1:8401".into()]);
    let bucket = args.bucket.unwrap_or_else(|| "default".into());
    let ops = args.op.unwrap_or_else(|| vec![ApOp::Put]);
    let keys = usize::try_from(keys).unwrap_or(usize::MAX);
    let mut nodes: Vec<String> = http
        .iter()
        .map(|addr| {
            addr.trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string()
        })
        .filter(|addr| !addr.is_empty())
        .collect();
    let Some(first) = nodes.first().cloned() else {
        anyhow::bail!("give at least one node with --http");
    };
    if args.discover {
        for (_, addr) in crate::admin::members(&crate::admin::http()?, &first).await? {
            if !nodes.contains(&addr) {
                nodes.push(addr);
            }
        }
    }
    let workers = args.concurrency.unwrap_or(16).max(1);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(workers)
        .build()?;
    let levels = if args.levels.is_empty() {
        vec![args.w.clone().unwrap_or_else(|| "quorum".into())]
    } else {
        args.levels.clone()
    };
    let shape = |op: ApOp, level: &str| ApRun {
        client: client.clone(),
        nodes: nodes.clone(),
        bucket: bucket.clone(),
        op,
        level: level.to_string(),
        strict: args.strict,
        value: "x".repeat(value_size),
        keys: keys.max(1),
        workers,
    };
    println!(
        "AP bench: bucket {}, {} node(s) [{}], {} keys, concurrency {}, {} s per run, {}-byte values",
        bucket,
        nodes.len(),
        nodes.join(","),
        keys.max(1),
        workers,
        duration.as_secs_f64(),
        value_size
    );
    println!(
        "{:<5} {:<13} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "OP", "LEVEL", "OPS", "OPS/S", "P50 ms", "P99 ms", "MAX ms", "ERRORS"
    );
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for &op in &ops {
        if op == ApOp::Get {
            prefill(&shape(op, "quorum")).await?;
        }
        for level in &levels {
            let result = run_ap_phase(Arc::new(shape(op, level)), duration).await?;
            let level = if args.strict {
                format!("{level} strict")
            } else {
                level.clone()
            };
            println!(
                "{:<5} {:<13} {:>9} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>7}",
                op.name(),
                level,
                result.ops,
                result.ops_per_sec,
                result.p50_ms,
                result.p99_ms,
                result.max_ms,
                result.errors,
            );
            if let Some(why) = &result.first_error {
                errors.push(format!("{} {level}: {why}", op.name()));
            }
            lines.push(result);
        }
    }
    for line in errors {
        println!("first error of {line}");
    }
    let line = Results {
        bench: "ap",
        results: lines,
    };
    println!("{}", serde_json::to_string(&line)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::BenchCommand;
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(b64(b""), "");
        assert_eq!(b64(b"f"), "Zg==");
        assert_eq!(b64(b"fo"), "Zm8=");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(b"bench-1-0"), "YmVuY2gtMS0w");
    }

    #[test]
    fn ap_workers_own_disjoint_keys_covering_the_key_space() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            bench: BenchCommand,
        }
        let parsed = Cli::try_parse_from([
            "bench",
            "ap",
            "--http",
            "a:1,b:2",
            "--levels",
            "one,quorum,all",
            "--op",
            "put,get",
        ])
        .expect("parses");
        let BenchCommand::Ap(args) = parsed.bench else {
            panic!("ap")
        };
        let args = args.http;
        assert!(args.given());
        assert_eq!(
            args.http.as_deref(),
            Some(["a:1".into(), "b:2".into()].as_slice())
        );
        assert_eq!(args.levels, ["one", "quorum", "all"]);
        assert_eq!(args.op, Some(vec![ApOp::Put, ApOp::Get]));
        let run = ApRun {
            client: reqwest::Client::new(),
            nodes: vec!["a".into()],
            bucket: "default".into(),
            op: ApOp::Put,
            level: "one".into(),
            strict: false,
            value: String::new(),
            keys: 10,
            workers: 3,
        };
        let mut seen = std::collections::BTreeMap::new();
        for worker in 0..3 {
            for i in 0..20 {
                let owner = seen.entry(run.key(worker, i)).or_insert(worker);
                assert_eq!(*owner, worker, "a key shared by two workers");
            }
        }
        assert_eq!(seen.len(), 10);
    }
}
