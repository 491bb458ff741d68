//! `isle node`: one node process, configured by flags or a TOML file.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use isle_node::NodeConfig;
use isle_types::NodeId;
use tracing::info;

/// Flags of `isle node`; any of them overrides the same key from `--config`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// TOML file with the same keys as these flags (id, listen, http, peers, data_dir, ...).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Node id, a positive integer, fixed for the life of the data dir.
    #[arg(long)]
    id: Option<NodeId>,
    /// Peer transport address to listen on.
    #[arg(long)]
    listen: Option<String>,
    /// Peer address to advertise when listening on a wildcard address.
    #[arg(long)]
    advertise: Option<String>,
    /// HTTP (client and admin) address.
    #[arg(long)]
    http: Option<String>,
    /// etcd v3 gRPC API address (etcdctl, etcd client libraries); none if unset.
    #[arg(long)]
    grpc: Option<String>,
    /// Redis-compatible (RESP2) address serving the AP keyspace (redis-cli, redis-benchmark,
    /// Redis client libraries); none if unset.
    #[arg(long)]
    resp: Option<String>,
    /// Seed peers' transport addresses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    peers: Option<Vec<String>>,
    /// Directory for durable state.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Failure domain (zone) of this node.
    #[arg(long)]
    zone: Option<String>,
    /// Vote weight in weighted quorums.
    #[arg(long)]
    weight: Option<u32>,
    /// Quorum policy: majority, weighted or zones (all nodes must agree).
    #[arg(long)]
    quorum_policy: Option<isle_quorum::Policy>,
    /// Allow `/v1/faults` to inject transport faults (tests, demos, chaos).
    #[arg(long)]
    allow_fault_injection: bool,
    /// Heartbeat interval in milliseconds.
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// Phi-accrual threshold above which a peer is deemed unreachable.
    #[arg(long)]
    phi_threshold: Option<f64>,
    /// Form the CP Raft group once this many members are known and reachable (the lowest
    /// id initializes it); leave unset on nodes that join an existing group.
    #[arg(long)]
    bootstrap_expect: Option<usize>,
    /// STONITH command run by a new leader against the previous one (`{node}` = its id).
    #[arg(long)]
    fence_command: Option<String>,
    /// Refuse all CP requests after this many ms in Emergency (minority).
    #[arg(long)]
    self_fence_after_ms: Option<u64>,
    /// With --self-fence-after-ms: also exit (status 75) when fencing itself.
    #[arg(long)]
    self_fence_exit: bool,
    /// Snapshot the CP state machine every N log entries (and keep N/10 entries behind it).
    #[arg(long)]
    snapshot_every: Option<u64>,
    /// AP keyspace: ms between Merkle anti-entropy rounds (0 turns anti-entropy off).
    #[arg(long)]
    aae_interval_ms: Option<u64>,
    /// AP keyspace: ms between hinted-handoff passes.
    #[arg(long)]
    hint_interval_ms: Option<u64>,
    /// AP keyspace: anti-entropy I/O budget in bytes per second.
    #[arg(long)]
    repair_bytes_per_sec: Option<u64>,
    /// AP keyspace: a bucket as NAME=RULE[:N] (rule siblings or lww, N replicas, default 3);
    /// repeat for several. Replaces the default buckets (`default`, `lww`); every node of a
    /// cluster must be given the same buckets.
    #[arg(long = "ap-bucket", value_parser = parse_bucket)]
    ap_buckets: Vec<isle_ap::BucketInfo>,
    /// AP keyspace: drop a tombstone once every replica holds it and it is this old (ms).
    #[arg(long)]
    tombstone_grace_ms: Option<u64>,
    /// AP keyspace: ms between tombstone collection passes (0: keep tombstones forever).
    #[arg(long)]
    tombstone_gc_interval_ms: Option<u64>,
}

/// Parses `NAME=RULE[:N]`, e.g. `carts=siblings:3`.
fn parse_bucket(text: &str) -> Result<isle_ap::BucketInfo, String> {
    let (name, spec) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=RULE[:N], e.g. carts=siblings:3"))?;
    let (rule, n) = match spec.split_once(':') {
        Some((rule, n)) => (
            rule,
            n.parse::<u32>()
                .map_err(|e| format!("{text:?}: replica count {n:?}: {e}"))?,
        ),
        None => (spec, 3),
    };
    if name.is_empty() || name.len() > isle_ap::request::MAX_BUCKET_BYTES {
        return Err(format!("{text:?}: bucket name must be 1..=64 bytes"));
    }
    Ok(isle_ap::BucketInfo {
        name: name.to_string(),
        rule: rule.parse()?,
        n,
    })
}

