//! Isle's client APIs: HTTP (status, metrics, fault injection, the CP keyspace) and the etcd v3
//! gRPC API ([`etcd`]).
//!
//! Routes:
//! - `GET /v1/status` — this node's view of the cluster (JSON).
//! - `GET /metrics` — Prometheus text exposition.
//! - `GET /v1/faults`, `POST /v1/faults` (one rule or a list), `DELETE /v1/faults`
//!   (all, or `?peer=N`), `DELETE /v1/faults/{id}` — transport fault injection, refused with 403
//!   unless the node was started with `--allow-fault-injection`.
//! - `GET /v1/faults/clock`, `POST /v1/faults/clock` `{"skew_ms": -500}` — the wall clock's
//!   skew (the chaos lab's clock-skew nemesis); the POST is refused with 403 likewise.
//! - `GET /v1/health` — 200 while the process serves.
//! - `GET /dashboard` (and `/` redirecting there), `GET /v1/dashboard/events` — the live
//!   dashboard and its server-sent events (see [`dashboard`]).
//! - `/v1/cp/...` — the CP keyspace (see [`cp`]'s module docs).
//! - `/v1/ap/...` — the AP keyspace (see [`ap`]'s module docs); `GET /v1/ap-local/{bucket}/{key}`
//!   shows this node's own copy of a key (no coordination, no repair) with its digest.
//!
//! Every request and answer body is a type of [`wire`]. Errors are JSON [`wire::ErrorBody`]s:
//! `{"error": "...what failed and what to do..."}`, plus `kind`, `outcome` and the error's
//! fields for refusals of the keyspaces.

pub mod ap;
pub mod ap_backend;
mod cp;
pub mod dashboard;
pub mod etcd;
pub mod resp;
mod txn;
mod watch;
pub mod wire;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use isle_net::FaultError;
use isle_node::NodeHandle;
use serde::Deserialize;

use crate::wire::admin::{ClockSkew, FaultEntry, FaultIds, FaultList, FaultRules, SkewBody};
use crate::wire::ap::{Field, LocalReply, LocalValue};

/// The router serving one node's API.
pub fn router(node: NodeHandle) -> Router {
    let ap_routes = ap::routes(node.ap.clone());
    let dashboard = dashboard::Dashboard::new(node.clone());
    Router::new()
        .route("/v1/health", get(|| async { "ok\n" }))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route(
            "/v1/faults",
            get(list_faults).post(add_faults).delete(clear_faults),
        )
        .route("/v1/faults/clock", get(clock_skew).post(set_clock_skew))
        .route("/v1/faults/{id}", delete(remove_fault))
        .route("/v1/cp/put", post(cp::put))
        .route("/v1/cp/get", get(cp::get))
        .route("/v1/cp/delete", post(cp::delete))
        .route("/v1/cp/fence", get(cp::fence))
        .route("/v1/cp/compact", post(cp::compact))
        .route("/v1/cp/lease/grant", post(cp::lease_grant))
        .route("/v1/cp/lease/keepalive", post(cp::lease_keep_alive))
        .route("/v1/cp/lease/revoke", post(cp::lease_revoke))
        .route("/v1/cp/leases", get(cp::leases))
        .route("/v1/cp/lock", post(cp::lock))
        .route("/v1/cp/unlock", post(cp::unlock))
        .route("/v1/cp/txn", post(txn::txn))
        .route("/v1/cp/members", get(cp::members).post(cp::change_members))
        .route("/v1/cp/watch", get(watch::watch))
        .route("/v1/ap-local/{bucket}/{key}", get(ap_local))
        .with_state(node)
        .merge(ap_routes)
        .merge(dashboard::routes(dashboard.clone()))
        .layer(axum::middleware::from_fn_with_state(
            dashboard,
            dashboard::layer,
        ))
}

/// Serves the router on `addr` until `shutdown` completes.
pub async fn serve(
    node: NodeHandle,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Nagle would hold a small reply until the client's delayed ACK (~40 ms on Linux).
    let listener = listener.tap_io(|stream| {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "http: TCP_NODELAY not set");
        }
    });
    axum::serve(listener, router(node))
        .with_graceful_shutdown(shutdown)
        .await
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(wire::ErrorBody::message(message))).into_response()
}

fn fault_error(err: FaultError) -> Response {
    let status = match err {
        FaultError::NotAllowed => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, err)
}

async fn status(State(node): State<NodeHandle>) -> Response {
    let report = isle_node::StatusReport {
        node: node.status.borrow().as_ref().clone(),
        cp: node.cp.raft_status(),
        ap: node.ap.status(),
    };
    axum::Json(report).into_response()
}

