//! Locks with fencing tokens: etcd's lock recipe, plus a replicated "highest token granted".
//!
//! A waiter for lock `name` is the key `<name>/<lease hex>` held under a lease; the holder is
//! the live key under the prefix `<name>/` with the smallest create revision, and its fencing
//! token is that create revision. Waiting in queue order is the client's (or shell's) job:
//! watch the waiter just ahead, as etcd's `concurrency.Mutex` does.
//!
//! For every name ever passed to `LockAcquire`, the state records the highest token that ever
//! *held* the lock. It is recomputed after every write that touches a key under the prefix and
//! only ever grows (`max`), and because it is state it survives leader changes, restarts and
//! snapshot installs. A fenced write presenting `(lock, token)` passes only when `token` equals
//! it: a smaller token is `FencingTokenStale`, a larger one `FencingTokenUnknown`. A holder whose
//! lease lapsed keeps passing until someone else is granted the lock — the fence protects
//! against a *newer* holder, as any fencing token does. Names used only through raw KV writes
//! (e.g. `etcdctl lock`, which runs the recipe client-side) are not tracked.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::{
    Fence, LockAcquireRequest, LockAcquireResponse, LockOwner, LockReleaseRequest,
    LockReleaseResponse, prefix_end,
};
use crate::error::CpError;
use crate::limits::KEY_BYTES_MAX;

use super::StateMachine;
use super::keyrange::KeyRange;
use super::store::Store;

/// Width of the hex lease id in a waiter key, plus the slash.
const WAITER_SUFFIX_BYTES_MAX: usize = 1 + 16;

/// Highest fencing token ever granted, per tracked lock name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct Locks {
    pub(crate) highest_granted: BTreeMap<String, i64>,
}

impl Locks {
    /// Starts tracking `name` and records its current holder.
    fn register(&mut self, name: &str, store: &Store) {
        self.highest_granted.entry(name.to_string()).or_insert(0);
        self.refresh_name(name, store);
    }

    /// Recomputes the holder of every tracked lock whose prefix covers a touched key. Work is
    /// bounded by the touched keys' lengths (one map lookup per `/`) plus the waiters scanned.
    pub(crate) fn refresh(&mut self, touched: &BTreeSet<Vec<u8>>, store: &Store) {
        if self.highest_granted.is_empty() {
            return;
        }
        let mut names = BTreeSet::new();
        for key in touched {
            for (slash, _) in key.iter().enumerate().filter(|(_, byte)| **byte == b'/') {
                let Ok(name) = std::str::from_utf8(&key[..slash]) else {
                    continue;
                };
                if self.highest_granted.contains_key(name) {
                    names.insert(name.to_string());
                }
            }
        }
        for name in names {
            self.refresh_name(&name, store);
        }
    }

    fn refresh_name(&mut self, name: &str, store: &Store) {
        let Some(owner) = holder(store, name) else {
            return;
        };
        if let Some(highest) = self.highest_granted.get_mut(name) {
            let was = *highest;
            *highest = was.max(owner.token);
            // Fencing tokens only grow.
            assert!(*highest >= was && *highest >= owner.token);
        }
    }

    fn highest(&self, name: &str) -> i64 {
        self.highest_granted.get(name).copied().unwrap_or(0)
    }
}

/// The live waiter under `<name>/` with the smallest create revision.
fn holder(store: &Store, name: &str) -> Option<LockOwner> {
    let prefix = format!("{name}/").into_bytes();
    let end = prefix_end(&prefix);
    let waiters = store.visible(KeyRange::new(&prefix, &end), i64::MAX);
    let (key, _, stored) = waiters.min_by_key(|(_, _, stored)| stored.create_revision)?;
    Some(LockOwner {
        key: key.to_vec(),
        token: stored.create_revision,
        lease: stored.lease,
    })
}

impl StateMachine {
    pub(crate) fn apply_lock_acquire(
        &mut self,
        request: LockAcquireRequest,
    ) -> Result<LockAcquireResponse, CpError> {
        validate_lock_name(&request.name)?;
        if !self.leases.contains(request.lease) {
            return Err(CpError::LeaseNotFound { id: request.lease });
        }
        let key = format!("{}/{:x}", request.name, request.lease).into_bytes();
        let token = match self.store.latest(&key) {
            Some(existing) => existing.create_revision,
            None => {
                let mut ctx = self.store.begin();
                self.put_key(&mut ctx, key.clone(), Vec::new(), request.lease);
                self.commit(&ctx);
                self.store.revision
            }
        };
        self.locks.register(&request.name, &self.store);
        Ok(LockAcquireResponse {
            header_revision: self.store.revision,
            is_holder: self.is_holder(&request.name, &key),
            key,
            token,
        })
    }

