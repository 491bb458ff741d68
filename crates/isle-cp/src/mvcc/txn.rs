//! Transactions as etcd runs them: check the shape, evaluate every compare (nested ones too)
//! against the state before the transaction, validate the ops on the chosen path, then run
//! them — infallibly — under one revision.

use std::cmp::Ordering;

use crate::command::{
    Compare, CompareResult, CompareTarget, KeyValue, Op, OpResponse, TxnRequest, TxnResponse,
};
use crate::error::CpError;
use crate::limits::{TXN_DEPTH_MAX, TXN_OPS_MAX};

use super::StateMachine;
use super::keyrange::KeyRange;
use super::store::{WriteCtx, to_kv};

/// Which branch each transaction on the chosen path takes, decided before anything runs.
#[derive(Debug)]
struct Plan {
    succeeded: bool,
    /// Plans of the nested transactions of the chosen branch, in op order.
    nested: Vec<Plan>,
}

impl StateMachine {
    pub(crate) fn apply_txn(&mut self, request: TxnRequest) -> Result<TxnResponse, CpError> {
        check_shape(&request, 1)?;
        let plan = self.plan(&request)?;
        let mut ctx = self.store.begin();
        let mut response = self.exec_txn(&mut ctx, request, plan);
        self.commit(&ctx);
        set_headers(&mut response, self.store.revision);
        Ok(response)
    }

    /// Checks the fence, evaluates the compares and validates the chosen branch, recursively.
    fn plan(&self, request: &TxnRequest) -> Result<Plan, CpError> {
        self.check_fence(request.fence.as_ref())?;
        for compare in &request.compare {
            super::validate::key(&compare.key, &compare.range_end)?;
        }
        let succeeded = request.compare.iter().all(|c| self.compare_holds(c));
        let branch = if succeeded {
            &request.success
        } else {
            &request.failure
        };
        let mut nested = Vec::new();
        for op in branch {
            match op {
                Op::Range(range) => self.validate_range(range)?,
                Op::Put(put) => self.validate_put(put)?,
                Op::DeleteRange(delete) => self.validate_delete(delete)?,
                Op::Txn(txn) => nested.push(self.plan(txn)?),
            }
        }
        Ok(Plan { succeeded, nested })
    }

    fn exec_txn(&mut self, ctx: &mut WriteCtx, request: TxnRequest, plan: Plan) -> TxnResponse {
        let branch = if plan.succeeded {
            request.success
        } else {
            request.failure
        };
        let mut nested = plan.nested.into_iter();
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            let response = match op {
                Op::Range(range) => OpResponse::Range(self.exec_range(&range)),
                Op::Put(put) => OpResponse::Put(self.exec_put(ctx, put)),
                Op::DeleteRange(delete) => OpResponse::DeleteRange(self.exec_delete(ctx, delete)),
                Op::Txn(txn) => match nested.next() {
                    Some(plan) => OpResponse::Txn(self.exec_txn(ctx, txn, plan)),
                    None => unreachable!("plan() made one nested plan per nested txn op"),
                },
            };
            responses.push(response);
        }
        TxnResponse {
            header_revision: 0,
            succeeded: plan.succeeded,
            responses,
        }
    }

    /// etcd's `applyCompare`: every key of the range must match; a missing key compares as
    /// zeros, except that a value compare on no key at all fails.
    fn compare_holds(&self, compare: &Compare) -> bool {
        let range = KeyRange::new(&compare.key, &compare.range_end);
        let mut any = false;
        for (key, revision, stored) in self.store.visible(range, i64::MAX) {
            any = true;
            if !compare_kv(compare, &to_kv(key, revision, stored)) {
                return false;
            }
        }
        match (any, &compare.target) {
            (true, _) => true,
            (false, CompareTarget::Value(_)) => false,
            (false, _) => compare_kv(compare, &KeyValue::default()),
        }
    }
}

fn compare_kv(compare: &Compare, kv: &KeyValue) -> bool {
    let ordering = match &compare.target {
        CompareTarget::Version(operand) => kv.version.cmp(operand),
        CompareTarget::Create(operand) => kv.create_revision.cmp(operand),
        CompareTarget::Mod(operand) => kv.mod_revision.cmp(operand),
        CompareTarget::Lease(operand) => kv.lease.cmp(operand),
        CompareTarget::Value(operand) => kv.value.as_slice().cmp(operand.as_slice()),
    };
    match compare.result {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
        CompareResult::NotEqual => ordering != Ordering::Equal,
    }
}