/// This node's own copy of an AP key, without coordination or repair: for checking
/// convergence replica by replica.
async fn ap_local(
    State(node): State<NodeHandle>,
    Path((bucket, key)): Path<(String, String)>,
) -> Response {
    match node.ap.local(&bucket, key.as_bytes()) {
        Ok(Some((value, digest))) => axum::Json(LocalReply {
            digest: Some(format!("{digest:032x}")),
            found: true,
            value: Some(local_value(&value)),
        })
        .into_response(),
        Ok(None) => {
            let absent = LocalReply {
                digest: None,
                found: false,
                value: None,
            };
            (StatusCode::NOT_FOUND, axum::Json(absent)).into_response()
        }
        Err(err) => error(StatusCode::BAD_REQUEST, err),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A value for `/v1/ap-local`, bytes shown as (lossy) UTF-8: for inspection only.
fn local_value(value: &isle_ap::Value) -> LocalValue {
    use isle_ap::Value;
    let texts = |items: &[Vec<u8>]| items.iter().map(|v| text(v)).collect();
    match value {
        Value::Absent => LocalValue::Absent(true),
        Value::Values(values) => LocalValue::Values(texts(values)),
        Value::Counter(n) => LocalValue::Counter(*n),
        Value::Set(members) => LocalValue::Members(texts(members)),
        Value::Map(fields) => LocalValue::Fields(
            fields
                .iter()
                .map(|(f, v)| {
                    let v = match v {
                        isle_ap::FieldValue::Text(t) => Field::Text(text(t)),
                        isle_ap::FieldValue::Int(n) => Field::Int(*n),
                    };
                    (text(f), v)
                })
                .collect(),
        ),
    }
}

async fn metrics(State(node): State<NodeHandle>) -> Response {
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &node.registry) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {err}"),
        );
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

/// The fault rules in force on `node`.
pub(crate) fn fault_list(node: &NodeHandle) -> FaultList {
    let rules = node
        .faults
        .list()
        .into_iter()
        .map(|(id, rule)| FaultEntry { id, rule })
        .collect();
    FaultList {
        allowed: node.faults.allowed(),
        rules,
    }
}

async fn list_faults(State(node): State<NodeHandle>) -> Response {
    axum::Json(fault_list(&node)).into_response()
}

async fn add_faults(State(node): State<NodeHandle>, body: axum::body::Bytes) -> Response {
    let rules = match serde_json::from_slice::<FaultRules>(&body) {
        Ok(FaultRules::One(rule)) => vec![rule],
        Ok(FaultRules::Many(rules)) => rules,
        Err(err) => {
            let hint = r#"expected {"peer": 4, "direction": "both", "action": "drop"} or a list"#;
            return error(
                StatusCode::BAD_REQUEST,
                format!("bad fault rule: {err}; {hint}"),
            );
        }
    };
    let mut ids = Vec::new();
    for rule in rules {
        match node.faults.add(rule) {
            Ok(id) => ids.push(id),
            Err(err) => return fault_error(err),
        }
    }
    (StatusCode::CREATED, axum::Json(FaultIds { ids })).into_response()
}

/// Largest clock skew accepted, ms (a year): beyond it the arithmetic of stamps is all the test
/// would exercise.
const SKEW_MS_MAX: i64 = 365 * 24 * 3_600_000;

async fn clock_skew(State(node): State<NodeHandle>) -> Response {
    let skew_ms = node.clock_skew.as_ref().map(isle_env::ClockSkew::ms);
    let skew = ClockSkew {
        allowed: node.faults.allowed(),
        skew_ms,
    };
    axum::Json(skew).into_response()
}

async fn set_clock_skew(State(node): State<NodeHandle>, body: axum::body::Bytes) -> Response {
    if !node.faults.allowed() {
        return fault_error(FaultError::NotAllowed);
    }
    let Some(skew) = node.clock_skew.as_ref() else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "this node's clock cannot be skewed (it does not run on the system clock)",
        );
    };
    let body = match serde_json::from_slice::<SkewBody>(&body) {
        Ok(body) if body.skew_ms.abs() <= SKEW_MS_MAX => body,
        Ok(body) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "skew of {} ms exceeds the {SKEW_MS_MAX} ms maximum",
                    body.skew_ms
                ),
            );
        }
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(r#"bad clock skew: {err}; expected {{"skew_ms": -500}}"#),
            );
        }
    };
    skew.set_ms(body.skew_ms);
    axum::Json(SkewBody {
        skew_ms: body.skew_ms,
    })
    .into_response()
}

/// Query of `DELETE /v1/faults`.
#[derive(Deserialize)]
struct ClearQuery {
    peer: Option<u64>,
}

async fn clear_faults(State(node): State<NodeHandle>, Query(query): Query<ClearQuery>) -> Response {
    let result = match query.peer {
        Some(peer) => node.faults.clear_peer(isle_types::NodeId(peer)).map(|_| ()),
        None => node.faults.clear(),
    };
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => fault_error(err),
    }
}

async fn remove_fault(State(node): State<NodeHandle>, Path(id): Path<u64>) -> Response {
    match node.faults.remove(id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => fault_error(err),
    }
}
