//! `isle bench cp` and `isle bench ap`: load in the users' own protocols — the etcd v3 gRPC
//! API for the CP keyspace (`grpc.rs`), RESP, the Redis protocol, for the AP keyspace
//! (`resp.rs`) — against Isle and, with `--against`, against etcd or Redis in the same run.
//! Each phase (one operation at one client count) runs on Isle, then on the other system, so
//! both see the same machine conditions; a ratio line follows each pair. Every phase prints a
//! table row and one JSON line (`--json-out FILE` appends the JSON lines to a file, which
//! `docs/perf/render.py` turns into a markdown table).
//!
//! The older HTTP benches (`/v1/cp` or etcd's JSON gateway; `/v1/ap` per consistency level)
//! stay available with `--protocol http` (`http.rs`).

mod grpc;
mod http;
mod resp;

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use isle_env::SeededRandom;
use serde_json::{Value, json};

/// `isle bench ...`
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Benchmark the CP keyspace over the etcd v3 gRPC API (against etcd too, with --against).
    Cp(Box<CpBenchArgs>),
    /// Benchmark the AP keyspace over RESP, the Redis protocol (against Redis too, with
    /// --against).
    Ap(Box<ApBenchArgs>),
}

/// The protocol `isle bench cp` speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CpProtocol {
    /// The etcd v3 gRPC API (KV service), as etcd clients use it.
    Grpc,
    /// Isle's HTTP API `/v1/cp` (or etcd's HTTP/JSON gateway with --etcd).
    Http,
}

/// The protocol `isle bench ap` speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ApProtocol {
    /// RESP2, the Redis protocol, as Redis clients use it.
    Resp,
    /// Isle's HTTP API `/v1/ap`, once per consistency level.
    Http,
}

/// Flags shared by the gRPC and RESP benches.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Concurrent clients per phase, comma-separated [default: 1,16,64,256 for cp over gRPC,
    /// 1,16,50,64,256 for ap over RESP, 1,16,64 for cp over HTTP].
    #[arg(long, value_delimiter = ',')]
    clients: Option<Vec<usize>>,
    /// Seconds per phase.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Distinct keys (`bench/00000000` ...), picked uniformly at random by each client
    /// [default: 10000; 1000 for ap over HTTP].
    #[arg(long)]
    keys: Option<u64>,
    /// Value size in bytes [default: 256; 100 over HTTP].
    #[arg(long, visible_alias = "value-size")]
    value_bytes: Option<usize>,
    /// How long one request may take; a request that takes longer counts as an error.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Name of the system behind --endpoints, in the table and the JSON lines.
    #[arg(long, default_value = "isle")]
    name: String,
    /// Append every JSON line to this file too.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// Flags of `isle bench cp`.
#[derive(Args, Debug)]
pub struct CpBenchArgs {
    /// Protocol [default: grpc; http when --http or --etcd is given].
    #[arg(long, value_enum)]
    protocol: Option<CpProtocol>,
    /// gRPC endpoints of the system under test, comma-separated (`isle local --nodes 3`
    /// serves gRPC on 9401-9403).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:9401,127.0.0.1:9402,127.0.0.1:9403"
    )]
    endpoints: Vec<String>,
    /// gRPC endpoints of a second system (etcd) to run every phase on too, interleaved.
    #[arg(long, value_delimiter = ',')]
    against: Vec<String>,
    /// Name of the system behind --against.
    #[arg(long, default_value = "etcd")]
    against_name: String,
    /// Operations, each a phase per client count: put (Put), get (linearizable Range), sget
    /// (serializable Range), txn (Txn: if the key's mod revision > 0 then Put, else Put).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "put,get,sget"
    )]
    ops: Vec<grpc::CpOp>,
    /// gRPC channels (TCP connections) per endpoint; clients are spread round-robin over
    /// all channels of all endpoints.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    #[command(flatten)]
    load: LoadArgs,
    /// With --protocol http: the HTTP address of the Isle node to send requests to.
    #[arg(long, help_heading = "HTTP protocol")]
    http: Option<String>,
    /// With --protocol http: benchmark etcd instead, through its v3 HTTP/JSON gateway at this
    /// address (host:port).
    #[arg(long, help_heading = "HTTP protocol")]
    etcd: Option<String>,
}

