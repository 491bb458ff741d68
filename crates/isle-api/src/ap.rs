//! `/v1/ap/...`: the AP keyspace over HTTP/JSON, served by any [`ApBackend`].
//!
//! Keys travel in the path (percent-encode `/`, `?`, `#`, `%` and spaces); keys, values, set
//! members and map fields are UTF-8 strings in JSON. A request body may say
//! `"encoding": "base64"` to send every byte string in it base64-encoded (standard alphabet); an
//! answer holding any byte string that is not UTF-8 says `"encoding": "base64"` and encodes all
//! of its byte strings that way.
//!
//! - `GET /v1/ap` — `{"node", "buckets": [{"name", "rule", "n"}]}`: the buckets this node serves.
//! - `GET /v1/ap/{bucket}/{key}?r=quorum&strict=false` — a read, merged from `r` replicas
//!   (`one`, `quorum`, `all`, `local_quorum`, `each_quorum` or a number; `strict=true` counts
//!   only primaries). 200 `{"found": true, "bucket", "key", "type", ..., "context", "rule",
//!   "stamp", "replicas"}` where by `type`: `"value"` → `"values": [...]` (several are
//!   siblings: concurrent writes the bucket kept side by side), `"counter"` → `"value": n`,
//!   `"set"` → `"members": [...]`, `"map"` → `"fields": {field: text or number}`. `"stamp"` is the
//!   winning write's hybrid timestamp in `lww` buckets (else `null`); `"replicas"` is
//!   `{"answered", "asked", "needed", "level", "fallbacks"}`. An absent key is 404 with the same
//!   shape, `"found": false`, `"type": null` and `"values": []` — and still a context, which
//!   covers the deletes seen.
//! - `PUT /v1/ap/{bucket}/{key}?w=quorum&strict=false` `{"value", "context"?, "encoding"?}` → 200
//!   `{"context", "rule", "stamp", "replicas", "applied", "type", "values"}` (the values the
//!   coordinator holds after the write). The context is opaque: pass back the one a read gave to
//!   replace exactly what that read saw. **Without a context the write is blind** (as in Riak):
//!   in a `siblings` bucket it is kept *next to* whatever the key holds, as one more sibling; in
//!   an `lww` bucket the newest stamp wins whatever the context.
//! - `DELETE /v1/ap/{bucket}/{key}?w=quorum&strict=false&context=C` → 200, shaped like a put. With
//!   a context it deletes what that context covers (a concurrent write survives as a sibling);
//!   without one it deletes whatever the coordinating replica holds.
//! - `POST /v1/ap/{bucket}/{key}/incr?w=` `{"by": 1, "request_id"?}` → `{"value", "applied",
//!   "replicas", ...}`. A retry carrying the same `request_id`, through any node, counts once
//!   (`"applied": false`). An empty body adds 1.
//! - `POST /v1/ap/{bucket}/{key}/sadd?w=` and `/srem` `{"members": [...]}` → `{"members",
//!   "replicas", ...}` (add wins over a concurrent remove).
//! - `POST /v1/ap/{bucket}/{key}/map-update?w=` `{"set": {field: "text"}, "incr": {field: n},
//!   "remove": [field], "request_id"?}` → `{"fields", "replicas", ...}`.
//!
//! Errors are JSON `{"kind", "error", ...fields}`, `error` being the sentence to show:
//! 503 `Unavailable` (too few replicas answered: `answered`, `asked`, `needed`, `level`,
//! `detail`; a write may still have been stored where it was acknowledged), 400 `BadRequest`
//! (malformed JSON, query, level, context or limits) and `Level` (`reason`: `MoreThanN` or
//! `NoLocalReplica`), 409 `WrongType` (`held`, `wanted`, `op`), 422 `NotAnInteger`,
//! `Overflow` and `TooManyRequestIds`, 500 `Internal`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use isle_ap::level::LevelError;
use isle_ap::{
    ApError, ApplyError, FieldValue, Level, Op, ReadOptions, Value, WriteContext, WriteOptions,
};
use isle_crdt::Context;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use crate::ap_backend::ApBackend;
use crate::wire::ErrorBody;
use crate::wire::ap::{
    BucketsReply, Data, DeleteQuery, Encoding, Field, IncrBody, MapBody, MembersBody, PutBody,
    ReadQuery, ReadReply, WriteQuery, WriteReply,
};

