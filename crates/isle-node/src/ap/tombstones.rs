//! Tombstone garbage collection: a deleted key's tombstone is dropped only once every one of
//! its N replicas holds the very same tombstone, and only after a grace period.
//!
//! The first replica in a key's preference list collects: it fetches the other replicas'
//! copies, and if all N are reachable and equal to its own, asks them to drop the tombstone
//! unless it changed meanwhile (a digest check, in each replica's writer), then drops its own.
//! A replica that missed the drop still holds the tombstone; anti-entropy copies it back and a
//! later pass drops it again, so nothing deleted comes back from a partial collection.

use std::time::Duration;

use isle_ap::aae::Hash128;
use isle_ap::{ApError, Object};
use tracing::{debug, info};

use super::wire::{ApReply, ApRequest};
use super::writer::Job;
use super::{Ap, unexpected};

/// Tombstones examined per pass.
const PASS_MAX: usize = 1024;

/// The collector loop.
pub(super) async fn collect(ap: Ap) {
    let interval = ap.inner.config.tombstone_gc_interval_ms;
    if interval == 0 {
        return;
    }
    let mut shutdown = ap.inner.shutdown.subscribe();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            () = ap.inner.clock.sleep(Duration::from_millis(interval)) => {}
        }
        match pass(&ap).await {
            Ok(0) => {}
            Ok(reaped) => info!(reaped, "tombstones dropped (every replica held them)"),
            Err(err) => debug!(%err, "tombstone collection pass stopped"),
        }
    }
}

async fn pass(ap: &Ap) -> Result<u64, ApError> {
    let before = ap
        .inner
        .clock
        .unix_ms()
        .saturating_sub(ap.inner.config.tombstone_grace_ms);
    let candidates = ap
        .inner
        .store
        .tombstones_before(before, PASS_MAX)
        .map_err(|e| ApError::Internal(e.to_string()))?;
    let ring = ap.ring();
    let reachable = ap.reachable();
    let me = ap.inner.me;
    let mut reaped = 0;
    for (key, _) in candidates {
        let Some((hash, bucket, _)) = isle_ap::merkle::parse_storage_key(&key) else {
            continue;
        };
        let Ok(info) = ap.bucket(&bucket) else {
            continue;
        };
        let replicas = ring.preference(ring.partition_of(hash), info.n as usize);
        if replicas.first() != Some(&me) || !replicas.iter().all(|r| reachable.contains(r)) {
            continue;
        }
        let Some(mine) = ap.local_fetch(&key, None)? else {
            continue;
        };
        if !mine.is_tombstone() {
            continue;
        }
        let digest = mine.digest();
        let mut everywhere = true;
        for &replica in replicas.iter().filter(|&&r| r != me) {
            let theirs = match ap
                .call(
                    replica,
                    ApRequest::Fetch {
                        key: key.clone(),
                        hint_for: None,
                    },
                )
                .await?
            {
                ApReply::Fetched(result) => result?,
                other => return Err(unexpected(&other)),
            };
            if theirs.as_ref().map(Object::digest) != Some(digest) {
                everywhere = false;
                break;
            }
        }
        if !everywhere {
            continue;
        }
        for &replica in replicas.iter().filter(|&&r| r != me) {
            let request = ApRequest::Reap {
                tombstones: vec![(key.clone(), Hash128(digest))],
            };
            match ap.call(replica, request).await? {
                ApReply::Stored(result) => result?,
                other => return Err(unexpected(&other)),
            }
        }
        if ap.reap(vec![(key, Hash128(digest))]).await? > 0 {
            reaped += 1;
        }
    }
    ap.inner.metrics.tombstones_reaped.inc_by(reaped);
    Ok(reaped)
}

impl Ap {
    /// Drops these tombstones from this replica where they are unchanged; returns how many.
    pub(super) async fn reap(&self, tombstones: Vec<(Vec<u8>, Hash128)>) -> Result<u64, ApError> {
        let mut dropped = 0;
        for (key, digest) in tombstones {
            let Some((hash, _, _)) = isle_ap::merkle::parse_storage_key(&key) else {
                return Err(ApError::BadRequest("malformed storage key".into()));
            };
            let gone = self
                .submit(|reply| Job::Reap {
                    key,
                    hash,
                    digest: digest.0,
                    reply,
                })
                .await?;
            dropped += u64::from(gone);
        }
        Ok(dropped)
    }
}
