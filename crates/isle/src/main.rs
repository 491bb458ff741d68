//! `isle`: run a node, a local cluster, inspect a cluster, and reason about quorums.

mod node;

use clap::{Parser, Subcommand};
use isle_cli::{ap, coord, fault, kv, quorum, status};
use isle_lab::{bench, chaos, demo, local};

/// mimalloc, not glibc's malloc: the request paths allocate many small, short-lived buffers on
/// one thread and free them on another, and glibc's arenas spent about a tenth of a node's CPU
/// on that (+15% AP writes, +10% CP puts, +15% reads measured; docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Isle: a data store that keeps working, and keeps its promises, when the network breaks.
#[derive(Parser)]
#[command(name = "isle", version, about)]
struct Cli {
    /// What to do; with none, `isle` plays the demo (`isle demo`).
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The flooded-bridge story on five real nodes: split-brain prevented, availability kept
    /// and reconciled, a zombie leader fenced; with a live dashboard.
    Demo(demo::DemoArgs),
    /// Run one node.
    Node(Box<node::NodeArgs>),
    /// Start N nodes on loopback, print their endpoints, stop them all on Ctrl-C.
    Local(local::LocalArgs),
    /// Print the cluster as a table, as each node sees it.
    Status(status::StatusArgs),
    /// Quorum arithmetic: sizes, failures tolerated, and which splits keep a quorum.
    Quorum(quorum::QuorumArgs),
    /// Inject or clear transport faults on a node (needs --allow-fault-injection).
    #[command(subcommand)]
    Fault(fault::FaultCommand),
    /// Split the cluster into sides, e.g. `isle split --http 127.0.0.1:8401 "1,2,3|4,5"`.
    Split(fault::SplitArgs),
    /// Remove every injected fault on every node of the cluster.
    Heal(fault::HealArgs),
    /// Write a key in the CP keyspace (linearizable; refused without quorum).
    Put(kv::PutArgs),
    /// Read a key or prefix from the CP keyspace.
    Get(kv::GetArgs),
    /// Delete a key or prefix from the CP keyspace.
    Del(kv::DelArgs),
    /// Stream changes to a key or prefix of the CP keyspace.
    Watch(kv::WatchArgs),
    /// A compare-and-swap transaction in the CP keyspace.
    Txn(coord::TxnArgs),
    /// Grant, keep alive, revoke or list leases.
    #[command(subcommand)]
    Lease(coord::LeaseCommand),
    /// Acquire a lock, print its fencing token, hold it until Ctrl-C.
    Lock(coord::LockArgs),
    /// Drop CP history below a revision.
    Compact(coord::CompactArgs),
    /// Ask whether a fencing token is still the newest for a lock (a gatekeeper for resources).
    FenceCheck(coord::FenceCheckArgs),
    /// Runtime membership of the CP Raft group.
    #[command(subcommand)]
    Member(coord::MemberCommand),
    /// After a permanent loss of quorum: make a stopped survivor the sole CP voter.
    Recover(coord::RecoverArgs),
    /// The AP keyspace: writable on every side of a partition, converging after the heal.
    #[command(subcommand)]
    Ap(ap::ApCommand),
    /// Benchmarks against a running cluster (or etcd).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// The chaos lab: run a scenario (cluster, workload, nemesis schedule) and check the history.
    #[command(subcommand)]
    Chaos(chaos::ChaosCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let command = cli
        .command
        .unwrap_or_else(|| Command::Demo(demo::DemoArgs::default()));
    if !matches!(
        command,
        Command::Node(_) | Command::Local(_) | Command::Demo(_)
    ) {
        // Lets `isle status | head` end quietly, as Unix tools do. Not for `node`: there a
        // write to a closed socket must be an error, not a signal.
        sigpipe::reset();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Demo(args) => demo::run(args).await,
            Command::Node(args) => node::run(*args).await,
            Command::Local(args) => local::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Quorum(args) => quorum::run(args),
            Command::Fault(command) => fault::run(command).await,
            Command::Split(args) => fault::split(args).await,
            Command::Heal(args) => fault::heal(args).await,
            Command::Put(args) => kv::put(args).await,
            Command::Get(args) => kv::get(args).await,
            Command::Del(args) => kv::del(args).await,
            Command::Txn(args) => coord::txn(args).await,
            Command::Watch(args) => kv::watch(args).await,
            Command::Lease(command) => coord::lease(command).await,
            Command::Lock(args) => coord::lock(args).await,
            Command::Member(command) => coord::member(command).await,
            Command::Compact(args) => coord::compact(args).await,
            Command::FenceCheck(args) => coord::fence_check(args).await,
            Command::Ap(command) => ap::run(command).await,
            Command::Bench(command) => bench::run(command).await,
            Command::Chaos(command) => chaos::run(command).await,
            Command::Recover(args) => coord::recover(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
