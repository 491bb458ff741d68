//! Mapping between the etcd protobuf messages and the CP state machine's types, the Range
//! post-processing (sort, revision filters, limit) and the error → gRPC status table.

use isle_cp::CpError;
use isle_cp::command::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventKind, KeyValue, Op, OpResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    TxnRequest, TxnResponse,
};
use isle_node::cp::CpRequestError;
use tonic::{Code, Status};

use super::pb::etcdserverpb as rpc;
use super::pb::mvccpb;

/// The gRPC status an etcd client expects for a failure: etcd's code and its exact message
/// (etcd's Go client maps messages to typed errors by exact match, and decides retries on
/// them), so a client tells a refusal from an unknown outcome as it does with etcd. Isle's own
/// sentence, saying what happened and what to do, travels beside it in the `isle-detail-bin`
/// metadata, with `isle-outcome` (refused, unknown or invalid).
pub fn status(err: &CpRequestError) -> Status {
    let (code, message) = match err {
        CpRequestError::NoQuorum { .. }
        | CpRequestError::NoLeader { .. }
        | CpRequestError::NotInitialized
        | CpRequestError::SelfFenced { .. } => (Code::Unavailable, ETCD_NO_LEADER.to_string()),
        CpRequestError::UnknownMember { .. } => {
            (Code::NotFound, "etcdserver: member not found".to_string())
        }
        CpRequestError::Timeout { .. } => (Code::Unavailable, ETCD_TIMEOUT.to_string()),
        // Proposed, then the leader was lost (or lost its quorum) before answering.
        CpRequestError::Indeterminate { .. } => {
            (Code::Unavailable, ETCD_TIMEOUT_LEADER_FAIL.to_string())
        }
        CpRequestError::LockTimeout { .. } => (
            Code::DeadlineExceeded,
            "context deadline exceeded".to_string(),
        ),
        CpRequestError::Internal(_) => (Code::Internal, err.to_string()),
        CpRequestError::Rejected(rejected) => rejected_status(rejected),
    };
    let mut status = Status::new(code, message);
    let metadata = status.metadata_mut();
    metadata.insert(
        "isle-outcome",
        tonic::metadata::MetadataValue::from_static(err.kind().name()),
    );
    metadata.insert_bin(
        "isle-detail-bin",
        tonic::metadata::MetadataValue::from_bytes(err.to_string().as_bytes()),
    );
    status
}

/// etcd's `ErrGRPCNoLeader`.
pub(crate) const ETCD_NO_LEADER: &str = "etcdserver: no leader";
/// etcd's answer to a stream that requires a leader (`hasleader` metadata) when this node's side
/// has none: `Unavailable`, a definite refusal.
pub(crate) fn no_leader() -> Status {
    let mut status = Status::unavailable(ETCD_NO_LEADER);
    status.metadata_mut().insert(
        "isle-outcome",
        tonic::metadata::MetadataValue::from_static(isle_types::ErrorKind::Refused.name()),
    );
    status
}

/// etcd's `ErrGRPCTimeout`.
const ETCD_TIMEOUT: &str = "etcdserver: request timed out";
/// etcd's `ErrGRPCTimeoutDueToLeaderFail`.
const ETCD_TIMEOUT_LEADER_FAIL: &str =
    "etcdserver: request timed out, possibly due to previous leader failure";