/// Flags of `isle bench ap`.
#[derive(Args, Debug)]
pub struct ApBenchArgs {
    /// Protocol [default: resp; http when an HTTP-only flag (--http, --levels, ...) is given].
    #[arg(long, value_enum)]
    protocol: Option<ApProtocol>,
    /// RESP endpoints of the system under test, comma-separated (`isle local --nodes 3` serves
    /// RESP on 10401-10403); client i connects to endpoint i mod N. Isle answers at its RESP
    /// default, R = W = quorum, unless --isle-consistency says otherwise.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:10401,127.0.0.1:10402,127.0.0.1:10403"
    )]
    endpoints: Vec<String>,
    /// RESP endpoints of a second system (a redis-server) to run every phase on too,
    /// interleaved.
    #[arg(long, value_delimiter = ',')]
    against: Vec<String>,
    /// Name of the system behind --against.
    #[arg(long, default_value = "redis")]
    against_name: String,
    /// Operations, each a phase per client count: set (SET key value), get (GET of prefilled
    /// keys), incr (INCR of counter keys), sadd (SADD of one of 100 members to set keys).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "set,get,incr,sadd"
    )]
    ops: Vec<resp::ApOp>,
    /// Commands in flight per connection: N commands are sent, then N replies read.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Read and write levels "R,W" (one, quorum, all, or a number) sent to every --endpoints
    /// connection as `ISLE.CONSISTENCY R W` (not to --against); unset keeps Isle's RESP
    /// default, quorum/quorum.
    #[arg(long)]
    isle_consistency: Option<String>,
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    http: http::ApHttpArgs,
}

/// Runs `isle bench ...`.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Cp(args) => run_cp(*args).await,
        BenchCommand::Ap(args) => run_ap(*args).await,
    }
}

/// A phase's duration from `--seconds`.
fn phase_duration(seconds: f64) -> anyhow::Result<Duration> {
    if seconds.is_nan() || seconds <= 0.0 {
        bail!("--seconds must be positive");
    }
    Duration::try_from_secs_f64(seconds).context("--seconds")
}

