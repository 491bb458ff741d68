//! `/v1/cp/...`: the CP keyspace over HTTP/JSON. Keys and values are UTF-8 strings here (the
//! state machine stores bytes; the etcd gRPC API will carry arbitrary bytes).
//!
//! - `POST /v1/cp/put` `{"key", "value", "lease"?, "prev_kv"?, "request_id"?, "fence"?: {"lock", "token"}}`
//! - `GET /v1/cp/get?key=K&prefix=true&revision=R&limit=N&consistency=stale|linearizable`
//! - `POST /v1/cp/delete` `{"key", "prefix"?, "prev_kv"?, "request_id"?, "fence"?}`
//! - `GET /v1/cp/fence?lock=L&token=T` — is `T` the newest token of lock `L`?
//!
//! Refusals are typed: 503 `NoQuorum`/`NoLeader`/`NotInitialized`, 504 `Timeout`
//! (indeterminate), 409 `FencingTokenStale`, 400 other rejections.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use isle_cp::command::{DeleteRangeRequest, Fence, KeyValue, PutRequest, RangeRequest, prefix_end};
use isle_cp::{Command, CpError, Request};
use isle_node::NodeHandle;
use isle_node::cp::{Consistency, CpRequestError};
use serde::Deserialize;
use serde_json::{Value, json};

/// Body of `POST /v1/cp/put`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutBody {
    key: String,
    value: String,
    #[serde(default)]
    lease: i64,
    #[serde(default)]
    prev_kv: bool,
    request_id: Option<String>,
    fence: Option<Fence>,
}

/// Body of `POST /v1/cp/delete`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteBody {
    key: String,
    #[serde(default)]
    prefix: bool,
    #[serde(default)]
    prev_kv: bool,
    request_id: Option<String>,
    fence: Option<Fence>,
}

/// Query of `GET /v1/cp/get`.
#[derive(Deserialize)]
pub(crate) struct GetQuery {
    key: String,
    #[serde(default)]
    prefix: bool,
    #[serde(default)]
    revision: i64,
    #[serde(default)]
    limit: i64,
    #[serde(default)]
    consistency: Consistency,
}

/// Query of `GET /v1/cp/fence`.
#[derive(Deserialize)]
pub(crate) struct FenceQuery {
    lock: String,
    token: i64,
}

fn kv_json(kv: &KeyValue) -> Value {
    json!({
        "key": String::from_utf8_lossy(&kv.key),
        "value": String::from_utf8_lossy(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    })
}

/// A refusal as HTTP: status by kind, the error's sentence and its fields.
pub(crate) fn refusal(err: &CpRequestError) -> Response {
    let status = match err {
        CpRequestError::NoQuorum { .. }
        | CpRequestError::NoLeader { .. }
        | CpRequestError::NotInitialized => StatusCode::SERVICE_UNAVAILABLE,
        CpRequestError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        CpRequestError::Rejected(CpError::FencingTokenStale { .. }) => StatusCode::CONFLICT,
        CpRequestError::Rejected(_) => StatusCode::BAD_REQUEST,
        CpRequestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut body = serde_json::to_value(err).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut body {
        map.insert("error".into(), Value::String(err.to_string()));
    }
    (status, axum::Json(body)).into_response()
}

fn command(request: Request, request_id: Option<String>) -> Command {
    match request_id {
        Some(id) => Command::new(request).with_request_id(id),
        None => Command::new(request),
    }
}

pub(crate) async fn put(
    State(node): State<NodeHandle>,
    axum::Json(body): axum::Json<PutBody>,
) -> Response {
    let put = PutRequest {
        lease: body.lease,
        prev_kv: body.prev_kv,
        fence: body.fence,
        ..PutRequest::new(body.key.as_bytes(), body.value.as_bytes())
    };
    match node
        .cp
        .write(command(Request::Put(put), body.request_id))
        .await
    {
        Ok(isle_cp::Response::Put(put)) => axum::Json(json!({
            "revision": put.header_revision,
            "prev_kv": put.prev_kv.as_ref().map(kv_json),
        }))
        .into_response(),
        Ok(other) => refusal(&CpRequestError::Internal(format!(
            "unexpected answer {other:?}"
        ))),
        Err(err) => refusal(&err),
    }
}

pub(crate) async fn delete(
    State(node): State<NodeHandle>,
    axum::Json(body): axum::Json<DeleteBody>,
) -> Response {
    let mut request = if body.prefix {
        DeleteRangeRequest::prefix(body.key.as_bytes())
    } else {
        DeleteRangeRequest::key(body.key.as_bytes())
    };
    request.prev_kv = body.prev_kv;
    request.fence = body.fence;
    match node
        .cp
        .write(command(Request::DeleteRange(request), body.request_id))
        .await
    {
        Ok(isle_cp::Response::DeleteRange(deleted)) => axum::Json(json!({
            "revision": deleted.header_revision,
            "deleted": deleted.deleted,
            "prev_kvs": deleted.prev_kvs.iter().map(kv_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        Ok(other) => refusal(&CpRequestError::Internal(format!(
            "unexpected answer {other:?}"
        ))),
        Err(err) => refusal(&err),
    }
}

pub(crate) async fn get(State(node): State<NodeHandle>, Query(query): Query<GetQuery>) -> Response {
    let mut request = RangeRequest::key(query.key.as_bytes());
    if query.prefix {
        request.range_end = prefix_end(query.key.as_bytes());
    }
    request.revision = query.revision;
    request.limit = query.limit;
    match node.cp.read(request, query.consistency).await {
        Ok(outcome) => axum::Json(json!({
            "kvs": outcome.response.kvs.iter().map(kv_json).collect::<Vec<_>>(),
            "count": outcome.response.count,
            "more": outcome.response.more,
            "revision": outcome.response.header_revision,
            "consistency": outcome.consistency,
            "served_by": outcome.served_by,
            "applied_index": outcome.applied_index,
        }))
        .into_response(),
        Err(err) => refusal(&err),
    }
}

pub(crate) async fn fence(
    State(node): State<NodeHandle>,
    Query(query): Query<FenceQuery>,
) -> Response {
    let checked = node
        .cp
        .state()
        .read()
        .machine
        .fence_check(&query.lock, query.token);
    match checked {
        Ok(()) => axum::Json(json!({"lock": query.lock, "token": query.token, "valid": true}))
            .into_response(),
        Err(err) => refusal(&CpRequestError::Rejected(err)),
    }
}
