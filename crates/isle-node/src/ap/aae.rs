//! Active anti-entropy: replicas of a partition compare Merkle trees and exchange only the keys
//! that differ, within a bytes-per-second budget, so replicas converge after a partition heals
//! even for keys no client reads.
//!
//! Every `aae_interval_ms`, a node asks each reachable peer of higher id (so each pair talks
//! once per round) for the roots of the trees of the partitions they share, in one request;
//! for each partition whose roots differ it runs one exchange ([`isle_ap::aae::Exchange`]),
//! then pulls the peer's copies of the differing keys, merges them into its own, and
//! pushes the merged copies back.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use isle_ap::aae::{
    AaeReply, AaeRequest, Exchange, ExchangeConfig, Hash128, LeafKeys, Step, respond, wire_size,
};
use isle_ap::{ApError, Object, PartitionId};
use isle_env::Clock;
use isle_storage::ApStore;
use isle_types::{Millis, NodeId};
use tracing::{debug, info};

use super::wire::{ApReply, ApRequest};
use super::writer::{Trees, tree_id, trees};
use super::{Ap, unexpected};

/// Keys fetched or stored per repair request.
const REPAIR_BATCH: usize = 256;

/// The node's objects as the exchange sees them: (storage key, digest) per leaf, only of the
/// buckets whose replica count is `n` (other buckets' keys live in other trees).
struct StoreKeys<'a> {
    store: &'a ApStore,
    trees: &'a Trees,
    n: u32,
}

impl LeafKeys for StoreKeys<'_> {
    fn keys_in_leaf(&self, partition: PartitionId, leaf: u32) -> Vec<(Vec<u8>, u128)> {
        let (start, end) = self.trees.shape().leaf_range(partition, leaf);
        // Past every storage key: 8 hash bytes of 0xff, then a bucket length below 0xff.
        let end = end.unwrap_or_else(|| vec![0xff; 9]);
        match self.store.objects_in(&start, &end, usize::MAX) {
            Ok(objects) => objects
                .into_iter()
                .filter(|(key, _)| self.trees.n_of_key(key) == Some(self.n))
                .map(|(key, bytes)| (key, Object::digest_of_encoding(&bytes)))
                .collect(),
            // Unreadable: seen as empty, so the peer's copies are pulled and merged (harmless).
            Err(err) => {
                debug!(%err, partition, leaf, "leaf scan failed");
                Vec::new()
            }
        }
    }
}

/// Bytes-per-second budget for anti-entropy traffic.
struct Budget {
    rate: u64,
    window_start: Millis,
    spent: u64,
}

impl Budget {
    async fn spend(&mut self, clock: &dyn Clock, bytes: u64) {
        let now = clock.now();
        if now.since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.spent = 0;
        }
        self.spent += bytes;
        if self.rate > 0 && self.spent > self.rate {
            clock
                .sleep_until(self.window_start + Duration::from_secs(1))
                .await;
            self.window_start = clock.now();
            self.spent = 0;
        }
    }
}

/// The anti-entropy loop.
pub(super) async fn run(ap: Ap) {
    let interval = ap.inner.config.aae_interval_ms;
    if interval == 0 {
        return;
    }
    let mut shutdown = ap.inner.shutdown.subscribe();
    let mut budget = Budget {
        rate: ap.inner.config.repair_bytes_per_sec,
        window_start: ap.inner.clock.now(),
        spent: 0,
    };
    let mut diverged_since: Option<Millis> = None;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            () = ap.inner.clock.sleep(Duration::from_millis(interval)) => {}
        }
        let (found, failed) = round(&ap, &mut budget).await;
        let now = ap.inner.clock.now();
        let in_sync = found == 0 && !failed;
        ap.inner.diverged.store(!in_sync, Ordering::Relaxed);
        ap.inner.metrics.aae_in_sync.set(i64::from(in_sync));
        match (in_sync, diverged_since) {
            (false, None) if found > 0 => diverged_since = Some(now),
            (true, Some(since)) => {
                let seconds = now.since(since).as_secs_f64();
                ap.inner.metrics.aae_converge_seconds.set(seconds);
                info!(seconds, "replicas in agreement again");
                diverged_since = None;
            }
            _ => {}
        }
    }
}

/// One round: an exchange with every peer of higher id per shared partition. Returns the
/// number of differing keys found and whether any exchange failed.
async fn round(ap: &Ap, budget: &mut Budget) -> (u64, bool) {
    let ring = ap.ring();
    let me = ap.inner.me;
    let reachable = ap.reachable();
    let mut found = 0;
    let mut failed = false;
    let classes = trees(&ap.inner.trees).classes();
    let mut shared: BTreeMap<NodeId, Vec<u32>> = BTreeMap::new();
    for n in classes {
        for partition in ring.partitions_of(me, n as usize) {
            for peer in ring.preference(partition, n as usize) {
                if peer > me && reachable.contains(&peer) {
                    shared.entry(peer).or_default().push(tree_id(n, partition));
                }
            }
        }
    }
    for (peer, partitions) in shared {
        let theirs = match ask(
            ap,
            budget,
            peer,
            ApRequest::Roots {
                partitions: partitions.clone(),
            },
        )
        .await
        {
            Ok(ApReply::Roots(roots)) if roots.len() == partitions.len() => roots,
            Ok(other) => {
                debug!(%peer, reply = ?other, "anti-entropy roots refused");
                failed = true;
                continue;
            }
            Err(err) => {
                debug!(%peer, %err, "anti-entropy roots failed");
                failed = true;
                continue;
            }
        };
        let ours = ap.roots(&partitions);
        for ((id, mine), theirs) in partitions.into_iter().zip(ours).zip(theirs) {
            if mine == theirs {
                continue;
            }
            match exchange(ap, budget, id, peer).await {
                Ok(diffs) => found += diffs,
                Err(err) => {
                    debug!(%peer, tree = id, %err, "anti-entropy exchange failed");
                    failed = true;
                }
            }
        }
    }
    (found, failed)
}

