//! The client side of an operation, run inside the node's host: it calls the node's AP
//! coordinator in-process (what the HTTP and RESP handlers call), so no client network is
//! simulated, and turns the answer into a history outcome.

use isle_ap::{ApError, ReadOptions, WriteContext, WriteOptions};
use isle_chaos::{ApValue, Op, Outcome, Ret};
use isle_node::ap::Ap;

use crate::record::{ap_value, stamp};
use crate::workload::Request;

/// What came of one request, as the client saw it.
#[derive(Debug, Clone)]
pub struct Done {
    /// The outcome.
    pub outcome: Outcome,
    /// The operation as it finally reads (a delete's `covers` filled in from its read).
    pub op: Op,
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

fn failed(op: Op, outcome: Outcome, error: &ApError) -> Done {
    Done {
        outcome,
        op,
        error: Some(error.to_string()),
    }
}

/// The operation as recorded when its client was cut off before the answer: a delete's read
/// may have answered unseen, so what it covered is unknown.
pub fn cut_off(op: Op) -> Op {
    match op {
        Op::ApDelete { covers, local, .. } => Op::ApDelete {
            covers,
            local,
            covers_unknown: true,
        },
        other => other,
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
        Op::ApRead => {
            return match ap.get(&bucket, key_bytes, ReadOptions::default()).await {
                Ok(reply) => Done {
                    outcome: Outcome::Ok(Ret::Ap(ap_value(&reply.value))),
                    op,
                    error: None,
                },
                // A read changes nothing: any failure is a definite one.
                Err(error) => failed(op, Outcome::Fail, &error),
            };
        }
        Op::ApDelete { .. } => {
            let read = match ap.get(&bucket, key_bytes, ReadOptions::default()).await {
                Ok(read) => read,
                Err(error) => return failed(op, Outcome::Fail, &error),
            };
            let covers = match ap_value(&read.value) {
                ApValue::Values(values) => values.into_iter().collect(),
                _ => Vec::new(),
            };
            let op = Op::ApDelete {
                covers,
                local: false,
                covers_unknown: false,
            };
            let node_op = isle_ap::Op::Delete {
                context: WriteContext::Observed(read.context),
            };
            return apply(ap, &bucket, key_bytes, op, node_op, write).await;
        }
        Op::ApWrite { value, .. } => isle_ap::Op::Put {
            value: value.clone().into_bytes(),
            context: WriteContext::Blind,
        },
        Op::Incr(by) => isle_ap::Op::Incr {
            by: *by,
            request_id: request_id.clone(),
        },
        Op::SetAdd(member) => isle_ap::Op::SetAdd {
            members: vec![member.clone().into_bytes()],
        },
        Op::SetRemove(member) => isle_ap::Op::SetRemove {
            members: vec![member.clone().into_bytes()],
        },
        Op::MapIncr { field, n } => isle_ap::Op::MapUpdate {
            set: Vec::new(),
            incr: vec![(field.clone().into_bytes(), *n)],
            remove: Vec::new(),
            request_id: request_id.clone(),
        },
        // The AP workload draws AP operations only; anything else is refused unsent.
        Op::Read
        | Op::Write(_)
        | Op::Cas { .. }
        | Op::Delete
        | Op::Acquire { .. }
        | Op::Release { .. }
        | Op::FencedWrite { .. } => {
            return Done {
                outcome: Outcome::Fail,
                op,
                error: Some("not an AP operation".into()),
            };
        }
    };
    apply(ap, &bucket, key_bytes, op, node_op, write).await
}

async fn apply(
    ap: &Ap,
    bucket: &str,
    key: &[u8],
    op: Op,
    node_op: isle_ap::Op,
    options: WriteOptions,
) -> Done {
    match ap.apply(bucket, key, node_op, options).await {
        Ok(reply) => Done {
            outcome: Outcome::Ok(match reply.stamp {
                Some(s) if reply.rule == isle_ap::Rule::Lww => Ret::Stamp(stamp(s)),
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