    pub(crate) fn apply_lock_release(
        &mut self,
        request: LockReleaseRequest,
    ) -> Result<LockReleaseResponse, CpError> {
        super::validate::key(&request.key, &[])?;
        let mut ctx = self.store.begin();
        let released = self.delete_key(&mut ctx, &request.key).is_some();
        self.commit(&ctx);
        Ok(LockReleaseResponse {
            header_revision: self.store.revision,
            released,
        })
    }

    /// The fence rule for writes that carry one; `None` always passes.
    pub(crate) fn check_fence(&self, fence: Option<&Fence>) -> Result<(), CpError> {
        match fence {
            Some(fence) => self.fence_check(&fence.lock, fence.token),
            None => Ok(()),
        }
    }

    /// The "fence check" API: `Ok` iff `token` is the newest token granted for `lock`.
    pub fn fence_check(&self, lock: &str, token: i64) -> Result<(), CpError> {
        let current = self.locks.highest(lock);
        match token.cmp(&current) {
            std::cmp::Ordering::Equal if current > 0 => Ok(()),
            std::cmp::Ordering::Less => Err(CpError::FencingTokenStale {
                presented: token,
                current,
            }),
            _ => Err(CpError::FencingTokenUnknown {
                presented: token,
                current,
            }),
        }
    }

    /// The current holder of lock `name`, if any waiter is live.
    pub fn lock_owner(&self, name: &str) -> Option<LockOwner> {
        holder(&self.store, name)
    }

    /// Whether `key` is the waiter that holds lock `name`.
    pub fn is_holder(&self, name: &str, key: &[u8]) -> bool {
        self.lock_owner(name).is_some_and(|owner| owner.key == key)
    }

    /// The highest fencing token ever granted for `name` (0 if never).
    pub fn highest_granted(&self, name: &str) -> i64 {
        self.locks.highest(name)
    }
}