async fn ask(
    ap: &Ap,
    budget: &mut Budget,
    peer: NodeId,
    request: ApRequest,
) -> Result<ApReply, ApError> {
    budget
        .spend(ap.inner.clock.as_ref(), wire_size(&request))
        .await;
    ap.inner.metrics.aae_bytes.inc_by(wire_size(&request));
    let reply = ap.call(peer, request).await?;
    budget
        .spend(ap.inner.clock.as_ref(), wire_size(&reply))
        .await;
    ap.inner.metrics.aae_bytes.inc_by(wire_size(&reply));
    Ok(reply)
}

/// One Merkle exchange with `peer` over `partition`, then the repair of what differs.
async fn exchange(ap: &Ap, budget: &mut Budget, id: u32, peer: NodeId) -> Result<u64, ApError> {
    let internal = |e: String| ApError::Internal(e);
    let n = id >> 16;
    let (mut session, mut request) = {
        let trees = trees(&ap.inner.trees);
        let tree = trees
            .tree(id)
            .ok_or_else(|| internal(format!("no tree {id}")))?;
        Exchange::start(tree, ExchangeConfig::default())
    };
    ap.inner.metrics.aae_exchanges.inc();
    let outcome = loop {
        let reply = match ask(ap, budget, peer, ApRequest::Aae { n, request }).await? {
            ApReply::Aae(Ok(reply)) => reply,
            ApReply::Aae(Err(err)) => return Err(err),
            other => return Err(unexpected(&other)),
        };
        let step = {
            let trees = trees(&ap.inner.trees);
            let tree = trees
                .tree(id)
                .ok_or_else(|| internal(format!("no tree {id}")))?;
            let keys = StoreKeys {
                store: &ap.inner.store,
                trees: &trees,
                n,
            };
            session
                .handle_reply(tree, &keys, &reply)
                .map_err(|e| internal(e.to_string()))?
        };
        match step {
            Step::Send(next) => request = next,
            Step::Done(outcome) => break outcome,
        }
    };
    let diffs = outcome.diffs.len() as u64;
    if diffs == 0 {
        return Ok(0);
    }
    ap.inner.metrics.aae_keys_diverged.inc_by(diffs);
    // Pull the peer's copies and merge them here, then push the merged copies back.
    let pull: Vec<Vec<u8>> = outcome.pull().map(<[u8]>::to_vec).collect();
    for chunk in pull.chunks(REPAIR_BATCH) {
        let copies = match ask(
            ap,
            budget,
            peer,
            ApRequest::FetchMany {
                keys: chunk.to_vec(),
            },
        )
        .await?
        {
            ApReply::FetchedMany(result) => result?,
            other => return Err(unexpected(&other)),
        };
        let objects: Vec<(Vec<u8>, Object)> = copies
            .into_iter()
            .filter_map(|(key, copy)| copy.map(|object| (key, object)))
            .collect();
        ap.store_many(objects).await?;
    }
    let all: Vec<Vec<u8>> = outcome
        .diffs
        .iter()
        .map(|d| d.storage_key.clone())
        .collect();
    for chunk in all.chunks(REPAIR_BATCH) {
        let mut objects = Vec::with_capacity(chunk.len());
        for key in chunk {
            if let Some(object) = ap.local_fetch(key, None)? {
                objects.push((key.clone(), object));
            }
        }
        let pushed = objects.len() as u64;
        match ask(ap, budget, peer, ApRequest::StoreMany { objects }).await? {
            ApReply::Stored(result) => result?,
            other => return Err(unexpected(&other)),
        }
        ap.inner.metrics.aae_keys_repaired.inc_by(pushed);
    }
    Ok(diffs)
}

impl Ap {
    /// The roots of this node's trees with these ids (0 for an unknown tree).
    pub(super) fn roots(&self, ids: &[u32]) -> Vec<Hash128> {
        let trees = trees(&self.inner.trees);
        ids.iter()
            .map(|&id| Hash128(trees.tree(id).map_or(0, |tree| tree.root())))
            .collect()
    }

    /// Answers a peer's exchange step from this node's tree and store.
    pub(super) fn aae_respond(&self, n: u32, request: &AaeRequest) -> Result<AaeReply, ApError> {
        if !matches!(request, AaeRequest::Root { .. }) {
            // A peer descends: our replicas differ, so this node reconciles too.
            let hold = Duration::from_millis(self.inner.config.aae_interval_ms.max(500) * 2);
            let until = self.inner.clock.now() + hold;
            self.inner
                .peer_diverged_until
                .store(until.as_u64(), Ordering::Relaxed);
        }
        let trees = trees(&self.inner.trees);
        let Some(tree) = trees.tree(tree_id(n, request.partition())) else {
            return Ok(AaeReply::Refused(isle_ap::aae::Refusal::NotHeld));
        };
        let keys = StoreKeys {
            store: &self.inner.store,
            trees: &trees,
            n,
        };
        Ok(respond(tree, &keys, request))
    }
}