/// The router for `/v1/ap/...`, its state applied: `.merge` it into a node's router.
pub fn routes<B: ApBackend>(backend: B) -> Router {
    Router::new()
        .route("/v1/ap", get(buckets::<B>))
        .route(
            "/v1/ap/{bucket}/{key}",
            get(read::<B>).put(put::<B>).delete(delete::<B>),
        )
        .route("/v1/ap/{bucket}/{key}/incr", post(incr::<B>))
        .route("/v1/ap/{bucket}/{key}/sadd", post(sadd::<B>))
        .route("/v1/ap/{bucket}/{key}/srem", post(srem::<B>))
        .route("/v1/ap/{bucket}/{key}/map-update", post(map_update::<B>))
        .with_state(backend)
}

/// base64url without padding for contexts (padding accepted on the way in).
const CONTEXT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes a causal context for clients: postcard, then base64url.
pub fn encode_context(context: &Context) -> String {
    CONTEXT_B64.encode(postcard::to_allocvec(context).unwrap_or_default())
}

/// Decodes a context given by [`encode_context`]; `None` for the empty string.
pub fn decode_context(text: &str) -> Result<Option<Context>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bad = |why: String| {
        format!(
            "context {text:?} is not one this API issued ({why}); pass back the \"context\" of a read unchanged, or none for a blind write"
        )
    };
    let bytes = CONTEXT_B64
        .decode(text)
        .map_err(|err| bad(err.to_string()))?;
    match postcard::take_from_bytes::<Context>(&bytes) {
        Ok((context, [])) => Ok(Some(context)),
        Ok(_) => Err(bad("trailing bytes".into())),
        Err(err) => Err(bad(err.to_string())),
    }
}

/// A refusal on its way out: a status and the JSON body.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    body: ErrorBody,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// An error's own fields, by name.
type Detail = Vec<(&'static str, Json)>;

fn failure(
    status: StatusCode,
    err: &ApError,
    kind: &str,
    reason: Option<&str>,
    detail: Detail,
) -> Failure {
    let body = ErrorBody {
        error: err.to_string(),
        kind: Some(kind.to_string()),
        // Refused, unknown or invalid: whether the request may have been applied.
        outcome: Some(err.kind()),
        reason: reason.map(str::to_string),
        detail: detail
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect(),
    };
    Failure { status, body }
}

fn bad_request(error: impl Into<String>) -> Failure {
    Failure::from(ApError::BadRequest(error.into()))
}

impl From<ApError> for Failure {
    fn from(err: ApError) -> Self {
        match &err {
            ApError::Unavailable {
                answered,
                asked,
                needed,
                level,
                detail,
            } => failure(
                StatusCode::SERVICE_UNAVAILABLE,
                &err,
                "Unavailable",
                None,
                vec![
                    ("answered", Json::from(*answered)),
                    ("asked", Json::from(*asked)),
                    ("needed", Json::from(*needed)),
                    ("level", Json::from(level.as_str())),
                    ("detail", Json::from(detail.as_str())),
                ],
            ),
            ApError::Level(LevelError::MoreThanN { level, needed, n }) => failure(
                StatusCode::BAD_REQUEST,
                &err,
                "Level",
                Some("MoreThanN"),
                vec![
                    ("level", Json::from(level.as_str())),
                    ("needed", Json::from(*needed)),
                    ("n", Json::from(*n)),
                ],
            ),
            ApError::Level(LevelError::NoLocalReplica { zone }) => failure(
                StatusCode::BAD_REQUEST,
                &err,
                "Level",
                Some("NoLocalReplica"),
                vec![("zone", serde_json::to_value(zone).unwrap_or_default())],
            ),
            ApError::Apply(ApplyError::WrongType { held, wanted, op }) => failure(
                StatusCode::CONFLICT,
                &err,
                "WrongType",
                None,
                vec![
                    ("held", serde_json::to_value(held).unwrap_or_default()),
                    ("wanted", serde_json::to_value(wanted).unwrap_or_default()),
                    ("op", serde_json::to_value(op).unwrap_or_default()),
                ],
            ),
            ApError::Apply(ApplyError::NotAnInteger) => failure(
                StatusCode::UNPROCESSABLE_ENTITY,
                &err,
                "NotAnInteger",
                None,
                Vec::new(),
            ),
            ApError::Apply(ApplyError::Overflow) => failure(
                StatusCode::UNPROCESSABLE_ENTITY,
                &err,
                "Overflow",
                None,
                Vec::new(),
            ),
            ApError::Apply(ApplyError::TooManyRequestIds) => failure(
                StatusCode::UNPROCESSABLE_ENTITY,
                &err,
                "TooManyRequestIds",
                None,
                Vec::new(),
            ),
            ApError::BadRequest(_) => failure(
                StatusCode::BAD_REQUEST,
                &err,
                "BadRequest",
                None,
                Vec::new(),
            ),
            ApError::Internal(_) => failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                &err,
                "Internal",
                None,
                Vec::new(),
            ),
        }
    }
}

