//! The cluster under test: `isle node` processes, and how each nemesis is made on them.
//!
//! Both engines share the process-level nemeses — kill -9 and restart on the same data dir,
//! SIGSTOP/SIGCONT, the wall clock's skew through `/v1/faults/clock`, CP membership through
//! `/v1/cp/members` — and differ in how links break: the loopback engine asks each node's
//! transport fault layer (`/v1/faults`), the netns engine has the kernel drop packets
//! (nftables in each node's namespace; random loss for flaky links). Delays, duplicates and
//! corrupted frames go through the fault layer in both engines (the kernel here has no netem;
//! a corrupted TCP segment would only be a lost one anyway, while a corrupted frame tests the
//! node's checksum).
//!
//! The cluster keeps the [`Effects`] in force and moves to a new set by difference, so
//! overlapping nemeses compose the way `isle_sim::nemesis` defines.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{Node, NodeSpec, Ports};
use anyhow::{Context, bail};
use isle_api::wire::admin::{FaultIds, SkewBody};
use isle_api::wire::cp::{Membership, MembershipChange};
use isle_net::{Direction, FaultAction, FaultRule};
use isle_sim::nemesis::Effects;
use isle_types::NodeId;
use serde::de::IgnoredAny;

use crate::netns::Netns;

/// The AP bucket every AP operation of the workload uses.
pub const BUCKET: &str = "siblings";
/// Replicas per AP key.
pub const AP_REPLICAS: u64 = 3;

/// How links are broken.
pub enum Fabric {
    /// Each node's transport fault layer.
    Loopback,
    /// The kernel, in per-node namespaces.
    Netns(Netns),
}

/// The running cluster and the faults in force.
pub struct Cluster {
    nodes: Vec<Node>,
    fabric: Fabric,
    admin: reqwest::Client,
    applied: Effects,
}

/// The specs of `nodes` nodes under `dir`: spare loopback ports, or fixed ports on each
/// namespace's own address; every node seeded with every other, fault injection on, the
/// workload's AP bucket declared.
pub fn plan(nodes: u64, dir: &Path, netns: Option<&Netns>) -> anyhow::Result<Vec<NodeSpec>> {
    let mut specs = match netns {
        Some(net) => net.specs(dir),
        None => crate::plan(nodes, dir, Ports::Spare)?,
    };
    for spec in &mut specs {
        // The workload speaks HTTP only.
        spec.grpc = None;
        spec.resp = None;
        spec.bootstrap_expect = Some(nodes);
        spec.fault_injection = true;
        spec.flags = vec![
            "--ap-bucket".into(),
            format!("{BUCKET}=siblings:{}", AP_REPLICAS.min(nodes)),
        ];
        // A Ctrl-C at the terminal reaches only `isle chaos`, which then stops the nodes.
        spec.own_process_group = true;
    }
    Ok(specs)
}

impl Cluster {
    /// Starts every node.
    pub fn start(specs: Vec<NodeSpec>, fabric: Fabric) -> anyhow::Result<Cluster> {
        let exe = std::env::current_exe().context("locating the isle binary")?;
        let mut nodes = Vec::new();
        for spec in specs {
            nodes.push(Node::start(spec, &exe)?);
        }
        Ok(Cluster {
            nodes,
            fabric,
            admin: crate::admin::http()?,
            applied: Effects::default(),
        })
    }

    /// The nodes' specs.
    pub fn specs(&self) -> Vec<NodeSpec> {
        self.nodes.iter().map(|n| n.spec().clone()).collect()
    }

    fn size(&self) -> u64 {
        self.nodes.len() as u64
    }

    /// Nodes running and not paused (they answer HTTP).
    pub fn live(&self) -> Vec<u64> {
        (1..=self.size())
            .filter(|id| !self.applied.down.contains(id) && !self.applied.paused.contains(id))
            .collect()
    }

    /// The CP leader as the first live node that knows one tells it.
    pub async fn cp_leader(&self) -> Option<u64> {
        for id in self.live() {
            let Ok(http) = self.http(id) else { continue };
            if let Ok(status) = crate::admin::status(&self.admin, &http).await
                && let Some(leader) = status.cp.leader
            {
                return Some(leader);
            }
        }
        None
    }