/// Endpoints as given, trimmed, empty ones dropped.
fn endpoints(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

async fn run_cp(args: CpBenchArgs) -> anyhow::Result<()> {
    let http_flags = args.http.is_some() || args.etcd.is_some();
    let protocol = args.protocol.unwrap_or(if http_flags {
        CpProtocol::Http
    } else {
        CpProtocol::Grpc
    });
    let load = &args.load;
    let duration = phase_duration(load.seconds)?;
    if protocol == CpProtocol::Http {
        return http::run_cp(http::CpHttp {
            http: args.http.unwrap_or_else(|| "127.0.0.1:8401".into()),
            etcd: args.etcd,
            clients: load.clients.clone().unwrap_or_else(|| vec![1, 16, 64]),
            duration,
            value_bytes: load.value_bytes.unwrap_or(100),
        })
        .await;
    }
    if http_flags {
        bail!("--http and --etcd go with --protocol http; over gRPC use --endpoints/--against");
    }
    let plan = Plan::new(load, "cp", vec![1, 16, 64, 256], duration)?;
    let timeout = Duration::from_millis(load.timeout_ms.max(1));
    let shape = grpc::Shape {
        keys: plan.keys,
        value: vec![b'x'; load.value_bytes.unwrap_or(256)],
        timeout,
    };
    let isle_endpoints = endpoints(&args.endpoints);
    let main = Side {
        name: load.name.clone(),
        endpoints: isle_endpoints.join(","),
        driver: grpc::Grpc::connect(&isle_endpoints, args.conns, shape.clone()).await?,
        prefilled: false,
    };
    let against_endpoints = endpoints(&args.against);
    let against = if against_endpoints.is_empty() {
        None
    } else {
        Some(Side {
            name: args.against_name.clone(),
            endpoints: against_endpoints.join(","),
            driver: grpc::Grpc::connect(&against_endpoints, args.conns, shape).await?,
            prefilled: false,
        })
    };
    plan.run(&args.ops, main, against).await
}

async fn run_ap(args: ApBenchArgs) -> anyhow::Result<()> {
    let http_flags = args.http.given();
    let protocol = args.protocol.unwrap_or(if http_flags {
        ApProtocol::Http
    } else {
        ApProtocol::Resp
    });
    let load = &args.load;
    let duration = phase_duration(load.seconds)?;
    if protocol == ApProtocol::Http {
        return http::run_ap(
            args.http,
            duration,
            load.keys.unwrap_or(1000),
            load.value_bytes.unwrap_or(100),
        )
        .await;
    }
    if http_flags {
        bail!(
            "--http, --discover, --bucket, --op, --w, --levels, --strict and --concurrency go with --protocol http"
        );
    }
    if args.pipeline == 0 {
        bail!("--pipeline must be at least 1");
    }
    let plan = Plan::new(load, "ap", vec![1, 16, 50, 64, 256], duration)?;
    let shape = resp::Shape {
        keys: plan.keys,
        value: vec![b'x'; load.value_bytes.unwrap_or(256)],
        timeout: Duration::from_millis(load.timeout_ms.max(1)),
        pipeline: args.pipeline,
        setup: Vec::new(),
    };
    let mut isle_shape = shape.clone();
    if let Some(levels) = &args.isle_consistency {
        let Some((r, w)) = levels.split_once(',') else {
            bail!("--isle-consistency wants R,W, e.g. quorum,quorum");
        };
        isle_shape.setup = vec![resp::command([
            b"ISLE.CONSISTENCY".as_slice(),
            r.trim().as_bytes(),
            w.trim().as_bytes(),
        ])];
    }
    let isle_endpoints = endpoints(&args.endpoints);
    let main = Side {
        name: load.name.clone(),
        endpoints: isle_endpoints.join(","),
        driver: resp::Resp::new(isle_endpoints, isle_shape)?,
        prefilled: false,
    };
    let against_endpoints = endpoints(&args.against);
    let against = if against_endpoints.is_empty() {
        None
    } else {
        Some(Side {
            name: args.against_name.clone(),
            endpoints: against_endpoints.join(","),
            driver: resp::Resp::new(against_endpoints, shape)?,
            prefilled: false,
        })
    };
    let mut fields = serde_json::Map::new();
    fields.insert("pipeline".into(), json!(args.pipeline));
    Plan { fields, ..plan }.run(&args.ops, main, against).await
}

/// An operation of a bench.
pub(crate) trait BenchOp: Copy {
    /// Its name in the table and the JSON lines.
    fn name(self) -> &'static str;
    /// Whether it reads keys that must exist first.
    fn needs_prefill(self) -> bool;
}

/// One system's client side: runs phases of an operation.
pub(crate) trait Driver {
    /// The operations it knows.
    type Op: BenchOp;
    /// Writes every key the reads may pick, once.
    fn prefill(&self) -> impl Future<Output = anyhow::Result<()>>;
    /// Runs `op` with `clients` concurrent clients for `duration`; what they measured.
    fn phase(
        &self,
        op: Self::Op,
        clients: usize,
        duration: Duration,
    ) -> impl Future<Output = anyhow::Result<Tally>>;
}

/// A system under load: its name, endpoints and client side.
pub(crate) struct Side<D> {
    name: String,
    endpoints: String,
    driver: D,
    prefilled: bool,
}

/// What a run does: which client counts, how long, and where JSON lines go.
struct Plan {
    bench: &'static str,
    clients: Vec<usize>,
    duration: Duration,
    keys: u64,
    json_out: Option<std::fs::File>,
    /// Extra fields for every phase's JSON line.
    fields: serde_json::Map<String, Value>,
}

impl Plan {
    fn new(
        load: &LoadArgs,
        bench: &'static str,
        default_clients: Vec<usize>,
        duration: Duration,
    ) -> anyhow::Result<Plan> {
        let clients = load.clients.clone().unwrap_or(default_clients);
        if clients.is_empty() || clients.contains(&0) {
            bail!("--clients wants positive counts");
        }
        let keys = load.keys.unwrap_or(10_000);
        if keys == 0 {
            bail!("--keys must be at least 1");
        }
        let json_out = match &load.json_out {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            ),
            None => None,
        };
        Ok(Plan {
            bench,
            clients,
            duration,
            keys,
            json_out,
            fields: serde_json::Map::new(),
        })
    }

    /// Prints a JSON line, and appends it to `--json-out`.
    fn emit(&mut self, line: &Value) -> anyhow::Result<()> {
        println!("{line}");
        if let Some(file) = &mut self.json_out {
            writeln!(file, "{line}").context("writing --json-out")?;
        }
        Ok(())
    }

    /// Every op at every client count, on `main` then on `against`, a ratio line after each
    /// pair.
    async fn run<D: Driver>(
        mut self,
        ops: &[D::Op],
        mut main: Side<D>,
        mut against: Option<Side<D>>,
    ) -> anyhow::Result<()> {
        println!(
            "{:<8} {:<5} {:>7} {:>9} {:>10} {:>8} {:>8} {:>8} {:>7}",
            "SYSTEM", "OP", "CLIENTS", "OPS", "OPS/S", "P50 ms", "P99 ms", "MAX ms", "ERRORS"
        );
        for &op in ops {
            for &clients in &self.clients.clone() {
                let mine = self.phase(&mut main, op, clients).await?;
                let Some(other) = against.as_mut() else {
                    continue;
                };
                let theirs = self.phase(other, op, clients).await?;
                let ratio = Ratio::of(&mine, &theirs);
                println!(
                    "{:<8} {:<5} {:>7} {:>9} {:>10} {:>8} {:>8}",
                    "ratio",
                    op.name(),
                    clients,
                    "",
                    show_ratio(ratio.throughput),
                    show_ratio(ratio.p50),
                    show_ratio(ratio.p99),
                );
                let line = json!({
                    "bench": self.bench,
                    "ratio": true,
                    "system": mine.system,
                    "against": theirs.system,
                    "op": op.name(),
                    "clients": clients,
                    "throughput_ratio": ratio.throughput,
                    "p50_ratio": ratio.p50,
                    "p99_ratio": ratio.p99,
                });
                self.emit(&line)?;
            }
        }
        Ok(())
    }

    /// One phase on one side (prefilling first if the op reads and the side was not).
    async fn phase<D: Driver>(
        &mut self,
        side: &mut Side<D>,
        op: D::Op,
        clients: usize,
    ) -> anyhow::Result<Stats> {
        if op.needs_prefill() && !side.prefilled {
            eprintln!(
                "{}: writing {} keys for {} to find",
                side.name,
                self.keys,
                op.name()
            );
            side.driver
                .prefill()
                .await
                .with_context(|| format!("prefilling {}", side.name))?;
            side.prefilled = true;
        }
        let tally = side.driver.phase(op, clients, self.duration).await?;
        let stats = Stats::of(&side.name, op.name(), clients, tally, self.duration);
        println!(
            "{:<8} {:<5} {:>7} {:>9} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>7}",
            stats.system,
            stats.op,
            stats.clients,
            stats.ops,
            stats.ops_per_s,
            stats.p50_ms,
            stats.p99_ms,
            stats.max_ms,
            stats.errors,
        );
        if let Some(why) = &stats.first_error {
            println!("  first error: {why}");
        }
        let mut line = json!({
            "bench": self.bench,
            "system": stats.system,
            "endpoints": side.endpoints,
            "op": stats.op,
            "clients": clients,
            "seconds": self.duration.as_secs_f64(),
            "keys": self.keys,
            "ops": stats.ops,
            "errors": stats.errors,
            "ops_per_s": stats.ops_per_s,
            "p50_ms": stats.p50_ms,
            "p99_ms": stats.p99_ms,
            "max_ms": stats.max_ms,
        });
        if let Some(object) = line.as_object_mut() {
            object.extend(self.fields.clone());
            if let Some(why) = &stats.first_error {
                object.insert("first_error".into(), json!(why));
            }
        }
        self.emit(&line)?;
        Ok(stats)
    }
}

