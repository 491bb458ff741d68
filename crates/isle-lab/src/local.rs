//! `isle local`: a cluster of real `isle node` processes on loopback, for development and demos.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Node, NodeSpec, Ports, Stopped};
use anyhow::Context;
use clap::Args;

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

/// The nodes' specs: fixed ports from `--base-port`, data dirs and logs under `--dir`.
fn specs(args: &LocalArgs) -> anyhow::Result<Vec<NodeSpec>> {
    let mut specs = crate::plan(args.nodes, &args.dir, Ports::Base(args.base_port))?;
    let dir = std::fs::canonicalize(&args.dir).unwrap_or(args.dir.clone());
    for spec in &mut specs {
        spec.bootstrap_expect = Some(args.nodes);
        spec.fault_injection = !args.no_fault_injection;
        spec.own_process_group = true;
        if !args.zones.is_empty() {
            let index = usize::try_from(spec.id - 1)? % args.zones.len();
            spec.flags
                .extend(["--zone".into(), args.zones[index].clone()]);
        }
        if args.stonith {
            let pid_file = dir.join("n{node}").join("isle.pid");
            spec.flags.extend([
                "--fence-command".into(),
                format!("kill -9 $(cat '{}')", pid_file.display()),
            ]);
        }
    }
    Ok(specs)
}

/// Starts the nodes, prints endpoints, and waits for Ctrl-C or SIGTERM.
pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let specs = specs(&args)?;
    let exe = std::env::current_exe().context("locating the isle binary")?;
    let mut nodes = Vec::new();
    for spec in specs {
        nodes.push(Node::start(spec, &exe)?);
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
    let specs: Vec<NodeSpec> = nodes.iter().map(|n| n.spec().clone()).collect();
    for spec in &specs {
        println!(
            "{:<5} {:<18} {:<18} {:<18} {:<18} {}",
            spec.id,
            spec.peer,
            spec.http,
            spec.grpc.as_deref().unwrap_or("-"),
            spec.resp.as_deref().unwrap_or("-"),
            spec.log.display()
        );
    }
    if let Some(first) = specs.first() {
        println!("\nstatus:  isle status --http {}", first.http);
        println!(
            "split:   isle split --http {} \"1,2,3|4,5\"   heal: isle heal --http {}",
            first.http, first.http
        );
        let endpoints: Vec<&str> = specs.iter().filter_map(|n| n.grpc.as_deref()).collect();
        println!(
            "etcdctl: ETCDCTL_API=3 etcdctl --endpoints {} get --prefix \"\"",
            endpoints.join(",")
        );
        println!(
            "redis:   redis-cli -u redis://{}   (any node; SELECT i picks bucket i)",
            first.resp.as_deref().unwrap_or("-")
        );
    }
    println!("Ctrl-C stops every node.");
    wait_or_child_exit(&mut nodes).await?;
    stop_all(nodes);
    Ok(())
}

async fn wait_or_child_exit(nodes: &mut [Node]) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            biased;
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = poll.tick() => {
                for node in nodes.iter_mut() {
                    if let Some(status) = node.exited() {
                        eprintln!("node {} exited ({status}); the others keep running", node.id());
                    }
                }
            }
        }
    }
}

/// SIGTERM to every node at once (they leave together), then each is waited for.
fn stop_all(mut nodes: Vec<Node>) {
    for (id, stopped) in crate::stop_all(&mut nodes, Duration::from_secs(5)) {
        match stopped {
            Stopped::Exited(status) => println!("node {id} stopped ({status})"),
            Stopped::Killed => println!("node {id} killed after 5 s"),
            Stopped::NotRunning => {}
        }
    }
}
