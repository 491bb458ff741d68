//! `/v1/cp/...`: the CP keyspace over HTTP/JSON. Keys and values are UTF-8 strings here (the
//! state machine stores bytes; the etcd gRPC API will carry arbitrary bytes).
//!
//! - `POST /v1/cp/put` `{"key", "value", "lease"?, "prev_kv"?, "request_id"?, "fence"?: {"lock", "token"}}`
//! - `GET /v1/cp/get?key=K&prefix=true&revision=R&limit=N&consistency=stale|linearizable`
//! - `POST /v1/cp/delete` `{"key", "prefix"?, "prev_kv"?, "request_id"?, "fence"?}`
//! - `GET /v1/cp/fence?lock=L&token=T` — is `T` the newest token of lock `L`?
//! - `POST /v1/cp/compact` `{"revision"}` — drop history below a revision
//! - `POST /v1/cp/lease/grant` `{"ttl_secs", "id"?}`, `POST /v1/cp/lease/keepalive` `{"id"}`,
//!   `POST /v1/cp/lease/revoke` `{"id"}`, `GET /v1/cp/leases`
//! - `POST /v1/cp/lock` `{"name", "lease", "timeout_ms"?}` → `{"key", "token", ...}` (waits in
//!   queue order), `POST /v1/cp/unlock` `{"key"}`
//! - `POST /v1/cp/txn` — see [`crate::txn`]
//! - `GET /v1/cp/members`, `POST /v1/cp/members` `{"AddLearner": 4}` | `{"Promote": 4}` |
//!   `{"Remove": 4}` — runtime membership of the Raft group
//!
//! Refusals are typed: 503 `NoQuorum`/`NoLeader`/`NotInitialized`, 504 `Timeout`
//! (indeterminate), 409 `FencingTokenStale`, 400 other rejections.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use isle_cp::command::{DeleteRangeRequest, KeyValue, PutRequest, RangeRequest, prefix_end};
use isle_cp::{Command, CpError, Request};
use isle_node::NodeHandle;
use isle_node::cp::{CpRequestError, MembershipChange};
use serde_json::Value;

use crate::wire::ErrorBody;
use crate::wire::cp::{
    CompactBody, CompactReply, DeleteBody, DeleteReply, FenceQuery, FenceReply, GetQuery, GetReply,
    Kv, Lease, LeaseGrantBody, LeaseGrantReply, LeaseIdBody, LeaseKeepAliveReply, LeaseRevokeReply,
    LeasesReply, LockBody, LockReply, PutBody, PutReply, UnlockBody, UnlockReply,
};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A key as `/v1/cp/get`, `put` and `delete` show it (with its lease).
pub(crate) fn kv(kv: &KeyValue) -> Kv {
    Kv {
        create_revision: kv.create_revision,
        key: text(&kv.key),
        lease: Some(kv.lease),
        mod_revision: kv.mod_revision,
        value: text(&kv.value),
        version: kv.version,
    }
}

