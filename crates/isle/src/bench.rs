//! `isle bench cp`: load against a running cluster's CP keyspace — puts, linearizable gets
//! and stale gets at several concurrencies — printing throughput and latency percentiles, and
//! one JSON line per run for tools. `--etcd URL` runs the same load against etcd's HTTP/JSON
//! gateway, so both are measured the same way in one run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// `isle bench ...`
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Benchmark the CP keyspace (or etcd, with --etcd).
    Cp(CpBenchArgs),
}

/// Flags of `isle bench cp`.
#[derive(Args, Debug)]
pub struct CpBenchArgs {
    /// HTTP address of the Isle node to send requests to.
    #[arg(long, default_value = "127.0.0.1:8401")]
    http: String,
    /// Benchmark etcd instead, through its v3 HTTP/JSON gateway at this address (host:port).
    #[arg(long)]
    etcd: Option<String>,
    /// Concurrent clients per phase, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Seconds per phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
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
            (Target::Isle(addr), Op::Put) => client
                .post(format!("http://{addr}/v1/cp/put"))
                .json(&json!({"key": key, "value": value})),
            (Target::Isle(addr), Op::Get | Op::StaleGet) => {
                let consistency = if matches!(op, Op::StaleGet) { "stale" } else { "linearizable" };
                client.get(format!("http://{addr}/v1/cp/get?key={key}&consistency={consistency}"))
            }
            (Target::Etcd(addr), Op::Put) => client
                .post(format!("http://{addr}/v3/kv/put"))
                .json(&json!({"key": b64(key.as_bytes()), "value": b64(value.as_bytes())})),
            (Target::Etcd(addr), Op::Get | Op::StaleGet) => client
                .post(format!("http://{addr}/v3/kv/range"))
                .json(&json!({"key": b64(key.as_bytes()), "serializable": matches!(op, Op::StaleGet)})),
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

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn run_phase(
    target: &Target,
    op: Op,
    clients: usize,
    args: &CpBenchArgs,
) -> anyhow::Result<Value> {
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
    let until = started + Duration::from_secs(args.seconds);
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
    Ok(json!({
        "target": target.name(),
        "op": op.name(),
        "clients": clients,
        "ops": ok,
        "errors": phase.errors,
        "ops_per_sec": (ok as f64 / elapsed).round(),
        "p50_ms": percentile(&phase.latencies_us, 0.50) as f64 / 1000.0,
        "p99_ms": percentile(&phase.latencies_us, 0.99) as f64 / 1000.0,
        "max_ms": phase.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0,
    }))
}

/// Runs `isle bench ...`.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    let BenchCommand::Cp(args) = command;
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
                result["target"].as_str().unwrap_or(""),
                result["op"].as_str().unwrap_or(""),
                result["clients"].as_u64().unwrap_or(0),
                result["ops"].as_u64().unwrap_or(0),
                result["ops_per_sec"].as_f64().unwrap_or(0.0),
                result["p50_ms"].as_f64().unwrap_or(0.0),
                result["p99_ms"].as_f64().unwrap_or(0.0),
                result["max_ms"].as_f64().unwrap_or(0.0),
                result["errors"].as_u64().unwrap_or(0),
            );
            lines.push(result);
        }
    }
    println!("{}", json!({ "bench": "cp", "results": lines }));
    Ok(())
}

#[cfg(test)]
mod tests {
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
    fn percentiles_of_sorted_samples() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 0.5), 51);
        assert_eq!(percentile(&samples, 0.99), 99);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