fn validate_lock_name(name: &str) -> Result<(), CpError> {
    if name.is_empty() {
        return Err(CpError::EmptyKey);
    }
    let size = name.len() + WAITER_SUFFIX_BYTES_MAX;
    if size > KEY_BYTES_MAX {
        return Err(CpError::KeyTooLarge {
            size,
            max: KEY_BYTES_MAX,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::command::{
        Command, Fence, LeaseGrantRequest, LeaseRevokeRequest, LockAcquireRequest,
        LockAcquireResponse, LockReleaseRequest, PutRequest, Response,
    };
    use crate::error::CpError;
    use crate::mvcc::StateMachine;

    struct Harness {
        sm: StateMachine,
        index: u64,
    }

    impl Harness {
        fn new() -> Self {
            Harness {
                sm: StateMachine::default(),
                index: 0,
            }
        }

        fn apply(&mut self, command: Command) -> Result<Response, CpError> {
            self.index += 1;
            self.sm.apply(self.index, command, 0)
        }

        fn acquire(&mut self, lease: i64) -> LockAcquireResponse {
            let grant = LeaseGrantRequest {
                id: lease,
                ttl_secs: 10,
            };
            if !self.sm.leases.contains(lease) {
                self.apply(Command::new(grant)).expect("grant");
            }
            let request = LockAcquireRequest {
                name: "jobs".into(),
                lease,
            };
            match self.apply(Command::new(request)) {
                Ok(Response::LockAcquire(response)) => response,
                other => panic!("acquire: {other:?}"),
            }
        }

        fn fenced_put(&mut self, token: i64, value: &[u8]) -> Result<Response, CpError> {
            let fence = Some(Fence {
                lock: "jobs".into(),
                token,
            });
            self.apply(Command::new(PutRequest {
                fence,
                ..PutRequest::new(b"data", value)
            }))
        }
    }

    #[test]
    fn queue_order_and_hand_over() {
        let mut h = Harness::new();
        let first = h.acquire(0xa);
        let second = h.acquire(0xb);
        let third = h.acquire(0xc);
        assert_eq!(first.key, b"jobs/a");
        assert_eq!(
            (first.is_holder, second.is_holder, third.is_holder),
            (true, false, false)
        );
        assert!(first.token < second.token && second.token < third.token);
        assert_eq!(
            h.acquire(0xb).token,
            second.token,
            "re-acquiring is idempotent"
        );
        assert_eq!(h.sm.highest_granted("jobs"), first.token);
        // Release the holder: the next waiter in create order holds, and the token grows.
        h.apply(Command::new(LockReleaseRequest {
            key: first.key.clone(),
        }))
        .expect("release");
        assert!(h.sm.is_holder("jobs", &second.key));
        assert_eq!(h.sm.highest_granted("jobs"), second.token);
        // The holder's lease expires (the leader proposes a revoke): the third holds.
        h.apply(Command::new(LeaseRevokeRequest { id: 0xb }))
            .expect("revoke");
        let owner = h.sm.lock_owner("jobs").expect("owner");
        assert_eq!(
            (owner.key, owner.token, owner.lease),
            (third.key.clone(), third.token, 0xc)
        );
        assert_eq!(h.sm.highest_granted("jobs"), third.token);
        h.apply(Command::new(LockReleaseRequest { key: third.key }))
            .expect("release");
        assert_eq!(h.sm.lock_owner("jobs"), None);
        assert_eq!(h.sm.highest_granted("jobs"), third.token, "never goes back");
    }

    #[test]
    fn fenced_write_rejected_after_hand_over() {
        let mut h = Harness::new();
        let zombie = h.acquire(1);
        let next = h.acquire(2);
        h.fenced_put(zombie.token, b"zombie-1")
            .expect("holder writes");
        h.apply(Command::new(LeaseRevokeRequest { id: 1 }))
            .expect("zombie's lease expires");
        h.fenced_put(next.token, b"next")
            .expect("new holder writes");
        let revision = h.sm.revision();
        assert_eq!(
            h.fenced_put(zombie.token, b"zombie-2"),
            Err(CpError::FencingTokenStale {
                presented: zombie.token,
                current: next.token
            })
        );
        assert_eq!(
            h.sm.revision(),
            revision,
            "a rejected write changes nothing"
        );
        let data =
            h.sm.range(&crate::command::RangeRequest::key(b"data"))
                .expect("range");
        assert_eq!(data.kvs[0].value, b"next");
        assert_eq!(
            h.sm.fence_check("jobs", next.token + 1),
            Err(CpError::FencingTokenUnknown {
                presented: next.token + 1,
                current: next.token
            })
        );
        assert_eq!(
            h.sm.fence_check("other", 1),
            Err(CpError::FencingTokenUnknown {
                presented: 1,
                current: 0
            })
        );
        assert_eq!(h.sm.fence_check("jobs", next.token), Ok(()));
    }

    #[test]
    fn fences_guard_deletes_and_transactions_too() {
        use crate::command::{DeleteRangeRequest, Op, TxnRequest};
        let mut h = Harness::new();
        let old = h.acquire(1);
        h.fenced_put(old.token, b"v").expect("holder writes");
        h.apply(Command::new(LockReleaseRequest { key: old.key }))
            .expect("release");
        let new = h.acquire(2);
        let stale = Some(Fence {
            lock: "jobs".into(),
            token: old.token,
        });
        let expected = CpError::FencingTokenStale {
            presented: old.token,
            current: new.token,
        };
        let delete = DeleteRangeRequest {
            fence: stale.clone(),
            ..DeleteRangeRequest::key(b"data")
        };
        let txn = TxnRequest {
            success: vec![Op::DeleteRange(DeleteRangeRequest::key(b"data"))],
            fence: stale.clone(),
            ..TxnRequest::default()
        };
        let nested = TxnRequest {
            success: vec![Op::Put(PutRequest {
                fence: stale,
                ..PutRequest::new(b"data", b"x")
            })],
            ..TxnRequest::default()
        };
        let revision = h.sm.revision();
        for command in [
            Command::new(delete),
            Command::new(txn),
            Command::new(nested),
        ] {
            assert_eq!(h.apply(command), Err(expected.clone()));
        }
        assert_eq!(h.sm.revision(), revision);
    }

    #[test]
    fn acquire_refusals() {
        let mut h = Harness::new();
        let cases = [
            (
                LockAcquireRequest {
                    name: "jobs".into(),
                    lease: 7,
                },
                CpError::LeaseNotFound { id: 7 },
            ),
            (
                LockAcquireRequest {
                    name: String::new(),
                    lease: 7,
                },
                CpError::EmptyKey,
            ),
        ];
        for (request, error) in cases {
            assert_eq!(h.apply(Command::new(request)), Err(error));
        }
        assert_eq!(h.sm.revision(), 1);
    }
}
