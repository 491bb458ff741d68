//! `isle fault`, `isle split`, `isle heal`: drive the transport's fault injection over HTTP.

use std::collections::BTreeSet;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use isle_api::wire::admin::{FaultIds, FaultList};
use isle_net::{Direction, FaultAction, FaultRule};
use isle_types::NodeId;
use serde::de::IgnoredAny;

use isle_lab::admin as client;

/// `isle fault ...`
#[derive(Subcommand, Debug)]
pub enum FaultCommand {
    /// Add a rule: what to do to messages to and/or from one peer.
    Add(AddArgs),
    /// List a node's rules.
    List(NodeArg),
    /// Remove a node's rules (all, or those naming --peer).
    Clear(ClearArgs),
}

/// Just a node address.
#[derive(Args, Debug)]
pub struct NodeArg {
    /// HTTP address of the node.
    #[arg(long)]
    http: String,
}

/// Flags of `isle fault add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// HTTP address of the node whose transport misbehaves.
    #[arg(long)]
    http: String,
    /// The peer whose messages are affected.
    #[arg(long)]
    peer: NodeId,
    /// outbound (to the peer), inbound (from it) or both.
    #[arg(long, default_value = "both")]
    direction: String,
    /// drop, delay, duplicate or corrupt.
    #[arg(long, default_value = "drop")]
    action: String,
    /// Delay in milliseconds for --action delay.
    #[arg(long, default_value_t = 200)]
    delay_ms: u64,
    /// Fraction of messages affected, 0 to 1.
    #[arg(long, default_value_t = 1.0)]
    probability: f64,
}

/// Flags of `isle fault clear`.
#[derive(Args, Debug)]
pub struct ClearArgs {
    /// HTTP address of the node.
    #[arg(long)]
    http: String,
    /// Only the rules naming this peer.
    #[arg(long)]
    peer: Option<NodeId>,
}

/// Flags of `isle split`.
#[derive(Args, Debug)]
pub struct SplitArgs {
    /// HTTP address of any node; the others are found from its membership.
    #[arg(long, default_value = "127.0.0.1:8401")]
    http: String,
    /// Sides separated by `|`, nodes by `,`: "1,2,3|4,5". Nodes not named form one more side.
    sides: String,
}

/// Flags of `isle heal`.
#[derive(Args, Debug)]
pub struct HealArgs {
    /// HTTP address of any node.
    #[arg(long, default_value = "127.0.0.1:8401")]
    http: String,
}

fn parse_direction(text: &str) -> anyhow::Result<Direction> {
    Ok(match text {
        "outbound" | "out" => Direction::Outbound,
        "inbound" | "in" => Direction::Inbound,
        "both" => Direction::Both,
        other => bail!("unknown direction {other:?}: use outbound, inbound or both"),
    })
}

fn parse_action(text: &str, delay_ms: u64) -> anyhow::Result<FaultAction> {
    Ok(match text {
        "drop" => FaultAction::Drop,
        "delay" => FaultAction::Delay { ms: delay_ms },
        "duplicate" => FaultAction::Duplicate,
        "corrupt" => FaultAction::Corrupt,
        other => bail!("unknown action {other:?}: use drop, delay, duplicate or corrupt"),
    })
}

/// Runs an `isle fault` subcommand.
pub async fn run(command: FaultCommand) -> anyhow::Result<()> {
    let client = client::http()?;
    match command {
        FaultCommand::Add(args) => {
            let rule = FaultRule {
                peer: args.peer,
                direction: parse_direction(&args.direction)?,
                action: parse_action(&args.action, args.delay_ms)?,
                probability: args.probability,
            };
            let answer: FaultIds = client::post(&client, &args.http, "/v1/faults", &rule).await?;
            println!("added: {}", serde_json::to_string(&answer)?);
        }
        FaultCommand::List(args) => {
            let answer: FaultList = client::get(&client, &args.http, "/v1/faults").await?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
        }
        FaultCommand::Clear(args) => {
            let path = match args.peer {
                Some(peer) => format!("/v1/faults?peer={peer}"),
                None => "/v1/faults".to_string(),
            };
            client::delete::<IgnoredAny>(&client, &args.http, &path).await?;
            println!("cleared");
        }
    }
    Ok(())
}

fn parse_sides(text: &str, all: &BTreeSet<u64>) -> anyhow::Result<Vec<BTreeSet<u64>>> {
    let mut sides = Vec::new();
    for part in text.split('|') {
        let mut side = BTreeSet::new();
        for id in part.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let id: NodeId = id.parse()?;
            if !all.contains(&id.0) {
                bail!("node {id} is not a member of this cluster (members: {all:?})");
            }
            if sides.iter().any(|s: &BTreeSet<u64>| s.contains(&id.0)) || !side.insert(id.0) {
                bail!("node {id} is named twice");
            }
        }
        sides.push(side);
    }
    let named: BTreeSet<u64> = sides.iter().flatten().copied().collect();
    let rest: BTreeSet<u64> = all.difference(&named).copied().collect();
    if !rest.is_empty() {
        sides.push(rest);
    }
    if sides.iter().filter(|s| !s.is_empty()).count() < 2 {
        bail!("a split needs at least two non-empty sides, e.g. \"1,2,3|4,5\"");
    }
    Ok(sides)
}

/// Cuts every link between different sides, in both directions, on every node.
pub async fn split(args: SplitArgs) -> anyhow::Result<()> {
    let client = client::http()?;
    let members = client::members(&client, &args.http).await?;
    let all: BTreeSet<u64> = members.iter().map(|(id, _)| *id).collect();
    let sides = parse_sides(&args.sides, &all)?;
    for (id, http) in &members {
        let Some(mine) = sides.iter().find(|side| side.contains(id)) else {
            continue;
        };
        let rules: Vec<FaultRule> = all
            .iter()
            .filter(|other| !mine.contains(other))
            .map(|other| FaultRule {
                peer: NodeId(*other),
                direction: Direction::Both,
                action: FaultAction::Drop,
                probability: 1.0,
            })
            .collect();
        client::post::<_, FaultIds>(&client, http, "/v1/faults", &rules)
            .await
            .with_context(|| format!("cutting node {id}"))?;
    }
    let shown: Vec<String> = sides
        .iter()
        .map(|s| s.iter().map(u64::to_string).collect::<Vec<_>>().join(","))
        .collect();
    println!("split: {}", shown.join(" | "));
    Ok(())
}

/// Clears every fault on every member.
pub async fn heal(args: HealArgs) -> anyhow::Result<()> {
    let client = client::http()?;
    let members = client::members(&client, &args.http).await?;
    for (id, http) in &members {
        client::delete::<IgnoredAny>(&client, http, "/v1/faults")
            .await
            .with_context(|| format!("healing node {id}"))?;
    }
    println!("healed {} nodes", members.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_parse_and_the_rest_form_a_side() {
        let all: BTreeSet<u64> = (1..=5).collect();
        let sides = parse_sides("1,2|4", &all).unwrap();
        assert_eq!(
            sides,
            vec![
                BTreeSet::from([1, 2]),
                BTreeSet::from([4]),
                BTreeSet::from([3, 5])
            ]
        );
        assert!(parse_sides("1,2,3,4,5", &all).is_err());
        assert!(parse_sides("1,9|2", &all).is_err());
        assert!(parse_sides("1,2|2,3", &all).is_err());
    }
}