type KeyPath = Result<Path<(String, String)>, PathRejection>;

fn key_path(path: KeyPath) -> Result<(String, String), Failure> {
    path.map(|Path(parts)| parts).map_err(|err| {
        bad_request(format!(
            "{}; keys are UTF-8, percent-encoded",
            err.body_text()
        ))
    })
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Failure> {
    query
        .map(|Query(q)| q)
        .map_err(|err| bad_request(err.body_text()))
}

fn level(name: &str, text: Option<&str>) -> Result<Level, Failure> {
    match text.map(str::trim) {
        None | Some("") => Ok(Level::Quorum),
        Some(text) => text
            .parse()
            .map_err(|err| bad_request(format!("{name}: {err}"))),
    }
}

fn flag(name: &str, text: Option<&str>) -> Result<bool, Failure> {
    match text.map(|t| t.trim().to_ascii_lowercase()).as_deref() {
        None | Some("false" | "0" | "no") => Ok(false),
        Some("" | "true" | "1" | "yes") => Ok(true),
        Some(other) => Err(bad_request(format!("{name}={other:?}: use true or false"))),
    }
}

fn write_options(w: Option<&str>, strict: Option<&str>) -> Result<WriteOptions, Failure> {
    Ok(WriteOptions {
        w: level("w", w)?,
        strict: flag("strict", strict)?,
    })
}

/// The bytes `text` spells in `encoding`; `what` names it in the error.
fn decode(encoding: Encoding, what: &str, text: &str) -> Result<Vec<u8>, Failure> {
    encoding
        .decode(text)
        .map_err(|err| bad_request(format!("{what} {text:?} is not base64: {err}")))
}

fn body<T: DeserializeOwned>(bytes: &Bytes, expected: &str) -> Result<T, Failure> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(text)
        .map_err(|err| bad_request(format!("bad JSON body: {err}; expected {expected}")))
}

/// `value` as an answer spells it, and how its byte strings are encoded: base64 when any is
/// not UTF-8. An absent value reads as the empty value of `absent_as` (`None`: absent).
fn data(value: &Value, absent_as: Option<&str>) -> (Encoding, Data) {
    let strings: Vec<&[u8]> = match value {
        Value::Values(items) | Value::Set(items) => items.iter().map(Vec::as_slice).collect(),
        Value::Map(fields) => fields
            .iter()
            .flat_map(|(name, field)| match field {
                FieldValue::Text(text) => vec![name.as_slice(), text.as_slice()],
                FieldValue::Int(_) => vec![name.as_slice()],
            })
            .collect(),
        Value::Absent | Value::Counter(_) => Vec::new(),
    };
    let encoding = if strings.iter().any(|s| std::str::from_utf8(s).is_err()) {
        Encoding::Base64
    } else {
        Encoding::Utf8
    };
    let list = |items: &[Vec<u8>]| items.iter().map(|i| encoding.encode(i)).collect();
    let data = match value {
        Value::Values(values) => Data::Values(list(values)),
        Value::Counter(n) => Data::Counter(*n),
        Value::Set(members) => Data::Set(list(members)),
        Value::Map(fields) => Data::Map(
            fields
                .iter()
                .map(|(name, field)| {
                    let value = match field {
                        FieldValue::Text(t) => Field::Text(encoding.encode(t)),
                        FieldValue::Int(n) => Field::Int(*n),
                    };
                    (encoding.encode(name), value)
                })
                .collect(),
        ),
        Value::Absent => match absent_as {
            Some("counter") => Data::Counter(0),
            Some("set") => Data::Set(Vec::new()),
            Some("map") => Data::Map(Default::default()),
            _ => Data::Absent,
        },
    };
    (encoding, data)
}