fn rejected_status(err: &CpError) -> (Code, String) {
    match err {
        CpError::Compacted { .. } => (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted".to_string(),
        ),
        CpError::FutureRevision { .. } => (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision".to_string(),
        ),
        CpError::LeaseNotFound { .. } => (
            Code::NotFound,
            "etcdserver: requested lease not found".to_string(),
        ),
        CpError::LeaseExists { .. } => (
            Code::FailedPrecondition,
            "etcdserver: lease already exists".to_string(),
        ),
        CpError::KeyNotFound => (
            Code::InvalidArgument,
            "etcdserver: key not found".to_string(),
        ),
        CpError::EmptyKey => (
            Code::InvalidArgument,
            "etcdserver: key is not provided".to_string(),
        ),
        CpError::TooManyOps { .. } => (
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request".to_string(),
        ),
        CpError::KeyTooLarge { .. } | CpError::ValueTooLarge { .. } => (
            Code::InvalidArgument,
            "etcdserver: request is too large".to_string(),
        ),
        CpError::FencingTokenStale { .. } | CpError::FencingTokenUnknown { .. } => {
            (Code::FailedPrecondition, err.to_string())
        }
        CpError::RequestIdConflict => (Code::FailedPrecondition, err.to_string()),
        CpError::InvalidTtl { .. }
        | CpError::TxnTooDeep { .. }
        | CpError::InvalidRequest { .. } => (Code::InvalidArgument, err.to_string()),
        CpError::CorruptSnapshot { .. } | CpError::StaleIndex { .. } => {
            (Code::Internal, err.to_string())
        }
    }
}

/// The state machine's key-value as etcd's.
pub(crate) fn kv_to_pb(kv: &KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value.clone(),
        lease: kv.lease,
    }
}

/// A watch event as etcd's (`prev_kv` only when the watcher asked for it).
pub(crate) fn event_to_pb(event: &Event, with_prev: bool) -> mvccpb::Event {
    let kind = match event.kind {
        EventKind::Put => mvccpb::event::EventType::Put,
        EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(kv_to_pb(&event.kv)),
        prev_kv: if with_prev {
            event.prev_kv.as_ref().map(kv_to_pb)
        } else {
            None
        },
    }
}

/// Whether a Range needs work after the state machine's answer (sorting or revision
/// filters); then the state machine is asked for the whole range and the limit is applied here.
fn needs_post(request: &rpc::RangeRequest) -> bool {
    !request.count_only
        && (request.sort_order != rpc::range_request::SortOrder::None as i32
            || request.sort_target != rpc::range_request::SortTarget::Key as i32
            || request.min_mod_revision != 0
            || request.max_mod_revision != 0
            || request.min_create_revision != 0
            || request.max_create_revision != 0)
}

/// The state machine's Range for an etcd Range.
pub(crate) fn range_from_pb(request: &rpc::RangeRequest) -> RangeRequest {
    RangeRequest {
        key: request.key.clone(),
        range_end: request.range_end.clone(),
        revision: request.revision,
        limit: if needs_post(request) {
            0
        } else {
            request.limit
        },
        keys_only: request.keys_only,
        count_only: request.count_only,
        serializable: request.serializable,
    }
}

/// The etcd Range answer: the state machine's result, filtered, sorted and limited as etcd's
/// `applierV3.Range` does. `count` stays the number of keys in the range (etcd: unaffected by
/// limit and filters).
pub(crate) fn range_to_pb(
    request: &rpc::RangeRequest,
    response: &RangeResponse,
    header: Option<rpc::ResponseHeader>,
) -> rpc::RangeResponse {
    let mut kvs: Vec<&KeyValue> = response.kvs.iter().collect();
    let mut more = response.more;
    if needs_post(request) {
        let (min_mod, max_mod) = (request.min_mod_revision, request.max_mod_revision);
        let (min_create, max_create) = (request.min_create_revision, request.max_create_revision);
        kvs.retain(|kv| {
            (min_mod == 0 || kv.mod_revision >= min_mod)
                && (max_mod == 0 || kv.mod_revision <= max_mod)
                && (min_create == 0 || kv.create_revision >= min_create)
                && (max_create == 0 || kv.create_revision <= max_create)
        });
        use rpc::range_request::{SortOrder, SortTarget};
        let target = SortTarget::try_from(request.sort_target).unwrap_or(SortTarget::Key);
        let mut order = SortOrder::try_from(request.sort_order).unwrap_or(SortOrder::None);
        if target != SortTarget::Key && order == SortOrder::None {
            order = SortOrder::Ascend;
        }
        if order != SortOrder::None {
            kvs.sort_by(|a, b| {
                let ordering = match target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    SortTarget::Value => a.value.cmp(&b.value),
                };
                if order == SortOrder::Descend {
                    ordering.reverse()
                } else {
                    ordering
                }
            });
        }
        more = false;
        if let Ok(limit) = usize::try_from(request.limit)
            && limit > 0
            && kvs.len() > limit
        {
            kvs.truncate(limit);
            more = true;
        }
    }
    rpc::RangeResponse {
        header,
        kvs: kvs.into_iter().map(kv_to_pb).collect(),
        more,
        count: response.count,
    }
}