/// A refusal as HTTP: status by kind, the error's sentence and its fields.
pub(crate) fn refusal(err: &CpRequestError) -> Response {
    let status = match err {
        CpRequestError::NoQuorum { .. }
        | CpRequestError::NoLeader { .. }
        | CpRequestError::NotInitialized
        | CpRequestError::SelfFenced { .. }
        | CpRequestError::UnknownMember { .. } => StatusCode::SERVICE_UNAVAILABLE,
        CpRequestError::Timeout { .. }
        | CpRequestError::Indeterminate { .. }
        | CpRequestError::LockTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        CpRequestError::Rejected(CpError::FencingTokenStale { .. }) => StatusCode::CONFLICT,
        CpRequestError::Rejected(_) => StatusCode::BAD_REQUEST,
        CpRequestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    // {"NoQuorum": {...}} on the wire becomes {"kind": "NoQuorum", ...fields, "error"}; a state
    // machine refusal {"Rejected": {"FencingTokenStale": {...}}} becomes
    // {"kind": "Rejected", "reason": "FencingTokenStale", ...fields, "error"}.
    let mut fields = serde_json::Map::new();
    if let Ok(tagged) = serde_json::to_value(err) {
        flatten(tagged, &["kind", "reason"], &mut fields);
    }
    let mut name = |field: &str| match fields.remove(field) {
        Some(Value::String(name)) => Some(name),
        _ => None,
    };
    let body = ErrorBody {
        error: err.to_string(),
        kind: name("kind"),
        // Refused, unknown or invalid: whether the request may have been applied.
        outcome: Some(err.kind()),
        reason: name("reason"),
        detail: fields.into_iter().collect(),
    };
    (status, axum::Json(body)).into_response()
}

/// Externally tagged enums → `{names[0]: tag, names[1]: inner tag, ...fields}`. Variant tags
/// are CamelCase identifiers; struct fields are snake_case, so the two cannot be confused.
fn flatten(value: Value, names: &[&str], body: &mut serde_json::Map<String, Value>) {
    let is_tag = |text: &str| {
        text.starts_with(|c: char| c.is_ascii_uppercase())
            && text.chars().all(char::is_alphanumeric)
    };
    match (value, names.split_first()) {
        (Value::String(tag), Some((name, _))) if is_tag(&tag) => {
            body.insert((*name).into(), Value::String(tag));
        }
        (Value::Object(map), Some((name, rest)))
            if map.len() == 1 && map.keys().all(|k| is_tag(k)) =>
        {
            for (tag, inner) in map {
                body.insert((*name).into(), Value::String(tag));
                flatten(inner, rest, body);
            }
        }
        (Value::Object(fields), _) => body.extend(fields),
        (Value::Null, _) => {}
        (other, _) => {
            body.insert("detail".into(), other);
        }
    }
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
        Ok(isle_cp::Response::Put(put)) => axum::Json(PutReply {
            prev_kv: put.prev_kv.as_ref().map(kv),
            revision: put.header_revision,
        })
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
        Ok(isle_cp::Response::DeleteRange(deleted)) => axum::Json(DeleteReply {
            deleted: deleted.deleted,
            prev_kvs: deleted.prev_kvs.iter().map(kv).collect(),
            revision: deleted.header_revision,
        })
        .into_response(),
        Ok(other) => refusal(&CpRequestError::Internal(format!(
            "unexpected answer {other:?}"
        ))),
        Err(err) => refusal(&err),
    }
}

pub(crate) async fn get(State(node): State<NodeHandle>, Query(query): Query<GetQuery>) -> Response {
    let mut request = RangeRequest::key(query.key.as_bytes());
    if query.prefix && query.key.is_empty() {
        // The empty prefix is every key: etcd's `key = range_end = "\0"`.
        request = RangeRequest::key(b"\0");
        request.range_end = b"\0".to_vec();
    } else if query.prefix {
        request.range_end = prefix_end(query.key.as_bytes());
    }
    request.revision = query.revision;
    request.limit = query.limit;
    match node.cp.read(request, query.consistency).await {
        Ok(outcome) => axum::Json(GetReply {
            applied_index: outcome.applied_index,
            consistency: outcome.consistency,
            count: outcome.response.count,
            kvs: outcome.response.kvs.iter().map(kv).collect(),
            more: outcome.response.more,
            revision: outcome.response.header_revision,
            served_by: outcome.served_by,
        })
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
        Ok(()) => axum::Json(FenceReply {
            lock: query.lock,
            token: query.token,
            valid: true,
        })
        .into_response(),
        Err(err) => refusal(&CpRequestError::Rejected(err)),
    }
}

pub(crate) async fn lease_grant(
    State(node): State<NodeHandle>,
    axum::Json(body): axum::Json<LeaseGrantBody>,
) -> Response {
    match node.cp.lease_grant(body.id, body.ttl_secs).await {
        Ok(granted) => axum::Json(LeaseGrantReply {
            id: granted.id,
            revision: granted.header_revision,
            ttl_secs: granted.ttl_secs,
        })
        .into_response(),
        Err(err) => refusal(&err),
    }
}

pub(crate) async fn lease_keep_alive(
    State(node): State<NodeHandle>,
    axum::Json(body): axum::Json<LeaseIdBody>,
) -> Response {
    match node.cp.lease_keep_alive(body.id).await {
        Ok(ttl_secs) => axum::Json(LeaseKeepAliveReply {
            id: body.id,
            ttl_secs,
        })
        .into_response(),
        Err(err) => refusal(&err),
    }
}

pub(crate) async fn lease_revoke(
    State(node): State<NodeHandle>,
    axum::Json(body): axum::Json<LeaseIdBody>,
) -> Response {
    match node.cp.lease_revoke(body.id).await {
        Ok(revoked) => axum::Json(LeaseRevokeReply {
            id: body.id,
            revision: revoked.header_revision,
        })
        .into_response(),
        Err(err) => refusal(&err),
    }
}

