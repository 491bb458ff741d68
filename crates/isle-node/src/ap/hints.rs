//! Hinted handoff: hand writes held for unreachable owners back to them once the failure
//! detector hears them again.
//!
//! A hint leaves the table only after its owner has durably merged it and only if it did not
//! change meanwhile (a newer write to the same hint is delivered in the next pass), so a crash
//! at any point loses nothing: at worst a hint is delivered twice, which merging absorbs.

use std::sync::atomic::Ordering;
use std::time::Duration;

use isle_ap::Object;
use isle_types::NodeId;
use tracing::{debug, info};

use super::wire::{ApReply, ApRequest};
use super::writer::{Job, lock};
use super::{Ap, unexpected};

/// Hints handed off per request.
const DELIVERY_BATCH: usize = 256;

/// The delivery loop: every `hint_interval_ms`, each reachable owner gets its hints.
pub(super) async fn deliver(ap: Ap) {
    let mut shutdown = ap.inner.shutdown.subscribe();
    let interval = Duration::from_millis(ap.inner.config.hint_interval_ms.max(10));
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            () = ap.inner.clock.sleep(interval) => {}
        }
        publish(&ap);
        let owners: Vec<NodeId> = lock(&ap.inner.hints).owners.keys().copied().collect();
        let reachable = ap.reachable();
        for owner in owners
            .into_iter()
            .filter(|o| reachable.contains(o) && *o != ap.inner.me)
        {
            match deliver_to(&ap, owner).await {
                Ok(0) => {}
                Ok(delivered) => debug!(%owner, delivered, "hints delivered"),
                Err(err) => debug!(%owner, %err, "hint delivery stopped; will retry"),
            }
        }
        publish(&ap);
    }
}

/// Updates the pending-hint gauges.
fn publish(ap: &Ap) {
    let hints = lock(&ap.inner.hints);
    let pending = hints.total();
    ap.inner
        .metrics
        .hints_pending
        .set(i64::try_from(pending).unwrap_or(i64::MAX));
    let oldest = hints.owners.values().map(|(_, oldest)| *oldest).min();
    let age = oldest.map_or(0.0, |oldest| {
        ap.inner.clock.unix_ms().saturating_sub(oldest) as f64 / 1000.0
    });
    ap.inner.metrics.hints_oldest_seconds.set(age);
}

/// Hands every hint for `owner` over, batch by batch; returns how many were delivered.
async fn deliver_to(ap: &Ap, owner: NodeId) -> Result<u64, String> {
    let mut delivered = 0;
    loop {
        let batch = ap
            .inner
            .store
            .hints_for(owner.0, DELIVERY_BATCH)
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            break;
        }
        let mut objects = Vec::with_capacity(batch.len());
        for hint in &batch {
            match Object::decode(&hint.object) {
                Ok(object) => objects.push((hint.key.clone(), object)),
                Err(err) => return Err(format!("undecodable hint: {err}")),
            }
        }
        let digests: Vec<(Vec<u8>, u128)> = objects
            .iter()
            .map(|(key, object)| (key.clone(), object.digest()))
            .collect();
        match ap.call(owner, ApRequest::StoreMany { objects }).await {
            Ok(ApReply::Stored(Ok(()))) => {}
            Ok(ApReply::Stored(Err(err))) => return Err(err.to_string()),
            Ok(other) => return Err(unexpected(&other).to_string()),
            Err(err) => return Err(err.to_string()),
        }
        let mut removed = 0;
        for (key, digest) in digests {
            let gone = ap
                .submit(|reply| Job::RemoveHint {
                    owner,
                    key,
                    digest,
                    reply,
                })
                .await
                .map_err(|e| e.to_string())?;
            if gone {
                removed += 1;
            }
        }
        delivered += removed;
        ap.inner.metrics.hints_delivered.inc_by(removed);
        if removed == 0 {
            // Every hint in the batch changed while in flight: the next pass sends them again.
            break;
        }
    }
    if delivered > 0 && !lock(&ap.inner.hints).owners.contains_key(&owner) {
        // Copies held as a fallback are gone: later fallback writes must use a new actor.
        // Saved before use: a state is sent out before its fallback copy is fsynced, so an
        // epoch in use must never come back after a crash.
        let epoch = ap.inner.fallback_epoch.load(Ordering::Relaxed) + 1;
        ap.inner
            .records
            .save_record("ap_fallback_epoch", &epoch)
            .map_err(|e| e.to_string())?;
        ap.inner.fallback_epoch.store(epoch, Ordering::Relaxed);
        info!(%owner, delivered, "all hints for the owner delivered");
    }
    Ok(delivered)
}