async fn buckets<B: ApBackend>(State(backend): State<B>) -> Response {
    axum::Json(BucketsReply {
        buckets: backend.buckets(),
        node: backend.node_id(),
    })
    .into_response()
}

async fn read<B: ApBackend>(
    State(backend): State<B>,
    path: KeyPath,
    params: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let (bucket, key) = key_path(path)?;
    let params = query(params)?;
    let options = ReadOptions {
        r: level("r", params.r.as_deref())?,
        strict: flag("strict", params.strict.as_deref())?,
    };
    let reply = backend
        .get(bucket.clone(), key.clone().into_bytes(), options)
        .await?;
    let found = !matches!(reply.value, Value::Absent);
    let (encoding, data) = data(&reply.value, None);
    let answer = ReadReply {
        bucket,
        context: encode_context(&reply.context),
        encoding,
        found,
        key,
        replicas: reply.replicas,
        rule: reply.rule,
        stamp: reply.stamp,
        data,
    };
    let status = if found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    Ok((status, axum::Json(answer)).into_response())
}

/// A write's answer: who acknowledged, the new context and the value after the write.
fn written(
    bucket: String,
    key: String,
    reply: isle_ap::WriteReply,
    absent_as: Option<&str>,
) -> Response {
    let (encoding, data) = data(&reply.value, absent_as);
    axum::Json(WriteReply {
        applied: reply.applied,
        bucket,
        context: encode_context(&reply.context),
        encoding,
        key,
        replicas: reply.replicas,
        rule: reply.rule,
        stamp: reply.stamp,
        data,
    })
    .into_response()
}

async fn apply<B: ApBackend>(
    backend: &B,
    path: KeyPath,
    params: Result<Query<WriteQuery>, QueryRejection>,
    op: impl FnOnce() -> Result<Op, Failure>,
    absent_as: Option<&str>,
) -> Result<Response, Failure> {
    let (bucket, key) = key_path(path)?;
    let params = query(params)?;
    let options = write_options(params.w.as_deref(), params.strict.as_deref())?;
    let op = op()?;
    let reply = backend
        .apply(bucket.clone(), key.clone().into_bytes(), op, options)
        .await?;
    Ok(written(bucket, key, reply, absent_as))
}

async fn put<B: ApBackend>(
    State(backend): State<B>,
    path: KeyPath,
    params: Result<Query<WriteQuery>, QueryRejection>,
    bytes: Bytes,
) -> Result<Response, Failure> {
    let op = || {
        let body: PutBody = body(
            &bytes,
            r#"{"value": "...", "context": "<from a read>"?, "encoding": "base64"?}"#,
        )?;
        let context = match body.context.as_deref().map(decode_context).transpose() {
            Ok(Some(Some(context))) => WriteContext::Observed(context),
            Ok(_) => WriteContext::Blind,
            Err(err) => return Err(bad_request(err)),
        };
        Ok(Op::Put {
            value: decode(body.encoding, "value", &body.value)?,
            context,
        })
    };
    apply(&backend, path, params, op, None).await
}

async fn delete<B: ApBackend>(
    State(backend): State<B>,
    path: KeyPath,
    params: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let (bucket, key) = key_path(path)?;
    let params = query(params)?;
    let options = write_options(params.w.as_deref(), params.strict.as_deref())?;
    let context = match params.context.as_deref().map(decode_context).transpose() {
        Ok(Some(Some(context))) => WriteContext::Observed(context),
        Ok(_) => WriteContext::Local,
        Err(err) => return Err(bad_request(err)),
    };
    let reply = backend
        .apply(
            bucket.clone(),
            key.clone().into_bytes(),
            Op::Delete { context },
            options,
        )
        .await?;
    Ok(written(bucket, key, reply, None))
}