    fn node(&mut self, id: u64) -> anyhow::Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.id() == id)
            .with_context(|| format!("no node {id}"))
    }

    fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        self.node(id)?.kill9();
        Ok(())
    }

    fn respawn(&mut self, id: u64) -> anyhow::Result<()> {
        Ok(self.node(id)?.start_if_down()?)
    }

    /// Waits until node `id` answers HTTP (after a restart), at most `limit`.
    async fn wait_http(&self, id: u64, limit: Duration) -> anyhow::Result<()> {
        let url = format!("http://{}/v1/health", self.http(id)?);
        let deadline = Instant::now() + limit;
        loop {
            let answer = self.admin.get(&url).send().await;
            match answer {
                Ok(response) if response.status().is_success() => return Ok(()),
                _ if Instant::now() > deadline => {
                    bail!("node {id} not answering {url} within {limit:?}: {answer:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn http(&self, id: u64) -> anyhow::Result<String> {
        self.nodes
            .iter()
            .find(|n| n.id() == id)
            .map(|n| n.spec().http.clone())
            .with_context(|| format!("no node {id}"))
    }

    /// Moves from the effects in force to `target`; `restart` nodes are killed and started
    /// again. Every step is tried; the errors are returned (a nemesis that could not be made
    /// leaves the run undecided, not aborted).
    pub async fn apply(&mut self, target: &Effects, restart: &[u64]) -> Vec<String> {
        let mut errors = Vec::new();
        let before = self.applied.clone();
        let mut note = |r: anyhow::Result<()>| {
            if let Err(err) = r {
                errors.push(format!("{err:#}"));
            }
        };
        // Wake paused nodes first: everything below needs them answering.
        for id in before.paused.difference(&target.paused) {
            note(self.node(*id).and_then(|n| Ok(n.resume()?)));
        }
        // Crashes and restarts.
        let mut started = BTreeSet::new();
        for id in target.down.difference(&before.down) {
            note(self.kill(*id));
        }
        for id in restart.iter().filter(|id| !target.down.contains(id)) {
            note(self.kill(*id));
            note(self.respawn(*id));
            started.insert(*id);
        }
        for id in before.down.difference(&target.down) {
            note(self.respawn(*id));
            started.insert(*id);
        }
        for id in &started {
            note(self.wait_http(*id, Duration::from_secs(15)).await);
        }
        // Links. A node still paused cannot answer HTTP: its fault-layer rules wait for its
        // resume (the kernel's do not). A restarted node lost its fault table and skew.
        let still_paused: BTreeSet<u64> = before
            .paused
            .intersection(&target.paused)
            .copied()
            .collect();
        let live: Vec<u64> = (1..=self.size())
            .filter(|id| !target.down.contains(id) && !still_paused.contains(id))
            .collect();
        if let Fabric::Netns(net) = &self.fabric {
            for id in 1..=self.size() {
                note(kernel_rules(net, id, target));
            }
        }
        for id in &live {
            note(self.set_fault_layer(*id, target).await);
        }
        // Clock skew.
        for id in &live {
            let want = target.skew_ms.get(id).copied().unwrap_or(0);
            let had = before.skew_ms.get(id).copied().unwrap_or(0);
            if want != had || (started.contains(id) && want != 0) {
                note(self.set_skew(*id, want).await);
            }
        }
        // Membership.
        for id in target.removed.difference(&before.removed) {
            note(
                self.change_members(MembershipChange::Remove(*id), *id)
                    .await,
            );
        }
        for id in before.removed.difference(&target.removed) {
            note(
                self.change_members(MembershipChange::AddLearner(*id), *id)
                    .await,
            );
            note(
                self.change_members(MembershipChange::Promote(*id), *id)
                    .await,
            );
        }
        // Pause last, once the node has its rules.
        for id in target.paused.difference(&before.paused) {
            note(self.node(*id).and_then(|n| Ok(n.pause()?)));
        }
        self.applied = target.clone();
        errors
    }

    /// Node `id`'s fault-layer rules for `effects`.
    async fn set_fault_layer(&self, id: u64, effects: &Effects) -> anyhow::Result<()> {
        let kernel = matches!(self.fabric, Fabric::Netns(_));
        let rules = fault_rules(effects, id, self.size(), kernel);
        let http = self.http(id)?;
        crate::admin::delete::<IgnoredAny>(&self.admin, &http, "/v1/faults")
            .await
            .with_context(|| format!("clearing the faults of node {id}"))?;
        if !rules.is_empty() {
            crate::admin::post::<_, FaultIds>(&self.admin, &http, "/v1/faults", &rules)
                .await
                .with_context(|| format!("setting the faults of node {id}"))?;
        }
        Ok(())
    }

    async fn set_skew(&self, id: u64, skew_ms: i64) -> anyhow::Result<()> {
        let http = self.http(id)?;
        crate::admin::post::<_, SkewBody>(
            &self.admin,
            &http,
            "/v1/faults/clock",
            &SkewBody { skew_ms },
        )
        .await
        .with_context(|| format!("skewing node {id}'s clock by {skew_ms} ms"))?;
        Ok(())
    }

    /// Sends a CP membership change through any running node but `about` (retried for a few
    /// seconds: a leader may be being elected).
    async fn change_members(&self, change: MembershipChange, about: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        while Instant::now() < deadline {
            for id in (1..=self.size()).filter(|id| {
                *id != about && !self.applied.down.contains(id) && !self.applied.paused.contains(id)
            }) {
                let http = self.http(id)?;
                let path = "/v1/cp/members";
                match crate::admin::post::<_, Membership>(&self.admin, &http, path, &change).await {
                    Ok(_) => return Ok(()),
                    Err(err) => last = format!("via node {id}: {err:#}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!("CP membership change {change:?} failed: {last}")
    }

    /// Stops every node and, for the netns engine, deletes the namespaces.
    pub fn shutdown(&mut self) -> Vec<String> {
        for node in &mut self.nodes {
            node.kill9();
        }
        match &mut self.fabric {
            Fabric::Netns(net) => net.cleanup(),
            Fabric::Loopback => Vec::new(),
        }
    }
}

/// Node `id`'s kernel rules for `effects`: cuts, and random loss on flaky links.
fn kernel_rules(net: &Netns, id: u64, effects: &Effects) -> anyhow::Result<()> {
    let cut_from: BTreeSet<u64> = effects
        .cuts
        .iter()
        .filter(|(_, to)| *to == id)
        .map(|(from, _)| *from)
        .collect();
    let cut_to: BTreeSet<u64> = effects
        .cuts
        .iter()
        .filter(|(from, _)| *from == id)
        .map(|(_, to)| *to)
        .collect();
    let lossy: Vec<(u64, u32)> = effects
        .flaky
        .iter()
        .filter_map(|((a, b), link)| {
            let peer = if *a == id {
                *b
            } else if *b == id {
                *a
            } else {
                return None;
            };
            let per_mille = (link.fail_rate.clamp(0.0, 1.0) * 1000.0).round() as u32;
            (per_mille > 0).then_some((peer, per_mille))
        })
        .collect();
    net.set_rules(id, &cut_from, &cut_to, &lossy)
}

/// The fault-layer rules node `id` gets for `effects`: with `kernel`, only what the kernel does
/// not make (delays, duplicates, corrupted frames); else cuts and losses too.
pub fn fault_rules(effects: &Effects, id: u64, nodes: u64, kernel: bool) -> Vec<FaultRule> {
    let rule = |peer: u64, direction: Direction, action: FaultAction, probability: f64| FaultRule {
        peer: NodeId(peer),
        direction,
        action,
        probability: probability.clamp(0.0, 1.0),
    };
    let mut rules = Vec::new();
    if !kernel {
        for (from, to) in &effects.cuts {
            if *from == id {
                rules.push(rule(*to, Direction::Outbound, FaultAction::Drop, 1.0));
            } else if *to == id {
                rules.push(rule(*from, Direction::Inbound, FaultAction::Drop, 1.0));
            }
        }
    }
    for ((a, b), link) in &effects.flaky {
        let peer = match (*a == id, *b == id) {
            (true, _) => *b,
            (_, true) => *a,
            _ => continue,
        };
        // Losses on the inbound side only, so each direction loses `fail_rate`, not twice it.
        if !kernel {
            rules.push(rule(
                peer,
                Direction::Inbound,
                FaultAction::Drop,
                link.fail_rate,
            ));
        }
        rules.push(rule(
            peer,
            Direction::Inbound,
            FaultAction::Duplicate,
            link.fail_rate,
        ));
        // Half the messages wait up to the maximum: later ones overtake them (reordering).
        if link.latency_ms_max > 0 {
            rules.push(rule(
                peer,
                Direction::Outbound,
                FaultAction::Delay {
                    ms: link.latency_ms_max.min(isle_net::DELAY_MS_MAX),
                },
                0.5,
            ));
        }
    }
    // Corrupted frames on every link of a corrupting node, as its peers receive them.
    for peer in (1..=nodes).filter(|peer| *peer != id) {
        let rate = [id, peer]
            .iter()
            .filter_map(|n| effects.corrupt.get(n))
            .fold(0.0_f64, |a, b| a.max(*b));
        if rate > 0.0 {
            rules.push(rule(peer, Direction::Inbound, FaultAction::Corrupt, rate));
        }
    }
    rules
}

/// Node `id` → how many rules, for a quick look in tests.
#[cfg(test)]
fn counts(effects: &Effects, nodes: u64, kernel: bool) -> std::collections::BTreeMap<u64, usize> {
    (1..=nodes)
        .map(|id| (id, fault_rules(effects, id, nodes, kernel).len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use isle_sim::nemesis::{Nemesis, Sides};

    #[test]
    fn cuts_become_drop_rules_only_without_the_kernel() {
        let split = Nemesis::Partition {
            sides: Sides::Groups(vec![vec![1, 2, 3]]),
        };
        let effects = Effects::of([&split], 5);
        let rules = fault_rules(&effects, 4, 5, false);
        // 4 is cut from 1, 2, 3 both ways: an outbound and an inbound drop each.
        assert_eq!(rules.len(), 6);
        assert!(rules.iter().all(|r| r.action == FaultAction::Drop));
        assert!(counts(&effects, 5, true).values().all(|n| *n == 0));
    }

    #[test]
    fn one_way_cuts_drop_only_one_direction() {
        let one_way = Nemesis::OneWay {
            from: vec![1],
            to: vec![2],
        };
        let effects = Effects::of([&one_way], 3);
        let on_1 = fault_rules(&effects, 1, 3, false);
        let on_2 = fault_rules(&effects, 2, 3, false);
        assert_eq!(on_1[0].direction, Direction::Outbound);
        assert_eq!(on_2[0].direction, Direction::Inbound);
        assert!(fault_rules(&effects, 3, 3, false).is_empty());
    }

    #[test]
    fn corrupt_and_flaky_links_stay_in_the_fault_layer() {
        let corrupt = Nemesis::Corrupt {
            nodes: vec![2],
            rate: 0.2,
        };
        let flaky = Nemesis::Flaky {
            nodes: vec![1],
            fail_rate: 0.05,
            latency_ms_max: 100,
        };
        let effects = Effects::of([&corrupt, &flaky], 3);
        let on_1 = fault_rules(&effects, 1, 3, true);
        assert!(on_1.iter().any(|r| r.action == FaultAction::Corrupt));
        assert!(
            on_1.iter()
                .any(|r| matches!(r.action, FaultAction::Delay { .. }))
        );
        assert!(!on_1.iter().any(|r| r.action == FaultAction::Drop));
        assert!(
            fault_rules(&effects, 1, 3, false)
                .iter()
                .any(|r| r.action == FaultAction::Drop)
        );
    }
}
