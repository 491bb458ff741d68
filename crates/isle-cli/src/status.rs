//! `isle status`: the cluster as a table, one row per node as that node sees itself.

use std::collections::BTreeSet;

use anyhow::Context;
use clap::Args;
use isle_detect::Partition;
use isle_lab::admin as client;
use isle_node::StatusReport;
use isle_types::NodeId;

/// Flags of `isle status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// HTTP address of any node.
    #[arg(long, default_value = "127.0.0.1:8401")]
    http: String,
    /// Print every node's raw status JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One member in `isle status --json`: its report, or why it could not be read.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum JsonRow {
    /// What the member answered.
    Report(Box<StatusReport>),
    /// It did not answer.
    Unreachable {
        error: String,
        http_addr: String,
        node: u64,
    },
}

/// Asks the given node for the members, then every member for its own status.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let client = client::http()?;
    let members = client::members(&client, &args.http)
        .await
        .with_context(|| format!("cannot read status from {}", args.http))?;
    let mut rows = Vec::new();
    for (id, http) in &members {
        rows.push((*id, http.clone(), client::status(&client, http).await));
    }
    if args.json {
        let all: Vec<JsonRow> = rows
            .into_iter()
            .map(|(node, http_addr, status)| match status {
                Ok(status) => JsonRow::Report(Box::new(status)),
                Err(err) => JsonRow::Unreachable {
                    error: err.to_string(),
                    http_addr,
                    node,
                },
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!(
        "{:<5} {:<8} {:<18} {:>8}  {:<6} {:<16} {:<10} {:<14} DETAIL",
        "NODE", "ZONE", "STATE", "FOR", "QUORUM", "REACHES", "PARTITION", "CP ROLE/TERM"
    );
    let mut cp_rows = Vec::new();
    for (id, http, status) in rows {
        match status {
            Ok(status) => {
                println!("{}", row(&status));
                cp_rows.push(cp_row(&status));
            }
            Err(_) => println!(
                "{id:<5} {:<8} {:<18} {:>8}  unreachable from here ({http})",
                "?", "?", "?"
            ),
        }
    }
    println!(
        "\n{:<5} {:<20} {:>5} {:>7} {:>8} {:>8} {:>9} VOTERS",
        "NODE", "CP ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "REVISION"
    );
    for line in cp_rows {
        println!("{line}");
    }
    Ok(())
}

/// `-` for nothing, else the value.
fn or_dash(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Raft's view, per node: role, term, leader, commit and applied index, revision.
fn cp_row(status: &StatusReport) -> String {
    let cp = &status.cp;
    let voters: Vec<String> = cp.voters.iter().map(u64::to_string).collect();
    format!(
        "{:<5} {:<20} {:>5} {:>7} {:>8} {:>8} {:>9} [{}]",
        status.node.node.0,
        cp.role,
        cp.term,
        or_dash(cp.leader),
        or_dash(cp.commit_index),
        or_dash(cp.applied_index),
        cp.revision,
        voters.join(","),
    )
}

fn row(status: &StatusReport) -> String {
    let node = &status.node;
    let reaches: Vec<String> = node.reachable.iter().map(ToString::to_string).collect();
    let (kind, detail) = match &node.partition {
        Partition::None => ("none", String::new()),
        Partition::Complete { sides } => ("complete", self::sides(sides)),
        Partition::Partial { cut } => ("partial", links(cut, "cut")),
        Partition::Asymmetric { one_way } => ("asymmetric", links(one_way, "one-way")),
    };
    let held = if node.quorum.held { "yes" } else { "NO" };
    let cp = &status.cp;
    let raft = if cp.leader_lease_valid == Some(false) {
        format!("{}(no lease)/{}", cp.role, cp.term)
    } else {
        format!("{}/{}", cp.role, cp.term)
    };
    format!(
        "{:<5} {:<8} {:<18} {:>7.1}s  {:<6} {:<16} {:<10} {:<14} {}",
        node.node.0,
        if node.zone.is_empty() {
            "-"
        } else {
            &node.zone
        },
        node.state.to_string(),
        node.state_for_ms as f64 / 1000.0,
        held,
        format!("[{}]", reaches.join(",")),
        kind,
        raft,
        detail
    )
}

fn sides(sides: &[BTreeSet<NodeId>]) -> String {
    let parts: Vec<String> = sides
        .iter()
        .map(|side| {
            let ids: Vec<String> = side.iter().map(ToString::to_string).collect();
            format!("{{{}}}", ids.join(","))
        })
        .collect();
    parts.join(" | ")
}

fn links(links: &[(NodeId, NodeId)], word: &str) -> String {
    let arrow = if word == "cut" { "↔" } else { "→" };
    let parts: Vec<String> = links
        .iter()
        .map(|(from, to)| format!("{from}{arrow}{to}"))
        .collect();
    format!("{word}: {}", parts.join(" "))
}
