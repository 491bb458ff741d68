//! Leases: grant, revoke (deleting every attached key under one revision), and listing.
//!
//! **Expiry is not decided here.** The state machine holds no deadlines and reads no clock:
//! keep-alives are leader-local (they are not commands). The shell on the leader keeps a
//! deadline per lease (`now + ttl`, pushed back by each keep-alive) and, when one passes,
//! proposes `LeaseRevoke`; the revoke is replicated, so every replica deletes the same keys at
//! the same revision. A new leader starts every lease's deadline afresh at `now + ttl` (as
//! etcd's lessor `Promote`), so a leader change can extend a lease but never cut one short.
//! `granted_unix_ms` is the leader's wall time in the grant's entry, for operators.
//!
//! Invariant: a live key with lease `l != 0` is in `leases[l].keys`, and every key there is live
//! with lease `l`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseInfo, LeaseRevokeRequest, LeaseRevokeResponse,
};
use crate::error::CpError;

use super::StateMachine;

/// One granted lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lease {
    pub(crate) ttl_secs: i64,
    pub(crate) granted_unix_ms: u64,
    pub(crate) keys: BTreeSet<Vec<u8>>,
}

/// Every live lease, plus the counter that picks ids for `id == 0` grants.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct Leases {
    pub(crate) leases: BTreeMap<i64, Lease>,
    next_id: i64,
}

impl Leases {
    pub(crate) fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Attaches `key` to lease `id`; lease 0 means none.
    pub(crate) fn attach(&mut self, id: i64, key: Vec<u8>) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.insert(key);
        }
    }

    /// Detaches `key` from lease `id`; lease 0 means none.
    pub(crate) fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    /// The next unused id after the counter (wrapping to 1). Terminates within
    /// `leases.len() + 1` steps because each step skips one live lease.
    fn pick_id(&mut self) -> i64 {
        loop {
            self.next_id = match self.next_id {
                i64::MAX => 1,
                id => (id + 1).max(1),
            };
            if !self.leases.contains_key(&self.next_id) {
                return self.next_id;
            }
        }
    }

    fn info(id: i64, lease: &Lease) -> LeaseInfo {
        LeaseInfo {
            id,
            ttl_secs: lease.ttl_secs,
            granted_unix_ms: lease.granted_unix_ms,
            keys: lease.keys.iter().cloned().collect(),
        }
    }
}

impl StateMachine {
    pub(crate) fn apply_lease_grant(
        &mut self,
        request: LeaseGrantRequest,
        now_unix_ms: u64,
    ) -> Result<LeaseGrantResponse, CpError> {
        if request.ttl_secs < 1 {
            return Err(CpError::InvalidTtl {
                ttl_secs: request.ttl_secs,
            });
        }
        let id = match request.id {
            0 => self.leases.pick_id(),
            id if id < 0 => {
                return Err(CpError::InvalidRequest {
                    reason: format!("lease id {id} is negative: pass a positive id or 0"),
                });
            }
            id if self.leases.contains(id) => return Err(CpError::LeaseExists { id }),
            id => id,
        };
        let lease = Lease {
            ttl_secs: request.ttl_secs,
            granted_unix_ms: now_unix_ms,
            keys: BTreeSet::new(),
        };
        self.leases.leases.insert(id, lease);
        Ok(LeaseGrantResponse {
            header_revision: self.store.revision,
            id,
            ttl_secs: request.ttl_secs,
        })
    }

    pub(crate) fn apply_lease_revoke(
        &mut self,
        request: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, CpError> {
        let lease = self
            .leases
            .leases
            .remove(&request.id)
            .ok_or(CpError::LeaseNotFound { id: request.id })?;
        let mut ctx = self.store.begin();
        for key in &lease.keys {
            self.delete_key(&mut ctx, key);
        }
        self.commit(&ctx);
        Ok(LeaseRevokeResponse {
            header_revision: self.store.revision,
        })
    }

    /// Every live lease in id order, with its attached keys.
    pub fn leases(&self) -> Vec<LeaseInfo> {
        let leases = self.leases.leases.iter();
        leases.map(|(id, lease)| Leases::info(*id, lease)).collect()
    }

    /// One lease (etcd's `LeaseTimeToLive` minus the remaining time, which the leader knows).
    pub fn lease(&self, id: i64) -> Option<LeaseInfo> {
        let lease = self.leases.leases.get(&id)?;
        Some(Leases::info(id, lease))
    }
}

#[cfg(test)]
mod tests {
    use crate::command::{
        Command, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest, Response,
    };
    use crate::error::CpError;
    use crate::mvcc::StateMachine;

