//! `isle local`: a cluster of real `isle node` processes on loopback, for development and demos.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::process::{Child, Command};

/// Flags of `isle local`.
#[derive(Args, Debug)]
pub struct LocalArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Directory holding each node's data dir and log (reused if it exists: same members).
    #[arg(long, default_value = "isle-local")]
    dir: PathBuf,
    /// Node i listens for peers on BASE+i, for HTTP on BASE+1000+i, for the etcd v3 gRPC
    /// API on BASE+2000+i and for Redis clients (RESP, the AP keyspace) on BASE+3000+i.
    #[arg(long, default_value_t = 7400)]
    base_port: u16,
    /// Zones to assign round-robin, comma-separated (e.g. east,east,east,west,west).
    #[arg(long, value_delimiter = ',')]
    zones: Vec<String>,
    /// Start the nodes without fault injection (it is on by default in a local cluster).
    #[arg(long)]
    no_fault_injection: bool,
    /// STONITH: a new CP leader kills the previous leader's process (by its pid file).
    #[arg(long)]
    stonith: bool,
}

struct LocalNode {
    id: u64,
    peer: String,
    http: String,
    grpc: String,
    resp: String,
    data_dir: PathBuf,
    log: PathBuf,
}

fn plan(args: &LocalArgs) -> anyhow::Result<Vec<LocalNode>> {
    if args.nodes == 0 || args.nodes > 99 {
        bail!("--nodes must be between 1 and 99");
    }
    let mut nodes = Vec::new();
    for id in 1..=args.nodes {
        let offset = u16::try_from(id)?;
        let peer_port = args.base_port.checked_add(offset);
        let http_port = args.base_port.checked_add(1000 + offset);
        let grpc_port = args.base_port.checked_add(2000 + offset);
        let resp_port = args.base_port.checked_add(3000 + offset);
        let (Some(peer_port), Some(http_port), Some(grpc_port), Some(resp_port)) =
            (peer_port, http_port, grpc_port, resp_port)
        else {
            bail!(
                "--base-port {} is too high for {} nodes",
                args.base_port,
                args.nodes
            );
        };
        for port in [peer_port, http_port, grpc_port, resp_port] {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                bail!("port {port} is in use: stop what holds it or pass another --base-port");
            }
        }
        let data_dir = args.dir.join(format!("n{id}"));
        nodes.push(LocalNode {
            id,
            peer: format!("127.0.0.1:{peer_port}"),
            http: format!("127.0.0.1:{http_port}"),
            grpc: format!("127.0.0.1:{grpc_port}"),
            resp: format!("127.0.0.1:{resp_port}"),
            log: data_dir.join("node.log"),
            data_dir,
        });
    }
    Ok(nodes)
}

fn spawn(args: &LocalArgs, nodes: &[LocalNode], node: &LocalNode) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("locating the isle binary")?;
    std::fs::create_dir_all(&node.data_dir)
        .with_context(|| format!("creating {}", node.data_dir.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .with_context(|| format!("opening {}", node.log.display()))?;
    let peers: Vec<&str> = nodes
        .iter()
        .filter(|n| n.id != node.id)
        .map(|n| n.peer.as_str())
        .collect();
    let mut command = Command::new(exe);
    command
        .arg("node")
        .args([
            "--id",
            &node.id.to_string(),
            "--listen",
            &node.peer,
            "--http",
            &node.http,
            "--grpc",
            &node.grpc,
            "--resp",
            &node.resp,
        ])
        .arg("--data-dir")
        .arg(&node.data_dir)
        .args(["--peers", &peers.join(",")])
        .args(["--bootstrap-expect", &args.nodes.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Own process group: Ctrl-C reaches `isle local`, which then stops the nodes in order.
        .process_group(0)
        .kill_on_drop(true);
    if !args.zones.is_empty() {
        let index = usize::try_from(node.id - 1)? % args.zones.len();
        command.args(["--zone", &args.zones[index]]);
    }
    if !args.no_fault_injection {
        command.arg("--allow-fault-injection");
    }
    if args.stonith {
        let dir = std::fs::canonicalize(&args.dir).unwrap_or(args.dir.clone());
        let pid_file = dir.join("n{node}").join("isle.pid");
        command.args([
            "--fence-command",
            &format!("kill -9 $(cat '{}')", pid_file.display()),
        ]);
    }
    command
        .spawn()
        .with_context(|| format!("starting node {}", node.id))
}

/// Starts the nodes, prints endpoints, and waits for Ctrl-C or SIGTERM.
pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    let nodes = plan(&args)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let mut children = Vec::new();
    for node in &nodes {
        children.push((node.id, spawn(&args, &nodes, node)?));
    }
    let dir = std::fs::canonicalize(&args.dir).unwrap_or(args.dir.clone());
    println!(
        "isle local: {} nodes, data and logs under {}",
        nodes.len(),
        dir.display()
    );
    println!(
        "{:<5} {:<18} {:<18} {:<18} {:<18} LOG",
        "NODE", "PEER", "HTTP", "GRPC (etcd v3)", "RESP (redis)"
    );
    for node in &nodes {
        println!(
            "{:<5} {:<18} {:<18} {:<18} {:<18} {}",
            node.id,
            node.peer,
            node.http,
            node.grpc,
            node.resp,
            node.log.display()
        );
    }
    if let Some(first) = nodes.first() {
        println!("\nstatus:  isle status --http {}", first.http);
        println!(
            "split:   isle split --http {} \"1,2,3|4,5\"   heal: isle heal --http {}",
            first.http, first.http
        );
        let endpoints: Vec<&str> = nodes.iter().map(|n| n.grpc.as_str()).collect();
        println!(
            "etcdctl: ETCDCTL_API=3 etcdctl --endpoints {} get --prefix \"\"",
            endpoints.join(",")
        );
        println!(
            "redis:   redis-cli -u redis://{}   (any node; SELECT i picks bucket i)",
            first.resp
        );
    }
    println!("Ctrl-C stops every node.");
    wait_or_child_exit(&mut children).await?;
    stop_all(children).await;
    Ok(())
}

async fn wait_or_child_exit(children: &mut [(u64, Child)]) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    let mut reported = std::collections::BTreeSet::new();
    loop {
        tokio::select! {
            biased;
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = poll.tick() => {
                for (id, child) in children.iter_mut() {
                    if let Ok(Some(status)) = child.try_wait()
                        && reported.insert(*id)
                    {
                        eprintln!("node {id} exited ({status}); the others keep running");
                    }
                }
            }
        }
    }
}

async fn stop_all(children: Vec<(u64, Child)>) {
    for (_, child) in &children {
        if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
            terminate(pid);
        }
    }
    for (id, mut child) in children {
        match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
            Ok(Ok(status)) => println!("node {id} stopped ({status})"),
            _ => {
                let _ = child.kill().await;
                println!("node {id} killed after 5 s");
            }
        }
    }
}

/// Sends SIGTERM so the node shuts down cleanly.
#[allow(unsafe_code)]
fn terminate(pid: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own unreaped child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}
