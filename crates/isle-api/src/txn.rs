//! `POST /v1/cp/txn`: etcd's compare-and-swap transaction as JSON.
//!
//! ```json
//! {"compare": [{"key": "balance", "target": "value", "result": "=", "value": "100"},
//!              {"key": "lock/a", "target": "version", "result": ">", "value": 0, "prefix": true}],
//!  "success": [{"put": {"key": "balance", "value": "90"}}, {"get": {"key": "balance"}}],
//!  "failure": [{"get": {"key": "balance"}}],
//!  "request_id": "client-7:42", "fence": {"lock": "a", "token": 12}}
//! ```
//! `target`: version, create, mod, value, lease; `result`: `=`, `!=`, `>`, `<`. Ops: `put`
//! (`key`, `value`, `lease`?), `delete` (`key`, `prefix`?), `get` (`key`, `prefix`?).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use isle_cp::command::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, Op, OpResponse, PutRequest,
    RangeRequest, TxnRequest, prefix_end,
};
use isle_cp::{Command, Request};
use isle_node::NodeHandle;
use isle_node::cp::CpRequestError;

use crate::cp::refusal;
use crate::wire::ErrorBody;
use crate::wire::cp::{
    Compare as CompareBody, CompareValue, Kv, TxnBody, TxnOp, TxnOpReply, TxnReply,
};

fn bad(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(ErrorBody::message(message)),
    )
        .into_response()
}

fn integer(value: &CompareValue, target: &str) -> Result<i64, String> {
    match value {
        CompareValue::Int(n) => Ok(*n),
        CompareValue::Text(_) => Err(format!("compare on {target} needs an integer value")),
    }
}

fn compare(body: CompareBody) -> Result<Compare, String> {
    let target = match body.target.as_str() {
        "version" => CompareTarget::Version(integer(&body.value, "version")?),
        "create" => CompareTarget::Create(integer(&body.value, "create")?),
        "mod" => CompareTarget::Mod(integer(&body.value, "mod")?),
        "lease" => CompareTarget::Lease(integer(&body.value, "lease")?),
        "value" => match &body.value {
            CompareValue::Text(text) => CompareTarget::Value(text.clone().into_bytes()),
            _ => return Err("compare on value needs a string value".into()),
        },
        other => {
            return Err(format!(
                "unknown compare target {other:?}: version, create, mod, value, lease"
            ));
        }
    };
    let result = match body.result.as_str() {
        "=" | "==" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        other => return Err(format!("unknown compare result {other:?}: =, !=, >, <")),
    };
    let mut compare = Compare::new(body.key.as_bytes(), target, result);
    if body.prefix {
        compare.range_end = prefix_end(body.key.as_bytes());
    }
    Ok(compare)
}

fn op(body: TxnOp) -> Op {
    match body {
        TxnOp::Put { key, value, lease } => Op::Put(PutRequest {
            lease,
            ..PutRequest::new(key.as_bytes(), value.as_bytes())
        }),
        TxnOp::Delete { key, prefix: true } => {
            Op::DeleteRange(DeleteRangeRequest::prefix(key.as_bytes()))
        }
        TxnOp::Delete { key, prefix: false } => {
            Op::DeleteRange(DeleteRangeRequest::key(key.as_bytes()))
        }
        TxnOp::Get { key, prefix } => {
            let mut request = RangeRequest::key(key.as_bytes());
            if prefix {
                request.range_end = prefix_end(key.as_bytes());
            }
            Op::Range(request)
        }
    }
}

fn op_reply(response: &OpResponse) -> TxnOpReply {
    match response {
        OpResponse::Put(put) => TxnOpReply::Put {
            revision: put.header_revision,
        },
        OpResponse::DeleteRange(deleted) => TxnOpReply::Delete {
            deleted: deleted.deleted,
        },
        OpResponse::Range(range) => TxnOpReply::Get {
            count: range.count,
            // A transaction's get has never shown the lease.
            kvs: range
                .kvs
                .iter()
                .map(|kv| Kv {
                    lease: None,
                    ..crate::cp::kv(kv)
                })
                .collect(),
        },
        OpResponse::Txn(txn) => TxnOpReply::Txn {
            succeeded: txn.succeeded,
        },
    }
}

pub(crate) async fn txn(
    State(node): State<NodeHandle>,
    axum::Json(body): axum::Json<TxnBody>,
) -> Response {
    let compares: Result<Vec<Compare>, String> = body.compare.into_iter().map(compare).collect();
    let compare = match compares {
        Ok(compare) => compare,
        Err(message) => return bad(message),
    };
    let request = TxnRequest {
        compare,
        success: body.success.into_iter().map(op).collect(),
        failure: body.failure.into_iter().map(op).collect(),
        fence: body.fence,
    };
    let mut command = Command::new(Request::Txn(request));
    if let Some(id) = body.request_id {
        command = command.with_request_id(id);
    }
    match node.cp.write(command).await {
        Ok(isle_cp::Response::Txn(txn)) => axum::Json(TxnReply {
            responses: txn.responses.iter().map(op_reply).collect(),
            revision: txn.header_revision,
            succeeded: txn.succeeded,
        })
        .into_response(),
        Ok(other) => refusal(&CpRequestError::Internal(format!(
            "unexpected answer {other:?}"
        ))),
        Err(err) => refusal(&err),
    }
}
