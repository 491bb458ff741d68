//! A small HTTP client for the admin API, shared by the CLI commands.

use std::time::Duration;

use anyhow::{Context, bail};
use isle_api::wire::ErrorBody;
use isle_node::StatusReport;
use serde::Serialize;
use serde::de::DeserializeOwned;

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

/// Sends `request`; a success's body decoded as `T` (an empty body as JSON `null`, so `()`
/// or [`serde::de::IgnoredAny`] take a 204), or the server's error sentence.
async fn answer<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
    what: &str,
) -> anyhow::Result<T> {
    let response = request.send().await.with_context(|| what.to_string())?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("reading the answer to {what}"))?;
    if !status.is_success() {
        let message = serde_json::from_str::<ErrorBody>(&text).map_or(text, |body| body.error);
        bail!("{what}: HTTP {status}: {message}");
    }
    let json = if text.trim().is_empty() {
        "null"
    } else {
        &text
    };
    serde_json::from_str(json).with_context(|| format!("{what}: unexpected answer {text}"))
}

/// `GET path` on a node, its answer decoded as `T`.
pub async fn get<T: DeserializeOwned>(
    client: &reqwest::Client,
    addr: &str,
    path: &str,
) -> anyhow::Result<T> {
    let what = format!("GET {path} on {addr}");
    answer(client.get(url(addr, path)), &what).await
}

/// `GET path?query` on a node, the query encoded from a typed one.
pub async fn get_with<Q: Serialize + ?Sized, T: DeserializeOwned>(
    client: &reqwest::Client,
    addr: &str,
    path: &str,
    query: &Q,
) -> anyhow::Result<T> {
    let what = format!("GET {path} on {addr}");
    answer(client.get(url(addr, path)).query(query), &what).await
}

/// `POST path` with a JSON body.
pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
    client: &reqwest::Client,
    addr: &str,
    path: &str,
    body: &B,
) -> anyhow::Result<T> {
    let what = format!("POST {path} on {addr}");
    answer(client.post(url(addr, path)).json(body), &what).await
}

/// `DELETE path`.
pub async fn delete<T: DeserializeOwned>(
    client: &reqwest::Client,
    addr: &str,
    path: &str,
) -> anyhow::Result<T> {
    let what = format!("DELETE {path} on {addr}");
    answer(client.delete(url(addr, path)), &what).await
}

/// `GET /v1/status`: the node's typed status report.
pub async fn status(client: &reqwest::Client, addr: &str) -> anyhow::Result<StatusReport> {
    get(client, addr, "/v1/status").await
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