impl NodeArgs {
    fn into_config(self) -> anyhow::Result<NodeConfig> {
        let mut config = match &self.config {
            Some(path) => NodeConfig::from_file(path)?,
            None => {
                let (Some(id), Some(listen), Some(http), Some(data_dir)) = (
                    self.id,
                    self.listen.clone(),
                    self.http.clone(),
                    self.data_dir.clone(),
                ) else {
                    bail!(
                        "isle node needs --id, --listen, --http and --data-dir (or --config FILE)"
                    );
                };
                NodeConfig {
                    id,
                    listen,
                    advertise: None,
                    http,
                    grpc: None,
                    peers: Vec::new(),
                    data_dir,
                    zone: String::new(),
                    weight: 1,
                    allow_fault_injection: false,
                    quorum_policy: isle_quorum::Policy::default(),
                    detection: Default::default(),
                    transport: Default::default(),
                    cp: Default::default(),
                    ap: Default::default(),
                }
            }
        };
        if let Some(id) = self.id {
            config.id = id;
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(advertise) = self.advertise {
            config.advertise = Some(advertise);
        }
        if let Some(http) = self.http {
            config.http = http;
        }
        if let Some(grpc) = self.grpc {
            config.grpc = Some(grpc);
        }
        if let Some(peers) = self.peers {
            config.peers = peers.into_iter().filter(|p| !p.is_empty()).collect();
        }
        if let Some(data_dir) = self.data_dir {
            config.data_dir = data_dir;
        }
        if let Some(zone) = self.zone {
            config.zone = zone;
        }
        if let Some(weight) = self.weight {
            config.weight = weight;
        }
        if let Some(policy) = self.quorum_policy {
            config.quorum_policy = policy;
        }
        config.allow_fault_injection |= self.allow_fault_injection;
        if let Some(ms) = self.heartbeat_ms {
            config.detection.heartbeat_interval = std::time::Duration::from_millis(ms);
        }
        if let Some(expect) = self.bootstrap_expect {
            config.cp.bootstrap_expect = Some(expect);
        }
        if let Some(command) = self.fence_command {
            config.cp.fence_command = Some(command);
        }
        if let Some(after_ms) = self.self_fence_after_ms {
            config.cp.self_fence_after_ms = Some(after_ms);
        }
        config.cp.self_fence_exit |= self.self_fence_exit;
        if let Some(every) = self.snapshot_every {
            config.cp.snapshot_every_entries = every.max(1);
            config.cp.logs_kept_after_snapshot = every / 10;
        }
        if let Some(ms) = self.aae_interval_ms {
            config.ap.aae_interval_ms = ms;
        }
        if let Some(ms) = self.hint_interval_ms {
            config.ap.hint_interval_ms = ms;
        }
        if let Some(rate) = self.repair_bytes_per_sec {
            config.ap.repair_bytes_per_sec = rate;
        }
        if !self.ap_buckets.is_empty() {
            config.ap.buckets = self.ap_buckets.clone();
        }
        if let Some(ms) = self.tombstone_grace_ms {
            config.ap.tombstone_grace_ms = ms;
        }
        if let Some(ms) = self.tombstone_gc_interval_ms {
            config.ap.tombstone_gc_interval_ms = ms;
        }
        if let Some(phi) = self.phi_threshold {
            config.detection.phi_threshold = phi;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Runs the node until SIGINT or SIGTERM.
pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    init_logging();
    let resp_addr = args.resp.clone();
    let config = args.into_config()?;
    let http = config.http.clone();
    let listener = tokio::net::TcpListener::bind(&http)
        .await
        .with_context(|| format!("cannot listen for HTTP on {http}"))?;
    let grpc = match &config.grpc {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for gRPC on {addr}"))?,
        ),
        None => None,
    };
    let resp = match &resp_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for RESP (Redis) on {addr}"))?,
        ),
        None => None,
    };
    let pid_file = config.data_dir.join("isle.pid");
    let node = isle_node::start(config).await?;
    // For operators and fence scripts (`isle local --stonith` kills a zombie leader by it).
    if let Err(err) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        tracing::warn!(%err, path = %pid_file.display(), "cannot write the pid file");
    }
    info!(%http, "serving HTTP");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(isle_api::serve(node.clone(), listener, async move {
        let _ = stop_rx.await;
    }));
    let (grpc_stop_tx, grpc_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let grpc_server = grpc.map(|listener| {
        info!(addr = ?listener.local_addr().ok(), "serving the etcd v3 gRPC API");
        let clock: std::sync::Arc<dyn isle_env::Clock> =
            std::sync::Arc::new(isle_env::SystemClock::new());
        tokio::spawn(isle_api::etcd::serve(
            node.clone(),
            clock,
            listener,
            async move {
                let _ = grpc_stop_rx.await;
            },
        ))
    });
    let (resp_stop_tx, resp_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let resp_server = resp.map(|listener| {
        info!(addr = ?listener.local_addr().ok(), "serving RESP (Redis) for the AP keyspace");
        tokio::spawn(isle_api::resp::serve(
            node.ap.clone(),
            listener,
            async move {
                let _ = resp_stop_rx.await;
            },
        ))
    });
    let mut exit = node.cp.exit_requested();
    let fenced = tokio::select! {
        biased;
        signal = wait_for_signal() => { signal?; false }
        _ = exit.wait_for(|requested| *requested) => true,
    };
    info!(fenced, "shutting down");
    let _ = stop_tx.send(());
    let _ = grpc_stop_tx.send(());
    let _ = resp_stop_tx.send(());
    // The RESP server closes its connections as it stops (a command in flight is abandoned).
    if let Some(server) = resp_server {
        match server.await {
            Ok(result) => result.context("RESP server")?,
            Err(err) => bail!("RESP server task failed: {err}"),
        }
    }
    // Watch and keep-alive streams never end on their own: do not wait for them.
    if let Some(server) = grpc_server {
        server.abort();
    }
    node.shutdown().await;
    match server.await {
        Ok(result) => result.context("HTTP server")?,
        Err(err) => bail!("HTTP server task failed: {err}"),
    }
    if fenced {
        eprintln!("isle node fenced itself: too long without quorum (--self-fence-exit)");
        std::process::exit(75);
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        biased;
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ISLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