/// The state machine's Put for an etcd Put.
pub(crate) fn put_from_pb(request: &rpc::PutRequest) -> PutRequest {
    PutRequest {
        key: request.key.clone(),
        value: request.value.clone(),
        lease: request.lease,
        prev_kv: request.prev_kv,
        ignore_value: request.ignore_value,
        ignore_lease: request.ignore_lease,
        fence: None,
    }
}

pub(crate) fn put_to_pb(
    response: &PutResponse,
    header: Option<rpc::ResponseHeader>,
) -> rpc::PutResponse {
    rpc::PutResponse {
        header,
        prev_kv: response.prev_kv.as_ref().map(kv_to_pb),
    }
}

/// The state machine's DeleteRange for an etcd DeleteRange.
pub(crate) fn delete_from_pb(request: &rpc::DeleteRangeRequest) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: request.key.clone(),
        range_end: request.range_end.clone(),
        prev_kv: request.prev_kv,
        fence: None,
    }
}

pub(crate) fn delete_to_pb(
    response: &DeleteRangeResponse,
    header: Option<rpc::ResponseHeader>,
) -> rpc::DeleteRangeResponse {
    rpc::DeleteRangeResponse {
        header,
        deleted: response.deleted,
        prev_kvs: response.prev_kvs.iter().map(kv_to_pb).collect(),
    }
}

/// One etcd Compare as the state machine's; the operand comes from `target_union` when it
/// matches `target` (proto3 leaves a zero operand out of the wire, so absent means zero).
pub(crate) fn compare_from_pb(compare: &rpc::Compare) -> Result<Compare, Status> {
    use rpc::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let union = compare.target_union.as_ref();
    let target = match T::try_from(compare.target) {
        Ok(T::Version) => CompareTarget::Version(match union {
            Some(U::Version(v)) => *v,
            _ => 0,
        }),
        Ok(T::Create) => CompareTarget::Create(match union {
            Some(U::CreateRevision(v)) => *v,
            _ => 0,
        }),
        Ok(T::Mod) => CompareTarget::Mod(match union {
            Some(U::ModRevision(v)) => *v,
            _ => 0,
        }),
        Ok(T::Value) => CompareTarget::Value(match union {
            Some(U::Value(v)) => v.clone(),
            _ => Vec::new(),
        }),
        Ok(T::Lease) => CompareTarget::Lease(match union {
            Some(U::Lease(v)) => *v,
            _ => 0,
        }),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown compare target {}",
                compare.target
            )));
        }
    };
    let result = match R::try_from(compare.result) {
        Ok(R::Equal) => CompareResult::Equal,
        Ok(R::Greater) => CompareResult::Greater,
        Ok(R::Less) => CompareResult::Less,
        Ok(R::NotEqual) => CompareResult::NotEqual,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown compare result {}",
                compare.result
            )));
        }
    };
    Ok(Compare {
        key: compare.key.clone(),
        range_end: compare.range_end.clone(),
        target,
        result,
    })
}

fn op_from_pb(op: &rpc::RequestOp) -> Result<Op, Status> {
    use rpc::request_op::Request as R;
    match &op.request {
        Some(R::RequestRange(range)) => Ok(Op::Range(range_from_pb(range))),
        Some(R::RequestPut(put)) => Ok(Op::Put(put_from_pb(put))),
        Some(R::RequestDeleteRange(delete)) => Ok(Op::DeleteRange(delete_from_pb(delete))),
        Some(R::RequestTxn(txn)) => Ok(Op::Txn(txn_from_pb(txn)?)),
        None => Err(Status::invalid_argument(
            "etcdserver: a transaction operation holds no request",
        )),
    }
}

