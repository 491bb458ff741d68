//! `isle status`: the cluster as a table, one row per node as that node sees itself.

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use isle_lab::admin as client;

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

/// Asks the given node for the members, then every member for its own status.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let client = client::http()?;
    let members = client::members(&client, &args.http)
        .await
        .with_context(|| format!("cannot read status from {}", args.http))?;
    let mut rows = Vec::new();
    for (id, http) in &members {
        rows.push((
            *id,
            http.clone(),
            client::get(&client, http, "/v1/status").await,
        ));
    }
    if args.json {
        let all: Vec<Value> = rows
            .into_iter()
            .map(|(id, http, status)| match status {
                Ok(status) => status,
                Err(err) => {
                    serde_json::json!({"node": id, "http_addr": http, "error": err.to_string()})
                }
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

/// Raft's view, per node: role, term, leader, commit and applied index, revision.
fn cp_row(status: &Value) -> String {
    let cp = &status["cp"];
    let or_dash = |v: &Value| {
        if v.is_null() {
            "-".to_string()
        } else {
            v.to_string()
        }
    };
    format!(
        "{:<5} {:<20} {:>5} {:>7} {:>8} {:>8} {:>9} {}",
        status["node"].as_u64().unwrap_or(0),
        cp["role"].as_str().unwrap_or("-"),
        or_dash(&cp["term"]),
        or_dash(&cp["leader"]),
        or_dash(&cp["commit_index"]),
        or_dash(&cp["applied_index"]),
        or_dash(&cp["revision"]),
        or_dash(&cp["voters"]),
    )
}

fn row(status: &Value) -> String {
    let reaches: Vec<String> = status["reachable"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .map(|id| id.to_string())
        .collect();
    let partition = &status["partition"];
    let kind = partition["kind"].as_str().unwrap_or("?");
    let detail = match kind {
        "complete" => sides(&partition["sides"]),
        "partial" => links(&partition["cut"], "cut"),
        "asymmetric" => links(&partition["one_way"], "one-way"),
        _ => String::new(),
    };
    let held = if status["quorum"]["held"].as_bool() == Some(true) {
        "yes"
    } else {
        "NO"
    };
    let for_ms = status["state_for_ms"].as_u64().unwrap_or(0);
    let cp = &status["cp"];
    let lease_lost = cp["leader_lease_valid"] == Value::Bool(false);
    let raft = match cp["role"].as_str() {
        Some(role) if lease_lost => format!("{role}(no lease)/{}", cp["term"]),
        Some(role) => format!("{role}/{}", cp["term"]),
        None => "-".to_string(),
    };
    format!(
        "{:<5} {:<8} {:<18} {:>7.1}s  {:<6} {:<16} {:<10} {:<14} {}",
        status["node"].as_u64().unwrap_or(0),
        status["zone"]
            .as_str()
            .filter(|z| !z.is_empty())
            .unwrap_or("-"),
        status["state"].as_str().unwrap_or("?"),
        for_ms as f64 / 1000.0,
        held,
        format!("[{}]", reaches.join(",")),
        kind,
        raft,
        detail
    )
}

fn sides(sides: &Value) -> String {
    let parts: Vec<String> = sides
        .as_array()
        .into_iter()
        .flatten()
        .map(|side| {
            let ids: Vec<String> = side
                .as_array()
                .into_iter()
                .flatten()
                .map(|id| id.to_string())
                .collect();
            format!("{{{}}}", ids.join(","))
        })
        .collect();
    parts.join(" | ")
}

fn links(links: &Value, word: &str) -> String {
    let arrow = if word == "cut" { "↔" } else { "→" };
    let parts: Vec<String> = links
        .as_array()
        .into_iter()
        .flatten()
        .map(|link| format!("{}{arrow}{}", link[0], link[1]))
        .collect();
    format!("{word}: {}", parts.join(" "))
}