/// Bounds every list (as etcd's `--max-txn-ops`) and the nesting depth, on both branches.
fn check_shape(request: &TxnRequest, depth: usize) -> Result<(), CpError> {
    if depth > TXN_DEPTH_MAX {
        return Err(CpError::TxnTooDeep {
            depth,
            max: TXN_DEPTH_MAX,
        });
    }
    let count = request
        .compare
        .len()
        .max(request.success.len())
        .max(request.failure.len());
    if count > TXN_OPS_MAX {
        return Err(CpError::TooManyOps {
            count,
            max: TXN_OPS_MAX,
        });
    }
    for op in request.success.iter().chain(&request.failure) {
        if let Op::Txn(nested) = op {
            check_shape(nested, depth + 1)?;
        }
    }
    Ok(())
}

/// Every response of a transaction, nested ones included, carries the final revision.
fn set_headers(response: &mut TxnResponse, revision: i64) {
    response.header_revision = revision;
    for op in &mut response.responses {
        match op {
            OpResponse::Range(range) => range.header_revision = revision,
            OpResponse::Put(put) => put.header_revision = revision,
            OpResponse::DeleteRange(delete) => delete.header_revision = revision,
            OpResponse::Txn(txn) => set_headers(txn, revision),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{
        Command, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, Response,
    };

    fn txn(sm: &mut StateMachine, index: u64, request: TxnRequest) -> Result<TxnResponse, CpError> {
        match sm.apply(index, Command::new(request), 0)? {
            Response::Txn(response) => Ok(response),
            other => panic!("not a txn response: {other:?}"),
        }
    }

    fn when(compare: Compare) -> TxnRequest {
        TxnRequest {
            compare: vec![compare],
            success: vec![Op::Put(PutRequest::new(b"out", b"yes"))],
            failure: vec![Op::Put(PutRequest::new(b"out", b"no"))],
            fence: None,
        }
    }

    #[test]
    fn compares_on_missing_and_present_keys() {
        use CompareResult::*;
        use CompareTarget::*;
        let mut sm = StateMachine::default();
        sm.apply(1, Command::new(PutRequest::new(b"k", b"m")), 0)
            .expect("put"); // rev 2
        let cases: Vec<(&[u8], CompareTarget, CompareResult, bool)> = vec![
            (b"missing", Version(0), Equal, true),
            (b"missing", Create(0), Equal, true),
            (b"missing", Mod(0), Equal, true),
            (b"missing", Lease(0), Equal, true),
            (b"missing", Value(vec![]), Equal, false),
            (b"missing", Value(vec![]), NotEqual, false),
            (b"k", Version(1), Equal, true),
            (b"k", Create(2), Equal, true),
            (b"k", Mod(1), Greater, true),
            (b"k", Value(b"n".to_vec()), Less, true),
            (b"k", Value(b"m".to_vec()), NotEqual, false),
        ];
        for (key, target, result, expected) in cases {
            let compare = Compare::new(key, target.clone(), result);
            assert_eq!(
                sm.compare_holds(&compare),
                expected,
                "{key:?} {target:?} {result:?}"
            );
        }
        let response = txn(&mut sm, 2, when(Compare::new(b"k", Version(1), Equal))).expect("txn");
        assert!(response.succeeded);
        assert_eq!(
            sm.store.latest(b"out").map(|kv| kv.value),
            Some(b"yes".to_vec())
        );
    }

    #[test]
    fn range_compare_requires_every_key() {
        let mut sm = StateMachine::default();
        sm.apply(1, Command::new(PutRequest::new(b"p/a", b"1")), 0)
            .expect("put");
        sm.apply(2, Command::new(PutRequest::new(b"p/b", b"2")), 0)
            .expect("put");
        let mut compare = Compare::new(
            b"p/",
            CompareTarget::Value(b"1".to_vec()),
            CompareResult::Equal,
        );
        compare.range_end = b"p0".to_vec();
        assert!(!sm.compare_holds(&compare));
        compare.result = CompareResult::Greater;
        compare.target = CompareTarget::Value(b"0".to_vec());
        assert!(sm.compare_holds(&compare));
    }

    #[test]
    fn writes_share_one_revision_and_reads_see_earlier_writes() {
        let mut sm = StateMachine::default();
        let request = TxnRequest {
            success: vec![
                Op::Put(PutRequest::new(b"a", b"1")),
                Op::Put(PutRequest::new(b"b", b"1")),
                Op::Range(RangeRequest::prefix(b"")),
                Op::DeleteRange(DeleteRangeRequest::key(b"a")),
            ],
            ..TxnRequest::default()
        };
        let response = txn(&mut sm, 1, request).expect("txn");
        assert_eq!(sm.revision(), 2);
        assert_eq!(response.header_revision, 2);
        let OpResponse::Range(range) = &response.responses[2] else {
            panic!("range")
        };
        assert_eq!((range.count, range.header_revision), (2, 2));
        assert_eq!(sm.store.latest(b"a"), None);
        assert_eq!(sm.store.latest(b"b").map(|kv| kv.mod_revision), Some(2));
    }

    #[test]
    fn read_only_txn_keeps_the_revision() {
        let mut sm = StateMachine::default();
        let request = TxnRequest {
            success: vec![
                Op::Range(RangeRequest::key(b"a")),
                Op::DeleteRange(DeleteRangeRequest::key(b"a")),
            ],
            ..TxnRequest::default()
        };
        assert_eq!(txn(&mut sm, 1, request).expect("txn").header_revision, 1);
        assert_eq!(sm.revision(), 1);
    }

    #[test]
    fn nested_txn_compares_see_the_state_before_the_outer_txn() {
        let mut sm = StateMachine::default();
        let inner = when(Compare::new(
            b"a",
            CompareTarget::Version(0),
            CompareResult::Equal,
        ));
        let outer = TxnRequest {
            success: vec![Op::Put(PutRequest::new(b"a", b"1")), Op::Txn(inner)],
            ..TxnRequest::default()
        };
        let response = txn(&mut sm, 1, outer).expect("txn");
        let OpResponse::Txn(nested) = &response.responses[1] else {
            panic!("nested")
        };
        assert!(nested.succeeded, "etcd evaluates nested compares up front");
        assert_eq!(nested.header_revision, 2);
        assert_eq!(
            sm.store.latest(b"out").map(|kv| kv.value),
            Some(b"yes".to_vec())
        );
    }

    #[test]
    fn a_refused_op_changes_nothing() {
        let mut sm = StateMachine::default();
        sm.apply(1, Command::new(LeaseGrantRequest { id: 1, ttl_secs: 5 }), 0)
            .expect("grant");
        let request = TxnRequest {
            success: vec![
                Op::Put(PutRequest::new(b"a", b"1")),
                Op::Put(PutRequest {
                    lease: 2,
                    ..PutRequest::new(b"b", b"1")
                }),
            ],
            ..TxnRequest::default()
        };
        assert_eq!(
            txn(&mut sm, 2, request),
            Err(CpError::LeaseNotFound { id: 2 })
        );
        assert_eq!((sm.revision(), sm.store.latest(b"a")), (1, None));
    }

    #[test]
    fn shape_limits() {
        let wide = TxnRequest {
            success: vec![Op::Range(RangeRequest::key(b"a")); TXN_OPS_MAX + 1],
            ..TxnRequest::default()
        };
        assert_eq!(
            check_shape(&wide, 1),
            Err(CpError::TooManyOps {
                count: TXN_OPS_MAX + 1,
                max: TXN_OPS_MAX
            })
        );
        let mut deep = TxnRequest::default();
        for _ in 0..TXN_DEPTH_MAX {
            deep = TxnRequest {
                failure: vec![Op::Txn(deep)],
                ..TxnRequest::default()
            };
        }
        assert_eq!(
            check_shape(&deep, 1),
            Err(CpError::TxnTooDeep {
                depth: TXN_DEPTH_MAX + 1,
                max: TXN_DEPTH_MAX
            })
        );
    }
}