/// What clients measured in a phase: one latency per successful request, and the failures.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Latencies of successful requests, in microseconds.
    pub latencies_us: Vec<u64>,
    /// Failed requests (error replies, transport errors, timeouts).
    pub errors: u64,
    /// The first failure's message.
    pub first_error: Option<String>,
}

impl Tally {
    /// Counts a success that took `elapsed`.
    pub fn ok(&mut self, elapsed: Duration) {
        self.latencies_us
            .push(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// Counts a failure; keeps the message if it is the first.
    pub fn error(&mut self, why: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(why());
        }
    }

    /// Adds another client's tally.
    pub fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Merges the tallies of a phase's client tasks.
pub(crate) async fn join_tallies(
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
) -> anyhow::Result<Tally> {
    let mut all = Tally::default();
    for task in tasks {
        all.merge(task.await.context("a client task failed")?);
    }
    Ok(all)
}

/// A phase's summary.
#[derive(Debug, Clone, PartialEq)]
struct Stats {
    system: String,
    op: &'static str,
    clients: usize,
    ops: u64,
    errors: u64,
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    first_error: Option<String>,
}

impl Stats {
    /// Sorts the latencies and summarises them; throughput over the phase's planned length
    /// (requests still in flight at the end finish late but count: at most one per client).
    fn of(
        system: &str,
        op: &'static str,
        clients: usize,
        mut tally: Tally,
        duration: Duration,
    ) -> Stats {
        tally.latencies_us.sort_unstable();
        let sorted = &tally.latencies_us;
        let ops = sorted.len() as u64;
        let ms = |us: u64| us as f64 / 1000.0;
        Stats {
            system: system.to_string(),
            op,
            clients,
            ops,
            errors: tally.errors,
            ops_per_s: (ops as f64 / duration.as_secs_f64() * 10.0).round() / 10.0,
            p50_ms: ms(percentile(sorted, 0.50)),
            p99_ms: ms(percentile(sorted, 0.99)),
            max_ms: ms(sorted.last().copied().unwrap_or(0)),
            first_error: tally.first_error,
        }
    }
}

/// The `p` quantile (0..=1) of sorted samples, nearest rank; 0 for no samples.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p.clamp(0.0, 1.0)).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The system under test relative to the other: throughput and latency quotients (mine /
/// theirs); `None` where the other measured zero.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ratio {
    throughput: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
}

impl Ratio {
    fn of(mine: &Stats, theirs: &Stats) -> Ratio {
        let quotient = |a: f64, b: f64| (b > 0.0).then(|| (a / b * 1000.0).round() / 1000.0);
        Ratio {
            throughput: quotient(mine.ops_per_s, theirs.ops_per_s),
            p50: quotient(mine.p50_ms, theirs.p50_ms),
            p99: quotient(mine.p99_ms, theirs.p99_ms),
        }
    }
}

fn show_ratio(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_string(), |r| format!("x{r:.2}"))
}

