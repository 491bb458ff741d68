//! A small HTTP client for the admin API, shared by the CLI commands.

use std::time::Duration;

use anyhow::{Context, bail};
use isle_node::StatusReport;
use serde_json::Value;

/// A client with short timeouts: an unreachable node must not hang the CLI.
pub fn http() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .context("building HTTP client")
}

fn url(addr: &str, path: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        format!("{}{path}", addr.trim_end_matches('/'))
    } else {
        format!("http://{addr}{path}")
    }
}

async fn answer(response: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("reading the answer to {what}"))?;
    if !status.is_success() {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or(text);
        bail!("{what}: HTTP {status}: {message}");
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: the answer is not JSON"))
}

/// `GET path` on a node, parsed as JSON.
pub async fn get(client: &reqwest::Client, addr: &str, path: &str) -> anyhow::Result<Value> {
    let what = format!("GET {path} on {addr}");
    let response = client
        .get(url(addr, path))
        .send()
        .await
        .with_context(|| what.clone())?;
    answer(response, &what).await
}

/// `POST path` with a JSON body.
pub async fn post(
    client: &reqwest::Client,
    addr: &str,
    path: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    let what = format!("POST {path} on {addr}");
    let response = client
        .post(url(addr, path))
        .json(body)
        .send()
        .await
        .with_context(|| what.clone())?;
    answer(response, &what).await
}

/// `DELETE path`.
pub async fn delete(client: &reqwest::Client, addr: &str, path: &str) -> anyhow::Result<Value> {
    let what = format!("DELETE {path} on {addr}");
    let response = client
        .delete(url(addr, path))
        .send()
        .await
        .with_context(|| what.clone())?;
    answer(response, &what).await
}

/// `GET /v1/status`: the node's typed status report.
pub async fn status(client: &reqwest::Client, addr: &str) -> anyhow::Result<StatusReport> {
    let answer = get(client, addr, "/v1/status").await?;
    serde_json::from_value(answer)
        .with_context(|| format!("GET /v1/status on {addr}: not a status report"))
}

/// Every member's HTTP address as the node at `addr` knows them: (id, http address).
pub async fn members(client: &reqwest::Client, addr: &str) -> anyhow::Result<Vec<(u64, String)>> {
    let status = status(client, addr).await?.node;
    let mut members = vec![(status.node.0, status.http_addr)];
    members.extend(
        status
            .peers
            .into_iter()
            .map(|peer| (peer.id.0, peer.http_addr)),
    );
    members.sort();
    Ok(members)
}