async fn incr<B: ApBackend>(
    State(backend): State<B>,
    path: KeyPath,
    params: Result<Query<WriteQuery>, QueryRejection>,
    bytes: Bytes,
) -> Result<Response, Failure> {
    let op = || {
        let body: IncrBody = body(&bytes, r#"{"by": 1, "request_id": "..."?}"#)?;
        Ok(Op::Incr {
            by: body.by,
            request_id: body.request_id,
        })
    };
    apply(&backend, path, params, op, Some("counter")).await
}

fn members_op(bytes: &Bytes, add: bool) -> Result<Op, Failure> {
    let body: MembersBody = body(bytes, r#"{"members": ["..."], "encoding": "base64"?}"#)?;
    let members = body
        .members
        .iter()
        .map(|m| decode(body.encoding, "member", m))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if add {
        Op::SetAdd { members }
    } else {
        Op::SetRemove { members }
    })
}

async fn sadd<B: ApBackend>(
    State(backend): State<B>,
    path: KeyPath,
    params: Result<Query<WriteQuery>, QueryRejection>,
    bytes: Bytes,
) -> Result<Response, Failure> {
    apply(
        &backend,
        path,
        params,
        || members_op(&bytes, true),
        Some("set"),
    )
    .await
}

async fn srem<B: ApBackend>(
    State(backend): State<B>,
    path: KeyPath,
    params: Result<Query<WriteQuery>, QueryRejection>,
    bytes: Bytes,
) -> Result<Response, Failure> {
    apply(
        &backend,
        path,
        params,
        || members_op(&bytes, false),
        Some("set"),
    )
    .await
}

async fn map_update<B: ApBackend>(
    State(backend): State<B>,
    path: KeyPath,
    params: Result<Query<WriteQuery>, QueryRejection>,
    bytes: Bytes,
) -> Result<Response, Failure> {
    let op = || {
        let body: MapBody = body(
            &bytes,
            r#"{"set": {"field": "text"}, "incr": {"field": 1}, "remove": ["field"], "request_id": "..."?}"#,
        )?;
        let encoding = body.encoding;
        let field = |name: &str| decode(encoding, "field", name);
        let set = body
            .set
            .iter()
            .map(|(name, text)| Ok((field(name)?, decode(encoding, "text", text)?)))
            .collect::<Result<Vec<_>, Failure>>()?;
        let incr = body
            .incr
            .iter()
            .map(|(name, by)| Ok((field(name)?, *by)))
            .collect::<Result<Vec<_>, Failure>>()?;
        let remove = body
            .remove
            .iter()
            .map(|name| field(name))
            .collect::<Result<Vec<_>, Failure>>()?;
        if set.is_empty() && incr.is_empty() && remove.is_empty() {
            return Err(bad_request(
                "map-update with nothing to do: give \"set\", \"incr\" or \"remove\"",
            ));
        }
        Ok(Op::MapUpdate {
            set,
            incr,
            remove,
            request_id: body.request_id,
        })
    };
    apply(&backend, path, params, op, Some("map")).await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, Request};
    use tower::ServiceExt;

    use super::*;
    use crate::ap_backend::memory::MemoryBackend;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::json;

    async fn call(
        app: &Router,
        method: Method,
        uri: &str,
        body: Option<Json>,
    ) -> (StatusCode, Json) {
        let body = match body {
            Some(json) => Body::from(json.to_string()),
            None => Body::empty(),
        };
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body)
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
        (status, json)
    }

    fn app() -> Router {
        routes(MemoryBackend::new())
    }

    #[tokio::test]
    async fn put_then_get_round_trips_and_an_absent_key_is_404_with_the_same_shape() {
        let app = app();
        let (status, absent) = call(&app, Method::GET, "/v1/ap/default/k", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(absent["found"], false);
        assert_eq!(absent["values"], json!([]));
        assert_eq!(absent["type"], Json::Null);
        assert_eq!(absent["replicas"]["level"], "quorum");
        let (status, put) = call(
            &app,
            Method::PUT,
            "/v1/ap/default/k?w=one",
            Some(json!({"value": "v1"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{put}");
        assert_eq!(put["replicas"]["level"], "one");
        assert_eq!(put["rule"], "siblings");
        assert!(put["context"].as_str().is_some_and(|c| !c.is_empty()));
        let (status, got) = call(&app, Method::GET, "/v1/ap/default/k?r=all", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got["found"], true);
        assert_eq!(got["type"], "value");
        assert_eq!(got["values"], json!(["v1"]));
        assert_eq!(got["stamp"], Json::Null);
        assert_eq!(got["context"], put["context"]);
        assert_eq!(
            got["replicas"],
            json!({"answered": 1, "asked": 1, "needed": 1, "level": "all", "fallbacks": 0})
        );
    }

    #[tokio::test]
    async fn a_blind_write_becomes_a_sibling_and_a_write_with_the_read_context_resolves() {
        let app = app();
        let uri = "/v1/ap/default/cart";
        call(&app, Method::PUT, uri, Some(json!({"value": "a"}))).await;
        call(&app, Method::PUT, uri, Some(json!({"value": "b"}))).await;
        let (_, got) = call(&app, Method::GET, uri, None).await;
        assert_eq!(
            got["values"],
            json!(["a", "b"]),
            "blind writes are siblings"
        );
        let context = got["context"].clone();
        let (status, put) = call(
            &app,
            Method::PUT,
            uri,
            Some(json!({"value": "ab", "context": context})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(put["values"], json!(["ab"]));
        let (_, got) = call(&app, Method::GET, uri, None).await;
        assert_eq!(got["values"], json!(["ab"]));
    }

    #[tokio::test]
    async fn delete_with_and_without_a_context() {
        let app = app();
        let uri = "/v1/ap/default/gone";
        let (_, put) = call(&app, Method::PUT, uri, Some(json!({"value": "x"}))).await;
        let context = put["context"].as_str().expect("context").to_string();
        let (status, deleted) = call(
            &app,
            Method::DELETE,
            &format!("{uri}?w=quorum&context={context}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{deleted}");
        let (status, _) = call(&app, Method::GET, uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        call(&app, Method::PUT, uri, Some(json!({"value": "y"}))).await;
        let (status, _) = call(&app, Method::DELETE, &format!("{uri}?w="), None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, got) = call(&app, Method::GET, uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(got["context"].as_str().is_some_and(|c| !c.is_empty()));
    }

    #[tokio::test]
    async fn lww_buckets_carry_a_stamp() {
        let app = app();
        call(
            &app,
            Method::PUT,
            "/v1/ap/lww/k",
            Some(json!({"value": "a"})),
        )
        .await;
        call(
            &app,
            Method::PUT,
            "/v1/ap/lww/k",
            Some(json!({"value": "b"})),
        )
        .await;
        let (_, got) = call(&app, Method::GET, "/v1/ap/lww/k", None).await;
        assert_eq!(got["rule"], "lww");
        assert_eq!(got["values"], json!(["b"]));
        assert!(got["stamp"]["physical_ms"].is_u64(), "{got}");
    }

    #[tokio::test]
    async fn counters_sets_and_maps() {
        let app = app();
        let uri = "/v1/ap/default/hits/incr";
        let (status, first) = call(&app, Method::POST, uri, None).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert_eq!(first["value"], 1);
        let body = json!({"by": 5, "request_id": "r1"});
        let (_, second) = call(&app, Method::POST, uri, Some(body.clone())).await;
        assert_eq!(
            (second["value"].clone(), second["applied"].clone()),
            (json!(6), json!(true))
        );
        let (_, retry) = call(&app, Method::POST, uri, Some(body)).await;
        assert_eq!(
            (retry["value"].clone(), retry["applied"].clone()),
            (json!(6), json!(false))
        );
        let (_, got) = call(&app, Method::GET, "/v1/ap/default/hits", None).await;
        assert_eq!(
            (got["type"].clone(), got["value"].clone()),
            (json!("counter"), json!(6))
        );

        let set = "/v1/ap/default/tags";
        let (_, added) = call(
            &app,
            Method::POST,
            &format!("{set}/sadd"),
            Some(json!({"members": ["b", "a"]})),
        )
        .await;
        assert_eq!(added["members"], json!(["a", "b"]));
        let (_, removed) = call(
            &app,
            Method::POST,
            &format!("{set}/srem"),
            Some(json!({"members": ["a", "b"]})),
        )
        .await;
        assert_eq!(removed["members"], json!([]));

        let map = "/v1/ap/default/cart/map-update";
        let body = json!({"set": {"name": "ann"}, "incr": {"apples": 2}});
        let (status, updated) = call(&app, Method::POST, map, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{updated}");
        assert_eq!(updated["fields"], json!({"apples": 2, "name": "ann"}));
        let body = json!({"remove": ["name"], "incr": {"apples": -1}});
        let (_, updated) = call(&app, Method::POST, map, Some(body)).await;
        assert_eq!(updated["fields"], json!({"apples": 1}));
        let (_, got) = call(&app, Method::GET, "/v1/ap/default/cart", None).await;
        assert_eq!(
            (got["type"].clone(), got["fields"].clone()),
            (json!("map"), json!({"apples": 1}))
        );
    }

    #[tokio::test]
    async fn type_errors_are_409_and_422() {
        let app = app();
        call(&app, Method::POST, "/v1/ap/default/n/incr", None).await;
        let (status, err) = call(
            &app,
            Method::POST,
            "/v1/ap/default/n/sadd",
            Some(json!({"members": ["x"]})),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(err["kind"], "WrongType");
        assert_eq!(err["held"], "counter");
        assert!(
            err["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("WRONGTYPE"))
        );
        let map = "/v1/ap/default/m/map-update";
        call(&app, Method::POST, map, Some(json!({"set": {"f": "text"}}))).await;
        let (status, err) = call(&app, Method::POST, map, Some(json!({"incr": {"f": 1}}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err["kind"], "NotAnInteger");
    }

    #[tokio::test]
    async fn malformed_requests_are_400_with_a_clear_message() {
        let app = app();
        let cases: [(Method, &str, Option<Json>, &str); 6] = [
            (
                Method::GET,
                "/v1/ap/default/k?r=most",
                None,
                "unknown consistency level",
            ),
            (Method::GET, "/v1/ap/default/k?w=one", None, "unknown field"),
            (
                Method::GET,
                "/v1/ap/default/k?strict=maybe",
                None,
                "use true or false",
            ),
            (
                Method::PUT,
                "/v1/ap/default/k",
                Some(json!({"valu": "x"})),
                "unknown field",
            ),
            (
                Method::PUT,
                "/v1/ap/default/k",
                Some(json!({"value": "x", "context": "!!"})),
                "not one this API issued",
            ),
            (
                Method::POST,
                "/v1/ap/default/k/map-update",
                Some(json!({})),
                "nothing to do",
            ),
        ];
        for (method, uri, body, expect) in cases {
            let (status, err) = call(&app, method, uri, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {err}");
            assert_eq!(err["kind"], "BadRequest", "{uri}");
            let message = err["error"].as_str().unwrap_or_default();
            assert!(message.contains(expect), "{uri}: {message}");
        }
        let request = Request::builder()
            .method(Method::PUT)
            .uri("/v1/ap/default/k")
            .body(Body::from("{not json"))
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn non_utf8_values_travel_as_base64() {
        let app = app();
        let raw = STANDARD.encode([0xff, 0x00, b'a']);
        let (status, put) = call(
            &app,
            Method::PUT,
            "/v1/ap/default/bin",
            Some(json!({"value": raw, "encoding": "base64"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{put}");
        assert_eq!(put["encoding"], "base64");
        let (_, got) = call(&app, Method::GET, "/v1/ap/default/bin", None).await;
        assert_eq!(got["encoding"], "base64");
        assert_eq!(got["values"], json!([raw]));
        let (_, text) = call(&app, Method::GET, "/v1/ap/default/missing", None).await;
        assert!(text.get("encoding").is_none());
    }

    #[tokio::test]
    async fn buckets_are_listed() {
        let (status, list) = call(&app(), Method::GET, "/v1/ap", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["node"], 1);
        assert_eq!(
            list["buckets"][1],
            json!({"name": "lww", "rule": "lww", "n": 3})
        );
    }

    #[test]
    fn refusals_map_to_statuses_and_keep_their_fields() {
        let unavailable = Failure::from(ApError::Unavailable {
            answered: 1,
            asked: 3,
            needed: 2,
            level: "quorum".into(),
            detail: String::new(),
        });
        assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.body.kind.as_deref(), Some("Unavailable"));
        assert_eq!(unavailable.body.detail["needed"], 2);
        assert!(unavailable.body.error.contains("1 of 3"));
        let level = Failure::from(ApError::Level(LevelError::MoreThanN {
            level: "5".into(),
            needed: 5,
            n: 3,
        }));
        assert_eq!(level.status, StatusCode::BAD_REQUEST);
        assert_eq!(level.body.reason.as_deref(), Some("MoreThanN"));
        let internal = Failure::from(ApError::Internal("disk".into()));
        assert_eq!(internal.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn contexts_round_trip_and_empty_means_none() {
        let context = Context::new();
        let text = encode_context(&context);
        assert_eq!(decode_context(&text), Ok(Some(context)));
        assert_eq!(decode_context(""), Ok(None));
        assert!(decode_context("AAAA").is_err(), "trailing bytes");
    }
}