/// The state machine's Txn for an etcd Txn (nested transactions included).
pub(crate) fn txn_from_pb(txn: &rpc::TxnRequest) -> Result<TxnRequest, Status> {
    Ok(TxnRequest {
        compare: txn
            .compare
            .iter()
            .map(compare_from_pb)
            .collect::<Result<_, _>>()?,
        success: txn
            .success
            .iter()
            .map(op_from_pb)
            .collect::<Result<_, _>>()?,
        failure: txn
            .failure
            .iter()
            .map(op_from_pb)
            .collect::<Result<_, _>>()?,
        fence: None,
    })
}

/// The etcd Txn answer; `request` is the etcd request, needed to post-process its Ranges.
pub(crate) fn txn_to_pb(
    request: &rpc::TxnRequest,
    response: &TxnResponse,
    header: &rpc::ResponseHeader,
) -> rpc::TxnResponse {
    use rpc::request_op::Request as Q;
    use rpc::response_op::Response as R;
    let branch = if response.succeeded {
        &request.success
    } else {
        &request.failure
    };
    let responses = response
        .responses
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let asked = branch.get(i).and_then(|op| op.request.as_ref());
            let h = Some(*header);
            let response = match op {
                OpResponse::Range(range) => {
                    let default = rpc::RangeRequest::default();
                    let request = match asked {
                        Some(Q::RequestRange(r)) => r,
                        _ => &default,
                    };
                    R::ResponseRange(range_to_pb(request, range, h))
                }
                OpResponse::Put(put) => R::ResponsePut(put_to_pb(put, h)),
                OpResponse::DeleteRange(delete) => R::ResponseDeleteRange(delete_to_pb(delete, h)),
                OpResponse::Txn(txn) => {
                    let default = rpc::TxnRequest::default();
                    let request = match asked {
                        Some(Q::RequestTxn(t)) => t,
                        _ => &default,
                    };
                    R::ResponseTxn(txn_to_pb(request, txn, header))
                }
            };
            rpc::ResponseOp {
                response: Some(response),
            }
        })
        .collect();
    rpc::TxnResponse {
        header: Some(*header),
        succeeded: response.succeeded,
        responses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Code, message and `isle-outcome` an etcd client sees for `err`.
    fn seen(err: CpRequestError) -> (Code, String, String) {
        let status = status(&err);
        let outcome = status
            .metadata()
            .get("isle-outcome")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let detail = status
            .metadata()
            .get_bin("isle-detail-bin")
            .and_then(|v| v.to_bytes().ok())
            .expect("isle-detail-bin");
        assert_eq!(detail.as_ref(), err.to_string().as_bytes());
        (status.code(), status.message().to_string(), outcome)
    }

    #[test]
    fn failures_carry_etcds_exact_codes_and_messages_and_isles_outcome() {
        let refused = |message: &str| (Code::Unavailable, message.to_string(), "refused".into());
        let no_quorum = CpRequestError::NoQuorum {
            reachable: 1,
            needed: 2,
            total: 3,
            unit: "nodes".into(),
            leader: Some(1),
        };
        assert_eq!(seen(no_quorum), refused("etcdserver: no leader"));
        let no_leader = CpRequestError::NoLeader { detail: "x".into() };
        assert_eq!(seen(no_leader), refused("etcdserver: no leader"));
        assert_eq!(
            seen(CpRequestError::Timeout { after_ms: 5000 }),
            (
                Code::Unavailable,
                "etcdserver: request timed out".into(),
                "unknown".into()
            )
        );
        let lost = CpRequestError::Indeterminate {
            detail: "leader node 1 became unreachable".into(),
        };
        assert_eq!(
            seen(lost),
            (
                Code::Unavailable,
                "etcdserver: request timed out, possibly due to previous leader failure".into(),
                "unknown".into()
            )
        );
        let too_large = CpRequestError::Rejected(CpError::ValueTooLarge { size: 9, max: 1 });
        assert_eq!(
            seen(too_large),
            (
                Code::InvalidArgument,
                "etcdserver: request is too large".into(),
                "invalid".into()
            )
        );
        let stale = CpRequestError::Rejected(CpError::FencingTokenStale {
            presented: 1,
            current: 2,
        });
        assert_eq!(seen(stale).2, "refused");
    }
    use rpc::range_request::{SortOrder, SortTarget};

    fn kv(key: &str, create: i64, modified: i64) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            create_revision: create,
            mod_revision: modified,
            version: 1,
            value: b"v".to_vec(),
            lease: 0,
        }
    }

    #[test]
    fn first_and_last_create_with_max_create_revision_as_etcds_lock_recipe() {
        let response = RangeResponse {
            header_revision: 9,
            kvs: vec![kv("l/a", 7, 7), kv("l/b", 3, 8), kv("l/c", 5, 5)],
            count: 3,
            more: false,
        };
        // WithFirstCreate: sort by create revision ascending, limit 1.
        let first = rpc::RangeRequest {
            key: b"l/".to_vec(),
            range_end: b"l0".to_vec(),
            limit: 1,
            sort_order: SortOrder::Ascend as i32,
            sort_target: SortTarget::Create as i32,
            ..Default::default()
        };
        assert_eq!(range_from_pb(&first).limit, 0, "the whole range is fetched");
        let answer = range_to_pb(&first, &response, None);
        assert_eq!(answer.kvs.len(), 1);
        assert_eq!(answer.kvs[0].key, b"l/b");
        assert!(answer.more);
        assert_eq!(answer.count, 3);
        // waitDeletes: last create below my revision (6).
        let last = rpc::RangeRequest {
            sort_order: SortOrder::Descend as i32,
            max_create_revision: 6,
            ..first
        };
        let answer = range_to_pb(&last, &response, None);
        assert_eq!(answer.kvs[0].key, b"l/c");
        // A plain range passes through untouched.
        let plain = rpc::RangeRequest {
            key: b"l/".to_vec(),
            limit: 2,
            ..Default::default()
        };
        assert_eq!(range_from_pb(&plain).limit, 2);
        assert_eq!(range_to_pb(&plain, &response, None).kvs.len(), 3);
    }

    #[test]
    fn compares_take_their_operand_from_the_matching_union_field() {
        use rpc::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
        let compare = rpc::Compare {
            result: R::Greater as i32,
            target: T::Mod as i32,
            key: b"k".to_vec(),
            target_union: Some(U::ModRevision(4)),
            range_end: Vec::new(),
        };
        let mapped = compare_from_pb(&compare).expect("valid");
        assert_eq!(mapped.target, CompareTarget::Mod(4));
        assert_eq!(mapped.result, CompareResult::Greater);
        // proto3 drops a zero operand: `create_revision("k") = 0` arrives without a union.
        let absent = rpc::Compare {
            target: T::Create as i32,
            target_union: None,
            ..compare.clone()
        };
        assert_eq!(
            compare_from_pb(&absent).expect("valid").target,
            CompareTarget::Create(0)
        );
        let bad = rpc::Compare {
            target: 42,
            ..compare
        };
        assert_eq!(
            compare_from_pb(&bad).expect_err("invalid").code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn refusals_map_to_the_statuses_etcd_clients_know() {
        let compacted = CpRequestError::Rejected(CpError::Compacted {
            requested: 1,
            compacted: 5,
        });
        let s = status(&compacted);
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let lease = status(&CpRequestError::Rejected(CpError::LeaseNotFound { id: 3 }));
        assert_eq!(lease.code(), Code::NotFound);
        assert_eq!(lease.message(), "etcdserver: requested lease not found");
    }
}
