//! The client side of an operation, run inside the node's host: it calls the node's AP
//! coordinator in-process (what the HTTP and RESP handlers call), so no client network is
//! simulated, and turns the answer into a history outcome.

use isle_ap::{ApError, Op, ReadOptions, WriteContext, WriteOptions};
use isle_node::ap::Ap;

use crate::history::{ApOp, ApValue, Outcome, Ret};
use crate::workload::Request;

/// What came of one request, as the client saw it.
#[derive(Debug, Clone)]
pub struct Done {
    /// The outcome.
    pub outcome: Outcome,
    /// The operation as it finally reads (a delete's `covers` filled in from its read).
    pub op: ApOp,
    /// The error, if any.
    pub error: Option<String>,
}

/// Whether an error leaves a mutation's effect unknown (it may have been stored on some
/// replica) or means it definitely did not happen.
fn mutation_outcome(error: &ApError) -> Outcome {
    match error {
        ApError::Unavailable { .. } | ApError::Internal(_) => Outcome::Indeterminate,
        ApError::Level(_) | ApError::Apply(_) | ApError::BadRequest(_) => Outcome::Fail,
    }
}

fn failed(op: ApOp, outcome: Outcome, error: &ApError) -> Done {
    Done {
        outcome,
        op,
        error: Some(error.to_string()),
    }
}

/// Runs `request` against `ap` and reports what the client learned.
pub async fn execute(ap: &Ap, request: Request) -> Done {
    let Request {
        bucket,
        key,
        op,
        request_id,
        level,
    } = request;
    let key_bytes = key.as_bytes();
    let write = WriteOptions {
        w: level.unwrap_or(isle_ap::Level::Quorum),
        strict: false,
    };
    let node_op = match &op {
        ApOp::Read => {
            return match ap.get(&bucket, key_bytes, ReadOptions::default()).await {
                Ok(reply) => Done {
                    outcome: Outcome::Ok(Ret::Read(ApValue::from_value(&reply.value))),
                    op,
                    error: None,
                },
                // A read changes nothing: any failure is a definite one.
                Err(error) => failed(op, Outcome::Fail, &error),
            };
        }
        ApOp::Delete { .. } => {
            let read = match ap.get(&bucket, key_bytes, ReadOptions::default()).await {
                Ok(read) => read,
                Err(error) => return failed(op, Outcome::Fail, &error),
            };
            let covers = ApValue::from_value(&read.value)
                .values()
                .into_iter()
                .collect();
            let op = ApOp::Delete {
                covers,
                covers_unknown: false,
            };
            let node_op = Op::Delete {
                context: WriteContext::Observed(read.context),
            };
            return apply(ap, &bucket, key_bytes, op, node_op, write).await;
        }
        ApOp::Write { value } => Op::Put {
            value: value.clone().into_bytes(),
            context: WriteContext::Blind,
        },
        ApOp::Incr { by } => Op::Incr {
            by: *by,
            request_id: request_id.clone(),
        },
        ApOp::SetAdd { member } => Op::SetAdd {
            members: vec![member.clone().into_bytes()],
        },
        ApOp::SetRemove { member } => Op::SetRemove {
            members: vec![member.clone().into_bytes()],
        },
        ApOp::MapIncr { field, by } => Op::MapUpdate {
            set: Vec::new(),
            incr: vec![(field.clone().into_bytes(), *by)],
            remove: Vec::new(),
            request_id: request_id.clone(),
        },
    };
    apply(ap, &bucket, key_bytes, op, node_op, write).await
}

async fn apply(
    ap: &Ap,
    bucket: &str,
    key: &[u8],
    op: ApOp,
    node_op: Op,
    options: WriteOptions,
) -> Done {
    match ap.apply(bucket, key, node_op, options).await {
        Ok(reply) => Done {
            outcome: Outcome::Ok(match reply.stamp {
                Some(stamp) if reply.rule == isle_ap::Rule::Lww => Ret::Stamp(stamp.into()),
                _ => Ret::Ack,
            }),
            op,
            error: None,
        },
        Err(error) => {
            let outcome = mutation_outcome(&error);
            failed(op, outcome, &error)
        }
    }
}
