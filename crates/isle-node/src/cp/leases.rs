//! Lease expiry, decided by the leader alone and replicated as `LeaseRevoke`.
//!
//! Keep-alives are not log entries: the leader keeps a deadline per lease in memory. A new
//! leader starts every lease's deadline afresh at `now + ttl` — a lease can only live longer
//! across a failover, never expire early, so a lock holder is never cut off by an election.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use isle_types::Millis;

/// The leader's deadlines, by lease id.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    inner: Mutex<Tracked>,
}

#[derive(Debug, Default)]
struct Tracked {
    /// The term these deadlines were set in; another term resets them.
    term: Option<u64>,
    deadlines: BTreeMap<i64, Millis>,
}

impl Deadlines {
    fn lock(&self) -> MutexGuard<'_, Tracked> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Syncs with the replicated leases (`id → ttl`) as leader of `term`; returns the expired
    /// ids. A lease seen for the first time in this term gets `now + ttl`.
    pub(crate) fn expired(&self, term: u64, now: Millis, leases: &BTreeMap<i64, i64>) -> Vec<i64> {
        let mut tracked = self.lock();
        if tracked.term != Some(term) {
            tracked.term = Some(term);
            tracked.deadlines.clear();
        }
        tracked.deadlines.retain(|id, _| leases.contains_key(id));
        for (id, ttl_secs) in leases {
            tracked
                .deadlines
                .entry(*id)
                .or_insert_with(|| now + ttl(*ttl_secs));
        }
        tracked
            .deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Extends a lease by its TTL; false if this leader does not track it.
    pub(crate) fn keep_alive(&self, id: i64, ttl_secs: i64, now: Millis) -> bool {
        match self.lock().deadlines.get_mut(&id) {
            Some(deadline) => {
                *deadline = now + ttl(ttl_secs);
                true
            }
            None => false,
        }
    }

    /// Milliseconds until the lease expires, if tracked.
    pub(crate) fn remaining_ms(&self, id: i64, now: Millis) -> Option<u64> {
        self.lock()
            .deadlines
            .get(&id)
            .map(|at| at.since(now).as_millis() as u64)
    }

    /// Forgets everything (this node is not the leader).
    pub(crate) fn clear(&self) {
        let mut tracked = self.lock();
        tracked.term = None;
        tracked.deadlines.clear();
    }
}

fn ttl(ttl_secs: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_expire_after_their_ttl_unless_kept_alive() {
        let deadlines = Deadlines::default();
        let leases = BTreeMap::from([(1, 2), (2, 5)]);
        assert!(deadlines.expired(1, Millis(0), &leases).is_empty());
        assert!(deadlines.keep_alive(1, 2, Millis(1_500)));
        assert_eq!(
            deadlines.expired(1, Millis(3_000), &leases),
            Vec::<i64>::new()
        );
        assert_eq!(deadlines.expired(1, Millis(3_500), &leases), vec![1]);
        assert_eq!(deadlines.expired(1, Millis(5_000), &leases), vec![1, 2]);
    }

    #[test]
    fn a_new_term_restarts_every_deadline() {
        let deadlines = Deadlines::default();
        let leases = BTreeMap::from([(7, 1)]);
        deadlines.expired(1, Millis(0), &leases);
        assert_eq!(
            deadlines.expired(2, Millis(900), &leases),
            Vec::<i64>::new()
        );
        assert_eq!(
            deadlines.expired(2, Millis(1_800), &leases),
            Vec::<i64>::new()
        );
        assert_eq!(deadlines.expired(2, Millis(1_900), &leases), vec![7]);
    }

    #[test]
    fn revoked_leases_are_forgotten() {
        let deadlines = Deadlines::default();
        deadlines.expired(1, Millis(0), &BTreeMap::from([(7, 1)]));
        deadlines.expired(1, Millis(10), &BTreeMap::new());
        assert!(!deadlines.keep_alive(7, 1, Millis(20)));
    }
}
