//! `isle quorum`: what a cluster shape tolerates, before you build it.

use anyhow::bail;
use clap::Args;
use isle_quorum::{Policy, Voter};
use isle_types::NodeId;

/// Flags of `isle quorum`.
#[derive(Args, Debug)]
pub struct QuorumArgs {
    /// Number of voters (ids 1..=N); implied by --weights or --zones when those are given.
    #[arg(long)]
    nodes: Option<usize>,
    /// Vote weight of each node, comma-separated (e.g. 3,1,1).
    #[arg(long, value_delimiter = ',')]
    weights: Vec<u32>,
    /// Zone of each node, comma-separated (e.g. a,a,b,b,c).
    #[arg(long, value_delimiter = ',')]
    zones: Vec<String>,
    /// majority, weighted or zones (default: zones if --zones is given, else weighted).
    #[arg(long)]
    policy: Option<Policy>,
    /// Also check a read quorum R against write quorum W (R+W>N means reads see the last write).
    #[arg(long, requires = "w")]
    r: Option<usize>,
    /// Write quorum W for the R+W>N check.
    #[arg(long, requires = "r")]
    w: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn voters(args: &QuorumArgs) -> anyhow::Result<Vec<Voter>> {
    let sizes = [
        args.nodes,
        non_empty(args.weights.len()),
        non_empty(args.zones.len()),
    ];
    let mut given = sizes.iter().flatten();
    let Some(&n) = given.next() else {
        bail!("say how many voters: --nodes N, or --weights/--zones with one entry per node");
    };
    if given.any(|&other| other != n) {
        bail!("--nodes, --weights and --zones disagree on the number of voters");
    }
    Ok((0..n)
        .map(|i| Voter {
            id: NodeId(i as u64 + 1),
            weight: args.weights.get(i).copied().unwrap_or(1),
            zone: args.zones.get(i).cloned().unwrap_or_default(),
        })
        .collect())
}

fn non_empty(len: usize) -> Option<usize> {
    (len > 0).then_some(len)
}

/// Prints the analysis.
pub fn run(args: QuorumArgs) -> anyhow::Result<()> {
    let voters = voters(&args)?;
    let default_policy = if args.zones.is_empty() {
        Policy::Weighted
    } else {
        Policy::Zones
    };
    let policy = args.policy.unwrap_or(default_policy);
    let report = isle_quorum::report(policy, &voters)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    if let (Some(r), Some(w)) = (args.r, args.w) {
        let n = voters.len();
        let overlap = isle_quorum::read_write_overlap(n, r, w);
        let verdict = if overlap {
            "every read quorum meets every write quorum: reads see the latest acknowledged write"
        } else {
            "R+W <= N: a read may miss the latest acknowledged write"
        };
        println!("N={n} R={r} W={w}: {verdict}");
        if !isle_quorum::write_write_overlap(n, w) {
            println!("N={n} W={w}: 2W <= N, two writes can be acknowledged by disjoint replicas");
        }
    }
    Ok(())
}