pub(crate) async fn leases(State(node): State<NodeHandle>) -> Response {
    let leases = node
        .cp
        .leases()
        .iter()
        .map(|lease| Lease {
            id: lease.id,
            keys: lease.keys.iter().map(|k| text(k)).collect(),
            remaining_secs: node.cp.lease_ttl(lease.id).and_then(|(_, left)| left),
            ttl_secs: lease.ttl_secs,
        })
        .collect();
    axum::Json(LeasesReply { leases }).into_response()
}

pub(crate) async fn lock(
    State(node): State<NodeHandle>,
    axum::Json(body): axum::Json<LockBody>,
) -> Response {
    let timeout = std::time::Duration::from_millis(body.timeout_ms.min(300_000));
    match node.cp.lock(&body.name, body.lease, timeout).await {
        Ok(held) => axum::Json(LockReply {
            key: text(&held.key),
            lease: body.lease,
            name: body.name,
            revision: held.header_revision,
            token: held.token,
        })
        .into_response(),
        Err(err) => refusal(&err),
    }
}

pub(crate) async fn unlock(
    State(node): State<NodeHandle>,
    axum::Json(body): axum::Json<UnlockBody>,
) -> Response {
    match node.cp.unlock(body.key.into_bytes()).await {
        Ok(released) => axum::Json(UnlockReply {
            released: released.released,
            revision: released.header_revision,
        })
        .into_response(),
        Err(err) => refusal(&err),
    }
}

pub(crate) async fn members(State(node): State<NodeHandle>) -> Response {
    axum::Json(node.cp.membership()).into_response()
}

pub(crate) async fn change_members(
    State(node): State<NodeHandle>,
    axum::Json(change): axum::Json<MembershipChange>,
) -> Response {
    match node.cp.change_membership(change).await {
        Ok(membership) => axum::Json(membership).into_response(),
        Err(err) => refusal(&err),
    }
}

pub(crate) async fn compact(
    State(node): State<NodeHandle>,
    axum::Json(body): axum::Json<CompactBody>,
) -> Response {
    let request = isle_cp::command::CompactRequest {
        revision: body.revision,
    };
    match node.cp.write(Command::new(Request::Compact(request))).await {
        Ok(isle_cp::Response::Compact(compacted)) => axum::Json(CompactReply {
            compacted_to: body.revision,
            revision: compacted.header_revision,
        })
        .into_response(),
        Ok(other) => refusal(&CpRequestError::Internal(format!(
            "unexpected answer {other:?}"
        ))),
        Err(err) => refusal(&err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isle_cp::CpError;
    use serde_json::json;

    fn body(err: CpRequestError) -> Value {
        let mut body = serde_json::Map::new();
        flatten(
            serde_json::to_value(&err).expect("serializes"),
            &["kind", "reason"],
            &mut body,
        );
        Value::Object(body)
    }

    #[test]
    fn refusals_flatten_to_kind_reason_and_fields() {
        let stale = body(CpRequestError::Rejected(CpError::FencingTokenStale {
            presented: 2,
            current: 4,
        }));
        assert_eq!(
            stale,
            json!({"kind": "Rejected", "reason": "FencingTokenStale", "presented": 2, "current": 4})
        );
        let no_quorum = body(CpRequestError::NoQuorum {
            reachable: 2,
            needed: 3,
            total: 5,
            unit: "votes".into(),
            leader: None,
        });
        assert_eq!(no_quorum["kind"], "NoQuorum");
        assert_eq!(no_quorum["needed"], 3);
        let no_leader = body(CpRequestError::NoLeader { detail: "x".into() });
        assert_eq!(no_leader, json!({"kind": "NoLeader", "detail": "x"}));
        let conflict = body(CpRequestError::Rejected(CpError::RequestIdConflict));
        assert_eq!(
            conflict,
            json!({"kind": "Rejected", "reason": "RequestIdConflict"})
        );
        assert_eq!(
            body(CpRequestError::NotInitialized),
            json!({"kind": "NotInitialized"})
        );
        assert_eq!(
            body(CpRequestError::Internal("boom".into())),
            json!({"kind": "Internal", "detail": "boom"})
        );
    }
}