/// Client `client`'s generator: seeded by its number, so both systems see the same key
/// sequence, and no generator is shared between clients.
pub(crate) fn client_rng(client: u64) -> SeededRandom {
    SeededRandom::new(client)
}

/// The name of key `index`.
pub(crate) fn key(index: u64) -> String {
    format!("bench/{index:08}")
}

/// Connections (or clients) that write the keys for the read phases, at once.
const PREFILL_CONCURRENCY: usize = 64;

/// Writes every key index in `0..keys` once, spread over `workers` (one task each, taking the
/// next index until none is left); `write` does one key and hands its worker back.
async fn prefill_keys<W, F, Fut>(workers: Vec<W>, keys: u64, write: F) -> anyhow::Result<()>
where
    W: Send + 'static,
    F: Fn(W, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<W>> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            let (next, write) = (Arc::clone(&next), write.clone());
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if index >= keys {
                        return anyhow::Ok(());
                    }
                    worker = write(worker, index).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use isle_env::Random;

    #[test]
    fn percentiles_of_sorted_samples() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 0.5), 51);
        assert_eq!(percentile(&samples, 0.99), 99);
        assert_eq!(percentile(&samples, 1.0), 100);
        assert_eq!(percentile(&samples, 0.0), 1);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn keys_stay_in_range_and_cover_it() {
        for keys in [1, 2, 3, 100, 10_000] {
            let mut rng = client_rng(keys);
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..20_000 {
                let index = rng.below(keys);
                assert!(index < keys, "{index} out of 0..{keys}");
                seen.insert(index);
            }
            if keys <= 100 {
                assert_eq!(seen.len() as u64, keys, "every key is drawn");
            }
        }
        assert_eq!(key(42), "bench/00000042");
        assert_eq!(key(12_345_678), "bench/12345678");
        // Clients draw different sequences.
        assert_ne!(client_rng(0).next_u64(), client_rng(1).next_u64());
    }

    fn stats(ops_per_s: f64, p50_ms: f64, p99_ms: f64) -> Stats {
        Stats {
            system: "s".into(),
            op: "put",
            clients: 1,
            ops: 1,
            errors: 0,
            ops_per_s,
            p50_ms,
            p99_ms,
            max_ms: p99_ms,
            first_error: None,
        }
    }

    #[test]
    fn ratios_are_mine_over_theirs() {
        let ratio = Ratio::of(&stats(2000.0, 1.0, 4.0), &stats(1000.0, 2.0, 2.0));
        assert_eq!(ratio.throughput, Some(2.0));
        assert_eq!(ratio.p50, Some(0.5));
        assert_eq!(ratio.p99, Some(2.0));
        let none = Ratio::of(&stats(10.0, 1.0, 1.0), &stats(0.0, 0.0, 0.0));
        assert_eq!((none.throughput, none.p50, none.p99), (None, None, None));
        assert_eq!(show_ratio(Some(1.234)), "x1.23");
        assert_eq!(show_ratio(None), "-");
    }

    #[test]
    fn stats_summarise_a_tally() {
        let mut tally = Tally::default();
        for us in [3000, 1000, 2000] {
            tally.ok(Duration::from_micros(us));
        }
        tally.error(|| "first".into());
        tally.error(|| "second".into());
        let s = Stats::of("isle", "get", 4, tally, Duration::from_secs(2));
        assert_eq!((s.ops, s.errors), (3, 2));
        assert_eq!(s.ops_per_s, 1.5);
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (2.0, 3.0, 3.0));
        assert_eq!(s.first_error.as_deref(), Some("first"));
    }

    #[test]
    fn flags_parse_with_their_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            bench: BenchCommand,
        }
        let parsed = Cli::try_parse_from(["bench", "cp", "--ops", "put,txn", "--against", "e:1"])
            .expect("parses");
        let BenchCommand::Cp(cp) = parsed.bench else {
            panic!("cp")
        };
        assert_eq!(cp.ops, [grpc::CpOp::Put, grpc::CpOp::Txn]);
        assert_eq!(cp.endpoints.len(), 3);
        assert_eq!(cp.against, ["e:1"]);
        assert_eq!(cp.protocol, None);
        let parsed = Cli::try_parse_from(["bench", "ap", "--levels", "one,all"]).expect("parses");
        let BenchCommand::Ap(ap) = parsed.bench else {
            panic!("ap")
        };
        assert!(ap.http.given(), "--levels implies the HTTP bench");
        assert_eq!(
            ap.ops,
            [
                resp::ApOp::Set,
                resp::ApOp::Get,
                resp::ApOp::Incr,
                resp::ApOp::Sadd
            ]
        );
    }
}