    fn grant(sm: &mut StateMachine, index: u64, id: i64) -> Result<i64, CpError> {
        let request = LeaseGrantRequest { id, ttl_secs: 10 };
        match sm.apply(index, Command::new(request), 1_000)? {
            Response::LeaseGrant(response) => Ok(response.id),
            other => panic!("not a grant: {other:?}"),
        }
    }

    #[test]
    fn grant_picks_ids_deterministically() {
        let mut sm = StateMachine::default();
        // (requested id, outcome)
        let cases = [
            (0, Ok(1)),
            (3, Ok(3)),
            (0, Ok(2)),
            (0, Ok(4)),
            (3, Err(CpError::LeaseExists { id: 3 })),
        ];
        for (index, (id, expected)) in cases.into_iter().enumerate() {
            assert_eq!(
                grant(&mut sm, index as u64 + 1, id),
                expected,
                "case {index}"
            );
        }
        let bad_ttl = LeaseGrantRequest { id: 0, ttl_secs: 0 };
        assert_eq!(
            sm.apply(10, Command::new(bad_ttl), 0),
            Err(CpError::InvalidTtl { ttl_secs: 0 })
        );
        assert_eq!(sm.leases().len(), 4);
        assert_eq!(sm.lease(3).map(|l| l.granted_unix_ms), Some(1_000));
    }

    #[test]
    fn revoke_deletes_attached_keys_in_one_revision() {
        let mut sm = StateMachine::default();
        let id = grant(&mut sm, 1, 0).expect("grant");
        for (index, key) in [&b"a"[..], b"b", b"c"].into_iter().enumerate() {
            let put = PutRequest {
                lease: id * i64::from(key != b"c"),
                ..PutRequest::new(key, b"v")
            };
            sm.apply(index as u64 + 2, Command::new(put), 0)
                .expect("put");
        }
        assert_eq!(
            sm.lease(id).map(|l| l.keys),
            Some(vec![b"a".to_vec(), b"b".to_vec()])
        );
        assert_eq!(sm.revision(), 4);
        let response = sm
            .apply(5, Command::new(LeaseRevokeRequest { id }), 0)
            .expect("revoke");
        assert_eq!(response.header_revision(), 5);
        let all = sm.range(&RangeRequest::prefix(b"")).expect("range");
        let keys: Vec<_> = all.kvs.into_iter().map(|kv| kv.key).collect();
        assert_eq!(keys, vec![b"c".to_vec()]);
        assert_eq!(
            sm.events_since(5, b"\0", b"\0", 0).expect("events").len(),
            2
        );
        assert_eq!(
            sm.apply(6, Command::new(LeaseRevokeRequest { id }), 0),
            Err(CpError::LeaseNotFound { id })
        );
        // Revoking an empty lease does not move the revision.
        let empty = grant(&mut sm, 7, 0).expect("grant");
        sm.apply(8, Command::new(LeaseRevokeRequest { id: empty }), 0)
            .expect("revoke");
        assert_eq!(sm.revision(), 5);
    }

    #[test]
    fn moving_a_key_between_leases_detaches_it() {
        let mut sm = StateMachine::default();
        let first = grant(&mut sm, 1, 0).expect("grant");
        let second = grant(&mut sm, 2, 0).expect("grant");
        let put = |lease| {
            Command::new(PutRequest {
                lease,
                ..PutRequest::new(b"k", b"v")
            })
        };
        sm.apply(3, put(first), 0).expect("put");
        sm.apply(4, put(second), 0).expect("put");
        assert_eq!(sm.lease(first).map(|l| l.keys.len()), Some(0));
        sm.apply(5, Command::new(LeaseRevokeRequest { id: first }), 0)
            .expect("revoke");
        assert!(sm.range(&RangeRequest::key(b"k")).expect("range").count == 1);
    }
}
